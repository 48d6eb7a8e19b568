//! Splitting a model reply into addressed messages and scratchpad.
//!
//! `<internal>…</internal>` spans are removed first, so a message block the model only
//! thought about inside them is never sent. Then every `<message to="NAME">BODY</message>`
//! block (double-quoted attribute, body may span lines, shortest match) is one message;
//! whatever text remains is scratchpad, logged and never sent.

use std::sync::LazyLock;

use regex::Regex;

static INTERNAL: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?s)<internal>.*?</internal>").expect("valid regex"));
static MESSAGE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"(?s)<message\s+to\s*=\s*"([^"]*)"\s*>(.*?)</message>"#).expect("valid regex")
});

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Parsed {
    /// `(destination name, trimmed body)` in the order written. Empty bodies are dropped.
    pub messages: Vec<(String, String)>,
    /// Text outside blocks and outside `<internal>`, trimmed.
    pub scratchpad: String,
}

pub fn parse(text: &str) -> Parsed {
    let visible = INTERNAL.replace_all(text, "");
    let mut messages = Vec::new();
    let mut scratch = String::new();
    let mut last = 0;
    for cap in MESSAGE.captures_iter(&visible) {
        let (Some(whole), Some(name), Some(body)) = (cap.get(0), cap.get(1), cap.get(2)) else {
            continue;
        };
        scratch.push_str(&visible[last..whole.start()]);
        last = whole.end();
        let body = body.as_str().trim();
        if !body.is_empty() {
            messages.push((name.as_str().trim().to_string(), body.to_string()));
        }
    }
    scratch.push_str(&visible[last..]);
    Parsed {
        messages,
        scratchpad: scratch.trim().to_string(),
    }
}

/// The first `max` characters of `s`, for log lines.
pub fn preview(s: &str, max: usize) -> &str {
    s.char_indices().nth(max).map_or(s, |(i, _)| &s[..i])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msgs(p: &Parsed) -> Vec<(&str, &str)> {
        p.messages
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect()
    }

    #[test]
    fn blocks_and_scratchpad() {
        let p = parse(
            "Let me think.\n<message to=\"family\">\n  Hello\n  there\n</message>\nbetween\
             <message to=\"work\">Second</message>  ",
        );
        assert_eq!(msgs(&p), [("family", "Hello\n  there"), ("work", "Second")]);
        assert_eq!(p.scratchpad, "Let me think.\n\nbetween");
    }

    #[test]
    fn non_greedy_and_attribute_spacing() {
        let p = parse("<message  to = \"a\" >1</message><message to=\"b\">2</message>");
        assert_eq!(msgs(&p), [("a", "1"), ("b", "2")]);
        assert!(p.scratchpad.is_empty());
    }

    #[test]
    fn internal_is_stripped_even_around_blocks() {
        let p = parse(
            "<internal>plan: <message to=\"a\">draft</message></internal><message to=\"a\">final</message>",
        );
        assert_eq!(msgs(&p), [("a", "final")]);
        assert!(p.scratchpad.is_empty());
        let p = parse("<internal>only thinking</internal>");
        assert!(p.messages.is_empty() && p.scratchpad.is_empty());
    }

    #[test]
    fn bare_text_and_malformed_blocks_are_scratchpad() {
        assert_eq!(parse("just text").scratchpad, "just text");
        let p = parse("<message to='a'>single quotes</message><message to=\"b\">unclosed");
        assert!(p.messages.is_empty());
        assert!(p.scratchpad.contains("single quotes"));
        assert!(parse("<message to=\"a\">   </message>").messages.is_empty());
    }

    #[test]
    fn preview_cuts_on_char_boundaries() {
        assert_eq!(preview("héllo", 2), "hé");
        assert_eq!(preview("hi", 10), "hi");
    }
}
