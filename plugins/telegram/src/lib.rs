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
//!   dedupes the at most one update that is re-read). See the `poller` module.
//! * Outbound Markdown becomes Telegram HTML in `prepare` (the `format` module), split into
//!   parts of at most 4096 UTF-16 units (captions 1024); `deliver` sends one part, and its
//!   plain text when Telegram cannot parse the HTML.
//! * The token appears in request URLs only; errors and log lines never contain it.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use nanoclaw_plugin_api::kit::{self, now_ms, prelude::*};
use serde::Deserialize;
use serde_json::json;
use tokio::runtime::{Handle, Runtime};
use tokio::sync::watch;

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
/// How long teardown waits for the runtime's tasks.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(2);
/// Log target of everything this plugin writes.
const LOG_TARGET: &str = "nanoclaw_plugin_telegram";

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
    let bad =
        |why: &str| PluginError::config(format!("api_base_url `{}`: {why}", token.redact(raw)));
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
    if url.path().contains("/bot") && url.path().contains(':') {
        return Err(bad(
            "must be the API root such as https://api.telegram.org, without /bot<token> \
             (the token goes in bot_token only)",
        ));
    }
    let loopback = host == "localhost"
        || host
            .trim_matches(['[', ']'])
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    let plain_remote = url.scheme() == "http" && !loopback;
    Ok((url.as_str().trim_end_matches('/').to_owned(), plain_remote))
}

/// Writes to this instance's host log, with the token redacted from every line.
#[derive(Clone)]
pub(crate) struct Log {
    host: Host,
    token: Secret,
}

impl Log {
    fn emit(&self, level: LogLevel, message: &str) {
        self.host
            .log(level, LOG_TARGET, &self.token.redact(message));
    }
    pub(crate) fn error(&self, message: impl AsRef<str>) {
        self.emit(LogLevel::ERROR, message.as_ref());
    }
    pub(crate) fn warn(&self, message: impl AsRef<str>) {
        self.emit(LogLevel::WARN, message.as_ref());
    }
    pub(crate) fn info(&self, message: impl AsRef<str>) {
        self.emit(LogLevel::INFO, message.as_ref());
    }
    pub(crate) fn debug(&self, message: impl AsRef<str>) {
        self.emit(LogLevel::DEBUG, message.as_ref());
    }
}

/// Health as the poll loop sees it.
pub(crate) struct HealthCell {
    state: Mutex<(HealthStatus, String)>,
    last_ingest_ms: AtomicI64,
}

impl HealthCell {
    fn new() -> Self {
        Self {
            state: Mutex::new((HealthStatus::UNKNOWN, "not started".to_owned())),
            last_ingest_ms: AtomicI64::new(0),
        }
    }

    fn set(&self, status: HealthStatus, detail: String) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        // DOWN (a refused token, a teardown) is final: the loop must not paper over it.
        if state.0 == HealthStatus::DOWN && status != HealthStatus::DOWN {
            return;
        }
        *state = (status, detail);
    }

    /// Sets the state even over DOWN (a successful start).
    fn reset(&self, status: HealthStatus, detail: String) {
        *self.state.lock().unwrap_or_else(|p| p.into_inner()) = (status, detail);
    }

    pub(crate) fn ingested(&self) {
        self.last_ingest_ms.store(now_ms(), Ordering::Relaxed);
    }
    pub(crate) fn ok(&self) {
        self.set(HealthStatus::OK, String::new());
    }
    pub(crate) fn degraded(&self, detail: String) {
        self.set(HealthStatus::DEGRADED, detail);
    }
    pub(crate) fn down(&self, detail: String) {
        self.set(HealthStatus::DOWN, detail);
    }

    fn get(&self) -> Health {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        Health::new(
            state.0,
            state.1.clone(),
            self.last_ingest_ms.load(Ordering::Relaxed),
        )
    }
}

/// What the poll loop and the host-facing methods share.
pub(crate) struct Shared {
    pub(crate) host: Host,
    pub(crate) api: Api,
    pub(crate) log: Log,
    pub(crate) health: HealthCell,
    pub(crate) allowed_chats: Option<Vec<i64>>,
    pub(crate) poll_timeout_secs: u64,
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

/// One Telegram bot.
pub struct TelegramChannel {
    shared: Arc<Shared>,
    runtime: Mutex<Option<Runtime>>,
    handle: Handle,
    stop: watch::Sender<bool>,
    started: Mutex<bool>,
    torn_down: AtomicBool,
}

impl TelegramChannel {
    fn block_on<T>(
        &self,
        future: impl Future<Output = Result<T, PluginError>>,
    ) -> Result<T, PluginError> {
        if self.torn_down.load(Ordering::Acquire) {
            return Err(PluginError::other("the Telegram plugin was torn down"));
        }
        self.handle.block_on(future)
    }

    /// The bot's `@username`, once started.
    pub fn bot_username(&self) -> Option<String> {
        self.shared.bot.get().map(|b| b.username.clone())
    }
}

impl Channel for TelegramChannel {
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

    fn create(ctx: Context) -> Result<Self, PluginError> {
        let settings: Settings = ctx.settings()?;
        api::validate_token(&settings.bot_token).map_err(PluginError::config)?;
        let token = Secret::new(&settings.bot_token);
        let (base_url, plain_remote) = validate_base_url(&settings.api_base_url, &token)?;
        if !(1..=300).contains(&settings.poll_timeout_secs) {
            return Err(PluginError::config(format!(
                "poll_timeout_secs must be between 1 and 300, not {}",
                settings.poll_timeout_secs
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

        // reqwest is built with `rustls-no-provider`: this library's copy of rustls needs a
        // provider. An error means another instance already installed it.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let api = Api::new(&base_url, token.clone()).map_err(PluginError::config)?;
        let log = Log {
            host: ctx.host.clone(),
            token,
        };
        if plain_remote {
            log.warn(format!(
                "api_base_url {base_url} is plain http to another machine: the bot token \
                 travels unencrypted"
            ));
        }
        let runtime = kit::runtime("telegram", 1)
            .map_err(|e| PluginError::other(format!("cannot start the plugin runtime: {e}")))?;
        let handle = runtime.handle().clone();
        let (stop, _) = watch::channel(false);
        Ok(Self {
            shared: Arc::new(Shared {
                host: ctx.host,
                api,
                log,
                health: HealthCell::new(),
                allowed_chats,
                poll_timeout_secs: settings.poll_timeout_secs,
                bot: OnceLock::new(),
            }),
            runtime: Mutex::new(Some(runtime)),
            handle,
            stop,
            started: Mutex::new(false),
            torn_down: AtomicBool::new(false),
        })
    }

    fn start(&self) -> Result<(), PluginError> {
        // Held for the whole start: a concurrent second start waits, then sees `true`.
        let mut started = self.started.lock().unwrap_or_else(|p| p.into_inner());
        if *started {
            return Ok(());
        }
        let shared = &self.shared;
        let me: User = self.block_on(async {
            shared
                .api
                .call("getMe", &json!({}), outbound::CALL_TIMEOUT)
                .await
                .map_err(|e| {
                    if e.is_unauthorized() {
                        let reason = format!(
                            "Telegram rejected the bot token ({e}): it is wrong or was revoked. \
                             Get the current token from @BotFather and update TELEGRAM_BOT_TOKEN"
                        );
                        shared.health.down(reason.clone());
                        PluginError::auth(reason)
                    } else {
                        e.to_plugin_error("getMe")
                    }
                })
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
        self.block_on(async {
            shared
                .api
                .call::<serde_json::Value>(
                    "deleteWebhook",
                    &json!({"drop_pending_updates": false}),
                    outbound::CALL_TIMEOUT,
                )
                .await
                .map_err(|e| e.to_plugin_error("deleteWebhook"))
        })?;

        let offset = poller::load_offset(&shared.host)?;
        shared.health.reset(HealthStatus::OK, String::new());
        self.handle.spawn(poller::run(
            Arc::clone(shared),
            offset,
            self.stop.subscribe(),
        ));
        shared.log.info(format!(
            "polling Telegram as @{username} (bot id {}){}",
            me.id,
            offset.map_or_else(String::new, |o| format!(", from update {o}"))
        ));
        *started = true;
        Ok(())
    }

    fn render(&self, message: OutboundMessage) -> Result<Vec<OutboundMessage>, PluginError> {
        format::prepare(message)
    }

    fn deliver(&self, message: OutboundMessage) -> Result<Option<String>, PluginError> {
        let shared = &self.shared;
        self.block_on(outbound::deliver(&shared.api, &shared.log, &message))
    }

    fn set_typing(&self, chat_id: &str, _thread_id: Option<&str>) {
        if self.torn_down.load(Ordering::Acquire) {
            return;
        }
        // Fire and forget: the host refreshes the indicator every few seconds anyway.
        let shared = Arc::clone(&self.shared);
        let chat_id = chat_id.to_owned();
        self.handle.spawn(async move {
            if let Err(e) = outbound::typing(&shared.api, &chat_id).await {
                shared.log.debug(format!("typing indicator: {e}"));
            }
        });
    }

    fn health(&self) -> Health {
        self.shared.health.get()
    }

    fn teardown(&self) {
        if self.torn_down.swap(true, Ordering::AcqRel) {
            return;
        }
        // Wakes the loop, which drops its in-flight getUpdates (closing the connection).
        self.stop.send_replace(true);
        let runtime = self
            .runtime
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(runtime) = runtime {
            runtime.shutdown_timeout(SHUTDOWN_TIMEOUT);
        }
        self.shared.health.down("stopped".to_owned());
        self.shared.log.info("Telegram polling stopped");
    }
}

impl Drop for TelegramChannel {
    fn drop(&mut self) {
        // Without teardown (a failed start, a test): don't block on leftover tasks.
        let runtime = self
            .runtime
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(runtime) = runtime {
            self.stop.send_replace(true);
            runtime.shutdown_background();
        }
    }
}

nanoclaw_plugin_api::export_plugin!(TelegramChannel);

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
