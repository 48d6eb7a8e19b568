//! The Google Chat channel against the fake: Google's JWT checked before anything is
//! parsed, events of every kind, redeliveries and refusals, card clicks, attachments, and
//! the Chat API out (text, threads, cards, edits, open_dm, the token, errors and 429).

use std::time::Duration;

use nanoclaw_fake_gchat::*;
use nanoclaw_fake_platform::jwt::TestKey;
use nanoclaw_fake_platform::{Fault, Route};
use nanoclaw_plugin_api::kit::prelude::*;
use nanoclaw_plugin_api::kit::testing::{self, MemoryHost};
use nanoclaw_plugin_gchat::GchatChannel;
use serde_json::{Value, json};

struct Bench {
    fake: FakeGchat,
    mem: MemoryHost,
    channel: GchatChannel,
}

fn create(mem: &MemoryHost, settings: Value) -> Result<GchatChannel, PluginError> {
    GchatChannel::create(Context {
        instance_name: "gchat".into(),
        settings_json: settings.to_string(),
        data_dir: std::env::temp_dir(),
        extra_json: String::new(),
        host: mem.host(),
    })
}

fn bench() -> Bench {
    let fake = FakeGchat::start();
    let mem = MemoryHost::new();
    let channel = create(&mem, fake.settings()).expect("create");
    channel.start().expect("start");
    Bench { fake, mem, channel }
}

fn request(event: &Value, authorization: Option<&str>) -> WebhookRequest {
    let mut headers = vec![Tuple2(
        RString::from("content-type"),
        RString::from("application/json"),
    )];
    if let Some(a) = authorization {
        headers.push(Tuple2("authorization".into(), a.into()));
    }
    WebhookRequest {
        method: "POST".into(),
        path: "/".into(),
        query: "".into(),
        headers: headers.into(),
        body: event.to_string().into_bytes().into(),
    }
}

impl Bench {
    fn post(&self, event: &Value) -> u16 {
        self.post_as(event, Some(&self.fake.bearer()))
    }

    fn post_as(&self, event: &Value, authorization: Option<&str>) -> u16 {
        self.channel
            .handle_webhook(request(event, authorization))
            .expect("answer")
            .status
    }
}

fn text(chat: &str, text: &str) -> OutboundMessage {
    OutboundMessage {
        chat_id: chat.into(),
        text: text.into(),
        ..OutboundMessage::default()
    }
}

#[test]
fn tokens_are_checked_before_anything_is_parsed() {
    let b = bench();
    let event = b.fake.message(DM_ANN, ANN, "hello", None, false);
    let google = TestKey::a(KID);
    let sign = |key: &TestKey, claims: &Value| format!("Bearer {}", key.sign(claims));
    let mut other_project = b.fake.claims(3600);
    other_project["aud"] = json!("999999999999");
    let mut other_issuer = b.fake.claims(3600);
    other_issuer["iss"] = json!("accounts.google.com");
    let refused = [
        None,
        Some("Bearer".to_owned()),
        Some("Bearer a.b.c".to_owned()),
        Some(sign(&TestKey::b(KID), &b.fake.claims(3600))), // forged signature
        Some(sign(&google, &b.fake.claims(-600))),          // expired
        Some(sign(&google, &other_project)),                // another app's token
        Some(sign(&google, &other_issuer)),                 // not Chat's
        Some(format!(
            "Bearer {}",
            google.sign_with_header(&json!({"alg": "none", "kid": KID}), &b.fake.claims(3600))
        )),
    ];
    for auth in &refused {
        assert_eq!(b.post_as(&event, auth.as_deref()), 401, "{auth:?}");
    }
    // Garbage with a bad token: 401 too, never 400.
    let garbage = WebhookRequest {
        body: b"{not json".to_vec().into(),
        ..request(&event, Some("Bearer x.y.z"))
    };
    assert_eq!(b.channel.handle_webhook(garbage).unwrap().status, 401);
    assert!(b.mem.inbound().is_empty());
    assert!(
        b.mem
            .logs()
            .iter()
            .any(|l| l.message.contains("refused a webhook"))
    );
    let credentials = b.fake.credentials();
    let key_line = credentials.split("\\n").nth(1).unwrap().to_owned();
    for line in b.mem.logs() {
        assert!(!line.message.contains(&key_line), "{line:?}");
    }

    assert_eq!(b.post(&event), 200);
    assert_eq!(b.post(&event), 200, "Google's retry");
    assert_eq!(b.mem.inbound().len(), 1, "stored once");
    // Refused by the host: 503, then taken.
    let next = b.fake.message(DM_ANN, ANN, "later", None, false);
    b.mem.set_reject_inbound(Some(PluginError::network("busy")));
    assert_eq!(b.post(&next), 503);
    b.mem.set_reject_inbound(None);
    assert_eq!(b.post(&next), 200);
    assert_eq!(b.mem.inbound().len(), 2);
}

#[test]
fn dms_spaces_threads_mentions_attachments_and_membership() {
    let b = bench();
    let dm = b.fake.message(DM_ANN, ANN, "Hello *there*", None, false);
    let mut with_file = b.fake.message(DM_ANN, ANN, "a photo", None, false);
    with_file["message"]["attachment"] =
        json!([b
            .fake
            .attachment(DM_ANN, "cat.png", "image/png", b"\x89PNG cat")]);
    let mention = b.fake.message(GENERAL, BOB, "are you there?", None, true);
    let thread = mention["message"]["thread"]["name"]
        .as_str()
        .unwrap()
        .to_owned();
    let reply = b
        .fake
        .message(GENERAL, BOB, "and tomorrow?", Some(&thread), false);
    for e in [&dm, &with_file, &mention, &reply] {
        assert_eq!(b.post(e), 200);
    }
    assert_eq!(
        b.post(&b.fake.membership("ADDED_TO_SPACE", GENERAL, ANN)),
        200
    );
    assert_eq!(
        b.post(&b.fake.membership("REMOVED_FROM_SPACE", GENERAL, ANN)),
        200
    );
    let inbound = b.mem.inbound();
    assert_eq!(inbound.len(), 4);

    let d = &inbound[0];
    assert_eq!(d.chat_id, DM_ANN);
    assert_eq!(d.message_id, dm["message"]["name"].as_str().unwrap());
    assert_eq!(d.sender.as_ref().unwrap().handle, ANN);
    assert!(!d.is_group && d.mentioned);
    assert_eq!(d.thread_id, RNone, "a DM is one conversation");
    assert_eq!(d.timestamp_ms, 1_796_310_000_250);

    let f = &inbound[1];
    assert_eq!(f.attachments.len(), 1);
    assert_eq!(f.attachments[0].data.as_slice(), b"\x89PNG cat");
    assert_eq!(f.attachments[0].name, "cat.png");

    let m = &inbound[2];
    assert_eq!(m.chat_id, GENERAL);
    assert!(m.is_group && m.mentioned);
    assert_eq!(
        m.thread_id.as_ref().map(|t| t.as_str()),
        RSome(thread.as_str())
    );
    assert_eq!(m.text, format!("@{APP_NAME} are you there?"));

    let r = &inbound[3];
    assert!(!r.mentioned);
    assert_eq!(
        r.thread_id.as_ref().map(|t| t.as_str()),
        RSome(thread.as_str())
    );
}

#[test]
fn clicks_reach_the_host_with_the_clicker() {
    let b = bench();
    let mut card = text(DM_ANN, "Allow Bob?");
    card.buttons = vec![
        Button {
            id: "ncq:q1:0".into(),
            label: "Allow".into(),
        },
        Button {
            id: "ncq:q1:1".into(),
            label: "Deny".into(),
        },
    ]
    .into();
    let name = testing::send(&b.channel, card).expect("card")[0]
        .clone()
        .unwrap();
    let posted = b.fake.app_messages(DM_ANN).pop().unwrap();
    assert_eq!(
        posted.buttons(),
        [
            ("Allow".into(), "ncq:q1:0".into()),
            ("Deny".into(), "ncq:q1:1".into())
        ]
    );
    let click = b.fake.click(DM_ANN, ANN, &name, "ncq:q1:0");
    let answer = b
        .channel
        .handle_webhook(request(&click, Some(&b.fake.bearer())))
        .unwrap();
    assert_eq!(answer.status, 200);
    assert_eq!(answer.body.as_slice(), b"{}");
    assert_eq!(b.post(&click), 200, "retry");
    let actions = b.mem.actions();
    assert_eq!(actions.len(), 1);
    assert_eq!(actions[0].action_id, "ncq:q1:0");
    assert_eq!(actions[0].clicker.handle, ANN);
    assert_eq!(actions[0].message_id, name.as_str());
    assert!(b.mem.inbound().is_empty());
}

#[test]
fn messages_threads_edits_and_errors_go_out() {
    let b = bench();
    let ids = testing::send(&b.channel, text(DM_ANN, "Hello **Ann**")).expect("send");
    let sent = b.fake.app_messages(DM_ANN);
    assert_eq!(ids, [Some(sent[0].name.clone())]);
    assert_eq!(sent[0].text, "Hello *Ann*", "Chat's bold");

    let mention = b.fake.message(GENERAL, BOB, "q", None, true);
    let thread = mention["message"]["thread"]["name"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut reply = text(GENERAL, "answer");
    reply.thread_id = RSome(thread.clone().into());
    testing::send(&b.channel, reply).expect("reply");
    assert_eq!(
        b.fake.app_messages(GENERAL)[0].thread,
        thread,
        "in the thread"
    );

    let mut card = text(DM_ANN, "Pick one");
    card.buttons = vec![Button {
        id: "ncq:q2:0".into(),
        label: "A".into(),
    }]
    .into();
    let name = testing::send(&b.channel, card).expect("card")[0]
        .clone()
        .unwrap();
    let edit = OutboundMessage {
        op: OutboundOp::EDIT,
        target_message_id: RSome(name.clone().into()),
        ..text(DM_ANN, "Pick one\n\nA")
    };
    testing::send(&b.channel, edit).expect("edit");
    let edited = b.fake.app_messages(DM_ANN).pop().unwrap();
    assert_eq!((edited.name.as_str(), edited.edits), (name.as_str(), 1));
    assert!(edited.buttons().is_empty());

    // Long text: parts within 4,000 characters, every word once.
    let long: String = (0..3000).map(|i| format!("w{i} ")).collect();
    testing::send(&b.channel, text(GENERAL, &long)).expect("long");
    let parts: Vec<String> = b
        .fake
        .app_messages(GENERAL)
        .iter()
        .skip(1)
        .map(|m| m.text.clone())
        .collect();
    assert!(parts.len() >= 3);
    assert!(parts.iter().all(|p| p.chars().count() <= 4000));
    let words: Vec<&str> = parts.iter().flat_map(|p| p.split_whitespace()).collect();
    assert_eq!(words, long.split_whitespace().collect::<Vec<_>>());

    // Reactions and files: unsupported with app auth. Unknown space: NOT_FOUND. 429.
    let react = OutboundMessage {
        op: OutboundOp::REACT,
        target_message_id: RSome(name.into()),
        reaction: "thumbs_up".into(),
        ..text(DM_ANN, "")
    };
    assert_eq!(
        testing::send(&b.channel, react).expect_err("react").kind,
        ErrorKind::UNSUPPORTED
    );
    let mut file = text(DM_ANN, "f");
    file.files = vec![OutboundFile {
        name: "a.txt".into(),
        mime_type: "text/plain".into(),
        data: b"a".to_vec().into(),
    }]
    .into();
    assert_eq!(
        testing::send(&b.channel, file).expect_err("file").kind,
        ErrorKind::UNSUPPORTED
    );
    assert_eq!(
        testing::send(&b.channel, text("spaces/NOPE", "x"))
            .expect_err("404")
            .kind,
        ErrorKind::NOT_FOUND
    );
    assert_eq!(
        testing::send(&b.channel, text("spaces/../x", "x"))
            .expect_err("bad")
            .kind,
        ErrorKind::INVALID_INPUT
    );
    b.fake.harness().fail_next(
        Route::named("create"),
        1,
        Fault::rate_limited(Duration::from_secs(2)),
    );
    let err = testing::send(&b.channel, text(DM_ANN, "x")).expect_err("429");
    assert_eq!(err.kind, ErrorKind::RATE_LIMITED);
    assert_eq!(err.retry_after_ms, RSome(2000));
    assert_eq!(b.fake.issued(), 1, "one token for all of it");
}

#[test]
fn open_dm_finds_or_sets_up_the_dm() {
    let b = bench();
    assert_eq!(b.channel.open_dm(ANN).expect("find"), DM_ANN);
    assert!(b.fake.harness().calls_to("setup").is_empty());
    assert_eq!(b.channel.open_dm(BOB).expect("setup"), DM_BOB);
    assert_eq!(b.fake.harness().calls_to("setup").len(), 1);
    testing::send(&b.channel, text(DM_BOB, "hi Bob")).expect("send");
    assert_eq!(
        b.channel.open_dm("users/../x").expect_err("bad").kind,
        ErrorKind::INVALID_INPUT
    );
}

#[test]
fn start_checks_the_service_account_and_settings_are_validated() {
    let fake = FakeGchat::start();
    // The right account, signed with another key: Google refuses the assertion.
    let mut wrong = fake.settings();
    let creds = fake.credentials().replace(
        &TestKey::pem('b').replace('\n', "\\n"),
        &TestKey::pem('a').replace('\n', "\\n"),
    );
    assert_ne!(creds, fake.credentials());
    wrong["credentials"] = json!(creds);
    let channel = create(&MemoryHost::new(), wrong).expect("create");
    let err = channel.start().expect_err("refused");
    assert_eq!(err.kind, ErrorKind::AUTH, "{err}");
    assert!(err.message.contains("GCHAT_CREDENTIALS"));
    assert!(!err.message.contains("PRIVATE KEY"));

    for bad in [
        json!({"credentials": "{}", "project_number": PROJECT_NUMBER}),
        json!({"credentials": fake.credentials(), "project_number": "my-project"}),
        json!({"credentials": fake.credentials(), "project_number": PROJECT_NUMBER, "extra": 1}),
        json!({"credentials": "not json", "project_number": PROJECT_NUMBER}),
    ] {
        let err = create(&MemoryHost::new(), bad).err().expect("refused");
        assert_eq!(err.kind, ErrorKind::CONFIG, "{err}");
        assert!(!err.message.contains("PRIVATE KEY"));
    }
}
