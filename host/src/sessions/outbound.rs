//! Reading a session's `outbound.db`: the edge where what an agent wrote becomes typed values.
//!
//! The container owns this file and may have written anything into it: a crafted schema,
//! views in place of tables, rows of any size or type. So the host reads it through a
//! [`Reader`]: read-only, defensive SQLite settings, every query bounded in time, every value
//! bounded in size before it leaves SQLite, and each row parsed into an [`OutRow`] whose
//! body is either a valid action or the reason it is not (which the delivery records as the
//! row's failure, so the agent can read why).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rusqlite::limits::Limit;
use rusqlite::types::Value;
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

use nanoclaw_schema::session::content::{
    ChatOut, QUESTION_TIMEOUT_DEFAULT_SECS, QUESTION_TIMEOUT_MAX_SECS, SystemAction,
};
use nanoclaw_schema::session::{AGENT_CHANNEL, OutKind, limits};
use nanoclaw_schema::time;

use super::HOST_BUSY_TIMEOUT;
use super::dir::{FileName, MessageOutId};
use crate::error::{Error, Result};
use crate::ids::{AgentGroupId, ChannelName, ChatAddress, PlatformId};

/// Longest any one read of a hostile `outbound.db` may run.
pub const QUERY_DEADLINE: Duration = Duration::from_secs(1);

/// A read-only connection to a container's `outbound.db` with bounded work per call.
pub struct Reader {
    conn: Connection,
    /// Milliseconds since `epoch` after which the running statement is interrupted.
    deadline: Arc<AtomicU64>,
    epoch: Instant,
}

impl Reader {
    /// Opens `outbound.db` read-only. SQLite never follows a link there (it opens with
    /// `O_NOFOLLOW`), so a symlinked file is refused, not read.
    pub fn open(path: &Path) -> Result<Reader> {
        let mut conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY
                | OpenFlags::SQLITE_OPEN_NO_MUTEX
                | OpenFlags::SQLITE_OPEN_NOFOLLOW,
        )
        .map_err(|e| crate::db::corrupt_or(path, e))?;
        conn.busy_timeout(HOST_BUSY_TIMEOUT)?;
        conn.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_DEFENSIVE, true)?;
        conn.set_db_config(
            rusqlite::config::DbConfig::SQLITE_DBCONFIG_TRUSTED_SCHEMA,
            false,
        )?;
        // No value bigger than a message's content may leave SQLite, whatever is stored.
        conn.set_limit(
            Limit::SQLITE_LIMIT_LENGTH,
            (limits::MAX_CONTENT_BYTES * 4) as i32,
        )?;
        conn.set_limit(Limit::SQLITE_LIMIT_SQL_LENGTH, 64 * 1024)?;
        conn.execute_batch(
            "PRAGMA query_only = ON; PRAGMA cell_size_check = ON; PRAGMA mmap_size = 0;
             PRAGMA cache_size = -128;",
        )?;
        let deadline = Arc::new(AtomicU64::new(u64::MAX));
        let epoch = Instant::now();
        let check = deadline.clone();
        conn.progress_handler(
            10_000,
            Some(move || epoch.elapsed().as_millis() as u64 > check.load(Ordering::Relaxed)),
        )?;
        Ok(Reader {
            conn,
            deadline,
            epoch,
        })
    }

    /// Runs `f` with [`QUERY_DEADLINE`] armed: a statement running past it is interrupted.
    pub(crate) fn bounded<T>(&self, f: impl FnOnce() -> Result<T>) -> Result<T> {
        let until = self.epoch.elapsed() + QUERY_DEADLINE;
        self.deadline
            .store(until.as_millis() as u64, Ordering::Relaxed);
        let out = f();
        self.deadline.store(u64::MAX, Ordering::Relaxed);
        out.map_err(|e| match e {
            Error::Db(e) if e.sqlite_error_code() == Some(rusqlite::ErrorCode::OperationInterrupted) => {
                Error::invalid(format!(
                    "reading outbound.db took longer than {QUERY_DEADLINE:?}; its contents are not usable"
                ))
            }
            e => e,
        })
    }

    pub fn conn(&self) -> &Connection {
        &self.conn
    }
}

/// A `messages_out` row's key: its id, or `#<seq>` for a row whose id is unusable (so its
/// failure can still be recorded).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RowKey {
    Id(MessageOutId),
    Unnamed(i64),
}

impl RowKey {
    pub fn as_string(&self) -> String {
        match self {
            RowKey::Id(id) => id.to_string(),
            RowKey::Unnamed(seq) => format!("#{seq}"),
        }
    }

    pub fn id(&self) -> Option<&MessageOutId> {
        match self {
            RowKey::Id(id) => Some(id),
            RowKey::Unnamed(_) => None,
        }
    }
}

impl std::fmt::Display for RowKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.as_string())
    }
}

/// One `messages_out` row, parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct OutRow {
    pub seq: i64,
    pub key: RowKey,
    pub in_reply_to: Option<String>,
    pub deliver_after: Option<jiff::Timestamp>,
    /// What the agent asks for, or why the row cannot be carried out.
    pub body: std::result::Result<Body, String>,
}

/// What a valid row asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    Chat { to: To, op: ChatOp },
    System(SystemAction),
}

/// Where a chat row goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum To {
    Chat {
        chat: ChatAddress,
        thread: Option<String>,
    },
    Agent(AgentGroupId),
}

/// A chat row's operation, with every value within [`limits`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChatOp {
    Send {
        text: String,
        files: Vec<FileName>,
    },
    Edit {
        message_id: String,
        text: String,
    },
    React {
        message_id: String,
        emoji: String,
    },
    Question {
        question_id: String,
        title: String,
        question: String,
        options: Vec<String>,
        /// How long the card waits for a click before the agent is told it timed out.
        timeout_secs: u64,
    },
}

/// The columns as read, each already cut to a bound (`None` = NULL or not text).
struct RawRow {
    seq: i64,
    id: Option<String>,
    in_reply_to: Option<String>,
    deliver_after: Option<String>,
    kind: Option<String>,
    channel_type: Option<String>,
    platform_id: Option<String>,
    thread_id: Option<String>,
    content: Option<String>,
    content_bytes: i64,
}

/// Short text columns are cut to this many characters in SQL, one past every limit, so an
/// oversized value is seen as oversized without being loaded.
const SHORT_CUT: usize = limits::MAX_SHORT_FIELD_BYTES + 1;

fn select(filter: &str) -> String {
    format!(
        "SELECT seq, substr(id, 1, {id_cut}), substr(in_reply_to, 1, {SHORT_CUT}),
                substr(deliver_after, 1, 64), substr(kind, 1, 16), substr(channel_type, 1, {SHORT_CUT}),
                substr(platform_id, 1, {SHORT_CUT}), substr(thread_id, 1, {SHORT_CUT}),
                CASE WHEN octet_length(content) <= {max} THEN content END, octet_length(content)
         FROM messages_out WHERE typeof(seq) = 'integer' AND {filter}",
        id_cut = limits::MAX_MESSAGE_ID_BYTES + 1,
        max = limits::MAX_CONTENT_BYTES,
    )
}

fn text(v: Value) -> Option<String> {
    match v {
        Value::Text(s) => Some(s),
        _ => None,
    }
}

fn raw_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawRow> {
    Ok(RawRow {
        seq: r.get(0)?,
        id: text(r.get(1)?),
        in_reply_to: text(r.get(2)?),
        deliver_after: text(r.get(3)?),
        kind: text(r.get(4)?),
        channel_type: text(r.get(5)?),
        platform_id: text(r.get(6)?),
        thread_id: text(r.get(7)?),
        content: text(r.get(8)?),
        content_bytes: r.get::<_, Option<i64>>(9)?.unwrap_or(0),
    })
}

/// Up to `page` rows with a seq above `after`, in seq order, parsed.
pub fn page_after(r: &Reader, after: i64, page: usize) -> Result<Vec<OutRow>> {
    let mut stmt = r
        .conn
        .prepare_cached(&select("seq > ?1 ORDER BY seq LIMIT ?2"))?;
    let rows = stmt
        .query_map(params![after, page as i64], raw_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows.into_iter().map(parse).collect())
}

/// The rows with exactly this seq (normally one), parsed.
pub fn rows_at(r: &Reader, seq: i64) -> Result<Vec<OutRow>> {
    let mut stmt = r.conn.prepare_cached(&select("seq = ?1 LIMIT 4"))?;
    let rows = stmt
        .query_map([seq], raw_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows.into_iter().map(parse).collect())
}

fn parse(raw: RawRow) -> OutRow {
    let key = match raw.id.as_deref().and_then(MessageOutId::parse) {
        Some(id) => RowKey::Id(id),
        None => RowKey::Unnamed(raw.seq),
    };
    let mut row = OutRow {
        seq: raw.seq,
        key,
        in_reply_to: None,
        deliver_after: None,
        body: Err(String::new()),
    };
    row.body = (|| {
        if row.key.id().is_none() {
            return Err(format!(
                "unusable message id {:?}: use 1 to {} letters, digits, '-', '_' or '.'",
                raw.id.as_deref().unwrap_or(""),
                limits::MAX_MESSAGE_ID_BYTES
            ));
        }
        row.in_reply_to = match raw.in_reply_to {
            Some(s) if s.len() > limits::MAX_SHORT_FIELD_BYTES => {
                return Err("in_reply_to is too long".into());
            }
            other => other,
        };
        row.deliver_after = match raw.deliver_after.as_deref() {
            None => None,
            Some(s) => {
                Some(time::parse(s).ok_or_else(|| format!("unreadable deliver_after {s:?}"))?)
            }
        };
        let Some(content) = raw.content else {
            return Err(if raw.content_bytes > limits::MAX_CONTENT_BYTES as i64 {
                format!(
                    "content is {} bytes, more than the limit of {}",
                    raw.content_bytes,
                    limits::MAX_CONTENT_BYTES
                )
            } else {
                "content is missing or not text".into()
            });
        };
        let kind = raw.kind.as_deref().unwrap_or("");
        match kind.parse::<OutKind>() {
            Ok(OutKind::System) => serde_json::from_str::<SystemAction>(&content)
                .map(Body::System)
                .map_err(|e| format!("unknown or malformed system action: {e}")),
            Ok(OutKind::Chat) => {
                let op = serde_json::from_str::<ChatOut>(&content)
                    .map_err(|e| format!("unreadable message content: {e}"))
                    .and_then(chat_op)?;
                let to = address(
                    raw.channel_type.as_deref(),
                    raw.platform_id.as_deref(),
                    raw.thread_id,
                )?;
                if matches!(to, To::Agent(_)) && !matches!(op, ChatOp::Send { .. }) {
                    return Err("only plain messages can go to another agent".into());
                }
                Ok(Body::Chat { to, op })
            }
            Err(_) => Err(format!("unknown message kind {kind:?}")),
        }
    })();
    row
}

fn address(
    channel: Option<&str>,
    platform_id: Option<&str>,
    thread: Option<String>,
) -> std::result::Result<To, String> {
    let (Some(channel), Some(platform_id)) = (channel, platform_id) else {
        return Err("message has no address".into());
    };
    if channel == AGENT_CHANNEL {
        return AgentGroupId::parse(platform_id)
            .map(To::Agent)
            .map_err(|e| format!("message to an agent: {e}"));
    }
    let thread = match thread {
        Some(t) if t.len() > limits::MAX_SHORT_FIELD_BYTES => {
            return Err("thread id is too long".into());
        }
        other => other,
    };
    Ok(To::Chat {
        chat: ChatAddress {
            channel: ChannelName::parse(channel).map_err(|e| e.to_string())?,
            platform_id: PlatformId::parse(platform_id).map_err(|e| e.to_string())?,
        },
        thread,
    })
}

fn short(what: &str, s: String) -> std::result::Result<String, String> {
    if s.len() > limits::MAX_SHORT_FIELD_BYTES {
        return Err(format!(
            "{what} is longer than {} bytes",
            limits::MAX_SHORT_FIELD_BYTES
        ));
    }
    Ok(s)
}

fn long_text(s: String) -> std::result::Result<String, String> {
    let chars = s.chars().count();
    if chars > limits::MAX_TEXT_CHARS {
        return Err(format!(
            "the text has {chars} characters, more than the limit of {}; send it in several messages",
            limits::MAX_TEXT_CHARS
        ));
    }
    Ok(s)
}

fn chat_op(c: ChatOut) -> std::result::Result<ChatOp, String> {
    Ok(match c {
        ChatOut::Send { text, files } => {
            if files.len() > limits::MAX_FILES_PER_MESSAGE {
                return Err(format!(
                    "{} files, more than the limit of {} per message",
                    files.len(),
                    limits::MAX_FILES_PER_MESSAGE
                ));
            }
            let files = files
                .iter()
                .map(|f| FileName::parse(f).ok_or_else(|| format!("unsafe file name {f:?}")))
                .collect::<std::result::Result<Vec<_>, _>>()?;
            ChatOp::Send {
                text: long_text(text)?,
                files,
            }
        }
        ChatOut::Edit { message_id, text } => ChatOp::Edit {
            message_id: short("message_id", message_id)?,
            text: long_text(text)?,
        },
        ChatOut::React { message_id, emoji } => ChatOp::React {
            message_id: short("message_id", message_id)?,
            emoji: short("emoji", emoji)?,
        },
        ChatOut::Question {
            question_id,
            title,
            question,
            options,
            timeout_secs,
        } => {
            if options.is_empty() || options.len() > limits::MAX_QUESTION_OPTIONS {
                return Err(format!(
                    "a question needs 1 to {} options",
                    limits::MAX_QUESTION_OPTIONS
                ));
            }
            ChatOp::Question {
                question_id: short("question_id", question_id)?,
                title: short("title", title)?,
                question: long_text(question)?,
                options: options
                    .into_iter()
                    .map(|o| short("option", o))
                    .collect::<std::result::Result<_, _>>()?,
                timeout_secs: timeout_secs
                    .unwrap_or(QUESTION_TIMEOUT_DEFAULT_SECS)
                    .clamp(1, QUESTION_TIMEOUT_MAX_SECS),
            }
        }
    })
}

/// Which of `ids` the container has finished (acked `completed` or `failed`).
pub fn finished_among(r: &Reader, ids: &[String]) -> Result<Vec<String>> {
    let mut done = Vec::new();
    let mut stmt = r.conn.prepare_cached(
        "SELECT 1 FROM processing_ack WHERE message_id = ?1 AND status IN ('completed', 'failed')",
    )?;
    for id in ids {
        if stmt.exists([id])? {
            done.push(id.clone());
        }
    }
    Ok(done)
}

/// Which of `ids` the container acked `failed`.
pub fn failed_among(r: &Reader, ids: &[String]) -> Result<Vec<String>> {
    let mut stmt = r.conn.prepare_cached(
        "SELECT 1 FROM processing_ack WHERE message_id = ?1 AND status = 'failed'",
    )?;
    let mut out = Vec::new();
    for id in ids {
        if stmt.exists([id])? {
            out.push(id.clone());
        }
    }
    Ok(out)
}

/// The text of the agent's last chat reply to message `id` (for a failed turn: the error
/// the runner reported), at most `max_chars`. Written by the agent: show it as its words.
pub fn last_reply_text(r: &Reader, id: &str, max_chars: usize) -> Result<Option<String>> {
    Ok(r.conn
        .prepare_cached(
            "SELECT substr(json_extract(content, '$.text'), 1, ?2) FROM messages_out
             WHERE in_reply_to = ?1 AND kind = 'chat' AND json_valid(content)
               AND json_type(content, '$.text') = 'text'
             ORDER BY seq DESC LIMIT 1",
        )?
        .query_row(params![id, max_chars as i64], |r| {
            r.get::<_, Option<String>>(0)
        })
        .optional()?
        .flatten())
}

/// Whether the container has claimed (or finished) message `id`.
pub fn claimed(r: &Reader, id: &str) -> Result<bool> {
    Ok(r.conn
        .prepare_cached("SELECT 1 FROM processing_ack WHERE message_id = ?1")?
        .exists([id])?)
}

/// Messages the container claimed and has not finished: `(message id, claimed at)`, at most
/// `limit` (only ids the host knows matter; the rest is noise).
pub fn processing_claims(r: &Reader, limit: usize) -> Result<Vec<(String, String)>> {
    let mut stmt = r.conn.prepare_cached(&format!(
        "SELECT substr(message_id, 1, {SHORT_CUT}), substr(status_changed, 1, 64) FROM processing_ack
         WHERE status = 'processing' LIMIT ?1"
    ))?;
    let rows = stmt
        .query_map([limit as i64], |r| Ok((text(r.get(0)?), text(r.get(1)?))))?
        .filter_map(|r| match r {
            Ok((Some(id), Some(at))) => Some(Ok((id, at))),
            Ok(_) => None,
            Err(e) => Some(Err(e)),
        })
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

/// `PRAGMA data_version`: changes whenever another connection committed to the file.
pub fn data_version(r: &Reader) -> Result<i64> {
    Ok(r.conn.query_row("PRAGMA data_version", [], |r| r.get(0))?)
}

/// How many rows the agent has written (for the start-up scan).
pub fn max_seq(r: &Reader) -> Result<i64> {
    Ok(r.conn
        .query_row(
            "SELECT MAX(seq) FROM messages_out WHERE typeof(seq) = 'integer'",
            [],
            |r| r.get::<_, Option<i64>>(0),
        )
        .optional()?
        .flatten()
        .unwrap_or(0))
}

/// Deletes `processing` claims left by a container that is no longer running, so the next
/// container sees those messages again. The host's only write to `outbound.db`: call it only
/// when no container owns the session.
pub fn clear_stale_claims(path: &Path) -> Result<usize> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_NOFOLLOW,
    )
    .map_err(|e| crate::db::corrupt_or(path, e))?;
    conn.busy_timeout(HOST_BUSY_TIMEOUT)?;
    conn.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_DEFENSIVE, true)?;
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_TRUSTED_SCHEMA,
        false,
    )?;
    // Triggers the agent may have planted must not run as the host.
    conn.execute_batch("PRAGMA recursive_triggers = OFF;")?;
    Ok(conn.execute("DELETE FROM processing_ack WHERE status = 'processing'", [])?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use nanoclaw_schema::session::OUTBOUND_SCHEMA;

    fn db(tmp: &tempfile::TempDir) -> (std::path::PathBuf, Connection) {
        let path = tmp.path().join("outbound.db");
        let c = Connection::open(&path).unwrap();
        c.execute_batch("PRAGMA journal_mode = WAL").unwrap();
        c.execute_batch(OUTBOUND_SCHEMA).unwrap();
        (path, c)
    }

    #[test]
    fn failed_acks_and_the_error_reply_are_read_defensively() {
        let tmp = tempfile::tempdir().unwrap();
        let (path, c) = db(&tmp);
        let reply = |seq: i64, id: &str, to: &str, content: &str| {
            c.execute(
                "INSERT INTO messages_out (id, seq, in_reply_to, timestamp, kind, content)
                 VALUES (?1, ?2, ?3, '2026-01-01T00:00:00.000Z', 'chat', ?4)",
                params![id, seq, to, content],
            )
            .unwrap();
        };
        reply(1, "o1", "t:1", r#"{"op":"send","text":"Error: first"}"#);
        reply(
            3,
            "o2",
            "t:1",
            &format!(r#"{{"op":"send","text":"{}"}}"#, "x".repeat(5000)),
        );
        reply(5, "o3", "t:2", "not json at all");
        reply(7, "o4", "t:3", r#"{"op":"send","text":{"nested":1}}"#);
        c.execute(
            "INSERT INTO processing_ack (message_id, status, status_changed) VALUES
             ('t:1', 'failed', 'now'), ('t:2', 'completed', 'now'), ('other', 'failed', 'now')",
            [],
        )
        .unwrap();
        let r = Reader::open(&path).unwrap();
        let ids = vec!["t:1".to_string(), "t:2".to_string()];
        assert_eq!(
            failed_among(&r, &ids).unwrap(),
            ["t:1"],
            "only ids asked about"
        );
        // The newest reply wins, cut to the bound.
        let text = last_reply_text(&r, "t:1", 100).unwrap().unwrap();
        assert_eq!(text.chars().count(), 100);
        // Content that is not JSON, or whose text is not a string, yields nothing.
        assert_eq!(last_reply_text(&r, "t:2", 100).unwrap(), None);
        assert_eq!(last_reply_text(&r, "t:3", 100).unwrap(), None);
        assert_eq!(last_reply_text(&r, "nothing", 100).unwrap(), None);
    }

    fn insert(c: &Connection, seq: i64, id: &str, kind: &str, ch: &str, pid: &str, content: &str) {
        c.execute(
            "INSERT INTO messages_out (id, seq, timestamp, kind, channel_type, platform_id, content)
             VALUES (?1, ?2, '2026-01-01T00:00:00.000Z', ?3, ?4, ?5, ?6)",
            params![id, seq, kind, ch, pid, content],
        )
        .unwrap();
    }

    #[test]
    fn rows_parse_into_actions_or_reasons() {
        let tmp = tempfile::tempdir().unwrap();
        let (path, c) = db(&tmp);
        insert(
            &c,
            1,
            "m1",
            "chat",
            "telegram",
            "42",
            r#"{"op":"send","text":"hi"}"#,
        );
        insert(
            &c,
            3,
            "../../etc",
            "chat",
            "telegram",
            "42",
            r#"{"op":"send","text":"x"}"#,
        );
        insert(
            &c,
            5,
            "m5",
            "chat",
            "telegram",
            "42",
            r#"{"op":"send","text":"x","files":["../secret"]}"#,
        );
        insert(
            &c,
            7,
            "m7",
            "chat",
            "agent",
            "ag-2",
            r#"{"op":"send","text":"to a peer"}"#,
        );
        insert(&c, 9, "m9", "weird", "telegram", "42", "{}");
        let r = Reader::open(&path).unwrap();
        let rows = r.bounded(|| page_after(&r, 0, 10)).unwrap();
        assert_eq!(rows.len(), 5);
        assert!(
            matches!(&rows[0].body, Ok(Body::Chat { op: ChatOp::Send { text, .. }, .. }) if text == "hi")
        );
        assert_eq!(rows[1].key, RowKey::Unnamed(3));
        assert!(
            rows[1]
                .body
                .as_ref()
                .unwrap_err()
                .contains("unusable message id")
        );
        assert!(
            rows[2]
                .body
                .as_ref()
                .unwrap_err()
                .contains("unsafe file name")
        );
        assert!(
            matches!(&rows[3].body, Ok(Body::Chat { to: To::Agent(a), .. }) if a.as_str() == "ag-2")
        );
        assert!(
            rows[4]
                .body
                .as_ref()
                .unwrap_err()
                .contains("unknown message kind")
        );
    }

    #[test]
    fn oversized_values_are_refused_without_being_loaded() {
        let tmp = tempfile::tempdir().unwrap();
        let (path, c) = db(&tmp);
        let huge = format!(
            r#"{{"op":"send","text":"{}"}}"#,
            "a".repeat(limits::MAX_CONTENT_BYTES)
        );
        insert(&c, 1, "m1", "chat", "telegram", "42", &huge);
        let long = format!(
            r#"{{"op":"send","text":"{}"}}"#,
            "é".repeat(limits::MAX_TEXT_CHARS + 1)
        );
        insert(&c, 3, "m3", "chat", "telegram", "42", &long);
        let files: Vec<String> = (0..=limits::MAX_FILES_PER_MESSAGE)
            .map(|i| format!("f{i}"))
            .collect();
        let many = serde_json::json!({"op": "send", "text": "x", "files": files}).to_string();
        insert(&c, 5, "m5", "chat", "telegram", "42", &many);
        let r = Reader::open(&path).unwrap();
        let rows = r.bounded(|| page_after(&r, 0, 10)).unwrap();
        assert!(
            rows[0]
                .body
                .as_ref()
                .unwrap_err()
                .contains("more than the limit"),
            "{:?}",
            rows[0].body
        );
        assert!(rows[1].body.as_ref().unwrap_err().contains("characters"));
        assert!(rows[2].body.as_ref().unwrap_err().contains("files"));
    }

    #[test]
    fn paging_and_non_integer_seqs() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("outbound.db");
        let c = Connection::open(&path).unwrap();
        // A hostile schema: no constraints at all.
        c.execute_batch(
            "CREATE TABLE messages_out (id, seq, in_reply_to, timestamp, deliver_after, kind, channel_type, platform_id, thread_id, content);",
        )
        .unwrap();
        for i in 0..10 {
            insert(
                &c,
                2 * i + 1,
                &format!("m{i}"),
                "chat",
                "telegram",
                "1",
                r#"{"op":"send","text":"x"}"#,
            );
        }
        c.execute(
            "INSERT INTO messages_out (id, seq, kind, content) VALUES ('t', 'zzz', 'chat', '{}')",
            [],
        )
        .unwrap();
        let r = Reader::open(&path).unwrap();
        let first = r.bounded(|| page_after(&r, 0, 4)).unwrap();
        assert_eq!(
            first.iter().map(|r| r.seq).collect::<Vec<_>>(),
            [1, 3, 5, 7]
        );
        let rest = r.bounded(|| page_after(&r, 7, 100)).unwrap();
        assert_eq!(rest.len(), 6, "a text seq is never read");
    }

    #[test]
    fn a_query_that_runs_too_long_is_interrupted() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("outbound.db");
        let c = Connection::open(&path).unwrap();
        // A view that never ends, where the table should be.
        c.execute_batch(
            "CREATE VIEW messages_out AS WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n)
             SELECT 'm' AS id, x AS seq, NULL AS in_reply_to, NULL AS deliver_after, 'chat' AS kind,
                    NULL AS channel_type, NULL AS platform_id, NULL AS thread_id, '{}' AS content
             FROM n WHERE x < 0;",
        )
        .unwrap();
        let r = Reader::open(&path).unwrap();
        let started = Instant::now();
        let err = r.bounded(|| page_after(&r, 0, 10)).unwrap_err();
        assert!(err.to_string().contains("longer than"), "{err}");
        assert!(started.elapsed() < QUERY_DEADLINE * 3);
    }

    #[test]
    fn a_symlinked_outbound_db_is_not_opened() {
        let tmp = tempfile::tempdir().unwrap();
        let (real, _c) = db(&tmp);
        let link = tmp.path().join("link.db");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        assert!(Reader::open(&link).and_then(|r| data_version(&r)).is_err());
    }
}
