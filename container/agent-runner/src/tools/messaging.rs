//! Messages: send text or a file to a destination, edit or react to a message, ask a question
//! with buttons.

use std::path::{Path, PathBuf};

use nanoclaw_schema::session::content::{
    ChatOut, QUESTION_TIMEOUT_DEFAULT_SECS, QUESTION_TIMEOUT_MAX_SECS,
};
use nanoclaw_schema::session::{OUTBOX_DIR, is_safe_file_name, limits};
use serde::Deserialize;
use serde_json::json;

use super::{Address, ToolError, ToolResult, ToolSpec, Toolbox, to_schema};
use crate::db::Destination;

pub(super) fn specs(destinations: &[Destination]) -> Vec<ToolSpec> {
    let to = to_schema(destinations);
    vec![
        ToolSpec {
            name: "send_message",
            description: "Send a message now, before your turn ends (progress updates, or a \
                          message to another destination). Your final reply still goes in \
                          <message to=\"name\"> blocks."
                .into(),
            schema: json!({
                "type": "object",
                "properties": {
                    "to": to,
                    "text": {"type": "string", "description": "The message (markdown)."},
                },
                "required": ["text"],
            }),
        },
        ToolSpec {
            name: "send_file",
            description: "Send a file from your workspace (e.g. a report or an image you made) \
                          as an attachment."
                .into(),
            schema: json!({
                "type": "object",
                "properties": {
                    "to": to,
                    "path": {"type": "string", "description": "The file: relative to your working directory, or absolute under /workspace."},
                    "caption": {"type": "string", "description": "Text sent with the file."},
                },
                "required": ["path"],
            }),
        },
        ToolSpec {
            name: "edit_message",
            description: "Replace the text of a message you sent earlier, by its id (the id=\"N\" \
                          of the conversation, or the id a tool returned)."
                .into(),
            schema: json!({
                "type": "object",
                "properties": {
                    "message_id": {"type": "integer"},
                    "text": {"type": "string"},
                },
                "required": ["message_id", "text"],
            }),
        },
        ToolSpec {
            name: "add_reaction",
            description: "React to a message by its id (the id=\"N\" of the conversation) with an \
                          emoji or its name (thumbs_up, heart, eyes, ...)."
                .into(),
            schema: json!({
                "type": "object",
                "properties": {
                    "message_id": {"type": "integer"},
                    "emoji": {"type": "string"},
                },
                "required": ["message_id", "emoji"],
            }),
        },
        ToolSpec {
            name: "ask_user_question",
            description: format!(
                "Ask the chat a multiple-choice question with buttons. Returns at once; the \
                 answer (who clicked what) arrives later as a system message, and so does a \
                 timeout (default {QUESTION_TIMEOUT_DEFAULT_SECS} s) if nobody answers."
            ),
            schema: json!({
                "type": "object",
                "properties": {
                    "to": to,
                    "question": {"type": "string"},
                    "options": {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": limits::MAX_QUESTION_OPTIONS},
                    "title": {"type": "string", "description": "A short heading for the card."},
                    "timeout_seconds": {"type": "integer", "minimum": 1, "maximum": QUESTION_TIMEOUT_MAX_SECS},
                },
                "required": ["question", "options"],
            }),
        },
    ]
}

#[derive(Debug, Deserialize)]
pub(super) struct SendMessage {
    to: Option<String>,
    text: String,
}

#[derive(Debug, Deserialize)]
pub(super) struct SendFile {
    to: Option<String>,
    path: String,
    caption: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(super) struct EditMessage {
    message_id: i64,
    text: String,
}

#[derive(Debug, Deserialize)]
pub(super) struct AddReaction {
    message_id: i64,
    emoji: String,
}

#[derive(Debug, Deserialize)]
pub(super) struct AskUserQuestion {
    to: Option<String>,
    question: String,
    options: Vec<String>,
    title: Option<String>,
    timeout_seconds: Option<u64>,
}

fn check_text(text: &str) -> Result<(), ToolError> {
    if text.trim().is_empty() {
        return Err(ToolError::new("the text is empty"));
    }
    if text.chars().count() > limits::MAX_TEXT_CHARS {
        return Err(ToolError::new(format!(
            "the text is longer than {} characters",
            limits::MAX_TEXT_CHARS
        )));
    }
    Ok(())
}

fn check_short(what: &str, s: &str) -> Result<(), ToolError> {
    if s.trim().is_empty() {
        return Err(ToolError::new(format!("the {what} is empty")));
    }
    if s.len() > limits::MAX_SHORT_FIELD_BYTES {
        return Err(ToolError::new(format!(
            "the {what} is longer than {} bytes",
            limits::MAX_SHORT_FIELD_BYTES
        )));
    }
    Ok(())
}

impl Toolbox {
    pub(super) fn send_message(&mut self, a: SendMessage) -> ToolResult {
        check_text(&a.text)?;
        let to = self.resolve(a.to.as_deref())?;
        let id = self.next_id();
        let seq = self.write_chat(&id, &to, &ChatOut::text(a.text))?;
        Ok(format!("Queued for {} as message {seq}.", to.name))
    }

    pub(super) fn send_file(&mut self, a: SendFile) -> ToolResult {
        if let Some(c) = &a.caption
            && c.chars().count() > limits::MAX_TEXT_CHARS
        {
            return Err(ToolError::new("the caption is too long"));
        }
        let to = self.resolve(a.to.as_deref())?;
        let source = self.workspace_file(&a.path)?;
        let name = source
            .file_name()
            .and_then(|n| n.to_str())
            .filter(|n| is_safe_file_name(n))
            .ok_or_else(|| ToolError::new(format!("{} has no usable file name", a.path)))?
            .to_string();
        let id = self.next_id();
        let dir = self.session_dir.join(OUTBOX_DIR).join(&id);
        let copied =
            std::fs::create_dir_all(&dir).and_then(|()| std::fs::copy(&source, dir.join(&name)));
        if let Err(e) = copied {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(ToolError::new(format!("cannot stage {}: {e}", a.path)));
        }
        let op = ChatOut::Send {
            text: a.caption.unwrap_or_default(),
            files: vec![name.clone()],
        };
        match self.write_chat(&id, &to, &op) {
            Ok(seq) => Ok(format!("Queued {name} for {} as message {seq}.", to.name)),
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                Err(e)
            }
        }
    }

    /// A regular file under the agent's directory or the session workspace, within the size
    /// limit the host applies.
    fn workspace_file(&self, path: &str) -> Result<PathBuf, ToolError> {
        let raw = Path::new(path);
        let joined = if raw.is_absolute() {
            raw.to_path_buf()
        } else {
            self.agent_dir.join(raw)
        };
        let real = joined
            .canonicalize()
            .map_err(|e| ToolError::new(format!("cannot open {path}: {e}")))?;
        let inside = |root: &Path| root.canonicalize().is_ok_and(|r| real.starts_with(r));
        if !inside(&self.agent_dir) && !inside(&self.session_dir) {
            return Err(ToolError::new(format!(
                "{path} is outside your workspace ({} or {})",
                self.agent_dir.display(),
                self.session_dir.display()
            )));
        }
        let meta = std::fs::metadata(&real)
            .map_err(|e| ToolError::new(format!("cannot open {path}: {e}")))?;
        if !meta.is_file() {
            return Err(ToolError::new(format!("{path} is not a regular file")));
        }
        if meta.len() > limits::MAX_FILE_BYTES {
            return Err(ToolError::new(format!(
                "{path} is {} bytes; files may have at most {}",
                meta.len(),
                limits::MAX_FILE_BYTES
            )));
        }
        Ok(real)
    }

    pub(super) fn edit_message(&mut self, a: EditMessage) -> ToolResult {
        check_text(&a.text)?;
        let (to, message_id) = self.known_message(a.message_id)?;
        let id = self.next_id();
        let op = ChatOut::Edit {
            message_id,
            text: a.text,
        };
        self.write_chat(&id, &to, &op)?;
        Ok(format!("Edit of message {} queued.", a.message_id))
    }

    pub(super) fn add_reaction(&mut self, a: AddReaction) -> ToolResult {
        check_short("emoji", &a.emoji)?;
        let (to, message_id) = self.known_message(a.message_id)?;
        let id = self.next_id();
        let op = ChatOut::React {
            message_id,
            emoji: a.emoji.trim().to_string(),
        };
        self.write_chat(&id, &to, &op)?;
        Ok(format!("Reaction to message {} queued.", a.message_id))
    }

    /// The chat and platform id of the message the agent calls `seq`.
    fn known_message(&self, seq: i64) -> Result<(Address, String), ToolError> {
        let Some(m) = self.db.message_by_seq(seq)? else {
            return Err(ToolError::new(format!("there is no message {seq}")));
        };
        let (Some(ct), Some(pid), Some(platform_message_id)) =
            (m.channel_type, m.platform_id, m.platform_message_id)
        else {
            return Err(ToolError::new(format!(
                "message {seq} has no platform id (not delivered yet, or from an agent)"
            )));
        };
        if ct == nanoclaw_schema::session::AGENT_CHANNEL {
            return Err(ToolError::new(format!(
                "message {seq} is an agent's; only chat messages can be edited or reacted to"
            )));
        }
        let to = Address {
            name: format!("message {seq}"),
            channel_type: ct,
            platform_id: pid,
            thread_id: m.thread_id,
        };
        Ok((to, platform_message_id))
    }

    pub(super) fn ask_user_question(&mut self, a: AskUserQuestion) -> ToolResult {
        check_text(&a.question)?;
        if a.options.is_empty() || a.options.len() > limits::MAX_QUESTION_OPTIONS {
            return Err(ToolError::new(format!(
                "give 1 to {} options",
                limits::MAX_QUESTION_OPTIONS
            )));
        }
        for o in &a.options {
            check_short("option", o)?;
        }
        let title = a.title.unwrap_or_else(|| "Question".into());
        check_short("title", &title)?;
        let timeout = a
            .timeout_seconds
            .unwrap_or(QUESTION_TIMEOUT_DEFAULT_SECS)
            .clamp(1, QUESTION_TIMEOUT_MAX_SECS);
        let to = self.resolve(a.to.as_deref())?;
        let id = self.next_id();
        let question_id = format!("q{}", &id["tool-".len()..]);
        let op = ChatOut::Question {
            question_id: question_id.clone(),
            title,
            question: a.question,
            options: a.options,
            timeout_secs: Some(timeout),
        };
        self.write_chat(&id, &to, &op)?;
        Ok(format!(
            "Question {question_id} queued for {}. The answer arrives as a system message; if \
             nobody answers within {timeout} s, you are told it timed out. End your turn now.",
            to.name
        ))
    }
}
