//! Waiting between attempts: one [`Backoff`] for every retry loop (sync or async), and a
//! [`RateLimiter`] for a channel's outbound calls.

use std::collections::HashMap;
use std::hash::{BuildHasher as _, Hasher as _};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

use crate::abi::{ErrorKind, PluginError};

/// How a [`Backoff`] grows. Cheap to clone; build it once and give each retry loop its own
/// [`Backoff`].
///
/// Exponential by default: `initial`, then × `factor` per failure, never above `max`. Each
/// delay is shortened by up to `jitter` of itself (a random fraction), so peers that failed
/// together do not retry in lockstep; a delay never exceeds its un-jittered value.
#[derive(Debug, Clone, PartialEq)]
pub struct BackoffPolicy {
    initial: Duration,
    max: Duration,
    factor: f64,
    jitter: f64,
    max_attempts: Option<u32>,
    /// Explicit delays instead of the exponential curve (see [`BackoffPolicy::delays`]).
    schedule: Option<Arc<[Duration]>>,
}

impl BackoffPolicy {
    /// Starts at `initial`, doubles per failure up to `max`, 20 % jitter, no attempt limit.
    pub fn exponential(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max: max.max(initial),
            factor: 2.0,
            jitter: 0.2,
            max_attempts: None,
            schedule: None,
        }
    }

    /// Exactly these delays, in order, then give up: at most `delays.len() + 1` attempts.
    /// For retry schedules an operator states as a list ("after 2 s, 5 s and 10 s").
    pub fn delays(delays: impl Into<Vec<Duration>>) -> Self {
        let delays: Vec<Duration> = delays.into();
        let max = delays.iter().copied().max().unwrap_or_default();
        Self {
            initial: delays.first().copied().unwrap_or_default(),
            max,
            factor: 1.0,
            jitter: 0.2,
            max_attempts: Some(
                u32::try_from(delays.len())
                    .unwrap_or(u32::MAX)
                    .saturating_add(1),
            ),
            schedule: Some(delays.into()),
        }
    }

    /// The growth factor per failure (at least 1).
    pub fn factor(mut self, factor: f64) -> Self {
        self.factor = if factor.is_finite() {
            factor.max(1.0)
        } else {
            2.0
        };
        self
    }

    /// The largest fraction (0–1) taken off each delay at random; 0 makes delays exact.
    pub fn jitter(mut self, jitter: f64) -> Self {
        self.jitter = if jitter.is_finite() {
            jitter.clamp(0.0, 1.0)
        } else {
            0.0
        };
        self
    }

    /// Gives up after `attempts` attempts in all (the first try included): the backoff then
    /// hands out `attempts - 1` delays.
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = Some(attempts.max(1));
        self
    }

    /// The delay before retry number `retry` (0-based), before jitter.
    fn base_delay(&self, retry: u32) -> Duration {
        if let Some(schedule) = &self.schedule {
            let index = usize::try_from(retry).unwrap_or(usize::MAX);
            return schedule
                .get(index)
                .or(schedule.last())
                .copied()
                .unwrap_or_default();
        }
        let exponent = i32::try_from(retry).unwrap_or(i32::MAX);
        let scaled = self.initial.as_secs_f64() * self.factor.powi(exponent);
        if !scaled.is_finite() || scaled >= self.max.as_secs_f64() {
            self.max
        } else {
            Duration::from_secs_f64(scaled)
        }
    }

    /// A fresh backoff following this policy.
    pub fn start(&self) -> Backoff {
        Backoff::new(self.clone())
    }
}

/// Delays between attempts, per [`BackoffPolicy`]. Call [`next_delay`](Backoff::next_delay)
/// after each failure and [`reset`](Backoff::reset) after a success.
///
/// ```
/// use std::time::Duration;
/// use nanoclaw_plugin_api::kit::retry::BackoffPolicy;
///
/// let mut backoff = BackoffPolicy::exponential(Duration::from_secs(1), Duration::from_secs(30))
///     .jitter(0.0)
///     .max_attempts(4)
///     .start();
/// let delays: Vec<_> = std::iter::from_fn(|| backoff.next_delay()).collect();
/// assert_eq!(delays, [Duration::from_secs(1), Duration::from_secs(2), Duration::from_secs(4)]);
/// ```
#[derive(Debug, Clone)]
pub struct Backoff {
    policy: BackoffPolicy,
    failures: u32,
    rng: u64,
}

impl Backoff {
    /// A backoff with no failures yet.
    pub fn new(policy: BackoffPolicy) -> Self {
        Self {
            policy,
            failures: 0,
            rng: seed(),
        }
    }

    /// Records a failure and returns how long to wait before the next attempt, or `None`
    /// when the policy's attempts are used up.
    pub fn next_delay(&mut self) -> Option<Duration> {
        let attempts_so_far = self.failures.saturating_add(1);
        if self
            .policy
            .max_attempts
            .is_some_and(|max| attempts_so_far >= max)
        {
            return None;
        }
        let base = self.policy.base_delay(self.failures);
        self.failures = self.failures.saturating_add(1);
        Some(self.jittered(base))
    }

    /// After a success: the next failure starts from the first delay again.
    pub fn reset(&mut self) {
        self.failures = 0;
    }

    /// Failures recorded since the last reset.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// The policy.
    pub fn policy(&self) -> &BackoffPolicy {
        &self.policy
    }

    /// Records a failure and sleeps (async); false, without sleeping, when attempts are used up.
    pub async fn wait(&mut self) -> bool {
        match self.next_delay() {
            Some(delay) => {
                tokio::time::sleep(delay).await;
                true
            }
            None => false,
        }
    }

    /// Records a failure and sleeps the thread; false, without sleeping, when attempts are
    /// used up.
    pub fn wait_blocking(&mut self) -> bool {
        match self.next_delay() {
            Some(delay) => {
                std::thread::sleep(delay);
                true
            }
            None => false,
        }
    }

    fn jittered(&mut self, base: Duration) -> Duration {
        if self.policy.jitter <= 0.0 || base.is_zero() {
            return base;
        }
        // xorshift64*: plenty for spreading retries, no dependency.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        let random = self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11;
        let unit = random as f64 / (1u64 << 53) as f64; // [0, 1)
        base.mul_f64(1.0 - self.policy.jitter * unit)
    }
}

/// A random non-zero seed from std's per-process hash keys.
fn seed() -> u64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(0x9E37_79B9_7F4A_7C15);
    hasher.finish() | 1
}

// ---------------------------------------------------------------------------------------------
// Rate limiting
// ---------------------------------------------------------------------------------------------

/// A token-bucket rate: `per_second` sustained, `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    per_second: f64,
    burst: f64,
}

impl Rate {
    /// `n` per second, bursts of up to `n` (at least 1).
    pub fn per_second(n: f64) -> Self {
        let n = if n.is_finite() && n > 0.0 { n } else { 1.0 };
        Self {
            per_second: n,
            burst: n.max(1.0),
        }
    }

    /// `n` per minute, bursts of 1.
    pub fn per_minute(n: f64) -> Self {
        let n = if n.is_finite() && n > 0.0 { n } else { 1.0 };
        Self {
            per_second: n / 60.0,
            burst: 1.0,
        }
    }

    /// Sets the burst (at least 1).
    pub fn burst(mut self, burst: u32) -> Self {
        self.burst = f64::from(burst.max(1));
        self
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
    paused_until: Option<Instant>,
}

impl Bucket {
    fn full(rate: Option<Rate>, now: Instant) -> Self {
        Self {
            tokens: rate.map_or(1.0, |r| r.burst),
            updated: now,
            paused_until: None,
        }
    }

    /// How long until a token is available (zero: now), after refilling to `now`.
    fn wait(&mut self, rate: Option<Rate>, now: Instant) -> Duration {
        if let Some(rate) = rate {
            let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
            self.tokens = (self.tokens + elapsed * rate.per_second).min(rate.burst);
        }
        self.updated = now;
        let paused = self
            .paused_until
            .map_or(Duration::ZERO, |until| until.saturating_duration_since(now));
        if paused.is_zero() {
            self.paused_until = None;
        }
        let refill = match rate {
            Some(rate) if self.tokens < 1.0 => {
                Duration::from_secs_f64((1.0 - self.tokens) / rate.per_second)
            }
            _ => Duration::ZERO,
        };
        paused.max(refill)
    }

    fn take(&mut self, rate: Option<Rate>) {
        if rate.is_some() {
            self.tokens -= 1.0;
        }
    }

    fn idle(&self, rate: Option<Rate>) -> bool {
        self.paused_until.is_none() && rate.is_none_or(|r| self.tokens >= r.burst)
    }
}

/// Buckets kept per chat before idle ones are forgotten.
const MAX_TRACKED_CHATS: usize = 4096;

/// Outbound pacing for one channel: a global rate, a per-chat rate, and pauses a server
/// asked for (`429` with `retry_after`). Share it (`Arc`) between all senders.
///
/// ```
/// # async fn demo() {
/// use std::time::Duration;
/// use nanoclaw_plugin_api::kit::retry::{Rate, RateLimiter};
///
/// // Telegram's published limits: about 30 messages/s overall, 1/s per chat.
/// let limiter = RateLimiter::new(Some(Rate::per_second(30.0)), Some(Rate::per_second(1.0)));
/// limiter.acquire("6037840640").await;
/// // … the API answered 429 with retry_after 3 for that chat:
/// limiter.pause(Some("6037840640"), Duration::from_secs(3));
/// # }
/// ```
#[derive(Debug)]
pub struct RateLimiter {
    global: Option<Rate>,
    per_chat: Option<Rate>,
    state: Mutex<LimiterState>,
}

#[derive(Debug)]
struct LimiterState {
    global: Bucket,
    chats: HashMap<String, Bucket>,
}

impl RateLimiter {
    /// A limiter with an optional global and an optional per-chat rate.
    pub fn new(global: Option<Rate>, per_chat: Option<Rate>) -> Self {
        let now = Instant::now();
        Self {
            global,
            per_chat,
            state: Mutex::new(LimiterState {
                global: Bucket::full(global, now),
                chats: HashMap::new(),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, LimiterState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes a slot for `chat` now if both buckets allow it; otherwise returns how long to
    /// wait before trying again.
    pub fn try_acquire(&self, chat: &str) -> Result<(), Duration> {
        let now = Instant::now();
        let (global, per_chat) = (self.global, self.per_chat);
        let mut state = self.lock();
        let global_wait = state.global.wait(global, now);
        if state.chats.len() >= MAX_TRACKED_CHATS && !state.chats.contains_key(chat) {
            state.chats.retain(|_, bucket| {
                bucket.wait(per_chat, now);
                !bucket.idle(per_chat)
            });
        }
        let bucket = state
            .chats
            .entry(chat.to_owned())
            .or_insert_with(|| Bucket::full(per_chat, now));
        let chat_wait = bucket.wait(per_chat, now);
        let wait = global_wait.max(chat_wait);
        if !wait.is_zero() {
            return Err(wait);
        }
        bucket.take(per_chat);
        state.global.take(global);
        Ok(())
    }

    /// Waits until a call to `chat` may go out, and takes its slot.
    pub async fn acquire(&self, chat: &str) {
        while let Err(wait) = self.try_acquire(chat) {
            tokio::time::sleep(wait).await;
        }
    }

    /// Like [`acquire`](RateLimiter::acquire), but gives up without taking a slot when the
    /// wait would exceed `max_wait`, returning that wait: a host call cannot sit out a long
    /// server pause, so answer `RATE_LIMITED` with it and let the host retry later.
    pub async fn acquire_within(&self, chat: &str, max_wait: Duration) -> Result<(), Duration> {
        loop {
            match self.try_acquire(chat) {
                Ok(()) => return Ok(()),
                Err(wait) if wait > max_wait => return Err(wait),
                Err(wait) => tokio::time::sleep(wait).await,
            }
        }
    }

    /// Holds back `chat` (or, with `None`, everything) for `retry_after`, as the server asked.
    pub fn pause(&self, chat: Option<&str>, retry_after: Duration) {
        let now = Instant::now();
        let until = now + retry_after;
        let per_chat = self.per_chat;
        let mut state = self.lock();
        let bucket = match chat {
            Some(chat) => state
                .chats
                .entry(chat.to_owned())
                .or_insert_with(|| Bucket::full(per_chat, now)),
            None => &mut state.global,
        };
        bucket.paused_until = Some(bucket.paused_until.map_or(until, |u| u.max(until)));
    }

    /// Pauses `chat` when `error` is a rate limit with a `retry_after_ms`; true if it was.
    pub fn note(&self, chat: Option<&str>, error: &PluginError) -> bool {
        match (error.kind, error.retry_after_ms.into_option()) {
            (ErrorKind::RATE_LIMITED, Some(ms)) => {
                self.pause(chat, Duration::from_millis(ms));
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(d: &[u64]) -> Vec<Duration> {
        d.iter().copied().map(Duration::from_secs).collect()
    }

    #[test]
    fn exponential_doubles_to_the_cap_and_resets() {
        let policy =
            BackoffPolicy::exponential(Duration::from_secs(1), Duration::from_secs(30)).jitter(0.0);
        let mut b = policy.start();
        let delays: Vec<Duration> = (0..7).filter_map(|_| b.next_delay()).collect();
        assert_eq!(delays, secs(&[1, 2, 4, 8, 16, 30, 30]));
        assert_eq!(b.failures(), 7);
        b.reset();
        assert_eq!(b.next_delay(), Some(Duration::from_secs(1)));
        // Huge failure counts stay at the cap instead of overflowing.
        let mut many = policy.start();
        for _ in 0..10_000 {
            assert!(many.next_delay().expect("no limit") <= Duration::from_secs(30));
        }
    }

    #[test]
    fn jitter_shortens_within_bounds_and_varies() {
        let policy = BackoffPolicy::exponential(Duration::from_secs(10), Duration::from_secs(10))
            .jitter(0.5);
        let mut b = policy.start();
        let delays: Vec<Duration> = (0..50).filter_map(|_| b.next_delay()).collect();
        assert!(
            delays
                .iter()
                .all(|d| *d <= Duration::from_secs(10) && *d >= Duration::from_secs(5))
        );
        assert!(delays.windows(2).any(|w| w[0] != w[1]), "{delays:?}");
    }

    #[test]
    fn attempts_are_limited() {
        let mut b = BackoffPolicy::exponential(Duration::from_millis(1), Duration::from_millis(1))
            .max_attempts(3)
            .start();
        assert!(b.next_delay().is_some());
        assert!(b.next_delay().is_some());
        assert_eq!(b.next_delay(), None);
        assert_eq!(b.next_delay(), None);
        b.reset();
        assert!(b.wait_blocking());
    }

    #[test]
    fn explicit_delays_then_give_up() {
        let mut b = BackoffPolicy::delays(secs(&[2, 5, 10])).jitter(0.0).start();
        let delays: Vec<Duration> = std::iter::from_fn(|| b.next_delay()).collect();
        assert_eq!(delays, secs(&[2, 5, 10]));
        let mut none = BackoffPolicy::delays(Vec::new()).start();
        assert_eq!(none.next_delay(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn async_wait_sleeps_the_delay() {
        let mut b = BackoffPolicy::exponential(Duration::from_secs(3), Duration::from_secs(3))
            .jitter(0.0)
            .max_attempts(2)
            .start();
        let start = Instant::now();
        assert!(b.wait().await);
        assert_eq!(start.elapsed(), Duration::from_secs(3));
        assert!(!b.wait().await);
    }

    #[tokio::test(start_paused = true)]
    async fn limiter_paces_per_chat_and_globally() {
        let limiter = RateLimiter::new(
            Some(Rate::per_second(10.0).burst(2)),
            Some(Rate::per_second(1.0)),
        );
        let start = Instant::now();
        // Chat a: one per second after its burst of one.
        limiter.acquire("a").await;
        limiter.acquire("a").await;
        assert_eq!(start.elapsed(), Duration::from_secs(1));
        // Global burst of 2 is spent; b waits for a global token (0.1 s).
        let before = Instant::now();
        limiter.acquire("b").await;
        assert!(before.elapsed() <= Duration::from_millis(100));
        assert!(limiter.try_acquire("b").is_err(), "b's own bucket is empty");
    }

    #[tokio::test(start_paused = true)]
    async fn limiter_honours_retry_after() {
        let limiter = RateLimiter::new(None, None);
        limiter.acquire("a").await;
        let start = Instant::now();
        let throttled = PluginError::rate_limited("slow down", Some(2500));
        assert!(limiter.note(Some("a"), &throttled));
        assert!(!limiter.note(Some("a"), &PluginError::network("down")));
        limiter.acquire("b").await;
        assert_eq!(start.elapsed(), Duration::ZERO, "other chats go on");
        limiter.acquire("a").await;
        assert_eq!(start.elapsed(), Duration::from_millis(2500));
        limiter.pause(None, Duration::from_secs(1));
        limiter.acquire("b").await;
        assert_eq!(start.elapsed(), Duration::from_millis(3500));
        limiter.pause(Some("c"), Duration::from_secs(60));
        assert_eq!(
            limiter.acquire_within("c", Duration::from_secs(5)).await,
            Err(Duration::from_secs(60))
        );
        assert_eq!(
            start.elapsed(),
            Duration::from_millis(3500),
            "gave up at once"
        );
        limiter.pause(Some("d"), Duration::from_secs(2));
        assert_eq!(
            limiter.acquire_within("d", Duration::from_secs(5)).await,
            Ok(())
        );
        assert_eq!(start.elapsed(), Duration::from_millis(5500));
    }

    #[test]
    fn limiter_forgets_idle_chats() {
        let limiter = RateLimiter::new(None, None);
        limiter.pause(Some("held"), Duration::from_secs(60));
        for i in 0..(MAX_TRACKED_CHATS + 10) {
            assert_eq!(limiter.try_acquire(&i.to_string()), Ok(()));
        }
        let state = limiter.lock();
        assert!(
            state.chats.len() < MAX_TRACKED_CHATS,
            "{}",
            state.chats.len()
        );
        assert!(state.chats.contains_key("held"), "a paused chat is kept");
    }
}
