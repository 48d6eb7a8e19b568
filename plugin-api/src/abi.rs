//! FFI types of the plugin boundary.
//!
//! Rules that keep this layout stable (see `docs/plugins.md`):
//! * every payload is `#[repr(C)]` and uses only abi_stable types;
//! * non-prefix structs can never gain fields, so each has an `extra_json` escape hatch;
//! * open-ended enums are `#[repr(transparent)]` integers with associated consts, so new
//!   values need no layout change;
//! * the root module and both trait vtables are prefix types: new fields and methods go
//!   after `last_prefix_field`, never before it.
//!
//! Both traits' methods are synchronous and must return quickly. The host calls plugin
//! methods from blocking threads with a timeout; plugins push inbound traffic with
//! [`HostServices::on_inbound`] from their own threads.

use std::fmt;

use abi_stable::{
    StableAbi, declare_root_module_statics,
    library::RootModule,
    package_version_strings, sabi_trait,
    sabi_types::VersionStrings,
    std_types::{RArc, RBox, ROption, RResult, RStr, RString, RVec, Tuple2},
};

// ---------------------------------------------------------------------------------------------
// Small open-ended "enums"
// ---------------------------------------------------------------------------------------------

/// What a channel can do, as a bitset. New flags can be added without a layout change;
/// unknown bits are ignored by older hosts.
#[repr(transparent)]
#[derive(StableAbi, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Capabilities(pub u64);

impl Capabilities {
    /// No capabilities.
    pub const NONE: Self = Self(0);
    /// `open_dm` resolves a user handle to a DM chat id (Discord, Slack, Teams, …).
    pub const OPEN_DM: Self = Self(1 << 0);
    /// `deliver` with [`OutboundOp::EDIT`].
    pub const EDIT: Self = Self(1 << 1);
    /// `deliver` with [`OutboundOp::REACT`].
    pub const REACTIONS: Self = Self(1 << 2);
    /// `set_typing` shows an indicator.
    pub const TYPING: Self = Self(1 << 3);
    /// Outbound files.
    pub const FILES: Self = Self(1 << 4);
    /// Outbound buttons (question cards); clicks come back through `on_action`.
    pub const BUTTONS: Self = Self(1 << 5);
    /// A thread is the conversation unit (inbound events carry `thread_id`).
    pub const THREADS: Self = Self(1 << 6);
    /// Receives HTTP requests through `handle_webhook` (route `/webhook/<channel_type>`).
    pub const WEBHOOK: Self = Self(1 << 7);

    /// Every flag this version of the crate knows, with its name.
    pub const KNOWN: [(Self, &'static str); 8] = [
        (Self::OPEN_DM, "open_dm"),
        (Self::EDIT, "edit"),
        (Self::REACTIONS, "reactions"),
        (Self::TYPING, "typing"),
        (Self::FILES, "files"),
        (Self::BUTTONS, "buttons"),
        (Self::THREADS, "threads"),
        (Self::WEBHOOK, "webhook"),
    ];

    /// The raw bits.
    pub const fn bits(self) -> u64 {
        self.0
    }
    /// Both sets together (usable in consts).
    pub const fn with(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }
    /// True when every flag of `other` is set in `self`.
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }
    /// The names of the known flags that are set, in declaration order.
    pub fn names(self) -> Vec<&'static str> {
        Self::KNOWN
            .iter()
            .filter(|(flag, _)| self.contains(*flag))
            .map(|(_, name)| *name)
            .collect()
    }
}

impl std::ops::BitOr for Capabilities {
    type Output = Self;
    fn bitor(self, rhs: Self) -> Self {
        self.with(rhs)
    }
}

impl std::ops::BitOrAssign for Capabilities {
    fn bitor_assign(&mut self, rhs: Self) {
        *self = self.with(rhs);
    }
}

impl fmt::Display for Capabilities {
    /// `open_dm,typing,webhook` (unknown bits as `0x…`), or `-` when empty.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = self.names();
        let known = Self::KNOWN.iter().fold(0, |acc, (flag, _)| acc | flag.0);
        let unknown = self.0 & !known;
        if names.is_empty() && unknown == 0 {
            return f.write_str("-");
        }
        f.write_str(&names.join(","))?;
        if unknown != 0 {
            if !names.is_empty() {
                f.write_str(",")?;
            }
            write!(f, "{unknown:#x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Capabilities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Capabilities({self})")
    }
}

macro_rules! open_enum {
    (
        $(#[$meta:meta])*
        $name:ident($repr:ty) { $( $(#[$cmeta:meta])* $konst:ident = $value:expr => $text:literal, )+ }
    ) => {
        $(#[$meta])*
        #[repr(transparent)]
        #[derive(StableAbi, Clone, Copy, PartialEq, Eq, Hash)]
        pub struct $name(pub $repr);

        impl $name {
            $( $(#[$cmeta])* pub const $konst: Self = Self($value); )+

            /// The lowercase name of a known value, `None` for values this crate doesn't know.
            pub const fn name(self) -> Option<&'static str> {
                match self.0 {
                    $( $value => Some($text), )+
                    _ => None,
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self.name() {
                    Some(name) => f.write_str(name),
                    None => write!(f, "{}({})", stringify!($name), self.0),
                }
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}::{}", stringify!($name), self)
            }
        }
    };
}

open_enum! {
    /// Why a call failed. Unknown values must be treated like [`ErrorKind::OTHER`].
    ErrorKind(u8) {
        /// Anything else.
        OTHER = 0 => "other",
        /// Bad or missing settings.
        CONFIG = 1 => "config",
        /// The platform could not be reached; retrying later may work.
        NETWORK = 2 => "network",
        /// The platform refused the credentials.
        AUTH = 3 => "auth",
        /// The platform throttled us; see `retry_after_ms`.
        RATE_LIMITED = 4 => "rate_limited",
        /// The operation is not supported by this channel.
        UNSUPPORTED = 5 => "unsupported",
        /// The chat, user or message does not exist.
        NOT_FOUND = 6 => "not_found",
        /// The request was malformed.
        INVALID_INPUT = 7 => "invalid_input",
        /// The platform did not answer in time.
        TIMEOUT = 8 => "timeout",
        /// The plugin panicked; the panic was caught at the boundary.
        PANICKED = 9 => "panicked",
    }
}

impl Default for ErrorKind {
    fn default() -> Self {
        Self::OTHER
    }
}

open_enum! {
    /// The operation of an [`OutboundMessage`].
    OutboundOp(u8) {
        /// Post a new message (reply to `target_message_id` when set).
        SEND = 0 => "send",
        /// Replace the text (and buttons) of the message `target_message_id`.
        EDIT = 1 => "edit",
        /// React to `target_message_id` with `reaction` (a name such as `thumbs_up`).
        REACT = 2 => "react",
    }
}

impl Default for OutboundOp {
    fn default() -> Self {
        Self::SEND
    }
}

open_enum! {
    /// Coarse health of a channel.
    HealthStatus(u8) {
        /// Connected and receiving.
        OK = 0 => "ok",
        /// Working with problems (reconnecting, throttled, slow).
        DEGRADED = 1 => "degraded",
        /// Not working.
        DOWN = 2 => "down",
        /// The plugin does not know.
        UNKNOWN = 3 => "unknown",
    }
}

impl Default for HealthStatus {
    fn default() -> Self {
        Self::UNKNOWN
    }
}

open_enum! {
    /// Severity of a [`HostServices::log`] line.
    LogLevel(u8) {
        /// Errors.
        ERROR = 1 => "error",
        /// Warnings.
        WARN = 2 => "warn",
        /// Information.
        INFO = 3 => "info",
        /// Debugging detail.
        DEBUG = 4 => "debug",
        /// Very verbose detail.
        TRACE = 5 => "trace",
    }
}

// ---------------------------------------------------------------------------------------------
// Manifest and configuration
// ---------------------------------------------------------------------------------------------

/// What a plugin says about itself. Returned by the root module's `manifest` function, which
/// the host calls right after loading, before `create`.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Default)]
pub struct Manifest {
    /// Human label, e.g. `"Telegram"`.
    pub name: RString,
    /// The key the host uses everywhere (`users` ids, `messaging_groups.channel_type`, the
    /// webhook route): lowercase `[a-z0-9_-]+`, unique among loaded plugins.
    pub channel_type: RString,
    /// The plugin's own version (its crate version).
    pub version: RString,
    /// The `nanoclaw-plugin-api` version the plugin was built against.
    pub abi_version: RString,
    /// What the channel can do.
    pub capabilities: Capabilities,
    /// The platform's maximum text length per message; 0 = no limit. Counted in the unit
    /// named by `extra_json`'s `"text_unit"` (`chars`, `utf16`, `bytes`; `chars` when
    /// absent). Since ABI 1.1 the plugin splits, in [`ChannelAdapter::prepare`]; the number
    /// is informative for the host.
    pub max_text_length: u32,
    /// One line for `nanoclaw plugins list`.
    pub description: RString,
    /// JSON object for fields added after 1.0; `""` = none. Since 1.1 the kit writes
    /// `"markup"` (the markup `prepare` renders to, e.g. `"telegram_html"`) and
    /// `"text_unit"` here.
    pub extra_json: RString,
}

/// Passed to `create`.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Default)]
pub struct PluginConfig {
    /// The `[plugins.<instance>]` key in `plugins.toml`.
    pub instance_name: RString,
    /// The instance's `settings` table as a JSON object, secrets already resolved.
    pub settings_json: RString,
    /// A directory private to this instance, created by the host.
    pub data_dir: RString,
    /// JSON object for fields added after 1.0; `""` = none.
    pub extra_json: RString,
}

// ---------------------------------------------------------------------------------------------
// Payloads
// ---------------------------------------------------------------------------------------------

/// Who sent something.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Default)]
pub struct Sender {
    /// Raw platform user id (not namespaced), e.g. `6037840640`.
    pub handle: RString,
    /// Display name, when the platform gives one.
    pub display_name: ROption<RString>,
    /// The sender is a bot.
    pub is_bot: bool,
}

/// A file attached to an inbound message.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Default)]
pub struct Attachment {
    /// `image`, `audio`, `video`, `file`, `sticker`, `voice`, …
    pub kind: RString,
    /// File name; `""` when unknown (the host derives one from `mime_type`).
    pub name: RString,
    /// MIME type; `""` when unknown.
    pub mime_type: RString,
    /// Size in bytes (of `data` when present, else as reported by the platform).
    pub size: u64,
    /// The content, when the plugin downloaded it; empty otherwise.
    pub data: RVec<u8>,
    /// Where the content can be fetched, when the platform gives a URL.
    pub url: ROption<RString>,
}

/// The message an inbound message replies to.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Default)]
pub struct QuotedMessage {
    /// Platform id of the quoted message.
    pub message_id: ROption<RString>,
    /// Display name or handle of its author.
    pub sender: ROption<RString>,
    /// Its text (possibly truncated by the platform).
    pub text: RString,
}

/// A message from the platform, pushed with [`HostServices::on_inbound`].
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Default)]
pub struct InboundEvent {
    /// Raw platform chat id, e.g. Telegram `-1001234`; the host namespaces it as
    /// `<channel_type>:<chat_id>`.
    pub chat_id: RString,
    /// The chat's title when the platform tells (group name; the person's name in a DM).
    pub chat_name: ROption<RString>,
    /// Thread id for threaded channels ([`Capabilities::THREADS`]).
    pub thread_id: ROption<RString>,
    /// Platform message id (used for dedupe, replies and reactions).
    pub message_id: RString,
    /// Who sent it; `RNone` for system messages.
    pub sender: ROption<Sender>,
    /// A group, channel or thread (false for a DM).
    pub is_group: bool,
    /// The platform confirms the bot was mentioned. DMs count as mentions.
    pub mentioned: bool,
    /// Message text.
    pub text: RString,
    /// Attached files.
    pub attachments: RVec<Attachment>,
    /// The message this one replies to.
    pub reply_to: ROption<QuotedMessage>,
    /// When it was sent, ms since the Unix epoch; 0 = now.
    pub timestamp_ms: i64,
    /// JSON object with anything else; `""` = none.
    pub extra_json: RString,
}

/// (ABI 1.2) Someone deleted a message they had sent, pushed with
/// [`HostServices::on_deleted`]. Ids are raw, as in the [`InboundEvent`] that brought it.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Default)]
pub struct DeletionEvent {
    /// Raw platform chat id of the deleted message.
    pub chat_id: RString,
    /// Its thread, for threaded channels.
    pub thread_id: ROption<RString>,
    /// Platform id of the deleted message (the [`InboundEvent::message_id`] it came with).
    pub message_id: RString,
}

/// A button click on a card the host sent, pushed with [`HostServices::on_action`].
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Default)]
pub struct ActionEvent {
    /// Raw platform chat id of the card.
    pub chat_id: RString,
    /// Thread of the card, if any.
    pub thread_id: ROption<RString>,
    /// Platform id of the card message.
    pub message_id: RString,
    /// Who clicked.
    pub clicker: Sender,
    /// The button id the host gave ([`Button::id`]).
    pub action_id: RString,
    /// JSON object with anything else; `""` = none.
    pub extra_json: RString,
}

/// A button on an outbound card.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Default)]
pub struct Button {
    /// Opaque id, returned in [`ActionEvent::action_id`] on click (≤ 64 bytes).
    pub id: RString,
    /// Text shown on the button.
    pub label: RString,
}

/// A file sent with an outbound message.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Default)]
pub struct OutboundFile {
    /// File name.
    pub name: RString,
    /// MIME type; `""` when unknown.
    pub mime_type: RString,
    /// Content.
    pub data: RVec<u8>,
}

/// Something the host wants posted: the agent's message, passed to
/// [`ChannelAdapter::prepare`], and each part that returns, passed to
/// [`ChannelAdapter::deliver`].
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Default)]
pub struct OutboundMessage {
    /// Send, edit or react.
    pub op: OutboundOp,
    /// Raw platform chat id.
    pub chat_id: RString,
    /// Thread, for threaded channels.
    pub thread_id: ROption<RString>,
    /// To `prepare`: the agent's text (Markdown). In a prepared part: the platform-ready
    /// text (rendered markup, within the limit).
    pub text: RString,
    /// Edit/react target; for SEND, the message to reply to.
    pub target_message_id: ROption<RString>,
    /// Reaction name for REACT (`thumbs_up`, `heart`, `check`, …).
    pub reaction: RString,
    /// Buttons (question cards).
    pub buttons: RVec<Button>,
    /// Files.
    pub files: RVec<OutboundFile>,
    /// JSON object with anything else; `""` = none.
    pub extra_json: RString,
}

/// An HTTP request routed to the plugin by the host's webhook server.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Default)]
pub struct WebhookRequest {
    /// `GET`, `POST`, …
    pub method: RString,
    /// The path after the plugin's route (`/webhook/<channel_type>`), starting with `/`.
    pub path: RString,
    /// The raw query string without `?`.
    pub query: RString,
    /// Headers in arrival order (names lowercase).
    pub headers: RVec<Tuple2<RString, RString>>,
    /// The raw body (signatures are computed over these bytes).
    pub body: RVec<u8>,
}

impl WebhookRequest {
    /// The first header with this name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|h| h.0.as_str().eq_ignore_ascii_case(name))
            .map(|h| h.1.as_str())
    }
}

/// The plugin's answer to a [`WebhookRequest`].
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Default)]
pub struct WebhookResponse {
    /// HTTP status.
    pub status: u16,
    /// Response headers.
    pub headers: RVec<Tuple2<RString, RString>>,
    /// Response body.
    pub body: RVec<u8>,
}

impl WebhookResponse {
    /// A response with a status and a plain text body.
    pub fn text(status: u16, body: &str) -> Self {
        Self {
            status,
            headers: vec![Tuple2(
                "content-type".into(),
                "text/plain; charset=utf-8".into(),
            )]
            .into(),
            body: body.as_bytes().to_vec().into(),
        }
    }
    /// A response with a status and a JSON body (already serialised).
    pub fn json(status: u16, body: &str) -> Self {
        Self {
            status,
            headers: vec![Tuple2("content-type".into(), "application/json".into())].into(),
            body: body.as_bytes().to_vec().into(),
        }
    }
    /// `404 not found`: the default for channels without webhooks.
    pub fn not_found() -> Self {
        Self::text(404, "not found")
    }
}

/// An error crossing the boundary in either direction.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Default)]
pub struct PluginError {
    /// Category.
    pub kind: ErrorKind,
    /// One line for logs and operators.
    pub message: RString,
    /// For [`ErrorKind::RATE_LIMITED`]: when to retry.
    pub retry_after_ms: ROption<u64>,
}

impl PluginError {
    /// An error of `kind` with `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: RString::from(message.into()),
            retry_after_ms: ROption::RNone,
        }
    }
    /// [`ErrorKind::OTHER`].
    pub fn other(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::OTHER, message)
    }
    /// [`ErrorKind::CONFIG`].
    pub fn config(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::CONFIG, message)
    }
    /// [`ErrorKind::NETWORK`].
    pub fn network(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NETWORK, message)
    }
    /// [`ErrorKind::AUTH`].
    pub fn auth(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::AUTH, message)
    }
    /// [`ErrorKind::RATE_LIMITED`] with a retry delay.
    pub fn rate_limited(message: impl Into<String>, retry_after_ms: Option<u64>) -> Self {
        Self {
            retry_after_ms: retry_after_ms.into(),
            ..Self::new(ErrorKind::RATE_LIMITED, message)
        }
    }
    /// [`ErrorKind::UNSUPPORTED`]: `what` is not supported by this channel.
    pub fn unsupported(what: impl fmt::Display) -> Self {
        Self::new(ErrorKind::UNSUPPORTED, format!("{what} is not supported"))
    }
    /// [`ErrorKind::NOT_FOUND`].
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NOT_FOUND, message)
    }
    /// [`ErrorKind::INVALID_INPUT`].
    pub fn invalid_input(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::INVALID_INPUT, message)
    }
    /// [`ErrorKind::TIMEOUT`].
    pub fn timeout(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::TIMEOUT, message)
    }
    /// [`ErrorKind::PANICKED`].
    pub fn panicked(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::PANICKED, message)
    }
    /// Worth retrying later: network trouble, throttling, timeouts.
    pub fn is_transient(&self) -> bool {
        matches!(
            self.kind,
            ErrorKind::NETWORK | ErrorKind::RATE_LIMITED | ErrorKind::TIMEOUT
        )
    }
}

impl fmt::Display for PluginError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)?;
        if let ROption::RSome(ms) = self.retry_after_ms {
            write!(f, " (retry after {ms} ms)")?;
        }
        Ok(())
    }
}

impl std::error::Error for PluginError {}

/// A channel's view of its own health. Ingest progress (`last_ingest_ms`), not an API ping,
/// is the real liveness signal: a bot can answer pings while its update loop is dead.
#[repr(C)]
#[derive(StableAbi, Debug, Clone, PartialEq, Default)]
pub struct Health {
    /// Coarse status.
    pub status: HealthStatus,
    /// One line of detail.
    pub detail: RString,
    /// When the plugin last received anything from the platform (ms since the Unix epoch),
    /// 0 = never.
    pub last_ingest_ms: i64,
}

impl Health {
    /// A health value.
    pub fn new(status: HealthStatus, detail: impl Into<String>, last_ingest_ms: i64) -> Self {
        Self {
            status,
            detail: RString::from(detail.into()),
            last_ingest_ms,
        }
    }
    /// `OK` with no detail.
    pub fn ok(last_ingest_ms: i64) -> Self {
        Self::new(HealthStatus::OK, "", last_ingest_ms)
    }
    /// `UNKNOWN`: the default for channels that don't track health.
    pub fn unknown() -> Self {
        Self::new(HealthStatus::UNKNOWN, "", 0)
    }
}

// ---------------------------------------------------------------------------------------------
// The two traits
// ---------------------------------------------------------------------------------------------

/// A created channel adapter (implemented by plugins; the kit implements it for any
/// [`kit::Channel`](crate::kit::Channel)).
///
/// Every method is synchronous and must return quickly (enqueue and return). The host
/// calls them from blocking threads, a few at a time, with a timeout.
#[sabi_trait]
pub trait ChannelAdapter: Send + Sync {
    /// Connect to the platform and start receiving (spawn the poll loop / websocket task).
    fn start(&self) -> RResult<(), PluginError>;

    /// Post, edit or react; returns the platform message id of what was posted, if any.
    fn deliver(&self, message: OutboundMessage) -> RResult<ROption<RString>, PluginError>;

    /// Show a typing indicator once (the host refreshes it). Errors are the plugin's to log.
    fn set_typing(&self, chat_id: RStr<'_>, thread_id: ROption<RStr<'_>>);

    /// Resolve a raw user handle to the raw chat id of a DM with them. Only called when the
    /// manifest declares [`Capabilities::OPEN_DM`].
    fn open_dm(&self, user_handle: RStr<'_>) -> RResult<RString, PluginError>;

    /// Answer an HTTP request routed to this plugin. Verify the platform's signature first.
    fn handle_webhook(&self, request: WebhookRequest) -> RResult<WebhookResponse, PluginError>;

    /// Current health.
    fn health(&self) -> Health;

    /// JSON escape hatch for calls added after 1.0. Unknown `method` → `UNSUPPORTED`.
    fn extension(&self, method: RStr<'_>, args_json: RStr<'_>) -> RResult<RString, PluginError>;

    /// Stop receiving and release resources. No other method is called afterwards.
    ///
    /// The prefix of the vtable (what every 1.x plugin has) ends here; methods added in
    /// later minor versions come after it, with a default body that runs for plugins built
    /// before them. abi_stable requires that this marker never moves within a major version.
    #[sabi(last_prefix_field)]
    fn teardown(&self);

    /// (ABI 1.1) Turns the agent's message into the platform-ready parts that `deliver`
    /// then sends, one call per part: the Markdown text rendered to the platform's markup
    /// and split within its limit, files and buttons attached to the part the platform
    /// wants them on. `EDIT` comes back as one part (cut, with an ellipsis, if too long);
    /// `REACT` as it is. The host calls `deliver` once per part, in order, recording
    /// progress after each, and passes each part back unchanged; `deliver` never renders or
    /// splits again. Must be deterministic: after a restart the host prepares the same
    /// message again and skips the parts already delivered.
    fn prepare(&self, message: OutboundMessage) -> RResult<RVec<OutboundMessage>, PluginError> {
        // What a plugin built on ABI 1.0 gets (its vtable has no `prepare`): its `deliver`
        // still renders and splits by itself.
        RResult::ROk(RVec::from(vec![message]))
    }
}

/// The adapter object returned by `create`.
pub type ChannelAdapterBox = ChannelAdapter_TO<'static, RBox<()>>;

/// Services the host gives each plugin instance (implemented by the host).
///
/// Cheap to clone and callable from any plugin thread. Calls may block briefly (they touch
/// the host's database); never call them while holding a lock that a host → plugin call
/// could need.
///
/// The state store (kv, subscriptions, locks, lists) is namespaced per plugin instance by the
/// host: two plugins never see each other's keys.
#[sabi_trait]
pub trait HostServices: Send + Sync + Clone {
    /// Hand an inbound message to the host. Returns only after the host has durably
    /// accepted it, so the plugin may then ack the platform or advance its offset. An error
    /// means "not accepted": do not ack; retry or let the platform redeliver.
    fn on_inbound(&self, event: InboundEvent) -> RResult<(), PluginError>;

    /// Hand a button click to the host.
    fn on_action(&self, event: ActionEvent) -> RResult<(), PluginError>;

    /// Write a line to the host's log.
    fn log(&self, level: LogLevel, target: RStr<'_>, message: RStr<'_>);

    /// Read a value; expired entries are misses.
    fn kv_get(&self, key: RStr<'_>) -> RResult<ROption<RString>, PluginError>;

    /// Write a value, with an optional time to live.
    fn kv_set(
        &self,
        key: RStr<'_>,
        value: RStr<'_>,
        ttl_ms: ROption<u64>,
    ) -> RResult<(), PluginError>;

    /// Write a value only if the key is absent (or expired); true when it was written.
    /// The atomic primitive behind dedupe.
    fn kv_set_if_absent(
        &self,
        key: RStr<'_>,
        value: RStr<'_>,
        ttl_ms: ROption<u64>,
    ) -> RResult<bool, PluginError>;

    /// Delete a key; true when it existed.
    fn kv_delete(&self, key: RStr<'_>) -> RResult<bool, PluginError>;

    /// Follow a thread from now on (idempotent).
    fn subscribe(&self, thread: RStr<'_>) -> RResult<(), PluginError>;

    /// Stop following a thread (idempotent).
    fn unsubscribe(&self, thread: RStr<'_>) -> RResult<(), PluginError>;

    /// Whether a thread is followed.
    fn is_subscribed(&self, thread: RStr<'_>) -> RResult<bool, PluginError>;

    /// Take a named lock for `ttl_ms`; returns a token, or `RNone` while someone else holds it.
    fn lock_acquire(&self, name: RStr<'_>, ttl_ms: u64) -> RResult<ROption<RString>, PluginError>;

    /// Extend a lock we hold; false when the token no longer matches.
    fn lock_extend(
        &self,
        name: RStr<'_>,
        token: RStr<'_>,
        ttl_ms: u64,
    ) -> RResult<bool, PluginError>;

    /// Release a lock we hold; false when the token no longer matches.
    fn lock_release(&self, name: RStr<'_>, token: RStr<'_>) -> RResult<bool, PluginError>;

    /// Append to a list, keeping at most `max_len` newest entries; the list expires `ttl_ms`
    /// after this append. Returns the new length.
    fn list_append(
        &self,
        key: RStr<'_>,
        value: RStr<'_>,
        max_len: ROption<u32>,
        ttl_ms: ROption<u64>,
    ) -> RResult<u32, PluginError>;

    /// The list's entries, oldest first.
    fn list_get(&self, key: RStr<'_>) -> RResult<RVec<RString>, PluginError>;

    /// Remove and return the oldest entry (a FIFO queue on top of lists).
    fn list_pop_front(&self, key: RStr<'_>) -> RResult<ROption<RString>, PluginError>;

    /// JSON escape hatch for services added after 1.0. Unknown `method` → `UNSUPPORTED`.
    ///
    /// The prefix every 1.x host has ends here (see [`ChannelAdapter::teardown`]).
    #[sabi(last_prefix_field)]
    fn extension(&self, method: RStr<'_>, args_json: RStr<'_>) -> RResult<RString, PluginError>;

    /// (ABI 1.2) Tell the host that a message it was handed has been deleted on the
    /// platform: one not yet read by its agent is withdrawn, otherwise the agent is told.
    /// Same contract as [`on_inbound`](Self::on_inbound): an error means "not accepted".
    fn on_deleted(&self, event: DeletionEvent) -> RResult<(), PluginError> {
        // A host built on ABI 1.1 (its vtable has no `on_deleted`): it cannot act on it.
        let _ = event;
        RResult::RErr(PluginError::new(
            ErrorKind::UNSUPPORTED,
            "this host is older than ABI 1.2 and cannot take message deletions",
        ))
    }
}

/// The host services object passed to `create` (reference counted, `Clone`).
pub type HostServicesBox = HostServices_TO<'static, RArc<()>>;

// ---------------------------------------------------------------------------------------------
// Root module
// ---------------------------------------------------------------------------------------------

/// The root module every plugin exports (through [`export_plugin!`](crate::export_plugin)).
///
/// Fields added in later 1.x versions go after `create`; their accessors return `Option`
/// (`None` for a plugin built before they existed).
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = PluginModRef)))]
pub struct PluginMod {
    /// Describes the plugin. Cheap, no side effects; called once after loading.
    pub manifest: extern "C" fn() -> Manifest,

    /// Creates one adapter instance. Called once per configured instance.
    #[sabi(last_prefix_field)]
    pub create:
        extern "C" fn(PluginConfig, HostServicesBox) -> RResult<ChannelAdapterBox, PluginError>,
}

impl RootModule for PluginModRef {
    declare_root_module_statics! {PluginModRef}
    const BASE_NAME: &'static str = "nanoclaw_plugin";
    const NAME: &'static str = "nanoclaw_plugin";
    const VERSION_STRINGS: VersionStrings = package_version_strings!();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capabilities_compose_and_print() {
        let caps = Capabilities::OPEN_DM | Capabilities::TYPING | Capabilities::WEBHOOK;
        assert!(caps.contains(Capabilities::TYPING));
        assert!(!caps.contains(Capabilities::EDIT));
        assert_eq!(caps.to_string(), "open_dm,typing,webhook");
        assert_eq!(Capabilities::NONE.to_string(), "-");
        assert_eq!(
            Capabilities(1 << 40 | 1).to_string(),
            "open_dm,0x10000000000"
        );
        const C: Capabilities = Capabilities::EDIT.with(Capabilities::FILES);
        assert_eq!(C.bits(), 0b10010);
    }

    #[test]
    fn open_enums_print_unknown_values() {
        assert_eq!(ErrorKind::RATE_LIMITED.to_string(), "rate_limited");
        assert_eq!(ErrorKind(200).to_string(), "ErrorKind(200)");
        assert_eq!(ErrorKind(200).name(), None);
        assert_eq!(HealthStatus::default(), HealthStatus::UNKNOWN);
        assert_eq!(format!("{:?}", LogLevel::WARN), "LogLevel::warn");
    }

    #[test]
    fn plugin_error_display_and_transience() {
        let e = PluginError::rate_limited("slow down", Some(1500));
        assert_eq!(
            e.to_string(),
            "rate_limited: slow down (retry after 1500 ms)"
        );
        assert!(e.is_transient());
        assert!(!PluginError::auth("bad token").is_transient());
        assert_eq!(
            PluginError::unsupported("open_dm").to_string(),
            "unsupported: open_dm is not supported"
        );
    }

    #[test]
    fn webhook_header_lookup_is_case_insensitive() {
        let req = WebhookRequest {
            headers: vec![Tuple2("X-Signature".into(), "abc".into())].into(),
            ..Default::default()
        };
        assert_eq!(req.header("x-signature"), Some("abc"));
        assert_eq!(req.header("missing"), None);
    }
}
