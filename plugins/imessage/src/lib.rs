//! NanoClaw channel plugin for iMessage through a BlueBubbles server (a Mac running Messages
//! and the BlueBubbles server app): its webhooks in, its REST API out.
//!
//! # Settings (`[plugins.imessage.settings]` in plugins.toml)
//!
//! | key | default | |
//! |---|---|---|
//! | `server_url` | required | the BlueBubbles server, e.g. `https://mac.example.org` (tests: a fake on 127.0.0.1) |
//! | `password` | required | `{ env = "BLUEBUBBLES_PASSWORD" }`, the server password |
//! | `default_country` | `US` | phone numbers written without a country code get this country's code |
//! | `private_api` | `false` | the Mac has BlueBubbles' Private API on: tapbacks, typing, replies to a message, sending by the Private API |
//! | `max_file_bytes` | 20 MiB | inbound attachments larger than this arrive without content |
//! | `send_per_sec` | `1` | messages per chat and second (five times that across chats) |
//!
//! # Behaviour
//!
//! * BlueBubbles POSTs its events to the host's webhook `/webhook/<instance>?password=<server
//!   password>` (BlueBubbles can only be given a URL, so the password travels as the
//!   `password` query parameter, as in its own API). It is compared in constant time before
//!   anything is parsed; a missing or wrong password is 401 and a log line. Use HTTPS.
//! * `new-message`: the bot's own messages (`isFromMe`) and tapbacks are skipped; others
//!   become messages. Senders are handles normalized so one person is one user: phone numbers
//!   in E.164 (`default_country` for national numbers), emails lower-cased. A one-to-one chat
//!   is the sender's handle (direct-addressable: no `open_dm`); a group chat is its chat guid
//!   (`iMessage;+;chat…`). DMs count as mentions; groups have no mentions (engage by pattern).
//!   Attachments are downloaded through the API (`/api/v1/attachment/{guid}/download`).
//! * `updated-message`: an unsent message (`dateRetracted`) is a deletion for the host; an
//!   edited one (`dateEdited`) a new message `<guid>:edit:<time>` with `extra_json.edit_of`;
//!   read and delivery receipts are ignored. Typing indicators and other events: ignored.
//! * Every message is handed to the host once (deduped by its guid); a refusal answers 503.
//! * Outbound: plain text (the kit's renderer), parts of at most 5000 characters, with
//!   `/api/v1/message/text` and a `tempGuid` from the host's idempotency key (a retry is not a
//!   second message); files with `/api/v1/message/attachment`; with `private_api`: replies to
//!   a message, tapbacks (`/api/v1/message/react`) and typing (`/api/v1/chat/{guid}/typing`).
//!   To a handle, the chat guid last seen for it (so SMS contacts stay on SMS), else
//!   `iMessage;-;<handle>`.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use nanoclaw_plugin_api::kit::http::reqwest::{self, Method, Url, multipart};
use nanoclaw_plugin_api::kit::http::{self, ApiBase, ClientConfig, multipart::file_part};
use nanoclaw_plugin_api::kit::inbound::{Dedupe, Inbox};
use nanoclaw_plugin_api::kit::prelude::*;
use nanoclaw_plugin_api::kit::prepare::reply_target;
use nanoclaw_plugin_api::kit::{Rate, RateLimiter, secret_eq};
use serde::Deserialize;
use serde_json::{Value, json};

mod handles;

/// Characters per message part.
pub const MAX_PART_CHARS: u32 = 5000;
const DEFAULT_MAX_FILE_BYTES: u64 = 20 * 1024 * 1024;
const DEDUPE_TTL: Duration = Duration::from_secs(3 * 24 * 3600);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);
const MAX_ANSWER_BYTES: u64 = 1024 * 1024;
const MAX_WEBHOOK_BYTES: usize = 2 * 1024 * 1024;
/// How long the chat guid of a handle is remembered.
const DM_TTL: Duration = Duration::from_secs(365 * 24 * 3600);
const MAX_LIMITER_WAIT: Duration = Duration::from_secs(5);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    server_url: String,
    password: Secret,
    #[serde(default)]
    default_country: Option<String>,
    #[serde(default)]
    private_api: bool,
    #[serde(default = "default_max_file")]
    max_file_bytes: u64,
    #[serde(default = "default_rate")]
    send_per_sec: f64,
}

fn default_max_file() -> u64 {
    DEFAULT_MAX_FILE_BYTES
}

fn default_rate() -> f64 {
    1.0
}

/// The channel as the host loads it.
pub type IMessageChannel = Hosted<IMessage>;

/// One BlueBubbles server (one Apple ID on one Mac).
pub struct IMessage {
    life: Lifecycle,
    client: reqwest::Client,
    base: ApiBase,
    password: Secret,
    country_code: &'static str,
    private_api: bool,
    max_file_bytes: u64,
    limiter: RateLimiter,
    inbox: Inbox,
    dedupe: Dedupe,
    seq: AtomicU64,
    server: Mutex<Option<String>>,
}

impl AsyncChannel for IMessage {
    const INFO: ChannelInfo = ChannelInfo::new(
        "iMessage (BlueBubbles)",
        "imessage",
        env!("CARGO_PKG_VERSION"),
    )
    .capabilities(
        Capabilities::FILES
            .with(Capabilities::REACTIONS)
            .with(Capabilities::TYPING)
            .with(Capabilities::WEBHOOK),
    )
    .markup(Markup::PlainText)
    .max_text_length(MAX_PART_CHARS)
    .text_unit(LengthUnit::Chars)
    .description("iMessage through a BlueBubbles server (webhooks in, REST out)");

    fn create(ctx: Context, life: &Lifecycle) -> Result<Self, PluginError> {
        let settings: Settings = ctx.settings()?;
        if settings.password.expose().trim().is_empty() {
            return Err(PluginError::config("password is empty"));
        }
        let country = settings.default_country.as_deref().unwrap_or("US");
        let country_code = handles::calling_code(country).ok_or_else(|| {
            PluginError::config(format!(
                "default_country `{country}` is not a known two-letter country code"
            ))
        })?;
        let rate = settings.send_per_sec;
        if !(rate > 0.0 && rate <= 50.0) {
            return Err(PluginError::config(format!(
                "send_per_sec must be above 0 and at most 50, not {rate}"
            )));
        }
        if settings.max_file_bytes == 0 {
            return Err(PluginError::config("max_file_bytes must be above 0"));
        }
        let secrets = [&settings.password];
        let base = ApiBase::parse("server_url", &settings.server_url, &secrets)?;
        if base.is_plain_remote() {
            life.warn(format!(
                "server_url {} is plain http to another machine: the password travels \
                 unencrypted",
                base.as_str()
            ));
        }
        life.add_secret(&settings.password);
        let client = ClientConfig::for_channel(&Self::INFO)
            .timeout(Some(REQUEST_TIMEOUT))
            .build()?;
        Ok(Self {
            life: life.clone(),
            client,
            base,
            password: settings.password,
            country_code,
            private_api: settings.private_api,
            max_file_bytes: settings.max_file_bytes,
            limiter: RateLimiter::new(
                Some(Rate::per_second(rate * 5.0)),
                Some(Rate::per_second(rate).burst(3)),
            ),
            inbox: Inbox::new(life),
            dedupe: Dedupe::new(life.host().clone(), "messages", DEDUPE_TTL),
            seq: AtomicU64::new(0),
            server: Mutex::new(None),
        })
    }

    async fn start(&self) -> Result<(), PluginError> {
        let info: Value = self
            .call(Method::GET, &["server", "info"], None)
            .await
            .map_err(|e| {
                if e.kind == ErrorKind::AUTH {
                    let reason = format!(
                        "BlueBubbles refused the password ({e}): check BLUEBUBBLES_PASSWORD"
                    );
                    self.life.health().down(reason.clone());
                    PluginError::auth(reason)
                } else {
                    e
                }
            })?;
        let data = &info["data"];
        let private = data["private_api"].as_bool().unwrap_or(false);
        let version = data["server_version"].as_str().unwrap_or("?").to_owned();
        if self.private_api && !private {
            let reason = "private_api = true, but the BlueBubbles server has its Private API \
                          off: tapbacks, typing and replies will fail"
                .to_owned();
            self.life.warn(&reason);
            self.life.health().degraded(reason);
        }
        self.life.info(format!(
            "connected to BlueBubbles {version} (macOS {}), Private API {}",
            data["os_version"].as_str().unwrap_or("?"),
            if private { "on" } else { "off" }
        ));
        *self.server.lock().unwrap_or_else(|p| p.into_inner()) = Some(version);
        Ok(())
    }

    async fn deliver(&self, part: OutboundMessage) -> Result<Option<String>, PluginError> {
        let chat = self.chat_guid(part.chat_id.as_str()).await?;
        match part.op {
            OutboundOp::SEND => self.send(&chat, &part).await.map(Some),
            OutboundOp::REACT => self.react(&chat, &part).await.map(|()| None),
            _ => Err(PluginError::unsupported("editing an iMessage")),
        }
    }

    async fn set_typing(&self, chat_id: &str, _thread_id: Option<&str>) {
        if !self.private_api {
            return;
        }
        let Ok(chat) = self.chat_guid(chat_id).await else {
            return;
        };
        if let Err(e) = self
            .call::<Value>(Method::POST, &["chat", &chat, "typing"], None)
            .await
        {
            self.life.debug(format!("typing in {chat}: {e}"));
        }
    }

    async fn handle_webhook(
        &self,
        request: WebhookRequest,
    ) -> Result<WebhookResponse, PluginError> {
        // The password first, in constant time: nothing unauthenticated is parsed or stored.
        let given = query_value(request.query.as_str(), "password");
        let ok = given
            .as_deref()
            .is_some_and(|g| secret_eq(g.as_bytes(), self.password.expose().as_bytes()));
        if !ok {
            self.life.warn(format!(
                "refused a webhook request: {} password",
                if given.is_some() { "wrong" } else { "no" }
            ));
            return Ok(WebhookResponse::text(401, "unauthorized"));
        }
        if request.method.as_str() != "POST" {
            return Ok(WebhookResponse::text(405, "method not allowed"));
        }
        self.life.health().ingested();
        if request.body.len() > MAX_WEBHOOK_BYTES {
            return Ok(WebhookResponse::text(413, "too large"));
        }
        let event: Value = match serde_json::from_slice(&request.body) {
            Ok(v) => v,
            Err(e) => return Ok(WebhookResponse::text(400, &format!("not an event: {e}"))),
        };
        let kind = event["type"].as_str().unwrap_or_default().to_owned();
        let data = &event["data"];
        Ok(match kind.as_str() {
            "new-message" => self.new_message(data, None).await,
            "updated-message" => self.updated_message(data).await,
            other => {
                self.life.debug(format!("ignoring a {other} event"));
                WebhookResponse::text(200, "")
            }
        })
    }

    async fn shutdown(&self) {
        self.life.info("iMessage channel stopped");
    }
}

/// The first value of `name` in a raw query string, percent-decoded.
fn query_value(query: &str, name: &str) -> Option<String> {
    let mut url = Url::parse("http://query.invalid/").ok()?;
    url.set_query(Some(query));
    url.query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// A message object's fields the channel reads.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Message {
    #[serde(default)]
    guid: String,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    is_from_me: bool,
    #[serde(default)]
    handle: Option<Handle>,
    #[serde(default)]
    chats: Vec<Chat>,
    #[serde(default)]
    attachments: Vec<AttachmentInfo>,
    #[serde(default)]
    date_created: Option<i64>,
    #[serde(default)]
    date_edited: Option<i64>,
    #[serde(default)]
    date_retracted: Option<i64>,
    #[serde(default)]
    associated_message_guid: Option<String>,
    #[serde(default)]
    associated_message_type: Option<Value>,
    #[serde(default)]
    thread_originator_guid: Option<String>,
    #[serde(default)]
    item_type: Option<i64>,
}

#[derive(Debug, Deserialize)]
struct Handle {
    #[serde(default)]
    address: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Chat {
    #[serde(default)]
    guid: String,
    #[serde(default)]
    display_name: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AttachmentInfo {
    #[serde(default)]
    guid: String,
    #[serde(default)]
    transfer_name: Option<String>,
    #[serde(default)]
    mime_type: Option<String>,
    #[serde(default)]
    total_bytes: Option<u64>,
}

impl IMessage {
    /// `/api/v1/<segments…>?password=…`; guids from outside are escaped, `.`/`..` refused.
    fn url(&self, segments: &[&str]) -> Result<Url, PluginError> {
        let mut url = self.base.join(["api", "v1"].iter().chain(segments))?;
        url.query_pairs_mut()
            .append_pair("password", self.password.expose());
        Ok(url)
    }

    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        method: Method,
        segments: &[&str],
        body: Option<&Value>,
    ) -> Result<T, PluginError> {
        let what = format!("{method} /api/v1/{}", segments.first().unwrap_or(&""));
        let mut request = self.client.request(method, self.url(segments)?);
        if let Some(body) = body {
            request = request.json(body);
        }
        self.exchange(&what, request).await
    }

    async fn exchange<T: serde::de::DeserializeOwned>(
        &self,
        what: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<T, PluginError> {
        let secrets = [&self.password];
        let response = http::send(request, &secrets)
            .await
            .map_err(|e| e.to_plugin_error(what))?;
        let bytes = http::read_capped(response, MAX_ANSWER_BYTES, &secrets)
            .await
            .map_err(|e| e.to_plugin_error(what))?;
        serde_json::from_slice(&bytes)
            .map_err(|e| PluginError::other(format!("{what}: unexpected answer: {e}")))
    }

    /// The chat guid to send to: a chat guid as it is; a handle's last seen DM guid, else
    /// `iMessage;-;<handle>`.
    async fn chat_guid(&self, chat_id: &str) -> Result<String, PluginError> {
        if handles::is_chat_guid(chat_id) {
            return Ok(chat_id.to_owned());
        }
        let handle = handles::normalize(chat_id, self.country_code).ok_or_else(|| {
            PluginError::invalid_input(format!(
                "`{chat_id}` is neither a chat guid, a phone number nor an email"
            ))
        })?;
        let key = format!("dm:{handle}");
        let known = self
            .life
            .host_call(move |host| host.kv_get(&key))
            .await
            .map_err(|_| PluginError::other("shutting down"))??;
        Ok(known
            .filter(|g| handles::is_chat_guid(g))
            .unwrap_or_else(|| format!("iMessage;-;{handle}")))
    }

    /// A tempGuid for a part: from the host's idempotency key (stable across retries), else
    /// unique.
    fn temp_guid(&self, part: &OutboundMessage, suffix: &str) -> String {
        let key = serde_json::from_str::<Value>(part.extra_json.as_str())
            .ok()
            .and_then(|v| v["idempotency_key"].as_str().map(str::to_owned));
        match key {
            Some(key) => {
                let mut h: u64 = 0xcbf2_9ce4_8422_2325;
                for b in key.bytes().chain(suffix.bytes()) {
                    h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
                }
                format!("nanoclaw-{h:016x}")
            }
            None => format!(
                "nanoclaw-{}-{}{suffix}",
                nanoclaw_plugin_api::kit::now_ms(),
                self.seq.fetch_add(1, Ordering::Relaxed)
            ),
        }
    }

    async fn pace(&self, chat: &str) -> Result<(), PluginError> {
        self.limiter
            .acquire_within(chat, MAX_LIMITER_WAIT)
            .await
            .map_err(|wait| {
                let ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
                PluginError::rate_limited("sending too fast for iMessage", Some(ms))
            })
    }

    async fn send(&self, chat: &str, part: &OutboundMessage) -> Result<String, PluginError> {
        let mut last = None;
        let text = part.text.as_str();
        if !text.trim().is_empty() {
            self.pace(chat).await?;
            let mut body = json!({
                "chatGuid": chat,
                "tempGuid": self.temp_guid(part, ""),
                "message": text,
                "method": if self.private_api { "private-api" } else { "apple-script" },
            });
            if self.private_api
                && let Some(target) = reply_target(part).filter(|t| handles::is_message_guid(t))
            {
                body["selectedMessageGuid"] = json!(target);
                body["partIndex"] = json!(0);
            }
            let sent: Value = self
                .call(Method::POST, &["message", "text"], Some(&body))
                .await
                .inspect_err(|e| {
                    self.limiter.note(Some(chat), e);
                })?;
            last = sent["data"]["guid"].as_str().map(str::to_owned);
        }
        for (i, file) in part.files.iter().enumerate() {
            self.pace(chat).await?;
            let form = multipart::Form::new()
                .text("chatGuid", chat.to_owned())
                .text("tempGuid", self.temp_guid(part, &format!("/file{i}")))
                .text("name", http::multipart::safe_file_name(file.name.as_str()))
                .text(
                    "method",
                    if self.private_api {
                        "private-api"
                    } else {
                        "apple-script"
                    },
                )
                .part(
                    "attachment",
                    file_part(
                        file.name.as_str(),
                        file.mime_type.as_str(),
                        file.data.to_vec(),
                    ),
                );
            let request = self
                .client
                .post(self.url(&["message", "attachment"])?)
                .multipart(form);
            let sent: Value = self
                .exchange("POST /api/v1/message/attachment", request)
                .await?;
            last = sent["data"]["guid"].as_str().map(str::to_owned).or(last);
        }
        last.ok_or_else(|| PluginError::invalid_input("nothing to send"))
    }

    async fn react(&self, chat: &str, part: &OutboundMessage) -> Result<(), PluginError> {
        if !self.private_api {
            return Err(PluginError::unsupported(
                "tapbacks without BlueBubbles' Private API (private_api = true)",
            ));
        }
        let target = reply_target(part)
            .filter(|t| handles::is_message_guid(t))
            .ok_or_else(|| PluginError::invalid_input("a tapback needs a message guid"))?;
        let reaction = tapback(part.reaction.as_str()).ok_or_else(|| {
            PluginError::invalid_input(format!(
                "iMessage has no tapback for `{}` (love, like, dislike, laugh, emphasize, \
                 question)",
                part.reaction
            ))
        })?;
        self.pace(chat).await?;
        let body = json!({
            "chatGuid": chat,
            "selectedMessageGuid": target,
            "reaction": reaction,
            "partIndex": 0,
        });
        self.call::<Value>(Method::POST, &["message", "react"], Some(&body))
            .await
            .map(drop)
    }

    async fn new_message(&self, data: &Value, edit: Option<(String, i64)>) -> WebhookResponse {
        let Ok(m) = serde_json::from_value::<Message>(data.clone()) else {
            return WebhookResponse::text(400, "not a message");
        };
        if m.is_from_me {
            return WebhookResponse::text(200, "");
        }
        if m.associated_message_guid.is_some()
            || m.associated_message_type
                .as_ref()
                .is_some_and(|t| !t.is_null() && t != &json!(0))
        {
            self.life
                .debug("ignoring a tapback (the host takes no inbound reactions)");
            return WebhookResponse::text(200, "");
        }
        if m.item_type.is_some_and(|t| t != 0) {
            self.life
                .debug("ignoring a group event (rename, member change)");
            return WebhookResponse::text(200, "");
        }
        if !handles::is_message_guid(&m.guid) {
            return WebhookResponse::text(400, "bad guid");
        }
        let Some(sender) = m
            .handle
            .as_ref()
            .and_then(|h| handles::normalize(&h.address, self.country_code))
        else {
            self.life
                .debug("ignoring a message without a usable sender");
            return WebhookResponse::text(200, "");
        };
        let Some(chat) = m.chats.first().filter(|c| handles::is_chat_guid(&c.guid)) else {
            return WebhookResponse::text(400, "no chat");
        };
        let is_group = handles::is_group_guid(&chat.guid);
        let chat_id = if is_group {
            chat.guid.clone()
        } else {
            sender.clone()
        };
        if !is_group {
            let (key, guid) = (format!("dm:{sender}"), chat.guid.clone());
            let ttl = Some(u64::try_from(DM_TTL.as_millis()).unwrap_or(u64::MAX));
            let _ = self
                .life
                .host_call(move |host| host.kv_set(&key, &guid, ttl))
                .await;
        }
        let attachments = self.attachments(&m.attachments).await;
        let (message_id, extra) = match &edit {
            Some((original, at)) => (
                format!("{original}:edit:{at}"),
                json!({"edit_of": original, "chat_guid": chat.guid}),
            ),
            None => (m.guid.clone(), json!({"chat_guid": chat.guid})),
        };
        let event = InboundEvent {
            chat_id: chat_id.into(),
            chat_name: chat
                .display_name
                .clone()
                .filter(|n| !n.trim().is_empty())
                .map(RString::from)
                .into(),
            thread_id: RNone,
            message_id: message_id.clone().into(),
            sender: RSome(Sender {
                handle: sender.into(),
                display_name: RNone,
                is_bot: false,
            }),
            is_group,
            mentioned: !is_group,
            text: m.text.clone().unwrap_or_default().into(),
            attachments: attachments.into(),
            reply_to: m
                .thread_originator_guid
                .clone()
                .filter(|g| handles::is_message_guid(g))
                .map(|g| QuotedMessage {
                    message_id: RSome(g.into()),
                    sender: RNone,
                    text: RString::new(),
                })
                .into(),
            timestamp_ms: m.date_created.unwrap_or(0),
            extra_json: extra.to_string().into(),
        };
        match self
            .inbox
            .offer_once(&self.dedupe, &message_id, move |host| {
                host.on_inbound(event)
            })
            .await
        {
            Ok(offered) if !offered.redeliver() => WebhookResponse::text(200, ""),
            _ => WebhookResponse::text(503, "try again later"),
        }
    }

    /// Unsent → a deletion; edited → a new message; receipts → nothing.
    async fn updated_message(&self, data: &Value) -> WebhookResponse {
        let Ok(m) = serde_json::from_value::<Message>(data.clone()) else {
            return WebhookResponse::text(400, "not a message");
        };
        if m.is_from_me || !handles::is_message_guid(&m.guid) {
            return WebhookResponse::text(200, "");
        }
        if m.date_retracted.is_some() {
            let Some(chat) = m.chats.first().filter(|c| handles::is_chat_guid(&c.guid)) else {
                return WebhookResponse::text(400, "no chat");
            };
            let chat_id = if handles::is_group_guid(&chat.guid) {
                chat.guid.clone()
            } else {
                match m
                    .handle
                    .as_ref()
                    .and_then(|h| handles::normalize(&h.address, self.country_code))
                {
                    Some(h) => h,
                    None => return WebhookResponse::text(200, ""),
                }
            };
            let event = DeletionEvent {
                chat_id: chat_id.into(),
                thread_id: RNone,
                message_id: m.guid.clone().into(),
            };
            return match self
                .life
                .host_call(move |host| host.on_deleted(event))
                .await
            {
                Ok(Ok(())) => WebhookResponse::text(200, ""),
                Ok(Err(e)) => {
                    self.life.warn(format!(
                        "the host did not take the deletion of {} ({e})",
                        m.guid
                    ));
                    WebhookResponse::text(503, "try again later")
                }
                Err(_) => WebhookResponse::text(503, "shutting down"),
            };
        }
        if let Some(at) = m.date_edited {
            return self.new_message(data, Some((m.guid.clone(), at))).await;
        }
        WebhookResponse::text(200, "")
    }

    async fn attachments(&self, infos: &[AttachmentInfo]) -> Vec<Attachment> {
        let mut out = Vec::new();
        for info in infos.iter().take(20) {
            let mime = info.mime_type.clone().unwrap_or_default();
            let kind = match mime.split('/').next().unwrap_or_default() {
                "image" => "image",
                "audio" => "voice",
                "video" => "video",
                _ => "file",
            };
            let mut attachment = Attachment {
                kind: kind.into(),
                name: http::multipart::safe_file_name(
                    info.transfer_name.as_deref().unwrap_or("attachment"),
                )
                .into(),
                mime_type: mime.into(),
                size: info.total_bytes.unwrap_or(0),
                data: RVec::new(),
                url: RNone,
            };
            match self.download(info).await {
                Ok(data) => {
                    attachment.size = data.len() as u64;
                    attachment.data = data.into();
                }
                Err(e) => self
                    .life
                    .warn(format!("attachment {} not downloaded: {e}", info.guid)),
            }
            out.push(attachment);
        }
        out
    }

    async fn download(&self, info: &AttachmentInfo) -> Result<Vec<u8>, PluginError> {
        if !handles::is_message_guid(&info.guid) {
            return Err(PluginError::invalid_input("bad attachment guid"));
        }
        let cap = self.max_file_bytes;
        if info.total_bytes.is_some_and(|s| s > cap) {
            return Err(PluginError::invalid_input(format!(
                "larger than max_file_bytes ({cap})"
            )));
        }
        let url = self.url(&["attachment", &info.guid, "download"])?;
        let secrets = [&self.password];
        let response = http::send(self.client.get(url), &secrets)
            .await
            .map_err(|e| e.to_plugin_error("attachment download"))?;
        http::read_capped(response, cap, &secrets)
            .await
            .map_err(|e| e.to_plugin_error("attachment download"))
    }
}

/// The host's reaction names as iMessage tapbacks.
fn tapback(reaction: &str) -> Option<&'static str> {
    Some(match reaction.trim() {
        "heart" | "love" | "❤️" | "❤" => "love",
        "thumbs_up" | "like" | "+1" | "👍" | "check" | "white_check_mark" | "✅" => "like",
        "thumbs_down" | "dislike" | "-1" | "👎" => "dislike",
        "laugh" | "joy" | "haha" | "😂" => "laugh",
        "exclamation" | "emphasize" | "!!" | "‼️" => "emphasize",
        "question" | "?" | "❓" => "question",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tapbacks_and_query() {
        assert_eq!(tapback("thumbs_up"), Some("like"));
        assert_eq!(tapback("heart"), Some("love"));
        assert_eq!(tapback("rocket"), None);
        assert_eq!(
            query_value("a=1&password=p%26ss%3D&b=2", "password").as_deref(),
            Some("p&ss=")
        );
        assert_eq!(query_value("a=1", "password"), None);
    }

    #[test]
    fn hostile_guids_do_not_change_the_endpoint() {
        let rt = nanoclaw_plugin_api::kit::runtime("imessage-test", 1).expect("runtime");
        let mem = nanoclaw_plugin_api::kit::testing::MemoryHost::new();
        let life = Lifecycle::detached(rt.handle().clone(), mem.host(), "imessage_test");
        let _in_runtime = rt.enter();
        let settings = json!({"server_url": "http://127.0.0.1:9/bb/", "password": "pw&1"});
        let channel = IMessage::create(
            Context {
                instance_name: "imessage".into(),
                settings_json: settings.to_string(),
                data_dir: std::env::temp_dir(),
                extra_json: String::new(),
                host: mem.host(),
            },
            &life,
        )
        .unwrap_or_else(|e| panic!("create: {e}"));
        let url = |segments: &[&str]| channel.url(segments).map(|u| u.to_string());
        assert_eq!(
            url(&["attachment", "p:0/a?b", "download"]).unwrap(),
            "http://127.0.0.1:9/bb/api/v1/attachment/p:0%2Fa%3Fb/download?password=pw%261"
        );
        // An attachment guid `..` used to become `/api/v1/attachment/download`.
        for guid in ["", ".", ".."] {
            let err = url(&["attachment", guid, "download"]).expect_err(guid);
            assert_eq!(err.kind, ErrorKind::INVALID_INPUT, "{err}");
            assert!(!err.message.contains("pw"), "{err}");
        }
        life.stop();
    }
}
