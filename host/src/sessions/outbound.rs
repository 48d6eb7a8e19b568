//! Reading a session's `outbound.db` (the container is its only writer), and the one write
//! the host makes there: clearing stale claims of a container that is gone.

use std::path::Path;

use rusqlite::{Connection, OptionalExtension, params};

use crate::error::Result;

/// One `messages_out` row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutRow {
    pub id: String,
    pub seq: i64,
    pub in_reply_to: Option<String>,
    pub deliver_after: Option<String>,
    pub kind: String,
    pub channel_type: Option<String>,
    pub platform_id: Option<String>,
    pub thread_id: Option<String>,
    pub content: String,
}

/// Opens `outbound.db` for reading.
pub fn open_reader(path: &Path) -> Result<Connection> {
    let conn = super::open_session_db(path)?;
    conn.pragma_update(None, "query_only", true)?;
    Ok(conn)
}

/// Rows with a seq above `after`, in seq order.
pub fn rows_after(conn: &Connection, after: i64) -> Result<Vec<OutRow>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, seq, in_reply_to, deliver_after, kind, channel_type, platform_id, thread_id, content
         FROM messages_out WHERE seq > ?1 ORDER BY seq",
    )?;
    let rows = stmt
        .query_map([after], |r| {
            Ok(OutRow {
                id: r.get(0)?,
                seq: r.get(1)?,
                in_reply_to: r.get(2)?,
                deliver_after: r.get(3)?,
                kind: r.get(4)?,
                channel_type: r.get(5)?,
                platform_id: r.get(6)?,
                thread_id: r.get(7)?,
                content: r.get(8)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

/// Which of `ids` the container has finished (acked `completed` or `failed`).
pub fn finished_among(conn: &Connection, ids: &[String]) -> Result<Vec<String>> {
    let mut done = Vec::new();
    let mut stmt = conn.prepare_cached(
        "SELECT 1 FROM processing_ack WHERE message_id = ?1 AND status IN ('completed', 'failed')",
    )?;
    for id in ids {
        if stmt.exists([id])? {
            done.push(id.clone());
        }
    }
    Ok(done)
}

/// Messages the container claimed and has not finished: `(message id, claimed at)`.
pub fn processing_claims(conn: &Connection) -> Result<Vec<(String, String)>> {
    let mut stmt = conn.prepare_cached(
        "SELECT message_id, status_changed FROM processing_ack WHERE status = 'processing'",
    )?;
    let rows = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

/// The tool the agent is running right now and its declared timeout, if it said.
pub fn current_tool(conn: &Connection) -> Result<Option<(String, Option<i64>)>> {
    Ok(conn
        .query_row(
            "SELECT current_tool, tool_declared_timeout_ms FROM container_state WHERE id = 1 AND current_tool IS NOT NULL",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?)
}

/// `PRAGMA data_version`: changes whenever another connection committed to the file.
pub fn data_version(conn: &Connection) -> Result<i64> {
    Ok(conn.query_row("PRAGMA data_version", [], |r| r.get(0))?)
}

/// Deletes `processing` claims left by a container that is no longer running, so the next
/// container sees those messages again. Only call this when no container owns the session.
pub fn clear_stale_claims(path: &Path) -> Result<usize> {
    let conn = super::open_session_db(path)?;
    Ok(conn.execute(
        "DELETE FROM processing_ack WHERE status = 'processing'",
        params![],
    )?)
}
