//! A fake OpenAI-compatible chat completions API, on 127.0.0.1 only.
//!
//! It serves what NanoClaw's openai provider and the host's model proxy use:
//!
//! * `POST /v1/chat/completions`, streamed (`stream: true`: SSE `chat.completion.chunk`s,
//!   a final chunk with `usage` when `stream_options.include_usage` is set, `data: [DONE]`)
//!   or as one `chat.completion`;
//! * `GET /v1/models`.
//!
//! With [`Options::api_key`] set, requests without `Authorization: Bearer <key>` get 401 with
//! OpenAI's error JSON. Unknown models get 404 (`model_not_found`).
//!
//! Replies are scripted with [`Rule`]s, matched in order on the newest user message; the
//! first that matches (and has uses left) answers with text, split into a few chunks with an
//! optional delay between them, or with an error status and body. Without a matching rule
//! the fake echoes. Reply texts may use `{from}` (the last `from="…"` attribute in the newest
//! user message: the NanoClaw destination it came from) and `{text}` (the body of its last
//! `<message …>…</message>` element, or the whole message).
//!
//! `usage` is deterministic: `prompt_tokens` is the characters of all message contents / 4
//! (rounded up), `completion_tokens` the reply's characters / 4 (rounded up), and
//! `prompt_tokens_details.cached_tokens` the characters of every message before the newest
//! user message / 4 (rounded down), as if that prefix had been cached.
//!
//! Every request is recorded ([`FakeOpenAi::requests`]: headers and parsed body); the
//! fake-platform [`Harness`] underneath adds faults (`chat.completions` and `models` are the
//! route names) such as a dropped connection.
//!
//! ```no_run
//! use nanoclaw_fake_openai::{FakeOpenAi, Options, Rule};
//! let fake = FakeOpenAi::start(Options::default()).expect("fake");
//! fake.script(Rule::matching("(?i)weather").reply("<message to=\"{from}\">Sunny.</message>"));
//! fake.script(Rule::matching("^fail").error(500, Rule::error_body("boom", "server_error", None)));
//! // … point the client at fake.base_url(), then:
//! for r in fake.requests() {
//!     println!("{:?} {}", r.header("authorization"), r.body["model"]);
//! }
//! ```

use std::convert::Infallible;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::StreamExt as _;
use nanoclaw_fake_platform::{Call, FakeServer, Harness};
pub use nanoclaw_fake_platform::{Fault, Route};
use regex::Regex;
use serde_json::{Value, json};

/// The model the fake serves unless told otherwise.
pub const DEFAULT_MODEL: &str = "fake-model";
/// Route name of `POST /v1/chat/completions` (for harness faults).
pub const ROUTE_CHAT: &str = "chat.completions";
/// Route name of `GET /v1/models`.
pub const ROUTE_MODELS: &str = "models";
/// `created` of everything the fake returns (deterministic output).
const CREATED: u64 = 1_700_000_000;

/// How the fake starts.
#[derive(Debug, Clone)]
pub struct Options {
    /// The key requests must carry as `Authorization: Bearer <key>`; `None` accepts any or none.
    pub api_key: Option<String>,
    /// Models served; requests for others get 404. Empty accepts any model.
    pub models: Vec<String>,
    /// Pause between streamed chunks, unless a rule sets its own.
    pub chunk_delay: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            api_key: None,
            models: vec![DEFAULT_MODEL.to_owned()],
            chunk_delay: Duration::ZERO,
        }
    }
}

impl Options {
    /// Requires `Authorization: Bearer <key>`.
    pub fn with_api_key(mut self, key: &str) -> Self {
        self.api_key = Some(key.to_owned());
        self
    }

    /// Serves these models (empty: any).
    pub fn with_models(mut self, models: &[&str]) -> Self {
        self.models = models.iter().map(|m| (*m).to_owned()).collect();
        self
    }
}

/// What a rule answers.
#[derive(Debug, Clone)]
pub enum Reply {
    /// The assistant's text (a template, see the crate docs).
    Text(String),
    /// An HTTP error with this JSON body.
    Error { status: u16, body: Value },
}

/// A scripted answer: the first rule whose pattern finds the newest user message wins.
#[derive(Debug, Clone)]
pub struct Rule {
    pattern: Option<Regex>,
    reply: Reply,
    chunk_delay: Option<Duration>,
    /// Uses left (`None`: unlimited).
    times: Option<u32>,
}

impl Rule {
    /// A rule for messages where `pattern` (a regex) matches. Panics on a bad regex: rules
    /// are written by tests.
    pub fn matching(pattern: &str) -> Self {
        Self {
            pattern: Some(Regex::new(pattern).expect("valid rule regex")),
            ..Self::always()
        }
    }

    /// A rule for every message.
    pub fn always() -> Self {
        Self {
            pattern: None,
            reply: Reply::Text(String::new()),
            chunk_delay: None,
            times: None,
        }
    }

    /// Answers with this text.
    pub fn reply(mut self, text: &str) -> Self {
        self.reply = Reply::Text(text.to_owned());
        self
    }

    /// Answers with an HTTP error.
    pub fn error(mut self, status: u16, body: Value) -> Self {
        self.reply = Reply::Error { status, body };
        self
    }

    /// Pauses this long between streamed chunks (and before a non-streamed answer).
    pub fn delay(mut self, delay: Duration) -> Self {
        self.chunk_delay = Some(delay);
        self
    }

    /// Applies to the next `n` matching requests only.
    pub fn times(mut self, n: u32) -> Self {
        self.times = Some(n);
        self
    }

    /// OpenAI's error body: `{"error":{"message","type","param":null,"code"}}`.
    pub fn error_body(message: &str, error_type: &str, code: Option<&str>) -> Value {
        json!({ "error": { "message": message, "type": error_type, "param": null, "code": code } })
    }
}

/// One API request as received.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// 1, 2, 3… over all requests (the harness's call sequence).
    pub seq: u64,
    pub method: String,
    pub path: String,
    /// Headers in arrival order, names lowercase.
    pub headers: Vec<(String, String)>,
    /// The parsed JSON body (`Null` when there was none or it was not JSON).
    pub body: Value,
}

impl Recorded {
    fn from_call(c: &Call) -> Self {
        Self {
            seq: c.seq,
            method: c.method.clone(),
            path: c.path.clone(),
            headers: c.headers.clone(),
            body: c.body_json().unwrap_or(Value::Null),
        }
    }

    /// The first header with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The request's `messages` as `(role, text)`.
    pub fn messages(&self) -> Vec<(String, String)> {
        self.body["messages"]
            .as_array()
            .map(|ms| {
                ms.iter()
                    .map(|m| {
                        (
                            m["role"].as_str().unwrap_or_default().to_owned(),
                            content_text(&m["content"]),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The text of the newest user message.
    pub fn last_user(&self) -> Option<String> {
        self.messages()
            .into_iter()
            .rev()
            .find(|(role, _)| role == "user")
            .map(|(_, text)| text)
    }
}

struct Shared {
    opts: Options,
    rules: Mutex<Vec<Rule>>,
    completions: Mutex<u64>,
}

impl Shared {
    fn rules(&self) -> MutexGuard<'_, Vec<Rule>> {
        self.rules.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes the reply for `text`, using up one of the matching rule's uses.
    fn pick(&self, text: &str) -> (Reply, Option<Duration>) {
        let mut rules = self.rules();
        let found = rules
            .iter_mut()
            .find(|r| r.times != Some(0) && r.pattern.as_ref().is_none_or(|re| re.is_match(text)));
        match found {
            Some(rule) => {
                if let Some(n) = &mut rule.times {
                    *n -= 1;
                }
                (rule.reply.clone(), rule.chunk_delay)
            }
            None => (
                Reply::Text("<message to=\"{from}\">fake-openai heard: {text}</message>".into()),
                None,
            ),
        }
    }
}

/// A running fake. Dropping it stops the server.
pub struct FakeOpenAi {
    server: FakeServer,
    shared: Arc<Shared>,
}

impl FakeOpenAi {
    /// Starts on a free port of 127.0.0.1.
    pub fn start(opts: Options) -> std::io::Result<Self> {
        Self::start_on(0, opts)
    }

    /// Starts on `port` of 127.0.0.1 (0: any free port).
    pub fn start_on(port: u16, opts: Options) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            opts,
            rules: Mutex::new(Vec::new()),
            completions: Mutex::new(0),
        });
        let harness = Harness::new().with_route_key(|parts| {
            match (parts.method.as_str(), parts.uri.path()) {
                ("POST", "/v1/chat/completions") => Some(ROUTE_CHAT.to_owned()),
                ("GET", "/v1/models") => Some(ROUTE_MODELS.to_owned()),
                _ => None,
            }
        });
        let router = Router::new()
            .route("/v1/chat/completions", post(chat))
            .route("/v1/models", get(models))
            .fallback(|| async {
                error(
                    StatusCode::NOT_FOUND,
                    "Unknown request URL",
                    "invalid_request_error",
                    Some("unknown_url"),
                )
            })
            .with_state(Arc::clone(&shared));
        let server = FakeServer::start_on(port, "fake-openai", harness, router)?;
        Ok(Self { server, shared })
    }

    /// `http://127.0.0.1:<port>` (the API is under `/v1`).
    pub fn base_url(&self) -> String {
        self.server.base_url()
    }

    /// The harness underneath: the raw call log, faults and holds.
    pub fn harness(&self) -> &Harness {
        self.server.harness()
    }

    /// Adds a rule after the ones already scripted.
    pub fn script(&self, rule: Rule) {
        self.shared.rules().push(rule);
    }

    /// Forgets every rule.
    pub fn clear_script(&self) {
        self.shared.rules().clear();
    }

    /// Every API request so far, in order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.harness()
            .calls()
            .iter()
            .filter(|c| c.route.is_some())
            .map(Recorded::from_call)
            .collect()
    }

    /// The chat completions requests so far.
    pub fn completions(&self) -> Vec<Recorded> {
        self.harness()
            .calls_to(ROUTE_CHAT)
            .iter()
            .map(Recorded::from_call)
            .collect()
    }

    /// Waits until `n` chat completions requests arrived (false after `timeout`).
    pub fn wait_for_completions(&self, n: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.harness().calls_to(ROUTE_CHAT).len() >= n {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The next `count` chat completions requests get `fault` (a status, a delay, a dropped
    /// connection) instead of the scripted answer.
    pub fn fail_next(&self, count: u32, fault: Fault) {
        self.harness()
            .fail_next(Route::named(ROUTE_CHAT), count, fault);
    }

    /// Stops the server and waits for its thread.
    pub fn stop(self) {
        self.server.stop();
    }
}

fn error(status: StatusCode, message: &str, error_type: &str, code: Option<&str>) -> Response {
    (
        status,
        axum::Json(Rule::error_body(message, error_type, code)),
    )
        .into_response()
}

/// The 401 for a missing or wrong key, worded as OpenAI words it (`None`: the key is fine).
fn check_key(shared: &Shared, headers: &HeaderMap) -> Option<Response> {
    let key = shared.opts.api_key.as_ref()?;
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(g) if g == key => None,
        Some(g) => {
            let shown: String = g.chars().take(4).collect();
            Some(error(
                StatusCode::UNAUTHORIZED,
                &format!(
                    "Incorrect API key provided: {shown}****. You can find your API key at \
                     https://platform.openai.com/account/api-keys."
                ),
                "invalid_request_error",
                Some("invalid_api_key"),
            ))
        }
        None => Some(error(
            StatusCode::UNAUTHORIZED,
            "You didn't provide an API key. You need to provide your API key in an \
             Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
            "invalid_request_error",
            None,
        )),
    }
}

async fn models(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if let Some(r) = check_key(&shared, &headers) {
        return r;
    }
    let data: Vec<Value> = shared
        .opts
        .models
        .iter()
        .map(|m| json!({ "id": m, "object": "model", "created": CREATED, "owned_by": "fake-openai" }))
        .collect();
    axum::Json(json!({ "object": "list", "data": data })).into_response()
}

async fn chat(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(r) = check_key(&shared, &headers) {
        return r;
    }
    let Ok(req) = serde_json::from_slice::<Value>(&body) else {
        return error(
            StatusCode::BAD_REQUEST,
            "We could not parse the JSON body of your request.",
            "invalid_request_error",
            None,
        );
    };
    let model = req["model"].as_str().unwrap_or_default().to_owned();
    if model.is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            "you must provide a model parameter",
            "invalid_request_error",
            None,
        );
    }
    if !shared.opts.models.is_empty() && !shared.opts.models.contains(&model) {
        return error(
            StatusCode::NOT_FOUND,
            &format!("The model `{model}` does not exist or you do not have access to it."),
            "invalid_request_error",
            Some("model_not_found"),
        );
    }
    let Some(messages) = req["messages"].as_array().filter(|m| !m.is_empty()) else {
        return error(
            StatusCode::BAD_REQUEST,
            "'messages' must be a non-empty array",
            "invalid_request_error",
            None,
        );
    };
    let texts: Vec<(&str, String)> = messages
        .iter()
        .map(|m| {
            (
                m["role"].as_str().unwrap_or_default(),
                content_text(&m["content"]),
            )
        })
        .collect();
    let newest_user = texts.iter().rposition(|(role, _)| *role == "user");
    let last_user = newest_user.map_or("", |i| texts[i].1.as_str());

    let (reply, delay) = shared.pick(last_user);
    let delay = delay.unwrap_or(shared.opts.chunk_delay);
    let text = match reply {
        Reply::Error { status, body } => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return (status, axum::Json(body)).into_response();
        }
        Reply::Text(template) => render(&template, last_user),
    };

    let chars = |s: &str| s.chars().count() as u64;
    let prompt_chars: u64 = texts.iter().map(|(_, t)| chars(t)).sum();
    let prefix_chars: u64 = texts[..newest_user.unwrap_or(0)]
        .iter()
        .map(|(_, t)| chars(t))
        .sum();
    let usage = json!({
        "prompt_tokens": prompt_chars.div_ceil(4),
        "completion_tokens": chars(&text).div_ceil(4),
        "total_tokens": prompt_chars.div_ceil(4) + chars(&text).div_ceil(4),
        "prompt_tokens_details": { "cached_tokens": prefix_chars / 4 },
    });
    let n = {
        let mut c = shared
            .completions
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        *c += 1;
        *c
    };
    let id = format!("chatcmpl-fake-{n}");

    if req["stream"].as_bool() != Some(true) {
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        return axum::Json(json!({
            "id": id,
            "object": "chat.completion",
            "created": CREATED,
            "model": model,
            "choices": [{
                "index": 0,
                "message": { "role": "assistant", "content": text },
                "finish_reason": "stop",
            }],
            "usage": usage,
        }))
        .into_response();
    }

    let include_usage = req["stream_options"]["include_usage"].as_bool() == Some(true);
    let chunk = |delta: Value, finish: Option<&str>| {
        let mut c = json!({
            "id": id,
            "object": "chat.completion.chunk",
            "created": CREATED,
            "model": model,
            "choices": [{ "index": 0, "delta": delta, "finish_reason": finish }],
        });
        if include_usage {
            c["usage"] = Value::Null;
        }
        c
    };
    let mut events = vec![chunk(json!({ "role": "assistant", "content": "" }), None)];
    events.extend(
        pieces(&text)
            .into_iter()
            .map(|p| chunk(json!({ "content": p }), None)),
    );
    events.push(chunk(json!({}), Some("stop")));
    if include_usage {
        events.push(json!({
            "id": id,
            "object": "chat.completion.chunk",
            "created": CREATED,
            "model": model,
            "choices": [],
            "usage": usage,
        }));
    }
    let mut frames: Vec<(Duration, Bytes)> = events
        .into_iter()
        .enumerate()
        .map(|(i, e)| {
            let pause = if i == 0 { Duration::ZERO } else { delay };
            (pause, Bytes::from(format!("data: {e}\n\n")))
        })
        .collect();
    frames.push((Duration::ZERO, Bytes::from_static(b"data: [DONE]\n\n")));
    let stream = futures::stream::iter(frames).then(|(pause, bytes)| async move {
        if !pause.is_zero() {
            tokio::time::sleep(pause).await;
        }
        Ok::<_, Infallible>(bytes)
    });
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// A message's `content`: a string, or an array of parts whose `text`s are joined.
fn content_text(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p["text"].as_str())
            .collect::<Vec<_>>()
            .join(""),
        _ => String::new(),
    }
}

/// Fills `{from}` and `{text}` from the newest user message.
fn render(template: &str, last_user: &str) -> String {
    static FROM: std::sync::LazyLock<Regex> =
        std::sync::LazyLock::new(|| Regex::new(r#"from="([^"]*)""#).expect("valid regex"));
    static BODY: std::sync::LazyLock<Regex> = std::sync::LazyLock::new(|| {
        Regex::new(r"(?s)<message\b[^>]*>(.*?)</message>").expect("valid regex")
    });
    let from = FROM
        .captures_iter(last_user)
        .last()
        .and_then(|c| c.get(1))
        .map_or("", |m| m.as_str());
    let text = BODY
        .captures_iter(last_user)
        .last()
        .and_then(|c| c.get(1))
        .map_or(last_user, |m| m.as_str());
    template.replace("{from}", from).replace("{text}", text)
}

/// The reply in a few pieces, split after whitespace (at most 8, so chunking shows without
/// flooding the log).
fn pieces(text: &str) -> Vec<String> {
    if text.is_empty() {
        return Vec::new();
    }
    let words: Vec<&str> = text.split_inclusive(char::is_whitespace).collect();
    let per = words.len().div_ceil(8).max(1);
    words.chunks(per).map(|c| c.concat()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_rejoin_to_the_text() {
        for t in ["", "one", "a b c d e f g h i j k l", "multi\nline  text "] {
            let p = pieces(t);
            assert_eq!(p.concat(), t);
            assert!(p.len() <= 8);
        }
        assert_eq!(pieces("a b c").len(), 3);
    }

    #[test]
    fn templates_read_the_nanoclaw_prompt() {
        let prompt = "<messages>\n<message id=\"1\" from=\"home\" sender=\"A\">hi</message>\n\
                      <message id=\"2\" from=\"team\" sender=\"B\">what's up</message>\n</messages>";
        assert_eq!(
            render("<message to=\"{from}\">{text}</message>", prompt),
            "<message to=\"team\">what's up</message>"
        );
        assert_eq!(render("{from}|{text}", "plain"), "|plain");
    }

    #[test]
    fn content_parts_are_joined() {
        assert_eq!(
            content_text(&json!([{"type":"text","text":"a"},{"type":"text","text":"b"}])),
            "ab"
        );
        assert_eq!(content_text(&json!(null)), "");
    }
}
