//! Question cards agents post in chats: a question with option buttons, answered by a click.
//!
//! The buttons carry the host's card id, never one the agent chose, so an agent cannot make
//! a card whose buttons pass for another card's (an approval's, or another session's
//! question). A click counts only if it comes from the message the card was posted as, in
//! the chat it was posted to, from someone that chat's gate lets talk to the agent, and only
//! the first answer counts. The answer goes back to the asking session as a system message.

use nanoclaw_plugin_api::kit::{ButtonChoice, decode_button_id};
use rusqlite::{Connection, OptionalExtension, params};
use sha2::{Digest, Sha256};

use crate::access::{self, Gate};
use crate::db::Db;
use crate::error::{Error, Result};
use crate::ids::{ChannelName, ChatAddress, PlatformId, SessionId, UserId};
use crate::plugins::services::Click;
use crate::sessions::queue::{self, Queued};
use crate::sessions::{Session, SessionStatus, registry};
use crate::store::messaging_groups;
use crate::store::wirings::SenderScope;

/// Card ids start with this; approval ids never do.
const CARD_PREFIX: &str = "q";

/// One posted (or about to be posted) question card.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Card {
    pub id: String,
    pub session_id: SessionId,
    pub message_out_id: String,
    pub question_id: String,
    pub options: Vec<String>,
    pub chat: ChatAddress,
    /// How long the card waits for a click.
    pub timeout_secs: u64,
}

/// `question_cards.answer` of a card that nobody answered in time.
const TIMED_OUT: i64 = -1;

impl Card {
    /// The card for an outbound row. Its id is derived from the session and the row, so a
    /// retry after a crash posts a card with the same buttons.
    pub fn for_row(
        session: &Session,
        row_key: &str,
        question_id: &str,
        options: &[String],
        chat: &ChatAddress,
        timeout_secs: u64,
    ) -> Card {
        let digest = Sha256::digest(format!("{}/{row_key}", session.id).as_bytes());
        let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        Card {
            id: format!("{CARD_PREFIX}{hex}"),
            session_id: session.id.clone(),
            message_out_id: row_key.to_string(),
            question_id: question_id.to_string(),
            options: options.to_vec(),
            chat: chat.clone(),
            timeout_secs,
        }
    }
}

/// Records a card before it is posted (a retry finds it already there).
pub fn record(conn: &Connection, card: &Card) -> Result<()> {
    let options = serde_json::to_string(&card.options).map_err(|e| Error::Json {
        context: "card options".into(),
        source: e,
    })?;
    let now = jiff::Timestamp::now();
    let secs = i64::try_from(card.timeout_secs).unwrap_or(i64::MAX);
    let expires = now
        .checked_add(jiff::SignedDuration::from_secs(secs))
        .unwrap_or(jiff::Timestamp::MAX);
    conn.execute(
        "INSERT OR IGNORE INTO question_cards (id, session_id, message_out_id, question_id, options,
            channel_type, platform_id, created_at, expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        params![
            card.id,
            card.session_id,
            card.message_out_id,
            card.question_id,
            options,
            card.chat.channel,
            card.chat.platform_id,
            nanoclaw_schema::time::format(now),
            nanoclaw_schema::time::format(expires)
        ],
    )?;
    Ok(())
}

/// Records the platform id of the message the card was posted as.
pub fn card_posted(conn: &Connection, card: &Card, message_id: Option<&str>) -> Result<()> {
    conn.execute(
        "UPDATE question_cards SET card_message_id = ?2 WHERE id = ?1",
        params![card.id, message_id],
    )?;
    Ok(())
}

/// What a click on a question card did.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// Not a question card's button.
    NotOurs,
    /// A card's button, but the click does not count (and why).
    Ignored(String),
    /// The answer was queued for the asking session.
    Answered(Box<Session>),
}

/// Handles a click that may be on a question card.
pub fn on_click(db: &Db, click: &Click) -> Result<Answer> {
    let Some(button) = decode_button_id(&click.action_id) else {
        return Ok(Answer::NotOurs);
    };
    if !button.question_id.starts_with(CARD_PREFIX) {
        return Ok(Answer::NotOurs);
    }
    let ButtonChoice::Index(index) = button.choice else {
        return Ok(Answer::Ignored("unknown button".into()));
    };
    let card_id = button.question_id.to_string();
    db.write(|c| {
        let card: Option<(SessionId, String, String, ChannelName, PlatformId, Option<String>)> = c
            .query_row(
                "SELECT session_id, question_id, options, channel_type, platform_id, card_message_id
                 FROM question_cards WHERE id = ?1",
                [&card_id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)),
            )
            .optional()?;
        let Some((session_id, question_id, options, channel, chat_id, card_message)) = card else {
            return Ok(Answer::NotOurs);
        };
        if channel != click.channel || chat_id != click.chat_id {
            return Ok(Answer::Ignored("the click came from another chat than the card's".into()));
        }
        if card_message.as_deref().is_some_and(|m| m != click.message_id) {
            return Ok(Answer::Ignored("the click came from another message than the card".into()));
        }
        let options: Vec<String> = serde_json::from_str(&options).unwrap_or_default();
        let Some(option) = options.get(index as usize) else {
            return Ok(Answer::Ignored("no such option".into()));
        };
        let Some(session) = registry::get(c, &session_id)?
            .filter(|s| s.status == SessionStatus::Active)
        else {
            return Ok(Answer::Ignored("the asking session is closed".into()));
        };
        let clicker = UserId::new(&click.channel, &click.clicker.handle)?;
        let allowed = match messaging_groups::find(c, &channel, &chat_id)? {
            Some(chat) => {
                access::inbound_gate(c, &chat, &session.agent_group_id, Some(&clicker), SenderScope::All)?
                    == Gate::Pass
            }
            None => false,
        };
        if !allowed {
            tracing::warn!(card = card_id, clicker = %clicker, "question answered by someone who may not talk to the agent; ignored");
            return Ok(Answer::Ignored(format!("{clicker} may not answer here")));
        }
        let first = c.execute(
            "UPDATE question_cards SET answered_by = ?2, answer = ?3 WHERE id = ?1 AND answer IS NULL",
            params![card_id, clicker, index],
        )?;
        if first == 0 {
            return Ok(Answer::Ignored("already answered, or timed out".into()));
        }
        let name = click.clicker.name.clone().unwrap_or_else(|| clicker.to_string());
        let row = Queued {
            channel_type: Some(channel.to_string()),
            platform_id: Some(chat_id.to_string()),
            thread_id: click.thread_id.clone(),
            ..Queued::note(
                format!("answer-{card_id}"),
                "question_answer",
                Some(true),
                format!("{name} ({clicker}) answered question {question_id}: {option}"),
            )
        };
        queue::push(c, &session.id, &row)?;
        tracing::info!(card = card_id, clicker = %clicker, "question answered");
        Ok(Answer::Answered(Box::new(session)))
    })
}

/// Closes the cards whose wait ran out, each with a note to its session saying nobody
/// answered (a trigger, so the agent can carry on). Returns the sessions to wake.
pub fn expire_due(db: &Db, now: jiff::Timestamp) -> Result<Vec<Session>> {
    let now_s = nanoclaw_schema::time::format(now);
    db.write(|c| {
        let due: Vec<(String, SessionId, String, ChannelName, PlatformId, String, String)> = c
            .prepare(
                "SELECT id, session_id, question_id, channel_type, platform_id, created_at, expires_at
                 FROM question_cards
                 WHERE answer IS NULL AND expires_at IS NOT NULL AND expires_at <= ?1
                 ORDER BY expires_at LIMIT 100",
            )?
            .query_map([&now_s], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?))
            })?
            .collect::<rusqlite::Result<_>>()?;
        let mut woken = Vec::new();
        for (card_id, session_id, question_id, channel, chat_id, created, expires) in due {
            c.execute(
                "UPDATE question_cards SET answer = ?2, answered_by = 'timeout' WHERE id = ?1 AND answer IS NULL",
                params![card_id, TIMED_OUT],
            )?;
            let Some(session) =
                registry::get(c, &session_id)?.filter(|s| s.status == SessionStatus::Active)
            else {
                continue;
            };
            let waited = match (
                nanoclaw_schema::time::parse(&created),
                nanoclaw_schema::time::parse(&expires),
            ) {
                (Some(a), Some(b)) => format!(" after {} s", b.as_second() - a.as_second()),
                _ => String::new(),
            };
            let row = Queued {
                channel_type: Some(channel.to_string()),
                platform_id: Some(chat_id.to_string()),
                ..Queued::note(
                    format!("timeout-{card_id}"),
                    "question_timeout",
                    Some(false),
                    format!("Nobody answered question {question_id}{waited}; it is closed."),
                )
            };
            queue::push(c, &session.id, &row)?;
            tracing::info!(card = card_id, question = question_id, "question timed out");
            woken.push(session);
        }
        Ok(woken)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::router::Sender;
    use crate::sessions::SessionStore;
    use crate::store::testing::{agent, chat};
    use crate::store::wirings::{self, SessionMode, WiringRules};
    use nanoclaw_plugin_api::kit::encode_button_id;
    use nanoclaw_schema::session::content::SystemIn;

    #[test]
    fn an_unanswered_card_times_out_once_and_then_takes_no_clicks() {
        let tmp = tempfile::tempdir().unwrap();
        let db = Db::open_in_memory().unwrap();
        let sessions = SessionStore::new(tmp.path());
        let a = agent(&db, "Helper");
        let c = chat(&db, "telegram:1", None, false);
        db.write(|t| wirings::create(t, &c.id, &a.id, WiringRules::default()))
            .unwrap();
        let (session, _) = db
            .write(|t| sessions.resolve(t, &a.id, &c, None, SessionMode::Shared))
            .unwrap();
        let card = Card::for_row(
            &session,
            "msg-1",
            "q-tea",
            &["Tea".into(), "Coffee".into()],
            &c.address(),
            60,
        );
        db.write(|t| record(t, &card)).unwrap();
        db.write(|t| card_posted(t, &card, Some("m-9"))).unwrap();

        // Not yet due.
        let soon = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(30);
        assert!(expire_due(&db, soon).unwrap().is_empty());
        // Due: one note, a trigger, saying so.
        let later = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(61);
        let woken = expire_due(&db, later).unwrap();
        assert_eq!(woken.len(), 1);
        assert!(expire_due(&db, later).unwrap().is_empty(), "only once");
        let queued = db.read(|t| queue::peek(t, &session.id, 10)).unwrap();
        assert_eq!(queued.len(), 1);
        let (_, note) = &queued[0];
        assert!(note.trigger);
        let text: SystemIn = serde_json::from_str(&note.content).unwrap();
        assert!(
            text.text
                .contains("Nobody answered question q-tea after 60 s"),
            "{}",
            text.text
        );

        // A late click changes nothing.
        let click = Click {
            channel: c.address().channel.clone(),
            chat_id: c.address().platform_id.clone(),
            thread_id: None,
            message_id: "m-9".into(),
            clicker: Sender {
                handle: "1".into(),
                name: None,
                is_bot: false,
            },
            action_id: encode_button_id(&card.id, 0),
        };
        assert!(matches!(on_click(&db, &click).unwrap(), Answer::Ignored(_)));
        assert_eq!(
            db.read(|t| queue::peek(t, &session.id, 10)).unwrap().len(),
            1
        );
    }
}
