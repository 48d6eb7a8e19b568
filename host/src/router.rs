//! The inbound router: from a platform message to rows in the right sessions' `inbound.db`.
//!
//! For every message: resolve (or, when the bot is addressed, create) the chat, upsert the
//! sender, then for each wired agent (highest priority first) decide whether the message
//! engages it, pass it through the access gate (the chat's unknown-sender policy), the
//! wiring's sender scope and the command gate, resolve the session per the wiring's session
//! mode, and write the message. A message nobody receives is logged as `MESSAGE DROPPED`
//! with a hint, and recorded.
//!
//! Routing is synchronous and side-effect free beyond the databases: what must happen next
//! (wake a container, ask an approver, answer the sender directly) is returned in
//! [`RouteOutcome`] for the daemon to carry out.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use regex::Regex;
use rusqlite::Connection;
use serde::{Deserialize, Serialize};

use nanoclaw_schema::session::content::{AttachmentRef, ChatIn, QuotedMessage};
use nanoclaw_schema::session::{INBOX_DIR, InKind, is_safe_file_name};

use crate::access;
use crate::db::Db;
use crate::error::{Error, IoContext, Result};
use crate::ids::{AgentGroupId, ApprovalId, ChannelType, ChatAddress, PlatformId, UserId};
use crate::sessions::inbound::{self, Insert, NewMessage};
use crate::sessions::{Session, SessionStore, registry};
use crate::store::approvals::{self, Held};
use crate::store::dropped::{self, DropReason};
use crate::store::messaging_groups::{
    self, MessagingGroup, NewMessagingGroup, UnknownSenderPolicy,
};
use crate::store::wirings::{
    self, EngageMode, IgnoredMessagePolicy, SenderScope, SessionMode, Wiring,
};
use crate::store::{agent_groups, users};

/// Largest attachment the host saves into a session's inbox.
pub const MAX_ATTACHMENT_BYTES: usize = 50 * 1024 * 1024;

/// A message from a platform, as a plugin reports it (ids raw, not namespaced).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Inbound {
    pub channel: ChannelType,
    pub chat_id: PlatformId,
    /// The chat's title, when the platform tells.
    #[serde(default)]
    pub chat_name: Option<String>,
    #[serde(default)]
    pub thread_id: Option<String>,
    /// The platform's id for the message; redeliveries of one message carry the same id.
    #[serde(default)]
    pub message_id: Option<String>,
    #[serde(default)]
    pub sender: Option<Sender>,
    #[serde(default)]
    pub is_group: bool,
    /// The platform says the bot was addressed. DMs always count as addressed.
    #[serde(default)]
    pub mentioned: bool,
    #[serde(default)]
    pub text: String,
    #[serde(default)]
    pub attachments: Vec<IncomingAttachment>,
    #[serde(default)]
    pub reply_to: Option<QuotedMessage>,
    /// When it was sent (stored timestamp format); `None` = now.
    #[serde(default)]
    pub timestamp: Option<String>,
    #[serde(default)]
    pub extra: Option<serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sender {
    /// Raw platform handle; the user id is `<channel>:<handle>`.
    pub handle: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub is_bot: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IncomingAttachment {
    pub name: String,
    #[serde(default = "default_kind")]
    pub kind: String,
    #[serde(default)]
    pub mime_type: Option<String>,
    #[serde(default, with = "base64_bytes")]
    pub data: Vec<u8>,
    #[serde(default)]
    pub url: Option<String>,
}

fn default_kind() -> String {
    "file".to_string()
}

mod base64_bytes {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        STANDARD.decode(s).map_err(serde::de::Error::custom)
    }
}

impl Inbound {
    /// A plain text message; the starting point for tests and the local channel.
    pub fn text(
        channel: &ChannelType,
        chat_id: &str,
        sender: Option<&str>,
        text: &str,
    ) -> Result<Inbound> {
        Ok(Inbound {
            channel: channel.clone(),
            chat_id: PlatformId::parse(chat_id)?,
            chat_name: None,
            thread_id: None,
            message_id: None,
            sender: sender.map(|h| Sender {
                handle: h.to_string(),
                name: None,
                is_bot: false,
            }),
            is_group: false,
            mentioned: false,
            text: text.to_string(),
            attachments: Vec::new(),
            reply_to: None,
            timestamp: None,
            extra: None,
        })
    }

    fn addressed(&self) -> bool {
        self.mentioned || !self.is_group
    }
}

/// What the router needs to know about a running channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ChannelCaps {
    /// A thread is the unit of conversation (Slack, Discord); otherwise thread ids are ignored.
    pub threads: bool,
}

/// A message written into a session.
#[derive(Debug, Clone, PartialEq)]
pub struct Routed {
    pub session: Session,
    pub message_id: String,
    pub seq: i64,
    /// False for accumulated context (no wake).
    pub trigger: bool,
}

/// A message held until an approver decides about its sender.
#[derive(Debug, Clone, PartialEq)]
pub struct HeldForApproval {
    pub approval: ApprovalId,
    /// True when this message opened the request, so an approver should be asked now.
    pub new_request: bool,
    pub agent: AgentGroupId,
    pub chat: MessagingGroup,
    pub sender: UserId,
}

/// A short answer the host itself sends back to the chat (not from an agent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectReply {
    pub chat: ChatAddress,
    pub thread_id: Option<String>,
    pub text: String,
}

/// Everything routing one message did or asks to be done.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RouteOutcome {
    pub routed: Vec<Routed>,
    pub held: Vec<HeldForApproval>,
    pub replies: Vec<DirectReply>,
    /// Set when no agent received the message.
    pub dropped: Option<DropReason>,
    /// Redeliveries of a message already written (ignored).
    pub duplicates: usize,
}

impl RouteOutcome {
    /// Sessions that received a message that should wake their agent.
    pub fn sessions_to_wake(&self) -> impl Iterator<Item = &Session> {
        self.routed.iter().filter(|r| r.trigger).map(|r| &r.session)
    }
}

/// Slash commands that never reach an agent (they belong to the operator's tools).
const FILTERED_COMMANDS: &[&str] = &[
    "/help",
    "/login",
    "/logout",
    "/doctor",
    "/config",
    "/remote-control",
];
/// Slash commands only owners and admins of the agent may send.
pub const ADMIN_COMMANDS: &[&str] = &["/clear", "/compact", "/context", "/cost", "/files"];

/// The command word of a message (`/clear` from "/clear now"), lower-cased.
pub fn command_of(text: &str) -> Option<String> {
    let t = text.trim_start();
    if !t.starts_with('/') {
        return None;
    }
    t.split_whitespace().next().map(str::to_lowercase)
}

pub struct Router {
    db: Arc<Db>,
    sessions: Arc<SessionStore>,
    channels: HashMap<ChannelType, ChannelCaps>,
    patterns: std::sync::Mutex<HashMap<String, Option<Regex>>>,
}

/// One delivery decided in the central transaction, written to the session afterwards.
struct Planned {
    session: Session,
    trigger: bool,
}

impl Router {
    pub fn new(
        db: Arc<Db>,
        sessions: Arc<SessionStore>,
        channels: HashMap<ChannelType, ChannelCaps>,
    ) -> Self {
        Router {
            db,
            sessions,
            channels,
            patterns: Default::default(),
        }
    }

    /// Routes one inbound message. An `Err` means nothing was written for it and the plugin
    /// should not acknowledge it to the platform (so the platform redelivers).
    pub fn route(&self, msg: &Inbound) -> Result<RouteOutcome> {
        let caps = *self.channels.get(&msg.channel).ok_or_else(|| {
            Error::invalid(format!(
                "no channel plugin of type {:?} is running; message not routed",
                msg.channel.as_str()
            ))
        })?;
        let mut msg = msg.clone();
        if !caps.threads {
            msg.thread_id = None;
        }
        if msg
            .message_id
            .as_deref()
            .is_none_or(|id| id.trim().is_empty())
        {
            // A stable id, so a replay after approval cannot double-deliver.
            msg.message_id = Some(crate::ids::generate("msg"));
        }
        let sender = match &msg.sender {
            Some(s) => Some(UserId::new(&msg.channel, &s.handle)?),
            None => None,
        };

        let mut outcome = RouteOutcome::default();
        let plan = self
            .db
            .write(|tx| self.plan(tx, &msg, caps, sender.as_ref(), &mut outcome))?;
        for p in plan {
            self.write(&msg, sender.as_ref(), p, &mut outcome)?;
        }
        if !outcome.routed.is_empty() || outcome.duplicates > 0 {
            // Some agent got it; per-agent refusals were recorded, but the message was not lost.
            outcome.dropped = None;
        }
        Ok(outcome)
    }

    /// The central-DB half: who gets the message, in which session.
    fn plan(
        &self,
        tx: &Connection,
        msg: &Inbound,
        caps: ChannelCaps,
        sender: Option<&UserId>,
        outcome: &mut RouteOutcome,
    ) -> Result<Vec<Planned>> {
        let address = ChatAddress {
            channel: msg.channel.clone(),
            platform_id: msg.chat_id.clone(),
        };
        let sender_name = msg.sender.as_ref().and_then(|s| s.name.as_deref());
        let chat = match messaging_groups::find(tx, &msg.channel, &msg.chat_id)? {
            Some(chat) => chat,
            None if msg.addressed() => {
                let name = msg.chat_name.clone().or_else(|| {
                    (!msg.is_group)
                        .then(|| sender_name.map(str::to_string))
                        .flatten()
                });
                let (chat, _) = messaging_groups::get_or_create(
                    tx,
                    &NewMessagingGroup {
                        channel_type: msg.channel.clone(),
                        platform_id: msg.chat_id.clone(),
                        name,
                        is_group: msg.is_group,
                        unknown_sender_policy: UnknownSenderPolicy::default(),
                    },
                )?;
                tracing::info!(chat = %address, "new chat seen");
                chat
            }
            None => {
                tracing::debug!(chat = %address, "message in an unknown chat that does not address the bot");
                outcome.dropped = Some(DropReason::NoAgentWired);
                return Ok(Vec::new());
            }
        };
        if let Some(id) = sender {
            users::upsert(tx, id, sender_name)?;
        }
        let wirings = wirings::for_chat(tx, &chat.id)?;
        if wirings.is_empty() {
            self.drop_message(
                tx,
                msg,
                &chat,
                sender,
                None,
                DropReason::NoAgentWired,
                outcome,
            )?;
            return Ok(Vec::new());
        }

        let mut plan = Vec::new();
        for wiring in &wirings {
            let Some(agent) = agent_groups::get(tx, &wiring.agent_group_id)? else {
                continue;
            };
            let engaged = self.engages(tx, wiring, msg, &chat)?;
            let allowed = match (chat.unknown_sender_policy, sender) {
                (UnknownSenderPolicy::Public, _) => true,
                (_, None) => false,
                (_, Some(u)) => access::can_access_agent_group(tx, u, &agent.id)?.is_allowed(),
            };
            if !engaged {
                if wiring.rules.ignored_message_policy == IgnoredMessagePolicy::Accumulate
                    && allowed
                {
                    // Context for later; no wake, no approval request for mere chatter.
                    let session = self.session_for(tx, wiring, &chat, msg, caps)?;
                    plan.push(Planned {
                        session,
                        trigger: false,
                    });
                }
                continue;
            }
            if !allowed {
                match (chat.unknown_sender_policy, sender) {
                    (UnknownSenderPolicy::RequestApproval, Some(u)) => {
                        let event = serde_json::to_string(msg).map_err(|e| Error::Json {
                            context: "held message".into(),
                            source: e,
                        })?;
                        let (id, new_request) = match approvals::hold_sender_message(
                            tx, &chat.id, &agent.id, u, &event,
                        )? {
                            Held::NewRequest(id) => (id, true),
                            Held::Queued(id) => (id, false),
                            Held::QueueFull(_) => {
                                let reason = DropReason::ApprovalQueueFull;
                                self.drop_message(
                                    tx,
                                    msg,
                                    &chat,
                                    sender,
                                    Some(&agent.id),
                                    reason,
                                    outcome,
                                )?;
                                continue;
                            }
                        };
                        tracing::info!(chat = %address, sender = %u, agent = %agent.folder, approval = %id,
                            "message held until an approver decides about the sender");
                        outcome.held.push(HeldForApproval {
                            approval: id,
                            new_request,
                            agent: agent.id.clone(),
                            chat: chat.clone(),
                            sender: u.clone(),
                        });
                    }
                    _ => {
                        self.drop_message(
                            tx,
                            msg,
                            &chat,
                            sender,
                            Some(&agent.id),
                            DropReason::UnknownSenderStrict,
                            outcome,
                        )?;
                    }
                }
                continue;
            }
            if wiring.rules.sender_scope == SenderScope::Known {
                let known = match sender {
                    Some(u) => access::can_access_agent_group(tx, u, &agent.id)?.is_allowed(),
                    None => false,
                };
                if !known {
                    self.drop_message(
                        tx,
                        msg,
                        &chat,
                        sender,
                        Some(&agent.id),
                        DropReason::SenderScope,
                        outcome,
                    )?;
                    continue;
                }
            }
            if let Some(cmd) = command_of(&msg.text) {
                if FILTERED_COMMANDS.contains(&cmd.as_str()) {
                    tracing::debug!(chat = %address, command = cmd, "filtered command not passed to the agent");
                    outcome.dropped = Some(DropReason::FilteredCommand);
                    continue;
                }
                if ADMIN_COMMANDS.contains(&cmd.as_str()) {
                    let admin = match sender {
                        Some(u) => access::has_admin_privilege(tx, u, &agent.id)?,
                        None => false,
                    };
                    if !admin {
                        tracing::info!(chat = %address, sender = ?sender, command = cmd, "admin command refused");
                        outcome.replies.push(DirectReply {
                            chat: address.clone(),
                            thread_id: msg.thread_id.clone(),
                            text: format!("Permission denied: {cmd} requires admin access."),
                        });
                        continue;
                    }
                }
            }
            let session = self.session_for(tx, wiring, &chat, msg, caps)?;
            plan.push(Planned {
                session,
                trigger: true,
            });
        }
        let nothing = plan.is_empty() && outcome.held.is_empty() && outcome.replies.is_empty();
        if nothing && outcome.dropped.is_none() {
            self.drop_message(
                tx,
                msg,
                &chat,
                sender,
                None,
                DropReason::NoAgentEngaged,
                outcome,
            )?;
        }
        Ok(plan)
    }

    fn engages(
        &self,
        tx: &Connection,
        wiring: &Wiring,
        msg: &Inbound,
        chat: &MessagingGroup,
    ) -> Result<bool> {
        Ok(match wiring.rules.engage_mode {
            EngageMode::Pattern => match &wiring.rules.engage_pattern {
                None => true,
                Some(p) => self.pattern_matches(p, &msg.text),
            },
            EngageMode::Mention => msg.addressed(),
            EngageMode::MentionSticky => {
                if msg.addressed() {
                    true
                } else {
                    // Not addressed, in a group: follow threads the agent is already in.
                    registry::find_active(
                        tx,
                        &wiring.agent_group_id,
                        Some(&chat.id),
                        msg.thread_id.as_deref(),
                    )?
                    .is_some()
                }
            }
        })
    }

    fn pattern_matches(&self, pattern: &str, text: &str) -> bool {
        let mut cache = self.patterns.lock().unwrap_or_else(|p| p.into_inner());
        let re = cache.entry(pattern.to_string()).or_insert_with(|| match Regex::new(pattern) {
            Ok(re) => Some(re),
            Err(e) => {
                // Stored patterns were validated; one edited by hand fails closed.
                tracing::error!(pattern, error = %e, "invalid engage pattern; the wiring will not engage");
                None
            }
        });
        re.as_ref().is_some_and(|re| re.is_match(text))
    }

    fn session_for(
        &self,
        tx: &Connection,
        wiring: &Wiring,
        chat: &MessagingGroup,
        msg: &Inbound,
        caps: ChannelCaps,
    ) -> Result<Session> {
        let mut mode = wiring.rules.session_mode;
        if caps.threads && chat.is_group && mode != SessionMode::AgentShared {
            mode = SessionMode::PerThread;
        }
        let (session, _) = self.sessions.resolve(
            tx,
            &wiring.agent_group_id,
            chat,
            msg.thread_id.as_deref(),
            mode,
        )?;
        registry::touch(tx, &session.id)?;
        Ok(session)
    }

    #[allow(clippy::too_many_arguments)]
    fn drop_message(
        &self,
        tx: &Connection,
        msg: &Inbound,
        chat: &MessagingGroup,
        sender: Option<&UserId>,
        agent: Option<&AgentGroupId>,
        reason: DropReason,
        outcome: &mut RouteOutcome,
    ) -> Result<()> {
        let address = chat.address();
        tracing::warn!(
            chat = %address,
            sender = sender.map(|s| s.as_str()),
            reason = %reason,
            hint = %reason.hint(&address.to_string(), sender),
            "MESSAGE DROPPED"
        );
        dropped::record(
            tx,
            &dropped::Drop {
                channel_type: &msg.channel,
                platform_id: &msg.chat_id,
                user_id: sender,
                sender_name: msg.sender.as_ref().and_then(|s| s.name.as_deref()),
                reason,
                messaging_group_id: Some(&chat.id),
                agent_group_id: agent,
            },
        )?;
        outcome.dropped = Some(reason);
        Ok(())
    }

    /// The session half: write the message (and its attachments) into one session.
    fn write(
        &self,
        msg: &Inbound,
        sender: Option<&UserId>,
        p: Planned,
        outcome: &mut RouteOutcome,
    ) -> Result<()> {
        let platform_message_id = msg.message_id.as_deref().unwrap_or_default();
        // Platform message ids are only unique within a chat (Telegram numbers every chat's
        // messages from 1), and an agent-shared session takes several chats: the row id
        // names the chat, so their messages never pass for redeliveries of each other.
        let id = format!(
            "{}:{}:{platform_message_id}:{}",
            msg.channel, msg.chat_id, p.session.agent_group_id
        );
        let dir = self.sessions.session_dir(&p.session)?;
        let attachments = save_attachments(&dir, &id, &msg.attachments)?;
        let content = ChatIn {
            text: msg.text.clone(),
            sender_id: sender.map(|s| s.to_string()),
            sender_name: msg.sender.as_ref().and_then(|s| s.name.clone()),
            is_mention: msg.addressed(),
            is_group: msg.is_group,
            attachments,
            reply_to: msg.reply_to.clone(),
            extra: msg.extra.clone(),
        };
        let content = serde_json::to_string(&content).map_err(|e| Error::Json {
            context: "message".into(),
            source: e,
        })?;
        let now = nanoclaw_schema::time::now();
        let row = NewMessage {
            trigger: p.trigger,
            channel_type: Some(msg.channel.as_str()),
            platform_id: Some(msg.chat_id.as_str()),
            thread_id: msg.thread_id.as_deref(),
            platform_message_id: msg.message_id.as_deref(),
            ..NewMessage::new(
                &id,
                InKind::Chat,
                msg.timestamp.as_deref().unwrap_or(&now),
                &content,
            )
        };
        match self
            .sessions
            .with_inbound(&p.session, |db| inbound::insert_message(db, &row))?
        {
            Insert::Inserted { seq } => {
                outcome.routed.push(Routed {
                    session: p.session,
                    message_id: id,
                    seq,
                    trigger: p.trigger,
                });
            }
            Insert::Duplicate => {
                tracing::debug!(message = id, "redelivered message ignored");
                outcome.duplicates += 1;
            }
        }
        Ok(())
    }
}

/// Saves attachment bytes under `inbox/<message>/` of a session directory, treating the
/// directory as hostile (the agent can write there): no symlinks followed, files created
/// exclusively, names reduced to safe basenames.
fn save_attachments(
    session_dir: &Path,
    message_id: &str,
    list: &[IncomingAttachment],
) -> Result<Vec<AttachmentRef>> {
    let mut refs = Vec::with_capacity(list.len());
    for (n, a) in list.iter().enumerate() {
        let mut r = AttachmentRef {
            name: a.name.clone(),
            kind: a.kind.clone(),
            mime_type: a.mime_type.clone(),
            size: (!a.data.is_empty()).then_some(a.data.len() as u64),
            path: None,
            url: a.url.clone(),
        };
        if !a.data.is_empty() {
            if a.data.len() > MAX_ATTACHMENT_BYTES {
                tracing::warn!(
                    name = a.name,
                    size = a.data.len(),
                    "attachment too large; only its name is passed on"
                );
            } else {
                let name = if is_safe_file_name(&a.name) {
                    a.name.clone()
                } else {
                    format!("attachment-{}", n + 1)
                };
                r.path = Some(write_inbox_file(session_dir, message_id, &name, &a.data)?);
            }
        }
        refs.push(r);
    }
    Ok(refs)
}

fn write_inbox_file(
    session_dir: &Path,
    message_id: &str,
    name: &str,
    data: &[u8],
) -> Result<String> {
    use std::os::unix::fs::OpenOptionsExt;
    let folder: String = message_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let inbox = session_dir.join(INBOX_DIR);
    for dir in [inbox.clone(), inbox.join(&folder)] {
        match std::fs::symlink_metadata(&dir) {
            Ok(meta) if meta.file_type().is_symlink() || !meta.is_dir() => {
                return Err(Error::invalid(format!(
                    "{} is not a plain directory; refusing to write there",
                    dir.display()
                )));
            }
            Ok(_) => {}
            Err(_) => {
                std::fs::create_dir(&dir).io_context(|| format!("create {}", dir.display()))?
            }
        }
    }
    let path = inbox.join(&folder).join(name);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)
        .io_context(|| format!("create attachment {}", path.display()))?;
    file.write_all(data)
        .io_context(|| format!("write attachment {}", path.display()))?;
    Ok(format!("{INBOX_DIR}/{folder}/{name}"))
}

#[cfg(test)]
mod tests;
