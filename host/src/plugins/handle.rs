//! Calling a created plugin from async host code.
//!
//! Every call runs on `tokio::task::spawn_blocking`, so a slow plugin never stalls the
//! host's async workers; at most [`CallLimits::max_in_flight`] calls per plugin run at once,
//! and each is bounded by a timeout (waiting for a free slot included).
//!
//! **A timed-out call cannot be stopped.** Its blocking thread stays inside the plugin until
//! the plugin returns (possibly never) and keeps its in-flight slot. The handle reports the
//! plugin as degraded while such calls are outstanding. Because tokio waits for blocking
//! tasks when a runtime is dropped, the daemon should end its runtime with
//! `Runtime::shutdown_timeout` rather than a plain drop.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use abi_stable::std_types::{ROption, RStr};
use nanoclaw_plugin_api::abi::{
    Capabilities, ChannelAdapterBox, ErrorKind, Health, HealthStatus, OutboundMessage, PluginError,
    WebhookRequest, WebhookResponse,
};
use tokio::sync::Semaphore;
use tokio::time::Instant;

use super::loader::PluginManifest;

/// Default number of calls a plugin may have running at once.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 4;

/// Bounds on calls into one plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallLimits {
    /// Timeout of each call (`call_timeout_secs`).
    pub call_timeout: Duration,
    /// Timeout of `start` (`start_timeout_secs`).
    pub start_timeout: Duration,
    /// Calls allowed in flight at once.
    pub max_in_flight: usize,
}

impl Default for CallLimits {
    fn default() -> Self {
        Self {
            call_timeout: Duration::from_secs(30),
            start_timeout: Duration::from_secs(120),
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
        }
    }
}

/// A failed call into a plugin.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    /// The plugin returned an error.
    #[error("plugin `{plugin}`: {method}() failed: {error}")]
    Plugin {
        /// Instance name.
        plugin: String,
        /// Method.
        method: &'static str,
        /// The plugin's error.
        error: PluginError,
    },
    /// The plugin panicked; the panic was caught inside the plugin.
    #[error("plugin `{plugin}` panicked in {method}(): {message}")]
    Panicked {
        /// Instance name.
        plugin: String,
        /// Method.
        method: &'static str,
        /// Panic message.
        message: String,
    },
    /// No answer within the timeout. The call is abandoned but its thread cannot be killed;
    /// the plugin is marked degraded until it returns.
    #[error(
        "plugin `{plugin}`: {method}() did not return within {after:?}; call abandoned, plugin marked degraded"
    )]
    Timeout {
        /// Instance name.
        plugin: String,
        /// Method.
        method: &'static str,
        /// The timeout.
        after: Duration,
    },
    /// The manifest does not declare the capability this call needs; the plugin was not
    /// called.
    #[error("plugin `{plugin}` does not support {capability}")]
    Unsupported {
        /// Instance name.
        plugin: String,
        /// The missing capability.
        capability: &'static str,
    },
    /// `teardown` was called; the plugin takes no more calls.
    #[error("plugin `{plugin}` has been torn down")]
    TornDown {
        /// Instance name.
        plugin: String,
    },
    /// The blocking task failed on the host side (a bug in the host).
    #[error("plugin `{plugin}`: internal error running {method}(): {message}")]
    Internal {
        /// Instance name.
        plugin: String,
        /// Method.
        method: &'static str,
        /// Details.
        message: String,
    },
}

impl CallError {
    /// The plugin's error kind, if the plugin answered with an error.
    pub fn plugin_error(&self) -> Option<&PluginError> {
        match self {
            Self::Plugin { error, .. } => Some(error),
            _ => None,
        }
    }
    /// Worth retrying later (network trouble, throttling, timeouts).
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Plugin { error, .. } => error.is_transient(),
            Self::Timeout { .. } => true,
            _ => false,
        }
    }
    /// For rate limiting: when to retry.
    pub fn retry_after(&self) -> Option<Duration> {
        self.plugin_error()
            .and_then(|e| e.retry_after_ms.into_option())
            .map(Duration::from_millis)
    }
}

/// Counters of one plugin's calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CallStats {
    /// Calls completed (successfully or not) within their timeout.
    pub completed: u64,
    /// Calls that timed out.
    pub timeouts: u64,
    /// Timed-out calls still running inside the plugin.
    pub stuck: usize,
}

const RUNNING: u8 = 0;
const DONE: u8 = 1;
const ABANDONED: u8 = 2;

struct Inner {
    instance: String,
    manifest: PluginManifest,
    adapter: Arc<ChannelAdapterBox>,
    limits: CallLimits,
    permits: Arc<Semaphore>,
    stuck: Arc<AtomicUsize>,
    completed: AtomicU64,
    timeouts: AtomicU64,
    torn_down: AtomicBool,
}

/// A created plugin instance. Cheap to clone; all clones share limits and state.
#[derive(Clone)]
pub struct PluginHandle {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for PluginHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginHandle")
            .field("instance", &self.inner.instance)
            .field("channel_type", &self.inner.manifest.channel_type)
            .field("stats", &self.stats())
            .finish()
    }
}

impl PluginHandle {
    /// Wraps a created adapter.
    pub fn new(
        instance: impl Into<String>,
        manifest: PluginManifest,
        adapter: ChannelAdapterBox,
        limits: CallLimits,
    ) -> Self {
        let max_in_flight = limits.max_in_flight.max(1);
        Self {
            inner: Arc::new(Inner {
                instance: instance.into(),
                manifest,
                adapter: Arc::new(adapter),
                limits: CallLimits {
                    max_in_flight,
                    ..limits
                },
                permits: Arc::new(Semaphore::new(max_in_flight)),
                stuck: Arc::new(AtomicUsize::new(0)),
                completed: AtomicU64::new(0),
                timeouts: AtomicU64::new(0),
                torn_down: AtomicBool::new(false),
            }),
        }
    }

    /// The instance name.
    pub fn instance(&self) -> &str {
        &self.inner.instance
    }
    /// The manifest.
    pub fn manifest(&self) -> &PluginManifest {
        &self.inner.manifest
    }
    /// The kind of platform the plugin speaks; the instance name is the channel name.
    pub fn channel_type(&self) -> &str {
        &self.inner.manifest.channel_type
    }
    /// The capabilities.
    pub fn capabilities(&self) -> Capabilities {
        self.inner.manifest.capabilities
    }
    /// The limits.
    pub fn limits(&self) -> CallLimits {
        self.inner.limits
    }
    /// Call counters.
    pub fn stats(&self) -> CallStats {
        CallStats {
            completed: self.inner.completed.load(Ordering::Relaxed),
            timeouts: self.inner.timeouts.load(Ordering::Relaxed),
            stuck: self.inner.stuck.load(Ordering::Relaxed),
        }
    }
    /// True while timed-out calls are still running inside the plugin.
    pub fn is_degraded(&self) -> bool {
        self.inner.stuck.load(Ordering::Relaxed) > 0
    }
    /// The raw adapter, for synchronous use off async workers (benchmarks, tools). Calls
    /// made through it bypass the limits and timeouts.
    pub fn raw_adapter(&self) -> &ChannelAdapterBox {
        &self.inner.adapter
    }

    /// Runs `f` on a blocking thread within the limits.
    async fn call<T, F>(
        &self,
        method: &'static str,
        timeout: Duration,
        f: F,
    ) -> Result<T, CallError>
    where
        T: Send + 'static,
        F: FnOnce(&ChannelAdapterBox) -> T + Send + 'static,
    {
        let inner = &self.inner;
        if method != "teardown" && inner.torn_down.load(Ordering::Acquire) {
            return Err(CallError::TornDown {
                plugin: inner.instance.clone(),
            });
        }
        let timed_out = || {
            inner.timeouts.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                plugin = %inner.instance,
                method,
                ?timeout,
                "plugin call timed out; marking plugin degraded"
            );
            CallError::Timeout {
                plugin: inner.instance.clone(),
                method,
                after: timeout,
            }
        };
        let deadline = Instant::now() + timeout;
        let permit =
            match tokio::time::timeout_at(deadline, inner.permits.clone().acquire_owned()).await {
                Ok(Ok(permit)) => permit,
                Ok(Err(_closed)) => {
                    return Err(CallError::TornDown {
                        plugin: inner.instance.clone(),
                    });
                }
                Err(_elapsed) => return Err(timed_out()),
            };

        let adapter = Arc::clone(&inner.adapter);
        let state = Arc::new(AtomicU8::new(RUNNING));
        let stuck = Arc::clone(&inner.stuck);
        let task_state = Arc::clone(&state);
        let instance = inner.instance.clone();
        let mut task = tokio::task::spawn_blocking(move || {
            let out = f(&adapter);
            drop(permit);
            if task_state
                .compare_exchange(RUNNING, DONE, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
            {
                // The caller gave up on us earlier: we are no longer stuck.
                stuck.fetch_sub(1, Ordering::AcqRel);
                tracing::info!(plugin = %instance, method, "abandoned plugin call returned");
            }
            out
        });

        let joined = match tokio::time::timeout_at(deadline, &mut task).await {
            Ok(joined) => joined,
            Err(_elapsed) => {
                inner.stuck.fetch_add(1, Ordering::AcqRel);
                if state
                    .compare_exchange(RUNNING, ABANDONED, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    return Err(timed_out());
                }
                // It finished just now: not stuck after all; take its result.
                inner.stuck.fetch_sub(1, Ordering::AcqRel);
                task.await
            }
        };
        inner.completed.fetch_add(1, Ordering::Relaxed);
        joined.map_err(|e| CallError::Internal {
            plugin: inner.instance.clone(),
            method,
            message: e.to_string(),
        })
    }

    fn plugin_error(&self, method: &'static str, error: PluginError) -> CallError {
        if error.kind == ErrorKind::PANICKED {
            CallError::Panicked {
                plugin: self.inner.instance.clone(),
                method,
                message: error.message.into_string(),
            }
        } else {
            CallError::Plugin {
                plugin: self.inner.instance.clone(),
                method,
                error,
            }
        }
    }

    fn require(&self, capability: Capabilities, name: &'static str) -> Result<(), CallError> {
        if self.capabilities().contains(capability) {
            Ok(())
        } else {
            Err(CallError::Unsupported {
                plugin: self.inner.instance.clone(),
                capability: name,
            })
        }
    }

    /// `start`, bounded by `start_timeout`.
    pub async fn start(&self) -> Result<(), CallError> {
        self.call("start", self.inner.limits.start_timeout, |a| a.start())
            .await?
            .into_result()
            .map_err(|e| self.plugin_error("start", e))
    }

    /// `prepare` (ABI 1.1): the platform-ready parts of an outbound message (rendered,
    /// split within the platform's limit), to pass to [`deliver`](Self::deliver) one at a
    /// time, unchanged and in order.
    pub async fn prepare(
        &self,
        message: OutboundMessage,
    ) -> Result<Vec<OutboundMessage>, CallError> {
        self.call("prepare", self.inner.limits.call_timeout, move |a| {
            a.prepare(message)
        })
        .await?
        .into_result()
        .map(|parts| parts.into_vec())
        .map_err(|e| self.plugin_error("prepare", e))
    }

    /// `deliver`: returns the platform message id, if the platform gives one.
    pub async fn deliver(&self, message: OutboundMessage) -> Result<Option<String>, CallError> {
        self.call("deliver", self.inner.limits.call_timeout, move |a| {
            a.deliver(message)
        })
        .await?
        .into_result()
        .map(|id| id.into_option().map(|s| s.into_string()))
        .map_err(|e| self.plugin_error("deliver", e))
    }

    /// `set_typing`. Plugins without [`Capabilities::TYPING`] are not called.
    pub async fn set_typing(
        &self,
        chat_id: &str,
        thread_id: Option<&str>,
    ) -> Result<(), CallError> {
        self.require(Capabilities::TYPING, "typing")?;
        let chat_id = chat_id.to_owned();
        let thread_id = thread_id.map(str::to_owned);
        self.call("set_typing", self.inner.limits.call_timeout, move |a| {
            let thread = match &thread_id {
                Some(t) => ROption::RSome(RStr::from_str(t)),
                None => ROption::RNone,
            };
            a.set_typing(RStr::from_str(&chat_id), thread);
        })
        .await
    }

    /// `open_dm`. Plugins without [`Capabilities::OPEN_DM`] are not called: address the
    /// handle directly instead.
    pub async fn open_dm(&self, user_handle: &str) -> Result<String, CallError> {
        self.require(Capabilities::OPEN_DM, "open_dm")?;
        let handle = user_handle.to_owned();
        self.call("open_dm", self.inner.limits.call_timeout, move |a| {
            a.open_dm(RStr::from_str(&handle))
        })
        .await?
        .into_result()
        .map(|s| s.into_string())
        .map_err(|e| self.plugin_error("open_dm", e))
    }

    /// `handle_webhook`. Plugins without [`Capabilities::WEBHOOK`] are not called.
    pub async fn handle_webhook(
        &self,
        request: WebhookRequest,
    ) -> Result<WebhookResponse, CallError> {
        self.require(Capabilities::WEBHOOK, "webhook")?;
        self.call("handle_webhook", self.inner.limits.call_timeout, move |a| {
            a.handle_webhook(request)
        })
        .await?
        .into_result()
        .map_err(|e| self.plugin_error("handle_webhook", e))
    }

    /// `extension`.
    pub async fn extension(&self, method: &str, args_json: &str) -> Result<String, CallError> {
        let (method, args) = (method.to_owned(), args_json.to_owned());
        self.call("extension", self.inner.limits.call_timeout, move |a| {
            a.extension(RStr::from_str(&method), RStr::from_str(&args))
        })
        .await?
        .into_result()
        .map(|s| s.into_string())
        .map_err(|e| self.plugin_error("extension", e))
    }

    /// Health as the host sees it: the plugin's own report, made `DEGRADED` while calls are
    /// stuck, or `DOWN` when `health()` itself fails or times out.
    pub async fn health(&self) -> Health {
        let reported = self
            .call("health", self.inner.limits.call_timeout, |a| a.health())
            .await;
        let stats = self.stats();
        match reported {
            Ok(mut health) => {
                if stats.stuck > 0 && health.status == HealthStatus::OK {
                    health.status = HealthStatus::DEGRADED;
                    health.detail = format!(
                        "{} call(s) stuck past the timeout{}{}",
                        stats.stuck,
                        if health.detail.is_empty() { "" } else { "; " },
                        health.detail
                    )
                    .into();
                }
                health
            }
            Err(e) => Health::new(HealthStatus::DOWN, e.to_string(), 0),
        }
    }

    /// `teardown`; afterwards every call fails with [`CallError::TornDown`]. Idempotent.
    pub async fn teardown(&self) -> Result<(), CallError> {
        if self.inner.torn_down.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        self.call("teardown", self.inner.limits.call_timeout, |a| a.teardown())
            .await
    }
}
