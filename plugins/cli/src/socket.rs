//! Creating the listening socket so that only its owner can ever connect.
//!
//! The socket's directory is private (0700, owned by the daemon's user) *before* the socket
//! exists, so the moment between `bind` and the `chmod 0600` that follows is not a window:
//! nobody else can reach the path. No process-wide umask is touched (the host's other
//! threads share it).

use std::io;
use std::os::unix::fs::{DirBuilderExt as _, FileTypeExt as _, MetadataExt as _, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nanoclaw_plugin_api::abi::PluginError;
use nanoclaw_plugin_api::kit::tracing;

/// Identity of the socket file we created: teardown removes the path only while it is still
/// that file (not one a newer daemon put there).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileId {
    dev: u64,
    ino: u64,
}

impl FileId {
    fn of(meta: &std::fs::Metadata) -> Self {
        Self {
            dev: meta.dev(),
            ino: meta.ino(),
        }
    }
}

/// Makes sure `dir` exists, belongs to the daemon's user and is mode 0700.
///
/// A missing directory is created 0700. An existing one that others can access is
/// tightened only when `may_tighten` (the plugin's own data dir); any other directory is the
/// operator's, and we refuse rather than chmod it.
pub fn prepare_dir(dir: &Path, may_tighten: bool) -> Result<(), PluginError> {
    let fail =
        |e: io::Error| PluginError::config(format!("socket directory {}: {e}", dir.display()));
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(fail)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(fail)?;
    }
    let meta = std::fs::metadata(dir).map_err(fail)?;
    if !meta.is_dir() {
        return Err(PluginError::config(format!(
            "socket directory {} is not a directory",
            dir.display()
        )));
    }
    let euid = nix::unistd::geteuid().as_raw();
    if meta.uid() != euid {
        return Err(PluginError::config(format!(
            "socket directory {} belongs to uid {}, not to the daemon's user (uid {euid})",
            dir.display(),
            meta.uid()
        )));
    }
    let mode = meta.permissions().mode() & 0o7777;
    if mode != 0o700 {
        if !may_tighten {
            return Err(PluginError::config(format!(
                "socket directory {} has mode {mode:04o}: other users could reach the socket; \
                 use a directory only the daemon's user can open (chmod 700)",
                dir.display()
            )));
        }
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(fail)?;
    }
    Ok(())
}

/// Clears the way for a new socket at `path`: nothing there is fine; a socket nobody listens
/// on (left by a crash) is removed; a socket someone still listens on, or anything that is not
/// a socket, is refused.
pub async fn remove_stale(path: &Path) -> Result<(), PluginError> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(PluginError::config(format!("{}: {e}", path.display()))),
    };
    if !meta.file_type().is_socket() {
        return Err(PluginError::config(format!(
            "{} exists and is not a socket; refusing to replace it (move it away or set \
             another socket_path)",
            path.display()
        )));
    }
    let probe = tokio::time::timeout(
        Duration::from_secs(1),
        tokio::net::UnixStream::connect(path),
    )
    .await;
    match probe {
        Ok(Ok(_)) | Err(_) => Err(PluginError::network(format!(
            "{} is in use: another process is listening on it (is another nanoclaw running \
             with the same data directory?)",
            path.display()
        ))),
        Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionRefused => {
            match std::fs::remove_file(path) {
                Ok(()) => {
                    tracing::info!(path = %path.display(), "removed a stale socket");
                    Ok(())
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(PluginError::config(format!(
                    "cannot remove stale socket {}: {e}",
                    path.display()
                ))),
            }
        }
        Ok(Err(e)) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Ok(Err(e)) => Err(PluginError::config(format!(
            "cannot probe existing socket {}: {e}",
            path.display()
        ))),
    }
}

/// Binds `path` (whose directory [`prepare_dir`] made private) and makes it 0600. Must run
/// inside a tokio runtime.
pub fn bind(path: &Path) -> Result<(tokio::net::UnixListener, FileId), PluginError> {
    let fail =
        |e: io::Error| PluginError::config(format!("cannot listen on {}: {e}", path.display()));
    let listener = tokio::net::UnixListener::bind(path).map_err(fail)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(fail)?;
    let meta = std::fs::symlink_metadata(path).map_err(fail)?;
    Ok((listener, FileId::of(&meta)))
}

/// Removes the socket at `path` if it is still the one we created.
pub fn remove_ours(path: &Path, id: FileId) {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if FileId::of(&meta) == id => {
            if let Err(e) = std::fs::remove_file(path) {
                tracing::warn!(path = %path.display(), "cannot remove socket: {e}");
            }
        }
        Ok(_) => tracing::info!(
            path = %path.display(),
            "socket path now holds another file; leaving it"
        ),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(path = %path.display(), "cannot check socket: {e}"),
    }
}

/// Checks a configured socket path: it must name a file in some directory and fit in a
/// `sockaddr_un`. Returns the directory.
pub fn validate_path(path: &Path) -> Result<PathBuf, PluginError> {
    if path.file_name().is_none() {
        return Err(PluginError::config(format!(
            "socket_path {} does not name a file",
            path.display()
        )));
    }
    std::os::unix::net::SocketAddr::from_pathname(path).map_err(|e| {
        PluginError::config(format!(
            "socket_path {} is unusable ({e}); Unix socket paths are limited to about 100 bytes",
            path.display()
        ))
    })?;
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => Ok(dir.to_path_buf()),
        _ => Ok(PathBuf::from(".")),
    }
}
