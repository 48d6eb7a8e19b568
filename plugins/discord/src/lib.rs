//! NanoClaw channel plugin for Discord: the gateway WebSocket in, the REST API out.
//!
//! # Settings (`[plugins.discord.settings]` in plugins.toml)
//!
//! | key | default | |
//! |---|---|---|
//! | `bot_token` | required | `{ env = "DISCORD_BOT_TOKEN" }` (Developer Portal → your application → Bot → Reset Token) |
//! | `api_base_url` | `https://discord.com/api/v10` | the REST API root (tests: a fake on 127.0.0.1) |
//! | `gateway_url` | from `GET /gateway/bot` | the gateway's WebSocket URL, when it should not be asked for |
//! | `skip_after_refusals` | `8` | times the host may refuse one event (retried with backoff) before it is skipped as poison, 1–1000 |
//!
//! Unknown keys are refused. `create` checks them without the network.
//!
//! # Behaviour
//!
//! * `start` checks the token with `GET /users/@me` (a refused token is `AUTH`, and the
//!   health says how to fix it), asks `GET /gateway/bot` for the gateway URL unless
//!   `gateway_url` is set, and reads the gateway session the last run recorded.
//! * The gateway (the `gateway` module, on the kit's WebSocket client): Hello, Identify with
//!   the intents GUILDS, GUILD_MESSAGES, DIRECT_MESSAGES and MESSAGE_CONTENT (privileged:
//!   it must be enabled for the bot), heartbeats at Hello's interval with a random first
//!   delay, a reconnect when a heartbeat goes unacknowledged, Resume with the session id and
//!   last sequence number at `resume_gateway_url` after a drop, Reconnect (op 7) and Invalid
//!   Session (op 9) handled. Close codes 4004 (bad token) and 4010–4014 (sharding, version,
//!   intents) stop the channel with the reason in its health; 4007/4009 start a new
//!   session.
//! * Inbound: `MESSAGE_CREATE` (default messages and replies; not the bot's own) in DMs,
//!   guild channels and threads. The chat is the channel id (a thread is a channel of its
//!   own), the sender the author's id; a DM, a mention of the bot and a reply to the bot
//!   count as mentions, and `<@bot id>` reads `@<bot name>`. Attachments up to 25 MiB are
//!   downloaded from Discord's CDN (and only from there) before the message is handed
//!   over; larger ones, and ones that cannot be fetched, come with their URL, name, type
//!   and size. `INTERACTION_CREATE` button clicks are acknowledged at once
//!   (callback type 6, deferred update) and handed over as actions with the clicker's id.
//!   An edit (`MESSAGE_UPDATE` with `edited_timestamp`) is handed over as a new message
//!   `<id>:edit:<edited timestamp>` with `extra_json.edit_of` (the ABI has no inbound
//!   edits; Slack does the same); updates that only fill in embeds are not. A
//!   `MESSAGE_DELETE` goes to the host as a deletion (it withdraws the message or tells the
//!   agent).
//! * No loss, no duplicates: events are handed over in order, each message and click once
//!   (the kit's persisted dedupe), and the session id and the sequence number of the last
//!   event handed over are recorded in the host's state store after each; a restart resumes
//!   there and Discord replays what the host had not taken. Discord keeps a session
//!   resumable for a short while only: after a longer outage it answers the resume with
//!   Invalid Session, the plugin identifies afresh, and what was written meanwhile is not
//!   replayed (the gateway has no history beyond the session).
//! * Outbound: the agent's Markdown rendered as Discord Markdown and split into messages of
//!   at most 2,000 characters; the first part replies to the target message; files
//!   (multipart, at most 10 per message and 10 MiB each) and buttons (action rows of five,
//!   `custom_id` up to 100 characters) go with the last part. `@everyone`, `@here` and role
//!   mentions never ping. Each part carries a nonce derived from the host's idempotency key
//!   with `enforce_nonce`, so a re-send after a crash returns the first message. Edits
//!   (PATCH), reactions (names such as `thumbs_up` or any emoji), typing and `open_dm`
//!   (`POST /users/@me/channels`).
//! * Rate limits: Discord's bucket headers are followed, and a 429 pauses its bucket (or
//!   everything, when global) for its `retry_after` and is retried within 5 s; longer goes
//!   back to the host as `RATE_LIMITED` with the time left (see the `api` module).
//! * The token is registered as a secret: log lines and errors never contain it.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use nanoclaw_plugin_api::kit::http::ApiBase;
use nanoclaw_plugin_api::kit::inbound::{Dedupe, HandOverPolicy, Inbox};
use nanoclaw_plugin_api::kit::prelude::*;
use nanoclaw_plugin_api::kit::tokio::sync::mpsc;
use nanoclaw_plugin_api::kit::ws::{self, WsConfig, WsError};
use serde::Deserialize;

mod api;
mod gateway;
mod inbound;
mod outbound;

use api::Api;
use gateway::{Gateway, SessionState, Worker};
use inbound::BotIdentity;

pub use gateway::INTENTS;

/// The default REST API root.
pub const DEFAULT_API_BASE_URL: &str = "https://discord.com/api/v10";
const DEFAULT_SKIP_AFTER_REFUSALS: u32 = 8;
/// How long message and interaction ids are remembered (Discord resumes within minutes).
const DEDUPE_TTL: Duration = Duration::from_secs(3 * 24 * 3600);
/// A claim left by an instance stopped mid-hand-over blocks the replay this long.
const DEDUPE_CLAIM_TTL: Duration = Duration::from_secs(5);

/// Settings as the host passes them (JSON, secrets resolved).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    bot_token: Secret,
    #[serde(default = "default_base_url")]
    api_base_url: String,
    #[serde(default)]
    gateway_url: Option<String>,
    #[serde(default = "default_skip_after_refusals")]
    skip_after_refusals: u32,
}

fn default_base_url() -> String {
    DEFAULT_API_BASE_URL.to_owned()
}

fn default_skip_after_refusals() -> u32 {
    DEFAULT_SKIP_AFTER_REFUSALS
}

/// A bot token's shape: three non-empty base64url parts joined by dots (the bot's id, a
/// timestamp, a signature). Checked in `create`, so `nanoclaw doctor` and `plugins check`
/// catch a pasted client secret or public key without the network.
fn looks_like_a_bot_token(token: &str) -> bool {
    let parts: Vec<&str> = token.split('.').collect();
    parts.len() == 3
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
        && parts[0].len() >= 4
}

/// Checks a gateway URL setting: `ws://` or `wss://`, no credentials.
fn validate_gateway_url(raw: &str) -> Result<String, PluginError> {
    let url = raw.trim();
    let rest = url
        .strip_prefix("wss://")
        .or_else(|| url.strip_prefix("ws://"))
        .ok_or_else(|| {
            PluginError::config(format!(
                "gateway_url `{url}`: must start with wss:// (or ws:// for a local fake)"
            ))
        })?;
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    if authority.is_empty() || authority.contains('@') || url.contains(char::is_whitespace) {
        return Err(PluginError::config(format!(
            "gateway_url `{url}`: needs a host and no user or password"
        )));
    }
    Ok(url.to_owned())
}

/// The channel as the host loads it: the kit's lifecycle around [`Discord`].
pub type DiscordChannel = Hosted<Discord>;

/// One Discord bot.
pub struct Discord {
    life: Lifecycle,
    api: Arc<Api>,
    token: Secret,
    gateway_setting: Option<String>,
    inbox: Inbox,
    dedupe: Dedupe,
    bot: OnceLock<BotIdentity>,
    /// What `start` found for `run`: the gateway URL and the recorded session.
    connect: Mutex<Option<(String, Option<SessionState>)>>,
}

impl Discord {
    /// The bot's user id, once started.
    pub fn bot_id(&self) -> Option<String> {
        self.bot.get().map(|b| b.id.clone())
    }
}

impl AsyncChannel for Discord {
    const INFO: ChannelInfo = ChannelInfo::new("Discord", "discord", env!("CARGO_PKG_VERSION"))
        .capabilities(
            Capabilities::OPEN_DM
                .with(Capabilities::EDIT)
                .with(Capabilities::REACTIONS)
                .with(Capabilities::TYPING)
                .with(Capabilities::FILES)
                .with(Capabilities::BUTTONS),
        )
        .markup(Markup::DiscordMarkdown)
        .max_text_length(2000)
        .text_unit(LengthUnit::Utf16)
        .description("Discord bot: gateway WebSocket in, REST API out");

    fn create(ctx: Context, life: &Lifecycle) -> Result<Self, PluginError> {
        let settings: Settings = ctx.settings()?;
        let token = settings.bot_token;
        let raw = token.expose().trim();
        if raw.is_empty() || raw.contains(char::is_whitespace) {
            return Err(PluginError::config(
                "bot_token is empty or has spaces: put the token from the Developer Portal \
                 (Bot → Reset Token) in DISCORD_BOT_TOKEN, without the `Bot ` prefix",
            ));
        }
        if raw.starts_with("Bot ") || raw.starts_with("bot ") {
            return Err(PluginError::config(
                "bot_token starts with `Bot `: give the token alone",
            ));
        }
        if !looks_like_a_bot_token(raw) {
            return Err(PluginError::config(
                "bot_token is not a Discord bot token (three parts separated by dots, such \
                 as MTEx….Gabc12.xyz…): copy it again from the Developer Portal (Bot → Reset \
                 Token); an application id, public key or client secret does not work",
            ));
        }
        if !(1..=1000).contains(&settings.skip_after_refusals) {
            return Err(PluginError::config(format!(
                "skip_after_refusals must be between 1 and 1000, not {}",
                settings.skip_after_refusals
            )));
        }
        let base = ApiBase::parse("api_base_url", &settings.api_base_url, &[&token])?;
        if base.is_plain_remote() {
            life.warn(format!(
                "api_base_url {} is plain http to another machine: the bot token travels \
                 unencrypted",
                base.as_str()
            ));
        }
        let gateway_setting = settings
            .gateway_url
            .as_deref()
            .map(validate_gateway_url)
            .transpose()?;
        life.add_secret(&token);
        let api = Api::new(&Self::INFO, &base, token.clone())?;
        Ok(Self {
            api: Arc::new(api),
            token,
            gateway_setting,
            inbox: Inbox::with_policy(
                life,
                HandOverPolicy {
                    max_refusals: settings.skip_after_refusals,
                    ..HandOverPolicy::default()
                },
            ),
            dedupe: Dedupe::new(life.host().clone(), "discord", DEDUPE_TTL)
                .claim_ttl(DEDUPE_CLAIM_TTL),
            bot: OnceLock::new(),
            connect: Mutex::new(None),
            life: life.clone(),
        })
    }

    async fn start(&self) -> Result<(), PluginError> {
        let me = self.api.me().await.map_err(|e| {
            if e.kind != ErrorKind::AUTH {
                return e;
            }
            let reason = format!(
                "Discord refused the bot token ({e}): it is wrong or was reset. Copy the \
                 current one from the Developer Portal (Bot → Reset Token) into \
                 DISCORD_BOT_TOKEN"
            );
            self.life.health().down(reason.clone());
            PluginError::auth(reason)
        })?;
        let _ = self.bot.set(BotIdentity {
            id: me.id.clone(),
            username: me.username.clone(),
        });
        let url = match &self.gateway_setting {
            Some(url) => url.clone(),
            None => self.api.gateway_bot().await?.url,
        };
        let session = self
            .life
            .host_call(gateway::load_session)
            .await
            .map_err(|_| PluginError::other("the Discord plugin is stopping"))??;
        self.life.info(format!(
            "connecting to Discord as {} ({}){}",
            me.username,
            me.id,
            if session.is_some() {
                ", resuming the last session"
            } else {
                ""
            }
        ));
        *self.connect.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((gateway::with_query(&url), session));
        Ok(())
    }

    async fn run(self: Arc<Self>, _stop: StopSignal) {
        let Some((url, session)) = self
            .connect
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        else {
            return;
        };
        let (sender, receiver) = mpsc::unbounded_channel();
        let worker = Worker {
            life: self.life.clone(),
            api: Arc::clone(&self.api),
            inbox: self.inbox.clone(),
            dedupe: self.dedupe.clone(),
            session: session.clone(),
        };
        self.life.spawn(worker.run(receiver));
        let mut handler = Gateway {
            life: self.life.clone(),
            api: Arc::clone(&self.api),
            token: self.token.clone(),
            bot: self.bot.get().cloned().unwrap_or_default(),
            url: url.clone(),
            seq: session.as_ref().map(|s| s.seq),
            session,
            awaiting_ack: false,
            work: sender,
        };
        // Discord's hello sets the heartbeat; two missed beats' worth of silence is a dead
        // connection even when the heartbeat cannot tell.
        let config = WsConfig::new(url).idle_timeout(Some(Duration::from_secs(150)));
        match ws::run(&self.life, config, &mut handler).await {
            Err(WsError::Stopped) | Ok(()) => {}
            Err(WsError::Handler(reason)) => self.life.health().down(reason),
            Err(e) => {
                self.life.error(format!("Discord gateway ended: {e}"));
                self.life.health().down(e.to_string());
            }
        }
    }

    fn render(&self, message: OutboundMessage) -> Result<Vec<OutboundMessage>, PluginError> {
        outbound::render(message)
    }

    async fn deliver(&self, part: OutboundMessage) -> Result<Option<String>, PluginError> {
        match part.op {
            OutboundOp::SEND => outbound::send(&self.api, &part).await,
            OutboundOp::EDIT => outbound::edit(&self.api, &part).await,
            OutboundOp::REACT => outbound::react(&self.api, &part).await,
            other => Err(PluginError::unsupported(format_args!("operation {other}"))),
        }
    }

    async fn set_typing(&self, chat_id: &str, _thread_id: Option<&str>) {
        // The host refreshes the indicator every few seconds: a failure is not worth more.
        if let Err(e) = outbound::typing(&self.api, chat_id).await {
            self.life.debug(format!("typing indicator: {e}"));
        }
    }

    async fn open_dm(&self, user_handle: &str) -> Result<String, PluginError> {
        let user = outbound::snowflake("user id", user_handle)?;
        self.api.open_dm(user).await
    }

    async fn shutdown(&self) {
        self.life.info("Discord gateway closed");
    }
}

nanoclaw_plugin_api::export_plugin!(DiscordChannel);

#[cfg(test)]
mod tests {
    use super::*;
    use nanoclaw_plugin_api::kit::testing::MemoryHost;
    use serde_json::json;

    const TOKEN: &str = "MTIzNDU2Nzg5MDEyMzQ1Njc4.GabcDE.secretsecretsecretsecretsecret";

    fn create(settings: serde_json::Value) -> Result<DiscordChannel, PluginError> {
        let mem = MemoryHost::new();
        DiscordChannel::create(Context {
            instance_name: "discord".into(),
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
        ch.teardown();
        assert!(config_error(json!({})).contains("bot_token"));
        assert!(config_error(json!({"bot_token": ""})).contains("bot_token"));
        assert!(config_error(json!({"bot_token": format!("Bot {TOKEN}")})).contains("Bot"));
        assert!(config_error(json!({"bot_token": TOKEN, "colour": 1})).contains("colour"));
        // A client secret or a public key pasted by mistake.
        assert!(
            config_error(json!({"bot_token": "b0f6a9c1d2e3f4a5b6c7d8e9f0a1b2c3"}))
                .contains("not a Discord bot token")
        );
        assert!(config_error(json!({"bot_token": "a.b"})).contains("not a Discord bot token"));
        assert!(
            config_error(json!({"bot_token": TOKEN, "api_base_url": "ftp://x"}))
                .contains("api_base_url")
        );
        assert!(
            config_error(json!({"bot_token": TOKEN, "gateway_url": "https://x"}))
                .contains("gateway_url")
        );
        assert!(
            config_error(json!({"bot_token": TOKEN, "gateway_url": "wss://u:p@x"}))
                .contains("gateway_url")
        );
        assert!(
            config_error(json!({"bot_token": TOKEN, "skip_after_refusals": 0}))
                .contains("skip_after_refusals")
        );
        let ch = create(json!({
            "bot_token": TOKEN,
            "api_base_url": "http://127.0.0.1:9/api/v10",
            "gateway_url": "ws://127.0.0.1:9/gateway",
        }))
        .expect("full settings");
        ch.teardown();
    }

    #[test]
    fn manifest() {
        let info = DiscordChannel::INFO;
        assert_eq!(info.channel_type, "discord");
        assert_eq!(info.max_text_length, 2000);
        assert_eq!(info.markup, Markup::DiscordMarkdown);
        assert!(info.capabilities.contains(Capabilities::OPEN_DM));
        assert!(!info.capabilities.contains(Capabilities::WEBHOOK));
        assert_eq!(INTENTS & (1 << 15), 1 << 15, "MESSAGE_CONTENT");
    }

    #[test]
    fn gateway_urls_get_the_version() {
        assert_eq!(
            gateway::with_query("wss://gateway.discord.gg"),
            "wss://gateway.discord.gg/?v=10&encoding=json"
        );
        assert_eq!(gateway::with_query("ws://h/gw?v=10"), "ws://h/gw?v=10");
    }
}
