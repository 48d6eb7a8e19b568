//! Environment variables the host sets in every agent container (and the agent-runner reads).

/// The session workspace (default [`super::layout::CONTAINER_WORKSPACE`]).
pub const SESSION_DIR: &str = "NANOCLAW_SESSION_DIR";
/// The read-only inbound directory (default [`super::layout::CONTAINER_INBOUND_DIR`]).
pub const INBOUND_DIR: &str = "NANOCLAW_INBOUND_DIR";
/// The agent group's folder (default [`super::layout::CONTAINER_AGENT_DIR`]).
pub const AGENT_DIR: &str = "NANOCLAW_AGENT_DIR";
/// The operator's read-only config of the agent group (default
/// [`super::layout::CONTAINER_CONFIG_DIR`]): approved MCP servers, the mock script.
pub const CONFIG_DIR: &str = "NANOCLAW_CONFIG_DIR";
/// Shared read-only memory (default [`super::layout::CONTAINER_GLOBAL_DIR`]).
pub const GLOBAL_DIR: &str = "NANOCLAW_GLOBAL_DIR";
pub const AGENT_GROUP_ID: &str = "NANOCLAW_AGENT_GROUP_ID";
pub const SESSION_ID: &str = "NANOCLAW_SESSION_ID";
/// `mock`, `claude` or `openai`.
pub const PROVIDER: &str = "NANOCLAW_PROVIDER";
pub const ASSISTANT_NAME: &str = "NANOCLAW_ASSISTANT_NAME";
/// Comma-separated user ids with admin privilege over this agent group.
pub const ADMIN_USER_IDS: &str = "NANOCLAW_ADMIN_USER_IDS";
pub const MODEL: &str = "NANOCLAW_MODEL";
pub const MOCK_SCRIPT: &str = "NANOCLAW_MOCK_SCRIPT";
/// The agent-runner's log filter.
pub const LOG: &str = "NANOCLAW_LOG";
/// The host's model-API proxy socket inside the container (the host sets it to
/// [`super::layout::CONTAINER_MODEL_SOCKET`] when it serves one). The runner relays
/// `http://127.0.0.1:<port>` to it; the credential stays on the host.
pub const MODEL_SOCKET: &str = "NANOCLAW_MODEL_SOCKET";
/// A model API base URL used as is when there is no proxy socket (development and tests).
pub const MODEL_BASE_URL: &str = "NANOCLAW_MODEL_BASE_URL";
