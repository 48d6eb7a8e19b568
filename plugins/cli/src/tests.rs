//! In-process tests: the channel on a real Unix socket in a temp dir, the host a
//! `MemoryHost`, clients plain blocking sockets.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nanoclaw_plugin_api::kit::testing::MemoryHost;
use serde_json::{Value, json};

use super::*;
use crate::identity::Identity;
use crate::protocol::MAX_LINE_BYTES;

const WAIT: Duration = Duration::from_secs(5);

fn context(mem: &MemoryHost, data_dir: &Path, settings: Value) -> Context {
    Context {
        instance_name: "cli".into(),
        settings_json: settings.to_string(),
        data_dir: data_dir.to_path_buf(),
        extra_json: String::new(),
        host: mem.host(),
    }
}

struct Fixture {
    mem: MemoryHost,
    dir: tempfile::TempDir,
    channel: CliChannel,
}

impl Fixture {
    fn new() -> Self {
        Self::with(Limits::default(), json!({}))
    }

    fn with(limits: Limits, settings: Value) -> Self {
        let mem = MemoryHost::new();
        let dir = tempfile::tempdir().expect("tempdir");
        let data_dir = dir.path().join("plugins").join("cli");
        std::fs::create_dir_all(&data_dir).expect("data dir");
        let channel = CliChannel::create_with(context(&mem, &data_dir, settings), |ctx, life| {
            Cli::with_limits(ctx, life, limits)
        })
        .expect("create");
        Self { mem, dir, channel }
    }

    fn started() -> Self {
        let fixture = Self::new();
        fixture.channel.start().expect("start");
        fixture
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("plugins").join("cli")
    }

    fn socket(&self) -> &Path {
        self.channel.socket_path()
    }

    fn connect(&self) -> Client {
        Client::connect(self.socket())
    }

    /// Connects and waits until the chat is live (the backlog, if any, is then flushed).
    fn connect_live(&self) -> Client {
        let client = self.connect();
        self.wait_live();
        client
    }

    fn wait_live(&self) {
        let user = me().user;
        eventually("chat goes live", || self.channel.shared.is_live(&user));
    }

    fn deliver(&self, text: &str) -> String {
        self.deliver_to(&me().user, text)
    }

    fn deliver_to(&self, chat: &str, text: &str) -> String {
        self.channel
            .deliver(OutboundMessage {
                chat_id: chat.into(),
                text: text.into(),
                ..OutboundMessage::default()
            })
            .expect("deliver")
            .expect("an id")
    }

    fn backlog(&self) -> Vec<String> {
        self.mem
            .host()
            .list_get(&format!("backlog:{}", me().user))
            .expect("list_get")
    }
}

/// Who the tests' connections are, as the plugin sees them.
fn me() -> Identity {
    Identity::of_uid(nix::unistd::geteuid().as_raw())
}

fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let start = Instant::now();
    while !condition() {
        assert!(start.elapsed() < WAIT, "timed out waiting: {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

struct Client {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Client {
    fn connect(path: &Path) -> Self {
        let stream = UnixStream::connect(path).expect("connect");
        stream.set_read_timeout(Some(WAIT)).expect("timeout");
        let writer = stream.try_clone().expect("clone");
        Self {
            reader: BufReader::new(stream),
            writer,
        }
    }

    fn send_raw(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).expect("send");
    }

    fn say(&mut self, text: &str) {
        let mut line = json!({"type": "message", "text": text}).to_string();
        line.push('\n');
        self.send_raw(line.as_bytes());
    }

    /// The next line as JSON; panics after the read timeout or at end of stream.
    fn next(&mut self) -> Value {
        let mut line = String::new();
        let n = self.reader.read_line(&mut line).expect("read a line");
        assert!(n > 0, "connection closed");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("bad line {line:?}: {e}"))
    }

    /// Asserts that nothing arrives for `quiet`.
    fn expect_silence(&mut self, quiet: Duration) {
        self.reader
            .get_ref()
            .set_read_timeout(Some(quiet))
            .expect("timeout");
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            other => panic!("expected silence, got {other:?}: {line:?}"),
        }
        self.reader
            .get_ref()
            .set_read_timeout(Some(WAIT))
            .expect("timeout");
    }

    /// Reads to end of stream (the plugin closed the connection).
    fn expect_closed(&mut self) {
        let mut rest = String::new();
        self.reader.read_to_string(&mut rest).expect("read to end");
        assert_eq!(rest, "", "unexpected data before close");
    }
}

fn message(id: &str, text: &str) -> Value {
    json!({"type": "message", "id": id, "text": text})
}

fn backlog_message(id: &str, text: &str) -> Value {
    json!({"type": "message", "id": id, "text": text, "backlog": true})
}

#[test]
fn manifest_declares_text_and_typing_only() {
    let info = CliChannel::INFO;
    assert_eq!(info.channel_type, "cli");
    assert_eq!(info.capabilities, Capabilities::TYPING);
    assert_eq!(info.max_text_length, 0);
}

#[test]
fn a_line_becomes_an_inbound_event_from_the_unix_user() {
    let f = Fixture::started();
    let mut client = f.connect();
    client.say("hello agent");
    client.say("second");
    eventually("two inbound events", || f.mem.inbound().len() == 2);
    let me = me();
    let events = f.mem.inbound();
    let first = &events[0];
    assert_eq!(first.chat_id.as_str(), me.user);
    assert_eq!(first.text.as_str(), "hello agent");
    assert_eq!(
        first.chat_name.as_ref().map(RString::as_str).into_option(),
        Some(me.display_name.as_str())
    );
    let sender = first.sender.as_ref().into_option().expect("sender");
    assert_eq!(sender.handle.as_str(), me.user);
    assert_eq!(
        sender
            .display_name
            .as_ref()
            .map(RString::as_str)
            .into_option(),
        Some(me.display_name.as_str())
    );
    assert!(!sender.is_bot);
    assert!(first.mentioned);
    assert!(!first.is_group);
    assert!(first.thread_id.is_none());
    assert!(!first.message_id.is_empty());
    assert_ne!(first.message_id, events[1].message_id);
    assert_eq!(events[1].text.as_str(), "second");

    let health = f.channel.health();
    assert_eq!(health.status, HealthStatus::OK);
    assert!(health.last_ingest_ms > 0);
    assert!(health.detail.contains("1 client(s)"), "{}", health.detail);
}

#[test]
fn deliver_reaches_the_connected_client() {
    let f = Fixture::started();
    let mut client = f.connect_live();
    let first = f.deliver("hi there");
    let second = f.deliver("line one\nline two");
    assert_ne!(first, second);
    assert_eq!(client.next(), message(&first, "hi there"));
    assert_eq!(client.next(), message(&second, "line one\nline two"));
    assert!(f.backlog().is_empty());
}

#[test]
fn prepare_passes_the_text_through_whole() {
    let f = Fixture::new();
    let text = format!(
        "  **Markdown** stays as written\n\n{}",
        "long line ".repeat(2000)
    );
    let message = OutboundMessage {
        chat_id: me().user.as_str().into(),
        text: text.as_str().into(),
        ..OutboundMessage::default()
    };
    let parts = nanoclaw_plugin_api::kit::testing::prepare(&f.channel, message).expect("prepare");
    assert_eq!(parts.len(), 1, "no splitting");
    assert_eq!(parts[0].text.as_str(), text, "no rendering");
}

#[test]
fn deliver_without_a_client_is_kept_and_flushed_in_order_on_connect() {
    let f = Fixture::started();
    let ids: Vec<String> = (1..=3).map(|i| f.deliver(&format!("reply {i}"))).collect();
    assert_eq!(f.backlog().len(), 3);

    let mut client = f.connect();
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(
            client.next(),
            backlog_message(id, &format!("reply {}", i + 1))
        );
    }
    f.wait_live();
    assert!(f.backlog().is_empty(), "flushed entries are removed");
    let live = f.deliver("fresh");
    assert_eq!(client.next(), message(&live, "fresh"));
}

#[test]
fn the_backlog_survives_sessions_and_is_capped() {
    let limits = Limits {
        backlog_max: 5,
        ..Limits::default()
    };
    let f = Fixture::with(limits, json!({}));
    f.channel.start().expect("start");
    // A first session comes and goes.
    drop(f.connect_live());
    eventually("client detached", || f.channel.shared.connected() == 0);

    let ids: Vec<String> = (1..=8).map(|i| f.deliver(&format!("m{i}"))).collect();
    assert_eq!(f.backlog().len(), 5);
    let mut client = f.connect();
    for (i, id) in ids.iter().enumerate().skip(3) {
        assert_eq!(client.next(), backlog_message(id, &format!("m{}", i + 1)));
    }
    client.expect_silence(Duration::from_millis(200));
}

#[test]
fn replies_to_a_departed_client_wait_for_the_next_one() {
    let f = Fixture::started();
    let client = f.connect_live();
    drop(client);
    // The plugin learns the client is gone when a write fails; nothing is lost either way.
    let ids: Vec<String> = (1..=3).map(|i| f.deliver(&format!("r{i}"))).collect();
    let mut next = f.connect();
    for (i, id) in ids.iter().enumerate() {
        let line = next.next();
        assert_eq!(line["id"], json!(id));
        assert_eq!(line["text"], json!(format!("r{}", i + 1)));
    }
    next.expect_silence(Duration::from_millis(200));
}

#[test]
fn a_newer_client_supersedes_the_older_one() {
    let f = Fixture::started();
    let mut old = f.connect_live();
    let mut new = f.connect();
    let notice = old.next();
    assert_eq!(notice["type"], "notice");
    assert!(
        notice["text"]
            .as_str()
            .is_some_and(|t| t.contains("superseded")),
        "{notice}"
    );
    old.expect_closed();

    f.wait_live();
    let id = f.deliver("to the new one");
    assert_eq!(new.next(), message(&id, "to the new one"));
    new.say("from the new one");
    eventually("inbound", || f.mem.inbound().len() == 1);
    assert_eq!(f.channel.shared.connected(), 1);
}

#[test]
fn bad_lines_get_an_error_and_the_connection_stays_usable() {
    let f = Fixture::started();
    let mut client = f.connect();
    client.send_raw(b"{not json\n");
    let error = client.next();
    assert_eq!(error["type"], "error");
    assert!(
        error["text"]
            .as_str()
            .is_some_and(|t| t.contains("bad JSON")),
        "{error}"
    );

    client.send_raw(b"{\"type\":\"shout\",\"text\":\"x\"}\n");
    let error = client.next();
    assert_eq!(error["type"], "error");
    assert!(
        error["text"]
            .as_str()
            .is_some_and(|t| t.contains("unknown type")),
        "{error}"
    );

    client.send_raw(b"{\"type\":\"message\",\"text\":\"   \"}\n");
    assert_eq!(client.next()["type"], "error");

    client.send_raw(b"\n\r\n");
    client.say("still here");
    eventually("inbound", || f.mem.inbound().len() == 1);
    assert_eq!(f.mem.inbound()[0].text.as_str(), "still here");
    client.expect_silence(Duration::from_millis(100));
}

#[test]
fn an_oversized_line_is_refused_and_the_next_one_works() {
    let f = Fixture::started();
    let mut client = f.connect();
    // A line of exactly the limit is accepted...
    let envelope = json!({"type": "message", "text": ""}).to_string().len();
    let text = "a".repeat(MAX_LINE_BYTES - envelope);
    let line = json!({"type": "message", "text": text}).to_string();
    assert_eq!(line.len(), MAX_LINE_BYTES);
    client.send_raw(format!("{line}\n").as_bytes());
    eventually("inbound", || f.mem.inbound().len() == 1);
    // ...one byte more is not.
    let text = "b".repeat(MAX_LINE_BYTES - envelope + 1);
    client.say(&text);
    let error = client.next();
    assert_eq!(error["type"], "error");
    assert!(
        error["text"]
            .as_str()
            .is_some_and(|t| t.contains("too long")),
        "{error}"
    );
    client.say("short");
    eventually("second inbound", || f.mem.inbound().len() == 2);
    assert_eq!(f.mem.inbound()[1].text.as_str(), "short");
}

#[test]
fn a_refused_inbound_message_is_reported_so_the_user_can_retry() {
    let f = Fixture::started();
    let mut client = f.connect();
    f.mem
        .set_reject_inbound(Some(PluginError::other("database is locked")));
    client.say("lost?");
    let error = client.next();
    assert_eq!(error["type"], "error");
    let text = error["text"].as_str().unwrap_or_default();
    assert!(
        text.contains("not accepted") && text.contains("database is locked"),
        "{text}"
    );
    assert_eq!(f.channel.health().last_ingest_ms, 0);

    f.mem.set_reject_inbound(None);
    client.say("lost?");
    eventually("accepted on retry", || f.mem.inbound().len() == 1);
}

#[test]
fn typing_goes_to_the_connected_client_only() {
    let f = Fixture::started();
    // No client: nothing happens, nothing is stored.
    f.channel.set_typing(&me().user, None);
    assert!(f.backlog().is_empty());

    let mut client = f.connect_live();
    f.channel.set_typing(&me().user, None);
    assert_eq!(client.next(), json!({"type": "typing"}));
    f.channel.set_typing("someone-else", None);
    client.expect_silence(Duration::from_millis(100));
}

#[test]
fn only_plain_sends_are_supported() {
    let f = Fixture::started();
    let err = |m: OutboundMessage| f.channel.deliver(m).expect_err("refused").kind;
    let base = || OutboundMessage {
        chat_id: me().user.into(),
        text: "x".into(),
        ..OutboundMessage::default()
    };
    assert_eq!(
        err(OutboundMessage {
            op: OutboundOp::EDIT,
            target_message_id: RSome("out-1".into()),
            ..base()
        }),
        ErrorKind::UNSUPPORTED
    );
    assert_eq!(
        err(OutboundMessage {
            op: OutboundOp::REACT,
            reaction: "heart".into(),
            ..base()
        }),
        ErrorKind::UNSUPPORTED
    );
    assert_eq!(
        err(OutboundMessage {
            files: vec![OutboundFile::default()].into(),
            ..base()
        }),
        ErrorKind::UNSUPPORTED
    );
    assert_eq!(
        err(OutboundMessage {
            buttons: vec![Button::default()].into(),
            ..base()
        }),
        ErrorKind::UNSUPPORTED
    );
    assert!(f.backlog().is_empty());
}

#[test]
fn the_socket_is_owner_only() {
    let f = Fixture::new();
    // The data dir starts out too open; being the plugin's own, it is tightened.
    std::fs::set_permissions(f.data_dir(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    f.channel.start().expect("start");
    let mode = |p: &Path| {
        std::fs::symlink_metadata(p)
            .expect("metadata")
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode(f.socket()), 0o600);
    assert_eq!(mode(&f.data_dir()), 0o700);
    assert_eq!(f.socket(), f.data_dir().join("chat.sock"));
}

#[test]
fn a_custom_socket_path_needs_a_private_directory() {
    let outside = tempfile::tempdir().expect("tempdir");
    // A missing directory is created private.
    let fresh = outside.path().join("run").join("nanoclaw");
    let f = Fixture::with(
        Limits::default(),
        json!({"socket_path": fresh.join("chat.sock")}),
    );
    f.channel.start().expect("start");
    assert_eq!(
        std::fs::metadata(&fresh).expect("dir").permissions().mode() & 0o777,
        0o700
    );
    let mut client = f.connect();
    client.say("via custom path");
    eventually("inbound", || f.mem.inbound().len() == 1);

    // An existing shared directory is the operator's: refused, not chmodded.
    let shared = outside.path().join("shared");
    std::fs::create_dir(&shared).expect("mkdir");
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let g = Fixture::with(
        Limits::default(),
        json!({"socket_path": shared.join("chat.sock")}),
    );
    let err = g.channel.start().expect_err("refused");
    assert_eq!(err.kind, ErrorKind::CONFIG);
    assert!(err.message.contains("0755"), "{err}");
    assert_eq!(
        std::fs::metadata(&shared)
            .expect("dir")
            .permissions()
            .mode()
            & 0o777,
        0o755
    );
}

#[test]
fn a_stale_socket_is_replaced() {
    let f = Fixture::new();
    drop(UnixListener::bind(f.socket()).expect("bind a socket that nobody serves"));
    assert!(f.socket().exists());
    f.channel.start().expect("start over a stale socket");
    let mut client = f.connect();
    client.say("works");
    eventually("inbound", || f.mem.inbound().len() == 1);
}

#[test]
fn a_socket_in_use_is_not_stolen() {
    let f = Fixture::new();
    let _other = UnixListener::bind(f.socket()).expect("another listener");
    let err = f.channel.start().expect_err("in use");
    assert_eq!(err.kind, ErrorKind::NETWORK);
    assert!(err.message.contains("in use"), "{err}");
    assert!(f.socket().exists());
}

#[test]
fn a_regular_file_at_the_socket_path_is_refused() {
    let f = Fixture::new();
    std::fs::write(f.socket(), "precious").expect("write");
    let err = f.channel.start().expect_err("refused");
    assert_eq!(err.kind, ErrorKind::CONFIG);
    assert!(err.message.contains("not a socket"), "{err}");
    assert_eq!(
        std::fs::read_to_string(f.socket()).expect("still there"),
        "precious"
    );
    assert_eq!(f.channel.health().status, HealthStatus::DOWN);
}

#[test]
fn teardown_closes_clients_keeps_their_replies_and_removes_the_socket() {
    let f = Fixture::started();
    let mut client = f.connect_live();
    assert_eq!(f.channel.health().status, HealthStatus::OK);
    f.channel.teardown();
    let notice = client.next();
    assert_eq!(notice["type"], "notice");
    client.expect_closed();
    assert!(!f.socket().exists());
    assert_eq!(f.channel.health().status, HealthStatus::DOWN);
    // A second teardown (and the drop) are harmless.
    f.channel.teardown();
}

#[test]
fn teardown_leaves_a_socket_that_is_no_longer_ours() {
    let f = Fixture::started();
    std::fs::remove_file(f.socket()).expect("remove");
    let _newer = UnixListener::bind(f.socket()).expect("a newer daemon's socket");
    f.channel.teardown();
    assert!(f.socket().exists());
}

#[test]
fn a_client_that_stops_reading_is_dropped_without_stalling_deliver() {
    let limits = Limits {
        queue_soft_cap: 8,
        write_timeout: Duration::from_millis(300),
        ..Limits::default()
    };
    let f = Fixture::with(limits, json!({}));
    f.channel.start().expect("start");
    let stalled = f.connect_live();
    // 64 × 16 KiB is far more than the socket buffers hold.
    let chunk = "z".repeat(16 * 1024);
    let start = Instant::now();
    let ids: Vec<String> = (0..64)
        .map(|i| f.deliver(&format!("{i} {chunk}")))
        .collect();
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "deliver waited for the client: {:?}",
        start.elapsed()
    );
    eventually("stalled client dropped", || {
        f.channel.shared.connected() == 0
    });
    drop(stalled);

    // What the stalled client did not take arrives, in order, at the next session.
    let mut next = f.connect();
    let mut received = Vec::new();
    while received.last() != ids.last() {
        let line = next.next();
        received.push(line["id"].as_str().expect("id").to_owned());
    }
    let skip = ids.len() - received.len();
    assert!(skip < ids.len());
    assert_eq!(received, ids[skip..]);
}

#[test]
fn settings_are_validated() {
    let mem = MemoryHost::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let err = CliChannel::create(context(&mem, dir.path(), json!({"socket": "x"})))
        .err()
        .expect("unknown key");
    assert_eq!(err.kind, ErrorKind::CONFIG);
    assert!(err.message.contains("unknown field"), "{err}");

    let long = format!("/{}/chat.sock", "d".repeat(120));
    let err = CliChannel::create(context(&mem, dir.path(), json!({"socket_path": long})))
        .err()
        .expect("too long");
    assert_eq!(err.kind, ErrorKind::CONFIG);

    let relative = CliChannel::create(context(
        &mem,
        dir.path(),
        json!({"socket_path": "s/c.sock"}),
    ))
    .expect("relative path");
    assert_eq!(relative.socket_path(), dir.path().join("s/c.sock"));
    // create() alone (as in `nanoclaw plugins check`) touches nothing.
    assert!(!dir.path().join("s").exists());
    assert_eq!(relative.health().status, HealthStatus::DOWN);
}
