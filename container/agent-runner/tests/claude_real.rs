//! The claude provider with the REAL Claude Code CLI (the pinned npm build, fetched by
//! `scripts/claude-cli.sh`) against a fake Anthropic Messages API on 127.0.0.1, reached
//! through `NANOCLAW_MODEL_BASE_URL`. No container here (tests/docker.rs runs the image).
//!
//! Skipped, with a message, when the CLI cannot be fetched (no npm and no cached copy);
//! `NANOCLAW_REQUIRE_CLAUDE_CLI=1` (set by scripts/test.sh) makes that a failure.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Agent, Msg, Session, wait_until};
use nanoclaw_fake_anthropic::{FakeAnthropic, Recorded, Reply, Rule};
use serde_json::json;

const T: Duration = Duration::from_secs(30);
/// The key the runner gives the CLI when it talks to a proxy (`relay::PLACEHOLDER_KEY`);
/// the fake plays the proxy's upstream here, so it accepts exactly this.
const PLACEHOLDER_KEY: &str = "nanoclaw-proxy-placeholder";

fn claude_cli() -> Option<PathBuf> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/claude-cli.sh");
    let out = Command::new(script).output();
    let required = std::env::var_os("NANOCLAW_REQUIRE_CLAUDE_CLI").is_some();
    match out {
        Ok(o) if o.status.success() => {
            let path = String::from_utf8_lossy(&o.stdout).trim().to_string();
            Some(PathBuf::from(path))
        }
        other => {
            let why = match other {
                Ok(o) => String::from_utf8_lossy(&o.stderr).into_owned(),
                Err(e) => e.to_string(),
            };
            assert!(!required, "cannot fetch the Claude Code CLI: {why}");
            eprintln!(
                "SKIPPED: cannot fetch the Claude Code CLI ({why}); install npm to run this test"
            );
            None
        }
    }
}

struct Rig {
    cli: PathBuf,
    fake: FakeAnthropic,
    home: tempfile::TempDir,
}

impl Rig {
    fn new() -> Option<Rig> {
        let cli = claude_cli()?;
        let fake = FakeAnthropic::start(PLACEHOLDER_KEY).expect("start the fake API");
        Some(Rig {
            cli,
            fake,
            home: tempfile::tempdir().expect("home"),
        })
    }

    fn agent(&self, s: &Session) -> Agent {
        let base = self.fake.base_url();
        let mut env = vec![
            ("NANOCLAW_PROVIDER", "claude"),
            (
                "NANOCLAW_CLAUDE_BIN",
                self.cli.to_str().expect("utf-8 path"),
            ),
            ("NANOCLAW_MODEL_BASE_URL", base.as_str()),
            ("NANOCLAW_ADMIN_USER_IDS", "cli:admin"),
            // The CLI's state (conversations to resume) lives under HOME, as in a container.
            ("HOME", self.home.path().to_str().expect("utf-8 path")),
        ];
        // As root the CLI refuses bypassPermissions unless told it is sandboxed (containers
        // run it as uid 1000 instead).
        if unsafe { libc::geteuid() } == 0 {
            env.push(("IS_SANDBOX", "1"));
        }
        Agent::start(s, &env).ready()
    }

    /// The conversation's requests (the CLI's side requests offer no tools).
    fn turns(&self) -> Vec<Recorded> {
        self.fake
            .requests()
            .into_iter()
            .filter(Recorded::has_tools)
            .collect()
    }
}

fn say(text: &str) -> Reply {
    Reply::text(format!("<message to=\"home\">{text}</message>"))
}

fn wait_rows(s: &Session, n: usize, agent: &Agent) {
    assert!(
        wait_until(T, || s.out_rows().len() >= n),
        "expected {n} replies, got {:?}\n{}",
        s.texts(),
        agent.logs()
    );
}

#[test]
fn real_cli_answers_runs_tools_resumes_and_clears() {
    let Some(rig) = Rig::new() else {
        return;
    };
    let fake = &rig.fake;
    fake.push_rule(Rule::on_text("hello", say("Hi from the fake model")).with_tools());
    fake.push_rule(
        Rule::on_text(
            "run the tool",
            Reply::tool_use(
                "Bash",
                json!({ "command": "echo tool-output-$((40+2))", "description": "echo" }),
            ),
        )
        .with_tools()
        .times(1),
    );
    fake.push_rule(Rule::on_tool_result("tool-output-42", say("The tool said 42")).with_tools());
    fake.push_rule(Rule::always(say("noted")).with_tools());

    let mut s = Session::new();
    let mut agent = rig.agent(&s);

    // 1. A message gets the model's answer, delivered from its <message to> block.
    s.send(Msg::chat("m1", "hello there"));
    wait_rows(&s, 1, &agent);
    assert_eq!(s.texts(), vec!["Hi from the fake model"]);
    let first = rig.turns();
    assert!(!first.is_empty());
    assert_eq!(first[0].header("x-api-key"), Some(PLACEHOLDER_KEY));
    assert!(first[0].call.query.contains("beta=true"));

    // 2. A scripted Bash tool_use runs; its output is in the next request.
    s.send(Msg::chat("m2", "please run the tool"));
    wait_rows(&s, 2, &agent);
    assert_eq!(s.texts()[1], "The tool said 42");
    let with_result = rig.turns().into_iter().find(|r| {
        r.tool_results()
            .iter()
            .any(|t| t.contains("tool-output-42"))
    });
    assert!(
        with_result.is_some(),
        "the tool's output never reached the model"
    );

    // 3. A second message resumes: the request carries the earlier turns.
    s.send(Msg::chat("m3", "and one more"));
    wait_rows(&s, 3, &agent);
    let last = rig.turns().pop().expect("a request");
    let texts = last.user_texts().join("\n");
    assert!(
        texts.contains("hello there") && texts.contains("and one more"),
        "{texts}"
    );

    // 4. After a restart of nanoclaw-agent (a new container), the conversation resumes.
    assert!(agent.terminate().success());
    let continuation = s.state("continuation:claude").expect("continuation saved");
    let agent = rig.agent(&s);
    s.send(Msg::chat("m4", "after the restart"));
    wait_rows(&s, 4, &agent);
    let last = rig.turns().pop().expect("a request");
    let texts = last.user_texts().join("\n");
    assert!(
        texts.contains("hello there") && texts.contains("after the restart"),
        "{texts}"
    );
    assert!(
        last.tool_results()
            .iter()
            .any(|t| t.contains("tool-output-42")),
        "the resumed conversation has the tool result"
    );
    assert_eq!(
        s.state("continuation:claude").as_deref(),
        Some(continuation.as_str())
    );

    // 5. /clear starts fresh: the next request has no earlier turns.
    s.send(Msg::chat("m5", "/clear").sender("cli:admin", "Admin"));
    wait_rows(&s, 5, &agent);
    assert_eq!(s.texts()[4], "Session cleared.");
    s.send(Msg::chat("m6", "a fresh start"));
    wait_rows(&s, 6, &agent);
    let last = rig.turns().pop().expect("a request");
    let texts = last.user_texts().join("\n");
    assert!(texts.contains("a fresh start"), "{texts}");
    assert!(
        !texts.contains("hello there"),
        "old turns after /clear: {texts}"
    );
    assert!(last.tool_results().is_empty());

    // No request carried anything but the placeholder key.
    for r in fake.requests() {
        assert_eq!(r.header("x-api-key"), Some(PLACEHOLDER_KEY));
        assert!(r.header("authorization").is_none());
    }
}

/// The tool names a request offered the model.
fn offered(r: &Recorded) -> Vec<String> {
    r.body["tools"]
        .as_array()
        .map(|t| {
            t.iter()
                .filter_map(|t| t["name"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn real_cli_calls_the_runners_mcp_tools() {
    let Some(rig) = Rig::new() else {
        return;
    };
    let fake = &rig.fake;
    fake.push_rule(
        Rule::on_text(
            "tell work",
            Reply::tool_use(
                "mcp__nanoclaw__send_message",
                json!({ "to": "work", "text": "from the tool" }),
            ),
        )
        .with_tools()
        .times(1),
    );
    fake.push_rule(Rule::on_tool_result("Queued for work", say("told work")).with_tools());
    fake.push_rule(
        Rule::on_text(
            "make a researcher",
            Reply::tool_use(
                "mcp__nanoclaw__create_agent",
                json!({ "name": "Researcher", "instructions": "Find sources." }),
            ),
        )
        .with_tools()
        .times(1),
    );
    fake.push_rule(Rule::on_tool_result("Creation of agent", say("asked the host")).with_tools());
    fake.push_rule(Rule::always(say("ok")).with_tools());

    let mut s = Session::new();
    s.destination(
        "work",
        None,
        "channel",
        Some("cli"),
        Some("work-room"),
        None,
    );
    let agent = rig.agent(&s);

    // A non-admin: the tools are offered, create_agent is not; the tool's row is written.
    s.send(Msg::chat("m1", "please tell work").sender("cli:bob", "Bob"));
    wait_rows(&s, 2, &agent);
    let rows = s.out_rows();
    let tool_row = rows
        .iter()
        .find(|r| r.platform_id.as_deref() == Some("work-room"))
        .unwrap_or_else(|| panic!("no row to work: {:?}\n{}", s.texts(), agent.logs()));
    assert_eq!(tool_row.text, "from the tool");
    assert_eq!(tool_row.in_reply_to.as_deref(), Some("m1"));
    assert!(
        s.texts().contains(&"told work".to_string()),
        "{:?}",
        s.texts()
    );
    let first = rig.turns().into_iter().next().expect("a request");
    let tools = offered(&first);
    assert!(
        tools.iter().any(|t| t == "mcp__nanoclaw__send_message"),
        "{tools:?}"
    );
    assert!(
        tools.iter().any(|t| t == "mcp__nanoclaw__schedule_task"),
        "{tools:?}"
    );
    assert!(
        !tools.iter().any(|t| t == "mcp__nanoclaw__create_agent"),
        "{tools:?}"
    );

    // An admin: the CLI restarts with create_agent offered, and the call becomes the
    // host's system action.
    s.send(Msg::chat("m2", "make a researcher").sender("cli:admin", "Admin"));
    assert!(
        wait_until(T, || s.texts().contains(&"asked the host".to_string())),
        "{:?}\n{}",
        s.texts(),
        agent.logs()
    );
    let last = rig.turns().pop().expect("a request");
    assert!(
        offered(&last)
            .iter()
            .any(|t| t == "mcp__nanoclaw__create_agent")
    );
    let system: Vec<_> = s
        .out_rows()
        .into_iter()
        .filter(|r| r.kind == "system")
        .collect();
    assert_eq!(system.len(), 1, "{system:?}");
    assert_eq!(system[0].in_reply_to.as_deref(), Some("m2"));
    let action: serde_json::Value = s
        .outbound()
        .query_row(
            "SELECT content FROM messages_out WHERE kind = 'system'",
            [],
            |r| r.get::<_, String>(0),
        )
        .map(|c| serde_json::from_str(&c).unwrap())
        .unwrap();
    assert_eq!(action["action"], "create_agent");
    assert_eq!(action["name"], "Researcher");
}

#[test]
fn real_cli_compact_is_told_to_the_chat() {
    let Some(rig) = Rig::new() else {
        return;
    };
    rig.fake.push_rule(Rule::always(say("fine")).with_tools());
    let mut s = Session::new();
    let agent = rig.agent(&s);
    s.send(Msg::chat("m1", "remember the number 7"));
    wait_rows(&s, 1, &agent);
    s.send(Msg::chat("m2", "/compact").sender("cli:admin", "Admin"));
    assert!(
        wait_until(T, || s
            .texts()
            .iter()
            .any(|t| t == "Context compacted: older messages were summarized.")),
        "{:?}\n{}",
        s.texts(),
        agent.logs()
    );
    // The note is the command's whole answer (the CLI's own result for /compact is empty;
    // a command's rows are written in one transaction).
    assert_eq!(
        s.texts(),
        ["fine", "Context compacted: older messages were summarized."]
    );
}

/// An API failure reaches the chat as one actionable line, quickly (the CLI's own retries
/// are bounded by the runner).
fn failure_reaches_chat(reply: Reply, expect: &str, limit: Duration) {
    let Some(rig) = Rig::new() else {
        return;
    };
    rig.fake.push_rule(Rule::always(reply));
    let mut s = Session::new();
    let agent = rig.agent(&s);
    let started = Instant::now();
    s.send(Msg::chat("m1", "hello"));
    assert!(
        wait_until(limit + Duration::from_secs(5), || !s.out_rows().is_empty()),
        "no reply\n{}",
        agent.logs()
    );
    let took = started.elapsed();
    let text = s.texts().remove(0);
    eprintln!("{expect}: {took:?}: {text}");
    assert!(text.contains(expect), "{text}\n{}", agent.logs());
    assert!(took < limit, "took {took:?}");
}

#[test]
fn real_cli_bad_key_is_explained_within_seconds() {
    failure_reaches_chat(
        Reply::error(401, "authentication_error", "invalid x-api-key"),
        "did not accept NanoClaw's credential",
        Duration::from_secs(10),
    );
}

#[test]
fn real_cli_overloaded_is_explained() {
    failure_reaches_chat(
        Reply::error(529, "overloaded_error", "Overloaded"),
        "overloaded",
        Duration::from_secs(20),
    );
}

#[test]
fn real_cli_rate_limit_is_explained() {
    failure_reaches_chat(
        // A message that names no rate limit: the status the CLI reports classifies it.
        Reply::error(429, "rate_limit_error", "slow down"),
        "rate-limiting",
        Duration::from_secs(20),
    );
}

#[test]
fn real_cli_unreachable_api_is_explained() {
    let Some(cli) = claude_cli() else {
        return;
    };
    // A port nothing listens on: bind one, then let it go.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let base = format!("http://127.0.0.1:{port}");
    let home = tempfile::tempdir().expect("home");
    let mut s = Session::new();
    let mut env = vec![
        ("NANOCLAW_PROVIDER", "claude"),
        ("NANOCLAW_CLAUDE_BIN", cli.to_str().expect("utf-8")),
        ("NANOCLAW_MODEL_BASE_URL", base.as_str()),
        ("HOME", home.path().to_str().expect("utf-8")),
    ];
    if unsafe { libc::geteuid() } == 0 {
        env.push(("IS_SANDBOX", "1"));
    }
    let agent = Agent::start(&s, &env).ready();
    let started = Instant::now();
    s.send(Msg::chat("m1", "hello"));
    assert!(
        wait_until(Duration::from_secs(30), || !s.out_rows().is_empty()),
        "no reply\n{}",
        agent.logs()
    );
    let text = s.texts().remove(0);
    eprintln!("unreachable: {:?}: {text}", started.elapsed());
    assert!(
        text.contains("cannot reach the model API"),
        "{text}\n{}",
        agent.logs()
    );
}

#[test]
fn real_cli_auto_compaction_is_told_to_the_chat() {
    let Some(rig) = Rig::new() else {
        return;
    };
    rig.fake.push_rule(Rule::always(say("fine")).with_tools());
    // A context nearly full: the CLI compacts before its next request.
    rig.fake.set_usage(nanoclaw_fake_anthropic::Usage {
        input_tokens: 195_000,
        cache_creation_input_tokens: 0,
        cache_read_input_tokens: 0,
        output_tokens: 10,
    });
    let mut s = Session::new();
    let agent = rig.agent(&s);
    s.send(Msg::chat("m1", "first"));
    wait_rows(&s, 1, &agent);
    s.send(Msg::chat("m2", "second"));
    assert!(
        wait_until(T, || s.out_rows().len() >= 3),
        "{:?}\n{}",
        s.texts(),
        agent.logs()
    );
    // The note first, then the answer, both to the chat the turn came from.
    assert_eq!(
        s.texts(),
        [
            "fine",
            "Context compacted: older messages were summarized.",
            "fine"
        ]
    );
    assert_eq!(s.out_rows()[1].in_reply_to.as_deref(), Some("m2"));
}
