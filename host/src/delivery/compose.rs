//! From an agent's chat operation to the platform messages that carry it: the outbox files
//! (read through [`SessionDir`](crate::sessions::SessionDir), within a memory budget),
//! question cards with buttons that carry the host's card id, and fallbacks for what a
//! channel cannot do; then the channel's plugin renders and splits it into parts (`prepare`).

use abi_stable::std_types::ROption;
use nanoclaw_plugin_api::abi::{Button, Capabilities, OutboundFile, OutboundMessage, OutboundOp};
use nanoclaw_plugin_api::kit::encode_button_id;
use tokio::sync::SemaphorePermit;

use nanoclaw_schema::session::limits;

use super::{Delivery, Outcome, Platforms, SendError};
use crate::ids::ChatAddress;
use crate::questions::{self, Card};
use crate::sessions::outbound::{ChatOp, OutRow};
use crate::sessions::{FileName, MessageOutId, Session};

/// The platform messages for one row, in order.
pub(super) struct Composed<'a> {
    pub parts: Vec<OutboundMessage>,
    /// The question card these parts post, if any.
    pub card: Option<Card>,
    /// Holds the memory the files take until they are posted.
    pub _budget: Option<SemaphorePermit<'a>>,
}

impl<P: Platforms> Delivery<P> {
    pub(super) async fn compose(
        &self,
        session: &Session,
        row: &OutRow,
        chat: &ChatAddress,
        thread: Option<&str>,
        op: &ChatOp,
        capabilities: Capabilities,
    ) -> Result<Composed<'_>, Outcome> {
        let base = OutboundMessage {
            chat_id: chat.platform_id.as_str().into(),
            thread_id: thread.map(Into::into).into(),
            ..Default::default()
        };
        let can = |cap: Capabilities| capabilities.contains(cap);
        let mut composed = Composed {
            parts: Vec::new(),
            card: None,
            _budget: None,
        };
        let message = match op {
            ChatOp::Send { text, files } => {
                let mut text = text.clone();
                let mut loaded = Vec::new();
                if !files.is_empty() && !can(Capabilities::FILES) {
                    let names: Vec<_> = files.iter().map(FileName::as_str).collect();
                    text.push_str(&format!(
                        "\n\n[files not sent: this channel cannot carry files: {}]",
                        names.join(", ")
                    ));
                } else if !files.is_empty() {
                    let Some(id) = row.key.id() else {
                        return Err(Outcome::Failed("files need a usable message id".into()));
                    };
                    let (data, permit) = self.load_files(session, id, files).await?;
                    loaded = data;
                    composed._budget = permit;
                }
                OutboundMessage {
                    op: OutboundOp::SEND,
                    text: text.into(),
                    files: loaded.into(),
                    ..base
                }
            }
            ChatOp::Edit { message_id, text } => {
                if !can(Capabilities::EDIT) {
                    return Err(Outcome::Failed(format!(
                        "{} cannot edit messages",
                        chat.channel
                    )));
                }
                OutboundMessage {
                    op: OutboundOp::EDIT,
                    text: text.as_str().into(),
                    target_message_id: ROption::RSome(message_id.as_str().into()),
                    ..base
                }
            }
            ChatOp::React { message_id, emoji } => {
                if !can(Capabilities::REACTIONS) {
                    return Err(Outcome::Failed(format!(
                        "{} cannot react to messages",
                        chat.channel
                    )));
                }
                OutboundMessage {
                    op: OutboundOp::REACT,
                    reaction: emoji.as_str().into(),
                    target_message_id: ROption::RSome(message_id.as_str().into()),
                    ..base
                }
            }
            ChatOp::Question {
                question_id,
                title,
                question,
                options,
                timeout_secs,
            } => {
                let card = Card::for_row(
                    session,
                    &row.key.as_string(),
                    question_id,
                    options,
                    chat,
                    *timeout_secs,
                );
                if let Err(e) = self.db.write(|c| questions::record(c, &card)) {
                    return Err(Outcome::Retry {
                        message: format!("could not record the question card: {e}"),
                        retry_after: None,
                    });
                }
                let mut text = format!("{title}\n\n{question}");
                let buttons: Vec<Button> = if can(Capabilities::BUTTONS) {
                    options
                        .iter()
                        .enumerate()
                        .map(|(i, label)| Button {
                            id: encode_button_id(card.id.as_str(), i as u32).into(),
                            label: label.as_str().into(),
                        })
                        .collect()
                } else {
                    text.push_str(&format!("\n\nOptions: {}", options.join(", ")));
                    Vec::new()
                };
                composed.card = Some(card);
                OutboundMessage {
                    op: OutboundOp::SEND,
                    text: text.into(),
                    buttons: buttons.into(),
                    ..base
                }
            }
        };
        composed.parts = self.prepare(chat, message).await?;
        Ok(composed)
    }

    /// The platform messages for one logical message, from the channel's plugin (rendered
    /// and split within the platform's limits), bounded by [`limits::MAX_PARTS`].
    async fn prepare(
        &self,
        chat: &ChatAddress,
        message: OutboundMessage,
    ) -> Result<Vec<OutboundMessage>, Outcome> {
        let parts = self
            .platforms
            .prepare(&chat.channel, message)
            .await
            .map_err(|e| match e {
                SendError::Permanent(e) => Outcome::Failed(format!("could not prepare: {e}")),
                SendError::Transient {
                    message,
                    retry_after,
                } => Outcome::Retry {
                    message,
                    retry_after,
                },
            })?;
        if parts.is_empty() {
            return Err(Outcome::Failed(format!(
                "the {} plugin made nothing to send of it",
                chat.channel
            )));
        }
        if parts.len() > limits::MAX_PARTS {
            return Err(Outcome::Failed(format!(
                "the message would take {} messages on {}, more than the limit of {}; send less",
                parts.len(),
                chat.channel,
                limits::MAX_PARTS
            )));
        }
        Ok(parts)
    }

    /// Reads `outbox/<id>/<files>` through checked descriptors, holding the bytes against
    /// the shared memory budget.
    async fn load_files(
        &self,
        session: &Session,
        id: &MessageOutId,
        names: &[FileName],
    ) -> Result<(Vec<OutboundFile>, Option<SemaphorePermit<'_>>), Outcome> {
        let (s, id, names) = (session.clone(), id.clone(), names.to_vec());
        let opened = self
            .io(move |ss| Ok(ss.session_dir(&s)?.open_outbox_files(&id, &names)))
            .await
            .map_err(|e| Outcome::Retry {
                message: e.to_string(),
                retry_after: None,
            })?
            .map_err(|(name, why)| Outcome::Failed(format!("file {name}: {why}")))?;
        let total: u64 = opened.iter().map(|f| f.size).sum();
        let kib = u32::try_from(total.div_ceil(1024).max(1)).unwrap_or(u32::MAX);
        let permit = self.file_budget.acquire_many(kib).await.ok();
        let read = tokio::task::spawn_blocking(move || {
            opened
                .into_iter()
                .map(|f| f.read())
                .collect::<Result<Vec<_>, _>>()
        })
        .await
        .map_err(|e| Outcome::Retry {
            message: format!("reading files failed: {e}"),
            retry_after: None,
        })?
        .map_err(|why| Outcome::Failed(format!("file: {why}")))?;
        let files = read
            .into_iter()
            .map(|(name, data)| OutboundFile {
                mime_type: mime_for(name.as_str()).into(),
                name: name.as_str().into(),
                data: data.into(),
            })
            .collect();
        Ok((files, permit))
    }
}

fn mime_for(name: &str) -> &'static str {
    let ext = name
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "pdf" => "application/pdf",
        "txt" | "md" | "log" => "text/plain",
        "csv" => "text/csv",
        "json" => "application/json",
        "html" => "text/html",
        "mp3" => "audio/mpeg",
        "ogg" => "audio/ogg",
        "mp4" => "video/mp4",
        "zip" => "application/zip",
        _ => "",
    }
}
