//! Operator commands over the stores: users, roles, members, agent groups, chats, wiring,
//! destinations, dropped messages, sessions.

use anyhow::{Context, bail};

use super::output::{self, Format, Table, opt};
use super::*;
use crate::db::Db;
use crate::ids::SessionId;
use crate::sessions::{SessionStore, registry};
use crate::store::agent_groups::{self, GroupFolder, NewAgentGroup};
use crate::store::destinations::{self, Target};
use crate::store::messaging_groups::{self, NewMessagingGroup};
use crate::store::roles::{self, Scope};
use crate::store::wirings::{self, WiringRules};
use crate::store::{dropped, members, users};

pub(super) fn run(paths: &Paths, format: Format, command: Command) -> anyhow::Result<()> {
    let db = Db::open(&paths.db())
        .with_context(|| format!("open the database in {}", paths.home().display()))?;
    let sessions = SessionStore::new(paths.sessions());
    match command {
        Command::Migrate => {
            // Opening the database applied any pending migration.
            let version = db.read(|c| {
                Ok(
                    c.query_row("SELECT MAX(version) FROM schema_migrations", [], |r| {
                        r.get::<_, u32>(0)
                    })?,
                )
            })?;
            println!(
                "database {} is at schema version {version}",
                db.path().display()
            );
            Ok(())
        }
        Command::Users(cmd) => users_cmd(&db, format, cmd),
        Command::Roles(cmd) => roles_cmd(&db, format, cmd),
        Command::Members(cmd) => members_cmd(&db, format, cmd),
        Command::Groups(cmd) => groups_cmd(paths, &db, format, cmd),
        Command::Chats(cmd) => chats_cmd(paths, &db, &sessions, format, cmd),
        Command::Wire(cmd) => wire_cmd(paths, &db, &sessions, format, cmd),
        Command::Destinations(cmd) => destinations_cmd(&db, &sessions, format, cmd),
        Command::Dropped(args) => dropped_cmd(&db, format, args),
        Command::Sessions(cmd) => sessions_cmd(&db, format, cmd),
        Command::Usage(args) => usage_cmd(&db, format, args),
        Command::Tasks(cmd) => tasks_cmd(paths, &db, format, cmd),
        Command::Approvals(cmd) => approvals_cmd(paths, &db, format, cmd),
        Command::Run(_)
        | Command::Chat(_)
        | Command::Plugins(_)
        | Command::Pair(_)
        | Command::InitFirstAgent(_)
        | Command::Doctor { .. } => unreachable!("dispatched in cli::run"),
    }
}

fn agent(db: &Db, reference: &str) -> anyhow::Result<agent_groups::AgentGroup> {
    Ok(db.read(|c| agent_groups::resolve(c, reference))?)
}

fn scope(db: &Db, agent_ref: Option<&str>) -> anyhow::Result<Scope> {
    Ok(match agent_ref {
        None => Scope::Global,
        Some(r) => Scope::Group(agent(db, r)?.id),
    })
}

fn users_cmd(db: &Db, format: Format, cmd: UsersCmd) -> anyhow::Result<()> {
    match cmd {
        UsersCmd::List => {
            let list = db.read(users::list)?;
            output::list(format, &list, |items| {
                let mut t = Table::new(&["USER", "NAME", "SINCE"]);
                for u in items {
                    t.row(vec![
                        u.id.to_string(),
                        opt(u.display_name.as_deref()),
                        u.created_at.clone(),
                    ]);
                }
                t
            })
        }
        UsersCmd::Add { user, name } => {
            let u = db.write(|c| users::upsert(c, &user, name.as_deref()))?;
            output::item(format, &u, || format!("user {} ({})", u.id, u.label()))
        }
        UsersCmd::Remove { user } => {
            db.write(|c| users::delete(c, &user))?;
            println!("removed user {user}");
            Ok(())
        }
    }
}

fn roles_cmd(db: &Db, format: Format, cmd: RolesCmd) -> anyhow::Result<()> {
    match cmd {
        RolesCmd::List { user } => {
            let list = db.read(|c| roles::list(c, user.as_ref()))?;
            output::list(format, &list, |items| {
                let mut t = Table::new(&["USER", "ROLE", "SCOPE", "GRANTED"]);
                for g in items {
                    let scope = g
                        .agent_group_id
                        .as_ref()
                        .map_or("global".to_string(), |a| a.to_string());
                    t.row(vec![
                        g.user_id.to_string(),
                        g.role.to_string(),
                        scope,
                        g.granted_at.clone(),
                    ]);
                }
                t
            })
        }
        RolesCmd::Grant { user, role, agent } => {
            let scope = scope(db, agent.as_deref())?;
            let new = db.write(|c| {
                users::require(c, &user)?;
                roles::grant(c, &user, role, &scope, None)
            })?;
            let where_ = scope
                .group()
                .map_or("globally".to_string(), |g| format!("for {g}"));
            if new {
                println!("granted {role} to {user} {where_}");
            } else {
                println!("{user} already is {role} {where_}");
            }
            Ok(())
        }
        RolesCmd::Revoke { user, role, agent } => {
            let scope = scope(db, agent.as_deref())?;
            if !db.write(|c| roles::revoke(c, &user, role, &scope))? {
                bail!("{user} has no such {role} grant");
            }
            println!("revoked {role} from {user}");
            Ok(())
        }
    }
}

fn members_cmd(db: &Db, format: Format, cmd: MembersCmd) -> anyhow::Result<()> {
    match cmd {
        MembersCmd::List { agent: a } => {
            let group = a.as_deref().map(|r| agent(db, r)).transpose()?;
            let list = db.read(|c| members::list(c, group.as_ref().map(|g| &g.id)))?;
            output::list(format, &list, |items| {
                let mut t = Table::new(&["USER", "AGENT GROUP", "IN", "ADDED"]);
                for m in items {
                    t.row(vec![
                        m.user_id.to_string(),
                        m.agent_group_id.to_string(),
                        m.chat
                            .as_ref()
                            .map_or("every chat".to_string(), |c| c.to_string()),
                        m.added_at.clone(),
                    ]);
                }
                t
            })
        }
        MembersCmd::Add { user, agent: a } => {
            let group = agent(db, &a)?;
            let added = db.write(|c| {
                users::upsert(c, &user, None)?;
                members::add(c, &user, &group.id, None)
            })?;
            println!(
                "{user} {} a member of {}",
                if added { "is now" } else { "already is" },
                group.folder
            );
            Ok(())
        }
        MembersCmd::Remove { user, agent: a } => {
            let group = agent(db, &a)?;
            if !db.write(|c| members::remove(c, &user, &group.id))? {
                bail!("{user} has no access to {} to remove", group.folder);
            }
            println!("{user} no longer has access to {}", group.folder);
            Ok(())
        }
    }
}

fn groups_cmd(paths: &Paths, db: &Db, format: Format, cmd: GroupsCmd) -> anyhow::Result<()> {
    match cmd {
        GroupsCmd::List => {
            let list = db.read(agent_groups::list)?;
            output::list(format, &list, |items| {
                let mut t = Table::new(&["ID", "NAME", "FOLDER", "PROVIDER"]);
                for g in items {
                    let provider = g.provider.map_or("default".to_string(), |p| p.to_string());
                    t.row(vec![
                        g.id.to_string(),
                        g.name.clone(),
                        g.folder.to_string(),
                        provider,
                    ]);
                }
                t
            })
        }
        GroupsCmd::Create {
            name,
            folder,
            provider,
            assistant_name,
        } => {
            let folder = folder.as_deref().map(GroupFolder::parse).transpose()?;
            let group = db.write(|c| {
                agent_groups::create(
                    c,
                    NewAgentGroup {
                        name,
                        folder,
                        provider,
                        assistant_name,
                    },
                )
            })?;
            let dir = paths.groups().join(group.folder.as_str());
            std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
            output::item(format, &group, || {
                format!("created agent group {} in {}", group.id, dir.display())
            })
        }
        GroupsCmd::Show { agent: a } => {
            let group = agent(db, &a)?;
            let (wiring, dests, admins) = db.read(|c| {
                Ok((
                    wirings::list(c, Some(&group.id))?,
                    destinations::list(c, &group.id)?,
                    crate::access::admin_user_ids(c, &group.id)?,
                ))
            })?;
            let detail = serde_json::json!({
                "group": group, "wirings": wiring, "destinations": dests, "admins": admins,
            });
            output::item(format, &detail, || {
                let mut s = format!(
                    "{} ({})\n  folder: {}\n  provider: {}\n",
                    group.name,
                    group.id,
                    group.folder,
                    group
                        .provider
                        .map_or("default".to_string(), |p| p.to_string())
                );
                if let Some(model) = group.container_config.get("model").and_then(|m| m.as_str()) {
                    s += &format!("  model: {model}\n");
                }
                if let Some(budget) = group.daily_token_budget() {
                    s += &format!("  daily token budget: {budget}\n");
                }
                s += &format!("  wired chats: {}\n", wiring.len());
                for d in &dests {
                    let target = match &d.target {
                        Target::Channel(id) => format!("chat {id}"),
                        Target::Agent(id) => format!("agent {id}"),
                    };
                    s += &format!("  destination {} -> {target}\n", d.local_name);
                }
                let admins: Vec<_> = admins.iter().map(|a| a.to_string()).collect();
                s += &format!(
                    "  admins: {}",
                    if admins.is_empty() {
                        "-".to_string()
                    } else {
                        admins.join(", ")
                    }
                );
                s
            })
        }
        GroupsCmd::Set {
            agent: a,
            provider,
            assistant_name,
            image,
            model,
            daily_tokens,
        } => {
            let group = agent(db, &a)?;
            if provider.is_none()
                && assistant_name.is_none()
                && image.is_none()
                && model.is_none()
                && daily_tokens.is_none()
            {
                bail!(
                    "nothing to change: pass --provider, --assistant-name, --image, --model and/or --daily-tokens"
                );
            }
            let daily_tokens = match daily_tokens.as_deref() {
                None => None,
                Some("off") => Some(None),
                Some(n) => match n.parse::<u64>() {
                    Ok(n) if n > 0 => Some(Some(n)),
                    _ => bail!(
                        "--daily-tokens takes a positive number of tokens or `off`, not {n:?}"
                    ),
                },
            };
            db.write(|c| {
                if let Some(p) = &provider {
                    let p = if p == "default" {
                        None
                    } else {
                        Some(AgentProvider::parse(p)?)
                    };
                    agent_groups::set_provider(c, &group.id, p)?;
                }
                if let Some(n) = &assistant_name {
                    agent_groups::set_assistant_name(c, &group.id, Some(n))?;
                }
                let mut config = group.container_config.clone();
                if !config.is_object() {
                    config = serde_json::json!({});
                }
                let mut set = |key: &str, value: Option<serde_json::Value>| {
                    if let Some(o) = config.as_object_mut() {
                        match value {
                            Some(v) => o.insert(key.to_string(), v),
                            None => o.remove(key),
                        };
                    }
                };
                let text =
                    |v: &String| (v != "default").then(|| serde_json::Value::from(v.as_str()));
                if let Some(image) = &image {
                    set("image", text(image));
                }
                if let Some(model) = &model {
                    set("model", text(model));
                }
                if let Some(budget) = daily_tokens {
                    set(
                        agent_groups::DAILY_TOKENS_KEY,
                        budget.map(serde_json::Value::from),
                    );
                }
                if config != group.container_config {
                    agent_groups::set_container_config(c, &group.id, &config)?;
                }
                Ok(())
            })?;
            println!("updated {}", group.folder);
            Ok(())
        }
        GroupsCmd::Mount {
            agent: a,
            host_path,
            name,
            read_write,
        } => {
            let group = agent(db, &a)?;
            let host_path = std::path::absolute(&host_path)
                .with_context(|| format!("resolve {}", host_path.display()))?;
            let name = match name {
                Some(n) => n,
                None => host_path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .map(str::to_string)
                    .ok_or_else(|| {
                        anyhow::anyhow!(
                            "give --name: {} has no usable last component",
                            host_path.display()
                        )
                    })?,
            };
            let mut config = mount_free(&group.container_config, &name);
            let mut mounts = config["mounts"].as_array().cloned().unwrap_or_default();
            mounts.push(serde_json::json!({ "host_path": host_path, "name": name, "read_write": read_write }));
            config["mounts"] = serde_json::Value::Array(mounts);
            db.write(|c| agent_groups::set_container_config(c, &group.id, &config))?;
            let allow = paths.mount_allowlist();
            let note = if allow.exists() {
                String::new()
            } else {
                format!(" (once {} allows it)", allow.display())
            };
            println!(
                "{} will see {} at /workspace/extra/{name} from its next container start{note}",
                group.folder,
                host_path.display()
            );
            Ok(())
        }
        GroupsCmd::Unmount { agent: a, name } => {
            let group = agent(db, &a)?;
            let config = mount_free(&group.container_config, &name);
            if config == group.container_config {
                bail!("{} has no extra mount named {name:?}", group.folder);
            }
            db.write(|c| agent_groups::set_container_config(c, &group.id, &config))?;
            println!("removed mount {name:?} from {}", group.folder);
            Ok(())
        }
        GroupsCmd::Delete { agent: a } => {
            let group = agent(db, &a)?;
            db.write(|c| agent_groups::delete(c, &group.id))?;
            println!(
                "deleted agent group {} (folder {} kept on disk)",
                group.id, group.folder
            );
            Ok(())
        }
    }
}

fn chats_cmd(
    paths: &Paths,
    db: &Db,
    sessions: &SessionStore,
    format: Format,
    cmd: ChatsCmd,
) -> anyhow::Result<()> {
    match cmd {
        ChatsCmd::Requests { all } => {
            use crate::store::chat_requests::{self, ChatRequest, ChatRequestStatus};
            #[derive(serde::Serialize)]
            struct Row {
                #[serde(flatten)]
                request: ChatRequest,
                chat: Option<String>,
                name: Option<String>,
            }
            let rows = db.read(|c| {
                chat_requests::list(c, (!all).then_some(ChatRequestStatus::Pending))?
                    .into_iter()
                    .map(|request| {
                        let chat = messaging_groups::get(c, &request.messaging_group_id)?;
                        Ok(Row {
                            request,
                            chat: chat.as_ref().map(|m| m.address().to_string()),
                            name: chat.and_then(|m| m.name),
                        })
                    })
                    .collect::<crate::Result<Vec<_>>>()
            })?;
            output::list(format, &rows, |items| {
                let mut t = Table::new(&["ID", "CHAT", "NAME", "STATUS", "ASKED", "AGENT GROUP"]);
                for r in items {
                    t.row(vec![
                        r.request.id.to_string(),
                        opt(r.chat.as_deref()),
                        opt(r.name.as_deref()),
                        r.request.status.to_string(),
                        opt(r.request.approver_user_id.as_ref().map(|u| u.as_str())),
                        opt(r.request.agent_group_id.as_ref().map(|a| a.as_str())),
                    ]);
                }
                t
            })
        }
        ChatsCmd::Ignore { chat } => {
            use crate::store::chat_requests;
            let request = db.read(|c| {
                let mg = messaging_groups::resolve(c, &chat)?;
                chat_requests::for_chat(c, &mg.id)
            })?;
            let Some(request) = request else {
                bail!("{chat} has no new-chat request (see `nanoclaw chats requests`)");
            };
            db.write(|c| {
                crate::chat_requests::decide(
                    c,
                    &request.id,
                    &crate::chat_requests::Choice::Ignore,
                    None,
                )
            })?;
            println!(
                "ignoring {chat}; its held messages are dropped {}",
                settle_held(paths)
            );
            Ok(())
        }
        ChatsCmd::List => {
            let list = db.read(messaging_groups::list)?;
            output::list(format, &list, |items| {
                let mut t = Table::new(&["ID", "CHAT", "NAME", "KIND", "POLICY"]);
                for m in items {
                    t.row(vec![
                        m.id.to_string(),
                        m.address().to_string(),
                        opt(m.name.as_deref()),
                        if m.is_group { "group" } else { "dm" }.to_string(),
                        m.unknown_sender_policy.to_string(),
                    ]);
                }
                t
            })
        }
        ChatsCmd::Add {
            chat,
            name,
            group,
            policy,
        } => {
            let (mg, created) = db.write(|c| {
                messaging_groups::get_or_create(
                    c,
                    &NewMessagingGroup {
                        channel_type: chat.channel.clone(),
                        platform_id: chat.platform_id.clone(),
                        name: name.clone(),
                        is_group: group,
                        unknown_sender_policy: policy,
                    },
                )
            })?;
            output::item(format, &mg, || {
                format!(
                    "{} chat {} ({})",
                    if created {
                        "registered"
                    } else {
                        "already known:"
                    },
                    mg.address(),
                    mg.id
                )
            })
        }
        ChatsCmd::Policy { chat, policy } => {
            let mg = db.write(|c| {
                let mg = messaging_groups::resolve(c, &chat)?;
                messaging_groups::set_policy(c, &mg.id, policy)?;
                Ok(mg)
            })?;
            println!("{}: unknown senders are now {policy}", mg.address());
            Ok(())
        }
        ChatsCmd::Rename { chat, name } => {
            let (mg, agents) = db.write(|c| {
                let mg = messaging_groups::resolve(c, &chat)?;
                messaging_groups::set_name(c, &mg.id, Some(&name))?;
                Ok((mg.clone(), agents_seeing_chat(c, &mg.id)?))
            })?;
            refresh(db, sessions, &agents);
            println!("{} is now named {name:?}", mg.address());
            Ok(())
        }
        ChatsCmd::Remove { chat } => {
            let (mg, agents) = db.write(|c| {
                let mg = messaging_groups::resolve(c, &chat)?;
                let agents: Vec<_> = wirings::for_chat(c, &mg.id)?
                    .into_iter()
                    .map(|w| w.agent_group_id)
                    .collect();
                messaging_groups::delete(c, &mg.id)?;
                Ok((mg, agents))
            })?;
            refresh(db, sessions, &agents);
            println!("removed chat {} and its wirings", mg.address());
            Ok(())
        }
    }
}

/// Destination display names come from chat names: every agent that can see the chat.
fn agents_seeing_chat(
    c: &rusqlite::Connection,
    chat: &crate::ids::MessagingGroupId,
) -> crate::Result<Vec<crate::ids::AgentGroupId>> {
    let mut stmt = c.prepare(
        "SELECT DISTINCT agent_group_id FROM agent_destinations WHERE target_type = 'channel' AND target_id = ?1",
    )?;
    let agents = stmt
        .query_map([chat], |r| r.get(0))?
        .collect::<rusqlite::Result<Vec<crate::ids::AgentGroupId>>>()?;
    Ok(agents)
}

/// Rewrites the destinations the agents' sessions see, after the central change committed.
/// A session whose DB is busy gets them before its next wake.
fn refresh(db: &Db, sessions: &SessionStore, agents: &[crate::ids::AgentGroupId]) {
    for a in agents {
        if let Err(e) = sessions.refresh_agent(db, a) {
            eprintln!(
                "warning: sessions of {a} not refreshed now ({e}); they are before their next wake"
            );
        }
    }
}

fn wire_cmd(
    paths: &Paths,
    db: &Db,
    sessions: &SessionStore,
    format: Format,
    cmd: WireCmd,
) -> anyhow::Result<()> {
    match cmd {
        WireCmd::List { chat, agent: a } => {
            let group = a.as_deref().map(|r| agent(db, r)).transpose()?;
            let chat = chat
                .as_deref()
                .map(|r| db.read(|c| messaging_groups::resolve(c, r)))
                .transpose()?;
            let list = db.read(|c| wirings::list(c, group.as_ref().map(|g| &g.id)))?;
            let list: Vec<_> = list
                .into_iter()
                .filter(|w| chat.as_ref().is_none_or(|c| c.id == w.messaging_group_id))
                .collect();
            let (chats, groups) =
                db.read(|c| Ok((messaging_groups::list(c)?, agent_groups::list(c)?)))?;
            let chat_label = |id: &crate::ids::MessagingGroupId| {
                chats
                    .iter()
                    .find(|m| &m.id == id)
                    .map_or(id.to_string(), |m| m.address().to_string())
            };
            let agent_label = |id: &crate::ids::AgentGroupId| {
                groups
                    .iter()
                    .find(|g| &g.id == id)
                    .map_or(id.to_string(), |g| g.folder.to_string())
            };
            output::list(format, &list, |items| {
                let mut t = Table::new(&[
                    "CHAT", "AGENT", "ENGAGE", "SCOPE", "IGNORED", "SESSIONS", "PRIORITY",
                ]);
                for w in items {
                    let engage = match &w.rules.engage_pattern {
                        Some(p) => format!("{} /{p}/", w.rules.engage_mode),
                        None => w.rules.engage_mode.to_string(),
                    };
                    t.row(vec![
                        chat_label(&w.messaging_group_id),
                        agent_label(&w.agent_group_id),
                        engage,
                        w.rules.sender_scope.to_string(),
                        w.rules.ignored_message_policy.to_string(),
                        w.rules.session_mode.to_string(),
                        w.rules.priority.to_string(),
                    ]);
                }
                t
            })
        }
        WireCmd::Add(args) => {
            let group = agent(db, &args.agent)?;
            let (wiring, dest) = db.write(|c| {
                let mg = messaging_groups::resolve(c, &args.chat)?;
                let rules = WiringRules {
                    engage_mode: args
                        .engage
                        .unwrap_or(WiringRules::for_chat(mg.is_group).engage_mode),
                    engage_pattern: args.pattern.clone(),
                    sender_scope: args.sender_scope,
                    ignored_message_policy: args.ignored,
                    session_mode: args.session_mode,
                    priority: args.priority,
                };
                wirings::create(c, &mg.id, &group.id, rules)
            })?;
            refresh(db, sessions, std::slice::from_ref(&group.id));
            // A new group chat waiting for its owner counts as wired now; its held messages
            // are released.
            settle_held(paths);
            output::item(format, &wiring, || {
                let mut s = format!(
                    "wired {} to {} ({})",
                    args.chat, group.folder, wiring.rules.engage_mode
                );
                if let Some(d) = &dest {
                    s += &format!("; the agent can reply there as {:?}", d.local_name);
                }
                s
            })
        }
        WireCmd::Remove { chat, agent: a } => {
            let group = agent(db, &a)?;
            db.write(|c| {
                let mg = messaging_groups::resolve(c, &chat)?;
                wirings::delete(c, &mg.id, &group.id)
            })?;
            refresh(db, sessions, std::slice::from_ref(&group.id));
            println!(
                "unwired {chat} from {} (its destination for that chat was removed too)",
                group.folder
            );
            Ok(())
        }
    }
}

fn destinations_cmd(
    db: &Db,
    sessions: &SessionStore,
    format: Format,
    cmd: DestinationsCmd,
) -> anyhow::Result<()> {
    match cmd {
        DestinationsCmd::List { agent: a } => {
            let group = agent(db, &a)?;
            let list = db.read(|c| destinations::resolved(c, &group.id))?;
            output::list(format, &list, |items| {
                let mut t = Table::new(&["NAME", "TYPE", "TARGET", "DISPLAY NAME"]);
                for d in items {
                    let target = match (&d.channel_type, &d.platform_id, &d.agent_group_id) {
                        (Some(ch), Some(p), _) => format!("{ch}:{p}"),
                        (_, _, Some(a)) => a.clone(),
                        _ => "-".to_string(),
                    };
                    t.row(vec![
                        d.name.clone(),
                        d.kind.to_string(),
                        target,
                        opt(d.display_name.as_deref()),
                    ]);
                }
                t
            })
        }
        DestinationsCmd::Add {
            agent: a,
            name,
            chat,
            to_agent,
        } => {
            let group = agent(db, &a)?;
            let dest = db.write(|c| {
                let target = match (&chat, &to_agent) {
                    (Some(ch), _) => Target::Channel(messaging_groups::resolve(c, ch)?.id),
                    (None, Some(t)) => Target::Agent(agent_groups::resolve(c, t)?.id),
                    (None, None) => return Err(crate::Error::invalid("give --chat or --to-agent")),
                };
                destinations::add(c, &group.id, Some(&name), target)
            })?;
            refresh(db, sessions, std::slice::from_ref(&group.id));
            output::item(format, &dest, || {
                format!("{} can now send to {:?}", group.folder, dest.local_name)
            })
        }
        DestinationsCmd::Remove { agent: a, name } => {
            let group = agent(db, &a)?;
            let removed = db.write(|c| destinations::remove(c, &group.id, &name))?;
            refresh(db, sessions, std::slice::from_ref(&group.id));
            if !removed {
                bail!("{} has no destination named {name:?}", group.folder);
            }
            println!("{} can no longer send to {name:?}", group.folder);
            Ok(())
        }
    }
}

fn dropped_cmd(db: &Db, format: Format, args: DroppedArgs) -> anyhow::Result<()> {
    if args.clear {
        let n = db.write(dropped::clear)?;
        println!("forgot {n} dropped-message records");
        return Ok(());
    }
    let list = db.read(|c| dropped::list(c, args.limit))?;
    output::list(format, &list, |items| {
        let mut t = Table::new(&["LAST SEEN", "CHAT", "SENDER", "REASON", "COUNT"]);
        for d in items {
            let sender = match (&d.user_id, &d.sender_name) {
                (Some(u), Some(n)) => format!("{u} ({n})"),
                (Some(u), None) => u.clone(),
                _ => "-".to_string(),
            };
            t.row(vec![
                d.last_seen.clone(),
                format!("{}:{}", d.channel_type, d.platform_id),
                sender,
                d.reason.to_string(),
                d.message_count.to_string(),
            ]);
        }
        t
    })?;
    if format == Format::Table {
        println!();
        for d in &list {
            println!("{}:{}: {}", d.channel_type, d.platform_id, d.hint);
        }
    }
    Ok(())
}

fn sessions_cmd(db: &Db, format: Format, cmd: SessionsCmd) -> anyhow::Result<()> {
    match cmd {
        SessionsCmd::List { agent: a, all } => {
            let group = a.as_deref().map(|r| agent(db, r)).transpose()?;
            let list = db.read(|c| registry::list(c, group.as_ref().map(|g| &g.id), !all))?;
            output::list(format, &list, |items| {
                let mut t = Table::new(&[
                    "SESSION",
                    "AGENT GROUP",
                    "CHAT",
                    "THREAD",
                    "STATUS",
                    "CONTAINER",
                    "LAST ACTIVE",
                ]);
                for s in items {
                    t.row(vec![
                        s.id.to_string(),
                        s.agent_group_id.to_string(),
                        opt(s.messaging_group_id.as_ref().map(|m| m.as_str())),
                        opt(s.thread_id.as_deref()),
                        s.status.to_string(),
                        s.container_status.to_string(),
                        opt(s.last_active.as_deref()),
                    ]);
                }
                t
            })
        }
        SessionsCmd::Close { session } => {
            let id = SessionId::parse(&session)?;
            db.write(|c| registry::close(c, &id))?;
            println!("closed session {id}; the next message starts a new one");
            Ok(())
        }
    }
}

fn approvals_cmd(paths: &Paths, db: &Db, format: Format, cmd: ApprovalsCmd) -> anyhow::Result<()> {
    use crate::store::approvals::{self, ApprovalStatus};
    match cmd {
        ApprovalsCmd::List { all } => {
            let list =
                db.read(|c| approvals::list(c, (!all).then_some(ApprovalStatus::Pending)))?;
            let requests = crate::self_mod::list(db, all)?;
            if format == Format::Json {
                // One list: sender approvals, then agents' requests (env values left out).
                let mut items: Vec<serde_json::Value> = list
                    .iter()
                    .map(serde_json::to_value)
                    .collect::<Result<_, _>>()?;
                items.extend(requests.iter().map(agent_request_json));
                return output::list(format, &items, |_| Table::new(&[]));
            }
            if !requests.is_empty() {
                let mut t = Table::new(&[
                    "ID",
                    "AGENT GROUP",
                    "REQUEST",
                    "STATUS",
                    "ASKED",
                    "DECIDED BY",
                ]);
                for r in &requests {
                    t.row(vec![
                        r.id.to_string(),
                        r.agent_group_id.to_string(),
                        crate::self_mod::describe(&r.change),
                        r.status.to_string(),
                        opt(r.approver_user_id.as_ref().map(|u| u.as_str())),
                        opt(r.decided_by.as_ref().map(|u| u.as_str())),
                    ]);
                }
                println!("Agent requests:");
                t.write(&mut std::io::stdout().lock())?;
                if list.is_empty() {
                    return Ok(());
                }
                println!("\nSender approvals:");
            }
            output::list(format, &list, |items| {
                let mut t = Table::new(&[
                    "ID",
                    "SENDER",
                    "AGENT GROUP",
                    "CHAT",
                    "STATUS",
                    "ASKED",
                    "DECIDED BY",
                ]);
                for a in items {
                    t.row(vec![
                        a.id.to_string(),
                        opt(a.subject_user_id.as_ref().map(|u| u.as_str())),
                        a.agent_group_id.to_string(),
                        opt(a.messaging_group_id.as_ref().map(|m| m.as_str())),
                        a.status.to_string(),
                        opt(a.approver_user_id.as_ref().map(|u| u.as_str())),
                        opt(a.decided_by.as_ref().map(|u| u.as_str())),
                    ]);
                }
                t
            })
        }
        ApprovalsCmd::Allow { approval } | ApprovalsCmd::Deny { approval }
            if approval.is_empty() =>
        {
            bail!("give an approval id (see `nanoclaw approvals list`)")
        }
        ApprovalsCmd::Allow { approval } => decide_cmd(paths, db, &approval, true),
        ApprovalsCmd::Deny { approval } => decide_cmd(paths, db, &approval, false),
    }
}

/// Asks a running daemon to release or drop held messages whose request was decided here.
/// Returns when that happens, for the operator: now, or at the daemon's next start.
fn settle_held(paths: &Paths) -> &'static str {
    let notified = crate::control::request_blocking(
        &paths.control_socket(),
        &crate::control::Request::Approvals,
    );
    if matches!(notified, Ok(Some(ref r)) if r.ok) {
        "now"
    } else {
        "when `nanoclaw run` next starts"
    }
}

/// An agent request as `approvals list --json` shows it: the MCP server's environment by
/// name only (values may be secrets).
fn agent_request_json(r: &crate::store::agent_requests::AgentRequest) -> serde_json::Value {
    let mut v = serde_json::to_value(r).unwrap_or_default();
    v["kind"] = serde_json::json!(r.change.kind().as_str());
    v["request"] = serde_json::json!(crate::self_mod::describe(&r.change));
    if let Some(env) = v
        .pointer_mut("/change/server/env")
        .and_then(|e| e.as_object_mut())
    {
        for value in env.values_mut() {
            *value = serde_json::json!("(hidden)");
        }
    }
    v
}

fn decide_agent_request(
    paths: &Paths,
    db: &Db,
    id: &crate::ids::AgentRequestId,
    allow: bool,
) -> anyhow::Result<()> {
    let r = db.write(|c| crate::self_mod::decide(c, id, allow, None))?;
    let when = settle_held(paths);
    let what = crate::self_mod::describe(&r.change);
    if allow {
        println!("approved: {what}; the daemon carries it out and tells the agent {when}");
    } else {
        println!("rejected: {what}; the agent is told {when}");
    }
    Ok(())
}

fn decide_cmd(paths: &Paths, db: &Db, approval: &str, allow: bool) -> anyhow::Result<()> {
    if let Ok(id) = crate::ids::AgentRequestId::parse(approval)
        && db
            .read(|c| crate::store::agent_requests::get(c, &id))?
            .is_some()
    {
        return decide_agent_request(paths, db, &id, allow);
    }
    let id = crate::ids::ApprovalId::parse(approval)?;
    let a = db.write(|c| crate::approvals::decide(c, &id, allow, None))?;
    let who = a
        .subject_user_id
        .as_ref()
        .map_or("the sender".to_string(), |u| u.to_string());
    let released = settle_held(paths);
    if allow {
        println!("{who} may talk to the agent; their held messages are released {released}");
    } else {
        println!("{who} was denied; their held messages are dropped {released}");
    }
    Ok(())
}

/// The container settings without the extra mount called `name`.
fn mount_free(config: &serde_json::Value, name: &str) -> serde_json::Value {
    let mut config = if config.is_object() {
        config.clone()
    } else {
        serde_json::json!({})
    };
    if let Some(mounts) = config["mounts"].as_array() {
        let kept: Vec<_> = mounts
            .iter()
            .filter(|m| m["name"] != name)
            .cloned()
            .collect();
        if kept.len() != mounts.len() {
            config["mounts"] = serde_json::Value::Array(kept);
        }
    }
    config
}

fn usage_cmd(db: &Db, format: Format, args: crate::cli::UsageArgs) -> anyhow::Result<()> {
    use crate::store::usage;
    let group = match &args.agent {
        Some(a) => Some(agent(db, a)?),
        None => None,
    };
    let days = i64::from(args.days.clamp(1, 3660)) - 1;
    let since = jiff::Timestamp::now()
        .checked_sub(jiff::SignedDuration::from_hours(24 * days))
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH)
        .strftime("%Y-%m-%d")
        .to_string();
    let rows = db.read(|c| usage::by_day(c, &since, group.as_ref().map(|g| &g.id)))?;
    output::list(format, &rows, |items| {
        let mut t = Table::new(&[
            "DAY",
            "AGENT",
            "REQUESTS",
            "INPUT",
            "OUTPUT",
            "CACHE WRITE",
            "CACHE READ",
            "TOTAL",
        ]);
        for r in items {
            t.row(vec![
                r.day.clone(),
                r.agent.clone().unwrap_or_else(|| r.agent_group_id.clone()),
                r.requests.to_string(),
                r.tokens.input.to_string(),
                r.tokens.output.to_string(),
                r.tokens.cache_creation.to_string(),
                r.tokens.cache_read.to_string(),
                r.tokens.total().to_string(),
            ]);
        }
        t
    })
}

/// How much of a task's prompt the table shows.
const PROMPT_PREVIEW_CHARS: usize = 40;

fn preview(text: &str, max: usize) -> String {
    let line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if line.chars().count() > max {
        format!("{}…", line.chars().take(max).collect::<String>())
    } else {
        line
    }
}

#[derive(Debug, Clone, Copy)]
enum TaskChange {
    Pause,
    Resume,
    Cancel,
}

impl std::fmt::Display for TaskChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TaskChange::Pause => "paused",
            TaskChange::Resume => "resumed",
            TaskChange::Cancel => "cancelled",
        })
    }
}

fn tasks_cmd(paths: &Paths, db: &Db, format: Format, cmd: TasksCmd) -> anyhow::Result<()> {
    use crate::scheduling::{self, TaskStatus};
    let (task_ref, change) = match cmd {
        TasksCmd::List { agent: a, status } => {
            let group = match &a {
                Some(a) => Some(agent(db, a)?),
                None => None,
            };
            let list =
                db.read(|c| scheduling::list_all(c, group.as_ref().map(|g| &g.id), status))?;
            return output::list(format, &list, |items| {
                let mut t = Table::new(&[
                    "ID",
                    "AGENT",
                    "SESSION",
                    "STATUS",
                    "NEXT RUN",
                    "RECURRENCE",
                    "TO",
                    "FAILURES",
                    "PROMPT",
                ]);
                for l in items {
                    let task = &l.task;
                    let failures = match (&task.last_error, task.consecutive_failures) {
                        (Some(e), n) if n > 0 => format!("{n} ({})", preview(e, 60)),
                        (_, n) => n.to_string(),
                    };
                    let next = match task.status {
                        TaskStatus::Active | TaskStatus::Paused => opt(task.next_run.as_deref()),
                        TaskStatus::Completed | TaskStatus::Cancelled => "-".to_string(),
                    };
                    t.row(vec![
                        task.id.to_string(),
                        l.agent.clone(),
                        task.session_id.to_string(),
                        task.status.to_string(),
                        next,
                        opt(task.recurrence.as_deref()),
                        opt(task.destination.as_deref()),
                        failures,
                        preview(&task.prompt, PROMPT_PREVIEW_CHARS),
                    ]);
                }
                t
            });
        }
        TasksCmd::Pause { task } => (task, TaskChange::Pause),
        TasksCmd::Resume { task } => (task, TaskChange::Resume),
        TasksCmd::Cancel { task } => (task, TaskChange::Cancel),
    };
    let id = crate::ids::TaskId::parse(&task_ref)
        .with_context(|| format!("{task_ref:?} is not a task id (see `nanoclaw tasks list`)"))?;
    // The daemon's zone, for a recurring task's next occurrence.
    let tz = jiff::tz::TimeZone::get(&crate::config::time_zone_name())
        .unwrap_or(jiff::tz::TimeZone::UTC);
    let task = db.write(|c| {
        let Some(task) = scheduling::get(c, &id)? else {
            return Err(crate::error::Error::not_found("task", id.as_str()));
        };
        match change {
            TaskChange::Pause => scheduling::pause(c, &task)?,
            TaskChange::Resume => scheduling::resume(c, &task, &tz)?,
            TaskChange::Cancel => scheduling::cancel(c, &task)?,
        }
        Ok(task)
    });
    let task = match task {
        Ok(t) => t,
        Err(crate::error::Error::NotFound { .. }) => {
            bail!("no task {id}; see `nanoclaw tasks list` for the ids")
        }
        Err(e) => return Err(e).context(format!("task {id} not {change}")),
    };
    tracing::info!(task = %id, session = %task.session_id, %change, "task changed by the operator");
    // A running daemon refreshes the agent's task list and its timer now.
    let notified = crate::control::request_blocking(
        &paths.control_socket(),
        &crate::control::Request::Tasks {
            session: task.session_id.clone(),
        },
    );
    let when = if matches!(notified, Ok(Some(ref r)) if r.ok) {
        "now"
    } else {
        "when `nanoclaw run` next starts"
    };
    let fresh = db.read(|c| scheduling::get(c, &id))?;
    output::item(format, &fresh, || {
        format!("task {id} {change}; the daemon sees it {when}")
    })
}
