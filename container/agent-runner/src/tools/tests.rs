use std::collections::HashSet;
use std::path::Path;

use nanoclaw_schema::session::content::{ChatOut, SystemAction};
use nanoclaw_schema::session::{INBOUND_DB, OUTBOUND_DB, SESSION_DBS};
use rusqlite::{Connection, params};
use serde_json::{Value, json};

use super::*;

/// A session as the host lays it out, with one chat (`telegram:42`, destination `family`),
/// another agent (`helper`) and an inbound message from `alice` (seq 2, platform id `p-7`).
struct Session {
    dir: tempfile::TempDir,
    inbound: Connection,
}

impl Session {
    fn new() -> Session {
        let dir = tempfile::tempdir().unwrap();
        for (file, schema, version) in SESSION_DBS {
            let c = Connection::open(dir.path().join(file)).unwrap();
            c.pragma_update(None, "journal_mode", "wal").unwrap();
            c.execute_batch(schema).unwrap();
            c.pragma_update(None, "user_version", version).unwrap();
        }
        std::fs::create_dir(dir.path().join("agent")).unwrap();
        let inbound = Connection::open(dir.path().join(INBOUND_DB)).unwrap();
        inbound
            .execute_batch(
                "INSERT INTO destinations (name, type, channel_type, platform_id) VALUES ('family', 'channel', 'telegram', '42');
                 INSERT INTO destinations (name, type, agent_group_id) VALUES ('helper', 'agent', 'ag-2');
                 INSERT INTO session_routing (id, channel_type, platform_id) VALUES (1, 'telegram', '42');",
            )
            .unwrap();
        inbound
            .execute(
                "INSERT INTO messages_in (id, seq, kind, timestamp, channel_type, platform_id, thread_id, platform_message_id, content)
                 VALUES ('in-1', 2, 'chat', ?1, 'telegram', '42', 't-1', 'p-7', '{\"text\":\"hi\",\"sender_id\":\"telegram:alice\"}')",
                [nanoclaw_schema::time::now()],
            )
            .unwrap();
        Session { dir, inbound }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn toolbox(&self, admins: &[&str]) -> Toolbox {
        let db = SessionDb::open(self.path(), self.path()).unwrap();
        Toolbox::new(
            db,
            self.path().to_path_buf(),
            self.path().join("agent"),
            admins.iter().map(|s| s.to_string()).collect::<HashSet<_>>(),
            TimeZone::UTC,
        )
    }

    fn set_turn(&self, tools: &Toolbox, sender: &str) {
        let turn = Turn {
            in_reply_to: Some("in-1".into()),
            sender_id: Some(sender.into()),
            channel_type: Some("telegram".into()),
            platform_id: Some("42".into()),
            thread_id: Some("t-1".into()),
        };
        tools
            .db
            .set_state(TURN_STATE_KEY, &serde_json::to_string(&turn).unwrap())
            .unwrap();
    }

    /// `(id, kind, channel_type, platform_id, thread_id, in_reply_to, content)` of every row.
    #[allow(clippy::type_complexity)]
    fn rows(
        &self,
    ) -> Vec<(
        String,
        String,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
        Value,
    )> {
        let c = Connection::open(self.path().join(OUTBOUND_DB)).unwrap();
        let mut stmt = c
            .prepare("SELECT id, kind, channel_type, platform_id, thread_id, in_reply_to, content FROM messages_out ORDER BY seq")
            .unwrap();
        stmt.query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
                serde_json::from_str(&r.get::<_, String>(6)?).unwrap(),
            ))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
    }
}

fn names(specs: &[ToolSpec]) -> Vec<&str> {
    specs.iter().map(|s| s.name).collect()
}

#[test]
fn create_agent_is_offered_only_while_an_admin_talks() {
    let s = Session::new();
    let mut tools = s.toolbox(&["telegram:alice"]);
    s.set_turn(&tools, "telegram:bob");
    let offered = tools.specs().unwrap();
    assert!(!names(&offered).contains(&"create_agent"));
    assert!(names(&offered).contains(&"send_message"));
    let err = tools
        .call("create_agent", json!({"name": "Researcher"}))
        .unwrap_err();
    assert!(err.0.contains("only an admin"), "{err}");
    assert!(s.rows().is_empty());

    s.set_turn(&tools, "telegram:alice");
    assert!(names(&tools.specs().unwrap()).contains(&"create_agent"));
    tools
        .call(
            "create_agent",
            json!({"name": "Researcher", "instructions": "Dig."}),
        )
        .unwrap();
    let rows = s.rows();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].1, "system");
    assert_eq!(
        rows[0].5.as_deref(),
        Some("in-1"),
        "answers the admin's message"
    );
    let action: SystemAction = serde_json::from_value(rows[0].6.clone()).unwrap();
    assert_eq!(
        action,
        SystemAction::CreateAgent {
            name: "Researcher".into(),
            instructions: Some("Dig.".into())
        }
    );
}

#[test]
fn descriptions_list_the_destinations_live() {
    let s = Session::new();
    let tools = s.toolbox(&[]);
    let send = |tools: &Toolbox| {
        tools
            .specs()
            .unwrap()
            .into_iter()
            .find(|t| t.name == "send_message")
            .unwrap()
            .schema["properties"]["to"]["description"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert!(send(&tools).contains("family, helper"), "{}", send(&tools));
    s.inbound
        .execute(
            "INSERT INTO destinations (name, type, agent_group_id) VALUES ('kid', 'agent', 'ag-3')",
            [],
        )
        .unwrap();
    assert!(send(&tools).contains("family, helper, kid"));
}

#[test]
fn send_message_addresses_rows_like_the_runner() {
    let s = Session::new();
    let mut tools = s.toolbox(&[]);
    s.set_turn(&tools, "telegram:alice");
    let said = tools
        .call("send_message", json!({"text": "on it"}))
        .unwrap();
    assert!(said.contains("family"), "{said}");
    tools
        .call(
            "send_message",
            json!({"to": "helper", "text": "please help"}),
        )
        .unwrap();
    let err = tools
        .call("send_message", json!({"to": "nobody", "text": "x"}))
        .unwrap_err();
    assert!(err.0.contains("family, helper"), "{err}");
    assert!(tools.call("send_message", json!({"text": "  "})).is_err());
    assert!(
        tools
            .call("send_message", json!({}))
            .unwrap_err()
            .0
            .contains("bad arguments")
    );

    let rows = s.rows();
    assert_eq!(rows.len(), 2);
    // The chat of the turn, in its thread.
    assert_eq!(
        (
            rows[0].2.as_deref(),
            rows[0].3.as_deref(),
            rows[0].4.as_deref()
        ),
        (Some("telegram"), Some("42"), Some("t-1"))
    );
    assert_eq!(
        serde_json::from_value::<ChatOut>(rows[0].6.clone()).unwrap(),
        ChatOut::text("on it")
    );
    // Another agent: no thread.
    assert_eq!(
        (
            rows[1].2.as_deref(),
            rows[1].3.as_deref(),
            rows[1].4.as_deref()
        ),
        (Some("agent"), Some("ag-2"), None)
    );
    for r in &rows {
        assert!(
            nanoclaw_schema::session::is_valid_message_id(&r.0),
            "{}",
            r.0
        );
        assert_eq!(r.5.as_deref(), Some("in-1"));
    }
}

#[test]
fn send_file_stages_a_workspace_file_and_refuses_others() {
    let s = Session::new();
    let mut tools = s.toolbox(&[]);
    s.set_turn(&tools, "telegram:alice");
    std::fs::write(s.path().join("agent/report.txt"), b"numbers").unwrap();
    tools
        .call(
            "send_file",
            json!({"path": "report.txt", "caption": "here"}),
        )
        .unwrap();
    let rows = s.rows();
    let staged = s.path().join("outbox").join(&rows[0].0).join("report.txt");
    assert_eq!(std::fs::read(staged).unwrap(), b"numbers");
    assert_eq!(
        serde_json::from_value::<ChatOut>(rows[0].6.clone()).unwrap(),
        ChatOut::Send {
            text: "here".into(),
            files: vec!["report.txt".into()]
        }
    );

    // Outside the workspace, through a link, a directory, or missing: refused.
    std::os::unix::fs::symlink("/etc/hostname", s.path().join("agent/link")).unwrap();
    for bad in [
        "/etc/hostname",
        "link",
        "../../../etc/hostname",
        ".",
        "missing.txt",
    ] {
        assert!(
            tools.call("send_file", json!({"path": bad})).is_err(),
            "{bad}"
        );
    }
    assert_eq!(s.rows().len(), 1);
}

#[test]
fn edit_and_react_find_messages_by_the_ids_the_agent_sees() {
    let s = Session::new();
    let mut tools = s.toolbox(&[]);
    s.set_turn(&tools, "telegram:alice");
    tools
        .call(
            "add_reaction",
            json!({"message_id": 2, "emoji": "thumbs_up"}),
        )
        .unwrap();
    // The agent's own message, once the host recorded its platform id.
    let said = tools
        .call("send_message", json!({"text": "draft"}))
        .unwrap();
    let seq: i64 = said
        .rsplit(' ')
        .next()
        .unwrap()
        .trim_end_matches('.')
        .parse()
        .unwrap();
    let err = tools
        .call("edit_message", json!({"message_id": seq, "text": "final"}))
        .unwrap_err();
    assert!(err.0.contains("no platform id"), "{err}");
    let own_id = s.rows()[1].0.clone();
    s.inbound
        .execute(
            "INSERT INTO delivered (message_out_id, platform_message_id, status, delivered_at) VALUES (?1, 'p-9', 'delivered', ?2)",
            params![own_id, nanoclaw_schema::time::now()],
        )
        .unwrap();
    tools
        .call("edit_message", json!({"message_id": seq, "text": "final"}))
        .unwrap();
    assert!(
        tools
            .call("edit_message", json!({"message_id": 999, "text": "x"}))
            .is_err()
    );

    let rows = s.rows();
    assert_eq!(
        serde_json::from_value::<ChatOut>(rows[0].6.clone()).unwrap(),
        ChatOut::React {
            message_id: "p-7".into(),
            emoji: "thumbs_up".into()
        }
    );
    assert_eq!(
        serde_json::from_value::<ChatOut>(rows[2].6.clone()).unwrap(),
        ChatOut::Edit {
            message_id: "p-9".into(),
            text: "final".into()
        }
    );
}

#[test]
fn questions_tasks_and_requests_become_the_hosts_shapes() {
    let s = Session::new();
    let mut tools = s.toolbox(&[]);
    s.set_turn(&tools, "telegram:alice");
    tools
        .call(
            "ask_user_question",
            json!({"question": "Tea or coffee?", "options": ["Tea", "Coffee"], "timeout_seconds": 60}),
        )
        .unwrap();
    assert!(
        tools
            .call("ask_user_question", json!({"question": "?", "options": []}))
            .is_err()
    );
    tools
        .call(
            "schedule_task",
            json!({"prompt": "water the plants", "every": "15m", "to": "family"}),
        )
        .unwrap();
    tools
        .call(
            "schedule_task",
            json!({"prompt": "once", "at": "2099-01-02T09:00"}),
        )
        .unwrap();
    assert!(
        tools
            .call("schedule_task", json!({"prompt": "when?"}))
            .is_err()
    );
    assert!(
        tools
            .call(
                "schedule_task",
                json!({"prompt": "x", "at": "2001-01-01T00:00:00Z"})
            )
            .unwrap_err()
            .0
            .contains("past")
    );
    tools
        .call("pause_task", json!({"task_id": "task-1"}))
        .unwrap();
    tools
        .call("update_task", json!({"task_id": "task-1", "every": ""}))
        .unwrap();
    assert!(
        tools
            .call("update_task", json!({"task_id": "task-1", "to": "nowhere"}))
            .unwrap_err()
            .0
            .contains("nowhere")
    );
    tools
        .call(
            "install_packages",
            json!({"apt": ["jq"], "reason": "parse json"}),
        )
        .unwrap();
    assert!(
        tools
            .call("install_packages", json!({"apt": ["jq; rm -rf /"]}))
            .unwrap_err()
            .0
            .contains("apt")
    );
    tools
        .call(
            "add_mcp_server",
            json!({"name": "weather", "command": "node", "args": ["w.js"]}),
        )
        .unwrap();
    assert!(
        tools
            .call(
                "add_mcp_server",
                json!({"name": "nanoclaw", "command": "x"})
            )
            .is_err()
    );

    let contents: Vec<Value> = s.rows().into_iter().map(|r| r.6).collect();
    assert_eq!(contents.len(), 7);
    match serde_json::from_value::<ChatOut>(contents[0].clone()).unwrap() {
        ChatOut::Question {
            options,
            timeout_secs,
            ..
        } => {
            assert_eq!(options, ["Tea", "Coffee"]);
            assert_eq!(timeout_secs, Some(60));
        }
        other => panic!("{other:?}"),
    }
    let actions: Vec<SystemAction> = contents[1..]
        .iter()
        .map(|c| serde_json::from_value(c.clone()).unwrap())
        .collect();
    match &actions[0] {
        SystemAction::ScheduleTask {
            prompt,
            recurrence,
            to,
            ..
        } => {
            assert_eq!(recurrence.as_deref(), Some("*/15 * * * *"));
            assert_eq!(to.as_deref(), Some("family"));
            assert!(
                !prompt.contains("family"),
                "the prompt stays the agent's: {prompt}"
            );
        }
        other => panic!("{other:?}"),
    }
    match &actions[1] {
        SystemAction::ScheduleTask {
            process_after,
            recurrence,
            ..
        } => {
            assert!(
                process_after.starts_with("2099-01-02T09:00:00"),
                "{process_after}"
            );
            assert!(recurrence.is_none());
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        actions[2],
        SystemAction::PauseTask {
            task_id: "task-1".into()
        }
    );
    assert!(
        matches!(&actions[3], SystemAction::UpdateTask { recurrence: Some(r), .. } if r.is_empty())
    );
    assert!(matches!(&actions[4], SystemAction::InstallPackages { apt, .. } if apt == &["jq"]));
    assert!(matches!(&actions[5], SystemAction::AddMcpServer { name, .. } if name == "weather"));
}

#[test]
fn list_tasks_reads_the_hosts_projection() {
    let s = Session::new();
    let mut tools = s.toolbox(&[]);
    assert_eq!(tools.call("list_tasks", Value::Null).unwrap(), "No tasks.");
    s.inbound
        .execute(
            "INSERT INTO scheduled_tasks (id, prompt, recurrence, next_run, status, destination) VALUES ('task-1', 'water the plants', '0 9 * * *', '2099-01-01T09:00:00.000Z', 'paused', 'family')",
            [],
        )
        .unwrap();
    let listed = tools.call("list_tasks", Value::Null).unwrap();
    assert!(
        listed.contains("task-1 [paused]")
            && listed.contains("to family")
            && listed.contains("water the plants"),
        "{listed}"
    );
    assert!(tools.call("no_such_tool", Value::Null).is_err());
}
