//! Bot Framework activities → host events: messages, edits, deletions, card clicks; the
//! rest acknowledged. Called only after the bearer token and the service URL were checked.

use std::time::Duration;

use base64::Engine as _;
use nanoclaw_plugin_api::kit::http::{self, reqwest::Url};
use nanoclaw_plugin_api::kit::inbound::Offered;
use nanoclaw_plugin_api::kit::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::Shared;

/// One file download, at most.
const DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(10);
/// The key an `Action.Submit` of ours carries its button id under.
pub(crate) const ACTION_KEY: &str = "nanoclaw_action";

/// A Bot Framework activity (the fields used).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Activity {
    #[serde(rename = "type", default)]
    pub(crate) kind: String,
    #[serde(default)]
    pub(crate) id: String,
    #[serde(default)]
    pub(crate) timestamp: Option<String>,
    #[serde(default)]
    pub(crate) service_url: String,
    #[serde(default)]
    pub(crate) channel_id: String,
    #[serde(default)]
    pub(crate) from: Option<Account>,
    #[serde(default)]
    pub(crate) conversation: Option<Conversation>,
    #[serde(default)]
    pub(crate) text: Option<String>,
    #[serde(default)]
    pub(crate) value: Option<Value>,
    #[serde(default)]
    pub(crate) name: Option<String>,
    #[serde(default)]
    pub(crate) reply_to_id: Option<String>,
    #[serde(default)]
    pub(crate) entities: Vec<Value>,
    #[serde(default)]
    pub(crate) attachments: Vec<InAttachment>,
    #[serde(default)]
    pub(crate) channel_data: Option<Value>,
    #[serde(default)]
    pub(crate) members_added: Vec<Account>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Account {
    #[serde(default)]
    pub(crate) id: String,
    #[serde(default)]
    pub(crate) name: Option<String>,
    #[serde(default)]
    pub(crate) aad_object_id: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Conversation {
    #[serde(default)]
    pub(crate) id: String,
    #[serde(default)]
    pub(crate) conversation_type: Option<String>,
    #[serde(default)]
    pub(crate) tenant_id: Option<String>,
    #[serde(default)]
    pub(crate) name: Option<String>,
    #[serde(default)]
    pub(crate) is_group: Option<bool>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct InAttachment {
    #[serde(default)]
    content_type: String,
    #[serde(default)]
    content_url: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    content: Option<Value>,
}

/// What is remembered about a user, for `open_dm`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct UserRoute {
    pub(crate) service_url: String,
    pub(crate) tenant_id: Option<String>,
}

/// Whether two service URLs are the same (case of scheme and host, trailing slash aside).
pub(crate) fn same_service_url(a: &str, b: &str) -> bool {
    match (Url::parse(a.trim()), Url::parse(b.trim())) {
        (Ok(a), Ok(b)) => {
            a.scheme() == b.scheme()
                && a.host_str() == b.host_str()
                && a.port_or_known_default() == b.port_or_known_default()
                && a.path().trim_end_matches('/') == b.path().trim_end_matches('/')
                && a.query().is_none()
                && b.query().is_none()
        }
        _ => false,
    }
}

/// `19:x@thread.tacv2;messageid=170…` → (`19:x@thread.tacv2`, `Some("170…")`).
pub(crate) fn split_conversation(id: &str) -> (&str, Option<&str>) {
    match id.split_once(";messageid=") {
        Some((base, root)) if !root.is_empty() => (base, Some(root)),
        Some((base, _)) => (base, None),
        None => (id, None),
    }
}

/// `<at>Claw</at> hi` → `@Claw hi`; the few entities Teams escapes, unescaped.
pub(crate) fn clean_text(text: &str) -> String {
    let text = text.replace("<at>", "@").replace("</at>", "");
    text.replace("&nbsp;", " ")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
        .trim()
        .to_owned()
}

/// ISO-8601 → ms since the epoch (0 = unknown: the host takes now).
fn millis(timestamp: Option<&str>) -> i64 {
    timestamp
        .and_then(|t| t.parse::<jiff::Timestamp>().ok())
        .map_or(0, |t| t.as_millisecond())
}

fn channel_data_str<'a>(a: &'a Activity, pointer: &str) -> Option<&'a str> {
    a.channel_data.as_ref()?.pointer(pointer)?.as_str()
}

impl Shared {
    /// Handles a verified activity; the answer for the Bot Framework.
    pub(crate) async fn handle_activity(&self, a: Activity) -> WebhookResponse {
        let ok = || WebhookResponse::text(200, "");
        let retry = || WebhookResponse::text(503, "try again later");
        if a.channel_id != "msteams" {
            self.life.debug(format!(
                "ignoring an activity from channel `{}`",
                a.channel_id
            ));
            return ok();
        }
        self.remember_routes(&a).await;
        match a.kind.as_str() {
            "message" => {
                let click = a
                    .value
                    .as_ref()
                    .and_then(|v| v.get(ACTION_KEY))
                    .and_then(Value::as_str)
                    .map(str::to_owned);
                let offered = match click {
                    Some(action) => self.offer_click(&a, &action).await,
                    None => self.offer_message(&a, None).await,
                };
                match offered {
                    Ok(o) if o.redeliver() => retry(),
                    Ok(_) => ok(),
                    Err(()) => retry(),
                }
            }
            "messageUpdate" => {
                if channel_data_str(&a, "/eventType") != Some("editMessage") {
                    return ok();
                }
                let edited = a.timestamp.clone().unwrap_or_default();
                match self.offer_message(&a, Some(edited)).await {
                    Ok(o) if o.redeliver() => retry(),
                    Ok(_) => ok(),
                    Err(()) => retry(),
                }
            }
            "messageDelete" => {
                if channel_data_str(&a, "/eventType") != Some("softDeleteMessage") {
                    return ok();
                }
                match self.offer_deletion(&a).await {
                    Ok(o) if o.redeliver() => retry(),
                    Ok(_) => ok(),
                    Err(()) => retry(),
                }
            }
            "invoke" if a.name.as_deref() == Some("adaptiveCard/action") => {
                let action = a
                    .value
                    .as_ref()
                    .and_then(|v| v.pointer("/action/data"))
                    .and_then(|d| d.get(ACTION_KEY))
                    .and_then(Value::as_str)
                    .map(str::to_owned);
                let Some(action) = action else {
                    return WebhookResponse::json(200, &invoke_answer("ignored"));
                };
                match self.offer_click(&a, &action).await {
                    Ok(o) if o.redeliver() => retry(),
                    Ok(_) => WebhookResponse::json(200, &invoke_answer("done")),
                    Err(()) => retry(),
                }
            }
            "invoke" => {
                self.life.debug(format!(
                    "invoke `{}` not handled",
                    a.name.as_deref().unwrap_or("")
                ));
                WebhookResponse::json(200, "{}")
            }
            "conversationUpdate" => {
                let bot = self.bot_id();
                if a.members_added.iter().any(|m| m.id == bot) {
                    self.life.info(format!(
                        "added to conversation {}",
                        a.conversation.as_ref().map_or("?", |c| c.id.as_str())
                    ));
                }
                ok()
            }
            other => {
                self.life.debug(format!("activity `{other}` acknowledged"));
                ok()
            }
        }
    }

    /// Remembers where a conversation and a user are reached (the verified service URL and
    /// the tenant), for replies and cold DMs.
    async fn remember_routes(&self, a: &Activity) {
        let Some(conversation) = &a.conversation else {
            return;
        };
        let (chat, _) = split_conversation(&conversation.id);
        if chat.is_empty() || a.service_url.is_empty() {
            return;
        }
        let tenant = conversation
            .tenant_id
            .clone()
            .or_else(|| channel_data_str(a, "/tenant/id").map(str::to_owned));
        let mut writes = vec![(format!("svc:{chat}"), a.service_url.clone())];
        if let Some(from) = &a.from
            && from.id.starts_with("29:")
        {
            let route = UserRoute {
                service_url: a.service_url.clone(),
                tenant_id: tenant,
            };
            if let Ok(text) = serde_json::to_string(&route) {
                writes.push((format!("user:{}", from.id), text));
            }
        }
        let result = self
            .life
            .host_call(move |host| {
                for (key, value) in &writes {
                    if host.kv_get(key)?.as_deref() != Some(value.as_str()) {
                        host.kv_set(key, value, None)?;
                    }
                }
                Ok(())
            })
            .await;
        if let Ok(Err(e)) = result {
            self.life
                .warn(format!("could not remember the route of {chat}: {e}"));
        }
    }

    /// The service URL replies in `chat` go to: the one its activities came from.
    pub(crate) async fn service_url(&self, chat: &str) -> String {
        let key = format!("svc:{chat}");
        match self.life.host_call(move |host| host.kv_get(&key)).await {
            Ok(Ok(Some(url))) => url,
            _ => self.default_service_url.clone(),
        }
    }

    /// A message (or, with `edited`, an edit of one) handed over once.
    async fn offer_message(&self, a: &Activity, edited: Option<String>) -> Result<Offered, ()> {
        let Some(event) = self.message_event(a, edited.as_deref()).await else {
            return Ok(Offered::Accepted);
        };
        let key = format!("{}:{}", event.chat_id, event.message_id);
        self.inbox
            .offer_once(&self.dedupe, &key, move |host| host.on_inbound(event))
            .await
            .map_err(drop)
    }

    async fn message_event(&self, a: &Activity, edited: Option<&str>) -> Option<InboundEvent> {
        let conversation = a.conversation.as_ref()?;
        let from = a.from.as_ref().filter(|f| !f.id.is_empty())?;
        if from.id == self.bot_id() || a.id.is_empty() {
            return None;
        }
        let (chat, root) = split_conversation(&conversation.id);
        if chat.is_empty() {
            return None;
        }
        let kind =
            conversation
                .conversation_type
                .as_deref()
                .unwrap_or(if chat.starts_with("19:") {
                    "groupChat"
                } else {
                    "personal"
                });
        let is_dm = kind == "personal";
        let bot = self.bot_id();
        let mentioned_bot = a.entities.iter().any(|e| {
            e["type"] == "mention"
                && e.pointer("/mentioned/id")
                    .and_then(Value::as_str)
                    .is_some_and(|id| id == bot || id.ends_with(&format!(":{}", self.app_id)))
        });
        // Channels: a top-level post is the root of its own thread; replies name their root.
        let thread = match kind {
            "channel" => Some(root.unwrap_or(a.id.as_str()).to_owned()),
            _ => None,
        };
        let text = clean_text(a.text.as_deref().unwrap_or_default());
        let attachments = self.download(a).await;
        if text.is_empty() && attachments.is_empty() {
            return None;
        }
        let message_id = match edited {
            Some(at) => format!("{}:edit:{at}", a.id),
            None => a.id.clone(),
        };
        let mut extra = serde_json::Map::new();
        if edited.is_some() {
            extra.insert("edit_of".into(), json!(a.id));
        }
        if let Some(aad) = &from.aad_object_id {
            extra.insert("aad_object_id".into(), json!(aad));
        }
        if let Some(reply) = &a.reply_to_id {
            extra.insert("reply_to_id".into(), json!(reply));
        }
        if let Some(team) = channel_data_str(a, "/team/id") {
            extra.insert("team_id".into(), json!(team));
        }
        let chat_name = conversation
            .name
            .clone()
            .or_else(|| channel_data_str(a, "/channel/name").map(str::to_owned));
        Some(InboundEvent {
            chat_id: chat.into(),
            chat_name: chat_name.map(RString::from).into(),
            thread_id: thread.map(RString::from).into(),
            message_id: message_id.into(),
            sender: RSome(Sender {
                handle: from.id.clone().into(),
                display_name: from.name.clone().map(RString::from).into(),
                is_bot: from.id.starts_with("28:"),
            }),
            is_group: !is_dm || conversation.is_group == Some(true),
            mentioned: is_dm || mentioned_bot,
            text: text.into(),
            attachments: attachments.into(),
            reply_to: RNone,
            timestamp_ms: millis(a.timestamp.as_deref()),
            extra_json: Value::Object(extra).to_string().into(),
        })
    }

    /// A deletion of a user's message, handed over once, in the thread the message had.
    async fn offer_deletion(&self, a: &Activity) -> Result<Offered, ()> {
        let Some(conversation) = &a.conversation else {
            return Ok(Offered::Accepted);
        };
        let (chat, root) = split_conversation(&conversation.id);
        if chat.is_empty() || a.id.is_empty() {
            return Ok(Offered::Accepted);
        }
        let thread = match conversation.conversation_type.as_deref() {
            Some("channel") => Some(root.unwrap_or(a.id.as_str()).to_owned()),
            _ => None,
        };
        let key = format!("{chat}:{}:deleted", a.id);
        let event = DeletionEvent {
            chat_id: chat.into(),
            thread_id: thread.map(RString::from).into(),
            message_id: a.id.clone().into(),
        };
        self.inbox
            .offer_once(&self.dedupe, &key, move |host| host.on_deleted(event))
            .await
            .map_err(drop)
    }

    /// A card button click, handed over once per click.
    async fn offer_click(&self, a: &Activity, action: &str) -> Result<Offered, ()> {
        let (Some(conversation), Some(from)) = (&a.conversation, &a.from) else {
            return Ok(Offered::Accepted);
        };
        let (chat, root) = split_conversation(&conversation.id);
        if from.id.is_empty() || chat.is_empty() {
            return Ok(Offered::Accepted);
        }
        let card = a.reply_to_id.clone().unwrap_or_default();
        let key = format!("action:{chat}:{}", a.id);
        let mut extra = json!({ "value": action });
        if let Some(aad) = &from.aad_object_id {
            extra["aad_object_id"] = json!(aad);
        }
        let event = ActionEvent {
            chat_id: chat.into(),
            thread_id: root.map(RString::from).into(),
            message_id: card.into(),
            clicker: Sender {
                handle: from.id.clone().into(),
                display_name: from.name.clone().map(RString::from).into(),
                is_bot: false,
            },
            action_id: action.into(),
            extra_json: extra.to_string().into(),
        };
        self.inbox
            .offer_once(&self.dedupe, &key, move |host| host.on_action(event))
            .await
            .map_err(drop)
    }

    /// Files of a message: Teams' file download info (a pre-authorised URL) and inline
    /// images under the activity's service URL (fetched with the bot token).
    async fn download(&self, a: &Activity) -> Vec<Attachment> {
        let mut out = Vec::new();
        for att in &a.attachments {
            let (url, name, mime, with_token) =
                if att.content_type == "application/vnd.microsoft.teams.file.download.info" {
                    let Some(content) = &att.content else {
                        continue;
                    };
                    let url = content["downloadUrl"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned();
                    let mime = match content["fileType"].as_str().unwrap_or_default() {
                        "png" => "image/png",
                        "jpg" | "jpeg" => "image/jpeg",
                        "gif" => "image/gif",
                        "pdf" => "application/pdf",
                        "txt" => "text/plain",
                        _ => "application/octet-stream",
                    };
                    (url, att.name.clone(), mime.to_owned(), false)
                } else if att.content_type.starts_with("image/")
                    || att.content_type == "application/octet-stream"
                {
                    let Some(url) = att.content_url.clone() else {
                        continue;
                    };
                    (url, att.name.clone(), att.content_type.clone(), true)
                } else {
                    // Cards, HTML renderings of the text and the like: not files.
                    continue;
                };
            let kind = if mime.starts_with("image/") {
                "image"
            } else {
                "file"
            };
            let mut attachment = Attachment {
                kind: kind.into(),
                name: name.unwrap_or_default().into(),
                mime_type: mime.into(),
                size: 0,
                data: RVec::new(),
                url: RNone,
            };
            match self.fetch(&url, with_token, &a.service_url).await {
                Ok(data) => {
                    attachment.size = data.len() as u64;
                    attachment.data = data.into();
                }
                Err(e) => self
                    .life
                    .warn(format!("a file of {} not downloaded: {e}", a.id)),
            }
            out.push(attachment);
        }
        out
    }

    async fn fetch(
        &self,
        raw: &str,
        with_token: bool,
        service_url: &str,
    ) -> Result<Vec<u8>, PluginError> {
        if let Some(data) = raw.strip_prefix("data:") {
            // An inline image: `data:image/png;base64,…`.
            let (_, encoded) = data
                .split_once(";base64,")
                .ok_or_else(|| PluginError::invalid_input("a data URL that is not base64"))?;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .map_err(|_| PluginError::invalid_input("bad base64 in a data URL"))?;
            if bytes.len() as u64 > self.max_file_bytes {
                return Err(PluginError::invalid_input("larger than max_file_bytes"));
            }
            return Ok(bytes);
        }
        let url = Url::parse(raw)
            .map_err(|_| PluginError::invalid_input("a file URL that does not parse"))?;
        if url.scheme() != "https" && !is_loopback(&url) {
            return Err(PluginError::invalid_input("file URLs must be https"));
        }
        let mut request = self.client.get(url.clone()).timeout(DOWNLOAD_TIMEOUT);
        let mut secrets = Vec::new();
        if with_token {
            // The bot token goes only to the (verified) service URL's own host.
            let trusted = Url::parse(service_url).is_ok_and(|s| {
                s.scheme() == url.scheme()
                    && s.host_str() == url.host_str()
                    && s.port_or_known_default() == url.port_or_known_default()
            });
            if !trusted {
                return Err(PluginError::invalid_input(
                    "an inline file outside the service URL's host",
                ));
            }
            let token = self.tokens.token().await?;
            request = request.bearer_auth(token.expose());
            secrets.push(token);
        }
        let refs: Vec<&Secret> = secrets.iter().collect();
        let response = http::send(request, &refs)
            .await
            .map_err(|e| e.to_plugin_error("file download"))?;
        http::read_capped(response, self.max_file_bytes, &refs)
            .await
            .map_err(|e| e.to_plugin_error("file download"))
    }
}

fn is_loopback(url: &Url) -> bool {
    url.host_str().is_some_and(|h| {
        h == "localhost"
            || h.trim_matches(['[', ']'])
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    })
}

/// The answer to an `adaptiveCard/action` invoke.
fn invoke_answer(text: &str) -> String {
    json!({
        "statusCode": 200,
        "type": "application/vnd.microsoft.activity.message",
        "value": text,
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversation_ids_and_text() {
        assert_eq!(
            split_conversation("19:abc@thread.tacv2;messageid=1700"),
            ("19:abc@thread.tacv2", Some("1700"))
        );
        assert_eq!(split_conversation("a:1xyz"), ("a:1xyz", None));
        assert_eq!(clean_text("<at>Claw</at> hi &amp; bye "), "@Claw hi & bye");
        assert_eq!(millis(Some("2026-12-03T15:00:00.250Z")), 1_796_310_000_250);
        assert_eq!(millis(None), 0);
    }

    #[test]
    fn service_urls_compare_without_slash_and_case() {
        assert!(same_service_url(
            "https://smba.trafficmanager.net/amer/",
            "https://SMBA.trafficmanager.net/amer"
        ));
        assert!(!same_service_url(
            "https://smba.trafficmanager.net/amer/",
            "https://evil.example/amer/"
        ));
        assert!(!same_service_url(
            "",
            "https://smba.trafficmanager.net/amer/"
        ));
        assert!(!same_service_url(
            "https://smba.trafficmanager.net/amer/",
            "https://smba.trafficmanager.net/emea/"
        ));
    }
}
