//! `nanoclaw-agent mcp`: the agent's tools as an MCP server on stdio, started by the Claude
//! Code CLI from the config [`claude_config`] builds. stdout is the protocol; logs go to
//! stderr. Each call runs the [`Toolbox`] off the async thread (SQLite is blocking).

use std::sync::{Arc, Mutex, PoisonError};

use nanoclaw_schema::session::selfmod::{MCP_SERVERS_FILE, McpServer, RUNNER_MCP_SERVER};
use rmcp::ErrorData;
use rmcp::ServiceExt as _;
use rmcp::handler::server::ServerHandler;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::{RequestContext, RoleServer};
use serde_json::{Map, Value, json};

use crate::config::Config;
use crate::tools::{ToolSpec, Toolbox};

#[derive(Clone)]
struct Server {
    tools: Arc<Mutex<Toolbox>>,
}

impl Server {
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Toolbox) -> T + Send + 'static,
    ) -> Result<T, ErrorData> {
        let tools = Arc::clone(&self.tools);
        tokio::task::spawn_blocking(move || {
            let mut t = tools.lock().unwrap_or_else(PoisonError::into_inner);
            f(&mut t)
        })
        .await
        .map_err(|e| ErrorData::internal_error(format!("tool task failed: {e}"), None))
    }
}

fn tool(spec: ToolSpec) -> Tool {
    let schema: Map<String, Value> = match spec.schema {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    Tool::new(spec.name, spec.description, schema)
}

impl ServerHandler for Server {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new(
                RUNNER_MCP_SERVER,
                env!("CARGO_PKG_VERSION"),
            ))
            .with_instructions(
                "NanoClaw's tools: message your destinations, send files, ask questions, \
                 schedule tasks, and ask for changes to yourself. Every action is checked by \
                 the host.",
            )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let specs = self
            .blocking(|t| t.specs())
            .await?
            .map_err(|e| ErrorData::internal_error(e.to_string(), None))?;
        Ok(ListToolsResult::with_all_items(
            specs.into_iter().map(tool).collect(),
        ))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let name = request.name.to_string();
        let args = request.arguments.map(Value::Object).unwrap_or(Value::Null);
        let result = self.blocking(move |t| t.call(&name, args)).await?;
        Ok(match result {
            Ok(text) => CallToolResult::success(vec![ContentBlock::text(text)]),
            Err(e) => CallToolResult::error(vec![ContentBlock::text(format!("Error: {e}"))]),
        }
        .into())
    }
}

/// Serves the tools on stdin/stdout until the client goes away.
pub fn serve(cfg: &Config) -> Result<(), String> {
    let db = crate::db::SessionDb::open(&cfg.session_dir, &cfg.inbound_dir)
        .map_err(|e| e.to_string())?;
    let toolbox = Toolbox::new(
        db,
        cfg.session_dir.clone(),
        cfg.agent_dir.clone(),
        cfg.admin_user_ids.clone(),
        cfg.tz.clone(),
    );
    let server = Server {
        tools: Arc::new(Mutex::new(toolbox)),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    rt.block_on(async move {
        let running = server
            .serve(rmcp::transport::stdio())
            .await
            .map_err(|e| format!("MCP session failed to start: {e}"))?;
        running
            .waiting()
            .await
            .map_err(|e| format!("MCP session ended with an error: {e}"))?;
        Ok(())
    })
}

/// The `--mcp-config` for the Claude Code CLI: this binary's `mcp` mode as the `nanoclaw`
/// server (with the environment it needs), plus the servers approved for the agent group,
/// read from the operator-owned config directory (read-only in the container).
pub fn claude_config(cfg: &Config, env: &[(&str, String)]) -> Value {
    let exe = std::env::current_exe()
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "nanoclaw-agent".into());
    let own_env: Map<String, Value> = env
        .iter()
        .map(|(k, v)| ((*k).to_string(), Value::String(v.clone())))
        .collect();
    let mut servers = Map::new();
    for (name, server) in approved_servers(cfg) {
        servers.insert(
            name,
            json!({"type": "stdio", "command": server.command, "args": server.args, "env": server.env}),
        );
    }
    servers.insert(
        RUNNER_MCP_SERVER.into(),
        json!({"type": "stdio", "command": exe, "args": ["mcp"], "env": own_env}),
    );
    json!({ "mcpServers": servers })
}

/// The approved servers in `<config dir>/mcp-servers.json`; a broken file is logged and
/// skipped, never fatal.
fn approved_servers(cfg: &Config) -> Vec<(String, McpServer)> {
    let path = cfg.config_dir.join(MCP_SERVERS_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot read the approved MCP servers");
            return Vec::new();
        }
    };
    let servers: std::collections::BTreeMap<String, McpServer> = match serde_json::from_str(&text) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "unreadable approved MCP servers; none added");
            return Vec::new();
        }
    };
    servers
        .into_iter()
        .filter(|(name, server)| {
            let ok = nanoclaw_schema::session::selfmod::check_mcp_server(name, server);
            if let Err(e) = &ok {
                tracing::warn!(server = %name, error = %e, "skipping an approved MCP server");
            }
            ok.is_ok()
        })
        .collect()
}
