//! A fake of Resend on 127.0.0.1, built on the fake-platform harness: the API calls
//! NanoClaw's Resend channel makes (`POST /emails` with idempotency keys, the receiving API
//! and its attachments, `GET /domains`), as strict as Resend about the API key, the sender's
//! domain, required fields and sizes, with Resend's error bodies; a CDN serving attachment
//! downloads on signed URLs only; and what a sender does: [`FakeResend::receive`] stores an
//! inbound email and returns the `email.received` webhook Resend would POST, [`sign`] signs
//! it the way Svix does, [`post_webhook`] delivers it.

use std::collections::HashMap;
use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use nanoclaw_fake_platform::{FakeServer, Harness};
use serde_json::{Value, json};

/// The account's API key (full access).
pub const API_KEY: &str = "re_c1tpEyD8_NKFusih9vKVQknRAQfmFcWCv";
/// The webhook's signing secret, as the dashboard shows it.
pub const WEBHOOK_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
/// The verified sending (and receiving) domain.
pub const DOMAIN: &str = "bot.example.com";
/// The bot's address.
pub const BOT_ADDRESS: &str = "agent@bot.example.com";
/// Correspondents.
pub const ANN: &str = "ann@example.org";
pub const BOB: &str = "bob@example.net";
/// The receiving server that stamps `Authentication-Results`.
pub const AUTH_SERVER: &str = "amazonses.com";
/// Resend's size limit for one email, attachments included (after base64 decoding).
pub const MAX_EMAIL_BYTES: usize = 40 * 1024 * 1024;
/// Resend takes at most 50 recipients.
const MAX_RECIPIENTS: usize = 50;

/// An email the bot sent through `POST /emails`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sent {
    pub id: String,
    pub from: String,
    pub to: Vec<String>,
    pub subject: String,
    pub html: Option<String>,
    pub text: Option<String>,
    /// Custom headers as given (`In-Reply-To`, `References`).
    pub headers: HashMap<String, String>,
    /// (file name, content).
    pub attachments: Vec<(String, Vec<u8>)>,
}

impl Sent {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// An email someone sends to the bot.
#[derive(Debug, Clone, Default)]
pub struct Mail {
    /// `Ann <ann@example.org>` or a bare address.
    pub from: String,
    pub subject: String,
    pub text: Option<String>,
    pub html: Option<String>,
    /// The RFC 5322 Message-ID, with its angle brackets.
    pub message_id: String,
    pub in_reply_to: Option<String>,
    pub references: Option<String>,
    /// (file name, MIME type, content).
    pub attachments: Vec<(String, String, Vec<u8>)>,
    /// Extra addresses in To (the bot is always there).
    pub cc: Vec<String>,
    /// The receiving server found DMARC passing for the From domain (its
    /// `Authentication-Results` says so); false: a forged From.
    pub authenticated: bool,
}

impl Mail {
    /// A new email (a thread of its own) from `from` with a plain text body.
    pub fn new(from: &str, subject: &str, text: &str) -> Self {
        Self {
            from: from.to_owned(),
            subject: subject.to_owned(),
            text: Some(text.to_owned()),
            message_id: format!("<{}@mail.example.org>", uuid_like(now_nanos())),
            authenticated: true,
            ..Self::default()
        }
    }

    /// A reply to the bot's email `to` (threaded by its Message-ID).
    pub fn reply_to(mut self, parent: &str, references: &str) -> Self {
        self.in_reply_to = Some(parent.to_owned());
        self.references = Some(references.to_owned());
        self
    }
}

/// What [`FakeResend::receive`] made: the stored email's id and the webhook Resend sends.
#[derive(Debug, Clone)]
pub struct Received {
    pub email_id: String,
    pub webhook: Value,
}

#[derive(Default)]
struct Platform {
    seq: u64,
    sent: Vec<Sent>,
    /// Idempotency-Key → (body, id).
    idempotency: HashMap<String, (Value, String)>,
    /// email id → the received email object.
    received: HashMap<String, Value>,
    /// (email id, attachment id) → (metadata, content).
    attachments: HashMap<(String, String), (Value, Vec<u8>)>,
    base_url: String,
}

type Plat = Arc<Mutex<Platform>>;

fn lock(p: &Plat) -> MutexGuard<'_, Platform> {
    p.lock().unwrap_or_else(|e| e.into_inner())
}

fn now_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

pub fn now_secs() -> i64 {
    i64::try_from(now_nanos() / 1_000_000_000).unwrap_or(0)
}

/// A UUID-shaped id from a number.
fn uuid_like(n: u128) -> String {
    let h = format!(
        "{:032x}",
        n.wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835)
    );
    format!(
        "{}-{}-4{}-a{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

fn next_id(p: &mut Platform) -> String {
    p.seq += 1;
    uuid_like(now_nanos() ^ (u128::from(p.seq) << 64))
}

/// Signs `body` as Svix does for Resend: `v1,<base64 HMAC-SHA256>` over
/// `<id>.<timestamp>.<body>` with the secret's base64 key (after `whsec_`).
pub fn sign(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> String {
    let key = STANDARD
        .decode(secret.trim_start_matches("whsec_"))
        .expect("a whsec_ secret");
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&key).expect("any key length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

/// The three Svix headers for `body`, signed now with [`WEBHOOK_SECRET`].
pub fn svix_headers(svix_id: &str, timestamp: i64, body: &[u8]) -> Vec<(String, String)> {
    vec![
        ("svix-id".into(), svix_id.into()),
        ("svix-timestamp".into(), timestamp.to_string()),
        (
            "svix-signature".into(),
            sign(WEBHOOK_SECRET, svix_id, timestamp, body),
        ),
    ]
}

/// POSTs `body` with `headers` to `http://127.0.0.1:<port><path>`; the status and body.
pub fn post_webhook(
    port: u16,
    path: &str,
    body: &[u8],
    headers: &[(String, String)],
) -> (u16, String) {
    let mut head = String::new();
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return (0, "connection refused".into());
    };
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         User-Agent: Svix-Webhooks/1.62.0\r\n{head}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    if stream.write_all(request.as_bytes()).is_err() || stream.write_all(body).is_err() {
        return (0, "write failed".into());
    }
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

pub struct FakeResend {
    server: FakeServer,
    platform: Plat,
}

impl FakeResend {
    /// On a free port of 127.0.0.1.
    pub fn start() -> Self {
        Self::start_on(0).expect("serve the fake")
    }

    /// On `port` of 127.0.0.1 (0: any free one).
    pub fn start_on(port: u16) -> std::io::Result<Self> {
        let harness = Harness::new()
            .with_route_key(route_of)
            .with_control_prefix("/control/");
        let platform = Plat::default();
        let router = Router::new()
            .route("/emails", post(send_email))
            .route("/emails/receiving/{id}", get(get_received))
            .route(
                "/emails/receiving/{email_id}/attachments/{id}",
                get(get_attachment),
            )
            .route("/domains", get(list_domains))
            .route("/cdn/{email_id}/{id}", get(cdn))
            .route("/control/receive", post(control_receive))
            .route("/control/sent", get(control_sent))
            .with_state(Arc::clone(&platform));
        let server = FakeServer::start_on(port, "fake-resend", harness, router)?;
        lock(&platform).base_url = server.base_url();
        Ok(Self { server, platform })
    }

    /// The API root (`api_base_url`).
    pub fn base_url(&self) -> String {
        self.server.base_url()
    }

    /// The origin attachment downloads come from (`attachment_hosts`).
    pub fn cdn_origin(&self) -> String {
        self.server.base_url()
    }

    pub fn harness(&self) -> &Harness {
        self.server.harness()
    }

    /// Everything the bot sent, oldest first.
    pub fn sent(&self) -> Vec<Sent> {
        lock(&self.platform).sent.clone()
    }

    /// What the bot sent to `address`.
    pub fn sent_to(&self, address: &str) -> Vec<Sent> {
        self.sent()
            .into_iter()
            .filter(|s| s.to.iter().any(|t| t.eq_ignore_ascii_case(address)))
            .collect()
    }

    /// Someone emails the bot: Resend stores the email (body, headers, attachments) and
    /// would POST the returned `email.received` webhook (metadata only, as Resend does).
    pub fn receive(&self, mail: &Mail) -> Received {
        receive(&self.platform, mail)
    }
}

fn receive(platform: &Plat, mail: &Mail) -> Received {
    let mut p = lock(platform);
    let email_id = next_id(&mut p);
    let created_at = "2026-12-03T15:41:12.126Z";
    let mut attachments = Vec::new();
    for (name, mime, data) in &mail.attachments {
        let id = next_id(&mut p);
        let meta = json!({
            "id": id, "filename": name, "content_type": mime,
            "content_disposition": "attachment", "content_id": null,
        });
        p.attachments
            .insert((email_id.clone(), id), (meta.clone(), data.clone()));
        attachments.push(meta);
    }
    let mut to = vec![json!(BOT_ADDRESS)];
    to.extend(mail.cc.iter().map(|c| json!(c)));
    let mut headers = serde_json::Map::new();
    headers.insert("from".into(), json!(mail.from));
    headers.insert("to".into(), json!(BOT_ADDRESS));
    headers.insert("subject".into(), json!(mail.subject));
    headers.insert("message-id".into(), json!(mail.message_id));
    headers.insert("mime-version".into(), json!("1.0"));
    let from_domain = address_of(&mail.from)
        .and_then(|a| a.rsplit_once('@').map(|(_, d)| d.to_ascii_lowercase()))
        .unwrap_or_default();
    let (verdict, dkim) = if mail.authenticated {
        ("pass", format!("pass header.i=@{from_domain}"))
    } else {
        ("fail", "none".to_owned())
    };
    headers.insert(
            "authentication-results".into(),
            json!(format!(
                "{AUTH_SERVER}; spf={verdict} (spfCheck: domain of {from_domain} designates 203.0.113.7 as permitted sender) client-ip=203.0.113.7; envelope-from={from_domain}; dkim={dkim}; dmarc={verdict} header.from={from_domain};"
            )),
        );
    if let Some(v) = &mail.in_reply_to {
        headers.insert("in-reply-to".into(), json!(v));
    }
    if let Some(v) = &mail.references {
        headers.insert("references".into(), json!(v));
    }
    let email = json!({
        "object": "email",
        "id": email_id,
        "to": to,
        "from": mail.from,
        "created_at": created_at,
        "subject": mail.subject,
        "html": mail.html,
        "text": mail.text,
        "headers": headers,
        "bcc": [],
        "cc": [],
        "reply_to": [],
        "message_id": mail.message_id,
        "attachments": attachments,
        "raw": null,
    });
    p.received.insert(email_id.clone(), email);
    let webhook = json!({
        "type": "email.received",
        "created_at": created_at,
        "data": {
            "email_id": email_id,
            "created_at": created_at,
            "from": mail.from,
            "to": to,
            "bcc": [],
            "cc": [],
            "message_id": mail.message_id,
            "subject": mail.subject,
            "attachments": attachments,
        }
    });
    Received { email_id, webhook }
}

/// Control API (the `fake-resend` command): someone emails the bot; answers the webhook.
async fn control_receive(State(p): State<Plat>, axum::Json(v): axum::Json<Value>) -> Response {
    let s = |k: &str| v[k].as_str().map(str::to_owned);
    let mut mail = Mail::new(
        &s("from").unwrap_or_else(|| ANN.to_owned()),
        &s("subject").unwrap_or_else(|| "Hello".to_owned()),
        &s("text").unwrap_or_default(),
    );
    mail.in_reply_to = s("in_reply_to");
    mail.references = s("references");
    let received = receive(&p, &mail);
    axum::Json(received.webhook).into_response()
}

/// Control API: what the bot sent.
async fn control_sent(State(p): State<Plat>) -> Response {
    let sent: Vec<Value> = lock(&p)
        .sent
        .iter()
        .map(|s| {
            json!({"id": s.id, "to": s.to, "subject": s.subject, "text": s.text,
                   "in_reply_to": s.header("In-Reply-To"),
                   "attachments": s.attachments.iter().map(|(n, d)| json!({"name": n, "bytes": d.len()})).collect::<Vec<_>>()})
        })
        .collect();
    axum::Json(json!({ "sent": sent })).into_response()
}

fn route_of(parts: &Parts) -> Option<String> {
    let path = parts.uri.path();
    let route = if path == "/emails" {
        "emails.send"
    } else if path.starts_with("/emails/receiving/") && path.contains("/attachments/") {
        "attachments.get"
    } else if path.starts_with("/emails/receiving/") {
        "emails.receiving.get"
    } else if path == "/domains" {
        "domains.list"
    } else if path.starts_with("/cdn/") {
        "cdn"
    } else {
        return None;
    };
    Some(route.to_owned())
}

/// Resend's error body.
fn error(status: u16, name: &str, message: &str) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    (
        code,
        axum::Json(json!({"statusCode": status, "name": name, "message": message})),
    )
        .into_response()
}

/// `Authorization: Bearer <API_KEY>`, as Resend checks it.
fn authorize(headers: &HeaderMap) -> Result<(), Box<Response>> {
    let Some(value) = headers.get("authorization").and_then(|v| v.to_str().ok()) else {
        return Err(Box::new(error(
            401,
            "missing_api_key",
            "Missing API key in the authorization header. Include the following header in the request: Authorization: Bearer YOUR_API_KEY",
        )));
    };
    match value.strip_prefix("Bearer ") {
        Some(key) if key == API_KEY => Ok(()),
        _ => Err(Box::new(error(
            403,
            "invalid_api_key",
            "API key is invalid",
        ))),
    }
}

/// The address inside `Name <addr>` (or the bare address), when it looks like one.
fn address_of(value: &str) -> Option<String> {
    let v = value.trim();
    let addr = match (v.rfind('<'), v.ends_with('>')) {
        (Some(open), true) => &v[open + 1..v.len() - 1],
        _ => v,
    };
    let (local, domain) = addr.split_once('@')?;
    if local.is_empty() || !domain.contains('.') || addr.contains(char::is_whitespace) {
        return None;
    }
    Some(addr.to_owned())
}

async fn send_email(State(p): State<Plat>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(r) = authorize(&headers) {
        return *r;
    }
    let Ok(v) = serde_json::from_slice::<Value>(&body) else {
        return error(422, "validation_error", "Invalid JSON body");
    };
    let Some(from) = v["from"].as_str() else {
        return error(422, "missing_required_field", "Missing `from` field.");
    };
    let Some(from_addr) = address_of(from) else {
        return error(
            422,
            "validation_error",
            "Invalid `from` field. The email address needs to follow the `email@example.com` or `Name <email@example.com>` format.",
        );
    };
    let from_domain = from_addr.rsplit('@').next().unwrap_or_default();
    if !from_domain.eq_ignore_ascii_case(DOMAIN) {
        return error(
            403,
            "validation_error",
            &format!(
                "The {from_domain} domain is not verified. Please, add and verify your domain on https://resend.com/domains"
            ),
        );
    }
    let to: Vec<String> = match &v["to"] {
        Value::String(s) => vec![s.clone()],
        Value::Array(a) => a
            .iter()
            .filter_map(|x| x.as_str().map(str::to_owned))
            .collect(),
        _ => return error(422, "missing_required_field", "Missing `to` field."),
    };
    if to.is_empty() || to.len() > MAX_RECIPIENTS || to.iter().any(|t| address_of(t).is_none()) {
        return error(
            422,
            "validation_error",
            "Invalid `to` field. The email address needs to follow the `email@example.com` or `Name <email@example.com>` format.",
        );
    }
    let subject = v["subject"].as_str().unwrap_or_default();
    if subject.is_empty() {
        return error(422, "missing_required_field", "Missing `subject` field.");
    }
    let html = v["html"].as_str().map(str::to_owned);
    let text = v["text"].as_str().map(str::to_owned);
    if html.is_none() && text.is_none() && v["react"].is_null() && v["template"].is_null() {
        return error(
            422,
            "validation_error",
            "Missing `html`, `text`, or `react` field.",
        );
    }
    let mut custom = HashMap::new();
    if let Some(h) = v.get("headers").filter(|h| !h.is_null()) {
        let Some(map) = h.as_object() else {
            return error(422, "validation_error", "`headers` must be an object");
        };
        for (k, val) in map {
            let Some(s) = val.as_str() else {
                return error(422, "validation_error", "header values must be strings");
            };
            if s.contains(['\r', '\n']) || k.contains([':', '\r', '\n', ' ']) {
                return error(422, "validation_error", "Invalid header");
            }
            custom.insert(k.clone(), s.to_owned());
        }
    }
    let mut total = html.as_ref().map_or(0, String::len) + text.as_ref().map_or(0, String::len);
    let mut files = Vec::new();
    for a in v["attachments"].as_array().into_iter().flatten() {
        let Some(name) = a["filename"].as_str().filter(|n| !n.is_empty()) else {
            return error(422, "validation_error", "Attachment `filename` is required");
        };
        let Some(data) = a["content"].as_str().and_then(|c| STANDARD.decode(c).ok()) else {
            return error(
                422,
                "validation_error",
                "Attachment `content` must be base64 (or give `path`)",
            );
        };
        total += data.len();
        files.push((name.to_owned(), data));
    }
    if total > MAX_EMAIL_BYTES {
        return error(
            422,
            "validation_error",
            "The email exceeds the 40MB size limit",
        );
    }
    let key = headers
        .get("idempotency-key")
        .and_then(|k| k.to_str().ok())
        .map(str::to_owned);
    let mut p = lock(&p);
    if let Some(key) = &key {
        if key.is_empty() || key.len() > 256 {
            return error(
                400,
                "invalid_idempotency_key",
                "The key must be between 1-256 chars.",
            );
        }
        if let Some((seen, id)) = p.idempotency.get(key) {
            if *seen == v {
                return axum::Json(json!({ "id": id })).into_response();
            }
            return error(
                409,
                "invalid_idempotent_request",
                "Same idempotency key used with a different request payload. Change your idempotency key or payload.",
            );
        }
    }
    let id = next_id(&mut p);
    if let Some(key) = key {
        p.idempotency.insert(key, (v.clone(), id.clone()));
    }
    p.sent.push(Sent {
        id: id.clone(),
        from: from.to_owned(),
        to,
        subject: subject.to_owned(),
        html,
        text,
        headers: custom,
        attachments: files,
    });
    axum::Json(json!({ "id": id })).into_response()
}

async fn get_received(
    State(p): State<Plat>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Err(r) = authorize(&headers) {
        return *r;
    }
    match lock(&p).received.get(&id) {
        Some(email) => axum::Json(email.clone()).into_response(),
        None => error(404, "not_found", "Email not found"),
    }
}

fn cdn_signature(email_id: &str, id: &str) -> String {
    format!(
        "sig-{}",
        &uuid_like(email_id.len() as u128 * 7919 + id.len() as u128)[..8]
    )
}

async fn get_attachment(
    State(p): State<Plat>,
    headers: HeaderMap,
    Path((email_id, id)): Path<(String, String)>,
) -> Response {
    if let Err(r) = authorize(&headers) {
        return *r;
    }
    let p = lock(&p);
    let Some((meta, data)) = p.attachments.get(&(email_id.clone(), id.clone())) else {
        return error(404, "not_found", "Attachment not found");
    };
    let mut answer = meta.clone();
    answer["object"] = json!("attachment");
    answer["size"] = json!(data.len());
    answer["download_url"] = json!(format!(
        "{}/cdn/{email_id}/{id}?signature={}",
        p.base_url,
        cdn_signature(&email_id, &id)
    ));
    answer["expires_at"] = json!("2026-12-03T16:41:12.126Z");
    axum::Json(answer).into_response()
}

/// The signed download: no API key (it must not be sent here), the URL's signature only.
async fn cdn(
    State(p): State<Plat>,
    headers: HeaderMap,
    Path((email_id, id)): Path<(String, String)>,
    RawQuery(query): RawQuery,
) -> Response {
    if headers.contains_key("authorization") {
        return (StatusCode::BAD_REQUEST, "unexpected Authorization header").into_response();
    }
    let expected = format!("signature={}", cdn_signature(&email_id, &id));
    if query.as_deref() != Some(expected.as_str()) {
        return (StatusCode::FORBIDDEN, "AccessDenied").into_response();
    }
    match lock(&p).attachments.get(&(email_id, id)) {
        Some((_, data)) => data.clone().into_response(),
        None => (StatusCode::NOT_FOUND, "NoSuchKey").into_response(),
    }
}

async fn list_domains(headers: HeaderMap) -> Response {
    if let Err(r) = authorize(&headers) {
        return *r;
    }
    axum::Json(json!({
        "object": "list",
        "has_more": false,
        "data": [{
            "id": "d91cd9bd-1176-453e-8fc1-35364d380206",
            "name": DOMAIN,
            "status": "verified",
            "created_at": "2026-11-20T21:26:24.971Z",
            "region": "us-east-1",
            "capabilities": {"sending": "enabled", "receiving": "enabled"}
        }]
    }))
    .into_response()
}
