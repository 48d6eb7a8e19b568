//! Model-API failures, told to the chat in one short line that says what to do.
//!
//! Providers report failures as text: the Claude CLI as `API Error: 401 {json}` or its own
//! phrases, the OpenAI-compatible provider as the HTTP status and the error body. Both go
//! through [`explain`], so the same failure reads the same whichever provider hit it. The
//! host's proxy speaks the same shapes (its own refusals carry NanoClaw's message, which is
//! shown as is).

use std::sync::LazyLock;

use regex::Regex;

pub use nanoclaw_schema::session::model_proxy::{BUDGET_ERROR_TYPE, UNREACHABLE_ERROR_TYPE};

/// What kind of failure a provider's error text describes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiFailure {
    /// 401: the credential is missing, wrong or expired.
    Credential,
    /// 403: the credential may not do this.
    Permission,
    /// 429: rate limited.
    RateLimited,
    /// 529 / 503: the API is overloaded.
    Overloaded,
    /// The host's proxy refused: the agent's daily budget is spent. Carries its message.
    Budget(String),
    /// The model API (or the host's proxy) could not be reached.
    Unreachable,
    /// The conversation no longer fits the model's context.
    TooLong,
}

impl ApiFailure {
    /// The line the chat sees.
    pub fn user_message(&self) -> String {
        match self {
            ApiFailure::Credential => "The model API did not accept NanoClaw's credential (401). \
                Operator: check the key or token in data/.env and run `nanoclaw doctor --credential`."
                .into(),
            ApiFailure::Permission => "The model API refused this request (403): the credential \
                may not use this model. Operator: check the account or the agent's model."
                .into(),
            ApiFailure::RateLimited => {
                "The model API is rate-limiting this account (429). Try again in a minute.".into()
            }
            ApiFailure::Overloaded => {
                "The model API is overloaded right now. Try again in a few minutes.".into()
            }
            ApiFailure::Budget(message) => message.clone(),
            ApiFailure::Unreachable => "NanoClaw cannot reach the model API. Operator: check the \
                host's network and run `nanoclaw doctor`."
                .into(),
            ApiFailure::TooLong => "This conversation is too long for the model. An admin can \
                send /compact to shorten it or /clear to start fresh."
                .into(),
        }
    }
}

/// Classifies an HTTP failure from its status and the error body (Anthropic's
/// `{"type":"error","error":{"type":..,"message":..}}` or OpenAI's `{"error":{..}}`).
pub fn classify_http(status: u16, body: &str) -> Option<ApiFailure> {
    let parsed: Option<serde_json::Value> = serde_json::from_str(body).ok();
    let error = parsed.as_ref().map(|v| &v["error"]);
    let error_type = error
        .and_then(|e| e["type"].as_str().or(e["code"].as_str()))
        .unwrap_or_default();
    let message = error
        .and_then(|e| e["message"].as_str())
        .unwrap_or(body)
        .trim();
    if error_type == BUDGET_ERROR_TYPE {
        return Some(ApiFailure::Budget(bounded(message)));
    }
    if error_type == UNREACHABLE_ERROR_TYPE {
        return Some(ApiFailure::Unreachable);
    }
    match status {
        401 => Some(ApiFailure::Credential),
        403 => Some(ApiFailure::Permission),
        429 => Some(ApiFailure::RateLimited),
        503 | 529 => Some(ApiFailure::Overloaded),
        502 | 504 => Some(ApiFailure::Unreachable),
        _ if error_type == "overloaded_error" => Some(ApiFailure::Overloaded),
        400 if too_long(message) => Some(ApiFailure::TooLong),
        _ => None,
    }
}

/// Classifies a provider's error text: `API Error: <status> <body>` (as the Claude CLI
/// writes it) or one of the phrases clients use for the same failures.
pub fn classify_text(text: &str) -> Option<ApiFailure> {
    static API_ERROR: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"API Error:?\s*(\d{3})\b\s*(.*)").expect("valid regex"));
    static PHRASES: LazyLock<[(Regex, ApiFailure); 5]> = LazyLock::new(|| {
        let re = |p: &str| Regex::new(p).expect("valid regex");
        [
            (
                re(
                    r"(?i)invalid api key|invalid x-api-key|authentication_error|oauth token (has )?expired|please run /login",
                ),
                ApiFailure::Credential,
            ),
            (
                re(r"(?i)rate_limit_error|rate limit"),
                ApiFailure::RateLimited,
            ),
            (re(r"(?i)overloaded"), ApiFailure::Overloaded),
            (
                re(
                    r"(?i)connection error|ECONNREFUSED|ENOTFOUND|ETIMEDOUT|unable to connect|fetch failed",
                ),
                ApiFailure::Unreachable,
            ),
            (re(r"(?i)prompt is too long"), ApiFailure::TooLong),
        ]
    });
    if let Some(c) = API_ERROR.captures(text) {
        let status = c[1].parse().unwrap_or(0);
        let body = c.get(2).map_or("", |m| m.as_str()).trim();
        if let Some(f) = classify_http(status, body) {
            return Some(f);
        }
    }
    PHRASES
        .iter()
        .find(|(re, _)| re.is_match(text))
        .map(|(_, f)| f.clone())
}

/// The chat's line for a failed request: the explained failure, or `Error: <text>`.
pub fn explain(text: &str) -> String {
    match classify_text(text) {
        Some(f) => f.user_message(),
        None => format!("Error: {}", bounded(text)),
    }
}

fn too_long(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("prompt is too long")
        || m.contains("context length")
        || m.contains("too many tokens")
}

/// At most 500 characters of something shown in a chat.
fn bounded(text: &str) -> String {
    const MAX: usize = 500;
    let text = text.trim();
    match text.char_indices().nth(MAX) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claude_cli_api_errors() {
        let e = r#"API Error: 401 {"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"}}"#;
        assert_eq!(classify_text(e), Some(ApiFailure::Credential));
        assert_eq!(
            classify_text(
                r#"API Error: 529 {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#
            ),
            Some(ApiFailure::Overloaded)
        );
        assert_eq!(
            classify_text("API Error: 429 rate limited"),
            Some(ApiFailure::RateLimited)
        );
        assert_eq!(
            classify_text("Invalid API key · Please run /login"),
            Some(ApiFailure::Credential)
        );
        assert_eq!(
            classify_text("API Error: Connection error."),
            Some(ApiFailure::Unreachable)
        );
        assert_eq!(classify_text("the tool crashed"), None);
        // As Claude Code 2.1.128 words them in its `result` (measured against a fake API).
        for (text, want) in [
            (
                "Invalid API key · Fix external API key",
                ApiFailure::Credential,
            ),
            (
                "API Error: 401 Invalid API key · Fix external API key",
                ApiFailure::Credential,
            ),
            (
                "API Error: Request rejected (429) · rate limited",
                ApiFailure::RateLimited,
            ),
            (
                "API Error: 529 Overloaded. This is a server-side issue, usually temporary",
                ApiFailure::Overloaded,
            ),
            (
                "API Error: Unable to connect to API (ConnectionRefused)",
                ApiFailure::Unreachable,
            ),
        ] {
            assert_eq!(classify_text(text), Some(want), "{text}");
        }
    }

    #[test]
    fn proxy_refusals_keep_their_message() {
        let body = r#"{"type":"error","error":{"type":"budget_exceeded","message":"Agent Andy used its 1000 tokens for today."}}"#;
        assert_eq!(
            classify_text(&format!("API Error: 402 {body}")),
            Some(ApiFailure::Budget(
                "Agent Andy used its 1000 tokens for today.".into()
            ))
        );
        let body = r#"{"type":"error","error":{"type":"upstream_unreachable","message":"x"}}"#;
        assert_eq!(classify_http(502, body), Some(ApiFailure::Unreachable));
    }

    #[test]
    fn openai_shapes() {
        let body = r#"{"error":{"message":"Incorrect API key provided","type":"invalid_request_error","code":"invalid_api_key"}}"#;
        assert_eq!(classify_http(401, body), Some(ApiFailure::Credential));
        let body = r#"{"error":{"message":"This model's maximum context length is 8192 tokens","type":"invalid_request_error"}}"#;
        assert_eq!(classify_http(400, body), Some(ApiFailure::TooLong));
        assert_eq!(classify_http(400, "{}"), None);
    }

    #[test]
    fn explain_is_short() {
        assert!(explain("API Error: 401 {}").contains("nanoclaw doctor"));
        let long = "x".repeat(5_000);
        assert!(explain(&long).chars().count() < 520);
        assert!(explain("boom").starts_with("Error: boom"));
    }
}
