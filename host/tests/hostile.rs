//! The agent is an attacker. A hostile agent (`tests/hostile-agent`) runs in a REAL
//! container, as an agent group of its own, next to a well-behaved agent, and attacks the
//! host from inside: ids and links that point out of its session, directories swapped while
//! the host delivers, giant rows and files, a FIFO, a flood of file events, writing the
//! read-only `inbound.db`, locking it, a turn that never ends with a heartbeat that never
//! stops.
//!
//! Asserted: nothing outside the session directories is read, written or deleted (canary
//! files with a secret are never delivered and stay as they were); every hostile row fails
//! with a reason the agent can read; the write to `inbound.db` is refused by the mount; the
//! locking and the immortal containers are stopped; and the well-behaved agent keeps
//! answering throughout, its round trips as quick as without the attacker (within noise).
//!
//! A second test gives the hostile agent a model (the Claude provider, so the host serves it
//! a model-API proxy socket) and has it hunt for the credential and misuse the socket.

mod common;
mod harness;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use harness::testchat::{ECHO, Setup};
use harness::{Daemon, cli_ok, hostile_image, require_engine, wait_until};

const SECRET: &str = "CANARY-SECRET-7f3a9";
const VICTIM: &str = "CANARY-VICTIM-41d2";

/// Every file under the data dir but the sessions, logs and the daemon's own databases:
/// path -> (size, modified).
fn snapshot(data: &Path) -> BTreeMap<PathBuf, (u64, SystemTime)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![data.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            let rel = path.strip_prefix(data).unwrap().to_path_buf();
            let top = rel
                .components()
                .next()
                .unwrap()
                .as_os_str()
                .to_string_lossy()
                .to_string();
            if ["sessions", "logs", "control.sock"].contains(&top.as_str())
                || top.starts_with("v2.db")
            {
                continue;
            }
            let meta = std::fs::symlink_metadata(&path).unwrap();
            if meta.is_dir() {
                stack.push(path);
            } else {
                out.insert(rel, (meta.len(), meta.modified().unwrap()));
            }
        }
    }
    out
}

/// The session directory of the one session of a chat.
fn session_of(s: &Setup, chat: &str) -> PathBuf {
    let db = nanoclaw::db::Db::open(&s.data.join("v2.db")).unwrap();
    let id: String = db
        .read(|c| {
            Ok(c.query_row(
                "SELECT s.agent_group_id || '/' || s.id FROM sessions s JOIN messaging_groups m
                 ON s.messaging_group_id = m.id WHERE m.platform_id = ?1",
                [chat],
                |r| r.get(0),
            )?)
        })
        .unwrap();
    s.data.join("sessions").join(id)
}

/// How each outbound row of a session ended: id -> (status, error).
fn outcomes(session: &Path) -> BTreeMap<String, (String, Option<String>)> {
    let Ok(db) = harness::inbound_db(session) else {
        return BTreeMap::new();
    };
    let mut stmt = db
        .prepare("SELECT message_out_id, status, error FROM delivered")
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, (r.get(1)?, r.get(2)?))))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap_or_default()
}

/// Reads the plugin's delivery record as it grows (a round trip must not cost the test
/// more than the host: the record is long by the end).
struct Tail {
    path: PathBuf,
    offset: u64,
    partial: String,
}

impl Tail {
    fn new(path: &Path) -> Tail {
        let offset = std::fs::metadata(path).map_or(0, |m| m.len());
        Tail {
            path: path.to_path_buf(),
            offset,
            partial: String::new(),
        }
    }

    /// New complete lines since the last call.
    fn lines(&mut self) -> Vec<String> {
        use std::io::{Read, Seek, SeekFrom};
        let Ok(mut f) = std::fs::File::open(&self.path) else {
            return Vec::new();
        };
        let _ = f.seek(SeekFrom::Start(self.offset));
        let mut buf = String::new();
        let n = f.read_to_string(&mut buf).unwrap_or(0);
        self.offset += n as u64;
        self.partial.push_str(&buf);
        let mut out = Vec::new();
        while let Some(end) = self.partial.find('\n') {
            out.push(self.partial[..end].to_string());
            self.partial.drain(..=end);
        }
        out
    }
}

/// One round trip through the well-behaved agent; returns how long it took.
fn round_trip(s: &Setup, tail: &mut Tail, daemon: &Daemon, n: usize) -> Duration {
    let text = format!("ping {n}");
    let want = format!("\"text\":\"echo: {text}\"");
    let started = Instant::now();
    s.say("good-room", "alice", &format!("g{n}"), &text);
    let ok = wait_until_fast(Duration::from_secs(60), || {
        tail.lines().iter().any(|l| l.contains(&want))
    });
    assert!(
        ok,
        "the good agent never answered {text:?}:\n{}",
        daemon.log()
    );
    started.elapsed()
}

fn wait_until_fast(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    f()
}

fn p99(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[((v.len() as f64) * 0.99).ceil() as usize - 1]
}

/// Sends an attack and waits for the agent's `done: <attack>`.
fn attack(s: &Setup, daemon: &Daemon, chat: &str, n: usize, text: &str) -> String {
    let word = text.split(' ').next().unwrap();
    s.say(chat, "eve", &format!("e{n}"), text);
    let mut reply = None;
    let ok = wait_until(Duration::from_secs(60), || {
        reply = s
            .delivered_to(chat)
            .into_iter()
            .find(|t| t.starts_with(&format!("done: {word}")));
        reply.is_some()
    });
    assert!(ok, "attack {text:?} never reported:\n{}", daemon.log());
    reply.unwrap()
}

#[test]
fn a_hostile_agent_cannot_reach_the_host_or_slow_its_neighbour() {
    if !require_engine("a_hostile_agent_cannot_reach_the_host_or_slow_its_neighbour") {
        return;
    }
    let s = Setup::new();
    std::fs::write(s.data.join(".env"), format!("TOKEN={SECRET}\n")).unwrap();
    let victim = s.data.join("victim");
    std::fs::create_dir_all(&victim).unwrap();
    std::fs::write(victim.join("keep.txt"), VICTIM).unwrap();
    std::fs::write(victim.join("a.txt"), VICTIM).unwrap();
    s.agent("good", "good-room", ECHO);
    s.agent("evil", "evil-room", ECHO);
    for chat in ["evil-lock", "evil-turn"] {
        cli_ok(
            &s.data,
            &[
                "chats",
                "add",
                &format!("test:{chat}"),
                "--name",
                chat,
                "--policy",
                "public",
            ],
        );
        cli_ok(&s.data, &["wire", "add", &format!("test:{chat}"), "evil"]);
    }
    cli_ok(
        &s.data,
        &["groups", "set", "evil", "--image", hostile_image()],
    );
    let daemon = Daemon::start(
        &s.data,
        &s.plugins_toml(),
        &[
            "--webhook-listen",
            &format!("127.0.0.1:{}", s.port),
            "--max-turn-secs",
            "8",
        ],
    );
    let before = snapshot(&s.data);

    // The good agent's round trips without an attacker (the first starts its container).
    let mut tail = Tail::new(&s.record);
    round_trip(&s, &mut tail, &daemon, 0);
    let baseline: Vec<Duration> = (1..=15)
        .map(|n| round_trip(&s, &mut tail, &daemon, n))
        .collect();

    let mut during = Vec::new();
    let mut n = 100;
    let mut next = |s: &Setup| {
        n += 1;
        round_trip(s, &mut tail, &daemon, n)
    };

    // Writing inbound.db from inside the container: the mount refuses.
    let said = attack(&s, &daemon, "evil-room", 1, "write-inbound");
    assert!(
        said.contains("db: refused")
            && said.contains("file: refused")
            && said.contains("dir: refused"),
        "{said}"
    );
    assert!(
        !said.contains("WRITTEN") && !said.contains("OPENED"),
        "{said}"
    );
    during.push(next(&s));

    for (i, text) in ["traversal", "links .env", "fifo", "giant", "swap", "flood"]
        .into_iter()
        .enumerate()
    {
        attack(&s, &daemon, "evil-room", 10 + i, text);
        let mut v = Vec::new();
        for _ in 0..3 {
            let d = next(&s);
            v.push(d);
            during.push(d);
        }
        eprintln!("PHASE {text}: {v:?}");
    }
    // The outbox itself a link: last, it breaks every later file of the session.
    attack(&s, &daemon, "evil-room", 20, "outbox-link");

    // Every hostile row ends, failed with a reason where it was an attack.
    let evil = session_of(&s, "evil-room");
    let settled = wait_until(Duration::from_secs(120), || {
        let o = outcomes(&evil);
        ["victim", "giant-sparse", "with-link"]
            .iter()
            .all(|k| o.contains_key(*k))
            && (0..500).all(|i| o.contains_key(&format!("burst-{i}")))
            && (0..40).all(|i| o.contains_key(&format!("swap-{i}")))
    });
    let o = outcomes(&evil);
    assert!(settled, "hostile rows still open: {o:?}\n{}", daemon.log());
    let failed = |key: &str, why: &str| {
        let (status, error) = o.get(key).unwrap_or_else(|| panic!("no outcome for {key}"));
        assert_eq!(
            status,
            "failed",
            "{key}: {error:?}; sent: {:?}",
            s.delivered()
                .iter()
                .filter(|d| d["text"]
                    .as_str()
                    .is_some_and(|t| !t.starts_with("echo") && !t.starts_with("burst")))
                .collect::<Vec<_>>()
        );
        let error = error.clone().unwrap_or_default();
        assert!(error.contains(why), "{key}: {error}");
    };
    let traversal: Vec<_> = o.keys().filter(|k| k.starts_with('#')).collect();
    assert_eq!(traversal.len(), 4, "ids that are paths: {o:?}");
    for k in traversal {
        failed(k, "unusable message id");
    }
    failed("trav-name", "unsafe file name");
    failed("link-dir", "not a plain file");
    failed("link-file", "not a plain file");
    failed("fifo", "not a regular file");
    failed("giant-text", "more than the limit");
    failed("giant-files", "files");
    failed("giant-sparse", "more than the limit");
    failed("victim", "not a plain file");
    assert_eq!(o["with-link"].0, "delivered");
    for i in 0..500 {
        assert_eq!(o[&format!("burst-{i}")].0, "delivered", "burst-{i}");
    }

    // Nothing of the canaries reached a chat, whatever the swapping did.
    for d in s.delivered() {
        let text = d["text"].as_str().unwrap_or_default();
        assert!(
            !text.contains(SECRET) && !text.contains(VICTIM),
            "leaked: {d}"
        );
        for f in d["files"].as_array().into_iter().flatten() {
            let head = f["head"].as_str().unwrap_or_default();
            assert!(
                !head.contains(SECRET) && !head.contains(VICTIM),
                "leaked file: {d}"
            );
        }
    }

    // A container holding inbound.db locked: the host stops it, the good agent never waits.
    attack(&s, &daemon, "evil-lock", 30, "lock");
    s.say("evil-lock", "eve", "e31", "echo anyone there?");
    let lock_started = Instant::now();
    let mut v = Vec::new();
    while lock_started.elapsed() < Duration::from_secs(12) {
        let d = next(&s);
        v.push(d);
        during.push(d);
    }
    eprintln!(
        "PHASE lock: p99 {:?} max {:?} n {}",
        p99(v.clone()),
        v.iter().max(),
        v.len()
    );
    // Whichever comes first stops it: the writer finding the DB locked, or the turn limit
    // (the locked DB keeps its message unfinished).
    let locker = session_of(&s, "evil-lock");
    let locker = locker.file_name().unwrap().to_string_lossy().to_string();
    let stopped = wait_until(Duration::from_secs(60), || {
        daemon
            .log()
            .lines()
            .any(|l| l.contains("killing agent container") && l.contains(&locker))
    });
    assert!(
        stopped,
        "the locking container was not stopped:\n{}",
        daemon.log()
    );

    // A turn that never ends, with a fresh heartbeat and fresh claim times: stopped at the
    // turn limit all the same.
    attack(&s, &daemon, "evil-turn", 40, "immortal");
    let turn_started = Instant::now();
    let mut v = Vec::new();
    while turn_started.elapsed() < Duration::from_secs(4) {
        let d = next(&s);
        v.push(d);
        during.push(d);
    }
    eprintln!(
        "PHASE immortal: p99 {:?} max {:?} n {}",
        p99(v.clone()),
        v.iter().max(),
        v.len()
    );
    let immortal = session_of(&s, "evil-turn");
    let immortal = immortal.file_name().unwrap().to_string_lossy().to_string();
    let ended = wait_until(Duration::from_secs(60), || {
        daemon
            .log()
            .lines()
            .any(|l| l.contains("its turn ran longer than") && l.contains(&immortal))
    });
    assert!(ended, "the immortal container lives on:\n{}", daemon.log());

    // Nothing outside the session directories was touched.
    assert_eq!(
        std::fs::read_to_string(s.data.join(".env")).unwrap(),
        format!("TOKEN={SECRET}\n")
    );
    assert_eq!(
        std::fs::read_to_string(victim.join("keep.txt")).unwrap(),
        VICTIM
    );
    assert_eq!(
        snapshot(&s.data),
        before,
        "files outside the sessions changed"
    );

    // The good agent was not held up. What a hostile agent could do to it (a locked DB, a
    // flood of events, a busy writer) shows as waits of seconds; CPU shared with other work
    // on the machine shows as tens to a few hundred ms. The p99s with nothing else running
    // are measured and written up in docs/PERFORMANCE.md ("Under attack").
    let (base, under_attack) = (p99(baseline), p99(during.clone()));
    eprintln!(
        "round trip p99: {base:?} alone, {under_attack:?} under attack ({} samples)",
        during.len()
    );
    assert!(
        under_attack <= base * 4 + Duration::from_millis(1000),
        "the good agent slowed down: p99 {base:?} alone, {under_attack:?} under attack"
    );
}

/// The model credential the proxy holds in the next test.
const MODEL_KEY: &str = "sk-ant-CANARY-MODEL-KEY-93be";

/// A model API on loopback: answers every request with a small message and records the
/// `x-api-key` each one carried.
fn fake_model_api() -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use axum::http::HeaderMap;
    let keys = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let seen = keys.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let app = axum::Router::new().fallback(move |headers: HeaderMap| {
                let seen = seen.clone();
                async move {
                    let key = headers
                        .get("x-api-key")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_string();
                    seen.lock().unwrap().push(key);
                    (
                        [("content-type", "application/json")],
                        r#"{"type":"message","role":"assistant","model":"claude-fake","content":[{"type":"text","text":"hi"}],"usage":{"input_tokens":3,"output_tokens":2}}"#,
                    )
                }
            });
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            let _ = axum::serve(listener, app).await;
        });
    });
    (base, keys)
}

#[test]
fn a_hostile_agent_gets_the_model_and_nothing_else_through_the_proxy() {
    if !require_engine("a_hostile_agent_gets_the_model_and_nothing_else_through_the_proxy") {
        return;
    }
    let s = Setup::new();
    let (base, keys) = fake_model_api();
    std::fs::write(
        s.data.join(".env"),
        format!("ANTHROPIC_API_KEY={MODEL_KEY}\nANTHROPIC_BASE_URL={base}\n"),
    )
    .unwrap();
    s.agent("evil", "evil-room", ECHO);
    cli_ok(
        &s.data,
        &[
            "groups",
            "set",
            "evil",
            "--image",
            hostile_image(),
            "--provider",
            "claude",
        ],
    );
    let daemon = s.start();
    let said = attack(
        &s,
        &daemon,
        "evil-room",
        1,
        // Reversed: the message must not carry the key into inbound.db itself.
        &format!(
            "model-proxy {}",
            MODEL_KEY.chars().rev().collect::<String>()
        ),
    );
    eprintln!("{said}");
    // The key is nowhere the agent can look: not its environment, not a file, not an answer.
    assert!(
        said.contains("env: clean") && said.contains("files: clean"),
        "{said}"
    );
    assert!(!said.contains("KEY IN"), "{said}");
    // The socket's directory is the host's: nothing planted, nothing removed.
    assert!(
        said.contains("plant: refused") && said.contains("unlink: refused"),
        "{said}"
    );
    // The model endpoint works; nothing else passes.
    assert!(said.contains("POST /v1/messages: HTTP/1.1 200"), "{said}");
    for refused in [
        "GET /v1/models: HTTP/1.1 403",
        "POST /v1/files: HTTP/1.1 403",
        "POST /api/oauth/claude_cli/create_api_key: HTTP/1.1 403",
    ] {
        assert!(said.contains(refused), "{refused}: {said}");
    }
    // Only the model request reached the API, with the host's key instead of the agent's.
    assert_eq!(*keys.lock().unwrap(), [MODEL_KEY]);
    // Docker's own record of the container has no key either.
    for id in harness::containers(&s.data) {
        let out = std::process::Command::new("docker")
            .args(["inspect", &id])
            .output()
            .unwrap();
        let inspect = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success() && !inspect.is_empty());
        assert!(!inspect.contains(MODEL_KEY), "the key is in docker inspect");
        assert!(
            inspect.contains("/run/nanoclaw"),
            "the socket dir is mounted"
        );
    }
    // The tokens were counted for the agent.
    let usage = harness::cli_ok(&s.data, &["--json", "usage"]);
    let rows: serde_json::Value = serde_json::from_str(&usage).unwrap();
    assert_eq!(rows[0]["agent"], "evil", "{usage}");
    assert_eq!(rows[0]["requests"], 1, "{usage}");
    assert_eq!(rows[0]["input"], 3, "{usage}");
    drop(daemon);
}
