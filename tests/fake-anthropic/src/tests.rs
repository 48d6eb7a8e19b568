//! The fake's own checks, over plain HTTP/1.1 on a TCP socket.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::{Value, json};

use super::*;

const KEY: &str = "sk-ant-test-key";

/// Sends one request and returns (status, headers and body as text).
fn post(fake: &FakeAnthropic, path: &str, headers: &[(&str, &str)], body: &Value) -> (u16, String) {
    let addr = fake.base_url().trim_start_matches("http://").to_owned();
    let mut s = TcpStream::connect(&addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let body = body.to_string();
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (n, v) in headers {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(&body);
    s.write_all(req.as_bytes()).expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status");
    (status, out)
}

fn authed() -> Vec<(&'static str, &'static str)> {
    vec![("x-api-key", KEY), ("anthropic-version", "2023-06-01")]
}

fn body(text: &str, stream: bool) -> Value {
    json!({
        "model": "claude-test", "max_tokens": 100, "stream": stream,
        "messages": [{ "role": "user", "content": [{ "type": "text", "text": text }] }],
    })
}

#[test]
fn wrong_or_missing_key_is_401_authentication_error() {
    let fake = FakeAnthropic::start(KEY).expect("start");
    let (status, out) = post(
        &fake,
        "/v1/messages",
        &[("x-api-key", "nope"), ("anthropic-version", "2023-06-01")],
        &body("hi", false),
    );
    assert_eq!(status, 401);
    assert!(out.contains("authentication_error"), "{out}");
    let (status, _) = post(
        &fake,
        "/v1/messages",
        &[("anthropic-version", "2023-06-01")],
        &body("hi", false),
    );
    assert_eq!(status, 401);
    let bearer = format!("Bearer {KEY}");
    let (status, _) = post(
        &fake,
        "/v1/messages?beta=true",
        &[
            ("authorization", &bearer),
            ("anthropic-version", "2023-06-01"),
        ],
        &body("hi", false),
    );
    assert_eq!(status, 200);
}

#[test]
fn json_answer_with_fixed_usage_and_recorded_request() {
    let fake = FakeAnthropic::start(KEY).expect("start");
    fake.push_rule(Rule::on_text("weather", Reply::text("Sunny.")));
    let (status, out) = post(
        &fake,
        "/v1/messages",
        &authed(),
        &body("what weather?", false),
    );
    assert_eq!(status, 200, "{out}");
    let json: Value =
        serde_json::from_str(out.split("\r\n\r\n").nth(1).expect("body")).expect("json");
    assert_eq!(json["content"][0]["text"], "Sunny.");
    assert_eq!(json["stop_reason"], "end_turn");
    assert_eq!(json["usage"]["input_tokens"], 100);
    assert_eq!(json["usage"]["cache_read_input_tokens"], 30);
    let reqs = fake.requests();
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].last_user_text(), "what weather?");
    assert_eq!(reqs[0].header("x-api-key"), Some(KEY));
}

#[test]
fn streamed_tool_use_sends_input_only_as_json_deltas() {
    let fake = FakeAnthropic::start(KEY).expect("start");
    fake.push_rule(
        Rule::on_text(
            "run",
            Reply::tool_use("Bash", json!({ "command": "echo hi" })),
        )
        .chunk_delay(Duration::from_millis(1)),
    );
    let (status, out) = post(
        &fake,
        "/v1/messages?beta=true",
        &authed(),
        &body("run it", true),
    );
    assert_eq!(status, 200);
    assert!(out.contains("text/event-stream"), "{out}");
    for event in [
        "event: message_start",
        "event: content_block_start",
        "event: content_block_delta",
        "event: content_block_stop",
        "event: message_delta",
        "event: message_stop",
    ] {
        assert!(out.contains(event), "{event} missing: {out}");
    }
    assert!(out.contains(r#""input":{}"#), "{out}");
    assert!(out.contains("input_json_delta"), "{out}");
    assert!(out.contains(r#""stop_reason":"tool_use""#), "{out}");
    assert!(out.contains(r#""cache_creation_input_tokens":20"#), "{out}");
}

#[test]
fn tool_use_must_be_answered_and_system_messages_are_accepted() {
    let fake = FakeAnthropic::start(KEY).expect("start");
    fake.push_rule(Rule::on_tool_result("hi\n", Reply::text("got it")));
    let convo = |answered: bool| {
        let mut result =
            vec![json!({ "type": "tool_result", "tool_use_id": "toolu_1", "content": "hi\n" })];
        if !answered {
            result = vec![json!({ "type": "text", "text": "no result" })];
        }
        json!({
            "model": "m", "max_tokens": 10,
            "messages": [
                { "role": "user", "content": "run" },
                { "role": "assistant", "content": [{ "type": "tool_use", "id": "toolu_1", "name": "Bash", "input": {} }] },
                { "role": "user", "content": result },
                { "role": "system", "content": "a reminder" },
            ],
        })
    };
    let (status, out) = post(&fake, "/v1/messages", &authed(), &convo(false));
    assert_eq!(status, 400, "{out}");
    assert!(out.contains("tool_result"), "{out}");
    let (status, out) = post(&fake, "/v1/messages", &authed(), &convo(true));
    assert_eq!(status, 200, "{out}");
    assert!(out.contains("got it"), "{out}");
    assert_eq!(fake.requests()[1].tool_results(), vec!["hi\n".to_owned()]);
}

#[test]
fn scripted_errors_counts_and_unknown_paths() {
    let fake = FakeAnthropic::start(KEY).expect("start");
    fake.push_rule(Rule::always(Reply::error(529, "overloaded_error", "Overloaded")).times(1));
    let (status, out) = post(&fake, "/v1/messages", &authed(), &body("x", true));
    assert_eq!(status, 529);
    assert!(out.contains("overloaded_error"), "{out}");
    let (status, _) = post(&fake, "/v1/messages", &authed(), &body("x", true));
    assert_eq!(status, 200, "the rule answered once");
    let (status, out) = post(
        &fake,
        "/v1/messages/count_tokens",
        &authed(),
        &body("x", false),
    );
    assert_eq!(status, 200);
    assert!(out.contains("input_tokens"), "{out}");
    let (status, out) = post(&fake, "/v1/files", &authed(), &json!({}));
    assert_eq!(status, 404);
    assert!(out.contains("not_found_error"), "{out}");
    let (status, _) = post(
        &fake,
        "/v1/messages",
        &[("x-api-key", KEY)],
        &body("x", false),
    );
    assert_eq!(status, 400, "anthropic-version is required");
}

#[test]
fn rules_parse_from_json() {
    let rules: Vec<Rule> = serde_json::from_value(json!([
        { "match": { "user_text": "hi" }, "reply": { "text": "hello" } },
        { "match": { "with_tools": true }, "reply": { "tool_use": { "name": "Bash", "input": { "command": "ls" } } }, "times": 1, "chunk_delay": 5 },
        { "reply": { "error": { "status": 429, "kind": "rate_limit_error", "message": "slow down" } } },
    ]))
    .expect("parse");
    assert_eq!(rules.len(), 3);
    assert_eq!(rules[1].chunk_delay, Some(Duration::from_millis(5)));
}
