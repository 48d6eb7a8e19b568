//! WhatsApp → host: the verify-token handshake, then signed notifications: messages (media
//! downloaded), reply-button and list taps as actions, and statuses (failures reported to
//! the operator).

use std::time::Duration;

use nanoclaw_plugin_api::kit::http::{self, reqwest::Method, reqwest::Url};
use nanoclaw_plugin_api::kit::inbound::Offered;
use nanoclaw_plugin_api::kit::prelude::*;
use nanoclaw_plugin_api::kit::webhook::verify_hub_signature_256;
use nanoclaw_plugin_api::kit::{hmac_sha256_hex, now_ms, verify_hmac_sha256_hex};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::{Body, REENGAGEMENT, WINDOW_TEXT};
use crate::{Shared, WINDOW, is_wa_id};

/// Largest notification taken (Meta batches up to 1,000 updates; they are small).
const MAX_BODY: usize = 1024 * 1024;
const DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(20);
const FUTURE_SKEW_SECS: i64 = 5 * 60;
/// The longest `hub.challenge` echoed (Meta's are short numbers).
const MAX_CHALLENGE: usize = 128;

#[derive(Debug, Deserialize)]
struct Notification {
    object: String,
    #[serde(default)]
    entry: Vec<Entry>,
}

#[derive(Debug, Deserialize)]
struct Entry {
    #[serde(default)]
    changes: Vec<Change>,
}

#[derive(Debug, Deserialize)]
struct Change {
    #[serde(default)]
    field: String,
    #[serde(default)]
    value: ChangeValue,
}

#[derive(Debug, Default, Deserialize)]
struct ChangeValue {
    #[serde(default)]
    metadata: Option<Metadata>,
    #[serde(default)]
    contacts: Vec<Contact>,
    #[serde(default)]
    messages: Vec<WaMessage>,
    #[serde(default)]
    statuses: Vec<Status>,
}

#[derive(Debug, Deserialize)]
struct Metadata {
    #[serde(default)]
    phone_number_id: String,
}

#[derive(Debug, Deserialize)]
struct Contact {
    #[serde(default)]
    wa_id: String,
    #[serde(default)]
    profile: Option<Profile>,
}

#[derive(Debug, Deserialize)]
struct Profile {
    #[serde(default)]
    name: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
struct WaMessage {
    #[serde(default)]
    from: String,
    #[serde(default)]
    id: String,
    #[serde(default)]
    timestamp: Option<String>,
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    text: Option<TextBody>,
    #[serde(default)]
    image: Option<MediaRef>,
    #[serde(default)]
    audio: Option<MediaRef>,
    #[serde(default)]
    video: Option<MediaRef>,
    #[serde(default)]
    document: Option<MediaRef>,
    #[serde(default)]
    sticker: Option<MediaRef>,
    #[serde(default)]
    interactive: Option<Interactive>,
    #[serde(default)]
    button: Option<TemplateButton>,
    #[serde(default)]
    location: Option<Value>,
    #[serde(default)]
    contacts: Option<Vec<Value>>,
    #[serde(default)]
    context: Option<Context>,
}

#[derive(Debug, Clone, Deserialize)]
struct TextBody {
    #[serde(default)]
    body: String,
}

#[derive(Debug, Clone, Deserialize)]
struct MediaRef {
    #[serde(default)]
    id: String,
    #[serde(default)]
    mime_type: Option<String>,
    #[serde(default)]
    caption: Option<String>,
    #[serde(default)]
    filename: Option<String>,
    #[serde(default)]
    voice: bool,
}

#[derive(Debug, Clone, Deserialize)]
struct Interactive {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    button_reply: Option<Reply>,
    #[serde(default)]
    list_reply: Option<Reply>,
}

#[derive(Debug, Clone, Deserialize)]
struct Reply {
    #[serde(default)]
    id: String,
    #[serde(default)]
    title: String,
}

#[derive(Debug, Clone, Deserialize)]
struct TemplateButton {
    #[serde(default)]
    text: String,
}

#[derive(Debug, Clone, Deserialize)]
struct Context {
    #[serde(default)]
    id: String,
}

#[derive(Debug, Deserialize)]
struct Status {
    #[serde(default)]
    id: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    recipient_id: String,
    #[serde(default)]
    timestamp: Option<String>,
    #[serde(default)]
    errors: Vec<GraphError>,
}

#[derive(Debug, Deserialize)]
struct GraphError {
    #[serde(default)]
    code: i64,
    #[serde(default)]
    title: String,
    #[serde(default)]
    error_data: Option<ErrorData>,
}

#[derive(Debug, Deserialize)]
struct ErrorData {
    #[serde(default)]
    details: String,
}

/// `GET /{media-id}`.
#[derive(Debug, Deserialize)]
struct MediaInfo {
    url: String,
    #[serde(default)]
    mime_type: Option<String>,
    #[serde(default)]
    file_size: Option<u64>,
}

/// `a=1&b=x%20y` → pairs, decoded.
fn query_pairs(query: &str) -> Vec<(String, String)> {
    let mut url = Url::parse("http://query.invalid/").expect("a valid URL");
    url.set_query(Some(query));
    url.query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// Constant-time equality of a given token with the configured one: both are MACed under
/// the configured token and the MACs compared by the kit in constant time.
fn same_token(configured: &Secret, given: &str) -> bool {
    const PROBE: &[u8] = b"nanoclaw whatsapp verify token";
    let expected = configured.expose().as_bytes();
    let given_mac = hmac_sha256_hex(given.as_bytes(), PROBE);
    verify_hmac_sha256_hex(expected, PROBE, &given_mac)
}

fn seconds(ts: Option<&str>) -> Option<i64> {
    ts?.trim().parse().ok()
}

impl Shared {
    pub(crate) async fn handle_webhook(&self, request: WebhookRequest) -> WebhookResponse {
        match request.method.as_str() {
            "GET" => self.handshake(&request),
            "POST" => self.notification(&request).await,
            _ => WebhookResponse::text(405, "method not allowed"),
        }
    }

    /// Meta's subscription check: `hub.mode=subscribe`, our verify token, a challenge to
    /// echo. Anything else: 403, as Meta expects.
    fn handshake(&self, request: &WebhookRequest) -> WebhookResponse {
        let pairs = query_pairs(request.query.as_str());
        let get = |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        let challenge = get("hub.challenge").unwrap_or_default();
        let ok = get("hub.mode") == Some("subscribe")
            && same_token(
                &self.verify_token,
                get("hub.verify_token").unwrap_or_default(),
            )
            && !challenge.is_empty()
            && challenge.len() <= MAX_CHALLENGE
            && challenge
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if ok {
            self.life.info("answered Meta's webhook verification");
            WebhookResponse::text(200, challenge)
        } else {
            self.life
                .warn("refused a webhook verification (wrong mode, verify token or challenge)");
            WebhookResponse::text(403, "forbidden")
        }
    }

    async fn notification(&self, request: &WebhookRequest) -> WebhookResponse {
        let life = &self.life;
        if request.body.len() > MAX_BODY {
            life.warn(format!(
                "refused a webhook request of {} bytes",
                request.body.len()
            ));
            return WebhookResponse::text(413, "too large");
        }
        // The signature over the exact bytes first: nothing unverified is parsed or stored.
        if let Err(e) = verify_hub_signature_256(&self.app_secret, request) {
            life.warn(format!("refused a webhook request: {e}"));
            return e.response();
        }
        let note: Notification = match serde_json::from_slice(&request.body) {
            Ok(n) => n,
            Err(e) => return WebhookResponse::text(400, &format!("not a notification: {e}")),
        };
        if note.object != "whatsapp_business_account" {
            life.debug(format!("ignoring a notification for `{}`", note.object));
            return WebhookResponse::text(200, "");
        }
        let changes: Vec<ChangeValue> = note
            .entry
            .into_iter()
            .flat_map(|e| e.changes)
            .filter(|c| c.field == "messages")
            .map(|c| c.value)
            .filter(|v| {
                v.metadata
                    .as_ref()
                    .is_some_and(|m| m.phone_number_id == self.phone_number_id)
            })
            .collect();
        // Replays: a signed notification about something older than Meta's retry period
        // (or from the future) is refused.
        let now = now_ms() / 1000;
        let max_age = i64::try_from(self.max_event_age.as_secs()).unwrap_or(i64::MAX);
        let stamps = changes.iter().flat_map(|c| {
            c.messages
                .iter()
                .map(|m| m.timestamp.as_deref())
                .chain(c.statuses.iter().map(|s| s.timestamp.as_deref()))
        });
        for ts in stamps {
            let fresh =
                seconds(ts).is_some_and(|t| now - t <= max_age && t - now <= FUTURE_SKEW_SECS);
            if !fresh {
                life.warn(format!(
                    "refused a webhook request: an update of {} is outside the {} s window",
                    ts.unwrap_or("no time"),
                    self.max_event_age.as_secs()
                ));
                return WebhookResponse::text(401, "invalid signature");
            }
        }
        life.health().ingested();
        let mut again = false;
        for change in changes {
            for status in &change.statuses {
                self.status(status);
            }
            for message in &change.messages {
                let name = change
                    .contacts
                    .iter()
                    .find(|c| c.wa_id == message.from)
                    .and_then(|c| c.profile.as_ref())
                    .and_then(|p| p.name.clone());
                match self.message(message, name).await {
                    Ok(offered) if offered.redeliver() => again = true,
                    Ok(_) => {}
                    Err(_stopped) => again = true,
                }
            }
        }
        if again {
            WebhookResponse::text(503, "try again later")
        } else {
            WebhookResponse::text(200, "")
        }
    }

    /// A status of a message the business sent: failures are the operator's business.
    fn status(&self, status: &Status) {
        match status.status.as_str() {
            "failed" => {
                let reasons: Vec<String> = status
                    .errors
                    .iter()
                    .map(|e| {
                        if e.code == REENGAGEMENT {
                            format!("{WINDOW_TEXT} (error {REENGAGEMENT})")
                        } else {
                            let details = e.error_data.as_ref().map_or("", |d| d.details.as_str());
                            format!("error {}: {} {details}", e.code, e.title)
                        }
                    })
                    .collect();
                let reason = format!(
                    "a message to {} was not delivered: {}",
                    status.recipient_id,
                    if reasons.is_empty() {
                        "no reason given".to_owned()
                    } else {
                        reasons.join("; ")
                    }
                );
                self.life.error(format!("{reason} (message {})", status.id));
                self.life.health().degraded(reason);
            }
            "sent" | "delivered" | "read" => self.life.debug(format!(
                "message {} to {}: {}",
                status.id, status.recipient_id, status.status
            )),
            other => self
                .life
                .debug(format!("message {}: status {other}", status.id)),
        }
    }

    /// One user message: a tap becomes an action, anything else an inbound message.
    async fn message(
        &self,
        m: &WaMessage,
        name: Option<String>,
    ) -> Result<Offered, nanoclaw_plugin_api::kit::Stopped> {
        if !is_wa_id(&m.from) || m.id.is_empty() || m.id.len() > 256 {
            self.life
                .debug("ignoring a message without a usable sender or id");
            return Ok(Offered::Accepted);
        }
        self.note_inbound(
            &m.from,
            seconds(m.timestamp.as_deref()).unwrap_or(now_ms() / 1000),
        )
        .await;
        let sender = Sender {
            handle: m.from.clone().into(),
            display_name: name.clone().map(RString::from).into(),
            is_bot: false,
        };
        if m.kind == "interactive"
            && let Some(i) = &m.interactive
        {
            let reply = i.button_reply.as_ref().or(i.list_reply.as_ref());
            let Some(reply) = reply.filter(|r| !r.id.is_empty()) else {
                return Ok(Offered::Accepted);
            };
            let on = m.context.as_ref().map(|c| c.id.clone()).unwrap_or_default();
            let event = ActionEvent {
                chat_id: m.from.clone().into(),
                thread_id: RNone,
                message_id: on.into(),
                clicker: sender,
                action_id: reply.id.clone().into(),
                extra_json: json!({"title": reply.title, "kind": i.kind})
                    .to_string()
                    .into(),
            };
            let key = format!("{}:{}", m.from, m.id);
            return self
                .inbox
                .offer_once(&self.dedupe, &key, move |host| host.on_action(event))
                .await;
        }
        let (text, media) = match m.kind.as_str() {
            "text" => (
                m.text.as_ref().map(|t| t.body.clone()).unwrap_or_default(),
                None,
            ),
            "image" => caption(&m.image, "image"),
            "audio" => {
                let kind = if m.audio.as_ref().is_some_and(|a| a.voice) {
                    "voice"
                } else {
                    "audio"
                };
                caption(&m.audio, kind)
            }
            "video" => caption(&m.video, "video"),
            "document" => caption(&m.document, "file"),
            "sticker" => caption(&m.sticker, "image"),
            "button" => (
                m.button
                    .as_ref()
                    .map(|b| b.text.clone())
                    .unwrap_or_default(),
                None,
            ),
            "location" => (location_text(m.location.as_ref()), None),
            "contacts" => (contacts_text(m.contacts.as_deref()), None),
            other => {
                self.life
                    .debug(format!("ignoring a `{other}` message {}", m.id));
                return Ok(Offered::Accepted);
            }
        };
        let mut attachments = Vec::new();
        if let Some((media, kind)) = media {
            attachments.push(self.download(&media, kind).await);
        }
        let event = InboundEvent {
            chat_id: m.from.clone().into(),
            chat_name: name.map(RString::from).into(),
            thread_id: RNone,
            message_id: m.id.clone().into(),
            sender: RSome(sender),
            is_group: false,
            mentioned: true,
            text: text.into(),
            attachments: attachments.into(),
            reply_to: match &m.context {
                Some(c) if !c.id.is_empty() => RSome(QuotedMessage {
                    message_id: RSome(c.id.clone().into()),
                    sender: RNone,
                    text: RString::new(),
                }),
                _ => RNone,
            },
            timestamp_ms: seconds(m.timestamp.as_deref()).map_or_else(now_ms, |s| s * 1000),
            extra_json: RString::new(),
        };
        let key = format!("{}:{}", m.from, m.id);
        self.inbox
            .offer_once(&self.dedupe, &key, move |host| host.on_inbound(event))
            .await
    }

    /// Remembers when `wa_id` last wrote (the 24-hour window).
    async fn note_inbound(&self, wa_id: &str, at_secs: i64) {
        let key = format!("last-inbound:{wa_id}");
        let ttl = Some(u64::try_from(WINDOW.as_millis() * 2).unwrap_or(u64::MAX));
        let value = at_secs.to_string();
        let _ = self
            .life
            .host_call(move |host| {
                // Keep the newest (a late redelivery must not move the window back).
                let newer = host
                    .kv_get(&key)?
                    .and_then(|v| v.parse::<i64>().ok())
                    .is_none_or(|old| old < at_secs);
                if newer {
                    host.kv_set(&key, &value, ttl)?;
                }
                Ok(())
            })
            .await;
    }

    /// Media by id: its URL from the Graph API, then the bytes, from `media_hosts` only,
    /// within the cap. A failure leaves the attachment without content (and logs why).
    async fn download(&self, media: &MediaRef, kind: &str) -> Attachment {
        let mut attachment = Attachment {
            kind: kind.into(),
            name: media.filename.clone().unwrap_or_default().into(),
            mime_type: media.mime_type.clone().unwrap_or_default().into(),
            size: 0,
            data: RVec::new(),
            url: RNone,
        };
        match self.fetch_media(media).await {
            Ok(data) => {
                attachment.size = data.len() as u64;
                attachment.data = data.into();
            }
            Err(e) => self
                .life
                .warn(format!("media {} not downloaded: {e}", media.id)),
        }
        attachment
    }

    async fn fetch_media(&self, media: &MediaRef) -> Result<Vec<u8>, PluginError> {
        if media.id.is_empty() || !media.id.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(PluginError::invalid_input("not a media id"));
        }
        let url = self.api.url(&[&media.id])?;
        let info: MediaInfo = self
            .api
            .call(Method::GET, url, "media/get", None, Body::None)
            .await?;
        let cap = self.max_file_bytes;
        if info.file_size.is_some_and(|s| s > cap) {
            return Err(PluginError::invalid_input(format!(
                "larger than max_file_bytes ({cap})"
            )));
        }
        let url = Url::parse(&info.url)
            .map_err(|_| PluginError::invalid_input("the media URL does not parse"))?;
        // The token goes to Meta's media host only, never to any URL an answer names.
        if !self
            .media_hosts
            .iter()
            .any(|allowed| same_origin(allowed, &url))
        {
            return Err(PluginError::invalid_input(format!(
                "media host {} is not an allowed WhatsApp media host",
                url.host_str().unwrap_or("?")
            )));
        }
        let _ = info.mime_type;
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
            .map_err(|e| e.to_plugin_error("media download"))?;
        http::read_capped(response, cap, &secrets)
            .await
            .map_err(|e| e.to_plugin_error("media download"))
    }

    /// `start`: the business number must be readable with the token.
    pub(crate) async fn check_number(&self) -> Result<(), PluginError> {
        let mut url = self.api.url(&[&self.phone_number_id])?;
        url.query_pairs_mut()
            .append_pair("fields", "display_phone_number,verified_name");
        let number: Value = self
            .api
            .call(Method::GET, url, "phone number", None, Body::None)
            .await
            .map_err(|e| {
                if e.kind == ErrorKind::AUTH {
                    let reason =
                        format!("Meta refused the access token ({e}): check WHATSAPP_ACCESS_TOKEN");
                    self.life.health().down(reason.clone());
                    PluginError::auth(reason)
                } else {
                    e
                }
            })?;
        self.life.info(format!(
            "connected to WhatsApp as {} ({})",
            number["verified_name"].as_str().unwrap_or("?"),
            number["display_phone_number"].as_str().unwrap_or("?")
        ));
        Ok(())
    }
}

fn caption(
    media: &Option<MediaRef>,
    kind: &'static str,
) -> (String, Option<(MediaRef, &'static str)>) {
    match media {
        Some(m) => (
            m.caption.clone().unwrap_or_default(),
            Some((m.clone(), kind)),
        ),
        None => (String::new(), None),
    }
}

fn location_text(location: Option<&Value>) -> String {
    let Some(l) = location else {
        return String::new();
    };
    let place = [l["name"].as_str(), l["address"].as_str()]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(", ");
    let at = format!("{}, {}", l["latitude"], l["longitude"]);
    if place.is_empty() {
        format!("Location: {at}")
    } else {
        format!("Location: {place} ({at})")
    }
}

fn contacts_text(contacts: Option<&[Value]>) -> String {
    contacts
        .unwrap_or_default()
        .iter()
        .map(|c| {
            let name = c["name"]["formatted_name"].as_str().unwrap_or("?");
            let phones: Vec<&str> = c["phones"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| p["phone"].as_str())
                .collect();
            format!("Contact: {name} {}", phones.join(", "))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn same_origin(allowed: &Url, url: &Url) -> bool {
    allowed.scheme() == url.scheme()
        && allowed.host_str() == url.host_str()
        && allowed.port_or_known_default() == url.port_or_known_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare() {
        let t = Secret::new("verify-123");
        assert!(same_token(&t, "verify-123"));
        assert!(!same_token(&t, "verify-124"));
        assert!(!same_token(&t, ""));
    }

    #[test]
    fn places_and_contacts() {
        let l = json!({"latitude": 1.5, "longitude": 2, "name": "Cafe", "address": "Main St"});
        assert_eq!(location_text(Some(&l)), "Location: Cafe, Main St (1.5, 2)");
        let c = [json!({"name": {"formatted_name": "Ann"}, "phones": [{"phone": "+1 650"}]})];
        assert_eq!(contacts_text(Some(&c)), "Contact: Ann +1 650");
    }
}
