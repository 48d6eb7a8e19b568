//! Delivery: what agents wrote to their `outbound.db`, checked and carried out.
//!
//! - this module: the drain of one session (pages of rows, retries with backoff, delayed
//!   rows, the finished frontier) and the record of each row's outcome in `inbound.db`
//!   (`delivered`), so nothing is sent twice across restarts and nothing silently dropped;
//! - [`channel`]: messages to chats: the outbound ACL ([`access::may_post_to_chat`]), the
//!   platform messages, and posting them part by part with the progress recorded;
//! - [`compose`]: turning an agent's message into platform messages (files, cards, limits);
//! - [`agents`]: messages to other agents ([`access::may_message_agent`]);
//! - [`system`]: system actions (scheduling; `create_agent` in [`creation`]).
//!
//! Rows come parsed and bounded from [`outbound`] (the edge): a row that is malformed or
//! beyond the limits is recorded `failed` with the reason, a refused route `rejected`; the
//! agent can read both in its `inbound.db`. All session I/O runs on the blocking pool with
//! short lock waits, so one session's hostile or stuck container delays only that session.
//!
//! [`access::may_post_to_chat`]: crate::access::may_post_to_chat
//! [`access::may_message_agent`]: crate::access::may_message_agent

mod agents;
mod channel;
mod compose;
mod creation;
mod system;

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::tz::TimeZone;
use nanoclaw_plugin_api::abi::{Button, Capabilities, OutboundMessage, OutboundOp};
use serde::Serialize;
use tokio::sync::Semaphore;

use nanoclaw_schema::session::DeliveryStatus;

use crate::db::Db;
use crate::error::{Error, Result};
use crate::ids::{ChannelName, ChatAddress, SessionId};
use crate::scheduling::{self, Backoff, FiringOutcome};
use crate::sessions::inbound::{self, PartState};
use crate::sessions::outbound::{self, Body, OutRow};
use crate::sessions::{Session, SessionStore};

/// Attempts for a message that keeps failing transiently before it is recorded `failed`.
pub const MAX_ATTEMPTS: u32 = 5;
/// Rows one drain pass reads; a session with more is drained again right away, after
/// other sessions had their turn.
pub const PAGE: usize = 64;
/// Rows of one session that may wait at once (delayed or retrying); beyond it, further
/// rows that would wait fail instead, so an agent cannot make the host remember without end.
pub const MAX_WAITING: usize = 256;
/// Outbound file bytes held in memory at once, over all sessions.
pub const FILE_BUDGET_BYTES: u64 = 256 * 1024 * 1024;

/// Why a plugin did not post something.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendError {
    /// Worth retrying (network, rate limit, plugin busy or restarting).
    Transient {
        message: String,
        retry_after: Option<Duration>,
    },
    /// Retrying will not help (bad input, unsupported, auth).
    Permanent(String),
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::Transient { message, .. } | SendError::Permanent(message) => {
                f.write_str(message)
            }
        }
    }
}

/// The loaded channel plugins, as delivery sees them. The daemon implements this over its
/// plugin handles; tests implement it directly.
pub trait Platforms: Send + Sync + 'static {
    /// What the channel can do, from its manifest; `None` if no plugin for it is running.
    fn capabilities(&self, channel: &ChannelName) -> Option<Capabilities>;

    /// The platform messages for one message: rendered in the platform's markup and split
    /// within its limits, by the plugin. Deterministic, so a restart resumes the same parts.
    fn prepare(
        &self,
        channel: &ChannelName,
        message: OutboundMessage,
    ) -> impl Future<Output = std::result::Result<Vec<OutboundMessage>, SendError>> + Send;

    /// Posts one prepared part, as it is; returns the platform's id for it.
    fn send(
        &self,
        channel: &ChannelName,
        message: OutboundMessage,
    ) -> impl Future<Output = std::result::Result<Option<String>, SendError>> + Send;
}

/// How handling one outbound row ended.
#[derive(Debug)]
enum Outcome {
    Delivered(Option<String>),
    Rejected(String),
    Failed(String),
    Retry {
        message: String,
        retry_after: Option<Duration>,
    },
    /// Not due yet (`deliver_after`).
    Later(Instant),
}

/// A row not finished yet, remembered until it is due.
#[derive(Debug, Clone, Copy)]
struct Waiting {
    attempts: u32,
    until: Instant,
}

/// Per-session progress in memory; the durable record is `delivered`, `delivery_parts` and
/// the frontier in `inbound.db`.
#[derive(Debug, Default)]
struct Progress {
    loaded: bool,
    /// Every row at or below this seq is finished (persisted).
    frontier: i64,
    /// Rows at or below this seq have been looked at in this run.
    scan: i64,
    /// Rows above the frontier that are not finished, by seq.
    waiting: BTreeMap<i64, Waiting>,
    /// Outbound `data_version` at the last pass, to skip passes with nothing new.
    data_version: Option<i64>,
}

/// What one drain did.
#[derive(Debug, Default)]
pub struct Drained {
    pub delivered: usize,
    pub rejected: usize,
    pub failed: usize,
    /// Sessions with newly queued messages (hand them to the writer).
    pub flush: Vec<Session>,
    /// Sessions that received a message from this one's agent (wake them).
    pub wake: Vec<Session>,
    /// When to drain this session again (retries, delayed rows, more pages).
    pub again_at: Option<Instant>,
    /// Chats that just received something from the agent (pause their typing indicator).
    pub posted_to: Vec<ChatAddress>,
    /// The container committed something since the last drain.
    pub changed: bool,
    /// Scheduled tasks of this session changed (a firing's outcome was recorded): refresh
    /// the agent's task list and the task timer.
    pub tasks_changed: bool,
    /// New agent requests (self-modification) whose approval card is to be sent.
    pub agent_requests: Vec<crate::ids::AgentRequestId>,
}

/// One row to act on, with what `inbound.db` says about it.
struct Work {
    row: OutRow,
    status: Option<DeliveryStatus>,
    parts: Vec<(usize, PartState)>,
}

pub struct Delivery<P: Platforms> {
    db: Arc<Db>,
    sessions: Arc<SessionStore>,
    platforms: Arc<P>,
    tz: TimeZone,
    progress: std::sync::Mutex<HashMap<SessionId, Arc<tokio::sync::Mutex<Progress>>>>,
    /// Outbound file bytes in memory, in KiB permits.
    file_budget: Semaphore,
    /// The install's layout, for actions that make files (`create_agent`); `None` refuses them.
    paths: Option<crate::config::Paths>,
    /// How long failed scheduled tasks wait before they run again.
    task_backoff: Backoff,
}

impl<P: Platforms> Delivery<P> {
    pub fn new(db: Arc<Db>, sessions: Arc<SessionStore>, platforms: Arc<P>, tz: TimeZone) -> Self {
        Delivery {
            db,
            sessions,
            platforms,
            tz,
            progress: Default::default(),
            file_budget: Semaphore::new((FILE_BUDGET_BYTES / 1024) as usize),
            paths: None,
            task_backoff: Backoff::default(),
        }
    }

    /// Where the install's files are (agent folders for `create_agent`).
    pub fn with_paths(mut self, paths: crate::config::Paths) -> Self {
        self.paths = Some(paths);
        self
    }

    pub fn with_task_backoff(mut self, backoff: Backoff) -> Self {
        self.task_backoff = backoff;
        self
    }

    fn progress(&self, id: &SessionId) -> Arc<tokio::sync::Mutex<Progress>> {
        let mut map = self.progress.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(id.clone()).or_default().clone()
    }

    /// Forgets in-memory progress of a session (it is re-derived from `inbound.db`).
    pub fn forget(&self, id: &SessionId) {
        self.progress
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
    }

    /// Runs session I/O on the blocking pool.
    async fn io<T: Send + 'static>(
        &self,
        f: impl FnOnce(&SessionStore) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let sessions = self.sessions.clone();
        tokio::task::spawn_blocking(move || f(&sessions))
            .await
            .map_err(|e| Error::invalid(format!("session I/O task failed: {e}")))?
    }

    /// Syncs the container's acks and delivers what is due in one session: one page of new
    /// rows plus the waiting rows that came due. Concurrent drains of one session run one
    /// after the other.
    pub async fn drain(&self, session: &Session) -> Result<Drained> {
        let progress = self.progress(&session.id);
        let mut p = progress.lock().await;
        let mut out = Drained::default();
        let now = Instant::now();
        let s = session.clone();
        let loaded = p.loaded;
        let (version, frontier) = self
            .io(move |ss| {
                let version = ss.with_outbound(&s, outbound::data_version)?;
                let frontier = if loaded {
                    None
                } else {
                    Some(ss.with_inbound(&s, |c| inbound::frontier(c))?)
                };
                Ok((version, frontier))
            })
            .await?;
        if let Some(f) = frontier {
            p.loaded = true;
            p.frontier = f;
            p.scan = f;
        }
        out.changed = p.data_version != Some(version);
        let due: Vec<i64> = p
            .waiting
            .iter()
            .filter(|(_, w)| w.until <= now)
            .map(|(seq, _)| *seq)
            .collect();
        if !out.changed && due.is_empty() {
            out.again_at = p.waiting.values().map(|w| w.until).min();
            return Ok(out);
        }

        let s = session.clone();
        let scan = p.scan;
        let (work, page_full, firings) = self
            .io(move |ss| {
                let firings = sync_acks(ss, &s)?;
                let mut rows = Vec::new();
                for seq in due {
                    rows.extend(ss.with_outbound(&s, |r| outbound::rows_at(r, seq))?);
                }
                let page = ss.with_outbound(&s, |r| outbound::page_after(r, scan, PAGE))?;
                let full = page.len() == PAGE;
                rows.extend(page);
                let work = ss.with_inbound(&s, |c| {
                    rows.into_iter()
                        .map(|row| {
                            let key = row.key.as_string();
                            Ok(Work {
                                status: inbound::delivery_status(c, &key)?,
                                parts: inbound::parts(c, &key)?,
                                row,
                            })
                        })
                        .collect::<Result<Vec<_>>>()
                })?;
                Ok((work, full, firings))
            })
            .await?;
        self.record_firings(session, firings, &mut out);

        for w in work {
            p.scan = p.scan.max(w.row.seq);
            if w.status.is_some() {
                p.waiting.remove(&w.row.seq);
                continue;
            }
            let attempts = p.waiting.get(&w.row.seq).map_or(0, |x| x.attempts);
            let outcome = self.handle(session, &w, &mut out).await;
            let waiting = p.waiting.len() >= MAX_WAITING && !p.waiting.contains_key(&w.row.seq);
            match self
                .finish(session, &w.row, outcome, attempts, waiting, &mut out)
                .await?
            {
                Some(wait) => {
                    p.waiting.insert(w.row.seq, wait);
                }
                None => {
                    p.waiting.remove(&w.row.seq);
                }
            }
        }

        let frontier = match p.waiting.keys().next() {
            Some(first) => first - 1,
            None => p.scan,
        }
        .max(p.frontier);
        if frontier != p.frontier {
            p.frontier = frontier;
            let s = session.clone();
            self.io(move |ss| ss.with_inbound(&s, |c| inbound::set_frontier(c, frontier)))
                .await?;
        }
        p.data_version = Some(version);
        out.again_at = p.waiting.values().map(|w| w.until).min();
        if page_full {
            // More rows wait: come back at once, after other sessions had a turn.
            out.again_at = Some(Instant::now());
            p.data_version = None;
        }
        Ok(out)
    }

    /// Records on their tasks how the session's finished task firings ended.
    fn record_firings(
        &self,
        session: &Session,
        firings: Vec<(String, FiringOutcome)>,
        out: &mut Drained,
    ) {
        for (id, outcome) in firings {
            let recorded = scheduling::record_outcome(
                &self.db,
                &session.id,
                &id,
                &outcome,
                jiff::Timestamp::now(),
                &self.task_backoff,
            );
            match recorded {
                Ok(Some(r)) => {
                    out.tasks_changed = true;
                    if r.queued_note() {
                        out.flush.push(session.clone());
                        out.wake.push(session.clone());
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::error!(session = %session.id, message = id, error = %e,
                        "outcome of a task firing not recorded")
                }
            }
        }
    }

    async fn handle(&self, session: &Session, w: &Work, out: &mut Drained) -> Outcome {
        let row = &w.row;
        let body = match &row.body {
            Ok(body) => body,
            Err(why) => return Outcome::Failed(why.clone()),
        };
        if let Some(after) = row.deliver_after
            && after > jiff::Timestamp::now()
        {
            let wait: Duration = after
                .duration_since(jiff::Timestamp::now())
                .try_into()
                .unwrap_or(Duration::from_secs(1));
            return Outcome::Later(Instant::now() + wait);
        }
        match body {
            Body::System(action) => self.apply_system(session, row, action, out).await,
            Body::Chat { to, op } => match to {
                outbound::To::Agent(target) => {
                    match self.to_agent(session, row, target, op, out).await {
                        Ok(outcome) => outcome,
                        Err(e) => Outcome::Retry {
                            message: e.to_string(),
                            retry_after: None,
                        },
                    }
                }
                outbound::To::Chat { chat, thread } => {
                    self.to_channel(session, row, chat, thread.as_deref(), op, &w.parts, out)
                        .await
                }
            },
        }
    }

    /// Records a final outcome, or says how long the row waits. `full`: the session already
    /// has [`MAX_WAITING`] rows waiting.
    async fn finish(
        &self,
        session: &Session,
        row: &OutRow,
        outcome: Outcome,
        attempts: u32,
        full: bool,
        out: &mut Drained,
    ) -> Result<Option<Waiting>> {
        let key = row.key.as_string();
        let (status, platform_id, error) = match outcome {
            Outcome::Delivered(id) => {
                out.delivered += 1;
                (DeliveryStatus::Delivered, id, None)
            }
            Outcome::Rejected(why) => {
                tracing::error!(session = %session.id, message = key, reason = why, "delivery refused");
                out.rejected += 1;
                (DeliveryStatus::Rejected, None, Some(why))
            }
            Outcome::Failed(why) => {
                tracing::warn!(session = %session.id, message = key, reason = why, "agent's message not delivered");
                out.failed += 1;
                (DeliveryStatus::Failed, None, Some(why))
            }
            Outcome::Later(_) | Outcome::Retry { .. } if full => {
                out.failed += 1;
                let why = format!(
                    "more than {MAX_WAITING} of this session's messages are waiting; this one was dropped"
                );
                tracing::warn!(session = %session.id, message = key, reason = why, "agent's message not delivered");
                (DeliveryStatus::Failed, None, Some(why))
            }
            Outcome::Later(until) => return Ok(Some(Waiting { attempts, until })),
            Outcome::Retry {
                message,
                retry_after,
            } => {
                let attempts = attempts + 1;
                if attempts >= MAX_ATTEMPTS {
                    tracing::error!(session = %session.id, message = key, attempts, error = message,
                        "delivery failed; giving up");
                    out.failed += 1;
                    (
                        DeliveryStatus::Failed,
                        None,
                        Some(format!("after {attempts} attempts: {message}")),
                    )
                } else {
                    let backoff = retry_after.unwrap_or(Duration::from_secs(1 << attempts.min(6)));
                    tracing::warn!(session = %session.id, message = key, attempts, error = message,
                        retry_in = ?backoff, "delivery failed; will retry");
                    return Ok(Some(Waiting {
                        attempts,
                        until: Instant::now() + backoff,
                    }));
                }
            }
        };
        let s = session.clone();
        self.io(move |ss| {
            ss.with_inbound(&s, |c| {
                inbound::record_delivery(c, &key, platform_id.as_deref(), status, error.as_deref())
            })
        })
        .await?;
        Ok(None)
    }

    /// Posts a message the host itself composed (a refusal, an approval card) straight to a
    /// chat, without an agent or an outbound row; returns the first part's platform id.
    pub async fn send_direct(
        &self,
        chat: &ChatAddress,
        thread_id: Option<&str>,
        text: &str,
        buttons: &[(String, String)],
    ) -> std::result::Result<Option<String>, SendError> {
        let Some(capabilities) = self.platforms.capabilities(&chat.channel) else {
            return Err(SendError::Transient {
                message: format!("no {} plugin is running", chat.channel),
                retry_after: None,
            });
        };
        let mut text = text.to_string();
        let buttons = if buttons.is_empty() || capabilities.contains(Capabilities::BUTTONS) {
            buttons
                .iter()
                .map(|(id, label)| Button {
                    id: id.as_str().into(),
                    label: label.as_str().into(),
                })
                .collect()
        } else {
            let labels: Vec<_> = buttons.iter().map(|(_, l)| l.as_str()).collect();
            text.push_str(&format!("\n\nOptions: {}", labels.join(", ")));
            Vec::new()
        };
        let message = OutboundMessage {
            op: OutboundOp::SEND,
            chat_id: chat.platform_id.as_str().into(),
            thread_id: thread_id.map(Into::into).into(),
            text: text.into(),
            buttons: buttons.into(),
            ..Default::default()
        };
        let mut first_id = None;
        for part in self.platforms.prepare(&chat.channel, message).await? {
            let id = self.platforms.send(&chat.channel, part).await?;
            first_id = first_id.or(id);
        }
        Ok(first_id)
    }
}

/// Copies finished acks into `inbound.db` so the host knows what is done. Returns how the
/// scheduled-task firings among them ended (only ids the host queued are looked at).
fn sync_acks(sessions: &SessionStore, s: &Session) -> Result<Vec<(String, FiringOutcome)>> {
    let pending = sessions.with_inbound(s, |c| inbound::pending_ids(c))?;
    if pending.is_empty() {
        return Ok(Vec::new());
    }
    let done = sessions.with_outbound(s, |r| outbound::finished_among(r, &pending))?;
    let firings = sessions.with_inbound(s, |c| inbound::task_firings_among(c, &done))?;
    let mut outcomes = Vec::with_capacity(firings.len());
    if !firings.is_empty() {
        let failed = sessions.with_outbound(s, |r| outbound::failed_among(r, &firings))?;
        for id in firings {
            let outcome = if failed.contains(&id) {
                // The runner posts the provider's error as its reply to the firing.
                let said = sessions
                    .with_outbound(s, |r| outbound::last_reply_text(r, &id, TASK_ERROR_CHARS))?;
                FiringOutcome::Failed {
                    error: match said {
                        Some(text) => format!("the agent's turn failed: {text}"),
                        None => "the agent's turn failed".to_string(),
                    },
                }
            } else {
                FiringOutcome::Completed
            };
            outcomes.push((id, outcome));
        }
    }
    sessions.with_inbound(s, |c| inbound::mark_completed(c, &done))?;
    Ok(outcomes)
}

/// How much of the agent's error reply a failed task keeps.
const TASK_ERROR_CHARS: usize = 240;

/// Counts of outbound outcomes, for reports.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct Totals {
    pub delivered: usize,
    pub rejected: usize,
    pub failed: usize,
}

#[cfg(test)]
mod tests;
