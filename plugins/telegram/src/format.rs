//! Telegram's `prepare`: the agent's message as the parts `deliver` sends, one Bot API call
//! each.
//!
//! The Markdown is rendered once by the kit as Telegram HTML (`parse_mode = "HTML"`: b, i,
//! s, code, pre with a language, a, blockquote, tg-spoiler; everything else escaped) and
//! split in UTF-16 code units, as Telegram counts: messages of at most 4096, captions of at
//! most 1024. Tags open at a cut are closed and reopened, so every part parses. Each part
//! also carries its plain text, which `deliver` sends instead when Telegram refuses the HTML.
//!
//! * Text alone: one `sendMessage` part per piece.
//! * With files: one `sendDocument` part per file. When the text fits a caption it rides on
//!   the first file; otherwise it goes first, as messages.
//! * The first part replies to the message the agent replied to; buttons go on the last.
//! * An edit is cut to one message, ending with `…` when it was longer.
//!
//! Button ids and file sizes are checked here, so a message Telegram would refuse fails
//! before any part of it is sent.

use nanoclaw_plugin_api::kit::prelude::*;
use nanoclaw_plugin_api::kit::prepare::part_message;
use nanoclaw_plugin_api::kit::render::render_markdown;
use nanoclaw_plugin_api::kit::{Part, TextLimit};

use crate::outbound::keyboard;

/// Telegram's limit for a message text.
pub(crate) const MESSAGE_LIMIT: TextLimit = TextLimit::new(4096, LengthUnit::Utf16);
/// Telegram's limit for a caption.
pub(crate) const CAPTION_LIMIT: TextLimit = TextLimit::new(1024, LengthUnit::Utf16);
/// The Bot API refuses uploads above 50 MB.
pub(crate) const MAX_UPLOAD_BYTES: usize = 50 * 1024 * 1024;

/// The parts of one outbound message.
pub(crate) fn prepare(message: OutboundMessage) -> Result<Vec<OutboundMessage>, PluginError> {
    match message.op {
        OutboundOp::SEND => send_parts(message),
        OutboundOp::EDIT => edit_part(message),
        _ => Ok(vec![message]),
    }
}

fn send_parts(message: OutboundMessage) -> Result<Vec<OutboundMessage>, PluginError> {
    keyboard(&message.buttons)?;
    for file in message.files.iter() {
        if file.data.len() > MAX_UPLOAD_BYTES {
            return Err(PluginError::invalid_input(format!(
                "file `{}` is {} bytes; the Telegram Bot API takes at most 50 MB",
                file.name,
                file.data.len()
            )));
        }
    }
    let html = render_markdown(message.text.as_str(), Markup::TelegramHtml);
    let mut parts: Vec<OutboundMessage> = Vec::new();
    if message.files.is_empty() {
        parts.extend(
            html.split(MESSAGE_LIMIT)
                .iter()
                .map(|p| part_message(&message, p)),
        );
        if parts.is_empty() {
            return Err(PluginError::invalid_input(
                "nothing to send: no text and no files",
            ));
        }
    } else {
        let mut captions = html.split(CAPTION_LIMIT);
        let caption = if captions.len() <= 1 {
            captions.pop()
        } else {
            parts.extend(
                html.split(MESSAGE_LIMIT)
                    .iter()
                    .map(|p| part_message(&message, p)),
            );
            None
        };
        for (index, file) in message.files.iter().enumerate() {
            let text = match (index, &caption) {
                (0, Some(caption)) => caption.clone(),
                _ => Part::default(),
            };
            let mut part = part_message(&message, &text);
            part.files = vec![file.clone()].into();
            parts.push(part);
        }
    }
    if let Some(first) = parts.first_mut() {
        first.target_message_id = message.target_message_id.clone();
    }
    if let Some(last) = parts.last_mut() {
        last.buttons = message.buttons;
    }
    Ok(parts)
}

fn edit_part(message: OutboundMessage) -> Result<Vec<OutboundMessage>, PluginError> {
    keyboard(&message.buttons)?;
    let part = render_markdown(message.text.as_str(), Markup::TelegramHtml)
        .truncate(MESSAGE_LIMIT)
        .ok_or_else(|| {
            PluginError::invalid_input("edit with empty text: Telegram messages cannot be empty")
        })?;
    let mut edited = part_message(&message, &part);
    edited.target_message_id = message.target_message_id;
    edited.buttons = message.buttons;
    Ok(vec![edited])
}

#[cfg(test)]
mod tests {
    use super::*;
    use nanoclaw_plugin_api::kit::prepare::plain_text_of;

    fn send(text: &str) -> OutboundMessage {
        OutboundMessage {
            chat_id: "42".into(),
            text: text.into(),
            ..OutboundMessage::default()
        }
    }

    fn file(name: &str) -> OutboundFile {
        OutboundFile {
            name: name.into(),
            mime_type: "text/plain".into(),
            data: b"x".to_vec().into(),
        }
    }

    fn utf16(text: &str) -> usize {
        text.encode_utf16().count()
    }

    #[test]
    fn text_is_rendered_and_split_in_utf16_units() {
        let parts = prepare(send(&"🙂 **bold** ".repeat(600))).expect("parts");
        assert!(parts.len() >= 2, "{}", parts.len());
        for part in &parts {
            assert!(utf16(&part.text) <= 4096);
            assert!(part.text.starts_with("🙂 <b>bold</b>") || part.text.starts_with("<b>"));
            let plain = plain_text_of(part).unwrap_or_default();
            assert!(
                plain.starts_with("🙂 bold") || plain.starts_with("bold"),
                "{plain}"
            );
        }
        let err = prepare(send(" \n ")).expect_err("empty");
        assert_eq!(err.kind, ErrorKind::INVALID_INPUT);
    }

    #[test]
    fn files_get_the_caption_when_it_fits_else_the_text_goes_first() {
        let mut m = send("Here is the **report**");
        m.target_message_id = RSome("7".into());
        m.files = vec![file("a.txt"), file("b.txt")].into();
        m.buttons = vec![Button {
            id: "ncq:q:0".into(),
            label: "OK".into(),
        }]
        .into();
        let parts = prepare(m.clone()).expect("parts");
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].text.as_str(), "Here is the <b>report</b>");
        assert_eq!(parts[0].files[0].name.as_str(), "a.txt");
        assert_eq!(parts[1].text.as_str(), "");
        assert_eq!(parts[1].files[0].name.as_str(), "b.txt");
        assert!(parts[0].buttons.is_empty() && parts[1].buttons.len() == 1);
        assert_eq!(
            parts[0].target_message_id.as_ref().map(RString::as_str),
            RSome("7")
        );
        assert_eq!(parts[1].target_message_id, RNone);

        m.text = "x ".repeat(700).into();
        let parts = prepare(m).expect("parts");
        assert_eq!(parts.len(), 3, "the text first, then one part per file");
        assert!(parts[0].files.is_empty() && utf16(&parts[0].text) > 1024);
        assert!(
            parts[1..]
                .iter()
                .all(|p| p.text.is_empty() && p.files.len() == 1)
        );
    }

    #[test]
    fn refused_input_fails_before_anything_is_sent() {
        let mut m = send("x");
        m.buttons = vec![Button {
            id: "n".repeat(65).into(),
            label: "x".into(),
        }]
        .into();
        assert_eq!(
            prepare(m).expect_err("button").kind,
            ErrorKind::INVALID_INPUT
        );
        let mut m = send("x");
        m.files = vec![OutboundFile {
            data: vec![0u8; MAX_UPLOAD_BYTES + 1].into(),
            ..file("big.bin")
        }]
        .into();
        assert_eq!(prepare(m).expect_err("big").kind, ErrorKind::INVALID_INPUT);
    }

    #[test]
    fn edits_are_one_part_with_an_ellipsis() {
        let edit = OutboundMessage {
            op: OutboundOp::EDIT,
            target_message_id: RSome("9".into()),
            ..send(&format!("**{}**", "word ".repeat(1000).trim_end()))
        };
        let parts = prepare(edit).expect("edit");
        assert_eq!(parts.len(), 1);
        assert!(utf16(&parts[0].text) <= 4096);
        assert!(
            parts[0].text.ends_with("…</b>"),
            "{}",
            &parts[0].text[4000..]
        );
        let empty = OutboundMessage {
            op: OutboundOp::EDIT,
            ..send("")
        };
        assert_eq!(
            prepare(empty).expect_err("empty").kind,
            ErrorKind::INVALID_INPUT
        );
        let react = OutboundMessage {
            op: OutboundOp::REACT,
            reaction: "heart".into(),
            ..send("")
        };
        assert_eq!(prepare(react.clone()).expect("react"), vec![react]);
    }
}
