//! NanoClaw's local chat channel (`cli`): talk to an agent from a terminal on the machine
//! running the daemon, with no chat platform account. `nanoclaw chat` is its client.
//!
//! # Socket and identity
//!
//! The plugin listens on a Unix socket, by default `<plugin data dir>/chat.sock`
//! (`data/plugins/cli/chat.sock`). Its directory is private (0700) before the socket is
//! created and the socket is 0600, so only the daemon's user (and root) can connect. A stale
//! socket left by a crash is replaced at start; a socket something still listens on, or a
//! path that is not a socket, is refused. The socket is removed at teardown.
//!
//! The peer's uid (`SO_PEERCRED`) names the user: the chat id and sender handle are the login
//! name (the host makes them `cli:<user>`), the display name and chat name are the GECOS full
//! name if there is one. A uid with no passwd entry is named by its number. Every message is a
//! DM that mentions the agent.
//!
//! # Wire protocol
//!
//! Newline-delimited JSON, UTF-8, one object per line, both ways.
//!
//! Client → plugin:
//!
//! | line | meaning |
//! |---|---|
//! | `{"type":"message","text":"..."}` | a message for the agent (other fields are ignored) |
//!
//! Plugin → client:
//!
//! | line | meaning |
//! |---|---|
//! | `{"type":"message","id":"...","text":"..."}` | a message from the agent; `"backlog":true` is added when it arrived before this connection (it waited for you) |
//! | `{"type":"typing"}` | the agent is working on a reply (repeated every few seconds while it is) |
//! | `{"type":"error","text":"..."}` | your last line was not accepted: bad JSON, unknown `type`, a line over 64 KiB, an empty message, or the host could not take the message (send it again) |
//! | `{"type":"notice","text":"..."}` | about the session: superseded by a newer client, daemon shutting down; the connection closes after it |
//!
//! After an `error` the connection stays usable. Blank lines are ignored. Clients must ignore
//! unknown fields and unknown `type`s. Closing the connection ends the session.
//!
//! # Sessions and the backlog
//!
//! One client per user: a new connection takes over and the previous one gets a `notice` and
//! is closed. Replies for a user with no client are kept in the host's state store (the newest
//! 200 per user) and sent, in order, when the user next connects;
//! so are replies the previous client had not received when it went away. A client that stops
//! reading is disconnected (after 30 s, or once 1024 replies wait for it) and its replies go
//! to the backlog; `deliver` never waits for a client.
//!
//! # Settings
//!
//! ```toml
//! [plugins.cli.settings]
//! socket_path = "chat.sock"   # optional; relative to the plugin's data dir
//! ```
//!
//! A `socket_path` outside the data dir must be in a directory owned by the daemon's user
//! with mode 0700 (a missing one is created so).

mod chats;
mod identity;
mod protocol;
mod socket;
#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use nanoclaw_plugin_api::kit::prelude::*;
use serde::Deserialize;

use chats::{Limits, Shared};

/// `[plugins.cli.settings]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    /// Where to listen; relative paths are inside the plugin's data dir.
    #[serde(default)]
    socket_path: Option<PathBuf>,
}

/// The channel as the host loads it: the kit's lifecycle around [`Cli`].
pub type CliChannel = Hosted<Cli>;

/// The local chat channel.
pub struct Cli {
    socket_path: PathBuf,
    socket_dir: PathBuf,
    /// The socket's directory is the plugin's own data dir, which we may chmod 0700.
    dir_is_ours: bool,
    shared: Arc<Shared>,
    /// Between `start` and `run`: the bound listener.
    listener: Mutex<Option<tokio::net::UnixListener>>,
    /// The socket we created, once listening (teardown removes it while it is still ours).
    socket: Mutex<Option<socket::FileId>>,
}

impl Cli {
    fn socket(&self) -> MutexGuard<'_, Option<socket::FileId>> {
        self.socket.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The socket this channel listens on.
    pub fn socket_path(&self) -> &std::path::Path {
        &self.socket_path
    }

    fn with_limits(ctx: Context, life: &Lifecycle, limits: Limits) -> Result<Self, PluginError> {
        let settings: Settings = ctx.settings()?;
        let socket_path = ctx
            .data_dir
            .join(settings.socket_path.unwrap_or_else(|| "chat.sock".into()));
        let socket_dir = socket::validate_path(&socket_path)?;
        let dir_is_ours = socket_dir == ctx.data_dir;
        Ok(Self {
            socket_path,
            socket_dir,
            dir_is_ours,
            shared: Arc::new(Shared::new(life, limits)),
            listener: Mutex::new(None),
            socket: Mutex::new(None),
        })
    }
}

impl AsyncChannel for Cli {
    const INFO: ChannelInfo = ChannelInfo::new("Local chat", "cli", env!("CARGO_PKG_VERSION"))
        // Plain text only: no buttons, files, edits or reactions.
        .capabilities(Capabilities::TYPING)
        .description("Terminal chat on this machine over a Unix socket (`nanoclaw chat`)");
    /// Teardown waits this long for the sessions to save unsent replies.
    const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

    fn create(ctx: Context, life: &Lifecycle) -> Result<Self, PluginError> {
        Self::with_limits(ctx, life, Limits::default())
    }

    async fn start(&self) -> Result<(), PluginError> {
        socket::prepare_dir(&self.socket_dir, self.dir_is_ours)?;
        socket::remove_stale(&self.socket_path).await?;
        let (listener, socket) = socket::bind(&self.socket_path)?;
        self.shared.listening.store(true, Ordering::Relaxed);
        *self.listener.lock().unwrap_or_else(|p| p.into_inner()) = Some(listener);
        *self.socket() = Some(socket);
        tracing::info!(socket = %self.socket_path.display(), "local chat listening");
        Ok(())
    }

    async fn run(self: Arc<Self>, stop: StopSignal) {
        let listener = self
            .listener
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(listener) = listener {
            chats::accept_loop(Arc::clone(&self.shared), listener, stop).await;
        }
    }

    /// The terminal shows the agent's text as written (Markdown reads fine there), whole:
    /// one part, untouched.
    fn render(&self, message: OutboundMessage) -> Result<Vec<OutboundMessage>, PluginError> {
        Ok(vec![message])
    }

    async fn deliver(&self, message: OutboundMessage) -> Result<Option<String>, PluginError> {
        if message.op != OutboundOp::SEND {
            return Err(PluginError::unsupported(format_args!(
                "{} on the local chat",
                message.op
            )));
        }
        if !message.files.is_empty() {
            return Err(PluginError::unsupported("sending files on the local chat"));
        }
        if !message.buttons.is_empty() {
            return Err(PluginError::unsupported("buttons on the local chat"));
        }
        if message.chat_id.is_empty() {
            return Err(PluginError::invalid_input("empty chat id"));
        }
        self.shared
            .deliver(message.chat_id.as_str(), message.text.as_str())
            .map(Some)
    }

    async fn set_typing(&self, chat_id: &str, _thread_id: Option<&str>) {
        self.shared.set_typing(chat_id);
    }

    async fn health(&self, current: Health) -> Health {
        let last = current.last_ingest_ms;
        if self.socket().is_none() {
            return Health::new(HealthStatus::DOWN, "not listening", last);
        }
        if !self.shared.listening.load(Ordering::Relaxed) {
            return Health::new(HealthStatus::DOWN, "accept loop stopped", last);
        }
        Health::new(
            HealthStatus::OK,
            format!(
                "listening on {}; {} client(s) connected",
                self.socket_path.display(),
                self.shared.connected()
            ),
            last,
        )
    }

    async fn shutdown(&self) {
        self.shared.listening.store(false, Ordering::Relaxed);
        let socket = self.socket().take();
        if let Some(socket) = socket {
            socket::remove_ours(&self.socket_path, socket);
        }
    }
}
