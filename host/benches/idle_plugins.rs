//! Idle memory of the daemon by plugin set (release builds, the real loader):
//!
//! - **host only**: `nanoclaw run` with an empty `plugins.toml`;
//! - **four plugins**: cli, Telegram (long-polling a local fake Bot API), the example (its API
//!   a local responder) and the test plugin;
//! - **eleven channels**: the channels library (plugins/channels) with cli and nine Telegram
//!   instances, and the example. The library is mapped once, whatever the number of
//!   instances or channel types: instances share its code, statics and runtime stack.
//!
//! For each: RSS 25 s after start, and the largest of the samples taken every 5 s over the
//! minute after the daemon settled (its second sweep, at 30 s), split into anonymous memory (heap, stacks), the host binary's
//! and each library's mapped pages, with the private dirty part (what cannot be dropped or
//! shared: heap, stacks, relocated data) and the thread count.
//!
//! Run: `cargo bench -p nanoclaw --bench idle_plugins`. Results and method:
//! docs/PERFORMANCE.md.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const TOKEN: &str = "123456:ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghij";
/// `whsec_` + base64 of 32 bytes: a well-formed signing secret.
const WEBHOOK_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
/// Before the daemon's second sweep (30 s by default), which releases what start-up used.
const BEFORE_SETTLING: Duration = Duration::from_secs(25);
/// After it: sampled every 5 s for a minute, long enough for every poller's idle cycle (a
/// Telegram long poll lasts 30 s) to run its code again.
const SETTLED: Duration = Duration::from_secs(35);
const WINDOW: Duration = Duration::from_secs(60);

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_owned()
}

fn release_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map_or(root().join("target"), PathBuf::from)
        .join("release")
}

fn lib(name: &str) -> PathBuf {
    release_dir().join(format!("lib{name}.so"))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// Answers every HTTP request with `200 {"id":"bot"}`: enough for a channel that checks its
/// credentials at start and then waits for webhooks.
fn spawn_responder() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut reader = BufReader::new(&stream);
                let mut length = 0usize;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap_or(0);
                    }
                    if line == "\r\n" {
                        let mut body = vec![0; length];
                        let _ = reader.read_exact(&mut body);
                        let reply = "{\"id\":\"bot\",\"name\":\"bot\"}";
                        let _ = write!(
                            &stream,
                            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{reply}",
                            reply.len()
                        );
                        length = 0;
                    }
                }
            });
        }
    });
    port
}

struct Daemon(Child);

impl Daemon {
    fn start(dir: &Path, plugins: &str) -> Daemon {
        let data = dir.join("data");
        std::fs::create_dir_all(&data).expect("data dir");
        let config = dir.join("plugins.toml");
        std::fs::write(&config, plugins).expect("plugins.toml");
        let log = std::fs::File::create(dir.join("daemon.log")).expect("log");
        let child = Command::new(release_dir().join("nanoclaw"))
            .env("NANOCLAW_HOME", &data)
            .env("NANOCLAW_LOG", "warn")
            .env("TELEGRAM_BOT_TOKEN", TOKEN)
            .env("EXAMPLE_API_TOKEN", "example-token")
            .env("EXAMPLE_WEBHOOK_SECRET", WEBHOOK_SECRET)
            .args(["run", "--image", "nanoclaw-agent:idle-bench"])
            .arg("--webhook-listen")
            .arg(format!("127.0.0.1:{}", free_port()))
            .arg("--plugins")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn nanoclaw");
        let sock = data.join("control.sock");
        let end = Instant::now() + Duration::from_secs(60);
        while !matches!(
            nanoclaw::control::request_blocking(&sock, &nanoclaw::control::Request::Health),
            Ok(Some(_))
        ) {
            assert!(
                Instant::now() < end,
                "daemon did not start:\n{}",
                std::fs::read_to_string(dir.join("daemon.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Daemon(child)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let _ = self.0.wait();
    }
}

/// RSS of a process in kB: total, anonymous, and file-backed by mapped file name.
struct Memory {
    total: u64,
    anon: u64,
    private_dirty: u64,
    files: BTreeMap<String, u64>,
    threads: usize,
}

fn memory(pid: u32) -> Memory {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).expect("smaps");
    let mut m = Memory {
        total: 0,
        anon: 0,
        private_dirty: 0,
        files: BTreeMap::new(),
        threads: std::fs::read_dir(format!("/proc/{pid}/task")).map_or(0, |d| d.count()),
    };
    let mut current: Option<String> = None;
    for line in smaps.lines() {
        let mut fields = line.split_whitespace();
        let first = fields.next().unwrap_or_default();
        if first.contains('-') && !first.ends_with(':') {
            // A mapping header: range perms offset dev inode [path].
            current = fields.nth(4).filter(|p| p.starts_with('/')).map(|p| {
                Path::new(p)
                    .file_name()
                    .map_or(p.to_owned(), |n| n.to_string_lossy().into_owned())
            });
        } else if first == "Private_Dirty:" {
            m.private_dirty += fields.next().and_then(|v| v.parse().ok()).unwrap_or(0);
        } else if first == "Rss:" {
            let kb: u64 = fields.next().and_then(|v| v.parse().ok()).unwrap_or(0);
            m.total += kb;
            match &current {
                Some(file) => *m.files.entry(file.clone()).or_default() += kb,
                None => m.anon += kb,
            }
        }
    }
    m
}

fn report(name: &str, m: &Memory) {
    let mb = |kb: u64| kb as f64 / 1024.0;
    let plugins: u64 = m
        .files
        .iter()
        .filter(|(f, _)| f.starts_with("libnanoclaw"))
        .map(|(_, kb)| kb)
        .sum();
    let host = m.files.get("nanoclaw").copied().unwrap_or(0);
    let other = m.files.values().sum::<u64>() - plugins - host;
    println!(
        "{name}: RSS {:.1} MB = anonymous {:.1} + host binary {:.1} + plugin libraries {:.1} + \
         system libraries {:.1}; private dirty {:.1}; {} threads",
        mb(m.total),
        mb(m.anon),
        mb(host),
        mb(plugins),
        mb(other),
        mb(m.private_dirty),
        m.threads
    );
    for (file, kb) in m.files.iter().filter(|(f, _)| f.starts_with("libnanoclaw")) {
        println!("    {file}: {:.1} MB", mb(*kb));
    }
}

fn measure(name: &str, plugins: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = Daemon::start(dir.path(), plugins);
    let started = Instant::now();
    std::thread::sleep(BEFORE_SETTLING);
    let early = memory(daemon.0.id());
    println!(
        "{name}, 25 s after start: RSS {:.1} MB",
        early.total as f64 / 1024.0
    );
    std::thread::sleep(SETTLED.saturating_sub(started.elapsed()));
    let mut largest = memory(daemon.0.id());
    while started.elapsed() < SETTLED + WINDOW {
        std::thread::sleep(Duration::from_secs(5));
        let sample = memory(daemon.0.id());
        if sample.total > largest.total {
            largest = sample;
        }
    }
    report(&format!("{name}, settled (largest sample)"), &largest);
}

fn main() {
    let status = Command::new(env!("CARGO"))
        .current_dir(root())
        .args(["build", "--release"])
        .args(["-p", "nanoclaw", "-p", "nanoclaw-test-plugin"])
        .args(["-p", "nanoclaw-plugin-channels"])
        .args([
            "-p",
            "nanoclaw-plugin-example",
            "-p",
            "nanoclaw-fake-telegram",
        ])
        .status()
        .expect("cargo build");
    assert!(status.success(), "release build failed");

    // One fake Bot API per Telegram instance: two pollers of one bot would keep taking the
    // poll from each other (409), which is not idle.
    let fakes = std::cell::RefCell::new(Vec::new());
    let fake_bot_api = || {
        let port = free_port();
        let child = Command::new(release_dir().join("fake-telegram"))
            .args(["serve", "--port", &port.to_string(), "--token", TOKEN])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("fake-telegram");
        fakes.borrow_mut().push(child);
        std::thread::sleep(Duration::from_millis(200));
        port
    };
    let example_port = spawn_responder();

    let channels = lib("nanoclaw_plugin_channels");
    let cli = format!("[plugins.cli]\nlibrary = {channels:?}\n");
    let telegram = |instance: &str| {
        let telegram_port = fake_bot_api();
        format!(
            "[plugins.{instance}]\nlibrary = {channels:?}\nchannel = \"telegram\"\n\
             [plugins.{instance}.settings]\n\
             bot_token = {{ env = \"TELEGRAM_BOT_TOKEN\" }}\n\
             api_base_url = \"http://127.0.0.1:{telegram_port}\"\n"
        )
    };
    let example = format!(
        "[plugins.example]\nlibrary = {:?}\n[plugins.example.settings]\n\
         api_base_url = \"http://127.0.0.1:{example_port}\"\n\
         api_token = {{ env = \"EXAMPLE_API_TOKEN\" }}\n\
         webhook_secret = {{ env = \"EXAMPLE_WEBHOOK_SECRET\" }}\n",
        lib("nanoclaw_plugin_example")
    );
    let test = format!(
        "[plugins.test]\nlibrary = {:?}\n",
        lib("nanoclaw_test_plugin")
    );

    measure("host only", "");
    measure(
        "four plugins (cli, telegram, example, test)",
        &format!("{cli}{}{example}{test}", telegram("telegram")),
    );

    let mut eleven = format!("{cli}{}{example}", telegram("telegram"));
    for i in 1..=8 {
        eleven.push_str(&telegram(&format!("channel{i}")));
    }
    measure(
        "eleven channels (cli and nine Telegram instances from the channels library, example)",
        &eleven,
    );

    for mut fake in fakes.take() {
        let _ = fake.kill();
        let _ = fake.wait();
    }
}
