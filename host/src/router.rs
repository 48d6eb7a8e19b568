//! The inbound router: from a platform message to rows queued for the right sessions.
//!
//! For every message: resolve (or, when the bot is addressed, create) the chat, upsert the
//! sender, then for each wired agent (highest priority first) decide whether the message
//! engages it, pass it through the access gate ([`access::inbound_gate`]: the chat's
//! unknown-sender policy and the wiring's sender scope) and the command gate, resolve the
//! session per the wiring's session mode, and give the message to it. A message addressed to
//! the bot in a group chat nobody wired is held for the owner to wire or ignore the chat
//! ([`crate::chat_requests`]). A message nobody receives is logged as `MESSAGE DROPPED` with
//! a hint, and recorded.
//!
//! The decision is one central transaction and touches no session file. Then, outside the
//! central lock, each message goes straight into its session's `inbound.db` if that DB takes
//! it without waiting, and into the central queue otherwise (a container can hold its DB
//! locked; one that does must not slow routing for anyone). What must happen next (write
//! the queued rows, wake a container, ask an approver, answer the sender directly) is
//! returned in [`RouteOutcome`] for the daemon to carry out.

use std::collections::HashMap;
use std::sync::Arc;

use regex::Regex;
use rusqlite::Connection;
use serde::{Deserialize, Serialize};

use nanoclaw_schema::session::InKind;
use nanoclaw_schema::session::content::{AttachmentRef, ChatIn, QuotedMessage};

use crate::access::{self, Gate};
use crate::db::Db;
use crate::error::{Error, Result};
use crate::ids::{
    AgentGroupId, ApprovalId, ChannelName, ChatAddress, ChatRequestId, PlatformId, UserId,
};
use crate::sessions::dir::inbox_folder;
use crate::sessions::inbound::Insert;
use crate::sessions::queue::{self, Queued};
use crate::sessions::{FileName, Session, SessionStore, registry};
use crate::store::approvals::{self, Held};
use crate::store::chat_requests::{self, ChatHeld};
use crate::store::dropped::{self, DropReason};
use crate::store::messaging_groups::{
    self, MessagingGroup, NewMessagingGroup, UnknownSenderPolicy,
};
use crate::store::wirings::{self, EngageMode, IgnoredMessagePolicy, SessionMode, Wiring};
use crate::store::{agent_groups, users};

mod deletion;
pub use deletion::Deletion;

/// Largest attachment the host saves into a session's inbox.
pub const MAX_ATTACHMENT_BYTES: usize = 50 * 1024 * 1024;

/// A message from a platform, as a plugin reports it (ids raw, not namespaced).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Inbound {
    pub channel: ChannelName,
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
        channel: &ChannelName,
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

/// A message given to a session.
#[derive(Debug, Clone, PartialEq)]
pub struct Routed {
    pub session: Session,
    pub message_id: String,
    /// False for accumulated context (no wake).
    pub trigger: bool,
    /// In the central queue, not yet in the session's `inbound.db` (hand it to the writer).
    pub queued: bool,
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

/// A message held because its group chat is new and nobody wired it yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldForChat {
    pub request: ChatRequestId,
    /// True when this message opened the request, so an owner should be asked now.
    pub new_request: bool,
    pub chat: MessagingGroup,
    pub sender: Option<UserId>,
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
    pub chat_held: Vec<HeldForChat>,
    pub replies: Vec<DirectReply>,
    /// Set when no agent received the message.
    pub dropped: Option<DropReason>,
    /// Redeliveries of a message already written (ignored).
    pub duplicates: usize,
    /// Sessions with work waiting in the central DB for the writer (withdrawals of deleted
    /// messages whose session DB was busy).
    pub to_flush: Vec<Session>,
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
    channels: HashMap<ChannelName, ChannelCaps>,
    patterns: std::sync::Mutex<HashMap<String, Option<Regex>>>,
}

/// One delivery decided in the central transaction.
struct Planned {
    session: Session,
    trigger: bool,
    /// The session has messages waiting in the queue: this one must go after them.
    behind: bool,
}

/// What the command gate made of a message for one agent.
enum Command {
    /// Not a command, or one the sender may send: it goes to the agent.
    Pass,
    /// Filtered or refused; it does not go to this agent.
    Stop,
}

impl Router {
    pub fn new(
        db: Arc<Db>,
        sessions: Arc<SessionStore>,
        channels: HashMap<ChannelName, ChannelCaps>,
    ) -> Self {
        Router {
            db,
            sessions,
            channels,
            patterns: Default::default(),
        }
    }

    /// Routes one inbound message: decides who gets it (in the central DB) and gives it to
    /// their sessions. An `Ok` means it is durable, in the session's `inbound.db` or in the
    /// central queue (the plugin may acknowledge it to the platform); an `Err` means the
    /// platform should redeliver (what was already written is recognised as a redelivery).
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
        let (plan, mut outcome) = self.db.write(|tx| {
            let mut outcome = RouteOutcome::default();
            let plan = self.plan(tx, &msg, caps, sender.as_ref(), &mut outcome)?;
            Ok((plan, outcome))
        })?;
        // Outside the central lock: attachments to disk, then each message straight into its
        // session if the session DB takes it at once, else into the queue (durable before
        // this returns either way).
        let mut queue = Vec::new();
        for p in &plan {
            let refs = if msg.attachments.iter().any(|a| !a.data.is_empty()) {
                self.save_attachments(&msg, p)?
            } else {
                Vec::new()
            };
            let row = self.row(&msg, sender.as_ref(), p, refs)?;
            if !p.behind {
                match self.sessions.try_insert(&p.session, &row) {
                    Ok(Insert::Inserted { .. }) => {
                        outcome.routed.push(Routed {
                            session: p.session.clone(),
                            message_id: row.id,
                            trigger: p.trigger,
                            queued: false,
                        });
                        continue;
                    }
                    Ok(Insert::Duplicate) => {
                        tracing::debug!(message = row.id, "redelivered message ignored");
                        outcome.duplicates += 1;
                        continue;
                    }
                    Err(e) => {
                        tracing::debug!(session = %p.session.id, error = %e, "session DB busy; message queued")
                    }
                }
            }
            queue.push((p, row));
        }
        if !queue.is_empty() {
            self.db.write(|tx| {
                for (p, row) in queue {
                    self.queue(tx, p, row, &mut outcome)?;
                }
                Ok(())
            })?;
        }
        if !outcome.routed.is_empty() || outcome.duplicates > 0 {
            // Some agent got it; per-agent refusals were recorded, but the message was not lost.
            outcome.dropped = None;
        }
        Ok(outcome)
    }

    /// Who gets the message, in which session: for each wired agent (highest priority
    /// first), the engage rule, [`access::inbound_gate`], the command gate, the session.
    fn plan(
        &self,
        tx: &Connection,
        msg: &Inbound,
        caps: ChannelCaps,
        sender: Option<&UserId>,
        outcome: &mut RouteOutcome,
    ) -> Result<Vec<Planned>> {
        let Some(chat) = self.chat(tx, msg, outcome)? else {
            return Ok(Vec::new());
        };
        if let Some(id) = sender {
            let name = msg.sender.as_ref().and_then(|s| s.name.as_deref());
            users::upsert(tx, id, name)?;
        }
        let wirings = wirings::for_chat(tx, &chat.id)?;
        if wirings.is_empty() && chat.is_group && msg.addressed() {
            self.hold_for_owner(tx, msg, &chat, sender, outcome)?;
            return Ok(Vec::new());
        }
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
            let gate =
                access::inbound_gate(tx, &chat, &agent.id, sender, wiring.rules.sender_scope)?;
            if !self.engages(tx, wiring, msg, &chat)? {
                // Context for later, if the gate lets it in; mere chatter never asks an
                // approver.
                if wiring.rules.ignored_message_policy == IgnoredMessagePolicy::Accumulate
                    && gate == Gate::Pass
                {
                    let session = self.session_for(tx, wiring, &chat, msg, caps)?;
                    plan.push(Planned {
                        behind: queue::has_waiting(tx, &session.id)?,
                        session,
                        trigger: false,
                    });
                }
                continue;
            }
            match gate {
                Gate::Pass => {}
                Gate::Hold(user) => {
                    self.hold(tx, msg, &chat, &agent.id, &user, outcome)?;
                    continue;
                }
                Gate::Refuse(reason) => {
                    self.drop_message(tx, msg, &chat, sender, Some(&agent.id), reason, outcome)?;
                    continue;
                }
            }
            if let Command::Stop = self.command_gate(tx, msg, &agent.id, sender, outcome)? {
                continue;
            }
            let session = self.session_for(tx, wiring, &chat, msg, caps)?;
            plan.push(Planned {
                behind: queue::has_waiting(tx, &session.id)?,
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

    /// The message's chat: known, or created when the bot is addressed in it.
    fn chat(
        &self,
        tx: &Connection,
        msg: &Inbound,
        outcome: &mut RouteOutcome,
    ) -> Result<Option<MessagingGroup>> {
        if let Some(chat) = messaging_groups::find(tx, &msg.channel, &msg.chat_id)? {
            return Ok(Some(chat));
        }
        let address = ChatAddress {
            channel: msg.channel.clone(),
            platform_id: msg.chat_id.clone(),
        };
        if !msg.addressed() {
            tracing::debug!(chat = %address, "message in an unknown chat that does not address the bot");
            outcome.dropped = Some(DropReason::NoAgentWired);
            return Ok(None);
        }
        let sender_name = msg.sender.as_ref().and_then(|s| s.name.as_deref());
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
        Ok(Some(chat))
    }

    /// Holds a message addressed to the bot in a group chat nobody wired, until an owner
    /// wires the chat or ignores it (see [`crate::chat_requests`]).
    fn hold_for_owner(
        &self,
        tx: &Connection,
        msg: &Inbound,
        chat: &MessagingGroup,
        sender: Option<&UserId>,
        outcome: &mut RouteOutcome,
    ) -> Result<()> {
        let event = serde_json::to_string(msg).map_err(|e| Error::Json {
            context: "held message".into(),
            source: e,
        })?;
        let (request, new_request) = match chat_requests::hold_message(tx, &chat.id, &event)? {
            ChatHeld::NewRequest(id) => (id, true),
            ChatHeld::Queued(id) => (id, false),
            ChatHeld::QueueFull(_) => {
                let reason = DropReason::ChatQueueFull;
                return self.drop_message(tx, msg, chat, sender, None, reason, outcome);
            }
            ChatHeld::Ignored => {
                let reason = DropReason::ChatIgnored;
                return self.drop_message(tx, msg, chat, sender, None, reason, outcome);
            }
            ChatHeld::Unwired => {
                let reason = DropReason::NoAgentWired;
                return self.drop_message(tx, msg, chat, sender, None, reason, outcome);
            }
        };
        tracing::info!(chat = %chat.address(), request = %request,
            "message held until an owner wires the new group chat");
        outcome.chat_held.push(HeldForChat {
            request,
            new_request,
            chat: chat.clone(),
            sender: sender.cloned(),
        });
        Ok(())
    }

    /// Holds the message of an unknown sender until an approver decides.
    fn hold(
        &self,
        tx: &Connection,
        msg: &Inbound,
        chat: &MessagingGroup,
        agent: &AgentGroupId,
        sender: &UserId,
        outcome: &mut RouteOutcome,
    ) -> Result<()> {
        let event = serde_json::to_string(msg).map_err(|e| Error::Json {
            context: "held message".into(),
            source: e,
        })?;
        let (id, new_request) =
            match approvals::hold_sender_message(tx, &chat.id, agent, sender, &event)? {
                Held::NewRequest(id) => (id, true),
                Held::Queued(id) => (id, false),
                Held::QueueFull(_) => {
                    let reason = DropReason::ApprovalQueueFull;
                    return self.drop_message(
                        tx,
                        msg,
                        chat,
                        Some(sender),
                        Some(agent),
                        reason,
                        outcome,
                    );
                }
            };
        tracing::info!(chat = %chat.address(), sender = %sender, agent = %agent, approval = %id,
            "message held until an approver decides about the sender");
        outcome.held.push(HeldForApproval {
            approval: id,
            new_request,
            agent: agent.clone(),
            chat: chat.clone(),
            sender: sender.clone(),
        });
        Ok(())
    }

    /// Slash commands: operator-only ones never reach an agent; admin ones need admin
    /// privilege over the agent (a refusal is answered in the chat).
    fn command_gate(
        &self,
        tx: &Connection,
        msg: &Inbound,
        agent: &AgentGroupId,
        sender: Option<&UserId>,
        outcome: &mut RouteOutcome,
    ) -> Result<Command> {
        let Some(cmd) = command_of(&msg.text) else {
            return Ok(Command::Pass);
        };
        let address = ChatAddress {
            channel: msg.channel.clone(),
            platform_id: msg.chat_id.clone(),
        };
        if FILTERED_COMMANDS.contains(&cmd.as_str()) {
            tracing::debug!(chat = %address, command = cmd, "filtered command not passed to the agent");
            outcome.dropped = Some(DropReason::FilteredCommand);
            return Ok(Command::Stop);
        }
        if ADMIN_COMMANDS.contains(&cmd.as_str()) {
            let admin = match sender {
                Some(u) => access::has_admin_privilege(tx, u, agent)?,
                None => false,
            };
            if !admin {
                tracing::info!(chat = %address, sender = ?sender, command = cmd, "admin command refused");
                outcome.replies.push(DirectReply {
                    chat: address,
                    thread_id: msg.thread_id.clone(),
                    text: format!("Permission denied: {cmd} requires admin access."),
                });
                return Ok(Command::Stop);
            }
        }
        Ok(Command::Pass)
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

    /// The row id of the message in one session. Platform message ids are only unique
    /// within a chat (Telegram numbers every chat's messages from 1), and an agent-shared
    /// session takes several chats: the id names the chat, so their messages never pass for
    /// redeliveries of each other.
    fn row_id(msg: &Inbound, p: &Planned) -> String {
        row_id(
            &msg.channel,
            &msg.chat_id,
            msg.message_id.as_deref().unwrap_or_default(),
            &p.session.agent_group_id,
        )
    }

    /// The message as a row for one session.
    fn row(
        &self,
        msg: &Inbound,
        sender: Option<&UserId>,
        p: &Planned,
        attachments: Vec<AttachmentRef>,
    ) -> Result<Queued> {
        let attachments = if attachments.is_empty() {
            // Nothing was saved: the references say what came, not where it is.
            msg.attachments.iter().map(attachment_ref).collect()
        } else {
            attachments
        };
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
        Ok(Queued {
            trigger: p.trigger,
            channel_type: Some(msg.channel.to_string()),
            platform_id: Some(msg.chat_id.to_string()),
            thread_id: msg.thread_id.clone(),
            platform_message_id: msg.message_id.clone(),
            ..Queued::new(
                Self::row_id(msg, p),
                InKind::Chat,
                msg.timestamp.clone().unwrap_or(now),
                content,
            )
        })
    }

    fn queue(
        &self,
        tx: &Connection,
        p: &Planned,
        row: Queued,
        outcome: &mut RouteOutcome,
    ) -> Result<()> {
        if queue::push(tx, &p.session.id, &row)? {
            outcome.routed.push(Routed {
                session: p.session.clone(),
                message_id: row.id,
                trigger: p.trigger,
                queued: true,
            });
        } else {
            tracing::debug!(message = row.id, "redelivered message ignored");
            outcome.duplicates += 1;
        }
        Ok(())
    }

    /// Saves the attachment bytes into the session's inbox (the host's own directory,
    /// read-only to the agent). Rewriting them on a redelivery is harmless.
    fn save_attachments(&self, msg: &Inbound, p: &Planned) -> Result<Vec<AttachmentRef>> {
        let dir = self.sessions.prepare(&p.session)?;
        let folder = inbox_folder(&Self::row_id(msg, p));
        let mut refs = Vec::with_capacity(msg.attachments.len());
        for (n, a) in msg.attachments.iter().enumerate() {
            let mut r = attachment_ref(a);
            if a.data.len() > MAX_ATTACHMENT_BYTES {
                tracing::warn!(
                    name = a.name,
                    size = a.data.len(),
                    "attachment too large; only its name is passed on"
                );
            } else if !a.data.is_empty() {
                let name = FileName::parse(&a.name)
                    .or_else(|| FileName::parse(&format!("attachment-{}", n + 1)))
                    .ok_or_else(|| Error::invalid("no usable attachment name"))?;
                r.path = Some(dir.write_inbox_file(&folder, &name, &a.data)?);
            }
            refs.push(r);
        }
        Ok(refs)
    }
}

/// What came with a message, without where it is stored.
fn attachment_ref(a: &IncomingAttachment) -> AttachmentRef {
    AttachmentRef {
        name: a.name.clone(),
        kind: a.kind.clone(),
        mime_type: a.mime_type.clone(),
        size: (!a.data.is_empty()).then_some(a.data.len() as u64),
        path: None,
        url: a.url.clone(),
    }
}

/// The `messages_in` id of a platform message in one agent's session: the same for every
/// redelivery, so the session DB dedupes them.
fn row_id(
    channel: &ChannelName,
    chat: &PlatformId,
    message_id: &str,
    agent: &AgentGroupId,
) -> String {
    format!("{channel}:{chat}:{message_id}:{agent}")
}

#[cfg(test)]
mod tests;
