//! End to end: the REAL cli plugin cdylib, loaded through the host's registry, and the
//! `nanoclaw chat` client talking to it over its socket.

mod common;

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use common::{Profile, cargo_build};
use nanoclaw::cli::chat::{self, ChatArgs};
use nanoclaw::config::secrets::SecretSource;
use nanoclaw::plugins::registry::{self, LoadOptions};
use nanoclaw::plugins::{InstanceName, LibraryLocator, PluginManifest, PluginsConfig};
use nanoclaw_plugin_api::abi::{Capabilities, HealthStatus, HostServicesBox, OutboundMessage};
use nanoclaw_plugin_api::kit::testing::MemoryHost;

/// Builds the channels library (the cli channel is in it) once; returns its directory.
fn cli_plugin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = cargo_build(&["nanoclaw-plugin-channels"], Profile::Debug);
        assert!(dir.join("libnanoclaw_plugin_channels.so").is_file());
        dir
    })
}

fn one_shot(data_dir: &Path, text: &str) -> std::thread::JoinHandle<ExitCode> {
    let data_dir = data_dir.to_owned();
    let args = ChatArgs {
        socket: None,
        message: Some(text.to_owned()),
        timeout: Duration::from_secs(20),
    };
    std::thread::spawn(move || chat::run(args, &data_dir).expect("nanoclaw chat"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nanoclaw_chat_talks_to_the_real_plugin() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let mem = MemoryHost::new();
    let services = mem.clone();
    let factory =
        move |_: &InstanceName, _: &PluginManifest| -> HostServicesBox { services.services() };
    let config = PluginsConfig::parse("[plugins.cli]\n", dir.path()).expect("plugins.toml");
    let mut opts = LoadOptions::new(&data);
    opts.locator = Some(LibraryLocator::new(
        vec![cli_plugin_dir().to_owned()],
        vec![],
        None,
    ));
    opts.secrets = Arc::new(SecretSource::with_vars(&data, Default::default()));
    opts.start_retry_backoff = vec![];

    let mut plugins = registry::load(&config, &opts, &factory).await;
    plugins.start_all(&opts).await;
    let cli = plugins
        .get("cli")
        .expect("cli plugin loaded and started")
        .clone();
    assert_eq!(cli.capabilities(), Capabilities::TYPING);
    let socket = data.join("plugins/cli/chat.sock");
    let mode = std::fs::metadata(&socket)
        .expect("socket")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    // One-shot: the message reaches the host; the reply reaches the client, which exits 0.
    let client = one_shot(&data, "ping");
    let start = Instant::now();
    let event = loop {
        if let Some(event) = mem.inbound().into_iter().next() {
            break event;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no inbound message"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(event.text.as_str(), "ping");
    assert!(event.mentioned && !event.is_group);
    cli.set_typing(event.chat_id.as_str(), None)
        .await
        .expect("typing");
    let reply = |text: &str| OutboundMessage {
        chat_id: event.chat_id.clone(),
        text: text.into(),
        ..OutboundMessage::default()
    };
    cli.deliver(reply("pong"))
        .await
        .expect("deliver")
        .expect("a message id");
    let status = tokio::task::spawn_blocking(move || client.join().expect("client thread"))
        .await
        .expect("join");
    assert_eq!(status, ExitCode::SUCCESS);
    let health = cli.health().await;
    assert_eq!(health.status, HealthStatus::OK);
    assert!(health.last_ingest_ms > 0);

    // A reply for a user who is not connected is kept for their next session (a second
    // one-shot: it prints the earlier reply, then its own).
    cli.deliver(reply("while you were away"))
        .await
        .expect("deliver");
    let client = one_shot(&data, "back");
    let start = Instant::now();
    while mem.inbound().len() < 2 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no second message"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    cli.deliver(reply("welcome back")).await.expect("deliver");
    let status = tokio::task::spawn_blocking(move || client.join().expect("client thread"))
        .await
        .expect("join");
    assert_eq!(status, ExitCode::SUCCESS);
    let backlog = mem
        .host()
        .list_get(&format!("backlog:{}", event.chat_id))
        .expect("backlog");
    assert!(backlog.is_empty(), "the backlog was delivered: {backlog:?}");

    // Without the daemon, the client says so and exits 2.
    plugins.teardown_all().await;
    assert!(!socket.exists(), "teardown removes the socket");
    let data_dir = data.clone();
    let status = tokio::task::spawn_blocking(move || {
        chat::run(
            ChatArgs {
                socket: None,
                message: Some("anyone?".into()),
                timeout: Duration::from_secs(1),
            },
            &data_dir,
        )
        .expect("nanoclaw chat")
    })
    .await
    .expect("join");
    assert_eq!(status, ExitCode::from(chat::EXIT_UNAVAILABLE));
}
