//! NanoClaw's first-party channels as one plugin library.
//!
//! Each channel is its own crate (an rlib on the plugin kit, tested in-process); this crate
//! only links them into one `cdylib` and exports them with
//! [`export_channels!`](nanoclaw_plugin_api::export_channels). The host loads the library
//! once and creates every configured instance with the channel it names, so eleven channels
//! share one copy of the Rust runtime, the async runtime, and the HTTP and TLS stacks
//! instead of carrying eleven (see docs/PERFORMANCE.md). A third-party channel is still a
//! library of its own, exported with `export_plugin!` (see plugins/example).

nanoclaw_plugin_api::export_channels!(
    #[cfg(feature = "cli")]
    nanoclaw_plugin_cli::CliChannel,
    #[cfg(feature = "telegram")]
    nanoclaw_plugin_telegram::TelegramChannel,
    #[cfg(feature = "slack")]
    nanoclaw_plugin_slack::SlackChannel,
    #[cfg(feature = "discord")]
    nanoclaw_plugin_discord::DiscordChannel,
    #[cfg(feature = "teams")]
    nanoclaw_plugin_teams::TeamsChannel,
    #[cfg(feature = "webex")]
    nanoclaw_plugin_webex::WebexChannel,
    #[cfg(feature = "gchat")]
    nanoclaw_plugin_gchat::GchatChannel,
    #[cfg(feature = "whatsapp")]
    nanoclaw_plugin_whatsapp::WhatsAppChannel,
    #[cfg(feature = "matrix")]
    nanoclaw_plugin_matrix::MatrixChannel,
    #[cfg(feature = "resend")]
    nanoclaw_plugin_resend::ResendChannel,
    #[cfg(feature = "imessage")]
    nanoclaw_plugin_imessage::IMessageChannel,
);
