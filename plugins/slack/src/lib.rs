//! NanoClaw channel plugin for Slack: Socket Mode or the Events API in, the Web API out.
//!
//! # Settings (`[plugins.slack.settings]` in plugins.toml)
//!
//! | key | default | |
//! |---|---|---|
//! | `bot_token` | required | `{ env = "SLACK_BOT_TOKEN" }`, the bot token `xoxb-…` |
//! | `app_token` | — | `{ env = "SLACK_APP_TOKEN" }`, an app-level token `xapp-…` with `connections:write`: Socket Mode |
//! | `signing_secret` | — | `{ env = "SLACK_SIGNING_SECRET" }`: Events API and interactivity over the host's webhook `/webhook/<instance>` |
//! | `transport` | `socket_mode` with an `app_token`, else `events_api` | `socket_mode` or `events_api` |
//! | `api_base_url` | `https://slack.com/api` | the Web API root (tests: a fake on 127.0.0.1) |
//! | `file_hosts` | `["https://files.slack.com"]` | origins the bot token may be sent to when downloading a file |
//! | `max_file_bytes` | 20 MiB | inbound files larger than this arrive without content |
//! | `post_per_sec` | `1` | `chat.postMessage` per channel and second (Slack: about 1) |
//!
//! Socket Mode needs `app_token`; the Events API needs `signing_secret`. With both, the
//! webhook is served too (a second way in; events are deduped across both).
//!
//! # Behaviour
//!
//! * `start` calls `auth.test` (the bot's user id, to drop its own messages and see
//!   mentions); Socket Mode also opens its first connection URL there, so a wrong app
//!   token fails `start` with `AUTH`.
//! * Inbound `message` events from DMs (`im`), channels, private channels and group DMs
//!   (`mpim`) and `app_mention` events. Chat ids are conversation ids (`C…`, `G…`, `D…`),
//!   users are user ids (`U…`). In channels each top-level message is its own thread (the
//!   reply goes under it); replies carry `thread_ts` as their thread. DMs, `app_mention`,
//!   `<@bot>` in the text and replies in a thread the bot posted in count as mentions
//!   (the last marked `in_bot_thread` in `extra_json`). Senders' display names come from
//!   `users.info` (scope `users:read`; cached an hour; without the scope, no name).
//! * Ignored: the bot's own messages, bot messages and system subtypes (joins, topics…).
//!   `message_changed` with an `edited` mark becomes a new message with id
//!   `<ts>:edit:<edit ts>` and `extra_json.edit_of`; `message_deleted` goes to the host as a
//!   deletion of `deleted_ts` (the host withdraws it or tells the agent).
//! * Files are downloaded with the bot token, only from `file_hosts`, up to
//!   `max_file_bytes`.
//! * Every message is handed to the host once: deduped by `<channel>:<ts>` in the host's
//!   state store (so `message` and `app_mention` for one post, a webhook retry with
//!   `X-Slack-Retry-Num`, or a Socket Mode redelivery are one message). Socket Mode
//!   envelopes are acknowledged after the host took the event (or had it); the webhook
//!   answers 503 when the host refused, so Slack retries.
//! * Button clicks (`block_actions`, from Socket Mode `interactive` envelopes or the
//!   webhook's form-encoded `payload=`) go to the host as actions with the clicker's user
//!   id.
//! * Outbound: mrkdwn (the kit's renderer), parts of at most 3000 characters (a section
//!   block's limit, so a part can always carry buttons), `thread_ts` from the thread,
//!   buttons as an actions block, `chat.update` for edits, `reactions.add`, files with
//!   `files.getUploadURLExternal` + upload + `files.completeUploadExternal`, and
//!   `conversations.open` for `open_dm`. Slack has no typing indicator for bots over the
//!   Web API (only the legacy RTM API had one), so `TYPING` is not declared.
//! * Errors: Slack's `ok: false` codes are classified (`invalid_auth`, `token_revoked` →
//!   `AUTH`; `channel_not_found` → `NOT_FOUND`; `msg_too_long` → `INVALID_INPUT`;
//!   `ratelimited` and HTTP 429 → `RATE_LIMITED` with `Retry-After`). Calls are paced per
//!   method by Slack's rate tiers and `chat.postMessage` per channel.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use nanoclaw_plugin_api::kit::BackoffPolicy;
use nanoclaw_plugin_api::kit::http::{ApiBase, reqwest::Url};
use nanoclaw_plugin_api::kit::inbound::{Dedupe, Inbox};
use nanoclaw_plugin_api::kit::prelude::*;
use nanoclaw_plugin_api::kit::webhook::SlackVerifier;
use nanoclaw_plugin_api::kit::ws::{self, WsConfig, WsError};
use serde::Deserialize;
use serde_json::json;

mod api;
mod inbound;
mod outbound;
mod socket;

use api::{Api, Args, AuthTest, Opened};
use inbound::{EventsBody, Handled};

/// The default Web API root.
pub const DEFAULT_API_BASE_URL: &str = "https://slack.com/api";
/// Where Slack serves files from.
pub const DEFAULT_FILE_HOST: &str = "https://files.slack.com";
const DEFAULT_MAX_FILE_BYTES: u64 = 20 * 1024 * 1024;
/// Event ids are remembered longer than Slack retries (its last retry is after ~5 min).
const DEDUPE_TTL: Duration = Duration::from_secs(3 * 24 * 3600);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    bot_token: Secret,
    #[serde(default)]
    app_token: Option<Secret>,
    #[serde(default)]
    signing_secret: Option<Secret>,
    #[serde(default)]
    transport: Option<String>,
    #[serde(default = "default_base")]
    api_base_url: String,
    #[serde(default)]
    file_hosts: Option<Vec<String>>,
    #[serde(default = "default_max_file")]
    max_file_bytes: u64,
    #[serde(default = "default_post_rate")]
    post_per_sec: f64,
}

fn default_base() -> String {
    DEFAULT_API_BASE_URL.to_owned()
}

fn default_max_file() -> u64 {
    DEFAULT_MAX_FILE_BYTES
}

fn default_post_rate() -> f64 {
    1.0
}

/// How events come in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transport {
    SocketMode,
    EventsApi,
}

/// The bot as `auth.test` names it.
#[derive(Debug, Clone)]
pub(crate) struct Bot {
    pub(crate) user_id: String,
    pub(crate) bot_id: Option<String>,
}

/// What the receive paths and the host-facing methods share.
pub(crate) struct Shared {
    pub(crate) life: Lifecycle,
    pub(crate) api: Api,
    pub(crate) inbox: Inbox,
    pub(crate) dedupe: Dedupe,
    pub(crate) file_hosts: Vec<Url>,
    pub(crate) max_file_bytes: u64,
    bot: OnceLock<Bot>,
    first_url: Mutex<Option<Secret>>,
    /// User id → display name (and when it was asked), from `users.info`.
    pub(crate) names: Mutex<HashMap<String, (Option<String>, Instant)>>,
}

impl Shared {
    pub(crate) fn bot(&self) -> Option<Bot> {
        self.bot.get().cloned()
    }

    pub(crate) fn take_first_url(&self) -> Option<Secret> {
        self.first_url
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }
}

/// The channel as the host loads it.
pub type SlackChannel = Hosted<Slack>;

/// One Slack app (bot) in one workspace.
pub struct Slack {
    shared: Arc<Shared>,
    transport: Transport,
    verifier: Option<SlackVerifier>,
}

impl Slack {
    /// The bot's user id, once started.
    pub fn bot_user_id(&self) -> Option<String> {
        self.shared.bot().map(|b| b.user_id)
    }
}

fn check_token(name: &str, token: &Secret, prefix: &str) -> Result<(), PluginError> {
    let t = token.expose().trim();
    if !t.starts_with(prefix) || t.len() < prefix.len() + 8 {
        return Err(PluginError::config(format!(
            "{name} must be a Slack token starting with {prefix}"
        )));
    }
    Ok(())
}

impl AsyncChannel for Slack {
    const INFO: ChannelInfo = ChannelInfo::new("Slack", "slack", env!("CARGO_PKG_VERSION"))
        .capabilities(
            Capabilities::OPEN_DM
                .with(Capabilities::EDIT)
                .with(Capabilities::REACTIONS)
                .with(Capabilities::FILES)
                .with(Capabilities::BUTTONS)
                .with(Capabilities::THREADS)
                .with(Capabilities::WEBHOOK),
        )
        .markup(Markup::SlackMrkdwn)
        .max_text_length(outbound::MAX_SECTION_CHARS as u32)
        .text_unit(LengthUnit::Chars)
        .description("Slack (Socket Mode or Events API; Web API out)");

    fn create(ctx: Context, life: &Lifecycle) -> Result<Self, PluginError> {
        let settings: Settings = ctx.settings()?;
        check_token("bot_token", &settings.bot_token, "xoxb-")?;
        if let Some(app) = &settings.app_token {
            check_token("app_token", app, "xapp-")?;
        }
        if let Some(secret) = &settings.signing_secret
            && secret.expose().trim().is_empty()
        {
            return Err(PluginError::config("signing_secret is empty"));
        }
        let transport = match settings.transport.as_deref() {
            Some("socket_mode") => Transport::SocketMode,
            Some("events_api") => Transport::EventsApi,
            None if settings.app_token.is_some() => Transport::SocketMode,
            None => Transport::EventsApi,
            Some(other) => {
                return Err(PluginError::config(format!(
                    "transport must be socket_mode or events_api, not `{other}`"
                )));
            }
        };
        if transport == Transport::SocketMode && settings.app_token.is_none() {
            return Err(PluginError::config(
                "Socket Mode needs app_token = { env = \"SLACK_APP_TOKEN\" } (an xapp- token)",
            ));
        }
        if transport == Transport::EventsApi && settings.signing_secret.is_none() {
            return Err(PluginError::config(
                "the Events API needs signing_secret = { env = \"SLACK_SIGNING_SECRET\" }; \
                 or use Socket Mode with app_token",
            ));
        }
        let rate = settings.post_per_sec;
        if !(rate > 0.0 && rate <= 100.0) {
            return Err(PluginError::config(format!(
                "post_per_sec must be above 0 and at most 100, not {rate}"
            )));
        }
        if settings.max_file_bytes == 0 {
            return Err(PluginError::config("max_file_bytes must be above 0"));
        }
        let mut secrets = vec![&settings.bot_token];
        secrets.extend(settings.app_token.as_ref());
        secrets.extend(settings.signing_secret.as_ref());
        let base = ApiBase::parse("api_base_url", &settings.api_base_url, &secrets)?;
        if base.is_plain_remote() {
            life.warn(format!(
                "api_base_url {} is plain http to another machine: tokens travel unencrypted",
                base.as_str()
            ));
        }
        let hosts = settings
            .file_hosts
            .clone()
            .unwrap_or_else(|| vec![DEFAULT_FILE_HOST.to_owned()]);
        let file_hosts = hosts
            .iter()
            .map(|h| {
                Url::parse(h)
                    .ok()
                    .filter(|u| matches!(u.scheme(), "https" | "http") && u.host_str().is_some())
                    .ok_or_else(|| {
                        PluginError::config(format!("file_hosts: `{h}` is not an http(s) origin"))
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        for secret in &secrets {
            life.add_secret(secret);
        }
        let verifier = settings.signing_secret.clone().map(SlackVerifier::new);
        let api = Api::new(
            &Self::INFO,
            &base,
            settings.bot_token.clone(),
            settings.app_token.clone(),
            rate,
        )?;
        Ok(Self {
            shared: Arc::new(Shared {
                life: life.clone(),
                api,
                inbox: Inbox::new(life),
                dedupe: Dedupe::new(life.host().clone(), "events", DEDUPE_TTL),
                file_hosts,
                max_file_bytes: settings.max_file_bytes,
                bot: OnceLock::new(),
                first_url: Mutex::new(None),
                names: Mutex::new(HashMap::new()),
            }),
            transport,
            verifier,
        })
    }

    async fn start(&self) -> Result<(), PluginError> {
        let shared = &self.shared;
        let down = |what: &str, e: PluginError| {
            if e.kind != ErrorKind::AUTH {
                return e;
            }
            let reason = format!("Slack refused {what} ({e})");
            shared.life.health().down(reason.clone());
            PluginError::auth(reason)
        };
        let me: AuthTest = shared
            .api
            .call("auth.test", "", Args::Json(&json!({})))
            .await
            .map_err(|e| down("the bot token: check SLACK_BOT_TOKEN (xoxb-…)", e))?;
        let _ = shared.bot.set(Bot {
            user_id: me.user_id.clone(),
            bot_id: me.bot_id.clone(),
        });
        if self.transport == Transport::SocketMode {
            let url = shared.api.open_connection().await.map_err(|e| {
                down(
                    "the app-level token: check SLACK_APP_TOKEN (xapp-…, connections:write) \
                     and that Socket Mode is on",
                    e,
                )
            })?;
            *shared.first_url.lock().unwrap_or_else(|p| p.into_inner()) = Some(Secret::new(url));
        }
        shared.life.info(format!(
            "connected to Slack workspace {} ({}) as {} ({}), {}",
            me.team,
            me.team_id,
            me.user,
            me.user_id,
            match self.transport {
                Transport::SocketMode => "Socket Mode",
                Transport::EventsApi => "Events API webhook",
            }
        ));
        Ok(())
    }

    async fn run(self: Arc<Self>, _stop: StopSignal) {
        if self.transport != Transport::SocketMode {
            return;
        }
        let shared = Arc::clone(&self.shared);
        // The URL comes from the handler (apps.connections.open before each connection).
        let config = WsConfig::new("wss://wss-primary.slack.com/link/")
            .heartbeat(Some(Duration::from_secs(30)))
            .idle_timeout(Some(Duration::from_secs(90)))
            .backoff(BackoffPolicy::exponential(
                Duration::from_millis(500),
                Duration::from_secs(60),
            ));
        let mut handler = socket::SocketMode {
            shared: Arc::clone(&shared),
        };
        match ws::run(&shared.life, config, &mut handler).await {
            Err(WsError::Stopped) | Ok(()) => {}
            Err(e) => {
                shared.life.error(format!("Socket Mode stopped: {e}"));
                shared.life.health().down(e.to_string());
            }
        }
    }

    async fn deliver(&self, part: OutboundMessage) -> Result<Option<String>, PluginError> {
        self.shared.deliver(&part).await
    }

    async fn open_dm(&self, user_handle: &str) -> Result<String, PluginError> {
        if user_handle.is_empty() || !user_handle.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(PluginError::invalid_input(format!(
                "`{user_handle}` is not a Slack user id"
            )));
        }
        let opened: Opened = self
            .shared
            .api
            .call(
                "conversations.open",
                "",
                Args::Json(&json!({ "users": user_handle })),
            )
            .await?;
        Ok(opened.channel.id)
    }

    async fn handle_webhook(
        &self,
        request: WebhookRequest,
    ) -> Result<WebhookResponse, PluginError> {
        let life = &self.shared.life;
        let Some(verifier) = &self.verifier else {
            return Ok(WebhookResponse::text(
                404,
                "this Slack channel has no signing_secret: it takes no webhooks",
            ));
        };
        if request.method.as_str() != "POST" {
            return Ok(WebhookResponse::text(405, "method not allowed"));
        }
        // The signature and its timestamp first, over the exact bytes: nothing unverified
        // is parsed or stored.
        if let Err(e) = verifier.verify(&request) {
            life.warn(format!("refused a webhook request: {e}"));
            return Ok(e.response());
        }
        life.health().ingested();
        if let Some(retry) = request.header("x-slack-retry-num") {
            life.debug(format!(
                "Slack redelivery {retry} ({})",
                request
                    .header("x-slack-retry-reason")
                    .unwrap_or("no reason")
            ));
        }
        let form = request
            .header("content-type")
            .is_some_and(|t| t.starts_with("application/x-www-form-urlencoded"));
        if form {
            return Ok(self.form_request(&request.body).await);
        }
        let body: EventsBody = match serde_json::from_slice(&request.body) {
            Ok(body) => body,
            Err(e) => return Ok(WebhookResponse::text(400, &format!("not an event: {e}"))),
        };
        Ok(match self.shared.handle_events_body(body).await {
            Ok(Handled::Challenge(challenge)) => {
                WebhookResponse::json(200, &json!({ "challenge": challenge }).to_string())
            }
            Ok(Handled::Done) => WebhookResponse::text(200, ""),
            Err(()) => WebhookResponse::text(503, "try again later"),
        })
    }

    async fn shutdown(&self) {
        self.shared.life.info("Slack channel stopped");
    }
}

impl Slack {
    /// A form-encoded webhook: interactivity (`payload=`) or a slash command (`command=`).
    async fn form_request(&self, body: &[u8]) -> WebhookResponse {
        let fields = form_fields(body);
        let field = |name: &str| fields.iter().find(|(k, _)| k == name).map(|(_, v)| v);
        if let Some(payload) = field("payload") {
            let payload: serde_json::Value = match serde_json::from_str(payload) {
                Ok(p) => p,
                Err(e) => return WebhookResponse::text(400, &format!("payload: {e}")),
            };
            return match self.shared.offer_interaction(&payload).await {
                Ok(offered) if !offered.redeliver() => WebhookResponse::text(200, ""),
                _ => WebhookResponse::text(503, "try again later"),
            };
        }
        if field("command").is_some() {
            self.shared
                .life
                .debug("slash commands are not handled; acknowledged");
            return WebhookResponse::text(200, "");
        }
        WebhookResponse::text(400, "neither payload nor command")
    }
}

/// `a=1&b=x%20y` → pairs, decoded.
fn form_fields(body: &[u8]) -> Vec<(String, String)> {
    let text = String::from_utf8_lossy(body);
    let mut url = Url::parse("http://form.invalid/").expect("a valid URL");
    url.set_query(Some(&text));
    url.query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

nanoclaw_plugin_api::export_plugin!(SlackChannel);

#[cfg(test)]
mod tests;
