//! The fake's wire format, as a plain HTTP client sees it.

use std::time::Duration;

use nanoclaw_fake_openai::{DEFAULT_MODEL, FakeOpenAi, Fault, Options, Rule};
use serde_json::{Value, json};

fn client() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .proxy(None)
        .build()
        .into()
}

fn post(fake: &FakeOpenAi, key: Option<&str>, body: &Value) -> (u16, String, String) {
    let mut req = client()
        .post(format!("{}/v1/chat/completions", fake.base_url()))
        .header("content-type", "application/json");
    if let Some(k) = key {
        req = req.header("authorization", format!("Bearer {k}"));
    }
    let mut resp = req.send(body.to_string()).expect("request");
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let status = resp.status().as_u16();
    (status, ct, resp.body_mut().read_to_string().expect("body"))
}

fn chat(text: &str, stream: bool) -> Value {
    json!({
        "model": DEFAULT_MODEL,
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "<message id=\"1\" from=\"home\">earlier</message>"},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": format!("<message id=\"2\" from=\"team\">{text}</message>")},
        ],
        "stream": stream,
        "stream_options": {"include_usage": true},
    })
}

#[test]
fn streams_chunks_usage_and_done() {
    let fake = FakeOpenAi::start(Options::default()).unwrap();
    fake.script(
        Rule::matching("weather").reply("<message to=\"{from}\">Sunny and warm today.</message>"),
    );
    let (status, ct, body) = post(&fake, None, &chat("weather?", true));
    assert_eq!(status, 200);
    assert_eq!(ct, "text/event-stream");
    let events: Vec<&str> = body
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .collect();
    assert_eq!(events.last(), Some(&"[DONE]"));
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "<message to=\"team\">Sunny and warm today.</message>");
    assert!(chunks.len() > 4, "split into several chunks");
    let usage = &chunks.last().unwrap()["usage"];
    let prompt_chars = "be brief".len()
        + "<message id=\"1\" from=\"home\">earlier</message>".len()
        + "ok".len()
        + "<message id=\"2\" from=\"team\">weather?</message>".len();
    assert_eq!(usage["prompt_tokens"], prompt_chars.div_ceil(4));
    assert_eq!(usage["completion_tokens"], text.len().div_ceil(4));
    assert_eq!(
        usage["prompt_tokens_details"]["cached_tokens"],
        (prompt_chars - "<message id=\"2\" from=\"team\">weather?</message>".len()) / 4
    );
    assert_eq!(
        chunks[chunks.len() - 2]["choices"][0]["finish_reason"],
        "stop"
    );

    let r = &fake.completions()[0];
    assert_eq!(
        r.last_user().unwrap(),
        "<message id=\"2\" from=\"team\">weather?</message>"
    );
    assert_eq!(r.body["stream"], true);
}

#[test]
fn answers_whole_completions_and_errors() {
    let fake = FakeOpenAi::start(Options::default().with_api_key("sk-good")).unwrap();
    fake.script(
        Rule::matching("fail")
            .times(1)
            .error(503, Rule::error_body("overloaded", "server_error", None)),
    );
    let (status, _, body) = post(&fake, None, &chat("hi", false));
    assert_eq!(status, 401);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["error"]["type"], "invalid_request_error");
    let (status, _, body) = post(&fake, Some("sk-bad"), &chat("hi", false));
    assert_eq!(status, 401);
    assert!(body.contains("invalid_api_key"));

    let (status, ct, body) = post(&fake, Some("sk-good"), &chat("hi", false));
    assert_eq!((status, ct.as_str()), (200, "application/json"));
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(
        v["choices"][0]["message"]["content"],
        "<message to=\"team\">fake-openai heard: hi</message>"
    );
    assert!(v["usage"]["prompt_tokens"].as_u64().unwrap() > 0);

    let (status, _, body) = post(&fake, Some("sk-good"), &chat("fail", false));
    assert_eq!(status, 503);
    assert!(body.contains("overloaded"));
    let (status, _, _) = post(&fake, Some("sk-good"), &chat("fail", false));
    assert_eq!(status, 200, "the rule was for one request");

    let mut other = chat("hi", false);
    other["model"] = "gpt-9".into();
    let (status, _, body) = post(&fake, Some("sk-good"), &other);
    assert_eq!(status, 404);
    assert!(body.contains("model_not_found"));

    let mut resp = client()
        .get(format!("{}/v1/models", fake.base_url()))
        .header("authorization", "Bearer sk-good")
        .call()
        .unwrap();
    let v: Value = serde_json::from_str(&resp.body_mut().read_to_string().unwrap()).unwrap();
    assert_eq!(v["data"][0]["id"], DEFAULT_MODEL);

    assert_eq!(fake.requests().len(), 7);
    assert_eq!(
        fake.completions()[2].header("authorization"),
        Some("Bearer sk-good")
    );
}

#[test]
fn harness_faults_apply_to_completions() {
    let fake = FakeOpenAi::start(Options::default()).unwrap();
    fake.fail_next(1, Fault::status(429));
    let (status, _, _) = post(&fake, None, &chat("hi", true));
    assert_eq!(status, 429);
    fake.script(
        Rule::always()
            .reply("slow reply here")
            .delay(Duration::from_millis(50)),
    );
    let started = std::time::Instant::now();
    let (status, _, _) = post(&fake, None, &chat("hi", true));
    assert_eq!(status, 200);
    assert!(
        started.elapsed() >= Duration::from_millis(150),
        "chunks were paced"
    );
}
