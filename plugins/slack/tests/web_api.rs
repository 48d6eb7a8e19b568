//! The Web API against the fake: start, rendering and splitting, threads, buttons, edits,
//! reactions, files, open_dm, error classification and rate limits.

mod common;

use std::time::{Duration, Instant};

use common::*;
use nanoclaw_fake_platform::{Fault, Route};
use nanoclaw_plugin_api::kit::prelude::*;
use nanoclaw_plugin_api::kit::testing::{self, MemoryHost};
use serde_json::json;

fn text(chat: &str, text: &str) -> OutboundMessage {
    OutboundMessage {
        chat_id: chat.into(),
        text: text.into(),
        ..OutboundMessage::default()
    }
}

#[test]
fn start_checks_the_bot_token() {
    let b = events_api();
    let calls = b.fake.harness().calls_to("auth.test");
    assert_eq!(calls.len(), 1);
    assert_eq!(
        calls[0].header("authorization"),
        Some(format!("Bearer {BOT_TOKEN}").as_str())
    );
    assert!(
        calls[0]
            .header("user-agent")
            .is_some_and(|ua| ua.starts_with("nanoclaw-slack/"))
    );
    assert_eq!(b.channel.bot_user_id().as_deref(), Some(BOT_USER));
    assert_eq!(b.channel.health().status, HealthStatus::OK);

    let mem = MemoryHost::new();
    let revoked = "xoxb-0000-1111-revokedtoken";
    let channel = create(
        &b.fake,
        &mem,
        json!({"bot_token": revoked, "signing_secret": SIGNING_SECRET}),
    )
    .expect("create");
    let err = channel.start().expect_err("refused");
    assert_eq!(err.kind, ErrorKind::AUTH, "{err}");
    assert!(err.message.contains("SLACK_BOT_TOKEN"), "{err}");
    assert!(!err.message.contains(revoked), "{err}");
    assert_eq!(channel.health().status, HealthStatus::DOWN);

    // Slack down: NETWORK, which the host retries.
    b.fake
        .harness()
        .fail_next(Route::named("auth.test"), 1, Fault::server_error());
    let channel = create(
        &b.fake,
        &MemoryHost::new(),
        json!({"bot_token": BOT_TOKEN, "signing_secret": SIGNING_SECRET}),
    )
    .expect("create");
    assert_eq!(channel.start().expect_err("5xx").kind, ErrorKind::NETWORK);
}

#[test]
fn markdown_becomes_mrkdwn_split_within_the_limit_in_the_thread() {
    let b = events_api();
    let ids = testing::send(
        &b.channel,
        OutboundMessage {
            thread_id: RSome("1700000200.000300".into()),
            ..text(
                GENERAL,
                "**bold** and _it_ and [a link](https://example.com) a<b",
            )
        },
    )
    .expect("send");
    assert_eq!(ids.len(), 1);
    let posted = b.fake.messages();
    assert_eq!(
        posted[0].text,
        "*bold* and _it_ and <https://example.com|a link> a&lt;b"
    );
    assert_eq!(posted[0].thread_ts.as_deref(), Some("1700000200.000300"));
    assert_eq!(ids[0].as_deref(), Some(posted[0].ts.as_str()));
    let call = &b.fake.harness().calls_to("chat.postMessage")[0];
    let body = call.body_json().expect("json");
    assert_eq!(body["unfurl_links"], false);
    assert!(
        call.header("content-type")
            .is_some_and(|c| c.starts_with("application/json"))
    );

    // A long answer: parts of at most 3000 characters, all in the thread, in order.
    let paragraph = "word ".repeat(190);
    let long: Vec<String> = (0..20).map(|i| format!("{i} {paragraph}")).collect();
    let long = long.join("\n\n");
    let ids = testing::send(
        &b.channel,
        OutboundMessage {
            thread_id: RSome("1700000200.000300".into()),
            ..text(GENERAL, &long)
        },
    )
    .expect("send");
    assert!(ids.len() >= 7, "{}", ids.len());
    let parts = &b.fake.messages()[1..];
    assert_eq!(parts.len(), ids.len());
    for part in parts {
        assert!(part.text.chars().count() <= 3000);
        assert_eq!(part.thread_ts.as_deref(), Some("1700000200.000300"));
    }
    assert!(parts[0].text.starts_with("0 word"));
    let words: usize = parts.iter().map(|p| p.text.matches("word").count()).sum();
    assert_eq!(words, 20 * 190, "nothing lost at the cuts");
}

#[test]
fn buttons_edits_and_reactions() {
    let b = events_api();
    let card = OutboundMessage {
        buttons: vec![
            Button {
                id: "ncq:appr-42:0".into(),
                label: "Allow".into(),
            },
            Button {
                id: "ncq:appr-42:1".into(),
                label: "Deny".into(),
            },
        ]
        .into(),
        ..text(DM_ANN, "Allow the agent to install a package?")
    };
    let ids = testing::send(&b.channel, card).expect("card");
    let card_ts = ids[0].clone().expect("ts");
    let posted = &b.fake.messages()[0];
    let blocks = posted.blocks.as_ref().expect("blocks");
    assert_eq!(blocks[0]["type"], "section");
    assert_eq!(blocks[1]["type"], "actions");
    assert_eq!(blocks[1]["elements"][1]["action_id"], "ncq:appr-42:1");
    assert_eq!(blocks[1]["elements"][1]["text"]["text"], "Deny");
    assert_eq!(posted.text, "Allow the agent to install a package?");

    // The host edits the card after the click: text replaced, buttons gone.
    let edit = OutboundMessage {
        op: OutboundOp::EDIT,
        target_message_id: RSome(card_ts.clone().into()),
        ..text(DM_ANN, "Allowed by **Ann**")
    };
    let ids = testing::send(&b.channel, edit).expect("edit");
    assert_eq!(ids, [Some(card_ts.clone())]);
    let edited = &b.fake.messages()[0];
    assert_eq!(edited.text, "Allowed by *Ann*");
    assert_eq!(
        edited
            .blocks
            .as_ref()
            .expect("blocks")
            .as_array()
            .map(Vec::len),
        Some(1)
    );

    // Reactions, to a user's message; twice is fine.
    let user_ts = b.fake.user_message(DM_ANN, "thanks");
    let react = |name: &str| OutboundMessage {
        op: OutboundOp::REACT,
        reaction: name.into(),
        target_message_id: RSome(user_ts.clone().into()),
        ..text(DM_ANN, "")
    };
    testing::send(&b.channel, react("thumbs_up")).expect("react");
    testing::send(&b.channel, react("thumbs_up")).expect("again");
    testing::send(&b.channel, react("eyes")).expect("eyes");
    assert_eq!(
        b.fake.reactions(),
        [
            (DM_ANN.to_owned(), user_ts.clone(), "+1".to_owned()),
            (DM_ANN.to_owned(), user_ts.clone(), "eyes".to_owned()),
        ]
    );
    let err = testing::send(&b.channel, react("🦖")).expect_err("unknown");
    assert_eq!(err.kind, ErrorKind::INVALID_INPUT);

    // Editing a user's message: Slack refuses; the message's fault.
    let err = testing::send(
        &b.channel,
        OutboundMessage {
            op: OutboundOp::EDIT,
            target_message_id: RSome(user_ts.into()),
            ..text(DM_ANN, "x")
        },
    )
    .expect_err("not ours");
    assert_eq!(err.kind, ErrorKind::INVALID_INPUT, "{err}");
}

#[test]
fn files_are_uploaded_in_three_steps_into_the_thread() {
    let b = events_api();
    let message = OutboundMessage {
        thread_id: RSome("1700000200.000300".into()),
        files: vec![OutboundFile {
            name: "../../etc/report.csv".into(),
            mime_type: "text/csv".into(),
            data: b"a,b\n1,2\n".to_vec().into(),
        }]
        .into(),
        ..text(GENERAL, "The report:")
    };
    let ids = testing::send(&b.channel, message).expect("send");
    assert_eq!(ids.len(), 1);
    let posted = b.fake.messages();
    assert_eq!(posted.len(), 1);
    assert_eq!(posted[0].text, "The report:");
    let shares = b.fake.shares();
    assert_eq!(shares.len(), 1);
    assert_eq!(shares[0].name, "report.csv", "no path in the name");
    assert_eq!(shares[0].data, b"a,b\n1,2\n");
    assert_eq!(shares[0].channel, GENERAL);
    assert_eq!(shares[0].thread_ts.as_deref(), Some("1700000200.000300"));
    let get_url = &b.fake.harness().calls_to("files.getUploadURLExternal")[0];
    assert!(
        get_url
            .header("content-type")
            .is_some_and(|c| c.starts_with("application/x-www-form-urlencoded"))
    );
    let upload = &b.fake.harness().calls_to("upload")[0];
    assert_eq!(
        upload.header("authorization"),
        None,
        "no token to the upload URL"
    );

    // Files only.
    let only = OutboundMessage {
        files: vec![OutboundFile {
            name: "a.txt".into(),
            mime_type: "".into(),
            data: b"x".to_vec().into(),
        }]
        .into(),
        ..text(DM_ANN, "")
    };
    testing::send(&b.channel, only).expect("file only");
    assert_eq!(b.fake.shares().len(), 2);
    assert_eq!(b.fake.messages().len(), 1);
}

#[test]
fn open_dm_resolves_a_user_to_a_dm_channel() {
    let b = events_api();
    assert_eq!(b.channel.open_dm(ANN).expect("dm"), DM_ANN);
    let bob = b.channel.open_dm(BOB).expect("dm");
    assert_eq!(bob, "D0BOB");
    // A cold DM: deliver to the resolved channel.
    testing::send(&b.channel, text(&bob, "An approval needs you")).expect("send");
    assert_eq!(b.fake.messages()[0].channel, "D0BOB");
    let err = b.channel.open_dm("U0NOBODY").expect_err("unknown");
    assert_eq!(err.kind, ErrorKind::NOT_FOUND, "{err}");
    let err = b.channel.open_dm("../x").expect_err("not an id");
    assert_eq!(err.kind, ErrorKind::INVALID_INPUT, "{err}");
    let body = b.fake.harness().calls_to("conversations.open")[0]
        .body_json()
        .expect("json");
    assert_eq!(body["users"], ANN);
}

#[test]
fn slack_errors_are_classified() {
    let b = events_api();
    let err = testing::send(&b.channel, text("C0NOWHERE", "hi")).expect_err("unknown");
    assert_eq!(err.kind, ErrorKind::NOT_FOUND, "{err}");
    assert!(err.message.contains("channel_not_found"), "{err}");
    let err = testing::send(&b.channel, text("C0/../x", "hi")).expect_err("bad id");
    assert_eq!(err.kind, ErrorKind::INVALID_INPUT, "{err}");

    b.fake.harness().fail_next(
        Route::named("chat.postMessage"),
        1,
        Fault::json(200, &json!({"ok": false, "error": "token_revoked"})),
    );
    let err = testing::send(&b.channel, text(GENERAL, "hi")).expect_err("revoked");
    assert_eq!(err.kind, ErrorKind::AUTH, "{err}");
    assert!(!err.message.contains(BOT_TOKEN));

    b.fake.harness().fail_next(
        Route::named("chat.postMessage"),
        1,
        Fault::json(200, &json!({"ok": false, "error": "msg_too_long"})),
    );
    let err = testing::send(&b.channel, text(GENERAL, "hi")).expect_err("too long");
    assert_eq!(err.kind, ErrorKind::INVALID_INPUT, "{err}");

    b.fake
        .harness()
        .fail_next(Route::named("chat.postMessage"), 1, Fault::server_error());
    let err = testing::send(&b.channel, text(GENERAL, "hi")).expect_err("5xx");
    assert_eq!(err.kind, ErrorKind::NETWORK, "{err}");
    assert!(!err.message.contains("127.0.0.1"), "no URL: {err}");
}

#[test]
fn rate_limits_are_honoured() {
    let b = events_api();
    // A 429 with Retry-After: RATE_LIMITED, and the channel waits before its next post.
    b.fake.harness().fail_next(
        Route::named("chat.postMessage"),
        1,
        Fault::rate_limited(Duration::from_secs(1)),
    );
    let err = testing::send(&b.channel, text(GENERAL, "hi")).expect_err("429");
    assert_eq!(err.kind, ErrorKind::RATE_LIMITED, "{err}");
    assert_eq!(err.retry_after_ms, RSome(1000));
    let started = Instant::now();
    testing::send(&b.channel, text(GENERAL, "again")).expect("after the pause");
    assert!(
        started.elapsed() >= Duration::from_millis(700),
        "{:?}",
        started.elapsed()
    );
    // Another channel was not held back by that channel's pause.
    let started = Instant::now();
    testing::send(&b.channel, text(PRIVATE, "elsewhere")).expect("other channel");
    assert!(started.elapsed() < Duration::from_millis(500));

    // ok:false ratelimited on another tier-3 method: RATE_LIMITED too.
    let ts = b.fake.user_message(DM_ANN, "hi");
    b.fake.harness().fail_next(
        Route::named("reactions.add"),
        1,
        Fault::json(200, &json!({"ok": false, "error": "ratelimited"})),
    );
    let err = testing::send(
        &b.channel,
        OutboundMessage {
            op: OutboundOp::REACT,
            reaction: "heart".into(),
            target_message_id: RSome(ts.into()),
            ..text(DM_ANN, "")
        },
    )
    .expect_err("ratelimited");
    assert_eq!(err.kind, ErrorKind::RATE_LIMITED, "{err}");
}

#[test]
fn posts_to_one_channel_are_paced() {
    let fake = FakeSlack::start();
    let mem = MemoryHost::new();
    let channel = create(
        &fake,
        &mem,
        json!({"bot_token": BOT_TOKEN, "signing_secret": SIGNING_SECRET, "post_per_sec": 5}),
    )
    .expect("create");
    channel.start().expect("start");
    let started = Instant::now();
    for i in 0..6 {
        testing::send(&channel, text(GENERAL, &format!("m{i}"))).expect("send");
    }
    // A burst of 3, then one every 200 ms.
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
    let at: Vec<Duration> = fake
        .harness()
        .calls_to("chat.postMessage")
        .iter()
        .map(|c| c.since_start)
        .collect();
    assert!(at[5] - at[3] >= Duration::from_millis(300), "{at:?}");
}
