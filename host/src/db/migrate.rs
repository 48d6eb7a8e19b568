//! Applies the embedded central migrations in order, each in its own transaction, and records
//! them in `schema_migrations`. Re-running is a no-op; a database from a newer binary is
//! refused before anything is touched.

use nanoclaw_schema::central::{MIGRATIONS, Migration, latest_version};
use rusqlite::{Connection, TransactionBehavior};

#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    #[error(
        "the database has schema version {db_version}, but this nanoclaw only knows up to \
         {binary_version}: it was written by a newer nanoclaw. Upgrade nanoclaw, or restore a \
         backup made with this version"
    )]
    TooNew {
        db_version: u32,
        binary_version: u32,
    },

    #[error(
        "schema migration {version} is recorded as {recorded:?} but this nanoclaw calls it \
         {expected:?}: the database comes from a different build. Restore a matching backup"
    )]
    Mismatch {
        version: u32,
        recorded: String,
        expected: &'static str,
    },

    #[error("migration {version} ({name}) failed: {source}")]
    Failed {
        version: u32,
        name: &'static str,
        #[source]
        source: rusqlite::Error,
    },

    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
}

/// What [`migrate`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationReport {
    /// Schema version before.
    pub from: u32,
    /// Schema version after.
    pub to: u32,
    /// Names of the migrations applied now, in order.
    pub applied: Vec<&'static str>,
}

const BOOKKEEPING: &str = "CREATE TABLE IF NOT EXISTS schema_migrations (
    version     INTEGER PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    applied_at  TEXT NOT NULL
)";

/// Brings the central DB schema up to date.
pub fn migrate(conn: &mut Connection) -> Result<MigrationReport, MigrationError> {
    migrate_with(conn, MIGRATIONS)
}

pub(crate) fn migrate_with(
    conn: &mut Connection,
    migrations: &'static [Migration],
) -> Result<MigrationReport, MigrationError> {
    conn.execute(BOOKKEEPING, [])?;
    let known = migrations.last().map_or(0, |m| m.version);
    let from = check_recorded(conn, migrations, known)?;
    let mut applied = Vec::new();
    for m in migrations.iter().filter(|m| m.version > from) {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        // Another process may have applied it while we waited for the write lock.
        let done: bool = tx.query_row(
            "SELECT EXISTS(SELECT 1 FROM schema_migrations WHERE version = ?1)",
            [m.version],
            |r| r.get(0),
        )?;
        if done {
            continue;
        }
        tx.execute_batch(m.sql)
            .map_err(|source| MigrationError::Failed {
                version: m.version,
                name: m.name,
                source,
            })?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?1, ?2, ?3)",
            rusqlite::params![m.version, m.name, nanoclaw_schema::time::now()],
        )?;
        tx.commit()?;
        tracing::info!(version = m.version, name = m.name, "applied migration");
        applied.push(m.name);
    }
    let to = if applied.is_empty() {
        from
    } else {
        current_version(conn)?
    };
    Ok(MigrationReport { from, to, applied })
}

/// Checks what the DB already has against what this build knows; returns its version.
fn check_recorded(
    conn: &Connection,
    migrations: &'static [Migration],
    known: u32,
) -> Result<u32, MigrationError> {
    let mut stmt = conn.prepare("SELECT version, name FROM schema_migrations ORDER BY version")?;
    let rows = stmt
        .query_map([], |r| Ok((r.get::<_, u32>(0)?, r.get::<_, String>(1)?)))?
        .collect::<Result<Vec<_>, _>>()?;
    let db_version = rows.last().map_or(0, |(v, _)| *v);
    if db_version > known {
        return Err(MigrationError::TooNew {
            db_version,
            binary_version: known,
        });
    }
    for (version, recorded) in rows {
        let expected = migrations[(version - 1) as usize].name;
        if recorded != expected {
            return Err(MigrationError::Mismatch {
                version,
                recorded,
                expected,
            });
        }
    }
    Ok(db_version)
}

fn current_version(conn: &Connection) -> Result<u32, MigrationError> {
    Ok(conn.query_row(
        "SELECT IFNULL(MAX(version), 0) FROM schema_migrations",
        [],
        |r| r.get(0),
    )?)
}

/// The schema version this binary migrates to.
pub fn binary_version() -> u32 {
    latest_version()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table_exists(conn: &Connection, name: &str) -> bool {
        conn.query_row(
            "SELECT EXISTS(SELECT 1 FROM sqlite_master WHERE name = ?1)",
            [name],
            |r| r.get(0),
        )
        .unwrap()
    }

    #[test]
    fn fresh_db_gets_every_migration_once() {
        let mut conn = Connection::open_in_memory().unwrap();
        let first = migrate(&mut conn).unwrap();
        assert_eq!(first.from, 0);
        assert_eq!(first.to, binary_version());
        assert_eq!(first.applied.len(), MIGRATIONS.len());
        for t in [
            "agent_groups",
            "messaging_groups",
            "user_roles",
            "agent_destinations",
            "plugin_kv",
        ] {
            assert!(table_exists(&conn, t), "{t}");
        }
        // Re-running is a no-op.
        let second = migrate(&mut conn).unwrap();
        assert!(second.applied.is_empty());
        assert_eq!(second.from, second.to);
        let n: u32 = conn
            .query_row("SELECT COUNT(*) FROM schema_migrations", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n as usize, MIGRATIONS.len());
    }

    #[test]
    fn later_migrations_apply_in_order_on_an_older_db() {
        static V1: &[Migration] = &[Migration {
            version: 1,
            name: "one",
            sql: "CREATE TABLE a (x);",
        }];
        static V2: &[Migration] = &[
            Migration {
                version: 1,
                name: "one",
                sql: "CREATE TABLE a (x);",
            },
            Migration {
                version: 2,
                name: "two",
                sql: "ALTER TABLE a ADD COLUMN y; CREATE TABLE b (z);",
            },
        ];
        let mut conn = Connection::open_in_memory().unwrap();
        migrate_with(&mut conn, V1).unwrap();
        let report = migrate_with(&mut conn, V2).unwrap();
        assert_eq!(
            report,
            MigrationReport {
                from: 1,
                to: 2,
                applied: vec!["two"]
            }
        );
        assert!(table_exists(&conn, "b"));
    }

    #[test]
    fn newer_db_is_refused_untouched() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn).unwrap();
        let future = binary_version() + 1;
        conn.execute(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?1, 'from-the-future', 'x')",
            [future],
        )
        .unwrap();
        let err = migrate(&mut conn).unwrap_err();
        assert!(matches!(err, MigrationError::TooNew { db_version, .. } if db_version == future));
        assert!(err.to_string().contains("newer nanoclaw"), "{err}");
    }

    #[test]
    fn renamed_migration_is_refused() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn).unwrap();
        conn.execute(
            "UPDATE schema_migrations SET name = 'something-else' WHERE version = 1",
            [],
        )
        .unwrap();
        assert!(matches!(
            migrate(&mut conn).unwrap_err(),
            MigrationError::Mismatch { version: 1, .. }
        ));
    }

    #[test]
    fn failed_migration_rolls_back_whole() {
        static BAD: &[Migration] = &[
            Migration {
                version: 1,
                name: "one",
                sql: "CREATE TABLE a (x);",
            },
            Migration {
                version: 2,
                name: "broken",
                sql: "CREATE TABLE half (x); THIS IS NOT SQL;",
            },
        ];
        let mut conn = Connection::open_in_memory().unwrap();
        let err = migrate_with(&mut conn, BAD).unwrap_err();
        assert!(
            matches!(err, MigrationError::Failed { version: 2, .. }),
            "{err}"
        );
        assert!(
            !table_exists(&conn, "half"),
            "a failed migration must leave nothing behind"
        );
        assert_eq!(current_version(&conn).unwrap(), 1);
    }
}
