//! NanoClaw channel plugin for email through Resend: `email.received` webhooks in (Svix
//! signatures), threaded replies out with `POST /emails`.
//!
//! # Settings (`[plugins.resend.settings]` in plugins.toml)
//!
//! | key | default | |
//! |---|---|---|
//! | `api_key` | required | `{ env = "RESEND_API_KEY" }`, a full-access key `re_…` (receiving needs it) |
//! | `webhook_secret` | required | `{ env = "RESEND_WEBHOOK_SECRET" }`, the webhook's signing secret `whsec_…` |
//! | `from_address` | required | the bot's address, on a domain verified in Resend (sending and receiving) |
//! | `from_name` | `NanoClaw` | the display name on the bot's emails |
//! | `new_thread_subject` | `Message from <from_name>` | the subject of an email that starts a thread (approvals, notices) |
//! | `api_base_url` | `https://api.resend.com` | the API root (tests: a fake on 127.0.0.1) |
//! | `attachment_hosts` | `["https://inbound-cdn.resend.com"]` | origins attachment downloads may come from |
//! | `max_file_bytes` | 20 MiB | inbound attachments larger than this arrive without content |
//! | `send_per_sec` | `2` | API calls per second (Resend's default team limit) |
//! | `sender_auth` | `dmarc` | `dmarc`: only emails whose receiving server found DMARC passing for the From domain are taken; `off`: From is believed as written (spoofable) |
//! | `auth_server_id` | — | with `dmarc`: only `Authentication-Results` stamped by this server count (e.g. `amazonses.com`) |
//!
//! # Behaviour
//!
//! * Webhooks arrive on the host's server at `/webhook/<instance>`. The Svix signature
//!   (`svix-id`, `svix-timestamp`, `svix-signature`, 5-minute window) is checked over the
//!   exact body before anything is parsed; a failure is 401 and a log line. A request seen
//!   before (same `svix-id` and timestamp: a replay, not Svix's retry, which is signed
//!   afresh) is 401 too.
//! * `email.received` only (other event types: 200, ignored). The webhook carries metadata;
//!   the email (bodies, headers) is fetched with `GET /emails/receiving/{id}` and each
//!   attachment's signed `download_url` with `GET /emails/receiving/{id}/attachments/{id}`,
//!   downloaded without the API key, from `attachment_hosts` only, up to `max_file_bytes`.
//! * The sender's address, lower-cased, is both the chat and the user (email is one to one;
//!   every email counts as a mention). The thread is the email thread: the root of
//!   `References` (else `In-Reply-To`, else the email's own Message-ID), without brackets.
//!   The text part is preferred; an HTML-only email is converted to text (tags dropped,
//!   never interpreted); the quoted history under a reply is trimmed. The subject, the
//!   Message-ID and Resend's email id are in `extra_json`.
//! * Ignored with a log line: the bot's own address (loops), automatic replies
//!   (`Auto-Submitted`), and with `sender_auth = dmarc`, senders whose DMARC did not pass.
//! * Every email is handed to the host once (deduped by Resend's email id, so Svix's retries
//!   are one message); when the host refuses, the answer is 503 and Svix retries.
//! * Outbound: the agent's Markdown as an HTML body plus a text part (the kit's email
//!   renderer), `Re: <subject>` with `In-Reply-To` and `References` so clients thread it;
//!   without a known thread, a new email with `new_thread_subject`. Files as attachments
//!   (40 MB per email). The host's idempotency key is sent as `Idempotency-Key`, so a re-send
//!   after a crash is not a second email. No edits, reactions, typing or buttons: email has
//!   none (question cards arrive as text with their options; approvals are answered with
//!   `nanoclaw approvals`, or by an approver reachable on another channel).
//! * Deletions: Resend sends no event for them.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use nanoclaw_plugin_api::kit::http::reqwest::{Method, Url};
use nanoclaw_plugin_api::kit::http::{ApiBase, multipart::safe_file_name};
use nanoclaw_plugin_api::kit::inbound::{Dedupe, Inbox};
use nanoclaw_plugin_api::kit::prelude::*;
use nanoclaw_plugin_api::kit::prepare::{plain_text_of, reply_target};
use nanoclaw_plugin_api::kit::webhook::SvixVerifier;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

mod api;
mod mail;

use api::{Api, AttachmentLink, AttachmentMeta, Domains, ReceivedEmail, SentId, is_resend_id};
use mail::SenderAuth;

/// The default API root.
pub const DEFAULT_API_BASE_URL: &str = "https://api.resend.com";
/// Where Resend serves received attachments from.
pub const DEFAULT_ATTACHMENT_HOST: &str = "https://inbound-cdn.resend.com";
const DEFAULT_MAX_FILE_BYTES: u64 = 20 * 1024 * 1024;
/// Resend's limit for one email, attachments included.
pub const MAX_EMAIL_BYTES: usize = 40 * 1024 * 1024;
/// Text per email part. Email has no real limit; this keeps one email readable and the
/// parts of a very long answer in order.
pub const MAX_PART_CHARS: u32 = 20_000;
/// Svix retries for about a day and a half; ids are remembered longer.
const DEDUPE_TTL: Duration = Duration::from_secs(3 * 24 * 3600);
/// How long a seen (id, timestamp) pair is refused: longer than the replay window.
const REPLAY_TTL: Duration = Duration::from_secs(15 * 60);
/// Thread state (subject, Message-IDs) is kept this long after the last email.
const THREAD_TTL: Duration = Duration::from_secs(90 * 24 * 3600);
/// Webhook bodies are metadata: small.
const MAX_WEBHOOK_BYTES: usize = 1024 * 1024;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    api_key: Secret,
    webhook_secret: Secret,
    from_address: String,
    #[serde(default)]
    from_name: Option<String>,
    #[serde(default)]
    new_thread_subject: Option<String>,
    #[serde(default = "default_base")]
    api_base_url: String,
    #[serde(default)]
    attachment_hosts: Option<Vec<String>>,
    #[serde(default = "default_max_file")]
    max_file_bytes: u64,
    #[serde(default = "default_rate")]
    send_per_sec: f64,
    #[serde(default)]
    sender_auth: Option<String>,
    #[serde(default)]
    auth_server_id: Option<String>,
}

fn default_base() -> String {
    DEFAULT_API_BASE_URL.to_owned()
}

fn default_max_file() -> u64 {
    DEFAULT_MAX_FILE_BYTES
}

fn default_rate() -> f64 {
    2.0
}

/// What the plugin remembers of an email thread (host state store, per correspondent).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
struct ThreadState {
    /// The subject of the thread's first email seen.
    subject: String,
    /// Message-IDs, root first, then the latest (at most [`mail::MAX_REFERENCES`]).
    references: Vec<String>,
}

impl ThreadState {
    fn add(&mut self, id: &str) {
        if id.is_empty() || self.references.iter().any(|r| r == id) {
            return;
        }
        self.references.push(id.to_owned());
        if self.references.len() > mail::MAX_REFERENCES {
            // Keep the root; drop the oldest after it.
            self.references.remove(1);
        }
    }
}

fn thread_key(chat: &str, thread: &str) -> String {
    format!("thread:{chat}:{thread}")
}

fn email_key(email_id: &str) -> String {
    format!("email:{email_id}")
}

/// The channel as the host loads it.
pub type ResendChannel = Hosted<Resend>;

/// One Resend account with one bot address.
pub struct Resend {
    life: Lifecycle,
    api: Api,
    inbox: Inbox,
    dedupe: Dedupe,
    verifier: SvixVerifier,
    from_address: String,
    from_header: String,
    new_subject: String,
    attachment_hosts: Vec<Url>,
    max_file_bytes: u64,
    check_dmarc: bool,
    auth_server_id: Option<String>,
}

impl AsyncChannel for Resend {
    const INFO: ChannelInfo =
        ChannelInfo::new("Resend (email)", "resend", env!("CARGO_PKG_VERSION"))
            .capabilities(
                Capabilities::FILES
                    .with(Capabilities::THREADS)
                    .with(Capabilities::WEBHOOK),
            )
            .markup(Markup::EmailHtml)
            .max_text_length(MAX_PART_CHARS)
            .text_unit(LengthUnit::Chars)
            .description("Email through Resend (inbound webhooks, threaded replies)");

    fn create(ctx: Context, life: &Lifecycle) -> Result<Self, PluginError> {
        let settings: Settings = ctx.settings()?;
        let key = settings.api_key.expose().trim();
        if !key.starts_with("re_") || key.len() < 12 {
            return Err(PluginError::config(
                "api_key must be a Resend API key starting with re_",
            ));
        }
        let verifier = SvixVerifier::new(&settings.webhook_secret).map_err(|_| {
            PluginError::config("webhook_secret must be the webhook's signing secret, whsec_…")
        })?;
        let from_address = settings.from_address.trim().to_ascii_lowercase();
        if !mail::is_address(&from_address) {
            return Err(PluginError::config(format!(
                "from_address `{}` is not an email address",
                settings.from_address
            )));
        }
        let from_name = settings
            .from_name
            .as_deref()
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .unwrap_or("NanoClaw")
            .to_owned();
        if from_name
            .chars()
            .any(|c| c.is_control() || matches!(c, '<' | '>' | '"'))
        {
            return Err(PluginError::config(
                "from_name must not hold control characters, quotes or angle brackets",
            ));
        }
        let new_subject = mail::clean_subject(
            settings
                .new_thread_subject
                .as_deref()
                .unwrap_or(&format!("Message from {from_name}")),
        );
        if new_subject.is_empty() {
            return Err(PluginError::config("new_thread_subject is empty"));
        }
        let rate = settings.send_per_sec;
        if !(rate > 0.0 && rate <= 100.0) {
            return Err(PluginError::config(format!(
                "send_per_sec must be above 0 and at most 100, not {rate}"
            )));
        }
        if settings.max_file_bytes == 0 {
            return Err(PluginError::config("max_file_bytes must be above 0"));
        }
        let check_dmarc = match settings.sender_auth.as_deref() {
            None | Some("dmarc") => true,
            Some("off") => false,
            Some(other) => {
                return Err(PluginError::config(format!(
                    "sender_auth must be dmarc or off, not `{other}`"
                )));
            }
        };
        let secrets = [&settings.api_key, &settings.webhook_secret];
        let base = ApiBase::parse("api_base_url", &settings.api_base_url, &secrets)?;
        if base.is_plain_remote() {
            life.warn(format!(
                "api_base_url {} is plain http to another machine: the API key travels unencrypted",
                base.as_str()
            ));
        }
        let hosts = settings
            .attachment_hosts
            .clone()
            .unwrap_or_else(|| vec![DEFAULT_ATTACHMENT_HOST.to_owned()]);
        let attachment_hosts = hosts
            .iter()
            .map(|h| {
                Url::parse(h)
                    .ok()
                    .filter(|u| matches!(u.scheme(), "https" | "http") && u.host_str().is_some())
                    .ok_or_else(|| {
                        PluginError::config(format!(
                            "attachment_hosts: `{h}` is not an http(s) origin"
                        ))
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        for secret in secrets {
            life.add_secret(secret);
        }
        if !check_dmarc {
            life.warn(
                "sender_auth = off: the From address of an email is believed as written; \
                 anyone can claim to be an owner by email",
            );
        }
        let api = Api::new(&Self::INFO, &base, settings.api_key.clone(), rate)?;
        Ok(Self {
            life: life.clone(),
            api,
            inbox: Inbox::new(life),
            dedupe: Dedupe::new(life.host().clone(), "emails", DEDUPE_TTL),
            verifier,
            from_header: format!("{from_name} <{from_address}>"),
            from_address,
            new_subject,
            attachment_hosts,
            max_file_bytes: settings.max_file_bytes,
            check_dmarc,
            auth_server_id: settings
                .auth_server_id
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty()),
        })
    }

    async fn start(&self) -> Result<(), PluginError> {
        let domains: Domains = self
            .api
            .call(Method::GET, "/domains", None, None)
            .await
            .map_err(|e| {
                if e.kind == ErrorKind::AUTH {
                    let reason = format!(
                        "Resend refused the API key ({e}): check RESEND_API_KEY (a full-access \
                         key; receiving needs one)"
                    );
                    self.life.health().down(reason.clone());
                    PluginError::auth(reason)
                } else {
                    e
                }
            })?;
        let domain = mail::domain_of(&self.from_address);
        match domains
            .data
            .iter()
            .find(|d| d.name.eq_ignore_ascii_case(domain))
        {
            Some(d) if d.status == "verified" => self.life.info(format!(
                "Resend ready: sending as {} (domain {domain} verified)",
                self.from_header
            )),
            Some(d) => {
                let reason = format!(
                    "the domain {domain} of from_address is {} in Resend, not verified: \
                     emails will be refused",
                    d.status
                );
                self.life.warn(&reason);
                self.life.health().degraded(reason);
            }
            None => {
                let reason = format!(
                    "the domain {domain} of from_address is not in this Resend account: \
                     emails will be refused"
                );
                self.life.warn(&reason);
                self.life.health().degraded(reason);
            }
        }
        Ok(())
    }

    async fn deliver(&self, part: OutboundMessage) -> Result<Option<String>, PluginError> {
        if part.op != OutboundOp::SEND {
            return Err(PluginError::unsupported("editing or reacting to an email"));
        }
        self.send(&part).await.map(Some)
    }

    async fn handle_webhook(
        &self,
        request: WebhookRequest,
    ) -> Result<WebhookResponse, PluginError> {
        if request.method.as_str() != "POST" {
            return Ok(WebhookResponse::text(405, "method not allowed"));
        }
        // The signature and its timestamp first, over the exact bytes: nothing unverified
        // is parsed or stored.
        if let Err(e) = self.verifier.verify(&request) {
            self.life.warn(format!("refused a webhook request: {e}"));
            return Ok(e.response());
        }
        // Verified: the headers are present. A second request with the same id and
        // timestamp is a replay (Svix signs each retry afresh).
        let seen = format!(
            "svix:{}:{}",
            request
                .header("svix-id")
                .or(request.header("webhook-id"))
                .unwrap_or(""),
            request
                .header("svix-timestamp")
                .or(request.header("webhook-timestamp"))
                .unwrap_or("")
        );
        let ttl = Some(u64::try_from(REPLAY_TTL.as_millis()).unwrap_or(u64::MAX));
        let fresh = self
            .life
            .host_call(move |host| host.kv_set_if_absent(&seen, "1", ttl))
            .await;
        match fresh {
            Ok(Ok(true)) => {}
            Ok(Ok(false)) => {
                self.life
                    .warn("refused a webhook request: replayed (already seen)");
                return Ok(WebhookResponse::text(401, "invalid signature"));
            }
            Ok(Err(e)) => {
                self.life
                    .warn(format!("replay store unavailable ({e}); try again later"));
                return Ok(WebhookResponse::text(503, "try again later"));
            }
            Err(_) => return Ok(WebhookResponse::text(503, "shutting down")),
        }
        self.life.health().ingested();
        if request.body.len() > MAX_WEBHOOK_BYTES {
            return Ok(WebhookResponse::text(413, "too large"));
        }
        let event: WebhookEvent = match serde_json::from_slice(&request.body) {
            Ok(event) => event,
            Err(e) => return Ok(WebhookResponse::text(400, &format!("not an event: {e}"))),
        };
        if event.kind != "email.received" {
            self.life.debug(format!("ignoring a {} event", event.kind));
            return Ok(WebhookResponse::text(200, ""));
        }
        let Some(data) = event.data else {
            return Ok(WebhookResponse::text(400, "email.received without data"));
        };
        if !is_resend_id(&data.email_id) {
            return Ok(WebhookResponse::text(400, "bad email_id"));
        }
        Ok(self.receive(data).await)
    }

    async fn shutdown(&self) {
        self.life.info("Resend channel stopped");
    }
}

/// The envelope of every webhook.
#[derive(Deserialize)]
struct WebhookEvent {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    data: Option<ReceivedData>,
}

/// `email.received`'s data: metadata only.
#[derive(Deserialize)]
struct ReceivedData {
    email_id: String,
    #[serde(default)]
    attachments: Vec<AttachmentMeta>,
}

impl Resend {
    /// Fetches the email, builds the event, hands it over once; the webhook's answer.
    async fn receive(&self, data: ReceivedData) -> WebhookResponse {
        let path = format!("/emails/receiving/{}", data.email_id);
        let email: ReceivedEmail = match self.api.call(Method::GET, &path, None, None).await {
            Ok(email) => email,
            Err(e) if e.kind == ErrorKind::NOT_FOUND => {
                self.life.warn(format!(
                    "email {} is not in Resend (deleted?); skipped",
                    data.email_id
                ));
                return WebhookResponse::text(200, "");
            }
            Err(e) => {
                self.life.warn(format!(
                    "could not fetch email {}: {e}; Resend will retry",
                    data.email_id
                ));
                return WebhookResponse::text(503, "try again later");
            }
        };
        let (event, thread, own) = match self.to_event(&data, &email).await {
            Ok(built) => built,
            Err(why) => {
                self.life
                    .info(format!("ignoring email {}: {why}", data.email_id));
                return WebhookResponse::text(200, "");
            }
        };
        // Thread state first (idempotent), so a reply the agent sends finds it.
        let chat = event.chat_id.to_string();
        let thread_id = event.thread_id.clone().into_option().map(|t| t.to_string());
        let email_id = email.id.clone();
        let message_id = own;
        let stored = self
            .life
            .host_call(move |host| {
                let ttl = Some(u64::try_from(THREAD_TTL.as_millis()).unwrap_or(u64::MAX));
                if let Some(t) = &thread_id {
                    let key = thread_key(&chat, t);
                    let mut state = host
                        .kv_get(&key)?
                        .and_then(|s| serde_json::from_str::<ThreadState>(&s).ok())
                        .unwrap_or_default();
                    if state.subject.is_empty() {
                        state.subject = thread.subject.clone();
                    }
                    for id in &thread.references {
                        state.add(id);
                    }
                    let value = serde_json::to_string(&state).unwrap_or_default();
                    host.kv_set(&key, &value, ttl)?;
                }
                host.kv_set(&email_key(&email_id), &message_id, ttl)
            })
            .await;
        match stored {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                self.life
                    .warn(format!("could not store the thread of an email: {e}"));
                return WebhookResponse::text(503, "try again later");
            }
            Err(_) => return WebhookResponse::text(503, "shutting down"),
        }
        let key = format!("email:{}", email.id);
        match self
            .inbox
            .offer_once(&self.dedupe, &key, move |host| host.on_inbound(event))
            .await
        {
            Ok(offered) if !offered.redeliver() => WebhookResponse::text(200, ""),
            _ => WebhookResponse::text(503, "try again later"),
        }
    }

    /// The host's event for an email (attachments downloaded) and its thread state, or why
    /// it is not for the host.
    async fn to_event(
        &self,
        data: &ReceivedData,
        email: &ReceivedEmail,
    ) -> Result<(InboundEvent, ThreadState, String), String> {
        let from_value = email.header("from").unwrap_or_else(|| email.from.clone());
        let (address, name) =
            mail::parse_mailbox(&from_value).ok_or_else(|| "no sender address".to_owned())?;
        if address == self.from_address {
            return Err("sent by the bot's own address".into());
        }
        if let Some(auto) = email.header("auto-submitted")
            && !auto.trim().eq_ignore_ascii_case("no")
        {
            return Err(format!("an automatic reply (Auto-Submitted: {auto})"));
        }
        if self.check_dmarc {
            let results = email.header_values("authentication-results");
            let domain = mail::domain_of(&address);
            if let SenderAuth::NotPassed(why) =
                mail::dmarc_result(&results, domain, self.auth_server_id.as_deref())
            {
                return Err(format!(
                    "the sender {address} is not authenticated ({why}); with sender_auth = \
                     dmarc only emails whose DMARC passed are taken"
                ));
            }
        }
        let own = email
            .header("message-id")
            .or_else(|| email.message_id.clone())
            .and_then(|v| mail::message_ids(&v).into_iter().next())
            .unwrap_or_else(|| format!("<{}@resend.invalid>", email.id));
        let references = email
            .header("references")
            .map(|v| mail::message_ids(&v))
            .unwrap_or_default();
        let in_reply_to = email
            .header("in-reply-to")
            .map(|v| mail::message_ids(&v))
            .unwrap_or_default();
        let root = mail::thread_root(&references, &in_reply_to, &own).to_owned();
        let subject = mail::clean_subject(
            &email
                .subject
                .clone()
                .or_else(|| email.header("subject"))
                .unwrap_or_default(),
        );
        let body = match (&email.text, &email.html) {
            (Some(text), _) if !text.trim().is_empty() => text.replace("\r\n", "\n"),
            (_, Some(html)) => {
                let capped: String = html.chars().take(2 * mail::MAX_TEXT_CHARS).collect();
                mail::html_to_text(&capped)
            }
            _ => String::new(),
        };
        let text = mail::bounded(mail::strip_quoted_reply(&body));
        // The webhook's list wins (it is what Resend announced); else the email's.
        let metas = if data.attachments.is_empty() {
            &email.attachments
        } else {
            &data.attachments
        };
        let attachments = self.attachments(&email.id, metas).await;
        let mut thread = ThreadState {
            subject: subject.clone(),
            references: Vec::new(),
        };
        thread.add(&root);
        for id in references.iter().chain(&in_reply_to) {
            thread.add(id);
        }
        thread.add(&own);
        let extra = json!({
            "subject": subject,
            "message_id": own,
            "email_id": email.id,
        });
        let event = InboundEvent {
            chat_id: address.clone().into(),
            chat_name: name.clone().map(RString::from).into(),
            thread_id: RSome(mail::bare(&root).into()),
            message_id: email.id.clone().into(),
            sender: RSome(Sender {
                handle: address.into(),
                display_name: name.map(RString::from).into(),
                is_bot: false,
            }),
            is_group: false,
            mentioned: true,
            text: text.into(),
            attachments: attachments.into(),
            reply_to: RNone,
            timestamp_ms: 0,
            extra_json: extra.to_string().into(),
        };
        Ok((event, thread, own))
    }

    /// Each attachment's content through its signed download URL, from an allowed host,
    /// within the size cap; one that cannot be fetched arrives as metadata.
    async fn attachments(&self, email_id: &str, metas: &[AttachmentMeta]) -> Vec<Attachment> {
        let mut out = Vec::new();
        for meta in metas.iter().take(50) {
            let mime = meta.content_type.clone().unwrap_or_default();
            let kind = match mime.split('/').next().unwrap_or_default() {
                "image" => "image",
                "audio" => "audio",
                "video" => "video",
                _ => "file",
            };
            let mut attachment = Attachment {
                kind: kind.into(),
                name: safe_file_name(meta.filename.as_deref().unwrap_or("attachment")).into(),
                mime_type: mime.into(),
                size: meta.size.unwrap_or(0),
                data: RVec::new(),
                url: RNone,
            };
            match self.fetch_attachment(email_id, meta).await {
                Ok(data) => {
                    attachment.size = data.len() as u64;
                    attachment.data = data.into();
                }
                Err(e) => self
                    .life
                    .warn(format!("attachment {} not downloaded: {e}", meta.id)),
            }
            out.push(attachment);
        }
        out
    }

    async fn fetch_attachment(
        &self,
        email_id: &str,
        meta: &AttachmentMeta,
    ) -> Result<Vec<u8>, PluginError> {
        if !is_resend_id(&meta.id) {
            return Err(PluginError::invalid_input("bad attachment id"));
        }
        let cap = self.max_file_bytes;
        if meta.size.is_some_and(|s| s > cap) {
            return Err(PluginError::invalid_input(format!(
                "larger than max_file_bytes ({cap})"
            )));
        }
        let path = format!("/emails/receiving/{email_id}/attachments/{}", meta.id);
        let link: AttachmentLink = self.api.call(Method::GET, &path, None, None).await?;
        if link.size.is_some_and(|s| s > cap) {
            return Err(PluginError::invalid_input(format!(
                "larger than max_file_bytes ({cap})"
            )));
        }
        let url = Url::parse(&link.download_url)
            .map_err(|_| PluginError::invalid_input("the download URL does not parse"))?;
        if !self
            .attachment_hosts
            .iter()
            .any(|allowed| same_origin(allowed, &url))
        {
            return Err(PluginError::invalid_input(format!(
                "download host {} is not in attachment_hosts",
                url.host_str().unwrap_or("?")
            )));
        }
        self.api.download(url, cap).await
    }

    /// Sends one part as an email; Resend's id of it.
    async fn send(&self, part: &OutboundMessage) -> Result<String, PluginError> {
        let to = part.chat_id.as_str().trim().to_ascii_lowercase();
        if !mail::is_address(&to) {
            return Err(PluginError::invalid_input(format!(
                "`{}` is not an email address",
                part.chat_id
            )));
        }
        let thread = part.thread_id.clone().into_option().map(|t| t.to_string());
        let target = reply_target(part).map(str::to_owned);
        let (state, target_id) = {
            let (to, thread, target) = (to.clone(), thread.clone(), target.clone());
            self.life
                .host_call(move |host| {
                    let state = match &thread {
                        Some(t) => host
                            .kv_get(&thread_key(&to, t))?
                            .and_then(|s| serde_json::from_str::<ThreadState>(&s).ok()),
                        None => None,
                    };
                    let target_id = match &target {
                        Some(id) if is_resend_id(id) => {
                            host.kv_get(&email_key(id))?.filter(|m| !m.is_empty())
                        }
                        _ => None,
                    };
                    Ok((state, target_id))
                })
                .await
                .map_err(|_| PluginError::other("shutting down"))??
        };
        let mut body = json!({
            "from": self.from_header,
            "to": [to],
        });
        match &state {
            Some(state) if !state.references.is_empty() => {
                let parent = target_id
                    .clone()
                    .or_else(|| state.references.last().cloned())
                    .unwrap_or_default();
                let mut refs = state.references.clone();
                if !refs.contains(&parent) {
                    refs.push(parent.clone());
                }
                body["subject"] = json!(mail::reply_subject(&state.subject));
                body["headers"] = json!({
                    "In-Reply-To": parent,
                    "References": refs.join(" "),
                });
            }
            _ => {
                body["subject"] = json!(self.new_subject);
            }
        }
        let html = part.text.as_str();
        let text = plain_text_of(part).unwrap_or_else(|| mail::html_to_text(html));
        if !html.trim().is_empty() {
            body["html"] = json!(html);
            body["text"] = json!(text);
        } else if part.files.is_empty() {
            return Err(PluginError::invalid_input("nothing to send"));
        } else {
            // Files only: a short text part so the email is not empty.
            body["text"] = json!("(attached)");
        }
        if !part.files.is_empty() {
            let total: usize =
                part.files.iter().map(|f| f.data.len()).sum::<usize>() + html.len() + text.len();
            if total > MAX_EMAIL_BYTES {
                return Err(PluginError::invalid_input(format!(
                    "the email would be {total} bytes; Resend takes at most {MAX_EMAIL_BYTES}"
                )));
            }
            let files: Vec<Value> = part
                .files
                .iter()
                .map(|f| {
                    let mut file = json!({
                        "filename": safe_file_name(f.name.as_str()),
                        "content": STANDARD.encode(f.data.as_slice()),
                    });
                    if !f.mime_type.is_empty() {
                        file["content_type"] = json!(f.mime_type.as_str());
                    }
                    file
                })
                .collect();
            body["attachments"] = json!(files);
        }
        let key = idempotency_key(part);
        let sent: SentId = self
            .api
            .call(Method::POST, "/emails", Some(&body), key.as_deref())
            .await?;
        Ok(sent.id)
    }
}

/// The host's idempotency key for a part, within Resend's 256 characters.
fn idempotency_key(part: &OutboundMessage) -> Option<String> {
    let extra: Value = serde_json::from_str(part.extra_json.as_str()).ok()?;
    let key = extra.get("idempotency_key")?.as_str()?;
    if key.is_empty() {
        return None;
    }
    if key.len() <= 256 && key.chars().all(|c| c.is_ascii_graphic()) {
        return Some(key.to_owned());
    }
    // Long or unusual: a stable digest of it.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut h2: u64 = 0x8422_2325_cbf2_9ce4;
    for b in key.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        h2 = (h2 ^ u64::from(b))
            .wrapping_mul(0x0000_0100_0000_01b3)
            .rotate_left(7);
    }
    Some(format!("nanoclaw-{h:016x}{h2:016x}"))
}

fn same_origin(a: &Url, b: &Url) -> bool {
    a.scheme() == b.scheme()
        && a.host_str() == b.host_str()
        && a.port_or_known_default() == b.port_or_known_default()
}

#[cfg(test)]
mod tests;
