//! The central database (`<data dir>/v2.db`): opening, pragmas, the migration runner, and the
//! one connection every store works through.

mod migrate;

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{Connection, ErrorCode, OpenFlags};

pub use migrate::{MigrationError, MigrationReport, binary_version, migrate};

use crate::error::{Error, IoContext, Result};

/// The central database. One connection, used under a mutex: every operation is a few
/// short statements, and SQLite serializes writers anyway. WAL lets other processes (the
/// operator CLI while the daemon runs) read and write alongside.
pub struct Db {
    conn: Mutex<Connection>,
    path: PathBuf,
}

impl Db {
    /// Opens (creating if needed) the central database and brings its schema up to date.
    pub fn open(path: &Path) -> Result<Db> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .io_context(|| format!("create directory {}", dir.display()))?;
        }
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| corrupt_or(path, e))?;
        Self::setup(conn, path.to_path_buf())
    }

    /// A private in-memory database with the full schema, for tests and benchmarks.
    pub fn open_in_memory() -> Result<Db> {
        Self::setup(Connection::open_in_memory()?, PathBuf::from(":memory:"))
    }

    fn setup(mut conn: Connection, path: PathBuf) -> Result<Db> {
        configure(&conn).map_err(|e| corrupt_or(&path, e))?;
        migrate(&mut conn).map_err(|e| match e {
            MigrationError::Sqlite(e) => corrupt_or(&path, e),
            other => Error::Migration(other),
        })?;
        Ok(Db {
            conn: Mutex::new(conn),
            path,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves no half-done transaction behind (rusqlite
        // rolls back on drop), so the connection is still usable.
        self.conn
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs read-only work on the connection.
    pub fn read<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        f(&self.lock())
    }

    /// Runs `f` inside one IMMEDIATE transaction, committed if `f` succeeds.
    pub fn write<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        immediate(&self.lock(), f)
    }
}

/// Runs `f` in an IMMEDIATE transaction on `conn`: committed if `f` succeeds, rolled back if
/// it fails or panics. The BEGIN and COMMIT statements are prepared once per connection
/// (rusqlite's `Transaction` parses them on every use, a measurable cost on the hot path).
pub(crate) fn immediate<T>(
    conn: &Connection,
    f: impl FnOnce(&Connection) -> Result<T>,
) -> Result<T> {
    struct Rollback<'a>(Option<&'a Connection>);
    impl Drop for Rollback<'_> {
        fn drop(&mut self) {
            if let Some(conn) = self.0 {
                let _ = conn
                    .prepare_cached("ROLLBACK")
                    .and_then(|mut s| s.execute([]));
            }
        }
    }
    conn.prepare_cached("BEGIN IMMEDIATE")?.execute([])?;
    let mut guard = Rollback(Some(conn));
    let value = f(conn)?;
    conn.prepare_cached("COMMIT")?.execute([])?;
    guard.0 = None;
    Ok(value)
}

/// Statements each connection keeps prepared: the router alone uses a few dozen.
pub(crate) const STATEMENT_CACHE: usize = 64;

/// Pragmas for every central DB connection.
fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(Duration::from_secs(5))?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    // Reading the journal mode is also the first real read of the file: a file that is not a
    // database fails here.
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") && !mode.eq_ignore_ascii_case("memory") {
        tracing::warn!(
            mode,
            "central database is not in WAL mode; concurrent CLI use may block"
        );
    }
    conn.execute_batch("PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;")?;
    Ok(())
}

/// Turns "this is not a database" errors into an actionable message.
pub(crate) fn corrupt_or(path: &Path, e: rusqlite::Error) -> Error {
    match e.sqlite_error_code() {
        Some(ErrorCode::NotADatabase) | Some(ErrorCode::DatabaseCorrupt) => Error::Corrupt {
            path: path.to_path_buf(),
            message: format!(
                "{e}. The file is damaged or is not a NanoClaw database; restore it from a backup, \
                 or move it aside to start with an empty one"
            ),
        },
        _ => Error::Db(e),
    }
}

/// Defines an enum stored as TEXT, parsed once at the edge with a clear error.
macro_rules! text_enum {
    ($(#[$meta:meta])* $name:ident, $what:literal { $($(#[$vmeta:meta])* $variant:ident = $s:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
        pub enum $name { $($(#[$vmeta])* #[serde(rename = $s)] $variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $s),+ }
            }

            pub fn parse(s: &str) -> $crate::error::Result<Self> {
                match s {
                    $($s => Ok($name::$variant),)+
                    _ => Err($crate::error::Error::invalid(format!(
                        "unknown {} {:?} (expected one of: {})",
                        $what, s, [$($s),+].join(", ")
                    ))),
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = $crate::error::Error;
            fn from_str(s: &str) -> $crate::error::Result<Self> {
                Self::parse(s)
            }
        }

        impl rusqlite::types::ToSql for $name {
            fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
                Ok(rusqlite::types::ToSqlOutput::Borrowed(rusqlite::types::ValueRef::Text(
                    self.as_str().as_bytes(),
                )))
            }
        }

        impl rusqlite::types::FromSql for $name {
            fn column_result(value: rusqlite::types::ValueRef<'_>) -> rusqlite::types::FromSqlResult<Self> {
                Self::parse(value.as_str()?).map_err(|e| rusqlite::types::FromSqlError::Other(Box::new(e)))
            }
        }
    };
}
pub(crate) use text_enum;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corrupt_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v2.db");
        std::fs::write(
            &path,
            b"this is definitely not a sqlite database, just some text .........",
        )
        .unwrap();
        let err = Db::open(&path).err().expect("garbage must not open");
        let msg = err.to_string();
        assert!(matches!(err, Error::Corrupt { .. }), "{msg}");
        assert!(msg.contains("restore it from a backup"), "{msg}");
        // The damaged file is left as it was.
        assert!(
            std::fs::read(&path)
                .unwrap()
                .starts_with(b"this is definitely")
        );
    }

    #[test]
    fn opens_in_wal_with_foreign_keys() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("v2.db")).unwrap();
        db.read(|c| {
            let mode: String = c.query_row("PRAGMA journal_mode", [], |r| r.get(0))?;
            let fk: i64 = c.query_row("PRAGMA foreign_keys", [], |r| r.get(0))?;
            assert_eq!(mode, "wal");
            assert_eq!(fk, 1);
            Ok(())
        })
        .unwrap();
    }
}
