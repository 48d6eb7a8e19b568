//! `create_agent` end to end, with a real Docker engine: the daemon, the test plugin and a
//! mock-provider agent. The test writes the `create_agent` rows into the session's
//! `outbound.db` itself, exactly as a tampered container could: the host alone decides.

mod common;
mod harness;

use std::path::Path;
use std::time::Duration;

use harness::testchat::Setup;
use harness::{Daemon, cli_ok, require_engine, wait_until};
use rusqlite::{Connection, OptionalExtension, params};
use serde_json::{Value, json};

/// The creator answers "hello" and keeps quiet otherwise (notes, its child's answers), so
/// no two agents talk to each other forever.
const BOSS: &str =
    "[[rule]]\nmatch = \"^hello\"\nreply = \"hi {sender}\"\n\n[[rule]]\nraw = \"noted\"\n";

struct Fx {
    s: Setup,
    daemon: Daemon,
}

impl Fx {
    /// `boss` wired to the public chat `room`; `test:alice` is its admin, `test:bob` is not.
    fn start() -> Fx {
        let s = Setup::new();
        s.agent("boss", "room", BOSS);
        for u in ["test:alice", "test:bob"] {
            cli_ok(&s.data, &["users", "add", u]);
        }
        cli_ok(
            &s.data,
            &["roles", "grant", "test:alice", "admin", "--agent", "boss"],
        );
        let daemon = s.start();
        Fx { s, daemon }
    }

    fn session(&self) -> std::path::PathBuf {
        let boss = self.group("boss").expect("boss")["id"]
            .as_str()
            .unwrap()
            .to_string();
        let dirs: Vec<_> = self
            .s
            .session_dirs()
            .into_iter()
            .filter(|d| d.parent().is_some_and(|p| p.ends_with(&boss)))
            .collect();
        assert_eq!(dirs.len(), 1, "one session of boss: {dirs:?}");
        dirs[0].clone()
    }

    fn inbound(&self) -> Connection {
        harness::inbound_db(&self.session()).unwrap()
    }

    /// `from` says hello in the room; waits for the answer; returns the row id the host gave
    /// the message in the session.
    fn hello(&self, from: &str, id: &str) -> String {
        let before = self.s.delivered_to("room").len();
        self.s.say("room", from, id, "hello");
        self.s.expect_delivered(&self.daemon, "room", before + 1);
        self.inbound()
            .query_row(
                "SELECT id FROM messages_in WHERE platform_message_id = ?1",
                [id],
                |r| r.get(0),
            )
            .unwrap()
    }

    /// Writes a row into boss's outbound.db as its container would.
    fn write(
        &self,
        id: &str,
        reply_to: Option<&str>,
        kind: &str,
        to: Option<(&str, &str)>,
        content: Value,
    ) {
        // The next odd seq after the agent's own rows, in the statement itself, so the runner
        // writing at the same time cannot take it.
        harness::outbound_db(&self.session())
            .unwrap()
            .execute(
                "INSERT INTO messages_out (id, seq, in_reply_to, timestamp, kind, channel_type, platform_id, content)
                 SELECT ?1, CASE WHEN m % 2 = 1 THEN m + 2 ELSE m + 1 END, ?2, '2026-01-01T00:00:00.000Z', ?3, ?4, ?5, ?6
                   FROM (SELECT COALESCE(MAX(seq), 1000) AS m FROM messages_out)",
                params![id, reply_to, kind, to.map(|t| t.0), to.map(|t| t.1), content.to_string()],
            )
            .unwrap();
    }

    fn create_agent(&self, id: &str, reply_to: Option<&str>, name: &str) {
        self.write(
            id,
            reply_to,
            "system",
            None,
            json!({"action": "create_agent", "name": name, "instructions": "You research things for the boss."}),
        );
    }

    /// How the host recorded an outbound row, once it did.
    fn outcome(&self, id: &str) -> (String, Option<String>) {
        let mut got = None;
        let ok = wait_until(Duration::from_secs(30), || {
            got = self
                .inbound()
                .query_row(
                    "SELECT status, error FROM delivered WHERE message_out_id = ?1",
                    [id],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()
                .unwrap();
            got.is_some()
        });
        assert!(ok, "row {id} never handled\n{}", self.daemon.log());
        got.unwrap()
    }

    /// The text of the host's note about row `id`, once it is in the session.
    fn note(&self, id: &str) -> Value {
        let mut got: Option<String> = None;
        let ok = wait_until(Duration::from_secs(30), || {
            got = self
                .inbound()
                .query_row(
                    "SELECT content FROM messages_in WHERE id = ?1 AND kind = 'system'",
                    [format!("note-{id}")],
                    |r| r.get(0),
                )
                .optional()
                .unwrap();
            got.is_some()
        });
        assert!(ok, "no note for {id}\n{}", self.daemon.log());
        serde_json::from_str(&got.unwrap()).unwrap()
    }

    fn groups(&self) -> Vec<Value> {
        let out = cli_ok(&self.s.data, &["--json", "groups", "list"]);
        serde_json::from_str::<Value>(&out)
            .unwrap()
            .as_array()
            .unwrap()
            .clone()
    }

    fn group(&self, folder: &str) -> Option<Value> {
        self.groups().into_iter().find(|g| g["folder"] == folder)
    }

    fn refused(&self, id: &str) {
        let (status, error) = self.outcome(id);
        assert_eq!(status, "rejected", "{error:?}");
        let note = self.note(id);
        assert_eq!(note["ok"], false);
        assert_eq!(
            note["text"],
            "create_agent failed: only an admin of this agent may create agents"
        );
        assert_eq!(
            self.groups().len(),
            1,
            "nothing created: {:?}",
            self.groups()
        );
    }
}

fn destinations(data: &Path, agent: &str) -> Vec<(String, String)> {
    let out = cli_ok(data, &["--json", "groups", "show", agent]);
    let v: Value = serde_json::from_str(&out).unwrap();
    v["destinations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["local_name"].as_str().unwrap().to_string(),
                d["target"]["id"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn an_admin_has_an_agent_created_and_messages_it_in_the_same_session() {
    if !require_engine("an_admin_has_an_agent_created_and_messages_it_in_the_same_session") {
        return;
    }
    let f = Fx::start();
    let asked = f.hello("alice", "m1");
    f.create_agent("ca-1", Some(&asked), "Research Helper");
    assert_eq!(f.outcome("ca-1").0, "delivered");

    let child = f.group("research-helper").expect("the child group exists");
    assert_eq!(child["name"], "Research Helper");
    assert_eq!(child["provider"], "mock", "the creator's provider");
    let (boss_id, child_id) = (
        f.group("boss").unwrap()["id"].as_str().unwrap().to_string(),
        child["id"].as_str().unwrap().to_string(),
    );
    assert!(
        destinations(&f.s.data, "boss").contains(&("research-helper".into(), child_id.clone()))
    );
    assert_eq!(
        destinations(&f.s.data, "research-helper"),
        [("parent".to_string(), boss_id.clone())]
    );
    // The running session sees the child without a restart or a new message.
    let projected: Vec<String> = f
        .inbound()
        .prepare("SELECT name FROM destinations")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert!(
        projected.contains(&"research-helper".to_string()),
        "{projected:?}"
    );
    let memory =
        std::fs::read_to_string(f.s.data.join("groups/research-helper/CLAUDE.md")).unwrap();
    assert!(memory.contains("You research things for the boss."));
    let note = f.note("ca-1");
    assert_eq!(note["ok"], true);
    assert_eq!(
        note["text"],
        "Agent \"research-helper\" created. Message it with <message to=\"research-helper\">…</message>."
    );

    // The creator messages its child; the child (the mock's default echo) answers its parent.
    f.write(
        "to-child-1",
        None,
        "chat",
        Some(("agent", &child_id)),
        json!({"op": "send", "text": "ping"}),
    );
    let answered = wait_until(Duration::from_secs(60), || {
        f.inbound()
            .query_row(
                "SELECT COUNT(*) FROM messages_in WHERE channel_type = 'agent' AND platform_id = ?1
                   AND json_extract(content, '$.text') LIKE '%you said \"ping\"%'",
                [&child_id],
                |r| r.get::<_, i64>(0),
            )
            .unwrap()
            > 0
    });
    assert!(answered, "the child never answered\n{}", f.daemon.log());

    // A crash after the creation, before the row was recorded: the row is applied again and
    // finds its child instead of making another.
    let mut f = f;
    f.daemon.kill();
    {
        let c = Connection::open(f.session().join("inbound/inbound.db")).unwrap();
        c.execute("DELETE FROM delivered WHERE message_out_id = 'ca-1'", [])
            .unwrap();
        c.execute("UPDATE delivery_state SET frontier = 0", [])
            .unwrap();
    }
    f.daemon.start_again();
    assert_eq!(f.outcome("ca-1").0, "delivered");
    assert_eq!(f.groups().len(), 2, "{:?}", f.groups());
}

#[test]
fn create_agent_is_refused_unless_the_newest_trigger_is_an_admins_message() {
    if !require_engine("create_agent_is_refused_unless_the_newest_trigger_is_an_admins_message") {
        return;
    }
    let f = Fx::start();
    // A non-admin asked.
    let bob = f.hello("bob", "m1");
    f.create_agent("ca-1", Some(&bob), "Helper");
    f.refused("ca-1");

    // An admin asked, but someone else spoke since.
    let alice = f.hello("alice", "m2");
    f.hello("bob", "m3");
    f.create_agent("ca-2", Some(&alice), "Helper");
    f.refused("ca-2");

    // No such message, or none named.
    f.create_agent("ca-3", Some("made-up"), "Helper");
    f.refused("ca-3");
    f.create_agent("ca-4", None, "Helper");
    f.refused("ca-4");

    // An agent's message (here: the agent's own, through the agent channel).
    let boss_id = f.group("boss").unwrap()["id"].as_str().unwrap().to_string();
    f.write(
        "self-1",
        None,
        "chat",
        Some(("agent", &boss_id)),
        json!({"op": "send", "text": "hello from me"}),
    );
    let mut a2a = None;
    assert!(wait_until(Duration::from_secs(30), || {
        a2a = f
            .inbound()
            .query_row(
                "SELECT id FROM messages_in WHERE channel_type = 'agent' ORDER BY seq DESC LIMIT 1",
                [],
                |r| r.get::<_, String>(0),
            )
            .optional()
            .unwrap();
        a2a.is_some()
    }));
    f.create_agent("ca-5", a2a.as_deref(), "Helper");
    f.refused("ca-5");

    // A task firing.
    f.write(
        "sched-1",
        None,
        "system",
        None,
        json!({"action": "schedule_task", "task_id": "task-1", "prompt": "make an agent", "process_after": "2020-01-01T00:00:00Z"}),
    );
    let mut task = None;
    assert!(
        wait_until(Duration::from_secs(60), || {
            task = f
                .inbound()
                .query_row("SELECT id FROM messages_in WHERE kind = 'task'", [], |r| {
                    r.get::<_, String>(0)
                })
                .optional()
                .unwrap();
            task.is_some()
        }),
        "the task never fired\n{}",
        f.daemon.log()
    );
    f.create_agent("ca-6", task.as_deref(), "Helper");
    f.refused("ca-6");
}
