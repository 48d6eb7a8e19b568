//! Settings and manifest, without the network.

use nanoclaw_plugin_api::kit::testing::MemoryHost;
use serde_json::json;

use super::*;

const TOKEN: &str = "ZmFrZS13ZWJleC1ib3QtdG9rZW4tMDEyMzQ1Njc4OWFiY2RlZg";
const SECRET: &str = "a-webhook-secret";

fn create(settings: serde_json::Value) -> Result<WebexChannel, PluginError> {
    WebexChannel::create(Context {
        instance_name: "webex".into(),
        settings_json: settings.to_string(),
        data_dir: std::env::temp_dir(),
        extra_json: String::new(),
        host: MemoryHost::new().host(),
    })
}

fn config_error(settings: serde_json::Value) -> String {
    let err = create(settings).err().expect("should be refused");
    assert_eq!(err.kind, ErrorKind::CONFIG, "{err}");
    assert!(!err.message.contains(TOKEN), "token echoed: {err}");
    assert!(!err.message.contains(SECRET), "secret echoed: {err}");
    err.message.to_string()
}

#[test]
fn settings_are_validated() {
    let ok = create(json!({"bot_token": TOKEN, "webhook_secret": SECRET})).expect("minimal");
    assert!(ok.channel().webhook_url.is_none());
    assert!(config_error(json!({"webhook_secret": SECRET})).contains("bot_token"));
    assert!(config_error(json!({"bot_token": TOKEN})).contains("webhook_secret"));
    assert!(
        config_error(json!({"bot_token": "short", "webhook_secret": SECRET})).contains("bot_token")
    );
    assert!(
        config_error(json!({"bot_token": TOKEN, "webhook_secret": "x"})).contains("webhook_secret")
    );
    let base = |extra: serde_json::Value| {
        let mut v = json!({"bot_token": TOKEN, "webhook_secret": SECRET});
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        v
    };
    assert!(config_error(base(json!({"api_base_url": "ftp://x"}))).contains("api_base_url"));
    assert!(config_error(base(json!({"webhook_url": "not a url"}))).contains("webhook_url"));
    assert!(config_error(base(json!({"file_hosts": ["files"]}))).contains("file_hosts"));
    assert!(config_error(base(json!({"post_per_sec": 0}))).contains("post_per_sec"));
    assert!(config_error(base(json!({"max_event_age_secs": 1}))).contains("max_event_age_secs"));
    assert!(config_error(base(json!({"colour": 1}))).contains("colour"));
}

#[test]
fn manifest() {
    let info = WebexChannel::INFO;
    assert_eq!(info.channel_type, "webex");
    assert_eq!(info.markup, Markup::TeamsMarkdown);
    assert_eq!(info.max_text_length, 7439);
    assert_eq!(info.text_unit, LengthUnit::Bytes);
    for cap in [
        Capabilities::OPEN_DM,
        Capabilities::EDIT,
        Capabilities::FILES,
        Capabilities::BUTTONS,
        Capabilities::THREADS,
        Capabilities::WEBHOOK,
    ] {
        assert!(info.capabilities.contains(cap));
    }
    assert!(!info.capabilities.contains(Capabilities::REACTIONS));
    assert!(!info.capabilities.contains(Capabilities::TYPING));
}

#[test]
fn webex_ids() {
    assert!(is_webex_id("Y2lzY29zcGFyazovL3VzL1JPT00vdGVhbQ"));
    assert!(is_webex_id("Y2lzY29zcGFyazovL3VzL1JPT00vdGVhbQ=="));
    assert!(!is_webex_id(""));
    assert!(!is_webex_id("../x"));
    assert!(!is_webex_id(&"a".repeat(600)));
}

#[test]
fn hostile_ids_do_not_change_the_endpoint() {
    let base = ApiBase::parse("api_base_url", "http://127.0.0.1:9/v1/", &[]).expect("base");
    let api = Api::new(&Webex::INFO, &base, Secret::new(TOKEN), 1.0).expect("api");
    let url = |segments: &[&str]| api.url(segments).map(|u| u.to_string());
    assert_eq!(
        url(&["webhooks", "Y2lzY29z/a?b"]).unwrap(),
        "http://127.0.0.1:9/v1/webhooks/Y2lzY29z%2Fa%3Fb"
    );
    // `webhooks/..` used to become `PUT /v1/webhooks` or `PUT /v1/`.
    for id in ["", ".", ".."] {
        let err = url(&["webhooks", id]).expect_err(id);
        assert_eq!(err.kind, ErrorKind::INVALID_INPUT, "{err}");
    }
}
