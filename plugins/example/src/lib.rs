//! Example NanoClaw channel plugin: the one to copy when writing your own.
//!
//! It connects NanoClaw to *Example*, an imaginary chat platform shaped like the real ones:
//! a REST API with a bearer token, and signed webhooks for what users do. Everything that
//! is not that API comes from the plugin kit (`nanoclaw_plugin_api::kit`): the async
//! lifecycle ([`Hosted`]), settings and [`Secret`]s, webhook signatures, the hand-over to
//! the host with dedupe, rendering and splitting, HTTP error classification and rate limits.
//!
//! # The Example platform
//!
//! * Every API call carries `Authorization: Bearer <api_token>`.
//! * `GET /v1/me` → `{"id": "b1", "name": "Claw"}`: the bot's own account.
//! * `POST /v1/chats/{chat}/messages` with `{"text", "buttons"?: [{"id", "label"}],
//!   "reply_to"?}` → `{"id": "m2"}`. Text: at most 2000 characters, in the Markdown subset
//!   most chat apps show (bold, italic, strikethrough, lists, code, quotes, links; no
//!   headings or tables). A repeated `Idempotency-Key` returns the first message again
//!   instead of posting a second.
//! * `PATCH /v1/chats/{chat}/messages/{id}` with `{"text"}` edits a message;
//!   `POST /v1/chats/{chat}/messages/{id}/reactions` with `{"emoji"}` reacts (an emoji or a
//!   name such as `thumbs_up`).
//! * Errors: `401`/`403` for a bad token, `429` with `Retry-After` over the rate limit,
//!   other `4xx` for a bad request, `5xx` when it is down.
//! * Webhooks: each event is POSTed to the URL registered with the platform (NanoClaw's
//!   `https://<host>/webhook/<instance>`), signed the Standard Webhooks (Svix) way:
//!   `webhook-id`, `webhook-timestamp`, and `webhook-signature: v1,<base64 HMAC-SHA256 of
//!   "<id>.<timestamp>.<body>">` under the `whsec_…` secret. Anything but a 2xx answer is
//!   redelivered later, with the same event.
//!
//!   ```json
//!   {"type": "message", "id": "m1", "chat": {"id": "c1", "is_group": false},
//!    "sender": {"id": "u1", "name": "Ann"}, "text": "hi", "mentioned": true}
//!   {"type": "button", "id": "e2", "chat": {"id": "c1"}, "sender": {"id": "u1"},
//!    "message_id": "m9", "action_id": "ncq:q1:0"}
//!   ```
//!
//! # Settings (`[plugins.<instance>.settings]` in plugins.toml)
//!
//! | key | | |
//! |---|---|---|
//! | `api_base_url` | required | the API root, e.g. `https://api.example.chat` (tests: a fake on 127.0.0.1) |
//! | `api_token` | required | `{ env = "EXAMPLE_API_TOKEN" }` |
//! | `webhook_secret` | required | `{ env = "EXAMPLE_WEBHOOK_SECRET" }`, `whsec_<base64>` as the platform shows it |
//! | `rate_per_sec` | `5` | outbound calls per second (bursts of as many) |
//!
//! Unknown keys are refused. `create` only checks them; `start` calls `GET /v1/me`.
//!
//! # Webhook answers
//!
//! `405` to anything but POST; `401` to a missing, wrong or stale signature (logged, never
//! with the secret); `400` to a signed body that is not an event; `503` when the host did not
//! take the event (the platform redelivers it); `200` once it is stored, for a redelivery of
//! an event already stored, and for event types this channel ignores.
//!
//! # Copying it
//!
//! Copy the directory and rename the crate `nanoclaw-plugin-<name>`; set `INFO`; replace
//! `api.rs` with your platform's calls, the `Event` types with its payloads, and the
//! verifier with its scheme (`kit::webhook` has Slack, Svix, Meta, Webex, Ed25519 and JWT);
//! then make the fake in `tests/api.rs` answer like your platform.

use std::time::Duration;

use nanoclaw_plugin_api::kit::http::ApiBase;
use nanoclaw_plugin_api::kit::inbound::{Dedupe, Inbox};
use nanoclaw_plugin_api::kit::prelude::*;
use nanoclaw_plugin_api::kit::prepare::reply_target;
use nanoclaw_plugin_api::kit::webhook::SvixVerifier;
use nanoclaw_plugin_api::kit::{Rate, RateLimiter};
use serde::Deserialize;

mod api;

use api::Api;

/// Outbound calls per second when `rate_per_sec` is not set.
const DEFAULT_RATE_PER_SEC: f64 = 5.0;
/// Longest a `deliver` waits for the rate limiter (a `Retry-After` included); longer goes
/// back to the host as `RATE_LIMITED`, which retries later.
const MAX_LIMITER_WAIT: Duration = Duration::from_secs(5);
/// How long event ids are remembered: longer than the platform keeps redelivering.
const DEDUPE_TTL: Duration = Duration::from_secs(3 * 24 * 3600);

/// Settings as the host passes them (JSON, `{ env = … }` already resolved).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    api_base_url: String,
    api_token: Secret,
    webhook_secret: Secret,
    #[serde(default = "default_rate")]
    rate_per_sec: f64,
}

fn default_rate() -> f64 {
    DEFAULT_RATE_PER_SEC
}

/// The channel as the host loads it: the kit's lifecycle around [`Example`].
pub type ExampleChannel = Hosted<Example>;

/// One Example bot account.
pub struct Example {
    life: Lifecycle,
    api: Api,
    verifier: SvixVerifier,
    limiter: RateLimiter,
    inbox: Inbox,
    dedupe: Dedupe,
}

impl AsyncChannel for Example {
    const INFO: ChannelInfo = ChannelInfo::new("Example", "example", env!("CARGO_PKG_VERSION"))
        // The host only calls what is declared here (no FILES: this channel uploads nothing).
        .capabilities(
            Capabilities::WEBHOOK
                .with(Capabilities::EDIT)
                .with(Capabilities::REACTIONS)
                .with(Capabilities::BUTTONS),
        )
        // The kit's default `render` turns the agent's Markdown into this markup and splits
        // it into parts of at most 2000 characters; buttons ride on the last part.
        .markup(Markup::TeamsMarkdown)
        .max_text_length(2000)
        .text_unit(LengthUnit::Chars)
        .description("Example chat platform: signed webhooks in, REST API out");

    // Check the settings, but don't connect: `nanoclaw plugins check` calls create only.
    fn create(ctx: Context, life: &Lifecycle) -> Result<Self, PluginError> {
        let settings: Settings = ctx.settings()?;
        let secrets = [&settings.api_token, &settings.webhook_secret];
        if settings.api_token.expose().trim().is_empty() {
            return Err(PluginError::config("api_token is empty"));
        }
        let key = settings.webhook_secret.expose().trim();
        let verifier = SvixVerifier::new(&settings.webhook_secret)
            .ok()
            .filter(|_| !key.trim_start_matches("whsec_").is_empty())
            .ok_or_else(|| {
                PluginError::config("webhook_secret must be the platform's whsec_<base64> secret")
            })?;
        let rate = settings.rate_per_sec;
        if !(rate > 0.0 && rate <= 1000.0) {
            return Err(PluginError::config(format!(
                "rate_per_sec must be above 0 and at most 1000, not {rate}"
            )));
        }
        let base = ApiBase::parse("api_base_url", &settings.api_base_url, &secrets)?;
        if base.is_plain_remote() {
            life.warn(format!(
                "api_base_url {} is plain http to another machine: the token travels unencrypted",
                base.as_str()
            ));
        }
        for secret in secrets {
            life.add_secret(secret);
        }
        Ok(Self {
            api: Api::new(&Self::INFO, &base, settings.api_token)?,
            verifier,
            limiter: RateLimiter::new(Some(Rate::per_second(rate)), None),
            inbox: Inbox::new(life),
            dedupe: Dedupe::new(life.host().clone(), "events", DEDUPE_TTL),
            life: life.clone(),
        })
    }

    // A refused token is AUTH (the operator must act; the host does not retry); a network
    // error is NETWORK, and the host retries start.
    async fn start(&self) -> Result<(), PluginError> {
        let me = self.api.me().await.map_err(|e| {
            if e.kind != ErrorKind::AUTH {
                return e;
            }
            let reason = format!(
                "Example refused api_token ({e}): it is wrong or was revoked; put the current \
                 token in the environment variable api_token names"
            );
            self.life.health().down(reason.clone());
            PluginError::auth(reason)
        })?;
        self.life
            .info(format!("connected to Example as {} ({})", me.name, me.id));
        Ok(())
    }

    // One part made by `render`, sent exactly as it is.
    async fn deliver(&self, part: OutboundMessage) -> Result<Option<String>, PluginError> {
        if !part.files.is_empty() {
            return Err(PluginError::unsupported("files"));
        }
        let chat = part.chat_id.as_str();
        if let Err(wait) = self.limiter.acquire_within(chat, MAX_LIMITER_WAIT).await {
            let ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
            return Err(PluginError::rate_limited(
                "Example asked to slow down",
                Some(ms),
            ));
        }
        let key = idempotency_key(&part);
        let key = key.as_deref();
        let target = || {
            reply_target(&part).ok_or_else(|| {
                PluginError::invalid_input(format!("{} without target_message_id", part.op))
            })
        };
        let result = match part.op {
            OutboundOp::SEND => self.api.post_message(chat, &part, key).await.map(Some),
            OutboundOp::EDIT => {
                let id = target()?;
                let edited = self
                    .api
                    .edit_message(chat, id, part.text.as_str(), key)
                    .await;
                edited.map(|()| Some(id.to_owned()))
            }
            OutboundOp::REACT => {
                let emoji = part.reaction.as_str().trim();
                if emoji.is_empty() {
                    return Err(PluginError::invalid_input("react without a reaction"));
                }
                self.api
                    .react(chat, target()?, emoji, key)
                    .await
                    .map(|()| None)
            }
            other => Err(PluginError::unsupported(format_args!("operation {other}"))),
        };
        if let Err(error) = &result {
            // A 429 holds every later call back for its Retry-After: the limit is per token.
            self.limiter.note(None, error);
        }
        result
    }

    async fn handle_webhook(
        &self,
        request: WebhookRequest,
    ) -> Result<WebhookResponse, PluginError> {
        if request.method.as_str() != "POST" {
            return Ok(WebhookResponse::text(405, "method not allowed"));
        }
        // The signature first, over the exact bytes received: nothing unverified is parsed.
        if let Err(e) = self.verifier.verify(&request) {
            // The error says what was wrong (header, signature, clock), never the secret.
            self.life.warn(format!("refused a webhook request: {e}"));
            return Ok(e.response());
        }
        self.life.health().ingested();
        let event: Event = match serde_json::from_slice(&request.body) {
            Ok(event) => event,
            Err(e) => return Ok(WebhookResponse::text(400, &format!("not an event: {e}"))),
        };
        // One attempt each; the platform's redelivery is the retry, and the event id keeps
        // a redelivery of a stored event from becoming a second message.
        let offered = match event {
            Event::Message(m) => {
                let id = m.id.clone();
                let event = m.into_inbound();
                self.inbox
                    .offer_once(&self.dedupe, &id, move |host| host.on_inbound(event))
                    .await
            }
            Event::Button(b) => {
                let id = b.id.clone();
                let event = b.into_action();
                self.inbox
                    .offer_once(&self.dedupe, &id, move |host| host.on_action(event))
                    .await
            }
            Event::Other => {
                self.life
                    .debug("ignoring an event type this channel does not handle");
                return Ok(received());
            }
        };
        Ok(match offered {
            Ok(offered) if !offered.redeliver() => received(),
            // Refused, in progress elsewhere, or stopping: the platform tries again later.
            _ => WebhookResponse::text(503, "try again later"),
        })
    }
}

nanoclaw_plugin_api::export_plugin!(ExampleChannel);

fn received() -> WebhookResponse {
    WebhookResponse::json(200, r#"{"ok":true}"#)
}

/// The key the host gives each part (the same on a re-send after a crash), so the platform
/// can drop a repeated post.
fn idempotency_key(part: &OutboundMessage) -> Option<String> {
    let extra: serde_json::Value = serde_json::from_str(part.extra_json.as_str()).ok()?;
    extra.get("idempotency_key")?.as_str().map(str::to_owned)
}

/// An event the platform POSTs to the webhook.
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Event {
    /// A user wrote something.
    Message(MessageEvent),
    /// A user clicked a button of a message the bot sent.
    Button(ButtonEvent),
    /// Anything else (joins, reactions…): acknowledged and ignored.
    #[serde(other)]
    Other,
}

/// A chat, as events name it.
#[derive(Deserialize)]
struct Chat {
    id: String,
    #[serde(default)]
    is_group: bool,
    #[serde(default)]
    name: Option<String>,
}

/// A user, as events name them.
#[derive(Deserialize)]
struct User {
    id: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    is_bot: bool,
}

impl User {
    fn into_sender(self) -> Sender {
        Sender {
            handle: self.id.into(),
            display_name: self.name.map(RString::from).into(),
            is_bot: self.is_bot,
        }
    }
}

/// `"type": "message"`.
#[derive(Deserialize)]
struct MessageEvent {
    id: String,
    chat: Chat,
    sender: User,
    #[serde(default)]
    text: String,
    #[serde(default)]
    mentioned: bool,
}

impl MessageEvent {
    fn into_inbound(self) -> InboundEvent {
        InboundEvent {
            // Raw platform ids: the host prefixes them with the instance name.
            chat_id: self.chat.id.into(),
            chat_name: self.chat.name.map(RString::from).into(),
            message_id: self.id.into(),
            sender: RSome(self.sender.into_sender()),
            is_group: self.chat.is_group,
            // A DM always counts as a mention.
            mentioned: self.mentioned || !self.chat.is_group,
            text: self.text.into(),
            ..InboundEvent::default()
        }
    }
}

/// `"type": "button"`.
#[derive(Deserialize)]
struct ButtonEvent {
    id: String,
    chat: Chat,
    sender: User,
    message_id: String,
    action_id: String,
}

impl ButtonEvent {
    fn into_action(self) -> ActionEvent {
        ActionEvent {
            chat_id: self.chat.id.into(),
            message_id: self.message_id.into(),
            clicker: self.sender.into_sender(),
            action_id: self.action_id.into(),
            ..ActionEvent::default()
        }
    }
}

#[cfg(test)]
mod tests;
