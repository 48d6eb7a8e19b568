//! Sessions: the registry rows, the session directories, and the two session databases.
//!
//! A session directory `<data>/sessions/<agent group id>/<session id>/` holds `inbound.db`
//! (host writes), `outbound.db` (container writes), `.heartbeat`, `inbox/` and `outbox/`.
//! Both DBs use WAL so each side sees the other's commits through the bind mount at once.

pub mod inbound;
pub mod outbound;
pub mod registry;

use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lru::LruCache;
use rusqlite::Connection;

use nanoclaw_schema::session::{
    self, INBOUND_DB, INBOUND_SCHEMA, INBOX_DIR, OUTBOUND_DB, OUTBOUND_SCHEMA, OUTBOX_DIR,
    SCHEMA_VERSION,
};

use crate::error::{Error, IoContext, Result};
use crate::ids::{AgentGroupId, SessionId};
use crate::store::destinations;
use crate::store::messaging_groups::MessagingGroup;
use crate::store::wirings::SessionMode;

pub use registry::{ContainerStatus, Session, SessionStatus};

/// How many connections per kind (inbound, outbound) stay open; beyond this, the least
/// recently used closes.
/// Each costs little (a small page cache, see [`open_session_db`]), and reopening one per
/// message would dominate routing time for a busy install.
const CONN_CACHE: usize = 256;

/// Owns the session directories and a cache of open `inbound.db` connections.
pub struct SessionStore {
    root: PathBuf,
    /// uid/gid the container runs as; session files are handed to it so it can write.
    owner: Option<(u32, u32)>,
    inbound: ConnCache,
    outbound: ConnCache,
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

    /// Session files will be owned by `uid:gid` (the container's user) when the host runs as
    /// root; otherwise the container runs as the host's own user and nothing is changed.
    pub fn with_owner(mut self, owner: Option<(u32, u32)>) -> Self {
        self.owner = owner;
        self
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory of a session.
    pub fn dir(&self, agent: &AgentGroupId, session: &SessionId) -> Result<PathBuf> {
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
        Ok(self.root.join(agent.as_str()).join(session.as_str()))
    }

    pub fn session_dir(&self, s: &Session) -> Result<PathBuf> {
        self.dir(&s.agent_group_id, &s.id)
    }

    /// Finds the active session for a message to `agent` from `chat`/`thread` under `mode`,
    /// creating it (row, directory, databases) if there is none. True when created.
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

    /// Creates a session: its row, directory, databases and destinations projection. Run it
    /// inside a central DB transaction so a failure leaves no row behind.
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
        registry::insert(conn, &s)?;
        let dir = self.session_dir(&s)?;
        self.create_files(&dir)?;
        self.refresh_projection(conn, &s, chat)?;
        tracing::info!(session = %s.id, agent = %agent, "session created");
        Ok(s)
    }

    fn create_files(&self, dir: &Path) -> Result<()> {
        for sub in [INBOX_DIR, OUTBOX_DIR] {
            let p = dir.join(sub);
            std::fs::create_dir_all(&p)
                .io_context(|| format!("create session directory {}", p.display()))?;
        }
        init_db(&dir.join(INBOUND_DB), INBOUND_SCHEMA)?;
        init_db(&dir.join(OUTBOUND_DB), OUTBOUND_SCHEMA)?;
        if let Some((uid, gid)) = self.owner {
            chown_tree(dir, uid, gid)?;
        }
        Ok(())
    }

    /// Runs `f` on the session's `inbound.db`, opening (and caching) the connection.
    pub fn with_inbound<T>(
        &self,
        s: &Session,
        f: impl FnOnce(&mut Connection) -> Result<T>,
    ) -> Result<T> {
        let conn = self.inbound_conn(s)?;
        let mut guard = conn.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut guard)
    }

    fn inbound_conn(&self, s: &Session) -> Result<Arc<Mutex<Connection>>> {
        let path = self.session_dir(s)?.join(INBOUND_DB);
        cached(&self.inbound, &s.id, || open_session_db(&path))
    }

    /// Runs `f` on a read-only connection to the session's `outbound.db` (cached).
    pub fn with_outbound<T>(
        &self,
        s: &Session,
        f: impl FnOnce(&Connection) -> Result<T>,
    ) -> Result<T> {
        let path = self.session_dir(s)?.join(OUTBOUND_DB);
        let conn = cached(&self.outbound, &s.id, || outbound::open_reader(&path))?;
        let guard = conn.lock().unwrap_or_else(|p| p.into_inner());
        f(&guard)
    }

    /// Drops the cached connections of a session (e.g. after it was closed).
    /// Closes the connections of sessions unused for `idle`, so idle sessions cost no memory.
    pub fn evict_idle(&self, idle: Duration) -> usize {
        evict(&self.inbound, idle) + evict(&self.outbound, idle)
    }

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
    /// central DB. Call whenever the agent's destinations change and before every wake.
    pub fn refresh_projection(
        &self,
        conn: &Connection,
        s: &Session,
        chat: Option<&MessagingGroup>,
    ) -> Result<()> {
        let rows = destinations::resolved(conn, &s.agent_group_id)?;
        let chat = match (chat, &s.messaging_group_id) {
            (Some(c), _) => Some(c.clone()),
            (None, Some(id)) => crate::store::messaging_groups::get(conn, id)?,
            (None, None) => None,
        };
        self.with_inbound(s, |db| {
            inbound::write_destinations(db, &rows)?;
            inbound::write_routing(
                db,
                chat.as_ref().map(|c| c.channel_type.as_str()),
                chat.as_ref().map(|c| c.platform_id.as_str()),
                s.thread_id.as_deref(),
            )
        })
    }
}

impl SessionStore {
    /// Rewrites the projection of every active session of `agent` (after its destinations
    /// changed). Returns how many sessions were refreshed.
    pub fn refresh_agent(&self, conn: &Connection, agent: &AgentGroupId) -> Result<usize> {
        let sessions = registry::list(conn, Some(agent), true)?;
        for s in &sessions {
            self.refresh_projection(conn, s, None)?;
        }
        Ok(sessions.len())
    }
}

/// Open connections by session, least recently used first out, with when each was last used.
type ConnCache = Mutex<LruCache<SessionId, (Arc<Mutex<Connection>>, Instant)>>;

fn conn_cache() -> ConnCache {
    Mutex::new(LruCache::new(
        NonZeroUsize::new(CONN_CACHE).expect("non-zero"),
    ))
}

fn cached(
    cache: &ConnCache,
    id: &SessionId,
    open: impl FnOnce() -> Result<Connection>,
) -> Result<Arc<Mutex<Connection>>> {
    let mut cache = cache.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((conn, used)) = cache.get_mut(id) {
        *used = Instant::now();
        return Ok(conn.clone());
    }
    let conn = Arc::new(Mutex::new(open()?));
    cache.put(id.clone(), (conn.clone(), Instant::now()));
    Ok(conn)
}

fn evict(cache: &ConnCache, idle: Duration) -> usize {
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

/// Creates (or checks) a session DB file: WAL, schema applied, version recorded.
fn init_db(path: &Path, schema: &str) -> Result<()> {
    let conn = open_session_db(path)?;
    conn.execute_batch(schema)?;
    conn.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    Ok(())
}

/// Opens a session DB with the pragmas both sides agree on, refusing a newer schema.
pub fn open_session_db(path: &Path) -> Result<Connection> {
    let conn = Connection::open(path).map_err(|e| crate::db::corrupt_or(path, e))?;
    conn.busy_timeout(Duration::from_millis(session::BUSY_TIMEOUT_MS))?;
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
    // connections cheap. Closing a connection must not checkpoint (an fsync) on the hot path;
    // SQLite's auto-checkpoint still bounds the WAL.
    conn.execute_batch("PRAGMA synchronous = NORMAL; PRAGMA cache_size = -128;")?;
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE,
        true,
    )?;
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version > SCHEMA_VERSION {
        return Err(Error::invalid(format!(
            "{} has session schema {version}, newer than this nanoclaw's {SCHEMA_VERSION}; upgrade nanoclaw",
            path.display()
        )));
    }
    Ok(conn)
}

#[cfg(unix)]
fn chown_tree(dir: &Path, uid: u32, gid: u32) -> Result<()> {
    use std::os::unix::fs::lchown;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(p) = stack.pop() {
        lchown(&p, Some(uid), Some(gid)).io_context(|| format!("chown {}", p.display()))?;
        if p.is_dir() && !p.is_symlink() {
            for entry in std::fs::read_dir(&p).io_context(|| format!("read {}", p.display()))? {
                stack.push(entry.io_context(|| format!("read {}", p.display()))?.path());
            }
        }
    }
    Ok(())
}

#[cfg(not(unix))]
fn chown_tree(_: &Path, _: u32, _: u32) -> Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::{agent, chat, db};
    use nanoclaw_schema::session::InKind;

    fn msg(id: &str) -> inbound::NewMessage<'_> {
        inbound::NewMessage {
            channel_type: Some("telegram"),
            platform_id: Some("1"),
            ..inbound::NewMessage::new(
                id,
                InKind::Chat,
                "2026-01-01T00:00:00.000Z",
                "{\"text\":\"hi\"}",
            )
        }
    }

    #[test]
    fn session_files_are_created_with_schema_and_projection() {
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
        for f in [INBOUND_DB, OUTBOUND_DB, INBOX_DIR, OUTBOX_DIR] {
            assert!(dir.join(f).exists(), "{f}");
        }
        let names = store
            .with_inbound(&s, |c| inbound::destination_names(c))
            .unwrap();
        assert_eq!(names, ["alice"]);
        let out = Connection::open(dir.join(OUTBOUND_DB)).unwrap();
        let v: i64 = out
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, SCHEMA_VERSION);
        // Resolving again finds the same session.
        let (again, created) = db
            .write(|t| store.resolve(t, &a.id, &c, None, SessionMode::Shared))
            .unwrap();
        assert!(!created);
        assert_eq!(again.id, s.id);
    }

    #[test]
    fn messages_get_even_seqs_and_duplicates_are_ignored() {
        let tmp = tempfile::tempdir().unwrap();
        let db = db();
        let store = SessionStore::new(tmp.path());
        let a = agent(&db, "A");
        let c = chat(&db, "telegram:1", None, false);
        let (s, _) = db
            .write(|t| store.resolve(t, &a.id, &c, None, SessionMode::Shared))
            .unwrap();
        let first = store
            .with_inbound(&s, |db| inbound::insert_message(db, &msg("m1")))
            .unwrap();
        let second = store
            .with_inbound(&s, |db| inbound::insert_message(db, &msg("m2")))
            .unwrap();
        let dup = store
            .with_inbound(&s, |db| inbound::insert_message(db, &msg("m1")))
            .unwrap();
        assert_eq!(first, inbound::Insert::Inserted { seq: 2 });
        assert_eq!(second, inbound::Insert::Inserted { seq: 4 });
        assert_eq!(dup, inbound::Insert::Duplicate);
    }

    #[test]
    fn concurrent_writers_never_share_a_seq() {
        let tmp = tempfile::tempdir().unwrap();
        let db = db();
        let store = SessionStore::new(tmp.path());
        let a = agent(&db, "A");
        let c = chat(&db, "telegram:1", None, false);
        let (s, _) = db
            .write(|t| store.resolve(t, &a.id, &c, None, SessionMode::Shared))
            .unwrap();
        let path = store.session_dir(&s).unwrap().join(INBOUND_DB);
        const THREADS: usize = 6;
        const EACH: usize = 150;
        // Separate connections, as separate processes (daemon and CLI) would have.
        std::thread::scope(|scope| {
            for t in 0..THREADS {
                let path = path.clone();
                scope.spawn(move || {
                    let mut conn = open_session_db(&path).unwrap();
                    for i in 0..EACH {
                        let id = format!("t{t}-m{i}");
                        inbound::insert_message(&mut conn, &msg(&id)).unwrap();
                    }
                });
            }
        });
        let conn = open_session_db(&path).unwrap();
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
        init_db(&path, INBOUND_SCHEMA).unwrap();
        Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
        let err = open_session_db(&path).unwrap_err().to_string();
        assert!(err.contains("newer"), "{err}");
    }

    #[test]
    fn ids_with_path_characters_are_refused() {
        let store = SessionStore::new("/tmp/x");
        let bad = AgentGroupId::parse("../../etc").unwrap();
        assert!(store.dir(&bad, &SessionId::generate()).is_err());
    }
}
