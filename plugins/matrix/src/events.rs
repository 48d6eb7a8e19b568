//! Room events as the channel understands them: pure parsing of what `/sync` hands out, no
//! I/O. Everything here is outside input: unknown shapes are skipped, never trusted.

use serde_json::{Map, Value};

/// Longest text taken from one event (Matrix events are at most 64 KiB anyway).
const MAX_TEXT_BYTES: usize = 64 * 1024;

/// What the account is: its MXID and display name, for mentions.
#[derive(Debug, Clone, Default)]
pub(crate) struct Me {
    pub user_id: String,
    pub display_name: Option<String>,
}

impl Me {
    /// The localpart: `bot` of `@bot:example.org`.
    pub(crate) fn localpart(&self) -> &str {
        self.user_id
            .strip_prefix('@')
            .and_then(|s| s.split(':').next())
            .unwrap_or_default()
    }
}

/// A file in a message, from its `mxc://` URI.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Media {
    pub server: String,
    pub media_id: String,
    pub kind: &'static str,
    pub name: String,
    pub mime_type: String,
    pub size: Option<u64>,
}

/// An `m.room.message` (or its edit).
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct Message {
    pub event_id: String,
    pub sender: String,
    pub timestamp_ms: i64,
    pub msgtype: String,
    /// The text without a reply fallback (for a file: its caption, or nothing).
    pub text: String,
    pub media: Option<Media>,
    /// The bot is mentioned: `m.mentions.user_ids`, or (from clients without intentional
    /// mentions) its MXID, a matrix.to link to it or its name in the text.
    pub mentions_me: bool,
    /// `m.in_reply_to` (not the fallback reply a threaded message carries).
    pub reply_to: Option<String>,
    /// The thread root, for `m.thread` relations.
    pub thread: Option<String>,
    /// The event this one replaces (`m.replace`).
    pub edit_of: Option<String>,
}

/// What a timeline event is to the channel.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Event {
    Message(Box<Message>),
    Reaction {
        event_id: String,
        sender: String,
        target: String,
        key: String,
    },
    Redaction {
        event_id: String,
        sender: String,
        redacts: String,
    },
    /// `m.room.encrypted`: the bot has no keys and cannot read it.
    Encrypted {
        event_id: String,
        sender: String,
    },
    /// Anything else (state, own events, unknown types): the reason, for the debug log.
    Skip(String),
}

fn str_of<'a>(value: &'a Value, key: &str) -> Option<&'a str> {
    value.get(key).and_then(Value::as_str)
}

/// A Matrix id as the spec bounds it: 1–255 bytes, no control characters or spaces.
pub(crate) fn plausible_id(id: &str, sigil: char) -> bool {
    id.starts_with(sigil)
        && id.len() > 1
        && id.len() <= 255
        && !id.chars().any(|c| c.is_control() || c.is_whitespace())
}

/// A user id `@local:server`.
pub(crate) fn is_user_id(id: &str) -> bool {
    plausible_id(id, '@') && id.contains(':')
}

/// A room id `!opaque:server` (room version 12 ids have no server part).
pub(crate) fn is_room_id(id: &str) -> bool {
    plausible_id(id, '!')
}

fn truncate(text: &str) -> String {
    if text.len() <= MAX_TEXT_BYTES {
        return text.to_owned();
    }
    let mut end = MAX_TEXT_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

/// Removes the reply fallback (`> <@user:server> quoted` lines and the blank line after)
/// that older clients put before a reply's text.
pub(crate) fn strip_reply_fallback(body: &str) -> &str {
    if !body.starts_with('>') {
        return body;
    }
    let mut rest = body;
    while rest.starts_with('>') {
        rest = rest.split_once('\n').map_or("", |(_, tail)| tail);
    }
    rest.strip_prefix('\n').unwrap_or(rest)
}

/// `mxc://server/media_id`, with the characters the spec allows.
pub(crate) fn parse_mxc(uri: &str) -> Option<(String, String)> {
    let rest = uri.strip_prefix("mxc://")?;
    let (server, id) = rest.split_once('/')?;
    let server_ok = !server.is_empty()
        && server.len() <= 255
        && server
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c));
    let id_ok = !id.is_empty()
        && id.len() <= 255
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    (server_ok && id_ok).then(|| (server.to_owned(), id.to_owned()))
}

/// Whether `text` names the bot: its MXID, or its display name or localpart as a word
/// (case-insensitive).
fn names_me(text: &str, me: &Me) -> bool {
    if !me.user_id.is_empty() && text.contains(&me.user_id) {
        return true;
    }
    let lower = text.to_lowercase();
    let word = |name: &str| {
        let name = name.trim().to_lowercase();
        if name.chars().count() < 2 {
            return false;
        }
        lower.match_indices(&name).any(|(at, _)| {
            let before = lower[..at].chars().next_back();
            let after = lower[at + name.len()..].chars().next();
            let boundary = |c: Option<char>| c.is_none_or(|c| !c.is_alphanumeric());
            boundary(before) && boundary(after)
        })
    };
    me.display_name.as_deref().is_some_and(word) || word(me.localpart())
}

fn mentions_me(content: &Map<String, Value>, me: &Me) -> bool {
    if let Some(mentions) = content.get("m.mentions") {
        // A client that sends intentional mentions says exactly whom it means.
        return mentions
            .get("user_ids")
            .and_then(Value::as_array)
            .is_some_and(|ids| ids.iter().any(|id| id.as_str() == Some(&me.user_id)));
    }
    let body = content.get("body").and_then(Value::as_str).unwrap_or("");
    let formatted = content
        .get("formatted_body")
        .and_then(Value::as_str)
        .unwrap_or("");
    names_me(strip_reply_fallback(body), me)
        || (!me.user_id.is_empty() && formatted.contains(&format!("matrix.to/#/{}", me.user_id)))
}

fn media_of(content: &Map<String, Value>, msgtype: &str) -> Option<Media> {
    let kind = match msgtype {
        "m.image" => "image",
        "m.video" => "video",
        "m.audio" if content.contains_key("org.matrix.msc3245.voice") => "voice",
        "m.audio" => "audio",
        "m.file" => "file",
        _ => return None,
    };
    // Encrypted media come in `file`, not `url`: the bot cannot decrypt them.
    let (server, media_id) = parse_mxc(content.get("url")?.as_str()?)?;
    let info = content.get("info");
    let body = content.get("body").and_then(Value::as_str).unwrap_or("");
    let name = content
        .get("filename")
        .and_then(Value::as_str)
        .unwrap_or(body);
    Some(Media {
        server,
        media_id,
        kind,
        name: name.chars().take(255).collect(),
        mime_type: info
            .and_then(|i| str_of(i, "mimetype"))
            .unwrap_or("")
            .chars()
            .take(127)
            .collect(),
        size: info.and_then(|i| i.get("size")).and_then(Value::as_u64),
    })
}

/// Classifies one timeline event of a joined room.
pub(crate) fn classify(event: &Value, me: &Me) -> Event {
    let Some(event_id) = str_of(event, "event_id").filter(|id| plausible_id(id, '$')) else {
        return Event::Skip("an event without a valid event_id".into());
    };
    let kind = str_of(event, "type").unwrap_or("");
    let Some(sender) = str_of(event, "sender").filter(|s| is_user_id(s)) else {
        return Event::Skip(format!("{event_id}: no valid sender"));
    };
    if event.get("state_key").is_some() {
        return Event::Skip(format!("{event_id}: state event {kind}"));
    }
    if sender == me.user_id {
        return Event::Skip(format!("{event_id}: our own {kind}"));
    }
    let empty = Map::new();
    let content = event
        .get("content")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let (event_id, sender) = (event_id.to_owned(), sender.to_owned());
    match kind {
        "m.room.message" => message(event, content, event_id, sender, me),
        "m.reaction" => {
            let relates = content.get("m.relates_to");
            let target = relates.and_then(|r| str_of(r, "event_id"));
            let key = relates.and_then(|r| str_of(r, "key"));
            match (relates.and_then(|r| str_of(r, "rel_type")), target, key) {
                (Some("m.annotation"), Some(target), Some(key)) if plausible_id(target, '$') => {
                    Event::Reaction {
                        event_id,
                        sender,
                        target: target.to_owned(),
                        key: key.chars().take(64).collect(),
                    }
                }
                _ => Event::Skip(format!("{event_id}: a reaction without a target")),
            }
        }
        "m.room.redaction" => {
            // Room versions up to 10 carry `redacts` at the top; 11 in the content.
            let redacts =
                str_of(event, "redacts").or_else(|| content.get("redacts").and_then(Value::as_str));
            match redacts.filter(|r| plausible_id(r, '$')) {
                Some(redacts) => Event::Redaction {
                    event_id,
                    sender,
                    redacts: redacts.to_owned(),
                },
                None => Event::Skip(format!("{event_id}: a redaction of nothing")),
            }
        }
        "m.room.encrypted" => Event::Encrypted { event_id, sender },
        other => Event::Skip(format!("{event_id}: {other}")),
    }
}

fn message(
    event: &Value,
    content: &Map<String, Value>,
    event_id: String,
    sender: String,
    me: &Me,
) -> Event {
    let relates = content.get("m.relates_to");
    let rel_type = relates.and_then(|r| str_of(r, "rel_type"));
    let rel_target = relates
        .and_then(|r| str_of(r, "event_id"))
        .filter(|id| plausible_id(id, '$'))
        .map(str::to_owned);
    // An edit's text is in `m.new_content`; the outer body is the "* …" fallback.
    let (edit_of, content) = match (rel_type, rel_target.clone()) {
        (Some("m.replace"), Some(target)) => {
            match content.get("m.new_content").and_then(Value::as_object) {
                Some(new) => (Some(target), new),
                None => return Event::Skip(format!("{event_id}: an edit without m.new_content")),
            }
        }
        _ => (None, content),
    };
    let Some(msgtype) = content.get("msgtype").and_then(Value::as_str) else {
        return Event::Skip(format!("{event_id}: a message without msgtype (redacted?)"));
    };
    let body = content.get("body").and_then(Value::as_str).unwrap_or("");
    let in_reply_to = relates
        .and_then(|r| r.get("m.in_reply_to"))
        .and_then(|r| str_of(r, "event_id"))
        .filter(|id| plausible_id(id, '$'))
        .map(str::to_owned);
    let thread = match (rel_type, &rel_target) {
        (Some("m.thread"), Some(root)) => Some(root.clone()),
        _ => None,
    };
    let falling_back = relates
        .and_then(|r| r.get("is_falling_back"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let reply_to = if thread.is_some() && falling_back {
        None
    } else {
        in_reply_to
    };
    let media = media_of(content, msgtype);
    let text = match (&media, msgtype) {
        // A file's body is its name unless a `filename` says otherwise (then it is a caption).
        (Some(_), _) => match content.get("filename").and_then(Value::as_str) {
            Some(name) if name != body => body.to_owned(),
            _ => String::new(),
        },
        (None, "m.text" | "m.notice" | "m.emote") => {
            let text = if reply_to.is_some() {
                strip_reply_fallback(body)
            } else {
                body
            };
            if msgtype == "m.emote" {
                format!("* {text}")
            } else {
                text.to_owned()
            }
        }
        (None, "m.location") => body.to_owned(),
        (None, other) if !body.is_empty() => {
            // An unknown msgtype: the spec says to show the body.
            let _ = other;
            body.to_owned()
        }
        (None, other) => return Event::Skip(format!("{event_id}: {other} without a body")),
    };
    Event::Message(Box::new(Message {
        timestamp_ms: event
            .get("origin_server_ts")
            .and_then(Value::as_i64)
            .unwrap_or(0),
        msgtype: msgtype.to_owned(),
        text: truncate(&text),
        media,
        mentions_me: mentions_me(content, me),
        reply_to,
        thread,
        edit_of,
        event_id,
        sender,
    }))
}

/// A numbered answer to a card: `2`, ` 2. `, `#2` → 2.
pub(crate) fn option_number(text: &str) -> Option<usize> {
    let t = text
        .trim()
        .trim_start_matches('#')
        .trim_end_matches(['.', ')']);
    if t.is_empty() || t.len() > 3 || !t.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    t.parse().ok().filter(|n| *n > 0)
}

/// The invite of `me` in an invited room's stripped state: (inviter, is_direct).
pub(crate) fn invite_of(room: &Value, me: &Me) -> Option<(String, bool)> {
    let events = room.get("invite_state")?.get("events")?.as_array()?;
    events.iter().find_map(|e| {
        let ours = str_of(e, "type") == Some("m.room.member")
            && str_of(e, "state_key") == Some(&me.user_id)
            && e.get("content").and_then(|c| str_of(c, "membership")) == Some("invite");
        if !ours {
            return None;
        }
        let inviter = str_of(e, "sender").filter(|s| is_user_id(s))?;
        let direct = e
            .get("content")
            .and_then(|c| c.get("is_direct"))
            .and_then(Value::as_bool)
            .unwrap_or(false);
        Some((inviter.to_owned(), direct))
    })
}

/// `m.direct` account data: user → their DM rooms, kept to plausible ids.
pub(crate) fn direct_rooms(content: &Value) -> Vec<(String, Vec<String>)> {
    let Some(map) = content.as_object() else {
        return Vec::new();
    };
    map.iter()
        .filter(|(user, _)| is_user_id(user))
        .map(|(user, rooms)| {
            let rooms = rooms
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .filter(|r| is_room_id(r))
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default();
            (user.clone(), rooms)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Value {
        let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    fn me() -> Me {
        Me {
            user_id: "@bot:example.org".into(),
            display_name: Some("NanoClaw".into()),
        }
    }

    /// The timeline events of the fixture's one joined room.
    fn timeline(sync: &Value) -> Vec<Value> {
        let rooms = sync["rooms"]["join"].as_object().expect("joined rooms");
        rooms
            .values()
            .flat_map(|r| {
                r["timeline"]["events"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
            })
            .collect()
    }

    fn message_of(event: &Value) -> Message {
        match classify(event, &me()) {
            Event::Message(m) => *m,
            other => panic!("not a message: {other:?}"),
        }
    }

    #[test]
    fn a_sync_response_is_classified() {
        let sync = fixture("sync.json");
        let events = timeline(&sync);
        let kinds: Vec<Event> = events.iter().map(|e| classify(e, &me())).collect();
        // The spec's example: a topic (state), a text message, a reaction, a redaction,
        // an encrypted event, our own message.
        assert!(matches!(kinds[0], Event::Skip(_)), "{:?}", kinds[0]);
        let Event::Message(m) = &kinds[1] else {
            panic!("{:?}", kinds[1])
        };
        assert_eq!(m.event_id, "$143273582443PhrSn:example.org");
        assert_eq!(m.sender, "@example:example.org");
        assert_eq!(m.text, "This is an example text message");
        assert_eq!(m.timestamp_ms, 1_432_735_824_653);
        assert!(!m.mentions_me);
        assert_eq!(
            kinds[2],
            Event::Reaction {
                event_id: "$reaction1:example.org".into(),
                sender: "@example:example.org".into(),
                target: "$143273582443PhrSn:example.org".into(),
                key: "👍".into(),
            }
        );
        assert_eq!(
            kinds[3],
            Event::Redaction {
                event_id: "$redaction1:example.org".into(),
                sender: "@example:example.org".into(),
                redacts: "$143273582443PhrSn:example.org".into(),
            }
        );
        assert!(matches!(kinds[4], Event::Encrypted { .. }));
        assert!(matches!(&kinds[5], Event::Skip(r) if r.contains("own")));
        let invited = &sync["rooms"]["invite"]["!696r7674:example.com"];
        assert_eq!(
            invite_of(
                invited,
                &Me {
                    user_id: "@bot:example.org".into(),
                    display_name: None
                }
            ),
            Some(("@alice:example.com".into(), true))
        );
        let direct = direct_rooms(&sync["account_data"]["events"][0]["content"]);
        assert_eq!(
            direct,
            vec![(
                "@alice:example.com".into(),
                vec!["!696r7674:example.com".to_owned()]
            )]
        );
    }

    #[test]
    fn mentions_replies_threads_and_edits() {
        let m = message_of(&fixture("mention.json"));
        assert!(m.mentions_me, "m.mentions.user_ids names the bot");
        assert_eq!(m.text, "NanoClaw: what is the status?");

        // Intentional mentions that do not list the bot win over its name in the text.
        let mut other = fixture("mention.json");
        other["content"]["m.mentions"] = serde_json::json!({"user_ids": ["@ann:example.org"]});
        assert!(!message_of(&other).mentions_me);
        // Without m.mentions, the name (a whole word) or MXID in the text counts.
        let mut legacy = fixture("mention.json");
        legacy["content"]
            .as_object_mut()
            .unwrap()
            .remove("m.mentions");
        assert!(message_of(&legacy).mentions_me);
        legacy["content"]
            .as_object_mut()
            .unwrap()
            .remove("formatted_body");
        legacy["content"]["body"] = "nanoclawish is not a name".into();
        assert!(!message_of(&legacy).mentions_me);
        legacy["content"]["body"] = "ping @bot:example.org".into();
        assert!(message_of(&legacy).mentions_me);

        let reply = message_of(&fixture("reply.json"));
        assert_eq!(reply.reply_to.as_deref(), Some("$card:example.org"));
        assert_eq!(reply.text, "2", "the fallback quote is removed");
        assert_eq!(reply.thread, None);

        let threaded = message_of(&fixture("thread.json"));
        assert_eq!(threaded.thread.as_deref(), Some("$root:example.org"));
        assert_eq!(threaded.reply_to, None, "is_falling_back: not a real reply");
        assert_eq!(threaded.text, "in the thread");

        let edit = message_of(&fixture("edit.json"));
        assert_eq!(edit.edit_of.as_deref(), Some("$original:example.org"));
        assert_eq!(edit.text, "Hello, corrected");
    }

    #[test]
    fn files_are_taken_from_mxc_uris_only() {
        let image = message_of(&fixture("image.json"));
        let media = image.media.expect("an image");
        assert_eq!(media.kind, "image");
        assert_eq!(media.server, "example.org");
        assert_eq!(media.media_id, "ascERGshawAWawugaAcauga");
        assert_eq!(media.mime_type, "image/jpeg");
        assert_eq!(media.size, Some(31037));
        assert_eq!(media.name, "filename.jpg");
        assert_eq!(image.text, "", "the body is the file's name");

        assert_eq!(parse_mxc("mxc://example.org/../../etc"), None);
        assert_eq!(parse_mxc("https://example.org/abc"), None);
        assert_eq!(parse_mxc("mxc://exa mple/abc"), None);
        assert_eq!(
            parse_mxc("mxc://localhost:8008/AbC_-1"),
            Some(("localhost:8008".into(), "AbC_-1".into()))
        );
    }

    #[test]
    fn hostile_shapes_are_skipped() {
        for bad in [
            serde_json::json!({}),
            serde_json::json!({"event_id": "$x", "type": "m.room.message", "sender": "nobody"}),
            serde_json::json!({"event_id": "x", "type": "m.room.message", "sender": "@a:b"}),
            serde_json::json!({"event_id": "$x", "type": "m.room.message", "sender": "@a:b",
                               "content": {"body": 5}}),
            serde_json::json!({"event_id": "$x", "type": "m.room.message", "sender": "@a:b",
                               "content": {"msgtype": "m.text", "body": "x",
                                           "m.relates_to": {"rel_type": "m.replace", "event_id": "$y"}}}),
        ] {
            assert!(matches!(classify(&bad, &me()), Event::Skip(_)), "{bad}");
        }
        assert_eq!(
            strip_reply_fallback("> <@a:b> hi\n> there\n\nanswer"),
            "answer"
        );
        assert_eq!(strip_reply_fallback("no quote"), "no quote");
        assert_eq!(option_number(" 2. "), Some(2));
        assert_eq!(option_number("#1"), Some(1));
        assert_eq!(option_number("0"), None);
        assert_eq!(option_number("two"), None);
        assert_eq!(option_number("12345"), None);
    }
}
