//! What the model sees: inbound rows rendered as XML-ish elements, the system prompt addendum
//! about destinations, and the nudge sent when a reply was not addressed to anyone.

use std::fmt::Write as _;
use std::path::Path;

use jiff::Timestamp;
use jiff::tz::TimeZone;
use nanoclaw_schema::session::content::{AttachmentRef, ChatIn, SystemIn, TaskIn};
use nanoclaw_schema::session::{AGENT_CHANNEL, InKind};
use nanoclaw_schema::time;

use crate::db::{Destination, InRow, Target};

/// The interpreted content of an inbound row.
#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    Chat(ChatIn),
    Task(TaskIn),
    System(SystemIn),
}

/// An inbound row whose kind and content the runner understands.
#[derive(Debug, Clone, PartialEq)]
pub struct Inbound {
    pub row: InRow,
    pub body: Body,
    /// For a task whose pre-task script woke the agent: the script's `data`.
    pub script_output: Option<serde_json::Value>,
}

/// Why a row cannot be used at all (it is acked `failed`).
#[derive(Debug, thiserror::Error)]
pub enum BadRow {
    #[error(transparent)]
    Kind(#[from] nanoclaw_schema::session::UnknownValue),
    #[error("content is not valid {kind} JSON: {source}")]
    Content {
        kind: InKind,
        source: serde_json::Error,
    },
}

impl Inbound {
    pub fn parse(row: InRow) -> Result<Inbound, BadRow> {
        let kind: InKind = row.kind.parse()?;
        let bad = |source| BadRow::Content { kind, source };
        let body = match kind {
            InKind::Chat => Body::Chat(serde_json::from_str(&row.content).map_err(bad)?),
            InKind::Task => Body::Task(serde_json::from_str(&row.content).map_err(bad)?),
            InKind::System => Body::System(serde_json::from_str(&row.content).map_err(bad)?),
        };
        Ok(Inbound {
            row,
            body,
            script_output: None,
        })
    }

    pub fn chat(&self) -> Option<&ChatIn> {
        match &self.body {
            Body::Chat(c) => Some(c),
            _ => None,
        }
    }

    /// The display name of whoever wrote a chat message.
    pub fn sender(&self) -> &str {
        match &self.body {
            Body::Chat(c) => c
                .sender_name
                .as_deref()
                .or(c.sender_id.as_deref())
                .unwrap_or("unknown"),
            Body::Task(_) => "scheduler",
            Body::System(_) => "system",
        }
    }
}

/// The local name of the place a row came from: a LIVE reverse lookup in `destinations`
/// (channel rows by `(channel_type, platform_id)`, agent rows by agent group id).
pub fn origin_name(row: &InRow, destinations: &[Destination]) -> Option<String> {
    let (Some(ct), Some(pid)) = (row.channel_type.as_deref(), row.platform_id.as_deref()) else {
        return None;
    };
    let found = destinations.iter().find(|d| match &d.target {
        Target::Channel {
            channel_type,
            platform_id,
        } => ct != AGENT_CHANNEL && channel_type == ct && platform_id == pid,
        Target::Agent { agent_group_id } => ct == AGENT_CHANNEL && agent_group_id == pid,
    });
    Some(found.map_or_else(|| format!("unknown:{ct}:{pid}"), |d| d.name.clone()))
}

/// Renders the rows of one turn, oldest first.
pub struct Formatter<'a> {
    pub tz: &'a TimeZone,
    pub tz_name: &'a str,
    /// Where attachment paths (relative to the session directory) live for the agent.
    pub session_dir: &'a Path,
}

impl Formatter<'_> {
    pub fn prompt(&self, messages: &[Inbound], destinations: &[Destination]) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "<context timezone=\"{}\" />", esc(self.tz_name));
        let several = messages.len() > 1;
        if several {
            out.push_str("<messages>\n");
        }
        for m in messages {
            self.element(&mut out, m, destinations);
            out.push('\n');
        }
        if several {
            out.push_str("</messages>\n");
        }
        out.truncate(out.trim_end().len());
        out
    }

    fn element(&self, out: &mut String, m: &Inbound, destinations: &[Destination]) {
        let tag = match m.body {
            Body::Chat(_) => "message",
            Body::Task(_) => "task",
            Body::System(_) => "system",
        };
        let _ = write!(out, "<{tag} id=\"{}\"", m.row.seq);
        if let Some(from) = origin_name(&m.row, destinations) {
            let _ = write!(out, " from=\"{}\"", esc(&from));
        }
        match &m.body {
            Body::Chat(_) => {
                let _ = write!(out, " sender=\"{}\"", esc(m.sender()));
            }
            Body::Task(t) => {
                let _ = write!(out, " task_id=\"{}\"", esc(&t.task_id));
            }
            Body::System(s) => {
                if let Some(action) = &s.action {
                    let _ = write!(out, " action=\"{}\"", esc(action));
                }
                if let Some(ok) = s.ok {
                    let _ = write!(out, " ok=\"{ok}\"");
                }
            }
        }
        let _ = write!(
            out,
            " time=\"{}\">",
            esc(&self.local_time(&m.row.timestamp))
        );
        match &m.body {
            Body::Chat(c) => {
                if let Some(q) = &c.reply_to {
                    out.push_str("\n  <quoted_message");
                    if let Some(s) = &q.sender {
                        let _ = write!(out, " from=\"{}\"", esc(s));
                    }
                    let _ = writeln!(out, ">{}</quoted_message>", esc(&q.text));
                }
                out.push_str(&esc(&c.text));
                for a in &c.attachments {
                    out.push('\n');
                    self.attachment(out, a);
                }
            }
            Body::Task(t) => {
                if let Some(data) = &m.script_output {
                    let json = serde_json::to_string_pretty(data).unwrap_or_default();
                    let _ = write!(out, "Script output:\n{}\n\nInstructions:\n", esc(&json));
                }
                out.push_str(&esc(&t.prompt));
            }
            Body::System(s) => out.push_str(&esc(&s.text)),
        }
        let _ = write!(out, "</{tag}>");
    }

    fn attachment(&self, out: &mut String, a: &AttachmentRef) {
        let _ = write!(out, "[{}: {}", esc(&a.kind), esc(&a.name));
        if let Some(path) = &a.path {
            let full = self.session_dir.join(path);
            let _ = write!(out, " — saved to {}", esc(&full.to_string_lossy()));
        } else if let Some(url) = &a.url {
            let _ = write!(out, " ({})", esc(url));
        }
        out.push(']');
    }

    /// A stored timestamp shown in the configured zone, e.g. `Fri 2026-01-02 04:04 CET`.
    /// Unreadable values are shown as stored.
    pub fn local_time(&self, stored: &str) -> String {
        time::parse(stored).map_or_else(|| stored.to_string(), |ts| self.show(ts))
    }

    fn show(&self, ts: Timestamp) -> String {
        ts.to_zoned(self.tz.clone())
            .strftime("%a %Y-%m-%d %H:%M %Z")
            .to_string()
    }
}

/// The system prompt addendum: who the agent is and where it can send messages. Rebuilt from
/// the live destinations every turn; the provider restarts its session when it changes.
pub fn addendum(
    assistant_name: Option<&str>,
    destinations: &[Destination],
    admin_turn: bool,
) -> String {
    let mut s = String::new();
    if let Some(name) = assistant_name.filter(|n| !n.is_empty()) {
        let _ = writeln!(s, "# You are {name}\n");
        let _ = writeln!(
            s,
            "Your name is **{name}**. Use it when someone asks who you are, when you introduce \
             yourself and when you sign a message.\n"
        );
    }
    s.push_str("## Sending messages\n\n");
    match destinations {
        [] => s.push_str(
            "You have no destinations configured, so nothing you write can be delivered until an \
             admin connects one.\n\n",
        ),
        [only] => {
            let _ = writeln!(s, "Your destination is {}.\n", describe(only));
        }
        several => {
            s.push_str("Your destinations:\n");
            for d in several {
                let _ = writeln!(s, "- {}", describe(d));
            }
            s.push('\n');
        }
    }
    s.push_str(
        "Only text inside `<message to=\"NAME\">…</message>` blocks is delivered, where NAME is \
         one of your destinations. Write one block per message; use several blocks to reach \
         several destinations. Everything outside such blocks is private scratch space that \
         nobody sees; mark thinking you mean to keep private with `<internal>…</internal>`.\n\n\
         Each incoming message says where it came from in its `from` attribute. Reply to that \
         destination unless you are asked to write somewhere else.\n",
    );
    s.push_str(
        "\n## Tools\n\nYour `nanoclaw` tools send messages and files before your turn ends, \
         edit and react to messages by their id, ask questions with buttons, schedule tasks, \
         and ask for packages or MCP servers (an admin approves those).\n",
    );
    if admin_turn {
        // Part of the prompt so a change restarts the provider, whose tool list then changes.
        s.push_str(
            "The person you are answering is an admin of this agent: you may create new agents \
             for them with `create_agent`.\n",
        );
    }
    s
}

fn describe(d: &Destination) -> String {
    let mut s = format!("`{}`", d.name);
    match (&d.display_name, &d.target) {
        (Some(display), _) if display != &d.name => {
            let _ = write!(s, " ({display})");
        }
        (_, Target::Agent { .. }) => s.push_str(" (another agent)"),
        _ => {}
    }
    s
}

/// The one-time reminder after a reply that reached nobody.
pub fn nudge(destinations: &[Destination]) -> String {
    let names: Vec<&str> = destinations.iter().map(|d| d.name.as_str()).collect();
    format!(
        "<system>Nothing from your last response was delivered: only text inside \
         <message to=\"NAME\">…</message> blocks is sent, everything else stays private. Valid \
         destinations: {}. If you meant to reply, send it again inside a block.</system>",
        names.join(", ")
    )
}

/// Escapes text for element content and double-quoted attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use nanoclaw_schema::session::content::QuotedMessage;

    fn row(
        seq: i64,
        kind: &str,
        ct: Option<&str>,
        pid: Option<&str>,
        content: serde_json::Value,
    ) -> InRow {
        InRow {
            id: format!("m{seq}"),
            seq,
            kind: kind.into(),
            timestamp: "2026-01-02T03:04:05.000Z".into(),
            trigger: true,
            channel_type: ct.map(Into::into),
            platform_id: pid.map(Into::into),
            thread_id: None,
            content: content.to_string(),
        }
    }

    fn dests() -> Vec<Destination> {
        vec![
            Destination {
                name: "family".into(),
                display_name: Some("Family chat".into()),
                target: Target::Channel {
                    channel_type: "telegram".into(),
                    platform_id: "-100".into(),
                },
            },
            Destination {
                name: "researcher".into(),
                display_name: None,
                target: Target::Agent {
                    agent_group_id: "ag-2".into(),
                },
            },
        ]
    }

    fn fmt<'a>(tz: &'a TimeZone, tz_name: &'a str) -> Formatter<'a> {
        Formatter {
            tz,
            tz_name,
            session_dir: Path::new("/workspace"),
        }
    }

    #[test]
    fn origin_lookup_by_channel_and_by_agent() {
        let d = dests();
        let r = |ct, pid| {
            row(
                2,
                "chat",
                Some(ct),
                Some(pid),
                serde_json::json!({"text": ""}),
            )
        };
        assert_eq!(
            origin_name(&r("telegram", "-100"), &d).as_deref(),
            Some("family")
        );
        assert_eq!(
            origin_name(&r("agent", "ag-2"), &d).as_deref(),
            Some("researcher")
        );
        // An agent id never matches a channel row and vice versa.
        assert_eq!(
            origin_name(&r("agent", "-100"), &d).as_deref(),
            Some("unknown:agent:-100")
        );
        assert_eq!(
            origin_name(&r("slack", "C1"), &d).as_deref(),
            Some("unknown:slack:C1")
        );
        assert_eq!(
            origin_name(&row(2, "task", None, None, serde_json::json!({})), &d),
            None
        );
    }

    #[test]
    fn single_chat_message_with_quote_and_attachments() {
        let chat = ChatIn {
            text: "look at <this> & \"that\"".into(),
            sender_id: Some("telegram:1".into()),
            sender_name: Some("Ann".into()),
            attachments: vec![
                AttachmentRef {
                    name: "cat.jpg".into(),
                    kind: "image".into(),
                    path: Some("inbox/m2/cat.jpg".into()),
                    ..Default::default()
                },
                AttachmentRef {
                    name: "doc.pdf".into(),
                    kind: "file".into(),
                    url: Some("https://x/y?a=1&b=2".into()),
                    ..Default::default()
                },
            ],
            reply_to: Some(QuotedMessage {
                sender: Some("Bob".into()),
                text: "earlier".into(),
                message_id: None,
            }),
            ..Default::default()
        };
        let m = Inbound::parse(row(
            2,
            "chat",
            Some("telegram"),
            Some("-100"),
            serde_json::to_value(&chat).unwrap(),
        ))
        .unwrap();
        let tz = TimeZone::get("Europe/Berlin").unwrap();
        let out = fmt(&tz, "Europe/Berlin").prompt(&[m], &dests());
        assert_eq!(
            out,
            "<context timezone=\"Europe/Berlin\" />\n\
             <message id=\"2\" from=\"family\" sender=\"Ann\" time=\"Fri 2026-01-02 04:04 CET\">\n  \
             <quoted_message from=\"Bob\">earlier</quoted_message>\n\
             look at &lt;this&gt; &amp; &quot;that&quot;\n\
             [image: cat.jpg — saved to /workspace/inbox/m2/cat.jpg]\n\
             [file: doc.pdf (https://x/y?a=1&amp;b=2)]</message>"
        );
    }

    #[test]
    fn several_kinds_are_wrapped_in_messages() {
        let rows = vec![
            row(
                2,
                "chat",
                Some("agent"),
                Some("ag-2"),
                serde_json::json!({"text": "hi", "sender_id": "ag-2"}),
            ),
            row(
                4,
                "task",
                Some("telegram"),
                Some("-100"),
                serde_json::json!({"task_id": "t1", "prompt": "water the plants"}),
            ),
            row(
                6,
                "system",
                None,
                None,
                serde_json::json!({"text": "done", "action": "schedule_task", "ok": true}),
            ),
        ];
        let ms: Vec<Inbound> = rows
            .into_iter()
            .map(|r| Inbound::parse(r).unwrap())
            .collect();
        let out = fmt(&TimeZone::UTC, "UTC").prompt(&ms, &dests());
        assert_eq!(
            out,
            "<context timezone=\"UTC\" />\n<messages>\n\
             <message id=\"2\" from=\"researcher\" sender=\"ag-2\" time=\"Fri 2026-01-02 03:04 UTC\">hi</message>\n\
             <task id=\"4\" from=\"family\" task_id=\"t1\" time=\"Fri 2026-01-02 03:04 UTC\">water the plants</task>\n\
             <system id=\"6\" action=\"schedule_task\" ok=\"true\" time=\"Fri 2026-01-02 03:04 UTC\">done</system>\n\
             </messages>"
        );
    }

    #[test]
    fn task_with_script_output() {
        let r = row(
            4,
            "task",
            None,
            None,
            serde_json::json!({"task_id": "t1", "prompt": "report", "script": "x"}),
        );
        let mut m = Inbound::parse(r).unwrap();
        m.script_output = Some(serde_json::json!({"new": 2}));
        let out = fmt(&TimeZone::UTC, "UTC").prompt(&[m], &[]);
        assert!(
            out.ends_with(
                "time=\"Fri 2026-01-02 03:04 UTC\">Script output:\n{\n  &quot;new&quot;: 2\n}\n\nInstructions:\nreport</task>"
            ),
            "{out}"
        );
    }

    #[test]
    fn bad_rows_are_rejected() {
        assert!(
            Inbound::parse(row(
                2,
                "chat",
                None,
                None,
                serde_json::json!({"no_text": 1})
            ))
            .is_err()
        );
        assert!(
            Inbound::parse(row(
                2,
                "webhook",
                None,
                None,
                serde_json::json!({"text": ""})
            ))
            .is_err()
        );
        let mut r = row(2, "chat", None, None, serde_json::json!({}));
        r.content = "not json".into();
        assert!(matches!(Inbound::parse(r), Err(BadRow::Content { .. })));
    }

    #[test]
    fn addendum_lists_destinations() {
        let a = addendum(Some("Andy"), &dests(), false);
        assert!(a.starts_with("# You are Andy\n"));
        assert!(
            a.contains("- `family` (Family chat)\n- `researcher` (another agent)\n"),
            "{a}"
        );
        assert!(a.contains("<message to=\"NAME\">"));
        let none = addendum(None, &[], false);
        assert!(!none.contains("You are"));
        assert!(none.contains("no destinations"));
        let one = addendum(None, &dests()[..1], true);
        assert!(one.contains("Your destination is `family` (Family chat)."));
    }

    #[test]
    fn nudge_names_destinations() {
        assert!(nudge(&dests()).contains("Valid destinations: family, researcher."));
    }
}
