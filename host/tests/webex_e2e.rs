//! The Webex operator journey, end to end: the real `nanoclaw` daemon with the real Webex
//! plugin (the cdylib) against a fake Webex on 127.0.0.1 that POSTs signed webhooks to the
//! daemon's webhook server (the plugin registers them at start), agents in containers of
//! the locally built image running the mock provider. Tests act only as a Webex user would
//! (through the fake) and as the operator would (the `nanoclaw` CLI). Skipped (with a
//! message) without a Docker engine.

mod common;
mod harness;

use std::time::Duration;

use harness::journey::{self, AGENT, Owner, Platform, approvals};
use harness::{Daemon, Install, built, free_port, require_engine, wait_until};
use nanoclaw_fake_webex::{
    ANN, BOB, BOT_ID, BOT_TOKEN, DM_ANN, FakeWebex, MAX_TEXT_BYTES, Message, TEAM, WEBHOOK_SECRET,
    post_to,
};

const ECHO: &str = "[[rule]]\nreply = \"echo: {text}\"\n";

/// One install: a temp data dir whose `.env` holds the token and secret, a fake Webex, and
/// the port of the daemon's webhook server.
struct Webex {
    install: Install,
    fake: FakeWebex,
    port: u16,
}

impl std::ops::Deref for Webex {
    type Target = Install;
    fn deref(&self) -> &Install {
        &self.install
    }
}

impl Webex {
    fn new() -> Webex {
        Webex {
            install: Install::new(&format!(
                "WEBEX_BOT_TOKEN={BOT_TOKEN}\nWEBEX_WEBHOOK_SECRET={WEBHOOK_SECRET}\n"
            )),
            fake: FakeWebex::start(),
            port: free_port(),
        }
    }

    fn webhook_url(&self) -> String {
        format!("http://127.0.0.1:{}/webhook/webex", self.port)
    }

    fn plugins_toml(&self) -> String {
        format!(
            "[plugins.webex]\nlibrary = {:?}\nrequired = true\n\
             [plugins.webex.settings]\nbot_token = {{ env = \"WEBEX_BOT_TOKEN\" }}\n\
             webhook_secret = {{ env = \"WEBEX_WEBHOOK_SECRET\" }}\n\
             webhook_url = {:?}\napi_base_url = {:?}\npost_per_sec = 20\n",
            built().join("libnanoclaw_plugin_channels.so"),
            self.webhook_url(),
            self.fake.api_url(),
        )
    }

    /// Starts the daemon and waits until its webhook server answers and the plugin has
    /// registered its webhooks with the fake.
    fn start(&self) -> Daemon {
        let daemon = Daemon::start_event_driven(
            &self.data,
            &self.plugins_toml(),
            &["--webhook-listen", &format!("127.0.0.1:{}", self.port)],
        );
        let up = wait_until(Duration::from_secs(30), || {
            std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
                && self.fake.webhooks().len() == 3
        });
        assert!(up, "the webhooks were never registered:\n{}", daemon.log());
        daemon
    }

    /// A user writes; the fake notifies the daemon, which must answer 200.
    fn say(
        &self,
        room: &str,
        person: &str,
        text: &str,
        parent: Option<&str>,
        mention: bool,
    ) -> String {
        let (id, statuses) = self.fake.say(room, person, text, parent, mention);
        assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
        id
    }
}

impl Platform for Webex {
    type Chat = str;
    type Posted = Message;

    fn posted(&self, room: &str) -> Vec<Message> {
        self.fake.bot_messages(room)
    }

    fn shown(m: &Message) -> String {
        m.markdown.clone().unwrap_or_else(|| m.text.clone())
    }
}

/// Ann pairs in her 1:1 space with the bot and becomes owner, then gets her DM agent from
/// `init-first-agent` with the space id, as skills/add-webex says.
fn first_agent(w: &Webex, daemon: &Daemon) {
    let ann = Owner {
        channel: "webex",
        id: ANN,
        chat: DM_ANN,
        dm: DM_ANN,
    };
    journey::first_agent(w, daemon, &ann, |code| {
        w.say(DM_ANN, ANN, code, None, false);
    });
}

#[test]
fn the_owner_dm_is_answered_and_forged_or_repeated_webhooks_change_nothing() {
    if !require_engine("the_owner_dm_is_answered_and_forged_or_repeated_webhooks_change_nothing") {
        return;
    }
    let long = journey::numbered_words(1500);
    let w = Webex::new();
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
    for h in w.fake.webhooks() {
        assert_eq!(h.target_url, w.webhook_url());
        assert_eq!(h.secret.as_deref(), Some(WEBHOOK_SECRET));
    }

    // A forged notification (wrong secret) and an unsigned one: 401, nothing fetched.
    let forged_id = w.fake.post(DM_ANN, ANN, "forged", None, &[], &[]);
    let (body, bad) = w
        .fake
        .signed("messages", "created", &forged_id, "not-the-secret");
    let url = w.webhook_url();
    let json = ("Content-Type", "application/json".to_owned());
    let status = post_to(&url, &[json.clone(), ("X-Spark-Signature", bad)], &body);
    assert_eq!(status, Some(401));
    assert_eq!(post_to(&url, std::slice::from_ref(&json), &body), Some(401));
    assert!(w.fake.harness().calls_to("messages.get").is_empty());

    first_agent(&w, &daemon);
    let hello = w.say(DM_ANN, ANN, "hello from Webex", None, false);
    w.wait_message(&daemon, DM_ANN, "echoing the DM", |m| {
        m.text.contains("you said") && m.text.contains("hello from Webex")
    });
    // The same notification again (a repeat, correctly signed): 200, no second answer.
    assert_eq!(w.fake.notify("messages", "created", &hello), [200]);
    std::thread::sleep(Duration::from_secs(2));
    let echoes = w
        .texts(DM_ANN)
        .iter()
        .filter(|t| t.contains("hello from Webex"))
        .count();
    assert_eq!(echoes, 1, "{:?}", w.texts(DM_ANN));
    assert!(!w.texts(DM_ANN).iter().any(|t| t.contains("forged")));
    // A DM is answered in the space itself, not in a thread.
    assert!(
        w.fake
            .bot_messages(DM_ANN)
            .iter()
            .all(|m| m.parent_id.is_none())
    );

    // Ann deletes the message the agent already answered: the agent is told (a note that
    // rides along with its next turn), once however often the notification comes.
    assert_eq!(w.fake.delete(&hello), [200]);
    assert_eq!(w.fake.notify("messages", "deleted", &hello), [200]);
    let notes = || {
        harness::session_dirs(&w.data)
            .iter()
            .filter_map(|d| harness::inbound_db(d).ok())
            .map(|db| {
                db.query_row(
                    &format!(
                        "SELECT COUNT(*) FROM messages_in WHERE id LIKE '%:{hello}:%:deleted' \
                         AND trigger = 0 AND content LIKE '%The sender deleted message%'"
                    ),
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

    // A long reply: split within Webex's 7,439 bytes, every word once, in order.
    w.say(DM_ANN, ANN, "essay please", None, false);
    let expected: Vec<&str> = long.split_whitespace().collect();
    let parts = || -> Vec<String> {
        w.texts(DM_ANN)
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
    assert!(parts().len() >= 2, "{} parts", parts().len());
    for p in parts() {
        assert!(p.len() <= MAX_TEXT_BYTES, "a part of {} bytes", p.len());
    }
    assert_eq!(words(), expected, "every word once, in order");
}

#[test]
fn a_group_space_engages_on_a_mention_and_answers_in_the_thread() {
    if !require_engine("a_group_space_engages_on_a_mention_and_answers_in_the_thread") {
        return;
    }
    let w = Webex::new();
    w.agent("team", ECHO);
    w.ok(&[
        "chats",
        "add",
        &format!("webex:{TEAM}"),
        "--name",
        "team",
        "--group",
        "--policy",
        "public",
    ]);
    let out = w.ok(&["wire", "add", &format!("webex:{TEAM}"), "team"]);
    assert!(out.contains("(mention)"), "{out}");
    let daemon = w.start();

    // Without a mention (delivered here although Webex would not tell a bot): not engaged.
    let plain = w.fake.post(TEAM, BOB, "just chatting", None, &[], &[]);
    assert_eq!(w.fake.notify("messages", "created", &plain), [200]);
    let asked = w.say(TEAM, BOB, "Claw are you there?", None, true);
    let answer = w.wait_message(&daemon, TEAM, "answering the mention", |m| {
        m.text.starts_with("echo:")
    });
    assert!(answer.text.contains("are you there?"), "{}", answer.text);
    assert_eq!(
        answer.parent_id.as_deref(),
        Some(asked.as_str()),
        "in the thread"
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(w.texts(TEAM).len(), 1, "{:?}", w.texts(TEAM));
    journey::assert_unengaged_dropped(&w);
    // The bot's own messages come back as notifications too: ignored.
    assert_eq!(w.fake.notify("messages", "created", &answer.id), [200]);
    // A deletion notification: answered, nothing else happens.
    assert_eq!(w.fake.delete(&plain), [200]);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(w.texts(TEAM).len(), 1, "{:?}", w.texts(TEAM));
}

#[test]
fn an_unknown_sender_waits_for_the_owner_to_click_allow_on_the_card() {
    if !require_engine("an_unknown_sender_waits_for_the_owner_to_click_allow_on_the_card") {
        return;
    }
    let w = Webex::new();
    w.agent("team", ECHO);
    w.ok(&[
        "chats",
        "add",
        &format!("webex:{TEAM}"),
        "--name",
        "team",
        "--group",
        "--policy",
        "request_approval",
    ]);
    w.ok(&["wire", "add", &format!("webex:{TEAM}"), "team"]);
    let daemon = w.start();
    first_agent(&w, &daemon);

    // Bob is unknown: his message is held and the card goes to Ann's 1:1 space.
    let bob = format!("webex:{BOB}");
    let asked = w.say(TEAM, BOB, "Claw hi from bob", None, true);
    let card = |w: &Webex| {
        w.fake
            .bot_messages(DM_ANN)
            .into_iter()
            .find(|m| m.attachments.is_some() && m.text.contains(&bob))
    };
    let ok = wait_until(AGENT, || card(&w).is_some());
    assert!(
        ok,
        "no card in the owner's DM: {:?}\n{}",
        w.texts(DM_ANN),
        daemon.log()
    );
    let card = card(&w).unwrap();
    assert!(w.texts(TEAM).is_empty(), "{:?}", w.texts(TEAM));
    assert_eq!(approvals(&w), [(bob.clone(), "pending".into())]);
    let allow = card
        .buttons()
        .into_iter()
        .find(|(title, _)| title == "Allow")
        .unwrap_or_else(|| panic!("no Allow button on {card:?}"))
        .1;

    // Bob clicks Allow himself: ignored (the clicker's id reached the host).
    let (_, statuses) = w.fake.click(&card.id, BOB, &allow);
    assert_eq!(statuses, [200]);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(approvals(&w), [(bob.clone(), "pending".into())]);

    // Ann allows: the held message is answered in the group space, in its thread.
    let (_, statuses) = w.fake.click(&card.id, ANN, &allow);
    assert_eq!(statuses, [200]);
    let answer = w.wait_message(&daemon, TEAM, "answering Bob", |m| {
        m.text.starts_with("echo:") && m.text.contains("hi from bob")
    });
    assert_eq!(answer.parent_id.as_deref(), Some(asked.as_str()));
    assert_eq!(approvals(&w), [(bob, "approved".into())]);
    // The bot never wrote as anyone but itself.
    assert!(
        w.fake
            .bot_messages(TEAM)
            .iter()
            .all(|m| m.person_id == BOT_ID)
    );
}
