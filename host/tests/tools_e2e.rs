//! The agent's tools, the whole way: the REAL Claude Code CLI in the offline image, in a real
//! container with no network, calling the runner's MCP tools (`mcp__nanoclaw__*`) because a
//! fake Anthropic API scripts those `tool_use`s; the daemon applies what they write; the real
//! Telegram plugin posts to a fake Bot API on 127.0.0.1, where the test looks as a user would.
//!
//! Covered: a message to another destination (and one to a name the agent does not have),
//! a file made with Bash arriving as a document, a reaction and an edit, a question card whose
//! click comes back to the agent, a scheduled task firing and its answer delivered, and
//! `create_agent` by an admin (a working child agent) and by a non-admin (not offered in the
//! container, and refused on the host when a tampered container writes it anyway).

mod common;
mod harness;

use std::path::PathBuf;
use std::time::Duration;

use harness::{Daemon, Install, built, claude_image, require_engine, wait_until};
use nanoclaw_fake_anthropic::{FakeAnthropic, Reply, Rule};
use nanoclaw_fake_telegram::{FakeTelegram, Person, Sent, UserMessage};
use rusqlite::params;
use serde_json::{Value, json};

const TOKEN: &str = "1234567890:FAKE-token-for-e2e-tests-only-0000000";
const ANTHROPIC_KEY: &str = "sk-ant-tools-e2e-HOST-ONLY";
const AGENT: Duration = Duration::from_secs(120);
/// Ann's DM with the bot, and the team group the agent may also post to.
const DM: i64 = 42;
const TEAM: i64 = -100_777;

fn ann() -> Person {
    Person::new(42, "Ann")
}

fn bob() -> Person {
    Person::new(77, "Bob")
}

fn to(dest: &str, text: &str) -> Reply {
    Reply::text(format!("<message to=\"{dest}\">{text}</message>"))
}

fn tool(name: &str, input: Value) -> Reply {
    Reply::tool_use(&format!("mcp__nanoclaw__{name}"), input)
}

struct Fx {
    install: Install,
    tg: FakeTelegram,
    model: FakeAnthropic,
    daemon: Option<Daemon>,
}

impl Fx {
    /// `boss` (Claude, in the offline image) wired to Ann's DM (`ann`, Ann is its admin) and
    /// to the team group (`team`, public, where Bob talks).
    fn new(image: &str) -> Fx {
        let model = FakeAnthropic::start(ANTHROPIC_KEY).expect("fake Anthropic API");
        let install = Install::new(&format!(
            "TELEGRAM_BOT_TOKEN={TOKEN}\nANTHROPIC_API_KEY={ANTHROPIC_KEY}\nANTHROPIC_BASE_URL={}\n",
            model.base_url()
        ));
        let tg = FakeTelegram::start(TOKEN).expect("fake Bot API");
        install.ok(&[
            "groups",
            "create",
            "boss",
            "--folder",
            "boss",
            "--provider",
            "claude",
        ]);
        install.ok(&["groups", "set", "boss", "--image", image]);
        install.ok(&[
            "chats",
            "add",
            &format!("telegram:{DM}"),
            "--name",
            "ann",
            "--policy",
            "public",
        ]);
        install.ok(&[
            "chats",
            "add",
            &format!("telegram:{TEAM}"),
            "--name",
            "team",
            "--group",
            "--policy",
            "public",
        ]);
        install.ok(&["wire", "add", &format!("telegram:{DM}"), "boss"]);
        install.ok(&["wire", "add", &format!("telegram:{TEAM}"), "boss"]);
        for u in ["telegram:42", "telegram:77"] {
            install.ok(&["users", "add", u]);
        }
        install.ok(&["roles", "grant", "telegram:42", "admin", "--agent", "boss"]);
        Fx {
            install,
            tg,
            model,
            daemon: None,
        }
    }

    fn start(&mut self) {
        let plugins = format!(
            "[plugins.telegram]\nlibrary = {:?}\nrequired = true\n\
             [plugins.telegram.settings]\nbot_token = {{ env = \"TELEGRAM_BOT_TOKEN\" }}\n\
             api_base_url = {:?}\npoll_timeout_secs = 1\n",
            built().join("libnanoclaw_plugin_channels.so"),
            self.tg.base_url()
        );
        let daemon = Daemon::start_event_driven(&self.install.data, &plugins, &[]);
        assert!(
            wait_until(Duration::from_secs(30), || !self
                .tg
                .calls_of("getUpdates")
                .is_empty()),
            "the plugin never polled:\n{}",
            daemon.log()
        );
        self.daemon = Some(daemon);
    }

    fn log(&self) -> String {
        self.daemon.as_ref().map(Daemon::log).unwrap_or_default()
    }

    fn dm(&self, text: &str) -> i64 {
        self.tg
            .send_user_message(UserMessage::private(ann(), text))
            .expect("inject a DM")
            .message_id
    }

    fn in_team(&self, from: &Person, text: &str) -> i64 {
        self.tg
            .send_user_message(UserMessage::group(
                TEAM,
                "team",
                from.clone(),
                &format!("@nanoclaw_test_bot {text}"),
            ))
            .expect("inject a group message")
            .message_id
    }

    fn sent(&self, method: &str, chat: i64) -> Vec<Sent> {
        self.tg
            .sent()
            .into_iter()
            .filter(|s| s.method == method && s.chat_id == Some(chat))
            .collect()
    }

    fn texts(&self, chat: i64) -> Vec<String> {
        self.sent("sendMessage", chat)
            .iter()
            .map(|s| {
                s.plain_text
                    .clone()
                    .or_else(|| s.text.clone())
                    .unwrap_or_default()
            })
            .collect()
    }

    fn wait(&self, what: &str, mut f: impl FnMut() -> bool) {
        assert!(
            wait_until(AGENT, &mut f),
            "{what} never happened; the bot sent {:#?}\nthe model was asked {:#?}\n{}",
            self.tg.sent(),
            self.model
                .requests()
                .iter()
                .map(|r| (r.user_texts(), r.tool_results()))
                .collect::<Vec<_>>(),
            self.log()
        );
    }

    fn wait_text(&self, chat: i64, text: &str) {
        self.wait(&format!("{text:?} in {chat}"), || {
            self.texts(chat).iter().any(|t| t.contains(text))
        });
    }

    /// The session directory of `folder` for the chat `chat_id`.
    fn session(&self, folder: &str, chat: i64) -> PathBuf {
        let list = self.install.json(&["sessions", "list", "--agent", folder]);
        for s in list.as_array().expect("sessions") {
            let dir = self
                .install
                .data
                .join("sessions")
                .join(s["agent_group_id"].as_str().unwrap())
                .join(s["id"].as_str().unwrap());
            let db = harness::inbound_db(&dir).unwrap();
            let routed: Option<String> = db
                .query_row("SELECT platform_id FROM session_routing", [], |r| r.get(0))
                .ok();
            if routed.as_deref() == Some(&chat.to_string()) {
                return dir;
            }
        }
        panic!("no session of {folder} for {chat}: {list}")
    }

    /// The seq the agent sees for a user's message (`<message id="N">`).
    fn seq_of_inbound(&self, chat: i64, platform_message_id: i64) -> i64 {
        harness::inbound_db(&self.session("boss", chat))
            .unwrap()
            .query_row(
                "SELECT seq FROM messages_in WHERE platform_message_id = ?1",
                [platform_message_id.to_string()],
                |r| r.get(0),
            )
            .unwrap()
    }

    /// The seq of the agent's own chat row whose text is `text`.
    fn seq_of_reply(&self, chat: i64, text: &str) -> i64 {
        let db = harness::outbound_db(&self.session("boss", chat)).unwrap();
        let mut stmt = db
            .prepare("SELECT seq, content FROM messages_out WHERE kind = 'chat' ORDER BY seq")
            .unwrap();
        let rows: Vec<(i64, String)> = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        rows.into_iter()
            .find(|(_, c)| serde_json::from_str::<Value>(c).unwrap()["text"] == text)
            .map(|(s, _)| s)
            .unwrap_or_else(|| panic!("no reply {text:?}"))
    }

    fn tool_results(&self) -> Vec<String> {
        self.model
            .requests()
            .iter()
            .flat_map(|r| r.tool_results())
            .collect()
    }

    fn groups(&self) -> Vec<String> {
        self.install
            .json(&["groups", "list"])
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g["folder"].as_str().unwrap_or_default().to_string())
            .collect()
    }
}

#[test]
fn claude_uses_the_agents_tools_and_the_host_applies_them() {
    if !require_engine("claude_uses_the_agents_tools_and_the_host_applies_them") {
        return;
    }
    let Some(image) = claude_image() else {
        return;
    };
    let mut fx = Fx::new(image);
    let m = &fx.model;
    m.push_rule(
        Rule::on_text("morning all", to("team", "Morning!"))
            .with_tools()
            .times(1),
    );
    // A message to another destination mid-turn, then a name the agent does not have.
    m.push_rule(
        Rule::on_text(
            "tell the team",
            tool(
                "send_message",
                json!({"to": "team", "text": "Standup moved to 10:30"}),
            ),
        )
        .with_tools()
        .times(1),
    );
    m.push_rule(
        Rule::on_tool_result(
            "Queued for team",
            tool(
                "send_message",
                json!({"to": "boss-of-everyone", "text": "secret"}),
            ),
        )
        .with_tools()
        .times(1),
    );
    m.push_rule(
        Rule::on_tool_result("unknown destination", to("ann", "Told the team."))
            .with_tools()
            .times(1),
    );
    // A file made with Bash, sent as a document.
    m.push_rule(Rule::on_text("send me the report", Reply::tool_use("Bash", json!({"command": "printf 'q3: up 12%%' > /workspace/agent/report.txt && echo report-written", "description": "write"}))).with_tools().times(1));
    m.push_rule(
        Rule::on_tool_result(
            "",
            tool(
                "send_file",
                json!({"path": "report.txt", "caption": "The report"}),
            ),
        )
        .with_tools()
        .times(1),
    );
    m.push_rule(
        Rule::on_tool_result("Queued report.txt", to("ann", "Report sent."))
            .with_tools()
            .times(1),
    );
    // A question with buttons; the click comes back as a message.
    m.push_rule(Rule::on_text("ask me", tool("ask_user_question", json!({"question": "Tea or coffee?", "options": ["Tea", "Coffee"], "title": "Break"}))).with_tools().times(1));
    m.push_rule(
        Rule::on_tool_result("Question", to("ann", "Asked."))
            .with_tools()
            .times(1),
    );
    m.push_rule(
        Rule::on_text("answered question", to("ann", "Coffee it is."))
            .with_tools()
            .times(1),
    );
    fx.start();

    // The bot meets the team group (a bot can only post where it is).
    fx.in_team(&bob(), "morning all");
    fx.wait_text(TEAM, "Morning!");

    fx.dm("please tell the team");
    fx.wait_text(TEAM, "Standup moved to 10:30");
    fx.wait_text(DM, "Told the team.");
    assert!(fx.texts(TEAM).iter().all(|t| !t.contains("secret")));
    assert!(
        fx.tool_results()
            .iter()
            .any(|t| t.contains("unknown destination") && t.contains("team")),
        "{:?}",
        fx.tool_results()
    );

    let asked = fx.dm("send me the report");
    fx.wait("the report as a document", || {
        !fx.sent("sendDocument", DM).is_empty()
    });
    let doc = fx.sent("sendDocument", DM).remove(0);
    let file = doc.document.expect("a document");
    assert_eq!(file.file_name, "report.txt");
    assert_eq!(file.data, b"q3: up 12%");
    assert_eq!(
        doc.text.as_deref().or(doc.plain_text.as_deref()),
        Some("The report")
    );
    fx.wait_text(DM, "Report sent.");

    // A reaction to Ann's earlier message and an edit of the agent's own reply, by the ids
    // it sees. Both ids are known before "nice work" is sent, so the rules are in place
    // before the agent can take the turn.
    let seq = fx.seq_of_inbound(DM, asked);
    let done = fx.seq_of_reply(DM, "Report sent.");
    fx.model.push_rule(
        Rule::on_text(
            "nice work",
            tool("add_reaction", json!({"message_id": seq, "emoji": "👍"})),
        )
        .with_tools()
        .times(1),
    );
    fx.model.push_rule(
        Rule::on_tool_result(
            "Reaction to message",
            tool(
                "edit_message",
                json!({"message_id": done, "text": "Report sent (3 pages)."}),
            ),
        )
        .with_tools()
        .times(1),
    );
    fx.model.push_rule(
        Rule::on_tool_result("Edit of message", to("ann", "Thanks!"))
            .with_tools()
            .times(1),
    );
    fx.dm("nice work");
    fx.wait("a reaction", || {
        !fx.sent("setMessageReaction", DM).is_empty()
    });
    let reaction = fx.sent("setMessageReaction", DM).remove(0);
    assert_eq!(reaction.message_id, Some(asked));
    assert_eq!(reaction.reaction, ["👍"]);
    fx.wait("an edit", || !fx.sent("editMessageText", DM).is_empty());
    let edit = fx.sent("editMessageText", DM).remove(0);
    assert!(
        edit.plain_text
            .or(edit.text)
            .unwrap_or_default()
            .contains("3 pages")
    );
    fx.wait_text(DM, "Thanks!");

    // The question card; Ann clicks Coffee; the agent hears it.
    fx.dm("ask me something");
    fx.wait("the question card", || {
        fx.sent("sendMessage", DM)
            .iter()
            .any(|s| !s.buttons.is_empty())
    });
    let card = fx
        .sent("sendMessage", DM)
        .into_iter()
        .find(|s| !s.buttons.is_empty())
        .unwrap();
    let coffee = card
        .buttons
        .iter()
        .flatten()
        .find(|b| b.text == "Coffee")
        .expect("a Coffee button");
    fx.tg
        .click(DM, card.message_id.unwrap(), &ann(), &coffee.callback_data)
        .expect("click");
    fx.wait_text(DM, "Coffee it is.");
    let last = fx
        .model
        .requests()
        .into_iter()
        .rfind(|r| r.has_tools())
        .unwrap();
    assert!(
        last.user_texts().join("\n").contains("Coffee"),
        "the answer reached the model"
    );

    // A task scheduled a few seconds ahead, for the team, fires into the session as a task
    // from the team; its answer is delivered there.
    let at = (jiff::Timestamp::now() + jiff::SignedDuration::from_secs(8)).to_string();
    fx.model.push_rule(
        Rule::on_text(
            "remind the team",
            tool(
                "schedule_task",
                json!({"prompt": "Water the plants now", "at": at, "to": "team"}),
            ),
        )
        .with_tools()
        .times(1),
    );
    fx.model.push_rule(
        Rule::on_tool_result("requested", to("ann", "Reminder set."))
            .with_tools()
            .times(1),
    );
    fx.model.push_rule(
        Rule::on_text(
            "Water the plants now",
            to("team", "Time to water the plants!"),
        )
        .with_tools()
        .times(1),
    );
    fx.dm("remind the team to water the plants");
    fx.wait_text(DM, "Reminder set.");
    fx.wait_text(TEAM, "Time to water the plants!");
    let fired = fx
        .model
        .requests()
        .iter()
        .flat_map(|r| r.user_texts())
        .find(|t| t.contains("Water the plants now") && t.contains("<task"))
        .expect("the task reached the model");
    assert!(fired.contains("from=\"team\""), "{fired}");
    let tasks = fx.install.json(&["tasks", "list"]);
    assert_eq!(tasks[0]["destination"], "team", "{tasks}");
    assert_eq!(tasks[0]["prompt"], "Water the plants now", "{tasks}");

    // Every model request carried the host's key; the container never saw it.
    for r in fx.model.requests() {
        assert_eq!(r.header("x-api-key"), Some(ANTHROPIC_KEY));
    }
}

#[test]
fn create_agent_works_for_an_admin_and_never_for_anyone_else() {
    if !require_engine("create_agent_works_for_an_admin_and_never_for_anyone_else") {
        return;
    }
    let Some(image) = claude_image() else {
        return;
    };
    let mut fx = Fx::new(image);
    let m = &fx.model;
    // Ann (admin) asks; the created child is messaged at once and answers its parent.
    m.push_rule(
        Rule::on_text(
            "make a researcher",
            tool(
                "create_agent",
                json!({"name": "Researcher", "instructions": "You find sources."}),
            ),
        )
        .with_tools()
        .times(1),
    );
    m.push_rule(
        Rule::on_tool_result("Creation of agent", to("ann", "Asked for it."))
            .with_tools()
            .times(1),
    );
    m.push_rule(
        Rule::on_text(
            "created. Message it with",
            tool(
                "send_message",
                json!({"to": "researcher", "text": "Welcome, find sources on tides"}),
            ),
        )
        .with_tools()
        .times(1),
    );
    m.push_rule(
        Rule::on_tool_result(
            "Queued for researcher",
            to("ann", "The researcher is on it."),
        )
        .with_tools()
        .times(1),
    );
    m.push_rule(
        Rule::on_text(
            "find sources on tides",
            to("parent", "Found 3 sources on tides"),
        )
        .with_tools()
        .times(1),
    );
    m.push_rule(
        Rule::on_text("Found 3 sources", to("ann", "Researcher found 3 sources."))
            .with_tools()
            .times(1),
    );
    // Bob (not an admin) in the team group: the model tries anyway.
    m.push_rule(
        Rule::on_text(
            "make me a spy",
            tool("create_agent", json!({"name": "Spy"})),
        )
        .with_tools()
        .times(1),
    );
    m.push_rule(
        Rule::on_tool_result("", to("team", "I cannot do that."))
            .with_tools()
            .times(1),
    );
    fx.start();

    fx.dm("please make a researcher");
    fx.wait_text(DM, "Asked for it.");
    fx.wait("the child agent", || {
        fx.groups().contains(&"researcher".to_string())
    });
    fx.wait_text(DM, "The researcher is on it.");
    fx.wait_text(DM, "Researcher found 3 sources.");
    let child = fx.install.json(&["groups", "show", "researcher"]);
    assert!(child.to_string().contains("parent"), "{child}");

    fx.in_team(&bob(), "make me a spy");
    fx.wait_text(TEAM, "I cannot do that.");
    // Bob's turn offered no create_agent: the CLI refused the call itself.
    let bobs = fx
        .model
        .requests()
        .into_iter()
        .find(|r| r.has_tools() && r.user_texts().join("\n").contains("make me a spy"))
        .expect("Bob's request");
    let offered = bobs.body["tools"].to_string();
    assert!(
        !offered.contains("mcp__nanoclaw__create_agent"),
        "offered to a non-admin"
    );
    assert!(offered.contains("mcp__nanoclaw__send_message"));

    // A tampered container writes the request anyway, answering Bob's message: refused.
    let dir = fx.session("boss", TEAM);
    let bobs_row: String = harness::inbound_db(&dir)
        .unwrap()
        .query_row(
            "SELECT id FROM messages_in WHERE kind = 'chat' ORDER BY seq DESC LIMIT 1",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let out = harness::outbound_db(&dir).unwrap();
    let seq: i64 = out
        .query_row("SELECT COALESCE(MAX(seq), 0) FROM messages_out", [], |r| {
            r.get(0)
        })
        .unwrap();
    out.execute(
        "INSERT INTO messages_out (id, seq, in_reply_to, timestamp, kind, content) VALUES ('forged-1', ?1, ?2, ?3, 'system', ?4)",
        params![
            seq + 200,
            bobs_row,
            nanoclaw_schema::time::now(),
            json!({"action": "create_agent", "name": "Spy"}).to_string()
        ],
    )
    .unwrap();
    fx.wait("the forged request refused", || {
        harness::inbound_db(&dir)
            .unwrap()
            .query_row(
                "SELECT status FROM delivered WHERE message_out_id = 'forged-1'",
                [],
                |r| r.get::<_, String>(0),
            )
            .is_ok_and(|s| s == "rejected")
    });
    assert!(!fx.groups().iter().any(|g| g == "spy"), "{:?}", fx.groups());
}

/// A minimal MCP server on stdio (one tool, `greet`), shipped in the test's apt package.
const HELLO_MCP: &str = r#"#!/bin/sh
# The test package's MCP server: answers initialize, tools/list and tools/call.
while IFS= read -r line; do
  id=$(printf '%s' "$line" | sed -n 's/.*"id":\([0-9][0-9]*\).*/\1/p')
  [ -n "$id" ] || continue
  case "$line" in
    *'"method":"initialize"'*)
      v=$(printf '%s' "$line" | sed -n 's/.*"protocolVersion":"\([^"]*\)".*/\1/p')
      printf '{"jsonrpc":"2.0","id":%s,"result":{"protocolVersion":"%s","capabilities":{"tools":{}},"serverInfo":{"name":"hello","version":"1.0"}}}\n' "$id" "$v" ;;
    *'"method":"tools/list"'*)
      printf '{"jsonrpc":"2.0","id":%s,"result":{"tools":[{"name":"greet","description":"Says hello","inputSchema":{"type":"object","properties":{}}}]}}\n' "$id" ;;
    *'"method":"tools/call"'*)
      printf '{"jsonrpc":"2.0","id":%s,"result":{"content":[{"type":"text","text":"hello from the packaged MCP server"}]}}\n' "$id" ;;
    *)
      printf '{"jsonrpc":"2.0","id":%s,"result":{}}\n' "$id" ;;
  esac
done
"#;

impl Fx {
    /// Waits for the next approval card in Ann's DM after `seen` of them, and clicks `label`.
    fn decide(&self, seen: usize, label: &str) {
        let cards = || -> Vec<Sent> {
            self.sent("sendMessage", DM)
                .into_iter()
                .filter(|s| s.buttons.iter().flatten().any(|b| b.text == "Approve"))
                .collect()
        };
        self.wait("an approval card", || cards().len() > seen);
        let card = cards().remove(seen);
        let button = card
            .buttons
            .iter()
            .flatten()
            .find(|b| b.text == label)
            .expect("the button");
        self.tg
            .click(DM, card.message_id.unwrap(), &ann(), &button.callback_data)
            .expect("click");
    }

    fn image_of(&self, folder: &str) -> String {
        self.install.json(&["groups", "show", folder])["group"]["container_config"]["image"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

#[test]
fn approved_packages_and_mcp_servers_change_the_agent_and_denied_ones_do_not() {
    if !require_engine("approved_packages_and_mcp_servers_change_the_agent_and_denied_ones_do_not")
    {
        return;
    }
    let Some(image) = claude_image() else {
        return;
    };
    let repo_dir = tempfile::tempdir().unwrap();
    let repo = harness::apt::repo(
        repo_dir.path(),
        &[("nanoclaw-hello", &[("usr/bin/hello-mcp", HELLO_MCP)])],
    );
    let served = harness::apt::Served::start(repo);
    let mut fx = Fx::new(image);
    let env = fx.install.data.join(".env");
    let mut text = std::fs::read_to_string(&env).unwrap();
    text.push_str(&format!(
        "NANOCLAW_APT_SOURCES=deb [trusted=yes] http://127.0.0.1:{}/ ./\n",
        served.port
    ));
    std::fs::write(&env, text).unwrap();

    let m = &fx.model;
    m.push_rule(
        Rule::on_text(
            "install the hello package",
            tool(
                "install_packages",
                json!({"apt": ["nanoclaw-hello"], "reason": "a greeting server"}),
            ),
        )
        .with_tools()
        .times(1),
    );
    m.push_rule(
        Rule::on_tool_result("Install of", to("ann", "Waiting for approval."))
            .with_tools()
            .times(2),
    );
    m.push_rule(
        Rule::on_text(
            "Packages installed: nanoclaw-hello",
            tool(
                "add_mcp_server",
                json!({"name": "hello", "command": "/usr/bin/hello-mcp"}),
            ),
        )
        .with_tools()
        .times(1),
    );
    m.push_rule(
        Rule::on_tool_result(
            "MCP server \"hello\" submitted",
            to("ann", "Asked for the server."),
        )
        .with_tools()
        .times(1),
    );
    m.push_rule(
        Rule::on_text(
            "MCP server hello added",
            Reply::tool_use("mcp__hello__greet", json!({})),
        )
        .with_tools()
        .times(1),
    );
    m.push_rule(
        Rule::on_tool_result(
            "hello from the packaged MCP server",
            to("ann", "The new server says hello."),
        )
        .with_tools()
        .times(1),
    );
    m.push_rule(
        Rule::on_text(
            "install cowsay",
            tool("install_packages", json!({"apt": ["cowsay"]})),
        )
        .with_tools()
        .times(1),
    );
    m.push_rule(
        Rule::on_text("was rejected by", to("ann", "No cowsay then."))
            .with_tools()
            .times(1),
    );
    fx.start();

    // Approved: the package is built into a new image layer from the local repository.
    fx.dm("please install the hello package");
    fx.wait_text(DM, "Waiting for approval.");
    let base = fx.image_of("boss");
    fx.decide(0, "Approve");
    // Approved: the container restarts on the new image; the agent asks for the server.
    fx.wait_text(DM, "Asked for the server.");
    let layered = fx.image_of("boss");
    assert_ne!(layered, base, "the agent runs a new image");
    let out = harness::run_in_image(&layered, "test", &["-x", "/usr/bin/hello-mcp"]);
    assert!(out.status.success(), "the package's file is in the image");
    fx.decide(1, "Approve");
    // The restarted agent calls the new server's tool; its answer goes back to the model.
    fx.wait_text(DM, "The new server says hello.");
    let mcp =
        std::fs::read_to_string(fx.install.data.join("config/boss/mcp-servers.json")).unwrap();
    assert!(mcp.contains("/usr/bin/hello-mcp"), "{mcp}");

    // Denied: nothing is built and the agent is told.
    fx.dm("please install cowsay");
    fx.wait_text(DM, "Waiting for approval.");
    fx.decide(2, "Reject");
    fx.wait_text(DM, "No cowsay then.");
    assert_eq!(
        fx.image_of("boss"),
        layered,
        "a denied request changes nothing"
    );
}
