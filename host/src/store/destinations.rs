//! Agent destinations: the routing map AND the access list for everything an agent sends.
//! A row exists iff the agent may send to the target; names are local to each agent.

use rusqlite::{Connection, OptionalExtension, Row, params};
use serde::Serialize;

use nanoclaw_schema::session::DestinationType;

use crate::error::{Error, Result};
use crate::ids::{AgentGroupId, MessagingGroupId};
use crate::store::messaging_groups::MessagingGroup;
use crate::store::{first_free, is_foreign_key_violation, is_unique_violation, normalize_name};

/// Where a destination leads.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(tag = "type", content = "id", rename_all = "snake_case")]
pub enum Target {
    Channel(MessagingGroupId),
    Agent(AgentGroupId),
}

impl Target {
    fn kind(&self) -> DestinationType {
        match self {
            Target::Channel(_) => DestinationType::Channel,
            Target::Agent(_) => DestinationType::Agent,
        }
    }

    fn id(&self) -> &str {
        match self {
            Target::Channel(id) => id.as_str(),
            Target::Agent(id) => id.as_str(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Destination {
    pub agent_group_id: AgentGroupId,
    pub local_name: String,
    pub target: Target,
    pub created_at: String,
}

/// A destination name: 1-64 of `[a-z0-9-]`, starting with a letter or digit.
pub fn validate_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-');
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "invalid destination name {name:?}: use lower-case letters, digits and '-' (e.g. {:?})",
            normalize_name(name)
        )))
    }
}

fn from_row(r: &Row<'_>) -> rusqlite::Result<Destination> {
    let kind: String = r.get(2)?;
    let target_id: String = r.get(3)?;
    let target = match kind.as_str() {
        "agent" => Target::Agent(AgentGroupId::parse(&target_id).map_err(to_sql_err)?),
        _ => Target::Channel(MessagingGroupId::parse(&target_id).map_err(to_sql_err)?),
    };
    Ok(Destination {
        agent_group_id: r.get(0)?,
        local_name: r.get(1)?,
        target,
        created_at: r.get(4)?,
    })
}

fn to_sql_err(e: Error) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(3, rusqlite::types::Type::Text, Box::new(e))
}

const COLUMNS: &str = "agent_group_id, local_name, target_type, target_id, created_at";

/// Adds a destination. `name = None` derives one (for a channel, from the chat's name).
pub fn add(
    conn: &Connection,
    agent: &AgentGroupId,
    name: Option<&str>,
    target: Target,
) -> Result<Destination> {
    let local_name = match name {
        Some(n) => {
            validate_name(n)?;
            n.to_string()
        }
        None => {
            let base = match &target {
                Target::Channel(mg) => {
                    let chat = crate::store::messaging_groups::get(conn, mg)?
                        .ok_or_else(|| Error::not_found("chat", mg.as_str()))?;
                    default_channel_name(&chat)
                }
                Target::Agent(ag) => {
                    let group = crate::store::agent_groups::get(conn, ag)?
                        .ok_or_else(|| Error::not_found("agent group", ag.as_str()))?;
                    truncate_name(normalize_name(&group.name))
                }
            };
            first_free(&base, |cand| name_taken(conn, agent, cand))?
        }
    };
    let dest = Destination {
        agent_group_id: agent.clone(),
        local_name,
        target,
        created_at: nanoclaw_schema::time::now(),
    };
    conn.execute(
        &format!("INSERT INTO agent_destinations ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5)"),
        params![
            dest.agent_group_id,
            dest.local_name,
            dest.target.kind().as_str(),
            dest.target.id(),
            dest.created_at
        ],
    )
    .map_err(|e| {
        if is_unique_violation(&e) {
            Error::Conflict(format!(
                "agent {agent} already has a destination named {:?} or one for that target",
                dest.local_name
            ))
        } else if is_foreign_key_violation(&e) {
            Error::not_found("agent group", agent.as_str())
        } else {
            e.into()
        }
    })?;
    Ok(dest)
}

/// The name a chat gets in an agent's namespace when nobody chose one.
fn default_channel_name(chat: &MessagingGroup) -> String {
    let base = match chat
        .name
        .as_deref()
        .map(str::trim)
        .filter(|n| !n.is_empty())
    {
        Some(name) => normalize_name(name),
        None => format!(
            "{}-{}",
            chat.channel_type,
            normalize_name(chat.platform_id.as_str())
        ),
    };
    truncate_name(base)
}

fn truncate_name(mut name: String) -> String {
    // Leave room for a "-NN" collision suffix within the 64-character limit.
    name.truncate(56);
    let trimmed = name.trim_end_matches('-');
    if trimmed.is_empty() {
        "unnamed".to_string()
    } else {
        trimmed.to_string()
    }
}

fn name_taken(conn: &Connection, agent: &AgentGroupId, name: &str) -> Result<bool> {
    Ok(conn.query_row(
        "SELECT EXISTS(SELECT 1 FROM agent_destinations WHERE agent_group_id = ?1 AND local_name = ?2)",
        params![agent, name],
        |r| r.get(0),
    )?)
}

/// Makes sure `agent` has a channel destination for `chat`; returns it if it was created now.
/// Never duplicates: an existing destination for the chat (under any name) is kept.
pub fn ensure_channel(
    conn: &Connection,
    agent: &AgentGroupId,
    chat: &MessagingGroupId,
) -> Result<Option<Destination>> {
    if allows(conn, agent, &Target::Channel(chat.clone()))? {
        return Ok(None);
    }
    add(conn, agent, None, Target::Channel(chat.clone())).map(Some)
}

/// True if `agent` may send to `target`.
pub fn allows(conn: &Connection, agent: &AgentGroupId, target: &Target) -> Result<bool> {
    Ok(conn
        .prepare_cached(
            "SELECT EXISTS(SELECT 1 FROM agent_destinations
             WHERE agent_group_id = ?1 AND target_type = ?2 AND target_id = ?3)",
        )?
        .query_row(params![agent, target.kind().as_str(), target.id()], |r| {
            r.get(0)
        })?)
}

pub fn find(conn: &Connection, agent: &AgentGroupId, name: &str) -> Result<Option<Destination>> {
    Ok(conn
        .query_row(
            &format!("SELECT {COLUMNS} FROM agent_destinations WHERE agent_group_id = ?1 AND local_name = ?2"),
            params![agent, name],
            from_row,
        )
        .optional()?)
}

pub fn list(conn: &Connection, agent: &AgentGroupId) -> Result<Vec<Destination>> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {COLUMNS} FROM agent_destinations WHERE agent_group_id = ?1 ORDER BY local_name"
    ))?;
    let rows = stmt
        .query_map([agent], from_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

/// Removes a destination by name. Returns false if there was none.
pub fn remove(conn: &Connection, agent: &AgentGroupId, name: &str) -> Result<bool> {
    Ok(conn.execute(
        "DELETE FROM agent_destinations WHERE agent_group_id = ?1 AND local_name = ?2",
        params![agent, name],
    )? > 0)
}

/// Removes the agent's destination for a target, whatever its name.
pub fn remove_target(conn: &Connection, agent: &AgentGroupId, target: &Target) -> Result<bool> {
    Ok(conn.execute(
        "DELETE FROM agent_destinations WHERE agent_group_id = ?1 AND target_type = ?2 AND target_id = ?3",
        params![agent, target.kind().as_str(), target.id()],
    )? > 0)
}

/// A destination resolved to an address, as the session projection stores it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Resolved {
    pub name: String,
    pub display_name: Option<String>,
    pub kind: DestinationType,
    pub channel_type: Option<String>,
    pub platform_id: Option<String>,
    pub agent_group_id: Option<String>,
}

/// Every destination of `agent` whose target still exists, resolved.
pub fn resolved(conn: &Connection, agent: &AgentGroupId) -> Result<Vec<Resolved>> {
    let mut stmt = conn.prepare_cached(
        "SELECT d.local_name, m.name, m.channel_type, m.platform_id
           FROM agent_destinations d JOIN messaging_groups m ON m.id = d.target_id
          WHERE d.agent_group_id = ?1 AND d.target_type = 'channel'
         UNION ALL
         SELECT d.local_name, g.name, NULL, g.id
           FROM agent_destinations d JOIN agent_groups g ON g.id = d.target_id
          WHERE d.agent_group_id = ?1 AND d.target_type = 'agent'
         ORDER BY 1",
    )?;
    let rows = stmt
        .query_map([agent], |r| {
            let channel_type: Option<String> = r.get(2)?;
            let id: String = r.get(3)?;
            Ok(match channel_type {
                Some(ch) => Resolved {
                    name: r.get(0)?,
                    display_name: r.get(1)?,
                    kind: DestinationType::Channel,
                    channel_type: Some(ch),
                    platform_id: Some(id),
                    agent_group_id: None,
                },
                None => Resolved {
                    name: r.get(0)?,
                    display_name: r.get(1)?,
                    kind: DestinationType::Agent,
                    channel_type: None,
                    platform_id: None,
                    agent_group_id: Some(id),
                },
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::{agent, chat, db};

    #[test]
    fn channel_names_come_from_the_chat_and_break_collisions() {
        let db = db();
        let a = agent(&db, "A");
        let ops = chat(&db, "telegram:-1", Some("Ops Team!"), true);
        let ops2 = chat(&db, "discord:9", Some("ops team"), true);
        let unnamed = chat(&db, "telegram:-100123", None, true);
        let d1 = db
            .write(|c| ensure_channel(c, &a.id, &ops.id))
            .unwrap()
            .unwrap();
        let d2 = db
            .write(|c| ensure_channel(c, &a.id, &ops2.id))
            .unwrap()
            .unwrap();
        let d3 = db
            .write(|c| ensure_channel(c, &a.id, &unnamed.id))
            .unwrap()
            .unwrap();
        assert_eq!(d1.local_name, "ops-team");
        assert_eq!(d2.local_name, "ops-team-2");
        assert_eq!(d3.local_name, "telegram-100123");
    }

    #[test]
    fn ensure_never_duplicates() {
        let db = db();
        let a = agent(&db, "A");
        let ops = chat(&db, "telegram:-1", Some("Ops"), true);
        assert!(
            db.write(|c| ensure_channel(c, &a.id, &ops.id))
                .unwrap()
                .is_some()
        );
        assert!(
            db.write(|c| ensure_channel(c, &a.id, &ops.id))
                .unwrap()
                .is_none()
        );
        assert_eq!(db.read(|c| list(c, &a.id)).unwrap().len(), 1);
    }

    #[test]
    fn names_are_local_to_each_agent() {
        let db = db();
        let a = agent(&db, "A");
        let b = agent(&db, "B");
        let ops = chat(&db, "telegram:-1", Some("Ops"), true);
        let da = db
            .write(|c| ensure_channel(c, &a.id, &ops.id))
            .unwrap()
            .unwrap();
        let db_ = db
            .write(|c| ensure_channel(c, &b.id, &ops.id))
            .unwrap()
            .unwrap();
        assert_eq!(da.local_name, "ops");
        assert_eq!(db_.local_name, "ops");
    }

    #[test]
    fn explicit_names_are_validated_and_unique() {
        let db = db();
        let a = agent(&db, "A");
        let b = agent(&db, "B");
        assert!(
            db.write(|c| add(c, &a.id, Some("Bad Name"), Target::Agent(b.id.clone())))
                .is_err()
        );
        db.write(|c| add(c, &a.id, Some("buddy"), Target::Agent(b.id.clone())))
            .unwrap();
        let dup = db.write(|c| add(c, &a.id, Some("buddy"), Target::Agent(a.id.clone())));
        assert!(matches!(dup, Err(Error::Conflict(_))));
        assert!(
            db.read(|c| allows(c, &a.id, &Target::Agent(b.id.clone())))
                .unwrap()
        );
        assert!(
            !db.read(|c| allows(c, &b.id, &Target::Agent(a.id.clone())))
                .unwrap()
        );
    }

    #[test]
    fn resolved_skips_nothing_valid_and_reports_addresses() {
        let db = db();
        let a = agent(&db, "A");
        let b = agent(&db, "Buddy");
        let ops = chat(&db, "telegram:-1", Some("Ops"), true);
        db.write(|c| ensure_channel(c, &a.id, &ops.id)).unwrap();
        db.write(|c| add(c, &a.id, None, Target::Agent(b.id.clone())))
            .unwrap();
        let r = db.read(|c| resolved(c, &a.id)).unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].name, "buddy");
        assert_eq!(r[0].agent_group_id.as_deref(), Some(b.id.as_str()));
        assert_eq!(r[1].platform_id.as_deref(), Some("-1"));
        assert_eq!(r[1].channel_type.as_deref(), Some("telegram"));
    }
}
