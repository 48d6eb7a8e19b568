//! Secrets (tokens, signing keys) that never show up in logs or errors.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer};

/// What a redacted secret reads as.
pub const REDACTED: &str = "<redacted>";

/// A credential. `Debug` and `Display` print `<redacted>`, never the value; use
/// [`Secret::expose`] exactly where the value is needed (a header, a URL, an HMAC key) and
/// [`Secret::redact`] on any text that may have picked it up (an error that quotes a URL).
///
/// Deserialises from a string, so settings can hold one directly
/// (`bot_token: Secret`) and a derived `Debug` of the settings stays safe.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Arc<str>);

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(Arc::from(value.into()))
    }

    /// The value itself.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// True for an empty value.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `text` with every occurrence of the value replaced by `<redacted>`.
    pub fn redact(&self, text: &str) -> String {
        if self.0.is_empty() {
            return text.to_owned();
        }
        text.replace(&*self.0, REDACTED)
    }
}

/// `text` with every secret of `secrets` redacted (longest first, so a secret that contains
/// another is not left half visible).
pub fn redact_all(text: &str, secrets: &[&Secret]) -> String {
    let mut sorted: Vec<&Secret> = secrets.iter().copied().filter(|s| !s.is_empty()).collect();
    sorted.sort_by_key(|s| std::cmp::Reverse(s.0.len()));
    sorted
        .into_iter()
        .fold(text.to_owned(), |acc, secret| secret.redact(&acc))
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({REDACTED})")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Self::new)
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self::new(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Self::new(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "123456:ABCdefGHIjklMNOpqrSTUvwxYZ0123456789";

    #[test]
    fn formatting_never_shows_the_value() {
        let secret = Secret::new(TOKEN);
        assert_eq!(format!("{secret:?}"), "Secret(<redacted>)");
        assert_eq!(secret.to_string(), "<redacted>");
        #[derive(Debug, Deserialize)]
        #[allow(dead_code)] // read through Debug only
        struct Settings {
            token: Secret,
        }
        let settings: Settings =
            serde_json::from_str(&format!(r#"{{"token":"{TOKEN}"}}"#)).expect("settings");
        assert!(!format!("{settings:?}").contains("ABCdef"));
        assert_eq!(settings.token.expose(), TOKEN);
    }

    #[test]
    fn redaction() {
        let secret = Secret::new(TOKEN);
        assert_eq!(
            secret.redact(&format!("GET http://x/bot{TOKEN}/getMe: refused")),
            "GET http://x/bot<redacted>/getMe: refused"
        );
        assert_eq!(Secret::new("").redact("as is"), "as is");
        let (long, short) = (Secret::new("abcdef"), Secret::new("abc"));
        assert_eq!(
            redact_all("abcdef abc", &[&short, &long]),
            "<redacted> <redacted>"
        );
    }
}
