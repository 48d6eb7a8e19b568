//! System rows: actions an agent asks the host to apply. Scheduling actions change the
//! host's records for that session only, then the agent is told how it went; `create_agent`
//! is re-checked and applied by `agent_creation`; requests to change the agent itself
//! (packages, MCP servers) go to `self_mod` and wait for an approver.

use nanoclaw_schema::session::content::SystemAction;

use super::{Delivery, Drained, Outcome, Platforms};
use crate::scheduling;
use crate::self_mod;
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
        if self_mod::change_of(action).is_some() {
            return match self_mod::submit(&self.db, session, action, &row.key.as_string()) {
                Ok(submitted) => {
                    if let self_mod::Submitted::Ask(id) = submitted {
                        out.agent_requests.push(id);
                    }
                    // A refusal note may be waiting for the writer.
                    out.flush.push(session.clone());
                    Outcome::Delivered(None)
                }
                Err(e) => Outcome::Retry {
                    message: e.to_string(),
                    retry_after: None,
                },
            };
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
                // The task timer looks again: a new or resumed task may be due soon.
                out.tasks_changed = true;
                Outcome::Delivered(None)
            }
            Err(e) => Outcome::Retry {
                message: e.to_string(),
                retry_after: None,
            },
        }
    }
}
