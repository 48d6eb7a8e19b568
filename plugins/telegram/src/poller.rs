//! The long-poll loop: `getUpdates` → host, with the offset in the host's state store.
//!
//! Delivery guarantee: an update's offset is stored (`kv_set("offset")`) only after the host
//! accepted it (`on_inbound` / `on_action` returned `Ok`), and Telegram is only told to drop
//! it (the next `getUpdates` with a higher `offset`) after that. So a crash or a stop at any
//! point loses nothing and re-reads at most the one update that was handed over but not yet
//! recorded; the host dedupes that by message id. A refused update is retried with backoff
//! (the kit's [`Inbox`]); one the host refuses `skip_after_refusals` times, or refuses as
//! invalid, is poison: it is skipped, logged and reported in the health detail, and the
//! offset moves past it so the updates behind it are not blocked.

use std::sync::Arc;
use std::time::Duration;

use nanoclaw_plugin_api::kit::inbound::{Handed, Inbox};
use nanoclaw_plugin_api::kit::prelude::*;
use nanoclaw_plugin_api::kit::{Backoff, BackoffPolicy, Stopped};
use serde_json::{Value, json};

use crate::Shared;
use crate::api::{ApiError, File, Update};
use crate::inbound::{FileRef, Inbound, classify};
use crate::outbound::CALL_TIMEOUT;

/// Host state-store key of the next `getUpdates` offset.
pub(crate) const OFFSET_KEY: &str = "offset";
/// The Bot API serves files up to 20 MB through `getFile`.
pub(crate) const MAX_DOWNLOAD_BYTES: u64 = 20 * 1024 * 1024;
const DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(60);
const DOWNLOAD_ATTEMPTS: u32 = 3;

/// The updates we ask for (see the crate docs for why not `edited_message`).
pub(crate) const ALLOWED_UPDATES: [&str; 2] = ["message", "callback_query"];

/// Between failed polls and downloads: 1 s doubling to 30 s.
fn backoff_policy() -> BackoffPolicy {
    BackoffPolicy::exponential(Duration::from_secs(1), Duration::from_secs(30))
}

/// Reads the stored offset (`None` = start from whatever Telegram has pending).
pub(crate) fn load_offset(host: &Host) -> Result<Option<i64>, PluginError> {
    match host.kv_get(OFFSET_KEY)? {
        None => Ok(None),
        Some(text) => text.trim().parse::<i64>().map(Some).map_err(|_| {
            PluginError::other(format!(
                "stored getUpdates offset `{text}` is not a number; delete the key `{OFFSET_KEY}` \
                 of this plugin instance to start over"
            ))
        }),
    }
}

/// Runs until `stop` fires, or the token is refused.
pub(crate) async fn run(shared: Arc<Shared>, offset: Option<i64>, stop: StopSignal) {
    let mut poller = Poller {
        inbox: Inbox::with_policy(&shared.life, shared.hand_over.clone()),
        shared,
        offset,
        backoff: backoff_policy().start(),
        failures: 0,
        stop,
    };
    let _ = poller.run().await;
    poller.shared.life.debug("poll loop ended");
}

struct Poller {
    shared: Arc<Shared>,
    inbox: Inbox,
    offset: Option<i64>,
    backoff: Backoff,
    /// Consecutive failed `getUpdates` calls.
    failures: u32,
    stop: StopSignal,
}

impl Poller {
    async fn run(&mut self) -> Result<(), Stopped> {
        loop {
            let batch = self.stop.run(self.get_updates()).await?;
            match batch {
                Ok(updates) => {
                    let health = self.shared.life.health();
                    health.ingested();
                    if self.failures > 0 {
                        self.shared.life.info(format!(
                            "getUpdates works again after {} failed attempt(s)",
                            self.failures
                        ));
                    }
                    self.failures = 0;
                    self.backoff.reset();
                    health.ok();
                    for raw in updates {
                        self.handle(raw).await?;
                    }
                }
                Err(error) => self.poll_failed(error).await?,
            }
        }
    }

    async fn get_updates(&self) -> Result<Vec<Value>, ApiError> {
        let timeout = self.shared.poll_timeout_secs;
        let mut params = json!({
            "timeout": timeout,
            "limit": 100,
            "allowed_updates": ALLOWED_UPDATES,
        });
        if let Some(offset) = self.offset {
            params["offset"] = json!(offset);
        }
        // Telegram holds the request up to `timeout`; allow for the network on top.
        let request_timeout = Duration::from_secs(timeout + 15);
        self.shared
            .api
            .call::<Vec<Value>>("getUpdates", &params, request_timeout)
            .await
    }

    async fn poll_failed(&mut self, error: ApiError) -> Result<(), Stopped> {
        self.failures += 1;
        let log = &self.shared.life;
        let health = self.shared.life.health();
        if error.is_unauthorized() {
            let reason = format!(
                "Telegram rejected the bot token ({error}); polling stopped. Check \
                 TELEGRAM_BOT_TOKEN (or the bot_token setting) and restart"
            );
            log.error(&reason);
            health.down(reason);
            // Nothing will work until an operator fixes the token: wait for the stop.
            self.stop.stopped().await;
            return Err(Stopped);
        }
        let delay = match &error {
            ApiError::Api {
                code: 429,
                retry_after_secs: Some(secs),
                ..
            } => Duration::from_secs((*secs).max(1)),
            // The policy has no attempt limit: the fallback is never used.
            _ => self.backoff.next_delay().unwrap_or(Duration::from_secs(30)),
        };
        let what = match error.code() {
            Some(409) => format!(
                "409 Conflict: another program is polling this bot, or a webhook is set ({error}). \
                 Stop the other instance; retrying in {}s",
                delay.as_secs()
            ),
            Some(429) => format!("rate limited by Telegram; retrying in {}s", delay.as_secs()),
            _ => format!(
                "getUpdates failed: {error}; retrying in {}s",
                delay.as_secs()
            ),
        };
        // The first failure and every tenth are warnings; the rest would only repeat them.
        if self.failures == 1 || self.failures.is_multiple_of(10) {
            log.warn(&what);
        } else {
            log.debug(&what);
        }
        health.degraded(what);
        self.stop.sleep(delay).await
    }

    /// Hands one update to the host until it is accepted (or skipped as poison), then
    /// records the offset.
    async fn handle(&mut self, raw: Value) -> Result<(), Stopped> {
        let Some(update_id) = raw.get("update_id").and_then(Value::as_i64) else {
            self.shared
                .life
                .warn("skipping an update without update_id");
            return Ok(());
        };
        if self.offset.is_some_and(|offset| update_id < offset) {
            return Ok(()); // already handled (Telegram re-sent it)
        }
        let bot = self.shared.bot_identity();
        let allowed = self.shared.allowed_chats.as_deref();
        let inbound = match serde_json::from_value::<Update>(raw) {
            Ok(update) => classify(update, &bot, allowed),
            Err(e) => Inbound::Skip(format!("update {update_id} is not understood: {e}")),
        };
        match inbound {
            Inbound::Skip(reason) => self.shared.life.debug(format!("skipped {reason}")),
            Inbound::Message { mut event, files } => {
                for file in files {
                    let attachment = self.fetch(file).await?;
                    event.attachments.push(attachment);
                }
                let handed = self.inbox.deliver(*event).await?;
                self.note_skip(update_id, &handed);
            }
            Inbound::Click { query_id, event } => {
                if let Some(event) = event {
                    let handed = self.inbox.action(*event).await?;
                    self.note_skip(update_id, &handed);
                }
                // Stops the spinner on the user's button. Best effort: a late answer only
                // fails with "query is too old".
                let params = json!({"callback_query_id": query_id});
                if let Err(e) = self
                    .shared
                    .api
                    .call::<Value>("answerCallbackQuery", &params, CALL_TIMEOUT)
                    .await
                {
                    self.shared
                        .life
                        .debug(format!("answerCallbackQuery failed: {e}"));
                }
            }
        }
        self.offset = Some(update_id + 1);
        self.save_offset(update_id + 1).await
    }

    fn note_skip(&self, update_id: i64, handed: &Handed) {
        if let Handed::Skipped { refusals, .. } = handed {
            self.shared.life.warn(format!(
                "update {update_id} skipped after {refusals} refusal(s); moving the offset past it"
            ));
        }
    }

    async fn save_offset(&self, offset: i64) -> Result<(), Stopped> {
        let value = offset.to_string();
        let saved = self
            .shared
            .life
            .host_call(move |host| host.kv_set(OFFSET_KEY, &value, None))
            .await?;
        if let Err(error) = saved {
            // The in-memory offset still moves on; after a restart the host dedupes what is
            // re-read.
            self.shared.life.warn(format!(
                "could not store the getUpdates offset {offset}: {error}"
            ));
        }
        Ok(())
    }

    /// Downloads one inbound file into an attachment. Failures keep the metadata (the
    /// message is worth more than the file) after a few attempts.
    async fn fetch(&self, file: FileRef) -> Result<Attachment, Stopped> {
        let mut attachment = Attachment {
            kind: file.kind.into(),
            name: file.name.as_str().into(),
            mime_type: file.mime_type.as_str().into(),
            size: file.size.unwrap_or(0),
            ..Attachment::default()
        };
        if file.size.is_some_and(|size| size > MAX_DOWNLOAD_BYTES) {
            self.shared.life.info(format!(
                "not downloading {} `{}` ({} bytes): the Bot API serves files up to 20 MB",
                file.kind,
                file.name,
                file.size.unwrap_or(0)
            ));
            return Ok(attachment);
        }
        let mut backoff = backoff_policy().max_attempts(DOWNLOAD_ATTEMPTS).start();
        loop {
            match self.stop.run(self.download(&file.file_id)).await? {
                Ok(Some(data)) => {
                    attachment.size = data.len() as u64;
                    attachment.data = data.into();
                    return Ok(attachment);
                }
                Ok(None) => return Ok(attachment),
                Err(e) => {
                    let permanent = matches!(
                        e,
                        ApiError::Api {
                            code: 400 | 404,
                            ..
                        }
                    ) || matches!(e, ApiError::Decode(_));
                    let retry = if permanent {
                        None
                    } else {
                        backoff.next_delay()
                    };
                    let Some(delay) = retry else {
                        self.shared.life.warn(format!(
                            "could not download {} `{}`: {e}; passing it on without content",
                            file.kind, file.name
                        ));
                        return Ok(attachment);
                    };
                    self.stop.sleep(delay).await?;
                }
            }
        }
    }

    /// `getFile` then the download. `Ok(None)` when Telegram gives no path (too big).
    async fn download(&self, file_id: &str) -> Result<Option<Vec<u8>>, ApiError> {
        let api = &self.shared.api;
        let file: File = api
            .call("getFile", &json!({"file_id": file_id}), CALL_TIMEOUT)
            .await?;
        if file.file_size.is_some_and(|size| size > MAX_DOWNLOAD_BYTES) {
            return Ok(None);
        }
        let Some(path) = file.file_path else {
            return Ok(None);
        };
        api.download(&path, MAX_DOWNLOAD_BYTES, DOWNLOAD_TIMEOUT)
            .await
            .map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_offset_must_be_a_number() {
        let mem = nanoclaw_plugin_api::kit::testing::MemoryHost::new();
        let host = mem.host();
        assert_eq!(load_offset(&host).expect("empty"), None);
        host.kv_set(OFFSET_KEY, "42", None).expect("set");
        assert_eq!(load_offset(&host).expect("42"), Some(42));
        host.kv_set(OFFSET_KEY, "x", None).expect("set");
        assert!(load_offset(&host).is_err());
    }
}
