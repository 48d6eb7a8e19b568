//! What the host's model-API proxy tells the container beyond the API's own answers.
//!
//! The proxy answers its own refusals in the API's error shape (`{"type":"error","error":
//! {"type":..,"message":..}}` for Anthropic, `{"error":{..}}` for OpenAI-compatible APIs);
//! these error types mark the ones the runner shows as they are.

/// HTTP 402: the agent group's daily token budget is spent; the message says until when.
pub const BUDGET_ERROR_TYPE: &str = "budget_exceeded";
/// HTTP 502: the proxy could not reach the upstream API (or the runner the proxy).
pub const UNREACHABLE_ERROR_TYPE: &str = "upstream_unreachable";
