//! `create_agent` rows: applied by [`agent_creation`] off the async workers, with the
//! outcome recorded for the row (refused when no admin asked: `rejected`).

use super::{Delivery, Drained, Outcome, Platforms};
use crate::agent_creation::{self, Applied, Refusal};
use crate::sessions::Session;
use crate::sessions::outbound::OutRow;

impl<P: Platforms> Delivery<P> {
    pub(super) async fn create_agent(
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
