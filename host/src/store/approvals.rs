//! Approval requests and the messages they hold. Decided requests stay as the record of who
//! decided what and when.

use rusqlite::{Connection, OptionalExtension, Row, params};
use serde::Serialize;

use crate::db::text_enum;
use crate::error::{Error, Result};
use crate::ids::{AgentGroupId, ApprovalId, MessagingGroupId, UserId};

pub use super::MAX_HELD_MESSAGES;

text_enum! {
    ApprovalKind, "approval kind" {
        /// An unknown sender wants to talk to an agent.
        Sender = "sender",
    }
}

text_enum! {
    ApprovalStatus, "approval status" {
        Pending = "pending",
        Approved = "approved",
        Denied = "denied",
        Expired = "expired",
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Approval {
    pub id: ApprovalId,
    pub kind: ApprovalKind,
    pub agent_group_id: AgentGroupId,
    pub messaging_group_id: Option<MessagingGroupId>,
    pub subject_user_id: Option<UserId>,
    pub payload: serde_json::Value,
    pub approver_user_id: Option<UserId>,
    pub card_messaging_group_id: Option<MessagingGroupId>,
    pub card_message_id: Option<String>,
    pub status: ApprovalStatus,
    pub decided_by: Option<UserId>,
    pub decided_at: Option<String>,
    pub created_at: String,
}

const COLUMNS: &str = "id, kind, agent_group_id, messaging_group_id, subject_user_id, payload, approver_user_id, \
                       card_messaging_group_id, card_message_id, status, decided_by, decided_at, created_at";

fn from_row(r: &Row<'_>) -> rusqlite::Result<Approval> {
    let payload: String = r.get(5)?;
    Ok(Approval {
        id: r.get(0)?,
        kind: r.get(1)?,
        agent_group_id: r.get(2)?,
        messaging_group_id: r.get(3)?,
        subject_user_id: r.get(4)?,
        payload: serde_json::from_str(&payload).unwrap_or(serde_json::Value::Null),
        approver_user_id: r.get(6)?,
        card_messaging_group_id: r.get(7)?,
        card_message_id: r.get(8)?,
        status: r.get(9)?,
        decided_by: r.get(10)?,
        decided_at: r.get(11)?,
        created_at: r.get(12)?,
    })
}

/// What [`hold_sender_message`] did with a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Held {
    /// A new request was opened; an approver should be asked.
    NewRequest(ApprovalId),
    /// Added to the request already waiting for a decision.
    Queued(ApprovalId),
    /// The waiting request already holds [`MAX_HELD_MESSAGES`] or
    /// [`MAX_HELD_BYTES`](super::MAX_HELD_BYTES); the message was not kept.
    QueueFull(ApprovalId),
}

/// Holds a message from an unknown sender until an approver decides, opening the request if
/// there is none pending for (chat, agent, sender).
pub fn hold_sender_message(
    conn: &Connection,
    chat: &MessagingGroupId,
    agent: &AgentGroupId,
    sender: &UserId,
    event_json: &str,
) -> Result<Held> {
    let existing: Option<ApprovalId> = conn
        .prepare_cached(
            "SELECT id FROM approvals WHERE kind = 'sender' AND status = 'pending'
             AND messaging_group_id = ?1 AND agent_group_id = ?2 AND subject_user_id = ?3",
        )?
        .query_row(params![chat, agent, sender], |r| r.get(0))
        .optional()?;
    let outcome = match existing {
        Some(id) => {
            if super::held_full(
                conn,
                "held_messages",
                "approval_id",
                id.as_str(),
                event_json.len(),
            )? {
                return Ok(Held::QueueFull(id));
            }
            Held::Queued(id)
        }
        None => {
            let id = ApprovalId::generate();
            conn.execute(
                "INSERT INTO approvals (id, kind, agent_group_id, messaging_group_id, subject_user_id, created_at)
                 VALUES (?1, 'sender', ?2, ?3, ?4, ?5)",
                params![id, agent, chat, sender, nanoclaw_schema::time::now()],
            )?;
            Held::NewRequest(id)
        }
    };
    let id = match &outcome {
        Held::NewRequest(id) | Held::Queued(id) | Held::QueueFull(id) => id,
    };
    conn.execute(
        "INSERT INTO held_messages (approval_id, event, received_at) VALUES (?1, ?2, ?3)",
        params![id, event_json, nanoclaw_schema::time::now()],
    )?;
    Ok(outcome)
}

pub fn get(conn: &Connection, id: &ApprovalId) -> Result<Option<Approval>> {
    Ok(conn
        .query_row(
            &format!("SELECT {COLUMNS} FROM approvals WHERE id = ?1"),
            [id],
            from_row,
        )
        .optional()?)
}

/// Requests with the given status (all when `None`), newest first.
pub fn list(conn: &Connection, status: Option<ApprovalStatus>) -> Result<Vec<Approval>> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {COLUMNS} FROM approvals WHERE ?1 IS NULL OR status = ?1 ORDER BY created_at DESC, id"
    ))?;
    let rows = stmt
        .query_map([status], from_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

/// Records where the approval card went.
pub fn set_card(
    conn: &Connection,
    id: &ApprovalId,
    approver: &UserId,
    card_chat: &MessagingGroupId,
    card_message_id: Option<&str>,
) -> Result<()> {
    conn.execute(
        "UPDATE approvals SET approver_user_id = ?2, card_messaging_group_id = ?3, card_message_id = ?4 WHERE id = ?1",
        params![id, approver, card_chat, card_message_id],
    )?;
    Ok(())
}

/// Decides a pending request. Fails with a conflict if it was already decided, so two clicks
/// cannot both act.
pub fn decide(
    conn: &Connection,
    id: &ApprovalId,
    status: ApprovalStatus,
    by: Option<&UserId>,
) -> Result<Approval> {
    if status == ApprovalStatus::Pending {
        return Err(Error::invalid(
            "a decision must approve, deny or expire the request",
        ));
    }
    let n = conn.execute(
        "UPDATE approvals SET status = ?2, decided_by = ?3, decided_at = ?4 WHERE id = ?1 AND status = 'pending'",
        params![id, status, by, nanoclaw_schema::time::now()],
    )?;
    let approval = get(conn, id)?.ok_or_else(|| Error::not_found("approval", id.as_str()))?;
    if n == 0 {
        return Err(Error::Conflict(format!(
            "approval {id} was already decided ({})",
            approval.status
        )));
    }
    Ok(approval)
}

/// Decided requests that still hold messages (to replay or drop).
pub fn decided_with_held(conn: &Connection) -> Result<Vec<Approval>> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {COLUMNS} FROM approvals WHERE status != 'pending'
         AND id IN (SELECT approval_id FROM held_messages) ORDER BY created_at, id"
    ))?;
    let rows = stmt
        .query_map([], from_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

/// The held events of a request, oldest first, as JSON.
pub fn held_messages(conn: &Connection, id: &ApprovalId) -> Result<Vec<String>> {
    let mut stmt =
        conn.prepare("SELECT event FROM held_messages WHERE approval_id = ?1 ORDER BY id")?;
    let rows = stmt
        .query_map([id], |r| r.get(0))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

/// Forgets the held events of a request (after replaying or denying them).
pub fn clear_held(conn: &Connection, id: &ApprovalId) -> Result<usize> {
    Ok(conn.execute("DELETE FROM held_messages WHERE approval_id = ?1", [id])?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::{agent, chat, db, user};

    #[test]
    fn one_pending_request_per_sender_holds_a_bounded_queue() {
        let db = db();
        let a = agent(&db, "A");
        let c = chat(&db, "telegram:-1", None, true);
        let u = user(&db, "telegram:7");
        let first = db
            .write(|t| hold_sender_message(t, &c.id, &a.id, &u.id, "{\"n\":0}"))
            .unwrap();
        let Held::NewRequest(id) = first else {
            panic!("expected a new request, got {first:?}")
        };
        for n in 1..MAX_HELD_MESSAGES {
            let got = db
                .write(|t| hold_sender_message(t, &c.id, &a.id, &u.id, &format!("{{\"n\":{n}}}")))
                .unwrap();
            assert_eq!(got, Held::Queued(id.clone()));
        }
        let full = db
            .write(|t| hold_sender_message(t, &c.id, &a.id, &u.id, "{}"))
            .unwrap();
        assert_eq!(full, Held::QueueFull(id.clone()));
        let held = db.read(|t| held_messages(t, &id)).unwrap();
        assert_eq!(held.len() as i64, MAX_HELD_MESSAGES);
        assert_eq!(held[0], "{\"n\":0}");
    }

    #[test]
    fn a_request_is_decided_once() {
        let db = db();
        let a = agent(&db, "A");
        let c = chat(&db, "telegram:-1", None, true);
        let u = user(&db, "telegram:7");
        let owner = user(&db, "telegram:1");
        let Held::NewRequest(id) = db
            .write(|t| hold_sender_message(t, &c.id, &a.id, &u.id, "{}"))
            .unwrap()
        else {
            panic!()
        };
        let decided = db
            .write(|t| decide(t, &id, ApprovalStatus::Approved, Some(&owner.id)))
            .unwrap();
        assert_eq!(decided.status, ApprovalStatus::Approved);
        assert_eq!(decided.decided_by, Some(owner.id.clone()));
        let again = db.write(|t| decide(t, &id, ApprovalStatus::Denied, Some(&owner.id)));
        assert!(matches!(again, Err(Error::Conflict(_))));
        // A later message opens a fresh request.
        let next = db
            .write(|t| hold_sender_message(t, &c.id, &a.id, &u.id, "{}"))
            .unwrap();
        assert!(matches!(next, Held::NewRequest(other) if other != id));
    }
}
