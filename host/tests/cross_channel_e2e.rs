//! Cold-DM approvals across channels, end to end: the real daemon with the real Discord and
//! Slack plugins (cdylibs) against their fakes on 127.0.0.1, agents in containers of the
//! locally built image. The owner paired on Discord in a server channel and never wrote to
//! the bot in a DM; an unknown Slack user writes in a Slack channel whose unknown senders
//! need approval. The card reaches the owner's Discord DM, which the host opens through the
//! plugin (`open_dm`), the owner clicks Allow there, and the held Slack message is answered
//! in its Slack thread. Skipped (with a message) without a Docker engine.

mod common;
mod harness;

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::Duration;

use harness::{Daemon, built, cli_ok, require_engine, wait_until};
use nanoclaw_fake_discord::FakeDiscord;
use nanoclaw_fake_slack::FakeSlack;
use serde_json::{Value, json};

const AGENT: Duration = Duration::from_secs(90);
const ECHO: &str = "[[rule]]\nreply = \"echo: {text}\"\n";
/// The owner on Discord, and someone else there.
const ANN: &str = nanoclaw_fake_discord::ANN;
const DISCORD_BOB: &str = nanoclaw_fake_discord::BOB;
/// The unknown Slack user.
const SLACK_BOB: &str = nanoclaw_fake_slack::BOB;

struct Install {
    _dir: tempfile::TempDir,
    data: PathBuf,
    discord: FakeDiscord,
    slack: FakeSlack,
}

impl Install {
    fn new() -> Install {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        let env = data.join(".env");
        std::fs::write(
            &env,
            format!(
                "DISCORD_BOT_TOKEN={}\nSLACK_BOT_TOKEN={}\nSLACK_APP_TOKEN={}\n",
                nanoclaw_fake_discord::TOKEN,
                nanoclaw_fake_slack::BOT_TOKEN,
                nanoclaw_fake_slack::APP_TOKEN,
            ),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&env, std::fs::Permissions::from_mode(0o600)).unwrap();
        Install {
            discord: FakeDiscord::start(),
            slack: FakeSlack::start(),
            data,
            _dir: dir,
        }
    }

    fn plugins_toml(&self) -> String {
        format!(
            "[plugins.discord]\nlibrary = {:?}\nrequired = true\n\
             [plugins.discord.settings]\nbot_token = {{ env = \"DISCORD_BOT_TOKEN\" }}\n\
             api_base_url = {:?}\ngateway_url = {:?}\n\n\
             [plugins.slack]\nlibrary = {:?}\nrequired = true\n\
             [plugins.slack.settings]\nbot_token = {{ env = \"SLACK_BOT_TOKEN\" }}\n\
             app_token = {{ env = \"SLACK_APP_TOKEN\" }}\napi_base_url = {:?}\n\
             file_hosts = [{:?}]\npost_per_sec = 20\n",
            built().join("libnanoclaw_plugin_discord.so"),
            self.discord.api_base_url(),
            self.discord.gateway_url(),
            built().join("libnanoclaw_plugin_slack.so"),
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

    fn ok(&self, args: &[&str]) -> String {
        cli_ok(&self.data, args)
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        serde_json::from_str(&self.ok(&all)).expect("--json output is JSON")
    }

    /// Calls the fake Discord's control API (what a Discord user does).
    fn discord_control(&self, path: &str, body: Value) -> Value {
        let base = self.discord.api_base_url();
        let port: u16 = base
            .trim_start_matches("http://127.0.0.1:")
            .split('/')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("the fake's port");
        let body = body.to_string();
        let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        write!(
            stream,
            "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
        assert!(head.starts_with("HTTP/1.1 200"), "{path}: {answer}");
        serde_json::from_str(body).unwrap_or(Value::Null)
    }

    /// The bot's Discord messages in `channel` whose text contains `what`.
    fn discord_posts(&self, channel: &str, what: &str) -> Vec<nanoclaw_fake_discord::Posted> {
        self.discord
            .messages()
            .into_iter()
            .filter(|m| m.channel_id == channel && m.content.contains(what))
            .collect()
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

fn find_code(text: &str) -> Option<String> {
    text.split_whitespace()
        .find(|w| {
            w.len() == 9
                && w.as_bytes()[4] == b'-'
                && w.bytes()
                    .all(|b| b == b'-' || b.is_ascii_uppercase() || b.is_ascii_digit())
        })
        .map(str::to_owned)
}

/// The `custom_id` of the button labelled `label` on a Discord message.
fn button(card: &nanoclaw_fake_discord::Posted, label: &str) -> String {
    card.components
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|row| row["components"].as_array().cloned().unwrap_or_default())
        .find(|b| b["label"] == label)
        .and_then(|b| b["custom_id"].as_str().map(str::to_owned))
        .unwrap_or_else(|| panic!("no {label:?} button on {:?}", card.components))
}

#[test]
fn a_slack_stranger_is_approved_from_the_owners_discord_dm_opened_for_it() {
    if !require_engine("a_slack_stranger_is_approved_from_the_owners_discord_dm_opened_for_it") {
        return;
    }
    let i = Install::new();
    i.ok(&[
        "groups",
        "create",
        "team",
        "--folder",
        "team",
        "--provider",
        "mock",
    ]);
    let config = i.data.join("config").join("team");
    std::fs::create_dir_all(&config).unwrap();
    std::fs::write(config.join("mock.toml"), ECHO).unwrap();
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
    i.discord_control(
        "/control/send",
        json!({"from": ANN, "name": "Ann", "text": code, "mention": true,
               "channel": nanoclaw_fake_discord::GUILD_CHANNEL,
               "guild": nanoclaw_fake_discord::GUILD}),
    );
    let paired = wait_until(AGENT, || {
        !i.discord_posts(nanoclaw_fake_discord::GUILD_CHANNEL, "Paired!")
            .is_empty()
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
    assert_ne!(dm, nanoclaw_fake_discord::GUILD_CHANNEL);
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
    i.discord_control(
        "/control/click",
        json!({"from": DISCORD_BOB, "name": "Bob", "channel": dm, "message": card.id,
               "custom_id": allow}),
    );
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
    i.discord_control(
        "/control/click",
        json!({"from": ANN, "name": "Ann", "channel": dm, "message": card.id,
               "custom_id": allow}),
    );
    let confirmed = wait_until(AGENT, || !i.discord_posts(&dm, "Allowed").is_empty());
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
