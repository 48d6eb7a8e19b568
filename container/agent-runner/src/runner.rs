//! The main loop: wait for inbound rows, run one turn per batch, write replies and acks.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use jiff::Timestamp;
use nanoclaw_schema::session::content::ChatOut;
use nanoclaw_schema::session::{AckStatus, HEARTBEAT_FILE, OutKind};

use crate::config::Config;
use crate::db::{Destination, OutRow, Routing, SessionDb, Target};
use crate::format::{self, Formatter, Inbound};
use crate::output;
use crate::provider::{self, Event, Hints, Provider, ProviderError, Request, RequestKind};
use crate::script;
use crate::tools::{TURN_STATE_KEY, Turn};
use crate::wait::{Shutdown, Wake, Wakeups};

/// Slash commands only admins may run. `/clear` is handled here; the others go to the
/// provider raw.
pub const ADMIN_COMMANDS: &[&str] = &["/clear", "/compact", "/context", "/cost", "/files"];

/// After a file event, data_version is looked at again after this delay, doubling while
/// nothing shows, until it reaches the fallback poll interval. inotify reports a commit's writes
/// to `-wal`, not the moment it becomes visible: that comes after its last write (after an
/// fsync when the writer uses `synchronous=FULL`, which can take long on a busy disk), and
/// nothing signals it. A batch of events can also hold both a commit that is already visible
/// and the first writes of the next one. Re-checking after every event closes both gaps; each
/// look is one `PRAGMA data_version`, so this costs almost nothing, and the delay it adds is
/// at most about the writer's own commit time.
const FIRST_SETTLE_CHECK: Duration = Duration::from_micros(250);

/// What to do with a batch.
enum Work {
    /// Formatted messages for the model (oldest first).
    Turn(Vec<Inbound>),
    /// One admin slash command.
    Command {
        msg: Box<Inbound>,
        command: &'static str,
    },
}

/// How a step of the loop ended.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    /// Something was done (or rows were set aside): look again at once.
    Progress,
    /// Nothing to do until the inbound side changes or a row comes due.
    Idle,
    /// Shutdown was requested mid-turn; the turn was abandoned.
    Stopped,
}

/// Where a reply goes and what it answers.
struct Reply {
    channel_type: String,
    platform_id: String,
    thread_id: Option<String>,
    in_reply_to: Option<String>,
}

/// Task firings the pre-task scripts took out of a turn.
#[derive(Debug, Default)]
struct Scripts {
    /// The script said not to wake the agent.
    skipped: Vec<String>,
    /// The script failed.
    failed: Vec<String>,
}

pub struct Runner {
    db: SessionDb,
    provider: Box<dyn Provider>,
    shutdown: Shutdown,
    heartbeat: PathBuf,
    continuation_key: String,
    max_batch: usize,
    fallback_poll: Duration,
    admins: HashSet<String>,
    assistant_name: Option<String>,
    tz: jiff::tz::TimeZone,
    tz_name: String,
    session_dir: PathBuf,
    agent_dir: PathBuf,
    /// The provider compacted the conversation during the current request; the chat gets
    /// [`COMPACTED_NOTE`].
    compacted: bool,
    /// The provider failed the current turn: its task firings are acked `failed`, so the
    /// host counts them against their tasks.
    turn_failed: bool,
}

/// Told to the chat a turn came from when the provider summarized older turns: the agent
/// may have forgotten details, and users should know why.
pub const COMPACTED_NOTE: &str = "Context compacted: older messages were summarized.";

impl Runner {
    pub fn new(
        cfg: Config,
        db: SessionDb,
        provider: Box<dyn Provider>,
        shutdown: Shutdown,
    ) -> Runner {
        Runner {
            db,
            continuation_key: provider::continuation_key(provider.name()),
            provider,
            shutdown,
            heartbeat: cfg.session_dir.join(HEARTBEAT_FILE),
            max_batch: cfg.max_batch,
            fallback_poll: cfg.fallback_poll,
            admins: cfg.admin_user_ids,
            assistant_name: cfg.assistant_name,
            tz: cfg.tz,
            tz_name: cfg.tz_name,
            session_dir: cfg.session_dir,
            agent_dir: cfg.agent_dir,
            compacted: false,
            turn_failed: false,
        }
    }

    /// Runs until shutdown. Database errors end the loop (the host restarts the container).
    pub fn run(&mut self, wakeups: &Wakeups) -> crate::db::Result<()> {
        let cleared = self.db.clear_stale_claims()?;
        if cleared > 0 {
            tracing::info!(cleared, "cleared claims left by a previous run");
        }
        tracing::info!(provider = self.provider.name(), "waiting for messages");
        let mut check = true;
        // The next data_version re-check after file events. Also at start: a commit whose
        // events came before the watch was set up may still be landing.
        let mut settle = Some(FIRST_SETTLE_CHECK);
        loop {
            if check {
                while !self.shutdown.requested() && self.step()? == Step::Progress {}
            }
            if self.shutdown.requested() {
                tracing::info!("shutting down");
                return Ok(());
            }

            // Sleep until something happens: a file event, a signal, the next due row, a
            // settle re-check, or the fallback poll for file systems without events.
            let now = Timestamp::now();
            let mut timeout = self.fallback_poll;
            let mut due_at = None;
            if let Some(due) = self.db.next_due(now)? {
                let until = Duration::try_from(due.duration_since(now)).unwrap_or(Duration::ZERO);
                let until = until + Duration::from_millis(1);
                due_at = Some(Instant::now() + until);
                timeout = timeout.min(until);
            }
            if let Some(d) = settle {
                timeout = timeout.min(d);
            }
            let started = Instant::now();
            let wake = wakeups.wait(timeout).map(|w| wakeups.drain().unwrap_or(w));
            check = match wake {
                Some(Wake::Signal(_)) => false,
                Some(Wake::Inbound) => {
                    let changed = self.db.inbound_changed()?;
                    tracing::trace!(changed, after = ?started.elapsed(), "inbound file event");
                    settle = Some(FIRST_SETTLE_CHECK);
                    changed
                }
                None => {
                    let changed = self.db.inbound_changed()?;
                    settle = settle
                        .map(|d| if changed { FIRST_SETTLE_CHECK } else { d * 2 })
                        .filter(|d| *d < self.fallback_poll);
                    changed || due_at.is_some_and(|d| Instant::now() >= d)
                }
            };
        }
    }

    /// Takes the next batch, if any, and runs it.
    fn step(&mut self) -> crate::db::Result<Step> {
        let Some(sel) = self.db.next_batch(Timestamp::now(), self.max_batch)? else {
            return Ok(Step::Idle);
        };

        // Rows the runner cannot read at all are acked `failed` right away and the batch is
        // chosen again without them.
        let mut messages = Vec::with_capacity(sel.rows.len());
        let mut bad: Vec<String> = Vec::new();
        for row in sel.rows {
            let id = row.id.clone();
            match Inbound::parse(row) {
                Ok(m) => messages.push(m),
                Err(e) => {
                    tracing::error!(id = %id, error = %e, "unreadable inbound message; acking it failed");
                    bad.push(id);
                }
            }
        }
        if !bad.is_empty() {
            self.db.ack(&refs(&bad), AckStatus::Failed)?;
            return Ok(Step::Progress);
        }

        let work = Self::plan(messages);
        let (mut claimed, overflow) = match &work {
            Work::Turn(ms) => (
                ms.iter().map(|m| m.row.id.clone()).collect::<Vec<_>>(),
                sel.overflow,
            ),
            // A command runs alone; older context rows wait for the next trigger.
            Work::Command { msg, .. } => (vec![msg.row.id.clone()], Vec::new()),
        };
        if !overflow.is_empty() {
            tracing::warn!(
                count = overflow.len(),
                "context messages beyond NANOCLAW_MAX_BATCH are dropped unseen"
            );
        }
        self.db.ack(&refs(&claimed), AckStatus::Processing)?;
        touch(&self.heartbeat);

        let started = Instant::now();
        // Acked `completed` with the turn, besides what was claimed.
        let mut done = overflow;
        // Acked `failed`: task firings whose script failed, or whose turn the provider failed.
        let mut failed: Vec<String> = Vec::new();
        self.turn_failed = false;
        let rows = match work {
            Work::Command { msg, command } => self.command(&msg, command)?,
            Work::Turn(mut ms) => match self.task_scripts(&mut ms) {
                None => None,
                Some(scripts) => {
                    claimed
                        .retain(|id| !scripts.skipped.contains(id) && !scripts.failed.contains(id));
                    done.extend(scripts.skipped);
                    failed.extend(scripts.failed);
                    if ms.iter().any(|m| m.row.trigger) {
                        let tasks: Vec<String> = ms
                            .iter()
                            .filter(|m| matches!(m.body, format::Body::Task(_)))
                            .map(|m| m.row.id.clone())
                            .collect();
                        let rows = self.turn(&ms)?;
                        if self.turn_failed {
                            claimed.retain(|id| !tasks.contains(id));
                            failed.extend(tasks);
                        }
                        rows
                    } else {
                        // Nothing left that wakes the agent: the rest waits for a trigger.
                        self.db.release(&refs(&claimed))?;
                        claimed.clear();
                        Some(Vec::new())
                    }
                }
            },
        };
        let Some(rows) = rows else {
            self.db.release(&refs(&claimed))?;
            self.db.release(&refs(&failed))?;
            return Ok(Step::Stopped);
        };
        let acks: Vec<(&str, AckStatus)> = claimed
            .iter()
            .chain(&done)
            .map(|id| (id.as_str(), AckStatus::Completed))
            .chain(failed.iter().map(|id| (id.as_str(), AckStatus::Failed)))
            .collect();
        let seqs = self.db.finish_turn(&rows, &acks)?;
        // After the commit, on purpose: the host takes this touch as "the replies are visible
        // now" (the -wal writes it also sees can come before the commit is).
        touch(&self.heartbeat);
        tracing::info!(
            messages = acks.len(),
            replies = seqs.len(),
            elapsed = ?started.elapsed(),
            "turn done"
        );
        Ok(Step::Progress)
    }

    /// Runs the pre-task scripts of the tasks in `messages`. Tasks whose script says not to
    /// wake the agent, or fails, are removed and their ids returned; the others carry the
    /// script's data. `None`: shutdown interrupted a script.
    fn task_scripts(&self, messages: &mut Vec<Inbound>) -> Option<Scripts> {
        let mut out = Scripts::default();
        for m in messages.iter_mut() {
            let format::Body::Task(task) = &m.body else {
                continue;
            };
            let Some(code) = task.script.as_deref().filter(|c| !c.trim().is_empty()) else {
                continue;
            };
            touch(&self.heartbeat);
            let outcome = script::run(code, &self.agent_dir, script::TIMEOUT, &self.shutdown);
            touch(&self.heartbeat);
            match outcome {
                script::Outcome::Wake { data } => m.script_output = Some(data),
                script::Outcome::Skip(reason) => {
                    tracing::info!(task = %task.task_id, %reason, "task script: not waking the agent");
                    out.skipped.push(m.row.id.clone());
                }
                script::Outcome::Failed(reason) => {
                    tracing::warn!(task = %task.task_id, %reason, "task script failed");
                    out.failed.push(m.row.id.clone());
                }
                script::Outcome::Interrupted => return None,
            }
        }
        messages.retain(|m| !out.skipped.contains(&m.row.id) && !out.failed.contains(&m.row.id));
        Some(out)
    }

    /// Splits off admin slash commands: each runs as its own turn, in order.
    fn plan(mut messages: Vec<Inbound>) -> Work {
        let first_command = messages
            .iter()
            .enumerate()
            .find_map(|(i, m)| Some((i, admin_command(m)?)));
        match first_command {
            Some((i, command)) if !messages[..i].iter().any(|m| m.row.trigger) => Work::Command {
                msg: Box::new(messages.swap_remove(i)),
                command,
            },
            Some((i, _)) => {
                messages.truncate(i);
                Work::Turn(messages)
            }
            None => Work::Turn(messages),
        }
    }

    /// One model turn over `messages`. `None`: abandoned for shutdown.
    fn turn(&mut self, messages: &[Inbound]) -> crate::db::Result<Option<Vec<OutRow>>> {
        let destinations = self.db.destinations()?;
        let routing = self.db.routing()?;
        let newest = messages
            .iter()
            .rev()
            .find(|m| m.row.trigger)
            .or(messages.last());
        let admin_turn = self.begin_turn(newest)?;
        let system_prompt =
            format::addendum(self.assistant_name.as_deref(), &destinations, admin_turn);
        let formatter = Formatter {
            tz: &self.tz,
            tz_name: &self.tz_name,
            session_dir: &self.session_dir,
        };
        let prompt = formatter.prompt(messages, &destinations);
        let hints = self.hints(newest, &destinations);
        let max_seq = messages.iter().map(|m| m.row.seq).max().unwrap_or(0);

        let mut rows = Vec::new();
        let mut kind = RequestKind::Turn;
        let mut input = prompt;
        // Rows the agent's tools write during the turn count as reaching someone.
        let out_before = self.db.max_out_seq()?;
        loop {
            let result = self.exchange(kind, &input, &system_prompt, &hints)?;
            if std::mem::take(&mut self.compacted)
                && let Some(m) = newest
            {
                rows.extend(self.reply_to_message(m, &routing, COMPACTED_NOTE));
            }
            let text = match result {
                Ok(text) => text,
                Err(ProviderError::Interrupted) => return Ok(None),
                Err(e @ ProviderError::Failed { .. }) => {
                    tracing::error!(error = %e, "provider failed");
                    self.turn_failed = true;
                    if let Some(m) = newest {
                        let text = crate::provider::api_error::explain(&e.to_string());
                        rows.extend(self.reply_to_message(m, &routing, &text));
                    }
                    break;
                }
            };
            let parsed = output::parse(&text);
            if !parsed.scratchpad.is_empty() {
                tracing::info!(
                    scratchpad = output::preview(&parsed.scratchpad, 500),
                    "scratchpad"
                );
            }
            let sent_before = rows.len();
            let dropped =
                self.route(parsed.messages, &destinations, &routing, max_seq, &mut rows)?;
            let sent_nothing = rows.len() == sent_before && self.db.max_out_seq()? == out_before;
            let unaddressed = dropped || !parsed.scratchpad.is_empty();
            if kind == RequestKind::Turn && sent_nothing && unaddressed && !destinations.is_empty()
            {
                tracing::info!("reply reached nobody; nudging the provider once");
                kind = RequestKind::Nudge;
                input = format::nudge(&destinations);
                continue;
            }
            break;
        }
        Ok(Some(rows))
    }

    /// An admin slash command. `None`: abandoned for shutdown.
    fn command(&mut self, msg: &Inbound, command: &str) -> crate::db::Result<Option<Vec<OutRow>>> {
        let routing = self.db.routing()?;
        let sender = msg.chat().and_then(|c| c.sender_id.as_deref());
        if !sender.is_some_and(|s| self.admins.contains(s)) {
            tracing::warn!(command, sender, "denied admin command from a non-admin");
            let text = format!("Permission denied: {command} requires admin access.");
            return Ok(Some(
                self.reply_to_message(msg, &routing, &text)
                    .into_iter()
                    .collect(),
            ));
        }
        if command == "/clear" {
            self.db.delete_state(&self.continuation_key)?;
            self.provider.reset();
            tracing::info!("conversation cleared");
            return Ok(Some(
                self.reply_to_message(msg, &routing, "Session cleared.")
                    .into_iter()
                    .collect(),
            ));
        }

        let destinations = self.db.destinations()?;
        let admin_turn = self.begin_turn(Some(msg))?;
        let system_prompt =
            format::addendum(self.assistant_name.as_deref(), &destinations, admin_turn);
        let hints = self.hints(Some(msg), &destinations);
        let input = msg
            .chat()
            .map(|c| c.text.trim())
            .unwrap_or_default()
            .to_string();
        let result = self.exchange(RequestKind::Command, &input, &system_prompt, &hints)?;
        let mut rows = Vec::new();
        if std::mem::take(&mut self.compacted) {
            rows.extend(self.reply_to_message(msg, &routing, COMPACTED_NOTE));
        }
        let text = match result {
            Ok(text) => text,
            Err(ProviderError::Interrupted) => return Ok(None),
            Err(e @ ProviderError::Failed { .. }) => {
                crate::provider::api_error::explain(&e.to_string())
            }
        };
        // Command output is for the admin who asked, addressed or not.
        let parsed = output::parse(&text);
        let before = rows.len();
        self.route(
            parsed.messages,
            &destinations,
            &routing,
            msg.row.seq,
            &mut rows,
        )?;
        if rows.len() == before && !parsed.scratchpad.is_empty() {
            rows.extend(self.reply_to_message(msg, &routing, &parsed.scratchpad));
        }
        Ok(Some(rows))
    }

    /// Records what the turn answers for the agent's tools (which run in another process for
    /// Claude). Returns whether an admin is talking.
    fn begin_turn(&self, newest: Option<&Inbound>) -> crate::db::Result<bool> {
        let turn = newest.map_or_else(Turn::default, |m| Turn {
            in_reply_to: Some(m.row.id.clone()),
            sender_id: m.chat().and_then(|c| c.sender_id.clone()),
            channel_type: m.row.channel_type.clone(),
            platform_id: m.row.platform_id.clone(),
            thread_id: m.row.thread_id.clone(),
        });
        // Serializing plain strings cannot fail.
        let json = serde_json::to_string(&turn).unwrap_or_default();
        self.db.set_state(TURN_STATE_KEY, &json)?;
        Ok(turn
            .sender_id
            .as_ref()
            .is_some_and(|s| self.admins.contains(s)))
    }

    /// Turns a reply's addressed blocks into rows, appended to `rows`. Blocks to unknown
    /// names are dropped and logged; returns whether any was.
    fn route(
        &self,
        messages: Vec<(String, String)>,
        destinations: &[Destination],
        routing: &Routing,
        max_seq: i64,
        rows: &mut Vec<OutRow>,
    ) -> crate::db::Result<bool> {
        let mut dropped = false;
        for (name, body) in messages {
            match destinations.iter().find(|d| d.name == name) {
                Some(d) => rows.push(self.reply_to_destination(d, routing, max_seq, &body)?),
                None => {
                    tracing::warn!(
                        destination = %name,
                        body = output::preview(&body, 200),
                        "dropping message to unknown destination"
                    );
                    dropped = true;
                }
            }
        }
        Ok(dropped)
    }

    /// Runs one request; on an invalid continuation clears it and retries once, fresh.
    /// The outer `Result` is for database errors only.
    fn exchange(
        &mut self,
        kind: RequestKind,
        input: &str,
        system_prompt: &str,
        hints: &Hints,
    ) -> crate::db::Result<Result<String, ProviderError>> {
        let mut continuation = self.db.state(&self.continuation_key)?;
        let mut retried = false;
        loop {
            let req = Request {
                kind,
                input,
                system_prompt,
                continuation: continuation.as_deref(),
                hints,
            };
            let mut db_error = None;
            let mut compacted = false;
            let result = {
                let (db, heartbeat, key) = (&self.db, &self.heartbeat, &self.continuation_key);
                let mut on_event = |ev: Event<'_>| {
                    touch(heartbeat);
                    match ev {
                        Event::Activity => {}
                        Event::Progress(what) => tracing::info!(what, "provider progress"),
                        Event::Compacted => {
                            tracing::info!("provider compacted the conversation");
                            compacted = true;
                        }
                        Event::Continuation(id) => {
                            // Persist at once: a crash mid-turn can still resume.
                            let stored = db.state(key).and_then(|cur| {
                                if cur.as_deref() == Some(id) {
                                    Ok(())
                                } else {
                                    db.set_state(key, id)
                                }
                            });
                            if let Err(e) = stored {
                                db_error.get_or_insert(e);
                            }
                        }
                    }
                };
                self.provider.exchange(&req, &mut on_event)
            };
            self.compacted |= compacted;
            if let Some(e) = db_error {
                return Err(e);
            }
            match result {
                Err(ProviderError::Failed {
                    session_invalid: true,
                    ref message,
                }) if continuation.is_some() && !retried => {
                    tracing::warn!(error = %message, "stored conversation is gone; starting a fresh one");
                    self.db.delete_state(&self.continuation_key)?;
                    self.provider.reset();
                    continuation = None;
                    retried = true;
                }
                other => return Ok(other),
            }
        }
    }

    fn hints(&self, newest: Option<&Inbound>, destinations: &[Destination]) -> Hints {
        let Some(m) = newest else {
            return Hints {
                assistant_name: self.assistant_name.clone(),
                ..Hints::default()
            };
        };
        let text = match &m.body {
            format::Body::Chat(c) => c.text.clone(),
            format::Body::Task(t) => t.prompt.clone(),
            format::Body::System(s) => s.text.clone(),
        };
        Hints {
            from: format::origin_name(&m.row, destinations)
                .filter(|n| destinations.iter().any(|d| &d.name == n)),
            sender: m.sender().to_string(),
            text,
            assistant_name: self.assistant_name.clone(),
        }
    }

    /// A chat reply to the place `msg` came from (falling back to the session's routing).
    fn reply_to_message(&self, msg: &Inbound, routing: &Routing, text: &str) -> Option<OutRow> {
        let reply = match (&msg.row.channel_type, &msg.row.platform_id) {
            (Some(ct), Some(pid)) => Reply {
                channel_type: ct.clone(),
                platform_id: pid.clone(),
                thread_id: msg.row.thread_id.clone(),
                in_reply_to: Some(msg.row.id.clone()),
            },
            _ => match (&routing.channel_type, &routing.platform_id) {
                (Some(ct), Some(pid)) => Reply {
                    channel_type: ct.clone(),
                    platform_id: pid.clone(),
                    thread_id: routing.thread_id.clone(),
                    in_reply_to: None,
                },
                _ => {
                    tracing::warn!(id = %msg.row.id, text, "no address to reply to; reply dropped");
                    return None;
                }
            },
        };
        Some(chat_row(reply, text))
    }

    /// A chat message to a destination, threaded under the newest message from there.
    fn reply_to_destination(
        &self,
        dest: &Destination,
        routing: &Routing,
        max_seq: i64,
        text: &str,
    ) -> crate::db::Result<OutRow> {
        let (ct, pid) = dest.target.address();
        let (in_reply_to, thread_id) = match self.db.latest_chat_from(ct, pid, max_seq)? {
            Some((id, thread)) => (Some(id), thread),
            None => {
                let same_chat = matches!(dest.target, Target::Channel { .. })
                    && routing.channel_type.as_deref() == Some(ct)
                    && routing.platform_id.as_deref() == Some(pid);
                (
                    None,
                    if same_chat {
                        routing.thread_id.clone()
                    } else {
                        None
                    },
                )
            }
        };
        Ok(chat_row(
            Reply {
                channel_type: ct.to_string(),
                platform_id: pid.to_string(),
                thread_id,
                in_reply_to,
            },
            text,
        ))
    }
}

fn refs(ids: &[String]) -> Vec<&str> {
    ids.iter().map(String::as_str).collect()
}

fn chat_row(reply: Reply, text: &str) -> OutRow {
    // Serializing a plain enum of strings cannot fail.
    let content = serde_json::to_string(&ChatOut::text(text)).unwrap_or_default();
    OutRow {
        kind: OutKind::Chat,
        in_reply_to: reply.in_reply_to,
        channel_type: Some(reply.channel_type),
        platform_id: Some(reply.platform_id),
        thread_id: reply.thread_id,
        content,
    }
}

/// The admin command a message is, if it is one: a triggering chat message whose trimmed text
/// starts with `/` and whose first word, lower-cased, is exactly one of [`ADMIN_COMMANDS`].
fn admin_command(m: &Inbound) -> Option<&'static str> {
    if !m.row.trigger {
        return None;
    }
    let first = m.chat()?.text.split_whitespace().next()?;
    if !first.starts_with('/') {
        return None;
    }
    let lower = first.to_lowercase();
    ADMIN_COMMANDS.iter().copied().find(|c| *c == lower)
}

/// Sets the heartbeat's mtime to now, creating the file if needed. Failures are logged only.
fn touch(path: &std::path::Path) {
    let res = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .and_then(|f| f.set_modified(SystemTime::now()));
    if let Err(e) = res {
        tracing::debug!(error = %e, path = %path.display(), "cannot touch heartbeat");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::InRow;

    fn chat(text: &str, trigger: bool) -> Inbound {
        Inbound::parse(InRow {
            id: "m".into(),
            seq: 2,
            kind: "chat".into(),
            timestamp: String::new(),
            trigger,
            channel_type: None,
            platform_id: None,
            thread_id: None,
            content: serde_json::json!({ "text": text }).to_string(),
        })
        .unwrap()
    }

    #[test]
    fn admin_commands_match_exactly() {
        assert_eq!(admin_command(&chat("  /CLEAR  ", true)), Some("/clear"));
        assert_eq!(admin_command(&chat("/cost please", true)), Some("/cost"));
        assert_eq!(admin_command(&chat("/clearfoo", true)), None);
        assert_eq!(admin_command(&chat("/help", true)), None);
        assert_eq!(admin_command(&chat("please /clear", true)), None);
        assert_eq!(
            admin_command(&chat("/clear", false)),
            None,
            "context rows are never commands"
        );
    }

    #[test]
    fn heartbeat_is_created_and_touched() {
        let dir = tempfile::tempdir().unwrap();
        let hb = dir.path().join(HEARTBEAT_FILE);
        touch(&hb);
        let old = SystemTime::now() - Duration::from_secs(3600);
        std::fs::File::options()
            .write(true)
            .open(&hb)
            .unwrap()
            .set_modified(old)
            .unwrap();
        touch(&hb);
        let m = std::fs::metadata(&hb).unwrap().modified().unwrap();
        assert!(m > old + Duration::from_secs(3000));
    }
}
