//! Where things live. Everything an install owns sits under one data directory
//! (`--data-dir`, env `NANOCLAW_HOME`, default `./data`).

use std::path::{Path, PathBuf};

pub mod secrets;

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

    /// Operator-written config of one agent group (`CLAUDE.md`, `mock.toml`), mounted
    /// read-only into its containers. Kept outside `groups/` so no agent can write it.
    pub fn agent_config(&self, folder: &str) -> PathBuf {
        self.home.join("config").join(folder)
    }

    /// Shared memory every agent mounts read-only.
    pub fn global(&self) -> PathBuf {
        self.groups().join("global")
    }

    /// Per-session model-API proxy sockets: `proxy/<session id>/model.sock`.
    pub fn model_proxy(&self) -> PathBuf {
        self.home.join(nanoclaw_schema::session::layout::PROXY_DIR)
    }

    /// The daemon's control socket (owner-only).
    pub fn control_socket(&self) -> PathBuf {
        self.home.join("control.sock")
    }

    /// The local chat channel's socket (the `cli` plugin's default).
    pub fn chat_socket(&self) -> PathBuf {
        self.plugin_data().join("cli").join("chat.sock")
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
        self.home.join(crate::container::mounts::ALLOWLIST_FILE)
    }

    /// The daemon's log file when started in the background by the quickstart script.
    pub fn log_dir(&self) -> PathBuf {
        self.home.join("logs")
    }
}

/// The uid:gid agent containers run as: the host's own user, or 1000:1000 when the host
/// runs as root (containers never run as root).
pub fn container_user() -> (u32, u32) {
    // SAFETY: geteuid/getegid cannot fail and touch no memory.
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    if uid == 0 || gid == 0 {
        (1000, 1000)
    } else {
        (uid, gid)
    }
}

/// When the host runs as root, files the container must write are handed to its user.
pub fn session_owner() -> Option<(u32, u32)> {
    // SAFETY: as above.
    let uid = unsafe { libc::geteuid() };
    (uid == 0).then(container_user)
}

/// The host's IANA time zone name (`TZ`, else the system's, else UTC).
pub fn time_zone_name() -> String {
    if let Ok(tz) = std::env::var("TZ")
        && jiff::tz::TimeZone::get(&tz).is_ok()
    {
        return tz;
    }
    jiff::tz::TimeZone::system()
        .iana_name()
        .unwrap_or("UTC")
        .to_string()
}
