//! Host → WhatsApp: one prepared part per `deliver`: a text, reply buttons (up to three) or
//! a list (up to ten rows), media (uploaded, then sent by id), a reaction; the 24-hour
//! window checked first for users the channel has heard from.

use nanoclaw_plugin_api::kit::http::reqwest::{Method, multipart};
use nanoclaw_plugin_api::kit::http::{self, multipart::outbound_file_part};
use nanoclaw_plugin_api::kit::now_ms;
use nanoclaw_plugin_api::kit::prelude::*;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::{Body, WINDOW_TEXT};
use crate::{Shared, WINDOW, is_wa_id};

/// A text message's limit, in characters.
pub(crate) const MAX_TEXT_CHARS: usize = 4096;
/// An interactive message's body with reply buttons.
const MAX_BUTTON_BODY: usize = 1024;
/// Reply buttons per message.
const MAX_REPLY_BUTTONS: usize = 3;
/// A reply button's title.
const MAX_BUTTON_TITLE: usize = 20;
/// Rows in a list.
const MAX_LIST_ROWS: usize = 10;
/// A list row's title and description.
const MAX_ROW_TITLE: usize = 24;
const MAX_ROW_DESCRIPTION: usize = 72;
/// A button or row id.
const MAX_CHOICE_ID: usize = 200;
/// What the list's button says.
const LIST_BUTTON: &str = "Choose";

fn cut(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut out: String = text.chars().take(max - 1).collect();
    out.push('…');
    out
}

/// The interactive object for a part's buttons: reply buttons for up to three, a list for
/// more (up to ten).
pub(crate) fn interactive(body: &str, buttons: &[Button]) -> Result<Value, PluginError> {
    if buttons.len() > MAX_LIST_ROWS {
        return Err(PluginError::invalid_input(format!(
            "WhatsApp shows at most {MAX_LIST_ROWS} choices, not {}",
            buttons.len()
        )));
    }
    for b in buttons {
        let id = b.id.as_str();
        if id.is_empty() || id.chars().count() > MAX_CHOICE_ID {
            return Err(PluginError::invalid_input(format!(
                "button id `{id}` must be 1-{MAX_CHOICE_ID} characters"
            )));
        }
    }
    let label = |b: &Button| {
        let l = b.label.as_str().trim();
        if l.is_empty() {
            b.id.to_string()
        } else {
            l.to_owned()
        }
    };
    if buttons.len() <= MAX_REPLY_BUTTONS {
        // Titles must be unique: a cut that makes two equal gets a number.
        let mut titles: Vec<String> = Vec::new();
        for (i, b) in buttons.iter().enumerate() {
            let mut t = cut(&label(b), MAX_BUTTON_TITLE);
            if titles.contains(&t) {
                t = format!("{} {}", cut(&label(b), MAX_BUTTON_TITLE - 3), i + 1);
            }
            titles.push(t);
        }
        let list: Vec<Value> = buttons
            .iter()
            .zip(titles)
            .map(|(b, t)| json!({"type": "reply", "reply": {"id": b.id.as_str(), "title": t}}))
            .collect();
        return Ok(json!({
            "type": "button",
            "body": {"text": cut(body, MAX_BUTTON_BODY)},
            "action": {"buttons": list},
        }));
    }
    let rows: Vec<Value> = buttons
        .iter()
        .map(|b| {
            let full = label(b);
            let mut row = json!({"id": b.id.as_str(), "title": cut(&full, MAX_ROW_TITLE)});
            if full.chars().count() > MAX_ROW_TITLE {
                row["description"] = json!(cut(&full, MAX_ROW_DESCRIPTION));
            }
            row
        })
        .collect();
    Ok(json!({
        "type": "list",
        "body": {"text": cut(body, MAX_TEXT_CHARS)},
        "action": {"button": LIST_BUTTON, "sections": [{"rows": rows}]},
    }))
}

/// Names the host uses → emoji.
pub(crate) fn reaction_emoji(name: &str) -> Result<String, PluginError> {
    let key = name
        .trim()
        .trim_matches(':')
        .to_ascii_lowercase()
        .replace('-', "_");
    let emoji = match key.as_str() {
        "thumbs_up" | "thumbsup" | "+1" | "like" | "yes" => "👍",
        "thumbs_down" | "thumbsdown" | "-1" | "dislike" | "no" => "👎",
        "heart" | "love" | "red_heart" => "❤️",
        "check" | "done" | "ok" | "white_check_mark" => "✅",
        "eyes" | "looking" | "seen" => "👀",
        "fire" => "🔥",
        "laugh" | "joy" => "😂",
        "tada" | "party" | "celebrate" => "🎉",
        "pray" | "thanks" => "🙏",
        "thinking" | "think" | "thinking_face" => "🤔",
        "100" => "💯",
        "rocket" => "🚀",
        "wave" => "👋",
        "" => return Err(PluginError::invalid_input("react without a reaction")),
        // An emoji itself: a short run without ASCII letters.
        _ if !key.is_ascii() && key.chars().count() <= 8 => return Ok(name.trim().to_owned()),
        _ => {
            return Err(PluginError::invalid_input(format!(
                "reaction `{name}` is not an emoji WhatsApp takes (use thumbs_up, heart, check, \
                 eyes, or an emoji)"
            )));
        }
    };
    Ok(emoji.to_owned())
}

#[derive(Deserialize)]
struct SendAnswer {
    #[serde(default)]
    messages: Vec<SentId>,
}

#[derive(Deserialize)]
struct SentId {
    id: String,
}

#[derive(Deserialize)]
struct Uploaded {
    id: String,
}

fn media_kind(mime: &str) -> &'static str {
    match mime.split('/').next().unwrap_or_default() {
        "image" if mime != "image/webp" && mime != "image/svg+xml" => "image",
        "audio" => "audio",
        "video" => "video",
        _ => "document",
    }
}

impl Shared {
    pub(crate) async fn deliver(
        &self,
        part: &OutboundMessage,
    ) -> Result<Option<String>, PluginError> {
        let to = part.chat_id.as_str();
        if !is_wa_id(to) {
            return Err(PluginError::invalid_input(format!(
                "`{to}` is not a WhatsApp id (the phone number in digits)"
            )));
        }
        match part.op {
            OutboundOp::SEND => {
                self.check_window(to).await?;
                self.send(to, part).await
            }
            OutboundOp::REACT => {
                let target = match &part.target_message_id {
                    RSome(id) if !id.is_empty() => id.as_str(),
                    _ => {
                        return Err(PluginError::invalid_input(
                            "react without target_message_id",
                        ));
                    }
                };
                self.check_window(to).await?;
                let emoji = reaction_emoji(part.reaction.as_str())?;
                let body =
                    json!({"type": "reaction", "reaction": {"message_id": target, "emoji": emoji}});
                self.post(to, body, None).await?;
                Ok(None)
            }
            other => Err(PluginError::unsupported(format_args!("operation {other}"))),
        }
    }

    /// A user last heard from more than 24 hours ago cannot get a free-form message: say so
    /// now rather than have it fail later. (Unknown users are tried; Meta's status says.)
    async fn check_window(&self, to: &str) -> Result<(), PluginError> {
        let key = format!("last-inbound:{to}");
        let last = match self.life.host_call(move |host| host.kv_get(&key)).await {
            Ok(Ok(v)) => v.and_then(|v| v.parse::<i64>().ok()),
            _ => None,
        };
        let window = i64::try_from(WINDOW.as_secs()).unwrap_or(i64::MAX);
        if let Some(at) = last
            && now_ms() / 1000 - at >= window
        {
            let reason = format!("not sent to {to}: {WINDOW_TEXT}");
            self.life.warn(&reason);
            self.life.health().degraded(reason);
            return Err(PluginError::invalid_input(format!(
                "WhatsApp: {WINDOW_TEXT}"
            )));
        }
        Ok(())
    }

    async fn send(&self, to: &str, part: &OutboundMessage) -> Result<Option<String>, PluginError> {
        for file in part.files.iter() {
            let limit = match media_kind(file.mime_type.as_str()) {
                "image" => 5 * 1024 * 1024,
                "audio" | "video" => 16 * 1024 * 1024,
                _ => 100 * 1024 * 1024,
            };
            http::check_upload_size(file, limit, "WhatsApp")?;
        }
        let reply_to = match &part.target_message_id {
            RSome(id) if !id.is_empty() => Some(id.as_str()),
            _ => None,
        };
        let text = part.text.as_str().trim_end();
        let mut first = None;
        if !part.buttons.is_empty() {
            // A long text goes first on its own: a button message's body is short.
            let body = if text.chars().count() > MAX_BUTTON_BODY
                && part.buttons.len() <= MAX_REPLY_BUTTONS
            {
                let id = self.text(to, text, reply_to).await?;
                first.get_or_insert(id);
                "Choose:".to_owned()
            } else if text.trim().is_empty() {
                "Choose:".to_owned()
            } else {
                text.to_owned()
            };
            let interactive = interactive(&body, &part.buttons)?;
            let id = self
                .post(
                    to,
                    json!({"type": "interactive", "interactive": interactive}),
                    reply_to,
                )
                .await?;
            first.get_or_insert(id);
        } else if !text.trim().is_empty() {
            first = Some(self.text(to, text, reply_to).await?);
        } else if part.files.is_empty() {
            return Err(PluginError::invalid_input(
                "nothing to send: no text, buttons or files",
            ));
        }
        for file in part.files.iter() {
            let id = self.send_file(to, file).await?;
            first.get_or_insert(id);
        }
        Ok(first)
    }

    async fn text(
        &self,
        to: &str,
        text: &str,
        reply_to: Option<&str>,
    ) -> Result<String, PluginError> {
        let body = json!({"type": "text", "text": {"body": text, "preview_url": false}});
        self.post(to, body, reply_to).await
    }

    async fn send_file(&self, to: &str, file: &OutboundFile) -> Result<String, PluginError> {
        let mime = if file.mime_type.is_empty() {
            "application/octet-stream"
        } else {
            file.mime_type.as_str()
        };
        let kind = media_kind(mime);
        let form = multipart::Form::new()
            .text("messaging_product", "whatsapp")
            .text("type", mime.to_owned())
            .part("file", outbound_file_part(file));
        let url = self.api.url(&[&self.phone_number_id, "media"])?;
        let uploaded: Uploaded = self
            .api
            .call(Method::POST, url, "media/upload", None, Body::Form(form))
            .await?;
        let mut object = json!({ "id": uploaded.id });
        if kind == "document" {
            object["filename"] = json!(http::multipart::safe_file_name(file.name.as_str()));
        }
        self.post(to, json!({"type": kind, kind: object}), None)
            .await
    }

    /// `POST /{phone_number_id}/messages`; the new message's id.
    async fn post(
        &self,
        to: &str,
        mut body: Value,
        reply_to: Option<&str>,
    ) -> Result<String, PluginError> {
        body["messaging_product"] = json!("whatsapp");
        body["recipient_type"] = json!("individual");
        body["to"] = json!(to);
        if let Some(id) = reply_to {
            body["context"] = json!({ "message_id": id });
        }
        let url = self.api.url(&[&self.phone_number_id, "messages"])?;
        let answer: SendAnswer = self
            .api
            .call(Method::POST, url, "messages", Some(to), Body::Json(&body))
            .await?;
        answer
            .messages
            .into_iter()
            .next()
            .map(|m| m.id)
            .ok_or_else(|| PluginError::other("messages: no message id in the answer"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buttons(n: usize, label: &str) -> Vec<Button> {
        (0..n)
            .map(|i| Button {
                id: format!("ncq:q:{i}").into(),
                label: label.into(),
            })
            .collect()
    }

    #[test]
    fn three_buttons_are_reply_buttons_more_a_list() {
        let b = interactive("Allow?", &buttons(3, "A very long button label")).unwrap();
        assert_eq!(b["type"], "button");
        let list = b["action"]["buttons"].as_array().unwrap();
        assert_eq!(list.len(), 3);
        for item in list {
            assert!(item["reply"]["title"].as_str().unwrap().chars().count() <= 20);
        }
        let titles: std::collections::HashSet<_> = list
            .iter()
            .map(|i| i["reply"]["title"].to_string())
            .collect();
        assert_eq!(titles.len(), 3, "titles stay unique after the cut");
        let l = interactive("Pick one", &buttons(7, "Option")).unwrap();
        assert_eq!(l["type"], "list");
        assert_eq!(
            l["action"]["sections"][0]["rows"].as_array().unwrap().len(),
            7
        );
        assert!(interactive("x", &buttons(11, "o")).is_err());
    }

    #[test]
    fn reactions() {
        assert_eq!(reaction_emoji("thumbs_up").unwrap(), "👍");
        assert_eq!(reaction_emoji("🦖").unwrap(), "🦖");
        assert!(reaction_emoji("partyparrot").is_err());
        assert!(reaction_emoji("").is_err());
    }
}
