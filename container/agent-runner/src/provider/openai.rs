//! An OpenAI-compatible chat completions API (OpenAI, Ollama, vLLM, LM Studio, ...).
//!
//! The runner speaks plain HTTP to `{api_base}/v1/chat/completions`: `api_base` is its
//! loopback relay to the host's model proxy, which forwards to the operator's upstream and
//! adds the key. The runner never holds one and never sends an `Authorization` header.
//!
//! The API is stateless, so the conversation lives here: the messages so far, kept in memory
//! and written after every exchange to `<session dir>/.nanoclaw/openai/<id>.json` (temp file
//! and rename). `<id>` is the continuation the runner persists; after a restart it selects
//! the file to resume. The file is the agent's to write, so reading it is bounded and a
//! missing or unreadable one starts a fresh conversation. The history is bounded too: the
//! oldest turns are dropped when it outgrows [`DEFAULT_HISTORY_BUDGET`] (or
//! `NANOCLAW_HISTORY_BYTES`), and when the API says the context is full the request is
//! retried once with the older half left out.
//!
//! Admin commands are answered here, without the model: `/compact` drops the older half of
//! the history, `/context` and `/cost` report its size and the tokens the API counted;
//! `/files` is not available (`/clear` is the runner's).
//!
//! Replies are streamed (`stream: true`) so every chunk can touch the heartbeat; a server
//! that answers with one JSON body instead is accepted as well. A reader thread does the
//! HTTP; the caller waits on a channel in short steps so shutdown ends a turn at once.

use std::fs::File;
use std::io::{BufRead as _, BufReader, Read, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{Event, Provider, ProviderError, Request, RequestKind, api_error};
use crate::wait::Shutdown;

/// How long connecting to the API (the relay) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the API may stay silent: before the first byte (a local server loading the model)
/// and between chunks.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// The conversation sent with each request is cut to about this many bytes of message text
/// (roughly 50k tokens), oldest turns first. `NANOCLAW_HISTORY_BYTES` changes it.
pub const DEFAULT_HISTORY_BUDGET: usize = 200_000;
/// How often a waiting turn checks for shutdown.
const SHUTDOWN_CHECK: Duration = Duration::from_millis(200);
/// Heartbeat touches while streaming: at most one per this interval.
const ACTIVITY_EVERY: Duration = Duration::from_millis(500);
/// Limits on what the API sends back: one SSE line, a whole reply, an error body.
const MAX_LINE: u64 = 1024 * 1024;
const MAX_REPLY: usize = 4 * 1024 * 1024;
const MAX_ERROR_BODY: u64 = 64 * 1024;
/// A conversation file larger than this is not read. Written ones stay well below: the
/// history budget (at most [`MAX_HISTORY_BUDGET`]) plus one exchange, JSON-escaped.
const MAX_FILE: u64 = 32 * 1024 * 1024;
/// The largest history budget `NANOCLAW_HISTORY_BYTES` may set.
pub const MAX_HISTORY_BUDGET: usize = 4_000_000;
/// Where conversations live, under the session directory.
const CONVERSATIONS_DIR: &str = ".nanoclaw/openai";
const FILE_VERSION: u32 = 1;
/// Conversation files kept (the newest); older ones (before `/clear`s) are deleted.
const KEEP_FILES: usize = 8;

/// What the model is told before the runner's addendum: how its output reaches anyone.
const PREAMBLE: &str = "\
You are an assistant that lives in chat conversations. People and other agents write to you \
through NanoClaw; each turn you get their new messages as XML-like blocks \
(`<message id=\"…\" from=\"DESTINATION\" sender=\"NAME\" time=\"…\">TEXT</message>`), \
scheduled tasks as `<task>` blocks, and notes from the system as `<system>` blocks.

Nothing you write reaches anyone unless it is inside a `<message to=\"NAME\">…</message>` \
block: exactly that form, double quotes around NAME, NAME being one of your destinations \
listed below. Everything outside such blocks is private scratch space that nobody sees; wrap \
thinking you mean to keep private in `<internal>…</internal>` (text inside it is never sent, \
even a message block). Write plain text inside the blocks, as you would in a chat. You have no \
tools: you cannot browse, run code or read files, so do not claim to.
";

#[derive(Debug, Clone)]
pub struct OpenAiOptions {
    /// `http://127.0.0.1:<port>` (the relay) or the configured base URL, without `/v1`.
    pub api_base: String,
    pub model: String,
    /// The session workspace: conversations are kept under it.
    pub session_dir: PathBuf,
    pub idle_timeout: Duration,
    pub history_budget: usize,
}

impl OpenAiOptions {
    pub fn new(api_base: String, model: String, session_dir: PathBuf) -> OpenAiOptions {
        OpenAiOptions {
            api_base,
            model,
            session_dir,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            history_budget: DEFAULT_HISTORY_BUDGET,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Role {
    User,
    Assistant,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Turn {
    role: Role,
    content: String,
}

/// One conversation, as kept in memory and on disk (without the system prompt, which is
/// rebuilt for every request from the live destinations).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Conversation {
    version: u32,
    id: String,
    messages: Vec<Turn>,
    /// Token counts the API reported for this conversation (for `/cost`).
    #[serde(default)]
    usage: Totals,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Totals {
    requests: u64,
    prompt_tokens: u64,
    completion_tokens: u64,
    cached_tokens: u64,
}

impl Totals {
    fn add(&mut self, u: &Usage) {
        self.prompt_tokens = self.prompt_tokens.saturating_add(u.prompt_tokens);
        self.completion_tokens = self.completion_tokens.saturating_add(u.completion_tokens);
        self.cached_tokens = self.cached_tokens.saturating_add(u.cached_tokens);
    }
}

pub struct OpenAiProvider {
    opts: OpenAiOptions,
    shutdown: Shutdown,
    http: ureq::Agent,
    live: Option<Conversation>,
}

impl OpenAiProvider {
    pub fn new(opts: OpenAiOptions, shutdown: Shutdown) -> OpenAiProvider {
        let http = ureq::Agent::config_builder()
            // Error statuses carry the API's explanation; they are read, not raised.
            .http_status_as_error(false)
            // The API is on loopback: an HTTP_PROXY in the environment must not catch it.
            .proxy(None)
            // A redirect would turn the POST into a GET; the proxy never sends one.
            .max_redirects(0)
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .timeout_per_read(Some(opts.idle_timeout))
            .user_agent(format!("nanoclaw-agent/{}", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        OpenAiProvider {
            opts,
            shutdown,
            http,
            live: None,
        }
    }

    fn dir(&self) -> PathBuf {
        self.opts.session_dir.join(CONVERSATIONS_DIR)
    }

    /// The live conversation, resumed from `continuation` or started fresh.
    fn conversation(&mut self, continuation: Option<&str>) -> &mut Conversation {
        let dir = self.dir();
        self.live.get_or_insert_with(|| {
            if let Some(id) = continuation {
                match load(&dir, id) {
                    Ok(c) => {
                        tracing::info!(id, turns = c.messages.len(), "resumed conversation");
                        return c;
                    }
                    Err(e) => {
                        tracing::warn!(id, error = %e, "cannot resume the conversation; starting a fresh one")
                    }
                }
            }
            let c = Conversation {
                version: FILE_VERSION,
                id: new_id(),
                messages: Vec::new(),
                usage: Totals::default(),
            };
            // Written now, so a crash before the first reply still resumes this id.
            if let Err(e) = save(&dir, &c) {
                tracing::warn!(error = %e, "cannot write the conversation file");
            }
            prune(&dir, &c.id);
            tracing::info!(id = %c.id, "new conversation");
            c
        })
    }

    /// An admin command (`/clear` never comes here: the runner handles it). Answered
    /// without the model; the answer goes to the admin as is.
    fn command(&mut self, input: &str) -> String {
        let command = input
            .split_whitespace()
            .next()
            .unwrap_or(input)
            .to_lowercase();
        let dir = self.dir();
        let budget = self.opts.history_budget;
        let Some(conv) = self.live.as_mut() else {
            return "No conversation is open.".into();
        };
        let size: usize = conv.messages.iter().map(|t| t.content.len()).sum();
        match command.as_str() {
            "/compact" => {
                let before = conv.messages.len();
                let dropped = bound(&mut conv.messages, size / 2, 0);
                if let Err(e) = save(&dir, conv) {
                    tracing::warn!(error = %e, "cannot write the conversation file");
                }
                format!(
                    "Compacted: dropped the {dropped} oldest of {before} messages; the model \
                     no longer sees them."
                )
            }
            "/context" => format!(
                "The conversation holds {} messages ({} KB of text); up to {} KB is sent \
                 with each request, oldest messages left out first.",
                conv.messages.len(),
                size.div_ceil(1000),
                budget / 1000
            ),
            "/cost" => {
                let u = conv.usage;
                format!(
                    "This conversation: {} requests, {} prompt tokens ({} cached), {} \
                     completion tokens, as the model API reported them.",
                    u.requests, u.prompt_tokens, u.cached_tokens, u.completion_tokens
                )
            }
            _ => format!("The {command} command is not available with the openai provider."),
        }
    }

    fn request_body(&self, system: &str, history: &[Turn], input: &str) -> Value {
        let mut messages = Vec::with_capacity(history.len() + 2);
        messages.push(json!({ "role": "system", "content": system }));
        messages.extend(
            history
                .iter()
                .map(|t| json!({ "role": t.role, "content": t.content })),
        );
        messages.push(json!({ "role": "user", "content": input }));
        json!({
            "model": self.opts.model,
            "messages": messages,
            "stream": true,
            "stream_options": { "include_usage": true },
        })
    }

    /// Sends the request on a reader thread and waits for the whole reply.
    fn complete(
        &self,
        body: Value,
        on_event: &mut dyn FnMut(Event<'_>),
    ) -> Result<(String, Option<Usage>), ProviderError> {
        let url = format!("{}/v1/chat/completions", self.opts.api_base);
        let (tx, rx) = mpsc::channel();
        let http = self.http.clone();
        std::thread::Builder::new()
            .name("openai-http".into())
            .spawn(move || fetch(&http, &url, &body, &tx))
            .map_err(|e| ProviderError::failed(format!("cannot start the HTTP thread: {e}")))?;
        self.wait(&rx, on_event)
    }

    fn wait(
        &self,
        rx: &Receiver<Chunk>,
        on_event: &mut dyn FnMut(Event<'_>),
    ) -> Result<(String, Option<Usage>), ProviderError> {
        let mut reply = String::new();
        let mut usage = None;
        let mut last_activity: Option<Instant> = None;
        loop {
            let chunk = match rx.recv_timeout(SHUTDOWN_CHECK) {
                Ok(chunk) => chunk,
                Err(RecvTimeoutError::Timeout) => {
                    if self.shutdown.requested() {
                        // The thread ends at its next read; the process is stopping anyway.
                        return Err(ProviderError::Interrupted);
                    }
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(ProviderError::failed(
                        "the model API connection ended without a reply",
                    ));
                }
            };
            if last_activity.is_none_or(|t| t.elapsed() >= ACTIVITY_EVERY) {
                on_event(Event::Activity);
                last_activity = Some(Instant::now());
            }
            match chunk {
                Chunk::Activity => {}
                Chunk::Usage(u) => usage = Some(u),
                Chunk::Text(t) => {
                    if reply.len() + t.len() > MAX_REPLY {
                        return Err(ProviderError::failed(format!(
                            "the model's reply exceeded {} MiB",
                            MAX_REPLY / (1024 * 1024)
                        )));
                    }
                    reply.push_str(&t);
                }
                Chunk::Done { finish_reason } => {
                    if finish_reason.as_deref() == Some("length") {
                        tracing::warn!("the model stopped at its output token limit");
                    }
                    return Ok((reply, usage));
                }
                Chunk::Failed(message) => return Err(ProviderError::failed(message)),
            }
        }
    }
}

impl Provider for OpenAiProvider {
    fn name(&self) -> &'static str {
        "openai"
    }

    fn exchange(
        &mut self,
        req: &Request<'_>,
        on_event: &mut dyn FnMut(Event<'_>),
    ) -> Result<String, ProviderError> {
        on_event(Event::Activity);
        let budget = self.opts.history_budget;
        let conv = self.conversation(req.continuation);
        let id = conv.id.clone();
        on_event(Event::Continuation(&id));

        if req.kind == RequestKind::Command {
            let text = self.command(req.input);
            return Ok(text);
        }

        let system = format!("{PREAMBLE}\n{}", req.system_prompt);
        let mut history = conv.messages.clone();
        let reserved = system.len() + req.input.len();
        let dropped = bound(&mut history, budget, reserved);
        if dropped > 0 {
            tracing::info!(dropped, "oldest turns left out to fit the history budget");
            on_event(Event::Progress("history trimmed"));
        }
        let mut retried = false;
        let (reply, usage) = loop {
            let body = self.request_body(&system, &history, req.input);
            match self.complete(body, on_event) {
                Ok(done) => break done,
                // The model's context is smaller than the budget: once, with the older
                // half of the history left out.
                Err(ProviderError::Failed { ref message, .. })
                    if !retried
                        && !history.is_empty()
                        && api_error::classify_text(message)
                            == Some(api_error::ApiFailure::TooLong) =>
                {
                    let size: usize = history.iter().map(|t| t.content.len()).sum();
                    let dropped = bound(&mut history, size / 2 + reserved, reserved);
                    tracing::warn!(
                        dropped,
                        "the model's context is full; retrying with less history"
                    );
                    on_event(Event::Progress(
                        "history trimmed to fit the model's context",
                    ));
                    retried = true;
                }
                Err(e) => return Err(e),
            }
        };

        history.push(Turn {
            role: Role::User,
            content: req.input.to_string(),
        });
        history.push(Turn {
            role: Role::Assistant,
            content: reply.clone(),
        });
        let dir = self.dir();
        if let Some(conv) = self.live.as_mut() {
            conv.messages = history;
            conv.usage.requests += 1;
            if let Some(u) = &usage {
                conv.usage.add(u);
                tracing::info!(
                    prompt_tokens = u.prompt_tokens,
                    completion_tokens = u.completion_tokens,
                    cached_tokens = u.cached_tokens,
                    "model usage"
                );
            }
            if let Err(e) = save(&dir, conv) {
                tracing::warn!(error = %e, "cannot write the conversation file");
            }
        }
        Ok(reply)
    }

    fn reset(&mut self) {
        self.live = None;
    }
}

/// What the HTTP thread reports.
#[derive(Debug, PartialEq)]
enum Chunk {
    /// Data arrived that carried no text (role headers, reasoning, keep-alives).
    Activity,
    Text(String),
    /// Token counts (the last chunk, with `include_usage`).
    Usage(Usage),
    Done {
        finish_reason: Option<String>,
    },
    /// The request failed; the text goes through [`api_error`].
    Failed(String),
}

/// Runs one request and sends what arrives to `tx`. Returns when done or the receiver is
/// gone.
fn fetch(http: &ureq::Agent, url: &str, body: &Value, tx: &Sender<Chunk>) {
    let response = match http
        .post(url)
        .header("content-type", "application/json")
        .header("accept", "text/event-stream, application/json")
        .send(body.to_string())
    {
        Ok(r) => r,
        Err(e) => {
            let _ = tx.send(Chunk::Failed(transport_error(&e)));
            return;
        }
    };
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    let mut reader = response.into_body().into_reader();
    if !(200..300).contains(&status) {
        let mut text = String::new();
        let _ = (&mut reader).take(MAX_ERROR_BODY).read_to_string(&mut text);
        let _ = tx.send(Chunk::Failed(status_error(status, &text)));
        return;
    }
    if content_type.starts_with("application/json") {
        // A server that does not stream: one completion object.
        let mut text = String::new();
        let chunk = match reader
            .take(MAX_REPLY as u64)
            .read_to_string(&mut text)
            .map_err(|e| format!("Connection error: reading the model API's answer: {e}"))
            .and_then(|_| parse_completion(&text))
        {
            Ok((text, finish_reason, usage)) => {
                if let Some(u) = usage {
                    let _ = tx.send(Chunk::Usage(u));
                }
                let _ = tx.send(Chunk::Text(text));
                Chunk::Done { finish_reason }
            }
            Err(e) => Chunk::Failed(e),
        };
        let _ = tx.send(chunk);
        return;
    }

    let mut reader = BufReader::new(reader);
    let mut sse = SseParser::default();
    let mut finish_reason = None;
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = match (&mut reader).take(MAX_LINE).read_until(b'\n', &mut line) {
            Ok(n) => n,
            Err(e) => {
                let _ = tx.send(Chunk::Failed(format!(
                    "Connection error: the model API stream broke off: {e}"
                )));
                return;
            }
        };
        if n == 0 {
            // End of body without `[DONE]`: some servers stop after the last chunk.
            let done = match sse.finish() {
                Some(SseEvent::Data(data)) => handle_data(&data, tx, &mut finish_reason),
                _ => false,
            };
            if !done {
                let _ = tx.send(Chunk::Done { finish_reason });
            }
            return;
        }
        if line.last() != Some(&b'\n') && n as u64 == MAX_LINE {
            let _ = tx.send(Chunk::Failed(
                "the model API sent an over-long stream line".into(),
            ));
            return;
        }
        let text = String::from_utf8_lossy(&line);
        match sse.line(&text) {
            None => {
                if tx.send(Chunk::Activity).is_err() {
                    return;
                }
            }
            Some(SseEvent::Done) => {
                let _ = tx.send(Chunk::Done { finish_reason });
                return;
            }
            Some(SseEvent::Data(data)) => {
                if handle_data(&data, tx, &mut finish_reason) {
                    return;
                }
            }
        }
    }
}

/// Handles one SSE `data` payload. True when the stream is over (failed, or the receiver
/// is gone).
fn handle_data(data: &str, tx: &Sender<Chunk>, finish_reason: &mut Option<String>) -> bool {
    match parse_chunk(data) {
        Ok(delta) => {
            if let Some(usage) = delta.usage
                && tx.send(Chunk::Usage(usage)).is_err()
            {
                return true;
            }
            if delta.finish_reason.is_some() {
                finish_reason.clone_from(&delta.finish_reason);
            }
            let chunk = match delta.content {
                Some(text) if !text.is_empty() => Chunk::Text(text),
                _ => Chunk::Activity,
            };
            tx.send(chunk).is_err()
        }
        Err(message) => {
            let _ = tx.send(Chunk::Failed(message));
            true
        }
    }
}

/// The text for an HTTP error status: `API Error: <status> <body>` when [`api_error`] knows
/// the failure (so the chat gets its one-line explanation), else the API's own message.
fn status_error(status: u16, body: &str) -> String {
    if api_error::classify_http(status, body).is_some() {
        return format!("API Error: {status} {}", body.trim());
    }
    let message = serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
        .unwrap_or_else(|| body.trim().to_string());
    if message.is_empty() {
        format!("the model API answered HTTP {status}")
    } else {
        format!("the model API answered HTTP {status}: {message}")
    }
}

/// Failures before any answer. Not reaching the API at all is worded so [`api_error`]
/// tells the operator to check the network; a connection that broke off, or an API that
/// went silent, is reported as what it is.
fn transport_error(e: &ureq::Error) -> String {
    use std::io::ErrorKind as K;
    match e {
        ureq::Error::Timeout(ureq::Timeout::Connect) => {
            "Connection error: connecting to the model API timed out".into()
        }
        ureq::Error::Timeout(t) => format!("the model API did not answer in time ({t})"),
        ureq::Error::Io(io)
            if matches!(
                io.kind(),
                K::ConnectionRefused
                    | K::NotFound
                    | K::AddrNotAvailable
                    | K::HostUnreachable
                    | K::NetworkUnreachable
            ) =>
        {
            format!("Connection error: {io}")
        }
        ureq::Error::ConnectionFailed | ureq::Error::HostNotFound => {
            format!("Connection error: {e}")
        }
        ureq::Error::Io(io) => {
            format!("the model API closed the connection without an answer ({io})")
        }
        other => format!("the model API request failed: {other}"),
    }
}

#[derive(Debug, PartialEq, Eq)]
enum SseEvent {
    Data(String),
    /// `data: [DONE]`: the stream is complete.
    Done,
}

/// Server-sent events, line by line: `data:` lines accumulate until a blank line ends the
/// event. Comments (`:`), `event:`, `id:` and `retry:` lines carry nothing needed here.
#[derive(Debug, Default)]
struct SseParser {
    data: Option<String>,
}

impl SseParser {
    fn line(&mut self, line: &str) -> Option<SseEvent> {
        let line = line.strip_suffix('\n').unwrap_or(line);
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.is_empty() {
            return self.finish();
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        if field == "data" {
            match &mut self.data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(value);
                }
                None => self.data = Some(value.to_string()),
            }
        }
        None
    }

    /// Ends the pending event, if any.
    fn finish(&mut self) -> Option<SseEvent> {
        let data = self.data.take()?;
        if data.trim() == "[DONE]" {
            Some(SseEvent::Done)
        } else {
            Some(SseEvent::Data(data))
        }
    }
}

#[derive(Debug, Default, PartialEq, Eq)]
struct Usage {
    prompt_tokens: u64,
    completion_tokens: u64,
    cached_tokens: u64,
}

#[derive(Debug, Default, PartialEq, Eq)]
struct Delta {
    content: Option<String>,
    finish_reason: Option<String>,
    usage: Option<Usage>,
}

/// One streamed `chat.completion.chunk`, or an error object sent mid-stream.
fn parse_chunk(data: &str) -> Result<Delta, String> {
    let v: Value = serde_json::from_str(data)
        .map_err(|e| format!("the model API sent an unreadable stream chunk: {e}"))?;
    if let Some(err) = v.get("error").filter(|e| !e.is_null()) {
        let message = err["message"].as_str().unwrap_or("unknown error");
        return Err(format!("the model API failed mid-reply: {message}"));
    }
    let choice = &v["choices"][0];
    let usage = parse_usage(&v);
    Ok(Delta {
        content: choice["delta"]["content"].as_str().map(str::to_string),
        finish_reason: choice["finish_reason"].as_str().map(str::to_string),
        usage,
    })
}

/// A non-streamed `chat.completion`: its text, finish reason and usage.
fn parse_completion(body: &str) -> Result<(String, Option<String>, Option<Usage>), String> {
    let v: Value = serde_json::from_str(body)
        .map_err(|e| format!("the model API sent an unreadable answer: {e}"))?;
    if let Some(err) = v.get("error").filter(|e| !e.is_null()) {
        let message = err["message"].as_str().unwrap_or("unknown error");
        return Err(format!("the model API failed: {message}"));
    }
    let choice = &v["choices"][0];
    let text = choice["message"]["content"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    Ok((
        text,
        choice["finish_reason"].as_str().map(str::to_string),
        parse_usage(&v),
    ))
}

fn parse_usage(v: &Value) -> Option<Usage> {
    v.get("usage").filter(|u| u.is_object()).map(|u| Usage {
        prompt_tokens: u["prompt_tokens"].as_u64().unwrap_or(0),
        completion_tokens: u["completion_tokens"].as_u64().unwrap_or(0),
        cached_tokens: u["prompt_tokens_details"]["cached_tokens"]
            .as_u64()
            .unwrap_or(0),
    })
}

/// Drops the oldest turns until the history plus `reserved` bytes (system prompt, new
/// input) fit in `budget`. Whole exchanges go, so the history still starts with a user
/// turn. Returns how many turns were dropped.
fn bound(history: &mut Vec<Turn>, budget: usize, reserved: usize) -> usize {
    let mut size: usize = history.iter().map(|t| t.content.len()).sum::<usize>() + reserved;
    let mut cut = 0;
    while cut < history.len() && size > budget {
        size -= history[cut].content.len();
        cut += 1;
        // Never start on an assistant turn: it would answer nothing.
        while cut < history.len() && history[cut].role == Role::Assistant {
            size -= history[cut].content.len();
            cut += 1;
        }
    }
    history.drain(..cut);
    cut
}

/// Continuation ids become file names: only these are accepted.
fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn new_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("oai-{nanos:x}-{:x}-{n}", std::process::id())
}

#[derive(Debug, thiserror::Error)]
enum FileError {
    #[error("not a valid conversation id")]
    BadId,
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("larger than {MAX_FILE} bytes")]
    TooLarge,
    #[error("unreadable: {0}")]
    Corrupt(String),
}

fn load(dir: &Path, id: &str) -> Result<Conversation, FileError> {
    if !valid_id(id) {
        return Err(FileError::BadId);
    }
    let mut bytes = Vec::new();
    File::open(dir.join(format!("{id}.json")))?
        .take(MAX_FILE + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_FILE {
        return Err(FileError::TooLarge);
    }
    let c: Conversation =
        serde_json::from_slice(&bytes).map_err(|e| FileError::Corrupt(e.to_string()))?;
    if c.version != FILE_VERSION || c.id != id {
        return Err(FileError::Corrupt("wrong version or id".into()));
    }
    Ok(c)
}

/// Deletes all but the [`KEEP_FILES`] newest conversation files, never `current`.
fn prune(dir: &Path, current: &str) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut files: Vec<(SystemTime, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.ends_with(".json") && name != format!("{current}.json")
        })
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    files.sort_by_key(|f| std::cmp::Reverse(f.0));
    for (_, path) in files.into_iter().skip(KEEP_FILES.saturating_sub(1)) {
        if let Err(e) = std::fs::remove_file(&path) {
            tracing::debug!(error = %e, path = %path.display(), "cannot delete an old conversation");
        }
    }
}

fn save(dir: &Path, c: &Conversation) -> Result<(), FileError> {
    if !valid_id(&c.id) {
        return Err(FileError::BadId);
    }
    std::fs::create_dir_all(dir)?;
    let path = dir.join(format!("{}.json", c.id));
    let tmp = dir.join(format!(".{}.json.tmp", c.id));
    let bytes = serde_json::to_vec(c).map_err(|e| FileError::Corrupt(e.to_string()))?;
    let mut f = File::create(&tmp)?;
    f.write_all(&bytes)?;
    f.sync_data()?;
    drop(f);
    std::fs::rename(&tmp, &path)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn turn(role: Role, content: &str) -> Turn {
        Turn {
            role,
            content: content.into(),
        }
    }

    #[test]
    fn sse_lines_make_events() {
        let mut p = SseParser::default();
        assert_eq!(p.line(": keep-alive\n"), None);
        assert_eq!(p.line("event: message\r\n"), None);
        assert_eq!(p.line("data: {\"a\":1}\n"), None);
        assert_eq!(
            p.line("\n"),
            Some(SseEvent::Data("{\"a\":1}".into())),
            "a blank line ends the event"
        );
        assert_eq!(p.line("\n"), None, "no event pending");
        // Several data lines join with newlines; no space after the colon is fine.
        p.line("data:one\n");
        p.line("data: two\n");
        assert_eq!(p.line("\r\n"), Some(SseEvent::Data("one\ntwo".into())));
        p.line("data: [DONE]\n");
        assert_eq!(p.line("\n"), Some(SseEvent::Done));
        // A stream that ends without the blank line still delivers its last event.
        p.line("data: {}");
        assert_eq!(p.finish(), Some(SseEvent::Data("{}".into())));
    }

    #[test]
    fn chunks_carry_text_finish_and_usage() {
        let d = parse_chunk(
            r#"{"id":"x","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"Hel"},"finish_reason":null}]}"#,
        )
        .unwrap();
        assert_eq!(d.content.as_deref(), Some("Hel"));
        assert_eq!(d.finish_reason, None);
        let d =
            parse_chunk(r#"{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#).unwrap();
        assert_eq!(
            (d.content, d.finish_reason.as_deref()),
            (None, Some("stop"))
        );
        let d = parse_chunk(
            r#"{"choices":[],"usage":{"prompt_tokens":10,"completion_tokens":3,"prompt_tokens_details":{"cached_tokens":8}}}"#,
        )
        .unwrap();
        assert_eq!(
            d.usage,
            Some(Usage {
                prompt_tokens: 10,
                completion_tokens: 3,
                cached_tokens: 8
            })
        );
        assert!(
            parse_chunk(r#"{"error":{"message":"overloaded"}}"#)
                .unwrap_err()
                .contains("overloaded")
        );
        assert!(parse_chunk("not json").is_err());
        assert_eq!(
            parse_completion(
                r#"{"choices":[{"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}]}"#
            )
            .unwrap(),
            ("hi".to_string(), Some("stop".to_string()), None)
        );
    }

    #[test]
    fn history_drops_whole_oldest_exchanges() {
        let mut h = vec![
            turn(Role::User, "aaaa"),
            turn(Role::Assistant, "bbbb"),
            turn(Role::User, "cccc"),
            turn(Role::Assistant, "dddd"),
        ];
        assert_eq!(bound(&mut h, 100, 10), 0, "fits");
        assert_eq!(h.len(), 4);
        // 16 + 2 reserved > 12: the first exchange goes.
        assert_eq!(bound(&mut h, 12, 2), 2);
        assert_eq!(h, [turn(Role::User, "cccc"), turn(Role::Assistant, "dddd")]);
        // Nothing fits beside a huge input: everything goes, the input is still sent.
        assert_eq!(bound(&mut h, 12, 1000), 2);
        assert!(h.is_empty());
        // A history that starts with an assistant turn (hand-edited file) is repaired.
        let mut h = vec![
            turn(Role::Assistant, "x"),
            turn(Role::User, "y"),
            turn(Role::Assistant, "z"),
        ];
        assert_eq!(bound(&mut h, 2, 0), 1);
        assert_eq!(h[0].role, Role::User);
    }

    #[test]
    fn conversation_files_round_trip_and_bad_ones_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let c = Conversation {
            version: FILE_VERSION,
            id: new_id(),
            messages: vec![turn(Role::User, "hi"), turn(Role::Assistant, "hello")],
            usage: Totals::default(),
        };
        save(dir.path(), &c).unwrap();
        let back = load(dir.path(), &c.id).unwrap();
        assert_eq!(back.messages, c.messages);
        assert!(matches!(
            load(dir.path(), "../../etc/passwd"),
            Err(FileError::BadId)
        ));
        assert!(matches!(load(dir.path(), "missing"), Err(FileError::Io(_))));
        std::fs::write(dir.path().join("junk.json"), b"{\"version\":1,").unwrap();
        assert!(matches!(
            load(dir.path(), "junk"),
            Err(FileError::Corrupt(_))
        ));
        std::fs::write(
            dir.path().join("other.json"),
            serde_json::to_vec(&c).unwrap(),
        )
        .unwrap();
        assert!(
            matches!(load(dir.path(), "other"), Err(FileError::Corrupt(_))),
            "the id inside must match the name"
        );
        let big = std::fs::File::create(dir.path().join("big.json")).unwrap();
        big.set_len(MAX_FILE + 10).unwrap();
        assert!(matches!(load(dir.path(), "big"), Err(FileError::TooLarge)));
    }

    #[test]
    fn error_texts_go_through_api_error() {
        let body = r#"{"error":{"message":"Incorrect API key provided","type":"invalid_request_error","code":"invalid_api_key"}}"#;
        let text = status_error(401, body);
        assert_eq!(
            api_error::classify_text(&text),
            Some(api_error::ApiFailure::Credential)
        );
        let text = status_error(500, r#"{"error":{"message":"boom","type":"server_error"}}"#);
        assert_eq!(text, "the model API answered HTTP 500: boom");
        assert_eq!(
            api_error::explain(&text),
            "Error: the model API answered HTTP 500: boom"
        );
        assert_eq!(status_error(500, ""), "the model API answered HTTP 500");
        let refused = transport_error(&ureq::Error::Io(std::io::Error::from(
            std::io::ErrorKind::ConnectionRefused,
        )));
        assert_eq!(
            api_error::classify_text(&refused),
            Some(api_error::ApiFailure::Unreachable)
        );
    }

    #[test]
    fn old_conversations_are_pruned() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..12 {
            let path = dir.path().join(format!("c{i}.json"));
            std::fs::write(&path, b"{}").unwrap();
            let age = Duration::from_secs(1000 - i * 10);
            std::fs::File::options()
                .write(true)
                .open(&path)
                .unwrap()
                .set_modified(SystemTime::now() - age)
                .unwrap();
        }
        // The current one is the oldest file here, and still kept.
        prune(dir.path(), "c0");
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left.len(), KEEP_FILES);
        assert!(left.contains(&"c0.json".to_string()));
        assert!(left.contains(&"c11.json".to_string()) && !left.contains(&"c1.json".to_string()));
    }

    #[test]
    fn ids_are_file_safe() {
        assert!(valid_id(&new_id()));
        assert_ne!(new_id(), new_id());
        for bad in ["", "a/b", "..", "a b", &"x".repeat(65)] {
            assert!(!valid_id(bad), "{bad}");
        }
    }
}
