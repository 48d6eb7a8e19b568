//! The journey every channel's end-to-end tests share: Ann pairs with the bot, becomes the
//! owner and gets her first agent, and the test waits for what the bot posts. A test's
//! platform wrapper (an [`Install`] and the platform's fake) says how the fake lists the
//! bot's messages ([`Platform`]); how a user writes stays in the test file.

use std::fmt::Display;
use std::ops::Deref;
use std::time::Duration;

use super::{Daemon, Install, wait_until};

/// How long anything involving a container start may take (2 cores in CI, debug builds).
pub const AGENT: Duration = Duration::from_secs(90);

/// Starts the daemon (event-driven) with its webhook server on `port`, and waits until the
/// server answers and `ready` (the plugin has called its fake) holds.
pub fn start_with_webhooks(
    install: &Install,
    plugins_toml: &str,
    port: u16,
    ready: impl Fn() -> bool,
) -> Daemon {
    let daemon = Daemon::start_event_driven(
        &install.data,
        plugins_toml,
        &["--webhook-listen", &format!("127.0.0.1:{port}")],
    );
    let up = wait_until(Duration::from_secs(30), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() && ready()
    });
    assert!(up, "the webhook server never came up:\n{}", daemon.log());
    daemon
}

/// The pairing code (`XXXX-XXXX`) in what `nanoclaw pair` printed.
pub fn find_code(text: &str) -> Option<String> {
    text.split_whitespace()
        .map(|w| w.trim_matches(|c: char| !c.is_ascii_alphanumeric() && c != '-'))
        .find(|w| {
            w.len() == 9
                && w.as_bytes()[4] == b'-'
                && w.chars()
                    .enumerate()
                    .all(|(i, c)| i == 4 || c.is_ascii_uppercase() || c.is_ascii_digit())
        })
        .map(str::to_string)
}

/// An install with one channel, and that platform's fake: what the bot posted where.
pub trait Platform: Deref<Target = Install> {
    /// How the fake names a chat.
    type Chat: Display + ?Sized;
    /// A message the bot posted, as the fake recorded it.
    type Posted;

    /// The bot's messages in `chat`, oldest first.
    fn posted(&self, chat: &Self::Chat) -> Vec<Self::Posted>;

    /// What a user sees of a posted message.
    fn shown(m: &Self::Posted) -> String;

    /// What a wait that saw nothing matching in `chat` says, before the texts it saw.
    fn missed(what: &str, chat: &Self::Chat) -> String {
        format!("no message {what} in {chat}; it got")
    }

    /// What a user sees in `chat` of the bot's messages, oldest first.
    fn texts(&self, chat: &Self::Chat) -> Vec<String> {
        self.posted(chat).iter().map(Self::shown).collect()
    }

    /// Waits (up to [`AGENT`]) for the bot's message in `chat` that satisfies `f` (`what`
    /// names it); fails with what the chat got and the daemon's log.
    fn wait_message(
        &self,
        daemon: &Daemon,
        chat: &Self::Chat,
        what: &str,
        f: impl Fn(&Self::Posted) -> bool,
    ) -> Self::Posted {
        let mut found = None;
        let ok = wait_until(AGENT, || {
            found = self.posted(chat).into_iter().find(|m| f(m));
            found.is_some()
        });
        assert!(
            ok,
            "{} {:?}\n{}",
            Self::missed(what, chat),
            self.texts(chat),
            daemon.log()
        );
        found.unwrap()
    }

    /// Like [`Platform::wait_message`], on what a user sees of the message.
    fn wait_text(&self, daemon: &Daemon, chat: &Self::Chat, what: &str, f: impl Fn(&str) -> bool) {
        self.wait_message(daemon, chat, what, |m| f(&Self::shown(m)));
    }
}

/// `nanoclaw pair <channel> --no-wait`; `say` writes the code as Ann does; waits for the
/// bot's confirmation in `chat`.
pub fn pair<P: Platform>(
    p: &P,
    daemon: &Daemon,
    channel: &str,
    chat: &P::Chat,
    say: impl FnOnce(&str),
) {
    let printed = p.ok(&["pair", channel, "--no-wait"]);
    let code = find_code(&printed).unwrap_or_else(|| panic!("no code in {printed:?}"));
    say(&code);
    p.wait_message(daemon, chat, "confirming the pairing", |m| {
        P::shown(m).starts_with("Paired!")
    });
}

/// `nanoclaw init-first-agent` for Ann (`user`, as `<channel>:<id>`), with `--chat` when
/// given; checks her DM agent is wired and returns what the command printed.
pub fn init_first_agent(install: &Install, user: &str, chat: Option<&str>) -> String {
    let mut args = vec!["init-first-agent", "--user", user];
    if let Some(chat) = chat {
        args.extend(["--chat", chat]);
    }
    args.extend(["--name", "Ann"]);
    let out = install.ok(&args);
    assert!(out.contains("wired to dm-with-ann"), "{out}");
    out
}

/// Waits for the first agent's welcome in `dm`.
pub fn welcome<P: Platform>(p: &P, daemon: &Daemon, dm: &P::Chat) -> P::Posted {
    p.wait_message(daemon, dm, "welcoming Ann", |m| {
        P::shown(m).contains("your NanoClaw agent")
    })
}

/// Ann on a platform where she pairs in her DM with the bot.
pub struct Owner<'a, C: ?Sized> {
    /// The channel type (`slack`).
    pub channel: &'a str,
    /// Her user id there.
    pub id: &'a str,
    /// Her DM as `init-first-agent --chat` names it.
    pub chat: &'a str,
    /// Her DM as the fake lists the bot's messages.
    pub dm: &'a C,
}

/// Ann pairs in her DM (`say` writes the code there as she does) and becomes the owner,
/// then gets her DM agent from `init-first-agent --chat`, as the channel's skill says; waits
/// for its welcome.
pub fn first_agent<P: Platform>(
    p: &P,
    daemon: &Daemon,
    ann: &Owner<P::Chat>,
    say: impl FnOnce(&str),
) {
    pair(p, daemon, ann.channel, ann.dm, say);
    init_first_agent(p, &format!("{}:{}", ann.channel, ann.id), Some(ann.chat));
    welcome(p, daemon, ann.dm);
}

/// Every approval (`approvals list --all`) as (whom it is about, status).
pub fn approvals(install: &Install) -> Vec<(String, String)> {
    install
        .json(&["approvals", "list", "--all"])
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["subject_user_id"].as_str().unwrap_or("").to_string(),
                a["status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Checks a message nobody addressed the agent with was dropped as such.
pub fn assert_unengaged_dropped(install: &Install) {
    let dropped = install.json(&["dropped"]);
    assert!(
        dropped
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["reason"] == "no_agent_engaged"),
        "the unmentioned message was not for the agent: {dropped}"
    );
}

/// `n` numbered words (`word0001` …), a blank line after every 25th: a long reply whose
/// order and losses show.
pub fn numbered_words(n: usize) -> String {
    let mut long = String::new();
    for i in 1..=n {
        long.push_str(&format!("word{i:04}"));
        long.push_str(if i % 25 == 0 { "\n\n" } else { " " });
    }
    long.trim_end().to_string()
}
