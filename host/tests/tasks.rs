//! Scheduled tasks that fail, end to end with a real Docker engine: the daemon, the test
//! plugin and a mock-provider agent whose task turns fail. A failed firing is retried after a
//! backoff, the task pauses itself after three failures in a row, its agent is told, and the
//! operator sees and changes it with `nanoclaw tasks`. Skipped (with a message) without an
//! engine.

mod common;
mod harness;

use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use harness::testchat::Setup;
use harness::{Daemon, cli, cli_ok, require_engine, wait_until};
use serde_json::Value;

/// This file's own agent image: the shared e2e tag may be rebuilt meanwhile by another
/// test process from another checkout's runner.
const IMAGE: &str = "nanoclaw-agent:e2e-tasks";

fn image() -> &'static str {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| harness::build_agent_image(IMAGE));
    IMAGE
}

fn start(s: &Setup, extra: &[&str]) -> Daemon {
    let listen = format!("127.0.0.1:{}", s.port);
    let mut args = vec!["--webhook-listen", listen.as_str()];
    args.extend_from_slice(extra);
    Daemon::start_event_driven_with_image(&s.data, &s.plugins_toml(), &args, image())
}

/// Task prompts starting with "fail" make the provider fail the turn; the note about the
/// pause is answered so the test can see the agent got it.
const MOCK: &str = r#"
[[rule]]
match = "^fail"
error = "model exploded"

[[rule]]
match = "paused after"
reply = "noted: {text}"

[[rule]]
reply = "echo: {text}"
"#;

/// First backoff of the daemon under test: the second is twice that.
const BACKOFF_MS: u64 = 2000;

fn tasks(data: &Path) -> Vec<Value> {
    let out = cli_ok(data, &["--json", "tasks", "list"]);
    serde_json::from_str::<Value>(&out)
        .unwrap_or_else(|e| panic!("tasks list --json: {e}: {out}"))
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn task(data: &Path, id: &str) -> Value {
    tasks(data)
        .into_iter()
        .find(|t| t["id"] == id)
        .unwrap_or_else(|| panic!("no task {id} in the list"))
}

/// Adds a task to the agent's only session, as the scheduling action would.
fn insert_task(data: &Path, id: &str, prompt: &str, recurrence: Option<&str>, status: &str) {
    let db = rusqlite::Connection::open(data.join("v2.db")).unwrap();
    db.busy_timeout(Duration::from_secs(5)).unwrap();
    let (session, group): (String, String) = db
        .query_row("SELECT id, agent_group_id FROM sessions", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    let next = if recurrence.is_some() {
        "2099-01-01T09:00:00.000Z"
    } else {
        "2020-01-01T00:00:00.000Z"
    };
    db.execute(
        "INSERT INTO scheduled_tasks (id, session_id, agent_group_id, prompt, recurrence, next_run,
         status, channel_type, platform_id, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'test', 'room', '2026-01-01T00:00:00.000Z',
                 '2026-01-01T00:00:00.000Z')",
        rusqlite::params![id, session, group, prompt, recurrence, next, status],
    )
    .unwrap();
}

fn firing_times(session_dir: &Path, task: &str) -> Vec<jiff::Timestamp> {
    let Ok(inbound) = harness::inbound_db(session_dir) else {
        return Vec::new();
    };
    let mut stmt = inbound
        .prepare(
            "SELECT timestamp FROM messages_in WHERE kind = 'task' AND id LIKE ?1 ORDER BY seq",
        )
        .unwrap();
    stmt.query_map([format!("{task}:%")], |r| r.get::<_, String>(0))
        .unwrap()
        .filter_map(|t| t.ok()?.parse().ok())
        .collect()
}

#[test]
fn a_failing_task_backs_off_pauses_itself_and_the_operator_resumes_it() {
    if !require_engine("a_failing_task_backs_off_pauses_itself_and_the_operator_resumes_it") {
        return;
    }
    let s = Setup::new();
    s.agent("helper", "room", MOCK);
    let backoff = BACKOFF_MS.to_string();
    let daemon = start(&s, &["--task-backoff-ms", &backoff]);
    s.say("room", "alice", "m1", "hello");
    s.expect_delivered(&daemon, "room", 1);

    // Paused on creation; the operator's resume makes it due at once (and pokes the daemon).
    insert_task(
        &s.data,
        "nightly",
        "fail the nightly report",
        None,
        "paused",
    );
    let out = cli_ok(&s.data, &["tasks", "resume", "nightly"]);
    assert!(
        out.contains("task nightly resumed; the daemon sees it now"),
        "{out}"
    );

    let paused = wait_until(Duration::from_secs(120), || {
        task(&s.data, "nightly")["status"] == "paused"
    });
    assert!(paused, "the task did not pause itself:\n{}", daemon.log());
    let t = task(&s.data, "nightly");
    assert_eq!(t["consecutive_failures"], 3, "{t}");
    assert_eq!(t["agent"], "helper");
    assert_eq!(t["run_count"], 3, "fired three times, then stopped: {t}");
    let error = t["last_error"].as_str().unwrap_or_default();
    assert!(error.contains("model exploded"), "{t}");

    // Each retry waited for its backoff, the second twice as long as the first.
    let dir = &s.session_dirs()[0];
    let times = firing_times(dir, "nightly");
    assert_eq!(times.len(), 3, "{times:?}");
    let gap = |a: usize| times[a + 1].duration_since(times[a]).as_millis() as u64;
    assert!(gap(0) >= BACKOFF_MS, "first retry after {}ms", gap(0));
    assert!(gap(1) >= 2 * BACKOFF_MS, "second retry after {}ms", gap(1));

    // The agent was told, woke up and answered in the task's chat.
    let told = wait_until(Duration::from_secs(60), || {
        s.delivered_to("room")
            .iter()
            .any(|m| m.starts_with("noted: Task nightly was paused after 3 failed runs"))
    });
    assert!(
        told,
        "the agent was not told; delivered: {:?}\n{}",
        s.delivered_to("room"),
        daemon.log()
    );
    let note = s
        .delivered_to("room")
        .into_iter()
        .find(|m| m.starts_with("noted:"))
        .unwrap();
    assert!(
        note.contains("model exploded") && note.contains("resume_task"),
        "{note}"
    );
    assert!(
        daemon
            .log()
            .contains("scheduled task paused itself after failing repeatedly"),
        "the operator's log says nothing"
    );
    // The table shows the failures with the error.
    let table = cli_ok(&s.data, &["tasks", "list", "--status", "paused"]);
    assert!(
        table.contains("nightly") && table.contains("3 (the agent's turn failed"),
        "{table}"
    );

    // Resuming starts the count over, and the task runs again.
    let out = cli_ok(&s.data, &["--json", "tasks", "resume", "nightly"]);
    let resumed: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(resumed["status"], "active", "{out}");
    assert_eq!(resumed["consecutive_failures"], 0, "{out}");
    let ran = wait_until(Duration::from_secs(60), || {
        task(&s.data, "nightly")["run_count"] == 4
    });
    assert!(ran, "the resumed task did not run:\n{}", daemon.log());
    drop(daemon);
}

#[test]
fn the_operator_pauses_resumes_and_cancels_a_task() {
    if !require_engine("the_operator_pauses_resumes_and_cancels_a_task") {
        return;
    }
    let s = Setup::new();
    s.agent("helper", "room", MOCK);
    let daemon = start(&s, &[]);
    s.say("room", "alice", "m1", "hello");
    s.expect_delivered(&daemon, "room", 1);
    insert_task(
        &s.data,
        "weekly",
        "write the digest",
        Some("0 9 * * 1"),
        "active",
    );

    let out = cli_ok(&s.data, &["tasks", "pause", "weekly"]);
    assert!(out.contains("task weekly paused"), "{out}");
    assert_eq!(task(&s.data, "weekly")["status"], "paused");
    // The agent's own task list follows at once (the daemon was poked).
    let dir = &s.session_dirs()[0];
    let projected = wait_until(Duration::from_secs(10), || {
        harness::inbound_db(dir)
            .and_then(|c| {
                c.query_row(
                    "SELECT status FROM scheduled_tasks WHERE id = 'weekly'",
                    [],
                    |r| r.get::<_, String>(0),
                )
            })
            .is_ok_and(|st| st == "paused")
    });
    assert!(projected, "the agent's task list was not refreshed");

    let again = cli(&s.data, &["tasks", "pause", "weekly"]);
    assert!(!again.status.success());
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(err.contains("is paused, not active"), "{err}");

    cli_ok(&s.data, &["tasks", "resume", "weekly"]);
    assert_eq!(task(&s.data, "weekly")["status"], "active");

    let listed = cli_ok(
        &s.data,
        &[
            "--json", "tasks", "list", "--agent", "helper", "--status", "active",
        ],
    );
    assert!(listed.contains("\"weekly\""), "{listed}");

    let out = cli_ok(&s.data, &["tasks", "cancel", "weekly"]);
    assert!(out.contains("task weekly cancelled"), "{out}");
    let active = cli_ok(&s.data, &["--json", "tasks", "list", "--status", "active"]);
    assert!(!active.contains("\"weekly\""), "{active}");
    let again = cli(&s.data, &["tasks", "cancel", "weekly"]);
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("already cancelled"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );

    let unknown = cli(&s.data, &["tasks", "resume", "nosuch"]);
    assert!(!unknown.status.success());
    let err = String::from_utf8_lossy(&unknown.stderr);
    assert!(
        err.contains("no task nosuch") && err.contains("nanoclaw tasks list"),
        "{err}"
    );
    let bad_status = cli(&s.data, &["tasks", "list", "--status", "sleeping"]);
    assert!(!bad_status.status.success());
    drop(daemon);
}
