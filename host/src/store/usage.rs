//! Model-API token usage, one row per response the model proxy forwarded (`model_usage`).

use rusqlite::{Connection, params};
use serde::Serialize;

use crate::error::Result;
use crate::ids::{AgentGroupId, SessionId};

/// Tokens one response reported.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Tokens {
    /// Input tokens not served from the prompt cache.
    pub input: u64,
    pub output: u64,
    /// Input tokens written to the prompt cache.
    pub cache_creation: u64,
    /// Input tokens read from the prompt cache.
    pub cache_read: u64,
}

impl Tokens {
    /// Every token the request made the model process: what a daily budget counts.
    pub fn total(&self) -> u64 {
        self.input
            .saturating_add(self.output)
            .saturating_add(self.cache_creation)
            .saturating_add(self.cache_read)
    }

    pub fn is_zero(&self) -> bool {
        self.total() == 0
    }
}

/// One forwarded response.
#[derive(Debug, Clone)]
pub struct UsageRecord {
    pub agent_group_id: AgentGroupId,
    pub session_id: SessionId,
    pub provider: &'static str,
    pub model: Option<String>,
    pub status: u16,
    pub tokens: Tokens,
}

/// Today's date in UTC, as `day` is stored.
pub fn today() -> String {
    jiff::Timestamp::now().strftime("%Y-%m-%d").to_string()
}

pub fn record(conn: &Connection, r: &UsageRecord) -> Result<()> {
    let t = r.tokens;
    conn.prepare_cached(
        "INSERT INTO model_usage (agent_group_id, session_id, provider, model, status,
            input_tokens, output_tokens, cache_creation_tokens, cache_read_tokens, day, at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    )?
    .execute(params![
        r.agent_group_id.as_str(),
        r.session_id.as_str(),
        r.provider,
        r.model,
        r.status,
        to_i64(t.input),
        to_i64(t.output),
        to_i64(t.cache_creation),
        to_i64(t.cache_read),
        today(),
        nanoclaw_schema::time::now(),
    ])?;
    Ok(())
}

/// Tokens an agent group used on `day` (all four kinds summed).
pub fn tokens_on(conn: &Connection, group: &AgentGroupId, day: &str) -> Result<u64> {
    let total: i64 = conn
        .prepare_cached(
            "SELECT COALESCE(SUM(input_tokens + output_tokens + cache_creation_tokens
                + cache_read_tokens), 0)
             FROM model_usage WHERE agent_group_id = ?1 AND day = ?2",
        )?
        .query_row(params![group.as_str(), day], |r| r.get(0))?;
    Ok(u64::try_from(total).unwrap_or(0))
}

/// Usage of one agent group on one day.
#[derive(Debug, Clone, Serialize)]
pub struct DayUsage {
    pub day: String,
    pub agent_group_id: String,
    /// The agent's folder, when the group still exists.
    pub agent: Option<String>,
    pub requests: u64,
    #[serde(flatten)]
    pub tokens: Tokens,
}

/// Usage by day and agent group from `since` (a `YYYY-MM-DD` day) on, newest day first;
/// only `group` when given.
pub fn by_day(
    conn: &Connection,
    since: &str,
    group: Option<&AgentGroupId>,
) -> Result<Vec<DayUsage>> {
    let mut stmt = conn.prepare_cached(
        "SELECT u.day, u.agent_group_id, g.folder, COUNT(*), SUM(u.input_tokens),
                SUM(u.output_tokens), SUM(u.cache_creation_tokens), SUM(u.cache_read_tokens)
         FROM model_usage u LEFT JOIN agent_groups g ON g.id = u.agent_group_id
         WHERE u.day >= ?1 AND (?2 IS NULL OR u.agent_group_id = ?2)
         GROUP BY u.day, u.agent_group_id
         ORDER BY u.day DESC, g.folder",
    )?;
    let rows = stmt.query_map(params![since, group.map(|g| g.as_str())], |r| {
        let n = |i: usize| -> rusqlite::Result<u64> {
            Ok(u64::try_from(r.get::<_, i64>(i)?).unwrap_or(0))
        };
        Ok(DayUsage {
            day: r.get(0)?,
            agent_group_id: r.get(1)?,
            agent: r.get(2)?,
            requests: n(3)?,
            tokens: Tokens {
                input: n(4)?,
                output: n(5)?,
                cache_creation: n(6)?,
                cache_read: n(7)?,
            },
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::Db;

    #[test]
    fn records_and_sums_by_day_and_group() {
        let db = Db::open_in_memory().unwrap();
        let (g1, g2) = (AgentGroupId::generate(), AgentGroupId::generate());
        let s = SessionId::generate();
        let rec = |g: &AgentGroupId, input, output| UsageRecord {
            agent_group_id: g.clone(),
            session_id: s.clone(),
            provider: "claude",
            model: Some("claude-test".into()),
            status: 200,
            tokens: Tokens {
                input,
                output,
                cache_creation: 1,
                cache_read: 2,
            },
        };
        db.write(|c| {
            record(c, &rec(&g1, 10, 5))?;
            record(c, &rec(&g1, 20, 7))?;
            record(c, &rec(&g2, 1, 1))
        })
        .unwrap();
        let day = today();
        assert_eq!(db.read(|c| tokens_on(c, &g1, &day)).unwrap(), 48);
        assert_eq!(db.read(|c| tokens_on(c, &g1, "2000-01-01")).unwrap(), 0);
        let rows = db.read(|c| by_day(c, "2000-01-01", None)).unwrap();
        assert_eq!(rows.len(), 2);
        let mine = db.read(|c| by_day(c, &day, Some(&g1))).unwrap();
        assert_eq!(mine.len(), 1);
        assert_eq!(mine[0].requests, 2);
        assert_eq!(mine[0].tokens.input, 30);
        assert_eq!(mine[0].tokens.output, 12);
    }
}
