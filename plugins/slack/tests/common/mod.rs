//! The Slack channel under test against the fake (`nanoclaw-fake-slack`), and helpers to
//! sign webhook requests and read fixtures.

#![allow(dead_code)]

use std::time::Duration;

pub use nanoclaw_fake_slack::*;
use nanoclaw_plugin_api::kit::prelude::*;
use nanoclaw_plugin_api::kit::testing::MemoryHost;
use nanoclaw_plugin_slack::SlackChannel;
use serde_json::{Value, json};

// ---- the channel under test --------------------------------------------------------------

pub struct Bench {
    pub fake: FakeSlack,
    pub mem: MemoryHost,
    pub channel: SlackChannel,
}

pub fn create(
    fake: &FakeSlack,
    mem: &MemoryHost,
    mut settings: Value,
) -> Result<SlackChannel, PluginError> {
    settings["api_base_url"] = json!(fake.api_url());
    settings["file_hosts"] = json!([fake.base_url()]);
    SlackChannel::create(Context {
        instance_name: "slack".into(),
        settings_json: settings.to_string(),
        data_dir: std::env::temp_dir(),
        extra_json: String::new(),
        host: mem.host(),
    })
}

/// An Events API channel, started.
pub fn events_api() -> Bench {
    let fake = FakeSlack::start();
    let mem = MemoryHost::new();
    let channel = create(
        &fake,
        &mem,
        json!({"bot_token": BOT_TOKEN, "signing_secret": SIGNING_SECRET, "post_per_sec": 50}),
    )
    .expect("create");
    channel.start().expect("start");
    Bench { fake, mem, channel }
}

/// A Socket Mode channel, started (its socket connects in the background).
pub fn socket_mode() -> Bench {
    let fake = FakeSlack::start();
    let mem = MemoryHost::new();
    let channel = create(
        &fake,
        &mem,
        json!({"bot_token": BOT_TOKEN, "app_token": APP_TOKEN, "post_per_sec": 50}),
    )
    .expect("create");
    channel.start().expect("start");
    Bench { fake, mem, channel }
}

pub fn request(body: &[u8], content_type: &str, headers: &[(&str, String)]) -> WebhookRequest {
    let mut all = vec![Tuple2("content-type".into(), content_type.into())];
    all.extend(
        headers
            .iter()
            .map(|(k, v)| Tuple2(RString::from(*k), RString::from(v.as_str()))),
    );
    WebhookRequest {
        method: "POST".into(),
        path: "/".into(),
        query: "".into(),
        headers: all.into(),
        body: body.to_vec().into(),
    }
}

/// A request signed as Slack signs it, `age` seconds ago.
pub fn signed_at(
    body: &[u8],
    content_type: &str,
    age: i64,
    extra: &[(&str, String)],
) -> WebhookRequest {
    let ts = now_secs() - age;
    let mut headers = vec![
        ("x-slack-request-timestamp", ts.to_string()),
        ("x-slack-signature", signature(SIGNING_SECRET, ts, body)),
    ];
    headers.extend(extra.iter().cloned());
    request(body, content_type, &headers)
}

pub fn signed_json(body: &Value) -> WebhookRequest {
    signed_at(body.to_string().as_bytes(), "application/json", 0, &[])
}

/// A fixture from `tests/fixtures/`.
pub fn fixture(name: &str) -> Value {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    f()
}
