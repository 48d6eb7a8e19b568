//! The Discord channel in the channels library (the cdylib the host loads), loaded by the real host
//! loader through the ABI, against the fake: manifest, start, a DM in, a reply out, health, teardown.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nanoclaw::config::secrets::SecretSource;
use nanoclaw::plugins::registry::{self, LoadOptions};
use nanoclaw::plugins::{InstanceName, LibraryLocator, PluginManifest, PluginsConfig};
use nanoclaw_fake_discord::{ANN, BOB, FakeDiscord, TOKEN, fixture};
use nanoclaw_plugin_api::abi::{
    Button, Capabilities, HealthStatus, HostServicesBox, OutboundMessage,
};
use nanoclaw_plugin_api::kit::testing::MemoryHost;

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

async fn wait_until(what: &str, check: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cdylib_runs_under_the_real_loader() {
    let fake = FakeDiscord::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let data_dir = dir.path().join("data");
    let config = PluginsConfig::parse(
        &format!(
            "[plugins.discord]\nrequired = true\n\
             [plugins.discord.settings]\nbot_token = {{ env = \"DISCORD_BOT_TOKEN\" }}\n\
             api_base_url = \"{}\"\ngateway_url = \"{}\"\n",
            fake.api_base_url(),
            fake.gateway_url()
        ),
        dir.path(),
    )
    .expect("plugins.toml");
    let mut opts = LoadOptions::new(&data_dir);
    opts.locator = Some(LibraryLocator::new(vec![plugin_dir()], vec![], None));
    opts.secrets = Arc::new(SecretSource::with_vars(
        &data_dir,
        HashMap::from([("DISCORD_BOT_TOKEN".to_owned(), TOKEN.to_owned())]),
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
    let mem = hosts.lock().expect("hosts")["discord"].clone();
    let discord = plugins.get("discord").expect("the discord plugin");
    let manifest = discord.manifest();
    assert_eq!(manifest.max_text_length, Some(2000));
    let extra: serde_json::Value =
        serde_json::from_str(&manifest.extra_json).expect("manifest extra JSON");
    assert_eq!(extra["markup"], "discord_markdown");
    assert_eq!(extra["text_unit"], "utf16");
    let caps = discord.capabilities();
    assert!(caps.contains(Capabilities::OPEN_DM.with(Capabilities::BUTTONS)));

    wait_until("identify", || fake.current_session().is_some()).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    fake.dispatch("MESSAGE_CREATE", fixture("message_create_dm"));
    wait_until("the DM", || mem.inbound().len() == 1).await;
    let event = &mem.inbound()[0];
    assert_eq!(event.chat_id.as_str(), "1300000000000000001");
    assert_eq!(event.sender.clone().unwrap().handle.as_str(), ANN);

    let parts = discord
        .prepare(OutboundMessage {
            chat_id: "1300000000000000001".into(),
            text: "**Hi** Ann".into(),
            buttons: vec![Button {
                id: "ncq:q1:0".into(),
                label: "OK".into(),
            }]
            .into(),
            ..Default::default()
        })
        .await
        .expect("prepare");
    assert_eq!(parts.len(), 1);
    let id = discord
        .deliver(parts[0].clone())
        .await
        .expect("deliver")
        .expect("message id");
    let posted = fake.messages();
    assert_eq!(posted[0].id, id);
    assert_eq!(posted[0].content, "**Hi** Ann");

    let dm = discord.open_dm(BOB).await.expect("open_dm");
    assert!(!dm.is_empty());

    let mut click = fixture("interaction_create_button_dm");
    click["message"]["id"] = serde_json::json!(id);
    fake.dispatch("INTERACTION_CREATE", click);
    wait_until("the click", || mem.actions().len() == 1).await;
    assert_eq!(mem.actions()[0].clicker.handle.as_str(), ANN);

    let health = discord.health().await;
    assert_eq!(health.status, HealthStatus::OK, "{health:?}");
    assert!(health.last_ingest_ms > 0);

    let stopping = Instant::now();
    plugins.teardown_all().await;
    assert!(stopping.elapsed() < Duration::from_secs(4));
    assert!(
        mem.logs()
            .iter()
            .any(|l| l.message.contains("Discord gateway ready as clawbot"))
    );
    for line in mem.logs() {
        assert!(!line.message.contains(TOKEN), "{line:?}");
    }
}
