//! The channel against a fake of the Example platform's API on 127.0.0.1: start, the
//! outbound routes, idempotent re-sends, error classification, rate limits and splitting.

use std::net::TcpListener;
use std::time::{Duration, Instant};

use nanoclaw_fake_platform::{Fault, Route};
use nanoclaw_plugin_api::kit::prelude::*;
use nanoclaw_plugin_api::kit::testing;
use nanoclaw_plugin_example::ExampleChannel;
use serde_json::{Value, json};

use fake::{FakeExample, TOKEN};

/// The documented Svix example secret: webhooks are not what these tests are about.
const WEBHOOK_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn create(base_url: &str, token: &str, rate: f64) -> ExampleChannel {
    let settings = json!({"api_base_url": base_url, "api_token": token,
                          "webhook_secret": WEBHOOK_SECRET, "rate_per_sec": rate});
    ExampleChannel::create(Context {
        instance_name: "example".into(),
        settings_json: settings.to_string(),
        data_dir: std::env::temp_dir(),
        extra_json: String::new(),
        host: testing::MemoryHost::new().host(),
    })
    .expect("create")
}

fn started(fake: &FakeExample) -> ExampleChannel {
    let channel = create(&fake.base_url(), TOKEN, 50.0);
    channel.start().expect("start");
    channel
}

fn text(chat: &str, text: &str) -> OutboundMessage {
    OutboundMessage {
        chat_id: chat.into(),
        text: text.into(),
        ..OutboundMessage::default()
    }
}

fn on(op: OutboundOp, chat: &str, target: &str) -> OutboundMessage {
    OutboundMessage {
        op,
        target_message_id: RSome(target.into()),
        ..text(chat, "")
    }
}

/// What the host does: prepare, give each part its idempotency key, deliver in order.
fn send(
    channel: &ExampleChannel,
    message: OutboundMessage,
    key: &str,
) -> Result<Vec<Option<String>>, PluginError> {
    testing::prepare(channel, message)?
        .into_iter()
        .enumerate()
        .map(|(n, mut part)| {
            let mut extra: Value = serde_json::from_str(part.extra_json.as_str()).expect("JSON");
            extra["idempotency_key"] = json!(format!("{key}/{n}"));
            part.extra_json = extra.to_string().into();
            channel.deliver(part)
        })
        .collect()
}

fn send_one(
    channel: &ExampleChannel,
    message: OutboundMessage,
) -> Result<Option<String>, PluginError> {
    let mut ids = send(channel, message, "session/key")?;
    assert_eq!(ids.len(), 1);
    Ok(ids.remove(0))
}

#[test]
fn start_checks_the_token() {
    let fake = FakeExample::start();
    let channel = started(&fake);
    let me = fake.harness().calls_to("me");
    assert_eq!(me.len(), 1);
    assert_eq!(
        me[0].header("authorization"),
        Some(format!("Bearer {TOKEN}").as_str())
    );
    assert!(
        me[0]
            .header("user-agent")
            .is_some_and(|ua| ua.starts_with("nanoclaw-example/"))
    );
    assert_eq!(channel.health().status, HealthStatus::OK);

    // A refused token: AUTH, which the host does not retry, and the operator is told.
    let refused = create(&fake.base_url(), "revoked-token-77", 5.0);
    let err = refused.start().expect_err("refused token");
    assert_eq!(err.kind, ErrorKind::AUTH, "{err}");
    assert!(err.message.contains("api_token"), "{err}");
    assert!(!err.message.contains("revoked-token-77"), "{err}");
    assert_eq!(refused.health().status, HealthStatus::DOWN);

    // The platform down or unreachable: NETWORK, which the host retries.
    fake.harness()
        .fail_next(Route::named("me"), 1, Fault::server_error());
    let err = create(&fake.base_url(), TOKEN, 5.0)
        .start()
        .expect_err("5xx");
    assert_eq!(err.kind, ErrorKind::NETWORK, "{err}");
    let closed = {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        format!("http://{}", listener.local_addr().expect("addr"))
    };
    let err = create(&closed, TOKEN, 5.0)
        .start()
        .expect_err("unreachable");
    assert_eq!(err.kind, ErrorKind::NETWORK, "{err}");
    assert!(
        !err.message.contains("127.0.0.1"),
        "no URL in errors: {err}"
    );
}

#[test]
fn send_edit_and_react_hit_their_routes() {
    let fake = FakeExample::start();
    let channel = started(&fake);
    let card = OutboundMessage {
        target_message_id: RSome("m0".into()),
        buttons: vec![
            Button {
                id: "ncq:q1:0".into(),
                label: "Yes".into(),
            },
            Button {
                id: "ncq:q1:1".into(),
                label: "No".into(),
            },
        ]
        .into(),
        ..text("c1", "**Ship it?** The build is _green_.")
    };
    let ids = send(&channel, card, "s1/out-7").expect("send");
    assert_eq!(ids, [Some("m1".to_owned())]);
    let call = &fake.harness().calls_to("send")[0];
    assert_eq!(
        (call.method.as_str(), call.path.as_str()),
        ("POST", "/v1/chats/c1/messages")
    );
    assert_eq!(
        call.header("authorization"),
        Some(format!("Bearer {TOKEN}").as_str())
    );
    assert_eq!(call.header("idempotency-key"), Some("s1/out-7/0"));
    assert_eq!(call.header("content-type"), Some("application/json"));
    assert_eq!(
        call.body_json().expect("JSON body"),
        json!({"text": "**Ship it?** The build is *green*.",
               "buttons": [{"id": "ncq:q1:0", "label": "Yes"}, {"id": "ncq:q1:1", "label": "No"}],
               "reply_to": "m0"})
    );

    let edited = send_one(
        &channel,
        OutboundMessage {
            text: "Shipped.".into(),
            ..on(OutboundOp::EDIT, "c1", "m1")
        },
    );
    assert_eq!(edited.expect("edit"), Some("m1".to_owned()));
    let call = &fake.harness().calls_to("edit")[0];
    assert_eq!(
        (call.method.as_str(), call.path.as_str()),
        ("PATCH", "/v1/chats/c1/messages/m1")
    );
    assert_eq!(call.body_json(), Some(json!({"text": "Shipped."})));

    let reacted = send_one(
        &channel,
        OutboundMessage {
            reaction: "thumbs_up".into(),
            ..on(OutboundOp::REACT, "c1", "m1")
        },
    );
    assert_eq!(reacted.expect("react"), None);
    let call = &fake.harness().calls_to("react")[0];
    assert_eq!(call.path, "/v1/chats/c1/messages/m1/reactions");
    assert_eq!(call.body_json(), Some(json!({"emoji": "thumbs_up"})));
    assert!(call.header("authorization").is_some());

    let message = &fake.messages()[0];
    assert_eq!(
        (message.chat.as_str(), message.text.as_str()),
        ("c1", "Shipped.")
    );
    assert_eq!(
        fake.reactions(),
        [("c1".to_owned(), "m1".to_owned(), "thumbs_up".to_owned())]
    );
}

#[test]
fn ids_from_outside_are_one_encoded_path_segment_each() {
    let fake = FakeExample::start();
    let channel = started(&fake);
    let id = send_one(&channel, text("team/α b?", "hi"))
        .expect("send")
        .expect("id");
    assert_eq!(
        fake.harness().calls_to("send")[0].path,
        "/v1/chats/team%2F%CE%B1%20b%3F/messages"
    );
    assert_eq!(fake.messages()[0].chat, "team/α b?");
    send_one(
        &channel,
        OutboundMessage {
            text: "edited".into(),
            ..on(OutboundOp::EDIT, "team/α b?", &id)
        },
    )
    .expect("edit");

    let calls = fake.harness().calls().len();
    for (chat, target) in [("..", "m1"), ("c1", "."), ("", "m1")] {
        let err = send_one(
            &channel,
            OutboundMessage {
                reaction: "heart".into(),
                ..on(OutboundOp::REACT, chat, target)
            },
        )
        .expect_err("not an id");
        assert_eq!(err.kind, ErrorKind::INVALID_INPUT, "{err}");
    }
    assert_eq!(fake.harness().calls().len(), calls, "nothing was sent");
}

#[test]
fn a_resent_part_with_the_same_key_is_posted_once() {
    let fake = FakeExample::start();
    let channel = started(&fake);
    // The host crashed after the post but before recording it: the same part again.
    let first = send(&channel, text("c1", "hello"), "s1/k1").expect("send");
    let again = send(&channel, text("c1", "hello"), "s1/k1").expect("re-send");
    assert_eq!(first, again);
    assert_eq!(fake.harness().calls_to("send").len(), 2);
    assert_eq!(fake.messages().len(), 1);
    let other = send(&channel, text("c1", "hello"), "s1/k2").expect("another message");
    assert_ne!(first, other);
}

#[test]
fn errors_are_classified_for_the_host() {
    let fake = FakeExample::start();
    let channel = started(&fake);
    let harness = fake.harness();
    let fail = |fault: Fault| {
        harness.fail_next(Route::named("send"), 1, fault);
        send_one(&channel, text("c1", "hi")).expect_err("fault")
    };

    let limited = fail(Fault::rate_limited(Duration::from_secs(1)));
    assert_eq!(limited.kind, ErrorKind::RATE_LIMITED, "{limited}");
    assert_eq!(limited.retry_after_ms.into_option(), Some(1000));
    assert!(limited.is_transient());
    // The next call waits out the Retry-After before it goes.
    send_one(&channel, text("c1", "after the pause")).expect("send");
    let calls = harness.calls_to("send");
    let waited = calls[1].since_start - calls[0].since_start;
    assert!(
        waited >= Duration::from_millis(950),
        "sent again after {waited:?}"
    );

    let down = fail(Fault::server_error());
    assert_eq!(down.kind, ErrorKind::NETWORK, "{down}");
    assert!(down.is_transient());
    let bad = fail(Fault::json(400, &json!({"error": "bad request"})));
    assert_eq!(bad.kind, ErrorKind::INVALID_INPUT, "{bad}");
    assert!(!bad.is_transient());
    let auth = fail(Fault::status(403));
    assert_eq!(auth.kind, ErrorKind::AUTH, "{auth}");
    assert!(!auth.message.contains(TOKEN), "{auth}");

    // The fake refuses what the platform refuses: an unknown message, too long a text.
    let missing = send_one(
        &channel,
        OutboundMessage {
            text: "x".into(),
            ..on(OutboundOp::EDIT, "c1", "m404")
        },
    )
    .expect_err("unknown message");
    assert_eq!(missing.kind, ErrorKind::NOT_FOUND, "{missing}");
    let too_long = channel
        .deliver(text("c1", &"x".repeat(2001)))
        .expect_err("not rendered");
    assert_eq!(too_long.kind, ErrorKind::INVALID_INPUT, "{too_long}");
}

#[test]
fn a_pause_longer_than_a_call_can_wait_goes_back_to_the_host() {
    let fake = FakeExample::start();
    let channel = started(&fake);
    fake.harness().fail_next(
        Route::named("send"),
        1,
        Fault::rate_limited(Duration::from_secs(60)),
    );
    let err = send_one(&channel, text("c1", "one")).expect_err("429");
    assert_eq!(err.retry_after_ms.into_option(), Some(60_000));
    let err = send_one(&channel, text("c2", "two")).expect_err("still paused");
    assert_eq!(err.kind, ErrorKind::RATE_LIMITED, "{err}");
    assert!(
        err.retry_after_ms
            .into_option()
            .is_some_and(|ms| ms > 50_000),
        "{err}"
    );
    assert_eq!(
        fake.harness().calls_to("send").len(),
        1,
        "the second never left"
    );
}

#[test]
fn outbound_calls_are_paced_at_rate_per_sec() {
    let fake = FakeExample::start();
    let start = Instant::now();
    let channel = create(&fake.base_url(), TOKEN, 5.0);
    // A burst of 5, then one every 200 ms: 8 calls take at least 600 ms.
    for n in 0..8 {
        send(&channel, text("c1", "tick"), &format!("s1/k{n}")).expect("send");
    }
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(590),
        "8 calls within {took:?}"
    );
    assert_eq!(fake.messages().len(), 8);
}

#[test]
fn long_text_is_split_into_parts_within_the_limit() {
    let fake = FakeExample::start();
    let channel = started(&fake);
    let long = format!("**Report** {}", "word ".repeat(900).trim_end());
    let card = OutboundMessage {
        target_message_id: RSome("m0".into()),
        buttons: vec![Button {
            id: "ncq:q2:0".into(),
            label: "OK".into(),
        }]
        .into(),
        ..text("c1", &long)
    };
    let ids = send(&channel, card, "s1/long").expect("send");
    assert_eq!(ids.len(), 3);
    let bodies: Vec<Value> = fake
        .harness()
        .calls_to("send")
        .iter()
        .map(|c| c.body_json().expect("JSON"))
        .collect();
    for body in &bodies {
        let chars = body["text"].as_str().expect("text").chars().count();
        assert!(chars <= 2000, "{chars} characters");
    }
    assert!(
        bodies[0]["text"]
            .as_str()
            .is_some_and(|t| t.starts_with("**Report** word"))
    );
    assert_eq!(bodies[0]["reply_to"], "m0", "the first part replies");
    assert!(bodies[1..].iter().all(|b| b.get("reply_to").is_none()));
    assert!(bodies[..2].iter().all(|b| b.get("buttons").is_none()));
    assert_eq!(
        bodies[2]["buttons"],
        json!([{"id": "ncq:q2:0", "label": "OK"}]),
        "buttons last"
    );
    let keys: Vec<String> = fake
        .harness()
        .calls_to("send")
        .iter()
        .filter_map(|c| c.header("idempotency-key").map(str::to_owned))
        .collect();
    assert_eq!(keys, ["s1/long/0", "s1/long/1", "s1/long/2"]);
}

/// A fake of the Example platform's REST API, as strict as the platform about what the
/// channel sends: the token, JSON bodies, text length, known messages.
mod fake {
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex, MutexGuard};

    use axum::Router;
    use axum::body::Bytes;
    use axum::extract::{Path, State};
    use axum::http::request::Parts;
    use axum::http::{HeaderMap, StatusCode};
    use axum::response::{IntoResponse, Response};
    use axum::routing::{get, patch, post};
    use nanoclaw_fake_platform::{FakeServer, Harness};
    use serde::Deserialize;
    use serde::de::DeserializeOwned;
    use serde_json::json;

    pub const TOKEN: &str = "tok-3f9a1c";
    const MAX_TEXT_CHARS: usize = 2000;

    /// A message as the platform stores it.
    #[derive(Debug, Clone, PartialEq)]
    pub struct Message {
        pub chat: String,
        pub id: String,
        pub text: String,
    }

    #[derive(Default)]
    struct Platform {
        messages: Vec<Message>,
        reactions: Vec<(String, String, String)>,
        /// Idempotency-Key → the message it created.
        keys: HashMap<String, String>,
    }

    type Shared = Arc<Mutex<Platform>>;

    pub struct FakeExample {
        server: FakeServer,
        platform: Shared,
    }

    impl FakeExample {
        pub fn start() -> Self {
            let harness = Harness::new().with_route_key(route_of);
            let platform = Shared::default();
            let router = Router::new()
                .route("/v1/me", get(me))
                .route("/v1/chats/{chat}/messages", post(send))
                .route("/v1/chats/{chat}/messages/{id}", patch(edit))
                .route("/v1/chats/{chat}/messages/{id}/reactions", post(react))
                .with_state(Arc::clone(&platform));
            let server = FakeServer::start(harness, router).expect("serve the fake");
            Self { server, platform }
        }

        pub fn base_url(&self) -> String {
            self.server.base_url()
        }

        pub fn harness(&self) -> &Harness {
            self.server.harness()
        }

        pub fn messages(&self) -> Vec<Message> {
            lock(&self.platform).messages.clone()
        }

        pub fn reactions(&self) -> Vec<(String, String, String)> {
            lock(&self.platform).reactions.clone()
        }
    }

    fn lock(platform: &Shared) -> MutexGuard<'_, Platform> {
        platform.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Route names for faults and the call log.
    fn route_of(parts: &Parts) -> Option<String> {
        let segments: Vec<&str> = parts.uri.path().split('/').skip(1).collect();
        let name = match (parts.method.as_str(), segments.as_slice()) {
            ("GET", ["v1", "me"]) => "me",
            ("POST", ["v1", "chats", _, "messages"]) => "send",
            ("PATCH", ["v1", "chats", _, "messages", _]) => "edit",
            ("POST", ["v1", "chats", _, "messages", _, "reactions"]) => "react",
            _ => return None,
        };
        Some(name.to_owned())
    }

    /// An error answer: `{"error": "…"}` with a status.
    struct ApiError(StatusCode, String);

    impl IntoResponse for ApiError {
        fn into_response(self) -> Response {
            (self.0, axum::Json(json!({"error": self.1}))).into_response()
        }
    }

    fn error(status: StatusCode, message: &str) -> ApiError {
        ApiError(status, message.to_owned())
    }

    fn authorized(headers: &HeaderMap) -> Result<(), ApiError> {
        let expected = format!("Bearer {TOKEN}");
        match headers.get("authorization").and_then(|v| v.to_str().ok()) {
            Some(given) if given == expected => Ok(()),
            _ => Err(error(StatusCode::UNAUTHORIZED, "invalid token")),
        }
    }

    fn parse<T: DeserializeOwned>(headers: &HeaderMap, body: &[u8]) -> Result<T, ApiError> {
        authorized(headers)?;
        serde_json::from_slice(body).map_err(|e| error(StatusCode::BAD_REQUEST, &e.to_string()))
    }

    fn check_text(text: &str) -> Result<(), ApiError> {
        if text.chars().count() > MAX_TEXT_CHARS {
            return Err(error(
                StatusCode::BAD_REQUEST,
                "text is longer than 2000 characters",
            ));
        }
        Ok(())
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)] // checked for shape only
    struct Post {
        text: String,
        #[serde(default)]
        buttons: Vec<PostButton>,
        #[serde(default)]
        reply_to: Option<String>,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)] // checked for shape only
    struct PostButton {
        id: String,
        label: String,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Edit {
        text: String,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Reaction {
        emoji: String,
    }

    async fn me(headers: HeaderMap) -> Result<Response, ApiError> {
        authorized(&headers)?;
        Ok(axum::Json(json!({"id": "b1", "name": "Claw"})).into_response())
    }

    async fn send(
        State(platform): State<Shared>,
        Path(chat): Path<String>,
        headers: HeaderMap,
        body: Bytes,
    ) -> Result<Response, ApiError> {
        let post: Post = parse(&headers, &body)?;
        check_text(&post.text)?;
        if post.text.trim().is_empty() && post.buttons.is_empty() {
            return Err(error(StatusCode::BAD_REQUEST, "empty message"));
        }
        let key = headers.get("idempotency-key").and_then(|v| v.to_str().ok());
        let mut platform = lock(&platform);
        let known = key.and_then(|k| platform.keys.get(k)).cloned();
        let id = match known {
            Some(id) => id,
            None => {
                let id = format!("m{}", platform.messages.len() + 1);
                platform.messages.push(Message {
                    chat,
                    id: id.clone(),
                    text: post.text,
                });
                if let Some(key) = key {
                    platform.keys.insert(key.to_owned(), id.clone());
                }
                id
            }
        };
        Ok(axum::Json(json!({ "id": id })).into_response())
    }

    async fn edit(
        State(platform): State<Shared>,
        Path((chat, id)): Path<(String, String)>,
        headers: HeaderMap,
        body: Bytes,
    ) -> Result<Response, ApiError> {
        let edit: Edit = parse(&headers, &body)?;
        check_text(&edit.text)?;
        let mut platform = lock(&platform);
        let message = platform
            .messages
            .iter_mut()
            .find(|m| m.chat == chat && m.id == id)
            .ok_or_else(|| error(StatusCode::NOT_FOUND, "no such message"))?;
        message.text = edit.text;
        Ok(axum::Json(json!({ "id": id })).into_response())
    }

    async fn react(
        State(platform): State<Shared>,
        Path((chat, id)): Path<(String, String)>,
        headers: HeaderMap,
        body: Bytes,
    ) -> Result<Response, ApiError> {
        let reaction: Reaction = parse(&headers, &body)?;
        let mut platform = lock(&platform);
        if !platform
            .messages
            .iter()
            .any(|m| m.chat == chat && m.id == id)
        {
            return Err(error(StatusCode::NOT_FOUND, "no such message"));
        }
        if reaction.emoji.trim().is_empty() {
            return Err(error(StatusCode::BAD_REQUEST, "empty emoji"));
        }
        platform.reactions.push((chat, id, reaction.emoji));
        Ok(StatusCode::NO_CONTENT.into_response())
    }
}
