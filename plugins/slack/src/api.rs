//! Slack's Web API: the methods the channel calls, their answers, their error classes and
//! their rate tiers.
//!
//! Slack answers almost everything with HTTP 200 and `{"ok": false, "error": "…"}`; the
//! error code decides what the host does ([`classify_slack_error`]). HTTP 429 (with
//! `Retry-After`) and 5xx are classified by the kit.

use std::time::Duration;

use nanoclaw_plugin_api::kit::http::{self, ApiBase, ClientConfig, reqwest};
use nanoclaw_plugin_api::kit::prelude::*;
use nanoclaw_plugin_api::kit::{Rate, RateLimiter};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Below the host's 30 s call timeout.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);
/// Web API answers are small JSON objects.
const MAX_ANSWER_BYTES: u64 = 1024 * 1024;
/// Longest a call waits for its rate limiter before it goes back as `RATE_LIMITED`.
pub(crate) const MAX_LIMITER_WAIT: Duration = Duration::from_secs(5);

/// Slack's published rate tiers, per method and workspace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tier {
    /// 1+ per minute (`apps.connections.open`).
    One,
    /// 20+ per minute (`files.getUploadURLExternal`, `files.completeUploadExternal`).
    Two,
    /// 50+ per minute (`chat.update`, `reactions.add`, `conversations.open`).
    Three,
    /// 100+ per minute (`auth.test`).
    Four,
    /// `chat.postMessage`: about one message a second per channel, short bursts allowed.
    PostMessage,
}

/// The tier of each method the channel calls.
pub(crate) fn tier_of(method: &str) -> Tier {
    match method {
        "apps.connections.open" => Tier::One,
        "files.getUploadURLExternal" | "files.completeUploadExternal" => Tier::Two,
        "chat.update" | "reactions.add" | "conversations.open" => Tier::Three,
        // users.info is tier 4, like auth.test.
        "chat.postMessage" => Tier::PostMessage,
        _ => Tier::Four,
    }
}

/// One rate limiter per tier, keyed by method (Slack's limits are per method), and one
/// for `chat.postMessage` keyed by channel.
pub(crate) struct Limits {
    tier1: RateLimiter,
    tier2: RateLimiter,
    tier3: RateLimiter,
    tier4: RateLimiter,
    post: RateLimiter,
}

impl Limits {
    pub(crate) fn new(post_per_sec: f64) -> Self {
        Self {
            // Connections are opened on (re)connect only; a burst of 5 lets a refresh and
            // a few drops through at once, then one every 10 s.
            tier1: RateLimiter::new(None, Some(Rate::per_minute(6.0).burst(5))),
            tier2: RateLimiter::new(None, Some(Rate::per_minute(20.0).burst(5))),
            tier3: RateLimiter::new(None, Some(Rate::per_minute(50.0).burst(10))),
            tier4: RateLimiter::new(None, Some(Rate::per_minute(100.0).burst(20))),
            // Slack: "1 message per second per channel, short bursts above that allowed".
            post: RateLimiter::new(
                Some(Rate::per_second(post_per_sec * 10.0)),
                Some(Rate::per_second(post_per_sec).burst(3)),
            ),
        }
    }

    fn limiter(&self, method: &str) -> (&RateLimiter, Tier) {
        let tier = tier_of(method);
        let limiter = match tier {
            Tier::One => &self.tier1,
            Tier::Two => &self.tier2,
            Tier::Three => &self.tier3,
            Tier::Four => &self.tier4,
            Tier::PostMessage => &self.post,
        };
        (limiter, tier)
    }

    /// Waits for a slot for `method` (in `channel`, for posts); `RATE_LIMITED` when that
    /// would take longer than [`MAX_LIMITER_WAIT`].
    pub(crate) async fn acquire(&self, method: &str, channel: &str) -> Result<(), PluginError> {
        let (limiter, tier) = self.limiter(method);
        let key = if tier == Tier::PostMessage {
            channel
        } else {
            method
        };
        limiter
            .acquire_within(key, MAX_LIMITER_WAIT)
            .await
            .map_err(|wait| {
                let ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
                PluginError::rate_limited(format!("{method}: Slack's rate limit"), Some(ms))
            })
    }

    /// Pauses `method` (or the channel, for posts) when `error` is a 429 with a delay.
    pub(crate) fn note(&self, method: &str, channel: &str, error: &PluginError) {
        let (limiter, tier) = self.limiter(method);
        let key = if tier == Tier::PostMessage {
            channel
        } else {
            method
        };
        limiter.note(Some(key), error);
    }
}

/// What an `ok: false` answer's error code means for the host.
pub(crate) fn classify_slack_error(
    method: &str,
    code: &str,
    retry_after: Option<Duration>,
) -> PluginError {
    let message = format!("{method}: Slack answered `{code}`");
    match code {
        // The token is wrong, revoked, or lacks a scope: the operator must act.
        "invalid_auth"
        | "not_authed"
        | "token_revoked"
        | "token_expired"
        | "account_inactive"
        | "missing_scope"
        | "not_allowed_token_type"
        | "no_permission"
        | "ekm_access_denied"
        | "team_access_not_granted"
        | "invalid_token" => PluginError::auth(message),
        "ratelimited" | "rate_limited" => {
            let ms = retry_after.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
            PluginError::rate_limited(message, Some(ms.unwrap_or(1000)))
        }
        // Slack is having trouble: try again later.
        "internal_error"
        | "fatal_error"
        | "service_unavailable"
        | "request_timeout"
        | "team_added_to_org" => PluginError::network(message),
        // The conversation, user or message is gone or out of reach.
        "channel_not_found" | "not_in_channel" | "is_archived" | "user_not_found"
        | "users_not_found" | "message_not_found" | "thread_not_found" | "user_not_visible"
        | "cannot_dm_bot" | "user_disabled" | "file_not_found" => PluginError::not_found(message),
        // The message's own fault: retrying won't help.
        "msg_too_long"
        | "no_text"
        | "invalid_blocks"
        | "invalid_blocks_format"
        | "too_many_attachments"
        | "invalid_name"
        | "too_many_reactions"
        | "cant_update_message"
        | "edit_window_closed"
        | "invalid_arguments"
        | "invalid_arg_name"
        | "invalid_array_arg"
        | "invalid_charset"
        | "invalid_form_data"
        | "invalid_post_type"
        | "missing_post_type"
        | "restricted_action"
        | "restricted_action_read_only_channel"
        | "restricted_action_thread_only_channel"
        | "restricted_action_non_threadable_channel"
        | "duplicate_channel_not_found"
        | "invalid_thread_ts"
        | "invalid_ts_latest"
        | "file_upload_size_restricted"
        | "not_reactable"
        | "channel_is_archived" => PluginError::invalid_input(message),
        _ => PluginError::other(message),
    }
}

/// The common envelope of every answer.
#[derive(Deserialize)]
struct Answer {
    ok: bool,
    #[serde(default)]
    error: Option<String>,
}

/// `auth.test`.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct AuthTest {
    pub user_id: String,
    #[serde(default)]
    pub user: String,
    #[serde(default)]
    pub bot_id: Option<String>,
    #[serde(default)]
    pub team: String,
    #[serde(default)]
    pub team_id: String,
}

/// `chat.postMessage`.
#[derive(Deserialize)]
pub(crate) struct Posted {
    pub ts: String,
}

/// `conversations.open`.
#[derive(Deserialize)]
pub(crate) struct Opened {
    pub channel: OpenedChannel,
}

#[derive(Deserialize)]
pub(crate) struct OpenedChannel {
    pub id: String,
}

/// `apps.connections.open`.
#[derive(Deserialize)]
pub(crate) struct Connection {
    pub url: String,
}

/// `files.getUploadURLExternal`.
#[derive(Deserialize)]
pub(crate) struct UploadUrl {
    pub upload_url: String,
    pub file_id: String,
}

/// A Web API client with the bot token (and the app-level token for Socket Mode).
pub(crate) struct Api {
    http: reqwest::Client,
    base: ApiBase,
    bot_token: Secret,
    app_token: Option<Secret>,
    pub(crate) limits: Limits,
}

/// A method's arguments: JSON (most) or a form (the few methods that take no JSON).
pub(crate) enum Args<'a> {
    Json(&'a Value),
    Form(&'a [(&'a str, String)]),
}

impl Api {
    pub(crate) fn new(
        info: &ChannelInfo,
        base: &ApiBase,
        bot_token: Secret,
        app_token: Option<Secret>,
        post_per_sec: f64,
    ) -> Result<Self, PluginError> {
        let http = ClientConfig::for_channel(info)
            .timeout(Some(REQUEST_TIMEOUT))
            .build()?;
        Ok(Self {
            http,
            base: base.clone(),
            bot_token,
            app_token,
            limits: Limits::new(post_per_sec),
        })
    }

    pub(crate) fn client(&self) -> &reqwest::Client {
        &self.http
    }

    pub(crate) fn bot_token(&self) -> &Secret {
        &self.bot_token
    }

    /// Calls `method` with the bot token, paced by its rate tier (`channel` keys
    /// `chat.postMessage`), and decodes a successful answer.
    pub(crate) async fn call<T: DeserializeOwned>(
        &self,
        method: &str,
        channel: &str,
        args: Args<'_>,
    ) -> Result<T, PluginError> {
        self.limits.acquire(method, channel).await?;
        let result = self.raw_call(method, &self.bot_token, args).await;
        if let Err(error) = &result {
            self.limits.note(method, channel, error);
        }
        result
    }

    /// `apps.connections.open` with the app-level token: a fresh Socket Mode URL.
    pub(crate) async fn open_connection(&self) -> Result<String, PluginError> {
        let token = self
            .app_token
            .as_ref()
            .ok_or_else(|| PluginError::config("Socket Mode needs app_token"))?;
        let method = "apps.connections.open";
        self.limits.acquire(method, "").await?;
        let result = self
            .raw_call::<Connection>(
                method,
                token,
                Args::Json(&Value::Object(Default::default())),
            )
            .await;
        if let Err(error) = &result {
            self.limits.note(method, "", error);
        }
        result.map(|c| c.url)
    }

    async fn raw_call<T: DeserializeOwned>(
        &self,
        method: &str,
        token: &Secret,
        args: Args<'_>,
    ) -> Result<T, PluginError> {
        let secrets: Vec<&Secret> = std::iter::once(&self.bot_token)
            .chain(self.app_token.as_ref())
            .collect();
        let request = self
            .http
            .post(self.base.join([method])?)
            .bearer_auth(token.expose());
        let request = match args {
            Args::Json(body) => request.json(body),
            Args::Form(form) => request.form(form),
        };
        let response = http::send(request, &secrets)
            .await
            .map_err(|e| e.to_plugin_error(method))?;
        let retry_after = http::retry_after(response.headers());
        let body = http::read_capped(response, MAX_ANSWER_BYTES, &secrets)
            .await
            .map_err(|e| e.to_plugin_error(method))?;
        let answer: Answer = serde_json::from_slice(&body)
            .map_err(|e| PluginError::other(format!("{method}: unexpected answer: {e}")))?;
        if !answer.ok {
            let code = answer.error.unwrap_or_else(|| "unknown_error".to_owned());
            return Err(classify_slack_error(method, &code, retry_after));
        }
        serde_json::from_slice(&body)
            .map_err(|e| PluginError::other(format!("{method}: unexpected answer: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_are_classified() {
        let kind = |code| classify_slack_error("m", code, None).kind;
        assert_eq!(kind("invalid_auth"), ErrorKind::AUTH);
        assert_eq!(kind("token_revoked"), ErrorKind::AUTH);
        assert_eq!(kind("missing_scope"), ErrorKind::AUTH);
        assert_eq!(kind("channel_not_found"), ErrorKind::NOT_FOUND);
        assert_eq!(kind("msg_too_long"), ErrorKind::INVALID_INPUT);
        assert_eq!(kind("internal_error"), ErrorKind::NETWORK);
        assert_eq!(kind("something_new"), ErrorKind::OTHER);
        let limited = classify_slack_error("m", "ratelimited", Some(Duration::from_secs(3)));
        assert_eq!(limited.kind, ErrorKind::RATE_LIMITED);
        assert_eq!(limited.retry_after_ms, RSome(3000));
        assert!(limited.message.contains("ratelimited"));
    }

    #[test]
    fn tiers() {
        assert_eq!(tier_of("chat.postMessage"), Tier::PostMessage);
        assert_eq!(tier_of("apps.connections.open"), Tier::One);
        assert_eq!(tier_of("files.getUploadURLExternal"), Tier::Two);
        assert_eq!(tier_of("reactions.add"), Tier::Three);
        assert_eq!(tier_of("auth.test"), Tier::Four);
    }
}
