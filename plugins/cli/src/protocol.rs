//! The wire protocol: newline-delimited JSON, one object per line (see the crate docs).

use std::io;

use serde::Serialize;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt as _, AsyncRead, BufReader};

/// Longest client line accepted, in bytes (without the newline).
pub const MAX_LINE_BYTES: usize = 64 * 1024;

/// A line the plugin sends to a client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerLine {
    /// A message from the agent.
    Message {
        /// The id `deliver` returned for it.
        id: String,
        /// The text (markdown).
        text: String,
        /// It was waiting in the backlog from before this connection.
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        backlog: bool,
    },
    /// The agent is working on a reply.
    Typing,
    /// The client's last line was not accepted.
    Error {
        /// What went wrong, for the user.
        text: String,
    },
    /// Something about the connection itself (e.g. superseded by a newer client).
    Notice {
        /// For the user.
        text: String,
    },
}

impl ServerLine {
    /// An `error` line.
    pub fn error(text: impl Into<String>) -> Self {
        Self::Error { text: text.into() }
    }

    /// A `notice` line.
    pub fn notice(text: impl Into<String>) -> Self {
        Self::Notice { text: text.into() }
    }

    /// The line as sent: compact JSON and a newline.
    pub fn encode(&self) -> Vec<u8> {
        // Serialising a plain enum of strings into a Vec cannot fail.
        let mut out = serde_json::to_vec(self).unwrap_or_else(|_| b"{}".to_vec());
        out.push(b'\n');
        out
    }
}

/// A line a client sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientLine {
    /// A chat message for the agent.
    Message {
        /// Its text.
        text: String,
    },
}

/// Parses one client line (without its newline). The error is the text of the `error` line
/// to send back.
pub fn parse_client_line(line: &[u8]) -> Result<ClientLine, String> {
    let value: Value = serde_json::from_slice(line)
        .map_err(|e| format!("bad JSON ({e}); expected one JSON object per line"))?;
    let Value::Object(mut object) = value else {
        return Err("expected a JSON object such as {\"type\":\"message\",\"text\":\"hi\"}".into());
    };
    let kind = match object.get("type") {
        Some(Value::String(kind)) => kind.clone(),
        Some(_) => return Err("`type` must be a string".into()),
        None => return Err("missing `type` (expected \"message\")".into()),
    };
    match kind.as_str() {
        "message" => match object.remove("text") {
            Some(Value::String(text)) => Ok(ClientLine::Message { text }),
            Some(_) => Err("`text` must be a string".into()),
            None => Err("a message needs a `text`".into()),
        },
        other => Err(format!("unknown type `{other}` (expected \"message\")")),
    }
}

/// What [`LineReader::next_line`] yields.
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    /// A complete line, without its `\n` (and without a trailing `\r`).
    Complete(Vec<u8>),
    /// A line longer than the limit; its bytes were discarded up to and including its `\n`.
    TooLong,
}

/// Reads `\n`-terminated lines of at most `max` bytes without ever buffering more than that:
/// the rest of an oversized line is skipped as it arrives.
pub struct LineReader<R> {
    inner: BufReader<R>,
    max: usize,
    buf: Vec<u8>,
    discarding: bool,
}

impl<R: AsyncRead + Unpin> LineReader<R> {
    /// A reader with a line limit of `max` bytes.
    pub fn new(inner: R, max: usize) -> Self {
        Self {
            inner: BufReader::new(inner),
            max,
            buf: Vec::new(),
            discarding: false,
        }
    }

    /// The next line, or `None` at end of input. A last line without a newline counts.
    ///
    /// Cancel safe: bytes already read stay in the reader's buffer.
    pub async fn next_line(&mut self) -> io::Result<Option<Line>> {
        loop {
            let available = self.inner.fill_buf().await?;
            if available.is_empty() {
                if self.discarding {
                    self.discarding = false;
                    return Ok(Some(Line::TooLong));
                }
                if self.buf.is_empty() {
                    return Ok(None);
                }
                return Ok(Some(self.take_line()));
            }
            match available.iter().position(|&b| b == b'\n') {
                Some(at) => {
                    let line = if self.discarding {
                        self.discarding = false;
                        Line::TooLong
                    } else if self.buf.len() + at > self.max {
                        self.buf.clear();
                        Line::TooLong
                    } else {
                        self.buf.extend_from_slice(&available[..at]);
                        self.take_line()
                    };
                    self.inner.consume(at + 1);
                    return Ok(Some(line));
                }
                None => {
                    let len = available.len();
                    if !self.discarding {
                        if self.buf.len() + len > self.max {
                            self.buf.clear();
                            self.discarding = true;
                        } else {
                            self.buf.extend_from_slice(available);
                        }
                    }
                    self.inner.consume(len);
                }
            }
        }
    }

    fn take_line(&mut self) -> Line {
        let mut line = std::mem::take(&mut self.buf);
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        Line::Complete(line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_lines_encode_as_documented() {
        let line = |l: ServerLine| String::from_utf8(l.encode()).expect("utf-8");
        assert_eq!(
            line(ServerLine::Message {
                id: "out-1".into(),
                text: "hi \"you\"".into(),
                backlog: false
            }),
            "{\"type\":\"message\",\"id\":\"out-1\",\"text\":\"hi \\\"you\\\"\"}\n"
        );
        assert_eq!(
            line(ServerLine::Message {
                id: "out-2".into(),
                text: "x".into(),
                backlog: true
            }),
            "{\"type\":\"message\",\"id\":\"out-2\",\"text\":\"x\",\"backlog\":true}\n"
        );
        assert_eq!(line(ServerLine::Typing), "{\"type\":\"typing\"}\n");
        assert_eq!(
            line(ServerLine::error("nope")),
            "{\"type\":\"error\",\"text\":\"nope\"}\n"
        );
        assert_eq!(
            line(ServerLine::notice("bye")),
            "{\"type\":\"notice\",\"text\":\"bye\"}\n"
        );
    }

    #[test]
    fn client_lines_parse_or_explain() {
        assert_eq!(
            parse_client_line(br#"{"type":"message","text":"hello","extra":1}"#),
            Ok(ClientLine::Message {
                text: "hello".into()
            })
        );
        let err = |line: &[u8]| parse_client_line(line).expect_err("refused");
        assert!(err(b"{not json").starts_with("bad JSON"));
        assert!(err(b"[1,2]").contains("JSON object"));
        assert!(err(br#"{"text":"x"}"#).contains("missing `type`"));
        assert!(err(br#"{"type":7}"#).contains("must be a string"));
        assert!(err(br#"{"type":"ping"}"#).contains("unknown type `ping`"));
        assert!(err(br#"{"type":"message"}"#).contains("needs a `text`"));
        assert!(err(br#"{"type":"message","text":3}"#).contains("`text` must be a string"));
        assert!(err(b"\xff\xfe").starts_with("bad JSON"));
    }

    async fn lines(input: &[u8], max: usize) -> Vec<Line> {
        let mut reader = LineReader::new(input, max);
        let mut out = Vec::new();
        while let Some(line) = reader.next_line().await.expect("read") {
            out.push(line);
        }
        out
    }

    #[tokio::test]
    async fn line_reader_splits_strips_cr_and_keeps_a_last_partial_line() {
        assert_eq!(
            lines(b"a\r\nbb\n\nccc", 8).await,
            [
                Line::Complete(b"a".to_vec()),
                Line::Complete(b"bb".to_vec()),
                Line::Complete(Vec::new()),
                Line::Complete(b"ccc".to_vec()),
            ]
        );
        assert!(lines(b"", 8).await.is_empty());
    }

    #[tokio::test]
    async fn line_reader_skips_oversized_lines_and_resynchronises() {
        // Exactly at the limit is fine; one byte more is not, also when split across reads.
        assert_eq!(
            lines(b"1234\n12345\nok\n", 4).await,
            [
                Line::Complete(b"1234".to_vec()),
                Line::TooLong,
                Line::Complete(b"ok".to_vec()),
            ]
        );
        // A tiny BufReader capacity is not possible through `new`, so feed a long line
        // through a reader that yields one byte at a time.
        let long = [b"x".repeat(100), b"\nafter\n".to_vec()].concat();
        let reader = tokio_test_reader(&long);
        let mut r = LineReader::new(reader, 10);
        assert_eq!(r.next_line().await.expect("read"), Some(Line::TooLong));
        assert_eq!(
            r.next_line().await.expect("read"),
            Some(Line::Complete(b"after".to_vec()))
        );
        assert_eq!(r.next_line().await.expect("read"), None);
        // An oversized last line without a newline.
        assert_eq!(lines(&b"y".repeat(20), 10).await, [Line::TooLong]);
    }

    /// A reader that returns one byte per read call.
    fn tokio_test_reader(data: &[u8]) -> impl AsyncRead + Unpin {
        struct OneByte(Vec<u8>, usize);
        impl AsyncRead for OneByte {
            fn poll_read(
                mut self: std::pin::Pin<&mut Self>,
                _cx: &mut std::task::Context<'_>,
                buf: &mut tokio::io::ReadBuf<'_>,
            ) -> std::task::Poll<io::Result<()>> {
                if self.1 < self.0.len() && buf.remaining() > 0 {
                    let byte = self.0[self.1];
                    buf.put_slice(&[byte]);
                    self.1 += 1;
                }
                std::task::Poll::Ready(Ok(()))
            }
        }
        OneByte(data.to_vec(), 0)
    }
}
