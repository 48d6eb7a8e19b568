//! NanoClaw channel plugin for Matrix, over the client-server API with `/sync` long polling.
//!
//! # Settings (`[plugins.matrix.settings]` in plugins.toml)
//!
//! | key | default | |
//! |---|---|---|
//! | `api_base_url` | required | the homeserver's client API root, e.g. `https://matrix.example.org` (tests: a local Synapse on 127.0.0.1) |
//! | `access_token` | required | `{ env = "MATRIX_ACCESS_TOKEN" }`: the bot account's access token |
//! | `user_id` | from `/whoami` | the bot's MXID; when given, `start` checks the token belongs to it |
//! | `auto_join` | `"homeserver"` | which invites the bot accepts: `"homeserver"` (from users of its own homeserver), `"all"`, or `"off"` |
//! | `invite_allowlist` | `[]` | MXIDs whose invites are always accepted (whatever `auto_join` says) |
//! | `sync_timeout_secs` | `30` | how long the homeserver holds a `/sync`, 1–300 |
//! | `max_download_bytes` | `26214400` | inbound files larger than this are passed on without content |
//! | `skip_after_refusals` | `8` | times the host may refuse one event before it is skipped as poison, 1–1000 |
//!
//! Unknown keys are refused. `create` checks them without the network.
//!
//! # Behaviour
//!
//! * `start` asks `/account/whoami` (a refused token is `AUTH`, with the fix in the health),
//!   the bot's direct rooms (`m.direct`),
//!   the bot's display name, and reads the `since` token the last run stored.
//! * `/sync` long polling (the `sync` module): the `next_batch` token is stored in the host's
//!   state store after every event of a batch was handed over, and each event is handed
//!   over once (the kit's persisted dedupe by event id): a restart repeats and loses
//!   nothing. The very first sync (no stored token) only learns the rooms: old history is
//!   not answered.
//! * Chats: a room is `!room:server`; a direct room (the bot's `m.direct` account data, or
//!   an invite with `is_direct`) is the other user's MXID `@user:server`, so a DM is
//!   addressed by the user handle, as the host does for cold DMs. Writing to a user with no
//!   DM room yet creates one (`createRoom` with `is_direct` and an invite) and records it in
//!   `m.direct`. Users are their MXIDs.
//! * Inbound: `m.room.message` (text, notices, emotes, files: images, video, audio, voice,
//!   files downloaded through the authenticated media API with a fallback to the legacy
//!   one), mentions (`m.mentions.user_ids`, or the bot's MXID or name in clients without
//!   intentional mentions), replies (`m.in_reply_to`; a reply to the bot counts as a
//!   mention), threads (`m.thread`: the root event is the thread id), edits (`m.replace`:
//!   handed over as a new message with `extra_json.edit_of`), reactions to the bot's
//!   messages (a message with `extra_json.reaction`). Redactions are deletions
//!   (`on_deleted` of the redacted event). Encrypted rooms cannot be read:
//!   the first `m.room.encrypted` of a room is logged as a warning.
//! * Buttons: a card's options are numbered in the message; replying to it with a number
//!   is the click (`on_action` with the replier's MXID). Any other reply is a message.
//! * Outbound: Matrix HTML (the kit's renderer) with a plain `body`, split at 12,000 bytes;
//!   files, edits, reactions, typing. Transaction ids derive from the host's idempotency
//!   key. `M_LIMIT_EXCEEDED` is waited out up to 5 s, longer goes back to the host as
//!   `RATE_LIMITED` with `retry_after_ms`.
//! * The token is registered as a secret: log lines and errors never contain it.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use nanoclaw_plugin_api::kit::http::ApiBase;
use nanoclaw_plugin_api::kit::http::reqwest::Method;
use nanoclaw_plugin_api::kit::inbound::{Dedupe, HandOverPolicy, Inbox};
use nanoclaw_plugin_api::kit::prelude::*;
use nanoclaw_plugin_api::kit::tokio::sync::Mutex as AsyncMutex;
use nanoclaw_plugin_api::kit::{RateLimiter, now_ms};
use serde::Deserialize;
use serde_json::{Value, json};

mod api;
mod events;
mod outbound;
mod sync;

use api::{Api, ApiError};
use events::{Me, is_room_id, is_user_id};

const DEFAULT_SYNC_TIMEOUT_SECS: u64 = 30;
const DEFAULT_MAX_DOWNLOAD_BYTES: u64 = 25 * 1024 * 1024;
const DEFAULT_SKIP_AFTER_REFUSALS: u32 = 8;
/// How long event ids are remembered against redelivery.
const DEDUPE_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
/// How long a card's options can be answered.
const CARD_TTL: Duration = Duration::from_secs(30 * 24 * 3600);
/// Longest a `deliver` waits for a pause the homeserver asked for.
const MAX_LIMITER_WAIT: Duration = Duration::from_secs(5);

/// Which invites are accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum AutoJoin {
    /// From users of the bot's own homeserver.
    Homeserver,
    /// From anyone.
    All,
    /// From nobody (only `invite_allowlist`).
    Off,
}

/// Settings as the host passes them (JSON, secrets resolved).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    api_base_url: String,
    access_token: Secret,
    #[serde(default)]
    user_id: Option<String>,
    #[serde(default = "default_auto_join")]
    auto_join: AutoJoin,
    #[serde(default)]
    invite_allowlist: Vec<String>,
    #[serde(default = "default_sync_timeout")]
    sync_timeout_secs: u64,
    #[serde(default = "default_max_download")]
    max_download_bytes: u64,
    #[serde(default = "default_skip_after_refusals")]
    skip_after_refusals: u32,
}

fn default_auto_join() -> AutoJoin {
    AutoJoin::Homeserver
}
fn default_sync_timeout() -> u64 {
    DEFAULT_SYNC_TIMEOUT_SECS
}
fn default_max_download() -> u64 {
    DEFAULT_MAX_DOWNLOAD_BYTES
}
fn default_skip_after_refusals() -> u32 {
    DEFAULT_SKIP_AFTER_REFUSALS
}

/// What the channel knows about rooms, from `/sync` and its own actions.
#[derive(Default)]
pub(crate) struct Rooms {
    /// User → the DM room to write to (the one they last wrote in, else the first known).
    dm_room_of_user: HashMap<String, String>,
    /// DM room → the other user.
    dm_user_of_room: HashMap<String, String>,
    /// Room → its name.
    names: HashMap<String, String>,
    /// (room, user) → display name.
    members: HashMap<(String, String), String>,
    /// Encrypted rooms already reported.
    encrypted: HashSet<String>,
}

impl Rooms {
    pub(crate) fn add_dm(&mut self, user: &str, room: &str, prefer: bool) {
        self.dm_user_of_room
            .insert(room.to_owned(), user.to_owned());
        if prefer || !self.dm_room_of_user.contains_key(user) {
            self.dm_room_of_user
                .insert(user.to_owned(), room.to_owned());
        }
    }

    pub(crate) fn dm_user(&self, room: &str) -> Option<&str> {
        self.dm_user_of_room.get(room).map(String::as_str)
    }
}

/// What the sync loop and the host-facing methods share.
pub(crate) struct Shared {
    pub(crate) api: Api,
    pub(crate) life: Lifecycle,
    pub(crate) me: OnceLock<Me>,
    pub(crate) rooms: Mutex<Rooms>,
    pub(crate) inbox: Inbox,
    pub(crate) dedupe: Dedupe,
    auto_join: AutoJoin,
    invite_allowlist: Vec<String>,
    pub(crate) sync_timeout_ms: u64,
    pub(crate) max_download_bytes: u64,
    limiter: RateLimiter,
    /// Serializes DM room creation, so two sends to a new user make one room.
    dm_creation: AsyncMutex<()>,
}

impl Shared {
    pub(crate) fn me(&self) -> Me {
        self.me.get().cloned().unwrap_or_default()
    }

    pub(crate) fn rooms(&self) -> MutexGuard<'_, Rooms> {
        self.rooms.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether an invite from `inviter` is accepted.
    pub(crate) fn accepts_invite_from(&self, inviter: &str) -> bool {
        if self.invite_allowlist.iter().any(|u| u == inviter) {
            return true;
        }
        match self.auto_join {
            AutoJoin::All => true,
            AutoJoin::Off => false,
            AutoJoin::Homeserver => {
                let server = |id: &str| id.split_once(':').map(|(_, s)| s.to_owned());
                server(inviter).is_some() && server(inviter) == server(&self.me().user_id)
            }
        }
    }

    /// Records `room` as the DM with `user` in the bot's `m.direct` account data.
    pub(crate) async fn record_direct(&self, user: &str, room: &str) -> Result<(), ApiError> {
        let me = self.me().user_id;
        let path = ["user", me.as_str(), "account_data", "m.direct"];
        let mut direct = match self.api.get(&path, &[]).await {
            Ok(value) if value.is_object() => value,
            Ok(_) => json!({}),
            Err(e) if e.errcode() == Some("M_NOT_FOUND") => json!({}),
            Err(e) => return Err(e),
        };
        let rooms = direct
            .as_object_mut()
            .map(|m| m.entry(user.to_owned()).or_insert_with(|| json!([])));
        if let Some(Value::Array(list)) = rooms {
            if list.iter().any(|r| r.as_str() == Some(room)) {
                return Ok(());
            }
            list.push(json!(room));
        }
        self.api.put(&path, &direct).await.map(drop)
    }

    /// The room to write to for a chat id: a room id as it is; a user's DM room, created
    /// (and the user invited) when there is none and `create` is set.
    async fn room_for(&self, chat: &str, create: bool) -> Result<Option<String>, PluginError> {
        if is_room_id(chat) {
            return Ok(Some(chat.to_owned()));
        }
        if !is_user_id(chat) {
            return Err(PluginError::invalid_input(format!(
                "`{chat}` is neither a Matrix room id (!room:server) nor a user id \
                 (@user:server)"
            )));
        }
        if let Some(room) = self.rooms().dm_room_of_user.get(chat) {
            return Ok(Some(room.clone()));
        }
        if !create {
            return Ok(None);
        }
        let _one_at_a_time = self.dm_creation.lock().await;
        if let Some(room) = self.rooms().dm_room_of_user.get(chat) {
            return Ok(Some(room.clone()));
        }
        let created = self
            .api
            .post(
                &["createRoom"],
                &json!({
                    "is_direct": true,
                    "invite": [chat],
                    "preset": "trusted_private_chat",
                }),
            )
            .await
            .map_err(|e| e.to_plugin_error("createRoom"))?;
        let room = created
            .get("room_id")
            .and_then(Value::as_str)
            .filter(|r| is_room_id(r))
            .ok_or_else(|| PluginError::other("createRoom answered without a room_id"))?
            .to_owned();
        self.rooms().add_dm(chat, &room, true);
        self.life
            .info(format!("created a direct room {room} with {chat}"));
        if let Err(e) = self.record_direct(chat, &room).await {
            self.life
                .warn(format!("could not record {room} in m.direct: {e}"));
        }
        Ok(Some(room))
    }

    /// `PUT /rooms/{room}/send/{type}/{txn}`; the event id.
    async fn send_event(
        &self,
        room: &str,
        kind: &str,
        txn: &str,
        content: &Value,
    ) -> Result<String, PluginError> {
        let sent = self
            .api
            .put(&["rooms", room, "send", kind, txn], content)
            .await
            .map_err(|e| e.to_plugin_error(&format!("send {kind}")))?;
        sent.get("event_id")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| PluginError::other("send answered without an event_id"))
    }

    async fn deliver(&self, part: &OutboundMessage) -> Result<Option<String>, PluginError> {
        let chat = part.chat_id.as_str();
        let room = self
            .room_for(chat, part.op == OutboundOp::SEND)
            .await?
            .ok_or_else(|| PluginError::not_found(format!("no DM room with {chat}")))?;
        let target: Option<&str> = part
            .target_message_id
            .as_ref()
            .map(|t| t.as_str())
            .into_option()
            .filter(|t| !t.is_empty());
        let fallback = format!("nc{}", now_ms());
        match part.op {
            OutboundOp::SEND => {
                let thread: Option<&str> =
                    part.thread_id.as_ref().map(|t| t.as_str()).into_option();
                let mut last = None;
                let mut n = 0;
                if !part.text.trim().is_empty() {
                    let content = outbound::text_content(part, thread, target);
                    let txn = outbound::txn_id(part, n, &fallback);
                    last = Some(
                        self.send_event(&room, "m.room.message", &txn, &content)
                            .await?,
                    );
                    n += 1;
                }
                for file in part.files.iter() {
                    nanoclaw_plugin_api::kit::http::check_upload_size(
                        file,
                        outbound::MAX_UPLOAD_BYTES,
                        "Matrix",
                    )?;
                    let mxc = self
                        .api
                        .upload(file.name.as_str(), file.mime_type.as_str(), &file.data)
                        .await
                        .map_err(|e| e.to_plugin_error("upload"))?;
                    let reply = if last.is_none() { target } else { None };
                    let content = outbound::file_content(file, &mxc, thread, reply);
                    let txn = outbound::txn_id(part, n, &fallback);
                    last = Some(
                        self.send_event(&room, "m.room.message", &txn, &content)
                            .await?,
                    );
                    n += 1;
                }
                let Some(event_id) = last else {
                    return Err(PluginError::invalid_input("nothing to send"));
                };
                if !part.buttons.is_empty() {
                    let ids: Vec<&str> = part.buttons.iter().map(|b| b.id.as_str()).collect();
                    let key = card_key(&room, &event_id);
                    let value = json!(ids).to_string();
                    let ttl = u64::try_from(CARD_TTL.as_millis()).unwrap_or(u64::MAX);
                    let stored = self
                        .life
                        .host_call(move |host| host.kv_set(&key, &value, Some(ttl)))
                        .await
                        .map_err(|_| PluginError::other("the Matrix plugin is stopping"))?;
                    if let Err(e) = stored {
                        self.life.warn(format!(
                            "could not record the options of card {event_id}: {e}; answers \
                             to it will read as messages"
                        ));
                    }
                }
                Ok(Some(event_id))
            }
            OutboundOp::EDIT => {
                let target =
                    target.ok_or_else(|| PluginError::invalid_input("edit without a target"))?;
                let content = outbound::edit_content(part, target);
                let txn = outbound::txn_id(part, 0, &fallback);
                self.send_event(&room, "m.room.message", &txn, &content)
                    .await?;
                Ok(Some(target.to_owned()))
            }
            OutboundOp::REACT => {
                let target =
                    target.ok_or_else(|| PluginError::invalid_input("react without a target"))?;
                let key = outbound::reaction_key(part.reaction.as_str())?;
                let content = outbound::reaction_content(target, &key);
                let txn = outbound::txn_id(part, 0, &fallback);
                self.send_event(&room, "m.reaction", &txn, &content).await?;
                Ok(None)
            }
            other => Err(PluginError::unsupported(format_args!(
                "operation {other:?}"
            ))),
        }
    }
}

/// The state-store key of a card's options.
pub(crate) fn card_key(room: &str, event_id: &str) -> String {
    format!("card:{room}:{event_id}")
}

/// The channel as the host loads it: the kit's lifecycle around [`Matrix`].
pub type MatrixChannel = Hosted<Matrix>;

/// One Matrix account.
pub struct Matrix {
    shared: Arc<Shared>,
    expected_user: Option<String>,
    /// The `since` token `start` read, for the loop it spawns.
    since: Mutex<Option<String>>,
}

impl Matrix {
    /// The bot's MXID, once started.
    pub fn user_id(&self) -> Option<String> {
        self.shared.me.get().map(|m| m.user_id.clone())
    }
}

impl AsyncChannel for Matrix {
    const INFO: ChannelInfo = ChannelInfo::new("Matrix", "matrix", env!("CARGO_PKG_VERSION"))
        .capabilities(
            Capabilities::EDIT
                .with(Capabilities::REACTIONS)
                .with(Capabilities::TYPING)
                .with(Capabilities::FILES)
                .with(Capabilities::BUTTONS)
                .with(Capabilities::THREADS),
        )
        .markup(Markup::MatrixHtml)
        .max_text_length(outbound::MAX_PART_BYTES as u32)
        .text_unit(LengthUnit::Bytes)
        .description("Matrix client-server API (/sync long polling)");

    fn create(ctx: Context, life: &Lifecycle) -> Result<Self, PluginError> {
        let settings: Settings = ctx.settings()?;
        let token = settings.access_token;
        let raw = token.expose();
        if raw.trim().is_empty() || raw.contains(char::is_whitespace) {
            return Err(PluginError::config(
                "access_token is empty or has spaces: put the bot account's access token in \
                 MATRIX_ACCESS_TOKEN, without `Bearer `",
            ));
        }
        if !raw.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(PluginError::config(
                "access_token has characters a Matrix access token never has",
            ));
        }
        let base = ApiBase::parse("api_base_url", &settings.api_base_url, &[&token])?;
        if base.path().contains("/_matrix") {
            return Err(PluginError::config(format!(
                "api_base_url `{}`: give the homeserver's root (https://matrix.example.org), \
                 without /_matrix/…",
                base.as_str()
            )));
        }
        if let Some(user) = &settings.user_id
            && !is_user_id(user)
        {
            return Err(PluginError::config(format!(
                "user_id `{user}` is not a Matrix user id (@bot:example.org)"
            )));
        }
        if let Some(bad) = settings.invite_allowlist.iter().find(|u| !is_user_id(u)) {
            return Err(PluginError::config(format!(
                "invite_allowlist: `{bad}` is not a Matrix user id (@user:example.org)"
            )));
        }
        if !(1..=300).contains(&settings.sync_timeout_secs) {
            return Err(PluginError::config(format!(
                "sync_timeout_secs must be between 1 and 300, not {}",
                settings.sync_timeout_secs
            )));
        }
        if !(1..=1000).contains(&settings.skip_after_refusals) {
            return Err(PluginError::config(format!(
                "skip_after_refusals must be between 1 and 1000, not {}",
                settings.skip_after_refusals
            )));
        }
        life.add_secret(&token);
        if base.is_plain_remote() {
            life.warn(format!(
                "api_base_url {} is plain http to another machine: the access token travels \
                 unencrypted",
                base.as_str()
            ));
        }
        let api = Api::new(&Self::INFO, &base, token)?;
        let policy = HandOverPolicy {
            max_refusals: settings.skip_after_refusals,
            ..HandOverPolicy::default()
        };
        Ok(Self {
            shared: Arc::new(Shared {
                api,
                inbox: Inbox::with_policy(life, policy),
                dedupe: Dedupe::new(life.host().clone(), "event", DEDUPE_TTL)
                    .claim_ttl(Duration::from_secs(5)),
                life: life.clone(),
                me: OnceLock::new(),
                rooms: Mutex::default(),
                auto_join: settings.auto_join,
                invite_allowlist: settings.invite_allowlist,
                sync_timeout_ms: settings.sync_timeout_secs * 1000,
                max_download_bytes: settings.max_download_bytes,
                limiter: RateLimiter::new(None, None),
                dm_creation: AsyncMutex::new(()),
            }),
            expected_user: settings.user_id,
            since: Mutex::new(None),
        })
    }

    async fn start(&self) -> Result<(), PluginError> {
        let shared = &self.shared;
        let whoami = shared
            .api
            .get(&["account", "whoami"], &[])
            .await
            .map_err(|e| {
                if e.is_unauthorized() {
                    let reason = format!(
                        "the homeserver rejected the access token ({e}): it is wrong, expired \
                         or was logged out. Log in as the bot again and update \
                         MATRIX_ACCESS_TOKEN"
                    );
                    shared.life.health().down(reason.clone());
                    PluginError::auth(reason)
                } else {
                    e.to_plugin_error("whoami")
                }
            })?;
        let user_id = whoami
            .get("user_id")
            .and_then(Value::as_str)
            .filter(|u| is_user_id(u))
            .ok_or_else(|| PluginError::other("whoami answered without a user_id"))?
            .to_owned();
        if let Some(expected) = &self.expected_user
            && expected != &user_id
        {
            return Err(PluginError::config(format!(
                "the access token belongs to {user_id}, not to user_id {expected}"
            )));
        }
        let display_name = match shared
            .api
            .get(&["profile", &user_id, "displayname"], &[])
            .await
        {
            Ok(v) => v
                .get("displayname")
                .and_then(Value::as_str)
                .map(str::to_owned),
            Err(_) => None,
        };
        let _ = shared.me.set(Me {
            user_id: user_id.clone(),
            display_name,
        });
        // The direct rooms: an incremental /sync only carries m.direct when it changes.
        let path = ["user", user_id.as_str(), "account_data", "m.direct"];
        match shared.api.get(&path, &[]).await {
            Ok(direct) => {
                let mut rooms = shared.rooms();
                for (user, list) in events::direct_rooms(&direct) {
                    for room in list {
                        rooms.add_dm(&user, &room, false);
                    }
                }
            }
            Err(e) if e.errcode() == Some("M_NOT_FOUND") => {}
            Err(e) => return Err(e.to_plugin_error("reading m.direct")),
        }
        let since = shared
            .life
            .host_call(|host| host.kv_get(sync::SINCE_KEY))
            .await
            .map_err(|_| PluginError::other("the Matrix plugin is stopping"))??;
        shared.life.info(format!(
            "syncing Matrix as {user_id}{}",
            if since.is_some() {
                ", from the stored position"
            } else {
                " (first sync: history is not answered)"
            }
        ));
        *self.since.lock().unwrap_or_else(|p| p.into_inner()) = since;
        Ok(())
    }

    async fn run(self: Arc<Self>, stop: StopSignal) {
        let since = self.since.lock().unwrap_or_else(|p| p.into_inner()).take();
        sync::run(Arc::clone(&self.shared), since, stop).await;
    }

    fn render(&self, message: OutboundMessage) -> Result<Vec<OutboundMessage>, PluginError> {
        outbound::render(message)
    }

    async fn deliver(&self, message: OutboundMessage) -> Result<Option<String>, PluginError> {
        let shared = &self.shared;
        let chat = message.chat_id.to_string();
        if let Err(wait) = shared.limiter.acquire_within(&chat, MAX_LIMITER_WAIT).await {
            let ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
            return Err(PluginError::rate_limited(
                format!("the homeserver asked to slow down for {chat}"),
                Some(ms),
            ));
        }
        let result = shared.deliver(&message).await;
        if let Err(error) = &result {
            shared.limiter.note(Some(&chat), error);
        }
        result
    }

    async fn set_typing(&self, chat_id: &str, _thread_id: Option<&str>) {
        let shared = &self.shared;
        let Ok(Some(room)) = shared.room_for(chat_id, false).await else {
            return;
        };
        let me = shared.me().user_id;
        let typed = shared
            .api
            .call(
                Method::PUT,
                &["_matrix", "client", "v3", "rooms", &room, "typing", &me],
                &[],
                Some(&json!({"typing": true, "timeout": 10_000})),
                api::CALL_TIMEOUT,
            )
            .await;
        if let Err(e) = typed {
            shared.life.debug(format!("typing indicator: {e}"));
        }
    }

    async fn shutdown(&self) {
        self.shared.life.info("Matrix sync stopped");
    }
}

#[cfg(test)]
mod tests;
