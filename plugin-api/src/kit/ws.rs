//! A reconnecting WebSocket client (feature `kit-ws`), for gateways such as Discord's or
//! Slack's Socket Mode.
//!
//! [`run`] connects, lets the [`WsHandler`] say what to send first (identify on a fresh
//! session, resume after a drop), delivers every message to it, sends heartbeats at an
//! interval the handler can change (Discord announces it in its hello), reconnects with the
//! kit's backoff when the socket drops or goes silent, and closes cleanly when the
//! lifecycle stops. Health follows along: `OK` while connected, `DEGRADED` while
//! reconnecting, ingest time on every message.
//!
//! ```no_run
//! use nanoclaw_plugin_api::kit::ws::{self, Flow, Message, Session, WsConfig, WsHandler};
//! use nanoclaw_plugin_api::kit::Lifecycle;
//!
//! struct Gateway { session_id: Option<String> }
//!
//! impl WsHandler for Gateway {
//!     async fn on_connect(&mut self, session: &mut Session) -> Flow {
//!         let first = match &self.session_id {
//!             Some(id) => format!(r#"{{"op":6,"d":{{"session_id":"{id}"}}}}"#), // resume
//!             None => r#"{"op":2,"d":{}}"#.to_owned(),                          // identify
//!         };
//!         session.send(Message::text(first));
//!         Flow::Continue
//!     }
//!     async fn on_message(&mut self, message: Message, _session: &mut Session) -> Flow {
//!         // parse, hand events to the host with kit::Inbox, remember the session id…
//!         Flow::Continue
//!     }
//! }
//!
//! # async fn demo(life: Lifecycle) {
//! let config = WsConfig::new("wss://gateway.discord.gg/?v=10&encoding=json");
//! let _ = ws::run(&life, config, &mut Gateway { session_id: None }).await;
//! # }
//! ```

use std::future::Future;
use std::time::Duration;

use futures::{SinkExt as _, StreamExt as _};
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
pub use tokio_tungstenite::tungstenite::protocol::CloseFrame;
pub use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
pub use tokio_tungstenite::tungstenite::{Bytes, Message, Utf8Bytes};

use super::lifecycle::{Lifecycle, Stopped};
use super::retry::BackoffPolicy;
use super::{Secret, redact_all};
use crate::abi::LogLevel;

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct WsConfig {
    url: Secret,
    headers: Vec<(String, Secret)>,
    heartbeat: Option<Duration>,
    idle_timeout: Option<Duration>,
    connect_timeout: Duration,
    backoff: BackoffPolicy,
}

impl WsConfig {
    /// `ws://` or `wss://` URL (kept as a secret: gateways often put tokens in it).
    /// No heartbeat, no idle timeout, 10 s to connect, reconnects 1 s doubling to 60 s.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: Secret::new(url),
            headers: Vec::new(),
            heartbeat: None,
            idle_timeout: None,
            connect_timeout: Duration::from_secs(10),
            backoff: BackoffPolicy::exponential(Duration::from_secs(1), Duration::from_secs(60)),
        }
    }

    /// Adds a request header (`Authorization: Bearer …`); its value is kept out of logs.
    pub fn header(mut self, name: impl Into<String>, value: Secret) -> Self {
        self.headers.push((name.into(), value));
        self
    }

    /// Sends [`WsHandler::heartbeat`] every `interval` (the handler may change it).
    pub fn heartbeat(mut self, interval: Option<Duration>) -> Self {
        self.heartbeat = interval;
        self
    }

    /// Reconnects when nothing at all arrives for this long (a silently dead connection).
    pub fn idle_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// Time to open the connection (TCP, TLS and the WebSocket handshake).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Delays between reconnects (an attempt limit makes [`run`] give up).
    pub fn backoff(mut self, backoff: BackoffPolicy) -> Self {
        self.backoff = backoff;
        self
    }
}

/// What the handler wants next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Flow {
    /// Keep going.
    Continue,
    /// Drop this connection and connect again (after the backoff delay).
    Reconnect,
    /// Close and return from [`run`] with [`WsError::Stopped`] by the handler: nothing will
    /// work until an operator acts (a refused token).
    Stop(String),
}

/// Why the connection ended, for [`WsHandler::on_disconnect`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disconnect {
    /// The close code the server sent, if it sent a close frame.
    pub code: Option<u16>,
    /// What happened, for the log.
    pub reason: String,
}

/// The current connection, as the handler sees it.
pub struct Session {
    outgoing: Vec<Message>,
    heartbeat: Option<Duration>,
    first_heartbeat: Option<Duration>,
    heartbeat_changed: bool,
    connects: u32,
    sender: mpsc::UnboundedSender<Message>,
}

impl Session {
    /// Queues a message on this connection.
    pub fn send(&mut self, message: Message) {
        self.outgoing.push(message);
    }

    /// Changes (or stops, with `None`) the heartbeat from now on.
    pub fn set_heartbeat(&mut self, interval: Option<Duration>) {
        self.heartbeat = interval;
        self.first_heartbeat = None;
        self.heartbeat_changed = true;
    }

    /// Changes the heartbeat to every `interval`, the first one after `first` (Discord wants
    /// the first beat after a random fraction of the interval, so that clients reconnecting
    /// together do not beat together).
    pub fn set_heartbeat_after(&mut self, interval: Duration, first: Duration) {
        self.heartbeat = Some(interval);
        self.first_heartbeat = Some(first);
        self.heartbeat_changed = true;
    }

    /// How many connections were made so far, this one included: 1 on the first.
    pub fn connects(&self) -> u32 {
        self.connects
    }

    /// A handle other tasks can send through; messages go out on the current connection
    /// (ones queued while disconnected go out on the next).
    pub fn sender(&self) -> WsSender {
        WsSender(self.sender.clone())
    }
}

/// Sends messages on a running client's connection from other tasks.
#[derive(Debug, Clone)]
pub struct WsSender(mpsc::UnboundedSender<Message>);

impl WsSender {
    /// Queues `message`; false when the client has ended.
    pub fn send(&self, message: Message) -> bool {
        self.0.send(message).is_ok()
    }
}

/// The plugin's side of a gateway connection.
pub trait WsHandler: Send {
    /// A connection is open: send what the protocol wants first (identify, or resume when
    /// `session.connects() > 1` and the plugin kept a session id).
    fn on_connect(&mut self, session: &mut Session) -> impl Future<Output = Flow> + Send;

    /// A text or binary message arrived (pings and pongs are answered by the kit).
    fn on_message(
        &mut self,
        message: Message,
        session: &mut Session,
    ) -> impl Future<Output = Flow> + Send;

    /// The message to send at each heartbeat; `None` sends a WebSocket ping. Default: ping.
    fn heartbeat(&mut self) -> Option<Message> {
        None
    }

    /// A heartbeat is due, before [`heartbeat`](Self::heartbeat) is asked for it: return
    /// [`Flow::Reconnect`] when the server never acknowledged the previous one (a zombie
    /// connection that still looks open). Default: keep going.
    fn before_heartbeat(&mut self) -> Flow {
        Flow::Continue
    }

    /// Where to connect next, asked before every connection attempt. `Ok(None)` (the
    /// default) connects to [`WsConfig`]'s URL; gateways that hand out a fresh URL per
    /// connection (Slack's Socket Mode: `apps.connections.open`) return it here. A
    /// [`UrlError::Retry`] is retried with the reconnect backoff; [`UrlError::Stop`] ends
    /// [`run`] (a refused token: nothing works until an operator acts).
    fn connect_url(&mut self) -> impl Future<Output = Result<Option<Secret>, UrlError>> + Send {
        async { Ok(None) }
    }

    /// The connection ended (before a reconnect). Return [`Flow::Stop`] for close codes that
    /// mean "don't come back" (Discord's 4004, authentication failed). Default: reconnect.
    fn on_disconnect(&mut self, disconnect: &Disconnect) -> Flow {
        let _ = disconnect;
        Flow::Reconnect
    }
}

/// Why [`WsHandler::connect_url`] has no URL to give.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UrlError {
    /// Worth trying again after the backoff delay (the platform is unreachable).
    Retry(String),
    /// Give up: [`run`] returns [`WsError::Handler`] and health goes down.
    Stop(String),
}

/// Why [`run`] returned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WsError {
    /// The lifecycle stopped (teardown): the connection was closed cleanly.
    #[error("stopped")]
    Stopped,
    /// The handler asked to stop.
    #[error("stopped by the channel: {0}")]
    Handler(String),
    /// The backoff's attempt limit was reached.
    #[error("gave up reconnecting: {0}")]
    GaveUp(String),
    /// The configuration cannot work (a bad URL or header).
    #[error("invalid WebSocket configuration: {0}")]
    Config(String),
}

impl From<Stopped> for WsError {
    fn from(_: Stopped) -> Self {
        Self::Stopped
    }
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Runs the client until the lifecycle stops, the handler stops it, or the backoff gives up.
pub async fn run<H: WsHandler>(
    life: &Lifecycle,
    config: WsConfig,
    handler: &mut H,
) -> Result<(), WsError> {
    super::tls::install_crypto_provider();
    let stop = life.stop_signal();
    let secrets: Vec<&Secret> = std::iter::once(&config.url)
        .chain(config.headers.iter().map(|(_, v)| v))
        .collect();
    let redact = |text: String| redact_all(&text, &secrets);
    let (sender, mut queued) = mpsc::unbounded_channel::<Message>();
    let mut backoff = config.backoff.start();
    let mut connects = 0u32;
    loop {
        let url = match stop.run(handler.connect_url()).await? {
            Ok(url) => url,
            Err(UrlError::Stop(why)) => {
                let why = redact(why);
                life.health().down(why.clone());
                return Err(WsError::Handler(why));
            }
            Err(UrlError::Retry(why)) => {
                let why = redact(why);
                let Some(delay) = backoff.next_delay() else {
                    return Err(WsError::GaveUp(why));
                };
                let detail = format!(
                    "cannot get a gateway URL ({why}); retrying in {:.1}s",
                    delay.as_secs_f64()
                );
                log_failure(life, backoff.failures(), &detail);
                life.health().degraded(detail);
                stop.sleep(delay).await?;
                continue;
            }
        };
        let url = url.as_ref().unwrap_or(&config.url);
        let socket = match stop.run(connect(&config, url)).await? {
            Ok(socket) => socket,
            Err(ConnectError::Config(why)) => {
                return Err(WsError::Config(redact_all(&why, &[url])));
            }
            Err(ConnectError::Transient(why)) => {
                let why = redact(redact_all(&why, &[url]));
                let Some(delay) = backoff.next_delay() else {
                    return Err(WsError::GaveUp(why));
                };
                let detail = format!(
                    "cannot connect the gateway ({why}); retrying in {:.1}s",
                    delay.as_secs_f64()
                );
                log_failure(life, backoff.failures(), &detail);
                life.health().degraded(detail);
                stop.sleep(delay).await?;
                continue;
            }
        };
        connects += 1;
        life.health().ok();
        let mut session = Session {
            outgoing: Vec::new(),
            heartbeat: config.heartbeat,
            first_heartbeat: None,
            heartbeat_changed: false,
            connects,
            sender: sender.clone(),
        };
        let ended = serve(
            life,
            &config,
            handler,
            socket,
            &mut session,
            &mut queued,
            &mut backoff,
        )
        .await;
        let disconnect = match ended {
            Ended::Stopped => return Err(WsError::Stopped),
            Ended::Handler(reason) => return Err(WsError::Handler(reason)),
            Ended::Reconnect(disconnect) => disconnect,
        };
        let disconnect = Disconnect {
            reason: redact(disconnect.reason),
            ..disconnect
        };
        if let Flow::Stop(reason) = handler.on_disconnect(&disconnect) {
            life.health().down(reason.clone());
            return Err(WsError::Handler(reason));
        }
        let Some(delay) = backoff.next_delay() else {
            return Err(WsError::GaveUp(disconnect.reason));
        };
        let detail = format!(
            "gateway connection lost ({}); reconnecting in {:.1}s",
            disconnect.reason,
            delay.as_secs_f64()
        );
        log_failure(life, backoff.failures(), &detail);
        life.health().degraded(detail);
        stop.sleep(delay).await?;
    }
}

/// The first failure in a row and every tenth are warnings; the rest would repeat them.
fn log_failure(life: &Lifecycle, failures: u32, detail: &str) {
    let level = if failures <= 1 || failures.is_multiple_of(10) {
        LogLevel::WARN
    } else {
        LogLevel::DEBUG
    };
    life.log(level, detail);
}

/// A failed connection attempt: worth retrying, or not.
enum ConnectError {
    Config(String),
    Transient(String),
}

async fn connect(config: &WsConfig, url: &Secret) -> Result<Socket, ConnectError> {
    let mut request = url.expose().into_client_request().map_err(|e| {
        ConnectError::Config(format!("URL: {}", redact_all(&e.to_string(), &[url])))
    })?;
    for (name, value) in &config.headers {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| ConnectError::Config(format!("header name `{name}`")))?;
        let value = HeaderValue::from_str(value.expose())
            .map_err(|_| ConnectError::Config(format!("value of header `{name}`")))?;
        request.headers_mut().insert(name, value);
    }
    let connecting = tokio_tungstenite::connect_async(request);
    match tokio::time::timeout(config.connect_timeout, connecting).await {
        Ok(Ok((socket, _response))) => Ok(socket),
        // The server may be down or refusing for now: retry.
        Ok(Err(e)) => Err(ConnectError::Transient(e.to_string())),
        Err(_) => Err(ConnectError::Transient("connect timed out".into())),
    }
}

enum Ended {
    Stopped,
    Handler(String),
    Reconnect(Disconnect),
}

/// One connection, until it ends.
async fn serve<H: WsHandler>(
    life: &Lifecycle,
    config: &WsConfig,
    handler: &mut H,
    mut socket: Socket,
    session: &mut Session,
    queued: &mut mpsc::UnboundedReceiver<Message>,
    backoff: &mut super::retry::Backoff,
) -> Ended {
    let stop = life.stop_signal();
    let flow = handler.on_connect(session).await;
    if let Some(ended) = act(flow, &mut socket, session).await {
        return ended;
    }
    let mut heartbeat = ticker(session.heartbeat, None);
    let mut last_seen = Instant::now();
    let mut heard = false;
    loop {
        if session.heartbeat_changed {
            session.heartbeat_changed = false;
            heartbeat = ticker(session.heartbeat, session.first_heartbeat.take());
        }
        let idle = config.idle_timeout.map(|t| last_seen + t);
        tokio::select! {
            biased;
            () = stop.stopped() => {
                let _ = socket.close(None).await;
                return Ended::Stopped;
            }
            () = sleep_until(idle) => {
                return Ended::Reconnect(Disconnect { code: None, reason: "nothing received for too long".into() });
            }
            () = tick(&mut heartbeat) => {
                if let Some(ended) = act(handler.before_heartbeat(), &mut socket, session).await {
                    return ended;
                }
                let beat = handler.heartbeat().unwrap_or_else(|| Message::Ping(Bytes::new()));
                if let Err(e) = socket.send(beat).await {
                    return Ended::Reconnect(Disconnect { code: None, reason: format!("heartbeat failed: {e}") });
                }
            }
            Some(message) = queued.recv() => {
                if let Err(e) = socket.send(message).await {
                    return Ended::Reconnect(Disconnect { code: None, reason: format!("send failed: {e}") });
                }
            }
            received = socket.next() => {
                last_seen = Instant::now();
                let message = match received {
                    None => return Ended::Reconnect(Disconnect { code: None, reason: "the server closed the connection".into() }),
                    Some(Err(e)) => return Ended::Reconnect(Disconnect { code: None, reason: e.to_string() }),
                    Some(Ok(Message::Close(frame))) => {
                        let (code, reason) = frame.map_or((None, String::new()), |f| (Some(u16::from(f.code)), f.reason.to_string()));
                        return Ended::Reconnect(Disconnect {
                            code,
                            reason: format!("closed by the server ({}{reason})", code.map_or_else(String::new, |c| format!("{c} "))),
                        });
                    }
                    // tungstenite queues the pong; the next send or flush writes it.
                    Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {
                        let _ = socket.flush().await;
                        continue;
                    }
                    Some(Ok(message)) => message,
                };
                life.health().ingested();
                if !heard {
                    // A connection that delivers is a good one: the next drop starts the
                    // backoff afresh (one that drops at once keeps backing off).
                    heard = true;
                    backoff.reset();
                }
                let flow = handler.on_message(message, session).await;
                if let Some(ended) = act(flow, &mut socket, session).await {
                    return ended;
                }
            }
        }
    }
}

/// Sends what the handler queued and carries out its flow.
async fn act(flow: Flow, socket: &mut Socket, session: &mut Session) -> Option<Ended> {
    for message in session.outgoing.drain(..) {
        if let Err(e) = socket.send(message).await {
            return Some(Ended::Reconnect(Disconnect {
                code: None,
                reason: format!("send failed: {e}"),
            }));
        }
    }
    match flow {
        Flow::Continue => None,
        Flow::Reconnect => {
            let _ = socket.close(None).await;
            Some(Ended::Reconnect(Disconnect {
                code: None,
                reason: "the channel asked to reconnect".into(),
            }))
        }
        Flow::Stop(reason) => {
            let _ = socket.close(None).await;
            Some(Ended::Handler(reason))
        }
    }
}

fn ticker(interval: Option<Duration>, first: Option<Duration>) -> Option<tokio::time::Interval> {
    interval.filter(|i| !i.is_zero()).map(|i| {
        // The first beat after one interval (or `first`), not at once.
        let mut ticker = tokio::time::interval_at(Instant::now() + first.unwrap_or(i), i);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        ticker
    })
}

async fn tick(ticker: &mut Option<tokio::time::Interval>) {
    match ticker {
        Some(ticker) => {
            ticker.tick().await;
        }
        None => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests;
