//! Reads the token usage out of a model API's answer as it streams past, without holding it.
//!
//! Streams (`text/event-stream`) are read line by line, and only `data:` lines that mention
//! `"usage"` are parsed, so a long answer costs a substring search per line. Plain JSON
//! answers are kept up to [`MAX_JSON`] and parsed at the end. Everything here comes from the
//! upstream the operator configured, but it is bounded all the same.

use serde_json::Value;

use super::settings::Api;
use crate::store::usage::Tokens;

/// A JSON answer larger than this is not parsed for usage (model answers are far smaller).
const MAX_JSON: usize = 4 * 1024 * 1024;
/// An event-stream line longer than this is skipped (usage lines are short).
const MAX_LINE: usize = 1024 * 1024;

pub struct Meter {
    api: Api,
    stream: bool,
    /// The current line (streams) or the whole body (JSON).
    buf: Vec<u8>,
    /// The current line is too long and is being skipped to its end.
    skipping: bool,
    tokens: Tokens,
    model: Option<String>,
}

impl Meter {
    /// `content_type`: the answer's, to tell a stream from JSON.
    pub fn new(api: Api, content_type: Option<&str>) -> Meter {
        Meter {
            api,
            stream: content_type.is_some_and(|c| c.starts_with("text/event-stream")),
            buf: Vec::new(),
            skipping: false,
            tokens: Tokens::default(),
            model: None,
        }
    }

    pub fn feed(&mut self, chunk: &[u8]) {
        if !self.stream {
            if self.skipping {
                return;
            }
            if self.buf.len() + chunk.len() <= MAX_JSON {
                self.buf.extend_from_slice(chunk);
            } else {
                self.skipping = true;
                self.buf = Vec::new();
            }
            return;
        }
        let mut rest = chunk;
        while let Some(pos) = rest.iter().position(|&b| b == b'\n') {
            if !self.skipping && self.buf.len() + pos <= MAX_LINE {
                self.buf.extend_from_slice(&rest[..pos]);
                let line = std::mem::take(&mut self.buf);
                self.line(&line);
            }
            self.buf.clear();
            self.skipping = false;
            rest = &rest[pos + 1..];
        }
        if self.skipping || self.buf.len() + rest.len() > MAX_LINE {
            self.skipping = true;
            self.buf.clear();
        } else {
            self.buf.extend_from_slice(rest);
        }
    }

    /// The usage seen, and the model the answer named.
    pub fn finish(mut self) -> (Tokens, Option<String>) {
        if self.stream {
            let line = std::mem::take(&mut self.buf);
            if !self.skipping {
                self.line(&line);
            }
        } else if !self.skipping
            && let Ok(v) = serde_json::from_slice::<Value>(&self.buf)
        {
            self.take_model(&v["model"]);
            self.take_usage(&v["usage"]);
        }
        (self.tokens, self.model)
    }

    fn line(&mut self, line: &[u8]) {
        let Some(data) = line.strip_prefix(b"data:") else {
            return;
        };
        if !contains(data, b"\"usage\"") && !contains(data, b"\"model\"") {
            return;
        }
        let Ok(v) = serde_json::from_slice::<Value>(data) else {
            return;
        };
        match self.api {
            // message_start carries `message.usage` (input and cache counts) and the model;
            // message_delta carries cumulative `usage` (output, sometimes input again).
            Api::Anthropic => {
                self.take_model(&v["message"]["model"]);
                self.take_usage(&v["message"]["usage"]);
                self.take_usage(&v["usage"]);
            }
            // The last chunk carries `usage` when `stream_options.include_usage` was set.
            Api::OpenAi => {
                self.take_model(&v["model"]);
                self.take_usage(&v["usage"]);
            }
        }
    }

    fn take_model(&mut self, v: &Value) {
        if let Some(m) = v.as_str().filter(|m| !m.is_empty()) {
            self.model = Some(m.chars().take(100).collect());
        }
    }

    fn take_usage(&mut self, u: &Value) {
        if !u.is_object() {
            return;
        }
        let n = |v: &Value| v.as_u64();
        let t = &mut self.tokens;
        match self.api {
            Api::Anthropic => {
                // Cumulative counts: the latest value of each field is the answer's total.
                if let Some(x) = n(&u["input_tokens"]) {
                    t.input = x;
                }
                if let Some(x) = n(&u["output_tokens"]) {
                    t.output = x;
                }
                if let Some(x) = n(&u["cache_creation_input_tokens"]) {
                    t.cache_creation = x;
                }
                if let Some(x) = n(&u["cache_read_input_tokens"]) {
                    t.cache_read = x;
                }
            }
            Api::OpenAi => {
                // `prompt_tokens` includes the cached ones; keep `input` the uncached part.
                let cached = n(&u["prompt_tokens_details"]["cached_tokens"]).unwrap_or(0);
                if let Some(x) = n(&u["prompt_tokens"]) {
                    t.input = x.saturating_sub(cached);
                    t.cache_read = cached;
                }
                if let Some(x) = n(&u["completion_tokens"]) {
                    t.output = x;
                }
            }
        }
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(api: Api, ct: &str, body: &str, chunk: usize) -> (Tokens, Option<String>) {
        let mut m = Meter::new(api, Some(ct));
        for c in body.as_bytes().chunks(chunk) {
            m.feed(c);
        }
        m.finish()
    }

    const ANTHROPIC_SSE: &str = "event: message_start\n\
data: {\"type\":\"message_start\",\"message\":{\"model\":\"claude-x\",\"usage\":{\"input_tokens\":12,\"cache_creation_input_tokens\":3,\"cache_read_input_tokens\":40,\"output_tokens\":1}}}\n\n\
event: content_block_delta\n\
data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"hi \\\"usage\\\"\"}}\n\n\
event: message_delta\n\
data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":25}}\n\n\
event: message_stop\n\
data: {\"type\":\"message_stop\"}\n\n";

    #[test]
    fn anthropic_stream_in_any_chunking() {
        for chunk in [1, 7, 64, 10_000] {
            let (t, model) = run(
                Api::Anthropic,
                "text/event-stream; charset=utf-8",
                ANTHROPIC_SSE,
                chunk,
            );
            assert_eq!(
                t,
                Tokens {
                    input: 12,
                    output: 25,
                    cache_creation: 3,
                    cache_read: 40
                },
                "chunk {chunk}"
            );
            assert_eq!(model.as_deref(), Some("claude-x"));
        }
    }

    #[test]
    fn json_answers() {
        let body = r#"{"model":"claude-y","usage":{"input_tokens":5,"output_tokens":6}}"#;
        let (t, model) = run(Api::Anthropic, "application/json", body, 3);
        assert_eq!((t.input, t.output), (5, 6));
        assert_eq!(model.as_deref(), Some("claude-y"));
        let body = r#"{"model":"gpt","usage":{"prompt_tokens":100,"completion_tokens":9,"prompt_tokens_details":{"cached_tokens":60}}}"#;
        let (t, _) = run(Api::OpenAi, "application/json", body, 5);
        assert_eq!(
            t,
            Tokens {
                input: 40,
                output: 9,
                cache_creation: 0,
                cache_read: 60
            }
        );
    }

    #[test]
    fn openai_stream_usage_chunk() {
        let body = "data: {\"model\":\"llama\",\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\n\
data: {\"model\":\"llama\",\"choices\":[],\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":2}}\n\n\
data: [DONE]\n\n";
        let (t, model) = run(Api::OpenAi, "text/event-stream", body, 4);
        assert_eq!((t.input, t.output), (7, 2));
        assert_eq!(model.as_deref(), Some("llama"));
    }

    #[test]
    fn oversized_lines_and_bodies_are_skipped_not_held() {
        let mut m = Meter::new(Api::Anthropic, Some("text/event-stream"));
        let big = vec![b'x'; MAX_LINE + 10];
        m.feed(b"data: ");
        m.feed(&big);
        assert!(m.buf.len() <= MAX_LINE);
        m.feed(b"\ndata: {\"usage\":{\"output_tokens\":3}}\n");
        assert_eq!(m.finish().0.output, 3);

        let mut m = Meter::new(Api::OpenAi, Some("application/json"));
        m.feed(&vec![b' '; MAX_JSON + 1]);
        assert!(m.finish().0.is_zero());
    }
}
