//! Resend's REST API: the calls the channel makes, their answers and their errors.
//!
//! Errors are JSON `{"statusCode", "name", "message"}` with the HTTP status; the kit
//! classifies the status (401/403 → `AUTH`, 404 → `NOT_FOUND`, 422 → `INVALID_INPUT`, 429 →
//! `RATE_LIMITED` with `Retry-After`, 5xx → `NETWORK`). Resend's default rate limit is two
//! requests a second per team: calls wait for a global token bucket first.

use std::time::Duration;

use nanoclaw_plugin_api::kit::http::reqwest::{self, Method, Url};
use nanoclaw_plugin_api::kit::http::{self, ApiBase, ClientConfig};
use nanoclaw_plugin_api::kit::prelude::*;
use nanoclaw_plugin_api::kit::{Rate, RateLimiter};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Below the host's call timeout.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// A received email (bodies included) is at most a few MiB of JSON.
const MAX_ANSWER_BYTES: u64 = 16 * 1024 * 1024;
/// Longest a call waits for the rate limiter before it goes back as `RATE_LIMITED`.
const MAX_LIMITER_WAIT: Duration = Duration::from_secs(5);

pub(crate) struct Api {
    client: reqwest::Client,
    base: String,
    key: Secret,
    limiter: RateLimiter,
}

/// `GET /domains`.
#[derive(Debug, Deserialize)]
pub(crate) struct Domains {
    #[serde(default)]
    pub data: Vec<Domain>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct Domain {
    pub name: String,
    #[serde(default)]
    pub status: String,
}

/// `GET /emails/receiving/{id}`.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct ReceivedEmail {
    pub id: String,
    #[serde(default)]
    pub from: String,
    #[serde(default)]
    pub subject: Option<String>,
    #[serde(default)]
    pub html: Option<String>,
    #[serde(default)]
    pub text: Option<String>,
    /// Header name → value (a string; an array when the header repeats).
    #[serde(default)]
    pub headers: Option<serde_json::Map<String, Value>>,
    #[serde(default)]
    pub message_id: Option<String>,
    #[serde(default)]
    pub attachments: Vec<AttachmentMeta>,
}

impl ReceivedEmail {
    /// Every value of header `name` (case-insensitive).
    pub(crate) fn header_values(&self, name: &str) -> Vec<String> {
        let Some(headers) = &self.headers else {
            return Vec::new();
        };
        headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .flat_map(|(_, v)| match v {
                Value::String(s) => vec![s.clone()],
                Value::Array(a) => a
                    .iter()
                    .filter_map(|x| x.as_str().map(str::to_owned))
                    .collect(),
                _ => Vec::new(),
            })
            .collect()
    }

    /// The first value of header `name`.
    pub(crate) fn header(&self, name: &str) -> Option<String> {
        self.header_values(name).into_iter().next()
    }
}

/// An attachment as the webhook and the received email list it (metadata only).
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct AttachmentMeta {
    pub id: String,
    #[serde(default)]
    pub filename: Option<String>,
    #[serde(default)]
    pub content_type: Option<String>,
    #[serde(default)]
    pub size: Option<u64>,
}

/// `GET /emails/receiving/{email_id}/attachments/{id}`.
#[derive(Debug, Deserialize)]
pub(crate) struct AttachmentLink {
    pub download_url: String,
    #[serde(default)]
    pub size: Option<u64>,
}

/// `POST /emails`.
#[derive(Debug, Deserialize)]
pub(crate) struct SentId {
    pub id: String,
}

/// Ids that go into a URL path: Resend's are UUIDs.
pub(crate) fn is_resend_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}

impl Api {
    pub(crate) fn new(
        info: &ChannelInfo,
        base: &ApiBase,
        key: Secret,
        per_sec: f64,
    ) -> Result<Self, PluginError> {
        let client = ClientConfig::for_channel(info)
            .timeout(Some(REQUEST_TIMEOUT))
            .build()?;
        Ok(Self {
            client,
            base: base.as_str().to_owned(),
            key,
            limiter: RateLimiter::new(Some(Rate::per_second(per_sec).burst(2)), None),
        })
    }

    /// One call: waits for the rate limiter, sends with the API key, classifies failures.
    pub(crate) async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        idempotency_key: Option<&str>,
    ) -> Result<T, PluginError> {
        let what = format!("{method} {}", path.split('?').next().unwrap_or(path));
        self.limiter
            .acquire_within("", MAX_LIMITER_WAIT)
            .await
            .map_err(|wait| {
                let ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
                PluginError::rate_limited(format!("{what}: Resend's rate limit"), Some(ms))
            })?;
        let url = Url::parse(&format!("{}{path}", self.base))
            .map_err(|_| PluginError::invalid_input(format!("{what}: not a valid URL")))?;
        let mut request = self
            .client
            .request(method, url)
            .bearer_auth(self.key.expose());
        if let Some(body) = body {
            request = request.json(body);
        }
        if let Some(key) = idempotency_key {
            request = request.header("Idempotency-Key", key);
        }
        let secrets = [&self.key];
        let response = match http::send(request, &secrets).await {
            Ok(response) => response,
            Err(e) => {
                let error = e.to_plugin_error(&what);
                self.limiter.note(None, &error);
                return Err(error);
            }
        };
        let bytes = http::read_capped(response, MAX_ANSWER_BYTES, &secrets)
            .await
            .map_err(|e| e.to_plugin_error(&what))?;
        serde_json::from_slice(&bytes)
            .map_err(|e| PluginError::other(format!("{what}: unexpected answer: {e}")))
    }

    /// A signed download URL's content, without the API key (it is not Resend's API),
    /// within `cap` bytes.
    pub(crate) async fn download(&self, url: Url, cap: u64) -> Result<Vec<u8>, PluginError> {
        let response = http::send(self.client.get(url), &[])
            .await
            .map_err(|e| e.to_plugin_error("attachment download"))?;
        http::read_capped(response, cap, &[])
            .await
            .map_err(|e| e.to_plugin_error("attachment download"))
    }
}
