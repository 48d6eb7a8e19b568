//! Slack → host: Events API payloads and interactive payloads, shared by the webhook and
//! Socket Mode, turned into the host's events and handed over once each.

use std::time::Duration;

use nanoclaw_plugin_api::kit::http::{self, reqwest::Url};
use nanoclaw_plugin_api::kit::inbound::Offered;
use nanoclaw_plugin_api::kit::prelude::*;
use serde::Deserialize;
use serde_json::json;

use crate::Shared;
use crate::api::Args;

/// How long one file download may take (the ack deadline is Slack's 3 s; a redelivery
/// while a big download runs is answered as in progress and deduped).
const DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(15);

/// The body of an Events API request (and a Socket Mode `events_api` payload).
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum EventsBody {
    /// The one-time check when the Request URL is saved.
    UrlVerification { challenge: String },
    /// An event.
    EventCallback {
        event_id: String,
        event: serde_json::Value,
    },
    /// `app_rate_limited` and anything newer: acknowledged and ignored.
    #[serde(other)]
    Other,
}

/// A file object, as message events carry them.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct SlackFile {
    #[serde(default)]
    id: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    mimetype: Option<String>,
    #[serde(default)]
    size: Option<u64>,
    #[serde(default)]
    url_private_download: Option<String>,
    #[serde(default)]
    url_private: Option<String>,
    /// `tombstone` for deleted files, `hidden_by_limit` on free workspaces.
    #[serde(default)]
    mode: Option<String>,
}

/// A `message` or `app_mention` event (and the `message` inside `message_changed`).
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct MessageEvent {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    subtype: Option<String>,
    #[serde(default)]
    channel: Option<String>,
    #[serde(default)]
    channel_type: Option<String>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    bot_id: Option<String>,
    #[serde(default)]
    text: String,
    #[serde(default)]
    ts: String,
    #[serde(default)]
    thread_ts: Option<String>,
    #[serde(default)]
    files: Vec<SlackFile>,
    /// `message_changed`: the message as it is now.
    #[serde(default)]
    message: Option<Box<MessageEvent>>,
    #[serde(default)]
    edited: Option<Edited>,
    /// `message_deleted`: the ts of the deleted message, and that message.
    #[serde(default)]
    deleted_ts: Option<String>,
    #[serde(default)]
    previous_message: Option<Box<MessageEvent>>,
}

#[derive(Debug, Clone, Deserialize)]
struct Edited {
    #[serde(default)]
    ts: String,
}

/// Subtypes that are still a person's message.
fn is_user_subtype(subtype: Option<&str>) -> bool {
    matches!(
        subtype,
        None | Some("file_share" | "thread_broadcast" | "me_message")
    )
}

/// What an event becomes.
pub(crate) enum Incoming {
    /// A message for the host, with the key it is deduped by.
    Message {
        key: String,
        event: Box<InboundEvent>,
    },
    /// Someone deleted a message, with the key it is deduped by.
    Deleted { key: String, event: DeletionEvent },
    /// Nothing for the host (the bot's own message, a join…), and why.
    Ignored(&'static str),
}

/// `1700000000.000100` → ms since the epoch.
fn ts_millis(ts: &str) -> i64 {
    let mut parts = ts.splitn(2, '.');
    let secs: i64 = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    let micros: i64 = parts
        .next()
        .and_then(|s| format!("{s:0<6}").get(..6).and_then(|s| s.parse().ok()))
        .unwrap_or(0);
    secs.saturating_mul(1000).saturating_add(micros / 1000)
}

/// Whether `text` mentions `user` in Slack's markup: `<@U123>` or `<@U123|name>`.
fn mentions(text: &str, user: &str) -> bool {
    text.match_indices("<@").any(|(at, _)| {
        let rest = &text[at + 2..];
        rest.strip_prefix(user)
            .is_some_and(|after| after.starts_with('>') || after.starts_with('|'))
    })
}

/// The thread key the plugin subscribes when the bot posts in a thread.
pub(crate) fn thread_key(channel: &str, thread_ts: &str) -> String {
    format!("{channel}:{thread_ts}")
}

/// A `message_deleted` event, in the thread its message was handed over in (see
/// [`Shared::incoming`]: a top-level channel message is its own thread).
fn deletion(m: &MessageEvent, channel: String) -> Incoming {
    let Some(ts) = m.deleted_ts.clone().filter(|t| !t.is_empty()) else {
        return Incoming::Ignored("message_deleted without deleted_ts");
    };
    let is_dm = m.channel_type.as_deref() == Some("im")
        || (m.channel_type.is_none() && channel.starts_with('D'));
    let thread = m
        .previous_message
        .as_ref()
        .and_then(|p| p.thread_ts.clone())
        .filter(|t| !t.is_empty())
        .or_else(|| (!is_dm).then(|| ts.clone()));
    Incoming::Deleted {
        key: format!("{channel}:{ts}:deleted"),
        event: DeletionEvent {
            chat_id: channel.into(),
            thread_id: thread.map(RString::from).into(),
            message_id: ts.into(),
        },
    }
}

impl Shared {
    /// Turns an event into what the host gets (files downloaded), or says why not.
    pub(crate) async fn incoming(&self, event: &serde_json::Value) -> Incoming {
        let Ok(m) = serde_json::from_value::<MessageEvent>(event.clone()) else {
            return Incoming::Ignored("not a message event");
        };
        if m.kind != "message" && m.kind != "app_mention" {
            return Incoming::Ignored("event type not handled");
        }
        let Some(channel) = m.channel.clone().filter(|c| !c.is_empty()) else {
            return Incoming::Ignored("no channel");
        };
        let subtype = m.subtype.as_deref();
        let (message, edit_of) = match subtype {
            Some("message_changed") => {
                let Some(inner) = m.message.clone() else {
                    return Incoming::Ignored("message_changed without a message");
                };
                // Slack also sends message_changed when it unfurls a link or a reply count
                // changes; only a real edit (`edited`) is news for the agent.
                if inner.edited.is_none() {
                    return Incoming::Ignored("message_changed that is not an edit");
                }
                let original = inner.ts.clone();
                (*inner, Some(original))
            }
            Some("message_deleted") => return deletion(&m, channel),
            other if !is_user_subtype(other) => return Incoming::Ignored("not a user message"),
            _ => (m.clone(), None),
        };
        if !is_user_subtype(message.subtype.as_deref()) {
            return Incoming::Ignored("not a user message");
        }
        let bot = self.bot();
        let Some(user) = message.user.clone().filter(|u| !u.is_empty()) else {
            return Incoming::Ignored("no user");
        };
        let own = bot.as_ref().is_some_and(|b| {
            b.user_id == user || (message.bot_id.is_some() && message.bot_id == b.bot_id)
        });
        if own {
            return Incoming::Ignored("the bot's own message");
        }
        if message.ts.is_empty() {
            return Incoming::Ignored("no ts");
        }
        let is_dm = m.channel_type.as_deref() == Some("im")
            || (m.channel_type.is_none() && channel.starts_with('D'));
        let thread_ts = message.thread_ts.clone().filter(|t| !t.is_empty());
        // Channels: every top-level message starts a thread (the reply goes under it), as
        // Slack users expect from a bot. DMs: the conversation itself, threads if used.
        let thread_id = match (&thread_ts, is_dm) {
            (Some(t), _) => Some(t.clone()),
            (None, false) => Some(message.ts.clone()),
            (None, true) => None,
        };
        let mention_markup = bot
            .as_ref()
            .is_some_and(|b| mentions(&message.text, &b.user_id));
        let in_bot_thread = match &thread_ts {
            Some(t) if !is_dm => {
                let key = thread_key(&channel, t);
                matches!(
                    self.life
                        .host_call(move |host| host.is_subscribed(&key))
                        .await,
                    Ok(Ok(true))
                )
            }
            _ => false,
        };
        let mentioned = is_dm || m.kind == "app_mention" || mention_markup || in_bot_thread;
        let attachments = self.download_files(&message.files).await;
        let display_name = self.user_name(&user).await;
        let (message_id, key) = match &edit_of {
            Some(original) => {
                let edit_ts = message.edited.as_ref().map_or("", |e| e.ts.as_str());
                let id = format!("{original}:edit:{edit_ts}");
                (id.clone(), format!("{channel}:{id}"))
            }
            None => (message.ts.clone(), format!("{channel}:{}", message.ts)),
        };
        let mut extra = serde_json::Map::new();
        if let Some(original) = &edit_of {
            extra.insert("edit_of".into(), json!(original));
        }
        if in_bot_thread {
            extra.insert("in_bot_thread".into(), json!(true));
        }
        if let Some(t) = &thread_ts {
            extra.insert("thread_ts".into(), json!(t));
        }
        let event = InboundEvent {
            chat_id: channel.into(),
            chat_name: RNone,
            thread_id: thread_id.map(RString::from).into(),
            message_id: message_id.into(),
            sender: RSome(Sender {
                handle: user.into(),
                display_name: display_name.map(RString::from).into(),
                is_bot: message.bot_id.is_some(),
            }),
            is_group: !is_dm,
            mentioned,
            text: message.text.clone().into(),
            attachments: attachments.into(),
            reply_to: RNone,
            timestamp_ms: ts_millis(&message.ts),
            extra_json: if extra.is_empty() {
                RString::new()
            } else {
                serde_json::Value::Object(extra).to_string().into()
            },
        };
        Incoming::Message {
            key,
            event: Box::new(event),
        }
    }

    /// A user's display name from `users.info` (scope `users:read`), cached for an hour;
    /// `None` when Slack will not say (the scope is missing, the call failed).
    async fn user_name(&self, user: &str) -> Option<String> {
        const TTL: Duration = Duration::from_secs(3600);
        {
            let names = self.names.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((name, at)) = names.get(user)
                && at.elapsed() < TTL
            {
                return name.clone();
            }
        }
        let args = json!({ "user": user });
        let name = match self
            .api
            .call::<UserInfo>("users.info", "", Args::Json(&args))
            .await
        {
            Ok(info) => info
                .user
                .profile
                .and_then(|p| {
                    [p.display_name, p.real_name]
                        .into_iter()
                        .flatten()
                        .find(|n| !n.trim().is_empty())
                })
                .or(info.user.real_name)
                .filter(|n| !n.trim().is_empty()),
            Err(e) => {
                self.life.debug(format!("no name for {user}: {e}"));
                None
            }
        };
        let mut names = self.names.lock().unwrap_or_else(|p| p.into_inner());
        if names.len() > 10_000 {
            names.clear();
        }
        names.insert(user.to_owned(), (name.clone(), std::time::Instant::now()));
        name
    }

    /// Downloads each file with the bot token, from Slack's file host only, within the
    /// size cap; a file that cannot be fetched arrives as metadata (and its name).
    async fn download_files(&self, files: &[SlackFile]) -> Vec<Attachment> {
        let mut out = Vec::new();
        for file in files {
            if file.mode.as_deref() == Some("tombstone") || file.id.is_empty() {
                continue;
            }
            let mime = file.mimetype.clone().unwrap_or_default();
            let kind = match mime.split('/').next().unwrap_or_default() {
                "image" => "image",
                "audio" => "audio",
                "video" => "video",
                _ => "file",
            };
            let mut attachment = Attachment {
                kind: kind.into(),
                name: file.name.clone().unwrap_or_default().into(),
                mime_type: mime.into(),
                size: file.size.unwrap_or(0),
                data: RVec::new(),
                url: RNone,
            };
            let url = file
                .url_private_download
                .as_deref()
                .or(file.url_private.as_deref());
            match url {
                Some(url) => match self.download(url, file.size).await {
                    Ok(data) => {
                        attachment.size = data.len() as u64;
                        attachment.data = data.into();
                    }
                    Err(e) => self
                        .life
                        .warn(format!("file {} not downloaded: {e}", file.id)),
                },
                None => self.life.debug(format!("file {} has no URL", file.id)),
            }
            out.push(attachment);
        }
        out
    }

    async fn download(&self, raw_url: &str, size: Option<u64>) -> Result<Vec<u8>, PluginError> {
        let cap = self.max_file_bytes;
        if size.is_some_and(|s| s > cap) {
            return Err(PluginError::invalid_input(format!(
                "larger than max_file_bytes ({cap})"
            )));
        }
        let url = Url::parse(raw_url)
            .map_err(|_| PluginError::invalid_input("the file URL does not parse"))?;
        // The bot token goes to Slack's own file host only, never to a URL a message names.
        if !self
            .file_hosts
            .iter()
            .any(|allowed| same_origin(allowed, &url))
        {
            return Err(PluginError::invalid_input(format!(
                "file host {} is not an allowed Slack file host",
                url.host_str().unwrap_or("?")
            )));
        }
        let token = self.api.bot_token();
        let request = self
            .api
            .client()
            .get(url)
            .bearer_auth(token.expose())
            .timeout(DOWNLOAD_TIMEOUT);
        let secrets = [token];
        let response = http::send(request, &secrets)
            .await
            .map_err(|e| e.to_plugin_error("file download"))?;
        http::read_capped(response, cap, &secrets)
            .await
            .map_err(|e| e.to_plugin_error("file download"))
    }

    /// Hands a message over once (deduped by channel and ts).
    pub(crate) async fn offer_message(
        &self,
        key: &str,
        event: InboundEvent,
    ) -> Result<Offered, ()> {
        self.inbox
            .offer_once(&self.dedupe, key, move |host| host.on_inbound(event))
            .await
            .map_err(drop)
    }

    /// Hands an interactive payload over: `block_actions` clicks become actions.
    pub(crate) async fn offer_interaction(
        &self,
        payload: &serde_json::Value,
    ) -> Result<Offered, ()> {
        let Ok(p) = serde_json::from_value::<Interaction>(payload.clone()) else {
            self.life
                .debug("ignoring an interactive payload that does not parse");
            return Ok(Offered::Accepted);
        };
        if p.kind != "block_actions" {
            self.life
                .debug(format!("ignoring interactive payload {}", p.kind));
            return Ok(Offered::Accepted);
        }
        let Some(action) = p.actions.first() else {
            return Ok(Offered::Accepted);
        };
        let chat = p
            .container
            .as_ref()
            .and_then(|c| c.channel_id.clone())
            .or_else(|| p.channel.as_ref().map(|c| c.id.clone()))
            .unwrap_or_default();
        let message_ts = p
            .container
            .as_ref()
            .and_then(|c| c.message_ts.clone())
            .or_else(|| p.message.as_ref().map(|m| m.ts.clone()))
            .unwrap_or_default();
        if chat.is_empty() || p.user.id.is_empty() {
            return Ok(Offered::Accepted);
        }
        let thread = p.message.as_ref().and_then(|m| m.thread_ts.clone());
        let key = format!(
            "action:{chat}:{message_ts}:{}:{}",
            action.action_ts, p.user.id
        );
        let display = p.user.name.clone().or_else(|| p.user.username.clone());
        let event = ActionEvent {
            chat_id: chat.into(),
            thread_id: thread.map(RString::from).into(),
            message_id: message_ts.into(),
            clicker: Sender {
                handle: p.user.id.clone().into(),
                display_name: display.map(RString::from).into(),
                is_bot: false,
            },
            action_id: action.action_id.clone().into(),
            extra_json: json!({"value": action.value}).to_string().into(),
        };
        self.inbox
            .offer_once(&self.dedupe, &key, move |host| host.on_action(event))
            .await
            .map_err(drop)
    }

    /// Handles an Events API body (webhook or Socket Mode): `Ok(Some(challenge))` for
    /// url_verification; `Err(())` when the host did not take it (redeliver).
    pub(crate) async fn handle_events_body(&self, body: EventsBody) -> Result<Handled, ()> {
        match body {
            EventsBody::UrlVerification { challenge } => Ok(Handled::Challenge(challenge)),
            EventsBody::EventCallback { event_id, event } => match self.incoming(&event).await {
                Incoming::Ignored(why) => {
                    self.life.debug(format!("event {event_id} ignored: {why}"));
                    Ok(Handled::Done)
                }
                Incoming::Message { key, event } => match self.offer_message(&key, *event).await? {
                    offered if offered.redeliver() => Err(()),
                    _ => Ok(Handled::Done),
                },
                Incoming::Deleted { key, event } => {
                    let offered = self
                        .inbox
                        .offer_once(&self.dedupe, &key, move |host| host.on_deleted(event))
                        .await
                        .map_err(drop)?;
                    if offered.redeliver() {
                        Err(())
                    } else {
                        Ok(Handled::Done)
                    }
                }
            },
            EventsBody::Other => Ok(Handled::Done),
        }
    }
}

/// What [`Shared::handle_events_body`] did.
pub(crate) enum Handled {
    Challenge(String),
    Done,
}

fn same_origin(allowed: &Url, url: &Url) -> bool {
    allowed.scheme() == url.scheme()
        && allowed.host_str() == url.host_str()
        && allowed.port_or_known_default() == url.port_or_known_default()
}

/// `users.info`.
#[derive(Deserialize)]
struct UserInfo {
    user: UserObject,
}

#[derive(Deserialize)]
struct UserObject {
    #[serde(default)]
    real_name: Option<String>,
    #[serde(default)]
    profile: Option<Profile>,
}

#[derive(Deserialize)]
struct Profile {
    #[serde(default)]
    display_name: Option<String>,
    #[serde(default)]
    real_name: Option<String>,
}

/// A `block_actions` payload (the fields used).
#[derive(Deserialize)]
struct Interaction {
    #[serde(rename = "type")]
    kind: String,
    user: InteractionUser,
    #[serde(default)]
    container: Option<Container>,
    #[serde(default)]
    channel: Option<InteractionChannel>,
    #[serde(default)]
    message: Option<InteractionMessage>,
    #[serde(default)]
    actions: Vec<Action>,
}

#[derive(Deserialize)]
struct InteractionUser {
    id: String,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    name: Option<String>,
}

#[derive(Deserialize)]
struct Container {
    #[serde(default)]
    message_ts: Option<String>,
    #[serde(default)]
    channel_id: Option<String>,
}

#[derive(Deserialize)]
struct InteractionChannel {
    id: String,
}

#[derive(Deserialize)]
struct InteractionMessage {
    #[serde(default)]
    ts: String,
    #[serde(default)]
    thread_ts: Option<String>,
}

#[derive(Deserialize)]
struct Action {
    action_id: String,
    #[serde(default)]
    value: Option<String>,
    #[serde(default)]
    action_ts: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        assert_eq!(ts_millis("1700000000.000100"), 1_700_000_000_000);
        assert_eq!(ts_millis("1700000000.123456"), 1_700_000_000_123);
        assert_eq!(ts_millis("1700000000.5"), 1_700_000_000_500);
        assert_eq!(ts_millis("x"), 0);
    }

    #[test]
    fn mention_markup() {
        assert!(mentions("<@U0BOT> hi", "U0BOT"));
        assert!(mentions("hey <@U0BOT|claw>", "U0BOT"));
        assert!(!mentions("<@U0BOTX> hi", "U0BOT"));
        assert!(!mentions("U0BOT", "U0BOT"));
    }

    #[test]
    fn user_subtypes() {
        assert!(is_user_subtype(None));
        assert!(is_user_subtype(Some("file_share")));
        assert!(is_user_subtype(Some("thread_broadcast")));
        assert!(!is_user_subtype(Some("bot_message")));
        assert!(!is_user_subtype(Some("channel_join")));
    }
}
