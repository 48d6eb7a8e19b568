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

impl<'a> NewMessage<'a> {
    /// A triggering message with no reply address; set the other fields with struct update.
    pub fn new(id: &'a str, kind: InKind, timestamp: &'a str, content: &'a str) -> Self {
        NewMessage {
            id,
            kind,
            timestamp,
            trigger: true,
            channel_type: None,
            platform_id: None,
            thread_id: None,
            platform_message_id: None,
            content,
            process_after: None,
            source_session_id: None,
            on_wake: false,
        }
    }
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
    crate::db::immediate(conn, |tx| {
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
        Ok(Insert::Inserted { seq })
    })
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

/// How a message out of `outbound.db` ended, if it has been handled.
pub fn delivery_status(conn: &Connection, message_out_id: &str) -> Result<Option<String>> {
    Ok(conn
        .prepare_cached("SELECT status FROM delivered WHERE message_out_id = ?1")?
        .query_row([message_out_id], |r| r.get(0))
        .optional()?)
}

/// Records how a message out of `outbound.db` ended (first record wins).
pub fn record_delivery(
    conn: &Connection,
    message_out_id: &str,
    platform_message_id: Option<&str>,
    status: session::DeliveryStatus,
    error: Option<&str>,
) -> Result<()> {
    conn.prepare_cached(
        "INSERT OR IGNORE INTO delivered (message_out_id, platform_message_id, status, error, delivered_at)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![
        message_out_id,
        platform_message_id,
        status.as_str(),
        error,
        nanoclaw_schema::time::now()
    ])?;
    Ok(())
}

/// Marks messages the container finished as completed (it cannot write inbound.db itself).
pub fn mark_completed(conn: &mut Connection, ids: &[String]) -> Result<usize> {
    if ids.is_empty() {
        return Ok(0);
    }
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut n = 0;
    {
        let mut stmt = tx.prepare_cached(
            "UPDATE messages_in SET status = 'completed' WHERE id = ?1 AND status = 'pending'",
        )?;
        for id in ids {
            n += stmt.execute([id])?;
        }
    }
    tx.commit()?;
    Ok(n)
}

/// Ids of messages not yet completed or failed (normally a handful).
pub fn pending_ids(conn: &Connection) -> Result<Vec<String>> {
    let mut stmt =
        conn.prepare_cached("SELECT id FROM messages_in WHERE status = 'pending' ORDER BY seq")?;
    let rows = stmt
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

/// Pending messages that should wake the agent now.
pub fn due_triggers(conn: &Connection, now: &str) -> Result<i64> {
    Ok(conn
        .prepare_cached(
            "SELECT COUNT(*) FROM messages_in WHERE status = 'pending' AND trigger = 1
             AND (process_after IS NULL OR process_after <= ?1)",
        )?
        .query_row([now], |r| r.get(0))?)
}

/// The earliest time a pending trigger becomes due, if one waits for the future.
pub fn next_due(conn: &Connection, now: &str) -> Result<Option<String>> {
    Ok(conn
        .prepare_cached(
            "SELECT MIN(process_after) FROM messages_in WHERE status = 'pending' AND trigger = 1
             AND process_after > ?1",
        )?
        .query_row([now], |r| r.get(0))?)
}

/// What crash recovery did with one claimed message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Retry {
    /// Will be tried again at this time.
    At { id: String, tries: i64, at: String },
    /// Gave up after too many tries.
    Failed { id: String, tries: i64 },
}

/// After a container died holding claims: each claimed message still pending is retried
/// after a backoff (`base * 2^tries`), or marked failed after `max_tries`.
pub fn retry_claimed(
    conn: &mut Connection,
    claimed: &[String],
    max_tries: i64,
    base: std::time::Duration,
    now: jiff::Timestamp,
) -> Result<Vec<Retry>> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut out = Vec::new();
    for id in claimed {
        let row: Option<(i64, Option<String>)> = tx
            .query_row(
                "SELECT tries, process_after FROM messages_in WHERE id = ?1 AND status = 'pending'",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let Some((tries, _)) = row else { continue };
        let tries = tries + 1;
        if tries > max_tries {
            tx.execute(
                "UPDATE messages_in SET status = 'failed', tries = ?2 WHERE id = ?1",
                params![id, tries],
            )?;
            out.push(Retry::Failed {
                id: id.clone(),
                tries,
            });
        } else {
            let delay = base.saturating_mul(1u32 << (tries - 1).clamp(0, 16));
            let at = nanoclaw_schema::time::format(
                now.checked_add(
                    jiff::SignedDuration::try_from(delay).unwrap_or(jiff::SignedDuration::ZERO),
                )
                .unwrap_or(now),
            );
            tx.execute(
                "UPDATE messages_in SET tries = ?2, process_after = ?3 WHERE id = ?1",
                params![id, tries, at],
            )?;
            out.push(Retry::At {
                id: id.clone(),
                tries,
                at,
            });
        }
    }
    tx.commit()?;
    Ok(out)
}

/// Where a message came from (and where answers to it go).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyAddress {
    pub channel_type: Option<String>,
    pub platform_id: Option<String>,
    pub thread_id: Option<String>,
}

/// The reply address of a message, if the message exists.
pub fn reply_address(conn: &Connection, id: &str) -> Result<Option<ReplyAddress>> {
    Ok(conn
        .query_row(
            "SELECT channel_type, platform_id, thread_id FROM messages_in WHERE id = ?1",
            [id],
            |r| {
                Ok(ReplyAddress {
                    channel_type: r.get(0)?,
                    platform_id: r.get(1)?,
                    thread_id: r.get(2)?,
                })
            },
        )
        .optional()?)
}
