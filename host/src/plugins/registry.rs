//! Loading every configured plugin, and the report operators see.
//!
//! ```ignore
//! let config = PluginsConfig::load(Path::new("plugins.toml"))?;
//! let opts = LoadOptions::new("data");
//! let factory = |instance: &str, manifest: &PluginManifest| db_host_services(instance, manifest);
//! let mut plugins = registry::load(&config, &opts, &factory).await;
//! plugins.start_all(&opts).await;
//! print!("{}", render_report(plugins.report()));
//! if !plugins.required_failures().is_empty() { std::process::exit(1) }
//! ```
//!
//! Each plugin is loaded on its own; a failure is logged in one line, recorded in the
//! report and skipped, and the others go on.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use nanoclaw_plugin_api::abi::{HostServicesBox, PluginConfig};
use nanoclaw_plugin_api::kit::BackoffPolicy;
use semver::Version;

use super::config::{InstanceName, LibraryLocator, PluginEntry, PluginsConfig};
use super::handle::{CallError, CallLimits, DEFAULT_MAX_IN_FLIGHT, PluginHandle};
use super::loader::{self, LoadError, PluginManifest};
use super::settings::resolve_settings;
use crate::config::secrets::SecretSource;

/// Builds the [`HostServicesBox`] for one plugin instance: `(instance name, manifest)`.
/// The host's implementation namespaces state and ids by the instance name.
pub type HostServicesFactory<'a> =
    dyn Fn(&InstanceName, &PluginManifest) -> HostServicesBox + Send + Sync + 'a;

/// How to load.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// The host's data directory: `.env` is read from here and each instance gets
    /// `<data_dir>/plugins/<instance>/`.
    pub data_dir: PathBuf,
    /// Where bare library names are looked up; `None` = from the config and environment
    /// ([`PluginsConfig::locator`]).
    pub locator: Option<LibraryLocator>,
    /// Source of `{ env = "…" }` values.
    pub secrets: Arc<SecretSource>,
    /// Delays between retries of a `start` that failed with a `NETWORK` error (each
    /// shortened by up to a fifth at random, so plugins that failed together do not retry
    /// in lockstep); empty = no retry.
    pub start_retry_backoff: Vec<Duration>,
    /// Calls in flight per plugin.
    pub max_in_flight: usize,
}

impl LoadOptions {
    /// Defaults: secrets from the process environment then `<data_dir>/.env`; start retried
    /// after about 2 s, 5 s and 10 s (jittered) on network errors.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        let data_dir = data_dir.into();
        Self {
            secrets: Arc::new(SecretSource::new(&data_dir)),
            data_dir,
            locator: None,
            start_retry_backoff: vec![
                Duration::from_secs(2),
                Duration::from_secs(5),
                Duration::from_secs(10),
            ],
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
        }
    }
}

/// Where a configured plugin ended up.
#[derive(Debug)]
pub enum PluginStatus {
    /// `enabled = false`.
    Disabled,
    /// Loaded and created, not started.
    Loaded,
    /// Started.
    Started,
    /// Could not be loaded or created.
    LoadFailed(LoadError),
    /// Loaded, but `start` failed; the instance was torn down.
    StartFailed(CallError),
}

impl PluginStatus {
    /// A failure of either kind.
    pub fn is_failure(&self) -> bool {
        matches!(self, Self::LoadFailed(_) | Self::StartFailed(_))
    }
    /// A short word for tables.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Disabled => "disabled",
            Self::Loaded => "loaded",
            Self::Started => "started",
            Self::LoadFailed(_) => "FAILED",
            Self::StartFailed(_) => "START FAILED",
        }
    }
}

/// One row per configured plugin.
#[derive(Debug)]
pub struct PluginReport {
    /// Instance name.
    pub instance: String,
    /// `enabled` from the config.
    pub enabled: bool,
    /// `required` from the config.
    pub required: bool,
    /// The resolved library path, if it was resolved.
    pub library: Option<PathBuf>,
    /// The ABI version from the library's marker, if it was read.
    pub abi: Option<Version>,
    /// The manifest, if the library was loaded.
    pub manifest: Option<PluginManifest>,
    /// Outcome.
    pub status: PluginStatus,
}

impl PluginReport {
    fn new(instance: &InstanceName, entry: &PluginEntry) -> Self {
        Self {
            instance: instance.to_string(),
            enabled: entry.enabled,
            required: entry.required,
            library: None,
            abi: None,
            manifest: None,
            status: if entry.enabled {
                PluginStatus::Loaded
            } else {
                PluginStatus::Disabled
            },
        }
    }

    /// The failure as one line, if any.
    pub fn error(&self) -> Option<String> {
        match &self.status {
            PluginStatus::LoadFailed(e) => Some(e.to_string()),
            PluginStatus::StartFailed(e) => Some(e.to_string()),
            _ => None,
        }
    }
}

/// The result of [`load`].
#[derive(Debug, Default)]
pub struct LoadedPlugins {
    handles: Vec<PluginHandle>,
    report: Vec<PluginReport>,
}

impl LoadedPlugins {
    /// Running (or created) instances.
    pub fn handles(&self) -> &[PluginHandle] {
        &self.handles
    }
    /// The instance of this name (the channel's name in ids).
    pub fn get(&self, instance: &str) -> Option<&PluginHandle> {
        self.handles.iter().find(|h| h.instance() == instance)
    }
    /// One row per configured plugin, in config order.
    pub fn report(&self) -> &[PluginReport] {
        &self.report
    }
    /// Rows of `required` plugins that failed to load or start. The daemon should exit
    /// non-zero when this is not empty.
    pub fn required_failures(&self) -> Vec<&PluginReport> {
        self.report
            .iter()
            .filter(|r| r.required && r.status.is_failure())
            .collect()
    }

    /// Starts every loaded instance, concurrently. A `start` failing with a network error
    /// is retried after each delay of `opts.start_retry_backoff`; any other failure (or the
    /// last retry) tears the instance down and records `StartFailed`.
    pub async fn start_all(&mut self, opts: &LoadOptions) {
        let mut tasks = tokio::task::JoinSet::new();
        for handle in self.handles.clone() {
            let mut backoff = BackoffPolicy::delays(opts.start_retry_backoff.clone()).start();
            tasks.spawn(async move {
                let result = loop {
                    match handle.start().await {
                        Err(e)
                            if e.plugin_error().is_some_and(|p| {
                                p.kind == nanoclaw_plugin_api::abi::ErrorKind::NETWORK
                            }) =>
                        {
                            match backoff.next_delay() {
                                Some(delay) => {
                                    tracing::warn!(
                                        plugin = handle.instance(),
                                        ?delay,
                                        "start failed, retrying: {e}"
                                    );
                                    tokio::time::sleep(delay).await;
                                }
                                None => break Err(e),
                            }
                        }
                        other => break other,
                    }
                };
                (handle, result)
            });
        }
        let mut failed = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            let (handle, result) = match joined {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::error!("plugin start task failed: {e}");
                    continue;
                }
            };
            let Some(row) = self
                .report
                .iter_mut()
                .find(|r| r.instance == handle.instance())
            else {
                continue;
            };
            match result {
                Ok(()) => {
                    tracing::info!(
                        plugin = handle.instance(),
                        channel_type = handle.channel_type(),
                        "plugin started"
                    );
                    row.status = PluginStatus::Started;
                }
                Err(e) => {
                    log_failure(row.required, handle.instance(), &e.to_string());
                    if let Err(te) = handle.teardown().await {
                        tracing::debug!(
                            plugin = handle.instance(),
                            "teardown after failed start: {te}"
                        );
                    }
                    row.status = PluginStatus::StartFailed(e);
                    failed.push(handle.instance().to_owned());
                }
            }
        }
        self.handles
            .retain(|h| !failed.iter().any(|f| f == h.instance()));
    }

    /// Tears every instance down (concurrently); errors are logged.
    pub async fn teardown_all(&self) {
        let mut tasks = tokio::task::JoinSet::new();
        for handle in self.handles.clone() {
            tasks.spawn(async move {
                if let Err(e) = handle.teardown().await {
                    tracing::warn!(plugin = handle.instance(), "teardown: {e}");
                }
            });
        }
        while tasks.join_next().await.is_some() {}
    }
}

fn log_failure(required: bool, instance: &str, message: &str) {
    if required {
        tracing::error!(plugin = instance, required, "plugin not loaded: {message}");
    } else {
        tracing::warn!(plugin = instance, "plugin not loaded: {message}");
    }
}

/// Loads and creates every enabled plugin (not started: see [`LoadedPlugins::start_all`]).
/// Never fails as a whole: each failure is logged once and recorded in the report.
pub async fn load(
    config: &PluginsConfig,
    opts: &LoadOptions,
    factory: &HostServicesFactory<'_>,
) -> LoadedPlugins {
    let locator = opts.locator.clone().unwrap_or_else(|| config.locator());
    let mut loaded = LoadedPlugins::default();
    for (instance, entry) in &config.plugins {
        let mut row = PluginReport::new(instance, entry);
        if entry.enabled {
            match load_one(config, opts, &locator, factory, instance, entry, &mut row).await {
                Ok(handle) => {
                    tracing::info!(
                        plugin = %instance,
                        channel_type = handle.channel_type(),
                        version = %handle.manifest().version,
                        abi = %handle.manifest().abi_version,
                        capabilities = %handle.capabilities(),
                        "plugin loaded"
                    );
                    loaded.handles.push(handle);
                }
                Err(e) => {
                    log_failure(entry.required, instance.as_str(), &e.to_string());
                    if let Some(detail) = e.detail() {
                        tracing::debug!(plugin = %instance, "full loader report:\n{detail}");
                    }
                    row.status = PluginStatus::LoadFailed(e);
                }
            }
        } else {
            tracing::debug!(plugin = %instance, "plugin disabled");
        }
        loaded.report.push(row);
    }
    loaded
}

/// Preflight for `nanoclaw plugins check`: config, inspect, load and `create` every enabled
/// plugin, then tear the instances down without ever calling `start`.
pub async fn check(
    config: &PluginsConfig,
    opts: &LoadOptions,
    factory: &HostServicesFactory<'_>,
) -> Vec<PluginReport> {
    let loaded = load(config, opts, factory).await;
    loaded.teardown_all().await;
    loaded.report
}

fn secs(value: f64) -> Duration {
    // Validated to be finite and in (0, one day] when parsed.
    Duration::try_from_secs_f64(value).unwrap_or(Duration::from_secs(30))
}

#[allow(clippy::too_many_arguments)]
async fn load_one(
    config: &PluginsConfig,
    opts: &LoadOptions,
    locator: &LibraryLocator,
    factory: &HostServicesFactory<'_>,
    instance: &InstanceName,
    entry: &PluginEntry,
    row: &mut PluginReport,
) -> Result<PluginHandle, LoadError> {
    let path = locator.resolve(&entry.library, &config.base_dir)?;
    row.library = Some(path.clone());

    // Inspect, check and dlopen: file I/O and plugin constructors, so off the async workers.
    let (name, channel) = (instance.to_string(), entry.channel.clone());
    let library = blocking(move || loader::open(&name, &path, channel.as_deref())).await??;
    row.library = Some(library.path.clone());
    row.abi = Some(library.abi.clone());
    row.manifest = Some(library.manifest.clone());

    let secrets = Arc::clone(&opts.secrets);
    let (name, table) = (instance.to_string(), entry.settings.clone());
    let settings = blocking(move || resolve_settings(&name, &table, &secrets)).await??;

    let data_dir = opts.data_dir.join("plugins").join(instance.as_str());
    let dir = data_dir.clone();
    blocking(move || create_private_dir(&dir))
        .await?
        .map_err(|source| LoadError::DataDir {
            path: data_dir.clone(),
            source,
        })?;

    let services = factory(instance, &library.manifest);
    let plugin_config = PluginConfig {
        instance_name: instance.as_str().into(),
        settings_json: settings.to_string().into(),
        data_dir: data_dir.to_string_lossy().into_owned().into(),
        extra_json: serde_json::json!({
            "host_version": env!("CARGO_PKG_VERSION"),
            "host_abi_version": nanoclaw_plugin_api::ABI_VERSION,
        })
        .to_string()
        .into(),
    };
    let start_timeout = secs(entry.start_timeout_secs);
    let lib = library.clone();
    let create = tokio::task::spawn_blocking(move || lib.create(plugin_config, services));
    let adapter = match tokio::time::timeout(start_timeout, create).await {
        Ok(joined) => joined.map_err(|e| LoadError::Internal(e.to_string()))??,
        Err(_) => return Err(LoadError::Timeout(start_timeout)),
    };
    let limits = CallLimits {
        call_timeout: secs(entry.call_timeout_secs),
        start_timeout,
        max_in_flight: opts.max_in_flight,
    };
    Ok(PluginHandle::new(
        instance.as_str(),
        library.manifest,
        adapter,
        limits,
    ))
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, LoadError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| LoadError::Internal(e.to_string()))
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// A table of the report for `nanoclaw plugins list` / `check`, followed by one line per
/// failure.
pub fn render_report(rows: &[PluginReport]) -> String {
    let header = [
        "INSTANCE",
        "PLUGIN",
        "VERSION",
        "ABI",
        "ENABLED",
        "REQUIRED",
        "STATUS",
        "CAPABILITIES",
    ];
    let table: Vec<[String; 8]> = rows
        .iter()
        .map(|r| {
            let m = r.manifest.as_ref();
            [
                r.instance.clone(),
                m.map_or("-".to_owned(), |m| m.channel_type.clone()),
                m.map_or("-".to_owned(), |m| m.version.clone()),
                r.abi.as_ref().map_or("-".to_owned(), Version::to_string),
                if r.enabled { "yes" } else { "no" }.to_owned(),
                if r.required { "yes" } else { "no" }.to_owned(),
                r.status.label().to_owned(),
                m.map_or("-".to_owned(), |m| m.capabilities.to_string()),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &table {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &[&str]| {
        let mut text = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == cells.len() {
                text.push_str(cell);
            } else {
                let _ = write!(text, "{cell:<w$}  ");
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(&header);
    for row in &table {
        line(&row.each_ref().map(String::as_str));
    }
    for r in rows {
        if let Some(error) = r.error() {
            let _ = writeln!(out, "{}: {error}", r.instance);
        }
    }
    out
}
