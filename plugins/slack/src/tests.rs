//! Settings, manifest and form parsing, without the network.

use nanoclaw_plugin_api::kit::testing::MemoryHost;
use serde_json::json;

use super::*;

const BOT: &str = "xoxb-1111-2222-abcdefghijkl";
const APP: &str = "xapp-1-A111-2222-abcdef";

fn create(settings: serde_json::Value) -> Result<SlackChannel, PluginError> {
    SlackChannel::create(Context {
        instance_name: "slack".into(),
        settings_json: settings.to_string(),
        data_dir: std::env::temp_dir(),
        extra_json: String::new(),
        host: MemoryHost::new().host(),
    })
}

fn config_error(settings: serde_json::Value) -> String {
    let err = create(settings).err().expect("should be refused");
    assert_eq!(err.kind, ErrorKind::CONFIG, "{err}");
    assert!(!err.message.contains(BOT), "token echoed: {err}");
    err.message.to_string()
}

#[test]
fn settings_are_validated() {
    let socket = create(json!({"bot_token": BOT, "app_token": APP})).expect("socket mode");
    assert_eq!(socket.transport, Transport::SocketMode);
    assert!(socket.verifier.is_none());
    let events =
        create(json!({"bot_token": BOT, "signing_secret": "8f742231b10e8888abcd99yyyzzz85a5"}))
            .expect("events api");
    assert_eq!(events.transport, Transport::EventsApi);
    assert!(config_error(json!({})).contains("bot_token"));
    assert!(
        config_error(json!({"bot_token": "xoxp-123456789", "app_token": APP})).contains("xoxb-")
    );
    assert!(config_error(json!({"bot_token": BOT, "app_token": "nope"})).contains("xapp-"));
    assert!(config_error(json!({"bot_token": BOT})).contains("signing_secret"));
    assert!(
        config_error(json!({"bot_token": BOT, "transport": "socket_mode"})).contains("app_token")
    );
    assert!(
        config_error(json!({"bot_token": BOT, "app_token": APP, "transport": "rtm"}))
            .contains("rtm")
    );
    assert!(
        config_error(json!({"bot_token": BOT, "app_token": APP, "colour": 1})).contains("colour")
    );
    assert!(
        config_error(json!({"bot_token": BOT, "app_token": APP, "api_base_url": "ftp://x"}))
            .contains("api_base_url")
    );
    assert!(
        config_error(json!({"bot_token": BOT, "app_token": APP, "post_per_sec": 0}))
            .contains("post_per_sec")
    );
    assert!(
        config_error(json!({"bot_token": BOT, "app_token": APP, "file_hosts": ["files"]}))
            .contains("file_hosts")
    );
}

#[test]
fn manifest() {
    let info = SlackChannel::INFO;
    assert_eq!(info.channel_type, "slack");
    assert_eq!(info.markup, Markup::SlackMrkdwn);
    assert_eq!(info.max_text_length, 3000);
    assert!(info.capabilities.contains(Capabilities::OPEN_DM));
    assert!(info.capabilities.contains(Capabilities::THREADS));
    assert!(info.capabilities.contains(Capabilities::WEBHOOK));
    assert!(!info.capabilities.contains(Capabilities::TYPING));
}

#[test]
fn form_bodies_are_decoded() {
    let fields = form_fields(b"payload=%7B%22a%22%3A%22x+y%22%7D&command=%2Fhi");
    assert_eq!(fields[0], ("payload".into(), r#"{"a":"x y"}"#.into()));
    assert_eq!(fields[1], ("command".into(), "/hi".into()));
}
