//! Scheduled tasks: agents ask for them with system actions in `outbound.db`; the schedule
//! lives in the central DB; each firing becomes a `task` message in the session's inbound.db.
//!
//! An agent can only touch tasks of its own session. Recurring tasks use cron expressions in
//! the host's time zone; a missed run (host down) fires once, then the schedule continues
//! from now.
//!
//! A firing that fails (the runner acked it `failed`, or crash recovery gave up on it) is
//! counted on the task: the task runs again after an exponential backoff, and after
//! [`MAX_CONSECUTIVE_FAILURES`] failures in a row it pauses itself and its agent is told.
//! A firing that completes, or a resume, resets the count.

use std::str::FromStr;
use std::time::Duration;

use croner::Cron;
use jiff::Timestamp;
use jiff::tz::TimeZone;
use rusqlite::{Connection, OptionalExtension, Row, params};
use serde::Serialize;

use nanoclaw_schema::session::content::{SystemAction, TaskIn};
use nanoclaw_schema::session::{AGENT_CHANNEL, InKind};
use nanoclaw_schema::time;

use crate::db::{Db, text_enum};
use crate::error::{Error, Result};
use crate::ids::{AgentGroupId, SessionId, TaskId};
use crate::sessions::queue::{self, Queued};
use crate::sessions::{Session, SessionStore, registry};
use crate::store::destinations::{self, Target};

text_enum! {
    TaskStatus, "task status" {
        Active = "active",
        Paused = "paused",
        Completed = "completed",
        Cancelled = "cancelled",
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Task {
    pub id: TaskId,
    pub session_id: SessionId,
    pub prompt: String,
    pub script: Option<String>,
    pub recurrence: Option<String>,
    pub next_run: Option<String>,
    pub status: TaskStatus,
    pub last_run: Option<String>,
    pub run_count: i64,
    /// Failed firings in a row (reset by a completed one, or a resume).
    pub consecutive_failures: i64,
    pub last_error: Option<String>,
    pub last_failure_at: Option<String>,
    /// The destination (local name) its runs are addressed to; `None`: the session's chat.
    pub destination: Option<String>,
}

const COLUMNS: &str = "id, session_id, prompt, script, recurrence, next_run, status, last_run, run_count, \
     consecutive_failures, last_error, last_failure_at, destination";
/// How many columns [`COLUMNS`] names.
const COLUMN_COUNT: usize = 13;

/// Failed firings in a row after which a task pauses itself.
pub const MAX_CONSECUTIVE_FAILURES: i64 = 3;

/// Longest stored error text of a failed firing (it may come from the agent's own reply).
const MAX_ERROR_CHARS: usize = 300;

/// Delay before a failed task runs again: `base`, doubled per failure in a row, at most `cap`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub base: Duration,
    pub cap: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            base: Duration::from_secs(60),
            cap: Duration::from_secs(60 * 60),
        }
    }
}

impl Backoff {
    /// For tests (`nanoclaw run --task-backoff-ms`): retries in moments, not minutes.
    pub fn short_for_tests(base_ms: u64) -> Self {
        let base = Duration::from_millis(base_ms.max(1));
        tracing::warn!(base_ms, "task backoff shortened for tests");
        Backoff {
            base,
            cap: base.saturating_mul(8),
        }
    }

    /// The delay after the `failures`-th failure in a row (1-based).
    pub fn after(&self, failures: i64) -> Duration {
        let doublings = u32::try_from(failures.saturating_sub(1).clamp(0, 20)).unwrap_or(20);
        self.base.saturating_mul(1u32 << doublings).min(self.cap)
    }
}

fn from_row(r: &Row<'_>) -> rusqlite::Result<Task> {
    Ok(Task {
        id: r.get(0)?,
        session_id: r.get(1)?,
        prompt: r.get(2)?,
        script: r.get(3)?,
        recurrence: r.get(4)?,
        next_run: r.get(5)?,
        status: r.get(6)?,
        last_run: r.get(7)?,
        run_count: r.get(8)?,
        consecutive_failures: r.get(9)?,
        last_error: r.get(10)?,
        last_failure_at: r.get(11)?,
        destination: r.get(12)?,
    })
}

/// Parses a cron expression (5 fields, or 6 with seconds).
pub fn parse_cron(expr: &str) -> Result<Cron> {
    Cron::from_str(expr.trim())
        .map_err(|e| Error::invalid(format!("invalid recurrence {expr:?}: {e}")))
}

/// The first occurrence of `cron` strictly after `after`, in `tz`.
pub fn next_occurrence(cron: &Cron, after: Timestamp, tz: &TimeZone) -> Result<Timestamp> {
    let start = after.to_zoned(tz.clone());
    cron.find_next_occurrence(&start, false)
        .map(|z| z.timestamp())
        .map_err(|e| Error::invalid(format!("recurrence has no next run: {e}")))
}

fn parse_time(s: &str) -> Result<Timestamp> {
    time::parse(s).ok_or_else(|| {
        Error::invalid(format!(
            "invalid time {s:?}: use ISO 8601, e.g. 2026-01-02T09:00:00Z"
        ))
    })
}

pub fn get(conn: &Connection, id: &TaskId) -> Result<Option<Task>> {
    Ok(conn
        .query_row(
            &format!("SELECT {COLUMNS} FROM scheduled_tasks WHERE id = ?1"),
            [id],
            from_row,
        )
        .optional()?)
}

/// Tasks of one session, or all.
pub fn list(conn: &Connection, session: Option<&SessionId>) -> Result<Vec<Task>> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {COLUMNS} FROM scheduled_tasks WHERE ?1 IS NULL OR session_id = ?1 ORDER BY created_at"
    ))?;
    let rows = stmt
        .query_map([session], from_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

/// A task as the operator lists it: with its agent group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ListedTask {
    #[serde(flatten)]
    pub task: Task,
    pub agent_group_id: AgentGroupId,
    /// The agent group's folder.
    pub agent: String,
}

/// Every task (of one agent group, in one status, if given), oldest first.
pub fn list_all(
    conn: &Connection,
    agent: Option<&AgentGroupId>,
    status: Option<TaskStatus>,
) -> Result<Vec<ListedTask>> {
    let cols = COLUMNS
        .split(", ")
        .map(|c| format!("t.{}", c.trim()))
        .collect::<Vec<_>>()
        .join(", ");
    let mut stmt = conn.prepare(&format!(
        "SELECT {cols}, t.agent_group_id, g.folder FROM scheduled_tasks t
         JOIN agent_groups g ON g.id = t.agent_group_id
         WHERE (?1 IS NULL OR t.agent_group_id = ?1) AND (?2 IS NULL OR t.status = ?2)
         ORDER BY t.created_at, t.id"
    ))?;
    let rows = stmt
        .query_map(params![agent, status], |r| {
            Ok(ListedTask {
                task: from_row(r)?,
                agent_group_id: r.get(COLUMN_COUNT)?,
                agent: r.get(COLUMN_COUNT + 1)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

/// The earliest run of any active task.
pub fn next_wakeup(conn: &Connection) -> Result<Option<Timestamp>> {
    let next: Option<String> = conn.query_row(
        "SELECT MIN(next_run) FROM scheduled_tasks WHERE status = 'active'",
        [],
        |r| r.get(0),
    )?;
    Ok(next.and_then(|s| time::parse(&s)))
}

/// What applying an agent's action did, as a note back to the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub ok: bool,
    pub note: String,
}

/// Applies a scheduling action emitted by `session`'s agent and queues a note for the agent
/// (`note_id`, derived from the action's row so a retry queues nothing twice), in one central
/// transaction. The note wakes the agent only if the action failed, so it can react. The
/// caller then refreshes the session's task list with [`project`].
pub fn apply(
    db: &Db,
    session: &Session,
    action: &SystemAction,
    tz: &TimeZone,
    note_id: &str,
) -> Result<Applied> {
    db.write(|c| {
        // A refused action changes nothing, even if it got half way (an update whose prompt
        // was fine but whose destination is not).
        c.execute_batch("SAVEPOINT apply_action")?;
        let result = apply_in(c, session, action, tz);
        if result.is_err() {
            c.execute_batch("ROLLBACK TO apply_action")?;
        }
        c.execute_batch("RELEASE apply_action")?;
        let applied = match result {
            Ok(note) => Applied { ok: true, note },
            Err(e @ (Error::Invalid(_) | Error::NotFound { .. } | Error::Conflict(_))) => Applied {
                ok: false,
                note: format!("{} failed: {e}", action.name()),
            },
            Err(e) => return Err(e),
        };
        queue::push(
            c,
            &session.id,
            &Queued {
                trigger: !applied.ok,
                ..Queued::note(
                    note_id,
                    action.name(),
                    Some(applied.ok),
                    applied.note.clone(),
                )
            },
        )?;
        Ok(applied)
    })
}

fn own_task(c: &Connection, session: &Session, task_id: &str) -> Result<Task> {
    let id = TaskId::parse(task_id)?;
    match get(c, &id)? {
        Some(t) if t.session_id == session.id => Ok(t),
        // Another session's task is reported exactly like a missing one.
        _ => Err(Error::not_found("task", task_id)),
    }
}

fn apply_in(
    c: &Connection,
    session: &Session,
    action: &SystemAction,
    tz: &TimeZone,
) -> Result<String> {
    let now = time::now();
    match action {
        SystemAction::ScheduleTask {
            task_id,
            prompt,
            process_after,
            recurrence,
            script,
            to,
        } => {
            let id = TaskId::parse(task_id)?;
            if prompt.trim().is_empty() {
                return Err(Error::invalid("the prompt is empty"));
            }
            let first = parse_time(process_after)?;
            if let Some(r) = recurrence {
                parse_cron(r)?;
            }
            if get(c, &id)?.is_some() {
                return Err(Error::Conflict(format!(
                    "task id {task_id:?} is already used"
                )));
            }
            let (destination, address) = task_target(c, session, to.as_deref())?;
            c.execute(
                &format!(
                    "INSERT INTO scheduled_tasks ({COLUMNS}, agent_group_id, channel_type, platform_id, thread_id,
                     created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'active', NULL, 0, 0, NULL, NULL,
                     ?7, ?8, ?9, ?10, ?11, ?12, ?12)"
                ),
                params![
                    id,
                    session.id,
                    prompt,
                    script.as_deref().filter(|s| !s.trim().is_empty()),
                    recurrence.as_deref().map(str::trim),
                    time::format(first),
                    destination,
                    session.agent_group_id,
                    address.0,
                    address.1,
                    address.2,
                    now
                ],
            )?;
            let to = destination
                .map(|d| format!(", runs sent to {d}"))
                .unwrap_or_default();
            Ok(match recurrence {
                Some(r) => format!(
                    "task {task_id} scheduled from {} repeating ({r}){to}",
                    time::format(first)
                ),
                None => format!("task {task_id} scheduled for {}{to}", time::format(first)),
            })
        }
        SystemAction::CancelTask { task_id } => {
            let t = own_task(c, session, task_id)?;
            cancel(c, &t)?;
            Ok(format!("task {task_id} cancelled"))
        }
        SystemAction::PauseTask { task_id } => {
            let t = own_task(c, session, task_id)?;
            pause(c, &t)?;
            Ok(format!("task {task_id} paused"))
        }
        SystemAction::ResumeTask { task_id } => {
            let t = own_task(c, session, task_id)?;
            resume(c, &t, tz)?;
            Ok(format!("task {task_id} resumed"))
        }
        SystemAction::UpdateTask {
            task_id,
            prompt,
            process_after,
            recurrence,
            script,
            to,
        } => {
            let t = own_task(c, session, task_id)?;
            if matches!(t.status, TaskStatus::Completed | TaskStatus::Cancelled) {
                return Err(Error::Conflict(format!("task {task_id} is {}", t.status)));
            }
            if prompt.is_none()
                && process_after.is_none()
                && recurrence.is_none()
                && script.is_none()
                && to.is_none()
            {
                return Err(Error::invalid("nothing to update"));
            }
            if let Some(p) = prompt {
                if p.trim().is_empty() {
                    return Err(Error::invalid("the prompt is empty"));
                }
                c.execute(
                    "UPDATE scheduled_tasks SET prompt = ?2 WHERE id = ?1",
                    params![t.id, p],
                )?;
            }
            if let Some(when) = process_after {
                let when = time::format(parse_time(when)?);
                c.execute(
                    "UPDATE scheduled_tasks SET next_run = ?2 WHERE id = ?1",
                    params![t.id, when],
                )?;
            }
            if let Some(r) = recurrence {
                let r = r.trim();
                if !r.is_empty() {
                    parse_cron(r)?;
                }
                c.execute(
                    "UPDATE scheduled_tasks SET recurrence = ?2 WHERE id = ?1",
                    params![t.id, (!r.is_empty()).then_some(r)],
                )?;
            }
            if let Some(s) = script {
                let s = s.trim();
                c.execute(
                    "UPDATE scheduled_tasks SET script = ?2 WHERE id = ?1",
                    params![t.id, (!s.is_empty()).then_some(s)],
                )?;
            }
            if let Some(to) = to {
                let (destination, (channel_type, platform_id, thread_id)) =
                    task_target(c, session, Some(to.as_str()))?;
                c.execute(
                    "UPDATE scheduled_tasks SET destination = ?2, channel_type = ?3, platform_id = ?4,
                     thread_id = ?5 WHERE id = ?1",
                    params![t.id, destination, channel_type, platform_id, thread_id],
                )?;
            }
            c.execute(
                "UPDATE scheduled_tasks SET updated_at = ?2 WHERE id = ?1",
                params![t.id, now],
            )?;
            Ok(format!("task {task_id} updated"))
        }
        other => Err(Error::invalid(format!(
            "{} is not an action on tasks",
            other.name()
        ))),
    }
}

/// Pauses an active task (agent or operator).
pub fn pause(c: &Connection, t: &Task) -> Result<()> {
    if t.status != TaskStatus::Active {
        return Err(Error::Conflict(format!(
            "task {} is {}, not active",
            t.id, t.status
        )));
    }
    set_status(c, &t.id, TaskStatus::Paused)
}

/// Cancels a task that may still run (agent or operator).
pub fn cancel(c: &Connection, t: &Task) -> Result<()> {
    if matches!(t.status, TaskStatus::Completed | TaskStatus::Cancelled) {
        return Err(Error::Conflict(format!(
            "task {} is already {}",
            t.id, t.status
        )));
    }
    set_status(c, &t.id, TaskStatus::Cancelled)
}

/// Resumes a paused task (agent or operator) with a clean failure count. A recurring task
/// resumes at its next occurrence from now, not in a burst; a one-shot whose time has passed
/// runs at once.
pub fn resume(c: &Connection, t: &Task, tz: &TimeZone) -> Result<()> {
    if t.status != TaskStatus::Paused {
        return Err(Error::Conflict(format!(
            "task {} is {}, not paused",
            t.id, t.status
        )));
    }
    let now = time::now();
    let next = match (&t.recurrence, &t.next_run) {
        (Some(r), Some(n)) if n.as_str() < now.as_str() => Some(time::format(next_occurrence(
            &parse_cron(r)?,
            Timestamp::now(),
            tz,
        )?)),
        (_, Some(n)) => Some(n.clone()),
        (Some(r), None) => Some(time::format(next_occurrence(
            &parse_cron(r)?,
            Timestamp::now(),
            tz,
        )?)),
        (None, None) => Some(now.clone()),
    };
    c.execute(
        "UPDATE scheduled_tasks SET status = 'active', next_run = ?2, consecutive_failures = 0,
         updated_at = ?3 WHERE id = ?1",
        params![t.id, next, now],
    )?;
    Ok(())
}

fn set_status(c: &Connection, id: &TaskId, status: TaskStatus) -> Result<()> {
    c.execute(
        "UPDATE scheduled_tasks SET status = ?2, updated_at = ?3 WHERE id = ?1",
        params![id, status, time::now()],
    )?;
    Ok(())
}

/// Where a task's runs go: the destination `to` of the session's agent (its name and
/// address), or the session's own chat when `to` is absent or empty. The outbound ACL still
/// checks every reply, so a destination removed later reaches nobody.
fn task_target(
    c: &Connection,
    session: &Session,
    to: Option<&str>,
) -> Result<(Option<String>, Address)> {
    let Some(name) = to.map(str::trim).filter(|t| !t.is_empty()) else {
        return Ok((None, routing(c, session)?));
    };
    let dest = destinations::find(c, &session.agent_group_id, name)?
        .ok_or_else(|| Error::not_found("destination", name))?;
    let address = match &dest.target {
        Target::Channel(chat_id) => {
            let chat = crate::store::messaging_groups::get(c, chat_id)?
                .ok_or_else(|| Error::not_found("destination", name))?;
            (
                Some(chat.channel_type.to_string()),
                Some(chat.platform_id.to_string()),
                None,
            )
        }
        Target::Agent(agent) => (
            Some(AGENT_CHANNEL.to_string()),
            Some(agent.to_string()),
            None,
        ),
    };
    Ok((Some(dest.local_name), address))
}

/// The reply address of a session's origin chat (tasks answer there by default).
fn routing(c: &Connection, session: &Session) -> Result<Address> {
    let Some(chat_id) = &session.messaging_group_id else {
        return Ok((None, None, None));
    };
    Ok(match crate::store::messaging_groups::get(c, chat_id)? {
        Some(chat) => (
            Some(chat.channel_type.to_string()),
            Some(chat.platform_id.to_string()),
            session.thread_id.clone(),
        ),
        None => (None, None, None),
    })
}

/// Rewrites the session's task list in its `inbound.db` (what the agent can list): read
/// from the central DB first, written after its lock is released. Blocking.
pub fn project(db: &Db, sessions: &SessionStore, session: &Session) -> Result<()> {
    let tasks = db.read(|c| list(c, Some(&session.id)))?;
    sessions.with_inbound(session, |db| {
        let tx = db.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        tx.execute("DELETE FROM scheduled_tasks", [])?;
        for t in tasks
            .iter()
            .filter(|t| matches!(t.status, TaskStatus::Active | TaskStatus::Paused))
        {
            tx.execute(
                "INSERT INTO scheduled_tasks (id, prompt, recurrence, next_run, status, destination)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![t.id, t.prompt, t.recurrence, t.next_run, t.status, t.destination],
            )?;
        }
        tx.commit()?;
        Ok(())
    })
}

/// Fires every active task due at `now`: queues its `task` message for the session and moves
/// its schedule on, in one central transaction per task (so a firing is never lost or
/// doubled). Touches no session file: a session whose DB is locked cannot stall the others.
/// Returns the sessions that got work (to write, refresh and wake).
pub fn fire_due(db: &Db, now: Timestamp, tz: &TimeZone) -> Result<Vec<Session>> {
    let now_s = time::format(now);
    let due: Vec<Task> = db.read(|c| {
        let mut stmt = c.prepare(&format!(
            "SELECT {COLUMNS} FROM scheduled_tasks WHERE status = 'active' AND next_run <= ?1 ORDER BY next_run"
        ))?;
        let rows = stmt.query_map([&now_s], from_row)?.collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    })?;
    let mut woken: Vec<Session> = Vec::new();
    for task in due {
        match db.write(|c| fire_one(c, &task, now, tz)) {
            Ok(Some(session)) => {
                if !woken.iter().any(|s| s.id == session.id) {
                    woken.push(session);
                }
            }
            Ok(None) => {}
            Err(e) => {
                tracing::error!(task = %task.id, error = %e, "scheduled task not fired; it is tried again")
            }
        }
    }
    Ok(woken)
}

fn fire_one(c: &Connection, task: &Task, now: Timestamp, tz: &TimeZone) -> Result<Option<Session>> {
    let now_s = time::format(now);
    let Some(session) = registry::get(c, &task.session_id)? else {
        return Ok(None);
    };
    if session.status != crate::sessions::SessionStatus::Active {
        tracing::info!(task = %task.id, session = %session.id, "task's session is closed; task completed");
        set_status(c, &task.id, TaskStatus::Completed)?;
        return Ok(None);
    }
    let run = task.run_count + 1;
    let content = serde_json::to_string(&TaskIn {
        task_id: task.id.to_string(),
        prompt: task.prompt.clone(),
        script: task.script.clone(),
    })
    .map_err(|e| Error::Json {
        context: "task".into(),
        source: e,
    })?;
    let (channel_type, platform_id, thread_id) = task_address(c, &task.id)?;
    queue::push(
        c,
        &session.id,
        &Queued {
            channel_type,
            platform_id,
            thread_id,
            ..Queued::new(
                format!("{}:{run}", task.id),
                InKind::Task,
                now_s.clone(),
                content,
            )
        },
    )?;
    let next = match &task.recurrence {
        Some(r) => match parse_cron(r).and_then(|cron| next_occurrence(&cron, now, tz)) {
            Ok(next) => Some(time::format(next)),
            Err(e) => {
                tracing::warn!(task = %task.id, error = %e, "recurring task stopped");
                None
            }
        },
        None => None,
    };
    c.execute(
        "UPDATE scheduled_tasks SET last_run = ?2, run_count = ?3, next_run = ?4,
         status = CASE WHEN ?4 IS NULL THEN 'completed' ELSE status END, updated_at = ?2 WHERE id = ?1",
        params![task.id, now_s, run, next],
    )?;
    tracing::info!(task = %task.id, session = %session.id, run, "scheduled task fired");
    Ok(Some(session))
}

/// Where a task's firings are addressed: `(channel type, platform id, thread id)`.
type Address = (Option<String>, Option<String>, Option<String>);

fn task_address(c: &Connection, id: &TaskId) -> Result<Address> {
    Ok(c.query_row(
        "SELECT channel_type, platform_id, thread_id FROM scheduled_tasks WHERE id = ?1",
        [id],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )?)
}

/// How one firing of a task ended, as the host saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FiringOutcome {
    Completed,
    /// `error`: what went wrong, for the operator and the agent (bounded when stored).
    Failed {
        error: String,
    },
}

/// What recording a firing's outcome did to its task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recorded {
    /// The failure count was reset.
    Succeeded,
    /// Failed; the task runs again no sooner than `next_run` (if it still runs at all).
    Failed {
        failures: i64,
        next_run: Option<String>,
    },
    /// Failed too often in a row: the task paused itself and a note was queued for the agent.
    Paused { failures: i64 },
}

impl Recorded {
    /// Whether a note for the agent was queued (the session needs a flush and a wake).
    pub fn queued_note(&self) -> bool {
        matches!(self, Recorded::Paused { .. })
    }
}

/// The task a firing message belongs to: firings are queued as `<task id>:<run>`.
pub fn task_of_firing(message_id: &str) -> Option<TaskId> {
    let (task, run) = message_id.rsplit_once(':')?;
    run.parse::<u64>().ok()?;
    TaskId::parse(task).ok()
}

/// Error text fit to store and show: one line of printable characters, bounded.
fn bounded_error(error: &str) -> String {
    let mut out: String = error
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_ERROR_CHARS)
        .collect();
    if error.chars().count() > MAX_ERROR_CHARS {
        out.push('…');
    }
    let out = out.trim().to_string();
    if out.is_empty() {
        "failed (no detail)".to_string()
    } else {
        out
    }
}

/// Records how the firing `message_id` (a `task` row the host queued in `session`) ended, in
/// one central transaction: a completion resets the failure count; a failure counts, moves
/// the task's next run out by the backoff, and at [`MAX_CONSECUTIVE_FAILURES`] pauses the
/// task and queues a note for its agent. A firing already counted, or of another session's
/// task, is ignored (`None`).
pub fn record_outcome(
    db: &Db,
    session: &SessionId,
    message_id: &str,
    outcome: &FiringOutcome,
    now: Timestamp,
    backoff: &Backoff,
) -> Result<Option<Recorded>> {
    let Some(id) = task_of_firing(message_id) else {
        return Ok(None);
    };
    db.write(|c| {
        let Some(task) = get(c, &id)? else {
            return Ok(None);
        };
        let counted: Option<String> = c.query_row(
            "SELECT last_outcome_id FROM scheduled_tasks WHERE id = ?1",
            [&task.id],
            |r| r.get(0),
        )?;
        if &task.session_id != session || counted.as_deref() == Some(message_id) {
            return Ok(None);
        }
        let now_s = time::format(now);
        let error = match outcome {
            FiringOutcome::Completed => {
                c.execute(
                    "UPDATE scheduled_tasks SET consecutive_failures = 0, last_outcome_id = ?2
                     WHERE id = ?1",
                    params![task.id, message_id],
                )?;
                return Ok(Some(Recorded::Succeeded));
            }
            FiringOutcome::Failed { error } => bounded_error(error),
        };
        let failures = task.consecutive_failures + 1;
        c.execute(
            "UPDATE scheduled_tasks SET consecutive_failures = ?2, last_error = ?3,
             last_failure_at = ?4, last_outcome_id = ?5, updated_at = ?4 WHERE id = ?1",
            params![task.id, failures, error, now_s, message_id],
        )?;
        // A one-shot completed when it fired; it comes back for another try. A task someone
        // paused or cancelled meanwhile stays as it is.
        let runs_again = match task.status {
            TaskStatus::Active => true,
            TaskStatus::Completed => task.recurrence.is_none(),
            TaskStatus::Paused | TaskStatus::Cancelled => false,
        };
        if !runs_again {
            tracing::warn!(task = %task.id, failures, error, "scheduled task failed");
            return Ok(Some(Recorded::Failed {
                failures,
                next_run: None,
            }));
        }
        let delay = jiff::SignedDuration::try_from(backoff.after(failures))
            .unwrap_or(jiff::SignedDuration::ZERO);
        let retry_at = now.checked_add(delay).unwrap_or(now);
        let next = match task.next_run.as_deref().and_then(time::parse) {
            Some(planned) if task.recurrence.is_some() => planned.max(retry_at),
            _ => retry_at,
        };
        let next_s = time::format(next);
        if failures >= MAX_CONSECUTIVE_FAILURES {
            c.execute(
                "UPDATE scheduled_tasks SET status = 'paused', next_run = ?2 WHERE id = ?1",
                params![task.id, next_s],
            )?;
            tracing::error!(task = %task.id, session = %session, failures, error,
                "scheduled task paused itself after failing repeatedly; resume it with `nanoclaw tasks resume`");
            let text = format!(
                "Task {id} was paused after {failures} failed runs in a row. Last error: {error}. \
                 Fix the cause, then resume it with resume_task (task_id \"{id}\"), or cancel it \
                 with cancel_task.",
                id = task.id
            );
            // Addressed like the task's firings, so the agent's answer reaches the same chat.
            let (channel_type, platform_id, thread_id) = task_address(c, &task.id)?;
            queue::push(
                c,
                session,
                &Queued {
                    channel_type,
                    platform_id,
                    thread_id,
                    ..Queued::note(
                        format!("task-paused-{message_id}"),
                        "task_paused",
                        Some(false),
                        text,
                    )
                },
            )?;
            return Ok(Some(Recorded::Paused { failures }));
        }
        c.execute(
            "UPDATE scheduled_tasks SET status = 'active', next_run = ?2 WHERE id = ?1",
            params![task.id, next_s],
        )?;
        tracing::warn!(task = %task.id, session = %session, failures, error, next_run = next_s,
            "scheduled task failed; it runs again after a backoff");
        Ok(Some(Recorded::Failed {
            failures,
            next_run: Some(next_s),
        }))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::{agent, chat};
    use crate::store::wirings::SessionMode;

    struct Fx {
        _tmp: tempfile::TempDir,
        db: Db,
        sessions: SessionStore,
        session: Session,
    }

    fn fx() -> Fx {
        let one = crate::sessions::testing::one_session();
        Fx {
            _tmp: one.tmp,
            db: one.db,
            sessions: one.store,
            session: one.session,
        }
    }

    fn inbound_rows(f: &Fx) -> Vec<(String, String, bool)> {
        crate::sessions::writer::flush(&f.db, &f.sessions, &f.session).unwrap();
        f.sessions
            .with_inbound(&f.session, |c| {
                let mut st = c.prepare("SELECT id, kind, trigger FROM messages_in ORDER BY seq")?;
                let rows = st
                    .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                Ok(rows)
            })
            .unwrap()
    }

    fn schedule(f: &Fx, id: &str, at: &str, recurrence: Option<&str>) -> Applied {
        let action = SystemAction::ScheduleTask {
            task_id: id.into(),
            prompt: "check the weather".into(),
            process_after: at.into(),
            recurrence: recurrence.map(str::to_string),
            script: None,
            to: None,
        };
        apply(
            &f.db,
            &f.session,
            &action,
            &TimeZone::UTC,
            &format!("note-{id}-{}", crate::ids::generate("n")),
        )
        .unwrap()
    }

    #[test]
    fn one_shot_task_fires_once_with_the_origin_address() {
        let f = fx();
        assert!(schedule(&f, "t1", "2026-01-01T09:00:00Z", None).ok);
        let before: Timestamp = "2026-01-01T08:59:59Z".parse().unwrap();
        assert!(fire_due(&f.db, before, &TimeZone::UTC).unwrap().is_empty());
        let at: Timestamp = "2026-01-01T09:00:00Z".parse().unwrap();
        let woken = fire_due(&f.db, at, &TimeZone::UTC).unwrap();
        assert_eq!(woken.len(), 1);
        let task =
            f.db.read(|c| get(c, &TaskId::parse("t1")?))
                .unwrap()
                .unwrap();
        assert_eq!(task.status, TaskStatus::Completed);
        assert!(fire_due(&f.db, at, &TimeZone::UTC).unwrap().is_empty());
        let rows = inbound_rows(&f);
        assert_eq!(
            rows.last().unwrap(),
            &("t1:1".to_string(), "task".to_string(), true)
        );
        let addr = f
            .sessions
            .with_inbound(&f.session, |c| {
                crate::sessions::inbound::reply_address(c, "t1:1")
            })
            .unwrap()
            .unwrap();
        assert_eq!(addr.channel_type.as_deref(), Some("telegram"));
        assert_eq!(addr.platform_id.as_deref(), Some("1"));
    }

    #[test]
    fn recurring_task_moves_to_the_next_occurrence() {
        let f = fx();
        schedule(&f, "daily", "2026-01-01T09:00:00Z", Some("0 9 * * *"));
        let late: Timestamp = "2026-01-03T10:30:00Z".parse().unwrap();
        fire_due(&f.db, late, &TimeZone::UTC).unwrap();
        let task =
            f.db.read(|c| get(c, &TaskId::parse("daily")?))
                .unwrap()
                .unwrap();
        assert_eq!(task.status, TaskStatus::Active);
        assert_eq!(
            task.next_run.as_deref(),
            Some("2026-01-04T09:00:00.000Z"),
            "missed runs fire once"
        );
        assert_eq!(task.run_count, 1);
        assert_eq!(
            f.db.read(next_wakeup).unwrap(),
            Some("2026-01-04T09:00:00Z".parse().unwrap())
        );
    }

    #[test]
    fn bad_actions_are_reported_to_the_agent() {
        let f = fx();
        let bad = schedule(&f, "t2", "tomorrow-ish", None);
        assert!(!bad.ok);
        assert!(bad.note.contains("invalid time"), "{}", bad.note);
        let bad_cron = schedule(&f, "t3", "2026-01-01T09:00:00Z", Some("every day"));
        assert!(
            bad_cron.note.contains("invalid recurrence"),
            "{}",
            bad_cron.note
        );
        assert!(schedule(&f, "t4", "2026-01-01T09:00:00Z", None).ok);
        assert!(
            schedule(&f, "t4", "2026-01-01T09:00:00Z", None)
                .note
                .contains("already used")
        );
        // Failures wake the agent (trigger), successes ride along quietly.
        let triggers: Vec<bool> = inbound_rows(&f)
            .iter()
            .filter(|r| r.1 == "system")
            .map(|r| r.2)
            .collect();
        assert_eq!(triggers, vec![true, true, false, true]);
    }

    #[test]
    fn agents_only_touch_their_own_tasks() {
        let f = fx();
        schedule(&f, "mine", "2026-01-01T09:00:00Z", None);
        // A second session of another agent.
        let b = agent(&f.db, "B");
        let c = chat(&f.db, "telegram:6", None, false);
        let (other, _) =
            f.db.write(|t| f.sessions.resolve(t, &b.id, &c, None, SessionMode::Shared))
                .unwrap();
        let cancel = SystemAction::CancelTask {
            task_id: "mine".into(),
        };
        let r = apply(
            &f.db,
            &other,
            &cancel,
            &TimeZone::UTC,
            &crate::ids::generate("note"),
        )
        .unwrap();
        assert!(!r.ok);
        assert!(r.note.contains("not found"), "{}", r.note);
        let r = apply(
            &f.db,
            &f.session,
            &cancel,
            &TimeZone::UTC,
            &crate::ids::generate("note"),
        )
        .unwrap();
        assert!(r.ok);
    }

    /// A task sent to another destination: its runs are addressed there (so the agent's
    /// reply goes there), the agent can list where, and moving it back works.
    #[test]
    fn a_task_can_be_addressed_to_a_destination() {
        let f = fx();
        let team = chat(&f.db, "telegram:-100", Some("team"), true);
        f.db.write(|c| {
            destinations::add(
                c,
                &f.session.agent_group_id,
                Some("team"),
                Target::Channel(team.id.clone()),
            )
        })
        .unwrap();
        let run = |a: SystemAction| {
            apply(
                &f.db,
                &f.session,
                &a,
                &TimeZone::UTC,
                &crate::ids::generate("note"),
            )
            .unwrap()
        };
        let with_to = |id: &str, to: &str| SystemAction::ScheduleTask {
            task_id: id.into(),
            prompt: "post the standup".into(),
            process_after: "2026-01-01T09:00:00Z".into(),
            recurrence: None,
            script: None,
            to: Some(to.into()),
        };
        let r = run(with_to("lost", "nowhere"));
        assert!(!r.ok && r.note.contains("nowhere"), "{}", r.note);
        assert!(
            f.db.read(|c| get(c, &TaskId::parse("lost")?))
                .unwrap()
                .is_none()
        );

        let r = run(with_to("standup", "team"));
        assert!(r.ok && r.note.contains("sent to team"), "{}", r.note);
        let id = TaskId::parse("standup").unwrap();
        let address = || f.db.read(|c| task_address(c, &id)).unwrap();
        assert_eq!(
            address(),
            (Some("telegram".into()), Some("-100".into()), None)
        );
        project(&f.db, &f.sessions, &f.session).unwrap();
        let listed: Option<String> = f
            .sessions
            .with_inbound(&f.session, |c| {
                Ok(c.query_row("SELECT destination FROM scheduled_tasks", [], |r| r.get(0))?)
            })
            .unwrap();
        assert_eq!(listed.as_deref(), Some("team"));

        let at: Timestamp = "2026-01-01T09:00:00Z".parse().unwrap();
        assert_eq!(fire_due(&f.db, at, &TimeZone::UTC).unwrap().len(), 1);
        let fired: (Option<String>, Option<String>) = {
            crate::sessions::writer::flush(&f.db, &f.sessions, &f.session).unwrap();
            f.sessions
                .with_inbound(&f.session, |c| {
                    Ok(c.query_row(
                        "SELECT channel_type, platform_id FROM messages_in WHERE kind = 'task'",
                        [],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )?)
                })
                .unwrap()
        };
        assert_eq!(fired, (Some("telegram".into()), Some("-100".into())));

        // Back to the session's own chat.
        schedule(&f, "daily", "2026-01-02T09:00:00Z", Some("0 9 * * *"));
        let back = SystemAction::UpdateTask {
            task_id: "daily".into(),
            prompt: None,
            process_after: None,
            recurrence: None,
            script: None,
            to: Some("team".into()),
        };
        assert!(run(back).ok);
        let daily = TaskId::parse("daily").unwrap();
        let t = f.db.read(|c| get(c, &daily)).unwrap().unwrap();
        assert_eq!(t.destination.as_deref(), Some("team"));
        // A refused update changes nothing, not even its valid parts.
        let half = SystemAction::UpdateTask {
            task_id: "daily".into(),
            prompt: Some("a new prompt".into()),
            process_after: None,
            recurrence: None,
            script: None,
            to: Some("nowhere".into()),
        };
        assert!(!run(half).ok);
        let t = f.db.read(|c| get(c, &daily)).unwrap().unwrap();
        assert_eq!(t.prompt, "check the weather");
        assert_eq!(t.destination.as_deref(), Some("team"));
        let home = SystemAction::UpdateTask {
            task_id: "daily".into(),
            prompt: None,
            process_after: None,
            recurrence: None,
            script: None,
            to: Some(String::new()),
        };
        assert!(run(home).ok);
        let t = f.db.read(|c| get(c, &daily)).unwrap().unwrap();
        assert_eq!(t.destination, None);
        assert_eq!(
            f.db.read(|c| task_address(c, &daily)).unwrap(),
            (Some("telegram".into()), Some("1".into()), None)
        );
    }

    #[test]
    fn pause_resume_update() {
        let f = fx();
        schedule(&f, "t", "2026-01-01T09:00:00Z", Some("0 9 * * *"));
        let s = &f.session;
        let run = |a: SystemAction| {
            apply(&f.db, s, &a, &TimeZone::UTC, &crate::ids::generate("note")).unwrap()
        };
        assert!(
            run(SystemAction::PauseTask {
                task_id: "t".into()
            })
            .ok
        );
        assert!(
            !run(SystemAction::PauseTask {
                task_id: "t".into()
            })
            .ok
        );
        let at: Timestamp = "2026-01-01T09:00:00Z".parse().unwrap();
        assert!(
            fire_due(&f.db, at, &TimeZone::UTC).unwrap().is_empty(),
            "paused tasks do not fire"
        );
        assert!(
            run(SystemAction::ResumeTask {
                task_id: "t".into()
            })
            .ok
        );
        let upd = SystemAction::UpdateTask {
            task_id: "t".into(),
            prompt: Some("new prompt".into()),
            process_after: None,
            recurrence: Some(String::new()),
            script: None,
            to: None,
        };
        assert!(run(upd).ok);
        let task =
            f.db.read(|c| get(c, &TaskId::parse("t")?))
                .unwrap()
                .unwrap();
        assert_eq!(task.prompt, "new prompt");
        assert_eq!(task.recurrence, None);
        project(&f.db, &f.sessions, s).unwrap();
        let listed: i64 = f
            .sessions
            .with_inbound(s, |c| {
                Ok(c.query_row("SELECT COUNT(*) FROM scheduled_tasks", [], |r| r.get(0))?)
            })
            .unwrap();
        assert_eq!(listed, 1, "the agent's projection lists live tasks");
    }

    fn task(f: &Fx, id: &str) -> Task {
        f.db.read(|c| get(c, &TaskId::parse(id)?)).unwrap().unwrap()
    }

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn failed(f: &Fx, firing: &str, at: &str) -> Option<Recorded> {
        record_outcome(
            &f.db,
            &f.session.id,
            firing,
            &FiringOutcome::Failed {
                error: "model overloaded".into(),
            },
            ts(at),
            &Backoff::default(),
        )
        .unwrap()
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let b = Backoff::default();
        assert_eq!(b.after(1), Duration::from_secs(60));
        assert_eq!(b.after(2), Duration::from_secs(120));
        assert_eq!(b.after(3), Duration::from_secs(240));
        assert_eq!(b.after(30), Duration::from_secs(3600));
        assert_eq!(b.after(i64::MAX), Duration::from_secs(3600));
    }

    #[test]
    fn firing_ids_name_their_task() {
        assert_eq!(
            task_of_firing("daily:3"),
            Some(TaskId::parse("daily").unwrap())
        );
        assert_eq!(
            task_of_firing("a:b:12"),
            Some(TaskId::parse("a:b").unwrap())
        );
        assert_eq!(task_of_firing("daily"), None);
        assert_eq!(task_of_firing("daily:x"), None);
    }

    #[test]
    fn a_failing_one_shot_backs_off_then_pauses_and_tells_the_agent() {
        let f = fx();
        schedule(&f, "t", "2026-01-01T09:00:00Z", None);
        fire_due(&f.db, ts("2026-01-01T09:00:00Z"), &TimeZone::UTC).unwrap();
        assert_eq!(task(&f, "t").status, TaskStatus::Completed);

        let r = failed(&f, "t:1", "2026-01-01T09:00:10Z");
        assert_eq!(
            r,
            Some(Recorded::Failed {
                failures: 1,
                next_run: Some("2026-01-01T09:01:10.000Z".into())
            })
        );
        let t = task(&f, "t");
        assert_eq!(t.status, TaskStatus::Active, "a failed one-shot runs again");
        assert_eq!(t.consecutive_failures, 1);
        assert_eq!(t.last_error.as_deref(), Some("model overloaded"));
        assert_eq!(
            t.last_failure_at.as_deref(),
            Some("2026-01-01T09:00:10.000Z")
        );
        // The same outcome seen again is not counted twice.
        assert_eq!(failed(&f, "t:1", "2026-01-01T09:00:11Z"), None);
        // Not before the backoff.
        assert!(
            fire_due(&f.db, ts("2026-01-01T09:01:00Z"), &TimeZone::UTC)
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            fire_due(&f.db, ts("2026-01-01T09:01:10Z"), &TimeZone::UTC)
                .unwrap()
                .len(),
            1
        );

        let r = failed(&f, "t:2", "2026-01-01T09:01:20Z");
        assert_eq!(
            r,
            Some(Recorded::Failed {
                failures: 2,
                next_run: Some("2026-01-01T09:03:20.000Z".into())
            }),
            "the second backoff is twice the first"
        );
        fire_due(&f.db, ts("2026-01-01T09:03:20Z"), &TimeZone::UTC).unwrap();
        let r = failed(&f, "t:3", "2026-01-01T09:03:30Z").unwrap();
        assert_eq!(r, Recorded::Paused { failures: 3 });
        assert!(r.queued_note());
        let t = task(&f, "t");
        assert_eq!(t.status, TaskStatus::Paused);
        assert_eq!(t.consecutive_failures, MAX_CONSECUTIVE_FAILURES);
        assert!(
            fire_due(&f.db, ts("2026-01-02T00:00:00Z"), &TimeZone::UTC)
                .unwrap()
                .is_empty()
        );

        // The agent is woken with a note saying why and how to resume.
        let rows = inbound_rows(&f);
        let last = rows.last().unwrap();
        assert_eq!((last.1.as_str(), last.2), ("system", true));
        let note: String = f
            .sessions
            .with_inbound(&f.session, |c| {
                Ok(c.query_row(
                    "SELECT content FROM messages_in WHERE id = ?1",
                    [&last.0],
                    |r| r.get(0),
                )?)
            })
            .unwrap();
        let note: nanoclaw_schema::session::content::SystemIn =
            serde_json::from_str(&note).unwrap();
        assert!(
            note.text.contains("paused after 3 failed runs"),
            "{}",
            note.text
        );
        assert!(note.text.contains("model overloaded"), "{}", note.text);
        assert!(note.text.contains("resume_task"), "{}", note.text);

        // Resuming clears the count; the one-shot whose time passed runs at once.
        let r = apply(
            &f.db,
            &f.session,
            &SystemAction::ResumeTask {
                task_id: "t".into(),
            },
            &TimeZone::UTC,
            "note-resume",
        )
        .unwrap();
        assert!(r.ok, "{}", r.note);
        let t = task(&f, "t");
        assert_eq!((t.status, t.consecutive_failures), (TaskStatus::Active, 0));
        assert_eq!(
            fire_due(&f.db, Timestamp::now(), &TimeZone::UTC)
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn a_completed_firing_resets_the_count() {
        let f = fx();
        schedule(&f, "d", "2026-01-01T09:00:00Z", Some("0 9 * * *"));
        fire_due(&f.db, ts("2026-01-01T09:00:00Z"), &TimeZone::UTC).unwrap();
        failed(&f, "d:1", "2026-01-01T09:00:05Z");
        fire_due(&f.db, ts("2026-01-02T09:00:00Z"), &TimeZone::UTC).unwrap();
        failed(&f, "d:2", "2026-01-02T09:00:05Z");
        assert_eq!(task(&f, "d").consecutive_failures, 2);
        fire_due(&f.db, ts("2026-01-03T09:00:00Z"), &TimeZone::UTC).unwrap();
        let r = record_outcome(
            &f.db,
            &f.session.id,
            "d:3",
            &FiringOutcome::Completed,
            ts("2026-01-03T09:00:05Z"),
            &Backoff::default(),
        )
        .unwrap();
        assert_eq!(r, Some(Recorded::Succeeded));
        let t = task(&f, "d");
        assert_eq!((t.status, t.consecutive_failures), (TaskStatus::Active, 0));
        // One more failure is the first again, not the third: no pause.
        fire_due(&f.db, ts("2026-01-04T09:00:00Z"), &TimeZone::UTC).unwrap();
        assert!(matches!(
            failed(&f, "d:4", "2026-01-04T09:00:05Z"),
            Some(Recorded::Failed { failures: 1, .. })
        ));
    }

    #[test]
    fn a_failing_recurring_task_waits_for_the_later_of_schedule_and_backoff() {
        let f = fx();
        // Every minute: the next occurrence comes before a long backoff.
        schedule(&f, "m", "2026-01-01T09:00:00Z", Some("* * * * *"));
        fire_due(&f.db, ts("2026-01-01T09:00:00Z"), &TimeZone::UTC).unwrap();
        assert_eq!(
            task(&f, "m").next_run.as_deref(),
            Some("2026-01-01T09:01:00.000Z")
        );
        let slow = Backoff {
            base: Duration::from_secs(300),
            cap: Duration::from_secs(3600),
        };
        let r = record_outcome(
            &f.db,
            &f.session.id,
            "m:1",
            &FiringOutcome::Failed {
                error: "boom".into(),
            },
            ts("2026-01-01T09:00:30Z"),
            &slow,
        )
        .unwrap();
        assert_eq!(
            r,
            Some(Recorded::Failed {
                failures: 1,
                next_run: Some("2026-01-01T09:05:30.000Z".into())
            })
        );
        // Daily: the next occurrence is later than the backoff and stays.
        schedule(&f, "daily", "2026-01-01T09:00:00Z", Some("0 9 * * *"));
        fire_due(&f.db, ts("2026-01-01T09:00:00Z"), &TimeZone::UTC).unwrap();
        failed(&f, "daily:1", "2026-01-01T09:00:30Z");
        let t = task(&f, "daily");
        assert_eq!(t.status, TaskStatus::Active);
        assert_eq!(t.next_run.as_deref(), Some("2026-01-02T09:00:00.000Z"));
    }

    #[test]
    fn outcomes_for_other_sessions_or_stopped_tasks_change_no_schedule() {
        let f = fx();
        schedule(&f, "x", "2026-01-01T09:00:00Z", Some("0 9 * * *"));
        fire_due(&f.db, ts("2026-01-01T09:00:00Z"), &TimeZone::UTC).unwrap();
        let other = SessionId::parse("sess-other").unwrap();
        let r = record_outcome(
            &f.db,
            &other,
            "x:1",
            &FiringOutcome::Failed { error: "e".into() },
            ts("2026-01-01T09:00:05Z"),
            &Backoff::default(),
        )
        .unwrap();
        assert_eq!(r, None);
        assert_eq!(task(&f, "x").consecutive_failures, 0);
        // Cancelled meanwhile: counted, but it stays cancelled.
        let x = task(&f, "x");
        f.db.write(|c| cancel(c, &x)).unwrap();
        assert_eq!(
            failed(&f, "x:1", "2026-01-01T09:00:06Z"),
            Some(Recorded::Failed {
                failures: 1,
                next_run: None
            })
        );
        assert_eq!(task(&f, "x").status, TaskStatus::Cancelled);
    }

    #[test]
    fn stored_errors_are_one_bounded_line() {
        assert_eq!(bounded_error("a\nb\x1b[31m"), "a b [31m");
        let long = "x".repeat(1000);
        assert_eq!(bounded_error(&long).chars().count(), MAX_ERROR_CHARS + 1);
        assert_eq!(bounded_error("  "), "failed (no detail)");
    }
}
