//! Delivery: what agents wrote to their `outbound.db`, checked and carried out.
//!
//! Every route is re-checked here against `agent_destinations`; only the session's own origin
//! chat is implicitly allowed. A refused route is recorded as `rejected` (never `delivered`)
//! and logged as an error. Channel messages go to the channel's plugin (split at its text
//! limit); messages to agents are written into the target agent's session; system rows are
//! scheduling actions. Transient failures are retried with backoff, then recorded `failed`.
//! Outcomes live in the session's `inbound.db` (`delivered`), so nothing is sent twice across
//! restarts and nothing is silently dropped.

use std::collections::HashMap;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::tz::TimeZone;
use nanoclaw_plugin_api::abi::{Button, Capabilities, OutboundFile, OutboundMessage, OutboundOp};
use nanoclaw_plugin_api::kit::split_text;
use serde::Serialize;

use nanoclaw_schema::session::content::{AttachmentRef, ChatIn, ChatOut, SystemAction};
use nanoclaw_schema::session::{
    AGENT_CHANNEL, DeliveryStatus, InKind, OUTBOX_DIR, is_safe_file_name,
};
use nanoclaw_schema::time;

use crate::db::Db;
use crate::error::{Error, Result};
use crate::ids::{AgentGroupId, ChannelType, ChatAddress, PlatformId, SessionId};
use crate::sessions::inbound::{self, NewMessage};
use crate::sessions::outbound::{self, OutRow};
use crate::sessions::{Session, SessionStore, registry};
use crate::store::destinations::{self, Target};
use crate::store::{agent_groups, messaging_groups};

/// Attempts for a message that keeps failing transiently before it is recorded `failed`.
pub const MAX_ATTEMPTS: u32 = 5;
/// Largest file the host passes to a plugin.
pub const MAX_FILE_BYTES: u64 = 50 * 1024 * 1024;

/// What a channel can take, from its plugin's manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlatformLimits {
    pub max_text_length: Option<usize>,
    pub capabilities: Capabilities,
}

/// Why a plugin did not post something.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendError {
    /// Worth retrying (network, rate limit, plugin busy or restarting).
    Transient {
        message: String,
        retry_after: Option<Duration>,
    },
    /// Retrying will not help (bad input, unsupported, auth).
    Permanent(String),
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::Transient { message, .. } | SendError::Permanent(message) => {
                f.write_str(message)
            }
        }
    }
}

/// The loaded channel plugins, as delivery sees them. The daemon implements this over its
/// plugin handles; tests implement it directly.
pub trait Platforms: Send + Sync + 'static {
    /// `None` if no plugin for the channel is running.
    fn limits(&self, channel: &ChannelType) -> Option<PlatformLimits>;

    /// Posts one message; returns the platform's id for it.
    fn send(
        &self,
        channel: &ChannelType,
        message: OutboundMessage,
    ) -> impl Future<Output = std::result::Result<Option<String>, SendError>> + Send;
}

/// How handling one outbound row ended.
#[derive(Debug)]
enum Outcome {
    Delivered(Option<String>),
    Rejected(String),
    Failed(String),
    Retry {
        message: String,
        retry_after: Option<Duration>,
    },
}

/// Per-session progress, in memory (the durable record is `delivered`).
#[derive(Debug, Default)]
struct Progress {
    /// Every row at or below this seq is finished.
    cursor: i64,
    /// Outbound `data_version` at the last drain, to skip no-op drains.
    data_version: Option<i64>,
    /// Rows that failed transiently: attempts so far and when to try again.
    retries: HashMap<String, (u32, Instant)>,
    /// Chunks of a split message already posted (so a retry resumes, never repeats).
    sent_chunks: HashMap<String, (usize, Option<String>)>,
}

/// What one drain did.
#[derive(Debug, Default)]
pub struct Drained {
    pub delivered: usize,
    pub rejected: usize,
    pub failed: usize,
    /// Sessions that received a message from this one's agent (wake them).
    pub wake: Vec<Session>,
    /// When to drain this session again for retries or delayed rows.
    pub again_at: Option<Instant>,
    /// Chats that just received something from the agent (pause their typing indicator).
    pub posted_to: Vec<ChatAddress>,
    /// The container committed something since the last drain.
    pub changed: bool,
}

pub struct Delivery<P: Platforms> {
    db: Arc<Db>,
    sessions: Arc<SessionStore>,
    platforms: Arc<P>,
    tz: TimeZone,
    progress: std::sync::Mutex<HashMap<SessionId, Arc<tokio::sync::Mutex<Progress>>>>,
}

impl<P: Platforms> Delivery<P> {
    pub fn new(db: Arc<Db>, sessions: Arc<SessionStore>, platforms: Arc<P>, tz: TimeZone) -> Self {
        Delivery {
            db,
            sessions,
            platforms,
            tz,
            progress: Default::default(),
        }
    }

    fn progress(&self, id: &SessionId) -> Arc<tokio::sync::Mutex<Progress>> {
        let mut map = self.progress.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(id.clone()).or_default().clone()
    }

    /// Forgets in-memory progress of a session (it is re-derived from `delivered`).
    pub fn forget(&self, id: &SessionId) {
        self.progress
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
    }

    /// Syncs the container's acks and delivers everything due in one session. Concurrent
    /// drains of one session run one after the other.
    pub async fn drain(&self, session: &Session) -> Result<Drained> {
        let progress = self.progress(&session.id);
        let mut p = progress.lock().await;
        let mut out = Drained::default();
        let version = self
            .sessions
            .with_outbound(session, outbound::data_version)?;
        out.changed = p.data_version != Some(version);
        if p.data_version == Some(version) && p.retries.is_empty() && p.cursor > 0 {
            return Ok(out);
        }
        self.sync_acks(session)?;
        let rows = self
            .sessions
            .with_outbound(session, |c| outbound::rows_after(c, p.cursor))?;
        let now = Instant::now();
        let now_s = time::now();
        let mut all_final = true;
        for row in rows {
            let finished = self
                .sessions
                .with_inbound(session, |c| inbound::delivery_status(c, &row.id))?
                .is_some();
            if !finished {
                if let Some(after) = row.deliver_after.as_deref().filter(|a| *a > now_s.as_str()) {
                    let wait = time::parse(after)
                        .and_then(|t| t.duration_since(jiff::Timestamp::now()).try_into().ok())
                        .unwrap_or(Duration::from_secs(1));
                    out.again_at = earliest(out.again_at, now + wait);
                    all_final = false;
                    continue;
                }
                if let Some((_, at)) = p.retries.get(&row.id).filter(|(_, at)| *at > now) {
                    out.again_at = earliest(out.again_at, *at);
                    all_final = false;
                    continue;
                }
                let outcome = self.deliver_row(session, &row, &mut p, &mut out).await;
                if !self.record(session, &row, outcome, &mut p, &mut out)? {
                    all_final = false;
                    continue;
                }
            }
            if all_final {
                p.cursor = row.seq;
            }
        }
        p.data_version = Some(version);
        Ok(out)
    }

    /// Copies finished acks into inbound.db so the host knows what is done.
    fn sync_acks(&self, session: &Session) -> Result<()> {
        let pending = self
            .sessions
            .with_inbound(session, |c| inbound::pending_ids(c))?;
        if pending.is_empty() {
            return Ok(());
        }
        let done = self
            .sessions
            .with_outbound(session, |c| outbound::finished_among(c, &pending))?;
        self.sessions
            .with_inbound(session, |c| inbound::mark_completed(c, &done))?;
        Ok(())
    }

    /// Records an outcome; true if the row is finished.
    fn record(
        &self,
        session: &Session,
        row: &OutRow,
        outcome: Outcome,
        p: &mut Progress,
        out: &mut Drained,
    ) -> Result<bool> {
        let (status, platform_id, error) = match outcome {
            Outcome::Delivered(id) => {
                out.delivered += 1;
                (DeliveryStatus::Delivered, id, None)
            }
            Outcome::Rejected(why) => {
                tracing::error!(session = %session.id, message = row.id, reason = why, "delivery refused");
                out.rejected += 1;
                (DeliveryStatus::Rejected, None, Some(why))
            }
            Outcome::Failed(why) => {
                tracing::error!(session = %session.id, message = row.id, error = why, "delivery failed");
                out.failed += 1;
                (DeliveryStatus::Failed, None, Some(why))
            }
            Outcome::Retry {
                message,
                retry_after,
            } => {
                let attempts = p.retries.get(&row.id).map_or(0, |(n, _)| *n) + 1;
                if attempts >= MAX_ATTEMPTS {
                    tracing::error!(session = %session.id, message = row.id, attempts, error = message,
                        "delivery failed; giving up");
                    out.failed += 1;
                    (
                        DeliveryStatus::Failed,
                        None,
                        Some(format!("after {attempts} attempts: {message}")),
                    )
                } else {
                    let backoff = retry_after.unwrap_or(Duration::from_secs(1 << attempts.min(6)));
                    tracing::warn!(session = %session.id, message = row.id, attempts, error = message,
                        retry_in = ?backoff, "delivery failed; will retry");
                    let at = Instant::now() + backoff;
                    p.retries.insert(row.id.clone(), (attempts, at));
                    out.again_at = earliest(out.again_at, at);
                    return Ok(false);
                }
            }
        };
        self.sessions.with_inbound(session, |c| {
            inbound::record_delivery(c, &row.id, platform_id.as_deref(), status, error.as_deref())
        })?;
        p.retries.remove(&row.id);
        p.sent_chunks.remove(&row.id);
        Ok(true)
    }

    async fn deliver_row(
        &self,
        session: &Session,
        row: &OutRow,
        p: &mut Progress,
        out: &mut Drained,
    ) -> Outcome {
        match row.kind.as_str() {
            "system" => self.apply_system(session, row),
            "chat" => match serde_json::from_str::<ChatOut>(&row.content) {
                Err(e) => Outcome::Failed(format!("unreadable message content: {e}")),
                Ok(content) if row.channel_type.as_deref() == Some(AGENT_CHANNEL) => self
                    .to_agent(session, row, &content, out)
                    .unwrap_or_else(|e| Outcome::Failed(e.to_string())),
                Ok(content) => self.to_channel(session, row, content, p, out).await,
            },
            other => Outcome::Failed(format!("unknown message kind {other:?}")),
        }
    }

    fn apply_system(&self, session: &Session, row: &OutRow) -> Outcome {
        let action = match serde_json::from_str::<SystemAction>(&row.content) {
            Ok(a) => a,
            Err(e) => return Outcome::Failed(format!("unknown or malformed system action: {e}")),
        };
        match crate::scheduling::apply(&self.db, &self.sessions, session, &action, &self.tz) {
            Ok(applied) => {
                tracing::info!(session = %session.id, action = action.name(), ok = applied.ok, note = applied.note,
                    "system action applied");
                Outcome::Delivered(None)
            }
            Err(e) => Outcome::Retry {
                message: e.to_string(),
                retry_after: None,
            },
        }
    }

    /// The ACL: may this session's agent post to this chat?
    fn check_channel(
        &self,
        session: &Session,
        row: &OutRow,
    ) -> std::result::Result<(ChannelType, PlatformId), String> {
        let (Some(ch), Some(pid)) = (row.channel_type.as_deref(), row.platform_id.as_deref())
        else {
            return Err("message has no address".to_string());
        };
        let channel = ChannelType::parse(ch).map_err(|e| e.to_string())?;
        let platform_id = PlatformId::parse(pid).map_err(|e| e.to_string())?;
        let allowed = self.db.read(|c| {
            let Some(chat) = messaging_groups::find(c, &channel, &platform_id)? else {
                return Ok(None);
            };
            if session.messaging_group_id.as_ref() == Some(&chat.id) {
                return Ok(Some(true));
            }
            Ok(Some(destinations::allows(
                c,
                &session.agent_group_id,
                &Target::Channel(chat.id),
            )?))
        });
        match allowed {
            Ok(Some(true)) => Ok((channel, platform_id)),
            Ok(Some(false)) => Err(format!(
                "agent {} has no destination for chat {ch}:{pid}; add one with `nanoclaw destinations add`",
                session.agent_group_id
            )),
            Ok(None) => Err(format!("no known chat {ch}:{pid}")),
            Err(e) => Err(format!("could not check the route: {e}")),
        }
    }

    async fn to_channel(
        &self,
        session: &Session,
        row: &OutRow,
        content: ChatOut,
        p: &mut Progress,
        out: &mut Drained,
    ) -> Outcome {
        let (channel, platform_id) = match self.check_channel(session, row) {
            Ok(v) => v,
            Err(why) => return Outcome::Rejected(why),
        };
        let Some(limits) = self.platforms.limits(&channel) else {
            return Outcome::Retry {
                message: format!("no {channel} plugin is running"),
                retry_after: None,
            };
        };
        let base = OutboundMessage {
            chat_id: platform_id.as_str().into(),
            thread_id: row.thread_id.clone().map(Into::into).into(),
            ..Default::default()
        };
        let can = |cap: Capabilities| limits.capabilities.contains(cap);
        let messages: Vec<OutboundMessage> = match content {
            ChatOut::Send { text, files } => {
                let files = match self.outbox_files(session, &row.id, &files) {
                    Ok(f) => f,
                    Err(e) => return Outcome::Failed(e.to_string()),
                };
                let mut text = text;
                let files = if files.is_empty() || can(Capabilities::FILES) {
                    files
                } else {
                    let names: Vec<_> = files.iter().map(|f| f.name.to_string()).collect();
                    text.push_str(&format!(
                        "\n\n[files not sent: this channel cannot carry files: {}]",
                        names.join(", ")
                    ));
                    Vec::new()
                };
                let mut chunks = match limits.max_text_length {
                    Some(max) => split_text(&text, max),
                    None => vec![text],
                };
                if chunks.is_empty() {
                    chunks.push(String::new());
                }
                let mut files = Some(files);
                chunks
                    .into_iter()
                    .map(|chunk| OutboundMessage {
                        op: OutboundOp::SEND,
                        text: chunk.into(),
                        files: files.take().unwrap_or_default().into(),
                        ..base.clone()
                    })
                    .collect()
            }
            ChatOut::Edit { message_id, text } => {
                if !can(Capabilities::EDIT) {
                    return Outcome::Failed(format!("{channel} cannot edit messages"));
                }
                vec![OutboundMessage {
                    op: OutboundOp::EDIT,
                    text: text.into(),
                    target_message_id: abi_stable::std_types::ROption::RSome(message_id.into()),
                    ..base
                }]
            }
            ChatOut::React { message_id, emoji } => {
                if !can(Capabilities::REACTIONS) {
                    return Outcome::Failed(format!("{channel} cannot react to messages"));
                }
                vec![OutboundMessage {
                    op: OutboundOp::REACT,
                    reaction: emoji.into(),
                    target_message_id: abi_stable::std_types::ROption::RSome(message_id.into()),
                    ..base
                }]
            }
            ChatOut::Question {
                question_id,
                title,
                question,
                options,
            } => {
                vec![question_message(
                    base,
                    &question_id,
                    &title,
                    &question,
                    &options,
                    can(Capabilities::BUTTONS),
                )]
            }
        };
        let (mut done, mut first_id) = p.sent_chunks.get(&row.id).cloned().unwrap_or((0, None));
        for message in messages.into_iter().skip(done) {
            match self.platforms.send(&channel, message).await {
                Ok(id) => {
                    done += 1;
                    if first_id.is_none() {
                        first_id = id;
                    }
                    p.sent_chunks
                        .insert(row.id.clone(), (done, first_id.clone()));
                }
                Err(SendError::Permanent(e)) if done == 0 => return Outcome::Failed(e),
                Err(SendError::Permanent(e)) => {
                    return Outcome::Failed(format!("only {done} part(s) were sent: {e}"));
                }
                Err(SendError::Transient {
                    message,
                    retry_after,
                }) => {
                    return Outcome::Retry {
                        message,
                        retry_after,
                    };
                }
            }
        }
        out.posted_to.push(ChatAddress {
            channel,
            platform_id,
        });
        remove_outbox(&self.sessions, session, &row.id);
        Outcome::Delivered(first_id)
    }

    /// Loads `outbox/<message>/<name>` files, treating the directory as hostile.
    fn outbox_files(
        &self,
        session: &Session,
        message_id: &str,
        names: &[String],
    ) -> Result<Vec<OutboundFile>> {
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let dir = self
            .sessions
            .session_dir(session)?
            .join(OUTBOX_DIR)
            .join(message_id);
        let mut files = Vec::new();
        for name in names {
            match read_safe_file(&dir, name) {
                Ok(data) => files.push(OutboundFile {
                    name: name.as_str().into(),
                    mime_type: mime_for(name).into(),
                    data: data.into(),
                }),
                Err(why) => {
                    tracing::warn!(session = %session.id, file = name, reason = why, "outbox file skipped")
                }
            }
        }
        Ok(files)
    }

    /// Writes a message from this session's agent into the target agent's session.
    fn to_agent(
        &self,
        session: &Session,
        row: &OutRow,
        content: &ChatOut,
        out: &mut Drained,
    ) -> Result<Outcome> {
        let Some(target) = row
            .platform_id
            .as_deref()
            .and_then(|t| AgentGroupId::parse(t).ok())
        else {
            return Ok(Outcome::Rejected(
                "message to an agent has no target".to_string(),
            ));
        };
        let ChatOut::Send { text, files } = content else {
            return Ok(Outcome::Failed(
                "only plain messages can go to another agent".to_string(),
            ));
        };
        let source_agent = &session.agent_group_id;
        let (target_session, source_name) = {
            let allowed = target == *source_agent
                || self.db.read(|c| {
                    destinations::allows(c, source_agent, &Target::Agent(target.clone()))
                })?;
            if !allowed {
                return Ok(Outcome::Rejected(format!(
                    "agent {source_agent} has no destination for agent {target}; add one with `nanoclaw destinations add`"
                )));
            }
            let Some(source_group) = self.db.read(|c| agent_groups::get(c, source_agent))? else {
                return Ok(Outcome::Failed(
                    "the sending agent group is gone".to_string(),
                ));
            };
            if self.db.read(|c| agent_groups::get(c, &target))?.is_none() {
                return Ok(Outcome::Rejected(format!("agent {target} does not exist")));
            }
            let candidate = self.return_path(session, row, &target)?;
            let target_session = match candidate {
                Some(s) => s,
                None => self
                    .db
                    .write(|c| match registry::newest_active(c, &target)? {
                        Some(s) => Ok(s),
                        None => self.sessions.create(c, &target, None, None),
                    })?,
            };
            (target_session, source_group.display_name().to_string())
        };
        let id = crate::ids::generate("a2a");
        let attachments = copy_files(
            &self.sessions,
            session,
            &row.id,
            &target_session,
            &id,
            files,
        )?;
        let content = ChatIn {
            text: text.clone(),
            sender_id: Some(source_agent.to_string()),
            sender_name: Some(source_name),
            attachments,
            ..Default::default()
        };
        let content = serde_json::to_string(&content).map_err(|e| Error::Json {
            context: "message".into(),
            source: e,
        })?;
        let now = time::now();
        self.sessions.with_inbound(&target_session, |c| {
            inbound::insert_message(
                c,
                &NewMessage {
                    channel_type: Some(AGENT_CHANNEL),
                    platform_id: Some(source_agent.as_str()),
                    source_session_id: Some(session.id.as_str()),
                    ..NewMessage::new(&id, InKind::Chat, &now, &content)
                },
            )
        })?;
        tracing::info!(from = %session.id, to = %target_session.id, "message passed to another agent");
        out.wake.push(target_session);
        Ok(Outcome::Delivered(Some(id)))
    }

    /// The session of `target` this conversation already talks to: the sender of the message
    /// being answered, else the last session of `target` that wrote to this one.
    fn return_path(
        &self,
        session: &Session,
        row: &OutRow,
        target: &AgentGroupId,
    ) -> Result<Option<Session>> {
        let candidate: Option<String> = self.sessions.with_inbound(session, |c| {
            use rusqlite::OptionalExtension;
            let by_reply = match &row.in_reply_to {
                Some(id) => c
                    .query_row(
                        "SELECT source_session_id FROM messages_in WHERE id = ?1 AND channel_type = 'agent' AND platform_id = ?2",
                        [id, target.as_str()],
                        |r| r.get::<_, Option<String>>(0),
                    )
                    .optional()?
                    .flatten(),
                None => None,
            };
            match by_reply {
                Some(s) => Ok(Some(s)),
                None => Ok(c
                    .query_row(
                        "SELECT source_session_id FROM messages_in WHERE channel_type = 'agent' AND platform_id = ?1
                         AND source_session_id IS NOT NULL ORDER BY seq DESC LIMIT 1",
                        [target.as_str()],
                        |r| r.get::<_, Option<String>>(0),
                    )
                    .optional()?
                    .flatten()),
            }
        })?;
        let Some(id) = candidate.and_then(|c| SessionId::parse(&c).ok()) else {
            return Ok(None);
        };
        let s = self.db.read(|c| registry::get(c, &id))?;
        Ok(s.filter(|s| {
            &s.agent_group_id == target && s.status == crate::sessions::SessionStatus::Active
        }))
    }

    /// Posts a message the host itself composed (a refusal, an approval card) straight to a
    /// chat, without an agent or an outbound row.
    pub async fn send_direct(
        &self,
        chat: &ChatAddress,
        thread_id: Option<&str>,
        text: &str,
        buttons: &[(String, String)],
    ) -> std::result::Result<Option<String>, SendError> {
        let Some(limits) = self.platforms.limits(&chat.channel) else {
            return Err(SendError::Transient {
                message: format!("no {} plugin is running", chat.channel),
                retry_after: None,
            });
        };
        let mut text = text.to_string();
        let buttons = if buttons.is_empty() || limits.capabilities.contains(Capabilities::BUTTONS) {
            buttons
                .iter()
                .map(|(id, label)| Button {
                    id: id.as_str().into(),
                    label: label.as_str().into(),
                })
                .collect()
        } else {
            let labels: Vec<_> = buttons.iter().map(|(_, l)| l.as_str()).collect();
            text.push_str(&format!("\n\nOptions: {}", labels.join(", ")));
            Vec::new()
        };
        let message = OutboundMessage {
            op: OutboundOp::SEND,
            chat_id: chat.platform_id.as_str().into(),
            thread_id: thread_id.map(Into::into).into(),
            text: text.into(),
            buttons: buttons.into(),
            ..Default::default()
        };
        self.platforms.send(&chat.channel, message).await
    }
}

fn earliest(a: Option<Instant>, b: Instant) -> Option<Instant> {
    Some(a.map_or(b, |a| a.min(b)))
}

/// A question card: buttons where the channel has them, a text list otherwise.
fn question_message(
    base: OutboundMessage,
    question_id: &str,
    title: &str,
    question: &str,
    options: &[String],
    buttons: bool,
) -> OutboundMessage {
    let mut text = format!("{title}\n\n{question}");
    let buttons: Vec<Button> = if buttons {
        options
            .iter()
            .enumerate()
            .map(|(i, label)| Button {
                id: nanoclaw_plugin_api::kit::encode_button_id(question_id, i as u32).into(),
                label: label.as_str().into(),
            })
            .collect()
    } else {
        text.push_str(&format!("\n\nOptions: {}", options.join(", ")));
        Vec::new()
    };
    OutboundMessage {
        op: OutboundOp::SEND,
        text: text.into(),
        buttons: buttons.into(),
        ..base
    }
}

/// Reads `dir/name`, refusing unsafe names, symlinks, non-files, escapes and huge files.
fn read_safe_file(dir: &Path, name: &str) -> std::result::Result<Vec<u8>, String> {
    if !is_safe_file_name(name) {
        return Err("unsafe file name".into());
    }
    let meta = std::fs::symlink_metadata(dir).map_err(|e| e.to_string())?;
    if meta.file_type().is_symlink() || !meta.is_dir() {
        return Err("outbox entry is not a plain directory".into());
    }
    let path = dir.join(name);
    let meta = std::fs::symlink_metadata(&path).map_err(|e| e.to_string())?;
    if !meta.file_type().is_file() {
        return Err("not a regular file".into());
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(format!("larger than {MAX_FILE_BYTES} bytes"));
    }
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)
        .map_err(|e| e.to_string())?;
    let mut data = Vec::new();
    file.by_ref()
        .take(MAX_FILE_BYTES)
        .read_to_end(&mut data)
        .map_err(|e| e.to_string())?;
    Ok(data)
}

fn mime_for(name: &str) -> &'static str {
    let ext = name
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "pdf" => "application/pdf",
        "txt" | "md" | "log" => "text/plain",
        "csv" => "text/csv",
        "json" => "application/json",
        "html" => "text/html",
        "mp3" => "audio/mpeg",
        "ogg" => "audio/ogg",
        "mp4" => "video/mp4",
        "zip" => "application/zip",
        _ => "",
    }
}

/// Best effort: a sent message's files are no longer needed.
fn remove_outbox(sessions: &SessionStore, session: &Session, message_id: &str) {
    if !is_safe_file_name(message_id) {
        return;
    }
    if let Ok(dir) = sessions
        .session_dir(session)
        .map(|d| d.join(OUTBOX_DIR).join(message_id))
        && std::fs::symlink_metadata(&dir).is_ok_and(|m| m.is_dir())
    {
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// Copies a message's outbox files into another session's inbox.
fn copy_files(
    sessions: &SessionStore,
    from: &Session,
    message_id: &str,
    to: &Session,
    new_id: &str,
    names: &[String],
) -> Result<Vec<AttachmentRef>> {
    let mut refs = Vec::new();
    if names.is_empty() || !is_safe_file_name(message_id) {
        return Ok(refs);
    }
    let src = sessions
        .session_dir(from)?
        .join(OUTBOX_DIR)
        .join(message_id);
    let dst_dir = sessions
        .session_dir(to)?
        .join(nanoclaw_schema::session::INBOX_DIR)
        .join(new_id);
    for name in names {
        match read_safe_file(&src, name) {
            Ok(data) => {
                std::fs::create_dir_all(&dst_dir)
                    .map_err(|e| Error::io(format!("create {}", dst_dir.display()), e))?;
                std::fs::write(dst_dir.join(name), &data)
                    .map_err(|e| Error::io(format!("copy {name} to {}", to.id), e))?;
                refs.push(AttachmentRef {
                    name: name.clone(),
                    kind: "file".to_string(),
                    size: Some(data.len() as u64),
                    path: Some(format!(
                        "{}/{new_id}/{name}",
                        nanoclaw_schema::session::INBOX_DIR
                    )),
                    ..Default::default()
                });
            }
            Err(why) => tracing::warn!(
                file = name,
                reason = why,
                "file not passed to the other agent"
            ),
        }
    }
    Ok(refs)
}

/// Counts of outbound outcomes, for reports.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct Totals {
    pub delivered: usize,
    pub rejected: usize,
    pub failed: usize,
}

#[cfg(test)]
mod tests;
