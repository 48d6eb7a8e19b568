//! Host → Webex: one prepared part per `deliver`: `POST /messages` (Markdown, `parentId`
//! from the thread, buttons as an Adaptive Card), one file per message (multipart), edits
//! with `PUT /messages/{id}`; and `open_dm`.

use nanoclaw_plugin_api::kit::http::reqwest::{Method, multipart};
use nanoclaw_plugin_api::kit::http::{self, multipart::outbound_file_part};
use nanoclaw_plugin_api::kit::prelude::*;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::{Body, Items, WxMessage};
use crate::inbound::BUTTON_KEY;
use crate::{PERSON_CHAT_PREFIX, Shared, is_webex_id};

/// Webex's limit on a message's `text` and `markdown`, in bytes.
pub(crate) const MAX_TEXT_BYTES: usize = 7439;
/// Webex takes files up to 100 MB.
pub(crate) const MAX_UPLOAD_BYTES: usize = 100 * 1024 * 1024;
/// The Adaptive Card content type.
pub(crate) const ADAPTIVE_CARD: &str = "application/vnd.microsoft.card.adaptive";
/// A button's title, at most (longer ones are cut with `…`).
const MAX_BUTTON_TITLE: usize = 80;

/// Where a part goes: a space, or a person whose 1:1 space does not exist yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target<'a> {
    Room(&'a str),
    Person(&'a str),
}

impl<'a> Target<'a> {
    pub(crate) fn parse(chat: &'a str) -> Result<Self, PluginError> {
        let (target, id) = match chat.strip_prefix(PERSON_CHAT_PREFIX) {
            Some(person) => (Target::Person(person), person),
            None => (Target::Room(chat), chat),
        };
        if !is_webex_id(id) {
            return Err(PluginError::invalid_input(format!(
                "`{chat}` is not a Webex space id"
            )));
        }
        Ok(target)
    }

    fn add_to(&self, body: &mut Value) {
        match self {
            Target::Room(room) => body["roomId"] = json!(room),
            Target::Person(person) => body["toPersonId"] = json!(person),
        }
    }

    fn add_to_form(&self, form: multipart::Form) -> multipart::Form {
        match self {
            Target::Room(room) => form.text("roomId", (*room).to_owned()),
            Target::Person(person) => form.text("toPersonId", (*person).to_owned()),
        }
    }
}

/// One Adaptive Card with the text and an `Action.Submit` per button (its id in the data).
pub(crate) fn card(text: &str, buttons: &[Button]) -> Result<Value, PluginError> {
    let mut actions = Vec::new();
    for button in buttons {
        let id = button.id.as_str();
        if id.is_empty() || id.len() > 1024 {
            return Err(PluginError::invalid_input(format!(
                "button id `{id}` must be 1-1024 bytes"
            )));
        }
        let label = button.label.as_str().trim();
        let label = if label.is_empty() { id } else { label };
        let title: String = if label.chars().count() > MAX_BUTTON_TITLE {
            let mut cut: String = label.chars().take(MAX_BUTTON_TITLE - 1).collect();
            cut.push('…');
            cut
        } else {
            label.to_owned()
        };
        actions.push(json!({"type": "Action.Submit", "title": title, "data": { BUTTON_KEY: id }}));
    }
    let mut body = Vec::new();
    if !text.trim().is_empty() {
        body.push(json!({"type": "TextBlock", "text": text, "wrap": true}));
    }
    Ok(json!({
        "contentType": ADAPTIVE_CARD,
        "content": {
            "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
            "type": "AdaptiveCard",
            "version": "1.3",
            "body": body,
            "actions": actions,
        },
    }))
}

#[derive(Deserialize)]
struct Nothing {}

impl Shared {
    /// Sends or edits one part.
    pub(crate) async fn deliver(
        &self,
        part: &OutboundMessage,
    ) -> Result<Option<String>, PluginError> {
        let target = Target::parse(part.chat_id.as_str())?;
        match part.op {
            OutboundOp::SEND => self.send(&target, part).await,
            OutboundOp::EDIT => {
                let id = match &part.target_message_id {
                    RSome(id) if is_webex_id(id.as_str()) => id.as_str(),
                    _ => {
                        return Err(PluginError::invalid_input(
                            "edit without a Webex message id",
                        ));
                    }
                };
                let room = match target {
                    Target::Room(room) => room.to_owned(),
                    Target::Person(person) => self.known_direct(person).await.ok_or_else(|| {
                        PluginError::not_found("no 1:1 space with that person yet")
                    })?,
                };
                let body = json!({"roomId": room, "markdown": part.text.as_str()});
                let url = self.api.url(&["messages", id])?;
                self.api
                    .call::<Nothing>(
                        Method::PUT,
                        url,
                        "messages/edit",
                        Some(&room),
                        Body::Json(&body),
                    )
                    .await?;
                Ok(Some(id.to_owned()))
            }
            other => Err(PluginError::unsupported(format_args!("operation {other}"))),
        }
    }

    async fn send(
        &self,
        target: &Target<'_>,
        part: &OutboundMessage,
    ) -> Result<Option<String>, PluginError> {
        let chat = part.chat_id.as_str();
        // Replies go under the thread's root (Webex has no replies to replies).
        let parent = match (&part.thread_id, target) {
            (RSome(t), Target::Room(_)) if is_webex_id(t.as_str()) => Some(t.as_str().to_owned()),
            _ => None,
        };
        for file in part.files.iter() {
            http::check_upload_size(file, MAX_UPLOAD_BYTES, "Webex")?;
        }
        let text = part.text.as_str();
        let mut posted = None;
        if !text.trim().is_empty() || !part.buttons.is_empty() {
            let markdown = if text.trim().is_empty() {
                // Webex needs a text with a card: the choices, for clients without cards.
                part.buttons
                    .iter()
                    .map(|b| b.label.as_str())
                    .collect::<Vec<_>>()
                    .join(" / ")
            } else {
                text.to_owned()
            };
            let mut body = json!({ "markdown": markdown });
            target.add_to(&mut body);
            if let Some(p) = &parent {
                body["parentId"] = json!(p);
            }
            if !part.buttons.is_empty() {
                body["attachments"] = json!([card(text, &part.buttons)?]);
            }
            let url = self.api.url(&["messages"])?;
            let answer: WxMessage = self
                .api
                .call(
                    Method::POST,
                    url,
                    "messages/create",
                    Some(chat),
                    Body::Json(&body),
                )
                .await?;
            self.after_post(target, &answer).await;
            posted = Some(answer.id);
        } else if part.files.is_empty() {
            return Err(PluginError::invalid_input(
                "nothing to send: no text, buttons or files",
            ));
        }
        // One file per message, and never with a card.
        for file in part.files.iter() {
            let mut form = target.add_to_form(multipart::Form::new());
            if let Some(p) = &parent {
                form = form.text("parentId", p.clone());
            }
            let form = form.part("files", outbound_file_part(file));
            let url = self.api.url(&["messages"])?;
            let answer: WxMessage = self
                .api
                .call(
                    Method::POST,
                    url,
                    "messages/create (file)",
                    Some(chat),
                    Body::Form(form),
                )
                .await?;
            self.after_post(target, &answer).await;
            posted.get_or_insert(answer.id);
        }
        Ok(posted)
    }

    /// A post to a person tells us their 1:1 space.
    async fn after_post(&self, target: &Target<'_>, answer: &WxMessage) {
        if let Target::Person(person) = target
            && is_webex_id(&answer.room_id)
        {
            self.learn_direct(person, &answer.room_id).await;
        }
    }

    /// The 1:1 space with `person` the bot learnt, if any.
    async fn known_direct(&self, person: &str) -> Option<String> {
        let key = format!("dm-room:{person}");
        match self.life.host_call(move |host| host.kv_get(&key)).await {
            Ok(Ok(room)) => room.filter(|r| is_webex_id(r)),
            _ => None,
        }
    }

    /// The 1:1 space with `person`: learnt, or found through `GET /messages/direct`; else
    /// `person:<id>`, which posts with `toPersonId` (Webex then creates the space).
    pub(crate) async fn open_dm(&self, person: &str) -> Result<String, PluginError> {
        if !is_webex_id(person) {
            return Err(PluginError::invalid_input(format!(
                "`{person}` is not a Webex person id"
            )));
        }
        if let Some(room) = self.known_direct(person).await {
            return Ok(room);
        }
        let mut url = self.api.url(&["messages", "direct"])?;
        url.query_pairs_mut()
            .append_pair("personId", person)
            .append_pair("max", "1");
        let found: Items<WxMessage> = self
            .api
            .call(Method::GET, url, "messages/direct", None, Body::None)
            .await?;
        if let Some(room) = found
            .items
            .into_iter()
            .map(|m| m.room_id)
            .find(|r| is_webex_id(r))
        {
            self.learn_direct(person, &room).await;
            return Ok(room);
        }
        Ok(format!("{PERSON_CHAT_PREFIX}{person}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        assert_eq!(Target::parse("Y2lz_-").unwrap(), Target::Room("Y2lz_-"));
        assert_eq!(
            Target::parse("person:Y2lz").unwrap(),
            Target::Person("Y2lz")
        );
        assert!(Target::parse("").is_err());
        assert!(Target::parse("a/b").is_err());
        assert!(Target::parse("person:").is_err());
    }

    #[test]
    fn cards_carry_text_and_buttons() {
        let buttons = [
            Button {
                id: "ncq:q:0".into(),
                label: "Allow".into(),
            },
            Button {
                id: "ncq:q:1".into(),
                label: "x".repeat(200).into(),
            },
        ];
        let c = card("**hi**", &buttons).unwrap();
        assert_eq!(c["contentType"], ADAPTIVE_CARD);
        assert_eq!(c["content"]["body"][0]["text"], "**hi**");
        let actions = c["content"]["actions"].as_array().unwrap();
        assert_eq!(actions[0]["data"][BUTTON_KEY], "ncq:q:0");
        assert_eq!(
            actions[1]["title"].as_str().unwrap().chars().count(),
            MAX_BUTTON_TITLE
        );
        let empty = Button {
            id: "".into(),
            label: "x".into(),
        };
        assert!(card("", &[empty]).is_err());
    }
}
