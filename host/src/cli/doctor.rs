//! `nanoclaw doctor`: checks the install and says what to fix.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::ExitCode;
use std::sync::{Arc, OnceLock};

use serde::Serialize;

use super::output::Format;
use crate::config::Paths;
use crate::config::secrets::SecretSource;
use crate::container::{DockerRunner, InstallId, RunnerConfig};
use crate::control::{self, Request};
use crate::db::Db;
use crate::model_proxy::{Api, ModelProxy, ProxySettings};
use crate::plugins::services::Services;
use crate::plugins::{LoadOptions, PluginsConfig, registry};
use crate::store::agent_groups::{self, AgentProvider};
use crate::store::{dropped, roles};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum Level {
    Ok,
    Warn,
    Fail,
}

#[derive(Debug, Serialize)]
struct Finding {
    level: Level,
    check: String,
    detail: String,
    /// What to do about it.
    #[serde(skip_serializing_if = "Option::is_none")]
    fix: Option<String>,
}

#[derive(Default)]
struct Report(Vec<Finding>);

impl Report {
    fn add(&mut self, level: Level, check: &str, detail: impl Into<String>, fix: Option<&str>) {
        self.0.push(Finding {
            level,
            check: check.into(),
            detail: detail.into(),
            fix: fix.map(str::to_string),
        });
    }
}

/// The images agents run.
pub struct Images {
    /// Mock and OpenAI-compatible agents.
    pub default: String,
    /// Claude agents.
    pub claude: String,
}

/// Runs every check; exit 1 if any failed. `probe_credential`: also ask the model API
/// whether it accepts the credential.
pub fn run(
    paths: &Paths,
    plugins_config: &Path,
    images: &Images,
    probe_credential: bool,
    format: Format,
) -> anyhow::Result<ExitCode> {
    let mut r = Report::default();
    check_data_dir(paths, &mut r);
    let db = check_db(paths, &mut r);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let providers = db
        .as_ref()
        .map(|db| providers_in_use(db))
        .unwrap_or_default();
    rt.block_on(check_docker(paths, images, &providers, &mut r));
    if let Some(db) = &db {
        rt.block_on(check_models(
            paths,
            db.clone(),
            &providers,
            probe_credential,
            &mut r,
        ));
        rt.block_on(check_plugins(paths, plugins_config, db.clone(), &mut r));
        check_people(db, &mut r);
    }
    rt.block_on(check_daemon(paths, &mut r));
    rt.shutdown_timeout(std::time::Duration::from_secs(1));

    let failed = r.0.iter().any(|f| f.level == Level::Fail);
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&r.0)?),
        Format::Table => {
            for f in &r.0 {
                let tag = match f.level {
                    Level::Ok => "ok  ",
                    Level::Warn => "WARN",
                    Level::Fail => "FAIL",
                };
                println!("[{tag}] {}: {}", f.check, f.detail);
                if let Some(fix) = &f.fix {
                    println!("       fix: {fix}");
                }
            }
            println!();
            println!(
                "{}",
                if failed {
                    "Some checks failed; see the fixes above."
                } else {
                    "All essential checks passed."
                }
            );
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn check_data_dir(paths: &Paths, r: &mut Report) {
    let home = paths.home();
    match std::fs::metadata(home) {
        Err(_) => r.add(
            Level::Warn,
            "data dir",
            format!("{} does not exist yet", home.display()),
            Some("it is created by `nanoclaw run` or any admin command"),
        ),
        Ok(m) if m.permissions().mode() & 0o077 != 0 => r.add(
            Level::Warn,
            "data dir",
            format!(
                "{} is readable by other users (mode {:o})",
                home.display(),
                m.permissions().mode() & 0o777
            ),
            Some(&format!("chmod 700 {}", home.display())),
        ),
        Ok(_) => r.add(
            Level::Ok,
            "data dir",
            format!("{} (owner only)", home.display()),
            None,
        ),
    }
    if let Ok(m) = std::fs::metadata(paths.env_file()) {
        if m.permissions().mode() & 0o077 != 0 {
            r.add(
                Level::Fail,
                "secrets",
                format!(
                    "{} holds secrets but others can read it",
                    paths.env_file().display()
                ),
                Some(&format!("chmod 600 {}", paths.env_file().display())),
            );
        } else {
            r.add(
                Level::Ok,
                "secrets",
                format!("{} is private", paths.env_file().display()),
                None,
            );
        }
    }
}

fn check_db(paths: &Paths, r: &mut Report) -> Option<Arc<Db>> {
    match Db::open(&paths.db()) {
        Ok(db) => {
            let integrity = db.read(|c| {
                Ok(c.query_row("PRAGMA quick_check", [], |row| row.get::<_, String>(0))?)
            });
            match integrity {
                Ok(s) if s == "ok" => r.add(
                    Level::Ok,
                    "database",
                    format!("{} is healthy", paths.db().display()),
                    None,
                ),
                Ok(s) => r.add(
                    Level::Fail,
                    "database",
                    format!("integrity check: {s}"),
                    Some("restore data/v2.db from a backup"),
                ),
                Err(e) => r.add(Level::Fail, "database", e.to_string(), None),
            }
            Some(Arc::new(db))
        }
        Err(e) => {
            r.add(
                Level::Fail,
                "database",
                e.to_string(),
                Some("restore the file from a backup, or move it aside"),
            );
            None
        }
    }
}

async fn check_docker(paths: &Paths, images: &Images, providers: &[AgentProvider], r: &mut Report) {
    let Ok(install) = InstallId::from_data_dir(paths.home()) else {
        r.add(
            Level::Warn,
            "docker",
            "the data dir does not exist yet; skipped",
            None,
        );
        return;
    };
    let (tx, _rx) = tokio::sync::mpsc::channel(1);
    match DockerRunner::connect(RunnerConfig::new(install), tx).await {
        Err(e) => r.add(Level::Fail, "docker engine", e.to_string(), Some("start it: `dockerd --iptables=false --bridge=none &` as root, or `systemctl start docker`")),
        Ok(runner) => {
            r.add(Level::Ok, "docker engine", "reachable", None);
            let image = &images.default;
            match runner.image_exists(image).await {
                Ok(true) => r.add(Level::Ok, "agent image", image.to_string(), None),
                Ok(false) => r.add(Level::Fail, "agent image", format!("{image} is not built"), Some("container/build.sh")),
                Err(e) => r.add(Level::Fail, "agent image", e.to_string(), None),
            }
            // The Claude image matters once an agent uses Claude.
            let claude = &images.claude;
            let needed = providers.contains(&AgentProvider::Claude);
            match runner.image_exists(claude).await {
                Ok(true) => r.add(Level::Ok, "claude image", claude.to_string(), None),
                Ok(false) if needed => r.add(Level::Fail, "claude image", format!("{claude} is not built and an agent uses Claude"), Some("container/build.sh --claude")),
                Ok(false) => r.add(Level::Ok, "claude image", format!("{claude} is not built (no agent uses Claude)"), None),
                Err(e) => r.add(Level::Warn, "claude image", e.to_string(), None),
            }
        }
    }
}

/// The providers agent groups chose (agents on the host's default are not counted: the
/// default is a `nanoclaw run` option).
fn providers_in_use(db: &Db) -> Vec<AgentProvider> {
    let mut out: Vec<AgentProvider> = db
        .read(agent_groups::list)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|g| g.provider)
        .collect();
    out.sort_by_key(|p| p.to_string());
    out.dedup();
    out
}

/// The model API settings, the credential (and, when asked, whether the API accepts it),
/// and the proxy's socket directory.
async fn check_models(
    paths: &Paths,
    db: Arc<Db>,
    providers: &[AgentProvider],
    probe: bool,
    r: &mut Report,
) {
    let settings = match ProxySettings::load(&SecretSource::new(paths.home())) {
        Ok(s) => s,
        Err(e) => {
            r.add(
                Level::Fail,
                "model settings",
                e.to_string(),
                Some("fix the variable in data/.env (or the environment)"),
            );
            return;
        }
    };
    let claude_used = providers.contains(&AgentProvider::Claude);
    match &settings.anthropic {
        Some(up) => r.add(
            Level::Ok,
            "anthropic credential",
            format!("{} for {}", up.credential.describe(Api::Anthropic), up.base),
            None,
        ),
        None => r.add(
            if claude_used { Level::Fail } else { Level::Ok },
            "anthropic credential",
            if claude_used {
                "none, and an agent uses Claude"
            } else {
                "none (only Claude agents need one)"
            },
            claude_used.then_some(
                "put ANTHROPIC_API_KEY=... (or a subscription token, CLAUDE_CODE_OAUTH_TOKEN=...) in data/.env, then restart `nanoclaw run`",
            ),
        ),
    }
    let openai_used = providers.contains(&AgentProvider::OpenAi);
    if openai_used || settings.openai.base != crate::model_proxy::settings::OPENAI_DEFAULT_BASE {
        r.add(
            Level::Ok,
            "openai-compatible API",
            format!(
                "{} ({}), model {}",
                settings.openai.base,
                settings.openai.credential.describe(Api::OpenAi),
                settings.openai_model.as_deref().unwrap_or("per agent")
            ),
            None,
        );
    }

    let proxy = ModelProxy::new(settings.clone(), paths.model_proxy(), db);
    if probe {
        let mut apis = Vec::new();
        if settings.anthropic.is_some() {
            apis.push(Api::Anthropic);
        }
        if openai_used {
            apis.push(Api::OpenAi);
        }
        if apis.is_empty() {
            r.add(
                Level::Warn,
                "credential check",
                "nothing to check: no credential is configured",
                None,
            );
        }
        for api in apis {
            let check = format!("{api} accepts the credential");
            match proxy.probe(api).await {
                Ok(200..=299) => r.add(Level::Ok, &check, "yes", None),
                Ok(status @ (401 | 403)) => r.add(
                    Level::Fail,
                    &check,
                    format!("no: HTTP {status}"),
                    Some("replace the key or token in data/.env, then restart `nanoclaw run`"),
                ),
                Ok(status) => r.add(
                    Level::Warn,
                    &check,
                    format!("the API answered HTTP {status}"),
                    None,
                ),
                Err(e) => r.add(
                    Level::Fail,
                    &check,
                    format!("the API is not reachable: {e}"),
                    Some("check the host's network and the base URL"),
                ),
            }
        }
    }

    // The proxy can make a socket where containers will find it.
    let probe_id = crate::ids::SessionId::generate();
    let group_id = crate::ids::AgentGroupId::generate();
    match proxy.open(&probe_id, &group_id, Api::Anthropic) {
        Ok(dir) => {
            r.add(
                Level::Ok,
                "model proxy",
                format!("sockets under {}", dir.parent().unwrap_or(&dir).display()),
                None,
            );
            proxy.close(&probe_id);
        }
        Err(e) => r.add(Level::Fail, "model proxy", e.to_string(), None),
    }
}

async fn check_plugins(paths: &Paths, config_path: &Path, db: Arc<Db>, r: &mut Report) {
    let config = match PluginsConfig::load(config_path) {
        Ok(c) => c,
        Err(e) => {
            r.add(
                Level::Fail,
                "plugins.toml",
                e.to_string(),
                Some("fix the file; docs/plugins.md describes the format"),
            );
            return;
        }
    };
    r.add(
        Level::Ok,
        "plugins.toml",
        format!("{} parses", config_path.display()),
        None,
    );
    let opts = LoadOptions::new(paths.home());
    let slot = Arc::new(OnceLock::new());
    let factory = Services::factory(db.clone(), slot.clone());
    for row in registry::check(&config, &opts, &factory).await {
        let name = format!("plugin {}", row.instance);
        match row.error() {
            None if !row.enabled => r.add(Level::Ok, &name, "disabled", None),
            None => r.add(
                Level::Ok,
                &name,
                "loads, settings and credentials accepted",
                None,
            ),
            Some(e) => r.add(
                if row.required {
                    Level::Fail
                } else {
                    Level::Warn
                },
                &name,
                e,
                Some("see docs/plugins.md; credentials go in data/.env"),
            ),
        }
    }
}

fn check_people(db: &Db, r: &mut Report) {
    match db.read(roles::has_any_owner) {
        Ok(true) => r.add(Level::Ok, "owner", "this install has an owner", None),
        Ok(false) => r.add(
            Level::Warn,
            "owner",
            "nobody owns this install yet",
            Some("`nanoclaw pair <channel>` (first pairer becomes owner) or `nanoclaw init-first-agent`"),
        ),
        Err(e) => r.add(Level::Warn, "owner", e.to_string(), None),
    }
    if let Ok(drops) = db.read(|c| dropped::list(c, 5))
        && let Some(d) = drops.first()
    {
        r.add(
            Level::Warn,
            "dropped messages",
            format!(
                "latest: {}:{} ({}, {} time(s))",
                d.channel_type, d.platform_id, d.reason, d.message_count
            ),
            Some("`nanoclaw dropped` lists them with what to do"),
        );
    }
}

async fn check_daemon(paths: &Paths, r: &mut Report) {
    match control::request(&paths.control_socket(), &Request::Health).await {
        Ok(Some(resp)) if resp.ok => {
            r.add(Level::Ok, "daemon", "running", None);
            let data = resp.data.unwrap_or_default();
            for p in data["plugins"].as_array().into_iter().flatten() {
                let instance = p["instance"].as_str().unwrap_or("?");
                let status = p["status"].as_str().unwrap_or("unknown");
                let detail = p["detail"].as_str().unwrap_or("");
                let level = match status {
                    "ok" => Level::Ok,
                    "down" => Level::Fail,
                    _ => Level::Warn,
                };
                r.add(
                    level,
                    &format!("health {instance}"),
                    format!("{status} {detail}").trim().to_string(),
                    None,
                );
            }
        }
        Ok(_) => r.add(Level::Warn, "daemon", "not running", Some("`nanoclaw run`")),
        Err(e) => r.add(Level::Warn, "daemon", e.to_string(), None),
    }
}
