//! Socket Mode against the fake: a fresh URL per connection, envelopes acknowledged once
//! the host took them, reconnects on `disconnect` without losing or repeating events.

mod common;

use std::time::Duration;

use common::*;
use nanoclaw_fake_platform::{Fault, Route};
use nanoclaw_plugin_api::kit::prelude::*;
use nanoclaw_plugin_api::kit::testing::MemoryHost;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(5);

fn connected(b: &Bench, n: usize) {
    assert!(
        b.fake.hub.wait_connections(n, WAIT),
        "{n} connection(s) expected"
    );
    // The hello has been read once the client is connected; give it a moment.
    std::thread::sleep(Duration::from_millis(50));
}

fn envelope(id: &str, ts: &str, text: &str) -> Value {
    let mut e = fixture("socket_events_api.json");
    e["envelope_id"] = json!(id);
    e["payload"]["event"]["ts"] = json!(ts);
    e["payload"]["event"]["text"] = json!(text);
    e["payload"]["event_id"] = json!(format!("Ev{id}"));
    e
}

#[test]
fn events_are_handed_over_then_acknowledged() {
    let b = socket_mode();
    connected(&b, 1);
    let opened = b.fake.harness().calls_to("apps.connections.open");
    assert_eq!(opened.len(), 1, "start's URL serves the first connection");
    assert_eq!(
        opened[0].header("authorization"),
        Some(format!("Bearer {APP_TOKEN}").as_str())
    );
    let socket = b.fake.harness().calls_to("socket");
    assert!(socket[0].query.contains("ticket=t1"), "{socket:?}");

    b.fake.push(fixture("socket_events_api.json"));
    assert!(wait_until(WAIT, || b.fake.acks().len() == 1));
    assert_eq!(b.fake.acks(), ["dbdd0ef3-1543-4f94-bfb4-133d0e6c1545"]);
    let inbound = b.mem.inbound();
    assert_eq!(inbound.len(), 1);
    assert_eq!(inbound[0].chat_id, "D0ANN");
    assert_eq!(inbound[0].text, "via socket");
    assert!(inbound[0].mentioned && !inbound[0].is_group);

    // A button click.
    b.fake.push(fixture("socket_interactive.json"));
    assert!(wait_until(WAIT, || b.fake.acks().len() == 2));
    let actions = b.mem.actions();
    assert_eq!(actions.len(), 1);
    assert_eq!(actions[0].clicker.handle, "U0BOB");
    assert_eq!(actions[0].action_id, "ncq:q7:1");
    assert_eq!(actions[0].chat_id, "C0GENERAL");
    assert_eq!(actions[0].thread_id, RSome("1700001000.000900".into()));

    // A slash command envelope: acknowledged, nothing for the host.
    b.fake.push(json!({"envelope_id": "cmd-1", "type": "slash_commands",
                       "payload": {"command": "/claw", "text": "hi"}, "accepts_response_payload": true}));
    assert!(wait_until(WAIT, || b.fake.acks().len() == 3));
    assert_eq!(b.mem.inbound().len(), 1);
    assert_eq!(b.channel.health().status, HealthStatus::OK);
    assert!(b.channel.health().last_ingest_ms > 0);
    b.channel.teardown();
}

#[test]
fn a_refused_event_is_not_acknowledged_and_its_redelivery_is_taken_once() {
    let b = socket_mode();
    connected(&b, 1);
    b.mem
        .set_reject_inbound(Some(PluginError::network("database busy")));
    b.fake.push(envelope("e1", "1700002000.000001", "first"));
    assert!(wait_until(WAIT, || b
        .mem
        .logs()
        .iter()
        .any(|l| l.message.contains("did not take"))));
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        b.fake.acks().is_empty(),
        "not acknowledged: Slack redelivers"
    );

    b.mem.set_reject_inbound(None);
    let mut again = envelope("e1", "1700002000.000001", "first");
    again["retry_attempt"] = json!(1);
    again["retry_reason"] = json!("timeout");
    b.fake.push(again.clone());
    assert!(wait_until(WAIT, || b.fake.acks() == ["e1"]));
    // Slack retries once more (our ack crossed its timer): acknowledged, not repeated.
    again["retry_attempt"] = json!(2);
    b.fake.push(again);
    assert!(wait_until(WAIT, || b.fake.acks().len() == 2));
    assert_eq!(b.mem.inbound().len(), 1);
    b.channel.teardown();
}

#[test]
fn disconnects_reconnect_with_a_fresh_url_and_lose_nothing() {
    let b = socket_mode();
    connected(&b, 1);
    b.fake.push(envelope("a1", "1700003000.000001", "before"));
    assert!(wait_until(WAIT, || b.fake.acks().len() == 1));

    // Slack: this connection is being refreshed.
    b.fake.push(fixture("socket_disconnect.json"));
    assert!(b.fake.hub.wait_connections(1, WAIT));
    assert!(wait_until(WAIT, || b.fake.hub.connections_opened() == 2));
    connected(&b, 1);
    let opened = b.fake.harness().calls_to("apps.connections.open");
    assert_eq!(opened.len(), 2, "a fresh URL for the new connection");
    let sockets = b.fake.harness().calls_to("socket");
    assert!(sockets[1].query.contains("ticket=t2"), "{sockets:?}");

    // Slack redelivers what it had sent on the old connection (no ack seen) and goes on.
    b.fake.push(envelope("a1", "1700003000.000001", "before"));
    b.fake.push(envelope("a2", "1700003001.000001", "after"));
    assert!(wait_until(WAIT, || b.fake.acks().len() == 3));
    let texts: Vec<String> = b.mem.inbound().iter().map(|e| e.text.to_string()).collect();
    assert_eq!(texts, ["before", "after"], "nothing lost, nothing repeated");

    // warning and link_disabled reconnect too; so does a dropped socket.
    let mut warning = fixture("socket_disconnect.json");
    warning["reason"] = json!("warning");
    b.fake.push(warning);
    assert!(wait_until(WAIT, || b.fake.hub.connections_opened() == 3));
    connected(&b, 1);
    b.fake.hub.drop_all();
    assert!(wait_until(Duration::from_secs(8), || b
        .fake
        .hub
        .connections_opened()
        == 4));
    connected(&b, 1);
    b.fake.push(envelope("a3", "1700003002.000001", "last"));
    assert!(wait_until(WAIT, || b.mem.inbound().len() == 3));
    b.channel.teardown();
}

#[test]
fn connections_open_failures_are_retried_and_a_bad_app_token_fails_start() {
    let b = socket_mode();
    connected(&b, 1);
    // The next connections.open fails twice (Slack down): retried, then connected.
    b.fake.harness().fail_next(
        Route::named("apps.connections.open"),
        2,
        Fault::server_error(),
    );
    b.fake.push(fixture("socket_disconnect.json"));
    assert!(wait_until(Duration::from_secs(10), || b
        .fake
        .hub
        .connections_opened()
        == 2));
    assert_eq!(b.fake.harness().calls_to("apps.connections.open").len(), 4);
    b.channel.teardown();

    let mem = MemoryHost::new();
    let channel = create(
        &b.fake,
        &mem,
        json!({"bot_token": BOT_TOKEN, "app_token": "xapp-1-A0APP-9999-revoked00"}),
    )
    .expect("create");
    let err = channel.start().expect_err("refused app token");
    assert_eq!(err.kind, ErrorKind::AUTH, "{err}");
    assert!(err.message.contains("SLACK_APP_TOKEN"), "{err}");
    assert!(!err.message.contains("revoked00"), "{err}");
    assert_eq!(channel.health().status, HealthStatus::DOWN);
}

#[test]
fn a_restart_mid_stream_loses_and_repeats_nothing() {
    let b = socket_mode();
    connected(&b, 1);
    b.fake.push(envelope("r1", "1700004000.000001", "one"));
    assert!(wait_until(WAIT, || b.fake.acks().len() == 1));
    // The event the host refuses as the channel stops is not acknowledged…
    b.mem
        .set_reject_inbound(Some(PluginError::network("stopping")));
    b.fake.push(envelope("r2", "1700004001.000001", "two"));
    assert!(wait_until(WAIT, || b
        .mem
        .logs()
        .iter()
        .any(|l| l.message.contains("did not take"))));
    b.channel.teardown();
    b.mem.set_reject_inbound(None);

    // …so Slack sends it again to the next connection, along with a late copy of the
    // first; the dedupe lives in the host's store, so the new instance knows `one`.
    let channel = create(
        &b.fake,
        &b.mem,
        json!({"bot_token": BOT_TOKEN, "app_token": APP_TOKEN}),
    )
    .expect("create");
    channel.start().expect("start");
    assert!(wait_until(WAIT, || b.fake.hub.connections_opened() == 2));
    connected(&b, 1);
    let mut late = envelope("r1", "1700004000.000001", "one");
    late["retry_attempt"] = json!(1);
    b.fake.push(late);
    let mut again = envelope("r2", "1700004001.000001", "two");
    again["retry_attempt"] = json!(1);
    b.fake.push(again);
    assert!(wait_until(WAIT, || b.fake.acks().len() == 3));
    let texts: Vec<String> = b.mem.inbound().iter().map(|e| e.text.to_string()).collect();
    assert_eq!(texts, ["one", "two"]);
    channel.teardown();
}
