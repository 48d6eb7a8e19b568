//! Host → Telegram: messages, files, buttons, edits, reactions, typing.
//!
//! `deliver` sends exactly the part `prepare` made (see the `format` module): one message,
//! one document or one edit; it never renders or splits.

use std::time::Duration;

use nanoclaw_plugin_api::kit::prelude::*;
use nanoclaw_plugin_api::kit::prepare::plain_text_of;
use serde_json::{Value, json};

use crate::Log;
use crate::api::{Api, ApiError, SentMessage};
use crate::format::MAX_UPLOAD_BYTES;

/// Per-request timeout of calls made for the host (its own call timeout is 30 s).
pub(crate) const CALL_TIMEOUT: Duration = Duration::from_secs(20);
/// Uploads get a little longer.
const UPLOAD_TIMEOUT: Duration = Duration::from_secs(25);
/// Telegram's limit on `callback_data`.
const MAX_CALLBACK_DATA: usize = 64;

/// A chat id as Telegram takes it: a number, or `@channelusername`.
fn chat_ref(chat_id: &str) -> Result<Value, PluginError> {
    if let Ok(id) = chat_id.parse::<i64>() {
        return Ok(json!(id));
    }
    if chat_id.len() > 1 && chat_id.starts_with('@') {
        return Ok(json!(chat_id));
    }
    Err(PluginError::invalid_input(format!(
        "`{chat_id}` is not a Telegram chat id"
    )))
}

fn message_id(id: &str) -> Result<i64, PluginError> {
    id.parse::<i64>()
        .map_err(|_| PluginError::invalid_input(format!("`{id}` is not a Telegram message id")))
}

fn target_of(m: &OutboundMessage) -> Result<Option<i64>, PluginError> {
    m.target_message_id
        .as_ref()
        .into_option()
        .map(|id| message_id(id.as_str()))
        .transpose()
}

/// The inline keyboard for the host's buttons: rows of up to three short labels, one per
/// row for long ones.
pub(crate) fn keyboard(buttons: &[Button]) -> Result<Option<Value>, PluginError> {
    if buttons.is_empty() {
        return Ok(None);
    }
    let mut rows: Vec<Vec<Value>> = Vec::new();
    let mut row: Vec<Value> = Vec::new();
    let mut row_chars = 0;
    for button in buttons {
        let id = button.id.as_str();
        if id.is_empty() || id.len() > MAX_CALLBACK_DATA {
            return Err(PluginError::invalid_input(format!(
                "button id `{id}` must be 1-{MAX_CALLBACK_DATA} bytes for Telegram"
            )));
        }
        let label = button.label.as_str().trim();
        let label = if label.is_empty() { id } else { label };
        let chars = label.chars().count();
        if !row.is_empty() && (row.len() == 3 || row_chars + chars > 30) {
            rows.push(std::mem::take(&mut row));
            row_chars = 0;
        }
        row.push(json!({"text": label, "callback_data": id}));
        row_chars += chars;
    }
    rows.push(row);
    Ok(Some(json!({ "inline_keyboard": rows })))
}

/// Reaction names the host uses → emoji Telegram accepts as bot reactions. Anything else
/// that is not a plain ASCII word is passed through as an emoji.
pub(crate) fn reaction_emoji(name: &str) -> Result<Option<String>, PluginError> {
    let name = name.trim();
    if name.is_empty() {
        return Ok(None); // clears the bot's reaction
    }
    let key = name
        .trim_matches(':')
        .to_ascii_lowercase()
        .replace('-', "_");
    let emoji = match key.as_str() {
        "thumbs_up" | "thumbsup" | "+1" | "like" | "yes" => "👍",
        "thumbs_down" | "thumbsdown" | "_1" | "-1" | "dislike" | "no" => "👎",
        "heart" | "love" | "red_heart" => "❤",
        // Telegram has no check mark among bot reactions; 👌 says "done, fine".
        "check" | "white_check_mark" | "heavy_check_mark" | "done" | "ok" | "ok_hand" => "👌",
        "eyes" | "looking" | "seen" => "👀",
        "fire" => "🔥",
        "laugh" | "joy" | "laughing" | "rofl" => "🤣",
        "smile" | "grin" | "grinning" => "😁",
        "tada" | "party" | "celebrate" => "🎉",
        "pray" | "thanks" | "thank_you" => "🙏",
        "clap" => "👏",
        "thinking" | "think" => "🤔",
        "100" | "hundred" => "💯",
        "cry" | "sad" => "😢",
        "zap" | "lightning" => "⚡",
        "trophy" => "🏆",
        "handshake" => "🤝",
        "writing" | "writing_hand" => "✍",
        "shrug" => "🤷",
        "salute" => "🫡",
        "cool" => "🆒",
        "angry" => "😡",
        "scream" => "😱",
        "mind_blown" | "exploding_head" => "🤯",
        "heart_eyes" => "😍",
        "wink" | "kiss" => "😘",
        "unicorn" => "🦄",
        "broken_heart" => "💔",
        "sleeping" => "😴",
        "nerd" => "🤓",
        "ghost" => "👻",
        "see_no_evil" => "🙈",
        "innocent" => "😇",
        "hug" | "hugging" => "🤗",
        "sunglasses" => "😎",
        _ if name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-:+".contains(c)) =>
        {
            return Err(PluginError::invalid_input(format!(
                "unknown reaction `{name}`: use a name such as thumbs_up, heart, check, eyes, \
                 fire, laugh, or an emoji"
            )));
        }
        // An emoji: Telegram lists its reactions without the emoji variation selector.
        _ => return Ok(Some(name.replace('\u{fe0f}', ""))),
    };
    Ok(Some(emoji.to_owned()))
}

/// Carries out one `deliver` call: one prepared part.
pub(crate) async fn deliver(
    api: &Api,
    log: &Log,
    m: &OutboundMessage,
) -> Result<Option<String>, PluginError> {
    match m.op {
        OutboundOp::SEND => send(api, log, m).await.map(|id| Some(id.to_string())),
        OutboundOp::EDIT => edit(api, log, m).await,
        OutboundOp::REACT => react(api, m).await,
        other => Err(PluginError::unsupported(format_args!("operation {other}"))),
    }
}

/// The HTML text of a part and its plain-text fallback (from `prepare`).
struct Text<'a> {
    html: &'a str,
    plain: Option<String>,
}

impl<'a> Text<'a> {
    fn of(m: &'a OutboundMessage) -> Self {
        Self {
            html: m.text.as_str(),
            plain: plain_text_of(m),
        }
    }
}

async fn send(api: &Api, log: &Log, m: &OutboundMessage) -> Result<i64, PluginError> {
    let chat = chat_ref(m.chat_id.as_str())?;
    let reply_to = target_of(m)?;
    let keyboard = keyboard(&m.buttons)?;
    let text = Text::of(m);
    match m.files.as_slice() {
        [] if text.html.trim().is_empty() => Err(PluginError::invalid_input(
            "nothing to send: no text and no files",
        )),
        [] => send_text(api, log, &chat, &text, reply_to, keyboard).await,
        [file] => {
            if file.data.len() > MAX_UPLOAD_BYTES {
                return Err(PluginError::invalid_input(format!(
                    "file `{}` is {} bytes; the Telegram Bot API takes at most 50 MB",
                    file.name,
                    file.data.len()
                )));
            }
            let caption = (!text.html.trim().is_empty()).then_some(&text);
            send_document(api, log, &chat, file, caption, reply_to, keyboard).await
        }
        _ => Err(PluginError::invalid_input(
            "a Telegram part carries at most one file (prepare makes one part per file)",
        )),
    }
}

fn reply_parameters(message_id: i64) -> Value {
    // Still send when the message was deleted meanwhile.
    json!({"message_id": message_id, "allow_sending_without_reply": true})
}

/// Removes `parse_mode` and puts the plain text in `field`, for the re-send after Telegram
/// refused the HTML; `None` when the part has no plain text.
fn plain_params(params: &Value, field: &str, text: &Text<'_>) -> Option<Value> {
    let plain = text.plain.as_deref()?;
    let mut params = params.clone();
    params[field] = json!(plain);
    if let Some(fields) = params.as_object_mut() {
        fields.remove("parse_mode");
    }
    Some(params)
}

async fn send_text(
    api: &Api,
    log: &Log,
    chat: &Value,
    text: &Text<'_>,
    reply_to: Option<i64>,
    keyboard: Option<Value>,
) -> Result<i64, PluginError> {
    let mut params = json!({"chat_id": chat, "text": text.html, "parse_mode": "HTML"});
    if let Some(id) = reply_to {
        params["reply_parameters"] = reply_parameters(id);
    }
    if let Some(keyboard) = keyboard {
        params["reply_markup"] = keyboard;
    }
    match api
        .call::<SentMessage>("sendMessage", &params, CALL_TIMEOUT)
        .await
    {
        Ok(sent) => Ok(sent.message_id),
        Err(e) if e.is_parse_error() => {
            let Some(plain) = plain_params(&params, "text", text) else {
                return Err(e.to_plugin_error("sendMessage"));
            };
            log.warn(format!(
                "Telegram refused the HTML rendering ({e}); sending the text as plain text"
            ));
            api.call::<SentMessage>("sendMessage", &plain, CALL_TIMEOUT)
                .await
                .map(|sent| sent.message_id)
                .map_err(|e| e.to_plugin_error("sendMessage"))
        }
        Err(e) => Err(e.to_plugin_error("sendMessage")),
    }
}

async fn send_document(
    api: &Api,
    log: &Log,
    chat: &Value,
    file: &OutboundFile,
    caption: Option<&Text<'_>>,
    reply_to: Option<i64>,
    keyboard: Option<Value>,
) -> Result<i64, PluginError> {
    // Built twice at most (the plain-caption retry), so a closure rather than a clone:
    // multipart forms are not `Clone`.
    let form = |caption_text: Option<(&str, bool)>| {
        let bytes = || reqwest::multipart::Part::bytes(file.data.to_vec());
        let name = file_name(file.name.as_str());
        let part = match file.mime_type.as_str() {
            "" => bytes().file_name(name),
            // An unparseable MIME type: let Telegram sniff the content.
            mime => bytes()
                .file_name(name.clone())
                .mime_str(mime)
                .unwrap_or_else(|_| bytes().file_name(name)),
        };
        let chat_text = match chat {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let mut form = reqwest::multipart::Form::new()
            .text("chat_id", chat_text)
            .part("document", part);
        if let Some((text, html)) = caption_text {
            form = form.text("caption", text.to_owned());
            if html {
                form = form.text("parse_mode", "HTML");
            }
        }
        if let Some(id) = reply_to {
            form = form.text("reply_parameters", reply_parameters(id).to_string());
        }
        if let Some(keyboard) = &keyboard {
            form = form.text("reply_markup", keyboard.to_string());
        }
        form
    };
    let first = form(caption.map(|c| (c.html, true)));
    match api
        .call_multipart::<SentMessage>("sendDocument", first, UPLOAD_TIMEOUT)
        .await
    {
        Ok(sent) => Ok(sent.message_id),
        Err(e) if e.is_parse_error() && caption.is_some_and(|c| c.plain.is_some()) => {
            log.warn(format!(
                "Telegram refused the HTML caption ({e}); sending it as plain text"
            ));
            let plain = form(caption.and_then(|c| c.plain.as_deref().map(|p| (p, false))));
            api.call_multipart::<SentMessage>("sendDocument", plain, UPLOAD_TIMEOUT)
                .await
                .map(|sent| sent.message_id)
                .map_err(|e| e.to_plugin_error("sendDocument"))
        }
        Err(e) => Err(e.to_plugin_error("sendDocument")),
    }
}

/// The last path component, or `file` when there is none.
fn file_name(name: &str) -> String {
    let base = name.rsplit(['/', '\\']).next().unwrap_or_default().trim();
    if base.is_empty() || base == "." || base == ".." {
        "file".to_owned()
    } else {
        base.to_owned()
    }
}

async fn edit(api: &Api, log: &Log, m: &OutboundMessage) -> Result<Option<String>, PluginError> {
    let chat = chat_ref(m.chat_id.as_str())?;
    let target = target_of(m)?
        .ok_or_else(|| PluginError::invalid_input("edit without target_message_id"))?;
    let text = Text::of(m);
    if text.html.trim().is_empty() {
        return Err(PluginError::invalid_input(
            "edit with empty text: Telegram messages cannot be empty",
        ));
    }
    let mut params = json!({
        "chat_id": chat, "message_id": target, "text": text.html, "parse_mode": "HTML",
    });
    // Without reply_markup Telegram removes the keyboard, which is what an answered card wants.
    if let Some(keyboard) = keyboard(&m.buttons)? {
        params["reply_markup"] = keyboard;
    }
    let done = |result: Result<Value, ApiError>| match result {
        Ok(_) => Ok(Some(target.to_string())),
        Err(e) if e.is_not_modified() => Ok(Some(target.to_string())),
        Err(e) => Err(e),
    };
    match done(
        api.call::<Value>("editMessageText", &params, CALL_TIMEOUT)
            .await,
    ) {
        Ok(id) => Ok(id),
        Err(e) if e.is_parse_error() => {
            let Some(plain) = plain_params(&params, "text", &text) else {
                return Err(e.to_plugin_error("editMessageText"));
            };
            log.warn(format!(
                "Telegram refused the HTML rendering of an edit ({e}); using plain text"
            ));
            done(
                api.call::<Value>("editMessageText", &plain, CALL_TIMEOUT)
                    .await,
            )
            .map_err(|e| e.to_plugin_error("editMessageText"))
        }
        Err(e) => Err(e.to_plugin_error("editMessageText")),
    }
}

async fn react(api: &Api, m: &OutboundMessage) -> Result<Option<String>, PluginError> {
    let chat = chat_ref(m.chat_id.as_str())?;
    let target = target_of(m)?
        .ok_or_else(|| PluginError::invalid_input("reaction without target_message_id"))?;
    let reaction = match reaction_emoji(m.reaction.as_str())? {
        Some(emoji) => json!([{"type": "emoji", "emoji": emoji}]),
        None => json!([]),
    };
    let params = json!({"chat_id": chat, "message_id": target, "reaction": reaction});
    api.call::<Value>("setMessageReaction", &params, CALL_TIMEOUT)
        .await
        .map_err(|e| e.to_plugin_error("setMessageReaction"))?;
    Ok(None)
}

/// `sendChatAction typing`.
pub(crate) async fn typing(api: &Api, chat_id: &str) -> Result<(), PluginError> {
    let params = json!({"chat_id": chat_ref(chat_id)?, "action": "typing"});
    api.call::<Value>("sendChatAction", &params, CALL_TIMEOUT)
        .await
        .map(drop)
        .map_err(|e| e.to_plugin_error("sendChatAction"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn button(id: &str, label: &str) -> Button {
        Button {
            id: id.into(),
            label: label.into(),
        }
    }

    #[test]
    fn keyboards_pack_short_labels_and_check_ids() {
        assert_eq!(keyboard(&[]).expect("empty"), None);
        let kb = keyboard(&[
            button("ncq:q:0", "Yes"),
            button("ncq:q:1", "No"),
            button("ncq:q:2", "Maybe"),
            button("ncq:q:3", "Later"),
        ])
        .expect("kb")
        .expect("some");
        let rows = kb["inline_keyboard"].as_array().expect("rows");
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].as_array().expect("row").len(), 3);
        assert_eq!(rows[0][1]["callback_data"], "ncq:q:1");
        assert_eq!(rows[0][1]["text"], "No");
        let long = keyboard(&[
            button("a", "A rather long label for a button"),
            button("b", "Another long label"),
        ])
        .expect("kb")
        .expect("some");
        assert_eq!(long["inline_keyboard"].as_array().expect("rows").len(), 2);
        let err = keyboard(&[button(&"x".repeat(65), "x")]).expect_err("too long");
        assert_eq!(err.kind, ErrorKind::INVALID_INPUT);
    }

    #[test]
    fn reactions_map_names_and_pass_emoji() {
        let r = |n: &str| reaction_emoji(n).expect(n);
        assert_eq!(r("thumbs_up").as_deref(), Some("👍"));
        assert_eq!(r(":heart:").as_deref(), Some("❤"));
        assert_eq!(r("check").as_deref(), Some("👌"));
        assert_eq!(r("eyes").as_deref(), Some("👀"));
        assert_eq!(r("fire").as_deref(), Some("🔥"));
        assert_eq!(r("laugh").as_deref(), Some("🤣"));
        assert_eq!(r("🎉").as_deref(), Some("🎉"));
        assert_eq!(r("❤️").as_deref(), Some("❤"));
        assert_eq!(r(""), None);
        assert_eq!(
            reaction_emoji("no_such_name").expect_err("unknown").kind,
            ErrorKind::INVALID_INPUT
        );
    }

    #[test]
    fn ids_and_names() {
        assert_eq!(chat_ref("-100123").expect("id"), json!(-100_123));
        assert_eq!(chat_ref("@channel").expect("username"), json!("@channel"));
        assert!(chat_ref("telegram:5").is_err());
        assert!(message_id("12x").is_err());
        assert_eq!(file_name("../../etc/passwd"), "passwd");
        assert_eq!(file_name("dir\\report.pdf"), "report.pdf");
        assert_eq!(file_name(""), "file");
        assert_eq!(file_name(".."), "file");
    }
}
