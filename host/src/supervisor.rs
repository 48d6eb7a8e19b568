//! The supervisor keeps at most one agent container per active session: it starts one when a
//! session has work (a wake), watches its `outbound.db` for replies, recovers the messages a
//! crashed container was working on, and stops containers that sit idle.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::mpsc;

use nanoclaw_schema::session::{HEARTBEAT_FILE, OUTBOUND_DB};
use nanoclaw_schema::time;

use crate::config::Paths;
use crate::container::{
    ContainerExit, ContainerName, ContainerSpec, DockerRunner, InstallId, MountAllowlist,
    MountRequest, NetworkMode, ResourceLimits, RunnerConfig, RunnerError, UserIds,
};
use crate::db::Db;
use crate::error::{Error, IoContext, Result};
use crate::ids::SessionId;
use crate::sessions::inbound::{self, Retry};
use crate::sessions::outbound;
use crate::sessions::{ContainerStatus, Session, SessionStatus, SessionStore, registry};
use crate::store::agent_groups::{self, AgentGroup, AgentProvider};

/// Retries of a message whose container died while working on it, before it is failed.
pub const MAX_TRIES: i64 = 5;
/// First backoff of such a retry (doubles each time).
pub const RETRY_BASE: Duration = Duration::from_secs(5);

/// How agent containers are run.
#[derive(Debug, Clone)]
pub struct SupervisorConfig {
    /// The image agents run in (built locally; never pulled).
    pub image: String,
    /// Provider for agent groups that do not choose one.
    pub default_provider: AgentProvider,
    pub network: NetworkMode,
    pub limits: ResourceLimits,
    /// A running container with no activity for this long is stopped.
    pub idle_timeout: Duration,
    /// A message claimed this long ago with no sign of life since is considered stuck.
    pub stuck_after: Duration,
    pub user: (u32, u32),
    pub time_zone: String,
}

impl SupervisorConfig {
    pub fn new(image: impl Into<String>) -> Self {
        SupervisorConfig {
            image: image.into(),
            default_provider: AgentProvider::Mock,
            network: NetworkMode::None,
            limits: ResourceLimits::default(),
            idle_timeout: Duration::from_secs(30 * 60),
            stuck_after: Duration::from_secs(10 * 60),
            user: crate::config::container_user(),
            time_zone: crate::config::time_zone_name(),
        }
    }
}

#[derive(Debug, Clone)]
struct Running {
    session: Session,
    name: ContainerName,
    started: Instant,
}

/// What the supervisor asks the rest of the daemon to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// Something may be waiting in this session's outbound.db.
    Outbound(SessionId),
    /// Tell a chat its message could not be handled (the agent kept failing).
    GaveUp {
        session: SessionId,
        message_id: String,
    },
}

pub struct Supervisor {
    cfg: SupervisorConfig,
    paths: Paths,
    db: Arc<Db>,
    sessions: Arc<SessionStore>,
    install: InstallId,
    runner: tokio::sync::Mutex<Option<DockerRunner>>,
    last_connect: Mutex<Option<Instant>>,
    exits: mpsc::Sender<ContainerExit>,
    running: Mutex<HashMap<SessionId, Running>>,
    starting: Mutex<HashSet<SessionId>>,
    watcher: Mutex<Option<notify::RecommendedWatcher>>,
    notices: mpsc::UnboundedSender<Notice>,
}

impl Supervisor {
    /// Creates the supervisor. Connecting to the engine is attempted now and again on later
    /// wakes, so a daemon started before the engine still works once it is up.
    pub async fn new(
        cfg: SupervisorConfig,
        paths: Paths,
        db: Arc<Db>,
        sessions: Arc<SessionStore>,
        exits: mpsc::Sender<ContainerExit>,
        notices: mpsc::UnboundedSender<Notice>,
    ) -> Result<Arc<Supervisor>> {
        std::fs::create_dir_all(paths.home())
            .io_context(|| format!("create {}", paths.home().display()))?;
        let install = InstallId::from_data_dir(paths.home())
            .io_context(|| format!("resolve the data dir {}", paths.home().display()))?;
        let watcher = outbound_watcher(sessions.root(), notices.clone())?;
        let sup = Arc::new(Supervisor {
            cfg,
            paths,
            db,
            sessions,
            install,
            runner: tokio::sync::Mutex::new(None),
            last_connect: Mutex::new(None),
            exits,
            running: Mutex::new(HashMap::new()),
            starting: Mutex::new(HashSet::new()),
            watcher: Mutex::new(Some(watcher)),
            notices,
        });
        if let Err(e) = sup.runner().await {
            tracing::error!(error = %e, "the Docker engine is not reachable; agents cannot start until it is");
        }
        Ok(sup)
    }

    pub fn config(&self) -> &SupervisorConfig {
        &self.cfg
    }

    /// The engine connection, (re)connecting at most every few seconds.
    async fn runner(&self) -> std::result::Result<DockerRunner, RunnerError> {
        let mut slot = self.runner.lock().await;
        if let Some(r) = slot.as_ref() {
            return Ok(r.clone());
        }
        {
            let mut last = self.last_connect.lock().unwrap_or_else(|p| p.into_inner());
            if last.is_some_and(|t| t.elapsed() < Duration::from_secs(5)) {
                return Err(RunnerError::Cancelled {
                    what: "engine connection (retrying shortly)",
                });
            }
            *last = Some(Instant::now());
        }
        let runner =
            DockerRunner::connect(RunnerConfig::new(self.install.clone()), self.exits.clone())
                .await?;
        let known: HashSet<ContainerName> = HashSet::new();
        match runner.reap_orphans(&known).await {
            Ok(report) => tracing::info!(?report, "reaped containers left by an earlier run"),
            Err(e) => tracing::warn!(error = %e, "could not reap old containers"),
        }
        if !runner.image_exists(&self.cfg.image).await.unwrap_or(false) {
            tracing::error!(
                image = self.cfg.image,
                "the agent image is missing; build it with container/build.sh"
            );
        }
        *slot = Some(runner.clone());
        Ok(runner)
    }

    /// Whether a container runs for the session.
    pub fn is_running(&self, id: &SessionId) -> bool {
        self.running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(id)
    }

    /// The sessions with a running container.
    pub fn running_sessions(&self) -> Vec<Session> {
        self.running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .map(|r| r.session.clone())
            .collect()
    }

    /// Makes sure a container works on the session. Does nothing if one runs or is starting.
    pub async fn wake(&self, session: &Session) -> Result<()> {
        if session.status != SessionStatus::Active || self.is_running(&session.id) {
            return Ok(());
        }
        if !self
            .starting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(session.id.clone())
        {
            return Ok(());
        }
        let result = self.start(session).await;
        self.starting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&session.id);
        if let Err(e) = &result {
            tracing::error!(session = %session.id, error = %e, "agent container did not start; its messages wait");
        }
        result
    }

    async fn start(&self, session: &Session) -> Result<()> {
        let started = Instant::now();
        let group = self
            .db
            .read(|c| agent_groups::get(c, &session.agent_group_id))?
            .ok_or_else(|| Error::not_found("agent group", session.agent_group_id.as_str()))?;
        let admins = self
            .db
            .read(|c| crate::access::admin_user_ids(c, &group.id))?;
        self.db
            .read(|c| self.sessions.refresh_projection(c, session, None))?;
        let session_dir = self.sessions.session_dir(session)?;
        let dirs = self.prepare_dirs(&group)?;
        // A stale heartbeat from the previous container must not count as this one's.
        let _ = std::fs::remove_file(session_dir.join(HEARTBEAT_FILE));
        let spec = self.spec(session, &group, &session_dir, &dirs, &admins);
        let runner = self
            .runner()
            .await
            .map_err(|e| Error::invalid(e.to_string()))?;
        let handle = match runner.start(&spec).await {
            Ok(h) => h,
            Err(RunnerError::AlreadyRunning { name }) => {
                tracing::debug!(session = %session.id, container = %name.as_str(), "container already running");
                return Ok(());
            }
            Err(e) => return Err(Error::invalid(e.to_string())),
        };
        self.running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                session.id.clone(),
                Running {
                    session: session.clone(),
                    name: handle.name.clone(),
                    started: Instant::now(),
                },
            );
        self.db
            .write(|c| registry::set_container_status(c, &session.id, ContainerStatus::Running))?;
        self.watch(&session_dir, true);
        tracing::info!(session = %session.id, agent = %group.folder, container = handle.name.as_str(),
            ms = started.elapsed().as_millis() as u64, "agent container started");
        // Replies written before the watch was in place are picked up too.
        let _ = self.notices.send(Notice::Outbound(session.id.clone()));
        Ok(())
    }

    /// Creates the group's folder, its config dir and the global memory dir, owned so the
    /// container's user can use them.
    fn prepare_dirs(&self, group: &AgentGroup) -> Result<AgentDirs> {
        let agent = self.paths.groups().join(group.folder.as_str());
        let config = self.paths.agent_config(group.folder.as_str());
        let global = self.paths.global();
        for dir in [&agent, &config, &global] {
            if !dir.exists() {
                std::fs::create_dir_all(dir).io_context(|| format!("create {}", dir.display()))?;
                if let Some((uid, gid)) = crate::config::session_owner().filter(|_| *dir == agent) {
                    std::os::unix::fs::chown(dir, Some(uid), Some(gid))
                        .io_context(|| format!("chown {}", dir.display()))?;
                }
            }
        }
        Ok(AgentDirs {
            agent,
            config,
            global,
        })
    }

    fn spec(
        &self,
        session: &Session,
        group: &AgentGroup,
        session_dir: &Path,
        dirs: &AgentDirs,
        admins: &[crate::ids::UserId],
    ) -> ContainerSpec {
        let provider = session
            .provider
            .or(group.provider)
            .unwrap_or(self.cfg.default_provider);
        let (uid, gid) = self.cfg.user;
        let mut spec = ContainerSpec::new(
            session.id.as_str(),
            group.id.as_str(),
            group
                .container_config
                .get("image")
                .and_then(|v| v.as_str())
                .unwrap_or(&self.cfg.image),
            session_dir,
            &dirs.agent,
            UserIds::new(uid, gid),
        );
        spec.global_dir = Some(dirs.global.clone());
        spec.config_dir = Some(dirs.config.clone());
        spec.network = self.cfg.network.clone();
        spec.limits = self.cfg.limits;
        spec.extra_mounts = self.extra_mounts(group);
        if let Some(mem) = group
            .container_config
            .get("memory_mb")
            .and_then(|v| v.as_u64())
        {
            spec.limits.memory_bytes = mem * 1024 * 1024;
        }
        let env = [
            ("NANOCLAW_SESSION_DIR", "/workspace".to_string()),
            ("NANOCLAW_AGENT_DIR", "/workspace/agent".to_string()),
            ("NANOCLAW_GLOBAL_DIR", "/workspace/global".to_string()),
            ("NANOCLAW_AGENT_GROUP_ID", group.id.to_string()),
            ("NANOCLAW_SESSION_ID", session.id.to_string()),
            ("NANOCLAW_PROVIDER", provider.to_string()),
            ("NANOCLAW_ASSISTANT_NAME", group.display_name().to_string()),
            (
                "NANOCLAW_ADMIN_USER_IDS",
                admins
                    .iter()
                    .map(|a| a.as_str())
                    .collect::<Vec<_>>()
                    .join(","),
            ),
            ("TZ", self.cfg.time_zone.clone()),
            ("HOME", "/workspace/.home".to_string()),
        ];
        spec.env
            .extend(env.into_iter().map(|(k, v)| (k.to_string(), v)));
        if dirs.config.join("mock.toml").is_file() {
            spec.env.insert(
                "NANOCLAW_MOCK_SCRIPT".into(),
                "/workspace/config/mock.toml".into(),
            );
        }
        if let Some(model) = group.container_config.get("model").and_then(|v| v.as_str()) {
            spec.env.insert("NANOCLAW_MODEL".into(), model.to_string());
        }
        if let Ok(level) = std::env::var("NANOCLAW_AGENT_LOG") {
            spec.env.insert("NANOCLAW_LOG".into(), level);
        }
        spec
    }

    /// The group's requested extra mounts that pass the operator's allowlist
    /// (`<data>/mount-allowlist.toml`; without it, none do). Refusals are logged.
    fn extra_mounts(&self, group: &AgentGroup) -> Vec<crate::container::AllowedMount> {
        let requests: Vec<MountRequest> = group
            .container_config
            .get("mounts")
            .and_then(|m| m.as_array())
            .into_iter()
            .flatten()
            .filter_map(|m| {
                Some(MountRequest {
                    host_path: PathBuf::from(m.get("host_path")?.as_str()?),
                    container_name: m.get("name").and_then(|n| n.as_str()).map(str::to_string),
                    read_write: m
                        .get("read_write")
                        .and_then(|v| v.as_bool())
                        .unwrap_or(false),
                })
            })
            .collect();
        if requests.is_empty() {
            return Vec::new();
        }
        let allowlist = MountAllowlist::load(&self.paths.mount_allowlist()).unwrap_or_else(|e| {
            tracing::error!(error = %e, "mount allowlist unreadable; no extra mounts");
            MountAllowlist::deny_all()
        });
        let check = allowlist.check(&requests);
        for r in &check.rejected {
            tracing::warn!(agent = %group.folder, path = %r.request.host_path.display(), reason = %r.reason,
                "extra mount refused");
        }
        check.accepted
    }

    fn watch(&self, dir: &Path, on: bool) {
        use notify::Watcher;
        let mut guard = self.watcher.lock().unwrap_or_else(|p| p.into_inner());
        let Some(w) = guard.as_mut() else { return };
        let result = if on {
            w.watch(dir, notify::RecursiveMode::NonRecursive)
        } else {
            w.unwatch(dir)
        };
        if let Err(e) = result {
            tracing::warn!(dir = %dir.display(), error = %e, "session directory watch");
        }
    }

    /// Stops a session's container (it may finish nothing; claims are recovered on exit).
    fn container_of(&self, id: &SessionId) -> Option<ContainerName> {
        self.running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .map(|r| r.name.clone())
    }

    pub async fn stop(&self, id: &SessionId, reason: &str) {
        let Some(name) = self.container_of(id) else {
            return;
        };
        tracing::info!(session = %id, reason, "stopping agent container");
        if let Ok(runner) = self.runner().await
            && let Err(e) = runner.stop(&name, Duration::from_secs(5)).await
        {
            tracing::warn!(session = %id, error = %e, "stop failed; killing");
            let _ = runner.kill(&name).await;
        }
    }

    /// Kills a session's container at once.
    pub async fn kill(&self, id: &SessionId, reason: &str) {
        let Some(name) = self.container_of(id) else {
            return;
        };
        tracing::warn!(session = %id, reason, "killing agent container");
        if let Ok(runner) = self.runner().await {
            let _ = runner.kill(&name).await;
        }
    }

    /// Handles a container that ended: bookkeeping, a last look at its replies, recovery of
    /// what it was working on. Returns the session if it still has work (wake it again, now or
    /// at `again_at`).
    pub async fn on_exit(
        &self,
        exit: &ContainerExit,
    ) -> Result<Option<(Session, Option<Instant>)>> {
        let Ok(id) = SessionId::parse(&exit.session_id) else {
            return Ok(None);
        };
        let removed = self
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
        let Some(session) = self.db.read(|c| registry::get(c, &id))? else {
            return Ok(None);
        };
        self.db
            .write(|c| registry::set_container_status(c, &id, ContainerStatus::Stopped))?;
        let dir = self.sessions.session_dir(&session)?;
        self.watch(&dir, false);
        if exit.requested {
            tracing::info!(session = %id, status = ?exit.status, "agent container stopped");
        } else {
            tracing::warn!(session = %id, status = ?exit.status, log = exit.log_tail.as_deref().unwrap_or(""),
                "agent container exited on its own");
        }
        let _ = self.notices.send(Notice::Outbound(id.clone()));
        let _ = removed;
        self.recover(&session)?;
        self.next_work(&session)
    }

    /// Gives the messages a dead container had claimed another try (with backoff), or up
    /// on them after [`MAX_TRIES`], and clears the claims.
    pub fn recover(&self, session: &Session) -> Result<()> {
        let dir = self.sessions.session_dir(session)?;
        let claims = self
            .sessions
            .with_outbound(session, outbound::processing_claims)?;
        if claims.is_empty() {
            return Ok(());
        }
        let ids: Vec<String> = claims.into_iter().map(|(id, _)| id).collect();
        let retries = self.sessions.with_inbound(session, |c| {
            inbound::retry_claimed(c, &ids, MAX_TRIES, RETRY_BASE, jiff::Timestamp::now())
        })?;
        outbound::clear_stale_claims(&dir.join(OUTBOUND_DB))?;
        for r in retries {
            match r {
                Retry::At { id, tries, at } => {
                    tracing::warn!(session = %session.id, message = id, tries, at, "message will be retried")
                }
                Retry::Failed { id, tries } => {
                    tracing::error!(session = %session.id, message = id, tries, "message failed: the agent kept dying");
                    let _ = self.notices.send(Notice::GaveUp {
                        session: session.id.clone(),
                        message_id: id,
                    });
                }
            }
        }
        Ok(())
    }

    /// Whether the session has work: now (`None`) or at a later instant.
    fn next_work(&self, session: &Session) -> Result<Option<(Session, Option<Instant>)>> {
        let now = time::now();
        let (due, next) = self.sessions.with_inbound(session, |c| {
            Ok((inbound::due_triggers(c, &now)?, inbound::next_due(c, &now)?))
        })?;
        if due > 0 {
            return Ok(Some((session.clone(), None)));
        }
        Ok(next.and_then(|t| time::parse(&t)).map(|t| {
            let wait: Duration = t
                .duration_since(jiff::Timestamp::now())
                .try_into()
                .unwrap_or(Duration::ZERO);
            (session.clone(), Some(Instant::now() + wait))
        }))
    }

    /// Checks running containers: stops idle ones, kills stuck ones.
    pub async fn check_running(&self) {
        let running: Vec<Running> = self
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        for r in running {
            match self.health_of(&r) {
                Ok(Verdict::Fine) => {}
                Ok(Verdict::Idle) => self.stop(&r.session.id, "idle").await,
                Ok(Verdict::Gone) => self.stop(&r.session.id, "session closed").await,
                Ok(Verdict::Stuck(why)) => self.kill(&r.session.id, &why).await,
                Err(e) => {
                    tracing::warn!(session = %r.session.id, error = %e, "could not check container")
                }
            }
        }
    }

    fn health_of(&self, r: &Running) -> Result<Verdict> {
        // A session closed or deleted (with its agent group) by the operator needs no container.
        let current = self.db.read(|c| registry::get(c, &r.session.id))?;
        if current.is_none_or(|s| s.status != SessionStatus::Active) {
            return Ok(Verdict::Gone);
        }
        let dir = self.sessions.session_dir(&r.session)?;
        let heartbeat = std::fs::metadata(dir.join(HEARTBEAT_FILE))
            .and_then(|m| m.modified())
            .ok();
        let claims = self
            .sessions
            .with_outbound(&r.session, outbound::processing_claims)?;
        let tool = self
            .sessions
            .with_outbound(&r.session, outbound::current_tool)?;
        let tolerance = tool
            .and_then(|(_, ms)| ms)
            .map(|ms| Duration::from_millis(ms.max(0) as u64))
            .map_or(self.cfg.stuck_after, |d| d.max(self.cfg.stuck_after));
        let now = SystemTime::now();
        for (id, claimed) in &claims {
            let Some(claimed) = time::parse(claimed) else {
                continue;
            };
            let claimed = SystemTime::UNIX_EPOCH
                + Duration::from_millis(claimed.as_millisecond().max(0) as u64);
            let alive_since = heartbeat.is_some_and(|h| h > claimed);
            if !alive_since && now.duration_since(claimed).unwrap_or_default() > tolerance {
                return Ok(Verdict::Stuck(format!(
                    "message {id} claimed with no sign of life since"
                )));
            }
        }
        if !claims.is_empty() {
            return Ok(Verdict::Fine);
        }
        let pending = self
            .sessions
            .with_inbound(&r.session, |c| inbound::due_triggers(c, &time::now()))?;
        if pending > 0 {
            return Ok(Verdict::Fine);
        }
        let last_beat = heartbeat.map(|h| now.duration_since(h).unwrap_or_default());
        let since_start = r.started.elapsed();
        let idle_for = last_beat.map_or(since_start, |b| b.min(since_start));
        let last_inbound = self
            .db
            .read(|c| registry::get(c, &r.session.id))?
            .and_then(|s| s.last_active)
            .and_then(|t| time::parse(&t))
            .map(|t| {
                jiff::Timestamp::now()
                    .duration_since(t)
                    .try_into()
                    .unwrap_or(Duration::ZERO)
            });
        let idle_for = last_inbound.map_or(idle_for, |l: Duration| idle_for.min(l));
        Ok(if idle_for > self.cfg.idle_timeout {
            Verdict::Idle
        } else {
            Verdict::Fine
        })
    }

    /// Stops every container (daemon shutdown). Their claims are recovered at next start.
    pub async fn shutdown(&self) {
        let ids: Vec<SessionId> = self
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect();
        let stops = ids.iter().map(|id| self.stop(id, "host shutting down"));
        futures::future::join_all(stops).await;
        self.watcher
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
    }

    /// At start-up: recover sessions whose container died with the previous host, and
    /// return those with work waiting.
    pub fn startup_scan(&self) -> Result<StartupScan> {
        let active = self.db.read(|c| registry::list(c, None, true))?;
        self.db.write(registry::reset_container_status)?;
        let mut scan = StartupScan::default();
        for s in active {
            if !self.sessions.session_dir(&s)?.exists() {
                continue;
            }
            if let Err(e) = self.recover(&s) {
                tracing::warn!(session = %s.id, error = %e, "could not recover session");
                continue;
            }
            if let Some(w) = self.next_work(&s)? {
                scan.work.push(w);
            }
            let written = self.sessions.with_outbound(&s, |c| {
                Ok(c.query_row("SELECT COUNT(*) FROM messages_out", [], |r| {
                    r.get::<_, i64>(0)
                })?)
            })?;
            let handled = self.sessions.with_inbound(&s, |c| {
                Ok(c.query_row("SELECT COUNT(*) FROM delivered", [], |r| r.get::<_, i64>(0))?)
            })?;
            if written > handled {
                scan.undelivered.push(s.clone());
            }
            // Idle sessions keep no connection open.
            self.sessions.forget(&s.id);
        }
        Ok(scan)
    }
}

/// What the previous run left behind.
#[derive(Debug, Default)]
pub struct StartupScan {
    /// Sessions with messages to work on: now (`None`) or at an instant.
    pub work: Vec<(Session, Option<Instant>)>,
    /// Sessions whose agents wrote something not yet delivered.
    pub undelivered: Vec<Session>,
}

struct AgentDirs {
    agent: PathBuf,
    config: PathBuf,
    global: PathBuf,
}

enum Verdict {
    Fine,
    Idle,
    /// The session was closed or deleted.
    Gone,
    Stuck(String),
}

/// The session of an `outbound.db*` path under `root/<agent>/<session>/`.
/// Watches session directories (added with `watch`) and reports what may mean new replies
/// as [`Notice::Outbound`]: writes to `outbound.db` and its `-wal`, and touches of the
/// heartbeat file.
///
/// The heartbeat matters: inotify reports a commit's writes to the `-wal` file, but the
/// commit becomes visible to readers only when the WAL index (shared memory, written through
/// mmap, so no event) is updated after the last write. A drain woken by the last `-wal` event
/// can look before that and find nothing new; if no further event came, the reply would wait
/// for the sweep. The agent runner touches the heartbeat after every turn's commit, which
/// gives an event when the replies are surely visible.
fn outbound_watcher(
    sessions_root: &Path,
    notices: mpsc::UnboundedSender<Notice>,
) -> Result<notify::RecommendedWatcher> {
    // notify reports events under the absolute form of a watched path (it joins a relative
    // one to the current directory), and the data dir is usually relative (`data`): compare
    // against the absolute root, or no event ever matches and replies wait for the sweep.
    let root = std::path::absolute(sessions_root)
        .io_context(|| format!("resolve {}", sessions_root.display()))?;
    notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        for path in &event.paths {
            if let Some(id) = outbound_session(&root, path) {
                let _ = notices.send(Notice::Outbound(id));
            }
        }
    })
    .map_err(|e| Error::invalid(format!("cannot watch session directories: {e}")))
}

fn outbound_session(root: &Path, path: &Path) -> Option<SessionId> {
    let name = path.file_name()?.to_str()?;
    if !name.starts_with(OUTBOUND_DB) && name != HEARTBEAT_FILE {
        return None;
    }
    let session_dir = path.parent()?;
    if session_dir.parent()?.parent()? != root {
        return None;
    }
    SessionId::parse(session_dir.file_name()?.to_str()?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outbound_events_map_to_sessions() {
        let root = Path::new("/data/sessions");
        let got = outbound_session(
            root,
            Path::new("/data/sessions/ag-1/sess-2/outbound.db-wal"),
        );
        assert_eq!(got.unwrap().as_str(), "sess-2");
        assert!(
            outbound_session(root, Path::new("/data/sessions/ag-1/sess-2/inbound.db-wal"))
                .is_none()
        );
        assert!(outbound_session(root, Path::new("/elsewhere/ag-1/sess-2/outbound.db")).is_none());
        let beat = Path::new("/data/sessions/ag-1/sess-2").join(HEARTBEAT_FILE);
        assert_eq!(outbound_session(root, &beat).unwrap().as_str(), "sess-2");
    }

    /// The same path, relative to the current directory (which the test leaves alone).
    fn relative_to_cwd(path: &Path) -> PathBuf {
        let cwd = std::env::current_dir().unwrap();
        let mut rel = PathBuf::new();
        for _ in cwd.components().skip(1) {
            rel.push("..");
        }
        rel.join(path.strip_prefix("/").unwrap())
    }

    /// Waits up to 10 s for an outbound notice.
    fn next_notice(rx: &mut mpsc::UnboundedReceiver<Notice>) -> Option<SessionId> {
        let end = Instant::now() + Duration::from_secs(10);
        loop {
            match rx.try_recv() {
                Ok(Notice::Outbound(id)) => return Some(id),
                Ok(_) => {}
                Err(_) if Instant::now() > end => return None,
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    }

    #[test]
    fn a_heartbeat_touch_after_a_commit_is_noticed() {
        use notify::Watcher as _;
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("sessions");
        let session = root.join("ag-1").join("sess-3");
        std::fs::create_dir_all(&session).unwrap();
        // The agent runner's touch: the file exists, only its mtime changes (IN_ATTRIB).
        let beat = session.join(HEARTBEAT_FILE);
        std::fs::write(&beat, b"").unwrap();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut watcher = outbound_watcher(&root, tx).unwrap();
        watcher
            .watch(&session, notify::RecursiveMode::NonRecursive)
            .unwrap();
        std::fs::OpenOptions::new()
            .append(true)
            .open(&beat)
            .unwrap()
            .set_modified(SystemTime::now())
            .unwrap();
        let noticed = next_notice(&mut rx);
        assert_eq!(noticed.map(|id| id.to_string()).as_deref(), Some("sess-3"));
    }

    #[test]
    fn replies_are_noticed_with_a_relative_data_dir() {
        use notify::Watcher as _;
        let tmp = tempfile::tempdir().unwrap();
        let root = relative_to_cwd(&tmp.path().join("sessions"));
        assert!(root.is_relative());
        let session = root.join("ag-1").join("sess-2");
        std::fs::create_dir_all(&session).unwrap();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut watcher = outbound_watcher(&root, tx).unwrap();
        watcher
            .watch(&session, notify::RecursiveMode::NonRecursive)
            .unwrap();
        std::fs::write(session.join(OUTBOUND_DB), b"reply").unwrap();
        let noticed = next_notice(&mut rx);
        assert_eq!(noticed.map(|id| id.to_string()).as_deref(), Some("sess-2"));
    }
}
