//! System rows: actions an agent asks the host to apply (scheduling, `create_agent`). The
//! host applies them to its own records for that session only, then tells the agent how it
//! went.

use nanoclaw_schema::session::content::SystemAction;

use super::{Delivery, Drained, Outcome, Platforms};
use crate::agent_creation::{self, Applied, Refusal};
use crate::scheduling;
use crate::sessions::Session;
use crate::sessions::outbound::OutRow;

impl<P: Platforms> Delivery<P> {
    pub(super) async fn apply_system(
        &self,
        session: &Session,
        row: &OutRow,
        action: &SystemAction,
        out: &mut Drained,
    ) -> Outcome {
        if let SystemAction::CreateAgent { name, instructions } = action {
            return self
                .create_agent(session, row, name, instructions.as_deref(), out)
                .await;
        }
        let note_id = format!("note-{}", row.key);
        match scheduling::apply(&self.db, session, action, &self.tz, &note_id) {
            Ok(applied) => {
                tracing::info!(session = %session.id, action = action.name(), ok = applied.ok,
                    note = applied.note, "system action applied");
                let (db, s) = (self.db.clone(), session.clone());
                if let Err(e) = self.io(move |ss| scheduling::project(&db, ss, &s)).await {
                    tracing::warn!(session = %session.id, error = %e,
                        "task list of the session not refreshed now; it is with the next change");
                }
                out.flush.push(session.clone());
                Outcome::Delivered(None)
            }
            Err(e) => Outcome::Retry {
                message: e.to_string(),
                retry_after: None,
            },
        }
    }

    async fn create_agent(
        &self,
        session: &Session,
        row: &OutRow,
        name: &str,
        instructions: Option<&str>,
        out: &mut Drained,
    ) -> Outcome {
        let Some(paths) = self.paths.clone() else {
            return Outcome::Failed("this host does not create agents".into());
        };
        let (db, s, key) = (self.db.clone(), session.clone(), row.key.as_string());
        let (reply_to, name) = (row.in_reply_to.clone(), name.to_string());
        let instructions = instructions.map(str::to_string);
        let applied = self
            .io(move |ss| {
                agent_creation::apply(
                    &db,
                    ss,
                    &paths,
                    &s,
                    &key,
                    reply_to.as_deref(),
                    &name,
                    instructions.as_deref(),
                )
            })
            .await;
        match applied {
            Ok(applied) => {
                out.flush.push(session.clone());
                match applied {
                    Applied::Created { .. } => Outcome::Delivered(None),
                    Applied::Refused(Refusal::NotAdmin { detail }) => {
                        tracing::warn!(session = %session.id, message = %row.key, detail,
                            "create_agent refused: not asked by an admin");
                        Outcome::Rejected(agent_creation::NOT_ADMIN.to_string())
                    }
                    Applied::Refused(r) => {
                        tracing::warn!(session = %session.id, message = %row.key, reason = %r,
                            "create_agent refused");
                        Outcome::Failed(r.to_string())
                    }
                }
            }
            Err(e) => Outcome::Retry {
                message: e.to_string(),
                retry_after: None,
            },
        }
    }
}
