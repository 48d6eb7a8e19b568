//! New group chats: the owner wires them to an agent, or ignores them.
//!
//! The first message that addresses the bot in a group chat nobody wired (the router holds
//! it, and the ones after it, in the chat's request) sends a card to the owner, or an admin,
//! picked as for sender approvals, in their own DM: one button per agent, and "Ignore". A
//! click counts only from that card and from the person it went to or another owner or
//! global admin. Wiring creates the wiring a group gets by default (the agent engages on
//! mentions), gives the agent a destination for the chat, makes a strict chat ask before
//! letting other members in (`request_approval`), and replays the held messages through the
//! router. Ignoring drops them, and the chat stays quiet until an operator wires it by hand
//! (`nanoclaw wire add`), which also settles a request still pending.
//!
//! Chatter in an unknown group that does not address the bot is not kept: nobody asked the
//! bot to read it.

use nanoclaw_plugin_api::kit::{ButtonChoice, decode_button_id, encode_button_id};
use rusqlite::Connection;

use crate::access::DmChannels;
use crate::approvals::{CardRequest, chat_label, from_the_card, replay, send_card, user_label};
use crate::db::Db;
use crate::delivery::{Delivery, Platforms};
use crate::error::{Error, Result};
use crate::ids::{AgentGroupId, ChatRequestId, UserId};
use crate::plugins::services::Click;
use crate::router::{HeldForChat, RouteOutcome, Router};
use crate::store::chat_requests::{self, ChatRequest, ChatRequestStatus};
use crate::store::messaging_groups::{self, UnknownSenderPolicy};
use crate::store::wirings::{self, WiringRules};
use crate::store::{agent_groups, roles};

/// At most this many agents are offered on one card (platforms cap buttons per message).
pub const MAX_OFFERED: usize = 8;
/// Button index of "Ignore"; agents are 0, 1, ... in the order offered.
pub const IGNORE: u32 = 99;

/// What the owner chose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice {
    Wire(AgentGroupId),
    Ignore,
}

/// Sends the card for a newly held group chat. Returns false when nobody could be asked (no
/// agents, no owner or admin, or none reachable); the request then waits for the CLI.
pub async fn ask<P: Platforms + DmChannels>(
    db: &Db,
    delivery: &Delivery<P>,
    channels: &P,
    held: &HeldForChat,
) -> Result<bool> {
    let chat = chat_label(&held.chat);
    let hint = format!(
        "wire it with `nanoclaw wire add {} <agent folder>`",
        held.chat.address()
    );
    let (agents, sender) = db.read(|c| {
        let mut agents = agent_groups::list(c)?;
        agents.sort_by(|a, b| a.display_name().cmp(b.display_name()));
        let sender = held.sender.as_ref().map(|s| user_label(c, s)).transpose()?;
        Ok((agents, sender))
    })?;
    if agents.is_empty() {
        tracing::warn!(request = %held.request, "a new group chat waits, but there is no agent to wire it to; {hint}");
        return Ok(false);
    }
    let offered: Vec<_> = agents.iter().take(MAX_OFFERED).collect();
    let mut text = match sender {
        Some(who) => format!("👥 New group chat\n\n{who} wrote to the bot in {chat}."),
        None => format!("👥 New group chat\n\nThe bot was addressed in {chat}."),
    };
    text.push_str(" Wire it to an agent, or ignore it?");
    if agents.len() > offered.len() {
        text.push_str(&format!(
            "\n\n(The first {MAX_OFFERED} agents are shown; for another, {hint}.)"
        ));
    }
    let mut buttons: Vec<(String, String)> = offered
        .iter()
        .zip(0u32..)
        .map(|(a, i)| {
            (
                encode_button_id(held.request.as_str(), i),
                a.display_name().to_string(),
            )
        })
        .collect();
    buttons.push((
        encode_button_id(held.request.as_str(), IGNORE),
        "Ignore".to_string(),
    ));
    let card = CardRequest {
        what: held.request.as_str(),
        scope: None,
        origin: &held.chat.channel_type,
        text: &text,
        buttons: &buttons,
        hint: &hint,
    };
    let Some(sent) = send_card(db, delivery, channels, card).await? else {
        return Ok(false);
    };
    let offered: Vec<AgentGroupId> = offered.into_iter().map(|a| a.id.clone()).collect();
    db.write(|c| {
        chat_requests::set_card(
            c,
            &held.request,
            &sent.approver,
            &sent.chat,
            sent.message_id.as_deref(),
            &offered,
        )
    })?;
    Ok(true)
}

/// Decides a pending request in one transaction: wiring creates the wiring and the agent's
/// destination for the chat, and makes a strict chat ask about other members. The held
/// messages are replayed (or dropped) by [`settle`]; the caller refreshes the agent's
/// sessions' destinations.
pub fn decide(
    conn: &Connection,
    id: &ChatRequestId,
    choice: &Choice,
    by: Option<&UserId>,
) -> Result<ChatRequest> {
    let (status, agent) = match choice {
        Choice::Wire(agent) => (ChatRequestStatus::Wired, Some(agent)),
        Choice::Ignore => (ChatRequestStatus::Ignored, None),
    };
    let request = chat_requests::decide(conn, id, status, agent, by)?;
    if let Some(agent) = agent {
        let chat = messaging_groups::get(conn, &request.messaging_group_id)?
            .ok_or_else(|| Error::not_found("chat", request.messaging_group_id.as_str()))?;
        wirings::create(conn, &chat.id, agent, WiringRules::for_chat(chat.is_group))?;
        if chat.unknown_sender_policy == UnknownSenderPolicy::Strict {
            messaging_groups::set_policy(conn, &chat.id, UnknownSenderPolicy::RequestApproval)?;
        }
    }
    tracing::info!(request = %id, choice = ?choice, by = ?by.map(|u| u.as_str()), "new group chat decided");
    Ok(request)
}

/// The answer to the clicker, confirming what they chose.
pub fn confirmation(conn: &Connection, request: &ChatRequest) -> Result<String> {
    let chat = messaging_groups::get(conn, &request.messaging_group_id)?
        .map_or(request.messaging_group_id.to_string(), |mg| chat_label(&mg));
    Ok(match &request.agent_group_id {
        Some(a) => {
            let agent =
                agent_groups::get(conn, a)?.map_or(a.to_string(), |g| g.display_name().to_string());
            format!("✅ Wired {chat} to {agent}.")
        }
        None => format!("🔕 Ignoring {chat}."),
    })
}

/// What a click on a button meant.
#[derive(Debug, Clone, PartialEq)]
pub enum ClickResult {
    /// Not a new-chat button.
    NotOurs,
    /// A new-chat button, but the click does not count (and why).
    Ignored(String),
    Decided(Box<ChatRequest>),
}

/// Handles a click on a new-chat card, checking where it came from and who clicked.
pub fn on_click(db: &Db, click: &Click) -> Result<ClickResult> {
    let Some(button) = decode_button_id(&click.action_id) else {
        return Ok(ClickResult::NotOurs);
    };
    let Ok(id) = ChatRequestId::parse(button.question_id) else {
        return Ok(ClickResult::NotOurs);
    };
    let Some(request) = db.read(|c| chat_requests::get(c, &id))? else {
        return Ok(ClickResult::NotOurs);
    };
    let choice = match button.choice {
        ButtonChoice::Index(IGNORE) => Choice::Ignore,
        ButtonChoice::Index(i) => match request.offered.get(i as usize) {
            Some(agent) => Choice::Wire(agent.clone()),
            None => return Ok(ClickResult::Ignored("unknown button".into())),
        },
        ButtonChoice::Literal(_) => return Ok(ClickResult::Ignored("unknown button".into())),
    };
    let clicker = UserId::new(&click.channel, &click.clicker.handle)?;
    db.write(|c| {
        if request.status != ChatRequestStatus::Pending {
            return Ok(ClickResult::Ignored(format!("already {}", request.status)));
        }
        let card_chat = request.card_messaging_group_id.as_ref();
        if let Err(why) = from_the_card(c, card_chat, request.card_message_id.as_deref(), click)? {
            tracing::warn!(request = %id, clicker = %clicker, reason = why, "new-chat click not from its card; ignored");
            return Ok(ClickResult::Ignored(why));
        }
        let eligible = request.approver_user_id.as_ref() == Some(&clicker)
            || roles::is_owner(c, &clicker)?
            || roles::is_global_admin(c, &clicker)?;
        if !eligible {
            tracing::warn!(request = %id, clicker = %clicker, "new-chat click from someone who may not decide; ignored");
            return Ok(ClickResult::Ignored(format!("{clicker} may not decide this")));
        }
        decide(c, &id, &choice, Some(&clicker)).map(|r| ClickResult::Decided(Box::new(r)))
    })
}

/// Settles requests: a pending one whose chat an operator wired by hand counts as wired;
/// the held messages of wired requests are replayed through the router, those of ignored
/// ones dropped. Returns what routing did, for the daemon to act on (wakes, cards).
pub fn settle(db: &Db, router: &Router) -> Result<Vec<RouteOutcome>> {
    db.write(|c| {
        for r in chat_requests::list(c, Some(ChatRequestStatus::Pending))? {
            if let Some(w) = wirings::for_chat(c, &r.messaging_group_id)?.first() {
                let agent = Some(&w.agent_group_id);
                chat_requests::decide(c, &r.id, ChatRequestStatus::Wired, agent, None)?;
                tracing::info!(request = %r.id, "new group chat wired by an operator");
            }
        }
        Ok(())
    })?;
    let decided = db.read(chat_requests::decided_with_held)?;
    let mut outcomes = Vec::new();
    for request in decided {
        let held = db.read(|c| chat_requests::held_messages(c, &request.id))?;
        if request.status == ChatRequestStatus::Wired {
            if !replay(router, request.id.as_str(), &held, &mut outcomes)? {
                return Ok(outcomes);
            }
            tracing::info!(request = %request.id, messages = held.len(), "held messages of a new group chat released");
        } else {
            tracing::info!(request = %request.id, messages = held.len(), "held messages of an ignored group chat dropped");
        }
        db.write(|c| chat_requests::clear_held(c, &request.id))?;
    }
    Ok(outcomes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{ChannelName, MessagingGroupId, PlatformId};
    use crate::router::{ChannelCaps, Inbound, Sender};
    use crate::sessions::SessionStore;
    use crate::store::dropped::DropReason;
    use crate::store::roles::{Role, Scope};
    use crate::store::testing::{agent, chat, user};
    use std::collections::HashMap;
    use std::sync::Arc;

    struct Fx {
        _tmp: tempfile::TempDir,
        db: Arc<Db>,
        router: Router,
        helper: AgentGroupId,
        other: AgentGroupId,
        owner: UserId,
        owner_dm: MessagingGroupId,
    }

    fn tg() -> ChannelName {
        ChannelName::parse("telegram").unwrap()
    }

    fn fx() -> Fx {
        let tmp = tempfile::tempdir().unwrap();
        let db = Arc::new(Db::open_in_memory().unwrap());
        let sessions = Arc::new(SessionStore::new(tmp.path()));
        let helper = agent(&db, "Helper").id;
        let other = agent(&db, "Other").id;
        let owner = user(&db, "telegram:1").id;
        db.write(|c| roles::grant(c, &owner, Role::Owner, &Scope::Global, None))
            .unwrap();
        let owner_dm = chat(&db, "telegram:1", Some("Owner"), false).id;
        let caps = HashMap::from([(tg(), ChannelCaps::default())]);
        let router = Router::new(db.clone(), sessions, caps);
        Fx {
            _tmp: tmp,
            db,
            router,
            helper,
            other,
            owner,
            owner_dm,
        }
    }

    fn group_msg(from: &str, text: &str, mentioned: bool) -> Inbound {
        Inbound {
            is_group: true,
            mentioned,
            chat_name: Some("Team".into()),
            sender: Some(Sender {
                handle: from.into(),
                name: None,
                is_bot: false,
            }),
            ..Inbound::text(&tg(), "-100", None, text).unwrap()
        }
    }

    /// Routes the first mention in the new group and posts its card as the owner's DM
    /// would have it, offering [Helper, Other].
    fn held(f: &Fx, from: &str) -> HeldForChat {
        let out = f
            .router
            .route(&group_msg(from, "@bot hello", true))
            .unwrap();
        assert_eq!(out.dropped, None, "held, not dropped");
        let held = out.chat_held[0].clone();
        assert!(held.new_request);
        f.db.write(|c| {
            chat_requests::set_card(
                c,
                &held.request,
                &f.owner,
                &f.owner_dm,
                Some("card-1"),
                &[f.helper.clone(), f.other.clone()],
            )
        })
        .unwrap();
        held
    }

    fn click(by: &str, index: u32, request: &ChatRequestId) -> Click {
        Click {
            channel: tg(),
            chat_id: PlatformId::parse(by).unwrap(),
            thread_id: None,
            message_id: "card-1".into(),
            clicker: Sender {
                handle: by.into(),
                name: None,
                is_bot: false,
            },
            action_id: encode_button_id(request.as_str(), index),
        }
    }

    #[test]
    fn wiring_a_new_group_releases_its_held_messages_to_the_chosen_agent() {
        let f = fx();
        let held = held(&f, "1");
        let again = f
            .router
            .route(&group_msg("1", "@bot are you there?", true))
            .unwrap();
        assert!(!again.chat_held[0].new_request, "one card per chat");
        let chatter = f.router.route(&group_msg("1", "lunch?", false)).unwrap();
        assert!(chatter.chat_held.is_empty(), "chatter is not kept");

        let got = on_click(&f.db, &click("1", 1, &held.request)).unwrap();
        let ClickResult::Decided(r) = got else {
            panic!("{got:?}")
        };
        assert_eq!(r.status, ChatRequestStatus::Wired);
        assert_eq!(
            r.agent_group_id.as_ref(),
            Some(&f.other),
            "button 1 is Other"
        );
        let (wiring, mg) =
            f.db.read(|c| {
                Ok((
                    wirings::for_chat(c, &held.chat.id)?,
                    messaging_groups::get(c, &held.chat.id)?.unwrap(),
                ))
            })
            .unwrap();
        assert_eq!(wiring.len(), 1);
        assert_eq!(wiring[0].agent_group_id, f.other);
        assert_eq!(
            wiring[0].rules,
            WiringRules::for_chat(true),
            "mentions engage"
        );
        assert_eq!(
            mg.unknown_sender_policy,
            UnknownSenderPolicy::RequestApproval,
            "other members are asked about, not dropped"
        );

        let outcomes = settle(&f.db, &f.router).unwrap();
        let routed: Vec<_> = outcomes.iter().flat_map(|o| &o.routed).collect();
        assert_eq!(routed.len(), 2, "both mentions reach the agent");
        assert!(routed.iter().all(|r| r.session.agent_group_id == f.other));
        assert!(
            settle(&f.db, &f.router).unwrap().is_empty(),
            "released once"
        );
    }

    #[test]
    fn an_unknown_member_who_opened_the_chat_is_asked_about_after_wiring() {
        let f = fx();
        let held = held(&f, "9");
        on_click(&f.db, &click("1", 0, &held.request)).unwrap();
        let outcomes = settle(&f.db, &f.router).unwrap();
        assert!(outcomes[0].routed.is_empty());
        assert_eq!(outcomes[0].held.len(), 1, "a sender approval opens");
        assert_eq!(outcomes[0].held[0].agent, f.helper);
    }

    #[test]
    fn ignoring_a_group_drops_its_messages_and_asks_nobody_again() {
        let f = fx();
        let held = held(&f, "1");
        let got = on_click(&f.db, &click("1", IGNORE, &held.request)).unwrap();
        assert!(
            matches!(got, ClickResult::Decided(ref r) if r.status == ChatRequestStatus::Ignored)
        );
        assert!(settle(&f.db, &f.router).unwrap().is_empty());
        assert!(
            f.db.read(|c| chat_requests::held_messages(c, &held.request))
                .unwrap()
                .is_empty()
        );
        let later = f
            .router
            .route(&group_msg("1", "@bot hello?", true))
            .unwrap();
        assert!(later.chat_held.is_empty());
        assert_eq!(later.dropped, Some(DropReason::ChatIgnored));
        assert!(
            f.db.read(|c| wirings::for_chat(c, &held.chat.id))
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn clicks_count_only_from_the_card_and_from_someone_who_may_decide() {
        let f = fx();
        let held = held(&f, "9");
        // The member who wrote tries to wire the group with a copied button.
        let got = on_click(&f.db, &click("9", 0, &held.request)).unwrap();
        assert!(matches!(got, ClickResult::Ignored(_)), "{got:?}");
        let mut forged = click("1", 0, &held.request);
        forged.message_id = "agent-card".into();
        assert!(matches!(
            on_click(&f.db, &forged).unwrap(),
            ClickResult::Ignored(ref why) if why.contains("another message")
        ));
        let mut elsewhere = click("1", 0, &held.request);
        elsewhere.chat_id = PlatformId::parse("-100").unwrap();
        assert!(matches!(
            on_click(&f.db, &elsewhere).unwrap(),
            ClickResult::Ignored(ref why) if why.contains("another chat")
        ));
        assert!(matches!(
            on_click(&f.db, &click("1", 7, &held.request)).unwrap(),
            ClickResult::Ignored(ref why) if why == "unknown button"
        ));
        let r =
            f.db.read(|c| chat_requests::get(c, &held.request))
                .unwrap()
                .unwrap();
        assert_eq!(r.status, ChatRequestStatus::Pending);
        assert!(matches!(
            on_click(&f.db, &click("1", 0, &held.request)).unwrap(),
            ClickResult::Decided(_)
        ));
        assert!(matches!(
            on_click(&f.db, &click("1", IGNORE, &held.request)).unwrap(),
            ClickResult::Ignored(ref why) if why.contains("already")
        ));
    }

    #[test]
    fn wiring_by_hand_settles_a_pending_request() {
        let f = fx();
        let held = held(&f, "1");
        f.db.write(|c| wirings::create(c, &held.chat.id, &f.helper, WiringRules::for_chat(true)))
            .unwrap();
        let outcomes = settle(&f.db, &f.router).unwrap();
        assert_eq!(outcomes.len(), 1);
        assert_eq!(outcomes[0].routed.len(), 1);
        let r =
            f.db.read(|c| chat_requests::get(c, &held.request))
                .unwrap()
                .unwrap();
        assert_eq!(r.status, ChatRequestStatus::Wired);
        assert_eq!(r.decided_by, None);
    }

    #[test]
    fn buttons_that_are_not_ours_are_left_alone() {
        let f = fx();
        let held = held(&f, "1");
        let mut c = click("1", 0, &held.request);
        c.action_id = encode_button_id("appr-unknown", 0);
        assert_eq!(on_click(&f.db, &c).unwrap(), ClickResult::NotOurs);
        c.action_id = "plain".into();
        assert_eq!(on_click(&f.db, &c).unwrap(), ClickResult::NotOurs);
    }
}
