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
//! It runs on the fake-platform harness ([`nanoclaw_fake_platform`]), which logs every
//! request and applies scripted failures ([`Failure`], per method or for any method) and
//! holds: [`FakeTelegram::hold_next`] holds the next call until the test releases or
//! discards it, with Telegram committing it before answering or only on release
//! ([`Commit`]), so an end-to-end test can kill the daemon mid-call and choose whether
//! Telegram got the message.
//!
//! Rust tests use [`FakeTelegram`]; the `fake-telegram` binary serves it for a person, with
//! a JSON control API under `/control/` that its `send`, `click`, `sent`, `fail`, `hold`,
//! `holds` and `release` commands drive.
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

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nanoclaw_fake_platform::{FakeServer, Harness, Route};

mod html;
mod model;
mod server;
mod state;

pub use model::{
    ApiCall, Delivered, Failure, FileKind, FileSpec, Person, Sent, SentButton, SentFile,
    UserMessage,
};
pub use nanoclaw_fake_platform::{Commit, HoldId, HoldInfo, HoldState};
use serde_json::json;

/// The username the fake bot has unless told otherwise.
pub const DEFAULT_BOT_USERNAME: &str = "nanoclaw_test_bot";

/// A running fake. Dropping it stops the server.
pub struct FakeTelegram {
    server: FakeServer,
    state: Arc<state::State>,
}

impl FakeTelegram {
    /// Starts a fake for `token` on a free port of 127.0.0.1, with the bot
    /// [`DEFAULT_BOT_USERNAME`]. The bot id is the number before the token's colon.
    pub fn start(token: &str) -> std::io::Result<Self> {
        Self::start_on(0, token, DEFAULT_BOT_USERNAME)
    }

    /// Starts on a given port of 127.0.0.1 (0 = any free port).
    pub fn start_on(port: u16, token: &str, bot_username: &str) -> std::io::Result<Self> {
        let state = Arc::new(state::State::new(token, bot_username));
        let route_token = token.to_owned();
        let hook_state = Arc::clone(&state);
        let harness = Harness::new()
            .with_route_key(move |parts| server::route_of(&route_token, parts))
            .with_control_prefix("/control/")
            .with_fault_hook(move |method, fault| {
                // A call answered by an injected failure never reaches the Bot API
                // handlers: record it here, as the tests expect to find it.
                if fault.is_terminal() {
                    hook_state.record_call(method, json!({"injected_failure": fault.label()}));
                }
            });
        let router = server::router(Arc::clone(&state), harness.clone());
        let server = FakeServer::start_on(port, "fake-telegram", harness, router)?;
        Ok(Self { server, state })
    }

    /// `http://127.0.0.1:<port>`: the plugin's `api_base_url`.
    pub fn base_url(&self) -> String {
        self.server.base_url()
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// The harness: every HTTP request as received, faults and holds.
    pub fn harness(&self) -> &Harness {
        self.server.harness()
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
        self.harness()
            .fail_next(Route::Any, count, server::fault_of(&failure));
    }

    /// The next `count` calls of `method` fail with `failure`.
    pub fn fail_next_method(&self, method: &str, count: u32, failure: Failure) {
        self.harness()
            .fail_next(Route::named(method), count, server::fault_of(&failure));
    }

    /// Holds the next call of `method` (any method with `None`) until
    /// [`release`](Self::release) or [`discard`](Self::discard); `commit` says whether
    /// Telegram handles it before the hold (the message exists, only the answer waits) or
    /// only on release.
    pub fn hold_next(&self, method: Option<&str>, commit: Commit) -> HoldId {
        self.harness()
            .hold_next(Route::from(method.map(str::to_owned)), commit)
    }

    /// Waits until hold `id` has caught a call (false after `timeout`).
    pub fn wait_held(&self, id: HoldId, timeout: Duration) -> bool {
        self.harness().wait_held(id, timeout)
    }

    /// Lets a held call go on (Telegram handles it now if it had not yet).
    pub fn release(&self, id: HoldId) -> bool {
        self.harness().release(id)
    }

    /// Drops a held call's connection without an answer.
    pub fn discard(&self, id: HoldId) -> bool {
        self.harness().discard(id)
    }

    /// Every hold and where it is.
    pub fn holds(&self) -> Vec<HoldInfo> {
        self.harness().holds()
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
    pub fn stop(self) {
        self.server.stop();
    }
}
