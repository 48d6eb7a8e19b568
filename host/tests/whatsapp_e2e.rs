//! The WhatsApp operator journey, end to end: the real `nanoclaw` daemon with the real
//! WhatsApp plugin (the cdylib) against a fake Cloud API on 127.0.0.1, which checks the
//! daemon's webhook with the verify token (as Meta does when the callback URL is set) and
//! then POSTs signed notifications to it; agents in containers of the locally built image
//! running the mock provider. Tests act only as a WhatsApp user would (through the fake)
//! and as the operator would (the `nanoclaw` CLI). Skipped (with a message) without a Docker
//! engine.

mod common;
mod harness;

use std::time::Duration;

use harness::journey::{self, AGENT, Owner, Platform, approvals};
use harness::{Daemon, Install, built, free_port, require_engine, wait_until};
use nanoclaw_fake_whatsapp::{
    ACCESS_TOKEN, ANN, APP_SECRET, BOB, FakeWhatsApp, MAX_TEXT_CHARS, PHONE_NUMBER_ID, Sent,
    VERIFY_TOKEN, http, signature,
};

const ECHO: &str = "[[rule]]\nreply = \"echo: {text}\"\n";

struct WhatsApp {
    install: Install,
    fake: FakeWhatsApp,
    port: u16,
}

impl std::ops::Deref for WhatsApp {
    type Target = Install;
    fn deref(&self) -> &Install {
        &self.install
    }
}

impl WhatsApp {
    fn new() -> WhatsApp {
        WhatsApp {
            install: Install::new(&format!(
                "WHATSAPP_ACCESS_TOKEN={ACCESS_TOKEN}\nWHATSAPP_APP_SECRET={APP_SECRET}\n\
                 WHATSAPP_VERIFY_TOKEN={VERIFY_TOKEN}\n"
            )),
            fake: FakeWhatsApp::start(),
            port: free_port(),
        }
    }

    fn webhook_url(&self) -> String {
        format!("http://127.0.0.1:{}/webhook/whatsapp", self.port)
    }

    fn plugins_toml(&self) -> String {
        format!(
            "[plugins.whatsapp]\nlibrary = {:?}\nrequired = true\n\
             [plugins.whatsapp.settings]\naccess_token = {{ env = \"WHATSAPP_ACCESS_TOKEN\" }}\n\
             app_secret = {{ env = \"WHATSAPP_APP_SECRET\" }}\n\
             verify_token = {{ env = \"WHATSAPP_VERIFY_TOKEN\" }}\n\
             phone_number_id = {PHONE_NUMBER_ID:?}\napi_base_url = {:?}\nmedia_hosts = [{:?}]\n",
            built().join("libnanoclaw_plugin_channels.so"),
            self.fake.api_url(),
            self.fake.base_url(),
        )
    }

    /// Starts the daemon, then sets the callback URL as an operator does in the App
    /// Dashboard (the fake checks it with the verify token first).
    fn start(&self) -> Daemon {
        let daemon = Daemon::start_event_driven(
            &self.data,
            &self.plugins_toml(),
            &["--webhook-listen", &format!("127.0.0.1:{}", self.port)],
        );
        let wrong = self
            .fake
            .set_callback(&self.webhook_url(), "not-the-verify-token");
        assert!(wrong.is_err(), "a wrong verify token was accepted");
        let mut result = Err(String::new());
        let up = wait_until(Duration::from_secs(30), || {
            result = self.fake.set_callback(&self.webhook_url(), VERIFY_TOKEN);
            result.is_ok()
        });
        assert!(
            up,
            "the callback URL was not verified ({result:?}):\n{}",
            daemon.log()
        );
        daemon
    }

    fn say(&self, from: &str, text: &str) -> String {
        let (id, status) = self.fake.say(from, text, None);
        assert_eq!(status, Some(200));
        id
    }
}

impl Platform for WhatsApp {
    type Chat = str;
    type Posted = Sent;

    fn posted(&self, to: &str) -> Vec<Sent> {
        self.fake.sent_to(to)
    }

    fn shown(m: &Sent) -> String {
        m.text()
    }

    fn missed(what: &str, to: &str) -> String {
        format!("nothing {what} to {to}; it got")
    }
}

/// Ann pairs by sending the code to the business number, then gets her agent from
/// `init-first-agent` (her number is the chat), as skills/add-whatsapp says.
fn first_agent(w: &WhatsApp, daemon: &Daemon) {
    let ann = Owner {
        channel: "whatsapp",
        id: ANN,
        chat: ANN,
        dm: ANN,
    };
    journey::first_agent(w, daemon, &ann, |code| {
        w.say(ANN, code);
    });
}

#[test]
fn the_owner_is_answered_and_forged_or_repeated_notifications_change_nothing() {
    if !require_engine("the_owner_is_answered_and_forged_or_repeated_notifications_change_nothing")
    {
        return;
    }
    let long = journey::numbered_words(1100);
    let w = WhatsApp::new();
    w.mock(
        "dm-with-ann",
        &format!(
            "[[rule]]\nmatch = \"^essay\"\nreply = {}\n\n\
             [[rule]]\nmatch = \"^hello\"\nreply = \"you said: {{text}}\"\n\n\
             [[rule]]\nreply = \"Hi, I am your NanoClaw agent.\"\n",
            toml::Value::String(long.clone())
        ),
    );
    let daemon = w.start();

    // Forged (wrong secret) and unsigned notifications: 401, nothing stored or fetched.
    let (_, forged) = w.fake.text(ANN, "forged", None);
    let url = w.webhook_url();
    let json = ("Content-Type", "application/json".to_owned());
    let bad = ("X-Hub-Signature-256", signature("not-the-secret", &forged));
    assert_eq!(
        http(&url, "POST", "", &[json.clone(), bad], &forged).map(|r| r.0),
        Some(401)
    );
    assert_eq!(
        http(&url, "POST", "", std::slice::from_ref(&json), &forged).map(|r| r.0),
        Some(401)
    );

    first_agent(&w, &daemon);
    let (hello, body) = w.fake.text(ANN, "hello from WhatsApp", None);
    assert_eq!(w.fake.deliver(&body), Some(200));
    w.wait_message(&daemon, ANN, "echoing the message", |m| {
        m.text().contains("you said") && m.text().contains("hello from WhatsApp")
    });
    // Meta redelivers the same notification: 200, no second answer.
    assert_eq!(w.fake.deliver(&body), Some(200));
    std::thread::sleep(Duration::from_secs(2));
    let echoes = w
        .texts(ANN)
        .iter()
        .filter(|t| t.contains("hello from WhatsApp"))
        .count();
    assert_eq!(echoes, 1, "{:?}", w.texts(ANN));
    assert!(!w.texts(ANN).iter().any(|t| t.contains("forged")));
    let _ = hello;

    // A long reply: split within 4,096 characters, every word once, in order.
    w.say(ANN, "essay please");
    let expected: Vec<&str> = long.split_whitespace().collect();
    let parts = || -> Vec<String> {
        w.texts(ANN)
            .into_iter()
            .skip_while(|t| !t.starts_with("word0001"))
            .collect()
    };
    let words = || -> Vec<String> {
        parts()
            .iter()
            .flat_map(|t| t.split_whitespace().map(str::to_string).collect::<Vec<_>>())
            .collect()
    };
    let complete = wait_until(AGENT, || words().len() >= expected.len());
    assert!(complete, "got {} words\n{}", words().len(), daemon.log());
    std::thread::sleep(Duration::from_secs(1));
    assert!(parts().len() >= 3, "{} parts", parts().len());
    for p in parts() {
        assert!(
            p.chars().count() <= MAX_TEXT_CHARS,
            "a part of {} chars",
            p.chars().count()
        );
    }
    assert_eq!(words(), expected, "every word once, in order");
}

#[test]
fn a_stranger_waits_for_the_owner_to_tap_allow() {
    if !require_engine("a_stranger_waits_for_the_owner_to_tap_allow") {
        return;
    }
    let w = WhatsApp::new();
    w.agent("support", ECHO);
    w.ok(&[
        "chats",
        "add",
        &format!("whatsapp:{BOB}"),
        "--name",
        "Bob",
        "--policy",
        "request_approval",
    ]);
    w.ok(&["wire", "add", &format!("whatsapp:{BOB}"), "support"]);
    let daemon = w.start();
    first_agent(&w, &daemon);

    // Bob is unknown: his message is held and the card (reply buttons) goes to Ann.
    let bob = format!("whatsapp:{BOB}");
    w.say(BOB, "hi from bob");
    let card = |w: &WhatsApp| {
        w.fake
            .sent_to(ANN)
            .into_iter()
            .find(|m| m.kind == "interactive" && m.text().contains(&bob))
    };
    let ok = wait_until(AGENT, || card(&w).is_some());
    assert!(
        ok,
        "no card for the owner: {:?}\n{}",
        w.texts(ANN),
        daemon.log()
    );
    let card = card(&w).unwrap();
    assert!(w.texts(BOB).is_empty(), "{:?}", w.texts(BOB));
    assert_eq!(approvals(&w), [(bob.clone(), "pending".into())]);
    for (_, title) in card.choices() {
        assert!(title.chars().count() <= 20, "{title}");
    }
    let (allow, title) = card
        .choices()
        .into_iter()
        .find(|(_, t)| t == "Allow")
        .unwrap_or_else(|| panic!("no Allow on {:?}", card.choices()));

    // Ann taps Allow: Bob is answered.
    let (_, tap) = w.fake.tap(ANN, &card.id, &allow, &title, false);
    assert_eq!(w.fake.deliver(&tap), Some(200));
    let answer = w.wait_message(&daemon, BOB, "answering Bob", |m| {
        m.text().starts_with("echo:") && m.text().contains("hi from bob")
    });
    assert_eq!(answer.status, "sent");
    assert_eq!(approvals(&w), [(bob, "approved".into())]);
}

#[test]
fn a_message_outside_the_24_hour_window_is_reported_not_lost_silently() {
    if !require_engine("a_message_outside_the_24_hour_window_is_reported_not_lost_silently") {
        return;
    }
    let w = WhatsApp::new();
    let daemon = w.start();
    first_agent(&w, &daemon);
    // Bob never wrote to the number: his agent's welcome is a cold message, which Meta
    // accepts and then reports failed (131047). The operator must hear of it.
    w.ok(&[
        "init-first-agent",
        "--user",
        &format!("whatsapp:{BOB}"),
        "--chat",
        BOB,
        "--name",
        "Bob",
    ]);
    let sent = w.wait_message(&daemon, BOB, "the cold welcome", |_| true);
    assert_eq!(sent.status, "failed");
    let reported = wait_until(Duration::from_secs(15), || {
        daemon.log().contains("24-hour") && daemon.log().contains(&sent.id)
    });
    assert!(reported, "the failure was not reported:\n{}", daemon.log());
}
