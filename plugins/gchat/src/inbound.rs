//! Google Chat interaction events → host events. Called only after Google's token was
//! checked. Reads the classic event shape and the Workspace add-on shape.

use std::time::Duration;

use nanoclaw_plugin_api::kit::http;
use nanoclaw_plugin_api::kit::inbound::Offered;
use nanoclaw_plugin_api::kit::prelude::*;
use serde_json::{Value, json};

use crate::Shared;

const DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(10);
/// The parameter our buttons carry their id in.
pub(crate) const ACTION_PARAM: &str = "action_id";

/// An event, whatever its shape.
struct Event<'a> {
    kind: &'a str,
    message: Option<&'a Value>,
    user: Option<&'a Value>,
    space: Option<&'a Value>,
    action: Option<String>,
    time: Option<&'a str>,
}

fn normalize(e: &Value) -> Event<'_> {
    if let Some(chat) = e.get("chat").filter(|c| c.is_object()) {
        let (kind, payload) = if let Some(p) = chat.get("messagePayload") {
            ("MESSAGE", Some(p))
        } else if let Some(p) = chat.get("buttonClickedPayload") {
            ("CARD_CLICKED", Some(p))
        } else if let Some(p) = chat.get("addedToSpacePayload") {
            ("ADDED_TO_SPACE", Some(p))
        } else if let Some(p) = chat.get("removedFromSpacePayload") {
            ("REMOVED_FROM_SPACE", Some(p))
        } else {
            ("OTHER", None)
        };
        let action = e
            .pointer("/commonEventObject/parameters")
            .and_then(|p| p.get(ACTION_PARAM))
            .and_then(Value::as_str)
            .map(str::to_owned);
        return Event {
            kind,
            message: payload.and_then(|p| p.get("message")),
            user: chat.get("user"),
            space: payload.and_then(|p| p.get("space")),
            action,
            time: chat.get("eventTime").and_then(Value::as_str),
        };
    }
    let action = e
        .pointer("/common/parameters")
        .and_then(|p| p.get(ACTION_PARAM))
        .and_then(Value::as_str)
        .map(str::to_owned)
        .or_else(|| {
            e.pointer("/action/parameters")
                .and_then(Value::as_array)
                .and_then(|ps| ps.iter().find(|p| p["key"] == ACTION_PARAM))
                .and_then(|p| p["value"].as_str())
                .map(str::to_owned)
        });
    let message = e.get("message");
    Event {
        kind: e.get("type").and_then(Value::as_str).unwrap_or("OTHER"),
        message,
        user: e.get("user"),
        space: e
            .get("space")
            .or_else(|| message.and_then(|m| m.get("space"))),
        action,
        time: e.get("eventTime").and_then(Value::as_str),
    }
}

fn str_at<'a>(v: Option<&'a Value>, pointer: &str) -> Option<&'a str> {
    v?.pointer(pointer)?.as_str().filter(|s| !s.is_empty())
}

/// Whether a space is a DM with the app.
fn is_dm(space: Option<&Value>) -> bool {
    str_at(space, "/spaceType") == Some("DIRECT_MESSAGE")
        || str_at(space, "/type") == Some("DM")
        || space
            .and_then(|s| s.get("singleUserBotDm"))
            .and_then(Value::as_bool)
            .unwrap_or(false)
}

/// A resource name as the API writes them: `spaces/…`, `users/…`, no path tricks.
pub(crate) fn valid_name(name: &str, prefix: &str) -> bool {
    name.starts_with(prefix)
        && name.len() <= 512
        && !name.contains("..")
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/_-.".contains(c))
}

fn millis(timestamp: Option<&str>) -> i64 {
    timestamp
        .and_then(|t| t.parse::<jiff::Timestamp>().ok())
        .map_or(0, |t| t.as_millisecond())
}

impl Shared {
    /// Handles a verified event; the answer for Google.
    pub(crate) async fn handle_event(&self, raw: &Value) -> WebhookResponse {
        let ok = || WebhookResponse::json(200, "{}");
        let retry = || WebhookResponse::text(503, "try again later");
        let e = normalize(raw);
        let offered = match e.kind {
            "MESSAGE" => self.offer_message(&e).await,
            "ADDED_TO_SPACE" => {
                self.life.info(format!(
                    "added to {}",
                    str_at(e.space, "/name").unwrap_or("a space")
                ));
                // Added with a mention: the message is for the agent too.
                if e.message.is_some() {
                    self.offer_message(&e).await
                } else {
                    Ok(Offered::Accepted)
                }
            }
            "REMOVED_FROM_SPACE" => {
                self.life.info(format!(
                    "removed from {}",
                    str_at(e.space, "/name").unwrap_or("a space")
                ));
                Ok(Offered::Accepted)
            }
            "CARD_CLICKED" => self.offer_click(&e).await,
            other => {
                self.life.debug(format!("event `{other}` acknowledged"));
                Ok(Offered::Accepted)
            }
        };
        match offered {
            Ok(o) if o.redeliver() => retry(),
            Ok(_) => ok(),
            Err(()) => retry(),
        }
    }

    async fn offer_message(&self, e: &Event<'_>) -> Result<Offered, ()> {
        let Some(event) = self.message_event(e).await else {
            return Ok(Offered::Accepted);
        };
        let key = event.message_id.to_string();
        self.inbox
            .offer_once(&self.dedupe, &key, move |host| host.on_inbound(event))
            .await
            .map_err(drop)
    }

    async fn message_event(&self, e: &Event<'_>) -> Option<InboundEvent> {
        let m = e.message?;
        let name = str_at(Some(m), "/name")?;
        let space_value = e.space.or_else(|| m.get("space"));
        let space = str_at(space_value, "/name")?;
        if !valid_name(name, "spaces/") || !valid_name(space, "spaces/") {
            return None;
        }
        let sender = m.get("sender").or(e.user)?;
        let sender_name = str_at(Some(sender), "/name")?;
        if str_at(Some(sender), "/type") == Some("BOT") {
            return None;
        }
        let dm = is_dm(space_value);
        let mentioned_app = m
            .get("annotations")
            .and_then(Value::as_array)
            .is_some_and(|a| {
                a.iter().any(|x| {
                    x["type"] == "USER_MENTION"
                        && x.pointer("/userMention/user/type") == Some(&json!("BOT"))
                })
            });
        let thread = if dm {
            None
        } else {
            str_at(Some(m), "/thread/name").filter(|t| valid_name(t, "spaces/"))
        };
        let text = m
            .get("text")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .trim()
            .to_owned();
        let attachments = self.download(m).await;
        if text.is_empty() && attachments.is_empty() {
            return None;
        }
        let mut extra = serde_json::Map::new();
        if let Some(arg) = m.get("argumentText").and_then(Value::as_str) {
            extra.insert("argument_text".into(), json!(arg.trim()));
        }
        if let Some(email) = str_at(Some(sender), "/email") {
            extra.insert("email".into(), json!(email));
        }
        Some(InboundEvent {
            chat_id: space.into(),
            chat_name: str_at(space_value, "/displayName")
                .map(RString::from)
                .into(),
            thread_id: thread.map(RString::from).into(),
            message_id: name.into(),
            sender: RSome(Sender {
                handle: sender_name.into(),
                display_name: str_at(Some(sender), "/displayName")
                    .map(RString::from)
                    .into(),
                is_bot: false,
            }),
            is_group: !dm,
            mentioned: dm || mentioned_app,
            text: text.into(),
            attachments: attachments.into(),
            reply_to: RNone,
            timestamp_ms: millis(str_at(Some(m), "/createTime").or(e.time)),
            extra_json: Value::Object(extra).to_string().into(),
        })
    }

    async fn offer_click(&self, e: &Event<'_>) -> Result<Offered, ()> {
        let (Some(action), Some(user)) = (e.action.clone(), str_at(e.user, "/name")) else {
            self.life
                .debug("a card click without our action or a user: ignored");
            return Ok(Offered::Accepted);
        };
        let message = str_at(e.message, "/name").unwrap_or_default();
        let space = str_at(e.space, "/name")
            .or_else(|| str_at(e.message, "/space/name"))
            .unwrap_or_default();
        if !valid_name(space, "spaces/") {
            return Ok(Offered::Accepted);
        }
        let thread = if is_dm(e.space) {
            None
        } else {
            str_at(e.message, "/thread/name")
        };
        let key = format!("action:{message}:{user}:{}", e.time.unwrap_or_default());
        let event = ActionEvent {
            chat_id: space.into(),
            thread_id: thread.map(RString::from).into(),
            message_id: message.into(),
            clicker: Sender {
                handle: user.into(),
                display_name: str_at(e.user, "/displayName").map(RString::from).into(),
                is_bot: false,
            },
            action_id: action.clone().into(),
            extra_json: json!({ "value": action }).to_string().into(),
        };
        self.inbox
            .offer_once(&self.dedupe, &key, move |host| host.on_action(event))
            .await
            .map_err(drop)
    }

    /// Uploaded attachments through `media.download`, with the app's token.
    async fn download(&self, m: &Value) -> Vec<Attachment> {
        let mut out = Vec::new();
        for a in m
            .get("attachment")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let mime = a["contentType"].as_str().unwrap_or_default().to_owned();
            let kind = match mime.split('/').next().unwrap_or_default() {
                "image" => "image",
                "audio" => "audio",
                "video" => "video",
                _ => "file",
            };
            let mut attachment = Attachment {
                kind: kind.into(),
                name: a["contentName"].as_str().unwrap_or_default().into(),
                mime_type: mime.into(),
                size: 0,
                data: RVec::new(),
                url: RNone,
            };
            match a
                .pointer("/attachmentDataRef/resourceName")
                .and_then(Value::as_str)
            {
                Some(resource) => match self.fetch(resource).await {
                    Ok(data) => {
                        attachment.size = data.len() as u64;
                        attachment.data = data.into();
                    }
                    Err(e) => self
                        .life
                        .warn(format!("an attachment was not downloaded: {e}")),
                },
                // Drive files: the link only (the app cannot read the user's Drive).
                None => {
                    let link = a
                        .pointer("/driveDataRef/driveFileId")
                        .and_then(Value::as_str);
                    attachment.url = link
                        .map(|id| RString::from(format!("https://drive.google.com/file/d/{id}")))
                        .into();
                }
            }
            out.push(attachment);
        }
        out
    }

    async fn fetch(&self, resource: &str) -> Result<Vec<u8>, PluginError> {
        let valid = !resource.is_empty()
            && resource.len() <= 2048
            && !resource.contains("..")
            && resource
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "/_-.=+".contains(c));
        if !valid {
            return Err(PluginError::invalid_input(
                "an attachment resource name that is not one",
            ));
        }
        let token = self.tokens.token().await?;
        let url = format!("{}/media/{resource}?alt=media", self.api);
        let request = self
            .client
            .get(url)
            .bearer_auth(token.expose())
            .timeout(DOWNLOAD_TIMEOUT);
        let secrets = [&token];
        let response = http::send(request, &secrets)
            .await
            .map_err(|e| e.to_plugin_error("media download"))?;
        http::read_capped(response, self.max_file_bytes, &secrets)
            .await
            .map_err(|e| e.to_plugin_error("media download"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_shapes() {
        assert!(valid_name("spaces/AAAA/messages/BBB.CCC", "spaces/"));
        assert!(!valid_name("spaces/../x", "spaces/"));
        assert!(!valid_name("users/1", "spaces/"));
        assert!(!valid_name("spaces/a?b", "spaces/"));
        let classic = json!({"type": "CARD_CLICKED", "action": {"actionMethodName": "nanoclaw",
            "parameters": [{"key": "action_id", "value": "ncq:q:1"}]}});
        assert_eq!(normalize(&classic).action.as_deref(), Some("ncq:q:1"));
        let addon = json!({"chat": {"buttonClickedPayload": {"message": {}, "space": {}}},
            "commonEventObject": {"parameters": {"action_id": "ncq:q:2"}}});
        let n = normalize(&addon);
        assert_eq!(
            (n.kind, n.action.as_deref()),
            ("CARD_CLICKED", Some("ncq:q:2"))
        );
        assert!(is_dm(Some(&json!({"spaceType": "DIRECT_MESSAGE"}))));
        assert!(!is_dm(Some(&json!({"spaceType": "SPACE"}))));
    }
}
