//! The Slack operator journey, end to end: the real `nanoclaw` daemon with the real Slack
//! plugin (the cdylib) in Socket Mode against a fake Slack on 127.0.0.1, agents in
//! containers of the locally built image running the mock provider. Tests act only as a
//! Slack user would (through the fake's Socket Mode) and as the operator would (the
//! `nanoclaw` CLI). Skipped (with a message) without a Docker engine.

mod common;
mod harness;

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::time::Duration;

use harness::journey::{self, AGENT, Owner, Platform, approvals};
use harness::{Daemon, Install, built, free_port, require_engine, wait_until};
use nanoclaw_fake_slack::{
    ANN, APP_TOKEN, BOB, BOT_TOKEN, BOT_USER, DM_ANN, FakeSlack, GENERAL, Posted, SIGNING_SECRET,
    callback, now_secs, signature,
};

const ECHO: &str = "[[rule]]\nreply = \"echo: {text}\"\n";

/// One install: a temp data dir whose `.env` holds the tokens, and a fake Slack.
struct Slack {
    install: Install,
    fake: FakeSlack,
}

impl std::ops::Deref for Slack {
    type Target = Install;
    fn deref(&self) -> &Install {
        &self.install
    }
}

impl Slack {
    fn new() -> Slack {
        Slack {
            install: Install::new(&format!(
                "SLACK_BOT_TOKEN={BOT_TOKEN}\nSLACK_APP_TOKEN={APP_TOKEN}\n\
                 SLACK_SIGNING_SECRET={SIGNING_SECRET}\n"
            )),
            fake: FakeSlack::start(),
        }
    }

    fn plugins_toml(&self) -> String {
        format!(
            "[plugins.slack]\nlibrary = {:?}\nrequired = true\n\
             [plugins.slack.settings]\nbot_token = {{ env = \"SLACK_BOT_TOKEN\" }}\n\
             app_token = {{ env = \"SLACK_APP_TOKEN\" }}\n\
             api_base_url = {:?}\nfile_hosts = [{:?}]\npost_per_sec = 20\n",
            built().join("libnanoclaw_plugin_channels.so"),
            self.fake.api_url(),
            self.fake.base_url(),
        )
    }

    /// Starts the daemon and waits until the plugin's Socket Mode connection is open.
    fn start(&self) -> Daemon {
        let daemon = Daemon::start_event_driven(&self.data, &self.plugins_toml(), &[]);
        let connected = self.fake.hub.wait_connections(1, Duration::from_secs(30));
        assert!(connected, "the plugin never connected:\n{}", daemon.log());
        // The hello has been read once the connection is up.
        std::thread::sleep(Duration::from_millis(200));
        daemon
    }
}

impl Platform for Slack {
    type Chat = str;
    type Posted = Posted;

    fn posted(&self, channel: &str) -> Vec<Posted> {
        self.fake.bot_messages(channel)
    }

    fn shown(m: &Posted) -> String {
        m.text.clone()
    }
}

/// Ann pairs in her DM with the bot and becomes owner, then gets her DM agent from
/// `init-first-agent` with the DM's conversation id (raw, as `--chat` takes it), as
/// skills/add-slack says.
fn first_agent(s: &Slack, daemon: &Daemon) {
    let ann = Owner {
        channel: "slack",
        id: ANN,
        chat: DM_ANN,
        dm: DM_ANN,
    };
    journey::first_agent(s, daemon, &ann, |code| {
        s.fake.say(DM_ANN, "im", ANN, code, None);
    });
}

#[test]
fn the_owner_dm_is_answered_by_the_first_agent() {
    if !require_engine("the_owner_dm_is_answered_by_the_first_agent") {
        return;
    }
    let s = Slack::new();
    let daemon = s.start();
    first_agent(&s, &daemon);
    s.fake.say(DM_ANN, "im", ANN, "hello from Slack", None);
    let answer = s.wait_message(&daemon, DM_ANN, "echoing the DM", |m| {
        m.text.contains("you said") && m.text.contains("hello from Slack")
    });
    assert_eq!(answer.thread_ts, None, "a DM is answered in the DM itself");
    // Every acknowledged envelope was acknowledged once.
    let acks = s.fake.acks();
    let mut unique = acks.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(acks.len(), unique.len(), "{acks:?}");
    let sessions = s.json(&["sessions", "list"]);
    assert_eq!(sessions.as_array().unwrap().len(), 1, "{sessions}");
}

#[test]
fn a_channel_engages_on_a_mention_and_answers_in_the_thread() {
    if !require_engine("a_channel_engages_on_a_mention_and_answers_in_the_thread") {
        return;
    }
    let s = Slack::new();
    s.agent("team", ECHO);
    s.ok(&[
        "chats",
        "add",
        &format!("slack:{GENERAL}"),
        "--name",
        "general",
        "--group",
        "--policy",
        "public",
    ]);
    let out = s.ok(&["wire", "add", &format!("slack:{GENERAL}"), "team"]);
    assert!(out.contains("(mention)"), "{out}");
    let daemon = s.start();

    s.fake.say(GENERAL, "channel", BOB, "just chatting", None);
    let asked = s.fake.say(
        GENERAL,
        "channel",
        BOB,
        &format!("<@{BOT_USER}> are you there?"),
        None,
    );
    let answer = s.wait_message(&daemon, GENERAL, "answering the mention", |m| {
        m.text.starts_with("echo:")
    });
    assert!(answer.text.contains("are you there?"), "{}", answer.text);
    assert_eq!(
        answer.thread_ts.as_deref(),
        Some(asked.as_str()),
        "the answer goes in the thread of the mention"
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(s.texts(GENERAL).len(), 1, "{:?}", s.texts(GENERAL));

    // A reply in that thread, without a mention: the bot posted there, so it engages.
    s.fake
        .say(GENERAL, "channel", BOB, "and tomorrow?", Some(&asked));
    let followup = s.wait_message(&daemon, GENERAL, "answering in the thread", |m| {
        m.text == "echo: and tomorrow?"
    });
    assert_eq!(followup.thread_ts.as_deref(), Some(asked.as_str()));
    journey::assert_unengaged_dropped(&s);
}

#[test]
fn a_long_reply_arrives_split_in_order_and_intact() {
    if !require_engine("a_long_reply_arrives_split_in_order_and_intact") {
        return;
    }
    let long = journey::numbered_words(1100);
    let s = Slack::new();
    s.mock(
        "dm-with-ann",
        &format!(
            "[[rule]]\nmatch = \"^essay\"\nreply = {}\n\n\
             [[rule]]\nreply = \"Hi, I am your NanoClaw agent.\"\n",
            toml::Value::String(long.clone())
        ),
    );
    let daemon = s.start();
    first_agent(&s, &daemon);
    s.fake.say(DM_ANN, "im", ANN, "essay please", None);
    let expected: Vec<&str> = long.split_whitespace().collect();
    let words = || -> Vec<String> {
        s.texts(DM_ANN)
            .iter()
            .skip_while(|t| !t.contains("your NanoClaw agent"))
            .skip(1)
            .flat_map(|t| t.split_whitespace().map(str::to_string).collect::<Vec<_>>())
            .collect()
    };
    let complete = wait_until(AGENT, || words().len() >= expected.len());
    assert!(complete, "got {} words\n{}", words().len(), daemon.log());
    std::thread::sleep(Duration::from_secs(2));
    let parts: Vec<String> = s
        .texts(DM_ANN)
        .into_iter()
        .skip_while(|t| !t.contains("your NanoClaw agent"))
        .skip(1)
        .collect();
    assert!(parts.len() >= 4, "{} parts", parts.len());
    for p in &parts {
        assert!(
            p.chars().count() <= 3000,
            "a part of {} chars",
            p.chars().count()
        );
    }
    assert_eq!(words(), expected, "every word once, in order");
}

/// The bot's message in `channel` with buttons that mentions `who`.
fn card_in(s: &Slack, channel: &str, who: &str) -> Option<Posted> {
    s.fake
        .bot_messages(channel)
        .into_iter()
        .find(|m| m.blocks.is_some() && m.text.contains(who))
}

/// The `action_id` of the card's button labelled `label`.
fn button(card: &Posted, label: &str) -> String {
    card.blocks
        .iter()
        .flat_map(|b| b.as_array().cloned().unwrap_or_default())
        .filter(|b| b["type"] == "actions")
        .flat_map(|b| b["elements"].as_array().cloned().unwrap_or_default())
        .find(|e| e["text"]["text"] == label)
        .and_then(|e| e["action_id"].as_str().map(str::to_owned))
        .unwrap_or_else(|| panic!("no {label} button on {card:?}"))
}

#[test]
fn an_unknown_sender_waits_for_the_owner_to_click_allow() {
    if !require_engine("an_unknown_sender_waits_for_the_owner_to_click_allow") {
        return;
    }
    let s = Slack::new();
    s.agent("team", ECHO);
    s.ok(&[
        "chats",
        "add",
        &format!("slack:{GENERAL}"),
        "--name",
        "general",
        "--group",
        "--policy",
        "request_approval",
    ]);
    s.ok(&["wire", "add", &format!("slack:{GENERAL}"), "team"]);
    let daemon = s.start();
    first_agent(&s, &daemon);

    // Bob is unknown: his message is held and the card goes to Ann's DM.
    let bob = format!("slack:{BOB}");
    let asked = s.fake.say(
        GENERAL,
        "channel",
        BOB,
        &format!("<@{BOT_USER}> hi from bob"),
        None,
    );
    let ok = wait_until(AGENT, || card_in(&s, DM_ANN, &bob).is_some());
    assert!(
        ok,
        "no card in the owner's DM: {:?}\n{}",
        s.texts(DM_ANN),
        daemon.log()
    );
    let card = card_in(&s, DM_ANN, &bob).unwrap();
    assert!(s.texts(GENERAL).is_empty(), "{:?}", s.texts(GENERAL));
    assert_eq!(approvals(&s), [(bob.clone(), "pending".into())]);
    let allow = button(&card, "Allow");

    // Bob clicks Allow himself: ignored (the clicker's id reached the host).
    s.fake.click(DM_ANN, &card.ts, BOB, &allow);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(approvals(&s), [(bob.clone(), "pending".into())]);

    // Ann allows: the held message is answered in the channel, in its thread.
    s.fake.click(DM_ANN, &card.ts, ANN, &allow);
    let answer = s.wait_message(&daemon, GENERAL, "answering Bob", |m| {
        m.text.starts_with("echo:") && m.text.contains("hi from bob")
    });
    assert_eq!(answer.thread_ts.as_deref(), Some(asked.as_str()));
    assert_eq!(approvals(&s), [(bob, "approved".into())]);
}

/// POSTs `body` to the daemon's webhook server as Slack does: signed with the signing
/// secret (or not), with extra headers. Returns the status and the body.
fn post_signed(port: u16, body: &str, signed: bool, extra: &[(&str, &str)]) -> (u16, String) {
    let ts = now_secs();
    let mut headers = String::new();
    if signed {
        headers.push_str(&format!(
            "X-Slack-Request-Timestamp: {ts}\r\nX-Slack-Signature: {}\r\n",
            signature(SIGNING_SECRET, ts, body.as_bytes())
        ));
    }
    for (k, v) in extra {
        headers.push_str(&format!("{k}: {v}\r\n"));
    }
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    write!(
        stream,
        "POST /webhook/slack HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         {headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// An Events API DM from Ann, as Slack POSTs it.
fn dm_event(ts: &str, text: &str) -> String {
    let event = serde_json::json!({
        "type": "message", "text": text, "user": ANN, "ts": ts, "team": "T0TEAM",
        "channel": DM_ANN, "event_ts": ts, "channel_type": "im",
    });
    callback(&format!("Ev{}", ts.replace('.', "")), event).to_string()
}

#[test]
fn the_events_api_webhook_is_verified_and_reaches_the_agent() {
    if !require_engine("the_events_api_webhook_is_verified_and_reaches_the_agent") {
        return;
    }
    let s = Slack::new();
    let port = free_port();
    let toml = format!(
        "[plugins.slack]\nlibrary = {:?}\nrequired = true\n\
         [plugins.slack.settings]\nbot_token = {{ env = \"SLACK_BOT_TOKEN\" }}\n\
         signing_secret = {{ env = \"SLACK_SIGNING_SECRET\" }}\n\
         api_base_url = {:?}\nfile_hosts = [{:?}]\npost_per_sec = 20\n",
        built().join("libnanoclaw_plugin_channels.so"),
        s.fake.api_url(),
        s.fake.base_url(),
    );
    let daemon = journey::start_with_webhooks(&s, &toml, port, || {
        !s.fake.harness().calls_to("auth.test").is_empty()
    });
    assert!(
        s.fake
            .harness()
            .calls_to("apps.connections.open")
            .is_empty()
    );

    // Slack checks the Request URL.
    let challenge = r#"{"token":"Jhj5dZrVaK7ZwHHjRyZWjbDl","challenge":"3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P","type":"url_verification"}"#;
    let (status, body) = post_signed(port, challenge, true, &[]);
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"),
        "{body}"
    );
    // A forged request: 401, nothing stored.
    let (status, _) = post_signed(port, &dm_event("1700000000.900001", "forged"), false, &[]);
    assert_eq!(status, 401);

    // Pairing and the first agent, over the webhook.
    journey::pair(&s, &daemon, "slack", DM_ANN, |code| {
        let (status, _) = post_signed(port, &dm_event("1700000000.900002", code), true, &[]);
        assert_eq!(status, 200);
    });
    s.ok(&[
        "init-first-agent",
        "--user",
        &format!("slack:{ANN}"),
        "--chat",
        DM_ANN,
        "--name",
        "Ann",
    ]);
    journey::welcome(&s, &daemon, DM_ANN);
    let hello = dm_event("1700000000.900003", "hello over the webhook");
    assert_eq!(post_signed(port, &hello, true, &[]).0, 200);
    // Slack retries (it did not see our answer in time): one message all the same.
    let retry = [
        ("X-Slack-Retry-Num", "1"),
        ("X-Slack-Retry-Reason", "http_timeout"),
    ];
    assert_eq!(post_signed(port, &hello, true, &retry).0, 200);
    s.wait_message(&daemon, DM_ANN, "echoing the DM", |m| {
        m.text.contains("hello over the webhook")
    });
    std::thread::sleep(Duration::from_secs(2));
    let echoes = s
        .texts(DM_ANN)
        .iter()
        .filter(|t| t.contains("hello over the webhook"))
        .count();
    assert_eq!(echoes, 1, "{:?}", s.texts(DM_ANN));
    assert!(!s.texts(DM_ANN).iter().any(|t| t.contains("forged")));

    // Ann deletes the message the agent already answered: the agent is told (a note that
    // rides along with its next turn), once however often Slack repeats it.
    let deleted = callback(
        "Ev0DELETED",
        serde_json::json!({
            "type": "message", "subtype": "message_deleted", "hidden": true,
            "channel": DM_ANN, "channel_type": "im", "ts": "1700000000.900004",
            "deleted_ts": "1700000000.900003", "event_ts": "1700000000.900004",
            "previous_message": {"type": "message", "user": ANN, "ts": "1700000000.900003",
                                 "text": "hello over the webhook"},
        }),
    )
    .to_string();
    assert_eq!(post_signed(port, &deleted, true, &[]).0, 200);
    assert_eq!(post_signed(port, &deleted, true, &retry).0, 200);
    let notes = || {
        harness::session_dirs(&s.data)
            .iter()
            .filter_map(|d| harness::inbound_db(d).ok())
            .map(|db| {
                db.query_row(
                    "SELECT COUNT(*) FROM messages_in WHERE id LIKE '%:1700000000.900003:%:deleted'
                     AND trigger = 0 AND content LIKE '%The sender deleted message%'",
                    [],
                    |r| r.get::<_, i64>(0),
                )
                .unwrap_or(0)
            })
            .sum::<i64>()
    };
    assert!(
        wait_until(Duration::from_secs(10), || notes() == 1),
        "no deletion note for the agent:\n{}",
        daemon.log()
    );
}
