//! The safe trait a channel implements, and the handles it receives.

use std::path::PathBuf;

use abi_stable::std_types::{ROption, RStr, RString};
use serde::de::DeserializeOwned;

use super::format::{LengthUnit, Markup, TextLimit};
use crate::abi::{
    ActionEvent, Capabilities, DeletionEvent, Health, HostServicesBox, InboundEvent, LogLevel,
    OutboundMessage, PluginError, WebhookRequest, WebhookResponse,
};

/// Static description of a channel, turned into the ABI [`Manifest`](crate::abi::Manifest).
///
/// ```
/// use nanoclaw_plugin_api::kit::{ChannelInfo, LengthUnit};
/// use nanoclaw_plugin_api::abi::Capabilities;
/// const INFO: ChannelInfo = ChannelInfo::new("Telegram", "telegram", "0.3.1")
///     .capabilities(Capabilities::EDIT.with(Capabilities::TYPING))
///     .max_text_length(4096)
///     .text_unit(LengthUnit::Utf16)
///     .description("Telegram Bot API (long polling)");
/// assert_eq!(INFO.text_limit().max, 4096);
/// ```
///
/// With the `kit-render` feature, `.markup(Markup::TelegramHtml)` makes the default
/// [`Channel::render`] turn the agent's Markdown into that markup before splitting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelInfo {
    /// Human label.
    pub name: &'static str,
    /// Unique channel type, lowercase `[a-z0-9_-]+`.
    pub channel_type: &'static str,
    /// The plugin's version; use `env!("CARGO_PKG_VERSION")`.
    pub version: &'static str,
    /// What the channel can do.
    pub capabilities: Capabilities,
    /// Maximum text length per message, in [`text_unit`](Self::text_unit)s; 0 = none.
    pub max_text_length: u32,
    /// How the platform counts text length.
    pub text_unit: LengthUnit,
    /// What the default [`Channel::render`] renders the agent's Markdown into
    /// ([`Markup::Verbatim`] unless set with the `kit-render` feature).
    pub markup: Markup,
    /// One line for operators.
    pub description: &'static str,
    /// JSON object with anything else, `""` = none.
    pub extra_json: &'static str,
}

impl ChannelInfo {
    /// A description with no capabilities and no text limit.
    pub const fn new(
        name: &'static str,
        channel_type: &'static str,
        version: &'static str,
    ) -> Self {
        Self {
            name,
            channel_type,
            version,
            capabilities: Capabilities::NONE,
            max_text_length: 0,
            text_unit: LengthUnit::Chars,
            markup: Markup::Verbatim,
            description: "",
            extra_json: "",
        }
    }
    /// Sets the capabilities.
    pub const fn capabilities(mut self, capabilities: Capabilities) -> Self {
        self.capabilities = capabilities;
        self
    }
    /// Sets the maximum text length per message (in [`text_unit`](Self::text_unit)s).
    pub const fn max_text_length(mut self, max: u32) -> Self {
        self.max_text_length = max;
        self
    }
    /// Sets how the platform counts length (default: characters).
    pub const fn text_unit(mut self, unit: LengthUnit) -> Self {
        self.text_unit = unit;
        self
    }
    /// Sets the markup the default [`Channel::render`] renders Markdown into (needs the
    /// `kit-render` feature; without it every channel passes text through verbatim).
    #[cfg(feature = "kit-render")]
    pub const fn markup(mut self, markup: Markup) -> Self {
        self.markup = markup;
        self
    }
    /// The limit as a [`TextLimit`].
    pub const fn text_limit(&self) -> TextLimit {
        TextLimit::new(self.max_text_length as usize, self.text_unit)
    }
    /// Sets the one-line description.
    pub const fn description(mut self, description: &'static str) -> Self {
        self.description = description;
        self
    }
    /// Sets the extra JSON.
    pub const fn extra_json(mut self, extra_json: &'static str) -> Self {
        self.extra_json = extra_json;
        self
    }
}

/// What `create` receives.
#[derive(Clone)]
pub struct Context {
    /// The `[plugins.<instance>]` key.
    pub instance_name: String,
    /// The settings table as JSON (secrets resolved).
    pub settings_json: String,
    /// A directory private to this instance.
    pub data_dir: PathBuf,
    /// Extra JSON from the host (`""` = none).
    pub extra_json: String,
    /// The host's services.
    pub host: Host,
}

impl Context {
    /// Deserialises the settings; errors become [`ErrorKind::CONFIG`](crate::abi::ErrorKind).
    pub fn settings<T: DeserializeOwned>(&self) -> Result<T, PluginError> {
        let json = if self.settings_json.trim().is_empty() {
            "{}"
        } else {
            self.settings_json.as_str()
        };
        serde_json::from_str(json).map_err(|e| {
            PluginError::config(format!(
                "invalid settings for plugin instance `{}`: {e}",
                self.instance_name
            ))
        })
    }
}

/// A cloneable, `Send + Sync` handle on the host's services with Rust-friendly signatures.
#[derive(Clone)]
pub struct Host {
    services: HostServicesBox,
}

impl Host {
    /// Wraps the ABI object.
    pub fn new(services: HostServicesBox) -> Self {
        Self { services }
    }
    /// The ABI object (for [`HostServices`](crate::abi::HostServices) methods added later).
    pub fn raw(&self) -> &HostServicesBox {
        &self.services
    }
    /// See [`HostServices::on_inbound`](crate::abi::HostServices::on_inbound): returns after
    /// the host durably accepted the message.
    pub fn on_inbound(&self, event: InboundEvent) -> Result<(), PluginError> {
        self.services.on_inbound(event).into_result()
    }
    /// Hands a button click to the host.
    pub fn on_action(&self, event: ActionEvent) -> Result<(), PluginError> {
        self.services.on_action(event).into_result()
    }
    /// (ABI 1.2) Tells the host a message it was handed was deleted on the platform;
    /// `UNSUPPORTED` from a host older than 1.2.
    pub fn on_deleted(&self, event: DeletionEvent) -> Result<(), PluginError> {
        self.services.on_deleted(event).into_result()
    }
    /// Writes a log line (prefer `tracing` after [`install_tracing`](super::install_tracing)).
    pub fn log(&self, level: LogLevel, target: &str, message: &str) {
        self.services
            .log(level, RStr::from_str(target), RStr::from_str(message));
    }
    /// Reads a key.
    pub fn kv_get(&self, key: &str) -> Result<Option<String>, PluginError> {
        self.services
            .kv_get(key.into())
            .into_result()
            .map(|v| v.into_option().map(RString::into_string))
    }
    /// Writes a key.
    pub fn kv_set(&self, key: &str, value: &str, ttl_ms: Option<u64>) -> Result<(), PluginError> {
        self.services
            .kv_set(key.into(), value.into(), ttl_ms.into())
            .into_result()
    }
    /// Writes a key unless present; true when written.
    pub fn kv_set_if_absent(
        &self,
        key: &str,
        value: &str,
        ttl_ms: Option<u64>,
    ) -> Result<bool, PluginError> {
        self.services
            .kv_set_if_absent(key.into(), value.into(), ttl_ms.into())
            .into_result()
    }
    /// Deletes a key; true when it existed.
    pub fn kv_delete(&self, key: &str) -> Result<bool, PluginError> {
        self.services.kv_delete(key.into()).into_result()
    }
    /// Follows a thread.
    pub fn subscribe(&self, thread: &str) -> Result<(), PluginError> {
        self.services.subscribe(thread.into()).into_result()
    }
    /// Stops following a thread.
    pub fn unsubscribe(&self, thread: &str) -> Result<(), PluginError> {
        self.services.unsubscribe(thread.into()).into_result()
    }
    /// Whether a thread is followed.
    pub fn is_subscribed(&self, thread: &str) -> Result<bool, PluginError> {
        self.services.is_subscribed(thread.into()).into_result()
    }
    /// Takes a lock; `Some(token)` on success.
    pub fn lock_acquire(&self, name: &str, ttl_ms: u64) -> Result<Option<String>, PluginError> {
        self.services
            .lock_acquire(name.into(), ttl_ms)
            .into_result()
            .map(|v| v.into_option().map(RString::into_string))
    }
    /// Extends a lock we hold.
    pub fn lock_extend(&self, name: &str, token: &str, ttl_ms: u64) -> Result<bool, PluginError> {
        self.services
            .lock_extend(name.into(), token.into(), ttl_ms)
            .into_result()
    }
    /// Releases a lock we hold.
    pub fn lock_release(&self, name: &str, token: &str) -> Result<bool, PluginError> {
        self.services
            .lock_release(name.into(), token.into())
            .into_result()
    }
    /// Appends to a capped list; returns the new length.
    pub fn list_append(
        &self,
        key: &str,
        value: &str,
        max_len: Option<u32>,
        ttl_ms: Option<u64>,
    ) -> Result<u32, PluginError> {
        self.services
            .list_append(key.into(), value.into(), max_len.into(), ttl_ms.into())
            .into_result()
    }
    /// A list's entries, oldest first.
    pub fn list_get(&self, key: &str) -> Result<Vec<String>, PluginError> {
        self.services
            .list_get(key.into())
            .into_result()
            .map(|v| v.into_iter().map(RString::into_string).collect())
    }
    /// Pops a list's oldest entry.
    pub fn list_pop_front(&self, key: &str) -> Result<Option<String>, PluginError> {
        self.services
            .list_pop_front(key.into())
            .into_result()
            .map(|v| v.into_option().map(RString::into_string))
    }
    /// Calls a host extension.
    pub fn extension(&self, method: &str, args_json: &str) -> Result<String, PluginError> {
        self.services
            .extension(method.into(), args_json.into())
            .into_result()
            .map(RString::into_string)
    }
}

/// A channel adapter, written in safe Rust. [`export_plugin!`](crate::export_plugin) wraps
/// it into the ABI, catching panics in every method.
///
/// All methods are called from host threads, possibly concurrently, and must return
/// quickly: do network I/O on your own [`runtime`](super::runtime) and push inbound messages
/// with [`Host::on_inbound`].
pub trait Channel: Send + Sync + Sized + 'static {
    /// The static description (becomes the manifest).
    const INFO: ChannelInfo;

    /// Builds the channel from its settings. Validate settings here, but don't connect yet:
    /// `nanoclaw plugins check` calls `create` without `start`.
    fn create(ctx: Context) -> Result<Self, PluginError>;

    /// Connects and starts receiving. Default: nothing to do.
    fn start(&self) -> Result<(), PluginError> {
        Ok(())
    }

    /// Turns the agent's message into the parts [`deliver`](Self::deliver) sends, one
    /// platform message (one API call) each: the text rendered and split within the limit,
    /// files and buttons attached where the platform wants them. Runs for the ABI's
    /// `prepare`; see [`prepare`](super::prepare) for the contract. Must be deterministic.
    ///
    /// Default: [`prepare_default`](super::prepare::prepare_default) with
    /// [`INFO`](Self::INFO)'s markup and limit (files and buttons on the last part).
    fn render(&self, message: OutboundMessage) -> Result<Vec<OutboundMessage>, PluginError> {
        super::prepare::prepare_default(message, &Self::INFO)
    }

    /// Posts, edits or reacts with one part made by [`render`](Self::render), exactly as
    /// given (never render or split again); returns the platform message id.
    fn deliver(&self, message: OutboundMessage) -> Result<Option<String>, PluginError>;

    /// Shows a typing indicator once. Default: nothing.
    fn set_typing(&self, _chat_id: &str, _thread_id: Option<&str>) {}

    /// Resolves a DM chat id for a user handle. Default: `UNSUPPORTED` (declare
    /// [`Capabilities::OPEN_DM`] when you implement it).
    fn open_dm(&self, _user_handle: &str) -> Result<String, PluginError> {
        Err(PluginError::unsupported("open_dm"))
    }

    /// Answers a webhook request. Default: 404.
    fn handle_webhook(&self, _request: WebhookRequest) -> Result<WebhookResponse, PluginError> {
        Ok(WebhookResponse::not_found())
    }

    /// Current health. Default: `UNKNOWN`.
    fn health(&self) -> Health {
        Health::unknown()
    }

    /// Extension calls. Default: `UNSUPPORTED`.
    fn extension(&self, method: &str, _args_json: &str) -> Result<String, PluginError> {
        Err(PluginError::unsupported(format_args!(
            "extension method `{method}`"
        )))
    }

    /// Stops receiving. Default: nothing.
    fn teardown(&self) {}

    /// The crate whose `tracing` events count as the plugin's own (logged at `DEBUG`; its
    /// dependencies' only from `INFO`). Default: the crate that defines `Self`.
    #[doc(hidden)]
    fn log_crate() -> &'static str {
        super::lifecycle::crate_of::<Self>()
    }
}

pub(crate) fn ropt_str<'a>(value: ROption<RStr<'a>>) -> Option<&'a str> {
    value.into_option().map(|s| s.as_str())
}
