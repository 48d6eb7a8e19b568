//! NanoClaw channel plugin for Microsoft Teams: Bot Framework activities in over the host's
//! webhook, the Bot Connector REST API out.
//!
//! # Settings (`[plugins.teams.settings]` in plugins.toml)
//!
//! | key | default | |
//! |---|---|---|
//! | `app_id` | required | `{ env = "TEAMS_APP_ID" }`: the Microsoft App ID (a GUID) of the Azure Bot |
//! | `app_password` | required | `{ env = "TEAMS_APP_PASSWORD" }`: a client secret of that app registration |
//! | `tenant_id` | — | single-tenant bots: the Entra tenant; also the tenant of cold DMs |
//! | `token_url` | `https://login.microsoftonline.com/<tenant_id or botframework.com>/oauth2/v2.0/token` | where the client-credentials token comes from |
//! | `openid_config_url` | `https://login.botframework.com/v1/.well-known/openidconfiguration` | the Bot Framework's signing keys (via `jwks_uri`) |
//! | `default_service_url` | `https://smba.trafficmanager.net/teams/` | the Bot Connector for chats and DMs the bot has not heard from yet |
//! | `max_file_bytes` | 20 MiB | inbound files larger than this arrive without content |
//!
//! # Behaviour
//!
//! * Authenticity first: every request's `Authorization: Bearer` JWT is checked (RS256
//!   against the keys of the OpenID configuration, cached a day and refreshed when an
//!   unknown key id shows up; issuer `https://api.botframework.com`; audience = `app_id`;
//!   expiry and not-before with 5 minutes of leeway) before the body is parsed. The
//!   activity's `serviceUrl` must equal the token's `serviceurl` claim: a forged or replayed
//!   token cannot send the bot's own token to another address. Anything else: 401 and a log
//!   line, nothing stored.
//! * Inbound `message` activities in personal chats (DMs), group chats and channels. Chat id
//!   = the conversation id (`a:…` personal, `19:…@thread.v2` group chat,
//!   `19:…@thread.tacv2` channel, without `;messageid=`); user = the Teams user id `29:…`
//!   (the AAD object id is in `extra_json.aad_object_id`). In channels each top-level post
//!   is its own thread (the reply goes under it), replies carry the root's id as thread.
//!   DMs and `<at>` mentions of the bot count as mentions; `<at>Name</at>` becomes `@Name`.
//! * `messageUpdate` (`editMessage`) becomes a new message `<id>:edit:<timestamp>` with
//!   `extra_json.edit_of`; `messageDelete` (`softDeleteMessage`) goes to the host as a
//!   deletion of that message (once).
//! * Card button clicks (Adaptive Card `Action.Submit`, which Teams sends as a `message`
//!   activity with a `value`, or `Action.Execute` as an `adaptiveCard/action` invoke) go to
//!   the host as actions with the clicker's Teams user id.
//! * Every activity is handed over once (deduped by conversation and activity id in the
//!   host's state store): a redelivery is answered 200 and not repeated; when the host
//!   refuses, 503 so the Bot Framework retries.
//! * Files in: Teams' `file.download.info` (a pre-authorised download URL, fetched without
//!   credentials) and inline images under the activity's service URL (fetched with the bot
//!   token); up to `max_file_bytes`.
//! * Outbound: Teams Markdown (the kit's renderer), parts of at most 20,000 bytes (Teams
//!   refuses messages above about 28 KB), sent as `textFormat: markdown`; buttons as an
//!   Adaptive Card with `Action.Submit`; edits with `PUT …/activities/<id>`; a typing
//!   activity; images as inline attachments (data URIs). Bots cannot react to messages
//!   through the Bot Framework, so `REACTIONS` is not declared; other files need the
//!   file-consent flow (personal chats only) or SharePoint and are refused as unsupported.
//! * `open_dm` creates (or gets back) the 1:1 conversation with `POST /v3/conversations`,
//!   with the tenant and service URL learnt from the user's messages (or `tenant_id` and
//!   `default_service_url`).
//! * The client-credentials token is cached until five minutes before it expires, and
//!   dropped when the Bot Connector answers 401. Sends are paced per conversation (Teams
//!   allows about 7 per second and 60 per 30 s per thread) and overall; 429 is honoured
//!   with its `Retry-After`.

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

/// The issuer of the tokens the Bot Framework sends with every activity.
pub const BOT_FRAMEWORK_ISSUER: &str = "https://api.botframework.com";
/// Where the Bot Framework publishes its signing keys.
pub const DEFAULT_OPENID_CONFIG_URL: &str =
    "https://login.botframework.com/v1/.well-known/openidconfiguration";
/// The Bot Connector for Teams when the bot has not heard from a chat yet.
pub const DEFAULT_SERVICE_URL: &str = "https://smba.trafficmanager.net/teams/";
/// The scope of the client-credentials token for the Bot Connector.
pub const BOT_SCOPE: &str = "https://api.botframework.com/.default";
const DEFAULT_MAX_FILE_BYTES: u64 = 20 * 1024 * 1024;
/// Activity ids are remembered well beyond any redelivery.
const DEDUPE_TTL: Duration = Duration::from_secs(3 * 24 * 3600);
/// Largest activity accepted (Teams' own messages are capped at about 28 KB; cards and
/// entities add some).
pub const MAX_ACTIVITY_BYTES: usize = 256 * 1024;
/// A part's text, at most (bytes): Teams refuses messages above about 28 KB.
pub const MAX_TEXT_BYTES: u32 = 20_000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    app_id: String,
    app_password: Secret,
    #[serde(default)]
    tenant_id: Option<String>,
    #[serde(default)]
    token_url: Option<String>,
    #[serde(default = "default_openid")]
    openid_config_url: String,
    #[serde(default = "default_service_url")]
    default_service_url: String,
    #[serde(default = "default_max_file")]
    max_file_bytes: u64,
}

fn default_openid() -> String {
    DEFAULT_OPENID_CONFIG_URL.to_owned()
}

fn default_service_url() -> String {
    DEFAULT_SERVICE_URL.to_owned()
}

fn default_max_file() -> u64 {
    DEFAULT_MAX_FILE_BYTES
}

/// A GUID as Entra ids are written: `8-4-4-4-12` hex digits.
fn is_guid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.chars().all(|c| c.is_ascii_hexdigit()))
}

/// What the webhook and the host-facing methods share.
pub(crate) struct Shared {
    pub(crate) life: Lifecycle,
    pub(crate) app_id: String,
    pub(crate) tenant_id: Option<String>,
    pub(crate) client: reqwest::Client,
    pub(crate) tokens: auth::TokenSource,
    pub(crate) inbox: Inbox,
    pub(crate) dedupe: Dedupe,
    pub(crate) default_service_url: String,
    pub(crate) max_file_bytes: u64,
    pub(crate) limiter: RateLimiter,
}

impl Shared {
    /// The bot's id in conversations: `28:<app id>`.
    pub(crate) fn bot_id(&self) -> String {
        format!("28:{}", self.app_id)
    }
}

/// The channel as the host loads it.
pub type TeamsChannel = Hosted<Teams>;

/// One Azure Bot in Teams.
pub struct Teams {
    shared: Arc<Shared>,
    verifier: JwtVerifier,
}

impl AsyncChannel for Teams {
    const INFO: ChannelInfo =
        ChannelInfo::new("Microsoft Teams", "teams", env!("CARGO_PKG_VERSION"))
            .capabilities(
                Capabilities::OPEN_DM
                    .with(Capabilities::EDIT)
                    .with(Capabilities::TYPING)
                    .with(Capabilities::FILES)
                    .with(Capabilities::BUTTONS)
                    .with(Capabilities::THREADS)
                    .with(Capabilities::WEBHOOK),
            )
            .markup(Markup::TeamsMarkdown)
            .max_text_length(MAX_TEXT_BYTES)
            .text_unit(LengthUnit::Bytes)
            .description("Microsoft Teams (Bot Framework webhook; Bot Connector out)");

    fn create(ctx: Context, life: &Lifecycle) -> Result<Self, PluginError> {
        let settings: Settings = ctx.settings()?;
        let app_id = settings.app_id.trim().to_ascii_lowercase();
        if !is_guid(&app_id) {
            return Err(PluginError::config(
                "app_id must be the bot's Microsoft App ID (a GUID such as \
                 00000000-0000-0000-0000-000000000000)",
            ));
        }
        if settings.app_password.expose().trim().is_empty() {
            return Err(PluginError::config("app_password is empty"));
        }
        let tenant_id = match settings.tenant_id.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(t) if is_guid(t) || t.contains('.') => Some(t.to_owned()),
            Some(_) => {
                return Err(PluginError::config(
                    "tenant_id must be the tenant's GUID (or its domain)",
                ));
            }
        };
        if settings.max_file_bytes == 0 {
            return Err(PluginError::config("max_file_bytes must be above 0"));
        }
        let secrets = [&settings.app_password];
        let token_url = settings.token_url.clone().unwrap_or_else(|| {
            format!(
                "https://login.microsoftonline.com/{}/oauth2/v2.0/token",
                tenant_id.as_deref().unwrap_or("botframework.com")
            )
        });
        let token_url = ApiBase::parse("token_url", &token_url, &secrets)?;
        let openid = ApiBase::parse("openid_config_url", &settings.openid_config_url, &secrets)?;
        let service = ApiBase::parse(
            "default_service_url",
            &settings.default_service_url,
            &secrets,
        )?;
        for base in [&token_url, &openid, &service] {
            if base.is_plain_remote() {
                life.warn(format!(
                    "{} is plain http to another machine: tokens travel unencrypted",
                    base.as_str()
                ));
            }
        }
        life.add_secret(&settings.app_password);
        let client = ClientConfig::for_channel(&Self::INFO)
            .timeout(Some(Duration::from_secs(20)))
            .build()?;
        let verifier = JwtVerifier::new(
            client.clone(),
            KeySource::OpenIdConfiguration(openid.as_str().to_owned()),
            BOT_FRAMEWORK_ISSUER,
            app_id.clone(),
        );
        let tokens = auth::TokenSource::new(
            client.clone(),
            token_url.as_str().to_owned(),
            app_id.clone(),
            settings.app_password.clone(),
        );
        Ok(Self {
            shared: Arc::new(Shared {
                life: life.clone(),
                app_id,
                tenant_id,
                client,
                tokens,
                inbox: Inbox::new(life),
                dedupe: Dedupe::new(life.host().clone(), "activities", DEDUPE_TTL),
                default_service_url: with_slash(service.as_str()),
                max_file_bytes: settings.max_file_bytes,
                // Teams: about 7 messages a second and 60 per 30 s per conversation; the
                // Bot Connector overall about 50 a second per bot.
                limiter: RateLimiter::new(
                    Some(Rate::per_second(50.0).burst(50)),
                    Some(Rate::per_second(2.0).burst(7)),
                ),
            }),
            verifier,
        })
    }

    async fn start(&self) -> Result<(), PluginError> {
        // The credentials are checked now (and `nanoclaw doctor` sees the answer): a token
        // for the Bot Connector.
        let shared = &self.shared;
        if let Err(e) = shared.tokens.token().await {
            if e.kind == ErrorKind::AUTH {
                let reason = format!(
                    "Microsoft refused the app credentials: check TEAMS_APP_ID and \
                     TEAMS_APP_PASSWORD (a client secret of the app registration) ({e})"
                );
                shared.life.health().down(reason.clone());
                return Err(PluginError::auth(reason));
            }
            return Err(e);
        }
        shared.life.info(format!(
            "Teams bot {} ready: messaging endpoint https://<your host>/webhook/<instance>",
            shared.app_id
        ));
        Ok(())
    }

    async fn deliver(&self, part: OutboundMessage) -> Result<Option<String>, PluginError> {
        self.shared.deliver(&part).await
    }

    async fn set_typing(&self, chat_id: &str, thread_id: Option<&str>) {
        if let Err(e) = self.shared.typing(chat_id, thread_id).await {
            self.shared.life.debug(format!("typing in {chat_id}: {e}"));
        }
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
        // The bearer token first: nothing unverified is parsed or stored.
        let claims = match self.verifier.verify_request(&request).await {
            Ok(claims) => claims,
            Err(e) => {
                life.warn(format!("refused a webhook request: {e}"));
                return Ok(e.response());
            }
        };
        if request.body.len() > MAX_ACTIVITY_BYTES {
            life.warn(format!(
                "refused an activity of {} bytes (at most {MAX_ACTIVITY_BYTES})",
                request.body.len()
            ));
            return Ok(WebhookResponse::text(413, "too large"));
        }
        let activity: inbound::Activity = match serde_json::from_slice(&request.body) {
            Ok(a) => a,
            Err(e) => return Ok(WebhookResponse::text(400, &format!("not an activity: {e}"))),
        };
        // The service URL the replies (and the bot's token) go to must be the one the
        // Bot Framework signed.
        let signed = claims
            .get("serviceurl")
            .and_then(serde_json::Value::as_str)
            .unwrap_or_default();
        if !inbound::same_service_url(signed, &activity.service_url) {
            life.warn(format!(
                "refused an activity whose serviceUrl is not the token's (`{}` vs `{signed}`)",
                activity.service_url
            ));
            return Ok(WebhookResponse::text(401, "invalid signature"));
        }
        life.health().ingested();
        Ok(self.shared.handle_activity(activity).await)
    }

    async fn shutdown(&self) {
        self.shared.life.info("Teams channel stopped");
    }
}

/// `url` with exactly one trailing slash.
pub(crate) fn with_slash(url: &str) -> String {
    format!("{}/", url.trim_end_matches('/'))
}
