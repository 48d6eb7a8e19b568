//! A fake of the Microsoft Bot Framework for Teams on 127.0.0.1, built on the fake-platform
//! harness:
//!
//! * the Bot Framework's OpenID configuration and JWKS (`/openid`, `/keys`), whose key signs
//!   the bearer tokens of the activities the fake makes ([`FakeTeams::bearer`]);
//! * Entra ID's token endpoint (`/token`, client credentials), as strict as Entra about the
//!   app id, secret, grant and scope;
//! * the Bot Connector under the service URL `<base>/svc/`: send, update, create
//!   conversation, inline attachments; as strict as Teams about tokens, conversation ids,
//!   members, message size (about 28 KB) and Adaptive Cards.
//!
//! Activities are shaped as the Bot Framework documents them ([`FakeTeams::message`] and
//! friends); [`post_activity_to`] POSTs one to a webhook URL as the Bot Framework does.

use std::collections::{HashMap, HashSet};
use std::io::{Read as _, Write as _};
use std::sync::{Arc, Mutex, MutexGuard};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use nanoclaw_fake_platform::jwt::{TestKey, unix_now};
use nanoclaw_fake_platform::{FakeServer, Harness};
use serde_json::{Value, json};

pub use nanoclaw_fake_platform::jwt;

pub const APP_ID: &str = "6f1e2d3c-4b5a-4978-8a6b-5c4d3e2f1a0b";
pub const APP_PASSWORD: &str = "fAk3~Q8Q~teams.client-secret_0123456789abcd";
pub const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
pub const ISSUER: &str = "https://api.botframework.com";
pub const KID: &str = "fake-teams-signing-key";
pub const BOT_NAME: &str = "NanoClaw";
/// People: Teams user ids (`29:…`), their AAD object ids and names.
pub const ANN: &str = "29:1ann-Wx7hQ9VZ8kV4mFJvX3oZc5rP2sT";
pub const ANN_AAD: &str = "0b2c3d4e-5f60-4718-92a3-b4c5d6e7f809";
pub const BOB: &str = "29:1bob-Kd8sL2mQ0pR5tV7xZ9aC1eG3iK5";
pub const BOB_AAD: &str = "1c3d4e5f-6071-4829-a3b4-c5d6e7f8091a";
/// Conversations: Ann's and Bob's personal chats with the bot, a channel, a group chat.
pub const DM_ANN: &str = "a:1ann-personal-Zp0QmYtRcA8bWv3Xk";
pub const DM_BOB: &str = "a:1bob-personal-Hq2LnWsPdB7cXu4Yj";
pub const GENERAL: &str = "19:0general0fake0channel@thread.tacv2";
pub const TEAM: &str = "19:0team0fake@thread.tacv2";
pub const GROUP_CHAT: &str = "19:0groupchat0fake@thread.v2";
/// Teams refuses messages above about 28 KB.
pub const MAX_MESSAGE_BYTES: usize = 28 * 1024;

pub fn bot_id() -> String {
    format!("28:{APP_ID}")
}

fn name_of(user: &str) -> &'static str {
    match user {
        ANN => "Ann Example",
        BOB => "Bob Example",
        _ => "Someone",
    }
}

fn aad_of(user: &str) -> &'static str {
    match user {
        ANN => ANN_AAD,
        BOB => BOB_AAD,
        _ => "00000000-0000-4000-8000-000000000000",
    }
}

/// What the bot (or a user) posted, as the fake keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct Posted {
    /// The conversation without `;messageid=`.
    pub chat: String,
    /// The thread root, in channels.
    pub thread: Option<String>,
    pub id: String,
    pub text: String,
    pub attachments: Vec<Value>,
    pub by_bot: bool,
    /// How many times the bot updated it.
    pub edits: u32,
}

impl Posted {
    /// The Adaptive Card's actions: (title, the id in `data.nanoclaw_action`).
    pub fn buttons(&self) -> Vec<(String, String)> {
        self.attachments
            .iter()
            .filter(|a| a["contentType"] == "application/vnd.microsoft.card.adaptive")
            .flat_map(|a| {
                a["content"]["actions"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
            })
            .map(|b| {
                (
                    b["title"].as_str().unwrap_or_default().to_owned(),
                    b["data"]["nanoclaw_action"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                )
            })
            .collect()
    }

    /// The text, or the card's text.
    pub fn shown(&self) -> String {
        if !self.text.is_empty() {
            return self.text.clone();
        }
        self.attachments
            .iter()
            .flat_map(|a| a["content"]["body"].as_array().cloned().unwrap_or_default())
            .filter_map(|b| b["text"].as_str().map(str::to_owned))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

#[derive(Default)]
struct Platform {
    seq: u64,
    tokens: HashSet<String>,
    messages: Vec<Posted>,
    typing: Vec<String>,
    created: Vec<(String, String)>,
    /// Inline attachments users posted: id → bytes.
    hosted: HashMap<String, Vec<u8>>,
    base_url: String,
}

type Plat = Arc<Mutex<Platform>>;

fn lock(p: &Plat) -> MutexGuard<'_, Platform> {
    p.lock().unwrap_or_else(|e| e.into_inner())
}

pub struct FakeTeams {
    server: FakeServer,
    platform: Plat,
    key: Arc<TestKey>,
}

impl Default for FakeTeams {
    fn default() -> Self {
        Self::start()
    }
}

impl FakeTeams {
    /// On a free port of 127.0.0.1.
    pub fn start() -> Self {
        let harness = Harness::new().with_route_key(route_of);
        let platform = Plat::default();
        let key = Arc::new(TestKey::a(KID));
        let router = Router::new()
            .route("/openid", get(openid))
            .route("/keys", get(keys))
            .route("/token", post(token))
            .route("/svc/v3/conversations", post(create_conversation))
            .route("/svc/v3/conversations/{conv}/activities", post(send))
            .route(
                "/svc/v3/conversations/{conv}/activities/{id}",
                post(send_reply).put(update),
            )
            .route("/svc/v3/attachments/{id}/views/original", get(attachment))
            .with_state((Arc::clone(&platform), Arc::clone(&key)));
        let server = FakeServer::start(harness, router).expect("serve the fake");
        lock(&platform).base_url = server.base_url();
        Self {
            server,
            platform,
            key,
        }
    }

    pub fn base_url(&self) -> String {
        self.server.base_url()
    }

    /// The OpenID configuration URL (the plugin's `openid_config_url`).
    pub fn openid_url(&self) -> String {
        format!("{}/openid", self.base_url())
    }

    /// The token endpoint (the plugin's `token_url`).
    pub fn token_url(&self) -> String {
        format!("{}/token", self.base_url())
    }

    /// The service URL activities name (the Bot Connector).
    pub fn service_url(&self) -> String {
        format!("{}/svc/", self.base_url())
    }

    pub fn harness(&self) -> &Harness {
        self.server.harness()
    }

    /// Settings for the plugin pointing every endpoint at this fake.
    pub fn settings(&self) -> Value {
        json!({
            "app_id": APP_ID,
            "app_password": APP_PASSWORD,
            "tenant_id": TENANT,
            "token_url": self.token_url(),
            "openid_config_url": self.openid_url(),
            "default_service_url": self.service_url(),
        })
    }

    /// Claims the Bot Framework puts in an activity's token.
    pub fn claims(&self, service_url: &str, expires_in: i64) -> Value {
        let now = unix_now();
        json!({
            "serviceurl": service_url,
            "nbf": now - 300,
            "exp": now + expires_in,
            "iss": ISSUER,
            "aud": APP_ID,
        })
    }

    /// `Bearer <JWT>` as the Bot Framework sends with an activity from this service URL.
    pub fn bearer(&self) -> String {
        format!(
            "Bearer {}",
            self.key.sign(&self.claims(&self.service_url(), 3600))
        )
    }

    /// `Bearer <JWT>` with these claims under the platform's key.
    pub fn bearer_with(&self, claims: &Value) -> String {
        format!("Bearer {}", self.key.sign(claims))
    }

    fn next_id(&self) -> String {
        let mut p = lock(&self.platform);
        p.seq += 1;
        format!("{}", 1_796_310_000_000u64 + p.seq * 1000)
    }

    /// A user's message activity in `chat` (`thread`: reply under that root in a channel),
    /// stored as the platform keeps it. `mention`: an `<at>` mention of the bot.
    pub fn message(
        &self,
        chat: &str,
        from: &str,
        text: &str,
        thread: Option<&str>,
        mention: bool,
    ) -> Value {
        let id = self.next_id();
        let text = if mention {
            format!("<at>{BOT_NAME}</at> {text}")
        } else {
            text.to_owned()
        };
        lock(&self.platform).messages.push(Posted {
            chat: chat.to_owned(),
            thread: thread.map(str::to_owned),
            id: id.clone(),
            text: text.clone(),
            attachments: Vec::new(),
            by_bot: false,
            edits: 0,
        });
        let mut a = self.activity("message", &id, chat, from, thread);
        a["text"] = json!(text);
        a["textFormat"] = json!("plain");
        a["locale"] = json!("en-US");
        let mut entities = vec![json!({
            "type": "clientInfo", "locale": "en-US", "country": "US",
            "platform": "Web", "timezone": "Europe/Berlin",
        })];
        if mention {
            entities.push(json!({
                "type": "mention",
                "text": format!("<at>{BOT_NAME}</at>"),
                "mentioned": {"id": bot_id(), "name": BOT_NAME},
            }));
        }
        a["entities"] = json!(entities);
        if let Some(root) = thread {
            a["replyToId"] = json!(root);
        }
        a
    }

    /// An activity envelope of `kind` as the Bot Framework sends it.
    pub fn activity(
        &self,
        kind: &str,
        id: &str,
        chat: &str,
        from: &str,
        thread: Option<&str>,
    ) -> Value {
        let (conversation_type, is_group) = if chat.starts_with("a:") {
            ("personal", false)
        } else if chat.ends_with("@thread.tacv2") {
            ("channel", true)
        } else {
            ("groupChat", true)
        };
        let conversation_id = match (conversation_type, thread) {
            ("channel", Some(root)) => format!("{chat};messageid={root}"),
            ("channel", None) => format!("{chat};messageid={id}"),
            _ => chat.to_owned(),
        };
        let mut conversation = json!({
            "conversationType": conversation_type,
            "tenantId": TENANT,
            "id": conversation_id,
        });
        if is_group {
            conversation["isGroup"] = json!(true);
        }
        let mut channel_data = json!({"tenant": {"id": TENANT}});
        if conversation_type == "channel" {
            channel_data["teamsChannelId"] = json!(chat);
            channel_data["teamsTeamId"] = json!(TEAM);
            channel_data["channel"] = json!({"id": chat, "name": "General"});
            channel_data["team"] = json!({"id": TEAM, "name": "Fake Team"});
        }
        json!({
            "type": kind,
            "id": id,
            "timestamp": "2026-12-03T15:00:00.250Z",
            "localTimestamp": "2026-12-03T16:00:00.250+01:00",
            "serviceUrl": self.service_url(),
            "channelId": "msteams",
            "from": {"id": from, "name": name_of(from), "aadObjectId": aad_of(from)},
            "conversation": conversation,
            "recipient": {"id": bot_id(), "name": BOT_NAME},
            "channelData": channel_data,
        })
    }

    /// A user edits their message `id` (a `messageUpdate` / `editMessage` activity).
    pub fn edit(&self, chat: &str, from: &str, id: &str, text: &str) -> Value {
        let mut a = self.activity("messageUpdate", id, chat, from, None);
        a["text"] = json!(text);
        a["textFormat"] = json!("plain");
        a["timestamp"] = json!("2026-12-03T15:05:00.000Z");
        a["channelData"]["eventType"] = json!("editMessage");
        a
    }

    /// A user deletes their message `id` (a `messageDelete` / `softDeleteMessage` activity).
    pub fn delete(&self, chat: &str, from: &str, id: &str) -> Value {
        let mut a = self.activity("messageDelete", id, chat, from, None);
        a["channelData"]["eventType"] = json!("softDeleteMessage");
        a
    }

    /// A user clicks the `Action.Submit` button with `action` on the bot's card `card_id`:
    /// Teams sends a `message` activity with the action's data as `value`.
    pub fn click(&self, chat: &str, from: &str, card_id: &str, action: &str) -> Value {
        let id = self.next_id();
        let mut a = self.activity("message", &id, chat, from, None);
        a["replyToId"] = json!(card_id);
        a["value"] = json!({"nanoclaw_action": action});
        a["entities"] = json!([{"type": "clientInfo", "locale": "en-US", "platform": "Web"}]);
        a
    }

    /// An inline image a user pasted, served under the service URL to the bot's token only;
    /// returns the attachment object of the activity.
    pub fn inline_image(&self, data: &[u8]) -> Value {
        let id = format!("0-wus-d1-{}", self.next_id());
        lock(&self.platform)
            .hosted
            .insert(id.clone(), data.to_vec());
        json!({
            "contentType": "image/*",
            "contentUrl": format!("{}v3/attachments/{id}/views/original", self.service_url()),
        })
    }

    /// Everything posted in `chat`, in order (users' and the bot's).
    pub fn messages(&self, chat: &str) -> Vec<Posted> {
        lock(&self.platform)
            .messages
            .iter()
            .filter(|m| m.chat == chat)
            .cloned()
            .collect()
    }

    /// The bot's messages in `chat`, in order.
    pub fn bot_messages(&self, chat: &str) -> Vec<Posted> {
        self.messages(chat)
            .into_iter()
            .filter(|m| m.by_bot)
            .collect()
    }

    /// Conversations with typing activities, in order.
    pub fn typing(&self) -> Vec<String> {
        lock(&self.platform).typing.clone()
    }

    /// Conversations the bot created: (member, conversation id).
    pub fn created(&self) -> Vec<(String, String)> {
        lock(&self.platform).created.clone()
    }

    /// Access tokens the token endpoint issued.
    pub fn issued(&self) -> usize {
        lock(&self.platform).tokens.len()
    }
}

/// POSTs `activity` to `url` (e.g. `http://127.0.0.1:<port>/webhook/teams`) with
/// `authorization` (None: no header), as the Bot Framework does. Returns status and body.
pub fn post_activity_to(url: &str, activity: &Value, authorization: Option<&str>) -> (u16, String) {
    let rest = url.strip_prefix("http://").expect("an http:// URL");
    let (authority, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_owned()), |(a, p)| (a, format!("/{p}")));
    let body = activity.to_string();
    let mut stream = std::net::TcpStream::connect(authority).expect("connect");
    let auth = authorization.map_or(String::new(), |a| format!("Authorization: {a}\r\n"));
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: {authority}\r\nContent-Type: application/json; charset=utf-8\r\n\
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
    let method = parts.method.as_str();
    Some(
        match (method, path) {
            (_, "/openid") => "openid",
            (_, "/keys") => "keys",
            (_, "/token") => "token",
            ("POST", "/svc/v3/conversations") => "create_conversation",
            (_, p) if p.starts_with("/svc/v3/attachments/") => "attachment",
            ("PUT", p) if p.starts_with("/svc/v3/conversations/") => "update",
            ("POST", p) if p.starts_with("/svc/v3/conversations/") => "send",
            _ => return None,
        }
        .to_owned(),
    )
}

type St = (Plat, Arc<TestKey>);

async fn openid(State((p, _)): State<St>) -> Response {
    let base = lock(&p).base_url.clone();
    axum::Json(json!({
        "issuer": ISSUER,
        "authorization_endpoint": "https://invalid.botframework.com",
        "jwks_uri": format!("{base}/keys"),
        "id_token_signing_alg_values_supported": ["RS256"],
        "token_endpoint_auth_methods_supported": ["private_key_jwt"],
    }))
    .into_response()
}

async fn keys(State((_, key)): State<St>) -> Response {
    let mut jwk = key.jwk();
    jwk["endorsements"] = json!(["msteams"]);
    axum::Json(json!({"keys": [jwk]})).into_response()
}

fn form(body: &[u8]) -> HashMap<String, String> {
    String::from_utf8_lossy(body)
        .split('&')
        .filter_map(|pair| pair.split_once('='))
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

fn entra_error(status: StatusCode, code: &str, description: &str) -> Response {
    (
        status,
        axum::Json(
            json!({"error": code, "error_description": description, "error_codes": [7000215]}),
        ),
    )
        .into_response()
}

async fn token(State((p, _)): State<St>, headers: HeaderMap, body: Bytes) -> Response {
    let ct = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !ct.starts_with("application/x-www-form-urlencoded") {
        return entra_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "AADSTS900144: The request body must contain the following parameter: 'grant_type'.",
        );
    }
    let f = form(&body);
    let get = |k: &str| f.get(k).map(String::as_str).unwrap_or_default();
    if get("grant_type") != "client_credentials" {
        return entra_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "AADSTS70003",
        );
    }
    if get("client_id") != APP_ID {
        return entra_error(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            "AADSTS700016: Application not found in the directory.",
        );
    }
    if get("client_secret") != APP_PASSWORD {
        return entra_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "AADSTS7000215: Invalid client secret provided.",
        );
    }
    if get("scope") != "https://api.botframework.com/.default" {
        return entra_error(StatusCode::BAD_REQUEST, "invalid_scope", "AADSTS70011");
    }
    let mut p = lock(&p);
    p.seq += 1;
    let access = format!("eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.fake-access-{}", p.seq);
    p.tokens.insert(access.clone());
    axum::Json(json!({"token_type": "Bearer", "expires_in": 3599, "ext_expires_in": 3599, "access_token": access}))
        .into_response()
}

fn connector_error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        axum::Json(json!({"error": {"code": code, "message": message}})),
    )
        .into_response()
}

fn authorized(p: &Platform, headers: &HeaderMap) -> bool {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| p.tokens.contains(t))
}

fn known_chat(p: &Platform, chat: &str) -> bool {
    [DM_ANN, DM_BOB, GENERAL, GROUP_CHAT].contains(&chat)
        || p.created.iter().any(|(_, c)| c == chat)
}

/// Checks an outbound message activity as strictly as Teams: `Err` is the refusal.
#[allow(clippy::result_large_err)]
fn check_message(activity: &Value) -> Result<(String, Vec<Value>), Response> {
    let text = activity["text"].as_str().unwrap_or_default().to_owned();
    let attachments = activity["attachments"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if text.is_empty() && attachments.is_empty() {
        return Err(connector_error(
            StatusCode::BAD_REQUEST,
            "BadArgument",
            "Activity must have text or attachments",
        ));
    }
    if activity.to_string().len() > MAX_MESSAGE_BYTES {
        return Err(connector_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "MessageSizeTooBig",
            "Message size too big",
        ));
    }
    if let Some(format) = activity["textFormat"].as_str()
        && !["markdown", "plain", "xml"].contains(&format)
    {
        return Err(connector_error(
            StatusCode::BAD_REQUEST,
            "BadArgument",
            "Unknown textFormat",
        ));
    }
    for a in &attachments {
        let ct = a["contentType"].as_str().unwrap_or_default();
        if ct == "application/vnd.microsoft.card.adaptive" {
            let c = &a["content"];
            let actions_ok = c["actions"].as_array().is_none_or(|acts| {
                acts.len() <= 6
                    && acts.iter().all(|x| {
                        x["type"] == "Action.Submit"
                            && x["title"].as_str().is_some_and(|t| !t.is_empty())
                            && x["data"].is_object()
                    })
            });
            if c["type"] != "AdaptiveCard" || !c["version"].is_string() || !actions_ok {
                return Err(connector_error(
                    StatusCode::BAD_REQUEST,
                    "BadArgument",
                    "Invalid Adaptive Card",
                ));
            }
        } else if ct.starts_with("image/") {
            let url = a["contentUrl"].as_str().unwrap_or_default();
            let valid = url
                .strip_prefix("data:")
                .and_then(|d| d.split_once(";base64,"))
                .is_some_and(|(_, b)| base64::engine::general_purpose::STANDARD.decode(b).is_ok());
            if !valid {
                return Err(connector_error(
                    StatusCode::BAD_REQUEST,
                    "BadArgument",
                    "Invalid inline image",
                ));
            }
        } else {
            return Err(connector_error(
                StatusCode::BAD_REQUEST,
                "BadArgument",
                "Unsupported attachment",
            ));
        }
    }
    Ok((text, attachments))
}

fn split(conv: &str) -> (String, Option<String>) {
    match conv.split_once(";messageid=") {
        Some((c, r)) => (c.to_owned(), Some(r.to_owned())),
        None => (conv.to_owned(), None),
    }
}

async fn post_activity(p: &Plat, headers: &HeaderMap, conv: &str, body: &[u8]) -> Response {
    let mut p = lock(p);
    if !authorized(&p, headers) {
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({"message": "Authorization has been denied for this request."})),
        )
            .into_response();
    }
    let (chat, root) = split(conv);
    if !known_chat(&p, &chat) {
        return connector_error(
            StatusCode::NOT_FOUND,
            "ConversationNotFound",
            "Conversation not found.",
        );
    }
    if let Some(r) = &root
        && !p.messages.iter().any(|m| m.chat == chat && &m.id == r)
    {
        return connector_error(
            StatusCode::NOT_FOUND,
            "ConversationNotFound",
            "Conversation not found.",
        );
    }
    let Ok(activity) = serde_json::from_slice::<Value>(body) else {
        return connector_error(StatusCode::BAD_REQUEST, "BadSyntax", "Invalid JSON");
    };
    match activity["type"].as_str() {
        Some("typing") => {
            p.typing.push(chat);
            (StatusCode::OK, axum::Json(json!({}))).into_response()
        }
        Some("message") => {
            let (text, attachments) = match check_message(&activity) {
                Ok(x) => x,
                Err(r) => return r,
            };
            p.seq += 1;
            let id = format!("{}", 1_796_320_000_000u64 + p.seq * 1000);
            p.messages.push(Posted {
                chat,
                thread: root,
                id: id.clone(),
                text,
                attachments,
                by_bot: true,
                edits: 0,
            });
            (StatusCode::CREATED, axum::Json(json!({"id": id}))).into_response()
        }
        _ => connector_error(
            StatusCode::BAD_REQUEST,
            "BadArgument",
            "Unknown activity type",
        ),
    }
}

async fn send(
    State((p, _)): State<St>,
    Path(conv): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    post_activity(&p, &headers, &conv, &body).await
}

async fn send_reply(
    State((p, _)): State<St>,
    Path((conv, _reply_to)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    post_activity(&p, &headers, &conv, &body).await
}

async fn update(
    State((p, _)): State<St>,
    Path((conv, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut p = lock(&p);
    if !authorized(&p, &headers) {
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({"message": "Authorization has been denied for this request."})),
        )
            .into_response();
    }
    let (chat, _) = split(&conv);
    let Ok(activity) = serde_json::from_slice::<Value>(&body) else {
        return connector_error(StatusCode::BAD_REQUEST, "BadSyntax", "Invalid JSON");
    };
    let (text, attachments) = match check_message(&activity) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let Some(m) = p.messages.iter_mut().find(|m| m.chat == chat && m.id == id) else {
        return connector_error(
            StatusCode::NOT_FOUND,
            "ActivityNotFound",
            "Activity not found.",
        );
    };
    if !m.by_bot {
        return connector_error(
            StatusCode::FORBIDDEN,
            "Forbidden",
            "The bot can only update its own messages.",
        );
    }
    m.text = text;
    m.attachments = attachments;
    m.edits += 1;
    (StatusCode::OK, axum::Json(json!({"id": id}))).into_response()
}

async fn create_conversation(
    State((p, _)): State<St>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut p = lock(&p);
    if !authorized(&p, &headers) {
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({"message": "Authorization has been denied for this request."})),
        )
            .into_response();
    }
    let Ok(v) = serde_json::from_slice::<Value>(&body) else {
        return connector_error(StatusCode::BAD_REQUEST, "BadSyntax", "Invalid JSON");
    };
    if v["bot"]["id"] != bot_id() {
        return connector_error(StatusCode::BAD_REQUEST, "BadArgument", "Invalid bot");
    }
    let tenant = v["tenantId"]
        .as_str()
        .or_else(|| v["channelData"]["tenant"]["id"].as_str());
    if tenant != Some(TENANT) {
        return connector_error(
            StatusCode::BAD_REQUEST,
            "BadArgument",
            "Invalid or missing tenant id",
        );
    }
    let members = v["members"].as_array().cloned().unwrap_or_default();
    if members.len() != 1 || v["isGroup"] == true {
        return connector_error(
            StatusCode::BAD_REQUEST,
            "BadArgument",
            "Exactly one member for a 1:1 conversation",
        );
    }
    let member = members[0]["id"].as_str().unwrap_or_default().to_owned();
    let conv = match member.as_str() {
        ANN => DM_ANN,
        BOB => DM_BOB,
        _ => {
            return connector_error(
                StatusCode::FORBIDDEN,
                "Forbidden",
                "The bot is not installed for this user.",
            );
        }
    };
    p.created.push((member, conv.to_owned()));
    (StatusCode::CREATED, axum::Json(json!({"id": conv}))).into_response()
}

async fn attachment(
    State((p, _)): State<St>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let p = lock(&p);
    if !authorized(&p, &headers) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    match p.hosted.get(&id) {
        Some(data) => (
            StatusCode::OK,
            [("content-type", "image/png")],
            data.clone(),
        )
            .into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}
