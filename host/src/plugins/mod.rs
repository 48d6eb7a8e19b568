//! Channel plugins: configuration, loading, and calling them from async code.
//!
//! * [`config`]: `plugins.toml` ([`PluginsConfig`]) and library lookup ([`LibraryLocator`]).
//! * [`settings`]: a plugin's settings as JSON, with `{ env = "NAME" }` secrets resolved.
//! * [`loader`]: ABI pre-check from the file ([`loader::inspect`]), then abi_stable loading
//!   ([`loader::open`]); one clear [`LoadError`] per failure.
//! * [`handle`]: [`PluginHandle`], async methods that run each FFI call on a blocking
//!   thread, a few at a time, with a timeout.
//! * [`registry`]: [`registry::load`] every configured plugin, the per-plugin
//!   [`PluginReport`], [`registry::check`] for preflight.
//!
//! The host side of [`HostServices`](nanoclaw_plugin_api::abi::HostServices) is supplied by
//! the caller through a [`HostServicesFactory`] ([`services`] is the daemon's), per
//! instance: the `[plugins.<name>]` name is the channel's name in ids, so two instances of
//! one plugin (two bots of one platform) keep their users and chats apart.

pub mod channels;
pub mod config;
pub mod handle;
pub mod loader;
pub mod registry;
pub mod services;
pub mod settings;

pub use config::{ConfigError, InstanceName, LibraryLocator, PluginEntry, PluginsConfig};
pub use handle::{CallError, CallLimits, CallStats, PluginHandle};
pub use loader::{AbiMismatch, LoadError, PluginManifest};
pub use registry::{
    HostServicesFactory, LoadOptions, LoadedPlugins, PluginReport, PluginStatus, render_report,
};
pub use settings::SettingsError;

use nanoclaw_plugin_api::abi::LogLevel;

/// Writes a plugin's [`HostServices::log`](nanoclaw_plugin_api::abi::HostServices::log)
/// line to the host's `tracing` subscriber, under target `nanoclaw::plugin`, with the
/// instance and the plugin-side target as fields. Unknown levels are logged as info.
pub fn emit_plugin_log(instance: &str, level: LogLevel, target: &str, message: &str) {
    const T: &str = "nanoclaw::plugin";
    match level {
        LogLevel::ERROR => {
            tracing::error!(target: T, plugin = instance, plugin_target = target, "{message}")
        }
        LogLevel::WARN => {
            tracing::warn!(target: T, plugin = instance, plugin_target = target, "{message}")
        }
        LogLevel::DEBUG => {
            tracing::debug!(target: T, plugin = instance, plugin_target = target, "{message}")
        }
        LogLevel::TRACE => {
            tracing::trace!(target: T, plugin = instance, plugin_target = target, "{message}")
        }
        _ => tracing::info!(target: T, plugin = instance, plugin_target = target, "{message}"),
    }
}
