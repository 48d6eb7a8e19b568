//! The Teams operator journey, end to end: the real `nanoclaw` daemon with the real Teams
//! plugin (the cdylib) behind its webhook server, against a fake Bot Framework on 127.0.0.1
//! (OpenID keys, token endpoint, Bot Connector); agents in containers of the locally built
//! image running the mock provider. Tests act only as the Bot Framework would (signed
//! activities POSTed to `/webhook/teams`) and as the operator would (the `nanoclaw` CLI).
//! Skipped (with a message) without a Docker engine.

mod common;
mod harness;

use std::time::Duration;

use harness::journey::{self, AGENT, Owner, Platform, approvals};
use harness::{Daemon, Install, built, free_port, require_engine, wait_until};
use nanoclaw_fake_teams::{
    ANN, APP_ID, APP_PASSWORD, BOB, DM_ANN, FakeTeams, GENERAL, Posted, TENANT, post_activity_to,
};
use serde_json::Value;

const ECHO: &str = "[[rule]]\nreply = \"echo: {text}\"\n";

/// One install: a temp data dir whose `.env` holds the app credentials, and a fake Bot
/// Framework.
struct Teams {
    install: Install,
    fake: FakeTeams,
    port: u16,
}

impl std::ops::Deref for Teams {
    type Target = Install;
    fn deref(&self) -> &Install {
        &self.install
    }
}

impl Teams {
    fn new() -> Teams {
        Teams {
            install: Install::new(&format!(
                "TEAMS_APP_ID={APP_ID}\nTEAMS_APP_PASSWORD={APP_PASSWORD}\n"
            )),
            fake: FakeTeams::start(),
            port: free_port(),
        }
    }

    fn plugins_toml(&self) -> String {
        format!(
            "[plugins.teams]\nlibrary = {:?}\nrequired = true\n\
             [plugins.teams.settings]\napp_id = {{ env = \"TEAMS_APP_ID\" }}\n\
             app_password = {{ env = \"TEAMS_APP_PASSWORD\" }}\ntenant_id = {TENANT:?}\n\
             token_url = {:?}\nopenid_config_url = {:?}\ndefault_service_url = {:?}\n",
            built().join("libnanoclaw_plugin_channels.so"),
            self.fake.token_url(),
            self.fake.openid_url(),
            self.fake.service_url(),
        )
    }

    /// Starts the daemon with its webhook server and waits until it answers.
    fn start(&self) -> Daemon {
        journey::start_with_webhooks(self, &self.plugins_toml(), self.port, || {
            !self.fake.harness().calls_to("token").is_empty()
        })
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/webhook/teams", self.port)
    }

    /// POSTs an activity as the Bot Framework does (signed); returns the status.
    fn post(&self, activity: &Value) -> u16 {
        post_activity_to(&self.url(), activity, Some(&self.fake.bearer())).0
    }

    /// A user writes; returns the activity id.
    fn say(
        &self,
        chat: &str,
        from: &str,
        text: &str,
        thread: Option<&str>,
        mention: bool,
    ) -> String {
        let activity = self.fake.message(chat, from, text, thread, mention);
        assert_eq!(self.post(&activity), 200, "{activity}");
        activity["id"].as_str().unwrap().to_owned()
    }
}

impl Platform for Teams {
    type Chat = str;
    type Posted = Posted;

    fn posted(&self, chat: &str) -> Vec<Posted> {
        self.fake.bot_messages(chat)
    }

    fn shown(m: &Posted) -> String {
        m.shown()
    }
}

/// Ann pairs in her personal chat with the bot and becomes owner, then gets her DM agent
/// from `init-first-agent` with the chat's conversation id, as skills/add-teams says.
fn first_agent(t: &Teams, daemon: &Daemon) {
    let ann = Owner {
        channel: "teams",
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
    let long = journey::numbered_words(2600);
    let t = Teams::new();
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
    assert_eq!(post_activity_to(&t.url(), &forged, None).0, 401);
    let stale = t
        .fake
        .bearer_with(&t.fake.claims(&t.fake.service_url(), -3600));
    assert_eq!(post_activity_to(&t.url(), &forged, Some(&stale)).0, 401);

    first_agent(&t, &daemon);

    // A DM, and the Bot Framework's retry of it: answered once.
    let hello = t.fake.message(DM_ANN, ANN, "hello from Teams", None, false);
    assert_eq!(t.post(&hello), 200);
    assert_eq!(t.post(&hello), 200);
    t.wait_message(&daemon, DM_ANN, "echoing the DM", |m| {
        m.shown().contains("hello from Teams")
    });
    std::thread::sleep(Duration::from_secs(2));
    let echoes = t
        .texts(DM_ANN)
        .iter()
        .filter(|x| x.contains("hello from Teams"))
        .count();
    assert_eq!(echoes, 1, "{:?}", t.texts(DM_ANN));
    assert!(!t.texts(DM_ANN).iter().any(|x| x.contains("forged")));
    assert!(
        !t.fake.typing().is_empty(),
        "typing shown while the agent worked"
    );

    // A long reply: split within Teams' limit, every word once, in order.
    t.say(DM_ANN, ANN, "essay please", None, false);
    let expected: Vec<&str> = long.split_whitespace().collect();
    let words = || -> Vec<String> {
        t.texts(DM_ANN)
            .iter()
            .skip_while(|x| !x.contains("hello from Teams"))
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
        .skip_while(|x| !x.contains("hello from Teams"))
        .skip(1)
        .collect();
    assert!(parts.len() >= 2, "{} parts", parts.len());
    for p in &parts {
        assert!(p.len() <= 20_000, "a part of {} bytes", p.len());
    }
    assert_eq!(words(), expected, "every word once, in order");
}

/// The bot's card in `chat` that mentions `who`.
fn card_in(t: &Teams, chat: &str, who: &str) -> Option<Posted> {
    t.fake
        .bot_messages(chat)
        .into_iter()
        .find(|m| !m.buttons().is_empty() && m.shown().contains(who))
}

#[test]
fn a_channel_engages_on_mentions_and_an_unknown_sender_waits_for_the_owners_click() {
    if !require_engine(
        "a_channel_engages_on_mentions_and_an_unknown_sender_waits_for_the_owners_click",
    ) {
        return;
    }
    let t = Teams::new();
    t.agent("team", ECHO);
    t.ok(&[
        "chats",
        "add",
        &format!("teams:{GENERAL}"),
        "--name",
        "general",
        "--group",
        "--policy",
        "request_approval",
    ]);
    let out = t.ok(&["wire", "add", &format!("teams:{GENERAL}"), "team"]);
    assert!(out.contains("(mention)"), "{out}");
    let daemon = t.start();
    first_agent(&t, &daemon);

    // Bob is unknown: his mention is held and the card goes to Ann's DM.
    let bob = format!("teams:{BOB}");
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
    assert_eq!(t.post(&t.fake.click(DM_ANN, BOB, &card.id, &allow)), 200);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(approvals(&t), [(bob.clone(), "pending".into())]);

    // Ann allows: the held message is answered in the channel, in its thread.
    assert_eq!(t.post(&t.fake.click(DM_ANN, ANN, &card.id, &allow)), 200);
    let answer = t.wait_message(&daemon, GENERAL, "answering Bob", |m| {
        m.shown().starts_with("echo:") && m.shown().contains("hi from bob")
    });
    assert_eq!(
        answer.thread.as_deref(),
        Some(asked.as_str()),
        "in the thread of the mention"
    );
    assert_eq!(approvals(&t), [(bob, "approved".into())]);

    // Engage rule: Bob's post without a mention is not for the agent; with one, it is.
    t.say(GENERAL, BOB, "just chatting", None, false);
    let mention = t.say(GENERAL, BOB, "are you there?", None, true);
    let second = t.wait_message(&daemon, GENERAL, "answering the mention", |m| {
        m.shown().contains("are you there?")
    });
    assert_eq!(second.thread.as_deref(), Some(mention.as_str()));
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        !t.texts(GENERAL).iter().any(|x| x.contains("just chatting")),
        "{:?}",
        t.texts(GENERAL)
    );
    journey::assert_unengaged_dropped(&t);
}
