//! What the model-API proxy adds to a model request, against a streaming upstream on
//! 127.0.0.1 (so the upstream's own time is near zero and the proxy's cost is what shows):
//!
//! - **direct**: a new TCP connection to the upstream per request (no proxy);
//! - **proxy, warm**: a new connection to the session's socket per request, the proxy's
//!   upstream connections already open (the steady state of a conversation);
//! - **proxy, cold**: the first request through a socket just opened (a new container): the
//!   proxy also connects to the upstream.
//!
//! For each: time to the first streamed event (what the user waits for) and to the end of
//! the answer, p50 and p99. Run: `cargo bench -p nanoclaw --bench model_proxy`. Results and
//! method: docs/PERFORMANCE.md ("Model proxy").

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::response::Response;
use axum::routing::post;
use axum::serve::ListenerExt as _;
use nanoclaw::config::secrets::SecretSource;
use nanoclaw::db::Db;
use nanoclaw::ids::SessionId;
use nanoclaw::model_proxy::{Api, ModelProxy, ProxySettings};
use nanoclaw::store::agent_groups::{self, NewAgentGroup};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};

const FIRST: &str = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"model\":\"m\",\"usage\":{\"input_tokens\":100,\"output_tokens\":1}}}\n\n";
const DELTA: &str = "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"some words of the answer \"}}\n\n";
const LAST: &str = "event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":200}}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";
/// Text deltas per answer (a few hundred tokens).
const DELTAS: usize = 200;
const BODY: &str = r#"{"model":"m","max_tokens":1024,"stream":true,"messages":[{"role":"user","content":"hello"}]}"#;

async fn upstream() -> Response {
    let parts = std::iter::once(FIRST)
        .chain(std::iter::repeat_n(DELTA, DELTAS))
        .chain(std::iter::once(LAST))
        .map(|s| Ok::<_, std::io::Error>(bytes::Bytes::from_static(s.as_bytes())));
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(Body::from_stream(futures::stream::iter(parts)))
        .unwrap()
}

/// One request on a fresh connection: (time to the first event, time to the end).
async fn request<S: AsyncRead + AsyncWrite + Unpin>(mut s: S) -> (Duration, Duration) {
    let start = Instant::now();
    let req = format!(
        "POST /v1/messages HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\nanthropic-version: 2023-06-01\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{BODY}",
        BODY.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut got = Vec::with_capacity(64 * 1024);
    let mut buf = [0u8; 16 * 1024];
    let mut first = None;
    loop {
        let n = s.read(&mut buf).await.unwrap();
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
        if first.is_none() && got.windows(13).any(|w| w == b"message_start") {
            first = Some(start.elapsed());
        }
    }
    assert!(
        got.windows(12).any(|w| w == b"message_stop"),
        "incomplete answer: {}",
        String::from_utf8_lossy(&got)
    );
    (first.expect("first event"), start.elapsed())
}

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn report(name: &str, samples: &[(Duration, Duration)]) {
    let mut first: Vec<Duration> = samples.iter().map(|s| s.0).collect();
    let mut total: Vec<Duration> = samples.iter().map(|s| s.1).collect();
    println!(
        "{name:<14} first event p50 {:>7.1} µs  p99 {:>7.1} µs   whole answer p50 {:>7.1} µs  p99 {:>7.1} µs   (n={})",
        us(pct(&mut first, 0.5)),
        us(pct(&mut first, 0.99)),
        us(pct(&mut total, 0.5)),
        us(pct(&mut total, 0.99)),
        samples.len()
    );
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn proxy(base: &str, root: &Path, db: &Arc<Db>) -> ModelProxy {
    let vars = HashMap::from([
        ("ANTHROPIC_API_KEY".to_string(), "sk-ant-bench".to_string()),
        ("ANTHROPIC_BASE_URL".to_string(), base.to_string()),
    ]);
    let settings = ProxySettings::load(&SecretSource::with_vars(root, vars)).unwrap();
    ModelProxy::new(settings, root.join("proxy"), db.clone())
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let tmp = tempfile::tempdir().unwrap();
        let db = Arc::new(Db::open(&tmp.path().join("v2.db")).unwrap());
        let group = db
            .write(|c| agent_groups::create(c, NewAgentGroup::named("bench")))
            .unwrap()
            .id;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // As a real API's edge does: without it, small writes on a kept-alive connection wait
        // for delayed ACKs (40 ms), which would be the test server's cost, not the proxy's.
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        let base = format!("http://{addr}");
        tokio::spawn(async move {
            axum::serve(
                listener,
                Router::new().route("/v1/messages", post(upstream)),
            )
            .await
        });
        let n = 2_000;

        // Warm-up, then direct.
        for _ in 0..100 {
            request(tokio::net::TcpStream::connect(addr).await.unwrap()).await;
        }
        let mut direct = Vec::with_capacity(n);
        for _ in 0..n {
            direct.push(request(tokio::net::TcpStream::connect(addr).await.unwrap()).await);
        }

        let p = proxy(&base, tmp.path(), &db);
        let session = SessionId::generate();
        let socket = p
            .open(&session, &group, Api::Anthropic)
            .unwrap()
            .join("model.sock");
        for _ in 0..100 {
            request(tokio::net::UnixStream::connect(&socket).await.unwrap()).await;
        }
        let mut warm = Vec::with_capacity(n);
        for _ in 0..n {
            warm.push(request(tokio::net::UnixStream::connect(&socket).await.unwrap()).await);
        }

        // Cold: a new proxy (no upstream connection yet) and a new socket each time.
        let mut cold = Vec::with_capacity(200);
        for _ in 0..200 {
            let p = proxy(&base, tmp.path(), &db);
            let session = SessionId::generate();
            let socket = p
                .open(&session, &group, Api::Anthropic)
                .unwrap()
                .join("model.sock");
            cold.push(request(tokio::net::UnixStream::connect(&socket).await.unwrap()).await);
            p.close(&session);
        }

        println!(
            "answer: {} bytes of event stream ({} events)",
            FIRST.len() + DELTA.len() * DELTAS + LAST.len(),
            DELTAS + 4
        );
        report("direct", &direct);
        report("proxy, warm", &warm);
        report("proxy, cold", &cold);
        let rows: i64 = db
            .read(|c| Ok(c.query_row("SELECT COUNT(*) FROM model_usage", [], |r| r.get(0))?))
            .unwrap();
        println!("usage rows recorded: {rows}");
    });
}
