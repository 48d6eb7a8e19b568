//! The Graph API (`https://graph.facebook.com/v21.0`) as the Cloud API uses it: calls with
//! the access token, paced per recipient and per business number, and Graph errors
//! (`{"error": {"code", "message", "error_data": {"details"}}}`) classified by their code.

use std::time::Duration;

use nanoclaw_plugin_api::kit::http::reqwest::{self, Method, Url, multipart};
use nanoclaw_plugin_api::kit::http::{self, ApiBase, ClientConfig, HttpError};
use nanoclaw_plugin_api::kit::prelude::*;
use nanoclaw_plugin_api::kit::{Rate, RateLimiter};
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Below the host's 30 s call timeout.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);
const MAX_ANSWER_BYTES: u64 = 1024 * 1024;
const MAX_LIMITER_WAIT: Duration = Duration::from_secs(5);
/// Outside the 24-hour customer-service window.
pub(crate) const REENGAGEMENT: i64 = 131047;

/// The operator-facing words for the 24-hour window.
pub(crate) const WINDOW_TEXT: &str = "outside WhatsApp's 24-hour customer-service window: \
    the user must write to the business number first (free-form messages are only allowed \
    within 24 hours of their last message)";

/// A Graph error's code and what it means for the host.
pub(crate) fn classify_graph_error(
    what: &str,
    status: u16,
    code: Option<i64>,
    message: &str,
    retry_after: Option<Duration>,
) -> PluginError {
    let text = format!(
        "{what}: WhatsApp answered {status} (code {}): {message}",
        code.unwrap_or(0)
    );
    match code {
        Some(REENGAGEMENT) => PluginError::invalid_input(format!("{what}: {WINDOW_TEXT}")),
        // The token expired or lacks a permission: the operator must act.
        Some(190 | 102 | 10 | 200..=299) => PluginError::auth(text),
        // Throughput (per number), pair rate limit (per recipient), app/account limits.
        Some(130429 | 131056 | 4 | 80007 | 613) => {
            let ms = retry_after.map_or(if code == Some(131056) { 6000 } else { 1000 }, |d| {
                u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
            });
            PluginError::rate_limited(text, Some(ms))
        }
        // Meta is having trouble: try again later.
        Some(1 | 2 | 131000 | 131016 | 133004) => PluginError::network(text),
        // The recipient cannot be reached.
        Some(131026 | 131030 | 131021) => PluginError::not_found(text),
        _ => http::classify(status, retry_after, text),
    }
}

/// The Graph client.
pub(crate) struct Api {
    http: reqwest::Client,
    base: ApiBase,
    token: Secret,
    /// Sends: per recipient (the pair rate limit) and per business number (throughput).
    sends: RateLimiter,
    /// Everything else.
    reads: RateLimiter,
}

/// A body for a call.
pub(crate) enum Body<'a> {
    None,
    Json(&'a Value),
    Form(multipart::Form),
}

impl Api {
    pub(crate) fn new(
        info: &ChannelInfo,
        base: &ApiBase,
        token: Secret,
        per_number_per_sec: f64,
    ) -> Result<Self, PluginError> {
        let http = ClientConfig::for_channel(info)
            .timeout(Some(REQUEST_TIMEOUT))
            .build()?;
        Ok(Self {
            http,
            base: base.clone(),
            token,
            sends: RateLimiter::new(
                Some(Rate::per_second(per_number_per_sec).burst(20)),
                // Meta's pair rate limit: about one message every 6 s to one user, with
                // bursts allowed (a split reply and its buttons).
                Some(Rate::per_minute(10.0).burst(20)),
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

    /// One call; `to` (for sends) keys the per-recipient pace.
    pub(crate) async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        url: Url,
        what: &str,
        to: Option<&str>,
        body: Body<'_>,
    ) -> Result<T, PluginError> {
        let (limiter, key) = match to {
            Some(to) => (&self.sends, to),
            None => (&self.reads, ""),
        };
        limiter
            .acquire_within(key, MAX_LIMITER_WAIT)
            .await
            .map_err(|wait| {
                let ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
                PluginError::rate_limited(format!("{what}: WhatsApp's rate limit"), Some(ms))
            })?;
        let result = self.raw(method, url, what, body).await;
        if let Err(error) = &result {
            limiter.note(to, error);
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
        let response = request
            .send()
            .await
            .map_err(|e| HttpError::from_reqwest(e, &secrets).to_plugin_error(what))?;
        let status = response.status().as_u16();
        let retry_after = http::retry_after(response.headers());
        let bytes = http::read_capped(response, MAX_ANSWER_BYTES, &secrets)
            .await
            .map_err(|e| e.to_plugin_error(what))?;
        if !(200..300).contains(&status) {
            let error: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            let e = &error["error"];
            let message = e["error_data"]["details"]
                .as_str()
                .or(e["message"].as_str())
                .unwrap_or("no detail");
            let message: String = message.chars().take(300).collect();
            return Err(classify_graph_error(
                what,
                status,
                e["code"].as_i64(),
                &message,
                retry_after,
            ));
        }
        serde_json::from_slice(&bytes)
            .map_err(|e| PluginError::other(format!("{what}: unexpected answer: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn graph_codes_are_classified() {
        let kind = |status, code| classify_graph_error("m", status, Some(code), "x", None).kind;
        assert_eq!(kind(400, REENGAGEMENT), ErrorKind::INVALID_INPUT);
        assert!(
            classify_graph_error("m", 400, Some(REENGAGEMENT), "x", None)
                .message
                .contains("24-hour")
        );
        assert_eq!(kind(401, 190), ErrorKind::AUTH);
        assert_eq!(kind(400, 130429), ErrorKind::RATE_LIMITED);
        let pair = classify_graph_error("m", 400, Some(131056), "x", None);
        assert_eq!(pair.retry_after_ms, RSome(6000));
        assert_eq!(kind(500, 131000), ErrorKind::NETWORK);
        assert_eq!(kind(400, 131026), ErrorKind::NOT_FOUND);
        assert_eq!(kind(400, 100), ErrorKind::INVALID_INPUT);
        assert_eq!(kind(429, 999), ErrorKind::RATE_LIMITED);
    }
}
