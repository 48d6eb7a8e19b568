//! State plugins keep in the central DB, namespaced by plugin instance: a key-value store with
//! expiry, thread subscriptions, token locks, and capped lists (which double as queues).
//! Times are Unix epoch milliseconds, passed in so tests control the clock.

use rusqlite::{Connection, OptionalExtension, params};

use crate::error::{Error, Result};

fn expiry(now_ms: i64, ttl_ms: Option<u64>) -> Option<i64> {
    ttl_ms.map(|ttl| now_ms.saturating_add(i64::try_from(ttl).unwrap_or(i64::MAX)))
}

pub fn kv_get(conn: &Connection, plugin: &str, key: &str, now_ms: i64) -> Result<Option<String>> {
    Ok(conn
        .prepare_cached(
            "SELECT value FROM plugin_kv WHERE plugin = ?1 AND key = ?2 AND (expires_at IS NULL OR expires_at > ?3)",
        )?
        .query_row(params![plugin, key, now_ms], |r| r.get(0))
        .optional()?)
}

pub fn kv_set(
    conn: &Connection,
    plugin: &str,
    key: &str,
    value: &str,
    ttl_ms: Option<u64>,
    now_ms: i64,
) -> Result<()> {
    conn.prepare_cached(
        "INSERT OR REPLACE INTO plugin_kv (plugin, key, value, expires_at) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![plugin, key, value, expiry(now_ms, ttl_ms)])?;
    Ok(())
}

/// Sets the key only if it is absent or expired; true if it was set. Atomic: the building
/// block for de-duplication.
pub fn kv_set_if_absent(
    conn: &Connection,
    plugin: &str,
    key: &str,
    value: &str,
    ttl_ms: Option<u64>,
    now_ms: i64,
) -> Result<bool> {
    conn.execute(
        "DELETE FROM plugin_kv WHERE plugin = ?1 AND key = ?2 AND expires_at IS NOT NULL AND expires_at <= ?3",
        params![plugin, key, now_ms],
    )?;
    let n = conn.execute(
        "INSERT OR IGNORE INTO plugin_kv (plugin, key, value, expires_at) VALUES (?1, ?2, ?3, ?4)",
        params![plugin, key, value, expiry(now_ms, ttl_ms)],
    )?;
    Ok(n > 0)
}

pub fn kv_delete(conn: &Connection, plugin: &str, key: &str) -> Result<bool> {
    Ok(conn.execute(
        "DELETE FROM plugin_kv WHERE plugin = ?1 AND key = ?2",
        params![plugin, key],
    )? > 0)
}

pub fn subscribe(conn: &Connection, plugin: &str, thread: &str) -> Result<()> {
    conn.execute(
        "INSERT OR IGNORE INTO plugin_subscriptions (plugin, thread_id, subscribed_at) VALUES (?1, ?2, ?3)",
        params![plugin, thread, nanoclaw_schema::time::now()],
    )?;
    Ok(())
}

pub fn unsubscribe(conn: &Connection, plugin: &str, thread: &str) -> Result<bool> {
    Ok(conn.execute(
        "DELETE FROM plugin_subscriptions WHERE plugin = ?1 AND thread_id = ?2",
        params![plugin, thread],
    )? > 0)
}

pub fn is_subscribed(conn: &Connection, plugin: &str, thread: &str) -> Result<bool> {
    Ok(conn.query_row(
        "SELECT EXISTS(SELECT 1 FROM plugin_subscriptions WHERE plugin = ?1 AND thread_id = ?2)",
        params![plugin, thread],
        |r| r.get(0),
    )?)
}

/// Takes the lock `name` for `ttl_ms` unless someone else holds it; returns the token that
/// extends or releases it.
pub fn lock_acquire(
    conn: &Connection,
    plugin: &str,
    name: &str,
    ttl_ms: u64,
    now_ms: i64,
) -> Result<Option<String>> {
    conn.execute(
        "DELETE FROM plugin_locks WHERE plugin = ?1 AND name = ?2 AND expires_at <= ?3",
        params![plugin, name, now_ms],
    )?;
    let token = crate::ids::generate("lock");
    let n = conn.execute(
        "INSERT OR IGNORE INTO plugin_locks (plugin, name, token, expires_at) VALUES (?1, ?2, ?3, ?4)",
        params![plugin, name, token, expiry(now_ms, Some(ttl_ms))],
    )?;
    Ok((n > 0).then_some(token))
}

pub fn lock_extend(
    conn: &Connection,
    plugin: &str,
    name: &str,
    token: &str,
    ttl_ms: u64,
    now_ms: i64,
) -> Result<bool> {
    Ok(conn.execute(
        "UPDATE plugin_locks SET expires_at = ?4 WHERE plugin = ?1 AND name = ?2 AND token = ?3 AND expires_at > ?5",
        params![plugin, name, token, expiry(now_ms, Some(ttl_ms)), now_ms],
    )? > 0)
}

pub fn lock_release(conn: &Connection, plugin: &str, name: &str, token: &str) -> Result<bool> {
    Ok(conn.execute(
        "DELETE FROM plugin_locks WHERE plugin = ?1 AND name = ?2 AND token = ?3",
        params![plugin, name, token],
    )? > 0)
}

/// Appends to a list, trimming the oldest entries beyond `max_len`; returns the new length.
pub fn list_append(
    conn: &Connection,
    plugin: &str,
    key: &str,
    value: &str,
    max_len: Option<u32>,
    ttl_ms: Option<u64>,
    now_ms: i64,
) -> Result<u32> {
    if max_len == Some(0) {
        return Err(Error::invalid("a list's max length must be at least 1"));
    }
    purge_list(conn, plugin, key, now_ms)?;
    conn.execute(
        "INSERT INTO plugin_lists (plugin, key, idx, value, expires_at)
         VALUES (?1, ?2, (SELECT IFNULL(MAX(idx), 0) + 1 FROM plugin_lists WHERE plugin = ?1 AND key = ?2), ?3, ?4)",
        params![plugin, key, value, expiry(now_ms, ttl_ms)],
    )?;
    if let Some(max) = max_len {
        conn.execute(
            "DELETE FROM plugin_lists WHERE plugin = ?1 AND key = ?2 AND idx NOT IN
             (SELECT idx FROM plugin_lists WHERE plugin = ?1 AND key = ?2 ORDER BY idx DESC LIMIT ?3)",
            params![plugin, key, max],
        )?;
    }
    let len: u32 = conn.query_row(
        "SELECT COUNT(*) FROM plugin_lists WHERE plugin = ?1 AND key = ?2",
        params![plugin, key],
        |r| r.get(0),
    )?;
    Ok(len)
}

fn purge_list(conn: &Connection, plugin: &str, key: &str, now_ms: i64) -> Result<()> {
    conn.execute(
        "DELETE FROM plugin_lists WHERE plugin = ?1 AND key = ?2 AND expires_at IS NOT NULL AND expires_at <= ?3",
        params![plugin, key, now_ms],
    )?;
    Ok(())
}

/// The live entries of a list, oldest first.
pub fn list_get(conn: &Connection, plugin: &str, key: &str, now_ms: i64) -> Result<Vec<String>> {
    let mut stmt = conn.prepare_cached(
        "SELECT value FROM plugin_lists WHERE plugin = ?1 AND key = ?2 AND (expires_at IS NULL OR expires_at > ?3)
         ORDER BY idx",
    )?;
    let rows = stmt
        .query_map(params![plugin, key, now_ms], |r| r.get(0))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

/// Removes and returns the oldest live entry (queue pop).
pub fn list_pop_front(
    conn: &Connection,
    plugin: &str,
    key: &str,
    now_ms: i64,
) -> Result<Option<String>> {
    purge_list(conn, plugin, key, now_ms)?;
    let first: Option<(i64, String)> = conn
        .query_row(
            "SELECT idx, value FROM plugin_lists WHERE plugin = ?1 AND key = ?2 ORDER BY idx LIMIT 1",
            params![plugin, key],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    if let Some((idx, _)) = &first {
        conn.execute(
            "DELETE FROM plugin_lists WHERE plugin = ?1 AND key = ?2 AND idx = ?3",
            params![plugin, key, idx],
        )?;
    }
    Ok(first.map(|(_, v)| v))
}

/// Drops every expired row of every plugin (called at start-up).
pub fn purge_expired(conn: &Connection, now_ms: i64) -> Result<usize> {
    let mut n = conn.execute(
        "DELETE FROM plugin_kv WHERE expires_at IS NOT NULL AND expires_at <= ?1",
        [now_ms],
    )?;
    n += conn.execute("DELETE FROM plugin_locks WHERE expires_at <= ?1", [now_ms])?;
    n += conn.execute(
        "DELETE FROM plugin_lists WHERE expires_at IS NOT NULL AND expires_at <= ?1",
        [now_ms],
    )?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::db;

    #[test]
    fn kv_expires_and_is_namespaced() {
        let db = db();
        db.write(|c| kv_set(c, "tg", "offset", "41", None, 0))
            .unwrap();
        db.write(|c| kv_set(c, "tg", "tmp", "x", Some(100), 1_000))
            .unwrap();
        db.read(|c| {
            assert_eq!(kv_get(c, "tg", "offset", 5_000)?.as_deref(), Some("41"));
            assert_eq!(kv_get(c, "other", "offset", 5_000)?, None);
            assert_eq!(kv_get(c, "tg", "tmp", 1_050)?.as_deref(), Some("x"));
            assert_eq!(kv_get(c, "tg", "tmp", 1_100)?, None);
            Ok(())
        })
        .unwrap();
        assert!(
            !db.write(|c| kv_set_if_absent(c, "tg", "offset", "1", None, 0))
                .unwrap()
        );
        assert!(
            db.write(|c| kv_set_if_absent(c, "tg", "tmp", "y", None, 2_000))
                .unwrap(),
            "expired key is free"
        );
        assert!(db.write(|c| kv_delete(c, "tg", "offset")).unwrap());
    }

    #[test]
    fn locks_exclude_until_released_or_expired() {
        let db = db();
        let t1 = db
            .write(|c| lock_acquire(c, "p", "thread-1", 1_000, 0))
            .unwrap()
            .unwrap();
        assert!(
            db.write(|c| lock_acquire(c, "p", "thread-1", 1_000, 10))
                .unwrap()
                .is_none()
        );
        assert!(
            db.write(|c| lock_extend(c, "p", "thread-1", &t1, 1_000, 500))
                .unwrap()
        );
        assert!(
            !db.write(|c| lock_release(c, "p", "thread-1", "wrong-token"))
                .unwrap()
        );
        assert!(db.write(|c| lock_release(c, "p", "thread-1", &t1)).unwrap());
        let t2 = db
            .write(|c| lock_acquire(c, "p", "thread-1", 100, 600))
            .unwrap()
            .unwrap();
        assert!(
            db.write(|c| lock_acquire(c, "p", "thread-1", 100, 700))
                .unwrap()
                .is_some(),
            "expired lock is free"
        );
        assert!(
            !db.write(|c| lock_extend(c, "p", "thread-1", &t2, 100, 800))
                .unwrap()
        );
    }

    #[test]
    fn lists_are_capped_queues() {
        let db = db();
        for v in ["a", "b", "c", "d"] {
            db.write(|c| list_append(c, "p", "q", v, Some(3), None, 0))
                .unwrap();
        }
        assert_eq!(
            db.read(|c| list_get(c, "p", "q", 0)).unwrap(),
            ["b", "c", "d"]
        );
        assert_eq!(
            db.write(|c| list_pop_front(c, "p", "q", 0))
                .unwrap()
                .as_deref(),
            Some("b")
        );
        assert_eq!(
            db.write(|c| list_append(c, "p", "q", "e", None, None, 0))
                .unwrap(),
            3
        );
        assert_eq!(
            db.read(|c| list_get(c, "p", "q", 0)).unwrap(),
            ["c", "d", "e"]
        );
        assert!(
            db.write(|c| list_append(c, "p", "q", "x", Some(0), None, 0))
                .is_err()
        );
    }

    #[test]
    fn subscriptions() {
        let db = db();
        db.write(|c| subscribe(c, "slack", "C1:T1")).unwrap();
        db.write(|c| subscribe(c, "slack", "C1:T1")).unwrap();
        assert!(db.read(|c| is_subscribed(c, "slack", "C1:T1")).unwrap());
        assert!(!db.read(|c| is_subscribed(c, "discord", "C1:T1")).unwrap());
        assert!(db.write(|c| unsubscribe(c, "slack", "C1:T1")).unwrap());
    }
}
