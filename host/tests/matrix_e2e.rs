//! The Matrix operator journey, end to end, against a **real homeserver**: a throwaway
//! Synapse on 127.0.0.1 (`scripts/synapse.sh`), the real daemon with the real Matrix plugin
//! (the cdylib), agents in containers of the locally built image running the mock provider.
//! Tests act only as Matrix users would (plain client-server API calls on the homeserver)
//! and as the operator would (the `nanoclaw` CLI). Skipped (with a message) without a Docker
//! engine or without Synapse installed, unless the suite requires them
//! (`NANOCLAW_REQUIRE_DOCKER`, set by `scripts/test.sh`).

mod common;
mod harness;

use std::path::PathBuf;
use std::time::Duration;

use harness::journey::{self, AGENT, Platform};
use harness::matrix::{self, Seen, Synapse, User, require_synapse};
use harness::{Daemon, Install, require_engine, wait_until};
use serde_json::json;

/// A homeserver with a bot account and Ann, and an install whose plugin logs in as the bot.
struct Mx {
    install: Install,
    synapse: Synapse,
    bot: User,
    ann: User,
}

impl std::ops::Deref for Mx {
    type Target = Install;
    fn deref(&self) -> &Install {
        &self.install
    }
}

impl Mx {
    fn new() -> Mx {
        let synapse = Synapse::start();
        let bot = synapse.user("nanoclaw");
        let ann = synapse.user("ann");
        Mx {
            install: Install::new(&matrix::env_line(&bot)),
            synapse,
            bot,
            ann,
        }
    }

    fn start(&self) -> Daemon {
        let daemon =
            Daemon::start_event_driven(&self.data, &matrix::plugins_toml(&self.synapse), &[]);
        self.wait_syncing(&daemon, 1);
        daemon
    }

    /// Waits until the plugin started its `n`th sync loop.
    fn wait_syncing(&self, daemon: &Daemon, n: usize) {
        let ok = wait_until(Duration::from_secs(30), || {
            daemon.log().matches("syncing Matrix as").count() >= n
        });
        assert!(ok, "the plugin never started syncing:\n{}", daemon.log());
        // The first /sync (which learns the rooms) returns at once.
        std::thread::sleep(Duration::from_millis(500));
    }

    /// `init-first-agent` for Ann, who never wrote to the bot: the plugin creates a DM room
    /// and invites her; she joins and reads the welcome there. Returns the DM room.
    fn first_agent(&self, daemon: &Daemon) -> String {
        journey::init_first_agent(self, &format!("matrix:{}", self.ann.id), None);
        let dm = self
            .ann
            .accept_invite(AGENT)
            .unwrap_or_else(|| panic!("Ann was never invited to a DM:\n{}", daemon.log()));
        journey::welcome(self, daemon, &dm);
        dm
    }

    fn session_dirs(&self, folder: &str) -> Vec<PathBuf> {
        let list = self.json(&["sessions", "list", "--agent", folder]);
        list.as_array()
            .expect("a list")
            .iter()
            .map(|s| {
                self.data
                    .join("sessions")
                    .join(s["agent_group_id"].as_str().unwrap())
                    .join(s["id"].as_str().unwrap())
            })
            .collect()
    }
}

impl Platform for Mx {
    type Chat = str;
    type Posted = Seen;

    fn posted(&self, room: &str) -> Vec<Seen> {
        self.ann.messages_from(room, &self.bot.id)
    }

    fn shown(m: &Seen) -> String {
        m.body.clone()
    }

    fn missed(what: &str, room: &str) -> String {
        format!("no message {what} in {room}; the bot wrote")
    }
}

fn count(messages: &[Seen], body: &str) -> usize {
    messages.iter().filter(|m| m.body == body).count()
}

#[test]
fn a_dm_is_answered_edited_reacted_to_and_survives_a_restart() {
    let name = "a_dm_is_answered_edited_reacted_to_and_survives_a_restart";
    if !require_engine(name) || !require_synapse(name) {
        return;
    }
    let mx = Mx::new();
    let mut daemon = mx.start();
    let dm = mx.first_agent(&daemon);

    // Ann answers in the DM room the bot created: the same chat, answered there.
    let hello = mx.ann.say(&dm, "hello from **Matrix**");
    let answer = mx.wait_message(&daemon, &dm, "echoing the DM", |m| {
        m.body == "Mock agent: you said \"hello from Matrix\""
    });
    // Rendered as Matrix HTML, with the plain text as the body.
    let html = answer.formatted.clone().unwrap_or_default();
    assert!(html.contains("<strong>Matrix</strong>"), "{html}");
    assert_eq!(answer.content["format"], "org.matrix.custom.html");
    let sessions = mx.json(&["sessions", "list"]);
    assert_eq!(sessions.as_array().unwrap().len(), 1, "{sessions}");

    // The agent edits its answer and reacts to Ann's message.
    let dir = mx.session_dirs("dm-with-ann")[0].clone();
    let out = harness::outbound_db(&dir).unwrap();
    for (id, seq, content) in [
        (
            "edit-1",
            1001,
            json!({"op": "edit", "message_id": answer.event_id, "text": "an *edited* answer"}),
        ),
        (
            "react-1",
            1003,
            json!({"op": "react", "message_id": hello, "emoji": "thumbs_up"}),
        ),
    ] {
        out.execute(
            "INSERT INTO messages_out (id, seq, timestamp, kind, channel_type, platform_id, content)
             VALUES (?1, ?2, '2026-01-01T00:00:00.000Z', 'chat', 'matrix', ?3, ?4)",
            rusqlite::params![id, seq, mx.ann.id, content.to_string()],
        )
        .unwrap();
    }
    let (mut edited, mut reacted) = (false, false);
    let ok = wait_until(AGENT, || {
        for e in mx.ann.events(&dm) {
            let rel = &e["content"]["m.relates_to"];
            if e["sender"] == mx.bot.id.as_str()
                && rel["rel_type"] == "m.replace"
                && rel["event_id"] == answer.event_id.as_str()
                && e["content"]["m.new_content"]["body"]
                    .as_str()
                    .is_some_and(|b| b.contains("edited"))
            {
                edited = true;
            }
            if e["type"] == "m.reaction"
                && e["sender"] == mx.bot.id.as_str()
                && rel["event_id"] == hello.as_str()
                && rel["key"] == "👍"
            {
                reacted = true;
            }
        }
        edited && reacted
    });
    assert!(ok, "edited {edited}, reacted {reacted}\n{}", daemon.log());

    // Ann edits her own message: it reaches the agent as a message of its own.
    mx.ann.send(
        &dm,
        &json!({
            "msgtype": "m.text",
            "body": " * hello again",
            "m.new_content": {"msgtype": "m.text", "body": "hello again"},
            "m.relates_to": {"rel_type": "m.replace", "event_id": hello},
        }),
    );
    mx.wait_message(&daemon, &dm, "answering the edit", |m| {
        m.body == "Mock agent: you said \"hello again\""
    });

    // Down for a while: what Ann writes meanwhile is answered after the restart, once, and
    // nothing from before is repeated.
    daemon.stop();
    mx.ann.say(&dm, "while away one");
    mx.ann.say(&dm, "while away two");
    daemon.start_again();
    mx.wait_syncing(&daemon, 2);
    // Both reach the agent, once each, in one turn (the mock answers the newest).
    mx.wait_message(&daemon, &dm, "answering after the restart", |m| {
        m.body == "Mock agent: you said \"while away two\""
    });
    let rows = |text: &str| {
        mx.session_dirs("dm-with-ann")
            .iter()
            .filter_map(|d| harness::inbound_db(d).ok())
            .map(|db| {
                db.query_row(
                    "SELECT COUNT(*) FROM messages_in WHERE content LIKE ?1",
                    [format!("%{text}%")],
                    |r| r.get::<_, i64>(0),
                )
                .unwrap_or(0)
            })
            .sum::<i64>()
    };
    std::thread::sleep(Duration::from_secs(4));
    for text in ["hello from **Matrix**", "while away one", "while away two"] {
        assert_eq!(rows(text), 1, "{text} reached the agent once");
    }
    let bot = mx.posted(&dm);
    for text in ["hello from Matrix", "hello again", "while away two"] {
        assert_eq!(
            count(&bot, &format!("Mock agent: you said \"{text}\"")),
            1,
            "{text}: {:?}",
            bot.iter().map(|m| &m.body).collect::<Vec<_>>()
        );
    }
    assert_eq!(
        bot.iter()
            .filter(|m| m.body.contains("your NanoClaw agent"))
            .count(),
        1,
        "one welcome"
    );

    // Ann deletes (redacts) the message the agent already answered: the agent is told (a
    // note that rides along with its next turn), once.
    mx.ann.redact(&dm, &hello);
    let notes = || {
        mx.session_dirs("dm-with-ann")
            .iter()
            .filter_map(|d| harness::inbound_db(d).ok())
            .map(|db| {
                db.query_row(
                    "SELECT COUNT(*) FROM messages_in WHERE id LIKE ?1
                     AND trigger = 0 AND content LIKE '%The sender deleted message%'",
                    [format!("%{hello}%deleted")],
                    |r| r.get::<_, i64>(0),
                )
                .unwrap_or(0)
            })
            .sum::<i64>()
    };
    assert!(
        wait_until(Duration::from_secs(30), || notes() == 1),
        "no deletion note for the agent:\n{}",
        daemon.log()
    );
}

#[test]
fn a_room_engages_on_mentions_asks_about_strangers_and_splits_long_replies() {
    let name = "a_room_engages_on_mentions_asks_about_strangers_and_splits_long_replies";
    if !require_engine(name) || !require_synapse(name) {
        return;
    }
    // ~30,000 bytes: numbered words, so order and loss both show.
    let mut long = String::new();
    for i in 1..=3000 {
        long.push_str(&format!("word{i:05}"));
        long.push_str(if i % 25 == 0 { "\n\n" } else { " " });
    }
    let long = long.trim_end().to_string();
    let mx = Mx::new();
    let bob = mx.synapse.user("bob");
    mx.agent(
        "team",
        &format!(
            "[[rule]]\nmatch = \"essay\"\nreply = {}\n\n[[rule]]\nreply = \"echo: {{text}}\"\n",
            toml::Value::String(long.clone())
        ),
    );
    // Ann's team room, the bot and Bob invited: the bot joins when it starts (the invite is
    // from its own homeserver).
    let room = mx
        .ann
        .create_room(Some("Team room"), &[&mx.bot.id, &bob.id], false);
    bob.join(&room);
    let chat = format!("matrix:{room}");
    mx.ok(&[
        "chats",
        "add",
        &chat,
        "--name",
        "team",
        "--group",
        "--policy",
        "request_approval",
    ]);
    mx.ok(&["wire", "add", &chat, "team"]);
    let daemon = mx.start();
    let joined = wait_until(Duration::from_secs(30), || {
        mx.ann.events(&room).iter().any(|e| {
            e["type"] == "m.room.member"
                && e["state_key"] == mx.bot.id.as_str()
                && e["content"]["membership"] == "join"
        })
    });
    assert!(joined, "the bot did not join:\n{}", daemon.log());
    let dm = mx.first_agent(&daemon);

    // Without a mention nothing engages; with one, the agent answers in the room.
    mx.ann.say(&room, "just chatting");
    mx.ann.say_to(&room, &mx.bot.id, "nanoclaw", "status?");
    mx.wait_message(&daemon, &room, "answering the mention", |m| {
        m.body.starts_with("echo:") && m.body.contains("status?")
    });
    assert!(
        !mx.posted(&room)
            .iter()
            .any(|m| m.body.contains("just chatting")),
        "{:?}",
        mx.posted(&room).iter().map(|m| &m.body).collect::<Vec<_>>()
    );

    // Bob is unknown: held, and Ann decides on the card in her DM by replying with the
    // number of "Allow".
    bob.say_to(&room, &mx.bot.id, "nanoclaw", "let me in");
    let card = mx.wait_message(&daemon, &dm, "asking about Bob", |m| {
        m.body.contains("wants to talk to team")
    });
    let allow = card
        .body
        .lines()
        .find_map(|l| {
            let (n, label) = l.trim().split_once(". ")?;
            (label.trim() == "Allow").then(|| n.trim().to_owned())
        })
        .unwrap_or_else(|| panic!("no numbered Allow option in {:?}", card.body));
    mx.ann.reply(&dm, &card.event_id, &allow);
    mx.wait_message(&daemon, &room, "answering Bob", |m| {
        m.body.starts_with("echo:") && m.body.contains("let me in")
    });

    // A long reply arrives split within the event budget, in order, intact.
    let before = mx.posted(&room).len();
    mx.ann.say_to(&room, &mx.bot.id, "nanoclaw", "essay please");
    let expected: Vec<&str> = long.split_whitespace().collect();
    let words = || -> Vec<String> {
        mx.posted(&room)
            .iter()
            .skip(before)
            .filter(|m| m.body.starts_with("word"))
            .flat_map(|m| {
                m.body
                    .split_whitespace()
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    let complete = wait_until(AGENT, || words().len() >= expected.len());
    assert!(complete, "got {} words\n{}", words().len(), daemon.log());
    std::thread::sleep(Duration::from_secs(2));
    let parts: Vec<Seen> = mx
        .posted(&room)
        .into_iter()
        .filter(|m| m.body.starts_with("word"))
        .collect();
    assert!(parts.len() >= 3, "{} parts", parts.len());
    for p in &parts {
        let html = p.formatted.as_deref().unwrap_or_default();
        assert!(html.len() <= 12_000, "a part of {} bytes", html.len());
    }
    assert_eq!(words(), expected, "every word once, in order");
}
