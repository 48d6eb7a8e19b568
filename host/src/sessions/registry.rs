//! The `sessions` table: one row per conversation stream of an agent group.

use rusqlite::{Connection, OptionalExtension, Row, params};
use serde::Serialize;

use crate::db::text_enum;
use crate::error::{Error, Result};
use crate::ids::{AgentGroupId, MessagingGroupId, SessionId};
use crate::store::agent_groups::AgentProvider;

text_enum! {
    SessionStatus, "session status" {
        Active = "active",
        Closed = "closed",
    }
}

text_enum! {
    /// What the host last knew about the session's container.
    ContainerStatus, "container status" {
        Starting = "starting",
        Running = "running",
        Stopped = "stopped",
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Session {
    pub id: SessionId,
    pub agent_group_id: AgentGroupId,
    /// Origin chat; `None` for sessions started by another agent.
    pub messaging_group_id: Option<MessagingGroupId>,
    pub thread_id: Option<String>,
    pub provider: Option<AgentProvider>,
    pub status: SessionStatus,
    pub container_status: ContainerStatus,
    pub last_active: Option<String>,
    pub created_at: String,
}

const COLUMNS: &str = "id, agent_group_id, messaging_group_id, thread_id, provider, status, container_status, last_active, created_at";

fn from_row(r: &Row<'_>) -> rusqlite::Result<Session> {
    Ok(Session {
        id: r.get(0)?,
        agent_group_id: r.get(1)?,
        messaging_group_id: r.get(2)?,
        thread_id: r.get(3)?,
        provider: r.get(4)?,
        status: r.get(5)?,
        container_status: r.get(6)?,
        last_active: r.get(7)?,
        created_at: r.get(8)?,
    })
}

pub fn get(conn: &Connection, id: &SessionId) -> Result<Option<Session>> {
    Ok(conn
        .prepare_cached(&format!("SELECT {COLUMNS} FROM sessions WHERE id = ?1"))?
        .query_row([id], from_row)
        .optional()?)
}

/// The active session of (agent, chat, thread); `thread = None` matches thread-less sessions.
pub fn find_active(
    conn: &Connection,
    agent: &AgentGroupId,
    chat: Option<&MessagingGroupId>,
    thread: Option<&str>,
) -> Result<Option<Session>> {
    Ok(conn
        .prepare_cached(&format!(
            // Written to match the `sessions_one_active` index: one lookup, however many
            // sessions the agent has.
            "SELECT {COLUMNS} FROM sessions WHERE agent_group_id = ?1
             AND IFNULL(messaging_group_id, '') = IFNULL(?2, '') AND IFNULL(thread_id, '') = IFNULL(?3, '')
             AND status = 'active'"
        ))?
        .query_row(params![agent, chat, thread], from_row)
        .optional()?)
}

/// The most recently created active session of an agent, from any chat.
pub fn newest_active(conn: &Connection, agent: &AgentGroupId) -> Result<Option<Session>> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM sessions WHERE agent_group_id = ?1 AND status = 'active'
             ORDER BY created_at DESC, id DESC LIMIT 1"
        ))?
        .query_row([agent], from_row)
        .optional()?)
}

pub(crate) fn insert(conn: &Connection, s: &Session) -> Result<()> {
    conn.execute(
        &format!("INSERT INTO sessions ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"),
        params![
            s.id,
            s.agent_group_id,
            s.messaging_group_id,
            s.thread_id,
            s.provider,
            s.status,
            s.container_status,
            s.last_active,
            s.created_at
        ],
    )?;
    Ok(())
}

/// Sessions, optionally only one agent's and/or only active ones, newest first.
pub fn list(
    conn: &Connection,
    agent: Option<&AgentGroupId>,
    active_only: bool,
) -> Result<Vec<Session>> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {COLUMNS} FROM sessions WHERE (?1 IS NULL OR agent_group_id = ?1)
         AND (?2 = 0 OR status = 'active') ORDER BY created_at DESC, id DESC"
    ))?;
    let rows = stmt
        .query_map(params![agent, active_only], from_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

/// How stale `last_active` may get before a message updates it: it serves idle decisions
/// measured in minutes, and skipping the write keeps most routing transactions read-only.
const TOUCH_EVERY: jiff::SignedDuration = jiff::SignedDuration::from_secs(30);

/// Records activity now (at most every [`TOUCH_EVERY`]).
pub fn touch(conn: &Connection, id: &SessionId) -> Result<()> {
    let now = jiff::Timestamp::now();
    let stale = nanoclaw_schema::time::format(now.checked_sub(TOUCH_EVERY).unwrap_or(now));
    conn.prepare_cached(
        "UPDATE sessions SET last_active = ?2 WHERE id = ?1 AND (last_active IS NULL OR last_active < ?3)",
    )?
    .execute(params![id, nanoclaw_schema::time::format(now), stale])?;
    Ok(())
}

pub fn set_container_status(
    conn: &Connection,
    id: &SessionId,
    status: ContainerStatus,
) -> Result<()> {
    conn.prepare_cached("UPDATE sessions SET container_status = ?2 WHERE id = ?1")?
        .execute(params![id, status])?;
    Ok(())
}

/// Marks every session's container stopped (the host's view at start-up, before reaping).
pub fn reset_container_status(conn: &Connection) -> Result<usize> {
    Ok(conn.execute(
        "UPDATE sessions SET container_status = 'stopped' WHERE container_status <> 'stopped'",
        [],
    )?)
}

/// Closes a session: the next message starts a new one. Its files are kept.
pub fn close(conn: &Connection, id: &SessionId) -> Result<()> {
    let n = conn.execute(
        "UPDATE sessions SET status = 'closed' WHERE id = ?1 AND status = 'active'",
        [id],
    )?;
    if n == 0 {
        return Err(Error::not_found("active session", id.as_str()));
    }
    Ok(())
}
