//! The Telegram operator journey, end to end: the real `nanoclaw` daemon with the real
//! Telegram plugin (the cdylib) long-polling a fake Bot API on 127.0.0.1, agents in
//! containers of the locally built image running the mock provider. Tests act only as a
//! Telegram user would (through the fake) and as the operator would (the `nanoclaw` CLI);
//! they read the session databases to count what reached an agent. Skipped (with a message)
//! without a Docker engine.

mod common;
mod harness;

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use harness::journey::{self, AGENT, Platform, approvals, find_code};
use harness::{Daemon, Install, built, require_engine, wait_until};
use nanoclaw_fake_telegram::{FakeTelegram, Person, Sent, UserMessage};
use serde_json::Value;

/// A token in BotFather's shape (the plugin checks it), accepted by the fake.
const TOKEN: &str = "1234567890:FAKE-token-for-e2e-tests-only-0000000";
/// `@` + the fake bot's username: addresses the bot in a group.
const AT_BOT: &str = "@nanoclaw_test_bot";
const ECHO: &str = "[[rule]]\nreply = \"echo: {text}\"\n";

fn ann() -> Person {
    Person::new(42, "Ann").last_name("Lee")
}

/// One install: a temp data dir whose `.env` holds the bot token (as the operator does it:
/// the secret in data/.env, never in plugins.toml), and a fake Bot API.
struct Tg {
    install: Install,
    fake: FakeTelegram,
}

impl std::ops::Deref for Tg {
    type Target = Install;
    fn deref(&self) -> &Install {
        &self.install
    }
}

impl Tg {
    fn new() -> Tg {
        Tg {
            install: Install::new(&format!("TELEGRAM_BOT_TOKEN={TOKEN}\n")),
            fake: FakeTelegram::start(TOKEN).expect("start the fake Bot API"),
        }
    }

    fn plugins_toml(&self) -> String {
        format!(
            "[plugins.telegram]\nlibrary = {:?}\nrequired = true\n\
             [plugins.telegram.settings]\nbot_token = {{ env = \"TELEGRAM_BOT_TOKEN\" }}\n\
             api_base_url = {:?}\npoll_timeout_secs = 1\n",
            built().join("libnanoclaw_plugin_channels.so"),
            self.fake.base_url()
        )
    }

    /// Starts the daemon and waits until the plugin polls the fake. No periodic sweep:
    /// replies must arrive because the daemon noticed them.
    fn start(&self) -> Daemon {
        let daemon = Daemon::start_event_driven(&self.data, &self.plugins_toml(), &[]);
        let polling = wait_until(Duration::from_secs(30), || {
            !self.fake.calls_of("getUpdates").is_empty()
        });
        assert!(polling, "the plugin never polled:\n{}", daemon.log());
        daemon
    }

    /// Registers a Telegram group with an unknown-sender policy.
    fn group(&self, chat: i64, name: &str, policy: &str) {
        self.ok(&[
            "chats",
            "add",
            &format!("telegram:{chat}"),
            "--name",
            name,
            "--group",
            "--policy",
            policy,
        ]);
    }

    fn dm(&self, from: &Person, text: &str) -> i64 {
        self.fake
            .send_user_message(UserMessage::private(from.clone(), text))
            .expect("inject a DM")
            .message_id
    }

    fn say(&self, chat: i64, title: &str, from: &Person, text: &str) -> i64 {
        self.fake
            .send_user_message(UserMessage::group(chat, title, from.clone(), text))
            .expect("inject a group message")
            .message_id
    }

    /// The `sendMessage`s the bot made to `chat`, in order.
    fn sent_to(&self, chat: i64) -> Vec<Sent> {
        self.fake
            .sent()
            .into_iter()
            .filter(|s| s.method == "sendMessage" && s.chat_id == Some(chat))
            .collect()
    }

    /// The directories of the agent's sessions (through the CLI).
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

    /// The texts of the chat messages in every session of `folder`, with their status.
    fn inbound(&self, folder: &str) -> Vec<(String, String)> {
        let mut rows = Vec::new();
        for dir in self.session_dirs(folder) {
            let Ok(db) = harness::inbound_db(&dir) else {
                continue;
            };
            let mut stmt = db
                .prepare("SELECT content, status FROM messages_in WHERE kind = 'chat' ORDER BY seq")
                .unwrap();
            let found = stmt
                .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
                .unwrap();
            for row in found {
                let (content, status) = row.unwrap();
                let content: Value = serde_json::from_str(&content).unwrap();
                rows.push((content["text"].as_str().unwrap_or("").to_string(), status));
            }
        }
        rows
    }

    fn inbound_texts(&self, folder: &str) -> Vec<String> {
        self.inbound(folder).into_iter().map(|(t, _)| t).collect()
    }

    fn agent_id(&self, folder: &str) -> String {
        self.json(&["groups", "show", folder])["group"]["id"]
            .as_str()
            .unwrap()
            .to_string()
    }
}

impl Platform for Tg {
    type Chat = i64;
    type Posted = Sent;

    fn posted(&self, chat: &i64) -> Vec<Sent> {
        self.sent_to(*chat)
    }

    fn shown(s: &Sent) -> String {
        shown(s)
    }

    fn missed(what: &str, chat: &i64) -> String {
        format!("no message {what} in chat {chat}; it got")
    }
}

/// The visible text of a sent message.
fn shown(s: &Sent) -> String {
    s.plain_text
        .clone()
        .or_else(|| s.text.clone())
        .unwrap_or_default()
}

fn callback_answered(fake: &FakeTelegram, query: &str) -> bool {
    fake.sent()
        .iter()
        .any(|s| s.method == "answerCallbackQuery" && s.callback_query_id.as_deref() == Some(query))
}

/// Ann pairs her DM (a bot may only write to users who wrote to it first) and becomes
/// owner, then gets her DM agent from `init-first-agent`, as skills/add-telegram says; waits
/// for the welcome.
fn first_agent(tg: &Tg, daemon: &Daemon) {
    journey::pair(tg, daemon, "telegram", &42, |code| {
        tg.dm(&ann(), code);
    });
    let out = journey::init_first_agent(tg, "telegram:42", None);
    assert!(out.contains("already the owner"), "{out}");
    journey::welcome(tg, daemon, &42);
}

/// What the bot sent Ann after the welcome.
fn after_welcome(tg: &Tg) -> Vec<Sent> {
    tg.sent_to(42)
        .into_iter()
        .skip_while(|s| !shown(s).contains("your NanoClaw agent"))
        .skip(1)
        .collect()
}

#[test]
fn the_owner_dm_is_answered_by_the_first_agent() {
    if !require_engine("the_owner_dm_is_answered_by_the_first_agent") {
        return;
    }
    let tg = Tg::new();
    let daemon = tg.start();
    first_agent(&tg, &daemon);
    let texts = tg.texts(&42);
    assert_eq!(
        texts.len(),
        2,
        "the pairing confirmation and one welcome: {texts:?}"
    );
    assert_eq!(tg.sent_to(42)[1].parse_mode.as_deref(), Some("HTML"));

    tg.dm(&ann(), "hello from my phone");
    tg.wait_text(&daemon, &42, "echoing the DM", |t| {
        t == "Mock agent: you said \"hello from my phone\""
    });
    // The agent answered in the DM and nowhere else; the message went through the router.
    assert!(
        tg.fake
            .sent()
            .iter()
            .filter(|s| s.method == "sendMessage")
            .all(|s| s.chat_id == Some(42))
    );
    assert_eq!(
        tg.inbound_texts("dm-with-ann")
            .iter()
            .filter(|t| *t == "hello from my phone")
            .count(),
        1
    );
    // A typing indicator was shown in the DM while the agent worked.
    assert!(
        tg.fake
            .sent()
            .iter()
            .any(|s| s.method == "sendChatAction" && s.chat_id == Some(42))
    );
    let sessions = tg.json(&["sessions", "list"]);
    assert_eq!(sessions.as_array().unwrap().len(), 1, "{sessions}");
}

#[test]
fn groups_engage_by_mention_or_by_pattern() {
    if !require_engine("groups_engage_by_mention_or_by_pattern") {
        return;
    }
    let tg = Tg::new();
    tg.agent("quiet", ECHO);
    tg.agent("chatty", ECHO);
    tg.group(-1001, "Quiet room", "public");
    tg.group(-1002, "Chatty room", "public");
    // Groups default to mention; the other one hears everything.
    let out = tg.ok(&["wire", "add", "telegram:-1001", "quiet"]);
    assert!(out.contains("(mention)"), "{out}");
    tg.ok(&[
        "wire",
        "add",
        "telegram:-1002",
        "chatty",
        "--engage",
        "pattern",
    ]);
    let daemon = tg.start();
    let bob = Person::new(7, "Bob");

    tg.say(-1001, "Quiet room", &bob, "just chatting");
    tg.say(
        -1001,
        "Quiet room",
        &bob,
        &format!("{AT_BOT} are you there?"),
    );
    tg.wait_text(&daemon, &-1001, "answering the mention", |t| {
        t == format!("echo: {AT_BOT} are you there?")
    });
    // Updates are handled in order: the unmentioned one was decided before the mention.
    assert_eq!(tg.texts(&-1001).len(), 1, "{:?}", tg.texts(&-1001));
    assert_eq!(
        tg.inbound_texts("quiet"),
        [format!("{AT_BOT} are you there?")],
        "only the mention reached the agent"
    );
    let dropped = tg.json(&["dropped"]);
    assert!(
        dropped
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["platform_id"] == "-1001" && d["reason"] == "no_agent_engaged"),
        "{dropped}"
    );

    tg.say(-1002, "Chatty room", &bob, "just chatting");
    tg.wait_text(&daemon, &-1002, "answering the chatter", |t| {
        t == "echo: just chatting"
    });
    tg.say(-1002, "Chatty room", &bob, &format!("{AT_BOT} and you?"));
    tg.wait_text(&daemon, &-1002, "answering the mention", |t| {
        t == format!("echo: {AT_BOT} and you?")
    });
    assert_eq!(tg.texts(&-1002).len(), 2, "{:?}", tg.texts(&-1002));
    assert_eq!(
        tg.texts(&-1001).len(),
        1,
        "nothing crossed into the quiet room"
    );
}

#[test]
fn a_long_reply_arrives_split_in_order_and_intact() {
    if !require_engine("a_long_reply_arrives_split_in_order_and_intact") {
        return;
    }
    // ~10,000 characters: numbered words in paragraphs, so order and loss both show.
    let long = journey::numbered_words(1100);
    assert!((9_500..=10_500).contains(&long.chars().count()));
    let tg = Tg::new();
    // The agent reads its script when its container starts: write it before
    // init-first-agent (which keeps an existing one), with a welcome of its own.
    tg.mock(
        "dm-with-ann",
        &format!(
            "[[rule]]\nmatch = \"^essay\"\nreply = {}\n\n\
             [[rule]]\nreply = \"Hi, I am your NanoClaw agent.\"\n",
            toml::Value::String(long.clone())
        ),
    );
    let daemon = tg.start();
    first_agent(&tg, &daemon);
    tg.dm(&ann(), "essay please");
    let expected: Vec<&str> = long.split_whitespace().collect();
    let words = || -> Vec<String> {
        after_welcome(&tg)
            .iter()
            .flat_map(|s| {
                shown(s)
                    .split_whitespace()
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    let complete = wait_until(AGENT, || words().len() >= expected.len());
    assert!(complete, "got {} words\n{}", words().len(), daemon.log());
    std::thread::sleep(Duration::from_secs(2)); // nothing more (no repeats) follows
    let parts = after_welcome(&tg);
    assert!(parts.len() >= 3, "{} parts", parts.len());
    for p in &parts {
        let units = p.text.as_deref().unwrap_or_default().encode_utf16().count();
        assert!(units <= 4096, "a message of {units} UTF-16 units");
    }
    assert_eq!(words(), expected, "every word once, in order");
}

#[test]
fn updates_during_a_restart_or_a_crash_reach_the_agent_exactly_once() {
    if !require_engine("updates_during_a_restart_or_a_crash_reach_the_agent_exactly_once") {
        return;
    }
    let tg = Tg::new();
    let mut daemon = tg.start();
    first_agent(&tg, &daemon);
    tg.dm(&ann(), "m00 before");
    tg.wait_text(&daemon, &42, "echoing m00", |t| t.contains("m00 before"));
    let mut expected = vec!["m00 before".to_string()];

    // A clean stop; messages while it is down, and while it starts again.
    daemon.stop();
    for i in 1..=3 {
        expected.push(format!("m{i:02} while stopped"));
        tg.dm(&ann(), expected.last().unwrap());
    }
    let during: Vec<String> = (4..=9).map(|i| format!("m{i:02} while starting")).collect();
    expected.extend(during.iter().cloned());
    std::thread::scope(|s| {
        s.spawn(|| {
            for text in &during {
                tg.dm(&ann(), text);
                std::thread::sleep(Duration::from_millis(150));
            }
        });
        daemon.start_again();
    });

    // A crash in the middle of a stream: SIGKILL once part of it is in the agent's inbox.
    let burst: Vec<String> = (10..=29).map(|i| format!("m{i:02} in a burst")).collect();
    expected.extend(burst.iter().cloned());
    std::thread::scope(|s| {
        s.spawn(|| {
            for text in &burst {
                tg.dm(&ann(), text);
                std::thread::sleep(Duration::from_millis(40));
            }
        });
        let started = wait_until(Duration::from_secs(30), || {
            tg.inbound_texts("dm-with-ann")
                .iter()
                .any(|t| t.ends_with("in a burst"))
        });
        assert!(started, "the burst never arrived:\n{}", daemon.log());
        daemon.kill();
    });
    daemon.start_again();

    let all_done = wait_until(Duration::from_secs(120), || {
        let rows = tg.inbound("dm-with-ann");
        expected
            .iter()
            .all(|e| rows.iter().any(|(t, st)| t == e && st == "completed"))
    });
    let rows = tg.inbound("dm-with-ann");
    assert!(
        all_done,
        "not every message was handled: {rows:?}\n{}",
        daemon.log()
    );
    for e in &expected {
        let n = rows.iter().filter(|(t, _)| t == e).count();
        assert_eq!(n, 1, "{e:?} reached the agent {n} times");
    }
    let user_rows = rows.iter().filter(|(t, _)| t.starts_with('m')).count();
    assert_eq!(user_rows, expected.len(), "{rows:?}");
    assert_eq!(tg.fake.pending_updates(), 0, "every update was confirmed");
}

#[test]
fn an_agent_shared_by_a_dm_and_a_group_hears_every_message_of_both() {
    if !require_engine("an_agent_shared_by_a_dm_and_a_group_hears_every_message_of_both") {
        return;
    }
    let tg = Tg::new();
    let daemon = tg.start();
    first_agent(&tg, &daemon);
    // The family group joins Ann's conversation (the isolation choice "same session").
    tg.group(-1006, "Family", "strict");
    tg.ok(&[
        "wire",
        "add",
        "telegram:-1006",
        "dm-with-ann",
        "--engage",
        "pattern",
        "--session-mode",
        "agent-shared",
    ]);
    // Telegram numbers messages per chat, so the two chats reuse each other's ids.
    let in_dm = tg.dm(&ann(), "dm one");
    let in_group: Vec<i64> = (1..=5)
        .map(|i| tg.say(-1006, "Family", &ann(), &format!("family {i}")))
        .collect();
    assert!(
        in_group.contains(&in_dm),
        "ids {in_dm} and {in_group:?} do not overlap"
    );
    // Updates are handled in order: once this one is in, all of the above were routed.
    tg.dm(&ann(), "dm last");
    let routed = wait_until(AGENT, || {
        tg.inbound_texts("dm-with-ann")
            .iter()
            .any(|t| t == "dm last")
    });
    assert!(
        routed,
        "{:?}\n{}",
        tg.inbound_texts("dm-with-ann"),
        daemon.log()
    );
    assert_eq!(
        tg.session_dirs("dm-with-ann").len(),
        1,
        "one shared session"
    );
    let texts = tg.inbound_texts("dm-with-ann");
    let mut expected = vec!["dm one".to_string()];
    expected.extend((1..=5).map(|i| format!("family {i}")));
    expected.push("dm last".into());
    for e in &expected {
        let n = texts.iter().filter(|t| *t == e).count();
        assert_eq!(n, 1, "{e:?} reached the agent {n} times: {texts:?}");
    }
}

/// The rows of the pairing table (status, user, failed attempts), oldest first.
fn pairings(data: &Path) -> Vec<(String, Option<String>, i64)> {
    let db = rusqlite::Connection::open(data.join("v2.db")).unwrap();
    let mut stmt = db
        .prepare(
            "SELECT status, user_id, failed_attempts FROM pairing_codes ORDER BY created_at, rowid",
        )
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

fn owners(tg: &Tg) -> Vec<String> {
    tg.json(&["roles", "list"])
        .as_array()
        .unwrap()
        .iter()
        .filter(|g| g["role"] == "owner")
        .map(|g| g["user_id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn pairing_makes_the_first_pairer_owner_and_nobody_else() {
    if !require_engine("pairing_makes_the_first_pairer_owner_and_nobody_else") {
        return;
    }
    let tg = Tg::new();
    // Carl's DM is wired to an agent that hears everyone: were a code message routed, the
    // agent would get it.
    tg.agent("helper", ECHO);
    tg.ok(&[
        "chats",
        "add",
        "telegram:77",
        "--name",
        "Carl",
        "--policy",
        "public",
    ]);
    tg.ok(&["wire", "add", "telegram:77", "helper"]);
    let daemon = tg.start();

    // A code left to expire (the CLI's floor is 30 s; the rest of the test runs meanwhile).
    let expiring = tg.ok(&["pair", "telegram", "--no-wait", "--ttl-secs", "1"]);
    let expiring_at = Instant::now() + Duration::from_secs(30);
    let expiring = find_code(&expiring).unwrap_or_else(|| panic!("no code in {expiring:?}"));

    // The operator waits on `nanoclaw pair telegram`, as the skill says.
    let mut pair = Command::new(env!("CARGO_BIN_EXE_nanoclaw"))
        .env("NANOCLAW_HOME", &tg.data)
        .args(["pair", "telegram"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut printed = BufReader::new(pair.stdout.take().unwrap());
    let mut seen = String::new();
    let code = loop {
        let mut line = String::new();
        assert!(
            printed.read_line(&mut line).unwrap() > 0,
            "`nanoclaw pair` printed no code: {seen}"
        );
        seen.push_str(&line);
        if let Some(code) = find_code(&line) {
            break code;
        }
    };
    assert!(!seen.contains("daemon is not running"), "{seen}");

    // A wrong code is counted, and pairs nobody.
    let mallory = Person::new(66, "Mallory");
    tg.dm(&mallory, "ZZZZ-ZZZZ");
    let counted = wait_until(Duration::from_secs(30), || {
        pairings(&tg.data)
            .iter()
            .all(|(st, _, n)| st == "pending" && *n == 1)
    });
    assert!(counted, "{:?}\n{}", pairings(&tg.data), daemon.log());

    // The right code, typed in lower case the way a phone might: Ann is paired and owner.
    tg.dm(&ann(), &code.to_lowercase());
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut printed, &mut rest).unwrap();
    let status = pair.wait().unwrap();
    assert!(status.success(), "{seen}{rest}");
    assert!(rest.contains("PAIRED_USER_ID=telegram:42"), "{rest}");
    assert!(rest.contains("PAIRED_CHAT=telegram:42"), "{rest}");
    assert!(rest.contains("OWNER=yes"), "{rest}");
    tg.wait_text(&daemon, &42, "confirming the pairing", |t| {
        t == "Paired! telegram:42 is now the owner of this NanoClaw."
    });
    assert_eq!(owners(&tg), ["telegram:42"]);
    assert_eq!(
        tg.texts(&66),
        ["That pairing code is not valid (or has expired)."],
        "Mallory is told, and nothing else"
    );

    // A second pairer (with --no-wait) is paired but not made owner; the code message stays
    // out of the agent wired to their chat.
    let second = tg.ok(&["pair", "telegram", "--no-wait"]);
    let second = find_code(&second).unwrap_or_else(|| panic!("no code in {second:?}"));
    let carl = Person::new(77, "Carl");
    tg.dm(&carl, &second);
    tg.wait_text(&daemon, &77, "confirming the second pairing", |t| {
        t == "Paired! telegram:77 is linked to this chat."
    });
    assert_eq!(owners(&tg), ["telegram:42"], "still one owner");
    tg.dm(&carl, "hello helper");
    tg.wait_text(&daemon, &77, "echoing Carl", |t| t == "echo: hello helper");
    assert_eq!(
        tg.inbound_texts("helper"),
        ["hello helper"],
        "the code never reached the agent"
    );

    // The expired code pairs nobody; it is just a message now.
    let wait = expiring_at.saturating_duration_since(Instant::now()) + Duration::from_secs(1);
    std::thread::sleep(wait);
    let dora = Person::new(88, "Dora");
    tg.dm(&dora, &expiring);
    let handled = wait_until(Duration::from_secs(30), || {
        tg.json(&["dropped"])
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["user_id"] == "telegram:88")
    });
    assert!(
        handled,
        "Dora's message was never handled:\n{}",
        daemon.log()
    );
    assert!(tg.texts(&88).is_empty(), "Dora got {:?}", tg.texts(&88));
    assert_eq!(owners(&tg), ["telegram:42"]);
    let statuses: Vec<String> = pairings(&tg.data).into_iter().map(|p| p.0).collect();
    assert_eq!(statuses, ["expired", "consumed", "consumed"]);
    assert!(
        pairings(&tg.data)
            .iter()
            .all(|(_, user, _)| user.as_deref() != Some("telegram:88"))
    );
}

fn card_in(tg: &Tg, chat: i64, mentioning: &str) -> Option<Sent> {
    tg.sent_to(chat)
        .into_iter()
        .find(|s| !s.buttons.is_empty() && shown(s).contains(mentioning))
}

fn members_of(tg: &Tg, folder: &str) -> Vec<String> {
    tg.json(&["members", "list", "--agent", folder])
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["user_id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn unknown_senders_wait_for_the_owner_to_allow_or_deny_them() {
    if !require_engine("unknown_senders_wait_for_the_owner_to_allow_or_deny_them") {
        return;
    }
    let tg = Tg::new();
    tg.agent("team", ECHO);
    tg.group(-1003, "Team", "request_approval");
    tg.ok(&["wire", "add", "telegram:-1003", "team"]);
    let daemon = tg.start();
    first_agent(&tg, &daemon);
    let sam = Person::new(55, "Sam");

    // Sam is unknown: the message is held and the card goes to Ann's DM, not the group.
    tg.say(-1003, "Team", &sam, &format!("{AT_BOT} hi from sam"));
    let ok = wait_until(AGENT, || card_in(&tg, 42, "telegram:55").is_some());
    assert!(
        ok,
        "no card in the owner's DM: {:?}\n{}",
        tg.texts(&42),
        daemon.log()
    );
    let card = card_in(&tg, 42, "telegram:55").unwrap();
    assert!(
        shown(&card).contains("Sam (telegram:55)"),
        "{}",
        shown(&card)
    );
    assert!(
        shown(&card).contains("Team (telegram:-1003)"),
        "{}",
        shown(&card)
    );
    let labels: Vec<&str> = card
        .buttons
        .iter()
        .flatten()
        .map(|b| b.text.as_str())
        .collect();
    assert_eq!(labels, ["Allow", "Deny"]);
    assert!(
        tg.sent_to(-1003).is_empty(),
        "the group saw {:?}",
        tg.texts(&-1003)
    );
    assert_eq!(approvals(&tg), [("telegram:55".into(), "pending".into())]);
    let allow = card
        .buttons
        .iter()
        .flatten()
        .find(|b| b.text == "Allow")
        .unwrap();
    let card_id = card.message_id.unwrap();

    // Sam presses Allow on the card himself: ignored.
    let query = tg
        .fake
        .click(42, card_id, &sam, &allow.callback_data)
        .unwrap();
    let answered = wait_until(Duration::from_secs(30), || {
        callback_answered(&tg.fake, &query)
    });
    assert!(answered, "the click was never handled:\n{}", daemon.log());
    assert_eq!(approvals(&tg), [("telegram:55".into(), "pending".into())]);
    assert!(!members_of(&tg, "team").contains(&"telegram:55".to_string()));
    assert!(
        tg.inbound_texts("team").is_empty(),
        "released by a non-approver"
    );

    // Ann allows: Sam becomes a member and the held message is answered in the group.
    tg.fake
        .click(42, card_id, &ann(), &allow.callback_data)
        .unwrap();
    tg.wait_text(&daemon, &42, "confirming the decision", |t| {
        t == "✅ Allowed: telegram:55."
    });
    tg.wait_text(&daemon, &-1003, "answering Sam", |t| {
        t == format!("echo: {AT_BOT} hi from sam")
    });
    assert_eq!(members_of(&tg, "team"), ["telegram:55"]);
    let grant = &tg.json(&["members", "list", "--agent", "team"])[0];
    assert!(
        grant["chat"].is_string(),
        "an approval lets the sender into that chat only: {grant}"
    );
    assert_eq!(tg.inbound_texts("team"), [format!("{AT_BOT} hi from sam")]);

    // Dan is denied: nothing of his reaches the agent, and he is no member.
    let dan = Person::new(56, "Dan");
    tg.say(-1003, "Team", &dan, &format!("{AT_BOT} let me in"));
    let ok = wait_until(AGENT, || card_in(&tg, 42, "telegram:56").is_some());
    assert!(ok, "no card for Dan: {:?}\n{}", tg.texts(&42), daemon.log());
    let card = card_in(&tg, 42, "telegram:56").unwrap();
    let deny = card
        .buttons
        .iter()
        .flatten()
        .find(|b| b.text == "Deny")
        .unwrap();
    tg.fake
        .click(42, card.message_id.unwrap(), &ann(), &deny.callback_data)
        .unwrap();
    tg.wait_text(&daemon, &42, "confirming the denial", |t| {
        t == "🚫 Denied: telegram:56."
    });
    // Sam, now a member, is answered directly; Dan's held message was dropped before that.
    tg.say(-1003, "Team", &sam, &format!("{AT_BOT} still here"));
    tg.wait_text(&daemon, &-1003, "answering Sam again", |t| {
        t == format!("echo: {AT_BOT} still here")
    });
    assert_eq!(
        tg.inbound_texts("team"),
        [
            format!("{AT_BOT} hi from sam"),
            format!("{AT_BOT} still here")
        ]
    );
    assert!(!tg.texts(&-1003).iter().any(|t| t.contains("let me in")));
    assert_eq!(members_of(&tg, "team"), ["telegram:55"]);
    let grant = &tg.json(&["members", "list", "--agent", "team"])[0];
    assert!(
        grant["chat"].is_string(),
        "an approval lets the sender into that chat only: {grant}"
    );
    let decided = approvals(&tg);
    assert!(
        decided.contains(&("telegram:55".into(), "approved".into())),
        "{decided:?}"
    );
    assert!(
        decided.contains(&("telegram:56".into(), "denied".into())),
        "{decided:?}"
    );
}

fn chat_requests(tg: &Tg) -> Vec<(String, String)> {
    tg.json(&["chats", "requests", "--all"])
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["chat"].as_str().unwrap_or("").to_string(),
                r["status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn button<'a>(card: &'a Sent, text: &str) -> &'a nanoclaw_fake_telegram::SentButton {
    card.buttons
        .iter()
        .flatten()
        .find(|b| b.text == text)
        .unwrap_or_else(|| panic!("no {text:?} button on {:?}", card.buttons))
}

#[test]
fn a_new_group_waits_for_the_owner_to_wire_it_or_ignore_it() {
    if !require_engine("a_new_group_waits_for_the_owner_to_wire_it_or_ignore_it") {
        return;
    }
    let tg = Tg::new();
    tg.agent("team", ECHO);
    let daemon = tg.start();
    first_agent(&tg, &daemon);
    let sam = Person::new(55, "Sam");

    // The bot was added to a group nobody registered; Sam addresses it there. The message
    // is held and Ann gets a card in her DM listing the agents.
    tg.say(-1007, "Project", &sam, &format!("{AT_BOT} hi team"));
    let ok = wait_until(AGENT, || {
        card_in(&tg, 42, "Project (telegram:-1007)").is_some()
    });
    assert!(ok, "no card: {:?}\n{}", tg.texts(&42), daemon.log());
    let card = card_in(&tg, 42, "Project (telegram:-1007)").unwrap();
    assert!(
        shown(&card).contains("Sam (telegram:55)"),
        "{}",
        shown(&card)
    );
    let labels: Vec<&str> = card
        .buttons
        .iter()
        .flatten()
        .map(|b| b.text.as_str())
        .collect();
    assert!(labels.contains(&"team"), "{labels:?}");
    assert_eq!(labels.last(), Some(&"Ignore"), "{labels:?}");
    assert!(
        tg.sent_to(-1007).is_empty(),
        "the group saw {:?}",
        tg.texts(&-1007)
    );
    assert_eq!(
        chat_requests(&tg),
        [("telegram:-1007".into(), "pending".into())]
    );
    let card_id = card.message_id.unwrap();
    let team = button(&card, "team").callback_data.clone();

    // Sam presses "team" on the card himself: ignored.
    let query = tg.fake.click(42, card_id, &sam, &team).unwrap();
    let answered = wait_until(Duration::from_secs(30), || {
        callback_answered(&tg.fake, &query)
    });
    assert!(answered, "the click was never handled:\n{}", daemon.log());
    assert_eq!(
        chat_requests(&tg),
        [("telegram:-1007".into(), "pending".into())]
    );

    // Ann wires it to "team". Sam is not a member, so his held message now asks her about
    // him; she allows him and he is answered in the group.
    tg.fake.click(42, card_id, &ann(), &team).unwrap();
    tg.wait_text(&daemon, &42, "confirming the wiring", |t| {
        t == "✅ Wired Project (telegram:-1007) to team."
    });
    assert_eq!(
        chat_requests(&tg),
        [("telegram:-1007".into(), "wired".into())]
    );
    let wired = tg.json(&["wire", "list", "--chat", "telegram:-1007"]);
    assert_eq!(wired[0]["engage_mode"], "mention", "{wired}");
    let asked = "Sam (telegram:55) wants to talk to team";
    let ok = wait_until(AGENT, || card_in(&tg, 42, asked).is_some());
    assert!(ok, "no sender card: {:?}\n{}", tg.texts(&42), daemon.log());
    let sender_card = card_in(&tg, 42, asked).unwrap();
    tg.fake
        .click(
            42,
            sender_card.message_id.unwrap(),
            &ann(),
            &button(&sender_card, "Allow").callback_data,
        )
        .unwrap();
    tg.wait_text(&daemon, &-1007, "answering Sam", |t| {
        t == format!("echo: {AT_BOT} hi team")
    });
    assert_eq!(tg.inbound_texts("team"), [format!("{AT_BOT} hi team")]);

    // Another group: Ann ignores it. Its message is dropped, and nobody is asked again.
    tg.say(-1008, "Random", &ann(), &format!("{AT_BOT} hello?"));
    let ok = wait_until(AGENT, || {
        card_in(&tg, 42, "Random (telegram:-1008)").is_some()
    });
    assert!(ok, "no card: {:?}\n{}", tg.texts(&42), daemon.log());
    let card = card_in(&tg, 42, "Random (telegram:-1008)").unwrap();
    tg.fake
        .click(
            42,
            card.message_id.unwrap(),
            &ann(),
            &button(&card, "Ignore").callback_data,
        )
        .unwrap();
    tg.wait_text(&daemon, &42, "confirming the choice", |t| {
        t == "🔕 Ignoring Random (telegram:-1008)."
    });
    tg.say(-1008, "Random", &ann(), &format!("{AT_BOT} still nobody?"));
    let recorded = wait_until(Duration::from_secs(30), || {
        tg.json(&["dropped"])
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["reason"] == "chat_ignored")
    });
    assert!(recorded, "no drop recorded:\n{}", daemon.log());
    let cards = tg
        .sent_to(42)
        .iter()
        .filter(|s| shown(s).contains("telegram:-1008") && !s.buttons.is_empty())
        .count();
    assert_eq!(cards, 1, "asked once");
    assert!(tg.sent_to(-1008).is_empty(), "{:?}", tg.texts(&-1008));
    assert!(
        chat_requests(&tg).contains(&("telegram:-1008".into(), "ignored".into())),
        "{:?}",
        chat_requests(&tg)
    );
}

#[test]
fn a_strict_chat_drops_unknown_senders_and_records_it() {
    if !require_engine("a_strict_chat_drops_unknown_senders_and_records_it") {
        return;
    }
    let tg = Tg::new();
    tg.agent("crew", ECHO);
    tg.group(-1004, "Crew", "strict");
    tg.ok(&["wire", "add", "telegram:-1004", "crew"]);
    tg.ok(&["members", "add", "telegram:42", "crew"]);
    let daemon = tg.start();
    let stranger = Person::new(57, "Stranger");

    tg.say(-1004, "Crew", &stranger, &format!("{AT_BOT} anyone?"));
    let recorded = wait_until(Duration::from_secs(30), || {
        !tg.json(&["dropped"]).as_array().unwrap().is_empty()
    });
    assert!(recorded, "no dropped-message record:\n{}", daemon.log());
    let dropped = tg.json(&["dropped"]);
    let list = dropped.as_array().unwrap();
    assert_eq!(list.len(), 1, "{dropped}");
    let d = &list[0];
    assert_eq!(d["channel_type"], "telegram");
    assert_eq!(d["platform_id"], "-1004");
    assert_eq!(d["user_id"], "telegram:57");
    assert_eq!(d["sender_name"], "Stranger");
    assert_eq!(d["reason"], "unknown_sender_strict");
    assert_eq!(
        d["agent_group_id"].as_str(),
        Some(tg.agent_id("crew").as_str())
    );
    assert_eq!(d["message_count"], 1);

    // A member is answered in the same chat, so the wiring works: the drop was the policy.
    tg.say(-1004, "Crew", &ann(), &format!("{AT_BOT} status?"));
    tg.wait_text(&daemon, &-1004, "answering the member", |t| {
        t == format!("echo: {AT_BOT} status?")
    });
    assert_eq!(tg.texts(&-1004).len(), 1, "{:?}", tg.texts(&-1004));
    assert_eq!(tg.inbound_texts("crew"), [format!("{AT_BOT} status?")]);
    assert!(
        tg.json(&["approvals", "list", "--all"])
            .as_array()
            .unwrap()
            .is_empty()
    );
}

#[test]
fn the_walkthrough_script_reaches_the_welcome_dm() {
    if !require_engine("the_walkthrough_script_reaches_the_welcome_dm") {
        return;
    }
    let image = harness::image();
    let script = common::workspace_root().join("scripts/walkthrough-telegram.sh");
    let out = Command::new("bash")
        .arg(&script)
        .env("CARGO_TARGET_DIR", common::target_dir())
        .env("NANOCLAW_IMAGE", image)
        // Without the periodic sweep a reply can only arrive because the daemon noticed
        // it: the script runs with a relative data dir, as an operator does.
        .env("NANOCLAW_SWEEP_SECS", "3600")
        .env_remove("NANOCLAW_HOME")
        .env_remove("NANOCLAW_PLUGINS")
        .env_remove("NANOCLAW_LOG")
        .output()
        .expect("run the walkthrough");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "walkthrough failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    assert!(stdout.contains("WALKTHROUGH OK"), "{stdout}\n{stderr}");
}
