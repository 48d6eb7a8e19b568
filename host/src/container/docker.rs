//! The bollard-backed runner: start, stop, watch and reap session containers.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::errors::Error as BollardError;
use bollard::models::ContainerSummaryStateEnum;
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, KillContainerOptionsBuilder, ListContainersOptionsBuilder,
    LogsOptionsBuilder, RemoveContainerOptionsBuilder, StopContainerOptionsBuilder,
    WaitContainerOptionsBuilder,
};
use futures::StreamExt;
use nanoclaw_plugin_api::kit::BackoffPolicy;
use tokio::sync::{mpsc, watch};

use super::naming::{ContainerName, InstallId, LABEL_AGENT_GROUP, LABEL_INSTALL, LABEL_SESSION};
use super::spec::{self, ContainerSpec, SpecError};

const DEFAULT_SOCKET: &str = "/var/run/docker.sock";
/// How long stop/kill/remove wait for the exit watcher to report before removing the
/// container themselves.
const WATCHER_GRACE: Duration = Duration::from_secs(30);
/// The watcher gives up (and reports [`ExitStatus::Unknown`]) after the engine has been
/// unreachable this long.
const WATCH_GIVE_UP: Duration = Duration::from_secs(300);
/// Grace given to orphans before SIGKILL.
const REAP_GRACE: Duration = Duration::from_secs(1);
const REAP_CONCURRENCY: usize = 8;
const LOG_TAIL_LINES: &str = "50";
const LOG_TAIL_MAX_BYTES: usize = 8 * 1024;
const LOG_TAIL_TIMEOUT: Duration = Duration::from_secs(2);

/// How to reach the engine.
#[derive(Clone, Debug)]
pub struct RunnerConfig {
    pub install_id: InstallId,
    /// Unix socket of the engine; `None` = `$DOCKER_HOST` if it is `unix://…`, else
    /// `/var/run/docker.sock`.
    pub socket: Option<PathBuf>,
    /// Bound on version negotiation + ping at connect.
    pub connect_timeout: Duration,
    /// Bound on each API request until its response headers arrive (streams such as the
    /// exit watch are not cut by it once they are open).
    pub request_timeout: Duration,
}

impl RunnerConfig {
    pub fn new(install_id: InstallId) -> Self {
        Self {
            install_id,
            socket: None,
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(120),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    #[error(
        "cannot reach the Docker engine at {endpoint}: {reason}\n\
         Start it as root with `dockerd --iptables=false --bridge=none > /var/log/dockerd.log 2>&1 &` \
         or `systemctl start docker`{access_hint}"
    )]
    EngineUnavailable {
        endpoint: String,
        reason: String,
        access_hint: &'static str,
    },
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error(
        "image {image:?} is not in the local engine; build it first (the runner never pulls images)"
    )]
    ImageMissing { image: String },
    #[error("container {name} is already running (or starting) for this session; stop it first")]
    AlreadyRunning { name: ContainerName },
    #[error("no container named {name}")]
    NotFound { name: ContainerName },
    #[error("the exit of container {name} could not be observed: {reason}")]
    ExitUnknown { name: ContainerName, reason: String },
    #[error("{what} was cancelled (the runtime is shutting down)")]
    Cancelled { what: &'static str },
    #[error("docker {op} {target} failed: {source}")]
    Docker {
        op: &'static str,
        target: String,
        #[source]
        source: BollardError,
    },
}

/// How a container ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExitStatus {
    /// The main process exited with `code` (137 after SIGKILL, 143 after SIGTERM).
    Exited { code: i64, oom_killed: bool },
    /// The runner lost sight of the container (removed behind its back, or the engine was
    /// unreachable for minutes). Treat the session as stopped; a new start removes any
    /// leftover first.
    Unknown { reason: String },
}

impl ExitStatus {
    pub fn code(&self) -> Option<i64> {
        match self {
            Self::Exited { code, .. } => Some(*code),
            Self::Unknown { .. } => None,
        }
    }
    pub fn success(&self) -> bool {
        self.code() == Some(0)
    }
}

/// Sent on the runner's exit channel once for every container [`DockerRunner::start`]ed,
/// after the container has been removed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerExit {
    pub session_id: String,
    pub agent_group_id: String,
    pub name: ContainerName,
    pub status: ExitStatus,
    /// True when the host asked for it (stop, kill, remove); false for a crash or an
    /// agent that exited on its own.
    pub requested: bool,
    /// Last lines of output (at most 8 KiB) when the container failed on its own.
    pub log_tail: Option<String>,
}

/// A started container.
#[derive(Clone, Debug)]
pub struct ContainerHandle {
    pub name: ContainerName,
    pub id: String,
    pub session_id: String,
    exit: watch::Receiver<Option<ExitStatus>>,
}

impl ContainerHandle {
    /// Resolves when the container has exited and been removed.
    pub async fn exited(&self) -> ExitStatus {
        let mut rx = self.exit.clone();
        match rx.wait_for(Option::is_some).await {
            Ok(status) => status.clone().unwrap_or_else(|| ExitStatus::Unknown {
                reason: "no status".to_owned(),
            }),
            Err(_) => ExitStatus::Unknown {
                reason: "the runner stopped watching this container".to_owned(),
            },
        }
    }

    /// The exit status if the container has already exited.
    pub fn try_exited(&self) -> Option<ExitStatus> {
        self.exit.borrow().clone()
    }
}

/// A container carrying this install's label.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManagedContainer {
    pub id: String,
    pub name: ContainerName,
    pub session_id: Option<String>,
    pub agent_group_id: Option<String>,
    /// Engine state: created, running, exited, ...
    pub state: String,
    pub running: bool,
}

/// What [`DockerRunner::reap_orphans`] did.
#[derive(Debug, Default)]
pub struct ReapReport {
    pub reaped: Vec<ContainerName>,
    pub failed: Vec<(ContainerName, RunnerError)>,
}

#[derive(Clone, Debug)]
enum Slot {
    /// `start` is between its checks and registering the watcher.
    Starting,
    Running(Tracked),
}

#[derive(Clone, Debug)]
struct Tracked {
    id: String,
    requested: Arc<AtomicBool>,
    exit: watch::Receiver<Option<ExitStatus>>,
}

impl Tracked {
    fn finished(&self) -> bool {
        self.exit.borrow().is_some()
    }
}

type Registry = Arc<Mutex<HashMap<ContainerName, Slot>>>;

fn lock(registry: &Registry) -> MutexGuard<'_, HashMap<ContainerName, Slot>> {
    registry.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Runs session containers on a Docker engine. Cheap to clone; clones share the engine
/// connection, the exit channel and the set of watched containers.
#[derive(Clone, Debug)]
pub struct DockerRunner {
    docker: Docker,
    install: InstallId,
    endpoint: String,
    exits: mpsc::Sender<ContainerExit>,
    registry: Registry,
}

impl DockerRunner {
    /// Connects, negotiates the API version and pings. Exit notifications for every
    /// container this runner starts go to `exits`.
    pub async fn connect(
        config: RunnerConfig,
        exits: mpsc::Sender<ContainerExit>,
    ) -> Result<Self, RunnerError> {
        let (client, endpoint) = match &config.socket {
            Some(path) => {
                let endpoint = format!("unix://{}", path.display());
                let path = path
                    .to_str()
                    .ok_or_else(|| RunnerError::EngineUnavailable {
                        endpoint: endpoint.clone(),
                        reason: "the socket path is not valid UTF-8".to_owned(),
                        access_hint: "",
                    })?;
                (
                    Docker::connect_with_unix(
                        path,
                        config.request_timeout.as_secs().max(1),
                        bollard::API_DEFAULT_VERSION,
                    ),
                    endpoint,
                )
            }
            None => {
                let endpoint = std::env::var("DOCKER_HOST")
                    .ok()
                    .filter(|h| h.starts_with("unix://"))
                    .unwrap_or_else(|| format!("unix://{DEFAULT_SOCKET}"));
                (Docker::connect_with_local_defaults(), endpoint)
            }
        };
        let client = client
            .map_err(|e| unavailable(&endpoint, &e))?
            .with_timeout(config.request_timeout);
        let handshake = async {
            let client = client.negotiate_version().await?;
            client.ping().await?;
            Ok::<_, BollardError>(client)
        };
        let docker = match tokio::time::timeout(config.connect_timeout, handshake).await {
            Ok(Ok(docker)) => docker,
            Ok(Err(e)) => return Err(unavailable(&endpoint, &e)),
            Err(_) => {
                return Err(RunnerError::EngineUnavailable {
                    endpoint,
                    reason: format!("no answer within {:?}", config.connect_timeout),
                    access_hint: "",
                });
            }
        };
        let version = docker.client_version();
        tracing::info!(%endpoint, api = %format!("{}.{}", version.major_version, version.minor_version), "connected to the Docker engine");
        Ok(Self {
            docker,
            install: config.install_id,
            endpoint,
            exits,
            registry: Arc::default(),
        })
    }

    pub fn install_id(&self) -> &InstallId {
        &self.install
    }

    /// The container name this runner uses for a session (`None` for an empty id).
    pub fn container_name(&self, session_id: &str) -> Option<ContainerName> {
        ContainerName::for_session(&self.install, session_id)
    }

    /// Whether the image is present locally.
    pub async fn image_exists(&self, image: &str) -> Result<bool, RunnerError> {
        match self.docker.inspect_image(image).await {
            Ok(_) => Ok(true),
            Err(e) if status_of(&e) == Some(404) => Ok(false),
            Err(e) => Err(self.docker_err("inspect image", image, e)),
        }
    }

    /// Creates and starts the session's container with every hardening setting, after
    /// removing any leftover container with the same name. A background watcher then
    /// waits for it to exit, removes it, and reports a [`ContainerExit`].
    ///
    /// Fails with [`RunnerError::AlreadyRunning`] if this runner is already watching a
    /// live container for the session.
    pub async fn start(&self, spec: &ContainerSpec) -> Result<ContainerHandle, RunnerError> {
        let (spec_owned, install) = (spec.clone(), self.install.clone());
        let prepared = tokio::task::spawn_blocking(move || spec::prepare(&spec_owned, &install))
            .await
            .map_err(|e| join_failure("prepare", e))??;
        let name = prepared.name.clone();

        let guard = StartGuard::claim(&self.registry, &name)?;

        let to_prepare = prepared.clone();
        tokio::task::spawn_blocking(move || spec::ensure_mountpoints(&to_prepare))
            .await
            .map_err(|e| join_failure("mountpoints", e))??;

        self.remove_leftover(&name).await?;
        let options = CreateContainerOptionsBuilder::default()
            .name(name.as_str())
            .build();
        let created = match self
            .docker
            .create_container(Some(options.clone()), prepared.body.clone())
            .await
        {
            Ok(created) => created,
            Err(e) if status_of(&e) == Some(409) => {
                // Someone created the name between our removal and create: try once more.
                self.remove_leftover(&name).await?;
                self.docker
                    .create_container(Some(options), prepared.body.clone())
                    .await
                    .map_err(|e| self.create_err(spec, &name, e))?
            }
            Err(e) => return Err(self.create_err(spec, &name, e)),
        };
        for warning in &created.warnings {
            tracing::warn!(container = %name, %warning, "engine warning on create");
        }

        if let Err(e) = self.docker.start_container(&created.id, None).await {
            if let Err(rm) = remove_force(&self.docker, &created.id).await {
                tracing::warn!(container = %name, error = %rm, "could not remove a container that failed to start");
            }
            return Err(self.docker_err("start", name.as_str(), e));
        }

        let (exit_tx, exit_rx) = watch::channel(None);
        let tracked = Tracked {
            id: created.id.clone(),
            requested: Arc::new(AtomicBool::new(false)),
            exit: exit_rx.clone(),
        };
        guard.commit(tracked.clone());
        tokio::spawn(watch_exit(Watch {
            docker: self.docker.clone(),
            registry: self.registry.clone(),
            exits: self.exits.clone(),
            exit_tx,
            name: name.clone(),
            id: created.id.clone(),
            session_id: spec.session_id.clone(),
            agent_group_id: spec.agent_group_id.clone(),
            requested: tracked.requested,
        }));
        tracing::info!(container = %name, session = %spec.session_id, "agent container started");

        Ok(ContainerHandle {
            name,
            id: created.id,
            session_id: spec.session_id.clone(),
            exit: exit_rx,
        })
    }

    /// Asks the container to stop (SIGTERM, then SIGKILL after `grace`, rounded up to whole
    /// seconds) and returns once it is gone. A missing container is not an error.
    pub async fn stop(&self, name: &ContainerName, grace: Duration) -> Result<(), RunnerError> {
        let tracked = self.tracked_for_shutdown(name);
        let target = self.target(name, tracked.as_ref());
        let secs = i32::try_from(grace.as_secs() + u64::from(grace.subsec_nanos() > 0))
            .unwrap_or(i32::MAX);
        // The stop call itself blocks for up to `grace`.
        let docker = self
            .docker
            .clone()
            .with_timeout(self.docker.timeout() + grace);
        let options = StopContainerOptionsBuilder::default().t(secs).build();
        match docker.stop_container(&target, Some(options)).await {
            Ok(()) => {}
            Err(e) if status_of(&e) == Some(404) => {}
            Err(e) => return Err(self.docker_err("stop", name.as_str(), e)),
        }
        self.finish(name, tracked).await
    }

    /// SIGKILLs the container and returns once it is gone. A missing or already stopped
    /// container is not an error.
    pub async fn kill(&self, name: &ContainerName) -> Result<(), RunnerError> {
        let tracked = self.tracked_for_shutdown(name);
        let target = self.target(name, tracked.as_ref());
        let options = KillContainerOptionsBuilder::default()
            .signal("SIGKILL")
            .build();
        match self.docker.kill_container(&target, Some(options)).await {
            Ok(()) => {}
            // 404: gone; 409: not running.
            Err(e) if matches!(status_of(&e), Some(404 | 409)) => {}
            Err(e) => return Err(self.docker_err("kill", name.as_str(), e)),
        }
        self.finish(name, tracked).await
    }

    /// Force-removes the container (killing it if it runs). A missing container is not an
    /// error.
    pub async fn remove(&self, name: &ContainerName) -> Result<(), RunnerError> {
        let tracked = self.tracked_for_shutdown(name);
        let target = self.target(name, tracked.as_ref());
        remove_force(&self.docker, &target)
            .await
            .map_err(|e| self.docker_err("remove", name.as_str(), e))?;
        self.finish(name, tracked).await
    }

    /// Waits until the container is not running and returns its exit code. For a container
    /// this runner started, this is the watcher's result (the container is removed by
    /// then); otherwise the engine is asked directly.
    pub async fn wait(&self, name: &ContainerName) -> Result<i64, RunnerError> {
        if let Some(tracked) = self.tracked(name) {
            let mut rx = tracked.exit.clone();
            let status = match rx.wait_for(Option::is_some).await {
                Ok(status) => status.clone(),
                Err(_) => None,
            };
            return match status {
                Some(ExitStatus::Exited { code, .. }) => Ok(code),
                Some(ExitStatus::Unknown { reason }) => Err(RunnerError::ExitUnknown {
                    name: name.clone(),
                    reason,
                }),
                None => Err(RunnerError::ExitUnknown {
                    name: name.clone(),
                    reason: "the runner stopped watching this container".to_owned(),
                }),
            };
        }
        match wait_once(&self.docker, name.as_str()).await {
            Some(Ok(code)) => Ok(code),
            Some(Err(e)) if status_of(&e) == Some(404) => {
                Err(RunnerError::NotFound { name: name.clone() })
            }
            Some(Err(e)) => Err(self.docker_err("wait", name.as_str(), e)),
            None => Err(RunnerError::ExitUnknown {
                name: name.clone(),
                reason: "the engine closed the wait without a status".to_owned(),
            }),
        }
    }

    /// Whether a container with this name exists and is running.
    pub async fn is_running(&self, name: &ContainerName) -> Result<bool, RunnerError> {
        match self.docker.inspect_container(name.as_str(), None).await {
            Ok(info) => Ok(info.state.and_then(|s| s.running).unwrap_or(false)),
            Err(e) if status_of(&e) == Some(404) => Ok(false),
            Err(e) => Err(self.docker_err("inspect", name.as_str(), e)),
        }
    }

    /// Every container (running or not) labelled with this install's id.
    pub async fn list_managed(&self) -> Result<Vec<ManagedContainer>, RunnerError> {
        let filter = format!("{LABEL_INSTALL}={}", self.install);
        let filters = HashMap::from([("label", vec![filter.as_str()])]);
        let options = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        let summaries = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(|e| self.docker_err("list", &filter, e))?;
        let mut out = Vec::with_capacity(summaries.len());
        for summary in summaries {
            let Some(id) = summary.id else { continue };
            let raw_name = summary
                .names
                .as_ref()
                .and_then(|names| names.first())
                .map(|n| n.trim_start_matches('/').to_owned())
                .unwrap_or_default();
            let Some(name) = ContainerName::parse(&raw_name) else {
                tracing::warn!(%id, name = %raw_name, "managed container with an unexpected name; skipped");
                continue;
            };
            let labels = summary.labels.unwrap_or_default();
            let state = summary.state;
            out.push(ManagedContainer {
                id,
                name,
                session_id: labels.get(LABEL_SESSION).cloned(),
                agent_group_id: labels.get(LABEL_AGENT_GROUP).cloned(),
                state: state.map(|s| s.to_string()).unwrap_or_default(),
                running: state == Some(ContainerSummaryStateEnum::RUNNING),
            });
        }
        Ok(out)
    }

    /// Stops (1 s grace) and removes every container of this install that is neither in
    /// `known` nor watched by this runner. Call it once at host start, before starting
    /// sessions. Containers of other installs are never touched.
    pub async fn reap_orphans(
        &self,
        known: &HashSet<ContainerName>,
    ) -> Result<ReapReport, RunnerError> {
        let watched: HashSet<ContainerName> = lock(&self.registry).keys().cloned().collect();
        let orphans: Vec<ManagedContainer> = self
            .list_managed()
            .await?
            .into_iter()
            .filter(|c| !known.contains(&c.name) && !watched.contains(&c.name))
            .collect();
        let results: Vec<(ContainerName, Result<(), RunnerError>)> = futures::stream::iter(orphans)
            .map(|c| async move {
                let result = self.stop_and_remove_untracked(&c).await;
                (c.name, result)
            })
            .buffer_unordered(REAP_CONCURRENCY)
            .collect()
            .await;
        let mut report = ReapReport::default();
        for (name, result) in results {
            match result {
                Ok(()) => {
                    tracing::info!(container = %name, "reaped orphan container");
                    report.reaped.push(name);
                }
                Err(e) => {
                    tracing::warn!(container = %name, error = %e, "could not reap orphan container");
                    report.failed.push((name, e));
                }
            }
        }
        Ok(report)
    }

    async fn stop_and_remove_untracked(&self, c: &ManagedContainer) -> Result<(), RunnerError> {
        if c.running {
            let docker = self
                .docker
                .clone()
                .with_timeout(self.docker.timeout() + REAP_GRACE);
            let options = StopContainerOptionsBuilder::default()
                .t(i32::try_from(REAP_GRACE.as_secs()).unwrap_or(1))
                .build();
            match docker.stop_container(&c.id, Some(options)).await {
                Ok(()) => {}
                Err(e) if status_of(&e) == Some(404) => return Ok(()),
                Err(e) => return Err(self.docker_err("stop", c.name.as_str(), e)),
            }
        }
        remove_force(&self.docker, &c.id)
            .await
            .map_err(|e| self.docker_err("remove", c.name.as_str(), e))
    }

    fn tracked(&self, name: &ContainerName) -> Option<Tracked> {
        match lock(&self.registry).get(name) {
            Some(Slot::Running(t)) => Some(t.clone()),
            _ => None,
        }
    }

    /// Like [`Self::tracked`], and records that the host asked for the exit.
    fn tracked_for_shutdown(&self, name: &ContainerName) -> Option<Tracked> {
        let tracked = self.tracked(name)?;
        tracked.requested.store(true, Ordering::SeqCst);
        Some(tracked)
    }

    /// Addresses a watched container by id, so a newer container with the same name is
    /// never hit by mistake.
    fn target(&self, name: &ContainerName, tracked: Option<&Tracked>) -> String {
        tracked.map_or_else(|| name.as_str().to_owned(), |t| t.id.clone())
    }

    /// After stop/kill/remove: a watched container is gone once its watcher reports; an
    /// unwatched one is removed here.
    async fn finish(
        &self,
        name: &ContainerName,
        tracked: Option<Tracked>,
    ) -> Result<(), RunnerError> {
        let Some(tracked) = tracked else {
            return remove_force(&self.docker, name.as_str())
                .await
                .map_err(|e| self.docker_err("remove", name.as_str(), e));
        };
        let mut rx = tracked.exit.clone();
        // Reduce to a bool at once: the watch `Ref` must not live across the next await.
        let reported = matches!(
            tokio::time::timeout(WATCHER_GRACE, rx.wait_for(Option::is_some)).await,
            Ok(Ok(_))
        );
        if !reported {
            tracing::warn!(container = %name, "exit watcher did not report in time; removing directly");
            remove_force(&self.docker, &tracked.id)
                .await
                .map_err(|e| self.docker_err("remove", name.as_str(), e))?;
        }
        Ok(())
    }

    async fn remove_leftover(&self, name: &ContainerName) -> Result<(), RunnerError> {
        match self.docker.inspect_container(name.as_str(), None).await {
            Ok(info) => {
                tracing::info!(container = %name, id = ?info.id, "removing leftover container with the same name");
                remove_force(&self.docker, name.as_str())
                    .await
                    .map_err(|e| self.docker_err("remove leftover", name.as_str(), e))
            }
            Err(e) if status_of(&e) == Some(404) => Ok(()),
            Err(e) => Err(self.docker_err("inspect", name.as_str(), e)),
        }
    }

    fn create_err(
        &self,
        spec: &ContainerSpec,
        name: &ContainerName,
        e: BollardError,
    ) -> RunnerError {
        if status_of(&e) == Some(404) {
            RunnerError::ImageMissing {
                image: spec.image.clone(),
            }
        } else {
            self.docker_err("create", name.as_str(), e)
        }
    }

    fn docker_err(&self, op: &'static str, target: &str, e: BollardError) -> RunnerError {
        if is_connection_error(&e) {
            unavailable(&self.endpoint, &e)
        } else {
            RunnerError::Docker {
                op,
                target: target.to_owned(),
                source: e,
            }
        }
    }
}

/// Holds the registry slot while `start` runs; frees it on any early return (or if the
/// start future is dropped) unless committed.
struct StartGuard<'a> {
    registry: &'a Registry,
    name: ContainerName,
    committed: bool,
}

impl<'a> StartGuard<'a> {
    fn claim(registry: &'a Registry, name: &ContainerName) -> Result<Self, RunnerError> {
        let mut map = lock(registry);
        match map.get(name) {
            Some(Slot::Starting) => {
                return Err(RunnerError::AlreadyRunning { name: name.clone() });
            }
            Some(Slot::Running(t)) if !t.finished() => {
                return Err(RunnerError::AlreadyRunning { name: name.clone() });
            }
            _ => {}
        }
        map.insert(name.clone(), Slot::Starting);
        Ok(Self {
            registry,
            name: name.clone(),
            committed: false,
        })
    }

    fn commit(mut self, tracked: Tracked) {
        lock(self.registry).insert(self.name.clone(), Slot::Running(tracked));
        self.committed = true;
    }
}

impl Drop for StartGuard<'_> {
    fn drop(&mut self) {
        if !self.committed {
            let mut map = lock(self.registry);
            if matches!(map.get(&self.name), Some(Slot::Starting)) {
                map.remove(&self.name);
            }
        }
    }
}

struct Watch {
    docker: Docker,
    registry: Registry,
    exits: mpsc::Sender<ContainerExit>,
    exit_tx: watch::Sender<Option<ExitStatus>>,
    name: ContainerName,
    id: String,
    session_id: String,
    agent_group_id: String,
    requested: Arc<AtomicBool>,
}

/// Waits for one container to exit, collects diagnostics, removes it, then reports.
async fn watch_exit(w: Watch) {
    let status = wait_for_exit(&w.docker, &w.id, &w.name).await;
    let requested = w.requested.load(Ordering::SeqCst);
    let log_tail = match &status {
        ExitStatus::Exited { code, .. } if *code != 0 && !requested => {
            log_tail(&w.docker, &w.id).await
        }
        _ => None,
    };
    if let Err(e) = remove_force(&w.docker, &w.id).await {
        tracing::warn!(container = %w.name, error = %e, "could not remove exited container");
    }
    match &status {
        ExitStatus::Exited { code, oom_killed } if requested || *code == 0 => {
            tracing::info!(container = %w.name, code, oom_killed, requested, "agent container exited");
        }
        ExitStatus::Exited { code, oom_killed } => {
            tracing::warn!(container = %w.name, code, oom_killed, log_tail = log_tail.as_deref().unwrap_or(""), "agent container failed");
        }
        ExitStatus::Unknown { reason } => {
            tracing::warn!(container = %w.name, %reason, "lost track of agent container");
        }
    }
    w.exit_tx.send_replace(Some(status.clone()));
    {
        let mut map = lock(&w.registry);
        if matches!(map.get(&w.name), Some(Slot::Running(t)) if t.id == w.id) {
            map.remove(&w.name);
        }
    }
    let event = ContainerExit {
        session_id: w.session_id,
        agent_group_id: w.agent_group_id,
        name: w.name,
        status,
        requested,
        log_tail,
    };
    if w.exits.send(event).await.is_err() {
        tracing::debug!("exit receiver dropped; exit event discarded");
    }
}

/// Waits with condition `not-running` (which answers at once for an exited container, so
/// there is no window to miss), retrying while the engine is unreachable.
async fn wait_for_exit(docker: &Docker, id: &str, name: &ContainerName) -> ExitStatus {
    let mut first_failure: Option<Instant> = None;
    let mut backoff =
        BackoffPolicy::exponential(Duration::from_millis(250), Duration::from_secs(10)).start();
    let code = loop {
        let error = match wait_once(docker, id).await {
            Some(Ok(code)) => break code,
            Some(Err(e)) if status_of(&e) == Some(404) => {
                return ExitStatus::Unknown {
                    reason: "the container was removed before its exit was observed".to_owned(),
                };
            }
            Some(Err(e)) => e.to_string(),
            None => "the engine closed the wait without a status".to_owned(),
        };
        let since = *first_failure.get_or_insert_with(Instant::now);
        if since.elapsed() >= WATCH_GIVE_UP {
            return ExitStatus::Unknown {
                reason: format!("gave up waiting after repeated engine errors: {error}"),
            };
        }
        tracing::debug!(container = %name, %error, "waiting for container exit failed; retrying");
        // No attempt limit: WATCH_GIVE_UP above ends the loop.
        backoff.wait().await;
    };
    let oom_killed = match docker.inspect_container(id, None).await {
        Ok(info) => info.state.and_then(|s| s.oom_killed).unwrap_or(false),
        Err(_) => false,
    };
    ExitStatus::Exited { code, oom_killed }
}

/// One `wait` call: the exit code, or the engine's error. bollard reports a non-zero
/// exit as `Err(DockerContainerWaitError { code })`; that is mapped back to the code.
async fn wait_once(docker: &Docker, target: &str) -> Option<Result<i64, BollardError>> {
    let options = WaitContainerOptionsBuilder::default()
        .condition("not-running")
        .build();
    let mut stream = docker.wait_container(target, Some(options));
    Some(match stream.next().await? {
        Ok(response) => Ok(response.status_code),
        Err(BollardError::DockerContainerWaitError { code, .. }) => Ok(code),
        Err(e) => Err(e),
    })
}

async fn log_tail(docker: &Docker, id: &str) -> Option<String> {
    let options = LogsOptionsBuilder::default()
        .stdout(true)
        .stderr(true)
        .tail(LOG_TAIL_LINES)
        .build();
    let collect = async {
        let mut out: Vec<u8> = Vec::new();
        let mut stream = docker.logs(id, Some(options));
        while let Some(Ok(chunk)) = stream.next().await {
            out.extend_from_slice(&chunk.into_bytes());
        }
        out
    };
    let bytes = tokio::time::timeout(LOG_TAIL_TIMEOUT, collect).await.ok()?;
    if bytes.is_empty() {
        return None;
    }
    let start = bytes.len().saturating_sub(LOG_TAIL_MAX_BYTES);
    Some(String::from_utf8_lossy(&bytes[start..]).into_owned())
}

async fn remove_force(docker: &Docker, target: &str) -> Result<(), BollardError> {
    let options = RemoveContainerOptionsBuilder::default().force(true).build();
    match docker.remove_container(target, Some(options)).await {
        Ok(()) => Ok(()),
        Err(e) if status_of(&e) == Some(404) => Ok(()),
        // "removal of container … is already in progress"
        Err(e) if status_of(&e) == Some(409) => Ok(()),
        Err(e) => Err(e),
    }
}

fn status_of(e: &BollardError) -> Option<u16> {
    match e {
        BollardError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

fn is_connection_error(e: &BollardError) -> bool {
    matches!(
        e,
        BollardError::HyperLegacyError { .. }
            | BollardError::IOError { .. }
            | BollardError::SocketNotFoundError(_)
            | BollardError::RequestTimeoutError
    )
}

fn unavailable(endpoint: &str, e: &BollardError) -> RunnerError {
    let mut reason = e.to_string();
    let mut permission = matches!(
        e,
        BollardError::IOError { err } if err.kind() == std::io::ErrorKind::PermissionDenied
    );
    let mut source = std::error::Error::source(e);
    while let Some(inner) = source {
        let text = inner.to_string();
        if !reason.contains(&text) {
            reason.push_str(": ");
            reason.push_str(&text);
        }
        if let Some(io) = inner.downcast_ref::<std::io::Error>() {
            permission |= io.kind() == std::io::ErrorKind::PermissionDenied;
        }
        source = inner.source();
    }
    RunnerError::EngineUnavailable {
        endpoint: endpoint.to_owned(),
        reason,
        access_hint: if permission {
            "; this user may not open the socket: run as root or join the `docker` group"
        } else {
            ""
        },
    }
}

/// A blocking helper task did not finish: re-raise its panic, or report cancellation
/// (the runtime is shutting down).
fn join_failure(what: &'static str, e: tokio::task::JoinError) -> RunnerError {
    if e.is_panic() {
        std::panic::resume_unwind(e.into_panic());
    }
    RunnerError::Cancelled { what }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send<T: Send>(_: &T) {}

    /// The host spawns these on a multi-threaded runtime, so they must stay `Send`.
    #[test]
    fn runner_futures_are_send() {
        fn check(runner: &DockerRunner, spec: &ContainerSpec, name: &ContainerName) {
            assert_send(&runner.start(spec));
            assert_send(&runner.stop(name, Duration::from_secs(1)));
            assert_send(&runner.kill(name));
            assert_send(&runner.remove(name));
            assert_send(&runner.wait(name));
            assert_send(&runner.is_running(name));
            assert_send(&runner.list_managed());
            assert_send(&runner.reap_orphans(&HashSet::new()));
            assert_send(&runner.image_exists("x"));
        }
        // Only type-checked: there is no engine here.
        let _ = check;
    }

    #[test]
    fn wait_error_variant_maps_to_the_exit_code() {
        let e = BollardError::DockerContainerWaitError {
            error: String::new(),
            code: 137,
        };
        assert!(!is_connection_error(&e));
        assert_eq!(status_of(&e), None);
        let e = BollardError::DockerResponseServerError {
            status_code: 404,
            message: "No such container".to_owned(),
        };
        assert_eq!(status_of(&e), Some(404));
    }

    #[test]
    fn unavailable_error_names_the_fixes() {
        let e = unavailable(
            "unix:///nope.sock",
            &BollardError::SocketNotFoundError("/nope.sock".to_owned()),
        );
        let text = e.to_string();
        assert!(text.contains("unix:///nope.sock"), "{text}");
        assert!(
            text.contains("dockerd --iptables=false --bridge=none"),
            "{text}"
        );
        assert!(text.contains("systemctl start docker"), "{text}");
        assert!(!text.contains("docker` group"), "{text}");

        let denied = BollardError::IOError {
            err: std::io::Error::from(std::io::ErrorKind::PermissionDenied),
        };
        let text = unavailable("unix:///var/run/docker.sock", &denied).to_string();
        assert!(text.contains("`docker` group"), "{text}");
    }

    #[test]
    fn exit_status_helpers() {
        let ok = ExitStatus::Exited {
            code: 0,
            oom_killed: false,
        };
        assert!(ok.success());
        assert_eq!(ok.code(), Some(0));
        let lost = ExitStatus::Unknown {
            reason: "x".to_owned(),
        };
        assert!(!lost.success());
        assert_eq!(lost.code(), None);
    }
}
