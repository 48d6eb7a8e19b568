//! Install ids, container names and the labels that tie a container to its install.

use std::fmt;
use std::io;
use std::path::Path;

use sha2::{Digest, Sha256};

/// Label carrying the install id. Reaping and listing filter on it, so two installs on one
/// machine never touch each other's containers.
pub const LABEL_INSTALL: &str = "nanoclaw.install";
/// Label carrying the session id (unsanitized, exactly as the host knows it).
pub const LABEL_SESSION: &str = "nanoclaw.session";
/// Label carrying the agent group id.
pub const LABEL_AGENT_GROUP: &str = "nanoclaw.agent-group";

/// Prefix of every container name this host creates.
pub const NAME_PREFIX: &str = "nanoclaw-";

/// Hex digits of the install id.
const INSTALL_ID_LEN: usize = 12;
/// Longest sanitized session id kept verbatim in a container name.
const MAX_SESSION_PART: usize = 64;
/// Hex digits of the disambiguating hash appended to altered session ids.
const SESSION_HASH_LEN: usize = 8;
/// Docker accepts longer names, but nothing we generate comes near this; it bounds what
/// [`ContainerName::parse`] accepts from outside.
const MAX_NAME_LEN: usize = 128;

/// A short stable id for one NanoClaw install on this machine: the first 12 hex digits of
/// the SHA-256 of the canonical data directory path.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InstallId(String);

impl InstallId {
    /// Derives the id from the data directory. The directory must exist: the path is
    /// canonicalized (symlinks resolved) so that two spellings of one directory give one id.
    pub fn from_data_dir(data_dir: &Path) -> io::Result<Self> {
        let canonical = data_dir.canonicalize()?;
        let digest = Sha256::digest(canonical.as_os_str().as_encoded_bytes());
        Ok(Self(hex_prefix(&digest, INSTALL_ID_LEN)))
    }

    /// Accepts an id read back from a label: 12 lowercase hex digits.
    pub fn parse(s: &str) -> Option<Self> {
        let ok = s.len() == INSTALL_ID_LEN
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        ok.then(|| Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for InstallId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A validated Docker container name (`[a-zA-Z0-9][a-zA-Z0-9_.-]+`, at most 128 bytes).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContainerName(String);

impl ContainerName {
    /// The name of the container for one session of one install:
    /// `nanoclaw-<install id>-<sanitized session id>`.
    ///
    /// Sanitizing keeps `[A-Za-z0-9_.-]` and turns anything else into `-`. When that changed
    /// the id, or the id was longer than 64 bytes and got cut, a hash of the original id is
    /// appended so that two distinct session ids never share a name. Returns `None` for an
    /// empty session id.
    pub fn for_session(install: &InstallId, session_id: &str) -> Option<Self> {
        if session_id.is_empty() {
            return None;
        }
        let mut part: String = session_id
            .chars()
            .map(|c| if is_name_char(c) { c } else { '-' })
            .collect();
        let altered = part != session_id || part.len() > MAX_SESSION_PART;
        if altered {
            // Every char is ASCII now, so byte truncation stays on a char boundary.
            part.truncate(MAX_SESSION_PART);
            let digest = Sha256::digest(session_id.as_bytes());
            part.push('-');
            part.push_str(&hex_prefix(&digest, SESSION_HASH_LEN));
        }
        Some(Self(format!("{NAME_PREFIX}{install}-{part}")))
    }

    /// Validates a name that came from elsewhere (a caller, the engine).
    pub fn parse(s: &str) -> Option<Self> {
        let mut chars = s.chars();
        let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
        let ok = first_ok && s.len() >= 2 && s.len() <= MAX_NAME_LEN && chars.all(is_name_char);
        ok.then(|| Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ContainerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')
}

fn hex_prefix(bytes: &[u8], digits: usize) -> String {
    use fmt::Write as _;
    let mut out = String::with_capacity(digits + 1);
    for b in bytes {
        if out.len() >= digits {
            break;
        }
        // Writing into a String cannot fail.
        let _ = write!(out, "{b:02x}");
    }
    out.truncate(digits);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn install() -> InstallId {
        InstallId::parse("0123456789ab").expect("valid id")
    }

    #[test]
    fn install_id_is_stable_and_canonical() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        std::fs::create_dir(&data).expect("mkdir");
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&data, &link).expect("symlink");

        let a = InstallId::from_data_dir(&data).expect("id");
        let b = InstallId::from_data_dir(&link).expect("id via symlink");
        let c = InstallId::from_data_dir(&data.join(".")).expect("id via dot");
        assert_eq!(a, b);
        assert_eq!(a, c);
        assert_eq!(a.as_str().len(), 12);
        assert!(InstallId::parse(a.as_str()).is_some());

        let other = dir.path().join("other");
        std::fs::create_dir(&other).expect("mkdir");
        assert_ne!(a, InstallId::from_data_dir(&other).expect("id"));
    }

    #[test]
    fn install_id_of_missing_dir_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(InstallId::from_data_dir(&dir.path().join("nope")).is_err());
    }

    #[test]
    fn install_id_parse_rejects_garbage() {
        for bad in [
            "",
            "0123456789a",
            "0123456789abc",
            "0123456789AB",
            "01234567890g",
        ] {
            assert!(InstallId::parse(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn plain_session_ids_are_kept() {
        let name =
            ContainerName::for_session(&install(), "sess-1716000000000-abc123").expect("name");
        assert_eq!(
            name.as_str(),
            "nanoclaw-0123456789ab-sess-1716000000000-abc123"
        );
        assert!(ContainerName::parse(name.as_str()).is_some());
    }

    #[test]
    fn altered_session_ids_get_a_hash_and_do_not_collide() {
        let a = ContainerName::for_session(&install(), "a/b").expect("name");
        let b = ContainerName::for_session(&install(), "a:b").expect("name");
        let c = ContainerName::for_session(&install(), "a-b").expect("name");
        assert_ne!(a, b);
        assert_ne!(a, c);
        assert!(a.as_str().starts_with("nanoclaw-0123456789ab-a-b-"));
        for n in [&a, &b, &c] {
            assert!(ContainerName::parse(n.as_str()).is_some(), "{n}");
        }
    }

    #[test]
    fn long_and_unicode_session_ids_are_bounded_and_valid() {
        let long = "x".repeat(500);
        let name = ContainerName::for_session(&install(), &long).expect("name");
        assert!(name.as_str().len() <= 9 + 12 + 1 + 64 + 1 + 8);
        assert!(ContainerName::parse(name.as_str()).is_some());
        let other = ContainerName::for_session(&install(), &"x".repeat(501)).expect("name");
        assert_ne!(name, other);

        let uni = ContainerName::for_session(&install(), "séance ü/../x").expect("name");
        assert!(ContainerName::parse(uni.as_str()).is_some(), "{uni}");
    }

    #[test]
    fn empty_session_id_has_no_name() {
        assert!(ContainerName::for_session(&install(), "").is_none());
    }

    #[test]
    fn parse_rejects_invalid_names() {
        for bad in [
            "",
            "a",
            "-abc",
            ".abc",
            "a b",
            "a/b",
            "a:b",
            "ab\0",
            &"a".repeat(129),
        ] {
            assert!(ContainerName::parse(bad).is_none(), "{bad:?}");
        }
        assert!(ContainerName::parse("ab").is_some());
    }
}
