//! `nanoclaw run`: the daemon. Loads the channel plugins, takes their input through the
//! pairing check and the router, keeps agent containers running for sessions with work,
//! delivers what agents write, fires scheduled tasks, and shuts down cleanly on SIGINT or
//! SIGTERM.
//!
//! Input is durable before it is acknowledged: `on_inbound` returns only after the message is
//! in the session's inbound.db. Output is durable before it is sent: it sits in outbound.db
//! until a delivery outcome is recorded. So a stop at any moment loses nothing; the next
//! start recovers containers' claims and delivers what is left.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use jiff::tz::TimeZone;
use nanoclaw_plugin_api::abi::Capabilities;
use nanoclaw_plugin_api::kit::{Backoff, BackoffPolicy};
use tokio::sync::mpsc;

use crate::approvals::{self, ClickResult};
use crate::chat_requests;
use crate::config::secrets::SecretSource;
use crate::config::{self, Paths};
use crate::control::{self, Request, Response};
use crate::db::Db;
use crate::delivery::Delivery;
use crate::ids::{AgentGroupId, ChannelName, ChatAddress, PlatformId, SessionId};
use crate::model_proxy::{ModelProxy, ProxySettings};
use crate::pairing::{self, Intercept};
use crate::plugins::channels::PluginChannels;
use crate::plugins::services::{Click, Ingress, IngressSlot, Services};
use crate::plugins::{LoadOptions, PluginsConfig, registry};
use crate::questions::{self, Answer};
use crate::router::{ChannelCaps, Deletion, DirectReply, Inbound, RouteOutcome, Router};
use crate::sessions::writer::{Writer, WriterNotice};
use crate::sessions::{Session, SessionStatus, SessionStore, registry as sessions_registry};
use crate::supervisor::{Notice, Supervisor, SupervisorConfig};

/// How the daemon runs.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub plugins_config: PathBuf,
    pub supervisor: SupervisorConfig,
    /// Where the webhook server listens (started only if a plugin takes webhooks).
    pub webhook_listen: SocketAddr,
    /// How often running containers are checked and missed events caught up.
    pub sweep_interval: Duration,
    /// How long failed scheduled tasks wait before they run again.
    pub task_backoff: crate::scheduling::Backoff,
}

/// "typing…" is shown unconditionally this long after a message (the container may be
/// starting), then only while the agent works (its heartbeat is this fresh, or a model answer
/// is streaming through the proxy), and never longer than the longest turn.
const TYPING_GRACE: Duration = Duration::from_secs(15);
const TYPING_FRESH: Duration = Duration::from_secs(10);
const TYPING_EVERY: Duration = Duration::from_secs(4);
/// How long after a file event the daemon keeps looking for the commit behind it.
const RECHECK_MAX: Duration = Duration::from_millis(256);
/// Looks at one session that found nothing new are at least this far apart, however many
/// file events its agent makes.
const RECHECK_MIN_GAP: Duration = Duration::from_millis(5);
/// The longest wait before trying again to start a container that did not start.
const WAKE_RETRY_MAX: Duration = Duration::from_secs(30);
/// How often running containers are checked while sessions wait for a slot.
const CROWDED_CHECK: Duration = Duration::from_secs(2);
/// Session DB connections unused this long are closed.
const IDLE_CONNECTION: Duration = Duration::from_secs(120);

/// A chat waiting for an agent's answer.
#[derive(Debug, Clone)]
struct Typing {
    session: Session,
    thread: Option<String>,
    since: Instant,
}

/// Things the plugin threads hand to the daemon's async side.
enum Event {
    Routed(RouteOutcome),
    Replies(Vec<DirectReply>),
    /// A card was decided: answer the clicker, refresh the sessions of an agent that got a
    /// new destination, then release or drop the held messages.
    Decided {
        click: Click,
        text: String,
        wired: Option<AgentGroupId>,
    },
    /// A question card was answered: the answer is queued for this session.
    Answered(Session),
}

/// The synchronous entry for plugin input (called on plugin threads).
struct Core {
    db: Arc<Db>,
    router: Router,
    events: mpsc::UnboundedSender<Event>,
}

impl Ingress for Core {
    fn inbound(&self, message: Inbound) -> crate::Result<()> {
        // Only a message shaped like a pairing code costs a pairing check.
        let check = pairing::normalize(&message.text).is_some();
        let pairing = if check {
            self.db.write(|c| pairing::intercept(c, &message))?
        } else {
            Intercept::NotACode
        };
        match pairing {
            Intercept::Paired {
                user,
                chat,
                made_owner,
            } => {
                let text = if made_owner {
                    format!("Paired! {user} is now the owner of this NanoClaw.")
                } else {
                    format!("Paired! {user} is linked to this chat.")
                };
                let _ = self.events.send(Event::Replies(vec![DirectReply {
                    chat: chat.address(),
                    thread_id: None,
                    text,
                }]));
                return Ok(());
            }
            Intercept::Wrong { locked_out } => {
                // A guess at a code never reaches an agent: it may be a near miss of one.
                let text = if locked_out {
                    "Too many wrong pairing codes from you; try again in an hour."
                } else {
                    "That pairing code is not valid (or has expired)."
                };
                let _ = self.events.send(Event::Replies(vec![DirectReply {
                    chat: ChatAddress {
                        channel: message.channel.clone(),
                        platform_id: message.chat_id.clone(),
                    },
                    thread_id: message.thread_id.clone(),
                    text: text.to_string(),
                }]));
                return Ok(());
            }
            Intercept::NotACode => {}
        }
        let outcome = self.router.route(&message)?;
        let _ = self.events.send(Event::Routed(outcome));
        Ok(())
    }

    fn deleted(&self, deletion: Deletion) -> crate::Result<()> {
        let outcome = self.router.withdraw(&deletion)?;
        let _ = self.events.send(Event::Routed(outcome));
        Ok(())
    }

    fn action(&self, click: Click) -> crate::Result<()> {
        match questions::on_click(&self.db, &click)? {
            Answer::NotOurs => {}
            Answer::Answered(session) => {
                let _ = self.events.send(Event::Answered(*session));
                return Ok(());
            }
            Answer::Ignored(why) => {
                tracing::info!(reason = why, "question card click ignored");
                return Ok(());
            }
        }
        match approvals::on_click(&self.db, &click)? {
            ClickResult::Decided(a) => {
                let verb = if a.status == crate::store::approvals::ApprovalStatus::Approved {
                    "✅ Allowed"
                } else {
                    "🚫 Denied"
                };
                let who = a
                    .subject_user_id
                    .as_ref()
                    .map_or("the sender".to_string(), |u| u.to_string());
                let text = format!("{verb}: {who}.");
                let _ = self.events.send(Event::Decided {
                    click,
                    text,
                    wired: None,
                });
                return Ok(());
            }
            ClickResult::Ignored(why) => {
                tracing::info!(reason = why, "button click ignored");
                return Ok(());
            }
            ClickResult::NotOurs => {}
        }
        match crate::self_mod::on_click(&self.db, &click)? {
            crate::self_mod::ClickResult::Decided(r) => {
                let text = crate::self_mod::confirmation(&r);
                let _ = self.events.send(Event::Decided {
                    click,
                    text,
                    wired: None,
                });
                return Ok(());
            }
            crate::self_mod::ClickResult::Ignored(why) => {
                tracing::info!(reason = why, "button click ignored");
                return Ok(());
            }
            crate::self_mod::ClickResult::NotOurs => {}
        }
        match chat_requests::on_click(&self.db, &click)? {
            chat_requests::ClickResult::Decided(r) => {
                let text = self.db.read(|c| chat_requests::confirmation(c, &r))?;
                let wired = r.agent_group_id.clone();
                let _ = self.events.send(Event::Decided { click, text, wired });
            }
            chat_requests::ClickResult::Ignored(why) => {
                tracing::info!(reason = why, "button click ignored")
            }
            chat_requests::ClickResult::NotOurs => {
                tracing::info!(action = click.action_id, "button click nobody handles")
            }
        }
        Ok(())
    }
}

/// Retrying a container that did not start.
struct WakeRetry {
    backoff: Backoff,
    /// A retry is already waiting its turn.
    scheduled: bool,
}

/// The running daemon's shared state.
struct Daemon {
    db: Arc<Db>,
    sessions: Arc<SessionStore>,
    core: Arc<Core>,
    channels: PluginChannels,
    delivery: Delivery<PluginChannels>,
    supervisor: Arc<Supervisor>,
    writer: Arc<Writer>,
    tz: TimeZone,
    /// Sessions whose container did not start, and when to try again.
    failed_wakes: Mutex<HashMap<SessionId, WakeRetry>>,
    /// Sweeps so far: the second (one interval after start, plugins settled) releases what
    /// start-up used.
    sweeps: std::sync::atomic::AtomicU64,
    typing: Mutex<HashMap<ChatAddress, Typing>>,
    /// File events per session not yet looked at (see [`Daemon::outbound_event`]).
    outbound_events: Mutex<HashMap<SessionId, u64>>,
    /// A [`Daemon::relieve_crowding`] loop runs.
    crowding: std::sync::atomic::AtomicBool,
    /// Scheduled tasks changed outside the timer (a failure's backoff, an operator command):
    /// the timer looks at the next run again.
    task_plan: tokio::sync::Notify,
    /// How long failed scheduled tasks wait before they run again.
    task_backoff: crate::scheduling::Backoff,
    /// Agents' approved changes to themselves, carried out.
    self_mod: Arc<crate::self_mod::SelfMod>,
}

/// Runs the daemon until SIGINT or SIGTERM.
pub async fn run(paths: Paths, opts: RunOptions) -> anyhow::Result<()> {
    std::fs::create_dir_all(paths.home())
        .with_context(|| format!("create data dir {}", paths.home().display()))?;
    restrict_dir(paths.home());
    // First: one daemon per data dir (the control socket is the lock).
    let control = control::bind(&paths.control_socket())
        .with_context(|| format!("bind {}", paths.control_socket().display()))?;
    let db =
        Arc::new(Db::open(&paths.db()).with_context(|| format!("open {}", paths.db().display()))?);
    db.write(|c| crate::store::plugin_state::purge_expired(c, nanoclaw_schema::time::now_ms()))?;
    let sessions =
        Arc::new(SessionStore::new(paths.sessions()).with_owner(config::session_owner()));

    let plugins_config = PluginsConfig::load(&opts.plugins_config).with_context(|| {
        format!(
            "read plugin configuration {}",
            opts.plugins_config.display()
        )
    })?;
    let load_opts = LoadOptions::new(paths.home());
    let slot: IngressSlot = Arc::new(OnceLock::new());
    let factory = Services::factory(db.clone(), slot.clone());
    let mut plugins = registry::load(&plugins_config, &load_opts, &factory).await;
    let caps: HashMap<ChannelName, ChannelCaps> = plugins
        .handles()
        .iter()
        .filter_map(|h| {
            let ch = ChannelName::parse(h.instance()).ok()?;
            Some((
                ch,
                ChannelCaps {
                    threads: h.capabilities().contains(Capabilities::THREADS),
                },
            ))
        })
        .collect();
    let (events_tx, mut events_rx) = mpsc::unbounded_channel();
    let core = Arc::new(Core {
        db: db.clone(),
        router: Router::new(db.clone(), sessions.clone(), caps),
        events: events_tx,
    });
    let _ = slot.set(core.clone());

    plugins.start_all(&load_opts).await;
    print!("{}", registry::render_report(plugins.report()));
    let failures = plugins.required_failures();
    if !failures.is_empty() {
        let names: Vec<_> = failures.iter().map(|r| r.instance.clone()).collect();
        plugins.teardown_all().await;
        bail!(
            "required plugin(s) failed: {}; see the errors above",
            names.join(", ")
        );
    }
    let plugins = Arc::new(plugins);
    let channels = PluginChannels::new(plugins.clone());
    let tz = TimeZone::get(&opts.supervisor.time_zone).unwrap_or(TimeZone::UTC);

    let (exits_tx, mut exits_rx) = mpsc::channel(64);
    let (notices_tx, mut notices_rx) = mpsc::unbounded_channel();
    let proxy_settings = ProxySettings::load(&SecretSource::new(paths.home()))
        .context("the model API settings (environment or data/.env) are invalid")?;
    let proxy = Arc::new(ModelProxy::new(
        proxy_settings,
        paths.model_proxy(),
        db.clone(),
    ));
    proxy.remove_stale();
    let supervisor = Supervisor::new(
        opts.supervisor.clone(),
        paths.clone(),
        db.clone(),
        sessions.clone(),
        exits_tx,
        notices_tx,
        proxy,
    )
    .await?;
    let (writer_tx, mut writer_rx) = mpsc::unbounded_channel();
    let writer = Writer::new(db.clone(), sessions.clone(), writer_tx);
    let daemon = Arc::new(Daemon {
        db: db.clone(),
        sessions: sessions.clone(),
        core: core.clone(),
        channels: channels.clone(),
        delivery: Delivery::new(
            db.clone(),
            sessions.clone(),
            Arc::new(channels.clone()),
            tz.clone(),
        )
        .with_paths(paths.clone())
        .with_task_backoff(opts.task_backoff),
        supervisor: supervisor.clone(),
        writer,
        tz,
        failed_wakes: Mutex::new(HashMap::new()),
        sweeps: std::sync::atomic::AtomicU64::new(0),
        typing: Mutex::new(HashMap::new()),
        outbound_events: Mutex::new(HashMap::new()),
        crowding: Default::default(),
        task_plan: tokio::sync::Notify::new(),
        task_backoff: opts.task_backoff,
        self_mod: Arc::new(crate::self_mod::SelfMod::new(paths.clone())),
    });

    // Catch up on what the previous run left: claims to recover, work to wake, replies to send.
    let scan = supervisor.startup_scan()?;
    for id in &scan.queued {
        if let Ok(Some(s)) = db.read(|c| sessions_registry::get(c, id)) {
            daemon.writer.schedule(s.clone());
            daemon.wake(s);
        }
    }
    for (session, at) in scan.work {
        daemon.wake_at(session, at);
    }
    for s in scan.undelivered {
        daemon.drain(s.id);
    }
    crate::footprint::release_idle_memory();
    daemon.settle_approvals();
    // Agents' requests whose card was never sent (a stop in between) are asked again.
    match crate::self_mod::without_card(&db) {
        Ok(ids) => ids.into_iter().for_each(|id| daemon.ask_agent_request(id)),
        Err(e) => tracing::warn!(error = %e, "agent requests without a card not looked at"),
    }

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    if plugins
        .handles()
        .iter()
        .any(|h| h.capabilities().contains(Capabilities::WEBHOOK))
    {
        let mut stop = stop_rx.clone();
        let addr = opts.webhook_listen;
        let channels = channels.clone();
        tokio::spawn(async move {
            let shutdown = async move {
                let _ = stop.wait_for(|s| *s).await;
            };
            if let Err(e) =
                crate::webhooks::serve(addr, channels, crate::webhooks::Limits::default(), shutdown)
                    .await
            {
                tracing::error!(%addr, error = %e, "webhook server stopped");
            }
        });
    }
    tokio::spawn(control::serve(control, {
        let daemon = daemon.clone();
        move |req| {
            let daemon = daemon.clone();
            async move { daemon.control(req).await }
        }
    }));

    let mut sweep = tokio::time::interval(opts.sweep_interval);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut typing = tokio::time::interval(TYPING_EVERY);
    let mut next_task = daemon.next_task_wakeup();
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tracing::info!(data = %paths.home().display(), "nanoclaw is running");
    println!(
        "nanoclaw is running (data in {}); stop with Ctrl-C",
        paths.home().display()
    );
    loop {
        tokio::select! {
            Some(event) = events_rx.recv() => daemon.on_event(event),
            Some(notice) = notices_rx.recv() => daemon.on_notice(notice),
            Some(notice) = writer_rx.recv() => daemon.on_writer_notice(notice),
            Some(exit) = exits_rx.recv() => {
                let d = daemon.clone();
                tokio::spawn(async move {
                    match d.supervisor.on_exit(&exit).await {
                        Ok(wake) => {
                            for (session, at) in wake {
                                d.wake_at(session, at);
                            }
                        }
                        Err(e) => tracing::error!(session = exit.session_id, error = %e, "after container exit"),
                    }
                });
            }
            _ = sweep.tick() => daemon.sweep(),
            _ = typing.tick() => daemon.refresh_typing(),
            _ = tokio::time::sleep_until(next_task.into()) => {
                daemon.fire_tasks();
                next_task = daemon.next_task_wakeup();
            }
            _ = daemon.task_plan.notified() => next_task = daemon.next_task_wakeup(),
            _ = tokio::signal::ctrl_c() => break,
            _ = sigterm.recv() => break,
        }
    }

    println!("shutting down…");
    tracing::info!("shutting down: plugins first (no new input), then containers");
    let _ = stop_tx.send(true);
    plugins.teardown_all().await;
    supervisor.shutdown().await;
    let _ = std::fs::remove_file(paths.control_socket());
    tracing::info!("stopped cleanly");
    Ok(())
}

impl Daemon {
    fn on_event(self: &Arc<Self>, event: Event) {
        match event {
            Event::Routed(outcome) => self.after_route(outcome),
            Event::Replies(replies) => self.send_replies(replies),
            Event::Decided { click, text, wired } => {
                let chat = ChatAddress {
                    channel: click.channel.clone(),
                    platform_id: click.chat_id.clone(),
                };
                self.send_replies(vec![DirectReply {
                    chat,
                    thread_id: click.thread_id.clone(),
                    text,
                }]);
                match wired {
                    Some(agent) => {
                        let d = self.clone();
                        tokio::spawn(async move {
                            let (db, sessions) = (d.db.clone(), d.sessions.clone());
                            let refreshed = tokio::task::spawn_blocking(move || {
                                sessions.refresh_agent(&db, &agent)
                            })
                            .await;
                            if let Ok(Err(e)) = refreshed {
                                tracing::warn!(error = %e, "sessions of a newly wired agent not refreshed now; they are before their next wake");
                            }
                            d.settle_approvals();
                        });
                    }
                    None => self.settle_approvals(),
                }
            }
            Event::Answered(session) => {
                self.writer.schedule(session.clone());
                self.wake(session);
            }
        }
    }

    /// Acts on what routing asked for: write the queued messages into their sessions, wake
    /// agents, ask approvers, answer the sender.
    fn after_route(self: &Arc<Self>, outcome: RouteOutcome) {
        for r in outcome.routed.iter().filter(|r| r.queued) {
            self.writer.schedule(r.session.clone());
        }
        for s in &outcome.to_flush {
            self.writer.schedule(s.clone());
        }
        for r in outcome.routed.iter().filter(|r| r.trigger) {
            self.wake(r.session.clone());
            if let Some(chat) = &r.session.messaging_group_id
                && let Ok(Some(mg)) = self
                    .db
                    .read(|c| crate::store::messaging_groups::get(c, chat))
            {
                self.start_typing(mg.address(), &r.session);
            }
        }
        for held in outcome.chat_held.into_iter().filter(|h| h.new_request) {
            let d = self.clone();
            tokio::spawn(async move {
                if let Err(e) = chat_requests::ask(&d.db, &d.delivery, &d.channels, &held).await {
                    tracing::error!(request = %held.request, error = %e, "could not ask about a new group chat");
                }
            });
        }
        for held in outcome.held.into_iter().filter(|h| h.new_request) {
            let d = self.clone();
            tokio::spawn(async move {
                if let Err(e) = approvals::ask(&d.db, &d.delivery, &d.channels, &held).await {
                    tracing::error!(approval = %held.approval, error = %e, "could not ask for approval");
                }
            });
        }
        self.send_replies(outcome.replies);
    }

    fn send_replies(self: &Arc<Self>, replies: Vec<DirectReply>) {
        for reply in replies {
            let d = self.clone();
            tokio::spawn(async move {
                if let Err(e) = d
                    .delivery
                    .send_direct(&reply.chat, reply.thread_id.as_deref(), &reply.text, &[])
                    .await
                {
                    tracing::warn!(chat = %reply.chat, error = %e, "reply from the host not delivered");
                }
            });
        }
    }

    fn wake(self: &Arc<Self>, session: Session) {
        let d = self.clone();
        tokio::spawn(async move {
            let woken = d.supervisor.wake(&session).await;
            let mut failed = d.failed_wakes.lock().unwrap_or_else(|p| p.into_inner());
            if woken.is_ok() {
                failed.remove(&session.id);
                return;
            }
            // Try again soon (the engine may be restarting, the image being built), backing
            // off to the sweep's pace; one retry at a time per session.
            let retry = failed
                .entry(session.id.clone())
                .or_insert_with(|| WakeRetry {
                    backoff: BackoffPolicy::exponential(Duration::from_secs(1), WAKE_RETRY_MAX)
                        .start(),
                    scheduled: false,
                });
            if retry.scheduled {
                return;
            }
            retry.scheduled = true;
            let delay = retry.backoff.next_delay().unwrap_or(WAKE_RETRY_MAX);
            drop(failed);
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let current = d.db.read(|c| sessions_registry::get(c, &session.id));
                let mut failed = d.failed_wakes.lock().unwrap_or_else(|p| p.into_inner());
                let session = match current {
                    Ok(Some(s)) if s.status == SessionStatus::Active => s,
                    // Closed or gone meanwhile: nothing to start.
                    Ok(_) => {
                        failed.remove(&session.id);
                        return;
                    }
                    // The central DB failed: try with what we knew.
                    Err(e) => {
                        tracing::warn!(session = %session.id, error = %e, "session not re-read before retrying its container");
                        session
                    }
                };
                if let Some(r) = failed.get_mut(&session.id) {
                    r.scheduled = false;
                }
                drop(failed);
                d.wake(session);
            });
        });
    }

    /// Wakes now, or at `at` (a backoff or a delayed message).
    fn wake_at(self: &Arc<Self>, session: Session, at: Option<Instant>) {
        match at {
            None => self.wake(session),
            Some(at) => {
                let d = self.clone();
                tokio::spawn(async move {
                    tokio::time::sleep_until(at.into()).await;
                    d.wake(session);
                });
            }
        }
    }

    fn on_writer_notice(self: &Arc<Self>, notice: WriterNotice) {
        match notice {
            WriterNotice::Stuck {
                session,
                locked_for,
            } => {
                let d = self.clone();
                tokio::spawn(async move {
                    let why = format!(
                        "its inbound.db stayed locked for {locked_for:?}: the container holds it"
                    );
                    d.supervisor.kill(&session, &why).await;
                });
            }
        }
    }

    fn on_notice(self: &Arc<Self>, notice: Notice) {
        match notice {
            Notice::Outbound(id) => self.outbound_event(id),
            Notice::Crowded => self.relieve_crowding(),
            Notice::GaveUp {
                session,
                message_id,
            } => {
                let d = self.clone();
                tokio::spawn(async move {
                    d.task_gave_up(&session, &message_id).await;
                    d.tell_gave_up(&session, &message_id).await;
                });
            }
        }
    }

    /// While sessions wait for a container slot, checks the running containers every couple
    /// of seconds, so one that has gone idle gives its slot up soon (one loop at a time).
    fn relieve_crowding(self: &Arc<Self>) {
        if self
            .crowding
            .swap(true, std::sync::atomic::Ordering::AcqRel)
        {
            return;
        }
        let d = self.clone();
        tokio::spawn(async move {
            while d.supervisor.waiting_count() > 0 {
                d.supervisor.check_running().await;
                tokio::time::sleep(CROWDED_CHECK).await;
            }
            d.crowding
                .store(false, std::sync::atomic::Ordering::Release);
            // A session queued while the loop was ending must not wait for the sweep.
            if d.supervisor.waiting_count() > 0 {
                d.relieve_crowding();
            }
        });
    }

    /// Delivers what a session's agent wrote.
    fn drain(self: &Arc<Self>, id: SessionId) {
        let d = self.clone();
        tokio::spawn(async move {
            d.drain_now(&id).await;
        });
    }

    /// A file event on a session's outbound.db. The commit that caused it may become
    /// visible a moment after the event, so the session is looked at again, sooner then
    /// later, until a change shows up; events during a look trigger another look at once.
    fn outbound_event(self: &Arc<Self>, id: SessionId) {
        let first = {
            let mut events = self
                .outbound_events
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let n = events.entry(id.clone()).or_insert(0);
            *n += 1;
            *n == 1
        };
        if !first {
            return;
        }
        let d = self.clone();
        tokio::spawn(async move {
            let mut delay = Duration::ZERO;
            loop {
                tokio::time::sleep(delay).await;
                let seen = d
                    .outbound_events
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(&id)
                    .copied();
                let changed = d.drain_now(&id).await;
                let mut events = d.outbound_events.lock().unwrap_or_else(|p| p.into_inner());
                if events.get(&id).copied() != seen {
                    // More events came during the look. Look again at once if that look found
                    // something, else after a short gap (an agent touching files in a loop
                    // must not keep a worker busy).
                    delay = if changed {
                        Duration::ZERO
                    } else {
                        RECHECK_MIN_GAP
                    };
                    continue;
                }
                if changed || delay >= RECHECK_MAX {
                    events.remove(&id);
                    return;
                }
                delay = (delay * 2).max(Duration::from_millis(1));
            }
        });
    }

    /// One delivery pass; true if the container had committed something new.
    async fn drain_now(self: &Arc<Self>, id: &SessionId) -> bool {
        self.supervisor.take_notice(id);
        let session = match self.db.read(|c| sessions_registry::get(c, id)) {
            Ok(Some(s)) => s,
            _ => return false,
        };
        match self.delivery.drain(&session).await {
            Ok(out) => {
                if out.tasks_changed {
                    self.tasks_changed(session.clone());
                }
                for s in out.flush {
                    self.writer.schedule(s);
                }
                for request in out.agent_requests {
                    self.ask_agent_request(request);
                }
                for target in out.wake {
                    self.wake(target);
                }
                for chat in out.posted_to {
                    self.typing
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(&chat);
                }
                if let Some(at) = out.again_at {
                    let d = self.clone();
                    let id = id.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep_until(at.into()).await;
                        d.drain(id);
                    });
                }
                out.changed
            }
            Err(e) => {
                tracing::warn!(session = %session.id, error = %e, "delivery pass failed");
                false
            }
        }
    }

    /// A session's scheduled tasks changed: refresh the agent's task list, and let the timer
    /// see the new next run.
    fn tasks_changed(&self, session: Session) {
        self.task_plan.notify_one();
        let (db, store) = (self.db.clone(), self.sessions.clone());
        tokio::task::spawn_blocking(move || {
            if let Err(e) = crate::scheduling::project(&db, &store, &session) {
                tracing::warn!(session = %session.id, error = %e, "task list not refreshed now");
            }
        });
    }

    /// Crash recovery gave up on a message: if it was a task firing, that firing failed.
    async fn task_gave_up(self: &Arc<Self>, session: &SessionId, message_id: &str) {
        let Ok(Some(s)) = self.db.read(|c| sessions_registry::get(c, session)) else {
            return;
        };
        let (d, s2, id) = (self.clone(), s.clone(), message_id.to_string());
        let recorded = tokio::task::spawn_blocking(move || {
            let ids = [id.clone()];
            let firing = d.sessions.with_inbound(&s2, |c| {
                crate::sessions::inbound::task_firings_among(c, &ids)
            })?;
            if firing.is_empty() {
                return Ok(None);
            }
            crate::scheduling::record_outcome(
                &d.db,
                &s2.id,
                &id,
                &crate::scheduling::FiringOutcome::Failed {
                    error: "the agent's container kept stopping while it ran".into(),
                },
                jiff::Timestamp::now(),
                &d.task_backoff,
            )
        })
        .await;
        match recorded {
            Ok(Ok(Some(r))) => {
                if r.queued_note() {
                    self.writer.schedule(s.clone());
                    self.wake(s.clone());
                }
                self.tasks_changed(s);
            }
            Ok(Ok(None)) => {}
            Ok(Err(e)) => {
                tracing::error!(session = %session, message = message_id, error = %e,
                    "outcome of a task firing not recorded")
            }
            Err(e) => tracing::error!(error = %e, "task outcome recording panicked"),
        }
    }

    /// Tells a chat its message could not be handled. The address is the message's own
    /// (from the host's inbound.db), and only used if the session's agent may post there.
    async fn tell_gave_up(&self, session: &SessionId, message_id: &str) {
        let Ok(Some(s)) = self.db.read(|c| sessions_registry::get(c, session)) else {
            return;
        };
        let (sessions, s2, id) = (self.sessions.clone(), s.clone(), message_id.to_string());
        let address = tokio::task::spawn_blocking(move || {
            sessions.with_inbound(&s2, |c| crate::sessions::inbound::reply_address(c, &id))
        })
        .await;
        let Ok(Ok(Some(addr))) = address else { return };
        let (Some(channel), Some(platform_id)) = (
            addr.channel_type
                .as_deref()
                .and_then(|c| ChannelName::parse(c).ok()),
            addr.platform_id
                .as_deref()
                .and_then(|p| PlatformId::parse(p).ok()),
        ) else {
            return;
        };
        let chat = ChatAddress {
            channel,
            platform_id,
        };
        match self
            .db
            .read(|c| crate::access::may_post_to_chat(c, &s, &chat))
        {
            Ok(Ok(_)) => {}
            Ok(Err(denied)) => {
                tracing::warn!(session = %s.id, chat = %chat, reason = denied.0, "failure notice not sent");
                return;
            }
            Err(e) => {
                tracing::warn!(session = %s.id, error = %e, "failure notice not sent");
                return;
            }
        }
        let text = "Sorry, I could not handle your message: the agent failed several times. Please try again later.";
        if let Err(e) = self
            .delivery
            .send_direct(&chat, addr.thread_id.as_deref(), text, &[])
            .await
        {
            tracing::warn!(chat = %chat, error = %e, "could not tell the sender");
        }
    }

    fn start_typing(&self, chat: ChatAddress, session: &Session) {
        let thread = session.thread_id.clone();
        let entry = Typing {
            session: session.clone(),
            thread: thread.clone(),
            since: Instant::now(),
        };
        let fresh = self
            .typing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(chat.clone(), entry)
            .is_none();
        if fresh {
            let channels = self.channels.clone();
            tokio::spawn(async move {
                channels
                    .set_typing(&chat.channel, &chat.platform_id, thread.as_deref())
                    .await
            });
        }
    }

    /// Keeps "typing…" up in chats still waiting for an answer while the agent works.
    fn refresh_typing(&self) {
        let waiting: Vec<(ChatAddress, Typing)> = {
            let mut typing = self.typing.lock().unwrap_or_else(|p| p.into_inner());
            let longest = self.supervisor.config().max_turn;
            typing.retain(|_, t| t.since.elapsed() < longest);
            typing.iter().map(|(c, t)| (c.clone(), t.clone())).collect()
        };
        for (chat, t) in waiting {
            if t.since.elapsed() > TYPING_GRACE && !self.agent_alive(&t.session) {
                continue;
            }
            let channels = self.channels.clone();
            tokio::spawn(async move {
                channels
                    .set_typing(&chat.channel, &chat.platform_id, t.thread.as_deref())
                    .await
            });
        }
    }

    /// The agent touched its heartbeat recently.
    fn agent_alive(&self, session: &Session) -> bool {
        let beat = self
            .sessions
            .session_dir(session)
            .ok()
            .and_then(|d| d.heartbeat())
            .and_then(|t| t.elapsed().ok());
        beat.is_some_and(|age| age < TYPING_FRESH) || self.supervisor.model_busy(&session.id)
    }

    fn sweep(self: &Arc<Self>) {
        let d = self.clone();
        tokio::spawn(async move {
            d.supervisor.check_running().await;
            let evicted = d.sessions.evict_idle(IDLE_CONNECTION);
            let settled = d.sweeps.fetch_add(1, std::sync::atomic::Ordering::Relaxed) == 1;
            if evicted > 0 || settled {
                crate::footprint::release_idle_memory();
            }
            // Fallback for missed file events: look at every running session's outbound.
            for s in d.supervisor.running_sessions() {
                d.drain(s.id);
            }
        });
    }

    /// Sends the approval card of an agent's request to change itself.
    fn ask_agent_request(self: &Arc<Self>, id: crate::ids::AgentRequestId) {
        let d = self.clone();
        tokio::spawn(async move {
            match crate::self_mod::ask(&d.db, &d.delivery, &d.channels, &id).await {
                Ok(Some(told)) => d.writer.schedule(told),
                Ok(None) => {}
                Err(e) => {
                    tracing::error!(request = %id, error = %e, "could not ask about an agent request")
                }
            }
        });
    }

    /// Tells agents about their rejected requests and carries out approved ones (each in its
    /// own task, one at a time per agent; the next one is looked at when it ends).
    fn settle_agent_requests(self: &Arc<Self>) {
        let (told, claims) = match self.self_mod.due(&self.db) {
            Ok(due) => due,
            Err(e) => {
                tracing::error!(error = %e, "agent requests not settled now");
                return;
            }
        };
        for s in told {
            self.writer.schedule(s.clone());
            self.wake(s);
        }
        for claim in claims {
            let d = self.clone();
            tokio::spawn(async move {
                let id = claim.request.id.clone();
                match d.self_mod.carry_out(&d.db, &d.supervisor, claim).await {
                    Ok(Some(s)) => {
                        d.writer.schedule(s.clone());
                        d.wake(s);
                    }
                    Ok(None) => {}
                    Err(e) => {
                        tracing::error!(request = %id, error = %e, "agent request not carried out; tried again later");
                        tokio::time::sleep(Duration::from_secs(30)).await;
                    }
                }
                d.settle_agent_requests();
            });
        }
    }

    /// Releases or drops the messages held for decided sender approvals and new group chats,
    /// and settles decided agent requests.
    fn settle_approvals(self: &Arc<Self>) {
        self.settle_agent_requests();
        let settled = [
            approvals::settle(&self.db, &self.core.router),
            chat_requests::settle(&self.db, &self.core.router),
        ];
        for outcomes in settled {
            match outcomes {
                Ok(outcomes) => {
                    for o in outcomes {
                        self.after_route(o);
                    }
                }
                Err(e) => tracing::error!(error = %e, "could not release held messages"),
            }
        }
    }

    fn next_task_wakeup(&self) -> Instant {
        // Re-check at least every 15 s: agents add tasks at any time.
        let cap = Instant::now() + Duration::from_secs(15);
        match self.db.read(crate::scheduling::next_wakeup) {
            Ok(Some(t)) => {
                let wait: Duration = t
                    .duration_since(jiff::Timestamp::now())
                    .try_into()
                    .unwrap_or(Duration::ZERO);
                cap.min(Instant::now() + wait)
            }
            _ => cap,
        }
    }

    /// Fires due tasks (central DB only), then writes them into their sessions, refreshes
    /// their task lists and wakes them, each session on its own.
    fn fire_tasks(self: &Arc<Self>) {
        match crate::scheduling::fire_due(&self.db, jiff::Timestamp::now(), &self.tz) {
            Ok(sessions) => {
                for s in sessions {
                    self.writer.schedule(s.clone());
                    let (db, store, s2) = (self.db.clone(), self.sessions.clone(), s.clone());
                    tokio::task::spawn_blocking(move || {
                        if let Err(e) = crate::scheduling::project(&db, &store, &s2) {
                            tracing::warn!(session = %s2.id, error = %e, "task list not refreshed now");
                        }
                    });
                    self.wake(s);
                }
            }
            Err(e) => tracing::error!(error = %e, "scheduled tasks"),
        }
        // Question cards run out on the same clock.
        match crate::questions::expire_due(&self.db, jiff::Timestamp::now()) {
            Ok(sessions) => {
                for s in sessions {
                    self.writer.schedule(s.clone());
                    self.wake(s);
                }
            }
            Err(e) => tracing::error!(error = %e, "question timeouts"),
        }
    }

    async fn control(self: Arc<Self>, req: Request) -> Response {
        match req {
            Request::Wake { session } => {
                match self.db.read(|c| sessions_registry::get(c, &session)) {
                    Ok(Some(s)) => {
                        // Messages an operator command queued go in first.
                        self.writer.schedule(s.clone());
                        self.wake(s);
                        Response::ok(None)
                    }
                    Ok(None) => Response::error(format!("no session {session}")),
                    Err(e) => Response::error(e),
                }
            }
            Request::Approvals => {
                self.settle_approvals();
                Response::ok(None)
            }
            Request::Tasks { session } => {
                match self.db.read(|c| sessions_registry::get(c, &session)) {
                    Ok(Some(s)) => {
                        self.tasks_changed(s);
                        Response::ok(None)
                    }
                    Ok(None) => Response::error(format!("no session {session}")),
                    Err(e) => Response::error(e),
                }
            }
            Request::UserDm { user } => {
                match crate::access::ensure_user_dm(&self.db, &self.channels, &user).await {
                    Ok(Some(chat)) => {
                        Response::ok(Some(serde_json::json!({ "platform_id": chat.platform_id })))
                    }
                    Ok(None) => Response::error(format!(
                        "{user} cannot be reached by DM: the user must be known and the {} \
                         plugin loaded and started (see `nanoclaw plugins list`)",
                        user.channel()
                    )),
                    Err(e) => Response::error(e),
                }
            }
            Request::Health => {
                let mut rows = Vec::new();
                for h in self.channels.plugins().handles() {
                    let health = h.health().await;
                    rows.push(serde_json::json!({
                        "instance": h.instance(),
                        "channel_type": h.channel_type(),
                        "status": health.status.to_string(),
                        "detail": health.detail.as_str(),
                        "last_ingest_ms": health.last_ingest_ms,
                        "degraded": h.is_degraded(),
                    }));
                }
                Response::ok(Some(
                    serde_json::json!({ "plugins": rows, "running_containers": self.supervisor.running_sessions().len() }),
                ))
            }
        }
    }
}

/// The data dir holds secrets and the database: owner only.
fn restrict_dir(dir: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(dir) {
        let mode = meta.permissions().mode();
        if mode & 0o077 != 0 {
            let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode & 0o700));
        }
    }
}
