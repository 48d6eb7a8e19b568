//! Agents' requests to change themselves (packages in their image, MCP servers in their
//! config): opened from a system row, decided by an approver, then carried out or refused.
//! Decided requests stay as the record of who decided what and when.

use nanoclaw_schema::session::selfmod::{self, McpServer};
use rusqlite::{Connection, OptionalExtension, Row, params};
use serde::{Deserialize, Serialize};

use crate::db::text_enum;
use crate::error::{Error, Result};
use crate::ids::{AgentGroupId, AgentRequestId, MessagingGroupId, SessionId, UserId};

/// Requests of one agent group open at once (pending, or approved and not yet carried out);
/// beyond it new ones are refused, so an agent cannot flood its approvers.
pub const MAX_OPEN_PER_AGENT: i64 = 5;

text_enum! {
    RequestKind, "agent request kind" {
        InstallPackages = "install_packages",
        AddMcpServer = "add_mcp_server",
    }
}

text_enum! {
    RequestStatus, "agent request status" {
        Pending = "pending",
        Approved = "approved",
        Denied = "denied",
        /// Approved and carried out.
        Applied = "applied",
        /// Approved, but carrying it out failed (nothing changed).
        Failed = "failed",
    }
}

/// What an agent asks for, validated by [`Change::check`] before it is stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Change {
    InstallPackages {
        #[serde(default)]
        apt: Vec<String>,
        #[serde(default)]
        npm: Vec<String>,
        #[serde(default)]
        reason: Option<String>,
    },
    AddMcpServer {
        name: String,
        server: McpServer,
    },
}

impl Change {
    pub fn kind(&self) -> RequestKind {
        match self {
            Change::InstallPackages { .. } => RequestKind::InstallPackages,
            Change::AddMcpServer { .. } => RequestKind::AddMcpServer,
        }
    }

    /// The same rules the runner applies before it writes the request.
    pub fn check(&self) -> std::result::Result<(), String> {
        match self {
            Change::InstallPackages { apt, npm, .. } => selfmod::check_packages(apt, npm),
            Change::AddMcpServer { name, server } => selfmod::check_mcp_server(name, server),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AgentRequest {
    pub id: AgentRequestId,
    pub agent_group_id: AgentGroupId,
    pub session_id: SessionId,
    pub change: Change,
    pub status: RequestStatus,
    pub approver_user_id: Option<UserId>,
    pub card_messaging_group_id: Option<MessagingGroupId>,
    pub card_message_id: Option<String>,
    pub decided_by: Option<UserId>,
    pub decided_at: Option<String>,
    pub outcome: Option<String>,
    pub notified_at: Option<String>,
    pub created_at: String,
}

const COLUMNS: &str = "id, agent_group_id, session_id, payload, status, approver_user_id, \
    card_messaging_group_id, card_message_id, decided_by, decided_at, outcome, notified_at, created_at";

fn from_row(r: &Row<'_>) -> rusqlite::Result<AgentRequest> {
    let payload: String = r.get(3)?;
    let change = serde_json::from_str(&payload).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(3, rusqlite::types::Type::Text, Box::new(e))
    })?;
    Ok(AgentRequest {
        id: r.get(0)?,
        agent_group_id: r.get(1)?,
        session_id: r.get(2)?,
        change,
        status: r.get(4)?,
        approver_user_id: r.get(5)?,
        card_messaging_group_id: r.get(6)?,
        card_message_id: r.get(7)?,
        decided_by: r.get(8)?,
        decided_at: r.get(9)?,
        outcome: r.get(10)?,
        notified_at: r.get(11)?,
        created_at: r.get(12)?,
    })
}

/// What [`open`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum Opened {
    New(AgentRequest),
    /// The same request (a redelivered row) exists already.
    Existing(AgentRequest),
    /// The agent has [`MAX_OPEN_PER_AGENT`] requests open.
    TooMany,
}

/// Opens a request with id `id` (derived from its row by the caller).
pub fn open(
    conn: &Connection,
    id: &AgentRequestId,
    agent: &AgentGroupId,
    session: &SessionId,
    change: &Change,
) -> Result<Opened> {
    if let Some(existing) = get(conn, id)? {
        return Ok(Opened::Existing(existing));
    }
    let open: i64 = conn.query_row(
        "SELECT COUNT(*) FROM agent_requests WHERE agent_group_id = ?1 AND status IN ('pending', 'approved')",
        [agent],
        |r| r.get(0),
    )?;
    if open >= MAX_OPEN_PER_AGENT {
        return Ok(Opened::TooMany);
    }
    let payload = serde_json::to_string(change).map_err(|e| Error::Json {
        context: "agent request".into(),
        source: e,
    })?;
    conn.execute(
        "INSERT INTO agent_requests (id, kind, agent_group_id, session_id, payload, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            id,
            change.kind().as_str(),
            agent,
            session,
            payload,
            nanoclaw_schema::time::now()
        ],
    )?;
    get(conn, id)?
        .map(Opened::New)
        .ok_or_else(|| Error::not_found("agent request", id.as_str()))
}

pub fn get(conn: &Connection, id: &AgentRequestId) -> Result<Option<AgentRequest>> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM agent_requests WHERE id = ?1"
        ))?
        .query_row([id], from_row)
        .optional()?)
}

/// Requests, oldest first; only those with `status` if given.
pub fn list(conn: &Connection, status: Option<RequestStatus>) -> Result<Vec<AgentRequest>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM agent_requests WHERE ?1 IS NULL OR status = ?1 ORDER BY created_at, id"
    ))?;
    let rows = stmt.query_map([status.map(|s| s.as_str())], from_row)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Decided requests whose agent has not been told the end yet (approved ones are still to be
/// carried out), oldest first.
pub fn unsettled(conn: &Connection) -> Result<Vec<AgentRequest>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM agent_requests WHERE status != 'pending' AND notified_at IS NULL
         ORDER BY decided_at, id"
    ))?;
    let rows = stmt.query_map([], from_row)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Records where the card went.
pub fn set_card(
    conn: &Connection,
    id: &AgentRequestId,
    approver: &UserId,
    chat: &MessagingGroupId,
    message_id: Option<&str>,
) -> Result<()> {
    conn.execute(
        "UPDATE agent_requests SET approver_user_id = ?2, card_messaging_group_id = ?3, card_message_id = ?4
         WHERE id = ?1",
        params![id, approver, chat, message_id],
    )?;
    Ok(())
}

/// Approves or denies a pending request. A request decided already is a conflict.
pub fn decide(
    conn: &Connection,
    id: &AgentRequestId,
    approve: bool,
    by: Option<&UserId>,
) -> Result<AgentRequest> {
    let status = if approve {
        RequestStatus::Approved
    } else {
        RequestStatus::Denied
    };
    let n = conn.execute(
        "UPDATE agent_requests SET status = ?2, decided_by = ?3, decided_at = ?4
         WHERE id = ?1 AND status = 'pending'",
        params![id, status, by, nanoclaw_schema::time::now()],
    )?;
    let request = get(conn, id)?.ok_or_else(|| Error::not_found("agent request", id.as_str()))?;
    if n == 0 {
        return Err(Error::Conflict(format!(
            "request {id} is {} already",
            request.status
        )));
    }
    Ok(request)
}

/// Records how carrying out an approved request ended, and that the agent is told (the
/// caller queues the note in the same transaction).
pub fn finish(
    conn: &Connection,
    id: &AgentRequestId,
    status: RequestStatus,
    outcome: Option<&str>,
) -> Result<()> {
    conn.execute(
        "UPDATE agent_requests SET status = ?2, outcome = ?3, notified_at = ?4 WHERE id = ?1",
        params![id, status, outcome, nanoclaw_schema::time::now()],
    )?;
    Ok(())
}

/// Records a click that did not count.
pub fn record_ignored_click(conn: &Connection, id: &AgentRequestId, user: &UserId) -> Result<()> {
    conn.execute(
        "UPDATE agent_requests SET ignored_clicks = json_insert(ignored_clicks, '$[#]',
             json_object('user', ?2, 'at', ?3)) WHERE id = ?1",
        params![id, user, nanoclaw_schema::time::now()],
    )?;
    Ok(())
}

/// The clicks that did not count (for tests and the CLI).
pub fn ignored_clicks(conn: &Connection, id: &AgentRequestId) -> Result<serde_json::Value> {
    let raw: Option<String> = conn
        .query_row(
            "SELECT ignored_clicks FROM agent_requests WHERE id = ?1",
            [id],
            |r| r.get(0),
        )
        .optional()?;
    Ok(raw
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or(serde_json::Value::Null))
}
