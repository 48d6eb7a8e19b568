//! The Teams channel against the fake Bot Framework: the bearer JWT and the service URL
//! checked before anything is parsed, activities of every kind, redeliveries and refusals,
//! card clicks, and the Bot Connector out (text, threads, cards, edits, typing, images,
//! open_dm, the token cache, errors and 429).

use std::time::Duration;

use nanoclaw_fake_platform::jwt::{TestKey, unix_now};
use nanoclaw_fake_platform::{Fault, Route};
use nanoclaw_fake_teams::*;
use nanoclaw_plugin_api::kit::prelude::*;
use nanoclaw_plugin_api::kit::testing::{self, MemoryHost};
use nanoclaw_plugin_teams::TeamsChannel;
use serde_json::{Value, json};

struct Bench {
    fake: FakeTeams,
    mem: MemoryHost,
    channel: TeamsChannel,
}

fn create(
    _fake: &FakeTeams,
    mem: &MemoryHost,
    settings: Value,
) -> Result<TeamsChannel, PluginError> {
    TeamsChannel::create(Context {
        instance_name: "teams".into(),
        settings_json: settings.to_string(),
        data_dir: std::env::temp_dir(),
        extra_json: String::new(),
        host: mem.host(),
    })
}

fn bench() -> Bench {
    let fake = FakeTeams::start();
    let mem = MemoryHost::new();
    let channel = create(&fake, &mem, fake.settings()).expect("create");
    channel.start().expect("start");
    Bench { fake, mem, channel }
}

fn request(activity: &Value, authorization: Option<&str>) -> WebhookRequest {
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
        body: activity.to_string().into_bytes().into(),
    }
}

impl Bench {
    fn post(&self, activity: &Value) -> u16 {
        self.post_as(activity, Some(&self.fake.bearer()))
    }

    fn post_as(&self, activity: &Value, authorization: Option<&str>) -> u16 {
        self.channel
            .handle_webhook(request(activity, authorization))
            .expect("answer")
            .status
    }
}

fn extra(e: &InboundEvent) -> Value {
    serde_json::from_str(e.extra_json.as_str()).unwrap_or(Value::Null)
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
    let activity = b.fake.message(DM_ANN, ANN, "hello", None, false);
    let f = &b.fake;
    let sign = |key: &TestKey, claims: &Value| format!("Bearer {}", key.sign(claims));
    let platform = TestKey::a(KID);
    let attacker = TestKey::b(KID);
    let mut wrong_aud = f.claims(&f.service_url(), 3600);
    wrong_aud["aud"] = json!("11111111-2222-3333-4444-555555555555");
    let mut wrong_iss = f.claims(&f.service_url(), 3600);
    wrong_iss["iss"] = json!("https://sts.windows.net/evil/");
    let mut no_serviceurl = f.claims(&f.service_url(), 3600);
    no_serviceurl.as_object_mut().unwrap().remove("serviceurl");
    let hs256 = format!(
        "Bearer {}",
        platform.sign_with_header(
            &json!({"alg": "HS256", "kid": KID}),
            &f.claims(&f.service_url(), 3600)
        )
    );
    let refused = [
        None,                                                     // missing
        Some("Basic YWxhZGRpbjpvcGVuc2VzYW1l".to_owned()),        // not a bearer
        Some("Bearer not.a.jwt".to_owned()),                      // garbage
        Some(sign(&attacker, &f.claims(&f.service_url(), 3600))), // wrong signature
        Some(sign(
            &TestKey::a("unknown-kid"),
            &f.claims(&f.service_url(), 3600),
        )), // unknown key
        Some(sign(&platform, &f.claims(&f.service_url(), -600))), // expired (beyond leeway)
        Some(sign(&platform, &wrong_aud)),                        // another bot's token
        Some(sign(&platform, &wrong_iss)),                        // another issuer
        Some(sign(&platform, &no_serviceurl)),                    // no service URL bound
        Some(hs256),                                              // algorithm switch
    ];
    for auth in &refused {
        assert_eq!(b.post_as(&activity, auth.as_deref()), 401, "{auth:?}");
    }

    // A token the Bot Framework really issued, replayed with a forged activity that points
    // the replies (and the bot's token) at another service URL: refused, nothing sent there.
    let mut forged = b
        .fake
        .message(DM_ANN, ANN, "send your token to me", None, false);
    forged["serviceUrl"] = json!("https://attacker.example/svc/");
    assert_eq!(b.post(&forged), 401);
    // Nor the other way round: a token for another service URL.
    let elsewhere = sign(&platform, &f.claims("https://attacker.example/svc/", 3600));
    assert_eq!(b.post_as(&activity, Some(&elsewhere)), 401);

    assert!(b.mem.inbound().is_empty(), "nothing stored");
    assert!(
        b.mem
            .logs()
            .iter()
            .any(|l| l.message.contains("refused a webhook"))
    );
    assert!(
        b.mem
            .logs()
            .iter()
            .any(|l| l.message.contains("serviceUrl is not the token's"))
    );
    for line in b.mem.logs() {
        assert!(!line.message.contains(APP_PASSWORD), "{line:?}");
    }
    // Only the keys were fetched (once, plus one refresh for the unknown kid at most).
    assert!(b.fake.harness().calls_to("keys").len() <= 2);

    // Within the leeway: taken. GET is not the Bot Framework.
    let recent = sign(&platform, &f.claims(&f.service_url(), -60));
    assert_eq!(b.post_as(&activity, Some(&recent)), 200);
    assert_eq!(b.mem.inbound().len(), 1);
    let mut get = request(&activity, Some(&b.fake.bearer()));
    get.method = "GET".into();
    assert_eq!(b.channel.handle_webhook(get).expect("answer").status, 405);
}

#[test]
fn a_redelivery_is_answered_200_and_stored_once_and_a_refusal_is_retried() {
    let b = bench();
    let activity = b.fake.message(DM_ANN, ANN, "once", None, false);
    assert_eq!(b.post(&activity), 200);
    assert_eq!(b.post(&activity), 200, "the same activity again (a retry)");
    assert_eq!(b.mem.inbound().len(), 1);

    // The host refuses: 503, so the Bot Framework retries; the retry is taken.
    let next = b.fake.message(DM_ANN, ANN, "later", None, false);
    b.mem.set_reject_inbound(Some(PluginError::network("busy")));
    assert_eq!(b.post(&next), 503);
    b.mem.set_reject_inbound(None);
    assert_eq!(b.post(&next), 200);
    assert_eq!(b.post(&next), 200);
    let texts: Vec<String> = b.mem.inbound().iter().map(|e| e.text.to_string()).collect();
    assert_eq!(texts, ["once", "later"]);
}

#[test]
fn dms_channels_threads_group_chats_and_mentions() {
    let b = bench();
    let dm = b.fake.message(DM_ANN, ANN, "Hello *there*", None, false);
    let top = b.fake.message(GENERAL, BOB, "are you there?", None, true);
    let root = top["id"].as_str().unwrap().to_owned();
    let reply = b
        .fake
        .message(GENERAL, BOB, "and tomorrow?", Some(&root), false);
    let group = b
        .fake
        .message(GROUP_CHAT, BOB, "just chatting", None, false);
    for a in [&dm, &top, &reply, &group] {
        assert_eq!(b.post(a), 200);
    }
    let inbound = b.mem.inbound();
    assert_eq!(inbound.len(), 4);

    let d = &inbound[0];
    assert_eq!(d.chat_id, DM_ANN);
    assert_eq!(d.message_id, dm["id"].as_str().unwrap());
    let sender = d.sender.as_ref().unwrap();
    assert_eq!(sender.handle, ANN);
    assert_eq!(
        sender.display_name.as_ref().map(|n| n.as_str()),
        RSome("Ann Example")
    );
    assert!(!d.is_group && d.mentioned, "a DM counts as a mention");
    assert_eq!(d.thread_id, RNone);
    assert_eq!(d.text, "Hello *there*");
    assert_eq!(d.timestamp_ms, 1_796_310_000_250);
    assert_eq!(extra(d)["aad_object_id"], ANN_AAD);

    let t = &inbound[1];
    assert_eq!(t.chat_id, GENERAL, "without ;messageid=");
    assert!(t.is_group && t.mentioned);
    assert_eq!(t.text, format!("@{BOT_NAME} are you there?"));
    assert_eq!(
        t.thread_id.as_ref().map(|s| s.as_str()),
        RSome(root.as_str()),
        "a top-level post is its own thread"
    );
    assert_eq!(extra(t)["team_id"], TEAM);

    let r = &inbound[2];
    assert_eq!(
        r.thread_id.as_ref().map(|s| s.as_str()),
        RSome(root.as_str())
    );
    assert!(!r.mentioned);

    let g = &inbound[3];
    assert_eq!(g.chat_id, GROUP_CHAT);
    assert!(g.is_group && !g.mentioned);
    assert_eq!(g.thread_id, RNone, "group chats are flat");
}

#[test]
fn edits_deletions_clicks_and_other_activities() {
    let b = bench();
    let original = b.fake.message(DM_ANN, ANN, "frist", None, false);
    let id = original["id"].as_str().unwrap().to_owned();
    assert_eq!(b.post(&original), 200);
    let edit = b.fake.edit(DM_ANN, ANN, &id, "first");
    assert_eq!(b.post(&edit), 200);
    assert_eq!(b.post(&edit), 200, "redelivered edit");
    let inbound = b.mem.inbound();
    assert_eq!(inbound.len(), 2);
    assert_eq!(inbound[1].text, "first");
    assert_eq!(
        inbound[1].message_id,
        format!("{id}:edit:2026-12-03T15:05:00.000Z")
    );
    assert_eq!(extra(&inbound[1])["edit_of"], id.as_str());

    // Deletions reach the host once (a redelivery is not a second one).
    let deletion = b.fake.delete(DM_ANN, ANN, &id);
    assert_eq!(b.post(&deletion), 200);
    assert_eq!(b.post(&deletion), 200);
    let deletions = b.mem.deletions();
    assert_eq!(deletions.len(), 1);
    assert_eq!(deletions[0].chat_id, DM_ANN);
    assert_eq!(deletions[0].message_id, id.as_str());
    assert_eq!(deletions[0].thread_id, RNone);
    assert_eq!(b.mem.inbound().len(), 2);

    // A click on a card (Action.Submit → message activity with value).
    let click = b.fake.click(DM_ANN, BOB, "1796320001000", "ncq:q7:1");
    assert_eq!(b.post(&click), 200);
    assert_eq!(b.post(&click), 200, "redelivered click");
    let actions = b.mem.actions();
    assert_eq!(actions.len(), 1);
    assert_eq!(actions[0].action_id, "ncq:q7:1");
    assert_eq!(actions[0].clicker.handle, BOB);
    assert_eq!(actions[0].chat_id, DM_ANN);
    assert_eq!(actions[0].message_id, "1796320001000");
    assert_eq!(b.mem.inbound().len(), 2, "a click is not a message");

    // Action.Execute (an invoke) too.
    let mut invoke = b.fake.activity("invoke", "f:1234", DM_ANN, ANN, None);
    invoke["name"] = json!("adaptiveCard/action");
    invoke["value"] =
        json!({"action": {"type": "Action.Execute", "data": {"nanoclaw_action": "ncq:q8:0"}}});
    let answer = b
        .channel
        .handle_webhook(request(&invoke, Some(&b.fake.bearer())))
        .unwrap();
    assert_eq!(answer.status, 200);
    let body: Value = serde_json::from_slice(&answer.body).unwrap();
    assert_eq!(body["statusCode"], 200);
    assert_eq!(b.mem.actions().len(), 2);

    // The bot added to a team, typing, reactions: acknowledged, nothing handed over.
    let mut added = b
        .fake
        .activity("conversationUpdate", "f:9", GENERAL, ANN, None);
    added["membersAdded"] = json!([{"id": bot_id()}]);
    assert_eq!(b.post(&added), 200);
    assert_eq!(
        b.post(&b.fake.activity("typing", "f:10", DM_ANN, ANN, None)),
        200
    );
    assert_eq!(b.mem.inbound().len(), 2);
    // The bot's own message, echoed: ignored.
    let own = b.fake.message(DM_ANN, &bot_id(), "me", None, false);
    assert_eq!(b.post(&own), 200);
    assert_eq!(b.mem.inbound().len(), 2);
}

#[test]
fn inline_images_are_fetched_with_the_token_from_the_service_url_only() {
    let b = bench();
    let mut a = b.fake.message(DM_ANN, ANN, "look", None, false);
    a["attachments"] = json!([
        b.fake.inline_image(b"\x89PNG fake image"),
        {"contentType": "image/*", "contentUrl": "https://elsewhere.example/x.png"},
        {"contentType": "text/html", "content": "<div>look</div>"},
    ]);
    assert_eq!(b.post(&a), 200);
    let e = &b.mem.inbound()[0];
    assert_eq!(e.attachments.len(), 2);
    assert_eq!(e.attachments[0].data.as_slice(), b"\x89PNG fake image");
    assert_eq!(e.attachments[0].kind, "image");
    assert!(
        e.attachments[1].data.is_empty(),
        "not fetched from another host"
    );
}

#[test]
fn messages_threads_cards_edits_typing_and_images_go_out() {
    let b = bench();
    // Learn the channel's routes from an inbound post.
    let top = b.fake.message(GENERAL, BOB, "question", None, true);
    let root = top["id"].as_str().unwrap().to_owned();
    assert_eq!(b.post(&top), 200);

    let ids = testing::send(&b.channel, text(DM_ANN, "Hello **Ann**")).expect("send");
    let sent = b.fake.bot_messages(DM_ANN);
    assert_eq!(sent.len(), 1);
    assert_eq!(ids, [Some(sent[0].id.clone())]);
    assert_eq!(sent[0].text, "Hello **Ann**");
    let call = &b.fake.harness().calls_to("send")[0];
    assert_eq!(call.body_json().unwrap()["textFormat"], "markdown");
    assert!(
        call.header("authorization")
            .unwrap()
            .starts_with("Bearer eyJ")
    );

    // In a channel thread.
    let mut reply = text(GENERAL, "answer");
    reply.thread_id = RSome(root.clone().into());
    testing::send(&b.channel, reply).expect("reply");
    let r = &b.fake.bot_messages(GENERAL)[0];
    assert_eq!(r.thread.as_deref(), Some(root.as_str()));

    // A card with buttons, then edited to its outcome without buttons.
    let mut card = text(DM_ANN, "Allow **Bob**?");
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
    let card_id = testing::send(&b.channel, card).expect("card")[0]
        .clone()
        .unwrap();
    let posted = b.fake.bot_messages(DM_ANN).pop().unwrap();
    assert_eq!(
        posted.buttons(),
        [
            ("Allow".into(), "ncq:q1:0".into()),
            ("Deny".into(), "ncq:q1:1".into())
        ]
    );
    let edit = OutboundMessage {
        op: OutboundOp::EDIT,
        target_message_id: RSome(card_id.clone().into()),
        ..text(DM_ANN, "Allow Bob?\n\nAllowed")
    };
    testing::send(&b.channel, edit).expect("edit");
    let edited = b.fake.bot_messages(DM_ANN).pop().unwrap();
    assert_eq!((edited.id.as_str(), edited.edits), (card_id.as_str(), 1));
    assert!(edited.buttons().is_empty());
    assert!(edited.text.contains("Allowed"));

    // Typing.
    b.channel.set_typing(DM_ANN, None);
    let typed = (0..200).any(|_| {
        std::thread::sleep(Duration::from_millis(10));
        !b.fake.typing().is_empty()
    });
    assert!(typed);

    // Reactions: Teams has none for bots.
    let react = OutboundMessage {
        op: OutboundOp::REACT,
        target_message_id: RSome(card_id.into()),
        reaction: "thumbs_up".into(),
        ..text(DM_ANN, "")
    };
    let err = testing::send(&b.channel, react).expect_err("no reactions");
    assert_eq!(err.kind, ErrorKind::UNSUPPORTED);

    // Images inline; other files refused as unsupported.
    let mut image = text(DM_ANN, "a chart");
    image.files = vec![OutboundFile {
        name: "chart.png".into(),
        mime_type: "image/png".into(),
        data: b"png".to_vec().into(),
    }]
    .into();
    testing::send(&b.channel, image).expect("image");
    let with_image = b.fake.bot_messages(DM_ANN).pop().unwrap();
    assert_eq!(
        with_image.attachments[0]["contentUrl"],
        "data:image/png;base64,cG5n"
    );
    let mut pdf = text(DM_ANN, "a report");
    pdf.files = vec![OutboundFile {
        name: "r.pdf".into(),
        mime_type: "application/pdf".into(),
        data: b"%PDF".to_vec().into(),
    }]
    .into();
    assert_eq!(
        testing::send(&b.channel, pdf).expect_err("pdf").kind,
        ErrorKind::UNSUPPORTED
    );

    // One token for all of it.
    assert_eq!(b.fake.issued(), 1);
    assert_eq!(b.fake.harness().calls_to("token").len(), 1);
}

#[test]
fn long_text_is_split_within_the_limit_and_errors_are_classified() {
    let b = bench();
    let long: String = (0..6000).map(|i| format!("word{i} ")).collect();
    let ids = testing::send(&b.channel, text(DM_ANN, &long)).expect("send");
    assert!(ids.len() >= 3, "{} parts", ids.len());
    let parts = b.fake.bot_messages(DM_ANN);
    let joined: Vec<String> = parts
        .iter()
        .flat_map(|p| {
            p.text
                .split_whitespace()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect();
    let expected: Vec<String> = long.split_whitespace().map(str::to_owned).collect();
    assert_eq!(joined, expected);
    for p in &parts {
        assert!(p.text.len() <= 20_000);
    }

    // Unknown conversation: NOT_FOUND. 429: RATE_LIMITED with the delay. 5xx: NETWORK.
    let err = testing::send(&b.channel, text("a:1nobody", "hi")).expect_err("unknown");
    assert_eq!(err.kind, ErrorKind::NOT_FOUND, "{err}");
    b.fake.harness().fail_next(
        Route::named("send"),
        1,
        Fault::rate_limited(Duration::from_secs(3)),
    );
    let err = testing::send(&b.channel, text(DM_ANN, "hi")).expect_err("429");
    assert_eq!(err.kind, ErrorKind::RATE_LIMITED, "{err}");
    assert_eq!(err.retry_after_ms, RSome(3000));
    b.fake
        .harness()
        .fail_next(Route::named("send"), 1, Fault::server_error());
    let err = testing::send(&b.channel, text(DM_BOB, "hi")).expect_err("500");
    assert_eq!(err.kind, ErrorKind::NETWORK, "{err}");
    // A revoked token: the next send gets a new one.
    b.fake
        .harness()
        .fail_next(Route::named("send"), 1, Fault::status(401));
    let err = testing::send(&b.channel, text(DM_BOB, "hi")).expect_err("401");
    assert_eq!(err.kind, ErrorKind::NETWORK, "{err}");
    testing::send(&b.channel, text(DM_BOB, "hi")).expect("with a new token");
    assert_eq!(b.fake.issued(), 2);
    // Path tricks are not conversation ids.
    let err = testing::send(&b.channel, text("../../v3/conversations", "hi")).expect_err("bad id");
    assert_eq!(err.kind, ErrorKind::INVALID_INPUT);
}

#[test]
fn open_dm_creates_the_personal_conversation() {
    let b = bench();
    // Cold: the tenant from the settings, the default service URL.
    let dm = b.channel.open_dm(ANN).expect("open");
    assert_eq!(dm, DM_ANN);
    testing::send(&b.channel, text(&dm, "a card for you")).expect("send");
    assert_eq!(b.fake.bot_messages(DM_ANN).len(), 1);
    let body = b.fake.harness().calls_to("create_conversation")[0]
        .body_json()
        .unwrap();
    assert_eq!(body["tenantId"], TENANT);
    assert_eq!(body["members"][0]["id"], ANN);
    assert_eq!(body["bot"]["id"], bot_id());

    let err = b
        .channel
        .open_dm("29:1stranger")
        .expect_err("not installed");
    assert_eq!(err.kind, ErrorKind::AUTH, "{err}");
    let err = b.channel.open_dm("ann@example.com").expect_err("not an id");
    assert_eq!(err.kind, ErrorKind::INVALID_INPUT);

    // Without tenant_id, the tenant is learnt from the user's messages.
    let mem = MemoryHost::new();
    let mut settings = b.fake.settings();
    settings.as_object_mut().unwrap().remove("tenant_id");
    let channel = create(&b.fake, &mem, settings).expect("create");
    channel.start().expect("start");
    assert_eq!(
        channel.open_dm(BOB).expect_err("tenant unknown").kind,
        ErrorKind::NOT_FOUND
    );
    let hi = b.fake.message(DM_BOB, BOB, "hi", None, false);
    let status = channel
        .handle_webhook(request(&hi, Some(&b.fake.bearer())))
        .unwrap()
        .status;
    assert_eq!(status, 200);
    assert_eq!(channel.open_dm(BOB).expect("open"), DM_BOB);
}

#[test]
fn start_checks_the_credentials_and_settings_are_validated() {
    let fake = FakeTeams::start();
    let mut wrong = fake.settings();
    wrong["app_password"] = json!("not-the-secret");
    let mem = MemoryHost::new();
    let channel = create(&fake, &mem, wrong).expect("create");
    let err = channel.start().expect_err("refused");
    assert_eq!(err.kind, ErrorKind::AUTH, "{err}");
    assert!(err.message.contains("TEAMS_APP_PASSWORD"), "{err}");
    assert!(!err.message.contains("not-the-secret"));
    assert_eq!(channel.health().status, HealthStatus::DOWN);

    fake.harness()
        .fail_next(Route::named("token"), 1, Fault::server_error());
    let channel = create(&fake, &MemoryHost::new(), fake.settings()).expect("create");
    assert_eq!(channel.start().expect_err("down").kind, ErrorKind::NETWORK);

    for bad in [
        json!({"app_id": "not-a-guid", "app_password": "x"}),
        json!({"app_id": APP_ID, "app_password": ""}),
        json!({"app_id": APP_ID, "app_password": "x", "token_url": "ftp://x"}),
        json!({"app_id": APP_ID, "app_password": "x", "surprise": 1}),
    ] {
        let err = create(&fake, &MemoryHost::new(), bad)
            .err()
            .expect("refused");
        assert_eq!(err.kind, ErrorKind::CONFIG, "{err}");
    }
    let _ = unix_now();
}
