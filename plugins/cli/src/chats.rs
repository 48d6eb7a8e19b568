//! Chats, their clients and their backlogs.
//!
//! Each chat (one per local user) has:
//! * an in-memory **queue** of agent messages accepted while a client is live, written to the
//!   client in order and removed only once written (so a message being written when the
//!   client disappears is still there);
//! * a **backlog** in the host's state store (`backlog:<user>`, capped) holding what was
//!   delivered while no client was live;
//! * one **pump** task, created at the user's first connection, which owns the client's write
//!   half. It alone writes to clients and alone reads the backlog, so order is decided in one
//!   place: when a client attaches it first sends the backlog, removing each entry after it is
//!   written, and only when the backlog is empty (and no delivery is still being appended to
//!   it) does the chat go **live**, so that `deliver` puts messages on the queue. When the
//!   client goes away the pump moves the unwritten queue to the end of the backlog *before*
//!   the chat stops being live, so nothing overtakes it.
//!
//! `deliver` only takes a short lock and either pushes onto the queue (live) or appends to the
//! backlog itself (not live), never waiting for a client. A client that stops reading is
//! disconnected when its queue passes a soft cap or a write stalls for the write timeout; its
//! unwritten messages go to the backlog.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use nanoclaw_plugin_api::kit::{Stopped, now_ms, prelude::*};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt as _;
use tokio::net::UnixStream;
use tokio::net::unix::OwnedWriteHalf;
use tokio::sync::{Notify, mpsc, watch};

use crate::identity::Identity;
use crate::protocol::{
    ClientLine, Line, LineReader, MAX_LINE_BYTES, ServerLine, parse_client_line,
};

/// Tunable limits (tests shrink them).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Backlog entries kept per chat; older ones are dropped.
    pub backlog_max: u32,
    /// Queue length past which a live client is considered not to be reading.
    pub queue_soft_cap: usize,
    /// A write that makes no complete progress for this long disconnects the client.
    pub write_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            backlog_max: 200,
            queue_soft_cap: 1024,
            write_timeout: Duration::from_secs(30),
        }
    }
}

/// How long a superseded or departing client gets to receive its notice.
const NOTICE_TIMEOUT: Duration = Duration::from_secs(1);
/// Error/typing lines waiting for the pump beyond this are dropped.
const MAX_PENDING_CONTROL: usize = 64;
/// Capacity of each pump's event channel.
const PUMP_EVENTS: usize = 64;

pub(crate) const SUPERSEDED: &str =
    "superseded: you opened another chat session; this one is closed";
pub(crate) const SHUTTING_DOWN: &str = "nanoclaw is shutting down; this session is closed";

/// Completes once the kit signals stop (teardown).
async fn stopping(shutdown: &StopSignal) {
    shutdown.stopped().await;
}

fn backlog_key(user: &str) -> String {
    format!("backlog:{user}")
}

/// A message for a user, as queued and as stored in the backlog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Stored {
    id: String,
    text: String,
    /// When `deliver` accepted it (ms since the epoch).
    at: i64,
    /// The plugin run and the sequence number within it at which `deliver` accepted it:
    /// together they say whether it predates a connection.
    #[serde(default)]
    run: i64,
    #[serde(default)]
    seq: u64,
}

impl Stored {
    fn line(&self, backlog: bool) -> Vec<u8> {
        ServerLine::Message {
            id: self.id.clone(),
            text: self.text.clone(),
            backlog,
        }
        .encode()
    }

    /// Accepted before connection `conn` (of run `run`) was made.
    fn predates(&self, run: i64, conn: u64) -> bool {
        self.run != run || self.seq < conn
    }
}

#[derive(Default)]
struct Chat {
    /// A client is attached and the backlog has been sent: `deliver` queues.
    live: bool,
    /// Deliveries appending to the backlog right now (outside the lock).
    parked: usize,
    /// Accepted while live, not yet written. The front is removed once written.
    queue: VecDeque<Stored>,
    /// `deliver` found the queue past its cap: the pump must drop the client.
    kick: bool,
    /// The connection the pump is serving.
    attached: Option<u64>,
    pump: Option<PumpHandle>,
}

#[derive(Clone)]
struct PumpHandle {
    events: mpsc::Sender<PumpEvent>,
    wake: Arc<Notify>,
}

/// State shared by the channel's methods (host threads) and its tasks.
pub(crate) struct Shared {
    pub host: Host,
    /// The kit's lifecycle: task tracking (teardown waits for the pumps), health.
    pub life: Lifecycle,
    /// Identifies this plugin run in backlog entries.
    run: i64,
    pub limits: Limits,
    chats: Mutex<HashMap<String, Chat>>,
    seq: AtomicU64,
    pub listening: AtomicBool,
}

impl Shared {
    pub fn new(life: &Lifecycle, limits: Limits) -> Self {
        Self {
            host: life.host().clone(),
            life: life.clone(),
            run: now_ms(),
            limits,
            chats: Mutex::default(),
            seq: AtomicU64::new(1),
            listening: AtomicBool::new(false),
        }
    }

    fn chats(&self) -> MutexGuard<'_, HashMap<String, Chat>> {
        // Nothing below panics while holding the lock, but a poisoned map is still plain data.
        self.chats.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn next_seq(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::Relaxed)
    }

    /// A fresh message id: `<prefix>-<ms>-<seq>` (unique across restarts too).
    pub fn next_id(&self, prefix: &str) -> String {
        self.next_id_seq(prefix).0
    }

    fn next_id_seq(&self, prefix: &str) -> (String, u64) {
        let seq = self.next_seq();
        (format!("{prefix}-{}-{seq}", now_ms()), seq)
    }

    /// How many clients are attached.
    pub fn connected(&self) -> usize {
        self.chats()
            .values()
            .filter(|c| c.attached.is_some())
            .count()
    }

    /// Whether `user`'s chat is live (a client attached, its backlog sent).
    #[cfg(test)]
    pub fn is_live(&self, user: &str) -> bool {
        self.chats().get(user).is_some_and(|c| c.live)
    }

    /// Takes a message for `user`: onto the live client's queue, else into the backlog.
    /// Returns its id. Never waits for a client.
    pub fn deliver(&self, user: &str, text: &str) -> Result<String, PluginError> {
        let (id, seq) = self.next_id_seq("out");
        let item = Stored {
            id,
            text: text.to_owned(),
            at: now_ms(),
            run: self.run,
            seq,
        };
        {
            let mut chats = self.chats();
            let chat = chats.entry(user.to_owned()).or_default();
            if chat.live {
                let id = item.id.clone();
                chat.queue.push_back(item);
                if chat.queue.len() > self.limits.queue_soft_cap && !chat.kick {
                    chat.kick = true;
                    tracing::warn!(
                        user,
                        queued = chat.queue.len(),
                        "chat client is not reading; disconnecting it and keeping its messages"
                    );
                }
                if let Some(pump) = &chat.pump {
                    pump.wake.notify_one();
                }
                return Ok(id);
            }
            chat.parked += 1;
        }
        // Not live: into the backlog. No lock is held across the host call.
        let stored = serde_json::to_string(&item)
            .map_err(|e| PluginError::other(format!("encode backlog entry: {e}")));
        let result = stored.and_then(|json| {
            self.host.list_append(
                &backlog_key(user),
                &json,
                Some(self.limits.backlog_max),
                None,
            )
        });
        let mut chats = self.chats();
        if let Some(chat) = chats.get_mut(user) {
            chat.parked -= 1;
            if chat.parked == 0
                && let Some(pump) = &chat.pump
            {
                pump.wake.notify_one();
            }
        }
        result.map(|_| item.id)
    }

    /// Sends a `typing` line to the user's live client, if any (dropped when it is busy).
    pub fn set_typing(&self, user: &str) {
        let chats = self.chats();
        if let Some(chat) = chats.get(user)
            && chat.live
            && let (Some(conn), Some(pump)) = (chat.attached, &chat.pump)
        {
            let _ = pump
                .events
                .try_send(PumpEvent::Control(conn, ServerLine::Typing));
        }
    }

    /// The user's pump, started on first use.
    fn pump_for(self: &Arc<Self>, user: &str, shutdown: &StopSignal) -> PumpHandle {
        let mut chats = self.chats();
        let chat = chats.entry(user.to_owned()).or_default();
        if let Some(pump) = &chat.pump {
            return pump.clone();
        }
        let (events, rx) = mpsc::channel(PUMP_EVENTS);
        let handle = PumpHandle {
            events,
            wake: Arc::new(Notify::new()),
        };
        chat.pump = Some(handle.clone());
        let pump = Pump {
            shared: Arc::clone(self),
            user: user.to_owned(),
            key: backlog_key(user),
            events: rx,
            events_closed: false,
            wake: Arc::clone(&handle.wake),
            shutdown: shutdown.clone(),
            conn: None,
            attaching: VecDeque::new(),
            control: VecDeque::new(),
            gone: Vec::new(),
            torn_line: false,
        };
        // Teardown waits for the pumps: they save unsent replies to the backlog.
        self.life.spawn(pump.run());
        handle
    }

    /// Hands a client's message to the host. The error is the text of the `error` line.
    async fn accept(&self, who: &Identity, text: String) -> Result<(), String> {
        if text.trim().is_empty() {
            return Err("empty message: nothing was sent".into());
        }
        let event = InboundEvent {
            chat_id: who.user.as_str().into(),
            chat_name: RSome(who.display_name.as_str().into()),
            message_id: self.next_id("in").into(),
            sender: RSome(Sender {
                handle: who.user.as_str().into(),
                display_name: RSome(who.display_name.as_str().into()),
                is_bot: false,
            }),
            is_group: false,
            mentioned: true,
            text: text.into(),
            timestamp_ms: now_ms(),
            ..InboundEvent::default()
        };
        // One attempt: the user is told at once and sends it again (a retry loop here
        // would leave them waiting without a word).
        match self
            .life
            .host_call(move |host| host.on_inbound(event))
            .await
        {
            Ok(Ok(())) => {
                self.life.health().ingested();
                Ok(())
            }
            Ok(Err(e)) => {
                tracing::warn!(user = who.user, "host did not accept a chat message: {e}");
                Err(format!(
                    "message not accepted ({}); please send it again",
                    e.message
                ))
            }
            Err(Stopped) => Err("message not accepted (the channel is stopping)".into()),
        }
    }
}

/// A client connection, as handed to the pump.
struct Conn {
    id: u64,
    writer: OwnedWriteHalf,
    /// Dropped with the connection: stops its reader.
    _stop_reader: watch::Sender<()>,
}

enum PumpEvent {
    /// A new client for this chat (supersedes the current one).
    Attach(Conn),
    /// A line for one connection only (an error about its input, typing).
    Control(u64, ServerLine),
    /// The client closed its end (or reading from it failed): the session is over.
    Gone(u64),
}

enum Step {
    Shutdown,
    Attach(Conn),
    Kick,
    Gone,
    Control(ServerLine),
    Flush,
    Write(Stored),
    Idle,
}

enum Wrote {
    Done,
    /// Something needs the pump (a new client, a kick, shutdown); the line may be torn.
    Interrupted,
    Failed(io::Error),
}

/// The per-user task that owns the client's write half. See the module docs.
struct Pump {
    shared: Arc<Shared>,
    user: String,
    key: String,
    events: mpsc::Receiver<PumpEvent>,
    events_closed: bool,
    wake: Arc<Notify>,
    shutdown: StopSignal,
    conn: Option<Conn>,
    attaching: VecDeque<Conn>,
    control: VecDeque<(u64, ServerLine)>,
    /// Connections whose client has gone.
    gone: Vec<u64>,
    /// The last write to `conn` stopped in the middle of a line.
    torn_line: bool,
}

impl Pump {
    async fn run(mut self) {
        loop {
            match self.next_step() {
                Step::Shutdown => {
                    self.close(Some(SHUTTING_DOWN)).await;
                    for conn in std::mem::take(&mut self.attaching) {
                        self.conn = Some(conn);
                        self.close(Some(SHUTTING_DOWN)).await;
                    }
                    self.drain_to_backlog().await;
                    return;
                }
                Step::Attach(conn) => self.attach(conn).await,
                Step::Kick => {
                    self.close(None).await;
                    self.drain_to_backlog().await;
                }
                Step::Gone => self.lost(io::ErrorKind::UnexpectedEof.into()).await,
                Step::Control(line) => {
                    if let Wrote::Failed(e) = self.write(&line.encode()).await {
                        self.lost(e).await;
                    }
                }
                Step::Flush => self.flush().await,
                Step::Write(item) => match self.write(&item.line(false)).await {
                    Wrote::Done => self.written(&item.id),
                    Wrote::Interrupted => {}
                    Wrote::Failed(e) => self.lost(e).await,
                },
                Step::Idle => self.wait().await,
            }
        }
    }

    fn shutting_down(&self) -> bool {
        self.events_closed || self.shutdown.is_stopped()
    }

    fn next_step(&mut self) -> Step {
        if self.shutting_down() {
            return Step::Shutdown;
        }
        if let Some(conn) = self.attaching.pop_front() {
            return Step::Attach(conn);
        }
        let mut chats = self.shared.chats();
        let chat = chats.entry(self.user.clone()).or_default();
        if chat.kick {
            chat.kick = false;
            if self.conn.is_some() {
                return Step::Kick;
            }
        }
        let Some(conn) = &self.conn else {
            self.gone.clear();
            return Step::Idle;
        };
        // No connection is waiting to attach here, and a reader reports `Gone` only after its
        // `Attach`: any other id in `gone` is a connection already closed.
        let current_gone = self.gone.contains(&conn.id);
        self.gone.clear();
        if current_gone {
            return Step::Gone;
        }
        while let Some((to, line)) = self.control.pop_front() {
            if to == conn.id {
                return Step::Control(line);
            }
        }
        if !chat.live {
            return Step::Flush;
        }
        match chat.queue.front() {
            Some(item) => Step::Write(item.clone()),
            None => Step::Idle,
        }
    }

    /// Records an event; true when it needs the pump's attention before the current write
    /// completes (a new client, the current client gone, no more events).
    fn take_event(&mut self, event: Option<PumpEvent>, current: Option<u64>) -> bool {
        match event {
            Some(PumpEvent::Attach(conn)) => {
                self.attaching.push_back(conn);
                true
            }
            Some(PumpEvent::Control(to, line)) => {
                if self.control.len() < MAX_PENDING_CONTROL {
                    self.control.push_back((to, line));
                }
                false
            }
            Some(PumpEvent::Gone(conn)) => {
                self.gone.push(conn);
                current == Some(conn)
            }
            None => {
                self.events_closed = true;
                true
            }
        }
    }

    /// Waits for an event, a wake-up (queue, kick, parked delivery done) or shutdown.
    async fn wait(&mut self) {
        tokio::select! {
            biased;
            () = stopping(&self.shutdown) => {}
            event = self.events.recv() => {
                let current = self.conn.as_ref().map(|c| c.id);
                self.take_event(event, current);
            }
            () = self.wake.notified() => {}
        }
    }

    /// Writes `bytes` to the current client, giving way to a new client, a kick or shutdown.
    async fn write(&mut self, bytes: &[u8]) -> Wrote {
        let Some(mut conn) = self.conn.take() else {
            return Wrote::Interrupted;
        };
        let outcome = self.write_to(&mut conn, bytes).await;
        self.conn = Some(conn);
        outcome
    }

    async fn write_to(&mut self, conn: &mut Conn, bytes: &[u8]) -> Wrote {
        let deadline = tokio::time::Instant::now() + self.shared.limits.write_timeout;
        let mut written = 0;
        while written < bytes.len() {
            tokio::select! {
                biased;
                () = stopping(&self.shutdown) => {
                    self.torn_line = written > 0;
                    return Wrote::Interrupted;
                }
                event = self.events.recv() => {
                    if self.take_event(event, Some(conn.id)) {
                        self.torn_line = written > 0;
                        return Wrote::Interrupted;
                    }
                }
                () = self.wake.notified() => {
                    if self
                        .shared
                        .chats()
                        .get(&self.user)
                        .is_some_and(|chat| chat.kick)
                    {
                        self.torn_line = written > 0;
                        return Wrote::Interrupted;
                    }
                }
                () = tokio::time::sleep_until(deadline) => {
                    return Wrote::Failed(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "client stopped reading",
                    ));
                }
                result = conn.writer.write(&bytes[written..]) => match result {
                    Ok(0) => return Wrote::Failed(io::ErrorKind::WriteZero.into()),
                    Ok(n) => written += n,
                    Err(e) => return Wrote::Failed(e),
                },
            }
        }
        Wrote::Done
    }

    /// Removes a written message from the front of the queue. (Only the pump removes
    /// entries, so the front is the message just written; the check is defensive.)
    fn written(&self, id: &str) {
        let mut chats = self.shared.chats();
        if let Some(chat) = chats.get_mut(&self.user)
            && chat.queue.front().is_some_and(|item| item.id == id)
        {
            chat.queue.pop_front();
        }
    }

    /// Closes the current connection, with a last notice when given (best effort: a client
    /// that is not reading doesn't get it).
    async fn close(&mut self, notice: Option<&str>) {
        let Some(mut conn) = self.conn.take() else {
            return;
        };
        if let Some(text) = notice {
            let mut bytes = if self.torn_line {
                b"\n".to_vec()
            } else {
                Vec::new()
            };
            bytes.extend(ServerLine::notice(text).encode());
            let _ = tokio::time::timeout(NOTICE_TIMEOUT, conn.writer.write_all(&bytes)).await;
        }
        let _ = conn.writer.shutdown().await;
        self.torn_line = false;
        tracing::debug!(user = self.user, conn = conn.id, "chat client closed");
        // Dropping `conn` stops its reader; the socket closes with both halves.
    }

    /// A new client: the current one (if any) gets a notice and is closed. The queue and the
    /// live state carry over, so the new client continues exactly where the old one stopped.
    async fn attach(&mut self, conn: Conn) {
        self.close(Some(SUPERSEDED)).await;
        self.control.clear();
        let mut chats = self.shared.chats();
        let chat = chats.entry(self.user.clone()).or_default();
        chat.attached = Some(conn.id);
        chat.kick = false;
        tracing::debug!(user = self.user, conn = conn.id, "chat client attached");
        self.conn = Some(conn);
    }

    /// The client went away (write failed or stalled).
    async fn lost(&mut self, error: io::Error) {
        tracing::debug!(user = self.user, "chat client gone: {error}");
        self.close(None).await;
        self.drain_to_backlog().await;
    }

    /// Moves the unwritten queue to the backlog, then stops being live. Deliveries keep
    /// queueing meanwhile and are moved too, so the backlog keeps their order.
    async fn drain_to_backlog(&mut self) {
        loop {
            let batch: Vec<Stored> = {
                let mut chats = self.shared.chats();
                let chat = chats.entry(self.user.clone()).or_default();
                if chat.queue.is_empty() {
                    chat.live = false;
                    chat.attached = None;
                    chat.kick = false;
                    return;
                }
                chat.queue.drain(..).collect()
            };
            for item in batch {
                let json = match serde_json::to_string(&item) {
                    Ok(json) => json,
                    Err(e) => {
                        tracing::error!(user = self.user, "cannot encode message {}: {e}", item.id);
                        continue;
                    }
                };
                let max = self.shared.limits.backlog_max;
                let result = self
                    .host_call(move |host, key| host.list_append(key, &json, Some(max), None))
                    .await;
                if let Err(e) = result {
                    tracing::error!(
                        user = self.user,
                        "message {} lost: could not keep it for later: {e}",
                        item.id
                    );
                }
            }
        }
    }

    /// Runs a blocking state-store call on the blocking pool.
    async fn host_call<T: Send + 'static>(
        &self,
        call: impl FnOnce(&Host, &str) -> Result<T, PluginError> + Send + 'static,
    ) -> Result<T, PluginError> {
        let host = self.shared.host.clone();
        let key = self.key.clone();
        tokio::task::spawn_blocking(move || call(&host, &key))
            .await
            .map_err(|e| PluginError::other(format!("state store call failed: {e}")))?
    }

    /// Sends the backlog to a freshly attached client, oldest first, removing each entry once
    /// written; goes live when the backlog is empty and no delivery is still being stored.
    async fn flush(&mut self) {
        let Some(conn_id) = self.conn.as_ref().map(|c| c.id) else {
            return;
        };
        let run = self.shared.run;
        let entries = match self.host_call(|host, key| host.list_get(key)).await {
            Ok(entries) => entries,
            Err(e) => {
                tracing::error!(user = self.user, "cannot read the backlog: {e}");
                self.control.push_back((
                    self.conn.as_ref().map_or(0, |c| c.id),
                    ServerLine::notice(
                        "could not load messages that arrived while you were away; \
                         they stay queued for your next session",
                    ),
                ));
                self.go_live();
                return;
            }
        };
        if entries.is_empty() {
            let waiting = {
                let mut chats = self.shared.chats();
                let chat = chats.entry(self.user.clone()).or_default();
                if chat.parked == 0 {
                    chat.live = true;
                }
                !chat.live
            };
            if waiting {
                self.wait().await;
            }
            return;
        }
        for raw in entries {
            let line = match serde_json::from_str::<Stored>(&raw) {
                Ok(item) => Some(item.line(item.predates(run, conn_id))),
                Err(e) => {
                    tracing::warn!(
                        user = self.user,
                        "dropping an unreadable backlog entry: {e}"
                    );
                    None
                }
            };
            if let Some(line) = line {
                match self.write(&line).await {
                    Wrote::Done => {}
                    Wrote::Interrupted => return,
                    Wrote::Failed(e) => return self.lost(e).await,
                }
            }
            match self.host_call(|host, key| host.list_pop_front(key)).await {
                Ok(Some(popped)) if popped == raw => {}
                Ok(None) => return,
                Ok(Some(other)) => {
                    // The cap dropped entries while we were sending: `other` was removed
                    // unsent. Send it now, then read the backlog again.
                    tracing::warn!(user = self.user, "backlog overflowed while being sent");
                    if let Ok(item) = serde_json::from_str::<Stored>(&other)
                        && let Wrote::Failed(e) =
                            self.write(&item.line(item.predates(run, conn_id))).await
                    {
                        self.lost(e).await;
                    }
                    return;
                }
                Err(e) => {
                    // Without removal we would send the same entry again and again.
                    tracing::error!(user = self.user, "cannot update the backlog: {e}");
                    self.go_live();
                    return;
                }
            }
        }
    }

    fn go_live(&self) {
        let mut chats = self.shared.chats();
        chats.entry(self.user.clone()).or_default().live = true;
    }
}

/// Serves one accepted connection: identifies the peer, hands the write half to the user's
/// pump and reads the client's lines until it stops, is superseded or the plugin stops.
pub(crate) async fn serve_connection(
    shared: Arc<Shared>,
    stream: UnixStream,
    shutdown: StopSignal,
) {
    let uid = match stream.peer_cred() {
        Ok(cred) => cred.uid(),
        Err(e) => {
            tracing::warn!("cannot read the chat client's credentials: {e}");
            return;
        }
    };
    let who = match tokio::task::spawn_blocking(move || Identity::of_uid(uid)).await {
        Ok(who) => who,
        Err(e) => {
            tracing::error!(uid, "user lookup failed: {e}");
            return;
        }
    };
    let (reader, writer) = stream.into_split();
    let (stop_reader, mut stopped) = watch::channel(());
    let conn = Conn {
        id: shared.next_seq(),
        writer,
        _stop_reader: stop_reader,
    };
    let conn_id = conn.id;
    let pump = shared.pump_for(&who.user, &shutdown);
    if pump.events.send(PumpEvent::Attach(conn)).await.is_err() {
        return;
    }
    tracing::debug!(user = who.user, conn = conn_id, "chat client connected");

    let mut lines = LineReader::new(reader, MAX_LINE_BYTES);
    loop {
        let line = tokio::select! {
            biased;
            // The pump dropped the connection (superseded, gone, shutting down).
            _ = stopped.changed() => break,
            () = stopping(&shutdown) => break,
            line = lines.next_line() => line,
        };
        let reply = match line {
            // Closing its end ends the session (replies then wait in the backlog).
            Ok(None) => {
                let _ = pump.events.send(PumpEvent::Gone(conn_id)).await;
                break;
            }
            Err(e) => {
                tracing::debug!(user = who.user, "chat client read failed: {e}");
                let _ = pump.events.send(PumpEvent::Gone(conn_id)).await;
                break;
            }
            Ok(Some(Line::TooLong)) => Some(ServerLine::error(format!(
                "line too long: at most {MAX_LINE_BYTES} bytes per line; nothing was sent"
            ))),
            Ok(Some(Line::Complete(bytes))) if bytes.iter().all(u8::is_ascii_whitespace) => None,
            Ok(Some(Line::Complete(bytes))) => match parse_client_line(&bytes) {
                Err(e) => Some(ServerLine::error(e)),
                Ok(ClientLine::Message { text }) => {
                    shared.accept(&who, text).await.err().map(ServerLine::error)
                }
            },
        };
        if let Some(reply) = reply
            && pump
                .events
                .send(PumpEvent::Control(conn_id, reply))
                .await
                .is_err()
        {
            break;
        }
    }
}

/// Accepts clients until shutdown.
pub(crate) async fn accept_loop(
    shared: Arc<Shared>,
    listener: tokio::net::UnixListener,
    shutdown: StopSignal,
) {
    loop {
        tokio::select! {
            biased;
            () = stopping(&shutdown) => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    shared
                        .life
                        .spawn(serve_connection(Arc::clone(&shared), stream, shutdown.clone()));
                }
                Err(e) => {
                    // Usually EMFILE: back off instead of spinning.
                    tracing::warn!("accepting a chat client failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
    shared.listening.store(false, Ordering::Relaxed);
}
