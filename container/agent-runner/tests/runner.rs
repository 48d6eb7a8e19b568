//! The real `nanoclaw-agent` binary with the mock provider, against temp session directories.

mod common;

use std::time::{Duration, Instant};

use common::{Agent, Msg, Session, wait_until};
use nanoclaw_schema::session::INBOUND_SCHEMA_VERSION;

const T: Duration = Duration::from_secs(10);

fn replies(s: &Session, n: usize) -> bool {
    wait_until(T, || s.out_rows().len() >= n)
}

#[test]
fn single_message_gets_one_reply_routed_to_its_origin() {
    let mut s = Session::new();
    let mut agent = Agent::mock(&s, &[]).ready();
    let seq = s.send(Msg::chat("m1", "hello").from("cli", "local", Some("thread-7")));
    assert!(replies(&s, 1), "no reply:\n{}", agent.logs());
    let out = s.out_rows();
    assert_eq!(out.len(), 1);
    let o = &out[0];
    assert_eq!(o.text, "Mock agent: you said \"hello\"");
    assert_eq!(o.kind, "chat");
    assert_eq!(
        (o.channel_type.as_deref(), o.platform_id.as_deref()),
        (Some("cli"), Some("local"))
    );
    assert_eq!(o.thread_id.as_deref(), Some("thread-7"));
    assert_eq!(o.in_reply_to.as_deref(), Some("m1"));
    assert_eq!(o.seq, seq + 1, "odd seq right above the inbound one");
    assert!(wait_until(T, || s.ack("m1").as_deref() == Some("completed")));
    assert!(s.path().join(".heartbeat").exists());

    let rec = s.recorded();
    assert_eq!(rec.len(), 1);
    let input = rec[0]["input"].as_str().unwrap();
    assert!(
        input.starts_with(
            "<context timezone=\"UTC\" />\n<message id=\"2\" from=\"home\" sender=\"Alice\""
        ),
        "{input}"
    );
    let sys = rec[0]["system_prompt"].as_str().unwrap();
    assert!(
        sys.contains("# You are Andy") && sys.contains("Your destination is `home` (Home)"),
        "{sys}"
    );
    assert!(agent.terminate().success());
}

#[test]
fn a_batch_of_two_is_one_turn() {
    let mut s = Session::new();
    s.send(Msg::chat("m1", "first"));
    s.send(Msg::chat("m2", "second"));
    let _agent = Agent::mock(&s, &[]).ready();
    assert!(replies(&s, 1));
    std::thread::sleep(Duration::from_millis(200));
    let out = s.out_rows();
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].text, "Mock agent: you said \"second\"");
    assert_eq!(
        out[0].in_reply_to.as_deref(),
        Some("m2"),
        "threaded under the newest message from there"
    );
    let rec = s.recorded();
    assert_eq!(rec.len(), 1);
    let input = rec[0]["input"].as_str().unwrap();
    assert!(
        input.contains("<messages>")
            && input.contains(">first</message>")
            && input.contains(">second</message>")
    );
    assert!(
        input.find("first").unwrap() < input.find("second").unwrap(),
        "oldest first"
    );
    assert_eq!(s.ack("m1").as_deref(), Some("completed"));
    assert_eq!(s.ack("m2").as_deref(), Some("completed"));
}

#[test]
fn multi_destination_output_is_routed_per_destination() {
    let mut s = Session::new();
    s.destination(
        "team",
        Some("Team room"),
        "channel",
        Some("slack"),
        Some("C42"),
        None,
    );
    s.destination("helper", None, "agent", None, None, Some("ag-helper"));
    s.destination("quiet", None, "channel", Some("slack"), Some("C99"), None);
    s.write_mock_script(
        r#"
        [[rule]]
        match = "^fan out"
        raw = '''
<message to="home">to home</message>
<message to="team">
  to team
</message>
<message to="helper">to helper</message>
<message to="quiet">to quiet</message>
'''
        "#,
    );
    s.send(
        Msg::chat("t1", "earlier in team")
            .from("slack", "C42", Some("ts-1"))
            .context(),
    );
    let _agent = Agent::mock(&s, &[]).ready();
    s.send(Msg::chat("h1", "fan out please"));
    assert!(replies(&s, 4));
    let out = s.out_rows();
    assert_eq!(out.len(), 4);
    let by = |text: &str| {
        out.iter()
            .find(|o| o.text == text)
            .unwrap_or_else(|| panic!("{text} missing: {out:?}"))
    };
    let home = by("to home");
    assert_eq!(
        (home.channel_type.as_deref(), home.in_reply_to.as_deref()),
        (Some("cli"), Some("h1"))
    );
    let team = by("to team");
    assert_eq!(
        (team.channel_type.as_deref(), team.platform_id.as_deref()),
        (Some("slack"), Some("C42"))
    );
    assert_eq!(team.thread_id.as_deref(), Some("ts-1"));
    assert_eq!(team.in_reply_to.as_deref(), Some("t1"));
    let helper = by("to helper");
    assert_eq!(
        (
            helper.channel_type.as_deref(),
            helper.platform_id.as_deref()
        ),
        (Some("agent"), Some("ag-helper"))
    );
    assert_eq!(
        (helper.thread_id.as_deref(), helper.in_reply_to.as_deref()),
        (None, None)
    );
    let quiet = by("to quiet");
    assert_eq!(
        (quiet.thread_id.as_deref(), quiet.in_reply_to.as_deref()),
        (None, None)
    );
    let seqs: Vec<i64> = out.iter().map(|o| o.seq).collect();
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 2) && seqs[0] % 2 == 1,
        "{seqs:?}"
    );
    assert_eq!(
        s.ack("t1").as_deref(),
        Some("completed"),
        "context row rode along"
    );
}

#[test]
fn unknown_destination_is_dropped_and_the_rest_sent() {
    let mut s = Session::new();
    s.write_mock_script(
        r#"
        [[rule]]
        raw = '<message to="nobody">secret</message><message to="home">ok</message>'
        "#,
    );
    let agent = Agent::mock(&s, &[]).ready();
    s.send(Msg::chat("m1", "hi"));
    assert!(replies(&s, 1));
    assert!(wait_until(T, || s.ack("m1").as_deref() == Some("completed")));
    assert_eq!(s.texts(), ["ok"]);
    assert_eq!(s.recorded().len(), 1, "something was sent, so no nudge");
    assert!(
        agent
            .logs()
            .contains("dropping message to unknown destination")
    );
}

#[test]
fn bare_text_sends_nothing_and_nudges_once() {
    let mut s = Session::new();
    s.destination("team", None, "channel", Some("slack"), Some("C42"), None);
    s.write_mock_script("[[rule]]\nraw = \"I think the answer is 42\"\n");
    let agent = Agent::mock(&s, &[]).ready();
    s.send(Msg::chat("m1", "question"));
    assert!(
        wait_until(T, || s.ack("m1").as_deref() == Some("completed")),
        "{}",
        agent.logs()
    );
    assert!(s.out_rows().is_empty());
    let rec = s.recorded();
    let kinds: Vec<&str> = rec.iter().map(|r| r["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["turn", "nudge"], "exactly one nudge per turn");
    let nudge = rec[1]["input"].as_str().unwrap();
    assert!(nudge.contains("Valid destinations: home, team."), "{nudge}");
    assert!(
        agent.logs().contains("I think the answer is 42"),
        "scratchpad is logged"
    );
}

#[test]
fn internal_blocks_are_stripped() {
    let mut s = Session::new();
    s.write_mock_script(
        "[[rule]]\nraw = '<internal>plan: <message to=\"home\">draft</message></internal><message to=\"home\">final</message>'\n",
    );
    let _agent = Agent::mock(&s, &[]).ready();
    s.send(Msg::chat("m1", "go"));
    assert!(wait_until(T, || s.ack("m1").as_deref() == Some("completed")));
    assert_eq!(s.texts(), ["final"]);
    assert_eq!(
        s.recorded().len(),
        1,
        "<internal> alone is not a reason to nudge"
    );
}

#[test]
fn context_rows_wait_and_ride_along_with_the_next_trigger() {
    let mut s = Session::new();
    let _agent = Agent::mock(&s, &[]).ready();
    s.send(Msg::chat("c1", "background chatter").context());
    std::thread::sleep(Duration::from_millis(300));
    assert!(s.recorded().is_empty(), "no turn without a trigger");
    assert!(s.acks().is_empty(), "context rows stay unclaimed");
    s.send(Msg::chat("m1", "now answer"));
    assert!(replies(&s, 1));
    let rec = s.recorded();
    assert_eq!(rec.len(), 1);
    let input = rec[0]["input"].as_str().unwrap();
    assert!(
        input.contains("background chatter") && input.contains("now answer"),
        "{input}"
    );
    assert_eq!(s.ack("c1").as_deref(), Some("completed"));
}

#[test]
fn context_beyond_the_batch_limit_is_dropped_not_jammed() {
    let mut s = Session::new();
    for i in 0..4 {
        s.send(Msg::chat(&format!("c{i}"), &format!("chatter {i}")).context());
    }
    s.send(Msg::chat("m1", "question"));
    let _agent = Agent::mock(&s, &[("NANOCLAW_MAX_BATCH", "2")]).ready();
    assert!(replies(&s, 1));
    let input = s.recorded()[0]["input"].as_str().unwrap().to_string();
    assert!(
        input.contains("chatter 3") && input.contains("question") && !input.contains("chatter 2"),
        "{input}"
    );
    assert!(
        wait_until(T, || s
            .acks()
            .values()
            .filter(|v| *v == "completed")
            .count()
            == 5),
        "{:?}",
        s.acks()
    );
}

#[test]
fn on_wake_rows_are_only_for_the_container_that_starts_after_them() {
    let mut s = Session::new();
    s.send(Msg::chat("w1", "wake note").on_wake());
    let _agent = Agent::mock(&s, &[]).ready();
    assert!(replies(&s, 1));
    s.send(Msg::chat("w2", "for the next container").on_wake());
    s.send(Msg::chat("m1", "normal"));
    assert!(replies(&s, 2));
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        s.texts(),
        [
            "Mock agent: you said \"wake note\"",
            "Mock agent: you said \"normal\""
        ]
    );
    assert_eq!(s.ack("w2"), None);
}

#[test]
fn a_future_process_after_fires_on_time_without_polling() {
    let mut s = Session::new();
    let agent = Agent::mock(&s, &[("NANOCLAW_FALLBACK_POLL_MS", "600000")]).ready();
    let cpu_before = agent.cpu_ticks();
    let sent = Instant::now();
    let due = jiff::Timestamp::now() + jiff::SignedDuration::from_millis(1500);
    s.send(Msg::chat("m1", "later").after(due));
    assert!(
        wait_until(Duration::from_secs(5), || !s.out_rows().is_empty()),
        "{}",
        agent.logs()
    );
    let took = sent.elapsed();
    assert!(took >= Duration::from_millis(1450), "fired early: {took:?}");
    assert!(took < Duration::from_millis(2500), "fired late: {took:?}");
    let cpu = agent.cpu_ticks() - cpu_before;
    // Clock ticks are 10 ms; a busy loop would burn ~150 of them.
    assert!(cpu <= 10, "used {cpu} ticks of CPU while waiting");
}

#[test]
fn stale_processing_claims_are_cleared_at_start() {
    let mut s = Session::new();
    s.send(Msg::chat("m1", "asked before the crash"));
    s.outbound()
        .execute(
            "INSERT INTO processing_ack (message_id, status, status_changed) VALUES ('m1', 'processing', '2026-01-01T00:00:00.000Z')",
            [],
        )
        .unwrap();
    let agent = Agent::mock(&s, &[]).ready();
    assert!(replies(&s, 1));
    assert!(
        agent
            .logs()
            .contains("cleared claims left by a previous run")
    );
    assert_eq!(
        s.texts(),
        ["Mock agent: you said \"asked before the crash\""]
    );
}

#[test]
fn killed_mid_turn_then_restarted_answers_exactly_once() {
    let mut s = Session::new();
    s.write_mock_script("[[rule]]\nmatch = \"crash\"\nexit = true\n");
    let mut agent = Agent::mock(&s, &[]).ready();
    s.send(Msg::chat("m1", "please crash"));
    let status = agent
        .wait_exit(T)
        .expect("the mock `exit` rule kills the process");
    assert!(!status.success());
    assert!(s.out_rows().is_empty(), "nothing half-written");
    assert_eq!(
        s.ack("m1").as_deref(),
        Some("processing"),
        "the claim is left behind"
    );
    assert_eq!(
        s.state("continuation:mock").as_deref(),
        Some("mock-1"),
        "continuation saved at init"
    );

    // The host restarts the container; this time the model behaves.
    std::fs::remove_file(s.agent_dir.join("mock.toml")).unwrap();
    let _agent = Agent::mock(&s, &[]).ready();
    assert!(replies(&s, 1));
    assert!(wait_until(T, || s.ack("m1").as_deref() == Some("completed")));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(s.texts(), ["Mock agent: you said \"please crash\""]);
    let rec = s.recorded();
    assert_eq!(
        rec.last().unwrap()["continuation"],
        "mock-1",
        "resumed the saved conversation"
    );
}

#[test]
fn admin_commands_are_gated_both_ways() {
    let mut s = Session::new();
    let _agent = Agent::mock(&s, &[]).ready();
    s.send(Msg::chat("m1", "/cost").sender("cli:mallory", "Mallory"));
    assert!(replies(&s, 1));
    s.send(Msg::chat("m2", "  /COST  ").sender("cli:admin", "Admin"));
    assert!(replies(&s, 2));
    let out = s.out_rows();
    assert_eq!(
        out[0].text,
        "Permission denied: /cost requires admin access."
    );
    assert_eq!(out[0].in_reply_to.as_deref(), Some("m1"));
    assert_eq!(
        out[1].text,
        "The /cost command is not available with the mock provider."
    );
    let rec = s.recorded();
    assert_eq!(
        rec.len(),
        1,
        "the denied command never reached the provider"
    );
    assert_eq!(rec[0]["kind"], "command");
    assert_eq!(rec[0]["input"], "/COST");

    // Not an admin command: an ordinary message (exact match, no prefix match).
    s.send(Msg::chat("m3", "/costly idea").sender("cli:mallory", "Mallory"));
    assert!(replies(&s, 3));
    assert_eq!(
        s.out_rows()[2].text,
        "Mock agent: you said \"/costly idea\""
    );
}

#[test]
fn clear_forgets_the_conversation_without_calling_the_provider() {
    let mut s = Session::new();
    let _agent = Agent::mock(&s, &[]).ready();
    s.send(Msg::chat("m1", "remember me"));
    assert!(replies(&s, 1));
    assert_eq!(s.state("continuation:mock").as_deref(), Some("mock-1"));
    s.send(Msg::chat("m2", "/clear").sender("cli:admin", "Admin"));
    assert!(replies(&s, 2));
    assert_eq!(s.out_rows()[1].text, "Session cleared.");
    assert_eq!(s.state("continuation:mock"), None);
    assert_eq!(s.recorded().len(), 1, "/clear did not reach the provider");
    s.send(Msg::chat("m3", "who am I"));
    assert!(replies(&s, 3));
    assert_eq!(
        s.recorded()[1]["continuation"],
        serde_json::Value::Null,
        "fresh conversation"
    );
    // A non-admin cannot clear.
    s.send(Msg::chat("m4", "/clear").sender("cli:mallory", "Mallory"));
    assert!(replies(&s, 4));
    assert_eq!(
        s.out_rows()[3].text,
        "Permission denied: /clear requires admin access."
    );
    assert_eq!(s.state("continuation:mock").as_deref(), Some("mock-1"));
}

#[test]
fn commands_run_alone_in_order() {
    let mut s = Session::new();
    s.send(Msg::chat("m1", "before"));
    s.send(Msg::chat("m2", "/clear").sender("cli:admin", "Admin"));
    s.send(Msg::chat("m3", "after"));
    let _agent = Agent::mock(&s, &[]).ready();
    assert!(replies(&s, 3));
    assert_eq!(
        s.texts(),
        [
            "Mock agent: you said \"before\"",
            "Session cleared.",
            "Mock agent: you said \"after\""
        ]
    );
    let rec = s.recorded();
    assert_eq!(rec[1]["continuation"], serde_json::Value::Null);
}

#[test]
fn model_api_errors_reach_the_chat_as_one_actionable_line() {
    let mut s = Session::new();
    s.write_mock_script(concat!(
        "[[rule]]\nmatch = \"busy\"\n",
        r#"error = 'API Error: 529 {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}'"#,
        "\n[[rule]]\nmatch = \"key\"\n",
        r#"error = 'API Error: 401 {"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"}}'"#,
        "\n"
    ));
    let _agent = Agent::mock(&s, &[]).ready();
    s.send(Msg::chat("m1", "busy"));
    assert!(replies(&s, 1));
    s.send(Msg::chat("m2", "key"));
    assert!(replies(&s, 2));
    let out = s.out_rows();
    assert_eq!(
        out[0].text,
        "The model API is overloaded right now. Try again in a few minutes."
    );
    assert!(out[1].text.contains("(401)") && out[1].text.contains("nanoclaw doctor"));
    assert!(!out[1].text.contains("x-api-key"));
}

#[test]
fn provider_error_becomes_one_error_reply_and_acks_the_batch() {
    let mut s = Session::new();
    s.write_mock_script("[[rule]]\nmatch = \"boom\"\nerror = \"model exploded\"\n");
    let _agent = Agent::mock(&s, &[]).ready();
    s.send(Msg::chat("m0", "context").context());
    s.send(Msg::chat("m1", "boom"));
    assert!(replies(&s, 1));
    let out = s.out_rows();
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].text, "Error: model exploded");
    assert_eq!(out[0].in_reply_to.as_deref(), Some("m1"));
    assert!(wait_until(T, || s.ack("m0").as_deref()
        == Some("completed")
        && s.ack("m1").as_deref() == Some("completed")));
}

#[test]
fn invalid_session_error_clears_the_continuation_and_retries_fresh() {
    let mut s = Session::new();
    s.outbound()
        .execute(
            "INSERT INTO session_state (key, value, updated_at) VALUES ('continuation:mock', 'gone', '2026-01-01T00:00:00.000Z')",
            [],
        )
        .unwrap();
    // The mock has no conversation store, so script the failure on the first request only:
    // the error text names the continuation; a fresh retry (continuation mock-1) passes.
    s.write_mock_script(
        "[[rule]]\nmatch = \"hi\"\nerror = \"No conversation found with session ID: gone\"\n",
    );
    let _agent = Agent::mock(&s, &[]).ready();
    s.send(Msg::chat("m1", "hi"));
    assert!(replies(&s, 1));
    let rec = s.recorded();
    assert_eq!(rec.len(), 2, "one retry");
    assert_eq!(rec[0]["continuation"], "gone");
    assert_eq!(rec[1]["continuation"], serde_json::Value::Null);
    // The scripted error repeats on the retry, so it ends as an Error reply (no endless loop).
    assert_eq!(
        s.texts(),
        ["Error: No conversation found with session ID: gone"]
    );
    assert_eq!(s.state("continuation:mock").as_deref(), Some("mock-1"));
}

#[test]
fn unreadable_rows_are_acked_failed_and_do_not_block() {
    let mut s = Session::new();
    s.send_raw("bad1", "chat", "not json");
    s.send_raw("bad2", "webhook", "{}");
    s.send(Msg::chat("m1", "fine"));
    let _agent = Agent::mock(&s, &[]).ready();
    assert!(replies(&s, 1));
    assert_eq!(s.ack("bad1").as_deref(), Some("failed"));
    assert_eq!(s.ack("bad2").as_deref(), Some("failed"));
    assert_eq!(s.texts(), ["Mock agent: you said \"fine\""]);
}

#[test]
fn sigterm_mid_turn_abandons_it_cleanly() {
    let mut s = Session::new();
    s.write_mock_script("[[rule]]\nhang = true\n");
    let mut agent = Agent::mock(&s, &[]).ready();
    s.send(Msg::chat("m1", "take forever"));
    assert!(wait_until(T, || s.ack("m1").as_deref() == Some("processing")));
    let status = agent.terminate();
    assert!(status.success(), "exit 0 after SIGTERM: {status:?}");
    assert!(s.out_rows().is_empty());
    assert_eq!(
        s.ack("m1"),
        None,
        "claim released, so the next container takes it at once"
    );
}

#[test]
fn newer_schema_is_refused() {
    let s = Session::new();
    s.inbound()
        .pragma_update(None, "user_version", INBOUND_SCHEMA_VERSION + 1)
        .unwrap();
    let mut agent = Agent::mock(&s, &[]);
    let status = agent.wait_exit(T).expect("exits");
    assert_eq!(status.code(), Some(3));
    let logs = agent.logs();
    assert!(
        logs.contains("newer than version") && logs.contains("update the agent image"),
        "{logs}"
    );
}

#[test]
fn bad_configuration_exits_2_naming_the_variable() {
    let s = Session::new();
    for (var, value) in [
        ("NANOCLAW_MAX_BATCH", "lots"),
        ("TZ", "Nowhere/Special"),
        ("NANOCLAW_PROVIDER", "gpt"),
    ] {
        let mut agent = Agent::start(&s, &[(var, value)]);
        let status = agent.wait_exit(T).expect("exits");
        assert_eq!(status.code(), Some(2), "{var}");
        assert!(agent.logs().contains(var), "{}", agent.logs());
    }
    let mut agent = Agent::mock(
        &s,
        &[(
            "NANOCLAW_MOCK_SCRIPT",
            s.inbound_path().join("inbound.db").to_str().unwrap(),
        )],
    );
    assert_eq!(
        agent.wait_exit(T).expect("exits").code(),
        Some(2),
        "a mock script that is not TOML"
    );
}

#[test]
fn message_times_are_shown_in_tz() {
    let mut s = Session::new();
    let _agent = Agent::mock(&s, &[("TZ", "Asia/Tokyo")]).ready();
    s.send(Msg::chat("m1", "hi"));
    assert!(replies(&s, 1));
    let input = s.recorded()[0]["input"].as_str().unwrap().to_string();
    assert!(
        input.starts_with("<context timezone=\"Asia/Tokyo\" />"),
        "{input}"
    );
    assert!(input.contains(" JST\">hi</message>"), "{input}");
}

#[test]
fn destinations_are_looked_up_live() {
    let mut s = Session::new();
    let _agent = Agent::mock(&s, &[]).ready();
    s.send(Msg::chat("m1", "from slack").from("slack", "C1", None));
    assert!(wait_until(T, || s.ack("m1").as_deref() == Some("completed")));
    // Unknown origin: shown as unknown:<type>:<id>, and the mock has nobody to answer.
    let rec = s.recorded();
    assert!(
        rec[0]["input"]
            .as_str()
            .unwrap()
            .contains("from=\"unknown:slack:C1\"")
    );
    s.destination(
        "ops",
        Some("Ops"),
        "channel",
        Some("slack"),
        Some("C1"),
        None,
    );
    s.send(Msg::chat("m2", "again").from("slack", "C1", None));
    assert!(replies(&s, 1));
    let rec = s.recorded();
    let last = rec.last().unwrap();
    assert!(last["input"].as_str().unwrap().contains("from=\"ops\""));
    assert!(
        last["system_prompt"]
            .as_str()
            .unwrap()
            .contains("`ops` (Ops)"),
        "addendum rebuilt"
    );
    assert_eq!(s.out_rows()[0].platform_id.as_deref(), Some("C1"));
}

#[test]
fn task_scripts_decide_whether_the_agent_wakes() {
    let mut s = Session::new();
    let _agent = Agent::mock(&s, &[]).ready();
    s.send(Msg::chat("c1", "context").context());
    s.send(Msg::task(
        "t1",
        "daily",
        "check the inbox",
        Some(r#"echo '{"wake_agent": false}'"#),
    ));
    assert!(wait_until(T, || s.ack("t1").as_deref() == Some("completed")));
    std::thread::sleep(Duration::from_millis(200));
    assert!(s.recorded().is_empty(), "the agent was not woken");
    assert_eq!(s.ack("c1"), None, "context still waits for a trigger");

    let script = r#"echo working >&2; echo '{"wake_agent": true, "data": {"unread": 3}}'"#;
    s.send(Msg::task(
        "t2",
        "daily",
        "summarise the inbox",
        Some(script),
    ));
    assert!(replies(&s, 1));
    let input = s.recorded()[0]["input"].as_str().unwrap().to_string();
    assert!(
        input.contains("<task id=\"6\" from=\"home\" task_id=\"daily\""),
        "{input}"
    );
    assert!(input.contains("Script output:\n{\n  &quot;unread&quot;: 3\n}\n\nInstructions:\nsummarise the inbox</task>"), "{input}");
    assert!(input.contains(">context</message>"), "context rode along");
    assert_eq!(s.texts(), ["Mock agent: you said \"summarise the inbox\""]);
}

#[test]
fn a_task_turn_the_provider_fails_is_acked_failed() {
    let mut s = Session::new();
    s.write_mock_script("[[rule]]\nmatch = \"^fail\"\nerror = \"model exploded\"\n");
    let _agent = Agent::mock(&s, &[]).ready();
    s.send(Msg::chat("c1", "context").context());
    s.send(Msg::task("t1", "nightly", "fail the report", None));
    assert!(replies(&s, 1));
    // The host counts the firing against its task; the error reply names what went wrong.
    assert!(wait_until(T, || s.ack("t1").as_deref() == Some("failed")));
    assert_eq!(s.ack("c1").as_deref(), Some("completed"));
    let out = s.out_rows();
    assert_eq!(out[0].text, "Error: model exploded");
    assert_eq!(out[0].in_reply_to.as_deref(), Some("t1"));

    // A task turn that works is acked completed.
    s.send(Msg::task("t2", "nightly", "write the report", None));
    assert!(replies(&s, 2));
    assert!(wait_until(T, || s.ack("t2").as_deref() == Some("completed")));
}

#[test]
fn a_failing_task_script_acks_the_firing_failed_without_waking_the_agent() {
    let mut s = Session::new();
    let _agent = Agent::mock(&s, &[]).ready();
    s.send(Msg::task("t1", "daily", "check", Some("exit 3")));
    assert!(wait_until(T, || s.ack("t1").as_deref() == Some("failed")));
    std::thread::sleep(Duration::from_millis(200));
    assert!(s.recorded().is_empty(), "the agent was not woken");
}

#[test]
fn the_mock_calls_the_agents_tools_from_its_script() {
    let mut s = Session::new();
    s.destination("team", None, "channel", Some("slack"), Some("C42"), None);
    s.write_mock_script(
        r#"
        [[rule]]
        match = "^remind"
        tools = [
          { name = "send_message", args = { to = "team", text = "{sender} asked for a reminder" } },
          { name = "schedule_task", args = { prompt = "Remind {sender}", every = "1h" } },
        ]
        reply = "Done: {tool_result}"

        [[rule]]
        match = "^bad"
        tools = [{ name = "send_message", args = { to = "nowhere", text = "x" } }]
        reply = "{tool_result}"
        "#,
    );
    let _agent = Agent::mock(&s, &[]).ready();
    s.send(Msg::chat("m1", "remind me hourly").sender("cli:ann", "Ann"));
    assert!(wait_until(T, || s.out_rows().len() >= 3), "{:?}", s.texts());
    let out = s.out_rows();
    let team = out
        .iter()
        .find(|o| o.platform_id.as_deref() == Some("C42"))
        .expect("to team");
    assert_eq!(team.text, "Ann asked for a reminder");
    assert_eq!(team.in_reply_to.as_deref(), Some("m1"));
    let task = out
        .iter()
        .find(|o| o.kind == "system")
        .expect("a system row");
    assert_eq!(task.in_reply_to.as_deref(), Some("m1"));
    let reply = out
        .iter()
        .find(|o| o.text.starts_with("Done:"))
        .expect("the reply");
    assert!(reply.text.contains("repeating ("), "{}", reply.text);

    // A refused call's error reaches the script as `{tool_result}`; nothing else is written.
    s.send(Msg::chat("m2", "bad idea"));
    assert!(wait_until(T, || s.out_rows().len() >= 4));
    let last = s.out_rows().pop().unwrap();
    assert!(
        last.text.starts_with("Error: unknown destination"),
        "{}",
        last.text
    );
    assert_eq!(s.out_rows().len(), 4);
}
