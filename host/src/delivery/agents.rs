//! Messages from one agent to another, as messages in the target agent's session.
//!
//! The route is checked ([`access::may_message_agent`]); the target session is the one this
//! conversation already talks to, decided from the central `agent_messages` ledger (never
//! from anything a container wrote), else the target's newest session, else a new one. The
//! message id is derived from the sending row, so a retry after a crash is recognised as the
//! same message. The text, and files copied into the target's inbox, are queued for the
//! target session like any inbound message.

use rusqlite::{Connection, OptionalExtension, params};

use nanoclaw_schema::session::content::{AttachmentRef, ChatIn};
use nanoclaw_schema::session::{AGENT_CHANNEL, InKind};
use nanoclaw_schema::time;

use super::{Delivery, Drained, Outcome, Platforms};
use crate::access;
use crate::error::{Error, Result};
use crate::ids::{AgentGroupId, SessionId};
use crate::sessions::dir::inbox_folder;
use crate::sessions::outbound::{ChatOp, OutRow};
use crate::sessions::queue::{self, Queued};
use crate::sessions::{Session, SessionStatus, registry};
use crate::store::agent_groups;

impl<P: Platforms> Delivery<P> {
    pub(super) async fn to_agent(
        &self,
        session: &Session,
        row: &OutRow,
        target: &AgentGroupId,
        op: &ChatOp,
        out: &mut Drained,
    ) -> Result<Outcome> {
        let ChatOp::Send { text, files } = op else {
            return Ok(Outcome::Failed(
                "only plain messages can go to another agent".into(),
            ));
        };
        let Some(key) = row.key.id() else {
            return Ok(Outcome::Failed("unusable message id".into()));
        };
        let source = &session.agent_group_id;
        if let Err(denied) = self
            .db
            .read(|c| access::may_message_agent(c, source, target))?
        {
            return Ok(Outcome::Rejected(denied.0));
        }
        let Some(source_group) = self.db.read(|c| agent_groups::get(c, source))? else {
            return Ok(Outcome::Failed("the sending agent group is gone".into()));
        };
        let target_session = self.db.write(|c| {
            match return_path(c, session, row.in_reply_to.as_deref(), target)? {
                Some(s) => Ok(s),
                None => match registry::newest_active(c, target)? {
                    Some(s) => Ok(s),
                    None => self.sessions.create(c, target, None, None),
                },
            }
        })?;
        // Stable across retries: the same row always becomes the same message.
        let id = format!("a2a-{}-{key}", session.id);
        let attachments = if files.is_empty() {
            Vec::new()
        } else {
            let (from, to, key, names, id) = (
                session.clone(),
                target_session.clone(),
                key.clone(),
                files.clone(),
                id.clone(),
            );
            match self
                .io(move |ss| {
                    let opened = match ss.session_dir(&from)?.open_outbox_files(&key, &names) {
                        Ok(f) => f,
                        Err((name, why)) => return Ok(Err(format!("file {name}: {why}"))),
                    };
                    let dir = ss.prepare(&to)?;
                    let folder = inbox_folder(&id);
                    let mut refs = Vec::new();
                    for f in opened {
                        let (name, data) = match f.read() {
                            Ok(x) => x,
                            Err(why) => return Ok(Err(format!("file: {why}"))),
                        };
                        let path = dir.write_inbox_file(&folder, &name, &data)?;
                        refs.push(AttachmentRef {
                            name: name.to_string(),
                            kind: "file".into(),
                            size: Some(data.len() as u64),
                            path: Some(path),
                            ..Default::default()
                        });
                    }
                    Ok(Ok(refs))
                })
                .await?
            {
                Ok(refs) => refs,
                Err(why) => return Ok(Outcome::Failed(why)),
            }
        };
        let content = ChatIn {
            text: text.clone(),
            sender_id: Some(source.to_string()),
            sender_name: Some(source_group.display_name().to_string()),
            attachments,
            ..Default::default()
        };
        let content = serde_json::to_string(&content).map_err(|e| Error::Json {
            context: "message".into(),
            source: e,
        })?;
        let message = Queued {
            channel_type: Some(AGENT_CHANNEL.to_string()),
            platform_id: Some(source.to_string()),
            source_session_id: Some(session.id.to_string()),
            ..Queued::new(id.clone(), InKind::Chat, time::now(), content)
        };
        self.db.write(|c| {
            queue::push(c, &target_session.id, &message)?;
            c.execute(
                "INSERT OR IGNORE INTO agent_messages (id, from_session_id, from_agent_group_id,
                    to_session_id, to_agent_group_id, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    id,
                    session.id,
                    source,
                    target_session.id,
                    target,
                    time::now()
                ],
            )?;
            Ok(())
        })?;
        tracing::info!(from = %session.id, to = %target_session.id, "message passed to another agent");
        out.flush.push(target_session.clone());
        out.wake.push(target_session);
        Ok(Outcome::Delivered(Some(id)))
    }
}

/// The session of `target` this conversation already talks to: the sender of the message
/// being answered, else the last session of `target` that wrote to this one. From the
/// host's own ledger only.
fn return_path(
    c: &Connection,
    session: &Session,
    in_reply_to: Option<&str>,
    target: &AgentGroupId,
) -> Result<Option<Session>> {
    let by_reply: Option<SessionId> = match in_reply_to {
        Some(id) => c
            .query_row(
                "SELECT from_session_id FROM agent_messages
                 WHERE id = ?1 AND to_session_id = ?2 AND from_agent_group_id = ?3",
                params![id, session.id, target],
                |r| r.get(0),
            )
            .optional()?,
        None => None,
    };
    let candidate = match by_reply {
        Some(s) => Some(s),
        None => c
            .query_row(
                "SELECT from_session_id FROM agent_messages
                 WHERE to_session_id = ?1 AND from_agent_group_id = ?2
                 ORDER BY created_at DESC LIMIT 1",
                params![session.id, target],
                |r| r.get(0),
            )
            .optional()?,
    };
    let Some(id) = candidate else {
        return Ok(None);
    };
    Ok(registry::get(c, &id)?
        .filter(|s| &s.agent_group_id == target && s.status == SessionStatus::Active))
}
