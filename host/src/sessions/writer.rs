//! The session writer: moves each session's queued messages from the central
//! [`inbound_queue`](super::queue) into its `inbound.db`.
//!
//! One flush per session at a time (requests while one runs make it go round again), on the
//! blocking pool, never under the central lock. A session DB its container holds locked is
//! retried with backoff; after [`STUCK_AFTER`] the writer reports it, and the daemon stops
//! that container (its locks die with it). Other sessions never wait for it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::inbound::{self, Insert, Withdrawal};
use super::queue::{self, Queued};
use super::withdrawal;
use super::{Session, SessionStore};
use crate::db::Db;
use crate::error::Result;
use crate::ids::SessionId;

/// Rows moved per transaction.
pub const BATCH: usize = 256;
/// How long a session DB may stay locked before the writer says so.
pub const STUCK_AFTER: Duration = Duration::from_secs(10);
const RETRY_FIRST: Duration = Duration::from_millis(50);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// What one flush did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Flushed {
    pub written: usize,
    /// Redeliveries of messages the session already had (ignored).
    pub duplicates: usize,
    /// Deleted messages taken back (see [`withdrawal`]).
    pub withdrawn: usize,
}

/// Moves every queued message of `s` into its `inbound.db`, then applies the withdrawals
/// waiting for it. Blocking.
pub fn flush(db: &Db, sessions: &SessionStore, s: &Session) -> Result<Flushed> {
    let mut total = Flushed::default();
    loop {
        write_queued(db, sessions, s, &mut total)?;
        // A withdrawal may queue a note: written on the next round.
        if !take_back_waiting(db, sessions, s, &mut total)? {
            break;
        }
    }
    Ok(total)
}

fn write_queued(db: &Db, sessions: &SessionStore, s: &Session, total: &mut Flushed) -> Result<()> {
    loop {
        let rows = db.read(|c| queue::peek(c, &s.id, BATCH))?;
        let Some(&(upto, _)) = rows.last() else {
            return Ok(());
        };
        let full = rows.len() == BATCH;
        let batch: Vec<Queued> = rows.into_iter().map(|(_, q)| q).collect();
        let results = sessions.with_inbound(s, |c| inbound::insert_batch(c, &batch))?;
        db.write(|c| queue::remove_upto(c, &s.id, upto))?;
        for r in results {
            match r {
                Insert::Inserted { .. } => total.written += 1,
                Insert::Duplicate => total.duplicates += 1,
            }
        }
        if !full {
            return Ok(());
        }
    }
}

/// Applies waiting withdrawals; true when there is more to do (a note was queued, or a full
/// batch was taken).
fn take_back_waiting(
    db: &Db,
    sessions: &SessionStore,
    s: &Session,
    total: &mut Flushed,
) -> Result<bool> {
    let ids = db.read(|c| withdrawal::waiting(c, &s.id, BATCH))?;
    let mut more = ids.len() == BATCH;
    for id in ids {
        let taken = withdrawal::take_back(sessions, s, &id, withdrawal::Wait::Briefly)?;
        db.write(|c| {
            if let Withdrawal::Taken { seq } = taken {
                more |= queue::push(c, &s.id, &withdrawal::note(&id, seq))?;
            }
            withdrawal::remove(c, &s.id, &id)
        })?;
        total.withdrawn += 1;
    }
    Ok(more)
}

/// Something the daemon should act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriterNotice {
    /// The session's `inbound.db` has stayed locked this long: its container holds it.
    Stuck {
        session: SessionId,
        locked_for: Duration,
    },
}

#[derive(Default)]
struct Running {
    again: bool,
}

/// Schedules flushes, one at a time per session.
pub struct Writer {
    db: Arc<Db>,
    sessions: Arc<SessionStore>,
    running: Mutex<HashMap<SessionId, Running>>,
    notices: mpsc::UnboundedSender<WriterNotice>,
}

impl Writer {
    pub fn new(
        db: Arc<Db>,
        sessions: Arc<SessionStore>,
        notices: mpsc::UnboundedSender<WriterNotice>,
    ) -> Arc<Writer> {
        Arc::new(Writer {
            db,
            sessions,
            running: Mutex::new(HashMap::new()),
            notices,
        })
    }

    /// Flushes `s` soon (now, or right after the flush already running).
    pub fn schedule(self: &Arc<Self>, s: Session) {
        {
            let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(r) = running.get_mut(&s.id) {
                r.again = true;
                return;
            }
            running.insert(s.id.clone(), Running::default());
        }
        let w = self.clone();
        tokio::spawn(async move { w.run(s).await });
    }

    /// Whether a flush of `id` is running or due.
    pub fn is_busy(&self, id: &SessionId) -> bool {
        self.running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(id)
    }

    async fn run(self: Arc<Self>, s: Session) {
        let mut delay = RETRY_FIRST;
        let mut failing_since: Option<Instant> = None;
        let mut reported = false;
        loop {
            let (db, sessions, session) = (self.db.clone(), self.sessions.clone(), s.clone());
            let result = tokio::task::spawn_blocking(move || flush(&db, &sessions, &session)).await;
            match result {
                Ok(Ok(done)) => {
                    if let Some(since) = failing_since.take() {
                        tracing::info!(session = %s.id, after = ?since.elapsed(), "session messages written again");
                    }
                    if done.written > 0 {
                        tracing::debug!(session = %s.id, written = done.written, "messages written to the session");
                    }
                    delay = RETRY_FIRST;
                    reported = false;
                    let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
                    match running.get_mut(&s.id) {
                        Some(r) if r.again => r.again = false,
                        _ => {
                            running.remove(&s.id);
                            return;
                        }
                    }
                }
                Ok(Err(e)) => {
                    let since = *failing_since.get_or_insert_with(Instant::now);
                    if delay == RETRY_FIRST {
                        tracing::warn!(session = %s.id, error = %e, "messages not written to the session yet; retrying");
                    }
                    if !reported && since.elapsed() >= STUCK_AFTER {
                        reported = true;
                        tracing::error!(session = %s.id, error = %e, locked_for = ?since.elapsed(),
                            "the session's inbound.db stays unwritable");
                        let _ = self.notices.send(WriterNotice::Stuck {
                            session: s.id.clone(),
                            locked_for: since.elapsed(),
                        });
                    }
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(RETRY_MAX);
                }
                Err(e) => {
                    tracing::error!(session = %s.id, error = %e, "session writer task failed");
                    self.running
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(&s.id);
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sessions::testing::{OneSession, one_session};
    use nanoclaw_schema::session::InKind;

    fn queued(id: &str) -> Queued {
        Queued::new(
            id,
            InKind::Chat,
            "2026-01-01T00:00:00.000Z",
            r#"{"text":"hi"}"#,
        )
    }

    #[test]
    fn queued_messages_move_once_and_redeliveries_are_ignored() {
        let OneSession {
            tmp: _tmp,
            db,
            store: sessions,
            session: s,
        } = one_session();
        for id in ["m1", "m2", "m1"] {
            db.write(|t| queue::push(t, &s.id, &queued(id))).unwrap();
        }
        let done = flush(&db, &sessions, &s).unwrap();
        assert_eq!(
            done,
            Flushed {
                written: 2,
                ..Flushed::default()
            }
        );
        assert_eq!(db.read(|c| queue::waiting(c, &s.id)).unwrap(), 0);
        // A redelivery after the first was written is queued again and ignored by the session.
        db.write(|t| queue::push(t, &s.id, &queued("m1"))).unwrap();
        let done = flush(&db, &sessions, &s).unwrap();
        assert_eq!(
            done,
            Flushed {
                duplicates: 1,
                ..Flushed::default()
            }
        );
        let seqs: Vec<i64> = sessions
            .with_inbound(&s, |c| {
                let mut st = c.prepare("SELECT seq FROM messages_in ORDER BY seq")?;
                Ok(st
                    .query_map([], |r| r.get(0))?
                    .collect::<rusqlite::Result<_>>()?)
            })
            .unwrap();
        assert_eq!(seqs, [2, 4]);
    }

    /// A deletion that found the session's DB busy waits centrally; the writer takes the
    /// message back later: a pending one silently, one the agent read with a note.
    #[test]
    fn waiting_withdrawals_are_applied_with_a_note_for_read_messages() {
        let OneSession {
            tmp: _tmp,
            db,
            store: sessions,
            session: s,
        } = one_session();
        for id in ["m1", "m2"] {
            db.write(|t| queue::push(t, &s.id, &queued(id))).unwrap();
        }
        flush(&db, &sessions, &s).unwrap();
        // The agent has read m2.
        sessions
            .with_inbound(&s, |c| {
                c.execute(
                    "UPDATE messages_in SET status = 'completed' WHERE id = 'm2'",
                    [],
                )?;
                Ok(())
            })
            .unwrap();
        for id in ["m1", "m2", "never-arrived"] {
            assert!(db.write(|t| withdrawal::push(t, &s.id, id)).unwrap());
        }
        assert!(
            !db.write(|t| withdrawal::push(t, &s.id, "m1")).unwrap(),
            "once"
        );
        assert!(
            db.read(queue::sessions_waiting).unwrap().contains(&s.id),
            "a restart finds it"
        );
        let done = flush(&db, &sessions, &s).unwrap();
        assert_eq!(done.withdrawn, 3);
        assert_eq!(done.written, 1, "the note about m2");
        let rows: Vec<(String, String, bool)> = sessions
            .with_inbound(&s, |c| {
                let mut st =
                    c.prepare("SELECT id, status, trigger FROM messages_in ORDER BY seq")?;
                Ok(st
                    .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                    .collect::<rusqlite::Result<_>>()?)
            })
            .unwrap();
        assert_eq!(
            rows,
            [
                ("m1".to_string(), "deleted".to_string(), true),
                ("m2".to_string(), "completed".to_string(), true),
                ("m2:deleted".to_string(), "pending".to_string(), false),
            ]
        );
        assert!(
            db.read(|c| withdrawal::waiting(c, &s.id, 10))
                .unwrap()
                .is_empty()
        );
        assert!(!db.read(queue::sessions_waiting).unwrap().contains(&s.id));
    }
}
