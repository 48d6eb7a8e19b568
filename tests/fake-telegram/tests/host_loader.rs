//! The Telegram channel in the channels library (the cdylib the host loads), loaded by the real host
//! loader through the ABI, against the fake: manifest, start, a DM in, a reply out, health, teardown.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nanoclaw::config::secrets::SecretSource;
use nanoclaw::plugins::registry::{self, LoadOptions};
use nanoclaw::plugins::{InstanceName, LibraryLocator, PluginManifest, PluginsConfig};
use nanoclaw_fake_telegram::{FakeTelegram, Person, UserMessage};
use nanoclaw_plugin_api::abi::{Capabilities, HealthStatus, HostServicesBox, OutboundMessage};
use nanoclaw_plugin_api::kit::testing::MemoryHost;

const TOKEN: &str = "123456:ABCdefGHIjklMNOpqrSTUvwxYZ0123456789";

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Builds the channels library and returns the directory holding it.
fn plugin_dir() -> PathBuf {
    let target = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if Path::new(&dir).is_absolute() => PathBuf::from(dir),
        Some(dir) => workspace_root().join(dir),
        None => workspace_root().join("target"),
    };
    let out = Command::new(option_env!("CARGO").unwrap_or("cargo"))
        .arg("build")
        .arg("--manifest-path")
        .arg(workspace_root().join("Cargo.toml"))
        .args(["-p", "nanoclaw-plugin-channels"])
        .env("CARGO_TARGET_DIR", &target)
        .output()
        .expect("run cargo build");
    assert!(
        out.status.success(),
        "building the plugin failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = target.join("debug");
    assert!(dir.join("libnanoclaw_plugin_channels.so").is_file());
    dir
}

async fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cdylib_runs_under_the_real_loader() {
    let fake = FakeTelegram::start(TOKEN).expect("fake");
    let dir = tempfile::tempdir().expect("tempdir");
    let data_dir = dir.path().join("data");
    let config = PluginsConfig::parse(
        &format!(
            "[plugins.telegram]\nrequired = true\n\
             [plugins.telegram.settings]\nbot_token = {{ env = \"TELEGRAM_BOT_TOKEN\" }}\n\
             api_base_url = \"{}\"\npoll_timeout_secs = 5\n",
            fake.base_url()
        ),
        dir.path(),
    )
    .expect("plugins.toml");
    let mut opts = LoadOptions::new(&data_dir);
    opts.locator = Some(LibraryLocator::new(vec![plugin_dir()], vec![], None));
    opts.secrets = Arc::new(SecretSource::with_vars(
        &data_dir,
        HashMap::from([("TELEGRAM_BOT_TOKEN".to_owned(), TOKEN.to_owned())]),
    ));
    opts.start_retry_backoff = vec![];
    let hosts: Arc<Mutex<HashMap<String, MemoryHost>>> = Arc::default();
    let factory = {
        let hosts = Arc::clone(&hosts);
        move |instance: &InstanceName, _m: &PluginManifest| -> HostServicesBox {
            let mem = MemoryHost::new();
            let boxed = mem.services();
            hosts
                .lock()
                .expect("hosts")
                .insert(instance.to_string(), mem);
            boxed
        }
    };
    let mut plugins = registry::load(&config, &opts, &factory).await;
    plugins.start_all(&opts).await;
    assert!(
        plugins.required_failures().is_empty(),
        "{}",
        registry::render_report(plugins.report())
    );
    let mem = hosts.lock().expect("hosts")["telegram"].clone();
    let telegram = plugins.get("telegram").expect("the telegram plugin");
    let manifest = telegram.manifest();
    assert_eq!(manifest.max_text_length, Some(4096));
    let extra: serde_json::Value =
        serde_json::from_str(&manifest.extra_json).expect("manifest extra JSON");
    assert_eq!(extra["markup"], "telegram_html");
    assert_eq!(extra["text_unit"], "utf16");
    let caps = telegram.capabilities();
    assert!(caps.contains(Capabilities::BUTTONS.with(Capabilities::TYPING)));
    assert!(!caps.contains(Capabilities::OPEN_DM));

    let ann = Person::new(6_037_840_640, "Ann");
    let hello = fake
        .send_user_message(UserMessage::private(ann, "hello from Telegram"))
        .expect("inject");
    wait_until("the DM", || mem.inbound().len() == 1).await;
    let event = &mem.inbound()[0];
    assert_eq!(event.chat_id.as_str(), "6037840640");
    assert_eq!(event.message_id.as_str(), hello.message_id.to_string());

    // ABI 1.1: prepare renders and splits, deliver sends each part as given.
    let parts = telegram
        .prepare(OutboundMessage {
            chat_id: "6037840640".into(),
            text: "**Hi** Ann".into(),
            ..Default::default()
        })
        .await
        .expect("prepare");
    assert_eq!(parts.len(), 1);
    assert_eq!(parts[0].text.as_str(), "<b>Hi</b> Ann");
    let id = telegram
        .deliver(parts[0].clone())
        .await
        .expect("deliver")
        .expect("message id");
    let sent = fake.sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].message_id.map(|i| i.to_string()), Some(id));
    assert_eq!(sent[0].text.as_deref(), Some("<b>Hi</b> Ann"));
    // A message that was never prepared (from a host before 1.1) is prepared by deliver.
    telegram
        .deliver(OutboundMessage {
            chat_id: "6037840640".into(),
            text: "_again_".into(),
            ..Default::default()
        })
        .await
        .expect("deliver unprepared");
    assert_eq!(fake.sent()[1].text.as_deref(), Some("<i>again</i>"));

    let health = telegram.health().await;
    assert_eq!(health.status, HealthStatus::OK, "{health:?}");
    assert!(health.last_ingest_ms > 0);

    let stopping = Instant::now();
    plugins.teardown_all().await;
    assert!(stopping.elapsed() < Duration::from_secs(3));
    // The plugin's own log lines reached its host.
    assert!(
        mem.logs()
            .iter()
            .any(|l| l.message.contains("polling Telegram as @nanoclaw_test_bot"))
    );
}
