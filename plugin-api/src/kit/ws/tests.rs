//! The client against a tokio-tungstenite server on 127.0.0.1 that drops the socket.

use std::sync::{Arc, Mutex};

use tokio::net::TcpListener;
use tokio::sync::oneshot;

use super::*;
use crate::abi::HealthStatus;
use crate::kit::testing::MemoryHost;

/// Identifies on the first connection, resumes after; records what it receives; asks the
/// test to stop once `stop_after` messages arrived.
struct Recorder {
    received: Arc<Mutex<Vec<String>>>,
    stop_after: usize,
    done: Option<oneshot::Sender<()>>,
    disconnects: Vec<Disconnect>,
    stop_on_code: Option<u16>,
}

impl Recorder {
    fn new(stop_after: usize, done: oneshot::Sender<()>) -> Self {
        Self {
            received: Arc::default(),
            stop_after,
            done: Some(done),
            disconnects: Vec::new(),
            stop_on_code: None,
        }
    }
}

impl WsHandler for Recorder {
    async fn on_connect(&mut self, session: &mut Session) -> Flow {
        let first = if session.connects() == 1 {
            "identify"
        } else {
            "resume"
        };
        session.send(Message::text(first));
        Flow::Continue
    }

    async fn on_message(&mut self, message: Message, _session: &mut Session) -> Flow {
        let mut received = self.received.lock().expect("received");
        received.push(message.to_text().unwrap_or("<binary>").to_owned());
        if received.len() == self.stop_after
            && let Some(done) = self.done.take()
        {
            let _ = done.send(());
        }
        Flow::Continue
    }

    fn heartbeat(&mut self) -> Option<Message> {
        Some(Message::text("hb"))
    }

    fn on_disconnect(&mut self, disconnect: &Disconnect) -> Flow {
        self.disconnects.push(disconnect.clone());
        match (self.stop_on_code, disconnect.code) {
            (Some(stop), Some(code)) if stop == code => Flow::Stop(format!("closed with {code}")),
            _ => Flow::Reconnect,
        }
    }
}

/// What the server saw on each connection.
type Seen = Arc<Mutex<Vec<Vec<String>>>>;

/// Connection 1: waits for two heartbeats, sends `event-1`, then drops the TCP connection
/// without a close frame. Connection 2: sends `event-2` and reads until the client closes.
async fn dropping_server(listener: TcpListener, seen: Seen, clean_close: Arc<Mutex<bool>>) {
    for round in 0..2 {
        let Ok((tcp, _)) = listener.accept().await else {
            return;
        };
        let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else {
            return;
        };
        seen.lock().expect("seen").push(Vec::new());
        let mut beats = 0;
        if round == 1 {
            let _ = ws.send(Message::text("event-2")).await;
        }
        while let Some(Ok(message)) = ws.next().await {
            match message {
                Message::Text(text) => {
                    seen.lock().expect("seen")[round].push(text.to_string());
                    if text.as_str() == "hb" {
                        beats += 1;
                    }
                    if round == 0 && beats == 2 {
                        let _ = ws.send(Message::text("event-1")).await;
                        // Let the event leave before the socket goes away.
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        break;
                    }
                }
                Message::Close(_) => {
                    *clean_close.lock().expect("close") = true;
                    break;
                }
                _ => {}
            }
        }
        drop(ws);
    }
}

fn fast(url: String) -> WsConfig {
    WsConfig::new(url)
        .heartbeat(Some(Duration::from_millis(30)))
        .backoff(BackoffPolicy::exponential(
            Duration::from_millis(20),
            Duration::from_millis(50),
        ))
}

#[test]
fn reconnects_after_a_drop_resumes_and_closes_cleanly_on_stop() {
    let rt = crate::kit::runtime("ws-test", 1).expect("runtime");
    let mem = MemoryHost::new();
    let life = Lifecycle::detached(rt.handle().clone(), mem.host(), "ws_test");
    let (seen, clean_close): (Seen, _) = (Arc::default(), Arc::new(Mutex::new(false)));
    let (done_tx, done_rx) = oneshot::channel();
    let mut handler = Recorder::new(2, done_tx);
    let received = Arc::clone(&handler.received);
    let result = rt.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("ws://{}/gateway", listener.local_addr().expect("addr"));
        let server = tokio::spawn(dropping_server(
            listener,
            Arc::clone(&seen),
            Arc::clone(&clean_close),
        ));
        let stopper = life.clone();
        tokio::spawn(async move {
            let _ = done_rx.await;
            stopper.stop();
        });
        let result = run(&life, fast(url), &mut handler).await;
        let _ = tokio::time::timeout(Duration::from_secs(2), server).await;
        result
    });
    assert_eq!(result, Err(WsError::Stopped));
    assert_eq!(*received.lock().expect("received"), ["event-1", "event-2"]);
    let seen = seen.lock().expect("seen").clone();
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[0][0], "identify");
    assert!(
        seen[0].iter().filter(|m| *m == "hb").count() >= 2,
        "{seen:?}"
    );
    assert_eq!(seen[1][0], "resume", "{seen:?}");
    assert!(*clean_close.lock().expect("close"), "a close frame at stop");
    assert_eq!(handler.disconnects.len(), 1);
    assert!(
        mem.logs()
            .iter()
            .any(|l| l.message.contains("gateway connection lost"))
    );
    assert_eq!(life.health().status(), HealthStatus::OK);
    assert!(life.health().last_ingest_ms() > 0);
}

#[test]
fn a_close_code_the_handler_refuses_ends_the_run_and_health_is_down() {
    let rt = crate::kit::runtime("ws-test", 1).expect("runtime");
    let mem = MemoryHost::new();
    let life = Lifecycle::detached(rt.handle().clone(), mem.host(), "ws_test");
    let (done_tx, _done_rx) = oneshot::channel();
    let mut handler = Recorder::new(usize::MAX, done_tx);
    handler.stop_on_code = Some(4004);
    let result = rt.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("ws://{}/", listener.local_addr().expect("addr"));
        tokio::spawn(async move {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else {
                return;
            };
            let _ = ws.next().await; // identify
            let _ = ws
                .close(Some(CloseFrame {
                    code: CloseCode::from(4004),
                    reason: "Authentication failed.".into(),
                }))
                .await;
            while ws.next().await.is_some() {}
        });
        run(&life, fast(url), &mut handler).await
    });
    assert_eq!(result, Err(WsError::Handler("closed with 4004".into())));
    assert_eq!(life.health().status(), HealthStatus::DOWN);
    assert!(
        handler.disconnects[0]
            .reason
            .contains("Authentication failed")
    );
}

#[test]
fn an_unreachable_server_is_retried_then_given_up_and_the_url_is_not_logged() {
    let rt = crate::kit::runtime("ws-test", 1).expect("runtime");
    let mem = MemoryHost::new();
    let life = Lifecycle::detached(rt.handle().clone(), mem.host(), "ws_test");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let (done_tx, _done_rx) = oneshot::channel();
    let mut handler = Recorder::new(1, done_tx);
    let config = WsConfig::new(format!("ws://127.0.0.1:{port}/?token=SECRET123")).backoff(
        BackoffPolicy::exponential(Duration::from_millis(5), Duration::from_millis(5))
            .max_attempts(3),
    );
    let result = rt.block_on(run(&life, config, &mut handler));
    assert!(matches!(result, Err(WsError::GaveUp(_))), "{result:?}");
    assert_eq!(life.health().status(), HealthStatus::DEGRADED);
    for line in mem.logs() {
        assert!(!line.message.contains("SECRET123"), "{line:?}");
    }
    assert!(!format!("{result:?}").contains("SECRET123"));
    let bad = rt.block_on(run(&life, WsConfig::new("not a url"), &mut handler));
    assert!(matches!(bad, Err(WsError::Config(_))), "{bad:?}");
}

/// Asks for a fresh URL before each connection: the first ask fails (retried), the next
/// gives a URL with a ticket that must not reach the log.
struct FreshUrl {
    base: String,
    asked: u32,
    received: Vec<String>,
}

impl WsHandler for FreshUrl {
    async fn on_connect(&mut self, _session: &mut Session) -> Flow {
        Flow::Continue
    }

    async fn on_message(&mut self, message: Message, _session: &mut Session) -> Flow {
        self.received
            .push(message.to_text().unwrap_or("<binary>").to_owned());
        if self.received.len() == 2 {
            return Flow::Stop("enough".into());
        }
        // The server hands out a URL per connection: go and get a new one.
        Flow::Reconnect
    }

    async fn connect_url(&mut self) -> Result<Option<Secret>, UrlError> {
        self.asked += 1;
        if self.asked == 1 {
            return Err(UrlError::Retry("the URL service is busy".into()));
        }
        Ok(Some(Secret::new(format!(
            "{}?ticket=TICKET{}",
            self.base, self.asked
        ))))
    }
}

#[test]
// The handshake callback's signature is tungstenite's, large error and all.
#[allow(clippy::result_large_err)]
fn a_fresh_url_is_asked_for_before_each_connection() {
    let rt = crate::kit::runtime("ws-test", 1).expect("runtime");
    let mem = MemoryHost::new();
    let life = Lifecycle::detached(rt.handle().clone(), mem.host(), "ws_test");
    let paths: Arc<Mutex<Vec<String>>> = Arc::default();
    let (result, handler) = rt.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let base = format!("ws://{}/link", listener.local_addr().expect("addr"));
        let seen = Arc::clone(&paths);
        tokio::spawn(async move {
            for n in 0..2 {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let seen = Arc::clone(&seen);
                let callback =
                    move |request: &tokio_tungstenite::tungstenite::handshake::server::Request,
                          response| {
                        seen.lock().expect("paths").push(request.uri().to_string());
                        Ok(response)
                    };
                let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(tcp, callback).await else {
                    return;
                };
                let _ = ws.send(Message::text(format!("hello-{n}"))).await;
                while ws.next().await.is_some() {}
            }
        });
        let mut handler = FreshUrl {
            base,
            asked: 0,
            received: Vec::new(),
        };
        let config = fast("ws://127.0.0.1:9/unused".into());
        let result = run(&life, config, &mut handler).await;
        (result, handler)
    });
    assert_eq!(result, Err(WsError::Handler("enough".into())));
    assert_eq!(handler.asked, 3, "one failed ask, then one per connection");
    assert_eq!(handler.received, ["hello-0", "hello-1"]);
    assert_eq!(
        *paths.lock().expect("paths"),
        ["/link?ticket=TICKET2", "/link?ticket=TICKET3"]
    );
    assert!(
        mem.logs()
            .iter()
            .any(|l| l.message.contains("cannot get a gateway URL"))
    );
    for line in mem.logs() {
        assert!(!line.message.contains("TICKET"), "{line:?}");
    }
}

/// Beats first after a short delay, reconnects when a beat went unanswered, and connects
/// to a second URL from then on.
struct Zombie {
    connects: u32,
    awaiting_ack: bool,
    next_url: String,
}

impl WsHandler for Zombie {
    async fn on_connect(&mut self, session: &mut Session) -> Flow {
        self.connects += 1;
        self.awaiting_ack = false;
        session.set_heartbeat_after(Duration::from_millis(300), Duration::from_millis(20));
        session.send(Message::text(format!("hello-{}", self.connects)));
        Flow::Continue
    }

    async fn on_message(&mut self, _message: Message, _session: &mut Session) -> Flow {
        self.awaiting_ack = false;
        Flow::Continue
    }

    fn heartbeat(&mut self) -> Option<Message> {
        self.awaiting_ack = true;
        Some(Message::text("hb"))
    }

    fn before_heartbeat(&mut self) -> Flow {
        if self.awaiting_ack {
            Flow::Reconnect
        } else {
            Flow::Continue
        }
    }

    async fn connect_url(&mut self) -> Result<Option<Secret>, UrlError> {
        Ok((self.connects >= 1).then(|| Secret::new(self.next_url.clone())))
    }
}

/// Accepts one connection and records (ms since accept, text) until it closes.
async fn silent_server(listener: TcpListener, seen: Arc<Mutex<Vec<(u128, String)>>>) {
    let Ok((tcp, _)) = listener.accept().await else {
        return;
    };
    let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else {
        return;
    };
    let accepted = std::time::Instant::now();
    while let Some(Ok(message)) = ws.next().await {
        if let Message::Text(text) = message {
            let at = accepted.elapsed().as_millis();
            seen.lock().expect("seen").push((at, text.to_string()));
        }
    }
}

#[test]
fn first_beat_delay_zombie_reconnect_and_the_handlers_url() {
    let rt = crate::kit::runtime("ws-test", 1).expect("runtime");
    let mem = MemoryHost::new();
    let life = Lifecycle::detached(rt.handle().clone(), mem.host(), "ws_test");
    let first: Arc<Mutex<Vec<(u128, String)>>> = Arc::default();
    let second: Arc<Mutex<Vec<(u128, String)>>> = Arc::default();
    let result = rt.block_on(async {
        let a = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let b = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url_a = format!("ws://{}/", a.local_addr().expect("addr"));
        let url_b = format!("ws://{}/resume", b.local_addr().expect("addr"));
        tokio::spawn(silent_server(a, Arc::clone(&first)));
        tokio::spawn(silent_server(b, Arc::clone(&second)));
        let mut handler = Zombie {
            connects: 0,
            awaiting_ack: false,
            next_url: url_b,
        };
        let stopper = life.clone();
        let watched = Arc::clone(&second);
        tokio::spawn(async move {
            while watched.lock().expect("seen").is_empty() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            stopper.stop();
        });
        let config = WsConfig::new(url_a).backoff(BackoffPolicy::exponential(
            Duration::from_millis(10),
            Duration::from_millis(10),
        ));
        tokio::time::timeout(Duration::from_secs(5), run(&life, config, &mut handler)).await
    });
    assert_eq!(result, Ok(Err(WsError::Stopped)));
    let first = first.lock().expect("seen").clone();
    let texts: Vec<&str> = first.iter().map(|(_, t)| t.as_str()).collect();
    assert_eq!(
        texts,
        ["hello-1", "hb"],
        "one unanswered beat, then a reconnect"
    );
    assert!(
        first[1].0 < 200,
        "the first beat after the short delay: {first:?}"
    );
    let second = second.lock().expect("seen").clone();
    assert_eq!(
        second[0].1, "hello-2",
        "the second connection at the handler's URL"
    );
}
