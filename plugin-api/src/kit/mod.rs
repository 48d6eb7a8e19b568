//! The plugin author's kit: everything needed to write a channel with only this crate.
//!
//! ```
//! use nanoclaw_plugin_api::kit::prelude::*;
//!
//! struct MyChannel {
//!     host: Host,
//! }
//!
//! impl Channel for MyChannel {
//!     const INFO: ChannelInfo = ChannelInfo::new("My channel", "mychan", "0.1.0")
//!         .capabilities(Capabilities::WEBHOOK);
//!
//!     fn create(ctx: Context) -> Result<Self, PluginError> {
//!         Ok(Self { host: ctx.host })
//!     }
//!
//!     fn deliver(&self, m: OutboundMessage) -> Result<Option<String>, PluginError> {
//!         tracing::info!(chat = m.chat_id.as_str(), "would post {} chars", m.text.len());
//!         Ok(None)
//!     }
//! }
//!
//! nanoclaw_plugin_api::export_plugin!(MyChannel);
//! # fn main() {}
//! ```
//!
//! * [`Channel`]: the safe trait to implement; [`export_plugin!`](crate::export_plugin)
//!   turns it into the exported root module, with a panic guard around every entry point.
//! * Outbound text: [`Channel::render`] (the ABI's `prepare`) turns the agent's message into
//!   platform-ready parts that [`Channel::deliver`] sends as given; see [`prepare`] for the
//!   contract and [`prepare::prepare_default`] for what the default does with
//!   [`ChannelInfo`]'s [`Markup`], `max_text_length` and [`LengthUnit`].
//! * `render` (feature `kit-render`): the agent's Markdown parsed once into a
//!   `render::Document` and rendered per platform: Telegram HTML, Slack mrkdwn,
//!   Discord Markdown, Teams/Webex Markdown, WhatsApp, Matrix HTML, email HTML, plain text.
//! * [`Rendered`]: rendered text, split after rendering ([`Rendered::split`]) in the
//!   platform's unit without breaking a tag, an entity, a surrogate pair or (where it can) a
//!   URL; tags open at a cut are closed and reopened. [`Rendered::verbatim`] needs no
//!   feature. [`split_text`] is the older plain splitter by characters.
//! * [`guard`]: `catch_unwind` → [`PluginError`](crate::abi::PluginError) with kind `PANICKED`. A panic that crossed
//!   the boundary would end the host process.
//! * [`runtime`]: a small tokio runtime owned by the plugin (the host's runtime is invisible
//!   inside a cdylib).
//! * [`HostLogLayer`] / [`install_tracing`]: the plugin's `tracing` events go to the host log.
//! * [`now_ms`], [`encode_button_id`] / [`decode_button_id`], the HMAC verifiers.
//! * [`testing::MemoryHost`]: an in-memory [`HostServices`](crate::abi::HostServices) for
//!   unit tests, and [`testing::send`] to prepare and deliver a message as the host does.
//!   Fake platform servers for integration tests live in the `nanoclaw-fake-platform` crate
//!   (a dev-dependency, never part of a release plugin).

mod buttons;
mod channel;
#[doc(hidden)]
pub mod export;
mod format;
mod guard;
mod log;
pub mod prepare;
#[cfg(feature = "kit-render")]
pub mod render;
mod rendered;
mod runtime;
mod signature;
pub mod testing;
mod text;
mod time;

pub use buttons::{
    BUTTON_ID_MAX_BYTES, BUTTON_ID_PREFIX, ButtonChoice, ButtonId, decode_button_id,
    encode_button_id,
};
pub use channel::{Channel, ChannelInfo, Context, Host};
pub use format::{LengthUnit, Markup, TextLimit};
pub use guard::{guard, guard_or, panic_message};
pub use log::{HostLogLayer, install_tracing, with_current_host};
pub use rendered::{ELLIPSIS, MIN_SPLIT_LIMIT, Part, Rendered};
pub use runtime::runtime;
pub use signature::{hmac_sha1_hex, hmac_sha256_hex, verify_hmac_sha1_hex, verify_hmac_sha256_hex};
pub use text::split_text;
pub use time::now_ms;

/// Re-exported for authors: `serde_json` is what settings and `extra_json` speak.
pub use serde_json;
/// Re-exported for authors who need the runtime type.
pub use tokio;
/// Re-exported for authors: log with `tracing::info!` etc. after [`install_tracing`].
pub use tracing;

/// `use nanoclaw_plugin_api::kit::prelude::*;` brings in what a channel implementation needs.
pub mod prelude {
    pub use super::{Channel, ChannelInfo, Context, Host, LengthUnit, Markup, tracing};
    pub use crate::abi::{
        ActionEvent, Attachment, Button, Capabilities, ErrorKind, Health, HealthStatus,
        InboundEvent, LogLevel, OutboundFile, OutboundMessage, OutboundOp, PluginError,
        QuotedMessage, Sender, WebhookRequest, WebhookResponse,
    };
    pub use abi_stable::std_types::{RNone, ROption, RSome, RString, RVec, Tuple2};
}
