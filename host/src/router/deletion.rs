//! Someone deleted a message they had sent: take it back before its agent reads it, or tell
//! the agent it is gone. A held message (waiting for an approver or for its chat to be
//! wired) is forgotten, so an approval never replays what its sender took back.

use super::{RouteOutcome, Routed, Router, row_id};
use crate::error::{Error, Result};
use crate::ids::{ChannelName, PlatformId};
use crate::sessions::inbound::{Insert, Withdrawal};
use crate::sessions::queue;
use crate::sessions::{Session, registry, withdrawal};
use crate::store::{self, messaging_groups, wirings};

/// A deletion, as a plugin reports it (ids raw, not namespaced).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deletion {
    pub channel: ChannelName,
    pub chat_id: PlatformId,
    pub thread_id: Option<String>,
    pub message_id: String,
}

impl Router {
    /// Takes a deleted message back from every session it reached. What an agent already
    /// read becomes a note (no wake) telling it so. Idempotent: a redelivered deletion
    /// changes nothing more. Returns notes queued for the writer like routed messages.
    pub fn withdraw(&self, d: &Deletion) -> Result<RouteOutcome> {
        let message_id = d.message_id.trim();
        if message_id.is_empty() {
            return Err(Error::invalid("a deletion needs the deleted message's id"));
        }
        let (targets, forgotten) = self.db.write(|tx| {
            let Some(chat) = messaging_groups::find(tx, &d.channel, &d.chat_id)? else {
                return Ok((Vec::new(), 0));
            };
            let mut forgotten = 0;
            for table in ["held_messages", "chat_request_held"] {
                forgotten += store::forget_held(tx, table, &d.channel, &d.chat_id, message_id)?;
            }
            // The sessions a message of this chat can have reached (see `session_for`).
            let mut sessions: Vec<Session> = Vec::new();
            for w in wirings::for_chat(tx, &chat.id)? {
                let agent = &w.agent_group_id;
                let found = [
                    registry::find_active(tx, agent, Some(&chat.id), d.thread_id.as_deref())?,
                    registry::find_active(tx, agent, Some(&chat.id), None)?,
                    registry::newest_active(tx, agent)?,
                ];
                for s in found.into_iter().flatten() {
                    if !sessions.iter().any(|k| k.id == s.id) {
                        sessions.push(s);
                    }
                }
            }
            let mut targets = Vec::new();
            for s in sessions {
                let id = row_id(&d.channel, &d.chat_id, message_id, &s.agent_group_id);
                // Still in the central queue: it never reached the session.
                if queue::remove(tx, &s.id, &id)? {
                    forgotten += 1;
                } else {
                    targets.push((s, id));
                }
            }
            Ok((targets, forgotten))
        })?;

        let mut outcome = RouteOutcome::default();
        let (mut withdrawn, mut noted, mut waiting) = (forgotten, 0, 0);
        for (session, id) in targets {
            match withdrawal::take_back(&self.sessions, &session, &id, withdrawal::Wait::No) {
                Ok(Withdrawal::Absent) => {}
                Ok(Withdrawal::Withdrawn) => withdrawn += 1,
                Ok(Withdrawal::Taken { seq }) => {
                    noted += 1;
                    self.note(&session, &id, seq, &mut outcome)?;
                }
                // Busy (its container may hold it): the writer takes it back later. The
                // other sessions go on.
                Err(e) => {
                    tracing::debug!(session = %session.id, error = %e, "session DB busy; withdrawal queued");
                    self.db.write(|tx| withdrawal::push(tx, &session.id, &id))?;
                    waiting += 1;
                    outcome.to_flush.push(session);
                }
            }
        }
        tracing::info!(
            channel = %d.channel,
            chat = %d.chat_id,
            message = message_id,
            withdrawn,
            noted,
            waiting,
            "message deleted by its sender"
        );
        Ok(outcome)
    }

    /// Tells the agent (with its next turn, no wake) that message `seq` was deleted.
    fn note(
        &self,
        session: &Session,
        id: &str,
        seq: i64,
        outcome: &mut RouteOutcome,
    ) -> Result<()> {
        let row = withdrawal::note(id, seq);
        let queued = match self.sessions.try_insert(session, &row) {
            Ok(Insert::Inserted { .. }) => false,
            Ok(Insert::Duplicate) => return Ok(()),
            Err(e) => {
                tracing::debug!(session = %session.id, error = %e, "session DB busy; deletion note queued");
                if !self.db.write(|tx| queue::push(tx, &session.id, &row))? {
                    return Ok(());
                }
                true
            }
        };
        outcome.routed.push(Routed {
            session: session.clone(),
            message_id: row.id,
            trigger: false,
            queued,
        });
        Ok(())
    }
}
