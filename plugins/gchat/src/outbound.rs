//! Host → Google Chat through the Chat API: messages (text, in the thread, buttons as a
//! cards v2 button list), edits (`messages.patch`) and the DM space for `open_dm`.

use std::time::Duration;

use nanoclaw_plugin_api::kit::http::{self, reqwest};
use nanoclaw_plugin_api::kit::prelude::*;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::Shared;
use crate::inbound::{ACTION_PARAM, valid_name};

const MAX_ANSWER: u64 = 1024 * 1024;
const MAX_LIMITER_WAIT: Duration = Duration::from_secs(5);
/// A button's text, at most (characters).
const MAX_BUTTON_TEXT: usize = 80;

#[derive(Deserialize)]
struct Named {
    #[serde(default)]
    name: String,
}

/// The cards v2 list for a part's buttons: one card with a button list whose actions call
/// the function `nanoclaw` with the button id as a parameter.
pub(crate) fn cards(buttons: &[Button]) -> Result<Value, PluginError> {
    let mut list = Vec::new();
    for b in buttons {
        let id = b.id.as_str();
        if id.is_empty() || id.len() > 256 {
            return Err(PluginError::invalid_input(format!(
                "button id `{id}` is empty or too long"
            )));
        }
        let label = b.label.as_str().trim();
        let label = if label.is_empty() { id } else { label };
        let text: String = if label.chars().count() > MAX_BUTTON_TEXT {
            let mut t: String = label.chars().take(MAX_BUTTON_TEXT - 1).collect();
            t.push('…');
            t
        } else {
            label.to_owned()
        };
        list.push(json!({
            "text": text,
            "onClick": {"action": {
                "function": "nanoclaw",
                "parameters": [{"key": ACTION_PARAM, "value": id}],
            }},
        }));
    }
    Ok(json!([{
        "cardId": "nanoclaw-buttons",
        "card": {"sections": [{"widgets": [{"buttonList": {"buttons": list}}]}]},
    }]))
}

fn target(part: &OutboundMessage) -> Result<&str, PluginError> {
    match &part.target_message_id {
        RSome(id) if valid_name(id.as_str(), "spaces/") => Ok(id.as_str()),
        _ => Err(PluginError::invalid_input(format!(
            "{} without a message name (spaces/…/messages/…)",
            part.op
        ))),
    }
}

impl Shared {
    /// One call to the Chat API with the app's token; `space` paces it.
    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path_and_query: &str,
        space: &str,
        body: Option<&Value>,
        what: &str,
    ) -> Result<T, PluginError> {
        self.limiter
            .acquire_within(space, MAX_LIMITER_WAIT)
            .await
            .map_err(|wait| {
                let ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
                PluginError::rate_limited(format!("{what}: Google Chat's rate limit"), Some(ms))
            })?;
        let token = self.tokens.token().await?;
        let mut request = self
            .client
            .request(method, format!("{}/{path_and_query}", self.api))
            .bearer_auth(token.expose());
        if let Some(body) = body {
            request = request.json(body);
        }
        let secrets = [&token];
        let response = match http::send(request, &secrets).await {
            Ok(r) => r,
            Err(e) => {
                let error = e.to_plugin_error(what);
                if e.status() == Some(401) {
                    self.tokens.forget().await;
                    return Err(PluginError::network(format!(
                        "{}; the token is renewed",
                        error.message
                    )));
                }
                self.limiter.note(Some(space), &error);
                return Err(error);
            }
        };
        let bytes = http::read_capped(response, MAX_ANSWER, &secrets)
            .await
            .map_err(|e| e.to_plugin_error(what))?;
        serde_json::from_slice(&bytes)
            .map_err(|_| PluginError::other(format!("{what}: unexpected answer")))
    }

    /// Sends or edits one part.
    pub(crate) async fn deliver(
        &self,
        part: &OutboundMessage,
    ) -> Result<Option<String>, PluginError> {
        let space = part.chat_id.as_str();
        if !valid_name(space, "spaces/") || space.matches('/').count() != 1 {
            return Err(PluginError::invalid_input(format!(
                "`{space}` is not a Google Chat space (spaces/…)"
            )));
        }
        if !part.files.is_empty() {
            return Err(PluginError::unsupported(
                "sending files to Google Chat (uploads need user authentication; a Chat app \
                 acting as itself cannot attach files)",
            ));
        }
        let text = part.text.as_str();
        match part.op {
            OutboundOp::SEND => {
                if text.trim().is_empty() && part.buttons.is_empty() {
                    return Err(PluginError::invalid_input(
                        "nothing to send: no text or buttons",
                    ));
                }
                let mut body = json!({ "text": text });
                if !part.buttons.is_empty() {
                    body["cardsV2"] = cards(&part.buttons)?;
                }
                let thread = part
                    .thread_id
                    .as_ref()
                    .into_option()
                    .map(|t| t.as_str())
                    .filter(|t| valid_name(t, &format!("{space}/threads/")));
                let mut path = format!("{space}/messages");
                if let Some(t) = thread {
                    body["thread"] = json!({ "name": t });
                    path.push_str("?messageReplyOption=REPLY_MESSAGE_FALLBACK_TO_NEW_THREAD");
                }
                let created: Named = self
                    .call(reqwest::Method::POST, &path, space, Some(&body), "send")
                    .await?;
                Ok(Some(created.name).filter(|n| !n.is_empty()))
            }
            OutboundOp::EDIT => {
                let name = target(part)?;
                if !name.starts_with(&format!("{space}/messages/")) {
                    return Err(PluginError::invalid_input(
                        "the message is not in this space",
                    ));
                }
                let cards = if part.buttons.is_empty() {
                    json!([])
                } else {
                    cards(&part.buttons)?
                };
                let body = json!({ "text": text, "cardsV2": cards });
                let path = format!("{name}?updateMask=text,cardsV2");
                let _: Value = self
                    .call(reqwest::Method::PATCH, &path, space, Some(&body), "edit")
                    .await?;
                Ok(Some(name.to_owned()))
            }
            OutboundOp::REACT => Err(PluginError::unsupported(
                "reacting in Google Chat (reactions need user authentication; a Chat app \
                 acting as itself cannot add them)",
            )),
            other => Err(PluginError::unsupported(format_args!("operation {other}"))),
        }
    }

    /// The DM space with `users/<n>`: found, or set up.
    pub(crate) async fn open_dm(&self, user: &str) -> Result<String, PluginError> {
        if !valid_name(user, "users/") || user.matches('/').count() != 1 {
            return Err(PluginError::invalid_input(format!(
                "`{user}` is not a Google Chat user (users/…)"
            )));
        }
        let find = format!("spaces:findDirectMessage?name={user}");
        match self
            .call::<Named>(reqwest::Method::GET, &find, user, None, "findDirectMessage")
            .await
        {
            Ok(space) if valid_name(&space.name, "spaces/") => return Ok(space.name),
            Ok(_) => return Err(PluginError::other("findDirectMessage: no space name")),
            Err(e) if e.kind == ErrorKind::NOT_FOUND => {}
            Err(e) => return Err(e),
        }
        let body = json!({
            "space": {"spaceType": "DIRECT_MESSAGE", "singleUserBotDm": true},
            "memberships": [{"member": {"name": user, "type": "HUMAN"}}],
        });
        let space: Named = self
            .call(
                reqwest::Method::POST,
                "spaces:setup",
                user,
                Some(&body),
                "spaces.setup",
            )
            .await?;
        if !valid_name(&space.name, "spaces/") {
            return Err(PluginError::other("spaces.setup: no space name"));
        }
        Ok(space.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buttons_become_a_card_with_the_ids() {
        let buttons = vec![
            Button {
                id: "ncq:q:0".into(),
                label: "Allow".into(),
            },
            Button {
                id: "ncq:q:1".into(),
                label: "".into(),
            },
        ];
        let c = cards(&buttons).unwrap();
        let list = &c[0]["card"]["sections"][0]["widgets"][0]["buttonList"]["buttons"];
        assert_eq!(list[0]["text"], "Allow");
        assert_eq!(list[1]["text"], "ncq:q:1");
        assert_eq!(
            list[0]["onClick"]["action"]["parameters"][0]["value"],
            "ncq:q:0"
        );
    }
}
