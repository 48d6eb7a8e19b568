//! Example NanoClaw channel plugin: the one to copy when writing your own.
//!
//! * Inbound: the platform POSTs JSON `{chat_id, sender, sender_name?, text, is_group?}` to
//!   the host's `/webhook/example` route, signed with `X-Signature: sha256=<hex HMAC-SHA256
//!   of the body>`. The host hands the request to [`Channel::handle_webhook`]; we verify the
//!   signature over the exact body bytes and call `on_inbound`.
//! * Outbound: the kit's default `prepare` renders the agent's Markdown as plain text and
//!   splits it into parts of at most 2000 characters (from [`ChannelInfo`]); `deliver`
//!   appends one JSON line per part to `outbox_path`.
//!
//! Settings (`[plugins.example.settings]` in plugins.toml):
//! `secret = { env = "EXAMPLE_WEBHOOK_SECRET" }` and `outbox_path = "outbox.jsonl"`
//! (relative paths are inside the instance's private data dir).

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use nanoclaw_plugin_api::kit::{self, now_ms, prelude::*};
use serde::Deserialize;
use serde_json::json;

/// Settings as the host passes them (JSON, secrets already resolved from the environment).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    secret: String,
    outbox_path: PathBuf,
}

/// The JSON body of an inbound webhook.
#[derive(Deserialize)]
struct Incoming {
    chat_id: String,
    sender: String,
    #[serde(default)]
    sender_name: Option<String>,
    text: String,
    #[serde(default)]
    is_group: bool,
}

/// One instance of the channel. Methods are called from host threads, possibly at the
/// same time, so shared state is behind a `Mutex` or atomics.
pub struct ExampleChannel {
    host: Host,
    secret: Vec<u8>,
    outbox: Mutex<File>,
    next_id: AtomicU64,
    last_ingest_ms: AtomicI64,
}

impl Channel for ExampleChannel {
    // The manifest. `channel_type` must be unique among loaded plugins: the host namespaces
    // ids with it (`example:<chat_id>`) and routes `/webhook/example` here.
    const INFO: ChannelInfo = ChannelInfo::new("Example", "example", env!("CARGO_PKG_VERSION"))
        .capabilities(
            Capabilities::WEBHOOK
                .with(Capabilities::EDIT)
                .with(Capabilities::REACTIONS)
                .with(Capabilities::BUTTONS),
        )
        // How outbound text looks: the kit renders Markdown to this markup and splits it
        // within this limit (counted in this unit) before `deliver`.
        .markup(Markup::PlainText)
        .max_text_length(2000)
        .text_unit(LengthUnit::Chars)
        .description("Signed JSON webhook in, JSON lines file out");

    // Validate settings and open files here, but don't connect to anything yet:
    // `nanoclaw plugins check` calls create() without start().
    fn create(ctx: Context) -> Result<Self, PluginError> {
        let settings: Settings = ctx.settings()?;
        if settings.secret.is_empty() {
            return Err(PluginError::config("`secret` must not be empty"));
        }
        let path = ctx.data_dir.join(&settings.outbox_path); // absolute paths stay absolute
        let outbox = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| PluginError::config(format!("outbox {}: {e}", path.display())))?;
        kit::tracing::info!(outbox = %path.display(), "example channel ready");
        Ok(Self {
            host: ctx.host,
            secret: settings.secret.into_bytes(),
            outbox: Mutex::new(outbox),
            next_id: AtomicU64::new(1),
            last_ingest_ms: AtomicI64::new(0),
        })
    }

    // Called once per part the kit's `prepare` made (text rendered and split, buttons on
    // the last part): send it as it is. Return the platform's id of what was posted: the
    // host uses it later as the target of edits and reactions.
    fn deliver(&self, m: OutboundMessage) -> Result<Option<String>, PluginError> {
        let id = format!("out-{}", self.next_id.fetch_add(1, Ordering::Relaxed));
        let part = kit::prepare::PartInfo::of(&m);
        let line = json!({
            "id": id,
            "op": m.op.to_string(),
            "chat_id": m.chat_id.as_str(),
            "text": m.text.as_str(),
            "part": part.as_ref().map(|p| format!("{}/{}", p.index + 1, p.count)),
            "target_message_id": m.target_message_id.as_ref().map(RString::as_str).into_option(),
            "reaction": m.reaction.as_str(),
            "buttons": m.buttons.iter().map(|b| json!([b.id.as_str(), b.label.as_str()])).collect::<Vec<_>>(),
        });
        let mut outbox = self
            .outbox
            .lock()
            .map_err(|_| PluginError::other("outbox lock poisoned"))?;
        writeln!(outbox, "{line}").map_err(|e| PluginError::other(format!("outbox: {e}")))?;
        Ok(Some(id))
    }

    fn handle_webhook(&self, req: WebhookRequest) -> Result<WebhookResponse, PluginError> {
        if req.method.as_str() != "POST" {
            return Ok(WebhookResponse::text(405, "method not allowed"));
        }
        // Verify the signature over the exact bytes received, before anything else.
        let signature = req
            .header("x-signature")
            .and_then(|v| v.strip_prefix("sha256="))
            .unwrap_or_default();
        if !kit::verify_hmac_sha256_hex(&self.secret, &req.body, signature) {
            return Ok(WebhookResponse::text(401, "bad signature"));
        }
        let incoming: Incoming = match serde_json::from_slice(&req.body) {
            Ok(incoming) => incoming,
            Err(e) => return Ok(WebhookResponse::text(400, &format!("bad JSON: {e}"))),
        };
        self.last_ingest_ms.store(now_ms(), Ordering::Relaxed);
        let event = InboundEvent {
            // Raw platform ids: the host adds the `example:` namespace.
            chat_id: incoming.chat_id.into(),
            message_id: format!("in-{}", self.next_id.fetch_add(1, Ordering::Relaxed)).into(),
            sender: RSome(Sender {
                handle: incoming.sender.into(),
                display_name: incoming.sender_name.map(RString::from).into(),
                is_bot: false,
            }),
            is_group: incoming.is_group,
            mentioned: !incoming.is_group, // a DM always counts as a mention
            text: incoming.text.into(),
            ..InboundEvent::default()
        };
        // on_inbound returns once the host has stored the message. Only then do we answer
        // 200; on error the platform gets a 503 and should redeliver.
        Ok(match self.host.on_inbound(event) {
            Ok(()) => WebhookResponse::json(200, r#"{"ok":true}"#),
            Err(e) => {
                kit::tracing::warn!("host refused inbound message: {e}");
                WebhookResponse::text(503, "try again later")
            }
        })
    }

    // Ingest progress is the liveness signal the host watches.
    fn health(&self) -> Health {
        Health::ok(self.last_ingest_ms.load(Ordering::Relaxed))
    }
}

// Generates the exported root module, the ABI marker and the panic guards.
nanoclaw_plugin_api::export_plugin!(ExampleChannel);

#[cfg(test)]
mod tests {
    use super::*;
    use nanoclaw_plugin_api::kit::testing::MemoryHost;

    const SECRET: &str = "s3cret";

    fn channel(mem: &MemoryHost, dir: &std::path::Path) -> ExampleChannel {
        ExampleChannel::create(Context {
            instance_name: "example".into(),
            settings_json: json!({"secret": SECRET, "outbox_path": "outbox.jsonl"}).to_string(),
            data_dir: dir.to_path_buf(),
            extra_json: String::new(),
            host: mem.host(),
        })
        .expect("create")
    }

    fn request(body: &str, signature: &str) -> WebhookRequest {
        WebhookRequest {
            method: "POST".into(),
            path: "/".into(),
            headers: vec![Tuple2("X-Signature".into(), signature.into())].into(),
            body: body.as_bytes().to_vec().into(),
            ..WebhookRequest::default()
        }
    }

    fn signed(body: &str) -> WebhookRequest {
        let sig = kit::hmac_sha256_hex(SECRET.as_bytes(), body.as_bytes());
        request(body, &format!("sha256={sig}"))
    }

    #[test]
    fn signed_webhook_reaches_the_host() {
        let (mem, dir) = (MemoryHost::new(), tempfile::tempdir().expect("tempdir"));
        let ch = channel(&mem, dir.path());
        let body = r#"{"chat_id":"c1","sender":"u1","sender_name":"Ann","text":"hi"}"#;
        let resp = ch.handle_webhook(signed(body)).expect("webhook");
        assert_eq!(resp.status, 200);
        let inbound = mem.inbound();
        assert_eq!(inbound.len(), 1);
        assert_eq!(inbound[0].chat_id.as_str(), "c1");
        assert_eq!(inbound[0].text.as_str(), "hi");
        assert!(inbound[0].mentioned && !inbound[0].is_group);
        let sender = inbound[0].sender.as_ref().into_option().expect("sender");
        assert_eq!(sender.handle.as_str(), "u1");
        assert_eq!(
            sender
                .display_name
                .as_ref()
                .map(RString::as_str)
                .into_option(),
            Some("Ann")
        );
        assert!(ch.health().last_ingest_ms > 0);
    }

    #[test]
    fn bad_signature_method_or_json_is_refused() {
        let (mem, dir) = (MemoryHost::new(), tempfile::tempdir().expect("tempdir"));
        let ch = channel(&mem, dir.path());
        let body = r#"{"chat_id":"c1","sender":"u1","text":"hi"}"#;
        let wrong = kit::hmac_sha256_hex(b"other", body.as_bytes());
        assert_eq!(
            ch.handle_webhook(request(body, &format!("sha256={wrong}")))
                .expect("w")
                .status,
            401
        );
        assert_eq!(ch.handle_webhook(request(body, "")).expect("w").status, 401);
        let mut get = signed(body);
        get.method = "GET".into();
        assert_eq!(ch.handle_webhook(get).expect("w").status, 405);
        assert_eq!(
            ch.handle_webhook(signed("{not json")).expect("w").status,
            400
        );
        assert!(mem.inbound().is_empty());
    }

    #[test]
    fn host_refusal_becomes_503() {
        let (mem, dir) = (MemoryHost::new(), tempfile::tempdir().expect("tempdir"));
        let ch = channel(&mem, dir.path());
        mem.set_reject_inbound(Some(PluginError::other("db locked")));
        let body = r#"{"chat_id":"c1","sender":"u1","text":"hi","is_group":true}"#;
        assert_eq!(ch.handle_webhook(signed(body)).expect("w").status, 503);
    }

    fn outbox(dir: &std::path::Path) -> Vec<serde_json::Value> {
        std::fs::read_to_string(dir.join("outbox.jsonl"))
            .expect("outbox")
            .lines()
            .map(|l| serde_json::from_str(l).expect("json line"))
            .collect()
    }

    #[test]
    fn markdown_is_rendered_and_split_before_deliver() {
        let (mem, dir) = (MemoryHost::new(), tempfile::tempdir().expect("tempdir"));
        let ch = channel(&mem, dir.path());
        let words = "word ".repeat(700);
        let card = OutboundMessage {
            chat_id: "c1".into(),
            text: format!("**Approve?** {}", words.trim_end()).into(),
            buttons: vec![Button {
                id: "ncq:q1:0".into(),
                label: "Yes".into(),
            }]
            .into(),
            ..Default::default()
        };
        // What the host does: prepare, then deliver each part in order.
        let ids = kit::testing::send(&ch, card).expect("send");
        assert_eq!(ids.len(), 2);
        let lines = outbox(dir.path());
        assert!(
            lines[0]["text"]
                .as_str()
                .is_some_and(|t| t.starts_with("Approve? word"))
        );
        assert!(lines.iter().all(|l| {
            l["text"]
                .as_str()
                .is_some_and(|t| t.chars().count() <= 2000)
        }));
        assert_eq!(
            (lines[0]["part"].as_str(), lines[1]["part"].as_str()),
            (Some("1/2"), Some("2/2"))
        );
        assert_eq!(lines[0]["buttons"], json!([]));
        assert_eq!(lines[1]["buttons"], json!([["ncq:q1:0", "Yes"]]));
    }

    #[test]
    fn deliver_appends_json_lines() {
        let (mem, dir) = (MemoryHost::new(), tempfile::tempdir().expect("tempdir"));
        let ch = channel(&mem, dir.path());
        let first = ch
            .deliver(OutboundMessage {
                chat_id: "c1".into(),
                text: "hello".into(),
                ..Default::default()
            })
            .expect("deliver");
        let second = ch
            .deliver(OutboundMessage {
                op: OutboundOp::REACT,
                chat_id: "c1".into(),
                target_message_id: RSome("in-1".into()),
                reaction: "heart".into(),
                ..Default::default()
            })
            .expect("deliver");
        assert_ne!(first, second);
        let lines = outbox(dir.path());
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["text"], "hello");
        assert_eq!(lines[0]["id"].as_str(), first.as_deref());
        assert_eq!(lines[1]["op"], "react");
        assert_eq!(lines[1]["target_message_id"], "in-1");
    }

    #[test]
    fn settings_are_validated() {
        let (mem, dir) = (MemoryHost::new(), tempfile::tempdir().expect("tempdir"));
        let ctx = |settings: serde_json::Value| Context {
            instance_name: "example".into(),
            settings_json: settings.to_string(),
            data_dir: dir.path().to_path_buf(),
            extra_json: String::new(),
            host: mem.host(),
        };
        let err = ExampleChannel::create(ctx(json!({"outbox_path": "x"})))
            .err()
            .expect("missing secret");
        assert_eq!(err.kind, ErrorKind::CONFIG);
        assert!(err.message.contains("secret"), "{err}");
        let err = ExampleChannel::create(ctx(json!({"secret": "", "outbox_path": "x"})))
            .err()
            .expect("empty");
        assert_eq!(err.kind, ErrorKind::CONFIG);
    }
}
