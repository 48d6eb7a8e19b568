//! Webex → host: the webhook (signature first), the message or action it names fetched,
//! turned into the host's events and handed over once each; and the webhooks themselves,
//! registered at start.

use std::sync::Arc;
use std::time::Duration;

use nanoclaw_plugin_api::kit::http::{self, reqwest::Method, reqwest::Url};
use nanoclaw_plugin_api::kit::inbound::Offered;
use nanoclaw_plugin_api::kit::prelude::*;
use nanoclaw_plugin_api::kit::webhook::verify_spark_signature;
use nanoclaw_plugin_api::kit::{BackoffPolicy, now_ms};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::{Body, Items, WxAction, WxMessage, WxWebhook};
use crate::{Shared, WEBHOOKS, is_webex_id};

/// How long one file download may take.
const DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(20);
/// Clock skew tolerated for events "from the future".
const FUTURE_SKEW: Duration = Duration::from_secs(5 * 60);
/// Largest webhook body taken (Webex's are well under 2 KB: ids only).
const MAX_BODY: usize = 64 * 1024;
/// Background attempts for an event the first try could not hand over.
const BACKGROUND_ATTEMPTS: u32 = 8;
/// The key card buttons carry their id under (`Action.Submit` data).
pub(crate) const BUTTON_KEY: &str = "nanoclaw_button";

/// A webhook notification (the fields used).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Envelope {
    resource: String,
    event: String,
    data: EnvelopeData,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct EnvelopeData {
    id: String,
    #[serde(default)]
    room_id: Option<String>,
    #[serde(default)]
    room_type: Option<String>,
    #[serde(default)]
    person_id: Option<String>,
    #[serde(default)]
    created: Option<String>,
}

/// Why a first attempt did not finish: try again in the background.
struct Again(String);

fn parse_time_ms(created: Option<&str>) -> Option<i64> {
    created?
        .parse::<jiff::Timestamp>()
        .ok()
        .map(|t| t.as_millisecond())
}

impl Shared {
    /// Verifies, then routes by resource and event.
    pub(crate) async fn handle_webhook(
        self: &Arc<Self>,
        request: WebhookRequest,
    ) -> WebhookResponse {
        let life = &self.life;
        if request.method.as_str() != "POST" {
            return WebhookResponse::text(405, "method not allowed");
        }
        if request.body.len() > MAX_BODY {
            life.warn(format!(
                "refused a webhook request of {} bytes",
                request.body.len()
            ));
            return WebhookResponse::text(413, "too large");
        }
        // The signature over the exact bytes first: nothing unverified is parsed or stored.
        if let Err(e) = verify_spark_signature(&self.secret, &request) {
            life.warn(format!("refused a webhook request: {e}"));
            return e.response();
        }
        let envelope: Envelope = match serde_json::from_slice(&request.body) {
            Ok(e) => e,
            Err(e) => return WebhookResponse::text(400, &format!("not a Webex notification: {e}")),
        };
        if !is_webex_id(&envelope.data.id) {
            return WebhookResponse::text(400, "not a Webex id");
        }
        // Replays: a signed notification about something created long ago is refused (a
        // recent one is deduped). Deletions are harmless to repeat and concern old messages.
        if envelope.event == "created" {
            let created = parse_time_ms(envelope.data.created.as_deref());
            let now = now_ms();
            let max_age = i64::try_from(self.max_event_age.as_millis()).unwrap_or(i64::MAX);
            let skew = i64::try_from(FUTURE_SKEW.as_millis()).unwrap_or(i64::MAX);
            match created {
                Some(at) if now - at <= max_age && at - now <= skew => {}
                _ => {
                    life.warn(format!(
                        "refused a webhook request: {} {} {} created {} (outside the {} s window)",
                        envelope.resource,
                        envelope.event,
                        envelope.data.id,
                        envelope
                            .data
                            .created
                            .as_deref()
                            .unwrap_or("at no given time"),
                        self.max_event_age.as_secs()
                    ));
                    return WebhookResponse::text(401, "invalid signature");
                }
            }
        }
        life.health().ingested();
        match (envelope.resource.as_str(), envelope.event.as_str()) {
            ("messages", "created") => self.first_try(Work::Message(envelope.data)).await,
            ("attachmentActions", "created") => self.first_try(Work::Action(envelope.data)).await,
            ("messages", "deleted") => self.first_try(Work::Deletion(envelope.data)).await,
            (resource, event) => {
                life.debug(format!("ignoring a {resource}:{event} notification"));
                WebhookResponse::text(200, "")
            }
        }
    }

    /// Does the work now; what cannot be finished now (Webex is down, the host refused) is
    /// retried in the background. Webex does not redeliver, so the answer is 200 either way.
    async fn first_try(self: &Arc<Self>, work: Work) -> WebhookResponse {
        if let Err(Again(why)) = self.work(&work).await {
            self.life.warn(format!(
                "{} not handed over yet ({why}); retrying",
                work.name()
            ));
            let shared = Arc::clone(self);
            self.life.spawn(async move { shared.retry(work).await });
        }
        WebhookResponse::text(200, "")
    }

    async fn retry(self: Arc<Self>, work: Work) {
        let policy = BackoffPolicy::exponential(Duration::from_secs(1), Duration::from_secs(30));
        let mut backoff = policy.start();
        for _ in 0..BACKGROUND_ATTEMPTS {
            let delay = backoff.next_delay().unwrap_or(Duration::from_secs(30));
            if self.life.stop_signal().sleep(delay).await.is_err() {
                return;
            }
            match self.work(&work).await {
                Ok(()) => {
                    self.life
                        .info(format!("{} handed over after retrying", work.name()));
                    self.life.health().ok();
                    return;
                }
                Err(Again(why)) => self
                    .life
                    .health()
                    .degraded(format!("{}: {why}", work.name())),
            }
        }
        self.life.error(format!(
            "skipping {}: not handed over after {BACKGROUND_ATTEMPTS} retries",
            work.name()
        ));
        self.life.health().skipped(work.name());
        self.life.health().ok();
    }

    async fn work(&self, work: &Work) -> Result<(), Again> {
        match work {
            Work::Message(data) => self.take_message(data).await,
            Work::Action(data) => self.take_action(data).await,
            Work::Deletion(data) => self.take_deletion(data).await,
        }
    }

    /// Fetches the message, builds the event and offers it once (deduped).
    async fn take_message(&self, data: &EnvelopeData) -> Result<(), Again> {
        let bot = self.bot_id().unwrap_or_default().to_owned();
        if data.person_id.as_deref() == Some(bot.as_str()) {
            self.life
                .debug(format!("message {} is the bot's own", data.id));
            return Ok(());
        }
        let message: WxMessage = match self.api.get(&["messages", &data.id], "messages/get").await {
            Ok(m) => m,
            Err(e) if e.kind == ErrorKind::NOT_FOUND => {
                self.life.debug(format!(
                    "message {} is gone (deleted before it was fetched)",
                    data.id
                ));
                return Ok(());
            }
            Err(e) => return Err(Again(e.to_string())),
        };
        if message.person_id == bot || message.id.is_empty() || !is_webex_id(&message.room_id) {
            return Ok(());
        }
        let direct = message.room_type.as_deref() == Some("direct");
        if direct {
            self.learn_direct(&message.person_id, &message.room_id)
                .await;
        }
        let mentioned = direct
            || message.mentioned_people.contains(&bot)
            || message.mentioned_groups.iter().any(|g| g == "all");
        let thread = match (&message.parent_id, direct) {
            (Some(parent), _) => Some(parent.clone()),
            (None, false) => Some(message.id.clone()),
            (None, true) => None,
        };
        let attachments = self.download_files(&message.files).await;
        let mut extra = serde_json::Map::new();
        if let Some(parent) = &message.parent_id {
            extra.insert("parent_id".into(), json!(parent));
        }
        let key = format!("{}:{}", message.room_id, message.id);
        self.remember_thread(&message.room_id, &message.id, thread.as_deref())
            .await;
        let event = InboundEvent {
            chat_id: message.room_id.clone().into(),
            chat_name: RNone,
            thread_id: thread.map(RString::from).into(),
            message_id: message.id.clone().into(),
            sender: RSome(Sender {
                handle: message.person_id.clone().into(),
                display_name: RNone,
                is_bot: false,
            }),
            is_group: !direct,
            mentioned,
            text: message.text.clone().unwrap_or_default().into(),
            attachments: attachments.into(),
            reply_to: RNone,
            timestamp_ms: parse_time_ms(message.created.as_deref()).unwrap_or_else(now_ms),
            extra_json: if extra.is_empty() {
                RString::new()
            } else {
                Value::Object(extra).to_string().into()
            },
        };
        match self
            .inbox
            .offer_once(&self.dedupe, &key, move |host| host.on_inbound(event))
            .await
        {
            Ok(Offered::Refused(e)) => Err(Again(format!("the host refused it: {e}"))),
            Ok(_) => Ok(()),
            Err(_stopped) => Ok(()),
        }
    }

    /// Fetches the card action and offers it once (deduped by action id).
    async fn take_action(&self, data: &EnvelopeData) -> Result<(), Again> {
        let action: WxAction = match self
            .api
            .get(
                &["attachment", "actions", &data.id],
                "attachment/actions/get",
            )
            .await
        {
            Ok(a) => a,
            Err(e) if e.kind == ErrorKind::NOT_FOUND => return Ok(()),
            Err(e) => return Err(Again(e.to_string())),
        };
        let Some(button) = action.inputs.get(BUTTON_KEY).and_then(Value::as_str) else {
            self.life.debug(format!(
                "card action {} is not one of our buttons",
                action.id
            ));
            return Ok(());
        };
        if action.person_id.is_empty() || !is_webex_id(&action.room_id) {
            return Ok(());
        }
        let event = ActionEvent {
            chat_id: action.room_id.clone().into(),
            thread_id: RNone,
            message_id: action.message_id.clone().into(),
            clicker: Sender {
                handle: action.person_id.clone().into(),
                display_name: RNone,
                is_bot: false,
            },
            action_id: button.into(),
            extra_json: json!({ "attachment_action_id": action.id })
                .to_string()
                .into(),
        };
        let key = format!("action:{}", action.id);
        match self
            .inbox
            .offer_once(&self.dedupe, &key, move |host| host.on_action(event))
            .await
        {
            Ok(Offered::Refused(e)) => Err(Again(format!("the host refused it: {e}"))),
            Ok(_) => Ok(()),
            Err(_stopped) => Ok(()),
        }
    }

    /// `messages:deleted`: handed to the host in the thread its message came in.
    async fn take_deletion(&self, data: &EnvelopeData) -> Result<(), Again> {
        let Some(room) = data.room_id.clone().filter(|r| is_webex_id(r)) else {
            return Ok(());
        };
        if data.person_id.as_deref() == self.bot_id() {
            return Ok(());
        }
        let key = format!("thread:{room}:{}", data.id);
        let remembered = match self.life.host_call(move |host| host.kv_get(&key)).await {
            Ok(Ok(thread)) => thread,
            _ => None,
        };
        let thread = match remembered {
            // "" marks a message handed over without a thread (1:1 spaces).
            Some(t) => Some(t).filter(|t| !t.is_empty()),
            None if data.room_type.as_deref() == Some("direct") => None,
            None => Some(data.id.clone()),
        };
        let event = DeletionEvent {
            chat_id: room.clone().into(),
            thread_id: thread.map(RString::from).into(),
            message_id: data.id.clone().into(),
        };
        let key = format!("{room}:{}:deleted", data.id);
        match self
            .inbox
            .offer_once(&self.dedupe, &key, move |host| host.on_deleted(event))
            .await
        {
            Ok(Offered::Refused(e)) => Err(Again(format!("the host refused it: {e}"))),
            Ok(_) => Ok(()),
            Err(_stopped) => Ok(()),
        }
    }

    /// Remembers the thread a message was handed over in (for its deletion).
    async fn remember_thread(&self, room: &str, message: &str, thread: Option<&str>) {
        let (key, value) = (
            format!("thread:{room}:{message}"),
            thread.unwrap_or("").to_owned(),
        );
        let ttl = Some(30 * 24 * 3600 * 1000);
        let _ = self
            .life
            .host_call(move |host| host.kv_set(&key, &value, ttl))
            .await;
    }

    /// Remembers a person's 1:1 space (for `open_dm`).
    pub(crate) async fn learn_direct(&self, person: &str, room: &str) {
        let (key, room) = (format!("dm-room:{person}"), room.to_owned());
        let ttl = Some(30 * 24 * 3600 * 1000);
        let stored = self
            .life
            .host_call(move |host| host.kv_set(&key, &room, ttl))
            .await;
        if let Ok(Err(e)) = stored {
            self.life
                .debug(format!("could not remember a 1:1 space: {e}"));
        }
    }

    /// Downloads each file with the token, from `file_hosts` only, within the size cap; a
    /// file that cannot be fetched arrives as a name-less attachment without content.
    async fn download_files(&self, urls: &[String]) -> Vec<Attachment> {
        let mut out = Vec::new();
        for raw in urls.iter().take(10) {
            let mut attachment = Attachment {
                kind: "file".into(),
                name: RString::new(),
                mime_type: RString::new(),
                size: 0,
                data: RVec::new(),
                url: RNone,
            };
            match self.download(raw).await {
                Ok((name, mime, data)) => {
                    attachment.kind = match mime.split('/').next().unwrap_or_default() {
                        "image" => "image",
                        "audio" => "audio",
                        "video" => "video",
                        _ => "file",
                    }
                    .into();
                    attachment.name = name.into();
                    attachment.mime_type = mime.into();
                    attachment.size = data.len() as u64;
                    attachment.data = data.into();
                }
                Err(e) => self.life.warn(format!("a file was not downloaded: {e}")),
            }
            out.push(attachment);
        }
        out
    }

    async fn download(&self, raw: &str) -> Result<(String, String, Vec<u8>), PluginError> {
        let url = Url::parse(raw)
            .map_err(|_| PluginError::invalid_input("the file URL does not parse"))?;
        // The token goes to Webex's own hosts only, never to a URL a message names.
        if !self
            .file_hosts
            .iter()
            .any(|allowed| same_origin(allowed, &url))
        {
            return Err(PluginError::invalid_input(format!(
                "file host {} is not an allowed Webex file host",
                url.host_str().unwrap_or("?")
            )));
        }
        let token = self.api.token();
        let request = self
            .api
            .client()
            .get(url)
            .bearer_auth(token.expose())
            .timeout(DOWNLOAD_TIMEOUT);
        let secrets = [token];
        let response = http::send(request, &secrets)
            .await
            .map_err(|e| e.to_plugin_error("file download"))?;
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        let mime = header("content-type");
        let name = file_name(&header("content-disposition")).unwrap_or_else(|| "file".to_owned());
        let data = http::read_capped(response, self.max_file_bytes, &secrets)
            .await
            .map_err(|e| e.to_plugin_error("file download"))?;
        Ok((name, mime, data))
    }

    /// Makes sure the bot's webhooks for `target` exist, are active and use the secret.
    pub(crate) async fn register_webhooks(&self, target: &str) -> Result<(), PluginError> {
        let down = |e: PluginError| {
            if e.kind == ErrorKind::AUTH {
                let reason = format!("Webex refused to list or create webhooks ({e})");
                self.life.health().down(reason.clone());
                PluginError::auth(reason)
            } else {
                e
            }
        };
        let mut list_url = self.api.url(&["webhooks"])?;
        list_url.query_pairs_mut().append_pair("max", "100");
        let existing: Items<WxWebhook> = self
            .api
            .call(Method::GET, list_url, "webhooks/list", None, Body::None)
            .await
            .map_err(down)?;
        for (resource, event) in WEBHOOKS {
            let name = format!("NanoClaw {resource} {event}");
            let found = existing
                .items
                .iter()
                .find(|h| h.target_url == target && h.resource == resource && h.event == event);
            let body = json!({
                "name": name, "targetUrl": target, "resource": resource, "event": event,
                "secret": self.secret.expose(),
            });
            match found {
                Some(h)
                    if h.status.as_deref().is_none_or(|s| s == "active")
                        && h.secret
                            .as_deref()
                            .is_none_or(|s| s == self.secret.expose()) =>
                {
                    self.life
                        .debug(format!("webhook {resource}:{event} is in place"));
                }
                Some(h) => {
                    let mut body = body;
                    body["status"] = json!("active");
                    let url = self.api.url(&["webhooks", &h.id])?;
                    self.api
                        .call::<Value>(Method::PUT, url, "webhooks/update", None, Body::Json(&body))
                        .await
                        .map_err(down)?;
                    self.life.info(format!(
                        "webhook {resource}:{event} reactivated with the secret"
                    ));
                }
                None => {
                    let url = self.api.url(&["webhooks"])?;
                    self.api
                        .call::<Value>(
                            Method::POST,
                            url,
                            "webhooks/create",
                            None,
                            Body::Json(&body),
                        )
                        .await
                        .map_err(down)?;
                    self.life
                        .info(format!("webhook {resource}:{event} registered"));
                }
            }
        }
        Ok(())
    }
}

/// The work a notification asks for.
enum Work {
    Message(EnvelopeData),
    Action(EnvelopeData),
    Deletion(EnvelopeData),
}

impl Work {
    fn name(&self) -> String {
        match self {
            Self::Message(d) => format!("message {}", d.id),
            Self::Action(d) => format!("card action {}", d.id),
            Self::Deletion(d) => format!("deletion of message {}", d.id),
        }
    }
}

fn same_origin(allowed: &Url, url: &Url) -> bool {
    allowed.scheme() == url.scheme()
        && allowed.host_str() == url.host_str()
        && allowed.port_or_known_default() == url.port_or_known_default()
}

/// `attachment; filename="x.png"` → `x.png` (only its last path component).
fn file_name(disposition: &str) -> Option<String> {
    let value = disposition
        .split(';')
        .map(str::trim)
        .find_map(|p| p.strip_prefix("filename="))?;
    let name = value.trim_matches('"');
    let base = http::multipart::safe_file_name(name);
    (!name.is_empty()).then_some(base)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names() {
        assert_eq!(
            file_name("attachment; filename=\"a b.png\"").as_deref(),
            Some("a b.png")
        );
        assert_eq!(
            file_name("attachment; filename=\"../../etc/passwd\"").as_deref(),
            Some("passwd")
        );
        assert_eq!(file_name("inline"), None);
    }

    #[test]
    fn times() {
        assert_eq!(
            parse_time_ms(Some("2015-10-18T14:26:16.203Z")),
            Some(1_445_178_376_203)
        );
        assert_eq!(parse_time_ms(Some("yesterday")), None);
        assert_eq!(parse_time_ms(None), None);
    }
}
