//! Host → Slack: one prepared part per `deliver`: `chat.postMessage` (mrkdwn, in the thread,
//! buttons as a Block Kit actions block), files (`files.getUploadURLExternal`, the upload,
//! `files.completeUploadExternal`), `chat.update` and `reactions.add`.

use nanoclaw_plugin_api::kit::http::{self, multipart::safe_file_name};
use nanoclaw_plugin_api::kit::prelude::*;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::Shared;
use crate::api::{Args, Posted, UploadUrl};
use crate::inbound::thread_key;

/// Slack's limit on a section block's text; parts are split to fit it.
pub(crate) const MAX_SECTION_CHARS: usize = 3000;
/// Slack's limit on a button's label.
const MAX_BUTTON_LABEL: usize = 75;
/// Slack's limit on an `action_id`.
const MAX_ACTION_ID: usize = 255;
/// Elements per actions block.
const BUTTONS_PER_BLOCK: usize = 25;
/// Files the channel uploads, at most (Slack takes up to 1 GB; an agent's files are small).
pub(crate) const MAX_UPLOAD_BYTES: usize = 100 * 1024 * 1024;

/// Block Kit for a part: its text as a mrkdwn section and its buttons as actions blocks.
pub(crate) fn blocks(text: &str, buttons: &[Button]) -> Result<Vec<Value>, PluginError> {
    let mut blocks = Vec::new();
    if !text.trim().is_empty() {
        blocks.push(json!({"type": "section", "text": {"type": "mrkdwn", "text": text}}));
    }
    for chunk in buttons.chunks(BUTTONS_PER_BLOCK) {
        let mut elements = Vec::new();
        for button in chunk {
            let id = button.id.as_str();
            if id.is_empty() || id.len() > MAX_ACTION_ID {
                return Err(PluginError::invalid_input(format!(
                    "button id `{id}` must be 1-{MAX_ACTION_ID} bytes for Slack"
                )));
            }
            let label = button.label.as_str().trim();
            let label = if label.is_empty() { id } else { label };
            let label: String = if label.chars().count() > MAX_BUTTON_LABEL {
                let mut cut: String = label.chars().take(MAX_BUTTON_LABEL - 1).collect();
                cut.push('…');
                cut
            } else {
                label.to_owned()
            };
            elements.push(json!({
                "type": "button",
                "text": {"type": "plain_text", "text": label, "emoji": true},
                "action_id": id,
                "value": id,
            }));
        }
        blocks.push(json!({"type": "actions", "elements": elements}));
    }
    Ok(blocks)
}

/// Reaction names the host uses → Slack emoji names. Other plain names pass as they are
/// (Slack knows hundreds, and custom ones); a few emoji characters are mapped.
pub(crate) fn reaction_name(name: &str) -> Result<String, PluginError> {
    let name = name.trim().trim_matches(':');
    if name.is_empty() {
        return Err(PluginError::invalid_input("react without a reaction"));
    }
    let key = name.to_ascii_lowercase().replace('-', "_");
    let mapped = match key.as_str() {
        "thumbs_up" | "thumbsup" | "like" | "yes" | "👍" => "+1",
        "thumbs_down" | "thumbsdown" | "dislike" | "no" | "👎" => "-1",
        "heart" | "love" | "red_heart" | "❤" | "❤\u{fe0f}" => "heart",
        "check" | "done" | "ok" | "✅" => "white_check_mark",
        "eyes" | "looking" | "seen" | "👀" => "eyes",
        "fire" | "🔥" => "fire",
        "laugh" | "joy" | "😂" => "joy",
        "tada" | "party" | "celebrate" | "🎉" => "tada",
        "pray" | "thanks" | "🙏" => "pray",
        "thinking" | "think" | "🤔" => "thinking_face",
        "100" | "💯" => "100",
        "rocket" | "🚀" => "rocket",
        "wave" | "👋" => "wave",
        _ if key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_+'".contains(c)) =>
        {
            return Ok(key);
        }
        _ => {
            return Err(PluginError::invalid_input(format!(
                "reaction `{name}` is not a Slack emoji name (use a name such as thumbs_up, \
                 heart, check, eyes)"
            )));
        }
    };
    Ok(mapped.to_owned())
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

fn check_channel(chat: &str) -> Result<(), PluginError> {
    if chat.is_empty() || !chat.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(PluginError::invalid_input(format!(
            "`{chat}` is not a Slack conversation id"
        )));
    }
    Ok(())
}

#[derive(Deserialize)]
struct Nothing {}

impl Shared {
    /// Sends, edits or reacts with one part.
    pub(crate) async fn deliver(
        &self,
        part: &OutboundMessage,
    ) -> Result<Option<String>, PluginError> {
        let chat = part.chat_id.as_str();
        check_channel(chat)?;
        match part.op {
            OutboundOp::SEND => self.send(chat, part).await,
            OutboundOp::EDIT => {
                let ts = target(part)?;
                let blocks = blocks(part.text.as_str(), &part.buttons)?;
                let args = json!({
                    "channel": chat, "ts": ts, "text": part.text.as_str(), "blocks": blocks,
                });
                self.api
                    .call::<Nothing>("chat.update", chat, Args::Json(&args))
                    .await?;
                Ok(Some(ts.to_owned()))
            }
            OutboundOp::REACT => {
                let ts = target(part)?;
                let name = reaction_name(part.reaction.as_str())?;
                let args = json!({"channel": chat, "timestamp": ts, "name": name});
                match self
                    .api
                    .call::<Nothing>("reactions.add", chat, Args::Json(&args))
                    .await
                {
                    Ok(_) => Ok(None),
                    // The same reaction twice is what was asked for.
                    Err(e) if e.message.contains("`already_reacted`") => Ok(None),
                    Err(e) => Err(e),
                }
            }
            other => Err(PluginError::unsupported(format_args!("operation {other}"))),
        }
    }

    async fn send(
        &self,
        chat: &str,
        part: &OutboundMessage,
    ) -> Result<Option<String>, PluginError> {
        let thread = part
            .thread_id
            .as_ref()
            .into_option()
            .map(|t| t.as_str().to_owned())
            .filter(|t| !t.is_empty());
        for file in part.files.iter() {
            http::check_upload_size(file, MAX_UPLOAD_BYTES, "this Slack channel")?;
        }
        let text = part.text.as_str();
        let mut posted = None;
        if !text.trim().is_empty() || !part.buttons.is_empty() {
            let mut args = json!({
                "channel": chat,
                "text": text,
                "unfurl_links": false,
                "unfurl_media": false,
            });
            if let Some(t) = &thread {
                args["thread_ts"] = json!(t);
            }
            if !part.buttons.is_empty() {
                args["blocks"] = json!(blocks(text, &part.buttons)?);
            }
            let answer: Posted = self
                .api
                .call("chat.postMessage", chat, Args::Json(&args))
                .await?;
            posted = Some(answer.ts);
        } else if part.files.is_empty() {
            return Err(PluginError::invalid_input(
                "nothing to send: no text, buttons or files",
            ));
        }
        for file in part.files.iter() {
            self.upload(chat, thread.as_deref(), file).await?;
        }
        // Replies in this thread (or under this message) engage the bot from now on.
        let root = thread.clone().or_else(|| posted.clone());
        if let Some(root) = root {
            let key = thread_key(chat, &root);
            let subscribed = self.life.host_call(move |host| host.subscribe(&key)).await;
            if let Ok(Err(e)) = subscribed {
                self.life
                    .debug(format!("could not follow thread {root}: {e}"));
            }
        }
        Ok(posted)
    }

    /// The three-step upload Slack asks for since `files.upload` was retired.
    async fn upload(
        &self,
        chat: &str,
        thread: Option<&str>,
        file: &OutboundFile,
    ) -> Result<(), PluginError> {
        let name = safe_file_name(file.name.as_str());
        let form = [
            ("filename", name.clone()),
            ("length", file.data.len().to_string()),
        ];
        let target: UploadUrl = self
            .api
            .call("files.getUploadURLExternal", chat, Args::Form(&form))
            .await?;
        // The upload URL is pre-signed: no token goes with it.
        let url = http::reqwest::Url::parse(&target.upload_url)
            .map_err(|_| PluginError::other("files.getUploadURLExternal: bad upload_url"))?;
        if !matches!(url.scheme(), "https" | "http") {
            return Err(PluginError::other(
                "files.getUploadURLExternal: bad upload_url",
            ));
        }
        let mut request = self.api.client().post(url).body(file.data.to_vec());
        if !file.mime_type.is_empty() {
            request = request.header("Content-Type", file.mime_type.as_str());
        }
        http::send(request, &[self.api.bot_token()])
            .await
            .map_err(|e| e.to_plugin_error("file upload"))?;
        let mut args = json!({
            "files": [{"id": target.file_id, "title": name}],
            "channel_id": chat,
        });
        if let Some(t) = thread {
            args["thread_ts"] = json!(t);
        }
        self.api
            .call::<Nothing>("files.completeUploadExternal", chat, Args::Json(&args))
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reaction_names() {
        assert_eq!(reaction_name("thumbs_up").unwrap(), "+1");
        assert_eq!(reaction_name(":check:").unwrap(), "white_check_mark");
        assert_eq!(reaction_name("👀").unwrap(), "eyes");
        assert_eq!(reaction_name("partyparrot").unwrap(), "partyparrot");
        assert!(reaction_name("").is_err());
        assert!(reaction_name("🦖").is_err());
    }

    #[test]
    fn blocks_carry_text_and_buttons() {
        let buttons: Vec<Button> = (0..30)
            .map(|i| Button {
                id: format!("ncq:q:{i}").into(),
                label: "x".repeat(100).into(),
            })
            .collect();
        let b = blocks("*hi*", &buttons).unwrap();
        assert_eq!(b.len(), 3, "a section and two actions blocks");
        assert_eq!(b[0]["text"]["type"], "mrkdwn");
        assert_eq!(b[1]["elements"].as_array().unwrap().len(), 25);
        let label = b[1]["elements"][0]["text"]["text"].as_str().unwrap();
        assert_eq!(label.chars().count(), 75);
        assert_eq!(b[1]["elements"][0]["action_id"], "ncq:q:0");
        let long = Button {
            id: "x".repeat(300).into(),
            label: "l".into(),
        };
        assert!(blocks("", &[long]).is_err());
    }
}
