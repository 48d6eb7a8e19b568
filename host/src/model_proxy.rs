//! The model-API proxy: how an agent reaches its model without ever holding the credential.
//!
//! Agent containers have no network. For each running session that calls a model, the host
//! binds a Unix socket in a host-owned directory (`<data>/proxy/<session>/model.sock`) and
//! mounts that directory read-only at `/run/nanoclaw`; the agent-runner relays a loopback
//! port to it. A socket per container means the caller's session and agent group are known
//! from the socket, never from anything the agent sends.
//!
//! For every request the proxy ([`forward`]): forwards only the model endpoints of the
//! session's own API ([`settings::Api`]), refuses when the agent group's daily token budget
//! is spent, drops whatever credential the agent sent and adds the operator's, and streams
//! the answer back as it comes while [`meter`] reads the token usage out of it, recorded in
//! `model_usage` when the answer ends.

mod forward;
pub mod meter;
pub mod settings;

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nanoclaw_schema::session::layout;
use tokio::net::UnixListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::db::Db;
use crate::ids::{AgentGroupId, SessionId};
pub use settings::{Api, ProxySettings};

/// Connections one session may hold open at once; more are closed at once.
const MAX_CONNECTIONS_PER_SESSION: usize = 8;
/// A Unix socket path must fit `sockaddr_un` (108 bytes with the NUL).
const MAX_SOCKET_PATH: usize = 107;

pub struct ModelProxy {
    inner: Arc<Inner>,
}

struct Inner {
    settings: ProxySettings,
    /// `<data>/proxy`.
    root: PathBuf,
    db: Arc<Db>,
    client: reqwest::Client,
    served: Mutex<HashMap<SessionId, Served>>,
}

struct Served {
    /// The accept loop; its connections live in its `JoinSet`, so aborting it ends them too.
    task: tokio::task::AbortHandle,
    in_flight: Arc<AtomicUsize>,
    dir: PathBuf,
}

/// Who calls through one socket: fixed when the socket is made, never read from a request.
#[derive(Clone)]
struct Caller {
    session: SessionId,
    group: AgentGroupId,
    api: Api,
    /// Requests whose answer is still streaming.
    in_flight: Arc<AtomicUsize>,
}

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("cannot prepare the model proxy socket {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the model proxy socket path {0} is too long for a Unix socket (107 bytes); use a shorter data directory"
    )]
    PathTooLong(PathBuf),
}

impl ModelProxy {
    /// `root`: the directory for the per-session socket directories (`<data>/proxy`).
    pub fn new(settings: ProxySettings, root: PathBuf, db: Arc<Db>) -> ModelProxy {
        // reqwest is built without a default TLS provider; the host uses ring, as plugins do.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            // Between bytes of an answer; a model may think for a while before streaming.
            .read_timeout(Duration::from_secs(600))
            .pool_idle_timeout(Duration::from_secs(60))
            .build()
            .unwrap_or_else(|e| {
                tracing::error!(error = %e, "model proxy client setup failed; using defaults");
                reqwest::Client::new()
            });
        ModelProxy {
            inner: Arc::new(Inner {
                settings,
                root,
                db,
                client,
                served: Mutex::new(HashMap::new()),
            }),
        }
    }

    pub fn settings(&self) -> &ProxySettings {
        &self.inner.settings
    }

    /// Serves a socket for one session and returns its directory (to mount read-only at
    /// [`layout::CONTAINER_PROXY_DIR`]). A socket the session already has is replaced.
    pub fn open(
        &self,
        session: &SessionId,
        group: &AgentGroupId,
        api: Api,
    ) -> Result<PathBuf, ProxyError> {
        // A socket already served for the session (a container that was still running) is
        // replaced in place: its directory stays, so a container that has it mounted sees
        // the new socket.
        if let Some(old) = self
            .inner
            .served
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(session)
        {
            old.task.abort();
        }
        let dir = self.inner.root.join(session.as_str());
        let socket = dir.join(layout::MODEL_SOCKET_NAME);
        if socket.as_os_str().len() > MAX_SOCKET_PATH {
            return Err(ProxyError::PathTooLong(socket));
        }
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| ProxyError::Io { path, source }
        };
        create_private_dir(&self.inner.root, None).map_err(io(&self.inner.root))?;
        let owner = crate::config::session_owner();
        create_private_dir(&dir, owner).map_err(io(&dir))?;
        match std::fs::remove_file(&socket) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(&socket)(e)),
        }
        let std_listener = std::os::unix::net::UnixListener::bind(&socket).map_err(io(&socket))?;
        std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600))
            .map_err(io(&socket))?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(&socket, Some(uid), Some(gid)).map_err(io(&socket))?;
        }
        std_listener.set_nonblocking(true).map_err(io(&socket))?;
        let listener = UnixListener::from_std(std_listener).map_err(io(&socket))?;

        let in_flight = Arc::new(AtomicUsize::new(0));
        let caller = Caller {
            session: session.clone(),
            group: group.clone(),
            api,
            in_flight: Arc::clone(&in_flight),
        };
        let task = tokio::spawn(accept_loop(Arc::clone(&self.inner), caller, listener));
        self.inner
            .served
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                session.clone(),
                Served {
                    task: task.abort_handle(),
                    in_flight,
                    dir: dir.clone(),
                },
            );
        tracing::debug!(session = %session, api = %api, "model proxy socket open");
        Ok(dir)
    }

    /// Stops serving a session: its socket goes, and requests still streaming are cut.
    pub fn close(&self, session: &SessionId) {
        let served = self
            .inner
            .served
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(session);
        if let Some(s) = served {
            s.task.abort();
            if let Err(e) = std::fs::remove_dir_all(&s.dir)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(dir = %s.dir.display(), error = %e, "could not remove the model proxy socket");
            }
        }
    }

    /// Removes the socket directories a previous run left (its containers are gone: the
    /// daemon reaps them at start). Links are removed, never followed.
    pub fn remove_stale(&self) {
        let Ok(entries) = std::fs::read_dir(&self.inner.root) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
            let removed = if is_dir {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
            if let Err(e) = removed {
                tracing::warn!(path = %path.display(), error = %e, "could not remove a stale model proxy socket");
            }
        }
    }

    /// Stops serving every session (daemon shutdown).
    pub fn close_all(&self) {
        let ids: Vec<SessionId> = self
            .inner
            .served
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect();
        for id in ids {
            self.close(&id);
        }
    }

    /// Asks the upstream of `api` whether it accepts the credential, with a request that
    /// costs no tokens (`GET /v1/models`). `Ok` carries the HTTP status.
    pub async fn probe(&self, api: Api) -> Result<u16, String> {
        let Some(upstream) = self.inner.settings.upstream(api) else {
            return Err("no credential is configured".into());
        };
        let url = match api {
            Api::Anthropic => format!("{}/v1/models", upstream.base),
            Api::OpenAi => format!("{}/models", upstream.base),
        };
        let req = self
            .inner
            .client
            .get(url)
            .header("anthropic-version", "2023-06-01")
            .timeout(Duration::from_secs(20));
        match forward::with_credential(req, &upstream.credential)
            .send()
            .await
        {
            Ok(answer) => Ok(answer.status().as_u16()),
            Err(e) => Err(error_chain(&e.without_url())),
        }
    }

    /// Whether a model answer for the session is streaming right now (the agent is working
    /// even if it writes nothing else).
    pub fn busy(&self, session: &SessionId) -> bool {
        self.inner
            .served
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(session)
            .is_some_and(|s| s.in_flight.load(Ordering::Relaxed) > 0)
    }
}

impl Drop for ModelProxy {
    fn drop(&mut self) {
        self.close_all();
    }
}

async fn accept_loop(inner: Arc<Inner>, caller: Caller, listener: UnixListener) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS_PER_SESSION));
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((s, _)) => s,
                    Err(e) => {
                        tracing::warn!(session = %caller.session, error = %e, "model proxy accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
                    tracing::warn!(session = %caller.session, "model proxy: too many connections; closing one");
                    continue;
                };
                let (inner, caller) = (Arc::clone(&inner), caller.clone());
                conns.spawn(async move {
                    forward::serve_connection(inner, caller, stream).await;
                    drop(permit);
                });
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

/// Creates `dir` (mode 0700) if missing, handing it to `owner` when the host runs as root.
fn create_private_dir(dir: &Path, owner: Option<(u32, u32)>) -> std::io::Result<()> {
    match std::fs::create_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir)?;
        }
        Err(e) => return Err(e),
    }
    let meta = std::fs::symlink_metadata(dir)?;
    if !meta.is_dir() {
        return Err(std::io::Error::other(format!(
            "{} is not a directory",
            dir.display()
        )));
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::chown(dir, Some(uid), Some(gid))?;
    }
    Ok(())
}

/// An error and its causes on one line (reqwest's own message says little).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
