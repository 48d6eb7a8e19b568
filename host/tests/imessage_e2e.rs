//! The iMessage operator journey, end to end: the real `nanoclaw` daemon with the real
//! iMessage plugin (the cdylib) against a fake BlueBubbles server on 127.0.0.1, its webhooks
//! POSTed to the daemon's webhook server with the server password, agents in containers of
//! the locally built image running the mock provider. Skipped without a Docker engine.

mod common;
mod harness;

use std::time::Duration;

use harness::journey::{self, AGENT, Owner, Platform};
use harness::{Daemon, Install, built, free_port, require_engine, wait_until};
use nanoclaw_fake_bluebubbles::{
    ANN_PHONE, BOB_EMAIL, FakeBlueBubbles, GROUP, Incoming, PASSWORD, Sent, post_webhook,
};

const ECHO: &str = "[[rule]]\nreply = \"echo: {text}\"\n";
const ANN_DM: &str = "iMessage;-;+15551234567";

struct Phone {
    install: Install,
    fake: FakeBlueBubbles,
    port: u16,
}

impl std::ops::Deref for Phone {
    type Target = Install;
    fn deref(&self) -> &Install {
        &self.install
    }
}

impl Phone {
    fn new() -> Phone {
        Phone {
            install: Install::new(&format!("BLUEBUBBLES_PASSWORD={PASSWORD}\n")),
            fake: FakeBlueBubbles::start(),
            port: free_port(),
        }
    }

    fn start(&self) -> Daemon {
        let toml = format!(
            "[plugins.imessage]\nlibrary = {:?}\nrequired = true\n\
             [plugins.imessage.settings]\nserver_url = {:?}\n\
             password = {{ env = \"BLUEBUBBLES_PASSWORD\" }}\nprivate_api = true\n\
             send_per_sec = 20\n",
            built().join("libnanoclaw_plugin_channels.so"),
            self.fake.base_url(),
        );
        journey::start_with_webhooks(self, &toml, self.port, || {
            !self.fake.harness().calls_to("server.info").is_empty()
        })
    }

    /// A message from a phone: BlueBubbles' webhook reaches the daemon.
    fn say(&self, m: &Incoming) -> String {
        let (guid, body) = self.fake.incoming(m);
        let status = post_webhook(
            self.port,
            &format!("/webhook/imessage?password={PASSWORD}"),
            &body,
        );
        assert_eq!(status, 200);
        guid
    }
}

impl Platform for Phone {
    type Chat = str;
    type Posted = Sent;

    fn posted(&self, chat: &str) -> Vec<Sent> {
        self.fake.sent_to(chat)
    }

    fn shown(m: &Sent) -> String {
        m.text.clone()
    }
}

/// Ann pairs from her phone (a national number: the same person) and gets her agent.
fn first_agent(p: &Phone, daemon: &Daemon) {
    let ann = Owner {
        channel: "imessage",
        id: ANN_PHONE,
        chat: ANN_PHONE,
        dm: ANN_DM,
    };
    journey::first_agent(p, daemon, &ann, |code| {
        p.say(&Incoming::dm(ANN_PHONE, code));
    });
}

#[test]
fn the_owner_dm_is_answered_once() {
    if !require_engine("the_owner_dm_is_answered_once") {
        return;
    }
    let p = Phone::new();
    let daemon = p.start();
    let (_, forged) = p.fake.incoming(&Incoming::dm(ANN_PHONE, "forged"));
    assert_eq!(
        post_webhook(p.port, "/webhook/imessage?password=guess", &forged),
        401
    );
    assert_eq!(post_webhook(p.port, "/webhook/imessage", &forged), 401);
    first_agent(&p, &daemon);

    let (_, body) = p
        .fake
        .incoming(&Incoming::dm(ANN_PHONE, "hello from my iPhone"));
    let path = format!("/webhook/imessage?password={PASSWORD}");
    assert_eq!(post_webhook(p.port, &path, &body), 200);
    assert_eq!(post_webhook(p.port, &path, &body), 200, "a redelivery");
    p.wait_message(&daemon, ANN_DM, "echoing the DM", |m| {
        m.text.contains("hello from my iPhone")
    });
    std::thread::sleep(Duration::from_secs(2));
    let texts = p.texts(ANN_DM);
    assert_eq!(
        texts
            .iter()
            .filter(|t| t.contains("hello from my iPhone"))
            .count(),
        1,
        "{texts:?}"
    );
    assert!(!texts.iter().any(|t| t.contains("forged")));
    assert!(!p.fake.typing().is_empty(), "typing was shown");
}

#[test]
fn a_group_engages_by_pattern_and_an_unknown_sender_waits_for_approval() {
    if !require_engine("a_group_engages_by_pattern_and_an_unknown_sender_waits_for_approval") {
        return;
    }
    let p = Phone::new();
    p.agent("crew", ECHO);
    let group = format!("imessage:{GROUP}");
    p.ok(&[
        "chats",
        "add",
        &group,
        "--name",
        "Weekend crew",
        "--group",
        "--policy",
        "request_approval",
    ]);
    p.ok(&[
        "wire",
        "add",
        &group,
        "crew",
        "--engage",
        "pattern",
        "--pattern",
        "(?i)^agent",
    ]);
    let daemon = p.start();
    first_agent(&p, &daemon);
    p.ok(&["members", "add", &format!("imessage:{ANN_PHONE}"), "crew"]);

    p.say(&Incoming::group(ANN_PHONE, "weekend?"));
    p.say(&Incoming::group(ANN_PHONE, "agent, what time?"));
    p.wait_message(&daemon, GROUP, "answering the pattern", |m| {
        m.text == "echo: agent, what time?"
    });
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(p.texts(GROUP).len(), 1, "{:?}", p.texts(GROUP));

    // Bob is unknown: held, the card goes to Ann's DM as text; she allows with the CLI.
    let bob = format!("imessage:{BOB_EMAIL}");
    p.say(&Incoming::group("Bob@iCloud.com", "agent hi from bob"));
    let card = p.wait_message(&daemon, ANN_DM, "asking about Bob", |m| {
        m.text.contains(&bob)
    });
    assert!(card.text.contains("Options: Allow, Deny"), "{}", card.text);
    let pending = p.json(&["approvals", "list"]);
    let id = pending[0]["id"].as_str().expect("an approval").to_owned();
    p.ok(&["approvals", "allow", &id]);
    p.wait_message(&daemon, GROUP, "answering Bob", |m| {
        m.text == "echo: agent hi from bob"
    });
}

#[test]
fn a_long_reply_arrives_split_in_order_and_intact() {
    if !require_engine("a_long_reply_arrives_split_in_order_and_intact") {
        return;
    }
    let long = journey::numbered_words(1500);
    let p = Phone::new();
    p.mock(
        "dm-with-ann",
        &format!(
            "[[rule]]\nmatch = \"^essay\"\nreply = {}\n\n\
             [[rule]]\nreply = \"Hi, I am your NanoClaw agent.\"\n",
            toml::Value::String(long.clone())
        ),
    );
    let daemon = p.start();
    first_agent(&p, &daemon);
    p.say(&Incoming::dm(ANN_PHONE, "essay please"));
    let expected: Vec<&str> = long.split_whitespace().collect();
    let parts = || -> Vec<String> {
        p.texts(ANN_DM)
            .into_iter()
            .skip_while(|t| !t.contains("your NanoClaw agent"))
            .skip(1)
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
    std::thread::sleep(Duration::from_secs(2));
    let parts = parts();
    assert!(parts.len() >= 3, "{} parts", parts.len());
    for part in &parts {
        assert!(
            part.chars().count() <= 5000,
            "a part of {}",
            part.chars().count()
        );
    }
    assert_eq!(words(), expected, "every word once, in order");
}
