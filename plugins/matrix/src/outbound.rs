//! Outbound: rendering the agent's Markdown to Matrix HTML, and the events that carry it.
//!
//! * `render`: the kit's Matrix HTML (`org.matrix.custom.html`, sanitized by the kit's
//!   renderer: it only writes tags from the spec's allow-list and escapes everything else)
//!   split within [`MAX_PART_BYTES`] UTF-8 bytes. A card's buttons become numbered options
//!   at the end of its last part; the user answers by replying to that message with the
//!   number (see the `sync` module).
//! * `deliver`: one `m.room.message` per part (`body` the plain text, `formatted_body` the
//!   HTML), replies (`m.in_reply_to`) and threads (`m.thread`), files uploaded to the content
//!   repository and sent as `m.image`/`m.video`/`m.audio`/`m.file`, edits (`m.replace`),
//!   reactions (`m.annotation`). Every send is a `PUT …/send/{type}/{txnId}` whose
//!   transaction id derives from the host's idempotency key, so a retried part is the same
//!   event. `m.mentions` is always empty: the agent's text never pings anyone.

use nanoclaw_plugin_api::kit::prelude::*;
use nanoclaw_plugin_api::kit::prepare;
use nanoclaw_plugin_api::kit::{LengthUnit, TextLimit};
use serde_json::{Value, json};

/// Matrix events are at most 65,536 bytes of JSON; `body` and `formatted_body` both travel,
/// escaped. 12,000 bytes of HTML per part keeps well inside.
pub(crate) const MAX_PART_BYTES: usize = 12_000;
/// Files larger than this are refused before uploading (Synapse's default is 50 MiB).
pub(crate) const MAX_UPLOAD_BYTES: usize = 50 * 1024 * 1024;

/// The part's plain text (the `body`).
pub(crate) fn plain_of(part: &OutboundMessage) -> String {
    prepare::plain_text_of(part).unwrap_or_else(|| part.text.to_string())
}

/// Escapes Markdown in a button label, so it reads as written.
fn escape_markdown(label: &str) -> String {
    let mut out = String::with_capacity(label.len());
    for c in label.chars() {
        if "\\`*_[]<>#|~!".contains(c) {
            out.push('\\');
        }
        if !c.is_control() {
            out.push(c);
        }
    }
    out
}

/// The instruction under a card's options.
pub(crate) const ANSWER_HINT: &str = "Reply to this message with the number of your choice.";

/// Renders the agent's message: Matrix HTML split within [`MAX_PART_BYTES`]; a card's
/// options appended as a numbered list.
pub(crate) fn render(mut message: OutboundMessage) -> Result<Vec<OutboundMessage>, PluginError> {
    if message.op == OutboundOp::SEND && !message.buttons.is_empty() {
        let mut text = message.text.to_string();
        if !text.trim().is_empty() {
            text.push_str("\n\n");
        }
        for (i, button) in message.buttons.iter().enumerate() {
            text.push_str(&format!("{}. {}\n", i + 1, escape_markdown(&button.label)));
        }
        text.push_str(&format!("\n*{ANSWER_HINT}*"));
        message.text = text.into();
    }
    prepare::prepare_with(
        message,
        Markup::MatrixHtml,
        TextLimit {
            max: MAX_PART_BYTES,
            unit: LengthUnit::Bytes,
        },
    )
}

/// The transaction id of a part's `n`th event: a digest of the host's idempotency key (so
/// a retried part is answered with the first event), or `fallback` when there is none.
pub(crate) fn txn_id(part: &OutboundMessage, n: usize, fallback: &str) -> String {
    let key = serde_json::from_str::<Value>(part.extra_json.as_str())
        .ok()
        .and_then(|v| v.get("idempotency_key")?.as_str().map(str::to_owned));
    match key {
        Some(key) => format!("nc{}-{n}", digest(&key)),
        None => format!("{fallback}-{n}"),
    }
}

/// FNV-1a, twice with different seeds: 32 hex digits, stable across builds and platforms.
fn digest(key: &str) -> String {
    let fnv = |seed: u64| {
        key.bytes().fold(seed, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        })
    };
    format!(
        "{:016x}{:016x}",
        fnv(0xcbf2_9ce4_8422_2325),
        fnv(0x8422_2325_cbf2_9ce4)
    )
}

/// `m.relates_to` for a reply and/or a thread.
fn relation(thread: Option<&str>, reply_to: Option<&str>) -> Option<Value> {
    match (thread, reply_to) {
        (Some(root), reply) => Some(json!({
            "rel_type": "m.thread",
            "event_id": root,
            "is_falling_back": reply.is_none(),
            "m.in_reply_to": {"event_id": reply.unwrap_or(root)},
        })),
        (None, Some(reply)) => Some(json!({"m.in_reply_to": {"event_id": reply}})),
        (None, None) => None,
    }
}

/// The content of a text part.
pub(crate) fn text_content(
    part: &OutboundMessage,
    thread: Option<&str>,
    reply_to: Option<&str>,
) -> Value {
    let mut content = json!({
        "msgtype": "m.text",
        "body": plain_of(part),
        "format": "org.matrix.custom.html",
        "formatted_body": part.text.as_str(),
        "m.mentions": {},
    });
    if let Some(relation) = relation(thread, reply_to) {
        content["m.relates_to"] = relation;
    }
    content
}

/// The content of an edit of `target` to this part's text.
pub(crate) fn edit_content(part: &OutboundMessage, target: &str) -> Value {
    let plain = plain_of(part);
    json!({
        "msgtype": "m.text",
        "body": format!("* {plain}"),
        "format": "org.matrix.custom.html",
        "formatted_body": format!("* {}", part.text),
        "m.mentions": {},
        "m.new_content": {
            "msgtype": "m.text",
            "body": plain,
            "format": "org.matrix.custom.html",
            "formatted_body": part.text.as_str(),
            "m.mentions": {},
        },
        "m.relates_to": {"rel_type": "m.replace", "event_id": target},
    })
}

/// The content of a file event.
pub(crate) fn file_content(
    file: &OutboundFile,
    mxc: &str,
    thread: Option<&str>,
    reply_to: Option<&str>,
) -> Value {
    let mime = file.mime_type.as_str();
    let msgtype = match mime.split('/').next() {
        Some("image") => "m.image",
        Some("video") => "m.video",
        Some("audio") => "m.audio",
        _ => "m.file",
    };
    let name = nanoclaw_plugin_api::kit::http::multipart::safe_file_name(file.name.as_str());
    let mut info = json!({"size": file.data.len()});
    if !mime.trim().is_empty() {
        info["mimetype"] = json!(mime);
    }
    let mut content = json!({
        "msgtype": msgtype,
        "body": name,
        "filename": name,
        "url": mxc,
        "info": info,
        "m.mentions": {},
    });
    if let Some(relation) = relation(thread, reply_to) {
        content["m.relates_to"] = relation;
    }
    content
}

/// The content of a reaction.
pub(crate) fn reaction_content(target: &str, key: &str) -> Value {
    json!({"m.relates_to": {"rel_type": "m.annotation", "event_id": target, "key": key}})
}

/// The emoji for a reaction name (`thumbs_up`, `heart`, `check`, …); an emoji (anything
/// that is not a plain name) passes through as the annotation key.
pub(crate) fn reaction_key(name: &str) -> Result<String, PluginError> {
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
        "thumbs_down" | "thumbsdown" | "-1" | "_1" | "dislike" | "no" => "👎",
        "heart" | "love" | "red_heart" => "❤️",
        "check" | "white_check_mark" | "done" => "✅",
        "x" | "cross" | "cross_mark" => "❌",
        "eyes" | "looking" | "seen" => "👀",
        "fire" => "🔥",
        "tada" | "party" | "celebrate" => "🎉",
        "pray" | "thanks" | "thank_you" => "🙏",
        "thinking" | "think" => "🤔",
        "ok" | "ok_hand" => "👌",
        "laugh" | "joy" | "laughing" => "😂",
        "smile" | "grin" | "grinning" => "😁",
        "rocket" => "🚀",
        "warning" => "⚠️",
        "hourglass" | "wait" => "⏳",
        "question" => "❓",
        "wave" => "👋",
        "star" => "⭐",
        "100" | "hundred" => "💯",
        _ if name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-:+".contains(c)) =>
        {
            return Err(PluginError::invalid_input(format!(
                "unknown reaction `{name}`: use a name such as thumbs_up, heart, check, eyes, \
                 fire, or an emoji"
            )));
        }
        _ if name.len() > 64 => {
            return Err(PluginError::invalid_input(
                "a reaction key of more than 64 bytes",
            ));
        }
        _ => return Ok(name.to_owned()),
    };
    Ok(emoji.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn send(text: &str) -> OutboundMessage {
        OutboundMessage {
            op: OutboundOp::SEND,
            chat_id: "!room:example.org".into(),
            text: text.into(),
            ..OutboundMessage::default()
        }
    }

    #[test]
    fn markdown_becomes_sanitized_matrix_html_with_a_plain_body() {
        let parts = render(send(
            "**bold** <script>alert(1)</script> [x](https://e.org)",
        ))
        .expect("rendered");
        assert_eq!(parts.len(), 1);
        let content = text_content(&parts[0], None, None);
        let html = content["formatted_body"].as_str().unwrap();
        assert!(html.contains("<strong>bold</strong>"), "{html}");
        assert!(!html.contains("<script>"), "{html}");
        assert!(html.contains("href=\"https://e.org\""), "{html}");
        let body = content["body"].as_str().unwrap();
        assert!(
            body.contains("bold") && !body.contains("<strong>"),
            "{body}"
        );
        assert_eq!(content["format"], "org.matrix.custom.html");
        assert_eq!(content["m.mentions"], json!({}));
    }

    #[test]
    fn long_text_is_split_within_the_event_budget() {
        let long: String = (0..4000).map(|i| format!("w{i} ")).collect();
        let parts = render(send(&long)).expect("rendered");
        assert!(parts.len() >= 2);
        for p in &parts {
            assert!(p.text.len() <= MAX_PART_BYTES);
        }
    }

    #[test]
    fn buttons_become_numbered_options_on_the_last_part() {
        let mut card = send("Allow **Bob**?");
        card.buttons = vec![
            Button {
                id: "approve:1".into(),
                label: "Allow".into(),
            },
            Button {
                id: "deny:1".into(),
                label: "Deny *forever*".into(),
            },
        ]
        .into();
        let parts = render(card).expect("rendered");
        let last = parts.last().unwrap();
        assert_eq!(last.buttons.len(), 2, "the ids stay with the part");
        let plain = plain_of(last);
        assert!(plain.contains("1. Allow"), "{plain}");
        assert!(plain.contains("2. Deny *forever*"), "{plain}");
        assert!(plain.contains(ANSWER_HINT), "{plain}");
        assert!(last.text.contains("<ol>"), "{}", last.text);
    }

    #[test]
    fn relations_edits_reactions_and_transaction_ids() {
        let part = &render(send("hi")).unwrap()[0];
        let reply = text_content(part, None, Some("$t:x"));
        assert_eq!(reply["m.relates_to"]["m.in_reply_to"]["event_id"], "$t:x");
        let threaded = text_content(part, Some("$root:x"), None);
        assert_eq!(threaded["m.relates_to"]["rel_type"], "m.thread");
        assert_eq!(threaded["m.relates_to"]["is_falling_back"], true);
        let edit = edit_content(part, "$orig:x");
        assert_eq!(edit["m.relates_to"]["rel_type"], "m.replace");
        assert_eq!(edit["m.new_content"]["body"], "hi");
        assert_eq!(edit["body"], "* hi");
        assert_eq!(reaction_key("thumbs_up").unwrap(), "👍");
        assert_eq!(reaction_key("🦀").unwrap(), "🦀");
        assert!(reaction_key("nonsense").is_err());
        assert_eq!(
            reaction_content("$m:x", "👍")["m.relates_to"]["rel_type"],
            "m.annotation"
        );

        let mut keyed = part.clone();
        keyed.extra_json = json!({"idempotency_key": "sess/1/0"}).to_string().into();
        let a = txn_id(&keyed, 0, "f");
        assert_eq!(a, txn_id(&keyed, 0, "g"), "same key, same transaction");
        assert_ne!(a, txn_id(&keyed, 1, "f"));
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
        assert_eq!(txn_id(part, 2, "f"), "f-2");

        let file = OutboundFile {
            name: "../../photo.png".into(),
            mime_type: "image/png".into(),
            data: vec![1, 2, 3].into(),
        };
        let content = file_content(&file, "mxc://x/abc", None, None);
        assert_eq!(content["msgtype"], "m.image");
        assert_eq!(content["body"], "photo.png");
        assert_eq!(content["info"]["size"], 3);
    }
}
