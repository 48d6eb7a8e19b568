//! The model-API proxy against an upstream on 127.0.0.1: what passes, what is added, what is
//! refused, that answers stream through unbuffered, and that usage and budgets hold.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Request};
use axum::response::Response;
use axum::routing::{get, post};
use nanoclaw::config::secrets::SecretSource;
use nanoclaw::db::Db;
use nanoclaw::ids::{AgentGroupId, SessionId};
use nanoclaw::model_proxy::{Api, ModelProxy, ProxySettings};
use nanoclaw::store::agent_groups::{self, NewAgentGroup};
use nanoclaw::store::usage;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::UnixStream;
use tokio::sync::Notify;

const KEY: &str = "sk-ant-test-secret-key";

/// What the upstream saw.
#[derive(Clone, Default)]
struct Upstream {
    seen: Arc<Mutex<Vec<(String, HeaderMap, String)>>>,
    /// The streamed answer waits here between its first and its last part.
    gate: Arc<Notify>,
}

impl Upstream {
    async fn record(&self, req: Request<Body>) {
        let (parts, body) = req.into_parts();
        let body = axum::body::to_bytes(body, 1 << 20)
            .await
            .unwrap_or_default();
        self.seen.lock().unwrap().push((
            parts.uri.to_string(),
            parts.headers,
            String::from_utf8_lossy(&body).into_owned(),
        ));
    }
}

async fn messages(State(up): State<Upstream>, req: Request<Body>) -> Response {
    up.record(req).await;
    let first = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"model\":\"claude-fake\",\"usage\":{\"input_tokens\":40,\"cache_read_input_tokens\":10,\"output_tokens\":1}}}\n\nevent: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"delta\":{\"type\":\"text_delta\",\"text\":\"FIRST-PART\"}}\n\n";
    let last = "event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":50}}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";
    let gate = up.gate.clone();
    let stream = async_stream(first, last, gate);
    Response::builder()
        .header("content-type", "text/event-stream")
        .header("request-id", "req_1")
        .header("set-cookie", "upstream=secret")
        .body(Body::from_stream(stream))
        .unwrap()
}

fn async_stream(
    first: &'static str,
    last: &'static str,
    gate: Arc<Notify>,
) -> impl futures::Stream<Item = Result<bytes::Bytes, std::io::Error>> {
    futures::stream::unfold(0u8, move |step| {
        let gate = gate.clone();
        async move {
            match step {
                0 => Some((Ok(bytes::Bytes::from_static(first.as_bytes())), 1)),
                1 => {
                    gate.notified().await;
                    Some((Ok(bytes::Bytes::from_static(last.as_bytes())), 2))
                }
                _ => None,
            }
        }
    })
}

async fn completions(State(up): State<Upstream>, req: Request<Body>) -> Response {
    up.record(req).await;
    Response::builder()
        .header("content-type", "application/json")
        .body(Body::from(
            r#"{"model":"llama-fake","choices":[{"message":{"role":"assistant","content":"hi"}}],"usage":{"prompt_tokens":9,"completion_tokens":3}}"#,
        ))
        .unwrap()
}

struct Fx {
    _tmp: tempfile::TempDir,
    db: Arc<Db>,
    up: Upstream,
    base: String,
    group: AgentGroupId,
    session: SessionId,
    proxy_root: PathBuf,
}

impl Fx {
    async fn new() -> Fx {
        let tmp = tempfile::tempdir().unwrap();
        let db = Arc::new(Db::open(&tmp.path().join("v2.db")).unwrap());
        let group = db
            .write(|c| agent_groups::create(c, NewAgentGroup::named("Andy")))
            .unwrap()
            .id;
        let up = Upstream::default();
        let app = Router::new()
            .route("/v1/messages", post(messages))
            .route("/v1/chat/completions", post(completions))
            .route("/v1/models", get(|| async { "{}" }))
            .with_state(up.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        let proxy_root = tmp.path().join("proxy");
        Fx {
            _tmp: tmp,
            db,
            up,
            base,
            group,
            session: SessionId::generate(),
            proxy_root,
        }
    }

    fn proxy(&self, vars: &[(&str, &str)]) -> ModelProxy {
        let mut map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        map.entry("ANTHROPIC_BASE_URL".into())
            .or_insert_with(|| self.base.clone());
        map.entry("OPENAI_BASE_URL".into())
            .or_insert_with(|| format!("{}/v1", self.base));
        let settings =
            ProxySettings::load(&SecretSource::with_vars(self.proxy_root.as_path(), map)).unwrap();
        ModelProxy::new(settings, self.proxy_root.clone(), self.db.clone())
    }

    fn seen(&self) -> Vec<(String, HeaderMap, String)> {
        self.up.seen.lock().unwrap().clone()
    }
}

/// Sends one HTTP/1.1 request over the socket and returns the connection, to read from.
async fn send(socket: &Path, head: &str, body: &str) -> UnixStream {
    let mut s = UnixStream::connect(socket).await.unwrap();
    let req = format!(
        "{head}\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    s
}

async fn read_all(mut s: UnixStream) -> String {
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("answer within 10 s")
        .unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

/// Reads until `needle` has arrived (or fails after 5 s).
async fn read_until(s: &mut UnixStream, needle: &str) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let found = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let n = s.read(&mut buf).await.unwrap();
            assert!(n > 0, "connection closed before {needle:?}");
            got.extend_from_slice(&buf[..n]);
            if String::from_utf8_lossy(&got).contains(needle) {
                return;
            }
        }
    })
    .await;
    let text = String::from_utf8_lossy(&got).into_owned();
    assert!(found.is_ok(), "{needle:?} did not arrive; got {text}");
    text
}

#[tokio::test]
async fn streams_with_the_hosts_credential_and_records_usage() {
    let fx = Fx::new().await;
    let proxy = fx.proxy(&[("ANTHROPIC_API_KEY", KEY)]);
    let dir = proxy.open(&fx.session, &fx.group, Api::Anthropic).unwrap();
    let socket = dir.join("model.sock");
    let mode = std::fs::metadata(&socket).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
        0o600
    );

    let mut s = send(
        &socket,
        "POST /v1/messages?beta=true HTTP/1.1\r\nx-api-key: agent-made-up\r\nauthorization: Bearer agent\r\ncookie: a=b\r\nanthropic-version: 2023-06-01",
        r#"{"model":"claude-asked","stream":true,"messages":[]}"#,
    )
    .await;
    // The first part arrives while the upstream still holds the rest: nothing is buffered.
    let head = read_until(&mut s, "FIRST-PART").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("request-id: req_1"));
    assert!(!head.contains("set-cookie"), "{head}");
    assert!(proxy.busy(&fx.session));
    fx.up.gate.notify_one();
    let rest = read_all(s).await;
    assert!(rest.contains("message_stop"), "{rest}");

    let seen = fx.seen();
    assert_eq!(seen.len(), 1);
    let (uri, headers, body) = &seen[0];
    assert_eq!(uri, "/v1/messages?beta=true");
    assert_eq!(headers["x-api-key"], KEY);
    assert!(headers.get("authorization").is_none());
    assert!(headers.get("cookie").is_none());
    assert_eq!(headers["anthropic-version"], "2023-06-01");
    assert!(body.contains("claude-asked"));

    // Usage is written when the answer ends.
    let day = usage::today();
    let mut total = 0;
    for _ in 0..100 {
        total = fx
            .db
            .read(|c| usage::tokens_on(c, &fx.group, &day))
            .unwrap();
        if total > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(total, 40 + 10 + 50);
    let rows = fx
        .db
        .read(|c| usage::by_day(c, &day, Some(&fx.group)))
        .unwrap();
    assert_eq!(rows[0].requests, 1);
    assert_eq!(rows[0].tokens.output, 50);
    assert!(!proxy.busy(&fx.session));

    proxy.close(&fx.session);
    assert!(!dir.exists(), "the socket directory goes with the session");
}

#[tokio::test]
async fn refuses_everything_but_the_sessions_model_endpoints() {
    let fx = Fx::new().await;
    let proxy = fx.proxy(&[("ANTHROPIC_API_KEY", KEY)]);
    let socket = proxy
        .open(&fx.session, &fx.group, Api::Anthropic)
        .unwrap()
        .join("model.sock");
    for head in [
        "GET /v1/models HTTP/1.1",
        "POST /v1/files HTTP/1.1",
        "POST /v1/chat/completions HTTP/1.1",
        "GET /v1/messages HTTP/1.1",
        "POST /api/oauth/claude_cli/create_api_key HTTP/1.1",
        "POST /v1/messages?x=%2F..%2F HTTP/1.1",
    ] {
        let answer = read_all(send(&socket, head, "{}").await).await;
        assert!(
            answer.starts_with("HTTP/1.1 403") || answer.starts_with("HTTP/1.1 400"),
            "{head}: {answer}"
        );
        assert!(answer.contains("\"type\":\"error\""), "{answer}");
    }
    assert!(fx.seen().is_empty(), "nothing reached the upstream");
}

#[tokio::test]
async fn a_spent_budget_is_refused_with_a_message_for_the_chat() {
    let fx = Fx::new().await;
    fx.db
        .write(|c| {
            agent_groups::set_container_config(
                c,
                &fx.group,
                &serde_json::json!({"daily_tokens": 100}),
            )?;
            usage::record(
                c,
                &usage::UsageRecord {
                    agent_group_id: fx.group.clone(),
                    session_id: fx.session.clone(),
                    provider: "anthropic",
                    model: None,
                    status: 200,
                    tokens: usage::Tokens {
                        input: 90,
                        output: 10,
                        ..Default::default()
                    },
                },
            )
        })
        .unwrap();
    let proxy = fx.proxy(&[("ANTHROPIC_API_KEY", KEY)]);
    let socket = proxy
        .open(&fx.session, &fx.group, Api::Anthropic)
        .unwrap()
        .join("model.sock");
    let answer = read_all(send(&socket, "POST /v1/messages HTTP/1.1", "{}").await).await;
    assert!(answer.starts_with("HTTP/1.1 402"), "{answer}");
    assert!(answer.contains("budget_exceeded"), "{answer}");
    assert!(answer.contains("daily budget of 100 tokens"), "{answer}");
    assert!(answer.contains("nanoclaw groups set"), "{answer}");
    assert!(fx.seen().is_empty());
}

#[tokio::test]
async fn no_credential_and_no_upstream_are_told_in_the_apis_shape() {
    let fx = Fx::new().await;
    let proxy = fx.proxy(&[]);
    let socket = proxy
        .open(&fx.session, &fx.group, Api::Anthropic)
        .unwrap()
        .join("model.sock");
    let answer = read_all(send(&socket, "POST /v1/messages HTTP/1.1", "{}").await).await;
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    assert!(answer.contains("authentication_error") && answer.contains("data/.env"));

    // An upstream nobody listens on.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let proxy = fx.proxy(&[("ANTHROPIC_API_KEY", KEY), ("ANTHROPIC_BASE_URL", &dead)]);
    let socket = proxy
        .open(&fx.session, &fx.group, Api::Anthropic)
        .unwrap()
        .join("model.sock");
    let answer = read_all(send(&socket, "POST /v1/messages HTTP/1.1", "{}").await).await;
    assert!(answer.starts_with("HTTP/1.1 502"), "{answer}");
    assert!(answer.contains("upstream_unreachable"), "{answer}");
    assert!(!answer.contains(KEY));
}

#[tokio::test]
async fn openai_compatible_sessions_reach_chat_completions_only() {
    let fx = Fx::new().await;
    let proxy = fx.proxy(&[
        ("OPENAI_API_KEY", "sk-openai-secret"),
        ("ANTHROPIC_API_KEY", KEY),
    ]);
    let socket = proxy
        .open(&fx.session, &fx.group, Api::OpenAi)
        .unwrap()
        .join("model.sock");
    let answer = read_all(
        send(
            &socket,
            "POST /v1/chat/completions HTTP/1.1\r\nauthorization: Bearer agent",
            r#"{"model":"llama-asked","messages":[]}"#,
        )
        .await,
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let answer = read_all(send(&socket, "POST /v1/messages HTTP/1.1", "{}").await).await;
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    assert!(answer.contains("\"error\""), "{answer}");

    let seen = fx.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].0, "/v1/chat/completions");
    assert_eq!(seen[0].1["authorization"], "Bearer sk-openai-secret");
    assert!(
        seen[0].1.get("x-api-key").is_none(),
        "the Anthropic key stays home"
    );

    let day = usage::today();
    let mut rows = Vec::new();
    for _ in 0..100 {
        rows = fx
            .db
            .read(|c| usage::by_day(c, &day, Some(&fx.group)))
            .unwrap();
        if !rows.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(rows[0].tokens.input, 9);
    assert_eq!(rows[0].tokens.output, 3);
}

#[tokio::test]
async fn a_subscription_token_goes_as_bearer_with_the_oauth_beta() {
    let fx = Fx::new().await;
    let proxy = fx.proxy(&[("CLAUDE_CODE_OAUTH_TOKEN", "sk-ant-oat-secret")]);
    let socket = proxy
        .open(&fx.session, &fx.group, Api::Anthropic)
        .unwrap()
        .join("model.sock");
    fx.up.gate.notify_one();
    let answer = read_all(
        send(
            &socket,
            "POST /v1/messages HTTP/1.1\r\nanthropic-beta: tools-1",
            "{}",
        )
        .await,
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let seen = fx.seen();
    let h = &seen[0].1;
    assert_eq!(h["authorization"], "Bearer sk-ant-oat-secret");
    let betas: Vec<_> = h
        .get_all("anthropic-beta")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    assert!(
        betas.iter().any(|b| b.contains("oauth-2025-04-20")),
        "{betas:?}"
    );
    assert!(betas.iter().any(|b| b.contains("tools-1")), "{betas:?}");
    assert!(h.get("x-api-key").is_none());
}

fn nanoclaw(data: &Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_nanoclaw"))
        .arg("--data-dir")
        .arg(data)
        .args(args)
        .env_remove("ANTHROPIC_API_KEY")
        .output()
        .unwrap()
}

fn ok(data: &Path, args: &[&str]) -> String {
    let out = nanoclaw(data, args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn budgets_and_models_are_set_per_agent_and_usage_is_shown_by_day() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    ok(&data, &["groups", "create", "Andy", "--folder", "andy"]);
    ok(
        &data,
        &[
            "groups",
            "set",
            "andy",
            "--daily-tokens",
            "500",
            "--model",
            "claude-x",
            "--provider",
            "openai",
        ],
    );
    let shown = ok(&data, &["groups", "show", "andy"]);
    assert!(shown.contains("daily token budget: 500"), "{shown}");
    assert!(
        shown.contains("model: claude-x") && shown.contains("provider: openai"),
        "{shown}"
    );
    let refused = nanoclaw(&data, &["groups", "set", "andy", "--daily-tokens", "0"]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--daily-tokens"));
    ok(
        &data,
        &[
            "groups",
            "set",
            "andy",
            "--daily-tokens",
            "off",
            "--model",
            "default",
        ],
    );
    let shown = ok(&data, &["groups", "show", "andy"]);
    assert!(
        !shown.contains("budget") && !shown.contains("model:"),
        "{shown}"
    );

    assert_eq!(ok(&data, &["--json", "usage"]).trim(), "[]");
    let db = Db::open(&data.join("v2.db")).unwrap();
    let group = db.read(|c| agent_groups::resolve(c, "andy")).unwrap();
    db.write(|c| {
        usage::record(
            c,
            &usage::UsageRecord {
                agent_group_id: group.id.clone(),
                session_id: SessionId::generate(),
                provider: "openai",
                model: Some("llama".into()),
                status: 200,
                tokens: usage::Tokens {
                    input: 7,
                    output: 5,
                    cache_creation: 0,
                    cache_read: 3,
                },
            },
        )
    })
    .unwrap();
    let table = ok(&data, &["usage", "--agent", "andy"]);
    assert!(table.starts_with("DAY"), "{table}");
    assert!(
        table.contains(&usage::today()) && table.contains("andy"),
        "{table}"
    );
    let rows: serde_json::Value =
        serde_json::from_str(&ok(&data, &["--json", "usage", "--days", "1"])).unwrap();
    assert_eq!(
        rows[0]["total"],
        serde_json::Value::Null,
        "totals are the table's"
    );
    assert_eq!(rows[0]["input"], 7);
    assert_eq!(rows[0]["cache_read"], 3);
    assert_eq!(rows[0]["requests"], 1);
}

#[tokio::test]
async fn a_reopened_socket_keeps_its_directory_and_stale_ones_are_cleared() {
    let fx = Fx::new().await;
    let proxy = fx.proxy(&[("ANTHROPIC_API_KEY", KEY)]);
    let dir = proxy.open(&fx.session, &fx.group, Api::Anthropic).unwrap();
    let ino = |p: &Path| std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(p).unwrap());
    let before = ino(&dir);
    // Opened again while a container may have the directory mounted: same directory.
    let again = proxy.open(&fx.session, &fx.group, Api::Anthropic).unwrap();
    assert_eq!(again, dir);
    assert_eq!(ino(&dir), before);
    let answer = read_all(send(&dir.join("model.sock"), "GET /nothing HTTP/1.1", "{}").await).await;
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");

    // A new daemon clears what an old one left.
    drop(proxy);
    std::fs::create_dir_all(fx.proxy_root.join("sess-old")).unwrap();
    std::fs::write(fx.proxy_root.join("sess-old/model.sock"), b"").unwrap();
    let proxy = fx.proxy(&[("ANTHROPIC_API_KEY", KEY)]);
    proxy.remove_stale();
    assert_eq!(std::fs::read_dir(&fx.proxy_root).unwrap().count(), 0);
}

#[test]
fn doctor_checks_the_credential_with_the_api_when_asked() {
    let fake = nanoclaw_fake_anthropic::FakeAnthropic::start(KEY).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    ok(
        &data,
        &[
            "groups",
            "create",
            "Andy",
            "--folder",
            "andy",
            "--provider",
            "claude",
        ],
    );
    let doctor = |key: &str| {
        std::fs::write(
            data.join(".env"),
            format!(
                "ANTHROPIC_API_KEY={key}\nANTHROPIC_BASE_URL={}\n",
                fake.base_url()
            ),
        )
        .unwrap();
        let out = nanoclaw(
            &data,
            &[
                "doctor",
                "--credential",
                "--plugins",
                "/nonexistent/plugins.toml",
            ],
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let said = doctor(KEY);
    assert!(
        said.contains("anthropic credential: ANTHROPIC_API_KEY for http://127.0.0.1"),
        "{said}"
    );
    assert!(
        said.contains("[ok  ] anthropic accepts the credential: yes"),
        "{said}"
    );
    assert!(said.contains("[ok  ] model proxy"), "{said}");
    assert!(!said.contains(KEY), "doctor never prints the key");
    let said = doctor("sk-ant-wrong");
    assert!(
        said.contains("[FAIL] anthropic accepts the credential: no: HTTP 401"),
        "{said}"
    );
    // Without a key, an agent on Claude is a failure with the fix.
    std::fs::write(data.join(".env"), "").unwrap();
    let out = nanoclaw(&data, &["doctor", "--plugins", "/nonexistent/plugins.toml"]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("[FAIL] anthropic credential: none, and an agent uses Claude"),
        "{said}"
    );
    assert!(
        said.contains("ANTHROPIC_API_KEY=") && said.contains("CLAUDE_CODE_OAUTH_TOKEN"),
        "{said}"
    );
}
