use super::*;
use std::collections::VecDeque;
use std::sync::Mutex;

use nanoclaw_plugin_api::kit::prepare::prepare_with;
use nanoclaw_plugin_api::kit::{LengthUnit, Markup, TextLimit};
use nanoclaw_schema::session::content::ChatIn;
use nanoclaw_schema::session::{DeliveryStatus, InKind, OUTBOX_DIR};
use nanoclaw_schema::time;
use rusqlite::{Connection, params};

use crate::sessions::queue::Queued;
use crate::sessions::writer;
use crate::store::destinations::{self, Target};
use crate::store::testing::{agent, chat};
use crate::store::wirings::{self, SessionMode, WiringRules};

/// A scripted set of channels: records what was sent; answers from a queue of results.
/// Prepares the way the kit's default does for plain text, split at `max_chars`.
#[derive(Default)]
struct FakePlatforms {
    sent: Mutex<Vec<(String, OutboundMessage)>>,
    script: Mutex<VecDeque<std::result::Result<(), SendError>>>,
    channels: HashMap<String, FakeChannel>,
}

#[derive(Clone, Copy)]
struct FakeChannel {
    capabilities: Capabilities,
    /// 0 = no limit.
    max_chars: usize,
}

impl FakePlatforms {
    fn new() -> Self {
        let mut channels = HashMap::new();
        channels.insert(
            "telegram".to_string(),
            FakeChannel {
                capabilities: Capabilities::EDIT | Capabilities::FILES | Capabilities::BUTTONS,
                max_chars: 20,
            },
        );
        channels.insert(
            "cli".to_string(),
            FakeChannel {
                capabilities: Capabilities::NONE,
                max_chars: 0,
            },
        );
        FakePlatforms {
            channels,
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
    fn capabilities(&self, channel: &ChannelName) -> Option<Capabilities> {
        self.channels.get(channel.as_str()).map(|c| c.capabilities)
    }

    async fn prepare(
        &self,
        channel: &ChannelName,
        message: OutboundMessage,
    ) -> std::result::Result<Vec<OutboundMessage>, SendError> {
        let max = self
            .channels
            .get(channel.as_str())
            .map_or(0, |c| c.max_chars);
        let limit = TextLimit::new(max, LengthUnit::Chars);
        prepare_with(message, Markup::Verbatim, limit)
            .map_err(|e| SendError::Permanent(e.to_string()))
    }

    async fn send(
        &self,
        channel: &ChannelName,
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
    sessions.prepare(&session).unwrap();
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
        let seq = self.seq.get();
        self.seq.set(seq + 2);
        self.write_row(
            session,
            &format!("out-{seq}"),
            seq,
            kind,
            channel,
            platform,
            &content.to_string(),
        )
    }

    /// Writes any row, as a hostile container could.
    #[allow(clippy::too_many_arguments)]
    fn write_row(
        &self,
        session: &Session,
        id: &str,
        seq: i64,
        kind: &str,
        channel: &str,
        platform: &str,
        content: &str,
    ) -> String {
        let path = self.sessions.session_dir(session).unwrap().outbound_db();
        let conn = Connection::open(path).unwrap();
        conn.execute(
            "INSERT INTO messages_out (id, seq, timestamp, kind, channel_type, platform_id, content)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![id, seq, time::now(), kind, channel, platform, content],
        )
        .unwrap();
        id.to_string()
    }

    fn outbox(&self) -> std::path::PathBuf {
        self.sessions
            .session_dir(&self.session)
            .unwrap()
            .workspace_dir()
            .join(OUTBOX_DIR)
    }

    fn error_of(&self, id: &str) -> Option<String> {
        self.sessions
            .with_inbound(&self.session, |c| {
                Ok(c.query_row(
                    "SELECT error FROM delivered WHERE message_out_id = ?1",
                    [id],
                    |r| r.get(0),
                )?)
            })
            .unwrap()
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
            .map(|s| s.as_str().to_string())
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
    // A message the session delivered, so only the capability stands in the way.
    f.sessions
        .with_inbound(&f.session, |c| {
            inbound::record_delivery(c, "earlier", Some("5"), DeliveryStatus::Delivered, None)
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
async fn edits_and_reactions_only_touch_this_conversations_messages() {
    let f = fx();
    // Nothing known yet: any id is refused, whoever's it may be.
    let edit = |id: &str| {
        f.write_out(
            &f.session,
            "chat",
            "telegram",
            "1",
            serde_json::json!({"op": "edit", "message_id": id, "text": "changed"}),
        )
    };
    let stranger = edit("777");
    f.drain().await;
    assert_eq!(f.status(&f.session, &stranger).as_deref(), Some("rejected"));
    assert!(
        f.error_of(&stranger)
            .unwrap()
            .contains("not one of this conversation")
    );
    assert!(f.platforms.texts().is_empty());

    // The host's own delivery of a reply gives its platform id; that one may be edited.
    let reply = f.say("telegram", "1", "draft");
    f.drain().await;
    let platform_id: String = f
        .sessions
        .with_inbound(&f.session, |c| {
            Ok(c.query_row(
                "SELECT platform_message_id FROM delivered WHERE message_out_id = ?1",
                [&reply],
                |r| r.get(0),
            )?)
        })
        .unwrap();
    let own = edit(&platform_id);
    f.drain().await;
    assert_eq!(f.status(&f.session, &own).as_deref(), Some("delivered"));

    // An incoming message of that chat may be reacted to; the same id claimed for another
    // chat may not.
    f.sessions
        .with_inbound(&f.session, |c| {
            c.execute(
                "INSERT INTO messages_in (id, seq, kind, timestamp, channel_type, platform_id, platform_message_id, content)
                 VALUES ('in-9', 1000, 'chat', ?1, 'telegram', '1', 'tg-42', '{\"text\":\"hi\"}')",
                [time::now()],
            )?;
            Ok(())
        })
        .unwrap();
    let react = |chat: &str| {
        f.write_out(
            &f.session,
            "chat",
            "telegram",
            chat,
            serde_json::json!({"op": "react", "message_id": "tg-42", "emoji": "thumbs_up"}),
        )
    };
    let here = react("1");
    f.drain().await;
    assert_ne!(f.status(&f.session, &here).as_deref(), Some("rejected"));
    let other = chat(&f.db, "telegram:2", None, false);
    f.db.write(|c| {
        destinations::add(
            c,
            &f.session.agent_group_id,
            None,
            Target::Channel(other.id.clone()),
        )
    })
    .unwrap();
    let elsewhere = react("2");
    f.drain().await;
    assert_eq!(
        f.status(&f.session, &elsewhere).as_deref(),
        Some("rejected")
    );
    assert!(
        f.error_of(&elsewhere)
            .unwrap()
            .contains("not one of this conversation")
    );
}

#[tokio::test]
async fn outbox_files_travel_and_unsafe_ones_fail_the_message() {
    let f = fx();
    let dir = f.outbox();
    let id = format!("out-{}", f.seq.get());
    std::fs::create_dir_all(dir.join(&id)).unwrap();
    std::fs::write(dir.join(&id).join("report.txt"), b"numbers").unwrap();
    f.write_out(
        &f.session,
        "chat",
        "telegram",
        "1",
        serde_json::json!({"op": "send", "text": "see", "files": ["report.txt"]}),
    );
    f.drain().await;
    {
        let sent = f.platforms.sent.lock().unwrap();
        let files: Vec<_> = sent[0].1.files.iter().map(|f| f.name.to_string()).collect();
        assert_eq!(files, ["report.txt"]);
        assert_eq!(sent[0].1.files[0].data.as_slice(), b"numbers");
    }
    assert!(
        !dir.join(&id).exists(),
        "the outbox is cleared after sending"
    );

    // A link to a host file: the message fails with the reason, nothing is read.
    let id = format!("out-{}", f.seq.get());
    std::fs::create_dir_all(dir.join(&id)).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", dir.join(&id).join("passwd")).unwrap();
    f.write_out(
        &f.session,
        "chat",
        "telegram",
        "1",
        serde_json::json!({"op": "send", "text": "see", "files": ["passwd"]}),
    );
    // A traversing name: refused at the edge.
    let bad_name = f.write_out(
        &f.session,
        "chat",
        "telegram",
        "1",
        serde_json::json!({"op": "send", "text": "see", "files": ["../x"]}),
    );
    let d = f.drain().await;
    assert_eq!(d.failed, 2);
    assert!(
        f.error_of(&id).unwrap().contains("not a plain file"),
        "{:?}",
        f.error_of(&id)
    );
    assert!(f.error_of(&bad_name).unwrap().contains("unsafe file name"));
    assert_eq!(f.platforms.sent.lock().unwrap().len(), 1);
}

/// Finding 1: an id that walks out of the outbox (or is absolute) never becomes a path.
#[tokio::test]
async fn traversal_and_absolute_ids_fail_without_reading_anything() {
    let f = fx();
    let secret = f._tmp.path().join(".env");
    std::fs::write(&secret, b"TOKEN=hunter2").unwrap();
    let content = serde_json::json!({"op": "send", "text": "x", "files": [".env"]}).to_string();
    let mut keys = Vec::new();
    for (n, id) in ["../../../..", "/", secret.to_str().unwrap(), "..", "."]
        .iter()
        .enumerate()
    {
        let seq = 101 + 2 * n as i64;
        f.write_row(&f.session, id, seq, "chat", "telegram", "1", &content);
        keys.push(format!("#{seq}"));
    }
    let d = f.drain().await;
    assert_eq!(d.failed, keys.len());
    for k in &keys {
        assert!(
            f.error_of(k).unwrap().contains("unusable message id"),
            "{k}"
        );
    }
    assert!(f.platforms.sent.lock().unwrap().is_empty());
    assert_eq!(std::fs::read(&secret).unwrap(), b"TOKEN=hunter2");
}

/// Finding 5: oversized rows fail with the reason; others are not held up; rows are read a
/// page at a time.
#[tokio::test]
async fn oversized_rows_fail_and_many_rows_are_paged() {
    let f = fx();
    let long = f.say(
        "telegram",
        "1",
        &"word ".repeat(nanoclaw_schema::session::limits::MAX_TEXT_CHARS),
    );
    let names: Vec<String> = (0..20).map(|i| format!("f{i}")).collect();
    let many = f.write_out(
        &f.session,
        "chat",
        "telegram",
        "1",
        serde_json::json!({"op": "send", "text": "x", "files": names}),
    );
    // Too many parts for the platform (more than `MAX_PARTS` at the kit's smallest split).
    let parts = f.say("telegram", "1", &"abcdefghij ".repeat(200));
    let fine = f.say("telegram", "1", "ok");
    f.drain().await;
    assert!(f.error_of(&long).unwrap().contains("characters"));
    assert!(f.error_of(&many).unwrap().contains("files"));
    assert!(f.error_of(&parts).unwrap().contains("messages on telegram"));
    assert_eq!(f.status(&f.session, &fine).as_deref(), Some("delivered"));

    for i in 0..(PAGE + 10) {
        f.say("telegram", "1", &format!("m{i}"));
    }
    let before = f.platforms.texts().len();
    let first = f.drain().await;
    assert_eq!(
        f.platforms.texts().len() - before,
        PAGE,
        "one page per pass"
    );
    assert!(first.again_at.is_some(), "the rest follows at once");
    f.drain().await;
    assert_eq!(f.platforms.texts().len() - before, PAGE + 10);
}

/// Finding 7: progress of a split message survives a restart (a new Delivery, as after
/// kill -9): sent parts are not sent again; a part caught mid-call is sent once more with
/// the same idempotency key.
#[tokio::test]
async fn part_progress_survives_a_restart() {
    let f = fx();
    let id = f.say(
        "telegram",
        "1",
        "part one is here\n\npart two is here\n\npart three here",
    );
    f.platforms.script.lock().unwrap().extend([
        Ok(()),
        Err(SendError::Transient {
            message: "flaky".into(),
            retry_after: Some(Duration::ZERO),
        }),
    ]);
    f.drain().await;
    assert_eq!(f.platforms.texts(), ["part one is here"]);
    // The host dies; a new one starts with nothing in memory.
    let fresh = Delivery::new(
        f.db.clone(),
        f.sessions.clone(),
        f.platforms.clone(),
        TimeZone::UTC,
    );
    fresh.drain(&f.session).await.unwrap();
    assert_eq!(
        f.platforms.texts(),
        ["part one is here", "part two is here", "part three here"]
    );
    assert_eq!(f.status(&f.session, &id).as_deref(), Some("delivered"));

    // A part recorded as `sending` (the host died during the call) goes again, same key.
    let id = f.say("telegram", "1", "only part");
    f.sessions
        .with_inbound(&f.session, |c| inbound::part_sending(c, &id, 0))
        .unwrap();
    let fresh = Delivery::new(
        f.db.clone(),
        f.sessions.clone(),
        f.platforms.clone(),
        TimeZone::UTC,
    );
    fresh.drain(&f.session).await.unwrap();
    let sent = f.platforms.sent.lock().unwrap();
    let last = &sent.last().unwrap().1;
    assert_eq!(last.text.as_str(), "only part");
    let key: serde_json::Value = serde_json::from_str(last.extra_json.as_str()).unwrap();
    assert_eq!(key["idempotency_key"], format!("{}/{id}/0", f.session.id));
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
    writer::flush(&f.db, &f.sessions, target).unwrap();
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

/// Finding 7: a message to an agent re-sent after a crash (before its outcome was recorded)
/// keeps its id, so the target gets it once. Finding 6: the reply goes back to the session
/// the host's own ledger names, whatever the answering agent writes.
#[tokio::test]
async fn agent_messages_have_stable_ids_and_replies_find_their_way_back() {
    let f = fx();
    let buddy = agent(&f.db, "Buddy");
    for (from, to) in [
        (&f.session.agent_group_id, &buddy.id),
        (&buddy.id, &f.session.agent_group_id),
    ] {
        f.db.write(|c| destinations::add(c, from, None, Target::Agent(to.clone())))
            .unwrap();
    }
    let id = f.write_out(
        &f.session,
        "chat",
        "agent",
        buddy.id.as_str(),
        serde_json::json!({"op": "send", "text": "question"}),
    );
    let d = f.drain().await;
    let target = d.wake[0].clone();
    // The outcome record is lost (the host died right after queueing): it goes again.
    f.sessions
        .with_inbound(&f.session, |c| {
            c.execute("DELETE FROM delivered WHERE message_out_id = ?1", [&id])?;
            c.execute("DELETE FROM delivery_state", [])?;
            Ok(())
        })
        .unwrap();
    let fresh = Delivery::new(
        f.db.clone(),
        f.sessions.clone(),
        f.platforms.clone(),
        TimeZone::UTC,
    );
    fresh.drain(&f.session).await.unwrap();
    writer::flush(&f.db, &f.sessions, &target).unwrap();
    let n: i64 = f
        .sessions
        .with_inbound(&target, |c| {
            Ok(c.query_row(
                "SELECT COUNT(*) FROM messages_in WHERE channel_type = 'agent'",
                [],
                |r| r.get(0),
            )?)
        })
        .unwrap();
    assert_eq!(n, 1, "the target got the message once");

    // Buddy answers; the answer lands in the asking session, not a new one.
    f.sessions.prepare(&target).unwrap();
    let answer = f.write_row(
        &target,
        "answer-1",
        1,
        "chat",
        "agent",
        f.session.agent_group_id.as_str(),
        &serde_json::json!({"op": "send", "text": "answer"}).to_string(),
    );
    let d = f.delivery.drain(&target).await.unwrap();
    assert_eq!(d.delivered, 1, "{answer}");
    assert_eq!(d.wake[0].id, f.session.id);
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
    let row = Queued {
        channel_type: Some("telegram".into()),
        platform_id: Some("1".into()),
        ..Queued::new(
            "m1",
            InKind::Chat,
            "2026-01-01T00:00:00.000Z",
            "{\"text\":\"hi\"}",
        )
    };
    f.sessions
        .with_inbound(&f.session, |c| inbound::insert_message(c, &row))
        .unwrap();
    let path = f.sessions.session_dir(&f.session).unwrap().outbound_db();
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
