//! A thin client for the parts of the Telegram Bot API this plugin uses.
//!
//! Every method is `POST <base>/bot<token>/<method>` with a JSON body (multipart for
//! uploads); files are downloaded from `<base>/file/bot<token>/<file_path>`. Telegram answers
//! `{"ok":true,"result":…}` or `{"ok":false,"error_code":…,"description":…,"parameters":…}`.
//!
//! The token is part of every URL, so no URL ever leaves this module: the kit strips URLs
//! from HTTP errors and redacts the token from every message.

use std::fmt;
use std::time::Duration;

use nanoclaw_plugin_api::abi::PluginError;
pub(crate) use nanoclaw_plugin_api::kit::Secret;
use nanoclaw_plugin_api::kit::http::{self, ClientConfig, HttpError};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Checks the shape of a bot token, `<bot id>:<secret>` with at least 30 characters of
/// `[A-Za-z0-9_-]` after the colon. The error never contains the token.
pub(crate) fn validate_token(token: &str) -> Result<(), String> {
    let expected = "expected `<bot id>:<secret>` as BotFather prints it: digits, a colon, then \
                    at least 30 letters, digits, `_` or `-`";
    let Some((id, secret)) = token.split_once(':') else {
        return Err(format!(
            "bot_token is not a Telegram bot token ({expected})"
        ));
    };
    let id_ok = !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit());
    let secret_ok = secret.len() >= 30
        && secret
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if id_ok && secret_ok {
        Ok(())
    } else if token.trim() != token {
        Err(format!(
            "bot_token has leading or trailing whitespace ({expected})"
        ))
    } else {
        Err(format!(
            "bot_token is not a Telegram bot token ({expected})"
        ))
    }
}

/// Why a call failed.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ApiError {
    /// No HTTP answer: connection refused or reset, DNS, TLS, timeout, truncated body.
    Network { message: String, timed_out: bool },
    /// Telegram (or something in front of it) answered with an error.
    Api {
        code: u16,
        description: String,
        retry_after_secs: Option<u64>,
        migrate_to_chat_id: Option<i64>,
    },
    /// A success answer we could not understand.
    Decode(String),
}

impl ApiError {
    pub(crate) fn code(&self) -> Option<u16> {
        match self {
            Self::Api { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// Telegram could not parse the HTML (or Markdown) of a text or caption.
    pub(crate) fn is_parse_error(&self) -> bool {
        matches!(self, Self::Api { code: 400, description, .. }
            if description.to_ascii_lowercase().contains("can't parse entities"))
    }

    /// `editMessageText` with exactly the current content: nothing to do.
    pub(crate) fn is_not_modified(&self) -> bool {
        matches!(self, Self::Api { code: 400, description, .. }
            if description.to_ascii_lowercase().contains("message is not modified"))
    }

    /// The bot token was refused.
    pub(crate) fn is_unauthorized(&self) -> bool {
        // 404 is what Telegram answers when the token's bot does not exist at all.
        matches!(self.code(), Some(401 | 404))
    }

    /// The error for the host, with `method` named in the message (classified by the
    /// kit; Telegram's own `retry_after` counts, 1 s when a 429 gives none).
    pub(crate) fn to_plugin_error(&self, method: &str) -> PluginError {
        let message = format!("Telegram {method}: {self}");
        match self {
            Self::Network {
                timed_out: true, ..
            } => PluginError::timeout(message),
            Self::Network { .. } => PluginError::network(message),
            Self::Api {
                code,
                retry_after_secs,
                ..
            } => {
                let retry_after = match code {
                    429 => Some(Duration::from_secs(retry_after_secs.unwrap_or(1))),
                    _ => retry_after_secs.map(Duration::from_secs),
                };
                http::classify(*code, retry_after, message)
            }
            Self::Decode(_) => PluginError::other(message),
        }
    }

    fn from_http(error: HttpError, token: &Secret) -> Self {
        match error {
            HttpError::Network { message, timed_out } => Self::Network { message, timed_out },
            HttpError::Status {
                status,
                retry_after,
                ..
            } => Self::Api {
                code: status,
                description: format!("HTTP {status} without a Bot API answer"),
                retry_after_secs: retry_after.map(|d| d.as_secs()),
                migrate_to_chat_id: None,
            },
            other => Self::Decode(token.redact(&other.to_string())),
        }
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Network { message, .. } => write!(f, "network error: {message}"),
            Self::Api {
                code,
                description,
                migrate_to_chat_id,
                ..
            } => {
                write!(f, "{code} {description}")?;
                if let Some(id) = migrate_to_chat_id {
                    write!(f, " (the group is now the supergroup {id})")?;
                }
                Ok(())
            }
            Self::Decode(message) => write!(f, "unexpected answer: {message}"),
        }
    }
}

/// The answer envelope. `result` stays a `Value` until we know the call succeeded.
#[derive(Deserialize)]
struct Envelope {
    ok: bool,
    #[serde(default)]
    result: Option<Value>,
    #[serde(default)]
    error_code: Option<u16>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    parameters: Option<ResponseParameters>,
}

#[derive(Deserialize)]
struct ResponseParameters {
    #[serde(default)]
    retry_after: Option<u64>,
    #[serde(default)]
    migrate_to_chat_id: Option<i64>,
}

/// A Bot API client for one bot.
pub(crate) struct Api {
    http: reqwest::Client,
    base: String,
    token: Secret,
}

impl Api {
    /// `base` is the API root without a trailing slash, e.g. `https://api.telegram.org`.
    /// Requests carry their own timeouts (long polls run longer than any default).
    pub(crate) fn new(base: &str, token: Secret) -> Result<Self, PluginError> {
        let http = ClientConfig::for_channel(
            &<crate::Telegram as nanoclaw_plugin_api::kit::AsyncChannel>::INFO,
        )
        .timeout(None)
        .build()?;
        Ok(Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
            token,
        })
    }

    fn method_url(&self, method: &str) -> String {
        format!("{}/bot{}/{method}", self.base, self.token.expose())
    }

    /// Calls `method` with a JSON body.
    pub(crate) async fn call<T: DeserializeOwned>(
        &self,
        method: &str,
        params: &impl Serialize,
        timeout: Duration,
    ) -> Result<T, ApiError> {
        let request = self
            .http
            .post(self.method_url(method))
            .json(params)
            .timeout(timeout);
        self.finish(request).await
    }

    /// Calls `method` with a multipart body (uploads).
    pub(crate) async fn call_multipart<T: DeserializeOwned>(
        &self,
        method: &str,
        form: reqwest::multipart::Form,
        timeout: Duration,
    ) -> Result<T, ApiError> {
        let request = self
            .http
            .post(self.method_url(method))
            .multipart(form)
            .timeout(timeout);
        self.finish(request).await
    }

    async fn finish<T: DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<T, ApiError> {
        let response = request.send().await.map_err(|e| self.network(e))?;
        let status = response.status().as_u16();
        let retry_after = http::retry_after(response.headers());
        // Bot API answers are small; a runaway body is cut off rather than buffered.
        let body = http::read_capped(response, MAX_ANSWER_BYTES, &[&self.token])
            .await
            .map_err(|e| ApiError::from_http(e, &self.token))?;
        let envelope: Envelope = match serde_json::from_slice(&body) {
            Ok(envelope) => envelope,
            Err(_) if !(200..300).contains(&status) => {
                return Err(ApiError::Api {
                    code: status,
                    description: format!("HTTP {status} without a Bot API answer"),
                    retry_after_secs: retry_after.map(|d| d.as_secs()),
                    migrate_to_chat_id: None,
                });
            }
            Err(e) => return Err(ApiError::Decode(self.token.redact(&e.to_string()))),
        };
        if !envelope.ok {
            let parameters = envelope.parameters;
            return Err(ApiError::Api {
                code: envelope.error_code.unwrap_or(status),
                description: self
                    .token
                    .redact(envelope.description.as_deref().unwrap_or("no description")),
                retry_after_secs: parameters
                    .as_ref()
                    .and_then(|p| p.retry_after)
                    .or(retry_after.map(|d| d.as_secs())),
                migrate_to_chat_id: parameters.and_then(|p| p.migrate_to_chat_id),
            });
        }
        let result = envelope.result.unwrap_or(Value::Null);
        serde_json::from_value(result)
            .map_err(|e| ApiError::Decode(self.token.redact(&e.to_string())))
    }

    /// Downloads a file by its `file_path` (from `getFile`), refusing more than `max_bytes`.
    pub(crate) async fn download(
        &self,
        file_path: &str,
        max_bytes: u64,
        timeout: Duration,
    ) -> Result<Vec<u8>, ApiError> {
        let url = format!(
            "{}/file/bot{}/{}",
            self.base,
            self.token.expose(),
            file_path.trim_start_matches('/')
        );
        let response = self
            .http
            .get(url)
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| self.network(e))?;
        let secrets = [&self.token];
        let response = http::check(response, &secrets).await.map_err(|e| match e {
            HttpError::Status { status, .. } => ApiError::Api {
                code: status,
                description: format!("file download answered HTTP {status}"),
                retry_after_secs: None,
                migrate_to_chat_id: None,
            },
            other => ApiError::from_http(other, &self.token),
        })?;
        http::read_capped(response, max_bytes, &secrets)
            .await
            .map_err(|e| match e {
                HttpError::TooLarge { limit } => {
                    ApiError::Decode(format!("file is larger than {limit} bytes"))
                }
                other => ApiError::from_http(other, &self.token),
            })
    }

    fn network(&self, error: reqwest::Error) -> ApiError {
        ApiError::from_http(HttpError::from_reqwest(error, &[&self.token]), &self.token)
    }
}

/// Largest Bot API answer read (a full `getUpdates` batch is far below this).
const MAX_ANSWER_BYTES: u64 = 64 * 1024 * 1024;

// ---------------------------------------------------------------------------------------------
// The Bot API types we read. Unknown fields are ignored; nearly everything is optional.
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct User {
    pub id: i64,
    #[serde(default)]
    pub is_bot: bool,
    #[serde(default)]
    pub first_name: String,
    #[serde(default)]
    pub last_name: Option<String>,
    #[serde(default)]
    pub username: Option<String>,
}

impl User {
    /// First and last name, else the username, else the id.
    pub(crate) fn display_name(&self) -> String {
        full_name(&self.first_name, self.last_name.as_deref())
            .or_else(|| self.username.clone())
            .unwrap_or_else(|| self.id.to_string())
    }
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Chat {
    pub id: i64,
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default)]
    pub title: Option<String>,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub first_name: Option<String>,
    #[serde(default)]
    pub last_name: Option<String>,
}

impl Chat {
    pub(crate) fn is_group(&self) -> bool {
        matches!(self.kind.as_str(), "group" | "supergroup" | "channel")
    }

    /// The group's title, or the other person's name in a private chat.
    pub(crate) fn display_name(&self) -> Option<String> {
        if let Some(title) = self.title.as_deref().filter(|t| !t.trim().is_empty()) {
            return Some(title.to_owned());
        }
        full_name(
            self.first_name.as_deref().unwrap_or_default(),
            self.last_name.as_deref(),
        )
        .or_else(|| self.username.clone())
    }
}

fn full_name(first: &str, last: Option<&str>) -> Option<String> {
    let name = match last.map(str::trim).filter(|l| !l.is_empty()) {
        Some(last) => format!("{} {last}", first.trim()),
        None => first.trim().to_owned(),
    };
    let name = name.trim();
    (!name.is_empty()).then(|| name.to_owned())
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct MessageEntity {
    #[serde(rename = "type")]
    pub kind: String,
    /// In UTF-16 code units.
    pub offset: usize,
    /// In UTF-16 code units.
    pub length: usize,
    #[serde(default)]
    pub user: Option<User>,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct TextQuote {
    pub text: String,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct PhotoSize {
    pub file_id: String,
    #[serde(default)]
    pub width: u32,
    #[serde(default)]
    pub height: u32,
    #[serde(default)]
    pub file_size: Option<u64>,
}

/// The fields Document, Audio, Voice, Video, VideoNote and Animation share.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct FileObject {
    pub file_id: String,
    #[serde(default)]
    pub file_name: Option<String>,
    #[serde(default)]
    pub mime_type: Option<String>,
    #[serde(default)]
    pub file_size: Option<u64>,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Message {
    pub message_id: i64,
    #[serde(default)]
    pub date: i64,
    pub chat: Chat,
    #[serde(default)]
    pub from: Option<User>,
    #[serde(default)]
    pub sender_chat: Option<Chat>,
    #[serde(default)]
    pub message_thread_id: Option<i64>,
    #[serde(default)]
    pub text: Option<String>,
    #[serde(default)]
    pub entities: Vec<MessageEntity>,
    #[serde(default)]
    pub caption: Option<String>,
    #[serde(default)]
    pub caption_entities: Vec<MessageEntity>,
    #[serde(default)]
    pub reply_to_message: Option<Box<Message>>,
    #[serde(default)]
    pub quote: Option<TextQuote>,
    #[serde(default)]
    pub photo: Vec<PhotoSize>,
    #[serde(default)]
    pub document: Option<FileObject>,
    #[serde(default)]
    pub audio: Option<FileObject>,
    #[serde(default)]
    pub voice: Option<FileObject>,
    #[serde(default)]
    pub video: Option<FileObject>,
    #[serde(default)]
    pub video_note: Option<FileObject>,
    #[serde(default)]
    pub animation: Option<FileObject>,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct CallbackQuery {
    pub id: String,
    pub from: User,
    /// Absent for buttons on inline-mode messages; an "inaccessible message" (date 0) still
    /// has its chat and id.
    #[serde(default)]
    pub message: Option<Message>,
    #[serde(default)]
    pub data: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Update {
    pub update_id: i64,
    #[serde(default)]
    pub message: Option<Message>,
    #[serde(default)]
    pub callback_query: Option<CallbackQuery>,
}

/// What `getFile` answers.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct File {
    #[serde(default)]
    pub file_size: Option<u64>,
    #[serde(default)]
    pub file_path: Option<String>,
}

/// The part of a sent `Message` we need back.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct SentMessage {
    pub message_id: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "123456:ABCdefGHIjklMNOpqrSTUvwxYZ0123456789";

    #[test]
    fn token_shape_is_checked_without_echoing_it() {
        assert!(validate_token(TOKEN).is_ok());
        assert!(validate_token("123456:abc-_DEF0123456789012345678901234").is_ok());
        for bad in [
            "",
            "123456",
            ":ABCdefGHIjklMNOpqrSTUvwxYZ0123456789",
            "12a456:ABCdefGHIjklMNOpqrSTUvwxYZ0123456789",
            "123456:short",
            "123456:ABCdefGHIjklMNOpqrSTUvwxYZ012345678!",
            " 123456:ABCdefGHIjklMNOpqrSTUvwxYZ0123456789",
            "123456:ABCdefGHIjklMNOpqrSTUvwxYZ0123456789\n",
        ] {
            let err = validate_token(bad).expect_err(bad);
            assert!(err.contains("bot_token"), "{err}");
            if !bad.is_empty() {
                assert!(!err.contains(bad.trim()), "error echoes the token: {err}");
            }
        }
        assert!(
            validate_token("123456:ABCdefGHIjklMNOpqrSTUvwxYZ0123456789 ")
                .expect_err("space")
                .contains("whitespace")
        );
    }

    #[test]
    fn redaction_and_debug_hide_the_token() {
        let secret = Secret::new(TOKEN);
        assert_eq!(format!("{secret:?}"), "Secret(<redacted>)");
        assert_eq!(
            secret.redact(&format!("http://x/bot{TOKEN}/getMe")),
            "http://x/bot<redacted>/getMe"
        );
    }

    #[test]
    fn errors_map_to_plugin_error_kinds() {
        use nanoclaw_plugin_api::abi::ErrorKind;
        let api = |code, retry| ApiError::Api {
            code,
            description: "d".into(),
            retry_after_secs: retry,
            migrate_to_chat_id: None,
        };
        let limited = api(429, Some(7)).to_plugin_error("sendMessage");
        assert_eq!(limited.kind, ErrorKind::RATE_LIMITED);
        assert_eq!(limited.retry_after_ms.into_option(), Some(7000));
        assert_eq!(api(401, None).to_plugin_error("m").kind, ErrorKind::AUTH);
        assert_eq!(api(403, None).to_plugin_error("m").kind, ErrorKind::AUTH);
        assert_eq!(
            api(400, None).to_plugin_error("m").kind,
            ErrorKind::INVALID_INPUT
        );
        assert_eq!(api(502, None).to_plugin_error("m").kind, ErrorKind::NETWORK);
        let net = ApiError::Network {
            message: "refused".into(),
            timed_out: false,
        };
        assert_eq!(net.to_plugin_error("m").kind, ErrorKind::NETWORK);
        let slow = ApiError::Network {
            message: "slow".into(),
            timed_out: true,
        };
        assert_eq!(slow.to_plugin_error("m").kind, ErrorKind::TIMEOUT);
        let migrated = ApiError::Api {
            code: 400,
            description: "Bad Request: group chat was upgraded to a supergroup chat".into(),
            retry_after_secs: None,
            migrate_to_chat_id: Some(-100_123),
        };
        assert!(migrated.to_string().contains("-100123"));
    }

    #[test]
    fn names_fall_back_sensibly() {
        let user = |first: &str, last: Option<&str>, username: Option<&str>| User {
            id: 42,
            is_bot: false,
            first_name: first.into(),
            last_name: last.map(Into::into),
            username: username.map(Into::into),
        };
        assert_eq!(user("Ann", Some("Lee"), None).display_name(), "Ann Lee");
        assert_eq!(user("Ann", Some(" "), None).display_name(), "Ann");
        assert_eq!(user("", None, Some("ann")).display_name(), "ann");
        assert_eq!(user("", None, None).display_name(), "42");
    }
}
