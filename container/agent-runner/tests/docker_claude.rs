//! The Claude image, built offline by `container/build.sh --claude` (Debian base from
//! debootstrap, cached by its inputs; the pinned CLI from npm; this test run's
//! nanoclaw-agent), run hardened as the host runs it: uid 1000, read-only root file system,
//! tmpfs /tmp, no network, no capabilities, Docker's init.
//!
//! `claude --version` and a shell tool work in it. The real CLI in this image answering
//! through the host's model proxy is tested end to end in host/tests/model_e2e.rs.
//!
//! Skipped, with a message, when no Docker engine answers (`NANOCLAW_REQUIRE_DOCKER=1` makes
//! that a failure), and when the base image is not built and this is not root (debootstrap
//! needs root).

mod common;

use std::path::PathBuf;
use std::process::{Command, Output};

use common::BIN;

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
