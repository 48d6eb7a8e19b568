//! Scheduled tasks: agents ask for them with system actions in `outbound.db`; the schedule
//! lives in the central DB; each firing becomes a `task` message in the session's inbound.db.
//!
//! An agent can only touch tasks of its own session. Recurring tasks use cron expressions in
//! the host's time zone; a missed run (host down) fires once, then the schedule continues
//! from now.

use std::str::FromStr;

use croner::Cron;
use jiff::Timestamp;
use jiff::tz::TimeZone;
use rusqlite::{Connection, OptionalExtension, Row, params};
use serde::Serialize;

use nanoclaw_schema::session::InKind;
use nanoclaw_schema::session::content::{SystemAction, SystemIn, TaskIn};
use nanoclaw_schema::time;

use crate::db::{Db, text_enum};
use crate::error::{Error, Result};
use crate::ids::{SessionId, TaskId};
use crate::sessions::queue::{self, Queued};
use crate::sessions::{Session, SessionStore, registry};

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
}

const COLUMNS: &str =
    "id, session_id, prompt, script, recurrence, next_run, status, last_run, run_count";

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
        let applied = match apply_in(c, session, action, tz) {
            Ok(note) => Applied { ok: true, note },
            Err(e @ (Error::Invalid(_) | Error::NotFound { .. } | Error::Conflict(_))) => Applied {
                ok: false,
                note: format!("{} failed: {e}", action.name()),
            },
            Err(e) => return Err(e),
        };
        let note = SystemIn {
            text: applied.note.clone(),
            action: Some(action.name().to_string()),
            ok: Some(applied.ok),
        };
        let content = serde_json::to_string(&note).map_err(|e| Error::Json {
            context: "note".into(),
            source: e,
        })?;
        queue::push(
            c,
            &session.id,
            &Queued {
                trigger: !applied.ok,
                ..Queued::new(note_id, InKind::System, time::now(), content)
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
            let routing = routing(c, session)?;
            c.execute(
                &format!(
                    "INSERT INTO scheduled_tasks ({COLUMNS}, agent_group_id, channel_type, platform_id, thread_id,
                     created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'active', NULL, 0, ?7, ?8, ?9, ?10, ?11, ?11)"
                ),
                params![
                    id,
                    session.id,
                    prompt,
                    script.as_deref().filter(|s| !s.trim().is_empty()),
                    recurrence.as_deref().map(str::trim),
                    time::format(first),
                    session.agent_group_id,
                    routing.0,
                    routing.1,
                    routing.2,
                    now
                ],
            )?;
            Ok(match recurrence {
                Some(r) => format!(
                    "task {task_id} scheduled from {} repeating ({r})",
                    time::format(first)
                ),
                None => format!("task {task_id} scheduled for {}", time::format(first)),
            })
        }
        SystemAction::CancelTask { task_id } => {
            let t = own_task(c, session, task_id)?;
            set_status(c, &t.id, TaskStatus::Cancelled)?;
            Ok(format!("task {task_id} cancelled"))
        }
        SystemAction::PauseTask { task_id } => {
            let t = own_task(c, session, task_id)?;
            if t.status != TaskStatus::Active {
                return Err(Error::Conflict(format!(
                    "task {task_id} is {}, not active",
                    t.status
                )));
            }
            set_status(c, &t.id, TaskStatus::Paused)?;
            Ok(format!("task {task_id} paused"))
        }
        SystemAction::ResumeTask { task_id } => {
            let t = own_task(c, session, task_id)?;
            if t.status != TaskStatus::Paused {
                return Err(Error::Conflict(format!(
                    "task {task_id} is {}, not paused",
                    t.status
                )));
            }
            // A recurring task resumes at its next occurrence from now, not in a burst.
            let next = match (&t.recurrence, &t.next_run) {
                (Some(r), Some(n)) if n.as_str() < now.as_str() => Some(time::format(
                    next_occurrence(&parse_cron(r)?, Timestamp::now(), tz)?,
                )),
                _ => t.next_run.clone(),
            };
            c.execute(
                "UPDATE scheduled_tasks SET status = 'active', next_run = ?2, updated_at = ?3 WHERE id = ?1",
                params![t.id, next, now],
            )?;
            Ok(format!("task {task_id} resumed"))
        }
        SystemAction::UpdateTask {
            task_id,
            prompt,
            process_after,
            recurrence,
            script,
        } => {
            let t = own_task(c, session, task_id)?;
            if matches!(t.status, TaskStatus::Completed | TaskStatus::Cancelled) {
                return Err(Error::Conflict(format!("task {task_id} is {}", t.status)));
            }
            if prompt.is_none()
                && process_after.is_none()
                && recurrence.is_none()
                && script.is_none()
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

fn set_status(c: &Connection, id: &TaskId, status: TaskStatus) -> Result<()> {
    c.execute(
        "UPDATE scheduled_tasks SET status = ?2, updated_at = ?3 WHERE id = ?1",
        params![id, status, time::now()],
    )?;
    Ok(())
}

/// The reply address of a session's origin chat (tasks answer there).
fn routing(
    c: &Connection,
    session: &Session,
) -> Result<(Option<String>, Option<String>, Option<String>)> {
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
        for t in tasks.iter().filter(|t| matches!(t.status, TaskStatus::Active | TaskStatus::Paused)) {
            tx.execute(
                "INSERT INTO scheduled_tasks (id, prompt, recurrence, next_run, status) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![t.id, t.prompt, t.recurrence, t.next_run, t.status],
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
    let (channel_type, platform_id, thread_id): (Option<String>, Option<String>, Option<String>) =
        c.query_row(
            "SELECT channel_type, platform_id, thread_id FROM scheduled_tasks WHERE id = ?1",
            [&task.id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )?;
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
        let tmp = tempfile::tempdir().unwrap();
        let db = Db::open_in_memory().unwrap();
        let sessions = SessionStore::new(tmp.path());
        let a = agent(&db, "A");
        let c = chat(&db, "telegram:5", None, false);
        let (session, _) = db
            .write(|t| sessions.resolve(t, &a.id, &c, None, SessionMode::Shared))
            .unwrap();
        Fx {
            _tmp: tmp,
            db,
            sessions,
            session,
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
        assert_eq!(addr.platform_id.as_deref(), Some("5"));
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
}
