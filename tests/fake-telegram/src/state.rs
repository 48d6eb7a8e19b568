//! The fake's state and the Bot API methods, as plain functions over it.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use tokio::sync::Notify;

use crate::html;
use crate::model::{ApiCall, Delivered, FileKind, Person, Sent, SentButton, SentFile, UserMessage};

/// Telegram's reaction emoji for bots (Bot API `ReactionTypeEmoji`).
pub(crate) const REACTIONS: [&str; 73] = [
    "👍",
    "👎",
    "❤",
    "🔥",
    "🥰",
    "👏",
    "😁",
    "🤔",
    "🤯",
    "😱",
    "🤬",
    "😢",
    "🎉",
    "🤩",
    "🤮",
    "💩",
    "🙏",
    "👌",
    "🕊",
    "🤡",
    "🥱",
    "🥴",
    "😍",
    "🐳",
    "❤\u{200d}🔥",
    "🌚",
    "🌭",
    "💯",
    "🤣",
    "⚡",
    "🍌",
    "🏆",
    "💔",
    "🤨",
    "😐",
    "🍓",
    "🍾",
    "💋",
    "🖕",
    "😈",
    "😴",
    "😭",
    "🤓",
    "👻",
    "👨\u{200d}💻",
    "👀",
    "🎃",
    "🙈",
    "😇",
    "😨",
    "🤝",
    "✍",
    "🤗",
    "🫡",
    "🎅",
    "🎄",
    "☃",
    "💅",
    "🤪",
    "🗿",
    "🆒",
    "💘",
    "🙉",
    "🦄",
    "😘",
    "💊",
    "🙊",
    "😎",
    "👾",
    "🤷\u{200d}♂",
    "🤷",
    "🤷\u{200d}♀",
    "😡",
];

const CHAT_ACTIONS: [&str; 10] = [
    "typing",
    "upload_photo",
    "record_video",
    "upload_video",
    "record_voice",
    "upload_voice",
    "upload_document",
    "choose_sticker",
    "find_location",
    "upload_video_note",
];

/// Files the Bot API serves through getFile.
pub(crate) const MAX_DOWNLOAD: u64 = 20 * 1024 * 1024;

/// An error answer: HTTP status and description.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ApiErr {
    pub code: u16,
    pub description: String,
    pub retry_after: Option<u64>,
}

impl ApiErr {
    pub(crate) fn bad_request(what: impl std::fmt::Display) -> Self {
        Self {
            code: 400,
            description: format!("Bad Request: {what}"),
            retry_after: None,
        }
    }

    pub(crate) fn conflict(what: &str) -> Self {
        Self {
            code: 409,
            description: format!("Conflict: {what}"),
            retry_after: None,
        }
    }

    pub(crate) fn body(&self) -> Value {
        let mut body = json!({
            "ok": false,
            "error_code": self.code,
            "description": self.description,
        });
        if let Some(secs) = self.retry_after {
            body["parameters"] = json!({"retry_after": secs});
        }
        body
    }
}

pub(crate) type ApiResult = Result<Value, ApiErr>;

/// Parameters of one call, from JSON, a form, a query string or multipart text fields.
#[derive(Debug, Default, Clone)]
pub(crate) struct Params {
    pub fields: serde_json::Map<String, Value>,
    /// Multipart file fields: name → (file name, MIME type, bytes).
    pub files: HashMap<String, (String, String, Vec<u8>)>,
}

impl Params {
    fn get(&self, key: &str) -> Option<&Value> {
        self.fields.get(key).filter(|v| !v.is_null())
    }

    pub(crate) fn i64(&self, key: &str) -> Option<i64> {
        match self.get(key)? {
            Value::Number(n) => n.as_i64(),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        }
    }

    pub(crate) fn str(&self, key: &str) -> Option<String> {
        match self.get(key)? {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }

    pub(crate) fn bool(&self, key: &str) -> bool {
        match self.get(key) {
            Some(Value::Bool(b)) => *b,
            Some(Value::String(s)) => s == "true" || s == "1",
            _ => false,
        }
    }

    /// A structured field: sent as JSON in a JSON body, or as a JSON string in a form.
    pub(crate) fn json(&self, key: &str) -> Result<Option<Value>, ApiErr> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => serde_json::from_str(s)
                .map(Some)
                .map_err(|_| ApiErr::bad_request(format!("can't parse {key} JSON object"))),
            Some(other) => Ok(Some(other.clone())),
        }
    }

    /// What is recorded in `calls()`: the fields, with file parts summarised.
    pub(crate) fn summary(&self) -> Value {
        let mut fields = self.fields.clone();
        for (name, (file_name, mime, data)) in &self.files {
            fields.insert(
                name.clone(),
                json!({"file_name": file_name, "mime_type": mime, "size": data.len()}),
            );
        }
        Value::Object(fields)
    }
}

struct FileEntry {
    unique_id: String,
    path: String,
    data: Vec<u8>,
    /// The size Telegram reports (may exceed `data` for "large file" fixtures).
    size: u64,
}

struct ChatState {
    chat: Value,
    next_message_id: i64,
    messages: BTreeMap<i64, Value>,
}

pub(crate) struct Inner {
    next_update_id: i64,
    pending: VecDeque<Value>,
    allowed_updates: Option<Vec<String>>,
    poll_generation: u64,
    webhook_url: Option<String>,
    chats: HashMap<i64, ChatState>,
    files: HashMap<String, FileEntry>,
    next_file: u64,
    callback_queries: HashMap<String, bool>,
    next_query: u64,
    sent: Vec<Sent>,
    calls: Vec<ApiCall>,
}

/// Everything the server and the handle share.
pub(crate) struct State {
    pub token: String,
    pub bot: Person,
    inner: Mutex<Inner>,
    /// Woken when updates arrive or a newer getUpdates takes over.
    pub updates: Notify,
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0))
}

fn utf16_len(text: &str) -> usize {
    text.encode_utf16().count()
}

/// Entities Telegram's server finds by itself: `@username` mentions and `/commands`.
fn auto_entities(text: &str) -> Vec<Value> {
    let mut entities = Vec::new();
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let mut k = 0;
    while k < chars.len() {
        let (byte, c) = chars[k];
        let prev_ok = k == 0 || !(chars[k - 1].1.is_alphanumeric() || chars[k - 1].1 == '_');
        if (c == '@' || c == '/') && prev_ok {
            let mut end = k + 1;
            while end < chars.len()
                && (chars[end].1.is_ascii_alphanumeric()
                    || chars[end].1 == '_'
                    || (c == '/' && chars[end].1 == '@'))
            {
                end += 1;
            }
            let word_len = end - k - 1;
            let kind = if c == '@' { "mention" } else { "bot_command" };
            if (c == '@' && word_len >= 4) || (c == '/' && word_len >= 1) {
                let end_byte = chars.get(end).map_or(text.len(), |(b, _)| *b);
                let offset = utf16_len(&text[..byte]);
                let length = utf16_len(&text[byte..end_byte]);
                entities.push(json!({"type": kind, "offset": offset, "length": length}));
            }
            k = end;
        } else {
            k += 1;
        }
    }
    entities
}

impl State {
    pub(crate) fn new(token: &str, bot_username: &str) -> Self {
        let bot_id = token
            .split_once(':')
            .and_then(|(id, _)| id.parse().ok())
            .unwrap_or(1);
        Self {
            token: token.to_owned(),
            bot: Person {
                id: bot_id,
                first_name: "NanoClaw Test Bot".into(),
                last_name: None,
                username: Some(bot_username.to_owned()),
                is_bot: true,
            },
            inner: Mutex::new(Inner {
                next_update_id: 100_000,
                pending: VecDeque::new(),
                allowed_updates: None,
                poll_generation: 0,
                webhook_url: None,
                chats: HashMap::new(),
                files: HashMap::new(),
                next_file: 1,
                callback_queries: HashMap::new(),
                next_query: 1,
                sent: Vec::new(),
                calls: Vec::new(),
            }),
            updates: Notify::new(),
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    // -----------------------------------------------------------------------------------------
    // Control side
    // -----------------------------------------------------------------------------------------

    pub(crate) fn inject_message(&self, msg: UserMessage) -> Result<Delivered, String> {
        let mut inner = self.lock();
        let chat_json = match &msg.group {
            None => {
                let mut chat = json!({"id": msg.from.id, "type": "private",
                                      "first_name": msg.from.first_name});
                if let Some(last) = &msg.from.last_name {
                    chat["last_name"] = json!(last);
                }
                if let Some(username) = &msg.from.username {
                    chat["username"] = json!(username);
                }
                chat
            }
            Some((id, title)) => {
                if *id >= 0 {
                    return Err(format!("group chat ids are negative, not {id}"));
                }
                let kind = if *id <= -1_000_000_000_000 {
                    "supergroup"
                } else {
                    "group"
                };
                json!({"id": id, "type": kind, "title": title})
            }
        };
        let chat_id = chat_json["id"].as_i64().unwrap_or_default();
        let chat = inner.chats.entry(chat_id).or_insert_with(|| ChatState {
            chat: chat_json.clone(),
            next_message_id: 1,
            messages: BTreeMap::new(),
        });
        chat.chat = chat_json.clone();
        let message_id = chat.next_message_id;
        chat.next_message_id += 1;

        let mut message = json!({
            "message_id": message_id,
            "date": now(),
            "chat": chat_json,
            "from": msg.from.to_json(),
        });
        let text = msg.text.clone();
        let mut entities = auto_entities(&text);
        for (needle, user) in &msg.text_mentions {
            let Some(byte) = text.find(needle.as_str()) else {
                return Err(format!("text mention `{needle}` is not in the text"));
            };
            entities.push(json!({
                "type": "text_mention",
                "offset": utf16_len(&text[..byte]),
                "length": utf16_len(needle),
                "user": user.to_json(),
            }));
        }
        let (text_key, entities_key) = if msg.files.is_empty() {
            ("text", "entities")
        } else {
            ("caption", "caption_entities")
        };
        if !text.is_empty() {
            message[text_key] = json!(text);
            if !entities.is_empty() {
                message[entities_key] = json!(entities);
            }
        }
        if let Some(reply_to) = msg.reply_to {
            let chat = inner
                .chats
                .get(&chat_id)
                .ok_or_else(|| format!("no chat {chat_id}"))?;
            let replied = chat
                .messages
                .get(&reply_to)
                .ok_or_else(|| format!("message {reply_to} does not exist in chat {chat_id}"))?;
            message["reply_to_message"] = without_reply(replied);
            if let Some(quote) = &msg.quote {
                message["quote"] = json!({"text": quote, "position": 0});
            }
        }
        for file in &msg.files {
            let (file_id, unique_id) = inner.add_file(file.data.clone(), file.declared_size);
            let size = file.declared_size.unwrap_or(file.data.len() as u64);
            let mut object =
                json!({"file_id": file_id, "file_unique_id": unique_id, "file_size": size});
            if let Some(name) = &file.name {
                object["file_name"] = json!(name);
            }
            if let Some(mime) = &file.mime_type {
                object["mime_type"] = json!(mime);
            }
            match file.kind {
                FileKind::Photo => {
                    // Telegram sends several sizes, largest last; only the largest is the
                    // original.
                    let thumb_data = file.data.iter().take(16).copied().collect::<Vec<u8>>();
                    let (thumb_id, thumb_unique) = inner.add_file(thumb_data.clone(), None);
                    message["photo"] = json!([
                        {"file_id": thumb_id, "file_unique_id": thumb_unique, "width": 90,
                         "height": 60, "file_size": thumb_data.len()},
                        {"file_id": file_id, "file_unique_id": unique_id, "width": 1280,
                         "height": 853, "file_size": size},
                    ]);
                }
                FileKind::Animation => {
                    // Like Telegram: an animation is also a document for old clients.
                    message["animation"] = object.clone();
                    message["document"] = object;
                }
                kind => {
                    message[kind.field()] = object;
                }
            }
        }
        if let Some(chat) = inner.chats.get_mut(&chat_id) {
            chat.messages.insert(message_id, message.clone());
        }
        let update_id = inner.push_update("message", message);
        drop(inner);
        self.updates.notify_waiters();
        Ok(Delivered {
            chat_id,
            message_id,
            update_id,
        })
    }

    pub(crate) fn inject_click(
        &self,
        chat_id: i64,
        message_id: i64,
        from: &Person,
        data: &str,
    ) -> Result<String, String> {
        let mut inner = self.lock();
        let chat = inner
            .chats
            .get(&chat_id)
            .ok_or_else(|| format!("no chat {chat_id}"))?;
        let message = chat
            .messages
            .get(&message_id)
            .cloned()
            .ok_or_else(|| format!("message {message_id} does not exist in chat {chat_id}"))?;
        let query_id = format!("{}{:04}", self.bot.id, inner.next_query);
        inner.next_query += 1;
        inner.callback_queries.insert(query_id.clone(), false);
        let query = json!({
            "id": query_id,
            "from": from.to_json(),
            "message": message,
            "chat_instance": format!("ci{chat_id}"),
            "data": data,
        });
        inner.push_update("callback_query", query);
        drop(inner);
        self.updates.notify_waiters();
        Ok(query_id)
    }

    pub(crate) fn set_webhook(&self, url: Option<String>) {
        self.lock().webhook_url = url;
        self.updates.notify_waiters();
    }

    pub(crate) fn sent(&self) -> Vec<Sent> {
        self.lock().sent.clone()
    }

    pub(crate) fn calls(&self) -> Vec<ApiCall> {
        self.lock().calls.clone()
    }

    pub(crate) fn pending_updates(&self) -> usize {
        self.lock().pending.len()
    }

    pub(crate) fn record_call(&self, method: &str, params: Value) {
        self.lock().calls.push(ApiCall {
            method: method.to_owned(),
            params,
        });
    }

    pub(crate) fn file_bytes(&self, path: &str) -> Option<Vec<u8>> {
        let inner = self.lock();
        inner
            .files
            .values()
            .find(|f| f.path == path)
            .map(|f| f.data.clone())
    }

    // -----------------------------------------------------------------------------------------
    // Bot API methods (all but getUpdates, which waits: see server.rs)
    // -----------------------------------------------------------------------------------------

    pub(crate) fn call(&self, method: &str, p: &Params) -> ApiResult {
        match method {
            "getMe" => Ok(json!({
                "id": self.bot.id, "is_bot": true, "first_name": self.bot.first_name,
                "username": self.bot.username, "can_join_groups": true,
                "can_read_all_group_messages": true, "supports_inline_queries": false,
            })),
            "deleteWebhook" => {
                let mut inner = self.lock();
                inner.webhook_url = None;
                if p.bool("drop_pending_updates") {
                    inner.pending.clear();
                }
                Ok(json!(true))
            }
            "setWebhook" => {
                let url = p
                    .str("url")
                    .filter(|u| !u.is_empty())
                    .ok_or_else(|| ApiErr::bad_request("bad webhook: URL is empty"))?;
                self.set_webhook(Some(url));
                Ok(json!(true))
            }
            "getWebhookInfo" => {
                let inner = self.lock();
                Ok(json!({
                    "url": inner.webhook_url.clone().unwrap_or_default(),
                    "has_custom_certificate": false,
                    "pending_update_count": inner.pending.len(),
                }))
            }
            "sendMessage" => self.send_message(p),
            "sendDocument" => self.send_document(p),
            "editMessageText" => self.edit_message_text(p),
            "setMessageReaction" => self.set_reaction(p),
            "sendChatAction" => self.chat_action(p),
            "answerCallbackQuery" => self.answer_callback(p),
            "getFile" => self.get_file(p),
            _ => Err(ApiErr {
                code: 404,
                description: "Not Found".into(),
                retry_after: None,
            }),
        }
    }

    /// One getUpdates attempt: `Ok(None)` means "nothing yet, wait".
    pub(crate) fn poll_once(&self, generation: u64, force: bool) -> Result<Option<Value>, ApiErr> {
        let mut inner = self.lock();
        if inner.webhook_url.is_some() {
            return Err(ApiErr::conflict(
                "can't use getUpdates method while webhook is active; use deleteWebhook to \
                 delete the webhook first",
            ));
        }
        if inner.poll_generation != generation {
            return Err(ApiErr::conflict(
                "terminated by other getUpdates request; make sure that only one bot instance \
                 is running",
            ));
        }
        let allowed = inner.allowed_updates.clone();
        inner.pending.retain(|u| {
            allowed
                .as_ref()
                .is_none_or(|kinds| kinds.iter().any(|k| u.get(k.as_str()).is_some()))
        });
        if inner.pending.is_empty() && !force {
            return Ok(None);
        }
        Ok(Some(Value::Array(inner.pending.iter().cloned().collect())))
    }

    /// Starts a getUpdates call: confirms by `offset`, records `allowed_updates`, and takes
    /// over from any older waiting call. Returns this call's generation.
    pub(crate) fn begin_poll(&self, p: &Params) -> Result<(u64, usize), ApiErr> {
        let mut inner = self.lock();
        if let Some(kinds) = p.json("allowed_updates")? {
            let kinds: Vec<String> = kinds
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|k| k.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            inner.allowed_updates = (!kinds.is_empty()).then_some(kinds);
        }
        if let Some(offset) = p.i64("offset") {
            if offset >= 0 {
                inner
                    .pending
                    .retain(|u| u["update_id"].as_i64().is_some_and(|id| id >= offset));
            } else {
                let keep = usize::try_from(offset.unsigned_abs()).unwrap_or(usize::MAX);
                while inner.pending.len() > keep {
                    inner.pending.pop_front();
                }
            }
        }
        let limit = p
            .i64("limit")
            .map_or(100, |l| usize::try_from(l.clamp(1, 100)).unwrap_or(100));
        inner.poll_generation += 1;
        let generation = inner.poll_generation;
        drop(inner);
        self.updates.notify_waiters();
        Ok((generation, limit))
    }

    fn send_message(&self, p: &Params) -> ApiResult {
        let text = p.str("text").unwrap_or_default();
        let parse_mode = p.str("parse_mode");
        let plain = parse_text(&text, parse_mode.as_deref())?;
        if plain.trim().is_empty() {
            return Err(ApiErr::bad_request("message text is empty"));
        }
        if utf16_len(&plain) > 4096 {
            return Err(ApiErr::bad_request("message is too long"));
        }
        let mut inner = self.lock();
        let chat_id = inner.chat_id(p)?;
        let reply_to = inner.reply_target(chat_id, p)?;
        let buttons = parse_keyboard(p)?;
        let message_id = inner.post(
            chat_id,
            &self.bot,
            |m| {
                m["text"] = json!(plain);
            },
            reply_to,
            &buttons,
        )?;
        inner.record(Sent {
            method: "sendMessage".into(),
            chat_id: Some(chat_id),
            message_id: Some(message_id),
            text: Some(text),
            parse_mode,
            plain_text: Some(plain),
            reply_to_message_id: reply_to,
            buttons,
            ..Sent::default()
        });
        inner.message_json(chat_id, message_id)
    }

    fn send_document(&self, p: &Params) -> ApiResult {
        let Some((file_name, mime_type, data)) = p.files.get("document").cloned() else {
            return match p.str("document") {
                Some(_) => Err(ApiErr::bad_request(
                    "wrong file identifier/HTTP URL specified",
                )),
                None => Err(ApiErr::bad_request("there is no document in the request")),
            };
        };
        if data.is_empty() {
            return Err(ApiErr::bad_request("file must be non-empty"));
        }
        let caption = p.str("caption").filter(|c| !c.is_empty());
        let parse_mode = p.str("parse_mode");
        let plain_caption = match &caption {
            Some(c) => Some(parse_text(c, parse_mode.as_deref())?),
            None => None,
        };
        if plain_caption
            .as_deref()
            .is_some_and(|c| utf16_len(c) > 1024)
        {
            return Err(ApiErr::bad_request("message caption is too long"));
        }
        let mut inner = self.lock();
        let chat_id = inner.chat_id(p)?;
        let reply_to = inner.reply_target(chat_id, p)?;
        let buttons = parse_keyboard(p)?;
        let (file_id, unique_id) = inner.add_file(data.clone(), None);
        let size = data.len();
        let message_id = inner.post(
            chat_id,
            &self.bot,
            |m| {
                m["document"] = json!({"file_id": file_id, "file_unique_id": unique_id,
                                   "file_name": file_name, "mime_type": mime_type,
                                   "file_size": size});
                if let Some(c) = &plain_caption {
                    m["caption"] = json!(c);
                }
            },
            reply_to,
            &buttons,
        )?;
        inner.record(Sent {
            method: "sendDocument".into(),
            chat_id: Some(chat_id),
            message_id: Some(message_id),
            text: caption,
            parse_mode,
            plain_text: plain_caption,
            reply_to_message_id: reply_to,
            buttons,
            document: Some(SentFile {
                file_name,
                mime_type,
                size,
                data,
            }),
            ..Sent::default()
        });
        inner.message_json(chat_id, message_id)
    }

    fn edit_message_text(&self, p: &Params) -> ApiResult {
        let text = p.str("text").unwrap_or_default();
        let parse_mode = p.str("parse_mode");
        let plain = parse_text(&text, parse_mode.as_deref())?;
        if plain.trim().is_empty() {
            return Err(ApiErr::bad_request("message text is empty"));
        }
        if utf16_len(&plain) > 4096 {
            return Err(ApiErr::bad_request("MESSAGE_TOO_LONG"));
        }
        let buttons = parse_keyboard(p)?;
        let mut inner = self.lock();
        let chat_id = inner.chat_id(p)?;
        let message_id = p
            .i64("message_id")
            .ok_or_else(|| ApiErr::bad_request("message identifier is not specified"))?;
        let bot_id = self.bot.id;
        let chat = inner
            .chats
            .get_mut(&chat_id)
            .ok_or_else(|| ApiErr::bad_request("chat not found"))?;
        let message = chat
            .messages
            .get_mut(&message_id)
            .ok_or_else(|| ApiErr::bad_request("message to edit not found"))?;
        if message["from"]["id"].as_i64() != Some(bot_id) {
            return Err(ApiErr::bad_request("message can't be edited"));
        }
        let markup = keyboard_json(&buttons);
        let current_markup = message.get("reply_markup").cloned().unwrap_or(Value::Null);
        if message["text"].as_str() == Some(plain.as_str()) && current_markup == markup {
            return Err(ApiErr::bad_request(
                "message is not modified: specified new message content and reply markup are \
                 exactly the same as a current content and reply markup of the message",
            ));
        }
        message["text"] = json!(plain);
        message["edit_date"] = json!(now());
        match &markup {
            Value::Null => {
                if let Some(fields) = message.as_object_mut() {
                    fields.remove("reply_markup");
                }
            }
            m => message["reply_markup"] = m.clone(),
        }
        let edited = message.clone();
        inner.record(Sent {
            method: "editMessageText".into(),
            chat_id: Some(chat_id),
            message_id: Some(message_id),
            text: Some(text),
            parse_mode,
            plain_text: Some(plain),
            buttons,
            ..Sent::default()
        });
        Ok(edited)
    }

    fn set_reaction(&self, p: &Params) -> ApiResult {
        let mut inner = self.lock();
        let chat_id = inner.chat_id(p)?;
        let message_id = p
            .i64("message_id")
            .ok_or_else(|| ApiErr::bad_request("message identifier is not specified"))?;
        let exists = inner
            .chats
            .get(&chat_id)
            .is_some_and(|c| c.messages.contains_key(&message_id));
        if !exists {
            return Err(ApiErr::bad_request("message to react not found"));
        }
        let reaction = p.json("reaction")?.unwrap_or(json!([]));
        let list = reaction
            .as_array()
            .ok_or_else(|| ApiErr::bad_request("can't parse reaction types JSON object"))?;
        let mut emoji = Vec::new();
        for r in list {
            match (r["type"].as_str(), r["emoji"].as_str()) {
                (Some("emoji"), Some(e)) if REACTIONS.contains(&e) => emoji.push(e.to_owned()),
                _ => return Err(ApiErr::bad_request("REACTION_INVALID")),
            }
        }
        if emoji.len() > 1 {
            return Err(ApiErr::bad_request("REACTIONS_TOO_MANY"));
        }
        inner.record(Sent {
            method: "setMessageReaction".into(),
            chat_id: Some(chat_id),
            message_id: Some(message_id),
            reaction: emoji,
            ..Sent::default()
        });
        Ok(json!(true))
    }

    fn chat_action(&self, p: &Params) -> ApiResult {
        let mut inner = self.lock();
        let chat_id = inner.chat_id(p)?;
        let action = p.str("action").unwrap_or_default();
        if !CHAT_ACTIONS.contains(&action.as_str()) {
            return Err(ApiErr::bad_request("wrong parameter action in request"));
        }
        inner.record(Sent {
            method: "sendChatAction".into(),
            chat_id: Some(chat_id),
            action: Some(action),
            ..Sent::default()
        });
        Ok(json!(true))
    }

    fn answer_callback(&self, p: &Params) -> ApiResult {
        let mut inner = self.lock();
        let id = p.str("callback_query_id").unwrap_or_default();
        match inner.callback_queries.get_mut(&id) {
            Some(answered) if !*answered => *answered = true,
            _ => {
                return Err(ApiErr::bad_request(
                    "query is too old and response timeout expired or query ID is invalid",
                ));
            }
        }
        inner.record(Sent {
            method: "answerCallbackQuery".into(),
            callback_query_id: Some(id),
            text: p.str("text"),
            ..Sent::default()
        });
        Ok(json!(true))
    }

    fn get_file(&self, p: &Params) -> ApiResult {
        let inner = self.lock();
        let id = p.str("file_id").unwrap_or_default();
        let file = inner
            .files
            .get(&id)
            .ok_or_else(|| ApiErr::bad_request("invalid file_id"))?;
        if file.size > MAX_DOWNLOAD {
            return Err(ApiErr::bad_request("file is too big"));
        }
        Ok(json!({
            "file_id": id, "file_unique_id": file.unique_id,
            "file_size": file.size, "file_path": file.path,
        }))
    }
}

impl Inner {
    fn push_update(&mut self, kind: &str, payload: Value) -> i64 {
        let update_id = self.next_update_id;
        self.next_update_id += 1;
        let mut update = json!({"update_id": update_id});
        update[kind] = payload;
        self.pending.push_back(update);
        update_id
    }

    fn add_file(&mut self, data: Vec<u8>, declared_size: Option<u64>) -> (String, String) {
        let n = self.next_file;
        self.next_file += 1;
        let file_id = format!("BQACAgIAAxkBAAI{n:06}");
        let unique_id = format!("AgAD{n:04}");
        let size = declared_size.unwrap_or(data.len() as u64);
        self.files.insert(
            file_id.clone(),
            FileEntry {
                unique_id: unique_id.clone(),
                path: format!("documents/file_{n}"),
                data,
                size,
            },
        );
        (file_id, unique_id)
    }

    fn chat_id(&self, p: &Params) -> Result<i64, ApiErr> {
        let id = p
            .i64("chat_id")
            .ok_or_else(|| ApiErr::bad_request("chat not found"))?;
        if self.chats.contains_key(&id) {
            Ok(id)
        } else {
            Err(ApiErr::bad_request("chat not found"))
        }
    }

    fn reply_target(&self, chat_id: i64, p: &Params) -> Result<Option<i64>, ApiErr> {
        let (id, lenient) = match p.json("reply_parameters")? {
            Some(params) => (
                params["message_id"].as_i64(),
                params["allow_sending_without_reply"]
                    .as_bool()
                    .unwrap_or(false),
            ),
            None => (
                p.i64("reply_to_message_id"),
                p.bool("allow_sending_without_reply"),
            ),
        };
        let Some(id) = id else { return Ok(None) };
        let exists = self
            .chats
            .get(&chat_id)
            .is_some_and(|c| c.messages.contains_key(&id));
        match (exists, lenient) {
            (true, _) => Ok(Some(id)),
            (false, true) => Ok(None),
            (false, false) => Err(ApiErr::bad_request("message to be replied not found")),
        }
    }

    /// Stores a new message from the bot and returns its id.
    fn post(
        &mut self,
        chat_id: i64,
        bot: &Person,
        fill: impl FnOnce(&mut Value),
        reply_to: Option<i64>,
        buttons: &[Vec<SentButton>],
    ) -> Result<i64, ApiErr> {
        let chat = self
            .chats
            .get_mut(&chat_id)
            .ok_or_else(|| ApiErr::bad_request("chat not found"))?;
        let message_id = chat.next_message_id;
        chat.next_message_id += 1;
        let mut message = json!({
            "message_id": message_id, "date": now(), "chat": chat.chat, "from": bot.to_json(),
        });
        fill(&mut message);
        if let Some(id) = reply_to
            && let Some(replied) = chat.messages.get(&id)
        {
            message["reply_to_message"] = without_reply(replied);
        }
        let markup = keyboard_json(buttons);
        if !markup.is_null() {
            message["reply_markup"] = markup;
        }
        chat.messages.insert(message_id, message);
        Ok(message_id)
    }

    fn message_json(&self, chat_id: i64, message_id: i64) -> ApiResult {
        self.chats
            .get(&chat_id)
            .and_then(|c| c.messages.get(&message_id))
            .cloned()
            .ok_or_else(|| ApiErr::bad_request("message not found"))
    }

    fn record(&mut self, mut sent: Sent) {
        sent.seq = self.sent.len() as u64 + 1;
        self.sent.push(sent);
    }
}

/// A replied-to message as Telegram nests it (without its own reply).
fn without_reply(message: &Value) -> Value {
    let mut copy = message.clone();
    if let Some(fields) = copy.as_object_mut() {
        fields.remove("reply_to_message");
    }
    copy
}

fn parse_text(text: &str, parse_mode: Option<&str>) -> Result<String, ApiErr> {
    match parse_mode {
        None | Some("") => Ok(text.to_owned()),
        Some(mode) if mode.eq_ignore_ascii_case("html") => {
            html::parse(text).map_err(|e| ApiErr::bad_request(format!("can't parse entities: {e}")))
        }
        // The plugin never uses Markdown modes; accept them without checking.
        Some("Markdown" | "MarkdownV2") => Ok(text.to_owned()),
        Some(_) => Err(ApiErr::bad_request("unsupported parse_mode")),
    }
}

fn parse_keyboard(p: &Params) -> Result<Vec<Vec<SentButton>>, ApiErr> {
    let Some(markup) = p.json("reply_markup")? else {
        return Ok(Vec::new());
    };
    let Some(rows) = markup.get("inline_keyboard") else {
        return Ok(Vec::new());
    };
    let rows = rows
        .as_array()
        .ok_or_else(|| ApiErr::bad_request("field \"inline_keyboard\" must be an Array"))?;
    let mut out = Vec::new();
    for row in rows {
        let buttons = row
            .as_array()
            .ok_or_else(|| ApiErr::bad_request("can't parse inline keyboard button"))?;
        let mut out_row = Vec::new();
        for b in buttons {
            let text = b["text"].as_str().unwrap_or_default();
            let data = b["callback_data"].as_str().unwrap_or_default();
            if text.is_empty() {
                return Err(ApiErr::bad_request(
                    "text buttons are unallowed in the inline keyboard",
                ));
            }
            if data.is_empty() || data.len() > 64 {
                return Err(ApiErr::bad_request("BUTTON_DATA_INVALID"));
            }
            out_row.push(SentButton {
                text: text.to_owned(),
                callback_data: data.to_owned(),
            });
        }
        out.push(out_row);
    }
    Ok(out)
}

fn keyboard_json(buttons: &[Vec<SentButton>]) -> Value {
    if buttons.is_empty() {
        return Value::Null;
    }
    let rows: Vec<Vec<Value>> = buttons
        .iter()
        .map(|row| {
            row.iter()
                .map(|b| json!({"text": b.text, "callback_data": b.callback_data}))
                .collect()
        })
        .collect();
    json!({"inline_keyboard": rows})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_entities_find_mentions_and_commands() {
        let e = auto_entities("hi @nanoclaw_bot /help@nanoclaw_bot mail@x.y 🙂 @abc @team_lead");
        let kinds: Vec<(&str, u64, u64)> = e
            .iter()
            .map(|v| {
                (
                    v["type"].as_str().unwrap_or_default(),
                    v["offset"].as_u64().unwrap_or_default(),
                    v["length"].as_u64().unwrap_or_default(),
                )
            })
            .collect();
        assert_eq!(
            kinds,
            [
                ("mention", 3, 13),
                ("bot_command", 17, 18),
                ("mention", 53, 10)
            ]
        );
    }
}
