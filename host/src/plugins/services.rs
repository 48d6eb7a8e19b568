//! The host side of the ABI: what one plugin instance may ask of the host
//! ([`HostServices`]). Inbound messages and clicks go to the daemon's [`Ingress`]; the state
//! store is the central DB, namespaced by instance.

use std::sync::{Arc, OnceLock};

use abi_stable::sabi_trait::TD_Opaque;
use abi_stable::std_types::{RArc, ROption, RResult, RStr, RString, RVec};
use nanoclaw_plugin_api::abi::{
    ActionEvent, DeletionEvent, ErrorKind, HostServices, HostServices_TO, HostServicesBox,
    InboundEvent, LogLevel, PluginError,
};

use super::InstanceName;
use crate::db::Db;
use crate::error::Error;
use crate::ids::{ChannelName, PlatformId};
use crate::router::{Deletion, Inbound, IncomingAttachment, Sender};
use crate::store::plugin_state;
use nanoclaw_schema::session::content::QuotedMessage;

/// A button click, as the daemon receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Click {
    pub channel: ChannelName,
    pub chat_id: PlatformId,
    pub thread_id: Option<String>,
    /// Platform id of the message that carried the button.
    pub message_id: String,
    pub clicker: Sender,
    /// The id the host gave the button.
    pub action_id: String,
}

/// Where plugin input goes. Every call returns only once the input is durably handled (or
/// refused), so the plugin can acknowledge the platform afterwards.
pub trait Ingress: Send + Sync + 'static {
    fn inbound(&self, message: Inbound) -> Result<(), Error>;
    fn action(&self, click: Click) -> Result<(), Error>;
    fn deleted(&self, deletion: Deletion) -> Result<(), Error>;
}

/// The daemon's ingress, set once it is ready; plugins are created before that.
pub type IngressSlot = Arc<OnceLock<Arc<dyn Ingress>>>;

/// One plugin instance's view of the host: its state namespace and the channel name its
/// raw ids are namespaced with are both the instance name.
#[derive(Clone)]
pub struct Services {
    instance: Arc<str>,
    channel: ChannelName,
    db: Arc<Db>,
    ingress: IngressSlot,
}

impl Services {
    pub fn new(instance: &InstanceName, db: Arc<Db>, ingress: IngressSlot) -> Self {
        Services {
            instance: instance.as_str().into(),
            channel: instance.channel().clone(),
            db,
            ingress,
        }
    }

    /// The factory the plugin registry calls for each instance it creates.
    pub fn factory(
        db: Arc<Db>,
        ingress: IngressSlot,
    ) -> impl Fn(&InstanceName, &super::PluginManifest) -> HostServicesBox {
        move |instance, _manifest| Services::new(instance, db.clone(), ingress.clone()).into_box()
    }

    /// The ABI object handed to the plugin's `create`.
    pub fn into_box(self) -> HostServicesBox {
        HostServices_TO::from_ptr(RArc::new(self), TD_Opaque)
    }

    fn ingress(&self) -> Result<&Arc<dyn Ingress>, PluginError> {
        self.ingress.get().ok_or_else(|| {
            PluginError::new(
                ErrorKind::OTHER,
                "the host is not ready for input yet; retry shortly",
            )
        })
    }

    /// Converts a plugin event into the router's message, validating ids at the edge.
    fn inbound_message(&self, e: InboundEvent) -> Result<Inbound, PluginError> {
        let chat_id = PlatformId::parse(e.chat_id.as_str()).map_err(invalid)?;
        let extra = match e.extra_json.as_str().trim() {
            "" => None,
            json => Some(
                serde_json::from_str(json).map_err(|err| invalid(format!("extra_json: {err}")))?,
            ),
        };
        let timestamp = (e.timestamp_ms > 0)
            .then(|| jiff::Timestamp::from_millisecond(e.timestamp_ms).ok())
            .flatten()
            .map(nanoclaw_schema::time::format);
        Ok(Inbound {
            channel: self.channel.clone(),
            chat_id,
            chat_name: non_empty(e.chat_name.into_option()),
            thread_id: non_empty(e.thread_id.into_option()),
            message_id: non_empty(Some(e.message_id)),
            sender: e.sender.into_option().map(|s| Sender {
                handle: s.handle.into_string(),
                name: non_empty(s.display_name.into_option()),
                is_bot: s.is_bot,
            }),
            is_group: e.is_group,
            mentioned: e.mentioned,
            text: e.text.into_string(),
            attachments: e
                .attachments
                .into_iter()
                .enumerate()
                .map(|(i, a)| IncomingAttachment {
                    name: if a.name.is_empty() {
                        default_file_name(i, a.kind.as_str(), a.mime_type.as_str())
                    } else {
                        a.name.into_string()
                    },
                    kind: if a.kind.is_empty() {
                        "file".to_string()
                    } else {
                        a.kind.into_string()
                    },
                    mime_type: non_empty(Some(a.mime_type)),
                    data: a.data.into_vec(),
                    url: non_empty(a.url.into_option()),
                })
                .collect(),
            reply_to: e.reply_to.into_option().map(|q| QuotedMessage {
                sender: non_empty(q.sender.into_option()),
                text: q.text.into_string(),
                message_id: non_empty(q.message_id.into_option()),
            }),
            timestamp,
            extra,
        })
    }

    fn state<T>(
        &self,
        f: impl FnOnce(&rusqlite::Connection, &str, i64) -> crate::Result<T>,
    ) -> RResult<T, PluginError> {
        let now = nanoclaw_schema::time::now_ms();
        self.db
            .write(|c| f(c, &self.instance, now))
            .map_err(to_plugin_error)
            .into()
    }
}

fn non_empty(s: Option<RString>) -> Option<String> {
    s.map(RString::into_string).filter(|s| !s.trim().is_empty())
}

/// A name for an attachment the platform did not name, from its MIME type or kind.
fn default_file_name(index: usize, kind: &str, mime: &str) -> String {
    let ext = match mime {
        "image/jpeg" => "jpg",
        "image/png" => "png",
        "image/gif" => "gif",
        "image/webp" => "webp",
        "audio/ogg" => "ogg",
        "audio/mpeg" => "mp3",
        "video/mp4" => "mp4",
        "application/pdf" => "pdf",
        "text/plain" => "txt",
        _ => match kind {
            "image" | "photo" => "jpg",
            "voice" => "ogg",
            "sticker" => "webp",
            "video" | "animation" => "mp4",
            _ => "bin",
        },
    };
    format!("attachment-{}.{ext}", index + 1)
}

fn invalid(message: impl std::fmt::Display) -> PluginError {
    PluginError::new(ErrorKind::INVALID_INPUT, message.to_string())
}

fn to_plugin_error(e: Error) -> PluginError {
    match e {
        Error::Invalid(m) => PluginError::new(ErrorKind::INVALID_INPUT, m),
        other => PluginError::new(ErrorKind::OTHER, other.to_string()),
    }
}

impl HostServices for Services {
    fn on_inbound(&self, event: InboundEvent) -> RResult<(), PluginError> {
        let result = self
            .inbound_message(event)
            .and_then(|m| self.ingress()?.inbound(m).map_err(to_plugin_error));
        if let Err(e) = &result {
            tracing::warn!(plugin = &*self.instance, error = %e, "inbound message not accepted");
        }
        result.into()
    }

    fn on_action(&self, event: ActionEvent) -> RResult<(), PluginError> {
        let click = (|| {
            Ok::<_, PluginError>(Click {
                channel: self.channel.clone(),
                chat_id: PlatformId::parse(event.chat_id.as_str()).map_err(invalid)?,
                thread_id: non_empty(event.thread_id.into_option()),
                message_id: event.message_id.into_string(),
                clicker: Sender {
                    handle: event.clicker.handle.into_string(),
                    name: non_empty(event.clicker.display_name.into_option()),
                    is_bot: event.clicker.is_bot,
                },
                action_id: event.action_id.into_string(),
            })
        })();
        click
            .and_then(|c| self.ingress()?.action(c).map_err(to_plugin_error))
            .into()
    }

    fn on_deleted(&self, event: DeletionEvent) -> RResult<(), PluginError> {
        let deletion = (|| {
            Ok::<_, PluginError>(Deletion {
                channel: self.channel.clone(),
                chat_id: PlatformId::parse(event.chat_id.as_str()).map_err(invalid)?,
                thread_id: non_empty(event.thread_id.into_option()),
                message_id: non_empty(Some(event.message_id))
                    .ok_or_else(|| invalid("a deletion needs the deleted message's id"))?,
            })
        })();
        let result = deletion.and_then(|d| self.ingress()?.deleted(d).map_err(to_plugin_error));
        if let Err(e) = &result {
            tracing::warn!(plugin = &*self.instance, error = %e, "message deletion not accepted");
        }
        result.into()
    }

    fn log(&self, level: LogLevel, target: RStr<'_>, message: RStr<'_>) {
        super::emit_plugin_log(&self.instance, level, target.as_str(), message.as_str());
    }

    fn kv_get(&self, key: RStr<'_>) -> RResult<ROption<RString>, PluginError> {
        self.state(|c, p, now| plugin_state::kv_get(c, p, key.as_str(), now))
            .map(|v| v.map(RString::from).into())
    }

    fn kv_set(
        &self,
        key: RStr<'_>,
        value: RStr<'_>,
        ttl_ms: ROption<u64>,
    ) -> RResult<(), PluginError> {
        self.state(|c, p, now| {
            plugin_state::kv_set(
                c,
                p,
                key.as_str(),
                value.as_str(),
                ttl_ms.into_option(),
                now,
            )
        })
    }

    fn kv_set_if_absent(
        &self,
        key: RStr<'_>,
        value: RStr<'_>,
        ttl_ms: ROption<u64>,
    ) -> RResult<bool, PluginError> {
        self.state(|c, p, now| {
            plugin_state::kv_set_if_absent(
                c,
                p,
                key.as_str(),
                value.as_str(),
                ttl_ms.into_option(),
                now,
            )
        })
    }

    fn kv_delete(&self, key: RStr<'_>) -> RResult<bool, PluginError> {
        self.state(|c, p, _| plugin_state::kv_delete(c, p, key.as_str()))
    }

    fn subscribe(&self, thread: RStr<'_>) -> RResult<(), PluginError> {
        self.state(|c, p, _| plugin_state::subscribe(c, p, thread.as_str()))
    }

    fn unsubscribe(&self, thread: RStr<'_>) -> RResult<(), PluginError> {
        self.state(|c, p, _| plugin_state::unsubscribe(c, p, thread.as_str()).map(|_| ()))
    }

    fn is_subscribed(&self, thread: RStr<'_>) -> RResult<bool, PluginError> {
        self.state(|c, p, _| plugin_state::is_subscribed(c, p, thread.as_str()))
    }

    fn lock_acquire(&self, name: RStr<'_>, ttl_ms: u64) -> RResult<ROption<RString>, PluginError> {
        self.state(|c, p, now| plugin_state::lock_acquire(c, p, name.as_str(), ttl_ms, now))
            .map(|t| t.map(RString::from).into())
    }

    fn lock_extend(
        &self,
        name: RStr<'_>,
        token: RStr<'_>,
        ttl_ms: u64,
    ) -> RResult<bool, PluginError> {
        self.state(|c, p, now| {
            plugin_state::lock_extend(c, p, name.as_str(), token.as_str(), ttl_ms, now)
        })
    }

    fn lock_release(&self, name: RStr<'_>, token: RStr<'_>) -> RResult<bool, PluginError> {
        self.state(|c, p, _| plugin_state::lock_release(c, p, name.as_str(), token.as_str()))
    }

    fn list_append(
        &self,
        key: RStr<'_>,
        value: RStr<'_>,
        max_len: ROption<u32>,
        ttl_ms: ROption<u64>,
    ) -> RResult<u32, PluginError> {
        self.state(|c, p, now| {
            plugin_state::list_append(
                c,
                p,
                key.as_str(),
                value.as_str(),
                max_len.into_option(),
                ttl_ms.into_option(),
                now,
            )
        })
    }

    fn list_get(&self, key: RStr<'_>) -> RResult<RVec<RString>, PluginError> {
        self.state(|c, p, now| plugin_state::list_get(c, p, key.as_str(), now))
            .map(|v| v.into_iter().map(RString::from).collect())
    }

    fn list_pop_front(&self, key: RStr<'_>) -> RResult<ROption<RString>, PluginError> {
        self.state(|c, p, now| plugin_state::list_pop_front(c, p, key.as_str(), now))
            .map(|v| v.map(RString::from).into())
    }

    fn extension(&self, method: RStr<'_>, _args_json: RStr<'_>) -> RResult<RString, PluginError> {
        RResult::RErr(PluginError::unsupported(format_args!(
            "host extension {:?}",
            method.as_str()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nanoclaw_plugin_api::abi::{Attachment, Sender as AbiSender};
    use std::sync::Mutex;

    #[derive(Default)]
    struct Recorder(Mutex<Vec<Inbound>>);

    impl Ingress for Recorder {
        fn inbound(&self, message: Inbound) -> Result<(), Error> {
            if message.text == "refuse" {
                return Err(Error::invalid("refused for the test"));
            }
            self.0.lock().unwrap().push(message);
            Ok(())
        }
        fn action(&self, _click: Click) -> Result<(), Error> {
            Ok(())
        }
        fn deleted(&self, _deletion: Deletion) -> Result<(), Error> {
            Ok(())
        }
    }

    fn name(s: &str) -> InstanceName {
        InstanceName::new(s).unwrap()
    }

    fn services() -> (Services, Arc<Recorder>) {
        let db = Arc::new(Db::open_in_memory().unwrap());
        let recorder = Arc::new(Recorder::default());
        let slot: IngressSlot = Arc::new(OnceLock::new());
        // A second Telegram bot: its instance name is what namespaces its ids.
        let s = Services::new(&name("tg-work"), db, slot.clone());
        let _ = slot.set(recorder.clone());
        (s, recorder)
    }

    #[test]
    fn events_are_converted_and_validated() {
        let (s, rec) = services();
        let host = s.into_box();
        let event = InboundEvent {
            chat_id: "-100".into(),
            chat_name: ROption::RSome("Team".into()),
            message_id: "7".into(),
            sender: ROption::RSome(AbiSender {
                handle: "42".into(),
                display_name: ROption::RNone,
                is_bot: false,
            }),
            is_group: true,
            mentioned: true,
            text: "hi".into(),
            attachments: vec![Attachment {
                kind: "voice".into(),
                mime_type: "audio/ogg".into(),
                data: vec![1u8, 2, 3].into(),
                ..Default::default()
            }]
            .into(),
            timestamp_ms: 1_767_225_600_000,
            ..Default::default()
        };
        host.on_inbound(event).unwrap();
        let got = rec.0.lock().unwrap().pop().unwrap();
        assert_eq!(got.channel.as_str(), "tg-work");
        assert_eq!(got.chat_id.as_str(), "-100");
        assert_eq!(got.chat_name.as_deref(), Some("Team"));
        assert_eq!(got.message_id.as_deref(), Some("7"));
        assert_eq!(got.sender.unwrap().handle, "42");
        assert_eq!(got.attachments[0].name, "attachment-1.ogg");
        assert_eq!(got.timestamp.as_deref(), Some("2026-01-01T00:00:00.000Z"));

        let bad = InboundEvent {
            chat_id: "".into(),
            ..Default::default()
        };
        let err = host.on_inbound(bad).unwrap_err();
        assert_eq!(err.kind, ErrorKind::INVALID_INPUT);
        let bad_extra = InboundEvent {
            chat_id: "1".into(),
            extra_json: "{not json".into(),
            ..Default::default()
        };
        assert_eq!(
            host.on_inbound(bad_extra).unwrap_err().kind,
            ErrorKind::INVALID_INPUT
        );
        let refused = InboundEvent {
            chat_id: "1".into(),
            text: "refuse".into(),
            ..Default::default()
        };
        assert!(
            host.on_inbound(refused).is_err(),
            "a refusal reaches the plugin so it does not ack"
        );
    }

    #[test]
    fn state_store_is_namespaced_per_instance() {
        let db = Arc::new(Db::open_in_memory().unwrap());
        let slot: IngressSlot = Arc::new(OnceLock::new());
        let a = Services::new(&name("a"), db.clone(), slot.clone()).into_box();
        let b = Services::new(&name("b"), db, slot).into_box();
        a.kv_set("offset".into(), "5".into(), ROption::RNone)
            .unwrap();
        assert_eq!(
            a.kv_get("offset".into())
                .unwrap()
                .into_option()
                .unwrap()
                .as_str(),
            "5"
        );
        assert!(b.kv_get("offset".into()).unwrap().is_none());
        let token = a
            .lock_acquire("x".into(), 10_000)
            .unwrap()
            .into_option()
            .unwrap();
        assert!(
            b.lock_acquire("x".into(), 10_000).unwrap().is_some(),
            "separate namespaces"
        );
        assert!(a.lock_release("x".into(), token.as_rstr()).unwrap());
    }

    #[test]
    fn input_before_the_daemon_is_ready_is_refused() {
        let db = Arc::new(Db::open_in_memory().unwrap());
        let s = Services::new(&name("cli"), db, Arc::new(OnceLock::new())).into_box();
        let err = s
            .on_inbound(InboundEvent {
                chat_id: "x".into(),
                ..Default::default()
            })
            .unwrap_err();
        assert!(err.message.contains("not ready"));
    }
}
