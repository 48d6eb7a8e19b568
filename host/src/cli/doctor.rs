//! `nanoclaw doctor`: checks the install and says what to fix.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::ExitCode;
use std::sync::{Arc, OnceLock};

use serde::Serialize;

use super::output::Format;
use crate::config::Paths;
use crate::container::{DockerRunner, InstallId, RunnerConfig};
use crate::control::{self, Request};
use crate::db::Db;
use crate::plugins::services::Services;
use crate::plugins::{LoadOptions, PluginsConfig, registry};
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

/// Runs every check; exit 1 if any failed.
pub fn run(
    paths: &Paths,
    plugins_config: &Path,
    image: &str,
    format: Format,
) -> anyhow::Result<ExitCode> {
    let mut r = Report::default();
    check_data_dir(paths, &mut r);
    let db = check_db(paths, &mut r);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(check_docker(paths, image, &mut r));
    if let Some(db) = &db {
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

async fn check_docker(paths: &Paths, image: &str, r: &mut Report) {
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
            match runner.image_exists(image).await {
                Ok(true) => r.add(Level::Ok, "agent image", image.to_string(), None),
                Ok(false) => r.add(Level::Fail, "agent image", format!("{image} is not built"), Some("container/build.sh")),
                Err(e) => r.add(Level::Fail, "agent image", e.to_string(), None),
            }
        }
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
