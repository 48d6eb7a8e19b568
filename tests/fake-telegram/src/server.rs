//! HTTP: the Bot API routes, the file route and the control API.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{
    DefaultBodyLimit, FromRequest, Multipart, Path, Query, Request, State as AxState,
};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::time::Instant;
use tower::ServiceExt as _;

use crate::model::{Failure, Person, UserMessage};
use crate::state::{ApiErr, Params, State};

/// Uploads up to the Bot API's 50 MB, with room for the multipart framing.
const BODY_LIMIT: usize = 64 * 1024 * 1024;

fn ok(result: Value) -> Response {
    axum::Json(json!({"ok": true, "result": result})).into_response()
}

fn err(e: &ApiErr) -> Response {
    let status = StatusCode::from_u16(e.code).unwrap_or(StatusCode::BAD_REQUEST);
    (status, axum::Json(e.body())).into_response()
}

fn unauthorized() -> Response {
    err(&ApiErr {
        code: 401,
        description: "Unauthorized".into(),
        retry_after: None,
    })
}

/// The connection is to be closed without an answer.
#[derive(Debug)]
struct Dropped;

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped on purpose")
    }
}

impl std::error::Error for Dropped {}

/// Accepts connections until `shutdown` turns true.
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<State>,
    mut shutdown: watch::Receiver<bool>,
) {
    let router = router(Arc::clone(&state));
    loop {
        let stream = tokio::select! {
            _ = shutdown.wait_for(|stop| *stop) => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => continue,
            },
        };
        let router = router.clone();
        let state = Arc::clone(&state);
        let mut conn_shutdown = shutdown.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                let router = router.clone();
                let state = Arc::clone(&state);
                async move {
                    if let Some(early) = intercept(&state, &req) {
                        return early;
                    }
                    let response = router.oneshot(req.map(Body::new)).await;
                    Ok::<_, Dropped>(match response {
                        Ok(response) => response,
                        Err(never) => match never {},
                    })
                }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = conn => {}
                _ = conn_shutdown.wait_for(|stop| *stop) => {}
            }
        });
    }
}

type Early = Result<Response, Dropped>;

/// Token check and injected failures, before any routing or body parsing.
fn intercept(state: &State, req: &hyper::Request<Incoming>) -> Option<Early> {
    let path = req.uri().path();
    let rest = path.strip_prefix("/bot")?;
    let (token, method) = rest.split_once('/')?;
    if token != state.token {
        return Some(Ok(unauthorized()));
    }
    let failure = state.take_failure(method)?;
    let kind = serde_json::to_value(&failure)
        .ok()
        .and_then(|v| v.get("kind").cloned())
        .unwrap_or(Value::Null);
    state.record_call(method, json!({"injected_failure": kind}));
    let api = |code: u16, description: &str, retry_after: Option<u64>| {
        Ok(err(&ApiErr {
            code,
            description: description.to_owned(),
            retry_after,
        }))
    };
    Some(match failure {
        Failure::Conflict => api(
            409,
            "Conflict: terminated by other getUpdates request; make sure that only one bot \
             instance is running",
            None,
        ),
        Failure::RateLimited { retry_after_secs } => api(
            429,
            &format!("Too Many Requests: retry after {retry_after_secs}"),
            Some(retry_after_secs),
        ),
        Failure::ServerError => api(500, "Internal Server Error", None),
        Failure::BadGateway => Ok((
            StatusCode::BAD_GATEWAY,
            [(header::CONTENT_TYPE, "text/html")],
            "<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>",
        )
            .into_response()),
        Failure::Unauthorized => api(401, "Unauthorized", None),
        Failure::BadRequest { description } => api(400, &description, None),
        Failure::DropConnection => Err(Dropped),
    })
}

fn router(state: Arc<State>) -> Router {
    Router::new()
        .route("/control/info", get(info))
        .route("/control/messages", post(control_message))
        .route("/control/clicks", post(control_click))
        .route("/control/sent", get(control_sent))
        .route("/control/calls", get(control_calls))
        .route("/control/failures", post(control_failure))
        .route("/control/webhook", post(control_webhook))
        .route("/file/{bot}/{*path}", get(file))
        .route("/{bot}/{method}", any(bot_method))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
}

async fn bot_method(
    AxState(state): AxState<Arc<State>>,
    Path((bot, method)): Path<(String, String)>,
    request: Request,
) -> Response {
    if bot.strip_prefix("bot") != Some(state.token.as_str()) {
        return if bot.starts_with("bot") {
            unauthorized()
        } else {
            (StatusCode::NOT_FOUND, "not found").into_response()
        };
    }
    let params = match read_params(request).await {
        Ok(params) => params,
        Err(e) => return err(&e),
    };
    state.record_call(&method, params.summary());
    let result = if method == "getUpdates" {
        get_updates(&state, &params).await
    } else {
        state.call(&method, &params)
    };
    match result {
        Ok(value) => ok(value),
        Err(e) => err(&e),
    }
}

async fn read_params(request: Request) -> Result<Params, ApiErr> {
    let mut params = Params::default();
    if let Ok(Query(query)) = Query::<HashMap<String, String>>::try_from_uri(request.uri()) {
        for (k, v) in query {
            params.fields.insert(k, Value::String(v));
        }
    }
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    let bad = |what: &str| ApiErr::bad_request(what);
    if content_type.starts_with("application/json") {
        let body = axum::body::to_bytes(request.into_body(), BODY_LIMIT)
            .await
            .map_err(|_| bad("can't read the request body"))?;
        if !body.is_empty() {
            let fields: serde_json::Map<String, Value> =
                serde_json::from_slice(&body).map_err(|_| bad("can't parse JSON object"))?;
            params.fields.extend(fields);
        }
    } else if content_type.starts_with("application/x-www-form-urlencoded") {
        let axum::Form(form) = axum::Form::<HashMap<String, String>>::from_request(request, &())
            .await
            .map_err(|_| bad("can't parse the form"))?;
        for (k, v) in form {
            params.fields.insert(k, Value::String(v));
        }
    } else if content_type.starts_with("multipart/form-data") {
        let mut multipart = Multipart::from_request(request, &())
            .await
            .map_err(|_| bad("can't parse multipart"))?;
        while let Some(field) = multipart
            .next_field()
            .await
            .map_err(|_| bad("can't parse multipart field"))?
        {
            let name = field.name().unwrap_or_default().to_owned();
            match field.file_name().map(str::to_owned) {
                Some(file_name) => {
                    let mime = field
                        .content_type()
                        .unwrap_or("application/octet-stream")
                        .to_owned();
                    let data = field
                        .bytes()
                        .await
                        .map_err(|_| bad("can't read file part"))?;
                    params.files.insert(name, (file_name, mime, data.to_vec()));
                }
                None => {
                    let text = field
                        .text()
                        .await
                        .map_err(|_| bad("can't read text part"))?;
                    params.fields.insert(name, Value::String(text));
                }
            }
        }
    }
    Ok(params)
}

async fn get_updates(state: &State, params: &Params) -> Result<Value, ApiErr> {
    let (generation, limit) = state.begin_poll(params)?;
    let timeout = params.i64("timeout").unwrap_or(0).clamp(0, 300);
    let deadline = Instant::now() + Duration::from_secs(u64::try_from(timeout).unwrap_or(0));
    loop {
        let notified = state.updates.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let force = Instant::now() >= deadline;
        if let Some(Value::Array(mut updates)) = state.poll_once(generation, force)? {
            updates.truncate(limit);
            return Ok(Value::Array(updates));
        }
        tokio::select! {
            _ = &mut notified => {}
            _ = tokio::time::sleep_until(deadline) => {}
        }
    }
}

async fn file(
    AxState(state): AxState<Arc<State>>,
    Path((bot, path)): Path<(String, String)>,
) -> Response {
    if bot.strip_prefix("bot") != Some(state.token.as_str()) {
        return unauthorized();
    }
    match state.file_bytes(&path) {
        Some(data) => ([(header::CONTENT_TYPE, "application/octet-stream")], data).into_response(),
        None => (StatusCode::NOT_FOUND, "Not Found").into_response(),
    }
}

// ---------------------------------------------------------------------------------------------
// Control API (JSON), used by the CLI
// ---------------------------------------------------------------------------------------------

fn control_error(message: String) -> Response {
    (
        StatusCode::BAD_REQUEST,
        axum::Json(json!({"error": message})),
    )
        .into_response()
}

async fn info(AxState(state): AxState<Arc<State>>) -> Response {
    axum::Json(json!({
        "bot": state.bot,
        "token": state.token,
        "pending_updates": state.pending_updates(),
    }))
    .into_response()
}

/// `POST /control/messages`.
#[derive(Deserialize)]
struct ControlMessage {
    from: Person,
    #[serde(default)]
    chat_id: Option<i64>,
    #[serde(default)]
    group_title: Option<String>,
    #[serde(default)]
    text: String,
    /// Prepend `@<bot username> ` (Telegram adds the mention entity).
    #[serde(default)]
    mention: bool,
    #[serde(default)]
    reply_to: Option<i64>,
}

async fn control_message(
    AxState(state): AxState<Arc<State>>,
    axum::Json(body): axum::Json<ControlMessage>,
) -> Response {
    let mut text = body.text;
    if body.mention {
        let username = state.bot.username.clone().unwrap_or_default();
        text = format!("@{username} {text}");
    }
    let mut message = match (body.group_title, body.chat_id) {
        (Some(title), Some(chat_id)) => UserMessage::group(chat_id, &title, body.from, &text),
        (Some(_), None) => return control_error("a group message needs chat_id".into()),
        (None, chat_id) => {
            if chat_id.is_some_and(|c| c != body.from.id) {
                return control_error(
                    "in a private chat the chat id is the user's id; give group_title for a group"
                        .into(),
                );
            }
            UserMessage::private(body.from, &text)
        }
    };
    if let Some(reply_to) = body.reply_to {
        message = message.reply_to(reply_to);
    }
    match state.inject_message(message) {
        Ok(delivered) => axum::Json(delivered).into_response(),
        Err(e) => control_error(e),
    }
}

/// `POST /control/clicks`.
#[derive(Deserialize)]
struct ControlClick {
    chat_id: i64,
    message_id: i64,
    from: Person,
    data: String,
}

async fn control_click(
    AxState(state): AxState<Arc<State>>,
    axum::Json(body): axum::Json<ControlClick>,
) -> Response {
    match state.inject_click(body.chat_id, body.message_id, &body.from, &body.data) {
        Ok(id) => axum::Json(json!({"callback_query_id": id})).into_response(),
        Err(e) => control_error(e),
    }
}

async fn control_sent(AxState(state): AxState<Arc<State>>) -> Response {
    axum::Json(state.sent()).into_response()
}

async fn control_calls(AxState(state): AxState<Arc<State>>) -> Response {
    axum::Json(state.calls()).into_response()
}

/// `POST /control/failures`.
#[derive(Deserialize)]
struct ControlFailure {
    #[serde(default)]
    method: Option<String>,
    #[serde(default = "one")]
    count: u32,
    failure: Failure,
}

fn one() -> u32 {
    1
}

async fn control_failure(
    AxState(state): AxState<Arc<State>>,
    axum::Json(body): axum::Json<ControlFailure>,
) -> Response {
    state.add_failure(body.method, body.count, body.failure);
    axum::Json(json!({"ok": true})).into_response()
}

/// `POST /control/webhook` `{"url": "…"}` (or null to remove).
#[derive(Deserialize)]
struct ControlWebhook {
    #[serde(default)]
    url: Option<String>,
}

async fn control_webhook(
    AxState(state): AxState<Arc<State>>,
    axum::Json(body): axum::Json<ControlWebhook>,
) -> Response {
    state.set_webhook(body.url);
    axum::Json(json!({"ok": true})).into_response()
}
