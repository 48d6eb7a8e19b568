use super::*;
use nanoclaw_schema::session::content::SystemIn;

use nanoclaw_schema::session::content::TaskIn;

use crate::sessions::inbound;
use crate::store::roles::{self, Role, Scope};
use crate::store::testing::{agent, chat, user};
use crate::store::wirings::{self, SessionMode, WiringRules};

const ADMIN: &str = "telegram:10";
const OTHER: &str = "telegram:11";

struct Fx {
    _tmp: tempfile::TempDir,
    paths: Paths,
    db: Db,
    sessions: SessionStore,
    session: Session,
    boss: AgentGroupId,
    row: std::cell::Cell<u32>,
}

fn fx() -> Fx {
    let tmp = tempfile::tempdir().unwrap();
    let paths = Paths::new(tmp.path());
    let db = Db::open_in_memory().unwrap();
    let sessions = SessionStore::new(paths.sessions());
    let boss = agent(&db, "Boss");
    db.write(|c| {
        agent_groups::set_provider(c, &boss.id, Some(agent_groups::AgentProvider::Mock))?;
        agent_groups::set_container_config(
            c,
            &boss.id,
            &json!({"model": "m1", "mounts": [{"host_path": "/srv/x"}]}),
        )
    })
    .unwrap();
    let c = chat(&db, "telegram:1", Some("Room"), true);
    db.write(|t| wirings::create(t, &c.id, &boss.id, WiringRules::default()))
        .unwrap();
    let (session, _) = db
        .write(|t| sessions.resolve(t, &boss.id, &c, None, SessionMode::Shared))
        .unwrap();
    let admin = user(&db, ADMIN).id;
    user(&db, OTHER);
    db.write(|c| roles::grant(c, &admin, Role::Admin, &Scope::Group(boss.id.clone()), None))
        .unwrap();
    Fx {
        _tmp: tmp,
        paths,
        db,
        sessions,
        session,
        boss: boss.id,
        row: std::cell::Cell::new(0),
    }
}

impl Fx {
    /// A message into the session's inbound.db, as the router writes it.
    fn said(&self, id: &str, sender: &str) {
        let content = serde_json::to_string(&ChatIn {
            text: "please make a helper".into(),
            sender_id: Some(sender.into()),
            ..Default::default()
        })
        .unwrap();
        self.insert(Queued {
            channel_type: Some("telegram".into()),
            platform_id: Some("1".into()),
            ..Queued::new(id, InKind::Chat, time::now(), content)
        });
    }

    fn insert(&self, m: Queued) {
        self.sessions
            .with_inbound(&self.session, |c| inbound::insert_message(c, &m))
            .unwrap();
    }

    fn create_as(&self, key: &str, reply_to: Option<&str>, name: &str) -> Applied {
        apply(
            &self.db,
            &self.sessions,
            &self.paths,
            &self.session,
            key,
            reply_to,
            name,
            Some("You help the boss."),
        )
        .unwrap()
    }

    /// A create_agent row with a fresh key, answering `reply_to`.
    fn create(&self, reply_to: &str, name: &str) -> Applied {
        self.row.set(self.row.get() + 1);
        self.create_as(&format!("out-{}", self.row.get()), Some(reply_to), name)
    }

    fn groups(&self) -> usize {
        self.db.read(agent_groups::list).unwrap().len()
    }

    fn notes(&self) -> Vec<SystemIn> {
        self.db
            .read(|c| queue::peek(c, &self.session.id, 100))
            .unwrap()
            .into_iter()
            .filter(|(_, q)| q.kind == InKind::System)
            .map(|(_, q)| serde_json::from_str(&q.content).unwrap())
            .collect()
    }

    fn projected(&self) -> Vec<String> {
        self.sessions
            .with_inbound(&self.session, |c| inbound::destination_names(c))
            .unwrap()
    }

    fn refused_not_admin(&self, applied: Applied) {
        assert!(
            matches!(applied, Applied::Refused(Refusal::NotAdmin { .. })),
            "{applied:?}"
        );
        assert_eq!(self.groups(), 1, "nothing created");
        let note = self.notes().pop().expect("a note");
        assert_eq!(note.ok, Some(false));
        assert_eq!(note.text, format!("create_agent failed: {NOT_ADMIN}"));
    }
}

#[test]
fn names_are_normalized_bounded_and_never_global() {
    let n = child_name("  My Helper! ").unwrap();
    assert_eq!(
        (n.display.as_str(), n.local.as_str(), n.folder_base.as_str()),
        ("My Helper!", "my-helper", "my-helper")
    );
    assert_eq!(child_name("Global").unwrap().folder_base, "agent-global");
    assert_eq!(child_name("../etc").unwrap().folder_base, "etc");
    let long = child_name(&"ab ".repeat(21)).unwrap();
    assert!(long.local.len() <= 56 && !long.local.ends_with('-'));
    for bad in ["", "   ", "!!!", "a\u{7}b", &"x".repeat(65)] {
        assert!(child_name(bad).is_err(), "{bad:?}");
    }
    assert!(check_instructions(None).is_ok());
    assert!(check_instructions(Some(&"x".repeat(MAX_INSTRUCTIONS_CHARS))).is_ok());
    assert!(check_instructions(Some(&"x".repeat(MAX_INSTRUCTIONS_CHARS + 1))).is_err());
    assert!(check_instructions(Some("a\0b")).is_err());
}

#[test]
fn an_admins_request_creates_the_child_wired_both_ways() {
    let f = fx();
    f.said("m1", ADMIN);
    let Applied::Created {
        child,
        local_name,
        folder,
    } = f.create("m1", "Research Helper")
    else {
        panic!("not created")
    };
    assert_eq!(
        (local_name.as_str(), folder.as_str()),
        ("research-helper", "research-helper")
    );
    let group =
        f.db.read(|c| agent_groups::get(c, &child))
            .unwrap()
            .unwrap();
    assert_eq!(group.name, "Research Helper");
    assert_eq!(group.provider, Some(agent_groups::AgentProvider::Mock));
    assert_eq!(group.container_config["model"], "m1");
    assert!(
        group.container_config.get("mounts").is_none(),
        "mounts are not inherited"
    );
    assert_eq!(
        group.container_config[CREATED_BY_KEY]["agent"],
        f.boss.as_str()
    );
    let (down, up) =
        f.db.read(|c| {
            Ok((
                destinations::list(c, &f.boss)?,
                destinations::list(c, &child)?,
            ))
        })
        .unwrap();
    assert_eq!(down[0].local_name, "research-helper");
    assert_eq!(down[0].target, Target::Agent(child.clone()));
    assert_eq!(up[0].local_name, PARENT_NAME);
    assert_eq!(up[0].target, Target::Agent(f.boss.clone()));
    assert!(f.projected().contains(&"research-helper".to_string()));
    let memory = std::fs::read_to_string(f.paths.groups().join(&folder).join("CLAUDE.md")).unwrap();
    assert!(memory.contains("You help the boss."));
    let note = f.notes().pop().unwrap();
    assert_eq!(note.ok, Some(true));
    assert!(
        note.text.contains("<message to=\"research-helper\">"),
        "{}",
        note.text
    );
}

#[test]
fn a_retried_row_does_not_create_twice() {
    let f = fx();
    f.said("m1", ADMIN);
    let first = f.create_as("out-1", Some("m1"), "Helper");
    // Even if the trigger moved on since, the row already did its work.
    f.said("m2", OTHER);
    let again = f.create_as("out-1", Some("m1"), "Helper");
    assert_eq!(first, again);
    assert_eq!(f.groups(), 2);
    assert_eq!(f.notes().len(), 1, "one note per row");
}

#[test]
fn only_the_newest_trigger_from_an_admin_counts() {
    let f = fx();
    f.said("m1", OTHER);
    f.refused_not_admin(f.create("m1", "Helper"));

    let f = fx();
    f.said("m1", ADMIN);
    f.said("m2", OTHER);
    f.refused_not_admin(f.create("m1", "Helper"));

    let f = fx();
    f.said("m1", ADMIN);
    f.refused_not_admin(f.create("nope", "Helper"));
    f.refused_not_admin(f.create_as("out-x", None, "Helper"));
}

#[test]
fn agents_tasks_and_the_system_are_never_admins() {
    // Another agent's message, even one claiming an admin as its sender.
    let f = fx();
    let content = serde_json::to_string(&ChatIn {
        text: "make one".into(),
        sender_id: Some(ADMIN.into()),
        ..Default::default()
    })
    .unwrap();
    f.insert(Queued {
        channel_type: Some(AGENT_CHANNEL.into()),
        platform_id: Some("ag-other".into()),
        ..Queued::new("a2a-1", InKind::Chat, time::now(), content)
    });
    f.refused_not_admin(f.create("a2a-1", "Helper"));

    // A task firing.
    let f = fx();
    f.said("m1", ADMIN);
    let task = serde_json::to_string(&TaskIn {
        task_id: "task-1".into(),
        prompt: "make an agent".into(),
        script: None,
    })
    .unwrap();
    f.insert(Queued::new("task-1-run", InKind::Task, time::now(), task));
    f.refused_not_admin(f.create("task-1-run", "Helper"));
    f.refused_not_admin(f.create("m1", "Helper"));

    // The host's welcome speaks as the system.
    let f = fx();
    f.said("w1", "system");
    f.refused_not_admin(f.create("w1", "Helper"));
}

#[test]
fn host_notes_do_not_move_the_trigger() {
    let f = fx();
    f.said("m1", ADMIN);
    f.insert(Queued::new(
        "note-x",
        InKind::System,
        time::now(),
        r#"{"text":"task scheduled"}"#,
    ));
    assert!(matches!(f.create("m1", "Helper"), Applied::Created { .. }));
}

#[test]
fn collisions_folders_and_the_daily_limit() {
    let f = fx();
    f.said("m1", ADMIN);
    assert!(matches!(f.create("m1", "Helper"), Applied::Created { .. }));
    // The creator already has a destination by that name.
    let r = f.create("m1", "helper");
    assert!(
        matches!(&r, Applied::Refused(Refusal::Invalid(why)) if why.contains("already have a destination")),
        "{r:?}"
    );
    // Another agent's folder, or one left on disk, is never reused.
    agent(&f.db, "Scout");
    std::fs::create_dir_all(f.paths.groups().join("old")).unwrap();
    let folder = |a: Applied| match a {
        Applied::Created { folder, .. } => folder,
        other => panic!("{other:?}"),
    };
    assert_eq!(folder(f.create("m1", "Scout")), "scout-2");
    assert_eq!(folder(f.create("m1", "Old")), "old-2");
    assert_eq!(folder(f.create("m1", "Global")), "agent-global");
    for i in 4..MAX_AGENTS_PER_DAY {
        assert!(matches!(
            f.create("m1", &format!("h{i}")),
            Applied::Created { .. }
        ));
    }
    let before = f.groups();
    let r = f.create("m1", "one too many");
    assert!(
        matches!(&r, Applied::Refused(Refusal::Invalid(why)) if why.contains("last 24 hours")),
        "{r:?}"
    );
    assert_eq!(f.groups(), before);
    // Bad input is refused with the reason, after the privilege check.
    let r = f.create("m1", "!!!");
    assert!(matches!(&r, Applied::Refused(Refusal::Invalid(_))), "{r:?}");
}
