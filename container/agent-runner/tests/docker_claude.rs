//! The Claude image, built offline by `container/build.sh --claude` (Debian base from
//! debootstrap, cached by its inputs; the pinned CLI from npm; this test run's
//! nanoclaw-agent), run hardened as the host runs it: uid 1000, read-only root file system,
//! tmpfs /tmp, no network, no capabilities, Docker's init.
//!
//! 1. `claude --version` and a shell tool work in it.
//! 2. End to end: the real CLI in the container answers a chat message and runs a Bash
//!    tool_use against the fake Anthropic API on the host, reached only through a Unix
//!    socket mounted at /run/nanoclaw/model.sock (a plain forwarder here stands in for the
//!    host's proxy).
//!
//! Skipped, with a message, when no Docker engine answers (`NANOCLAW_REQUIRE_DOCKER=1` makes
//! that a failure), and when the base image is not built and this is not root (debootstrap
//! needs root).

mod common;

use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use common::{BIN, Msg, Session, wait_until};
use nanoclaw_fake_anthropic::{FakeAnthropic, Reply, Rule};
use serde_json::json;

const PLACEHOLDER_KEY: &str = "nanoclaw-proxy-placeholder";

fn docker(args: &[&str]) -> Output {
    Command::new("timeout")
        .arg("300")
        .arg("docker")
        .args(args)
        .output()
        .expect("run docker")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn engine_reachable() -> bool {
    Command::new("timeout")
        .args(["20", "docker", "info", "--format", "{{.ServerVersion}}"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Builds the image once per test binary (both tests share it); `None`: skipped.
fn image() -> Option<String> {
    static IMAGE: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    IMAGE
        .get_or_init(|| {
            if !engine_reachable() {
                assert!(
                    std::env::var_os("NANOCLAW_REQUIRE_DOCKER").is_none(),
                    "no Docker engine reachable"
                );
                eprintln!("SKIPPED: no Docker engine reachable (`docker info` failed)");
                return None;
            }
            // One fixed tag: reruns re-tag it instead of piling up images.
            let tag = "nanoclaw-agent-claude:test".to_string();
            let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../build.sh");
            let started = std::time::Instant::now();
            let build = Command::new("bash")
                .arg(&script)
                .args(["--claude", "--binary", BIN, "--tag", &tag])
                .output()
                .expect("run build.sh");
            let out = text(&build);
            // SAFETY: geteuid cannot fail.
            if !build.status.success()
                && unsafe { libc::geteuid() } != 0
                && out.contains("needs root")
            {
                eprintln!(
                    "SKIPPED: the Claude base image is not built and debootstrap needs root:\n{out}"
                );
                return None;
            }
            assert!(build.status.success(), "build.sh --claude failed:\n{out}");
            eprintln!("build.sh --claude took {:?}:\n{out}", started.elapsed());
            Some(tag)
        })
        .clone()
}

/// Hardened as the host's ContainerSpec runs agents, with its default limits (a noexec
/// 64 MiB /tmp, 1 GiB of memory without swap, 512 pids).
const HARDENING: &[&str] = &[
    "--network",
    "none",
    "--read-only",
    "--tmpfs",
    "/tmp:rw,nosuid,nodev,noexec,size=64m,mode=1777",
    "--memory",
    "1g",
    "--memory-swap",
    "1g",
    "--pids-limit",
    "512",
    "--ipc",
    "private",
    "--cap-drop",
    "ALL",
    "--security-opt",
    "no-new-privileges",
    "--user",
    "1000:1000",
    "--init",
];

struct RemoveOnDrop(Vec<String>);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        for c in &self.0 {
            let _ = docker(&["rm", "-f", c]);
        }
    }
}

#[test]
fn claude_image_runs_the_cli_and_a_shell_hardened() {
    let Some(image) = image() else {
        return;
    };
    let mut args = vec!["run", "--rm"];
    args.extend_from_slice(HARDENING);
    args.extend_from_slice(&["--entrypoint", "/usr/local/bin/claude", &image, "--version"]);
    let out = docker(&args);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("(Claude Code)"), "{}", text(&out));

    let mut args = vec!["run", "--rm"];
    args.extend_from_slice(HARDENING);
    args.extend_from_slice(&[
        "--entrypoint",
        "/bin/bash",
        &image,
        "-c",
        "id -u && echo tmp-ok > /tmp/x && cat /tmp/x && git --version && rg --version | head -n1 \
         && ps -o pid= -p 1 >/dev/null && echo ps-ok && (touch /usr/x 2>/dev/null || echo ro-ok)",
    ]);
    let out = docker(&args);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    for want in [
        "1000\n",
        "tmp-ok",
        "git version",
        "ripgrep",
        "ps-ok",
        "ro-ok",
    ] {
        assert!(t.contains(want), "{want} missing:\n{t}");
    }
}

/// Forwards each connection on a Unix socket to `target` (what the host's proxy does,
/// minus the credential and the filtering).
fn forward(socket: &Path, target: std::net::SocketAddr) {
    let listener = UnixListener::bind(socket).expect("bind socket");
    // The agent runs as uid 1000; connecting needs write permission on the socket.
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(unix) = conn else { break };
            let Ok(tcp) = std::net::TcpStream::connect(target) else {
                continue;
            };
            let (mut u2, mut t2) = (
                unix.try_clone().expect("clone"),
                tcp.try_clone().expect("clone"),
            );
            let (mut u1, mut t1) = (unix, tcp);
            std::thread::spawn(move || pump(&mut u1, &mut t1));
            std::thread::spawn(move || pump(&mut t2, &mut u2));
        }
    });
}

fn pump(from: &mut impl std::io::Read, to: &mut (impl std::io::Write + ShutdownWrite)) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    to.shutdown_write();
}

trait ShutdownWrite {
    fn shutdown_write(&mut self);
}

impl ShutdownWrite for std::net::TcpStream {
    fn shutdown_write(&mut self) {
        let _ = self.shutdown(std::net::Shutdown::Write);
    }
}

impl ShutdownWrite for std::os::unix::net::UnixStream {
    fn shutdown_write(&mut self) {
        let _ = self.shutdown(std::net::Shutdown::Write);
    }
}

#[test]
fn claude_image_answers_and_runs_a_tool_through_the_model_socket() {
    let Some(image) = image() else {
        return;
    };
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED: the session directory must be handed to uid 1000 (needs root)");
        return;
    }
    let fake = FakeAnthropic::start(PLACEHOLDER_KEY).expect("fake API");
    let say = |t: &str| Reply::text(format!("<message to=\"home\">{t}</message>"));
    fake.push_rule(
        Rule::on_text(
            "run the tool",
            Reply::tool_use("Bash", json!({ "command": "echo in-container-$(id -u)" })),
        )
        .with_tools()
        .times(1),
    );
    fake.push_rule(Rule::on_tool_result("in-container-1000", say("tool ran as 1000")).with_tools());
    fake.push_rule(Rule::always(say("hello from the container")).with_tools());

    let mut s = Session::new();
    let sock_dir = tempfile::tempdir().expect("socket dir");
    let socket = sock_dir.path().join("model.sock");
    forward(&socket, fake.addr());
    // HOME is /workspace/.home as the host sets it; the CLI creates it (the host need not).
    let out = Command::new("chown")
        .args(["-R", "1000:1000"])
        .arg(s.path())
        .output()
        .expect("chown");
    assert!(out.status.success(), "{}", text(&out));

    let container = format!("nanoclaw-claude-e2e-{}", std::process::id());
    let _cleanup = RemoveOnDrop(vec![container.clone()]);
    let mount = format!("{}:/workspace", s.path().display());
    let inbound = format!("{}:/workspace/inbound:ro", s.inbound_path().display());
    let sock = format!("{}:/run/nanoclaw/model.sock", socket.display());
    let mut args = vec!["run", "-d", "--name", &container];
    args.extend_from_slice(HARDENING);
    args.extend_from_slice(&[
        "-v",
        &mount,
        "-v",
        &inbound,
        "-v",
        &sock,
        "-e",
        "NANOCLAW_MODEL_SOCKET=/run/nanoclaw/model.sock",
        "-e",
        "HOME=/workspace/.home",
        &image,
    ]);
    let out = docker(&args);
    assert!(out.status.success(), "{}", text(&out));
    let logs = || text(&docker(&["logs", &container]));

    s.send(Msg::chat("m1", "hello"));
    assert!(
        wait_until(Duration::from_secs(60), || s.out_rows().len() == 1),
        "no reply:\n{}",
        logs()
    );
    assert_eq!(s.texts(), ["hello from the container"]);
    s.send(Msg::chat("m2", "please run the tool"));
    assert!(
        wait_until(Duration::from_secs(60), || s.out_rows().len() == 2),
        "no reply:\n{}",
        logs()
    );
    assert_eq!(s.texts()[1], "tool ran as 1000");
    let last = fake
        .requests()
        .into_iter()
        .rfind(|r| r.has_tools())
        .expect("requests");
    assert!(
        last.user_texts().join("\n").contains("hello"),
        "resumed conversation"
    );
    for r in fake.requests() {
        assert_eq!(r.header("x-api-key"), Some(PLACEHOLDER_KEY));
    }
    let out = docker(&["stop", "-t", "10", &container]);
    assert!(out.status.success(), "{}", text(&out));

    // A new container for the same session resumes the conversation (the CLI's state is
    // under HOME in the session directory).
    let second = format!("{container}-2");
    let _cleanup2 = RemoveOnDrop(vec![second.clone()]);
    let pos = args.iter().position(|a| *a == container).expect("name arg");
    args[pos] = &second;
    let out = docker(&args);
    assert!(out.status.success(), "{}", text(&out));
    s.send(Msg::chat("m3", "after the restart"));
    assert!(
        wait_until(Duration::from_secs(60), || s.out_rows().len() == 3),
        "no reply after restart:\n{}",
        text(&docker(&["logs", &second]))
    );
    let last = fake
        .requests()
        .into_iter()
        .rfind(|r| r.has_tools())
        .expect("requests");
    let texts = last.user_texts().join("\n");
    assert!(
        texts.contains("hello") && texts.contains("after the restart"),
        "not resumed: {texts}"
    );
    assert!(
        last.tool_results()
            .iter()
            .any(|t| t.contains("in-container-1000")),
        "the tool result is part of the resumed conversation"
    );
}
