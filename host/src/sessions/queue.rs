//! The central `inbound_queue`: messages decided for a session and not yet in its
//! `inbound.db`.
//!
//! Task firing, agent-to-agent delivery, the host's notes and the operator's welcome append
//! their messages here inside their own central transaction: durable at once, without
//! touching any session file under the central lock. The router writes a message straight
//! into its session when the session's DB takes it at once, and queues it here otherwise
//! (busy, or messages already waiting, which must stay first). The session's
//! [`writer`](super::writer) moves the rows into `inbound.db` and forgets them, so a session
//! DB that is slow or locked by its container delays that session only.

use rusqlite::{Connection, params};

use nanoclaw_schema::session::InKind;

use crate::error::Result;
use crate::ids::SessionId;

/// One message for a session's `messages_in`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queued {
    /// Unique within the session; a redelivery of the same message maps to the same id and
    /// is ignored.
    pub id: String,
    pub kind: InKind,
    pub timestamp: String,
    /// False: context only, does not wake the agent.
    pub trigger: bool,
    pub channel_type: Option<String>,
    pub platform_id: Option<String>,
    pub thread_id: Option<String>,
    pub platform_message_id: Option<String>,
    /// JSON (see `nanoclaw_schema::session::content`).
    pub content: String,
    pub process_after: Option<String>,
    pub source_session_id: Option<String>,
    pub on_wake: bool,
}

impl Queued {
    /// A triggering message with no reply address; set the other fields with struct update.
    /// A note from the host to the agent (a `system` row, triggering): how something it
    /// asked for, or something about it, turned out. Set the other fields with struct update.
    pub fn note(
        id: impl Into<String>,
        action: &str,
        ok: Option<bool>,
        text: impl Into<String>,
    ) -> Self {
        let note = nanoclaw_schema::session::content::SystemIn {
            text: text.into(),
            action: Some(action.to_string()),
            ok,
        };
        // A struct of strings always serializes.
        let content = serde_json::to_string(&note).unwrap_or_default();
        Queued::new(id, InKind::System, nanoclaw_schema::time::now(), content)
    }

    pub fn new(
        id: impl Into<String>,
        kind: InKind,
        timestamp: impl Into<String>,
        content: impl Into<String>,
    ) -> Self {
        Queued {
            id: id.into(),
            kind,
            timestamp: timestamp.into(),
            trigger: true,
            channel_type: None,
            platform_id: None,
            thread_id: None,
            platform_message_id: None,
            content: content.into(),
            process_after: None,
            source_session_id: None,
            on_wake: false,
        }
    }
}

/// Appends `m` for `session`. False when the same message is already waiting (a redelivery).
pub fn push(conn: &Connection, session: &SessionId, m: &Queued) -> Result<bool> {
    let n = conn
        .prepare_cached(
            "INSERT OR IGNORE INTO inbound_queue (session_id, message_id, kind, timestamp, trigger, channel_type,
                platform_id, thread_id, platform_message_id, content, process_after, source_session_id, on_wake, queued_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
        )?
        .execute(params![
            session,
            m.id,
            m.kind.as_str(),
            m.timestamp,
            m.trigger,
            m.channel_type,
            m.platform_id,
            m.thread_id,
            m.platform_message_id,
            m.content,
            m.process_after,
            m.source_session_id,
            m.on_wake,
            nanoclaw_schema::time::now(),
        ])?;
    Ok(n > 0)
}

/// The oldest `limit` rows waiting for `session`, with their queue positions.
pub fn peek(conn: &Connection, session: &SessionId, limit: usize) -> Result<Vec<(i64, Queued)>> {
    let mut stmt = conn.prepare_cached(
        "SELECT seq, message_id, kind, timestamp, trigger, channel_type, platform_id, thread_id,
                platform_message_id, content, process_after, source_session_id, on_wake
         FROM inbound_queue WHERE session_id = ?1 ORDER BY seq LIMIT ?2",
    )?;
    let rows = stmt
        .query_map(params![session, limit as i64], |r| {
            let kind: String = r.get(2)?;
            Ok((
                r.get(0)?,
                Queued {
                    id: r.get(1)?,
                    // Only the host writes this table, with valid kinds.
                    kind: kind.parse().unwrap_or(InKind::Chat),
                    timestamp: r.get(3)?,
                    trigger: r.get(4)?,
                    channel_type: r.get(5)?,
                    platform_id: r.get(6)?,
                    thread_id: r.get(7)?,
                    platform_message_id: r.get(8)?,
                    content: r.get(9)?,
                    process_after: r.get(10)?,
                    source_session_id: r.get(11)?,
                    on_wake: r.get(12)?,
                },
            ))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

/// Forgets the rows of `session` up to queue position `upto` (they are in `inbound.db`).
pub fn remove_upto(conn: &Connection, session: &SessionId, upto: i64) -> Result<usize> {
    Ok(conn
        .prepare_cached("DELETE FROM inbound_queue WHERE session_id = ?1 AND seq <= ?2")?
        .execute(params![session, upto])?)
}

/// Forgets one waiting row (its message was deleted before it reached the session); true
/// when it was waiting.
pub fn remove(conn: &Connection, session: &SessionId, message_id: &str) -> Result<bool> {
    Ok(conn
        .prepare_cached("DELETE FROM inbound_queue WHERE session_id = ?1 AND message_id = ?2")?
        .execute(params![session, message_id])?
        > 0)
}

/// Sessions with rows (or withdrawals, see [`super::withdrawal`]) waiting.
pub fn sessions_waiting(conn: &Connection) -> Result<Vec<SessionId>> {
    let mut stmt = conn.prepare(
        "SELECT session_id FROM inbound_queue UNION SELECT session_id FROM inbound_withdrawals",
    )?;
    let rows = stmt
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

/// Whether any row waits for `session`.
pub fn has_waiting(conn: &Connection, session: &SessionId) -> Result<bool> {
    Ok(conn
        .prepare_cached("SELECT EXISTS(SELECT 1 FROM inbound_queue WHERE session_id = ?1)")?
        .query_row([session], |r| r.get(0))?)
}

/// How many rows wait for `session`.
pub fn waiting(conn: &Connection, session: &SessionId) -> Result<i64> {
    Ok(conn
        .prepare_cached("SELECT COUNT(*) FROM inbound_queue WHERE session_id = ?1")?
        .query_row([session], |r| r.get(0))?)
}
