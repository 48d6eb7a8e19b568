//! Identifier newtypes. Each is validated once, where it enters the host (CLI argument,
//! plugin event, DB row), and then carried as a type, never compared as a bare string.

use std::fmt;

use rand::Rng;
use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Longest id or handle the host accepts from outside.
const MAX_ID_LEN: usize = 512;

macro_rules! string_id {
    ($(#[$meta:meta])* $name:ident, $what:literal, $validate:path) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Validates `s` as a
            #[doc = $what]
            pub fn parse(s: &str) -> Result<Self> {
                $validate(s).map_err(|why| Error::invalid(format!("invalid {} {:?}: {}", $what, s, why)))?;
                Ok(Self(s.to_string()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl std::str::FromStr for $name {
            type Err = Error;
            fn from_str(s: &str) -> Result<Self> {
                Self::parse(s)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::parse(&s).map_err(serde::de::Error::custom)
            }
        }

        impl ToSql for $name {
            fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
                Ok(ToSqlOutput::Borrowed(ValueRef::Text(self.0.as_bytes())))
            }
        }

        impl FromSql for $name {
            fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
                let s = value.as_str()?;
                Self::parse(s).map_err(|e| FromSqlError::Other(Box::new(e)))
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

/// Any printable id: not empty, no control characters or surrounding whitespace, bounded.
fn validate_plain(s: &str) -> std::result::Result<(), &'static str> {
    if s.is_empty() {
        return Err("it is empty");
    }
    if s.len() > MAX_ID_LEN {
        return Err("it is too long");
    }
    if s.chars().any(char::is_control) {
        return Err("it contains control characters");
    }
    if s.trim() != s {
        return Err("it has leading or trailing whitespace");
    }
    Ok(())
}

/// A channel name (a plugin instance name) is lower-case letters, digits, `-` and `_`, starting
/// with a letter, at most 32 characters. `agent` is reserved for agent-to-agent routing.
fn validate_channel_name(s: &str) -> std::result::Result<(), &'static str> {
    let mut chars = s.chars();
    match chars.next() {
        None => return Err("it is empty"),
        Some(c) if !c.is_ascii_lowercase() => return Err("it must start with a lower-case letter"),
        _ => {}
    }
    if s.len() > 32 {
        return Err("it is longer than 32 characters");
    }
    if !chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_') {
        return Err("only lower-case letters, digits, '-' and '_' are allowed");
    }
    if s == nanoclaw_schema::session::AGENT_CHANNEL {
        return Err("'agent' is reserved for agent-to-agent messages");
    }
    Ok(())
}

/// A user id is `<channel name>:<handle>` with a valid channel name and a non-empty handle.
fn validate_user_id(s: &str) -> std::result::Result<(), &'static str> {
    validate_plain(s)?;
    let (channel, handle) = s
        .split_once(':')
        .ok_or("expected <channel>:<handle>, e.g. telegram:123")?;
    validate_channel_name(channel)
        .map_err(|_| "the part before ':' is not a valid channel name")?;
    if handle.is_empty() {
        return Err("the handle after ':' is empty");
    }
    Ok(())
}

string_id!(
    /// A channel as ids name it: the `[plugins.<name>]` instance that connects it
    /// (`telegram`, `cli`, or `telegram-work` for a second Telegram bot). It prefixes every
    /// user and chat id (`telegram:123`) and routes webhooks (`/webhook/telegram`), so users
    /// of two instances of one platform never share an id. Session DBs call it
    /// `channel_type`.
    ChannelName, "channel name", validate_channel_name
);
string_id!(
    /// A chat's id exactly as its plugin names it (raw, without the channel prefix).
    PlatformId, "platform id", validate_plain
);
string_id!(
    /// A namespaced user id: `<channel name>:<platform handle>`, e.g. `telegram:6037840640`.
    UserId, "user id", validate_user_id
);
string_id!(
    /// An agent group (agent identity) id, `ag-…`.
    AgentGroupId, "agent group id", validate_plain
);
string_id!(
    /// A messaging group (chat) id, `mg-…`.
    MessagingGroupId, "messaging group id", validate_plain
);
string_id!(
    /// A wiring (chat ↔ agent) id, `mga-…`.
    WiringId, "wiring id", validate_plain
);
string_id!(
    /// A session id, `sess-…`.
    SessionId, "session id", validate_plain
);
string_id!(
    /// An approval request id, `appr-…`.
    ApprovalId, "approval id", validate_plain
);
string_id!(
    /// A request to wire a new group chat, `chat-…`.
    ChatRequestId, "chat request id", validate_plain
);
string_id!(
    /// An agent's request to change itself (packages, an MCP server), `areq-…`.
    AgentRequestId, "agent request id", validate_plain
);
string_id!(
    /// A scheduled task id, `task-…`.
    TaskId, "task id", validate_plain
);

impl UserId {
    /// Namespaces a platform handle: `telegram` + `123` → `telegram:123`.
    pub fn new(channel: &ChannelName, handle: &str) -> Result<Self> {
        Self::parse(&format!("{channel}:{handle}"))
    }

    /// The channel the id is namespaced with.
    pub fn channel(&self) -> ChannelName {
        let (channel, _) = self.0.split_once(':').expect("validated user id has a ':'");
        ChannelName(channel.to_string())
    }

    /// The platform handle, without the channel prefix.
    pub fn handle(&self) -> &str {
        self.0.split_once(':').map_or("", |(_, h)| h)
    }
}

/// A chat reference as operators write it: `<channel>:<platform id>`, e.g. `telegram:-1001234`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ChatAddress {
    pub channel: ChannelName,
    pub platform_id: PlatformId,
}

impl ChatAddress {
    pub fn parse(s: &str) -> Result<Self> {
        let (channel, platform) = s.split_once(':').ok_or_else(|| {
            Error::invalid(format!(
                "invalid chat {s:?}: expected <channel>:<platform id>, e.g. telegram:-1001234"
            ))
        })?;
        Ok(ChatAddress {
            channel: ChannelName::parse(channel)?,
            platform_id: PlatformId::parse(platform)?,
        })
    }
}

impl std::str::FromStr for ChatAddress {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}

impl fmt::Display for ChatAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.channel, self.platform_id)
    }
}

/// Generates an id `<prefix>-<epoch ms>-<6 random base36 chars>`.
pub(crate) fn generate(prefix: &str) -> String {
    const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut rng = rand::rng();
    let suffix: String = (0..6)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect();
    format!("{prefix}-{}-{suffix}", nanoclaw_schema::time::now_ms())
}

macro_rules! generated {
    ($($name:ident => $prefix:literal),+ $(,)?) => {
        $(impl $name {
            /// A fresh random id.
            pub fn generate() -> Self {
                Self(generate($prefix))
            }
        })+
    };
}

generated! {
    AgentGroupId => "ag",
    MessagingGroupId => "mg",
    WiringId => "mga",
    SessionId => "sess",
    ApprovalId => "appr",
    ChatRequestId => "chat",
    TaskId => "task",
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_types() {
        for ok in ["telegram", "cli", "whatsapp-cloud", "a1_b"] {
            ChannelName::parse(ok).unwrap();
        }
        for bad in [
            "",
            "Telegram",
            "1tg",
            "tele gram",
            "agent",
            "tg:x",
            &"a".repeat(33),
        ] {
            assert!(ChannelName::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn user_ids_are_namespaced() {
        let tg = ChannelName::parse("telegram").unwrap();
        let u = UserId::new(&tg, "6037840640").unwrap();
        assert_eq!(u.as_str(), "telegram:6037840640");
        assert_eq!(u.channel(), tg);
        assert_eq!(u.handle(), "6037840640");
        // A handle that itself has a colon keeps it (Teams ids look like 29:abc).
        let teams = UserId::new(&ChannelName::parse("teams").unwrap(), "29:abc").unwrap();
        assert_eq!(teams.handle(), "29:abc");
        for bad in [
            "",
            "telegram",
            "telegram:",
            ":123",
            "Tele:1",
            "telegram:a\nb",
        ] {
            assert!(UserId::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn chat_addresses() {
        let a = ChatAddress::parse("telegram:-1001234").unwrap();
        assert_eq!(a.channel.as_str(), "telegram");
        assert_eq!(a.platform_id.as_str(), "-1001234");
        assert_eq!(a.to_string(), "telegram:-1001234");
        assert!(ChatAddress::parse("telegram").is_err());
        assert!(ChatAddress::parse("telegram:").is_err());
    }

    #[test]
    fn generated_ids_have_prefix_and_differ() {
        let a = SessionId::generate();
        let b = SessionId::generate();
        assert!(a.as_str().starts_with("sess-"));
        assert_ne!(a, b);
    }
}
