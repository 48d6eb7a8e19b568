//! `prepare`, kit side: turning the agent's message into the parts `deliver` sends.
//!
//! The host calls the ABI's `prepare` once per outbound message and then `deliver` once per
//! part it got back, recording progress after each. The kit implements `prepare` with
//! [`Channel::render`](super::Channel::render) (default: [`prepare_default`]) and marks every
//! part it returns in the part's `extra_json` (key [`PREPARED_KEY`], read with
//! [`PartInfo::of`]). Its `deliver` hands marked parts to [`Channel::deliver`](super::Channel::deliver)
//! untouched; an unmarked message (from a host older than ABI 1.1, which never calls
//! `prepare`) is prepared there and every part delivered in turn. So `Channel::deliver` only
//! ever sees parts made by `Channel::render`, and must never render or split again.
//!
//! `render` must be deterministic: after a restart the host prepares the same message again
//! and skips the parts it already delivered.

use abi_stable::std_types::{ROption, RString, RVec};
use serde_json::{Map, Value, json};

use super::channel::ChannelInfo;
use super::format::{Markup, TextLimit};
use super::rendered::{Part, Rendered};
use crate::abi::{OutboundMessage, OutboundOp, PluginError};

/// The key under which a prepared part's [`PartInfo`] lives in its `extra_json`.
pub const PREPARED_KEY: &str = "prepared";

/// What the kit records about a prepared part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartInfo {
    /// The markup of the part's text.
    pub markup: Markup,
    /// 0-based position among the message's parts.
    pub index: u32,
    /// How many parts the message has.
    pub count: u32,
    /// The part as plain text, for a fallback (Telegram's re-send when its HTML is refused,
    /// Matrix's `body`, an email's text part), when the renderer provided one.
    pub plain_text: Option<String>,
}

fn extra_object(extra_json: &str) -> Map<String, Value> {
    match serde_json::from_str::<Value>(extra_json) {
        Ok(Value::Object(map)) => map,
        // Empty or not an object: nothing to keep.
        _ => Map::new(),
    }
}

impl PartInfo {
    /// The part info of a prepared message; `None` for a message that was not prepared.
    pub fn of(message: &OutboundMessage) -> Option<Self> {
        if message.extra_json.is_empty() {
            return None;
        }
        let extra = extra_object(message.extra_json.as_str());
        let info = extra.get(PREPARED_KEY)?.as_object()?;
        let number = |key: &str| {
            info.get(key)
                .and_then(Value::as_u64)
                .and_then(|n| u32::try_from(n).ok())
        };
        Some(Self {
            markup: info
                .get("markup")
                .and_then(Value::as_str)
                .and_then(Markup::from_name)
                .unwrap_or_default(),
            index: number("index")?,
            count: number("count")?,
            plain_text: info
                .get("plain_text")
                .and_then(Value::as_str)
                .map(str::to_owned),
        })
    }
}

/// The plain-text fallback recorded with [`set_plain_text`] (sealed or not yet).
pub fn plain_text_of(message: &OutboundMessage) -> Option<String> {
    if message.extra_json.is_empty() {
        return None;
    }
    extra_object(message.extra_json.as_str())
        .get(PREPARED_KEY)?
        .get("plain_text")?
        .as_str()
        .map(str::to_owned)
}

/// True when `message` was made by the kit's `prepare`.
pub fn is_prepared(message: &OutboundMessage) -> bool {
    PartInfo::of(message).is_some()
}

fn update_prepared(message: &mut OutboundMessage, f: impl FnOnce(&mut Map<String, Value>)) {
    let mut extra = extra_object(message.extra_json.as_str());
    let mut info = match extra.remove(PREPARED_KEY) {
        Some(Value::Object(map)) => map,
        _ => Map::new(),
    };
    f(&mut info);
    extra.insert(PREPARED_KEY.to_owned(), Value::Object(info));
    message.extra_json = RString::from(Value::Object(extra).to_string());
}

/// Records the plain-text fallback of a part (from [`Part::plain`]); a custom
/// [`Channel::render`](super::Channel::render) calls it for the parts it builds.
pub fn set_plain_text(message: &mut OutboundMessage, plain: &str) {
    update_prepared(message, |info| {
        info.insert("plain_text".to_owned(), json!(plain));
    });
}

/// Marks `parts` as prepared in `markup`, numbering them (what the kit's `prepare` returns).
pub(crate) fn seal(parts: Vec<OutboundMessage>, markup: Markup) -> Vec<OutboundMessage> {
    let count = u32::try_from(parts.len()).unwrap_or(u32::MAX);
    parts
        .into_iter()
        .enumerate()
        .map(|(index, mut part)| {
            update_prepared(&mut part, |info| {
                info.insert("markup".to_owned(), json!(markup.name()));
                info.insert("index".to_owned(), json!(index));
                info.insert("count".to_owned(), json!(count));
            });
            part
        })
        .collect()
}

/// Renders the agent's text in `markup`: Markdown through `kit::render` with the
/// `kit-render` feature; without it (or for [`Markup::Verbatim`]) the text as it is.
pub fn render_text(text: &str, markup: Markup) -> Rendered {
    #[cfg(feature = "kit-render")]
    {
        super::render::render_markdown(text, markup)
    }
    #[cfg(not(feature = "kit-render"))]
    {
        let _ = markup;
        Rendered::verbatim(text)
    }
}

/// One part carrying `part`'s text (and its plain fallback), built from `template` (op,
/// chat, thread, extra JSON) with no files, buttons or reply target of its own.
pub fn part_message(template: &OutboundMessage, part: &Part) -> OutboundMessage {
    let mut message = OutboundMessage {
        op: template.op,
        chat_id: template.chat_id.clone(),
        thread_id: template.thread_id.clone(),
        text: RString::from(part.text.as_str()),
        extra_json: template.extra_json.clone(),
        ..OutboundMessage::default()
    };
    set_plain_text(&mut message, &part.plain);
    message
}

/// The default [`Channel::render`](super::Channel::render): [`prepare_with`] the channel's
/// declared markup and limit.
pub fn prepare_default(
    message: OutboundMessage,
    info: &ChannelInfo,
) -> Result<Vec<OutboundMessage>, PluginError> {
    prepare_with(message, info.markup, info.text_limit())
}

/// Prepares a message the common way:
///
/// * `SEND`: the text rendered in `markup` and split within `limit`; the first part replies to
///   `target_message_id`; files and buttons go with the last part (after the text that
///   introduces them). A message with files or buttons but no text is one part with empty
///   text. Nothing at all is an `INVALID_INPUT` error.
/// * `EDIT`: rendered and cut to one part within `limit`, ending with `…` when it was longer.
/// * `REACT` and operations this kit does not know: the message as it is, in one part.
pub fn prepare_with(
    message: OutboundMessage,
    markup: Markup,
    limit: TextLimit,
) -> Result<Vec<OutboundMessage>, PluginError> {
    match message.op {
        OutboundOp::SEND => {
            let rendered = render_text(message.text.as_str(), markup);
            let mut parts: Vec<OutboundMessage> = rendered
                .split(limit)
                .iter()
                .map(|p| part_message(&message, p))
                .collect();
            if parts.is_empty() {
                if message.files.is_empty() && message.buttons.is_empty() {
                    return Err(PluginError::invalid_input(
                        "nothing to send: no text, files or buttons",
                    ));
                }
                parts.push(part_message(&message, &Part::default()));
            }
            if let Some(first) = parts.first_mut() {
                first.target_message_id = message.target_message_id.clone();
            }
            if let Some(last) = parts.last_mut() {
                last.files = message.files;
                last.buttons = message.buttons;
            }
            Ok(parts)
        }
        OutboundOp::EDIT => {
            let part = render_text(message.text.as_str(), markup)
                .truncate(limit)
                .ok_or_else(|| PluginError::invalid_input("edit with empty text"))?;
            let mut edited = part_message(&message, &part);
            edited.target_message_id = message.target_message_id;
            edited.buttons = message.buttons;
            edited.files = message.files;
            Ok(vec![edited])
        }
        _ => Ok(vec![message]),
    }
}

/// What the ABI `prepare` returns for `parts` (sealed, as `RVec`).
pub(crate) fn to_abi(parts: Vec<OutboundMessage>, markup: Markup) -> RVec<OutboundMessage> {
    RVec::from(seal(parts, markup))
}

/// The reply target of a message, as text.
pub fn reply_target(message: &OutboundMessage) -> Option<&str> {
    match &message.target_message_id {
        ROption::RSome(id) => Some(id.as_str()),
        ROption::RNone => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abi::{Button, OutboundFile};
    use crate::kit::format::LengthUnit;
    use abi_stable::std_types::RSome;

    fn send(text: &str) -> OutboundMessage {
        OutboundMessage {
            chat_id: "c".into(),
            text: text.into(),
            extra_json: r#"{"keep":1}"#.into(),
            ..OutboundMessage::default()
        }
    }

    #[test]
    fn send_splits_and_attaches_files_and_buttons_to_the_last_part() {
        let mut m = send(&"word ".repeat(30));
        m.target_message_id = RSome("7".into());
        m.buttons = vec![Button {
            id: "b".into(),
            label: "B".into(),
        }]
        .into();
        m.files = vec![OutboundFile::default()].into();
        let parts = seal(
            prepare_with(m, Markup::Verbatim, TextLimit::new(40, LengthUnit::Chars))
                .expect("parts"),
            Markup::Verbatim,
        );
        assert_eq!(parts.len(), 4);
        assert_eq!(reply_target(&parts[0]), Some("7"));
        assert!(parts[1..].iter().all(|p| reply_target(p).is_none()));
        assert!(
            parts[..3]
                .iter()
                .all(|p| p.buttons.is_empty() && p.files.is_empty())
        );
        assert_eq!((parts[3].buttons.len(), parts[3].files.len()), (1, 1));
        for (i, p) in parts.iter().enumerate() {
            let info = PartInfo::of(p).expect("prepared");
            assert_eq!((info.index as usize, info.count), (i, 4));
            assert_eq!(info.plain_text.as_deref(), Some(p.text.as_str()));
            assert_eq!(p.chat_id.as_str(), "c");
        }
    }

    #[test]
    fn empty_text_files_only_edit_and_react() {
        let err = prepare_with(send("  "), Markup::Verbatim, TextLimit::NONE).expect_err("empty");
        assert_eq!(err.kind, crate::abi::ErrorKind::INVALID_INPUT);
        let mut files = send("");
        files.files = vec![OutboundFile::default()].into();
        let parts = prepare_with(files, Markup::Verbatim, TextLimit::NONE).expect("files");
        assert_eq!((parts.len(), parts[0].text.as_str()), (1, ""));

        let edit = OutboundMessage {
            op: OutboundOp::EDIT,
            target_message_id: RSome("9".into()),
            ..send(&"x".repeat(100))
        };
        let parts = prepare_with(
            edit,
            Markup::Verbatim,
            TextLimit::new(40, LengthUnit::Chars),
        )
        .expect("edit");
        assert_eq!(parts.len(), 1);
        assert_eq!(parts[0].text.chars().count(), 40);
        assert!(parts[0].text.ends_with('…'));
        assert_eq!(reply_target(&parts[0]), Some("9"));

        let react = OutboundMessage {
            op: OutboundOp::REACT,
            reaction: "heart".into(),
            ..send("")
        };
        let parts = prepare_with(react.clone(), Markup::Verbatim, TextLimit::NONE).expect("react");
        assert_eq!(parts, vec![react]);
        assert!(!is_prepared(&parts[0]));
        assert!(is_prepared(&seal(parts, Markup::Verbatim)[0]));
    }

    #[test]
    fn other_extra_json_is_kept() {
        let mut m = send("x");
        set_plain_text(&mut m, "x");
        let v: Value = serde_json::from_str(m.extra_json.as_str()).expect("json");
        assert_eq!(v["keep"], json!(1));
        assert_eq!(v[PREPARED_KEY]["plain_text"], json!("x"));
        assert_eq!(PartInfo::of(&m), None, "not sealed yet");
        assert_eq!(plain_text_of(&m).as_deref(), Some("x"));
    }
}
