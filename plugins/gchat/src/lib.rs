//! NanoClaw channel plugin for Google Chat: a Chat app's interaction events in over the
//! host's webhook (the app's HTTP endpoint), the Chat API out with a service account.
//!
//! # Settings (`[plugins.gchat.settings]` in plugins.toml)
//!
//! | key | default | |
//! |---|---|---|
//! | `credentials` | required | `{ env = "GCHAT_CREDENTIALS" }`: the service account's JSON key, on one line |
//! | `project_number` | required | the Google Cloud project number: the audience of Google's tokens |
//! | `api_base_url` | `https://chat.googleapis.com/v1` | the Chat API root |
//! | `token_url` | the key's `token_uri`, else `https://oauth2.googleapis.com/token` | where the service account's token comes from |
//! | `jwks_url` | `https://www.googleapis.com/service_accounts/v1/jwk/chat@system.gserviceaccount.com` | Google Chat's signing keys |
//! | `max_file_bytes` | 20 MiB | inbound files larger than this arrive without content |
//!
//! # Behaviour
//!
//! * Authenticity first: every request's `Authorization: Bearer` JWT is checked (RS256
//!   against the JWKS, cached a day and refreshed on an unknown key id; issuer
//!   `chat@system.gserviceaccount.com`; audience = `project_number`; expiry with 5 minutes
//!   of leeway) before the body is parsed. Anything else: 401, a log line, nothing stored.
//!   (The TypeScript original accepted unauthenticated requests; here there is no way to
//!   turn the check off.)
//! * Events: `MESSAGE` (and the message of `ADDED_TO_SPACE` when the app was added with a
//!   mention), `CARD_CLICKED` (buttons → host actions with the clicker's `users/…` id),
//!   `ADDED_TO_SPACE` / `REMOVED_FROM_SPACE` logged. Both the classic event shape and the
//!   Workspace add-on shape (`chat.messagePayload`, `chat.buttonClickedPayload`) are read.
//! * Ids: chats are spaces (`spaces/AAAA…`), users `users/<n>`, messages their resource
//!   names; in spaces (not DMs) the thread is the message's thread (`spaces/…/threads/…`).
//!   DMs and `USER_MENTION`s of the app count as mentions.
//! * Each message is handed over once (deduped by its name): Google's retry is answered
//!   200 and not repeated; when the host refuses, 503 so Google retries.
//! * Edits and deletions are not sent to an HTTP endpoint app (only through Workspace
//!   Events subscriptions); reactions and uploads need user authentication, which a
//!   service account acting as the app does not have: `REACTIONS` and `FILES` are not
//!   declared. No typing indicator exists for apps.
//! * Outbound: the agent's Markdown rendered to Chat's text format (`*bold*`, `_italic_`,
//!   `~strike~`, code), parts of at most 4,000 characters (the API takes 4,096), in the
//!   thread (`messageReplyOption=REPLY_MESSAGE_FALLBACK_TO_NEW_THREAD`); buttons as a cards
//!   v2 button list whose action carries the button id; edits with `messages.patch`.
//! * `open_dm`: `spaces:findDirectMessage`, else `spaces:setup` (a DM with the app).
//! * Files in: uploaded attachments through `media.download` (with the app's token).
//! * The service account's token (JWT-bearer grant, scope `chat.bot`) is cached until five
//!   minutes before it expires and renewed after a 401. Writes are paced per space (Chat
//!   allows about one per second) and overall; 429 is honoured with its `Retry-After`.

use std::sync::Arc;
use std::time::Duration;

use nanoclaw_plugin_api::kit::http::{ApiBase, ClientConfig, reqwest};
use nanoclaw_plugin_api::kit::inbound::{Dedupe, Inbox};
use nanoclaw_plugin_api::kit::prelude::*;
use nanoclaw_plugin_api::kit::webhook::{JwtVerifier, KeySource};
use nanoclaw_plugin_api::kit::{Rate, RateLimiter};
use serde::Deserialize;

mod auth;
mod inbound;
mod outbound;

/// Who signs the tokens Google Chat sends with every event.
pub const CHAT_ISSUER: &str = "chat@system.gserviceaccount.com";
pub const DEFAULT_API_BASE_URL: &str = "https://chat.googleapis.com/v1";
pub const DEFAULT_TOKEN_URL: &str = "https://oauth2.googleapis.com/token";
pub const DEFAULT_JWKS_URL: &str =
    "https://www.googleapis.com/service_accounts/v1/jwk/chat@system.gserviceaccount.com";
/// The scope a Chat app acting as itself needs.
pub const CHAT_SCOPE: &str = "https://www.googleapis.com/auth/chat.bot";
const DEFAULT_MAX_FILE_BYTES: u64 = 20 * 1024 * 1024;
const DEDUPE_TTL: Duration = Duration::from_secs(3 * 24 * 3600);
/// Largest event accepted.
pub const MAX_EVENT_BYTES: usize = 512 * 1024;
/// A part's text, at most (characters): the API takes 4,096.
pub const MAX_TEXT_CHARS: u32 = 4000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    credentials: Secret,
    project_number: String,
    #[serde(default = "default_base")]
    api_base_url: String,
    #[serde(default)]
    token_url: Option<String>,
    #[serde(default = "default_jwks")]
    jwks_url: String,
    #[serde(default = "default_max_file")]
    max_file_bytes: u64,
}

fn default_base() -> String {
    DEFAULT_API_BASE_URL.to_owned()
}

fn default_jwks() -> String {
    DEFAULT_JWKS_URL.to_owned()
}

fn default_max_file() -> u64 {
    DEFAULT_MAX_FILE_BYTES
}

/// What the webhook and the host-facing methods share.
pub(crate) struct Shared {
    pub(crate) life: Lifecycle,
    pub(crate) api: String,
    pub(crate) client: reqwest::Client,
    pub(crate) tokens: auth::TokenSource,
    pub(crate) inbox: Inbox,
    pub(crate) dedupe: Dedupe,
    pub(crate) max_file_bytes: u64,
    pub(crate) limiter: RateLimiter,
}

/// The channel as the host loads it.
pub type GchatChannel = Hosted<Gchat>;

/// One Google Chat app.
pub struct Gchat {
    shared: Arc<Shared>,
    verifier: JwtVerifier,
}

impl AsyncChannel for Gchat {
    const INFO: ChannelInfo = ChannelInfo::new("Google Chat", "gchat", env!("CARGO_PKG_VERSION"))
        .capabilities(
            Capabilities::OPEN_DM
                .with(Capabilities::EDIT)
                .with(Capabilities::BUTTONS)
                .with(Capabilities::THREADS)
                .with(Capabilities::WEBHOOK),
        )
        .markup(Markup::WhatsApp)
        .max_text_length(MAX_TEXT_CHARS)
        .text_unit(LengthUnit::Chars)
        .description("Google Chat (HTTP endpoint app; Chat API out with a service account)");

    fn create(ctx: Context, life: &Lifecycle) -> Result<Self, PluginError> {
        let settings: Settings = ctx.settings()?;
        let project = settings.project_number.trim().to_owned();
        if project.is_empty() || project.len() > 20 || !project.chars().all(|c| c.is_ascii_digit())
        {
            return Err(PluginError::config(
                "project_number must be the Google Cloud project number (digits, e.g. \
                 123456789012; not the project id)",
            ));
        }
        if settings.max_file_bytes == 0 {
            return Err(PluginError::config("max_file_bytes must be above 0"));
        }
        let key = auth::ServiceAccount::parse(&settings.credentials)?;
        let secrets = [&settings.credentials];
        let token_url = settings
            .token_url
            .clone()
            .or_else(|| key.token_uri.clone())
            .unwrap_or_else(|| DEFAULT_TOKEN_URL.to_owned());
        let token_url = ApiBase::parse("token_url", &token_url, &secrets)?;
        let api = ApiBase::parse("api_base_url", &settings.api_base_url, &secrets)?;
        let jwks = ApiBase::parse("jwks_url", &settings.jwks_url, &secrets)?;
        for base in [&token_url, &api, &jwks] {
            if base.is_plain_remote() {
                life.warn(format!(
                    "{} is plain http to another machine: tokens travel unencrypted",
                    base.as_str()
                ));
            }
        }
        life.add_secret(&settings.credentials);
        let client = ClientConfig::for_channel(&Self::INFO)
            .timeout(Some(Duration::from_secs(20)))
            .build()?;
        let verifier = JwtVerifier::new(
            client.clone(),
            KeySource::Jwks(jwks.as_str().to_owned()),
            CHAT_ISSUER,
            project,
        );
        let tokens = auth::TokenSource::new(client.clone(), token_url.as_str().to_owned(), key);
        Ok(Self {
            shared: Arc::new(Shared {
                life: life.clone(),
                api: api.as_str().trim_end_matches('/').to_owned(),
                client,
                tokens,
                inbox: Inbox::new(life),
                dedupe: Dedupe::new(life.host().clone(), "events", DEDUPE_TTL),
                max_file_bytes: settings.max_file_bytes,
                // Chat: about one write per second per space, 3,000 a minute per project.
                limiter: RateLimiter::new(
                    Some(Rate::per_second(50.0).burst(50)),
                    Some(Rate::per_second(1.0).burst(3)),
                ),
            }),
            verifier,
        })
    }

    async fn start(&self) -> Result<(), PluginError> {
        let shared = &self.shared;
        if let Err(e) = shared.tokens.token().await {
            if e.kind == ErrorKind::AUTH {
                let reason = format!(
                    "Google refused the service account: check GCHAT_CREDENTIALS (the JSON \
                     key of the Chat app's service account, on one line) ({e})"
                );
                shared.life.health().down(reason.clone());
                return Err(PluginError::auth(reason));
            }
            return Err(e);
        }
        shared.life.info(format!(
            "Google Chat app ready as {}: HTTP endpoint https://<your host>/webhook/<instance>",
            shared.tokens.client_email()
        ));
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
        let life = &self.shared.life;
        if request.method.as_str() != "POST" {
            return Ok(WebhookResponse::text(405, "method not allowed"));
        }
        // Google's token first: nothing unverified is parsed or stored.
        if let Err(e) = self.verifier.verify_request(&request).await {
            life.warn(format!("refused a webhook request: {e}"));
            return Ok(e.response());
        }
        if request.body.len() > MAX_EVENT_BYTES {
            life.warn(format!(
                "refused an event of {} bytes (at most {MAX_EVENT_BYTES})",
                request.body.len()
            ));
            return Ok(WebhookResponse::text(413, "too large"));
        }
        let event: serde_json::Value = match serde_json::from_slice(&request.body) {
            Ok(e) => e,
            Err(e) => return Ok(WebhookResponse::text(400, &format!("not an event: {e}"))),
        };
        life.health().ingested();
        Ok(self.shared.handle_event(&event).await)
    }

    async fn shutdown(&self) {
        self.shared.life.info("Google Chat channel stopped");
    }
}
