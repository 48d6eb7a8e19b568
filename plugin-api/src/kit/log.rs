//! Forwarding the plugin's `tracing` events to the host log.
//!
//! A cdylib has its own copy of `tracing` with its own global dispatcher: the host's
//! subscriber never sees the plugin's events. [`install_tracing`] sets, once per loaded
//! library, a global subscriber whose only layer sends each event to
//! [`HostServices::log`](crate::abi::HostServices::log). Spans don't cross; their fields are
//! not included.

use std::fmt::{self, Write as _};
use std::sync::OnceLock;

use tracing::field::{Field, Visit};
use tracing::level_filters::LevelFilter;
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::{Context as LayerContext, SubscriberExt as _};
use tracing_subscriber::util::SubscriberInitExt as _;

use super::Host;
use crate::abi::LogLevel;

/// A [`Layer`] that writes every event to the host's log as `message key=value …`.
pub struct HostLogLayer {
    host: Host,
}

impl HostLogLayer {
    /// A layer forwarding to `host`.
    pub fn new(host: Host) -> Self {
        Self { host }
    }
}

impl<S: Subscriber> Layer<S> for HostLogLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: LayerContext<'_, S>) {
        let meta = event.metadata();
        let mut visitor = LineVisitor::default();
        event.record(&mut visitor);
        self.host
            .log(level_of(*meta.level()), meta.target(), &visitor.finish());
    }
}

fn level_of(level: Level) -> LogLevel {
    match level {
        Level::ERROR => LogLevel::ERROR,
        Level::WARN => LogLevel::WARN,
        Level::INFO => LogLevel::INFO,
        Level::DEBUG => LogLevel::DEBUG,
        Level::TRACE => LogLevel::TRACE,
    }
}

#[derive(Default)]
struct LineVisitor {
    message: String,
    fields: String,
}

impl LineVisitor {
    fn finish(self) -> String {
        if self.message.is_empty() {
            self.fields.trim_start().to_owned()
        } else {
            self.message + &self.fields
        }
    }
}

impl Visit for LineVisitor {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            let _ = write!(self.fields, " {}={value:?}", field.name());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.fields, " {}={value:?}", field.name());
        }
    }
}

static INSTALLED: OnceLock<bool> = OnceLock::new();

/// Makes [`HostLogLayer`] the plugin's global `tracing` subscriber (and bridges the `log`
/// crate), at most once per loaded library. Returns true if this call installed it; false if
/// it was already installed, or another global subscriber was set first.
///
/// The library is shared by all instances of the plugin, so its `tracing` events go to the
/// log of the first instance created. [`export_plugin!`](crate::export_plugin) calls this in
/// `create` with `DEBUG`; the host's own filter decides what is kept.
pub fn install_tracing(host: &Host, max_level: LevelFilter) -> bool {
    let mut installed_now = false;
    INSTALLED.get_or_init(|| {
        installed_now = tracing_subscriber::registry()
            .with(HostLogLayer::new(host.clone()).with_filter(max_level))
            .try_init()
            .is_ok();
        installed_now
    });
    installed_now
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kit::testing::MemoryHost;

    #[test]
    fn events_are_forwarded_with_fields() {
        let mem = MemoryHost::new();
        let subscriber = tracing_subscriber::registry().with(HostLogLayer::new(mem.host()));
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(chat = "c1", attempt = 2, "send failed: {}", "boom");
            tracing::info!(only = true);
        });
        let logs = mem.logs();
        assert_eq!(logs.len(), 2);
        assert_eq!(logs[0].level, LogLevel::WARN);
        assert_eq!(logs[0].message, "send failed: boom chat=\"c1\" attempt=2");
        assert!(logs[0].target.contains("log::tests"));
        assert_eq!(logs[1].message, "only=true");
    }
}
