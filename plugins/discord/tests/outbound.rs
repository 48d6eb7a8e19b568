//! Outbound against the fake: split and rendered text, replies, files, edits, reactions,
//! typing, buttons, open_dm, rate limits and errors.

mod common;

use std::time::{Duration, Instant};

use common::*;
use nanoclaw_fake_platform::{Fault, Route};
use nanoclaw_plugin_api::abi::{Button, ErrorKind, OutboundFile, OutboundMessage, OutboundOp};
use nanoclaw_plugin_api::abi_stable::std_types::RSome;
use nanoclaw_plugin_api::kit::Channel;
use nanoclaw_plugin_api::kit::testing::{MemoryHost, prepare, send};
use nanoclaw_plugin_discord::DiscordChannel;
use serde_json::json;

fn channel(fake: &FakeDiscord) -> (DiscordChannel, MemoryHost) {
    let mem = MemoryHost::new();
    (create_with(mem.host(), settings(fake)), mem)
}

fn message(chat: &str, text: &str) -> OutboundMessage {
    OutboundMessage {
        op: OutboundOp::SEND,
        chat_id: chat.into(),
        text: text.into(),
        ..OutboundMessage::default()
    }
}

#[test]
fn markdown_is_rendered_and_long_text_split_within_2000() {
    let fake_limit = FakeDiscord::start();
    let (limited, _m) = channel(&fake_limit);
    // Emoji count twice, as Discord counts: 1,000 of them fill a message.
    let ids = send(&limited, message(DM_CHANNEL, &"🦀".repeat(1500))).expect("emoji");
    assert_eq!(ids.len(), 2);
    limited.teardown();

    let fake = FakeDiscord::start();
    let (channel, _mem) = channel(&fake);
    let ids = send(
        &channel,
        message(DM_CHANNEL, "# Title\n\n**bold** and _it_ and a_b*c"),
    )
    .expect("send");
    assert_eq!(ids.len(), 1);
    let posted = fake.messages();
    assert_eq!(
        posted[0].content,
        "# Title\n\n**bold** and *it* and a\\_b\\*c"
    );
    assert_eq!(Some(posted[0].id.clone()), ids[0]);
    // @everyone never pings.
    assert_eq!(posted[0].allowed_mentions["parse"], json!(["users"]));

    let paragraph = "word ".repeat(150);
    let long = [paragraph.trim_end(); 8].join("\n\n");
    let mut reply = message(GUILD_CHANNEL, &format!("**start** {long}"));
    reply.target_message_id = RSome("1400000000000000101".into());
    let ids = send(&channel, reply).expect("send");
    assert!(ids.len() >= 3, "{} parts", ids.len());
    let posted: Vec<Posted> = fake.messages().into_iter().skip(1).collect();
    assert_eq!(posted.len(), ids.len());
    for part in &posted {
        assert!(part.content.chars().count() <= 2000);
        assert_eq!(part.channel_id, GUILD_CHANNEL);
    }
    assert_eq!(posted[0].reference.as_deref(), Some("1400000000000000101"));
    assert!(posted[1].reference.is_none(), "only the first part replies");
    let words: usize = posted
        .iter()
        .map(|p| p.content.matches("word").count())
        .sum();
    assert_eq!(words, 8 * 150, "nothing lost at the cuts");
    channel.teardown();
}

#[test]
fn a_resent_part_returns_the_first_message() {
    let fake = FakeDiscord::start();
    let (channel, _mem) = channel(&fake);
    let mut part = message(DM_CHANNEL, "once");
    part.extra_json = json!({"idempotency_key": "msg-1:0"}).to_string().into();
    let first = send(&channel, part.clone()).expect("send");
    let again = send(&channel, part).expect("send again");
    assert_eq!(first, again);
    assert_eq!(fake.messages().len(), 1);
    let nonce = fake.messages()[0].nonce.clone().expect("nonce");
    assert!(nonce.len() <= 25);
    channel.teardown();
}

#[test]
fn files_go_multipart_with_the_last_part() {
    let fake = FakeDiscord::start();
    let (channel, _mem) = channel(&fake);
    let mut m = message(DM_CHANNEL, "the report");
    m.files = vec![
        OutboundFile {
            name: "../report.pdf".into(),
            mime_type: "application/pdf".into(),
            data: b"%PDF-1.7".to_vec().into(),
        },
        OutboundFile {
            name: "chart.png".into(),
            mime_type: "image/png".into(),
            data: vec![0x89, b'P', b'N', b'G'].into(),
        },
    ]
    .into();
    send(&channel, m).expect("send");
    let posted = &fake.messages()[0];
    assert_eq!(posted.content, "the report");
    assert_eq!(
        posted.files,
        [
            ("report.pdf".to_owned(), b"%PDF-1.7".to_vec()),
            ("chart.png".to_owned(), vec![0x89, b'P', b'N', b'G'])
        ]
    );
    let call = &fake.harness.calls_to("create_message")[0];
    assert!(
        call.header("content-type")
            .unwrap()
            .starts_with("multipart/form-data")
    );

    let mut too_big = message(DM_CHANNEL, "");
    too_big.files = vec![OutboundFile {
        name: "big.bin".into(),
        mime_type: String::new().into(),
        data: vec![0; 10 * 1024 * 1024 + 1].into(),
    }]
    .into();
    let err = send(&channel, too_big).expect_err("too big");
    assert_eq!(err.kind, ErrorKind::INVALID_INPUT);
    channel.teardown();
}

#[test]
fn edits_reactions_and_typing() {
    let fake = FakeDiscord::start();
    let (channel, _mem) = channel(&fake);
    let id = send(&channel, message(DM_CHANNEL, "draft")).expect("send")[0]
        .clone()
        .unwrap();
    let edit = OutboundMessage {
        op: OutboundOp::EDIT,
        chat_id: DM_CHANNEL.into(),
        text: "**final**".into(),
        target_message_id: RSome(id.as_str().into()),
        ..OutboundMessage::default()
    };
    let edited = send(&channel, edit).expect("edit");
    assert_eq!(edited, [Some(id.clone())]);
    assert_eq!(fake.messages()[0].content, "**final**");
    // An edit without buttons removes them (an answered card).
    let call = fake
        .harness
        .calls_to("edit_message")
        .pop()
        .expect("edit call");
    assert_eq!(call.body_json().expect("json")["components"], json!([]));

    let react = OutboundMessage {
        op: OutboundOp::REACT,
        chat_id: DM_CHANNEL.into(),
        reaction: "thumbs_up".into(),
        target_message_id: RSome(id.as_str().into()),
        ..OutboundMessage::default()
    };
    assert_eq!(send(&channel, react.clone()).expect("react"), [None]);
    assert_eq!(
        fake.reactions(),
        [(DM_CHANNEL.to_owned(), id.clone(), "👍".to_owned())]
    );
    let call = &fake.harness.calls_to("create_reaction")[0];
    assert!(
        call.path.ends_with("/reactions/%F0%9F%91%8D/@me"),
        "{}",
        call.path
    );

    let mut unknown = react.clone();
    unknown.target_message_id = RSome("1999999999999999999".into());
    assert_eq!(
        send(&channel, unknown).expect_err("404").kind,
        ErrorKind::NOT_FOUND
    );
    let mut bad_id = react;
    bad_id.target_message_id = RSome("../../users/@me".into());
    assert_eq!(
        send(&channel, bad_id).expect_err("bad id").kind,
        ErrorKind::INVALID_INPUT
    );

    channel.set_typing(DM_CHANNEL, None);
    wait_until("typing", || fake.typing() == [DM_CHANNEL.to_owned()]);
    channel.teardown();
}

#[test]
fn buttons_are_action_rows_of_five() {
    let fake = FakeDiscord::start();
    let (channel, _mem) = channel(&fake);
    let mut card = message(GUILD_CHANNEL, "Pick one");
    card.buttons = (0..7)
        .map(|i| Button {
            id: format!("ncq:q42:{i}").into(),
            label: format!("Option {i}").into(),
        })
        .collect::<Vec<_>>()
        .into();
    send(&channel, card.clone()).expect("send");
    let rows = fake.messages()[0].components.clone();
    assert_eq!(rows.as_array().unwrap().len(), 2);
    assert_eq!(rows[0]["type"], 1);
    assert_eq!(rows[0]["components"][4]["custom_id"], "ncq:q42:4");
    assert_eq!(rows[1]["components"][1]["label"], "Option 6");

    card.buttons = vec![Button {
        id: "x".repeat(101).into(),
        label: "too long".into(),
    }]
    .into();
    assert_eq!(
        prepare(&channel, card).expect_err("id").kind,
        ErrorKind::INVALID_INPUT
    );
    channel.teardown();
}

#[test]
fn open_dm_resolves_the_dm_channel() {
    let fake = FakeDiscord::start();
    let (channel, _mem) = channel(&fake);
    let dm = channel.open_dm(BOB).expect("open");
    assert_eq!(channel.open_dm(BOB).expect("again"), dm);
    send(&channel, message(&dm, "hello Bob")).expect("send to the DM");
    let call = &fake.harness.calls_to("create_dm")[0];
    assert_eq!(call.body_json().unwrap(), json!({"recipient_id": BOB}));
    assert_eq!(
        channel
            .open_dm("1999999999999999999")
            .expect_err("unknown")
            .kind,
        ErrorKind::NOT_FOUND
    );
    assert_eq!(
        channel.open_dm("bob").expect_err("not an id").kind,
        ErrorKind::INVALID_INPUT
    );
    channel.teardown();
}

#[test]
fn errors_are_classified_and_never_hold_the_token() {
    let fake = FakeDiscord::start();
    let (channel, _mem) = channel(&fake);
    let err = send(&channel, message("1999999999999999999", "hi")).expect_err("unknown channel");
    assert_eq!(err.kind, ErrorKind::NOT_FOUND);
    assert!(err.message.contains("Unknown Channel"), "{err}");

    let mut settings = settings(&fake);
    settings["bot_token"] = json!("MTEx.wrong.token");
    let mem = MemoryHost::new();
    let wrong = create_with(mem.host(), settings);
    let err = send(&wrong, message(DM_CHANNEL, "hi")).expect_err("401");
    assert_eq!(err.kind, ErrorKind::AUTH);
    assert!(!err.message.contains("wrong.token"));
    wrong.teardown();

    fake.harness
        .fail_next(Route::named("create_message"), 1, Fault::server_error());
    let err = send(&channel, message(DM_CHANNEL, "hi")).expect_err("500");
    assert_eq!(err.kind, ErrorKind::NETWORK);
    channel.teardown();
}

fn rate_limited(retry_after: f64, global: bool) -> Fault {
    let mut body = fixture("rate_limited_429");
    body["retry_after"] = json!(retry_after);
    body["global"] = json!(global);
    let mut fault = Fault::json(429, &body)
        .with_header("retry-after", &retry_after.ceil().to_string())
        .with_header("x-ratelimit-scope", if global { "global" } else { "user" });
    if global {
        fault = fault.with_header("x-ratelimit-global", "true");
    } else {
        fault = fault
            .with_header("x-ratelimit-bucket", "abcd1234")
            .with_header("x-ratelimit-remaining", "0")
            .with_header("x-ratelimit-reset-after", &retry_after.to_string());
    }
    fault.labelled("rate_limited")
}

#[test]
fn a_429_is_waited_out_and_retried() {
    let fake = FakeDiscord::start();
    let (channel, _mem) = channel(&fake);
    fake.harness
        .fail_next(Route::named("create_message"), 1, rate_limited(0.6, false));
    send(&channel, message(DM_CHANNEL, "patient")).expect("sent after the pause");
    let calls = fake.harness.calls_to("create_message");
    assert_eq!(calls.len(), 2);
    let gap = calls[1].since_start - calls[0].since_start;
    assert!(gap >= Duration::from_millis(550), "retried after {gap:?}");
    assert_eq!(fake.messages().len(), 1);

    // A global 429 holds back every route.
    fake.harness
        .fail_next(Route::named("create_message"), 1, rate_limited(0.5, true));
    send(&channel, message(DM_CHANNEL, "global")).expect("sent");
    let calls = fake.harness.calls_to("create_message");
    let gap = calls[3].since_start - calls[2].since_start;
    assert!(gap >= Duration::from_millis(450), "retried after {gap:?}");
    let started = Instant::now();
    channel.open_dm(ANN).expect("open");
    assert!(
        started.elapsed() < Duration::from_millis(400),
        "the pause is over"
    );
    assert_eq!(fake.messages().len(), 2);

    // Longer than a deliver may wait: RATE_LIMITED with the time, for the host to retry.
    fake.harness
        .fail_next(Route::named("create_message"), 1, rate_limited(30.0, false));
    let err = send(&channel, message(DM_CHANNEL, "later")).expect_err("429");
    assert_eq!(err.kind, ErrorKind::RATE_LIMITED);
    let ms = err.retry_after_ms.into_option().expect("retry_after_ms");
    assert!((29_000..=30_000).contains(&ms), "{ms}");
    // The bucket stays paused: the next send does not even reach Discord.
    let before = fake.harness.calls_to("create_message").len();
    let err = send(&channel, message(DM_CHANNEL, "still later")).expect_err("paused");
    assert_eq!(err.kind, ErrorKind::RATE_LIMITED);
    assert_eq!(fake.harness.calls_to("create_message").len(), before);
    // Other channels are other buckets.
    send(&channel, message(GUILD_CHANNEL, "elsewhere")).expect("another channel");
    channel.teardown();
}

#[test]
fn an_exhausted_bucket_waits_for_its_reset() {
    let fake = FakeDiscord::start();
    let (channel, _mem) = channel(&fake);
    fake.set_bucket(Some((0, 0.5)));
    send(&channel, message(DM_CHANNEL, "first")).expect("send");
    fake.set_bucket(None);
    send(&channel, message(DM_CHANNEL, "second")).expect("send");
    let calls = fake.harness.calls_to("create_message");
    let gap = calls[1].since_start - calls[0].since_start;
    assert!(gap >= Duration::from_millis(450), "waited {gap:?}");
    channel.teardown();
}
