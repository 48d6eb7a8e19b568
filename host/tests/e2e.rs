//! End to end, with a real Docker engine: the daemon, a real plugin cdylib, the agent-runner
//! in a locally built image, and back. Skipped (with a message) without an engine.

mod common;
mod harness;

use std::time::Duration;

use harness::testchat::{ECHO, Setup};
use harness::{Daemon, built, cli, cli_ok, containers, free_port, require_engine, wait_until};
use serde_json::Value;

#[test]
fn a_message_gets_the_mock_agents_reply_through_the_plugin() {
    if !require_engine("a_message_gets_the_mock_agents_reply_through_the_plugin") {
        return;
    }
    let s = Setup::new();
    s.agent("helper", "room", ECHO);
    let daemon = s.start();
    s.say("room", "alice", "m1", "hello there");
    let ok = wait_until(Duration::from_secs(60), || {
        s.delivered_to("room") == ["echo: hello there"]
    });
    assert!(
        ok,
        "no reply; delivered: {:?}\n{}",
        s.delivered(),
        daemon.log()
    );
    // The outcome is recorded in the session, and the inbound message is done.
    let dir = &s.session_dirs()[0];
    let inbound = harness::inbound_db(dir).unwrap();
    let ok = wait_until(Duration::from_secs(10), || {
        inbound
            .query_row(
                "SELECT status FROM messages_in WHERE platform_message_id = 'm1'",
                [],
                |r| r.get::<_, String>(0),
            )
            .is_ok_and(|st| st == "completed")
    });
    assert!(ok, "the inbound message was not marked completed");
    let delivered: String = inbound
        .query_row("SELECT status FROM delivered", [], |r| r.get(0))
        .expect("a delivered row");
    assert_eq!(delivered, "delivered");
}

/// A container that cannot start (here: its image is not there yet) is tried again soon,
/// backing off, not only at the next sweep (practically off here): once the image appears,
/// the waiting message is answered.
#[test]
fn a_container_that_did_not_start_is_tried_again() {
    if !require_engine("a_container_that_did_not_start_is_tried_again") {
        return;
    }
    let s = Setup::new();
    s.agent("helper", "room", ECHO);
    let tag = format!("nanoclaw-agent:not-yet-{}", std::process::id());
    let listen = format!("127.0.0.1:{}", s.port);
    let daemon = Daemon::start_event_driven_with_image(
        &s.data,
        &s.plugins_toml(),
        &["--webhook-listen", &listen],
        &tag,
    );
    s.say("room", "alice", "m1", "hello");
    let failed = wait_until(Duration::from_secs(30), || {
        daemon.log().contains("agent container did not start")
    });
    assert!(failed, "the start did not fail:\n{}", daemon.log());
    let tagged = std::process::Command::new("docker")
        .args(["tag", harness::image(), &tag])
        .status()
        .expect("docker tag");
    assert!(tagged.success());
    let answered = wait_until(Duration::from_secs(60), || {
        s.delivered_to("room") == ["echo: hello"]
    });
    let _ = std::process::Command::new("docker")
        .args(["rmi", &tag])
        .output();
    assert!(
        answered,
        "not answered; delivered: {:?}\n{}",
        s.delivered(),
        daemon.log()
    );
}

/// `init-first-agent` for someone who never wrote to the bot, on a channel whose DMs must be
/// opened: the running daemon opens the DM through the plugin (`open_dm`), and the welcome
/// arrives there.
#[test]
fn the_first_agent_greets_a_user_who_never_wrote_in_a_dm_the_plugin_opens() {
    if !require_engine("the_first_agent_greets_a_user_who_never_wrote_in_a_dm_the_plugin_opens") {
        return;
    }
    let s = Setup::new();
    let daemon = s.start();
    let out = cli_ok(
        &s.data,
        &[
            "init-first-agent",
            "--user",
            "test:alice",
            "--name",
            "Alice",
        ],
    );
    assert!(
        out.contains("chat: test:dm-alice wired to dm-with-alice"),
        "{out}"
    );
    s.expect_delivered(&daemon, "dm-alice", 1);
    let opened: Vec<Value> = std::fs::read_to_string(&s.record)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["call"] == "open_dm")
        .collect();
    assert_eq!(opened.len(), 1, "{opened:?}");
    assert_eq!(opened[0]["user_handle"], "alice");
    // The DM is remembered: asking again opens nothing new.
    cli_ok(
        &s.data,
        &[
            "init-first-agent",
            "--user",
            "test:alice",
            "--name",
            "Alice",
        ],
    );
    let calls = std::fs::read_to_string(&s.record).unwrap_or_default();
    assert_eq!(calls.matches("\"open_dm\"").count(), 1, "{calls}");
}

/// Two instances of one plugin (two bots of one platform): the instance name namespaces
/// ids, so the same raw chat id on each is a different chat, and each reply leaves through
/// the instance its chat belongs to.
#[test]
fn two_instances_of_one_channel_keep_their_chats_apart() {
    if !require_engine("two_instances_of_one_channel_keep_their_chats_apart") {
        return;
    }
    let s = Setup::new();
    s.agent("helper", "room", ECHO);
    cli_ok(
        &s.data,
        &[
            "chats",
            "add",
            "work:room",
            "--name",
            "room",
            "--policy",
            "public",
        ],
    );
    cli_ok(&s.data, &["wire", "add", "work:room", "helper"]);
    let work_record = s.data.parent().unwrap().join("work.jsonl");
    let toml = format!(
        "{}\n[plugins.work]\nlibrary = {:?}\n[plugins.work.settings]\nrecord_path = {:?}\n",
        s.plugins_toml(),
        built().join("libnanoclaw_test_plugin.so"),
        work_record
    );
    let port = s.port.to_string();
    let daemon = Daemon::start(
        &s.data,
        &toml,
        &["--webhook-listen", &format!("127.0.0.1:{port}")],
    );
    let body = serde_json::json!({"chat_id": "room", "message_id": "w1", "sender_handle": "bob", "text": "from work"});
    let (status, answer) = harness::testchat::post(s.port, "/webhook/work", &body.to_string());
    assert_eq!(status, 200, "{answer}");
    s.say("room", "alice", "t1", "from test");

    let work_texts = || -> Vec<String> {
        std::fs::read_to_string(&work_record)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["call"] == "deliver")
            .map(|v| v["text"].as_str().unwrap_or_default().to_string())
            .collect()
    };
    let ok = wait_until(Duration::from_secs(60), || {
        work_texts().iter().any(|t| t.contains("from work"))
            && s.delivered_to("room")
                .iter()
                .any(|t| t.contains("from test"))
    });
    assert!(
        ok,
        "work: {:?}\ntest: {:?}\n{}",
        work_texts(),
        s.delivered_to("room"),
        daemon.log()
    );
    assert!(work_texts().iter().all(|t| !t.contains("from test")));
    assert!(
        s.delivered_to("room")
            .iter()
            .all(|t| !t.contains("from work"))
    );
    let chats = cli_ok(&s.data, &["chats", "list"]);
    assert!(
        chats.contains("work:room") && chats.contains("test:room"),
        "{chats}"
    );
}

#[test]
fn a_killed_container_is_recovered_and_the_message_answered_once() {
    if !require_engine("a_killed_container_is_recovered_and_the_message_answered_once") {
        return;
    }
    let s = Setup::new();
    s.agent(
        "slow",
        "room",
        "[[rule]]\nmatch = \"^slow\"\ndelay_ms = 4000\nreply = \"done: {text}\"\n",
    );
    let daemon = s.start();
    s.say("room", "alice", "m1", "slow job");
    // Wait until the agent has claimed the message, then kill its container mid-turn.
    let claimed = wait_until(Duration::from_secs(60), || {
        s.session_dirs().first().is_some_and(|d| {
            harness::outbound_db(d)
                .and_then(|c| {
                    c.query_row(
                        "SELECT COUNT(*) FROM processing_ack WHERE status = 'processing'",
                        [],
                        |r| r.get::<_, i64>(0),
                    )
                })
                .is_ok_and(|n| n > 0)
        })
    });
    assert!(
        claimed,
        "the agent never claimed the message:\n{}",
        daemon.log()
    );
    let running = containers(&s.data);
    assert_eq!(running.len(), 1);
    let kill = std::process::Command::new("docker")
        .args(["kill", &running[0]])
        .output()
        .unwrap();
    assert!(kill.status.success());
    // Recovered after a backoff, answered by a fresh container, exactly once.
    let answered = wait_until(Duration::from_secs(60), || {
        !s.delivered_to("room").is_empty()
    });
    assert!(answered, "no answer after the crash:\n{}", daemon.log());
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(
        s.delivered_to("room"),
        ["done: slow job"],
        "answered exactly once"
    );
    let inbound = harness::inbound_db(&s.session_dirs()[0]).unwrap();
    let tries: i64 = inbound
        .query_row(
            "SELECT tries FROM messages_in WHERE platform_message_id = 'm1'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(tries, 1, "one retry after the crash");
}

#[test]
fn a_reply_to_a_chat_without_destination_is_refused() {
    if !require_engine("a_reply_to_a_chat_without_destination_is_refused") {
        return;
    }
    let s = Setup::new();
    s.agent("helper", "room", ECHO);
    cli_ok(
        &s.data,
        &["chats", "add", "test:victim", "--name", "victim"],
    );
    let daemon = s.start();
    s.say("room", "alice", "m1", "hi");
    s.expect_delivered(&daemon, "room", 1);
    // A misbehaving agent writes straight to a chat it was never given.
    let dir = s.session_dirs()[0].clone();
    let out = harness::outbound_db(&dir).unwrap();
    out.execute(
        "INSERT INTO messages_out (id, seq, timestamp, kind, channel_type, platform_id, content)
         VALUES ('rogue-1', 1001, '2026-01-01T00:00:00.000Z', 'chat', 'test', 'victim', '{\"op\":\"send\",\"text\":\"leak\"}')",
        [],
    )
    .unwrap();
    let inbound = harness::inbound_db(&dir).unwrap();
    let recorded = wait_until(Duration::from_secs(30), || {
        inbound
            .query_row(
                "SELECT status FROM delivered WHERE message_out_id = 'rogue-1'",
                [],
                |r| r.get::<_, String>(0),
            )
            .is_ok_and(|st| st == "rejected")
    });
    assert!(recorded, "the refusal was not recorded:\n{}", daemon.log());
    assert!(
        s.delivered_to("victim").is_empty(),
        "nothing reached the victim chat"
    );
    assert!(daemon.log().contains("delivery refused"));
}

#[test]
fn two_sessions_run_side_by_side_without_crossing() {
    if !require_engine("two_sessions_run_side_by_side_without_crossing") {
        return;
    }
    let s = Setup::new();
    s.agent(
        "alpha",
        "room-a",
        "[[rule]]\nreply = \"alpha heard: {text}\"\n",
    );
    s.agent(
        "beta",
        "room-b",
        "[[rule]]\ndelay_ms = 300\nreply = \"beta heard: {text}\"\n",
    );
    let daemon = s.start();
    // Both agents work at once, round after round; each answer lands in its own chat.
    for i in 0..3 {
        s.say("room-a", "ann", &format!("a{i}"), &format!("to alpha {i}"));
        s.say("room-b", "bob", &format!("b{i}"), &format!("to beta {i}"));
        let both = wait_until(Duration::from_secs(60), || {
            s.delivered_to("room-a")
                .iter()
                .any(|t| t.contains(&format!("to alpha {i}")))
                && s.delivered_to("room-b")
                    .iter()
                    .any(|t| t.contains(&format!("to beta {i}")))
        });
        assert!(
            both,
            "round {i}: a: {:?}\nb: {:?}\n{}",
            s.delivered_to("room-a"),
            s.delivered_to("room-b"),
            daemon.log()
        );
    }
    assert_eq!(
        containers(&s.data).len(),
        2,
        "one container per session, side by side"
    );
    assert!(
        s.delivered_to("room-a")
            .iter()
            .all(|t| t.starts_with("alpha heard") && !t.contains("beta"))
    );
    assert!(
        s.delivered_to("room-b")
            .iter()
            .all(|t| t.starts_with("beta heard") && !t.contains("alpha"))
    );
    assert_eq!(s.session_dirs().len(), 2);
}

#[test]
fn the_local_chat_reaches_the_agent_and_back() {
    if !require_engine("the_local_chat_reaches_the_agent_and_back") {
        return;
    }
    let s = Setup::new();
    let toml = format!(
        "[plugins.cli]\nlibrary = {:?}\nrequired = true\n",
        built().join("libnanoclaw_plugin_channels.so")
    );
    let daemon = Daemon::start(&s.data, &toml, &[]);
    let user = harness_user();
    let out = cli_ok(
        &s.data,
        &[
            "init-first-agent",
            "--user",
            &format!("cli:{user}"),
            "--name",
            "Tester",
        ],
    );
    assert!(out.contains("now the owner"), "{out}");
    // The greeting is delivered into the channel's backlog before the user connects.
    let greeted = wait_until(Duration::from_secs(60), || {
        s.session_dirs().first().is_some_and(|d| {
            harness::inbound_db(d)
                .and_then(|c| {
                    c.query_row("SELECT COUNT(*) FROM delivered", [], |r| r.get::<_, i64>(0))
                })
                .is_ok_and(|n| n == 1)
        })
    });
    assert!(greeted, "no greeting delivered:\n{}", daemon.log());
    let first = cli(
        &s.data,
        &["chat", "-m", "hello from the terminal", "--timeout", "60"],
    );
    let stdout = String::from_utf8_lossy(&first.stdout);
    assert!(
        first.status.success(),
        "{stdout}\n{}\n{}",
        String::from_utf8_lossy(&first.stderr),
        daemon.log()
    );
    assert!(
        stdout.contains("your NanoClaw agent"),
        "no greeting: {stdout}"
    );
    assert!(
        stdout.contains("Mock agent: you said \"hello from the terminal\""),
        "{stdout}"
    );
    // The message went through the plugin boundary and the router into inbound.db.
    let dir = s.session_dirs()[0].clone();
    let inbound = harness::inbound_db(&dir).unwrap();
    let rows: i64 = inbound
        .query_row(
            "SELECT COUNT(*) FROM messages_in WHERE content LIKE '%hello from the terminal%'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(rows, 1);
}

#[test]
fn a_clean_restart_loses_nothing() {
    if !require_engine("a_clean_restart_loses_nothing") {
        return;
    }
    let s = Setup::new();
    s.agent(
        "helper",
        "room",
        "[[rule]]\ndelay_ms = 1500\nreply = \"echo: {text}\"\n",
    );
    let mut daemon = s.start();
    s.say("room", "alice", "m1", "before the restart");
    // Stop while the agent is still working on it; start again.
    std::thread::sleep(Duration::from_millis(700));
    daemon.restart();
    assert!(containers(&s.data).len() <= 1);
    let ok = wait_until(Duration::from_secs(90), || {
        s.delivered_to("room") == ["echo: before the restart"]
    });
    assert!(ok, "delivered: {:?}\n{}", s.delivered(), daemon.log());
}

fn harness_user() -> String {
    // The cli plugin names the peer after its unix account.
    let uid = unsafe { libc::geteuid() };
    let out = std::process::Command::new("id")
        .args(["-un", &uid.to_string()])
        .output()
        .unwrap();
    let name = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if name.is_empty() {
        uid.to_string()
    } else {
        name
    }
}

#[test]
fn extra_mounts_follow_the_operators_allowlist() {
    if !require_engine("extra_mounts_follow_the_operators_allowlist") {
        return;
    }
    let s = Setup::new();
    s.agent("helper", "room", ECHO);
    let shared = s.data.parent().unwrap().join("shared-docs");
    let secret = s.data.parent().unwrap().join("elsewhere");
    std::fs::create_dir_all(&shared).unwrap();
    std::fs::create_dir_all(&secret).unwrap();
    std::fs::write(
        s.data.join("mount-allowlist.toml"),
        format!(
            "[[allow]]\npath = {:?}\nread_write = false\n",
            shared.to_str().unwrap()
        ),
    )
    .unwrap();
    cli_ok(
        &s.data,
        &[
            "groups",
            "mount",
            "helper",
            shared.to_str().unwrap(),
            "--name",
            "docs",
            "--read-write",
        ],
    );
    cli_ok(
        &s.data,
        &[
            "groups",
            "mount",
            "helper",
            secret.to_str().unwrap(),
            "--name",
            "secret",
        ],
    );
    let daemon = s.start();
    s.say("room", "alice", "m1", "hi");
    s.expect_delivered(&daemon, "room", 1);
    let id = containers(&s.data).pop().expect("a running container");
    let out = std::process::Command::new("docker")
        .args(["inspect", "--format", "{{json .Mounts}}", &id])
        .output()
        .unwrap();
    let mounts: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let docs = mounts
        .iter()
        .find(|m| m["Destination"] == "/workspace/extra/docs")
        .expect("the allowed mount");
    assert_eq!(
        docs["RW"], false,
        "read-only: the allowlist does not grant read-write"
    );
    assert!(
        mounts
            .iter()
            .all(|m| m["Destination"] != "/workspace/extra/secret"),
        "not allowlisted: not mounted"
    );
    let config = mounts
        .iter()
        .find(|m| m["Destination"] == "/workspace/config")
        .expect("the config mount");
    assert_eq!(config["RW"], false);
    assert!(daemon.log().contains("extra mount refused"));
}

#[test]
fn idle_containers_are_stopped() {
    if !require_engine("idle_containers_are_stopped") {
        return;
    }
    let s = Setup::new();
    s.agent("helper", "room", ECHO);
    let port = s.port.to_string();
    let daemon = Daemon::start(
        &s.data,
        &s.plugins_toml(),
        &[
            "--webhook-listen",
            &format!("127.0.0.1:{port}"),
            "--idle-timeout-secs",
            "2",
        ],
    );
    s.say("room", "alice", "m1", "hi");
    s.expect_delivered(&daemon, "room", 1);
    assert!(
        wait_until(Duration::from_secs(20), || containers(&s.data).is_empty()),
        "not stopped:\n{}",
        daemon.log()
    );
    // The next message starts a fresh one.
    s.say("room", "alice", "m2", "again");
    s.expect_delivered(&daemon, "room", 2);
}

/// At the container limit a new session waits its turn (it is not refused): the running
/// container that has gone idle gives its slot up, and the waiting message is answered.
#[test]
fn past_the_container_limit_sessions_wait_their_turn() {
    if !require_engine("past_the_container_limit_sessions_wait_their_turn") {
        return;
    }
    let s = Setup::new();
    s.agent("first", "room-a", ECHO);
    s.agent("second", "room-b", ECHO);
    let port = s.port.to_string();
    let daemon = Daemon::start(
        &s.data,
        &s.plugins_toml(),
        &[
            "--webhook-listen",
            &format!("127.0.0.1:{port}"),
            "--max-containers",
            "1",
        ],
    );
    s.say("room-a", "alice", "m1", "hi a");
    s.expect_delivered(&daemon, "room-a", 1);
    s.say("room-b", "bob", "m2", "hi b");
    // Answered once the first container, idle, has given its slot up.
    s.expect_delivered(&daemon, "room-b", 1);
    assert!(
        daemon.log().contains("container limit reached"),
        "{}",
        daemon.log()
    );
    assert!(containers(&s.data).len() <= 1, "never more than the limit");
}

#[test]
fn a_required_plugin_that_fails_stops_the_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let toml = dir.path().join("plugins.toml");
    std::fs::write(
        &toml,
        format!(
            "[plugins.test]\nlibrary = {:?}\nrequired = true\n[plugins.test.settings]\ncreate = \"error\"\n",
            built().join("libnanoclaw_test_plugin.so")
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_nanoclaw"))
        .env("NANOCLAW_HOME", &data)
        .args(["run", "--plugins"])
        .arg(&toml)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("required plugin(s) failed: test"), "{err}");
    // Not required: the daemon runs on without it.
    std::fs::write(
        &toml,
        format!(
            "[plugins.test]\nlibrary = {:?}\n[plugins.test.settings]\ncreate = \"panic\"\n\n[plugins.missing]\nlibrary = \"/nonexistent/libnothing.so\"\n",
            built().join("libnanoclaw_test_plugin.so")
        ),
    )
    .unwrap();
    if require_engine("a_required_plugin_that_fails_stops_the_daemon (second half)") {
        let mut daemon = Daemon::start(&data, &std::fs::read_to_string(&toml).unwrap(), &[]);
        let log = daemon.log();
        assert!(log.contains("FAILED"), "{log}");
        daemon.stop();
    }
}

#[test]
fn plugins_list_shows_the_shipped_configuration_loaded() {
    // The shipped plugins.toml finds plugins next to the binary (target/debug).
    built();
    let dir = tempfile::tempdir().unwrap();
    let shipped = common::workspace_root().join("plugins.toml");
    let out = cli(
        &dir.path().join("data"),
        &[
            "--json",
            "plugins",
            "list",
            "--plugins",
            shipped.to_str().unwrap(),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    let enabled: Vec<&Value> = list["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["enabled"] == true)
        .collect();
    assert!(!enabled.is_empty());
    for p in enabled {
        assert_eq!(p["loaded"], true, "{p}");
        assert!(p["error"].is_null(), "{p}");
    }
    // Every channel NanoClaw ships is listed; the unconfigured ones as disabled.
    let rows = list["plugins"].as_array().unwrap();
    for channel in nanoclaw::plugins::config::FIRST_PARTY_CHANNELS {
        let row = rows
            .iter()
            .find(|p| p["instance"] == channel)
            .unwrap_or_else(|| panic!("{channel} not listed: {list}"));
        if channel == "cli" {
            assert_eq!(row["loaded"], true, "{row}");
        } else {
            assert_eq!(row["status"], "disabled", "{row}");
        }
    }
    let check = cli(
        &dir.path().join("data"),
        &["plugins", "check", "--plugins", shipped.to_str().unwrap()],
    );
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );
}

#[test]
fn doctor_says_what_to_fix() {
    if !require_engine("doctor_says_what_to_fix") {
        return;
    }
    let image = harness::image();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let shipped = common::workspace_root().join("plugins.toml");
    built();
    cli_ok(&data, &["migrate"]);
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::write(data.join(".env"), "TELEGRAM_BOT_TOKEN=x\n").unwrap();
    std::fs::set_permissions(data.join(".env"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = cli(
        &data,
        &[
            "--json",
            "doctor",
            "--plugins",
            shipped.to_str().unwrap(),
            "--image",
            image,
        ],
    );
    assert!(!out.status.success(), "a world-readable .env is a failure");
    let findings: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let find = |check: &str| {
        findings
            .iter()
            .find(|f| f["check"] == check)
            .cloned()
            .unwrap_or_default()
    };
    assert_eq!(find("docker engine")["level"], "ok");
    assert_eq!(find("agent image")["level"], "ok");
    assert_eq!(find("secrets")["level"], "fail");
    assert!(
        find("secrets")["fix"]
            .as_str()
            .unwrap()
            .contains("chmod 600")
    );
    assert_eq!(find("plugin cli")["level"], "ok");
    assert_eq!(find("owner")["level"], "warn");
    assert_eq!(find("daemon")["level"], "warn");
    std::fs::set_permissions(data.join(".env"), std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = cli(
        &data,
        &[
            "doctor",
            "--plugins",
            shipped.to_str().unwrap(),
            "--image",
            "nanoclaw-agent:missing",
        ],
    );
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("[FAIL] agent image") && text.contains("container/build.sh"),
        "{text}"
    );
}

#[test]
fn a_second_daemon_on_the_same_data_dir_is_refused() {
    if !require_engine("a_second_daemon_on_the_same_data_dir_is_refused") {
        return;
    }
    let s = Setup::new();
    s.agent("helper", "room", ECHO);
    let daemon = s.start();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_nanoclaw"))
        .env("NANOCLAW_HOME", &s.data)
        .args(["run", "--plugins"])
        .arg(s.data.parent().unwrap().join("plugins.toml"))
        .args(["--webhook-listen", &format!("127.0.0.1:{}", free_port())])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("already running"), "{err}");
    // The first one is unharmed.
    s.say("room", "alice", "m1", "still there?");
    s.expect_delivered(&daemon, "room", 1);
}

#[test]
fn closing_a_session_stops_its_container() {
    if !require_engine("closing_a_session_stops_its_container") {
        return;
    }
    let s = Setup::new();
    s.agent("helper", "room", ECHO);
    let daemon = s.start();
    s.say("room", "alice", "m1", "hi");
    s.expect_delivered(&daemon, "room", 1);
    assert_eq!(containers(&s.data).len(), 1);
    let session = s.session_dirs()[0]
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    cli_ok(&s.data, &["sessions", "close", &session]);
    assert!(
        wait_until(Duration::from_secs(20), || containers(&s.data).is_empty()),
        "{}",
        daemon.log()
    );
    // The next message starts a new session.
    s.say("room", "alice", "m2", "again");
    s.expect_delivered(&daemon, "room", 2);
    assert_eq!(s.session_dirs().len(), 2);
}
