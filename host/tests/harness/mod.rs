//! End-to-end harness: builds the plugins, the agent-runner and its image once per test
//! process, runs the real `nanoclaw` daemon as a subprocess on a temp data dir, and cleans
//! up the containers it started.

#![allow(dead_code)] // each test binary uses a different part

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::common::{Profile, cargo_build, workspace_root};

pub mod apt;
pub mod discord;
pub mod journey;
pub mod matrix;
pub mod testchat;

/// The image end-to-end tests run agents in.
pub const IMAGE: &str = "nanoclaw-agent:e2e";

/// Whether a Docker engine answers. End-to-end tests need one; `scripts/test.sh` starts it.
pub fn engine() -> bool {
    static UP: OnceLock<bool> = OnceLock::new();
    *UP.get_or_init(|| {
        Command::new("docker")
            .args(["info", "--format", "{{.ServerVersion}}"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

/// Skips the calling test (returns false) when there is no engine, saying so.
pub fn require_engine(test: &str) -> bool {
    if engine() {
        return true;
    }
    if std::env::var_os("NANOCLAW_REQUIRE_DOCKER").is_some() {
        panic!("{test}: no Docker engine, and NANOCLAW_REQUIRE_DOCKER is set");
    }
    eprintln!(
        "SKIP {test}: no Docker engine (start one: dockerd --iptables=false --bridge=none &)"
    );
    false
}

/// Builds every plugin and the agent-runner (debug), once. Returns the debug dir.
pub fn built() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        cargo_build(
            &[
                "nanoclaw-test-plugin",
                "nanoclaw-plugin-channels",
                "nanoclaw-agent-runner",
            ],
            Profile::Debug,
        )
    })
}

/// Builds the agent image from the freshly built runner, once per process.
pub fn image() -> &'static str {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| build_agent_image(IMAGE));
    IMAGE
}

/// Builds the minimal agent image from the freshly built runner under `tag`.
pub fn build_agent_image(tag: &str) {
    let out = Command::new("bash")
        .arg(workspace_root().join("container/build.sh"))
        .arg("--binary")
        .arg(built().join("nanoclaw-agent"))
        .args(["--tag", tag])
        .output()
        .expect("run container/build.sh");
    assert!(
        out.status.success(),
        "image build failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The image of the test-only hostile agent (built from `tests/hostile-agent`).
pub const HOSTILE_IMAGE: &str = "nanoclaw-hostile:e2e";

/// Builds the hostile agent and its image, once per process.
pub fn hostile_image() -> &'static str {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let dir = cargo_build(&["nanoclaw-hostile-agent"], Profile::Debug);
        let out = Command::new("bash")
            .arg(workspace_root().join("container/build.sh"))
            .arg("--binary")
            .arg(dir.join("nanoclaw-hostile-agent"))
            .args(["--tag", HOSTILE_IMAGE])
            .output()
            .expect("run container/build.sh");
        assert!(
            out.status.success(),
            "hostile image build failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    });
    HOSTILE_IMAGE
}

/// A free TCP port on loopback.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Polls `f` until it is true or `timeout` passes.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    f()
}

/// Runs an operator command against `data`.
pub fn cli(data: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nanoclaw"))
        .env("NANOCLAW_HOME", data)
        .env_remove("NANOCLAW_LOG")
        .args(args)
        .output()
        .expect("run nanoclaw")
}

/// Like [`cli`], asserting success; returns stdout.
pub fn cli_ok(data: &Path, args: &[&str]) -> String {
    let out = cli(data, args);
    assert!(
        out.status.success(),
        "nanoclaw {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// An operator's install: a temp data dir whose `.env` (owner-only, as the operator keeps
/// it) holds the channels' secrets, and the CLI on it.
pub struct Install {
    _dir: tempfile::TempDir,
    pub data: PathBuf,
}

impl Install {
    /// `env` is the `.env` file's content (`NAME=value` lines).
    pub fn new(env: &str) -> Install {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        let path = data.join(".env");
        std::fs::write(&path, env).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        Install { _dir: dir, data }
    }

    pub fn ok(&self, args: &[&str]) -> String {
        cli_ok(&self.data, args)
    }

    /// A `--json` command's output.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        serde_json::from_str(&self.ok(&all)).expect("--json output is JSON")
    }

    /// An agent group answering with the mock `script`.
    pub fn agent(&self, folder: &str, script: &str) {
        self.ok(&[
            "groups",
            "create",
            folder,
            "--folder",
            folder,
            "--provider",
            "mock",
        ]);
        self.mock(folder, script);
    }

    /// The agent's mock script (read when its container starts).
    pub fn mock(&self, folder: &str, script: &str) {
        let config = self.data.join("config").join(folder);
        std::fs::create_dir_all(&config).unwrap();
        std::fs::write(config.join("mock.toml"), script).unwrap();
    }
}

/// A running `nanoclaw run`.
pub struct Daemon {
    child: Option<Child>,
    pub data: PathBuf,
    plugins: PathBuf,
    log: PathBuf,
    extra: Vec<String>,
    sweep_secs: u64,
    image: String,
}

impl Daemon {
    /// Starts the daemon with this plugins.toml and waits until it answers. It sweeps every
    /// second (container checks, and delivery of anything a file event missed).
    pub fn start(data: &Path, plugins_toml: &str, extra: &[&str]) -> Daemon {
        Self::start_sweeping(data, plugins_toml, extra, 1, image())
    }

    /// Like [`Daemon::start`], with the periodic sweep practically off (hourly): every reply
    /// must be delivered because the daemon noticed it, as it should be.
    pub fn start_event_driven(data: &Path, plugins_toml: &str, extra: &[&str]) -> Daemon {
        Self::start_sweeping(data, plugins_toml, extra, 3600, image())
    }

    /// Like [`Daemon::start_event_driven`], with agents in `image` (which may not exist yet).
    pub fn start_event_driven_with_image(
        data: &Path,
        plugins_toml: &str,
        extra: &[&str],
        image: &str,
    ) -> Daemon {
        Self::start_sweeping(data, plugins_toml, extra, 3600, image)
    }

    fn start_sweeping(
        data: &Path,
        plugins_toml: &str,
        extra: &[&str],
        sweep_secs: u64,
        image: &str,
    ) -> Daemon {
        std::fs::create_dir_all(data).unwrap();
        let plugins = data.parent().unwrap().join("plugins.toml");
        std::fs::write(&plugins, plugins_toml).unwrap();
        let mut d = Daemon {
            child: None,
            data: data.to_owned(),
            plugins,
            log: data.parent().unwrap().join("daemon.log"),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            sweep_secs,
            image: image.to_owned(),
        };
        d.spawn();
        d
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_nanoclaw"))
            .env("NANOCLAW_HOME", &self.data)
            .env("NANOCLAW_LOG", "info,nanoclaw=debug")
            .arg("run")
            .arg("--plugins")
            .arg(&self.plugins)
            .args(["--image", &self.image])
            .args(["--sweep-secs", &self.sweep_secs.to_string()])
            .args(&self.extra)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start nanoclaw run");
        self.child = Some(child);
        // The control socket is bound first (one daemon per data dir) but answers only once
        // plugins are loaded and channels started: an answer means the daemon is up.
        let socket = self.data.join("control.sock");
        let up = wait_until(Duration::from_secs(30), || {
            matches!(
                nanoclaw::control::request_blocking(&socket, &nanoclaw::control::Request::Health),
                Ok(Some(_))
            )
        });
        assert!(up, "daemon did not come up:\n{}", self.log());
    }

    /// Stops with SIGTERM (a clean shutdown) and waits for the process.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let end = Instant::now() + Duration::from_secs(30);
            while Instant::now() < end {
                if child.try_wait().ok().flatten().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
            panic!("daemon did not stop within 30 s:\n{}", self.log());
        }
    }

    /// Stops and starts again with the same configuration.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Kills with SIGKILL (a crash: no shutdown at all; containers keep running).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts again after [`Daemon::stop`] or [`Daemon::kill`]; waits until it answers.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "the daemon is still running");
        self.spawn();
    }

    pub fn log(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let end = Instant::now() + Duration::from_secs(15);
            while Instant::now() < end && child.try_wait().ok().flatten().is_none() {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        // Whatever the daemon left running (after a failed test) goes too.
        if let Ok(install) = nanoclaw::container::InstallId::from_data_dir(&self.data) {
            let filter = format!("label=nanoclaw.install={}", install.as_str());
            if let Ok(out) = Command::new("docker")
                .args(["ps", "-aq", "--filter", &filter])
                .output()
            {
                for id in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    let _ = Command::new("docker").args(["rm", "-f", id]).output();
                }
            }
        }
        if std::thread::panicking() {
            eprintln!("--- daemon log ---\n{}", self.log());
        }
    }
}

/// Every session directory of the install at `data` (`sessions/<agent>/<session>`).
pub fn session_dirs(data: &Path) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    for agent in std::fs::read_dir(data.join("sessions"))
        .into_iter()
        .flatten()
        .flatten()
    {
        for s in std::fs::read_dir(agent.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            dirs.push(s.path());
        }
    }
    dirs
}

/// A session's `inbound.db` (the host's), opened read-only by a test: never created, never
/// written.
pub fn inbound_db(session_dir: &Path) -> rusqlite::Result<rusqlite::Connection> {
    use nanoclaw_schema::session::layout::{INBOUND_DB, INBOUND_DIR};
    rusqlite::Connection::open_with_flags(
        session_dir.join(INBOUND_DIR).join(INBOUND_DB),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
}

/// A session's `outbound.db` (the container's), opened read-write by a test playing the
/// agent. Never created.
pub fn outbound_db(session_dir: &Path) -> rusqlite::Result<rusqlite::Connection> {
    use nanoclaw_schema::session::layout::{OUTBOUND_DB, WORKSPACE_DIR};
    rusqlite::Connection::open_with_flags(
        session_dir.join(WORKSPACE_DIR).join(OUTBOUND_DB),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE,
    )
}

/// Runs `entrypoint args…` in a throwaway container of `image`, with no network.
pub fn run_in_image(image: &str, entrypoint: &str, args: &[&str]) -> Output {
    Command::new("docker")
        .args([
            "run",
            "--rm",
            "--network",
            "none",
            "--entrypoint",
            entrypoint,
            image,
        ])
        .args(args)
        .output()
        .expect("docker run")
}

/// The ids of running containers of the install at `data`.
pub fn containers(data: &Path) -> Vec<String> {
    let install = nanoclaw::container::InstallId::from_data_dir(data).expect("install id");
    let filter = format!("label=nanoclaw.install={}", install.as_str());
    let out = Command::new("docker")
        .args(["ps", "-q", "--filter", &filter])
        .output()
        .expect("docker ps");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// The Claude image as `container/build.sh --claude` builds it offline (the Debian base is
/// cached by its inputs), with this run's agent-runner, once per process. `None` (skip, said
/// why) when the base is not built yet and this is not root: debootstrap needs root.
pub fn claude_image() -> Option<&'static str> {
    pub const CLAUDE_IMAGE: &str = "nanoclaw-agent-claude:e2e";
    static DONE: OnceLock<bool> = OnceLock::new();
    let built_ok = *DONE.get_or_init(|| {
        let agent = built().join("nanoclaw-agent");
        let out = Command::new("bash")
            .arg(workspace_root().join("container/build.sh"))
            .args(["--claude", "--binary"])
            .arg(&agent)
            .args(["--tag", CLAUDE_IMAGE])
            .output()
            .expect("run container/build.sh --claude");
        let said = String::from_utf8_lossy(&out.stderr).into_owned();
        // SAFETY: geteuid cannot fail.
        if !out.status.success() && unsafe { libc::geteuid() } != 0 && said.contains("needs root") {
            eprintln!(
                "SKIP: the Claude base image is not built and debootstrap needs root:\n{said}"
            );
            return false;
        }
        assert!(out.status.success(), "build.sh --claude failed:\n{said}");
        true
    });
    built_ok.then_some(CLAUDE_IMAGE)
}
