//! Users: one platform identity each, ids namespaced `<channel>:<handle>`.

use rusqlite::{Connection, OptionalExtension, Row, params};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::ids::{ChannelName, UserId};

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct User {
    pub id: UserId,
    /// The channel (plugin instance) the identity belongs to.
    pub kind: ChannelName,
    pub display_name: Option<String>,
    pub created_at: String,
}

impl User {
    pub fn label(&self) -> &str {
        self.display_name.as_deref().unwrap_or(self.id.as_str())
    }
}

const COLUMNS: &str = "id, kind, display_name, created_at";

fn from_row(r: &Row<'_>) -> rusqlite::Result<User> {
    Ok(User {
        id: r.get(0)?,
        kind: r.get(1)?,
        display_name: r.get(2)?,
        created_at: r.get(3)?,
    })
}

/// Creates the user if missing; a non-empty `display_name` replaces the stored one, `None`
/// keeps it.
pub fn upsert(conn: &Connection, id: &UserId, display_name: Option<&str>) -> Result<User> {
    let name = display_name.map(str::trim).filter(|s| !s.is_empty());
    let now = nanoclaw_schema::time::now();
    conn.prepare_cached(
        "INSERT INTO users (id, kind, display_name, created_at) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (id) DO UPDATE SET display_name = IFNULL(excluded.display_name, users.display_name)
         WHERE excluded.display_name IS NOT NULL AND excluded.display_name IS NOT users.display_name",
    )?
    .execute(params![id, id.channel(), name, now])?;
    get(conn, id)?.ok_or_else(|| Error::not_found("user", id.as_str()))
}

pub fn get(conn: &Connection, id: &UserId) -> Result<Option<User>> {
    Ok(conn
        .prepare_cached(&format!("SELECT {COLUMNS} FROM users WHERE id = ?1"))?
        .query_row([id], from_row)
        .optional()?)
}

pub fn require(conn: &Connection, id: &UserId) -> Result<User> {
    get(conn, id)?.ok_or_else(|| {
        Error::invalid(format!(
            "unknown user {id}: add it first with `nanoclaw users add {id}`"
        ))
    })
}

pub fn list(conn: &Connection) -> Result<Vec<User>> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {COLUMNS} FROM users ORDER BY kind, created_at"
    ))?;
    let rows = stmt
        .query_map([], from_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

/// Deletes the user with their roles, memberships and DM cache.
pub fn delete(conn: &Connection, id: &UserId) -> Result<()> {
    if conn.execute("DELETE FROM users WHERE id = ?1", [id])? == 0 {
        return Err(Error::not_found("user", id.as_str()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::db;

    #[test]
    fn upsert_keeps_name_when_new_one_is_missing() {
        let db = db();
        let id = UserId::parse("telegram:1").unwrap();
        let u = db.write(|c| upsert(c, &id, Some("Alice"))).unwrap();
        assert_eq!(u.kind.as_str(), "telegram");
        let u = db.write(|c| upsert(c, &id, None)).unwrap();
        assert_eq!(u.display_name.as_deref(), Some("Alice"));
        let u = db.write(|c| upsert(c, &id, Some("  "))).unwrap();
        assert_eq!(u.display_name.as_deref(), Some("Alice"));
        let u = db.write(|c| upsert(c, &id, Some("Alice B"))).unwrap();
        assert_eq!(u.display_name.as_deref(), Some("Alice B"));
        assert_eq!(db.read(list).unwrap().len(), 1);
    }
}
