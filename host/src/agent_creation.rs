//! `create_agent`: an agent asks the host for a new agent group on behalf of one of its admins.
//!
//! The runner offers the tool only when the triggering sender is an admin, but a tampered
//! container can write the row anyway, so the host decides from its own records alone:
//! the row's `in_reply_to` must name the session's newest triggering message in the host's
//! `inbound.db`, that message must be a person's chat message (never another agent's, a
//! task firing or a host note), and its sender must hold admin privilege over this agent
//! group in the central DB. Anything else is refused with a note to the agent.
//!
//! On success the child gets its own group (same provider and model settings as the
//! creator, not its mounts), its folder seeded with the instructions as `CLAUDE.md`, and
//! destinations both ways (creator → child by its local name, child → creator as
//! `parent`). The creator's active sessions get their destinations rewritten at once, so
//! the agent can message the child in the same turn.
//!
//! Idempotent: the child records the row it came from (`created_by` in its container
//! settings), so a row applied again finds its child instead of making a second one.

use std::path::Path;

use rusqlite::{Connection, OptionalExtension, params};
use serde_json::{Value, json};

use nanoclaw_schema::session::content::ChatIn;
use nanoclaw_schema::session::{AGENT_CHANNEL, InKind};
use nanoclaw_schema::time;

use crate::access;
use crate::config::Paths;
use crate::db::Db;
use crate::error::{Error, Result};
use crate::ids::{AgentGroupId, UserId};
use crate::sessions::queue::{self, Queued};
use crate::sessions::{Session, SessionStore};
use crate::store::agent_groups::{self, GroupFolder, NewAgentGroup};
use crate::store::destinations::{self, Target};
use crate::store::{first_free, normalize_name};

/// Agents one agent may create in any 24 hours: stops a runaway agent from filling the host.
pub const MAX_AGENTS_PER_DAY: i64 = 10;
/// Longest name (characters) an agent may give its child.
pub const MAX_NAME_CHARS: usize = 64;
/// Longest instructions (characters) that seed the child's memory.
pub const MAX_INSTRUCTIONS_CHARS: usize = 16 * 1024;
/// The child's destination name for its creator.
pub const PARENT_NAME: &str = "parent";
/// The key in the child's container settings recording the row that created it.
pub const CREATED_BY_KEY: &str = "created_by";
/// Container settings a child takes over from its creator. Extra mounts are left out: the
/// operator granted them to the creator only.
const INHERITED_SETTINGS: &[&str] = &["image", "model", "memory_mb", "daily_tokens"];
/// The refusal every privilege failure gets (the details go to the log, not the agent).
pub const NOT_ADMIN: &str = "only an admin of this agent may create agents";

/// What became of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// The child exists (now, or already from an earlier attempt at the same row).
    Created {
        child: AgentGroupId,
        local_name: String,
        folder: String,
    },
    /// Nothing was created; the agent was told why.
    Refused(Refusal),
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The request does not come from an admin's message (`detail` is for the log only).
    #[error("{NOT_ADMIN}")]
    NotAdmin { detail: String },
    /// The request is malformed or over a limit.
    #[error("{0}")]
    Invalid(String),
}

/// A name checked and normalized: the group's display name, the creator's local name for
/// it, and the folder it would get before de-duplication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildName {
    pub display: String,
    pub local: String,
    pub folder_base: String,
}

/// Checks the name an agent chose and derives the local name and folder from it.
pub fn child_name(name: &str) -> std::result::Result<ChildName, String> {
    let display = name.trim();
    if display.is_empty() {
        return Err("the name is empty".into());
    }
    if display.chars().count() > MAX_NAME_CHARS {
        return Err(format!(
            "the name is longer than {MAX_NAME_CHARS} characters"
        ));
    }
    if display.chars().any(char::is_control) {
        return Err("the name contains control characters".into());
    }
    if !display.chars().any(|c| c.is_ascii_alphanumeric()) {
        return Err("the name needs at least one letter or digit (a-z, 0-9)".into());
    }
    let mut local = normalize_name(display);
    // Room for a "-NN" suffix when the folder is de-duplicated, within the 64 allowed.
    local.truncate(56);
    let local = local.trim_end_matches('-').to_string();
    destinations::validate_name(&local).map_err(|e| e.to_string())?;
    // `from_name` never yields the reserved `global` (the shared memory).
    let folder_base = GroupFolder::from_name(&local).as_str().to_string();
    Ok(ChildName {
        display: display.to_string(),
        local,
        folder_base,
    })
}

/// Checks the instructions: bounded, no NUL.
pub fn check_instructions(instructions: Option<&str>) -> std::result::Result<(), String> {
    let Some(text) = instructions else {
        return Ok(());
    };
    let chars = text.chars().count();
    if chars > MAX_INSTRUCTIONS_CHARS {
        return Err(format!(
            "the instructions have {chars} characters, more than the limit of {MAX_INSTRUCTIONS_CHARS}"
        ));
    }
    if text.contains('\0') {
        return Err("the instructions contain a NUL byte".into());
    }
    Ok(())
}

/// Where the request stands in the host's own record of the session: the sender whose
/// message the row answers, if that message is the newest trigger and a person's.
pub fn requesting_sender(
    inbound: &Connection,
    in_reply_to: Option<&str>,
) -> Result<std::result::Result<UserId, String>> {
    let Some(id) = in_reply_to else {
        return Ok(Err("the request names no message it answers".into()));
    };
    // The newest row that started a turn from outside the host: a chat message, a task
    // firing, or a person's click (a system row with a chat address). The host's own notes
    // (system rows without an address) do not move it.
    let newest: Option<String> = inbound
        .prepare_cached(
            "SELECT id FROM messages_in WHERE trigger = 1
               AND (kind IN ('chat', 'task') OR (kind = 'system' AND channel_type IS NOT NULL))
             ORDER BY seq DESC LIMIT 1",
        )?
        .query_row([], |r| r.get(0))
        .optional()?;
    if newest.as_deref() != Some(id) {
        return Ok(Err(format!(
            "message {id:?} is not the session's newest trigger (newest: {newest:?})"
        )));
    }
    let row: Option<(String, Option<String>, String, String)> = inbound
        .prepare_cached(
            "SELECT kind, channel_type, status, content FROM messages_in WHERE id = ?1",
        )?
        .query_row([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .optional()?;
    let Some((kind, channel, status, content)) = row else {
        return Ok(Err(format!("no message {id:?} in the session")));
    };
    if kind != InKind::Chat.as_str() {
        return Ok(Err(format!(
            "message {id:?} is a {kind} row, not a chat message"
        )));
    }
    if channel.as_deref() == Some(AGENT_CHANNEL) {
        return Ok(Err(format!("message {id:?} came from another agent")));
    }
    if status == "deleted" {
        return Ok(Err(format!("message {id:?} was deleted by its sender")));
    }
    // Written by the host from the platform's sender; still parsed, never assumed.
    let sender = serde_json::from_str::<ChatIn>(&content)
        .ok()
        .and_then(|c| c.sender_id)
        .and_then(|s| UserId::parse(&s).ok());
    Ok(sender.ok_or_else(|| format!("message {id:?} has no person as its sender")))
}

/// The child already created from this row, if any.
fn created_from(c: &Connection, session: &Session, row_key: &str) -> Result<Option<AgentGroupId>> {
    Ok(c.prepare_cached(
        "SELECT id FROM agent_groups
          WHERE json_extract(container_config, '$.created_by.session') = ?1
            AND json_extract(container_config, '$.created_by.message') = ?2",
    )?
    .query_row(params![session.id, row_key], |r| r.get(0))
    .optional()?)
}

/// How many agents `creator` created since `since`.
fn created_since(c: &Connection, creator: &AgentGroupId, since: &str) -> Result<i64> {
    Ok(c.prepare_cached(
        "SELECT COUNT(*) FROM agent_groups
          WHERE json_extract(container_config, '$.created_by.agent') = ?1 AND created_at >= ?2",
    )?
    .query_row(params![creator, since], |r| r.get(0))?)
}

fn folder_taken(c: &Connection, paths: &Paths, folder: &str) -> Result<bool> {
    let in_db: bool = c.query_row(
        "SELECT EXISTS(SELECT 1 FROM agent_groups WHERE folder = ?1 COLLATE NOCASE)",
        [folder],
        |r| r.get(0),
    )?;
    // A deleted group's folders stay on disk with its memory and config: never hand them to
    // a new agent.
    let on_disk = paths.groups().join(folder).symlink_metadata().is_ok()
        || paths.agent_config(folder).symlink_metadata().is_ok();
    Ok(in_db || on_disk)
}

/// Queues the note to the agent about its request (the id derives from the row, so a retry
/// queues nothing twice). It triggers a turn, so the agent can tell the person at once.
fn queue_note(
    c: &Connection,
    session: &Session,
    note_id: &str,
    text: String,
    ok: bool,
) -> Result<()> {
    queue::push(
        c,
        &session.id,
        &Queued::note(note_id, "create_agent", Some(ok), text),
    )?;
    Ok(())
}

/// Applies one `create_agent` row of `session` (blocking: reads the session's `inbound.db`
/// and writes files; run it off the async workers).
/// An `Err` is transient (a busy DB, a disk error): the row is tried again, and finds what
/// an earlier attempt created.
#[allow(clippy::too_many_arguments)]
pub fn apply(
    db: &Db,
    sessions: &SessionStore,
    paths: &Paths,
    session: &Session,
    row_key: &str,
    in_reply_to: Option<&str>,
    name: &str,
    instructions: Option<&str>,
) -> Result<Applied> {
    let note_id = format!("note-{row_key}");
    let creator = &session.agent_group_id;
    let done = db.read(|c| created_from(c, session, row_key))?;
    let applied = match done {
        Some(child) => {
            tracing::info!(session = %session.id, child = %child, "create_agent already applied; finishing");
            existing(db, creator, &child)?
        }
        None => {
            let verdict = sessions.with_inbound(session, |c| requesting_sender(c, in_reply_to))?;
            let refusal = match verdict {
                Err(detail) => Some(Refusal::NotAdmin { detail }),
                Ok(sender) => {
                    if db.read(|c| access::has_admin_privilege(c, &sender, creator))? {
                        None
                    } else {
                        Some(Refusal::NotAdmin {
                            detail: format!("{sender} has no admin privilege over {creator}"),
                        })
                    }
                }
            };
            let refusal = refusal.or_else(|| {
                let checked =
                    child_name(name).and_then(|n| check_instructions(instructions).map(|()| n));
                checked.err().map(Refusal::Invalid)
            });
            match refusal {
                Some(r) => {
                    db.write(|c| {
                        queue_note(
                            c,
                            session,
                            &note_id,
                            format!("create_agent failed: {r}"),
                            false,
                        )
                    })?;
                    return Ok(Applied::Refused(r));
                }
                None => create(db, paths, session, row_key, &note_id, name)?,
            }
        }
    };
    let Applied::Created { child, folder, .. } = &applied else {
        return Ok(applied);
    };
    seed_folder(&paths.groups(), folder, name, instructions)?;
    // The session that asked must see the child now; a failure here retries the row.
    sessions.refresh_projection(db, session)?;
    let others = sessions.refresh_agent(db, creator)?;
    tracing::info!(session = %session.id, child = %child, folder, sessions_refreshed = others,
        "agent created");
    Ok(applied)
}

/// What an earlier attempt created, for finishing the files and projections.
fn existing(db: &Db, creator: &AgentGroupId, child: &AgentGroupId) -> Result<Applied> {
    db.read(|c| {
        let group = agent_groups::get(c, child)?
            .ok_or_else(|| Error::not_found("agent group", child.as_str()))?;
        let local_name = destinations::list(c, creator)?
            .into_iter()
            .find(|d| d.target == Target::Agent(child.clone()))
            .map(|d| d.local_name)
            .unwrap_or_default();
        Ok(Applied::Created {
            child: child.clone(),
            local_name,
            folder: group.folder.to_string(),
        })
    })
}

/// The central half, in one transaction: the group, its settings and provenance, both
/// destinations and the note; or a refusal with its note.
fn create(
    db: &Db,
    paths: &Paths,
    session: &Session,
    row_key: &str,
    note_id: &str,
    name: &str,
) -> Result<Applied> {
    let creator_id = &session.agent_group_id;
    // Checked by the caller; parsed again here for the values.
    let child = child_name(name).map_err(Error::invalid)?;
    let refuse = |c: &Connection, why: String| -> Result<Applied> {
        queue_note(
            c,
            session,
            note_id,
            format!("create_agent failed: {why}"),
            false,
        )?;
        Ok(Applied::Refused(Refusal::Invalid(why)))
    };
    db.write(|c| {
        let Some(creator) = agent_groups::get(c, creator_id)? else {
            return refuse(c, "this agent group no longer exists".into());
        };
        if destinations::find(c, creator_id, &child.local)?.is_some() {
            return refuse(
                c,
                format!(
                    "you already have a destination named \"{}\"; choose another name",
                    child.local
                ),
            );
        }
        let since = time::format(jiff::Timestamp::now() - jiff::SignedDuration::from_hours(24));
        let recent = created_since(c, creator_id, &since)?;
        if recent >= MAX_AGENTS_PER_DAY {
            return refuse(
                c,
                format!(
                    "this agent already created {recent} agents in the last 24 hours (the limit is {MAX_AGENTS_PER_DAY})"
                ),
            );
        }
        let folder = first_free(&child.folder_base, |cand| folder_taken(c, paths, cand))?;
        let group = agent_groups::create(
            c,
            NewAgentGroup {
                name: child.display.clone(),
                folder: Some(GroupFolder::parse(&folder)?),
                provider: creator.provider,
                assistant_name: None,
            },
        )?;
        let mut settings = serde_json::Map::new();
        for key in INHERITED_SETTINGS {
            if let Some(v) = creator.container_config.get(*key) {
                settings.insert((*key).to_string(), v.clone());
            }
        }
        settings.insert(
            CREATED_BY_KEY.into(),
            json!({"agent": creator_id, "session": session.id, "message": row_key, "at": time::now()}),
        );
        agent_groups::set_container_config(c, &group.id, &Value::Object(settings))?;
        destinations::add(c, creator_id, Some(&child.local), Target::Agent(group.id.clone()))?;
        let parent = first_free(PARENT_NAME, |cand| {
            Ok(destinations::find(c, &group.id, cand)?.is_some())
        })?;
        destinations::add(c, &group.id, Some(&parent), Target::Agent(creator_id.clone()))?;
        queue_note(
            c,
            session,
            note_id,
            format!(
                "Agent \"{local}\" created. Message it with <message to=\"{local}\">…</message>.",
                local = child.local
            ),
            true,
        )?;
        Ok(Applied::Created {
            child: group.id,
            local_name: child.local.clone(),
            folder,
        })
    })
}

/// The child's working folder with its memory seeded from the instructions. Existing files
/// are kept (a retried row, or an operator's edit), and nothing is followed through a link.
fn seed_folder(
    groups_dir: &Path,
    folder: &str,
    name: &str,
    instructions: Option<&str>,
) -> Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;

    let io = |context: String| move |source| Error::Io { context, source };
    std::fs::create_dir_all(groups_dir).map_err(io(format!("create {}", groups_dir.display())))?;
    let dir = groups_dir.join(folder);
    match std::fs::create_dir(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io(format!("create {}", dir.display()))(e)),
    }
    let meta = dir
        .symlink_metadata()
        .map_err(io(format!("inspect {}", dir.display())))?;
    if !meta.is_dir() {
        return Err(Error::invalid(format!(
            "{} is not a directory",
            dir.display()
        )));
    }
    let owner = crate::config::session_owner();
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::chown(&dir, Some(uid), Some(gid))
            .map_err(io(format!("chown {}", dir.display())))?;
    }
    let Some(text) = instructions.map(str::trim).filter(|t| !t.is_empty()) else {
        return Ok(());
    };
    let path = dir.join("CLAUDE.md");
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path);
    let mut file = match file {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(()),
        Err(e) => return Err(io(format!("create {}", path.display()))(e)),
    };
    file.write_all(format!("# {}\n\n{text}\n", name.trim()).as_bytes())
        .map_err(io(format!("write {}", path.display())))?;
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::fchown(&file, Some(uid), Some(gid))
            .map_err(io(format!("chown {}", path.display())))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
