//! Webex's REST API (`https://webexapis.com/v1`): the calls the channel makes, with the bot
//! token, paced per space and globally, errors classified by the kit (401/403 → `AUTH`,
//! 404 → `NOT_FOUND`, 429 with `Retry-After` → `RATE_LIMITED`, 5xx → `NETWORK`).

use std::time::Duration;

use nanoclaw_plugin_api::kit::http::reqwest::{self, Method, Url, multipart};
use nanoclaw_plugin_api::kit::http::{self, ApiBase, ClientConfig};
use nanoclaw_plugin_api::kit::prelude::*;
use nanoclaw_plugin_api::kit::{Rate, RateLimiter};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Below the host's 30 s call timeout.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);
/// REST answers are small JSON objects (a page of webhooks, a message).
const MAX_ANSWER_BYTES: u64 = 1024 * 1024;
/// Longest a call waits for its rate limiter before it goes back as `RATE_LIMITED`.
const MAX_LIMITER_WAIT: Duration = Duration::from_secs(5);

/// `GET /people/me`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Me {
    pub id: String,
    #[serde(default)]
    pub display_name: String,
    #[serde(default)]
    pub emails: Vec<String>,
}

/// A message as `GET /messages/{id}` and `POST /messages` answer.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct WxMessage {
    pub id: String,
    #[serde(default)]
    pub room_id: String,
    #[serde(default)]
    pub room_type: Option<String>,
    #[serde(default)]
    pub parent_id: Option<String>,
    #[serde(default)]
    pub text: Option<String>,
    #[serde(default)]
    pub person_id: String,
    #[serde(default)]
    pub mentioned_people: Vec<String>,
    #[serde(default)]
    pub mentioned_groups: Vec<String>,
    #[serde(default)]
    pub files: Vec<String>,
    #[serde(default)]
    pub created: Option<String>,
}

/// `GET /attachment/actions/{id}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct WxAction {
    pub id: String,
    #[serde(default)]
    pub message_id: String,
    #[serde(default)]
    pub person_id: String,
    #[serde(default)]
    pub room_id: String,
    #[serde(default)]
    pub inputs: Value,
}

/// A registered webhook.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct WxWebhook {
    pub id: String,
    #[serde(default)]
    pub target_url: String,
    #[serde(default)]
    pub resource: String,
    #[serde(default)]
    pub event: String,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub secret: Option<String>,
}

/// A page of items.
#[derive(Debug, Deserialize)]
pub(crate) struct Items<T> {
    #[serde(default = "Vec::new")]
    pub items: Vec<T>,
}

/// A body for a call.
pub(crate) enum Body<'a> {
    None,
    Json(&'a Value),
    Form(multipart::Form),
}

/// The REST client.
pub(crate) struct Api {
    http: reqwest::Client,
    base: ApiBase,
    token: Secret,
    /// Posts per space (and all posts together).
    posts: RateLimiter,
    /// Everything else, together.
    reads: RateLimiter,
}

impl Api {
    pub(crate) fn new(
        info: &ChannelInfo,
        base: &ApiBase,
        token: Secret,
        post_per_sec: f64,
    ) -> Result<Self, PluginError> {
        let http = ClientConfig::for_channel(info)
            .timeout(Some(REQUEST_TIMEOUT))
            .build()?;
        Ok(Self {
            http,
            base: base.clone(),
            token,
            posts: RateLimiter::new(
                Some(Rate::per_second(post_per_sec * 10.0).burst(20)),
                Some(Rate::per_second(post_per_sec).burst(5)),
            ),
            reads: RateLimiter::new(Some(Rate::per_second(20.0).burst(40)), None),
        })
    }

    pub(crate) fn client(&self) -> &reqwest::Client {
        &self.http
    }

    pub(crate) fn token(&self) -> &Secret {
        &self.token
    }

    /// `<api_base_url>/<segments…>`: ids from outside are escaped, and `.`/`..` refused.
    pub(crate) fn url(&self, segments: &[&str]) -> Result<Url, PluginError> {
        self.base.join(segments)
    }

    /// One call: `what` names it in errors; `room` (for posts) keys the per-space pace.
    pub(crate) async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        url: Url,
        what: &str,
        room: Option<&str>,
        body: Body<'_>,
    ) -> Result<T, PluginError> {
        let (limiter, key) = match room {
            Some(room) => (&self.posts, room),
            None => (&self.reads, ""),
        };
        limiter
            .acquire_within(key, MAX_LIMITER_WAIT)
            .await
            .map_err(|wait| {
                let ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
                PluginError::rate_limited(format!("{what}: Webex's rate limit"), Some(ms))
            })?;
        let result = self.raw(method, url, what, body).await;
        if let Err(error) = &result {
            limiter.note(room, error);
        }
        result
    }

    async fn raw<T: DeserializeOwned>(
        &self,
        method: Method,
        url: Url,
        what: &str,
        body: Body<'_>,
    ) -> Result<T, PluginError> {
        let secrets = [&self.token];
        let request = self
            .http
            .request(method, url)
            .bearer_auth(self.token.expose());
        let request = match body {
            Body::None => request,
            Body::Json(v) => request.json(v),
            Body::Form(form) => request.multipart(form),
        };
        let response = http::send(request, &secrets)
            .await
            .map_err(|e| e.to_plugin_error(what))?;
        let bytes = http::read_capped(response, MAX_ANSWER_BYTES, &secrets)
            .await
            .map_err(|e| e.to_plugin_error(what))?;
        let bytes = if bytes.is_empty() {
            b"null".to_vec()
        } else {
            bytes
        };
        serde_json::from_slice(&bytes)
            .map_err(|e| PluginError::other(format!("{what}: unexpected answer: {e}")))
    }

    pub(crate) async fn get<T: DeserializeOwned>(
        &self,
        segments: &[&str],
        what: &str,
    ) -> Result<T, PluginError> {
        let url = self.url(segments)?;
        self.call(Method::GET, url, what, None, Body::None).await
    }
}
