//! NanoClaw channel plugin for Webex: signed webhooks in, the REST API out.
//!
//! # Settings (`[plugins.webex.settings]` in plugins.toml)
//!
//! | key | default | |
//! |---|---|---|
//! | `bot_token` | required | `{ env = "WEBEX_BOT_TOKEN" }`, the bot's access token |
//! | `webhook_secret` | required | `{ env = "WEBEX_WEBHOOK_SECRET" }`: the webhooks' secret; every request must carry its `X-Spark-Signature` |
//! | `webhook_url` | — | the public URL Webex POSTs to, `https://<host>/webhook/<instance>`; when set, the webhooks are registered (or repaired) at start |
//! | `api_base_url` | `https://webexapis.com/v1` | the REST root (tests: a fake on 127.0.0.1) |
//! | `file_hosts` | the origin of `api_base_url` | origins the bot token may be sent to when downloading a file |
//! | `max_file_bytes` | 20 MiB | inbound files larger than this arrive without content |
//! | `post_per_sec` | `2` | messages per space and second |
//! | `max_event_age_secs` | `3600` | an event whose resource was created longer ago is refused as a replay |
//!
//! # Behaviour
//!
//! * `start` calls `GET /people/me` (the bot's person id: its own messages are dropped and
//!   mentions recognised; a wrong token fails `start` with `AUTH`). With `webhook_url`, it
//!   lists the bot's webhooks and creates or reactivates `messages:created`,
//!   `messages:deleted` and `attachmentActions:created` with that URL and the secret.
//! * Every webhook request is verified first (`X-Spark-Signature`, HMAC-SHA1 of the exact
//!   body under the secret, constant-time): a missing or wrong signature is answered 401
//!   and leaves only a log line. A signed event about a resource older than
//!   `max_event_age_secs` is refused (401) as a replay; a repeat of a recent one is
//!   answered 200 and handed over once (dedupe by space and message id in the host's
//!   store).
//! * The webhook carries ids only: the message is fetched (`GET /messages/{id}`), its
//!   files downloaded with the token (from `file_hosts` only, within `max_file_bytes`).
//!   Chat ids are space (room) ids, users person ids. 1:1 spaces are DMs (always
//!   mentioned); in group spaces Webex only tells a bot about messages that mention it
//!   (`mentionedPeople`, or `mentionedGroups` `all`). In group spaces each top-level message
//!   is its own thread (replies go under it, `parentId`); replies carry their parent.
//! * `messages:deleted` goes to the host as a deletion (ABI 1.2), in the thread the message
//!   was handed over in. Card clicks (`attachmentActions:created`) are fetched
//!   (`GET /attachment/actions/{id}`) and go to the host as actions with the clicker's
//!   person id.
//! * The host refusing an event: the webhook is answered 200 (Webex does not redeliver) and
//!   the event is handed over again in the background until taken, or skipped and
//!   reported as poison.
//! * Outbound: Markdown (the kit's Teams/Webex renderer), parts of at most 7,439 bytes,
//!   `parentId` from the thread, buttons as one Adaptive Card with `Action.Submit`
//!   buttons, one file per message (multipart), edits with `PUT /messages/{id}`. Webex has
//!   no bot reactions or typing indicator: neither is declared.
//! * `open_dm(person id)`: the 1:1 space, from what the bot learnt (a DM from that person)
//!   or `GET /messages/direct`; with none yet, a `person:<id>` chat that posts with
//!   `toPersonId` (Webex creates the space) and learns the space id.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use nanoclaw_plugin_api::kit::http::{ApiBase, reqwest::Url};
use nanoclaw_plugin_api::kit::inbound::{Dedupe, Inbox};
use nanoclaw_plugin_api::kit::prelude::*;
use serde::Deserialize;

mod api;
mod inbound;
mod outbound;

use api::{Api, Me};

/// The default REST root.
pub const DEFAULT_API_BASE_URL: &str = "https://webexapis.com/v1";
const DEFAULT_MAX_FILE_BYTES: u64 = 20 * 1024 * 1024;
/// Message ids are remembered longer than any replay is accepted.
const DEDUPE_TTL: Duration = Duration::from_secs(3 * 24 * 3600);
/// The webhooks the channel needs.
pub const WEBHOOKS: [(&str, &str); 3] = [
    ("messages", "created"),
    ("messages", "deleted"),
    ("attachmentActions", "created"),
];
/// Chats that are not a space yet: `person:<person id>` (posts with `toPersonId`).
pub const PERSON_CHAT_PREFIX: &str = "person:";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    bot_token: Secret,
    webhook_secret: Secret,
    #[serde(default)]
    webhook_url: Option<String>,
    #[serde(default = "default_base")]
    api_base_url: String,
    #[serde(default)]
    file_hosts: Option<Vec<String>>,
    #[serde(default = "default_max_file")]
    max_file_bytes: u64,
    #[serde(default = "default_post_rate")]
    post_per_sec: f64,
    #[serde(default = "default_max_age")]
    max_event_age_secs: u64,
}

fn default_base() -> String {
    DEFAULT_API_BASE_URL.to_owned()
}

fn default_max_file() -> u64 {
    DEFAULT_MAX_FILE_BYTES
}

fn default_post_rate() -> f64 {
    2.0
}

fn default_max_age() -> u64 {
    3600
}

/// What the webhook path and the host-facing methods share.
pub(crate) struct Shared {
    pub(crate) life: Lifecycle,
    pub(crate) api: Api,
    pub(crate) inbox: Inbox,
    pub(crate) dedupe: Dedupe,
    pub(crate) secret: Secret,
    pub(crate) file_hosts: Vec<Url>,
    pub(crate) max_file_bytes: u64,
    pub(crate) max_event_age: Duration,
    pub(crate) bot: OnceLock<Me>,
}

impl Shared {
    pub(crate) fn bot_id(&self) -> Option<&str> {
        self.bot.get().map(|b| b.id.as_str())
    }
}

/// The channel as the host loads it.
pub type WebexChannel = Hosted<Webex>;

/// One Webex bot.
pub struct Webex {
    shared: Arc<Shared>,
    webhook_url: Option<String>,
}

impl Webex {
    /// The bot's person id, once started.
    pub fn bot_id(&self) -> Option<String> {
        self.shared.bot_id().map(str::to_owned)
    }
}

/// Webex ids (rooms, people, messages) are base64url.
pub(crate) fn is_webex_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 512
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '='))
}

fn origin(raw: &str, setting: &str) -> Result<Url, PluginError> {
    Url::parse(raw)
        .ok()
        .filter(|u| matches!(u.scheme(), "https" | "http") && u.host_str().is_some())
        .ok_or_else(|| PluginError::config(format!("{setting}: `{raw}` is not an http(s) URL")))
}

impl AsyncChannel for Webex {
    const INFO: ChannelInfo = ChannelInfo::new("Webex", "webex", env!("CARGO_PKG_VERSION"))
        .capabilities(
            Capabilities::OPEN_DM
                .with(Capabilities::EDIT)
                .with(Capabilities::FILES)
                .with(Capabilities::BUTTONS)
                .with(Capabilities::THREADS)
                .with(Capabilities::WEBHOOK),
        )
        .markup(Markup::TeamsMarkdown)
        .max_text_length(outbound::MAX_TEXT_BYTES as u32)
        .text_unit(LengthUnit::Bytes)
        .description("Webex (signed webhooks in, REST out)");

    fn create(ctx: Context, life: &Lifecycle) -> Result<Self, PluginError> {
        let settings: Settings = ctx.settings()?;
        if settings.bot_token.expose().trim().len() < 16 {
            return Err(PluginError::config(
                "bot_token does not look like a Webex bot access token",
            ));
        }
        if settings.webhook_secret.expose().trim().len() < 8 {
            return Err(PluginError::config(
                "webhook_secret must be at least 8 characters (a random string you also give \
                 Webex)",
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
        if settings.max_event_age_secs < 60 {
            return Err(PluginError::config(
                "max_event_age_secs must be at least 60",
            ));
        }
        let secrets = [&settings.bot_token, &settings.webhook_secret];
        let base = ApiBase::parse("api_base_url", &settings.api_base_url, &secrets)?;
        if base.is_plain_remote() {
            life.warn(format!(
                "api_base_url {} is plain http to another machine: the token travels \
                 unencrypted",
                base.as_str()
            ));
        }
        if let Some(url) = &settings.webhook_url {
            let parsed = origin(url, "webhook_url")?;
            if parsed.scheme() != "https"
                && !matches!(parsed.host_str(), Some("127.0.0.1" | "localhost"))
            {
                life.warn("webhook_url is not https: Webex requires an https target URL");
            }
        }
        let file_hosts = match &settings.file_hosts {
            Some(hosts) => hosts
                .iter()
                .map(|h| origin(h, "file_hosts"))
                .collect::<Result<Vec<_>, _>>()?,
            None => vec![origin(base.as_str(), "api_base_url")?],
        };
        for secret in secrets {
            life.add_secret(secret);
        }
        let api = Api::new(&Self::INFO, &base, settings.bot_token.clone(), rate)?;
        Ok(Self {
            shared: Arc::new(Shared {
                life: life.clone(),
                api,
                inbox: Inbox::new(life),
                dedupe: Dedupe::new(life.host().clone(), "messages", DEDUPE_TTL),
                secret: settings.webhook_secret.clone(),
                file_hosts,
                max_file_bytes: settings.max_file_bytes,
                max_event_age: Duration::from_secs(settings.max_event_age_secs),
                bot: OnceLock::new(),
            }),
            webhook_url: settings.webhook_url,
        })
    }

    async fn start(&self) -> Result<(), PluginError> {
        let shared = &self.shared;
        let me: Me = shared
            .api
            .get(&["people", "me"], "people/me")
            .await
            .map_err(|e| {
                if e.kind == ErrorKind::AUTH {
                    let reason =
                        format!("Webex refused the bot token ({e}): check WEBEX_BOT_TOKEN");
                    shared.life.health().down(reason.clone());
                    PluginError::auth(reason)
                } else {
                    e
                }
            })?;
        shared.life.info(format!(
            "connected to Webex as {} ({})",
            me.display_name,
            me.emails.first().map_or("no email", String::as_str)
        ));
        let _ = shared.bot.set(me);
        match &self.webhook_url {
            Some(url) => shared.register_webhooks(url).await?,
            None => shared.life.info(
                "no webhook_url: the webhooks must be registered by hand (see the add-webex skill)",
            ),
        }
        Ok(())
    }

    async fn deliver(&self, part: OutboundMessage) -> Result<Option<String>, PluginError> {
        self.shared.deliver(&part).await
    }

    async fn open_dm(&self, user_handle: &str) -> Result<String, PluginError> {
        self.shared.open_dm(user_handle).await
    }

    async fn handle_webhook(
        &self,
        request: WebhookRequest,
    ) -> Result<WebhookResponse, PluginError> {
        Ok(self.shared.handle_webhook(request).await)
    }

    async fn shutdown(&self) {
        self.shared.life.info("Webex channel stopped");
    }
}

#[cfg(test)]
mod tests;
