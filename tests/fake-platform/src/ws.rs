//! WebSocket endpoints for platform fakes (gateways such as Discord's, Slack's Socket Mode).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::routing::{MethodRouter, get};
use futures::{SinkExt as _, StreamExt as _};
use serde::Serialize;
use tokio::sync::mpsc;

/// One WebSocket connection, numbered from 1 in connection order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct ConnId(pub u64);

/// A data frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WsMessage {
    /// A text frame.
    Text(String),
    /// A binary frame.
    Binary(Vec<u8>),
}

impl WsMessage {
    /// The text of a text frame.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Self::Text(text) => Some(text),
            Self::Binary(_) => None,
        }
    }

    /// A text frame parsed as JSON.
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_str(self.as_text()?).ok()
    }
}

impl From<WsMessage> for Message {
    fn from(message: WsMessage) -> Self {
        match message {
            WsMessage::Text(text) => Message::Text(text.into()),
            WsMessage::Binary(data) => Message::Binary(data.into()),
        }
    }
}

/// A frame a client sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WsFrame {
    /// From which connection.
    pub conn: ConnId,
    /// Wall-clock time, ms since the Unix epoch.
    pub at_ms: i64,
    /// The frame.
    pub message: WsMessage,
}

enum Outgoing {
    Message(WsMessage),
    Close(u16, String),
    Drop,
}

type ConnectFn = dyn Fn(ConnId) -> Vec<WsMessage> + Send + Sync;
type MessageFn = dyn Fn(ConnId, &WsMessage) -> Vec<WsMessage> + Send + Sync;

#[derive(Default)]
struct State {
    next: u64,
    open: BTreeMap<u64, mpsc::UnboundedSender<Outgoing>>,
    received: Vec<WsFrame>,
}

#[derive(Default)]
struct Inner {
    state: Mutex<State>,
    on_connect: RwLock<Option<Arc<ConnectFn>>>,
    on_message: RwLock<Option<Arc<MessageFn>>>,
}

/// The server side of a WebSocket endpoint: mount [`route`](Self::route) in the fake's
/// router, script it with [`on_connect`](Self::on_connect) and
/// [`on_message`](Self::on_message), push events with [`send`](Self::send) /
/// [`broadcast`](Self::broadcast), and break connections with [`close`](Self::close) (a
/// close frame) or [`drop_all`](Self::drop_all) (no close frame, as a network failure).
/// Clones share the endpoint.
#[derive(Clone, Default)]
pub struct WsHub {
    inner: Arc<Inner>,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl WsHub {
    /// An endpoint with no script: it records what clients send and answers nothing.
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Frames sent to every new connection (a gateway's hello).
    pub fn on_connect(&self, f: impl Fn(ConnId) -> Vec<WsMessage> + Send + Sync + 'static) {
        *self
            .inner
            .on_connect
            .write()
            .unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(f));
    }

    /// Frames sent back for each frame a client sends (a heartbeat's ack, an identify's
    /// ready).
    pub fn on_message(
        &self,
        f: impl Fn(ConnId, &WsMessage) -> Vec<WsMessage> + Send + Sync + 'static,
    ) {
        *self
            .inner
            .on_message
            .write()
            .unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(f));
    }

    /// The `GET` route that upgrades to this endpoint.
    pub fn route<S: Clone + Send + Sync + 'static>(&self) -> MethodRouter<S> {
        let hub = self.clone();
        get(move |upgrade: WebSocketUpgrade| {
            let hub = hub.clone();
            async move { upgrade.on_upgrade(move |socket| hub.serve(socket)) }
        })
    }

    async fn serve(self, socket: WebSocket) {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let id = {
            let mut state = self.state();
            state.next += 1;
            let id = state.next;
            state.open.insert(id, tx);
            ConnId(id)
        };
        let (mut sink, mut stream) = socket.split();
        let hello = self
            .inner
            .on_connect
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .map(|f| f(id))
            .unwrap_or_default();
        let mut alive = true;
        for message in hello {
            alive &= sink.send(message.into()).await.is_ok();
        }
        while alive {
            tokio::select! {
                out = rx.recv() => match out {
                    Some(Outgoing::Message(message)) => {
                        alive = sink.send(message.into()).await.is_ok();
                    }
                    Some(Outgoing::Close(code, reason)) => {
                        let frame = CloseFrame { code, reason: reason.into() };
                        let _ = sink.send(Message::Close(Some(frame))).await;
                        break;
                    }
                    // Dropping the socket closes the TCP connection with no close frame.
                    Some(Outgoing::Drop) | None => break,
                },
                incoming = stream.next() => {
                    let message = match incoming {
                        Some(Ok(Message::Text(text))) => WsMessage::Text(text.to_string()),
                        Some(Ok(Message::Binary(data))) => WsMessage::Binary(data.to_vec()),
                        Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                        Some(Ok(Message::Close(_)) | Err(_)) | None => break,
                    };
                    self.state().received.push(WsFrame {
                        conn: id,
                        at_ms: now_ms(),
                        message: message.clone(),
                    });
                    let replies = self
                        .inner
                        .on_message
                        .read()
                        .unwrap_or_else(|p| p.into_inner())
                        .clone()
                        .map(|f| f(id, &message))
                        .unwrap_or_default();
                    for reply in replies {
                        alive &= sink.send(reply.into()).await.is_ok();
                    }
                }
            }
        }
        self.state().open.remove(&id.0);
    }

    /// Open connections, oldest first.
    pub fn connections(&self) -> Vec<ConnId> {
        self.state().open.keys().map(|&id| ConnId(id)).collect()
    }

    /// How many connections were ever opened.
    pub fn connections_opened(&self) -> u64 {
        self.state().next
    }

    /// Sends a frame to one connection; false when it is not open.
    pub fn send(&self, conn: ConnId, message: WsMessage) -> bool {
        self.state()
            .open
            .get(&conn.0)
            .is_some_and(|tx| tx.send(Outgoing::Message(message)).is_ok())
    }

    /// Sends a frame to every open connection; returns how many.
    pub fn broadcast(&self, message: WsMessage) -> usize {
        self.state()
            .open
            .values()
            .filter(|tx| tx.send(Outgoing::Message(message.clone())).is_ok())
            .count()
    }

    /// Closes a connection with a close frame (`code`, `reason`).
    pub fn close(&self, conn: ConnId, code: u16, reason: &str) -> bool {
        self.state()
            .open
            .get(&conn.0)
            .is_some_and(|tx| tx.send(Outgoing::Close(code, reason.to_owned())).is_ok())
    }

    /// Drops every connection without a close frame (as a network failure would); returns
    /// how many.
    pub fn drop_all(&self) -> usize {
        self.state()
            .open
            .values()
            .filter(|tx| tx.send(Outgoing::Drop).is_ok())
            .count()
    }

    /// Every frame clients sent, in order.
    pub fn received(&self) -> Vec<WsFrame> {
        self.state().received.clone()
    }

    /// Waits (blocking, polling) until at least `n` connections are open.
    pub fn wait_connections(&self, n: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while self.state().open.len() < n {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        true
    }
}
