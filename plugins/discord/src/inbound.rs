//! Gateway dispatch payloads (`MESSAGE_CREATE`, `INTERACTION_CREATE`) as the host's events.

use nanoclaw_plugin_api::kit::prelude::*;
use serde::Deserialize;
use serde_json::json;

use crate::api::User;

/// Discord's epoch (2015-01-01T00:00:00Z) in ms since the Unix epoch: snowflakes count
/// from it.
const DISCORD_EPOCH_MS: i64 = 1_420_070_400_000;
/// Message flag: a voice message.
const IS_VOICE_MESSAGE: u64 = 1 << 13;
/// Message types that are people writing: default and reply.
const TYPE_DEFAULT: u8 = 0;
const TYPE_REPLY: u8 = 19;
/// Interaction types: a message component (a button click).
const INTERACTION_MESSAGE_COMPONENT: u8 = 3;
/// Component type: a button.
const COMPONENT_BUTTON: u8 = 2;

/// Who the bot is, from `GET /users/@me` (and the gateway's `READY`).
#[derive(Debug, Clone, Default)]
pub(crate) struct BotIdentity {
    pub id: String,
    pub username: String,
}

/// A guild member (only what is used).
#[derive(Debug, Deserialize)]
pub(crate) struct Member {
    #[serde(default)]
    pub nick: Option<String>,
    #[serde(default)]
    pub user: Option<User>,
}

/// An attachment of a message.
#[derive(Debug, Deserialize)]
pub(crate) struct DiscordAttachment {
    #[serde(default)]
    pub filename: String,
    #[serde(default)]
    pub content_type: Option<String>,
    #[serde(default)]
    pub size: u64,
    #[serde(default)]
    pub url: Option<String>,
}

/// The message a reply points at (`referenced_message`).
#[derive(Debug, Deserialize)]
pub(crate) struct Referenced {
    pub id: String,
    #[serde(default)]
    pub content: String,
    pub author: User,
}

/// A `MESSAGE_CREATE` payload (a message object with `guild_id` and `member`).
#[derive(Debug, Deserialize)]
pub(crate) struct DiscordMessage {
    pub id: String,
    pub channel_id: String,
    #[serde(default)]
    pub guild_id: Option<String>,
    pub author: User,
    #[serde(default)]
    pub member: Option<Member>,
    #[serde(default)]
    pub content: String,
    #[serde(default, rename = "type")]
    pub kind: u8,
    #[serde(default)]
    pub flags: u64,
    #[serde(default)]
    pub mentions: Vec<User>,
    #[serde(default)]
    pub attachments: Vec<DiscordAttachment>,
    #[serde(default)]
    pub referenced_message: Option<Box<Referenced>>,
    /// Set on `MESSAGE_UPDATE` when the author changed the message (not for an embed being
    /// filled in).
    #[serde(default)]
    pub edited_timestamp: Option<String>,
}

fn display_name(user: &User, member: Option<&Member>) -> String {
    member
        .and_then(|m| m.nick.clone())
        .or_else(|| user.global_name.clone())
        .filter(|n| !n.trim().is_empty())
        .unwrap_or_else(|| user.username.clone())
}

fn sender(user: &User, member: Option<&Member>) -> Sender {
    let name = display_name(user, member);
    Sender {
        handle: user.id.as_str().into(),
        display_name: (!name.is_empty()).then(|| RString::from(name)).into(),
        is_bot: user.bot,
    }
}

/// When a snowflake was made, in ms since the Unix epoch (0 when it is not one).
pub(crate) fn snowflake_ms(id: &str) -> i64 {
    id.parse::<u64>()
        .ok()
        .and_then(|n| i64::try_from(n >> 22).ok())
        .map_or(0, |ms| ms + DISCORD_EPOCH_MS)
}

impl DiscordMessage {
    /// True for messages the host should see: people writing (default and reply messages)
    /// text or files, not the bot itself.
    pub(crate) fn is_for_host(&self, bot: &BotIdentity) -> bool {
        matches!(self.kind, TYPE_DEFAULT | TYPE_REPLY)
            && self.author.id != bot.id
            // Stickers and embeds alone carry nothing an agent can read.
            && !(self.content.trim().is_empty() && self.attachments.is_empty())
    }

    /// An edit as the host's event: a message of its own, `<id>:edit:<edited timestamp>` (so
    /// each edit is handed over once, and a redelivered one is deduped), with the original's
    /// id in `extra_json.edit_of`. `None` when nothing was edited.
    pub(crate) fn into_edit(self, bot: &BotIdentity) -> Option<InboundEvent> {
        let edited = self.edited_timestamp.clone()?;
        let original = self.id.clone();
        let mut event = self.into_inbound(bot);
        event.message_id = format!("{original}:edit:{edited}").into();
        let mut extra = match serde_json::from_str::<serde_json::Value>(&event.extra_json) {
            Ok(serde_json::Value::Object(map)) => map,
            _ => serde_json::Map::new(),
        };
        extra.insert("edit_of".into(), json!(original));
        event.extra_json = serde_json::Value::Object(extra).to_string().into();
        Some(event)
    }

    /// The host's event: raw ids, a DM as a mention, mentions of the bot and replies to it
    /// marked, `<@bot>` shown as `@<bot name>`.
    pub(crate) fn into_inbound(self, bot: &BotIdentity) -> InboundEvent {
        let is_group = self.guild_id.is_some();
        let mentions_bot = self.mentions.iter().any(|u| u.id == bot.id);
        let replies_to_bot = self
            .referenced_message
            .as_ref()
            .is_some_and(|r| r.author.id == bot.id);
        let mut text = self.content.clone();
        if !bot.id.is_empty() {
            let name = format!("@{}", bot.username);
            text = text
                .replace(&format!("<@{}>", bot.id), &name)
                .replace(&format!("<@!{}>", bot.id), &name);
        }
        let voice = self.flags & IS_VOICE_MESSAGE != 0;
        let attachments: Vec<Attachment> = self
            .attachments
            .iter()
            .map(|a| {
                let mime = a.content_type.clone().unwrap_or_default();
                let kind = if voice {
                    "voice"
                } else if mime.starts_with("image/") {
                    "image"
                } else if mime.starts_with("audio/") {
                    "audio"
                } else if mime.starts_with("video/") {
                    "video"
                } else {
                    "file"
                };
                Attachment {
                    kind: kind.into(),
                    name: a.filename.as_str().into(),
                    mime_type: mime.into(),
                    size: a.size,
                    data: RVec::new(),
                    url: a.url.clone().map(RString::from).into(),
                }
            })
            .collect();
        let reply_to = self.referenced_message.as_ref().map(|r| QuotedMessage {
            message_id: RSome(r.id.as_str().into()),
            sender: RSome(display_name(&r.author, None).into()),
            text: r.content.as_str().into(),
        });
        let mut extra = serde_json::Map::new();
        if let Some(guild) = &self.guild_id {
            extra.insert("guild_id".into(), json!(guild));
        }
        if replies_to_bot {
            extra.insert("reply_to_bot".into(), json!(true));
        }
        InboundEvent {
            chat_id: self.channel_id.as_str().into(),
            chat_name: RNone,
            thread_id: RNone,
            message_id: self.id.as_str().into(),
            sender: RSome(sender(&self.author, self.member.as_ref())),
            is_group,
            mentioned: !is_group || mentions_bot || replies_to_bot,
            text: text.into(),
            attachments: attachments.into(),
            reply_to: reply_to.into(),
            timestamp_ms: snowflake_ms(&self.id),
            extra_json: if extra.is_empty() {
                RString::new()
            } else {
                serde_json::Value::Object(extra).to_string().into()
            },
        }
    }
}

/// The message a component belongs to.
#[derive(Debug, Deserialize)]
pub(crate) struct InteractionMessage {
    pub id: String,
}

/// `data` of a component interaction.
#[derive(Debug, Deserialize)]
pub(crate) struct ComponentData {
    #[serde(default)]
    pub custom_id: String,
    #[serde(default)]
    pub component_type: u8,
}

/// An `INTERACTION_CREATE` payload.
#[derive(Debug, Deserialize)]
pub(crate) struct Interaction {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: u8,
    pub token: String,
    #[serde(default)]
    pub channel_id: Option<String>,
    #[serde(default)]
    pub guild_id: Option<String>,
    #[serde(default)]
    pub member: Option<Member>,
    #[serde(default)]
    pub user: Option<User>,
    #[serde(default)]
    pub message: Option<InteractionMessage>,
    #[serde(default)]
    pub data: Option<ComponentData>,
}

impl Interaction {
    /// A click on a button: the host's action, with the clicker (`member.user` in a guild,
    /// `user` in a DM). `None` for other interactions.
    pub(crate) fn to_action(&self) -> Option<ActionEvent> {
        if self.kind != INTERACTION_MESSAGE_COMPONENT {
            return None;
        }
        let data = self.data.as_ref()?;
        if data.component_type != COMPONENT_BUTTON || data.custom_id.is_empty() {
            return None;
        }
        let member = self.member.as_ref();
        let user = member
            .and_then(|m| m.user.as_ref())
            .or(self.user.as_ref())?;
        let extra = json!({
            "interaction_id": self.id,
            "guild_id": self.guild_id,
        });
        Some(ActionEvent {
            chat_id: self.channel_id.clone()?.into(),
            thread_id: RNone,
            message_id: self.message.as_ref()?.id.as_str().into(),
            clicker: sender(user, member),
            action_id: data.custom_id.as_str().into(),
            extra_json: extra.to_string().into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snowflakes_carry_time() {
        // Discord's documented example: 175928847299117063 → 2016-04-30 11:18:25.796 UTC.
        assert_eq!(snowflake_ms("175928847299117063"), 1_462_015_105_796);
        assert_eq!(snowflake_ms("x"), 0);
    }
}
