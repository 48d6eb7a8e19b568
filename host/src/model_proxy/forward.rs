//! One request through the proxy: check, add the credential, forward, stream the answer back
//! while metering it.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::Stream;
use http::header::{CONTENT_TYPE, HeaderName, HeaderValue};
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt as _, Full, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::UnixStream;

use nanoclaw_schema::session::model_proxy::{BUDGET_ERROR_TYPE, UNREACHABLE_ERROR_TYPE};

use super::meter::Meter;
use super::settings::{Api, Credential};
use super::{Caller, Inner};
use crate::store::agent_groups;
use crate::store::usage::{self, UsageRecord};

type Body = UnsyncBoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// The largest request body forwarded (a long conversation with images stays well below).
const MAX_REQUEST_BODY: usize = 32 * 1024 * 1024;
/// The longest query string passed on (`beta=true` is what clients send).
const MAX_QUERY: usize = 256;
/// The OAuth beta flag the Messages API wants with a Claude subscription token.
const OAUTH_BETA: &str = "oauth-2025-04-20";

pub(super) async fn serve_connection(inner: Arc<Inner>, caller: Caller, stream: UnixStream) {
    let service = hyper::service::service_fn(move |req| {
        let (inner, caller) = (Arc::clone(&inner), caller.clone());
        async move { Ok::<_, Infallible>(handle(&inner, &caller, req).await) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30))
        .serve_connection(TokioIo::new(stream), service);
    if let Err(e) = conn.await {
        tracing::debug!(error = %e, "model proxy connection ended");
    }
}

async fn handle(inner: &Arc<Inner>, caller: &Caller, req: Request<Incoming>) -> Response<Body> {
    let api = caller.api;
    let Some(path) = api.upstream_path(req.method(), req.uri().path()) else {
        tracing::warn!(session = %caller.session, method = %req.method(), path = req.uri().path(),
            "model proxy refused a request outside the model API");
        return refusal(
            api,
            StatusCode::FORBIDDEN,
            "permission_error",
            &format!(
                "NanoClaw's model proxy forwards only {}; {} {} is not one of them",
                api.allowed(),
                req.method(),
                req.uri().path()
            ),
        );
    };
    let query = match req.uri().query() {
        None => String::new(),
        Some(q) if q.len() <= MAX_QUERY && q.bytes().all(query_byte) => format!("?{q}"),
        Some(_) => {
            return refusal(
                api,
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "NanoClaw's model proxy refused the query string",
            );
        }
    };
    let Some(upstream) = inner.settings.upstream(api).cloned() else {
        return refusal(
            api,
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "No Anthropic credential is configured on the NanoClaw host: the operator sets \
             ANTHROPIC_API_KEY or CLAUDE_CODE_OAUTH_TOKEN in data/.env and restarts it",
        );
    };

    if let Some(refused) = over_budget(inner, caller).await {
        return refused;
    }

    let method = req.method().clone();
    let headers = forwardable_request_headers(req.headers());
    let body = match Limited::new(req.into_body(), MAX_REQUEST_BODY)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            let too_big = e
                .downcast_ref::<http_body_util::LengthLimitError>()
                .is_some();
            tracing::warn!(session = %caller.session, error = %e, "model proxy: request body refused");
            return refusal(
                api,
                if too_big {
                    StatusCode::PAYLOAD_TOO_LARGE
                } else {
                    StatusCode::BAD_REQUEST
                },
                "invalid_request_error",
                "NanoClaw's model proxy could not read the request body (at most 32 MiB)",
            );
        }
    };
    let requested_model = model_of(&body);

    let url = format!("{}{path}{query}", upstream.base);
    let out = inner
        .client
        .request(method, &url)
        .headers(headers)
        .body(body);
    let out = with_credential(out, &upstream.credential);

    let guard = InFlight::new(caller);
    let started = Instant::now();
    let answer = match out.send().await {
        Ok(a) => a,
        Err(e) => {
            let e = super::error_chain(&e.without_url());
            tracing::warn!(session = %caller.session, api = %api, error = %e, "model API not reachable");
            return refusal(
                api,
                StatusCode::BAD_GATEWAY,
                UNREACHABLE_ERROR_TYPE,
                &format!("NanoClaw cannot reach the model API: {e}"),
            );
        }
    };
    let status = answer.status();
    let content_type = answer
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let mut response = Response::builder().status(status.as_u16());
    for (name, value) in answer.headers() {
        if forwardable_response_header(name) {
            response = response.header(name, value);
        }
    }
    let metered = Metered {
        inner: Box::pin(answer.bytes_stream()),
        meter: Some(Meter::new(api, content_type.as_deref())),
        done: Some(Done {
            db: Arc::clone(&inner.db),
            caller: caller.clone(),
            status: status.as_u16(),
            requested_model,
            started,
        }),
        _guard: guard,
    };
    let body = StreamBody::new(metered).boxed_unsync();
    response.body(body).unwrap_or_else(|e| {
        tracing::warn!(error = %e, "model proxy: bad upstream response head");
        refusal(
            api,
            StatusCode::BAD_GATEWAY,
            "api_error",
            "the model API sent a response NanoClaw could not pass on",
        )
    })
}

/// Adds the operator's credential to a request for the upstream.
pub(super) fn with_credential(
    out: reqwest::RequestBuilder,
    credential: &Credential,
) -> reqwest::RequestBuilder {
    match credential {
        Credential::ApiKey(key) => out.header("x-api-key", key),
        Credential::Bearer(token) => out.bearer_auth(token),
        // A subscription token also needs the OAuth beta; an agent's own beta flags are
        // sent as a separate header value.
        Credential::ClaudeOAuth(token) => {
            out.bearer_auth(token).header("anthropic-beta", OAUTH_BETA)
        }
        Credential::None => out,
    }
}

/// The refusal when the agent group's daily budget is spent.
async fn over_budget(inner: &Arc<Inner>, caller: &Caller) -> Option<Response<Body>> {
    let (db, group_id) = (Arc::clone(&inner.db), caller.group.clone());
    let checked = tokio::task::spawn_blocking(move || {
        db.read(|c| {
            let Some(group) = agent_groups::get(c, &group_id)? else {
                return Ok(None);
            };
            let Some(budget) = group.daily_token_budget() else {
                return Ok(None);
            };
            let used = usage::tokens_on(c, &group_id, &usage::today())?;
            Ok((used >= budget).then_some((group, used, budget)))
        })
    })
    .await;
    let (group, used, budget) = match checked {
        Ok(Ok(Some(x))) => x,
        Ok(Ok(None)) => return None,
        Ok(Err(e)) => {
            // The budget cannot be checked: refuse rather than spend without a limit.
            tracing::warn!(session = %caller.session, error = %e, "model proxy: budget check failed");
            return Some(refusal(
                caller.api,
                StatusCode::SERVICE_UNAVAILABLE,
                "api_error",
                "NanoClaw could not check this agent's token budget; try again shortly",
            ));
        }
        Err(_) => return None,
    };
    tracing::info!(session = %caller.session, agent = %group.folder, used, budget, "daily token budget spent; request refused");
    Some(refusal(
        caller.api,
        StatusCode::PAYMENT_REQUIRED,
        BUDGET_ERROR_TYPE,
        &format!(
            "{} has used its daily budget of {budget} tokens ({used} used today, UTC) and can \
             answer again after midnight UTC. The operator can raise it with \
             `nanoclaw groups set {} --daily-tokens N`.",
            group.display_name(),
            group.folder.as_str()
        ),
    ))
}

/// An error in the shape of the session's API, so its client reports the message.
fn refusal(api: Api, status: StatusCode, kind: &str, message: &str) -> Response<Body> {
    let body = match api {
        Api::Anthropic => serde_json::json!({
            "type": "error",
            "error": { "type": kind, "message": message },
        }),
        Api::OpenAi => serde_json::json!({
            "error": { "type": kind, "code": kind, "message": message },
        }),
    };
    let mut r = Response::new(
        Full::new(Bytes::from(body.to_string()))
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// Request headers passed upstream: the API's own, never credentials, cookies or
/// connection headers. `accept-encoding` stays behind so the answer can be metered.
fn forwardable_request_headers(from: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::new();
    for (name, value) in from {
        let n = name.as_str();
        let keep = matches!(
            n,
            "content-type"
                | "accept"
                | "anthropic-version"
                | "anthropic-beta"
                | "user-agent"
                | "x-app"
        ) || n.starts_with("x-stainless-");
        if keep {
            out.append(name.clone(), value.clone());
        }
    }
    out
}

fn forwardable_response_header(name: &HeaderName) -> bool {
    let n = name.as_str();
    matches!(
        n,
        "content-type" | "retry-after" | "request-id" | "x-request-id"
    ) || n.starts_with("anthropic-ratelimit-")
        || n.starts_with("x-ratelimit-")
}

fn query_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'=' | b'&' | b'_' | b'-' | b'.')
}

/// The `model` a request names (for the usage record when the answer names none).
fn model_of(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct M {
        model: Option<String>,
    }
    serde_json::from_slice::<M>(body)
        .ok()
        .and_then(|m| m.model)
        .map(|m| m.chars().take(100).collect())
}

/// Counts a request as in flight until its answer has been passed on (or abandoned).
struct InFlight(Arc<std::sync::atomic::AtomicUsize>);

impl InFlight {
    fn new(caller: &Caller) -> InFlight {
        caller.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(Arc::clone(&caller.in_flight))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What to record when the answer ends.
struct Done {
    db: Arc<crate::db::Db>,
    caller: Caller,
    status: u16,
    requested_model: Option<String>,
    started: Instant,
}

/// The upstream answer, passed through chunk by chunk as it arrives, metered on the way.
struct Metered {
    inner: Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>,
    meter: Option<Meter>,
    done: Option<Done>,
    _guard: InFlight,
}

impl Stream for Metered {
    type Item = Result<Frame<Bytes>, Box<dyn std::error::Error + Send + Sync>>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match self.inner.as_mut().poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                if let Some(m) = self.meter.as_mut() {
                    m.feed(&chunk);
                }
                Poll::Ready(Some(Ok(Frame::data(chunk))))
            }
            Poll::Ready(Some(Err(e))) => {
                let e = e.without_url();
                tracing::warn!(error = %e, "model answer cut off");
                self.finish();
                Poll::Ready(Some(Err(Box::new(e))))
            }
            Poll::Ready(None) => {
                self.finish();
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Metered {
    /// Records the usage once: at the end of the answer, or when the agent hung up early.
    fn finish(&mut self) {
        let (Some(meter), Some(done)) = (self.meter.take(), self.done.take()) else {
            return;
        };
        let (tokens, model) = meter.finish();
        let record = UsageRecord {
            agent_group_id: done.caller.group.clone(),
            session_id: done.caller.session.clone(),
            provider: done.caller.api.as_str(),
            model: model.or(done.requested_model),
            status: done.status,
            tokens,
        };
        tracing::info!(session = %record.session_id, status = record.status, input = tokens.input,
            output = tokens.output, cache_read = tokens.cache_read,
            ms = done.started.elapsed().as_millis() as u64, "model request");
        let db = done.db;
        let write = move || {
            if let Err(e) = db.write(|c| usage::record(c, &record)) {
                tracing::warn!(error = %e, "could not record model usage");
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn_blocking(write);
            }
            Err(_) => write(),
        }
    }
}

impl Drop for Metered {
    fn drop(&mut self) {
        self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_and_connection_headers_stay_behind() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("x-api-key", "agent-key"),
            ("authorization", "Bearer agent"),
            ("cookie", "a=b"),
            ("host", "evil"),
            ("accept-encoding", "gzip"),
            ("anthropic-version", "2023-06-01"),
            ("anthropic-beta", "x"),
            ("content-type", "application/json"),
            ("x-stainless-os", "Linux"),
        ] {
            h.append(
                HeaderName::from_static(k),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        let out = forwardable_request_headers(&h);
        let names: Vec<&str> = out.keys().map(|k| k.as_str()).collect();
        assert_eq!(
            names,
            [
                "anthropic-version",
                "anthropic-beta",
                "content-type",
                "x-stainless-os"
            ]
        );
    }

    #[test]
    fn queries_and_models() {
        assert!(b"beta=true".iter().all(|&b| query_byte(b)));
        assert!(!b"a=%2F".iter().all(|&b| query_byte(b)));
        assert_eq!(
            model_of(br#"{"model":"claude-x","messages":[]}"#).as_deref(),
            Some("claude-x")
        );
        assert_eq!(model_of(b"garbage"), None);
    }
}
