//! The openai provider against fake-openai on 127.0.0.1 (through `NANOCLAW_MODEL_BASE_URL`,
//! as the host's proxy would serve it through the relay).

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{Agent, Msg, Session, wait_until};
use nanoclaw_fake_openai::{DEFAULT_MODEL, FakeOpenAi, Fault, Options, Rule};

const T: Duration = Duration::from_secs(10);

fn start(s: &Session, fake: &FakeOpenAi) -> Agent {
    start_with(s, &fake.base_url())
}

fn start_with(s: &Session, base_url: &str) -> Agent {
    Agent::start(
        s,
        &[
            ("NANOCLAW_PROVIDER", "openai"),
            ("NANOCLAW_MODEL", DEFAULT_MODEL),
            ("NANOCLAW_MODEL_BASE_URL", base_url),
            ("NANOCLAW_ADMIN_USER_IDS", "cli:admin"),
            ("NANOCLAW_ASSISTANT_NAME", "Andy"),
        ],
    )
    .ready()
}

fn replies(s: &Session, n: usize) -> bool {
    wait_until(T, || s.out_rows().len() >= n)
}

fn conversation_file(s: &Session, id: &str) -> PathBuf {
    s.path().join(".nanoclaw/openai").join(format!("{id}.json"))
}

#[test]
fn replies_are_routed_history_is_sent_and_no_key_leaves_the_runner() {
    let fake = FakeOpenAi::start(Options::default()).unwrap();
    fake.script(Rule::matching("hello").reply(
        "<internal>they greet me</internal>Thinking it over.\
         <message to=\"{from}\">Hi there, I am Andy.</message>",
    ));
    fake.script(Rule::matching("again").reply("<message to=\"home\">Still here.</message>"));
    let mut s = Session::new();
    let mut agent = start(&s, &fake);

    s.send(Msg::chat("m1", "hello"));
    assert!(replies(&s, 1), "no reply:\n{}", agent.logs());
    let out = s.out_rows();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].text, "Hi there, I am Andy.");
    assert_eq!(out[0].in_reply_to.as_deref(), Some("m1"));
    assert!(
        wait_until(T, || agent.logs().contains("Thinking it over.")),
        "scratchpad is logged"
    );
    assert!(
        !s.texts().iter().any(|t| t.contains("greet")),
        "<internal> stays private"
    );

    let id = s.state("continuation:openai").expect("continuation stored");
    assert!(conversation_file(&s, &id).is_file());

    s.send(Msg::chat("m2", "again"));
    assert!(replies(&s, 2), "{}", agent.logs());
    assert_eq!(s.texts()[1], "Still here.");

    let reqs = fake.completions();
    assert_eq!(reqs.len(), 2);
    for r in &reqs {
        assert_eq!(
            r.header("authorization"),
            None,
            "the runner never sends a key"
        );
        assert_eq!(r.body["model"], DEFAULT_MODEL);
        assert_eq!(r.body["stream"], true);
        assert_eq!(r.body["stream_options"]["include_usage"], true);
    }
    let first = reqs[0].messages();
    assert_eq!(first.len(), 2);
    assert_eq!(first[0].0, "system");
    assert!(
        first[0].1.contains("<message to=\"NAME\">")
            && first[0].1.contains("# You are Andy")
            && first[0].1.contains("`home` (Home)"),
        "{}",
        first[0].1
    );
    assert!(first[1].1.contains(">hello</message>"), "{}", first[1].1);
    // The second request carries the first exchange, the model's raw reply included.
    let second = reqs[1].messages();
    let roles: Vec<&str> = second.iter().map(|(r, _)| r.as_str()).collect();
    assert_eq!(roles, ["system", "user", "assistant", "user"]);
    assert_eq!(second[1].1, first[1].1);
    assert!(second[2].1.contains("<internal>they greet me</internal>"));
    assert!(second[3].1.contains(">again</message>"));
    assert!(
        wait_until(T, || agent.logs().contains("model usage")),
        "usage is logged"
    );
    assert_eq!(s.ack("m2").as_deref(), Some("completed"));
    assert!(agent.terminate().success());
}

#[test]
fn a_restarted_runner_resumes_and_clear_starts_fresh() {
    let fake = FakeOpenAi::start(Options::default()).unwrap();
    fake.script(Rule::always().reply("<message to=\"{from}\">ok: {text}</message>"));
    let mut s = Session::new();
    let mut agent = start(&s, &fake);
    s.send(Msg::chat("m1", "remember the number 7"));
    assert!(replies(&s, 1), "{}", agent.logs());
    let id = s.state("continuation:openai").expect("continuation");
    assert!(agent.terminate().success());

    let mut agent = start(&s, &fake);
    s.send(Msg::chat("m2", "which number?"));
    assert!(replies(&s, 2), "{}", agent.logs());
    assert!(wait_until(T, || agent
        .logs()
        .contains("resumed conversation")));
    assert_eq!(s.state("continuation:openai").as_deref(), Some(id.as_str()));
    let second = fake.completions()[1].messages();
    assert_eq!(second.len(), 4, "system, first exchange, new message");
    assert!(second[1].1.contains("remember the number 7"));
    assert_eq!(
        second[2].1,
        "<message to=\"home\">ok: remember the number 7</message>"
    );

    // /clear: answered by the runner, never sent to the model.
    s.send(Msg::chat("m3", "/clear").sender("cli:admin", "Admin"));
    assert!(replies(&s, 3));
    assert_eq!(s.texts()[2], "Session cleared.");
    assert_eq!(fake.completions().len(), 2);
    s.send(Msg::chat("m4", "fresh start"));
    assert!(replies(&s, 4), "{}", agent.logs());
    let third = fake.completions()[2].messages();
    assert_eq!(third.len(), 2, "only the system prompt and the new message");
    let new_id = s.state("continuation:openai").expect("continuation");
    assert_ne!(new_id, id);

    // Other admin commands are answered without the model.
    s.send(Msg::chat("m5", "/files").sender("cli:admin", "Admin"));
    assert!(replies(&s, 5));
    assert_eq!(
        s.texts()[4],
        "The /files command is not available with the openai provider."
    );
    assert_eq!(fake.completions().len(), 3);

    // A garbage conversation file: the next runner starts fresh with a warning.
    assert!(agent.terminate().success());
    std::fs::write(conversation_file(&s, &new_id), b"\0\0not json").unwrap();
    let agent = start(&s, &fake);
    s.send(Msg::chat("m6", "still there?"));
    assert!(replies(&s, 6), "{}", agent.logs());
    assert!(wait_until(T, || agent
        .logs()
        .contains("cannot resume the conversation")));
    assert_eq!(fake.completions()[3].messages().len(), 2);
    assert_eq!(s.texts()[5], "ok: still there?");
}

#[test]
fn api_failures_reach_the_chat_as_one_line() {
    let fake = FakeOpenAi::start(Options::default().with_api_key("sk-upstream")).unwrap();
    let mut s = Session::new();
    let agent = start(&s, &fake);
    s.send(Msg::chat("m1", "hi"));
    assert!(replies(&s, 1), "{}", agent.logs());
    let line = &s.texts()[0];
    assert!(
        line.contains("(401)") && line.contains("nanoclaw doctor"),
        "{line}"
    );
    assert_eq!(fake.completions()[0].header("authorization"), None);

    let fake = FakeOpenAi::start(Options::default()).unwrap();
    fake.script(Rule::matching("boom").error(
        500,
        Rule::error_body("The server had an error", "server_error", None),
    ));
    let mut s = Session::new();
    let agent = start(&s, &fake);
    s.send(Msg::chat("m1", "boom"));
    assert!(replies(&s, 1), "{}", agent.logs());
    assert_eq!(
        s.texts()[0],
        "Error: the model API answered HTTP 500: The server had an error"
    );
    // A dropped connection mid-request.
    fake.fail_next(1, Fault::drop_connection());
    s.send(Msg::chat("m2", "hello"));
    assert!(replies(&s, 2), "{}", agent.logs());
    assert!(
        s.texts()[1].starts_with("Error: the model API closed the connection"),
        "{}",
        s.texts()[1]
    );
    // The conversation did not record the failed exchanges.
    s.send(Msg::chat("m3", "hello again"));
    assert!(replies(&s, 3), "{}", agent.logs());
    let last = fake.completions().pop().unwrap().messages();
    assert_eq!(last.len(), 2, "{last:?}");
}

#[test]
fn cost_compact_and_a_full_context() {
    let fake = FakeOpenAi::start(Options::default()).unwrap();
    fake.script(Rule::matching("too long").times(1).error(
        400,
        Rule::error_body(
            "This model's maximum context length is 8192 tokens. However, your messages \
                 resulted in 9000 tokens.",
            "invalid_request_error",
            Some("context_length_exceeded"),
        ),
    ));
    fake.script(Rule::always().reply("<message to=\"{from}\">ok: {text}</message>"));
    let mut s = Session::new();
    let agent = start(&s, &fake);
    for (i, text) in ["one", "two", "three", "four"].iter().enumerate() {
        s.send(Msg::chat(&format!("m{i}"), text));
        assert!(replies(&s, i + 1), "{}", agent.logs());
    }
    s.send(Msg::chat("c1", "/cost").sender("cli:admin", "Admin"));
    assert!(replies(&s, 5));
    let cost = &s.texts()[4];
    assert!(
        cost.starts_with("This conversation: 4 requests, ") && cost.contains("cached"),
        "{cost}"
    );
    // A context overflow is retried once with the older half of the history left out.
    s.send(Msg::chat("m5", "this is too long"));
    assert!(replies(&s, 6), "{}", agent.logs());
    assert_eq!(s.texts()[5], "ok: this is too long");
    let reqs = fake.completions();
    assert_eq!(reqs.len(), 6);
    assert_eq!(reqs[4].messages().len(), 1 + 8 + 1);
    let retried = reqs[5].messages().len();
    assert!(retried < 10 && retried.is_multiple_of(2), "{retried}");
    assert!(wait_until(T, || agent
        .logs()
        .contains("retrying with less history")));
    // /compact drops the older half for good.
    s.send(Msg::chat("c2", "/compact").sender("cli:admin", "Admin"));
    assert!(replies(&s, 7));
    assert!(
        s.texts()[6].starts_with("Compacted: dropped the "),
        "{}",
        s.texts()[6]
    );
    s.send(Msg::chat("m6", "after"));
    assert!(replies(&s, 8), "{}", agent.logs());
    let after = fake.completions().pop().unwrap().messages().len();
    assert!(after < retried + 2, "{after} vs {retried}");
    s.send(Msg::chat("c3", "/context").sender("cli:admin", "Admin"));
    assert!(replies(&s, 9));
    assert!(
        s.texts()[8].starts_with("The conversation holds "),
        "{}",
        s.texts()[8]
    );
    assert_eq!(
        fake.completions().len(),
        7,
        "commands never reach the model"
    );
}

#[test]
fn an_unreachable_api_is_explained() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut s = Session::new();
    let agent = start_with(&s, &format!("http://127.0.0.1:{port}"));
    s.send(Msg::chat("m1", "anyone?"));
    assert!(replies(&s, 1), "{}", agent.logs());
    assert_eq!(
        s.texts()[0],
        "NanoClaw cannot reach the model API. Operator: check the host's network and run \
         `nanoclaw doctor`."
    );
}

#[test]
fn shutdown_interrupts_a_slow_generation_and_chunks_keep_the_heartbeat() {
    let fake = FakeOpenAi::start(Options::default()).unwrap();
    fake.script(
        Rule::always()
            .reply("<message to=\"home\">one two three four five six seven eight</message>")
            .delay(Duration::from_millis(400)),
    );
    let mut s = Session::new();
    let mut agent = start(&s, &fake);
    let hb = s.path().join(".heartbeat");
    s.send(Msg::chat("m1", "slowly"));
    assert!(fake.wait_for_completions(1, T));
    let mtime = || std::fs::metadata(&hb).and_then(|m| m.modified()).ok();
    std::thread::sleep(Duration::from_millis(300));
    let before = mtime();
    std::thread::sleep(Duration::from_millis(900));
    assert_ne!(mtime(), before, "streamed chunks touch the heartbeat");
    let started = Instant::now();
    let status = agent.terminate();
    assert!(status.success());
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "took {:?}",
        started.elapsed()
    );
    assert!(s.out_rows().is_empty());
}

#[test]
fn configuration_errors_exit_2() {
    let s = Session::new();
    for (env, var) in [
        (vec![("NANOCLAW_PROVIDER", "openai")], "NANOCLAW_MODEL"),
        (
            vec![
                ("NANOCLAW_PROVIDER", "openai"),
                ("NANOCLAW_MODEL", "m"),
                ("NANOCLAW_MODEL_BASE_URL", "https://api.openai.com"),
            ],
            "NANOCLAW_MODEL_BASE_URL",
        ),
        (
            vec![("NANOCLAW_PROVIDER", "openai"), ("NANOCLAW_MODEL", "m")],
            "NANOCLAW_MODEL_SOCKET",
        ),
    ] {
        let mut agent = Agent::start(&s, &env);
        let status = agent.wait_exit(T).expect("exits");
        assert_eq!(status.code(), Some(2), "{env:?}");
        assert!(agent.logs().contains(var), "{}", agent.logs());
    }
}
