//! Privilege grants: `owner` (global only) and `admin` (global, or scoped to one agent group).

use rusqlite::{Connection, Row, params};
use serde::Serialize;

use crate::db::text_enum;
use crate::error::{Error, Result};
use crate::ids::{AgentGroupId, UserId};
use crate::store::{is_foreign_key_violation, is_unique_violation};

text_enum! {
    Role, "role" {
        /// Full control of the install. Global only.
        Owner = "owner",
        /// Control of every agent group (global) or of one (scoped).
        Admin = "admin",
    }
}

/// Where a grant applies.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(untagged)]
pub enum Scope {
    Global,
    Group(AgentGroupId),
}

impl Scope {
    pub fn group(&self) -> Option<&AgentGroupId> {
        match self {
            Scope::Global => None,
            Scope::Group(id) => Some(id),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RoleGrant {
    pub user_id: UserId,
    pub role: Role,
    /// `None` = global.
    pub agent_group_id: Option<AgentGroupId>,
    pub granted_by: Option<UserId>,
    pub granted_at: String,
}

const COLUMNS: &str = "user_id, role, agent_group_id, granted_by, granted_at";

fn from_row(r: &Row<'_>) -> rusqlite::Result<RoleGrant> {
    Ok(RoleGrant {
        user_id: r.get(0)?,
        role: r.get(1)?,
        agent_group_id: r.get(2)?,
        granted_by: r.get(3)?,
        granted_at: r.get(4)?,
    })
}

/// Grants `role` in `scope`. Returns false if the user already had exactly this grant.
pub fn grant(
    conn: &Connection,
    user: &UserId,
    role: Role,
    scope: &Scope,
    granted_by: Option<&UserId>,
) -> Result<bool> {
    if role == Role::Owner && scope != &Scope::Global {
        return Err(Error::invalid(
            "the owner role is global; it cannot be scoped to an agent group",
        ));
    }
    let result = conn.execute(
        &format!("INSERT INTO user_roles ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5)"),
        params![
            user,
            role,
            scope.group(),
            granted_by,
            nanoclaw_schema::time::now()
        ],
    );
    match result {
        Ok(_) => Ok(true),
        Err(e) if is_unique_violation(&e) => Ok(false),
        Err(e) if is_foreign_key_violation(&e) => Err(Error::invalid(format!(
            "cannot grant {role} to {user}: the user{} does not exist",
            scope
                .group()
                .map(|g| format!(" or agent group {g}"))
                .unwrap_or_default()
        ))),
        Err(e) => Err(e.into()),
    }
}

/// Revokes exactly this grant. Returns false if there was none.
pub fn revoke(conn: &Connection, user: &UserId, role: Role, scope: &Scope) -> Result<bool> {
    let n = conn.execute(
        "DELETE FROM user_roles WHERE user_id = ?1 AND role = ?2 AND agent_group_id IS ?3",
        params![user, role, scope.group()],
    )?;
    Ok(n > 0)
}

/// Every grant, or the grants of one user.
pub fn list(conn: &Connection, user: Option<&UserId>) -> Result<Vec<RoleGrant>> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {COLUMNS} FROM user_roles WHERE ?1 IS NULL OR user_id = ?1 ORDER BY granted_at, rowid"
    ))?;
    let rows = stmt
        .query_map([user], from_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

pub fn has_any_owner(conn: &Connection) -> Result<bool> {
    Ok(conn.query_row(
        "SELECT EXISTS(SELECT 1 FROM user_roles WHERE role = 'owner')",
        [],
        |r| r.get(0),
    )?)
}

fn has(conn: &Connection, user: &UserId, role: Role, scope: &Scope) -> Result<bool> {
    Ok(conn
        .prepare_cached(
            "SELECT EXISTS(SELECT 1 FROM user_roles WHERE user_id = ?1 AND role = ?2 AND agent_group_id IS ?3)",
        )?
        .query_row(params![user, role, scope.group()], |r| r.get(0))?)
}

pub fn is_owner(conn: &Connection, user: &UserId) -> Result<bool> {
    has(conn, user, Role::Owner, &Scope::Global)
}

pub fn is_global_admin(conn: &Connection, user: &UserId) -> Result<bool> {
    has(conn, user, Role::Admin, &Scope::Global)
}

pub fn is_admin_of(conn: &Connection, user: &UserId, group: &AgentGroupId) -> Result<bool> {
    has(conn, user, Role::Admin, &Scope::Group(group.clone()))
}

/// Users holding `role` in exactly `scope`, oldest grant first.
pub fn holders(conn: &Connection, role: Role, scope: &Scope) -> Result<Vec<UserId>> {
    let mut stmt = conn.prepare_cached(
        "SELECT user_id FROM user_roles WHERE role = ?1 AND agent_group_id IS ?2 ORDER BY granted_at, rowid",
    )?;
    let rows = stmt
        .query_map(params![role, scope.group()], |r| r.get(0))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::{agent, db, user};

    #[test]
    fn owner_cannot_be_scoped() {
        let db = db();
        let u = user(&db, "telegram:1");
        let a = agent(&db, "A");
        let err = db
            .write(|c| grant(c, &u.id, Role::Owner, &Scope::Group(a.id.clone()), None))
            .unwrap_err();
        assert!(err.to_string().contains("global"), "{err}");
    }

    #[test]
    fn grants_are_unique_even_when_global() {
        let db = db();
        let u = user(&db, "telegram:1");
        assert!(
            db.write(|c| grant(c, &u.id, Role::Admin, &Scope::Global, None))
                .unwrap()
        );
        assert!(
            !db.write(|c| grant(c, &u.id, Role::Admin, &Scope::Global, None))
                .unwrap()
        );
        assert_eq!(db.read(|c| list(c, Some(&u.id))).unwrap().len(), 1);
        assert!(db.read(|c| is_global_admin(c, &u.id)).unwrap());
        assert!(
            db.write(|c| revoke(c, &u.id, Role::Admin, &Scope::Global))
                .unwrap()
        );
        assert!(!db.read(|c| is_global_admin(c, &u.id)).unwrap());
    }

    #[test]
    fn grant_to_unknown_user_is_a_clear_error() {
        let db = db();
        let ghost = UserId::parse("telegram:404").unwrap();
        let err = db
            .write(|c| grant(c, &ghost, Role::Owner, &Scope::Global, None))
            .unwrap_err();
        assert!(err.to_string().contains("does not exist"), "{err}");
    }

    #[test]
    fn scoped_admin_is_not_global() {
        let db = db();
        let u = user(&db, "telegram:1");
        let a = agent(&db, "A");
        let b = agent(&db, "B");
        db.write(|c| grant(c, &u.id, Role::Admin, &Scope::Group(a.id.clone()), None))
            .unwrap();
        db.read(|c| {
            assert!(is_admin_of(c, &u.id, &a.id)?);
            assert!(!is_admin_of(c, &u.id, &b.id)?);
            assert!(!is_global_admin(c, &u.id)?);
            assert!(!has_any_owner(c)?);
            Ok(())
        })
        .unwrap();
    }
}
