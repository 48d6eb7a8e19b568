//! Cold-DM approvals across channels, end to end: the real daemon with the real Discord and
//! Slack plugins (cdylibs) against their fakes on 127.0.0.1, agents in containers of the
//! locally built image. The owner paired on Discord in a server channel and never wrote to
//! the bot in a DM; an unknown Slack user writes in a Slack channel whose unknown senders
//! need approval. The card reaches the owner's Discord DM, which the host opens through the
//! plugin (`open_dm`), the owner clicks Allow there, and the held Slack message is answered
//! in its Slack thread. Skipped (with a message) without a Docker engine.

mod common;
mod harness;

use std::time::Duration;

use harness::discord::{self, button, click, posts, say_in_channel};
use harness::journey::{AGENT, find_code};
use harness::{Daemon, Install, built, require_engine, wait_until};
use nanoclaw_fake_discord::FakeDiscord;
use nanoclaw_fake_slack::FakeSlack;

const ECHO: &str = "[[rule]]\nreply = \"echo: {text}\"\n";
/// The owner on Discord, and someone else there.
const ANN: &str = discord::ANN;
const DISCORD_BOB: &str = discord::BOB;
/// The unknown Slack user.
const SLACK_BOB: &str = nanoclaw_fake_slack::BOB;

/// An install with the Discord and Slack plugins, and both fakes.
struct Both {
    install: Install,
    discord: FakeDiscord,
    slack: FakeSlack,
}

impl std::ops::Deref for Both {
    type Target = Install;
    fn deref(&self) -> &Install {
        &self.install
    }
}

impl Both {
    fn new() -> Both {
        let env = format!(
            "{}SLACK_BOT_TOKEN={}\nSLACK_APP_TOKEN={}\n",
            discord::env_line(),
            nanoclaw_fake_slack::BOT_TOKEN,
            nanoclaw_fake_slack::APP_TOKEN,
        );
        Both {
            install: Install::new(&env),
            discord: FakeDiscord::start(),
            slack: FakeSlack::start(),
        }
    }

    fn plugins_toml(&self) -> String {
        format!(
            "{}\n[plugins.slack]\nlibrary = {:?}\nrequired = true\n\
             [plugins.slack.settings]\nbot_token = {{ env = \"SLACK_BOT_TOKEN\" }}\n\
             app_token = {{ env = \"SLACK_APP_TOKEN\" }}\napi_base_url = {:?}\n\
             file_hosts = [{:?}]\npost_per_sec = 20\n",
            discord::plugins_toml(&self.discord),
            built().join("libnanoclaw_plugin_channels.so"),
            self.slack.api_url(),
            self.slack.base_url(),
        )
    }

    fn start(&self) -> Daemon {
        let daemon = Daemon::start_event_driven(&self.data, &self.plugins_toml(), &[]);
        let connected = wait_until(Duration::from_secs(30), || {
            self.discord.current_session().is_some()
        }) && self.slack.hub.wait_connections(1, Duration::from_secs(30));
        assert!(connected, "a plugin never connected:\n{}", daemon.log());
        std::thread::sleep(Duration::from_millis(300));
        daemon
    }

    /// Who the central DB says the user's Discord DM is, if anyone.
    fn cached_dm(&self, user: &str) -> Option<String> {
        let db = rusqlite::Connection::open(self.data.join("v2.db")).unwrap();
        db.query_row(
            "SELECT mg.platform_id FROM user_dms d JOIN messaging_groups mg
             ON mg.id = d.messaging_group_id WHERE d.user_id = ?1",
            [format!("discord:{user}")],
            |r| r.get(0),
        )
        .ok()
    }
}

#[test]
fn a_slack_stranger_is_approved_from_the_owners_discord_dm_opened_for_it() {
    if !require_engine("a_slack_stranger_is_approved_from_the_owners_discord_dm_opened_for_it") {
        return;
    }
    let i = Both::new();
    i.agent("team", ECHO);
    let general = format!("slack:{}", nanoclaw_fake_slack::GENERAL);
    i.ok(&[
        "chats",
        "add",
        &general,
        "--name",
        "general",
        "--group",
        "--policy",
        "request_approval",
    ]);
    i.ok(&["wire", "add", &general, "team"]);
    let daemon = i.start();

    // Ann pairs on Discord in a server channel, not in a DM, and becomes the owner.
    let printed = i.ok(&["pair", "discord", "--no-wait"]);
    let code = find_code(&printed).unwrap_or_else(|| panic!("no code in {printed:?}"));
    say_in_channel(&i.discord, ANN, "Ann", &code, true);
    let paired = wait_until(AGENT, || {
        posts(&i.discord, discord::GUILD_CHANNEL)
            .iter()
            .any(|m| m.content.starts_with("Paired!"))
    });
    assert!(paired, "no pairing answer:\n{}", daemon.log());
    let roles = i.json(&["roles", "list"]);
    assert!(
        roles.to_string().contains(&format!("discord:{ANN}")),
        "{roles}"
    );
    assert_eq!(i.cached_dm(ANN), None, "Ann never wrote to the bot in a DM");

    // Bob, unknown, writes in the Slack channel: held, and the card goes to Ann on Discord,
    // in a DM the host had the plugin open.
    let asked = i.slack.say(
        nanoclaw_fake_slack::GENERAL,
        "channel",
        SLACK_BOB,
        &format!("<@{}> hi from slack", nanoclaw_fake_slack::BOT_USER),
        None,
    );
    let mut card = None;
    let ok = wait_until(AGENT, || {
        card = i
            .discord
            .messages()
            .into_iter()
            .find(|m| m.content.contains("wants to talk to team"));
        card.is_some()
    });
    assert!(ok, "no card on Discord:\n{}", daemon.log());
    let card = card.unwrap();
    let dm = i.cached_dm(ANN).expect("the opened DM is remembered");
    assert_eq!(card.channel_id, dm, "the card is in Ann's DM");
    assert_ne!(dm, discord::GUILD_CHANNEL);
    assert!(
        card.content.contains(&format!("slack:{SLACK_BOB}")),
        "{}",
        card.content
    );
    assert!(
        i.slack
            .bot_messages(nanoclaw_fake_slack::GENERAL)
            .is_empty(),
        "the Slack channel saw nothing yet"
    );
    let allow = button(&card, "Allow");

    // Someone else on Discord clicks Allow on Ann's card: ignored.
    click(&i.discord, DISCORD_BOB, "Bob", &dm, &card.id, &allow);
    let handled = wait_until(Duration::from_secs(30), || !i.discord.acks().is_empty());
    assert!(
        handled,
        "the click was never acknowledged:\n{}",
        daemon.log()
    );
    std::thread::sleep(Duration::from_millis(500));
    let pending = i.json(&["approvals", "list"]);
    assert_eq!(pending.as_array().map(Vec::len), Some(1), "{pending}");
    assert!(
        i.slack
            .bot_messages(nanoclaw_fake_slack::GENERAL)
            .is_empty(),
        "released by someone who may not decide"
    );

    // Ann clicks Allow: the Slack message reaches the agent, answered in its thread.
    click(&i.discord, ANN, "Ann", &dm, &card.id, &allow);
    let confirmed = wait_until(AGENT, || {
        posts(&i.discord, &dm)
            .iter()
            .any(|m| m.content.contains("Allowed"))
    });
    assert!(confirmed, "no confirmation:\n{}", daemon.log());
    let answered = wait_until(AGENT, || {
        i.slack
            .bot_messages(nanoclaw_fake_slack::GENERAL)
            .iter()
            .any(|m| m.text.contains("hi from slack") && m.thread_ts.as_deref() == Some(&asked))
    });
    assert!(
        answered,
        "no answer in the Slack thread: {:?}\n{}",
        i.slack.bot_messages(nanoclaw_fake_slack::GENERAL),
        daemon.log()
    );
    let decided = i.json(&["approvals", "list", "--all"]);
    assert_eq!(decided[0]["status"], "approved", "{decided}");
    assert_eq!(
        decided[0]["decided_by"],
        format!("discord:{ANN}"),
        "{decided}"
    );
}
