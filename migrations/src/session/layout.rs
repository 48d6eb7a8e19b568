//! Where things are: the session directory on the host, and the paths the container sees.
//!
//! On the host a session lives in `<data>/sessions/<agent group id>/<session id>/`, split by
//! who may write:
//!
//! ```text
//! <session>/
//!   inbound/      written only by the host; mounted READ-ONLY at /workspace/inbound
//!     inbound.db (+ -wal, -shm)
//!     inbox/<message>/<file>
//!   workspace/    the container's; mounted read-write at /workspace
//!     outbound.db (+ -wal, -shm)
//!     outbox/<message>/<file>
//!     .heartbeat
//! ```
//!
//! The container cannot write `inbound/` at all (the mount is read-only), so what the host
//! reads back from `inbound.db` is what it wrote. Everything under `workspace/` is hostile
//! input to the host.

/// Host side: the directory the host writes (`inbound.db`, `inbox/`).
pub const INBOUND_DIR: &str = "inbound";
/// Host side: the directory the container writes (`outbound.db`, `outbox/`, `.heartbeat`).
pub const WORKSPACE_DIR: &str = "workspace";

pub const INBOUND_DB: &str = "inbound.db";
pub const OUTBOUND_DB: &str = "outbound.db";
pub const HEARTBEAT_FILE: &str = ".heartbeat";
/// Attachments of inbound messages, in the inbound directory: `inbox/<message>/<file>`.
pub const INBOX_DIR: &str = "inbox";
/// Files of outbound messages, in the workspace: `outbox/<message id>/<file>`.
pub const OUTBOX_DIR: &str = "outbox";

/// Container side: the session workspace (read-write).
pub const CONTAINER_WORKSPACE: &str = "/workspace";
/// Container side: the host's inbound directory (read-only).
pub const CONTAINER_INBOUND_DIR: &str = "/workspace/inbound";
/// Container side: the agent group's folder (read-write, shared by the group's sessions).
pub const CONTAINER_AGENT_DIR: &str = "/workspace/agent";
/// Container side: shared memory of all agents (read-only).
pub const CONTAINER_GLOBAL_DIR: &str = "/workspace/global";
/// Container side: the operator's config of the agent group (read-only).
pub const CONTAINER_CONFIG_DIR: &str = "/workspace/config";
/// Container side: `$HOME` of the agent (in the workspace, so it lasts as long as the session).
pub const CONTAINER_HOME: &str = "/workspace/.home";

/// Host side: the per-session directory of the model-API proxy socket, under the data dir
/// (`<data>/proxy/<session id>/`), owned by the host and mounted read-only.
pub const PROXY_DIR: &str = "proxy";
/// The socket's file name in that directory.
pub const MODEL_SOCKET_NAME: &str = "model.sock";
/// Container side: where that directory is mounted.
pub const CONTAINER_PROXY_DIR: &str = "/run/nanoclaw";
/// Container side: the model-API proxy socket.
pub const CONTAINER_MODEL_SOCKET: &str = "/run/nanoclaw/model.sock";

/// Names inside the workspace that are mount points, never the agent's own files.
pub const RESERVED_WORKSPACE_NAMES: &[&str] = &["inbound", "agent", "global", "config", "extra"];
