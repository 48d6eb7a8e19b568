//! Async channels: the plugin writes `async fn`s, the kit adapts them to the synchronous ABI.
//!
//! [`Hosted<C>`] implements [`Channel`] for any [`AsyncChannel`] `C`. It owns the plugin's
//! tokio runtime (built in `create`), runs `C::start` and then spawns `C::run`, turns each
//! host call into a `block_on` that a teardown cancels, and at teardown signals stop, gives
//! the tasks [`AsyncChannel::SHUTDOWN_GRACE`] to finish, calls [`AsyncChannel::shutdown`]
//! and shuts the runtime down. Dropping a `Hosted` without teardown does the same. Panics are
//! still caught by [`export_plugin!`](crate::export_plugin), which wraps every entry point.
//!
//! A host call still blocked inside the host when the runtime shuts down (a blocking thread
//! of the runtime's pool) cannot be interrupted; its thread ends when the host returns.

use std::future::Future;
use std::ops::Deref;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::runtime::{Handle, Runtime};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{Channel, ChannelInfo, Context, HealthCell, Host, Secret, redact_all};
use crate::abi::{
    Health, HealthStatus, LogLevel, OutboundMessage, PluginError, WebhookRequest, WebhookResponse,
};

/// The plugin is stopping (teardown): unwind without recording anything more.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the channel is stopping")]
pub struct Stopped;

/// Tells tasks that the channel is stopping. Cheap to clone.
#[derive(Debug, Clone)]
pub struct StopSignal {
    rx: watch::Receiver<bool>,
}

impl StopSignal {
    /// A signal that never fires (tests, tools).
    pub fn never() -> Self {
        let (tx, rx) = watch::channel(false);
        // Keep the sender alive forever so the signal never reads as "closed".
        std::mem::forget(tx);
        Self { rx }
    }

    /// True once stop was signalled (or the lifecycle is gone).
    pub fn is_stopped(&self) -> bool {
        *self.rx.borrow() || self.rx.has_changed().is_err()
    }

    /// Completes when stop is signalled.
    pub async fn stopped(&self) {
        let mut rx = self.rx.clone();
        let _ = rx.wait_for(|stopped| *stopped).await;
    }

    /// Runs `future` unless stop comes first; then the future is dropped (an in-flight
    /// request is cancelled).
    pub async fn run<F: Future>(&self, future: F) -> Result<F::Output, Stopped> {
        if self.is_stopped() {
            return Err(Stopped);
        }
        tokio::select! {
            biased;
            () = self.stopped() => Err(Stopped),
            value = future => Ok(value),
        }
    }

    /// Sleeps for `delay` unless stop comes first.
    pub async fn sleep(&self, delay: Duration) -> Result<(), Stopped> {
        self.run(tokio::time::sleep(delay)).await
    }
}

/// What an [`AsyncChannel`] gets from the kit: the runtime, the stop signal, the health
/// cell, the host, task tracking and a log that redacts the plugin's secrets. Cheap to clone.
#[derive(Clone)]
pub struct Lifecycle {
    inner: Arc<LifeInner>,
}

struct LifeInner {
    handle: Handle,
    stop_tx: watch::Sender<bool>,
    stop: StopSignal,
    health: HealthCell,
    host: Host,
    log_target: String,
    secrets: Mutex<Vec<Secret>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Lifecycle {
    fn new(handle: Handle, host: Host, log_target: String) -> Self {
        let (stop_tx, rx) = watch::channel(false);
        Self {
            inner: Arc::new(LifeInner {
                handle,
                stop_tx,
                stop: StopSignal { rx },
                health: HealthCell::new(),
                host,
                log_target,
                secrets: Mutex::default(),
                tasks: Mutex::default(),
            }),
        }
    }

    /// A lifecycle on an existing runtime, for tests of code that takes a `&Lifecycle`
    /// without a whole [`Hosted`] channel. Call [`Lifecycle::stop`] to end its tasks.
    pub fn detached(handle: Handle, host: Host, log_target: &str) -> Self {
        Self::new(handle, host, log_target.to_owned())
    }

    /// The runtime's handle.
    pub fn handle(&self) -> &Handle {
        &self.inner.handle
    }

    /// The host's services.
    pub fn host(&self) -> &Host {
        &self.inner.host
    }

    /// The channel's health, reported by `health`.
    pub fn health(&self) -> &HealthCell {
        &self.inner.health
    }

    /// Fires at teardown.
    pub fn stop_signal(&self) -> StopSignal {
        self.inner.stop.clone()
    }

    /// True once teardown began.
    pub fn is_stopped(&self) -> bool {
        self.inner.stop.is_stopped()
    }

    /// Signals stop (teardown does this; for [`Lifecycle::detached`] users).
    pub fn stop(&self) {
        self.inner.stop_tx.send_replace(true);
    }

    /// From now on, [`Lifecycle::log`] replaces `secret` with `<redacted>`.
    pub fn add_secret(&self, secret: &Secret) {
        lock(&self.inner.secrets).push(secret.clone());
    }

    /// `text` with the registered secrets redacted.
    pub fn redact(&self, text: &str) -> String {
        let secrets = lock(&self.inner.secrets);
        let refs: Vec<&Secret> = secrets.iter().collect();
        redact_all(text, &refs)
    }

    /// Writes a line to this instance's host log (exact attribution, even from the plugin's
    /// own threads), with registered secrets redacted.
    pub fn log(&self, level: LogLevel, message: impl AsRef<str>) {
        let line = self.redact(message.as_ref());
        self.inner.host.log(level, &self.inner.log_target, &line);
    }

    /// [`Lifecycle::log`] at `ERROR`.
    pub fn error(&self, message: impl AsRef<str>) {
        self.log(LogLevel::ERROR, message);
    }

    /// [`Lifecycle::log`] at `WARN`.
    pub fn warn(&self, message: impl AsRef<str>) {
        self.log(LogLevel::WARN, message);
    }

    /// [`Lifecycle::log`] at `INFO`.
    pub fn info(&self, message: impl AsRef<str>) {
        self.log(LogLevel::INFO, message);
    }

    /// [`Lifecycle::log`] at `DEBUG`.
    pub fn debug(&self, message: impl AsRef<str>) {
        self.log(LogLevel::DEBUG, message);
    }

    /// Spawns a task that teardown waits for (up to the grace period) and then ends. Tasks
    /// spawned after stop are dropped unstarted.
    pub fn spawn<F>(&self, future: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        if self.is_stopped() {
            return;
        }
        let task = self.inner.handle.spawn(future);
        let mut tasks = lock(&self.inner.tasks);
        tasks.retain(|t| !t.is_finished());
        tasks.push(task);
    }

    /// Runs a blocking host call (state store, `on_inbound`) on the runtime's blocking pool,
    /// so it never stalls the async workers. `Err(Stopped)` at teardown; the call itself may
    /// still finish in the background.
    pub async fn host_call<T, F>(&self, call: F) -> Result<Result<T, PluginError>, Stopped>
    where
        T: Send + 'static,
        F: FnOnce(&Host) -> Result<T, PluginError> + Send + 'static,
    {
        let host = self.inner.host.clone();
        let joined = self
            .inner
            .stop
            .run(tokio::task::spawn_blocking(move || call(&host)))
            .await?;
        Ok(joined.unwrap_or_else(|e| Err(PluginError::other(format!("host call failed: {e}")))))
    }

    fn take_tasks(&self) -> Vec<JoinHandle<()>> {
        std::mem::take(&mut *lock(&self.inner.tasks))
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Plain data behind these locks: a panic elsewhere leaves it usable.
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// A channel written with `async fn`s. Wrap it as [`Hosted<C>`] to export it:
/// `export_plugin!(Hosted<MyChannel>)`.
///
/// The futures run on the plugin's runtime; host → plugin calls (`deliver`, `open_dm`,
/// `handle_webhook`, …) are still bounded by the host's call timeout, so they must finish
/// quickly. Methods may run concurrently.
pub trait AsyncChannel: Send + Sync + Sized + 'static {
    /// The static description (becomes the manifest).
    const INFO: ChannelInfo;
    /// Worker threads of the plugin's runtime (1–2).
    const WORKER_THREADS: usize = 1;
    /// How long teardown waits for `run` and spawned tasks to end before cancelling them.
    const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

    /// Parses and validates settings; no network (`nanoclaw plugins check` calls `create`
    /// without `start`). Runs inside the runtime's context, so tokio types can be built.
    fn create(ctx: Context, life: &Lifecycle) -> Result<Self, PluginError>;

    /// Connects (authenticate, fetch identity). An error fails the host's `start` call; a
    /// `NETWORK` error is retried by the host. Default: nothing.
    fn start(&self) -> impl Future<Output = Result<(), PluginError>> + Send {
        async { Ok(()) }
    }

    /// The receive loop, spawned after `start` succeeded. Return when `stop` fires (use
    /// [`StopSignal::run`] around awaits). Default: nothing to run.
    fn run(self: Arc<Self>, stop: StopSignal) -> impl Future<Output = ()> + Send {
        drop(stop);
        async {}
    }

    /// Turns the agent's message into the parts `deliver` sends, one platform message each;
    /// runs synchronously (no I/O). See [`Channel::render`]. Default:
    /// [`prepare_default`](super::prepare::prepare_default) with `INFO`'s markup and limit.
    fn render(&self, message: OutboundMessage) -> Result<Vec<OutboundMessage>, PluginError> {
        super::prepare::prepare_default(message, &Self::INFO)
    }

    /// Posts, edits or reacts with one part made by [`render`](Self::render), exactly as
    /// given; returns the platform message id.
    fn deliver(
        &self,
        message: OutboundMessage,
    ) -> impl Future<Output = Result<Option<String>, PluginError>> + Send;

    /// Shows a typing indicator once; the kit runs it in the background (the ABI call
    /// returns at once). Default: nothing.
    fn set_typing(
        &self,
        chat_id: &str,
        thread_id: Option<&str>,
    ) -> impl Future<Output = ()> + Send {
        let _ = (chat_id, thread_id);
        async {}
    }

    /// Resolves a DM chat id for a user handle. Default: `UNSUPPORTED`.
    fn open_dm(
        &self,
        user_handle: &str,
    ) -> impl Future<Output = Result<String, PluginError>> + Send {
        let _ = user_handle;
        async { Err(PluginError::unsupported("open_dm")) }
    }

    /// Answers a webhook request (verify its signature first). Default: 404.
    fn handle_webhook(
        &self,
        request: WebhookRequest,
    ) -> impl Future<Output = Result<WebhookResponse, PluginError>> + Send {
        drop(request);
        async { Ok(WebhookResponse::not_found()) }
    }

    /// Health: `current` is the [`Lifecycle::health`] cell's value. Default: it, unchanged.
    fn health(&self, current: Health) -> impl Future<Output = Health> + Send {
        async move { current }
    }

    /// Extension calls. Default: `UNSUPPORTED`.
    fn extension(
        &self,
        method: &str,
        args_json: &str,
    ) -> impl Future<Output = Result<String, PluginError>> + Send {
        let _ = args_json;
        let error = PluginError::unsupported(format_args!("extension method `{method}`"));
        async move { Err(error) }
    }

    /// Last words at teardown, after `run` and the tasks ended (or the grace period passed),
    /// before the runtime stops: close sessions, remove files. Default: nothing.
    fn shutdown(&self) -> impl Future<Output = ()> + Send {
        async {}
    }
}

/// An [`AsyncChannel`] as a [`Channel`]: owns the runtime and the lifecycle. Derefs to the
/// channel.
pub struct Hosted<C: AsyncChannel> {
    channel: Arc<C>,
    life: Lifecycle,
    runtime: Mutex<Option<Runtime>>,
    /// Held for the whole of `start`, so a concurrent second start waits and then sees `true`.
    started: Mutex<bool>,
    torn_down: AtomicBool,
}

impl<C: AsyncChannel> Hosted<C> {
    /// Like `create`, with a constructor other than [`AsyncChannel::create`] (tests that
    /// tune limits).
    pub fn create_with(
        ctx: Context,
        make: impl FnOnce(Context, &Lifecycle) -> Result<C, PluginError>,
    ) -> Result<Self, PluginError> {
        let runtime = super::runtime(C::INFO.channel_type, C::WORKER_THREADS).map_err(|e| {
            PluginError::other(format!(
                "cannot start the {} plugin's runtime: {e}",
                C::INFO.channel_type
            ))
        })?;
        let life = Lifecycle::new(
            runtime.handle().clone(),
            ctx.host.clone(),
            crate_of::<C>().to_owned(),
        );
        let made = {
            let _entered = runtime.enter();
            make(ctx, &life)
        };
        match made {
            Ok(channel) => Ok(Self {
                channel: Arc::new(channel),
                life,
                runtime: Mutex::new(Some(runtime)),
                started: Mutex::new(false),
                torn_down: AtomicBool::new(false),
            }),
            Err(e) => {
                // Whatever `make` may have spawned ends with the runtime.
                life.stop();
                runtime.shutdown_timeout(Duration::from_secs(1));
                Err(e)
            }
        }
    }

    /// The lifecycle (runtime handle, stop signal, health cell).
    pub fn lifecycle(&self) -> &Lifecycle {
        &self.life
    }

    /// The channel, shared with its tasks.
    pub fn channel(&self) -> &Arc<C> {
        &self.channel
    }

    fn torn_down_error() -> PluginError {
        PluginError::other(format!("the {} plugin was torn down", C::INFO.channel_type))
    }

    /// Runs a host → plugin call to completion; teardown cancels it.
    fn call<T>(
        &self,
        future: impl Future<Output = Result<T, PluginError>>,
    ) -> Result<T, PluginError> {
        if self.torn_down.load(Ordering::Acquire) {
            return Err(Self::torn_down_error());
        }
        let stop = self.life.stop_signal();
        self.life
            .handle()
            .block_on(async { stop.run(future).await })
            .unwrap_or_else(|Stopped| Err(Self::torn_down_error()))
    }

    /// Stop signal, grace period, `shutdown`, runtime shutdown. Idempotent.
    fn stop(&self) {
        if self.torn_down.swap(true, Ordering::AcqRel) {
            return;
        }
        self.life.stop();
        let runtime = lock(&self.runtime).take();
        if let Some(runtime) = runtime {
            let tasks = self.life.take_tasks();
            let channel = Arc::clone(&self.channel);
            runtime.block_on(async move {
                let deadline = tokio::time::Instant::now() + C::SHUTDOWN_GRACE;
                for task in tasks {
                    if tokio::time::timeout_at(deadline, task).await.is_err() {
                        break;
                    }
                }
                let _ = tokio::time::timeout(C::SHUTDOWN_GRACE, channel.shutdown()).await;
            });
            runtime.shutdown_timeout(Duration::from_secs(1));
        }
        self.life.health().down("stopped");
    }
}

impl<C: AsyncChannel> Deref for Hosted<C> {
    type Target = C;
    fn deref(&self) -> &C {
        &self.channel
    }
}

impl<C: AsyncChannel> Channel for Hosted<C> {
    const INFO: ChannelInfo = C::INFO;

    fn create(ctx: Context) -> Result<Self, PluginError> {
        Self::create_with(ctx, C::create)
    }

    fn log_crate() -> &'static str {
        crate_of::<C>()
    }

    fn start(&self) -> Result<(), PluginError> {
        let mut started = lock(&self.started);
        if *started {
            return Ok(());
        }
        self.call(self.channel.start())?;
        self.life.health().reset(HealthStatus::OK, "");
        let channel = Arc::clone(&self.channel);
        self.life.spawn(channel.run(self.life.stop_signal()));
        *started = true;
        Ok(())
    }

    fn render(&self, message: OutboundMessage) -> Result<Vec<OutboundMessage>, PluginError> {
        self.channel.render(message)
    }

    fn deliver(&self, message: OutboundMessage) -> Result<Option<String>, PluginError> {
        self.call(self.channel.deliver(message))
    }

    fn set_typing(&self, chat_id: &str, thread_id: Option<&str>) {
        if self.torn_down.load(Ordering::Acquire) {
            return;
        }
        let channel = Arc::clone(&self.channel);
        let (chat_id, thread_id) = (chat_id.to_owned(), thread_id.map(str::to_owned));
        self.life.spawn(async move {
            channel.set_typing(&chat_id, thread_id.as_deref()).await;
        });
    }

    fn open_dm(&self, user_handle: &str) -> Result<String, PluginError> {
        self.call(self.channel.open_dm(user_handle))
    }

    fn handle_webhook(&self, request: WebhookRequest) -> Result<WebhookResponse, PluginError> {
        self.call(self.channel.handle_webhook(request))
    }

    fn health(&self) -> Health {
        let current = self.life.health().get();
        if self.torn_down.load(Ordering::Acquire) {
            return current;
        }
        let fallback = current.clone();
        self.call(async { Ok(self.channel.health(current).await) })
            .unwrap_or(fallback)
    }

    fn extension(&self, method: &str, args_json: &str) -> Result<String, PluginError> {
        self.call(self.channel.extension(method, args_json))
    }

    fn teardown(&self) {
        self.stop();
    }
}

impl<C: AsyncChannel> Drop for Hosted<C> {
    fn drop(&mut self) {
        // The host always calls teardown; this covers embedders and tests that don't.
        self.stop();
    }
}

/// The crate a type is defined in (the first path segment of its name): the `tracing`
/// target prefix of the plugin's own events.
pub(crate) fn crate_of<T>() -> &'static str {
    std::any::type_name::<T>()
        .split("::")
        .next()
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;
    use crate::abi::ErrorKind;
    use crate::kit::testing::MemoryHost;

    /// Counts what happens to it; `run` loops until stopped.
    struct Probe {
        life: Lifecycle,
        runs: Arc<AtomicUsize>,
        loop_ended: Arc<AtomicBool>,
        shutdowns: Arc<AtomicUsize>,
        fail_start: bool,
    }

    #[derive(Clone, Default)]
    struct Counters {
        runs: Arc<AtomicUsize>,
        loop_ended: Arc<AtomicBool>,
        shutdowns: Arc<AtomicUsize>,
    }

    impl AsyncChannel for Probe {
        const INFO: ChannelInfo = ChannelInfo::new("Probe", "probe", "0.0.1");

        fn create(_ctx: Context, _life: &Lifecycle) -> Result<Self, PluginError> {
            Err(PluginError::config("use create_with"))
        }

        async fn start(&self) -> Result<(), PluginError> {
            if self.fail_start {
                return Err(PluginError::network("unreachable"));
            }
            Ok(())
        }

        async fn run(self: Arc<Self>, stop: StopSignal) {
            self.runs.fetch_add(1, Ordering::SeqCst);
            while stop.sleep(Duration::from_millis(5)).await.is_ok() {
                self.life.health().ingested();
            }
            self.loop_ended.store(true, Ordering::SeqCst);
        }

        async fn deliver(&self, message: OutboundMessage) -> Result<Option<String>, PluginError> {
            if message.text.as_str() == "hang" {
                std::future::pending::<()>().await;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
            Ok(Some(format!("sent:{}", message.text)))
        }

        async fn health(&self, mut current: Health) -> Health {
            current.detail = format!("probe: {}", current.detail).into();
            current
        }

        async fn shutdown(&self) {
            self.shutdowns.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn probe(mem: &MemoryHost, counters: &Counters, fail_start: bool) -> Hosted<Probe> {
        let ctx = Context {
            instance_name: "probe".into(),
            settings_json: String::new(),
            data_dir: std::env::temp_dir(),
            extra_json: String::new(),
            host: mem.host(),
        };
        Hosted::create_with(ctx, |_ctx, life| {
            Ok(Probe {
                life: life.clone(),
                runs: Arc::clone(&counters.runs),
                loop_ended: Arc::clone(&counters.loop_ended),
                shutdowns: Arc::clone(&counters.shutdowns),
                fail_start,
            })
        })
        .expect("create")
    }

    #[test]
    fn start_runs_the_loop_once_and_teardown_ends_it() {
        let mem = MemoryHost::new();
        let counters = Counters::default();
        let channel = probe(&mem, &counters, false);
        assert_eq!(channel.health().status, HealthStatus::UNKNOWN);
        assert_eq!(channel.health().detail.as_str(), "probe: not started");
        channel.start().expect("start");
        channel.start().expect("second start is a no-op");
        let sent = channel
            .deliver(OutboundMessage {
                text: "hi".into(),
                ..Default::default()
            })
            .expect("deliver");
        assert_eq!(sent.as_deref(), Some("sent:hi"));
        std::thread::sleep(Duration::from_millis(30));
        let health = channel.health();
        assert_eq!(health.status, HealthStatus::OK);
        assert!(health.last_ingest_ms > 0);
        assert_eq!(counters.runs.load(Ordering::SeqCst), 1);

        channel.teardown();
        assert!(counters.loop_ended.load(Ordering::SeqCst), "loop saw stop");
        assert_eq!(counters.shutdowns.load(Ordering::SeqCst), 1);
        let health = channel.health();
        assert_eq!(
            (health.status, health.detail.as_str()),
            (HealthStatus::DOWN, "stopped")
        );
        let err = channel
            .deliver(OutboundMessage::default())
            .expect_err("torn down");
        assert_eq!(err.kind, ErrorKind::OTHER);
        assert!(err.message.contains("torn down"), "{err}");
        channel.teardown();
        drop(channel);
        assert_eq!(counters.shutdowns.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn teardown_cancels_a_call_in_flight() {
        let mem = MemoryHost::new();
        let channel = Arc::new(probe(&mem, &Counters::default(), false));
        let caller = {
            let channel = Arc::clone(&channel);
            std::thread::spawn(move || {
                channel.deliver(OutboundMessage {
                    text: "hang".into(),
                    ..Default::default()
                })
            })
        };
        std::thread::sleep(Duration::from_millis(50));
        channel.teardown();
        let err = caller.join().expect("join").expect_err("cancelled");
        assert!(err.message.contains("torn down"), "{err}");
    }

    #[test]
    fn a_failed_start_can_be_retried_and_drop_tears_down() {
        let mem = MemoryHost::new();
        let counters = Counters::default();
        let channel = probe(&mem, &counters, true);
        let err = channel.start().expect_err("network");
        assert_eq!(err.kind, ErrorKind::NETWORK);
        assert_eq!(counters.runs.load(Ordering::SeqCst), 0);
        drop(channel);
        assert_eq!(counters.shutdowns.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn log_redacts_secrets_and_names_the_plugin_crate() {
        let mem = MemoryHost::new();
        let channel = probe(&mem, &Counters::default(), false);
        let life = channel.lifecycle();
        life.add_secret(&Secret::new("hunter2"));
        life.log(LogLevel::WARN, "password hunter2 refused");
        let logs = mem.logs();
        assert_eq!(logs[0].message, "password <redacted> refused");
        assert_eq!(logs[0].target, "nanoclaw_plugin_api");
        assert_eq!(
            <Hosted<Probe> as Channel>::log_crate(),
            "nanoclaw_plugin_api"
        );
    }

    #[test]
    fn stop_signal_runs_and_sleeps_until_stopped() {
        let rt = super::super::runtime("stop-test", 1).expect("runtime");
        let life = Lifecycle::detached(rt.handle().clone(), MemoryHost::new().host(), "t");
        let stop = life.stop_signal();
        assert!(!stop.is_stopped());
        rt.block_on(async {
            assert_eq!(stop.run(async { 5 }).await, Ok(5));
            life.stop();
            assert_eq!(stop.sleep(Duration::from_secs(60)).await, Err(Stopped));
            assert_eq!(life.host_call(|_| Ok(1)).await, Err(Stopped));
        });
        assert!(StopSignal::never().run(async {}).now_or_never_is_ready());
    }

    trait NowOrNever {
        fn now_or_never_is_ready(self) -> bool;
    }

    impl<F: Future> NowOrNever for F {
        fn now_or_never_is_ready(self) -> bool {
            let waker = std::task::Waker::noop();
            let mut cx = std::task::Context::from_waker(waker);
            let mut fut = std::pin::pin!(self);
            fut.as_mut().poll(&mut cx).is_ready()
        }
    }
}
