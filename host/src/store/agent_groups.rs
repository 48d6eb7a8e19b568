//! Agent groups: one agent identity with a folder under `groups/`.

use rusqlite::{Connection, OptionalExtension, Row, params};
use serde::Serialize;

use crate::db::text_enum;
use crate::error::{Error, Result};
use crate::ids::AgentGroupId;
use crate::store::{first_free, is_unique_violation, normalize_name};

text_enum! {
    /// What runs inside an agent's container.
    AgentProvider, "agent provider" {
        /// Deterministic scripted replies; needs no account or API key.
        Mock = "mock",
        /// Claude Code.
        Claude = "claude",
        /// An OpenAI-compatible chat completions API (OpenAI, Ollama, vLLM, ...).
        OpenAi = "openai",
    }
}

/// A validated folder name under `groups/`: `^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$`, and never
/// `global` (the shared read-only memory every agent mounts).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct GroupFolder(String);

impl GroupFolder {
    pub const RESERVED: &'static str = "global";

    pub fn parse(s: &str) -> Result<Self> {
        let valid_chars = s
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        let starts_ok = s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric());
        if s.is_empty() || s.len() > 64 || !valid_chars || !starts_ok {
            return Err(Error::invalid(format!(
                "invalid folder {s:?}: use 1-64 letters, digits, '-' or '_', starting with a letter or digit"
            )));
        }
        if s.eq_ignore_ascii_case(Self::RESERVED) {
            return Err(Error::invalid(format!(
                "folder {s:?} is reserved for the shared global memory"
            )));
        }
        Ok(GroupFolder(s.to_string()))
    }

    /// A folder derived from a display name (normalized, capped at 64 characters).
    pub fn from_name(name: &str) -> Self {
        let mut base = normalize_name(name);
        base.truncate(64);
        let base = base.trim_end_matches('-').to_string();
        GroupFolder::parse(&base)
            .unwrap_or_else(|_| GroupFolder(format!("agent-{base}").chars().take(64).collect()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for GroupFolder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AgentGroup {
    pub id: AgentGroupId,
    pub name: String,
    pub folder: GroupFolder,
    /// `None` means the host's default provider.
    pub provider: Option<AgentProvider>,
    pub assistant_name: Option<String>,
    pub container_config: serde_json::Value,
    pub created_at: String,
}

impl AgentGroup {
    /// The name the agent uses for itself.
    pub fn display_name(&self) -> &str {
        self.assistant_name.as_deref().unwrap_or(&self.name)
    }

    /// The most model tokens the agent may use per UTC day (`daily_tokens` in its container
    /// config), if the operator set a budget.
    pub fn daily_token_budget(&self) -> Option<u64> {
        self.container_config
            .get(DAILY_TOKENS_KEY)
            .and_then(serde_json::Value::as_u64)
    }
}

/// The container-config key of [`AgentGroup::daily_token_budget`].
pub const DAILY_TOKENS_KEY: &str = "daily_tokens";

/// Parameters for [`create`].
#[derive(Debug, Clone, Default)]
pub struct NewAgentGroup {
    pub name: String,
    /// `None`: derived from the name, made unique with `-2`, `-3`, ...
    pub folder: Option<GroupFolder>,
    pub provider: Option<AgentProvider>,
    pub assistant_name: Option<String>,
}

impl NewAgentGroup {
    pub fn named(name: &str) -> Self {
        NewAgentGroup {
            name: name.to_string(),
            ..Default::default()
        }
    }
}

const COLUMNS: &str = "id, name, folder, provider, assistant_name, container_config, created_at";

fn from_row(r: &Row<'_>) -> rusqlite::Result<AgentGroup> {
    let folder: String = r.get(2)?;
    let config: String = r.get(5)?;
    Ok(AgentGroup {
        id: r.get(0)?,
        name: r.get(1)?,
        // Rows were validated on the way in; keep whatever is stored readable.
        folder: GroupFolder(folder),
        provider: r.get(3)?,
        assistant_name: r.get(4)?,
        container_config: serde_json::from_str(&config).unwrap_or(serde_json::Value::Null),
        created_at: r.get(6)?,
    })
}

pub fn create(conn: &Connection, new: NewAgentGroup) -> Result<AgentGroup> {
    let name = new.name.trim();
    if name.is_empty() {
        return Err(Error::invalid("an agent group needs a name"));
    }
    let folder = match new.folder {
        Some(f) => f,
        None => {
            let base = GroupFolder::from_name(name);
            let free = first_free(base.as_str(), |cand| folder_taken(conn, cand))?;
            GroupFolder::parse(&free)?
        }
    };
    let group = AgentGroup {
        id: AgentGroupId::generate(),
        name: name.to_string(),
        folder,
        provider: new.provider,
        assistant_name: new.assistant_name.filter(|s| !s.trim().is_empty()),
        container_config: serde_json::json!({}),
        created_at: nanoclaw_schema::time::now(),
    };
    conn.execute(
        &format!("INSERT INTO agent_groups ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, '{{}}', ?6)"),
        params![
            group.id,
            group.name,
            group.folder.as_str(),
            group.provider,
            group.assistant_name,
            group.created_at
        ],
    )
    .map_err(|e| {
        if is_unique_violation(&e) {
            Error::Conflict(format!(
                "folder {:?} is already used by another agent group",
                group.folder.as_str()
            ))
        } else {
            e.into()
        }
    })?;
    Ok(group)
}

fn folder_taken(conn: &Connection, folder: &str) -> Result<bool> {
    Ok(conn.query_row(
        "SELECT EXISTS(SELECT 1 FROM agent_groups WHERE folder = ?1 COLLATE NOCASE)",
        [folder],
        |r| r.get(0),
    )?)
}

pub fn get(conn: &Connection, id: &AgentGroupId) -> Result<Option<AgentGroup>> {
    Ok(conn
        .prepare_cached(&format!("SELECT {COLUMNS} FROM agent_groups WHERE id = ?1"))?
        .query_row([id], from_row)
        .optional()?)
}

/// Finds an agent group by id or folder, as operators refer to it.
pub fn resolve(conn: &Connection, reference: &str) -> Result<AgentGroup> {
    conn.query_row(
        &format!("SELECT {COLUMNS} FROM agent_groups WHERE id = ?1 OR folder = ?1"),
        [reference],
        from_row,
    )
    .optional()?
    .ok_or_else(|| Error::not_found("agent group", reference))
}

pub fn list(conn: &Connection) -> Result<Vec<AgentGroup>> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {COLUMNS} FROM agent_groups ORDER BY name, created_at"
    ))?;
    let rows = stmt
        .query_map([], from_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

/// Changes the provider (`None` = host default).
pub fn set_provider(
    conn: &Connection,
    id: &AgentGroupId,
    provider: Option<AgentProvider>,
) -> Result<()> {
    expect_one(
        conn.execute(
            "UPDATE agent_groups SET provider = ?2 WHERE id = ?1",
            params![id, provider],
        )?,
        id,
    )
}

pub fn set_assistant_name(conn: &Connection, id: &AgentGroupId, name: Option<&str>) -> Result<()> {
    let name = name.map(str::trim).filter(|s| !s.is_empty());
    expect_one(
        conn.execute(
            "UPDATE agent_groups SET assistant_name = ?2 WHERE id = ?1",
            params![id, name],
        )?,
        id,
    )
}

/// Replaces the group's container settings (a JSON object: `image`, `memory_mb`, `model`,
/// `mounts`).
pub fn set_container_config(
    conn: &Connection,
    id: &AgentGroupId,
    config: &serde_json::Value,
) -> Result<()> {
    if !config.is_object() {
        return Err(Error::invalid("container settings must be a JSON object"));
    }
    expect_one(
        conn.execute(
            "UPDATE agent_groups SET container_config = ?2 WHERE id = ?1",
            params![id, config.to_string()],
        )?,
        id,
    )
}

/// Deletes the group and, by cascade, its wirings, roles scoped to it, members,
/// destinations and sessions. Its folder on disk is left alone.
pub fn delete(conn: &Connection, id: &AgentGroupId) -> Result<()> {
    // Destinations other agents hold towards this one point at it by id only.
    conn.execute(
        "DELETE FROM agent_destinations WHERE target_type = 'agent' AND target_id = ?1",
        [id],
    )?;
    expect_one(
        conn.execute("DELETE FROM agent_groups WHERE id = ?1", [id])?,
        id,
    )
}

fn expect_one(changed: usize, id: &AgentGroupId) -> Result<()> {
    if changed == 0 {
        Err(Error::not_found("agent group", id.as_str()))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::db;

    #[test]
    fn folders_are_validated_and_global_is_reserved() {
        for ok in ["main", "dm-with-alice", "A1_b", &"x".repeat(64)] {
            GroupFolder::parse(ok).unwrap();
        }
        for bad in [
            "",
            "global",
            "Global",
            "../etc",
            "a/b",
            "-x",
            ".hidden",
            &"x".repeat(65),
        ] {
            assert!(GroupFolder::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn folder_from_name_never_lands_on_global() {
        assert_eq!(GroupFolder::from_name("Global").as_str(), "agent-global");
        assert_eq!(
            GroupFolder::from_name("Alice's Team").as_str(),
            "alice-s-team"
        );
        assert!(
            GroupFolder::from_name(&"long name ".repeat(20))
                .as_str()
                .len()
                <= 64
        );
    }

    #[test]
    fn create_derives_unique_folders() {
        let db = db();
        let a = db
            .write(|c| create(c, NewAgentGroup::named("Helper")))
            .unwrap();
        let b = db
            .write(|c| create(c, NewAgentGroup::named("helper")))
            .unwrap();
        assert_eq!(a.folder.as_str(), "helper");
        assert_eq!(b.folder.as_str(), "helper-2");
        let explicit = NewAgentGroup {
            folder: Some(GroupFolder::parse("helper").unwrap()),
            ..NewAgentGroup::named("x")
        };
        assert!(matches!(
            db.write(|c| create(c, explicit)),
            Err(Error::Conflict(_))
        ));
        assert!(db.write(|c| create(c, NewAgentGroup::named("  "))).is_err());
    }

    #[test]
    fn resolve_by_id_or_folder() {
        let db = db();
        let a = db
            .write(|c| create(c, NewAgentGroup::named("Ops")))
            .unwrap();
        db.read(|c| {
            assert_eq!(resolve(c, "ops")?.id, a.id);
            assert_eq!(resolve(c, a.id.as_str())?.folder.as_str(), "ops");
            assert!(matches!(resolve(c, "nope"), Err(Error::NotFound { .. })));
            Ok(())
        })
        .unwrap();
    }

    #[test]
    fn provider_round_trips() {
        let db = db();
        let a = db
            .write(|c| create(c, NewAgentGroup::named("Ops")))
            .unwrap();
        db.write(|c| set_provider(c, &a.id, Some(AgentProvider::Claude)))
            .unwrap();
        let got = db.read(|c| get(c, &a.id)).unwrap().unwrap();
        assert_eq!(got.provider, Some(AgentProvider::Claude));
        assert!(AgentProvider::parse("gpt").is_err());
    }
}
