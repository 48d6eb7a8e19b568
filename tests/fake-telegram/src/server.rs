//! HTTP: the Bot API routes, the file route and the control API.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{
    DefaultBodyLimit, FromRequest, Multipart, Path, Query, Request, State as AxState,
};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use nanoclaw_fake_platform::{Commit, Fault, Harness, HoldId, Route};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::time::Instant;

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

/// How the harness names a call: the Bot API method of `/bot<token>/<method>` with the
/// right token. Anything else (a wrong token, file downloads) is never faulted or held.
pub(crate) fn route_of(token: &str, parts: &Parts) -> Option<String> {
    let rest = parts.uri.path().strip_prefix("/bot")?;
    let (given, method) = rest.split_once('/')?;
    (given == token && !method.is_empty()).then(|| method.to_owned())
}

/// A scripted failure as the harness applies it, shaped like the Bot API's answers.
pub(crate) fn fault_of(failure: &Failure) -> Fault {
    let api = |code: u16, description: &str, retry_after: Option<u64>| {
        Fault::json(
            code,
            &ApiErr {
                code,
                description: description.to_owned(),
                retry_after,
            }
            .body(),
        )
    };
    match failure {
        Failure::Conflict => api(
            409,
            "Conflict: terminated by other getUpdates request; make sure that only one bot \
             instance is running",
            None,
        )
        .labelled("conflict"),
        Failure::RateLimited { retry_after_secs } => api(
            429,
            &format!("Too Many Requests: retry after {retry_after_secs}"),
            Some(*retry_after_secs),
        )
        .with_header("retry-after", &retry_after_secs.to_string())
        .labelled("rate_limited"),
        Failure::ServerError => api(500, "Internal Server Error", None).labelled("server_error"),
        Failure::BadGateway => Fault::respond(
            502,
            "text/html",
            "<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>",
        )
        .labelled("bad_gateway"),
        Failure::Unauthorized => api(401, "Unauthorized", None).labelled("unauthorized"),
        Failure::BadRequest { description } => api(400, description, None).labelled("bad_request"),
        Failure::DropConnection => Fault::drop_connection(),
        Failure::Slow { delay_ms } => {
            Fault::delay(Duration::from_millis(*delay_ms)).labelled("slow")
        }
    }
}

/// The Bot API, the file route and the control API (the harness adds the call log, faults
/// and holds around it).
pub(crate) fn router(state: Arc<State>, harness: Harness) -> Router {
    let harnessed = Router::new()
        .route("/control/failures", post(control_failure))
        .route("/control/holds", get(control_holds).post(control_hold))
        .route("/control/holds/{id}/release", post(control_release))
        .route("/control/holds/{id}/discard", post(control_discard))
        .with_state(harness);
    bot_router(state).merge(harnessed)
}

fn bot_router(state: Arc<State>) -> Router {
    Router::new()
        .route("/control/info", get(info))
        .route("/control/messages", post(control_message))
        .route("/control/clicks", post(control_click))
        .route("/control/sent", get(control_sent))
        .route("/control/calls", get(control_calls))
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
    AxState(harness): AxState<Harness>,
    axum::Json(body): axum::Json<ControlFailure>,
) -> Response {
    harness.fail_next(
        Route::from(body.method),
        body.count,
        fault_of(&body.failure),
    );
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

/// `POST /control/holds` `{"method": "sendMessage", "commit": "before_responding"}`: the
/// next call (of that method; any without one) is held. Answers `{"hold_id": n}`.
#[derive(Deserialize)]
struct ControlHold {
    #[serde(default)]
    method: Option<String>,
    commit: Commit,
}

async fn control_hold(
    AxState(harness): AxState<Harness>,
    axum::Json(body): axum::Json<ControlHold>,
) -> Response {
    let id = harness.hold_next(Route::from(body.method), body.commit);
    axum::Json(json!({"hold_id": id})).into_response()
}

async fn control_holds(AxState(harness): AxState<Harness>) -> Response {
    axum::Json(harness.holds()).into_response()
}

fn hold_decision(done: bool, id: u64) -> Response {
    if done {
        axum::Json(json!({"ok": true})).into_response()
    } else {
        control_error(format!(
            "hold {id} does not exist or was already released or discarded"
        ))
    }
}

async fn control_release(AxState(harness): AxState<Harness>, Path(id): Path<u64>) -> Response {
    hold_decision(harness.release(HoldId(id)), id)
}

async fn control_discard(AxState(harness): AxState<Harness>, Path(id): Path<u64>) -> Response {
    hold_decision(harness.discard(HoldId(id)), id)
}
