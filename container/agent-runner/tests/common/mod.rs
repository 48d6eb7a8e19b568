//! Test harness: plays the host. Creates a session directory laid out as the host does (the
//! host's `inbound/` with `inbound.db`, the container's `workspace/` with `outbound.db`;
//! schemas from `nanoclaw-schema`), writes inbound rows, runs the real `nanoclaw-agent`
//! binary against it and reads what it wrote.

#![allow(dead_code)] // each test file uses a different part

use std::collections::HashMap;
use std::io::Read as _;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nanoclaw_schema::session::content::{ChatIn, ChatOut, TaskIn};
use nanoclaw_schema::session::layout::{INBOUND_DIR, WORKSPACE_DIR};
use nanoclaw_schema::session::{INBOUND_DB, OUTBOUND_DB, SESSION_DBS};
use nanoclaw_schema::time;
use rusqlite::{Connection, params};
use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_nanoclaw-agent");

pub struct Session {
    pub dir: tempfile::TempDir,
    pub agent_dir: PathBuf,
    /// The host's long-lived inbound connection.
    inbound: Connection,
    next_seq: i64,
}

/// One inbound row to write.
#[derive(Debug, Clone)]
pub struct Msg {
    pub id: String,
    pub kind: &'static str,
    pub content: Value,
    pub trigger: bool,
    pub channel_type: Option<String>,
    pub platform_id: Option<String>,
    pub thread_id: Option<String>,
    pub process_after: Option<String>,
    pub on_wake: bool,
}

impl Msg {
    /// A chat message from Alice (`cli:alice`) in the session's home chat (`cli`/`local`).
    pub fn chat(id: &str, text: &str) -> Msg {
        let content = ChatIn {
            text: text.into(),
            sender_id: Some("cli:alice".into()),
            sender_name: Some("Alice".into()),
            ..Default::default()
        };
        Msg {
            id: id.into(),
            kind: "chat",
            content: serde_json::to_value(content).expect("serializable"),
            trigger: true,
            channel_type: Some("cli".into()),
            platform_id: Some("local".into()),
            thread_id: None,
            process_after: None,
            on_wake: false,
        }
    }

    /// A scheduled task firing in the home chat.
    pub fn task(id: &str, task_id: &str, prompt: &str, script: Option<&str>) -> Msg {
        let content = TaskIn {
            task_id: task_id.into(),
            prompt: prompt.into(),
            script: script.map(Into::into),
        };
        Msg {
            kind: "task",
            content: serde_json::to_value(content).expect("serializable"),
            ..Msg::chat(id, "")
        }
    }

    pub fn from(mut self, channel_type: &str, platform_id: &str, thread_id: Option<&str>) -> Msg {
        self.channel_type = Some(channel_type.into());
        self.platform_id = Some(platform_id.into());
        self.thread_id = thread_id.map(Into::into);
        self
    }

    pub fn sender(mut self, id: &str, name: &str) -> Msg {
        self.content["sender_id"] = id.into();
        self.content["sender_name"] = name.into();
        self
    }

    pub fn context(mut self) -> Msg {
        self.trigger = false;
        self
    }

    pub fn on_wake(mut self) -> Msg {
        self.on_wake = true;
        self
    }

    pub fn after(mut self, when: jiff::Timestamp) -> Msg {
        self.process_after = Some(time::format(when));
        self
    }
}

/// A `messages_out` row as the host would read it.
#[derive(Debug, Clone)]
pub struct Out {
    pub id: String,
    pub seq: i64,
    pub in_reply_to: Option<String>,
    pub kind: String,
    pub channel_type: Option<String>,
    pub platform_id: Option<String>,
    pub thread_id: Option<String>,
    pub text: String,
}

impl Session {
    /// A session whose home chat is `cli`/`local`, known as destination `home`.
    pub fn new() -> Session {
        let dir = tempfile::tempdir().expect("tempdir");
        for sub in [INBOUND_DIR, WORKSPACE_DIR] {
            std::fs::create_dir(dir.path().join(sub)).expect("session dirs");
        }
        for (file, schema, version) in SESSION_DBS {
            let sub = if file == INBOUND_DB {
                INBOUND_DIR
            } else {
                WORKSPACE_DIR
            };
            let c = Connection::open(dir.path().join(sub).join(file)).expect("create db");
            let mode: String = c
                .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
                .expect("wal");
            assert_eq!(mode, "wal");
            c.execute_batch(schema).expect("schema");
            c.pragma_update(None, "user_version", version)
                .expect("user_version");
        }
        let agent_dir = dir.path().join("agent");
        std::fs::create_dir(&agent_dir).expect("agent dir");
        let inbound =
            Connection::open(dir.path().join(INBOUND_DIR).join(INBOUND_DB)).expect("open inbound");
        inbound
            .busy_timeout(Duration::from_secs(5))
            .expect("busy timeout");
        let s = Session {
            dir,
            agent_dir,
            inbound,
            next_seq: 2,
        };
        s.destination(
            "home",
            Some("Home"),
            "channel",
            Some("cli"),
            Some("local"),
            None,
        );
        s.inbound
            .execute(
                "INSERT INTO session_routing (id, channel_type, platform_id, thread_id) VALUES (1, 'cli', 'local', NULL)",
                [],
            )
            .expect("routing");
        s
    }

    /// The workspace (what the container sees at /workspace).
    pub fn path(&self) -> PathBuf {
        self.dir.path().join(WORKSPACE_DIR)
    }

    /// The host's directory (read-only at /workspace/inbound in a container).
    pub fn inbound_path(&self) -> PathBuf {
        self.dir.path().join(INBOUND_DIR)
    }

    pub fn destination(
        &self,
        name: &str,
        display: Option<&str>,
        ty: &str,
        channel_type: Option<&str>,
        platform_id: Option<&str>,
        agent_group_id: Option<&str>,
    ) {
        self.inbound
            .execute(
                "INSERT OR REPLACE INTO destinations (name, display_name, type, channel_type, platform_id, agent_group_id)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![name, display, ty, channel_type, platform_id, agent_group_id],
            )
            .expect("destination");
    }

    /// Writes one inbound row (one commit). Returns its seq.
    pub fn send(&mut self, m: Msg) -> i64 {
        let seq = self.next_seq;
        self.next_seq += 2;
        self.inbound
            .execute(
                "INSERT INTO messages_in (id, seq, kind, timestamp, trigger, channel_type, platform_id, thread_id,
                                          content, process_after, on_wake)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                params![
                    m.id,
                    seq,
                    m.kind,
                    time::now(),
                    m.trigger,
                    m.channel_type,
                    m.platform_id,
                    m.thread_id,
                    m.content.to_string(),
                    m.process_after,
                    m.on_wake,
                ],
            )
            .expect("insert messages_in");
        seq
    }

    /// Writes a raw row (for content the runner cannot read).
    pub fn send_raw(&mut self, id: &str, kind: &str, content: &str) -> i64 {
        let seq = self.next_seq;
        self.next_seq += 2;
        self.inbound
            .execute(
                "INSERT INTO messages_in (id, seq, kind, timestamp, channel_type, platform_id, content)
                 VALUES (?1, ?2, ?3, ?4, 'cli', 'local', ?5)",
                params![id, seq, kind, time::now(), content],
            )
            .expect("insert raw");
        seq
    }

    /// `PRAGMA synchronous` of the host's inbound connection (the harness keeps SQLite's
    /// default, FULL, unless a test changes it).
    pub fn host_synchronous(&self, mode: &str) {
        self.inbound
            .pragma_update(None, "synchronous", mode)
            .expect("synchronous");
    }

    pub fn inbound(&self) -> &Connection {
        &self.inbound
    }

    pub fn outbound(&self) -> Connection {
        let c = Connection::open(self.path().join(OUTBOUND_DB)).expect("open outbound");
        c.busy_timeout(Duration::from_secs(5))
            .expect("busy timeout");
        c
    }

    pub fn out_rows(&self) -> Vec<Out> {
        let c = self.outbound();
        let mut stmt = c
            .prepare(
                "SELECT id, seq, in_reply_to, kind, channel_type, platform_id, thread_id, content
                 FROM messages_out ORDER BY seq",
            )
            .expect("prepare");
        stmt.query_map([], |r| {
            let content: String = r.get(7)?;
            let text = match serde_json::from_str::<ChatOut>(&content) {
                Ok(ChatOut::Send { text, .. }) => text,
                _ => format!("<unexpected content {content}>"),
            };
            Ok(Out {
                id: r.get(0)?,
                seq: r.get(1)?,
                in_reply_to: r.get(2)?,
                kind: r.get(3)?,
                channel_type: r.get(4)?,
                platform_id: r.get(5)?,
                thread_id: r.get(6)?,
                text,
            })
        })
        .expect("query")
        .collect::<rusqlite::Result<Vec<_>>>()
        .expect("rows")
    }

    pub fn texts(&self) -> Vec<String> {
        self.out_rows().into_iter().map(|o| o.text).collect()
    }

    pub fn acks(&self) -> HashMap<String, String> {
        let c = self.outbound();
        let mut stmt = c
            .prepare("SELECT message_id, status FROM processing_ack")
            .expect("prepare");
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .expect("query")
            .collect::<rusqlite::Result<_>>()
            .expect("rows")
    }

    pub fn ack(&self, id: &str) -> Option<String> {
        self.acks().remove(id)
    }

    pub fn state(&self, key: &str) -> Option<String> {
        use rusqlite::OptionalExtension as _;
        self.outbound()
            .query_row(
                "SELECT value FROM session_state WHERE key = ?1",
                [key],
                |r| r.get(0),
            )
            .optional()
            .expect("state")
    }

    pub fn write_mock_script(&self, toml: &str) -> PathBuf {
        let path = self.agent_dir.join("mock.toml");
        std::fs::write(&path, toml).expect("write mock.toml");
        path
    }

    /// The mock provider's recorded requests (`NANOCLAW_MOCK_RECORD` = [`Self::record_path`]).
    pub fn record_path(&self) -> PathBuf {
        self.path().join("mock-record.jsonl")
    }

    pub fn recorded(&self) -> Vec<Value> {
        match std::fs::read_to_string(self.record_path()) {
            Ok(s) => s
                .lines()
                .map(|l| serde_json::from_str(l).expect("record line is JSON"))
                .collect(),
            Err(_) => Vec::new(),
        }
    }
}

/// Polls `cond` every 5 ms until it holds or `timeout` passes.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A running `nanoclaw-agent`.
pub struct Agent {
    child: Option<Child>,
    stderr: Arc<Mutex<String>>,
}

impl Agent {
    /// Starts the mock provider against `s`, recording its requests.
    pub fn mock(s: &Session, extra_env: &[(&str, &str)]) -> Agent {
        let mut env = vec![
            ("NANOCLAW_PROVIDER", "mock"),
            ("NANOCLAW_ADMIN_USER_IDS", "cli:admin"),
            ("NANOCLAW_ASSISTANT_NAME", "Andy"),
        ];
        env.extend_from_slice(extra_env);
        let record = s.record_path();
        let record = record.to_str().expect("utf-8 temp path");
        env.push(("NANOCLAW_MOCK_RECORD", record));
        Agent::start(s, &env)
    }

    pub fn start(s: &Session, env: &[(&str, &str)]) -> Agent {
        let mut cmd = Command::new(BIN);
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("NANOCLAW_SESSION_DIR", s.path())
            .env("NANOCLAW_INBOUND_DIR", s.inbound_path())
            .env("NANOCLAW_AGENT_DIR", &s.agent_dir)
            .env("NANOCLAW_GLOBAL_DIR", s.path().join("no-global"))
            .env("NANOCLAW_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn nanoclaw-agent");
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = Arc::clone(&stderr);
        let mut pipe = child.stderr.take().expect("stderr piped");
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            loop {
                match pipe.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => sink
                        .lock()
                        .expect("log lock")
                        .push_str(&String::from_utf8_lossy(&buf[..n])),
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        let note = format!("\n[test harness: reading stderr failed: {e}]\n");
                        sink.lock().expect("log lock").push_str(&note);
                        break;
                    }
                }
            }
        });
        Agent {
            child: Some(child),
            stderr,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    pub fn logs(&self) -> String {
        self.stderr.lock().expect("log lock").clone()
    }

    /// Waits until the agent logged that it is waiting for messages (its watcher is set up).
    pub fn ready(self) -> Agent {
        assert!(
            wait_until(Duration::from_secs(10), || self
                .logs()
                .contains("waiting for messages")),
            "agent did not become ready:\n{}",
            self.logs()
        );
        self
    }

    pub fn signal(&self, sig: i32) {
        let pid = libc_pid(self.pid());
        // SAFETY: signals our own child process.
        unsafe {
            libc::kill(pid, sig);
        }
    }

    /// Waits for the process to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = child.try_wait().expect("try_wait") {
                self.child = None;
                // Let the stderr reader catch the last lines.
                std::thread::sleep(Duration::from_millis(20));
                return Some(st);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// SIGTERM, then waits for the exit.
    pub fn terminate(&mut self) -> ExitStatus {
        self.signal(libc::SIGTERM);
        match self.wait_exit(Duration::from_secs(10)) {
            Some(st) => st,
            None => panic!("agent ignored SIGTERM:\n{}", self.logs()),
        }
    }

    /// CPU time (user + system) used so far, in clock ticks, from /proc.
    pub fn cpu_ticks(&self) -> u64 {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).expect("proc stat");
        // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
        let rest = &stat[stat.rfind(')').expect("comm") + 2..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime")
    }

    /// Resident set size in KiB, from /proc.
    pub fn rss_kib(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("proc status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .expect("VmRSS")
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn libc_pid(pid: u32) -> libc::pid_t {
    libc::pid_t::try_from(pid).expect("pid fits")
}
