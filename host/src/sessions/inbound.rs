//! Writing a session's `inbound.db` (the host is its only writer).

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use nanoclaw_schema::session::{self, DeliveryStatus};

use super::queue::Queued;
use crate::error::Result;
use crate::store::destinations::Resolved;

/// What [`insert_batch`] did with one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Insert {
    Inserted {
        seq: i64,
    },
    /// A message with this id was already there (redelivery); nothing changed.
    Duplicate,
}

/// Appends messages with the next even seqs, in one IMMEDIATE transaction so concurrent
/// writers (the daemon and an operator command) can never take the same seq.
pub fn insert_batch(conn: &mut Connection, batch: &[Queued]) -> Result<Vec<Insert>> {
    crate::db::immediate(conn, |tx| {
        let mut out = Vec::with_capacity(batch.len());
        let mut max: Option<i64> = tx
            .prepare_cached("SELECT MAX(seq) FROM messages_in")?
            .query_row([], |r| r.get(0))?;
        for m in batch {
            let exists: bool = tx
                .prepare_cached("SELECT EXISTS(SELECT 1 FROM messages_in WHERE id = ?1)")?
                .query_row([&m.id], |r| r.get(0))?;
            if exists {
                out.push(Insert::Duplicate);
                continue;
            }
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
            max = Some(seq);
            out.push(Insert::Inserted { seq });
        }
        Ok(out)
    })
}

/// Appends one message (see [`insert_batch`]).
pub fn insert_message(conn: &mut Connection, m: &Queued) -> Result<Insert> {
    Ok(insert_batch(conn, std::slice::from_ref(m))?[0])
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
pub fn delivery_status(conn: &Connection, message_out_id: &str) -> Result<Option<DeliveryStatus>> {
    let status: Option<String> = conn
        .prepare_cached("SELECT status FROM delivered WHERE message_out_id = ?1")?
        .query_row([message_out_id], |r| r.get(0))
        .optional()?;
    // Only the host writes this table; an unknown value would be a bug, counted as handled.
    Ok(status.map(|s| s.parse().unwrap_or(DeliveryStatus::Failed)))
}

/// Records how a message out of `outbound.db` ended (first record wins) and drops its part
/// progress, in one transaction.
pub fn record_delivery(
    conn: &mut Connection,
    message_out_id: &str,
    platform_message_id: Option<&str>,
    status: DeliveryStatus,
    error: Option<&str>,
) -> Result<()> {
    crate::db::immediate(conn, |tx| {
        tx.prepare_cached(
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
        tx.prepare_cached("DELETE FROM delivery_parts WHERE message_out_id = ?1")?
            .execute([message_out_id])?;
        Ok(())
    })
}

/// One part of a message being posted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartState {
    /// The platform call was (maybe) made: the host crashed or timed out before knowing.
    Sending,
    /// The platform took it, under this id.
    Sent(Option<String>),
}

/// The recorded progress of a message posted in parts, by part number.
pub fn parts(conn: &Connection, message_out_id: &str) -> Result<Vec<(usize, PartState)>> {
    let mut stmt = conn.prepare_cached(
        "SELECT part, state, platform_message_id FROM delivery_parts WHERE message_out_id = ?1 ORDER BY part",
    )?;
    let rows = stmt
        .query_map([message_out_id], |r| {
            let part: i64 = r.get(0)?;
            let state: String = r.get(1)?;
            let id: Option<String> = r.get(2)?;
            Ok((
                part as usize,
                if state == "sent" {
                    PartState::Sent(id)
                } else {
                    PartState::Sending
                },
            ))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

/// Records the intent to post `part` (before the platform call).
pub fn part_sending(conn: &Connection, message_out_id: &str, part: usize) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO delivery_parts (message_out_id, part, state, updated_at) VALUES (?1, ?2, 'sending', ?3)
         ON CONFLICT (message_out_id, part) DO UPDATE SET state = 'sending', updated_at = excluded.updated_at
         WHERE state = 'sending'",
    )?
    .execute(params![message_out_id, part as i64, nanoclaw_schema::time::now()])?;
    Ok(())
}

/// Records that the platform took `part`.
pub fn part_sent(
    conn: &Connection,
    message_out_id: &str,
    part: usize,
    platform_message_id: Option<&str>,
) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO delivery_parts (message_out_id, part, state, platform_message_id, updated_at)
         VALUES (?1, ?2, 'sent', ?3, ?4)
         ON CONFLICT (message_out_id, part) DO UPDATE SET state = 'sent',
             platform_message_id = excluded.platform_message_id, updated_at = excluded.updated_at",
    )?
    .execute(params![
        message_out_id,
        part as i64,
        platform_message_id,
        nanoclaw_schema::time::now()
    ])?;
    Ok(())
}

/// Every outbound row at or below this seq is finished.
pub fn frontier(conn: &Connection) -> Result<i64> {
    Ok(conn
        .prepare_cached("SELECT frontier FROM delivery_state WHERE id = 1")?
        .query_row([], |r| r.get(0))
        .optional()?
        .unwrap_or(0))
}

pub fn set_frontier(conn: &Connection, seq: i64) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO delivery_state (id, frontier) VALUES (1, ?1)
         ON CONFLICT (id) DO UPDATE SET frontier = excluded.frontier",
    )?
    .execute([seq])?;
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

/// What [`withdraw`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Withdrawal {
    /// Not in this session.
    Absent,
    /// Was pending: now `deleted`, so no runner takes it any more.
    Withdrawn,
    /// Already taken (or finished); its `seq`, the id the agent knows it by.
    Taken { seq: i64 },
}

/// Takes back a message whose sender deleted it: a pending row becomes `deleted` (the
/// runner reads only `pending` ones). `claimed` says whether the container already claimed
/// it; such a row is still marked, but reported as [`Withdrawal::Taken`].
pub fn withdraw(conn: &Connection, id: &str, claimed: bool) -> Result<Withdrawal> {
    let row: Option<(i64, String)> = conn
        .prepare_cached("SELECT seq, status FROM messages_in WHERE id = ?1")?
        .query_row([id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let Some((seq, status)) = row else {
        return Ok(Withdrawal::Absent);
    };
    if status != "pending" {
        return Ok(if status == "deleted" {
            Withdrawal::Withdrawn
        } else {
            Withdrawal::Taken { seq }
        });
    }
    conn.prepare_cached("UPDATE messages_in SET status = 'deleted' WHERE id = ?1")?
        .execute([id])?;
    Ok(if claimed {
        Withdrawal::Taken { seq }
    } else {
        Withdrawal::Withdrawn
    })
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

/// Which of `ids` are scheduled-task firings (`task` rows the host queued).
pub fn task_firings_among(conn: &Connection, ids: &[String]) -> Result<Vec<String>> {
    let mut stmt =
        conn.prepare_cached("SELECT 1 FROM messages_in WHERE id = ?1 AND kind = 'task'")?;
    let mut out = Vec::new();
    for id in ids {
        if stmt.exists([id])? {
            out.push(id.clone());
        }
    }
    Ok(out)
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

/// True if `message_id` (a platform's id) is a message this session has seen: one that came
/// in from `channel`/`chat_id`, or one the host delivered for the session. Agents may edit or
/// react only to those. (A delivered message's chat is not recorded here; platforms scope
/// edits to the bot's own messages, and the chat itself passed the outbound ACL.)
pub fn knows_message(
    conn: &Connection,
    channel: &str,
    chat_id: &str,
    message_id: &str,
) -> Result<bool> {
    Ok(conn
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM messages_in
                            WHERE platform_message_id = ?1 AND channel_type = ?2 AND platform_id = ?3)
                 OR EXISTS (SELECT 1 FROM delivered
                            WHERE platform_message_id = ?1 AND status = 'delivered')",
        )?
        .query_row(params![message_id, channel, chat_id], |r| r.get(0))?)
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
