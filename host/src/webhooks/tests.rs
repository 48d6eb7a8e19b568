use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use super::*;

/// `hold` takes webhooks and answers each once released (one permit each); `echo` answers
/// at once.
#[derive(Clone)]
struct Fake {
    release: Arc<Semaphore>,
    calls: Arc<AtomicUsize>,
}

impl Default for Fake {
    fn default() -> Self {
        Self {
            release: Arc::new(Semaphore::new(0)),
            calls: Arc::default(),
        }
    }
}

impl Targets for Fake {
    fn takes(&self, channel: &ChannelName) -> bool {
        matches!(channel.as_str(), "hold" | "echo")
    }

    async fn handle(
        &self,
        channel: &ChannelName,
        request: WebhookRequest,
    ) -> Result<WebhookResponse, TargetError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if channel.as_str() == "hold"
            && let Ok(permit) = self.release.acquire().await
        {
            permit.forget();
        }
        Ok(WebhookResponse {
            status: 200,
            body: request.body,
            ..Default::default()
        })
    }
}

fn limits() -> Limits {
    Limits {
        max_body: 1024,
        header_timeout: Duration::from_millis(300),
        request_timeout: Duration::from_secs(5),
        max_connections: 16,
        per_channel: 2,
    }
}

async fn start(fake: Fake, limits: Limits) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(serve_on(listener, fake, limits, async {
        let _ = stopped.await;
    }));
    (addr, stop)
}

/// One request on a fresh connection: the status line's code and the body.
async fn post(addr: SocketAddr, path: &str, body: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(body.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let code = out
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned();
    (code, body)
}

#[tokio::test]
async fn requests_reach_their_channel_and_unknown_ones_are_refused() {
    let (addr, _stop) = start(Fake::default(), limits()).await;
    assert_eq!(post(addr, "/webhook/echo", "hi").await, (200, "hi".into()));
    assert_eq!(post(addr, "/webhook/echo/sub/path", "x").await.0, 200);
    assert_eq!(post(addr, "/webhook/nobody", "hi").await.0, 404);
    assert_eq!(post(addr, "/webhook/BAD!", "hi").await.0, 404);
    assert_eq!(post(addr, "/elsewhere", "hi").await.0, 404);
}

#[tokio::test]
async fn a_body_over_the_limit_is_refused_before_the_plugin_sees_it() {
    let fake = Fake::default();
    let (addr, _stop) = start(fake.clone(), limits()).await;
    let (status, _) = post(addr, "/webhook/echo", &"x".repeat(2048)).await;
    assert_eq!(status, 413);
    assert_eq!(fake.calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_flood_on_one_channel_is_capped_and_leaves_the_others_alone() {
    let fake = Fake::default();
    let (addr, _stop) = start(fake.clone(), limits()).await;
    let held: Vec<_> = (0..2)
        .map(|_| tokio::spawn(post(addr, "/webhook/hold", "slow")))
        .collect();
    for _ in 0..100 {
        if fake.calls.load(Ordering::SeqCst) == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(
        b"POST /webhook/hold HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    let mut third = String::new();
    s.read_to_string(&mut third).await.unwrap();
    assert!(third.starts_with("HTTP/1.1 503"), "{third}");
    assert!(
        third.to_ascii_lowercase().contains("retry-after: 1"),
        "{third}"
    );
    assert_eq!(
        post(addr, "/webhook/echo", "fine").await,
        (200, "fine".into())
    );

    fake.release.add_permits(2);
    for h in held {
        assert_eq!(h.await.unwrap().0, 200);
    }
    // The permits came back.
    let again = tokio::spawn(post(addr, "/webhook/hold", "again"));
    for _ in 0..100 {
        if fake.calls.load(Ordering::SeqCst) == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    fake.release.add_permits(1);
    assert_eq!(again.await.unwrap().0, 200);
}

#[tokio::test]
async fn a_sender_too_slow_with_its_headers_is_cut_off() {
    let (addr, _stop) = start(Fake::default(), limits()).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"POST /webhook/echo HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut out)).await;
    assert!(read.is_ok(), "the connection was still open after 3 s");
    let text = String::from_utf8_lossy(&out);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 408"),
        "{text}"
    );
}

#[tokio::test]
async fn a_request_that_takes_too_long_is_answered_503() {
    let fake = Fake::default();
    let limits = Limits {
        request_timeout: Duration::from_millis(300),
        ..limits()
    };
    let (addr, _stop) = start(fake.clone(), limits).await;
    assert_eq!(post(addr, "/webhook/hold", "x").await.0, 503);
    // Its permit was released with it.
    assert_eq!(post(addr, "/webhook/echo", "y").await.0, 200);
}
