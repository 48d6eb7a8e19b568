//! Messages to chats: the outbound ACL, then the platform messages posted one part at a time
//! with the progress recorded around each platform call.
//!
//! Before each call the intent is recorded (`sending`), after it the platform's id (`sent`).
//! A restart resumes after the parts already sent; a part left `sending` (the host died or
//! timed out during the call, so the platform may or may not have it) is posted again, with
//! the same idempotency key, which platforms that honour one use to drop the repeat.

use nanoclaw_plugin_api::abi::OutboundMessage;

use super::compose::Composed;
use super::{Delivery, Drained, Outcome, Platforms, SendError};
use crate::access;
use crate::ids::ChatAddress;
use crate::questions;
use crate::sessions::Session;
use crate::sessions::inbound::{self, PartState};
use crate::sessions::outbound::{ChatOp, OutRow};

impl<P: Platforms> Delivery<P> {
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn to_channel(
        &self,
        session: &Session,
        row: &OutRow,
        chat: &ChatAddress,
        thread: Option<&str>,
        op: &ChatOp,
        progress: &[(usize, PartState)],
        out: &mut Drained,
    ) -> Outcome {
        match self.db.read(|c| access::may_post_to_chat(c, session, chat)) {
            Ok(Ok(_)) => {}
            Ok(Err(denied)) => return Outcome::Rejected(denied.0),
            Err(e) => {
                return Outcome::Retry {
                    message: format!("could not check the route: {e}"),
                    retry_after: None,
                };
            }
        }
        if let ChatOp::Edit { message_id, .. } | ChatOp::React { message_id, .. } = op {
            let (s, ch, id, mid) = (
                session.clone(),
                chat.channel.to_string(),
                chat.platform_id.to_string(),
                message_id.clone(),
            );
            match self
                .io(move |ss| ss.with_inbound(&s, |c| inbound::knows_message(c, &ch, &id, &mid)))
                .await
            {
                Ok(true) => {}
                Ok(false) => {
                    return Outcome::Rejected(format!(
                        "message {message_id} is not one of this conversation's messages in {chat}"
                    ));
                }
                Err(e) => {
                    return Outcome::Retry {
                        message: format!("could not check the message id: {e}"),
                        retry_after: None,
                    };
                }
            }
        }
        let Some(capabilities) = self.platforms.capabilities(&chat.channel) else {
            return Outcome::Retry {
                message: format!("no {} plugin is running", chat.channel),
                retry_after: None,
            };
        };
        let composed = match self
            .compose(session, row, chat, thread, op, capabilities)
            .await
        {
            Ok(c) => c,
            Err(outcome) => return outcome,
        };
        let Composed {
            parts,
            card,
            _budget,
        } = composed;
        let key = row.key.as_string();
        let mut first_id = None;
        let mut done = 0;
        let last = parts.len().saturating_sub(1);
        for (n, part) in parts.into_iter().enumerate() {
            match progress.iter().find(|(p, _)| *p == n).map(|(_, s)| s) {
                Some(PartState::Sent(id)) => {
                    first_id = first_id.or_else(|| id.clone());
                    done += 1;
                    continue;
                }
                Some(PartState::Sending) => {
                    tracing::warn!(session = %session.id, message = key, part = n,
                    "this part may have been posted before the host stopped; posting it again")
                }
                None => {}
            }
            let part = with_idempotency_key(part, session.id.as_str(), &key, n);
            let (s, k) = (session.clone(), key.clone());
            if let Err(e) = self
                .io(move |ss| ss.with_inbound(&s, |c| inbound::part_sending(c, &k, n)))
                .await
            {
                return Outcome::Retry {
                    message: format!("could not record progress: {e}"),
                    retry_after: None,
                };
            }
            match self.platforms.send(&chat.channel, part).await {
                Ok(id) => {
                    done += 1;
                    first_id = first_id.or(id.clone());
                    if n == last {
                        // The row's outcome, recorded next, stands for its last part.
                        break;
                    }
                    let (s, k, pid) = (session.clone(), key.clone(), id.clone());
                    if let Err(e) = self
                        .io(move |ss| {
                            ss.with_inbound(&s, |c| inbound::part_sent(c, &k, n, pid.as_deref()))
                        })
                        .await
                    {
                        // The part is out; the record says `sending`, so a retry posts it again.
                        return Outcome::Retry {
                            message: format!("could not record progress: {e}"),
                            retry_after: None,
                        };
                    }
                }
                Err(SendError::Permanent(e)) if done == 0 => return Outcome::Failed(e),
                Err(SendError::Permanent(e)) => {
                    return Outcome::Failed(format!("only {done} part(s) were sent: {e}"));
                }
                Err(SendError::Transient {
                    message,
                    retry_after,
                }) => {
                    return Outcome::Retry {
                        message,
                        retry_after,
                    };
                }
            }
        }
        if let Some(card) = card
            && let Err(e) = self
                .db
                .write(|c| questions::card_posted(c, &card, first_id.as_deref()))
        {
            tracing::warn!(session = %session.id, error = %e, "question card not recorded");
        }
        out.posted_to.push(chat.clone());
        if let (ChatOp::Send { files, .. }, Some(id)) = (op, row.key.id())
            && !files.is_empty()
        {
            let (s, id) = (session.clone(), id.clone());
            let _ = self
                .io(move |ss| {
                    ss.session_dir(&s)?.remove_outbox(&id);
                    Ok(())
                })
                .await;
        }
        Outcome::Delivered(first_id)
    }
}

/// Platforms that can drop a repeated post (a part re-sent after a crash) use this key.
fn with_idempotency_key(
    mut m: OutboundMessage,
    session: &str,
    key: &str,
    part: usize,
) -> OutboundMessage {
    let mut extra: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(m.extra_json.as_str()).unwrap_or_default();
    extra.insert(
        "idempotency_key".into(),
        serde_json::Value::String(format!("{session}/{key}/{part}")),
    );
    m.extra_json = serde_json::Value::Object(extra).to_string().into();
    m
}
