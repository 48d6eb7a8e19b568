//! Where things live. Everything an install owns sits under one data directory
//! (`--data-dir`, env `NANOCLAW_HOME`, default `./data`).

use std::path::{Path, PathBuf};

/// The file layout of one install.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    home: PathBuf,
}

impl Paths {
    pub fn new(home: impl Into<PathBuf>) -> Self {
        Paths { home: home.into() }
    }

    /// The data directory itself.
    pub fn home(&self) -> &Path {
        &self.home
    }

    /// The central database.
    pub fn db(&self) -> PathBuf {
        self.home.join("v2.db")
    }

    /// Session directories: `sessions/<agent group id>/<session id>/`.
    pub fn sessions(&self) -> PathBuf {
        self.home.join("sessions")
    }

    /// Agent group folders: `groups/<folder>/`.
    pub fn groups(&self) -> PathBuf {
        self.home.join("groups")
    }

    /// Shared memory every agent mounts read-only.
    pub fn global(&self) -> PathBuf {
        self.groups().join("global")
    }

    /// The local chat channel's socket (owner-only).
    pub fn cli_socket(&self) -> PathBuf {
        self.home.join("cli.sock")
    }

    /// Secrets for plugin settings (`KEY=value` lines), never committed.
    pub fn env_file(&self) -> PathBuf {
        self.home.join(".env")
    }

    /// Plugins' private directories: `plugins/<instance>/`.
    pub fn plugin_data(&self) -> PathBuf {
        self.home.join("plugins")
    }

    /// Operator allowlist for extra container mounts.
    pub fn mount_allowlist(&self) -> PathBuf {
        self.home.join("mount-allowlist.toml")
    }

    /// The daemon's log file when started in the background by the quickstart script.
    pub fn log_dir(&self) -> PathBuf {
        self.home.join("logs")
    }
}
