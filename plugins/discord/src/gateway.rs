//! The gateway connection: hello, identify or resume, heartbeats, dispatches.
//!
//! The [`Gateway`] handler runs on the kit's reconnecting WebSocket client (`kit::ws`). It
//! answers Hello (op 10) with Identify (op 2) or, holding a session, Resume (op 6) to the
//! session's `resume_gateway_url`; heartbeats (op 1) at Hello's interval, the first after a
//! random part of it; reconnects when a heartbeat went unacknowledged (op 11), on Reconnect
//! (op 7) and on Invalid Session (op 9, resuming when Discord says the session is
//! resumable, identifying afresh otherwise).
//!
//! Dispatches go, in order, through a queue to the [`Worker`], which hands them to the host
//! (deduped by message or interaction id in the host's state store) and only then records
//! the session and the sequence number of the last event handed over. A restarted plugin
//! resumes from that record, so Discord replays whatever the host had not taken; the
//! gateway loop itself never waits for the host, so heartbeats keep going while the host is
//! slow.

use std::sync::Arc;
use std::time::Duration;

use nanoclaw_plugin_api::kit::http::HttpError;
use nanoclaw_plugin_api::kit::inbound::{Claimed, Dedupe, Delivery, Inbox};
use nanoclaw_plugin_api::kit::prelude::*;
use nanoclaw_plugin_api::kit::tokio::sync::mpsc;
use nanoclaw_plugin_api::kit::ws::{Disconnect, Flow, Message, Session, UrlError};
use nanoclaw_plugin_api::kit::{BackoffPolicy, Stopped};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::api::Api;
use crate::inbound::{BotIdentity, DiscordMessage, Interaction};

/// GUILDS | GUILD_MESSAGES | DIRECT_MESSAGES | MESSAGE_CONTENT.
pub const INTENTS: u64 = (1 << 0) | (1 << 9) | (1 << 12) | (1 << 15);
/// The host-state key of the persisted session.
const SESSION_KEY: &str = "gateway_session";
/// Interaction callback type 6: deferred update (acknowledged, the message stays).
const DEFERRED_UPDATE_MESSAGE: u8 = 6;

/// Close codes after which reconnecting cannot help: authentication failed (4004), invalid
/// shard (4010), sharding required (4011), invalid API version (4012), invalid or
/// disallowed intents (4013, 4014).
fn fatal_close(code: u16) -> Option<&'static str> {
    Some(match code {
        4004 => {
            "Discord refused the bot token (4004): it is wrong or was reset; put the current token in DISCORD_BOT_TOKEN"
        }
        4010 | 4011 => "Discord asked for sharding (4010/4011), which this plugin does not do",
        4012 => "Discord refused the gateway API version (4012)",
        4013 => "Discord refused the gateway intents (4013)",
        4014 => {
            "Discord refused privileged intents (4014): enable the Message Content intent for the bot in the Developer Portal (Bot → Privileged Gateway Intents)"
        }
        _ => return None,
    })
}

/// Close codes after which the session cannot be resumed: invalid sequence (4007),
/// session timed out (4009).
fn session_lost(code: u16) -> bool {
    matches!(code, 4007 | 4009)
}

/// A gateway session that can be resumed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SessionState {
    pub session_id: String,
    pub resume_url: String,
    /// The last sequence number: received (in memory) or handed over (persisted).
    pub seq: u64,
}

/// Reads the persisted session (a blocking host call).
pub(crate) fn load_session(host: &Host) -> Result<Option<SessionState>, PluginError> {
    Ok(host
        .kv_get(SESSION_KEY)?
        .and_then(|raw| serde_json::from_str(&raw).ok()))
}

fn store_session(host: &Host, session: Option<&SessionState>) -> Result<(), PluginError> {
    match session {
        Some(session) => {
            let raw = serde_json::to_string(session).unwrap_or_default();
            host.kv_set(SESSION_KEY, &raw, None)
        }
        None => host.kv_delete(SESSION_KEY).map(drop),
    }
}

/// `?v=10&encoding=json` on a gateway URL (Discord's URLs come without a query).
pub(crate) fn with_query(url: &str) -> String {
    let url = url.trim_end_matches('/');
    if url.contains('?') {
        url.to_owned()
    } else {
        format!("{url}/?v=10&encoding=json")
    }
}

/// What the gateway hands the worker, in order.
pub(crate) enum Work {
    /// A new session (`READY`): record it.
    Ready(SessionState),
    /// The session is gone: forget it.
    SessionLost,
    /// A message for the host, with its sequence number.
    Message(Box<InboundEvent>, u64),
    /// A button click for the host.
    Action(Box<ActionEvent>, String, u64),
    /// A deleted message (the host's withdrawal is idempotent: no dedupe needed).
    Deleted(DeletionEvent, u64),
    /// An event the host does not need: only the sequence number moves.
    Seq(u64),
}

/// A `MESSAGE_DELETE` payload.
#[derive(Deserialize)]
struct DeletedMessage {
    id: String,
    channel_id: String,
}

/// The gateway protocol on the kit's WebSocket client.
pub(crate) struct Gateway {
    pub life: Lifecycle,
    pub api: Arc<Api>,
    pub token: Secret,
    pub bot: BotIdentity,
    /// `wss://…/?v=10&encoding=json` for a fresh session.
    pub url: String,
    pub session: Option<SessionState>,
    pub seq: Option<u64>,
    pub awaiting_ack: bool,
    pub work: mpsc::UnboundedSender<Work>,
}

#[derive(Deserialize)]
struct Payload {
    op: u8,
    #[serde(default)]
    d: Value,
    #[serde(default)]
    s: Option<u64>,
    #[serde(default)]
    t: Option<String>,
}

impl Gateway {
    fn identify(&self) -> Message {
        let payload = json!({
            "op": 2,
            "d": {
                "token": self.token.expose(),
                "intents": INTENTS,
                "properties": {"os": std::env::consts::OS, "browser": "nanoclaw", "device": "nanoclaw"},
            }
        });
        Message::text(payload.to_string())
    }

    fn resume(&self, session: &SessionState) -> Message {
        let payload = json!({
            "op": 6,
            "d": {"token": self.token.expose(), "session_id": session.session_id, "seq": session.seq}
        });
        Message::text(payload.to_string())
    }

    fn beat(&self) -> Message {
        Message::text(json!({"op": 1, "d": self.seq}).to_string())
    }

    fn forget_session(&mut self) {
        self.session = None;
        self.seq = None;
        let _ = self.work.send(Work::SessionLost);
    }

    fn dispatch(&mut self, kind: &str, data: Value, seq: u64) {
        let work = match kind {
            "READY" => {
                let session_id = data.get("session_id").and_then(Value::as_str);
                let resume_url = data.get("resume_gateway_url").and_then(Value::as_str);
                match (session_id, resume_url) {
                    (Some(id), Some(url)) => {
                        let session = SessionState {
                            session_id: id.to_owned(),
                            resume_url: url.to_owned(),
                            seq,
                        };
                        self.session = Some(session.clone());
                        self.life.info(format!(
                            "Discord gateway ready as {} ({})",
                            self.bot.username, self.bot.id
                        ));
                        Work::Ready(session)
                    }
                    _ => {
                        self.life.warn("Discord READY without a session id");
                        Work::Seq(seq)
                    }
                }
            }
            "RESUMED" => {
                self.life.info("Discord gateway session resumed");
                Work::Seq(seq)
            }
            "MESSAGE_CREATE" => match serde_json::from_value::<DiscordMessage>(data) {
                Ok(message) if message.is_for_host(&self.bot) => {
                    Work::Message(Box::new(message.into_inbound(&self.bot)), seq)
                }
                Ok(_) => Work::Seq(seq),
                Err(e) => {
                    self.life.warn(format!(
                        "skipping a MESSAGE_CREATE Discord sent that does not parse: {e}"
                    ));
                    Work::Seq(seq)
                }
            },
            "INTERACTION_CREATE" => match serde_json::from_value::<Interaction>(data) {
                Ok(interaction) => match interaction.to_action() {
                    Some(action) => {
                        self.acknowledge(&interaction);
                        Work::Action(Box::new(action), interaction.id, seq)
                    }
                    None => Work::Seq(seq),
                },
                Err(e) => {
                    self.life.warn(format!(
                        "skipping an INTERACTION_CREATE Discord sent that does not parse: {e}"
                    ));
                    Work::Seq(seq)
                }
            },
            // An edit by its author; updates that only fill in embeds carry no
            // `edited_timestamp` (and often no author): nothing for the host.
            "MESSAGE_UPDATE" => match serde_json::from_value::<DiscordMessage>(data) {
                Ok(message) if message.is_for_host(&self.bot) => {
                    match message.into_edit(&self.bot) {
                        Some(edit) => Work::Message(Box::new(edit), seq),
                        None => Work::Seq(seq),
                    }
                }
                _ => Work::Seq(seq),
            },
            "MESSAGE_DELETE" => match serde_json::from_value::<DeletedMessage>(data) {
                Ok(d) => Work::Deleted(
                    DeletionEvent {
                        chat_id: d.channel_id.into(),
                        thread_id: RNone,
                        message_id: d.id.into(),
                    },
                    seq,
                ),
                Err(_) => Work::Seq(seq),
            },
            _ => Work::Seq(seq),
        };
        let _ = self.work.send(work);
    }

    /// Answers the click within Discord's 3 seconds, in the background: the message stays as
    /// it is (the host edits it when it wants to).
    fn acknowledge(&self, interaction: &Interaction) {
        let (api, life) = (Arc::clone(&self.api), self.life.clone());
        let (id, token) = (interaction.id.clone(), interaction.token.clone());
        self.life.spawn(async move {
            if let Err(e) = api
                .ack_interaction(&id, &token, DEFERRED_UPDATE_MESSAGE)
                .await
            {
                // A replayed click after a resume is answered already: not worth a warning.
                life.debug(format!("acknowledging interaction {id}: {e}"));
            }
        });
    }
}

impl nanoclaw_plugin_api::kit::ws::WsHandler for Gateway {
    async fn on_connect(&mut self, _session: &mut Session) -> Flow {
        // Discord speaks first (Hello); identify or resume then.
        self.awaiting_ack = false;
        Flow::Continue
    }

    async fn on_message(&mut self, message: Message, session: &mut Session) -> Flow {
        let Ok(text) = message.to_text() else {
            return Flow::Continue;
        };
        let payload: Payload = match serde_json::from_str(text) {
            Ok(payload) => payload,
            Err(e) => {
                self.life.warn(format!(
                    "ignoring a gateway frame that is not a payload: {e}"
                ));
                return Flow::Continue;
            }
        };
        if let Some(s) = payload.s {
            self.seq = Some(s);
            if let Some(state) = &mut self.session {
                state.seq = s;
            }
        }
        match payload.op {
            // Dispatch.
            0 => {
                let (Some(kind), Some(seq)) = (payload.t.as_deref(), payload.s) else {
                    return Flow::Continue;
                };
                self.dispatch(kind, payload.d, seq);
                Flow::Continue
            }
            // Heartbeat request: beat now.
            1 => {
                session.send(self.beat());
                Flow::Continue
            }
            // Reconnect: resume on a new connection.
            7 => {
                self.life.info("Discord asked to reconnect; resuming");
                Flow::Reconnect
            }
            // Invalid session: resumable or not.
            9 => {
                if payload.d.as_bool() == Some(true) && self.session.is_some() {
                    self.life
                        .info("Discord invalidated the session (resumable); resuming");
                } else {
                    self.life
                        .warn("Discord invalidated the session; identifying afresh");
                    self.forget_session();
                }
                Flow::Reconnect
            }
            // Hello: heartbeat from now on, then identify or resume.
            10 => {
                let interval = payload
                    .d
                    .get("heartbeat_interval")
                    .and_then(Value::as_u64)
                    .unwrap_or(41_250)
                    .max(100);
                let interval = Duration::from_millis(interval);
                session.set_heartbeat_after(interval, interval.mul_f64(jitter()));
                let first = match &self.session {
                    Some(state) => self.resume(state),
                    None => self.identify(),
                };
                session.send(first);
                Flow::Continue
            }
            // Heartbeat ACK.
            11 => {
                self.awaiting_ack = false;
                Flow::Continue
            }
            _ => Flow::Continue,
        }
    }

    fn heartbeat(&mut self) -> Option<Message> {
        self.awaiting_ack = true;
        Some(self.beat())
    }

    fn before_heartbeat(&mut self) -> Flow {
        if self.awaiting_ack {
            self.life.warn(
                "Discord did not acknowledge the last heartbeat (a zombie connection); reconnecting",
            );
            return Flow::Reconnect;
        }
        Flow::Continue
    }

    async fn connect_url(&mut self) -> Result<Option<Secret>, UrlError> {
        Ok(Some(Secret::new(match &self.session {
            Some(state) => with_query(&state.resume_url),
            None => self.url.clone(),
        })))
    }

    fn on_disconnect(&mut self, disconnect: &Disconnect) -> Flow {
        if let Some(code) = disconnect.code {
            if let Some(reason) = fatal_close(code) {
                self.life.error(reason);
                return Flow::Stop(reason.to_owned());
            }
            if session_lost(code) {
                self.forget_session();
            }
        }
        Flow::Reconnect
    }
}

/// A number in [0, 1) that differs between calls and processes.
fn jitter() -> f64 {
    use std::hash::{BuildHasher as _, Hasher as _};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    #[allow(clippy::cast_precision_loss)]
    let fraction = (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64;
    fraction
}

/// Attachments larger than this are passed on as metadata and URL only.
pub(crate) const MAX_DOWNLOAD_BYTES: u64 = 25 * 1024 * 1024;
const DOWNLOAD_ATTEMPTS: u32 = 3;

/// Hands the gateway's events to the host in order and records how far it got.
pub(crate) struct Worker {
    pub life: Lifecycle,
    pub api: Arc<Api>,
    pub inbox: Inbox,
    pub dedupe: Dedupe,
    pub session: Option<SessionState>,
}

impl Worker {
    pub(crate) async fn run(mut self, mut work: mpsc::UnboundedReceiver<Work>) {
        let stop = self.life.stop_signal();
        while let Ok(Some(item)) = stop.run(work.recv()).await {
            let handled = match item {
                Work::Ready(session) => {
                    self.session = Some(session);
                    true
                }
                Work::SessionLost => {
                    self.session = None;
                    true
                }
                Work::Seq(seq) => {
                    self.advance(seq);
                    // Events the host does not need are recorded with the next one, or when
                    // the queue runs dry.
                    work.is_empty()
                }
                Work::Message(mut event, seq) => {
                    if self.fetch_attachments(&mut event).await.is_err()
                        || self.deliver(*event).await.is_err()
                    {
                        return;
                    }
                    self.advance(seq);
                    true
                }
                Work::Action(event, id, seq) => {
                    if self.action_once(*event, &id).await.is_err() {
                        return;
                    }
                    self.advance(seq);
                    true
                }
                Work::Deleted(event, seq) => {
                    if self.inbox.deleted(event).await.is_err() {
                        return;
                    }
                    self.advance(seq);
                    true
                }
            };
            if handled && self.record().await.is_err() {
                return;
            }
        }
    }

    /// Hands a message over once. A claim left pending by an instance that stopped
    /// mid-hand-over blocks it until the claim expires: wait for that rather than lose it.
    async fn deliver(&self, event: InboundEvent) -> Result<(), Stopped> {
        loop {
            match self.inbox.deliver_once(&self.dedupe, event.clone()).await? {
                Delivery::Handed(_) | Delivery::Duplicate => return Ok(()),
                Delivery::InProgress => {
                    self.life
                        .stop_signal()
                        .sleep(Duration::from_millis(500))
                        .await?
                }
            }
        }
    }

    /// Downloads the message's attachments from Discord's CDN (the agent has no network).
    /// A file that cannot be fetched is passed on with its name, type, size and URL: the
    /// message is worth more than the file.
    async fn fetch_attachments(&self, event: &mut InboundEvent) -> Result<(), Stopped> {
        let stop = self.life.stop_signal();
        for attachment in event.attachments.iter_mut() {
            let RSome(url) = attachment.url.clone() else {
                continue;
            };
            if attachment.size > MAX_DOWNLOAD_BYTES {
                self.life.info(format!(
                    "not downloading `{}` ({} bytes): larger than {MAX_DOWNLOAD_BYTES}",
                    attachment.name, attachment.size
                ));
                continue;
            }
            let mut backoff =
                BackoffPolicy::exponential(Duration::from_secs(1), Duration::from_secs(5))
                    .max_attempts(DOWNLOAD_ATTEMPTS)
                    .start();
            loop {
                match stop
                    .run(self.api.download(url.as_str(), MAX_DOWNLOAD_BYTES))
                    .await?
                {
                    Ok(data) => {
                        attachment.size = data.len() as u64;
                        attachment.data = data.into();
                        break;
                    }
                    Err(e) => {
                        let permanent = matches!(e.status(), Some(400..=499))
                            || !matches!(e, HttpError::Network { .. } | HttpError::Status { .. });
                        match backoff.next_delay().filter(|_| !permanent) {
                            Some(delay) => stop.sleep(delay).await?,
                            None => {
                                self.life.warn(format!(
                                    "could not download `{}` ({e}); passing it on without content",
                                    attachment.name
                                ));
                                break;
                            }
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn advance(&mut self, seq: u64) {
        if let Some(session) = &mut self.session {
            session.seq = session.seq.max(seq);
        }
    }

    async fn record(&self) -> Result<(), Stopped> {
        let session = self.session.clone();
        let stored = self
            .life
            .host_call(move |host| store_session(host, session.as_ref()))
            .await?;
        if let Err(e) = stored {
            self.life.warn(format!(
                "could not record the gateway position ({e}); a restart may resume from earlier"
            ));
        }
        Ok(())
    }

    /// A click handed over once per interaction id.
    async fn action_once(&self, event: ActionEvent, interaction_id: &str) -> Result<(), Stopped> {
        let key = format!("interaction:{interaction_id}");
        let claim = loop {
            let claim = {
                let (dedupe, key) = (self.dedupe.clone(), key.clone());
                self.life.host_call(move |_| dedupe.claim(&key)).await?
            };
            // Left pending by an instance stopped mid-hand-over: wait for it to expire.
            if matches!(claim, Ok(Claimed::InProgress)) {
                self.life
                    .stop_signal()
                    .sleep(Duration::from_millis(500))
                    .await?;
                continue;
            }
            break claim;
        };
        let claim = match claim {
            Ok(Claimed::New(claim)) => Some(claim),
            Ok(Claimed::Seen | Claimed::InProgress) => return Ok(()),
            Err(e) => {
                self.life.warn(format!(
                    "dedupe store unavailable for {key} ({e}); handing it over anyway"
                ));
                None
            }
        };
        let _ = self.inbox.action(event).await?;
        if let Some(claim) = claim
            && let Err(e) = self.life.host_call(move |_| claim.commit()).await?
        {
            self.life.warn(format!(
                "could not record {key} as handled ({e}); a replay may repeat it"
            ));
        }
        Ok(())
    }
}
