//! Handing inbound events to the host: until accepted, skipping poison, without duplicates.
//!
//! * [`Inbox::hand_over`] calls the host until it accepts. Refusals are retried with a
//!   [`Backoff`](super::retry::Backoff); an event refused [`HandOverPolicy::max_refusals`]
//!   times, or refused as `INVALID_INPUT` (it will never be taken), is a **poison** event:
//!   it is skipped and reported (an error log line and the health detail) so the events
//!   behind it flow again.
//! * [`Dedupe`] remembers platform message ids in the host's state store
//!   (`kv_set_if_absent` with expiry), so a platform's redelivery never becomes a second
//!   message, across restarts too. [`Inbox::deliver_once`] combines both.
//! * [`Inbox::offer_once`] is the webhook variant: one attempt, deduped by the platform's
//!   event id, because a webhook must be answered within the host's call timeout and the
//!   platform's redelivery is the retry.

use std::time::Duration;

use super::Host;
use super::lifecycle::{Lifecycle, Stopped};
use super::retry::BackoffPolicy;
use crate::abi::{ActionEvent, DeletionEvent, ErrorKind, InboundEvent, LogLevel, PluginError};

/// How hard [`Inbox::hand_over`] tries.
#[derive(Debug, Clone, PartialEq)]
pub struct HandOverPolicy {
    /// Delays between attempts (its attempt limit, if any, is ignored: see `max_refusals`).
    pub backoff: BackoffPolicy,
    /// Refusals after which the event is skipped as poison (at least 1).
    pub max_refusals: u32,
}

impl Default for HandOverPolicy {
    /// 1 s doubling to 30 s; skipped after 8 refusals (about two minutes).
    fn default() -> Self {
        Self {
            backoff: BackoffPolicy::exponential(Duration::from_secs(1), Duration::from_secs(30)),
            max_refusals: 8,
        }
    }
}

/// The outcome of a hand-over.
#[derive(Debug, Clone, PartialEq)]
#[must_use]
pub enum Handed {
    /// The host took it (`attempts` calls, 1 = first time).
    Accepted {
        /// Calls made.
        attempts: u32,
    },
    /// Given up on as poison; already logged and reported in the health detail.
    Skipped {
        /// The host's last answer.
        error: PluginError,
        /// Refusals before giving up.
        refusals: u32,
    },
}

impl Handed {
    /// True when the host took the event.
    pub fn is_accepted(&self) -> bool {
        matches!(self, Self::Accepted { .. })
    }
}

/// Hands events to the host for one channel. Cheap to clone.
#[derive(Clone)]
pub struct Inbox {
    life: Lifecycle,
    policy: HandOverPolicy,
}

impl Inbox {
    /// An inbox with the default policy.
    pub fn new(life: &Lifecycle) -> Self {
        Self::with_policy(life, HandOverPolicy::default())
    }

    /// An inbox with `policy`.
    pub fn with_policy(life: &Lifecycle, policy: HandOverPolicy) -> Self {
        Self {
            life: life.clone(),
            policy,
        }
    }

    /// `on_inbound` until accepted or poison. `Err(Stopped)` only at teardown.
    pub async fn deliver(&self, event: InboundEvent) -> Result<Handed, Stopped> {
        let what = format!("message {} of chat {}", event.message_id, event.chat_id);
        self.hand_over(&what, move |host| host.on_inbound(event.clone()))
            .await
    }

    /// `on_action` until accepted or poison.
    pub async fn action(&self, event: ActionEvent) -> Result<Handed, Stopped> {
        let what = format!("button click on message {}", event.message_id);
        self.hand_over(&what, move |host| host.on_action(event.clone()))
            .await
    }

    /// `on_deleted` until accepted or poison: the sender deleted a message they had sent.
    pub async fn deleted(&self, event: DeletionEvent) -> Result<Handed, Stopped> {
        let what = format!(
            "deletion of message {} in chat {}",
            event.message_id, event.chat_id
        );
        self.hand_over(&what, move |host| host.on_deleted(event.clone()))
            .await
    }

    /// Calls `call` (a blocking host call, run off the async workers) until the host
    /// accepts, or the event turns out to be poison. `what` names the event in logs.
    pub async fn hand_over<F>(&self, what: &str, call: F) -> Result<Handed, Stopped>
    where
        F: Fn(&Host) -> Result<(), PluginError> + Clone + Send + 'static,
    {
        let life = &self.life;
        let max_refusals = self.policy.max_refusals.max(1);
        let mut backoff = self.policy.backoff.clone().start();
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            let attempt = call.clone();
            let error = match life.host_call(move |host| attempt(host)).await? {
                Ok(()) => {
                    if attempts > 1 {
                        life.log(
                            LogLevel::INFO,
                            format!("the host accepted {what} after {attempts} attempts"),
                        );
                        life.health().ok();
                    }
                    return Ok(Handed::Accepted { attempts });
                }
                Err(error) => error,
            };
            // INVALID_INPUT or UNSUPPORTED (an older host): the host will never take this
            // event; waiting changes nothing.
            let never = [ErrorKind::INVALID_INPUT, ErrorKind::UNSUPPORTED].contains(&error.kind);
            if never || attempts >= max_refusals {
                life.log(
                    LogLevel::ERROR,
                    format!(
                        "skipping {what}: the host refused it {attempts} time(s), last with \
                         ({error}); the events after it go on"
                    ),
                );
                life.health().skipped(format!("{what}: {error}"));
                life.health().ok();
                return Ok(Handed::Skipped {
                    error,
                    refusals: attempts,
                });
            }
            // The backoff's own attempt limit does not apply here: max_refusals does.
            let delay = backoff
                .next_delay()
                .unwrap_or_else(|| self.policy.backoff.start().next_delay().unwrap_or_default());
            let detail = format!(
                "the host did not accept {what} ({error}); retrying in {:.1}s",
                delay.as_secs_f64()
            );
            if attempts == 1 || attempts.is_multiple_of(10) {
                life.log(LogLevel::WARN, &detail);
            }
            life.health().degraded(detail);
            life.stop_signal().sleep(delay).await?;
        }
    }

    /// [`Inbox::deliver`] once per platform message id: a redelivered event is skipped.
    /// The id is recorded once the host took the event (or it was skipped as poison); an
    /// event handed over concurrently (a platform retry racing the original) is skipped too.
    pub async fn deliver_once(
        &self,
        dedupe: &Dedupe,
        event: InboundEvent,
    ) -> Result<Delivery, Stopped> {
        let key = format!("{}:{}", event.chat_id, event.message_id);
        let claim = {
            let dedupe = dedupe.clone();
            let key = key.clone();
            self.life.host_call(move |_| dedupe.claim(&key)).await?
        };
        let claim = match claim {
            Ok(Claimed::New(claim)) => claim,
            Ok(Claimed::Seen) => return Ok(Delivery::Duplicate),
            Ok(Claimed::InProgress) => return Ok(Delivery::InProgress),
            Err(e) => {
                // Without the store we cannot dedupe; a duplicate beats a lost message.
                self.life.log(
                    LogLevel::WARN,
                    format!("dedupe store unavailable for {key} ({e}); handing it over anyway"),
                );
                return self.deliver(event).await.map(Delivery::Handed);
            }
        };
        let handed = match self.deliver(event).await {
            Ok(handed) => handed,
            Err(Stopped) => {
                // The pending mark expires on its own (no host call during teardown); a
                // redelivery after that is taken, and the host dedupes by message id.
                drop(claim);
                return Err(Stopped);
            }
        };
        let committed = self.life.host_call(move |_| claim.commit()).await?;
        if let Err(e) = committed {
            self.life.log(
                LogLevel::WARN,
                format!("could not record {key} as handled ({e}); a redelivery may repeat it"),
            );
        }
        Ok(Delivery::Handed(handed))
    }

    /// For webhooks: hands an event over **once**, without retrying, so the request is
    /// answered within the host's call timeout; the platform's redelivery is the retry.
    /// `call` is the host call (`on_inbound` or `on_action`), `event_id` the platform's id
    /// of the event, remembered in `dedupe` once the host took it.
    ///
    /// Answer [`Offered::Refused`] and [`Offered::InProgress`] so the platform redelivers
    /// (503), the others as received (200). A refusal releases the id, so the redelivery is
    /// taken; an `INVALID_INPUT` refusal (the host will never take the event) is skipped
    /// like a poison event and remembered as handled.
    pub async fn offer_once<F>(
        &self,
        dedupe: &Dedupe,
        event_id: &str,
        call: F,
    ) -> Result<Offered, Stopped>
    where
        F: FnOnce(&Host) -> Result<(), PluginError> + Send + 'static,
    {
        let life = &self.life;
        let claim = {
            let (dedupe, id) = (dedupe.clone(), event_id.to_owned());
            life.host_call(move |_| dedupe.claim(&id)).await?
        };
        let claim = match claim {
            Ok(Claimed::New(claim)) => Some(claim),
            Ok(Claimed::Seen) => return Ok(Offered::Duplicate),
            Ok(Claimed::InProgress) => return Ok(Offered::InProgress),
            Err(e) => {
                // Without the store we cannot dedupe; a duplicate beats a lost message.
                life.warn(format!(
                    "dedupe store unavailable for event {event_id} ({e}); handing it over anyway"
                ));
                None
            }
        };
        // On Stopped the pending mark expires on its own and a redelivery is taken.
        let offered = match life.host_call(call).await? {
            Ok(()) => Offered::Accepted,
            Err(error) if error.kind == ErrorKind::INVALID_INPUT => {
                life.error(format!(
                    "skipping event {event_id}: the host will never take it ({error})"
                ));
                life.health().skipped(format!("event {event_id}: {error}"));
                Offered::Skipped(error)
            }
            Err(error) => {
                life.warn(format!(
                    "the host did not take event {event_id} ({error}); the platform will \
                     redeliver it"
                ));
                Offered::Refused(error)
            }
        };
        if let Some(claim) = claim {
            let handled = !matches!(offered, Offered::Refused(_));
            let recorded = life
                .host_call(move |_| {
                    if handled {
                        claim.commit()
                    } else {
                        claim.release().map(drop)
                    }
                })
                .await?;
            if let Err(e) = recorded {
                life.warn(format!(
                    "could not record event {event_id} ({e}); a redelivery may repeat it"
                ));
            }
        }
        Ok(offered)
    }
}

/// What [`Inbox::offer_once`] did.
#[derive(Debug, Clone, PartialEq)]
#[must_use]
pub enum Offered {
    /// The host took it.
    Accepted,
    /// Handled before: not handed over again.
    Duplicate,
    /// Being handed over right now by another request: not handed over again.
    InProgress,
    /// The host did not take it (the id was released): let the platform redeliver.
    Refused(PluginError),
    /// The host will never take it (`INVALID_INPUT`): logged, reported in the health
    /// detail, and remembered as handled.
    Skipped(PluginError),
}

impl Offered {
    /// True when the platform should redeliver the event later (answer 503).
    pub fn redeliver(&self) -> bool {
        matches!(self, Self::Refused(_) | Self::InProgress)
    }
}

/// What [`Inbox::deliver_once`] did.
#[derive(Debug, Clone, PartialEq)]
#[must_use]
pub enum Delivery {
    /// Handed over (accepted or skipped as poison).
    Handed(Handed),
    /// Already handled before: not handed over again.
    Duplicate,
    /// Being handed over right now by another call: not handed over again.
    InProgress,
}

/// Persisted dedupe of platform message ids in the host's state store, namespaced under
/// `dedupe:<namespace>:`. A claim is first written as pending with a short expiry, and
/// marked done (kept for `ttl`) once handled, so a crash mid-way loses nothing: the pending
/// mark expires and the platform's redelivery is taken.
#[derive(Clone)]
pub struct Dedupe {
    host: Host,
    prefix: String,
    ttl: Duration,
    claim_ttl: Duration,
}

/// The answer of [`Dedupe::claim`].
#[must_use]
pub enum Claimed {
    /// First time: handle it, then [`DedupeClaim::commit`] (or `release` to allow a retry).
    New(DedupeClaim),
    /// Already handled.
    Seen,
    /// Being handled elsewhere right now.
    InProgress,
}

const PENDING: &str = "pending";
const DONE: &str = "done";

impl Dedupe {
    /// Remembers handled ids for `ttl` (make it longer than the platform's redelivery
    /// window; a day is typical). Pending claims expire after two minutes.
    pub fn new(host: Host, namespace: &str, ttl: Duration) -> Self {
        Self {
            host,
            prefix: format!("dedupe:{namespace}:"),
            ttl,
            claim_ttl: Duration::from_secs(120),
        }
    }

    /// Sets how long an unfinished claim blocks redeliveries.
    pub fn claim_ttl(mut self, claim_ttl: Duration) -> Self {
        self.claim_ttl = claim_ttl;
        self
    }

    /// Claims `id` (a blocking host call: from async code use [`Lifecycle::host_call`]).
    pub fn claim(&self, id: &str) -> Result<Claimed, PluginError> {
        let key = format!("{}{id}", self.prefix);
        // Two rounds: a pending mark may expire between our two reads.
        for _ in 0..2 {
            if self
                .host
                .kv_set_if_absent(&key, PENDING, Some(millis(self.claim_ttl)))?
            {
                return Ok(Claimed::New(DedupeClaim {
                    host: self.host.clone(),
                    key,
                    ttl: self.ttl,
                }));
            }
            match self.host.kv_get(&key)?.as_deref() {
                Some(PENDING) => return Ok(Claimed::InProgress),
                Some(_) => return Ok(Claimed::Seen),
                None => continue,
            }
        }
        Ok(Claimed::InProgress)
    }
}

/// A pending dedupe mark. Dropped without `commit` or `release`, it expires on its own.
pub struct DedupeClaim {
    host: Host,
    key: String,
    ttl: Duration,
}

impl DedupeClaim {
    /// Handled: later claims of this id answer [`Claimed::Seen`] for the dedupe's ttl.
    pub fn commit(self) -> Result<(), PluginError> {
        self.host.kv_set(&self.key, DONE, Some(millis(self.ttl)))
    }

    /// Not handled: the next claim gets it again.
    pub fn release(self) -> Result<bool, PluginError> {
        self.host.kv_delete(&self.key)
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abi::HealthStatus;
    use crate::kit::testing::MemoryHost;

    fn fast() -> HandOverPolicy {
        HandOverPolicy {
            backoff: BackoffPolicy::exponential(Duration::from_millis(1), Duration::from_millis(4)),
            max_refusals: 3,
        }
    }

    fn event(id: &str) -> InboundEvent {
        InboundEvent {
            chat_id: "c".into(),
            message_id: id.into(),
            text: format!("text {id}").into(),
            ..Default::default()
        }
    }

    fn with_inbox<T>(
        mem: &MemoryHost,
        policy: HandOverPolicy,
        f: impl AsyncFnOnce(Inbox, Lifecycle) -> T,
    ) -> T {
        let rt = crate::kit::runtime("inbox-test", 1).expect("runtime");
        let life = Lifecycle::detached(rt.handle().clone(), mem.host(), "inbox_test");
        let inbox = Inbox::with_policy(&life, policy);
        rt.block_on(f(inbox, life))
    }

    #[test]
    fn accepted_at_once_or_after_refusals() {
        let mem = MemoryHost::new();
        let handed = with_inbox(&mem, fast(), async |inbox, _| {
            inbox.deliver(event("1")).await
        });
        assert_eq!(handed, Ok(Handed::Accepted { attempts: 1 }));

        mem.set_reject_inbound(Some(PluginError::other("db busy")));
        let mem2 = mem.clone();
        let handed = with_inbox(
            &mem,
            HandOverPolicy {
                max_refusals: 100,
                ..fast()
            },
            async |inbox, life| {
                let releaser = std::thread::spawn(move || {
                    std::thread::sleep(Duration::from_millis(30));
                    mem2.set_reject_inbound(None);
                });
                let handed = inbox.deliver(event("2")).await;
                releaser.join().expect("join");
                assert_eq!(life.health().status(), HealthStatus::OK);
                handed
            },
        );
        assert!(matches!(handed, Ok(Handed::Accepted { attempts }) if attempts > 1));
        assert_eq!(mem.inbound().len(), 2);
        assert!(mem.logs().iter().any(|l| l.message.contains("db busy")));
    }

    #[test]
    fn poison_is_skipped_after_max_refusals_or_at_once_when_invalid() {
        let mem = MemoryHost::new();
        mem.set_reject_inbound(Some(PluginError::other("cannot store")));
        let (handed, health) = with_inbox(&mem, fast(), async |inbox, life| {
            (inbox.deliver(event("7")).await, life.health().get())
        });
        match handed {
            Ok(Handed::Skipped { refusals, error }) => {
                assert_eq!(refusals, 3);
                assert!(error.message.contains("cannot store"));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            health.status,
            HealthStatus::OK,
            "no longer degraded once skipped"
        );
        assert!(
            health.detail.contains("skipped 1 inbound event"),
            "{health:?}"
        );
        assert!(health.detail.contains("message 7 of chat c"), "{health:?}");
        assert!(
            mem.logs()
                .iter()
                .any(|l| l.level == LogLevel::ERROR && l.message.contains("skipping message 7"))
        );

        mem.set_reject_inbound(Some(PluginError::invalid_input("bad chat id")));
        let handed = with_inbox(
            &mem,
            HandOverPolicy {
                max_refusals: 100,
                ..fast()
            },
            async |inbox, _| inbox.deliver(event("8")).await,
        );
        assert!(
            matches!(handed, Ok(Handed::Skipped { refusals: 1, .. })),
            "{handed:?}"
        );
    }

    #[test]
    fn stop_ends_a_hand_over() {
        let mem = MemoryHost::new();
        mem.set_reject_inbound(Some(PluginError::other("busy")));
        let policy = HandOverPolicy {
            backoff: BackoffPolicy::exponential(Duration::from_secs(60), Duration::from_secs(60)),
            max_refusals: 100,
        };
        let handed = with_inbox(&mem, policy, async |inbox, life| {
            let stopper = life.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                stopper.stop();
            });
            inbox.deliver(event("1")).await
        });
        assert_eq!(handed, Err(Stopped));
    }

    #[test]
    fn dedupe_claims_commits_and_releases() {
        let mem = MemoryHost::new();
        let dedupe = Dedupe::new(mem.host(), "t", Duration::from_secs(3600));
        let Ok(Claimed::New(claim)) = dedupe.claim("m1") else {
            panic!("first claim")
        };
        assert!(matches!(dedupe.claim("m1"), Ok(Claimed::InProgress)));
        claim.commit().expect("commit");
        assert!(matches!(dedupe.claim("m1"), Ok(Claimed::Seen)));
        let Ok(Claimed::New(claim)) = dedupe.claim("m2") else {
            panic!("m2")
        };
        assert!(claim.release().expect("release"));
        assert!(matches!(dedupe.claim("m2"), Ok(Claimed::New(_))));
        // An abandoned claim expires.
        let short =
            Dedupe::new(mem.host(), "s", Duration::from_secs(3600)).claim_ttl(Duration::ZERO);
        assert!(matches!(short.claim("m3"), Ok(Claimed::New(_))));
        assert!(matches!(short.claim("m3"), Ok(Claimed::New(_))));
        assert_eq!(
            mem.host().kv_get("dedupe:t:m1").expect("get").as_deref(),
            Some("done")
        );
    }

    #[test]
    fn deliver_once_hands_each_id_over_once() {
        let mem = MemoryHost::new();
        let dedupe = Dedupe::new(mem.host(), "in", Duration::from_secs(3600));
        let outcomes = with_inbox(&mem, fast(), async |inbox, _| {
            let mut outcomes = Vec::new();
            for id in ["a", "b", "a", "b", "c"] {
                outcomes.push(inbox.deliver_once(&dedupe, event(id)).await);
            }
            outcomes
        });
        let accepted = Ok(Delivery::Handed(Handed::Accepted { attempts: 1 }));
        assert_eq!(
            outcomes,
            [
                accepted.clone(),
                accepted.clone(),
                Ok(Delivery::Duplicate),
                Ok(Delivery::Duplicate),
                accepted,
            ]
        );
        let ids: Vec<String> = mem
            .inbound()
            .iter()
            .map(|e| e.message_id.to_string())
            .collect();
        assert_eq!(ids, ["a", "b", "c"]);
    }

    #[test]
    fn offer_once_tries_once_and_leaves_retries_to_the_platform() {
        let mem = MemoryHost::new();
        let dedupe = Dedupe::new(mem.host(), "hook", Duration::from_secs(3600));
        let offer = |inbox: &Inbox, id: &'static str| {
            let event = event(id);
            let dedupe = dedupe.clone();
            let inbox = inbox.clone();
            async move {
                inbox
                    .offer_once(&dedupe, id, move |host| host.on_inbound(event))
                    .await
            }
        };
        let mem2 = mem.clone();
        let outcomes = with_inbox(&mem, fast(), async |inbox, life| {
            let mut outcomes = vec![offer(&inbox, "a").await, offer(&inbox, "a").await];
            mem2.set_reject_inbound(Some(PluginError::other("db busy")));
            outcomes.push(offer(&inbox, "b").await);
            mem2.set_reject_inbound(None);
            outcomes.push(offer(&inbox, "b").await);
            mem2.set_reject_inbound(Some(PluginError::invalid_input("bad chat")));
            outcomes.push(offer(&inbox, "c").await);
            mem2.set_reject_inbound(None);
            outcomes.push(offer(&inbox, "c").await);
            assert!(life.health().get().detail.contains("event c"));
            outcomes
        });
        assert_eq!(
            outcomes,
            [
                Ok(Offered::Accepted),
                Ok(Offered::Duplicate),
                Ok(Offered::Refused(PluginError::other("db busy"))),
                Ok(Offered::Accepted),
                Ok(Offered::Skipped(PluginError::invalid_input("bad chat"))),
                Ok(Offered::Duplicate),
            ]
        );
        let ids: Vec<String> = mem
            .inbound()
            .iter()
            .map(|e| e.message_id.to_string())
            .collect();
        assert_eq!(ids, ["a", "b"], "one attempt per offer, no retries");
        assert!(Offered::Refused(PluginError::other("x")).redeliver());
        assert!(Offered::InProgress.redeliver());
        assert!(!Offered::Duplicate.redeliver());
    }
}
