//! The supervisor keeps at most one agent container per active session, and at most
//! [`SupervisorConfig::max_containers`] at once (more wait their turn in order): it starts one
//! when a session has work (a wake), watches its workspace for replies, recovers the messages
//! a crashed container was working on, and stops containers that sit idle, overrun their
//! turn, or misbehave.
//!
//! Nothing a container writes extends its life: the heartbeat only says it is alive while it
//! works. A session has a turn while it has unfinished messages; a turn longer than
//! [`SupervisorConfig::max_turn`] ends with the container killed, whatever it claims.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::mpsc;

mod watch;
use nanoclaw_schema::session::{env, layout};
use nanoclaw_schema::time;

use crate::config::Paths;
use crate::container::{
    ContainerExit, ContainerName, ContainerSpec, DockerRunner, InstallId, MountAllowlist,
    MountRequest, NetworkMode, ResourceLimits, RunnerConfig, RunnerError, UserIds,
};
use crate::db::Db;
use crate::error::{Error, IoContext, Result};
use crate::ids::{AgentGroupId, SessionId};
use crate::model_proxy::{Api, ModelProxy};
use crate::sessions::inbound::{self, Retry};
use crate::sessions::outbound;
use crate::sessions::{ContainerStatus, Session, SessionStatus, SessionStore, registry};
use crate::store::agent_groups::{self, AgentGroup, AgentProvider};

/// Retries of a message whose container died while working on it, before it is failed.
pub const MAX_TRIES: i64 = 5;
/// First backoff of such a retry (doubles each time).
pub const RETRY_BASE: Duration = Duration::from_secs(5);
/// The host's `inbound.db-wal` may grow this large while a container holds a read
/// transaction open (nothing can be checkpointed then); beyond it the container is stopped.
pub const MAX_INBOUND_WAL_BYTES: u64 = 64 * 1024 * 1024;
/// With sessions waiting for a container slot, a container without work is stopped after
/// this long instead of the full idle timeout.
pub const IDLE_WHEN_CROWDED: Duration = Duration::from_secs(5);
/// Claims of a container the host looks at per check (real ones are a handful).
const MAX_CLAIMS: usize = 64;

/// The image `container/build.sh --claude` builds.
pub const DEFAULT_CLAUDE_IMAGE: &str = "nanoclaw-agent-claude:latest";

/// How agent containers are run.
#[derive(Debug, Clone)]
pub struct SupervisorConfig {
    /// The image agents run in (built locally; never pulled).
    pub image: String,
    /// The image of Claude agents that name none (`container/build.sh --claude`).
    pub claude_image: String,
    /// Provider for agent groups that do not choose one.
    pub default_provider: AgentProvider,
    pub network: NetworkMode,
    pub limits: ResourceLimits,
    /// A running container with no work for this long is stopped.
    pub idle_timeout: Duration,
    /// A claimed message with no sign of life for this long means the agent is stuck.
    pub stuck_after: Duration,
    /// The longest a session may keep unfinished work with its container running.
    pub max_turn: Duration,
    /// Containers running at once; further sessions wait for a slot.
    pub max_containers: usize,
    pub user: (u32, u32),
    pub time_zone: String,
}

impl SupervisorConfig {
    pub fn new(image: impl Into<String>) -> Self {
        SupervisorConfig {
            image: image.into(),
            claude_image: DEFAULT_CLAUDE_IMAGE.to_string(),
            default_provider: AgentProvider::Mock,
            network: NetworkMode::None,
            limits: ResourceLimits::default(),
            idle_timeout: Duration::from_secs(30 * 60),
            stuck_after: Duration::from_secs(10 * 60),
            max_turn: Duration::from_secs(30 * 60),
            max_containers: 8,
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
    /// Since when the session has had unfinished work (its turn), as the host saw it.
    busy_since: Option<Instant>,
    /// When its work last finished (or the container started).
    idle_since: Instant,
    /// When the host first saw each message claimed.
    claims_seen: HashMap<String, Instant>,
}

/// What the supervisor asks the rest of the daemon to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// Something may be waiting in this session's outbound.db.
    Outbound(SessionId),
    /// A session waits for a container slot: look for containers to stop (and keep looking
    /// while sessions wait).
    Crowded,
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
    /// Sessions waiting for a container slot, in order.
    waiting: Mutex<VecDeque<Session>>,
    /// Why the host killed a container, until its exit is handled.
    killed: Mutex<HashMap<SessionId, String>>,
    /// File events of running sessions' workspaces.
    events: watch::Watch,
    notices: mpsc::UnboundedSender<Notice>,
    /// Model-API sockets of running sessions whose provider calls a model.
    proxy: Arc<ModelProxy>,
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
        proxy: Arc<ModelProxy>,
    ) -> Result<Arc<Supervisor>> {
        std::fs::create_dir_all(paths.home())
            .io_context(|| format!("create {}", paths.home().display()))?;
        let install = InstallId::from_data_dir(paths.home())
            .io_context(|| format!("resolve the data dir {}", paths.home().display()))?;
        let events = watch::Watch::new(notices.clone());
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
            waiting: Mutex::new(VecDeque::new()),
            killed: Mutex::new(HashMap::new()),
            events,
            notices,
            proxy,
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

    /// Whether the session's agent is waiting on a model answer right now.
    pub fn model_busy(&self, id: &SessionId) -> bool {
        self.proxy.busy(id)
    }

    /// Marks a session's file events as looked at; later events notify again.
    pub fn take_notice(&self, id: &SessionId) {
        self.events.take(id);
    }

    /// Makes sure a container works on the session. Does nothing if one runs or is starting;
    /// at the container limit, the session waits for a slot (in order).
    pub async fn wake(&self, session: &Session) -> Result<()> {
        if session.status != SessionStatus::Active || self.is_running(&session.id) {
            return Ok(());
        }
        {
            let running = self.running.lock().unwrap_or_else(|p| p.into_inner());
            let mut starting = self.starting.lock().unwrap_or_else(|p| p.into_inner());
            if starting.contains(&session.id) {
                return Ok(());
            }
            if running.len() + starting.len() >= self.cfg.max_containers.max(1) {
                let mut waiting = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
                if !waiting.iter().any(|s| s.id == session.id) {
                    tracing::info!(session = %session.id, running = running.len(), waiting = waiting.len() + 1,
                        "container limit reached; the session waits for a slot");
                    waiting.push_back(session.clone());
                    let _ = self.notices.send(Notice::Crowded);
                }
                return Ok(());
            }
            starting.insert(session.id.clone());
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

    /// The next session waiting for a slot, if a slot is free.
    pub fn next_waiting(&self) -> Option<Session> {
        let running = self.running.lock().unwrap_or_else(|p| p.into_inner()).len();
        let starting = self
            .starting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len();
        if running + starting >= self.cfg.max_containers.max(1) {
            return None;
        }
        self.waiting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop_front()
    }

    /// How many sessions wait for a container slot.
    pub fn waiting_count(&self) -> usize {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner()).len()
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
        let (db, sessions, s) = (self.db.clone(), self.sessions.clone(), session.clone());
        let dir = tokio::task::spawn_blocking(move || {
            sessions.refresh_projection(&db, &s)?;
            let dir = sessions.prepare(&s)?;
            // A stale heartbeat from the previous container must not count as this one's.
            dir.clear_heartbeat();
            Ok::<_, Error>(dir)
        })
        .await
        .map_err(|e| Error::invalid(format!("preparing the session failed: {e}")))??;
        let dirs = self.prepare_dirs(&group)?;
        let provider = session
            .provider
            .or(group.provider)
            .unwrap_or(self.cfg.default_provider);
        let runner = self
            .runner()
            .await
            .map_err(|e| Error::invalid(e.to_string()))?;
        let proxy_dir = match Api::for_provider(provider) {
            Some(api) => Some(
                self.proxy
                    .open(&session.id, &group.id, api)
                    .map_err(|e| Error::invalid(e.to_string()))?,
            ),
            None => None,
        };
        let spec = self.spec(session, &group, provider, &dir, &dirs, proxy_dir, &admins);
        let handle = match runner.start(&spec).await {
            Ok(h) => h,
            Err(RunnerError::AlreadyRunning { name }) => {
                tracing::debug!(session = %session.id, container = %name.as_str(), "container already running");
                return Ok(());
            }
            Err(e) => {
                self.proxy.close(&session.id);
                return Err(Error::invalid(e.to_string()));
            }
        };
        let now = Instant::now();
        self.running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                session.id.clone(),
                Running {
                    session: session.clone(),
                    name: handle.name.clone(),
                    started: now,
                    busy_since: None,
                    idle_since: now,
                    claims_seen: HashMap::new(),
                },
            );
        self.db
            .write(|c| registry::set_container_status(c, &session.id, ContainerStatus::Running))?;
        self.events.add(&session.id, &dir.workspace_dir());
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
            }
        }
        // The agent writes its memory here. The operator's commands (`groups create`,
        // `init-first-agent`) may have made the folder as root, so its owner is checked on
        // every wake; only the folder itself, never what the agent put inside.
        if let Some((uid, gid)) = crate::config::session_owner() {
            use std::os::unix::fs::MetadataExt as _;
            let meta = std::fs::symlink_metadata(&agent)
                .io_context(|| format!("inspect {}", agent.display()))?;
            if meta.is_dir() && (meta.uid() != uid || meta.gid() != gid) {
                std::os::unix::fs::lchown(&agent, Some(uid), Some(gid))
                    .io_context(|| format!("chown {}", agent.display()))?;
            }
        }
        // The approved MCP servers, as the container config has them now.
        crate::self_mod::write_mcp_servers_file(&config, &group.container_config)?;
        Ok(AgentDirs {
            agent,
            config,
            global,
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn spec(
        &self,
        session: &Session,
        group: &AgentGroup,
        provider: AgentProvider,
        dir: &crate::sessions::SessionDir,
        dirs: &AgentDirs,
        proxy_dir: Option<PathBuf>,
        admins: &[crate::ids::UserId],
    ) -> ContainerSpec {
        let (uid, gid) = self.cfg.user;
        let default_image = match provider {
            AgentProvider::Claude => &self.cfg.claude_image,
            AgentProvider::Mock | AgentProvider::OpenAi => &self.cfg.image,
        };
        let mut spec = ContainerSpec::new(
            session.id.as_str(),
            group.id.as_str(),
            group
                .container_config
                .get("image")
                .and_then(|v| v.as_str())
                .unwrap_or(default_image),
            dir.workspace_dir(),
            &dirs.agent,
            UserIds::new(uid, gid),
        );
        spec.inbound_dir = Some(dir.inbound_dir());
        spec.global_dir = Some(dirs.global.clone());
        spec.config_dir = Some(dirs.config.clone());
        if proxy_dir.is_some() {
            spec.env.insert(
                env::MODEL_SOCKET.into(),
                layout::CONTAINER_MODEL_SOCKET.to_string(),
            );
        }
        spec.proxy_dir = proxy_dir;
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
        let vars = [
            (env::SESSION_DIR, layout::CONTAINER_WORKSPACE.to_string()),
            (env::INBOUND_DIR, layout::CONTAINER_INBOUND_DIR.to_string()),
            (env::AGENT_DIR, layout::CONTAINER_AGENT_DIR.to_string()),
            (env::GLOBAL_DIR, layout::CONTAINER_GLOBAL_DIR.to_string()),
            (env::AGENT_GROUP_ID, group.id.to_string()),
            (env::SESSION_ID, session.id.to_string()),
            (env::PROVIDER, provider.to_string()),
            (env::ASSISTANT_NAME, group.display_name().to_string()),
            (
                env::ADMIN_USER_IDS,
                admins
                    .iter()
                    .map(|a| a.as_str())
                    .collect::<Vec<_>>()
                    .join(","),
            ),
            ("TZ", self.cfg.time_zone.clone()),
            ("HOME", layout::CONTAINER_HOME.to_string()),
        ];
        spec.env
            .extend(vars.into_iter().map(|(k, v)| (k.to_string(), v)));
        if dirs.config.join("mock.toml").is_file() {
            spec.env.insert(
                env::MOCK_SCRIPT.into(),
                format!("{}/mock.toml", layout::CONTAINER_CONFIG_DIR),
            );
        }
        let model = group
            .container_config
            .get("model")
            .and_then(|v| v.as_str())
            .map(str::to_string)
            .or_else(|| match provider {
                AgentProvider::OpenAi => self.proxy.settings().openai_model.clone(),
                AgentProvider::Mock | AgentProvider::Claude => None,
            });
        if let Some(model) = model {
            spec.env.insert(env::MODEL.into(), model);
        }
        if let Ok(level) = std::env::var("NANOCLAW_AGENT_LOG") {
            spec.env.insert(env::LOG.into(), level);
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

    /// Stops every running container of an agent group (its configuration changed: the next
    /// wake uses the new one) and waits, up to 15 s, until their exits are processed.
    /// Returns how many were stopped.
    pub async fn stop_agent(&self, agent: &AgentGroupId, reason: &str) -> usize {
        let ids: Vec<SessionId> = self
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter(|r| r.session.agent_group_id == *agent)
            .map(|r| r.session.id.clone())
            .collect();
        for id in &ids {
            self.stop(id, reason).await;
        }
        // Return once the exits are processed, so a wake that follows starts a new container
        // instead of finding the old one still counted as running.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        while ids.iter().any(|id| self.is_running(id)) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        ids.len()
    }

    /// Kills a session's container at once. Its turn counts as a failed try of the messages
    /// it left unfinished.
    pub async fn kill(&self, id: &SessionId, reason: &str) {
        let Some(name) = self.container_of(id) else {
            return;
        };
        tracing::warn!(session = %id, reason, "killing agent container");
        self.killed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.clone(), reason.to_string());
        if let Ok(runner) = self.runner().await {
            let _ = runner.kill(&name).await;
        }
    }

    /// Handles a container that ended: bookkeeping, a last look at its replies, recovery of
    /// what it was working on. Returns what to wake: the session itself if it still has work
    /// (now or at an instant), and the next session waiting for the freed slot.
    pub async fn on_exit(&self, exit: &ContainerExit) -> Result<Vec<(Session, Option<Instant>)>> {
        let mut wake = Vec::new();
        let Ok(id) = SessionId::parse(&exit.session_id) else {
            return Ok(wake);
        };
        self.running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
        self.proxy.close(&id);
        let killed = self
            .killed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
        if let Some(next) = self.next_waiting() {
            wake.push((next, None));
        }
        let Some(session) = self.db.read(|c| registry::get(c, &id))? else {
            return Ok(wake);
        };
        self.db
            .write(|c| registry::set_container_status(c, &id, ContainerStatus::Stopped))?;
        self.events.remove(&id);
        if exit.requested && killed.is_none() {
            tracing::info!(session = %id, status = ?exit.status, "agent container stopped");
        } else {
            tracing::warn!(session = %id, status = ?exit.status, killed = killed.as_deref(),
                log = exit.log_tail.as_deref().unwrap_or(""), "agent container ended");
        }
        let _ = self.notices.send(Notice::Outbound(id.clone()));
        let (sessions, s) = (self.sessions.clone(), session.clone());
        let notices = self.notices.clone();
        let work = tokio::task::spawn_blocking(move || {
            recover(&sessions, &s, killed.is_some(), &notices)?;
            next_work(&sessions, &s)
        })
        .await
        .map_err(|e| Error::invalid(format!("recovery failed: {e}")))??;
        wake.extend(work);
        Ok(wake)
    }

    /// Checks running containers: stops idle ones, kills stuck ones and those that overran
    /// their turn or misbehaved. The checks run on the blocking pool, one per container.
    pub async fn check_running(&self) {
        let running: Vec<Running> = self
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        let crowded = self.waiting_count() > 0;
        let checks = running.into_iter().map(|r| {
            let (db, sessions, cfg) = (self.db.clone(), self.sessions.clone(), self.cfg.clone());
            async move {
                let id = r.session.id.clone();
                let verdict = tokio::task::spawn_blocking(move || {
                    let mut r = r;
                    let v = health_of(&db, &sessions, &cfg, &mut r, crowded);
                    (r, v)
                })
                .await;
                (id, verdict)
            }
        });
        for (id, verdict) in futures::future::join_all(checks).await {
            let (r, verdict) = match verdict {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(session = %id, error = %e, "container check failed");
                    continue;
                }
            };
            if let Some(slot) = self
                .running
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get_mut(&id)
            {
                slot.busy_since = r.busy_since;
                slot.idle_since = r.idle_since;
                slot.claims_seen = r.claims_seen;
            }
            match verdict {
                Ok(Verdict::Fine) => {}
                Ok(Verdict::Idle) => self.stop(&id, "idle").await,
                Ok(Verdict::Gone) => self.stop(&id, "session closed").await,
                Ok(Verdict::Kill(why)) => self.kill(&id, &why).await,
                Err(e) => {
                    tracing::warn!(session = %id, error = %e, "could not check container")
                }
            }
        }
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
        self.events.clear();
        self.proxy.close_all();
    }

    /// At start-up: recover sessions whose container died with the previous host, and
    /// return those with work waiting. Sessions left in the old directory layout (which
    /// their agents could write whole) are closed: the next message starts a new one.
    pub fn startup_scan(&self) -> Result<StartupScan> {
        let active = self.db.read(|c| registry::list(c, None, true))?;
        self.db.write(registry::reset_container_status)?;
        let mut scan = StartupScan {
            queued: self.db.read(crate::sessions::queue::sessions_waiting)?,
            ..Default::default()
        };
        for s in active {
            let dir = self.sessions.session_dir(&s)?;
            if dir
                .path()
                .join(nanoclaw_schema::session::INBOUND_DB)
                .exists()
            {
                tracing::warn!(session = %s.id, dir = %dir.path().display(),
                    "session in the old directory layout closed; its files are kept, the next message starts a new session");
                self.db.write(|c| registry::close(c, &s.id))?;
                continue;
            }
            if !dir.exists() {
                continue;
            }
            let checked = (|| {
                recover(&self.sessions, &s, false, &self.notices)?;
                if let Some(w) = next_work(&self.sessions, &s)? {
                    scan.work.push(w);
                }
                let written = self.sessions.with_outbound(&s, outbound::max_seq)?;
                let frontier = self.sessions.with_inbound(&s, |c| inbound::frontier(c))?;
                if written > frontier {
                    scan.undelivered.push(s.clone());
                }
                Ok::<_, Error>(())
            })();
            if let Err(e) = checked {
                tracing::warn!(session = %s.id, error = %e, "could not recover session");
            }
            // Idle sessions keep no connection open.
            self.sessions.forget(&s.id);
        }
        Ok(scan)
    }
}

/// Gives the messages a dead container had claimed another try (with backoff), or up on
/// them after [`MAX_TRIES`], and clears the claims. When the host killed the container
/// (a stuck or overlong turn), every message it left pending counts as tried.
fn recover(
    sessions: &SessionStore,
    session: &Session,
    killed: bool,
    notices: &mpsc::UnboundedSender<Notice>,
) -> Result<()> {
    let dir = sessions.session_dir(session)?;
    let pending = sessions.with_inbound(session, |c| inbound::pending_ids(c))?;
    let claimed: HashSet<String> = sessions
        .with_outbound(session, |r| outbound::processing_claims(r, MAX_CLAIMS))?
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    let ids: Vec<String> = pending
        .into_iter()
        .filter(|id| killed || claimed.contains(id))
        .collect();
    if !claimed.is_empty() {
        outbound::clear_stale_claims(&dir.outbound_db())?;
    }
    if ids.is_empty() {
        return Ok(());
    }
    let retries = sessions.with_inbound(session, |c| {
        inbound::retry_claimed(c, &ids, MAX_TRIES, RETRY_BASE, jiff::Timestamp::now())
    })?;
    for r in retries {
        match r {
            Retry::At { id, tries, at } => {
                tracing::warn!(session = %session.id, message = id, tries, at, "message will be retried")
            }
            Retry::Failed { id, tries } => {
                tracing::error!(session = %session.id, message = id, tries, "message failed: the agent kept failing");
                let _ = notices.send(Notice::GaveUp {
                    session: session.id.clone(),
                    message_id: id,
                });
            }
        }
    }
    Ok(())
}

/// Whether the session has work: now (`None`) or at a later instant.
fn next_work(
    sessions: &SessionStore,
    session: &Session,
) -> Result<Option<(Session, Option<Instant>)>> {
    let now = time::now();
    let (due, next) = sessions.with_inbound(session, |c| {
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

/// Decides about one running container from what the host itself knows: its session's
/// unfinished messages (`inbound.db`), how long they have been unfinished, and when the host
/// first saw each claimed. The agent's own timestamps and heartbeat never extend a turn.
fn health_of(
    db: &Db,
    sessions: &SessionStore,
    cfg: &SupervisorConfig,
    r: &mut Running,
    crowded: bool,
) -> Result<Verdict> {
    // A session closed or deleted (with its agent group) by the operator needs no container.
    let current = db.read(|c| registry::get(c, &r.session.id))?;
    let Some(current) = current.filter(|s| s.status == SessionStatus::Active) else {
        return Ok(Verdict::Gone);
    };
    let dir = sessions.session_dir(&r.session)?;
    let wal = dir.inbound_wal_bytes();
    if wal > MAX_INBOUND_WAL_BYTES {
        return Ok(Verdict::Kill(format!(
            "inbound.db's log grew to {} MiB: the container holds a read open",
            wal / (1024 * 1024)
        )));
    }
    let now = Instant::now();
    let pending: HashSet<String> = sessions
        .with_inbound(&r.session, |c| inbound::pending_ids(c))?
        .into_iter()
        .collect();
    let due = sessions.with_inbound(&r.session, |c| inbound::due_triggers(c, &time::now()))?;
    // Claims count only for messages the host knows are pending.
    let claims: Vec<String> = sessions
        .with_outbound(&r.session, |o| outbound::processing_claims(o, MAX_CLAIMS))?
        .into_iter()
        .map(|(id, _)| id)
        .filter(|id| pending.contains(id))
        .collect();
    r.claims_seen.retain(|id, _| pending.contains(id));
    for id in &claims {
        r.claims_seen.entry(id.clone()).or_insert(now);
    }
    let busy = !claims.is_empty() || due > 0;
    if !busy {
        if let Some(since) = r.busy_since.take() {
            tracing::debug!(session = %r.session.id, turn = ?since.elapsed(), "turn finished");
            r.idle_since = now;
        }
    } else if r.busy_since.is_none() {
        r.busy_since = Some(now);
    }
    if let Some(since) = r.busy_since
        && since.elapsed() > cfg.max_turn
    {
        return Ok(Verdict::Kill(format!(
            "its turn ran longer than {:?}",
            cfg.max_turn
        )));
    }
    let beat = dir.heartbeat();
    for (id, seen) in &r.claims_seen {
        let seen_at = SystemTime::now()
            .checked_sub(seen.elapsed())
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let alive_since = beat.is_some_and(|b| b > seen_at);
        if !alive_since && seen.elapsed() > cfg.stuck_after {
            return Ok(Verdict::Kill(format!(
                "message {id} claimed with no sign of life since"
            )));
        }
    }
    if busy {
        return Ok(Verdict::Fine);
    }
    // Idle: measured from the last work or the last message routed to it, never from the
    // agent's heartbeat.
    let last_inbound = current.last_active.and_then(|t| time::parse(&t)).map(|t| {
        jiff::Timestamp::now()
            .duration_since(t)
            .try_into()
            .unwrap_or(Duration::ZERO)
    });
    let idle_for = r.idle_since.elapsed().min(r.started.elapsed());
    let idle_for = last_inbound.map_or(idle_for, |l: Duration| idle_for.min(l));
    let limit = if crowded {
        cfg.idle_timeout.min(IDLE_WHEN_CROWDED)
    } else {
        cfg.idle_timeout
    };
    Ok(if idle_for > limit {
        Verdict::Idle
    } else {
        Verdict::Fine
    })
}

/// What the previous run left behind.
#[derive(Debug, Default)]
pub struct StartupScan {
    /// Sessions with messages to work on: now (`None`) or at an instant.
    pub work: Vec<(Session, Option<Instant>)>,
    /// Sessions whose agents wrote something not yet delivered.
    pub undelivered: Vec<Session>,
    /// Sessions with messages queued but not yet written into their inbound.db.
    pub queued: Vec<SessionId>,
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
    /// Stuck, overran its turn, or misbehaved (why).
    Kill(String),
}
