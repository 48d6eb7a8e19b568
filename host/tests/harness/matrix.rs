//! A real Matrix homeserver (Synapse, started by `scripts/synapse.sh` on 127.0.0.1) for
//! end-to-end tests, and what a Matrix user does on it through plain client-server API
//! calls: create rooms, invite, join, write, reply, read.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{Value, json};

use super::{built, wait_until};
use crate::common::workspace_root;

fn script() -> PathBuf {
    workspace_root().join("scripts/synapse.sh")
}

/// Whether Synapse is installed (`scripts/synapse.sh install`; `scripts/test.sh` does it).
pub fn installed() -> bool {
    Command::new("bash")
        .arg(script())
        .arg("installed")
        .status()
        .is_ok_and(|s| s.success())
}

/// Skips the calling test (returns false) when Synapse is not installed, saying so; fails
/// it instead where the suite requires everything (`scripts/test.sh` sets
/// `NANOCLAW_REQUIRE_DOCKER`, or `NANOCLAW_REQUIRE_SYNAPSE`).
pub fn require_synapse(test: &str) -> bool {
    if installed() {
        return true;
    }
    if std::env::var_os("NANOCLAW_REQUIRE_SYNAPSE").is_some()
        || std::env::var_os("NANOCLAW_REQUIRE_DOCKER").is_some()
    {
        panic!("{test}: Synapse is not installed (run scripts/synapse.sh install)");
    }
    eprintln!("SKIP {test}: Synapse is not installed (run scripts/synapse.sh install)");
    false
}

/// A running Synapse on 127.0.0.1 with a throwaway config; stopped when dropped.
pub struct Synapse {
    dir: tempfile::TempDir,
    pub port: u16,
}

impl Synapse {
    pub fn start() -> Synapse {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("bash")
            .arg(script())
            .arg("start")
            .arg(dir.path())
            .output()
            .expect("run scripts/synapse.sh");
        assert!(
            out.status.success(),
            "Synapse did not start:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let printed = String::from_utf8_lossy(&out.stdout);
        let port = printed
            .split_whitespace()
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no port in {printed:?}"));
        Synapse { dir, port }
    }

    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Registers `name` through the shared-secret admin API and logs in.
    pub fn user(&self, name: &str) -> User {
        let out = Command::new("bash")
            .arg(script())
            .args([
                "register",
                &self.dir.path().to_string_lossy(),
                name,
                "pw-for-tests",
            ])
            .output()
            .expect("register");
        assert!(
            out.status.success(),
            "register {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let (status, login) = http(
            self.port,
            "POST",
            "/_matrix/client/v3/login",
            None,
            Some(&json!({
                "type": "m.login.password",
                "identifier": {"type": "m.id.user", "user": name},
                "password": "pw-for-tests",
            })),
        );
        assert_eq!(status, 200, "login {name}: {login}");
        User {
            port: self.port,
            id: login["user_id"].as_str().unwrap().to_owned(),
            token: login["access_token"].as_str().unwrap().to_owned(),
            since: std::sync::Mutex::new(None),
        }
    }

    /// The homeserver's log, for failures.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("homeserver.log")).unwrap_or_default()
    }
}

impl Drop for Synapse {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(script())
            .arg("stop")
            .arg(self.dir.path())
            .output();
    }
}

/// One HTTP/1.0 exchange with the homeserver (no chunking, connection closed after).
pub fn http(
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> (u16, Value) {
    let body = body.map(Value::to_string).unwrap_or_default();
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to Synapse");
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n{auth}\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .expect("write");
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).expect("read");
    let answer = String::from_utf8_lossy(&answer);
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

/// Percent-encodes a path segment (room and event ids have `!`, `$`, `:`).
pub fn seg(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

static TXN: AtomicU64 = AtomicU64::new(1);

/// A person on the homeserver.
pub struct User {
    port: u16,
    pub id: String,
    pub token: String,
    since: std::sync::Mutex<Option<String>>,
}

/// A message as a user sees it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub event_id: String,
    pub sender: String,
    pub body: String,
    pub formatted: Option<String>,
    pub content: Value,
}

impl User {
    pub fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        let (status, value) = http(self.port, method, path, Some(&self.token), body);
        assert_eq!(status, 200, "{} {method} {path}: {value}", self.id);
        value
    }

    /// Creates a room inviting `invite`; a DM when `direct`.
    pub fn create_room(&self, name: Option<&str>, invite: &[&str], direct: bool) -> String {
        let mut body = json!({"invite": invite, "is_direct": direct,
                              "preset": if direct { "trusted_private_chat" } else { "private_chat" }});
        if let Some(name) = name {
            body["name"] = json!(name);
        }
        let created = self.call("POST", "/_matrix/client/v3/createRoom", Some(&body));
        created["room_id"].as_str().unwrap().to_owned()
    }

    pub fn join(&self, room: &str) {
        self.call(
            "POST",
            &format!("/_matrix/client/v3/join/{}", seg(room)),
            Some(&json!({})),
        );
    }

    pub fn invite(&self, room: &str, user: &str) {
        self.call(
            "POST",
            &format!("/_matrix/client/v3/rooms/{}/invite", seg(room)),
            Some(&json!({"user_id": user})),
        );
    }

    /// The rooms this user was invited to since the last call (an incremental `/sync`:
    /// Synapse answers a repeated initial sync from its cache).
    pub fn invites(&self) -> Vec<String> {
        let since = self.since.lock().unwrap().clone();
        let mut path = "/_matrix/client/v3/sync?timeout=0&filter=%7B%22room%22%3A%7B%22timeline%22%3A%7B%22limit%22%3A1%7D%7D%7D".to_owned();
        if let Some(since) = since {
            path.push_str(&format!("&since={}", seg(&since)));
        }
        let sync = self.call("GET", &path, None);
        if let Some(next) = sync["next_batch"].as_str() {
            *self.since.lock().unwrap() = Some(next.to_owned());
        }
        sync["rooms"]["invite"]
            .as_object()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Sends a message with this content; returns its event id.
    pub fn send(&self, room: &str, content: &Value) -> String {
        let txn = TXN.fetch_add(1, Ordering::Relaxed);
        let sent = self.call(
            "PUT",
            &format!(
                "/_matrix/client/v3/rooms/{}/send/m.room.message/t{txn}-{}",
                seg(room),
                std::process::id()
            ),
            Some(content),
        );
        sent["event_id"].as_str().unwrap().to_owned()
    }

    /// Writes plain text.
    pub fn say(&self, room: &str, text: &str) -> String {
        self.send(room, &json!({"msgtype": "m.text", "body": text}))
    }

    /// Writes text mentioning `who` the way current clients do (`m.mentions` and a pill).
    pub fn say_to(&self, room: &str, who: &str, name: &str, text: &str) -> String {
        self.send(
            room,
            &json!({
                "msgtype": "m.text",
                "body": format!("{name}: {text}"),
                "format": "org.matrix.custom.html",
                "formatted_body": format!("<a href=\"https://matrix.to/#/{who}\">{name}</a>: {text}"),
                "m.mentions": {"user_ids": [who]},
            }),
        )
    }

    /// Replies to `event_id` with `text`.
    pub fn reply(&self, room: &str, event_id: &str, text: &str) -> String {
        self.send(
            room,
            &json!({
                "msgtype": "m.text",
                "body": text,
                "m.relates_to": {"m.in_reply_to": {"event_id": event_id}},
            }),
        )
    }

    /// Deletes (redacts) an event.
    pub fn redact(&self, room: &str, event_id: &str) {
        let txn = TXN.fetch_add(1, Ordering::Relaxed);
        self.call(
            "PUT",
            &format!(
                "/_matrix/client/v3/rooms/{}/redact/{}/r{txn}-{}",
                seg(room),
                seg(event_id),
                std::process::id()
            ),
            Some(&json!({"reason": "typo"})),
        );
    }

    /// Every event of the room, oldest first (up to 1,000).
    pub fn events(&self, room: &str) -> Vec<Value> {
        let got = self.call(
            "GET",
            &format!(
                "/_matrix/client/v3/rooms/{}/messages?dir=b&limit=1000",
                seg(room)
            ),
            None,
        );
        let mut events = got["chunk"].as_array().cloned().unwrap_or_default();
        events.reverse();
        events
    }

    /// The room's messages from `sender`, oldest first (edits not folded in).
    pub fn messages_from(&self, room: &str, sender: &str) -> Vec<Seen> {
        self.events(room)
            .into_iter()
            .filter(|e| e["type"] == "m.room.message" && e["sender"] == sender)
            .map(|e| Seen {
                event_id: e["event_id"].as_str().unwrap_or_default().to_owned(),
                sender: sender.to_owned(),
                body: e["content"]["body"].as_str().unwrap_or_default().to_owned(),
                formatted: e["content"]["formatted_body"].as_str().map(str::to_owned),
                content: e["content"].clone(),
            })
            .collect()
    }

    /// Waits for an invite and joins it; returns the room.
    pub fn accept_invite(&self, timeout: Duration) -> Option<String> {
        let mut room = None;
        wait_until(timeout, || {
            room = self.invites().into_iter().next();
            room.is_some()
        });
        let room = room?;
        self.join(&room);
        Some(room)
    }
}

/// The `.env` line for the bot's token.
pub fn env_line(bot: &User) -> String {
    format!("MATRIX_ACCESS_TOKEN={}\n", bot.token)
}

/// The `[plugins.matrix]` table for the real plugin against `synapse`.
pub fn plugins_toml(synapse: &Synapse) -> String {
    format!(
        "[plugins.matrix]\nlibrary = {:?}\nrequired = true\n\
         [plugins.matrix.settings]\naccess_token = {{ env = \"MATRIX_ACCESS_TOKEN\" }}\n\
         api_base_url = {:?}\nsync_timeout_secs = 5\n",
        built().join("libnanoclaw_plugin_channels.so"),
        synapse.base_url(),
    )
}
