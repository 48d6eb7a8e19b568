//! Settings, and the error paths of the client-server API against a small strict fake on
//! 127.0.0.1 (the journeys run against a real Synapse in `host/tests/matrix_e2e.rs`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use nanoclaw_fake_platform::{FakeServer, Fault, Harness, Route};
use nanoclaw_plugin_api::kit::testing::{self, MemoryHost};
use serde_json::json;

use super::*;

const TOKEN: &str = "syt_Ym90_wxAEcWsbhxBAUQflicia_15lX3c";

fn create_with(
    mem: &MemoryHost,
    settings: serde_json::Value,
) -> Result<MatrixChannel, PluginError> {
    MatrixChannel::create(Context {
        instance_name: "matrix".into(),
        settings_json: settings.to_string(),
        data_dir: std::env::temp_dir(),
        extra_json: String::new(),
        host: mem.host(),
    })
}

fn config_error(settings: serde_json::Value) -> String {
    let err = create_with(&MemoryHost::new(), settings)
        .err()
        .expect("should be refused");
    assert_eq!(err.kind, ErrorKind::CONFIG, "{err}");
    assert!(!err.message.contains(TOKEN), "token echoed: {err}");
    err.message.to_string()
}

#[test]
fn settings_are_validated() {
    let base = "http://127.0.0.1:9";
    let ok = create_with(
        &MemoryHost::new(),
        json!({"api_base_url": base, "access_token": TOKEN}),
    )
    .expect("defaults");
    assert_eq!(ok.shared.auto_join, AutoJoin::Homeserver);
    ok.teardown();
    assert!(config_error(json!({"access_token": TOKEN})).contains("api_base_url"));
    assert!(config_error(json!({"api_base_url": base})).contains("access_token"));
    assert!(
        config_error(json!({"api_base_url": base, "access_token": format!("Bearer {TOKEN}")}))
            .contains("access_token")
    );
    assert!(
        config_error(json!({"api_base_url": "ftp://x", "access_token": TOKEN}))
            .contains("api_base_url")
    );
    assert!(
        config_error(
            json!({"api_base_url": "https://m.org/_matrix/client/v3", "access_token": TOKEN})
        )
        .contains("/_matrix")
    );
    assert!(
        config_error(json!({"api_base_url": base, "access_token": TOKEN, "user_id": "bot"}))
            .contains("user_id")
    );
    assert!(
        config_error(json!({"api_base_url": base, "access_token": TOKEN, "auto_join": "some"}))
            .contains("some")
    );
    assert!(
        config_error(json!({"api_base_url": base, "access_token": TOKEN,
                            "invite_allowlist": ["ann"]}))
        .contains("invite_allowlist")
    );
    assert!(
        config_error(json!({"api_base_url": base, "access_token": TOKEN, "sync_timeout_secs": 0}))
            .contains("sync_timeout_secs")
    );
    assert!(
        config_error(json!({"api_base_url": base, "access_token": TOKEN, "colour": 1}))
            .contains("colour")
    );
}

#[test]
fn manifest() {
    let info = MatrixChannel::INFO;
    assert_eq!(info.channel_type, "matrix");
    assert_eq!(info.markup, Markup::MatrixHtml);
    assert_eq!(info.text_unit, LengthUnit::Bytes);
    // Direct-addressable: a user id is a chat id; no open_dm.
    assert!(!info.capabilities.contains(Capabilities::OPEN_DM));
    assert!(
        info.capabilities.contains(
            Capabilities::EDIT
                .with(Capabilities::REACTIONS)
                .with(Capabilities::BUTTONS)
                .with(Capabilities::THREADS)
        )
    );
}

/// A fake homeserver: strict about the token, remembers transaction ids like Synapse.
#[derive(Clone, Default)]
struct Fake {
    sent: Arc<Mutex<Vec<(String, String, serde_json::Value)>>>,
    txns: Arc<Mutex<HashMap<String, String>>>,
}

fn authorized(headers: &HeaderMap) -> bool {
    headers.get("authorization").and_then(|v| v.to_str().ok()) == Some(&format!("Bearer {TOKEN}"))
}

fn unknown_token() -> axum::response::Response {
    (
        StatusCode::UNAUTHORIZED,
        Json(json!({"errcode": "M_UNKNOWN_TOKEN", "error": "Invalid access token passed."})),
    )
        .into_response()
}

fn fake() -> (FakeServer, Fake) {
    let state = Fake::default();
    let harness = Harness::new().with_route_key(|parts| {
        let path = parts.uri.path();
        Some(
            if path.contains("/send/") {
                "send"
            } else if path.ends_with("/sync") {
                "sync"
            } else {
                "other"
            }
            .to_owned(),
        )
    });
    let router = Router::new()
        .route(
            "/_matrix/client/v3/account/whoami",
            get(|headers: HeaderMap| async move {
                if !authorized(&headers) {
                    return unknown_token();
                }
                Json(json!({"user_id": "@bot:localhost", "device_id": "D"})).into_response()
            }),
        )
        .route(
            "/_matrix/client/v3/profile/{user}/displayname",
            get(|| async { Json(json!({"displayname": "NanoClaw"})) }),
        )
        .route(
            "/_matrix/client/v3/sync",
            get(|| async {
                nanoclaw_plugin_api::kit::tokio::time::sleep(Duration::from_millis(200)).await;
                Json(json!({"next_batch": "s1"}))
            }),
        )
        .route(
            "/_matrix/client/v3/rooms/{room}/send/{kind}/{txn}",
            put(
                |State(fake): State<Fake>,
                 headers: HeaderMap,
                 Path((room, kind, txn)): Path<(String, String, String)>,
                 Json(body): Json<serde_json::Value>| async move {
                    if !authorized(&headers) {
                        return unknown_token();
                    }
                    if !room.starts_with('!') {
                        return (
                            StatusCode::FORBIDDEN,
                            Json(json!({"errcode": "M_FORBIDDEN", "error": "not in room"})),
                        )
                            .into_response();
                    }
                    let mut txns = fake.txns.lock().unwrap();
                    let id = match txns.get(&txn) {
                        Some(id) => id.clone(),
                        None => {
                            let id = format!("$e{}:localhost", txns.len() + 1);
                            txns.insert(txn.clone(), id.clone());
                            fake.sent.lock().unwrap().push((room, kind, body));
                            id
                        }
                    };
                    Json(json!({"event_id": id})).into_response()
                },
            ),
        )
        .route(
            "/_matrix/client/v3/createRoom",
            post(|| async { Json(json!({"room_id": "!dm:localhost"})) }),
        )
        .route(
            "/_matrix/client/v3/user/{user}/account_data/{kind}",
            get(|| async {
                (
                    StatusCode::NOT_FOUND,
                    Json(json!({"errcode": "M_NOT_FOUND", "error": "no data"})),
                )
            })
            .put(|| async { Json(json!({})) }),
        )
        .with_state(state.clone());
    let server = FakeServer::start(harness, router).expect("fake homeserver");
    (server, state)
}

fn started(
    server: &FakeServer,
    mem: &MemoryHost,
    token: &str,
) -> Result<MatrixChannel, PluginError> {
    let channel = create_with(
        mem,
        json!({"api_base_url": server.base_url(), "access_token": token, "sync_timeout_secs": 1}),
    )?;
    channel.start().map(|()| channel)
}

fn text(chat: &str, text: &str, key: &str) -> OutboundMessage {
    OutboundMessage {
        op: OutboundOp::SEND,
        chat_id: chat.into(),
        text: text.into(),
        extra_json: json!({"idempotency_key": key}).to_string().into(),
        ..OutboundMessage::default()
    }
}

fn limited(ms: u64) -> Fault {
    Fault::json(
        429,
        &json!({"errcode": "M_LIMIT_EXCEEDED", "error": "Too many requests", "retry_after_ms": ms}),
    )
}

#[test]
fn a_refused_token_fails_start_with_auth() {
    let (server, _) = fake();
    let mem = MemoryHost::new();
    let err = started(&server, &mem, "syt_wrong").err().expect("refused");
    assert_eq!(err.kind, ErrorKind::AUTH, "{err}");
    assert!(err.message.contains("MATRIX_ACCESS_TOKEN"), "{err}");
}

#[test]
fn rate_limits_are_waited_out_or_handed_back() {
    let (server, fake) = fake();
    let mem = MemoryHost::new();
    let channel = started(&server, &mem, TOKEN).expect("started");
    let room = "!room:localhost";

    // A short pause is waited out inside the call.
    server
        .harness()
        .fail_next(Route::named("send"), 1, limited(300));
    let ids = testing::send(&channel, text(room, "hello", "s/1/0")).expect("sent after the pause");
    assert_eq!(ids, vec![Some("$e1:localhost".to_owned())]);
    assert_eq!(server.harness().calls_to("send").len(), 2);

    // A long one goes back to the host with the time to wait.
    server
        .harness()
        .fail_next(Route::named("send"), 1, limited(60_000));
    let err = testing::send(&channel, text(room, "again", "s/2/0")).expect_err("limited");
    assert_eq!(err.kind, ErrorKind::RATE_LIMITED, "{err}");
    assert_eq!(err.retry_after_ms, RSome(60_000));

    // Meanwhile that room waits; the host's retry of the first part (here to another room
    // the fake keys transactions by id only) is the same transaction: one event.
    let err = testing::send(&channel, text(room, "third", "s/3/0")).expect_err("paused");
    assert_eq!(err.kind, ErrorKind::RATE_LIMITED, "{err}");
    let first =
        testing::send(&channel, text("!other:localhost", "hello", "s/1/0")).expect("retried");
    assert_eq!(first, vec![Some("$e1:localhost".to_owned())]);
    let sent = fake.sent.lock().unwrap().clone();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].2["body"], "hello");
    channel.teardown();
}

#[test]
fn a_user_id_is_a_dm_created_once() {
    let (server, fake) = fake();
    let mem = MemoryHost::new();
    let channel = started(&server, &mem, TOKEN).expect("started");
    testing::send(&channel, text("@ann:localhost", "welcome", "w/1/0")).expect("sent");
    testing::send(&channel, text("@ann:localhost", "again", "w/2/0")).expect("sent");
    let creates = server
        .harness()
        .calls()
        .into_iter()
        .filter(|c| c.path.ends_with("/createRoom"))
        .collect::<Vec<_>>();
    assert_eq!(creates.len(), 1);
    let body = creates[0].body_json().unwrap();
    assert_eq!(body["is_direct"], true);
    assert_eq!(body["invite"], json!(["@ann:localhost"]));
    let sent = fake.sent.lock().unwrap().clone();
    assert!(sent.iter().all(|(room, _, _)| room == "!dm:localhost"));
    // m.direct was updated with the new room.
    let direct = server
        .harness()
        .calls()
        .into_iter()
        .find(|c| c.method == "PUT" && c.path.ends_with("/m.direct"))
        .expect("m.direct written");
    assert_eq!(
        direct.body_json().unwrap(),
        json!({"@ann:localhost": ["!dm:localhost"]})
    );
    // Something that is neither a room nor a user is refused before any call.
    let err = testing::send(&channel, text("#alias:localhost", "x", "a/1/0")).expect_err("bad");
    assert_eq!(err.kind, ErrorKind::INVALID_INPUT);
    channel.teardown();
}
