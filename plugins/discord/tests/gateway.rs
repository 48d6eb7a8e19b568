//! The gateway against the fake: identify, heartbeats, resume, op 7 / op 9, inbound
//! messages and clicks, restarts.

mod common;

use std::time::Duration;

use common::*;
use nanoclaw_plugin_api::abi::{ErrorKind, HealthStatus, PluginError};
use nanoclaw_plugin_api::kit::Channel;
use nanoclaw_plugin_api::kit::testing::MemoryHost;
use serde_json::{Value, json};

#[test]
fn identifies_with_the_intents_and_heartbeats_with_jitter() {
    let fake = FakeDiscord::start();
    let mem = MemoryHost::new();
    let channel = started(&fake, mem.host());
    let identify = &fake.identifies()[0];
    assert_eq!(identify["op"], 2);
    assert_eq!(identify["d"]["token"], TOKEN);
    let intents = identify["d"]["intents"].as_u64().expect("intents");
    for bit in [0, 9, 12, 15] {
        assert_ne!(intents & (1 << bit), 0, "intent bit {bit}");
    }
    // Heartbeats at the Hello interval, each acknowledged: the connection stays.
    wait_until("three heartbeats", || fake.heartbeats().len() >= 3);
    let beats = fake.heartbeats();
    let gaps: Vec<i64> = beats.windows(2).map(|w| w[1].1 - w[0].1).collect();
    for gap in &gaps {
        let gap = u64::try_from(*gap).expect("ordered");
        assert!(
            gap + 100 >= HEARTBEAT_MS && gap <= HEARTBEAT_MS + 400,
            "heartbeat gap {gap} ms"
        );
    }
    // The heartbeat carries the last sequence number (READY's 1).
    let last = fake
        .gateway
        .received()
        .into_iter()
        .filter_map(|f| f.message.json())
        .rfind(|p| p["op"] == 1)
        .expect("a heartbeat");
    assert_eq!(last["d"], 1);
    assert_eq!(fake.gateway.connections_opened(), 1);
    assert_eq!(channel.health().status, HealthStatus::OK);
    channel.teardown();
}

#[test]
fn the_gateway_url_comes_from_gateway_bot_without_the_setting() {
    let fake = FakeDiscord::start();
    let mem = MemoryHost::new();
    let mut settings = settings(&fake);
    settings
        .as_object_mut()
        .expect("object")
        .remove("gateway_url");
    let channel = create_with(mem.host(), settings);
    channel.start().expect("start");
    wait_until("identify", || !fake.identifies().is_empty());
    assert_eq!(fake.harness.calls_to("get_gateway_bot").len(), 1);
    channel.teardown();
}

#[test]
fn a_refused_token_is_auth_and_says_what_to_do() {
    let fake = FakeDiscord::start();
    let mem = MemoryHost::new();
    let mut settings = settings(&fake);
    settings["bot_token"] = json!("MTEx.wrong.token");
    let channel = create_with(mem.host(), settings);
    let err: PluginError = channel.start().expect_err("refused");
    assert_eq!(err.kind, ErrorKind::AUTH);
    assert!(err.message.contains("DISCORD_BOT_TOKEN"), "{err}");
    assert!(!err.message.contains("wrong.token"), "{err}");
    assert_eq!(channel.health().status, HealthStatus::DOWN);
    assert!(fake.identifies().is_empty());
    channel.teardown();
}

#[test]
fn inbound_dm_guild_thread_mention_reply_and_attachments() {
    let fake = FakeDiscord::start();
    let mem = MemoryHost::new();
    let channel = started(&fake, mem.host());
    fake.dispatch("MESSAGE_CREATE", fixture("message_create_dm"));
    fake.dispatch("MESSAGE_CREATE", fixture("message_create_guild_mention"));
    fake.dispatch("MESSAGE_CREATE", fixture("message_create_guild_plain"));
    fake.dispatch("MESSAGE_CREATE", fixture("message_create_thread_reply"));
    fake.dispatch("MESSAGE_CREATE", fixture("message_create_voice"));
    // The bot's own message is not handed over, nor an update that only adds an embed.
    fake.dispatch("MESSAGE_CREATE", fixture("message_create_own"));
    let mut embed_only = fixture("message_update");
    embed_only["edited_timestamp"] = Value::Null;
    fake.dispatch("MESSAGE_UPDATE", embed_only);
    // A sticker alone: nothing an agent can read.
    let mut sticker = dm(50, "");
    sticker["sticker_items"] =
        json!([{"id": "749054660769218631", "name": "Wave", "format_type": 3}]);
    fake.dispatch("MESSAGE_CREATE", sticker);
    fake.dispatch(
        "TYPING_START",
        json!({"channel_id": DM_CHANNEL, "user_id": ANN}),
    );
    wait_until("five messages", || mem.inbound().len() >= 5);
    std::thread::sleep(Duration::from_millis(200));
    let events = mem.inbound();
    assert_eq!(events.len(), 5, "{events:#?}");

    let dm = &events[0];
    assert_eq!(dm.chat_id.as_str(), DM_CHANNEL);
    assert_eq!(dm.message_id.as_str(), "1300000000000000101");
    assert!(!dm.is_group);
    assert!(dm.mentioned, "a DM counts as a mention");
    assert_eq!(dm.text.as_str(), "hello there");
    let ann = dm.sender.clone().unwrap();
    assert_eq!(ann.handle.as_str(), ANN);
    assert_eq!(ann.display_name.clone().unwrap().as_str(), "Ann Lee");
    assert!(!ann.is_bot);
    assert!(dm.timestamp_ms > 1_700_000_000_000);

    let mention = &events[1];
    assert_eq!(mention.chat_id.as_str(), GUILD_CHANNEL);
    assert!(mention.is_group);
    assert!(mention.mentioned);
    assert_eq!(mention.text.as_str(), "@clawbot what is the weather?");
    let bob = mention.sender.clone().unwrap();
    assert_eq!(bob.handle.as_str(), BOB);
    assert_eq!(bob.display_name.clone().unwrap().as_str(), "Bobby");
    assert_eq!(mention.attachments.len(), 1);
    let png = &mention.attachments[0];
    assert_eq!(png.kind.as_str(), "image");
    assert_eq!(png.name.as_str(), "forecast.png");
    assert_eq!(png.mime_type.as_str(), "image/png");
    // Downloaded from the (fake) CDN, so the agent gets the file itself.
    assert!(png.url.clone().unwrap().contains("/cdn/attachments/"));
    assert_eq!(
        png.data.as_slice(),
        b"content of attachments/1400000000000000010/1400000000000000201/forecast.png"
    );
    assert_eq!(png.size, png.data.len() as u64);
    let extra: Value = serde_json::from_str(mention.extra_json.as_str()).unwrap();
    assert_eq!(extra["guild_id"], GUILD);

    let plain = &events[2];
    assert!(plain.is_group);
    assert!(
        !plain.mentioned,
        "no mention, no reply: the engage rule decides"
    );

    let reply = &events[3];
    assert_eq!(
        reply.chat_id.as_str(),
        THREAD,
        "a thread is a chat of its own"
    );
    assert!(reply.is_group);
    assert!(reply.mentioned, "a reply to the bot engages");
    let quoted = reply.reply_to.clone().unwrap();
    assert_eq!(quoted.message_id.unwrap().as_str(), "1400000000000000090");
    assert_eq!(quoted.text.as_str(), "Sunny, 21 °C.");
    assert_eq!(quoted.sender.unwrap().as_str(), BOT_NAME);

    let voice = &events[4];
    assert!(!voice.attachments[0].data.is_empty());
    assert_eq!(voice.attachments[0].kind.as_str(), "voice");
    assert_eq!(voice.attachments[0].mime_type.as_str(), "audio/ogg");
    channel.teardown();
}

#[test]
fn an_edit_is_handed_over_once_as_a_message_of_its_own() {
    let fake = FakeDiscord::start();
    let mem = MemoryHost::new();
    let channel = started(&fake, mem.host());
    fake.dispatch("MESSAGE_CREATE", fixture("message_create_dm"));
    fake.dispatch("MESSAGE_UPDATE", fixture("message_update"));
    // Discord may deliver the same update twice (a resume replays it): one edit.
    fake.dispatch("MESSAGE_UPDATE", fixture("message_update"));
    wait_until("the message and its edit", || mem.inbound().len() >= 2);
    std::thread::sleep(Duration::from_millis(200));
    let events = mem.inbound();
    assert_eq!(events.len(), 2, "{events:#?}");
    let edit = &events[1];
    assert_eq!(
        edit.message_id.as_str(),
        "1300000000000000101:edit:2026-12-03T12:06:00.000000+00:00"
    );
    assert_eq!(edit.text.as_str(), "hello there (edited)");
    assert_eq!(edit.chat_id.as_str(), DM_CHANNEL);
    let extra: Value = serde_json::from_str(edit.extra_json.as_str()).unwrap();
    assert_eq!(extra["edit_of"], "1300000000000000101");
    channel.teardown();
}

#[test]
fn a_deleted_message_is_reported_to_the_host() {
    let fake = FakeDiscord::start();
    let mem = MemoryHost::new();
    let channel = started(&fake, mem.host());
    fake.dispatch("MESSAGE_CREATE", fixture("message_create_dm"));
    // As Discord documents MESSAGE_DELETE: ids only.
    fake.dispatch(
        "MESSAGE_DELETE",
        json!({"id": "1300000000000000101", "channel_id": DM_CHANNEL}),
    );
    wait_until("the deletion", || !mem.deletions().is_empty());
    let deleted = &mem.deletions()[0];
    assert_eq!(deleted.chat_id.as_str(), DM_CHANNEL);
    assert_eq!(deleted.message_id.as_str(), "1300000000000000101");
    assert!(
        deleted.thread_id.is_none(),
        "a thread is a channel of its own"
    );
    assert_eq!(mem.inbound().len(), 1, "a deletion is not a message");
    channel.teardown();
}

#[test]
fn a_reply_to_someone_else_without_a_mention_does_not_engage() {
    let fake = FakeDiscord::start();
    let mem = MemoryHost::new();
    let channel = started(&fake, mem.host());
    let mut message = fixture("message_create_thread_reply");
    message["mentions"] = json!([]);
    message["referenced_message"]["author"] = json!({"id": BOB, "username": "bob"});
    fake.dispatch("MESSAGE_CREATE", message);
    wait_until("the message", || mem.inbound().len() == 1);
    assert!(!mem.inbound()[0].mentioned);
    channel.teardown();
}

#[test]
fn a_button_click_is_acknowledged_and_handed_over_with_the_clicker() {
    let fake = FakeDiscord::start();
    let mem = MemoryHost::new();
    let channel = started(&fake, mem.host());
    fake.dispatch("INTERACTION_CREATE", fixture("interaction_create_button"));
    fake.dispatch(
        "INTERACTION_CREATE",
        fixture("interaction_create_button_dm"),
    );
    wait_until("two clicks", || mem.actions().len() == 2);
    wait_until("two acknowledgements", || fake.acks().len() == 2);
    let actions = mem.actions();
    let guild = &actions[0];
    assert_eq!(guild.chat_id.as_str(), GUILD_CHANNEL);
    assert_eq!(guild.message_id.as_str(), "1400000000000000300");
    assert_eq!(guild.action_id.as_str(), "ncq:q42:0");
    assert_eq!(guild.clicker.handle.as_str(), ANN, "member.user in a guild");
    let dm = &actions[1];
    assert_eq!(dm.chat_id.as_str(), DM_CHANNEL);
    assert_eq!(dm.clicker.handle.as_str(), ANN, "user in a DM");
    assert_eq!(dm.action_id.as_str(), "ncq:q7:0");
    let mut acks = fake.acks();
    acks.sort();
    assert_eq!(
        acks,
        [
            ("1500000000000000001".to_owned(), 6),
            ("1500000000000000002".to_owned(), 6)
        ],
        "deferred update (type 6)"
    );
    // The interaction callback carries the interaction token in its path, never the bot's.
    let callback = &fake.harness.calls_to("interaction_callback")[0];
    assert!(callback.path.contains("aW50ZXJhY3Rpb24"));
    channel.teardown();
}

#[test]
fn a_dropped_socket_resumes_without_losing_or_repeating_events() {
    let fake = FakeDiscord::start();
    let mem = MemoryHost::new();
    let channel = started(&fake, mem.host());
    fake.dispatch("MESSAGE_CREATE", dm(1, "one"));
    wait_until("one", || mem.inbound().len() == 1);
    fake.drop_connections();
    // Sent while the plugin is away: Discord replays them on resume.
    fake.dispatch("MESSAGE_CREATE", dm(2, "two"));
    fake.dispatch("MESSAGE_CREATE", dm(3, "three"));
    wait_until("a resume", || !fake.resumes().is_empty());
    wait_until("three", || mem.inbound().len() >= 3);
    fake.dispatch("MESSAGE_CREATE", dm(4, "four"));
    wait_until("four", || mem.inbound().len() >= 4);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(texts(&mem), ["one", "two", "three", "four"]);
    let resume = &fake.resumes()[0];
    assert_eq!(resume["d"]["session_id"], "session1");
    assert_eq!(resume["d"]["seq"], 2, "READY is 1, `one` is 2");
    assert_eq!(resume["d"]["token"], TOKEN);
    assert_eq!(fake.identifies().len(), 1, "resumed, not identified again");
    assert_eq!(fake.resume.connections_opened(), 1, "at resume_gateway_url");
    channel.teardown();
}

#[test]
fn an_unacknowledged_heartbeat_reconnects_and_resumes() {
    let fake = FakeDiscord::start();
    let mem = MemoryHost::new();
    let channel = started(&fake, mem.host());
    fake.set_ack_heartbeats(false);
    wait_until("a resume after a missed ACK", || !fake.resumes().is_empty());
    fake.set_ack_heartbeats(true);
    fake.dispatch("MESSAGE_CREATE", dm(1, "still here"));
    wait_until("the message", || mem.inbound().len() == 1);
    assert_eq!(fake.identifies().len(), 1);
    channel.teardown();
}

#[test]
fn op_7_reconnect_resumes() {
    let fake = FakeDiscord::start();
    let mem = MemoryHost::new();
    let channel = started(&fake, mem.host());
    fake.send_op(json!({"op": 7, "d": null, "s": null, "t": null}));
    fake.dispatch("MESSAGE_CREATE", dm(1, "after reconnect"));
    wait_until("a resume", || !fake.resumes().is_empty());
    wait_until("the message", || mem.inbound().len() == 1);
    assert_eq!(texts(&mem), ["after reconnect"]);
    assert_eq!(fake.identifies().len(), 1);
    channel.teardown();
}

#[test]
fn op_9_resumable_resumes_and_not_resumable_identifies_afresh() {
    let fake = FakeDiscord::start();
    let mem = MemoryHost::new();
    let channel = started(&fake, mem.host());
    fake.send_op(json!({"op": 9, "d": true, "s": null, "t": null}));
    wait_until("a resume", || fake.resumes().len() == 1);
    wait_until("resumed", || fake.current_session().is_some());
    assert_eq!(fake.identifies().len(), 1);

    // Not resumable: the next connection identifies and gets a new session.
    fake.invalidate_sessions();
    fake.send_op(json!({"op": 9, "d": false, "s": null, "t": null}));
    wait_until("a second identify", || fake.identifies().len() == 2);
    wait_until("the new session", || {
        fake.current_session().as_deref() == Some("session2")
    });
    std::thread::sleep(Duration::from_millis(100));
    fake.dispatch("MESSAGE_CREATE", dm(1, "new session"));
    wait_until("the message", || mem.inbound().len() == 1);
    channel.teardown();
}

#[test]
fn a_stale_session_after_a_drop_identifies_afresh() {
    let fake = FakeDiscord::start();
    let mem = MemoryHost::new();
    let channel = started(&fake, mem.host());
    fake.invalidate_sessions();
    fake.drop_connections();
    // The resume is answered with op 9 (not resumable): identify.
    wait_until("a resume attempt", || !fake.resumes().is_empty());
    wait_until("a second identify", || fake.identifies().len() == 2);
    channel.teardown();
}

#[test]
fn close_4004_stops_the_channel_with_the_reason() {
    let fake = FakeDiscord::start();
    let mem = MemoryHost::new();
    let channel = started(&fake, mem.host());
    fake.close_current(4004);
    wait_until("down", || channel.health().status == HealthStatus::DOWN);
    assert!(channel.health().detail.contains("DISCORD_BOT_TOKEN"));
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        fake.gateway.connections_opened() + fake.resume.connections_opened(),
        1,
        "no reconnect after 4004"
    );
    channel.teardown();
}

#[test]
fn a_restart_resumes_from_the_last_event_handed_over() {
    let fake = FakeDiscord::start();
    let mem = MemoryHost::new();
    let first = started(&fake, mem.host());
    fake.dispatch("MESSAGE_CREATE", dm(1, "before"));
    wait_until("before", || mem.inbound().len() == 1);
    // The host refuses the next one, then the plugin stops: it was never taken.
    mem.set_reject_inbound(Some(PluginError::other("host busy")));
    fake.dispatch("MESSAGE_CREATE", dm(2, "refused then stopped"));
    std::thread::sleep(Duration::from_millis(300));
    first.teardown();
    mem.set_reject_inbound(None);
    // While nothing runs.
    fake.dispatch("MESSAGE_CREATE", dm(3, "while down"));

    let second = started(&fake, mem.host());
    wait_until("all three", || mem.inbound().len() >= 3);
    fake.dispatch("MESSAGE_CREATE", dm(4, "after"));
    wait_until("after", || mem.inbound().len() >= 4);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        texts(&mem),
        ["before", "refused then stopped", "while down", "after"]
    );
    let resume = fake.resumes().pop().expect("the restart resumed");
    assert_eq!(resume["d"]["session_id"], "session1");
    assert_eq!(resume["d"]["seq"], 2, "the last event the host took");
    assert_eq!(fake.identifies().len(), 1);
    second.teardown();
}

#[test]
fn a_replayed_event_the_host_already_took_is_not_repeated() {
    let fake = FakeDiscord::start();
    let mem = MemoryHost::new();
    let first = started(&fake, mem.host());
    fake.dispatch("MESSAGE_CREATE", dm(1, "one"));
    fake.dispatch("INTERACTION_CREATE", fixture("interaction_create_button"));
    wait_until("both", || {
        mem.inbound().len() == 1 && mem.actions().len() == 1
    });
    first.teardown();
    // Forget the recorded position, as if the plugin had died before recording it: the
    // resume replays everything after READY.
    mem.host().kv_delete("gateway_session").expect("kv");
    let host = mem.host();
    host.kv_set(
        "gateway_session",
        &json!({"session_id": "session1", "resume_url": format!("ws://{}/resume", fake.server.addr()), "seq": 1})
            .to_string(),
        None,
    )
    .expect("kv");
    let second = started(&fake, mem.host());
    fake.dispatch("MESSAGE_CREATE", dm(2, "two"));
    wait_until("two", || mem.inbound().len() >= 2);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(texts(&mem), ["one", "two"]);
    assert_eq!(
        mem.actions().len(),
        1,
        "the click was not handed over twice"
    );
    second.teardown();
}

/// POSTs or GETs the fake's control API, as the `fake-discord` CLI does.
fn control(fake: &FakeDiscord, path: &str, body: Option<Value>) -> Value {
    use nanoclaw_plugin_api::kit::http::reqwest;
    let rt = nanoclaw_plugin_api::kit::runtime("control", 1).expect("runtime");
    let url = format!("{}{path}", fake.server.base_url());
    rt.block_on(async {
        nanoclaw_plugin_api::kit::http::install_crypto_provider();
        let client = reqwest::Client::new();
        let request = match body {
            Some(body) => client.post(&url).json(&body),
            None => client.get(&url),
        };
        let response = request.send().await.expect("control call");
        assert!(response.status().is_success(), "{}", response.status());
        response.json().await.expect("json")
    })
}

#[test]
fn the_fakes_control_api_plays_users_for_the_cli() {
    use nanoclaw_plugin_api::abi::{Button, OutboundMessage, OutboundOp};
    use nanoclaw_plugin_api::kit::testing::send;
    let fake = FakeDiscord::start();
    let mem = MemoryHost::new();
    let channel = started(&fake, mem.host());
    let sent = control(
        &fake,
        "/control/send",
        Some(json!({"from": "42", "name": "Ann Lee", "text": "hello"})),
    );
    let dm = sent["channel_id"].as_str().expect("dm").to_owned();
    wait_until("the DM", || mem.inbound().len() == 1);
    let event = &mem.inbound()[0];
    assert_eq!(event.chat_id.as_str(), dm);
    assert!(!event.is_group && event.mentioned);
    assert_eq!(event.sender.clone().unwrap().handle.as_str(), "42");
    // The DM the fake opened for the user is the one open_dm resolves.
    assert_eq!(channel.open_dm("42").expect("open_dm"), dm);

    let card = OutboundMessage {
        op: OutboundOp::SEND,
        chat_id: dm.as_str().into(),
        text: "Allow?".into(),
        buttons: vec![Button {
            id: "ncq:q1:0".into(),
            label: "Yes".into(),
        }]
        .into(),
        ..OutboundMessage::default()
    };
    let id = send(&channel, card).expect("card")[0].clone().expect("id");
    let listed = control(&fake, "/control/sent", None);
    assert_eq!(listed[0]["id"], id.as_str());
    assert_eq!(
        listed[0]["components"][0]["components"][0]["custom_id"],
        "ncq:q1:0"
    );
    control(
        &fake,
        "/control/click",
        Some(
            json!({"from": "42", "name": "Ann Lee", "channel": dm, "message": id, "custom_id": "ncq:q1:0"}),
        ),
    );
    wait_until("the click", || mem.actions().len() == 1);
    assert_eq!(mem.actions()[0].clicker.handle.as_str(), "42");
    wait_until("the acknowledgement", || fake.acks().len() == 1);

    // In a server channel, with a mention.
    control(
        &fake,
        "/control/send",
        Some(
            json!({"from": "42", "name": "Ann Lee", "text": "hi", "channel": GUILD_CHANNEL,
                    "guild": GUILD, "mention": true}),
        ),
    );
    wait_until("the channel message", || mem.inbound().len() == 2);
    let event = &mem.inbound()[1];
    assert!(event.is_group && event.mentioned);
    assert_eq!(event.text.as_str(), "@clawbot hi");
    channel.teardown();
}

#[test]
fn a_poison_event_is_skipped_and_reported_and_the_rest_flow() {
    use nanoclaw_plugin_api::abi::PluginError;
    let fake = FakeDiscord::start();
    let mem = MemoryHost::new();
    let mut settings = settings(&fake);
    settings["skip_after_refusals"] = json!(2);
    let channel = create_with(mem.host(), settings);
    channel.start().expect("start");
    wait_until("a session", || fake.current_session().is_some());
    std::thread::sleep(Duration::from_millis(100));
    mem.set_reject_inbound(Some(PluginError::other("cannot store this one")));
    fake.dispatch("MESSAGE_CREATE", dm(1, "poison"));
    wait_until("skipped", || {
        mem.logs()
            .iter()
            .any(|l| l.message.contains("skipping message 1300000000000000001"))
    });
    assert!(channel.health().detail.contains("cannot store this one"));
    mem.set_reject_inbound(None);
    fake.dispatch("MESSAGE_CREATE", dm(2, "next"));
    wait_until("the next one", || texts(&mem) == ["next"]);
    channel.teardown();
}
