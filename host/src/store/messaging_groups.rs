//! Messaging groups: one platform chat (a DM, a group, a channel).

use rusqlite::{Connection, OptionalExtension, Row, params};
use serde::Serialize;

use crate::db::text_enum;
use crate::error::{Error, Result};
use crate::ids::{ChannelName, ChatAddress, MessagingGroupId, PlatformId};

text_enum! {
    /// What happens to a message from someone who is not a member of the wired agent.
    UnknownSenderPolicy, "unknown-sender policy" {
        /// Drop it (recorded in dropped messages). The default.
        Strict = "strict",
        /// Hold it and ask an approver; approve makes the sender a member.
        RequestApproval = "request_approval",
        /// Let everyone in.
        Public = "public",
    }
}

#[allow(clippy::derivable_impls)] // the enum comes from a macro that cannot take #[default]
impl Default for UnknownSenderPolicy {
    fn default() -> Self {
        UnknownSenderPolicy::Strict
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MessagingGroup {
    pub id: MessagingGroupId,
    pub channel_type: ChannelName,
    pub platform_id: PlatformId,
    pub name: Option<String>,
    pub is_group: bool,
    pub unknown_sender_policy: UnknownSenderPolicy,
    pub created_at: String,
}

impl MessagingGroup {
    pub fn address(&self) -> ChatAddress {
        ChatAddress {
            channel: self.channel_type.clone(),
            platform_id: self.platform_id.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct NewMessagingGroup {
    pub channel_type: ChannelName,
    pub platform_id: PlatformId,
    pub name: Option<String>,
    pub is_group: bool,
    pub unknown_sender_policy: UnknownSenderPolicy,
}

pub(crate) const COLUMNS: &str =
    "id, channel_type, platform_id, name, is_group, unknown_sender_policy, created_at";

pub(crate) fn from_row(r: &Row<'_>) -> rusqlite::Result<MessagingGroup> {
    Ok(MessagingGroup {
        id: r.get(0)?,
        channel_type: r.get(1)?,
        platform_id: r.get(2)?,
        name: r.get(3)?,
        is_group: r.get(4)?,
        unknown_sender_policy: r.get(5)?,
        created_at: r.get(6)?,
    })
}

pub fn get(conn: &Connection, id: &MessagingGroupId) -> Result<Option<MessagingGroup>> {
    Ok(conn
        .query_row(
            &format!("SELECT {COLUMNS} FROM messaging_groups WHERE id = ?1"),
            [id],
            from_row,
        )
        .optional()?)
}

pub fn find(
    conn: &Connection,
    channel: &ChannelName,
    platform_id: &PlatformId,
) -> Result<Option<MessagingGroup>> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM messaging_groups WHERE channel_type = ?1 AND platform_id = ?2"
        ))?
        .query_row(params![channel, platform_id], from_row)
        .optional()?)
}

/// Finds a chat by id or by `<channel>:<platform id>`.
pub fn resolve(conn: &Connection, reference: &str) -> Result<MessagingGroup> {
    if let Some(mg) = get(conn, &MessagingGroupId::parse(reference)?)? {
        return Ok(mg);
    }
    let address = ChatAddress::parse(reference)?;
    find(conn, &address.channel, &address.platform_id)?
        .ok_or_else(|| Error::not_found("chat", reference))
}

/// Returns the chat for `(channel, platform id)`, creating it if missing. The bool is true
/// when it was created. An existing chat keeps its settings; a missing name is filled in.
pub fn get_or_create(conn: &Connection, new: &NewMessagingGroup) -> Result<(MessagingGroup, bool)> {
    if let Some(existing) = find(conn, &new.channel_type, &new.platform_id)? {
        if existing.name.is_none() && new.name.is_some() {
            set_name(conn, &existing.id, new.name.as_deref())?;
            return Ok((
                MessagingGroup {
                    name: new.name.clone(),
                    ..existing
                },
                false,
            ));
        }
        return Ok((existing, false));
    }
    let mg = MessagingGroup {
        id: MessagingGroupId::generate(),
        channel_type: new.channel_type.clone(),
        platform_id: new.platform_id.clone(),
        name: new.name.clone(),
        is_group: new.is_group,
        unknown_sender_policy: new.unknown_sender_policy,
        created_at: nanoclaw_schema::time::now(),
    };
    conn.execute(
        &format!("INSERT INTO messaging_groups ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"),
        params![
            mg.id,
            mg.channel_type,
            mg.platform_id,
            mg.name,
            mg.is_group,
            mg.unknown_sender_policy,
            mg.created_at
        ],
    )?;
    Ok((mg, true))
}

pub fn list(conn: &Connection) -> Result<Vec<MessagingGroup>> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {COLUMNS} FROM messaging_groups ORDER BY channel_type, created_at"
    ))?;
    let rows = stmt
        .query_map([], from_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

pub fn set_policy(
    conn: &Connection,
    id: &MessagingGroupId,
    policy: UnknownSenderPolicy,
) -> Result<()> {
    expect_one(
        conn.execute(
            "UPDATE messaging_groups SET unknown_sender_policy = ?2 WHERE id = ?1",
            params![id, policy],
        )?,
        id,
    )
}

pub fn set_name(conn: &Connection, id: &MessagingGroupId, name: Option<&str>) -> Result<()> {
    let name = name.map(str::trim).filter(|s| !s.is_empty());
    expect_one(
        conn.execute(
            "UPDATE messaging_groups SET name = ?2 WHERE id = ?1",
            params![id, name],
        )?,
        id,
    )
}

/// Deletes the chat and, by cascade, its wirings; destinations pointing at it go too.
pub fn delete(conn: &Connection, id: &MessagingGroupId) -> Result<()> {
    conn.execute(
        "DELETE FROM agent_destinations WHERE target_type = 'channel' AND target_id = ?1",
        [id],
    )?;
    expect_one(
        conn.execute("DELETE FROM messaging_groups WHERE id = ?1", [id])?,
        id,
    )
}

fn expect_one(changed: usize, id: &MessagingGroupId) -> Result<()> {
    if changed == 0 {
        Err(Error::not_found("chat", id.as_str()))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::{chat, db};

    #[test]
    fn get_or_create_is_idempotent_and_fills_a_missing_name() {
        let db = db();
        let a = chat(&db, "telegram:-100", None, true);
        let b = chat(&db, "telegram:-100", Some("Ops"), false);
        assert_eq!(a.id, b.id);
        assert_eq!(b.name.as_deref(), Some("Ops"));
        assert!(b.is_group, "existing settings are kept");
        assert_eq!(a.unknown_sender_policy, UnknownSenderPolicy::Strict);
    }

    #[test]
    fn resolve_by_address_or_id() {
        let db = db();
        let a = chat(&db, "telegram:42", None, false);
        db.read(|c| {
            assert_eq!(resolve(c, "telegram:42")?.id, a.id);
            assert_eq!(resolve(c, a.id.as_str())?.id, a.id);
            assert!(matches!(
                resolve(c, "telegram:43"),
                Err(Error::NotFound { .. })
            ));
            Ok(())
        })
        .unwrap();
    }

    #[test]
    fn policy_parse_is_strict() {
        assert_eq!(
            UnknownSenderPolicy::parse("request_approval").unwrap(),
            UnknownSenderPolicy::RequestApproval
        );
        let err = UnknownSenderPolicy::parse("open").unwrap_err().to_string();
        assert!(err.contains("strict, request_approval, public"), "{err}");
    }
}
