//! A data dir whose only channel is the test plugin: messages go in through its webhook (the
//! real plugin boundary) and every delivery is recorded to a file the test reads.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};

use super::{Daemon, built, cli_ok, free_port, wait_until};

/// The mock agent's rules for "answer every message with an echo".
pub const ECHO: &str = "[[rule]]\nreply = \"echo: {text}\"\n";

/// A data dir with the test plugin configured to record deliveries.
pub struct Setup {
    pub _dir: tempfile::TempDir,
    pub data: PathBuf,
    pub record: PathBuf,
    pub port: u16,
}

impl Setup {
    pub fn new() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        let record = dir.path().join("delivered.jsonl");
        Setup {
            data,
            record,
            port: free_port(),
            _dir: dir,
        }
    }

    pub fn plugins_toml(&self) -> String {
        format!(
            "[plugins.test]\nlibrary = {:?}\n[plugins.test.settings]\nrecord_path = {:?}\n",
            built().join("libnanoclaw_test_plugin.so"),
            self.record
        )
    }

    pub fn start(&self) -> Daemon {
        let port = self.port.to_string();
        Daemon::start(
            &self.data,
            &self.plugins_toml(),
            &["--webhook-listen", &format!("127.0.0.1:{port}")],
        )
    }

    /// An agent group wired to a public test chat, with mock rules.
    pub fn agent(&self, folder: &str, chat: &str, mock: &str) {
        cli_ok(
            &self.data,
            &[
                "groups",
                "create",
                folder,
                "--folder",
                folder,
                "--provider",
                "mock",
            ],
        );
        cli_ok(
            &self.data,
            &[
                "chats",
                "add",
                &format!("test:{chat}"),
                "--name",
                chat,
                "--policy",
                "public",
            ],
        );
        cli_ok(
            &self.data,
            &["wire", "add", &format!("test:{chat}"), folder],
        );
        let config = self.data.join("config").join(folder);
        std::fs::create_dir_all(&config).unwrap();
        std::fs::write(config.join("mock.toml"), mock).unwrap();
    }

    /// A message from a user, through the plugin's webhook (the real plugin boundary).
    pub fn say(&self, chat: &str, from: &str, id: &str, text: &str) {
        let body = json!({"chat_id": chat, "message_id": id, "sender_handle": from, "sender_name": from, "text": text});
        let (status, answer) = post(self.port, "/webhook/test", &body.to_string());
        assert_eq!(status, 200, "inject failed: {answer}");
    }

    /// Everything the plugin was asked to deliver.
    pub fn delivered(&self) -> Vec<Value> {
        self.calls("deliver")
    }

    /// The plugin's recorded calls of one kind (`deliver`, `set_typing`, `open_dm`).
    pub fn calls(&self, kind: &str) -> Vec<Value> {
        std::fs::read_to_string(&self.record)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["call"] == kind)
            .collect()
    }

    pub fn delivered_to(&self, chat: &str) -> Vec<String> {
        self.delivered()
            .into_iter()
            .filter(|v| v["chat_id"] == chat)
            .map(|v| v["text"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    /// Waits (up to a minute) until `chat` has been sent exactly `n` messages; fails with the
    /// daemon's log otherwise.
    pub fn expect_delivered(&self, daemon: &Daemon, chat: &str, n: usize) {
        assert!(
            wait_until(Duration::from_secs(60), || self.delivered_to(chat).len()
                == n),
            "{chat} never got {n} message(s); delivered: {:?}\n{}",
            self.delivered(),
            daemon.log()
        );
    }

    pub fn session_dirs(&self) -> Vec<PathBuf> {
        super::session_dirs(&self.data)
    }
}

pub fn post(port: u16, path: &str, body: &str) -> (u16, String) {
    // The daemon answers on its control socket a moment before the webhook server is bound.
    let mut connected = None;
    wait_until(Duration::from_secs(10), || {
        connected = TcpStream::connect(("127.0.0.1", port)).ok();
        connected.is_some()
    });
    let mut s = connected.expect("connect to the webhook server");
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let status = resp
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, resp)
}
