//! The inbound side and the settings, against the kit's in-memory host. The outbound side
//! talks to a fake of the platform: see `tests/api.rs`.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use nanoclaw_plugin_api::kit::testing::MemoryHost;
use serde_json::{Value, json};
use sha2::Sha256;

use super::*;

/// The webhook signing key; the setting is `whsec_` + its base64.
const KEY: &[u8] = b"example-signing-key-0123456789ab";
const TOKEN: &str = "tok-3f9a1c";

fn secret() -> String {
    format!("whsec_{}", STANDARD.encode(KEY))
}

fn settings() -> Value {
    // Never contacted here: only `start` and `deliver` talk to the API.
    json!({"api_base_url": "http://127.0.0.1:9", "api_token": TOKEN, "webhook_secret": secret()})
}

fn create(mem: &MemoryHost, settings: Value) -> Result<ExampleChannel, PluginError> {
    ExampleChannel::create(Context {
        instance_name: "example".into(),
        settings_json: settings.to_string(),
        data_dir: std::env::temp_dir(),
        extra_json: String::new(),
        host: mem.host(),
    })
}

fn now() -> i64 {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs();
    i64::try_from(secs).expect("seconds fit")
}

/// `v1,<base64 HMAC-SHA256 of "<id>.<timestamp>.<body>">`, as the platform signs.
fn sign(key: &[u8], id: &str, timestamp: i64, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key");
    mac.update(format!("{id}.{timestamp}.{body}").as_bytes());
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

fn request(headers: &[(&str, String)], body: &str) -> WebhookRequest {
    WebhookRequest {
        method: "POST".into(),
        path: "/".into(),
        headers: headers
            .iter()
            .map(|(name, value)| Tuple2(RString::from(*name), RString::from(value.as_str())))
            .collect(),
        body: body.as_bytes().to_vec().into(),
        ..WebhookRequest::default()
    }
}

fn signed_at(id: &str, timestamp: i64, body: &str) -> WebhookRequest {
    request(
        &[
            ("webhook-id", id.to_owned()),
            ("webhook-timestamp", timestamp.to_string()),
            ("webhook-signature", sign(KEY, id, timestamp, body)),
        ],
        body,
    )
}

fn signed(body: &Value) -> WebhookRequest {
    signed_at("msg_1", now(), &body.to_string())
}

fn message(id: &str, text: &str) -> Value {
    json!({"type": "message", "id": id, "chat": {"id": "c1", "is_group": false},
           "sender": {"id": "u1", "name": "Ann"}, "text": text, "mentioned": false})
}

fn status(channel: &ExampleChannel, request: WebhookRequest) -> u16 {
    channel.handle_webhook(request).expect("webhook").status
}

#[test]
fn a_signed_message_reaches_the_host_once() {
    let mem = MemoryHost::new();
    let channel = create(&mem, settings()).expect("create");
    assert_eq!(channel.health().last_ingest_ms, 0);
    assert_eq!(status(&channel, signed(&message("m1", "hi"))), 200);
    // The platform redelivers (our answer got lost): stored once all the same.
    assert_eq!(status(&channel, signed(&message("m1", "hi"))), 200);
    assert_eq!(status(&channel, signed(&message("m2", "again"))), 200);

    let inbound = mem.inbound();
    let texts: Vec<&str> = inbound.iter().map(|e| e.text.as_str()).collect();
    assert_eq!(texts, ["hi", "again"]);
    let first = &inbound[0];
    assert_eq!(
        (first.chat_id.as_str(), first.message_id.as_str()),
        ("c1", "m1")
    );
    assert!(
        !first.is_group && first.mentioned,
        "a DM counts as a mention"
    );
    let sender = first.sender.as_ref().into_option().expect("sender");
    assert_eq!(sender.handle.as_str(), "u1");
    assert_eq!(
        sender
            .display_name
            .as_ref()
            .map(RString::as_str)
            .into_option(),
        Some("Ann")
    );
    assert!(channel.health().last_ingest_ms > 0);
}

#[test]
fn group_messages_are_mentions_only_when_the_platform_says_so() {
    let mem = MemoryHost::new();
    let channel = create(&mem, settings()).expect("create");
    let group = |id: &str, mentioned: bool| {
        json!({"type": "message", "id": id, "chat": {"id": "g1", "is_group": true, "name": "Team"},
               "sender": {"id": "u2"}, "text": "hello", "mentioned": mentioned})
    };
    assert_eq!(status(&channel, signed(&group("m1", false))), 200);
    assert_eq!(status(&channel, signed(&group("m2", true))), 200);
    let inbound = mem.inbound();
    assert!(inbound[0].is_group && !inbound[0].mentioned);
    assert!(inbound[1].mentioned);
    assert_eq!(
        inbound[0]
            .chat_name
            .as_ref()
            .map(RString::as_str)
            .into_option(),
        Some("Team")
    );
}

#[test]
fn bad_missing_or_stale_signatures_are_refused_with_401() {
    let mem = MemoryHost::new();
    let channel = create(&mem, settings()).expect("create");
    let body = message("m1", "hi").to_string();
    let t = now();
    let with = |signature: String, timestamp: i64| {
        request(
            &[
                ("webhook-id", "msg_1".to_owned()),
                ("webhook-timestamp", timestamp.to_string()),
                ("webhook-signature", signature),
            ],
            &body,
        )
    };
    let refused = [
        (
            "wrong key",
            with(sign(b"another key", "msg_1", t, &body), t),
        ),
        ("other id", with(sign(KEY, "msg_2", t, &body), t)),
        ("stale", with(sign(KEY, "msg_1", t - 600, &body), t - 600)),
        ("future", with(sign(KEY, "msg_1", t + 600, &body), t + 600)),
        ("garbage", with("v1,not-base64!".to_owned(), t)),
        ("no headers", request(&[], &body)),
    ];
    for (what, request) in refused {
        assert_eq!(status(&channel, request), 401, "{what}");
    }
    // The body is the signed one: a changed body fails too.
    let mut tampered = signed_at("msg_1", t, &body);
    tampered.body = message("m1", "HI").to_string().into_bytes().into();
    assert_eq!(status(&channel, tampered), 401);

    assert!(mem.inbound().is_empty());
    let warnings: Vec<String> = mem
        .logs()
        .into_iter()
        .filter(|l| l.level == LogLevel::WARN)
        .map(|l| l.message)
        .collect();
    assert_eq!(warnings.len(), 7, "{warnings:?}");
    assert!(
        warnings.iter().any(|w| w.contains("outside the")),
        "{warnings:?}"
    );
    assert!(
        warnings.iter().any(|w| w.contains("missing header")),
        "{warnings:?}"
    );
    let key = STANDARD.encode(KEY);
    assert!(!warnings.iter().any(|w| w.contains(&key)), "{warnings:?}");
    assert_eq!(
        channel.health().last_ingest_ms,
        0,
        "nothing verified, nothing ingested"
    );
}

#[test]
fn other_methods_malformed_bodies_and_unknown_types() {
    let mem = MemoryHost::new();
    let channel = create(&mem, settings()).expect("create");
    let mut get = signed(&message("m1", "hi"));
    get.method = "GET".into();
    assert_eq!(status(&channel, get), 405);
    // Signed but not an event: the platform's bug, not worth a redelivery.
    assert_eq!(
        status(&channel, signed_at("msg_1", now(), "{not json")),
        400
    );
    let no_chat = json!({"type": "message", "id": "m1", "sender": {"id": "u1"}, "text": "x"});
    assert_eq!(status(&channel, signed(&no_chat)), 400);
    // A type this channel does not handle is acknowledged, so it is not redelivered.
    let joined = json!({"type": "member_joined", "id": "e7", "chat": {"id": "c1"}});
    assert_eq!(status(&channel, signed(&joined)), 200);
    assert!(mem.inbound().is_empty() && mem.actions().is_empty());
}

#[test]
fn a_host_refusal_is_503_and_the_redelivery_is_taken() {
    let mem = MemoryHost::new();
    let channel = create(&mem, settings()).expect("create");
    mem.set_reject_inbound(Some(PluginError::other("database is locked")));
    assert_eq!(status(&channel, signed(&message("m1", "hi"))), 503);
    assert!(mem.inbound().is_empty());
    mem.set_reject_inbound(None);
    assert_eq!(status(&channel, signed(&message("m1", "hi"))), 200);
    assert_eq!(mem.inbound().len(), 1);
}

#[test]
fn a_button_click_becomes_an_action_once() {
    let mem = MemoryHost::new();
    let channel = create(&mem, settings()).expect("create");
    let click = json!({"type": "button", "id": "e2", "chat": {"id": "c1"},
                       "sender": {"id": "u1", "name": "Ann"}, "message_id": "m9",
                       "action_id": "ncq:q1:0"});
    assert_eq!(status(&channel, signed(&click)), 200);
    assert_eq!(status(&channel, signed(&click)), 200);
    let actions = mem.actions();
    assert_eq!(actions.len(), 1);
    let action = &actions[0];
    assert_eq!(
        (
            action.chat_id.as_str(),
            action.message_id.as_str(),
            action.action_id.as_str()
        ),
        ("c1", "m9", "ncq:q1:0")
    );
    assert_eq!(action.clicker.handle.as_str(), "u1");
    assert!(mem.inbound().is_empty());
}

#[test]
fn settings_are_validated() {
    let mem = MemoryHost::new();
    let refused = |settings: Value| {
        let err = create(&mem, settings).err().expect("should be refused");
        assert_eq!(err.kind, ErrorKind::CONFIG, "{err}");
        assert!(!err.message.contains(TOKEN), "token echoed: {err}");
        err.message.to_string()
    };
    let with = |key: &str, value: Value| {
        let mut s = settings();
        s[key] = value;
        s
    };
    let without = |key: &str| {
        let mut s = settings();
        s.as_object_mut().expect("object").remove(key);
        s
    };
    for key in ["api_base_url", "api_token", "webhook_secret"] {
        assert!(refused(without(key)).contains(key), "{key}");
    }
    assert!(refused(with("colour", json!("red"))).contains("colour"));
    assert!(refused(with("api_token", json!(" "))).contains("api_token"));
    assert!(refused(with("webhook_secret", json!("not base64!"))).contains("whsec_"));
    assert!(refused(with("webhook_secret", json!("whsec_"))).contains("whsec_"));
    assert!(refused(with("rate_per_sec", json!(0))).contains("rate_per_sec"));
    assert!(refused(with("api_base_url", json!("ftp://x"))).contains("api_base_url"));
    let err = refused(with("api_base_url", json!(format!("https://x/{TOKEN}?q"))));
    assert!(err.contains("api_base_url"), "{err}");

    let channel = create(&mem, with("rate_per_sec", json!(2.5))).expect("valid");
    assert_eq!(
        channel.health().status,
        HealthStatus::UNKNOWN,
        "create does not connect"
    );
    channel.teardown();
}

#[test]
fn manifest() {
    let info = ExampleChannel::INFO;
    assert_eq!((info.channel_type, info.max_text_length), ("example", 2000));
    assert_eq!(info.text_unit, LengthUnit::Chars);
    assert!(
        info.capabilities.contains(
            Capabilities::WEBHOOK
                .with(Capabilities::EDIT)
                .with(Capabilities::REACTIONS)
                .with(Capabilities::BUTTONS)
        )
    );
    assert!(!info.capabilities.contains(Capabilities::FILES));
}
