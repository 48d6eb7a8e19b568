//! HTTP for channels (feature `kit-http`): a client with sane defaults, errors classified
//! into [`PluginError`] kinds, secrets kept out of messages, capped downloads, multipart.
//!
//! ```no_run
//! # async fn demo() -> Result<(), nanoclaw_plugin_api::abi::PluginError> {
//! use nanoclaw_plugin_api::kit::http::{self, ClientConfig};
//! use nanoclaw_plugin_api::kit::Secret;
//!
//! let token = Secret::new("xoxb-…");
//! let client = ClientConfig::new("slack", "0.1.0").build()?;
//! let request = client
//!     .post("https://slack.com/api/chat.postMessage")
//!     .bearer_auth(token.expose());
//! let call = async {
//!     let response = http::send(request, &[&token]).await?;
//!     http::read_capped(response, 1 << 20, &[&token]).await
//! };
//! // 429 → RATE_LIMITED with retry_after_ms, 401 → AUTH, 5xx → NETWORK, …
//! let body = call.await.map_err(|e| e.to_plugin_error("chat.postMessage"))?;
//! # let _ = body; Ok(()) }
//! ```

use std::time::{Duration, SystemTime};

pub use reqwest;
use reqwest::header::{HeaderMap, RETRY_AFTER};

use super::{ChannelInfo, Secret, redact_all};
use crate::abi::{ErrorKind, OutboundFile, PluginError};

/// Default time to wait for a TCP/TLS connection.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default time for a whole request (long polls set their own per request).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// How much of an error body is kept in [`HttpError::Status`].
const ERROR_BODY_BYTES: usize = 512;

pub use super::tls::install_crypto_provider;

/// Builds a [`reqwest::Client`]: rustls with ring, connect and request timeouts, the user
/// agent `nanoclaw-<plugin>/<version>`, and no redirects unless asked (a redirect would
/// carry credentials to a host we did not choose).
#[derive(Debug, Clone)]
pub struct ClientConfig {
    user_agent: String,
    connect_timeout: Duration,
    timeout: Option<Duration>,
    redirects: usize,
}

impl ClientConfig {
    /// User agent `nanoclaw-<plugin>/<version>`, 10 s to connect, 30 s per request.
    pub fn new(plugin: &str, version: &str) -> Self {
        Self {
            user_agent: format!("nanoclaw-{plugin}/{version}"),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            timeout: Some(DEFAULT_TIMEOUT),
            redirects: 0,
        }
    }

    /// [`ClientConfig::new`] with the channel type and version of `info`.
    pub fn for_channel(info: &ChannelInfo) -> Self {
        Self::new(info.channel_type, info.version)
    }

    /// Time to establish a connection.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Default time for a whole request; `None` for none (set one per request then).
    pub fn timeout(mut self, timeout: Option<Duration>) -> Self {
        self.timeout = timeout;
        self
    }

    /// Follows up to `max` redirects (default 0).
    pub fn follow_redirects(mut self, max: usize) -> Self {
        self.redirects = max;
        self
    }

    /// The user agent this client sends.
    pub fn user_agent(&self) -> &str {
        &self.user_agent
    }

    /// Builds the client (installing the ring provider first).
    pub fn build(self) -> Result<reqwest::Client, PluginError> {
        install_crypto_provider();
        let redirect = match self.redirects {
            0 => reqwest::redirect::Policy::none(),
            n => reqwest::redirect::Policy::limited(n),
        };
        let mut builder = reqwest::Client::builder()
            .connect_timeout(self.connect_timeout)
            .redirect(redirect)
            .user_agent(self.user_agent);
        if let Some(timeout) = self.timeout {
            builder = builder.timeout(timeout);
        }
        builder.build().map_err(|e| {
            PluginError::config(format!("cannot build the HTTP client: {}", error_chain(&e)))
        })
    }
}

/// An API root from a channel's settings (`api_base_url`, so tests and operators can point
/// the channel at a fake or a proxy): `http`/`https` with a host, no query, fragment or
/// credentials, kept without its trailing slash. Build request URLs with [`ApiBase::join`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiBase {
    url: String,
    parsed: reqwest::Url,
    path: String,
    plain_remote: bool,
}

impl ApiBase {
    /// Checks `raw`. Errors are `CONFIG`, quote the URL with `secrets` redacted, and name
    /// the setting `setting`.
    pub fn parse(setting: &str, raw: &str, secrets: &[&Secret]) -> Result<Self, PluginError> {
        let bad = |why: &str| {
            PluginError::config(format!("{setting} `{}`: {why}", redact_all(raw, secrets)))
        };
        let url = reqwest::Url::parse(raw.trim()).map_err(|e| bad(&e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(bad("must be an http:// or https:// URL"));
        }
        let Some(host) = url.host_str() else {
            return Err(bad("has no host"));
        };
        if url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() {
            return Err(bad("must not have a query, a fragment or credentials"));
        }
        let loopback = host == "localhost"
            || host
                .trim_matches(['[', ']'])
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        let trimmed = url.as_str().trim_end_matches('/');
        // `https://h/api/` and `https://h/api` are one root: joining never doubles a slash.
        let parsed = reqwest::Url::parse(trimmed).map_err(|e| bad(&e.to_string()))?;
        Ok(Self {
            url: trimmed.to_owned(),
            parsed,
            path: url.path().to_owned(),
            plain_remote: url.scheme() == "http" && !loopback,
        })
    }

    /// The root without a trailing slash: append `/method` paths to it.
    pub fn as_str(&self) -> &str {
        &self.url
    }

    /// The URL's path (for platform-specific checks).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Plain `http` to another machine: credentials would travel unencrypted (warn).
    pub fn is_plain_remote(&self) -> bool {
        self.plain_remote
    }

    /// The root, parsed (its origin, say, to recognise the API's own links).
    pub fn url(&self) -> &reqwest::Url {
        &self.parsed
    }

    /// `<root>/<segment>/…`, each segment one percent-encoded path segment (`/`, `?`, `#`
    /// inside it are escaped). Ids often come from outside, so `""`, `.` and `..` are
    /// refused (`INVALID_INPUT`): a URL would drop or resolve them and call another
    /// endpoint. A fixed prefix such as `v1` is just the first segments.
    pub fn join<S: AsRef<str>>(
        &self,
        segments: impl IntoIterator<Item = S>,
    ) -> Result<reqwest::Url, PluginError> {
        let mut url = self.parsed.clone();
        {
            // An http(s) URL with a host always takes a path.
            let mut path = url
                .path_segments_mut()
                .map_err(|()| PluginError::config("the API root cannot take a path"))?;
            path.pop_if_empty();
            for segment in segments {
                let segment = segment.as_ref();
                if matches!(segment, "" | "." | "..") {
                    return Err(PluginError::invalid_input(format!(
                        "`{segment}` is not a valid id or URL path segment: it would change \
                         which endpoint is called"
                    )));
                }
                path.push(segment);
            }
        }
        Ok(url)
    }
}

/// Why an HTTP exchange failed. Messages never contain URLs or the secrets given when the
/// error was made.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum HttpError {
    /// No HTTP answer: connection refused or reset, DNS, TLS, timeout, truncated body.
    #[error("network error: {message}")]
    Network {
        /// What went wrong (redacted, without the URL).
        message: String,
        /// The request or connection timed out.
        timed_out: bool,
    },
    /// An answer with a non-success status.
    #[error("HTTP {status}{}", body_suffix(body))]
    Status {
        /// The status code.
        status: u16,
        /// The server's `Retry-After`, if any.
        retry_after: Option<Duration>,
        /// The start of the body (redacted), for the log.
        body: String,
    },
    /// The body was larger than the caller allows.
    #[error("the response is larger than {limit} bytes")]
    TooLarge {
        /// The limit in bytes.
        limit: u64,
    },
    /// A success answer that could not be understood.
    #[error("unexpected answer: {0}")]
    Decode(String),
}

fn body_suffix(body: &str) -> String {
    if body.is_empty() {
        String::new()
    } else {
        format!(": {body}")
    }
}

impl HttpError {
    /// From a reqwest error: the URL is stripped (it may hold a token) and `secrets` are
    /// redacted from the rest.
    pub fn from_reqwest(error: reqwest::Error, secrets: &[&Secret]) -> Self {
        if let Some(status) = error.status() {
            return Self::Status {
                status: status.as_u16(),
                retry_after: None,
                body: String::new(),
            };
        }
        let timed_out = error.is_timeout();
        let decode = error.is_decode();
        let message = redact_all(&error_chain(&error.without_url()), secrets);
        if decode {
            Self::Decode(message)
        } else {
            Self::Network { message, timed_out }
        }
    }

    /// The status code of a [`HttpError::Status`].
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The error for the host, `what` (the call) named in the message. See [`classify`].
    pub fn to_plugin_error(&self, what: &str) -> PluginError {
        let message = format!("{what}: {self}");
        match self {
            Self::Network {
                timed_out: true, ..
            } => PluginError::timeout(message),
            Self::Network { .. } => PluginError::network(message),
            Self::Status {
                status,
                retry_after,
                ..
            } => classify(*status, *retry_after, message),
            Self::TooLarge { .. } => PluginError::invalid_input(message),
            Self::Decode(_) => PluginError::other(message),
        }
    }
}

/// The [`PluginError`] for an HTTP status:
///
/// | status | kind | |
/// |---|---|---|
/// | 429 | `RATE_LIMITED` | transient; `retry_after` as `retry_after_ms` |
/// | 5xx | `NETWORK` | transient; `retry_after` as `retry_after_ms` |
/// | 408 | `TIMEOUT` | transient |
/// | 401, 403 | `AUTH` | the operator must fix the credentials |
/// | 404, 410 | `NOT_FOUND` | the chat, user or message is gone |
/// | other 4xx | `INVALID_INPUT` | the message's own fault: retrying won't help |
/// | anything else | `OTHER` | |
pub fn classify(
    status: u16,
    retry_after: Option<Duration>,
    message: impl Into<String>,
) -> PluginError {
    let retry_ms = retry_after.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let kind = match status {
        429 => ErrorKind::RATE_LIMITED,
        500..=599 => ErrorKind::NETWORK,
        408 => ErrorKind::TIMEOUT,
        401 | 403 => ErrorKind::AUTH,
        404 | 410 => ErrorKind::NOT_FOUND,
        400..=499 => ErrorKind::INVALID_INPUT,
        _ => ErrorKind::OTHER,
    };
    let mut error = PluginError::new(kind, message);
    if matches!(kind, ErrorKind::RATE_LIMITED | ErrorKind::NETWORK) {
        error.retry_after_ms = retry_ms.into();
    }
    error
}

/// The `Retry-After` header of a response, as a delay from now.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?;
    parse_retry_after(value, SystemTime::now())
}

/// Parses a `Retry-After` value: delay-seconds (`120`) or an HTTP date
/// (`Wed, 21 Oct 2015 07:28:00 GMT`), relative to `now`. A date in the past is zero.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Sends `request` and [`check`]s the answer: a success response, or an [`HttpError`] whose
/// message holds neither the URL nor `secrets`.
pub async fn send(
    request: reqwest::RequestBuilder,
    secrets: &[&Secret],
) -> Result<reqwest::Response, HttpError> {
    let response = request
        .send()
        .await
        .map_err(|e| HttpError::from_reqwest(e, secrets))?;
    check(response, secrets).await
}

/// Passes a success response through; turns any other into [`HttpError::Status`] with its
/// `Retry-After` and the start of its body (redacted).
pub async fn check(
    response: reqwest::Response,
    secrets: &[&Secret],
) -> Result<reqwest::Response, HttpError> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let retry_after = retry_after(response.headers());
    // The body only explains the failure: a capped, best-effort read.
    let body = read_capped(response, 64 * 1024, secrets)
        .await
        .map(|bytes| {
            let text = String::from_utf8_lossy(&bytes[..bytes.len().min(ERROR_BODY_BYTES)]);
            redact_all(text.trim(), secrets)
        })
        .unwrap_or_default();
    Err(HttpError::Status {
        status: status.as_u16(),
        retry_after,
        body,
    })
}

/// Reads the body, failing with [`HttpError::TooLarge`] as soon as it passes `max_bytes`
/// (or at once when `Content-Length` says it will): nothing beyond the limit is read.
pub async fn read_capped(
    mut response: reqwest::Response,
    max_bytes: u64,
    secrets: &[&Secret],
) -> Result<Vec<u8>, HttpError> {
    let too_large = HttpError::TooLarge { limit: max_bytes };
    if response.content_length().is_some_and(|len| len > max_bytes) {
        return Err(too_large);
    }
    let mut data = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| HttpError::from_reqwest(e, secrets))?
    {
        let total = u64::try_from(data.len() + chunk.len()).unwrap_or(u64::MAX);
        if total > max_bytes {
            return Err(too_large);
        }
        data.extend_from_slice(&chunk);
    }
    Ok(data)
}

/// `error: cause: cause…`, skipping causes already quoted by their parent.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Multipart upload helpers.
pub mod multipart {
    use reqwest::multipart::Part;

    use crate::abi::OutboundFile;

    /// The last path component of `name`, or `file` when there is none: a name from an
    /// agent must not read as a path on the platform.
    pub fn safe_file_name(name: &str) -> String {
        let base = name.rsplit(['/', '\\']).next().unwrap_or_default().trim();
        if base.is_empty() || base == "." || base == ".." {
            "file".to_owned()
        } else {
            base.to_owned()
        }
    }

    /// A file part with a safe name and, when it parses, the MIME type (otherwise none, so
    /// the platform sniffs the content).
    pub fn file_part(name: &str, mime_type: &str, data: Vec<u8>) -> Part {
        // `mime_str` consumes the part even when it fails: check the type on an empty one.
        let valid =
            !mime_type.trim().is_empty() && Part::bytes(Vec::new()).mime_str(mime_type).is_ok();
        let part = Part::bytes(data).file_name(safe_file_name(name));
        if !valid {
            return part;
        }
        part.mime_str(mime_type)
            .unwrap_or_else(|_| unreachable!("the MIME type was checked above"))
    }

    /// [`file_part`] for a file the host asked to send.
    pub fn outbound_file_part(file: &OutboundFile) -> Part {
        file_part(
            file.name.as_str(),
            file.mime_type.as_str(),
            file.data.to_vec(),
        )
    }
}

/// The upload size of files the host asks to send, checked against a platform's limit.
pub fn check_upload_size(
    file: &OutboundFile,
    max_bytes: usize,
    platform: &str,
) -> Result<(), PluginError> {
    if file.data.len() > max_bytes {
        return Err(PluginError::invalid_input(format!(
            "file `{}` is {} bytes; {platform} takes at most {max_bytes} bytes",
            file.name,
            file.data.len()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::{Read as _, Write as _};
    use std::net::TcpListener;

    use super::*;

    #[test]
    fn statuses_are_classified() {
        let kind = |status| classify(status, None, "m").kind;
        assert_eq!(kind(429), ErrorKind::RATE_LIMITED);
        assert_eq!(kind(500), ErrorKind::NETWORK);
        assert_eq!(kind(503), ErrorKind::NETWORK);
        assert_eq!(kind(408), ErrorKind::TIMEOUT);
        assert_eq!(kind(401), ErrorKind::AUTH);
        assert_eq!(kind(403), ErrorKind::AUTH);
        assert_eq!(kind(404), ErrorKind::NOT_FOUND);
        assert_eq!(kind(400), ErrorKind::INVALID_INPUT);
        assert_eq!(kind(413), ErrorKind::INVALID_INPUT);
        assert_eq!(kind(302), ErrorKind::OTHER);
        let limited = classify(429, Some(Duration::from_secs(7)), "slow");
        assert!(limited.is_transient());
        assert_eq!(limited.retry_after_ms.into_option(), Some(7000));
        let down = classify(503, Some(Duration::from_millis(1500)), "down");
        assert!(down.is_transient());
        assert_eq!(down.retry_after_ms.into_option(), Some(1500));
        assert!(!classify(400, Some(Duration::from_secs(1)), "x").is_transient());
        assert_eq!(
            classify(400, Some(Duration::from_secs(1)), "x")
                .retry_after_ms
                .into_option(),
            None
        );
        let net = HttpError::Network {
            message: "refused".into(),
            timed_out: false,
        };
        assert_eq!(net.to_plugin_error("send").kind, ErrorKind::NETWORK);
        assert_eq!(
            net.to_plugin_error("send").message.as_str(),
            "send: network error: refused"
        );
        let slow = HttpError::Network {
            message: "slow".into(),
            timed_out: true,
        };
        assert_eq!(slow.to_plugin_error("send").kind, ErrorKind::TIMEOUT);
        assert_eq!(
            HttpError::TooLarge { limit: 5 }
                .to_plugin_error("download")
                .kind,
            ErrorKind::INVALID_INPUT
        );
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_480); // 07:28:00
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now),
            Some(Duration::ZERO),
            "a date in the past"
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-1", now), None);
    }

    #[test]
    fn file_names_and_parts() {
        assert_eq!(multipart::safe_file_name("../../etc/passwd"), "passwd");
        assert_eq!(multipart::safe_file_name("dir\\report.pdf"), "report.pdf");
        assert_eq!(multipart::safe_file_name(""), "file");
        assert_eq!(multipart::safe_file_name(".."), "file");
        // Bad MIME types fall back to no type instead of failing the upload.
        let _ = multipart::file_part("a.txt", "not a mime", b"x".to_vec());
        let _ = multipart::file_part("a.txt", "text/plain", b"x".to_vec());
        let file = OutboundFile {
            name: "big.bin".into(),
            data: vec![0; 10].into(),
            ..Default::default()
        };
        assert!(check_upload_size(&file, 10, "X").is_ok());
        let err = check_upload_size(&file, 9, "X").expect_err("too big");
        assert_eq!(err.kind, ErrorKind::INVALID_INPUT);
    }

    /// Serves each connection one canned HTTP answer, on 127.0.0.1.
    fn serve(answers: Vec<Vec<u8>>) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        std::thread::spawn(move || {
            for answer in answers {
                let Ok((mut stream, _)) = listener.accept() else {
                    return;
                };
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf);
                let _ = stream.write_all(&answer);
            }
        });
        format!("http://{addr}")
    }

    fn answer(status: &str, headers: &str, body: &[u8]) -> Vec<u8> {
        let mut out = format!(
            "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n{headers}\r\n",
            body.len()
        )
        .into_bytes();
        out.extend_from_slice(body);
        out
    }

    #[test]
    fn responses_are_checked_capped_and_redacted() {
        let token = Secret::new("SECRET-TOKEN-123");
        let base = serve(vec![
            answer("200 OK", "", b"hello"),
            answer("200 OK", "", &[b'x'; 100]),
            answer(
                "429 Too Many Requests",
                "retry-after: 3\r\n",
                b"slow down SECRET-TOKEN-123",
            ),
            answer("503 Service Unavailable", "", b""),
        ]);
        let rt = crate::kit::runtime("http-test", 1).expect("runtime");
        rt.block_on(async {
            let client = ClientConfig::new("test", "1.0")
                .timeout(Some(Duration::from_secs(5)))
                .build()
                .expect("client");
            let get = || async {
                client
                    .get(format!("{base}/bot{}/x", token.expose()))
                    .send()
                    .await
                    .expect("send")
            };
            let ok = check(get().await, &[&token]).await.expect("200");
            assert_eq!(read_capped(ok, 5, &[&token]).await.expect("fits"), b"hello");
            let big = check(get().await, &[&token]).await.expect("200");
            assert_eq!(
                read_capped(big, 99, &[&token]).await,
                Err(HttpError::TooLarge { limit: 99 })
            );
            let limited = check(get().await, &[&token]).await.expect_err("429");
            assert_eq!(
                limited,
                HttpError::Status {
                    status: 429,
                    retry_after: Some(Duration::from_secs(3)),
                    body: "slow down <redacted>".into()
                }
            );
            let error = limited.to_plugin_error("getMe");
            assert_eq!(error.kind, ErrorKind::RATE_LIMITED);
            assert_eq!(error.retry_after_ms.into_option(), Some(3000));
            let down = check(get().await, &[&token]).await.expect_err("503");
            assert_eq!(down.to_plugin_error("x").kind, ErrorKind::NETWORK);
            // Nothing listens any more: a network error without the URL or the token.
            let refused = client
                .get(format!("{base}/bot{}/x", token.expose()))
                .send()
                .await
                .expect_err("refused");
            let refused = HttpError::from_reqwest(refused, &[&token]);
            assert!(
                matches!(
                    refused,
                    HttpError::Network {
                        timed_out: false,
                        ..
                    }
                ),
                "{refused:?}"
            );
            assert!(!refused.to_string().contains("SECRET"), "{refused}");
            assert!(!refused.to_string().contains("127.0.0.1"), "{refused}");
        });
    }

    #[test]
    fn api_bases() {
        let secret = Secret::new("TOKEN123");
        let parse = |raw: &str| ApiBase::parse("api_base_url", raw, &[&secret]);
        let base = parse("https://api.example.org/").expect("ok");
        assert_eq!(
            (base.as_str(), base.is_plain_remote()),
            ("https://api.example.org", false)
        );
        assert!(
            !parse("http://127.0.0.1:8081")
                .expect("ok")
                .is_plain_remote()
        );
        assert!(!parse("http://localhost:1/").expect("ok").is_plain_remote());
        let v6 = parse("http://[::1]:8081/proxy/").expect("ok");
        assert_eq!(v6.as_str(), "http://[::1]:8081/proxy");
        assert_eq!(v6.path(), "/proxy/");
        assert!(parse("http://10.0.0.5:8081").expect("ok").is_plain_remote());
        for bad in [
            "ftp://x",
            "not a url",
            "https://x/?a=1",
            "https://u:p@x/",
            "https://x/#f",
        ] {
            let err = parse(bad).expect_err(bad);
            assert_eq!(err.kind, ErrorKind::CONFIG);
            assert!(err.message.starts_with("api_base_url `"), "{err}");
        }
        let err = parse("https://x/TOKEN123?q").expect_err("query");
        assert!(!err.message.contains("TOKEN123"), "{err}");
    }

    #[test]
    fn joining_segments() {
        let join = |raw: &str, segments: &[&str]| {
            ApiBase::parse("api_base_url", raw, &[])
                .expect(raw)
                .join(segments)
                .map(|u| u.to_string())
        };
        for root in ["https://x.org", "https://x.org/"] {
            assert_eq!(join(root, &["a", "b"]).unwrap(), "https://x.org/a/b");
            assert_eq!(join(root, &[]).unwrap(), "https://x.org/");
        }
        for root in ["http://127.0.0.1:9/api/v1", "http://127.0.0.1:9/api/v1/"] {
            assert_eq!(
                join(root, &["rooms", "r1"]).unwrap(),
                "http://127.0.0.1:9/api/v1/rooms/r1"
            );
        }
        assert_eq!(
            join("https://x.org/api", &["a/b", "c?d=1#e", "f g", "%2e%2e"]).unwrap(),
            "https://x.org/api/a%2Fb/c%3Fd=1%23e/f%20g/%252e%252e"
        );
        // Dots inside a segment are just characters.
        assert_eq!(
            join("https://x.org", &["chat.postMessage", "...", ".a"]).unwrap(),
            "https://x.org/chat.postMessage/.../.a"
        );
        // Any iterator of strings: a fixed prefix chained before caller segments.
        let base = ApiBase::parse("api_base_url", "https://x.org/", &[]).expect("ok");
        let ids = ["m1".to_owned()];
        assert_eq!(
            base.join(["v1"].iter().copied().chain(ids.iter().map(String::as_str)))
                .unwrap()
                .as_str(),
            "https://x.org/v1/m1"
        );
        for hostile in ["", ".", ".."] {
            let err = join("https://x.org/api", &["messages", hostile, "x"]).expect_err(hostile);
            assert_eq!(err.kind, ErrorKind::INVALID_INPUT, "{err}");
            assert!(err.message.starts_with(&format!("`{hostile}` ")), "{err}");
        }
    }

    #[test]
    fn the_user_agent_names_the_plugin() {
        let info = ChannelInfo::new("Slack", "slack", "0.4.2");
        assert_eq!(
            ClientConfig::for_channel(&info).user_agent(),
            "nanoclaw-slack/0.4.2"
        );
    }
}
