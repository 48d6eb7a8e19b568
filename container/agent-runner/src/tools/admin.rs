//! Changing the agent's world: new agents (for admins), packages and MCP servers (through an
//! approver). All fire and forget: the host decides and tells the agent in its chat.

use std::collections::BTreeMap;

use nanoclaw_schema::session::content::SystemAction;
use nanoclaw_schema::session::limits;
use nanoclaw_schema::session::selfmod::{self, McpServer};
use serde::Deserialize;
use serde_json::json;

use super::{ToolError, ToolResult, ToolSpec, Toolbox};

/// Longest instructions for a new agent, in characters.
const MAX_INSTRUCTIONS_CHARS: usize = 16_000;

pub(super) fn specs(admin_turn: bool) -> Vec<ToolSpec> {
    let mut specs = Vec::new();
    if admin_turn {
        specs.push(ToolSpec {
            name: "create_agent",
            description: "Create a new agent (its own memory and container) for the admin you \
                          are talking to. It becomes a destination you can message at once, \
                          and you become its `parent`."
                .into(),
            schema: json!({
                "type": "object",
                "properties": {
                    "name": {"type": "string", "description": "Its name, e.g. Researcher."},
                    "instructions": {"type": "string", "description": "Who it is and what it does (its memory file)."},
                },
                "required": ["name"],
            }),
        });
    }
    specs.push(ToolSpec {
        name: "install_packages",
        description: format!(
            "Ask for Debian (apt) or npm packages to be installed in your image for good. An \
             admin approves it; once approved your container restarts with them and you are \
             told. At most {} names, no versions.",
            selfmod::MAX_PACKAGES
        ),
        schema: json!({
            "type": "object",
            "properties": {
                "apt": {"type": "array", "items": {"type": "string"}},
                "npm": {"type": "array", "items": {"type": "string"}},
                "reason": {"type": "string", "description": "Why you need them (the approver reads it)."},
            },
        }),
    });
    specs.push(ToolSpec {
        name: "add_mcp_server",
        description: "Ask for an MCP server (started over stdio in your container) to be added \
                      to your tools. An admin approves it; then your container restarts and its \
                      tools appear as mcp__<name>__<tool>."
            .into(),
        schema: json!({
            "type": "object",
            "properties": {
                "name": {"type": "string"},
                "command": {"type": "string"},
                "args": {"type": "array", "items": {"type": "string"}},
                "env": {"type": "object", "additionalProperties": {"type": "string"}},
            },
            "required": ["name", "command"],
        }),
    });
    specs
}

#[derive(Debug, Deserialize)]
pub(super) struct CreateAgent {
    name: String,
    instructions: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(super) struct InstallPackages {
    #[serde(default)]
    apt: Vec<String>,
    #[serde(default)]
    npm: Vec<String>,
    reason: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(super) struct AddMcpServer {
    name: String,
    command: String,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
}

impl Toolbox {
    pub(super) fn create_agent(&mut self, a: CreateAgent) -> ToolResult {
        // The host checks again against its own records; this only spares a refused request.
        if !self.admin_turn()? {
            return Err(ToolError::new(
                "only an admin of this agent may have agents created",
            ));
        }
        let name = a.name.trim();
        if name.is_empty() || name.len() > limits::MAX_SHORT_FIELD_BYTES {
            return Err(ToolError::new("give the agent a name"));
        }
        let instructions = a
            .instructions
            .map(|i| i.trim().to_string())
            .filter(|i| !i.is_empty());
        if instructions
            .as_ref()
            .is_some_and(|i| i.chars().count() > MAX_INSTRUCTIONS_CHARS)
        {
            return Err(ToolError::new(format!(
                "the instructions are longer than {MAX_INSTRUCTIONS_CHARS} characters"
            )));
        }
        self.write_system(&SystemAction::CreateAgent {
            name: name.to_string(),
            instructions,
        })?;
        Ok(format!(
            "Creation of agent {name:?} requested. The host tells you when it exists (then \
             message it by its name)."
        ))
    }

    pub(super) fn install_packages(&mut self, a: InstallPackages) -> ToolResult {
        selfmod::check_packages(&a.apt, &a.npm).map_err(ToolError)?;
        let reason = a
            .reason
            .map(|r| r.trim().to_string())
            .filter(|r| !r.is_empty());
        if reason
            .as_ref()
            .is_some_and(|r| r.len() > limits::MAX_SHORT_FIELD_BYTES)
        {
            return Err(ToolError::new("the reason is too long"));
        }
        let names: Vec<&str> = a.apt.iter().chain(&a.npm).map(String::as_str).collect();
        let names = names.join(", ");
        self.write_system(&SystemAction::InstallPackages {
            apt: a.apt,
            npm: a.npm,
            reason,
        })?;
        Ok(format!(
            "Install of {names} submitted for approval. You are told in this chat when it is \
             decided; do not wait for it."
        ))
    }

    pub(super) fn add_mcp_server(&mut self, a: AddMcpServer) -> ToolResult {
        let server = McpServer {
            command: a.command,
            args: a.args,
            env: a.env,
        };
        selfmod::check_mcp_server(&a.name, &server).map_err(ToolError)?;
        self.write_system(&SystemAction::AddMcpServer {
            name: a.name.clone(),
            server,
        })?;
        Ok(format!(
            "MCP server {:?} submitted for approval. You are told in this chat when it is \
             decided; do not wait for it.",
            a.name
        ))
    }
}
