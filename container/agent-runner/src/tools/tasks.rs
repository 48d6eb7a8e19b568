//! Scheduled tasks: the agent asks, the host keeps the schedule and fires each run into this
//! session as a `task` message. The host confirms every change with a system message.

use std::str::FromStr;

use croner::Cron;
use jiff::civil::DateTime;
use jiff::{Timestamp, ToSpan};
use nanoclaw_schema::session::content::SystemAction;
use nanoclaw_schema::session::limits;
use nanoclaw_schema::time;
use serde::Deserialize;
use serde_json::json;

use super::{ToolError, ToolResult, ToolSpec, Toolbox, to_schema};
use crate::db::Destination;

/// Longest task prompt, in characters.
const MAX_PROMPT_CHARS: usize = 8_000;
/// Longest pre-check script, in bytes.
const MAX_SCRIPT_BYTES: usize = 16 * 1024;

pub(super) fn specs(destinations: &[Destination]) -> Vec<ToolSpec> {
    let when = json!({
        "at": {"type": "string", "description": "First (or only) run: ISO 8601, e.g. 2026-05-01T09:00 (your time zone) or 2026-05-01T07:00:00Z."},
        "every": {"type": "string", "description": "Repeat at a fixed interval: 5m, 15m, 1h, 6h, 1d, 1w (minutes must divide an hour, hours a day)."},
        "cron": {"type": "string", "description": "Repeat on a cron schedule in your time zone, e.g. \"0 9 * * 1-5\"."},
    });
    let id = json!({"task_id": {"type": "string"}});
    let mut schedule = json!({
        "type": "object",
        "properties": {
            "prompt": {"type": "string", "description": "What to do when it runs (you get it as a task message)."},
            "to": to_schema(destinations),
            "script": {"type": "string", "description": "Optional shell script run first; its last line is JSON {\"wake_agent\": bool, \"data\": ...}."},
        },
        "required": ["prompt"],
    });
    let mut update = json!({
        "type": "object",
        "properties": {
            "task_id": {"type": "string"},
            "prompt": {"type": "string"},
            "to": to_schema(destinations),
            "script": {"type": "string", "description": "\"\" removes the script."},
        },
        "required": ["task_id"],
    });
    for schema in [&mut schedule, &mut update] {
        if let (Some(props), Some(when)) = (schema["properties"].as_object_mut(), when.as_object())
        {
            props.extend(when.clone());
        }
    }
    let by_id = json!({"type": "object", "properties": id, "required": ["task_id"]});
    vec![
        ToolSpec {
            name: "schedule_task",
            description: "Schedule a task: once (`at`), or repeating (`every` or `cron`, \
                          starting at `at` or the next occurrence). Each run comes to you as a \
                          task message from `to` (default: this chat); answer it there."
                .into(),
            schema: schedule,
        },
        ToolSpec {
            name: "list_tasks",
            description: "List this conversation's scheduled tasks.".into(),
            schema: json!({"type": "object", "properties": {}}),
        },
        ToolSpec {
            name: "update_task",
            description: "Change a task's prompt, time, repetition or script (`every`/`cron` \
                          \"\" stops the repetition)."
                .into(),
            schema: update,
        },
        ToolSpec {
            name: "pause_task",
            description: "Pause a task until it is resumed.".into(),
            schema: by_id.clone(),
        },
        ToolSpec {
            name: "resume_task",
            description: "Resume a paused task (also one the host paused after failures).".into(),
            schema: by_id.clone(),
        },
        ToolSpec {
            name: "cancel_task",
            description: "Cancel a task for good.".into(),
            schema: by_id,
        },
    ]
}

#[derive(Debug, Deserialize)]
pub(super) struct Schedule {
    prompt: String,
    to: Option<String>,
    at: Option<String>,
    every: Option<String>,
    cron: Option<String>,
    script: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(super) struct Update {
    task_id: String,
    prompt: Option<String>,
    at: Option<String>,
    every: Option<String>,
    cron: Option<String>,
    script: Option<String>,
    to: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(super) struct ById {
    task_id: String,
}

impl Toolbox {
    pub(super) fn schedule_task(&mut self, a: Schedule) -> ToolResult {
        let prompt = check_prompt(&a.prompt)?;
        // Checked here for a clear answer; the host checks again against its own records.
        let to = match a.to.as_deref().filter(|t| !t.trim().is_empty()) {
            Some(to) => Some(self.resolve(Some(to))?.name),
            None => None,
        };
        let script = check_script(a.script)?;
        let recurrence = self.recurrence(a.every.as_deref(), a.cron.as_deref())?;
        let first = match (&a.at, &recurrence) {
            (Some(at), _) => self.time(at)?,
            (None, Some(cron)) => self.next_run(cron)?,
            (None, None) => {
                return Err(ToolError::new(
                    "say when: `at` for one run, `every` or `cron` to repeat",
                ));
            }
        };
        let task_id = format!("task-{}", &self.next_id()["tool-".len()..]);
        self.write_system(&SystemAction::ScheduleTask {
            task_id: task_id.clone(),
            prompt,
            process_after: time::format(first),
            recurrence: recurrence.clone(),
            script,
            to: to.clone(),
        })?;
        let when = self.local(first);
        let to = to.map(|d| format!(", sent to {d}")).unwrap_or_default();
        Ok(match recurrence {
            Some(r) => format!("Task {task_id} requested: first run {when}, repeating ({r}){to}."),
            None => format!("Task {task_id} requested for {when}{to}."),
        } + " The host confirms it with a system message only if it fails.")
    }

    pub(super) fn list_tasks(&mut self) -> ToolResult {
        let tasks = self.db.tasks()?;
        if tasks.is_empty() {
            return Ok("No tasks.".into());
        }
        let lines: Vec<String> = tasks
            .iter()
            .map(|t| {
                let next = t
                    .next_run
                    .as_deref()
                    .and_then(time::parse)
                    .map_or_else(|| "-".to_string(), |ts| self.local(ts));
                let preview: String = t.prompt.chars().take(80).collect();
                format!(
                    "- {} [{}] next {next}{}{}: {preview}",
                    t.id,
                    t.status,
                    t.recurrence
                        .as_deref()
                        .map(|r| format!(" repeating ({r})"))
                        .unwrap_or_default(),
                    t.destination
                        .as_deref()
                        .map(|d| format!(" to {d}"))
                        .unwrap_or_default()
                )
            })
            .collect();
        Ok(lines.join("\n"))
    }

    pub(super) fn update_task(&mut self, a: Update) -> ToolResult {
        check_task_id(&a.task_id)?;
        let prompt = a.prompt.as_deref().map(check_prompt).transpose()?;
        let clears = |s: &Option<String>| s.as_deref().is_some_and(|s| s.trim().is_empty());
        let recurrence = if clears(&a.every) || clears(&a.cron) {
            Some(String::new())
        } else {
            self.recurrence(a.every.as_deref(), a.cron.as_deref())?
        };
        let process_after =
            a.at.as_deref()
                .map(|at| self.time(at).map(time::format))
                .transpose()?;
        let script = match a.script {
            Some(s) if s.is_empty() => Some(s),
            other => check_script(other)?,
        };
        // "" sends the runs to this conversation again.
        let to = match a.to {
            Some(to) if to.trim().is_empty() => Some(String::new()),
            Some(to) => Some(self.resolve(Some(&to))?.name),
            None => None,
        };
        if prompt.is_none()
            && recurrence.is_none()
            && process_after.is_none()
            && script.is_none()
            && to.is_none()
        {
            return Err(ToolError::new("nothing to change"));
        }
        self.write_system(&SystemAction::UpdateTask {
            task_id: a.task_id.clone(),
            prompt,
            process_after,
            recurrence,
            script,
            to,
        })?;
        Ok(format!("Update of task {} requested.", a.task_id))
    }

    pub(super) fn task_state(&mut self, tool: &str, a: ById) -> ToolResult {
        check_task_id(&a.task_id)?;
        let task_id = a.task_id.clone();
        let (action, verb) = match tool {
            "pause_task" => (SystemAction::PauseTask { task_id }, "Pause"),
            "resume_task" => (SystemAction::ResumeTask { task_id }, "Resume"),
            _ => (SystemAction::CancelTask { task_id }, "Cancellation"),
        };
        self.write_system(&action)?;
        Ok(format!("{verb} of task {} requested.", a.task_id))
    }

    /// The cron expression for `every` or `cron` (at most one of them).
    fn recurrence(
        &self,
        every: Option<&str>,
        cron: Option<&str>,
    ) -> Result<Option<String>, ToolError> {
        let expr = match (
            every.filter(|s| !s.trim().is_empty()),
            cron.filter(|s| !s.trim().is_empty()),
        ) {
            (Some(_), Some(_)) => return Err(ToolError::new("give `every` or `cron`, not both")),
            (Some(every), None) => interval_cron(every, self.now_local())?,
            (None, Some(cron)) => cron.trim().to_string(),
            (None, None) => return Ok(None),
        };
        Cron::from_str(&expr)
            .map_err(|e| ToolError::new(format!("invalid cron expression {expr:?}: {e}")))?;
        Ok(Some(expr))
    }

    fn next_run(&self, cron: &str) -> Result<Timestamp, ToolError> {
        let parsed = Cron::from_str(cron)
            .map_err(|e| ToolError::new(format!("invalid cron expression {cron:?}: {e}")))?;
        parsed
            .find_next_occurrence(&Timestamp::now().to_zoned(self.tz.clone()), false)
            .map(|z| z.timestamp())
            .map_err(|e| ToolError::new(format!("{cron:?} never runs: {e}")))
    }

    /// An absolute time, or a wall-clock time in the agent's zone.
    fn time(&self, s: &str) -> Result<Timestamp, ToolError> {
        let s = s.trim();
        let t = match time::parse(s) {
            Some(t) => t,
            None => DateTime::from_str(s)
                .ok()
                .and_then(|dt| dt.to_zoned(self.tz.clone()).ok())
                .map(|z| z.timestamp())
                .ok_or_else(|| {
                    ToolError::new(format!(
                        "unreadable time {s:?}: use e.g. 2026-05-01T09:00 or 2026-05-01T07:00:00Z"
                    ))
                })?,
        };
        if t < Timestamp::now() - 1.minute() {
            return Err(ToolError::new(format!(
                "{} is in the past (now it is {})",
                self.local(t),
                self.local(Timestamp::now())
            )));
        }
        Ok(t)
    }

    fn now_local(&self) -> jiff::Zoned {
        Timestamp::now().to_zoned(self.tz.clone())
    }

    fn local(&self, t: Timestamp) -> String {
        t.to_zoned(self.tz.clone())
            .strftime("%a %Y-%m-%d %H:%M %Z")
            .to_string()
    }
}

/// A fixed interval as a cron expression anchored at `now`: `15m` → `*/15 * * * *`,
/// `6h` → `<min> */6 * * *`, `1d` → `<min> <hour> * * *`, `1w` → also the weekday.
fn interval_cron(every: &str, now: jiff::Zoned) -> Result<String, ToolError> {
    let s = every.trim().to_ascii_lowercase();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u32 = n.parse().unwrap_or(0);
    let (minute, hour) = (now.minute(), now.hour());
    let bad = || {
        ToolError::new(format!(
            "cannot repeat every {every:?}: use Nm (N dividing 60), Nh (N dividing 24), 1d or \
             1w, or a cron expression"
        ))
    };
    match unit.trim() {
        "m" | "min" | "mins" | "minute" | "minutes" if n > 0 && 60 % n == 0 => Ok(if n == 1 {
            "* * * * *".into()
        } else {
            format!("*/{n} * * * *")
        }),
        "h" | "hour" | "hours" if n > 0 && 24 % n == 0 => Ok(if n == 1 {
            format!("{minute} * * * *")
        } else {
            format!("{minute} */{n} * * *")
        }),
        "d" | "day" | "days" if n == 1 => Ok(format!("{minute} {hour} * * *")),
        "w" | "week" | "weeks" if n == 1 => Ok(format!(
            "{minute} {hour} * * {}",
            now.weekday().to_sunday_zero_offset()
        )),
        _ => Err(bad()),
    }
}

fn check_prompt(prompt: &str) -> Result<String, ToolError> {
    let p = prompt.trim();
    if p.is_empty() {
        return Err(ToolError::new("the prompt is empty"));
    }
    if p.chars().count() > MAX_PROMPT_CHARS {
        return Err(ToolError::new(format!(
            "the prompt is longer than {MAX_PROMPT_CHARS} characters"
        )));
    }
    Ok(p.to_string())
}

fn check_script(script: Option<String>) -> Result<Option<String>, ToolError> {
    match script {
        Some(s) if s.trim().is_empty() => Ok(None),
        Some(s) if s.len() > MAX_SCRIPT_BYTES => Err(ToolError::new(format!(
            "the script is longer than {MAX_SCRIPT_BYTES} bytes"
        ))),
        other => Ok(other),
    }
}

fn check_task_id(id: &str) -> Result<(), ToolError> {
    if id.trim().is_empty() || id.len() > limits::MAX_SHORT_FIELD_BYTES {
        return Err(ToolError::new("give the task_id list_tasks shows"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_become_cron() {
        let now: jiff::Zoned = "2026-05-01T09:07:00[UTC]".parse().unwrap();
        let c = |s: &str| interval_cron(s, now.clone());
        assert_eq!(c("15m").unwrap(), "*/15 * * * *");
        assert_eq!(c("1m").unwrap(), "* * * * *");
        assert_eq!(c("1h").unwrap(), "7 * * * *");
        assert_eq!(c("6h").unwrap(), "7 */6 * * *");
        assert_eq!(c("1d").unwrap(), "7 9 * * *");
        assert_eq!(c("1w").unwrap(), "7 9 * * 5");
        for bad in ["7m", "5h", "2d", "0m", "m", "soon", "90m"] {
            assert!(c(bad).is_err(), "{bad}");
        }
    }
}
