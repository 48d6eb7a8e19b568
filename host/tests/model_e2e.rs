//! A real model answers, the whole way: the daemon, a real container with no network, the
//! host's model proxy (the only way out, holding the key), and a fake model API on 127.0.0.1.
//!
//! - Claude: the REAL Claude Code CLI (the pinned npm package, in the image
//!   `container/build.sh --claude` builds offline) against a fake Anthropic Messages API: a
//!   chat message gets the model's answer; a scripted Bash `tool_use` runs inside the
//!   container and its output goes back to the model; the next message continues the same
//!   conversation, also after the daemon restarted the container; a long answer keeps the
//!   chat's typing indicator up; the key is nowhere in the container and every request
//!   reached the API with the host's key; anything but the model API is refused at the socket.
//! - The same journey for the OpenAI-compatible provider against a fake chat-completions API.

mod common;
mod harness;

use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use harness::testchat::{ECHO, Setup};
use harness::{Daemon, claude_image, cli_ok, containers, image, require_engine, wait_until};
use nanoclaw_fake_anthropic::{FakeAnthropic, Reply, Rule};
use serde_json::json;

const ANTHROPIC_KEY: &str = "sk-ant-e2e-HOST-ONLY-5d1c";

fn say(text: &str) -> String {
    format!("<message to=\"room\">{text}</message>")
}

/// The reply texts delivered to `chat`, waiting until there are `n`.
fn replies(s: &Setup, daemon: &Daemon, chat: &str, n: usize) -> Vec<String> {
    let ok = wait_until(Duration::from_secs(90), || s.delivered_to(chat).len() >= n);
    assert!(
        ok,
        "{n} replies expected, got {:?}\n{}",
        s.delivered_to(chat),
        daemon.log()
    );
    s.delivered_to(chat)
}

/// The model-proxy socket of the one running session of `data`.
fn proxy_socket(data: &Path) -> PathBuf {
    let dir = std::fs::read_dir(data.join("proxy"))
        .expect("proxy dir")
        .flatten()
        .next()
        .expect("a session's proxy dir")
        .path();
    dir.join("model.sock")
}

/// Sends one request to the proxy socket from the host side; returns the status line.
fn status_at(socket: &Path, head: &str) -> String {
    let mut s = std::os::unix::net::UnixStream::connect(socket).expect("connect");
    write!(
        s,
        "{head}\r\nhost: x\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{{}}"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out.lines().next().unwrap_or_default().to_string()
}

/// Nothing Docker knows about the install's containers holds `secret`.
fn assert_no_secret_in_containers(data: &Path, secret: &str) {
    let ids = containers(data);
    assert!(!ids.is_empty(), "a running container to inspect");
    for id in ids {
        let out = std::process::Command::new("docker")
            .args(["inspect", &id])
            .output()
            .unwrap();
        assert!(out.status.success());
        let inspect = String::from_utf8_lossy(&out.stdout);
        assert!(!inspect.contains(secret), "the key is in docker inspect");
        // And the container's own view: its environment and the CLI's state.
        let out = std::process::Command::new("docker")
            .args(["exec", &id, "sh", "-c", "env; cat /proc/1/environ; grep -rs . /workspace/.home /run/nanoclaw 2>/dev/null | head -c 2000000"])
            .output()
            .unwrap();
        let seen = String::from_utf8_lossy(&out.stdout);
        assert!(
            !seen.contains(secret),
            "the key is visible inside the container"
        );
    }
}

#[test]
fn claude_code_answers_through_the_proxy_runs_tools_and_resumes() {
    if !require_engine("claude_code_answers_through_the_proxy_runs_tools_and_resumes") {
        return;
    }
    let Some(claude) = claude_image() else {
        return;
    };
    let fake = FakeAnthropic::start(ANTHROPIC_KEY).expect("fake Anthropic API");
    fake.push_rule(
        Rule::on_text(
            "run the tool",
            Reply::tool_use(
                "Bash",
                json!({ "command": "echo tool-ran-as-$(id -u)", "description": "say who runs" }),
            ),
        )
        .with_tools()
        .times(1),
    );
    fake.push_rule(
        Rule::on_tool_result("tool-ran-as-1000", Reply::text(say("the tool ran as 1000")))
            .with_tools(),
    );
    fake.push_rule(
        Rule::on_text("take your time", Reply::text(say("slow but sure")))
            .with_tools()
            .chunk_delay(Duration::from_secs(4)),
    );
    fake.push_rule(Rule::on_text("after the restart", Reply::text(say("still here"))).with_tools());
    fake.push_rule(Rule::always(Reply::text(say("hello from Claude"))).with_tools());

    let s = Setup::new();
    std::fs::write(
        s.data.join(".env"),
        format!(
            "ANTHROPIC_API_KEY={ANTHROPIC_KEY}\nANTHROPIC_BASE_URL={}\n",
            fake.base_url()
        ),
    )
    .unwrap();
    s.agent("andy", "room", ECHO);
    cli_ok(
        &s.data,
        &[
            "groups",
            "set",
            "andy",
            "--provider",
            "claude",
            "--image",
            claude,
        ],
    );
    let mut daemon = Daemon::start(
        &s.data,
        &s.plugins_toml(),
        &["--webhook-listen", &format!("127.0.0.1:{}", s.port)],
    );

    s.say("room", "alice", "m1", "hello");
    assert_eq!(replies(&s, &daemon, "room", 1), ["hello from Claude"]);

    s.say("room", "alice", "m2", "please run the tool");
    assert_eq!(replies(&s, &daemon, "room", 2)[1], "the tool ran as 1000");
    let with_result = fake
        .requests()
        .into_iter()
        .find(|r| {
            r.tool_results()
                .iter()
                .any(|t| t.contains("tool-ran-as-1000"))
        })
        .expect("the tool's output went back to the model");
    assert!(
        with_result.user_texts().join("\n").contains("hello"),
        "same conversation"
    );

    // The host's key reached the API on every request; the agent's placeholder never did.
    let requests = fake.requests();
    assert!(!requests.is_empty());
    for r in &requests {
        assert_eq!(r.header("x-api-key"), Some(ANTHROPIC_KEY));
    }
    assert_no_secret_in_containers(&s.data, ANTHROPIC_KEY);
    // The socket forwards the model API only.
    let socket = proxy_socket(&s.data);
    assert!(status_at(&socket, "GET /v1/models HTTP/1.1").contains(" 403"));
    assert!(status_at(&socket, "POST /v1/files HTTP/1.1").contains(" 403"));

    // A long answer: "typing…" stays up past the unconditional grace, while the answer
    // streams through the proxy.
    let typing_calls = || s.calls("set_typing").len();
    let before = typing_calls();
    let sent = Instant::now();
    s.say("room", "alice", "m3", "take your time");
    assert_eq!(replies(&s, &daemon, "room", 3)[2], "slow but sure");
    let took = sent.elapsed();
    let typing = typing_calls() - before;
    eprintln!("slow answer took {took:?}; typing shown {typing} times meanwhile");
    assert!(
        took > Duration::from_secs(25),
        "the fake was not slow: {took:?}"
    );
    // Refreshed every 4 s; the unconditional grace covers only the first 15 s.
    assert!(
        typing as u64 >= took.as_secs() / 4 - 1,
        "typing was not kept up during a {took:?} answer: {typing} times"
    );

    // A restart stops the container; the next message resumes the conversation in a new one.
    daemon.restart();
    s.say("room", "alice", "m4", "after the restart");
    assert_eq!(replies(&s, &daemon, "room", 4)[3], "still here");
    let last = fake
        .requests()
        .into_iter()
        .rfind(|r| r.has_tools())
        .expect("requests");
    let texts = last.user_texts().join("\n");
    assert!(
        texts.contains("hello") && texts.contains("after the restart"),
        "not resumed: {texts}"
    );

    // The tokens were counted for the agent.
    let usage: serde_json::Value =
        serde_json::from_str(&cli_ok(&s.data, &["--json", "usage", "--agent", "andy"])).unwrap();
    assert!(usage[0]["requests"].as_u64().unwrap_or(0) >= 4, "{usage}");
}

const OPENAI_KEY: &str = "sk-openai-e2e-HOST-ONLY-77aa";

#[test]
fn an_openai_compatible_model_answers_through_the_proxy_and_resumes() {
    use nanoclaw_fake_openai::{FakeOpenAi, Options, Rule as OpenAiRule};
    if !require_engine("an_openai_compatible_model_answers_through_the_proxy_and_resumes") {
        return;
    }
    let fake = FakeOpenAi::start(Options::default().with_api_key(OPENAI_KEY).with_models(&[]))
        .expect("fake OpenAI API");
    fake.script(OpenAiRule::matching("second").reply(&say("second answer")));
    fake.script(OpenAiRule::always().reply(&say("hello from the open model")));

    let s = Setup::new();
    std::fs::write(
        s.data.join(".env"),
        format!(
            "OPENAI_API_KEY={OPENAI_KEY}\nOPENAI_BASE_URL={}/v1\nOPENAI_MODEL=llama-e2e\n",
            fake.base_url()
        ),
    )
    .unwrap();
    s.agent("olga", "room", ECHO);
    cli_ok(
        &s.data,
        &[
            "groups",
            "set",
            "olga",
            "--provider",
            "openai",
            "--image",
            image(),
        ],
    );
    let mut daemon = Daemon::start(
        &s.data,
        &s.plugins_toml(),
        &["--webhook-listen", &format!("127.0.0.1:{}", s.port)],
    );
    s.say("room", "alice", "m1", "hello");
    assert_eq!(
        replies(&s, &daemon, "room", 1),
        ["hello from the open model"]
    );
    assert_no_secret_in_containers(&s.data, OPENAI_KEY);
    let socket = proxy_socket(&s.data);
    assert!(status_at(&socket, "POST /v1/messages HTTP/1.1").contains(" 403"));

    // Across a restart (a new container), the conversation goes on.
    daemon.restart();
    s.say("room", "alice", "m2", "the second one");
    assert_eq!(replies(&s, &daemon, "room", 2)[1], "second answer");
    let completions = fake.completions();
    let last = completions.last().expect("requests");
    assert_eq!(
        last.header("authorization"),
        Some(format!("Bearer {OPENAI_KEY}").as_str())
    );
    assert_eq!(last.body["model"], "llama-e2e");
    let said: Vec<String> = last.messages().into_iter().map(|(_, t)| t).collect();
    assert!(
        said.iter().any(|t| t.contains("hello"))
            && said.iter().any(|t| t.contains("hello from the open model")),
        "the first exchange is in the second request: {said:?}"
    );
    let usage: serde_json::Value =
        serde_json::from_str(&cli_ok(&s.data, &["--json", "usage", "--agent", "olga"])).unwrap();
    assert_eq!(usage[0]["requests"], 2, "{usage}");
}
