//! A fake of Slack on 127.0.0.1, built on the fake-platform harness: the Web API methods
//! NanoClaw's Slack channel calls (as strict as Slack about tokens, ids and limits, with
//! `ok: false` errors), file hosting and the upload URLs, and a Socket Mode WebSocket that
//! hands out one URL per `apps.connections.open`. Plus [`signature`] to sign Events API
//! requests the way Slack does, and [`callback`] to wrap an event.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hmac::{Hmac, Mac};
use nanoclaw_fake_platform::{FakeServer, Harness, WsHub, WsMessage};
use serde_json::{Value, json};

pub const BOT_TOKEN: &str = "xoxb-17653672481-19874698323-pdFZKVeTuE8sk7oOcBrzbqgy";
pub const APP_TOKEN: &str = "xapp-1-A0APP-3333-8f8e8d8c8b8a";
pub const SIGNING_SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
pub const BOT_USER: &str = "U0BOT";
pub const BOT_ID: &str = "B0BOT";
pub const TEAM: &str = "T0TEAM";
/// Conversations the workspace has: public, private, a DM with Ann, a group DM.
pub const GENERAL: &str = "C0GENERAL";
pub const PRIVATE: &str = "G0PRIVATE";
pub const DM_ANN: &str = "D0ANN";
pub const MPIM: &str = "G0MPIM";
pub const ANN: &str = "U0ANN";
pub const BOB: &str = "U0BOB";
/// Slack's message text limit (it truncates longer texts; we refuse them).
const MAX_TEXT: usize = 40_000;

#[derive(Debug, Clone, PartialEq)]
pub struct Posted {
    pub channel: String,
    pub ts: String,
    pub thread_ts: Option<String>,
    pub text: String,
    pub blocks: Option<Value>,
    pub by_bot: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FileShare {
    pub file_id: String,
    pub name: String,
    pub data: Vec<u8>,
    pub channel: String,
    pub thread_ts: Option<String>,
}

#[derive(Default)]
struct Platform {
    seq: u64,
    messages: Vec<Posted>,
    reactions: Vec<(String, String, String)>,
    /// file id → (name, announced length, data once uploaded)
    uploads: HashMap<String, (String, usize, Option<Vec<u8>>)>,
    shares: Vec<FileShare>,
    /// Files users posted: name → content.
    hosted: HashMap<String, Vec<u8>>,
    dms: HashMap<String, String>,
    tickets: u64,
    base_url: String,
}

type Plat = Arc<Mutex<Platform>>;

fn lock(p: &Plat) -> MutexGuard<'_, Platform> {
    p.lock().unwrap_or_else(|e| e.into_inner())
}

pub struct FakeSlack {
    server: FakeServer,
    platform: Plat,
    pub hub: WsHub,
}

impl FakeSlack {
    /// On a free port of 127.0.0.1.
    pub fn start() -> Self {
        Self::start_on(0).expect("serve the fake")
    }

    /// On `port` of 127.0.0.1 (0: any free one), with the control API under `/control/`
    /// (what the `fake-slack` command line uses).
    pub fn start_on(port: u16) -> std::io::Result<Self> {
        let harness = Harness::new()
            .with_route_key(route_of)
            .with_control_prefix("/control/");
        let platform = Plat::default();
        let hub = WsHub::new();
        hub.on_connect(|_| {
            vec![WsMessage::Text(
                json!({"type": "hello", "num_connections": 1,
                       "debug_info": {"host": "applink-fake", "approximate_connection_time": 18060},
                       "connection_info": {"app_id": "A0APP"}})
                .to_string(),
            )]
        });
        let router = Router::new()
            .route("/api/{method}", post(api))
            .route("/upload/{file_id}", post(upload))
            .route("/files/{name}", get(file))
            .route("/link/", hub.route())
            .merge(control(&platform, &hub))
            .with_state(Arc::clone(&platform));
        let server = FakeServer::start_on(port, "fake-slack", harness, router)?;
        lock(&platform).base_url = server.base_url();
        Ok(Self {
            server,
            platform,
            hub,
        })
    }

    pub fn base_url(&self) -> String {
        self.server.base_url()
    }

    pub fn api_url(&self) -> String {
        format!("{}/api", self.server.base_url())
    }

    pub fn harness(&self) -> &Harness {
        self.server.harness()
    }

    pub fn messages(&self) -> Vec<Posted> {
        lock(&self.platform).messages.clone()
    }

    pub fn reactions(&self) -> Vec<(String, String, String)> {
        lock(&self.platform).reactions.clone()
    }

    pub fn shares(&self) -> Vec<FileShare> {
        lock(&self.platform).shares.clone()
    }

    /// A file a user posted, served at `<base>/files/<name>` to the bot token only.
    pub fn host_file(&self, name: &str, data: &[u8]) -> String {
        lock(&self.platform)
            .hosted
            .insert(name.to_owned(), data.to_vec());
        format!("{}/files/{name}", self.base_url())
    }

    /// A message a user wrote (so the bot can react to it or edit... not its own).
    pub fn user_message(&self, channel: &str, text: &str) -> String {
        let mut p = lock(&self.platform);
        let ts = next_ts(&mut p);
        p.messages.push(Posted {
            channel: channel.into(),
            ts: ts.clone(),
            thread_ts: None,
            text: text.into(),
            blocks: None,
            by_bot: false,
        });
        ts
    }

    /// A user writes in `channel` (`channel_type` `im`, `channel`, `group` or `mpim`;
    /// `thread_ts` for a reply in a thread): the message is stored and delivered over Socket
    /// Mode as an `events_api` envelope, as Slack does. Returns its ts.
    pub fn say(
        &self,
        channel: &str,
        channel_type: &str,
        user: &str,
        text: &str,
        thread_ts: Option<&str>,
    ) -> String {
        say(
            &self.platform,
            &self.hub,
            channel,
            channel_type,
            user,
            text,
            thread_ts,
        )
    }

    /// A user clicks button `action_id` on the bot's message `message_ts` in `channel`,
    /// delivered over Socket Mode as an `interactive` envelope.
    pub fn click(&self, channel: &str, message_ts: &str, user: &str, action_id: &str) {
        click(
            &self.platform,
            &self.hub,
            channel,
            message_ts,
            user,
            action_id,
        );
    }

    /// The bot's messages in `channel`, in order.
    pub fn bot_messages(&self, channel: &str) -> Vec<Posted> {
        lock(&self.platform)
            .messages
            .iter()
            .filter(|m| m.by_bot && m.channel == channel)
            .cloned()
            .collect()
    }

    /// Sends a Socket Mode frame to every open connection.
    pub fn push(&self, frame: Value) -> usize {
        self.hub.broadcast(WsMessage::Text(frame.to_string()))
    }

    /// Envelope ids the client acknowledged, in order.
    pub fn acks(&self) -> Vec<String> {
        self.hub
            .received()
            .iter()
            .filter_map(|f| f.message.json())
            .filter_map(|v| v["envelope_id"].as_str().map(str::to_owned))
            .collect()
    }
}

fn next_ts(p: &mut Platform) -> String {
    p.seq += 1;
    format!("1700000000.{:06}", p.seq)
}

fn route_of(parts: &Parts) -> Option<String> {
    let path = parts.uri.path();
    if let Some(method) = path.strip_prefix("/api/") {
        return Some(method.to_owned());
    }
    if path.starts_with("/upload/") {
        return Some("upload".into());
    }
    if path.starts_with("/files/") {
        return Some("file".into());
    }
    if path.starts_with("/link") {
        return Some("socket".into());
    }
    None
}

fn ok(mut body: Value) -> Response {
    body["ok"] = json!(true);
    axum::Json(body).into_response()
}

fn fail(code: &str) -> Response {
    axum::Json(json!({"ok": false, "error": code})).into_response()
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
}

/// Arguments as Slack reads them: a JSON body or a form.
fn args(headers: &HeaderMap, body: &[u8]) -> Result<(Value, bool), &'static str> {
    let ct = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if ct.starts_with("application/json") {
        return serde_json::from_slice(body)
            .map(|v| (v, true))
            .map_err(|_| "invalid_json");
    }
    if ct.starts_with("application/x-www-form-urlencoded") {
        let text = String::from_utf8_lossy(body).to_string();
        let mut map = serde_json::Map::new();
        for pair in text.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            map.insert(decode(k), json!(decode(v)));
        }
        return Ok((Value::Object(map), false));
    }
    Err("invalid_form_data")
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("00");
                out.push(u8::from_str_radix(hex, 16).unwrap_or(b'?'));
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn known_channel(channel: &str, p: &Platform) -> bool {
    [GENERAL, PRIVATE, DM_ANN, MPIM].contains(&channel) || p.dms.values().any(|d| d == channel)
}

fn is_ts(ts: &str) -> bool {
    let mut parts = ts.split('.');
    matches!((parts.next(), parts.next(), parts.next()),
        (Some(a), Some(b), None) if !a.is_empty() && !b.is_empty()
            && a.chars().all(|c| c.is_ascii_digit()) && b.chars().all(|c| c.is_ascii_digit()))
}

/// Block Kit as strict as Slack for what the channel sends.
fn valid_blocks(blocks: &Value) -> bool {
    let Some(blocks) = blocks.as_array() else {
        return false;
    };
    blocks.len() <= 50
        && blocks.iter().all(|b| match b["type"].as_str() {
            Some("section") => {
                let text = b["text"]["text"].as_str().unwrap_or_default();
                b["text"]["type"] == "mrkdwn" && !text.is_empty() && text.chars().count() <= 3000
            }
            Some("actions") => b["elements"].as_array().is_some_and(|els| {
                !els.is_empty()
                    && els.len() <= 25
                    && els.iter().all(|e| {
                        let label = e["text"]["text"].as_str().unwrap_or_default();
                        let id = e["action_id"].as_str().unwrap_or_default();
                        e["type"] == "button"
                            && e["text"]["type"] == "plain_text"
                            && !label.is_empty()
                            && label.chars().count() <= 75
                            && !id.is_empty()
                            && id.len() <= 255
                    })
            }),
            _ => false,
        })
}

async fn api(
    State(platform): State<Plat>,
    Path(method): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let token = bearer(&headers);
    let expected = if method == "apps.connections.open" {
        APP_TOKEN
    } else {
        BOT_TOKEN
    };
    match token {
        None => return fail("not_authed"),
        Some(t) if t != expected => {
            return fail(
                if t.starts_with("xapp-")
                    || t.starts_with("xoxb-") && method == "apps.connections.open"
                {
                    "not_allowed_token_type"
                } else {
                    "invalid_auth"
                },
            );
        }
        Some(_) => {}
    }
    let (a, is_json) = match args(&headers, &body) {
        Ok(a) => a,
        Err(code) => return fail(code),
    };
    let s = |k: &str| a[k].as_str().unwrap_or_default().to_owned();
    let mut p = lock(&platform);
    match method.as_str() {
        "auth.test" => ok(
            json!({"url": "https://fake.slack.com/", "team": "Fake", "user": "claw",
                                  "team_id": TEAM, "user_id": BOT_USER, "bot_id": BOT_ID}),
        ),
        "apps.connections.open" => {
            p.tickets += 1;
            let url = format!(
                "{}/link/?ticket=t{}",
                p.base_url.replace("http://", "ws://"),
                p.tickets
            );
            ok(json!({ "url": url }))
        }
        "chat.postMessage" => {
            let channel = s("channel");
            if !known_channel(&channel, &p) {
                return fail("channel_not_found");
            }
            let text = s("text");
            if text.chars().count() > MAX_TEXT {
                return fail("msg_too_long");
            }
            if !a["blocks"].is_null() && !valid_blocks(&a["blocks"]) {
                return fail("invalid_blocks");
            }
            if text.trim().is_empty() && a["blocks"].is_null() {
                return fail("no_text");
            }
            let thread_ts = a["thread_ts"].as_str().map(str::to_owned);
            if thread_ts.as_deref().is_some_and(|t| !is_ts(t)) {
                return fail("invalid_thread_ts");
            }
            let ts = next_ts(&mut p);
            p.messages.push(Posted {
                channel: channel.clone(),
                ts: ts.clone(),
                thread_ts,
                text: text.clone(),
                blocks: (!a["blocks"].is_null()).then(|| a["blocks"].clone()),
                by_bot: true,
            });
            ok(
                json!({"channel": channel, "ts": ts, "message": {"text": text, "user": BOT_USER, "ts": ts}}),
            )
        }
        "chat.update" => {
            let (channel, ts) = (s("channel"), s("ts"));
            if !known_channel(&channel, &p) {
                return fail("channel_not_found");
            }
            if !a["blocks"].is_null() && !valid_blocks(&a["blocks"]) {
                return fail("invalid_blocks");
            }
            let Some(m) = p
                .messages
                .iter_mut()
                .find(|m| m.channel == channel && m.ts == ts)
            else {
                return fail("message_not_found");
            };
            if !m.by_bot {
                return fail("cant_update_message");
            }
            m.text = s("text");
            m.blocks = (!a["blocks"].is_null()).then(|| a["blocks"].clone());
            ok(json!({"channel": channel, "ts": ts, "text": m.text}))
        }
        "reactions.add" => {
            let (channel, ts, name) = (s("channel"), s("timestamp"), s("name"));
            if !known_channel(&channel, &p) {
                return fail("channel_not_found");
            }
            if !p
                .messages
                .iter()
                .any(|m| m.channel == channel && m.ts == ts)
            {
                return fail("message_not_found");
            }
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_+-'".contains(c))
            {
                return fail("invalid_name");
            }
            let entry = (channel, ts, name);
            if p.reactions.contains(&entry) {
                return fail("already_reacted");
            }
            p.reactions.push(entry);
            ok(json!({}))
        }
        "users.info" => {
            let user = s("user");
            let (display, real) = match user.as_str() {
                ANN => ("ann", "Ann Lee"),
                BOB => ("", "Bob Stone"),
                _ => return fail("user_not_found"),
            };
            ok(
                json!({"user": {"id": user, "team_id": TEAM, "name": display, "real_name": real,
                               "profile": {"display_name": display, "real_name": real}}}),
            )
        }
        "conversations.open" => {
            let user = s("users");
            if ![ANN, BOB].contains(&user.as_str()) {
                return fail("user_not_found");
            }
            let id = if user == ANN {
                DM_ANN.to_owned()
            } else {
                p.dms
                    .entry(user.clone())
                    .or_insert_with(|| format!("D0{}", &user[2..]))
                    .clone()
            };
            ok(json!({"channel": {"id": id}}))
        }
        "files.getUploadURLExternal" => {
            // Slack takes this method's arguments as a form, not JSON.
            if is_json {
                return fail("invalid_arguments");
            }
            let name = s("filename");
            let length: usize = s("length").parse().unwrap_or(0);
            if name.is_empty() || length == 0 {
                return fail("invalid_arguments");
            }
            p.seq += 1;
            let file_id = format!("F0{}", p.seq);
            p.uploads.insert(file_id.clone(), (name, length, None));
            let upload_url = format!("{}/upload/{file_id}", p.base_url);
            ok(json!({"upload_url": upload_url, "file_id": file_id}))
        }
        "files.completeUploadExternal" => {
            let channel = s("channel_id");
            if !known_channel(&channel, &p) {
                return fail("channel_not_found");
            }
            let Some(files) = a["files"].as_array() else {
                return fail("invalid_arguments");
            };
            let mut done = Vec::new();
            for f in files {
                let id = f["id"].as_str().unwrap_or_default();
                let Some((name, _, Some(data))) = p.uploads.get(id).cloned() else {
                    return fail("file_not_found");
                };
                done.push(FileShare {
                    file_id: id.into(),
                    name,
                    data,
                    channel: channel.clone(),
                    thread_ts: a["thread_ts"].as_str().map(str::to_owned),
                });
            }
            let ids: Vec<Value> = done
                .iter()
                .map(|d| json!({"id": d.file_id, "title": d.name}))
                .collect();
            p.shares.extend(done);
            ok(json!({ "files": ids }))
        }
        _ => fail("unknown_method"),
    }
}

async fn upload(
    State(platform): State<Plat>,
    Path(file_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    // The upload URL is pre-signed: a token has no business there.
    if headers.contains_key("authorization") {
        return (StatusCode::BAD_REQUEST, "unexpected authorization").into_response();
    }
    let mut p = lock(&platform);
    let Some(entry) = p.uploads.get_mut(&file_id) else {
        return (StatusCode::NOT_FOUND, "no such upload").into_response();
    };
    if entry.1 != body.len() {
        return (StatusCode::BAD_REQUEST, "length mismatch").into_response();
    }
    entry.2 = Some(body.to_vec());
    (StatusCode::OK, format!("OK - {}", body.len())).into_response()
}

async fn file(
    State(platform): State<Plat>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    if bearer(&headers) != Some(BOT_TOKEN) {
        return (StatusCode::FORBIDDEN, "login required").into_response();
    }
    match lock(&platform).hosted.get(&name) {
        Some(data) => data.clone().into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

// ---- signing Events API requests -------------------------------------------------------------

pub fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

pub fn signature(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("key");
    mac.update(format!("v0:{timestamp}:").as_bytes());
    mac.update(body);
    let bytes = mac.finalize().into_bytes();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("v0={hex}")
}

/// An Events API `event_callback` around `event`.
pub fn callback(event_id: &str, event: Value) -> Value {
    json!({
        "token": "XXYYZZ", "team_id": TEAM, "api_app_id": "A0APP",
        "event": event, "type": "event_callback", "event_id": event_id,
        "event_time": 1_700_000_000, "authorizations": [{"team_id": TEAM, "user_id": BOT_USER, "is_bot": true}],
        "event_context": "4-eyJldCI6Im1lc3NhZ2UifQ"
    })
}

/// A user writes in `channel` (`channel_type` `im`, `channel`, `group` or `mpim`;
/// `thread_ts` for a reply in a thread): the message is stored and delivered over Socket
/// Mode as an `events_api` envelope, as Slack does. Returns its ts.
fn say(
    platform: &Plat,
    hub: &WsHub,
    channel: &str,
    channel_type: &str,
    user: &str,
    text: &str,
    thread_ts: Option<&str>,
) -> String {
    let ts = {
        let mut p = lock(platform);
        let ts = next_ts(&mut p);
        p.messages.push(Posted {
            channel: channel.into(),
            ts: ts.clone(),
            thread_ts: thread_ts.map(str::to_owned),
            text: text.into(),
            blocks: None,
            by_bot: false,
        });
        ts
    };
    let mut event = json!({
        "type": "message", "text": text, "user": user, "ts": ts, "team": TEAM,
        "channel": channel, "event_ts": ts, "channel_type": channel_type,
    });
    if let Some(t) = thread_ts {
        event["thread_ts"] = json!(t);
    }
    let envelope = json!({
        "envelope_id": format!("env-{ts}"),
        "payload": callback(&format!("Ev{}", ts.replace('.', "")), event),
        "type": "events_api", "accepts_response_payload": false,
        "retry_attempt": 0, "retry_reason": "",
    });
    hub.broadcast(WsMessage::Text(envelope.to_string()));
    ts
}

/// A user clicks button `action_id` on the bot's message `message_ts` in `channel`,
/// delivered over Socket Mode as an `interactive` envelope.
fn click(
    platform: &Plat,
    hub: &WsHub,
    channel: &str,
    message_ts: &str,
    user: &str,
    action_id: &str,
) {
    let thread_ts = lock(platform)
        .messages
        .iter()
        .find(|m| m.channel == channel && m.ts == message_ts)
        .and_then(|m| m.thread_ts.clone());
    let mut message = json!({"type": "message", "user": BOT_USER, "ts": message_ts, "text": ""});
    if let Some(t) = thread_ts {
        message["thread_ts"] = json!(t);
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros());
    let payload = json!({
        "type": "block_actions",
        "user": {"id": user, "username": user.to_lowercase(), "name": user.to_lowercase(), "team_id": TEAM},
        "api_app_id": "A0APP", "token": "XXYYZZ",
        "container": {"type": "message", "message_ts": message_ts, "channel_id": channel, "is_ephemeral": false},
        "trigger_id": "1.2.3", "team": {"id": TEAM, "domain": "fake"},
        "channel": {"id": channel, "name": channel},
        "message": message,
        "actions": [{"action_id": action_id, "block_id": "b", "type": "button",
                     "text": {"type": "plain_text", "text": action_id}, "value": action_id,
                     "action_ts": format!("{}.{:06}", now / 1_000_000, now % 1_000_000)}],
    });
    let envelope = json!({
        "envelope_id": format!("click-{now}"), "payload": payload,
        "type": "interactive", "accepts_response_payload": false,
    });
    hub.broadcast(WsMessage::Text(envelope.to_string()));
}

/// The control API: `POST /control/say` `{"channel", "channel_type", "user", "text",
/// "thread_ts"?}` → `{"ts"}`; `POST /control/click` `{"channel", "ts", "user",
/// "action_id"}`; `GET /control/sent` → the bot's messages (`channel`, `ts`, `thread_ts`,
/// `text`, `buttons`: `[{"label", "action_id"}]`), and the files it shared.
fn control(platform: &Plat, hub: &WsHub) -> Router<Plat> {
    let (p1, h1) = (Arc::clone(platform), hub.clone());
    let (p2, h2) = (Arc::clone(platform), hub.clone());
    let p3 = Arc::clone(platform);
    Router::new()
        .route(
            "/control/say",
            post(move |axum::Json(v): axum::Json<Value>| async move {
                let s = |k: &str| v[k].as_str().unwrap_or_default().to_owned();
                let ts = say(
                    &p1,
                    &h1,
                    &s("channel"),
                    &s("channel_type"),
                    &s("user"),
                    &s("text"),
                    v["thread_ts"].as_str(),
                );
                axum::Json(json!({ "ts": ts }))
            }),
        )
        .route(
            "/control/click",
            post(move |axum::Json(v): axum::Json<Value>| async move {
                let s = |k: &str| v[k].as_str().unwrap_or_default().to_owned();
                click(&p2, &h2, &s("channel"), &s("ts"), &s("user"), &s("action_id"));
                axum::Json(json!({}))
            }),
        )
        .route(
            "/control/sent",
            get(move || async move {
                let p = lock(&p3);
                let messages: Vec<Value> = p
                    .messages
                    .iter()
                    .filter(|m| m.by_bot)
                    .map(|m| {
                        let buttons: Vec<Value> = m
                            .blocks
                            .iter()
                            .flat_map(|b| b.as_array().cloned().unwrap_or_default())
                            .flat_map(|b| b["elements"].as_array().cloned().unwrap_or_default())
                            .map(|e| json!({"label": e["text"]["text"], "action_id": e["action_id"]}))
                            .collect();
                        json!({"channel": m.channel, "ts": m.ts, "thread_ts": m.thread_ts,
                               "text": m.text, "buttons": buttons})
                    })
                    .collect();
                let files: Vec<Value> = p
                    .shares
                    .iter()
                    .map(|f| json!({"channel": f.channel, "name": f.name, "bytes": f.data.len(),
                                    "thread_ts": f.thread_ts}))
                    .collect();
                axum::Json(json!({ "messages": messages, "files": files }))
            }),
        )
}
