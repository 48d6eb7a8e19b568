//! The per-session contract between the host and the agent-runner: where files are
//! ([`layout`]), the environment ([`env`]), the two databases' schemas, seq parity, the JSON of
//! each row kind ([`content`]), and the bounds on what an agent writes ([`limits`]).
//!
//! `inbound.db` is written only by the host and mounted read-only into the container;
//! `outbound.db` is written only by the container. Both use WAL journaling, so each side reads
//! the other's commits through the shared page cache of the bind mount; `PRAGMA user_version`
//! holds [`INBOUND_SCHEMA_VERSION`] or [`OUTBOUND_SCHEMA_VERSION`]; each file keeps its own.

pub mod content;
pub mod env;
pub mod layout;
pub mod limits;
pub mod model_proxy;
pub mod selfmod;

pub use layout::{
    CONTAINER_AGENT_DIR, CONTAINER_GLOBAL_DIR, CONTAINER_INBOUND_DIR, CONTAINER_WORKSPACE,
    HEARTBEAT_FILE, INBOUND_DB, INBOX_DIR, OUTBOUND_DB, OUTBOX_DIR,
};

/// Schema of `inbound.db` (idempotent: `CREATE ... IF NOT EXISTS`).
pub const INBOUND_SCHEMA: &str = include_str!("../session/inbound.sql");
/// Schema of `outbound.db` (idempotent: `CREATE ... IF NOT EXISTS`).
pub const OUTBOUND_SCHEMA: &str = include_str!("../session/outbound.sql");
/// Version of the `inbound.db` schema, stored in its `PRAGMA user_version`. The host brings an
/// older one up to it with [`INBOUND_UPGRADES`] before the session's container starts.
pub const INBOUND_SCHEMA_VERSION: i64 = 3;
/// Version of the `outbound.db` schema, stored in its `PRAGMA user_version`.
pub const OUTBOUND_SCHEMA_VERSION: i64 = 2;

/// Each session DB: its file name, schema and version.
pub const SESSION_DBS: [(&str, &str, i64); 2] = [
    (INBOUND_DB, INBOUND_SCHEMA, INBOUND_SCHEMA_VERSION),
    (OUTBOUND_DB, OUTBOUND_SCHEMA, OUTBOUND_SCHEMA_VERSION),
];

/// The steps that bring an older `inbound.db` up to date: `(version reached, SQL)`, in order.
pub const INBOUND_UPGRADES: &[(i64, &str)] = &[(
    3,
    "ALTER TABLE scheduled_tasks ADD COLUMN destination TEXT;",
)];

/// `channel_type` of rows addressed to or from another agent; `platform_id` is then the
/// agent group id.
pub const AGENT_CHANNEL: &str = "agent";

/// SQLite busy timeout of the agent-runner, in milliseconds. The host waits far less on a
/// session DB (a container can hold locks on purpose) and retries later instead.
pub const BUSY_TIMEOUT_MS: u64 = 5_000;

/// The next host (even) seq, given the largest seq in `messages_in`.
pub fn next_host_seq(max_in: Option<i64>) -> i64 {
    match max_in {
        Some(m) if m >= 2 => m + 2 - m.rem_euclid(2),
        _ => 2,
    }
}

/// The next container (odd) seq: the first odd number above every seq in both databases, so
/// seq orders the whole conversation.
pub fn next_container_seq(max_in: Option<i64>, max_out: Option<i64>) -> i64 {
    let m = max_in.unwrap_or(0).max(max_out.unwrap_or(0)).max(0);
    if m % 2 == 0 { m + 1 } else { m + 2 }
}

macro_rules! str_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident = $s:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $s),+ }
            }
        }

        impl std::str::FromStr for $name {
            type Err = UnknownValue;
            fn from_str(s: &str) -> Result<Self, UnknownValue> {
                match s {
                    $($s => Ok($name::$variant),)+
                    _ => Err(UnknownValue {
                        what: stringify!($name),
                        value: s.to_string(),
                        expected: &[$($s),+],
                    }),
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

/// A stored string that is not one of the values its column allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownValue {
    pub what: &'static str,
    pub value: String,
    pub expected: &'static [&'static str],
}

impl std::fmt::Display for UnknownValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "unknown {} {:?} (expected one of: {})",
            self.what,
            self.value,
            self.expected.join(", ")
        )
    }
}

impl std::error::Error for UnknownValue {}

str_enum! {
    /// `messages_in.kind`.
    InKind { Chat = "chat", Task = "task", System = "system" }
}

str_enum! {
    /// `messages_in.status`.
    InStatus { Pending = "pending", Completed = "completed", Failed = "failed" }
}

str_enum! {
    /// `messages_out.kind`.
    OutKind { Chat = "chat", System = "system" }
}

str_enum! {
    /// `processing_ack.status`.
    AckStatus { Processing = "processing", Completed = "completed", Failed = "failed" }
}

str_enum! {
    /// `delivered.status`.
    DeliveryStatus { Delivered = "delivered", Failed = "failed", Rejected = "rejected" }
}

str_enum! {
    /// `destinations.type` (and `agent_destinations.target_type`).
    DestinationType { Channel = "channel", Agent = "agent" }
}

/// True if `name` is safe to use as one path component inside inbox/outbox: not empty, not
/// `.` or `..`, no separators, NUL or control characters, and at most 255 bytes.
pub fn is_safe_file_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name != "."
        && name != ".."
        && !name.contains(['/', '\\'])
        && !name.chars().any(char::is_control)
}

/// True if `id` may name an outbound message (and so its `outbox/<id>/` directory): 1 to
/// [`limits::MAX_MESSAGE_ID_BYTES`] ASCII letters, digits, `-`, `_` or `.`, not starting with
/// a dot. The agent-runner's ids (`msg-<ms>-<seq>`) always are.
pub fn is_valid_message_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= limits::MAX_MESSAGE_ID_BYTES
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_seq_is_even_and_increasing() {
        assert_eq!(next_host_seq(None), 2);
        assert_eq!(next_host_seq(Some(2)), 4);
        assert_eq!(next_host_seq(Some(7)), 8);
    }

    #[test]
    fn container_seq_is_odd_and_above_both() {
        assert_eq!(next_container_seq(None, None), 1);
        assert_eq!(next_container_seq(Some(4), None), 5);
        assert_eq!(next_container_seq(Some(4), Some(7)), 9);
        assert_eq!(next_container_seq(Some(10), Some(7)), 11);
    }

    #[test]
    fn enums_round_trip_and_reject_unknown() {
        for k in InKind::ALL {
            assert_eq!(k.as_str().parse::<InKind>().unwrap(), *k);
        }
        let err = "chatty".parse::<InKind>().unwrap_err();
        assert!(err.to_string().contains("chat, task, system"));
    }

    #[test]
    fn file_names() {
        assert!(is_safe_file_name("photo.jpg"));
        assert!(is_safe_file_name(".hidden"));
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "a\\b",
            "a\0b",
            "a\nb",
            &"x".repeat(256),
        ] {
            assert!(!is_safe_file_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn message_ids() {
        for ok in ["msg-1764-3", "a", "A.b_c-9"] {
            assert!(is_valid_message_id(ok), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            "../../etc",
            "/etc/passwd",
            "a/b",
            ".x",
            "a b",
            "é",
            &"x".repeat(65),
        ] {
            assert!(!is_valid_message_id(bad), "{bad:?}");
        }
    }
}
