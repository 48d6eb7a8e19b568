//! The Google Chat operator journey, end to end: the real `nanoclaw` daemon with the real
//! Google Chat plugin (the cdylib) behind its webhook server, against a fake Google Chat on
//! 127.0.0.1 (JWKS, token endpoint, Chat API); agents in containers of the locally built
//! image running the mock provider. Tests act only as Google Chat would (signed events
//! POSTed to `/webhook/gchat`) and as the operator would (the `nanoclaw` CLI).
//! Skipped (with a message) without a Docker engine.

mod common;
mod harness;

use std::time::Duration;

use harness::journey::{self, AGENT, Owner, Platform, approvals};
use harness::{Daemon, Install, built, free_port, require_engine, wait_until};
use nanoclaw_fake_gchat::{
    ANN, BOB, DM_ANN, FakeGchat, GENERAL, PROJECT_NUMBER, Posted, post_event_to,
};
use serde_json::Value;

const ECHO: &str = "[[rule]]\nreply = \"echo: {text}\"\n";

/// One install: a temp data dir whose `.env` holds the service account key, and a fake
/// Google Chat.
struct Gchat {
    install: Install,
    fake: FakeGchat,
    port: u16,
}

impl std::ops::Deref for Gchat {
    type Target = Install;
    fn deref(&self) -> &Install {
        &self.install
    }
}

impl Gchat {
    fn new() -> Gchat {
        Gchat {
            install: Install::new(""),
            fake: FakeGchat::start(),
            port: free_port(),
        }
    }

    fn plugins_toml(&self) -> String {
        // The key goes in `.env` on one line, as the skill says.
        std::fs::write(
            self.data.join(".env"),
            format!("GCHAT_CREDENTIALS='{}'\n", self.fake.credentials()),
        )
        .unwrap();
        format!(
            "[plugins.gchat]\nlibrary = {:?}\nrequired = true\n\
             [plugins.gchat.settings]\ncredentials = {{ env = \"GCHAT_CREDENTIALS\" }}\n\
             project_number = {PROJECT_NUMBER:?}\napi_base_url = {:?}\njwks_url = {:?}\n",
            built().join("libnanoclaw_plugin_channels.so"),
            self.fake.api_url(),
            self.fake.jwks_url(),
        )
    }

    /// Starts the daemon with its webhook server and waits until it answers.
    fn start(&self) -> Daemon {
        journey::start_with_webhooks(self, &self.plugins_toml(), self.port, || {
            !self.fake.harness().calls_to("token").is_empty()
        })
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/webhook/gchat", self.port)
    }

    /// POSTs an event as Google Chat does (signed); returns the status.
    fn post(&self, event: &Value) -> u16 {
        post_event_to(&self.url(), event, Some(&self.fake.bearer())).0
    }

    /// A user writes; returns the message's thread.
    fn say(
        &self,
        chat: &str,
        from: &str,
        text: &str,
        thread: Option<&str>,
        mention: bool,
    ) -> String {
        let event = self.fake.message(chat, from, text, thread, mention);
        assert_eq!(self.post(&event), 200, "{event}");
        event["message"]["thread"]["name"]
            .as_str()
            .unwrap()
            .to_owned()
    }
}

impl Platform for Gchat {
    type Chat = str;
    type Posted = Posted;

    fn posted(&self, chat: &str) -> Vec<Posted> {
        self.fake.app_messages(chat)
    }

    fn shown(m: &Posted) -> String {
        m.text.clone()
    }
}

/// Ann pairs in her DM with the app and becomes owner, then gets her DM agent
/// from `init-first-agent` with the chat's conversation id, as skills/add-gchat says.
fn first_agent(t: &Gchat, daemon: &Daemon) {
    let ann = Owner {
        channel: "gchat",
        id: ANN,
        chat: DM_ANN,
        dm: DM_ANN,
    };
    journey::first_agent(t, daemon, &ann, |code| {
        t.say(DM_ANN, ANN, code, None, false);
    });
}

#[test]
fn the_owner_dm_is_answered_forgeries_refused_retries_stored_once_and_long_replies_split() {
    if !require_engine(
        "the_owner_dm_is_answered_forgeries_refused_retries_stored_once_and_long_replies_split",
    ) {
        return;
    }
    let long = journey::numbered_words(1100);
    let t = Gchat::new();
    t.mock(
        "dm-with-ann",
        &format!(
            "[[rule]]\nmatch = \"^essay\"\nreply = {}\n\n\
             [[rule]]\nmatch = \"^hello\"\nreply = \"you said: {{text}}\"\n\n\
             [[rule]]\nreply = \"Hi, I am your NanoClaw agent.\"\n",
            toml::Value::String(long.clone())
        ),
    );
    let daemon = t.start();

    // Forged: no token, or a token the Bot Framework never signed: 401, nothing stored.
    let forged = t.fake.message(DM_ANN, ANN, "forged hello", None, false);
    assert_eq!(post_event_to(&t.url(), &forged, None).0, 401);
    let stale = t.fake.bearer_with(&t.fake.claims(-3600));
    assert_eq!(post_event_to(&t.url(), &forged, Some(&stale)).0, 401);

    first_agent(&t, &daemon);

    // A DM, and the Bot Framework's retry of it: answered once.
    let hello = t
        .fake
        .message(DM_ANN, ANN, "hello from Google Chat", None, false);
    assert_eq!(t.post(&hello), 200);
    assert_eq!(t.post(&hello), 200);
    t.wait_message(&daemon, DM_ANN, "echoing the DM", |m| {
        m.text.contains("hello from Google Chat")
    });
    std::thread::sleep(Duration::from_secs(2));
    let echoes = t
        .texts(DM_ANN)
        .iter()
        .filter(|x| x.contains("hello from Google Chat"))
        .count();
    assert_eq!(echoes, 1, "{:?}", t.texts(DM_ANN));
    assert!(!t.texts(DM_ANN).iter().any(|x| x.contains("forged")));

    // A long reply: split within Google Chat's limit (4,000 characters a part), every word once, in order.
    t.say(DM_ANN, ANN, "essay please", None, false);
    let expected: Vec<&str> = long.split_whitespace().collect();
    let words = || -> Vec<String> {
        t.texts(DM_ANN)
            .iter()
            .skip_while(|x| !x.contains("hello from Google Chat"))
            .skip(1)
            .flat_map(|x| x.split_whitespace().map(str::to_string).collect::<Vec<_>>())
            .collect()
    };
    let complete = wait_until(AGENT, || words().len() >= expected.len());
    assert!(complete, "got {} words\n{}", words().len(), daemon.log());
    std::thread::sleep(Duration::from_secs(2));
    let parts: Vec<String> = t
        .texts(DM_ANN)
        .into_iter()
        .skip_while(|x| !x.contains("hello from Google Chat"))
        .skip(1)
        .collect();
    assert!(parts.len() >= 3, "{} parts", parts.len());
    for p in &parts {
        assert!(
            p.chars().count() <= 4000,
            "a part of {} chars",
            p.chars().count()
        );
    }
    assert_eq!(words(), expected, "every word once, in order");
}

/// The bot's card in `chat` that mentions `who`.
fn card_in(t: &Gchat, chat: &str, who: &str) -> Option<Posted> {
    t.fake
        .app_messages(chat)
        .into_iter()
        .find(|m| !m.buttons().is_empty() && m.text.contains(who))
}

#[test]
fn a_channel_engages_on_mentions_and_an_unknown_sender_waits_for_the_owners_click() {
    if !require_engine(
        "a_channel_engages_on_mentions_and_an_unknown_sender_waits_for_the_owners_click",
    ) {
        return;
    }
    let t = Gchat::new();
    t.agent("team", ECHO);
    t.ok(&[
        "chats",
        "add",
        &format!("gchat:{GENERAL}"),
        "--name",
        "general",
        "--group",
        "--policy",
        "request_approval",
    ]);
    let out = t.ok(&["wire", "add", &format!("gchat:{GENERAL}"), "team"]);
    assert!(out.contains("(mention)"), "{out}");
    let daemon = t.start();
    first_agent(&t, &daemon);

    // Bob is unknown: his mention is held and the card goes to Ann's DM.
    let bob = format!("gchat:{BOB}");
    let asked = t.say(GENERAL, BOB, "hi from bob", None, true);
    let ok = wait_until(AGENT, || card_in(&t, DM_ANN, &bob).is_some());
    assert!(
        ok,
        "no card in the owner's DM: {:?}\n{}",
        t.texts(DM_ANN),
        daemon.log()
    );
    let card = card_in(&t, DM_ANN, &bob).unwrap();
    assert!(t.texts(GENERAL).is_empty(), "{:?}", t.texts(GENERAL));
    assert_eq!(approvals(&t), [(bob.clone(), "pending".into())]);
    let allow = card
        .buttons()
        .into_iter()
        .find(|(title, _)| title == "Allow")
        .map(|(_, id)| id)
        .unwrap_or_else(|| panic!("no Allow button on {card:?}"));

    // Bob clicks Allow himself: ignored (the clicker's id reached the host).
    assert_eq!(t.post(&t.fake.click(DM_ANN, BOB, &card.name, &allow)), 200);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(approvals(&t), [(bob.clone(), "pending".into())]);

    // Ann allows: the held message is answered in the channel, in its thread.
    assert_eq!(t.post(&t.fake.click(DM_ANN, ANN, &card.name, &allow)), 200);
    let answer = t.wait_message(&daemon, GENERAL, "answering Bob", |m| {
        m.text.starts_with("echo:") && m.text.contains("hi from bob")
    });
    assert_eq!(answer.thread, asked, "in the thread of the mention");
    assert_eq!(approvals(&t), [(bob, "approved".into())]);

    // Engage rule: Bob's post without a mention is not for the agent; with one, it is.
    t.say(GENERAL, BOB, "just chatting", None, false);
    let mention = t.say(GENERAL, BOB, "are you there?", None, true);
    let second = t.wait_message(&daemon, GENERAL, "answering the mention", |m| {
        m.text.contains("are you there?")
    });
    assert_eq!(second.thread, mention);
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        !t.texts(GENERAL).iter().any(|x| x.contains("just chatting")),
        "{:?}",
        t.texts(GENERAL)
    );
    journey::assert_unengaged_dropped(&t);
}
