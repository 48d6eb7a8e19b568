//! System rows: actions an agent asks the host to apply (scheduling, `create_agent`). The
//! host applies them to its own records for that session only, then tells the agent how it
//! went.

use nanoclaw_schema::session::content::SystemAction;

use super::{Delivery, Drained, Outcome, Platforms};
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
}
