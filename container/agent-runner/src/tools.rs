//! The agent's tools: what a model may ask for besides its reply text.
//!
//! Every tool turns its arguments into one `messages_out` row in the shapes the host expects
//! (a chat operation or a system action); nothing here acts on its own. The host re-checks
//! each row (destinations, message ids, admin rights, limits), so these checks only give the
//! model a clear error early. The same [`Toolbox`] serves the MCP server Claude Code talks to
//! ([`crate::mcp`]) and the mock provider's scripted tool calls.
//!
//! - [`messaging`]: `send_message`, `send_file`, `edit_message`, `add_reaction`,
//!   `ask_user_question`.
//! - [`tasks`]: `schedule_task`, `list_tasks`, `update_task`, `pause_task`, `resume_task`,
//!   `cancel_task`.
//! - [`admin`]: `create_agent` (offered only while an admin is talking), `install_packages`,
//!   `add_mcp_server`.

mod admin;
mod messaging;
mod tasks;

use std::collections::HashSet;
use std::path::PathBuf;

use jiff::tz::TimeZone;
use nanoclaw_schema::session::OutKind;
use nanoclaw_schema::session::content::{ChatOut, SystemAction};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::db::{Destination, OutRow, SessionDb, Target};

/// `session_state` key of the [`Turn`] the runner is working on.
pub const TURN_STATE_KEY: &str = "turn";

/// What the runner is answering right now; written by the runner before each exchange, read
/// by the tools (a separate process for Claude) to address rows and decide what to offer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Turn {
    /// `messages_in.id` of the newest triggering message.
    pub in_reply_to: Option<String>,
    /// Its sender (`telegram:123`), for chat messages.
    pub sender_id: Option<String>,
    pub channel_type: Option<String>,
    pub platform_id: Option<String>,
    pub thread_id: Option<String>,
}

/// A tool's failure, worded for the model.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ToolError(pub String);

impl ToolError {
    pub fn new(message: impl Into<String>) -> ToolError {
        ToolError(message.into())
    }
}

impl From<crate::db::DbError> for ToolError {
    fn from(e: crate::db::DbError) -> ToolError {
        ToolError(format!("the session database failed: {e}"))
    }
}

pub type ToolResult = Result<String, ToolError>;

/// A tool as offered to the model: name, description and JSON Schema of its arguments.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolSpec {
    pub name: &'static str,
    pub description: String,
    pub schema: Value,
}

pub struct Toolbox {
    db: SessionDb,
    /// The session workspace (`outbox/` lives here).
    session_dir: PathBuf,
    /// The agent's working directory: relative file paths start here.
    agent_dir: PathBuf,
    admins: HashSet<String>,
    tz: TimeZone,
    /// Distinguishes ids made in the same millisecond.
    counter: u32,
}

impl Toolbox {
    pub fn new(
        db: SessionDb,
        session_dir: PathBuf,
        agent_dir: PathBuf,
        admins: HashSet<String>,
        tz: TimeZone,
    ) -> Toolbox {
        Toolbox {
            db,
            session_dir,
            agent_dir,
            admins,
            tz,
            counter: 0,
        }
    }

    /// The tools on offer now: destinations are read live into the descriptions, and
    /// `create_agent` is there only while an admin is talking.
    pub fn specs(&self) -> Result<Vec<ToolSpec>, ToolError> {
        let destinations = self.db.destinations()?;
        let mut specs = messaging::specs(&destinations);
        specs.extend(tasks::specs(&destinations));
        specs.extend(admin::specs(self.admin_turn()?));
        Ok(specs)
    }

    /// Runs one tool call. Unknown tools and bad arguments are errors for the model.
    pub fn call(&mut self, name: &str, args: Value) -> ToolResult {
        let result = match name {
            "send_message" => self.send_message(parse(args)?),
            "send_file" => self.send_file(parse(args)?),
            "edit_message" => self.edit_message(parse(args)?),
            "add_reaction" => self.add_reaction(parse(args)?),
            "ask_user_question" => self.ask_user_question(parse(args)?),
            "schedule_task" => self.schedule_task(parse(args)?),
            "list_tasks" => self.list_tasks(),
            "update_task" => self.update_task(parse(args)?),
            "pause_task" | "resume_task" | "cancel_task" => self.task_state(name, parse(args)?),
            "create_agent" => self.create_agent(parse(args)?),
            "install_packages" => self.install_packages(parse(args)?),
            "add_mcp_server" => self.add_mcp_server(parse(args)?),
            _ => Err(ToolError::new(format!("there is no tool {name:?}"))),
        };
        match &result {
            Ok(said) => tracing::info!(tool = name, result = %said, "tool call"),
            Err(e) => tracing::warn!(tool = name, error = %e, "tool call refused"),
        }
        result
    }

    fn turn(&self) -> Result<Turn, ToolError> {
        Ok(self
            .db
            .state(TURN_STATE_KEY)?
            .and_then(|s| serde_json::from_str(&s).ok())
            .unwrap_or_default())
    }

    /// True while the triggering message came from one of the agent's admins.
    fn admin_turn(&self) -> Result<bool, ToolError> {
        Ok(self
            .turn()?
            .sender_id
            .is_some_and(|s| self.admins.contains(&s)))
    }

    /// A fresh outbound message id (also the name of its `outbox/` directory).
    fn next_id(&mut self) -> String {
        self.counter = self.counter.wrapping_add(1);
        format!(
            "tool-{}-{}-{}",
            nanoclaw_schema::time::now_ms(),
            std::process::id(),
            self.counter
        )
    }

    /// Writes a chat row to `address`; returns its seq.
    fn write_chat(&mut self, id: &str, address: &Address, op: &ChatOut) -> Result<i64, ToolError> {
        let row = OutRow {
            kind: OutKind::Chat,
            in_reply_to: self.turn()?.in_reply_to,
            channel_type: Some(address.channel_type.clone()),
            platform_id: Some(address.platform_id.clone()),
            thread_id: address.thread_id.clone(),
            content: to_json(op)?,
        };
        Ok(self.db.write_row(id, &row)?)
    }

    /// Writes a system action for the host, answering the current turn.
    fn write_system(&mut self, action: &SystemAction) -> Result<i64, ToolError> {
        let turn = self.turn()?;
        let row = OutRow {
            kind: OutKind::System,
            in_reply_to: turn.in_reply_to,
            channel_type: turn.channel_type,
            platform_id: turn.platform_id,
            thread_id: turn.thread_id,
            content: to_json(action)?,
        };
        let id = self.next_id();
        Ok(self.db.write_row(&id, &row)?)
    }

    /// Where a message goes: the named destination, else the chat of the current turn, else
    /// the session's own chat, else the only destination there is.
    fn resolve(&self, to: Option<&str>) -> Result<Address, ToolError> {
        let destinations = self.db.destinations()?;
        let turn = self.turn()?;
        let routing = self.db.routing()?;
        if let Some(name) = to.map(str::trim).filter(|n| !n.is_empty()) {
            let Some(d) = destinations.iter().find(|d| d.name == name) else {
                return Err(ToolError::new(format!(
                    "unknown destination {name:?}; known: {}",
                    names(&destinations)
                )));
            };
            let (ct, pid) = d.target.address();
            // Threads only make sense in the chat the thread is in.
            let thread_id = match &d.target {
                Target::Channel { .. }
                    if turn.channel_type.as_deref() == Some(ct)
                        && turn.platform_id.as_deref() == Some(pid) =>
                {
                    turn.thread_id.clone()
                }
                _ => None,
            };
            return Ok(Address {
                name: d.name.clone(),
                channel_type: ct.to_string(),
                platform_id: pid.to_string(),
                thread_id,
            });
        }
        if let (Some(ct), Some(pid)) = (turn.channel_type, turn.platform_id) {
            return Ok(Address {
                name: origin_name(&destinations, &ct, &pid),
                channel_type: ct,
                platform_id: pid,
                thread_id: turn.thread_id,
            });
        }
        if let (Some(ct), Some(pid)) = (routing.channel_type, routing.platform_id) {
            return Ok(Address {
                name: origin_name(&destinations, &ct, &pid),
                channel_type: ct,
                platform_id: pid,
                thread_id: routing.thread_id,
            });
        }
        match destinations.as_slice() {
            [only] => self.resolve(Some(&only.name)),
            [] => Err(ToolError::new("this agent has no destinations")),
            _ => Err(ToolError::new(format!(
                "say where with `to`: one of {}",
                names(&destinations)
            ))),
        }
    }
}

/// A resolved place to post.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Address {
    /// The destination name, for the tool's answer.
    name: String,
    channel_type: String,
    platform_id: String,
    thread_id: Option<String>,
}

fn origin_name(destinations: &[Destination], ct: &str, pid: &str) -> String {
    destinations
        .iter()
        .find(|d| d.target.address() == (ct, pid))
        .map_or_else(|| "this chat".to_string(), |d| d.name.clone())
}

fn names(destinations: &[Destination]) -> String {
    if destinations.is_empty() {
        return "(none)".into();
    }
    destinations
        .iter()
        .map(|d| d.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The `to` parameter's schema, listing the destinations there are now.
fn to_schema(destinations: &[Destination]) -> Value {
    serde_json::json!({
        "type": "string",
        "description": format!(
            "Destination name (default: the chat you are answering). Known now: {}",
            names(destinations)
        ),
    })
}

fn parse<T: DeserializeOwned>(args: Value) -> Result<T, ToolError> {
    let args = if args.is_null() {
        Value::Object(Default::default())
    } else {
        args
    };
    serde_json::from_value(args).map_err(|e| ToolError::new(format!("bad arguments: {e}")))
}

fn to_json<T: Serialize>(v: &T) -> Result<String, ToolError> {
    serde_json::to_string(v).map_err(|e| ToolError::new(format!("cannot encode the row: {e}")))
}

#[cfg(test)]
mod tests;
