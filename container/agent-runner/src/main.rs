//! `nanoclaw-agent`: the program inside each NanoClaw agent container.
//!
//! It waits for the host to write messages into the session's `inbound.db`, runs the model
//! provider on each batch, and writes the replies and acknowledgements into `outbound.db`.
//! Configuration comes from the environment (see `config.rs`); logs go to stderr.
//!
//! Exit codes: 0 after SIGTERM/SIGINT, 1 on a runtime failure, 2 on bad configuration, 3 when
//! the session databases have a schema this binary does not support.

mod config;
mod db;
mod format;
mod mcp;
mod output;
mod provider;
mod relay;
mod runner;
mod script;
mod tools;
mod wait;

use std::process::ExitCode;

use config::{Config, ProviderKind};
use provider::Provider;
use provider::claude::{ClaudeOptions, ClaudeProvider};
use provider::mock::MockProvider;
use provider::openai::{OpenAiOptions, OpenAiProvider};
use tracing_subscriber::EnvFilter;

const USAGE: &str = "\
nanoclaw-agent: runs a NanoClaw agent for one session (normally inside its container).

Usage: nanoclaw-agent [--help | --version]
       nanoclaw-agent mcp      the agent's tools as an MCP server on stdio (Claude Code starts it)

Configuration is read from the environment:
  NANOCLAW_SESSION_DIR       session workspace with outbound.db (default /workspace)
  NANOCLAW_INBOUND_DIR       the host's read-only directory with inbound.db (default /workspace/inbound)
  NANOCLAW_AGENT_DIR         the agent's working directory (default /workspace/agent)
  NANOCLAW_GLOBAL_DIR        shared read-only memory (default /workspace/global)
  NANOCLAW_CONFIG_DIR        the operator's read-only config, approved MCP servers (default /workspace/config)
  NANOCLAW_AGENT_GROUP_ID    agent group id (for logs)
  NANOCLAW_SESSION_ID        session id (for logs)
  NANOCLAW_PROVIDER          mock | claude | openai (default claude)
  NANOCLAW_ASSISTANT_NAME    the agent's name
  NANOCLAW_ADMIN_USER_IDS    comma-separated user ids allowed to run admin slash commands
  NANOCLAW_MAX_BATCH         messages per turn, 1-1000 (default 10)
  NANOCLAW_FALLBACK_POLL_MS  poll interval when file events are missing (default 2000)
  NANOCLAW_MODEL             model name (optional for claude, required for openai)
  NANOCLAW_CLAUDE_BIN        Claude Code CLI (default claude)
  NANOCLAW_MODEL_SOCKET      the host's model-API proxy socket (relayed on 127.0.0.1)
  NANOCLAW_MODEL_BASE_URL    model API base URL when there is no proxy socket (http:// only for openai)
  NANOCLAW_HISTORY_BYTES     openai: conversation text sent per request, at most (default 200000)
  NANOCLAW_MOCK_SCRIPT       mock provider rules (default <agent dir>/mock.toml if present)
  NANOCLAW_MOCK_RECORD       file the mock provider appends every request to
  NANOCLAW_LOG               log filter (default info)
  TZ                         time zone for message times (default UTC)

Exit codes: 0 stopped by SIGTERM/SIGINT, 1 runtime failure, 2 bad configuration,
3 session schema not supported.";

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let mut mcp_mode = false;
    match (args.next().as_deref(), args.next()) {
        (None, _) => {}
        (Some("mcp"), None) => mcp_mode = true,
        (Some("-h" | "--help"), None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        (Some("-V" | "--version"), None) => {
            println!("nanoclaw-agent {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        _ => {
            eprintln!(
                "nanoclaw-agent: takes no arguments (configuration is by environment); see --help"
            );
            return ExitCode::from(2);
        }
    }

    // Before any thread exists, so all of them inherit the mask.
    if !mcp_mode && let Err(e) = wait::block_signals() {
        eprintln!("nanoclaw-agent: cannot block signals: {e}");
        return ExitCode::from(1);
    }

    let filter = std::env::var("NANOCLAW_LOG")
        .ok()
        .filter(|s| !s.trim().is_empty());
    let filter = match EnvFilter::try_new(filter.as_deref().unwrap_or("info")) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("nanoclaw-agent: invalid NANOCLAW_LOG: {e}");
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();

    let cfg = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("nanoclaw-agent: {e}");
            return ExitCode::from(2);
        }
    };
    let span = tracing::info_span!(
        "agent",
        group = cfg.agent_group_id.as_deref().unwrap_or("-"),
        session = cfg.session_id.as_deref().unwrap_or("-"),
    );
    let _enter = span.enter();
    if mcp_mode {
        return match mcp::serve(&cfg) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!("{e}");
                ExitCode::from(1)
            }
        };
    }
    run(cfg)
}

/// The environment the tool server needs to find the session: the runner's own `NANOCLAW_*`
/// settings and time zone, passed explicitly so no CLI filtering can drop them.
fn tool_server_env() -> Vec<(&'static str, String)> {
    use nanoclaw_schema::session::env;
    [
        env::SESSION_DIR,
        env::INBOUND_DIR,
        env::AGENT_DIR,
        env::GLOBAL_DIR,
        env::CONFIG_DIR,
        env::AGENT_GROUP_ID,
        env::SESSION_ID,
        env::PROVIDER,
        env::ADMIN_USER_IDS,
        env::MODEL,
        env::LOG,
        "TZ",
    ]
    .into_iter()
    .filter_map(|k| std::env::var(k).ok().map(|v| (k, v)))
    .collect()
}

fn run(cfg: Config) -> ExitCode {
    let shutdown = wait::Shutdown::default();
    // The model API: through the host's proxy when it mounted one, else a configured URL.
    let api_base = match &cfg.model_socket {
        Some(socket) => match relay::Relay::start(socket) {
            Ok(relay) => Some(relay.base_url()),
            Err(e) => {
                tracing::error!(error = %e, "cannot start the model relay");
                return ExitCode::from(1);
            }
        },
        None => cfg.model_base_url.clone(),
    };
    let provider: Box<dyn Provider> = match cfg.provider {
        ProviderKind::Mock => {
            // Its scripted tool calls use a connection of their own, as Claude's tool server
            // does. A session that cannot be opened fails below with the right exit code.
            let tools = db::SessionDb::open(&cfg.session_dir, &cfg.inbound_dir)
                .ok()
                .map(|db| {
                    tools::Toolbox::new(
                        db,
                        cfg.session_dir.clone(),
                        cfg.agent_dir.clone(),
                        cfg.admin_user_ids.clone(),
                        cfg.tz.clone(),
                    )
                });
            match MockProvider::new(
                cfg.mock_script.as_deref(),
                cfg.mock_record.clone(),
                shutdown.clone(),
                tools,
            ) {
                Ok(p) => Box::new(p),
                Err(e) => {
                    tracing::error!("{e}");
                    return ExitCode::from(2);
                }
            }
        }
        ProviderKind::Claude => Box::new(ClaudeProvider::new(
            ClaudeOptions {
                bin: cfg.claude_bin.clone(),
                model: cfg.model.clone(),
                cwd: cfg.agent_dir.clone(),
                add_dirs: Some(cfg.global_dir.clone())
                    .filter(|d| d.is_dir())
                    .into_iter()
                    .collect(),
                api_base: api_base.clone(),
                mcp_config: Some(mcp::claude_config(&cfg, &tool_server_env()).to_string()),
            },
            shutdown.clone(),
        )),
        ProviderKind::OpenAi => {
            let Some(api_base) = api_base.clone() else {
                let e = "the openai provider needs a model API: NANOCLAW_MODEL_SOCKET (the host's \
                         model proxy) or NANOCLAW_MODEL_BASE_URL";
                tracing::error!("{e}");
                eprintln!("nanoclaw-agent: {e}");
                return ExitCode::from(2);
            };
            // Checked by the configuration: openai has a model.
            let model = cfg.model.clone().unwrap_or_default();
            tracing::info!(%api_base, %model, "openai provider");
            let mut opts = OpenAiOptions::new(api_base, model, cfg.session_dir.clone());
            opts.history_budget = cfg.history_bytes;
            Box::new(OpenAiProvider::new(opts, shutdown.clone()))
        }
    };

    let db = match db::SessionDb::open(&cfg.session_dir, &cfg.inbound_dir) {
        Ok(db) => db,
        Err(e) => {
            tracing::error!("{e}");
            return ExitCode::from(if e.is_incompatible() { 3 } else { 1 });
        }
    };

    let wakeups = wait::Wakeups::watch(&cfg.inbound_dir);
    if let Err(e) = wait::spawn_signal_thread(shutdown.clone(), wakeups.sender()) {
        tracing::error!(error = %e, "cannot start the signal thread");
        return ExitCode::from(1);
    }
    tracing::info!(
        provider = cfg.provider.as_str(),
        session_dir = %cfg.session_dir.display(),
        version = env!("CARGO_PKG_VERSION"),
        "nanoclaw-agent starting"
    );

    let mut runner = runner::Runner::new(cfg, db, provider, shutdown);
    match runner.run(&wakeups) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::from(1)
        }
    }
}
