//! The fake's public data types: who talks, what they send, what the bot did.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// A Telegram user (a person, or another bot).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Person {
    /// User id (also the id of the private chat with them).
    pub id: i64,
    /// First name.
    pub first_name: String,
    /// Last name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_name: Option<String>,
    /// `@username` without the `@`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// Another bot.
    #[serde(default)]
    pub is_bot: bool,
}

impl Person {
    /// A person with an id and a first name.
    pub fn new(id: i64, first_name: &str) -> Self {
        Self {
            id,
            first_name: first_name.to_owned(),
            last_name: None,
            username: None,
            is_bot: false,
        }
    }

    /// With a last name.
    pub fn last_name(mut self, last_name: &str) -> Self {
        self.last_name = Some(last_name.to_owned());
        self
    }

    /// With a username (without `@`).
    pub fn username(mut self, username: &str) -> Self {
        self.username = Some(username.to_owned());
        self
    }

    /// Marks this user as a bot.
    pub fn bot(mut self) -> Self {
        self.is_bot = true;
        self
    }

    /// The Bot API `User` object.
    pub fn to_json(&self) -> Value {
        let mut user = json!({"id": self.id, "is_bot": self.is_bot, "first_name": self.first_name});
        if let Some(last) = &self.last_name {
            user["last_name"] = json!(last);
        }
        if let Some(username) = &self.username {
            user["username"] = json!(username);
        }
        user
    }
}

/// The kinds of file a user can attach.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileKind {
    /// `photo` (sent as several sizes, the original largest).
    Photo,
    /// `document`.
    Document,
    /// `audio`.
    Audio,
    /// `voice`.
    Voice,
    /// `video`.
    Video,
    /// `animation` (also sent as `document`, like Telegram does).
    Animation,
}

impl FileKind {
    pub(crate) fn field(self) -> &'static str {
        match self {
            Self::Photo => "photo",
            Self::Document => "document",
            Self::Audio => "audio",
            Self::Voice => "voice",
            Self::Video => "video",
            Self::Animation => "animation",
        }
    }
}

/// A file attached to a [`UserMessage`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileSpec {
    /// What kind of attachment.
    pub kind: FileKind,
    /// File name (documents, audio, video, animations).
    #[serde(default)]
    pub name: Option<String>,
    /// MIME type.
    #[serde(default)]
    pub mime_type: Option<String>,
    /// Content served by getFile and the file route.
    #[serde(default)]
    pub data: Vec<u8>,
    /// Size to report instead of `data.len()` (to fake files over the 20 MB getFile limit).
    #[serde(default)]
    pub declared_size: Option<u64>,
}

/// A message a user sends to the bot, built with [`UserMessage::private`] or
/// [`UserMessage::group`]. Like Telegram's server, the fake adds `mention` and `bot_command`
/// entities for `@username` and `/command` words in the text by itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserMessage {
    /// Who sends it.
    pub from: Person,
    /// `(chat id, title)` for a group; `None` for the private chat with `from`.
    #[serde(default)]
    pub group: Option<(i64, String)>,
    /// Text, or the caption when there are files.
    #[serde(default)]
    pub text: String,
    /// `text_mention` entities: (a substring of the text, the user it points at).
    #[serde(default)]
    pub text_mentions: Vec<(String, Person)>,
    /// Id of the message (in the same chat) this one replies to.
    #[serde(default)]
    pub reply_to: Option<i64>,
    /// The part of the replied-to message the user quoted.
    #[serde(default)]
    pub quote: Option<String>,
    /// Attached files.
    #[serde(default)]
    pub files: Vec<FileSpec>,
}

impl UserMessage {
    /// A message in the private chat between `from` and the bot.
    pub fn private(from: Person, text: &str) -> Self {
        Self {
            from,
            group: None,
            text: text.to_owned(),
            text_mentions: Vec::new(),
            reply_to: None,
            quote: None,
            files: Vec::new(),
        }
    }

    /// A message in a group (negative id; `-100…` ids are supergroups).
    pub fn group(chat_id: i64, title: &str, from: Person, text: &str) -> Self {
        Self {
            group: Some((chat_id, title.to_owned())),
            ..Self::private(from, text)
        }
    }

    /// Adds a `text_mention` entity over `substring` pointing at `user`.
    pub fn text_mention(mut self, substring: &str, user: Person) -> Self {
        self.text_mentions.push((substring.to_owned(), user));
        self
    }

    /// Replies to message `message_id` of the same chat.
    pub fn reply_to(mut self, message_id: i64) -> Self {
        self.reply_to = Some(message_id);
        self
    }

    /// Quotes part of the replied-to message.
    pub fn quote(mut self, text: &str) -> Self {
        self.quote = Some(text.to_owned());
        self
    }

    /// Attaches a photo.
    pub fn photo(self, data: Vec<u8>) -> Self {
        self.file(FileSpec {
            kind: FileKind::Photo,
            name: None,
            mime_type: None,
            data,
            declared_size: None,
        })
    }

    /// Attaches a document.
    pub fn document(self, name: &str, mime_type: &str, data: Vec<u8>) -> Self {
        self.file(FileSpec {
            kind: FileKind::Document,
            name: Some(name.to_owned()),
            mime_type: Some(mime_type.to_owned()),
            data,
            declared_size: None,
        })
    }

    /// Attaches any file.
    pub fn file(mut self, file: FileSpec) -> Self {
        self.files.push(file);
        self
    }
}

/// Where an injected message landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivered {
    /// The chat id.
    pub chat_id: i64,
    /// The message id (sequential per chat, shared with the bot's messages).
    pub message_id: i64,
    /// The update that carries it.
    pub update_id: i64,
}

/// A failure to inject into the next calls.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Failure {
    /// 409 "Conflict: terminated by other getUpdates request…".
    Conflict,
    /// 429 with `parameters.retry_after`.
    RateLimited {
        /// Seconds to wait.
        retry_after_secs: u64,
    },
    /// 500 with a Bot API error body.
    ServerError,
    /// 502 with an HTML body, like a proxy in front of the API.
    BadGateway,
    /// 401 "Unauthorized" (as for a revoked token).
    Unauthorized,
    /// 400 with this description (e.g. `Bad Request: can't parse entities: …`).
    BadRequest {
        /// The full description.
        description: String,
    },
    /// The connection is closed without an answer.
    DropConnection,
    /// Not a failure: the answer comes after `delay_ms` (a slow Bot API).
    Slow {
        /// How long the call waits before it is handled.
        delay_ms: u64,
    },
}

/// A button of a sent inline keyboard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SentButton {
    /// Label.
    pub text: String,
    /// `callback_data`.
    pub callback_data: String,
}

/// A document the bot uploaded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SentFile {
    /// File name.
    pub file_name: String,
    /// MIME type of the part.
    pub mime_type: String,
    /// Size in bytes.
    pub size: usize,
    /// Content (not included in the control API's JSON).
    #[serde(skip_serializing, default)]
    pub data: Vec<u8>,
}

/// Something the bot did that a user would see: a message, a document, an edit, a reaction,
/// a chat action, or a callback answer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sent {
    /// 1, 2, 3… in order.
    pub seq: u64,
    /// `sendMessage`, `sendDocument`, `editMessageText`, `setMessageReaction`,
    /// `sendChatAction` or `answerCallbackQuery`.
    pub method: String,
    /// The chat.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chat_id: Option<i64>,
    /// The new message's id, or the target of an edit or reaction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<i64>,
    /// Text or caption exactly as sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// `parse_mode` as sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parse_mode: Option<String>,
    /// What the user sees (HTML parsed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plain_text: Option<String>,
    /// The message replied to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to_message_id: Option<i64>,
    /// Inline keyboard rows.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub buttons: Vec<Vec<SentButton>>,
    /// The uploaded document.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub document: Option<SentFile>,
    /// Reaction emoji (empty = reactions removed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reaction: Vec<String>,
    /// Chat action (`typing`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// The answered callback query.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback_query_id: Option<String>,
}

/// One Bot API call the fake received (every method, getUpdates included).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiCall {
    /// Method name.
    pub method: String,
    /// Parameters (file parts as `{file_name, mime_type, size}`).
    pub params: Value,
}
