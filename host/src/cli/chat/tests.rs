use std::path::Path;

use clap::Parser;
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::UnixListener;

use serde_json::json;

use super::*;

const QUIET: Duration = Duration::from_millis(200);

fn args(socket: Option<&Path>, message: Option<&str>, timeout: Duration) -> ChatArgs {
    ChatArgs {
        socket: socket.map(Path::to_path_buf),
        message: message.map(str::to_owned),
        timeout,
    }
}

/// Runs the client against `socket`; returns (exit status, stdout, stderr).
async fn client(args: ChatArgs, data_dir: &Path) -> (u8, String, String) {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let status = session(args, data_dir, QUIET, &mut out, &mut err)
        .await
        .expect("session");
    (
        status,
        String::from_utf8(out).expect("utf-8"),
        String::from_utf8(err).expect("utf-8"),
    )
}

/// A one-connection server speaking the plugin's protocol: checks the client's first line,
/// then sends `replies` (each after `gap`) and keeps the connection open for `hold`.
fn serve(
    listener: UnixListener,
    expect: &'static str,
    replies: Vec<Value>,
    gap: Duration,
    hold: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.expect("accept");
        let (reader, mut writer) = stream.into_split();
        let mut lines = BufReader::new(reader).lines();
        let first = lines.next_line().await.expect("read").expect("a line");
        let first: Value = serde_json::from_str(&first).expect("client sends JSON");
        assert_eq!(first, json!({"type": "message", "text": expect}));
        for reply in replies {
            tokio::time::sleep(gap).await;
            let mut line = reply.to_string();
            line.push('\n');
            writer.write_all(line.as_bytes()).await.expect("write");
        }
        tokio::time::sleep(hold).await;
    })
}

fn bind(dir: &Path) -> (PathBuf, UnixListener) {
    let path = dir.join("chat.sock");
    let listener = UnixListener::bind(&path).expect("bind");
    (path, listener)
}

#[tokio::test]
async fn one_shot_prints_the_reply_and_exits_0() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (path, listener) = bind(dir.path());
    let server = serve(
        listener,
        "what time is it?",
        vec![
            json!({"type": "message", "id": "o-1", "text": "an older reply", "backlog": true}),
            json!({"type": "typing"}),
            json!({"type": "message", "id": "o-2", "text": "It is noon."}),
            json!({"type": "message", "id": "o-3", "text": "Anything else?"}),
            json!({"type": "future-thing", "x": 1}),
        ],
        Duration::from_millis(20),
        Duration::from_secs(10),
    );
    let started = Instant::now();
    let (status, out, err) = client(
        args(
            Some(&path),
            Some("what time is it?"),
            Duration::from_secs(5),
        ),
        dir.path(),
    )
    .await;
    assert_eq!(status, 0, "stderr: {err}");
    assert_eq!(out, "an older reply\nIt is noon.\nAnything else?\n");
    assert_eq!(err, "");
    // It left after the quiet period, not when the server hung up.
    assert!(started.elapsed() < Duration::from_secs(5));
    server.abort();
}

#[tokio::test]
async fn one_shot_without_a_reply_exits_3_after_the_timeout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (path, listener) = bind(dir.path());
    // Typing and an earlier reply are not an answer.
    let server = serve(
        listener,
        "hello?",
        vec![
            json!({"type": "typing"}),
            json!({"type": "message", "id": "o-1", "text": "old", "backlog": true}),
        ],
        Duration::ZERO,
        Duration::from_secs(10),
    );
    let started = Instant::now();
    let (status, out, err) = client(
        args(Some(&path), Some("hello?"), Duration::from_millis(300)),
        dir.path(),
    )
    .await;
    assert_eq!(status, EXIT_NO_REPLY);
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(out, "old\n");
    assert!(err.contains("no reply within 0.3 s"), "{err}");
    server.abort();
}

#[tokio::test]
async fn a_missing_socket_exits_2_with_the_hint() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (status, out, err) =
        client(args(None, Some("hi"), Duration::from_secs(1)), dir.path()).await;
    assert_eq!(status, EXIT_UNAVAILABLE);
    assert_eq!(out, "");
    let expected_path = dir.path().join("plugins/cli/chat.sock");
    assert!(err.contains(&expected_path.display().to_string()), "{err}");
    assert!(err.contains("no chat socket"), "{err}");
    assert!(err.contains("nanoclaw run"), "{err}");
    assert!(err.contains("plugins.toml"), "{err}");
}

#[tokio::test]
async fn a_refused_socket_exits_2_with_the_hint() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("chat.sock");
    drop(std::os::unix::net::UnixListener::bind(&path).expect("bind"));
    let (status, _, err) = client(
        args(Some(&path), Some("hi"), Duration::from_secs(1)),
        dir.path(),
    )
    .await;
    assert_eq!(status, EXIT_UNAVAILABLE);
    assert!(err.contains("nothing is listening"), "{err}");
    assert!(err.contains("nanoclaw run"), "{err}");
}

#[tokio::test]
async fn the_default_socket_is_in_the_cli_plugin_data_dir() {
    let dir = tempfile::tempdir().expect("tempdir");
    let plugin_dir = dir.path().join("plugins").join("cli");
    std::fs::create_dir_all(&plugin_dir).expect("mkdir");
    let (_, listener) = bind(&plugin_dir);
    let server = serve(
        listener,
        "ping",
        vec![json!({"type": "message", "id": "o-1", "text": "pong"})],
        Duration::ZERO,
        Duration::from_secs(10),
    );
    let (status, out, _) =
        client(args(None, Some("ping"), Duration::from_secs(5)), dir.path()).await;
    assert_eq!((status, out.as_str()), (0, "pong\n"));
    server.abort();
}

#[tokio::test]
async fn a_refused_message_exits_1_with_the_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (path, listener) = bind(dir.path());
    let server = serve(
        listener,
        "hi",
        vec![
            json!({"type": "error", "text": "message not accepted (db locked); please send it again"}),
        ],
        Duration::ZERO,
        Duration::from_secs(10),
    );
    let (status, _, err) = client(
        args(Some(&path), Some("hi"), Duration::from_secs(5)),
        dir.path(),
    )
    .await;
    assert_eq!(status, EXIT_FAILED);
    assert!(err.contains("db locked"), "{err}");
    server.abort();
}

#[tokio::test]
async fn a_hang_up_before_any_reply_exits_1() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (path, listener) = bind(dir.path());
    let server = serve(
        listener,
        "hi",
        vec![json!({"type": "notice", "text": "superseded"})],
        Duration::ZERO,
        Duration::ZERO,
    );
    let (status, _, err) = client(
        args(Some(&path), Some("hi"), Duration::from_secs(5)),
        dir.path(),
    )
    .await;
    assert_eq!(status, EXIT_FAILED);
    assert!(err.contains("superseded"), "{err}");
    assert!(
        err.contains("closed the connection before replying"),
        "{err}"
    );
    server.await.expect("server");
}

#[tokio::test]
async fn an_empty_message_is_not_sent() {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let (stream, _peer) = UnixStream::pair().expect("pair");
    let status = one_shot(
        stream,
        "  ",
        Duration::from_secs(1),
        QUIET,
        false,
        &mut out,
        &mut err,
    )
    .await
    .expect("one shot");
    assert_eq!(status, EXIT_FAILED);
}

#[tokio::test]
async fn plain_sessions_send_lines_and_print_replies() {
    let (ours, theirs) = UnixStream::pair().expect("pair");
    let (input, mut typed) = tokio::io::duplex(1024);
    let server = tokio::spawn(async move {
        let (reader, mut writer) = theirs.into_split();
        let mut lines = BufReader::new(reader).lines();
        let first = lines.next_line().await.expect("read").expect("line");
        assert_eq!(first, r#"{"type":"message","text":"hello"}"#);
        for line in [
            r#"{"type":"typing"}"#,
            r#"{"type":"message","id":"o-1","text":"hi \u001b[31mthere"}"#,
            r#"{"type":"error","text":"bad line"}"#,
            r#"{"type":"notice","text":"nanoclaw is shutting down"}"#,
        ] {
            writer
                .write_all(format!("{line}\n").as_bytes())
                .await
                .expect("write");
        }
        // Then the plugin closes the connection.
    });
    typed.write_all(b"\n   \nhello\n").await.expect("type");
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let status = plain_session(BufReader::new(input), ours, true, &mut out, &mut err)
        .await
        .expect("session");
    server.await.expect("server");
    assert_eq!(status, 0);
    // The escape sequence was dropped (the terminal is not the agent's to drive).
    assert_eq!(String::from_utf8(out).expect("utf-8"), "hi [31mthere\n");
    let err = String::from_utf8(err).expect("utf-8");
    assert_eq!(err, "error: bad line\nnanoclaw is shutting down\n");
}

#[tokio::test]
async fn plain_sessions_end_at_quit_or_end_of_input() {
    for input in [&b"/quit\nnever sent\n"[..], b""] {
        let (ours, theirs) = UnixStream::pair().expect("pair");
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let status = plain_session(BufReader::new(input), ours, false, &mut out, &mut err)
            .await
            .expect("session");
        assert_eq!(status, 0);
        let mut rest = String::new();
        let mut theirs = BufReader::new(theirs);
        tokio::io::AsyncReadExt::read_to_string(&mut theirs, &mut rest)
            .await
            .expect("read");
        assert_eq!(rest, "", "nothing was sent");
    }
}

#[tokio::test]
async fn plain_sessions_report_a_lost_connection() {
    let (ours, theirs) = UnixStream::pair().expect("pair");
    drop(theirs);
    let (_typed, input) = tokio::io::duplex(64);
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let status = plain_session(BufReader::new(input), ours, false, &mut out, &mut err)
        .await
        .expect("session");
    assert_eq!(status, EXIT_FAILED);
    assert!(String::from_utf8_lossy(&err).contains("lost"));
}

#[test]
fn server_lines_are_read_leniently() {
    assert_eq!(
        parse_incoming(r#"{"type":"message","id":"1","text":"hi","backlog":true}"#),
        Incoming::Message {
            text: "hi".into(),
            backlog: true
        }
    );
    assert_eq!(
        parse_incoming(r#"{"type":"message","id":"1","text":"hi"}"#),
        Incoming::Message {
            text: "hi".into(),
            backlog: false
        }
    );
    assert_eq!(parse_incoming(r#"{"type":"typing"}"#), Incoming::Typing);
    assert_eq!(
        parse_incoming(r#"{"type":"error","text":"x"}"#),
        Incoming::Error("x".into())
    );
    assert_eq!(
        parse_incoming(r#"{"type":"notice","text":"y"}"#),
        Incoming::Notice("y".into())
    );
    assert_eq!(parse_incoming(r#"{"type":"later"}"#), Incoming::Other);
    assert_eq!(parse_incoming("not json"), Incoming::Other);
    assert_eq!(parse_incoming("[]"), Incoming::Other);
}

#[test]
fn control_characters_are_stripped_for_display() {
    assert_eq!(sanitize("a\u{1b}[2Jb\r\nc\td\u{7}"), "a[2Jb\nc\td");
}

fn key(code: KeyCode) -> Event {
    Event::Key(KeyEvent::new(code, KeyModifiers::NONE))
}

fn ctrl(c: char) -> Event {
    Event::Key(KeyEvent::new(KeyCode::Char(c), KeyModifiers::CONTROL))
}

fn typed(editor: &mut Editor, text: &str) {
    for c in text.chars() {
        assert_eq!(editor.handle(&key(KeyCode::Char(c))), Action::Redraw);
    }
}

#[test]
fn the_editor_edits_one_line() {
    let mut e = Editor::default();
    typed(&mut e, "helo world");
    for _ in 0..7 {
        e.handle(&key(KeyCode::Left));
    }
    typed(&mut e, "l");
    assert_eq!(e.handle(&ctrl('e')), Action::Redraw);
    assert_eq!(e.handle(&ctrl('w')), Action::Redraw);
    typed(&mut e, "there");
    e.handle(&key(KeyCode::Backspace));
    e.handle(&key(KeyCode::Home));
    e.handle(&key(KeyCode::Delete));
    typed(&mut e, "H");
    assert_eq!(e.handle(&Event::Paste("!\n:)".into())), Action::Redraw);
    e.handle(&key(KeyCode::End));
    assert_eq!(
        e.handle(&key(KeyCode::Enter)),
        Action::Submit("H! :)ello ther".into())
    );
    assert_eq!(
        e.handle(&key(KeyCode::Enter)),
        Action::Submit(String::new())
    );

    typed(&mut e, "abc def");
    e.handle(&key(KeyCode::Left));
    assert_eq!(e.handle(&ctrl('k')), Action::Redraw);
    e.handle(&ctrl('b'));
    assert_eq!(e.handle(&ctrl('u')), Action::Redraw);
    assert_eq!(e.handle(&key(KeyCode::Enter)), Action::Submit("e".into()));
    // A release event (kitty protocol) is not a key press.
    let mut release = KeyEvent::new(KeyCode::Char('x'), KeyModifiers::NONE);
    release.kind = KeyEventKind::Release;
    assert_eq!(e.handle(&Event::Key(release)), Action::Nothing);
}

#[test]
fn ctrl_c_and_ctrl_d_quit_only_on_an_empty_line() {
    let mut e = Editor::default();
    typed(&mut e, "draft");
    assert_eq!(e.handle(&ctrl('c')), Action::Redraw);
    assert_eq!(e.handle(&ctrl('c')), Action::Quit);
    typed(&mut e, "xy");
    e.handle(&key(KeyCode::Home));
    assert_eq!(e.handle(&ctrl('d')), Action::Redraw);
    assert_eq!(e.handle(&key(KeyCode::Enter)), Action::Submit("y".into()));
    assert_eq!(e.handle(&ctrl('d')), Action::Quit);
}

#[test]
fn the_view_scrolls_to_keep_the_cursor_visible() {
    let mut e = Editor::default();
    typed(&mut e, "abcdefghij");
    assert_eq!(e.view(20), ("abcdefghij".into(), 10));
    assert_eq!(e.view(4), ("ghij".into(), 4));
    e.handle(&key(KeyCode::Home));
    assert_eq!(e.view(4), ("abcd".into(), 0));
    // Wide characters take two columns.
    let mut wide = Editor::default();
    typed(&mut wide, "日本語");
    assert_eq!(wide.view(10), ("日本語".into(), 6));
    assert_eq!(wide.view(4), ("本語".into(), 4));
}

#[derive(Debug, Parser)]
struct Cli {
    #[command(flatten)]
    chat: ChatArgs,
}

#[test]
fn arguments_parse() {
    let cli = Cli::try_parse_from(["chat"]).expect("no args");
    assert_eq!(cli.chat.timeout, Duration::from_secs(120));
    assert!(cli.chat.message.is_none() && cli.chat.socket.is_none());
    let cli = Cli::try_parse_from(["chat", "-m", "hi", "--timeout", "0.5", "--socket", "/s"])
        .expect("args");
    assert_eq!(cli.chat.message.as_deref(), Some("hi"));
    assert_eq!(cli.chat.timeout, Duration::from_millis(500));
    assert_eq!(cli.chat.socket.as_deref(), Some(Path::new("/s")));
    for bad in ["0", "-1", "soon", "NaN"] {
        assert!(
            Cli::try_parse_from(["chat", "--timeout", bad]).is_err(),
            "{bad}"
        );
    }
}
