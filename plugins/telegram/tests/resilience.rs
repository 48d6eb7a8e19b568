//! Restarts, a refusing or stuck host, Bot API failures, a refused token, teardown.

mod common;

use std::time::{Duration, Instant};

use common::*;
use nanoclaw_fake_telegram::{Failure, FakeTelegram, UserMessage};
use nanoclaw_plugin_api::kit::Channel;
use nanoclaw_plugin_api::kit::prelude::*;
use nanoclaw_plugin_api::kit::testing::MemoryHost;
use nanoclaw_plugin_telegram::TelegramChannel;
use serde_json::json;

fn say(fake: &FakeTelegram, text: &str) {
    fake.send_user_message(UserMessage::private(ann(), text))
        .expect("inject");
}

fn count(texts: &[String], text: &str) -> usize {
    texts.iter().filter(|t| t.as_str() == text).count()
}

/// The plugin is stopped while the host holds the third message (stored, not yet
/// acknowledged). A new instance on the same host state re-delivers exactly that one
/// message and then the rest: nothing is lost, one is seen twice (the host dedupes it by
/// message id).
#[test]
fn restart_while_the_host_holds_a_message_redelivers_only_that_one() {
    let fake = fake();
    let gate = GateHost::new(MemoryHost::new());
    let first = create_with(gate.host(), settings(&fake)).expect("create");
    first.start().expect("start");
    say(&fake, "m1");
    say(&fake, "m2");
    wait_until("m1 and m2", || texts(&gate.mem).len() == 2);

    gate.hold("m3");
    for text in ["m3", "m4", "m5"] {
        say(&fake, text);
    }
    wait_until("m3 to be held", || gate.is_holding());
    let stopping = Instant::now();
    first.teardown();
    assert!(
        stopping.elapsed() < Duration::from_secs(4),
        "teardown waited {:?} on a stuck host call",
        stopping.elapsed()
    );
    assert_eq!(first.health().status, HealthStatus::DOWN);
    drop(first);

    let second = create_with(gate.host(), settings(&fake)).expect("create again");
    second.start().expect("restart");
    wait_until("m5", || texts(&gate.mem).contains(&"m5".to_owned()));
    wait_until("all confirmed", || fake.pending_updates() == 0);
    let seen = texts(&gate.mem);
    assert_eq!(seen.len(), 6, "{seen:?}");
    for text in ["m1", "m2", "m4", "m5"] {
        assert_eq!(count(&seen, text), 1, "{text} in {seen:?}");
    }
    assert_eq!(
        count(&seen, "m3"),
        2,
        "only the unacknowledged one twice: {seen:?}"
    );
    // The duplicate is recognisable: same chat, same message id.
    let m3: Vec<_> = gate
        .mem
        .inbound()
        .into_iter()
        .filter(|e| e.text.as_str() == "m3")
        .map(|e| (e.chat_id, e.message_id))
        .collect();
    assert_eq!(m3[0], m3[1]);
    second.teardown();
    gate.release();
}

/// The host refuses a message: the plugin retries it (never skips it), reports DEGRADED, and
/// a restart picks up exactly where the host stopped accepting.
#[test]
fn a_refused_message_is_retried_and_survives_a_restart() {
    let fake = fake();
    let mem = MemoryHost::new();
    let first = started(&fake, &mem);
    say(&fake, "one");
    wait_until("one", || texts(&mem) == ["one"]);

    mem.set_reject_inbound(Some(PluginError::other("database is locked")));
    say(&fake, "two");
    say(&fake, "three");
    let health = wait_for("DEGRADED", || {
        let h = first.health();
        (h.status == HealthStatus::DEGRADED).then_some(h)
    });
    assert!(health.detail.contains("database is locked"), "{health:?}");
    // Retried with backoff (1 s, 2 s…), not dropped.
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(texts(&mem), ["one"]);
    assert_eq!(fake.pending_updates(), 2, "nothing confirmed to Telegram");
    first.teardown();

    mem.set_reject_inbound(None);
    let second = started(&fake, &mem);
    wait_until("two and three", || texts(&mem).len() == 3);
    assert_eq!(texts(&mem), ["one", "two", "three"]);
    wait_until("all confirmed", || fake.pending_updates() == 0);
    second.teardown();
}

/// A poison update: the host refuses one message every time. After `skip_after_refusals`
/// refusals it is skipped and reported, the offset moves past it, and the messages behind it
/// (already waiting, and new ones) reach the host.
#[test]
fn a_poison_update_is_skipped_after_the_set_refusals_and_the_rest_flow() {
    let fake = fake();
    let gate = GateHost::new(MemoryHost::new());
    gate.refuse("poison", PluginError::other("cannot store this one"));
    let mut with_limit = settings(&fake);
    with_limit["skip_after_refusals"] = json!(3);
    let channel = create_with(gate.host(), with_limit).expect("create");
    channel.start().expect("start");
    say(&fake, "before");
    let poison = fake
        .send_user_message(UserMessage::private(ann(), "poison"))
        .expect("inject");
    say(&fake, "after");
    wait_until("the messages around the poison", || {
        texts(&gate.mem) == ["before", "after"]
    });
    assert_eq!(
        gate.refusals(),
        3,
        "refused exactly skip_after_refusals times"
    );

    // The offset is past the poison update: Telegram is told to drop it, a restart won't
    // read it again.
    wait_until("all confirmed", || fake.pending_updates() == 0);
    let stored: i64 = gate
        .mem
        .host()
        .kv_get("offset")
        .expect("kv")
        .expect("offset")
        .parse()
        .expect("number");
    assert!(
        stored > poison.update_id,
        "{stored} <= {}",
        poison.update_id
    );

    // Reported: an error line and the health detail; the channel itself is fine.
    assert!(gate.mem.logs().iter().any(|l| l.level == LogLevel::ERROR
        && l.message.contains("skipping message")
        && l.message.contains("cannot store this one")));
    let health = channel.health();
    assert_eq!(health.status, HealthStatus::OK, "{health:?}");
    assert!(
        health.detail.contains("skipped 1 inbound event"),
        "{health:?}"
    );

    say(&fake, "later");
    wait_until("a new message", || {
        texts(&gate.mem).contains(&"later".to_owned())
    });
    channel.teardown();
}

#[test]
fn a_refused_message_is_delivered_once_the_host_accepts_again() {
    let fake = fake();
    let mem = MemoryHost::new();
    let channel = started(&fake, &mem);
    mem.set_reject_inbound(Some(PluginError::other("busy")));
    say(&fake, "patience");
    wait_until("DEGRADED", || {
        channel.health().status == HealthStatus::DEGRADED
    });
    mem.set_reject_inbound(None);
    wait_until("the retried message", || texts(&mem) == ["patience"]);
    wait_until("OK again", || channel.health().status == HealthStatus::OK);
    channel.teardown();
}

/// Waits until the plugin is in a long poll that started after `update_id` was handled
/// (`None`: any poll), so an armed failure hits the poll after the current one.
fn wait_polling_after(fake: &FakeTelegram, update_id: Option<i64>) {
    let offset = update_id.map(|id| json!(id + 1));
    wait_until("a long poll in flight", || {
        fake.calls_of("getUpdates").iter().any(|c| {
            offset
                .as_ref()
                .is_none_or(|o| c.params.get("offset") == Some(o))
        })
    });
}

/// Each kind of getUpdates failure: the loop reports DEGRADED, backs off, and recovers.
#[test]
fn poll_failures_are_survived_with_backoff() {
    let fake = fake();
    let mem = MemoryHost::new();
    let channel = started(&fake, &mem);
    let failures = [
        (Failure::Conflict, "409 Conflict"),
        (
            Failure::RateLimited {
                retry_after_secs: 2,
            },
            "rate limited",
        ),
        (Failure::ServerError, "500"),
        (Failure::BadGateway, "502"),
        (Failure::DropConnection, "network error"),
    ];
    let mut last_update = None;
    for (round, (failure, expected)) in failures.into_iter().enumerate() {
        // In a long poll: arm the failure for the next call, end this poll with a message.
        wait_polling_after(&fake, last_update);
        fake.fail_next_method("getUpdates", 1, failure.clone());
        let before = format!("before-{round}");
        say(&fake, &before);
        wait_until(&before, || texts(&mem).contains(&before));
        let degraded = wait_for("DEGRADED", || {
            let h = channel.health();
            (h.status == HealthStatus::DEGRADED).then_some(h)
        });
        assert!(
            degraded.detail.contains(expected),
            "{failure:?}: {:?}",
            degraded.detail
        );
        let failed_at = Instant::now();
        let after = format!("after-{round}");
        last_update = Some(
            fake.send_user_message(UserMessage::private(ann(), &after))
                .expect("inject")
                .update_id,
        );
        wait_until(&after, || texts(&mem).contains(&after));
        if matches!(failure, Failure::RateLimited { .. }) {
            assert!(
                failed_at.elapsed() >= Duration::from_millis(1500),
                "retry_after honoured"
            );
        }
        wait_until("OK again", || channel.health().status == HealthStatus::OK);
    }
    assert_eq!(mem.inbound().len(), 10);
    let injected = fake
        .calls_of("getUpdates")
        .iter()
        .filter(|c| c.params.get("injected_failure").is_some())
        .count();
    assert_eq!(injected, 5);
    assert!(
        mem.logs().iter().any(|l| l.level == LogLevel::WARN
            && l.message.contains("another program is polling this bot")),
        "the 409 is explained in the log"
    );
    assert!(
        mem.logs()
            .iter()
            .any(|l| l.message.contains("getUpdates works again")),
        "recovery is logged"
    );
    channel.teardown();
}

#[test]
fn a_webhook_left_by_someone_else_is_removed_at_start() {
    let fake = fake();
    fake.set_webhook(Some("https://example.invalid/hook"));
    say(&fake, "queued");
    let mem = MemoryHost::new();
    let channel = started(&fake, &mem);
    wait_until("the queued message", || texts(&mem) == ["queued"]);
    channel.teardown();
}

#[test]
fn a_wrong_token_fails_start_with_auth_and_health_down() {
    let fake = FakeTelegram::start("999:ZZZdefGHIjklMNOpqrSTUvwxYZ0123456789").expect("fake");
    let mem = MemoryHost::new();
    let channel = create_with(mem.host(), settings(&fake)).expect("create");
    let err = channel.start().expect_err("refused token");
    assert_eq!(err.kind, ErrorKind::AUTH, "{err}");
    assert!(err.message.contains("rejected the bot token"), "{err}");
    assert!(!err.message.contains(TOKEN_SECRET), "{err}");
    let health = channel.health();
    assert_eq!(health.status, HealthStatus::DOWN);
    assert!(health.detail.contains("bot token"), "{health:?}");
    assert!(fake.calls().is_empty(), "a wrong token reaches no method");
    channel.teardown();
}

#[test]
fn a_token_revoked_while_polling_stops_the_loop() {
    let fake = fake();
    let mem = MemoryHost::new();
    let channel = started(&fake, &mem);
    wait_polling_after(&fake, None);
    fake.fail_next_method("getUpdates", 1, Failure::Unauthorized);
    say(&fake, "last words");
    wait_until("the last message", || texts(&mem) == ["last words"]);
    let health = wait_for("DOWN", || {
        let h = channel.health();
        (h.status == HealthStatus::DOWN).then_some(h)
    });
    assert!(
        health.detail.contains("rejected the bot token"),
        "{health:?}"
    );
    let polls = fake.calls_of("getUpdates").len();
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(fake.calls_of("getUpdates").len(), polls, "polling stopped");
    assert!(
        mem.logs()
            .iter()
            .any(|l| l.level == LogLevel::ERROR && l.message.contains("rejected the bot token"))
    );
    channel.teardown();
}

#[test]
fn an_unreachable_api_is_a_network_error_at_start() {
    // A port nothing listens on: bind one, then free it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let mem = MemoryHost::new();
    let channel = create_with(
        mem.host(),
        json!({"bot_token": TOKEN, "api_base_url": format!("http://127.0.0.1:{port}")}),
    )
    .expect("create");
    let err = channel.start().expect_err("nothing there");
    assert_eq!(err.kind, ErrorKind::NETWORK, "{err}");
    assert!(!err.message.contains(TOKEN_SECRET), "{err}");
    channel.teardown();
}

#[test]
fn teardown_cancels_the_long_poll_promptly() {
    let fake = fake();
    let mem = MemoryHost::new();
    let channel = create_with(
        mem.host(),
        json!({"bot_token": TOKEN, "api_base_url": fake.base_url(), "poll_timeout_secs": 300}),
    )
    .expect("create");
    channel.start().expect("start");
    wait_until("a long poll", || !fake.calls_of("getUpdates").is_empty());
    std::thread::sleep(Duration::from_millis(100));
    let stopping = Instant::now();
    channel.teardown();
    assert!(
        stopping.elapsed() < Duration::from_millis(1500),
        "teardown took {:?}",
        stopping.elapsed()
    );
    let health = channel.health();
    assert_eq!(
        (health.status, health.detail.as_str()),
        (HealthStatus::DOWN, "stopped")
    );
    let polls = fake.calls_of("getUpdates").len();
    say(&fake, "anyone?");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(fake.calls_of("getUpdates").len(), polls);
    assert!(mem.inbound().is_empty());
    assert_eq!(fake.pending_updates(), 1, "left for the next start");
    let err = channel
        .deliver(OutboundMessage {
            chat_id: "1".into(),
            text: "x".into(),
            ..Default::default()
        })
        .expect_err("after teardown");
    assert_eq!(err.kind, ErrorKind::OTHER);

    // A new instance right away is not refused with 409: the old poll is gone.
    let next = started(&fake, &mem);
    wait_until("the waiting message", || texts(&mem) == ["anyone?"]);
    assert!(
        fake.calls_of("getUpdates")
            .iter()
            .all(|c| c.params.get("injected_failure").is_none())
    );
    next.teardown();
}

#[test]
fn create_and_teardown_without_start_touch_no_network() {
    let fake = fake();
    let mem = MemoryHost::new();
    let channel: TelegramChannel = create_with(mem.host(), settings(&fake)).expect("create");
    assert_eq!(channel.health().status, HealthStatus::UNKNOWN);
    channel.teardown();
    assert!(fake.calls().is_empty());
}
