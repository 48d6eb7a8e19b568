//! Settings and manifest, without the network.

use nanoclaw_plugin_api::kit::testing::MemoryHost;
use serde_json::json;

use super::*;

const TOKEN: &str = "EAAJB3ZCfakeWhatsAppSystemUserToken";
const SECRET: &str = "app-secret-123";
const VERIFY: &str = "verify-token-123";

fn create(settings: serde_json::Value) -> Result<WhatsAppChannel, PluginError> {
    WhatsAppChannel::create(Context {
        instance_name: "whatsapp".into(),
        settings_json: settings.to_string(),
        data_dir: std::env::temp_dir(),
        extra_json: String::new(),
        host: MemoryHost::new().host(),
    })
}

fn base(extra: serde_json::Value) -> serde_json::Value {
    let mut v = json!({"access_token": TOKEN, "app_secret": SECRET, "verify_token": VERIFY,
                       "phone_number_id": "106540352242922"});
    for (k, x) in extra.as_object().into_iter().flatten() {
        if x.is_null() {
            v.as_object_mut().unwrap().remove(k);
        } else {
            v[k] = x.clone();
        }
    }
    v
}

fn config_error(settings: serde_json::Value) -> String {
    let err = create(settings).err().expect("should be refused");
    assert_eq!(err.kind, ErrorKind::CONFIG, "{err}");
    for s in [TOKEN, SECRET, VERIFY] {
        assert!(!err.message.contains(s), "secret echoed: {err}");
    }
    err.message.to_string()
}

#[test]
fn settings_are_validated() {
    create(base(json!({}))).expect("minimal");
    for key in [
        "access_token",
        "app_secret",
        "verify_token",
        "phone_number_id",
    ] {
        assert!(config_error(base(json!({ key: null }))).contains(key));
    }
    assert!(
        config_error(base(json!({"phone_number_id": "+1 555 0100"}))).contains("phone_number_id")
    );
    assert!(config_error(base(json!({"app_secret": "x"}))).contains("app_secret"));
    assert!(config_error(base(json!({"api_base_url": "ftp://x"}))).contains("api_base_url"));
    assert!(config_error(base(json!({"media_hosts": ["nope"]}))).contains("media_hosts"));
    assert!(config_error(base(json!({"send_per_sec": 0}))).contains("send_per_sec"));
    assert!(config_error(base(json!({"max_event_age_secs": 5}))).contains("max_event_age_secs"));
    assert!(config_error(base(json!({"colour": 1}))).contains("colour"));
}

#[test]
fn manifest() {
    let info = WhatsAppChannel::INFO;
    assert_eq!(info.channel_type, "whatsapp");
    assert_eq!(info.markup, Markup::WhatsApp);
    assert_eq!(info.max_text_length, 4096);
    assert_eq!(info.text_unit, LengthUnit::Chars);
    for cap in [
        Capabilities::REACTIONS,
        Capabilities::FILES,
        Capabilities::BUTTONS,
        Capabilities::WEBHOOK,
    ] {
        assert!(info.capabilities.contains(cap));
    }
    // Direct-addressable: the wa_id is the chat.
    assert!(!info.capabilities.contains(Capabilities::OPEN_DM));
    assert!(!info.capabilities.contains(Capabilities::EDIT));
}

#[test]
fn wa_ids() {
    assert!(is_wa_id("16505551234"));
    assert!(!is_wa_id("+16505551234"));
    assert!(!is_wa_id("1234"));
    assert!(!is_wa_id(""));
}

#[test]
fn hostile_ids_do_not_change_the_endpoint() {
    let base = ApiBase::parse("api_base_url", "http://127.0.0.1:9/v21.0", &[]).expect("base");
    let api = Api::new(&WhatsApp::INFO, &base, Secret::new(TOKEN), 10.0).expect("api");
    let url = |segments: &[&str]| api.url(segments).map(|u| u.to_string());
    assert_eq!(
        url(&["106540352242922", "media"]).unwrap(),
        "http://127.0.0.1:9/v21.0/106540352242922/media"
    );
    assert_eq!(
        url(&["a/b c"]).unwrap(),
        "http://127.0.0.1:9/v21.0/a%2Fb%20c"
    );
    // A media id `..` used to become `GET /` on the Graph host.
    for id in ["", ".", ".."] {
        let err = url(&[id]).expect_err(id);
        assert_eq!(err.kind, ErrorKind::INVALID_INPUT, "{err}");
    }
}
