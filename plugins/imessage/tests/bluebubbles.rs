//! The iMessage channel against a fake BlueBubbles server on 127.0.0.1: the webhook's
//! password first, DMs and groups with normalized handles, attachments, edits, unsends,
//! redeliveries, and text, files, tapbacks and typing out.

use std::time::Duration;

use nanoclaw_fake_bluebubbles::*;
use nanoclaw_fake_platform::{Fault, Route};
use nanoclaw_plugin_api::kit::prelude::*;
use nanoclaw_plugin_api::kit::testing::{self, MemoryHost};
use nanoclaw_plugin_imessage::IMessageChannel;
use serde_json::{Value, json};

struct Bench {
    fake: FakeBlueBubbles,
    mem: MemoryHost,
    channel: IMessageChannel,
}

fn bench_with(extra: Value) -> Bench {
    let fake = FakeBlueBubbles::start();
    let mem = MemoryHost::new();
    let mut settings = json!({
        "server_url": fake.base_url(),
        "password": PASSWORD,
        "private_api": true,
        "send_per_sec": 20,
    });
    for (k, v) in extra.as_object().into_iter().flatten() {
        settings[k] = v.clone();
    }
    let channel = IMessageChannel::create(Context {
        instance_name: "imessage".into(),
        settings_json: settings.to_string(),
        data_dir: std::env::temp_dir(),
        extra_json: String::new(),
        host: mem.host(),
    })
    .expect("create");
    channel.start().expect("start");
    Bench { fake, mem, channel }
}

fn bench() -> Bench {
    bench_with(json!({}))
}

fn hook(body: &Value, query: &str) -> WebhookRequest {
    WebhookRequest {
        method: "POST".into(),
        path: "/".into(),
        query: query.into(),
        headers: vec![Tuple2("content-type".into(), "application/json".into())].into(),
        body: body.to_string().into_bytes().into(),
    }
}

fn post(b: &Bench, body: &Value) -> u16 {
    let query = format!("password={PASSWORD}");
    b.channel
        .handle_webhook(hook(body, &query))
        .expect("answer")
        .status
}

#[test]
fn the_webhook_needs_the_server_password() {
    let b = bench();
    let (_, body) = b.fake.incoming(&Incoming::dm(ANN_PHONE, "hello"));
    for query in [
        "",
        "password=",
        "password=bb-Server-Pa55wor",
        "password=bb-Server-Pa55word2",
        "guid=x",
    ] {
        let answer = b
            .channel
            .handle_webhook(hook(&body, query))
            .expect("answer");
        assert_eq!(answer.status, 401, "{query}");
    }
    // Not even garbage is parsed without it.
    let answer = b
        .channel
        .handle_webhook(hook(&json!("{not json"), ""))
        .expect("answer");
    assert_eq!(answer.status, 401);
    assert!(b.mem.inbound().is_empty());
    for line in b.mem.logs() {
        assert!(!line.message.contains(PASSWORD), "{line:?}");
    }
    assert_eq!(post(&b, &body), 200);
    assert_eq!(b.mem.inbound().len(), 1);
}

#[test]
fn dms_and_groups_with_one_id_per_person() {
    let b = bench();
    let (guid, body) = b.fake.incoming(&Incoming::dm(ANN_PHONE, "hi there"));
    assert_eq!(post(&b, &body), 200);
    // BlueBubbles redelivers: one message.
    assert_eq!(post(&b, &body), 200);
    let mut group = Incoming::group("Bob@iCloud.com", "weekend?");
    group.reply_to = Some(guid.clone());
    let (_, gbody) = b.fake.incoming(&group);
    assert_eq!(post(&b, &gbody), 200);
    let inbound = b.mem.inbound();
    assert_eq!(inbound.len(), 2, "{inbound:?}");
    let dm = &inbound[0];
    assert_eq!(dm.chat_id.as_str(), ANN_PHONE);
    assert_eq!(dm.sender.clone().unwrap().handle.as_str(), ANN_PHONE);
    assert_eq!(dm.message_id.as_str(), guid);
    assert!(!dm.is_group && dm.mentioned);
    assert_eq!(dm.text.as_str(), "hi there");
    let g = &inbound[1];
    assert_eq!(g.chat_id.as_str(), GROUP);
    assert_eq!(g.sender.clone().unwrap().handle.as_str(), BOB_EMAIL);
    assert!(g.is_group && !g.mentioned);
    assert_eq!(
        g.chat_name.clone().into_option().unwrap().as_str(),
        "Weekend crew"
    );
    assert_eq!(
        g.reply_to
            .clone()
            .into_option()
            .unwrap()
            .message_id
            .into_option()
            .unwrap()
            .as_str(),
        guid
    );

    // A national number in a DM guid is the same person.
    let mut national = Incoming::dm("(555) 123-4567", "again");
    national.chat_guid = "SMS;-;(555) 123-4567".into();
    let (_, body) = b.fake.incoming(&national);
    assert_eq!(post(&b, &body), 200);
    assert_eq!(b.mem.inbound()[2].chat_id.as_str(), ANN_PHONE);
}

#[test]
fn own_messages_tapbacks_edits_and_unsends() {
    let b = bench();
    let (_, mut own) = b.fake.incoming(&Incoming::dm(ANN_PHONE, "from me"));
    own["data"]["isFromMe"] = json!(true);
    assert_eq!(post(&b, &own), 200);
    let (_, mut tap) = b.fake.incoming(&Incoming::dm(ANN_PHONE, "Loved “hi”"));
    tap["data"]["associatedMessageGuid"] = json!("p:0/ABC");
    tap["data"]["associatedMessageType"] = json!(2000);
    assert_eq!(post(&b, &tap), 200);
    let typing = json!({"type": "typing-indicator", "data": {"display": true, "guid": "iMessage;-;+15551234567"}});
    assert_eq!(post(&b, &typing), 200);
    assert!(b.mem.inbound().is_empty());

    let m = Incoming::dm(ANN_PHONE, "typo");
    let (guid, body) = b.fake.incoming(&m);
    assert_eq!(post(&b, &body), 200);
    let mut edited = body.clone();
    edited["type"] = json!("updated-message");
    edited["data"]["text"] = json!("fixed");
    edited["data"]["dateEdited"] = json!(1_796_000_000_000i64);
    assert_eq!(post(&b, &edited), 200);
    let inbound = b.mem.inbound();
    assert_eq!(inbound.len(), 2);
    assert_eq!(
        inbound[1].message_id.as_str(),
        format!("{guid}:edit:1796000000000")
    );
    assert_eq!(inbound[1].text.as_str(), "fixed");

    // A read receipt is an updated-message too: nothing.
    let mut receipt = body.clone();
    receipt["type"] = json!("updated-message");
    receipt["data"]["dateRead"] = json!(1_796_000_000_001i64);
    assert_eq!(post(&b, &receipt), 200);
    assert_eq!(b.mem.inbound().len(), 2);

    // Unsent: a deletion for the host.
    assert_eq!(post(&b, &b.fake.unsent(&m, &guid)), 200);
    let deleted = b.mem.deletions();
    assert_eq!(deleted.len(), 1, "{deleted:?}");
    assert_eq!(deleted[0].chat_id.as_str(), ANN_PHONE);
    assert_eq!(deleted[0].message_id.as_str(), guid);
}

#[test]
fn attachments_are_downloaded_and_refusals_redelivered() {
    let b = bench();
    let mut m = Incoming::dm(BOB_EMAIL, "photo");
    m.attachments = vec![("IMG_0001.HEIC".into(), "image/heic".into(), vec![7; 64])];
    let (_, body) = b.fake.incoming(&m);
    b.mem
        .set_reject_inbound(Some(PluginError::other("database busy")));
    assert_eq!(post(&b, &body), 503);
    b.mem.set_reject_inbound(None);
    assert_eq!(post(&b, &body), 200);
    let inbound = b.mem.inbound();
    assert_eq!(inbound.len(), 1);
    let a = &inbound[0].attachments[0];
    assert_eq!(a.kind.as_str(), "image");
    assert_eq!(a.name.as_str(), "IMG_0001.HEIC");
    assert_eq!(a.data.len(), 64);
}

#[test]
fn text_files_tapbacks_and_typing_out() {
    let b = bench();
    // To a handle never seen: the iMessage DM guid.
    let ids = testing::send(
        &b.channel,
        OutboundMessage {
            chat_id: "+1 555 987 6543".into(),
            text: "**Hello** from the agent".into(),
            extra_json: json!({"idempotency_key": "s/m/0"}).to_string().into(),
            ..Default::default()
        },
    )
    .expect("sent");
    let sent = b.fake.sent_to("iMessage;-;+15559876543");
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].text, "Hello from the agent");
    assert_eq!(sent[0].method, "private-api");
    assert_eq!(ids, vec![Some(sent[0].guid.clone())]);
    // The host retries the same part (a crash after sending): the same message.
    testing::send(
        &b.channel,
        OutboundMessage {
            chat_id: "+15559876543".into(),
            text: "**Hello** from the agent".into(),
            extra_json: json!({"idempotency_key": "s/m/0"}).to_string().into(),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(b.fake.sent_to("iMessage;-;+15559876543").len(), 1);

    // A contact seen over SMS is answered over SMS.
    let mut sms = Incoming::dm(ANN_PHONE, "by sms");
    sms.chat_guid = format!("SMS;-;{ANN_PHONE}");
    let (guid, body) = b.fake.incoming(&sms);
    assert_eq!(post(&b, &body), 200);
    testing::send(
        &b.channel,
        OutboundMessage {
            chat_id: ANN_PHONE.into(),
            text: "got it".into(),
            target_message_id: RSome(guid.clone().into()),
            files: vec![OutboundFile {
                name: "../report.pdf".into(),
                mime_type: "application/pdf".into(),
                data: b"%PDF".to_vec().into(),
            }]
            .into(),
            ..Default::default()
        },
    )
    .unwrap();
    let sent = b.fake.sent_to(&format!("SMS;-;{ANN_PHONE}"));
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert_eq!(sent[0].reply_to.as_deref(), Some(guid.as_str()));
    assert_eq!(sent[1].attachment.as_ref().unwrap().0, "report.pdf");

    // Groups by guid; tapbacks; typing.
    b.channel
        .deliver(OutboundMessage {
            op: OutboundOp::REACT,
            chat_id: GROUP.into(),
            target_message_id: RSome(guid.clone().into()),
            reaction: "thumbs_up".into(),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(
        b.fake.reactions(),
        vec![(GROUP.to_owned(), guid.clone(), "like".to_owned())]
    );
    b.channel.set_typing(GROUP, None);
    let typed = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(20));
        !b.fake.typing().is_empty()
    });
    assert!(typed);

    // Not a handle: refused before any call.
    let err = testing::send(
        &b.channel,
        OutboundMessage {
            chat_id: "not a person".into(),
            text: "x".into(),
            ..Default::default()
        },
    )
    .unwrap_err();
    assert_eq!(err.kind, ErrorKind::INVALID_INPUT);

    // The server is overloaded: a transient error for the host to retry.
    b.fake
        .harness()
        .fail_next(Route::named("message.text"), 1, Fault::server_error());
    let err = testing::send(
        &b.channel,
        OutboundMessage {
            chat_id: GROUP.into(),
            text: "later".into(),
            ..Default::default()
        },
    )
    .unwrap_err();
    assert_eq!(err.kind, ErrorKind::NETWORK);
}

#[test]
fn without_the_private_api_text_still_goes_and_tapbacks_are_unsupported() {
    let b = bench_with(json!({"private_api": false}));
    b.fake.set_private_api(false);
    testing::send(
        &b.channel,
        OutboundMessage {
            chat_id: BOB_EMAIL.into(),
            text: "plain".into(),
            target_message_id: RSome("ABC-1".into()),
            ..Default::default()
        },
    )
    .unwrap();
    let sent = b.fake.sent_to(&format!("iMessage;-;{BOB_EMAIL}"));
    assert_eq!(sent[0].method, "apple-script");
    assert_eq!(sent[0].reply_to, None);
    let err = b
        .channel
        .deliver(OutboundMessage {
            op: OutboundOp::REACT,
            chat_id: BOB_EMAIL.into(),
            target_message_id: RSome("ABC-1".into()),
            reaction: "heart".into(),
            ..Default::default()
        })
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::UNSUPPORTED);
}

#[test]
fn a_wrong_password_fails_start_with_auth() {
    let fake = FakeBlueBubbles::start();
    let mem = MemoryHost::new();
    let channel = IMessageChannel::create(Context {
        instance_name: "imessage".into(),
        settings_json: json!({"server_url": fake.base_url(), "password": "nope-nope"}).to_string(),
        data_dir: std::env::temp_dir(),
        extra_json: String::new(),
        host: mem.host(),
    })
    .expect("create");
    let err = channel.start().unwrap_err();
    assert_eq!(err.kind, ErrorKind::AUTH);
    assert!(!err.message.contains("nope-nope"));
}
