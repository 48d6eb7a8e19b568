//! Approvals of unknown senders in `request_approval` chats.
//!
//! The router holds the message and opens a request. The card goes to an approver picked by
//! [`access::pick_approver`] (scoped admins, then global admins, then owners) in that
//! approver's own DM, preferring one on the same kind of channel. A click counts only if it
//! comes from that card (the chat and message it was posted as) and from the approver the
//! card went to, or someone with admin privilege over the agent; other clicks are ignored and
//! recorded. Approve lets the sender talk to that agent in that chat (nothing more) and
//! replays the held messages; deny drops them. The operator can decide from the CLI too.

use nanoclaw_plugin_api::kit::{ButtonChoice, decode_button_id, encode_button_id};
use rusqlite::Connection;

use crate::access::{self, DmChannels};
use crate::db::Db;
use crate::delivery::{Delivery, Platforms};
use crate::error::{Error, Result};
use crate::ids::{AgentGroupId, ApprovalId, ChannelName, MessagingGroupId, UserId};
use crate::plugins::services::Click;
use crate::router::{HeldForApproval, Inbound, RouteOutcome, Router};
use crate::store::approvals::{self, Approval, ApprovalStatus};
use crate::store::messaging_groups::MessagingGroup;
use crate::store::{agent_groups, members, messaging_groups, users};

/// Button index of "Allow".
pub const ALLOW: u32 = 0;
/// Button index of "Deny".
pub const DENY: u32 = 1;

/// Sends the approval card for a newly held sender. Returns false when nobody could be
/// asked (no approver, or none reachable); the request then waits for the CLI.
pub async fn ask<P: Platforms + DmChannels>(
    db: &Db,
    delivery: &Delivery<P>,
    channels: &P,
    held: &HeldForApproval,
) -> Result<bool> {
    let (sender_label, agent) = db.read(|c| {
        Ok((
            user_label(c, &held.sender)?,
            agent_groups::get(c, &held.agent)?,
        ))
    })?;
    let agent_label = agent
        .as_ref()
        .map_or(held.agent.to_string(), |a| a.display_name().to_string());
    let text = format!(
        "👤 New sender\n\n{sender_label} wants to talk to {agent_label} in {}. Allow?",
        chat_label(&held.chat)
    );
    let buttons = [
        (
            encode_button_id(held.approval.as_str(), ALLOW),
            "Allow".to_string(),
        ),
        (
            encode_button_id(held.approval.as_str(), DENY),
            "Deny".to_string(),
        ),
    ];
    let hint = format!(
        "decide with `nanoclaw approvals allow {}` or `deny`",
        held.approval
    );
    let card = CardRequest {
        what: held.approval.as_str(),
        scope: Some(&held.agent),
        origin: &held.chat.channel_type,
        text: &text,
        buttons: &buttons,
        hint: &hint,
    };
    let Some(sent) = send_card(db, delivery, channels, card).await? else {
        return Ok(false);
    };
    db.write(|c| {
        approvals::set_card(
            c,
            &held.approval,
            &sent.approver,
            &sent.chat,
            sent.message_id.as_deref(),
        )
    })?;
    Ok(true)
}

/// A user as an approver reads them: their name and id.
pub(crate) fn user_label(c: &Connection, user: &UserId) -> Result<String> {
    Ok(match users::get(c, user)?.and_then(|u| u.display_name) {
        Some(name) => format!("{name} ({user})"),
        None => user.to_string(),
    })
}

/// A chat as an approver reads it: its name and address.
pub(crate) fn chat_label(chat: &MessagingGroup) -> String {
    match &chat.name {
        Some(name) => format!("{name} ({})", chat.address()),
        None => chat.address().to_string(),
    }
}

/// A card asking an owner or admin to decide something.
pub(crate) struct CardRequest<'a> {
    /// The request's id, for logs.
    pub what: &'a str,
    /// The agent the decision is about, whose scoped admins are asked first.
    pub scope: Option<&'a AgentGroupId>,
    /// The channel the request came from: approvers on it are preferred.
    pub origin: &'a ChannelName,
    pub text: &'a str,
    pub buttons: &'a [(String, String)],
    /// How to decide from the CLI, logged when nobody could be asked.
    pub hint: &'a str,
}

/// Where a card went.
pub(crate) struct SentCard {
    pub approver: UserId,
    pub chat: MessagingGroupId,
    pub message_id: Option<String>,
}

/// Sends a card to the approver [`access::pick_approver`] and
/// [`access::pick_approval_delivery`] pick, in their DM (opened if needed). `None` when
/// nobody could be asked; the request then waits for the CLI.
pub(crate) async fn send_card<P: Platforms + DmChannels>(
    db: &Db,
    delivery: &Delivery<P>,
    channels: &P,
    card: CardRequest<'_>,
) -> Result<Option<SentCard>> {
    let (what, hint) = (card.what, card.hint);
    let approvers = db.read(|c| access::pick_approver(c, card.scope))?;
    if approvers.is_empty() {
        tracing::warn!(request = what, "no owner or admin can decide this; {hint}");
        return Ok(None);
    }
    let Some(target) =
        access::pick_approval_delivery(db, channels, &approvers, Some(card.origin)).await?
    else {
        tracing::warn!(
            request = what,
            "no owner or admin is reachable by DM; {hint}"
        );
        return Ok(None);
    };
    match delivery
        .send_direct(&target.chat.address(), None, card.text, card.buttons)
        .await
    {
        Ok(message_id) => {
            tracing::info!(request = what, approver = %target.approver, "card sent");
            Ok(Some(SentCard {
                approver: target.approver,
                chat: target.chat.id,
                message_id,
            }))
        }
        Err(e) => {
            tracing::warn!(request = what, error = %e, "card not delivered; {hint}");
            Ok(None)
        }
    }
}

/// Decides a pending request: approve lets the sender talk to the agent in the chat the
/// request came from. The held messages are replayed (or dropped) by [`settle`].
pub fn decide(
    conn: &Connection,
    id: &ApprovalId,
    allow: bool,
    by: Option<&UserId>,
) -> Result<Approval> {
    let status = if allow {
        ApprovalStatus::Approved
    } else {
        ApprovalStatus::Denied
    };
    let approval = approvals::decide(conn, id, status, by)?;
    if allow
        && let (Some(sender), Some(chat)) =
            (&approval.subject_user_id, &approval.messaging_group_id)
    {
        members::allow_in_chat(conn, chat, &approval.agent_group_id, sender, Some(id), by)?;
    }
    tracing::info!(approval = %id, decision = %status, by = ?by.map(|u| u.as_str()), "sender approval decided");
    Ok(approval)
}

/// What a click on a button meant.
#[derive(Debug, Clone, PartialEq)]
pub enum ClickResult {
    /// Not an approval button.
    NotOurs,
    /// An approval button, but the click does not count (and why).
    Ignored(String),
    Decided(Box<Approval>),
}

/// Handles a click on an approval card, checking who clicked.
pub fn on_click(db: &Db, click: &Click) -> Result<ClickResult> {
    let Some(button) = decode_button_id(&click.action_id) else {
        return Ok(ClickResult::NotOurs);
    };
    let Ok(id) = ApprovalId::parse(button.question_id) else {
        return Ok(ClickResult::NotOurs);
    };
    let Some(approval) = db.read(|c| approvals::get(c, &id))? else {
        return Ok(ClickResult::NotOurs);
    };
    let allow = match button.choice {
        ButtonChoice::Index(ALLOW) => true,
        ButtonChoice::Index(DENY) => false,
        _ => return Ok(ClickResult::Ignored("unknown button".into())),
    };
    let clicker = UserId::new(&click.channel, &click.clicker.handle)?;
    db.write(|c| {
        if approval.status != ApprovalStatus::Pending {
            return Ok(ClickResult::Ignored(format!("already {}", approval.status)));
        }
        let card_chat = approval.card_messaging_group_id.as_ref();
        if let Err(why) = from_the_card(c, card_chat, approval.card_message_id.as_deref(), click)? {
            tracing::warn!(approval = %id, clicker = %clicker, reason = why, "approval click not from its card; ignored");
            record_ignored_click(c, &approval, &clicker)?;
            return Ok(ClickResult::Ignored(why));
        }
        let eligible = approval.approver_user_id.as_ref() == Some(&clicker)
            || access::has_admin_privilege(c, &clicker, &approval.agent_group_id)?;
        if !eligible {
            tracing::warn!(approval = %id, clicker = %clicker, "approval click from someone who may not decide; ignored");
            record_ignored_click(c, &approval, &clicker)?;
            return Ok(ClickResult::Ignored(format!("{clicker} may not decide this")));
        }
        decide(c, &id, allow, Some(&clicker)).map(|a| ClickResult::Decided(Box::new(a)))
    })
}

/// Whether a click came from the card a request was posted as: its chat, and its message
/// when the platform gave an id. A button id alone proves nothing (anyone can copy one).
pub(crate) fn from_the_card(
    c: &Connection,
    card_chat: Option<&MessagingGroupId>,
    card_message_id: Option<&str>,
    click: &Click,
) -> Result<std::result::Result<(), String>> {
    let Some(card_chat) = card_chat else {
        return Ok(Err("no card was posted for this request".into()));
    };
    let same_chat = messaging_groups::get(c, card_chat)?
        .is_some_and(|mg| mg.channel_type == click.channel && mg.platform_id == click.chat_id);
    if !same_chat {
        return Ok(Err(
            "the click came from another chat than the card's".into()
        ));
    }
    if card_message_id.is_some_and(|m| m != click.message_id) {
        return Ok(Err(
            "the click came from another message than the card".into()
        ));
    }
    Ok(Ok(()))
}

fn record_ignored_click(c: &Connection, approval: &Approval, clicker: &UserId) -> Result<()> {
    let mut payload = approval.payload.clone();
    if !payload.is_object() {
        payload = serde_json::json!({});
    }
    let entry = serde_json::json!({ "user": clicker, "at": nanoclaw_schema::time::now() });
    match payload
        .get_mut("ignored_clicks")
        .and_then(|v| v.as_array_mut())
    {
        Some(list) => list.push(entry),
        None => payload["ignored_clicks"] = serde_json::json!([entry]),
    }
    c.execute(
        "UPDATE approvals SET payload = ?2 WHERE id = ?1",
        rusqlite::params![approval.id, payload.to_string()],
    )?;
    Ok(())
}

/// Replays the held messages of approved requests through the router (their senders now
/// pass the gate) and drops those of denied ones. Returns what routing did, for the daemon to
/// act on (wakes).
pub fn settle(db: &Db, router: &Router) -> Result<Vec<RouteOutcome>> {
    let decided = db.read(approvals::decided_with_held)?;
    let mut outcomes = Vec::new();
    for approval in decided {
        let held = db.read(|c| approvals::held_messages(c, &approval.id))?;
        if approval.status == ApprovalStatus::Approved {
            if !replay(router, approval.id.as_str(), &held, &mut outcomes)? {
                return Ok(outcomes);
            }
            tracing::info!(approval = %approval.id, messages = held.len(), "held messages released");
        } else {
            tracing::info!(approval = %approval.id, messages = held.len(), "held messages dropped");
        }
        db.write(|c| approvals::clear_held(c, &approval.id))?;
    }
    Ok(outcomes)
}

/// Routes held events (JSON) again, now that their request was decided, adding what routing
/// did to `outcomes`. False when routing failed (the channel may be gone): the caller keeps
/// the messages for a later try.
pub(crate) fn replay(
    router: &Router,
    request: &str,
    held: &[String],
    outcomes: &mut Vec<RouteOutcome>,
) -> Result<bool> {
    for event in held {
        let msg: Inbound = serde_json::from_str(event).map_err(|e| Error::Json {
            context: format!("held message of {request}"),
            source: e,
        })?;
        match router.route(&msg) {
            Ok(out) => outcomes.push(out),
            Err(e) => {
                tracing::warn!(request, error = %e, "held message not replayed yet");
                return Ok(false);
            }
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{ChannelName, PlatformId};
    use crate::router::{ChannelCaps, Sender};
    use crate::sessions::SessionStore;
    use crate::store::messaging_groups::UnknownSenderPolicy;
    use crate::store::roles::{self, Role, Scope};
    use crate::store::testing::{agent, chat_with_policy, user};
    use crate::store::wirings::{self, WiringRules};
    use std::collections::HashMap;
    use std::sync::Arc;

    struct Fx {
        _tmp: tempfile::TempDir,
        db: Arc<Db>,
        router: Router,
        held: HeldForApproval,
    }

    fn fx() -> Fx {
        let tmp = tempfile::tempdir().unwrap();
        let db = Arc::new(Db::open_in_memory().unwrap());
        let sessions = Arc::new(SessionStore::new(tmp.path()));
        let a = agent(&db, "Helper");
        let chat = chat_with_policy(
            &db,
            "telegram:-1",
            Some("Team"),
            true,
            UnknownSenderPolicy::RequestApproval,
        );
        db.write(|c| wirings::create(c, &chat.id, &a.id, WiringRules::default()))
            .unwrap();
        let owner = user(&db, "telegram:1");
        db.write(|c| roles::grant(c, &owner.id, Role::Owner, &Scope::Global, None))
            .unwrap();
        let mut caps = HashMap::new();
        caps.insert(
            ChannelName::parse("telegram").unwrap(),
            ChannelCaps::default(),
        );
        let router = Router::new(db.clone(), sessions, caps);
        let msg = Inbound {
            is_group: true,
            sender: Some(Sender {
                handle: "9".into(),
                name: Some("Nine".into()),
                is_bot: false,
            }),
            ..Inbound::text(
                &ChannelName::parse("telegram").unwrap(),
                "-1",
                None,
                "let me in",
            )
            .unwrap()
        };
        let out = router.route(&msg).unwrap();
        let held = out.held[0].clone();
        // The card went to the owner's DM.
        let dm = crate::store::testing::chat(&db, "telegram:1", Some("Owner"), false);
        db.write(|c| approvals::set_card(c, &held.approval, &owner.id, &dm.id, Some("card-1")))
            .unwrap();
        Fx {
            _tmp: tmp,
            db,
            router,
            held,
        }
    }

    fn click(by: &str, index: u32, approval: &ApprovalId) -> Click {
        Click {
            channel: ChannelName::parse("telegram").unwrap(),
            chat_id: PlatformId::parse(by).unwrap(),
            thread_id: None,
            message_id: "card-1".into(),
            clicker: Sender {
                handle: by.into(),
                name: None,
                is_bot: false,
            },
            action_id: encode_button_id(approval.as_str(), index),
        }
    }

    #[test]
    fn approve_adds_the_member_and_releases_the_held_message() {
        let f = fx();
        let got = on_click(&f.db, &click("1", ALLOW, &f.held.approval)).unwrap();
        let ClickResult::Decided(a) = got else {
            panic!("{got:?}")
        };
        assert_eq!(a.status, ApprovalStatus::Approved);
        assert_eq!(
            a.decided_by.as_ref().map(|u| u.as_str()),
            Some("telegram:1")
        );
        assert!(
            f.db.read(|c| members::is_allowed_in_chat(
                c,
                &f.held.chat.id,
                &f.held.agent,
                &f.held.sender
            ))
            .unwrap(),
            "let in, in that chat"
        );
        assert!(
            !f.db
                .read(|c| members::is_member(c, &f.held.sender, &f.held.agent))
                .unwrap(),
            "finding 9: an approval grants no membership of the agent everywhere"
        );
        let outcomes = settle(&f.db, &f.router).unwrap();
        assert_eq!(outcomes.len(), 1);
        assert_eq!(
            outcomes[0].routed.len(),
            1,
            "the held message reaches the agent"
        );
        assert!(
            settle(&f.db, &f.router).unwrap().is_empty(),
            "released once"
        );
    }

    #[test]
    fn deny_drops_the_held_message() {
        let f = fx();
        let got = on_click(&f.db, &click("1", DENY, &f.held.approval)).unwrap();
        assert!(matches!(got, ClickResult::Decided(ref a) if a.status == ApprovalStatus::Denied));
        assert!(
            !f.db
                .read(|c| members::is_member(c, &f.held.sender, &f.held.agent))
                .unwrap()
        );
        assert!(settle(&f.db, &f.router).unwrap().is_empty());
        assert!(
            f.db.read(|c| approvals::held_messages(c, &f.held.approval))
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn a_click_from_a_non_approver_is_ignored_and_recorded() {
        let f = fx();
        // The held sender tries to approve themselves with a forwarded card.
        let got = on_click(&f.db, &click("9", ALLOW, &f.held.approval)).unwrap();
        assert!(matches!(got, ClickResult::Ignored(_)), "{got:?}");
        let a =
            f.db.read(|c| approvals::get(c, &f.held.approval))
                .unwrap()
                .unwrap();
        assert_eq!(a.status, ApprovalStatus::Pending);
        assert_eq!(a.payload["ignored_clicks"][0]["user"], "telegram:9");
        // A global admin may decide, from the CLI (the card is in the owner's DM).
        let admin = user(&f.db, "telegram:2");
        f.db.write(|c| roles::grant(c, &admin.id, Role::Admin, &Scope::Global, None))
            .unwrap();
        f.db.write(|c| decide(c, &f.held.approval, false, Some(&admin.id)))
            .unwrap();
        // A second decision is not possible.
        assert!(matches!(
            on_click(&f.db, &click("1", ALLOW, &f.held.approval)).unwrap(),
            ClickResult::Ignored(_)
        ));
    }

    /// Finding 9: a click counts only from the card itself. An agent that posts a look-alike
    /// card (the same button ids) in a chat the approver reads cannot get a sender approved.
    #[test]
    fn a_click_from_another_message_or_chat_is_ignored() {
        let f = fx();
        let mut forged = click("1", ALLOW, &f.held.approval);
        forged.message_id = "agent-card-7".into();
        assert!(matches!(
            on_click(&f.db, &forged).unwrap(),
            ClickResult::Ignored(ref why) if why.contains("another message")
        ));
        let mut elsewhere = click("1", ALLOW, &f.held.approval);
        elsewhere.chat_id = PlatformId::parse("-1").unwrap();
        assert!(matches!(
            on_click(&f.db, &elsewhere).unwrap(),
            ClickResult::Ignored(ref why) if why.contains("another chat")
        ));
        let a =
            f.db.read(|c| approvals::get(c, &f.held.approval))
                .unwrap()
                .unwrap();
        assert_eq!(a.status, ApprovalStatus::Pending);
        assert!(matches!(
            on_click(&f.db, &click("1", ALLOW, &f.held.approval)).unwrap(),
            ClickResult::Decided(_)
        ));
    }

    #[test]
    fn unrelated_buttons_are_not_ours() {
        let f = fx();
        let mut c = click("1", ALLOW, &f.held.approval);
        c.action_id = "something-else".into();
        assert_eq!(on_click(&f.db, &c).unwrap(), ClickResult::NotOurs);
        c.action_id = encode_button_id("q-unknown", 0);
        assert_eq!(on_click(&f.db, &c).unwrap(), ClickResult::NotOurs);
    }
}
