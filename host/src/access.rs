//! The privilege model, in both directions: who may talk to which agent ([`inbound_gate`]),
//! where an agent may send ([`may_post_to_chat`], [`may_message_agent`]), who approves, and
//! how to reach an approver by DM.
//!
//! - **owner**: global; full control. The first paired user becomes one.
//! - **admin**: global, or scoped to one agent group. Implicitly a member of what it administers.
//! - **member**: an explicit `agent_group_members` row; talks to that agent.
//! - **approved sender**: let in by an approver; talks to that agent in that chat only.
//! - anyone else is an unknown sender, handled by the chat's unknown-sender policy.

use std::future::Future;

use rusqlite::Connection;
use serde::Serialize;

use crate::db::Db;
use crate::error::Result;
use crate::ids::{AgentGroupId, ChannelName, ChatAddress, PlatformId, UserId};
use crate::sessions::Session;
use crate::store::destinations::{self, Target};
use crate::store::dropped::DropReason;
use crate::store::messaging_groups::{
    self, MessagingGroup, NewMessagingGroup, UnknownSenderPolicy,
};
use crate::store::roles::{self, Role, Scope};
use crate::store::wirings::SenderScope;
use crate::store::{agent_groups, members, user_dms, users};

/// Why a user may access an agent group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Grant {
    Owner,
    GlobalAdmin,
    AdminOfGroup,
    Member,
}

/// Why a user may not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Denial {
    /// No such user is known.
    UnknownUser,
    /// Known, but neither privileged nor a member.
    NotMember,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "decision", content = "reason")]
pub enum AccessDecision {
    Allowed(Grant),
    Denied(Denial),
}

impl AccessDecision {
    pub fn is_allowed(self) -> bool {
        matches!(self, AccessDecision::Allowed(_))
    }
}

/// May `user` talk to `group`? Checked in order: unknown user, owner, global admin, admin of
/// the group, member.
pub fn can_access_agent_group(
    conn: &Connection,
    user: &UserId,
    group: &AgentGroupId,
) -> Result<AccessDecision> {
    if users::get(conn, user)?.is_none() {
        return Ok(AccessDecision::Denied(Denial::UnknownUser));
    }
    let decision = if roles::is_owner(conn, user)? {
        AccessDecision::Allowed(Grant::Owner)
    } else if roles::is_global_admin(conn, user)? {
        AccessDecision::Allowed(Grant::GlobalAdmin)
    } else if roles::is_admin_of(conn, user, group)? {
        AccessDecision::Allowed(Grant::AdminOfGroup)
    } else if members::is_member(conn, user, group)? {
        AccessDecision::Allowed(Grant::Member)
    } else {
        AccessDecision::Denied(Denial::NotMember)
    };
    Ok(decision)
}

/// The inbound gate's decision about one message for one wired agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gate {
    /// The message goes to the agent.
    Pass,
    /// The sender is unknown here and the chat asks an approver: hold the message.
    Hold(UserId),
    /// The message does not go to the agent (and why, for the record).
    Refuse(DropReason),
}

/// The inbound gate: may this message from `sender` in `chat` reach `agent`?
///
/// A `public` chat lets anyone in, unless the wiring takes only known senders. Otherwise the
/// sender must be the owner, a global admin, an admin of the agent, a member of it, or let
/// into this chat for this agent by an approver. An unknown sender is held for an approver
/// under `request_approval` and refused under `strict`. A message without a sender identity
/// passes only a public chat.
pub fn inbound_gate(
    conn: &Connection,
    chat: &MessagingGroup,
    agent: &AgentGroupId,
    sender: Option<&UserId>,
    scope: SenderScope,
) -> Result<Gate> {
    let public = chat.unknown_sender_policy == UnknownSenderPolicy::Public;
    if public && scope == SenderScope::All {
        return Ok(Gate::Pass);
    }
    let known = match sender {
        Some(u) => {
            can_access_agent_group(conn, u, agent)?.is_allowed()
                || members::is_allowed_in_chat(conn, &chat.id, agent, u)?
        }
        None => false,
    };
    Ok(match (known, chat.unknown_sender_policy, sender) {
        (true, _, _) => Gate::Pass,
        (false, UnknownSenderPolicy::Public, _) => Gate::Refuse(DropReason::SenderScope),
        (false, UnknownSenderPolicy::RequestApproval, Some(u)) => Gate::Hold(u.clone()),
        (false, _, _) => Gate::Refuse(DropReason::UnknownSenderStrict),
    })
}

/// Why an agent may not send somewhere; the text says what the operator can do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied(pub String);

/// The outbound ACL for chats: may `session`'s agent post to `chat`? Its session's own
/// origin chat always; any other chat only through a row in the agent's destinations.
pub fn may_post_to_chat(
    conn: &Connection,
    session: &Session,
    chat: &ChatAddress,
) -> Result<std::result::Result<MessagingGroup, Denied>> {
    let Some(mg) = messaging_groups::find(conn, &chat.channel, &chat.platform_id)? else {
        return Ok(Err(Denied(format!("no known chat {chat}"))));
    };
    if session.messaging_group_id.as_ref() == Some(&mg.id)
        || destinations::allows(
            conn,
            &session.agent_group_id,
            &Target::Channel(mg.id.clone()),
        )?
    {
        return Ok(Ok(mg));
    }
    Ok(Err(Denied(format!(
        "agent {} has no destination for chat {chat}; add one with `nanoclaw destinations add`",
        session.agent_group_id
    ))))
}

/// The outbound ACL for agents: may agent `from` message agent `to`? Itself always; another
/// agent only through a row in `from`'s destinations.
pub fn may_message_agent(
    conn: &Connection,
    from: &AgentGroupId,
    to: &AgentGroupId,
) -> Result<std::result::Result<(), Denied>> {
    if agent_groups::get(conn, to)?.is_none() {
        return Ok(Err(Denied(format!("agent {to} does not exist"))));
    }
    if from == to || destinations::allows(conn, from, &Target::Agent(to.clone()))? {
        return Ok(Ok(()));
    }
    Ok(Err(Denied(format!(
        "agent {from} has no destination for agent {to}; add one with `nanoclaw destinations add`"
    ))))
}

/// Owner, global admin, or admin of `group`: may decide approvals and run admin commands for it.
pub fn has_admin_privilege(conn: &Connection, user: &UserId, group: &AgentGroupId) -> Result<bool> {
    Ok(roles::is_owner(conn, user)?
        || roles::is_global_admin(conn, user)?
        || roles::is_admin_of(conn, user, group)?)
}

/// Everyone with admin privilege over `group`: owners, global admins, admins of the group.
/// The container receives this as `NANOCLAW_ADMIN_USER_IDS`.
pub fn admin_user_ids(conn: &Connection, group: &AgentGroupId) -> Result<Vec<UserId>> {
    let mut ids = roles::holders(conn, Role::Owner, &Scope::Global)?;
    ids.extend(roles::holders(conn, Role::Admin, &Scope::Global)?);
    ids.extend(roles::holders(
        conn,
        Role::Admin,
        &Scope::Group(group.clone()),
    )?);
    dedup_in_order(&mut ids);
    Ok(ids)
}

/// Who should decide a request about `group`, in order of preference: admins scoped to the
/// group, then global admins, then owners (each oldest grant first), without duplicates.
/// `None` skips the scoped tier.
pub fn pick_approver(conn: &Connection, group: Option<&AgentGroupId>) -> Result<Vec<UserId>> {
    let mut ids = match group {
        Some(g) => roles::holders(conn, Role::Admin, &Scope::Group(g.clone()))?,
        None => Vec::new(),
    };
    ids.extend(roles::holders(conn, Role::Admin, &Scope::Global)?);
    ids.extend(roles::holders(conn, Role::Owner, &Scope::Global)?);
    dedup_in_order(&mut ids);
    Ok(ids)
}

fn dedup_in_order(ids: &mut Vec<UserId>) {
    let mut seen = std::collections::HashSet::new();
    ids.retain(|id| seen.insert(id.clone()));
}

/// How a channel reaches a user privately.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DmRoute {
    /// The user's handle is itself the DM chat id (Telegram, WhatsApp, iMessage, Matrix, email).
    Direct,
    /// The platform must open or look up the DM chat (Discord, Slack, Teams, Webex, Google Chat).
    OpenDm,
}

/// The loaded channels, as far as DMs are concerned. The daemon implements this over its
/// plugins; tests implement it directly.
pub trait DmChannels: Sync {
    /// How `channel` reaches users, or `None` if no plugin for it is running.
    fn dm_route(&self, channel: &ChannelName) -> Option<DmRoute>;

    /// Asks the channel's plugin for the DM chat of `handle` (only for [`DmRoute::OpenDm`]).
    fn open_dm(
        &self,
        channel: &ChannelName,
        handle: &str,
    ) -> impl Future<Output = std::result::Result<PlatformId, String>> + Send;
}

/// The chat that reaches `user` privately, resolved through the `user_dms` cache and, on a
/// miss, the channel (opening a DM where the platform needs it). `None` if the user is
/// unknown, their channel is not running, or the platform refused.
pub async fn ensure_user_dm(
    db: &Db,
    channels: &impl DmChannels,
    user: &UserId,
) -> Result<Option<MessagingGroup>> {
    let channel = user.channel();
    let cached = db.read(|c| {
        let Some(u) = users::get(c, user)? else {
            return Ok(Err(()));
        };
        let hit = match user_dms::get(c, user, &channel)? {
            Some(id) => messaging_groups::get(c, &id)?,
            None => None,
        };
        Ok(Ok((u, hit)))
    })?;
    let Ok((known, hit)) = cached else {
        return Ok(None);
    };
    if let Some(chat) = hit {
        return Ok(Some(chat));
    }
    let platform_id = match channels.dm_route(&channel) {
        None => return Ok(None),
        Some(DmRoute::Direct) => PlatformId::parse(user.handle())?,
        Some(DmRoute::OpenDm) => match channels.open_dm(&channel, user.handle()).await {
            Ok(id) => id,
            Err(e) => {
                tracing::warn!(user = %user, channel = %channel, error = %e, "could not open a DM");
                return Ok(None);
            }
        },
    };
    let chat = db.write(|c| {
        let (chat, _) = messaging_groups::get_or_create(
            c,
            &NewMessagingGroup {
                channel_type: channel.clone(),
                platform_id,
                name: known.display_name.clone(),
                is_group: false,
                unknown_sender_policy: UnknownSenderPolicy::Strict,
            },
        )?;
        user_dms::set(c, user, &channel, &chat.id)?;
        Ok(chat)
    })?;
    Ok(Some(chat))
}

/// Where an approval card goes: the first approver reachable by DM, preferring approvers on
/// the same kind of channel as the request came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalDelivery {
    pub approver: UserId,
    pub chat: MessagingGroup,
}

pub async fn pick_approval_delivery(
    db: &Db,
    channels: &impl DmChannels,
    approvers: &[UserId],
    origin: Option<&ChannelName>,
) -> Result<Option<ApprovalDelivery>> {
    if let Some(origin) = origin {
        for approver in approvers.iter().filter(|a| &a.channel() == origin) {
            if let Some(chat) = ensure_user_dm(db, channels, approver).await? {
                return Ok(Some(ApprovalDelivery {
                    approver: approver.clone(),
                    chat,
                }));
            }
        }
    }
    for approver in approvers {
        if let Some(chat) = ensure_user_dm(db, channels, approver).await? {
            return Ok(Some(ApprovalDelivery {
                approver: approver.clone(),
                chat,
            }));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::{agent, db, user};
    use std::collections::HashMap;
    use std::sync::Mutex;

    /// Channels for tests: telegram is direct, discord opens DMs (and can be told to fail).
    #[derive(Default)]
    struct FakeChannels {
        routes: HashMap<String, DmRoute>,
        failing_handles: Vec<String>,
        opened: Mutex<Vec<String>>,
    }

    impl FakeChannels {
        fn new() -> Self {
            let mut routes = HashMap::new();
            routes.insert("telegram".to_string(), DmRoute::Direct);
            routes.insert("discord".to_string(), DmRoute::OpenDm);
            FakeChannels {
                routes,
                ..Default::default()
            }
        }
    }

    impl DmChannels for FakeChannels {
        fn dm_route(&self, channel: &ChannelName) -> Option<DmRoute> {
            self.routes.get(channel.as_str()).copied()
        }

        async fn open_dm(
            &self,
            _channel: &ChannelName,
            handle: &str,
        ) -> std::result::Result<PlatformId, String> {
            self.opened.lock().unwrap().push(handle.to_string());
            if self.failing_handles.iter().any(|h| h == handle) {
                return Err("user has DMs closed".into());
            }
            PlatformId::parse(&format!("dm-{handle}")).map_err(|e| e.to_string())
        }
    }

    fn grant(db: &Db, u: &UserId, role: Role, scope: Scope) {
        db.write(|c| roles::grant(c, u, role, &scope, None))
            .unwrap();
    }

    fn block_on<F: Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn access_rules_in_order() {
        let db = db();
        let a = agent(&db, "A");
        let b = agent(&db, "B");
        let owner = user(&db, "telegram:1").id;
        let gadmin = user(&db, "telegram:2").id;
        let sadmin = user(&db, "telegram:3").id;
        let member = user(&db, "telegram:4").id;
        let known = user(&db, "telegram:5").id;
        let ghost = UserId::parse("telegram:6").unwrap();
        grant(&db, &owner, Role::Owner, Scope::Global);
        grant(&db, &gadmin, Role::Admin, Scope::Global);
        grant(&db, &sadmin, Role::Admin, Scope::Group(a.id.clone()));
        db.write(|c| members::add(c, &member, &a.id, None)).unwrap();

        let check =
            |u: &UserId, g: &AgentGroupId| db.read(|c| can_access_agent_group(c, u, g)).unwrap();
        use AccessDecision::*;
        assert_eq!(check(&owner, &a.id), Allowed(Grant::Owner));
        assert_eq!(check(&gadmin, &b.id), Allowed(Grant::GlobalAdmin));
        assert_eq!(check(&sadmin, &a.id), Allowed(Grant::AdminOfGroup));
        assert_eq!(
            check(&sadmin, &b.id),
            Denied(Denial::NotMember),
            "a scoped admin is scoped"
        );
        assert_eq!(check(&member, &a.id), Allowed(Grant::Member));
        assert_eq!(check(&member, &b.id), Denied(Denial::NotMember));
        assert_eq!(check(&known, &a.id), Denied(Denial::NotMember));
        assert_eq!(check(&ghost, &a.id), Denied(Denial::UnknownUser));

        let admin =
            |u: &UserId, g: &AgentGroupId| db.read(|c| has_admin_privilege(c, u, g)).unwrap();
        assert!(admin(&owner, &b.id));
        assert!(admin(&gadmin, &b.id));
        assert!(admin(&sadmin, &a.id));
        assert!(!admin(&sadmin, &b.id));
        assert!(!admin(&member, &a.id));
    }

    #[test]
    fn approvers_scoped_first_then_global_then_owners_deduplicated() {
        let db = db();
        let a = agent(&db, "A");
        let owner = user(&db, "telegram:1").id;
        let gadmin = user(&db, "telegram:2").id;
        let sadmin = user(&db, "discord:3").id;
        let both = user(&db, "telegram:4").id;
        grant(&db, &owner, Role::Owner, Scope::Global);
        grant(&db, &gadmin, Role::Admin, Scope::Global);
        grant(&db, &sadmin, Role::Admin, Scope::Group(a.id.clone()));
        // Someone who is both owner and global admin appears once, in the earlier tier.
        grant(&db, &both, Role::Owner, Scope::Global);
        grant(&db, &both, Role::Admin, Scope::Global);

        let picked = db.read(|c| pick_approver(c, Some(&a.id))).unwrap();
        assert_eq!(
            picked,
            vec![sadmin.clone(), gadmin.clone(), both.clone(), owner.clone()]
        );
        let unscoped = db.read(|c| pick_approver(c, None)).unwrap();
        assert_eq!(unscoped, vec![gadmin.clone(), both.clone(), owner.clone()]);
        let admins = db.read(|c| admin_user_ids(c, &a.id)).unwrap();
        assert_eq!(admins, vec![owner, both, gadmin, sadmin]);
    }

    #[test]
    fn owner_is_the_fallback_approver() {
        let db = db();
        let a = agent(&db, "A");
        let owner = user(&db, "telegram:1").id;
        assert!(
            db.read(|c| pick_approver(c, Some(&a.id)))
                .unwrap()
                .is_empty()
        );
        grant(&db, &owner, Role::Owner, Scope::Global);
        assert_eq!(
            db.read(|c| pick_approver(c, Some(&a.id))).unwrap(),
            vec![owner]
        );
    }

    #[test]
    fn ensure_user_dm_direct_and_cached() {
        let db = db();
        let alice = db
            .write(|c| users::upsert(c, &UserId::parse("telegram:42")?, Some("Alice")))
            .unwrap();
        let channels = FakeChannels::new();
        let chat = block_on(ensure_user_dm(&db, &channels, &alice.id))
            .unwrap()
            .unwrap();
        assert_eq!(
            chat.platform_id.as_str(),
            "42",
            "telegram DMs address the handle directly"
        );
        assert_eq!(chat.name.as_deref(), Some("Alice"));
        assert!(!chat.is_group);
        assert_eq!(chat.unknown_sender_policy, UnknownSenderPolicy::Strict);
        let again = block_on(ensure_user_dm(&db, &channels, &alice.id))
            .unwrap()
            .unwrap();
        assert_eq!(again.id, chat.id);
        assert!(channels.opened.lock().unwrap().is_empty());
    }

    #[test]
    fn ensure_user_dm_opens_once_and_handles_failures() {
        let db = db();
        let bob = user(&db, "discord:7").id;
        let carol = user(&db, "discord:8").id;
        let eve = user(&db, "slack:9").id;
        let channels = FakeChannels {
            failing_handles: vec!["8".into()],
            ..FakeChannels::new()
        };
        let chat = block_on(ensure_user_dm(&db, &channels, &bob))
            .unwrap()
            .unwrap();
        assert_eq!(chat.platform_id.as_str(), "dm-7");
        block_on(ensure_user_dm(&db, &channels, &bob))
            .unwrap()
            .unwrap();
        assert_eq!(
            *channels.opened.lock().unwrap(),
            vec!["7".to_string()],
            "cached after the first open"
        );
        assert!(
            block_on(ensure_user_dm(&db, &channels, &carol))
                .unwrap()
                .is_none(),
            "platform refused"
        );
        assert!(
            block_on(ensure_user_dm(&db, &channels, &eve))
                .unwrap()
                .is_none(),
            "slack is not loaded"
        );
        let ghost = UserId::parse("telegram:404").unwrap();
        assert!(
            block_on(ensure_user_dm(&db, &channels, &ghost))
                .unwrap()
                .is_none(),
            "unknown user"
        );
    }

    #[test]
    fn approval_delivery_prefers_the_origin_channel_and_skips_unreachable() {
        let db = db();
        let tg_admin = user(&db, "telegram:1").id;
        let dc_broken = user(&db, "discord:8").id;
        let dc_ok = user(&db, "discord:9").id;
        let channels = FakeChannels {
            failing_handles: vec!["8".into()],
            ..FakeChannels::new()
        };
        let approvers = vec![tg_admin.clone(), dc_broken.clone(), dc_ok.clone()];

        let discord = ChannelName::parse("discord").unwrap();
        let picked = block_on(pick_approval_delivery(
            &db,
            &channels,
            &approvers,
            Some(&discord),
        ))
        .unwrap()
        .unwrap();
        assert_eq!(
            picked.approver, dc_ok,
            "same channel kind first, unreachable one skipped"
        );

        let slack = ChannelName::parse("slack").unwrap();
        let picked = block_on(pick_approval_delivery(
            &db,
            &channels,
            &approvers,
            Some(&slack),
        ))
        .unwrap()
        .unwrap();
        assert_eq!(
            picked.approver, tg_admin,
            "no approver on slack: first reachable in order"
        );

        let only_broken = vec![dc_broken];
        assert!(
            block_on(pick_approval_delivery(&db, &channels, &only_broken, None))
                .unwrap()
                .is_none()
        );
    }
}
