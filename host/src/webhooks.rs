//! The host's one HTTP server for platforms that push events: `/webhook/<channel>[/…]` goes
//! to the plugin instance named `[plugins.<channel>]`, with the exact body bytes, so the
//! plugin verifies the platform's signature before anything is stored.
//!
//! Anyone who finds the URL can call it, so what a request may cost is bounded
//! ([`Limits`]): the time to send its headers (slow senders cannot hold connections), the
//! number of connections, the body size, the time a request may take in all, and the
//! requests in flight per channel (a flood on one channel leaves the others alone). Every
//! refused request leaves one log line with the channel, the peer and the reason.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path, RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use hyper_util::rt::{TokioIo, TokioTimer};
use nanoclaw_plugin_api::abi::{Capabilities, WebhookRequest, WebhookResponse};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tower::ServiceExt as _;

use crate::ids::ChannelName;
use crate::plugins::channels::PluginChannels;

/// Largest webhook body accepted.
pub const MAX_BODY: usize = 10 * 1024 * 1024;

/// What one request, and all of them, may cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest body (413 beyond it).
    pub max_body: usize,
    /// Time to send a request's headers; a connection that takes longer is closed.
    pub header_timeout: Duration,
    /// Time for the body to arrive and the plugin to answer (503 beyond it).
    pub request_timeout: Duration,
    /// Open connections; more wait to be accepted.
    pub max_connections: usize,
    /// Requests in flight per channel (503 with `Retry-After` beyond it; platforms retry).
    pub per_channel: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body: MAX_BODY,
            header_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            max_connections: 256,
            per_channel: 32,
        }
    }
}

/// Why a target did not answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetError {
    /// Worth a retry by the platform (503), or not (500).
    pub transient: bool,
    pub message: String,
}

/// Where webhook requests go: the running plugins, or a fake in tests.
pub trait Targets: Clone + Send + Sync + 'static {
    /// Whether `channel` takes webhooks.
    fn takes(&self, channel: &ChannelName) -> bool;
    /// The channel's answer to `request`.
    fn handle(
        &self,
        channel: &ChannelName,
        request: WebhookRequest,
    ) -> impl Future<Output = Result<WebhookResponse, TargetError>> + Send;
}

impl Targets for PluginChannels {
    fn takes(&self, channel: &ChannelName) -> bool {
        self.get(channel)
            .is_some_and(|h| h.capabilities().contains(Capabilities::WEBHOOK))
    }

    async fn handle(
        &self,
        channel: &ChannelName,
        request: WebhookRequest,
    ) -> Result<WebhookResponse, TargetError> {
        let Some(plugin) = self.get(channel) else {
            return Err(TargetError {
                transient: true,
                message: format!("no {channel} plugin is running"),
            });
        };
        plugin
            .handle_webhook(request)
            .await
            .map_err(|e| TargetError {
                transient: e.is_transient(),
                message: e.to_string(),
            })
    }
}

/// The peer of a connection, put into each request's extensions by [`serve`].
#[derive(Debug, Clone, Copy)]
struct Peer(SocketAddr);

#[derive(Clone)]
struct Server<T> {
    targets: T,
    limits: Limits,
    /// One semaphore per channel that takes webhooks (created on its first request, so
    /// made-up channel names cost nothing).
    in_flight: Arc<Mutex<HashMap<ChannelName, Arc<Semaphore>>>>,
}

impl<T: Targets> Server<T> {
    fn permit(&self, channel: &ChannelName) -> Option<OwnedSemaphorePermit> {
        let semaphore = {
            let mut map = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
            map.entry(channel.clone())
                .or_insert_with(|| Arc::new(Semaphore::new(self.limits.per_channel)))
                .clone()
        };
        semaphore.try_acquire_owned().ok()
    }
}

/// The routes, behind the limits.
pub fn router<T: Targets>(targets: T, limits: Limits) -> axum::Router {
    let server = Server {
        targets,
        limits,
        in_flight: Arc::default(),
    };
    axum::Router::new()
        .route("/webhook/{channel}", any(root::<T>))
        .route("/webhook/{channel}/{*rest}", any(nested::<T>))
        .layer(DefaultBodyLimit::max(limits.max_body))
        .layer(middleware::from_fn_with_state(server.clone(), guard::<T>))
        .with_state(server)
}

/// Refuses what the limits do not allow, and logs every refusal once.
async fn guard<T: Targets>(
    State(server): State<Server<T>>,
    request: Request,
    next: Next,
) -> Response {
    let peer = request.extensions().get::<Peer>().map(|p| p.0);
    let channel_part = request
        .uri()
        .path()
        .strip_prefix("/webhook/")
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_default()
        .to_owned();
    let refuse = |status: StatusCode, reason: &str| {
        tracing::warn!(channel = %channel_part, peer = ?peer, status = status.as_u16(), reason, "webhook refused");
        (status, format!("{reason}\n")).into_response()
    };
    let channel = ChannelName::parse(&channel_part)
        .ok()
        .filter(|c| server.targets.takes(c));
    let Some(channel) = channel else {
        return refuse(StatusCode::NOT_FOUND, "no webhook for this channel");
    };
    let Some(_permit) = server.permit(&channel) else {
        let mut busy = refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many requests in flight for this channel",
        );
        busy.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return busy;
    };
    let Ok(response) = tokio::time::timeout(server.limits.request_timeout, next.run(request)).await
    else {
        return refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "the request took longer than the webhook time limit",
        );
    };
    let status = response.status();
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        return refuse(status, "body larger than the webhook limit");
    }
    if status.is_client_error() || status.is_server_error() {
        // The plugin's own answer (a bad signature, a malformed event): it logged why.
        tracing::info!(channel = %channel, peer = ?peer, status = status.as_u16(), "webhook refused by the plugin");
    }
    response
}

async fn root<T: Targets>(
    State(server): State<Server<T>>,
    Path(channel): Path<String>,
    method: Method,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    dispatch(server, channel, "/".into(), method, query, headers, body).await
}

async fn nested<T: Targets>(
    State(server): State<Server<T>>,
    Path((channel, rest)): Path<(String, String)>,
    method: Method,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    dispatch(
        server,
        channel,
        format!("/{rest}"),
        method,
        query,
        headers,
        body,
    )
    .await
}

async fn dispatch<T: Targets>(
    server: Server<T>,
    channel: String,
    path: String,
    method: Method,
    query: Option<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    // The guard let only a channel that takes webhooks through.
    let Ok(name) = ChannelName::parse(&channel) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let request = WebhookRequest {
        method: method.as_str().into(),
        path: path.into(),
        query: query.unwrap_or_default().into(),
        headers: headers
            .iter()
            .filter_map(|(k, v)| {
                Some(
                    (
                        k.as_str().to_ascii_lowercase().into(),
                        v.to_str().ok()?.into(),
                    )
                        .into(),
                )
            })
            .collect(),
        body: body.to_vec().into(),
    };
    match server.targets.handle(&name, request).await {
        Ok(resp) => {
            let mut out = Response::new(Body::from(resp.body.into_vec()));
            *out.status_mut() =
                StatusCode::from_u16(resp.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            for pair in resp.headers.iter() {
                if let (Ok(k), Ok(v)) = (
                    HeaderName::try_from(pair.0.as_str()),
                    HeaderValue::try_from(pair.1.as_str()),
                ) {
                    out.headers_mut().append(k, v);
                }
            }
            out
        }
        Err(e) => {
            tracing::warn!(channel, error = %e.message, "webhook failed");
            let status = if e.transient {
                StatusCode::SERVICE_UNAVAILABLE
            } else {
                StatusCode::INTERNAL_SERVER_ERROR
            };
            (status, "webhook not processed\n").into_response()
        }
    }
}

/// Serves until `shutdown` resolves, then lets requests in progress finish (for at most
/// the request time limit).
pub async fn serve<T: Targets>(
    addr: SocketAddr,
    targets: T,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(addr = %listener.local_addr()?, "webhook server listening");
    serve_on(listener, targets, limits, shutdown).await;
    Ok(())
}

async fn serve_on<T: Targets>(
    listener: tokio::net::TcpListener,
    targets: T,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let app = router(targets, limits);
    let connections = Arc::new(Semaphore::new(limits.max_connections));
    let (closing, closed) = watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            _ = &mut shutdown => break,
            permit = connections.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors and the like: wait instead of spinning.
                    tracing::warn!(error = %e, "webhook server could not accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let app = app.clone();
        let mut closed = closed.clone();
        tasks.spawn(async move {
            let _permit = permit;
            let service = hyper::service::service_fn(
                move |mut request: hyper::Request<hyper::body::Incoming>| {
                    request.extensions_mut().insert(Peer(peer));
                    app.clone().oneshot(request.map(Body::new))
                },
            );
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout);
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(connection);
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!(peer = %peer, error = %e, "webhook connection ended");
                    }
                }
                // (The guard `wait_for` returns must not live across the await below.)
                _ = async { closed.wait_for(|c| *c).await.map(drop) } => {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
        });
        // Forget finished connections as we go.
        while tasks.try_join_next().is_some() {}
    }
    let _ = closing.send(true);
    let drained = tokio::time::timeout(limits.request_timeout, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tasks.abort_all();
    }
}

#[cfg(test)]
mod tests;
