//! The Discord operator journey, end to end: the real daemon with the real Discord plugin
//! (the cdylib) against a fake Discord (gateway and REST) on 127.0.0.1, agents in containers
//! of the locally built image running the mock provider. Tests act only as Discord users
//! would (through the fake) and as the operator would (the `nanoclaw` CLI). Skipped (with a
//! message) without a Docker engine.

mod common;
mod harness;

use std::time::Duration;

use harness::discord::{
    self, ANN, BOB, GUILD_CHANNEL, button, click, posts, say_in_channel, say_in_dm,
};
use harness::journey::{self, AGENT, Platform};
use harness::{Daemon, Install, require_engine, wait_until};
use nanoclaw_fake_discord::{FakeDiscord, Posted};

/// An install with the Discord plugin, and the fake Discord.
struct Dc {
    install: Install,
    fake: FakeDiscord,
}

impl std::ops::Deref for Dc {
    type Target = Install;
    fn deref(&self) -> &Install {
        &self.install
    }
}

impl Dc {
    fn new() -> Dc {
        Dc {
            install: Install::new(&discord::env_line()),
            fake: FakeDiscord::start(),
        }
    }

    fn start(&self) -> Daemon {
        let toml = discord::plugins_toml(&self.fake);
        let daemon = Daemon::start_event_driven(&self.data, &toml, &[]);
        let connected = wait_until(Duration::from_secs(30), || {
            self.fake.current_session().is_some()
        });
        assert!(connected, "the plugin never identified:\n{}", daemon.log());
        std::thread::sleep(Duration::from_millis(300));
        daemon
    }
}

impl Platform for Dc {
    type Chat = str;
    type Posted = Posted;

    fn posted(&self, channel: &str) -> Vec<Posted> {
        posts(&self.fake, channel)
    }

    fn shown(m: &Posted) -> String {
        m.content.clone()
    }
}

/// Ann pairs in a server channel (she never writes to the bot in a DM), then gets her first
/// agent: the daemon has the plugin open her DM, and the welcome arrives there. Returns the
/// DM's channel id.
fn first_agent(dc: &Dc, daemon: &Daemon) -> String {
    journey::pair(dc, daemon, "discord", GUILD_CHANNEL, |code| {
        say_in_channel(&dc.fake, ANN, "Ann", code, true);
    });
    journey::init_first_agent(dc, &format!("discord:{ANN}"), None);
    let mut dm = None;
    let ok = wait_until(AGENT, || {
        dm = dc
            .fake
            .messages()
            .into_iter()
            .find(|m| m.content.contains("your NanoClaw agent"))
            .map(|m| m.channel_id);
        dm.is_some()
    });
    assert!(ok, "no welcome:\n{}", daemon.log());
    let dm = dm.unwrap();
    assert_ne!(dm, GUILD_CHANNEL, "the welcome is in a DM");
    dm
}

#[test]
fn the_first_agent_answers_in_a_dm_the_owner_never_opened() {
    if !require_engine("the_first_agent_answers_in_a_dm_the_owner_never_opened") {
        return;
    }
    let dc = Dc::new();
    let daemon = dc.start();
    let dm = first_agent(&dc, &daemon);
    let written = say_in_dm(&dc.fake, ANN, "Ann", "hello from Discord");
    assert_eq!(written, dm, "Ann writes in the DM the bot opened");
    dc.wait_text(&daemon, &dm, "echoing the DM", |t| {
        t == "Mock agent: you said \"hello from Discord\""
    });
    let sessions = dc.json(&["sessions", "list"]);
    assert_eq!(sessions.as_array().unwrap().len(), 1, "{sessions}");
    // The agent's turn showed a typing indicator in the DM.
    assert!(dc.fake.typing().contains(&dm));
}

#[test]
fn a_server_channel_engages_on_mentions_asks_about_strangers_and_splits_long_replies() {
    if !require_engine(
        "a_server_channel_engages_on_mentions_asks_about_strangers_and_splits_long_replies",
    ) {
        return;
    }
    // ~5,000 characters: numbered words, so order and loss both show.
    let long = journey::numbered_words(550);
    let dc = Dc::new();
    dc.agent(
        "team",
        &format!(
            "[[rule]]\nmatch = \"essay\"\nreply = {}\n\n[[rule]]\nreply = \"echo: {{text}}\"\n",
            toml::Value::String(long.clone())
        ),
    );
    let channel = format!("discord:{GUILD_CHANNEL}");
    dc.ok(&[
        "chats",
        "add",
        &channel,
        "--name",
        "general",
        "--group",
        "--policy",
        "request_approval",
    ]);
    dc.ok(&["wire", "add", &channel, "team"]);
    let daemon = dc.start();
    first_agent(&dc, &daemon);
    let before = dc.texts(GUILD_CHANNEL).len();

    // Without a mention nothing engages; with one, the agent answers in the channel.
    say_in_channel(&dc.fake, ANN, "Ann", "just chatting", false);
    say_in_channel(&dc.fake, ANN, "Ann", "status?", true);
    dc.wait_text(&daemon, GUILD_CHANNEL, "answering the mention", |t| {
        t.starts_with("echo:") && t.contains("status?")
    });
    assert!(
        !dc.texts(GUILD_CHANNEL)
            .iter()
            .any(|t| t.contains("just chatting")),
        "{:?}",
        dc.texts(GUILD_CHANNEL)
    );

    // Bob is unknown: held, and Ann decides on the card in her DM.
    say_in_channel(&dc.fake, BOB, "Bob", "let me in", true);
    let mut card = None;
    let ok = wait_until(AGENT, || {
        card = dc
            .fake
            .messages()
            .into_iter()
            .find(|m| m.content.contains("wants to talk to team"));
        card.is_some()
    });
    assert!(ok, "no card:\n{}", daemon.log());
    let card = card.unwrap();
    click(
        &dc.fake,
        ANN,
        "Ann",
        &card.channel_id,
        &card.id,
        &button(&card, "Allow"),
    );
    dc.wait_text(&daemon, GUILD_CHANNEL, "answering Bob", |t| {
        t.starts_with("echo:") && t.contains("let me in")
    });

    // A long reply arrives split within Discord's 2,000 UTF-16 units, in order, intact.
    say_in_channel(&dc.fake, ANN, "Ann", "essay please", true);
    let expected: Vec<&str> = long.split_whitespace().collect();
    let words = || -> Vec<String> {
        dc.texts(GUILD_CHANNEL)
            .iter()
            .skip(before)
            .filter(|t| t.starts_with("word"))
            .flat_map(|t| t.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
            .collect()
    };
    let complete = wait_until(AGENT, || words().len() >= expected.len());
    assert!(complete, "got {} words\n{}", words().len(), daemon.log());
    std::thread::sleep(Duration::from_secs(2)); // nothing more (no repeats) follows
    let parts: Vec<String> = dc
        .texts(GUILD_CHANNEL)
        .into_iter()
        .filter(|t| t.starts_with("word"))
        .collect();
    assert!(parts.len() >= 3, "{} parts", parts.len());
    for p in &parts {
        let units = p.encode_utf16().count();
        assert!(units <= 2000, "a message of {units} UTF-16 units");
    }
    assert_eq!(words(), expected, "every word once, in order");
}
