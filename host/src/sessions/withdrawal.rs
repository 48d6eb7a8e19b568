//! Taking a message back from one session after its sender deleted it on the platform.
//!
//! The router tries at once; when the session's `inbound.db` is busy (its container may hold
//! it locked) the withdrawal waits in the central `inbound_withdrawals` table and the session
//! [`writer`](super::writer) applies it with its retries, so one locked session neither loses
//! a deletion nor delays the others.

use rusqlite::{Connection, params};

use super::inbound::{self, Withdrawal};
use super::queue::Queued;
use super::{Session, SessionStore, outbound};
use crate::error::Result;
use crate::ids::SessionId;

/// How long [`take_back`] may wait for a busy session DB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Fail at once (the router, which then queues the withdrawal).
    No,
    /// Up to the host's short busy timeout (the writer, which retries).
    Briefly,
}

/// Takes message `id` back from `session`: a pending row becomes `deleted` and its inbox
/// files go. Blocking; fails (to be retried) when the session's DB is busy.
pub fn take_back(
    sessions: &SessionStore,
    session: &Session,
    id: &str,
    wait: Wait,
) -> Result<Withdrawal> {
    // The container's claim is its own (hostile) word: believing it only decides between
    // withdrawing silently and adding a note. No readable outbound.db (no container has run
    // yet, or it broke its own DB) means no claim.
    let claimed = sessions
        .with_outbound(session, |r| outbound::claimed(r, id))
        .unwrap_or(false);
    let apply = |c: &mut Connection| inbound::withdraw(c, id, claimed);
    let w = match wait {
        Wait::No => sessions.with_inbound_now(session, apply)?,
        Wait::Briefly => sessions.with_inbound(session, apply)?,
    };
    if w == Withdrawal::Withdrawn
        && let Ok(dir) = sessions.session_dir(session)
    {
        dir.remove_inbox(&super::dir::inbox_folder(id));
    }
    Ok(w)
}

/// The note (context, no wake) telling the agent that message `seq`, which it has read, was
/// deleted by its sender.
pub fn note(id: &str, seq: i64) -> Queued {
    Queued {
        trigger: false,
        ..Queued::note(
            format!("{id}:deleted"),
            "message_deleted",
            None,
            format!(
                "The sender deleted message {seq}. Treat it as withdrawn; if you replied to \
                 it, consider whether your reply still stands."
            ),
        )
    }
}

/// Records that `id` is still to be taken back from `session`. False if it already was.
pub fn push(conn: &Connection, session: &SessionId, id: &str) -> Result<bool> {
    Ok(conn
        .prepare_cached(
            "INSERT OR IGNORE INTO inbound_withdrawals (session_id, message_id, queued_at)
             VALUES (?1, ?2, ?3)",
        )?
        .execute(params![session, id, nanoclaw_schema::time::now()])?
        > 0)
}

/// The oldest `limit` withdrawals waiting for `session`.
pub fn waiting(conn: &Connection, session: &SessionId, limit: usize) -> Result<Vec<String>> {
    let mut stmt = conn.prepare_cached(
        "SELECT message_id FROM inbound_withdrawals WHERE session_id = ?1 ORDER BY queued_at, message_id LIMIT ?2",
    )?;
    let rows = stmt
        .query_map(params![session, limit as i64], |r| r.get(0))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

/// Forgets a withdrawal that was applied.
pub fn remove(conn: &Connection, session: &SessionId, id: &str) -> Result<()> {
    conn.prepare_cached(
        "DELETE FROM inbound_withdrawals WHERE session_id = ?1 AND message_id = ?2",
    )?
    .execute(params![session, id])?;
    Ok(())
}
