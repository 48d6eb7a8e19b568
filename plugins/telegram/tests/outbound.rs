//! Host → Telegram, through the fake Bot API: HTML, fallback, splitting, buttons, edits,
//! reactions, typing, documents, error kinds. Messages go the host's way: `prepare`, then
//! `deliver` per part (`kit::testing::send`).

mod common;

use common::*;
use nanoclaw_fake_telegram::{Commit, Failure, FakeTelegram, Sent, UserMessage};
use nanoclaw_plugin_api::kit::Channel;
use nanoclaw_plugin_api::kit::prelude::*;
use nanoclaw_plugin_api::kit::testing::{self, MemoryHost};
use nanoclaw_plugin_telegram::TelegramChannel;

const ANN: &str = "6037840640";

/// A started plugin with Ann's DM known to the fake; returns Ann's message id.
fn with_dm() -> (FakeTelegram, MemoryHost, TelegramChannel, i64) {
    let fake = fake();
    let mem = MemoryHost::new();
    let channel = started(&fake, &mem);
    let hello = fake
        .send_user_message(UserMessage::private(ann(), "hello"))
        .expect("inject");
    wait_until("the DM", || mem.inbound().len() == 1);
    (fake, mem, channel, hello.message_id)
}

fn text(body: &str) -> OutboundMessage {
    OutboundMessage {
        chat_id: ANN.into(),
        text: body.into(),
        ..Default::default()
    }
}

/// Prepares and delivers `m` as the host does; the first part's id.
fn send(channel: &TelegramChannel, m: OutboundMessage) -> Result<Option<String>, PluginError> {
    testing::send(channel, m).map(|ids| ids.into_iter().next().flatten())
}

fn sent_of(fake: &FakeTelegram, method: &str) -> Vec<Sent> {
    fake.sent()
        .into_iter()
        .filter(|s| s.method == method)
        .collect()
}

#[test]
fn markdown_goes_out_as_html_replying_when_asked() {
    let (fake, _mem, channel, hello) = with_dm();
    let mut m = text(
        "**Done.** See _the plan_ and `a < b`:\n```rust\nfn main() {}\n```\n- one\n[docs](https://example.org/?a=1&b=2)",
    );
    m.target_message_id = RSome(hello.to_string().into());
    let id = send(&channel, m).expect("deliver").expect("id");
    let sent = sent_of(&fake, "sendMessage");
    assert_eq!(sent.len(), 1);
    let s = &sent[0];
    assert_eq!(s.message_id.map(|i| i.to_string()), Some(id));
    assert_eq!(s.parse_mode.as_deref(), Some("HTML"));
    assert_eq!(s.reply_to_message_id, Some(hello));
    assert_eq!(
        s.text.as_deref(),
        Some(
            "<b>Done.</b> See <i>the plan</i> and <code>a &lt; b</code>:\n\
             <pre><code class=\"language-rust\">fn main() {}</code></pre>\n• one\n  \
             <a href=\"https://example.org/?a=1&amp;b=2\">docs</a>"
        )
    );
    assert_eq!(
        s.plain_text.as_deref(),
        Some("Done. See the plan and a < b:\nfn main() {}\n• one\n  docs")
    );
    channel.teardown();
}

#[test]
fn a_parse_error_resends_plain_text() {
    let (fake, mem, channel, _) = with_dm();
    fake.fail_next_method(
        "sendMessage",
        1,
        Failure::BadRequest {
            description:
                "Bad Request: can't parse entities: Unsupported start tag \"x\" at byte offset 0"
                    .into(),
        },
    );
    let id = send(&channel, text("**bold** <stuff>"))
        .expect("deliver")
        .expect("id");
    let sent = sent_of(&fake, "sendMessage");
    assert_eq!(sent.len(), 1, "one message reached the chat");
    assert_eq!(sent[0].parse_mode, None);
    // The part's plain text, as prepare rendered it.
    assert_eq!(sent[0].text.as_deref(), Some("bold <stuff>"));
    assert_eq!(sent[0].message_id.map(|i| i.to_string()), Some(id));
    assert_eq!(fake.calls_of("sendMessage").len(), 2);
    assert!(
        mem.logs()
            .iter()
            .any(|l| l.level == LogLevel::WARN && l.message.contains("plain text"))
    );
    channel.teardown();
}

#[test]
fn long_text_and_text_that_grows_are_split_in_prepare() {
    let (fake, _mem, channel, _) = with_dm();
    // 10,000 characters: prepare splits them (the host no longer does).
    let long: String = (0..2000).map(|i| format!("w{:03} ", i % 1000)).collect();
    assert!(long.chars().count() >= 10_000);
    let parts = testing::prepare(&channel, text(&long)).expect("prepare");
    assert_eq!(parts.len(), 3);
    let ids = testing::send(&channel, text(&long)).expect("send");
    assert_eq!(ids.len(), 3);
    let sent = sent_of(&fake, "sendMessage");
    assert_eq!(sent.len(), 3);
    for (s, id) in sent.iter().zip(&ids) {
        assert_eq!(s.message_id.map(|i| i.to_string()), id.clone());
        assert!(s.text.as_deref().unwrap_or_default().encode_utf16().count() <= 4096);
    }
    let rejoined: Vec<&str> = sent
        .iter()
        .flat_map(|s| {
            s.plain_text
                .as_deref()
                .unwrap_or_default()
                .split_whitespace()
        })
        .collect();
    assert_eq!(rejoined, long.split_whitespace().collect::<Vec<_>>());

    // 3,900 characters whose HTML escaping (`<` → `&lt;`, `&` → `&amp;`) is far over 4096.
    let grows: String = "a<b & c>d ".repeat(390);
    assert_eq!(grows.chars().count(), 3900);
    let first = send(&channel, text(&grows)).expect("deliver").expect("id");
    let parts: Vec<Sent> = sent_of(&fake, "sendMessage").into_iter().skip(3).collect();
    assert!(parts.len() >= 2, "split into {} messages", parts.len());
    assert_eq!(
        parts[0].message_id.map(|i| i.to_string()),
        Some(first),
        "the first id"
    );
    for part in &parts {
        assert_eq!(part.parse_mode.as_deref(), Some("HTML"));
        assert!(
            part.text
                .as_deref()
                .unwrap_or_default()
                .encode_utf16()
                .count()
                <= 4096
        );
    }
    let rejoined: Vec<&str> = parts
        .iter()
        .flat_map(|p| {
            p.plain_text
                .as_deref()
                .unwrap_or_default()
                .split_whitespace()
        })
        .collect();
    let original: Vec<&str> = grows.split_whitespace().collect();
    assert_eq!(rejoined, original, "nothing lost or reordered");

    // Emoji count twice in UTF-16: 3,000 of them (6,000 units) need two messages.
    let emoji = "🙂".repeat(3000);
    assert_eq!(
        testing::prepare(&channel, text(&emoji))
            .expect("prepare")
            .len(),
        2
    );
    channel.teardown();
}

#[test]
fn buttons_become_an_inline_keyboard_and_an_edit_removes_it() {
    let (fake, _mem, channel, _) = with_dm();
    let buttons: Vec<Button> = ["Approve", "Reject", "Ask later"]
        .iter()
        .enumerate()
        .map(|(i, label)| Button {
            id: format!("ncq:q42:{i}").into(),
            label: (*label).into(),
        })
        .collect();
    let mut card = text("Deploy to production?");
    card.buttons = buttons.into();
    let id = send(&channel, card).expect("deliver").expect("id");
    let sent = sent_of(&fake, "sendMessage");
    let labels: Vec<Vec<(String, String)>> = sent[0]
        .buttons
        .iter()
        .map(|row| {
            row.iter()
                .map(|b| (b.text.clone(), b.callback_data.clone()))
                .collect()
        })
        .collect();
    assert_eq!(
        labels,
        vec![vec![
            ("Approve".to_owned(), "ncq:q42:0".to_owned()),
            ("Reject".to_owned(), "ncq:q42:1".to_owned()),
            ("Ask later".to_owned(), "ncq:q42:2".to_owned()),
        ]]
    );

    // The host edits the answered card: text replaced, keyboard gone.
    let edited = send(
        &channel,
        OutboundMessage {
            op: OutboundOp::EDIT,
            chat_id: ANN.into(),
            target_message_id: RSome(id.as_str().into()),
            text: "Deploy to production?\n\n**Approve**".into(),
            ..Default::default()
        },
    )
    .expect("edit");
    assert_eq!(edited.as_deref(), Some(id.as_str()));
    let edits = sent_of(&fake, "editMessageText");
    assert_eq!(edits.len(), 1);
    assert_eq!(edits[0].message_id.map(|i| i.to_string()), Some(id.clone()));
    assert_eq!(
        edits[0].plain_text.as_deref(),
        Some("Deploy to production?\n\nApprove")
    );
    assert!(edits[0].buttons.is_empty());

    // Editing to the same content is not an error (Telegram says "not modified").
    let again = send(
        &channel,
        OutboundMessage {
            op: OutboundOp::EDIT,
            chat_id: ANN.into(),
            target_message_id: RSome(id.as_str().into()),
            text: "Deploy to production?\n\n**Approve**".into(),
            ..Default::default()
        },
    )
    .expect("an idempotent edit");
    assert_eq!(again.as_deref(), Some(id.as_str()));
    assert_eq!(sent_of(&fake, "editMessageText").len(), 1);

    // Button ids over Telegram's 64 bytes are refused before any call.
    let mut bad = text("x");
    bad.buttons = vec![Button {
        id: "n".repeat(65).into(),
        label: "x".into(),
    }]
    .into();
    let err = send(&channel, bad).expect_err("too long");
    assert_eq!(err.kind, ErrorKind::INVALID_INPUT);
    channel.teardown();
}

#[test]
fn reactions_and_typing() {
    let (fake, _mem, channel, hello) = with_dm();
    let react = |name: &str| {
        channel.deliver(OutboundMessage {
            op: OutboundOp::REACT,
            chat_id: ANN.into(),
            target_message_id: RSome(hello.to_string().into()),
            reaction: name.into(),
            ..Default::default()
        })
    };
    react("thumbs_up").expect("thumbs_up");
    react("check").expect("check");
    react("🔥").expect("emoji");
    let reactions: Vec<Vec<String>> = sent_of(&fake, "setMessageReaction")
        .into_iter()
        .map(|s| {
            assert_eq!(s.message_id, Some(hello));
            s.reaction
        })
        .collect();
    assert_eq!(reactions, [vec!["👍"], vec!["👌"], vec!["🔥"]]);
    assert_eq!(
        react("no_such_reaction").expect_err("unknown").kind,
        ErrorKind::INVALID_INPUT
    );
    // An emoji Telegram does not allow: its 400 comes back as INVALID_INPUT.
    assert_eq!(
        react("🦖").expect_err("refused").kind,
        ErrorKind::INVALID_INPUT
    );

    channel.set_typing(ANN, None);
    wait_until("the typing action", || {
        fake.sent()
            .iter()
            .any(|s| s.action.as_deref() == Some("typing") && s.chat_id == Some(ann().id))
    });
    channel.teardown();
}

#[test]
fn documents_are_uploaded_one_per_call() {
    let (fake, _mem, channel, hello) = with_dm();
    let pdf = b"%PDF-1.4 report".to_vec();
    let mut m = text("Here is the **report**");
    m.target_message_id = RSome(hello.to_string().into());
    m.files = vec![OutboundFile {
        name: "out/report.pdf".into(),
        mime_type: "application/pdf".into(),
        data: pdf.clone().into(),
    }]
    .into();
    let id = send(&channel, m).expect("deliver").expect("id");
    let docs = sent_of(&fake, "sendDocument");
    assert_eq!(docs.len(), 1);
    assert!(
        sent_of(&fake, "sendMessage").is_empty(),
        "the text is the caption"
    );
    let doc = docs[0].document.as_ref().expect("document");
    assert_eq!(doc.file_name, "report.pdf");
    assert_eq!(doc.mime_type, "application/pdf");
    assert_eq!(doc.data, pdf);
    assert_eq!(docs[0].plain_text.as_deref(), Some("Here is the report"));
    assert_eq!(docs[0].parse_mode.as_deref(), Some("HTML"));
    assert_eq!(docs[0].reply_to_message_id, Some(hello));
    assert_eq!(docs[0].message_id.map(|i| i.to_string()), Some(id));

    // Text too long for a caption goes first as a message; two files, two calls.
    let long = "x ".repeat(700);
    let mut m = text(&long);
    m.files = vec![
        OutboundFile {
            name: "a.txt".into(),
            mime_type: "text/plain".into(),
            data: b"A".to_vec().into(),
        },
        OutboundFile {
            name: "b.bin".into(),
            mime_type: "".into(),
            data: b"B".to_vec().into(),
        },
    ]
    .into();
    let id = send(&channel, m).expect("deliver").expect("id");
    let text_msgs = sent_of(&fake, "sendMessage");
    assert_eq!(text_msgs.len(), 1);
    assert_eq!(text_msgs[0].message_id.map(|i| i.to_string()), Some(id));
    let docs = sent_of(&fake, "sendDocument");
    assert_eq!(docs.len(), 3);
    assert!(docs[1].text.is_none() && docs[2].text.is_none());
    assert_eq!(
        docs[2].document.as_ref().map(|d| d.data.clone()),
        Some(b"B".to_vec())
    );
    assert!(docs[1].seq > text_msgs[0].seq, "the text comes first");

    // An HTML caption Telegram refuses is re-sent plain.
    fake.fail_next_method(
        "sendDocument",
        1,
        Failure::BadRequest {
            description: "Bad Request: can't parse entities: oops".into(),
        },
    );
    let mut m = text("caption *here*");
    m.files = vec![OutboundFile {
        name: "c.txt".into(),
        mime_type: "text/plain".into(),
        data: b"C".to_vec().into(),
    }]
    .into();
    send(&channel, m).expect("deliver");
    let docs = sent_of(&fake, "sendDocument");
    assert_eq!(docs.len(), 4);
    assert_eq!(docs[3].parse_mode, None);
    assert_eq!(docs[3].text.as_deref(), Some("caption here"));
    channel.teardown();
}

#[test]
fn telegram_errors_map_to_error_kinds() {
    let (fake, _mem, channel, _) = with_dm();
    let err = channel
        .deliver(OutboundMessage {
            chat_id: "12345".into(),
            text: "to nobody".into(),
            ..Default::default()
        })
        .expect_err("unknown chat");
    assert_eq!(err.kind, ErrorKind::INVALID_INPUT, "{err}");
    assert!(err.message.contains("chat not found"), "{err}");

    fake.fail_next_method(
        "sendMessage",
        1,
        Failure::RateLimited {
            retry_after_secs: 3,
        },
    );
    let err = channel.deliver(text("hi")).expect_err("429");
    assert_eq!(err.kind, ErrorKind::RATE_LIMITED);
    assert_eq!(err.retry_after_ms.into_option(), Some(3000));

    fake.fail_next_method("sendMessage", 1, Failure::Unauthorized);
    assert_eq!(
        channel.deliver(text("hi")).expect_err("401").kind,
        ErrorKind::AUTH
    );

    fake.fail_next_method("sendMessage", 1, Failure::ServerError);
    assert_eq!(
        channel.deliver(text("hi")).expect_err("500").kind,
        ErrorKind::NETWORK
    );

    fake.fail_next_method("sendMessage", 1, Failure::BadGateway);
    assert_eq!(
        channel.deliver(text("hi")).expect_err("502").kind,
        ErrorKind::NETWORK
    );

    fake.fail_next_method("sendMessage", 1, Failure::DropConnection);
    let err = channel.deliver(text("hi")).expect_err("dropped");
    assert_eq!(err.kind, ErrorKind::NETWORK, "{err}");

    let err = channel.deliver(text("   ")).expect_err("empty");
    assert_eq!(err.kind, ErrorKind::INVALID_INPUT);
    let err = channel
        .deliver(OutboundMessage {
            op: OutboundOp::EDIT,
            chat_id: ANN.into(),
            target_message_id: RSome("999".into()),
            text: "x".into(),
            ..Default::default()
        })
        .expect_err("no such message");
    assert_eq!(err.kind, ErrorKind::INVALID_INPUT);
    assert!(err.message.contains("message to edit not found"), "{err}");

    // And after all that, sending works.
    channel.deliver(text("still here")).expect("deliver");
    channel.teardown();
}

/// After a 429, the next send to that chat waits out Telegram's `retry_after` instead of
/// being refused again.
#[test]
fn a_429_holds_back_the_next_send_to_that_chat() {
    let (fake, _mem, channel, _) = with_dm();
    fake.fail_next_method(
        "sendMessage",
        1,
        Failure::RateLimited {
            retry_after_secs: 1,
        },
    );
    let err = channel.deliver(text("first")).expect_err("429");
    assert_eq!(err.kind, ErrorKind::RATE_LIMITED);
    assert_eq!(err.retry_after_ms.into_option(), Some(1000));
    let start = std::time::Instant::now();
    channel
        .deliver(text("second"))
        .expect("sent after the pause");
    assert!(
        start.elapsed() >= std::time::Duration::from_millis(900),
        "{:?}",
        start.elapsed()
    );
    channel.teardown();
}

/// A call in flight when the connection is lost (the plugin, or its host, stopping): the
/// fake holds `sendMessage` and then drops the connection unanswered. Held before Telegram
/// handles it, nothing was sent; handled before the answer, Telegram has the message
/// although `deliver` never heard back (so the host will retry it).
#[test]
fn a_call_in_flight_when_the_connection_is_lost() {
    let (fake, _mem, channel, _) = with_dm();
    let hold = fake.hold_next(Some("sendMessage"), Commit::AfterRelease);
    std::thread::scope(|scope| {
        let call = scope.spawn(|| channel.deliver(text("never arrives")));
        assert!(fake.wait_held(hold, WAIT));
        assert!(sent_of(&fake, "sendMessage").is_empty());
        assert!(fake.discard(hold));
        let err = call.join().expect("join").expect_err("no answer");
        assert_eq!(err.kind, ErrorKind::NETWORK, "{err}");
    });
    assert!(
        sent_of(&fake, "sendMessage").is_empty(),
        "Telegram never got it"
    );

    let hold = fake.hold_next(Some("sendMessage"), Commit::BeforeResponding);
    std::thread::scope(|scope| {
        let call = scope.spawn(|| channel.deliver(text("arrives unanswered")));
        assert!(fake.wait_held(hold, WAIT));
        assert_eq!(sent_of(&fake, "sendMessage").len(), 1, "Telegram has it");
        assert!(fake.discard(hold));
        let err = call.join().expect("join").expect_err("no answer");
        assert_eq!(err.kind, ErrorKind::NETWORK, "{err}");
    });
    let sent = sent_of(&fake, "sendMessage");
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].plain_text.as_deref(), Some("arrives unanswered"));
    channel.teardown();
}
