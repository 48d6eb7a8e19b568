//! The claude provider against a fake Claude Code CLI: a small Python script that speaks
//! stream-json, logs how it was started and what it received, and answers with canned events.
//! No network, no real CLI.

mod common;

use std::os::unix::fs::PermissionsExt as _;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::{Agent, Msg, Session, wait_until};
use serde_json::Value;

const T: Duration = Duration::from_secs(10);

const FAKE_CLAUDE: &str = r#"#!/usr/bin/env python3
import json, os, re, sys, time

log = open(os.environ["FAKE_CLAUDE_LOG"], "a")
def note(**kw):
    log.write(json.dumps(kw) + "\n")
    log.flush()
def out(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()

args = sys.argv[1:]
note(event="start", pid=os.getpid(), args=args, cwd=os.getcwd())
resume = args[args.index("--resume") + 1] if "--resume" in args else None
if resume == "stale-session":
    sys.stderr.write("No conversation found with session ID: stale-session\n")
    sys.exit(1)
session = resume or "sess-%d" % os.getpid()

for line in sys.stdin:
    msg = json.loads(line)
    text = msg["message"]["content"]
    note(event="input", pid=os.getpid(), type=msg["type"], role=msg["message"]["role"], text=text)
    out({"type": "system", "subtype": "init", "session_id": session, "model": "fake"})
    out({"type": "assistant", "message": {"content": [{"type": "text", "text": "thinking"}]}})
    if "explode" in text:
        out({"type": "result", "subtype": "error_during_execution", "is_error": True,
             "result": "", "errors": ["tool crashed"], "session_id": session})
        continue
    if "reject me" in text:
        # As Claude Code 2.1.x reports a 429 whose message names no rate limit.
        out({"type": "result", "subtype": "success", "is_error": True, "api_error_status": 429,
             "result": "API Error: Request rejected (429) · slow down please",
             "session_id": session})
        continue
    if "hang forever" in text:
        time.sleep(3600)
    if "/compact" in text or "long story" in text:
        out({"type": "system", "subtype": "compact_boundary", "session_id": session,
             "compact_metadata": {"trigger": "manual" if text.startswith("/") else "auto",
                                  "pre_tokens": 1234}})
    if "die now" in text:
        sys.stderr.write("fatal: simulated crash\n")
        sys.exit(3)
    if text.startswith("/"):
        result = "Total cost: $0.00"
    else:
        names = re.findall(r'from="([^"]+)"', text)
        result = '<message to="%s">fake claude read %d messages</message>' % (
            names[-1] if names else "home", text.count("</message>"))
    out({"type": "result", "subtype": "success", "is_error": False, "result": result,
         "session_id": session})
note(event="eof", pid=os.getpid())
"#;

struct Fake {
    bin: PathBuf,
    log: PathBuf,
}

impl Fake {
    /// Writes the fake CLI into the session's temp dir; `None` when python3 is missing.
    fn install(s: &Session) -> Option<Fake> {
        if Command::new("python3").arg("--version").output().is_err() {
            eprintln!("SKIPPED: python3 is not installed; the fake Claude CLI needs it");
            return None;
        }
        let bin = s.path().join("fake-claude");
        std::fs::write(&bin, FAKE_CLAUDE).unwrap();
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        Some(Fake {
            bin,
            log: s.path().join("fake-claude.jsonl"),
        })
    }

    fn agent(&self, s: &Session, extra: &[(&str, &str)]) -> Agent {
        let mut env = vec![
            ("NANOCLAW_PROVIDER", "claude"),
            ("NANOCLAW_CLAUDE_BIN", self.bin.to_str().unwrap()),
            ("FAKE_CLAUDE_LOG", self.log.to_str().unwrap()),
            ("NANOCLAW_ADMIN_USER_IDS", "cli:admin"),
        ];
        env.extend_from_slice(extra);
        Agent::start(s, &env).ready()
    }

    fn events(&self, kind: &str) -> Vec<Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .filter(|v| v["event"] == kind)
            .collect()
    }

    fn args(start: &Value) -> Vec<String> {
        start["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().to_string())
            .collect()
    }
}

fn arg_after(args: &[String], flag: &str) -> Option<String> {
    args.iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

#[test]
fn session_is_saved_kept_alive_and_resumed_after_restart() {
    let mut s = Session::new();
    let Some(fake) = Fake::install(&s) else {
        return;
    };
    let mut agent = fake.agent(&s, &[("NANOCLAW_MODEL", "claude-test-model")]);
    s.send(Msg::chat("m1", "hello"));
    assert!(
        wait_until(T, || s.out_rows().len() == 1),
        "{}",
        agent.logs()
    );
    let out = s.out_rows();
    assert_eq!(out[0].text, "fake claude read 1 messages");
    assert_eq!(out[0].in_reply_to.as_deref(), Some("m1"));

    let starts = fake.events("start");
    assert_eq!(starts.len(), 1);
    let args = Fake::args(&starts[0]);
    for flag in ["-p", "--verbose"] {
        assert!(
            args.contains(&flag.to_string()),
            "{flag} missing in {args:?}"
        );
    }
    assert_eq!(
        arg_after(&args, "--input-format").as_deref(),
        Some("stream-json")
    );
    assert_eq!(
        arg_after(&args, "--output-format").as_deref(),
        Some("stream-json")
    );
    assert_eq!(
        arg_after(&args, "--model").as_deref(),
        Some("claude-test-model")
    );
    assert!(
        arg_after(&args, "--append-system-prompt")
            .unwrap()
            .contains("Your destination is `home`")
    );
    assert_eq!(arg_after(&args, "--resume"), None);
    assert_eq!(
        starts[0]["cwd"].as_str().map(PathBuf::from),
        Some(s.agent_dir.canonicalize().unwrap())
    );
    let session_id = format!("sess-{}", starts[0]["pid"]);
    assert_eq!(
        s.state("continuation:claude"),
        Some(session_id.clone()),
        "saved from system/init"
    );

    let inputs = fake.events("input");
    assert_eq!(
        (inputs[0]["type"].as_str(), inputs[0]["role"].as_str()),
        (Some("user"), Some("user"))
    );
    assert!(
        inputs[0]["text"]
            .as_str()
            .unwrap()
            .contains(">hello</message>")
    );

    // A second turn goes to the same process as a new user line.
    s.send(Msg::chat("m2", "again"));
    assert!(wait_until(T, || s.out_rows().len() == 2));
    assert_eq!(
        fake.events("start").len(),
        1,
        "process kept alive across turns"
    );
    assert_eq!(fake.events("input").len(), 2);

    // Stopping the agent closes the CLI's input; a new agent resumes the saved session.
    assert!(agent.terminate().success());
    assert!(
        wait_until(T, || fake.events("eof").len() == 1),
        "the CLI saw end of input"
    );
    let _agent = fake.agent(&s, &[]);
    s.send(Msg::chat("m3", "after restart"));
    assert!(wait_until(T, || s.out_rows().len() == 3));
    let starts = fake.events("start");
    assert_eq!(starts.len(), 2);
    assert_eq!(
        arg_after(&Fake::args(&starts[1]), "--resume"),
        Some(session_id.clone())
    );
    assert_eq!(s.state("continuation:claude"), Some(session_id));
}

#[test]
fn invalid_session_is_cleared_and_retried_fresh_once() {
    let mut s = Session::new();
    let Some(fake) = Fake::install(&s) else {
        return;
    };
    s.outbound()
        .execute(
            "INSERT INTO session_state (key, value, updated_at) VALUES ('continuation:claude', 'stale-session', '2026-01-01T00:00:00.000Z')",
            [],
        )
        .unwrap();
    let agent = fake.agent(&s, &[]);
    s.send(Msg::chat("m1", "hello"));
    assert!(
        wait_until(T, || s.out_rows().len() == 1),
        "{}",
        agent.logs()
    );
    assert_eq!(s.texts(), ["fake claude read 1 messages"]);
    let starts = fake.events("start");
    assert_eq!(starts.len(), 2);
    assert_eq!(
        arg_after(&Fake::args(&starts[0]), "--resume").as_deref(),
        Some("stale-session")
    );
    assert_eq!(arg_after(&Fake::args(&starts[1]), "--resume"), None);
    assert_eq!(
        s.state("continuation:claude"),
        Some(format!("sess-{}", starts[1]["pid"]))
    );
}

#[test]
fn admin_command_goes_raw_and_its_output_reaches_the_admin() {
    let mut s = Session::new();
    let Some(fake) = Fake::install(&s) else {
        return;
    };
    let _agent = fake.agent(&s, &[]);
    s.send(Msg::chat("m1", " /cost ").sender("cli:admin", "Admin"));
    assert!(wait_until(T, || s.out_rows().len() == 1));
    assert_eq!(fake.events("input")[0]["text"], "/cost");
    let out = s.out_rows();
    assert_eq!(out[0].text, "Total cost: $0.00");
    assert_eq!(out[0].in_reply_to.as_deref(), Some("m1"));
}

#[test]
fn error_results_and_crashes_become_error_replies_and_the_cli_restarts() {
    let mut s = Session::new();
    let Some(fake) = Fake::install(&s) else {
        return;
    };
    let _agent = fake.agent(&s, &[]);
    s.send(Msg::chat("m1", "explode"));
    assert!(wait_until(T, || s.out_rows().len() == 1));
    assert_eq!(s.texts(), ["Error: tool crashed"]);

    s.send(Msg::chat("m2", "die now"));
    assert!(wait_until(T, || s.out_rows().len() == 2));
    let text = &s.texts()[1];
    assert!(
        text.starts_with("Error: claude exited (exit status: 3"),
        "{text}"
    );
    assert!(text.contains("fatal: simulated crash"), "{text}");
    assert_eq!(fake.events("start").len(), 1);

    s.send(Msg::chat("m3", "are you back"));
    assert!(wait_until(T, || s.out_rows().len() == 3));
    let starts = fake.events("start");
    assert_eq!(starts.len(), 2, "restarted after the crash");
    assert_eq!(
        arg_after(&Fake::args(&starts[1]), "--resume"),
        Some(format!("sess-{}", starts[0]["pid"]))
    );
}

#[test]
fn destination_changes_restart_the_cli_with_the_new_system_prompt() {
    let mut s = Session::new();
    let Some(fake) = Fake::install(&s) else {
        return;
    };
    let _agent = fake.agent(&s, &[]);
    s.send(Msg::chat("m1", "one"));
    assert!(wait_until(T, || s.out_rows().len() == 1));
    s.destination(
        "team",
        Some("Team"),
        "channel",
        Some("slack"),
        Some("C1"),
        None,
    );
    s.send(Msg::chat("m2", "two"));
    assert!(wait_until(T, || s.out_rows().len() == 2));
    let starts = fake.events("start");
    assert_eq!(starts.len(), 2);
    let args = Fake::args(&starts[1]);
    assert!(
        arg_after(&args, "--append-system-prompt")
            .unwrap()
            .contains("`team` (Team)")
    );
    assert_eq!(
        arg_after(&args, "--resume"),
        Some(format!("sess-{}", starts[0]["pid"]))
    );
}

#[test]
fn a_missing_cli_is_an_error_reply_not_a_crash() {
    let mut s = Session::new();
    let agent = Agent::start(
        &s,
        &[
            ("NANOCLAW_PROVIDER", "claude"),
            ("NANOCLAW_CLAUDE_BIN", "/nonexistent/claude"),
        ],
    )
    .ready();
    s.send(Msg::chat("m1", "hello"));
    assert!(
        wait_until(T, || s.out_rows().len() == 1),
        "{}",
        agent.logs()
    );
    let text = &s.texts()[0];
    assert!(
        text.starts_with("Error: cannot start /nonexistent/claude"),
        "{text}"
    );
}

#[test]
fn sigterm_mid_turn_stops_the_cli_and_releases_the_claim() {
    let mut s = Session::new();
    let Some(fake) = Fake::install(&s) else {
        return;
    };
    let mut agent = fake.agent(&s, &[]);
    s.send(Msg::chat("m1", "hang forever"));
    assert!(wait_until(T, || fake.events("input").len() == 1));
    assert_eq!(s.ack("m1").as_deref(), Some("processing"));
    let pid = fake.events("start")[0]["pid"].as_i64().unwrap();
    let started = std::time::Instant::now();
    assert!(agent.terminate().success());
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(s.ack("m1"), None, "claim released");
    assert!(s.out_rows().is_empty());
    // SAFETY: signal 0 only checks whether the process exists.
    let alive = unsafe { libc::kill(i32::try_from(pid).unwrap(), 0) } == 0;
    assert!(!alive, "the CLI was left running");
}

#[test]
fn compaction_is_told_to_the_chat() {
    let mut s = Session::new();
    let Some(fake) = Fake::install(&s) else {
        return;
    };
    let _agent = fake.agent(&s, &[]);
    // Automatic compaction mid-turn: the note, then the answer, to the same chat.
    s.send(Msg::chat("m1", "a long story"));
    assert!(wait_until(T, || s.out_rows().len() == 2));
    let out = s.out_rows();
    assert_eq!(out[0].text, nanoclaw_agent_runner_note());
    assert_eq!(out[0].in_reply_to.as_deref(), Some("m1"));
    assert_eq!(out[1].text, "fake claude read 1 messages");

    // An admin's /compact gets the note too.
    s.send(Msg::chat("m2", "/compact").sender("cli:admin", "Admin"));
    assert!(wait_until(T, || s.out_rows().len() >= 3));
    let out = s.out_rows();
    assert_eq!(out[2].text, nanoclaw_agent_runner_note());
    assert_eq!(out[2].in_reply_to.as_deref(), Some("m2"));
}

/// The runner's note (the binary's constant; tests see the binary, not the crate).
fn nanoclaw_agent_runner_note() -> &'static str {
    "Context compacted: older messages were summarized."
}

#[test]
fn api_errors_are_classified_by_the_status_the_cli_reports() {
    let mut s = Session::new();
    let Some(fake) = Fake::install(&s) else {
        return;
    };
    let _agent = fake.agent(&s, &[]);
    s.send(Msg::chat("m1", "reject me"));
    assert!(wait_until(T, || s.out_rows().len() == 1));
    assert_eq!(
        s.texts(),
        ["The model API is rate-limiting this account (429). Try again in a minute."]
    );
}
