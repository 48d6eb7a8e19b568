//! NanoClaw channel plugin for the WhatsApp Cloud API: signed webhooks in, the Graph API out.
//!
//! # Settings (`[plugins.whatsapp.settings]` in plugins.toml)
//!
//! | key | default | |
//! |---|---|---|
//! | `access_token` | required | `{ env = "WHATSAPP_ACCESS_TOKEN" }`, a system user's token with `whatsapp_business_messaging` |
//! | `app_secret` | required | `{ env = "WHATSAPP_APP_SECRET" }`: every POST must carry its `X-Hub-Signature-256` |
//! | `verify_token` | required | `{ env = "WHATSAPP_VERIFY_TOKEN" }`: the string Meta echoes when the callback URL is set |
//! | `phone_number_id` | required | the business number's id (not the number itself) |
//! | `api_base_url` | `https://graph.facebook.com/v21.0` | the Graph root (tests: a fake on 127.0.0.1) |
//! | `media_hosts` | `["https://lookaside.fbsbx.com"]` | origins the token may be sent to when downloading media |
//! | `max_file_bytes` | 20 MiB | inbound media larger than this arrive without content |
//! | `send_per_sec` | `20` | messages per second for the business number (Cloud API: 80 by default) |
//! | `max_event_age_secs` | 8 days | a signed notification older than this is refused as a replay (Meta retries for up to 7 days) |
//!
//! # Behaviour
//!
//! * `start` reads the business number (`GET /{phone_number_id}`): a wrong token fails
//!   `start` with `AUTH` (and `nanoclaw doctor` says so).
//! * `GET /webhook/<instance>` answers Meta's handshake (`hub.mode=subscribe`,
//!   `hub.verify_token` compared in constant time, `hub.challenge` echoed); anything else
//!   403. Every POST is verified first (`X-Hub-Signature-256`, HMAC-SHA256 of the exact body
//!   under the app secret): a missing or wrong signature is answered 401 and leaves only a
//!   log line. Notifications for another business number are ignored.
//! * Messages: users are their WhatsApp ids (`wa_id`, the phone number), and so are chats
//!   (every chat is a DM, always addressed to the bot). Text, media (image, audio and voice
//!   notes, video, documents, stickers: `GET /{media-id}` then the download, from
//!   `media_hosts` only, within `max_file_bytes`), captions, locations and contacts as text,
//!   replies (`context`) as `reply_to`. Each is handed over once (dedupe by message id);
//!   when the host refuses, the answer is 503 so Meta redelivers.
//! * Reply-button and list taps (`interactive` `button_reply`/`list_reply`) go to the host
//!   as actions with the tapper's `wa_id`. The Cloud API sends no edits or deletions.
//! * Statuses (`sent`, `delivered`, `read`, `failed`): a failed send is logged as an error
//!   and reported in the health detail with Meta's reason (error 131047: outside the
//!   24-hour window, the user must write first); it is never taken as delivered.
//! * Outbound: WhatsApp formatting (the kit's renderer), parts of at most 4,096 characters,
//!   replies with `context`, up to three buttons as reply buttons (titles cut to 20
//!   characters), four to ten as a list, media uploaded (`POST /{phone_number_id}/media`)
//!   then sent by id, reactions. A known user whose last message is more than 24 hours old
//!   gets no free-form message: the send fails with the window's explanation instead of
//!   failing silently later. Pace: `send_per_sec` for the number, and Meta's pair rate limit
//!   per recipient. No `open_dm`: a `wa_id` is the chat.

use std::sync::Arc;
use std::time::Duration;

use nanoclaw_plugin_api::kit::http::{ApiBase, reqwest::Url};
use nanoclaw_plugin_api::kit::inbound::{Dedupe, Inbox};
use nanoclaw_plugin_api::kit::prelude::*;
use serde::Deserialize;

mod api;
mod inbound;
mod outbound;

use api::Api;

/// The default Graph root.
pub const DEFAULT_API_BASE_URL: &str = "https://graph.facebook.com/v21.0";
/// Where the Cloud API serves media from.
pub const DEFAULT_MEDIA_HOST: &str = "https://lookaside.fbsbx.com";
const DEFAULT_MAX_FILE_BYTES: u64 = 20 * 1024 * 1024;
/// Message ids are remembered longer than Meta retries (7 days) and replays are accepted.
const DEDUPE_TTL: Duration = Duration::from_secs(9 * 24 * 3600);
/// The customer-service window.
pub const WINDOW: Duration = Duration::from_secs(24 * 3600);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    access_token: Secret,
    app_secret: Secret,
    verify_token: Secret,
    phone_number_id: String,
    #[serde(default = "default_base")]
    api_base_url: String,
    #[serde(default)]
    media_hosts: Option<Vec<String>>,
    #[serde(default = "default_max_file")]
    max_file_bytes: u64,
    #[serde(default = "default_send_rate")]
    send_per_sec: f64,
    #[serde(default = "default_max_age")]
    max_event_age_secs: u64,
}

fn default_base() -> String {
    DEFAULT_API_BASE_URL.to_owned()
}

fn default_max_file() -> u64 {
    DEFAULT_MAX_FILE_BYTES
}

fn default_send_rate() -> f64 {
    20.0
}

fn default_max_age() -> u64 {
    8 * 24 * 3600
}

/// What the webhook path and the host-facing methods share.
pub(crate) struct Shared {
    pub(crate) life: Lifecycle,
    pub(crate) api: Api,
    pub(crate) inbox: Inbox,
    pub(crate) dedupe: Dedupe,
    pub(crate) app_secret: Secret,
    pub(crate) verify_token: Secret,
    pub(crate) phone_number_id: String,
    pub(crate) media_hosts: Vec<Url>,
    pub(crate) max_file_bytes: u64,
    pub(crate) max_event_age: Duration,
}

/// The channel as the host loads it.
pub type WhatsAppChannel = Hosted<WhatsApp>;

/// One business number on the Cloud API.
pub struct WhatsApp {
    shared: Arc<Shared>,
}

/// A WhatsApp id: a phone number in digits.
pub(crate) fn is_wa_id(id: &str) -> bool {
    (5..=20).contains(&id.len()) && id.chars().all(|c| c.is_ascii_digit())
}

impl AsyncChannel for WhatsApp {
    const INFO: ChannelInfo = ChannelInfo::new("WhatsApp", "whatsapp", env!("CARGO_PKG_VERSION"))
        .capabilities(
            Capabilities::REACTIONS
                .with(Capabilities::FILES)
                .with(Capabilities::BUTTONS)
                .with(Capabilities::WEBHOOK),
        )
        .markup(Markup::WhatsApp)
        .max_text_length(outbound::MAX_TEXT_CHARS as u32)
        .text_unit(LengthUnit::Chars)
        .description("WhatsApp Cloud API (signed webhooks in, Graph API out)");

    fn create(ctx: Context, life: &Lifecycle) -> Result<Self, PluginError> {
        let settings: Settings = ctx.settings()?;
        if settings.access_token.expose().trim().len() < 16 {
            return Err(PluginError::config(
                "access_token does not look like a Meta access token",
            ));
        }
        for (name, secret) in [
            ("app_secret", &settings.app_secret),
            ("verify_token", &settings.verify_token),
        ] {
            if secret.expose().trim().len() < 8 {
                return Err(PluginError::config(format!(
                    "{name} must be at least 8 characters"
                )));
            }
        }
        if !settings.phone_number_id.chars().all(|c| c.is_ascii_digit())
            || settings.phone_number_id.is_empty()
        {
            return Err(PluginError::config(
                "phone_number_id must be the number's id (digits, from WhatsApp → API Setup), \
                 not the phone number with + or spaces",
            ));
        }
        let rate = settings.send_per_sec;
        if !(rate > 0.0 && rate <= 1000.0) {
            return Err(PluginError::config(format!(
                "send_per_sec must be above 0 and at most 1000, not {rate}"
            )));
        }
        if settings.max_file_bytes == 0 {
            return Err(PluginError::config("max_file_bytes must be above 0"));
        }
        if settings.max_event_age_secs < 3600 {
            return Err(PluginError::config(
                "max_event_age_secs must be at least 3600",
            ));
        }
        let secrets = [
            &settings.access_token,
            &settings.app_secret,
            &settings.verify_token,
        ];
        let base = ApiBase::parse("api_base_url", &settings.api_base_url, &secrets)?;
        if base.is_plain_remote() {
            life.warn(format!(
                "api_base_url {} is plain http to another machine: the token travels \
                 unencrypted",
                base.as_str()
            ));
        }
        let hosts = settings
            .media_hosts
            .clone()
            .unwrap_or_else(|| vec![DEFAULT_MEDIA_HOST.to_owned()]);
        let media_hosts = hosts
            .iter()
            .map(|h| {
                Url::parse(h)
                    .ok()
                    .filter(|u| matches!(u.scheme(), "https" | "http") && u.host_str().is_some())
                    .ok_or_else(|| {
                        PluginError::config(format!("media_hosts: `{h}` is not an http(s) origin"))
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        for secret in secrets {
            life.add_secret(secret);
        }
        let api = Api::new(&Self::INFO, &base, settings.access_token.clone(), rate)?;
        Ok(Self {
            shared: Arc::new(Shared {
                life: life.clone(),
                api,
                inbox: Inbox::new(life),
                dedupe: Dedupe::new(life.host().clone(), "messages", DEDUPE_TTL),
                app_secret: settings.app_secret.clone(),
                verify_token: settings.verify_token.clone(),
                phone_number_id: settings.phone_number_id,
                media_hosts,
                max_file_bytes: settings.max_file_bytes,
                max_event_age: Duration::from_secs(settings.max_event_age_secs),
            }),
        })
    }

    async fn start(&self) -> Result<(), PluginError> {
        self.shared.check_number().await
    }

    async fn deliver(&self, part: OutboundMessage) -> Result<Option<String>, PluginError> {
        self.shared.deliver(&part).await
    }

    async fn handle_webhook(
        &self,
        request: WebhookRequest,
    ) -> Result<WebhookResponse, PluginError> {
        Ok(self.shared.handle_webhook(request).await)
    }

    async fn shutdown(&self) {
        self.shared.life.info("WhatsApp channel stopped");
    }
}

#[cfg(test)]
mod tests;
