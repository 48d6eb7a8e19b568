use super::*;
use crate::store::messaging_groups::UnknownSenderPolicy::{Public, RequestApproval, Strict};
use crate::store::roles::{self, Role, Scope};
use crate::store::testing::{agent, chat_with_policy};
use crate::store::wirings::{SenderScope, WiringRules};
use crate::store::{dropped, members};

struct Fixture {
    _tmp: tempfile::TempDir,
    db: Arc<Db>,
    sessions: Arc<SessionStore>,
}

impl Fixture {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let sessions = SessionStore::new(tmp.path().join("sessions"));
        Fixture {
            _tmp: tmp,
            db: Arc::new(Db::open_in_memory().unwrap()),
            sessions: Arc::new(sessions),
        }
    }

    fn router(&self) -> Router {
        let mut channels = HashMap::new();
        channels.insert(
            ChannelName::parse("telegram").unwrap(),
            ChannelCaps { threads: false },
        );
        channels.insert(
            ChannelName::parse("slack").unwrap(),
            ChannelCaps { threads: true },
        );
        Router::new(self.db.clone(), self.sessions.clone(), channels)
    }

    fn wire(&self, chat: &MessagingGroup, agent: &AgentGroupId, rules: WiringRules) {
        self.db
            .write(|c| wirings::create(c, &chat.id, agent, rules))
            .unwrap();
    }

    fn user(&self, id: &str) -> UserId {
        let id = UserId::parse(id).unwrap();
        self.db.write(|c| users::upsert(c, &id, None)).unwrap();
        id
    }

    fn drops(&self) -> Vec<dropped::DroppedMessage> {
        self.db.read(|c| dropped::list(c, 100)).unwrap()
    }

    /// Rows in a session's inbound.db, once the writer moved the queued ones: (id, trigger,
    /// content).
    fn rows(&self, s: &Session) -> Vec<(String, bool, String)> {
        crate::sessions::writer::flush(&self.db, &self.sessions, s).unwrap();
        self.sessions
            .with_inbound(s, |c| {
                let mut st =
                    c.prepare("SELECT id, trigger, content FROM messages_in ORDER BY seq")?;
                let rows = st
                    .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                Ok(rows)
            })
            .unwrap()
    }
}

fn tg() -> ChannelName {
    ChannelName::parse("telegram").unwrap()
}

fn slack() -> ChannelName {
    ChannelName::parse("slack").unwrap()
}

fn dm(from: &str, text: &str) -> Inbound {
    Inbound::text(&tg(), from, Some(from), text).unwrap()
}

fn group_msg(
    channel: &ChannelName,
    chat: &str,
    from: &str,
    text: &str,
    mentioned: bool,
) -> Inbound {
    Inbound {
        is_group: true,
        mentioned,
        ..Inbound::text(channel, chat, Some(from), text).unwrap()
    }
}

/// A DM chat "telegram:<id>" wired to a fresh agent, with the given policy.
fn dm_setup(f: &Fixture, id: &str, policy: UnknownSenderPolicy) -> (MessagingGroup, AgentGroupId) {
    let a = agent(&f.db, "Helper");
    let c = chat_with_policy(&f.db, &format!("telegram:{id}"), Some("DM"), false, policy);
    f.wire(&c, &a.id, WiringRules::for_chat(false));
    (c, a.id)
}

#[test]
fn unknown_channel_type_is_an_error() {
    let f = Fixture::new();
    let msg = Inbound::text(
        &ChannelName::parse("discord").unwrap(),
        "1",
        Some("1"),
        "hi",
    )
    .unwrap();
    let err = f.router().route(&msg).unwrap_err().to_string();
    assert!(
        err.contains("no channel plugin of type \"discord\""),
        "{err}"
    );
}

#[test]
fn malformed_sender_handle_is_an_error() {
    let f = Fixture::new();
    let mut msg = dm("1", "hi");
    msg.sender = Some(Sender {
        handle: "".into(),
        name: None,
        is_bot: false,
    });
    assert!(f.router().route(&msg).is_err());
    msg.sender = Some(Sender {
        handle: "a\u{0}b".into(),
        name: None,
        is_bot: false,
    });
    assert!(f.router().route(&msg).is_err());
}

#[test]
fn malformed_json_event_is_refused_at_the_edge() {
    let bad_channel = r#"{"channel":"Not A Channel","chat_id":"1","text":"x"}"#;
    assert!(serde_json::from_str::<Inbound>(bad_channel).is_err());
    let empty_chat = r#"{"channel":"telegram","chat_id":"","text":"x"}"#;
    assert!(serde_json::from_str::<Inbound>(empty_chat).is_err());
    let ok = r#"{"channel":"telegram","chat_id":"5","text":"x"}"#;
    assert!(serde_json::from_str::<Inbound>(ok).is_ok());
}

#[test]
fn strict_chat_delivers_to_privileged_and_members_only() {
    let f = Fixture::new();
    let (_, a) = dm_setup(&f, "100", Strict);
    let owner = f.user("telegram:1");
    let gadmin = f.user("telegram:2");
    let sadmin = f.user("telegram:3");
    let member = f.user("telegram:4");
    let known = f.user("telegram:5");
    f.db.write(|c| roles::grant(c, &owner, Role::Owner, &Scope::Global, None))
        .unwrap();
    f.db.write(|c| roles::grant(c, &gadmin, Role::Admin, &Scope::Global, None))
        .unwrap();
    f.db.write(|c| roles::grant(c, &sadmin, Role::Admin, &Scope::Group(a.clone()), None))
        .unwrap();
    f.db.write(|c| members::add(c, &member, &a, None)).unwrap();

    let send = |handle: &str| {
        let msg = Inbound::text(&tg(), "100", Some(handle), "hello").unwrap();
        f.router().route(&msg).unwrap()
    };
    for handle in ["1", "2", "3", "4"] {
        let out = send(handle);
        assert_eq!(
            out.routed.len(),
            1,
            "sender {handle} should reach the agent"
        );
        assert!(out.dropped.is_none());
    }
    for handle in ["5", "6"] {
        let out = send(handle);
        assert!(
            out.routed.is_empty(),
            "sender {handle} must not reach the agent"
        );
        assert_eq!(out.dropped, Some(DropReason::UnknownSenderStrict));
    }
    assert!(
        f.db.read(|c| users::get(c, &UserId::parse("telegram:6")?))
            .unwrap()
            .is_some(),
        "sender upserted"
    );
    let _ = known;
    let drops = f.drops();
    assert_eq!(drops.len(), 2);
    assert!(
        drops
            .iter()
            .all(|d| d.reason == DropReason::UnknownSenderStrict)
    );
}

#[test]
fn request_approval_holds_unknown_senders_and_delivers_members() {
    let f = Fixture::new();
    let (c, a) = dm_setup(&f, "100", RequestApproval);
    let member = f.user("telegram:4");
    f.db.write(|t| members::add(t, &member, &a, None)).unwrap();

    let out = f
        .router()
        .route(&Inbound::text(&tg(), "100", Some("4"), "hi").unwrap())
        .unwrap();
    assert_eq!(out.routed.len(), 1);

    let first = f
        .router()
        .route(&Inbound::text(&tg(), "100", Some("9"), "let me in").unwrap())
        .unwrap();
    assert!(first.routed.is_empty());
    assert!(first.dropped.is_none(), "held, not dropped");
    assert_eq!(first.held.len(), 1);
    let held = &first.held[0];
    assert!(held.new_request);
    assert_eq!(held.chat.id, c.id);
    assert_eq!(held.agent, a);
    assert_eq!(held.sender.as_str(), "telegram:9");

    let second = f
        .router()
        .route(&Inbound::text(&tg(), "100", Some("9"), "please").unwrap())
        .unwrap();
    assert!(
        !second.held[0].new_request,
        "the open request collects further messages"
    );
    assert_eq!(second.held[0].approval, held.approval);
    let kept =
        f.db.read(|t| approvals::held_messages(t, &held.approval))
            .unwrap();
    assert_eq!(kept.len(), 2);
    let replay: Inbound = serde_json::from_str(&kept[0]).unwrap();
    assert_eq!(replay.text, "let me in");
    assert!(
        replay.message_id.is_some(),
        "held copies carry a stable message id"
    );
}

#[test]
fn public_chat_lets_unknown_senders_in() {
    let f = Fixture::new();
    let (_, _a) = dm_setup(&f, "100", Public);
    let out = f
        .router()
        .route(&Inbound::text(&tg(), "100", Some("77"), "hey").unwrap())
        .unwrap();
    assert_eq!(out.routed.len(), 1);
    let (_, _, content) = &f.rows(&out.routed[0].session)[0];
    let content: ChatIn = serde_json::from_str(content).unwrap();
    assert_eq!(content.sender_id.as_deref(), Some("telegram:77"));
    assert!(content.is_mention, "a DM counts as addressed");
}

#[test]
fn messages_without_a_sender_are_unknown_unless_public() {
    let f = Fixture::new();
    let (_, _) = dm_setup(&f, "100", Strict);
    let anon = Inbound::text(&tg(), "100", None, "who am I").unwrap();
    assert_eq!(
        f.router().route(&anon).unwrap().dropped,
        Some(DropReason::UnknownSenderStrict)
    );
    let (_, _) = dm_setup(&f, "200", Public);
    let anon = Inbound::text(&tg(), "200", None, "who am I").unwrap();
    assert_eq!(f.router().route(&anon).unwrap().routed.len(), 1);
}

#[test]
fn unwired_chat_is_created_when_addressed_and_the_drop_recorded() {
    let f = Fixture::new();
    let out = f.router().route(&dm("55", "anyone there?")).unwrap();
    assert_eq!(out.dropped, Some(DropReason::NoAgentWired));
    let chat =
        f.db.read(|c| messaging_groups::find(c, &tg(), &PlatformId::parse("55")?))
            .unwrap()
            .unwrap();
    assert_eq!(chat.unknown_sender_policy, Strict, "new chats are strict");
    assert!(!chat.is_group);
    let drops = f.drops();
    assert_eq!(drops.len(), 1);
    assert_eq!(drops[0].reason, DropReason::NoAgentWired);
    assert_eq!(drops[0].user_id.as_deref(), Some("telegram:55"));

    // Group chatter that does not address the bot in an unknown chat leaves no trace.
    let chatter = group_msg(&tg(), "-9", "56", "just talking", false);
    assert_eq!(
        f.router().route(&chatter).unwrap().dropped,
        Some(DropReason::NoAgentWired)
    );
    assert!(
        f.db.read(|c| messaging_groups::find(c, &tg(), &PlatformId::parse("-9")?))
            .unwrap()
            .is_none()
    );
    assert_eq!(f.drops().len(), 1);
}

#[test]
fn dropped_messages_are_counted() {
    let f = Fixture::new();
    for _ in 0..3 {
        f.router().route(&dm("55", "hello?")).unwrap();
    }
    let drops = f.drops();
    assert_eq!(drops.len(), 1);
    assert_eq!(drops[0].message_count, 3);
}

#[test]
fn mention_mode_in_groups() {
    let f = Fixture::new();
    let a = agent(&f.db, "A");
    let g = chat_with_policy(&f.db, "telegram:-1", Some("Team"), true, Public);
    f.wire(&g, &a.id, WiringRules::for_chat(true));
    let quiet = f
        .router()
        .route(&group_msg(&tg(), "-1", "7", "chatting", false))
        .unwrap();
    assert!(quiet.routed.is_empty());
    assert_eq!(quiet.dropped, Some(DropReason::NoAgentEngaged));
    let asked = f
        .router()
        .route(&group_msg(&tg(), "-1", "7", "@bot help", true))
        .unwrap();
    assert_eq!(asked.routed.len(), 1);
    assert!(asked.routed[0].trigger);
}

#[test]
fn pattern_mode_matches_the_text() {
    let f = Fixture::new();
    let a = agent(&f.db, "A");
    let g = chat_with_policy(&f.db, "telegram:-1", None, true, Public);
    f.wire(
        &g,
        &a.id,
        WiringRules {
            engage_pattern: Some("(?i)^hey helper".into()),
            ..WiringRules::default()
        },
    );
    assert!(
        f.router()
            .route(&group_msg(&tg(), "-1", "7", "random", false))
            .unwrap()
            .routed
            .is_empty()
    );
    assert_eq!(
        f.router()
            .route(&group_msg(&tg(), "-1", "7", "Hey helper, hi", false))
            .unwrap()
            .routed
            .len(),
        1
    );
}

#[test]
fn mention_sticky_follows_a_thread_after_the_first_mention() {
    let f = Fixture::new();
    let a = agent(&f.db, "A");
    let g = chat_with_policy(&f.db, "slack:C1", None, true, Public);
    f.wire(
        &g,
        &a.id,
        WiringRules {
            engage_mode: EngageMode::MentionSticky,
            ..WiringRules::default()
        },
    );
    let in_thread = |text: &str, mentioned: bool, thread: &str| {
        let mut m = group_msg(&slack(), "C1", "U7", text, mentioned);
        m.thread_id = Some(thread.to_string());
        f.router().route(&m).unwrap()
    };
    assert!(
        in_thread("before any mention", false, "T1")
            .routed
            .is_empty()
    );
    let first = in_thread("@bot look", true, "T1");
    assert_eq!(first.routed.len(), 1);
    let follow = in_thread("and also this", false, "T1");
    assert_eq!(follow.routed.len(), 1, "the thread is followed");
    assert_eq!(follow.routed[0].session.id, first.routed[0].session.id);
    assert!(
        in_thread("other thread", false, "T2").routed.is_empty(),
        "only that thread"
    );
}

#[test]
fn accumulate_stores_context_without_waking() {
    let f = Fixture::new();
    let a = agent(&f.db, "A");
    let g = chat_with_policy(&f.db, "telegram:-1", None, true, Public);
    f.wire(
        &g,
        &a.id,
        WiringRules {
            ignored_message_policy: IgnoredMessagePolicy::Accumulate,
            ..WiringRules::for_chat(true)
        },
    );
    let chatter = f
        .router()
        .route(&group_msg(&tg(), "-1", "7", "background", false))
        .unwrap();
    assert_eq!(chatter.routed.len(), 1);
    assert!(!chatter.routed[0].trigger);
    assert_eq!(chatter.sessions_to_wake().count(), 0);
    assert!(chatter.dropped.is_none());
    let asked = f
        .router()
        .route(&group_msg(&tg(), "-1", "7", "@bot summarize", true))
        .unwrap();
    assert_eq!(asked.sessions_to_wake().count(), 1);
    let rows = f.rows(&asked.routed[0].session);
    assert_eq!(
        rows.iter().map(|r| r.1).collect::<Vec<_>>(),
        vec![false, true]
    );
}

#[test]
fn accumulate_does_not_store_unknown_senders_of_strict_chats() {
    let f = Fixture::new();
    let a = agent(&f.db, "A");
    let g = chat_with_policy(&f.db, "telegram:-1", None, true, Strict);
    f.wire(
        &g,
        &a.id,
        WiringRules {
            ignored_message_policy: IgnoredMessagePolicy::Accumulate,
            ..WiringRules::for_chat(true)
        },
    );
    let out = f
        .router()
        .route(&group_msg(&tg(), "-1", "7", "eavesdrop this", false))
        .unwrap();
    assert!(out.routed.is_empty());
}

#[test]
fn session_modes() {
    let f = Fixture::new();
    // shared: one session per chat.
    let (c, a) = dm_setup(&f, "100", Public);
    let s1 = f.router().route(&dm("100", "one")).unwrap().routed[0]
        .session
        .id
        .clone();
    let s2 = f.router().route(&dm("100", "two")).unwrap().routed[0]
        .session
        .id
        .clone();
    assert_eq!(s1, s2);
    let _ = c;

    // per-thread on a threaded channel: one session per thread; thread ids kept.
    let b = agent(&f.db, "B");
    let sc = chat_with_policy(&f.db, "slack:C9", None, true, Public);
    f.wire(
        &sc,
        &b.id,
        WiringRules {
            session_mode: SessionMode::PerThread,
            ..WiringRules::default()
        },
    );
    let in_thread = |t: &str| {
        let mut m = group_msg(&slack(), "C9", "U1", "x", true);
        m.thread_id = Some(t.into());
        f.router().route(&m).unwrap().routed[0].session.clone()
    };
    let t1 = in_thread("T1");
    let t1b = in_thread("T1");
    let t2 = in_thread("T2");
    assert_eq!(t1.id, t1b.id);
    assert_ne!(t1.id, t2.id);
    assert_eq!(t1.thread_id.as_deref(), Some("T1"));

    // Thread ids from a channel without threads are ignored.
    let mut m = dm("100", "threaded?");
    m.thread_id = Some("T5".into());
    assert_eq!(f.router().route(&m).unwrap().routed[0].session.id, s1);

    // agent-shared: one session across chats.
    let shared = agent(&f.db, "Shared");
    let x = chat_with_policy(&f.db, "telegram:301", None, false, Public);
    let y = chat_with_policy(&f.db, "telegram:302", None, false, Public);
    for chat in [&x, &y] {
        f.wire(
            chat,
            &shared.id,
            WiringRules {
                session_mode: SessionMode::AgentShared,
                ..WiringRules::default()
            },
        );
    }
    let sx = f.router().route(&dm("301", "from x")).unwrap().routed[0]
        .session
        .id
        .clone();
    let sy = f.router().route(&dm("302", "from y")).unwrap().routed[0]
        .session
        .id
        .clone();
    assert_eq!(sx, sy);
    let _ = a;
}

#[test]
fn an_agent_shared_session_keeps_equal_message_ids_of_different_chats_apart() {
    // Telegram numbers each chat's messages from 1: a DM and a group of one agent-shared
    // session both have a message 4, and neither is a redelivery of the other.
    let f = Fixture::new();
    let a = agent(&f.db, "Shared");
    let dm_chat = chat_with_policy(&f.db, "telegram:42", None, false, Public);
    let group = chat_with_policy(&f.db, "telegram:-100", None, true, Public);
    for chat in [&dm_chat, &group] {
        f.wire(
            chat,
            &a.id,
            WiringRules {
                session_mode: SessionMode::AgentShared,
                engage_mode: EngageMode::Pattern,
                ..WiringRules::default()
            },
        );
    }
    let mut in_dm = dm("42", "from the dm");
    in_dm.message_id = Some("4".into());
    let mut in_group = group_msg(&tg(), "-100", "42", "from the group", false);
    in_group.message_id = Some("4".into());
    let first = f.router().route(&in_dm).unwrap();
    let second = f.router().route(&in_group).unwrap();
    assert_eq!(second.duplicates, 0);
    assert_eq!(first.routed[0].session.id, second.routed[0].session.id);
    let texts: Vec<String> = f
        .rows(&first.routed[0].session)
        .into_iter()
        .map(|(_, _, content)| serde_json::from_str::<ChatIn>(&content).unwrap().text)
        .collect();
    assert_eq!(texts, ["from the dm", "from the group"]);
    // A redelivery is still recognised, per chat.
    assert_eq!(f.router().route(&in_group).unwrap().duplicates, 1);
    assert_eq!(f.router().route(&in_dm).unwrap().duplicates, 1);
}

#[test]
fn threaded_group_chats_always_get_per_thread_sessions() {
    let f = Fixture::new();
    let a = agent(&f.db, "A");
    let g = chat_with_policy(&f.db, "slack:C1", None, true, Public);
    f.wire(&g, &a.id, WiringRules::default());
    let route = |t: &str| {
        let mut m = group_msg(&slack(), "C1", "U1", "x", true);
        m.thread_id = Some(t.into());
        f.router().route(&m).unwrap().routed[0].session.id.clone()
    };
    assert_ne!(route("T1"), route("T2"));
}

#[test]
fn fan_out_follows_priority_and_redelivery_is_ignored() {
    let f = Fixture::new();
    let low = agent(&f.db, "Low");
    let high = agent(&f.db, "High");
    let g = chat_with_policy(&f.db, "telegram:-1", None, true, Public);
    f.wire(&g, &low.id, WiringRules::default());
    f.wire(
        &g,
        &high.id,
        WiringRules {
            priority: 10,
            ..WiringRules::default()
        },
    );
    let mut m = group_msg(&tg(), "-1", "7", "all hands", false);
    m.message_id = Some("42".into());
    let out = f.router().route(&m).unwrap();
    let order: Vec<_> = out
        .routed
        .iter()
        .map(|r| r.session.agent_group_id.clone())
        .collect();
    assert_eq!(order, vec![high.id.clone(), low.id.clone()]);
    assert_eq!(
        out.routed[0].message_id,
        format!("telegram:-1:42:{}", high.id)
    );
    let again = f.router().route(&m).unwrap();
    assert!(again.routed.is_empty());
    assert_eq!(again.duplicates, 2);
    assert!(again.dropped.is_none());
}

#[test]
fn admin_commands_are_gated_and_filtered_commands_never_reach_agents() {
    let f = Fixture::new();
    let (_, a) = dm_setup(&f, "100", Public);
    let member = f.user("telegram:4");
    f.db.write(|c| members::add(c, &member, &a, None)).unwrap();
    let admin = f.user("telegram:2");
    f.db.write(|c| roles::grant(c, &admin, Role::Admin, &Scope::Group(a.clone()), None))
        .unwrap();

    let denied = f
        .router()
        .route(&Inbound::text(&tg(), "100", Some("4"), "/clear").unwrap())
        .unwrap();
    assert!(denied.routed.is_empty());
    assert_eq!(denied.replies.len(), 1);
    assert_eq!(
        denied.replies[0].text,
        "Permission denied: /clear requires admin access."
    );
    assert_eq!(denied.replies[0].chat.to_string(), "telegram:100");

    let allowed = f
        .router()
        .route(&Inbound::text(&tg(), "100", Some("2"), "/Clear please").unwrap())
        .unwrap();
    assert_eq!(allowed.routed.len(), 1);

    let filtered = f
        .router()
        .route(&Inbound::text(&tg(), "100", Some("2"), "/login").unwrap())
        .unwrap();
    assert!(filtered.routed.is_empty());
    assert_eq!(filtered.dropped, Some(DropReason::FilteredCommand));

    let other = f
        .router()
        .route(&Inbound::text(&tg(), "100", Some("4"), "/weather").unwrap())
        .unwrap();
    assert_eq!(other.routed.len(), 1, "unknown commands go to the agent");
}

#[test]
fn known_sender_scope_applies_even_in_public_chats() {
    let f = Fixture::new();
    let a = agent(&f.db, "A");
    let c = chat_with_policy(&f.db, "telegram:100", None, false, Public);
    f.wire(
        &c,
        &a.id,
        WiringRules {
            sender_scope: SenderScope::Known,
            ..WiringRules::default()
        },
    );
    let out = f.router().route(&dm("100", "hi")).unwrap();
    assert_eq!(out.dropped, Some(DropReason::SenderScope));
    let member = f.user("telegram:100");
    f.db.write(|t| members::add(t, &member, &a.id, None))
        .unwrap();
    assert_eq!(
        f.router()
            .route(&dm("100", "hi again"))
            .unwrap()
            .routed
            .len(),
        1
    );
}

#[test]
fn attachments_are_saved_into_the_inbox() {
    let f = Fixture::new();
    let (_, _) = dm_setup(&f, "100", Public);
    let mut m = dm("100", "see file");
    m.message_id = Some("7".into());
    m.attachments = vec![
        IncomingAttachment {
            name: "notes.txt".into(),
            kind: "file".into(),
            mime_type: Some("text/plain".into()),
            data: b"hello".to_vec(),
            url: None,
        },
        IncomingAttachment {
            name: "../../escape".into(),
            kind: "file".into(),
            mime_type: None,
            data: b"x".to_vec(),
            url: None,
        },
        IncomingAttachment {
            name: "remote.png".into(),
            kind: "image".into(),
            mime_type: None,
            data: vec![],
            url: Some("https://example.invalid/a.png".into()),
        },
    ];
    let out = f.router().route(&m).unwrap();
    let session = &out.routed[0].session;
    let (_, _, content) = &f.rows(session)[0];
    let content: ChatIn = serde_json::from_str(content).unwrap();
    let dir = f.sessions.session_dir(session).unwrap();
    let first = content.attachments[0].path.as_deref().unwrap();
    assert_eq!(std::fs::read(dir.path().join(first)).unwrap(), b"hello");
    let second = content.attachments[1].path.as_deref().unwrap();
    assert!(
        second.ends_with("/attachment-2"),
        "unsafe names are replaced: {second}"
    );
    assert!(
        dir.path()
            .join(second)
            .starts_with(dir.inbound_dir().join("inbox"))
    );
    assert!(content.attachments[2].path.is_none());
    assert_eq!(
        content.attachments[2].url.as_deref(),
        Some("https://example.invalid/a.png")
    );
}

#[test]
fn a_symlinked_inbox_is_refused() {
    let f = Fixture::new();
    let (_, _) = dm_setup(&f, "100", Public);
    let out = f.router().route(&dm("100", "first")).unwrap();
    let dir = f.sessions.prepare(&out.routed[0].session).unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    std::fs::remove_dir(dir.inbound_dir().join("inbox")).unwrap();
    std::os::unix::fs::symlink(elsewhere.path(), dir.inbound_dir().join("inbox")).unwrap();
    let mut m = dm("100", "file");
    m.attachments = vec![IncomingAttachment {
        name: "a.txt".into(),
        kind: "file".into(),
        mime_type: None,
        data: b"secret".to_vec(),
        url: None,
    }];
    assert!(f.router().route(&m).is_err());
    assert_eq!(
        std::fs::read_dir(elsewhere.path()).unwrap().count(),
        0,
        "nothing written through the link"
    );
}

#[test]
fn command_words() {
    assert_eq!(command_of("  /Clear now").as_deref(), Some("/clear"));
    assert_eq!(command_of("hello /clear"), None);
    assert_eq!(command_of("/"), Some("/".into()));
}

/// Every unknown-sender policy against every kind of sender.
#[test]
fn policy_by_sender_matrix() {
    #[derive(Debug, PartialEq)]
    enum Got {
        Delivered,
        Dropped,
        Held,
    }
    for policy in [Strict, RequestApproval, Public] {
        let f = Fixture::new();
        let a = agent(&f.db, "A");
        let c = chat_with_policy(&f.db, "telegram:-1", None, true, policy);
        f.wire(&c, &a.id, WiringRules::default());
        f.user("telegram:20");
        let member = f.user("telegram:30");
        f.db.write(|t| members::add(t, &member, &a.id, None))
            .unwrap();
        let admin = f.user("telegram:40");
        f.db.write(|t| roles::grant(t, &admin, Role::Admin, &Scope::Group(a.id.clone()), None))
            .unwrap();
        for (who, handle) in [
            ("unknown", "10"),
            ("known", "20"),
            ("member", "30"),
            ("admin", "40"),
        ] {
            let out = f
                .router()
                .route(&group_msg(&tg(), "-1", handle, "hello", false))
                .unwrap();
            let got = if !out.routed.is_empty() {
                Got::Delivered
            } else if !out.held.is_empty() {
                Got::Held
            } else {
                Got::Dropped
            };
            let expected = match (policy, who) {
                (Public, _) | (_, "member") | (_, "admin") => Got::Delivered,
                (Strict, _) => Got::Dropped,
                (RequestApproval, _) => Got::Held,
            };
            assert_eq!(got, expected, "{policy} / {who}");
        }
    }
}

/// Statuses of a session's rows, by id.
fn statuses(f: &Fixture, s: &Session) -> Vec<(String, String)> {
    f.sessions
        .with_inbound(s, |c| {
            let mut st = c.prepare("SELECT id, status FROM messages_in ORDER BY seq")?;
            let rows = st
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(rows)
        })
        .unwrap()
}

fn deletion(chat: &str, message_id: &str) -> Deletion {
    Deletion {
        channel: tg(),
        chat_id: PlatformId::parse(chat).unwrap(),
        thread_id: None,
        message_id: message_id.into(),
    }
}

#[test]
fn a_message_deleted_before_its_agent_read_it_is_withdrawn_with_its_files() {
    let f = Fixture::new();
    dm_setup(&f, "100", Public);
    let mut m = dm("100", "oops, wrong chat");
    m.message_id = Some("7".into());
    m.attachments = vec![IncomingAttachment {
        name: "secret.txt".into(),
        kind: "file".into(),
        mime_type: None,
        data: b"private".to_vec(),
        url: None,
    }];
    let out = f.router().route(&m).unwrap();
    let session = out.routed[0].session.clone();
    let dir = f.sessions.session_dir(&session).unwrap();
    let inbox = dir.inbound_dir().join("inbox");
    assert_eq!(std::fs::read_dir(&inbox).unwrap().count(), 1);

    let gone = f.router().withdraw(&deletion("100", "7")).unwrap();
    assert!(
        gone.routed.is_empty(),
        "nothing to tell an agent that never saw it"
    );
    assert_eq!(statuses(&f, &session)[0].1, "deleted");
    assert_eq!(
        std::fs::read_dir(&inbox).unwrap().count(),
        0,
        "its files are gone"
    );
    let pending = f
        .sessions
        .with_inbound(&session, |c| crate::sessions::inbound::pending_ids(c))
        .unwrap();
    assert!(pending.is_empty(), "no runner takes it: {pending:?}");

    // A redelivered deletion, or one of a message nobody got, changes nothing.
    assert!(
        f.router()
            .withdraw(&deletion("100", "7"))
            .unwrap()
            .routed
            .is_empty()
    );
    assert!(
        f.router()
            .withdraw(&deletion("100", "8"))
            .unwrap()
            .routed
            .is_empty()
    );
    assert!(
        f.router()
            .withdraw(&deletion("555", "7"))
            .unwrap()
            .routed
            .is_empty()
    );
    assert!(f.router().withdraw(&deletion("100", " ")).is_err());
}

/// A deletion while the session's DB is held locked (as its container can) does not wait
/// for it and is not lost: it waits centrally, and the writer takes the message back later.
#[test]
fn a_deletion_that_finds_the_session_db_locked_is_applied_later() {
    let f = Fixture::new();
    dm_setup(&f, "100", Public);
    let mut m = dm("100", "oops");
    m.message_id = Some("7".into());
    let out = f.router().route(&m).unwrap();
    let session = out.routed[0].session.clone();
    let path = f.sessions.session_dir(&session).unwrap().inbound_db();
    let mut holder = rusqlite::Connection::open(&path).unwrap();
    let lock = holder
        .transaction_with_behavior(rusqlite::TransactionBehavior::Exclusive)
        .unwrap();

    let started = std::time::Instant::now();
    let out = f.router().withdraw(&deletion("100", "7")).unwrap();
    assert!(
        started.elapsed() < crate::sessions::HOST_BUSY_TIMEOUT,
        "no wait: {:?}",
        started.elapsed()
    );
    assert_eq!(out.to_flush.len(), 1, "the writer is asked to finish it");
    assert!(
        f.db.read(crate::sessions::queue::sessions_waiting)
            .unwrap()
            .contains(&session.id),
        "recorded centrally"
    );

    drop(lock);
    let done = crate::sessions::writer::flush(&f.db, &f.sessions, &session).unwrap();
    assert_eq!(done.withdrawn, 1);
    assert_eq!(statuses(&f, &session)[0].1, "deleted");
}

#[test]
fn an_agent_that_already_read_a_deleted_message_is_told_without_a_wake() {
    let f = Fixture::new();
    dm_setup(&f, "100", Public);
    let mut m = dm("100", "hello");
    m.message_id = Some("7".into());
    let out = f.router().route(&m).unwrap();
    let session = out.routed[0].session.clone();
    let row_id = out.routed[0].message_id.clone();
    // The container claimed it (its outbound.db, as the runner writes it).
    let dir = f.sessions.session_dir(&session).unwrap();
    let ob = rusqlite::Connection::open(dir.outbound_db()).unwrap();
    ob.execute_batch(nanoclaw_schema::session::OUTBOUND_SCHEMA)
        .unwrap();
    ob.execute(
        "INSERT INTO processing_ack (message_id, status, status_changed) VALUES (?1, 'processing', 'now')",
        [&row_id],
    )
    .unwrap();

    let told = f.router().withdraw(&deletion("100", "7")).unwrap();
    assert_eq!(told.routed.len(), 1);
    assert!(
        !told.routed[0].trigger,
        "a note rides along, it does not wake"
    );
    let rows = f.rows(&session);
    assert_eq!(rows.len(), 2);
    let (id, trigger, content) = &rows[1];
    assert_eq!(id, &format!("{row_id}:deleted"));
    assert!(!trigger);
    let seq = f
        .sessions
        .with_inbound(&session, |c| {
            Ok(c.query_row(
                "SELECT seq FROM messages_in WHERE id = ?1",
                [&row_id],
                |r| r.get::<_, i64>(0),
            )?)
        })
        .unwrap();
    assert!(
        content.contains(&format!("The sender deleted message {seq}.")),
        "{content}"
    );
    // Told once, however often the platform repeats the deletion.
    assert!(
        f.router()
            .withdraw(&deletion("100", "7"))
            .unwrap()
            .routed
            .is_empty()
    );
    assert_eq!(f.rows(&session).len(), 2);
}

#[test]
fn a_deleted_message_is_forgotten_while_held_for_an_approver() {
    let f = Fixture::new();
    dm_setup(&f, "100", RequestApproval);
    let mut first = Inbound::text(&tg(), "100", Some("9"), "let me in").unwrap();
    first.message_id = Some("1".into());
    let mut second = Inbound::text(&tg(), "100", Some("9"), "my password is hunter2").unwrap();
    second.message_id = Some("2".into());
    let held = f.router().route(&first).unwrap().held[0].approval.clone();
    f.router().route(&second).unwrap();

    f.router().withdraw(&deletion("100", "2")).unwrap();
    let kept = f.db.read(|t| approvals::held_messages(t, &held)).unwrap();
    assert_eq!(kept.len(), 1, "only what the sender kept is replayed");
    assert!(kept[0].contains("let me in"));
}

#[test]
fn a_deleted_message_still_in_the_central_queue_never_reaches_the_session() {
    let f = Fixture::new();
    dm_setup(&f, "100", Public);
    let mut m = dm("100", "first");
    m.message_id = Some("1".into());
    let session = f.router().route(&m).unwrap().routed[0].session.clone();
    // The container holds its DB: the next message waits in the central queue.
    let dir = f.sessions.session_dir(&session).unwrap();
    let lock = rusqlite::Connection::open(dir.inbound_db()).unwrap();
    lock.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let mut later = dm("100", "second");
    later.message_id = Some("2".into());
    assert!(f.router().route(&later).unwrap().routed[0].queued);
    f.router().withdraw(&deletion("100", "2")).unwrap();
    lock.execute_batch("COMMIT").unwrap();
    drop(lock);

    let rows = f.rows(&session);
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert!(rows[0].0.contains(":1:"));
}
