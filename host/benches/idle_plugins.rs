//! Idle memory of the daemon by plugin set (release builds, the real loader):
//!
//! - **host only**: `nanoclaw run` with an empty `plugins.toml`;
//! - **six channels**: one instance of each channel of the channels library (plugins/channels)
//!   available now: cli, Telegram (long polling), Slack (Socket Mode), Discord (gateway),
//!   Webex (signed webhooks, registered at start) and WhatsApp (Cloud API webhooks), plus the
//!   example plugin (a library of its own);
//! - **eleven channels**: those six and five more instances, chosen for the modes the
//!   channels still to come will run in (one more long poller, one more gateway, three more
//!   webhook receivers): Slack in Events API mode, a second Telegram bot, a second Discord
//!   bot, a second Webex bot whose webhooks the operator registered, a second WhatsApp
//!   number; plus the example.
//!
//! Every channel runs against its fake platform, started in this process (tests/fake-*), with
//! the `plugins.toml` table and the environment secrets the e2e tests use. A channel is one
//! function returning its table and its variables ([`Channel`]); a set is a list of
//! (instance, function). The channels library is mapped once, whatever the number of
//! instances or channels.
//!
//! For each set: RSS 25 s after start, and the largest of the samples taken every 5 s over
//! the minute after the daemon settled (its second sweep, at 30 s), split into anonymous
//! memory (heap, stacks), the host binary's and each library's mapped pages, with the private
//! dirty part (what cannot be dropped or shared: heap, stacks, relocated data) and the thread
//! count. Then the plugins' health, so that a channel that did not stay up is seen.
//!
//! The daemon connects to the Docker engine at start when one answers (it runs without); the
//! figures in docs/PERFORMANCE.md were taken with one answering, as in production.
//!
//! Run: `cargo bench -p nanoclaw --bench idle_plugins`. Results and method:
//! docs/PERFORMANCE.md.

use std::any::Any;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nanoclaw_fake_discord::FakeDiscord;
use nanoclaw_fake_slack::FakeSlack;
use nanoclaw_fake_telegram::FakeTelegram;
use nanoclaw_fake_webex::FakeWebex;
use nanoclaw_fake_whatsapp::FakeWhatsApp;

/// `whsec_` + base64 of 32 bytes: a well-formed signing secret.
const EXAMPLE_WEBHOOK_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
/// A token in BotFather's shape (the plugin checks it), accepted by the fake.
const TELEGRAM_TOKEN: &str = "1234567890:FAKE-token-for-e2e-tests-only-0000000";
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

// ---- Channels -------------------------------------------------------------------------------

/// One channel instance: its `[plugins.<instance>]` table and the secrets it reads, as
/// `(variable, value)` pairs for `data/.env`.
type Instance = (String, Vec<(String, String)>);

/// A channel for the bench: given the instance name, it starts the channel's fake platform
/// (kept in the [`Setup`]) and returns the instance's table and secrets. To measure a new
/// channel, write one of these and list it in a set in `main`.
type Channel = fn(&mut Setup, &str) -> Instance;

/// What the channels of one set share: the daemon's webhook port (for channels that register
/// their webhook URL) and their fakes, which run in this process until the set is measured.
struct Setup {
    webhook_port: u16,
    fakes: Vec<Box<dyn Any>>,
}

impl Setup {
    fn keep<T: Any>(&mut self, fake: T) -> &T {
        self.fakes.push(Box::new(fake));
        self.fakes
            .last()
            .and_then(|f| f.downcast_ref())
            .expect("just kept")
    }

    /// The public URL of the instance's webhook path on the daemon.
    fn webhook_url(&self, instance: &str) -> String {
        format!("http://127.0.0.1:{}/webhook/{instance}", self.webhook_port)
    }
}

/// `[plugins.<instance>]` of the channels library (the default `library`), with `channel`
/// when the instance is not named after it. Required: a channel that fails to start stops
/// the daemon, and the bench with it.
fn table(instance: &str, channel: &str, settings: &str) -> String {
    let pick = if instance == channel {
        String::new()
    } else {
        format!("channel = {channel:?}\n")
    };
    let settings = if settings.is_empty() {
        String::new()
    } else {
        format!("[plugins.{instance}.settings]\n{settings}")
    };
    format!("[plugins.{instance}]\n{pick}required = true\n{settings}")
}

/// The variable holding `what` for `instance`: `TELEGRAM_BOT_TOKEN`, `TG_2_BOT_TOKEN`.
fn var(instance: &str, what: &str) -> String {
    format!("{}_{what}", instance.to_ascii_uppercase().replace('-', "_"))
}

/// Settings lines `key = { env = "VAR" }` and the `.env` pairs, for `(key, variable suffix,
/// value)` triples.
fn secrets(instance: &str, list: &[(&str, &str, &str)]) -> (String, Vec<(String, String)>) {
    let mut lines = String::new();
    let mut env = Vec::new();
    for (key, what, value) in list {
        let name = var(instance, what);
        lines.push_str(&format!("{key} = {{ env = {name:?} }}\n"));
        env.push((name, (*value).to_owned()));
    }
    (lines, env)
}

/// The local chat socket: no settings, no platform.
fn cli(_: &mut Setup, instance: &str) -> Instance {
    (table(instance, "cli", ""), Vec::new())
}

/// Telegram, long-polling its own fake Bot API (two pollers of one bot would keep taking the
/// poll from each other). The default 30 s poll, as in production.
fn telegram(setup: &mut Setup, instance: &str) -> Instance {
    let fake = setup.keep(FakeTelegram::start(TELEGRAM_TOKEN).expect("start the fake Bot API"));
    let (lines, env) = secrets(instance, &[("bot_token", "BOT_TOKEN", TELEGRAM_TOKEN)]);
    let settings = format!("{lines}api_base_url = {:?}\n", fake.base_url());
    (table(instance, "telegram", &settings), env)
}

/// Slack in Socket Mode: a WebSocket to the fake held open.
fn slack(setup: &mut Setup, instance: &str) -> Instance {
    use nanoclaw_fake_slack::{APP_TOKEN, BOT_TOKEN};
    let fake = setup.keep(FakeSlack::start());
    let (lines, env) = secrets(
        instance,
        &[
            ("bot_token", "BOT_TOKEN", BOT_TOKEN),
            ("app_token", "APP_TOKEN", APP_TOKEN),
        ],
    );
    let settings = format!(
        "{lines}api_base_url = {:?}\nfile_hosts = [{:?}]\n",
        fake.api_url(),
        fake.base_url()
    );
    (table(instance, "slack", &settings), env)
}

/// Slack in Events API mode: signed webhooks to the daemon, no connection held.
fn slack_events_api(setup: &mut Setup, instance: &str) -> Instance {
    use nanoclaw_fake_slack::{BOT_TOKEN, SIGNING_SECRET};
    let fake = setup.keep(FakeSlack::start());
    let (lines, env) = secrets(
        instance,
        &[
            ("bot_token", "BOT_TOKEN", BOT_TOKEN),
            ("signing_secret", "SIGNING_SECRET", SIGNING_SECRET),
        ],
    );
    let settings = format!(
        "{lines}api_base_url = {:?}\nfile_hosts = [{:?}]\n",
        fake.api_url(),
        fake.base_url()
    );
    (table(instance, "slack", &settings), env)
}

/// Discord: the gateway WebSocket to its own fake, heartbeating.
fn discord(setup: &mut Setup, instance: &str) -> Instance {
    use nanoclaw_fake_discord::TOKEN;
    let fake = setup.keep(FakeDiscord::start());
    let (lines, env) = secrets(instance, &[("bot_token", "BOT_TOKEN", TOKEN)]);
    let settings = format!(
        "{lines}api_base_url = {:?}\ngateway_url = {:?}\n",
        fake.api_base_url(),
        fake.gateway_url()
    );
    (table(instance, "discord", &settings), env)
}

/// Webex with `webhook_url`: registers its webhooks with the fake at start, then waits for
/// them.
fn webex(setup: &mut Setup, instance: &str) -> Instance {
    let url = setup.webhook_url(instance);
    webex_settings(setup, instance, &format!("webhook_url = {url:?}\n"))
}

/// Webex whose webhooks the operator registered: it only waits for them.
fn webex_registered_by_operator(setup: &mut Setup, instance: &str) -> Instance {
    webex_settings(setup, instance, "")
}

fn webex_settings(setup: &mut Setup, instance: &str, more: &str) -> Instance {
    use nanoclaw_fake_webex::{BOT_TOKEN, WEBHOOK_SECRET};
    let fake = setup.keep(FakeWebex::start());
    let (lines, env) = secrets(
        instance,
        &[
            ("bot_token", "BOT_TOKEN", BOT_TOKEN),
            ("webhook_secret", "WEBHOOK_SECRET", WEBHOOK_SECRET),
        ],
    );
    let settings = format!("{lines}{more}api_base_url = {:?}\n", fake.api_url());
    (table(instance, "webex", &settings), env)
}

/// WhatsApp (Cloud API): waits for Meta's signed notifications.
fn whatsapp(setup: &mut Setup, instance: &str) -> Instance {
    use nanoclaw_fake_whatsapp::{ACCESS_TOKEN, APP_SECRET, PHONE_NUMBER_ID, VERIFY_TOKEN};
    let fake = setup.keep(FakeWhatsApp::start());
    let (lines, env) = secrets(
        instance,
        &[
            ("access_token", "ACCESS_TOKEN", ACCESS_TOKEN),
            ("app_secret", "APP_SECRET", APP_SECRET),
            ("verify_token", "VERIFY_TOKEN", VERIFY_TOKEN),
        ],
    );
    let settings = format!(
        "{lines}phone_number_id = {PHONE_NUMBER_ID:?}\napi_base_url = {:?}\nmedia_hosts = [{:?}]\n",
        fake.api_url(),
        fake.base_url()
    );
    (table(instance, "whatsapp", &settings), env)
}

/// The example plugin, a third-party-style library of its own; its API a local responder.
fn example(_: &mut Setup, instance: &str) -> Instance {
    let port = spawn_responder();
    let (lines, env) = secrets(
        instance,
        &[
            ("api_token", "API_TOKEN", "example-token"),
            ("webhook_secret", "WEBHOOK_SECRET", EXAMPLE_WEBHOOK_SECRET),
        ],
    );
    let table = format!(
        "[plugins.{instance}]\nlibrary = {:?}\nrequired = true\n\
         [plugins.{instance}.settings]\n{lines}api_base_url = \"http://127.0.0.1:{port}\"\n",
        lib("nanoclaw_plugin_example")
    );
    (table, env)
}

/// One instance of each channel of the channels library.
const SIX: &[(&str, Channel)] = &[
    ("cli", cli),
    ("telegram", telegram),
    ("slack", slack),
    ("discord", discord),
    ("webex", webex),
    ("whatsapp", whatsapp),
];

/// Five more, for the eleven: the modes the channels still to come will run in (Matrix
/// long-polls its sync; Teams, Google Chat, Resend and iMessage take webhooks), here one more
/// long poller, one more gateway (a heavier idle than a webhook) and three webhook receivers.
const FIVE_MORE: &[(&str, Channel)] = &[
    ("slack-events", slack_events_api),
    ("tg-2", telegram),
    ("discord-2", discord),
    ("webex-2", webex_registered_by_operator),
    ("whatsapp-2", whatsapp),
];

const EXAMPLE: (&str, Channel) = ("example", example);

// ---- The daemon and its memory --------------------------------------------------------------

struct Daemon {
    child: Child,
    sock: PathBuf,
    log: PathBuf,
}

impl Daemon {
    fn start(dir: &Path, plugins: &str, env: &[(String, String)], webhook_port: u16) -> Daemon {
        let data = dir.join("data");
        std::fs::create_dir_all(&data).expect("data dir");
        let dotenv: String = env.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
        std::fs::write(data.join(".env"), dotenv).expect(".env");
        let config = dir.join("plugins.toml");
        std::fs::write(&config, plugins).expect("plugins.toml");
        let log = dir.join("daemon.log");
        let child = Command::new(release_dir().join("nanoclaw"))
            .env("NANOCLAW_HOME", &data)
            .env("NANOCLAW_LOG", "warn")
            // `library = "channels"` must find the one built next to the daemon.
            .env_remove("NANOCLAW_PLUGIN_PATH")
            .args(["run", "--image", "nanoclaw-agent:idle-bench"])
            .arg("--webhook-listen")
            .arg(format!("127.0.0.1:{webhook_port}"))
            .arg("--plugins")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("spawn nanoclaw");
        let mut daemon = Daemon {
            child,
            sock: data.join("control.sock"),
            log,
        };
        let end = Instant::now() + Duration::from_secs(60);
        while daemon.health().is_none() {
            let exited = daemon.child.try_wait().ok().flatten();
            assert!(
                exited.is_none() && Instant::now() < end,
                "daemon did not start ({exited:?}):\n{}",
                daemon.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        daemon
    }

    fn health(&self) -> Option<serde_json::Value> {
        let request = nanoclaw::control::Request::Health;
        match nanoclaw::control::request_blocking(&self.sock, &request) {
            Ok(Some(response)) if response.ok => response.data,
            _ => None,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
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

fn measure(name: &str, set: &[(&str, Channel)]) {
    let mut setup = Setup {
        webhook_port: free_port(),
        fakes: Vec::new(),
    };
    let mut plugins = String::new();
    let mut env = Vec::new();
    for (instance, channel) in set {
        let (table, vars) = channel(&mut setup, instance);
        plugins.push_str(&table);
        env.extend(vars);
    }
    let instances: Vec<&str> = set.iter().map(|(instance, _)| *instance).collect();
    println!("{name}: {}", instances.join(", "));

    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = Daemon::start(dir.path(), &plugins, &env, setup.webhook_port);
    let pid = daemon.child.id();
    let started = Instant::now();
    std::thread::sleep(BEFORE_SETTLING);
    let early = memory(pid);
    println!(
        "{name}, 25 s after start: RSS {:.1} MB",
        early.total as f64 / 1024.0
    );
    std::thread::sleep(SETTLED.saturating_sub(started.elapsed()));
    let mut largest = memory(pid);
    while started.elapsed() < SETTLED + WINDOW {
        std::thread::sleep(Duration::from_secs(5));
        let sample = memory(pid);
        if sample.total > largest.total {
            largest = sample;
        }
    }
    report(&format!("{name}, settled (largest sample)"), &largest);

    // After the last sample: asking for health runs the plugins' code.
    let health = daemon
        .health()
        .expect("the daemon answers after the minute");
    let rows = health["plugins"].as_array().cloned().unwrap_or_default();
    for row in &rows {
        println!(
            "    {} ({}): {} {}",
            row["instance"].as_str().unwrap_or_default(),
            row["channel_type"].as_str().unwrap_or_default(),
            row["status"].as_str().unwrap_or_default(),
            row["detail"].as_str().unwrap_or_default(),
        );
    }
    assert_eq!(
        rows.len(),
        set.len(),
        "not every instance is running:\n{}",
        daemon.log()
    );
    drop(daemon);
    drop(setup);
}

fn main() {
    let status = Command::new(env!("CARGO"))
        .current_dir(root())
        .args(["build", "--release"])
        .args(["-p", "nanoclaw", "-p", "nanoclaw-plugin-channels"])
        .args(["-p", "nanoclaw-plugin-example"])
        .status()
        .expect("cargo build");
    assert!(status.success(), "release build failed");

    measure("host only", &[]);

    let mut six = SIX.to_vec();
    six.push(EXAMPLE);
    measure("six channels and the example", &six);

    let mut eleven = SIX.to_vec();
    eleven.extend_from_slice(FIVE_MORE);
    eleven.push(EXAMPLE);
    measure("eleven channels and the example", &eleven);
}
