//! NanoClaw channel plugin for Telegram, over the Bot API with long polling.
//!
//! # Settings (`[plugins.telegram.settings]` in plugins.toml)
//!
//! | key | default | |
//! |---|---|---|
//! | `bot_token` | required | `{ env = "TELEGRAM_BOT_TOKEN" }`; checked for BotFather's shape |
//! | `api_base_url` | `https://api.telegram.org` | a fake or a local Bot API server for tests |
//! | `poll_timeout_secs` | `30` | long-poll duration, 1–300 |
//! | `allowed_chats` | all chats | chat ids (numbers or strings) whose messages and clicks are handed to the host; others are dropped |
//! | `skip_after_refusals` | `8` | times the host may refuse one update (retried with backoff, 1 s doubling to 30 s) before it is skipped as poison, 1–1000 |
//!
//! # Behaviour
//!
//! * `create` validates settings and builds the HTTP client; no network. `start` calls
//!   `getMe` (bot id and username; a refused token is an `AUTH` error), `deleteWebhook`
//!   keeping pending updates, then long-polls `getUpdates` on the plugin's own runtime.
//! * Updates handled: `message` (text and captions, photos, documents, audio, voice, video,
//!   animations) and `callback_query` (button clicks, always answered). Not requested:
//!   `edited_message` (the host keys messages by id and has already answered the original),
//!   channel posts and reactions.
//! * Ids are raw: chat id and `from.id` as decimal strings, `message_id` as a string.
//! * The `getUpdates` offset lives in the host's state store and only moves after the host
//!   accepted an update, so nothing is lost or handled twice across restarts (the host
//!   dedupes the at most one update that is re-read). An update the host keeps refusing is
//!   skipped after `skip_after_refusals` attempts and reported (log and health), so it
//!   never blocks the ones behind it. See the `poller` module.
//! * Built on the kit: [`TelegramChannel`] is the kit's `Hosted` lifecycle (runtime, stop,
//!   teardown) around the async [`Telegram`]; HTTP, error kinds, redaction, backoff and the
//!   hand-over to the host come from `nanoclaw_plugin_api::kit`.
//! * Outbound calls are paced by the kit's rate limiter: about 30 a second overall, and a
//!   chat Telegram answered 429 for waits its `retry_after` (up to 5 s inside a `deliver`;
//!   longer goes back to the host as `RATE_LIMITED`).
//! * Outbound Markdown becomes Telegram HTML in `prepare` (the `format` module), split into
//!   parts of at most 4096 UTF-16 units (captions 1024); `deliver` sends one part, and its
//!   plain text when Telegram cannot parse the HTML.
//! * The token appears in request URLs only; errors and log lines never contain it.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use nanoclaw_plugin_api::kit::http::ApiBase;
use nanoclaw_plugin_api::kit::inbound::HandOverPolicy;
use nanoclaw_plugin_api::kit::prelude::*;
use nanoclaw_plugin_api::kit::{Rate, RateLimiter};
use serde::Deserialize;
use serde_json::json;

mod api;
mod format;
mod inbound;
mod outbound;
mod poller;

use api::{Api, Secret, User};
use inbound::BotIdentity;

/// The default Bot API endpoint.
pub const DEFAULT_API_BASE_URL: &str = "https://api.telegram.org";
const DEFAULT_POLL_TIMEOUT_SECS: u64 = 30;
const DEFAULT_SKIP_AFTER_REFUSALS: u32 = 8;
/// Telegram's published bot limit: about 30 messages a second overall.
const GLOBAL_RATE_PER_SEC: f64 = 30.0;
/// Longest a `deliver` waits out a pause Telegram asked for; longer ones go back to the host
/// as `RATE_LIMITED` with the remaining time.
const MAX_LIMITER_WAIT: Duration = Duration::from_secs(5);

/// Settings as the host passes them (JSON, secrets resolved).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    bot_token: String,
    #[serde(default = "default_base_url")]
    api_base_url: String,
    #[serde(default = "default_poll_timeout")]
    poll_timeout_secs: u64,
    #[serde(default)]
    allowed_chats: Option<Vec<ChatIdSetting>>,
    #[serde(default = "default_skip_after_refusals")]
    skip_after_refusals: u32,
}

fn default_skip_after_refusals() -> u32 {
    DEFAULT_SKIP_AFTER_REFUSALS
}

fn default_base_url() -> String {
    DEFAULT_API_BASE_URL.to_owned()
}

fn default_poll_timeout() -> u64 {
    DEFAULT_POLL_TIMEOUT_SECS
}

/// A chat id written as a TOML integer or a string.
#[derive(Deserialize)]
#[serde(untagged)]
enum ChatIdSetting {
    Number(i64),
    Text(String),
}

impl ChatIdSetting {
    fn parse(&self) -> Result<i64, PluginError> {
        match self {
            Self::Number(id) => Ok(*id),
            Self::Text(text) => text.trim().parse().map_err(|_| {
                PluginError::config(format!(
                    "allowed_chats: `{text}` is not a Telegram chat id (a number such as \
                     6037840640 or -1001234567890)"
                ))
            }),
        }
    }
}

/// Checks `api_base_url` and returns it without a trailing slash, and whether it is plain
/// http to another machine. Errors quote the URL with the token redacted.
fn validate_base_url(raw: &str, token: &Secret) -> Result<(String, bool), PluginError> {
    let base = ApiBase::parse("api_base_url", raw, &[token])?;
    if base.path().contains("/bot") && base.path().contains(':') {
        return Err(PluginError::config(format!(
            "api_base_url `{}`: must be the API root such as https://api.telegram.org, without \
             /bot<token> (the token goes in bot_token only)",
            token.redact(raw)
        )));
    }
    Ok((base.as_str().to_owned(), base.is_plain_remote()))
}

/// Writes to this instance's host log with the token redacted (the kit's lifecycle log,
/// which knows the token).
pub(crate) type Log = Lifecycle;

/// What the poll loop and the host-facing methods share.
pub(crate) struct Shared {
    pub(crate) api: Api,
    pub(crate) life: Lifecycle,
    pub(crate) allowed_chats: Option<Vec<i64>>,
    pub(crate) poll_timeout_secs: u64,
    pub(crate) hand_over: HandOverPolicy,
    /// Outbound pacing: the global rate, and the pauses 429 answers ask for.
    limiter: RateLimiter,
    bot: OnceLock<BotIdentity>,
}

impl Shared {
    /// Set by `start` before the poll loop runs.
    pub(crate) fn bot_identity(&self) -> BotIdentity {
        self.bot.get().cloned().unwrap_or(BotIdentity {
            id: 0,
            username: String::new(),
        })
    }
}

/// The channel as the host loads it: the kit's lifecycle around [`Telegram`].
pub type TelegramChannel = Hosted<Telegram>;

/// One Telegram bot.
pub struct Telegram {
    shared: Arc<Shared>,
    /// The offset `start` read, for the poll loop it spawns.
    start_offset: Mutex<Option<i64>>,
}

impl Telegram {
    /// The bot's `@username`, once started.
    pub fn bot_username(&self) -> Option<String> {
        self.shared.bot.get().map(|b| b.username.clone())
    }
}

impl AsyncChannel for Telegram {
    const INFO: ChannelInfo = ChannelInfo::new("Telegram", "telegram", env!("CARGO_PKG_VERSION"))
        .capabilities(
            Capabilities::EDIT
                .with(Capabilities::REACTIONS)
                .with(Capabilities::TYPING)
                .with(Capabilities::FILES)
                .with(Capabilities::BUTTONS),
        )
        .max_text_length(4096)
        .text_unit(LengthUnit::Utf16)
        .markup(Markup::TelegramHtml)
        .description("Telegram Bot API (long polling)");

    fn create(ctx: Context, life: &Lifecycle) -> Result<Self, PluginError> {
        let settings: Settings = ctx.settings()?;
        api::validate_token(&settings.bot_token).map_err(PluginError::config)?;
        let token = Secret::new(settings.bot_token.as_str());
        let (base_url, plain_remote) = validate_base_url(&settings.api_base_url, &token)?;
        if !(1..=300).contains(&settings.poll_timeout_secs) {
            return Err(PluginError::config(format!(
                "poll_timeout_secs must be between 1 and 300, not {}",
                settings.poll_timeout_secs
            )));
        }
        if !(1..=1000).contains(&settings.skip_after_refusals) {
            return Err(PluginError::config(format!(
                "skip_after_refusals must be between 1 and 1000, not {}",
                settings.skip_after_refusals
            )));
        }
        let allowed_chats = match &settings.allowed_chats {
            None => None,
            Some(list) if list.is_empty() => {
                return Err(PluginError::config(
                    "allowed_chats is empty, which would drop every message; remove it to \
                     accept all chats",
                ));
            }
            Some(list) => Some(
                list.iter()
                    .map(ChatIdSetting::parse)
                    .collect::<Result<Vec<_>, _>>()?,
            ),
        };

        life.add_secret(&token);
        let api = Api::new(&base_url, token)?;
        if plain_remote {
            life.warn(format!(
                "api_base_url {base_url} is plain http to another machine: the bot token \
                 travels unencrypted"
            ));
        }
        Ok(Self {
            shared: Arc::new(Shared {
                api,
                life: life.clone(),
                allowed_chats,
                poll_timeout_secs: settings.poll_timeout_secs,
                hand_over: HandOverPolicy {
                    max_refusals: settings.skip_after_refusals,
                    ..HandOverPolicy::default()
                },
                limiter: RateLimiter::new(Some(Rate::per_second(GLOBAL_RATE_PER_SEC)), None),
                bot: OnceLock::new(),
            }),
            start_offset: Mutex::new(None),
        })
    }

    async fn start(&self) -> Result<(), PluginError> {
        let shared = &self.shared;
        let me: User = shared
            .api
            .call("getMe", &json!({}), outbound::CALL_TIMEOUT)
            .await
            .map_err(|e| {
                if e.is_unauthorized() {
                    let reason = format!(
                        "Telegram rejected the bot token ({e}): it is wrong or was revoked. \
                         Get the current token from @BotFather and update TELEGRAM_BOT_TOKEN"
                    );
                    shared.life.health().down(reason.clone());
                    PluginError::auth(reason)
                } else {
                    e.to_plugin_error("getMe")
                }
            })?;
        let Some(username) = me.username.clone().filter(|u| !u.is_empty()) else {
            return Err(PluginError::other(
                "getMe returned no username: is this token a bot's?",
            ));
        };
        // A restarted start after a failed one reuses the identity of the same token.
        let _ = shared.bot.set(BotIdentity {
            id: me.id,
            username: username.clone(),
        });

        // Polling and a webhook exclude each other; keep what is pending.
        shared
            .api
            .call::<serde_json::Value>(
                "deleteWebhook",
                &json!({"drop_pending_updates": false}),
                outbound::CALL_TIMEOUT,
            )
            .await
            .map_err(|e| e.to_plugin_error("deleteWebhook"))?;

        let offset = shared
            .life
            .host_call(poller::load_offset)
            .await
            .map_err(|_| PluginError::other("the Telegram plugin is stopping"))??;
        *self.start_offset.lock().unwrap_or_else(|p| p.into_inner()) = offset;
        shared.life.info(format!(
            "polling Telegram as @{username} (bot id {}){}",
            me.id,
            offset.map_or_else(String::new, |o| format!(", from update {o}"))
        ));
        Ok(())
    }

    async fn run(self: Arc<Self>, stop: StopSignal) {
        let offset = *self.start_offset.lock().unwrap_or_else(|p| p.into_inner());
        poller::run(Arc::clone(&self.shared), offset, stop).await;
    }

    fn render(&self, message: OutboundMessage) -> Result<Vec<OutboundMessage>, PluginError> {
        format::prepare(message)
    }

    async fn deliver(&self, message: OutboundMessage) -> Result<Option<String>, PluginError> {
        let shared = &self.shared;
        let chat = message.chat_id.as_str();
        if let Err(wait) = shared.limiter.acquire_within(chat, MAX_LIMITER_WAIT).await {
            let ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
            return Err(PluginError::rate_limited(
                format!("Telegram asked to slow down for chat {chat}"),
                Some(ms),
            ));
        }
        let result = outbound::deliver(&shared.api, &shared.life, &message).await;
        if let Err(error) = &result {
            // A 429 holds back the next calls to that chat for its retry_after.
            shared.limiter.note(Some(chat), error);
        }
        result
    }

    async fn set_typing(&self, chat_id: &str, _thread_id: Option<&str>) {
        // The host refreshes the indicator every few seconds: a failure is not worth more.
        if let Err(e) = outbound::typing(&self.shared.api, chat_id).await {
            self.shared.life.debug(format!("typing indicator: {e}"));
        }
    }

    async fn shutdown(&self) {
        self.shared.life.info("Telegram polling stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nanoclaw_plugin_api::kit::testing::MemoryHost;

    const TOKEN: &str = "123456:ABCdefGHIjklMNOpqrSTUvwxYZ0123456789";

    fn create(settings: serde_json::Value) -> Result<TelegramChannel, PluginError> {
        let mem = MemoryHost::new();
        TelegramChannel::create(Context {
            instance_name: "telegram".into(),
            settings_json: settings.to_string(),
            data_dir: std::env::temp_dir(),
            extra_json: String::new(),
            host: mem.host(),
        })
    }

    fn config_error(settings: serde_json::Value) -> String {
        let err = create(settings).err().expect("should be refused");
        assert_eq!(err.kind, ErrorKind::CONFIG, "{err}");
        assert!(!err.message.contains(TOKEN), "token echoed: {err}");
        err.message.to_string()
    }

    #[test]
    fn settings_are_validated() {
        let ch = create(json!({"bot_token": TOKEN})).expect("defaults");
        assert_eq!(ch.health().status, HealthStatus::UNKNOWN);
        assert!(config_error(json!({})).contains("bot_token"));
        assert!(config_error(json!({"bot_token": "nope"})).contains("bot_token"));
        assert!(config_error(json!({"bot_token": TOKEN, "colour": "red"})).contains("colour"));
        assert!(
            config_error(json!({"bot_token": TOKEN, "api_base_url": "ftp://x"}))
                .contains("api_base_url")
        );
        assert!(
            config_error(json!({"bot_token": TOKEN, "api_base_url": "not a url"}))
                .contains("api_base_url")
        );
        assert!(
            config_error(json!({"bot_token": TOKEN, "poll_timeout_secs": 0}))
                .contains("poll_timeout_secs")
        );
        assert!(
            config_error(json!({"bot_token": TOKEN, "skip_after_refusals": 0}))
                .contains("skip_after_refusals")
        );
        assert!(
            config_error(json!({"bot_token": TOKEN, "allowed_chats": []}))
                .contains("allowed_chats")
        );
        assert!(
            config_error(json!({"bot_token": TOKEN, "allowed_chats": ["abc"]})).contains("abc")
        );
        let ch = create(json!({
            "bot_token": TOKEN,
            "api_base_url": "http://127.0.0.1:9/",
            "poll_timeout_secs": 5,
            "allowed_chats": [5, "-1001234"],
        }))
        .expect("full settings");
        assert_eq!(
            ch.shared.allowed_chats.as_deref(),
            Some(&[5, -1_001_234][..])
        );
        ch.teardown();
    }

    #[test]
    fn base_urls() {
        let token = Secret::new(TOKEN);
        let check = |url: &str| validate_base_url(url, &token);
        assert_eq!(
            check("https://api.telegram.org/").expect("ok"),
            ("https://api.telegram.org".to_owned(), false)
        );
        assert_eq!(
            check("http://127.0.0.1:8081").expect("ok"),
            ("http://127.0.0.1:8081".to_owned(), false)
        );
        assert_eq!(
            check("http://[::1]:8081/proxy/").expect("ok"),
            ("http://[::1]:8081/proxy".to_owned(), false)
        );
        assert!(check("http://10.0.0.5:8081").expect("ok").1);
        assert!(check("https://x/?a=1").is_err());
        let err = check(&format!("https://api.telegram.org/bot{TOKEN}")).expect_err("token");
        assert!(err.message.contains("without /bot<token>"), "{err}");
        assert!(!err.message.contains(TOKEN), "{err}");
    }

    #[test]
    fn manifest() {
        let info = TelegramChannel::INFO;
        assert_eq!(info.channel_type, "telegram");
        assert_eq!(info.max_text_length, 4096);
        assert_eq!(info.text_unit, LengthUnit::Utf16);
        assert_eq!(info.markup, Markup::TelegramHtml);
        assert!(!info.capabilities.contains(Capabilities::OPEN_DM));
        assert!(!info.capabilities.contains(Capabilities::WEBHOOK));
        assert!(
            info.capabilities
                .contains(Capabilities::BUTTONS.with(Capabilities::FILES))
        );
    }
}
