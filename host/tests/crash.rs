//! kill -9 of the host at chosen points of a delivery, counting what the platform (the test
//! plugin's record) received. What is guaranteed is written in docs/SECURITY.md:
//! - killed before the platform took a message: it is sent after the restart, once;
//! - killed after the platform took it but before the host heard back: it is sent again
//!   (at least once), with the same idempotency key, so a platform that honours one shows it
//!   once;
//! - killed in the middle of a message split in parts: the parts already sent are not sent
//!   again; the rest follow.

mod common;
mod harness;

use std::path::Path;
use std::time::Duration;

use harness::testchat::{ECHO, Setup};
use harness::{Daemon, built, require_engine, wait_until};
use serde_json::Value;

fn plugins_toml(s: &Setup, holds: &Path) -> String {
    format!(
        "[plugins.test]\nlibrary = {:?}\n[plugins.test.settings]\nrecord_path = {:?}\nhold_dir = {:?}\n",
        built().join("libnanoclaw_test_plugin.so"),
        s.record,
        holds
    )
}

fn start(s: &Setup, holds: &Path) -> Daemon {
    Daemon::start(
        &s.data,
        &plugins_toml(s, holds),
        &["--webhook-listen", &format!("127.0.0.1:{}", s.port)],
    )
}

/// Deliveries whose text contains `needle`.
fn received(s: &Setup, needle: &str) -> Vec<Value> {
    s.delivered()
        .into_iter()
        .filter(|d| d["text"].as_str().is_some_and(|t| t.contains(needle)))
        .collect()
}

/// Waits for the plugin to park a call, kills the host, releases the hold, starts again.
fn kill_during(s: &Setup, daemon: &mut Daemon, holds: &Path, name: &str) {
    let held = wait_until(Duration::from_secs(60), || {
        holds.join(format!("{name}.held")).exists()
    });
    assert!(held, "the call {name} was never made:\n{}", daemon.log());
    daemon.kill();
    std::fs::write(holds.join(format!("{name}.release")), b"").unwrap();
    daemon.start_again();
    let _ = s;
}

#[test]
fn kill_9_during_delivery_loses_nothing_and_repeats_only_what_the_docs_say() {
    if !require_engine("kill_9_during_delivery_loses_nothing_and_repeats_only_what_the_docs_say") {
        return;
    }
    let s = Setup::new();
    let holds = s.data.parent().unwrap().join("holds");
    std::fs::create_dir_all(&holds).unwrap();
    s.agent("helper", "room", ECHO);
    let mut daemon = start(&s, &holds);

    // Before the platform took it: sent once, after the restart.
    s.say("room", "alice", "m1", "alpha [hold:a:before]");
    kill_during(&s, &mut daemon, &holds, "a");
    assert!(
        wait_until(Duration::from_secs(60), || received(&s, "alpha").len() == 1),
        "alpha never arrived:\n{}",
        daemon.log()
    );

    // After the platform took it, before the host heard back: sent again, same key.
    s.say("room", "alice", "m2", "beta [hold:b:after]");
    kill_during(&s, &mut daemon, &holds, "b");
    assert!(
        wait_until(Duration::from_secs(60), || received(&s, "beta").len() == 2),
        "beta was not sent again:\n{}",
        daemon.log()
    );
    let beta = received(&s, "beta");
    assert!(beta[0]["idempotency_key"].is_string());
    assert_eq!(
        beta[0]["idempotency_key"], beta[1]["idempotency_key"],
        "the repeat carries the same idempotency key"
    );

    // Mid split: part 1 sent, part 2 in flight (the platform never took it), part 3 waiting.
    let part = |tag: &str| format!("{tag} {}", "x".repeat(3000));
    let long = format!(
        "{}\n\n{} [hold:c:before]\n\n{}",
        part("PART-ONE"),
        part("PART-TWO"),
        part("PART-THREE")
    );
    s.say("room", "alice", "m3", &long);
    kill_during(&s, &mut daemon, &holds, "c");
    assert!(
        wait_until(Duration::from_secs(60), || received(&s, "PART-THREE").len()
            == 1),
        "the rest of the split message never arrived:\n{}",
        daemon.log()
    );
    std::thread::sleep(Duration::from_secs(2));
    for tag in ["PART-ONE", "PART-TWO", "PART-THREE"] {
        assert_eq!(received(&s, tag).len(), 1, "{tag} arrived once");
    }
    // Nothing else was sent twice either.
    assert_eq!(received(&s, "alpha").len(), 1);
    assert_eq!(received(&s, "beta").len(), 2);
    drop(daemon);
}
