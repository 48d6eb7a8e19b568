//! The host library's error type. The binary wraps it with `anyhow` context.

use std::path::PathBuf;

use crate::db::MigrationError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Input that does not make sense; the message says what is wrong and how to fix it.
    #[error("{0}")]
    Invalid(String),

    #[error("{what} {id:?} not found")]
    NotFound { what: &'static str, id: String },

    /// The request clashes with existing state (a duplicate, a rule of the model).
    #[error("{0}")]
    Conflict(String),

    #[error(transparent)]
    Migration(#[from] MigrationError),

    #[error("database {path}: {message}")]
    Corrupt { path: PathBuf, message: String },

    #[error("database error: {0}")]
    Db(#[from] rusqlite::Error),

    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },

    #[error("invalid JSON in {context}: {source}")]
    Json {
        context: String,
        #[source]
        source: serde_json::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn invalid(msg: impl Into<String>) -> Self {
        Error::Invalid(msg.into())
    }

    pub fn not_found(what: &'static str, id: impl Into<String>) -> Self {
        Error::NotFound {
            what,
            id: id.into(),
        }
    }

    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

/// Attach a description of what was being done to an I/O error.
pub(crate) trait IoContext<T> {
    fn io_context(self, context: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn io_context(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::Io {
            context: context(),
            source,
        })
    }
}
