//! The running plugins as the rest of the host sees them: platforms to deliver to
//! ([`Platforms`]) and channels that reach users by DM ([`DmChannels`]).

use std::sync::Arc;
use std::time::Duration;

use nanoclaw_plugin_api::abi::{Capabilities, OutboundMessage};

use super::{CallError, LoadedPlugins, PluginHandle};
use crate::access::{DmChannels, DmRoute};
use crate::delivery::{Platforms, SendError};
use crate::ids::{ChannelName, PlatformId};

/// Loaded plugin instances keyed by channel name (the `[plugins.<name>]` instance name).
#[derive(Clone)]
pub struct PluginChannels {
    plugins: Arc<LoadedPlugins>,
}

impl PluginChannels {
    pub fn new(plugins: Arc<LoadedPlugins>) -> Self {
        PluginChannels { plugins }
    }

    pub fn get(&self, channel: &ChannelName) -> Option<&PluginHandle> {
        self.plugins.get(channel.as_str())
    }

    pub fn plugins(&self) -> &Arc<LoadedPlugins> {
        &self.plugins
    }

    fn running(&self, channel: &ChannelName) -> Result<&PluginHandle, SendError> {
        self.get(channel).ok_or_else(|| SendError::Transient {
            message: format!("no {channel} plugin is running"),
            retry_after: None,
        })
    }

    /// Shows "typing…" in a chat, if the channel can; failures only matter to the log.
    pub async fn set_typing(&self, channel: &ChannelName, chat: &PlatformId, thread: Option<&str>) {
        if let Some(h) = self
            .get(channel)
            .filter(|h| h.capabilities().contains(Capabilities::TYPING))
            && let Err(e) = h.set_typing(chat.as_str(), thread).await
        {
            tracing::debug!(channel = %channel, error = %e, "typing indicator");
        }
    }
}

impl Platforms for PluginChannels {
    fn capabilities(&self, channel: &ChannelName) -> Option<Capabilities> {
        self.get(channel).map(PluginHandle::capabilities)
    }

    async fn prepare(
        &self,
        channel: &ChannelName,
        message: OutboundMessage,
    ) -> Result<Vec<OutboundMessage>, SendError> {
        let handle = self.running(channel)?;
        handle.prepare(message).await.map_err(send_error)
    }

    async fn send(
        &self,
        channel: &ChannelName,
        message: OutboundMessage,
    ) -> Result<Option<String>, SendError> {
        let handle = self.running(channel)?;
        handle.deliver(message).await.map_err(send_error)
    }
}

/// A failed plugin call as delivery sees it: worth retrying or not.
fn send_error(e: CallError) -> SendError {
    if e.is_transient() {
        SendError::Transient {
            message: e.to_string(),
            retry_after: e.retry_after(),
        }
    } else {
        SendError::Permanent(e.to_string())
    }
}

impl DmChannels for PluginChannels {
    fn dm_route(&self, channel: &ChannelName) -> Option<DmRoute> {
        self.get(channel).map(|h| {
            if h.capabilities().contains(Capabilities::OPEN_DM) {
                DmRoute::OpenDm
            } else {
                DmRoute::Direct
            }
        })
    }

    async fn open_dm(&self, channel: &ChannelName, handle: &str) -> Result<PlatformId, String> {
        let plugin = self
            .get(channel)
            .ok_or_else(|| format!("no {channel} plugin is running"))?;
        let id = tokio::time::timeout(Duration::from_secs(60), plugin.open_dm(handle))
            .await
            .map_err(|_| "open_dm timed out".to_string())?
            .map_err(|e| e.to_string())?;
        PlatformId::parse(&id).map_err(|e| format!("plugin returned an invalid chat id: {e}"))
    }
}
