//! Telegram updates → host events: ids, names, mentions, replies, file references.

use nanoclaw_plugin_api::kit::prelude::*;
use serde_json::json;

use crate::api::{CallbackQuery, Chat, FileObject, Message, MessageEntity, Update, User};

/// Who the bot is, learned from `getMe`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BotIdentity {
    pub id: i64,
    pub username: String,
}

/// A file to fetch with `getFile` before the message goes to the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FileRef {
    pub kind: &'static str,
    pub file_id: String,
    pub name: String,
    pub mime_type: String,
    pub size: Option<u64>,
}

/// What to do with one update.
#[derive(Debug)]
pub(crate) enum Inbound {
    /// A message for the host; its attachments are filled from `files` (same order).
    Message {
        event: Box<InboundEvent>,
        files: Vec<FileRef>,
    },
    /// A button click: hand `event` to the host (when there is one), then answer the query.
    Click {
        query_id: String,
        event: Option<Box<ActionEvent>>,
    },
    /// Nothing for the host; the reason is logged at debug level.
    Skip(String),
}

/// Decides what an update means. `allowed` is the `allowed_chats` filter (`None` = all).
pub(crate) fn classify(update: Update, bot: &BotIdentity, allowed: Option<&[i64]>) -> Inbound {
    let update_id = update.update_id;
    if let Some(message) = update.message {
        if !chat_allowed(allowed, message.chat.id) {
            return Inbound::Skip(format!(
                "update {update_id}: chat {} is not in allowed_chats",
                message.chat.id
            ));
        }
        return message_event(&message, update_id, bot);
    }
    if let Some(query) = update.callback_query {
        return click(query, bot, allowed);
    }
    Inbound::Skip(format!(
        "update {update_id}: not a message or a button click"
    ))
}

fn chat_allowed(allowed: Option<&[i64]>, chat_id: i64) -> bool {
    allowed.is_none_or(|ids| ids.contains(&chat_id))
}

fn message_event(message: &Message, update_id: i64, bot: &BotIdentity) -> Inbound {
    if message.from.as_ref().is_some_and(|from| from.id == bot.id) {
        return Inbound::Skip(format!("update {update_id}: the bot's own message"));
    }
    let files = file_refs(message);
    let text = message
        .text
        .as_deref()
        .or(message.caption.as_deref())
        .unwrap_or_default();
    if text.is_empty() && files.is_empty() {
        return Inbound::Skip(format!(
            "update {update_id}: message {} has no text, caption or supported file \
             (service message, sticker, poll, location…)",
            message.message_id
        ));
    }
    let mut extra = serde_json::Map::new();
    extra.insert("update_id".into(), json!(update_id));
    if let Some(username) = message.from.as_ref().and_then(|f| f.username.as_deref()) {
        extra.insert("sender_username".into(), json!(username));
    }
    if let Some(thread) = message.message_thread_id {
        extra.insert("message_thread_id".into(), json!(thread));
    }
    let event = InboundEvent {
        chat_id: message.chat.id.to_string().into(),
        chat_name: message.chat.display_name().map(RString::from).into(),
        message_id: message.message_id.to_string().into(),
        sender: sender_of(message).into(),
        is_group: message.chat.is_group(),
        mentioned: is_mentioned(message, bot),
        text: text.into(),
        reply_to: message
            .reply_to_message
            .as_deref()
            .map(|replied| quoted(replied, message))
            .into(),
        timestamp_ms: message.date.saturating_mul(1000),
        extra_json: serde_json::Value::Object(extra).to_string().into(),
        ..InboundEvent::default()
    };
    Inbound::Message {
        event: Box::new(event),
        files,
    }
}

fn sender_of(message: &Message) -> Option<Sender> {
    if let Some(from) = &message.from {
        return Some(user_sender(from));
    }
    // Anonymous group admins and channels post as a chat.
    message.sender_chat.as_ref().map(|chat| Sender {
        handle: chat.id.to_string().into(),
        display_name: chat.display_name().map(RString::from).into(),
        is_bot: false,
    })
}

fn user_sender(user: &User) -> Sender {
    Sender {
        handle: user.id.to_string().into(),
        display_name: RSome(user.display_name().into()),
        is_bot: user.is_bot,
    }
}

/// DMs always; in groups an `@bot` mention, a text mention of the bot, a `/command@bot`,
/// or a reply to one of the bot's messages.
pub(crate) fn is_mentioned(message: &Message, bot: &BotIdentity) -> bool {
    if message.chat.kind == "private" {
        return true;
    }
    let (text, entities) = match (&message.text, &message.caption) {
        (Some(text), _) => (text.as_str(), &message.entities),
        (None, Some(caption)) => (caption.as_str(), &message.caption_entities),
        (None, None) => ("", &message.entities),
    };
    let handle = format!("@{}", bot.username.to_ascii_lowercase());
    let addressed = entities.iter().any(|entity| {
        let covered = || entity_text(text, entity).map(|s| s.to_lowercase());
        match entity.kind.as_str() {
            "mention" => covered().is_some_and(|s| s == handle),
            "text_mention" => entity.user.as_ref().is_some_and(|u| u.id == bot.id),
            "bot_command" => covered().is_some_and(|s| s.ends_with(&handle)),
            _ => false,
        }
    });
    addressed
        || message
            .reply_to_message
            .as_ref()
            .and_then(|r| r.from.as_ref())
            .is_some_and(|from| from.id == bot.id)
}

/// The text an entity covers (offsets are UTF-16 code units).
pub(crate) fn entity_text(text: &str, entity: &MessageEntity) -> Option<String> {
    let units: Vec<u16> = text.encode_utf16().collect();
    let end = entity.offset.checked_add(entity.length)?;
    let slice = units.get(entity.offset..end)?;
    String::from_utf16(slice).ok()
}

fn quoted(replied: &Message, message: &Message) -> QuotedMessage {
    let sender = replied
        .from
        .as_ref()
        .map(User::display_name)
        .or_else(|| replied.sender_chat.as_ref().and_then(Chat::display_name));
    // A partial quote the user selected says more than the whole message.
    let text = message
        .quote
        .as_ref()
        .map(|q| q.text.clone())
        .or_else(|| replied.text.clone())
        .or_else(|| replied.caption.clone())
        .unwrap_or_default();
    QuotedMessage {
        message_id: RSome(replied.message_id.to_string().into()),
        sender: sender.map(RString::from).into(),
        text: text.into(),
    }
}

/// The files of a message, at most one per kind; for photos the largest size.
pub(crate) fn file_refs(message: &Message) -> Vec<FileRef> {
    let mut refs = Vec::new();
    if let Some(photo) = message
        .photo
        .iter()
        .max_by_key(|p| (u64::from(p.width) * u64::from(p.height), p.file_size))
    {
        refs.push(FileRef {
            kind: "image",
            file_id: photo.file_id.clone(),
            name: String::new(),
            mime_type: "image/jpeg".into(),
            size: photo.file_size,
        });
    }
    let mut push = |kind: &'static str, file: &Option<FileObject>, default_mime: &str| {
        if let Some(file) = file {
            refs.push(FileRef {
                kind,
                file_id: file.file_id.clone(),
                name: file.file_name.clone().unwrap_or_default(),
                mime_type: file
                    .mime_type
                    .clone()
                    .unwrap_or_else(|| default_mime.to_owned()),
                size: file.file_size,
            });
        }
    };
    // An animation also comes as `document` for old clients: take it once, as the animation.
    if message.animation.is_some() {
        push("animation", &message.animation, "video/mp4");
    } else {
        push("file", &message.document, "");
    }
    push("audio", &message.audio, "");
    push("voice", &message.voice, "audio/ogg");
    push("video", &message.video, "video/mp4");
    push("video", &message.video_note, "video/mp4");
    refs
}

fn click(query: CallbackQuery, bot: &BotIdentity, allowed: Option<&[i64]>) -> Inbound {
    let query_id = query.id.clone();
    let event = match (&query.message, &query.data) {
        (Some(message), Some(data))
            if chat_allowed(allowed, message.chat.id) && query.from.id != bot.id =>
        {
            Some(Box::new(ActionEvent {
                chat_id: message.chat.id.to_string().into(),
                message_id: message.message_id.to_string().into(),
                clicker: user_sender(&query.from),
                action_id: data.as_str().into(),
                ..ActionEvent::default()
            }))
        }
        _ => None,
    };
    Inbound::Click { query_id, event }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bot() -> BotIdentity {
        BotIdentity {
            id: 999,
            username: "Claw_Bot".into(),
        }
    }

    fn update(value: serde_json::Value) -> Update {
        serde_json::from_value(value).expect("update JSON")
    }

    fn message_of(inbound: Inbound) -> (InboundEvent, Vec<FileRef>) {
        match inbound {
            Inbound::Message { event, files } => (*event, files),
            other => panic!("expected a message, got {other:?}"),
        }
    }

    /// Shapes as the real Bot API sends them (trimmed to what matters).
    #[test]
    fn private_text_message() {
        let u = update(json!({
            "update_id": 10,
            "message": {
                "message_id": 77, "date": 1_700_000_000,
                "from": {"id": 6037840640i64, "is_bot": false, "first_name": "Ann",
                         "last_name": "Lee", "username": "annlee", "language_code": "en"},
                "chat": {"id": 6037840640i64, "first_name": "Ann", "last_name": "Lee",
                         "username": "annlee", "type": "private"},
                "text": "hello"
            }
        }));
        let (ev, files) = message_of(classify(u, &bot(), None));
        assert!(files.is_empty());
        assert_eq!(ev.chat_id.as_str(), "6037840640");
        assert_eq!(ev.message_id.as_str(), "77");
        assert_eq!(
            ev.chat_name.as_ref().map(RString::as_str).into_option(),
            Some("Ann Lee")
        );
        assert!(ev.mentioned && !ev.is_group);
        assert_eq!(ev.timestamp_ms, 1_700_000_000_000);
        let sender = ev.sender.as_ref().into_option().expect("sender");
        assert_eq!(sender.handle.as_str(), "6037840640");
        assert!(!sender.is_bot);
        let extra: serde_json::Value = serde_json::from_str(ev.extra_json.as_str()).expect("json");
        assert_eq!(extra["sender_username"], "annlee");
        assert_eq!(extra["update_id"], 10);
    }

    fn group(text: &str, entities: serde_json::Value) -> Update {
        update(json!({
            "update_id": 11,
            "message": {
                "message_id": 5, "date": 1,
                "from": {"id": 1, "is_bot": false, "first_name": "Bo"},
                "chat": {"id": -1001234567890i64, "title": "Team", "type": "supergroup"},
                "text": text, "entities": entities
            }
        }))
    }

    #[test]
    fn group_mentions() {
        let mentioned = |u| message_of(classify(u, &bot(), None)).0.mentioned;
        assert!(!mentioned(group("hello all", json!([]))));
        assert!(mentioned(group(
            "hey @claw_bot look",
            json!([{"type": "mention", "offset": 4, "length": 9}])
        )));
        // Another bot's mention does not count, nor does the bare text without an entity.
        assert!(!mentioned(group(
            "hey @claw_bot2 look",
            json!([{"type": "mention", "offset": 4, "length": 10}])
        )));
        assert!(!mentioned(group("hey @claw_bot", json!([]))));
        // UTF-16 offsets: the emoji before the mention counts as two units.
        assert!(mentioned(group(
            "🙂 @Claw_Bot",
            json!([{"type": "mention", "offset": 3, "length": 9}])
        )));
        assert!(mentioned(group(
            "/help@claw_bot",
            json!([{"type": "bot_command", "offset": 0, "length": 14}])
        )));
        assert!(!mentioned(group(
            "/help",
            json!([{"type": "bot_command", "offset": 0, "length": 5}])
        )));
        assert!(mentioned(group(
            "Claw please",
            json!([{"type": "text_mention", "offset": 0, "length": 4,
                    "user": {"id": 999, "is_bot": true, "first_name": "Claw"}}])
        )));
        // Out-of-range entities are ignored, not a panic.
        assert!(!mentioned(group(
            "hi",
            json!([{"type": "mention", "offset": 1, "length": 90}])
        )));
        let (ev, _) = message_of(classify(group("x", json!([])), &bot(), None));
        assert!(ev.is_group);
        assert_eq!(ev.chat_id.as_str(), "-1001234567890");
        assert_eq!(
            ev.chat_name.as_ref().map(RString::as_str).into_option(),
            Some("Team")
        );
    }

    #[test]
    fn replies_carry_the_quote_and_count_as_mentions_when_to_the_bot() {
        let u = update(json!({
            "update_id": 12,
            "message": {
                "message_id": 9, "date": 1,
                "from": {"id": 1, "is_bot": false, "first_name": "Bo"},
                "chat": {"id": -5, "title": "G", "type": "group"},
                "text": "why?",
                "reply_to_message": {
                    "message_id": 8, "date": 1,
                    "from": {"id": 999, "is_bot": true, "first_name": "Claw", "username": "claw_bot"},
                    "chat": {"id": -5, "title": "G", "type": "group"},
                    "text": "because"
                }
            }
        }));
        let (ev, _) = message_of(classify(u, &bot(), None));
        assert!(ev.mentioned);
        let quote = ev.reply_to.as_ref().into_option().expect("reply_to");
        assert_eq!(quote.text.as_str(), "because");
        assert_eq!(
            quote.sender.as_ref().map(RString::as_str).into_option(),
            Some("Claw")
        );
        assert_eq!(
            quote.message_id.as_ref().map(RString::as_str).into_option(),
            Some("8")
        );
    }

    #[test]
    fn own_messages_other_chats_and_service_messages_are_skipped() {
        let own = update(json!({"update_id": 1, "message": {
            "message_id": 1, "date": 1, "chat": {"id": 5, "type": "private"},
            "from": {"id": 999, "is_bot": true, "first_name": "Claw"}, "text": "me"}}));
        assert!(matches!(classify(own, &bot(), None), Inbound::Skip(_)));
        let other = update(json!({"update_id": 2, "message": {
            "message_id": 1, "date": 1, "chat": {"id": 5, "type": "private"},
            "from": {"id": 5, "first_name": "X"}, "text": "hi"}}));
        assert!(matches!(
            classify(other, &bot(), Some(&[6])),
            Inbound::Skip(_)
        ));
        let joined = update(json!({"update_id": 3, "message": {
            "message_id": 1, "date": 1, "chat": {"id": -5, "type": "group", "title": "G"},
            "from": {"id": 5, "first_name": "X"},
            "new_chat_members": [{"id": 6, "is_bot": false, "first_name": "Y"}]}}));
        assert!(matches!(classify(joined, &bot(), None), Inbound::Skip(_)));
        let other_bot = update(json!({"update_id": 4, "message": {
            "message_id": 1, "date": 1, "chat": {"id": -5, "type": "group", "title": "G"},
            "from": {"id": 7, "is_bot": true, "first_name": "Helper"}, "text": "beep"}}));
        let (ev, _) = message_of(classify(other_bot, &bot(), None));
        assert!(ev.sender.as_ref().into_option().expect("sender").is_bot);
    }

    #[test]
    fn files_largest_photo_and_animation_once() {
        let u = update(json!({"update_id": 1, "message": {
        "message_id": 1, "date": 1, "chat": {"id": 5, "type": "private"},
        "from": {"id": 5, "first_name": "X"}, "caption": "look",
        "photo": [
            {"file_id": "small", "file_unique_id": "s", "width": 90, "height": 60, "file_size": 1000},
            {"file_id": "big", "file_unique_id": "b", "width": 1280, "height": 853, "file_size": 90000},
            {"file_id": "mid", "file_unique_id": "m", "width": 320, "height": 213, "file_size": 9000}
        ]}}));
        let (ev, files) = message_of(classify(u, &bot(), None));
        assert_eq!(ev.text.as_str(), "look");
        assert_eq!(files.len(), 1);
        assert_eq!(files[0].file_id, "big");
        assert_eq!(files[0].kind, "image");

        let gif = update(json!({"update_id": 2, "message": {
            "message_id": 2, "date": 1, "chat": {"id": 5, "type": "private"},
            "from": {"id": 5, "first_name": "X"},
            "animation": {"file_id": "a1", "file_unique_id": "a", "file_name": "cat.mp4",
                          "mime_type": "video/mp4", "file_size": 12},
            "document": {"file_id": "a1", "file_unique_id": "a", "file_name": "cat.mp4",
                         "mime_type": "video/mp4", "file_size": 12}}}));
        let (_, files) = message_of(classify(gif, &bot(), None));
        assert_eq!(files.len(), 1);
        assert_eq!(files[0].kind, "animation");
        assert_eq!(files[0].name, "cat.mp4");
    }

    #[test]
    fn clicks() {
        let u = update(json!({"update_id": 1, "callback_query": {
            "id": "q1", "chat_instance": "ci",
            "from": {"id": 5, "is_bot": false, "first_name": "X"},
            "message": {"message_id": 40, "date": 1, "chat": {"id": -5, "type": "group", "title": "G"},
                        "from": {"id": 999, "is_bot": true, "first_name": "Claw"}, "text": "Pick"},
            "data": "ncq:q7:1"}}));
        match classify(u, &bot(), None) {
            Inbound::Click {
                query_id,
                event: Some(ev),
            } => {
                assert_eq!(query_id, "q1");
                assert_eq!(ev.chat_id.as_str(), "-5");
                assert_eq!(ev.message_id.as_str(), "40");
                assert_eq!(ev.action_id.as_str(), "ncq:q7:1");
                assert_eq!(ev.clicker.handle.as_str(), "5");
            }
            other => panic!("{other:?}"),
        }
        // An inline-mode button (no message) is answered but not handed over.
        let inline = update(json!({"update_id": 2, "callback_query": {
            "id": "q2", "chat_instance": "ci", "inline_message_id": "im",
            "from": {"id": 5, "first_name": "X"}, "data": "x"}}));
        assert!(matches!(
            classify(inline, &bot(), None),
            Inbound::Click { event: None, .. }
        ));
    }
}
