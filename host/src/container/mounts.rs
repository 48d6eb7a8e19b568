//! The operator's mount allowlist: which extra host paths an agent container may see.
//!
//! The file (by convention `<data dir>/mount-allowlist.toml`) looks like this:
//!
//! ```toml
//! blocked = ["secrets", "wallet"]      # merged with DEFAULT_BLOCKED, which always applies
//!
//! [[allow]]
//! path = "~/projects"                  # `~` and `~/…` expand to $HOME
//! read_write = true
//! description = "code the agents may edit"
//! ```
//!
//! A request is accepted as `/workspace/extra/<name>` only if every rule holds:
//!
//! 1. an allowlist file exists (a missing file blocks every extra mount);
//! 2. the container-side name (default: the host path's last component) is non-empty, not
//!    `.`, contains no `..`, no `:`, no `/` or `\`, no control characters;
//! 3. the host path is absolute (or `~/…`), exists, and is canonicalized (symlinks resolved)
//!    before any other check;
//! 4. no component of the canonical path contains a blocked pattern (case-insensitive);
//! 5. the canonical path neither lies inside nor contains a protected path (the directory
//!    holding the allowlist — the data dir — and whatever the host adds);
//! 6. it lies under an allowed root, compared component-wise on canonical paths
//!    (`/srv/data2` is not under `/srv/data`); the most specific matching root decides;
//! 7. a directory whose direct entries include a blocked name is refused, since mounting it
//!    would expose that entry (deeper levels are not scanned);
//! 8. no two accepted mounts share a container-side name;
//! 9. it is read-write only when both requested and allowed by the deciding root; a
//!    read-write request under a read-only root is accepted read-only and flagged.

use std::collections::HashSet;
use std::fmt;
use std::io;
use std::path::{Component, Path, PathBuf};

use serde::Deserialize;

/// Patterns that are always blocked, whatever the file says.
pub const DEFAULT_BLOCKED: &[&str] = &[
    ".ssh",
    ".gnupg",
    ".gpg",
    ".aws",
    ".azure",
    ".gcloud",
    ".kube",
    ".docker",
    "credentials",
    ".env",
    ".netrc",
    ".npmrc",
    ".pypirc",
    "id_rsa",
    "id_ed25519",
    "private_key",
    ".secret",
];

/// File name of the allowlist inside the data directory.
pub const ALLOWLIST_FILE: &str = "mount-allowlist.toml";

/// Where accepted extra mounts appear inside the container.
pub const EXTRA_MOUNT_ROOT: &str = "/workspace/extra";

const MAX_NAME_LEN: usize = 255;

#[derive(Debug, thiserror::Error)]
pub enum AllowlistError {
    #[error("cannot read mount allowlist {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("mount allowlist {path} is invalid: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: Box<toml::de::Error>,
    },
    #[error("mount allowlist {path} is writable by every user; fix it with `chmod o-w {path}`")]
    WorldWritable { path: PathBuf },
    #[error("mount allowlist {path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AllowlistFile {
    #[serde(default)]
    blocked: Vec<String>,
    #[serde(default)]
    allow: Vec<AllowEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AllowEntry {
    path: String,
    #[serde(default)]
    read_write: bool,
    #[serde(default)]
    description: Option<String>,
}

/// A root under which extra mounts may come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AllowedRoot {
    path: PathBuf,
    read_write: bool,
    description: Option<String>,
}

impl AllowedRoot {
    /// Canonical path of the root.
    pub fn path(&self) -> &Path {
        &self.path
    }
    pub fn read_write(&self) -> bool {
        self.read_write
    }
    pub fn description(&self) -> Option<&str> {
        self.description.as_deref()
    }
}

/// The loaded allowlist. Cheap to rebuild: the host may reload it on every spawn, so edits
/// take effect without a restart.
#[derive(Clone, Debug)]
pub struct MountAllowlist {
    /// `None` when there is no allowlist file: every request is refused.
    source: Option<PathBuf>,
    roots: Vec<AllowedRoot>,
    /// Roots named in the file that do not exist (they allow nothing); kept for diagnostics.
    missing_roots: Vec<PathBuf>,
    /// Lowercased patterns, defaults first.
    blocked: Vec<String>,
    /// Canonical paths that must never be mounted, nor any of their ancestors.
    protected: Vec<PathBuf>,
    /// Expansion of `~` in requested host paths.
    home: Option<PathBuf>,
}

impl MountAllowlist {
    /// The allowlist used when there is no file: it refuses everything.
    pub fn deny_all() -> Self {
        Self {
            source: None,
            roots: Vec::new(),
            missing_roots: Vec::new(),
            blocked: default_blocked(),
            protected: Vec::new(),
            home: None,
        }
    }

    /// Loads the allowlist from `path`, expanding `~` with `$HOME`.
    ///
    /// A missing file gives [`MountAllowlist::deny_all`]. Any other problem is an error; a
    /// caller that goes on must then treat extra mounts as refused. The directory holding
    /// the file is protected: it (typically the data dir) can never be mounted.
    pub fn load(path: &Path) -> Result<Self, AllowlistError> {
        let home = std::env::var_os("HOME").map(PathBuf::from);
        Self::load_with_home(path, home.as_deref())
    }

    /// [`MountAllowlist::load`] with an explicit home directory for `~` expansion.
    pub fn load_with_home(path: &Path, home: Option<&Path>) -> Result<Self, AllowlistError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Self::deny_all()),
            Err(source) => {
                return Err(AllowlistError::Read {
                    path: path.to_owned(),
                    source,
                });
            }
        };
        check_not_world_writable(path)?;
        let mut list = Self::parse(&text, path, home)?;
        if let Some(dir) = path.parent() {
            let dir = if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            };
            list = list.with_protected([dir.to_owned()]);
        }
        Ok(list)
    }

    /// Parses allowlist text. `origin` names the file in errors and in [`Self::source`];
    /// `home` expands `~` in roots and in requested host paths.
    pub fn parse(text: &str, origin: &Path, home: Option<&Path>) -> Result<Self, AllowlistError> {
        let file: AllowlistFile = toml::from_str(text).map_err(|e| AllowlistError::Parse {
            path: origin.to_owned(),
            source: Box::new(e),
        })?;
        let invalid = |reason: String| AllowlistError::Invalid {
            path: origin.to_owned(),
            reason,
        };

        let mut blocked = default_blocked();
        for pattern in file.blocked {
            if pattern.is_empty() || pattern.contains(['/', '\\', '\0']) {
                return Err(invalid(format!(
                    "blocked pattern {pattern:?} must be non-empty and contain no path separator"
                )));
            }
            let pattern = pattern.to_lowercase();
            if !blocked.contains(&pattern) {
                blocked.push(pattern);
            }
        }

        let mut roots = Vec::new();
        let mut missing_roots = Vec::new();
        for entry in file.allow {
            let expanded = expand_home(Path::new(&entry.path), home).ok_or_else(|| {
                invalid(format!(
                    "allowed path {:?} must be absolute or start with `~/` (and $HOME must be set)",
                    entry.path
                ))
            })?;
            match expanded.canonicalize() {
                Ok(path) => roots.push(AllowedRoot {
                    path,
                    read_write: entry.read_write,
                    description: entry.description,
                }),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    tracing::warn!(root = %expanded.display(), "allowed mount root does not exist; it allows nothing");
                    missing_roots.push(expanded);
                }
                Err(e) => {
                    return Err(invalid(format!(
                        "cannot resolve allowed path {}: {e}",
                        expanded.display()
                    )));
                }
            }
        }

        Ok(Self {
            source: Some(origin.to_owned()),
            roots,
            missing_roots,
            blocked,
            protected: Vec::new(),
            home: home.map(Path::to_owned),
        })
    }

    /// Adds paths that must never be mounted, nor any directory containing them (the data
    /// dir, the host's config dir, ...). Paths that exist are canonicalized.
    pub fn with_protected(mut self, paths: impl IntoIterator<Item = PathBuf>) -> Self {
        for p in paths {
            let p = p.canonicalize().unwrap_or(p);
            if !self.protected.contains(&p) {
                self.protected.push(p);
            }
        }
        self
    }

    /// The file this allowlist came from; `None` for [`MountAllowlist::deny_all`].
    pub fn source(&self) -> Option<&Path> {
        self.source.as_deref()
    }
    pub fn roots(&self) -> &[AllowedRoot] {
        &self.roots
    }
    /// Roots named in the file that did not exist when it was loaded.
    pub fn missing_roots(&self) -> &[PathBuf] {
        &self.missing_roots
    }
    /// All blocked patterns in effect (lowercase).
    pub fn blocked_patterns(&self) -> &[String] {
        &self.blocked
    }

    /// Checks each request and sorts them into accepted and rejected, in request order.
    pub fn check(&self, requests: &[MountRequest]) -> MountCheck {
        let mut check = MountCheck::default();
        let mut names = HashSet::new();
        for request in requests {
            match self.check_one(request, &names) {
                Ok(mount) => {
                    names.insert(mount.name.clone());
                    check.accepted.push(mount);
                }
                Err(reason) => {
                    tracing::warn!(host_path = %request.host_path.display(), %reason, "extra mount rejected");
                    check.rejected.push(RejectedMount {
                        request: request.clone(),
                        reason,
                    });
                }
            }
        }
        check
    }

    fn check_one(
        &self,
        request: &MountRequest,
        taken: &HashSet<String>,
    ) -> Result<AllowedMount, MountRejection> {
        if self.source.is_none() {
            return Err(MountRejection::NoAllowlist);
        }

        let name = match &request.container_name {
            Some(name) => name.clone(),
            None => request
                .host_path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        };
        validate_name(&name)?;

        let requested = expand_home(&request.host_path, self.home.as_deref())
            .ok_or(MountRejection::RelativeHostPath)?;
        let real = requested.canonicalize().map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                MountRejection::HostPathMissing
            } else {
                MountRejection::Unreadable(e.to_string())
            }
        })?;

        for component in real.components() {
            if let Component::Normal(c) = component {
                let c = c.to_string_lossy();
                if let Some(pattern) = self.blocked_match(&c) {
                    return Err(MountRejection::Blocked {
                        component: c.into_owned(),
                        pattern: pattern.to_owned(),
                    });
                }
            }
        }

        for protected in &self.protected {
            if real.starts_with(protected) || protected.starts_with(&real) {
                return Err(MountRejection::Protected {
                    protected: protected.clone(),
                });
            }
        }

        let root = self
            .roots
            .iter()
            .filter(|root| real.starts_with(&root.path))
            .max_by_key(|root| root.path.components().count())
            .ok_or_else(|| MountRejection::NotUnderAllowedRoot { real: real.clone() })?;

        if real.is_dir() {
            let entries =
                std::fs::read_dir(&real).map_err(|e| MountRejection::Unreadable(e.to_string()))?;
            for entry in entries {
                let entry = entry.map_err(|e| MountRejection::Unreadable(e.to_string()))?;
                let entry_name = entry.file_name();
                let entry_name = entry_name.to_string_lossy();
                if let Some(pattern) = self.blocked_match(&entry_name) {
                    return Err(MountRejection::ContainsBlocked {
                        entry: entry_name.into_owned(),
                        pattern: pattern.to_owned(),
                    });
                }
            }
        }

        if taken.contains(&name) {
            return Err(MountRejection::DuplicateName(name));
        }

        let read_write = request.read_write && root.read_write;
        Ok(AllowedMount {
            host_path: real,
            name,
            read_write,
            downgraded: request.read_write && !read_write,
        })
    }

    fn blocked_match(&self, component: &str) -> Option<&str> {
        let lower = component.to_lowercase();
        self.blocked
            .iter()
            .find(|p| lower.contains(p.as_str()))
            .map(String::as_str)
    }
}

/// One extra mount asked for (by the agent group's config).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountRequest {
    /// Absolute host path, or `~/…`.
    pub host_path: PathBuf,
    /// Name under `/workspace/extra/`; defaults to the host path's last component.
    pub container_name: Option<String>,
    /// Asks for read-write; granted only if the allowlist root allows it.
    pub read_write: bool,
}

/// A mount that passed every rule. Only [`MountAllowlist::check`] makes these, so a
/// [`ContainerSpec`](super::ContainerSpec) can only carry validated extra mounts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AllowedMount {
    host_path: PathBuf,
    name: String,
    read_write: bool,
    downgraded: bool,
}

impl AllowedMount {
    /// Canonical host path.
    pub fn host_path(&self) -> &Path {
        &self.host_path
    }
    /// Name under `/workspace/extra/`.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// Full container-side path.
    pub fn container_path(&self) -> String {
        format!("{EXTRA_MOUNT_ROOT}/{}", self.name)
    }
    pub fn read_write(&self) -> bool {
        self.read_write
    }
    /// True when read-write was asked for but the root only allows read-only.
    pub fn downgraded_to_read_only(&self) -> bool {
        self.downgraded
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RejectedMount {
    pub request: MountRequest,
    pub reason: MountRejection,
}

/// Why a mount request was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MountRejection {
    NoAllowlist,
    InvalidName { name: String, why: &'static str },
    RelativeHostPath,
    HostPathMissing,
    Unreadable(String),
    Blocked { component: String, pattern: String },
    Protected { protected: PathBuf },
    NotUnderAllowedRoot { real: PathBuf },
    ContainsBlocked { entry: String, pattern: String },
    DuplicateName(String),
}

impl fmt::Display for MountRejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoAllowlist => write!(
                f,
                "no mount allowlist file exists, so extra mounts are disabled (create {ALLOWLIST_FILE} in the data dir)"
            ),
            Self::InvalidName { name, why } => write!(f, "container-side name {name:?} {why}"),
            Self::RelativeHostPath => write!(f, "host path must be absolute or start with `~/`"),
            Self::HostPathMissing => write!(f, "host path does not exist"),
            Self::Unreadable(e) => write!(f, "host path cannot be inspected: {e}"),
            Self::Blocked { component, pattern } => write!(
                f,
                "path component {component:?} matches blocked pattern {pattern:?}"
            ),
            Self::Protected { protected } => write!(
                f,
                "path overlaps {}, which is never mounted",
                protected.display()
            ),
            Self::NotUnderAllowedRoot { real } => write!(
                f,
                "{} (after resolving symlinks) is not under any allowed root",
                real.display()
            ),
            Self::ContainsBlocked { entry, pattern } => write!(
                f,
                "directory contains {entry:?}, which matches blocked pattern {pattern:?}"
            ),
            Self::DuplicateName(name) => {
                write!(
                    f,
                    "container-side name {name:?} is already used by another mount"
                )
            }
        }
    }
}

/// Result of [`MountAllowlist::check`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MountCheck {
    pub accepted: Vec<AllowedMount>,
    pub rejected: Vec<RejectedMount>,
}

fn default_blocked() -> Vec<String> {
    DEFAULT_BLOCKED.iter().map(|p| (*p).to_owned()).collect()
}

fn validate_name(name: &str) -> Result<(), MountRejection> {
    let why = if name.is_empty() {
        Some("is empty")
    } else if name == "." {
        Some("is `.`")
    } else if name.contains("..") {
        Some("contains `..`")
    } else if name.contains(':') {
        Some("contains `:`")
    } else if name.contains(['/', '\\']) {
        Some("contains a path separator")
    } else if name.chars().any(char::is_control) {
        Some("contains a control character")
    } else if name.len() > MAX_NAME_LEN {
        Some("is longer than 255 bytes")
    } else {
        None
    };
    match why {
        Some(why) => Err(MountRejection::InvalidName {
            name: name.to_owned(),
            why,
        }),
        None => Ok(()),
    }
}

/// `~` and `~/x` become `$HOME` and `$HOME/x`; other paths must be absolute.
fn expand_home(path: &Path, home: Option<&Path>) -> Option<PathBuf> {
    let path = match path.strip_prefix("~") {
        Ok(rest) if rest.as_os_str().is_empty() => home?.to_owned(),
        Ok(rest) => home?.join(rest),
        Err(_) => path.to_owned(),
    };
    path.is_absolute().then_some(path)
}

#[cfg(unix)]
fn check_not_world_writable(path: &Path) -> Result<(), AllowlistError> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(|source| AllowlistError::Read {
        path: path.to_owned(),
        source,
    })?;
    if meta.permissions().mode() & 0o002 != 0 {
        return Err(AllowlistError::WorldWritable {
            path: path.to_owned(),
        });
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_not_world_writable(_path: &Path) -> Result<(), AllowlistError> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::symlink;

    use super::*;

    struct Fixture {
        _dir: tempfile::TempDir,
        /// Canonical temp root.
        root: PathBuf,
    }

    impl Fixture {
        fn new() -> Self {
            let dir = tempfile::tempdir().expect("tempdir");
            let root = dir.path().canonicalize().expect("canonical tempdir");
            for d in ["data", "allowed/ro", "allowed/rw", "outside", "home"] {
                fs::create_dir_all(root.join(d)).expect("mkdir");
            }
            Self { _dir: dir, root }
        }

        fn p(&self, rel: &str) -> PathBuf {
            self.root.join(rel)
        }

        fn mkdir(&self, rel: &str) -> PathBuf {
            let p = self.p(rel);
            fs::create_dir_all(&p).expect("mkdir");
            p
        }

        fn write_allowlist(&self, text: &str) -> PathBuf {
            let path = self.p("data").join(ALLOWLIST_FILE);
            fs::write(&path, text).expect("write allowlist");
            path
        }

        fn standard(&self) -> MountAllowlist {
            let text = format!(
                r#"
blocked = ["Wallet"]

[[allow]]
path = "{ro}"
description = "read-only stuff"

[[allow]]
path = "{rw}"
read_write = true
"#,
                ro = self.p("allowed/ro").display(),
                rw = self.p("allowed/rw").display(),
            );
            let path = self.write_allowlist(&text);
            MountAllowlist::load_with_home(&path, Some(&self.p("home"))).expect("load")
        }
    }

    fn req(path: &Path) -> MountRequest {
        MountRequest {
            host_path: path.to_owned(),
            container_name: None,
            read_write: false,
        }
    }

    fn rejection(list: &MountAllowlist, request: MountRequest) -> MountRejection {
        let check = list.check(std::slice::from_ref(&request));
        assert!(
            check.accepted.is_empty(),
            "unexpectedly accepted: {check:?}"
        );
        check
            .rejected
            .into_iter()
            .next()
            .expect("one rejection")
            .reason
    }

    fn accepted(list: &MountAllowlist, request: MountRequest) -> AllowedMount {
        let check = list.check(std::slice::from_ref(&request));
        assert!(
            check.rejected.is_empty(),
            "unexpectedly rejected: {check:?}"
        );
        check.accepted.into_iter().next().expect("one accepted")
    }

    #[test]
    fn missing_file_blocks_everything() {
        let fx = Fixture::new();
        let list =
            MountAllowlist::load_with_home(&fx.p("data/nope.toml"), None).expect("missing is ok");
        assert!(list.source().is_none());
        let dir = fx.mkdir("allowed/ro/project");
        assert_eq!(rejection(&list, req(&dir)), MountRejection::NoAllowlist);
        assert!(
            MountRejection::NoAllowlist
                .to_string()
                .contains(ALLOWLIST_FILE)
        );
    }

    #[test]
    fn accepts_a_plain_dir_read_only_with_basename() {
        let fx = Fixture::new();
        let list = fx.standard();
        let dir = fx.mkdir("allowed/ro/project");
        let m = accepted(&list, req(&dir));
        assert_eq!(m.name(), "project");
        assert_eq!(m.container_path(), "/workspace/extra/project");
        assert_eq!(m.host_path(), dir);
        assert!(!m.read_write());
        assert!(!m.downgraded_to_read_only());
    }

    #[test]
    fn read_write_needs_request_and_root() {
        let fx = Fixture::new();
        let list = fx.standard();
        let rw_dir = fx.mkdir("allowed/rw/scratch");
        let ro_dir = fx.mkdir("allowed/ro/docs");

        let m = accepted(
            &list,
            MountRequest {
                read_write: true,
                ..req(&rw_dir)
            },
        );
        assert!(m.read_write());

        // Allowed but not requested: read-only.
        assert!(!accepted(&list, req(&rw_dir)).read_write());

        // Requested but the root is read-only: accepted read-only, flagged.
        let m = accepted(
            &list,
            MountRequest {
                read_write: true,
                ..req(&ro_dir)
            },
        );
        assert!(!m.read_write());
        assert!(m.downgraded_to_read_only());
    }

    #[test]
    fn most_specific_root_decides_read_write() {
        let fx = Fixture::new();
        let inner = fx.mkdir("allowed/rw/frozen");
        let text = format!(
            "[[allow]]\npath = \"{}\"\nread_write = true\n[[allow]]\npath = \"{}\"\nread_write = false\n",
            fx.p("allowed/rw").display(),
            inner.display()
        );
        let path = fx.write_allowlist(&text);
        let list = MountAllowlist::load_with_home(&path, None).expect("load");
        let target = fx.mkdir("allowed/rw/frozen/x");
        let m = accepted(
            &list,
            MountRequest {
                read_write: true,
                ..req(&target)
            },
        );
        assert!(!m.read_write());
    }

    #[test]
    fn container_name_rules() {
        let fx = Fixture::new();
        let list = fx.standard();
        let dir = fx.mkdir("allowed/ro/project");
        for (name, why) in [
            ("", "is empty"),
            (".", "is `.`"),
            ("..", "contains `..`"),
            ("a..b", "contains `..`"),
            ("a:ro", "contains `:`"),
            ("a/b", "contains a path separator"),
            ("/abs", "contains a path separator"),
            ("a\\b", "contains a path separator"),
            ("a\nb", "contains a control character"),
        ] {
            let r = rejection(
                &list,
                MountRequest {
                    container_name: Some(name.to_owned()),
                    ..req(&dir)
                },
            );
            assert_eq!(
                r,
                MountRejection::InvalidName {
                    name: name.to_owned(),
                    why
                },
                "{name:?}"
            );
        }
        let long = "n".repeat(256);
        assert!(matches!(
            rejection(
                &list,
                MountRequest {
                    container_name: Some(long),
                    ..req(&dir)
                }
            ),
            MountRejection::InvalidName { .. }
        ));
        let m = accepted(
            &list,
            MountRequest {
                container_name: Some("renamed.v2".to_owned()),
                ..req(&dir)
            },
        );
        assert_eq!(m.name(), "renamed.v2");
    }

    #[test]
    fn root_path_has_no_default_name() {
        let fx = Fixture::new();
        let list = fx.standard();
        assert!(matches!(
            rejection(&list, req(Path::new("/"))),
            MountRejection::InvalidName { .. }
        ));
    }

    #[test]
    fn host_path_must_be_absolute_and_exist() {
        let fx = Fixture::new();
        let list = fx.standard();
        assert_eq!(
            rejection(&list, req(Path::new("relative/dir"))),
            MountRejection::RelativeHostPath
        );
        assert_eq!(
            rejection(&list, req(&fx.p("allowed/ro/ghost"))),
            MountRejection::HostPathMissing
        );
    }

    #[test]
    fn blocked_patterns_match_components_case_insensitively() {
        let fx = Fixture::new();
        let list = fx.standard();
        for (rel, pattern) in [
            ("allowed/ro/.ssh", ".ssh"),
            ("allowed/ro/.SSH", ".ssh"),
            ("allowed/ro/my.env.local", ".env"),
            ("allowed/ro/gcp-credentials", "credentials"),
            ("allowed/ro/.aws/sub", ".aws"),
            ("allowed/ro/my-wallet", "wallet"),
        ] {
            let dir = fx.mkdir(rel);
            match rejection(&list, req(&dir)) {
                MountRejection::Blocked { pattern: p, .. } => assert_eq!(p, pattern, "{rel}"),
                other => panic!("{rel}: expected Blocked, got {other:?}"),
            }
        }
    }

    #[test]
    fn patterns_with_separators_are_refused() {
        let fx = Fixture::new();
        let text = format!(
            "blocked = [\"v/x\"]\n[[allow]]\npath = \"{}\"\n",
            fx.p("allowed").display()
        );
        let path = fx.write_allowlist(&text);
        let err = MountAllowlist::load_with_home(&path, None).expect_err("separator in pattern");
        assert!(err.to_string().contains("separator"), "{err}");
    }

    #[test]
    fn symlink_escaping_the_root_is_rejected() {
        let fx = Fixture::new();
        let list = fx.standard();
        let target = fx.mkdir("outside/secret-stuff");
        let link = fx.p("allowed/ro/innocent");
        symlink(&target, &link).expect("symlink");
        assert_eq!(
            rejection(&list, req(&link)),
            MountRejection::NotUnderAllowedRoot { real: target }
        );
    }

    #[test]
    fn symlink_to_blocked_dir_is_rejected_on_the_real_path() {
        let fx = Fixture::new();
        let list = fx.standard();
        let target = fx.mkdir("allowed/ro/.gnupg");
        let link = fx.p("allowed/ro/keys");
        symlink(&target, &link).expect("symlink");
        assert!(matches!(
            rejection(&list, req(&link)),
            MountRejection::Blocked { pattern, .. } if pattern == ".gnupg"
        ));
    }

    #[test]
    fn symlinked_allowed_root_is_compared_by_real_path() {
        let fx = Fixture::new();
        let real_root = fx.mkdir("outside/real-root");
        let link_root = fx.p("allowed/link-root");
        symlink(&real_root, &link_root).expect("symlink");
        let text = format!("[[allow]]\npath = \"{}\"\n", link_root.display());
        let path = fx.write_allowlist(&text);
        let list = MountAllowlist::load_with_home(&path, None).expect("load");
        assert_eq!(list.roots()[0].path(), real_root);
        let inside = fx.mkdir("outside/real-root/proj");
        accepted(&list, req(&inside));
        // Requested through the link: same real path, same answer.
        accepted(&list, req(&link_root.join("proj")));
    }

    #[test]
    fn sibling_with_common_prefix_is_not_under_root() {
        let fx = Fixture::new();
        let list = fx.standard();
        let sibling = fx.mkdir("allowed/ro2");
        assert!(matches!(
            rejection(&list, req(&sibling)),
            MountRejection::NotUnderAllowedRoot { .. }
        ));
    }

    #[test]
    fn the_data_dir_and_its_ancestors_are_protected() {
        let fx = Fixture::new();
        let text = format!(
            "[[allow]]\npath = \"{}\"\nread_write = true\n",
            fx.root.display()
        );
        let path = fx.write_allowlist(&text);
        let list = MountAllowlist::load_with_home(&path, None).expect("load");
        let data = fx.p("data");
        let protected = MountRejection::Protected {
            protected: data.clone(),
        };
        assert_eq!(rejection(&list, req(&data)), protected);
        assert_eq!(rejection(&list, req(&fx.root)), protected);
        let inside = fx.mkdir("data/sessions");
        assert_eq!(rejection(&list, req(&inside)), protected);

        let extra = fx.mkdir("outside/config");
        let list = list.with_protected([extra.clone()]);
        assert_eq!(
            rejection(&list, req(&extra)),
            MountRejection::Protected { protected: extra }
        );
        accepted(&list, req(&fx.mkdir("allowed/rw/fine")));
    }

    #[test]
    fn directory_exposing_a_blocked_entry_is_rejected() {
        let fx = Fixture::new();
        let list = fx.standard();
        let home_like = fx.mkdir("allowed/ro/user");
        fs::create_dir(home_like.join(".ssh")).expect("mkdir");
        assert_eq!(
            rejection(&list, req(&home_like)),
            MountRejection::ContainsBlocked {
                entry: ".ssh".to_owned(),
                pattern: ".ssh".to_owned()
            }
        );
        let project = fx.mkdir("allowed/ro/app");
        fs::write(project.join(".env"), "TOKEN=x").expect("write");
        assert!(matches!(
            rejection(&list, req(&project)),
            MountRejection::ContainsBlocked { .. }
        ));
    }

    #[test]
    fn files_can_be_mounted() {
        let fx = Fixture::new();
        let list = fx.standard();
        let file = fx.p("allowed/ro/notes.md");
        fs::write(&file, "hi").expect("write");
        let m = accepted(&list, req(&file));
        assert_eq!(m.name(), "notes.md");
    }

    #[test]
    fn duplicate_container_names_are_rejected() {
        let fx = Fixture::new();
        let list = fx.standard();
        let a = fx.mkdir("allowed/ro/a/proj");
        let b = fx.mkdir("allowed/rw/b/proj");
        let check = list.check(&[req(&a), req(&b)]);
        assert_eq!(check.accepted.len(), 1);
        assert_eq!(check.accepted[0].host_path(), a);
        assert_eq!(
            check.rejected[0].reason,
            MountRejection::DuplicateName("proj".to_owned())
        );
    }

    #[test]
    fn mixed_requests_keep_per_mount_reasons() {
        let fx = Fixture::new();
        let list = fx.standard();
        let good = fx.mkdir("allowed/ro/good");
        let bad = fx.mkdir("outside/bad");
        let check = list.check(&[req(&bad), req(&good), req(&fx.p("allowed/ro/none"))]);
        assert_eq!(check.accepted.len(), 1);
        assert_eq!(check.rejected.len(), 2);
        assert_eq!(check.rejected[0].request.host_path, bad);
        assert_eq!(check.rejected[1].reason, MountRejection::HostPathMissing);
        assert!(
            check.rejected[0]
                .reason
                .to_string()
                .contains("not under any allowed root")
        );
    }

    #[test]
    fn tilde_expands_in_roots() {
        let fx = Fixture::new();
        let proj = fx.mkdir("home/projects");
        let path = fx.write_allowlist("[[allow]]\npath = \"~/projects\"\n");
        let list = MountAllowlist::load_with_home(&path, Some(&fx.p("home"))).expect("load");
        assert_eq!(list.roots()[0].path(), proj);
        let err = MountAllowlist::load_with_home(&path, None).expect_err("no home");
        assert!(matches!(err, AllowlistError::Invalid { .. }), "{err}");
    }

    #[test]
    fn missing_roots_allow_nothing_and_are_reported() {
        let fx = Fixture::new();
        let path = fx.write_allowlist(&format!(
            "[[allow]]\npath = \"{}\"\n",
            fx.p("gone").display()
        ));
        let list = MountAllowlist::load_with_home(&path, None).expect("load");
        assert!(list.roots().is_empty());
        assert_eq!(list.missing_roots(), [fx.p("gone")]);
        let dir = fx.mkdir("allowed/ro/x");
        assert!(matches!(
            rejection(&list, req(&dir)),
            MountRejection::NotUnderAllowedRoot { .. }
        ));
    }

    #[test]
    fn relative_root_is_an_error() {
        let fx = Fixture::new();
        let path = fx.write_allowlist("[[allow]]\npath = \"relative\"\n");
        assert!(matches!(
            MountAllowlist::load_with_home(&path, None),
            Err(AllowlistError::Invalid { .. })
        ));
    }

    #[test]
    fn unknown_keys_and_bad_toml_are_errors() {
        let fx = Fixture::new();
        let path = fx.write_allowlist("[[allow]]\npath = \"/tmp\"\nreadwrite = true\n");
        assert!(matches!(
            MountAllowlist::load_with_home(&path, None),
            Err(AllowlistError::Parse { .. })
        ));
        let path = fx.write_allowlist("[[allow]\n");
        assert!(matches!(
            MountAllowlist::load_with_home(&path, None),
            Err(AllowlistError::Parse { .. })
        ));
    }

    #[test]
    fn world_writable_file_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let fx = Fixture::new();
        let path = fx.write_allowlist("");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o666)).expect("chmod");
        assert!(matches!(
            MountAllowlist::load_with_home(&path, None),
            Err(AllowlistError::WorldWritable { .. })
        ));
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).expect("chmod");
        MountAllowlist::load_with_home(&path, None).expect("load");
    }

    #[test]
    fn defaults_always_apply_and_file_patterns_merge() {
        let fx = Fixture::new();
        let list = fx.standard();
        for p in DEFAULT_BLOCKED {
            assert!(list.blocked_patterns().iter().any(|b| b == p), "{p}");
        }
        assert!(list.blocked_patterns().iter().any(|b| b == "wallet"));
        assert!(MountAllowlist::deny_all().blocked_patterns().len() == DEFAULT_BLOCKED.len());
    }
}
