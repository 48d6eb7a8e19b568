//! Getting from nothing to an agent that talks to you: `nanoclaw pair` (prove which chat is
//! yours; the first pairer becomes owner) and `nanoclaw init-first-agent` (create your DM
//! agent and have it greet you).

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;

use nanoclaw_schema::session::InKind;
use nanoclaw_schema::session::content::{ChatIn, SYSTEM_SENDER};

use super::output::Format;
use crate::config::{self, Paths};
use crate::control::{self, Request};
use crate::db::Db;
use crate::ids::{ChannelName, PlatformId, UserId};
use crate::pairing;
use crate::sessions::SessionStore;
use crate::sessions::queue::{self, Queued};
use crate::store::agent_groups::{self, AgentProvider, GroupFolder, NewAgentGroup};
use crate::store::messaging_groups::{self, NewMessagingGroup, UnknownSenderPolicy};
use crate::store::roles::{self, Role, Scope};
use crate::store::wirings::{self, SessionMode, WiringRules};
use crate::store::{members, users};

#[derive(Debug, Args)]
pub struct PairArgs {
    /// The channel to pair on, e.g. telegram.
    pub channel: ChannelName,
    /// How long the code stays valid, in seconds.
    #[arg(long, default_value_t = pairing::DEFAULT_TTL.as_secs())]
    pub ttl_secs: u64,
    /// Print the code and exit instead of waiting for it to be used.
    #[arg(long)]
    pub no_wait: bool,
    /// Revoke every pending code of the channel instead.
    #[arg(long, conflicts_with_all = ["no_wait"])]
    pub revoke: bool,
}

/// `nanoclaw pair <channel>`: prints a code, waits until someone sends it to the bot.
pub fn pair(paths: &Paths, format: Format, args: PairArgs) -> anyhow::Result<ExitCode> {
    let db = Db::open(&paths.db()).with_context(|| format!("open {}", paths.db().display()))?;
    if args.revoke {
        let n = db.write(|c| pairing::revoke_pending(c, &args.channel))?;
        println!("revoked {n} pending {} pairing code(s)", args.channel);
        return Ok(ExitCode::SUCCESS);
    }
    let code = db
        .write(|c| pairing::create(c, &args.channel, Duration::from_secs(args.ttl_secs.max(30))))?;
    let daemon_up = control::request_blocking(&paths.control_socket(), &Request::Health)
        .ok()
        .flatten()
        .is_some();
    match format {
        Format::Json => println!(
            "{}",
            serde_json::json!({"code": code.code, "expires_at": code.expires_at})
        ),
        Format::Table => {
            println!(
                "Send this code to your {} bot from the chat you want to pair:\n",
                args.channel
            );
            println!("    {}\n", code.code);
            println!(
                "(in a group, you may need to address the bot: @yourbot {})",
                code.code
            );
            println!("It expires at {}.", code.expires_at);
            if !daemon_up {
                println!(
                    "\nwarning: the daemon is not running; start `nanoclaw run` so the bot can receive the code."
                );
            }
        }
    }
    if args.no_wait {
        return Ok(ExitCode::SUCCESS);
    }
    println!("Waiting for the code…");
    loop {
        std::thread::sleep(Duration::from_millis(500));
        let Some(state) = db.read(|c| pairing::status(c, &code.code))? else {
            bail!("the pairing code vanished")
        };
        match state.status.as_str() {
            "pending" => continue,
            "consumed" => {
                let user = state.user_id.unwrap_or_default();
                println!("PAIRED_USER_ID={user}");
                println!(
                    "PAIRED_CHAT={}:{}",
                    state.channel_type,
                    state.platform_id.unwrap_or_default()
                );
                println!(
                    "OWNER={}",
                    if state.made_owner == Some(true) {
                        "yes"
                    } else {
                        "no"
                    }
                );
                return Ok(ExitCode::SUCCESS);
            }
            other => {
                eprintln!(
                    "the code was {other} ({} wrong code(s) were tried); run `nanoclaw pair {}` again",
                    state.failed_attempts, args.channel
                );
                return Ok(ExitCode::from(2));
            }
        }
    }
}

#[derive(Debug, Args)]
pub struct InitFirstAgentArgs {
    /// The user the agent is for, e.g. telegram:6037840640 (from `nanoclaw pair`).
    #[arg(long)]
    pub user: UserId,
    /// The user's display name.
    #[arg(long)]
    pub name: String,
    /// The DM chat's id (`<id>` or `<channel>:<id>`). By default the running daemon finds it: the user's handle
    /// on channels that address users directly (telegram, whatsapp, imessage, matrix,
    /// email, cli), a DM it opens through the plugin on the others.
    #[arg(long)]
    pub chat: Option<String>,
    /// What the user becomes: owner (if the install has none yet), admin of the new agent,
    /// or a plain member.
    #[arg(long, default_value = "owner")]
    pub role: String,
    /// Provider for the new agent (default: the daemon's).
    #[arg(long)]
    pub provider: Option<AgentProvider>,
    /// The name the agent calls itself.
    #[arg(long, default_value = "NanoClaw")]
    pub assistant_name: String,
    /// The welcome instruction given to the agent.
    #[arg(long)]
    pub welcome: Option<String>,
}

/// The default mock script of a first agent: greets on the welcome, then echoes.
const FIRST_AGENT_MOCK: &str = r#"# Replies of the mock provider (no account or API key needed).
# Rules are tried in order against the newest message; the first match answers.
# Switch this agent to Claude with:  nanoclaw groups set <folder> --provider claude

[[rule]]
match = "(?i)set you up as their personal agent"
reply = "Hi! I'm {assistant}, your NanoClaw agent (running the mock provider). Say anything and I'll echo it back, or try \"remind me every minute\"."

# The mock calls the same tools Claude gets: here, a scheduled task (see `nanoclaw tasks list`).
[[rule]]
match = "(?i)^remind me every minute"
tools = [{ name = "schedule_task", args = { prompt = "Remind {sender}: {text}", every = "1m" } }]
reply = "Okay: {tool_result}"

[[rule]]
match = "(?i)^Remind .*: remind me"
reply = "Reminder! (stop it with: nanoclaw tasks list, then nanoclaw tasks cancel <id>)"

[[rule]]
match = ".*"
reply = "Mock agent: you said \"{text}\""
"#;

/// The user's DM chat id, from the running daemon: it opens the DM through the channel's
/// plugin when the platform needs that (Discord, Slack, ...), so the user need not have
/// written to the bot. Without a daemon, the user's handle, which is the DM's id on
/// channels that address users directly.
fn user_dm(paths: &Paths, user: &UserId) -> anyhow::Result<PlatformId> {
    let asked = control::request_blocking(
        &paths.control_socket(),
        &Request::UserDm { user: user.clone() },
    );
    match asked {
        Ok(Some(r)) if r.ok => {
            let id = r
                .data
                .as_ref()
                .and_then(|d| d["platform_id"].as_str())
                .context("the daemon answered without a DM chat id")?;
            Ok(PlatformId::parse(id)?)
        }
        Ok(Some(r)) => bail!(
            "no DM with {user}: {}; or pass --chat <DM chat id>",
            r.error.unwrap_or_default()
        ),
        _ => {
            eprintln!(
                "note: `nanoclaw run` is not running, so the DM is taken to be {user}'s id; \
                 on channels that open DMs (Discord, Slack, Teams, Webex, Google Chat) start \
                 the daemon first or pass --chat"
            );
            Ok(PlatformId::parse(user.handle())?)
        }
    }
}

/// `nanoclaw init-first-agent`: the operator's own DM agent, wired and greeting.
pub fn init_first_agent(paths: &Paths, args: InitFirstAgentArgs) -> anyhow::Result<ExitCode> {
    let db = Db::open(&paths.db()).with_context(|| format!("open {}", paths.db().display()))?;
    let sessions = SessionStore::new(paths.sessions()).with_owner(config::session_owner());
    let channel: ChannelName = args.user.channel();
    let role = args.role.as_str();
    if !["owner", "admin", "member"].contains(&role) {
        bail!("--role must be owner, admin or member");
    }
    let display = args.name.trim();
    if display.is_empty() {
        bail!("--name must not be empty");
    }
    db.write(|c| users::upsert(c, &args.user, Some(display)))?;
    let platform_id = match args.chat.as_deref() {
        // `nanoclaw pair` prints the chat as `<channel>:<id>`; either form is taken.
        Some(chat) => PlatformId::parse(chat.strip_prefix(&format!("{channel}:")).unwrap_or(chat))?,
        None => user_dm(paths, &args.user)?,
    };
    let folder = GroupFolder::from_name(&format!("dm-with-{display}"));

    let (group, chat, session, owner_note) = db.write(|c| {
        users::upsert(c, &args.user, Some(display))?;
        let group = match agent_groups::resolve(c, folder.as_str()) {
            Ok(g) => g,
            Err(crate::Error::NotFound { .. }) => agent_groups::create(
                c,
                NewAgentGroup {
                    name: format!("DM with {display}"),
                    folder: Some(folder.clone()),
                    provider: args.provider,
                    assistant_name: Some(args.assistant_name.clone()),
                },
            )?,
            Err(e) => return Err(e),
        };
        let owner_note = match role {
            "owner" if roles::is_owner(c, &args.user)? => "already the owner".to_string(),
            "owner" if roles::has_any_owner(c)? => {
                members::add(c, &args.user, &group.id, None)?;
                "not made owner: this install already has one (they were made a member)".to_string()
            }
            "owner" => {
                roles::grant(c, &args.user, Role::Owner, &Scope::Global, None)?;
                "now the owner".to_string()
            }
            "admin" => {
                roles::grant(
                    c,
                    &args.user,
                    Role::Admin,
                    &Scope::Group(group.id.clone()),
                    None,
                )?;
                format!("admin of {}", group.folder)
            }
            _ => {
                members::add(c, &args.user, &group.id, None)?;
                format!("member of {}", group.folder)
            }
        };
        let (chat, _) = messaging_groups::get_or_create(
            c,
            &NewMessagingGroup {
                channel_type: channel.clone(),
                platform_id: platform_id.clone(),
                name: Some(display.to_string()),
                is_group: false,
                unknown_sender_policy: UnknownSenderPolicy::Strict,
            },
        )?;
        if wirings::find(c, &chat.id, &group.id)?.is_none() {
            wirings::create(c, &chat.id, &group.id, WiringRules::for_chat(false))?;
        }
        let (session, _) = sessions.resolve(c, &group.id, &chat, None, SessionMode::Shared)?;
        Ok((group, chat, session, owner_note))
    })?;

    for dir in [
        paths.groups().join(group.folder.as_str()),
        paths.agent_config(group.folder.as_str()),
    ] {
        std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    }
    let mock = paths.agent_config(group.folder.as_str()).join("mock.toml");
    if !mock.exists() {
        std::fs::write(&mock, FIRST_AGENT_MOCK)
            .with_context(|| format!("write {}", mock.display()))?;
    }

    let welcome = args.welcome.unwrap_or_else(|| {
        format!(
            "{display} ({}) has just set you up as their personal agent on {channel}. \
             Greet them with a short, friendly message and say what you can help with.",
            args.user
        )
    });
    let content = ChatIn {
        text: welcome,
        sender_id: Some(SYSTEM_SENDER.to_string()),
        sender_name: Some("NanoClaw".to_string()),
        is_mention: true,
        ..Default::default()
    };
    let content = serde_json::to_string(&content)?;
    let now = nanoclaw_schema::time::now();
    let id = crate::ids::generate("welcome");
    // Queued in the central DB: the daemon writes it into the session (now, when poked
    // below, or at its next start).
    db.write(|c| {
        queue::push(
            c,
            &session.id,
            &Queued {
                channel_type: Some(channel.to_string()),
                platform_id: Some(platform_id.to_string()),
                ..Queued::new(id.clone(), InKind::Chat, now.clone(), content.clone())
            },
        )
    })?;

    println!("agent group: {} ({})", group.name, group.folder);
    println!("user: {} — {owner_note}", args.user);
    println!("chat: {} wired to {}", chat.address(), group.folder);
    let poked = control::request_blocking(
        &paths.control_socket(),
        &Request::Wake {
            session: session.id.clone(),
        },
    );
    match poked {
        Ok(Some(r)) if r.ok => {
            println!("the agent is starting and will greet {display} in a moment")
        }
        _ => println!(
            "the welcome waits in the agent's inbox; start `nanoclaw run` and the agent will greet {display}"
        ),
    }
    Ok(ExitCode::SUCCESS)
}
