//! A fake of the Anthropic Messages API, on 127.0.0.1 only, strict enough that the real
//! Claude Code CLI works against it (`ANTHROPIC_BASE_URL=<base_url>`).
//!
//! * `POST /v1/messages` (a `?beta=true` query is accepted): with `"stream": true` a
//!   server-sent event stream with the `event:` lines the SDKs need (`message_start` with
//!   input and cache usage, `content_block_start` / `content_block_delta` (`text_delta`,
//!   `input_json_delta`: tool input only arrives that way) / `content_block_stop`,
//!   `message_delta` with the stop reason and output usage, `message_stop`); otherwise one
//!   JSON message. Requests are checked like the API does: `anthropic-version`, `model`,
//!   `max_tokens`, `messages` with `user` / `assistant` roles (and `system` messages in the
//!   middle, which the CLI sends under a beta header), every `tool_use` answered by a
//!   `tool_result` in the next message.
//! * `POST /v1/messages/count_tokens`: `{"input_tokens": n}`; `GET /v1/models`: a short
//!   list (the CLI asks at start unless non-essential traffic is off; it also sends
//!   `HEAD /`, which gets the 404 every unknown path gets).
//! * The credential (`x-api-key`, or `Authorization: Bearer`) must equal the configured one;
//!   otherwise `401` with an `authentication_error`. Anything else is `404 not_found_error`.
//! * Replies come from a script of [`Rule`]s matched on the newest user turn's text or tool
//!   result: a text, a `tool_use`, or an API error; with a delay between streamed chunks.
//!   Without a matching rule the model answers [`DEFAULT_REPLY`].
//! * Usage numbers are fixed ([`Usage`], settable), so a proxy's accounting can be checked.
//! * Every request is recorded ([`Recorded`]: headers and parsed body), so a test can assert
//!   what the model saw: the tool result, the earlier turns after a resume, which key came.
//!
//! The server runs on the fake-platform harness ([`nanoclaw_fake_platform`]), whose faults
//! (dropped connections, delays, holds) also apply, with routes named `messages`,
//! `count_tokens` and `other`.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State as AxState;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, post};
use bytes::Bytes;
use nanoclaw_fake_platform::{Call, FakeServer, Harness};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

pub use nanoclaw_fake_platform::{Commit, Fault, HoldId, Route};

/// What the model says when no rule matches.
pub const DEFAULT_REPLY: &str = "Hello from the fake model.";
/// The path prefix of the control API (not logged as calls).
pub const CONTROL_PREFIX: &str = "/control/";

/// Which requests a rule answers. Empty fields match anything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Match {
    /// A substring of the newest user message's text blocks.
    pub user_text: Option<String>,
    /// A substring of the newest user message's `tool_result` content.
    pub tool_result: Option<String>,
    /// Only requests that offer tools (the CLI's conversation; its side requests, such as
    /// titles, offer none).
    pub with_tools: bool,
}

/// What the model answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Reply {
    /// A text block; `stop_reason` `end_turn`.
    Text(String),
    /// An optional text block, then a `tool_use` block; `stop_reason` `tool_use`.
    ToolUse {
        name: String,
        input: Value,
        #[serde(default)]
        text: Option<String>,
    },
    /// An API error: `status` with `{"type":"error","error":{"type":kind,"message":…}}`.
    Error {
        status: u16,
        kind: String,
        message: String,
    },
}

/// One scripted answer. Rules are tried in order; the first match answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    #[serde(default, rename = "match")]
    pub matcher: Match,
    pub reply: Reply,
    /// How many requests it answers (`None`: every matching one).
    #[serde(default)]
    pub times: Option<u32>,
    /// A pause before each streamed chunk (and before a JSON answer).
    #[serde(default, with = "opt_millis")]
    pub chunk_delay: Option<Duration>,
}

impl Rule {
    /// Answers every request whose newest user text contains `needle` with `text`.
    pub fn on_text(needle: &str, reply: Reply) -> Rule {
        Rule {
            matcher: Match {
                user_text: Some(needle.to_owned()),
                ..Match::default()
            },
            reply,
            times: None,
            chunk_delay: None,
        }
    }

    /// Answers every request whose newest tool result contains `needle`.
    pub fn on_tool_result(needle: &str, reply: Reply) -> Rule {
        Rule {
            matcher: Match {
                tool_result: Some(needle.to_owned()),
                ..Match::default()
            },
            reply,
            times: None,
            chunk_delay: None,
        }
    }

    /// Answers every request.
    pub fn always(reply: Reply) -> Rule {
        Rule {
            matcher: Match::default(),
            reply,
            times: None,
            chunk_delay: None,
        }
    }

    /// Only for requests that offer tools.
    pub fn with_tools(mut self) -> Rule {
        self.matcher.with_tools = true;
        self
    }

    /// Answers only `n` requests.
    pub fn times(mut self, n: u32) -> Rule {
        self.times = Some(n);
        self
    }

    /// Pauses `delay` before each streamed chunk.
    pub fn chunk_delay(mut self, delay: Duration) -> Rule {
        self.chunk_delay = Some(delay);
        self
    }
}

impl Reply {
    pub fn text(text: impl Into<String>) -> Reply {
        Reply::Text(text.into())
    }

    pub fn tool_use(name: &str, input: Value) -> Reply {
        Reply::ToolUse {
            name: name.to_owned(),
            input,
            text: None,
        }
    }

    pub fn error(status: u16, kind: &str, message: &str) -> Reply {
        Reply::Error {
            status,
            kind: kind.to_owned(),
            message: message.to_owned(),
        }
    }
}

/// The usage every response reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub input_tokens: u64,
    pub cache_creation_input_tokens: u64,
    pub cache_read_input_tokens: u64,
    pub output_tokens: u64,
}

impl Default for Usage {
    fn default() -> Self {
        Usage {
            input_tokens: 100,
            cache_creation_input_tokens: 20,
            cache_read_input_tokens: 30,
            output_tokens: 7,
        }
    }
}

/// One request to `/v1/messages` (or `count_tokens`), as the model saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// The harness's log entry (method, path, query, headers, raw body, time).
    pub call: Call,
    /// The parsed body (`Null` when it was not JSON).
    pub body: Value,
}

impl Recorded {
    /// The first header with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.call.header(name)
    }

    /// The `messages` array.
    pub fn messages(&self) -> &[Value] {
        self.body["messages"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    /// True when the request offers tools.
    pub fn has_tools(&self) -> bool {
        self.body["tools"].as_array().is_some_and(|t| !t.is_empty())
    }

    /// The text blocks of every user message, in order.
    pub fn user_texts(&self) -> Vec<String> {
        self.messages()
            .iter()
            .filter(|m| m["role"] == "user")
            .map(|m| text_of(&m["content"], false))
            .filter(|t| !t.is_empty())
            .collect()
    }

    /// The newest user message's text blocks.
    pub fn last_user_text(&self) -> String {
        last_user(&self.body)
            .map(|m| text_of(&m["content"], false))
            .unwrap_or_default()
    }

    /// The content of every `tool_result` block, in order.
    pub fn tool_results(&self) -> Vec<String> {
        self.messages()
            .iter()
            .filter(|m| m["role"] == "user")
            .filter_map(|m| m["content"].as_array())
            .flatten()
            .filter(|b| b["type"] == "tool_result")
            .map(|b| text_of(&b["content"], true))
            .collect()
    }

    /// The raw body as text (for "this string never reached the model").
    pub fn raw(&self) -> String {
        String::from_utf8_lossy(&self.call.body).into_owned()
    }
}

/// The text of a content value: a string, or the `text` blocks of an array (and with
/// `nested`, strings of `tool_result` contents).
fn text_of(content: &Value, nested: bool) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(blocks) => blocks
            .iter()
            .filter_map(|b| match b["type"].as_str() {
                Some("text") => b["text"].as_str().map(str::to_owned),
                Some("tool_result") if nested => Some(text_of(&b["content"], true)),
                _ => None,
            })
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

fn last_user(body: &Value) -> Option<&Value> {
    body["messages"]
        .as_array()?
        .iter()
        .rev()
        .find(|m| m["role"] == "user")
}

fn tool_result_of(user: &Value) -> String {
    user["content"]
        .as_array()
        .map(|blocks| {
            blocks
                .iter()
                .filter(|b| b["type"] == "tool_result")
                .map(|b| text_of(&b["content"], true))
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default()
}

struct Script {
    rules: Vec<(Rule, u32)>,
    usage: Usage,
    key: String,
    next_id: u64,
}

struct Shared {
    script: Mutex<Script>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Script> {
        self.script.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A running fake. Dropping it stops the server.
pub struct FakeAnthropic {
    server: FakeServer,
    shared: Arc<Shared>,
}

impl FakeAnthropic {
    /// Starts on a free port of 127.0.0.1, accepting only `key` as the credential.
    pub fn start(key: &str) -> std::io::Result<FakeAnthropic> {
        FakeAnthropic::start_on(0, key)
    }

    /// Starts on `port` of 127.0.0.1 (0: any free port).
    pub fn start_on(port: u16, key: &str) -> std::io::Result<FakeAnthropic> {
        let shared = Arc::new(Shared {
            script: Mutex::new(Script {
                rules: Vec::new(),
                usage: Usage::default(),
                key: key.to_owned(),
                next_id: 1,
            }),
        });
        let harness = Harness::new()
            .with_control_prefix(CONTROL_PREFIX)
            .with_route_key(|parts| {
                Some(
                    match parts.uri.path() {
                        "/v1/messages" => "messages",
                        "/v1/messages/count_tokens" => "count_tokens",
                        "/v1/models" => "models",
                        _ => "other",
                    }
                    .to_owned(),
                )
            });
        let router = Router::new()
            .route("/v1/messages", post(messages))
            .route("/v1/messages/count_tokens", post(count_tokens))
            .route("/v1/models", axum::routing::get(models))
            .fallback(any(not_found))
            .with_state(Arc::clone(&shared))
            .merge(control_routes(Arc::clone(&shared), harness.clone()));
        let server = FakeServer::start_on(port, "fake-anthropic", harness, router)?;
        Ok(FakeAnthropic { server, shared })
    }

    /// `http://127.0.0.1:<port>` (what `ANTHROPIC_BASE_URL` takes).
    pub fn base_url(&self) -> String {
        self.server.base_url()
    }

    /// The listening address (127.0.0.1 and the port).
    pub fn addr(&self) -> std::net::SocketAddr {
        self.server.addr()
    }

    /// The harness: the raw call log, faults and holds.
    pub fn harness(&self) -> &Harness {
        self.server.harness()
    }

    /// Adds a rule after the existing ones.
    pub fn push_rule(&self, rule: Rule) {
        let left = rule.times.unwrap_or(u32::MAX);
        self.shared.lock().rules.push((rule, left));
    }

    /// Forgets all rules.
    pub fn clear_rules(&self) {
        self.shared.lock().rules.clear();
    }

    /// Sets the usage every later response reports.
    pub fn set_usage(&self, usage: Usage) {
        self.shared.lock().usage = usage;
    }

    /// Changes the accepted credential (e.g. to make the current one "revoked").
    pub fn set_key(&self, key: &str) {
        key.clone_into(&mut self.shared.lock().key);
    }

    /// Every `/v1/messages` request so far, in order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.harness()
            .calls_to("messages")
            .into_iter()
            .map(recorded)
            .collect()
    }

    /// Every call to any path (the CLI's side requests included).
    pub fn calls(&self) -> Vec<Call> {
        self.harness().calls()
    }

    /// Waits until `check` holds for the `/v1/messages` requests; returns them either way.
    pub fn wait_for_requests(
        &self,
        timeout: Duration,
        mut check: impl FnMut(&[Recorded]) -> bool,
    ) -> Vec<Recorded> {
        self.harness().wait_for_calls(timeout, |calls| {
            let reqs: Vec<Recorded> = calls
                .iter()
                .filter(|c| c.route.as_deref() == Some("messages"))
                .cloned()
                .map(recorded)
                .collect();
            check(&reqs)
        });
        self.requests()
    }
}

fn recorded(call: Call) -> Recorded {
    let body = call.body_json().unwrap_or(Value::Null);
    Recorded { call, body }
}

/// The control API (for the binary): `POST /control/rules` adds rules (a JSON array),
/// `DELETE /control/rules` forgets them, `GET /control/requests` lists the recorded
/// requests, `GET /control/calls` every call (method, path, query).
fn control_routes(shared: Arc<Shared>, harness: Harness) -> Router {
    use axum::Json;
    use axum::routing::get;
    let add = Arc::clone(&shared);
    let all = harness.clone();
    Router::new()
        .route(
            "/control/calls",
            get(move || async move {
                let calls: Vec<Value> = all
                    .calls()
                    .into_iter()
                    .map(|c| json!({ "seq": c.seq, "method": c.method, "path": c.path, "query": c.query }))
                    .collect();
                Json(Value::Array(calls))
            }),
        )
        .route(
            "/control/rules",
            post(move |Json(rules): Json<Vec<Rule>>| async move {
                let n = rules.len();
                let mut s = add.lock();
                for r in rules {
                    let left = r.times.unwrap_or(u32::MAX);
                    s.rules.push((r, left));
                }
                Json(json!({ "added": n }))
            })
            .delete(move || async move {
                shared.lock().rules.clear();
                Json(json!({ "cleared": true }))
            }),
        )
        .route(
            "/control/requests",
            get(move || async move {
                let reqs: Vec<Value> = harness
                    .calls_to("messages")
                    .into_iter()
                    .map(recorded)
                    .map(|r| {
                        json!({
                            "seq": r.call.seq,
                            "query": r.call.query,
                            "headers": r.call.headers,
                            "body": r.body,
                        })
                    })
                    .collect();
                Json(Value::Array(reqs))
            }),
        )
}

// ----------------------------------------------------------------------------------------
// The API
// ----------------------------------------------------------------------------------------

fn api_error(status: StatusCode, kind: &str, message: &str) -> Response {
    let body = json!({
        "type": "error",
        "error": { "type": kind, "message": message },
        "request_id": "req_fake",
    });
    (
        status,
        [
            ("content-type", "application/json"),
            ("request-id", "req_fake"),
        ],
        body.to_string(),
    )
        .into_response()
}

/// A refused request, answered with [`api_error`].
struct Refusal {
    status: StatusCode,
    kind: &'static str,
    message: String,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        api_error(self.status, self.kind, &self.message)
    }
}

fn invalid(message: &str) -> Refusal {
    Refusal {
        status: StatusCode::BAD_REQUEST,
        kind: "invalid_request_error",
        message: message.to_owned(),
    }
}

async fn not_found(uri: Uri) -> Response {
    api_error(
        StatusCode::NOT_FOUND,
        "not_found_error",
        &format!("Not found: {}", uri.path()),
    )
}

/// The credential check of every API call.
fn authenticate(shared: &Shared, headers: &HeaderMap) -> Result<(), Refusal> {
    let key = shared.lock().key.clone();
    let given = headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .or_else(|| {
            headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
        });
    match given {
        Some(g) if g == key => Ok(()),
        Some(_) => Err(Refusal {
            status: StatusCode::UNAUTHORIZED,
            kind: "authentication_error",
            message: "invalid x-api-key".to_owned(),
        }),
        None => Err(Refusal {
            status: StatusCode::UNAUTHORIZED,
            kind: "authentication_error",
            message: "x-api-key header is required".to_owned(),
        }),
    }
}

fn parse_body(headers: &HeaderMap, body: &Bytes) -> Result<Value, Refusal> {
    if headers.get("anthropic-version").is_none() {
        return Err(invalid("anthropic-version: header is required"));
    }
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| invalid(&format!("request body is not valid JSON: {e}")))?;
    if !v.is_object() {
        return Err(invalid("request body must be an object"));
    }
    if !v["model"].is_string() {
        return Err(invalid("model: Field required"));
    }
    check_messages(&v)?;
    Ok(v)
}

/// The API's structural checks on `messages`.
fn check_messages(v: &Value) -> Result<(), Refusal> {
    let Some(messages) = v["messages"].as_array() else {
        return Err(invalid("messages: Field required"));
    };
    if messages.is_empty() {
        return Err(invalid("messages: at least one message is required"));
    }
    let mut pending_tool_uses: Vec<String> = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        let role = m["role"].as_str().unwrap_or_default();
        if !matches!(role, "user" | "assistant" | "system") {
            return Err(invalid(&format!(
                "messages.{i}.role: unexpected value {role:?}"
            )));
        }
        if !(m["content"].is_string() || m["content"].is_array()) {
            return Err(invalid(&format!("messages.{i}.content: Field required")));
        }
        if role == "system" {
            continue;
        }
        let blocks = m["content"].as_array().cloned().unwrap_or_default();
        if !pending_tool_uses.is_empty() {
            let answered: Vec<&str> = blocks
                .iter()
                .filter(|b| b["type"] == "tool_result")
                .filter_map(|b| b["tool_use_id"].as_str())
                .collect();
            if let Some(missing) = pending_tool_uses
                .iter()
                .find(|id| !answered.contains(&id.as_str()))
            {
                return Err(invalid(&format!(
                    "messages.{i}: `tool_use` ids were found without `tool_result` blocks \
                     immediately after: {missing}"
                )));
            }
            pending_tool_uses.clear();
        }
        if role == "assistant" {
            pending_tool_uses = blocks
                .iter()
                .filter(|b| b["type"] == "tool_use")
                .filter_map(|b| b["id"].as_str().map(str::to_owned))
                .collect();
        }
    }
    Ok(())
}

/// `GET /v1/models`: the CLI lists models at start unless non-essential traffic is off.
async fn models(AxState(shared): AxState<Arc<Shared>>, headers: HeaderMap) -> Response {
    if let Err(r) = authenticate(&shared, &headers) {
        return r.into_response();
    }
    let data: Vec<Value> = ["claude-sonnet-4-6", "claude-haiku-4-5", "claude-opus-4-6"]
        .iter()
        .map(|id| json!({ "type": "model", "id": id, "display_name": id, "created_at": "2025-01-01T00:00:00Z" }))
        .collect();
    axum::Json(json!({ "data": data, "has_more": false, "first_id": "claude-sonnet-4-6", "last_id": "claude-opus-4-6" }))
        .into_response()
}

async fn count_tokens(
    AxState(shared): AxState<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(r) = authenticate(&shared, &headers) {
        return r.into_response();
    }
    match parse_body(&headers, &body) {
        // Deterministic: a token per four bytes of the request.
        Ok(_) => axum::Json(json!({ "input_tokens": body.len() / 4 })).into_response(),
        Err(r) => r.into_response(),
    }
}

/// What one answer is made of.
struct Plan {
    id: String,
    model: String,
    text: Option<String>,
    tool: Option<(String, String, Value)>,
    usage: Usage,
    delay: Option<Duration>,
}

async fn messages(
    AxState(shared): AxState<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(r) = authenticate(&shared, &headers) {
        return r.into_response();
    }
    let req = match parse_body(&headers, &body) {
        Ok(v) => v,
        Err(r) => return r.into_response(),
    };
    if !req["max_tokens"].is_u64() {
        return invalid("max_tokens: Field required").into_response();
    }
    let user = last_user(&req).cloned().unwrap_or(Value::Null);
    let user_text = text_of(&user["content"], false);
    let tool_result = tool_result_of(&user);
    let has_tools = req["tools"].as_array().is_some_and(|t| !t.is_empty());

    let (reply, delay, usage, n) = {
        let mut s = shared.lock();
        let found = s.rules.iter_mut().find(|(r, left)| {
            *left > 0
                && (!r.matcher.with_tools || has_tools)
                && r.matcher
                    .user_text
                    .as_ref()
                    .is_none_or(|n| user_text.contains(n.as_str()))
                && r.matcher
                    .tool_result
                    .as_ref()
                    .is_none_or(|n| tool_result.contains(n.as_str()))
        });
        let (reply, delay) = match found {
            Some((rule, left)) => {
                *left -= 1;
                (rule.reply.clone(), rule.chunk_delay)
            }
            None => (Reply::text(DEFAULT_REPLY), None),
        };
        s.next_id += 1;
        (reply, delay, s.usage, s.next_id)
    };

    let (text, tool) = match reply {
        Reply::Error {
            status,
            kind,
            message,
        } => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            if let Some(d) = delay {
                tokio::time::sleep(d).await;
            }
            return api_error(status, &kind, &message);
        }
        Reply::Text(t) => (Some(t), None),
        Reply::ToolUse { name, input, text } => {
            (text, Some((format!("toolu_fake{n:06}"), name, input)))
        }
    };
    let plan = Plan {
        id: format!("msg_fake{n:06}"),
        model: req["model"].as_str().unwrap_or_default().to_owned(),
        text,
        tool,
        usage,
        delay,
    };
    if req["stream"].as_bool().unwrap_or(false) {
        stream_response(plan)
    } else {
        if let Some(d) = plan.delay {
            tokio::time::sleep(d).await;
        }
        json_response(&plan)
    }
}

fn stop_reason(plan: &Plan) -> &'static str {
    if plan.tool.is_some() {
        "tool_use"
    } else {
        "end_turn"
    }
}

fn content_blocks(plan: &Plan) -> Vec<Value> {
    let mut content = Vec::new();
    if let Some(t) = &plan.text {
        content.push(json!({ "type": "text", "text": t }));
    }
    if let Some((id, name, input)) = &plan.tool {
        content.push(json!({ "type": "tool_use", "id": id, "name": name, "input": input }));
    }
    content
}

fn usage_json(u: &Usage, output: u64) -> Value {
    json!({
        "input_tokens": u.input_tokens,
        "cache_creation_input_tokens": u.cache_creation_input_tokens,
        "cache_read_input_tokens": u.cache_read_input_tokens,
        "output_tokens": output,
    })
}

fn json_response(plan: &Plan) -> Response {
    let body = json!({
        "id": plan.id,
        "type": "message",
        "role": "assistant",
        "model": plan.model,
        "content": content_blocks(plan),
        "stop_reason": stop_reason(plan),
        "stop_sequence": null,
        "usage": usage_json(&plan.usage, plan.usage.output_tokens),
    });
    (
        StatusCode::OK,
        [
            ("content-type", "application/json"),
            ("request-id", "req_fake"),
        ],
        body.to_string(),
    )
        .into_response()
}

fn sse(event: &str, data: &Value) -> Bytes {
    Bytes::from(format!("event: {event}\ndata: {data}\n\n"))
}

/// Splits `s` into pieces of about `n` characters (on char boundaries).
fn pieces(s: &str, n: usize) -> Vec<String> {
    let chars: Vec<char> = s.chars().collect();
    chars.chunks(n.max(1)).map(|c| c.iter().collect()).collect()
}

/// The event stream of one answer, as the API sends it.
fn events(plan: &Plan) -> Vec<Bytes> {
    let mut out = vec![sse(
        "message_start",
        &json!({
            "type": "message_start",
            "message": {
                "id": plan.id, "type": "message", "role": "assistant", "model": plan.model,
                "content": [], "stop_reason": null, "stop_sequence": null,
                "usage": usage_json(&plan.usage, 1),
            },
        }),
    )];
    out.push(sse("ping", &json!({ "type": "ping" })));
    let mut index = 0;
    if let Some(t) = &plan.text {
        out.push(sse(
            "content_block_start",
            &json!({ "type": "content_block_start", "index": index,
                     "content_block": { "type": "text", "text": "" } }),
        ));
        for p in pieces(t, 16) {
            out.push(sse(
                "content_block_delta",
                &json!({ "type": "content_block_delta", "index": index,
                         "delta": { "type": "text_delta", "text": p } }),
            ));
        }
        out.push(sse(
            "content_block_stop",
            &json!({ "type": "content_block_stop", "index": index }),
        ));
        index += 1;
    }
    if let Some((id, name, input)) = &plan.tool {
        // The input never comes in the start event: only through input_json_delta.
        out.push(sse(
            "content_block_start",
            &json!({ "type": "content_block_start", "index": index,
                     "content_block": { "type": "tool_use", "id": id, "name": name, "input": {} } }),
        ));
        for p in pieces(&input.to_string(), 24) {
            out.push(sse(
                "content_block_delta",
                &json!({ "type": "content_block_delta", "index": index,
                         "delta": { "type": "input_json_delta", "partial_json": p } }),
            ));
        }
        out.push(sse(
            "content_block_stop",
            &json!({ "type": "content_block_stop", "index": index }),
        ));
    }
    out.push(sse(
        "message_delta",
        &json!({ "type": "message_delta",
                 "delta": { "stop_reason": stop_reason(plan), "stop_sequence": null },
                 "usage": { "output_tokens": plan.usage.output_tokens } }),
    ));
    out.push(sse("message_stop", &json!({ "type": "message_stop" })));
    out
}

fn stream_response(plan: Plan) -> Response {
    let chunks = events(&plan);
    let delay = plan.delay;
    let stream = futures::stream::iter(chunks).then(move |chunk| async move {
        if let Some(d) = delay {
            tokio::time::sleep(d).await;
        }
        Ok::<Bytes, std::convert::Infallible>(chunk)
    });
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "text/event-stream; charset=utf-8")
        .header("cache-control", "no-cache")
        .header("request-id", "req_fake")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

use futures::StreamExt as _;

mod opt_millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<u64>::deserialize(d)?.map(Duration::from_millis))
    }
}

#[cfg(test)]
mod tests;
