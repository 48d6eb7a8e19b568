//! Agent group members: unprivileged access. Owners and admins are implicit members.
//! Approving an unknown sender grants less: access to one agent in one chat.

use rusqlite::{Connection, Row, params};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::ids::{AgentGroupId, ApprovalId, MessagingGroupId, UserId};
use crate::store::is_foreign_key_violation;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Member {
    pub user_id: UserId,
    pub agent_group_id: AgentGroupId,
    /// `None`: a member, in every chat. `Some`: let in by an approver, in this chat only.
    pub chat: Option<MessagingGroupId>,
    pub added_by: Option<UserId>,
    pub added_at: String,
}

fn from_row(r: &Row<'_>) -> rusqlite::Result<Member> {
    Ok(Member {
        user_id: r.get(0)?,
        agent_group_id: r.get(1)?,
        chat: r.get(2)?,
        added_by: r.get(3)?,
        added_at: r.get(4)?,
    })
}

/// Adds a member. Returns false if they already were one.
pub fn add(
    conn: &Connection,
    user: &UserId,
    group: &AgentGroupId,
    added_by: Option<&UserId>,
) -> Result<bool> {
    let result = conn.execute(
        "INSERT OR IGNORE INTO agent_group_members (user_id, agent_group_id, added_by, added_at)
         VALUES (?1, ?2, ?3, ?4)",
        params![user, group, added_by, nanoclaw_schema::time::now()],
    );
    match result {
        Ok(n) => Ok(n > 0),
        Err(e) if is_foreign_key_violation(&e) => Err(Error::invalid(format!(
            "cannot add {user} to {group}: the user or agent group does not exist"
        ))),
        Err(e) => Err(e.into()),
    }
}

/// Removes `user`'s access to `group`: the membership and every chat an approver let them
/// into. False if they had neither.
pub fn remove(conn: &Connection, user: &UserId, group: &AgentGroupId) -> Result<bool> {
    let members = conn.execute(
        "DELETE FROM agent_group_members WHERE user_id = ?1 AND agent_group_id = ?2",
        params![user, group],
    )?;
    let chats = conn.execute(
        "DELETE FROM chat_senders WHERE user_id = ?1 AND agent_group_id = ?2",
        params![user, group],
    )?;
    Ok(members + chats > 0)
}

pub fn is_member(conn: &Connection, user: &UserId, group: &AgentGroupId) -> Result<bool> {
    Ok(conn
        .prepare_cached(
            "SELECT EXISTS(SELECT 1 FROM agent_group_members WHERE user_id = ?1 AND agent_group_id = ?2)",
        )?
        .query_row(params![user, group], |r| r.get(0))?)
}

/// Lets `user` talk to `group` in one chat only (what approving an unknown sender grants).
/// Returns false if they already could.
pub fn allow_in_chat(
    conn: &Connection,
    chat: &MessagingGroupId,
    group: &AgentGroupId,
    user: &UserId,
    approval: Option<&ApprovalId>,
    added_by: Option<&UserId>,
) -> Result<bool> {
    let result = conn.execute(
        "INSERT OR IGNORE INTO chat_senders (messaging_group_id, agent_group_id, user_id, approval_id, added_by, added_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![chat, group, user, approval, added_by, nanoclaw_schema::time::now()],
    );
    match result {
        Ok(n) => Ok(n > 0),
        Err(e) if is_foreign_key_violation(&e) => Err(Error::invalid(format!(
            "cannot let {user} into {chat}: the user, chat or agent group does not exist"
        ))),
        Err(e) => Err(e.into()),
    }
}

/// Whether an approver let `user` talk to `group` in `chat`.
pub fn is_allowed_in_chat(
    conn: &Connection,
    chat: &MessagingGroupId,
    group: &AgentGroupId,
    user: &UserId,
) -> Result<bool> {
    Ok(conn
        .prepare_cached(
            "SELECT EXISTS(SELECT 1 FROM chat_senders
             WHERE messaging_group_id = ?1 AND agent_group_id = ?2 AND user_id = ?3)",
        )?
        .query_row(params![chat, group, user], |r| r.get(0))?)
}

/// Explicit members of one group, or of all groups, and the senders approvers let into one
/// of their chats.
pub fn list(conn: &Connection, group: Option<&AgentGroupId>) -> Result<Vec<Member>> {
    let mut stmt = conn.prepare(
        "SELECT user_id, agent_group_id, NULL, added_by, added_at FROM agent_group_members
         WHERE ?1 IS NULL OR agent_group_id = ?1
         UNION ALL
         SELECT user_id, agent_group_id, messaging_group_id, added_by, added_at FROM chat_senders
         WHERE ?1 IS NULL OR agent_group_id = ?1
         ORDER BY 2, 5",
    )?;
    let rows = stmt
        .query_map([group], from_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::{agent, db, user};

    #[test]
    fn add_is_idempotent() {
        let db = db();
        let u = user(&db, "telegram:1");
        let a = agent(&db, "A");
        assert!(db.write(|c| add(c, &u.id, &a.id, None)).unwrap());
        assert!(!db.write(|c| add(c, &u.id, &a.id, None)).unwrap());
        assert!(db.read(|c| is_member(c, &u.id, &a.id)).unwrap());
        assert_eq!(db.read(|c| list(c, Some(&a.id))).unwrap().len(), 1);
        assert!(db.write(|c| remove(c, &u.id, &a.id)).unwrap());
        assert!(!db.read(|c| is_member(c, &u.id, &a.id)).unwrap());
    }
}
