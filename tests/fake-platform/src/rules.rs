//! Scripted faults and held requests.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Which calls a rule applies to: the platform fake names each call (its *route*, e.g. the
/// Bot API method); calls it leaves unnamed never match.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Route {
    /// Any named call.
    Any,
    /// Calls with this route name.
    Named(String),
}

impl Route {
    /// `Named(name)`.
    pub fn named(name: impl Into<String>) -> Self {
        Self::Named(name.into())
    }

    pub(crate) fn matches(&self, route: &str) -> bool {
        match self {
            Self::Any => true,
            Self::Named(name) => name == route,
        }
    }
}

impl From<Option<String>> for Route {
    fn from(name: Option<String>) -> Self {
        name.map_or(Self::Any, Self::Named)
    }
}

/// What a held request waits for, and so what killing the client during the hold means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Commit {
    /// The fake handles the call at once (the platform has the message), and only its
    /// answer is held: a client killed now never learns that the call succeeded.
    BeforeResponding,
    /// The call waits unhandled: [`release`](crate::Harness::release) handles and answers
    /// it (even if the client is gone by then: the platform counts it as received);
    /// [`discard`](crate::Harness::discard) drops the connection and the platform never
    /// had it.
    AfterRelease,
}

/// A hold's id, from [`hold_next`](crate::Harness::hold_next).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct HoldId(pub u64);

/// Where a hold is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HoldState {
    /// No matching call yet.
    Armed,
    /// A call is held.
    Waiting,
    /// Released: the call went on.
    Released,
    /// Discarded: the connection was dropped.
    Discarded,
}

/// A hold, as [`holds`](crate::Harness::holds) reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HoldInfo {
    /// Its id.
    pub id: HoldId,
    /// The calls it catches.
    pub route: Route,
    /// When the call is handled.
    pub commit: Commit,
    /// Where it is.
    pub state: HoldState,
    /// The call log's `seq` of the held call, once one was caught.
    pub call: Option<u64>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Action {
    /// Answer this instead of the platform.
    Respond {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    /// Wait, then let the platform answer.
    Delay(Duration),
    /// Close the connection without an answer.
    Drop,
    /// Hold the call (see [`Commit`]).
    Hold(HoldId, Commit),
}

/// Something done to a call instead of (or before) the platform's normal answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Fault {
    pub(crate) action: Action,
    label: String,
}

impl Fault {
    /// Answers with `status`, `content_type` and `body`.
    pub fn respond(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> Self {
        Self {
            action: Action::Respond {
                status,
                headers: vec![("content-type".to_owned(), content_type.to_owned())],
                body: body.into(),
            },
            label: format!("status_{status}"),
        }
    }

    /// Answers with `status` and a JSON body.
    pub fn json(status: u16, body: &serde_json::Value) -> Self {
        Self::respond(status, "application/json", body.to_string())
    }

    /// Answers `status` with an empty body.
    pub fn status(status: u16) -> Self {
        Self::respond(status, "text/plain", Vec::new())
    }

    /// `429 Too Many Requests` with a `Retry-After` header in whole seconds (rounded up).
    pub fn rate_limited(retry_after: Duration) -> Self {
        let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
        Self::status(429)
            .with_header("retry-after", &secs.to_string())
            .labelled("rate_limited")
    }

    /// `500 Internal Server Error`.
    pub fn server_error() -> Self {
        Self::status(500).labelled("server_error")
    }

    /// A slow answer: waits `delay`, then the platform answers normally.
    pub fn delay(delay: Duration) -> Self {
        Self {
            action: Action::Delay(delay),
            label: "delay".to_owned(),
        }
    }

    /// The connection is closed without an answer.
    pub fn drop_connection() -> Self {
        Self {
            action: Action::Drop,
            label: "drop_connection".to_owned(),
        }
    }

    /// Holds the call (see [`Commit`]); made by [`hold_next`](crate::Harness::hold_next).
    pub(crate) fn hold(id: HoldId, commit: Commit) -> Self {
        Self {
            action: Action::Hold(id, commit),
            label: "hold".to_owned(),
        }
    }

    /// Adds a response header (to a fault that answers).
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        if let Action::Respond { headers, .. } = &mut self.action {
            headers.push((name.to_ascii_lowercase(), value.to_owned()));
        }
        self
    }

    /// Names the fault in the call log (platform fakes use their own names).
    pub fn labelled(mut self, label: &str) -> Self {
        label.clone_into(&mut self.label);
        self
    }

    /// The fault's name in the call log.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// True when the platform never handles the call (an answer instead, or a dropped
    /// connection); delays and holds let it through.
    pub fn is_terminal(&self) -> bool {
        matches!(self.action, Action::Respond { .. } | Action::Drop)
    }
}

/// An armed fault: the next `remaining` matching calls get it.
#[derive(Debug, Clone)]
pub(crate) struct Rule {
    pub route: Route,
    pub remaining: u32,
    pub fault: Fault,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_describe_themselves() {
        let f = Fault::rate_limited(Duration::from_millis(1500));
        assert_eq!(f.label(), "rate_limited");
        assert!(f.is_terminal());
        match &f.action {
            Action::Respond {
                status, headers, ..
            } => {
                assert_eq!(*status, 429);
                assert!(headers.contains(&("retry-after".to_owned(), "2".to_owned())));
            }
            other => panic!("{other:?}"),
        }
        assert!(!Fault::delay(Duration::from_millis(1)).is_terminal());
        assert!(Route::Any.matches("x") && !Route::named("a").matches("b"));
        assert_eq!(Route::from(None), Route::Any);
    }
}
