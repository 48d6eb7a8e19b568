//! A stateful fake of the Telegram Bot API, on 127.0.0.1 only.
//!
//! It speaks the real wire format (`/bot<token>/<method>` with JSON, form or multipart
//! bodies; `{"ok":…}` envelopes; `/file/bot<token>/<path>` downloads) for the methods the
//! NanoClaw Telegram plugin uses: `getMe`, `deleteWebhook`, `setWebhook`, `getWebhookInfo`,
//! `getUpdates`, `sendMessage`, `editMessageText`, `setMessageReaction`, `sendChatAction`,
//! `sendDocument`, `getFile`, `answerCallbackQuery`. It behaves like Telegram where tests
//! care:
//!
//! * a wrong token gets `401 Unauthorized`; unknown methods `404`;
//! * `getUpdates` long-polls (waits up to `timeout` for new updates), `offset` confirms and
//!   drops earlier updates, `allowed_updates` filters, a newer `getUpdates` ends an older
//!   waiting one with `409 Conflict`, and an active webhook makes it `409` too;
//! * message ids are per chat and shared by users and the bot; replies, edits and reactions
//!   must target existing messages; HTML is parsed as strictly as Telegram does (`can't parse
//!   entities`), and texts over 4096 characters (captions over 1024) are refused;
//! * `callback_data` over 64 bytes and reactions outside Telegram's list are refused.
//!
//! Rust tests use [`FakeTelegram`]; the `fake-telegram` binary serves it for a person, with
//! a JSON control API under `/control/` that its `send`, `click`, `sent` and `fail` commands
//! drive.
//!
//! ```no_run
//! use nanoclaw_fake_telegram::{FakeTelegram, Person, UserMessage};
//! let fake = FakeTelegram::start("123456:ABCdefGHIjklMNOpqrSTUvwxYZ0123456789").expect("fake");
//! let ann = Person::new(42, "Ann");
//! fake.send_user_message(UserMessage::private(ann, "hello")).expect("inject");
//! // … point the plugin at fake.base_url(), then:
//! for sent in fake.sent() {
//!     println!("{} {:?}", sent.method, sent.plain_text);
//! }
//! ```

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::watch;

mod html;
mod model;
mod server;
mod state;

pub use model::{
    ApiCall, Delivered, Failure, FileKind, FileSpec, Person, Sent, SentButton, SentFile,
    UserMessage,
};

/// The username the fake bot has unless told otherwise.
pub const DEFAULT_BOT_USERNAME: &str = "nanoclaw_test_bot";

/// A running fake. Dropping it stops the server.
pub struct FakeTelegram {
    addr: SocketAddr,
    state: Arc<state::State>,
    shutdown: watch::Sender<bool>,
    thread: Option<JoinHandle<()>>,
}

impl FakeTelegram {
    /// Starts a fake for `token` on a free port of 127.0.0.1, with the bot
    /// [`DEFAULT_BOT_USERNAME`]. The bot id is the number before the token's colon.
    pub fn start(token: &str) -> std::io::Result<Self> {
        Self::start_on(0, token, DEFAULT_BOT_USERNAME)
    }

    /// Starts on a given port of 127.0.0.1 (0 = any free port).
    pub fn start_on(port: u16, token: &str, bot_username: &str) -> std::io::Result<Self> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, port))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let state = Arc::new(state::State::new(token, bot_username));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("fake-telegram")
            .enable_all()
            .build()?;
        let (shutdown, stop) = watch::channel(false);
        let server_state = Arc::clone(&state);
        let listener = {
            let _guard = runtime.enter();
            tokio::net::TcpListener::from_std(listener)?
        };
        let thread = std::thread::Builder::new()
            .name("fake-telegram".into())
            .spawn(move || {
                runtime.block_on(server::serve(listener, server_state, stop));
                runtime.shutdown_timeout(Duration::from_secs(1));
            })?;
        Ok(Self {
            addr,
            state,
            shutdown,
            thread: Some(thread),
        })
    }

    /// `http://127.0.0.1:<port>`: the plugin's `api_base_url`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The token the fake accepts.
    pub fn token(&self) -> &str {
        &self.state.token
    }

    /// The bot (`getMe`).
    pub fn bot(&self) -> Person {
        self.state.bot.clone()
    }

    /// The bot's username.
    pub fn bot_username(&self) -> String {
        self.state.bot.username.clone().unwrap_or_default()
    }

    /// Injects a message from a user; it becomes a pending update.
    pub fn send_user_message(&self, message: UserMessage) -> Result<Delivered, String> {
        self.state.inject_message(message)
    }

    /// Injects a click on a button of message `message_id` in `chat_id` (the message must
    /// exist). Returns the callback query id the bot must answer.
    pub fn click(
        &self,
        chat_id: i64,
        message_id: i64,
        from: &Person,
        data: &str,
    ) -> Result<String, String> {
        self.state.inject_click(chat_id, message_id, from, data)
    }

    /// Everything the bot did that users see, in order.
    pub fn sent(&self) -> Vec<Sent> {
        self.state.sent()
    }

    /// Every Bot API call received, in order (calls answered with an injected failure have
    /// params `{"injected_failure": kind}`).
    pub fn calls(&self) -> Vec<ApiCall> {
        self.state.calls()
    }

    /// The calls of one method.
    pub fn calls_of(&self, method: &str) -> Vec<ApiCall> {
        self.calls()
            .into_iter()
            .filter(|c| c.method == method)
            .collect()
    }

    /// Updates not yet confirmed by a `getUpdates` offset.
    pub fn pending_updates(&self) -> usize {
        self.state.pending_updates()
    }

    /// The next `count` Bot API calls (any method) fail with `failure`.
    pub fn fail_next(&self, count: u32, failure: Failure) {
        self.state.add_failure(None, count, failure);
    }

    /// The next `count` calls of `method` fail with `failure`.
    pub fn fail_next_method(&self, method: &str, count: u32, failure: Failure) {
        self.state
            .add_failure(Some(method.to_owned()), count, failure);
    }

    /// Sets (or with `None` removes) a webhook: `getUpdates` then answers 409.
    pub fn set_webhook(&self, url: Option<&str>) {
        self.state.set_webhook(url.map(str::to_owned));
    }

    /// Polls `check` every 10 ms until it returns `Some`, for at most `timeout`.
    pub fn wait_for<T>(
        &self,
        timeout: Duration,
        mut check: impl FnMut(&Self) -> Option<T>,
    ) -> Option<T> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(value) = check(self) {
                return Some(value);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stops the server and waits for its thread.
    pub fn stop(mut self) {
        self.shutdown_now();
    }

    fn shutdown_now(&mut self) {
        self.shutdown.send_replace(true);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for FakeTelegram {
    fn drop(&mut self) {
        self.shutdown_now();
    }
}
