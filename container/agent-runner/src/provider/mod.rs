//! Model providers behind one trait.
//!
//! A provider holds one conversation. The runner sends it requests one at a time and gets the
//! reply text back; while the provider works it reports [`Event`]s, so the runner can touch
//! the heartbeat and persist the conversation's continuation id the moment it is known.

pub mod api_error;
pub mod claude;
pub mod mock;
pub mod openai;

use std::sync::LazyLock;

use regex::Regex;

/// What kind of input a request carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestKind {
    /// Formatted inbound messages.
    Turn,
    /// The runner's reminder after a reply that reached nobody.
    Nudge,
    /// An admin slash command, passed raw (`/compact`, `/cost`, ...).
    Command,
}

impl RequestKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RequestKind::Turn => "turn",
            RequestKind::Nudge => "nudge",
            RequestKind::Command => "command",
        }
    }
}

/// Facts about the newest triggering message of the turn. Real models read the prompt; the
/// mock provider uses these to stay deterministic without parsing it.
#[derive(Debug, Clone, Default)]
pub struct Hints {
    /// Destination name the message came from (`from` attribute), if known.
    pub from: Option<String>,
    pub sender: String,
    pub text: String,
    pub assistant_name: Option<String>,
}

#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub kind: RequestKind,
    pub input: &'a str,
    /// The system prompt addendum (destinations, name). Providers that fix it at session
    /// start restart the session (resuming it) when it changes.
    pub system_prompt: &'a str,
    /// Where to resume the conversation, when the provider has no live session.
    pub continuation: Option<&'a str>,
    pub hints: &'a Hints,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event<'a> {
    /// The provider is alive and working.
    Activity,
    /// The conversation's continuation id; persist it now so a crash can resume.
    Continuation(&'a str),
    /// Something worth a log line (retries, ...).
    Progress(&'a str),
    /// The provider summarized older turns to make room; the runner tells the chat.
    Compacted,
}

#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// The provider failed this request. `session_invalid`: the continuation it was asked to
    /// resume does not exist (the runner then clears it and retries once, fresh).
    #[error("{message}")]
    Failed {
        message: String,
        session_invalid: bool,
    },
    /// Shutdown was requested while the provider worked; the turn is abandoned.
    #[error("interrupted by shutdown")]
    Interrupted,
}

impl ProviderError {
    pub fn failed(message: impl Into<String>) -> ProviderError {
        let message = message.into();
        let session_invalid = looks_like_invalid_session(&message);
        ProviderError::Failed {
            message,
            session_invalid,
        }
    }
}

pub trait Provider {
    fn name(&self) -> &'static str;

    /// Sends one request in the conversation and returns the complete reply text.
    fn exchange(
        &mut self,
        req: &Request<'_>,
        on_event: &mut dyn FnMut(Event<'_>),
    ) -> Result<String, ProviderError>;

    /// Forgets the live conversation (after `/clear` or an invalid continuation); the next
    /// request starts from `Request::continuation`.
    fn reset(&mut self);
}

/// The key under which a provider's continuation id lives in `session_state`.
pub fn continuation_key(provider: &str) -> String {
    format!("continuation:{provider}")
}

/// Error texts that mean "the conversation to resume does not exist".
pub fn looks_like_invalid_session(message: &str) -> bool {
    static RE: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r"(?i)no conversation found|session\b.{0,80}\bnot found|ENOENT.{0,200}\.jsonl")
            .expect("valid regex")
    });
    RE.is_match(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_session_detection() {
        assert!(looks_like_invalid_session(
            "No conversation found with session ID: abc"
        ));
        assert!(looks_like_invalid_session(
            "Error: session abc-123 not found"
        ));
        assert!(looks_like_invalid_session(
            "ENOENT: no such file, open '/home/node/.claude/projects/x/abc.jsonl'"
        ));
        assert!(!looks_like_invalid_session("rate limited"));
        assert!(
            ProviderError::failed("No conversation found")
                .to_string()
                .contains("No conversation")
        );
    }
}
