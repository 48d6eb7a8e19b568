//! Pre-task scripts: a scheduled task may carry a shell script that decides whether the agent
//! is woken at all. It runs with `sh -c` in the agent's directory; its last stdout line must be
//! JSON `{"wake_agent": bool, "data": ...}`. `data` is shown to the agent with the task.

use std::io::Read as _;
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::Value;

use crate::wait::Shutdown;

/// How long a script may run.
pub const TIMEOUT: Duration = Duration::from_secs(30);
/// How much of its stdout is kept.
const MAX_STDOUT: u64 = 1 << 20;

#[derive(Debug, PartialEq)]
pub enum Outcome {
    /// Wake the agent; `data` goes into the prompt.
    Wake { data: Value },
    /// Do not wake the agent for this task (the script said so); the reason is logged.
    Skip(String),
    /// The script could not run or did not give a verdict: the task's firing failed.
    Failed(String),
    /// Shutdown was requested while the script ran (it was killed).
    Interrupted,
}

#[derive(Deserialize)]
struct Verdict {
    wake_agent: bool,
    #[serde(default)]
    data: Value,
}

pub fn run(script: &str, cwd: &Path, timeout: Duration, shutdown: &Shutdown) -> Outcome {
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(script)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so a timeout kills whatever it started too.
        .process_group(0);
    if cwd.is_dir() {
        cmd.current_dir(cwd);
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return Outcome::Failed(format!("cannot run /bin/sh: {e}")),
    };
    let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        let _ = child.kill();
        let _ = child.wait();
        return Outcome::Failed("script started without piped output".into());
    };
    let out_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let mut limited = stdout.take(MAX_STDOUT);
        let _ = limited.read_to_end(&mut buf);
        // Keep draining so the script never blocks on a full pipe.
        let _ = std::io::copy(&mut limited.into_inner(), &mut std::io::sink());
        buf
    });
    let err_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stderr.take(64 * 1024).read_to_end(&mut buf);
        buf
    });

    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Ok(status),
            Ok(None) => {}
            Err(e) => break Err(format!("waiting for the script: {e}")),
        }
        let stop = shutdown.requested();
        if stop || Instant::now() >= deadline {
            kill_group(child.id());
            let _ = child.wait();
            if stop {
                return Outcome::Interrupted;
            }
            break Err(format!("script timed out after {}s", timeout.as_secs()));
        }
        // Only while a script runs; scripts are rare and short.
        std::thread::sleep(Duration::from_millis(10));
    };
    let stdout = out_reader.join().unwrap_or_default();
    let stderr = err_reader.join().unwrap_or_default();
    let stderr = String::from_utf8_lossy(&stderr);
    if !stderr.trim().is_empty() {
        tracing::info!(
            stderr = crate::output::preview(stderr.trim(), 500),
            "task script stderr"
        );
    }
    let status = match status {
        Ok(s) => s,
        Err(reason) => return Outcome::Failed(reason),
    };
    if !status.success() {
        return Outcome::Failed(format!("script failed ({status})"));
    }
    let stdout = String::from_utf8_lossy(&stdout);
    let Some(last) = stdout.trim().lines().last() else {
        return Outcome::Failed("script printed nothing".into());
    };
    match serde_json::from_str::<Verdict>(last.trim()) {
        Ok(Verdict {
            wake_agent: true,
            data,
        }) => Outcome::Wake { data },
        Ok(Verdict {
            wake_agent: false, ..
        }) => Outcome::Skip("script said not to wake the agent".into()),
        Err(e) => Outcome::Failed(format!(
            "last line is not {{\"wake_agent\": bool, \"data\": ...}}: {e}"
        )),
    }
}

fn kill_group(pid: u32) {
    if let Ok(pid) = libc::pid_t::try_from(pid) {
        // SAFETY: signals the process group we created for our own child.
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn go(script: &str) -> Outcome {
        run(script, Path::new("/"), TIMEOUT, &Shutdown::default())
    }

    #[test]
    fn verdicts() {
        assert_eq!(
            go(r#"echo noise; echo '{"wake_agent": true, "data": {"n": 3}}'"#),
            Outcome::Wake {
                data: serde_json::json!({"n": 3})
            }
        );
        assert_eq!(
            go(r#"echo '{"wake_agent": true}'"#),
            Outcome::Wake { data: Value::Null }
        );
        assert!(matches!(
            go(r#"echo '{"wake_agent": false}'"#),
            Outcome::Skip(_)
        ));
        assert!(matches!(go("echo not json"), Outcome::Failed(r) if r.contains("last line")));
        assert!(matches!(go("true"), Outcome::Failed(r) if r.contains("nothing")));
        assert!(
            matches!(go(r#"echo '{"wake_agent": true}'; exit 4"#), Outcome::Failed(r) if r.contains("failed"))
        );
    }

    #[test]
    fn timeout_kills_the_whole_group() {
        let started = Instant::now();
        let out = run(
            "sleep 30 & sleep 30",
            Path::new("/"),
            Duration::from_millis(200),
            &Shutdown::default(),
        );
        assert!(matches!(out, Outcome::Failed(r) if r.contains("timed out")));
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the background sleep did not hold the pipe open"
        );
    }

    #[test]
    fn shutdown_interrupts() {
        let s = Shutdown::default();
        s.request();
        assert_eq!(
            run("sleep 30", Path::new("/"), TIMEOUT, &s),
            Outcome::Interrupted
        );
    }
}
