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
//! * [`AsyncChannel`] + [`Hosted`] ([`lifecycle`]): write `async fn`s instead; `Hosted<C>`
//!   is a `Channel` that owns the runtime, runs `start` then the `run` loop, cancels calls
//!   and ends every task at teardown (`export_plugin!(Hosted<MyChannel>)`). [`Lifecycle`]
//!   gives the channel its stop signal, [`HealthCell`], host calls off the workers, task
//!   tracking and a log that redacts [`Secret`]s.
//! * [`retry`]: one [`Backoff`] (exponential, jittered, capped, reset on success, optional
//!   attempt limit) for sync and async loops, and a [`RateLimiter`] (global and per-chat
//!   token buckets that honour a server's `retry_after`).
//! * [`inbound`]: [`Inbox`] hands events to the host until accepted, skipping and reporting
//!   poison events; [`Dedupe`] keeps a platform's redeliveries from becoming second messages.
//! * [`Secret`]: credentials whose `Debug`/`Display` never show them, with redaction.
//! * `http` (feature `kit-http`): client builder, errors classified into `PluginError`
//!   kinds (`Retry-After` honoured), capped downloads, multipart, `api_base_url` checks.
//! * `webhook` (feature `kit-webhook`): Slack, Svix, Ed25519, Meta and Webex signatures,
//!   RS256 JWTs against a JWKS.
//! * `ws` (feature `kit-ws`): a reconnecting WebSocket client with heartbeats and resume.
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
//!   inside a cdylib); [`Hosted`] builds one for you.
//! * [`HostLogLayer`] / [`install_tracing`]: the plugin's `tracing` events go to the host log.
//! * [`now_ms`], [`encode_button_id`] / [`decode_button_id`], the HMAC verifiers.
//! * [`testing::MemoryHost`]: an in-memory [`HostServices`](crate::abi::HostServices) for
//!   unit tests, and [`testing::send`] to prepare and deliver a message as the host does.
//!   Fake platform servers for integration tests live in the `nanoclaw-fake-platform` crate
//!   (a dev-dependency, never part of a release plugin).
//!
//! The host builds this crate with `kit` only: the heavy dependencies behind `kit-http`,
//! `kit-webhook`, `kit-ws` and `kit-render` (reqwest, rustls, ring, tokio-tungstenite,
//! pulldown-cmark) are compiled only
//! for the plugins that enable them.

mod buttons;
mod channel;
#[doc(hidden)]
pub mod export;
mod format;
mod guard;
mod health;
#[cfg(feature = "kit-http")]
pub mod http;
pub mod inbound;
pub mod lifecycle;
mod log;
pub mod prepare;
#[cfg(feature = "kit-render")]
pub mod render;
mod rendered;
pub mod retry;
mod runtime;
mod secret;
mod signature;
pub mod testing;
mod text;
mod time;
#[cfg(any(feature = "kit-http", feature = "kit-ws"))]
mod tls;
#[cfg(feature = "kit-webhook")]
pub mod webhook;
#[cfg(feature = "kit-ws")]
pub mod ws;

pub use buttons::{
    BUTTON_ID_MAX_BYTES, BUTTON_ID_PREFIX, ButtonChoice, ButtonId, decode_button_id,
    encode_button_id,
};
pub use channel::{Channel, ChannelInfo, Context, Host};
pub use format::{LengthUnit, Markup, TextLimit};
pub use guard::{guard, guard_or, panic_message};
pub use health::HealthCell;
pub use inbound::{Dedupe, Handed, Inbox};
pub use lifecycle::{AsyncChannel, Hosted, Lifecycle, StopSignal, Stopped};
pub use log::{HostLogLayer, install_tracing, with_current_host};
pub use rendered::{ELLIPSIS, MIN_SPLIT_LIMIT, Part, Rendered};
pub use retry::{Backoff, BackoffPolicy, Rate, RateLimiter};
pub use runtime::runtime;
pub use secret::{REDACTED, Secret, redact_all};
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
    pub use super::{
        AsyncChannel, Channel, ChannelInfo, Context, Host, Hosted, LengthUnit, Lifecycle, Markup,
        Secret, StopSignal, tracing,
    };
    pub use crate::abi::{
        ActionEvent, Attachment, Button, Capabilities, DeletionEvent, ErrorKind, Health,
        HealthStatus, InboundEvent, LogLevel, OutboundFile, OutboundMessage, OutboundOp,
        PluginError, QuotedMessage, Sender, WebhookRequest, WebhookResponse,
    };
    pub use abi_stable::std_types::{RNone, ROption, RSome, RString, RVec, Tuple2};
}
