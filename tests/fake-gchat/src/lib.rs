//! A fake of Google Chat on 127.0.0.1, built on the fake-platform harness:
//!
//! * the JWKS of `chat@system.gserviceaccount.com` (`/jwks`), whose key signs the bearer
//!   tokens of the events the fake makes ([`FakeGchat::bearer`]);
//! * Google's OAuth token endpoint (`/token`, JWT-bearer grant), which checks the service
//!   account's assertion (signature with the account's key, issuer, audience, scope, expiry);
//! * the Chat API under `/v1`: messages create and patch, `spaces:findDirectMessage`,
//!   `spaces:setup`, `media` downloads; as strict as Google about tokens, names, threads,
//!   text length (4,096) and cards.
//!
//! Events are shaped as Google documents them for HTTP endpoint apps ([`FakeGchat::message`]
//! and friends); [`post_event_to`] POSTs one to a webhook URL as Google does.

use std::collections::HashMap;
use std::io::{Read as _, Write as _};
use std::sync::{Arc, Mutex, MutexGuard};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, RawQuery, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use nanoclaw_fake_platform::jwt::{TestKey, unix_now, verify_rs256};
use nanoclaw_fake_platform::{FakeServer, Harness};
use serde_json::{Value, json};

pub use nanoclaw_fake_platform::jwt;

pub const PROJECT_NUMBER: &str = "123456789012";
pub const ISSUER: &str = "chat@system.gserviceaccount.com";
pub const KID: &str = "fake-gchat-signing-key";
pub const CLIENT_EMAIL: &str = "nanoclaw-bot@fake-project.iam.gserviceaccount.com";
pub const PRIVATE_KEY_ID: &str = "5b1c4c0a2f0e3d9a8b7c6d5e4f3a2b1c0d9e8f7a";
pub const APP_USER: &str = "users/100000000000000000001";
pub const APP_NAME: &str = "NanoClaw";
pub const ANN: &str = "users/111111111111111111111";
pub const BOB: &str = "users/222222222222222222222";
pub const DM_ANN: &str = "spaces/DMann0AAAAE";
pub const GENERAL: &str = "spaces/AAAAgeneral1";
/// The DM space `spaces:setup` makes for Bob (he has none until then).
pub const DM_BOB: &str = "spaces/DMbob0BBBBE";
pub const MAX_TEXT: usize = 4096;

fn name_of(user: &str) -> &'static str {
    match user {
        ANN => "Ann Example",
        BOB => "Bob Example",
        _ => "Someone",
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Posted {
    pub space: String,
    pub name: String,
    pub thread: String,
    pub text: String,
    pub cards: Option<Value>,
    pub by_app: bool,
    pub edits: u32,
}

impl Posted {
    /// The buttons: (text, action id).
    pub fn buttons(&self) -> Vec<(String, String)> {
        self.cards
            .iter()
            .flat_map(|c| c.as_array().cloned().unwrap_or_default())
            .flat_map(|c| {
                c["card"]["sections"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
            })
            .flat_map(|s| s["widgets"].as_array().cloned().unwrap_or_default())
            .flat_map(|w| {
                w["buttonList"]["buttons"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
            })
            .map(|b| {
                let id = b["onClick"]["action"]["parameters"]
                    .as_array()
                    .and_then(|ps| ps.iter().find(|p| p["key"] == "action_id"))
                    .and_then(|p| p["value"].as_str())
                    .unwrap_or_default()
                    .to_owned();
                (b["text"].as_str().unwrap_or_default().to_owned(), id)
            })
            .collect()
    }
}

#[derive(Default)]
struct Platform {
    seq: u64,
    tokens: Vec<String>,
    messages: Vec<Posted>,
    dm_bob: bool,
    media: HashMap<String, Vec<u8>>,
    base_url: String,
}

type Plat = Arc<Mutex<Platform>>;
type St = (Plat, Arc<TestKey>);

fn lock(p: &Plat) -> MutexGuard<'_, Platform> {
    p.lock().unwrap_or_else(|e| e.into_inner())
}

pub struct FakeGchat {
    server: FakeServer,
    platform: Plat,
    key: TestKey,
}

impl Default for FakeGchat {
    fn default() -> Self {
        Self::start()
    }
}

impl FakeGchat {
    pub fn start() -> Self {
        let harness = Harness::new().with_route_key(route_of);
        let platform = Plat::default();
        // The service account's key: the token endpoint checks assertions with it.
        let account = Arc::new(TestKey::b(PRIVATE_KEY_ID));
        let router = Router::new()
            .route("/jwks", get(jwks))
            .route("/token", post(token))
            .route("/v1/spaces/{space}/messages", post(create))
            .route("/v1/spaces/{space}/messages/{msg}", patch(update))
            .route("/v1/spaces:findDirectMessage", get(find_dm))
            .route("/v1/spaces:setup", post(setup))
            .route("/v1/media/{*resource}", get(media))
            .with_state((Arc::clone(&platform), account));
        let server = FakeServer::start(harness, router).expect("serve the fake");
        lock(&platform).base_url = server.base_url();
        Self {
            server,
            platform,
            key: TestKey::a(KID),
        }
    }

    pub fn base_url(&self) -> String {
        self.server.base_url()
    }

    pub fn api_url(&self) -> String {
        format!("{}/v1", self.base_url())
    }

    pub fn jwks_url(&self) -> String {
        format!("{}/jwks", self.base_url())
    }

    pub fn token_url(&self) -> String {
        format!("{}/token", self.base_url())
    }

    pub fn harness(&self) -> &Harness {
        self.server.harness()
    }

    /// The service account's JSON key, as Google's console downloads it (one line).
    pub fn credentials(&self) -> String {
        json!({
            "type": "service_account",
            "project_id": "fake-project",
            "private_key_id": PRIVATE_KEY_ID,
            "private_key": TestKey::pem('b'),
            "client_email": CLIENT_EMAIL,
            "client_id": "109876543210987654321",
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": self.token_url(),
            "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
            "client_x509_cert_url": "https://www.googleapis.com/robot/v1/metadata/x509/nanoclaw-bot%40fake-project.iam.gserviceaccount.com",
            "universe_domain": "googleapis.com",
        })
        .to_string()
    }

    /// Settings pointing every endpoint at this fake.
    pub fn settings(&self) -> Value {
        json!({
            "credentials": self.credentials(),
            "project_number": PROJECT_NUMBER,
            "api_base_url": self.api_url(),
            "jwks_url": self.jwks_url(),
        })
    }

    /// The claims of the token Google Chat sends with an event.
    pub fn claims(&self, expires_in: i64) -> Value {
        let now = unix_now();
        json!({"aud": PROJECT_NUMBER, "iss": ISSUER, "iat": now - 60, "exp": now + expires_in})
    }

    pub fn bearer(&self) -> String {
        format!("Bearer {}", self.key.sign(&self.claims(3600)))
    }

    pub fn bearer_with(&self, claims: &Value) -> String {
        format!("Bearer {}", self.key.sign(claims))
    }

    fn next(&self) -> u64 {
        let mut p = lock(&self.platform);
        p.seq += 1;
        p.seq
    }

    fn space_json(space: &str) -> Value {
        if space.starts_with("spaces/DM") {
            json!({"name": space, "type": "DM", "spaceType": "DIRECT_MESSAGE", "singleUserBotDm": true})
        } else {
            json!({"name": space, "type": "ROOM", "spaceType": "SPACE", "displayName": "General",
                   "spaceThreadingState": "THREADED_MESSAGES"})
        }
    }

    fn user_json(user: &str) -> Value {
        json!({"name": user, "displayName": name_of(user), "type": "HUMAN",
               "email": format!("{}@example.com", name_of(user).split(' ').next().unwrap_or("x").to_lowercase()),
               "domainId": "fake0domain"})
    }

    /// A user's message (`thread`: in that thread; `mention`: `@NanoClaw` first), stored
    /// and returned as the `MESSAGE` event Google sends.
    pub fn message(
        &self,
        space: &str,
        user: &str,
        text: &str,
        thread: Option<&str>,
        mention: bool,
    ) -> Value {
        let n = self.next();
        let name = format!("{space}/messages/m{n:04}.m{n:04}");
        let thread = thread.map_or_else(|| format!("{space}/threads/t{n:04}"), str::to_owned);
        let full = if mention {
            format!("@{APP_NAME} {text}")
        } else {
            text.to_owned()
        };
        lock(&self.platform).messages.push(Posted {
            space: space.to_owned(),
            name: name.clone(),
            thread: thread.clone(),
            text: full.clone(),
            cards: None,
            by_app: false,
            edits: 0,
        });
        let mut message = json!({
            "name": name,
            "sender": Self::user_json(user),
            "createTime": "2026-12-03T15:00:00.250Z",
            "text": full,
            "argumentText": if mention { format!(" {text}") } else { text.to_owned() },
            "formattedText": full,
            "thread": {"name": thread},
            "space": Self::space_json(space),
        });
        if mention {
            message["annotations"] = json!([{
                "type": "USER_MENTION", "startIndex": 0, "length": APP_NAME.len() + 1,
                "userMention": {"user": {"name": APP_USER, "displayName": APP_NAME, "type": "BOT"}, "type": "MENTION"},
            }]);
        }
        json!({
            "type": "MESSAGE",
            "eventTime": "2026-12-03T15:00:00.300Z",
            "message": message,
            "user": Self::user_json(user),
            "space": Self::space_json(space),
            "configCompleteRedirectUrl": "https://chat.google.com/api/bot_config_complete?token=fake",
            "common": {"userLocale": "en", "hostApp": "CHAT", "timeZone": {"id": "Europe/Berlin", "offset": 3600000}},
        })
    }

    /// An uploaded attachment for a message event, its bytes served by `media.download`.
    pub fn attachment(&self, space: &str, name: &str, mime: &str, data: &[u8]) -> Value {
        let n = self.next();
        let resource = format!("fakeRef{n:04}AbC-_=");
        lock(&self.platform)
            .media
            .insert(resource.clone(), data.to_vec());
        json!({
            "name": format!("{space}/messages/a{n}/attachments/a{n}"),
            "contentName": name,
            "contentType": mime,
            "attachmentDataRef": {"resourceName": resource},
            "source": "UPLOADED_CONTENT",
            "thumbnailUri": "https://chat.google.com/api/get_attachment_url?fake",
            "downloadUri": "https://chat.google.com/api/get_attachment_url?fake",
        })
    }

    /// A user clicks the button with `action` on the app's message `message_name`.
    pub fn click(&self, space: &str, user: &str, message_name: &str, action: &str) -> Value {
        let n = self.next();
        let thread = lock(&self.platform)
            .messages
            .iter()
            .find(|m| m.name == message_name)
            .map(|m| m.thread.clone())
            .unwrap_or_default();
        json!({
            "type": "CARD_CLICKED",
            "eventTime": format!("2026-12-03T15:01:{:02}.000Z", n % 60),
            "message": {"name": message_name, "thread": {"name": thread}, "space": Self::space_json(space),
                        "sender": {"name": APP_USER, "type": "BOT"}},
            "user": Self::user_json(user),
            "space": Self::space_json(space),
            "action": {"actionMethodName": "nanoclaw", "parameters": [{"key": "action_id", "value": action}]},
            "common": {"userLocale": "en", "hostApp": "CHAT", "invokedFunction": "nanoclaw",
                       "parameters": {"action_id": action}},
        })
    }

    /// The app added to (or removed from) a space.
    pub fn membership(&self, kind: &str, space: &str, user: &str) -> Value {
        json!({"type": kind, "eventTime": "2026-12-03T15:00:00.000Z",
               "user": Self::user_json(user), "space": Self::space_json(space)})
    }

    pub fn messages(&self, space: &str) -> Vec<Posted> {
        lock(&self.platform)
            .messages
            .iter()
            .filter(|m| m.space == space)
            .cloned()
            .collect()
    }

    pub fn app_messages(&self, space: &str) -> Vec<Posted> {
        self.messages(space)
            .into_iter()
            .filter(|m| m.by_app)
            .collect()
    }

    pub fn issued(&self) -> usize {
        lock(&self.platform).tokens.len()
    }
}

/// POSTs `event` to `url` with `authorization`, as Google does. Returns status and body.
pub fn post_event_to(url: &str, event: &Value, authorization: Option<&str>) -> (u16, String) {
    let rest = url.strip_prefix("http://").expect("an http:// URL");
    let (authority, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_owned()), |(a, p)| (a, format!("/{p}")));
    let body = event.to_string();
    let mut stream = std::net::TcpStream::connect(authority).expect("connect");
    let auth = authorization.map_or(String::new(), |a| format!("Authorization: {a}\r\n"));
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: {authority}\r\nContent-Type: application/json\r\n\
         {auth}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("write");
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

fn route_of(parts: &Parts) -> Option<String> {
    let path = parts.uri.path();
    Some(
        match (parts.method.as_str(), path) {
            (_, "/jwks") => "jwks",
            (_, "/token") => "token",
            (_, "/v1/spaces:findDirectMessage") => "findDirectMessage",
            (_, "/v1/spaces:setup") => "setup",
            (_, p) if p.starts_with("/v1/media/") => "media",
            ("PATCH", _) => "patch",
            ("POST", p) if p.ends_with("/messages") => "create",
            _ => return None,
        }
        .to_owned(),
    )
}

fn google_error(status: StatusCode, state: &str, message: &str) -> Response {
    (
        status,
        axum::Json(
            json!({"error": {"code": status.as_u16(), "message": message, "status": state}}),
        ),
    )
        .into_response()
}

async fn jwks() -> Response {
    axum::Json(TestKey::jwks(&[&TestKey::a(KID)])).into_response()
}

fn form(body: &[u8]) -> HashMap<String, String> {
    String::from_utf8_lossy(body)
        .split('&')
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| (decode(k), decode(v)))
        .collect()
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

async fn token(State((p, account)): State<St>, body: Bytes) -> Response {
    let f = form(&body);
    let invalid = |d: &str| {
        (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"error": "invalid_grant", "error_description": d})),
        )
            .into_response()
    };
    if f.get("grant_type").map(String::as_str)
        != Some("urn:ietf:params:oauth:grant-type:jwt-bearer")
    {
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"error": "unsupported_grant_type"})),
        )
            .into_response();
    }
    let Some(claims) = f
        .get("assertion")
        .and_then(|a| verify_rs256(&account.public_der(), a))
    else {
        return invalid("Invalid JWT Signature.");
    };
    let base = lock(&p).base_url.clone();
    let now = unix_now();
    let exp = claims["exp"].as_i64().unwrap_or(0);
    if claims["iss"] != CLIENT_EMAIL {
        return invalid("Invalid issuer");
    }
    if claims["aud"] != format!("{base}/token") {
        return invalid(
            "Invalid JWT: Token must be a short-lived token and in a reasonable timeframe",
        );
    }
    if exp < now || exp - claims["iat"].as_i64().unwrap_or(0) > 3600 {
        return invalid(
            "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe.",
        );
    }
    if !claims["scope"].as_str().is_some_and(|s| {
        s.split(' ')
            .any(|x| x == "https://www.googleapis.com/auth/chat.bot")
    }) {
        return invalid("Invalid scope");
    }
    let mut p = lock(&p);
    p.seq += 1;
    let access = format!("ya29.fake-access-{}", p.seq);
    p.tokens.push(access.clone());
    axum::Json(json!({"access_token": access, "expires_in": 3599, "token_type": "Bearer"}))
        .into_response()
}

fn authorized(p: &Platform, headers: &HeaderMap) -> bool {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| p.tokens.iter().any(|x| x == t))
}

fn unauthenticated() -> Response {
    google_error(
        StatusCode::UNAUTHORIZED,
        "UNAUTHENTICATED",
        "Request had invalid authentication credentials.",
    )
}

fn known_space(p: &Platform, space: &str) -> bool {
    space == DM_ANN || space == GENERAL || (space == DM_BOB && p.dm_bob)
}

#[allow(clippy::result_large_err)]
fn check_body(v: &Value) -> Result<(String, Option<Value>), Response> {
    let text = v["text"].as_str().unwrap_or_default().to_owned();
    if text.chars().count() > MAX_TEXT {
        return Err(google_error(
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
            "Message text is too long.",
        ));
    }
    let cards = match v.get("cardsV2") {
        None => None,
        Some(Value::Array(cs)) if cs.is_empty() => None,
        Some(Value::Array(cs)) => {
            let ok = cs.iter().all(|c| {
                c["cardId"].is_string()
                    && c["card"]["sections"].as_array().is_some_and(|ss| {
                        ss.iter().all(|s| {
                            s["widgets"].as_array().is_some_and(|ws| {
                                ws.iter().all(|w| {
                                    w["buttonList"]["buttons"].as_array().is_some_and(|bs| {
                                        bs.iter().all(|b| {
                                            b["text"].as_str().is_some_and(|t| !t.is_empty())
                                                && b["onClick"]["action"]["function"].is_string()
                                        })
                                    })
                                })
                            })
                        })
                    })
            });
            if !ok {
                return Err(google_error(
                    StatusCode::BAD_REQUEST,
                    "INVALID_ARGUMENT",
                    "Invalid card.",
                ));
            }
            Some(Value::Array(cs.clone()))
        }
        Some(_) => {
            return Err(google_error(
                StatusCode::BAD_REQUEST,
                "INVALID_ARGUMENT",
                "cardsV2 must be a list.",
            ));
        }
    };
    if text.is_empty() && cards.is_none() {
        return Err(google_error(
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
            "Message cannot be empty.",
        ));
    }
    Ok((text, cards))
}

async fn create(
    State((p, _)): State<St>,
    Path(space): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut p = lock(&p);
    if !authorized(&p, &headers) {
        return unauthenticated();
    }
    let space = format!("spaces/{space}");
    if !known_space(&p, &space) {
        return google_error(StatusCode::NOT_FOUND, "NOT_FOUND", "Space not found.");
    }
    let Ok(v) = serde_json::from_slice::<Value>(&body) else {
        return google_error(
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
            "Invalid JSON payload.",
        );
    };
    let (text, cards) = match check_body(&v) {
        Ok(x) => x,
        Err(r) => return r,
    };
    p.seq += 1;
    let n = p.seq;
    let thread = match v["thread"]["name"].as_str() {
        Some(t) => {
            if !t.starts_with(&format!("{space}/threads/")) {
                return google_error(
                    StatusCode::BAD_REQUEST,
                    "INVALID_ARGUMENT",
                    "Thread is not in this space.",
                );
            }
            if q.get("messageReplyOption").map(String::as_str)
                != Some("REPLY_MESSAGE_FALLBACK_TO_NEW_THREAD")
                && q.get("messageReplyOption").map(String::as_str) != Some("REPLY_MESSAGE_OR_FAIL")
            {
                // Without a reply option, Chat starts a new thread.
                format!("{space}/threads/b{n:04}")
            } else {
                t.to_owned()
            }
        }
        None => format!("{space}/threads/b{n:04}"),
    };
    let name = format!("{space}/messages/b{n:04}.b{n:04}");
    p.messages.push(Posted {
        space: space.clone(),
        name: name.clone(),
        thread: thread.clone(),
        text: text.clone(),
        cards,
        by_app: true,
        edits: 0,
    });
    axum::Json(json!({"name": name, "text": text, "thread": {"name": thread}, "space": {"name": space},
                      "sender": {"name": APP_USER, "type": "BOT"}, "createTime": "2026-12-03T15:00:01Z"}))
        .into_response()
}

async fn update(
    State((p, _)): State<St>,
    Path((space, msg)): Path<(String, String)>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut p = lock(&p);
    if !authorized(&p, &headers) {
        return unauthenticated();
    }
    if !q.unwrap_or_default().contains("updateMask=") {
        return google_error(
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
            "updateMask is required.",
        );
    }
    let Ok(v) = serde_json::from_slice::<Value>(&body) else {
        return google_error(
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
            "Invalid JSON payload.",
        );
    };
    let (text, cards) = match check_body(&v) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let name = format!("spaces/{space}/messages/{msg}");
    let Some(m) = p.messages.iter_mut().find(|m| m.name == name) else {
        return google_error(StatusCode::NOT_FOUND, "NOT_FOUND", "Message not found.");
    };
    if !m.by_app {
        return google_error(
            StatusCode::FORBIDDEN,
            "PERMISSION_DENIED",
            "The app can only update its own messages.",
        );
    }
    m.text = text;
    m.cards = cards;
    m.edits += 1;
    axum::Json(json!({"name": name})).into_response()
}

async fn find_dm(
    State((p, _)): State<St>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let p = lock(&p);
    if !authorized(&p, &headers) {
        return unauthenticated();
    }
    match q.get("name").map(String::as_str) {
        Some(ANN) => axum::Json(FakeGchat::space_json(DM_ANN)).into_response(),
        Some(BOB) if p.dm_bob => axum::Json(FakeGchat::space_json(DM_BOB)).into_response(),
        Some(u) if u.starts_with("users/") => google_error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            "Direct message space not found.",
        ),
        _ => google_error(
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
            "name must be users/{user}.",
        ),
    }
}

async fn setup(State((p, _)): State<St>, headers: HeaderMap, body: Bytes) -> Response {
    let mut p = lock(&p);
    if !authorized(&p, &headers) {
        return unauthenticated();
    }
    let Ok(v) = serde_json::from_slice::<Value>(&body) else {
        return google_error(
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
            "Invalid JSON payload.",
        );
    };
    if v["space"]["spaceType"] != "DIRECT_MESSAGE" {
        return google_error(
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
            "Only DMs are set up here.",
        );
    }
    match v["memberships"][0]["member"]["name"].as_str() {
        Some(BOB) => {
            p.dm_bob = true;
            axum::Json(FakeGchat::space_json(DM_BOB)).into_response()
        }
        Some(ANN) => axum::Json(FakeGchat::space_json(DM_ANN)).into_response(),
        _ => google_error(StatusCode::NOT_FOUND, "NOT_FOUND", "User not found."),
    }
}

async fn media(
    State((p, _)): State<St>,
    Path(resource): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Response {
    let p = lock(&p);
    if !authorized(&p, &headers) {
        return unauthenticated();
    }
    if q.as_deref() != Some("alt=media") {
        return google_error(
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
            "alt=media is required.",
        );
    }
    match p.media.get(&resource) {
        Some(data) => (StatusCode::OK, data.clone()).into_response(),
        None => google_error(StatusCode::NOT_FOUND, "NOT_FOUND", "Attachment not found."),
    }
}
