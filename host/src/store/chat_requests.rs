//! Requests to wire a new group chat, and the messages they hold until decided. A decided
//! request stays as the record of who chose what and when.

use rusqlite::{Connection, OptionalExtension, Row, params};
use serde::Serialize;

use crate::db::text_enum;
use crate::error::{Error, Result};
use crate::ids::{AgentGroupId, ChatRequestId, MessagingGroupId, UserId};

pub use super::MAX_HELD_MESSAGES;

text_enum! {
    ChatRequestStatus, "chat request status" {
        Pending = "pending",
        /// Wired to an agent (by a click, or by an operator's `wire add`).
        Wired = "wired",
        Ignored = "ignored",
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChatRequest {
    pub id: ChatRequestId,
    pub messaging_group_id: MessagingGroupId,
    /// The agents the card offered, in button order.
    pub offered: Vec<AgentGroupId>,
    pub approver_user_id: Option<UserId>,
    pub card_messaging_group_id: Option<MessagingGroupId>,
    pub card_message_id: Option<String>,
    pub status: ChatRequestStatus,
    pub agent_group_id: Option<AgentGroupId>,
    pub decided_by: Option<UserId>,
    pub decided_at: Option<String>,
    pub created_at: String,
}

const COLUMNS: &str = "id, messaging_group_id, offered, approver_user_id, card_messaging_group_id, \
                       card_message_id, status, agent_group_id, decided_by, decided_at, created_at";

fn from_row(r: &Row<'_>) -> rusqlite::Result<ChatRequest> {
    let offered: String = r.get(2)?;
    Ok(ChatRequest {
        id: r.get(0)?,
        messaging_group_id: r.get(1)?,
        // Written only by the host; an unreadable list offers nothing rather than failing.
        offered: serde_json::from_str::<Vec<String>>(&offered)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|id| AgentGroupId::parse(&id).ok())
            .collect(),
        approver_user_id: r.get(3)?,
        card_messaging_group_id: r.get(4)?,
        card_message_id: r.get(5)?,
        status: r.get(6)?,
        agent_group_id: r.get(7)?,
        decided_by: r.get(8)?,
        decided_at: r.get(9)?,
        created_at: r.get(10)?,
    })
}

/// What [`hold_message`] did with a message of an unwired group chat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChatHeld {
    /// The chat's first message: a request was opened and an owner should be asked.
    NewRequest(ChatRequestId),
    /// Added to the request waiting for a decision.
    Queued(ChatRequestId),
    /// The waiting request already holds [`MAX_HELD_MESSAGES`] or
    /// [`MAX_HELD_BYTES`](super::MAX_HELD_BYTES); the message was not kept.
    QueueFull(ChatRequestId),
    /// The owner ignored this chat; the message was not kept.
    Ignored,
    /// The request was wired, and the wiring removed since: the chat is unwired like any
    /// other, and the message was not kept.
    Unwired,
}

/// Holds a message of a group chat nobody has wired, opening the chat's request if it has
/// none.
pub fn hold_message(
    conn: &Connection,
    chat: &MessagingGroupId,
    event_json: &str,
) -> Result<ChatHeld> {
    let (id, outcome) = match for_chat(conn, chat)? {
        Some(r) => match r.status {
            ChatRequestStatus::Ignored => return Ok(ChatHeld::Ignored),
            ChatRequestStatus::Wired => return Ok(ChatHeld::Unwired),
            ChatRequestStatus::Pending => {
                let full = super::held_full(
                    conn,
                    "chat_request_held",
                    "request_id",
                    r.id.as_str(),
                    event_json.len(),
                )?;
                if full {
                    return Ok(ChatHeld::QueueFull(r.id));
                }
                (r.id.clone(), ChatHeld::Queued(r.id))
            }
        },
        None => {
            let id = ChatRequestId::generate();
            conn.execute(
                "INSERT INTO chat_requests (id, messaging_group_id, created_at) VALUES (?1, ?2, ?3)",
                params![id, chat, nanoclaw_schema::time::now()],
            )?;
            (id.clone(), ChatHeld::NewRequest(id))
        }
    };
    conn.execute(
        "INSERT INTO chat_request_held (request_id, event, received_at) VALUES (?1, ?2, ?3)",
        params![id, event_json, nanoclaw_schema::time::now()],
    )?;
    Ok(outcome)
}

pub fn get(conn: &Connection, id: &ChatRequestId) -> Result<Option<ChatRequest>> {
    Ok(conn
        .query_row(
            &format!("SELECT {COLUMNS} FROM chat_requests WHERE id = ?1"),
            [id],
            from_row,
        )
        .optional()?)
}

pub fn for_chat(conn: &Connection, chat: &MessagingGroupId) -> Result<Option<ChatRequest>> {
    Ok(conn
        .query_row(
            &format!("SELECT {COLUMNS} FROM chat_requests WHERE messaging_group_id = ?1"),
            [chat],
            from_row,
        )
        .optional()?)
}

/// Requests with the given status (all when `None`), newest first.
pub fn list(conn: &Connection, status: Option<ChatRequestStatus>) -> Result<Vec<ChatRequest>> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {COLUMNS} FROM chat_requests WHERE ?1 IS NULL OR status = ?1 ORDER BY created_at DESC, id"
    ))?;
    let rows = stmt
        .query_map([status], from_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

/// Records where the card went and which agents it offered, in button order.
pub fn set_card(
    conn: &Connection,
    id: &ChatRequestId,
    approver: &UserId,
    card_chat: &MessagingGroupId,
    card_message_id: Option<&str>,
    offered: &[AgentGroupId],
) -> Result<()> {
    let offered = serde_json::to_string(&offered.iter().map(|a| a.as_str()).collect::<Vec<_>>())
        .map_err(|e| Error::Json {
            context: "offered agents".into(),
            source: e,
        })?;
    conn.execute(
        "UPDATE chat_requests SET approver_user_id = ?2, card_messaging_group_id = ?3,
         card_message_id = ?4, offered = ?5 WHERE id = ?1",
        params![id, approver, card_chat, card_message_id, offered],
    )?;
    Ok(())
}

/// Decides a pending request. Fails with a conflict if it was already decided, so two clicks
/// cannot both act.
pub fn decide(
    conn: &Connection,
    id: &ChatRequestId,
    status: ChatRequestStatus,
    agent: Option<&AgentGroupId>,
    by: Option<&UserId>,
) -> Result<ChatRequest> {
    if status == ChatRequestStatus::Pending {
        return Err(Error::invalid("a decision must wire or ignore the chat"));
    }
    let n = conn.execute(
        "UPDATE chat_requests SET status = ?2, agent_group_id = ?3, decided_by = ?4, decided_at = ?5
         WHERE id = ?1 AND status = 'pending'",
        params![id, status, agent, by, nanoclaw_schema::time::now()],
    )?;
    let request = get(conn, id)?.ok_or_else(|| Error::not_found("chat request", id.as_str()))?;
    if n == 0 {
        return Err(Error::Conflict(format!(
            "chat request {id} was already decided ({})",
            request.status
        )));
    }
    Ok(request)
}

/// Decided requests that still hold messages (to replay or drop).
pub fn decided_with_held(conn: &Connection) -> Result<Vec<ChatRequest>> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {COLUMNS} FROM chat_requests WHERE status != 'pending'
         AND id IN (SELECT request_id FROM chat_request_held) ORDER BY created_at, id"
    ))?;
    let rows = stmt
        .query_map([], from_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

/// The held events of a request, oldest first, as JSON.
pub fn held_messages(conn: &Connection, id: &ChatRequestId) -> Result<Vec<String>> {
    let mut stmt =
        conn.prepare("SELECT event FROM chat_request_held WHERE request_id = ?1 ORDER BY id")?;
    let rows = stmt
        .query_map([id], |r| r.get(0))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

/// Forgets the held events of a request (after replaying or dropping them).
pub fn clear_held(conn: &Connection, id: &ChatRequestId) -> Result<usize> {
    Ok(conn.execute("DELETE FROM chat_request_held WHERE request_id = ?1", [id])?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::{agent, chat, db};

    #[test]
    fn one_request_per_chat_holds_a_bounded_queue_and_records_the_choice() {
        let db = db();
        let a = agent(&db, "A");
        let c = chat(&db, "telegram:-5", Some("Team"), true);
        let first = db.write(|t| hold_message(t, &c.id, "{}")).unwrap();
        let ChatHeld::NewRequest(id) = first else {
            panic!("{first:?}")
        };
        for _ in 1..MAX_HELD_MESSAGES {
            assert_eq!(
                db.write(|t| hold_message(t, &c.id, "{}")).unwrap(),
                ChatHeld::Queued(id.clone())
            );
        }
        assert_eq!(
            db.write(|t| hold_message(t, &c.id, "{}")).unwrap(),
            ChatHeld::QueueFull(id.clone())
        );
        assert_eq!(
            db.read(|t| held_messages(t, &id)).unwrap().len() as i64,
            MAX_HELD_MESSAGES
        );

        let decided = db
            .write(|t| decide(t, &id, ChatRequestStatus::Ignored, None, None))
            .unwrap();
        assert_eq!(decided.status, ChatRequestStatus::Ignored);
        assert!(matches!(
            db.write(|t| decide(t, &id, ChatRequestStatus::Wired, Some(&a.id), None)),
            Err(Error::Conflict(_))
        ));
        assert_eq!(
            db.write(|t| hold_message(t, &c.id, "{}")).unwrap(),
            ChatHeld::Ignored,
            "an ignored chat asks nobody again"
        );
    }

    #[test]
    fn held_bytes_are_bounded_too() {
        let db = db();
        let c = chat(&db, "telegram:-7", None, true);
        let big = "x".repeat((crate::store::MAX_HELD_BYTES / 2) as usize);
        let ChatHeld::NewRequest(id) = db.write(|t| hold_message(t, &c.id, &big)).unwrap() else {
            panic!()
        };
        assert_eq!(
            db.write(|t| hold_message(t, &c.id, &big)).unwrap(),
            ChatHeld::Queued(id.clone())
        );
        assert_eq!(
            db.write(|t| hold_message(t, &c.id, "{}")).unwrap(),
            ChatHeld::QueueFull(id.clone()),
            "the budget is used up"
        );
        assert_eq!(db.read(|t| held_messages(t, &id)).unwrap().len(), 2);
    }

    #[test]
    fn the_offered_agents_keep_their_button_order() {
        let db = db();
        let (a, b) = (agent(&db, "A"), agent(&db, "B"));
        let c = chat(&db, "telegram:-6", None, true);
        let dm = chat(&db, "telegram:1", None, false);
        let owner = crate::store::testing::user(&db, "telegram:1");
        let ChatHeld::NewRequest(id) = db.write(|t| hold_message(t, &c.id, "{}")).unwrap() else {
            panic!()
        };
        db.write(|t| {
            set_card(
                t,
                &id,
                &owner.id,
                &dm.id,
                Some("m-1"),
                &[b.id.clone(), a.id.clone()],
            )
        })
        .unwrap();
        let r = db.read(|t| get(t, &id)).unwrap().unwrap();
        assert_eq!(r.offered, vec![b.id, a.id]);
        assert_eq!(r.card_message_id.as_deref(), Some("m-1"));
    }
}
