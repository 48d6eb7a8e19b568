//! Router throughput: inbound events accepted into `inbound.db` per second, on real files.
//!
//! Each iteration routes a batch (as `on_inbound` does before it returns: the decision in the
//! central DB, the message into its session's `inbound.db`, or the central queue when that DB
//! is busy) and then runs the session writer over every session that had messages queued, as
//! the daemon does: the time covers both, so an event counts once it is in its session's
//! `inbound.db`.
//!
//! Scenarios: one busy chat (every event to one session), many chats (events spread over
//! 100 sessions), and two routing threads (as two plugins would call in at once). After each
//! scenario every event is counted back out of the session databases: nothing may be lost.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};

use nanoclaw::db::Db;
use nanoclaw::ids::{ChannelName, PlatformId};
use nanoclaw::router::{ChannelCaps, Inbound, Router, Sender};
use nanoclaw::sessions::{Session, SessionStore, writer};
use nanoclaw::store::agent_groups::{self, NewAgentGroup};
use nanoclaw::store::messaging_groups::{self, NewMessagingGroup, UnknownSenderPolicy};
use nanoclaw::store::wirings::{self, WiringRules};

struct Setup {
    dir: tempfile::TempDir,
    db: Arc<Db>,
    sessions: Arc<SessionStore>,
    channel: ChannelName,
}

fn setup(chats: usize) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(Db::open(&dir.path().join("v2.db")).unwrap());
    let sessions = Arc::new(SessionStore::new(dir.path().join("sessions")));
    let channel = ChannelName::parse("bench").unwrap();
    let agent = db
        .write(|c| agent_groups::create(c, NewAgentGroup::named("Bench")))
        .unwrap();
    for i in 0..chats {
        db.write(|c| {
            let (mg, _) = messaging_groups::get_or_create(
                c,
                &NewMessagingGroup {
                    channel_type: channel.clone(),
                    platform_id: PlatformId::parse(&format!("chat-{i}"))?,
                    name: None,
                    is_group: false,
                    unknown_sender_policy: UnknownSenderPolicy::Public,
                },
            )?;
            wirings::create(c, &mg.id, &agent.id, WiringRules::default())
        })
        .unwrap();
    }
    Setup {
        dir,
        db,
        sessions,
        channel,
    }
}

fn router(s: &Setup) -> Router {
    let mut channels = HashMap::new();
    channels.insert(s.channel.clone(), ChannelCaps::default());
    Router::new(s.db.clone(), s.sessions.clone(), channels)
}

fn event(s: &Setup, chat: usize, n: u64) -> Inbound {
    Inbound {
        message_id: Some(format!("m{n}")),
        sender: Some(Sender {
            handle: format!("user-{}", n % 50),
            name: Some("Someone".into()),
            is_bot: false,
        }),
        ..Inbound::text(
            &s.channel,
            &format!("chat-{chat}"),
            None,
            "hello, this is a typical short chat message",
        )
        .unwrap()
    }
}

/// Counts every message row in every session DB under the setup.
fn stored(s: &Setup) -> u64 {
    let mut total = 0;
    let Ok(agents) = std::fs::read_dir(s.dir.path().join("sessions")) else {
        return 0;
    };
    for agent in agents {
        for session in std::fs::read_dir(agent.unwrap().path()).unwrap() {
            let conn = rusqlite::Connection::open(
                session.unwrap().path().join("inbound").join("inbound.db"),
            )
            .unwrap();
            total += conn
                .query_row("SELECT COUNT(*) FROM messages_in", [], |r| {
                    r.get::<_, i64>(0)
                })
                .unwrap() as u64;
        }
    }
    total
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("router");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(10));
    const BATCH: u64 = 2_000;
    group.throughput(Throughput::Elements(BATCH));

    for (name, chats, threads) in [
        ("one_chat", 1usize, 1usize),
        ("100_chats", 100, 1),
        ("100_chats_2_threads", 100, 2),
    ] {
        let s = setup(chats);
        let r = router(&s);
        let next = AtomicU64::new(0);
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                for _ in 0..iters {
                    let touched = std::sync::Mutex::new(HashMap::<String, Session>::new());
                    std::thread::scope(|scope| {
                        for _ in 0..threads {
                            scope.spawn(|| {
                                for _ in 0..BATCH / threads as u64 {
                                    let n = next.fetch_add(1, Ordering::Relaxed);
                                    let out = r.route(&event(&s, (n as usize) % chats, n)).unwrap();
                                    assert_eq!(out.routed.len(), 1);
                                    if out.routed[0].queued {
                                        let session = out.routed[0].session.clone();
                                        touched
                                            .lock()
                                            .unwrap()
                                            .entry(session.id.to_string())
                                            .or_insert(session);
                                    }
                                }
                            });
                        }
                    });
                    for session in touched.into_inner().unwrap().values() {
                        writer::flush(&s.db, &s.sessions, session).unwrap();
                    }
                }
                start.elapsed()
            })
        });
        let sent = next.load(Ordering::Relaxed);
        let kept = stored(&s);
        assert_eq!(kept, sent, "{name}: {sent} events routed but {kept} stored");
        println!("router/{name}: {sent} events routed, {kept} stored, nothing lost");
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
