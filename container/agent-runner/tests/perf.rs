//! Measurements with a report: wake-up latency and idle cost. Run with `--nocapture` to see the
//! numbers. The fallback poll is set to ten minutes, so only file events can wake the agent;
//! the assertions are loose enough for a loaded CI machine but fail if waking is not event
//! driven or idling is not idle.

mod common;

use std::time::{Duration, Instant};

use common::{Agent, Msg, Session, wait_until};
use rusqlite::OptionalExtension as _;

const EVENTS_ONLY: (&str, &str) = ("NANOCLAW_FALLBACK_POLL_MS", "600000");

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx]
}

struct Latencies {
    claimed: Vec<Duration>,
    answered: Vec<Duration>,
}

/// Sends N messages one at a time; for each, the time from the host's commit returning until
/// the agent's claim (processing ack) and its completed ack are visible.
fn measure(host_synchronous: &str) -> Latencies {
    let mut s = Session::new();
    s.host_synchronous(host_synchronous);
    let agent = Agent::mock(&s, &[EVENTS_ONLY, ("NANOCLAW_LOG", "warn")]);
    // Without the debug log there is no ready line: wait for a first turn instead.
    s.send(Msg::chat("warmup", "warm up"));
    assert!(
        wait_until(Duration::from_secs(10), || s.out_rows().len() == 1),
        "{}",
        agent.logs()
    );

    let out = s.outbound();
    let mut claimed = Vec::new();
    let mut answered = Vec::new();
    for i in 0..N {
        let id = format!("m{i}");
        s.send(Msg::chat(&id, "ping"));
        let t0 = Instant::now();
        let deadline = t0 + Duration::from_secs(10);
        let mut claim = None;
        loop {
            let status: Option<String> = out
                .query_row(
                    "SELECT status FROM processing_ack WHERE message_id = ?1",
                    [&id],
                    |r| r.get(0),
                )
                .optional()
                .expect("read ack");
            if claim.is_none() && status.is_some() {
                claim = Some(t0.elapsed());
            }
            if status.as_deref() == Some("completed") {
                break;
            }
            // Poll finely but leave the CPU to the agent (2-core machine).
            std::thread::sleep(Duration::from_micros(50));
            assert!(
                Instant::now() < deadline,
                "message {id} not answered:\n{}",
                agent.logs()
            );
        }
        claimed.push(claim.unwrap_or_default());
        answered.push(t0.elapsed());
    }
    assert_eq!(s.out_rows().len(), N + 1);
    claimed.sort();
    answered.sort();
    let report = |name: &str, v: &[Duration]| {
        eprintln!(
            "host synchronous={host_synchronous}: {name}: p50 {:?}  p90 {:?}  p99 {:?}  max {:?}  (n={N})",
            percentile(v, 0.5),
            percentile(v, 0.9),
            percentile(v, 0.99),
            v[v.len() - 1]
        );
    };
    eprintln!(
        "host synchronous={host_synchronous}: RSS after {} turns: {} KiB",
        N + 1,
        agent.rss_kib()
    );
    report("commit -> claimed", &claimed);
    report("commit -> answered", &answered);
    Latencies { claimed, answered }
}

const N: usize = 100;

#[test]
fn wake_latency_from_inbound_commit() {
    // The host's recommended setting: no fsync at commit, so the commit is visible right
    // after its last -wal write, which is the event the agent wakes on.
    let normal = measure("NORMAL");
    assert!(
        percentile(&normal.claimed, 0.5) < Duration::from_millis(20),
        "waking is not event driven"
    );
    assert!(percentile(&normal.answered, 0.5) < Duration::from_millis(25));
    // SQLite's default: the fsync sits between the last -wal write and the commit becoming
    // visible, so the agent re-checks on a short doubling schedule after the event.
    let full = measure("FULL");
    assert!(
        percentile(&full.claimed, 0.5) < Duration::from_millis(50),
        "settle re-checks are not working"
    );
}

#[test]
fn idle_costs_nothing() {
    let s = Session::new();
    let agent = Agent::mock(&s, &[EVENTS_ONLY]).ready();
    std::thread::sleep(Duration::from_millis(300));
    let before = agent.cpu_ticks();
    std::thread::sleep(Duration::from_secs(3));
    let used = agent.cpu_ticks() - before;
    let rss = agent.rss_kib();
    eprintln!("idle for 3 s: {used} clock ticks of CPU, RSS {rss} KiB");
    assert!(used <= 2, "an idle agent used {used} ticks in 3 s");
    assert!(rss < 64 * 1024, "RSS {rss} KiB");
}
