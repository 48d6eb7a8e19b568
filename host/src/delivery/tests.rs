use super::*;
use std::collections::VecDeque;
use std::sync::Mutex;

use nanoclaw_schema::session::OUTBOUND_DB;
use rusqlite::{Connection, params};

use crate::store::testing::{agent, chat};
use crate::store::wirings::{self, SessionMode, WiringRules};

/// A scripted set of channels: records what was sent; answers from a queue of results.
#[derive(Default)]
struct FakePlatforms {
    sent: Mutex<Vec<(String, OutboundMessage)>>,
    script: Mutex<VecDeque<std::result::Result<(), SendError>>>,
    limits: HashMap<String, PlatformLimits>,
}

impl FakePlatforms {
    fn new() -> Self {
        let mut limits = HashMap::new();
        limits.insert(
            "telegram".to_string(),
            PlatformLimits {
                max_text_length: Some(20),
                capabilities: Capabilities::EDIT | Capabilities::FILES | Capabilities::BUTTONS,
            },
        );
        limits.insert(
            "cli".to_string(),
            PlatformLimits {
                max_text_length: None,
                capabilities: Capabilities::NONE,
            },
        );
        FakePlatforms {
            limits,
            ..Default::default()
        }
    }

    fn texts(&self) -> Vec<String> {
        self.sent
            .lock()
            .unwrap()
            .iter()
            .map(|(_, m)| m.text.to_string())
            .collect()
    }
}

impl Platforms for FakePlatforms {
    fn limits(&self, channel: &ChannelType) -> Option<PlatformLimits> {
        self.limits.get(channel.as_str()).copied()
    }

    async fn send(
        &self,
        channel: &ChannelType,
        message: OutboundMessage,
    ) -> std::result::Result<Option<String>, SendError> {
        if let Some(Err(e)) = self.script.lock().unwrap().pop_front() {
            return Err(e);
        }
        let mut sent = self.sent.lock().unwrap();
        sent.push((channel.to_string(), message));
        Ok(Some(format!("p{}", sent.len())))
    }
}

struct Fx {
    _tmp: tempfile::TempDir,
    db: Arc<Db>,
    sessions: Arc<SessionStore>,
    platforms: Arc<FakePlatforms>,
    delivery: Delivery<FakePlatforms>,
    session: Session,
    seq: std::cell::Cell<i64>,
}

fn fx() -> Fx {
    let tmp = tempfile::tempdir().unwrap();
    let db = Arc::new(Db::open_in_memory().unwrap());
    let sessions = Arc::new(SessionStore::new(tmp.path()));
    let a = agent(&db, "Helper");
    let c = chat(&db, "telegram:1", Some("Alice"), false);
    db.write(|t| wirings::create(t, &c.id, &a.id, WiringRules::default()))
        .unwrap();
    let (session, _) = db
        .write(|t| sessions.resolve(t, &a.id, &c, None, SessionMode::Shared))
        .unwrap();
    let platforms = Arc::new(FakePlatforms::new());
    let delivery = Delivery::new(
        db.clone(),
        sessions.clone(),
        platforms.clone(),
        TimeZone::UTC,
    );
    Fx {
        _tmp: tmp,
        db,
        sessions,
        platforms,
        delivery,
        session,
        seq: std::cell::Cell::new(1),
    }
}

impl Fx {
    /// Writes a row into outbound.db as the container would.
    fn write_out(
        &self,
        session: &Session,
        kind: &str,
        channel: &str,
        platform: &str,
        content: serde_json::Value,
    ) -> String {
        let path = self
            .sessions
            .session_dir(session)
            .unwrap()
            .join(OUTBOUND_DB);
        let conn = Connection::open(path).unwrap();
        let seq = self.seq.get();
        self.seq.set(seq + 2);
        let id = format!("out-{seq}");
        conn.execute(
            "INSERT INTO messages_out (id, seq, timestamp, kind, channel_type, platform_id, content)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![id, seq, time::now(), kind, channel, platform, content.to_string()],
        )
        .unwrap();
        id
    }

    fn say(&self, channel: &str, platform: &str, text: &str) -> String {
        self.write_out(
            &self.session,
            "chat",
            channel,
            platform,
            serde_json::json!({"op": "send", "text": text}),
        )
    }

    fn status(&self, session: &Session, id: &str) -> Option<String> {
        self.sessions
            .with_inbound(session, |c| inbound::delivery_status(c, id))
            .unwrap()
    }

    async fn drain(&self) -> Drained {
        self.delivery.drain(&self.session).await.unwrap()
    }
}

#[tokio::test]
async fn reply_to_the_origin_chat_is_delivered_and_split() {
    let f = fx();
    let id = f.say("telegram", "1", "first paragraph here\n\nsecond paragraph");
    let d = f.drain().await;
    assert_eq!(d.delivered, 1);
    assert_eq!(
        f.platforms.texts(),
        ["first paragraph here", "second paragraph"]
    );
    assert_eq!(f.status(&f.session, &id).as_deref(), Some("delivered"));
    let pid = f
        .sessions
        .with_inbound(&f.session, |c| {
            Ok(c.query_row(
                "SELECT platform_message_id FROM delivered WHERE message_out_id = ?1",
                [&id],
                |r| r.get::<_, Option<String>>(0),
            )?)
        })
        .unwrap();
    assert_eq!(pid.as_deref(), Some("p1"), "the first part's id is kept");
    // Draining again sends nothing twice.
    assert_eq!(f.drain().await.delivered, 0);
    assert_eq!(f.platforms.texts().len(), 2);
}

#[tokio::test]
async fn a_chat_without_a_destination_is_refused_and_never_marked_delivered() {
    let f = fx();
    chat(&f.db, "telegram:999", Some("Stranger"), false);
    let id = f.say("telegram", "999", "psst");
    let d = f.drain().await;
    assert_eq!(d.rejected, 1);
    assert!(f.platforms.texts().is_empty());
    assert_eq!(f.status(&f.session, &id).as_deref(), Some("rejected"));
    let unknown = f.say("telegram", "12345", "hello?");
    f.drain().await;
    assert_eq!(f.status(&f.session, &unknown).as_deref(), Some("rejected"));
}

#[tokio::test]
async fn a_chat_with_a_destination_is_allowed() {
    let f = fx();
    let team = chat(&f.db, "telegram:-5", Some("Team"), true);
    f.db.write(|c| {
        destinations::add(
            c,
            &f.session.agent_group_id,
            None,
            Target::Channel(team.id.clone()),
        )
    })
    .unwrap();
    let id = f.say("telegram", "-5", "hi team");
    assert_eq!(f.drain().await.delivered, 1);
    assert_eq!(f.status(&f.session, &id).as_deref(), Some("delivered"));
}

#[tokio::test]
async fn transient_failures_are_retried_and_permanent_ones_recorded() {
    let f = fx();
    f.platforms
        .script
        .lock()
        .unwrap()
        .push_back(Err(SendError::Transient {
            message: "network down".into(),
            retry_after: Some(Duration::ZERO),
        }));
    let id = f.say("telegram", "1", "retry me");
    let first = f.drain().await;
    assert_eq!(first.delivered, 0);
    assert!(first.again_at.is_some());
    assert_eq!(f.status(&f.session, &id), None, "not final yet");
    assert_eq!(f.drain().await.delivered, 1);

    f.platforms
        .script
        .lock()
        .unwrap()
        .push_back(Err(SendError::Permanent("chat not found".into())));
    let bad = f.say("telegram", "1", "doomed");
    assert_eq!(f.drain().await.failed, 1);
    assert_eq!(f.status(&f.session, &bad).as_deref(), Some("failed"));
}

#[tokio::test]
async fn retries_give_up_after_max_attempts() {
    let f = fx();
    for _ in 0..MAX_ATTEMPTS {
        f.platforms
            .script
            .lock()
            .unwrap()
            .push_back(Err(SendError::Transient {
                message: "still down".into(),
                retry_after: Some(Duration::ZERO),
            }));
    }
    let id = f.say("telegram", "1", "never");
    for _ in 0..MAX_ATTEMPTS {
        f.drain().await;
    }
    assert_eq!(f.status(&f.session, &id).as_deref(), Some("failed"));
}

#[tokio::test]
async fn a_retry_resumes_after_the_parts_already_sent() {
    let f = fx();
    let id = f.say("telegram", "1", "part one is here\n\npart two is here");
    f.platforms.script.lock().unwrap().extend([
        Ok(()),
        Err(SendError::Transient {
            message: "flaky".into(),
            retry_after: Some(Duration::ZERO),
        }),
    ]);
    f.drain().await;
    f.drain().await;
    assert_eq!(
        f.platforms.texts(),
        ["part one is here", "part two is here"]
    );
    assert_eq!(f.status(&f.session, &id).as_deref(), Some("delivered"));
}

#[tokio::test]
async fn capabilities_are_respected() {
    let f = fx();
    let cli = chat(&f.db, "cli:root", None, false);
    f.db.write(|c| {
        destinations::add(
            c,
            &f.session.agent_group_id,
            None,
            Target::Channel(cli.id.clone()),
        )
    })
    .unwrap();
    let edit = f.write_out(
        &f.session,
        "chat",
        "cli",
        "root",
        serde_json::json!({"op": "edit", "message_id": "5", "text": "x"}),
    );
    f.drain().await;
    assert_eq!(
        f.status(&f.session, &edit).as_deref(),
        Some("failed"),
        "cli cannot edit: fail fast"
    );
    let question = f.write_out(
        &f.session,
        "chat",
        "cli",
        "root",
        serde_json::json!({"op": "question", "question_id": "q1", "title": "Pick", "question": "Which?", "options": ["A", "B"]}),
    );
    f.drain().await;
    assert_eq!(
        f.status(&f.session, &question).as_deref(),
        Some("delivered")
    );
    assert!(
        f.platforms
            .texts()
            .last()
            .unwrap()
            .ends_with("Options: A, B"),
        "no buttons: options as text"
    );
}

#[tokio::test]
async fn outbox_files_travel_and_symlinks_do_not() {
    let f = fx();
    let dir = f.sessions.session_dir(&f.session).unwrap().join(OUTBOX_DIR);
    let id = format!("out-{}", f.seq.get());
    std::fs::create_dir_all(dir.join(&id)).unwrap();
    std::fs::write(dir.join(&id).join("report.txt"), b"numbers").unwrap();
    std::os::unix::fs::symlink("/etc/passwd", dir.join(&id).join("passwd")).unwrap();
    f.write_out(
        &f.session,
        "chat",
        "telegram",
        "1",
        serde_json::json!({"op": "send", "text": "see", "files": ["report.txt", "passwd", "../x"]}),
    );
    f.drain().await;
    let sent = f.platforms.sent.lock().unwrap();
    let files: Vec<_> = sent[0].1.files.iter().map(|f| f.name.to_string()).collect();
    assert_eq!(files, ["report.txt"]);
    assert_eq!(sent[0].1.files[0].data.as_slice(), b"numbers");
    assert!(
        !dir.join(&id).exists(),
        "the outbox is cleared after sending"
    );
}

#[tokio::test]
async fn messages_to_agents_need_a_destination_and_land_in_their_session() {
    let f = fx();
    let buddy = agent(&f.db, "Buddy");
    let refused = f.write_out(
        &f.session,
        "chat",
        "agent",
        buddy.id.as_str(),
        serde_json::json!({"op": "send", "text": "hey"}),
    );
    let d = f.drain().await;
    assert_eq!(d.rejected, 1);
    assert_eq!(f.status(&f.session, &refused).as_deref(), Some("rejected"));

    f.db.write(|c| {
        destinations::add(
            c,
            &f.session.agent_group_id,
            None,
            Target::Agent(buddy.id.clone()),
        )
    })
    .unwrap();
    f.write_out(
        &f.session,
        "chat",
        "agent",
        buddy.id.as_str(),
        serde_json::json!({"op": "send", "text": "hey buddy"}),
    );
    let d = f.drain().await;
    assert_eq!(d.delivered, 1);
    assert_eq!(d.wake.len(), 1);
    let target = &d.wake[0];
    assert_eq!(target.agent_group_id, buddy.id);
    let (content, source): (String, String) = f
        .sessions
        .with_inbound(target, |c| {
            Ok(c.query_row(
                "SELECT content, source_session_id FROM messages_in WHERE channel_type = 'agent'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?)
        })
        .unwrap();
    let content: ChatIn = serde_json::from_str(&content).unwrap();
    assert_eq!(content.text, "hey buddy");
    assert_eq!(content.sender_name.as_deref(), Some("Helper"));
    assert_eq!(source, f.session.id.as_str());
}

#[tokio::test]
async fn scheduling_actions_are_applied() {
    let f = fx();
    let id = f.write_out(
        &f.session,
        "system",
        "",
        "",
        serde_json::json!({"action": "schedule_task", "task_id": "t1", "prompt": "ping", "process_after": "2030-01-01T00:00:00Z"}),
    );
    f.drain().await;
    assert_eq!(f.status(&f.session, &id).as_deref(), Some("delivered"));
    let task =
        f.db.read(|c| crate::scheduling::get(c, &crate::ids::TaskId::parse("t1")?))
            .unwrap()
            .unwrap();
    assert_eq!(task.session_id, f.session.id);
    let bad = f.write_out(
        &f.session,
        "system",
        "",
        "",
        serde_json::json!({"action": "launch_missiles"}),
    );
    f.drain().await;
    assert_eq!(f.status(&f.session, &bad).as_deref(), Some("failed"));
}

#[tokio::test]
async fn container_acks_mark_inbound_messages_completed() {
    let f = fx();
    let row = NewMessage {
        channel_type: Some("telegram"),
        platform_id: Some("1"),
        ..NewMessage::new(
            "m1",
            InKind::Chat,
            "2026-01-01T00:00:00.000Z",
            "{\"text\":\"hi\"}",
        )
    };
    f.sessions
        .with_inbound(&f.session, |c| inbound::insert_message(c, &row))
        .unwrap();
    let path = f
        .sessions
        .session_dir(&f.session)
        .unwrap()
        .join(OUTBOUND_DB);
    Connection::open(path)
        .unwrap()
        .execute("INSERT INTO processing_ack (message_id, status, status_changed) VALUES ('m1', 'completed', 'now')", [])
        .unwrap();
    f.drain().await;
    let status = f
        .sessions
        .with_inbound(&f.session, |c| inbound::message_status(c, "m1"))
        .unwrap();
    assert_eq!(status.as_deref(), Some("completed"));
}
