//! The Events API over the host's webhook: signatures first, url_verification, inbound
//! messages of every kind, redeliveries, refusals, files and button clicks.

mod common;

use common::*;
use nanoclaw_plugin_api::kit::prelude::*;
use nanoclaw_plugin_api::kit::testing;
use serde_json::{Value, json};

fn body(v: &Value) -> Vec<u8> {
    v.to_string().into_bytes()
}

fn extra(e: &InboundEvent) -> Value {
    serde_json::from_str(e.extra_json.as_str()).unwrap_or(Value::Null)
}

#[test]
fn signatures_are_checked_before_anything_is_parsed() {
    let b = events_api();
    let event = body(&fixture("message_im.json"));
    let ts = now_secs();

    // Wrong secret, missing headers, no v0= prefix, stale, from the future: 401, nothing stored.
    let forged = request(
        &event,
        "application/json",
        &[
            ("x-slack-request-timestamp", ts.to_string()),
            ("x-slack-signature", signature("not-the-secret", ts, &event)),
        ],
    );
    let missing = request(&event, "application/json", &[]);
    let no_prefix = request(
        &event,
        "application/json",
        &[
            ("x-slack-request-timestamp", ts.to_string()),
            (
                "x-slack-signature",
                signature(SIGNING_SECRET, ts, &event).replace("v0=", ""),
            ),
        ],
    );
    let stale = signed_at(&event, "application/json", 6 * 60, &[]);
    let future = signed_at(&event, "application/json", -6 * 60, &[]);
    // A body changed after signing.
    let mut tampered = signed_at(&event, "application/json", 0, &[]);
    tampered.body = body(&fixture("message_channel.json")).into();
    // Garbage that would not even parse: still 401, not 400.
    let garbage = request(
        b"{not json",
        "application/json",
        &[
            ("x-slack-request-timestamp", ts.to_string()),
            ("x-slack-signature", "v0=00".into()),
        ],
    );
    for request in [forged, missing, no_prefix, stale, future, tampered, garbage] {
        let answer = b.channel.handle_webhook(request).expect("answer");
        assert_eq!(answer.status, 401);
    }
    assert!(b.mem.inbound().is_empty());
    assert!(
        b.mem
            .logs()
            .iter()
            .any(|l| l.message.contains("refused a webhook"))
    );
    for line in b.mem.logs() {
        assert!(!line.message.contains(SIGNING_SECRET), "{line:?}");
    }

    // Within the window: taken.
    let recent = signed_at(&event, "application/json", 4 * 60, &[]);
    assert_eq!(
        b.channel.handle_webhook(recent).expect("answer").status,
        200
    );
    assert_eq!(b.mem.inbound().len(), 1);

    // GET is not Slack.
    let mut get = signed_json(&fixture("message_im.json"));
    get.method = "GET".into();
    assert_eq!(b.channel.handle_webhook(get).expect("answer").status, 405);
}

#[test]
fn url_verification_is_answered_with_the_challenge() {
    let b = events_api();
    let challenge = fixture("url_verification.json");
    let answer = b
        .channel
        .handle_webhook(signed_json(&challenge))
        .expect("answer");
    assert_eq!(answer.status, 200);
    let reply: Value = serde_json::from_slice(&answer.body).expect("json");
    assert_eq!(reply["challenge"], challenge["challenge"]);
    // Unsigned: no challenge answered.
    let unsigned = request(&body(&challenge), "application/json", &[]);
    assert_eq!(
        b.channel.handle_webhook(unsigned).expect("answer").status,
        401
    );
    assert!(b.mem.inbound().is_empty());
}

#[test]
fn dms_channels_threads_group_dms_and_mentions() {
    let b = events_api();
    let take = |name: &str| {
        let answer = b
            .channel
            .handle_webhook(signed_json(&fixture(name)))
            .expect("answer");
        assert_eq!(answer.status, 200, "{name}");
    };
    take("message_im.json");
    take("message_channel.json");
    take("message_mention.json");
    take("app_mention.json"); // the same post as message_mention: not a second message
    take("message_thread_reply.json");
    take("message_mpim.json");
    let inbound = b.mem.inbound();
    assert_eq!(inbound.len(), 5, "{inbound:#?}");

    let dm = &inbound[0];
    assert_eq!(dm.chat_id, "D0ANN");
    assert_eq!(dm.message_id, "1700000100.000200");
    assert_eq!(
        dm.sender.as_ref().map(|s| s.handle.as_str()),
        RSome("U0ANN")
    );
    assert_eq!(
        dm.sender
            .as_ref()
            .and_then(|s| s.display_name.as_ref().map(|n| n.as_str()))
            .into_option(),
        Some("ann"),
        "the display name from users.info"
    );
    assert!(!dm.is_group && dm.mentioned, "a DM counts as a mention");
    assert_eq!(dm.thread_id, RNone, "a DM is one conversation");
    assert_eq!(dm.text, "Hello *there*");
    assert_eq!(dm.timestamp_ms, 1_700_000_100_000);

    let channel = &inbound[1];
    assert_eq!(channel.chat_id, "C0GENERAL");
    assert!(channel.is_group && !channel.mentioned);
    assert_eq!(
        channel.thread_id,
        RSome("1700000200.000300".into()),
        "a top-level channel message starts its own thread"
    );

    let mention = &inbound[2];
    assert!(mention.mentioned, "<@bot> in the text");
    assert_eq!(
        mention
            .sender
            .as_ref()
            .and_then(|s| s.display_name.as_ref().map(|n| n.as_str()))
            .into_option(),
        Some("Bob Stone"),
        "no display name set: the real name"
    );
    // Names are cached: one users.info per person.
    assert_eq!(b.fake.harness().calls_to("users.info").len(), 2);
    assert_eq!(
        mention.sender.as_ref().map(|s| s.handle.as_str()),
        RSome("U0BOB")
    );

    let reply = &inbound[3];
    assert_eq!(reply.chat_id, "G0PRIVATE");
    assert_eq!(reply.thread_id, RSome("1700000300.000400".into()));
    assert!(reply.is_group && !reply.mentioned);
    assert_eq!(extra(reply)["thread_ts"], "1700000300.000400");

    let mpim = &inbound[4];
    assert_eq!(mpim.chat_id, "G0MPIM");
    assert!(mpim.is_group);
}

#[test]
fn an_app_mention_alone_is_a_mention() {
    let b = events_api();
    let answer = b
        .channel
        .handle_webhook(signed_json(&fixture("app_mention.json")))
        .expect("answer");
    assert_eq!(answer.status, 200);
    let inbound = b.mem.inbound();
    assert_eq!(inbound.len(), 1);
    assert!(inbound[0].mentioned && inbound[0].is_group);
}

#[test]
fn own_bot_and_system_messages_are_ignored_edits_become_messages() {
    let b = events_api();
    for name in ["own_message.json", "bot_message.json", "channel_join.json"] {
        let answer = b
            .channel
            .handle_webhook(signed_json(&fixture(name)))
            .expect("answer");
        assert_eq!(answer.status, 200, "{name}");
    }
    assert!(b.mem.inbound().is_empty(), "{:#?}", b.mem.inbound());

    let answer = b
        .channel
        .handle_webhook(signed_json(&fixture("message_changed.json")))
        .expect("answer");
    assert_eq!(answer.status, 200);
    let inbound = b.mem.inbound();
    assert_eq!(inbound.len(), 1);
    let edit = &inbound[0];
    assert_eq!(edit.text, "Hello *everyone*");
    assert_eq!(edit.message_id, "1700000100.000200:edit:1700000150.000000");
    assert_eq!(extra(edit)["edit_of"], "1700000100.000200");
    assert_eq!(
        edit.sender.as_ref().map(|s| s.handle.as_str()),
        RSome("U0ANN")
    );

    // An unfurl (message_changed without `edited`) is not an edit.
    let mut unfurl = fixture("message_changed.json");
    unfurl["event"]["message"]
        .as_object_mut()
        .expect("message")
        .remove("edited");
    unfurl["event_id"] = json!("Ev0UNFURL");
    b.channel
        .handle_webhook(signed_json(&unfurl))
        .expect("answer");
    assert_eq!(b.mem.inbound().len(), 1);
}

#[test]
fn deletions_reach_the_host_once() {
    let b = events_api();
    for _ in 0..2 {
        let answer = b
            .channel
            .handle_webhook(signed_json(&fixture("message_deleted.json")))
            .expect("answer");
        assert_eq!(answer.status, 200);
    }
    assert!(b.mem.inbound().is_empty(), "a deletion is not a message");
    let deletions = b.mem.deletions();
    assert_eq!(deletions.len(), 1, "a redelivery is the same deletion");
    assert_eq!(deletions[0].chat_id, "D0ANN");
    assert_eq!(deletions[0].message_id, "1700000100.000200");
    assert!(deletions[0].thread_id.is_none(), "a DM has no thread");

    // In a channel, a top-level message was handed over as its own thread.
    let mut in_channel = fixture("message_deleted.json");
    in_channel["event"]["channel"] = json!("C0CHAN");
    in_channel["event"]["channel_type"] = json!("channel");
    in_channel["event_id"] = json!("Ev0DEL2");
    b.channel
        .handle_webhook(signed_json(&in_channel))
        .expect("answer");
    let deletion = &b.mem.deletions()[1];
    assert_eq!(deletion.thread_id, RSome("1700000100.000200".into()));
}

#[test]
fn redeliveries_are_one_message_and_refusals_are_redelivered() {
    let b = events_api();
    let event = fixture("message_channel.json");
    b.mem
        .set_reject_inbound(Some(PluginError::network("database busy")));
    let refused = b
        .channel
        .handle_webhook(signed_json(&event))
        .expect("answer");
    assert_eq!(refused.status, 503, "Slack retries what is not 2xx");
    b.mem.set_reject_inbound(None);

    let bytes = body(&event);
    for retry in 1..=3 {
        let request = signed_at(
            &bytes,
            "application/json",
            0,
            &[
                ("x-slack-retry-num", retry.to_string()),
                ("x-slack-retry-reason", "http_error".into()),
            ],
        );
        let answer = b.channel.handle_webhook(request).expect("answer");
        assert_eq!(answer.status, 200);
    }
    assert_eq!(b.mem.inbound().len(), 1, "stored once");

    // A host that will never take it: skipped (200), not redelivered forever.
    let mut poison = fixture("message_im.json");
    poison["event"]["ts"] = json!("1700009999.000001");
    b.mem
        .set_reject_inbound(Some(PluginError::invalid_input("bad message")));
    let answer = b
        .channel
        .handle_webhook(signed_json(&poison))
        .expect("answer");
    assert_eq!(answer.status, 200);
    b.mem.set_reject_inbound(None);
}

#[test]
fn files_are_downloaded_with_the_bot_token_from_slack_only() {
    let b = events_api();
    b.fake.host_file("report.pdf", b"%PDF-1.4 ok");
    let text = fixture("message_file_share.json")
        .to_string()
        .replace("{{FILES}}", &format!("{}/files", b.fake.base_url()));
    let answer = b
        .channel
        .handle_webhook(signed_at(text.as_bytes(), "application/json", 0, &[]))
        .expect("answer");
    assert_eq!(answer.status, 200);
    let inbound = b.mem.inbound();
    assert_eq!(inbound.len(), 1);
    let files = &inbound[0].attachments;
    assert_eq!(files.len(), 2);
    assert_eq!(files[0].name, "report.pdf");
    assert_eq!(files[0].mime_type, "application/pdf");
    assert_eq!(files[0].kind, "file");
    assert_eq!(files[0].data.as_slice(), b"%PDF-1.4 ok");
    // The file on another host was not fetched: no token left the workspace.
    assert_eq!(files[1].name, "trap.png");
    assert!(files[1].data.is_empty());
    let fetched = b.fake.harness().calls_to("file");
    assert_eq!(fetched.len(), 1);
    assert_eq!(
        fetched[0].header("authorization"),
        Some(format!("Bearer {BOT_TOKEN}").as_str())
    );
}

#[test]
fn oversized_files_arrive_without_content() {
    let fake = FakeSlack::start();
    let mem = testing::MemoryHost::new();
    let channel = create(
        &fake,
        &mem,
        json!({"bot_token": BOT_TOKEN, "signing_secret": SIGNING_SECRET, "max_file_bytes": 4}),
    )
    .expect("create");
    channel.start().expect("start");
    fake.host_file("report.pdf", b"%PDF-1.4 ok");
    let text = fixture("message_file_share.json")
        .to_string()
        .replace("{{FILES}}", &format!("{}/files", fake.base_url()));
    channel
        .handle_webhook(signed_at(text.as_bytes(), "application/json", 0, &[]))
        .expect("answer");
    let inbound = mem.inbound();
    assert!(inbound[0].attachments[0].data.is_empty());
    assert!(fake.harness().calls_to("file").is_empty());
}

fn form(payload: &Value) -> Vec<u8> {
    let text = payload.to_string();
    let mut out = String::from("payload=");
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.*".contains(&b) {
            out.push(b as char);
        } else if b == b' ' {
            out.push('+');
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out.into_bytes()
}

#[test]
fn button_clicks_come_in_as_actions_with_the_clicker() {
    let b = events_api();
    let payload = fixture("block_actions.json");
    let bytes = form(&payload);
    let click = || signed_at(&bytes, "application/x-www-form-urlencoded", 0, &[]);
    assert_eq!(
        b.channel.handle_webhook(click()).expect("answer").status,
        200
    );
    // Slack retrying the same click: one action.
    assert_eq!(
        b.channel.handle_webhook(click()).expect("answer").status,
        200
    );
    let actions = b.mem.actions();
    assert_eq!(actions.len(), 1);
    let a = &actions[0];
    assert_eq!(a.action_id, "ncq:appr-42:0");
    assert_eq!(a.clicker.handle, "U0ANN");
    assert_eq!(a.chat_id, "D0ANN");
    assert_eq!(a.message_id, "1700000900.000100");

    // A forged click: 401, no action.
    let forged = request(&bytes, "application/x-www-form-urlencoded", &[]);
    assert_eq!(
        b.channel.handle_webhook(forged).expect("answer").status,
        401
    );
    // A slash command: acknowledged, nothing for the host.
    let command = signed_at(
        b"command=%2Fclaw&text=hi&user_id=U0ANN",
        "application/x-www-form-urlencoded",
        0,
        &[],
    );
    assert_eq!(
        b.channel.handle_webhook(command).expect("answer").status,
        200
    );
    assert_eq!(b.mem.actions().len(), 1);
    assert!(b.mem.inbound().is_empty());
}

#[test]
fn replies_in_a_thread_the_bot_posted_in_engage_it() {
    let b = events_api();
    // The bot answers in the thread of Bob's mention.
    let reply = OutboundMessage {
        chat_id: PRIVATE.into(),
        thread_id: RSome("1700000300.000400".into()),
        text: "Sunny.".into(),
        ..OutboundMessage::default()
    };
    testing::send(&b.channel, reply).expect("send");
    b.channel
        .handle_webhook(signed_json(&fixture("message_thread_reply.json")))
        .expect("answer");
    let inbound = b.mem.inbound();
    assert_eq!(inbound.len(), 1);
    assert!(inbound[0].mentioned, "a reply in the bot's thread");
    assert_eq!(extra(&inbound[0])["in_bot_thread"], true);
}

#[test]
fn a_socket_mode_channel_without_signing_secret_takes_no_webhooks() {
    let b = socket_mode();
    let answer = b
        .channel
        .handle_webhook(signed_json(&fixture("message_im.json")))
        .expect("answer");
    assert_eq!(answer.status, 404);
    b.channel.teardown();
}
