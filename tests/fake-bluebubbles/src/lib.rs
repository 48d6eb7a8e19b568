//! A fake BlueBubbles server on 127.0.0.1, built on the fake-platform harness: the REST calls
//! NanoClaw's iMessage channel makes (`/api/v1/...?password=`: server info, text, attachment,
//! react, typing, attachment download), as strict as BlueBubbles about the password, chat
//! guids, empty messages and the Private API, with its `{status, message, data|error}`
//! answers; and what a phone does: [`FakeBlueBubbles::incoming`] makes the `new-message`
//! webhook BlueBubbles POSTs, [`post_webhook`] delivers it.

use std::collections::HashMap;
use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use nanoclaw_fake_platform::{FakeServer, Harness};
use serde_json::{Value, json};

/// The server password.
pub const PASSWORD: &str = "bb-Server-Pa55word";
/// People: Ann by phone (as the Mac shows it) and Bob by email.
pub const ANN_PHONE: &str = "+15551234567";
pub const BOB_EMAIL: &str = "bob@icloud.com";
/// A group chat with both.
pub const GROUP: &str = "iMessage;+;chat493787383944215683";

/// A message the bot sent.
#[derive(Debug, Clone, PartialEq)]
pub struct Sent {
    pub guid: String,
    pub chat_guid: String,
    pub temp_guid: String,
    pub text: String,
    pub method: String,
    pub reply_to: Option<String>,
    /// An attachment: (name, bytes).
    pub attachment: Option<(String, usize)>,
}

#[derive(Default)]
struct Platform {
    seq: u64,
    sent: Vec<Sent>,
    reactions: Vec<(String, String, String)>,
    typing: Vec<String>,
    /// guid → content.
    attachments: HashMap<String, Vec<u8>>,
    private_api: bool,
}

type Plat = Arc<Mutex<Platform>>;

fn lock(p: &Plat) -> MutexGuard<'_, Platform> {
    p.lock().unwrap_or_else(|e| e.into_inner())
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(0))
        .unwrap_or(0)
}

fn guid(p: &mut Platform) -> String {
    p.seq += 1;
    format!(
        "{:08X}-7D1C-4B5E-9F00-{:012X}",
        now_ms() as u64 & 0xFFFF_FFFF,
        p.seq
    )
}

pub struct FakeBlueBubbles {
    server: FakeServer,
    platform: Plat,
}

/// One incoming message, as the phone sends it.
#[derive(Debug, Clone)]
pub struct Incoming {
    /// The sender's address as the Mac has it (`+15551234567`, `Bob@iCloud.com`).
    pub from: String,
    /// The chat's guid (`iMessage;-;+15551234567` for a DM, `iMessage;+;chat…` for a group).
    pub chat_guid: String,
    pub text: String,
    /// (name, MIME type, content).
    pub attachments: Vec<(String, String, Vec<u8>)>,
    pub reply_to: Option<String>,
}

impl Incoming {
    /// A DM from `from` over iMessage.
    pub fn dm(from: &str, text: &str) -> Self {
        Self {
            from: from.to_owned(),
            chat_guid: format!("iMessage;-;{from}"),
            text: text.to_owned(),
            attachments: Vec::new(),
            reply_to: None,
        }
    }

    /// A message in the group chat.
    pub fn group(from: &str, text: &str) -> Self {
        Self {
            chat_guid: GROUP.to_owned(),
            ..Self::dm(from, text)
        }
    }
}

impl FakeBlueBubbles {
    /// On a free port of 127.0.0.1, with the Private API on.
    pub fn start() -> Self {
        let harness = Harness::new().with_route_key(route_of);
        let platform = Plat::default();
        lock(&platform).private_api = true;
        let router = Router::new()
            .route("/api/v1/server/info", get(server_info))
            .route("/api/v1/message/text", post(send_text))
            .route("/api/v1/message/attachment", post(send_attachment))
            .route("/api/v1/message/react", post(react))
            .route("/api/v1/chat/{guid}/typing", post(typing))
            .route("/api/v1/attachment/{guid}/download", get(download))
            .with_state(Arc::clone(&platform));
        let server =
            FakeServer::start_on(0, "fake-bluebubbles", harness, router).expect("serve the fake");
        Self { server, platform }
    }

    /// The server URL (`server_url`).
    pub fn base_url(&self) -> String {
        self.server.base_url()
    }

    pub fn harness(&self) -> &nanoclaw_fake_platform::Harness {
        self.server.harness()
    }

    /// Turns the Private API off (as on a Mac with SIP on): tapbacks and typing fail.
    pub fn set_private_api(&self, on: bool) {
        lock(&self.platform).private_api = on;
    }

    pub fn sent(&self) -> Vec<Sent> {
        lock(&self.platform).sent.clone()
    }

    pub fn sent_to(&self, chat_guid: &str) -> Vec<Sent> {
        self.sent()
            .into_iter()
            .filter(|s| s.chat_guid == chat_guid)
            .collect()
    }

    /// (chat guid, message guid, reaction).
    pub fn reactions(&self) -> Vec<(String, String, String)> {
        lock(&self.platform).reactions.clone()
    }

    pub fn typing(&self) -> Vec<String> {
        lock(&self.platform).typing.clone()
    }

    /// The `new-message` webhook for `m` (attachments stored for download); its guid too.
    pub fn incoming(&self, m: &Incoming) -> (String, Value) {
        let mut p = lock(&self.platform);
        let message_guid = guid(&mut p);
        let mut attachments = Vec::new();
        for (name, mime, data) in &m.attachments {
            let g = format!("at_{}", guid(&mut p));
            p.attachments.insert(g.clone(), data.clone());
            attachments.push(json!({
                "originalROWID": 12, "guid": g, "uti": "public.data", "mimeType": mime,
                "transferName": name, "totalBytes": data.len(), "isOutgoing": false,
                "hideAttachment": false, "isSticker": false, "height": 0, "width": 0,
            }));
        }
        let is_group = m.chat_guid.contains(";+;");
        let participants = if is_group {
            json!([{"address": ANN_PHONE, "service": "iMessage"}, {"address": BOB_EMAIL, "service": "iMessage"}])
        } else {
            json!([{"address": m.from, "service": "iMessage"}])
        };
        let data = json!({
            "originalROWID": p.seq,
            "guid": message_guid,
            "text": m.text,
            "attributedBody": null,
            "handle": {"originalROWID": 3, "address": m.from, "service": "iMessage",
                       "country": "us", "uncanonicalizedId": null},
            "handleId": 3,
            "otherHandle": 0,
            "attachments": attachments,
            "subject": null,
            "error": 0,
            "dateCreated": now_ms(),
            "dateRead": null,
            "dateDelivered": null,
            "isFromMe": false,
            "isArchived": false,
            "itemType": 0,
            "groupTitle": null,
            "groupActionType": 0,
            "balloonBundleId": null,
            "associatedMessageGuid": null,
            "associatedMessageType": null,
            "expressiveSendStyleId": null,
            "threadOriginatorGuid": m.reply_to,
            "hasPayloadData": false,
            "dateEdited": null,
            "dateRetracted": null,
            "partCount": 1,
            "chats": [{
                "originalROWID": 7, "guid": m.chat_guid, "style": if is_group { 43 } else { 45 },
                "chatIdentifier": m.chat_guid.rsplit(';').next().unwrap_or_default(),
                "isArchived": false, "displayName": if is_group { "Weekend crew" } else { "" },
                "participants": participants,
            }],
        });
        (message_guid, json!({"type": "new-message", "data": data}))
    }

    /// The `updated-message` webhook BlueBubbles sends when `guid` is unsent (retracted).
    pub fn unsent(&self, m: &Incoming, message_guid: &str) -> Value {
        let (_, mut hook) = self.incoming(m);
        hook["type"] = json!("updated-message");
        hook["data"]["guid"] = json!(message_guid);
        hook["data"]["text"] = json!("");
        hook["data"]["dateEdited"] = json!(now_ms());
        hook["data"]["dateRetracted"] = json!(now_ms());
        hook
    }
}

/// POSTs a webhook to `http://127.0.0.1:<port><path_and_query>`; the status.
pub fn post_webhook(port: u16, path_and_query: &str, body: &Value) -> u16 {
    let body = body.to_string();
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return 0;
    };
    let request = format!(
        "POST {path_and_query} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    if stream.write_all(request.as_bytes()).is_err() {
        return 0;
    }
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

fn route_of(parts: &Parts) -> Option<String> {
    let path = parts.uri.path();
    let route = match path {
        "/api/v1/server/info" => "server.info",
        "/api/v1/message/text" => "message.text",
        "/api/v1/message/attachment" => "message.attachment",
        "/api/v1/message/react" => "message.react",
        p if p.ends_with("/typing") => "chat.typing",
        p if p.ends_with("/download") => "attachment.download",
        _ => return None,
    };
    Some(route.to_owned())
}

fn answer(status: u16, message: &str, data: Value) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    (
        code,
        axum::Json(json!({"status": status, "message": message, "data": data})),
    )
        .into_response()
}

fn error(status: u16, kind: &str, message: &str) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    (
        code,
        axum::Json(json!({"status": status, "message": message,
                          "error": {"type": kind, "message": message}})),
    )
        .into_response()
}

/// BlueBubbles authenticates every call by `?password=` (or `guid=`).
fn authorize(q: &HashMap<String, String>) -> Result<(), Box<Response>> {
    match q.get("password").or(q.get("guid")) {
        Some(p) if p == PASSWORD => Ok(()),
        _ => Err(Box::new(error(
            401,
            "Unauthorized",
            "You are not authorized to access this resource",
        ))),
    }
}

fn valid_chat_guid(g: &str) -> bool {
    let parts: Vec<&str> = g.split(';').collect();
    parts.len() == 3
        && matches!(parts[0], "iMessage" | "SMS" | "any")
        && matches!(parts[1], "-" | "+")
        && !parts[2].is_empty()
}

async fn server_info(Query(q): Query<HashMap<String, String>>, State(p): State<Plat>) -> Response {
    if let Err(r) = authorize(&q) {
        return *r;
    }
    let private = lock(&p).private_api;
    answer(
        200,
        "Successfully fetched server info",
        json!({"os_version": "14.5", "server_version": "1.9.9", "private_api": private,
               "helper_connected": private, "proxy_service": "Cloudflare",
               "detected_icloud": "bot@icloud.com"}),
    )
}

async fn send_text(
    Query(q): Query<HashMap<String, String>>,
    State(p): State<Plat>,
    body: Bytes,
) -> Response {
    if let Err(r) = authorize(&q) {
        return *r;
    }
    let Ok(v) = serde_json::from_slice::<Value>(&body) else {
        return error(400, "Validation Error", "Invalid JSON");
    };
    let chat = v["chatGuid"].as_str().unwrap_or_default();
    if !valid_chat_guid(chat) {
        return error(400, "Validation Error", "Invalid chatGuid");
    }
    let Some(temp) = v["tempGuid"].as_str().filter(|t| !t.is_empty()) else {
        return error(400, "Validation Error", "A tempGuid is required");
    };
    let text = v["message"].as_str().unwrap_or_default();
    if text.trim().is_empty() {
        return error(400, "Validation Error", "Message cannot be empty");
    }
    let method = v["method"].as_str().unwrap_or("apple-script").to_owned();
    let reply_to = v["selectedMessageGuid"].as_str().map(str::to_owned);
    let mut p = lock(&p);
    if (method == "private-api" || reply_to.is_some()) && !p.private_api {
        return error(400, "iMessage Error", "iMessage Private API is not enabled");
    }
    // The same tempGuid again (a retry): the message already sent, not a second one.
    if let Some(s) = p.sent.iter().find(|s| s.temp_guid == temp) {
        let guid = s.guid.clone();
        return answer(
            200,
            "Message sent!",
            json!({"guid": guid, "tempGuid": temp}),
        );
    }
    let g = guid(&mut p);
    p.sent.push(Sent {
        guid: g.clone(),
        chat_guid: chat.to_owned(),
        temp_guid: temp.to_owned(),
        text: text.to_owned(),
        method,
        reply_to,
        attachment: None,
    });
    answer(
        200,
        "Message sent!",
        json!({"guid": g, "tempGuid": temp, "text": text, "isFromMe": true,
               "dateCreated": now_ms(), "chats": [{"guid": chat}]}),
    )
}

/// The value of a form field in a multipart body (small fields only).
fn field(body: &[u8], name: &str) -> Option<String> {
    let text = String::from_utf8_lossy(body);
    let marker = format!("name=\"{name}\"");
    let at = text.find(&marker)?;
    let rest = &text[at..];
    let start = rest.find("\r\n\r\n")? + 4;
    let end = rest[start..].find("\r\n--")?;
    Some(rest[start..start + end].to_owned())
}

async fn send_attachment(
    Query(q): Query<HashMap<String, String>>,
    State(p): State<Plat>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(r) = authorize(&q) {
        return *r;
    }
    let multipart = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("multipart/form-data"));
    if !multipart {
        return error(400, "Validation Error", "Expected multipart/form-data");
    }
    let Some(chat) = field(&body, "chatGuid").filter(|c| valid_chat_guid(c)) else {
        return error(400, "Validation Error", "Invalid chatGuid");
    };
    let Some(temp) = field(&body, "tempGuid").filter(|t| !t.is_empty()) else {
        return error(400, "Validation Error", "A tempGuid is required");
    };
    let Some(name) = field(&body, "name").filter(|n| !n.is_empty()) else {
        return error(400, "Validation Error", "An attachment name is required");
    };
    let text = String::from_utf8_lossy(&body);
    let Some(at) = text.find("name=\"attachment\"") else {
        return error(400, "Validation Error", "An attachment is required");
    };
    let size = text[at..]
        .find("\r\n\r\n")
        .and_then(|s| text[at + s + 4..].find("\r\n--"))
        .unwrap_or(0);
    let mut p = lock(&p);
    if let Some(s) = p.sent.iter().find(|s| s.temp_guid == temp) {
        let guid = s.guid.clone();
        return answer(200, "Attachment sent!", json!({"guid": guid}));
    }
    let g = guid(&mut p);
    p.sent.push(Sent {
        guid: g.clone(),
        chat_guid: chat,
        temp_guid: temp,
        text: String::new(),
        method: field(&body, "method").unwrap_or_default(),
        reply_to: None,
        attachment: Some((name, size)),
    });
    answer(200, "Attachment sent!", json!({"guid": g}))
}

async fn react(
    Query(q): Query<HashMap<String, String>>,
    State(p): State<Plat>,
    body: Bytes,
) -> Response {
    if let Err(r) = authorize(&q) {
        return *r;
    }
    let Ok(v) = serde_json::from_slice::<Value>(&body) else {
        return error(400, "Validation Error", "Invalid JSON");
    };
    let mut p = lock(&p);
    if !p.private_api {
        return error(400, "iMessage Error", "iMessage Private API is not enabled");
    }
    let chat = v["chatGuid"].as_str().unwrap_or_default();
    let target = v["selectedMessageGuid"].as_str().unwrap_or_default();
    let reaction = v["reaction"].as_str().unwrap_or_default();
    const KNOWN: [&str; 12] = [
        "love",
        "like",
        "dislike",
        "laugh",
        "emphasize",
        "question",
        "-love",
        "-like",
        "-dislike",
        "-laugh",
        "-emphasize",
        "-question",
    ];
    if !valid_chat_guid(chat) || target.is_empty() || !KNOWN.contains(&reaction) {
        return error(400, "Validation Error", "Invalid reaction request");
    }
    p.reactions
        .push((chat.to_owned(), target.to_owned(), reaction.to_owned()));
    let g = guid(&mut p);
    answer(200, "Reaction sent!", json!({"guid": g}))
}

async fn typing(
    Query(q): Query<HashMap<String, String>>,
    State(p): State<Plat>,
    Path(chat): Path<String>,
) -> Response {
    if let Err(r) = authorize(&q) {
        return *r;
    }
    let mut p = lock(&p);
    if !p.private_api {
        return error(400, "iMessage Error", "iMessage Private API is not enabled");
    }
    if !valid_chat_guid(&chat) {
        return error(404, "Not Found", "Chat does not exist");
    }
    p.typing.push(chat);
    answer(200, "Successfully started typing!", Value::Null)
}

async fn download(
    Query(q): Query<HashMap<String, String>>,
    State(p): State<Plat>,
    Path(g): Path<String>,
) -> Response {
    if let Err(r) = authorize(&q) {
        return *r;
    }
    match lock(&p).attachments.get(&g) {
        Some(data) => data.clone().into_response(),
        None => error(404, "Not Found", "Attachment does not exist"),
    }
}
