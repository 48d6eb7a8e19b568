//! A fake of the WhatsApp Cloud API on 127.0.0.1, built on the fake-platform harness: the
//! Graph endpoints NanoClaw's WhatsApp channel calls (`GET /v21.0/{phone-number-id}`,
//! `POST …/messages`, `POST …/media`, `GET /v21.0/{media-id}` and the media download), as
//! strict as Meta about the token, ids, text and interactive limits (three reply buttons,
//! 20-character titles, ten list rows) and the 24-hour customer-service window (a free-form
//! message outside it is accepted, then fails with a `failed` status, error 131047, as the
//! Cloud API does); and webhooks: the verify-token handshake Meta does when the callback URL
//! is set, and notifications signed with `X-Hub-Signature-256` under the app secret.

use std::collections::HashMap;
use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Body;
use axum::extract::{FromRequest as _, Multipart, Path, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hmac::{Hmac, Mac};
use nanoclaw_fake_platform::{FakeServer, Harness};
use serde_json::{Value, json};

pub const ACCESS_TOKEN: &str = "EAAJB3ZCfakeWhatsAppSystemUserToken0123456789abcdefZDZD";
pub const APP_SECRET: &str = "whatsapp-app-secret-3f9a71c2";
pub const VERIFY_TOKEN: &str = "whatsapp-verify-token-81c2d4";
pub const PHONE_NUMBER_ID: &str = "106540352242922";
pub const DISPLAY_PHONE: &str = "15550783881";
pub const WABA_ID: &str = "102290129340398";
pub const VERSION: &str = "v21.0";
/// Ann and Bob, by their WhatsApp ids (phone numbers).
pub const ANN: &str = "16505551234";
pub const BOB: &str = "16505555678";
pub const MAX_TEXT_CHARS: usize = 4096;
/// The customer-service window.
pub const WINDOW_SECS: u64 = 24 * 3600;
pub const REENGAGEMENT: i64 = 131047;

/// A message the business sent.
#[derive(Debug, Clone, PartialEq)]
pub struct Sent {
    pub id: String,
    pub to: String,
    pub kind: String,
    /// The whole request.
    pub body: Value,
    /// `sent`, or `failed` (outside the window).
    pub status: String,
}

impl Sent {
    /// The text a user sees: a text's body, an interactive message's body, a caption.
    pub fn text(&self) -> String {
        let b = &self.body;
        let t = match self.kind.as_str() {
            "text" => &b["text"]["body"],
            "interactive" => &b["interactive"]["body"]["text"],
            k => &b[k]["caption"],
        };
        t.as_str().unwrap_or_default().to_owned()
    }

    /// Reply buttons or list rows: (id, title).
    pub fn choices(&self) -> Vec<(String, String)> {
        let i = &self.body["interactive"];
        let pick = |v: &Value| {
            (
                v["id"].as_str().unwrap_or_default().to_owned(),
                v["title"].as_str().unwrap_or_default().to_owned(),
            )
        };
        let mut out: Vec<(String, String)> = i["action"]["buttons"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|b| pick(&b["reply"]))
            .collect();
        for s in i["action"]["sections"].as_array().into_iter().flatten() {
            out.extend(s["rows"].as_array().into_iter().flatten().map(pick));
        }
        out
    }
}

#[derive(Debug, Clone)]
pub struct Media {
    pub mime: String,
    pub name: Option<String>,
    pub data: Vec<u8>,
}

#[derive(Default)]
struct Platform {
    seq: u64,
    sent: Vec<Sent>,
    /// Ids of users' messages.
    received: Vec<String>,
    media: HashMap<String, Media>,
    /// wa_id → Unix seconds of their last message.
    last_inbound: HashMap<String, u64>,
    callback: Option<String>,
    base_url: String,
}

type Plat = Arc<Mutex<Platform>>;

fn lock(p: &Plat) -> MutexGuard<'_, Platform> {
    p.lock().unwrap_or_else(|e| e.into_inner())
}

pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn next_wamid(p: &mut Platform) -> String {
    p.seq += 1;
    format!("wamid.HBgLMTY1MDU1NTEyMzQVAgASGBQz{:016X}AA==", p.seq)
}

pub struct FakeWhatsApp {
    server: FakeServer,
    platform: Plat,
}

impl FakeWhatsApp {
    pub fn start() -> Self {
        Self::start_on(0).expect("serve the fake")
    }

    /// On `port` of 127.0.0.1 (0: any free one), with the control API under `/control/`.
    pub fn start_on(port: u16) -> std::io::Result<Self> {
        let harness = Harness::new()
            .with_route_key(route_of)
            .with_control_prefix("/control/");
        let platform = Plat::default();
        let router = Router::new()
            .route(&format!("/{VERSION}/{{id}}"), get(get_object))
            .route(&format!("/{VERSION}/{{id}}/messages"), post(send_message))
            .route(&format!("/{VERSION}/{{id}}/media"), post(upload_media))
            .route("/media-files/{id}", get(download_media))
            .merge(control(&platform))
            .with_state(Arc::clone(&platform));
        let server = FakeServer::start_on(port, "fake-whatsapp", harness, router)?;
        lock(&platform).base_url = server.base_url();
        Ok(Self { server, platform })
    }

    pub fn base_url(&self) -> String {
        self.server.base_url()
    }

    /// The Graph root (`api_base_url`).
    pub fn api_url(&self) -> String {
        format!("{}/{VERSION}", self.server.base_url())
    }

    pub fn harness(&self) -> &Harness {
        self.server.harness()
    }

    pub fn sent(&self) -> Vec<Sent> {
        lock(&self.platform).sent.clone()
    }

    /// What the business sent to `to`, in order.
    pub fn sent_to(&self, to: &str) -> Vec<Sent> {
        self.sent().into_iter().filter(|s| s.to == to).collect()
    }

    pub fn media(&self, id: &str) -> Option<Media> {
        lock(&self.platform).media.get(id).cloned()
    }

    /// Sets the callback URL as the App Dashboard does: Meta first GETs it with the
    /// verify token and a challenge, and takes it only if the challenge comes back.
    pub fn set_callback(&self, url: &str, verify_token: &str) -> Result<(), String> {
        self.view().set_callback(url, verify_token)
    }

    fn view(&self) -> FakeView<'_> {
        FakeView {
            platform: &self.platform,
        }
    }

    /// Pretends `wa_id` last wrote `age_secs` ago (for the 24-hour window).
    pub fn set_last_inbound_age(&self, wa_id: &str, age_secs: u64) {
        lock(&self.platform)
            .last_inbound
            .insert(wa_id.to_owned(), now_secs().saturating_sub(age_secs));
    }

    /// A user writes a text (a reply to `context` when given). Returns the message id and
    /// the notification body.
    pub fn text(&self, from: &str, body: &str, context: Option<&str>) -> (String, Vec<u8>) {
        user_text(&self.platform, from, body, context)
    }

    /// A user sends media (`kind` image, audio, video, document, sticker; `voice` for a
    /// voice note). Returns the message id and the notification body.
    pub fn media_message(
        &self,
        from: &str,
        kind: &str,
        mime: &str,
        name: Option<&str>,
        data: &[u8],
        caption: Option<&str>,
    ) -> (String, Vec<u8>) {
        let id = {
            let mut p = lock(&self.platform);
            p.seq += 1;
            let id = format!("{}", 900_000_000_000_000u64 + p.seq);
            p.media.insert(
                id.clone(),
                Media {
                    mime: mime.into(),
                    name: name.map(str::to_owned),
                    data: data.to_vec(),
                },
            );
            id
        };
        let (kind, voice) = if kind == "voice" {
            ("audio", true)
        } else {
            (kind, false)
        };
        let mut object = json!({"id": id, "mime_type": mime, "sha256": "ZmFrZQ=="});
        if let Some(c) = caption {
            object["caption"] = json!(c);
        }
        if let Some(n) = name {
            object["filename"] = json!(n);
        }
        if voice {
            object["voice"] = json!(true);
        }
        user_message(
            &self.platform,
            from,
            json!({"type": kind, kind: object}),
            None,
        )
    }

    /// A user taps reply button `id` (or list row, with `list`) on the business's message
    /// `on`. Returns the message id and the notification body.
    pub fn tap(
        &self,
        from: &str,
        on: &str,
        id: &str,
        title: &str,
        list: bool,
    ) -> (String, Vec<u8>) {
        self.view().tap(from, on, id, title, list)
    }

    /// A status notification about the business's message `id`.
    pub fn status(&self, id: &str, status: &str, error: Option<i64>) -> Vec<u8> {
        let to = lock(&self.platform)
            .sent
            .iter()
            .find(|s| s.id == id)
            .map(|s| s.to.clone())
            .unwrap_or_else(|| ANN.to_owned());
        status_notification(id, &to, status, error)
    }

    /// POSTs a notification body to the callback URL, signed as Meta signs it.
    pub fn deliver(&self, body: &[u8]) -> Option<u16> {
        self.view().deliver(body)
    }

    /// [`FakeWhatsApp::text`] and its delivery; the message id and the answer.
    pub fn say(&self, from: &str, body: &str, context: Option<&str>) -> (String, Option<u16>) {
        self.view().say(from, body, context)
    }
}

/// `sha256=<hex HMAC-SHA256 of the body under the app secret>`.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("key");
    mac.update(body);
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256={hex}")
}

fn notification(value: Value) -> Vec<u8> {
    json!({
        "object": "whatsapp_business_account",
        "entry": [{"id": WABA_ID, "changes": [{"value": value, "field": "messages"}]}],
    })
    .to_string()
    .into_bytes()
}

fn status_notification(id: &str, to: &str, status: &str, error: Option<i64>) -> Vec<u8> {
    let mut s = json!({
        "id": id, "status": status, "timestamp": now_secs().to_string(), "recipient_id": to,
    });
    if status != "failed" {
        s["conversation"] = json!({"id": "f1b6a8e1c4d2", "origin": {"type": "service"}});
        s["pricing"] = json!({"billable": true, "pricing_model": "PMP", "category": "service"});
    }
    if let Some(code) = error {
        let (title, details) = if code == REENGAGEMENT {
            (
                "Re-engagement message",
                "Message failed to send because more than 24 hours have passed since the customer last replied to this number.",
            )
        } else {
            ("Message undeliverable", "Unable to deliver the message.")
        };
        s["errors"] = json!([{"code": code, "title": title, "message": title,
            "error_data": {"details": details},
            "href": "https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes/"}]);
    }
    notification(json!({
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": DISPLAY_PHONE, "phone_number_id": PHONE_NUMBER_ID},
        "statuses": [s],
    }))
}

fn post_signed(url: &str, body: &[u8]) -> Option<u16> {
    let headers = [
        ("Content-Type", "application/json".to_owned()),
        ("X-Hub-Signature-256", signature(APP_SECRET, body)),
    ];
    http(url, "POST", "", &headers, body).map(|(s, _)| s)
}

/// One HTTP/1.1 request to a loopback URL: (status, body). Any other host is refused: the
/// fake never sends traffic off this machine.
pub fn http(
    url: &str,
    method: &str,
    query: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> Option<(u16, String)> {
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
    let target = if query.is_empty() {
        format!("/{path}")
    } else {
        format!("/{path}?{query}")
    };
    let mut head = format!(
        "{method} {target} HTTP/1.1\r\nHost: {authority}\r\nContent-Length: {}\r\nConnection: close\r\n",
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
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Some((status, body))
}

fn route_of(parts: &Parts) -> Option<String> {
    let path = parts.uri.path();
    if path.starts_with("/media-files/") {
        return Some("media.download".into());
    }
    let rest = path.strip_prefix(&format!("/{VERSION}/"))?;
    Some(
        match rest.split('/').nth(1) {
            Some("messages") => "messages",
            Some("media") => "media.upload",
            _ => "object",
        }
        .into(),
    )
}

fn graph_error(status: StatusCode, code: i64, kind: &str, message: &str) -> Response {
    (
        status,
        axum::Json(json!({"error": {
            "message": message, "type": kind, "code": code,
            "error_data": {"messaging_product": "whatsapp", "details": message},
            "fbtrace_id": "AazFakeTraceId",
        }})),
    )
        .into_response()
}

fn invalid(message: &str) -> Response {
    graph_error(
        StatusCode::BAD_REQUEST,
        100,
        "OAuthException",
        &format!("(#100) {message}"),
    )
}

fn authorized(headers: &HeaderMap) -> bool {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        == Some(ACCESS_TOKEN)
}

fn unauthorized() -> Response {
    graph_error(
        StatusCode::UNAUTHORIZED,
        190,
        "OAuthException",
        "Invalid OAuth access token - Cannot parse access token",
    )
}

async fn get_object(
    State(platform): State<Plat>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if !authorized(&headers) {
        return unauthorized();
    }
    if id == PHONE_NUMBER_ID {
        return axum::Json(json!({
            "verified_name": "NanoClaw Test", "code_verification_status": "VERIFIED",
            "display_phone_number": "+1 555-078-3881", "quality_rating": "GREEN",
            "platform_type": "CLOUD_API", "throughput": {"level": "STANDARD"}, "id": PHONE_NUMBER_ID,
        }))
        .into_response();
    }
    let p = lock(&platform);
    match p.media.get(&id) {
        Some(m) => axum::Json(json!({
            "messaging_product": "whatsapp",
            "url": format!("{}/media-files/{id}", p.base_url),
            "mime_type": m.mime, "sha256": "ZmFrZQ==", "file_size": m.data.len(), "id": id,
        }))
        .into_response(),
        None => graph_error(
            StatusCode::BAD_REQUEST,
            100,
            "GraphMethodException",
            &format!("Unsupported get request. Object with ID '{id}' does not exist"),
        ),
    }
}

async fn download_media(
    State(platform): State<Plat>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if !authorized(&headers) {
        return (StatusCode::UNAUTHORIZED, "").into_response();
    }
    match lock(&platform).media.get(&id) {
        Some(m) => ([("content-type", m.mime.clone())], m.data.clone()).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

fn media_limit(mime: &str) -> usize {
    match mime.split('/').next().unwrap_or_default() {
        "image" => 5 * 1024 * 1024,
        "audio" | "video" => 16 * 1024 * 1024,
        _ => 100 * 1024 * 1024,
    }
}

async fn upload_media(
    State(platform): State<Plat>,
    Path(phone): Path<String>,
    request: Request<Body>,
) -> Response {
    if !authorized(request.headers()) {
        return unauthorized();
    }
    if phone != PHONE_NUMBER_ID {
        return invalid("Unknown phone number id");
    }
    let mut form = match Multipart::from_request(request, &()).await {
        Ok(f) => f,
        Err(_) => return invalid("multipart/form-data expected"),
    };
    let (mut product, mut kind, mut file) = (None, None, None);
    while let Ok(Some(field)) = form.next_field().await {
        let name = field.name().unwrap_or_default().to_owned();
        let file_name = field.file_name().map(str::to_owned);
        let mime = field.content_type().map(str::to_owned);
        let data = field.bytes().await.unwrap_or_default().to_vec();
        match name.as_str() {
            "messaging_product" => product = Some(String::from_utf8_lossy(&data).into_owned()),
            "type" => kind = Some(String::from_utf8_lossy(&data).into_owned()),
            "file" => file = Some((file_name, mime, data)),
            _ => return invalid(&format!("Unexpected parameter {name}")),
        }
    }
    if product.as_deref() != Some("whatsapp") {
        return invalid("The parameter messaging_product is required.");
    }
    let Some((name, mime, data)) = file else {
        return invalid("The parameter file is required.");
    };
    let mime = kind.or(mime).unwrap_or_default();
    if mime.is_empty() || data.is_empty() {
        return invalid("Param file must be a file with a valid type");
    }
    if data.len() > media_limit(&mime) {
        return invalid("File is too large for its type");
    }
    let mut p = lock(&platform);
    p.seq += 1;
    let id = format!("{}", 800_000_000_000_000u64 + p.seq);
    p.media.insert(id.clone(), Media { mime, name, data });
    axum::Json(json!({ "id": id })).into_response()
}

fn chars(v: &Value) -> usize {
    v.as_str().map_or(0, |s| s.chars().count())
}

/// The interactive object as strict as the Cloud API.
fn check_interactive(i: &Value) -> Result<(), String> {
    let body = chars(&i["body"]["text"]);
    match i["type"].as_str() {
        Some("button") => {
            let buttons = i["action"]["buttons"]
                .as_array()
                .ok_or("action.buttons is required")?;
            if body == 0 || body > 1024 {
                return Err("body.text must be 1-1024 characters".into());
            }
            if buttons.is_empty() || buttons.len() > 3 {
                return Err("buttons must have 1-3 elements".into());
            }
            let mut ids = Vec::new();
            let mut titles = Vec::new();
            for b in buttons {
                let (id, title) = (&b["reply"]["id"], &b["reply"]["title"]);
                if b["type"] != "reply" || chars(id) == 0 || chars(id) > 256 {
                    return Err("button reply id must be 1-256 characters".into());
                }
                if chars(title) == 0 || chars(title) > 20 {
                    return Err("button title must be 1-20 characters".into());
                }
                ids.push(id.to_string());
                titles.push(title.to_string());
            }
            ids.sort();
            titles.sort();
            if ids.windows(2).any(|w| w[0] == w[1]) || titles.windows(2).any(|w| w[0] == w[1]) {
                return Err("button ids and titles must be unique".into());
            }
            Ok(())
        }
        Some("list") => {
            if body == 0 || body > 4096 {
                return Err("body.text must be 1-4096 characters".into());
            }
            let button = chars(&i["action"]["button"]);
            if button == 0 || button > 20 {
                return Err("action.button must be 1-20 characters".into());
            }
            let sections = i["action"]["sections"]
                .as_array()
                .ok_or("action.sections is required")?;
            if sections.is_empty() || sections.len() > 10 {
                return Err("sections must have 1-10 elements".into());
            }
            let mut rows = 0;
            for s in sections {
                if sections.len() > 1 && (chars(&s["title"]) == 0 || chars(&s["title"]) > 24) {
                    return Err("section title must be 1-24 characters".into());
                }
                for r in s["rows"].as_array().ok_or("rows is required")? {
                    rows += 1;
                    if chars(&r["id"]) == 0 || chars(&r["id"]) > 200 {
                        return Err("row id must be 1-200 characters".into());
                    }
                    if chars(&r["title"]) == 0 || chars(&r["title"]) > 24 {
                        return Err("row title must be 1-24 characters".into());
                    }
                    if chars(&r["description"]) > 72 {
                        return Err("row description must be at most 72 characters".into());
                    }
                }
            }
            if rows == 0 || rows > 10 {
                return Err("a list has 1-10 rows".into());
            }
            Ok(())
        }
        _ => Err("interactive.type must be button or list".into()),
    }
}

async fn send_message(
    State(platform): State<Plat>,
    Path(phone): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if !authorized(&headers) {
        return unauthorized();
    }
    if phone != PHONE_NUMBER_ID {
        return invalid("Unknown phone number id");
    }
    let Ok(b) = serde_json::from_slice::<Value>(&body) else {
        return invalid("Invalid JSON");
    };
    if b["messaging_product"] != "whatsapp" {
        return invalid("The parameter messaging_product is required.");
    }
    let to = b["to"].as_str().unwrap_or_default().to_owned();
    if to.is_empty() || !to.chars().all(|c| c.is_ascii_digit()) {
        return invalid("The parameter to is required and must be a phone number.");
    }
    if ![ANN, BOB].contains(&to.as_str()) {
        return graph_error(
            StatusCode::BAD_REQUEST,
            131026,
            "OAuthException",
            "Message Undeliverable.",
        );
    }
    let kind = b["type"].as_str().unwrap_or("text").to_owned();
    let mut p = lock(&platform);
    if let Some(ctx) = b["context"]["message_id"].as_str()
        && !p
            .received
            .iter()
            .chain(p.sent.iter().map(|s| &s.id))
            .any(|id| id == ctx)
    {
        return invalid("Invalid context message id");
    }
    let check = match kind.as_str() {
        "text" => {
            let n = chars(&b["text"]["body"]);
            if n == 0 || n > MAX_TEXT_CHARS {
                Err(format!("text.body must be 1-{MAX_TEXT_CHARS} characters"))
            } else {
                Ok(())
            }
        }
        "interactive" => check_interactive(&b["interactive"]),
        "image" | "video" | "audio" | "document" | "sticker" => {
            let o = &b[kind.as_str()];
            match o["id"].as_str() {
                Some(id) if p.media.contains_key(id) => {
                    if chars(&o["caption"]) > 1024 {
                        Err("caption must be at most 1024 characters".into())
                    } else {
                        Ok(())
                    }
                }
                _ => Err("media id unknown".into()),
            }
        }
        "reaction" => {
            let id = b["reaction"]["message_id"].as_str().unwrap_or_default();
            if !p.received.iter().any(|r| r == id) {
                Err("reaction.message_id unknown".into())
            } else {
                Ok(())
            }
        }
        other => Err(format!("unsupported type {other}")),
    };
    if let Err(e) = check {
        return invalid(&e);
    }
    let in_window = p
        .last_inbound
        .get(&to)
        .is_some_and(|at| now_secs().saturating_sub(*at) < WINDOW_SECS);
    let id = next_wamid(&mut p);
    let status = if in_window { "sent" } else { "failed" };
    p.sent.push(Sent {
        id: id.clone(),
        to: to.clone(),
        kind,
        body: b,
        status: status.into(),
    });
    // Outside the window the API accepts, and the failure arrives as a status.
    if !in_window && let Some(url) = p.callback.clone() {
        let notification = status_notification(&id, &to, "failed", Some(REENGAGEMENT));
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            post_signed(&url, &notification);
        });
    }
    axum::Json(json!({
        "messaging_product": "whatsapp",
        "contacts": [{"input": to, "wa_id": to}],
        "messages": [{"id": id}],
    }))
    .into_response()
}

/// The control API (for the `fake-whatsapp` command): `POST /control/callback` `{"url",
/// "verify_token"}`; `POST /control/say` `{"from", "text", "context"?}` → `{"id",
/// "status"}`; `POST /control/tap` `{"from", "on", "id", "title", "list"?}`; `GET
/// /control/sent`.
fn control(platform: &Plat) -> Router<Plat> {
    let (p1, p2, p3, p4) = (
        Arc::clone(platform),
        Arc::clone(platform),
        Arc::clone(platform),
        Arc::clone(platform),
    );
    Router::new()
        .route(
            "/control/callback",
            post(move |axum::Json(v): axum::Json<Value>| async move {
                let answer = tokio::task::spawn_blocking(move || {
                    let shim = FakeView { platform: &p1 };
                    let s = |k: &str| v[k].as_str().unwrap_or_default().to_owned();
                    match shim.set_callback(&s("url"), &s("verify_token")) {
                        Ok(()) => json!({"ok": true}),
                        Err(e) => json!({"ok": false, "error": e}),
                    }
                })
                .await
                .unwrap_or_default();
                axum::Json(answer)
            }),
        )
        .route(
            "/control/say",
            post(move |axum::Json(v): axum::Json<Value>| async move {
                let answer = tokio::task::spawn_blocking(move || {
                    let shim = FakeView { platform: &p2 };
                    let s = |k: &str| v[k].as_str().unwrap_or_default().to_owned();
                    let (id, status) = shim.say(&s("from"), &s("text"), v["context"].as_str());
                    json!({"id": id, "status": status})
                })
                .await
                .unwrap_or_default();
                axum::Json(answer)
            }),
        )
        .route(
            "/control/tap",
            post(move |axum::Json(v): axum::Json<Value>| async move {
                let answer = tokio::task::spawn_blocking(move || {
                    let shim = FakeView { platform: &p3 };
                    let s = |k: &str| v[k].as_str().unwrap_or_default().to_owned();
                    let list = v["list"].as_bool().unwrap_or(false);
                    let (id, body) = shim.tap(&s("from"), &s("on"), &s("id"), &s("title"), list);
                    json!({"id": id, "status": shim.deliver(&body)})
                })
                .await
                .unwrap_or_default();
                axum::Json(answer)
            }),
        )
        .route(
            "/control/sent",
            get(move || async move {
                let p = lock(&p4);
                let sent: Vec<Value> = p
                    .sent
                    .iter()
                    .map(|s| {
                        json!({"id": s.id, "to": s.to, "type": s.kind, "status": s.status,
                                    "text": s.text(), "choices": s.choices()})
                    })
                    .collect();
                axum::Json(json!({ "sent": sent }))
            }),
        )
}

/// [`FakeWhatsApp`]'s user-side methods without the server handle.
struct FakeView<'a> {
    platform: &'a Plat,
}

impl FakeView<'_> {
    fn set_callback(&self, url: &str, verify_token: &str) -> Result<(), String> {
        let challenge = "1158201444";
        let query =
            format!("hub.mode=subscribe&hub.challenge={challenge}&hub.verify_token={verify_token}");
        let (status, body) = http(url, "GET", &query, &[], b"").ok_or("unreachable")?;
        if status != 200 || body.trim() != challenge {
            return Err(format!("verification failed: {status} {body}"));
        }
        lock(self.platform).callback = Some(url.to_owned());
        Ok(())
    }
    fn say(&self, from: &str, text: &str, context: Option<&str>) -> (String, Option<u16>) {
        let (id, body) = user_text(self.platform, from, text, context);
        (id, self.deliver(&body))
    }
    fn tap(&self, from: &str, on: &str, id: &str, title: &str, list: bool) -> (String, Vec<u8>) {
        let interactive = if list {
            json!({"type": "list_reply", "list_reply": {"id": id, "title": title}})
        } else {
            json!({"type": "button_reply", "button_reply": {"id": id, "title": title}})
        };
        user_message(
            self.platform,
            from,
            json!({"type": "interactive", "interactive": interactive}),
            Some(on),
        )
    }
    fn deliver(&self, body: &[u8]) -> Option<u16> {
        let url = lock(self.platform).callback.clone()?;
        post_signed(&url, body)
    }
}

fn user_text(platform: &Plat, from: &str, body: &str, context: Option<&str>) -> (String, Vec<u8>) {
    user_message(
        platform,
        from,
        json!({"type": "text", "text": {"body": body}}),
        context,
    )
}

fn user_message(
    platform: &Plat,
    from: &str,
    mut message: Value,
    context: Option<&str>,
) -> (String, Vec<u8>) {
    let mut p = lock(platform);
    let id = next_wamid(&mut p);
    let now = now_secs();
    p.received.push(id.clone());
    p.last_inbound.insert(from.to_owned(), now);
    message["from"] = json!(from);
    message["id"] = json!(id);
    message["timestamp"] = json!(now.to_string());
    if let Some(c) = context {
        message["context"] = json!({"from": DISPLAY_PHONE, "id": c});
    }
    let name = match from {
        ANN => "Ann",
        BOB => "Bob",
        _ => "Someone",
    };
    let value = json!({
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": DISPLAY_PHONE, "phone_number_id": PHONE_NUMBER_ID},
        "contacts": [{"profile": {"name": name}, "wa_id": from}],
        "messages": [message],
    });
    (id, notification(value))
}
