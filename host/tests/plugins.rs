//! Loads the REAL plugin cdylibs through the real ABI and drives every failure case. The
//! test process is the host: each test finishing at all proves it survived.

mod common;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Profile, copy_with_marker, example_plugin, is_mapped, plugin_dir, test_plugin};
use nanoclaw::config::secrets::SecretSource;
use nanoclaw::plugins::registry::{self, LoadOptions};
use nanoclaw::plugins::{
    CallError, InstanceName, LibraryLocator, LoadError, LoadedPlugins, PluginManifest,
    PluginReport, PluginStatus, PluginsConfig, SettingsError, render_report,
};
use nanoclaw_plugin_api::abi::{
    Capabilities, HealthStatus, HostServicesBox, OutboundMessage, WebhookRequest,
};
use nanoclaw_plugin_api::abi_stable::std_types::Tuple2;
use nanoclaw_plugin_api::kit::testing::MemoryHost;
use serde_json::{Value, json};
use tempfile::TempDir;

/// A scratch host: a directory for plugins.toml and data, a fixed environment for secrets,
/// and one in-memory HostServices per created instance.
struct Host {
    dir: TempDir,
    vars: HashMap<String, String>,
    max_in_flight: usize,
    services: Arc<Mutex<HashMap<String, MemoryHost>>>,
    /// Where bare library names are looked up (default: the freshly built plugins).
    plugin_dirs: Vec<PathBuf>,
}

impl Host {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("tempdir"),
            vars: HashMap::new(),
            max_in_flight: 4,
            services: Arc::default(),
            plugin_dirs: vec![plugin_dir(Profile::Debug).to_owned()],
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn options(&self) -> LoadOptions {
        let data_dir = self.path("data");
        let mut opts = LoadOptions::new(&data_dir);
        opts.locator = Some(LibraryLocator::new(self.plugin_dirs.clone(), vec![], None));
        opts.secrets = Arc::new(SecretSource::with_vars(&data_dir, self.vars.clone()));
        opts.start_retry_backoff = vec![];
        opts.max_in_flight = self.max_in_flight;
        opts
    }

    fn config(&self, text: &str) -> PluginsConfig {
        PluginsConfig::parse(text, self.dir.path()).expect("valid plugins.toml")
    }

    async fn load(&self, text: &str) -> LoadedPlugins {
        let services = Arc::clone(&self.services);
        let factory = move |instance: &InstanceName, _m: &PluginManifest| -> HostServicesBox {
            let mem = MemoryHost::new();
            let boxed = mem.services();
            services
                .lock()
                .expect("services map")
                .insert(instance.to_string(), mem);
            boxed
        };
        registry::load(&self.config(text), &self.options(), &factory).await
    }

    fn memory(&self, instance: &str) -> MemoryHost {
        self.services.lock().expect("services map")[instance].clone()
    }

    fn records(&self, file: &str) -> Vec<Value> {
        std::fs::read_to_string(self.path(file))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("record line is JSON"))
            .collect()
    }
}

fn row<'a>(plugins: &'a LoadedPlugins, instance: &str) -> &'a PluginReport {
    plugins
        .report()
        .iter()
        .find(|r| r.instance == instance)
        .unwrap_or_else(|| panic!("no report row for {instance}"))
}

fn load_error<'a>(plugins: &'a LoadedPlugins, instance: &str) -> &'a LoadError {
    match &row(plugins, instance).status {
        PluginStatus::LoadFailed(e) => e,
        other => panic!("{instance}: expected a load failure, got {other:?}"),
    }
}

fn post(path: &str, body: &Value) -> WebhookRequest {
    WebhookRequest {
        method: "POST".into(),
        path: path.into(),
        body: body.to_string().into_bytes().into(),
        ..WebhookRequest::default()
    }
}

fn text(chat: &str, text: &str) -> OutboundMessage {
    OutboundMessage {
        chat_id: chat.into(),
        text: text.into(),
        ..OutboundMessage::default()
    }
}

/// The example plugin's settings. `create` never connects, so tests that only load it may
/// point `api_base_url` anywhere; `token` and `secret` are TOML values.
fn example_toml(instance: &str, api_base_url: &str, token: &str, secret: &str) -> String {
    format!(
        "[plugins.{instance}]\nlibrary = \"example\"\n[plugins.{instance}.settings]\n\
         api_base_url = {api_base_url:?}\napi_token = {token}\nwebhook_secret = {secret}\n"
    )
}

/// The example platform's webhook signing key (the setting is [`example_secret`]) and the
/// API token its fake accepts.
const EXAMPLE_SIGNING_KEY: &[u8] = b"host-test-signing-key-0123456789";
const EXAMPLE_TOKEN: &str = "ex-token-5d1e";

fn example_secret() -> String {
    use base64::Engine as _;
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(EXAMPLE_SIGNING_KEY)
    )
}

/// A webhook request signed the way the example platform signs (Standard Webhooks).
fn example_webhook(id: &str, body: &str) -> WebhookRequest {
    use base64::Engine as _;
    use hmac::Mac as _;
    let timestamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let mut mac =
        hmac::Hmac::<sha2::Sha256>::new_from_slice(EXAMPLE_SIGNING_KEY).expect("any key length");
    mac.update(format!("{id}.{timestamp}.{body}").as_bytes());
    let signature = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    WebhookRequest {
        method: "POST".into(),
        path: "/".into(),
        headers: vec![
            Tuple2("webhook-id".into(), id.into()),
            Tuple2("webhook-timestamp".into(), timestamp.to_string().into()),
            Tuple2("webhook-signature".into(), format!("v1,{signature}").into()),
        ]
        .into(),
        body: body.as_bytes().to_vec().into(),
        ..WebhookRequest::default()
    }
}

/// A fake of the example platform's API on 127.0.0.1: `GET /v1/me` and
/// `POST /v1/chats/{chat}/messages`, behind the bearer token. Calls are named by path.
fn fake_example_api() -> nanoclaw_fake_platform::FakeServer {
    use axum::http::{HeaderMap, StatusCode};
    use axum::routing::{get, post};
    fn answer(headers: &HeaderMap, json: &'static str) -> (StatusCode, &'static str) {
        let bearer = format!("Bearer {EXAMPLE_TOKEN}");
        match headers.get("authorization") {
            Some(given) if *given == *bearer => (StatusCode::OK, json),
            _ => (StatusCode::UNAUTHORIZED, r#"{"error":"invalid token"}"#),
        }
    }
    async fn me(headers: HeaderMap) -> (StatusCode, &'static str) {
        answer(&headers, r#"{"id":"b1","name":"Claw"}"#)
    }
    async fn post_message(headers: HeaderMap) -> (StatusCode, &'static str) {
        answer(&headers, r#"{"id":"m1"}"#)
    }
    let router = axum::Router::new()
        .route("/v1/me", get(me))
        .route("/v1/chats/{chat}/messages", post(post_message));
    let harness = nanoclaw_fake_platform::Harness::new()
        .with_route_key(|parts| Some(parts.uri.path().to_owned()));
    nanoclaw_fake_platform::FakeServer::start(harness, router).expect("fake example API")
}

fn test_plugin_toml(instance: &str, settings: &str) -> String {
    format!(
        "[plugins.{instance}]\nlibrary = \"nanoclaw_test_plugin\"\ncall_timeout_secs = 5\n[plugins.{instance}.settings]\n{settings}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ok_path_through_the_real_boundary() {
    let host = Host::new();
    let record = host.path("record.jsonl");
    let mut plugins = host
        .load(&test_plugin_toml(
            "t",
            &format!("record_path = {:?}", record.display().to_string()),
        ))
        .await;
    let r = row(&plugins, "t");
    assert!(matches!(r.status, PluginStatus::Loaded), "{:?}", r.status);
    let manifest = r.manifest.as_ref().expect("manifest");
    assert_eq!(manifest.channel_type, "test");
    assert_eq!(manifest.abi_version, nanoclaw_plugin_api::ABI_VERSION);
    assert_eq!(
        r.abi.as_ref().map(ToString::to_string).as_deref(),
        Some(nanoclaw_plugin_api::ABI_VERSION)
    );
    assert_eq!(
        manifest.capabilities,
        Capabilities::OPEN_DM
            | Capabilities::TYPING
            | Capabilities::WEBHOOK
            | Capabilities::BUTTONS
            | Capabilities::FILES
    );
    assert!(
        host.path("data/plugins/t").is_dir(),
        "private data dir created"
    );

    plugins.start_all(&host.options()).await;
    assert!(matches!(row(&plugins, "t").status, PluginStatus::Started));
    let t = plugins.get("t").expect("handle").clone();

    // Inbound: webhook -> plugin -> HostServices::on_inbound.
    let resp = t
        .handle_webhook(post(
            "/",
            &json!({"chat_id": "-1001234", "message_id": "m1", "sender_handle": "6037840640",
                    "sender_name": "Ann", "text": "hello", "is_group": true, "mentioned": true}),
        ))
        .await
        .expect("webhook");
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body.as_slice(), br#"{"ok":true}"#);
    let inbound = host.memory("t").inbound();
    assert_eq!(inbound.len(), 1);
    let ev = &inbound[0];
    assert_eq!(
        (
            ev.chat_id.as_str(),
            ev.message_id.as_str(),
            ev.text.as_str()
        ),
        ("-1001234", "m1", "hello")
    );
    assert!(ev.is_group && ev.mentioned);
    let sender = ev.sender.as_ref().into_option().expect("sender");
    assert_eq!(sender.handle.as_str(), "6037840640");

    // A refused inbound comes back as a 500 with the host's error.
    host.memory("t")
        .set_reject_inbound(Some(nanoclaw_plugin_api::abi::PluginError::network(
            "db busy",
        )));
    let resp = t
        .handle_webhook(post("/", &json!({"chat_id": "c", "text": "x"})))
        .await
        .expect("webhook");
    assert_eq!(resp.status, 500);
    assert!(String::from_utf8_lossy(&resp.body).contains("db busy"));

    // Actions.
    let resp = t
        .handle_webhook(post(
            "/action",
            &json!({"chat_id": "c1", "message_id": "card-1", "clicker_handle": "u9", "action_id": "ncq:q1:0"}),
        ))
        .await
        .expect("action");
    assert_eq!(resp.status, 200);
    let actions = host.memory("t").actions();
    assert_eq!(actions.len(), 1);
    assert_eq!(actions[0].action_id.as_str(), "ncq:q1:0");
    assert_eq!(actions[0].clicker.handle.as_str(), "u9");

    // Outbound.
    let id = t.deliver(text("c1", "hi there")).await.expect("deliver");
    assert!(
        id.as_deref().is_some_and(|id| id.starts_with("msg-")),
        "{id:?}"
    );
    t.set_typing("c1", Some("th")).await.expect("typing");
    assert_eq!(t.open_dm("u1").await.expect("open_dm"), "dm-u1");
    assert_eq!(
        t.extension("echo", "{\"a\":1}").await.expect("echo"),
        "{\"a\":1}"
    );
    let unknown = t
        .extension("nope", "{}")
        .await
        .expect_err("unknown extension");
    assert!(unknown.to_string().contains("unsupported"), "{unknown}");

    let records = host.records("record.jsonl");
    assert_eq!(records.len(), 3);
    assert_eq!(records[0]["call"], "deliver");
    assert_eq!(records[0]["text"], "hi there");
    assert_eq!(records[0]["id"].as_str(), id.as_deref());
    assert_eq!(
        records[1],
        json!({"call": "set_typing", "chat_id": "c1", "thread_id": "th"})
    );
    assert_eq!(records[2], json!({"call": "open_dm", "user_handle": "u1"}));

    let health = t.health().await;
    assert_eq!(health.status, HealthStatus::OK);
    assert!(health.last_ingest_ms > 0, "ingest progress is reported");
    assert!(!t.is_degraded());

    // The plugin's tracing events reach the host's log through HostServices::log.
    assert!(
        host.memory("t")
            .logs()
            .iter()
            .any(|l| l.message.contains("test plugin created")),
        "plugin log forwarded"
    );

    plugins.teardown_all().await;
    let err = t.deliver(text("c1", "late")).await.expect_err("torn down");
    assert!(matches!(err, CallError::TornDown { .. }), "{err}");
    assert!(plugins.required_failures().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_plugin_verifies_signed_webhooks_and_posts_to_its_api() {
    let api = fake_example_api();
    let mut host = Host::new();
    host.vars
        .insert("EXAMPLE_API_TOKEN".into(), EXAMPLE_TOKEN.into());
    host.vars
        .insert("EXAMPLE_WEBHOOK_SECRET".into(), example_secret());
    let mut plugins = host
        .load(&example_toml(
            "example",
            &api.base_url(),
            "{ env = \"EXAMPLE_API_TOKEN\" }",
            "{ env = \"EXAMPLE_WEBHOOK_SECRET\" }",
        ))
        .await;
    let ex = plugins.get("example").expect("example loaded").clone();
    assert_eq!(
        row(&plugins, "example").library.as_deref(),
        Some(&*std::fs::canonicalize(example_plugin(Profile::Debug)).expect("canonical"))
    );
    // start checks the token with the platform.
    plugins.start_all(&host.options()).await;
    assert!(matches!(
        row(&plugins, "example").status,
        PluginStatus::Started
    ));
    let me = api.harness().calls_to("/v1/me");
    assert_eq!(me.len(), 1);
    let bearer = format!("Bearer {EXAMPLE_TOKEN}");
    assert_eq!(me[0].header("authorization"), Some(bearer.as_str()));

    // Inbound: only a correctly signed body gets through, and a redelivery is stored once.
    let body = json!({"type": "message", "id": "m7", "chat": {"id": "c7", "is_group": false},
                      "sender": {"id": "u7", "name": "Ann"}, "text": "yo"})
    .to_string();
    let unsigned = ex
        .handle_webhook(post("/", &json!({"type": "message"})))
        .await
        .expect("webhook");
    assert_eq!(unsigned.status, 401);
    let mut forged = example_webhook("msg_1", &body);
    forged.body = body.replace("yo", "pay me").into_bytes().into();
    assert_eq!(
        ex.handle_webhook(forged).await.expect("webhook").status,
        401
    );
    for _ in 0..2 {
        let good = ex
            .handle_webhook(example_webhook("msg_1", &body))
            .await
            .expect("webhook");
        assert_eq!(good.status, 200);
    }
    let inbound = host.memory("example").inbound();
    assert_eq!(inbound.len(), 1);
    assert_eq!(
        (inbound[0].chat_id.as_str(), inbound[0].text.as_str()),
        ("c7", "yo")
    );
    assert!(
        host.memory("example")
            .logs()
            .iter()
            .any(|l| l.message.contains("refused a webhook request")),
        "refusals are logged"
    );

    // Outbound: prepared by the plugin, posted to the API with the token.
    let parts = ex.prepare(text("c7", "**reply**")).await.expect("prepare");
    assert_eq!(parts.len(), 1);
    let id = ex.deliver(parts[0].clone()).await.expect("deliver");
    assert_eq!(id.as_deref(), Some("m1"));
    let posted = api.harness().calls_to("/v1/chats/c7/messages");
    assert_eq!(posted.len(), 1);
    assert_eq!(posted[0].header("authorization"), Some(bearer.as_str()));
    assert_eq!(posted[0].body_json(), Some(json!({"text": "**reply**"})));

    // No OPEN_DM capability: the host refuses without calling the plugin.
    let err = ex.open_dm("u7").await.expect_err("no open_dm");
    assert!(
        matches!(
            err,
            CallError::Unsupported {
                capability: "open_dm",
                ..
            }
        ),
        "{err}"
    );
    plugins.teardown_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_plugin_with_a_refused_token_fails_to_start() {
    let api = fake_example_api();
    let mut host = Host::new();
    host.vars.insert("T".into(), "revoked".into());
    host.vars.insert("S".into(), example_secret());
    let mut plugins = host
        .load(&example_toml(
            "example",
            &api.base_url(),
            "{ env = \"T\" }",
            "{ env = \"S\" }",
        ))
        .await;
    let mut options = host.options();
    options.start_retry_backoff = vec![Duration::from_millis(10)];
    plugins.start_all(&options).await;
    let status = &row(&plugins, "example").status;
    assert!(matches!(status, PluginStatus::StartFailed(_)), "{status:?}");
    let shown = render_report(plugins.report());
    assert!(shown.contains("refused api_token"), "{shown}");
    assert_eq!(
        api.harness().calls_to("/v1/me").len(),
        1,
        "a refused token is not retried"
    );
    plugins.teardown_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_error_is_reported_and_others_still_load() {
    let host = Host::new();
    let config = format!(
        "{}{}",
        test_plugin_toml("broken", "create = \"error\""),
        example_toml(
            "other",
            "http://127.0.0.1:9",
            "{ env = \"T\" }",
            "{ env = \"S\" }"
        )
    );
    let mut host = host;
    host.vars.insert("T".into(), "x".into());
    host.vars.insert("S".into(), example_secret());
    let plugins = host.load(&config).await;
    let err = load_error(&plugins, "broken");
    assert!(matches!(err, LoadError::Create(_)), "{err}");
    assert!(
        err.to_string().contains("create failed as configured"),
        "{err}"
    );
    assert!(plugins.get("other").is_some(), "the other plugin loaded");
    assert!(plugins.get("broken").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_panic_is_caught() {
    let host = Host::new();
    let plugins = host
        .load(&test_plugin_toml("p", "create = \"panic\""))
        .await;
    let err = load_error(&plugins, "p");
    assert!(
        matches!(
            err,
            LoadError::Panicked {
                entry: "create()",
                ..
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string().contains("create panicked as configured"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_hang_times_out() {
    let host = Host::new();
    let config = "[plugins.h]\nlibrary = \"nanoclaw_test_plugin\"\nstart_timeout_secs = 0.3\n\
                  [plugins.h.settings]\ncreate = \"hang\"\nhang_ms = 1500\n";
    let started = Instant::now();
    let plugins = host.load(config).await;
    assert!(
        started.elapsed() < Duration::from_millis(1400),
        "did not wait for the hang"
    );
    assert!(matches!(load_error(&plugins, "h"), LoadError::Timeout(_)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_panic_fails_that_plugin_only() {
    let host = Host::new();
    let config = test_plugin_toml("sp", "start = \"panic\"").replace(
        "call_timeout_secs = 5\n",
        "call_timeout_secs = 5\nrequired = true\n",
    );
    let mut plugins = host.load(&config).await;
    assert!(matches!(row(&plugins, "sp").status, PluginStatus::Loaded));
    plugins.start_all(&host.options()).await;
    match &row(&plugins, "sp").status {
        PluginStatus::StartFailed(CallError::Panicked {
            method: "start",
            message,
            ..
        }) => {
            assert!(
                message.contains("start panicked as configured"),
                "{message}"
            );
        }
        other => panic!("expected a start panic, got {other:?}"),
    }
    assert!(plugins.get("sp").is_none(), "failed plugin removed");
    let failures = plugins.required_failures();
    assert_eq!(failures.len(), 1);
    assert_eq!(failures[0].instance, "sp");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_error_is_reported() {
    let host = Host::new();
    let mut plugins = host
        .load(&test_plugin_toml("se", "start = \"error\""))
        .await;
    plugins.start_all(&host.options()).await;
    let err = row(&plugins, "se").error().expect("failed");
    assert!(
        err.contains("start() failed") && err.contains("start failed as configured"),
        "{err}"
    );
    assert!(plugins.required_failures().is_empty(), "not required");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliver_panic_is_caught_and_plugin_keeps_working() {
    let host = Host::new();
    let plugins = host
        .load(&test_plugin_toml("dp", "deliver = \"panic\""))
        .await;
    let h = plugins.get("dp").expect("loaded").clone();
    for _ in 0..2 {
        let err = h.deliver(text("c", "boom")).await.expect_err("panics");
        assert!(
            matches!(
                err,
                CallError::Panicked {
                    method: "deliver",
                    ..
                }
            ),
            "{err}"
        );
        assert!(
            err.to_string().contains("deliver panicked as configured"),
            "{err}"
        );
    }
    assert_eq!(h.open_dm("u").await.expect("still works"), "dm-u");
    assert_eq!(h.health().await.status, HealthStatus::OK);
    // The plugin's own panic hook sends the panic to this instance's host log.
    let logs = host.memory("dp").logs();
    assert!(
        logs.iter()
            .any(|l| l.target == "panic" && l.message.contains("deliver panicked as configured")),
        "{logs:?}"
    );
    let err = h.extension("panic", "").await.expect_err("extension panic");
    assert!(
        matches!(
            err,
            CallError::Panicked {
                method: "extension",
                ..
            }
        ),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepare_then_deliver_each_part_through_the_real_boundary() {
    let host = Host::new();
    let record = host.path("record.jsonl");
    let plugins = host
        .load(&test_plugin_toml(
            "pp",
            &format!(
                "part_chars = 40\nrecord_path = {:?}",
                record.display().to_string()
            ),
        ))
        .await;
    let h = plugins.get("pp").expect("loaded").clone();
    let extra: Value = serde_json::from_str(&h.manifest().extra_json).expect("manifest extra JSON");
    assert_eq!(extra["markup"], "verbatim");
    assert_eq!(extra["text_unit"], "chars");

    let mut message = text("c", &"word ".repeat(30));
    message.buttons = vec![nanoclaw_plugin_api::abi::Button {
        id: "ncq:q:0".into(),
        label: "Yes".into(),
    }]
    .into();
    let parts = h.prepare(message).await.expect("prepare");
    assert_eq!(parts.len(), 4);
    assert!(parts.iter().all(|p| p.text.chars().count() <= 40));
    assert!(parts[..3].iter().all(|p| p.buttons.is_empty()));
    assert_eq!(parts[3].buttons.len(), 1, "buttons on the last part");
    let again = h.prepare(parts[0].clone()).await.expect("prepare a part");
    assert_eq!(again, vec![parts[0].clone()], "a part is already prepared");
    for part in &parts {
        h.deliver(part.clone()).await.expect("deliver");
    }
    let records = host.records("record.jsonl");
    let delivered: Vec<&str> = records.iter().filter_map(|r| r["text"].as_str()).collect();
    let prepared: Vec<&str> = parts.iter().map(|p| p.text.as_str()).collect();
    assert_eq!(
        delivered, prepared,
        "each part delivered exactly as prepared"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepare_panics_errors_and_hangs_are_contained() {
    let host = Host::new();
    let plugins = host
        .load(&test_plugin_toml("pa", "prepare = \"panic\""))
        .await;
    let h = plugins.get("pa").expect("loaded").clone();
    let err = h.prepare(text("c", "x")).await.expect_err("panics");
    assert!(
        matches!(
            err,
            CallError::Panicked {
                method: "prepare",
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(h.open_dm("u").await.expect("still works"), "dm-u");

    let host = Host::new();
    let plugins = host
        .load(&test_plugin_toml("pe", "prepare = \"error\""))
        .await;
    let err = plugins
        .get("pe")
        .expect("loaded")
        .prepare(text("c", "x"))
        .await
        .expect_err("error");
    assert_eq!(
        err.plugin_error().map(|e| e.message.as_str()),
        Some("prepare failed as configured")
    );

    let host = Host::new();
    let config = test_plugin_toml("ph", "prepare = \"hang\"\nhang_ms = 1500")
        .replace("call_timeout_secs = 5", "call_timeout_secs = 0.3");
    let plugins = host.load(&config).await;
    let h = plugins.get("ph").expect("loaded").clone();
    let err = h.prepare(text("c", "slow")).await.expect_err("times out");
    assert!(
        matches!(
            err,
            CallError::Timeout {
                method: "prepare",
                ..
            }
        ),
        "{err}"
    );
    assert!(err.is_transient());
    assert!(h.is_degraded());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliver_error_keeps_the_plugin_error() {
    let host = Host::new();
    let plugins = host
        .load(&test_plugin_toml("de", "deliver = \"error\""))
        .await;
    let h = plugins.get("de").expect("loaded");
    let err = h.deliver(text("c", "x")).await.expect_err("error");
    let plugin_error = err.plugin_error().expect("plugin error");
    assert_eq!(
        plugin_error.message.as_str(),
        "deliver failed as configured"
    );
    assert!(!err.is_transient());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliver_hang_times_out_and_host_continues() {
    let host = Host::new();
    let config = test_plugin_toml("dh", "deliver = \"hang\"\nhang_ms = 1500")
        .replace("call_timeout_secs = 5", "call_timeout_secs = 0.3");
    let plugins = host.load(&config).await;
    let h = plugins.get("dh").expect("loaded").clone();

    let started = Instant::now();
    let err = h.deliver(text("c", "slow")).await.expect_err("times out");
    let waited = started.elapsed();
    assert!(
        matches!(
            err,
            CallError::Timeout {
                method: "deliver",
                ..
            }
        ),
        "{err}"
    );
    assert!(err.is_transient());
    assert!(
        waited >= Duration::from_millis(300) && waited < Duration::from_millis(1200),
        "{waited:?}"
    );
    assert!(h.is_degraded());
    assert_eq!(h.stats().timeouts, 1);

    // The host's async workers are free: a timer fires on time while the call is stuck.
    let tick = Instant::now();
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(tick.elapsed() < Duration::from_millis(200));

    // Other calls still work, and health reports the stuck call.
    assert_eq!(h.open_dm("u").await.expect("open_dm"), "dm-u");
    h.set_typing("c", None).await.expect("typing");
    let health = h.health().await;
    assert_eq!(health.status, HealthStatus::DEGRADED, "{health:?}");
    assert!(health.detail.contains("stuck"), "{health:?}");

    // When the plugin finally returns, the degraded mark clears.
    let deadline = Instant::now() + Duration::from_secs(5);
    while h.is_degraded() {
        assert!(Instant::now() < deadline, "stuck call never returned");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(h.health().await.status, HealthStatus::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_limit_bounds_calls() {
    let mut host = Host::new();
    host.max_in_flight = 1;
    let config = test_plugin_toml("lim", "deliver = \"hang\"\nhang_ms = 800")
        .replace("call_timeout_secs = 5", "call_timeout_secs = 0.3");
    let plugins = host.load(&config).await;
    let h = plugins.get("lim").expect("loaded").clone();
    assert_eq!(h.limits().max_in_flight, 1);
    assert!(matches!(
        h.deliver(text("c", "x")).await,
        Err(CallError::Timeout { .. })
    ));
    // The only slot is held by the stuck call: this one times out waiting for it.
    let err = h.open_dm("u").await.expect_err("no free slot");
    assert!(
        matches!(
            err,
            CallError::Timeout {
                method: "open_dm",
                ..
            }
        ),
        "{err}"
    );
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(h.open_dm("u").await.expect("slot free again"), "dm-u");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incompatible_abi_is_refused_before_loading() {
    let host = Host::new();
    let lib = test_plugin(Profile::Debug);
    let old = copy_with_marker(&lib, host.dir.path(), "libold.so", "0.9.0");
    let newer = copy_with_marker(&lib, host.dir.path(), "libnewer.so", "2.0.0");
    let config = format!(
        "[plugins.old]\nlibrary = {:?}\n[plugins.newer]\nlibrary = {:?}\n",
        old.display().to_string(),
        newer.display().to_string()
    );
    let plugins = host.load(&config).await;

    let err = load_error(&plugins, "old");
    assert!(matches!(err, LoadError::AbiIncompatible(_)), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("built against nanoclaw-plugin-api 0.9.0"),
        "{msg}"
    );
    let host_minor = nanoclaw_plugin_api::ABI_VERSION
        .rsplit_once('.')
        .map_or(nanoclaw_plugin_api::ABI_VERSION, |(major_minor, _)| {
            major_minor
        });
    assert!(
        msg.contains(&format!(
            "rebuild plugin `old` against nanoclaw-plugin-api {host_minor}"
        )),
        "{msg}"
    );
    assert_eq!(
        row(&plugins, "old").abi.as_ref().map(ToString::to_string),
        None
    );

    let msg = load_error(&plugins, "newer").to_string();
    assert!(
        msg.contains("2.0.0") && msg.contains("upgrade nanoclaw"),
        "{msg}"
    );

    // Refused from the file alone: neither copy was ever mapped, so none of its code ran.
    assert!(!is_mapped(&old) && !is_mapped(&newer));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_library() {
    let host = Host::new();
    let plugins = host
        .load("[plugins.gone]\nlibrary = \"/nonexistent/libgone.so\"\n[plugins.unknown]\nlibrary = \"no-such-plugin\"\n")
        .await;
    let err = load_error(&plugins, "gone");
    assert!(matches!(err, LoadError::Missing { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("/nonexistent/libgone.so does not exist"),
        "{err}"
    );
    let msg = load_error(&plugins, "unknown").to_string();
    assert!(
        msg.contains(
            "libno-such-plugin.so, libno_such_plugin.so, libnanoclaw_plugin_no_such_plugin.so"
        ),
        "{msg}"
    );
    assert!(
        msg.contains(&plugin_dir(Profile::Debug).display().to_string()),
        "{msg}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_channels_library_gives_each_instance_its_channel() {
    let mut host = Host::new();
    // Only these two libraries (the build directory may hold anything else).
    let libs = host.path("libs");
    std::fs::create_dir(&libs).expect("mkdir");
    for lib in [
        "libnanoclaw_plugin_channels.so",
        "libnanoclaw_plugin_example.so",
    ] {
        std::fs::copy(plugin_dir(Profile::Debug).join(lib), libs.join(lib)).expect("copy");
    }
    host.plugin_dirs = vec![libs];
    let plugins = host
        .load(
            "[plugins.cli]\n\
             [plugins.local]\nchannel = \"cli\"\n\
             [plugins.pigeon]\nchannel = \"carrier-pigeon\"\n\
             [plugins.mislabelled]\nlibrary = \"example\"\nchannel = \"telegram\"\n\
             [plugins.telegram]\nlibrary = \"telegram\"\n",
        )
        .await;
    // No `library`: the channels library; no `channel`: the instance name.
    for instance in ["cli", "local"] {
        let m = row(&plugins, instance)
            .manifest
            .as_ref()
            .unwrap_or_else(|| panic!("{instance} loaded"));
        assert_eq!(m.channel_type, "cli");
        assert!(plugins.get(instance).is_some(), "{instance} created");
    }
    let library = |i: &str| row(&plugins, i).library.clone().expect("library");
    assert_eq!(library("cli"), library("local"), "one library for both");
    assert!(
        library("cli").ends_with("libnanoclaw_plugin_channels.so"),
        "{:?}",
        library("cli")
    );

    let err = load_error(&plugins, "pigeon");
    assert!(matches!(err, LoadError::NoSuchChannel { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("\"carrier-pigeon\""), "{msg}");
    for channel in ["cli", "telegram", "slack", "discord"] {
        assert!(msg.contains(channel), "{msg}");
    }

    let err = load_error(&plugins, "mislabelled");
    assert!(matches!(err, LoadError::WrongChannel { .. }), "{err}");
    assert!(
        err.to_string().contains("is the \"example\" channel"),
        "{err}"
    );

    // An old plugins.toml naming a first-party channel's own library is told where it went.
    let msg = load_error(&plugins, "telegram").to_string();
    assert!(msg.contains("leave out `library`"), "{msg}");
}

fn find_libm() -> PathBuf {
    [
        "/lib/x86_64-linux-gnu/libm.so.6",
        "/usr/lib/x86_64-linux-gnu/libm.so.6",
        "/lib/aarch64-linux-gnu/libm.so.6",
        "/usr/lib/aarch64-linux-gnu/libm.so.6",
        "/lib64/libm.so.6",
        "/usr/lib64/libm.so.6",
        "/usr/lib/libm.so.6",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.is_file())
    .expect("a libm.so.6 on this system")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_a_plugin() {
    let host = Host::new();
    std::fs::write(host.path("libnotes.so"), "these are notes, not code").expect("write");
    let libm = find_libm();
    let config = format!(
        "[plugins.text]\nlibrary = \"libnotes.so\"\n[plugins.libm]\nlibrary = {:?}\n",
        libm.display().to_string()
    );
    let plugins = host.load(&config).await;
    let text = load_error(&plugins, "text");
    assert!(matches!(text, LoadError::NotAPlugin { .. }), "{text}");
    assert!(text.to_string().contains("not a shared library"), "{text}");
    let libm_err = load_error(&plugins, "libm");
    assert!(
        matches!(libm_err, LoadError::NotAPlugin { .. }),
        "{libm_err}"
    );
    assert!(
        libm_err
            .to_string()
            .contains("no ABI marker section `.nanoclaw_abi`"),
        "{libm_err}"
    );
}

/// Two instances of one plugin (two bots of one platform) load from the same library, each
/// with its own settings, host services and state; calls reach the instance they name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_of_one_channel_type_run_side_by_side() {
    let host = Host::new();
    let (rec1, rec2) = (host.path("first.jsonl"), host.path("second.jsonl"));
    let config = format!(
        "{}{}",
        test_plugin_toml(
            "first",
            &format!("record_path = {:?}", rec1.display().to_string())
        ),
        test_plugin_toml(
            "second",
            &format!("record_path = {:?}", rec2.display().to_string())
        )
    );
    let plugins = host.load(&config).await;
    for name in ["first", "second"] {
        assert!(
            matches!(row(&plugins, name).status, PluginStatus::Loaded),
            "{name}: {:?}",
            row(&plugins, name).status
        );
        let h = plugins.get(name).expect("loaded");
        assert_eq!((h.instance(), h.channel_type()), (name, "test"));
    }
    assert_eq!(plugins.handles().len(), 2);

    let first = plugins.get("first").expect("first").clone();
    let second = plugins.get("second").expect("second").clone();
    first
        .deliver(text("c1", "to the first"))
        .await
        .expect("deliver");
    second
        .deliver(text("c1", "to the second"))
        .await
        .expect("deliver");
    let texts = |file: &str| -> Vec<String> {
        host.records(file)
            .iter()
            .filter(|r| r["call"] == "deliver")
            .map(|r| r["text"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    assert_eq!(texts("first.jsonl"), ["to the first"]);
    assert_eq!(texts("second.jsonl"), ["to the second"]);

    // Inbound from each reaches that instance's host services only.
    let post = |chat: &str| WebhookRequest {
        method: "POST".into(),
        path: "/".into(),
        body: json!({"chat_id": chat, "text": "hi"})
            .to_string()
            .into_bytes()
            .into(),
        ..WebhookRequest::default()
    };
    assert_eq!(
        second
            .handle_webhook(post("c9"))
            .await
            .expect("webhook")
            .status,
        200
    );
    assert!(host.memory("first").inbound().is_empty());
    assert_eq!(host.memory("second").inbound().len(), 1);
    plugins.teardown_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn literal_secret_is_refused() {
    let mut host = Host::new();
    host.vars.insert("S".into(), example_secret());
    let plugins = host
        .load(&example_toml(
            "example",
            "http://127.0.0.1:9",
            "\"hunter2\"",
            "{ env = \"S\" }",
        ))
        .await;
    let err = load_error(&plugins, "example");
    assert!(
        matches!(
            err,
            LoadError::Settings(SettingsError::LiteralSecret { .. })
        ),
        "{err}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("api_token = { env = \"EXAMPLE_API_TOKEN\" }") && msg.contains(".env"),
        "{msg}"
    );
    assert!(!msg.contains("hunter2"), "the secret is not echoed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_env_var_is_reported() {
    let host = Host::new();
    let plugins = host
        .load(&example_toml(
            "example",
            "http://127.0.0.1:9",
            "{ env = \"NANOCLAW_TEST_UNSET_SECRET\" }",
            "{ env = \"NANOCLAW_TEST_UNSET_SECRET\" }",
        ))
        .await;
    let err = load_error(&plugins, "example");
    assert!(
        matches!(err, LoadError::Settings(SettingsError::MissingEnv { .. })),
        "{err}"
    );
    let msg = err.to_string();
    assert!(msg.contains("NANOCLAW_TEST_UNSET_SECRET"), "{msg}");
    assert!(
        msg.contains("process environment") && msg.contains(".env"),
        "{msg}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dotenv_in_data_dir_supplies_secrets() {
    let host = Host::new();
    std::fs::create_dir_all(host.path("data")).expect("data dir");
    std::fs::write(
        host.path("data/.env"),
        format!(
            "# secrets\nEX_TOKEN=\"from dotenv\"\nexport EX_SECRET='{}'\n",
            example_secret()
        ),
    )
    .expect(".env");
    let plugins = host
        .load(&example_toml(
            "example",
            "http://127.0.0.1:9",
            "{ env = \"EX_TOKEN\" }",
            "{ env = \"EX_SECRET\" }",
        ))
        .await;
    assert!(
        plugins.get("example").is_some(),
        "{:?}",
        row(&plugins, "example").status
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabled_and_required_failures() {
    let host = Host::new();
    let plugins = host
        .load(
            "[plugins.off]\nlibrary = \"whatever\"\nenabled = false\n\
             [plugins.needed]\nlibrary = \"missing-required\"\nrequired = true\n\
             [plugins.optional]\nlibrary = \"missing-optional\"\n",
        )
        .await;
    assert!(matches!(
        row(&plugins, "off").status,
        PluginStatus::Disabled
    ));
    let failures: Vec<&str> = plugins
        .required_failures()
        .iter()
        .map(|r| r.instance.as_str())
        .collect();
    assert_eq!(failures, ["needed"]);
    let table = render_report(plugins.report());
    assert!(table.starts_with("INSTANCE"), "{table}");
    assert!(
        table.contains("disabled") && table.contains("FAILED"),
        "{table}"
    );
    assert!(
        table.contains("needed: plugin library `missing-required` not found"),
        "{table}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_mode_creates_but_never_starts() {
    let host = Host::new();
    let record = host.path("check.jsonl");
    let config = host.config(&test_plugin_toml(
        "c",
        &format!(
            "start = \"panic\"\nrecord_path = {:?}",
            record.display().to_string()
        ),
    ));
    let check_host = MemoryHost::new();
    let factory = |_: &InstanceName, _: &PluginManifest| check_host.services();
    let rows = registry::check(&config, &host.options(), &factory).await;
    assert_eq!(rows.len(), 1);
    assert!(
        matches!(rows[0].status, PluginStatus::Loaded),
        "start was never called: {:?}",
        rows[0].status
    );
    assert!(render_report(&rows).contains("open_dm,typing,files,buttons,webhook"));
}

#[test]
fn abi_marker_survives_a_release_build() {
    let lib = test_plugin(Profile::Release);
    let version = nanoclaw::plugins::loader::inspect(&lib).expect("marker readable from the file");
    assert_eq!(version.to_string(), nanoclaw_plugin_api::ABI_VERSION);
    let example = example_plugin(Profile::Release);
    assert!(nanoclaw::plugins::loader::inspect(&example).is_ok());
    // And the section is a real, named section of the release .so.
    let bytes = std::fs::read(&lib).expect("read");
    let needle = b".nanoclaw_abi\0";
    assert!(
        bytes.windows(needle.len()).any(|w| w == needle),
        "section name in the string table"
    );
}
