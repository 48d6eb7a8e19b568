//! Wirings (`messaging_group_agents`): which agents a chat reaches, and the rules that decide
//! when a message engages an agent and how its sessions are keyed.

use rusqlite::{Connection, OptionalExtension, Row, params};
use serde::Serialize;

use crate::db::text_enum;
use crate::error::{Error, Result};
use crate::ids::{AgentGroupId, MessagingGroupId, WiringId};
use crate::store::destinations::{self, Destination, Target};
use crate::store::is_unique_violation;

text_enum! {
    /// When a message engages the wired agent.
    EngageMode, "engage mode" {
        /// When the text matches `engage_pattern` (no pattern: every message).
        Pattern = "pattern",
        /// When the platform says the bot was mentioned (DMs always count).
        Mention = "mention",
        /// On a mention, and afterwards on every message of a thread the agent is in.
        MentionSticky = "mention-sticky",
    }
}

text_enum! {
    /// Who may engage the agent through this wiring, on top of the chat's policy.
    SenderScope, "sender scope" {
        All = "all",
        /// Only users with access to the agent group, even in a public chat.
        Known = "known",
    }
}

text_enum! {
    /// What happens to a message that did not engage the agent.
    IgnoredMessagePolicy, "ignored-message policy" {
        Drop = "drop",
        /// Store it as context for the agent's next engaged turn, without waking it.
        Accumulate = "accumulate",
    }
}

text_enum! {
    /// How messages of a chat map onto sessions of the agent.
    SessionMode, "session mode" {
        /// One session per chat.
        Shared = "shared",
        /// One session per thread of the chat.
        PerThread = "per-thread",
        /// One session for the agent across every chat wired this way.
        AgentShared = "agent-shared",
    }
}

/// The engage and session rules of one wiring.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WiringRules {
    pub engage_mode: EngageMode,
    /// Regex source for `pattern` mode; `None` = every message.
    pub engage_pattern: Option<String>,
    pub sender_scope: SenderScope,
    pub ignored_message_policy: IgnoredMessagePolicy,
    pub session_mode: SessionMode,
    /// Higher first when a chat is wired to several agents.
    pub priority: i64,
}

impl Default for WiringRules {
    fn default() -> Self {
        WiringRules {
            engage_mode: EngageMode::Pattern,
            engage_pattern: None,
            sender_scope: SenderScope::All,
            ignored_message_policy: IgnoredMessagePolicy::Drop,
            session_mode: SessionMode::Shared,
            priority: 0,
        }
    }
}

impl WiringRules {
    /// Sensible rules for a chat: every message in a DM, mentions in a group.
    pub fn for_chat(is_group: bool) -> Self {
        WiringRules {
            engage_mode: if is_group {
                EngageMode::Mention
            } else {
                EngageMode::Pattern
            },
            ..WiringRules::default()
        }
    }

    /// Checks the rules make sense (the pattern compiles, and only with `pattern` mode).
    pub fn validate(&self) -> Result<()> {
        match (&self.engage_mode, &self.engage_pattern) {
            (EngageMode::Pattern, Some(p)) => {
                regex::Regex::new(p)
                    .map_err(|e| Error::invalid(format!("invalid engage pattern {p:?}: {e}")))?;
            }
            (mode, Some(_)) => {
                return Err(Error::invalid(format!(
                    "an engage pattern only applies to pattern mode, not {mode}"
                )));
            }
            _ => {}
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Wiring {
    pub id: WiringId,
    pub messaging_group_id: MessagingGroupId,
    pub agent_group_id: AgentGroupId,
    #[serde(flatten)]
    pub rules: WiringRules,
    pub created_at: String,
}

const COLUMNS: &str = "id, messaging_group_id, agent_group_id, engage_mode, engage_pattern, sender_scope, \
                       ignored_message_policy, session_mode, priority, created_at";

fn from_row(r: &Row<'_>) -> rusqlite::Result<Wiring> {
    Ok(Wiring {
        id: r.get(0)?,
        messaging_group_id: r.get(1)?,
        agent_group_id: r.get(2)?,
        rules: WiringRules {
            engage_mode: r.get(3)?,
            engage_pattern: r.get(4)?,
            sender_scope: r.get(5)?,
            ignored_message_policy: r.get(6)?,
            session_mode: r.get(7)?,
            priority: r.get(8)?,
        },
        created_at: r.get(9)?,
    })
}

/// Wires a chat to an agent and gives the agent a destination for the chat (unless it has
/// one). Returns the wiring and the destination created now, if any.
pub fn create(
    conn: &Connection,
    chat: &MessagingGroupId,
    agent: &AgentGroupId,
    rules: WiringRules,
) -> Result<(Wiring, Option<Destination>)> {
    rules.validate()?;
    let wiring = Wiring {
        id: WiringId::generate(),
        messaging_group_id: chat.clone(),
        agent_group_id: agent.clone(),
        rules,
        created_at: nanoclaw_schema::time::now(),
    };
    let r = &wiring.rules;
    conn.execute(
        &format!("INSERT INTO messaging_group_agents ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"),
        params![
            wiring.id,
            wiring.messaging_group_id,
            wiring.agent_group_id,
            r.engage_mode,
            r.engage_pattern,
            r.sender_scope,
            r.ignored_message_policy,
            r.session_mode,
            r.priority,
            wiring.created_at
        ],
    )
    .map_err(|e| {
        if is_unique_violation(&e) {
            Error::Conflict(format!("chat {chat} is already wired to agent {agent}"))
        } else {
            e.into()
        }
    })?;
    let destination = destinations::ensure_channel(conn, agent, chat)?;
    Ok((wiring, destination))
}

/// The wirings of a chat, highest priority first (then oldest first).
pub fn for_chat(conn: &Connection, chat: &MessagingGroupId) -> Result<Vec<Wiring>> {
    // Sorted here, not with ORDER BY: SQLite re-prepares a statement with a bound parameter
    // and a sort on every run, and this runs for every inbound message.
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM messaging_group_agents WHERE messaging_group_id = ?1"
    ))?;
    let mut rows = stmt
        .query_map([chat], from_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    rows.sort_by(|a, b| {
        b.rules
            .priority
            .cmp(&a.rules.priority)
            .then_with(|| a.created_at.cmp(&b.created_at))
            .then_with(|| a.id.cmp(&b.id))
    });
    Ok(rows)
}

pub fn find(
    conn: &Connection,
    chat: &MessagingGroupId,
    agent: &AgentGroupId,
) -> Result<Option<Wiring>> {
    Ok(conn
        .query_row(
            &format!("SELECT {COLUMNS} FROM messaging_group_agents WHERE messaging_group_id = ?1 AND agent_group_id = ?2"),
            params![chat, agent],
            from_row,
        )
        .optional()?)
}

/// Every wiring, optionally only those of one agent.
pub fn list(conn: &Connection, agent: Option<&AgentGroupId>) -> Result<Vec<Wiring>> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {COLUMNS} FROM messaging_group_agents WHERE ?1 IS NULL OR agent_group_id = ?1
         ORDER BY agent_group_id, priority DESC, created_at"
    ))?;
    let rows = stmt
        .query_map([agent], from_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

/// Unwires a chat from an agent, and removes the agent's destination for the chat: without
/// the wiring the agent should not keep sending there (add it back with `destinations add`).
pub fn delete(conn: &Connection, chat: &MessagingGroupId, agent: &AgentGroupId) -> Result<()> {
    let n = conn.execute(
        "DELETE FROM messaging_group_agents WHERE messaging_group_id = ?1 AND agent_group_id = ?2",
        params![chat, agent],
    )?;
    if n == 0 {
        return Err(Error::not_found("wiring", format!("{chat} -> {agent}")));
    }
    destinations::remove_target(conn, agent, &Target::Channel(chat.clone()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::{agent, chat, db};

    #[test]
    fn wiring_creates_the_destination_once() {
        let db = db();
        let a = agent(&db, "A");
        let ops = chat(&db, "telegram:-1", Some("Ops"), true);
        let (w, dest) = db
            .write(|c| create(c, &ops.id, &a.id, WiringRules::for_chat(true)))
            .unwrap();
        assert_eq!(w.rules.engage_mode, EngageMode::Mention);
        assert_eq!(dest.unwrap().local_name, "ops");
        let again = db.write(|c| create(c, &ops.id, &a.id, WiringRules::default()));
        assert!(matches!(again, Err(Error::Conflict(_))));
        assert_eq!(db.read(|c| destinations::list(c, &a.id)).unwrap().len(), 1);
    }

    #[test]
    fn existing_destination_is_reused() {
        let db = db();
        let a = agent(&db, "A");
        let ops = chat(&db, "telegram:-1", Some("Ops"), true);
        db.write(|c| {
            destinations::add(c, &a.id, Some("war-room"), Target::Channel(ops.id.clone()))
        })
        .unwrap();
        let (_, dest) = db
            .write(|c| create(c, &ops.id, &a.id, WiringRules::default()))
            .unwrap();
        assert!(dest.is_none());
        let all = db.read(|c| destinations::list(c, &a.id)).unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].local_name, "war-room");
    }

    #[test]
    fn bad_rules_are_refused() {
        let db = db();
        let a = agent(&db, "A");
        let ops = chat(&db, "telegram:-1", None, true);
        let bad_regex = WiringRules {
            engage_pattern: Some("(".into()),
            ..WiringRules::default()
        };
        assert!(db.write(|c| create(c, &ops.id, &a.id, bad_regex)).is_err());
        let pattern_on_mention = WiringRules {
            engage_mode: EngageMode::Mention,
            engage_pattern: Some("x".into()),
            ..WiringRules::default()
        };
        assert!(
            db.write(|c| create(c, &ops.id, &a.id, pattern_on_mention))
                .is_err()
        );
        assert!(SessionMode::parse("per_thread").is_err());
    }

    #[test]
    fn order_is_priority_then_age_and_delete_removes_destination() {
        let db = db();
        let a = agent(&db, "A");
        let b = agent(&db, "B");
        let ops = chat(&db, "telegram:-1", None, true);
        db.write(|c| create(c, &ops.id, &a.id, WiringRules::default()))
            .unwrap();
        db.write(|c| {
            create(
                c,
                &ops.id,
                &b.id,
                WiringRules {
                    priority: 5,
                    ..WiringRules::default()
                },
            )
        })
        .unwrap();
        let order: Vec<_> = db
            .read(|c| for_chat(c, &ops.id))
            .unwrap()
            .into_iter()
            .map(|w| w.agent_group_id)
            .collect();
        assert_eq!(order, vec![b.id.clone(), a.id.clone()]);
        db.write(|c| delete(c, &ops.id, &b.id)).unwrap();
        assert!(
            db.read(|c| destinations::list(c, &b.id))
                .unwrap()
                .is_empty()
        );
        assert!(db.write(|c| delete(c, &ops.id, &b.id)).is_err());
    }
}
