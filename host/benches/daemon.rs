//! Whole-daemon benchmarks against a real Docker engine (release builds):
//!
//! - **warm round trip**: a message injected at the test plugin's webhook → router →
//!   inbound.db → the running agent (mock provider) → outbound.db → delivery → the plugin's
//!   `deliver` (its timestamp); p50/p90/p99 over many messages.
//! - **cold round trip**: the same for a chat whose session has no container yet; compared
//!   with the engine's own `docker run` of the same image.
//! - **idle**: RSS and CPU of `nanoclaw run` with every channel plugin loaded, with 1, 100 and
//!   1,000 idle sessions.
//!
//! Run: `cargo bench -p nanoclaw --bench daemon`. Results and method: docs/PERFORMANCE.md.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const IMAGE: &str = "nanoclaw-agent:bench";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

fn release_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map_or(root().join("target"), PathBuf::from)
        .join("release")
}

fn run(cmd: &mut Command) {
    let out = cmd.output().expect("spawn");
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn now_us() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn post(port: u16, body: &str) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "POST /webhook/test HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut r = String::new();
    s.read_to_string(&mut r).unwrap();
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
}

fn cli(data: &Path, args: &[&str]) {
    run(Command::new(release_dir().join("nanoclaw"))
        .env("NANOCLAW_HOME", data)
        .args(args));
}

struct Daemon {
    child: Child,
}

impl Daemon {
    fn start(data: &Path, plugins: &Path, port: u16, env: &[(&str, &str)]) -> Daemon {
        let log = std::fs::File::create(data.parent().unwrap().join("daemon.log")).unwrap();
        let child = Command::new(release_dir().join("nanoclaw"))
            .env("NANOCLAW_HOME", data)
            .env("NANOCLAW_LOG", "warn")
            .envs(env.iter().copied())
            .args([
                "run",
                "--image",
                IMAGE,
                // Cold starts are measured, not the queue for container slots.
                "--max-containers",
                "64",
                "--webhook-listen",
                &format!("127.0.0.1:{port}"),
            ])
            .arg("--plugins")
            .arg(plugins)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let sock = data.join("control.sock");
        let end = Instant::now() + Duration::from_secs(30);
        // The control socket answers once plugins are loaded and channels started.
        while !matches!(
            nanoclaw::control::request_blocking(&sock, &nanoclaw::control::Request::Health),
            Ok(Some(_))
        ) {
            assert!(Instant::now() < end, "daemon did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Daemon { child }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

/// Delivered lines of the test plugin's record: (chat, text, at_us).
fn delivered(record: &Path) -> Vec<(String, String, u128)> {
    std::fs::read_to_string(record)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["call"] == "deliver")
        .map(|v| {
            (
                v["chat_id"].as_str().unwrap_or_default().to_string(),
                v["text"].as_str().unwrap_or_default().to_string(),
                v["at_us"].as_u64().unwrap_or(0) as u128,
            )
        })
        .collect()
}

/// Sends `text` to `chat` and returns the round trip (µs) once its echo is delivered.
fn round_trip(port: u16, record: &Path, chat: &str, id: &str, text: &str) -> u128 {
    let before = delivered(record).len();
    let t0 = now_us();
    let body =
        serde_json::json!({"chat_id": chat, "message_id": id, "sender_handle": "u", "text": text});
    post(port, &body.to_string());
    let end = Instant::now() + Duration::from_secs(60);
    loop {
        let d = delivered(record);
        if let Some((_, _, at)) = d[before..]
            .iter()
            .find(|(c, t, _)| c == chat && t.ends_with(text))
        {
            return at - t0;
        }
        assert!(Instant::now() < end, "no reply to {text}");
        std::thread::sleep(Duration::from_micros(200));
    }
}

fn pct(sorted: &[u128], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

fn summary(name: &str, mut v: Vec<u128>) {
    v.sort_unstable();
    println!(
        "{name}: n={} p50={:.2} ms p90={:.2} ms p99={:.2} ms max={:.2} ms",
        v.len(),
        pct(&v, 0.5),
        pct(&v, 0.9),
        pct(&v, 0.99),
        *v.last().unwrap() as f64 / 1000.0
    );
}

fn setup_agent(data: &Path, folder: &str, chats: &[String]) {
    cli(
        data,
        &[
            "groups",
            "create",
            folder,
            "--folder",
            folder,
            "--provider",
            "mock",
        ],
    );
    for chat in chats {
        cli(
            data,
            &[
                "chats",
                "add",
                &format!("test:{chat}"),
                "--policy",
                "public",
            ],
        );
        cli(data, &["wire", "add", &format!("test:{chat}"), folder]);
    }
    let cfg = data.join("config").join(folder);
    std::fs::create_dir_all(&cfg).unwrap();
    std::fs::write(cfg.join("mock.toml"), "[[rule]]\nreply = \"{text}\"\n").unwrap();
}

fn proc_stat(pid: u32) -> (u64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    let ticks = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let rss_kb = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap()
        .parse()
        .unwrap();
    (ticks, rss_kb)
}

fn main() {
    if !Command::new("docker")
        .arg("info")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
    {
        eprintln!("SKIP: no Docker engine");
        return;
    }
    run(Command::new(env!("CARGO")).current_dir(root()).args([
        "build",
        "--release",
        "-p",
        "nanoclaw",
        "-p",
        "nanoclaw-test-plugin",
        "-p",
        "nanoclaw-plugin-channels",
        "-p",
        "nanoclaw-plugin-example",
        "-p",
        "nanoclaw-agent-runner",
        "-p",
        "nanoclaw-fake-telegram",
    ]));
    run(Command::new("bash")
        .arg(root().join("container/build.sh"))
        .arg("--binary")
        .arg(release_dir().join("nanoclaw-agent"))
        .args(["--tag", IMAGE]));

    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let record = tmp.path().join("record.jsonl");
    let plugins = tmp.path().join("plugins.toml");
    std::fs::write(
        &plugins,
        format!(
            "[plugins.test]\nlibrary = {:?}\n[plugins.test.settings]\nrecord_path = {:?}\n",
            release_dir().join("libnanoclaw_test_plugin.so"),
            record
        ),
    )
    .unwrap();
    const COLD: usize = 10;
    let chats: Vec<String> = (0..=COLD).map(|i| format!("c{i}")).collect();
    setup_agent(&data, "bench", &chats);
    let port = free_port();
    let daemon = Daemon::start(&data, &plugins, port, &[]);

    // Cold: each chat is a new session, so each first message starts a container.
    let mut cold = Vec::new();
    for chat in &chats[1..] {
        cold.push(round_trip(
            port,
            &record,
            chat,
            &format!("{chat}-first"),
            &format!("cold {chat}"),
        ));
    }
    // The engine alone: create + start + exit of the same image.
    let mut engine = Vec::new();
    for _ in 0..COLD {
        let t = now_us();
        run(Command::new("docker").args(["run", "--rm", "--network", "none", IMAGE, "--version"]));
        engine.push(now_us() - t);
    }
    // Warm: one session whose container stays up.
    round_trip(port, &record, "c0", "warmup", "warmup");
    let mut warm = Vec::new();
    for i in 0..300 {
        warm.push(round_trip(
            port,
            &record,
            "c0",
            &format!("w{i}"),
            &format!("warm {i}"),
        ));
    }
    summary("warm round trip", warm);
    summary("cold round trip", cold);
    summary("engine docker run (create+start+exit)", engine);
    drop(daemon);

    // Idle: every channel plugin loaded; 1, 100 and 1,000 idle sessions.
    let fake_port = free_port();
    let token = "123456:ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghij";
    let mut fake = Command::new(release_dir().join("fake-telegram"))
        .args(["serve", "--port", &fake_port.to_string(), "--token", token])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    // The example plugin's platform: `start` only checks the token with `GET /v1/me`.
    let example_api = nanoclaw_fake_platform::FakeServer::start(
        nanoclaw_fake_platform::Harness::new(),
        axum::Router::new().route(
            "/v1/me",
            axum::routing::get(|| async { r#"{"id":"b1","name":"bench"}"# }),
        ),
    )
    .unwrap();
    // Any valid `whsec_<base64>`: nothing is signed during the idle measurement.
    let example_secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    for sessions in [1usize, 100, 1000] {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        let plugins = dir.path().join("plugins.toml");
        std::fs::write(
            &plugins,
            format!(
                "[plugins.cli]\nlibrary = {:?}\n\n[plugins.telegram]\nlibrary = {:?}\n[plugins.telegram.settings]\nbot_token = {{ env = \"TELEGRAM_BOT_TOKEN\" }}\napi_base_url = \"http://127.0.0.1:{fake_port}\"\n\n[plugins.example]\nlibrary = {:?}\n[plugins.example.settings]\napi_base_url = {:?}\napi_token = {{ env = \"EXAMPLE_API_TOKEN\" }}\nwebhook_secret = {{ env = \"EXAMPLE_WEBHOOK_SECRET\" }}\n\n[plugins.test]\nlibrary = {:?}\n",
                release_dir().join("libnanoclaw_plugin_channels.so"),
                release_dir().join("libnanoclaw_plugin_channels.so"),
                release_dir().join("libnanoclaw_plugin_example.so"),
                example_api.base_url(),
                release_dir().join("libnanoclaw_test_plugin.so"),
            ),
        )
        .unwrap();
        make_idle_sessions(&data, sessions);
        let port = free_port();
        let d = Daemon::start(
            &data,
            &plugins,
            port,
            &[
                ("TELEGRAM_BOT_TOKEN", token),
                ("EXAMPLE_API_TOKEN", "bench-token"),
                ("EXAMPLE_WEBHOOK_SECRET", example_secret),
            ],
        );
        std::thread::sleep(Duration::from_secs(3));
        let (t0, _) = proc_stat(d.pid());
        const WINDOW: u64 = 20;
        std::thread::sleep(Duration::from_secs(WINDOW));
        let (t1, rss) = proc_stat(d.pid());
        let hz = 100.0;
        println!(
            "idle with {sessions} sessions: CPU {:.2}% over {WINDOW} s ({} ticks), RSS {:.1} MB",
            (t1 - t0) as f64 / hz / WINDOW as f64 * 100.0,
            t1 - t0,
            rss as f64 / 1024.0
        );
    }
    let _ = fake.kill();
    let _ = fake.wait();
}

/// Creates `n` active sessions with their files, through the library, as past traffic would.
fn make_idle_sessions(data: &Path, n: usize) {
    use nanoclaw::db::Db;
    use nanoclaw::ids::{ChannelName, PlatformId};
    use nanoclaw::sessions::SessionStore;
    use nanoclaw::store::agent_groups::{self, NewAgentGroup};
    use nanoclaw::store::messaging_groups::{self, NewMessagingGroup, UnknownSenderPolicy};
    use nanoclaw::store::wirings::{self, SessionMode, WiringRules};
    let db = Db::open(&data.join("v2.db")).unwrap();
    let store = SessionStore::new(data.join("sessions"));
    let agent = db
        .write(|c| agent_groups::create(c, NewAgentGroup::named("Idle")))
        .unwrap();
    for i in 0..n {
        db.write(|c| {
            let (chat, _) = messaging_groups::get_or_create(
                c,
                &NewMessagingGroup {
                    channel_type: ChannelName::parse("test")?,
                    platform_id: PlatformId::parse(&format!("idle-{i}"))?,
                    name: None,
                    is_group: false,
                    unknown_sender_policy: UnknownSenderPolicy::Public,
                },
            )?;
            wirings::create(c, &chat.id, &agent.id, WiringRules::default())?;
            store.resolve(c, &agent.id, &chat, None, SessionMode::Shared)
        })
        .unwrap();
    }
}
