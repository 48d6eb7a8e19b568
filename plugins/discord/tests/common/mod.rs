//! Helpers to run the plugin on a `MemoryHost` against the fake Discord.
#![allow(dead_code)] // each test binary uses a different part

use std::time::{Duration, Instant};

use nanoclaw_plugin_api::kit::testing::MemoryHost;
use nanoclaw_plugin_api::kit::{Channel, Context, Host};
use nanoclaw_plugin_discord::DiscordChannel;
use serde_json::{Value, json};

pub use nanoclaw_fake_discord::*;

pub const WAIT: Duration = Duration::from_secs(10);

pub fn settings(fake: &FakeDiscord) -> Value {
    json!({"bot_token": TOKEN, "api_base_url": fake.api_base_url(), "gateway_url": fake.gateway_url()})
}

pub fn create_with(host: Host, settings: Value) -> DiscordChannel {
    DiscordChannel::create(Context {
        instance_name: "discord".into(),
        settings_json: settings.to_string(),
        data_dir: std::env::temp_dir(),
        extra_json: String::new(),
        host,
    })
    .expect("create")
}

/// A started plugin on `host`, connected (READY or RESUMED seen).
pub fn started(fake: &FakeDiscord, host: Host) -> DiscordChannel {
    let before = fake.identifies().len() + fake.resumes().len();
    let channel = create_with(host, settings(fake));
    channel.start().expect("start");
    wait_until("the gateway session", || {
        fake.identifies().len() + fake.resumes().len() > before && fake.current_session().is_some()
    });
    // READY or RESUMED reached the plugin.
    std::thread::sleep(Duration::from_millis(100));
    channel
}

pub fn wait_for<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

pub fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
    wait_for(what, || check().then_some(()));
}

pub fn texts(mem: &MemoryHost) -> Vec<String> {
    mem.inbound().iter().map(|e| e.text.to_string()).collect()
}

/// A DM `MESSAGE_CREATE` from Ann with this id and text.
pub fn dm(id: u64, content: &str) -> Value {
    let mut message = fixture("message_create_dm");
    message["id"] = json!((1_300_000_000_000_000_000u64 + id).to_string());
    message["content"] = json!(content);
    message
}
