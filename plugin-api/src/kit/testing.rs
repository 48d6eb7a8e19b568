//! An in-memory [`HostServices`] for tests (plugin unit tests, the host's loader tests,
//! `nanoclaw plugins check`), and [`prepare`] / [`send`] to drive a channel's outbound side
//! the way the host does.
//!
//! [`MemoryHost`] records inbound events, actions and log lines, and implements the state
//! store with the same semantics as the host's database-backed one (TTL expiry,
//! set-if-absent, token locks, capped lists).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use abi_stable::sabi_trait::TD_Opaque;
use abi_stable::std_types::{RArc, ROption, RResult, RStr, RString, RVec};

use super::{Channel, Host};
use crate::abi::{
    ActionEvent, DeletionEvent, HostServices, HostServices_TO, HostServicesBox, InboundEvent,
    LogLevel, OutboundMessage, PluginError,
};

/// What the ABI's `prepare` returns for `message`: `channel.render(message)`, each part
/// marked as prepared.
pub fn prepare<C: Channel>(
    channel: &C,
    message: OutboundMessage,
) -> Result<Vec<OutboundMessage>, PluginError> {
    Ok(super::prepare::seal(
        channel.render(message)?,
        C::INFO.markup,
    ))
}

/// What the host does with an outbound message: [`prepare`] it, then `deliver` each part in
/// order, stopping at the first error. Returns each part's platform id.
pub fn send<C: Channel>(
    channel: &C,
    message: OutboundMessage,
) -> Result<Vec<Option<String>>, PluginError> {
    prepare(channel, message)?
        .into_iter()
        .map(|part| channel.deliver(part))
        .collect()
}

/// One recorded [`HostServices::log`] call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    /// Level.
    pub level: LogLevel,
    /// Target (module path in the plugin).
    pub target: String,
    /// The line.
    pub message: String,
}

/// An in-memory host. Clones share the same state.
#[derive(Clone, Default)]
pub struct MemoryHost {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    state: Mutex<State>,
    token_seq: AtomicU64,
}

#[derive(Default)]
struct State {
    inbound: Vec<InboundEvent>,
    actions: Vec<ActionEvent>,
    deletions: Vec<DeletionEvent>,
    logs: Vec<LogRecord>,
    reject_inbound: Option<PluginError>,
    kv: HashMap<String, (String, Option<Instant>)>,
    subscriptions: HashSet<String>,
    locks: HashMap<String, (String, Instant)>,
    lists: HashMap<String, (VecDeque<String>, Option<Instant>)>,
}

fn expiry(ttl_ms: ROption<u64>) -> Option<Instant> {
    ttl_ms
        .into_option()
        .map(|ms| Instant::now() + Duration::from_millis(ms))
}

fn live(expires: Option<Instant>) -> bool {
    expires.is_none_or(|at| Instant::now() < at)
}

impl MemoryHost {
    /// An empty host.
    pub fn new() -> Self {
        Self::default()
    }

    /// The ABI object to pass to `create`.
    pub fn services(&self) -> HostServicesBox {
        HostServices_TO::from_ptr(RArc::new(self.clone()), TD_Opaque)
    }

    /// A kit [`Host`] over this host (for unit tests that build a
    /// [`Context`](super::Context) by hand).
    pub fn host(&self) -> Host {
        Host::new(self.services())
    }

    /// From now on, `on_inbound` fails with `error` (or accepts again with `None`).
    pub fn set_reject_inbound(&self, error: Option<PluginError>) {
        self.lock().reject_inbound = error;
    }

    /// Inbound events accepted so far.
    pub fn inbound(&self) -> Vec<InboundEvent> {
        self.lock().inbound.clone()
    }

    /// Actions accepted so far.
    pub fn actions(&self) -> Vec<ActionEvent> {
        self.lock().actions.clone()
    }

    /// Deletions accepted so far.
    pub fn deletions(&self) -> Vec<DeletionEvent> {
        self.lock().deletions.clone()
    }

    /// Log lines so far.
    pub fn logs(&self) -> Vec<LogRecord> {
        self.lock().logs.clone()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind; keep going.
        self.inner
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn new_token(&self) -> String {
        let n = self.inner.token_seq.fetch_add(1, Ordering::Relaxed);
        let addr = Arc::as_ptr(&self.inner) as usize;
        format!("{addr:x}-{n}")
    }
}

impl HostServices for MemoryHost {
    fn on_inbound(&self, event: InboundEvent) -> RResult<(), PluginError> {
        let mut state = self.lock();
        if let Some(error) = &state.reject_inbound {
            return RResult::RErr(error.clone());
        }
        state.inbound.push(event);
        RResult::ROk(())
    }

    fn on_action(&self, event: ActionEvent) -> RResult<(), PluginError> {
        self.lock().actions.push(event);
        RResult::ROk(())
    }

    fn on_deleted(&self, event: DeletionEvent) -> RResult<(), PluginError> {
        let mut state = self.lock();
        if let Some(error) = &state.reject_inbound {
            return RResult::RErr(error.clone());
        }
        state.deletions.push(event);
        RResult::ROk(())
    }

    fn log(&self, level: LogLevel, target: RStr<'_>, message: RStr<'_>) {
        self.lock().logs.push(LogRecord {
            level,
            target: target.to_string(),
            message: message.to_string(),
        });
    }

    fn kv_get(&self, key: RStr<'_>) -> RResult<ROption<RString>, PluginError> {
        let mut state = self.lock();
        let value = match state.kv.get(key.as_str()) {
            Some((value, expires)) if live(*expires) => Some(RString::from(value.as_str())),
            Some(_) => {
                state.kv.remove(key.as_str());
                None
            }
            None => None,
        };
        RResult::ROk(value.into())
    }

    fn kv_set(
        &self,
        key: RStr<'_>,
        value: RStr<'_>,
        ttl_ms: ROption<u64>,
    ) -> RResult<(), PluginError> {
        self.lock()
            .kv
            .insert(key.to_string(), (value.to_string(), expiry(ttl_ms)));
        RResult::ROk(())
    }

    fn kv_set_if_absent(
        &self,
        key: RStr<'_>,
        value: RStr<'_>,
        ttl_ms: ROption<u64>,
    ) -> RResult<bool, PluginError> {
        let mut state = self.lock();
        if matches!(state.kv.get(key.as_str()), Some((_, expires)) if live(*expires)) {
            return RResult::ROk(false);
        }
        state
            .kv
            .insert(key.to_string(), (value.to_string(), expiry(ttl_ms)));
        RResult::ROk(true)
    }

    fn kv_delete(&self, key: RStr<'_>) -> RResult<bool, PluginError> {
        let removed = self.lock().kv.remove(key.as_str());
        RResult::ROk(matches!(removed, Some((_, expires)) if live(expires)))
    }

    fn subscribe(&self, thread: RStr<'_>) -> RResult<(), PluginError> {
        self.lock().subscriptions.insert(thread.to_string());
        RResult::ROk(())
    }

    fn unsubscribe(&self, thread: RStr<'_>) -> RResult<(), PluginError> {
        self.lock().subscriptions.remove(thread.as_str());
        RResult::ROk(())
    }

    fn is_subscribed(&self, thread: RStr<'_>) -> RResult<bool, PluginError> {
        RResult::ROk(self.lock().subscriptions.contains(thread.as_str()))
    }

    fn lock_acquire(&self, name: RStr<'_>, ttl_ms: u64) -> RResult<ROption<RString>, PluginError> {
        let token = self.new_token();
        let mut state = self.lock();
        if matches!(state.locks.get(name.as_str()), Some((_, expires)) if Instant::now() < *expires)
        {
            return RResult::ROk(ROption::RNone);
        }
        let expires = Instant::now() + Duration::from_millis(ttl_ms);
        state
            .locks
            .insert(name.to_string(), (token.clone(), expires));
        RResult::ROk(ROption::RSome(token.into()))
    }

    fn lock_extend(
        &self,
        name: RStr<'_>,
        token: RStr<'_>,
        ttl_ms: u64,
    ) -> RResult<bool, PluginError> {
        let mut state = self.lock();
        match state.locks.get_mut(name.as_str()) {
            Some((held, expires)) if held == token.as_str() && Instant::now() < *expires => {
                *expires = Instant::now() + Duration::from_millis(ttl_ms);
                RResult::ROk(true)
            }
            _ => RResult::ROk(false),
        }
    }

    fn lock_release(&self, name: RStr<'_>, token: RStr<'_>) -> RResult<bool, PluginError> {
        let mut state = self.lock();
        match state.locks.get(name.as_str()) {
            Some((held, _)) if held == token.as_str() => {
                state.locks.remove(name.as_str());
                RResult::ROk(true)
            }
            _ => RResult::ROk(false),
        }
    }

    fn list_append(
        &self,
        key: RStr<'_>,
        value: RStr<'_>,
        max_len: ROption<u32>,
        ttl_ms: ROption<u64>,
    ) -> RResult<u32, PluginError> {
        let mut state = self.lock();
        let entry = state
            .lists
            .entry(key.to_string())
            .or_insert_with(|| (VecDeque::new(), None));
        if !live(entry.1) {
            entry.0.clear();
        }
        entry.0.push_back(value.to_string());
        if let ROption::RSome(max) = max_len {
            let max = usize::try_from(max).unwrap_or(usize::MAX);
            while entry.0.len() > max {
                entry.0.pop_front();
            }
        }
        entry.1 = expiry(ttl_ms);
        RResult::ROk(u32::try_from(entry.0.len()).unwrap_or(u32::MAX))
    }

    fn list_get(&self, key: RStr<'_>) -> RResult<RVec<RString>, PluginError> {
        let state = self.lock();
        let items = match state.lists.get(key.as_str()) {
            Some((items, expires)) if live(*expires) => {
                items.iter().map(|s| RString::from(s.as_str())).collect()
            }
            _ => RVec::new(),
        };
        RResult::ROk(items)
    }

    fn list_pop_front(&self, key: RStr<'_>) -> RResult<ROption<RString>, PluginError> {
        let mut state = self.lock();
        let popped = match state.lists.get_mut(key.as_str()) {
            Some((items, expires)) if live(*expires) => items.pop_front().map(RString::from),
            _ => None,
        };
        RResult::ROk(popped.into())
    }

    fn extension(&self, method: RStr<'_>, _args_json: RStr<'_>) -> RResult<RString, PluginError> {
        RResult::RErr(PluginError::unsupported(format_args!(
            "host extension `{method}`"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abi::ErrorKind;

    #[test]
    fn kv_semantics() {
        let host = MemoryHost::new().host();
        assert_eq!(host.kv_get("a").expect("get"), None);
        host.kv_set("a", "1", None).expect("set");
        assert_eq!(host.kv_get("a").expect("get").as_deref(), Some("1"));
        assert!(!host.kv_set_if_absent("a", "2", None).expect("sia"));
        assert!(host.kv_set_if_absent("b", "2", Some(0)).expect("sia"));
        // Expired immediately: a miss, and set-if-absent succeeds again.
        assert_eq!(host.kv_get("b").expect("get"), None);
        assert!(host.kv_set_if_absent("b", "3", None).expect("sia"));
        assert!(host.kv_delete("a").expect("del"));
        assert!(!host.kv_delete("a").expect("del"));
    }

    #[test]
    fn locks_need_the_token() {
        let host = MemoryHost::new().host();
        let token = host.lock_acquire("t", 60_000).expect("acq").expect("token");
        assert_eq!(host.lock_acquire("t", 60_000).expect("acq"), None);
        assert!(!host.lock_extend("t", "wrong", 1000).expect("ext"));
        assert!(host.lock_extend("t", &token, 1000).expect("ext"));
        assert!(!host.lock_release("t", "wrong").expect("rel"));
        assert!(host.lock_release("t", &token).expect("rel"));
        let again = host.lock_acquire("t", 0).expect("acq").expect("token");
        assert_ne!(again, token);
        // A zero TTL expires at once: someone else may take it.
        assert!(host.lock_acquire("t", 1000).expect("acq").is_some());
    }

    #[test]
    fn lists_are_capped_fifo() {
        let host = MemoryHost::new().host();
        for (i, v) in ["a", "b", "c", "d"].iter().enumerate() {
            let len = host.list_append("q", v, Some(3), None).expect("append");
            assert_eq!(len as usize, (i + 1).min(3));
        }
        assert_eq!(host.list_get("q").expect("get"), ["b", "c", "d"]);
        assert_eq!(host.list_pop_front("q").expect("pop").as_deref(), Some("b"));
        assert_eq!(host.list_get("q").expect("get"), ["c", "d"]);
        assert_eq!(host.list_pop_front("none").expect("pop"), None);
    }

    #[test]
    fn subscriptions_and_inbound_rejection() {
        let mem = MemoryHost::new();
        let host = mem.host();
        host.subscribe("th").expect("sub");
        assert!(host.is_subscribed("th").expect("is"));
        host.unsubscribe("th").expect("unsub");
        assert!(!host.is_subscribed("th").expect("is"));

        host.on_inbound(InboundEvent::default()).expect("accepted");
        mem.set_reject_inbound(Some(PluginError::network("db busy")));
        let err = host
            .on_inbound(InboundEvent::default())
            .expect_err("rejected");
        assert_eq!(err.kind, ErrorKind::NETWORK);
        assert_eq!(mem.inbound().len(), 1);
        let err = host.extension("nope", "{}").expect_err("unsupported");
        assert_eq!(err.kind, ErrorKind::UNSUPPORTED);
    }
}
