//! Writing a session's `inbound.db` (the host is its only writer).

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use nanoclaw_schema::session::{self, InKind};

use crate::error::Result;
use crate::store::destinations::Resolved;

/// One row for `messages_in`.
#[derive(Debug, Clone)]
pub struct NewMessage<'a> {
    /// Unique within the session; a platform redelivery of the same message maps to the same
    /// id and is ignored.
    pub id: &'a str,
    pub kind: InKind,
    pub timestamp: &'a str,
    /// False: context only, does not wake the agent.
    pub trigger: bool,
    pub channel_type: Option<&'a str>,
    pub platform_id: Option<&'a str>,
    pub thread_id: Option<&'a str>,
    pub platform_message_id: Option<&'a str>,
    /// JSON (see `nanoclaw_schema::session::content`).
    pub content: &'a str,
    pub process_after: Option<&'a str>,
    pub source_session_id: Option<&'a str>,
    pub on_wake: bool,
}

/// What [`insert_message`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Insert {
    Inserted {
        seq: i64,
    },
    /// A message with this id was already there (redelivery); nothing changed.
    Duplicate,
}

/// Appends a message with the next even seq, in one IMMEDIATE transaction so concurrent
/// writers (the daemon and an operator command) can never take the same seq.
pub fn insert_message(conn: &mut Connection, m: &NewMessage<'_>) -> Result<Insert> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let exists: bool = tx
        .prepare_cached("SELECT EXISTS(SELECT 1 FROM messages_in WHERE id = ?1)")?
        .query_row([m.id], |r| r.get(0))?;
    if exists {
        return Ok(Insert::Duplicate);
    }
    let max: Option<i64> = tx
        .prepare_cached("SELECT MAX(seq) FROM messages_in")?
        .query_row([], |r| r.get(0))?;
    let seq = session::next_host_seq(max);
    tx.prepare_cached(
        "INSERT INTO messages_in (id, seq, kind, timestamp, status, process_after, trigger, channel_type,
                                  platform_id, thread_id, platform_message_id, content, source_session_id, on_wake)
         VALUES (?1, ?2, ?3, ?4, 'pending', ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
    )?
    .execute(params![
        m.id,
        seq,
        m.kind.as_str(),
        m.timestamp,
        m.process_after,
        m.trigger,
        m.channel_type,
        m.platform_id,
        m.thread_id,
        m.platform_message_id,
        m.content,
        m.source_session_id,
        m.on_wake
    ])?;
    tx.commit()?;
    Ok(Insert::Inserted { seq })
}

/// Replaces the session's destinations projection whole, in one transaction.
pub fn write_destinations(conn: &mut Connection, rows: &[Resolved]) -> Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute("DELETE FROM destinations", [])?;
    {
        let mut insert = tx.prepare_cached(
            "INSERT INTO destinations (name, display_name, type, channel_type, platform_id, agent_group_id)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?;
        for d in rows {
            insert.execute(params![
                d.name,
                d.display_name,
                d.kind.as_str(),
                d.channel_type,
                d.platform_id,
                d.agent_group_id
            ])?;
        }
    }
    tx.commit()?;
    Ok(())
}

/// Sets the session's default reply address.
pub fn write_routing(
    conn: &Connection,
    channel_type: Option<&str>,
    platform_id: Option<&str>,
    thread_id: Option<&str>,
) -> Result<()> {
    conn.execute(
        "INSERT INTO session_routing (id, channel_type, platform_id, thread_id) VALUES (1, ?1, ?2, ?3)
         ON CONFLICT (id) DO UPDATE SET channel_type = excluded.channel_type,
             platform_id = excluded.platform_id, thread_id = excluded.thread_id",
        params![channel_type, platform_id, thread_id],
    )?;
    Ok(())
}

/// The destination names in the projection (for tests and diagnostics).
pub fn destination_names(conn: &Connection) -> Result<Vec<String>> {
    let mut stmt = conn.prepare("SELECT name FROM destinations ORDER BY name")?;
    let rows = stmt
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

/// The status of one message, if present.
pub fn message_status(conn: &Connection, id: &str) -> Result<Option<String>> {
    Ok(conn
        .query_row("SELECT status FROM messages_in WHERE id = ?1", [id], |r| {
            r.get(0)
        })
        .optional()?)
}
