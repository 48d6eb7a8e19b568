//! JSON carried in `messages_in.content` and `messages_out.content`, by row kind.
//!
//! Unknown fields are ignored when reading, so either side can add optional fields without
//! breaking the other.

use serde::{Deserialize, Serialize};

/// Sender id used for notes the host itself writes to an agent.
pub const SYSTEM_SENDER: &str = "system";

/// `messages_in` row of kind `chat`: a message from a person, another agent, or the host.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatIn {
    pub text: String,
    /// Namespaced user id (`telegram:123`), an agent group id for agent messages, or
    /// [`SYSTEM_SENDER`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender_name: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub is_mention: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub is_group: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<AttachmentRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<QuotedMessage>,
    /// Platform extras a plugin chose to pass along.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra: Option<serde_json::Value>,
}

/// A file that came with a message.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AttachmentRef {
    pub name: String,
    /// image | audio | video | voice | file | ...
    #[serde(default = "default_attachment_kind")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mime_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// Path relative to the session directory (`inbox/<message id>/<name>`), when the host
    /// saved the bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Where the file can be fetched, when the bytes were not saved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

fn default_attachment_kind() -> String {
    "file".to_string()
}

/// The message a chat message replies to.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct QuotedMessage {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender: Option<String>,
    pub text: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<String>,
}

/// `messages_in` row of kind `task`: one firing of a scheduled task.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskIn {
    pub task_id: String,
    pub prompt: String,
    /// A shell script run before waking the agent; its last stdout line is JSON
    /// `{"wake_agent": bool, "data": ...}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub script: Option<String>,
}

/// `messages_in` row of kind `system`: the host's answer to something the agent asked for.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SystemIn {
    pub text: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ok: Option<bool>,
}

/// `messages_out` row of kind `chat`: something to show on a channel (or send to an agent).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ChatOut {
    /// A new message, optionally with files from `outbox/<message id>/`.
    Send {
        text: String,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        files: Vec<String>,
    },
    /// Replace the text of a message sent earlier (`message_id` is the platform's id).
    Edit { message_id: String, text: String },
    /// React to a message (`emoji` is a name such as `thumbs_up`, or an emoji).
    React { message_id: String, emoji: String },
    /// A multiple-choice card; a click comes back as a `system` row, and so does the end of
    /// its wait ([`QUESTION_TIMEOUT_DEFAULT_SECS`] unless `timeout_secs` says otherwise).
    Question {
        question_id: String,
        title: String,
        question: String,
        options: Vec<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timeout_secs: Option<u64>,
    },
}

/// How long a question card waits for a click unless the agent says otherwise.
pub const QUESTION_TIMEOUT_DEFAULT_SECS: u64 = 300;
/// The longest a question card may wait.
pub const QUESTION_TIMEOUT_MAX_SECS: u64 = 7 * 24 * 3600;

impl ChatOut {
    pub fn text(text: impl Into<String>) -> Self {
        ChatOut::Send {
            text: text.into(),
            files: Vec::new(),
        }
    }
}

/// `messages_out` row of kind `system`: an action the agent asks the host to apply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum SystemAction {
    ScheduleTask {
        task_id: String,
        prompt: String,
        /// First run (stored timestamp format or any RFC 3339 time).
        process_after: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        recurrence: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        script: Option<String>,
        /// The destination (local name) each run is addressed to; the session's own chat if
        /// absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        to: Option<String>,
    },
    CancelTask {
        task_id: String,
    },
    PauseTask {
        task_id: String,
    },
    ResumeTask {
        task_id: String,
    },
    UpdateTask {
        task_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        prompt: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        process_after: Option<String>,
        /// `Some("")` clears the recurrence.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        recurrence: Option<String>,
        /// `Some("")` clears the script.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        script: Option<String>,
        /// `Some("")` addresses the runs to the session's own chat again.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        to: Option<String>,
    },
    /// A new agent group, created for the agent's admin (the host checks that the message the
    /// row answers, `in_reply_to`, is the session's newest trigger and came from an admin).
    CreateAgent {
        name: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        instructions: Option<String>,
    },
    /// Packages for the agent's image; becomes an approval card (see [`super::selfmod`]).
    InstallPackages {
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        apt: Vec<String>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        npm: Vec<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// An MCP server for the agent; becomes an approval card (see [`super::selfmod`]).
    AddMcpServer {
        name: String,
        #[serde(flatten)]
        server: super::selfmod::McpServer,
    },
}

impl SystemAction {
    pub fn name(&self) -> &'static str {
        match self {
            SystemAction::ScheduleTask { .. } => "schedule_task",
            SystemAction::CancelTask { .. } => "cancel_task",
            SystemAction::PauseTask { .. } => "pause_task",
            SystemAction::ResumeTask { .. } => "resume_task",
            SystemAction::UpdateTask { .. } => "update_task",
            SystemAction::CreateAgent { .. } => "create_agent",
            SystemAction::InstallPackages { .. } => "install_packages",
            SystemAction::AddMcpServer { .. } => "add_mcp_server",
        }
    }

    /// True for the actions on scheduled tasks.
    pub fn is_scheduling(&self) -> bool {
        matches!(
            self,
            SystemAction::ScheduleTask { .. }
                | SystemAction::CancelTask { .. }
                | SystemAction::PauseTask { .. }
                | SystemAction::ResumeTask { .. }
                | SystemAction::UpdateTask { .. }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn chat_in_skips_empty_fields_and_ignores_unknown() {
        let c = ChatIn {
            text: "hi".into(),
            ..Default::default()
        };
        assert_eq!(serde_json::to_value(&c).unwrap(), json!({"text": "hi"}));
        let back: ChatIn =
            serde_json::from_value(json!({"text": "hi", "future_field": 1})).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn chat_out_is_tagged_by_op() {
        let v = serde_json::to_value(ChatOut::text("yo")).unwrap();
        assert_eq!(v, json!({"op": "send", "text": "yo"}));
        let e: ChatOut =
            serde_json::from_value(json!({"op": "edit", "message_id": "5", "text": "x"})).unwrap();
        assert_eq!(
            e,
            ChatOut::Edit {
                message_id: "5".into(),
                text: "x".into()
            }
        );
        assert!(serde_json::from_value::<ChatOut>(json!({"op": "explode"})).is_err());
    }

    #[test]
    fn system_action_is_tagged_by_action() {
        let a: SystemAction =
            serde_json::from_value(json!({"action": "cancel_task", "task_id": "t1"})).unwrap();
        assert_eq!(a.name(), "cancel_task");
    }
}
