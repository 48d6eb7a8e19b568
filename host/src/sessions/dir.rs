//! A session's directory on disk, and the only code that touches the files in it.
//!
//! ```text
//! <sessions>/<agent group>/<session>/     the host's (0700)
//!   inbound/       the host's; read-only in the container  (inbound.db, inbox/)
//!   workspace/     the container's; read-write at /workspace (outbound.db, outbox/, .heartbeat)
//! ```
//!
//! Everything under `workspace/` is hostile: the agent may have replaced any entry with a
//! symlink, a FIFO, a huge sparse file or a directory, and may keep swapping them while the
//! host looks. So every access below `workspace/` goes through directory file descriptors,
//! one validated name at a time, with `O_NOFOLLOW` on every component; files must be regular
//! and are read through the descriptor that was checked, never reopened by path. Names are
//! validated types ([`MessageOutId`], [`FileName`]), so no `..` or separator ever reaches a
//! system call. The session dir itself and `inbound/` are the host's alone, but are opened
//! the same way so a directory left by an older layout cannot redirect a write.

use std::ffi::OsStr;
use std::fmt;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;
use sha2::{Digest, Sha256};

use nanoclaw_schema::session::layout::{
    HEARTBEAT_FILE, INBOUND_DB, INBOUND_DIR, INBOX_DIR, OUTBOUND_DB, OUTBOX_DIR, WORKSPACE_DIR,
};
use nanoclaw_schema::session::{is_safe_file_name, is_valid_message_id, limits};

use crate::error::{Error, Result};

/// The id of a `messages_out` row, validated: safe as one path component.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageOutId(String);

impl MessageOutId {
    pub fn parse(s: &str) -> Option<Self> {
        is_valid_message_id(s).then(|| Self(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for MessageOutId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A file name from an agent or a platform, validated: one safe path component.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FileName(String);

impl FileName {
    pub fn parse(s: &str) -> Option<Self> {
        is_safe_file_name(s).then(|| Self(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for FileName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why the host would not take a file an agent named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileRefusal {
    Missing,
    /// A symlink, directory, FIFO, device or socket where a plain file or directory belongs.
    NotPlain(&'static str),
    TooLarge {
        size: u64,
        limit: u64,
    },
    Io(String),
}

impl fmt::Display for FileRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FileRefusal::Missing => f.write_str("no such file"),
            FileRefusal::NotPlain(what) => write!(f, "not a plain file or directory ({what})"),
            FileRefusal::TooLarge { size, limit } => {
                write!(f, "{size} bytes, more than the limit of {limit}")
            }
            FileRefusal::Io(e) => f.write_str(e),
        }
    }
}

impl From<Errno> for FileRefusal {
    fn from(e: Errno) -> Self {
        match e {
            Errno::NOENT => FileRefusal::Missing,
            // O_NOFOLLOW on a symlink, O_DIRECTORY on a non-directory.
            Errno::LOOP | Errno::NOTDIR => FileRefusal::NotPlain("a link or the wrong kind"),
            e => FileRefusal::Io(std::io::Error::from(e).to_string()),
        }
    }
}

/// A file of an outbound message, opened and checked, not yet read.
pub struct OutboxFile {
    pub name: FileName,
    pub size: u64,
    file: std::fs::File,
}

impl OutboxFile {
    /// Reads the file through the descriptor that was checked, never more than its checked
    /// size (it may grow meanwhile).
    pub fn read(mut self) -> std::result::Result<(FileName, Vec<u8>), FileRefusal> {
        let mut data = Vec::with_capacity(self.size as usize);
        (&mut self.file)
            .take(self.size)
            .read_to_end(&mut data)
            .map_err(|e| FileRefusal::Io(e.to_string()))?;
        Ok((self.name, data))
    }
}

const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

/// Opens `name` in `dir` as a directory, never following a link.
fn open_dir(dir: impl AsFd, name: &str) -> rustix::io::Result<OwnedFd> {
    rustix::fs::openat(dir, name, DIR_FLAGS, Mode::empty())
}

/// Opens (creating if needed) the directory `name` in `dir`. True if it was created.
fn ensure_dir(dir: impl AsFd, name: &str, mode: u32) -> Result<(OwnedFd, bool)> {
    let dir = dir.as_fd();
    let created = match rustix::fs::mkdirat(dir, name, Mode::from_raw_mode(mode)) {
        Ok(()) => true,
        Err(Errno::EXIST) => false,
        Err(e) => return Err(io_err(format!("create {name}"), e)),
    };
    let fd = open_dir(dir, name).map_err(|e| {
        Error::invalid(format!(
            "{name} in a session directory is not a plain directory ({e}); \
             the session was made by an older layout or tampered with"
        ))
    })?;
    Ok((fd, created))
}

fn io_err(context: String, e: Errno) -> Error {
    Error::io(context, std::io::Error::from(e))
}

/// The folder under `inbox/` of one inbound message: its id made path-safe, plus a hash of
/// the id so two ids that clean up alike never share a folder.
pub fn inbox_folder(message_id: &str) -> String {
    let clean: String = message_id
        .chars()
        .take(64)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let digest = Sha256::digest(message_id.as_bytes());
    let tag: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
    format!("{clean}-{tag}")
}

/// One session's directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionDir {
    root: PathBuf,
}

impl SessionDir {
    pub(crate) fn new(root: PathBuf) -> Self {
        SessionDir { root }
    }

    pub fn path(&self) -> &Path {
        &self.root
    }

    /// The host's directory (mounted read-only at `/workspace/inbound`).
    pub fn inbound_dir(&self) -> PathBuf {
        self.root.join(INBOUND_DIR)
    }

    /// The container's directory (mounted read-write at `/workspace`).
    pub fn workspace_dir(&self) -> PathBuf {
        self.root.join(WORKSPACE_DIR)
    }

    pub fn inbound_db(&self) -> PathBuf {
        self.inbound_dir().join(INBOUND_DB)
    }

    /// Opened only through SQLite, which never follows a link there (`O_NOFOLLOW`).
    pub fn outbound_db(&self) -> PathBuf {
        self.workspace_dir().join(OUTBOUND_DB)
    }

    pub fn exists(&self) -> bool {
        self.inbound_db().is_file()
    }

    fn open_root(&self) -> rustix::io::Result<OwnedFd> {
        // Every component above the session dir is the host's.
        rustix::fs::open(&self.root, DIR_FLAGS, Mode::empty())
    }

    fn workspace(&self) -> rustix::io::Result<OwnedFd> {
        open_dir(self.open_root()?, WORKSPACE_DIR)
    }

    /// Creates the layout (idempotent). The workspace is created owned by `owner` (the
    /// container's user) and only ever touched here when it is new. Returns true if the
    /// workspace was new (so the caller initializes `outbound.db`).
    pub fn ensure(&self, owner: Option<(u32, u32)>) -> Result<bool> {
        std::fs::create_dir_all(&self.root)
            .map_err(|e| Error::io(format!("create {}", self.root.display()), e))?;
        let root = self
            .open_root()
            .map_err(|e| io_err(format!("open {}", self.root.display()), e))?;
        // An older layout kept the databases at the top, in a directory the agent could
        // write: nothing in it can be trusted.
        if rustix::fs::statat(&root, INBOUND_DB, AtFlags::SYMLINK_NOFOLLOW).is_ok() {
            return Err(Error::invalid(format!(
                "{} uses the old session layout (written by its agent); close the session \
                 (`nanoclaw sessions close`) so the next message starts a new one",
                self.root.display()
            )));
        }
        let _ = rustix::fs::fchmod(&root, Mode::from_raw_mode(0o700));
        let (inbound, _) = ensure_dir(&root, INBOUND_DIR, 0o755)?;
        ensure_dir(&inbound, INBOX_DIR, 0o755)?;
        let (workspace, created) = ensure_dir(&root, WORKSPACE_DIR, 0o755)?;
        if created {
            ensure_dir(&workspace, OUTBOX_DIR, 0o755)?;
            if let Some((uid, gid)) = owner {
                for name in [OUTBOX_DIR, "."] {
                    chown_entry(&workspace, name, uid, gid)?;
                }
            }
        }
        Ok(created)
    }

    /// Hands `outbound.db` and its companions (just created by the host) to the container's
    /// user. Only for a workspace [`SessionDir::ensure`] just created.
    pub fn hand_over_outbound(&self, owner: Option<(u32, u32)>) -> Result<()> {
        let Some((uid, gid)) = owner else {
            return Ok(());
        };
        let ws = self
            .workspace()
            .map_err(|e| io_err("open the workspace".into(), e))?;
        for name in [
            OUTBOUND_DB.to_string(),
            format!("{OUTBOUND_DB}-wal"),
            format!("{OUTBOUND_DB}-shm"),
        ] {
            match chown_entry(&ws, &name, uid, gid) {
                Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {}
                other => other?,
            }
        }
        Ok(())
    }

    /// When the agent last touched its heartbeat (`None` if it is missing or not a file).
    /// The agent controls this time: it says "alive", never "allowed to live longer".
    pub fn heartbeat(&self) -> Option<SystemTime> {
        let ws = self.workspace().ok()?;
        let st = rustix::fs::statat(&ws, HEARTBEAT_FILE, AtFlags::SYMLINK_NOFOLLOW).ok()?;
        if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
            return None;
        }
        let secs = u64::try_from(st.st_mtime).ok()?;
        Some(SystemTime::UNIX_EPOCH + Duration::new(secs, st.st_mtime_nsec as u32))
    }

    /// Removes the heartbeat (a new container must not inherit the last one's).
    pub fn clear_heartbeat(&self) {
        if let Ok(ws) = self.workspace() {
            let _ = rustix::fs::unlinkat(&ws, HEARTBEAT_FILE, AtFlags::empty());
        }
    }

    /// Opens the files of outbound message `id` (`outbox/<id>/<name>`), checking each is a
    /// plain file within the limits. Nothing is read yet.
    pub fn open_outbox_files(
        &self,
        id: &MessageOutId,
        names: &[FileName],
    ) -> std::result::Result<Vec<OutboxFile>, (FileName, FileRefusal)> {
        let first = || {
            names
                .first()
                .cloned()
                .unwrap_or_else(|| FileName("?".into()))
        };
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let dir = self
            .workspace()
            .and_then(|ws| open_dir(ws, OUTBOX_DIR))
            .and_then(|outbox| open_dir(outbox, id.as_str()))
            .map_err(|e| (first(), FileRefusal::from(e)))?;
        let mut files = Vec::with_capacity(names.len());
        let mut total = 0u64;
        for name in names {
            let fd = rustix::fs::openat(
                &dir,
                name.as_str(),
                // NONBLOCK: opening a FIFO must not wait for a writer.
                OFlags::RDONLY
                    | OFlags::NOFOLLOW
                    | OFlags::NONBLOCK
                    | OFlags::NOCTTY
                    | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| (name.clone(), FileRefusal::from(e)))?;
            let st = rustix::fs::fstat(&fd).map_err(|e| (name.clone(), FileRefusal::from(e)))?;
            if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
                return Err((name.clone(), FileRefusal::NotPlain("not a regular file")));
            }
            let size = u64::try_from(st.st_size).unwrap_or(u64::MAX);
            if size > limits::MAX_FILE_BYTES {
                return Err((
                    name.clone(),
                    FileRefusal::TooLarge {
                        size,
                        limit: limits::MAX_FILE_BYTES,
                    },
                ));
            }
            total = total.saturating_add(size);
            if total > limits::MAX_MESSAGE_FILE_BYTES {
                return Err((
                    name.clone(),
                    FileRefusal::TooLarge {
                        size: total,
                        limit: limits::MAX_MESSAGE_FILE_BYTES,
                    },
                ));
            }
            files.push(OutboxFile {
                name: name.clone(),
                size,
                file: std::fs::File::from(fd),
            });
        }
        Ok(files)
    }

    /// Removes `outbox/<id>/` after its message was sent, without following anything and
    /// within a budget of entries (an agent cannot make the host walk a huge tree).
    pub fn remove_outbox(&self, id: &MessageOutId) {
        let Ok(outbox) = self.workspace().and_then(|ws| open_dir(ws, OUTBOX_DIR)) else {
            return;
        };
        remove_tree(&outbox, id.as_str());
    }

    /// Removes `inbound/inbox/<folder>/` (the attachments of a withdrawn message), without
    /// following anything and within the same budget as the outbox.
    pub fn remove_inbox(&self, folder: &str) {
        let Some(folder) = FileName::parse(folder) else {
            return;
        };
        let Ok(inbox) = self
            .open_root()
            .and_then(|root| open_dir(&root, INBOUND_DIR))
            .and_then(|inbound| open_dir(&inbound, INBOX_DIR))
        else {
            return;
        };
        remove_tree(&inbox, folder.as_str());
    }

    /// Writes an attachment of an inbound message into `inbound/inbox/<folder>/<name>`:
    /// through a temporary file renamed into place, so a redelivery rewrites it whole.
    /// Returns its path relative to the container's workspace.
    pub fn write_inbox_file(&self, folder: &str, name: &FileName, data: &[u8]) -> Result<String> {
        let context = || format!("save attachment {name} of {}", self.root.display());
        let root = self.open_root().map_err(|e| io_err(context(), e))?;
        let inbound = open_dir(&root, INBOUND_DIR).map_err(|e| io_err(context(), e))?;
        let (inbox, _) = ensure_dir(&inbound, INBOX_DIR, 0o755)?;
        let folder_name = FileName::parse(folder)
            .ok_or_else(|| Error::invalid(format!("unsafe inbox folder {folder:?}")))?;
        let (dir, _) = ensure_dir(&inbox, folder_name.as_str(), 0o755)?;
        let tmp = format!(".partial-{}", crate::ids::generate("f"));
        let fd = rustix::fs::openat(
            &dir,
            tmp.as_str(),
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o644),
        )
        .map_err(|e| io_err(context(), e))?;
        let mut file = std::fs::File::from(fd);
        let written = file.write_all(data).and_then(|()| file.sync_data());
        if let Err(e) = written {
            let _ = rustix::fs::unlinkat(&dir, tmp.as_str(), AtFlags::empty());
            return Err(Error::io(context(), e));
        }
        rustix::fs::renameat(&dir, tmp.as_str(), &dir, name.as_str()).map_err(|e| {
            let _ = rustix::fs::unlinkat(&dir, tmp.as_str(), AtFlags::empty());
            io_err(context(), e)
        })?;
        Ok(format!("{INBOUND_DIR}/{INBOX_DIR}/{folder}/{name}"))
    }

    /// Size of the host's `inbound.db-wal` (it grows while a container holds a read
    /// transaction open, since nothing can be checkpointed).
    pub fn inbound_wal_bytes(&self) -> u64 {
        let wal = self.inbound_dir().join(format!("{INBOUND_DB}-wal"));
        std::fs::symlink_metadata(wal).map_or(0, |m| m.len())
    }
}

/// Entries one outbox removal may touch.
const REMOVE_BUDGET: usize = 10_000;
/// How deep an outbox removal descends.
const REMOVE_DEPTH: usize = 4;

/// Removes what `dir` holds: links and files are unlinked (never followed), directories
/// emptied the same way (down to [`REMOVE_DEPTH`]) and removed.
/// Removes directory `name` of `parent` and what it holds, within [`REMOVE_BUDGET`].
fn remove_tree(parent: &OwnedFd, name: &str) {
    let Ok(dir) = open_dir(parent, name) else {
        return;
    };
    let mut budget = REMOVE_BUDGET;
    remove_contents(dir, 0, &mut budget);
    let _ = rustix::fs::unlinkat(parent, name, AtFlags::REMOVEDIR);
}

fn remove_contents(dir: OwnedFd, depth: usize, budget: &mut usize) {
    let Ok(entries) = rustix::fs::Dir::read_from(&dir) else {
        return;
    };
    let mut names: Vec<(Vec<u8>, FileType)> = Vec::new();
    for entry in entries {
        let Ok(entry) = entry else { break };
        let name = entry.file_name().to_bytes();
        if name == b"." || name == b".." {
            continue;
        }
        if *budget == 0 {
            break;
        }
        *budget -= 1;
        names.push((name.to_vec(), entry.file_type()));
    }
    for (name, kind) in names {
        use std::os::unix::ffi::OsStrExt;
        let name = OsStr::from_bytes(&name);
        let kind = if kind == FileType::Unknown {
            rustix::fs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW)
                .map_or(FileType::Unknown, |st| FileType::from_raw_mode(st.st_mode))
        } else {
            kind
        };
        if kind == FileType::Directory {
            if depth < REMOVE_DEPTH
                && let Ok(sub) = rustix::fs::openat(&dir, name, DIR_FLAGS, Mode::empty())
            {
                remove_contents(sub, depth + 1, budget);
            }
            let _ = rustix::fs::unlinkat(&dir, name, AtFlags::REMOVEDIR);
        } else {
            let _ = rustix::fs::unlinkat(&dir, name, AtFlags::empty());
        }
    }
}

fn chown_entry(dir: impl AsFd, name: &str, uid: u32, gid: u32) -> Result<()> {
    let (uid, gid) = (
        rustix::fs::Uid::from_raw(uid),
        rustix::fs::Gid::from_raw(gid),
    );
    let flags = if name == "." {
        AtFlags::empty()
    } else {
        AtFlags::SYMLINK_NOFOLLOW
    };
    rustix::fs::chownat(dir, name, Some(uid), Some(gid), flags)
        .map_err(|e| io_err(format!("hand {name} to the container's user"), e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn setup() -> (tempfile::TempDir, SessionDir) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = SessionDir::new(tmp.path().join("sessions/ag/sess"));
        assert!(dir.ensure(None).unwrap());
        (tmp, dir)
    }

    fn id(s: &str) -> MessageOutId {
        MessageOutId::parse(s).unwrap()
    }

    fn name(s: &str) -> FileName {
        FileName::parse(s).unwrap()
    }

    fn outbox(dir: &SessionDir) -> PathBuf {
        dir.workspace_dir().join(OUTBOX_DIR)
    }

    #[test]
    fn layout_is_created_once() {
        let (_tmp, dir) = setup();
        assert!(dir.inbound_dir().join(INBOX_DIR).is_dir());
        assert!(outbox(&dir).is_dir());
        assert!(!dir.ensure(None).unwrap(), "second ensure creates nothing");
    }

    #[test]
    fn traversal_names_never_parse() {
        for bad in ["..", "../..", "/etc/passwd", "a/b", "", "."] {
            assert!(MessageOutId::parse(bad).is_none(), "{bad:?}");
            assert!(FileName::parse(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn outbox_files_are_read_through_checked_descriptors() {
        let (_tmp, dir) = setup();
        let m = outbox(&dir).join("m1");
        std::fs::create_dir(&m).unwrap();
        std::fs::write(m.join("a.txt"), b"hello").unwrap();
        let files = dir.open_outbox_files(&id("m1"), &[name("a.txt")]).unwrap();
        let (n, data) = files.into_iter().next().unwrap().read().unwrap();
        assert_eq!((n.as_str(), data.as_slice()), ("a.txt", &b"hello"[..]));
    }

    #[test]
    fn a_symlinked_outbox_or_file_is_refused() {
        let (tmp, dir) = setup();
        let secret = tmp.path().join("secret.env");
        std::fs::write(&secret, b"TOKEN=hunter2").unwrap();
        // The file itself a link.
        let m = outbox(&dir).join("m1");
        std::fs::create_dir(&m).unwrap();
        symlink(&secret, m.join("a.txt")).unwrap();
        let err = dir
            .open_outbox_files(&id("m1"), &[name("a.txt")])
            .err()
            .unwrap();
        assert!(matches!(err.1, FileRefusal::NotPlain(_)), "{err:?}");
        // The message directory a link.
        std::fs::create_dir(tmp.path().join("elsewhere")).unwrap();
        std::fs::write(tmp.path().join("elsewhere/a.txt"), b"TOKEN").unwrap();
        symlink(tmp.path().join("elsewhere"), outbox(&dir).join("m2")).unwrap();
        assert!(dir.open_outbox_files(&id("m2"), &[name("a.txt")]).is_err());
        // The outbox itself a link.
        std::fs::remove_dir_all(outbox(&dir)).unwrap();
        symlink(tmp.path(), outbox(&dir)).unwrap();
        assert!(
            dir.open_outbox_files(&id("elsewhere"), &[name("a.txt")])
                .is_err()
        );
    }

    #[test]
    fn fifos_and_huge_files_are_refused_without_blocking() {
        let (_tmp, dir) = setup();
        let m = outbox(&dir).join("m1");
        std::fs::create_dir(&m).unwrap();
        let fifo = m.join("pipe");
        rustix::fs::mkfifoat(rustix::fs::CWD, &fifo, Mode::from_raw_mode(0o644)).unwrap();
        let err = dir
            .open_outbox_files(&id("m1"), &[name("pipe")])
            .err()
            .unwrap();
        assert!(matches!(err.1, FileRefusal::NotPlain(_)));
        // A sparse file costs the agent nothing and must cost the host nothing either.
        let big = std::fs::File::create(m.join("big")).unwrap();
        big.set_len(limits::MAX_FILE_BYTES + 1).unwrap();
        let err = dir
            .open_outbox_files(&id("m1"), &[name("big")])
            .err()
            .unwrap();
        assert!(matches!(err.1, FileRefusal::TooLarge { .. }));
    }

    #[test]
    fn removal_unlinks_links_and_never_follows_them() {
        let (tmp, dir) = setup();
        let victim = tmp.path().join("victim");
        std::fs::create_dir(&victim).unwrap();
        std::fs::write(victim.join("keep.txt"), b"keep").unwrap();
        let m = outbox(&dir).join("m1");
        std::fs::create_dir_all(m.join("sub/deeper")).unwrap();
        std::fs::write(m.join("sub/deeper/x"), b"x").unwrap();
        symlink(&victim, m.join("link-to-victim")).unwrap();
        symlink(&victim, m.join("sub/link")).unwrap();
        dir.remove_outbox(&id("m1"));
        assert!(!m.exists(), "the message's outbox is gone");
        assert!(
            victim.join("keep.txt").exists(),
            "nothing outside was touched"
        );
        // A symlinked message dir: only nothing happens.
        symlink(&victim, outbox(&dir).join("m2")).unwrap();
        dir.remove_outbox(&id("m2"));
        assert!(victim.join("keep.txt").exists());
        // A symlinked outbox: nothing happens either.
        std::fs::remove_dir_all(outbox(&dir)).unwrap();
        symlink(tmp.path(), outbox(&dir)).unwrap();
        dir.remove_outbox(&id("victim"));
        assert!(victim.join("keep.txt").exists());
    }

    #[test]
    fn inbox_writes_are_idempotent_and_stay_in_the_inbound_dir() {
        let (_tmp, dir) = setup();
        let folder = inbox_folder("telegram:1:../../x:ag-1");
        assert!(FileName::parse(&folder).is_some());
        let p1 = dir
            .write_inbox_file(&folder, &name("photo.jpg"), b"one")
            .unwrap();
        let p2 = dir
            .write_inbox_file(&folder, &name("photo.jpg"), b"one")
            .unwrap();
        assert_eq!(p1, p2);
        assert!(p1.starts_with("inbound/inbox/"));
        let on_disk = dir.path().join(&p1);
        assert_eq!(std::fs::read(on_disk).unwrap(), b"one");
        assert_ne!(inbox_folder("a:b"), inbox_folder("a_b"));
    }

    #[test]
    fn heartbeat_must_be_a_plain_file() {
        let (tmp, dir) = setup();
        assert!(dir.heartbeat().is_none());
        let beat = dir.workspace_dir().join(HEARTBEAT_FILE);
        symlink(tmp.path(), &beat).unwrap();
        assert!(dir.heartbeat().is_none(), "a link is no heartbeat");
        dir.clear_heartbeat();
        assert!(tmp.path().exists(), "clearing removed the link only");
        std::fs::write(&beat, b"").unwrap();
        assert!(dir.heartbeat().is_some());
    }

    #[test]
    fn an_old_layout_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("ag/sess");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(root.join(INBOUND_DB), b"").unwrap();
        let err = SessionDir::new(root).ensure(None).unwrap_err();
        assert!(err.to_string().contains("old session layout"), "{err}");
    }
}
