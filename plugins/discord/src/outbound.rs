//! Outbound: parts made by `render` posted, edited or reacted with; typing; DMs.

use std::hash::{Hash as _, Hasher as _};

use nanoclaw_plugin_api::kit::http::reqwest::Method;
use nanoclaw_plugin_api::kit::http::reqwest::multipart::{Form, Part};
use nanoclaw_plugin_api::kit::http::{check_upload_size, multipart};
use nanoclaw_plugin_api::kit::prelude::*;
use nanoclaw_plugin_api::kit::prepare::{prepare_default, reply_target};
use serde_json::{Value, json};

use crate::Discord;
use crate::api::{Api, RouteKey};

/// Buttons per action row, and action rows per message (Discord's limits).
pub(crate) const BUTTONS_PER_ROW: usize = 5;
pub(crate) const MAX_ROWS: usize = 5;
/// Longest `custom_id`, in characters.
pub(crate) const MAX_CUSTOM_ID_CHARS: usize = 100;
/// Longest button label, in characters.
const MAX_LABEL_CHARS: usize = 80;
/// Files per message.
pub(crate) const MAX_FILES: usize = 10;
/// Upload size a bot may send without a boosted server.
pub(crate) const MAX_UPLOAD_BYTES: usize = 10 * 1024 * 1024;
/// Discord keeps a nonce for a few minutes and, with `enforce_nonce`, answers a repeated
/// post with the first message. At most 25 characters.
const NONCE_CHARS: usize = 25;
/// Button style: primary (blurple).
const STYLE_PRIMARY: u8 = 1;

/// `render`: the kit's default (Discord Markdown, split within 2,000), with the buttons
/// checked against Discord's limits and files beyond ten per message moved to parts of
/// their own.
pub(crate) fn render(message: OutboundMessage) -> Result<Vec<OutboundMessage>, PluginError> {
    check_buttons(&message.buttons)?;
    let mut parts = prepare_default(message, &Discord::INFO)?;
    let Some(last) = parts.last_mut() else {
        return Ok(parts);
    };
    if last.files.len() <= MAX_FILES {
        return Ok(parts);
    }
    // The first ten stay with the last text part; the rest go in groups of ten, the buttons
    // on the very last.
    let mut files: Vec<OutboundFile> = std::mem::take(&mut last.files).into_vec();
    let buttons = std::mem::take(&mut last.buttons);
    let rest = files.split_off(MAX_FILES);
    last.files = files.into();
    let template = last.clone();
    for chunk in rest.chunks(MAX_FILES) {
        parts.push(OutboundMessage {
            text: RString::new(),
            target_message_id: RNone,
            files: chunk.to_vec().into(),
            buttons: RVec::new(),
            ..template.clone()
        });
    }
    if let Some(last) = parts.last_mut() {
        last.buttons = buttons;
    }
    Ok(parts)
}

fn check_buttons(buttons: &[Button]) -> Result<(), PluginError> {
    if buttons.len() > BUTTONS_PER_ROW * MAX_ROWS {
        return Err(PluginError::invalid_input(format!(
            "{} buttons: Discord shows at most {} on a message",
            buttons.len(),
            BUTTONS_PER_ROW * MAX_ROWS
        )));
    }
    for button in buttons {
        let id = button.id.as_str();
        if id.is_empty() || id.chars().count() > MAX_CUSTOM_ID_CHARS {
            return Err(PluginError::invalid_input(format!(
                "button id `{id}`: Discord takes 1 to {MAX_CUSTOM_ID_CHARS} characters"
            )));
        }
    }
    Ok(())
}

/// Action rows of at most five buttons each.
pub(crate) fn components(buttons: &[Button]) -> Value {
    let rows: Vec<Value> = buttons
        .chunks(BUTTONS_PER_ROW)
        .map(|row| {
            let buttons: Vec<Value> = row
                .iter()
                .map(|b| {
                    let mut label: String = b.label.as_str().trim().chars().take(MAX_LABEL_CHARS).collect();
                    if label.is_empty() {
                        label = "…".to_owned();
                    }
                    json!({"type": 2, "style": STYLE_PRIMARY, "label": label, "custom_id": b.id.as_str()})
                })
                .collect();
            json!({"type": 1, "components": buttons})
        })
        .collect();
    Value::Array(rows)
}

/// A Discord id (a snowflake) from the host: digits only.
pub(crate) fn snowflake<'a>(what: &str, id: &'a str) -> Result<&'a str, PluginError> {
    let id = id.trim();
    if id.is_empty() || id.len() > 20 || !id.bytes().all(|b| b.is_ascii_digit()) {
        return Err(PluginError::invalid_input(format!(
            "{what} `{id}` is not a Discord id (a number such as 1234567890123456789)"
        )));
    }
    Ok(id)
}

/// The nonce for a part: a digest of the host's idempotency key, so a re-send after a crash
/// is answered with the first message instead of a second one.
fn nonce(part: &OutboundMessage) -> Option<String> {
    let extra: Value = serde_json::from_str(part.extra_json.as_str()).ok()?;
    let key = extra.get("idempotency_key")?.as_str()?;
    let mut a = std::collections::hash_map::DefaultHasher::new();
    ("discord-nonce-a", key).hash(&mut a);
    let mut b = std::collections::hash_map::DefaultHasher::new();
    ("discord-nonce-b", key).hash(&mut b);
    let mut nonce = format!("{:016x}{:016x}", a.finish(), b.finish());
    nonce.truncate(NONCE_CHARS);
    Some(nonce)
}

/// `POST /channels/{chat}/messages`, JSON or (with files) multipart; returns the id.
pub(crate) async fn send(api: &Api, part: &OutboundMessage) -> Result<Option<String>, PluginError> {
    let chat = snowflake("chat id", part.chat_id.as_str())?;
    if part.files.len() > MAX_FILES {
        return Err(PluginError::invalid_input(format!(
            "{} files: Discord takes at most {MAX_FILES} per message",
            part.files.len()
        )));
    }
    for file in &part.files {
        check_upload_size(file, MAX_UPLOAD_BYTES, "Discord")?;
    }
    let mut body = json!({
        // Agents may mention people; @everyone, @here and roles never ping.
        "allowed_mentions": {"parse": ["users"], "replied_user": true},
    });
    if !part.text.is_empty() {
        body["content"] = json!(part.text.as_str());
    }
    if let Some(target) = reply_target(part) {
        let target = snowflake("reply target", target)?;
        body["message_reference"] = json!({"message_id": target, "fail_if_not_exists": false});
    }
    if !part.buttons.is_empty() {
        body["components"] = components(&part.buttons);
    }
    if let Some(nonce) = nonce(part) {
        body["nonce"] = json!(nonce);
        body["enforce_nonce"] = json!(true);
    }
    if !part.files.is_empty() {
        let attachments: Vec<Value> = part
            .files
            .iter()
            .enumerate()
            .map(|(i, f)| json!({"id": i, "filename": multipart::safe_file_name(f.name.as_str())}))
            .collect();
        body["attachments"] = Value::Array(attachments);
    }
    let key = RouteKey::new(&Method::POST, "/channels/{channel}/messages", chat);
    let id = api
        .created_id("send message", &key, || {
            let request = api.request(Method::POST, &["channels", chat, "messages"])?;
            if part.files.is_empty() {
                return Ok(request.json(&body));
            }
            let payload = Part::text(body.to_string())
                .mime_str("application/json")
                .map_err(|e| PluginError::other(format!("payload_json: {e}")))?;
            let mut form = Form::new().part("payload_json", payload);
            for (i, file) in part.files.iter().enumerate() {
                form = form.part(format!("files[{i}]"), multipart::outbound_file_part(file));
            }
            Ok(request.multipart(form))
        })
        .await?;
    Ok(Some(id))
}

/// `PATCH /channels/{chat}/messages/{id}`: new text and buttons (none removes them).
pub(crate) async fn edit(api: &Api, part: &OutboundMessage) -> Result<Option<String>, PluginError> {
    let chat = snowflake("chat id", part.chat_id.as_str())?;
    let target = reply_target(part)
        .ok_or_else(|| PluginError::invalid_input("edit without target_message_id"))?;
    let id = snowflake("message id", target)?;
    // Components are always sent: an edit without buttons removes them, which is what an
    // answered card wants (as on Telegram).
    let body = json!({
        "content": part.text.as_str(),
        "allowed_mentions": {"parse": ["users"]},
        "components": components(&part.buttons),
    });
    let key = RouteKey::new(&Method::PATCH, "/channels/{channel}/messages/{id}", chat);
    api.created_id("edit message", &key, || {
        Ok(api
            .request(Method::PATCH, &["channels", chat, "messages", id])?
            .json(&body))
    })
    .await
    .map(Some)
}

/// `PUT /channels/{chat}/messages/{id}/reactions/{emoji}/@me`.
pub(crate) async fn react(
    api: &Api,
    part: &OutboundMessage,
) -> Result<Option<String>, PluginError> {
    let chat = snowflake("chat id", part.chat_id.as_str())?;
    let target = reply_target(part)
        .ok_or_else(|| PluginError::invalid_input("react without target_message_id"))?;
    let id = snowflake("message id", target)?;
    let emoji = reaction_emoji(part.reaction.as_str())?;
    let key = RouteKey::new(
        &Method::PUT,
        "/channels/{channel}/messages/{id}/reactions",
        chat,
    );
    api.call("add reaction", &key, || {
        api.request(
            Method::PUT,
            &["channels", chat, "messages", id, "reactions", &emoji, "@me"],
        )
    })
    .await
    .map(|_| None)
}

/// `POST /channels/{chat}/typing`.
pub(crate) async fn typing(api: &Api, chat: &str) -> Result<(), PluginError> {
    let chat = snowflake("chat id", chat)?;
    let key = RouteKey::new(&Method::POST, "/channels/{channel}/typing", chat);
    api.call("typing", &key, || {
        api.request(Method::POST, &["channels", chat, "typing"])
    })
    .await
    .map(drop)
}

/// The emoji for a reaction name (`thumbs_up`, `heart`, `check`, …); an emoji passes
/// through, and so does a custom emoji written `name:id`.
pub(crate) fn reaction_emoji(name: &str) -> Result<String, PluginError> {
    let name = name.trim();
    if name.is_empty() {
        return Err(PluginError::invalid_input("react without a reaction"));
    }
    let key = name
        .trim_matches(':')
        .to_ascii_lowercase()
        .replace('-', "_");
    let emoji = match key.as_str() {
        "thumbs_up" | "thumbsup" | "+1" | "like" | "yes" => "👍",
        "thumbs_down" | "thumbsdown" | "_1" | "-1" | "dislike" | "no" => "👎",
        "heart" | "love" | "red_heart" => "❤️",
        "check" | "white_check_mark" | "done" => "✅",
        "heavy_check_mark" => "✔️",
        "x" | "cross" | "cross_mark" => "❌",
        "ok" | "ok_hand" => "👌",
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
        "rocket" => "🚀",
        "warning" => "⚠️",
        "hourglass" | "wait" => "⏳",
        "question" => "❓",
        "wave" => "👋",
        "star" => "⭐",
        "sunglasses" => "😎",
        "shrug" => "🤷",
        // A custom emoji, `name:id`.
        _ if is_custom_emoji(name.trim_matches(':')) => {
            return Ok(name.trim_matches(':').to_owned());
        }
        _ if name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-:+".contains(c)) =>
        {
            return Err(PluginError::invalid_input(format!(
                "unknown reaction `{name}`: use a name such as thumbs_up, heart, check, eyes, \
                 fire, an emoji, or a custom emoji as name:id"
            )));
        }
        _ => return Ok(name.to_owned()),
    };
    Ok(emoji.to_owned())
}

fn is_custom_emoji(name: &str) -> bool {
    name.split_once(':').is_some_and(|(n, id)| {
        !n.is_empty()
            && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && snowflake("emoji id", id).is_ok()
    })
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
    fn buttons_fill_rows_of_five() {
        let buttons: Vec<Button> = (0..7)
            .map(|i| button(&format!("ncq:q:{i}"), "Yes"))
            .collect();
        let rows = components(&buttons);
        let rows = rows.as_array().expect("rows");
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0]["components"].as_array().map(Vec::len), Some(5));
        assert_eq!(rows[1]["components"].as_array().map(Vec::len), Some(2));
        assert_eq!(rows[0]["components"][0]["custom_id"], "ncq:q:0");
        assert!(check_buttons(&buttons).is_ok());
        let many: Vec<Button> = (0..26).map(|i| button(&i.to_string(), "x")).collect();
        assert_eq!(
            check_buttons(&many).unwrap_err().kind,
            ErrorKind::INVALID_INPUT
        );
        assert!(check_buttons(&[button(&"x".repeat(101), "x")]).is_err());
        assert!(check_buttons(&[button(&"x".repeat(100), "x")]).is_ok());
    }

    #[test]
    fn reactions_and_ids() {
        assert_eq!(reaction_emoji("thumbs_up").unwrap(), "👍");
        assert_eq!(reaction_emoji(":check:").unwrap(), "✅");
        assert_eq!(reaction_emoji("🦀").unwrap(), "🦀");
        assert_eq!(reaction_emoji("blob:123456789").unwrap(), "blob:123456789");
        assert!(reaction_emoji("nonsense_name").is_err());
        assert!(snowflake("id", "123").is_ok());
        assert!(snowflake("id", "../x").is_err());
        assert!(snowflake("id", "").is_err());
    }

    #[test]
    fn many_files_get_parts_of_their_own() {
        let files: Vec<OutboundFile> = (0..23)
            .map(|i| OutboundFile {
                name: format!("f{i}.txt").into(),
                mime_type: "text/plain".into(),
                data: b"x".to_vec().into(),
            })
            .collect();
        let message = OutboundMessage {
            op: OutboundOp::SEND,
            chat_id: "1".into(),
            text: "here".into(),
            files: files.into(),
            buttons: vec![button("ncq:q:0", "ok")].into(),
            ..OutboundMessage::default()
        };
        let parts = render(message).expect("render");
        let counts: Vec<usize> = parts.iter().map(|p| p.files.len()).collect();
        assert_eq!(counts, [10, 10, 3]);
        assert_eq!(parts[0].text.as_str(), "here");
        assert!(parts[2].text.is_empty());
        assert_eq!(parts[2].buttons.len(), 1);
        assert!(parts[0].buttons.is_empty());
    }
}
