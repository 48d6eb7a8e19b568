//! The `nanoclaw` command line: the daemon and the operator's tools over the stores.

mod admin;
pub mod output;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::Paths;
use crate::ids::{ChatAddress, UserId};
use crate::store::agent_groups::AgentProvider;
use crate::store::messaging_groups::UnknownSenderPolicy;
use crate::store::roles::Role;
use crate::store::wirings::{EngageMode, IgnoredMessagePolicy, SenderScope, SessionMode};
use output::Format;

#[derive(Debug, Parser)]
#[command(
    name = "nanoclaw",
    version,
    about = "NanoClaw: chat platforms to AI agents in sandboxed containers"
)]
pub struct Cli {
    /// Data directory: database, sessions, agent folders, secrets (.env).
    #[arg(long, global = true, env = "NANOCLAW_HOME", default_value = "data")]
    pub data_dir: PathBuf,

    /// Print machine-readable JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create or upgrade the database schema (every command does this on its own too).
    Migrate,
    /// Platform identities (`<channel>:<handle>`).
    #[command(subcommand)]
    Users(UsersCmd),
    /// Owner and admin grants.
    #[command(subcommand)]
    Roles(RolesCmd),
    /// Unprivileged access to an agent group.
    #[command(subcommand)]
    Members(MembersCmd),
    /// Agent groups (agent identities).
    #[command(subcommand)]
    Groups(GroupsCmd),
    /// Chats (messaging groups) and their unknown-sender policy.
    #[command(subcommand)]
    Chats(ChatsCmd),
    /// Which agents a chat reaches, and how.
    #[command(subcommand)]
    Wire(WireCmd),
    /// Where an agent may send (its routing map and access list).
    #[command(subcommand)]
    Destinations(DestinationsCmd),
    /// Messages that reached no agent.
    Dropped(DroppedArgs),
    /// Conversation sessions.
    #[command(subcommand)]
    Sessions(SessionsCmd),
}

#[derive(Debug, Subcommand)]
pub enum UsersCmd {
    List,
    /// Add a user (or rename one).
    Add {
        /// e.g. telegram:6037840640
        user: UserId,
        #[arg(long)]
        name: Option<String>,
    },
    /// Remove a user with their roles and memberships.
    Remove {
        user: UserId,
    },
}

#[derive(Debug, Subcommand)]
pub enum RolesCmd {
    List {
        #[arg(long)]
        user: Option<UserId>,
    },
    /// Grant owner (global) or admin (global, or of one agent with --agent).
    Grant {
        user: UserId,
        role: Role,
        /// Scope an admin grant to this agent group (id or folder).
        #[arg(long)]
        agent: Option<String>,
    },
    Revoke {
        user: UserId,
        role: Role,
        #[arg(long)]
        agent: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum MembersCmd {
    List {
        #[arg(long)]
        agent: Option<String>,
    },
    Add {
        user: UserId,
        /// Agent group id or folder.
        agent: String,
    },
    Remove {
        user: UserId,
        agent: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum GroupsCmd {
    List,
    Create {
        name: String,
        /// Folder under groups/ (default: derived from the name).
        #[arg(long)]
        folder: Option<String>,
        #[arg(long)]
        provider: Option<AgentProvider>,
        /// The name the agent calls itself.
        #[arg(long)]
        assistant_name: Option<String>,
    },
    /// Details of one agent group: wirings, destinations, admins.
    Show {
        agent: String,
    },
    /// Change settings of an agent group.
    Set {
        agent: String,
        /// mock | claude | default (use the host's default).
        #[arg(long)]
        provider: Option<String>,
        #[arg(long)]
        assistant_name: Option<String>,
    },
    /// Delete an agent group (its folder on disk is kept).
    Delete {
        agent: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum ChatsCmd {
    List,
    /// Register a chat by its address.
    Add {
        /// <channel>:<platform id>, e.g. telegram:-1001234
        chat: ChatAddress,
        #[arg(long)]
        name: Option<String>,
        /// It is a group chat (default: a DM).
        #[arg(long)]
        group: bool,
        #[arg(long, default_value = "strict")]
        policy: UnknownSenderPolicy,
    },
    /// Set what happens to messages from unknown senders: strict | request_approval | public.
    Policy {
        chat: String,
        policy: UnknownSenderPolicy,
    },
    Rename {
        chat: String,
        name: String,
    },
    /// Remove a chat and its wirings.
    Remove {
        chat: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum WireCmd {
    List {
        #[arg(long)]
        chat: Option<String>,
        #[arg(long)]
        agent: Option<String>,
    },
    /// Wire a chat to an agent (also gives the agent a destination for the chat).
    Add(WireArgs),
    /// Unwire a chat from an agent (also removes the agent's destination for it).
    Remove { chat: String, agent: String },
}

#[derive(Debug, Args)]
pub struct WireArgs {
    /// Chat id or <channel>:<platform id>.
    pub chat: String,
    /// Agent group id or folder.
    pub agent: String,
    /// pattern | mention | mention-sticky (default: pattern in DMs, mention in groups).
    #[arg(long)]
    pub engage: Option<EngageMode>,
    /// Regex for pattern mode (default: every message).
    #[arg(long)]
    pub pattern: Option<String>,
    #[arg(long, default_value = "all")]
    pub sender_scope: SenderScope,
    /// What to do with messages that do not engage: drop | accumulate.
    #[arg(long, default_value = "drop")]
    pub ignored: IgnoredMessagePolicy,
    #[arg(long, default_value = "shared")]
    pub session_mode: SessionMode,
    #[arg(long, default_value_t = 0)]
    pub priority: i64,
}

#[derive(Debug, Subcommand)]
pub enum DestinationsCmd {
    List {
        agent: String,
    },
    /// Let an agent send to a chat or another agent under a local name.
    Add {
        agent: String,
        name: String,
        #[arg(
            long,
            conflicts_with = "to_agent",
            required_unless_present = "to_agent"
        )]
        chat: Option<String>,
        #[arg(long = "to-agent")]
        to_agent: Option<String>,
    },
    Remove {
        agent: String,
        name: String,
    },
}

#[derive(Debug, Args)]
pub struct DroppedArgs {
    #[arg(long, default_value_t = 50)]
    pub limit: u32,
    /// Forget every recorded drop.
    #[arg(long)]
    pub clear: bool,
}

#[derive(Debug, Subcommand)]
pub enum SessionsCmd {
    List {
        #[arg(long)]
        agent: Option<String>,
        /// Include closed sessions.
        #[arg(long)]
        all: bool,
    },
    /// Close a session; the next message starts a fresh one.
    Close { session: String },
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    let paths = Paths::new(&cli.data_dir);
    let format = if cli.json {
        Format::Json
    } else {
        Format::Table
    };
    admin::run(&paths, format, cli.command)
}
