//! The Matrix client-server API: the calls the channel makes, with the access token, Matrix
//! error bodies (`errcode`, `error`, `retry_after_ms`) and rate limits.
//!
//! A `429 M_LIMIT_EXCEEDED` pauses the call for its `retry_after_ms` (or `Retry-After`) and
//! retries it when that is within [`MAX_WAIT`]; longer goes back to the caller, and to the
//! host as `RATE_LIMITED` with the time left. Errors never carry the URL or the token.

use std::time::Duration;

use nanoclaw_plugin_api::kit::http::reqwest::{Method, RequestBuilder};
use nanoclaw_plugin_api::kit::http::{self, ApiBase, ClientConfig, HttpError, reqwest};
use nanoclaw_plugin_api::kit::prelude::*;
use nanoclaw_plugin_api::kit::tokio::time::sleep;
use serde_json::Value;

/// Below the host's 30 s call timeout.
pub(crate) const CALL_TIMEOUT: Duration = Duration::from_secs(20);
/// Matrix answers small JSON objects; a `/sync` batch can be larger.
const MAX_ANSWER_BYTES: u64 = 16 << 20;
/// Longest a call waits out a 429 before giving up.
pub(crate) const MAX_WAIT: Duration = Duration::from_secs(5);
/// 429 answers retried inside one call.
const MAX_RATE_LIMITED_RETRIES: u32 = 3;

/// Why a call failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub(crate) enum ApiError {
    /// No answer, a body too large, or one that is not JSON.
    #[error("{0}")]
    Http(HttpError),
    /// The homeserver answered with an error.
    #[error("HTTP {status} {errcode}: {error}")]
    Matrix {
        status: u16,
        errcode: String,
        error: String,
        retry_after: Option<Duration>,
    },
}

impl ApiError {
    pub(crate) fn errcode(&self) -> Option<&str> {
        match self {
            Self::Matrix { errcode, .. } => Some(errcode),
            Self::Http(_) => None,
        }
    }

    pub(crate) fn status(&self) -> Option<u16> {
        match self {
            Self::Matrix { status, .. } => Some(*status),
            Self::Http(e) => e.status(),
        }
    }

    /// The access token is wrong, expired or was logged out.
    pub(crate) fn is_unauthorized(&self) -> bool {
        matches!(self.errcode(), Some("M_UNKNOWN_TOKEN" | "M_MISSING_TOKEN"))
            || self.status() == Some(401)
    }

    /// How long the homeserver asked to wait (429).
    pub(crate) fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Matrix {
                status: 429,
                retry_after,
                ..
            } => Some(retry_after.unwrap_or(Duration::from_secs(1))),
            _ => None,
        }
    }

    /// The error for the host. `M_FORBIDDEN` (not in the room, no power) is the message's
    /// fault, not the credentials'.
    pub(crate) fn to_plugin_error(&self, what: &str) -> PluginError {
        match self {
            Self::Http(e) => e.to_plugin_error(what),
            Self::Matrix {
                status,
                errcode,
                retry_after,
                ..
            } => {
                let message = format!("{what}: {self}");
                if self.is_unauthorized() {
                    return PluginError::auth(message);
                }
                match errcode.as_str() {
                    "M_FORBIDDEN" => PluginError::invalid_input(message),
                    "M_TOO_LARGE" => PluginError::invalid_input(message),
                    "M_LIMIT_EXCEEDED" => {
                        http::classify(429, Some(retry_after.unwrap_or_default()), message)
                    }
                    _ => http::classify(*status, *retry_after, message),
                }
            }
        }
    }
}

/// Parses a Matrix error body (`{"errcode": …, "error": …, "retry_after_ms": …}`).
pub(crate) fn matrix_error(status: u16, body: &[u8], header_retry: Option<Duration>) -> ApiError {
    let value: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let text = |key: &str| {
        value
            .get(key)
            .and_then(Value::as_str)
            .map(|s| s.chars().take(300).collect::<String>())
    };
    let retry_ms = value
        .get("retry_after_ms")
        .and_then(Value::as_u64)
        // Newer servers put it in the header only (v1.10+); the body wins when both are there.
        .map(Duration::from_millis)
        .or(header_retry);
    ApiError::Matrix {
        status,
        errcode: text("errcode").unwrap_or_else(|| "M_UNKNOWN".to_owned()),
        error: text("error").unwrap_or_default(),
        retry_after: retry_ms,
    }
}

/// A client for one account.
pub(crate) struct Api {
    http: reqwest::Client,
    base: ApiBase,
    token: Secret,
    authorization: Secret,
}

impl Api {
    pub(crate) fn new(
        info: &ChannelInfo,
        base: &ApiBase,
        token: Secret,
    ) -> Result<Self, PluginError> {
        // `/sync` holds a request up to its timeout: calls set their own.
        let http = ClientConfig::for_channel(info).timeout(None).build()?;
        let authorization = Secret::new(format!("Bearer {}", token.expose()));
        Ok(Self {
            http,
            base: base.clone(),
            token,
            authorization,
        })
    }

    fn request(
        &self,
        method: Method,
        segments: &[&str],
        timeout: Duration,
    ) -> Result<RequestBuilder, PluginError> {
        Ok(self
            .http
            .request(method, self.base.join(segments)?)
            .timeout(timeout)
            .header("Authorization", self.authorization.expose()))
    }

    /// One exchange: the success body, or the error. 429s within [`MAX_WAIT`] are waited
    /// out and retried; `build` makes the request afresh for each attempt.
    async fn exchange(
        &self,
        build: impl Fn() -> Result<RequestBuilder, PluginError>,
        max_bytes: u64,
    ) -> Result<(Vec<u8>, Option<String>), ApiError> {
        let secrets = [&self.token, &self.authorization];
        let mut retries = 0;
        loop {
            let request =
                build().map_err(|e| ApiError::Http(HttpError::Decode(e.message.into())))?;
            let response = request
                .send()
                .await
                .map_err(|e| ApiError::Http(HttpError::from_reqwest(e, &secrets)))?;
            let status = response.status().as_u16();
            let header_retry = http::retry_after(response.headers());
            let content_type = response
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            if (200..300).contains(&status) {
                let body = http::read_capped(response, max_bytes, &secrets)
                    .await
                    .map_err(ApiError::Http)?;
                return Ok((body, content_type));
            }
            let body = http::read_capped(response, 64 * 1024, &secrets)
                .await
                .unwrap_or_default();
            let error = matrix_error(status, &body, header_retry);
            match error.retry_after() {
                Some(wait) if wait <= MAX_WAIT && retries < MAX_RATE_LIMITED_RETRIES => {
                    retries += 1;
                    sleep(wait).await;
                }
                _ => return Err(error),
            }
        }
    }

    /// A JSON call: `body` (if any) as JSON, the answer parsed.
    pub(crate) async fn call(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(&str, &str)],
        body: Option<&Value>,
        timeout: Duration,
    ) -> Result<Value, ApiError> {
        let (bytes, _) = self
            .exchange(
                || {
                    let mut request = self.request(method.clone(), segments, timeout)?;
                    if !query.is_empty() {
                        request = request.query(query);
                    }
                    if let Some(body) = body {
                        request = request.json(body);
                    } else if method != Method::GET {
                        request = request.json(&serde_json::json!({}));
                    }
                    Ok(request)
                },
                MAX_ANSWER_BYTES,
            )
            .await?;
        serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::Http(HttpError::Decode(format!("not JSON: {e}"))))
    }

    /// `GET` with the client-server prefix `/_matrix/client/v3`.
    pub(crate) async fn get(
        &self,
        path: &[&str],
        query: &[(&str, &str)],
    ) -> Result<Value, ApiError> {
        let segments = client_path(path);
        let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
        self.call(Method::GET, &segments, query, None, CALL_TIMEOUT)
            .await
    }

    /// `PUT` with the client-server prefix.
    pub(crate) async fn put(&self, path: &[&str], body: &Value) -> Result<Value, ApiError> {
        let segments = client_path(path);
        let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
        self.call(Method::PUT, &segments, &[], Some(body), CALL_TIMEOUT)
            .await
    }

    /// `POST` with the client-server prefix.
    pub(crate) async fn post(&self, path: &[&str], body: &Value) -> Result<Value, ApiError> {
        let segments = client_path(path);
        let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
        self.call(Method::POST, &segments, &[], Some(body), CALL_TIMEOUT)
            .await
    }

    /// `/sync`, held by the homeserver up to `timeout_ms`.
    pub(crate) async fn sync(
        &self,
        since: Option<&str>,
        filter: &str,
        timeout_ms: u64,
    ) -> Result<Value, ApiError> {
        let timeout = timeout_ms.to_string();
        let mut query = vec![("filter", filter), ("timeout", timeout.as_str())];
        if let Some(since) = since {
            query.push(("since", since));
        }
        let wait = Duration::from_millis(timeout_ms) + Duration::from_secs(30);
        self.call(
            Method::GET,
            &["_matrix", "client", "v3", "sync"],
            &query,
            None,
            wait,
        )
        .await
    }

    /// Uploads to the content repository; returns the `mxc://` URI.
    pub(crate) async fn upload(
        &self,
        name: &str,
        mime_type: &str,
        data: &[u8],
    ) -> Result<String, ApiError> {
        let content_type = if mime_type.trim().is_empty() {
            "application/octet-stream"
        } else {
            mime_type
        };
        let (bytes, _) = self
            .exchange(
                || {
                    Ok(self
                        .request(
                            Method::POST,
                            &["_matrix", "media", "v3", "upload"],
                            Duration::from_secs(60),
                        )?
                        .query(&[("filename", name)])
                        .header("Content-Type", content_type)
                        .body(data.to_vec()))
                },
                MAX_ANSWER_BYTES,
            )
            .await?;
        let value: Value = serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::Http(HttpError::Decode(format!("not JSON: {e}"))))?;
        value
            .get("content_uri")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| ApiError::Http(HttpError::Decode("upload without content_uri".into())))
    }

    /// Downloads `mxc://server/id`: the authenticated endpoint (`/_matrix/client/v1/media`),
    /// and the legacy one when the homeserver does not know it.
    pub(crate) async fn download(
        &self,
        server: &str,
        media_id: &str,
        max_bytes: u64,
    ) -> Result<(Vec<u8>, Option<String>), ApiError> {
        let timeout = Duration::from_secs(60);
        let authenticated = self
            .exchange(
                || {
                    self.request(
                        Method::GET,
                        &[
                            "_matrix", "client", "v1", "media", "download", server, media_id,
                        ],
                        timeout,
                    )
                },
                max_bytes,
            )
            .await;
        match authenticated {
            Err(e)
                if e.errcode() == Some("M_UNRECOGNIZED")
                    || matches!(e.status(), Some(404 | 405 | 400))
                        && e.errcode() != Some("M_NOT_FOUND") =>
            {
                self.exchange(
                    || {
                        self.request(
                            Method::GET,
                            &["_matrix", "media", "v3", "download", server, media_id],
                            timeout,
                        )
                    },
                    max_bytes,
                )
                .await
            }
            other => other,
        }
    }
}

/// `["_matrix", "client", "v3", …path]`.
fn client_path(path: &[&str]) -> Vec<String> {
    ["_matrix", "client", "v3"]
        .iter()
        .chain(path.iter())
        .map(|s| (*s).to_owned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies_are_classified() {
        let limited = matrix_error(
            429,
            br#"{"errcode":"M_LIMIT_EXCEEDED","error":"Too many requests","retry_after_ms":2000}"#,
            None,
        );
        assert_eq!(limited.retry_after(), Some(Duration::from_millis(2000)));
        let e = limited.to_plugin_error("send");
        assert_eq!(e.kind, ErrorKind::RATE_LIMITED);
        assert_eq!(e.retry_after_ms, RSome(2000));
        // The header is used when the body has no retry_after_ms (Matrix v1.10+).
        let header = matrix_error(
            429,
            br#"{"errcode":"M_LIMIT_EXCEEDED","error":"Too many requests"}"#,
            Some(Duration::from_secs(3)),
        );
        assert_eq!(header.retry_after(), Some(Duration::from_secs(3)));
        let token = matrix_error(
            401,
            br#"{"errcode":"M_UNKNOWN_TOKEN","error":"Invalid access token passed.","soft_logout":false}"#,
            None,
        );
        assert!(token.is_unauthorized());
        assert_eq!(token.to_plugin_error("whoami").kind, ErrorKind::AUTH);
        let forbidden = matrix_error(
            403,
            br#"{"errcode":"M_FORBIDDEN","error":"User @bot:localhost not in room !x:localhost"}"#,
            None,
        );
        assert_eq!(
            forbidden.to_plugin_error("send").kind,
            ErrorKind::INVALID_INPUT
        );
        let garbage = matrix_error(502, b"<html>bad gateway</html>", None);
        assert_eq!(garbage.errcode(), Some("M_UNKNOWN"));
        assert_eq!(garbage.to_plugin_error("sync").kind, ErrorKind::NETWORK);
    }
}
