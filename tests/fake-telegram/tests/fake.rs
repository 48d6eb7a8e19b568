//! The fake behaves like the Bot API where the plugin's tests rely on it.

use std::process::Command;
use std::time::{Duration, Instant};

use nanoclaw_fake_telegram::{Commit, Failure, FakeTelegram, HoldState, Person, UserMessage};
use serde_json::{Value, json};

const TOKEN: &str = "4242:ABCdefGHIjklMNOpqrSTUvwxYZ0123456789";

/// A tiny blocking client over the fake's HTTP API.
struct Client {
    runtime: tokio::runtime::Runtime,
    http: reqwest::Client,
    base: String,
}

impl Client {
    fn new(fake: &FakeTelegram) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        Self {
            runtime: tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime"),
            http: reqwest::Client::new(),
            base: fake.base_url(),
        }
    }

    /// `(status, body)` of a Bot API call with a JSON body.
    fn call(&self, token: &str, method: &str, params: Value) -> (u16, Value) {
        let url = format!("{}/bot{token}/{method}", self.base);
        self.runtime.block_on(async {
            let response = self
                .http
                .post(url)
                .json(&params)
                .send()
                .await
                .expect("request");
            let status = response.status().as_u16();
            (status, response.json().await.expect("JSON body"))
        })
    }

    fn ok(&self, method: &str, params: Value) -> Value {
        let (status, body) = self.call(TOKEN, method, params);
        assert_eq!(status, 200, "{method}: {body}");
        assert_eq!(body["ok"], json!(true));
        body["result"].clone()
    }

    fn error(&self, method: &str, params: Value) -> (u16, String) {
        let (status, body) = self.call(TOKEN, method, params);
        assert_eq!(body["ok"], json!(false), "{method}: {body}");
        assert_eq!(body["error_code"], json!(status));
        (
            status,
            body["description"].as_str().unwrap_or_default().to_owned(),
        )
    }
}

fn start() -> (FakeTelegram, Client) {
    let fake = FakeTelegram::start(TOKEN).expect("fake");
    let client = Client::new(&fake);
    (fake, client)
}

fn ann() -> Person {
    Person::new(42, "Ann").last_name("Lee")
}

#[test]
fn tokens_methods_and_get_me() {
    let (fake, client) = start();
    let (status, body) = client.call("4242:wrong", "getMe", json!({}));
    assert_eq!(
        (status, body["description"].as_str()),
        (401, Some("Unauthorized"))
    );
    assert_eq!(client.error("noSuchMethod", json!({})).0, 404);
    let me = client.ok("getMe", json!({}));
    assert_eq!(me["id"], json!(4242));
    assert_eq!(me["username"], json!(fake.bot_username()));
    assert_eq!(me["is_bot"], json!(true));
}

#[test]
fn get_updates_long_polls_and_offset_confirms() {
    let (fake, client) = start();
    // Nothing pending: waits the whole timeout.
    let started = Instant::now();
    assert_eq!(client.ok("getUpdates", json!({"timeout": 1})), json!([]));
    assert!(started.elapsed() >= Duration::from_millis(950));

    // A message arriving during the wait ends it at once.
    let injector = std::thread::scope(|scope| {
        let handle = scope.spawn(|| {
            std::thread::sleep(Duration::from_millis(200));
            fake.send_user_message(UserMessage::private(ann(), "one"))
                .expect("inject")
        });
        let started = Instant::now();
        let updates = client.ok("getUpdates", json!({"timeout": 10}));
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "woken by the message"
        );
        assert_eq!(updates[0]["message"]["text"], json!("one"));
        assert_eq!(updates[0]["message"]["chat"]["type"], json!("private"));
        handle.join().expect("injector")
    });
    let second = fake
        .send_user_message(UserMessage::private(ann(), "two"))
        .expect("inject");
    assert_eq!(second.update_id, injector.update_id + 1);
    assert_eq!(second.message_id, injector.message_id + 1);

    // Unconfirmed updates come again; an offset drops the earlier ones.
    assert_eq!(
        client.ok("getUpdates", json!({})).as_array().map(Vec::len),
        Some(2)
    );
    let rest = client.ok("getUpdates", json!({"offset": injector.update_id + 1}));
    assert_eq!(rest[0]["update_id"], json!(second.update_id));
    assert_eq!(fake.pending_updates(), 1);
    client.ok("getUpdates", json!({"offset": second.update_id + 1}));
    assert_eq!(fake.pending_updates(), 0);

    // allowed_updates filters what is delivered.
    let msg = fake
        .send_user_message(UserMessage::private(ann(), "three"))
        .expect("inject");
    fake.click(42, msg.message_id, &ann(), "data")
        .expect("click");
    let only = client.ok(
        "getUpdates",
        json!({"allowed_updates": ["callback_query"], "offset": second.update_id + 1}),
    );
    assert_eq!(only.as_array().map(Vec::len), Some(1));
    assert_eq!(only[0]["callback_query"]["data"], json!("data"));
    assert_eq!(only[0]["callback_query"]["message"]["text"], json!("three"));
}

#[test]
fn a_second_poller_or_a_webhook_conflicts() {
    let (fake, client) = start();
    std::thread::scope(|scope| {
        let older = scope.spawn(|| client.call(TOKEN, "getUpdates", json!({"timeout": 5})));
        std::thread::sleep(Duration::from_millis(300));
        let newer = scope.spawn(|| client.call(TOKEN, "getUpdates", json!({"timeout": 1})));
        let (status, body) = older.join().expect("older");
        assert_eq!(status, 409, "{body}");
        assert!(
            body["description"]
                .as_str()
                .is_some_and(|d| d.contains("terminated by other getUpdates request"))
        );
        assert_eq!(newer.join().expect("newer").0, 200);
    });
    fake.set_webhook(Some("https://example.invalid/hook"));
    let (status, description) = client.error("getUpdates", json!({}));
    assert_eq!(status, 409);
    assert!(description.contains("webhook is active"), "{description}");
    client.ok("deleteWebhook", json!({"drop_pending_updates": false}));
    client.ok("getUpdates", json!({}));
}

#[test]
fn sending_is_checked_like_telegram() {
    let (fake, client) = start();
    let (status, description) = client.error("sendMessage", json!({"chat_id": 42, "text": "x"}));
    assert_eq!(
        (status, description.as_str()),
        (400, "Bad Request: chat not found")
    );
    let hello = fake
        .send_user_message(UserMessage::private(ann(), "hi"))
        .expect("inject");

    let sent = client.ok(
        "sendMessage",
        json!({"chat_id": 42, "text": "<b>bold</b> &amp; co", "parse_mode": "HTML",
               "reply_parameters": {"message_id": hello.message_id}}),
    );
    assert_eq!(sent["message_id"], json!(hello.message_id + 1));
    assert_eq!(sent["text"], json!("bold & co"));
    assert_eq!(sent["reply_to_message"]["text"], json!("hi"));

    let (_, description) = client.error(
        "sendMessage",
        json!({"chat_id": 42, "text": "<b>open", "parse_mode": "HTML"}),
    );
    assert!(
        description.starts_with("Bad Request: can't parse entities"),
        "{description}"
    );
    let (_, description) = client.error(
        "sendMessage",
        json!({"chat_id": 42, "text": "x".repeat(4097)}),
    );
    assert_eq!(description, "Bad Request: message is too long");
    let (_, description) = client.error(
        "sendMessage",
        json!({"chat_id": 42, "text": "x", "reply_parameters": {"message_id": 999}}),
    );
    assert_eq!(description, "Bad Request: message to be replied not found");
    let (_, description) = client.error(
        "sendMessage",
        json!({"chat_id": 42, "text": "x", "reply_markup": {"inline_keyboard":
               [[{"text": "a", "callback_data": "d".repeat(65)}]]}}),
    );
    assert_eq!(description, "Bad Request: BUTTON_DATA_INVALID");
    let (_, description) = client.error(
        "setMessageReaction",
        json!({"chat_id": 42, "message_id": hello.message_id,
               "reaction": [{"type": "emoji", "emoji": "✅"}]}),
    );
    assert_eq!(description, "Bad Request: REACTION_INVALID");
    let (_, description) = client.error(
        "editMessageText",
        json!({"chat_id": 42, "message_id": hello.message_id, "text": "hijack"}),
    );
    assert_eq!(description, "Bad Request: message can't be edited");

    let sent = fake.sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].plain_text.as_deref(), Some("bold & co"));
    assert_eq!(sent[0].reply_to_message_id, Some(hello.message_id));
}

#[test]
fn files_are_served_by_get_file() {
    let (fake, client) = start();
    fake.send_user_message(UserMessage::private(ann(), "doc").document(
        "a.txt",
        "text/plain",
        b"content".to_vec(),
    ))
    .expect("inject");
    let updates = client.ok("getUpdates", json!({}));
    let message = &updates[0]["message"];
    assert_eq!(message["caption"], json!("doc"));
    let file_id = message["document"]["file_id"].clone();
    let file = client.ok("getFile", json!({"file_id": file_id}));
    let url = format!(
        "{}/file/bot{TOKEN}/{}",
        fake.base_url(),
        file["file_path"].as_str().expect("path")
    );
    let data = client.runtime.block_on(async {
        client
            .http
            .get(url)
            .send()
            .await
            .expect("download")
            .bytes()
            .await
            .expect("bytes")
    });
    assert_eq!(data.as_ref(), b"content");
    assert_eq!(client.error("getFile", json!({"file_id": "nope"})).0, 400);
}

#[test]
fn injected_failures_hit_the_next_calls() {
    let (fake, client) = start();
    fake.fail_next_method(
        "getMe",
        2,
        Failure::RateLimited {
            retry_after_secs: 7,
        },
    );
    let (status, body) = client.call(TOKEN, "getMe", json!({}));
    assert_eq!(status, 429);
    assert_eq!(body["parameters"]["retry_after"], json!(7));
    assert_eq!(client.call(TOKEN, "getMe", json!({})).0, 429);
    assert_eq!(client.call(TOKEN, "getMe", json!({})).0, 200);

    fake.fail_next(1, Failure::DropConnection);
    let dropped = client.runtime.block_on(async {
        client
            .http
            .post(format!("{}/bot{TOKEN}/getMe", client.base))
            .json(&json!({}))
            .send()
            .await
    });
    assert!(dropped.is_err(), "no answer at all");
    assert_eq!(client.call(TOKEN, "getMe", json!({})).0, 200);
    let recorded: Vec<Value> = fake
        .calls_of("getMe")
        .into_iter()
        .map(|c| c.params)
        .collect();
    assert_eq!(recorded[0], json!({"injected_failure": "rate_limited"}));
    assert_eq!(recorded[3], json!({"injected_failure": "drop_connection"}));
}

/// A held call: committed before the answer (the message exists while the bot waits) or
/// only on release (a discarded one never happened).
#[test]
fn held_calls_commit_before_responding_or_on_release() {
    let (fake, client) = start();
    fake.send_user_message(UserMessage::private(ann(), "hi"))
        .expect("inject");
    let send = |text: &str| client.call(TOKEN, "sendMessage", json!({"chat_id": 42, "text": text}));

    let hold = fake.hold_next(Some("sendMessage"), Commit::BeforeResponding);
    std::thread::scope(|scope| {
        let call = scope.spawn(|| send("committed"));
        assert!(fake.wait_held(hold, Duration::from_secs(5)));
        assert_eq!(fake.sent().len(), 1, "Telegram has it before answering");
        assert!(!call.is_finished());
        assert!(fake.release(hold));
        assert_eq!(call.join().expect("call").0, 200);
    });

    let hold = fake.hold_next(Some("sendMessage"), Commit::AfterRelease);
    let dropped = std::thread::scope(|scope| {
        let call = scope.spawn(|| {
            client.runtime.block_on(
                client
                    .http
                    .post(format!("{}/bot{TOKEN}/sendMessage", client.base))
                    .json(&json!({"chat_id": 42, "text": "never"}))
                    .send(),
            )
        });
        assert!(fake.wait_held(hold, Duration::from_secs(5)));
        assert_eq!(fake.sent().len(), 1, "not handled while held");
        assert!(fake.discard(hold));
        call.join().expect("call")
    });
    assert!(dropped.is_err(), "no answer");
    assert_eq!(fake.sent().len(), 1, "a discarded call never happened");
    let states: Vec<HoldState> = fake.holds().into_iter().map(|h| h.state).collect();
    assert_eq!(states, [HoldState::Released, HoldState::Discarded]);
    // The harness logged the HTTP requests too.
    assert_eq!(fake.harness().calls_to("sendMessage").len(), 2);

    // A slow Bot API: the call waits, then succeeds.
    fake.fail_next_method("sendMessage", 1, Failure::Slow { delay_ms: 300 });
    let started = Instant::now();
    assert_eq!(send("slow").0, 200);
    assert!(started.elapsed() >= Duration::from_millis(300));
}

/// The CLI an operator uses: `send`, `sent`, `fail`, against a fake served in-process.
#[test]
fn the_cli_drives_a_running_fake() {
    let fake = FakeTelegram::start(TOKEN).expect("fake");
    let port = fake.addr().port().to_string();
    let cli = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_fake-telegram"))
            .args(args)
            .output()
            .expect("run fake-telegram");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, out, err) = cli(&[
        "send", "--port", &port, "--from", "42", "--name", "Ann Lee", "--text", "hello",
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("sent message 1 in chat 42"), "{out}");
    let (ok, out, err) = cli(&[
        "send",
        "--port",
        &port,
        "--chat",
        "-1001",
        "--group",
        "Team",
        "--mention",
        "--from",
        "42",
        "--name",
        "Ann",
        "--text",
        "status?",
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("in chat -1001"), "{out}");
    let client = Client::new(&fake);
    let updates = client.ok("getUpdates", json!({}));
    let group = &updates[1]["message"];
    assert_eq!(group["text"], json!("@nanoclaw_test_bot status?"));
    assert_eq!(group["entities"][0]["type"], json!("mention"));
    assert_eq!(group["chat"]["title"], json!("Team"));
    assert_eq!(updates[0]["message"]["from"]["last_name"], json!("Lee"));

    let (ok, out, _) = cli(&["sent", "--port", &port]);
    assert!(ok);
    assert!(out.contains("nothing yet"), "{out}");
    client.ok(
        "sendMessage",
        json!({"chat_id": 42, "text": "<b>Hi</b> Ann", "parse_mode": "HTML",
               "reply_markup": {"inline_keyboard": [[{"text": "Yes", "callback_data": "ncq:q:0"}]]}}),
    );
    let (ok, out, _) = cli(&["sent", "--port", &port]);
    assert!(ok);
    assert!(
        out.contains("sendMessage") && out.contains("chat 42"),
        "{out}"
    );
    assert!(out.contains("| Hi Ann"), "{out}");
    assert!(out.contains("[Yes] -> ncq:q:0"), "{out}");
    let (ok, out, _) = cli(&["sent", "--port", &port, "--json"]);
    assert!(ok);
    let json: Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(json[0]["plain_text"], json!("Hi Ann"));

    let (ok, _, err) = cli(&[
        "fail",
        "--port",
        &port,
        "--kind",
        "conflict",
        "--method",
        "getUpdates",
    ]);
    assert!(ok, "{err}");
    assert_eq!(client.call(TOKEN, "getUpdates", json!({})).0, 409);

    // Holds from the CLI: hold the next sendMessage until released.
    let (ok, out, err) = cli(&[
        "hold",
        "--port",
        &port,
        "--method",
        "sendMessage",
        "--commit",
        "after",
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("hold 1:"), "{out}");
    std::thread::scope(|scope| {
        let held = scope
            .spawn(|| client.call(TOKEN, "sendMessage", json!({"chat_id": 42, "text": "held"})));
        let waiting = fake
            .wait_for(Duration::from_secs(5), |f| {
                f.holds()
                    .first()
                    .filter(|h| h.state == nanoclaw_fake_telegram::HoldState::Waiting)
                    .cloned()
            })
            .expect("the call is held");
        assert!(waiting.call.is_some());
        let (ok, out, _) = cli(&["holds", "--port", &port]);
        assert!(ok && out.contains("Waiting"), "{out}");
        let (ok, out, err) = cli(&["release", "--port", &port, "--id", "1"]);
        assert!(ok, "{err}");
        assert!(out.contains("released"), "{out}");
        assert_eq!(held.join().expect("held call").0, 200);
    });
    let (ok, _, err) = cli(&["release", "--port", &port, "--id", "1"]);
    assert!(!ok && err.contains("already"), "{err}");

    // A private chat's id is the user's id: a mismatch is explained, not accepted.
    let (ok, _, err) = cli(&[
        "send", "--port", &port, "--chat", "7", "--from", "42", "--name", "Ann", "--text", "x",
    ]);
    assert!(!ok);
    assert!(err.contains("private chat"), "{err}");
    drop(fake);
    let (ok, _, err) = cli(&["sent", "--port", &port]);
    assert!(!ok);
    assert!(err.contains("no fake-telegram on port"), "{err}");
}

/// `serve --port 0` takes a free port and every hint it prints names that port.
#[test]
fn serve_on_port_zero_prints_the_port_it_took() {
    use std::io::{BufRead as _, BufReader};
    let mut child = Command::new(env!("CARGO_BIN_EXE_fake-telegram"))
        .args(["serve", "--port", "0", "--token", TOKEN])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run fake-telegram serve");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout"));
    let mut printed = String::new();
    while !printed.contains("Ctrl-C stops.") {
        let mut line = String::new();
        if lines.read_line(&mut line).expect("read") == 0 {
            break;
        }
        printed.push_str(&line);
    }
    let port: u16 = printed
        .lines()
        .find_map(|l| l.strip_prefix("fake Telegram Bot API listening on http://127.0.0.1:"))
        .and_then(|p| p.trim().parse().ok())
        .unwrap_or_else(|| panic!("no address in {printed:?}"));
    assert_ne!(port, 0);
    assert!(printed.contains(&format!("  token: {TOKEN}")), "{printed}");
    assert!(
        printed.contains(&format!("api_base_url = \"http://127.0.0.1:{port}\"")),
        "{printed}"
    );
    assert!(
        printed.contains(&format!("send --port {port} ")),
        "{printed}"
    );
    assert!(
        printed.contains(&format!("sent --port {port}\n")),
        "{printed}"
    );
    assert!(!printed.contains("--port 0"), "{printed}");
    // It serves there, and Ctrl-C stops it cleanly.
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
    let signalled = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(signalled.success());
    assert!(child.wait().expect("wait").success());
}
