//! A fake Discord on 127.0.0.1: the REST API under `/api/v10`, the gateway at `/gateway`,
//! resumes at `/resume`, as strict as Discord for what NanoClaw uses (the `Bot` token, the
//! 2,000-character limit, action rows and `custom_id`s, unknown channels and messages,
//! nonces, interaction tokens), with Discord's rate-limit headers and, through the
//! fake-platform harness, scripted 429s, 5xx and dropped connections.
//!
//! The gateway keeps each session's events, so a client that resumes with a session id and
//! a sequence number gets what it missed, as Discord does. A control API under `/control/`
//! (used by the `fake-discord` CLI) plays users: `POST /control/send`, `POST /control/click`,
//! `GET /control/sent`.
#![allow(clippy::result_large_err)] // the fake answers with its error responses
#![allow(clippy::missing_panics_doc)] // a test fake: a poisoned lock or bad fixture panics

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{FromRequest as _, Multipart, Path, State as AxState};
use axum::http::{HeaderMap, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post, put};
use nanoclaw_fake_platform::{ConnId, FakeServer, Harness, WsHub, WsMessage};
use serde_json::{Value, json};

pub const TOKEN: &str = "MTEwMDAwMDAwMDAwMDAwMDAwMQ.GfakeX.secretsecretsecretsecretsecretsecre";
pub const BOT_ID: &str = "1100000000000000001";
pub const BOT_NAME: &str = "clawbot";
pub const ANN: &str = "80351110224678912";
pub const BOB: &str = "1200000000000000002";
pub const DM_CHANNEL: &str = "1300000000000000001";
pub const GUILD: &str = "1400000000000000001";
pub const GUILD_CHANNEL: &str = "1400000000000000010";
pub const THREAD: &str = "1400000000000000020";
/// What the fake gateway announces in Hello (short, so tests see heartbeats).
pub const HEARTBEAT_MS: u64 = 400;

pub fn fixture(name: &str) -> Value {
    let path = format!("{}/fixtures/{name}.json", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// A message the fake stored.
#[derive(Debug, Clone)]
pub struct Posted {
    pub id: String,
    pub channel_id: String,
    pub content: String,
    pub components: Value,
    pub reference: Option<String>,
    pub files: Vec<(String, Vec<u8>)>,
    pub nonce: Option<String>,
    pub allowed_mentions: Value,
}

#[derive(Default)]
struct Gateway {
    /// Session id → its events (seq, payload), in order.
    sessions: BTreeMap<String, Vec<(u64, Value)>>,
    invalid: HashSet<String>,
    /// The session and connection events go to.
    current: Option<(String, bool, ConnId)>,
    next_session: u32,
    no_ack: bool,
    identifies: Vec<Value>,
    resumes: Vec<Value>,
}

#[derive(Default)]
struct State {
    addr: String,
    channels: HashSet<String>,
    users: HashSet<String>,
    dms: HashMap<String, String>,
    messages: Vec<Posted>,
    next_id: u64,
    reactions: Vec<(String, String, String)>,
    typing: Vec<String>,
    interactions: HashMap<String, String>,
    acks: Vec<(String, u64)>,
    /// Bucket headers for the next create-message answers: (remaining, reset_after).
    bucket: Option<(u64, f64)>,
    gw: Gateway,
}

/// The fake and its handles.
pub struct FakeDiscord {
    pub server: FakeServer,
    pub harness: Harness,
    pub gateway: WsHub,
    pub resume: WsHub,
    state: Arc<Mutex<State>>,
}

type Shared = Arc<Mutex<State>>;

fn lock(state: &Shared) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

fn route_name(path: &str, method: &str) -> Option<String> {
    let rest = path.strip_prefix("/api/v10/")?;
    let segments: Vec<&str> = rest.split('/').collect();
    let name = match (method, segments.as_slice()) {
        ("GET", ["users", "@me"]) => "get_current_user",
        ("GET", ["gateway", "bot"]) => "get_gateway_bot",
        ("POST", ["users", "@me", "channels"]) => "create_dm",
        ("POST", ["channels", _, "messages"]) => "create_message",
        ("PATCH", ["channels", _, "messages", _]) => "edit_message",
        ("PUT", ["channels", _, "messages", _, "reactions", _, "@me"]) => "create_reaction",
        ("POST", ["channels", _, "typing"]) => "trigger_typing",
        ("POST", ["interactions", _, _, "callback"]) => "interaction_callback",
        _ => return None,
    };
    Some(name.to_owned())
}

fn error(status: u16, code: u64, message: &str) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    (
        status,
        axum::Json(json!({"message": message, "code": code})),
    )
        .into_response()
}

fn form_error(field: &str, message: &str) -> Response {
    let body = json!({
        "message": "Invalid Form Body",
        "code": 50035,
        "errors": {field: {"_errors": [{"code": "BASE_TYPE_INVALID", "message": message}]}}
    });
    (StatusCode::BAD_REQUEST, axum::Json(body)).into_response()
}

fn authorized(headers: &HeaderMap) -> Result<(), Response> {
    let expected = format!("Bot {TOKEN}");
    match headers.get("authorization").and_then(|v| v.to_str().ok()) {
        Some(v) if v == expected => Ok(()),
        _ => Err(error(401, 0, "401: Unauthorized")),
    }
}

fn bot_user() -> Value {
    json!({"id": BOT_ID, "username": BOT_NAME, "global_name": null, "discriminator": "0",
           "avatar": null, "bot": true, "verified": true, "flags": 0})
}

/// Discord's checks on `components`: action rows of 1–5 buttons, custom_id 1–100
/// characters, label up to 80.
fn check_components(components: &Value) -> Result<(), Response> {
    let Some(rows) = components.as_array() else {
        return Err(form_error("components", "must be an array"));
    };
    if rows.len() > 5 {
        return Err(form_error("components", "Must be 5 or fewer in length."));
    }
    for row in rows {
        let buttons = row["components"].as_array().cloned().unwrap_or_default();
        if row["type"] != 1 || buttons.is_empty() || buttons.len() > 5 {
            return Err(form_error(
                "components",
                "action rows hold 1 to 5 components",
            ));
        }
        for button in buttons {
            let id = button["custom_id"].as_str().unwrap_or_default();
            let label = button["label"].as_str().unwrap_or_default();
            if button["type"] != 2
                || id.is_empty()
                || id.chars().count() > 100
                || label.chars().count() > 80
            {
                return Err(form_error("components", "invalid button"));
            }
        }
    }
    Ok(())
}

fn check_content(content: &str) -> Result<(), Response> {
    // Discord counts as JavaScript does: UTF-16 code units.
    if content.encode_utf16().count() > 2000 {
        return Err(form_error("content", "Must be 2000 or fewer in length."));
    }
    Ok(())
}

impl State {
    fn snowflake(&mut self) -> String {
        self.next_id += 1;
        (1_600_000_000_000_000_000u64 + self.next_id).to_string()
    }

    fn message_json(&self, m: &Posted) -> Value {
        json!({
            "id": m.id, "type": if m.reference.is_some() { 19 } else { 0 }, "channel_id": m.channel_id,
            "author": bot_user(), "content": m.content, "components": m.components,
            "attachments": m.files.iter().map(|(n, d)| json!({"filename": n, "size": d.len()})).collect::<Vec<_>>(),
            "mentions": [], "mention_roles": [], "embeds": [], "pinned": false, "tts": false,
            "mention_everyone": false, "timestamp": "2026-12-03T12:00:00.000000+00:00",
            "edited_timestamp": null, "flags": 0
        })
    }
}

fn with_bucket(state: &mut State, response: Response) -> Response {
    let mut response = response;
    let (remaining, reset_after) = state.bucket.unwrap_or((4, 1.0));
    let headers = response.headers_mut();
    headers.insert("x-ratelimit-limit", "5".parse().expect("header"));
    headers.insert(
        "x-ratelimit-remaining",
        remaining.to_string().parse().expect("header"),
    );
    headers.insert(
        "x-ratelimit-reset-after",
        reset_after.to_string().parse().expect("header"),
    );
    headers.insert("x-ratelimit-bucket", "abcd1234".parse().expect("header"));
    response
}

async fn create_message(
    AxState(state): AxState<Shared>,
    Path(channel): Path<String>,
    request: Request<Body>,
) -> Response {
    if let Err(e) = authorized(request.headers()) {
        return e;
    }
    let multipart = request
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("multipart/form-data"));
    let (payload, files) = if multipart {
        let mut form = match Multipart::from_request(request, &()).await {
            Ok(form) => form,
            Err(e) => return form_error("body", &e.to_string()),
        };
        let mut payload = Value::Null;
        let mut files = Vec::new();
        while let Ok(Some(field)) = form.next_field().await {
            let name = field.name().unwrap_or_default().to_owned();
            let file_name = field.file_name().map(str::to_owned);
            let data: Bytes = field.bytes().await.unwrap_or_default();
            if name == "payload_json" {
                payload = serde_json::from_slice(&data).unwrap_or(Value::Null);
            } else if name.starts_with("files[") {
                files.push((file_name.unwrap_or_default(), data.to_vec()));
            } else {
                return form_error(&name, "unknown field");
            }
        }
        if payload.is_null() {
            return form_error("payload_json", "missing");
        }
        (payload, files)
    } else {
        let bytes = axum::body::to_bytes(request.into_body(), 1 << 20)
            .await
            .unwrap_or_default();
        match serde_json::from_slice::<Value>(&bytes) {
            Ok(v) if v.is_object() => (v, Vec::new()),
            _ => return error(400, 50109, "The request body contains invalid JSON."),
        }
    };
    let mut state = lock(&state);
    if !state.channels.contains(&channel) {
        return error(404, 10003, "Unknown Channel");
    }
    let content = payload["content"].as_str().unwrap_or_default().to_owned();
    if let Err(e) = check_content(&content) {
        return e;
    }
    if files.len() > 10 {
        return form_error("files", "Must be 10 or fewer in length.");
    }
    if !files.is_empty() {
        let listed = payload["attachments"].as_array().map_or(0, Vec::len);
        if listed != files.len() {
            return form_error("attachments", "does not match the files");
        }
    }
    let components = payload.get("components").cloned().unwrap_or(json!([]));
    if let Err(e) = check_components(&components) {
        return e;
    }
    if content.is_empty() && files.is_empty() && components.as_array().is_none_or(Vec::is_empty) {
        return error(400, 50006, "Cannot send an empty message");
    }
    let nonce = payload["nonce"].as_str().map(str::to_owned);
    if let Some(nonce) = &nonce {
        if nonce.chars().count() > 25 {
            return form_error("nonce", "Must be 25 or fewer in length.");
        }
        if payload["enforce_nonce"] == true
            && let Some(first) = state
                .messages
                .iter()
                .find(|m| m.channel_id == channel && m.nonce.as_ref() == Some(nonce))
        {
            let body = state.message_json(first);
            let response = axum::Json(body).into_response();
            return with_bucket(&mut state, response);
        }
    }
    let posted = Posted {
        id: state.snowflake(),
        channel_id: channel,
        content,
        components,
        reference: payload["message_reference"]["message_id"]
            .as_str()
            .map(str::to_owned),
        files,
        nonce,
        allowed_mentions: payload["allowed_mentions"].clone(),
    };
    let body = state.message_json(&posted);
    state.messages.push(posted);
    let response = axum::Json(body).into_response();
    with_bucket(&mut state, response)
}

async fn edit_message(
    AxState(state): AxState<Shared>,
    Path((channel, id)): Path<(String, String)>,
    headers: HeaderMap,
    axum::Json(payload): axum::Json<Value>,
) -> Response {
    if let Err(e) = authorized(&headers) {
        return e;
    }
    let mut state = lock(&state);
    if !state.channels.contains(&channel) {
        return error(404, 10003, "Unknown Channel");
    }
    let content = payload["content"].as_str().unwrap_or_default().to_owned();
    if let Err(e) = check_content(&content) {
        return e;
    }
    if let Some(components) = payload.get("components")
        && let Err(e) = check_components(components)
    {
        return e;
    }
    let Some(index) = state
        .messages
        .iter()
        .position(|m| m.channel_id == channel && m.id == id)
    else {
        return error(404, 10008, "Unknown Message");
    };
    state.messages[index].content = content;
    if let Some(components) = payload.get("components") {
        state.messages[index].components = components.clone();
    }
    let body = state.message_json(&state.messages[index]);
    axum::Json(body).into_response()
}

async fn create_reaction(
    AxState(state): AxState<Shared>,
    Path((channel, id, emoji)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Err(e) = authorized(&headers) {
        return e;
    }
    let mut state = lock(&state);
    if !state.channels.contains(&channel) {
        return error(404, 10003, "Unknown Channel");
    }
    if !state
        .messages
        .iter()
        .any(|m| m.channel_id == channel && m.id == id)
    {
        return error(404, 10008, "Unknown Message");
    }
    if emoji.is_empty() || emoji.is_ascii() && !emoji.contains(':') {
        return error(400, 10014, "Unknown Emoji");
    }
    state.reactions.push((channel, id, emoji));
    StatusCode::NO_CONTENT.into_response()
}

async fn trigger_typing(
    AxState(state): AxState<Shared>,
    Path(channel): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(e) = authorized(&headers) {
        return e;
    }
    let mut state = lock(&state);
    if !state.channels.contains(&channel) {
        return error(404, 10003, "Unknown Channel");
    }
    state.typing.push(channel);
    StatusCode::NO_CONTENT.into_response()
}

async fn create_dm(
    AxState(state): AxState<Shared>,
    headers: HeaderMap,
    axum::Json(payload): axum::Json<Value>,
) -> Response {
    if let Err(e) = authorized(&headers) {
        return e;
    }
    let mut state = lock(&state);
    let Some(user) = payload["recipient_id"].as_str().map(str::to_owned) else {
        return form_error("recipient_id", "required");
    };
    if !state.users.contains(&user) {
        return error(404, 10013, "Unknown User");
    }
    let id = match state.dms.get(&user) {
        Some(id) => id.clone(),
        None => {
            let id = state.snowflake();
            state.dms.insert(user.clone(), id.clone());
            state.channels.insert(id.clone());
            id
        }
    };
    axum::Json(
        json!({"id": id, "type": 1, "last_message_id": null, "flags": 0,
                      "recipients": [{"id": user, "username": "someone", "discriminator": "0"}]}),
    )
    .into_response()
}

async fn interaction_callback(
    AxState(state): AxState<Shared>,
    Path((id, token)): Path<(String, String)>,
    axum::Json(payload): axum::Json<Value>,
) -> Response {
    let mut state = lock(&state);
    if state.interactions.get(&id) != Some(&token) {
        return error(404, 10062, "Unknown interaction");
    }
    if state.acks.iter().any(|(acked, _)| *acked == id) {
        return error(400, 40060, "Interaction has already been acknowledged.");
    }
    let Some(kind) = payload["type"].as_u64() else {
        return form_error("type", "required");
    };
    state.acks.push((id, kind));
    StatusCode::NO_CONTENT.into_response()
}

fn router(state: Shared) -> Router {
    let me = get(|headers: HeaderMap| async move {
        match authorized(&headers) {
            Ok(()) => axum::Json(bot_user()).into_response(),
            Err(e) => e,
        }
    });
    let gateway_state = state.clone();
    let gateway_bot = get(move |headers: HeaderMap| {
        let state = gateway_state.clone();
        async move {
            if let Err(e) = authorized(&headers) {
                return e;
            }
            let url = format!("ws://{}/gateway", lock(&state).addr);
            axum::Json(json!({"url": url, "shards": 1, "session_start_limit":
                {"total": 1000, "remaining": 999, "reset_after": 14_400_000, "max_concurrency": 1}}))
            .into_response()
        }
    });
    Router::new()
        .route("/api/v10/users/@me", me)
        .route("/api/v10/gateway/bot", gateway_bot)
        .route("/api/v10/users/@me/channels", post(create_dm))
        .route("/api/v10/channels/{channel}/messages", post(create_message))
        .route(
            "/api/v10/channels/{channel}/messages/{id}",
            patch(edit_message),
        )
        .route(
            "/api/v10/channels/{channel}/messages/{id}/reactions/{emoji}/@me",
            put(create_reaction),
        )
        .route("/api/v10/channels/{channel}/typing", post(trigger_typing))
        .route(
            "/api/v10/interactions/{id}/{token}/callback",
            post(interaction_callback),
        )
        // The CDN: signed URLs, no token; the content names the file.
        .route(
            "/cdn/{*path}",
            get(|Path(path): Path<String>| async move { format!("content of {path}") }),
        )
        .with_state(state)
}

fn text(value: &Value) -> WsMessage {
    WsMessage::Text(value.to_string())
}

/// The gateway protocol on one hub (`resume` tells which).
fn script(hub: &WsHub, state: &Shared, resume: bool) {
    hub.on_connect(|_| {
        vec![text(
            &json!({"op": 10, "d": {"heartbeat_interval": HEARTBEAT_MS}, "s": null, "t": null}),
        )]
    });
    let (me, state) = (hub.clone(), state.clone());
    hub.on_message(move |conn, frame| {
        let Some(payload) = frame.json() else {
            return Vec::new();
        };
        let mut state = lock(&state);
        let addr = state.addr.clone();
        let gw = &mut state.gw;
        match payload["op"].as_u64() {
            Some(1) if gw.no_ack => Vec::new(),
            Some(1) => vec![text(&json!({"op": 11, "d": null, "s": null, "t": null}))],
            Some(2) => {
                gw.identifies.push(payload.clone());
                let d = &payload["d"];
                if d["token"] != TOKEN {
                    me.close(conn, 4004, "Authentication failed.");
                    return Vec::new();
                }
                let intents = d["intents"].as_u64().unwrap_or(0);
                if intents & (1 << 15) == 0 || intents & (1 << 9) == 0 || intents & (1 << 12) == 0 {
                    me.close(conn, 4013, "Invalid intent(s).");
                    return Vec::new();
                }
                gw.next_session += 1;
                let session = format!("session{}", gw.next_session);
                let mut ready = fixture("ready");
                ready["d"]["session_id"] = json!(session);
                ready["d"]["resume_gateway_url"] = json!(format!("ws://{addr}/resume"));
                gw.sessions
                    .insert(session.clone(), vec![(1, ready.clone())]);
                gw.current = Some((session, resume, conn));
                vec![text(&ready)]
            }
            Some(6) => {
                gw.resumes.push(payload.clone());
                let d = &payload["d"];
                let session = d["session_id"].as_str().unwrap_or_default().to_owned();
                let from = d["seq"].as_u64().unwrap_or(0);
                if d["token"] != TOKEN {
                    me.close(conn, 4004, "Authentication failed.");
                    return Vec::new();
                }
                if gw.invalid.contains(&session) || !gw.sessions.contains_key(&session) {
                    return vec![text(&json!({"op": 9, "d": false, "s": null, "t": null}))];
                }
                gw.current = Some((session.clone(), resume, conn));
                let events = gw.sessions.get_mut(&session).expect("session");
                let mut out: Vec<WsMessage> = events
                    .iter()
                    .filter(|(s, _)| *s > from)
                    .map(|(_, e)| text(e))
                    .collect();
                let seq = events.last().map_or(1, |(s, _)| s + 1);
                let resumed = json!({"op": 0, "t": "RESUMED", "s": seq, "d": {}});
                events.push((seq, resumed.clone()));
                out.push(text(&resumed));
                out
            }
            _ => Vec::new(),
        }
    });
}

/// Sends a dispatch to the current session; `None` when no client ever identified.
fn dispatch(
    state: &Shared,
    gateway: &WsHub,
    resume: &WsHub,
    kind: &str,
    data: Value,
) -> Option<u64> {
    let mut state = lock(state);
    if kind == "INTERACTION_CREATE" {
        let id = data["id"].as_str().unwrap_or_default().to_owned();
        let token = data["token"].as_str().unwrap_or_default().to_owned();
        state.interactions.insert(id, token);
    }
    // Attachments point at the fake's own CDN, never at Discord's.
    let cdn = format!("http://{}/cdn/", state.addr);
    let data: Value = serde_json::from_str(
        &data
            .to_string()
            .replace("https://cdn.discordapp.com/", &cdn)
            .replace("https://media.discordapp.net/", &cdn),
    )
    .unwrap_or(data);
    let (session, on_resume, conn) = state.gw.current.clone()?;
    let events = state.gw.sessions.get_mut(&session)?;
    let seq = events.last().map_or(1, |(s, _)| s + 1);
    let event = json!({"op": 0, "t": kind, "s": seq, "d": data});
    events.push((seq, event.clone()));
    drop(state);
    let hub = if on_resume { resume } else { gateway };
    hub.send(conn, text(&event));
    Some(seq)
}

/// What the control API needs.
#[derive(Clone)]
struct Control {
    state: Shared,
    gateway: WsHub,
    resume: WsHub,
}

fn user_json(id: &str, name: &str) -> Value {
    json!({"id": id, "username": name.to_lowercase().replace(' ', "_"), "global_name": name,
           "discriminator": "0", "avatar": null, "public_flags": 0})
}

/// `POST /control/send`: a user writes. `{"from", "name", "text", "channel"?, "guild"?,
/// "mention"?, "reply_to"?}`; without `channel`, in the user's DM with the bot.
async fn control_send(
    AxState(ctl): AxState<Control>,
    axum::Json(req): axum::Json<Value>,
) -> Response {
    let Some(from) = req["from"].as_str().map(str::to_owned) else {
        return error(400, 0, "`from` (a user id) is required");
    };
    let name = req["name"].as_str().unwrap_or("User").to_owned();
    let mut content = req["text"].as_str().unwrap_or_default().to_owned();
    let mention = req["mention"].as_bool() == Some(true);
    let (message, channel) = {
        let mut state = lock(&ctl.state);
        state.users.insert(from.clone());
        let channel = match req["channel"].as_str() {
            Some(channel) => channel.to_owned(),
            None => match state.dms.get(&from) {
                Some(dm) => dm.clone(),
                None => {
                    let dm = state.snowflake();
                    state.dms.insert(from.clone(), dm.clone());
                    dm
                }
            },
        };
        state.channels.insert(channel.clone());
        if mention {
            content = format!("<@{BOT_ID}> {content}");
        }
        let id = state.snowflake();
        let mut message = json!({
            "id": id, "type": 0, "channel_id": channel, "author": user_json(&from, &name),
            "content": content, "timestamp": "2026-12-03T12:00:00.000000+00:00",
            "edited_timestamp": null, "tts": false, "mention_everyone": false,
            "mentions": if mention { json!([bot_user()]) } else { json!([]) },
            "mention_roles": [], "attachments": [], "embeds": [], "pinned": false, "flags": 0,
            "components": []
        });
        if let Some(guild) = req["guild"].as_str() {
            message["guild_id"] = json!(guild);
            message["member"] =
                json!({"nick": null, "roles": [], "joined_at": "2026-01-01T00:00:00.000000+00:00"});
        }
        if let Some(target) = req["reply_to"].as_str()
            && let Some(original) = state.messages.iter().find(|m| m.id == target)
        {
            message["type"] = json!(19);
            message["message_reference"] = json!({"message_id": target, "channel_id": channel});
            message["referenced_message"] = state.message_json(original);
        }
        (message, channel)
    };
    let id = message["id"].clone();
    match dispatch(
        &ctl.state,
        &ctl.gateway,
        &ctl.resume,
        "MESSAGE_CREATE",
        message,
    ) {
        Some(seq) => {
            axum::Json(json!({"id": id, "channel_id": channel, "seq": seq})).into_response()
        }
        None => error(409, 0, "no client is connected to the gateway yet"),
    }
}

/// `POST /control/click`: a user clicks a button. `{"from", "name", "channel", "message",
/// "custom_id", "guild"?}`.
async fn control_click(
    AxState(ctl): AxState<Control>,
    axum::Json(req): axum::Json<Value>,
) -> Response {
    let (Some(from), Some(channel), Some(message), Some(custom_id)) = (
        req["from"].as_str(),
        req["channel"].as_str(),
        req["message"].as_str(),
        req["custom_id"].as_str(),
    ) else {
        return error(
            400,
            0,
            "`from`, `channel`, `message` and `custom_id` are required",
        );
    };
    let name = req["name"].as_str().unwrap_or("User");
    let (id, interaction) = {
        let mut state = lock(&ctl.state);
        let Some(card) = state
            .messages
            .iter()
            .find(|m| m.id == message && m.channel_id == channel)
        else {
            return error(404, 10008, "Unknown Message");
        };
        let card = state.message_json(card);
        let id = state.snowflake();
        let mut interaction = json!({
            "id": id, "application_id": BOT_ID, "type": 3, "token": format!("token-{id}"),
            "version": 1, "channel_id": channel, "message": card,
            "data": {"custom_id": custom_id, "component_type": 2}
        });
        match req["guild"].as_str() {
            Some(guild) => {
                interaction["guild_id"] = json!(guild);
                interaction["member"] =
                    json!({"user": user_json(from, name), "nick": null, "roles": []});
            }
            None => interaction["user"] = user_json(from, name),
        }
        (id, interaction)
    };
    match dispatch(
        &ctl.state,
        &ctl.gateway,
        &ctl.resume,
        "INTERACTION_CREATE",
        interaction,
    ) {
        Some(seq) => axum::Json(json!({"id": id, "seq": seq})).into_response(),
        None => error(409, 0, "no client is connected to the gateway yet"),
    }
}

/// `GET /control/sent`: what the bot posted, in order.
async fn control_sent(AxState(ctl): AxState<Control>) -> Response {
    let state = lock(&ctl.state);
    let sent: Vec<Value> = state
        .messages
        .iter()
        .map(|m| {
            json!({"id": m.id, "channel_id": m.channel_id, "content": m.content,
                   "components": m.components, "reply_to": m.reference,
                   "files": m.files.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>(),
                   "acked": state.acks.len()})
        })
        .collect();
    axum::Json(Value::Array(sent)).into_response()
}

impl FakeDiscord {
    /// A fake on a free port of 127.0.0.1.
    ///
    /// # Panics
    /// When it cannot listen.
    pub fn start() -> Self {
        Self::start_on(0).expect("start the fake Discord")
    }

    /// A fake on `port` of 127.0.0.1 (0 = a free one).
    ///
    /// # Errors
    /// When it cannot listen on the port.
    pub fn start_on(port: u16) -> std::io::Result<Self> {
        let state: Shared = Arc::default();
        {
            let mut s = lock(&state);
            for channel in [DM_CHANNEL, GUILD_CHANNEL, THREAD] {
                s.channels.insert(channel.to_owned());
            }
            for user in [ANN, BOB] {
                s.users.insert(user.to_owned());
            }
        }
        let harness = Harness::new()
            .with_route_key(|parts| route_name(parts.uri.path(), parts.method.as_str()))
            .with_control_prefix("/control/");
        let gateway = WsHub::new();
        let resume = WsHub::new();
        script(&gateway, &state, false);
        script(&resume, &state, true);
        let control = Router::new()
            .route("/control/send", post(control_send))
            .route("/control/click", post(control_click))
            .route("/control/sent", get(control_sent))
            .with_state(Control {
                state: state.clone(),
                gateway: gateway.clone(),
                resume: resume.clone(),
            });
        let router = router(state.clone())
            .merge(control)
            .route("/gateway", gateway.route())
            .route("/gateway/", gateway.route())
            .route("/resume", resume.route())
            .route("/resume/", resume.route());
        let server = FakeServer::start_on(port, "fake-discord", harness.clone(), router)?;
        lock(&state).addr = server.addr().to_string();
        Ok(Self {
            server,
            harness,
            gateway,
            resume,
            state,
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    pub fn api_base_url(&self) -> String {
        format!("{}/api/v10", self.server.base_url())
    }

    pub fn gateway_url(&self) -> String {
        self.server.ws_url("/gateway")
    }

    /// Sends a dispatch to the current session (stored for a resume when nobody is
    /// connected); returns its sequence number.
    ///
    /// # Panics
    /// When no client ever identified.
    pub fn dispatch(&self, kind: &str, data: Value) -> u64 {
        dispatch(&self.state, &self.gateway, &self.resume, kind, data).expect("a gateway session")
    }

    /// Sends a raw payload on the current connection.
    pub fn send_op(&self, payload: Value) {
        let (_, resume, conn) = self.state().gw.current.clone().expect("a session");
        let hub = if resume { &self.resume } else { &self.gateway };
        hub.send(conn, text(&payload));
    }

    /// Drops every connection without a close frame (a network failure).
    pub fn drop_connections(&self) {
        self.gateway.drop_all();
        self.resume.drop_all();
    }

    /// Closes the current connection with a close code.
    pub fn close_current(&self, code: u16) {
        let (_, resume, conn) = self.state().gw.current.clone().expect("a session");
        let hub = if resume { &self.resume } else { &self.gateway };
        hub.close(conn, code, "closed by the test");
    }

    /// The session can no longer be resumed.
    pub fn invalidate_sessions(&self) {
        let mut state = self.state();
        let sessions: Vec<String> = state.gw.sessions.keys().cloned().collect();
        state.gw.invalid.extend(sessions);
    }

    pub fn set_ack_heartbeats(&self, ack: bool) {
        self.state().gw.no_ack = !ack;
    }

    pub fn identifies(&self) -> Vec<Value> {
        self.state().gw.identifies.clone()
    }

    pub fn resumes(&self) -> Vec<Value> {
        self.state().gw.resumes.clone()
    }

    pub fn current_session(&self) -> Option<String> {
        self.state().gw.current.as_ref().map(|(s, _, _)| s.clone())
    }

    pub fn messages(&self) -> Vec<Posted> {
        self.state().messages.clone()
    }

    pub fn reactions(&self) -> Vec<(String, String, String)> {
        self.state().reactions.clone()
    }

    pub fn typing(&self) -> Vec<String> {
        self.state().typing.clone()
    }

    pub fn acks(&self) -> Vec<(String, u64)> {
        self.state().acks.clone()
    }

    pub fn set_bucket(&self, bucket: Option<(u64, f64)>) {
        self.state().bucket = bucket;
    }

    /// Gateway heartbeats (op 1) received, all connections.
    pub fn heartbeats(&self) -> Vec<(ConnId, i64)> {
        let mut beats = Vec::new();
        for hub in [&self.gateway, &self.resume] {
            for frame in hub.received() {
                if frame.message.json().is_some_and(|p| p["op"] == 1) {
                    beats.push((frame.conn, frame.at_ms));
                }
            }
        }
        beats
    }
}
