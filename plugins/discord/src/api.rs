//! Discord's REST API: the calls the channel makes, paced by Discord's rate-limit buckets.
//!
//! Every answer's `X-RateLimit-Bucket`, `-Remaining` and `-Reset-After` headers are kept per
//! bucket (and its major parameter, the channel): a call to a bucket with nothing left
//! waits for its reset. A `429` pauses its bucket, or every call when Discord says it is
//! global (`X-RateLimit-Global`, `"global": true`), for the body's precise `retry_after`;
//! the call is then retried once the pause ends, when that is within [`MAX_WAIT`], and
//! otherwise returned to the host as `RATE_LIMITED` with the time left. Other failures are
//! classified by the kit (`kit::http`); errors never carry the URL or the token.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use nanoclaw_plugin_api::kit::http::reqwest::{Method, RequestBuilder, Response, Url};
use nanoclaw_plugin_api::kit::http::{self, ApiBase, ClientConfig, HttpError, reqwest};
use nanoclaw_plugin_api::kit::prelude::*;
use nanoclaw_plugin_api::kit::tokio::time::{Instant, sleep};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Below the host's 30 s call timeout.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);
/// Discord answers small JSON objects.
const MAX_ANSWER_BYTES: u64 = 1 << 20;
/// Longest a call waits for a bucket or a 429's pause; longer goes back to the host as
/// `RATE_LIMITED`.
pub(crate) const MAX_WAIT: Duration = Duration::from_secs(5);
/// 429 answers retried inside one call before giving up.
const MAX_RATE_LIMITED_RETRIES: u32 = 3;

/// A Discord user, as `GET /users/@me` and message authors carry them.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct User {
    pub id: String,
    #[serde(default)]
    pub username: String,
    #[serde(default)]
    pub global_name: Option<String>,
    #[serde(default)]
    pub bot: bool,
}

/// `GET /gateway/bot`.
#[derive(Debug, Deserialize)]
pub(crate) struct GatewayBot {
    pub url: String,
}

/// Any object with an id (a created message, a DM channel).
#[derive(Debug, Deserialize)]
struct Created {
    id: String,
}

/// One bucket's state, from the last answer.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    remaining: u64,
    reset_at: Instant,
}

#[derive(Default)]
struct Limits {
    /// Route key → Discord's bucket hash.
    buckets_of_routes: HashMap<String, String>,
    /// `<bucket hash or route key>:<major parameter>` → state.
    buckets: HashMap<String, Bucket>,
    global_until: Option<Instant>,
}

/// Where a call is in Discord's rate limits: the route (method and path with the minor
/// ids left out) and its major parameter (the channel).
pub(crate) struct RouteKey {
    route: String,
    major: String,
}

impl RouteKey {
    pub(crate) fn new(method: &Method, template: &str, major: &str) -> Self {
        Self {
            route: format!("{method} {template}"),
            major: major.to_owned(),
        }
    }
}

/// A client for one bot.
pub(crate) struct Api {
    http: reqwest::Client,
    base: ApiBase,
    token: Secret,
    authorization: Secret,
    limits: Mutex<Limits>,
}

impl Api {
    pub(crate) fn new(
        info: &ChannelInfo,
        base: &ApiBase,
        token: Secret,
    ) -> Result<Self, PluginError> {
        let http = ClientConfig::for_channel(info)
            .timeout(Some(REQUEST_TIMEOUT))
            .build()?;
        let authorization = Secret::new(format!("Bot {}", token.expose()));
        Ok(Self {
            http,
            base: base.clone(),
            token,
            authorization,
            limits: Mutex::default(),
        })
    }

    fn limits(&self) -> MutexGuard<'_, Limits> {
        self.limits.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn request(
        &self,
        method: Method,
        segments: &[&str],
    ) -> Result<RequestBuilder, PluginError> {
        Ok(self
            .http
            .request(method, self.base.join(segments)?)
            .header("Authorization", self.authorization.expose()))
    }

    /// How long the route must wait before its next call.
    fn wait_for(&self, key: &RouteKey) -> Duration {
        let now = Instant::now();
        let limits = self.limits();
        let global = limits
            .global_until
            .map_or(Duration::ZERO, |until| until.saturating_duration_since(now));
        let bucket = limits
            .buckets_of_routes
            .get(&key.route)
            .map_or_else(|| key.route.clone(), Clone::clone);
        let state = limits.buckets.get(&format!("{bucket}:{}", key.major));
        let local = match state {
            Some(b) if b.remaining == 0 => b.reset_at.saturating_duration_since(now),
            _ => Duration::ZERO,
        };
        global.max(local)
    }

    /// Records an answer's bucket headers.
    fn note_headers(&self, key: &RouteKey, response: &Response) {
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let (Some(remaining), Some(reset_after)) = (
            header("x-ratelimit-remaining").and_then(|v| v.trim().parse::<u64>().ok()),
            header("x-ratelimit-reset-after").and_then(|v| seconds(&v)),
        ) else {
            return;
        };
        let mut limits = self.limits();
        let bucket = match header("x-ratelimit-bucket") {
            Some(hash) => {
                limits
                    .buckets_of_routes
                    .insert(key.route.clone(), hash.clone());
                hash
            }
            None => key.route.clone(),
        };
        limits.buckets.insert(
            format!("{bucket}:{}", key.major),
            Bucket {
                remaining,
                reset_at: Instant::now() + reset_after,
            },
        );
    }

    /// A 429: pauses the bucket or everything; returns the pause.
    async fn note_rate_limited(&self, key: &RouteKey, response: Response) -> Duration {
        let headers = response.headers().clone();
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let body: Value = http::read_capped(response, 64 * 1024, &[&self.token])
            .await
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(Value::Null);
        let retry_after = body
            .get("retry_after")
            .and_then(Value::as_f64)
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(Duration::from_secs_f64)
            .or_else(|| header("x-ratelimit-reset-after").and_then(|v| seconds(&v)))
            .or_else(|| header("retry-after").and_then(|v| seconds(&v)))
            .unwrap_or(Duration::from_secs(1));
        let global = body.get("global").and_then(Value::as_bool) == Some(true)
            || header("x-ratelimit-global").is_some_and(|v| v.eq_ignore_ascii_case("true"));
        let until = Instant::now() + retry_after;
        let mut limits = self.limits();
        if global {
            limits.global_until = Some(limits.global_until.map_or(until, |u| u.max(until)));
        } else {
            let bucket = header("x-ratelimit-bucket")
                .or_else(|| limits.buckets_of_routes.get(&key.route).cloned())
                .unwrap_or_else(|| key.route.clone());
            limits.buckets.insert(
                format!("{bucket}:{}", key.major),
                Bucket {
                    remaining: 0,
                    reset_at: until,
                },
            );
        }
        retry_after
    }

    /// Sends a request (rebuilt by `build` for each attempt), waiting for its bucket and
    /// retrying 429s within [`MAX_WAIT`]; returns the body of the success answer.
    pub(crate) async fn call(
        &self,
        what: &str,
        key: &RouteKey,
        build: impl Fn() -> Result<RequestBuilder, PluginError>,
    ) -> Result<Vec<u8>, PluginError> {
        let secrets = [&self.token, &self.authorization];
        let mut rate_limited = 0u32;
        loop {
            let wait = self.wait_for(key);
            if wait > MAX_WAIT {
                return Err(PluginError::rate_limited(
                    format!("{what}: Discord asked to slow down"),
                    Some(millis(wait)),
                ));
            }
            if !wait.is_zero() {
                sleep(wait).await;
            }
            let response = build()?
                .send()
                .await
                .map_err(|e| HttpError::from_reqwest(e, &secrets).to_plugin_error(what))?;
            self.note_headers(key, &response);
            if response.status().as_u16() == 429 {
                let pause = self.note_rate_limited(key, response).await;
                rate_limited += 1;
                if pause > MAX_WAIT || rate_limited > MAX_RATE_LIMITED_RETRIES {
                    return Err(PluginError::rate_limited(
                        format!("{what}: Discord answered 429 (rate limited)"),
                        Some(millis(pause)),
                    ));
                }
                continue;
            }
            let answer = async {
                let response = http::check(response, &secrets).await?;
                http::read_capped(response, MAX_ANSWER_BYTES, &secrets).await
            };
            return answer.await.map_err(|e| e.to_plugin_error(what));
        }
    }

    /// `GET /users/@me`: checks the token, returns the bot's user.
    pub(crate) async fn me(&self) -> Result<User, PluginError> {
        let key = RouteKey::new(&Method::GET, "/users/@me", "");
        let body = self
            .call("GET /users/@me", &key, || {
                self.request(Method::GET, &["users", "@me"])
            })
            .await?;
        decode("GET /users/@me", &body)
    }

    /// `GET /gateway/bot`: the gateway URL.
    pub(crate) async fn gateway_bot(&self) -> Result<GatewayBot, PluginError> {
        let key = RouteKey::new(&Method::GET, "/gateway/bot", "");
        let body = self
            .call("GET /gateway/bot", &key, || {
                self.request(Method::GET, &["gateway", "bot"])
            })
            .await?;
        decode("GET /gateway/bot", &body)
    }

    /// `POST /users/@me/channels`: the DM channel with a user.
    pub(crate) async fn open_dm(&self, user_id: &str) -> Result<String, PluginError> {
        let key = RouteKey::new(&Method::POST, "/users/@me/channels", "");
        let body = serde_json::json!({ "recipient_id": user_id });
        let answer = self
            .call("open DM", &key, || {
                Ok(self
                    .request(Method::POST, &["users", "@me", "channels"])?
                    .json(&body))
            })
            .await?;
        decode::<Created>("open DM", &answer).map(|c| c.id)
    }

    /// `POST /interactions/{id}/{token}/callback`: acknowledges a button click.
    pub(crate) async fn ack_interaction(
        &self,
        id: &str,
        interaction_token: &str,
        callback_type: u8,
    ) -> Result<(), PluginError> {
        let key = RouteKey::new(&Method::POST, "/interactions/callback", id);
        let body = serde_json::json!({ "type": callback_type });
        let interaction_token = Secret::new(interaction_token);
        self.call("acknowledge interaction", &key, || {
            Ok(self
                .http
                .post(self.base.join([
                    "interactions",
                    id,
                    interaction_token.expose(),
                    "callback",
                ])?)
                .json(&body))
        })
        .await
        .map(drop)
        .map_err(|mut e| {
            e.message = interaction_token.redact(e.message.as_str()).into();
            e
        })
    }

    /// A call whose answer is a message (or a channel): returns its id.
    pub(crate) async fn created_id(
        &self,
        what: &str,
        key: &RouteKey,
        build: impl Fn() -> Result<RequestBuilder, PluginError>,
    ) -> Result<String, PluginError> {
        let body = self.call(what, key, build).await?;
        decode::<Created>(what, &body).map(|c| c.id)
    }
}

/// Hosts Discord serves attachments from.
const CDN_HOSTS: [&str; 2] = ["cdn.discordapp.com", "media.discordapp.net"];

impl Api {
    /// True for a URL Discord serves attachments from (its CDN), or the API's own host (a
    /// local fake): the plugin fetches nothing else.
    pub(crate) fn is_attachment_url(&self, url: &Url) -> bool {
        match url.scheme() {
            "https" if url.host_str().is_some_and(|h| CDN_HOSTS.contains(&h)) => true,
            "http" | "https" => {
                let base = self.base.url();
                url.host_str() == base.host_str()
                    && url.port_or_known_default() == base.port_or_known_default()
                    && url.scheme() == base.scheme()
            }
            _ => false,
        }
    }

    /// Downloads an attachment (no `Authorization`: the CDN URL is signed), at most
    /// `max_bytes`.
    pub(crate) async fn download(&self, url: &str, max_bytes: u64) -> Result<Vec<u8>, HttpError> {
        let url = Url::parse(url).map_err(|e| HttpError::Decode(format!("attachment URL: {e}")))?;
        if !self.is_attachment_url(&url) {
            return Err(HttpError::Decode(
                "attachment URL is not on Discord's CDN".to_owned(),
            ));
        }
        let response = http::send(self.http.get(url), &[&self.token]).await?;
        http::read_capped(response, max_bytes, &[&self.token]).await
    }
}

/// Decimal seconds (`"1.5"`) as a duration.
fn seconds(value: &str) -> Option<Duration> {
    let secs: f64 = value.trim().parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs))
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

pub(crate) fn decode<T: DeserializeOwned>(what: &str, body: &[u8]) -> Result<T, PluginError> {
    serde_json::from_slice(body)
        .map_err(|e| PluginError::other(format!("{what}: unexpected answer: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attachments_come_only_from_the_cdn_or_the_api_host() {
        let token = Secret::new("a.b.c");
        let base = ApiBase::parse("api_base_url", "http://127.0.0.1:9000/api/v10", &[&token])
            .expect("base");
        let api = Api::new(&crate::Discord::INFO, &base, token).expect("api");
        let ok = |u: &str| api.is_attachment_url(&Url::parse(u).expect("url"));
        assert!(ok(
            "https://cdn.discordapp.com/attachments/1/2/a.png?ex=1&hm=2"
        ));
        assert!(ok("https://media.discordapp.net/attachments/1/2/a.png"));
        assert!(ok("http://127.0.0.1:9000/cdn/attachments/1/2/a.png"));
        assert!(
            !ok("http://cdn.discordapp.com/attachments/1/2/a.png"),
            "plain http"
        );
        assert!(!ok("http://127.0.0.1:9001/cdn/a.png"), "another port");
        assert!(!ok("https://evil.example/attachments/a.png"));
        assert!(!ok("file:///etc/passwd"));
    }

    #[test]
    fn seconds_parse() {
        assert_eq!(seconds("1.5"), Some(Duration::from_millis(1500)));
        assert_eq!(seconds(" 2 "), Some(Duration::from_secs(2)));
        assert_eq!(seconds("-1"), None);
        assert_eq!(seconds("x"), None);
    }
}
