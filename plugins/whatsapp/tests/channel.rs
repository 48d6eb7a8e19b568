//! The WhatsApp channel against the fake (`nanoclaw-fake-whatsapp`) on 127.0.0.1: the
//! verify-token handshake, signatures first, replays and repeats, messages of every kind,
//! media, taps, statuses, the 24-hour window, and everything outbound.

use std::time::Duration;

use nanoclaw_fake_platform::{Fault, Route};
use nanoclaw_fake_whatsapp::*;
use nanoclaw_plugin_api::kit::prelude::*;
use nanoclaw_plugin_api::kit::testing::{self, MemoryHost};
use nanoclaw_plugin_whatsapp::WhatsAppChannel;
use serde_json::{Value, json};

struct Bench {
    fake: FakeWhatsApp,
    mem: MemoryHost,
    channel: WhatsAppChannel,
}

fn create(
    fake: &FakeWhatsApp,
    mem: &MemoryHost,
    extra: Value,
) -> Result<WhatsAppChannel, PluginError> {
    let mut settings = json!({
        "access_token": ACCESS_TOKEN, "app_secret": APP_SECRET, "verify_token": VERIFY_TOKEN,
        "phone_number_id": PHONE_NUMBER_ID, "api_base_url": fake.api_url(),
        "media_hosts": [fake.base_url()],
    });
    for (k, v) in extra.as_object().into_iter().flatten() {
        settings[k] = v.clone();
    }
    WhatsAppChannel::create(Context {
        instance_name: "whatsapp".into(),
        settings_json: settings.to_string(),
        data_dir: std::env::temp_dir(),
        extra_json: String::new(),
        host: mem.host(),
    })
}

fn bench() -> Bench {
    let fake = FakeWhatsApp::start();
    let mem = MemoryHost::new();
    let channel = create(&fake, &mem, json!({})).expect("create");
    channel.start().expect("start");
    Bench { fake, mem, channel }
}

fn post(body: &[u8], signature: Option<&str>) -> WebhookRequest {
    let mut headers = vec![Tuple2(
        RString::from("content-type"),
        RString::from("application/json"),
    )];
    if let Some(s) = signature {
        headers.push(Tuple2("x-hub-signature-256".into(), s.into()));
    }
    WebhookRequest {
        method: "POST".into(),
        path: "/".into(),
        query: "".into(),
        headers: headers.into(),
        body: body.to_vec().into(),
    }
}

fn get(query: &str) -> WebhookRequest {
    WebhookRequest {
        method: "GET".into(),
        path: "/".into(),
        query: query.into(),
        ..Default::default()
    }
}

impl Bench {
    fn take(&self, body: &[u8]) -> u16 {
        let sig = signature(APP_SECRET, body);
        self.channel
            .handle_webhook(post(body, Some(&sig)))
            .expect("answer")
            .status
    }
}

fn fixture(name: &str) -> Value {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// A documented notification with its timestamps moved to `age` seconds ago.
fn aged(mut v: Value, age: u64) -> Vec<u8> {
    let ts = json!((now_secs() - age).to_string());
    let value = &mut v["entry"][0]["changes"][0]["value"];
    for list in ["messages", "statuses"] {
        let Some(items) = value.get_mut(list).and_then(Value::as_array_mut) else {
            continue;
        };
        for item in items {
            item["timestamp"] = ts.clone();
        }
    }
    v.to_string().into_bytes()
}

fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    f()
}

fn message(to: &str, text: &str) -> OutboundMessage {
    OutboundMessage {
        op: OutboundOp::SEND,
        chat_id: to.into(),
        text: text.into(),
        ..Default::default()
    }
}

#[test]
fn the_verify_token_handshake() {
    let b = bench();
    let ok = b
        .channel
        .handle_webhook(get(&format!(
            "hub.mode=subscribe&hub.challenge=1158201444&hub.verify_token={VERIFY_TOKEN}"
        )))
        .unwrap();
    assert_eq!(ok.status, 200);
    assert_eq!(ok.body.as_slice(), b"1158201444");
    for query in [
        "hub.mode=subscribe&hub.challenge=1158201444&hub.verify_token=wrong".to_owned(),
        format!("hub.mode=unsubscribe&hub.challenge=1158201444&hub.verify_token={VERIFY_TOKEN}"),
        format!("hub.mode=subscribe&hub.verify_token={VERIFY_TOKEN}"),
        format!("hub.mode=subscribe&hub.challenge=%3Cscript%3E&hub.verify_token={VERIFY_TOKEN}"),
        String::new(),
    ] {
        assert_eq!(
            b.channel.handle_webhook(get(&query)).unwrap().status,
            403,
            "{query}"
        );
    }
    for line in b.mem.logs() {
        assert!(!line.message.contains(VERIFY_TOKEN), "{line:?}");
    }
}

#[test]
fn the_wrong_token_fails_start_with_auth() {
    let fake = FakeWhatsApp::start();
    let mem = MemoryHost::new();
    let channel = create(
        &fake,
        &mem,
        json!({"access_token": "EAAnot-the-token-0123456789"}),
    )
    .unwrap();
    let err = channel.start().expect_err("refused");
    assert_eq!(err.kind, ErrorKind::AUTH, "{err}");
    assert!(!err.message.contains("not-the-token"), "{err}");
}

#[test]
fn signatures_are_checked_before_anything_is_parsed() {
    let b = bench();
    let body = aged(fixture("text_message.json"), 0);
    let good = signature(APP_SECRET, &body);
    let mut tampered = body.clone();
    let at = tampered.len() - 10;
    tampered[at] ^= 1;
    for request in [
        post(&body, None),
        post(&body, Some(&signature("not-the-secret", &body))),
        post(&body, Some(good.trim_start_matches("sha256="))),
        post(&body, Some("sha256=")),
        post(&tampered, Some(&good)),
        post(b"{not json", Some("sha256=00")),
    ] {
        assert_eq!(b.channel.handle_webhook(request).unwrap().status, 401);
    }
    assert!(b.mem.inbound().is_empty());
    assert!(
        b.mem
            .logs()
            .iter()
            .any(|l| l.message.contains("refused a webhook"))
    );
    for line in b.mem.logs() {
        assert!(!line.message.contains(APP_SECRET), "{line:?}");
    }
    // Correctly signed but older than Meta ever retries: a replay.
    let old = aged(fixture("text_message.json"), 9 * 24 * 3600);
    assert_eq!(b.take(&old), 401);
    let future = aged(fixture("text_message.json"), 0)
        .into_iter()
        .collect::<Vec<u8>>();
    let mut v: Value = serde_json::from_slice(&future).unwrap();
    v["entry"][0]["changes"][0]["value"]["messages"][0]["timestamp"] =
        json!((now_secs() + 3600).to_string());
    assert_eq!(b.take(v.to_string().as_bytes()), 401);
    assert!(b.mem.inbound().is_empty());
    // The genuine one, and Meta's retry of it: 200 both, one message.
    assert_eq!(b.take(&body), 200);
    assert_eq!(b.take(&body), 200);
    let events = b.mem.inbound();
    assert_eq!(events.len(), 1);
    let e = &events[0];
    assert_eq!(e.chat_id.as_str(), "16505551234");
    assert_eq!(e.sender.as_ref().unwrap().handle.as_str(), "16505551234");
    assert_eq!(
        e.sender
            .as_ref()
            .unwrap()
            .display_name
            .as_ref()
            .map(|n| n.as_str()),
        RSome("Sheena Nelson")
    );
    assert!(!e.is_group && e.mentioned);
    assert_eq!(e.text.as_str(), "Does it come in another color?");
    // DELETE is not Meta.
    let mut other = post(&body, Some(&good));
    other.method = "DELETE".into();
    assert_eq!(b.channel.handle_webhook(other).unwrap().status, 405);
}

#[test]
fn a_refused_message_is_answered_503_for_meta_to_retry() {
    let b = bench();
    let (_, body) = b.fake.text(ANN, "retry me", None);
    b.mem.set_reject_inbound(Some(PluginError::other("busy")));
    assert_eq!(b.take(&body), 503);
    assert!(b.mem.inbound().is_empty());
    b.mem.set_reject_inbound(None);
    assert_eq!(b.take(&body), 200);
    assert_eq!(b.take(&body), 200);
    assert_eq!(b.mem.inbound().len(), 1);
}

#[test]
fn media_replies_and_other_kinds() {
    let b = bench();
    let jpeg = b"\xff\xd8\xff\xe0fake jpeg";
    let (id, body) = b
        .fake
        .media_message(ANN, "image", "image/jpeg", None, jpeg, Some("look"));
    assert_eq!(b.take(&body), 200);
    let (_, body) =
        b.fake
            .media_message(ANN, "voice", "audio/ogg; codecs=opus", None, b"OggS", None);
    assert_eq!(b.take(&body), 200);
    let (_, body) = b.fake.media_message(
        ANN,
        "document",
        "application/pdf",
        Some("plan.pdf"),
        b"%PDF",
        Some("the plan"),
    );
    assert_eq!(b.take(&body), 200);
    let (_, body) = b.fake.text(ANN, "about that", Some(&id));
    assert_eq!(b.take(&body), 200);
    let events = b.mem.inbound();
    assert_eq!(events.len(), 4);
    let img = &events[0].attachments[0];
    assert_eq!(
        (img.kind.as_str(), img.mime_type.as_str()),
        ("image", "image/jpeg")
    );
    assert_eq!(img.data.as_slice(), jpeg);
    assert_eq!(events[0].text.as_str(), "look");
    assert_eq!(events[1].attachments[0].kind.as_str(), "voice");
    assert_eq!(events[2].attachments[0].name.as_str(), "plan.pdf");
    assert_eq!(events[2].text.as_str(), "the plan");
    let quoted = events[3].reply_to.as_ref().unwrap();
    assert_eq!(
        quoted.message_id.as_ref().map(|m| m.as_str()),
        RSome(id.as_str())
    );
    // The download carried the token, to the media host only.
    let downloads = b.fake.harness().calls_to("media.download");
    assert_eq!(downloads.len(), 3);
    assert_eq!(
        downloads[0].header("authorization"),
        Some(format!("Bearer {ACCESS_TOKEN}").as_str())
    );
    // The documented image (its media id unknown here): the message, without content.
    assert_eq!(b.take(&aged(fixture("image_message.json"), 0)), 200);
    let last = b.mem.inbound().pop().unwrap();
    assert_eq!(last.text.as_str(), "New design for the shirt");
    assert!(last.attachments[0].data.is_empty());
    // Another number's notification: not ours.
    let mut foreign = fixture("text_message.json");
    foreign["entry"][0]["changes"][0]["value"]["metadata"]["phone_number_id"] = json!("999");
    let before = b.mem.inbound().len();
    assert_eq!(b.take(&aged(foreign, 0)), 200);
    assert_eq!(b.mem.inbound().len(), before);
}

#[test]
fn media_from_elsewhere_or_too_large_arrives_without_content() {
    let fake = FakeWhatsApp::start();
    let mem = MemoryHost::new();
    let channel = create(
        &fake,
        &mem,
        json!({"media_hosts": ["https://lookaside.fbsbx.com"], "max_file_bytes": 1000}),
    )
    .unwrap();
    channel.start().unwrap();
    let (_, body) = fake.media_message(ANN, "image", "image/png", None, b"png", None);
    let sig = signature(APP_SECRET, &body);
    assert_eq!(
        channel
            .handle_webhook(post(&body, Some(&sig)))
            .unwrap()
            .status,
        200
    );
    assert!(mem.inbound()[0].attachments[0].data.is_empty());
    assert!(
        fake.harness().calls_to("media.download").is_empty(),
        "no token to a foreign host"
    );
    let fake2 = FakeWhatsApp::start();
    let mem2 = MemoryHost::new();
    let small = create(&fake2, &mem2, json!({"max_file_bytes": 3})).unwrap();
    small.start().unwrap();
    let (_, body) = fake2.media_message(ANN, "image", "image/png", None, b"too big", None);
    let sig = signature(APP_SECRET, &body);
    assert_eq!(
        small
            .handle_webhook(post(&body, Some(&sig)))
            .unwrap()
            .status,
        200
    );
    assert!(mem2.inbound()[0].attachments[0].data.is_empty());
}

#[test]
fn buttons_lists_and_taps() {
    let b = bench();
    let (_, body) = b.fake.text(ANN, "hi", None);
    assert_eq!(b.take(&body), 200);
    let mut card = message(ANN, "Allow Bob to talk to the agent?");
    card.buttons = vec![
        Button {
            id: "ncq:q1:0".into(),
            label: "Allow".into(),
        },
        Button {
            id: "ncq:q1:1".into(),
            label: "Deny".into(),
        },
        Button {
            id: "ncq:q1:2".into(),
            label: "Allow and remember forever".into(),
        },
    ]
    .into();
    let ids = testing::send(&b.channel, card).expect("sent");
    let sent = b.fake.sent_to(ANN);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].body["interactive"]["type"], "button");
    let choices = sent[0].choices();
    assert_eq!(choices.len(), 3);
    assert!(choices.iter().all(|(_, t)| t.chars().count() <= 20));
    // Five choices: a list.
    let mut question = message(ANN, "Which one?");
    question.buttons = (0..5)
        .map(|i| Button {
            id: format!("ncq:q2:{i}").into(),
            label: format!("Option {i}").into(),
        })
        .collect::<Vec<_>>()
        .into();
    testing::send(&b.channel, question).expect("sent");
    assert_eq!(b.fake.sent_to(ANN)[1].body["interactive"]["type"], "list");
    // Ann taps Allow (and Meta repeats it): one action, with her id and the card's id.
    let card_id = ids[0].clone().unwrap();
    let (_, tap) = b.fake.tap(ANN, &card_id, "ncq:q1:0", "Allow", false);
    assert_eq!(b.take(&tap), 200);
    assert_eq!(b.take(&tap), 200);
    let (_, row) = b.fake.tap(
        ANN,
        &b.fake.sent_to(ANN)[1].id,
        "ncq:q2:3",
        "Option 3",
        true,
    );
    assert_eq!(b.take(&row), 200);
    let actions = b.mem.actions();
    assert_eq!(actions.len(), 2);
    assert_eq!(actions[0].action_id.as_str(), "ncq:q1:0");
    assert_eq!(actions[0].clicker.handle.as_str(), ANN);
    assert_eq!(actions[0].message_id.as_str(), card_id);
    assert_eq!(actions[1].action_id.as_str(), "ncq:q2:3");
    // The documented tap parses too.
    assert_eq!(b.take(&aged(fixture("button_reply.json"), 0)), 200);
    assert_eq!(b.mem.actions()[2].action_id.as_str(), "cancel-button");
    // More than ten choices: refused before any call.
    let mut many = message(ANN, "too many");
    many.buttons = (0..11)
        .map(|i| Button {
            id: format!("x{i}").into(),
            label: "x".into(),
        })
        .collect::<Vec<_>>()
        .into();
    assert_eq!(
        testing::send(&b.channel, many).unwrap_err().kind,
        ErrorKind::INVALID_INPUT
    );
}

#[test]
fn long_texts_files_reactions_and_replies() {
    let b = bench();
    let (asked, body) = b.fake.text(ANN, "essay please", None);
    assert_eq!(b.take(&body), 200);
    let mut long = String::new();
    for i in 0..1500 {
        long.push_str(&format!("wörd{i} "));
    }
    let mut m = message(ANN, &long);
    m.target_message_id = RSome(asked.clone().into());
    let ids = testing::send(&b.channel, m).expect("sent");
    assert!(ids.len() >= 3);
    let sent = b.fake.sent_to(ANN);
    let mut words = Vec::new();
    for s in &sent {
        assert!(s.text().chars().count() <= MAX_TEXT_CHARS);
        words.extend(s.text().split_whitespace().map(str::to_owned));
    }
    assert_eq!(
        words,
        long.split_whitespace()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    );
    assert_eq!(
        sent[0].body["context"]["message_id"],
        asked.as_str(),
        "the first part replies"
    );
    // A file: uploaded, then sent by id.
    let mut f = message(ANN, "");
    f.files = vec![OutboundFile {
        name: "../report.pdf".into(),
        mime_type: "application/pdf".into(),
        data: b"%PDF-1.4".to_vec().into(),
    }]
    .into();
    testing::send(&b.channel, f).expect("sent");
    let doc = b.fake.sent_to(ANN).pop().unwrap();
    assert_eq!(doc.kind, "document");
    assert_eq!(doc.body["document"]["filename"], "report.pdf");
    let media = b
        .fake
        .media(doc.body["document"]["id"].as_str().unwrap())
        .unwrap();
    assert_eq!(media.data, b"%PDF-1.4");
    // A reaction to Ann's message.
    let react = OutboundMessage {
        op: OutboundOp::REACT,
        chat_id: ANN.into(),
        reaction: "thumbs_up".into(),
        target_message_id: RSome(asked.into()),
        ..Default::default()
    };
    testing::send(&b.channel, react).expect("reacted");
    assert_eq!(
        b.fake.sent_to(ANN).pop().unwrap().body["reaction"]["emoji"],
        "👍"
    );
    // Edits do not exist for the Cloud API.
    let edit = OutboundMessage {
        op: OutboundOp::EDIT,
        chat_id: ANN.into(),
        text: "x".into(),
        target_message_id: RSome(ids[0].clone().unwrap().into()),
        ..Default::default()
    };
    assert_eq!(
        testing::send(&b.channel, edit).unwrap_err().kind,
        ErrorKind::UNSUPPORTED
    );
    assert_eq!(
        testing::send(&b.channel, message("+1 650", "x"))
            .unwrap_err()
            .kind,
        ErrorKind::INVALID_INPUT
    );
}

#[test]
fn the_24_hour_window_is_told_to_the_operator() {
    let b = bench();
    // Ann last wrote 25 hours ago: nothing is sent, the operator is told why.
    let mut old = fixture("text_message.json");
    old["entry"][0]["changes"][0]["value"]["messages"][0]["from"] = json!(ANN);
    assert_eq!(b.take(&aged(old, 25 * 3600)), 200);
    let err = testing::send(&b.channel, message(ANN, "late answer")).unwrap_err();
    assert_eq!(err.kind, ErrorKind::INVALID_INPUT);
    assert!(err.message.contains("24-hour"), "{err}");
    assert!(b.fake.harness().calls_to("messages").is_empty());
    let health = b.channel.health();
    assert!(health.detail.as_str().contains("24-hour"), "{health:?}");
    // Bob never wrote (the channel cannot know): the send is accepted, then Meta's failed
    // status arrives, and the operator is told; it is never taken as delivered.
    let ids = testing::send(&b.channel, message(BOB, "cold message")).expect("accepted");
    let id = ids[0].clone().unwrap();
    assert_eq!(b.take(&b.fake.status(&id, "sent", None)), 200);
    assert_eq!(b.take(&b.fake.status(&id, "failed", Some(131047))), 200);
    let errors: Vec<String> = b
        .mem
        .logs()
        .into_iter()
        .filter(|l| l.level == LogLevel::ERROR)
        .map(|l| l.message)
        .collect();
    assert!(
        errors
            .iter()
            .any(|e| e.contains(BOB) && e.contains("24-hour") && e.contains(&id)),
        "{errors:?}"
    );
    assert_eq!(b.channel.health().status, HealthStatus::DEGRADED);
    // The documented statuses parse.
    assert_eq!(b.take(&aged(fixture("status_sent.json"), 0)), 200);
    assert_eq!(b.take(&aged(fixture("status_failed_131047.json"), 0)), 200);
    assert!(wait_until(Duration::from_millis(10), || true));
}

#[test]
fn rate_limits_come_back_with_retry_after() {
    let b = bench();
    let (_, body) = b.fake.text(ANN, "hi", None);
    assert_eq!(b.take(&body), 200);
    b.fake.harness().fail_next(
        Route::named("messages"),
        1,
        Fault::json(400, &json!({"error": {"message": "(#130429) Rate limit hit", "type": "OAuthException", "code": 130429, "fbtrace_id": "x"}})),
    );
    let err = testing::send(&b.channel, message(ANN, "one")).unwrap_err();
    assert_eq!(err.kind, ErrorKind::RATE_LIMITED);
    b.fake.harness().fail_next(
        Route::named("messages"),
        1,
        Fault::rate_limited(Duration::from_secs(9)),
    );
    std::thread::sleep(Duration::from_millis(1100));
    let err = testing::send(&b.channel, message(ANN, "two")).unwrap_err();
    assert_eq!(err.kind, ErrorKind::RATE_LIMITED);
    assert_eq!(err.retry_after_ms, RSome(9000));
}
