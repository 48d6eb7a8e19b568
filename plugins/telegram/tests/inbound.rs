//! Telegram → host, through the fake Bot API: ids, names, mentions, replies, clicks, files.

mod common;

use common::*;
use nanoclaw_fake_telegram::{FileKind, FileSpec, Person, UserMessage};
use nanoclaw_plugin_api::kit::Channel;
use nanoclaw_plugin_api::kit::prelude::*;
use nanoclaw_plugin_api::kit::testing::MemoryHost;
use serde_json::json;

fn name(opt: &ROption<RString>) -> Option<&str> {
    opt.as_ref().map(RString::as_str).into_option()
}

#[test]
fn a_dm_reaches_the_host_with_raw_ids_and_names() {
    let fake = fake();
    let mem = MemoryHost::new();
    let channel = started(&fake, &mem);
    assert_eq!(channel.bot_username().as_deref(), Some("nanoclaw_test_bot"));

    let delivered = fake
        .send_user_message(UserMessage::private(ann(), "hello there"))
        .expect("inject");
    wait_until("the DM", || mem.inbound().len() == 1);
    let ev = &mem.inbound()[0];
    assert_eq!(ev.chat_id.as_str(), "6037840640");
    assert_eq!(ev.message_id.as_str(), delivered.message_id.to_string());
    assert_eq!(ev.text.as_str(), "hello there");
    assert_eq!(name(&ev.chat_name), Some("Ann Lee"));
    assert!(ev.mentioned, "a DM is a mention");
    assert!(!ev.is_group);
    assert!(ev.timestamp_ms > 0);
    let sender = ev.sender.as_ref().into_option().expect("sender");
    assert_eq!(sender.handle.as_str(), "6037840640");
    assert_eq!(name(&sender.display_name), Some("Ann Lee"));
    assert!(!sender.is_bot);
    assert!(ev.attachments.is_empty() && ev.reply_to.is_none());

    // start: getMe, then deleteWebhook keeping pending updates, then long polls for exactly
    // what the plugin handles.
    let methods: Vec<String> = fake.calls().into_iter().map(|c| c.method).take(3).collect();
    assert_eq!(methods, ["getMe", "deleteWebhook", "getUpdates"]);
    let delete = &fake.calls_of("deleteWebhook")[0];
    assert_eq!(delete.params["drop_pending_updates"], json!(false));
    let poll = &fake.calls_of("getUpdates")[0];
    assert_eq!(
        poll.params["allowed_updates"],
        json!(["message", "callback_query"])
    );
    assert_eq!(poll.params["timeout"], json!(5));

    // Health: OK, with ingest progress; the offset confirms the update.
    let health = channel.health();
    assert_eq!(health.status, HealthStatus::OK, "{health:?}");
    assert!(health.last_ingest_ms > 0);
    let next = (delivered.update_id + 1).to_string();
    wait_until("the offset to be stored", || {
        mem.host().kv_get("offset").ok().flatten().as_deref() == Some(next.as_str())
    });
    wait_until("the update to be confirmed", || fake.pending_updates() == 0);
    channel.teardown();
}

#[test]
fn pending_updates_from_before_start_are_delivered() {
    let fake = fake();
    fake.send_user_message(UserMessage::private(ann(), "sent while we were down"))
        .expect("inject");
    let mem = MemoryHost::new();
    let channel = started(&fake, &mem);
    wait_until("the pending message", || {
        texts(&mem) == ["sent while we were down"]
    });
    channel.teardown();
}

#[test]
fn group_messages_are_mentioned_only_when_the_bot_is_addressed() {
    let fake = fake();
    let mem = MemoryHost::new();
    let channel = started(&fake, &mem);
    let group = |text: &str| UserMessage::group(-1_001_234_567_890, "Team", bob(), text);
    let cases: Vec<(UserMessage, bool)> = vec![
        (group("just chatting"), false),
        (group("@nanoclaw_test_bot what's up"), true),
        (group("hey @NanoClaw_Test_Bot"), true),
        (group("@someone_else look at this"), false),
        (group("/status@nanoclaw_test_bot"), true),
        (group("/status"), false),
        (
            group("Claw, summarise").text_mention("Claw", fake.bot()),
            true,
        ),
        (group("Ann, look").text_mention("Ann", ann()), false),
    ];
    let expected: Vec<(String, bool)> = cases
        .iter()
        .map(|(m, mentioned)| (m.text.clone(), *mentioned))
        .collect();
    for (message, _) in cases {
        fake.send_user_message(message).expect("inject");
    }
    wait_until("all group messages", || {
        mem.inbound().len() == expected.len()
    });
    let got: Vec<(String, bool)> = mem
        .inbound()
        .iter()
        .map(|e| (e.text.to_string(), e.mentioned))
        .collect();
    assert_eq!(got, expected);
    for ev in mem.inbound() {
        assert!(ev.is_group);
        assert_eq!(ev.chat_id.as_str(), "-1001234567890");
        assert_eq!(name(&ev.chat_name), Some("Team"));
        let sender = ev.sender.as_ref().into_option().expect("sender");
        assert_eq!(sender.handle.as_str(), "7000000001");
    }
    channel.teardown();
}

#[test]
fn a_reply_to_the_bot_is_a_mention_and_carries_the_quote() {
    let fake = fake();
    let mem = MemoryHost::new();
    let channel = started(&fake, &mem);
    // A small group (not a supergroup): the bot sees the chat once someone writes.
    fake.send_user_message(UserMessage::group(-4242, "Family", bob(), "hi all"))
        .expect("inject");
    wait_until("the first message", || mem.inbound().len() == 1);
    let bot_msg = channel
        .deliver(OutboundMessage {
            chat_id: "-4242".into(),
            text: "The answer is **42**".into(),
            ..Default::default()
        })
        .expect("deliver")
        .expect("message id");
    let bot_msg: i64 = bot_msg.parse().expect("numeric id");

    // Bob replies to the bot, quoting part of it; Ann replies to Bob.
    let first = mem.inbound()[0].message_id.to_string();
    fake.send_user_message(
        UserMessage::group(-4242, "Family", bob(), "why 42?")
            .reply_to(bot_msg)
            .quote("42"),
    )
    .expect("inject");
    fake.send_user_message(
        UserMessage::group(-4242, "Family", ann(), "me too").reply_to(first.parse().expect("id")),
    )
    .expect("inject");
    wait_until("both replies", || mem.inbound().len() == 3);
    let inbound = mem.inbound();

    let to_bot = &inbound[1];
    assert!(to_bot.mentioned, "a reply to the bot addresses it");
    let quote = to_bot.reply_to.as_ref().into_option().expect("quote");
    assert_eq!(quote.text.as_str(), "42");
    assert_eq!(name(&quote.sender), Some("NanoClaw Test Bot"));
    assert_eq!(name(&quote.message_id), Some(bot_msg.to_string().as_str()));

    let to_bob = &inbound[2];
    assert!(!to_bob.mentioned);
    let quote = to_bob.reply_to.as_ref().into_option().expect("quote");
    assert_eq!(quote.text.as_str(), "hi all");
    assert_eq!(name(&quote.sender), Some("Bob"));
    channel.teardown();
}

#[test]
fn own_messages_are_ignored_and_other_bots_are_marked() {
    let fake = fake();
    let mem = MemoryHost::new();
    let channel = started(&fake, &mem);
    fake.send_user_message(UserMessage::group(-77, "G", fake.bot(), "my own echo"))
        .expect("inject");
    let helper = Person::new(555, "Helper").username("helper_bot").bot();
    fake.send_user_message(UserMessage::group(-77, "G", helper, "beep"))
        .expect("inject");
    wait_until("the other bot's message", || !mem.inbound().is_empty());
    wait_until("both updates confirmed", || fake.pending_updates() == 0);
    let inbound = mem.inbound();
    assert_eq!(texts(&mem), ["beep"]);
    assert!(
        inbound[0]
            .sender
            .as_ref()
            .into_option()
            .expect("sender")
            .is_bot
    );
    channel.teardown();
}

#[test]
fn allowed_chats_drops_everyone_else_but_still_confirms() {
    let fake = fake();
    let mem = MemoryHost::new();
    let mut s = settings(&fake);
    s["allowed_chats"] = json!([ann().id]);
    let channel = create_with(mem.host(), s).expect("create");
    channel.start().expect("start");
    fake.send_user_message(UserMessage::private(bob(), "let me in"))
        .expect("inject");
    fake.send_user_message(UserMessage::private(ann(), "it's me"))
        .expect("inject");
    wait_until("Ann's message", || !mem.inbound().is_empty());
    wait_until("both confirmed", || fake.pending_updates() == 0);
    assert_eq!(texts(&mem), ["it's me"]);
    channel.teardown();
}

#[test]
fn a_click_becomes_an_action_and_is_answered() {
    let fake = fake();
    let mem = MemoryHost::new();
    let channel = started(&fake, &mem);
    fake.send_user_message(UserMessage::private(ann(), "ask me"))
        .expect("inject");
    wait_until("the DM", || mem.inbound().len() == 1);
    let card = channel
        .deliver(OutboundMessage {
            chat_id: "6037840640".into(),
            text: "**Deploy?**".into(),
            buttons: vec![
                Button {
                    id: "ncq:q1:0".into(),
                    label: "Yes".into(),
                },
                Button {
                    id: "ncq:q1:1".into(),
                    label: "No".into(),
                },
            ]
            .into(),
            ..Default::default()
        })
        .expect("deliver")
        .expect("id");
    let card_id: i64 = card.parse().expect("numeric");
    let query = fake
        .click(ann().id, card_id, &ann(), "ncq:q1:1")
        .expect("click");
    wait_until("the action", || mem.actions().len() == 1);
    let action = &mem.actions()[0];
    assert_eq!(action.action_id.as_str(), "ncq:q1:1");
    assert_eq!(action.chat_id.as_str(), "6037840640");
    assert_eq!(action.message_id.as_str(), card);
    assert_eq!(action.clicker.handle.as_str(), "6037840640");
    assert_eq!(name(&action.clicker.display_name), Some("Ann Lee"));
    wait_until("answerCallbackQuery", || {
        fake.sent()
            .iter()
            .any(|s| s.callback_query_id.as_deref() == Some(query.as_str()))
    });
    // The click did not become a message.
    assert_eq!(mem.inbound().len(), 1);
    channel.teardown();
}

#[test]
fn files_are_downloaded_into_attachments() {
    let fake = fake();
    let mem = MemoryHost::new();
    let channel = started(&fake, &mem);
    let photo: Vec<u8> = (0..60_000u32).map(|i| (i * 7 % 251) as u8).collect();
    fake.send_user_message(UserMessage::private(ann(), "look at this").photo(photo.clone()))
        .expect("inject");
    let pdf = b"%PDF-1.4 a tiny document".to_vec();
    fake.send_user_message(UserMessage::private(ann(), "").document(
        "report.pdf",
        "application/pdf",
        pdf.clone(),
    ))
    .expect("inject");
    fake.send_user_message(UserMessage::private(ann(), "").file(FileSpec {
        kind: FileKind::Voice,
        name: None,
        mime_type: Some("audio/ogg".into()),
        data: b"OggS voice".to_vec(),
        declared_size: None,
    }))
    .expect("inject");
    // Over the Bot API's 20 MB download limit: metadata only, no getFile.
    fake.send_user_message(UserMessage::private(ann(), "huge").file(FileSpec {
        kind: FileKind::Video,
        name: Some("movie.mp4".into()),
        mime_type: Some("video/mp4".into()),
        data: Vec::new(),
        declared_size: Some(25 * 1024 * 1024),
    }))
    .expect("inject");
    wait_until("four messages", || mem.inbound().len() == 4);
    let inbound = mem.inbound();

    let att = &inbound[0].attachments[0];
    assert_eq!(
        inbound[0].text.as_str(),
        "look at this",
        "the caption is the text"
    );
    assert_eq!(att.kind.as_str(), "image");
    assert_eq!(att.mime_type.as_str(), "image/jpeg");
    assert_eq!(
        att.data.as_slice(),
        photo.as_slice(),
        "the largest size, in full"
    );
    assert_eq!(att.size, photo.len() as u64);
    assert!(att.url.is_none(), "a file URL would carry the token");

    let att = &inbound[1].attachments[0];
    assert_eq!(
        (att.kind.as_str(), att.name.as_str()),
        ("file", "report.pdf")
    );
    assert_eq!(att.mime_type.as_str(), "application/pdf");
    assert_eq!(att.data.as_slice(), pdf.as_slice());

    let att = &inbound[2].attachments[0];
    assert_eq!(
        (att.kind.as_str(), att.mime_type.as_str()),
        ("voice", "audio/ogg")
    );
    assert_eq!(att.data.as_slice(), b"OggS voice");

    let att = &inbound[3].attachments[0];
    assert_eq!(
        (att.kind.as_str(), att.name.as_str()),
        ("video", "movie.mp4")
    );
    assert_eq!(att.size, 25 * 1024 * 1024);
    assert!(att.data.is_empty());
    assert_eq!(
        fake.calls_of("getFile").len(),
        3,
        "no getFile for the 25 MB video"
    );
    assert!(
        mem.logs()
            .iter()
            .any(|l| l.message.contains("movie.mp4") && l.message.contains("20 MB")),
        "the skipped download is logged"
    );
    channel.teardown();
}
