//! Dropped messages: the audit of messages that reached no agent, one row per
//! (chat, sender, reason) with a count.

use rusqlite::{Connection, Row, params};
use serde::Serialize;

use crate::db::text_enum;
use crate::error::Result;
use crate::ids::{AgentGroupId, ChannelName, MessagingGroupId, PlatformId, UserId};

text_enum! {
    /// Why a message reached no agent.
    DropReason, "drop reason" {
        /// The chat is not wired to any agent.
        NoAgentWired = "no_agent_wired",
        /// Wired, but no wiring's engage rule matched (e.g. no mention in a group).
        NoAgentEngaged = "no_agent_engaged",
        /// The sender has no access and the chat's policy is strict.
        UnknownSenderStrict = "unknown_sender_strict",
        /// The wiring only accepts known senders and this one is not.
        SenderScope = "sender_scope",
        /// A sender approval is already holding the maximum number of messages.
        ApprovalQueueFull = "approval_queue_full",
        /// A new group chat's request already holds the maximum number of messages.
        ChatQueueFull = "chat_queue_full",
        /// The owner chose to ignore this group chat.
        ChatIgnored = "chat_ignored",
        /// A filtered slash command (e.g. /login) that never reaches an agent.
        FilteredCommand = "filtered_command",
    }
}

impl DropReason {
    /// What an operator can do about it.
    pub fn hint(self, chat: &str, sender: Option<&UserId>) -> String {
        let who = sender.map_or("<user id>".to_string(), |u| u.to_string());
        match self {
            DropReason::NoAgentWired => format!(
                "chat {chat} is not wired to an agent; wire it with `nanoclaw wire add {chat} <agent folder>`"
            ),
            DropReason::NoAgentEngaged => format!(
                "no wiring of {chat} engaged (a group chat may need a mention); see `nanoclaw wire list --chat {chat}`"
            ),
            DropReason::UnknownSenderStrict => format!(
                "{who} has no access and {chat} is strict; add them with `nanoclaw members add {who} <agent folder>` \
                 or let approvers decide with `nanoclaw chats policy {chat} request_approval`"
            ),
            DropReason::SenderScope => format!(
                "the wiring of {chat} only accepts known senders; add {who} with `nanoclaw members add {who} <agent folder>`"
            ),
            DropReason::ApprovalQueueFull => format!(
                "too many messages from {who} are waiting for approval; decide with `nanoclaw approvals list`"
            ),
            DropReason::ChatQueueFull => format!(
                "{chat} is new and waits for an owner to wire it; see `nanoclaw chats requests`"
            ),
            DropReason::ChatIgnored => format!(
                "{chat} was ignored by its owner; wire it with `nanoclaw wire add {chat} <agent folder>`"
            ),
            DropReason::FilteredCommand => {
                "this command is handled by the operator CLI, not by agents".to_string()
            }
        }
    }
}

/// One drop to record.
#[derive(Debug, Clone)]
pub struct Drop<'a> {
    pub channel_type: &'a ChannelName,
    pub platform_id: &'a PlatformId,
    pub user_id: Option<&'a UserId>,
    pub sender_name: Option<&'a str>,
    pub reason: DropReason,
    pub messaging_group_id: Option<&'a MessagingGroupId>,
    pub agent_group_id: Option<&'a AgentGroupId>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DroppedMessage {
    pub channel_type: String,
    pub platform_id: String,
    pub user_id: Option<String>,
    pub sender_name: Option<String>,
    pub reason: DropReason,
    pub messaging_group_id: Option<String>,
    pub agent_group_id: Option<String>,
    pub message_count: i64,
    pub first_seen: String,
    pub last_seen: String,
    /// What an operator can do about it.
    pub hint: String,
}

pub fn record(conn: &Connection, d: &Drop<'_>) -> Result<()> {
    let now = nanoclaw_schema::time::now();
    conn.prepare_cached(
        "INSERT INTO dropped_messages (channel_type, platform_id, user_id, sender_name, reason,
                                       messaging_group_id, agent_group_id, first_seen, last_seen)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8)
         ON CONFLICT (channel_type, platform_id, IFNULL(user_id, ''), reason) DO UPDATE SET
             message_count = message_count + 1,
             last_seen = excluded.last_seen,
             sender_name = IFNULL(excluded.sender_name, sender_name),
             messaging_group_id = IFNULL(excluded.messaging_group_id, messaging_group_id),
             agent_group_id = IFNULL(excluded.agent_group_id, agent_group_id)",
    )?
    .execute(params![
        d.channel_type,
        d.platform_id,
        d.user_id,
        d.sender_name,
        d.reason,
        d.messaging_group_id,
        d.agent_group_id,
        now
    ])?;
    Ok(())
}

fn from_row(r: &Row<'_>) -> rusqlite::Result<DroppedMessage> {
    Ok(DroppedMessage {
        channel_type: r.get(0)?,
        platform_id: r.get(1)?,
        user_id: r.get(2)?,
        sender_name: r.get(3)?,
        reason: r.get(4)?,
        messaging_group_id: r.get(5)?,
        agent_group_id: r.get(6)?,
        message_count: r.get(7)?,
        first_seen: r.get(8)?,
        last_seen: r.get(9)?,
        hint: String::new(),
    })
}

/// The most recent drops, newest first.
pub fn list(conn: &Connection, limit: u32) -> Result<Vec<DroppedMessage>> {
    let mut stmt = conn.prepare(
        "SELECT channel_type, platform_id, user_id, sender_name, reason, messaging_group_id,
                agent_group_id, message_count, first_seen, last_seen
         FROM dropped_messages ORDER BY last_seen DESC, id DESC LIMIT ?1",
    )?;
    let mut rows = stmt
        .query_map([limit], from_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    for d in &mut rows {
        let sender = d.user_id.as_deref().and_then(|u| UserId::parse(u).ok());
        d.hint = d.reason.hint(
            &format!("{}:{}", d.channel_type, d.platform_id),
            sender.as_ref(),
        );
    }
    Ok(rows)
}

/// Forgets every recorded drop.
pub fn clear(conn: &Connection) -> Result<usize> {
    Ok(conn.execute("DELETE FROM dropped_messages", [])?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::db;

    /// The commands a hint suggests exist, with those arguments (placeholders filled in).
    #[test]
    fn hints_name_real_commands() {
        use clap::Parser as _;
        let user = UserId::parse("telegram:7").unwrap();
        for reason in DropReason::ALL {
            for sender in [Some(&user), None] {
                let hint = reason.hint("telegram:-100123", sender);
                let commands: Vec<&str> = hint.split('`').skip(1).step_by(2).collect();
                for command in commands {
                    let filled = command
                        .replace("<agent folder>", "helper")
                        .replace("<user id>", "telegram:8");
                    let args: Vec<&str> = filled.split_whitespace().collect();
                    assert_eq!(args[0], "nanoclaw", "{reason}: {command}");
                    if let Err(e) = crate::cli::Cli::try_parse_from(&args) {
                        panic!("{reason}: `{command}` is not a nanoclaw command: {e}");
                    }
                }
            }
        }
    }

    #[test]
    fn repeated_drops_are_counted_per_sender_and_reason() {
        let db = db();
        let ch = ChannelName::parse("telegram").unwrap();
        let chat = PlatformId::parse("-1").unwrap();
        let alice = UserId::parse("telegram:1").unwrap();
        let bob = UserId::parse("telegram:2").unwrap();
        fn drop<'a>(
            ch: &'a ChannelName,
            chat: &'a PlatformId,
            user: &'a UserId,
            reason: DropReason,
        ) -> Drop<'a> {
            Drop {
                channel_type: ch,
                platform_id: chat,
                user_id: Some(user),
                sender_name: None,
                reason,
                messaging_group_id: None,
                agent_group_id: None,
            }
        }
        for _ in 0..3 {
            db.write(|c| {
                record(
                    c,
                    &drop(&ch, &chat, &alice, DropReason::UnknownSenderStrict),
                )
            })
            .unwrap();
        }
        db.write(|c| record(c, &drop(&ch, &chat, &bob, DropReason::UnknownSenderStrict)))
            .unwrap();
        db.write(|c| record(c, &drop(&ch, &chat, &alice, DropReason::NoAgentEngaged)))
            .unwrap();
        let rows = db.read(|c| list(c, 50)).unwrap();
        assert_eq!(rows.len(), 3);
        let alice_strict = rows
            .iter()
            .find(|r| {
                r.user_id.as_deref() == Some("telegram:1")
                    && r.reason == DropReason::UnknownSenderStrict
            })
            .unwrap();
        assert_eq!(alice_strict.message_count, 3);
    }
}
