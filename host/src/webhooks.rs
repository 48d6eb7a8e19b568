//! The host's one HTTP server for platforms that push events: `/webhook/<channel>[/…]` goes
//! to the plugin instance named `[plugins.<channel>]`, with the exact body bytes, so the
//! plugin verifies the platform's signature before anything is stored.

use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use nanoclaw_plugin_api::abi::{Capabilities, WebhookRequest};

use crate::ids::ChannelName;
use crate::plugins::channels::PluginChannels;

/// Largest webhook body accepted.
pub const MAX_BODY: usize = 10 * 1024 * 1024;

pub fn router(channels: PluginChannels) -> axum::Router {
    axum::Router::new()
        .route("/webhook/{channel}", any(root))
        .route("/webhook/{channel}/{*rest}", any(nested))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(channels)
}

async fn root(
    State(channels): State<PluginChannels>,
    Path(channel): Path<String>,
    method: Method,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    dispatch(
        channels,
        channel,
        String::from("/"),
        method,
        query,
        headers,
        body,
    )
    .await
}

async fn nested(
    State(channels): State<PluginChannels>,
    Path((channel, rest)): Path<(String, String)>,
    method: Method,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    dispatch(
        channels,
        channel,
        format!("/{rest}"),
        method,
        query,
        headers,
        body,
    )
    .await
}

async fn dispatch(
    channels: PluginChannels,
    channel: String,
    path: String,
    method: Method,
    query: Option<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let plugin = ChannelName::parse(&channel)
        .ok()
        .and_then(|c| channels.get(&c).cloned())
        .filter(|h| h.capabilities().contains(Capabilities::WEBHOOK));
    let Some(plugin) = plugin else {
        return (
            StatusCode::NOT_FOUND,
            format!("no webhook for channel {channel:?}\n"),
        )
            .into_response();
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
    match plugin.handle_webhook(request).await {
        Ok(resp) => {
            let mut out = Response::new(axum::body::Body::from(resp.body.into_vec()));
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
            tracing::warn!(channel, error = %e, "webhook failed");
            let status = if e.is_transient() {
                StatusCode::SERVICE_UNAVAILABLE
            } else {
                StatusCode::INTERNAL_SERVER_ERROR
            };
            (status, "webhook not processed\n").into_response()
        }
    }
}

/// Serves until `shutdown` resolves.
pub async fn serve(
    addr: SocketAddr,
    channels: PluginChannels,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "webhook server listening");
    axum::serve(listener, router(channels))
        .with_graceful_shutdown(shutdown)
        .await
}
