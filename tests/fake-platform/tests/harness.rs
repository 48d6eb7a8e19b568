//! The harness against a tiny fake: the call log, faults, holds and WebSocket endpoints.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::{get, post};
use futures::{SinkExt as _, StreamExt as _};
use nanoclaw_fake_platform::{
    Commit, FakeServer, Fault, Harness, HoldState, Route, WsHub, WsMessage,
};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

/// A fake whose `/api/<name>` routes count how many calls they handled.
fn fake() -> (FakeServer, Harness, Arc<AtomicUsize>) {
    let handled = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&handled);
    let harness = Harness::new()
        .with_route_key(|parts| parts.uri.path().strip_prefix("/api/").map(str::to_owned))
        .with_control_prefix("/control/");
    let router = Router::new()
        .route(
            "/api/send",
            post(move |body: String| {
                let counter = Arc::clone(&counter);
                async move {
                    counter.fetch_add(1, Ordering::SeqCst);
                    axum::Json(json!({"ok": true, "echo": body}))
                }
            }),
        )
        .route("/api/other", get(|| async { "other" }))
        .route("/control/ping", get(|| async { "pong" }))
        .route("/plain", get(|| async { "plain" }));
    let server = FakeServer::start(harness.clone(), router).expect("serve");
    (server, harness, handled)
}

fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_is_logged_with_what_it_carried() {
    let (server, harness, _) = fake();
    let http = client();
    let answer = http
        .post(format!("{}/api/send?x=1", server.base_url()))
        .header("X-Signature", "abc")
        .body("hello")
        .send()
        .await
        .expect("send");
    assert_eq!(answer.status(), 200);
    http.get(format!("{}/plain", server.base_url()))
        .send()
        .await
        .expect("plain");
    http.get(format!("{}/control/ping", server.base_url()))
        .send()
        .await
        .expect("control");
    let calls = harness.calls();
    assert_eq!(calls.len(), 2, "the control API is not logged");
    let call = &calls[0];
    assert_eq!((call.seq, call.method.as_str()), (1, "POST"));
    assert_eq!(
        (call.path.as_str(), call.query.as_str()),
        ("/api/send", "x=1")
    );
    assert_eq!(call.route.as_deref(), Some("send"));
    assert_eq!(call.header("x-signature"), Some("abc"));
    assert_eq!(call.body_text(), Some("hello"));
    assert!(call.at_ms > 0);
    assert_eq!(calls[1].route, None);
    assert_eq!(harness.calls_to("send").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_hit_the_next_matching_calls() {
    let (server, harness, handled) = fake();
    let http = client();
    let send = || http.post(format!("{}/api/send", server.base_url())).send();
    harness.fail_next(
        Route::named("send"),
        2,
        Fault::rate_limited(Duration::from_secs(3)),
    );
    harness.fail_next(Route::Any, 1, Fault::server_error());
    for _ in 0..2 {
        let r = send().await.expect("429");
        assert_eq!(r.status(), 429);
        assert_eq!(
            r.headers().get("retry-after").and_then(|v| v.to_str().ok()),
            Some("3")
        );
    }
    assert_eq!(send().await.expect("500").status(), 500);
    assert_eq!(send().await.expect("ok").status(), 200);
    assert_eq!(
        handled.load(Ordering::SeqCst),
        1,
        "faulted calls never reached the fake"
    );
    let labels: Vec<Option<String>> = harness.calls().into_iter().map(|c| c.fault).collect();
    assert_eq!(
        labels,
        [
            Some("rate_limited".to_owned()),
            Some("rate_limited".to_owned()),
            Some("server_error".to_owned()),
            None
        ]
    );

    // Unnamed calls are never faulted.
    harness.fail_next(Route::Any, 1, Fault::status(503));
    let plain = http
        .get(format!("{}/plain", server.base_url()))
        .send()
        .await
        .expect("plain");
    assert_eq!(plain.status(), 200);
    harness.clear_faults();

    // A slow answer, then a dropped connection.
    harness.fail_next(
        Route::named("send"),
        1,
        Fault::delay(Duration::from_millis(300)),
    );
    let started = Instant::now();
    assert_eq!(send().await.expect("slow").status(), 200);
    assert!(started.elapsed() >= Duration::from_millis(300));
    harness.fail_next(Route::named("send"), 1, Fault::drop_connection());
    assert!(send().await.is_err(), "no answer at all");
    assert_eq!(send().await.expect("ok").status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_held_before_commit_is_handled_only_if_released() {
    let (server, harness, handled) = fake();
    let http = client();
    let url = format!("{}/api/send", server.base_url());

    // Discarded: the client gets no answer and the fake never handles the call.
    let hold = harness.hold_next(Route::named("send"), Commit::AfterRelease);
    let call = tokio::spawn(http.post(&url).body("one").send());
    let h = harness.clone();
    assert!(
        tokio::task::spawn_blocking(move || h.wait_held(hold, Duration::from_secs(5)))
            .await
            .expect("join")
    );
    assert_eq!(
        handled.load(Ordering::SeqCst),
        0,
        "held before the platform saw it"
    );
    assert!(harness.discard(hold));
    assert!(call.await.expect("join").is_err());
    assert_eq!(handled.load(Ordering::SeqCst), 0);
    assert_eq!(
        harness.hold(hold).map(|h| h.state),
        Some(HoldState::Discarded)
    );

    // The client gives up (as if killed) and the test then releases: the platform counts
    // the call as received even though nobody hears the answer.
    let hold = harness.hold_next(Route::named("send"), Commit::AfterRelease);
    let gone = http
        .post(&url)
        .body("two")
        .timeout(Duration::from_millis(300))
        .send()
        .await;
    assert!(gone.is_err(), "timed out while held");
    assert_eq!(
        harness.hold(hold).map(|h| h.state),
        Some(HoldState::Waiting)
    );
    assert!(harness.release(hold));
    let h = Arc::clone(&handled);
    assert!(
        tokio::task::spawn_blocking(move || {
            let deadline = Instant::now() + Duration::from_secs(5);
            while h.load(Ordering::SeqCst) == 0 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            h.load(Ordering::SeqCst) == 1
        })
        .await
        .expect("join")
    );
    assert!(!harness.release(hold), "already decided");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_committed_before_responding_is_handled_at_once() {
    let (server, harness, handled) = fake();
    let http = client();
    let url = format!("{}/api/send", server.base_url());
    let hold = harness.hold_next(Route::named("send"), Commit::BeforeResponding);
    let call = tokio::spawn(http.post(&url).body("x").send());
    let h = harness.clone();
    assert!(
        tokio::task::spawn_blocking(move || h.wait_held(hold, Duration::from_secs(5)))
            .await
            .expect("join")
    );
    assert_eq!(
        handled.load(Ordering::SeqCst),
        1,
        "committed before the answer"
    );
    assert!(!call.is_finished());
    assert!(harness.release(hold));
    let answer = call.await.expect("join").expect("answered");
    assert_eq!(answer.status(), 200);

    // Discarded: the platform has it, the client never learns.
    let hold = harness.hold_next(Route::named("send"), Commit::BeforeResponding);
    let call = tokio::spawn(http.post(&url).body("y").send());
    let h = harness.clone();
    assert!(
        tokio::task::spawn_blocking(move || h.wait_held(hold, Duration::from_secs(5)))
            .await
            .expect("join")
    );
    assert!(harness.discard(hold));
    assert!(call.await.expect("join").is_err());
    assert_eq!(handled.load(Ordering::SeqCst), 2);

    // A hold released before any call is simply disarmed.
    let unused = harness.hold_next(Route::named("send"), Commit::AfterRelease);
    assert!(harness.release(unused));
    assert_eq!(http.post(&url).send().await.expect("ok").status(), 200);
    assert_eq!(harness.holds().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_endpoints_script_push_and_break_connections() {
    let hub = WsHub::new();
    hub.on_connect(|conn| vec![WsMessage::Text(format!("{{\"hello\":{}}}", conn.0))]);
    hub.on_message(|_, message| match message.json() {
        Some(v) if v["op"] == 1 => vec![WsMessage::Text("{\"op\":11}".into())],
        _ => Vec::new(),
    });
    let router = Router::new().route("/gateway", hub.route());
    let server = FakeServer::start(Harness::new(), router).expect("serve");

    let (mut socket, _) = tokio_tungstenite::connect_async(server.ws_url("/gateway"))
        .await
        .expect("connect");
    let next_text = |m: Option<Result<Message, _>>| match m {
        Some(Ok(Message::Text(t))) => t.to_string(),
        other => panic!("expected text, got {other:?}"),
    };
    assert_eq!(next_text(socket.next().await), "{\"hello\":1}");
    socket
        .send(Message::Text("{\"op\":1}".into()))
        .await
        .expect("heartbeat");
    assert_eq!(next_text(socket.next().await), "{\"op\":11}");
    assert_eq!(hub.received().len(), 1);
    assert_eq!(hub.received()[0].message.json(), Some(json!({"op": 1})));

    assert_eq!(hub.connections().len(), 1);
    assert_eq!(hub.broadcast(WsMessage::Text("event".into())), 1);
    assert_eq!(next_text(socket.next().await), "event");

    // A close frame with a code (a gateway asking to reconnect).
    let conn = hub.connections()[0];
    assert!(hub.close(conn, 4000, "reconnect"));
    match socket.next().await {
        Some(Ok(Message::Close(Some(frame)))) => {
            assert_eq!(u16::from(frame.code), 4000);
            assert_eq!(frame.reason.as_str(), "reconnect");
        }
        other => panic!("expected a close frame, got {other:?}"),
    }

    // A dropped connection: no close frame at all.
    let (mut second, _) = tokio_tungstenite::connect_async(server.ws_url("/gateway"))
        .await
        .expect("reconnect");
    assert_eq!(next_text(second.next().await), "{\"hello\":2}");
    assert_eq!(hub.drop_all(), 1);
    match second.next().await {
        None | Some(Err(_)) => {}
        other => panic!("expected the connection to break, got {other:?}"),
    }
    assert_eq!(hub.connections_opened(), 2);
}
