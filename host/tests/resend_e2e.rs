//! The Resend (email) operator journey, end to end: the real `nanoclaw` daemon with the real
//! Resend plugin (the cdylib) against a fake Resend on 127.0.0.1, its webhooks POSTed to the
//! daemon's webhook server signed as Svix signs them, agents in containers of the locally
//! built image running the mock provider. Tests act only as a correspondent would (an email
//! the fake receives, and its webhook) and as the operator would (the `nanoclaw` CLI).
//! Skipped (with a message) without a Docker engine.

mod common;
mod harness;

use std::time::Duration;

use harness::journey::{self, AGENT, Owner, Platform};
use harness::{Daemon, Install, built, free_port, require_engine, wait_until};
use nanoclaw_fake_resend::{
    ANN, API_KEY, BOB, BOT_ADDRESS, FakeResend, Mail, Received, Sent, WEBHOOK_SECRET, now_secs,
    post_webhook, svix_headers,
};

const ECHO: &str = "[[rule]]\nreply = \"echo: {text}\"\n";

/// One install: a temp data dir whose `.env` holds the key and the webhook secret, a fake
/// Resend, and the port of the daemon's webhook server.
struct Email {
    install: Install,
    fake: FakeResend,
    port: u16,
}

impl std::ops::Deref for Email {
    type Target = Install;
    fn deref(&self) -> &Install {
        &self.install
    }
}

impl Email {
    fn new() -> Email {
        Email {
            install: Install::new(&format!(
                "RESEND_API_KEY={API_KEY}\nRESEND_WEBHOOK_SECRET={WEBHOOK_SECRET}\n"
            )),
            fake: FakeResend::start(),
            port: free_port(),
        }
    }

    fn plugins_toml(&self) -> String {
        format!(
            "[plugins.resend]\nlibrary = {:?}\nrequired = true\n\
             [plugins.resend.settings]\napi_key = {{ env = \"RESEND_API_KEY\" }}\n\
             webhook_secret = {{ env = \"RESEND_WEBHOOK_SECRET\" }}\n\
             from_address = {BOT_ADDRESS:?}\nfrom_name = \"Agent\"\n\
             api_base_url = {:?}\nattachment_hosts = [{:?}]\nsend_per_sec = 20\n",
            built().join("libnanoclaw_plugin_channels.so"),
            self.fake.base_url(),
            self.fake.cdn_origin(),
        )
    }

    /// Starts the daemon and waits until its webhook server answers and the plugin checked
    /// the account.
    fn start(&self) -> Daemon {
        journey::start_with_webhooks(self, &self.plugins_toml(), self.port, || {
            !self.fake.harness().calls_to("domains.list").is_empty()
        })
    }

    /// Someone emails the bot: the fake stores it and Resend's webhook reaches the daemon.
    fn email(&self, mail: &Mail) -> Received {
        let received = self.fake.receive(mail);
        let status = self.post(&received, &format!("msg_{}", received.email_id), 0);
        assert_eq!(status, 200, "the webhook was not taken");
        received
    }

    /// POSTs `received`'s webhook as Svix does, signed `age` seconds ago; the status.
    fn post(&self, received: &Received, svix_id: &str, age: i64) -> u16 {
        let body = received.webhook.to_string();
        let headers = svix_headers(svix_id, now_secs() - age, body.as_bytes());
        post_webhook(self.port, "/webhook/resend", body.as_bytes(), &headers).0
    }
}

impl Platform for Email {
    type Chat = str;
    type Posted = Sent;

    fn posted(&self, to: &str) -> Vec<Sent> {
        self.fake.sent_to(to)
    }

    fn shown(m: &Sent) -> String {
        m.text.clone().unwrap_or_default()
    }

    fn missed(what: &str, to: &str) -> String {
        format!("no email {what} to {to}; it got")
    }
}

/// Ann pairs by emailing the code and becomes owner, then gets her agent from
/// `init-first-agent` with her address as the chat, as skills/add-resend says.
fn first_agent(e: &Email, daemon: &Daemon) {
    let ann = Owner {
        channel: "resend",
        id: ANN,
        chat: ANN,
        dm: ANN,
    };
    journey::first_agent(e, daemon, &ann, |code| {
        e.email(&Mail::new("Ann Example <Ann@Example.org>", "Pairing", code));
    });
}

#[test]
fn the_owner_email_is_answered_in_its_thread_once() {
    if !require_engine("the_owner_email_is_answered_in_its_thread_once") {
        return;
    }
    let e = Email::new();
    let daemon = e.start();

    // A forged webhook (wrong secret) and a forged sender (DMARC failed): no trace.
    let forged = e.fake.receive(&Mail::new(ANN, "forged", "forged webhook"));
    let body = forged.webhook.to_string();
    let ts = now_secs();
    let bad = vec![
        ("svix-id".to_owned(), "msg_forged".to_owned()),
        ("svix-timestamp".to_owned(), ts.to_string()),
        (
            "svix-signature".to_owned(),
            nanoclaw_fake_resend::sign(
                "whsec_dGhpcyBpcyBub3QgdGhlIHNlY3JldA==",
                "msg_forged",
                ts,
                body.as_bytes(),
            ),
        ),
    ];
    assert_eq!(
        post_webhook(e.port, "/webhook/resend", body.as_bytes(), &bad).0,
        401
    );
    assert_eq!(
        e.post(&forged, "msg_old", 10 * 60),
        401,
        "an expired signature"
    );

    first_agent(&e, &daemon);

    let mut spoof = Mail::new(ANN, "Hello", "spoofed sender");
    spoof.authenticated = false;
    e.email(&spoof);

    let hello = Mail::new("Ann <ann@example.org>", "Weekend plans", "hello by email");
    let received = e.email(&hello);
    // Svix retries (signed afresh): one message all the same. An exact replay: 401.
    std::thread::sleep(Duration::from_millis(1100));
    let svix_id = format!("msg_{}", received.email_id);
    assert_eq!(e.post(&received, &svix_id, 0), 200);
    let answer = e.wait_message(&daemon, ANN, "echoing the email", |m| {
        m.text.as_deref().unwrap_or("").contains("hello by email")
    });
    assert_eq!(answer.subject, "Re: Weekend plans");
    assert_eq!(
        answer.header("In-Reply-To"),
        Some(hello.message_id.as_str())
    );
    assert_eq!(answer.from, format!("Agent <{BOT_ADDRESS}>"));
    assert!(answer.html.is_some());
    std::thread::sleep(Duration::from_secs(2));
    let texts = e.texts(ANN);
    let echoes = texts
        .iter()
        .filter(|t| t.contains("hello by email"))
        .count();
    assert_eq!(echoes, 1, "{texts:?}");
    assert!(
        !texts
            .iter()
            .any(|t| t.contains("forged") || t.contains("spoofed"))
    );
    let sessions = e.json(&["sessions", "list"]);
    assert!(!sessions.as_array().unwrap().is_empty(), "{sessions}");
}

#[test]
fn an_unknown_sender_waits_for_the_owner_to_allow_them() {
    if !require_engine("an_unknown_sender_waits_for_the_owner_to_allow_them") {
        return;
    }
    let e = Email::new();
    e.agent("support", ECHO);
    let bob_chat = format!("resend:{BOB}");
    e.ok(&[
        "chats",
        "add",
        &bob_chat,
        "--name",
        "Bob",
        "--policy",
        "request_approval",
    ]);
    e.ok(&["wire", "add", &bob_chat, "support"]);
    let carl_chat = "resend:carl@example.com";
    e.ok(&[
        "chats", "add", carl_chat, "--name", "Carl", "--policy", "strict",
    ]);
    e.ok(&["wire", "add", carl_chat, "support"]);
    let daemon = e.start();
    first_agent(&e, &daemon);

    // Carl's chat is strict: dropped and recorded, never answered.
    e.email(&Mail::new("carl@example.com", "Hi", "let me in"));
    let recorded = wait_until(Duration::from_secs(30), || {
        e.json(&["dropped"])
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["reason"] == "unknown_sender_strict")
    });
    assert!(recorded, "no dropped record:\n{}", daemon.log());

    // Bob is unknown: his email is held and the card is emailed to Ann, the owner, with
    // the options as text (email has no buttons).
    let bob = format!("resend:{BOB}");
    let asked = Mail::new("Bob <bob@example.net>", "Question", "hi from bob");
    e.email(&asked);
    let card = e.wait_message(&daemon, ANN, "asking about Bob", |m| {
        m.text.as_deref().unwrap_or("").contains(&bob)
    });
    let card_text = card.text.clone().unwrap_or_default();
    assert!(card_text.contains("Options: Allow, Deny"), "{card_text}");
    assert!(e.fake.sent_to(BOB).is_empty());
    let pending = e.json(&["approvals", "list"]);
    let list = pending.as_array().unwrap();
    assert_eq!(list.len(), 1, "{pending}");
    assert_eq!(list[0]["subject_user_id"], bob);
    let id = list[0]["id"].as_str().unwrap().to_owned();

    // Ann answers with the CLI (her approval over email): Bob's held email is answered,
    // in his thread.
    e.ok(&["approvals", "allow", &id]);
    let answer = e.wait_message(&daemon, BOB, "answering Bob", |m| {
        m.text.as_deref().unwrap_or("").contains("hi from bob")
    });
    assert_eq!(answer.subject, "Re: Question");
    assert_eq!(
        answer.header("In-Reply-To"),
        Some(asked.message_id.as_str())
    );
    assert!(e.fake.sent_to("carl@example.com").is_empty());
}

#[test]
fn a_long_reply_arrives_split_in_order_and_intact() {
    if !require_engine("a_long_reply_arrives_split_in_order_and_intact") {
        return;
    }
    let long = journey::numbered_words(4000);
    let e = Email::new();
    e.mock(
        "dm-with-ann",
        &format!(
            "[[rule]]\nmatch = \"^essay\"\nreply = {}\n\n\
             [[rule]]\nreply = \"Hi, I am your NanoClaw agent.\"\n",
            toml::Value::String(long.clone())
        ),
    );
    let daemon = e.start();
    first_agent(&e, &daemon);
    e.email(&Mail::new(ANN, "Essay", "essay please"));
    let expected: Vec<&str> = long.split_whitespace().collect();
    let parts = || -> Vec<Sent> {
        e.fake
            .sent_to(ANN)
            .into_iter()
            .skip_while(|s| {
                !s.text
                    .as_deref()
                    .unwrap_or("")
                    .contains("your NanoClaw agent")
            })
            .skip(1)
            .collect()
    };
    let words = || -> Vec<String> {
        parts()
            .iter()
            .flat_map(|s| {
                s.text
                    .clone()
                    .unwrap_or_default()
                    .split_whitespace()
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    let complete = wait_until(AGENT, || words().len() >= expected.len());
    assert!(complete, "got {} words\n{}", words().len(), daemon.log());
    std::thread::sleep(Duration::from_secs(2));
    let parts = parts();
    assert!(parts.len() >= 2, "{} parts", parts.len());
    for p in &parts {
        assert_eq!(p.subject, "Re: Essay");
        let html = p.html.as_deref().unwrap_or_default();
        assert!(
            html.chars().count() <= 20_000,
            "a part of {} chars",
            html.chars().count()
        );
    }
    assert_eq!(words(), expected, "every word once, in order");
}
