//! A harness for fake chat platforms in tests, on 127.0.0.1 only.
//!
//! A platform's fake is an axum [`Router`] (its API, as strict as the platform) plus a few
//! lines of setup; the harness serves it and adds what every fake needs:
//!
//! * an HTTP server on an ephemeral (or given) port of 127.0.0.1, on its own thread and
//!   runtime, so blocking tests can use it;
//! * a call log ([`Call`]: method, path, query, headers, body, time) of every request;
//! * scripted [`Fault`]s per route: an answer such as `429` with `Retry-After` or a `5xx`,
//!   a delay, a dropped connection;
//! * held requests ([`Harness::hold_next`]): a call waits until the test releases or
//!   discards it, with the platform committing the call before answering or only on
//!   release ([`Commit`]), so a test can kill a client mid-call and decide whether the
//!   platform counts the call as received;
//! * WebSocket endpoints ([`WsHub`]) for gateways.
//!
//! Routes are names the fake gives calls (the Bot API method, a REST resource), through
//! [`Harness::with_route_key`]; unnamed calls are logged but never faulted. Paths under
//! [`Harness::with_control_prefix`] (a fake's own control API) are neither.
//!
//! ```no_run
//! use axum::{Router, routing::post};
//! use nanoclaw_fake_platform::{Commit, FakeServer, Fault, Harness, Route};
//! use std::time::Duration;
//!
//! let harness = Harness::new().with_route_key(|parts| Some(parts.uri.path().to_owned()));
//! let router = Router::new().route("/api/send", post(|| async { "{\"ok\":true}" }));
//! let server = FakeServer::start(harness.clone(), router).expect("serve");
//! harness.fail_next(Route::named("/api/send"), 1, Fault::rate_limited(Duration::from_secs(2)));
//! let hold = harness.hold_next(Route::named("/api/send"), Commit::AfterRelease);
//! // … point the plugin at server.base_url(), kill it mid-call, then:
//! harness.discard(hold);
//! # drop(server);
//! ```
//!
//! This crate is for tests only: plugins take it as a dev-dependency.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Body;
use axum::http::request::Parts;
use axum::http::{HeaderName, HeaderValue, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::sync::{oneshot, watch};
use tower::ServiceExt as _;

pub mod jwt;
mod rules;
mod ws;

use rules::{Action, Rule};
pub use rules::{Commit, Fault, HoldId, HoldInfo, HoldState, Route};
pub use ws::{ConnId, WsFrame, WsHub, WsMessage};

/// Request bodies up to this size are read and logged (platform uploads fit).
pub const BODY_LIMIT: usize = 64 * 1024 * 1024;

/// One request the fake received.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Call {
    /// 1, 2, 3… in arrival order.
    pub seq: u64,
    /// The route name the fake gave it (`None`: not a platform call).
    pub route: Option<String>,
    /// `GET`, `POST`, …
    pub method: String,
    /// The path.
    pub path: String,
    /// The raw query string (without `?`).
    pub query: String,
    /// Headers in arrival order, names lowercase.
    pub headers: Vec<(String, String)>,
    /// The body (not in the JSON form of the log).
    #[serde(skip)]
    pub body: Vec<u8>,
    /// Wall-clock time it arrived, ms since the Unix epoch.
    pub at_ms: i64,
    /// Time since the server started.
    pub since_start: Duration,
    /// The fault applied to it, by its label.
    pub fault: Option<String>,
}

impl Call {
    /// The first header with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as UTF-8.
    pub fn body_text(&self) -> Option<&str> {
        std::str::from_utf8(&self.body).ok()
    }

    /// The body as JSON.
    pub fn body_json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }
}

/// Names a request's route (`None`: not a platform call).
pub type RouteKeyFn = dyn Fn(&Parts) -> Option<String> + Send + Sync;
/// Told of each fault applied: (the call's route, the fault).
pub type FaultHookFn = dyn Fn(&str, &Fault) + Send + Sync;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decision {
    Pending,
    Release,
    Discard,
}

struct Hold {
    info: HoldInfo,
    decision: watch::Sender<Decision>,
}

struct State {
    calls: Vec<Call>,
    rules: Vec<Rule>,
    holds: Vec<Hold>,
}

struct Inner {
    state: Mutex<State>,
    started: Instant,
    route_key: RwLock<Option<Arc<RouteKeyFn>>>,
    fault_hook: RwLock<Option<Arc<FaultHookFn>>>,
    control_prefix: RwLock<Option<String>>,
}

/// The test's handle on a fake: its call log, faults and holds. Clones share them; give
/// one to the fake's router state when its control API needs them.
#[derive(Clone)]
pub struct Harness {
    inner: Arc<Inner>,
}

impl Default for Harness {
    fn default() -> Self {
        Self::new()
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Polls `check` every 5 ms until it is true or `timeout` passes.
fn poll(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if check() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

impl Harness {
    /// A harness where no call is named (nothing can be faulted until
    /// [`with_route_key`](Self::with_route_key)).
    pub fn new() -> Self {
        Self {
            inner: Arc::new(Inner {
                state: Mutex::new(State {
                    calls: Vec::new(),
                    rules: Vec::new(),
                    holds: Vec::new(),
                }),
                started: Instant::now(),
                route_key: RwLock::new(None),
                fault_hook: RwLock::new(None),
                control_prefix: RwLock::new(None),
            }),
        }
    }

    /// How calls are named for faults and holds.
    pub fn with_route_key(
        self,
        f: impl Fn(&Parts) -> Option<String> + Send + Sync + 'static,
    ) -> Self {
        *self
            .inner
            .route_key
            .write()
            .unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(f));
        self
    }

    /// Called for every fault applied, with the call's route (a fake can record injected
    /// failures in its own log).
    pub fn with_fault_hook(self, f: impl Fn(&str, &Fault) + Send + Sync + 'static) -> Self {
        *self
            .inner
            .fault_hook
            .write()
            .unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(f));
        self
    }

    /// Paths starting with `prefix` (the fake's control API) are neither logged nor faulted.
    pub fn with_control_prefix(self, prefix: &str) -> Self {
        *self
            .inner
            .control_prefix
            .write()
            .unwrap_or_else(|p| p.into_inner()) = Some(prefix.to_owned());
        self
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    // ------------------------------------------------------------------------------------
    // Call log
    // ------------------------------------------------------------------------------------

    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.state().calls.clone()
    }

    /// The calls of one route.
    pub fn calls_to(&self, route: &str) -> Vec<Call> {
        self.state()
            .calls
            .iter()
            .filter(|c| c.route.as_deref() == Some(route))
            .cloned()
            .collect()
    }

    /// Forgets the calls so far.
    pub fn clear_calls(&self) {
        self.state().calls.clear();
    }

    /// Waits (blocking, polling) until `check` holds for the call log.
    pub fn wait_for_calls(
        &self,
        timeout: Duration,
        mut check: impl FnMut(&[Call]) -> bool,
    ) -> bool {
        poll(timeout, || check(&self.state().calls))
    }

    fn record(&self, parts: &Parts, body: &[u8], route: Option<String>) -> u64 {
        let mut state = self.state();
        let seq = state.calls.len() as u64 + 1;
        state.calls.push(Call {
            seq,
            route,
            method: parts.method.to_string(),
            path: parts.uri.path().to_owned(),
            query: parts.uri.query().unwrap_or_default().to_owned(),
            headers: parts
                .headers
                .iter()
                .map(|(n, v)| {
                    (
                        n.as_str().to_owned(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect(),
            body: body.to_vec(),
            at_ms: now_ms(),
            since_start: self.inner.started.elapsed(),
            fault: None,
        });
        seq
    }

    // ------------------------------------------------------------------------------------
    // Faults
    // ------------------------------------------------------------------------------------

    /// The next `count` calls matching `route` get `fault` (rules apply in the order armed).
    pub fn fail_next(&self, route: Route, count: u32, fault: Fault) {
        if count > 0 {
            self.state().rules.push(Rule {
                route,
                remaining: count,
                fault,
            });
        }
    }

    /// Disarms every fault and hold not yet applied.
    pub fn clear_faults(&self) {
        let mut state = self.state();
        state.rules.clear();
        for hold in state
            .holds
            .iter_mut()
            .filter(|h| h.info.state == HoldState::Armed)
        {
            hold.info.state = HoldState::Released;
            hold.decision.send_replace(Decision::Release);
        }
    }

    /// Takes the fault for call `seq` of `route`, if one is armed, and logs it.
    fn take_fault(&self, route: &str, seq: u64) -> Option<Fault> {
        let fault = {
            let mut state = self.state();
            let rule = state
                .rules
                .iter_mut()
                .find(|r| r.remaining > 0 && r.route.matches(route))?;
            rule.remaining -= 1;
            let fault = rule.fault.clone();
            state.rules.retain(|r| r.remaining > 0);
            if let Action::Hold(id, _) = fault.action
                && let Some(hold) = state.holds.iter_mut().find(|h| h.info.id == id)
            {
                hold.info.call = Some(seq);
            }
            if let Some(call) = state.calls.iter_mut().rev().find(|c| c.seq == seq) {
                call.fault = Some(fault.label().to_owned());
            }
            fault
        };
        let hook = self
            .inner
            .fault_hook
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some(hook) = hook {
            hook(route, &fault);
        }
        Some(fault)
    }

    // ------------------------------------------------------------------------------------
    // Holds
    // ------------------------------------------------------------------------------------

    /// The next call matching `route` is held until [`release`](Self::release) or
    /// [`discard`](Self::discard); see [`Commit`] for when the platform handles it.
    pub fn hold_next(&self, route: Route, commit: Commit) -> HoldId {
        let mut state = self.state();
        let id = HoldId(state.holds.len() as u64 + 1);
        let (decision, _) = watch::channel(Decision::Pending);
        state.holds.push(Hold {
            info: HoldInfo {
                id,
                route: route.clone(),
                commit,
                state: HoldState::Armed,
                call: None,
            },
            decision,
        });
        state.rules.push(Rule {
            route,
            remaining: 1,
            fault: Fault::hold(id, commit),
        });
        id
    }

    /// One hold.
    pub fn hold(&self, id: HoldId) -> Option<HoldInfo> {
        self.state()
            .holds
            .iter()
            .find(|h| h.info.id == id)
            .map(|h| h.info.clone())
    }

    /// Every hold, oldest first.
    pub fn holds(&self) -> Vec<HoldInfo> {
        self.state().holds.iter().map(|h| h.info.clone()).collect()
    }

    /// Waits (blocking, polling) until hold `id` has caught a call.
    pub fn wait_held(&self, id: HoldId, timeout: Duration) -> bool {
        poll(timeout, || {
            self.hold(id).is_some_and(|h| h.state == HoldState::Waiting)
        })
    }

    fn decide(&self, id: HoldId, decision: Decision) -> bool {
        let mut state = self.state();
        let armed_rule = |rule: &Rule| matches!(rule.fault.action, Action::Hold(h, _) if h == id);
        let Some(hold) = state.holds.iter_mut().find(|h| h.info.id == id) else {
            return false;
        };
        let was = hold.info.state;
        if !matches!(was, HoldState::Armed | HoldState::Waiting) {
            return false;
        }
        hold.info.state = match decision {
            Decision::Discard => HoldState::Discarded,
            _ => HoldState::Released,
        };
        hold.decision.send_replace(decision);
        if was == HoldState::Armed {
            // Not caught yet: it never will be.
            state.rules.retain(|r| !armed_rule(r));
        }
        true
    }

    /// Lets the held call go on (or disarms a hold that caught nothing yet). False when
    /// the hold does not exist or was already decided.
    pub fn release(&self, id: HoldId) -> bool {
        self.decide(id, Decision::Release)
    }

    /// Drops the held call's connection; with [`Commit::AfterRelease`] the platform never
    /// handles it. False when the hold does not exist or was already decided.
    pub fn discard(&self, id: HoldId) -> bool {
        self.decide(id, Decision::Discard)
    }

    /// Marks hold `id` waiting and waits for the test's decision.
    async fn wait_decision(&self, id: HoldId) -> Decision {
        let receiver = {
            let mut state = self.state();
            let Some(hold) = state.holds.iter_mut().find(|h| h.info.id == id) else {
                return Decision::Release;
            };
            if hold.info.state == HoldState::Armed {
                hold.info.state = HoldState::Waiting;
            }
            hold.decision.subscribe()
        };
        let mut receiver = receiver;
        match receiver.wait_for(|d| *d != Decision::Pending).await {
            Ok(decision) => *decision,
            // The harness is gone: let the call through.
            Err(_) => Decision::Release,
        }
    }

    fn route_of(&self, parts: &Parts) -> Option<String> {
        let key = self
            .inner
            .route_key
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()?;
        key(parts)
    }

    fn is_control(&self, path: &str) -> bool {
        self.inner
            .control_prefix
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_deref()
            .is_some_and(|prefix| path.starts_with(prefix))
    }
}

/// A running fake. Dropping it stops the server.
pub struct FakeServer {
    addr: SocketAddr,
    harness: Harness,
    shutdown: watch::Sender<bool>,
    thread: Option<JoinHandle<()>>,
}

/// The connection is closed without an answer.
#[derive(Debug)]
struct Dropped;

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped on purpose")
    }
}

impl std::error::Error for Dropped {}

impl FakeServer {
    /// Serves `router` on a free port of 127.0.0.1.
    pub fn start(harness: Harness, router: Router) -> std::io::Result<Self> {
        Self::start_on(0, "fake-platform", harness, router)
    }

    /// Serves `router` on `port` of 127.0.0.1 (0 = any free port), on a thread named
    /// `name`.
    pub fn start_on(
        port: u16,
        name: &str,
        harness: Harness,
        router: Router,
    ) -> std::io::Result<Self> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, port))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name(name)
            .enable_all()
            .build()?;
        let listener = {
            let _guard = runtime.enter();
            tokio::net::TcpListener::from_std(listener)?
        };
        let (shutdown, stop) = watch::channel(false);
        let served = harness.clone();
        let thread = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                runtime.block_on(serve(listener, served, router, stop));
                runtime.shutdown_timeout(Duration::from_secs(1));
            })?;
        Ok(Self {
            addr,
            harness,
            shutdown,
            thread: Some(thread),
        })
    }

    /// `http://127.0.0.1:<port>`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `ws://127.0.0.1:<port><path>`.
    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.addr)
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The call log, faults and holds.
    pub fn harness(&self) -> &Harness {
        &self.harness
    }

    /// Stops the server and waits for its thread.
    pub fn stop(mut self) {
        self.shutdown_now();
    }

    fn shutdown_now(&mut self) {
        self.shutdown.send_replace(true);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.shutdown_now();
    }
}

/// Accepts connections until `shutdown` turns true.
async fn serve(
    listener: tokio::net::TcpListener,
    harness: Harness,
    router: Router,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let stream = tokio::select! {
            _ = shutdown.wait_for(|stop| *stop) => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => continue,
            },
        };
        let router = router.clone();
        let harness = harness.clone();
        let mut conn_shutdown = shutdown.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                handle(harness.clone(), router.clone(), req)
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            tokio::select! {
                _ = conn => {}
                _ = conn_shutdown.wait_for(|stop| *stop) => {}
            }
        });
    }
}

async fn run(router: Router, req: Request<Body>) -> Response {
    match router.oneshot(req).await {
        Ok(response) => response,
        Err(never) => match never {},
    }
}

fn canned(status: u16, headers: &[(String, String)], body: &[u8]) -> Response {
    let mut response = (
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        body.to_vec(),
    )
        .into_response();
    for (name, value) in headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::try_from(name.as_str()),
            HeaderValue::from_str(value),
        ) {
            response.headers_mut().insert(name, value);
        }
    }
    response
}

/// Logs the call and applies its fault, if any, around the fake's router.
async fn handle(
    harness: Harness,
    router: Router,
    req: Request<Incoming>,
) -> Result<Response, Dropped> {
    let (parts, body) = req.into_parts();
    if harness.is_control(parts.uri.path()) {
        return Ok(run(router, Request::from_parts(parts, Body::new(body))).await);
    }
    let route = harness.route_of(&parts);
    let bytes = match axum::body::to_bytes(Body::new(body), BODY_LIMIT).await {
        Ok(bytes) => bytes,
        Err(_) => {
            harness.record(&parts, &[], route);
            return Ok((
                StatusCode::PAYLOAD_TOO_LARGE,
                "body too large or unreadable",
            )
                .into_response());
        }
    };
    let seq = harness.record(&parts, &bytes, route.clone());
    let fault = route.as_deref().and_then(|r| harness.take_fault(r, seq));
    let req = Request::from_parts(parts, Body::from(bytes));
    let Some(fault) = fault else {
        return Ok(run(router, req).await);
    };
    match fault.action {
        Action::Respond {
            status,
            ref headers,
            ref body,
        } => Ok(canned(status, headers, body)),
        Action::Delay(delay) => {
            tokio::time::sleep(delay).await;
            Ok(run(router, req).await)
        }
        Action::Drop => Err(Dropped),
        Action::Hold(id, commit) => {
            // The held call runs on its own task: what the platform commits must not depend
            // on whether the client's connection is still there.
            let (tx, rx) = oneshot::channel();
            tokio::spawn(async move {
                let answer = match commit {
                    Commit::AfterRelease => match harness.wait_decision(id).await {
                        Decision::Discard => None,
                        _ => Some(run(router, req).await),
                    },
                    Commit::BeforeResponding => {
                        let response = run(router, req).await;
                        match harness.wait_decision(id).await {
                            Decision::Discard => None,
                            _ => Some(response),
                        }
                    }
                };
                let _ = tx.send(answer);
            });
            match rx.await {
                Ok(Some(response)) => Ok(response),
                _ => Err(Dropped),
            }
        }
    }
}
