//! Pairing: an operator proves which chat is theirs by sending the bot a one-time code that
//! `nanoclaw pair <channel>` printed. The first user ever to pair becomes the owner.
//!
//! Codes are 8 characters from a 31-symbol alphabet without look-alikes (about 8.5e11
//! possibilities), expire after minutes, at most [`MAX_PENDING`] wait per channel, and only a
//! hash is stored. While codes wait, every code-shaped message is a guess: it never reaches
//! an agent (a right or near-miss code is the operator's secret), and wrong guesses are
//! counted per sender: after [`MAX_WRONG_PER_SENDER`] in [`GUESS_WINDOW`] that sender's
//! guesses are no longer checked. A stranger guessing locks out only themselves; the
//! operator's codes stay valid.

use std::time::Duration;

use rand::Rng;
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use sha2::{Digest, Sha256};

use nanoclaw_schema::time;

use crate::error::{Error, Result};
use crate::ids::{ChannelName, UserId};
use crate::router::Inbound;
use crate::store::messaging_groups::{
    self, MessagingGroup, NewMessagingGroup, UnknownSenderPolicy,
};
use crate::store::roles::{self, Role, Scope};
use crate::store::users;

/// Symbols of a code: no 0/O, 1/I/L.
pub const CODE_ALPHABET: &[u8] = b"ABCDEFGHJKMNPQRSTUVWXYZ23456789";
pub const CODE_LEN: usize = 8;
pub const DEFAULT_TTL: Duration = Duration::from_secs(10 * 60);
/// Codes that may wait at once per channel.
pub const MAX_PENDING: i64 = 3;
/// Wrong codes one sender may send within [`GUESS_WINDOW`].
pub const MAX_WRONG_PER_SENDER: i64 = 5;
/// How long wrong guesses count against a sender.
pub const GUESS_WINDOW: Duration = Duration::from_secs(60 * 60);

/// A freshly made code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NewCode {
    /// As shown to the operator: `ABCD-EFGH`.
    pub code: String,
    pub expires_at: String,
}

/// The state of one code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Pairing {
    pub status: String,
    pub channel_type: String,
    pub user_id: Option<String>,
    pub platform_id: Option<String>,
    pub is_group: Option<bool>,
    pub made_owner: Option<bool>,
    pub failed_attempts: i64,
    pub expires_at: String,
}

fn hash(normalized: &str) -> String {
    let digest = Sha256::digest(normalized.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// The code a text carries, normalized, if it looks like one: an optional leading
/// `@botname`, then the 8 symbols with an optional dash or space in the middle, any case.
pub fn normalize(text: &str) -> Option<String> {
    let mut t = text.trim();
    if t.starts_with('@') {
        t = t
            .split_once(char::is_whitespace)
            .map_or("", |(_, rest)| rest)
            .trim();
    }
    let compact: String = t
        .chars()
        .filter(|c| *c != '-' && *c != ' ')
        .collect::<String>()
        .to_ascii_uppercase();
    (compact.len() == CODE_LEN && compact.bytes().all(|b| CODE_ALPHABET.contains(&b)))
        .then_some(compact)
}

fn expire_stale(conn: &Connection) -> Result<()> {
    conn.execute(
        "UPDATE pairing_codes SET status = 'expired' WHERE status = 'pending' AND expires_at <= ?1",
        [time::now()],
    )?;
    Ok(())
}

/// Makes a new code for `channel`, valid for `ttl`.
pub fn create(conn: &Connection, channel: &ChannelName, ttl: Duration) -> Result<NewCode> {
    expire_stale(conn)?;
    let pending: i64 = conn.query_row(
        "SELECT COUNT(*) FROM pairing_codes WHERE channel_type = ?1 AND status = 'pending'",
        [channel],
        |r| r.get(0),
    )?;
    if pending >= MAX_PENDING {
        return Err(Error::Conflict(format!(
            "{pending} pairing codes for {channel} are already waiting; use one of them, wait for them to \
             expire, or revoke them with `nanoclaw pair {channel} --revoke`"
        )));
    }
    let mut rng = rand::rng();
    let code: String = (0..CODE_LEN)
        .map(|_| CODE_ALPHABET[rng.random_range(0..CODE_ALPHABET.len())] as char)
        .collect();
    let expires = jiff::Timestamp::now()
        .checked_add(
            jiff::SignedDuration::try_from(ttl).map_err(|e| Error::invalid(e.to_string()))?,
        )
        .map_err(|e| Error::invalid(e.to_string()))?;
    let expires_at = time::format(expires);
    conn.execute(
        "INSERT INTO pairing_codes (code_hash, channel_type, created_at, expires_at) VALUES (?1, ?2, ?3, ?4)",
        params![hash(&code), channel, time::now(), expires_at],
    )?;
    Ok(NewCode {
        code: format!("{}-{}", &code[..4], &code[4..]),
        expires_at,
    })
}

/// The state of a code (as printed, or normalized).
pub fn status(conn: &Connection, code: &str) -> Result<Option<Pairing>> {
    expire_stale(conn)?;
    let Some(normalized) = normalize(code) else {
        return Ok(None);
    };
    Ok(conn
        .query_row(
            "SELECT status, channel_type, user_id, platform_id, is_group, made_owner, failed_attempts, expires_at
             FROM pairing_codes WHERE code_hash = ?1",
            [hash(&normalized)],
            |r| {
                Ok(Pairing {
                    status: r.get(0)?,
                    channel_type: r.get(1)?,
                    user_id: r.get(2)?,
                    platform_id: r.get(3)?,
                    is_group: r.get(4)?,
                    made_owner: r.get(5)?,
                    failed_attempts: r.get(6)?,
                    expires_at: r.get(7)?,
                })
            },
        )
        .optional()?)
}

/// Revokes every pending code of a channel.
pub fn revoke_pending(conn: &Connection, channel: &ChannelName) -> Result<usize> {
    Ok(conn.execute(
        "UPDATE pairing_codes SET status = 'revoked' WHERE channel_type = ?1 AND status = 'pending'",
        [channel],
    )?)
}

/// What the pairing check made of an inbound message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Intercept {
    /// Not a pairing code (or no code is waiting): route it normally.
    NotACode,
    /// A valid code: the sender is paired; the message goes no further.
    Paired {
        user: UserId,
        chat: MessagingGroup,
        made_owner: bool,
    },
    /// A wrong code while codes are waiting: counted against the sender, not routed.
    /// `locked_out`: the sender has used up their guesses for now (this one was not checked).
    Wrong { locked_out: bool },
}

/// Checks an inbound message against the pending codes of its channel. Run it in the same
/// transaction as the rest of the message's handling.
pub fn intercept(conn: &Connection, msg: &Inbound) -> Result<Intercept> {
    let Some(code) = normalize(&msg.text) else {
        return Ok(Intercept::NotACode);
    };
    let Some(sender) = &msg.sender else {
        return Ok(Intercept::NotACode);
    };
    expire_stale(conn)?;
    let pending: i64 = conn.query_row(
        "SELECT COUNT(*) FROM pairing_codes WHERE channel_type = ?1 AND status = 'pending'",
        [&msg.channel],
        |r| r.get(0),
    )?;
    if pending == 0 {
        return Ok(Intercept::NotACode);
    }
    let user = UserId::new(&msg.channel, &sender.handle)?;
    if wrong_guesses(conn, &user)? >= MAX_WRONG_PER_SENDER {
        tracing::warn!(user = %user, "pairing guess from a sender with no guesses left; not checked");
        return Ok(Intercept::Wrong { locked_out: true });
    }
    let hit: bool = conn.query_row(
        "SELECT EXISTS(SELECT 1 FROM pairing_codes WHERE code_hash = ?1 AND channel_type = ?2 AND status = 'pending')",
        params![hash(&code), msg.channel],
        |r| r.get(0),
    )?;
    if !hit {
        let n = count_wrong_guess(conn, &user)?;
        // Kept per code too, as a record of how much guessing went on while it waited.
        conn.execute(
            "UPDATE pairing_codes SET failed_attempts = failed_attempts + 1
             WHERE channel_type = ?1 AND status = 'pending'",
            [&msg.channel],
        )?;
        tracing::warn!(user = %user, wrong = n, "wrong pairing code");
        return Ok(Intercept::Wrong {
            locked_out: n >= MAX_WRONG_PER_SENDER,
        });
    }
    conn.execute("DELETE FROM pairing_attempts WHERE user_id = ?1", [&user])?;
    users::upsert(conn, &user, sender.name.as_deref())?;
    let name = msg
        .chat_name
        .clone()
        .or_else(|| (!msg.is_group).then(|| sender.name.clone()).flatten());
    let (chat, _) = messaging_groups::get_or_create(
        conn,
        &NewMessagingGroup {
            channel_type: msg.channel.clone(),
            platform_id: msg.chat_id.clone(),
            name,
            is_group: msg.is_group,
            unknown_sender_policy: UnknownSenderPolicy::Strict,
        },
    )?;
    // First pair wins: later pairings never take ownership.
    let made_owner = !roles::has_any_owner(conn)?;
    if made_owner {
        roles::grant(conn, &user, Role::Owner, &Scope::Global, None)?;
    }
    conn.execute(
        "UPDATE pairing_codes SET status = 'consumed', user_id = ?2, platform_id = ?3, is_group = ?4,
         made_owner = ?5, consumed_at = ?6 WHERE code_hash = ?1",
        params![hash(&code), user, msg.chat_id, msg.is_group, made_owner, time::now()],
    )?;
    tracing::info!(user = %user, chat = %chat.address(), made_owner, "paired");
    Ok(Intercept::Paired {
        user,
        chat,
        made_owner,
    })
}

/// Wrong guesses `user` made in the current window.
fn wrong_guesses(conn: &Connection, user: &UserId) -> Result<i64> {
    Ok(conn
        .query_row(
            "SELECT failures FROM pairing_attempts WHERE user_id = ?1 AND window_started_at > ?2",
            params![user, window_start()],
            |r| r.get(0),
        )
        .optional()?
        .unwrap_or(0))
}

/// Counts a wrong guess of `user` (a window older than [`GUESS_WINDOW`] starts over).
fn count_wrong_guess(conn: &Connection, user: &UserId) -> Result<i64> {
    conn.execute(
        "INSERT INTO pairing_attempts (user_id, failures, window_started_at) VALUES (?1, 1, ?2)
         ON CONFLICT (user_id) DO UPDATE SET
           failures = CASE WHEN window_started_at > ?3 THEN failures + 1 ELSE 1 END,
           window_started_at = CASE WHEN window_started_at > ?3 THEN window_started_at ELSE ?2 END",
        params![user, time::now(), window_start()],
    )?;
    wrong_guesses(conn, user)
}

fn window_start() -> String {
    let now = jiff::Timestamp::now();
    time::format(
        now.checked_sub(jiff::SignedDuration::try_from(GUESS_WINDOW).unwrap_or_default())
            .unwrap_or(now),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::Db;
    use crate::router::Sender;

    fn tg() -> ChannelName {
        ChannelName::parse("telegram").unwrap()
    }

    fn msg(from: &str, text: &str) -> Inbound {
        Inbound {
            sender: Some(Sender {
                handle: from.into(),
                name: Some(format!("User {from}")),
                is_bot: false,
            }),
            ..Inbound::text(&tg(), from, None, text).unwrap()
        }
    }

    #[test]
    fn codes_are_long_unambiguous_and_normalized() {
        let db = Db::open_in_memory().unwrap();
        let code = db.write(|c| create(c, &tg(), DEFAULT_TTL)).unwrap();
        assert_eq!(code.code.len(), 9);
        assert_eq!(&code.code[4..5], "-");
        let raw = code.code.replace('-', "");
        assert!(raw.bytes().all(|b| CODE_ALPHABET.contains(&b)));
        assert_eq!(normalize(&code.code.to_lowercase()), Some(raw.clone()));
        assert_eq!(
            normalize(&format!("@my_bot  {}", code.code)),
            Some(raw.clone())
        );
        assert_eq!(
            normalize(&format!("{} {}", &raw[..4], &raw[4..])),
            Some(raw)
        );
        for not_a_code in [
            "hello there",
            "1234",
            "ABCD-EFG0",
            "my code is ABCDEFGH",
            "ABCDEFGHJ",
        ] {
            assert_eq!(normalize(not_a_code), None, "{not_a_code}");
        }
        let stored: String = db
            .read(|c| Ok(c.query_row("SELECT code_hash FROM pairing_codes", [], |r| r.get(0))?))
            .unwrap();
        assert!(
            !stored.contains(&code.code.replace('-', "")),
            "only a hash is stored"
        );
    }

    #[test]
    fn first_pair_wins_ownership() {
        let db = Db::open_in_memory().unwrap();
        let first = db.write(|c| create(c, &tg(), DEFAULT_TTL)).unwrap();
        let second = db.write(|c| create(c, &tg(), DEFAULT_TTL)).unwrap();
        let got = db.write(|c| intercept(c, &msg("42", &first.code))).unwrap();
        let Intercept::Paired {
            user,
            chat,
            made_owner,
        } = got
        else {
            panic!("{got:?}")
        };
        assert_eq!(user.as_str(), "telegram:42");
        assert_eq!(chat.platform_id.as_str(), "42");
        assert_eq!(chat.unknown_sender_policy, UnknownSenderPolicy::Strict);
        assert!(made_owner);
        assert!(db.read(|c| roles::is_owner(c, &user)).unwrap());
        let p = db.read(|c| status(c, &first.code)).unwrap().unwrap();
        assert_eq!(p.status, "consumed");
        assert_eq!(p.user_id.as_deref(), Some("telegram:42"));

        let got = db
            .write(|c| intercept(c, &msg("77", &second.code)))
            .unwrap();
        let Intercept::Paired {
            user, made_owner, ..
        } = got
        else {
            panic!("{got:?}")
        };
        assert!(!made_owner, "a second pairer is not made owner");
        assert!(!db.read(|c| roles::is_owner(c, &user)).unwrap());
        // A used code does not pair again.
        assert_eq!(
            db.write(|c| intercept(c, &msg("99", &first.code))).unwrap(),
            Intercept::NotACode
        );
    }

    /// Finding 8: a stranger's wrong guesses lock out only the stranger; the operator's
    /// code keeps working.
    #[test]
    fn wrong_codes_lock_out_the_guesser_only() {
        let db = Db::open_in_memory().unwrap();
        let code = db.write(|c| create(c, &tg(), DEFAULT_TTL)).unwrap();
        for n in 1..MAX_WRONG_PER_SENDER {
            let got = db.write(|c| intercept(c, &msg("66", "ZZZZ-ZZZZ"))).unwrap();
            assert_eq!(got, Intercept::Wrong { locked_out: false }, "guess {n}");
        }
        assert_eq!(
            db.write(|c| intercept(c, &msg("66", "ZZZZ-ZZZZ"))).unwrap(),
            Intercept::Wrong { locked_out: true }
        );
        // Even the right code is no longer checked for the guesser...
        assert_eq!(
            db.write(|c| intercept(c, &msg("66", &code.code))).unwrap(),
            Intercept::Wrong { locked_out: true }
        );
        let p = db.read(|c| status(c, &code.code)).unwrap().unwrap();
        assert_eq!(p.status, "pending", "the code was not revoked");
        assert!(p.failed_attempts >= MAX_WRONG_PER_SENDER);
        // ...while the operator pairs with it.
        assert!(matches!(
            db.write(|c| intercept(c, &msg("42", &code.code))).unwrap(),
            Intercept::Paired { .. }
        ));
    }

    #[test]
    fn codes_expire_and_are_capped() {
        let db = Db::open_in_memory().unwrap();
        let short = db
            .write(|c| create(c, &tg(), Duration::from_millis(1)))
            .unwrap();
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(
            db.write(|c| intercept(c, &msg("42", &short.code))).unwrap(),
            Intercept::NotACode
        );
        assert_eq!(
            db.read(|c| status(c, &short.code)).unwrap().unwrap().status,
            "expired"
        );
        for _ in 0..MAX_PENDING {
            db.write(|c| create(c, &tg(), DEFAULT_TTL)).unwrap();
        }
        let err = db.write(|c| create(c, &tg(), DEFAULT_TTL)).unwrap_err();
        assert!(err.to_string().contains("already waiting"), "{err}");
        assert_eq!(
            db.write(|c| revoke_pending(c, &tg())).unwrap(),
            MAX_PENDING as usize
        );
        db.write(|c| create(c, &tg(), DEFAULT_TTL)).unwrap();
        // Codes of another channel do not count.
        let other = ChannelName::parse("discord").unwrap();
        assert_eq!(
            db.write(|c| intercept(
                c,
                &Inbound {
                    channel: other.clone(),
                    ..msg("1", "ABCD-EFGH")
                }
            ))
            .unwrap(),
            Intercept::NotACode
        );
    }
}
