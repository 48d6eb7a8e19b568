//! The `/sync` loop: batches in, events to the host, the `since` token in the host's state
//! store.
//!
//! Delivery guarantee: a batch's `next_batch` is stored (`kv_set("since")`) only after every
//! event in it was handed over and accepted (or skipped as poison), and each event is handed
//! over once (the kit's persisted dedupe by event id). A crash or stop at any point re-reads
//! at most the one batch that was not recorded, and its events already handed over are not
//! handed over again. An event the host keeps refusing is skipped after
//! `skip_after_refusals` attempts and reported, so it never blocks the ones behind it.
//!
//! Redactions (`m.room.redaction`) are handed over as deletions (`on_deleted`) of the
//! redacted event, once per redaction.
//!
//! A room whose timeline comes `limited` (more than [`TIMELINE_LIMIT`] events since the last
//! sync, e.g. after a long outage) has a gap: its missing events are fetched with
//! `/rooms/{room}/messages` back to the previous position before the batch is handed over.

use std::sync::Arc;
use std::time::Duration;

use nanoclaw_plugin_api::kit::inbound::{Claimed, Handed, Inbox};
use nanoclaw_plugin_api::kit::prelude::*;
use nanoclaw_plugin_api::kit::{Backoff, BackoffPolicy, Stopped};
use serde_json::{Value, json};

use crate::api::ApiError;
use crate::events::{self, Event, Message, classify, invite_of, option_number};
use crate::{Shared, card_key};

/// Host state-store key of the `since` token.
pub(crate) const SINCE_KEY: &str = "since";
/// Timeline events per room and batch.
const TIMELINE_LIMIT: u64 = 100;
/// Events fetched to fill one gap at most.
const MAX_GAP_EVENTS: usize = 1000;
/// The quoted text of a reply, at most.
const MAX_QUOTE_CHARS: usize = 1000;

/// The sync filter: no presence, members loaded lazily.
fn filter() -> String {
    json!({
        "presence": {"not_types": ["*"]},
        "room": {
            "timeline": {"limit": TIMELINE_LIMIT},
            "state": {"lazy_load_members": true},
            "ephemeral": {"not_types": ["*"]},
        },
    })
    .to_string()
}

fn backoff_policy() -> BackoffPolicy {
    BackoffPolicy::exponential(Duration::from_secs(1), Duration::from_secs(30))
}

/// Runs until `stop` fires, or the token is refused.
pub(crate) async fn run(shared: Arc<Shared>, since: Option<String>, stop: StopSignal) {
    let mut syncer = Syncer {
        shared,
        since,
        backoff: backoff_policy().start(),
        failures: 0,
        stop,
    };
    let _ = syncer.run().await;
    syncer.shared.life.debug("sync loop ended");
}

struct Syncer {
    shared: Arc<Shared>,
    since: Option<String>,
    backoff: Backoff,
    failures: u32,
    stop: StopSignal,
}

impl Syncer {
    async fn run(&mut self) -> Result<(), Stopped> {
        let filter = filter();
        loop {
            // The first sync returns at once: it only learns the rooms.
            let timeout = if self.since.is_some() {
                self.shared.sync_timeout_ms
            } else {
                0
            };
            let since = self.since.clone();
            let batch = self
                .stop
                .run(self.shared.api.sync(since.as_deref(), &filter, timeout))
                .await?;
            match batch {
                Ok(batch) => {
                    let health = self.shared.life.health();
                    health.ingested();
                    if self.failures > 0 {
                        self.shared.life.info(format!(
                            "/sync works again after {} failed attempt(s)",
                            self.failures
                        ));
                    }
                    self.failures = 0;
                    self.backoff.reset();
                    health.ok();
                    self.batch(batch).await?;
                }
                Err(error) => self.failed(error).await?,
            }
        }
    }

    async fn failed(&mut self, error: ApiError) -> Result<(), Stopped> {
        self.failures += 1;
        let life = &self.shared.life;
        if error.is_unauthorized() {
            let reason = format!(
                "the homeserver rejected the access token ({error}); sync stopped. Log in as \
                 the bot again, update MATRIX_ACCESS_TOKEN and restart"
            );
            life.error(&reason);
            life.health().down(reason);
            self.stop.stopped().await;
            return Err(Stopped);
        }
        let delay = error
            .retry_after()
            .unwrap_or_else(|| self.backoff.next_delay().unwrap_or(Duration::from_secs(30)));
        let what = format!("/sync failed: {error}; retrying in {}s", delay.as_secs());
        if self.failures == 1 || self.failures.is_multiple_of(10) {
            life.warn(&what);
        } else {
            life.debug(&what);
        }
        life.health().degraded(what);
        self.stop.sleep(delay).await
    }

    async fn batch(&mut self, batch: Value) -> Result<(), Stopped> {
        let Some(next) = batch
            .get("next_batch")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty() && t.len() <= 1024)
            .map(str::to_owned)
        else {
            self.shared
                .life
                .warn("a /sync answer without next_batch; retrying");
            return self.stop.sleep(Duration::from_secs(1)).await;
        };
        let first = self.since.is_none();
        self.account_data(&batch);
        let empty = serde_json::Map::new();
        let joined = batch
            .get("rooms")
            .and_then(|r| r.get("join"))
            .and_then(Value::as_object)
            .unwrap_or(&empty);
        for (room, data) in joined {
            if !events::is_room_id(room) {
                continue;
            }
            self.learn_state(room, data.get("state"));
            self.learn_state(room, data.get("timeline"));
            if first {
                continue;
            }
            let mut timeline: Vec<Value> = data
                .get("timeline")
                .and_then(|t| t.get("events"))
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let limited = data
                .get("timeline")
                .and_then(|t| t.get("limited"))
                .and_then(Value::as_bool)
                .unwrap_or(false);
            if limited {
                let prev = data
                    .get("timeline")
                    .and_then(|t| t.get("prev_batch"))
                    .and_then(Value::as_str);
                let mut gap = self.fill_gap(room, prev).await?;
                gap.append(&mut timeline);
                timeline = gap;
            }
            for event in &timeline {
                self.event(room, event).await?;
            }
        }
        let invited = batch
            .get("rooms")
            .and_then(|r| r.get("invite"))
            .and_then(Value::as_object)
            .unwrap_or(&empty);
        for (room, data) in invited {
            if events::is_room_id(room) {
                self.invite(room, data).await?;
            }
        }
        self.since = Some(next.clone());
        self.save_since(next).await
    }

    /// The events between the last position and a limited timeline, oldest first.
    async fn fill_gap(&self, room: &str, prev: Option<&str>) -> Result<Vec<Value>, Stopped> {
        let (Some(prev), Some(since)) = (prev, self.since.as_deref()) else {
            return Ok(Vec::new());
        };
        let mut from = prev.to_owned();
        let mut gap = Vec::new();
        loop {
            let page = self
                .stop
                .run(self.shared.api.get(
                    &["rooms", room, "messages"],
                    &[
                        ("from", from.as_str()),
                        ("to", since),
                        ("dir", "b"),
                        ("limit", "100"),
                    ],
                ))
                .await?;
            let page = match page {
                Ok(page) => page,
                Err(e) => {
                    self.shared.life.warn(format!(
                        "could not fetch the events of {room} missed during a gap ({e}); \
                         some may be lost"
                    ));
                    break;
                }
            };
            let chunk = page
                .get("chunk")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let end = page.get("end").and_then(Value::as_str).map(str::to_owned);
            let done = chunk.is_empty() || end.is_none();
            gap.extend(chunk);
            if done || gap.len() >= MAX_GAP_EVENTS {
                break;
            }
            from = end.unwrap_or_default();
        }
        gap.reverse();
        Ok(gap)
    }

    fn account_data(&self, batch: &Value) {
        let Some(list) = batch
            .get("account_data")
            .and_then(|a| a.get("events"))
            .and_then(Value::as_array)
        else {
            return;
        };
        for event in list {
            if event.get("type").and_then(Value::as_str) != Some("m.direct") {
                continue;
            }
            let direct = events::direct_rooms(event.get("content").unwrap_or(&Value::Null));
            let mut rooms = self.shared.rooms();
            for (user, list) in direct {
                for room in list {
                    rooms.add_dm(&user, &room, false);
                }
            }
        }
    }

    /// Room names and member display names from state events.
    fn learn_state(&self, room: &str, section: Option<&Value>) {
        let Some(list) = section
            .and_then(|s| s.get("events"))
            .and_then(Value::as_array)
        else {
            return;
        };
        let mut rooms = self.shared.rooms();
        for event in list {
            let kind = event.get("type").and_then(Value::as_str);
            let key = event.get("state_key").and_then(Value::as_str);
            let content = event.get("content");
            match (kind, key) {
                (Some("m.room.name"), Some("")) => {
                    if let Some(name) = content
                        .and_then(|c| c.get("name"))
                        .and_then(Value::as_str)
                        .filter(|n| !n.trim().is_empty())
                    {
                        rooms
                            .names
                            .insert(room.to_owned(), name.chars().take(255).collect());
                    }
                }
                (Some("m.room.member"), Some(user)) if events::is_user_id(user) => {
                    if let Some(name) = content
                        .and_then(|c| c.get("displayname"))
                        .and_then(Value::as_str)
                        .filter(|n| !n.trim().is_empty())
                    {
                        rooms.members.insert(
                            (room.to_owned(), user.to_owned()),
                            name.chars().take(255).collect(),
                        );
                    }
                }
                _ => {}
            }
        }
    }

    async fn invite(&self, room: &str, data: &Value) -> Result<(), Stopped> {
        let me = self.shared.me();
        let Some((inviter, direct)) = invite_of(data, &me) else {
            return Ok(());
        };
        let life = &self.shared.life;
        if !self.shared.accepts_invite_from(&inviter) {
            life.info(format!(
                "declining the invite of {inviter} to {room} (auto_join; add them to \
                 invite_allowlist to accept)"
            ));
            let left = self
                .stop
                .run(self.shared.api.post(&["rooms", room, "leave"], &json!({})))
                .await?;
            if let Err(e) = left {
                life.debug(format!("declining the invite to {room}: {e}"));
            }
            return Ok(());
        }
        let joined = self
            .stop
            .run(self.shared.api.post(&["join", room], &json!({})))
            .await?;
        if let Err(e) = joined {
            life.warn(format!("could not join {room} (invited by {inviter}): {e}"));
            return Ok(());
        }
        life.info(format!(
            "joined {room} on the invite of {inviter}{}",
            if direct { " (a direct chat)" } else { "" }
        ));
        if direct {
            self.shared.rooms().add_dm(&inviter, room, true);
            let recorded = self
                .stop
                .run(self.shared.record_direct(&inviter, room))
                .await?;
            if let Err(e) = recorded {
                life.warn(format!("could not record {room} in m.direct: {e}"));
            }
        }
        Ok(())
    }

    async fn event(&self, room: &str, event: &Value) -> Result<(), Stopped> {
        let me = self.shared.me();
        let life = &self.shared.life;
        match classify(event, &me) {
            Event::Skip(reason) => life.debug(format!("skipped {reason}")),
            Event::Encrypted { event_id, .. } => {
                if self.shared.rooms().encrypted.insert(room.to_owned()) {
                    life.warn(format!(
                        "room {room} is end-to-end encrypted (event {event_id}): this bot has \
                         no keys and cannot read it. Use an unencrypted room"
                    ));
                }
            }
            Event::Redaction {
                event_id, redacts, ..
            } => {
                let (chat, _) = self.chat_of(room);
                let deletion = DeletionEvent {
                    chat_id: chat.into(),
                    thread_id: RNone,
                    message_id: redacts.into(),
                };
                self.once(&format!("redaction:{event_id}"), |inbox| async move {
                    inbox.deleted(deletion).await
                })
                .await?;
            }
            Event::Reaction {
                event_id,
                sender,
                target,
                key,
            } => self.reaction(room, event_id, sender, target, key).await?,
            Event::Message(message) => self.message(room, *message).await?,
        }
        Ok(())
    }

    /// The chat of a room (a DM: the other user), and whether it is a group.
    fn chat_of(&self, room: &str) -> (String, bool) {
        match self.shared.rooms().dm_user(room) {
            Some(user) => (user.to_owned(), false),
            None => (room.to_owned(), true),
        }
    }

    fn sender(&self, room: &str, user: &str) -> Sender {
        let display = self
            .shared
            .rooms()
            .members
            .get(&(room.to_owned(), user.to_owned()))
            .cloned();
        Sender {
            handle: user.into(),
            display_name: display.map(RString::from).into(),
            is_bot: false,
        }
    }

    /// An event of the room, for a reply's quote (best effort).
    async fn fetch_event(&self, room: &str, event_id: &str) -> Result<Option<Value>, Stopped> {
        let got = self
            .stop
            .run(
                self.shared
                    .api
                    .get(&["rooms", room, "event", event_id], &[]),
            )
            .await?;
        Ok(got.ok())
    }

    async fn reaction(
        &self,
        room: &str,
        event_id: String,
        sender: String,
        target: String,
        key: String,
    ) -> Result<(), Stopped> {
        // Only reactions to the bot's messages are news for an agent.
        let Some(original) = self.fetch_event(room, &target).await? else {
            return Ok(());
        };
        let me = self.shared.me();
        if original.get("sender").and_then(Value::as_str) != Some(me.user_id.as_str()) {
            self.shared
                .life
                .debug(format!("reaction {event_id} is not on a message of ours"));
            return Ok(());
        }
        let (chat, is_group) = self.chat_of(room);
        let quoted = quote(&original, &target);
        let event = InboundEvent {
            chat_id: chat.into(),
            chat_name: self.chat_name(room, is_group),
            thread_id: RNone,
            message_id: event_id.into(),
            sender: RSome(self.sender(room, &sender)),
            is_group,
            mentioned: false,
            text: format!("(reacted {key})").into(),
            reply_to: RSome(quoted),
            extra_json: json!({"room_id": room, "reaction": key, "reaction_to": target})
                .to_string()
                .into(),
            ..InboundEvent::default()
        };
        let _ = self
            .shared
            .inbox
            .deliver_once(&self.shared.dedupe, event)
            .await?;
        Ok(())
    }

    fn chat_name(&self, room: &str, is_group: bool) -> ROption<RString> {
        if !is_group {
            return RNone;
        }
        self.shared
            .rooms()
            .names
            .get(room)
            .cloned()
            .map(RString::from)
            .into()
    }

    async fn message(&self, room: &str, message: Message) -> Result<(), Stopped> {
        let (chat, is_group) = self.chat_of(room);
        if !is_group && chat == message.sender {
            // Answers go to the DM room the user last wrote in.
            self.shared.rooms().add_dm(&chat, room, true);
        }
        // A numbered reply to a card is a click.
        if let (Some(card), Some(n)) = (&message.reply_to, option_number(&message.text))
            && message.edit_of.is_none()
            && let Some(action_id) = self.card_option(room, card, n).await?
        {
            let action = ActionEvent {
                chat_id: chat.into(),
                thread_id: message.thread.clone().map(RString::from).into(),
                message_id: card.as_str().into(),
                clicker: self.sender(room, &message.sender),
                action_id: action_id.into(),
                extra_json: json!({"room_id": room, "event_id": message.event_id})
                    .to_string()
                    .into(),
            };
            return self.action_once(&message.event_id, action).await;
        }
        let me = self.shared.me();
        let mut mentioned = message.mentions_me || !is_group;
        let mut reply_to = RNone;
        if let Some(target) = &message.reply_to
            && let Some(original) = self.fetch_event(room, target).await?
        {
            if original.get("sender").and_then(Value::as_str) == Some(me.user_id.as_str()) {
                mentioned = true;
            }
            reply_to = RSome(quote(&original, target));
        } else if let Some(target) = &message.reply_to {
            reply_to = RSome(QuotedMessage {
                message_id: RSome(target.as_str().into()),
                ..QuotedMessage::default()
            });
        }
        let mut attachments = Vec::new();
        if let Some(media) = &message.media {
            attachments.push(self.download(media).await?);
        }
        let mut extra = json!({"room_id": room});
        if let Some(original) = &message.edit_of {
            extra["edit_of"] = json!(original);
        }
        let event = InboundEvent {
            chat_id: chat.into(),
            chat_name: self.chat_name(room, is_group),
            thread_id: message.thread.clone().map(RString::from).into(),
            message_id: message.event_id.as_str().into(),
            sender: RSome(self.sender(room, &message.sender)),
            is_group,
            mentioned,
            text: message.text.as_str().into(),
            attachments: attachments.into(),
            reply_to,
            timestamp_ms: message.timestamp_ms,
            extra_json: extra.to_string().into(),
        };
        let _ = self
            .shared
            .inbox
            .deliver_once(&self.shared.dedupe, event)
            .await?;
        Ok(())
    }

    /// The action id of option `n` of the card `event_id`, if it is a card of ours.
    async fn card_option(
        &self,
        room: &str,
        event_id: &str,
        n: usize,
    ) -> Result<Option<String>, Stopped> {
        let key = card_key(room, event_id);
        let stored = self
            .shared
            .life
            .host_call(move |host| host.kv_get(&key))
            .await?;
        let ids: Vec<String> = match stored {
            Ok(Some(text)) => serde_json::from_str(&text).unwrap_or_default(),
            _ => return Ok(None),
        };
        Ok(ids.get(n - 1).cloned())
    }

    /// Hands a click over once per answering event.
    async fn action_once(&self, event_id: &str, action: ActionEvent) -> Result<(), Stopped> {
        self.once(&format!("action:{event_id}"), |inbox| async move {
            inbox.action(action).await
        })
        .await
    }

    /// Runs a hand-over once per `id` (the kit's persisted dedupe).
    async fn once<F, Fut>(&self, id: &str, hand_over: F) -> Result<(), Stopped>
    where
        F: FnOnce(Inbox) -> Fut,
        Fut: Future<Output = Result<Handed, Stopped>>,
    {
        let dedupe = self.shared.dedupe.clone();
        let id = id.to_owned();
        let claim = self
            .shared
            .life
            .host_call(move |_| dedupe.claim(&id))
            .await?;
        let claim = match claim {
            Ok(Claimed::New(claim)) => Some(claim),
            Ok(Claimed::Seen | Claimed::InProgress) => return Ok(()),
            Err(_) => None,
        };
        let _ = hand_over(self.shared.inbox.clone()).await?;
        if let Some(claim) = claim {
            let _ = self.shared.life.host_call(move |_| claim.commit()).await?;
        }
        Ok(())
    }

    /// Downloads a file; on failure the attachment keeps its name, type and size.
    async fn download(&self, media: &events::Media) -> Result<Attachment, Stopped> {
        let mut attachment = Attachment {
            kind: media.kind.into(),
            name: media.name.as_str().into(),
            mime_type: media.mime_type.as_str().into(),
            size: media.size.unwrap_or(0),
            ..Attachment::default()
        };
        let max = self.shared.max_download_bytes;
        if media.size.is_some_and(|size| size > max) {
            self.shared.life.info(format!(
                "not downloading `{}` ({} bytes): larger than max_download_bytes",
                media.name,
                media.size.unwrap_or(0)
            ));
            return Ok(attachment);
        }
        let got = self
            .stop
            .run(
                self.shared
                    .api
                    .download(&media.server, &media.media_id, max),
            )
            .await?;
        match got {
            Ok((data, content_type)) => {
                attachment.size = data.len() as u64;
                attachment.data = data.into();
                if attachment.mime_type.is_empty()
                    && let Some(t) = content_type
                {
                    attachment.mime_type = t.chars().take(127).collect::<String>().into();
                }
            }
            Err(e) => self.shared.life.warn(format!(
                "could not download `{}` (mxc://{}/{}): {e}; passing it on without content",
                media.name, media.server, media.media_id
            )),
        }
        Ok(attachment)
    }

    async fn save_since(&self, since: String) -> Result<(), Stopped> {
        let saved = self
            .shared
            .life
            .host_call(move |host| host.kv_set(SINCE_KEY, &since, None))
            .await?;
        if let Err(error) = saved {
            self.shared.life.warn(format!(
                "could not store the sync position: {error}; after a restart the events \
                 since the last stored one are read again (and deduped)"
            ));
        }
        Ok(())
    }
}

/// A quoted message from a fetched event.
fn quote(original: &Value, event_id: &str) -> QuotedMessage {
    let content = original.get("content");
    let body = content
        .and_then(|c| c.get("m.new_content").or(Some(c)))
        .and_then(|c| c.get("body"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let text: String = events::strip_reply_fallback(body)
        .chars()
        .take(MAX_QUOTE_CHARS)
        .collect();
    QuotedMessage {
        message_id: RSome(event_id.into()),
        sender: original
            .get("sender")
            .and_then(Value::as_str)
            .map(RString::from)
            .into(),
        text: text.into(),
    }
}
