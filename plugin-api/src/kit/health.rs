//! The health a channel reports: coarse status, a reason, ingest progress, skipped events.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Mutex, MutexGuard};

use super::now_ms;
use crate::abi::{Health, HealthStatus};

/// Shared health of one channel instance, written by its tasks and read by `health`.
///
/// `DOWN` is sticky: once something declared the channel down (a refused credential,
/// teardown), only [`HealthCell::reset`] (a successful start) changes it, so a retry loop
/// cannot paper over it with `ok()`.
#[derive(Debug)]
pub struct HealthCell {
    state: Mutex<State>,
    last_ingest_ms: AtomicI64,
}

#[derive(Debug)]
struct State {
    status: HealthStatus,
    reason: String,
    skipped: u64,
    last_skipped: String,
}

impl Default for HealthCell {
    fn default() -> Self {
        Self::new()
    }
}

impl HealthCell {
    /// `UNKNOWN`, "not started", never ingested.
    pub fn new() -> Self {
        Self {
            state: Mutex::new(State {
                status: HealthStatus::UNKNOWN,
                reason: "not started".to_owned(),
                skipped: 0,
                last_skipped: String::new(),
            }),
            last_ingest_ms: AtomicI64::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set(&self, status: HealthStatus, reason: String) {
        let mut state = self.lock();
        if state.status == HealthStatus::DOWN && status != HealthStatus::DOWN {
            return;
        }
        state.status = status;
        state.reason = reason;
    }

    /// Sets status and reason even over `DOWN` (a successful start).
    pub fn reset(&self, status: HealthStatus, reason: impl Into<String>) {
        let mut state = self.lock();
        state.status = status;
        state.reason = reason.into();
    }

    /// Something arrived from the platform just now.
    pub fn ingested(&self) {
        self.last_ingest_ms.store(now_ms(), Ordering::Relaxed);
    }

    /// Working normally.
    pub fn ok(&self) {
        self.set(HealthStatus::OK, String::new());
    }

    /// Working with problems (reconnecting, throttled, the host refusing).
    pub fn degraded(&self, reason: impl Into<String>) {
        self.set(HealthStatus::DEGRADED, reason.into());
    }

    /// Not working until an operator acts (or the next start).
    pub fn down(&self, reason: impl Into<String>) {
        self.set(HealthStatus::DOWN, reason.into());
    }

    /// An inbound event was given up on (a poison event); reported in the detail.
    pub fn skipped(&self, what: impl Into<String>) {
        let mut state = self.lock();
        state.skipped += 1;
        state.last_skipped = what.into();
    }

    /// Current status.
    pub fn status(&self) -> HealthStatus {
        self.lock().status
    }

    /// When something last arrived (ms since the epoch), 0 = never.
    pub fn last_ingest_ms(&self) -> i64 {
        self.last_ingest_ms.load(Ordering::Relaxed)
    }

    /// The ABI value: status, reason (plus skipped events, if any), last ingest.
    pub fn get(&self) -> Health {
        let state = self.lock();
        let mut detail = state.reason.clone();
        if state.skipped > 0 {
            if !detail.is_empty() {
                detail.push_str("; ");
            }
            detail.push_str(&format!(
                "skipped {} inbound event(s) the host would not take (last: {})",
                state.skipped, state.last_skipped
            ));
        }
        Health::new(state.status, detail, self.last_ingest_ms())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn down_is_sticky_until_reset() {
        let cell = HealthCell::new();
        assert_eq!(cell.get().status, HealthStatus::UNKNOWN);
        assert_eq!(cell.get().detail.as_str(), "not started");
        cell.ok();
        cell.degraded("slow");
        assert_eq!(cell.get().detail.as_str(), "slow");
        cell.down("token refused");
        cell.ok();
        cell.degraded("retrying");
        assert_eq!(cell.status(), HealthStatus::DOWN);
        assert_eq!(cell.get().detail.as_str(), "token refused");
        cell.reset(HealthStatus::OK, "");
        assert_eq!(cell.status(), HealthStatus::OK);
    }

    #[test]
    fn ingest_and_skips_are_reported() {
        let cell = HealthCell::new();
        assert_eq!(cell.get().last_ingest_ms, 0);
        cell.ingested();
        cell.reset(HealthStatus::OK, "");
        cell.skipped("message 7 of chat 5");
        cell.skipped("message 9 of chat 5");
        let health = cell.get();
        assert!(health.last_ingest_ms > 0);
        assert_eq!(health.status, HealthStatus::OK);
        assert_eq!(
            health.detail.as_str(),
            "skipped 2 inbound event(s) the host would not take (last: message 9 of chat 5)"
        );
    }
}
