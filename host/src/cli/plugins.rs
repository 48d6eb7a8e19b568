//! `nanoclaw plugins list|check`: what plugins.toml configures and whether each loads.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use anyhow::Context;
use serde_json::json;

use super::output::Format;
use crate::config::Paths;
use crate::control::{self, Request};
use crate::db::Db;
use crate::plugins::services::Services;
use crate::plugins::{LoadOptions, PluginReport, PluginStatus, PluginsConfig, registry};

/// Preflights every configured plugin (load and create, never start) and, for `list`, adds
/// the live health a running daemon reports. Returns whether every enabled plugin loaded.
pub fn run(paths: &Paths, config_path: &Path, format: Format, live: bool) -> anyhow::Result<bool> {
    let config = PluginsConfig::load(config_path)
        .with_context(|| format!("read plugin configuration {}", config_path.display()))?;
    let db =
        Arc::new(Db::open(&paths.db()).with_context(|| format!("open {}", paths.db().display()))?);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let rows = rt.block_on(async {
        let opts = LoadOptions::new(paths.home());
        // Input is refused during a check: the ingress is never set.
        let slot = Arc::new(OnceLock::new());
        let factory = Services::factory(db.clone(), slot.clone());
        registry::check(&config, &opts, &factory).await
    });
    let health = if live {
        rt.block_on(control::request(&paths.control_socket(), &Request::Health))
            .ok()
            .flatten()
    } else {
        None
    };
    rt.shutdown_timeout(std::time::Duration::from_secs(1));
    let ok = rows.iter().all(|r| !r.status.is_failure());
    match format {
        Format::Json => {
            let live = health.as_ref().and_then(|h| h.data.clone());
            let list: Vec<_> = rows.iter().map(|r| row_json(r, live.as_ref())).collect();
            println!(
                "{}",
                serde_json::to_string_pretty(
                    &json!({ "plugins": list, "daemon_running": health.is_some() })
                )?
            );
        }
        Format::Table => {
            print!("{}", registry::render_report(&rows));
            if live {
                match health.as_ref().and_then(|h| h.data.as_ref()) {
                    Some(data) => {
                        println!("\nlive (from the running daemon):");
                        for p in data["plugins"].as_array().into_iter().flatten() {
                            println!(
                                "  {:<12} {:<8} {}",
                                p["instance"].as_str().unwrap_or("-"),
                                p["status"].as_str().unwrap_or("-"),
                                p["detail"].as_str().unwrap_or("")
                            );
                        }
                    }
                    None => println!("\n(the daemon is not running: `nanoclaw run` starts it)"),
                }
            }
        }
    }
    Ok(ok)
}

fn row_json(r: &PluginReport, live: Option<&serde_json::Value>) -> serde_json::Value {
    let m = r.manifest.as_ref();
    let health = live
        .and_then(|l| l["plugins"].as_array())
        .and_then(|list| list.iter().find(|p| p["instance"] == r.instance.as_str()))
        .cloned();
    json!({
        "instance": r.instance,
        "channel_type": m.map(|m| &m.channel_type),
        "name": m.map(|m| &m.name),
        "version": m.map(|m| &m.version),
        "abi": r.abi.as_ref().map(|v| v.to_string()),
        "enabled": r.enabled,
        "required": r.required,
        "library": r.library.as_ref().map(|p| p.display().to_string()),
        "status": r.status.label(),
        "loaded": matches!(r.status, PluginStatus::Loaded | PluginStatus::Started),
        "error": r.error(),
        "capabilities": m.map(|m| m.capabilities.to_string()),
        "max_text_length": m.and_then(|m| m.max_text_length),
        "health": health,
    })
}
