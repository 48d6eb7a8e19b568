//! Sessions: the registry rows, the session directories, and the two session databases.
//!
//! A session directory (see [`dir`]) holds `inbound/` (the host's: `inbound.db`, `inbox/`),
//! mounted read-only into the container, and `workspace/` (the container's: `outbound.db`,
//! `outbox/`, `.heartbeat`). Both DBs use WAL so each side sees the other's commits through
//! the bind mount at once.
//!
//! Rules every caller relies on:
//! - session files are touched only through [`SessionDir`] and this store;
//! - nothing here runs under the central DB lock: read what you need from the central DB
//!   first, then call in here;
//! - waits are short: a container can hold locks on its session DBs on purpose, so the host
//!   gives up after [`HOST_BUSY_TIMEOUT`] and retries later, instead of stalling (call these
//!   functions off the async workers);
//! - `outbound.db` is hostile input: it is read through [`outbound`], which bounds every
//!   value and every query's running time and turns rows into typed values.

pub mod dir;
pub mod inbound;
pub mod outbound;
pub mod queue;
pub mod registry;
pub mod withdrawal;
pub mod writer;

use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lru::LruCache;
use rusqlite::Connection;

use nanoclaw_schema::session::{
    INBOUND_SCHEMA, INBOUND_SCHEMA_VERSION, INBOUND_UPGRADES, OUTBOUND_SCHEMA,
    OUTBOUND_SCHEMA_VERSION,
};

use crate::db::Db;
use crate::error::{Error, Result};
use crate::ids::{AgentGroupId, SessionId};
use crate::store::destinations::{self, Resolved};
use crate::store::messaging_groups::MessagingGroup;
use crate::store::wirings::SessionMode;

pub use dir::{FileName, MessageOutId, SessionDir};
pub use registry::{ContainerStatus, Session, SessionStatus};

/// How many connections per kind (inbound, outbound) stay open; beyond this, the least
/// recently used closes.
/// Each costs little (a small page cache, see [`open_session_db`]), and reopening one per
/// message would dominate routing time for a busy install.
const CONN_CACHE: usize = 256;

/// How long the host waits for a lock on a session DB before giving up (and retrying
/// later). Only the host writes `inbound.db` and WAL readers never block it, so a wait
/// longer than this means a container holds a lock on purpose or is wedged.
pub const HOST_BUSY_TIMEOUT: Duration = Duration::from_millis(250);

/// Owns the session directories and caches of open session DB connections.
pub struct SessionStore {
    root: PathBuf,
    /// uid/gid the container runs as; the workspace is handed to it so it can write.
    owner: Option<(u32, u32)>,
    inbound: ConnCache<Connection>,
    outbound: ConnCache<outbound::Reader>,
}

impl SessionStore {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        SessionStore {
            root: root.into(),
            owner: None,
            inbound: conn_cache(),
            outbound: conn_cache(),
        }
    }

    /// The workspace will be owned by `uid:gid` (the container's user) when the host runs as
    /// root; otherwise the container runs as the host's own user and nothing is changed.
    pub fn with_owner(mut self, owner: Option<(u32, u32)>) -> Self {
        self.owner = owner;
        self
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory of a session.
    pub fn dir(&self, agent: &AgentGroupId, session: &SessionId) -> Result<SessionDir> {
        for part in [agent.as_str(), session.as_str()] {
            if !part
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(Error::invalid(format!(
                    "id {part:?} cannot be used as a directory name"
                )));
            }
        }
        Ok(SessionDir::new(
            self.root.join(agent.as_str()).join(session.as_str()),
        ))
    }

    pub fn session_dir(&self, s: &Session) -> Result<SessionDir> {
        self.dir(&s.agent_group_id, &s.id)
    }

    /// Finds the active session for a message to `agent` from `chat`/`thread` under `mode`,
    /// creating its row if there is none (files come with the first write). True when
    /// created. Central DB only.
    pub fn resolve(
        &self,
        conn: &Connection,
        agent: &AgentGroupId,
        chat: &MessagingGroup,
        thread: Option<&str>,
        mode: SessionMode,
    ) -> Result<(Session, bool)> {
        let existing = match mode {
            SessionMode::AgentShared => registry::newest_active(conn, agent)?,
            SessionMode::Shared => registry::find_active(conn, agent, Some(&chat.id), None)?,
            SessionMode::PerThread => registry::find_active(conn, agent, Some(&chat.id), thread)?,
        };
        if let Some(s) = existing {
            return Ok((s, false));
        }
        let thread = if mode == SessionMode::PerThread {
            thread
        } else {
            None
        };
        let s = self.create(conn, agent, Some(chat), thread)?;
        Ok((s, true))
    }

    /// Creates a session's row. Its directory and databases are made on first use
    /// ([`SessionStore::with_inbound`]), outside the central transaction.
    pub fn create(
        &self,
        conn: &Connection,
        agent: &AgentGroupId,
        chat: Option<&MessagingGroup>,
        thread: Option<&str>,
    ) -> Result<Session> {
        let now = nanoclaw_schema::time::now();
        let s = Session {
            id: SessionId::generate(),
            agent_group_id: agent.clone(),
            messaging_group_id: chat.map(|c| c.id.clone()),
            thread_id: thread.map(str::to_string),
            provider: None,
            status: SessionStatus::Active,
            container_status: ContainerStatus::Stopped,
            last_active: Some(now.clone()),
            created_at: now,
        };
        // The directory name must work before the row exists.
        self.session_dir(&s)?;
        registry::insert(conn, &s)?;
        tracing::info!(session = %s.id, agent = %agent, "session created");
        Ok(s)
    }

    /// Makes sure the session's directory and databases exist (idempotent; cheap once the
    /// connection is cached).
    pub fn prepare(&self, s: &Session) -> Result<SessionDir> {
        let dir = self.session_dir(s)?;
        let new_workspace = dir.ensure(self.owner)?;
        // The router and the supervisor may prepare one new session at once.
        init_db(&dir.inbound_db(), INBOUND_SCHEMA, INBOUND_SCHEMA_VERSION)?;
        if new_workspace {
            init_db(&dir.outbound_db(), OUTBOUND_SCHEMA, OUTBOUND_SCHEMA_VERSION)?;
            dir.hand_over_outbound(self.owner)?;
        }
        Ok(dir)
    }

    /// Runs `f` on the session's `inbound.db`, opening (and caching) the connection and
    /// creating the session's files if needed. Blocking: call it off the async workers.
    pub fn with_inbound<T>(
        &self,
        s: &Session,
        f: impl FnOnce(&mut Connection) -> Result<T>,
    ) -> Result<T> {
        let conn = cached(&self.inbound, &s.id, || {
            let dir = self.prepare(s)?;
            open_inbound(&dir.inbound_db(), HOST_BUSY_TIMEOUT)
        })?;
        let mut guard = conn.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut guard)
    }

    /// Like [`Self::with_inbound`], but a busy DB (its container may hold it) fails at once
    /// instead of after [`HOST_BUSY_TIMEOUT`]: for callers that queue the work instead.
    pub fn with_inbound_now<T>(
        &self,
        s: &Session,
        f: impl FnOnce(&mut Connection) -> Result<T>,
    ) -> Result<T> {
        self.with_inbound(s, |c| {
            c.busy_timeout(Duration::ZERO)?;
            let result = f(c);
            c.busy_timeout(HOST_BUSY_TIMEOUT)?;
            result
        })
    }

    /// Writes one message into the session's `inbound.db` only if that takes no waiting: a
    /// busy DB fails at once, and the caller queues the message.
    pub fn try_insert(&self, s: &Session, m: &queue::Queued) -> Result<inbound::Insert> {
        self.with_inbound_now(s, |c| inbound::insert_message(c, m))
    }

    /// Runs `f` on a bounded, read-only reader of the session's `outbound.db` (cached).
    pub fn with_outbound<T>(
        &self,
        s: &Session,
        f: impl FnOnce(&outbound::Reader) -> Result<T>,
    ) -> Result<T> {
        let dir = self.session_dir(s)?;
        let reader = cached(&self.outbound, &s.id, || {
            outbound::Reader::open(&dir.outbound_db())
        })?;
        let guard = reader.lock().unwrap_or_else(|p| p.into_inner());
        guard.bounded(|| f(&guard))
    }

    /// Closes the connections of sessions unused for `idle`, so idle sessions cost no memory.
    pub fn evict_idle(&self, idle: Duration) -> usize {
        evict(&self.inbound, idle) + evict(&self.outbound, idle)
    }

    /// Drops the cached connections of a session (e.g. after it was closed).
    pub fn forget(&self, s: &SessionId) {
        self.inbound
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop(s);
        self.outbound
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop(s);
    }

    /// Rewrites the session's destinations projection and default reply address from the
    /// central DB: read there first, written here after the central lock is released.
    /// Call whenever the agent's destinations change and before every wake.
    pub fn refresh_projection(&self, db: &Db, s: &Session) -> Result<()> {
        let projection = db.read(|c| Projection::read(c, s))?;
        self.write_projection(s, &projection)
    }

    pub fn write_projection(&self, s: &Session, p: &Projection) -> Result<()> {
        self.with_inbound(s, |db| {
            inbound::write_destinations(db, &p.destinations)?;
            inbound::write_routing(
                db,
                p.chat.as_ref().map(|c| c.channel_type.as_str()),
                p.chat.as_ref().map(|c| c.platform_id.as_str()),
                s.thread_id.as_deref(),
            )
        })
    }

    /// Rewrites the projection of every active session of `agent` (after its destinations
    /// changed). A session whose DB is busy is skipped with a warning: it is refreshed again
    /// before its next wake. Returns how many sessions were refreshed.
    pub fn refresh_agent(&self, db: &Db, agent: &AgentGroupId) -> Result<usize> {
        let sessions = db.read(|c| {
            registry::list(c, Some(agent), true)?
                .into_iter()
                .map(|s| Projection::read(c, &s).map(|p| (s, p)))
                .collect::<Result<Vec<_>>>()
        })?;
        let mut done = 0;
        for (s, p) in &sessions {
            match self.write_projection(s, p) {
                Ok(()) => done += 1,
                Err(e) => tracing::warn!(session = %s.id, error = %e,
                    "destinations of a session not refreshed now; they are before its next wake"),
            }
        }
        Ok(done)
    }
}

/// What the host projects into a session's `inbound.db` from the central DB.
#[derive(Debug, Clone, PartialEq)]
pub struct Projection {
    pub destinations: Vec<Resolved>,
    /// The session's origin chat (its default reply address).
    pub chat: Option<MessagingGroup>,
}

impl Projection {
    pub fn read(conn: &Connection, s: &Session) -> Result<Projection> {
        let chat = match &s.messaging_group_id {
            Some(id) => crate::store::messaging_groups::get(conn, id)?,
            None => None,
        };
        Ok(Projection {
            destinations: destinations::resolved(conn, &s.agent_group_id)?,
            chat,
        })
    }
}

/// Open connections by session, least recently used first out, with when each was last used.
type ConnCache<C> = Mutex<LruCache<SessionId, (Arc<Mutex<C>>, Instant)>>;

fn conn_cache<C>() -> ConnCache<C> {
    Mutex::new(LruCache::new(
        NonZeroUsize::new(CONN_CACHE).expect("non-zero"),
    ))
}

fn cached<C>(
    cache: &ConnCache<C>,
    id: &SessionId,
    open: impl FnOnce() -> Result<C>,
) -> Result<Arc<Mutex<C>>> {
    {
        let mut cache = cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((conn, used)) = cache.get_mut(id) {
            *used = Instant::now();
            return Ok(conn.clone());
        }
    }
    // Opened outside the cache lock: opening touches the disk, and other sessions must not
    // wait for it.
    let conn = Arc::new(Mutex::new(open()?));
    let mut cache = cache.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((existing, used)) = cache.get_mut(id) {
        *used = Instant::now();
        return Ok(existing.clone());
    }
    cache.put(id.clone(), (conn.clone(), Instant::now()));
    Ok(conn)
}

fn evict<C>(cache: &ConnCache<C>, idle: Duration) -> usize {
    let mut cache = cache.lock().unwrap_or_else(|p| p.into_inner());
    let stale: Vec<SessionId> = cache
        .iter()
        .filter(|(_, (_, used))| used.elapsed() >= idle)
        .map(|(id, _)| id.clone())
        .collect();
    for id in &stale {
        cache.pop(id);
    }
    stale.len()
}

/// Creates a session DB file if it is missing: WAL, schema applied, version recorded.
///
/// Safe to race: the DB is built under a private name and linked into place (`link` never
/// replaces), so a file at `path` is always complete. Two connections switching one new file
/// to WAL at once would deadlock each other into `SQLITE_BUSY`, and a file seen before its
/// tables exist would fail its first write.
fn init_db(path: &Path, schema: &str, version: i64) -> Result<()> {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    if path.exists() {
        return Ok(());
    }
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".new-{}-{n}", std::process::id()));
    let fresh = PathBuf::from(name);
    let built =
        build_db(&fresh, schema, version).and_then(|()| match std::fs::hard_link(&fresh, path) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => Err(Error::Io {
                context: format!("link the new {} into place", path.display()),
                source: e,
            }),
            _ => Ok(()),
        });
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut leftover = fresh.as_os_str().to_owned();
        leftover.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(leftover));
    }
    built?;
    // A read now creates the -wal and -shm files: the container's read-only view of
    // inbound.db needs them to exist, and cannot create them itself.
    let conn = open_session_db(path, HOST_BUSY_TIMEOUT)?;
    conn.query_row("SELECT COUNT(*) FROM sqlite_master", [], |r| {
        r.get::<_, i64>(0)
    })?;
    Ok(())
}

/// Builds a complete session DB at a path nobody else uses; WAL mode persists in the file.
fn build_db(path: &Path, schema: &str, version: i64) -> Result<()> {
    let conn = Connection::open(path).map_err(|e| crate::db::corrupt_or(path, e))?;
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(Error::invalid(format!(
            "{} could not switch to WAL mode (got {mode})",
            path.display()
        )));
    }
    conn.execute_batch(schema)?;
    conn.pragma_update(None, "user_version", version)?;
    // Closing the only connection checkpoints the WAL into the file.
    conn.close().map_err(|(_, e)| e)?;
    Ok(())
}

/// Opens a session DB with the pragmas both sides agree on.
pub fn open_session_db(path: &Path, busy: Duration) -> Result<Connection> {
    let conn = Connection::open(path).map_err(|e| crate::db::corrupt_or(path, e))?;
    conn.busy_timeout(busy)?;
    conn.set_prepared_statement_cache_capacity(crate::db::STATEMENT_CACHE);
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .map_err(|e| crate::db::corrupt_or(path, e))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(Error::invalid(format!(
            "{} could not switch to WAL mode (got {mode})",
            path.display()
        )));
    }
    // Session DBs are small and mostly appended to: a small page cache keeps many open
    // connections cheap. Closing a connection must not checkpoint (an fsync) on the hot path,
    // nor delete the -wal/-shm files a read-only reader in the container needs; SQLite's
    // auto-checkpoint still bounds the WAL.
    conn.execute_batch("PRAGMA synchronous = NORMAL; PRAGMA cache_size = -128;")?;
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE,
        true,
    )?;
    Ok(conn)
}

/// Opens a session's `inbound.db` (see [`open_session_db`]): one made by a newer nanoclaw is
/// refused, one made by an older one is brought up to date, one step per transaction.
pub fn open_inbound(path: &Path, busy: Duration) -> Result<Connection> {
    let conn = open_session_db(path, busy)?;
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version > INBOUND_SCHEMA_VERSION {
        return Err(Error::invalid(format!(
            "{} has session schema {version}, newer than this nanoclaw's {INBOUND_SCHEMA_VERSION}; upgrade nanoclaw",
            path.display()
        )));
    }
    for (to, sql) in INBOUND_UPGRADES.iter().filter(|(to, _)| *to > version) {
        conn.execute_batch(&format!(
            "BEGIN IMMEDIATE; {sql} PRAGMA user_version = {to}; COMMIT;"
        ))
        .inspect_err(|_| {
            let _ = conn.execute_batch("ROLLBACK");
        })?;
        tracing::info!(version = to, path = %path.display(), "session inbound.db upgraded");
    }
    Ok(conn)
}

/// Fixtures for tests across the host.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;
    use crate::store::testing::{agent, chat};

    /// One agent ("A") with a shared session for the chat `telegram:1`; the session files
    /// live in `tmp`.
    pub struct OneSession {
        pub tmp: tempfile::TempDir,
        pub db: Db,
        pub store: SessionStore,
        pub session: Session,
    }

    pub fn one_session() -> OneSession {
        let tmp = tempfile::tempdir().unwrap();
        let db = Db::open_in_memory().unwrap();
        let store = SessionStore::new(tmp.path());
        let a = agent(&db, "A");
        let c = chat(&db, "telegram:1", None, false);
        let (session, _) = db
            .write(|t| store.resolve(t, &a.id, &c, None, SessionMode::Shared))
            .unwrap();
        OneSession {
            tmp,
            db,
            store,
            session,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sessions::queue::Queued;
    use crate::store::testing::{agent, chat, db};
    use nanoclaw_schema::session::InKind;
    use nanoclaw_schema::session::layout::{INBOUND_DB, INBOX_DIR, OUTBOUND_DB, OUTBOX_DIR};

    fn msg(id: &str) -> Queued {
        Queued {
            channel_type: Some("telegram".into()),
            platform_id: Some("1".into()),
            ..Queued::new(
                id,
                InKind::Chat,
                "2026-01-01T00:00:00.000Z",
                "{\"text\":\"hi\"}",
            )
        }
    }

    #[test]
    fn session_files_are_created_on_first_use_with_schema_and_projection() {
        let tmp = tempfile::tempdir().unwrap();
        let db = db();
        let store = SessionStore::new(tmp.path());
        let a = agent(&db, "A");
        let c = chat(&db, "telegram:1", Some("Alice"), false);
        db.write(|t| crate::store::wirings::create(t, &c.id, &a.id, Default::default()))
            .unwrap();
        let (s, created) = db
            .write(|t| store.resolve(t, &a.id, &c, None, SessionMode::Shared))
            .unwrap();
        assert!(created);
        let dir = store.session_dir(&s).unwrap();
        assert!(
            !dir.path().exists(),
            "no files under the central transaction"
        );
        store.refresh_projection(&db, &s).unwrap();
        assert!(dir.inbound_dir().join(INBOUND_DB).is_file());
        assert!(dir.inbound_dir().join(INBOX_DIR).is_dir());
        assert!(dir.workspace_dir().join(OUTBOUND_DB).is_file());
        assert!(dir.workspace_dir().join(OUTBOX_DIR).is_dir());
        // The container's read-only view needs the WAL files to exist already.
        assert!(dir.inbound_dir().join(format!("{INBOUND_DB}-shm")).exists());
        let names = store
            .with_inbound(&s, |c| inbound::destination_names(c))
            .unwrap();
        assert_eq!(names, ["alice"]);
        let out = Connection::open(dir.outbound_db()).unwrap();
        let v: i64 = out
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, OUTBOUND_SCHEMA_VERSION);
        // Resolving again finds the same session.
        let (again, created) = db
            .write(|t| store.resolve(t, &a.id, &c, None, SessionMode::Shared))
            .unwrap();
        assert!(!created);
        assert_eq!(again.id, s.id);
    }

    #[test]
    fn a_session_prepared_by_many_threads_at_once_always_has_its_schema() {
        // The router and the supervisor may open a new session's inbound.db together; neither
        // may see the file before its tables exist.
        for round in 0..20 {
            let tmp = tempfile::tempdir().unwrap();
            let db = db();
            let store = std::sync::Arc::new(SessionStore::new(tmp.path()));
            let a = agent(&db, "A");
            let c = chat(&db, &format!("telegram:{round}"), None, false);
            let (s, _) = db
                .write(|t| store.resolve(t, &a.id, &c, None, SessionMode::Shared))
                .unwrap();
            let projection = db.read(|t| Projection::read(t, &s)).unwrap();
            let barrier = std::sync::Arc::new(std::sync::Barrier::new(4));
            let threads: Vec<_> = (0..4)
                .map(|_| {
                    let (store, s, p, barrier) = (
                        store.clone(),
                        s.clone(),
                        projection.clone(),
                        barrier.clone(),
                    );
                    std::thread::spawn(move || {
                        barrier.wait();
                        store.write_projection(&s, &p)
                    })
                })
                .collect();
            for t in threads {
                t.join().unwrap().unwrap();
            }
        }
    }

    #[test]
    fn messages_get_even_seqs_and_duplicates_are_ignored() {
        let testing::OneSession {
            tmp: _tmp,
            db: _,
            store,
            session: s,
        } = testing::one_session();
        let got = store
            .with_inbound(&s, |db| {
                inbound::insert_batch(db, &[msg("m1"), msg("m2"), msg("m1")])
            })
            .unwrap();
        assert_eq!(
            got,
            [
                inbound::Insert::Inserted { seq: 2 },
                inbound::Insert::Inserted { seq: 4 },
                inbound::Insert::Duplicate
            ]
        );
    }

    #[test]
    fn concurrent_writers_never_share_a_seq() {
        let testing::OneSession {
            tmp: _tmp,
            db: _,
            store,
            session: s,
        } = testing::one_session();
        let path = store.prepare(&s).unwrap().inbound_db();
        const THREADS: usize = 6;
        const EACH: usize = 150;
        // Separate connections, as separate processes (daemon and CLI) would have.
        std::thread::scope(|scope| {
            for t in 0..THREADS {
                let path = path.clone();
                scope.spawn(move || {
                    let mut conn = open_session_db(&path, Duration::from_secs(5)).unwrap();
                    for i in 0..EACH {
                        let id = format!("t{t}-m{i}");
                        inbound::insert_message(&mut conn, &msg(&id)).unwrap();
                    }
                });
            }
        });
        let conn = open_session_db(&path, HOST_BUSY_TIMEOUT).unwrap();
        let (n, distinct, odd): (i64, i64, i64) = conn
            .query_row(
                "SELECT COUNT(*), COUNT(DISTINCT seq), SUM(seq % 2) FROM messages_in",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap();
        assert_eq!(n as usize, THREADS * EACH);
        assert_eq!(distinct, n, "every seq is unique");
        assert_eq!(odd, 0, "host seqs are even");
    }

    #[test]
    fn newer_session_schema_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join(INBOUND_DB);
        init_db(&path, INBOUND_SCHEMA, INBOUND_SCHEMA_VERSION).unwrap();
        Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", INBOUND_SCHEMA_VERSION + 1)
            .unwrap();
        let err = open_inbound(&path, HOST_BUSY_TIMEOUT)
            .unwrap_err()
            .to_string();
        assert!(err.contains("newer"), "{err}");
    }

    #[test]
    fn an_older_inbound_db_is_upgraded_when_the_host_opens_it() {
        let testing::OneSession {
            tmp: _tmp,
            db: _,
            store,
            session: s,
        } = testing::one_session();
        let path = store.prepare(&s).unwrap().inbound_db();
        // The shape version 2 had.
        Connection::open(&path)
            .unwrap()
            .execute_batch(
                "ALTER TABLE scheduled_tasks DROP COLUMN destination; PRAGMA user_version = 2;",
            )
            .unwrap();
        let (version, has_column) = store
            .with_inbound(&s, |c| {
                let v: i64 = c.query_row("PRAGMA user_version", [], |r| r.get(0))?;
                let n: i64 = c.query_row(
                    "SELECT COUNT(*) FROM pragma_table_info('scheduled_tasks') WHERE name = 'destination'",
                    [],
                    |r| r.get(0),
                )?;
                Ok((v, n == 1))
            })
            .unwrap();
        assert_eq!(version, INBOUND_SCHEMA_VERSION);
        assert!(has_column);
    }

    #[test]
    fn ids_with_path_characters_are_refused() {
        let store = SessionStore::new("/tmp/x");
        let bad = AgentGroupId::parse("../../etc").unwrap();
        assert!(store.dir(&bad, &SessionId::generate()).is_err());
    }

    /// Finding 4: a session DB held locked (as a hostile container can, with a read lock on
    /// the WAL index) makes the host's write fail fast, and another session is not slowed.
    #[test]
    fn a_locked_session_db_fails_fast_and_leaves_others_alone() {
        let tmp = tempfile::tempdir().unwrap();
        let db = db();
        let store = SessionStore::new(tmp.path());
        let a = agent(&db, "A");
        let c1 = chat(&db, "telegram:1", None, false);
        let c2 = chat(&db, "telegram:2", None, false);
        let (s1, _) = db
            .write(|t| store.resolve(t, &a.id, &c1, None, SessionMode::Shared))
            .unwrap();
        let (s2, _) = db
            .write(|t| store.resolve(t, &a.id, &c2, None, SessionMode::Shared))
            .unwrap();
        let dir1 = store.prepare(&s1).unwrap();
        store.prepare(&s2).unwrap();
        // Another connection holds the write lock, like a container would.
        let mut holder = open_session_db(&dir1.inbound_db(), HOST_BUSY_TIMEOUT).unwrap();
        let tx = holder
            .transaction_with_behavior(rusqlite::TransactionBehavior::Exclusive)
            .unwrap();
        let started = Instant::now();
        let err = store.with_inbound(&s1, |c| inbound::insert_message(c, &msg("x")));
        assert!(err.is_err());
        assert!(
            started.elapsed() < HOST_BUSY_TIMEOUT * 4,
            "{:?}",
            started.elapsed()
        );
        let started = Instant::now();
        store
            .with_inbound(&s2, |c| inbound::insert_message(c, &msg("y")))
            .unwrap();
        assert!(
            started.elapsed() < HOST_BUSY_TIMEOUT,
            "the other session did not wait"
        );
        drop(tx);
    }
}
