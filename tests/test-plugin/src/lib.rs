//! A scriptable channel plugin (channel type `test`) for the host's tests.
//!
//! It is a real cdylib loaded through the real ABI. Settings (JSON) script its behaviour:
//!
//! * `create`, `start`, `prepare`, `deliver`: `"ok"` (default) | `"error"` | `"panic"` |
//!   `"hang"`; `hang` sleeps `hang_ms` (default one hour) and then succeeds.
//! * `prepare` splits the text verbatim (the kit's split) into parts of at most 4096
//!   characters, or `part_chars` when set; files and buttons go with the last part.
//! * `record_path`: every `deliver`, `set_typing` and `open_dm` call is appended to this file
//!   as one JSON line.
//! * `hold_dir`: a delivered text with `[hold:<name>:before|after]` parks the call until the
//!   test releases it (see [`Settings`]), so a test can kill the host mid-call.
//!
//! Webhooks inject traffic through the boundary: a `POST` with
//! `{chat_id, message_id?, thread_id?, sender_handle?, sender_name?, text, is_group?, mentioned?}`
//! calls `on_inbound` and answers `200 {"ok":true}`, or `500 {"error":…}` when the host
//! refuses; a `POST` to `/action` with `{chat_id, message_id, clicker_handle, action_id}`
//! calls `on_action`.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use nanoclaw_plugin_api::kit::{TextLimit, now_ms, prelude::*, prepare};
use serde::Deserialize;
use serde_json::json;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Behaviour {
    #[default]
    Ok,
    Error,
    Panic,
    Hang,
}

fn default_hang_ms() -> u64 {
    3_600_000
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    #[serde(default)]
    create: Behaviour,
    #[serde(default)]
    start: Behaviour,
    #[serde(default)]
    prepare: Behaviour,
    #[serde(default)]
    deliver: Behaviour,
    #[serde(default)]
    part_chars: Option<usize>,
    #[serde(default = "default_hang_ms")]
    hang_ms: u64,
    #[serde(default)]
    record_path: Option<PathBuf>,
    /// Where `[hold:<name>:before|after]` in a delivered text parks the call: the plugin
    /// writes `<name>.held` here and waits for `<name>.release` (at most `hang_ms`), before
    /// recording the message (`before`: the platform never took it) or after (`after`: it
    /// took it, the answer never came back). A test kills the host meanwhile.
    #[serde(default)]
    hold_dir: Option<PathBuf>,
}

impl Settings {
    fn act(&self, behaviour: Behaviour, what: &str) -> Result<(), PluginError> {
        match behaviour {
            Behaviour::Ok => Ok(()),
            Behaviour::Error => Err(PluginError::other(format!("{what} failed as configured"))),
            Behaviour::Panic => panic!("{what} panicked as configured"),
            Behaviour::Hang => {
                std::thread::sleep(Duration::from_millis(self.hang_ms));
                Ok(())
            }
        }
    }
}

#[derive(Deserialize)]
struct InboundPayload {
    chat_id: String,
    #[serde(default)]
    message_id: Option<String>,
    #[serde(default)]
    thread_id: Option<String>,
    #[serde(default)]
    sender_handle: Option<String>,
    #[serde(default)]
    sender_name: Option<String>,
    text: String,
    #[serde(default)]
    is_group: bool,
    #[serde(default)]
    mentioned: bool,
}

#[derive(Deserialize)]
struct ActionPayload {
    chat_id: String,
    message_id: String,
    clicker_handle: String,
    action_id: String,
}

struct TestChannel {
    host: Host,
    settings: Settings,
    record: Option<Mutex<File>>,
    next_id: AtomicU64,
    last_ingest_ms: AtomicI64,
}

impl TestChannel {
    fn record(&self, line: serde_json::Value) -> Result<(), PluginError> {
        let Some(file) = &self.record else {
            return Ok(());
        };
        let mut file = file
            .lock()
            .map_err(|_| PluginError::other("record file lock poisoned"))?;
        writeln!(file, "{line}").map_err(|e| PluginError::other(format!("record: {e}")))
    }

    fn inbound(&self, body: &[u8]) -> Result<(), PluginError> {
        let p: InboundPayload = serde_json::from_slice(body)
            .map_err(|e| PluginError::invalid_input(format!("bad inbound JSON: {e}")))?;
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        let event = InboundEvent {
            chat_id: p.chat_id.into(),
            thread_id: p.thread_id.map(RString::from).into(),
            message_id: p.message_id.unwrap_or_else(|| format!("in-{n}")).into(),
            sender: p
                .sender_handle
                .map(|handle| Sender {
                    handle: handle.into(),
                    display_name: p.sender_name.map(RString::from).into(),
                    is_bot: false,
                })
                .into(),
            is_group: p.is_group,
            mentioned: p.mentioned,
            text: p.text.into(),
            timestamp_ms: now_ms(),
            ..InboundEvent::default()
        };
        self.last_ingest_ms.store(now_ms(), Ordering::Relaxed);
        self.host.on_inbound(event)
    }

    fn action(&self, body: &[u8]) -> Result<(), PluginError> {
        let p: ActionPayload = serde_json::from_slice(body)
            .map_err(|e| PluginError::invalid_input(format!("bad action JSON: {e}")))?;
        self.host.on_action(ActionEvent {
            chat_id: p.chat_id.into(),
            message_id: p.message_id.into(),
            clicker: Sender {
                handle: p.clicker_handle.into(),
                ..Sender::default()
            },
            action_id: p.action_id.into(),
            ..ActionEvent::default()
        })
    }
}

impl TestChannel {
    /// `[hold:<name>:before|after]` in `text`, if holds are set up and this one was not
    /// released yet: the name and whether to hold after recording.
    fn hold_of(&self, text: &str) -> Option<(String, bool)> {
        let dir = self.settings.hold_dir.as_ref()?;
        let start = text.find("[hold:")?;
        let rest = &text[start + 6..];
        let (spec, _) = rest.split_once(']')?;
        let (name, when) = spec.split_once(':')?;
        if dir.join(format!("{name}.release")).exists() {
            return None;
        }
        Some((name.to_string(), when == "after"))
    }

    fn hold(&self, name: &str) {
        let Some(dir) = &self.settings.hold_dir else {
            return;
        };
        let _ = std::fs::write(dir.join(format!("{name}.held")), b"");
        let release = dir.join(format!("{name}.release"));
        let end = std::time::Instant::now() + Duration::from_millis(self.settings.hang_ms);
        while !release.exists() && std::time::Instant::now() < end {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Channel for TestChannel {
    const INFO: ChannelInfo = ChannelInfo::new("Test", "test", env!("CARGO_PKG_VERSION"))
        .max_text_length(4096)
        .capabilities(
            Capabilities::OPEN_DM
                .with(Capabilities::TYPING)
                .with(Capabilities::WEBHOOK)
                .with(Capabilities::BUTTONS)
                .with(Capabilities::FILES),
        )
        .description("Scriptable plugin for the host's tests");

    fn create(ctx: Context) -> Result<Self, PluginError> {
        let settings: Settings = ctx.settings()?;
        settings.act(settings.create, "create")?;
        let record = match &settings.record_path {
            Some(path) => Some(Mutex::new(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|e| {
                        PluginError::config(format!("record_path {}: {e}", path.display()))
                    })?,
            )),
            None => None,
        };
        tracing::info!(instance = ctx.instance_name.as_str(), "test plugin created");
        Ok(Self {
            host: ctx.host,
            settings,
            record,
            next_id: AtomicU64::new(1),
            last_ingest_ms: AtomicI64::new(0),
        })
    }

    fn start(&self) -> Result<(), PluginError> {
        self.settings.act(self.settings.start, "start")
    }

    fn render(&self, m: OutboundMessage) -> Result<Vec<OutboundMessage>, PluginError> {
        self.settings.act(self.settings.prepare, "prepare")?;
        let limit = self
            .settings
            .part_chars
            .map_or(Self::INFO.text_limit(), |max| {
                TextLimit::new(max, LengthUnit::Chars)
            });
        prepare::prepare_with(m, Markup::Verbatim, limit)
    }

    fn deliver(&self, m: OutboundMessage) -> Result<Option<String>, PluginError> {
        self.settings.act(self.settings.deliver, "deliver")?;
        let hold = self.hold_of(m.text.as_str());
        if let Some((name, false)) = &hold {
            self.hold(name);
        }
        let id = format!("msg-{}", self.next_id.fetch_add(1, Ordering::Relaxed));
        let extra: serde_json::Value =
            serde_json::from_str(m.extra_json.as_str()).unwrap_or(serde_json::Value::Null);
        self.record(json!({
            "call": "deliver",
            "at_us": now_us(),
            "id": id,
            "op": m.op.to_string(),
            "chat_id": m.chat_id.as_str(),
            "thread_id": m.thread_id.as_ref().map(RString::as_str).into_option(),
            "text": m.text.as_str(),
            "target_message_id": m.target_message_id.as_ref().map(RString::as_str).into_option(),
            "reaction": m.reaction.as_str(),
            "buttons": m.buttons.iter().map(|b| json!({"id": b.id.as_str(), "label": b.label.as_str()})).collect::<Vec<_>>(),
            "idempotency_key": extra.get("idempotency_key"),
            // The head of each file's content, so tests can tell what the host actually sent.
            "files": m.files.iter().map(|f| json!({
                "name": f.name.as_str(),
                "size": f.data.len(),
                "head": String::from_utf8_lossy(&f.data[..f.data.len().min(4096)]),
            })).collect::<Vec<_>>(),
        }))?;
        if let Some((name, true)) = &hold {
            self.hold(name);
        }
        Ok(Some(id))
    }

    fn set_typing(&self, chat_id: &str, thread_id: Option<&str>) {
        if let Err(e) =
            self.record(json!({"call": "set_typing", "chat_id": chat_id, "thread_id": thread_id}))
        {
            tracing::warn!("set_typing: {e}");
        }
    }

    fn open_dm(&self, user_handle: &str) -> Result<String, PluginError> {
        self.record(json!({"call": "open_dm", "user_handle": user_handle}))?;
        Ok(format!("dm-{user_handle}"))
    }

    fn handle_webhook(&self, req: WebhookRequest) -> Result<WebhookResponse, PluginError> {
        if req.method.as_str() != "POST" {
            return Ok(WebhookResponse::text(405, "method not allowed"));
        }
        let result = match req.path.as_str() {
            "/action" => self.action(&req.body),
            _ => self.inbound(&req.body),
        };
        Ok(match result {
            Ok(()) => WebhookResponse::json(200, r#"{"ok":true}"#),
            Err(e) if e.kind == ErrorKind::INVALID_INPUT => {
                WebhookResponse::json(400, &json!({"error": e.to_string()}).to_string())
            }
            Err(e) => WebhookResponse::json(500, &json!({"error": e.to_string()}).to_string()),
        })
    }

    fn health(&self) -> Health {
        Health::ok(self.last_ingest_ms.load(Ordering::Relaxed))
    }

    fn extension(&self, method: &str, args_json: &str) -> Result<String, PluginError> {
        match method {
            "echo" => Ok(args_json.to_owned()),
            "panic" => panic!("extension panic requested"),
            _ => Err(PluginError::unsupported(format_args!(
                "extension method `{method}`"
            ))),
        }
    }
}

nanoclaw_plugin_api::export_plugin!(TestChannel);

/// Wall-clock microseconds, so benchmarks can time a round trip from outside.
fn now_us() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros())
}
