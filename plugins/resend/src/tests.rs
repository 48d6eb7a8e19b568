//! Settings and manifest, without the network.

use nanoclaw_plugin_api::kit::testing::MemoryHost;
use serde_json::json;

use super::*;

const KEY: &str = "re_123456789_abcdefgh";
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn create(settings: serde_json::Value) -> Result<ResendChannel, PluginError> {
    ResendChannel::create(Context {
        instance_name: "resend".into(),
        settings_json: settings.to_string(),
        data_dir: std::env::temp_dir(),
        extra_json: String::new(),
        host: MemoryHost::new().host(),
    })
}

fn config_error(settings: serde_json::Value) -> String {
    let err = create(settings).err().expect("should be refused");
    assert_eq!(err.kind, ErrorKind::CONFIG, "{err}");
    assert!(!err.message.contains(KEY), "key echoed: {err}");
    err.message.to_string()
}

fn base() -> serde_json::Value {
    json!({"api_key": KEY, "webhook_secret": SECRET, "from_address": "Agent@Bot.Example.com"})
}

#[test]
fn settings_are_validated() {
    let ok = create(base()).expect("valid");
    assert_eq!(ok.from_address, "agent@bot.example.com");
    assert_eq!(ok.from_header, "NanoClaw <agent@bot.example.com>");
    assert_eq!(ok.new_subject, "Message from NanoClaw");
    assert!(ok.check_dmarc);
    assert!(config_error(json!({})).contains("api_key"));
    let mut bad = base();
    bad["api_key"] = json!("sk_live_123456789");
    assert!(config_error(bad).contains("re_"));
    let mut bad = base();
    bad["webhook_secret"] = json!("not base64 !!");
    assert!(config_error(bad).contains("whsec_"));
    let mut bad = base();
    bad["from_address"] = json!("agent");
    assert!(config_error(bad).contains("from_address"));
    let mut bad = base();
    bad["from_name"] = json!("Evil\r\nBcc: x@y.z");
    assert!(config_error(bad).contains("from_name"));
    let mut bad = base();
    bad["sender_auth"] = json!("spf");
    assert!(config_error(bad).contains("sender_auth"));
    let mut bad = base();
    bad["attachment_hosts"] = json!(["ftp://x"]);
    assert!(config_error(bad).contains("attachment_hosts"));
    let mut bad = base();
    bad["unknown"] = json!(1);
    config_error(bad);
}

#[test]
fn manifest_declares_what_email_can_do() {
    let caps = Resend::INFO.capabilities;
    assert!(caps.contains(Capabilities::WEBHOOK));
    assert!(caps.contains(Capabilities::FILES));
    assert!(caps.contains(Capabilities::THREADS));
    for missing in [
        Capabilities::OPEN_DM,
        Capabilities::BUTTONS,
        Capabilities::EDIT,
        Capabilities::REACTIONS,
        Capabilities::TYPING,
    ] {
        assert!(!caps.contains(missing));
    }
    assert_eq!(Resend::INFO.channel_type, "resend");
}

#[test]
fn idempotency_keys_fit_resend() {
    let mut m = OutboundMessage::default();
    assert_eq!(idempotency_key(&m), None);
    m.extra_json = json!({"idempotency_key": "s1/k2/0"}).to_string().into();
    assert_eq!(idempotency_key(&m).as_deref(), Some("s1/k2/0"));
    m.extra_json = json!({"idempotency_key": "x".repeat(300)})
        .to_string()
        .into();
    let long = idempotency_key(&m).unwrap();
    assert!(long.len() <= 256 && long.starts_with("nanoclaw-"));
    assert_eq!(idempotency_key(&m), Some(long));
}
