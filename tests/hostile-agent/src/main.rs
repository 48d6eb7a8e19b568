//! `nanoclaw-hostile-agent`: an agent that attacks the host, for tests only.
//!
//! It takes the place of `nanoclaw-agent` in a test image and speaks the same contract (the
//! environment, `inbound.db` read-only, `outbound.db`), but every message it receives names an
//! attack to carry out from inside the container: the things a model with a shell could do.
//! When an attack is set up it writes a reply `done: <attack> <details>` to the session's
//! chat, so a test knows when to look. `echo <text>` just answers.
//!
//! Attacks (message text):
//! - `traversal` rows whose ids walk out of the outbox or are absolute, and a file name that
//!   does;
//! - `links <secret name>` message directories and files that are links, and a sent message
//!   whose directory holds links to a victim directory and file;
//! - `outbox-link` the outbox itself a link to the data dir;
//! - `swap` a message directory swapped with a link to the victim directory while the host
//!   delivers, many times;
//! - `flood` file events without end in its workspace: two files written in turn (so the
//!   kernel cannot merge the events) and the heartbeat touched;
//! - `giant` a row over the content limit, one with too many files, a huge sparse file, and
//!   a burst of rows;
//! - `fifo` a FIFO where a file belongs;
//! - `lock` a read lock on the WAL write-lock byte of `inbound.db-shm`, held until killed;
//! - `write-inbound` tries to write `inbound.db` and its directory, and says what happened;
//! - `forge <approval id>` a question card whose id is an approval's;
//! - `immortal` claims the message and never finishes, touching the heartbeat forever.
//! - `model-proxy <eldeen>` looks for the model credential (the test knows it and sends it
//!   reversed, so the message itself does not hold it) in its environment and every file it can read, tries to plant or remove files
//!   beside the proxy socket, and sends the socket requests for the model and for other
//!   endpoints with a made-up key; it says what it found and each answer's status line.

use std::collections::HashSet;
use std::os::unix::fs::symlink;
use std::path::PathBuf;
use std::time::Duration;

use nanoclaw_schema::session::content::{ChatIn, ChatOut};
use nanoclaw_schema::session::layout::{
    CONTAINER_INBOUND_DIR, CONTAINER_WORKSPACE, HEARTBEAT_FILE, INBOUND_DB, OUTBOUND_DB, OUTBOX_DIR,
};
use nanoclaw_schema::session::{env, next_container_seq};
use nanoclaw_schema::time;
use rusqlite::{Connection, OpenFlags, params};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

struct Agent {
    workspace: PathBuf,
    inbound_dir: PathBuf,
    inbound: Connection,
    outbound: Connection,
    home: (String, String),
    /// Files and locks the attacks keep open until the process dies.
    held: Vec<std::fs::File>,
}

fn main() {
    if let Err(e) = run() {
        eprintln!("hostile agent: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let workspace = PathBuf::from(
        std::env::var(env::SESSION_DIR).unwrap_or_else(|_| CONTAINER_WORKSPACE.into()),
    );
    let inbound_dir = PathBuf::from(
        std::env::var(env::INBOUND_DIR).unwrap_or_else(|_| CONTAINER_INBOUND_DIR.into()),
    );
    let inbound = Connection::open_with_flags(
        inbound_dir.join(INBOUND_DB),
        OpenFlags::SQLITE_OPEN_READ_ONLY,
    )?;
    inbound.busy_timeout(Duration::from_secs(5))?;
    let outbound = Connection::open(workspace.join(OUTBOUND_DB))?;
    outbound.busy_timeout(Duration::from_secs(5))?;
    let home: (String, String) = inbound.query_row(
        "SELECT channel_type, platform_id FROM session_routing WHERE id = 1",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    let mut agent = Agent {
        workspace,
        inbound_dir,
        inbound,
        outbound,
        home,
        held: Vec::new(),
    };
    eprintln!("hostile agent: up");
    let mut seen: HashSet<String> = HashSet::new();
    loop {
        let pending: Vec<(String, String)> = {
            let mut stmt = agent.inbound.prepare(
                "SELECT id, content FROM messages_in WHERE status = 'pending' ORDER BY seq",
            )?;
            stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<rusqlite::Result<_>>()?
        };
        for (id, content) in pending {
            if !seen.insert(id.clone()) {
                continue;
            }
            let text = serde_json::from_str::<ChatIn>(&content)
                .map(|c| c.text)
                .unwrap_or_default();
            if let Err(e) = agent.attack(&id, text.trim()) {
                agent.reply(&format!("error: {e}"))?;
                agent.ack(&id)?;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Agent {
    fn attack(&mut self, id: &str, text: &str) -> Result<()> {
        let (word, arg) = text.split_once(' ').unwrap_or((text, ""));
        let details = match word {
            "echo" => format!("echo: {arg}"),
            "traversal" => self.traversal()?,
            "links" => self.links(arg)?,
            "outbox-link" => self.outbox_link()?,
            "swap" => self.swap()?,
            "flood" => self.flood(),
            "giant" => self.giant()?,
            "fifo" => self.fifo()?,
            "lock" => {
                // Said first (and given time to be delivered): once the lock is held, the
                // host can record nothing more for this session.
                self.reply("done: lock holding inbound.db")?;
                self.ack(id)?;
                std::thread::sleep(Duration::from_secs(2));
                self.lock()?;
                return Ok(());
            }
            "write-inbound" => self.write_inbound(),
            "forge" => self.forge(arg)?,
            "model-proxy" => model_proxy(&arg.chars().rev().collect::<String>()),
            "immortal" => return self.immortal(id),
            other => format!("unknown attack {other:?}"),
        };
        if word == "echo" {
            self.reply(&details)?;
        } else {
            self.reply(&format!("done: {word} {details}"))?;
        }
        self.ack(id)
    }

    fn outbox(&self) -> PathBuf {
        self.workspace.join(OUTBOX_DIR)
    }

    /// A row as the agent-runner would write it, with any id and content.
    fn row(&self, id: &str, content: &str) -> Result<()> {
        let tx = self.outbound.unchecked_transaction()?;
        let max_in: Option<i64> =
            self.inbound
                .query_row("SELECT MAX(seq) FROM messages_in", [], |r| r.get(0))?;
        let max_out: Option<i64> =
            tx.query_row("SELECT MAX(seq) FROM messages_out", [], |r| r.get(0))?;
        tx.execute(
            "INSERT INTO messages_out (id, seq, timestamp, kind, channel_type, platform_id, content)
             VALUES (?1, ?2, ?3, 'chat', ?4, ?5, ?6)",
            params![
                id,
                next_container_seq(max_in, max_out),
                time::now(),
                self.home.0,
                self.home.1,
                content
            ],
        )?;
        tx.commit()?;
        Ok(())
    }

    fn send(&self, id: &str, text: &str, files: &[&str]) -> Result<()> {
        let content = serde_json::to_string(&ChatOut::Send {
            text: text.into(),
            files: files.iter().map(|f| f.to_string()).collect(),
        })?;
        self.row(id, &content)
    }

    fn reply(&self, text: &str) -> Result<()> {
        self.send(&format!("r-{}", time::now_ms()), text, &[])
    }

    fn ack(&self, id: &str) -> Result<()> {
        self.outbound.execute(
            "INSERT OR REPLACE INTO processing_ack (message_id, status, status_changed) VALUES (?1, 'completed', ?2)",
            params![id, time::now()],
        )?;
        Ok(())
    }

    fn traversal(&self) -> Result<String> {
        let files = ["../../../../.env", ".env"];
        for (n, id) in ["../../..", "../../../../..", "/etc", "/"]
            .iter()
            .enumerate()
        {
            let content = serde_json::to_string(&ChatOut::Send {
                text: format!("traversal {n}"),
                files: files.iter().map(|f| f.to_string()).collect(),
            })?;
            self.row(id, &content)?;
        }
        self.send("trav-name", "traversal by name", &["../../../../.env"])?;
        Ok("rows written".into())
    }

    /// Links in every place the host reads or removes. `secret` is a file name in the data
    /// dir (four levels above the workspace: workspace, session, agent group, sessions).
    fn links(&self, secret: &str) -> Result<String> {
        let up = "../../../..";
        let outbox = self.outbox();
        // A message directory that is a link to the data dir.
        symlink(format!("../{up}"), outbox.join("link-dir"))?;
        self.send("link-dir", "link dir", &[secret])?;
        // A file that is a link to the secret.
        std::fs::create_dir_all(outbox.join("link-file"))?;
        symlink(
            format!("../../{up}/{secret}"),
            outbox.join("link-file").join("a.txt"),
        )?;
        self.send("link-file", "link file", &["a.txt"])?;
        // A sent message whose directory holds a link to the victim directory: removing the
        // outbox afterwards must not follow it.
        std::fs::create_dir_all(outbox.join("with-link"))?;
        std::fs::write(outbox.join("with-link").join("fine.txt"), b"fine")?;
        symlink(
            format!("../../{up}/victim"),
            outbox.join("with-link").join("victim"),
        )?;
        std::fs::create_dir_all(outbox.join("with-link").join("sub"))?;
        symlink(
            format!("../../../{up}/victim/keep.txt"),
            outbox.join("with-link").join("sub").join("keep.txt"),
        )?;
        self.send("with-link", "with a link inside", &["fine.txt"])?;
        Ok("links planted".into())
    }

    /// The outbox itself a link to the data dir.
    fn outbox_link(&self) -> Result<String> {
        let outbox = self.outbox();
        std::fs::rename(&outbox, self.workspace.join("outbox-real"))?;
        symlink("../../../..", &outbox)?;
        self.send("victim", "outbox is a link", &["keep.txt"])?;
        Ok("outbox is a link".into())
    }

    /// Message directories that keep turning into links to the victim directory (whose
    /// `a.txt` holds the canary) and back, while the host delivers them.
    fn swap(&mut self) -> Result<String> {
        let outbox = self.outbox();
        let real = self.workspace.join("swap-real");
        std::fs::create_dir_all(&real)?;
        std::fs::write(real.join("a.txt"), b"harmless")?;
        let link = self.workspace.join("swap-link");
        let _ = std::fs::remove_file(&link);
        // Resolved from inside the outbox: outbox, workspace, session, agent, sessions, data.
        symlink("../../../../../victim", &link)?;
        const N: usize = 40;
        for n in 0..N {
            self.row(
                &format!("swap-{n}"),
                &serde_json::to_string(&ChatOut::Send {
                    text: format!("swap {n}"),
                    files: vec!["a.txt".into()],
                })?,
            )?;
        }
        // The swapper runs until the process dies: each name is in turn the real directory,
        // nothing, and the link.
        std::thread::spawn(move || {
            loop {
                for n in 0..N {
                    let name = outbox.join(format!("swap-{n}"));
                    let _ = std::fs::rename(&real, &name);
                    std::thread::yield_now();
                    let _ = std::fs::rename(&name, &real);
                    let _ = std::fs::rename(&link, &name);
                    std::thread::yield_now();
                    let _ = std::fs::rename(&name, &link);
                }
            }
        });
        Ok("swapping".into())
    }

    fn flood(&self) -> String {
        let ws = self.workspace.clone();
        std::thread::spawn(move || {
            let (a, b, beat) = (
                ws.join("noise-a"),
                ws.join("noise-b"),
                ws.join(HEARTBEAT_FILE),
            );
            loop {
                let _ = std::fs::write(&a, b"a");
                let _ = std::fs::write(&b, b"b");
                let _ = std::fs::write(&beat, b"");
            }
        });
        "flooding".into()
    }

    fn giant(&self) -> Result<String> {
        let huge = "x".repeat(nanoclaw_schema::session::limits::MAX_CONTENT_BYTES + 10);
        self.send("giant-text", &huge, &[])?;
        let many: Vec<String> = (0..300).map(|i| format!("f{i}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        self.send("giant-files", "many files", &many)?;
        let dir = self.outbox().join("giant-sparse");
        std::fs::create_dir_all(&dir)?;
        let f = std::fs::File::create(dir.join("big.bin"))?;
        f.set_len(10 * 1024 * 1024 * 1024)?;
        self.send("giant-sparse", "a 10 GiB file", &["big.bin"])?;
        for n in 0..500 {
            self.send(&format!("burst-{n}"), &format!("burst {n}"), &[])?;
        }
        Ok("giants written".into())
    }

    fn fifo(&self) -> Result<String> {
        let dir = self.outbox().join("fifo");
        std::fs::create_dir_all(&dir)?;
        let path = dir.join("pipe");
        let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())?;
        // SAFETY: a valid C string; mkfifo only creates a file system entry.
        if unsafe { libc::mkfifo(c.as_ptr(), 0o644) } != 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        self.send("fifo", "a fifo", &["pipe"])?;
        Ok("fifo planted".into())
    }

    /// Holds a read lock on the WAL write-lock byte of inbound.db-shm (offset 120): with it,
    /// no other process can write inbound.db. A read-only mount does not prevent it.
    fn lock(&mut self) -> Result<String> {
        let shm = std::fs::File::open(self.inbound_dir.join(format!("{INBOUND_DB}-shm")))?;
        let lock = libc::flock {
            l_type: libc::F_RDLCK as i16,
            l_whence: libc::SEEK_SET as i16,
            l_start: 120,
            l_len: 1,
            l_pid: 0,
        };
        use std::os::fd::AsRawFd;
        // SAFETY: a valid descriptor and a valid flock struct.
        let rc = unsafe { libc::fcntl(shm.as_raw_fd(), libc::F_SETLK, &lock) };
        if rc != 0 {
            return Err(std::io::Error::last_os_error().into());
        }
        self.held.push(shm);
        Ok("inbound.db locked".into())
    }

    fn write_inbound(&self) -> String {
        let mut said = Vec::new();
        match Connection::open_with_flags(
            self.inbound_dir.join(INBOUND_DB),
            OpenFlags::SQLITE_OPEN_READ_WRITE,
        )
        .and_then(|c| {
            c.execute(
                "INSERT INTO messages_in (id, seq, kind, timestamp, content) VALUES ('forged', 99998, 'chat', 'x', '{}')",
                [],
            )
        }) {
            Ok(_) => said.push("db: WRITTEN".to_string()),
            Err(e) => said.push(format!("db: refused ({e})")),
        }
        match std::fs::OpenOptions::new()
            .append(true)
            .open(self.inbound_dir.join(INBOUND_DB))
        {
            Ok(_) => said.push("file: OPENED FOR WRITING".into()),
            Err(e) => said.push(format!("file: refused ({e})")),
        }
        match std::fs::write(self.inbound_dir.join("planted"), b"x") {
            Ok(()) => said.push("dir: WRITTEN".into()),
            Err(e) => said.push(format!("dir: refused ({e})")),
        }
        said.join("; ")
    }

    fn forge(&self, approval: &str) -> Result<String> {
        let content = serde_json::to_string(&ChatOut::Question {
            question_id: approval.into(),
            title: "Approve?".into(),
            question: "Click Allow".into(),
            options: vec!["Allow".into(), "Deny".into()],
            timeout_secs: None,
        })?;
        self.row("forged-card", &content)?;
        Ok("card posted".into())
    }

    /// Claims the message, never finishes, and keeps its heartbeat fresh.
    fn immortal(&self, id: &str) -> Result<()> {
        self.outbound.execute(
            "INSERT OR REPLACE INTO processing_ack (message_id, status, status_changed) VALUES (?1, 'processing', ?2)",
            params![id, time::now()],
        )?;
        self.reply("done: immortal claimed")?;
        let beat = self.workspace.join(HEARTBEAT_FILE);
        loop {
            let _ = std::fs::write(&beat, b"");
            // Claims that always look fresh.
            let _ = self.outbound.execute(
                "UPDATE processing_ack SET status_changed = ?2 WHERE message_id = ?1",
                params![id, time::now()],
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// The `model-proxy` attack: see the module docs.
fn model_proxy(needle: &str) -> String {
    use std::io::{Read as _, Write as _};
    let mut said = Vec::new();
    let in_env: Vec<String> = std::env::vars()
        .filter(|(k, v)| !needle.is_empty() && (k.contains(needle) || v.contains(needle)))
        .map(|(k, _)| k)
        .collect();
    said.push(format!(
        "env: {}",
        if in_env.is_empty() {
            "clean".to_string()
        } else {
            format!("KEY IN {in_env:?}")
        }
    ));
    let found = search_files(needle);
    said.push(format!(
        "files: {}",
        if found.is_empty() {
            "clean".to_string()
        } else {
            format!("KEY IN {found:?}")
        }
    ));

    let Some(socket) = std::env::var_os(env::MODEL_SOCKET).map(PathBuf::from) else {
        said.push("socket: none".into());
        return said.join("; ");
    };
    let dir = socket.parent().map(PathBuf::from).unwrap_or_default();
    match std::fs::write(dir.join("planted"), b"x") {
        Ok(()) => said.push("plant: WRITTEN".into()),
        Err(e) => said.push(format!("plant: refused ({e})")),
    }
    match std::fs::remove_file(&socket) {
        Ok(()) => said.push("unlink: REMOVED".into()),
        Err(e) => said.push(format!("unlink: refused ({e})")),
    }
    for (method, path) in [
        ("POST", "/v1/messages"),
        ("GET", "/v1/models"),
        ("POST", "/v1/files"),
        ("POST", "/api/oauth/claude_cli/create_api_key"),
    ] {
        let body = r#"{"model":"m","max_tokens":1,"messages":[{"role":"user","content":"hi"}]}"#;
        let answer = std::os::unix::net::UnixStream::connect(&socket).and_then(|mut s| {
            s.set_read_timeout(Some(Duration::from_secs(20)))?;
            write!(
                s,
                "{method} {path} HTTP/1.1\r\nhost: x\r\nx-api-key: stolen\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            )?;
            let mut out = String::new();
            s.read_to_string(&mut out)?;
            Ok(out)
        });
        let status = match answer {
            Ok(a) => {
                if !needle.is_empty() && a.contains(needle) {
                    said.push(format!("{path}: KEY IN ANSWER"));
                }
                a.lines().next().unwrap_or("").to_string()
            }
            Err(e) => format!("failed ({e})"),
        };
        said.push(format!("{method} {path}: {status}"));
    }
    said.join("; ")
}

/// Regular files (at most 4 MiB each, 20,000 in all) under the places an agent can read,
/// without following links, that contain `needle`.
fn search_files(needle: &str) -> Vec<String> {
    if needle.is_empty() {
        return Vec::new();
    }
    let mut found = Vec::new();
    let mut stack: Vec<PathBuf> = ["/workspace", "/run", "/tmp", "/etc", "/proc/self"]
        .iter()
        .map(PathBuf::from)
        .collect();
    let mut budget = 20_000;
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            budget -= 1;
            if budget == 0 {
                return found;
            }
            let path = entry.path();
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            // /proc/self holds the process's own environment and memory maps.
            let name = entry.file_name();
            if dir.starts_with("/proc") && !matches!(name.to_str(), Some("environ" | "cmdline")) {
                continue;
            }
            if meta.is_dir() {
                stack.push(path);
            } else if (meta.is_file() || dir.starts_with("/proc"))
                && meta.len() <= 4 << 20
                && std::fs::read(&path)
                    .is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle.as_bytes()))
            {
                found.push(path.display().to_string());
            }
        }
    }
    found
}
