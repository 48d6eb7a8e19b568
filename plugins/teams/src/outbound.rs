//! Host → Teams through the Bot Connector: messages (Markdown, buttons as an Adaptive
//! Card, inline images), edits (`PUT …/activities/<id>`), typing, and the 1:1 conversation
//! for `open_dm`.

use std::time::Duration;

use base64::Engine as _;
use nanoclaw_plugin_api::kit::http::{self, reqwest};
use nanoclaw_plugin_api::kit::prelude::*;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::Shared;
use crate::inbound::{ACTION_KEY, UserRoute};

/// Connector answers are small JSON objects.
const MAX_ANSWER: u64 = 256 * 1024;
/// Longest a send waits for the rate limiter before it goes back as `RATE_LIMITED`.
const MAX_LIMITER_WAIT: Duration = Duration::from_secs(5);
/// An inline image, at most (Teams renders inline images up to about 1 MB).
pub(crate) const MAX_INLINE_IMAGE: usize = 1024 * 1024;
/// Teams shows at most this many actions on a card.
const MAX_ACTIONS: usize = 6;
/// A button title, at most (characters).
const MAX_TITLE: usize = 80;

#[derive(Deserialize)]
struct Created {
    #[serde(default)]
    id: String,
}

/// A conversation id as the Bot Framework writes them (no path tricks).
fn check_conversation(id: &str) -> Result<(), PluginError> {
    let ok = !id.is_empty()
        && id.len() <= 512
        && !id.contains(['/', '?', '#', '\\', ' '])
        && !id.contains("..")
        && id.chars().all(|c| !c.is_control());
    if ok {
        Ok(())
    } else {
        Err(PluginError::invalid_input(format!(
            "`{id}` is not a Teams conversation id"
        )))
    }
}

/// Path segments are percent-encoded (ids hold `:`, `@`, `;`).
fn segment(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The Adaptive Card for a part with buttons: its text as a TextBlock (Markdown subset)
/// and each button as `Action.Submit` carrying the button id.
pub(crate) fn card(text: &str, buttons: &[Button]) -> Result<Value, PluginError> {
    if buttons.len() > MAX_ACTIONS {
        return Err(PluginError::invalid_input(format!(
            "Teams shows at most {MAX_ACTIONS} buttons on a card, not {}",
            buttons.len()
        )));
    }
    let mut actions = Vec::new();
    for b in buttons {
        let id = b.id.as_str();
        if id.is_empty() || id.len() > 256 {
            return Err(PluginError::invalid_input(format!(
                "button id `{id}` is empty or too long"
            )));
        }
        let label = b.label.as_str().trim();
        let label = if label.is_empty() { id } else { label };
        let title: String = if label.chars().count() > MAX_TITLE {
            let mut t: String = label.chars().take(MAX_TITLE - 1).collect();
            t.push('…');
            t
        } else {
            label.to_owned()
        };
        actions.push(json!({"type": "Action.Submit", "title": title, "data": {ACTION_KEY: id}}));
    }
    let mut body = Vec::new();
    if !text.trim().is_empty() {
        body.push(json!({"type": "TextBlock", "text": text, "wrap": true}));
    }
    Ok(json!({
        "contentType": "application/vnd.microsoft.card.adaptive",
        "content": {
            "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
            "type": "AdaptiveCard",
            "version": "1.4",
            "body": body,
            "actions": actions,
        }
    }))
}

/// The message activity for a part.
fn message_activity(part: &OutboundMessage, bot: &str) -> Result<Value, PluginError> {
    let text = part.text.as_str();
    let mut activity = json!({"type": "message", "from": {"id": bot}});
    let mut attachments = Vec::new();
    if part.buttons.is_empty() {
        activity["text"] = json!(text);
        activity["textFormat"] = json!("markdown");
    } else {
        attachments.push(card(text, &part.buttons)?);
    }
    for file in part.files.iter() {
        let mime = file.mime_type.as_str();
        if !mime.starts_with("image/") {
            return Err(PluginError::unsupported(format_args!(
                "sending `{}` ({}) to Teams: bots send images inline; other files need \
                 the file-consent flow",
                file.name,
                if mime.is_empty() {
                    "unknown type"
                } else {
                    mime
                }
            )));
        }
        if file.data.len() > MAX_INLINE_IMAGE {
            return Err(PluginError::invalid_input(format!(
                "image `{}` is {} bytes; Teams takes inline images up to {MAX_INLINE_IMAGE}",
                file.name,
                file.data.len()
            )));
        }
        let data = base64::engine::general_purpose::STANDARD.encode(file.data.as_slice());
        attachments.push(json!({
            "contentType": mime,
            "contentUrl": format!("data:{mime};base64,{data}"),
            "name": file.name.as_str(),
        }));
    }
    if !attachments.is_empty() {
        activity["attachments"] = json!(attachments);
    }
    if text.trim().is_empty() && attachments.is_empty() {
        return Err(PluginError::invalid_input(
            "nothing to send: no text, buttons or files",
        ));
    }
    Ok(activity)
}

fn target(part: &OutboundMessage) -> Result<&str, PluginError> {
    match &part.target_message_id {
        RSome(id) if !id.trim().is_empty() => Ok(id.as_str()),
        _ => Err(PluginError::invalid_input(format!(
            "{} without target_message_id",
            part.op
        ))),
    }
}

impl Shared {
    /// One call to the Bot Connector at `service_url`, with the bot's token; `chat` paces it.
    async fn connector<T: serde::de::DeserializeOwned>(
        &self,
        method: reqwest::Method,
        service_url: &str,
        path: &str,
        chat: &str,
        body: &Value,
        what: &str,
    ) -> Result<T, PluginError> {
        self.limiter
            .acquire_within(chat, MAX_LIMITER_WAIT)
            .await
            .map_err(|wait| {
                let ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
                PluginError::rate_limited(format!("{what}: Teams' rate limit"), Some(ms))
            })?;
        let token = self.tokens.token().await?;
        let url = format!("{}{path}", crate::with_slash(service_url));
        let request = self
            .client
            .request(method, url)
            .bearer_auth(token.expose())
            .json(body);
        let secrets = [&token];
        let response = match http::send(request, &secrets).await {
            Ok(r) => r,
            Err(e) => {
                let error = e.to_plugin_error(what);
                if e.status() == Some(401) {
                    // A revoked or expired token: the next call fetches a new one.
                    self.tokens.forget().await;
                    return Err(PluginError::network(format!(
                        "{}; the token is renewed",
                        error.message
                    )));
                }
                self.limiter.note(Some(chat), &error);
                return Err(error);
            }
        };
        let bytes = http::read_capped(response, MAX_ANSWER, &secrets)
            .await
            .map_err(|e| e.to_plugin_error(what))?;
        let bytes = if bytes.iter().all(u8::is_ascii_whitespace) {
            b"{}".to_vec()
        } else {
            bytes
        };
        serde_json::from_slice(&bytes)
            .map_err(|_| PluginError::other(format!("{what}: unexpected answer")))
    }

    /// Sends, edits (reactions: Teams has none for bots).
    pub(crate) async fn deliver(
        &self,
        part: &OutboundMessage,
    ) -> Result<Option<String>, PluginError> {
        let chat = part.chat_id.as_str();
        check_conversation(chat)?;
        let thread = part
            .thread_id
            .as_ref()
            .into_option()
            .map(|t| t.as_str())
            .filter(|t| !t.is_empty());
        if let Some(t) = thread
            && !t.chars().all(|c| c.is_ascii_digit())
        {
            return Err(PluginError::invalid_input(format!(
                "`{t}` is not a Teams message id"
            )));
        }
        let service_url = self.service_url(chat).await;
        // A reply in a channel thread goes to `<channel>;messageid=<root>`.
        let conversation = match thread {
            Some(t) => format!("{chat};messageid={t}"),
            None => chat.to_owned(),
        };
        match part.op {
            OutboundOp::SEND => {
                let activity = message_activity(part, &self.bot_id())?;
                let path = format!("v3/conversations/{}/activities", segment(&conversation));
                let created: Created = self
                    .connector(
                        reqwest::Method::POST,
                        &service_url,
                        &path,
                        chat,
                        &activity,
                        "send",
                    )
                    .await?;
                Ok(Some(created.id).filter(|id| !id.is_empty()))
            }
            OutboundOp::EDIT => {
                let id = target(part)?;
                let mut activity = message_activity(part, &self.bot_id())?;
                activity["id"] = json!(id);
                if activity.get("attachments").is_none() {
                    // An edit without buttons replaces the card with text.
                    activity["attachments"] = json!([]);
                }
                let path = format!(
                    "v3/conversations/{}/activities/{}",
                    segment(&conversation),
                    segment(id)
                );
                let _: Value = self
                    .connector(
                        reqwest::Method::PUT,
                        &service_url,
                        &path,
                        chat,
                        &activity,
                        "edit",
                    )
                    .await?;
                Ok(Some(id.to_owned()))
            }
            OutboundOp::REACT => Err(PluginError::unsupported(
                "reacting in Teams (the Bot Framework gives bots no reactions API)",
            )),
            other => Err(PluginError::unsupported(format_args!("operation {other}"))),
        }
    }

    /// A typing activity (Teams shows it for a few seconds).
    pub(crate) async fn typing(&self, chat: &str, thread: Option<&str>) -> Result<(), PluginError> {
        check_conversation(chat)?;
        let service_url = self.service_url(chat).await;
        let conversation =
            match thread.filter(|t| t.chars().all(|c| c.is_ascii_digit()) && !t.is_empty()) {
                Some(t) => format!("{chat};messageid={t}"),
                None => chat.to_owned(),
            };
        let path = format!("v3/conversations/{}/activities", segment(&conversation));
        let body = json!({"type": "typing", "from": {"id": self.bot_id()}});
        let _: Value = self
            .connector(
                reqwest::Method::POST,
                &service_url,
                &path,
                chat,
                &body,
                "typing",
            )
            .await?;
        Ok(())
    }

    /// The 1:1 conversation with a Teams user (`29:…`), created or returned by the Bot
    /// Connector.
    pub(crate) async fn open_dm(&self, user: &str) -> Result<String, PluginError> {
        if !user.starts_with("29:") || user.len() > 256 || user.contains(['/', '?', '#', ' ']) {
            return Err(PluginError::invalid_input(format!(
                "`{user}` is not a Teams user id (29:…)"
            )));
        }
        let key = format!("user:{user}");
        let known: Option<UserRoute> =
            match self.life.host_call(move |host| host.kv_get(&key)).await {
                Ok(Ok(Some(text))) => serde_json::from_str(&text).ok(),
                _ => None,
            };
        let service_url = known
            .as_ref()
            .map(|r| r.service_url.clone())
            .unwrap_or_else(|| self.default_service_url.clone());
        let tenant = known
            .and_then(|r| r.tenant_id)
            .or_else(|| self.tenant_id.clone())
            .ok_or_else(|| {
                PluginError::not_found(format!(
                    "cannot open a DM with {user}: their tenant is unknown (they never wrote \
                     to the bot) and tenant_id is not set"
                ))
            })?;
        let body = json!({
            "bot": {"id": self.bot_id()},
            "members": [{"id": user}],
            "isGroup": false,
            "tenantId": tenant,
            "channelData": {"tenant": {"id": tenant}},
        });
        let created: Created = self
            .connector(
                reqwest::Method::POST,
                &service_url,
                "v3/conversations",
                user,
                &body,
                "open_dm",
            )
            .await?;
        if created.id.is_empty() {
            return Err(PluginError::other(
                "open_dm: no conversation id in the answer",
            ));
        }
        check_conversation(&created.id)?;
        let (chat, url) = (created.id.clone(), service_url);
        let stored = self
            .life
            .host_call(move |host| host.kv_set(&format!("svc:{chat}"), &url, None))
            .await;
        if let Ok(Err(e)) = stored {
            self.life
                .warn(format!("could not remember the DM's service URL: {e}"));
        }
        Ok(created.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cards_carry_the_text_and_the_button_ids() {
        let buttons: Vec<Button> = ["Allow", "Deny"]
            .iter()
            .enumerate()
            .map(|(i, l)| Button {
                id: format!("ncq:q1:{i}").into(),
                label: (*l).into(),
            })
            .collect();
        let c = card("**Allow Bob?**", &buttons).unwrap();
        assert_eq!(c["contentType"], "application/vnd.microsoft.card.adaptive");
        assert_eq!(c["content"]["body"][0]["text"], "**Allow Bob?**");
        assert_eq!(c["content"]["actions"][1]["data"][ACTION_KEY], "ncq:q1:1");
        assert_eq!(c["content"]["actions"][1]["title"], "Deny");
        let many: Vec<Button> = (0..7)
            .map(|i| Button {
                id: format!("b{i}").into(),
                label: "x".into(),
            })
            .collect();
        assert!(card("", &many).is_err());
    }

    #[test]
    fn ids_and_segments() {
        assert!(check_conversation("19:abc@thread.tacv2").is_ok());
        assert!(check_conversation("a:1Xyz-_").is_ok());
        assert!(check_conversation("../x").is_err());
        assert!(check_conversation("a/b").is_err());
        assert_eq!(segment("19:a@t;messageid=1"), "19%3Aa%40t%3Bmessageid%3D1");
    }
}
