//! Claude Code CLI in stream-json mode.
//!
//! One `claude -p --input-format stream-json --output-format stream-json --verbose` process
//! holds the conversation and stays alive across turns: every request is one user line on its
//! stdin, and the reply is the `result` event that follows. The process is (re)started with
//! `--resume <continuation>` when there is none (first turn, after a crash of the CLI) and
//! when the system prompt addendum changed, since it is fixed at start.

use std::collections::VecDeque;
use std::io::{BufRead as _, BufReader, Write as _};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{Event, Provider, ProviderError, Request};
use crate::wait::Shutdown;

/// Built-in tools that do not work in a NanoClaw container or have NanoClaw equivalents.
const DISALLOWED_TOOLS: &[&str] = &[
    "CronCreate",
    "CronDelete",
    "CronList",
    "ScheduleWakeup",
    "AskUserQuestion",
    "EnterPlanMode",
    "ExitPlanMode",
    "EnterWorktree",
    "ExitWorktree",
];

/// Environment for the CLI, unless the runner's own environment sets the variable. The
/// container has no network but the model relay, and a read-only root file system.
const CLI_ENV: &[(&str, &str)] = &[
    // No telemetry, error reports, update checks or release notes: they could only time out.
    ("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1"),
    ("DISABLE_AUTOUPDATER", "1"),
    // The CLI retries a failed API call ten times with backoff by default, about three
    // minutes for a 401; two retries still ride out a brief 429/529 and let a wrong key
    // reach the chat within seconds.
    ("CLAUDE_CODE_MAX_RETRIES", "2"),
];

/// How many stderr lines to keep for error messages.
const STDERR_TAIL: usize = 20;
/// How often a waiting turn checks for shutdown.
const SHUTDOWN_CHECK: Duration = Duration::from_millis(200);

#[derive(Debug, Clone)]
pub struct ClaudeOptions {
    pub bin: PathBuf,
    pub model: Option<String>,
    /// The agent's working directory.
    pub cwd: PathBuf,
    /// Extra directories the CLI may read (and load CLAUDE.md from): the global memory.
    pub add_dirs: Vec<PathBuf>,
    /// The model API base URL (the runner's relay to the host's proxy). The CLI gets a
    /// placeholder key; the host adds the credential.
    pub api_base: Option<String>,
    /// The `--mcp-config` JSON: the runner's own tool server and the approved ones. Only
    /// these are loaded (`--strict-mcp-config`): an `.mcp.json` the agent writes adds nothing.
    pub mcp_config: Option<String>,
}

pub struct ClaudeProvider {
    opts: ClaudeOptions,
    shutdown: Shutdown,
    live: Option<Session>,
}

/// One running CLI process.
struct Session {
    child: Child,
    stdin: Option<ChildStdin>,
    /// stdout lines; `None` marks end of output.
    lines: Receiver<Option<String>>,
    stderr_tail: Arc<Mutex<VecDeque<String>>>,
    system_prompt: String,
}

impl ClaudeProvider {
    pub fn new(opts: ClaudeOptions, shutdown: Shutdown) -> ClaudeProvider {
        ClaudeProvider {
            opts,
            shutdown,
            live: None,
        }
    }

    fn command(&self, resume: Option<&str>, system_prompt: &str) -> Command {
        let mut cmd = Command::new(&self.opts.bin);
        cmd.args([
            "-p",
            "--input-format",
            "stream-json",
            "--output-format",
            "stream-json",
            "--verbose",
        ])
        .args(["--permission-mode", "bypassPermissions"])
        .arg("--disallowedTools")
        .arg(DISALLOWED_TOOLS.join(","));
        if let Some(id) = resume {
            cmd.arg("--resume").arg(id);
        }
        if let Some(config) = &self.opts.mcp_config {
            cmd.arg("--mcp-config")
                .arg(config)
                .arg("--strict-mcp-config");
        }
        if let Some(model) = &self.opts.model {
            cmd.arg("--model").arg(model);
        }
        if !system_prompt.is_empty() {
            cmd.arg("--append-system-prompt").arg(system_prompt);
        }
        for dir in &self.opts.add_dirs {
            cmd.arg("--add-dir").arg(dir);
        }
        if !self.opts.add_dirs.is_empty() {
            cmd.env("CLAUDE_CODE_ADDITIONAL_DIRECTORIES_CLAUDE_MD", "1");
        }
        for (name, value) in CLI_ENV {
            if std::env::var_os(name).is_none() {
                cmd.env(name, value);
            }
        }
        // The Bash tool's scratch files go under here (default /tmp/claude-<uid>, fine on
        // the container's tmpfs; explicit so a TMPDIR elsewhere is honoured too).
        if std::env::var_os("CLAUDE_CODE_TMPDIR").is_none() {
            cmd.env("CLAUDE_CODE_TMPDIR", std::env::temp_dir());
        }
        if let Some(base) = &self.opts.api_base {
            cmd.env("ANTHROPIC_BASE_URL", base)
                .env("ANTHROPIC_API_KEY", crate::relay::PLACEHOLDER_KEY)
                .env_remove("ANTHROPIC_AUTH_TOKEN")
                .env_remove("CLAUDE_CODE_OAUTH_TOKEN");
        }
        cmd.current_dir(&self.opts.cwd)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }

    fn start(&mut self, resume: Option<&str>, system_prompt: &str) -> Result<(), ProviderError> {
        if !self.opts.cwd.is_dir() {
            return Err(ProviderError::failed(format!(
                "the agent directory {} does not exist",
                self.opts.cwd.display()
            )));
        }
        let mut child =
            self.command(resume, system_prompt)
                .spawn()
                .map_err(|e| ProviderError::Failed {
                    message: format!("cannot start {}: {e}", self.opts.bin.display()),
                    session_invalid: false,
                })?;
        tracing::info!(pid = child.id(), resume, "claude started");
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(ProviderError::failed("claude started without piped stdio"));
        };

        let (tx, lines) = mpsc::channel();
        std::thread::Builder::new()
            .name("claude-stdout".into())
            .spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    match line {
                        Ok(l) => {
                            if tx.send(Some(l)).is_err() {
                                return;
                            }
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "reading claude output");
                            break;
                        }
                    }
                }
                let _ = tx.send(None);
            })
            .map_err(|e| ProviderError::failed(format!("cannot start reader thread: {e}")))?;

        let stderr_tail = Arc::new(Mutex::new(VecDeque::with_capacity(STDERR_TAIL)));
        let tail = Arc::clone(&stderr_tail);
        std::thread::Builder::new()
            .name("claude-stderr".into())
            .spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    tracing::debug!(target: "claude", "{line}");
                    let mut t = tail.lock().unwrap_or_else(PoisonError::into_inner);
                    if t.len() == STDERR_TAIL {
                        t.pop_front();
                    }
                    t.push_back(line);
                }
            })
            .map_err(|e| ProviderError::failed(format!("cannot start reader thread: {e}")))?;

        self.live = Some(Session {
            child,
            stdin: Some(stdin),
            lines,
            stderr_tail,
            system_prompt: system_prompt.to_string(),
        });
        Ok(())
    }

    /// Ends the CLI. `polite`: close its input first and give it a second to finish (between
    /// turns); otherwise (shutdown mid-turn) go straight to TERM. KILL if it lingers.
    fn stop(&mut self, polite: bool) {
        let Some(mut s) = self.live.take() else {
            return;
        };
        drop(s.stdin.take());
        let pid = s.child.id();
        if polite && wait_for(&mut s.child, Duration::from_secs(1)) {
            return;
        }
        if let Ok(pid) = libc::pid_t::try_from(pid) {
            // SAFETY: signals our own child, which has not been reaped yet.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
        if !wait_for(&mut s.child, Duration::from_secs(2)) {
            tracing::warn!(pid, "claude did not exit; killing it");
            let _ = s.child.kill();
            let _ = s.child.wait();
        }
    }

    /// The process died (or its output ended): reap it and describe why.
    fn failure(&mut self) -> ProviderError {
        let Some(mut s) = self.live.take() else {
            return ProviderError::failed("claude is not running");
        };
        drop(s.stdin.take());
        let status = if wait_for(&mut s.child, Duration::from_secs(2)) {
            s.child.try_wait().ok().flatten().map(|st| st.to_string())
        } else {
            let _ = s.child.kill();
            let _ = s.child.wait();
            None
        };
        let tail: Vec<String> = s
            .stderr_tail
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .cloned()
            .collect();
        let detail = tail.join("\n");
        let detail = detail.trim();
        let status = status.unwrap_or_else(|| "killed".into());
        if detail.is_empty() {
            ProviderError::failed(format!("claude exited ({status}) without a result"))
        } else {
            ProviderError::failed(format!("claude exited ({status}): {detail}"))
        }
    }
}

impl Provider for ClaudeProvider {
    fn name(&self) -> &'static str {
        "claude"
    }

    fn exchange(
        &mut self,
        req: &Request<'_>,
        on_event: &mut dyn FnMut(Event<'_>),
    ) -> Result<String, ProviderError> {
        if let Some(s) = &self.live {
            // Output between turns (background work): log it; a finished process is restarted.
            let mut ended = false;
            while let Ok(line) = s.lines.try_recv() {
                match line {
                    Some(l) => tracing::debug!(target: "claude", line = %l, "output between turns"),
                    None => ended = true,
                }
            }
            if ended {
                let err = self.failure();
                tracing::warn!(error = %err, "claude ended between turns; restarting");
            } else if s.system_prompt != req.system_prompt {
                tracing::info!(
                    "destinations changed; restarting claude with the new system prompt"
                );
                self.stop(true);
            }
        }
        if self.live.is_none() {
            self.start(req.continuation, req.system_prompt)?;
        }

        let line = serde_json::json!({
            "type": "user",
            "message": { "role": "user", "content": req.input },
            "parent_tool_use_id": null,
            "session_id": "",
        });
        let sent = match self.live.as_mut().and_then(|s| s.stdin.as_mut()) {
            Some(stdin) => writeln!(stdin, "{line}").and_then(|()| stdin.flush()),
            None => Err(std::io::Error::other("claude input is closed")),
        };
        if let Err(e) = sent {
            // Usually the process already exited; its stderr says why.
            tracing::debug!(error = %e, "writing to claude");
        }

        loop {
            let Some(s) = &self.live else {
                return Err(ProviderError::failed("claude is not running"));
            };
            let line = match s.lines.recv_timeout(SHUTDOWN_CHECK) {
                Ok(Some(line)) => line,
                Ok(None) | Err(RecvTimeoutError::Disconnected) => return Err(self.failure()),
                Err(RecvTimeoutError::Timeout) => {
                    if self.shutdown.requested() {
                        self.stop(false);
                        return Err(ProviderError::Interrupted);
                    }
                    continue;
                }
            };
            on_event(Event::Activity);
            let Ok(v) = serde_json::from_str::<Value>(&line) else {
                tracing::debug!(target: "claude", %line, "non-JSON output");
                continue;
            };
            match (v["type"].as_str(), v["subtype"].as_str()) {
                (Some("system"), Some("init")) => {
                    if let Some(id) = v["session_id"].as_str() {
                        on_event(Event::Continuation(id));
                    }
                }
                (Some("system"), Some("api_retry")) => on_event(Event::Progress("API retry")),
                (Some("system"), Some("compact_boundary")) => on_event(Event::Compacted),
                (Some("result"), subtype) => {
                    let is_error = v["is_error"].as_bool().unwrap_or(false)
                        || subtype.is_some_and(|s| s != "success");
                    let text = v["result"].as_str().unwrap_or_default();
                    if !is_error {
                        return Ok(text.to_string());
                    }
                    let mut message = text.to_string();
                    if let Some(errors) = v["errors"].as_array() {
                        for e in errors.iter().filter_map(Value::as_str) {
                            if !message.is_empty() {
                                message.push_str("; ");
                            }
                            message.push_str(e);
                        }
                    }
                    if message.is_empty() {
                        message = format!("claude reported {}", subtype.unwrap_or("an error"));
                    }
                    // The CLI's texts vary ("Invalid API key · Fix external API key",
                    // "Request rejected (429)"); the HTTP status it reports beside them
                    // classifies the failure reliably.
                    if let Some(status) = v["api_error_status"].as_u64()
                        && !message.starts_with(&format!("API Error: {status}"))
                    {
                        let text = message.strip_prefix("API Error: ").unwrap_or(&message);
                        message = format!("API Error: {status} {text}");
                    }
                    let err = ProviderError::failed(message);
                    if matches!(
                        err,
                        ProviderError::Failed {
                            session_invalid: true,
                            ..
                        }
                    ) {
                        self.stop(true);
                    }
                    return Err(err);
                }
                _ => {}
            }
        }
    }

    fn reset(&mut self) {
        self.stop(true);
    }
}

impl Drop for ClaudeProvider {
    fn drop(&mut self) {
        self.stop(true);
    }
}

/// Waits up to `limit` for `child` to exit. Only used while stopping a process.
fn wait_for(child: &mut Child, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => return true,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Ok(None) => return false,
            Err(_) => return true,
        }
    }
}
