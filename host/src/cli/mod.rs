//! The `nanoclaw` command line: the daemon and the operator's tools over the stores.

mod admin;
pub mod chat;
mod doctor;
mod onboarding;
pub mod output;
mod plugins;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::config::Paths;
use crate::container::NetworkMode;
use crate::daemon::RunOptions;
use crate::ids::{ChatAddress, UserId};
use crate::store::agent_groups::AgentProvider;
use crate::store::messaging_groups::UnknownSenderPolicy;
use crate::store::roles::Role;
use crate::store::wirings::{EngageMode, IgnoredMessagePolicy, SenderScope, SessionMode};
use crate::supervisor::SupervisorConfig;
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
    /// Run the daemon: channel plugins, router, agent containers, delivery.
    Run(RunArgs),
    /// Talk to your agent from this terminal (the local `cli` channel of a running daemon).
    Chat(chat::ChatArgs),
    /// Channel plugins configured in plugins.toml.
    #[command(subcommand)]
    Plugins(PluginsCmd),
    /// Print a pairing code and wait for it to be sent to the bot (first pairer = owner).
    Pair(onboarding::PairArgs),
    /// Create a user's DM agent, wire it, and have it greet them.
    InitFirstAgent(onboarding::InitFirstAgentArgs),
    /// Check the install (engine, image, plugins, credentials, permissions) and say what to fix.
    Doctor {
        #[arg(long, env = "NANOCLAW_PLUGINS", default_value = "plugins.toml")]
        plugins: PathBuf,
        #[arg(long, env = "NANOCLAW_IMAGE", default_value = "nanoclaw-agent:latest")]
        image: String,
        #[arg(long, env = "NANOCLAW_CLAUDE_IMAGE", default_value = crate::supervisor::DEFAULT_CLAUDE_IMAGE)]
        claude_image: String,
        /// Also send the model API one minimal request to see that it accepts the credential.
        #[arg(long)]
        credential: bool,
    },
    /// Senders waiting for approval.
    #[command(subcommand)]
    Approvals(ApprovalsCmd),
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
    /// Model tokens used, by day and agent (what the model proxy recorded).
    Usage(UsageArgs),
    /// Scheduled tasks agents set up: list them with their failures; pause, resume, cancel.
    #[command(subcommand)]
    Tasks(TasksCmd),
}

#[derive(Debug, Subcommand)]
pub enum TasksCmd {
    /// Tasks with their agent, session, status, next run, recurrence, failures in a row
    /// (with the last error) and prompt. A task that failed 3 times in a row is `paused`.
    List {
        /// Only this agent group (id or folder).
        #[arg(long)]
        agent: Option<String>,
        /// Only tasks in this status: active | paused | completed | cancelled.
        #[arg(long)]
        status: Option<crate::scheduling::TaskStatus>,
    },
    /// Stop an active task from running until it is resumed.
    Pause {
        /// The task's id (see `nanoclaw tasks list`).
        task: String,
    },
    /// Let a paused task run again; its failure count starts over.
    Resume {
        /// The task's id (see `nanoclaw tasks list`).
        task: String,
    },
    /// Stop a task for good.
    Cancel {
        /// The task's id (see `nanoclaw tasks list`).
        task: String,
    },
}

#[derive(Debug, Args)]
pub struct UsageArgs {
    /// How many days back, today included.
    #[arg(long, default_value_t = 7)]
    pub days: u32,
    /// Only this agent group (id or folder).
    #[arg(long)]
    pub agent: Option<String>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The plugin configuration.
    #[arg(long, env = "NANOCLAW_PLUGINS", default_value = "plugins.toml")]
    pub plugins: PathBuf,
    /// Image agent containers run (built locally by container/build.sh).
    #[arg(long, env = "NANOCLAW_IMAGE", default_value = "nanoclaw-agent:latest")]
    pub image: String,
    /// Image of Claude agents that name none (built by container/build.sh --claude).
    #[arg(long, env = "NANOCLAW_CLAUDE_IMAGE", default_value = crate::supervisor::DEFAULT_CLAUDE_IMAGE)]
    pub claude_image: String,
    /// Provider for agent groups that set none: mock (no account needed), claude or openai.
    #[arg(long, env = "NANOCLAW_PROVIDER", default_value = "mock")]
    pub provider: AgentProvider,
    /// Container network: none (default), bridge, or a named Docker network.
    #[arg(long, env = "NANOCLAW_CONTAINER_NETWORK", default_value = "none")]
    pub network: String,
    /// Memory limit of each agent container, in MiB.
    #[arg(long, env = "NANOCLAW_CONTAINER_MEMORY_MB", default_value_t = 1024)]
    pub memory_mb: u64,
    /// CPUs each agent container may use (so no agent can take the whole machine).
    #[arg(long, env = "NANOCLAW_CONTAINER_CPUS", default_value_t = 1.0)]
    pub cpus: f64,
    /// Stop an agent container after this many idle seconds.
    #[arg(long, env = "NANOCLAW_IDLE_TIMEOUT_SECS", default_value_t = 1800)]
    pub idle_timeout_secs: u64,
    /// Agent containers running at once; further sessions wait their turn, in order.
    #[arg(long, env = "NANOCLAW_MAX_CONTAINERS", default_value_t = 8)]
    pub max_containers: usize,
    /// The longest a container may work on its messages before it is stopped (a turn), in
    /// seconds. Its heartbeat does not extend it.
    #[arg(long, env = "NANOCLAW_MAX_TURN_SECS", default_value_t = 1800)]
    pub max_turn_secs: u64,
    /// Where the webhook server listens (only started if a plugin takes webhooks).
    #[arg(
        long,
        env = "NANOCLAW_WEBHOOK_LISTEN",
        default_value = "127.0.0.1:3000"
    )]
    pub webhook_listen: std::net::SocketAddr,
    /// Seconds between checks of running containers.
    #[arg(long, env = "NANOCLAW_SWEEP_SECS", default_value_t = 30)]
    pub sweep_secs: u64,
    /// For tests only: the first backoff of a failed scheduled task, in milliseconds (the
    /// longest is 8 times that). Default: one minute, doubling up to an hour.
    #[arg(long, env = "NANOCLAW_TASK_BACKOFF_MS", hide = true)]
    pub task_backoff_ms: Option<u64>,
}

#[derive(Debug, Subcommand)]
pub enum PluginsCmd {
    /// Every configured plugin: whether it loads, its version, ABI and capabilities, and its
    /// live health when the daemon runs.
    List {
        #[arg(long, env = "NANOCLAW_PLUGINS", default_value = "plugins.toml")]
        plugins: PathBuf,
    },
    /// Preflight every enabled plugin (load and create, without starting); exits 1 on failure.
    Check {
        #[arg(long, env = "NANOCLAW_PLUGINS", default_value = "plugins.toml")]
        plugins: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum ApprovalsCmd {
    /// Pending requests (all with --all): unknown senders, and agents asking for packages or
    /// MCP servers.
    List {
        #[arg(long)]
        all: bool,
    },
    /// Let the sender in (they become a member) and release their held messages; or carry
    /// out an agent's request.
    Allow { approval: String },
    /// Refuse the sender (their held messages are dropped), or an agent's request.
    Deny { approval: String },
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
        /// mock | claude | openai | default (use the host's default).
        #[arg(long)]
        provider: Option<String>,
        #[arg(long)]
        assistant_name: Option<String>,
        /// The image its containers run (built locally), or `default` for the host's.
        #[arg(long)]
        image: Option<String>,
        /// The model its provider asks for (e.g. claude-sonnet-4-5, llama3.2), or `default`.
        #[arg(long)]
        model: Option<String>,
        /// The most model tokens it may use per UTC day (input, output and cache together),
        /// or `off`. Over it, its requests are refused and the chat is told why.
        #[arg(long)]
        daily_tokens: Option<String>,
    },
    /// Delete an agent group (its folder on disk is kept).
    Delete {
        agent: String,
    },
    /// Ask for a host directory inside the agent's containers (at /workspace/extra/<name>).
    /// Only paths under a root of data/mount-allowlist.toml are mounted; read-only unless
    /// both this and the allowlist say read-write.
    Mount {
        agent: String,
        host_path: PathBuf,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        read_write: bool,
    },
    /// Remove an extra mount by name.
    Unmount {
        agent: String,
        name: String,
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
    /// New group chats waiting for an owner to wire them to an agent (or ignore them).
    /// Wire one with `wire add`.
    Requests {
        /// Decided ones too.
        #[arg(long)]
        all: bool,
    },
    /// Ignore a new group chat: its held messages are dropped and nobody is asked again.
    Ignore {
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
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let paths = Paths::new(&cli.data_dir);
    let format = if cli.json {
        Format::Json
    } else {
        Format::Table
    };
    match cli.command {
        Command::Run(args) => {
            let network = match args.network.as_str() {
                "none" => NetworkMode::None,
                "bridge" => NetworkMode::Bridge,
                other => NetworkMode::Named(other.to_string()),
            };
            let mut supervisor = SupervisorConfig::new(args.image);
            supervisor.claude_image = args.claude_image;
            supervisor.default_provider = args.provider;
            supervisor.network = network;
            supervisor.limits.memory_bytes = args.memory_mb * 1024 * 1024;
            supervisor.idle_timeout = Duration::from_secs(args.idle_timeout_secs);
            supervisor.max_containers = args.max_containers.max(1);
            supervisor.max_turn = Duration::from_secs(args.max_turn_secs.max(1));
            if !(args.cpus > 0.0 && args.cpus <= 1024.0) {
                anyhow::bail!("--cpus must be between 0 and 1024, not {}", args.cpus);
            }
            supervisor.limits.cpu_millis = Some((args.cpus * 1000.0).round() as u32);
            let opts = RunOptions {
                plugins_config: args.plugins,
                supervisor,
                webhook_listen: args.webhook_listen,
                sweep_interval: Duration::from_secs(args.sweep_secs.max(1)),
                task_backoff: match args.task_backoff_ms {
                    Some(ms) => crate::scheduling::Backoff::short_for_tests(ms),
                    None => crate::scheduling::Backoff::default(),
                },
            };
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            rt.block_on(crate::daemon::run(paths, opts))?;
            // A plugin call stuck past its timeout holds a blocking thread; do not wait for it.
            rt.shutdown_timeout(Duration::from_secs(2));
            Ok(ExitCode::SUCCESS)
        }
        Command::Chat(args) => chat::run(args, &cli.data_dir),
        Command::Pair(args) => onboarding::pair(&paths, format, args),
        Command::InitFirstAgent(args) => onboarding::init_first_agent(&paths, args),
        Command::Doctor {
            plugins: config,
            image,
            claude_image,
            credential,
        } => doctor::run(
            &paths,
            &config,
            &doctor::Images {
                default: image,
                claude: claude_image,
            },
            credential,
            format,
        ),
        Command::Plugins(PluginsCmd::List { plugins: config }) => {
            plugins::run(&paths, &config, format, true)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Plugins(PluginsCmd::Check { plugins: config }) => {
            let ok = plugins::run(&paths, &config, format, false)?;
            Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        other => admin::run(&paths, format, other).map(|()| ExitCode::SUCCESS),
    }
}
