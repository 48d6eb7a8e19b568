//! A fake of Webex on 127.0.0.1, built on the fake-platform harness: the REST API NanoClaw's
//! Webex channel calls (`/v1/people/me`, `/v1/webhooks`, `/v1/messages`,
//! `/v1/attachment/actions`, `/v1/contents`), as strict as Webex about the token, ids, the
//! 7,439-byte text limit, one file per message, cards and replies to replies; and webhook
//! deliveries signed with `X-Spark-Signature` (HMAC-SHA1 of the body under the webhook's
//! secret) POSTed to the target URLs the bot registered (127.0.0.1 only).
//!
//! Like Webex, a bot is told about a group space's message only when it is mentioned.

use std::collections::HashMap;
use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{FromRequest as _, Multipart, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use hmac::{Hmac, Mac};
use nanoclaw_fake_platform::{FakeServer, Harness};
use serde_json::{Value, json};

pub const BOT_TOKEN: &str =
    "ZmFrZS13ZWJleC1ib3QtdG9rZW4tMDEyMzQ1Njc4OWFiY2RlZg_PF84_1eb65fdf-9643-417f-9974-ad72cae0e10f";
/// The secret tests register webhooks with (the operator's `WEBEX_WEBHOOK_SECRET`).
pub const WEBHOOK_SECRET: &str = "webex-webhook-secret-7b1d3a";
pub const BOT_ID: &str = "Y2lzY29zcGFyazovL3VzL1BFT1BMRS9ib3Q";
pub const BOT_EMAIL: &str = "claw@webex.bot";
pub const BOT_NAME: &str = "Claw";
pub const ANN: &str = "Y2lzY29zcGFyazovL3VzL1BFT1BMRS9hbm4";
pub const BOB: &str = "Y2lzY29zcGFyazovL3VzL1BFT1BMRS9ib2I";
/// Ann's 1:1 space with the bot.
pub const DM_ANN: &str = "Y2lzY29zcGFyazovL3VzL1JPT00vZG0tYW5u";
/// A group space with Ann, Bob and the bot.
pub const TEAM: &str = "Y2lzY29zcGFyazovL3VzL1JPT00vdGVhbQ";
pub const ORG: &str = "Y2lzY29zcGFyazovL3VzL09SR0FOSVpBVElPTi9vcmc";
pub const APP: &str = "Y2lzY29zcGFyazovL3VzL0FQUExJQ0FUSU9OL2FwcA";
/// Webex's limit on `text` and `markdown`, in bytes.
pub const MAX_TEXT_BYTES: usize = 7439;
/// Webex's limit on a file.
pub const MAX_FILE_BYTES: usize = 100 * 1024 * 1024;
pub const ADAPTIVE_CARD: &str = "application/vnd.microsoft.card.adaptive";

/// A message in a space.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub id: String,
    pub room_id: String,
    pub room_type: String,
    pub parent_id: Option<String>,
    pub person_id: String,
    pub text: String,
    pub markdown: Option<String>,
    /// Content ids of the files.
    pub files: Vec<String>,
    pub attachments: Option<Value>,
    pub mentioned: Vec<String>,
    pub created: String,
    pub updated: Option<String>,
    pub deleted: bool,
}

impl Message {
    pub fn by_bot(&self) -> bool {
        self.person_id == BOT_ID
    }

    /// The labels and data of a card's `Action.Submit` buttons.
    pub fn buttons(&self) -> Vec<(String, Value)> {
        self.attachments
            .iter()
            .flat_map(|a| a.as_array().cloned().unwrap_or_default())
            .flat_map(|a| {
                a["content"]["actions"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
            })
            .map(|b| {
                (
                    b["title"].as_str().unwrap_or_default().to_owned(),
                    b["data"].clone(),
                )
            })
            .collect()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Webhook {
    pub id: String,
    pub name: String,
    pub target_url: String,
    pub resource: String,
    pub event: String,
    pub secret: Option<String>,
    pub status: String,
    pub created: String,
}

#[derive(Debug, Clone)]
struct ActionRec {
    id: String,
    message_id: String,
    person_id: String,
    room_id: String,
    inputs: Value,
    created: String,
}

#[derive(Debug, Clone)]
pub struct Content {
    pub name: String,
    pub mime: String,
    pub data: Vec<u8>,
}

#[derive(Default)]
struct Platform {
    seq: u64,
    messages: Vec<Message>,
    webhooks: Vec<Webhook>,
    actions: Vec<ActionRec>,
    contents: HashMap<String, Content>,
    /// person id → their 1:1 space with the bot.
    directs: HashMap<String, String>,
    base_url: String,
}

type Plat = Arc<Mutex<Platform>>;

fn lock(p: &Plat) -> MutexGuard<'_, Platform> {
    p.lock().unwrap_or_else(|e| e.into_inner())
}

fn now() -> String {
    let ts = jiff::Timestamp::now();
    // Webex: milliseconds, `Z`.
    format!("{:.3}", ts).replace("+00:00", "Z")
}

fn next_id(p: &mut Platform, kind: &str) -> String {
    p.seq += 1;
    encode(&format!("ciscospark://us/{kind}/{:08}", p.seq))
}

/// Unpadded base64url, as Webex ids are.
fn encode(s: &str) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let b = s.as_bytes();
    let mut out = String::new();
    for chunk in b.chunks(3) {
        let n = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        for i in 0..=chunk.len() {
            out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

fn person_email(id: &str) -> String {
    match id {
        ANN => "ann@example.com".into(),
        BOB => "bob@example.com".into(),
        BOT_ID => BOT_EMAIL.into(),
        other => format!("{}@example.com", &other[other.len().saturating_sub(6)..]),
    }
}

fn known_person(id: &str) -> bool {
    [ANN, BOB, BOT_ID].contains(&id)
}

fn room_type(p: &Platform, room: &str) -> Option<&'static str> {
    if room == TEAM {
        Some("group")
    } else if room == DM_ANN || p.directs.values().any(|r| r == room) {
        Some("direct")
    } else {
        None
    }
}

pub struct FakeWebex {
    server: FakeServer,
    platform: Plat,
}

impl FakeWebex {
    /// On a free port of 127.0.0.1.
    pub fn start() -> Self {
        Self::start_on(0).expect("serve the fake")
    }

    /// On `port` of 127.0.0.1 (0: any free one), with the control API under `/control/`.
    pub fn start_on(port: u16) -> std::io::Result<Self> {
        let harness = Harness::new()
            .with_route_key(route_of)
            .with_control_prefix("/control/");
        let platform = Plat::default();
        lock(&platform)
            .directs
            .insert(ANN.to_owned(), DM_ANN.to_owned());
        let router = Router::new()
            .route("/v1/people/me", get(people_me))
            .route("/v1/webhooks", get(list_webhooks).post(create_webhook))
            .route(
                "/v1/webhooks/{id}",
                put(update_webhook).delete(delete_webhook),
            )
            .route("/v1/messages", post(create_message))
            .route("/v1/messages/direct", get(direct_messages))
            .route(
                "/v1/messages/{id}",
                get(get_message).put(edit_message).delete(delete_message),
            )
            .route("/v1/attachment/actions/{id}", get(get_action))
            .route("/v1/contents/{id}", get(get_content))
            .merge(control(&platform))
            .with_state(Arc::clone(&platform));
        let server = FakeServer::start_on(port, "fake-webex", harness, router)?;
        lock(&platform).base_url = server.base_url();
        Ok(Self { server, platform })
    }

    pub fn base_url(&self) -> String {
        self.server.base_url()
    }

    /// The REST root (`api_base_url`).
    pub fn api_url(&self) -> String {
        format!("{}/v1", self.server.base_url())
    }

    pub fn harness(&self) -> &Harness {
        self.server.harness()
    }

    pub fn webhooks(&self) -> Vec<Webhook> {
        lock(&self.platform).webhooks.clone()
    }

    /// A webhook registered beforehand (as an operator would by hand).
    pub fn add_webhook(&self, target_url: &str, resource: &str, event: &str, secret: &str) {
        let mut p = lock(&self.platform);
        let id = next_id(&mut p, "WEBHOOK");
        p.webhooks.push(Webhook {
            id,
            name: "by hand".into(),
            target_url: target_url.into(),
            resource: resource.into(),
            event: event.into(),
            secret: Some(secret.into()),
            status: "active".into(),
            created: now(),
        });
    }

    pub fn message(&self, id: &str) -> Option<Message> {
        lock(&self.platform)
            .messages
            .iter()
            .find(|m| m.id == id)
            .cloned()
    }

    /// The bot's messages in `room`, oldest first (deleted ones left out).
    pub fn bot_messages(&self, room: &str) -> Vec<Message> {
        lock(&self.platform)
            .messages
            .iter()
            .filter(|m| m.by_bot() && m.room_id == room && !m.deleted)
            .cloned()
            .collect()
    }

    /// A file's content, by the content id a message lists.
    pub fn content(&self, id: &str) -> Option<Content> {
        lock(&self.platform).contents.get(id).cloned()
    }

    /// A user writes in `room` (a reply to `parent` when given; `mentions` are person ids
    /// mentioned, `files` (name, mime, bytes) attached). Stored only; [`FakeWebex::notify`]
    /// tells the bot. Returns the message id.
    pub fn post(
        &self,
        room: &str,
        person: &str,
        text: &str,
        parent: Option<&str>,
        mentions: &[&str],
        files: &[(&str, &str, &[u8])],
    ) -> String {
        post_user(&self.platform, room, person, text, parent, mentions, files)
    }

    /// A user writes, and the bot is told as Webex tells it: in 1:1 spaces always, in
    /// group spaces only when the bot is mentioned. Returns the message id and the
    /// answers of the webhook deliveries (statuses).
    pub fn say(
        &self,
        room: &str,
        person: &str,
        text: &str,
        parent: Option<&str>,
        mention_bot: bool,
    ) -> (String, Vec<u16>) {
        let mentions: &[&str] = if mention_bot { &[BOT_ID] } else { &[] };
        let id = self.post(room, person, text, parent, mentions, &[]);
        let direct = room_type(&lock(&self.platform), room) == Some("direct");
        let statuses = if direct || mention_bot {
            self.notify("messages", "created", &id)
        } else {
            Vec::new()
        };
        (id, statuses)
    }

    /// A user clicks the card button whose `Action.Submit` data is `data` on message
    /// `message_id`. Stored only; returns the attachment action id.
    pub fn submit(&self, message_id: &str, person: &str, data: &Value) -> String {
        submit(&self.platform, message_id, person, data)
    }

    /// [`FakeWebex::submit`] and the `attachmentActions` `created` webhook.
    pub fn click(&self, message_id: &str, person: &str, data: &Value) -> (String, Vec<u16>) {
        let id = self.submit(message_id, person, data);
        let statuses = self.notify("attachmentActions", "created", &id);
        (id, statuses)
    }

    /// Deletes a message (by its author) and returns the `messages` `deleted` deliveries.
    pub fn delete(&self, message_id: &str) -> Vec<u16> {
        if let Some(m) = lock(&self.platform)
            .messages
            .iter_mut()
            .find(|m| m.id == message_id)
        {
            m.deleted = true;
        }
        self.notify("messages", "deleted", message_id)
    }

    /// The webhook body Webex POSTs for `id` (a message or attachment action) to `hook`.
    pub fn envelope(&self, hook: &Webhook, id: &str) -> Value {
        envelope(&lock(&self.platform), hook, id)
    }

    /// The body for `resource`/`event` about `id`, for the first matching registered
    /// webhook (or a made-up one when none is registered), and its signature under
    /// `secret`.
    pub fn signed(&self, resource: &str, event: &str, id: &str, secret: &str) -> (Vec<u8>, String) {
        let p = lock(&self.platform);
        let hook = p
            .webhooks
            .iter()
            .find(|h| h.resource == resource && h.event == event)
            .cloned()
            .unwrap_or_else(|| Webhook {
                id: encode("ciscospark://us/WEBHOOK/fixture"),
                name: "fixture".into(),
                target_url: "http://127.0.0.1:9/webhook/webex".into(),
                resource: resource.into(),
                event: event.into(),
                secret: Some(secret.into()),
                status: "active".into(),
                created: now(),
            });
        let body = envelope(&p, &hook, id).to_string().into_bytes();
        let signature = signature(secret, &body);
        (body, signature)
    }

    /// POSTs the `resource`/`event` notification about `id` to every active webhook that
    /// asks for it, signed with its secret, as Webex does. Returns the answers' statuses.
    pub fn notify(&self, resource: &str, event: &str, id: &str) -> Vec<u16> {
        notify(&self.platform, resource, event, id)
    }
}

fn route_of(parts: &Parts) -> Option<String> {
    let path = parts.uri.path().strip_prefix("/v1/")?;
    let method = parts.method.as_str();
    let resource = match path.split('/').collect::<Vec<_>>().as_slice() {
        ["people", "me"] => "people.me",
        ["webhooks"] | ["webhooks", _] => "webhooks",
        ["messages"] => "messages.create",
        ["messages", "direct"] => "messages.direct",
        ["messages", _] => match method {
            "GET" => "messages.get",
            "PUT" => "messages.edit",
            _ => "messages.delete",
        },
        ["attachment", "actions", _] => "actions.get",
        ["contents", _] => "contents",
        _ => return None,
    };
    Some(resource.to_owned())
}

fn error(status: StatusCode, message: &str) -> Response {
    (
        status,
        axum::Json(json!({
            "message": message,
            "errors": [{"description": message}],
            "trackingId": "ROUTER_FAKE_WEBEX",
        })),
    )
        .into_response()
}

fn unauthorized() -> Response {
    error(
        StatusCode::UNAUTHORIZED,
        "The request requires a valid access token set in the Authorization request header.",
    )
}

fn authorized(headers: &HeaderMap) -> bool {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        == Some(BOT_TOKEN)
}

fn message_json(m: &Message) -> Value {
    let mut v = json!({
        "id": m.id, "roomId": m.room_id, "roomType": m.room_type, "text": m.text,
        "personId": m.person_id, "personEmail": person_email(&m.person_id),
        "created": m.created,
    });
    if let Some(md) = &m.markdown {
        v["markdown"] = json!(md);
    }
    if let Some(p) = &m.parent_id {
        v["parentId"] = json!(p);
    }
    if !m.mentioned.is_empty() {
        v["mentionedPeople"] = json!(m.mentioned);
    }
    if !m.files.is_empty() {
        v["files"] = json!(m.files);
    }
    if let Some(a) = &m.attachments {
        v["attachments"] = a.clone();
    }
    if let Some(u) = &m.updated {
        v["updated"] = json!(u);
    }
    v
}

fn webhook_json(h: &Webhook) -> Value {
    let mut v = json!({
        "id": h.id, "name": h.name, "targetUrl": h.target_url, "resource": h.resource,
        "event": h.event, "orgId": ORG, "createdBy": BOT_ID, "appId": APP,
        "ownedBy": "creator", "status": h.status, "created": h.created,
    });
    if let Some(s) = &h.secret {
        v["secret"] = json!(s);
    }
    v
}

fn envelope(p: &Platform, hook: &Webhook, id: &str) -> Value {
    let data = if hook.resource == "attachmentActions" {
        let a = p.actions.iter().find(|a| a.id == id);
        match a {
            Some(a) => json!({
                "id": a.id, "type": "submit", "messageId": a.message_id,
                "personId": a.person_id, "roomId": a.room_id, "created": a.created,
            }),
            None => json!({"id": id}),
        }
    } else {
        match p.messages.iter().find(|m| m.id == id) {
            Some(m) => {
                let mut d = json!({
                    "id": m.id, "roomId": m.room_id, "roomType": m.room_type,
                    "personId": m.person_id, "personEmail": person_email(&m.person_id),
                    "created": m.created,
                });
                if !m.mentioned.is_empty() && hook.event == "created" {
                    d["mentionedPeople"] = json!(m.mentioned);
                }
                d
            }
            None => json!({"id": id}),
        }
    };
    let actor = data["personId"].as_str().unwrap_or(BOT_ID).to_owned();
    json!({
        "id": hook.id, "name": hook.name, "targetUrl": hook.target_url,
        "resource": hook.resource, "event": hook.event, "orgId": ORG,
        "createdBy": BOT_ID, "appId": APP, "ownedBy": "creator", "status": hook.status,
        "created": hook.created, "actorId": actor, "data": data,
    })
}

/// `X-Spark-Signature`: hex HMAC-SHA1 of the body under the webhook's secret.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(secret.as_bytes()).expect("key");
    mac.update(body);
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn notify(platform: &Plat, resource: &str, event: &str, id: &str) -> Vec<u16> {
    let deliveries: Vec<(String, Vec<u8>, Option<String>)> = {
        let p = lock(platform);
        p.webhooks
            .iter()
            .filter(|h| h.status == "active" && h.resource == resource && h.event == event)
            .map(|h| {
                let body = envelope(&p, h, id).to_string().into_bytes();
                let sig = h.secret.as_deref().map(|s| signature(s, &body));
                (h.target_url.clone(), body, sig)
            })
            .collect()
    };
    deliveries
        .into_iter()
        .map(|(url, body, sig)| {
            let mut headers = vec![("Content-Type", "application/json".to_owned())];
            if let Some(sig) = sig {
                headers.push(("X-Spark-Signature", sig));
            }
            post_to(&url, &headers, &body).unwrap_or(0)
        })
        .collect()
}

/// One HTTP/1.1 POST to a loopback URL; the status. Any other host is refused: the fake
/// never sends traffic off this machine.
pub fn post_to(url: &str, headers: &[(&str, String)], body: &[u8]) -> Option<u16> {
    let rest = url.strip_prefix("http://")?;
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let (host, port) = authority.rsplit_once(':').unwrap_or((authority, "80"));
    if !matches!(host, "127.0.0.1" | "localhost") {
        return None;
    }
    let port: u16 = port.parse().ok()?;
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .ok()?;
    let mut head = format!(
        "POST /{path} HTTP/1.1\r\nHost: {authority}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).ok()?;
    stream.write_all(body).ok()?;
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer);
    text.split_whitespace().nth(1)?.parse().ok()
}

fn post_user(
    platform: &Plat,
    room: &str,
    person: &str,
    text: &str,
    parent: Option<&str>,
    mentions: &[&str],
    files: &[(&str, &str, &[u8])],
) -> String {
    let mut p = lock(platform);
    let kind = room_type(&p, room).unwrap_or("group").to_owned();
    let id = next_id(&mut p, "MESSAGE");
    let mut urls = Vec::new();
    for (name, mime, data) in files {
        let cid = next_id(&mut p, "CONTENT");
        urls.push(format!("{}/v1/contents/{cid}", p.base_url));
        p.contents.insert(
            cid,
            Content {
                name: (*name).into(),
                mime: (*mime).into(),
                data: data.to_vec(),
            },
        );
    }
    p.messages.push(Message {
        id: id.clone(),
        room_id: room.into(),
        room_type: kind,
        parent_id: parent.map(str::to_owned),
        person_id: person.into(),
        text: text.into(),
        markdown: None,
        files: urls,
        attachments: None,
        mentioned: mentions.iter().map(|m| (*m).to_owned()).collect(),
        created: now(),
        updated: None,
        deleted: false,
    });
    id
}

fn submit(platform: &Plat, message_id: &str, person: &str, data: &Value) -> String {
    let mut p = lock(platform);
    let room = p
        .messages
        .iter()
        .find(|m| m.id == message_id)
        .map(|m| m.room_id.clone())
        .unwrap_or_default();
    let id = next_id(&mut p, "ATTACHMENT_ACTION");
    p.actions.push(ActionRec {
        id: id.clone(),
        message_id: message_id.into(),
        person_id: person.into(),
        room_id: room,
        inputs: data.clone(),
        created: now(),
    });
    id
}

async fn people_me(headers: HeaderMap) -> Response {
    if !authorized(&headers) {
        return unauthorized();
    }
    axum::Json(json!({
        "id": BOT_ID, "emails": [BOT_EMAIL], "phoneNumbers": [], "displayName": BOT_NAME,
        "nickName": BOT_NAME, "avatar": "", "orgId": ORG, "created": "2026-01-01T00:00:00.000Z",
        "status": "unknown", "type": "bot",
    }))
    .into_response()
}

async fn list_webhooks(State(platform): State<Plat>, headers: HeaderMap) -> Response {
    if !authorized(&headers) {
        return unauthorized();
    }
    let items: Vec<Value> = lock(&platform).webhooks.iter().map(webhook_json).collect();
    axum::Json(json!({ "items": items })).into_response()
}

fn check_webhook_fields(v: &Value) -> Result<(), &'static str> {
    let url = v["targetUrl"].as_str().unwrap_or_default();
    if v["name"].as_str().unwrap_or_default().is_empty()
        || !(url.starts_with("https://") || url.starts_with("http://"))
    {
        return Err("name and targetUrl are required");
    }
    if let Some(secret) = v.get("secret")
        && !secret.is_null()
        && secret.as_str().is_none_or(str::is_empty)
    {
        return Err("invalid secret");
    }
    Ok(())
}

async fn create_webhook(
    State(platform): State<Plat>,
    headers: HeaderMap,
    axum::Json(v): axum::Json<Value>,
) -> Response {
    if !authorized(&headers) {
        return unauthorized();
    }
    if let Err(e) = check_webhook_fields(&v) {
        return error(StatusCode::BAD_REQUEST, e);
    }
    let resource = v["resource"].as_str().unwrap_or_default().to_owned();
    let event = v["event"].as_str().unwrap_or_default().to_owned();
    let valid = match resource.as_str() {
        "messages" => ["created", "deleted", "updated", "all"].contains(&event.as_str()),
        "attachmentActions" => event == "created",
        "memberships" | "rooms" => true,
        _ => false,
    };
    if !valid {
        return error(StatusCode::BAD_REQUEST, "invalid resource or event");
    }
    let mut p = lock(&platform);
    let id = next_id(&mut p, "WEBHOOK");
    let hook = Webhook {
        id,
        name: v["name"].as_str().unwrap_or_default().into(),
        target_url: v["targetUrl"].as_str().unwrap_or_default().into(),
        resource,
        event,
        secret: v["secret"].as_str().map(str::to_owned),
        status: "active".into(),
        created: now(),
    };
    let answer = webhook_json(&hook);
    p.webhooks.push(hook);
    axum::Json(answer).into_response()
}

async fn update_webhook(
    State(platform): State<Plat>,
    Path(id): Path<String>,
    headers: HeaderMap,
    axum::Json(v): axum::Json<Value>,
) -> Response {
    if !authorized(&headers) {
        return unauthorized();
    }
    if let Err(e) = check_webhook_fields(&v) {
        return error(StatusCode::BAD_REQUEST, e);
    }
    let mut p = lock(&platform);
    let Some(h) = p.webhooks.iter_mut().find(|h| h.id == id) else {
        return error(
            StatusCode::NOT_FOUND,
            "The requested resource could not be found.",
        );
    };
    h.name = v["name"].as_str().unwrap_or_default().into();
    h.target_url = v["targetUrl"].as_str().unwrap_or_default().into();
    if let Some(s) = v["secret"].as_str() {
        h.secret = Some(s.into());
    }
    if let Some(s) = v["status"].as_str() {
        h.status = s.into();
    }
    axum::Json(webhook_json(h)).into_response()
}

async fn delete_webhook(
    State(platform): State<Plat>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if !authorized(&headers) {
        return unauthorized();
    }
    let mut p = lock(&platform);
    let before = p.webhooks.len();
    p.webhooks.retain(|h| h.id != id);
    if p.webhooks.len() == before {
        return error(
            StatusCode::NOT_FOUND,
            "The requested resource could not be found.",
        );
    }
    StatusCode::NO_CONTENT.into_response()
}

async fn get_message(
    State(platform): State<Plat>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if !authorized(&headers) {
        return unauthorized();
    }
    match lock(&platform)
        .messages
        .iter()
        .find(|m| m.id == id && !m.deleted)
    {
        Some(m) => axum::Json(message_json(m)).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            "The requested resource could not be found.",
        ),
    }
}

async fn direct_messages(
    State(platform): State<Plat>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if !authorized(&headers) {
        return unauthorized();
    }
    let person = q.get("personId").cloned().unwrap_or_default();
    if !known_person(&person) {
        return error(
            StatusCode::NOT_FOUND,
            "The requested resource could not be found.",
        );
    }
    let p = lock(&platform);
    let Some(room) = p.directs.get(&person) else {
        return axum::Json(json!({"items": []})).into_response();
    };
    let items: Vec<Value> = p
        .messages
        .iter()
        .rev()
        .filter(|m| &m.room_id == room && !m.deleted)
        .map(message_json)
        .collect();
    axum::Json(json!({ "items": items })).into_response()
}

/// A card as Webex takes it: one Adaptive Card whose actions are `Action.Submit`.
fn valid_card(attachments: &Value) -> bool {
    let Some(list) = attachments.as_array() else {
        return false;
    };
    list.len() == 1
        && list.iter().all(|a| {
            let c = &a["content"];
            a["contentType"] == ADAPTIVE_CARD
                && c["type"] == "AdaptiveCard"
                && c["version"].is_string()
                && c["body"].is_array()
                && c.to_string().len() <= 28 * 1024
                && c["actions"].as_array().is_none_or(|acts| {
                    acts.iter().all(|b| {
                        b["type"] == "Action.Submit"
                            && b["title"].as_str().is_some_and(|t| !t.is_empty())
                            && b["data"].is_object()
                    })
                })
        })
}

async fn create_message(State(platform): State<Plat>, request: Request<Body>) -> Response {
    if !authorized(request.headers()) {
        return unauthorized();
    }
    let multipart = request
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("multipart/form-data"));
    let mut files: Vec<Content> = Vec::new();
    let args: Value = if multipart {
        let mut form = match Multipart::from_request(request, &()).await {
            Ok(form) => form,
            Err(e) => return error(StatusCode::BAD_REQUEST, &e.to_string()),
        };
        let mut map = serde_json::Map::new();
        loop {
            let field = match form.next_field().await {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => return error(StatusCode::BAD_REQUEST, &e.to_string()),
            };
            let name = field.name().unwrap_or_default().to_owned();
            let file_name = field.file_name().map(str::to_owned);
            let mime = field
                .content_type()
                .unwrap_or("application/octet-stream")
                .to_owned();
            let data = field.bytes().await.unwrap_or_default();
            match (name.as_str(), file_name) {
                ("files", Some(file_name)) => files.push(Content {
                    name: file_name,
                    mime,
                    data: data.to_vec(),
                }),
                (
                    "roomId" | "toPersonId" | "toPersonEmail" | "text" | "markdown" | "parentId",
                    None,
                ) => {
                    map.insert(name, json!(String::from_utf8_lossy(&data)));
                }
                _ => return error(StatusCode::BAD_REQUEST, &format!("unexpected field {name}")),
            }
        }
        Value::Object(map)
    } else {
        let bytes = match axum::body::to_bytes(request.into_body(), 1024 * 1024).await {
            Ok(b) => b,
            Err(_) => return error(StatusCode::BAD_REQUEST, "body too large"),
        };
        match serde_json::from_slice(&bytes) {
            Ok(v) => v,
            Err(_) => return error(StatusCode::BAD_REQUEST, "Unable to parse the JSON body."),
        }
    };
    let s = |k: &str| args[k].as_str().map(str::to_owned);
    let targets = ["roomId", "toPersonId", "toPersonEmail"]
        .iter()
        .filter(|k| s(k).is_some())
        .count();
    if targets != 1 {
        return error(
            StatusCode::BAD_REQUEST,
            "exactly one of roomId, toPersonId or toPersonEmail is required",
        );
    }
    let text = s("text");
    let markdown = s("markdown");
    for t in [&text, &markdown].into_iter().flatten() {
        if t.len() > MAX_TEXT_BYTES {
            return error(
                StatusCode::BAD_REQUEST,
                "Message length exceeds the maximum of 7439 bytes.",
            );
        }
    }
    if files.len() > 1 {
        return error(
            StatusCode::BAD_REQUEST,
            "Only one file per message is supported.",
        );
    }
    if files.iter().any(|f| f.data.len() > MAX_FILE_BYTES) {
        return error(StatusCode::PAYLOAD_TOO_LARGE, "The file is too large.");
    }
    let attachments = args.get("attachments").filter(|a| !a.is_null()).cloned();
    if let Some(a) = &attachments {
        if !files.is_empty() {
            return error(
                StatusCode::BAD_REQUEST,
                "A message cannot carry both files and attachments.",
            );
        }
        if !valid_card(a) {
            return error(StatusCode::BAD_REQUEST, "Invalid attachment.");
        }
        if text.is_none() && markdown.is_none() {
            return error(
                StatusCode::BAD_REQUEST,
                "text or markdown is required with attachments.",
            );
        }
    }
    let empty = |t: &Option<String>| t.as_deref().is_none_or(|t| t.trim().is_empty());
    if empty(&text) && empty(&markdown) && files.is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            "text, markdown or files is required.",
        );
    }
    let mut p = lock(&platform);
    let room = if let Some(room) = s("roomId") {
        if room_type(&p, &room).is_none() {
            return error(
                StatusCode::NOT_FOUND,
                "Could not find a room with provided ID.",
            );
        }
        room
    } else if let Some(person) = s("toPersonId") {
        if !known_person(&person) || person == BOT_ID {
            return error(
                StatusCode::NOT_FOUND,
                "Could not find a person with provided ID.",
            );
        }
        match p.directs.get(&person) {
            Some(r) => r.clone(),
            None => {
                let room = next_id(&mut p, "ROOM");
                p.directs.insert(person, room.clone());
                room
            }
        }
    } else {
        return error(
            StatusCode::BAD_REQUEST,
            "toPersonEmail is not supported by this fake",
        );
    };
    let parent = s("parentId");
    if let Some(parent) = &parent {
        match p.messages.iter().find(|m| &m.id == parent) {
            Some(m) if m.room_id != room => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "The parent message is in another room.",
                );
            }
            Some(m) if m.parent_id.is_some() => {
                return error(StatusCode::BAD_REQUEST, "Cannot reply to a reply.");
            }
            Some(_) => {}
            None => {
                return error(StatusCode::NOT_FOUND, "Could not find the parent message.");
            }
        }
    }
    let kind = room_type(&p, &room).unwrap_or("direct").to_owned();
    let id = next_id(&mut p, "MESSAGE");
    let mut urls = Vec::new();
    for f in files {
        let cid = next_id(&mut p, "CONTENT");
        urls.push(format!("{}/v1/contents/{cid}", p.base_url));
        p.contents.insert(cid, f);
    }
    let plain = text
        .clone()
        .or_else(|| markdown.clone())
        .unwrap_or_default();
    let message = Message {
        id,
        room_id: room,
        room_type: kind,
        parent_id: parent,
        person_id: BOT_ID.into(),
        text: plain,
        markdown,
        files: urls,
        attachments,
        mentioned: Vec::new(),
        created: now(),
        updated: None,
        deleted: false,
    };
    let answer = message_json(&message);
    p.messages.push(message);
    axum::Json(answer).into_response()
}

async fn edit_message(
    State(platform): State<Plat>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !authorized(&headers) {
        return unauthorized();
    }
    let Ok(v) = serde_json::from_slice::<Value>(&body) else {
        return error(StatusCode::BAD_REQUEST, "Unable to parse the JSON body.");
    };
    let mut p = lock(&platform);
    let Some(m) = p.messages.iter_mut().find(|m| m.id == id && !m.deleted) else {
        return error(
            StatusCode::NOT_FOUND,
            "The requested resource could not be found.",
        );
    };
    if !m.by_bot() {
        return error(StatusCode::FORBIDDEN, "Only the author can edit a message.");
    }
    if v["roomId"].as_str() != Some(m.room_id.as_str()) {
        return error(
            StatusCode::BAD_REQUEST,
            "roomId is required and must be the message's room.",
        );
    }
    let text = v["text"].as_str();
    let markdown = v["markdown"].as_str();
    if text.is_none() && markdown.is_none() {
        return error(StatusCode::BAD_REQUEST, "text or markdown is required.");
    }
    if text.or(markdown).is_some_and(|t| t.len() > MAX_TEXT_BYTES) {
        return error(
            StatusCode::BAD_REQUEST,
            "Message length exceeds the maximum of 7439 bytes.",
        );
    }
    m.text = text.or(markdown).unwrap_or_default().into();
    m.markdown = markdown.map(str::to_owned);
    m.updated = Some(now());
    axum::Json(message_json(m)).into_response()
}

async fn delete_message(
    State(platform): State<Plat>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if !authorized(&headers) {
        return unauthorized();
    }
    let mut p = lock(&platform);
    match p.messages.iter_mut().find(|m| m.id == id && !m.deleted) {
        Some(m) if m.by_bot() => {
            m.deleted = true;
            StatusCode::NO_CONTENT.into_response()
        }
        Some(_) => error(
            StatusCode::FORBIDDEN,
            "Only the author can delete a message.",
        ),
        None => error(
            StatusCode::NOT_FOUND,
            "The requested resource could not be found.",
        ),
    }
}

async fn get_action(
    State(platform): State<Plat>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if !authorized(&headers) {
        return unauthorized();
    }
    match lock(&platform).actions.iter().find(|a| a.id == id) {
        Some(a) => axum::Json(json!({
            "id": a.id, "type": "submit", "messageId": a.message_id, "inputs": a.inputs,
            "personId": a.person_id, "roomId": a.room_id, "created": a.created,
        }))
        .into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            "The requested resource could not be found.",
        ),
    }
}

async fn get_content(
    State(platform): State<Plat>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if !authorized(&headers) {
        return unauthorized();
    }
    match lock(&platform).contents.get(&id) {
        Some(c) => (
            [
                ("content-type", c.mime.clone()),
                (
                    "content-disposition",
                    format!("attachment; filename=\"{}\"", c.name),
                ),
            ],
            c.data.clone(),
        )
            .into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            "The requested resource could not be found.",
        ),
    }
}

/// The control API (for the `fake-webex` command): `POST /control/say` `{"room", "person",
/// "text", "parent"?, "mention_bot"?}` → `{"id", "delivered"}`; `POST /control/click`
/// `{"message", "person", "data"}`; `GET /control/sent` → the bot's messages.
fn control(platform: &Plat) -> Router<Plat> {
    let p1 = Arc::clone(platform);
    let p2 = Arc::clone(platform);
    let p3 = Arc::clone(platform);
    Router::new()
        .route(
            "/control/say",
            post(move |axum::Json(v): axum::Json<Value>| async move {
                let answer = tokio::task::spawn_blocking(move || {
                    let s = |k: &str| v[k].as_str().unwrap_or_default().to_owned();
                    let mention = v["mention_bot"].as_bool().unwrap_or(false);
                    let mentions: &[&str] = if mention { &[BOT_ID] } else { &[] };
                    let room = s("room");
                    let id = post_user(
                        &p1,
                        &room,
                        &s("person"),
                        &s("text"),
                        v["parent"].as_str(),
                        mentions,
                        &[],
                    );
                    let direct = room_type(&lock(&p1), &room) == Some("direct");
                    let delivered = if direct || mention {
                        notify(&p1, "messages", "created", &id)
                    } else {
                        Vec::new()
                    };
                    json!({"id": id, "delivered": delivered})
                })
                .await
                .unwrap_or_default();
                axum::Json(answer)
            }),
        )
        .route(
            "/control/click",
            post(move |axum::Json(v): axum::Json<Value>| async move {
                let answer = tokio::task::spawn_blocking(move || {
                    let s = |k: &str| v[k].as_str().unwrap_or_default().to_owned();
                    let id = submit(&p2, &s("message"), &s("person"), &v["data"]);
                    let delivered = notify(&p2, "attachmentActions", "created", &id);
                    json!({"id": id, "delivered": delivered})
                })
                .await
                .unwrap_or_default();
                axum::Json(answer)
            }),
        )
        .route(
            "/control/sent",
            get(move || async move {
                let p = lock(&p3);
                let messages: Vec<Value> = p
                    .messages
                    .iter()
                    .filter(|m| m.by_bot())
                    .map(|m| {
                        let buttons: Vec<Value> = m
                            .buttons()
                            .into_iter()
                            .map(|(title, data)| json!({"title": title, "data": data}))
                            .collect();
                        json!({"id": m.id, "roomId": m.room_id, "parentId": m.parent_id,
                               "text": m.text, "files": m.files.len(), "buttons": buttons})
                    })
                    .collect();
                axum::Json(json!({ "messages": messages }))
            }),
        )
}
