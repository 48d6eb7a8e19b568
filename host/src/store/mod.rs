//! Entity stores over the central DB. Every function takes a `&Connection` (a `Transaction`
//! derefs to one), so callers compose several of them in one transaction via
//! [`crate::db::Db::write`].

pub mod agent_groups;
pub mod agent_requests;
pub mod approvals;
pub mod chat_requests;
pub mod destinations;
pub mod dropped;
pub mod members;
pub mod messaging_groups;
pub mod plugin_state;
pub mod roles;
pub mod usage;
pub mod user_dms;
pub mod users;
pub mod wirings;

/// How many messages one pending request (a sender approval, a new group chat) holds before
/// further ones are dropped.
pub const MAX_HELD_MESSAGES: i64 = 20;
/// How many bytes of held events one pending request keeps (attachments travel inside
/// them): someone the owner has not let in cannot fill the central database.
pub const MAX_HELD_BYTES: i64 = 64 * 1024 * 1024;

/// Whether a pending request, whose held events are the rows of `table` where `key` = `id`,
/// has no room for one more event of `incoming` bytes.
pub(crate) fn held_full(
    conn: &rusqlite::Connection,
    table: &'static str,
    key: &'static str,
    id: &str,
    incoming: usize,
) -> crate::error::Result<bool> {
    let (count, bytes): (i64, i64) = conn
        .prepare_cached(&format!(
            "SELECT COUNT(*), COALESCE(SUM(length(event)), 0) FROM {table} WHERE {key} = ?1"
        ))?
        .query_row([id], |r| Ok((r.get(0)?, r.get(1)?)))?;
    let incoming = i64::try_from(incoming).unwrap_or(i64::MAX);
    Ok(count >= MAX_HELD_MESSAGES || bytes.saturating_add(incoming) > MAX_HELD_BYTES)
}

/// Forgets held events (in `table`, either request's store) of one platform message, because
/// its sender deleted it: an approval must not replay what they took back. Returns how many.
pub(crate) fn forget_held(
    conn: &rusqlite::Connection,
    table: &'static str,
    channel: &crate::ids::ChannelName,
    chat: &crate::ids::PlatformId,
    message_id: &str,
) -> crate::error::Result<usize> {
    Ok(conn
        .prepare_cached(&format!(
            "DELETE FROM {table} WHERE json_extract(event, '$.channel') = ?1
             AND json_extract(event, '$.chat_id') = ?2 AND json_extract(event, '$.message_id') = ?3"
        ))?
        .execute(rusqlite::params![
            channel.as_str(),
            chat.as_str(),
            message_id
        ])?)
}

/// Lower-cases `s`, turns every run of characters outside `[a-z0-9]` into one `-`, trims `-`
/// at both ends, and falls back to `unnamed`. Used for destination names and folders.
pub fn normalize_name(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut dash = false;
    for c in s.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            if dash && !out.is_empty() {
                out.push('-');
            }
            dash = false;
            out.push(c);
        } else {
            dash = true;
        }
    }
    if out.is_empty() {
        "unnamed".to_string()
    } else {
        out
    }
}

/// `base`, or `base-2`, `base-3`, ... : the first candidate `taken` says is free.
pub(crate) fn first_free(
    base: &str,
    mut taken: impl FnMut(&str) -> crate::error::Result<bool>,
) -> crate::error::Result<String> {
    if !taken(base)? {
        return Ok(base.to_string());
    }
    for n in 2.. {
        let candidate = format!("{base}-{n}");
        if !taken(&candidate)? {
            return Ok(candidate);
        }
    }
    unreachable!("an unbounded counter always finds a free name")
}

/// True if the SQLite error is a UNIQUE / PRIMARY KEY constraint violation.
pub(crate) fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(
        e,
        rusqlite::Error::SqliteFailure(f, _)
            if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                || f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
    )
}

/// True if the SQLite error is a FOREIGN KEY constraint violation.
pub(crate) fn is_foreign_key_violation(e: &rusqlite::Error) -> bool {
    matches!(
        e,
        rusqlite::Error::SqliteFailure(f, _) if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_FOREIGNKEY
    )
}

#[cfg(test)]
pub(crate) mod testing {
    //! Fixtures for store, access and router tests.

    use crate::db::Db;
    use crate::ids::{ChannelName, PlatformId, UserId};
    use crate::store::agent_groups::{self, AgentGroup, NewAgentGroup};
    use crate::store::messaging_groups::{
        self, MessagingGroup, NewMessagingGroup, UnknownSenderPolicy,
    };
    use crate::store::users::{self, User};

    pub fn db() -> Db {
        Db::open_in_memory().expect("in-memory db")
    }

    pub fn agent(db: &Db, name: &str) -> AgentGroup {
        db.write(|c| agent_groups::create(c, NewAgentGroup::named(name)))
            .unwrap()
    }

    pub fn chat(db: &Db, address: &str, name: Option<&str>, is_group: bool) -> MessagingGroup {
        chat_with_policy(db, address, name, is_group, UnknownSenderPolicy::Strict)
    }

    pub fn chat_with_policy(
        db: &Db,
        address: &str,
        name: Option<&str>,
        is_group: bool,
        policy: UnknownSenderPolicy,
    ) -> MessagingGroup {
        let (ch, pid) = address.split_once(':').unwrap();
        db.write(|c| {
            messaging_groups::get_or_create(
                c,
                &NewMessagingGroup {
                    channel_type: ChannelName::parse(ch)?,
                    platform_id: PlatformId::parse(pid)?,
                    name: name.map(str::to_string),
                    is_group,
                    unknown_sender_policy: policy,
                },
            )
        })
        .unwrap()
        .0
    }

    pub fn user(db: &Db, id: &str) -> User {
        db.write(|c| users::upsert(c, &UserId::parse(id)?, None))
            .unwrap()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize() {
        assert_eq!(normalize_name("My Team Chat!"), "my-team-chat");
        assert_eq!(normalize_name("  --Ops__Room--  "), "ops-room");
        assert_eq!(normalize_name("Ünïcode Ça"), "n-code-a");
        assert_eq!(normalize_name("!!!"), "unnamed");
        assert_eq!(normalize_name(""), "unnamed");
    }

    #[test]
    fn first_free_suffixes() {
        let taken = ["a", "a-2"];
        let got = first_free("a", |c| Ok(taken.contains(&c))).unwrap();
        assert_eq!(got, "a-3");
        assert_eq!(first_free("b", |_| Ok(false)).unwrap(), "b");
    }
}
