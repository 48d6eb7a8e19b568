//! The two session databases, seen from the container.
//!
//! `inbound.db` lives in the host's directory, mounted read-only: it is opened read-only (the
//! host keeps its `-wal` and `-shm` files in place, so a read-only WAL reader works). The same
//! connection attaches `outbound.db` as `ob`, so the pending-message query can skip claimed
//! rows inside SQLite. All writes go through the separate, long-lived `outbound.db` connection.

use std::path::{Path, PathBuf};
use std::time::Duration;

use jiff::Timestamp;
use nanoclaw_schema::session::{
    AckStatus, BUSY_TIMEOUT_MS, DestinationType, INBOUND_DB, INBOUND_SCHEMA_VERSION, OUTBOUND_DB,
    OUTBOUND_SCHEMA, OUTBOUND_SCHEMA_VERSION, OutKind, next_container_seq,
};
use nanoclaw_schema::time;
use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior, params};

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("cannot open {}: {source}", path.display())]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error(
        "{} has session schema version {found}, newer than version {expected} that this \
         nanoclaw-agent understands; update the agent image to match the host",
        path.display()
    )]
    NewerSchema {
        path: PathBuf,
        found: i64,
        expected: i64,
    },
    #[error(
        "{} has session schema version {found}, but this nanoclaw-agent needs version \
         {expected}; the host creates and migrates session databases (is this a session \
         directory?)",
        path.display()
    )]
    OlderSchema {
        path: PathBuf,
        found: i64,
        expected: i64,
    },
    #[error("session database: {0}")]
    Sql(#[from] rusqlite::Error),
}

impl DbError {
    /// True for errors that mean the session directory and this binary do not fit together.
    pub fn is_incompatible(&self) -> bool {
        matches!(
            self,
            DbError::NewerSchema { .. } | DbError::OlderSchema { .. }
        )
    }
}

pub type Result<T, E = DbError> = std::result::Result<T, E>;

/// One `messages_in` row as stored (content not yet interpreted).
#[derive(Debug, Clone, PartialEq)]
pub struct InRow {
    pub id: String,
    pub seq: i64,
    pub kind: String,
    pub timestamp: String,
    pub trigger: bool,
    pub channel_type: Option<String>,
    pub platform_id: Option<String>,
    pub thread_id: Option<String>,
    pub content: String,
}

/// What the next turn should look at.
#[derive(Debug, Default)]
pub struct Selection {
    /// Oldest first, at most `max_batch`, holding at least one trigger row.
    pub rows: Vec<InRow>,
    /// Context-only rows older than the window: they can no longer ride along with a trigger
    /// and are acknowledged without being shown, so the queue cannot jam behind them.
    pub overflow: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Channel {
        channel_type: String,
        platform_id: String,
    },
    Agent {
        agent_group_id: String,
    },
}

impl Target {
    /// The reply address of this target: `(channel_type, platform_id)`.
    pub fn address(&self) -> (&str, &str) {
        match self {
            Target::Channel {
                channel_type,
                platform_id,
            } => (channel_type, platform_id),
            Target::Agent { agent_group_id } => {
                (nanoclaw_schema::session::AGENT_CHANNEL, agent_group_id)
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    pub name: String,
    pub display_name: Option<String>,
    pub target: Target,
}

/// The session's default reply address (`session_routing`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Routing {
    pub channel_type: Option<String>,
    pub platform_id: Option<String>,
    pub thread_id: Option<String>,
}

/// A `messages_out` row to write (seq and id are assigned on write).
#[derive(Debug, Clone, PartialEq)]
pub struct OutRow {
    pub kind: OutKind,
    pub in_reply_to: Option<String>,
    /// The address of a chat row; system rows may have none.
    pub channel_type: Option<String>,
    pub platform_id: Option<String>,
    pub thread_id: Option<String>,
    pub content: String,
}

/// A message the agent can point at (to edit it or react to it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownMessage {
    /// The platform's id; `None` until the host recorded one.
    pub platform_message_id: Option<String>,
    pub channel_type: Option<String>,
    pub platform_id: Option<String>,
    pub thread_id: Option<String>,
}

/// One scheduled task of the session, as listed to the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskView {
    pub id: String,
    pub prompt: String,
    pub recurrence: Option<String>,
    pub next_run: Option<String>,
    pub status: String,
    /// The destination its runs are addressed to; `None`: this conversation.
    pub destination: Option<String>,
}

/// `messages_in` rows the runner may take now. `?1` = now (stored timestamp format), `?2` =
/// the largest seq that existed when this container started (`on_wake` rows up to it are
/// visible; later ones belong to the next container). An unreadable `process_after` counts as
/// due, so a bad value cannot hide a message forever.
const ELIGIBLE: &str = "m.status = 'pending'
    AND (m.process_after IS NULL OR julianday(m.process_after) IS NULL
         OR julianday(m.process_after) <= julianday(?1))
    AND (m.on_wake = 0 OR m.seq <= ?2)
    AND NOT EXISTS (SELECT 1 FROM ob.processing_ack a WHERE a.message_id = m.id)";

const ROW_COLUMNS: &str = "m.id, m.seq, m.kind, m.timestamp, m.trigger, m.channel_type, m.platform_id, m.thread_id, m.content";

pub struct SessionDb {
    inbound: Connection,
    outbound: Connection,
    last_data_version: i64,
    /// Largest `messages_in.seq` at start; bounds which `on_wake` rows this container sees.
    wake_horizon: i64,
}

impl SessionDb {
    /// Opens `outbound.db` in the workspace `dir` and `inbound.db` in the read-only
    /// `inbound_dir`, checks their schema version and applies the (idempotent) outbound schema.
    pub fn open(dir: &Path, inbound_dir: &Path) -> Result<SessionDb> {
        let inbound_path = inbound_dir.join(INBOUND_DB);
        let outbound_path = dir.join(OUTBOUND_DB);
        let outbound = open_rw(&outbound_path)?;
        check_version(&outbound, &outbound_path, OUTBOUND_SCHEMA_VERSION)?;
        outbound.pragma_update(None, "synchronous", "NORMAL")?;
        outbound.execute_batch(OUTBOUND_SCHEMA)?;

        let inbound = open_ro(&inbound_path)?;
        check_version(&inbound, &inbound_path, INBOUND_SCHEMA_VERSION)?;
        let mode: String = inbound.query_row("PRAGMA journal_mode", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!(journal_mode = %mode, "inbound.db is not in WAL mode; change notification may lag");
        }
        let ob = outbound_path
            .to_str()
            .ok_or_else(|| DbError::Open {
                path: outbound_path.clone(),
                source: rusqlite::Error::InvalidPath(outbound_path.clone()),
            })?
            .to_string();
        inbound.execute("ATTACH DATABASE ?1 AS ob", [ob])?;

        let last_data_version = retry(|| data_version(&inbound))?;
        let wake_horizon: i64 = retry(|| {
            Ok(
                inbound.query_row("SELECT COALESCE(MAX(seq), 0) FROM messages_in", [], |r| {
                    r.get(0)
                })?,
            )
        })?;
        Ok(SessionDb {
            inbound,
            outbound,
            last_data_version,
            wake_horizon,
        })
    }

    /// True if another connection committed to inbound.db since the last call.
    pub fn inbound_changed(&mut self) -> Result<bool> {
        retry(|| self.inbound_changed_once())
    }

    /// The next batch to work on, if any rows are ready and at least one is a trigger.
    pub fn next_batch(&mut self, now: Timestamp, max_batch: usize) -> Result<Option<Selection>> {
        retry(|| self.next_batch_once(now, max_batch))
    }

    /// When the earliest pending trigger row that is not due yet becomes due.
    pub fn next_due(&self, now: Timestamp) -> Result<Option<Timestamp>> {
        retry(|| self.next_due_once(now))
    }

    /// The session's destinations, read fresh (the host rewrites the table at any time).
    pub fn destinations(&self) -> Result<Vec<Destination>> {
        retry(|| self.destinations_once())
    }

    /// The session's default reply address.
    pub fn routing(&self) -> Result<Routing> {
        retry(|| self.routing_once())
    }

    /// The newest chat row from `(channel_type, platform_id)` with seq ≤ `max_seq`: its id and
    /// thread, to reply in place.
    pub fn latest_chat_from(
        &self,
        channel_type: &str,
        platform_id: &str,
        max_seq: i64,
    ) -> Result<Option<(String, Option<String>)>> {
        retry(|| self.latest_chat_from_once(channel_type, platform_id, max_seq))
    }

    /// Crash recovery: forget `processing` claims a killed predecessor left behind, so those
    /// messages are seen again. Returns how many were dropped.
    pub fn clear_stale_claims(&mut self) -> Result<usize> {
        Ok(self
            .outbound
            .execute("DELETE FROM processing_ack WHERE status = 'processing'", [])?)
    }

    fn inbound_changed_once(&mut self) -> Result<bool> {
        let v = data_version(&self.inbound)?;
        let changed = v != self.last_data_version;
        self.last_data_version = v;
        Ok(changed)
    }

    fn next_batch_once(&mut self, now: Timestamp, max_batch: usize) -> Result<Option<Selection>> {
        let now = time::format(now);
        let horizon = self.wake_horizon;
        let tx = self.inbound.transaction()?;
        let first_trigger: Option<i64> = tx.query_row(
            &format!("SELECT MIN(m.seq) FROM messages_in m WHERE {ELIGIBLE} AND m.trigger != 0"),
            params![now, horizon],
            |r| r.get(0),
        )?;
        let Some(trigger_seq) = first_trigger else {
            return Ok(None);
        };

        // Up to max_batch - 1 context rows may precede the first trigger; older ones overflow.
        let keep_before = i64::try_from(max_batch.saturating_sub(1)).unwrap_or(i64::MAX);
        let window_start: Option<i64> = if keep_before == 0 {
            Some(trigger_seq)
        } else {
            tx.query_row(
                &format!(
                    "SELECT m.seq FROM messages_in m WHERE {ELIGIBLE} AND m.seq < ?3
                     ORDER BY m.seq DESC LIMIT 1 OFFSET ?4"
                ),
                params![now, horizon, trigger_seq, keep_before - 1],
                |r| r.get(0),
            )
            .optional()?
        };
        let (overflow, start) = match window_start {
            Some(start) => {
                let mut stmt = tx.prepare(&format!(
                    "SELECT m.id FROM messages_in m WHERE {ELIGIBLE} AND m.seq < ?3 ORDER BY m.seq"
                ))?;
                let ids = stmt
                    .query_map(params![now, horizon, start], |r| r.get::<_, String>(0))?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                (ids, start)
            }
            None => (Vec::new(), i64::MIN),
        };
        let limit = i64::try_from(max_batch).unwrap_or(i64::MAX);
        let rows = {
            let mut stmt = tx.prepare(&format!(
                "SELECT {ROW_COLUMNS} FROM messages_in m WHERE {ELIGIBLE} AND m.seq >= ?3
                 ORDER BY m.seq LIMIT ?4"
            ))?;
            stmt.query_map(params![now, horizon, start, limit], in_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?
        };
        tx.finish()?;
        Ok(Some(Selection { rows, overflow }))
    }

    fn next_due_once(&self, now: Timestamp) -> Result<Option<Timestamp>> {
        let raw: Option<String> = self
            .inbound
            .query_row(
                "SELECT m.process_after FROM messages_in m
                 WHERE m.status = 'pending' AND m.trigger != 0
                   AND julianday(m.process_after) > julianday(?1)
                   AND (m.on_wake = 0 OR m.seq <= ?2)
                   AND NOT EXISTS (SELECT 1 FROM ob.processing_ack a WHERE a.message_id = m.id)
                 ORDER BY julianday(m.process_after) LIMIT 1",
                params![time::format(now), self.wake_horizon],
                |r| r.get(0),
            )
            .optional()?;
        Ok(raw.as_deref().and_then(time::parse))
    }

    fn destinations_once(&self) -> Result<Vec<Destination>> {
        let mut stmt = self.inbound.prepare_cached(
            "SELECT name, display_name, type, channel_type, platform_id, agent_group_id
             FROM destinations ORDER BY name",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, Option<String>>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, Option<String>>(3)?,
                r.get::<_, Option<String>>(4)?,
                r.get::<_, Option<String>>(5)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (name, display_name, ty, channel_type, platform_id, agent_group_id) = row?;
            let target = match (
                ty.parse::<DestinationType>(),
                channel_type,
                platform_id,
                agent_group_id,
            ) {
                (Ok(DestinationType::Channel), Some(channel_type), Some(platform_id), _) => {
                    Target::Channel {
                        channel_type,
                        platform_id,
                    }
                }
                (Ok(DestinationType::Agent), _, _, Some(agent_group_id)) => {
                    Target::Agent { agent_group_id }
                }
                _ => {
                    tracing::warn!(%name, %ty, "ignoring destination without a usable address");
                    continue;
                }
            };
            out.push(Destination {
                name,
                display_name,
                target,
            });
        }
        Ok(out)
    }

    fn routing_once(&self) -> Result<Routing> {
        Ok(self
            .inbound
            .query_row(
                "SELECT channel_type, platform_id, thread_id FROM session_routing WHERE id = 1",
                [],
                |r| {
                    Ok(Routing {
                        channel_type: r.get(0)?,
                        platform_id: r.get(1)?,
                        thread_id: r.get(2)?,
                    })
                },
            )
            .optional()?
            .unwrap_or_default())
    }

    fn latest_chat_from_once(
        &self,
        channel_type: &str,
        platform_id: &str,
        max_seq: i64,
    ) -> Result<Option<(String, Option<String>)>> {
        Ok(self
            .inbound
            .prepare_cached(
                "SELECT id, thread_id FROM messages_in
                 WHERE kind = 'chat' AND channel_type = ?1 AND platform_id = ?2 AND seq <= ?3
                 ORDER BY seq DESC LIMIT 1",
            )?
            .query_row(params![channel_type, platform_id, max_seq], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()?)
    }

    /// Records acks for `ids` in one transaction.
    pub fn ack(&mut self, ids: &[&str], status: AckStatus) -> Result<()> {
        let tx = self
            .outbound
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        insert_acks(&tx, ids.iter().map(|id| (*id, status)))?;
        tx.commit()?;
        Ok(())
    }

    /// Drops this container's `processing` claims on `ids` (a turn abandoned at shutdown), so
    /// the messages are simply pending again.
    pub fn release(&mut self, ids: &[&str]) -> Result<()> {
        let tx = self
            .outbound
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        {
            let mut stmt = tx.prepare(
                "DELETE FROM processing_ack WHERE message_id = ?1 AND status = 'processing'",
            )?;
            for id in ids {
                stmt.execute([id])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Ends a turn: writes `rows` to `messages_out` and the acks in ONE transaction, so a crash
    /// leaves either all of it or none. Returns the seqs assigned, in order.
    pub fn finish_turn(&mut self, rows: &[OutRow], acks: &[(&str, AckStatus)]) -> Result<Vec<i64>> {
        let tx = self
            .outbound
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let now_ms = time::now_ms();
        let mut seqs = Vec::with_capacity(rows.len());
        for row in rows {
            seqs.push(insert_out(&self.inbound, &tx, row, |seq| {
                format!("msg-{now_ms}-{seq}")
            })?);
        }
        insert_acks(&tx, acks.iter().copied())?;
        tx.commit()?;
        Ok(seqs)
    }

    /// Writes one row now, under the given id (a tool's row, whose files are already in
    /// `outbox/<id>/`). Returns its seq.
    pub fn write_row(&mut self, id: &str, row: &OutRow) -> Result<i64> {
        let tx = self
            .outbound
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let seq = insert_out(&self.inbound, &tx, row, |_| id.to_string())?;
        tx.commit()?;
        Ok(seq)
    }

    /// The largest seq in `messages_out` (0 when empty): rows written since a turn began show
    /// whether its tools already sent something.
    pub fn max_out_seq(&self) -> Result<i64> {
        Ok(self
            .outbound
            .query_row("SELECT COALESCE(MAX(seq), 0) FROM messages_out", [], |r| {
                r.get(0)
            })?)
    }

    /// A message of this conversation by the seq the agent sees (`<message id="N">`): an
    /// inbound row, or one of the agent's own rows once the host delivered it.
    pub fn message_by_seq(&self, seq: i64) -> Result<Option<KnownMessage>> {
        retry(|| {
            let inbound = self
                .inbound
                .query_row(
                    "SELECT platform_message_id, channel_type, platform_id, thread_id
                     FROM messages_in WHERE seq = ?1",
                    [seq],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
                )
                .optional()?;
            let found = match inbound {
                Some(found) => Some(found),
                None => self
                    .inbound
                    .query_row(
                        "SELECT d.platform_message_id, o.channel_type, o.platform_id, o.thread_id
                         FROM ob.messages_out o
                         LEFT JOIN delivered d ON d.message_out_id = o.id AND d.status = 'delivered'
                         WHERE o.seq = ?1",
                        [seq],
                        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
                    )
                    .optional()?,
            };
            Ok(found.map(
                |(platform_message_id, channel_type, platform_id, thread_id)| KnownMessage {
                    platform_message_id,
                    channel_type,
                    platform_id,
                    thread_id,
                },
            ))
        })
    }

    /// The session's scheduled tasks as the host last projected them.
    pub fn tasks(&self) -> Result<Vec<TaskView>> {
        retry(|| {
            let mut stmt = self.inbound.prepare_cached(
                "SELECT id, prompt, recurrence, next_run, status, destination FROM scheduled_tasks ORDER BY id",
            )?;
            let rows = stmt
                .query_map([], |r| {
                    Ok(TaskView {
                        id: r.get(0)?,
                        prompt: r.get(1)?,
                        recurrence: r.get(2)?,
                        next_run: r.get(3)?,
                        status: r.get(4)?,
                        destination: r.get(5)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
    }

    pub fn state(&self, key: &str) -> Result<Option<String>> {
        Ok(self
            .outbound
            .query_row(
                "SELECT value FROM session_state WHERE key = ?1",
                [key],
                |r| r.get(0),
            )
            .optional()?)
    }

    pub fn set_state(&self, key: &str, value: &str) -> Result<()> {
        self.outbound.execute(
            "INSERT INTO session_state (key, value, updated_at) VALUES (?1, ?2, ?3)
             ON CONFLICT(key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
            params![key, value, time::now()],
        )?;
        Ok(())
    }

    pub fn delete_state(&self, key: &str) -> Result<()> {
        self.outbound
            .execute("DELETE FROM session_state WHERE key = ?1", [key])?;
        Ok(())
    }
}

fn open_rw(path: &Path) -> Result<Connection> {
    // No SQLITE_OPEN_CREATE: the host creates both files; a missing one is an error here.
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(|source| DbError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    conn.busy_timeout(Duration::from_millis(BUSY_TIMEOUT_MS))?;
    Ok(conn)
}

/// A read of `inbound.db` through its read-only WAL index can catch the index header while
/// the host rewrites it, and SQLite then answers `SQLITE_READONLY_RECOVERY` (or `BUSY`)
/// although nothing is wrong: reading again a moment later works.
fn transient(e: &DbError) -> bool {
    let DbError::Sql(rusqlite::Error::SqliteFailure(f, _)) = e else {
        return false;
    };
    f.extended_code == rusqlite::ffi::SQLITE_READONLY_RECOVERY
        || f.code == rusqlite::ErrorCode::DatabaseBusy
}

/// Runs `f` again while it fails transiently (see [`transient`]), for up to about a second.
fn retry<T>(mut f: impl FnMut() -> Result<T>) -> Result<T> {
    let mut tries = 0;
    loop {
        match f() {
            Err(e) if transient(&e) && tries < 200 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(5));
            }
            other => return other,
        }
    }
}

fn open_ro(path: &Path) -> Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(|source| DbError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    conn.busy_timeout(Duration::from_millis(BUSY_TIMEOUT_MS))?;
    Ok(conn)
}

fn check_version(conn: &Connection, path: &Path, expected: i64) -> Result<()> {
    let found: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let path = path.to_path_buf();
    match found.cmp(&expected) {
        std::cmp::Ordering::Equal => Ok(()),
        std::cmp::Ordering::Greater => Err(DbError::NewerSchema {
            path,
            found,
            expected,
        }),
        std::cmp::Ordering::Less => Err(DbError::OlderSchema {
            path,
            found,
            expected,
        }),
    }
}

fn data_version(conn: &Connection) -> Result<i64> {
    Ok(conn.query_row("PRAGMA data_version", [], |r| r.get(0))?)
}

fn in_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<InRow> {
    Ok(InRow {
        id: r.get(0)?,
        seq: r.get(1)?,
        kind: r.get(2)?,
        timestamp: r.get(3)?,
        trigger: r.get::<_, i64>(4)? != 0,
        channel_type: r.get(5)?,
        platform_id: r.get(6)?,
        thread_id: r.get(7)?,
        content: r.get(8)?,
    })
}

/// Inserts one `messages_out` row inside `tx` with the next odd seq; `id` names it from its
/// seq. The host only appends even seqs to inbound, so reading its max here is race free with
/// respect to ours; the immediate transaction orders the runner against its tool server.
fn insert_out(
    inbound: &Connection,
    tx: &rusqlite::Transaction<'_>,
    row: &OutRow,
    id: impl FnOnce(i64) -> String,
) -> Result<i64> {
    let max_in: Option<i64> =
        retry(|| Ok(inbound.query_row("SELECT MAX(seq) FROM messages_in", [], |r| r.get(0))?))?;
    let max_out: Option<i64> =
        tx.query_row("SELECT MAX(seq) FROM messages_out", [], |r| r.get(0))?;
    let seq = next_container_seq(max_in, max_out);
    tx.prepare_cached(
        "INSERT INTO messages_out
           (id, seq, in_reply_to, timestamp, kind, channel_type, platform_id, thread_id, content)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?
    .execute(params![
        id(seq),
        seq,
        row.in_reply_to,
        time::now(),
        row.kind.as_str(),
        row.channel_type,
        row.platform_id,
        row.thread_id,
        row.content,
    ])?;
    Ok(seq)
}

fn insert_acks<'a>(
    tx: &rusqlite::Transaction<'_>,
    acks: impl IntoIterator<Item = (&'a str, AckStatus)>,
) -> Result<()> {
    let now = time::now();
    let mut stmt = tx.prepare_cached(
        "INSERT INTO processing_ack (message_id, status, status_changed) VALUES (?1, ?2, ?3)
         ON CONFLICT(message_id) DO UPDATE SET status = excluded.status, status_changed = excluded.status_changed",
    )?;
    for (id, status) in acks {
        stmt.execute(params![id, status.as_str(), now])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_torn_index_read_is_retried_and_real_errors_are_not() {
        let torn = || {
            DbError::Sql(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_READONLY_RECOVERY),
                None,
            ))
        };
        let mut calls = 0;
        let got = retry(|| {
            calls += 1;
            if calls < 3 { Err(torn()) } else { Ok(calls) }
        });
        assert_eq!(got.unwrap(), 3);
        let mut calls = 0;
        let got: Result<()> = retry(|| {
            calls += 1;
            Err(DbError::Sql(rusqlite::Error::QueryReturnedNoRows))
        });
        assert!(got.is_err());
        assert_eq!(calls, 1, "a real error is not retried");
    }
    use nanoclaw_schema::session::SESSION_DBS;

    struct Host {
        _dir: tempfile::TempDir,
        path: PathBuf,
        inbound: Connection,
        next_seq: i64,
    }

    impl Host {
        fn new() -> Host {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().to_path_buf();
            for (file, schema, version) in SESSION_DBS {
                let c = Connection::open(path.join(file)).unwrap();
                c.pragma_update(None, "journal_mode", "wal").unwrap();
                c.execute_batch(schema).unwrap();
                c.pragma_update(None, "user_version", version).unwrap();
            }
            let inbound = Connection::open(path.join(INBOUND_DB)).unwrap();
            Host {
                _dir: dir,
                path,
                inbound,
                next_seq: 2,
            }
        }

        fn add(&mut self, id: &str, trigger: bool, extra: &str) -> i64 {
            let seq = self.next_seq;
            self.next_seq += 2;
            self.inbound
                .execute(
                    &format!(
                        "INSERT INTO messages_in (id, seq, kind, timestamp, trigger, channel_type, platform_id, content {})
                         VALUES (?1, ?2, 'chat', ?3, ?4, 'cli', 'local', '{{\"text\":\"x\"}}' {})",
                        if extra.is_empty() { "" } else { ", on_wake" },
                        if extra.is_empty() { "" } else { ", 1" },
                    ),
                    params![id, seq, time::now(), trigger],
                )
                .unwrap();
            seq
        }
    }

    fn ids(sel: &Selection) -> Vec<&str> {
        sel.rows.iter().map(|r| r.id.as_str()).collect()
    }

    #[test]
    fn oldest_first_needs_a_trigger_and_skips_claimed() {
        let mut host = Host::new();
        let mut db = SessionDb::open(&host.path, &host.path).unwrap();
        host.add("a", false, "");
        assert!(
            db.next_batch(Timestamp::now(), 10).unwrap().is_none(),
            "context only: wait"
        );
        host.add("b", true, "");
        host.add("c", false, "");
        let sel = db.next_batch(Timestamp::now(), 10).unwrap().unwrap();
        assert_eq!(ids(&sel), ["a", "b", "c"]);
        assert!(sel.overflow.is_empty());
        db.ack(&["a", "b"], AckStatus::Processing).unwrap();
        assert!(
            db.next_batch(Timestamp::now(), 10).unwrap().is_none(),
            "c alone has no trigger"
        );
        assert_eq!(db.clear_stale_claims().unwrap(), 2);
        assert_eq!(
            ids(&db.next_batch(Timestamp::now(), 10).unwrap().unwrap()),
            ["a", "b", "c"]
        );
    }

    #[test]
    fn window_ends_at_first_trigger_and_overflow_is_reported() {
        let mut host = Host::new();
        let mut db = SessionDb::open(&host.path, &host.path).unwrap();
        for id in ["c1", "c2", "c3", "c4"] {
            host.add(id, false, "");
        }
        host.add("t", true, "");
        host.add("after", true, "");
        let sel = db.next_batch(Timestamp::now(), 3).unwrap().unwrap();
        assert_eq!(ids(&sel), ["c3", "c4", "t"]);
        assert_eq!(sel.overflow, ["c1", "c2"]);
        let sel = db.next_batch(Timestamp::now(), 1).unwrap().unwrap();
        assert_eq!(ids(&sel), ["t"]);
        assert_eq!(sel.overflow.len(), 4);
    }

    #[test]
    fn on_wake_rows_are_seen_only_by_the_container_that_started_after_them() {
        let mut host = Host::new();
        host.add("early", true, "on_wake");
        let mut db = SessionDb::open(&host.path, &host.path).unwrap();
        host.add("late", true, "on_wake");
        host.add("normal", true, "");
        let sel = db.next_batch(Timestamp::now(), 10).unwrap().unwrap();
        assert_eq!(ids(&sel), ["early", "normal"]);
    }

    #[test]
    fn data_version_sees_other_connections_only() {
        let mut host = Host::new();
        let mut db = SessionDb::open(&host.path, &host.path).unwrap();
        assert!(!db.inbound_changed().unwrap());
        db.ack(&["x"], AckStatus::Processing).unwrap();
        assert!(
            !db.inbound_changed().unwrap(),
            "our own outbound writes are not inbound commits"
        );
        host.add("a", true, "");
        assert!(db.inbound_changed().unwrap());
        assert!(!db.inbound_changed().unwrap());
    }

    #[test]
    fn finish_turn_assigns_odd_seqs_above_both_sides() {
        let mut host = Host::new();
        let mut db = SessionDb::open(&host.path, &host.path).unwrap();
        host.add("a", true, "");
        host.add("b", true, "");
        let row = OutRow {
            kind: OutKind::Chat,
            in_reply_to: Some("b".into()),
            channel_type: Some("cli".into()),
            platform_id: Some("local".into()),
            thread_id: None,
            content: "{}".into(),
        };
        let seqs = db
            .finish_turn(&[row.clone(), row], &[("a", AckStatus::Completed)])
            .unwrap();
        assert_eq!(seqs, [5, 7]);
        assert!(
            db.next_batch(Timestamp::now(), 10).unwrap().is_some(),
            "b is not acked"
        );
        let status: String = db
            .outbound
            .query_row(
                "SELECT status FROM processing_ack WHERE message_id = 'a'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(status, "completed");
    }

    #[test]
    fn refuses_other_schema_versions() {
        let host = Host::new();
        let c = Connection::open(host.path.join(INBOUND_DB)).unwrap();
        c.pragma_update(None, "user_version", INBOUND_SCHEMA_VERSION + 1)
            .unwrap();
        let err = SessionDb::open(&host.path, &host.path).err().unwrap();
        assert!(err.is_incompatible());
        assert!(err.to_string().contains("newer"), "{err}");
        c.pragma_update(None, "user_version", 0).unwrap();
        assert!(matches!(
            SessionDb::open(&host.path, &host.path),
            Err(DbError::OlderSchema { found: 0, .. })
        ));
    }

    #[test]
    fn missing_files_are_not_created() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            SessionDb::open(dir.path(), dir.path()),
            Err(DbError::Open { .. })
        ));
        assert!(!dir.path().join(OUTBOUND_DB).exists());
    }
}
