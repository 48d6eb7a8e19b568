//! Cold-DM cache: which chat reaches a user on a channel.

use rusqlite::{Connection, OptionalExtension, params};

use crate::error::Result;
use crate::ids::{ChannelName, MessagingGroupId, UserId};

/// The cached DM chat of `user` on `channel`, if the cache has one (the chat may be gone).
pub fn get(
    conn: &Connection,
    user: &UserId,
    channel: &ChannelName,
) -> Result<Option<MessagingGroupId>> {
    Ok(conn
        .query_row(
            "SELECT messaging_group_id FROM user_dms WHERE user_id = ?1 AND channel_type = ?2",
            params![user, channel],
            |r| r.get(0),
        )
        .optional()?)
}

pub fn set(
    conn: &Connection,
    user: &UserId,
    channel: &ChannelName,
    chat: &MessagingGroupId,
) -> Result<()> {
    conn.execute(
        "INSERT INTO user_dms (user_id, channel_type, messaging_group_id, resolved_at) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (user_id, channel_type) DO UPDATE
         SET messaging_group_id = excluded.messaging_group_id, resolved_at = excluded.resolved_at",
        params![user, channel, chat, nanoclaw_schema::time::now()],
    )?;
    Ok(())
}
