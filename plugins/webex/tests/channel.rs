//! The Webex channel against the fake (`nanoclaw-fake-webex`) on 127.0.0.1: webhook
//! registration, signatures first, replays, inbound messages of every kind, files, card
//! clicks, deletions, refusals, and everything outbound.

use std::collections::BTreeSet;
use std::time::Duration;

use nanoclaw_fake_platform::{Fault, Route};
use nanoclaw_fake_webex::*;
use nanoclaw_plugin_api::kit::prelude::*;
use nanoclaw_plugin_api::kit::testing::{self, MemoryHost};
use nanoclaw_plugin_webex::WebexChannel;
use serde_json::{Value, json};

const TARGET: &str = "http://127.0.0.1:9/webhook/webex";

struct Bench {
    fake: FakeWebex,
    mem: MemoryHost,
    channel: WebexChannel,
}

fn create(fake: &FakeWebex, mem: &MemoryHost, extra: Value) -> Result<WebexChannel, PluginError> {
    let mut settings = json!({
        "bot_token": BOT_TOKEN, "webhook_secret": WEBHOOK_SECRET, "webhook_url": TARGET,
        "api_base_url": fake.api_url(), "post_per_sec": 50,
    });
    for (k, v) in extra.as_object().into_iter().flatten() {
        settings[k] = v.clone();
    }
    WebexChannel::create(Context {
        instance_name: "webex".into(),
        settings_json: settings.to_string(),
        data_dir: std::env::temp_dir(),
        extra_json: String::new(),
        host: mem.host(),
    })
}

fn bench() -> Bench {
    let fake = FakeWebex::start();
    let mem = MemoryHost::new();
    let channel = create(&fake, &mem, json!({})).expect("create");
    channel.start().expect("start");
    Bench { fake, mem, channel }
}

fn request(body: &[u8], signature: Option<&str>) -> WebhookRequest {
    let mut headers = vec![Tuple2(
        RString::from("content-type"),
        RString::from("application/json"),
    )];
    if let Some(s) = signature {
        headers.push(Tuple2("x-spark-signature".into(), s.into()));
    }
    WebhookRequest {
        method: "POST".into(),
        path: "/".into(),
        query: "".into(),
        headers: headers.into(),
        body: body.to_vec().into(),
    }
}

impl Bench {
    /// Delivers the notification about `id` as Webex would; the status.
    fn notify(&self, resource: &str, event: &str, id: &str) -> u16 {
        let (body, sig) = self.fake.signed(resource, event, id, WEBHOOK_SECRET);
        self.channel
            .handle_webhook(request(&body, Some(&sig)))
            .expect("answer")
            .status
    }

    fn say(
        &self,
        room: &str,
        person: &str,
        text: &str,
        parent: Option<&str>,
        mention: bool,
    ) -> String {
        let mentions: &[&str] = if mention { &[BOT_ID] } else { &[] };
        let id = self.fake.post(room, person, text, parent, mentions, &[]);
        assert_eq!(self.notify("messages", "created", &id), 200);
        id
    }
}

fn fixture(name: &str) -> Value {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default()
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

fn message(chat: &str, text: &str) -> OutboundMessage {
    OutboundMessage {
        op: OutboundOp::SEND,
        chat_id: chat.into(),
        text: text.into(),
        ..Default::default()
    }
}

#[test]
fn the_fake_speaks_the_documented_shapes() {
    let b = bench();
    let id = b.fake.post(TEAM, ANN, "hi", None, &[BOT_ID], &[]);
    let hook = b
        .fake
        .webhooks()
        .into_iter()
        .find(|h| h.resource == "messages" && h.event == "created")
        .unwrap();
    let env = b.fake.envelope(&hook, &id);
    let doc = fixture("webhook_messages_created.json");
    assert!(keys(&doc).is_subset(&keys(&env)), "{env}");
    assert!(keys(&doc["data"]).is_subset(&keys(&env["data"])), "{env}");
    let action = b.fake.submit(&id, ANN, &json!({"x": 1}));
    let hook = b
        .fake
        .webhooks()
        .into_iter()
        .find(|h| h.resource == "attachmentActions")
        .unwrap();
    let env = b.fake.envelope(&hook, &action);
    let doc = fixture("webhook_attachment_actions_created.json");
    assert!(keys(&doc["data"]).is_subset(&keys(&env["data"])), "{env}");
    // The documented bodies parse as what the channel reads.
    for name in [
        "message.json",
        "attachment_action.json",
        "webhook_messages_deleted.json",
    ] {
        assert!(fixture(name)["id"].is_string());
    }
}

#[test]
fn start_registers_the_webhooks_once_and_repairs_them() {
    let b = bench();
    let hooks = b.fake.webhooks();
    let mut pairs: Vec<(String, String)> = hooks
        .iter()
        .map(|h| (h.resource.clone(), h.event.clone()))
        .collect();
    pairs.sort();
    assert_eq!(
        pairs,
        [
            ("attachmentActions".into(), "created".into()),
            ("messages".into(), "created".into()),
            ("messages".into(), "deleted".into()),
        ]
    );
    for h in &hooks {
        assert_eq!(h.target_url, TARGET);
        assert_eq!(h.secret.as_deref(), Some(WEBHOOK_SECRET));
    }
    // A second start (a restart) adds nothing.
    let again = create(&b.fake, &b.mem, json!({})).unwrap();
    again.start().unwrap();
    assert_eq!(b.fake.webhooks().len(), 3);
    // A webhook with another secret is updated; none is added.
    let other = create(
        &b.fake,
        &b.mem,
        json!({"webhook_secret": "another-secret-123"}),
    )
    .unwrap();
    other.start().unwrap();
    assert_eq!(b.fake.webhooks().len(), 3);
    assert!(
        b.fake
            .webhooks()
            .iter()
            .all(|h| h.secret.as_deref() == Some("another-secret-123"))
    );
    assert_eq!(
        b.fake
            .harness()
            .calls_to("webhooks")
            .iter()
            .filter(|c| c.method == "PUT")
            .count(),
        3
    );
    // No webhook_url: nothing registered.
    let fake = FakeWebex::start();
    let mem = MemoryHost::new();
    let by_hand = create(&fake, &mem, json!({"webhook_url": null})).unwrap();
    by_hand.start().unwrap();
    assert!(fake.webhooks().is_empty());
}

#[test]
fn a_wrong_token_fails_start_with_auth() {
    let fake = FakeWebex::start();
    let mem = MemoryHost::new();
    let channel = create(
        &fake,
        &mem,
        json!({"bot_token": "not-the-token-0123456789"}),
    )
    .unwrap();
    let err = channel.start().expect_err("refused");
    assert_eq!(err.kind, ErrorKind::AUTH, "{err}");
    assert!(!err.message.contains("not-the-token"), "{err}");
}

#[test]
fn signatures_are_checked_before_anything_is_parsed() {
    let b = bench();
    let id = b.fake.post(DM_ANN, ANN, "hello", None, &[], &[]);
    let (body, sig) = b.fake.signed("messages", "created", &id, WEBHOOK_SECRET);
    let (_, wrong) = b.fake.signed("messages", "created", &id, "not-the-secret");
    let mut tampered = body.clone();
    let at = tampered.len() - 3;
    tampered[at] ^= 1;
    let cases = [
        request(&body, None),
        request(&body, Some(&wrong)),
        request(&body, Some("sha1=00")),
        request(&body, Some("")),
        request(&body, Some(&sig[..20])),
        request(&tampered, Some(&sig)),
        request(b"{not json", Some("00ff")),
    ];
    for r in cases {
        let answer = b.channel.handle_webhook(r).expect("answer");
        assert_eq!(answer.status, 401);
    }
    assert!(b.mem.inbound().is_empty());
    // Nothing was fetched for a forged request.
    assert!(b.fake.harness().calls_to("messages.get").is_empty());
    assert!(
        b.mem
            .logs()
            .iter()
            .any(|l| l.message.contains("refused a webhook"))
    );
    for line in b.mem.logs() {
        assert!(!line.message.contains(WEBHOOK_SECRET), "{line:?}");
        assert!(!line.message.contains(BOT_TOKEN), "{line:?}");
    }
    // GET is not Webex.
    let mut get = request(&body, Some(&sig));
    get.method = "GET".into();
    assert_eq!(b.channel.handle_webhook(get).unwrap().status, 405);
    // The genuine request: taken once; Webex (or a proxy) repeating it: 200, still once.
    assert_eq!(
        b.channel
            .handle_webhook(request(&body, Some(&sig)))
            .unwrap()
            .status,
        200
    );
    assert_eq!(
        b.channel
            .handle_webhook(request(&body, Some(&sig)))
            .unwrap()
            .status,
        200
    );
    assert_eq!(b.mem.inbound().len(), 1);
}

#[test]
fn an_old_signed_event_is_refused_as_a_replay() {
    let b = bench();
    let id = b.fake.post(DM_ANN, ANN, "from long ago", None, &[], &[]);
    let hook = b
        .fake
        .webhooks()
        .into_iter()
        .find(|h| h.event == "created" && h.resource == "messages")
        .unwrap();
    let mut env = b.fake.envelope(&hook, &id);
    env["data"]["created"] = json!("2015-10-18T14:26:16.000Z");
    let body = env.to_string().into_bytes();
    let answer = b
        .channel
        .handle_webhook(request(&body, Some(&signature(WEBHOOK_SECRET, &body))))
        .unwrap();
    assert_eq!(answer.status, 401);
    // From the future too.
    env["data"]["created"] = json!("2999-01-01T00:00:00.000Z");
    let body = env.to_string().into_bytes();
    let answer = b
        .channel
        .handle_webhook(request(&body, Some(&signature(WEBHOOK_SECRET, &body))))
        .unwrap();
    assert_eq!(answer.status, 401);
    assert!(b.mem.inbound().is_empty());
    assert!(b.fake.harness().calls_to("messages.get").is_empty());
}

#[test]
fn dms_group_mentions_threads_and_own_messages() {
    let b = bench();
    let dm = b.say(DM_ANN, ANN, "hello in the DM", None, false);
    let asked = b.say(TEAM, BOB, "Claw are you there?", None, true);
    let reply = b.say(TEAM, BOB, "Claw and then?", Some(&asked), true);
    // The bot's own message (Webex tells bots about them too): dropped unfetched.
    let own = b.fake.post(DM_ANN, BOT_ID, "my own", None, &[], &[]);
    assert_eq!(b.notify("messages", "created", &own), 200);
    let events = b.mem.inbound();
    assert_eq!(events.len(), 3, "{events:?}");
    let (d, g, r) = (&events[0], &events[1], &events[2]);
    assert_eq!(d.chat_id.as_str(), DM_ANN);
    assert_eq!(d.message_id.as_str(), dm);
    assert!(!d.is_group && d.mentioned);
    assert_eq!(d.thread_id, RNone);
    assert_eq!(d.sender.as_ref().unwrap().handle.as_str(), ANN);
    assert_eq!(d.text.as_str(), "hello in the DM");
    assert!(d.timestamp_ms > 1_700_000_000_000);
    assert_eq!(g.chat_id.as_str(), TEAM);
    assert!(g.is_group && g.mentioned);
    assert_eq!(
        g.thread_id.as_ref().map(|t| t.as_str()),
        RSome(asked.as_str())
    );
    assert_eq!(r.message_id.as_str(), reply);
    assert_eq!(
        r.thread_id.as_ref().map(|t| t.as_str()),
        RSome(asked.as_str())
    );
    assert!(r.extra_json.as_str().contains(&asked));
    assert_eq!(b.fake.harness().calls_to("messages.get").len(), 3);
    // A group message that names no one (Webex would not send it; a mention of @all counts).
    let plain = b.fake.post(TEAM, ANN, "just chatting", None, &[], &[]);
    assert_eq!(b.notify("messages", "created", &plain), 200);
    assert!(!b.mem.inbound()[3].mentioned);
}

#[test]
fn files_are_downloaded_with_the_token_from_webex_only() {
    let b = bench();
    let png = b"\x89PNG\r\n\x1a\nfake image";
    let id = b.fake.post(
        DM_ANN,
        ANN,
        "a picture",
        None,
        &[],
        &[("cat.png", "image/png", png)],
    );
    assert_eq!(b.notify("messages", "created", &id), 200);
    let event = &b.mem.inbound()[0];
    assert_eq!(event.attachments.len(), 1);
    let a = &event.attachments[0];
    assert_eq!(a.kind.as_str(), "image");
    assert_eq!(a.name.as_str(), "cat.png");
    assert_eq!(a.mime_type.as_str(), "image/png");
    assert_eq!(a.data.as_slice(), png);
    let calls = b.fake.harness().calls_to("contents");
    assert_eq!(
        calls[0].header("authorization"),
        Some(format!("Bearer {BOT_TOKEN}").as_str())
    );

    // Too large: the message arrives, the file without content.
    let fake = FakeWebex::start();
    let mem = MemoryHost::new();
    let small = create(&fake, &mem, json!({"max_file_bytes": 4})).unwrap();
    small.start().unwrap();
    let id = fake.post(
        DM_ANN,
        ANN,
        "big",
        None,
        &[],
        &[("big.bin", "application/octet-stream", &[0u8; 64])],
    );
    let (body, sig) = fake.signed("messages", "created", &id, WEBHOOK_SECRET);
    assert_eq!(
        small
            .handle_webhook(request(&body, Some(&sig)))
            .unwrap()
            .status,
        200
    );
    let event = &mem.inbound()[0];
    assert_eq!(event.text.as_str(), "big");
    assert!(event.attachments[0].data.is_empty());
    // Another file host: the token is never sent there.
    let fake2 = FakeWebex::start();
    let mem2 = MemoryHost::new();
    let elsewhere = create(
        &fake2,
        &mem2,
        json!({"file_hosts": ["https://webexapis.com"]}),
    )
    .unwrap();
    elsewhere.start().unwrap();
    let id = fake2.post(
        DM_ANN,
        ANN,
        "file",
        None,
        &[],
        &[("a.txt", "text/plain", b"abc")],
    );
    let (body, sig) = fake2.signed("messages", "created", &id, WEBHOOK_SECRET);
    assert_eq!(
        elsewhere
            .handle_webhook(request(&body, Some(&sig)))
            .unwrap()
            .status,
        200
    );
    assert!(mem2.inbound()[0].attachments[0].data.is_empty());
    assert!(fake2.harness().calls_to("contents").is_empty());
}

#[test]
fn a_refused_event_is_retried_until_the_host_takes_it() {
    let b = bench();
    b.mem.set_reject_inbound(Some(PluginError::other("busy")));
    let id = b.fake.post(DM_ANN, ANN, "try again", None, &[], &[]);
    assert_eq!(b.notify("messages", "created", &id), 200);
    assert!(b.mem.inbound().is_empty());
    b.mem.set_reject_inbound(None);
    assert!(wait_until(Duration::from_secs(10), || b
        .mem
        .inbound()
        .len()
        == 1));
    // Webex being down when the message is fetched: retried too.
    b.fake
        .harness()
        .fail_next(Route::named("messages.get"), 1, Fault::server_error());
    let id = b.fake.post(DM_ANN, ANN, "after an outage", None, &[], &[]);
    assert_eq!(b.notify("messages", "created", &id), 200);
    assert!(wait_until(Duration::from_secs(10), || b
        .mem
        .inbound()
        .len()
        == 2));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(b.mem.inbound().len(), 2);
}

#[test]
fn card_clicks_become_actions_with_the_clicker() {
    let b = bench();
    let mut card = message(DM_ANN, "Allow Bob?");
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
    let ids = testing::send(&b.channel, card).expect("sent");
    let posted = b.fake.message(ids[0].as_deref().unwrap()).unwrap();
    let buttons = posted.buttons();
    assert_eq!(buttons.len(), 2);
    assert_eq!(buttons[0].0, "Allow");
    let action = b.fake.submit(&posted.id, ANN, &buttons[0].1);
    assert_eq!(b.notify("attachmentActions", "created", &action), 200);
    assert_eq!(b.notify("attachmentActions", "created", &action), 200);
    let actions = b.mem.actions();
    assert_eq!(actions.len(), 1, "a repeat is one click");
    assert_eq!(actions[0].action_id.as_str(), "ncq:q1:0");
    assert_eq!(actions[0].clicker.handle.as_str(), ANN);
    assert_eq!(actions[0].chat_id.as_str(), DM_ANN);
    assert_eq!(actions[0].message_id.as_str(), posted.id);
    // Another card's submit (not ours): ignored.
    let foreign = b.fake.submit(&posted.id, ANN, &json!({"Name": "x"}));
    assert_eq!(b.notify("attachmentActions", "created", &foreign), 200);
    assert_eq!(b.mem.actions().len(), 1);
}

#[test]
fn deletions_reach_the_host_in_their_thread() {
    let b = bench();
    let dm = b.say(DM_ANN, ANN, "oops", None, false);
    let root = b.say(TEAM, BOB, "Claw first", None, true);
    let reply = b.say(TEAM, BOB, "Claw second", Some(&root), true);
    for id in [&dm, &reply, &root] {
        b.fake.delete(id);
        assert_eq!(b.notify("messages", "deleted", id), 200);
    }
    // A repeat of a deletion: once.
    assert_eq!(b.notify("messages", "deleted", &dm), 200);
    let d = b.mem.deletions();
    assert_eq!(d.len(), 3, "{d:?}");
    assert_eq!(
        (d[0].chat_id.as_str(), d[0].message_id.as_str()),
        (DM_ANN, dm.as_str())
    );
    assert_eq!(d[0].thread_id, RNone);
    assert_eq!(d[1].message_id.as_str(), reply);
    assert_eq!(
        d[1].thread_id.as_ref().map(|t| t.as_str()),
        RSome(root.as_str())
    );
    assert_eq!(
        d[2].thread_id.as_ref().map(|t| t.as_str()),
        RSome(root.as_str())
    );
    // Forged: nothing.
    let (body, _) = b.fake.signed("messages", "deleted", &dm, WEBHOOK_SECRET);
    assert_eq!(
        b.channel
            .handle_webhook(request(&body, Some("00")))
            .unwrap()
            .status,
        401
    );
    assert_eq!(b.mem.deletions().len(), 3);
}

#[test]
fn long_replies_are_split_within_7439_bytes() {
    let b = bench();
    let mut long = String::new();
    for i in 0..2500 {
        long.push_str(&format!("wörd{i} "));
    }
    let ids = testing::send(&b.channel, message(DM_ANN, &long)).expect("sent");
    assert!(ids.len() >= 3, "{} parts", ids.len());
    let sent = b.fake.bot_messages(DM_ANN);
    assert_eq!(sent.len(), ids.len());
    let mut words = Vec::new();
    for m in &sent {
        let md = m.markdown.clone().unwrap();
        assert!(md.len() <= MAX_TEXT_BYTES, "{} bytes", md.len());
        words.extend(md.split_whitespace().map(str::to_owned));
    }
    let expected: Vec<String> = long.split_whitespace().map(str::to_owned).collect();
    assert_eq!(words, expected);
}

#[test]
fn replies_files_edits_and_markdown() {
    let b = bench();
    let root = b.say(TEAM, BOB, "Claw files please", None, true);
    let mut m = message(TEAM, "**here** you go");
    m.thread_id = RSome(root.clone().into());
    m.files = vec![
        OutboundFile {
            name: "a.txt".into(),
            mime_type: "text/plain".into(),
            data: b"one".to_vec().into(),
        },
        OutboundFile {
            name: "../b.txt".into(),
            mime_type: "text/plain".into(),
            data: b"two".to_vec().into(),
        },
    ]
    .into();
    let ids = testing::send(&b.channel, m).expect("sent");
    let sent = b.fake.bot_messages(TEAM);
    assert_eq!(sent.len(), 3, "text, then one message per file");
    assert!(
        sent.iter()
            .all(|s| s.parent_id.as_deref() == Some(root.as_str()))
    );
    assert_eq!(sent[0].markdown.as_deref(), Some("**here** you go"));
    let names: Vec<String> = sent[1..]
        .iter()
        .map(|s| {
            b.fake
                .content(s.files[0].rsplit('/').next().unwrap())
                .unwrap()
                .name
        })
        .collect();
    assert_eq!(names, ["a.txt", "b.txt"]);
    // Edit the text.
    let edit = OutboundMessage {
        op: OutboundOp::EDIT,
        chat_id: TEAM.into(),
        text: "edited".into(),
        target_message_id: RSome(ids[0].clone().unwrap().into()),
        ..Default::default()
    };
    testing::send(&b.channel, edit).expect("edited");
    assert_eq!(
        b.fake.message(ids[0].as_deref().unwrap()).unwrap().text,
        "edited"
    );
    // Reactions are not a Webex bot feature.
    let react = OutboundMessage {
        op: OutboundOp::REACT,
        chat_id: TEAM.into(),
        reaction: "thumbs_up".into(),
        target_message_id: RSome(root.into()),
        ..Default::default()
    };
    assert_eq!(
        testing::send(&b.channel, react).unwrap_err().kind,
        ErrorKind::UNSUPPORTED
    );
    // Unknown space: NOT_FOUND; not an id: INVALID_INPUT.
    let err = testing::send(
        &b.channel,
        message("Y2lzY29zcGFyazovL3VzL1JPT00vbm9uZQ", "x"),
    )
    .unwrap_err();
    assert_eq!(err.kind, ErrorKind::NOT_FOUND);
    let err = testing::send(&b.channel, message("no/such", "x")).unwrap_err();
    assert_eq!(err.kind, ErrorKind::INVALID_INPUT);
}

#[test]
fn rate_limits_come_back_with_retry_after() {
    let b = bench();
    b.fake.harness().fail_next(
        Route::named("messages.create"),
        1,
        Fault::rate_limited(Duration::from_secs(7)),
    );
    let err = testing::send(&b.channel, message(DM_ANN, "hi")).unwrap_err();
    assert_eq!(err.kind, ErrorKind::RATE_LIMITED);
    assert_eq!(err.retry_after_ms, RSome(7000));
    // The space is paused meanwhile: the next post is refused without a call.
    let before = b.fake.harness().calls_to("messages.create").len();
    let err = testing::send(&b.channel, message(DM_ANN, "again")).unwrap_err();
    assert_eq!(err.kind, ErrorKind::RATE_LIMITED);
    assert_eq!(b.fake.harness().calls_to("messages.create").len(), before);
    // Another space is not.
    testing::send(&b.channel, message(TEAM, "elsewhere")).expect("sent");
}

#[test]
fn open_dm_finds_or_makes_the_one_to_one_space() {
    let b = bench();
    // Ann has written to the bot: her space is found through the API.
    b.fake.post(DM_ANN, ANN, "hi", None, &[], &[]);
    assert_eq!(b.channel.open_dm(ANN).unwrap(), DM_ANN);
    // Bob never has: a person chat, which creates the space on the first post.
    let chat = b.channel.open_dm(BOB).unwrap();
    assert_eq!(chat, format!("person:{BOB}"));
    let mut card = message(&chat, "Approve?");
    card.buttons = vec![Button {
        id: "ncq:q2:0".into(),
        label: "Yes".into(),
    }]
    .into();
    let ids = testing::send(&b.channel, card).expect("sent");
    let posted = b.fake.message(ids[0].as_deref().unwrap()).unwrap();
    assert_eq!(posted.room_type, "direct");
    // From now on the real space.
    assert_eq!(b.channel.open_dm(BOB).unwrap(), posted.room_id);
    assert_eq!(
        b.channel.open_dm("not an id").unwrap_err().kind,
        ErrorKind::INVALID_INPUT
    );
    assert_eq!(
        b.channel
            .open_dm("Y2lzY29zcGFyazovL3VzL1BFT1BMRS9ub2JvZHk")
            .unwrap_err()
            .kind,
        ErrorKind::NOT_FOUND
    );
}
