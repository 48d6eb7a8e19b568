//! Builds the minimal image with `container/build.sh` (from the binary this test run built)
//! and runs the agent in it, hardened as the host runs it, against a temp session directory
//! mounted as the host mounts it: the workspace read-write at /workspace, the host's inbound
//! directory READ-ONLY at /workspace/inbound. So it proves SQLite's WAL reader works through
//! a read-only mount while the host writes. (Providers reaching a model through the host's
//! real proxy socket are tested end to end in host/tests/model_e2e.rs.) Skipped, with a
//! message, when no Docker engine is reachable.

mod common;

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use common::{BIN, Msg, Session, wait_until};

fn docker(args: &[&str]) -> Output {
    Command::new("timeout")
        .arg("120")
        .arg("docker")
        .args(args)
        .output()
        .expect("run docker")
}

fn docker_ok(args: &[&str]) -> String {
    let out = docker(args);
    assert!(
        out.status.success(),
        "docker {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn engine_reachable() -> bool {
    Command::new("timeout")
        .args(["20", "docker", "info", "--format", "{{.ServerVersion}}"])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn build_image(image: &str) {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../build.sh");
    let build = Command::new("bash")
        .arg(&script)
        .args(["--binary", BIN, "--tag", image])
        .output()
        .expect("run build.sh");
    assert!(
        build.status.success(),
        "build.sh failed:\n{}{}",
        String::from_utf8_lossy(&build.stdout),
        String::from_utf8_lossy(&build.stderr)
    );
}

/// The user the container runs as: uid 1000 owning the session directory when we are root
/// (handed over), else our own uid.
fn container_user(s: &Session) -> String {
    // SAFETY: getuid/getgid cannot fail.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    if uid == 0 {
        let out = Command::new("chown")
            .args(["-R", "1000:1000"])
            .arg(s.path())
            .output()
            .expect("chown");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        "1000:1000".to_string()
    } else {
        format!("{uid}:{gid}")
    }
}

/// Removes the container and the image even when the test fails.
struct Cleanup {
    container: String,
    image: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = docker(&["rm", "-f", &self.container]);
        let _ = docker(&["rmi", "-f", &self.image]);
    }
}

#[test]
fn minimal_image_runs_the_agent_hardened() {
    if !engine_reachable() {
        eprintln!(
            "SKIPPED: no Docker engine reachable (`docker info` failed); start one to run this test"
        );
        return;
    }
    let id = std::process::id();
    let image = format!("nanoclaw-agent-test:{id}");
    let container = format!("nanoclaw-agent-test-{id}");
    let _cleanup = Cleanup {
        container: container.clone(),
        image: image.clone(),
    };

    build_image(&image);

    let mut s = Session::new();
    s.send(Msg::chat("m1", "hello from the host"));
    // The container runs as uid 1000: the session directory must be its.
    let user = container_user(&s);

    let mount = format!("{}:/workspace", s.path().display());
    let inbound = format!("{}:/workspace/inbound:ro", s.inbound_path().display());
    docker_ok(&[
        "run",
        "-d",
        "--name",
        &container,
        "--network",
        "none",
        "--read-only",
        "--cap-drop",
        "ALL",
        "--security-opt",
        "no-new-privileges",
        "--user",
        &user,
        "-v",
        &mount,
        "-v",
        &inbound,
        "-e",
        "NANOCLAW_ASSISTANT_NAME=Andy",
        "-e",
        "TZ=Europe/Berlin",
        // Only file events can wake it: proves inotify works across the bind mount.
        "-e",
        "NANOCLAW_FALLBACK_POLL_MS=600000",
        &image,
    ]);

    let answered = wait_until(Duration::from_secs(30), || s.out_rows().len() == 1);
    let logs = || {
        let out = docker(&["logs", &container]);
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };
    assert!(answered, "no reply from the container:\n{}", logs());
    assert_eq!(s.texts(), ["Mock agent: you said \"hello from the host\""]);

    // A message written while it runs wakes it through the bind mount.
    s.send(Msg::chat("m2", "second"));
    assert!(
        wait_until(Duration::from_secs(10), || s.out_rows().len() == 2),
        "{}",
        logs()
    );

    docker_ok(&["stop", "-t", "10", &container]);
    let code = docker_ok(&["inspect", "-f", "{{.State.ExitCode}}", &container]);
    assert_eq!(code, "0", "clean exit on SIGTERM:\n{}", logs());
    let logs = logs();
    assert!(logs.contains("shutting down"), "{logs}");
}
