//! A deterministic provider for demos and tests.
//!
//! Without a script it answers the newest triggering message where it came from:
//! `<message to="{from}">Mock agent: you said "{text}"</message>`.
//!
//! A script (`mock.toml` in the agent dir, or `NANOCLAW_MOCK_SCRIPT`) holds ordered rules; the
//! first whose `match` regex finds the newest message text wins (no `match`: always):
//!
//! ```toml
//! [[rule]]
//! match = "(?i)weather"
//! reply = "Sunny, {sender}."          # wrapped as <message to="{from}">…</message>
//! to = "family"                       # optional: another destination for `reply`
//! delay_ms = 200                      # optional: think first
//!
//! [[rule]]
//! match = "^multi"
//! raw = '<message to="a">1</message> notes'   # output as is (scratchpad tests)
//!
//! [[rule]]
//! match = "^fail"
//! error = "model overloaded"          # the provider fails
//!
//! [[rule]]
//! match = "^crash"
//! exit = true                         # the process is SIGKILLed mid-turn
//!
//! [[rule]]
//! match = "^stall"
//! hang = true                         # never answers (until shutdown)
//!
//! [[rule]]
//! match = "^remind me"
//! tools = [{ name = "schedule_task", args = { prompt = "Remind {sender}", at = "..." } }]
//! reply = "Done: {tool_result}"       # optional after `tools`
//! ```
//!
//! `tools` calls the agent's tools (the same ones Claude gets over MCP) in order before the
//! rule's answer; a rule may have only `tools`. Templates (also inside `args` strings) may use
//! `{text}`, `{from}`, `{sender}` and `{assistant}`; answers also `{tool_result}`, the last
//! call's result (or `Error: …`). With
//! `NANOCLAW_MOCK_RECORD` set, every request is appended to that file as one JSON line
//! (`kind`, `input`, `system_prompt`, `continuation`).

use std::fs::OpenOptions;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use regex::Regex;
use serde::Deserialize;

use super::{Event, Hints, Provider, ProviderError, Request, RequestKind};
use crate::tools::Toolbox;
use crate::wait::Shutdown;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScriptFile {
    #[serde(default)]
    rule: Vec<RuleSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleSpec {
    #[serde(rename = "match")]
    pattern: Option<String>,
    reply: Option<String>,
    to: Option<String>,
    raw: Option<String>,
    error: Option<String>,
    #[serde(default)]
    exit: bool,
    #[serde(default)]
    hang: bool,
    #[serde(default)]
    delay_ms: u64,
    #[serde(default)]
    tools: Vec<ToolCall>,
}

/// One scripted tool call.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ToolCall {
    name: String,
    #[serde(default)]
    args: serde_json::Value,
}

#[derive(Debug, Clone)]
enum Action {
    Reply {
        template: String,
        to: Option<String>,
    },
    Raw(String),
    Error(String),
    Exit,
    Hang,
}

#[derive(Debug, Clone)]
struct Rule {
    pattern: Option<Regex>,
    tools: Vec<ToolCall>,
    action: Action,
    delay: Duration,
}

#[derive(Debug, thiserror::Error)]
#[error("mock script {}: {reason}", path.display())]
pub struct ScriptError {
    pub path: PathBuf,
    pub reason: String,
}

pub struct MockProvider {
    rules: Vec<Rule>,
    record: Option<PathBuf>,
    shutdown: Shutdown,
    /// The agent's tools, for rules with `tools`.
    tools: Option<Toolbox>,
}

impl MockProvider {
    pub fn new(
        script: Option<&Path>,
        record: Option<PathBuf>,
        shutdown: Shutdown,
        tools: Option<Toolbox>,
    ) -> Result<Self, ScriptError> {
        let rules = match script {
            Some(path) => load_script(path)?,
            None => Vec::new(),
        };
        Ok(MockProvider {
            rules,
            record,
            shutdown,
            tools,
        })
    }

    /// Makes a rule's tool calls; returns the last result for `{tool_result}`.
    fn call_tools(&mut self, calls: &[ToolCall], hints: &Hints) -> String {
        let mut last = String::new();
        for call in calls {
            let Some(tools) = self.tools.as_mut() else {
                last = "Error: no tools in this runner".into();
                continue;
            };
            last = match tools.call(&call.name, render_value(&call.args, hints)) {
                Ok(said) => said,
                Err(e) => format!("Error: {e}"),
            };
        }
        last
    }

    fn record(&self, req: &Request<'_>) {
        let Some(path) = &self.record else { return };
        let line = serde_json::json!({
            "kind": req.kind.as_str(),
            "input": req.input,
            "system_prompt": req.system_prompt,
            "continuation": req.continuation,
        });
        let written = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .and_then(|mut f| writeln!(f, "{line}"));
        if let Err(e) = written {
            tracing::warn!(error = %e, path = %path.display(), "cannot record mock request");
        }
    }

    fn pick(&self, text: &str) -> Rule {
        self.rules
            .iter()
            .find(|r| r.pattern.as_ref().is_none_or(|re| re.is_match(text)))
            .cloned()
            .unwrap_or_else(|| Rule {
                pattern: None,
                tools: Vec::new(),
                action: Action::Reply {
                    template: "Mock agent: you said \"{text}\"".into(),
                    to: None,
                },
                delay: Duration::ZERO,
            })
    }
}

impl Provider for MockProvider {
    fn name(&self) -> &'static str {
        "mock"
    }

    fn exchange(
        &mut self,
        req: &Request<'_>,
        on_event: &mut dyn FnMut(Event<'_>),
    ) -> Result<String, ProviderError> {
        self.record(req);
        on_event(Event::Activity);
        // Deterministic continuation: the number of requests in this conversation.
        let n = req
            .continuation
            .and_then(|c| c.strip_prefix("mock-"))
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0);
        let next = format!("mock-{}", n + 1);
        on_event(Event::Continuation(&next));

        if req.kind == RequestKind::Command {
            let command = req
                .input
                .split_whitespace()
                .next()
                .unwrap_or(req.input)
                .to_lowercase();
            let text = format!("The {command} command is not available with the mock provider.");
            return Ok(wrap(req.hints.from.as_deref(), &text));
        }

        let rule = self.pick(&req.hints.text);
        if !rule.delay.is_zero() && self.shutdown.sleep(rule.delay) {
            return Err(ProviderError::Interrupted);
        }
        on_event(Event::Activity);
        // A nudge repeats the same newest message: its tools already ran.
        let tool_result = if req.kind == RequestKind::Turn {
            self.call_tools(&rule.tools, req.hints)
        } else {
            String::new()
        };
        let render = |t: &str| render(t, req.hints).replace("{tool_result}", &tool_result);
        match rule.action {
            Action::Reply { template, to } => Ok(wrap(
                to.as_deref().or(req.hints.from.as_deref()),
                &render(&template),
            )),
            Action::Raw(template) => Ok(render(&template)),
            Action::Error(template) => Err(ProviderError::failed(render(&template))),
            Action::Exit => {
                tracing::warn!("mock rule `exit`: killing this process mid-turn");
                // SAFETY: sends SIGKILL to ourselves; nothing after this runs.
                unsafe {
                    libc::kill(libc::getpid(), libc::SIGKILL);
                }
                Err(ProviderError::Interrupted)
            }
            Action::Hang => {
                while !self.shutdown.sleep(Duration::from_secs(3600)) {}
                Err(ProviderError::Interrupted)
            }
        }
    }

    fn reset(&mut self) {}
}

fn wrap(to: Option<&str>, text: &str) -> String {
    match to {
        Some(to) => format!("<message to=\"{to}\">{text}</message>"),
        // Nobody to address: the output stays scratchpad, as a careless model's would.
        None => text.to_string(),
    }
}

fn render(template: &str, hints: &Hints) -> String {
    template
        .replace("{text}", &hints.text)
        .replace("{from}", hints.from.as_deref().unwrap_or(""))
        .replace("{sender}", &hints.sender)
        .replace("{assistant}", hints.assistant_name.as_deref().unwrap_or(""))
}

/// `render` on every string inside a tool's arguments.
fn render_value(v: &serde_json::Value, hints: &Hints) -> serde_json::Value {
    use serde_json::Value;
    match v {
        Value::String(s) => Value::String(render(s, hints)),
        Value::Array(a) => Value::Array(a.iter().map(|v| render_value(v, hints)).collect()),
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, v)| (k.clone(), render_value(v, hints)))
                .collect(),
        ),
        other => other.clone(),
    }
}

fn load_script(path: &Path) -> Result<Vec<Rule>, ScriptError> {
    let err = |reason: String| ScriptError {
        path: path.to_path_buf(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let file: ScriptFile = toml::from_str(&text).map_err(|e| err(e.to_string()))?;
    file.rule
        .into_iter()
        .enumerate()
        .map(|(i, spec)| {
            let n = i + 1;
            let pattern = spec
                .pattern
                .as_deref()
                .map(Regex::new)
                .transpose()
                .map_err(|e| err(format!("rule {n}: bad `match` regex: {e}")))?;
            let mut actions = Vec::new();
            if let Some(template) = spec.reply {
                actions.push(Action::Reply {
                    template,
                    to: spec.to.clone(),
                });
            }
            if let Some(t) = spec.raw {
                actions.push(Action::Raw(t));
            }
            if let Some(t) = spec.error {
                actions.push(Action::Error(t));
            }
            if spec.exit {
                actions.push(Action::Exit);
            }
            if spec.hang {
                actions.push(Action::Hang);
            }
            if spec.to.is_some() && !matches!(actions.first(), Some(Action::Reply { .. })) {
                return Err(err(format!("rule {n}: `to` only goes with `reply`")));
            }
            // A rule of tool calls alone answers nothing more.
            if actions.is_empty() && !spec.tools.is_empty() {
                actions.push(Action::Raw(String::new()));
            }
            match <[Action; 1]>::try_from(actions) {
                Ok([action]) => Ok(Rule {
                    pattern,
                    tools: spec.tools,
                    action,
                    delay: Duration::from_millis(spec.delay_ms),
                }),
                Err(_) => Err(err(format!(
                    "rule {n}: needs exactly one of `reply`, `raw`, `error`, `exit`, `hang` \
                     (or only `tools`)"
                ))),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hints(text: &str) -> Hints {
        Hints {
            from: Some("family".into()),
            sender: "Ann".into(),
            text: text.into(),
            assistant_name: Some("Andy".into()),
        }
    }

    fn run(
        p: &mut MockProvider,
        kind: RequestKind,
        text: &str,
        continuation: Option<&str>,
    ) -> (Result<String, ProviderError>, Vec<String>) {
        let h = hints(text);
        let req = Request {
            kind,
            input: "<message>…</message>",
            system_prompt: "",
            continuation,
            hints: &h,
        };
        let mut events = Vec::new();
        let out = p.exchange(&req, &mut |e| events.push(format!("{e:?}")));
        (out, events)
    }

    fn script(body: &str) -> Result<MockProvider, ScriptError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mock.toml");
        std::fs::write(&path, body).unwrap();
        MockProvider::new(Some(&path), None, Shutdown::default(), None)
    }

    #[test]
    fn default_echoes_to_origin_and_counts_turns() {
        let mut p = MockProvider::new(None, None, Shutdown::default(), None).unwrap();
        let (out, events) = run(&mut p, RequestKind::Turn, "hello", None);
        assert_eq!(
            out.unwrap(),
            "<message to=\"family\">Mock agent: you said \"hello\"</message>"
        );
        assert!(
            events.contains(&"Continuation(\"mock-1\")".to_string()),
            "{events:?}"
        );
        let (_, events) = run(&mut p, RequestKind::Turn, "again", Some("mock-1"));
        assert!(events.contains(&"Continuation(\"mock-2\")".to_string()));
    }

    #[test]
    fn commands_are_not_available() {
        let mut p = MockProvider::new(None, None, Shutdown::default(), None).unwrap();
        let h = hints("/cost");
        let req = Request {
            kind: RequestKind::Command,
            input: "/cost now",
            system_prompt: "",
            continuation: None,
            hints: &h,
        };
        let out = p.exchange(&req, &mut |_| {}).unwrap();
        assert_eq!(
            out,
            "<message to=\"family\">The /cost command is not available with the mock provider.</message>"
        );
    }

    #[test]
    fn scripted_rules_in_order() {
        let mut p = script(
            r#"
            [[rule]]
            match = "^weather"
            reply = "Sunny for {sender}, says {assistant} in {from}"
            to = "work"
            [[rule]]
            match = "^raw"
            raw = "thinking about {text}"
            [[rule]]
            match = "^fail"
            error = "No conversation found with session ID: x"
            [[rule]]
            reply = "fallback"
            "#,
        )
        .unwrap();
        assert_eq!(
            run(&mut p, RequestKind::Turn, "weather?", None).0.unwrap(),
            "<message to=\"work\">Sunny for Ann, says Andy in family</message>"
        );
        assert_eq!(
            run(&mut p, RequestKind::Turn, "raw x", None).0.unwrap(),
            "thinking about raw x"
        );
        match run(&mut p, RequestKind::Turn, "fail", None).0 {
            Err(ProviderError::Failed {
                session_invalid: true,
                ..
            }) => {}
            other => panic!("{other:?}"),
        }
        assert_eq!(
            run(&mut p, RequestKind::Turn, "other", None).0.unwrap(),
            "<message to=\"family\">fallback</message>"
        );
    }

    #[test]
    fn bad_scripts_are_rejected() {
        for body in [
            "[[rule]]\nmatch = \"(\"\nreply = \"x\"",
            "[[rule]]\nreply = \"x\"\nraw = \"y\"",
            "[[rule]]\nmatch = \"x\"",
            "[[rule]]\nraw = \"x\"\nto = \"a\"",
            "[[rule]]\nreplay = \"typo\"",
        ] {
            assert!(script(body).is_err(), "{body}");
        }
    }

    #[test]
    fn hang_and_delay_end_on_shutdown() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mock.toml");
        std::fs::write(&path, "[[rule]]\nhang = true").unwrap();
        let shutdown = Shutdown::default();
        let mut p = MockProvider::new(Some(&path), None, shutdown.clone(), None).unwrap();
        let s = shutdown.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            s.request();
        });
        assert!(matches!(
            run(&mut p, RequestKind::Turn, "x", None).0,
            Err(ProviderError::Interrupted)
        ));
        t.join().unwrap();
    }

    #[test]
    fn records_requests() {
        let dir = tempfile::tempdir().unwrap();
        let rec = dir.path().join("rec.jsonl");
        let mut p = MockProvider::new(None, Some(rec.clone()), Shutdown::default(), None).unwrap();
        run(&mut p, RequestKind::Turn, "a", None).0.unwrap();
        run(&mut p, RequestKind::Nudge, "a", Some("mock-1"))
            .0
            .unwrap();
        let lines: Vec<serde_json::Value> = std::fs::read_to_string(&rec)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[1]["kind"], "nudge");
        assert_eq!(lines[1]["continuation"], "mock-1");
    }
}
