//! The data contract of NanoClaw.
//!
//! - [`central`]: the central database migrations (`migrations/central/NNN_name.sql`), embedded
//!   in order. The host's migration runner applies them.
//! - [`session`]: the two per-session databases the host and the agent-runner share through the
//!   session directory: their schemas, file layout, seq parity rules and the JSON content of
//!   each row kind. This module is the only thing the agent-runner shares with the host.

pub mod central {
    /// One central DB migration, from `migrations/central/NNN_name.sql`.
    #[derive(Debug, Clone, Copy)]
    pub struct Migration {
        pub version: u32,
        pub name: &'static str,
        pub sql: &'static str,
    }

    /// Every migration this build knows, in application order (versions 1, 2, 3, ...).
    pub static MIGRATIONS: &[Migration] =
        include!(concat!(env!("OUT_DIR"), "/central_migrations.rs"));

    /// The schema version a fully migrated DB of this build has.
    pub fn latest_version() -> u32 {
        MIGRATIONS.last().map_or(0, |m| m.version)
    }
}

pub mod session;
pub mod time;

#[cfg(test)]
mod tests {
    use super::central::*;

    #[test]
    fn migrations_are_numbered_from_one() {
        assert!(!MIGRATIONS.is_empty());
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version as usize, i + 1);
            assert!(!m.sql.trim().is_empty(), "{} is empty", m.name);
        }
        assert_eq!(latest_version() as usize, MIGRATIONS.len());
    }
}
