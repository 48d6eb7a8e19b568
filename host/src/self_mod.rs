//! Agents changing themselves, with an approver's consent: `install_packages` (a per-agent
//! image layer) and `add_mcp_server` (a server in the agent's config).
//!
//! The agent's system row is re-checked here with the runner's own rules (`selfmod`), stored
//! as an [`AgentRequest`] whose id is derived from the row (a redelivered row opens nothing
//! new), and becomes a card in an approver's DM through the sender approvals' machinery
//! ([`approvals::send_card`]). A click counts only from that card and from the approver it
//! went to or an admin of the agent; the operator may decide from the CLI. On approval the
//! change is carried out off the delivery path (one at a time per agent): the image is built
//! and only then recorded in the agent's container config, or the MCP server is recorded and
//! `mcp-servers.json` written; the agent's running containers are stopped so its next wake
//! uses the change, and the asking session is told the outcome (a note it sees on waking).

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};

use nanoclaw_plugin_api::kit::{ButtonChoice, decode_button_id, encode_button_id};
use nanoclaw_schema::session::content::SystemAction;
use nanoclaw_schema::session::selfmod::{self, MAX_MCP_SERVERS, MCP_SERVERS_FILE, McpServer};
use rusqlite::Connection;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::access::DmChannels;
use crate::approvals::{self, CardRequest};
use crate::config::Paths;
use crate::container::image_build::{self, LayerSpec, PackageSources};
use crate::db::Db;
use crate::delivery::{Delivery, Platforms};
use crate::error::{Error, Result};
use crate::ids::{AgentGroupId, AgentRequestId, ChannelName, SessionId, UserId};
use crate::plugins::services::Click;
use crate::sessions::queue::{self, Queued};
use crate::sessions::{Session, registry};
use crate::store::agent_groups::{self, AgentGroup, AgentProvider};
use crate::store::agent_requests::{self, AgentRequest, Change, Opened, RequestStatus};
use crate::store::messaging_groups;
use crate::supervisor::{Supervisor, SupervisorConfig};

pub use crate::store::agent_requests::MAX_OPEN_PER_AGENT;

/// Button index of "Approve".
pub const APPROVE: u32 = 0;
/// Button index of "Reject".
pub const REJECT: u32 = 1;
/// The key of the approved packages in an agent's container config.
pub const PACKAGES_KEY: &str = "packages";
/// The key of the approved MCP servers in an agent's container config.
pub const MCP_SERVERS_KEY: &str = "mcp_servers";
/// Packages one agent may have in total (over all its requests).
pub const MAX_PACKAGES_TOTAL: usize = 100;
/// Bytes of the agent's reason shown on a card.
const MAX_REASON_BYTES: usize = 500;

/// The request id of a system row: the same row (redelivered) gives the same id.
pub fn request_id(session: &SessionId, row_key: &str) -> AgentRequestId {
    let digest = Sha256::digest(format!("{session}\n{row_key}").as_bytes());
    let hex: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    AgentRequestId::parse(&format!("areq-{hex}")).expect("a plain id")
}

/// The change a system action asks for, if it is one of ours.
pub fn change_of(action: &SystemAction) -> Option<Change> {
    match action {
        SystemAction::InstallPackages { apt, npm, reason } => Some(Change::InstallPackages {
            apt: apt.clone(),
            npm: npm.clone(),
            reason: reason.clone(),
        }),
        SystemAction::AddMcpServer { name, server } => Some(Change::AddMcpServer {
            name: name.clone(),
            server: server.clone(),
        }),
        _ => None,
    }
}

fn action_name(change: &Change) -> &'static str {
    match change {
        Change::InstallPackages { .. } => "install_packages",
        Change::AddMcpServer { .. } => "add_mcp_server",
    }
}

/// Queues a system note for `session` (id `note_id`, so a retry queues nothing twice).
/// `on_wake`: only a container started after it sees it (the one that runs the change).
fn note(
    c: &Connection,
    session: &SessionId,
    note_id: &str,
    action: &'static str,
    ok: bool,
    text: String,
    on_wake: bool,
) -> Result<()> {
    queue::push(
        c,
        session,
        &Queued {
            on_wake,
            ..Queued::note(note_id, action, Some(ok), text)
        },
    )?;
    Ok(())
}

/// What an agent's system row led to.
#[derive(Debug, Clone, PartialEq)]
pub enum Submitted {
    /// Stored; a card is to be sent for it.
    Ask(AgentRequestId),
    /// Nothing more to do now (refused with a note, or already handled).
    Done,
}

/// Opens a request from `session`'s system row (`row_key`): re-checks it, bounds the open
/// requests of the agent, stores it. A refusal is a note to the agent (which wakes it).
pub fn submit(
    db: &Db,
    session: &Session,
    action: &SystemAction,
    row_key: &str,
) -> Result<Submitted> {
    let Some(change) = change_of(action) else {
        return Err(Error::invalid(format!(
            "{} is not a self-modification request",
            action.name()
        )));
    };
    let id = request_id(&session.id, row_key);
    let name = action_name(&change);
    db.write(|c| {
        if let Err(why) = change.check() {
            tracing::warn!(session = %session.id, action = name, reason = why, "self-modification request refused");
            note(
                c,
                &session.id,
                &format!("note-{id}"),
                name,
                false,
                format!("{name} refused: {why}"),
                false,
            )?;
            return Ok(Submitted::Done);
        }
        match agent_requests::open(c, &id, &session.agent_group_id, &session.id, &change)? {
            Opened::New(r) => {
                tracing::info!(request = %r.id, session = %session.id, action = name, "self-modification request opened");
                Ok(Submitted::Ask(r.id))
            }
            // A retry of a row whose card was never posted asks again.
            Opened::Existing(r)
                if r.status == RequestStatus::Pending && r.card_messaging_group_id.is_none() =>
            {
                Ok(Submitted::Ask(r.id))
            }
            Opened::Existing(_) => Ok(Submitted::Done),
            Opened::TooMany => {
                note(
                    c,
                    &session.id,
                    &format!("note-{id}"),
                    name,
                    false,
                    format!(
                        "{name} refused: {MAX_OPEN_PER_AGENT} requests of this agent already wait \
                         for a decision; wait for them first"
                    ),
                    false,
                )?;
                Ok(Submitted::Done)
            }
        }
    })
}

fn one_line(s: &str, max: usize) -> String {
    let flat: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if flat.len() <= max {
        return flat;
    }
    let mut end = max;
    while !flat.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &flat[..end])
}

/// What a change does, for cards, notes and the CLI: package names, or the server's command
/// line with the NAMES of its environment (never the values, which may be secrets).
pub fn describe(change: &Change) -> String {
    match change {
        Change::InstallPackages { apt, npm, .. } => {
            let mut parts = Vec::new();
            if !apt.is_empty() {
                parts.push(format!("apt: {}", apt.join(", ")));
            }
            if !npm.is_empty() {
                parts.push(format!("npm: {}", npm.join(", ")));
            }
            format!("install packages ({})", parts.join("; "))
        }
        Change::AddMcpServer { name, server } => {
            let mut line = format!(
                "add MCP server {name:?}: {}",
                one_line(&server.command, 200)
            );
            for a in &server.args {
                line.push(' ');
                line.push_str(&one_line(a, 200));
            }
            if !server.env.is_empty() {
                let names: Vec<&str> = server.env.keys().map(String::as_str).collect();
                line.push_str(&format!(" (environment: {})", names.join(", ")));
            }
            line
        }
    }
}

/// The card an approver reads.
pub fn card_text(agent_label: &str, change: &Change) -> String {
    let mut text = format!(
        "🛠️ Agent request\n\n{agent_label} asks to {}.",
        describe(change)
    );
    if let Change::InstallPackages {
        reason: Some(r), ..
    } = change
        && !r.trim().is_empty()
    {
        text.push_str(&format!(
            "\nReason (the agent's words): {}",
            one_line(r.trim(), MAX_REASON_BYTES)
        ));
    }
    if let Change::InstallPackages { .. } = change {
        text.push_str("\nApproving rebuilds the agent's image with them.");
    }
    text.push_str("\nApprove?");
    text
}

/// Sends the card for request `id`. Returns the session to hand to the writer when the agent
/// was told nobody could be asked (the request then waits for the CLI).
pub async fn ask<P: Platforms + DmChannels>(
    db: &Db,
    delivery: &Delivery<P>,
    channels: &P,
    id: &AgentRequestId,
) -> Result<Option<Session>> {
    let Some(request) = db.read(|c| agent_requests::get(c, id))? else {
        return Ok(None);
    };
    if request.status != RequestStatus::Pending {
        return Ok(None);
    }
    let (agent, session, origin) = db.read(|c| {
        let agent = agent_groups::get(c, &request.agent_group_id)?;
        let session = registry::get(c, &request.session_id)?;
        let origin = match session.as_ref().and_then(|s| s.messaging_group_id.clone()) {
            Some(chat) => messaging_groups::get(c, &chat)?.map(|m| m.channel_type),
            None => None,
        };
        Ok((agent, session, origin))
    })?;
    let agent_label = agent
        .as_ref()
        .map_or(request.agent_group_id.to_string(), |a| {
            format!("{} ({})", a.display_name(), a.folder.as_str())
        });
    // A session without a chat (started by another agent) prefers no channel: the first
    // approver's own.
    let origin = match origin {
        Some(o) => o,
        None => db
            .read(|c| crate::access::pick_approver(c, Some(&request.agent_group_id)))?
            .first()
            .map(UserId::channel)
            .unwrap_or_else(|| ChannelName::parse("cli").expect("a channel name")),
    };
    let text = card_text(&agent_label, &request.change);
    let buttons = [
        (
            encode_button_id(id.as_str(), APPROVE),
            "Approve".to_string(),
        ),
        (encode_button_id(id.as_str(), REJECT), "Reject".to_string()),
    ];
    let hint = format!("decide with `nanoclaw approvals allow {id}` or `deny`");
    let card = CardRequest {
        what: id.as_str(),
        scope: Some(&request.agent_group_id),
        origin: &origin,
        text: &text,
        buttons: &buttons,
        hint: &hint,
    };
    match approvals::send_card(db, delivery, channels, card).await? {
        Some(sent) => {
            db.write(|c| {
                agent_requests::set_card(
                    c,
                    id,
                    &sent.approver,
                    &sent.chat,
                    sent.message_id.as_deref(),
                )
            })?;
            Ok(None)
        }
        None => {
            let name = action_name(&request.change);
            db.write(|c| {
                note(
                    c,
                    &request.session_id,
                    &format!("note-{id}-waits"),
                    name,
                    true,
                    format!(
                        "{name}: no owner or admin could be asked right now; the request ({id}) \
                         waits for the operator"
                    ),
                    false,
                )
            })?;
            Ok(session)
        }
    }
}

/// What a click on a button meant.
#[derive(Debug, Clone, PartialEq)]
pub enum ClickResult {
    /// Not a button of an agent request.
    NotOurs,
    /// A request's button, but the click does not count (and why).
    Ignored(String),
    Decided(Box<AgentRequest>),
}

/// Handles a click on a request's card, checking it came from that card and from someone who
/// may decide (the approver it went to, or an admin of the agent).
pub fn on_click(db: &Db, click: &Click) -> Result<ClickResult> {
    let Some(button) = decode_button_id(&click.action_id) else {
        return Ok(ClickResult::NotOurs);
    };
    let Ok(id) = AgentRequestId::parse(button.question_id) else {
        return Ok(ClickResult::NotOurs);
    };
    let Some(request) = db.read(|c| agent_requests::get(c, &id))? else {
        return Ok(ClickResult::NotOurs);
    };
    let approve = match button.choice {
        ButtonChoice::Index(APPROVE) => true,
        ButtonChoice::Index(REJECT) => false,
        _ => return Ok(ClickResult::Ignored("unknown button".into())),
    };
    let clicker = UserId::new(&click.channel, &click.clicker.handle)?;
    db.write(|c| {
        if request.status != RequestStatus::Pending {
            return Ok(ClickResult::Ignored(format!("already {}", request.status)));
        }
        if let Err(why) = approvals::from_the_card(
            c,
            request.card_messaging_group_id.as_ref(),
            request.card_message_id.as_deref(),
            click,
        )? {
            tracing::warn!(request = %id, clicker = %clicker, reason = why, "agent request click not from its card; ignored");
            agent_requests::record_ignored_click(c, &id, &clicker)?;
            return Ok(ClickResult::Ignored(why));
        }
        let eligible = request.approver_user_id.as_ref() == Some(&clicker)
            || crate::access::has_admin_privilege(c, &clicker, &request.agent_group_id)?;
        if !eligible {
            tracing::warn!(request = %id, clicker = %clicker, "agent request click from someone who may not decide; ignored");
            agent_requests::record_ignored_click(c, &id, &clicker)?;
            return Ok(ClickResult::Ignored(format!("{clicker} may not decide this")));
        }
        decide(c, &id, approve, Some(&clicker)).map(|r| ClickResult::Decided(Box::new(r)))
    })
}

/// Approves or denies a pending request (a click, or the operator with `by` = `None`). The
/// daemon carries it out or tells the agent with [`SelfMod::due`].
pub fn decide(
    conn: &Connection,
    id: &AgentRequestId,
    approve: bool,
    by: Option<&UserId>,
) -> Result<AgentRequest> {
    let r = agent_requests::decide(conn, id, approve, by)?;
    tracing::info!(request = %id, decision = %r.status, by = ?by.map(|u| u.as_str()), "agent request decided");
    Ok(r)
}

/// What the clicker is told.
pub fn confirmation(r: &AgentRequest) -> String {
    let verb = if r.status == RequestStatus::Approved {
        "✅ Approved"
    } else {
        "🚫 Rejected"
    };
    format!("{verb}: {}.", describe(&r.change))
}

/// The image an agent runs today, before any packages of ours (the base a layer is built on).
pub fn base_image(cfg: &SupervisorConfig, group: &AgentGroup) -> String {
    let config = &group.container_config;
    let image = config.get("image").and_then(Value::as_str);
    let packages = config.get(PACKAGES_KEY);
    let layer = packages
        .and_then(|p| p.get("image"))
        .and_then(Value::as_str);
    let base = packages.and_then(|p| p.get("base")).and_then(Value::as_str);
    match (image, layer, base) {
        // Still our layer: build again from its base, not layer on layer.
        (Some(i), Some(l), Some(b)) if i == l => b.to_string(),
        (Some(i), _, _) => i.to_string(),
        _ => match group.provider.unwrap_or(cfg.default_provider) {
            AgentProvider::Claude => cfg.claude_image.clone(),
            AgentProvider::Mock | AgentProvider::OpenAi => cfg.image.clone(),
        },
    }
}

fn string_list(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(str::to_string))
        .collect()
}

/// The agent's approved packages plus `apt` and `npm`, deduplicated and sorted.
pub fn merged_packages(
    config: &Value,
    apt: &[String],
    npm: &[String],
) -> (Vec<String>, Vec<String>) {
    let packages = config.get(PACKAGES_KEY);
    let merge = |key: &str, new: &[String]| {
        let mut all: Vec<String> = string_list(packages.and_then(|p| p.get(key)));
        all.extend(new.iter().cloned());
        all.sort();
        all.dedup();
        all
    };
    (merge("apt", apt), merge("npm", npm))
}

/// The approved MCP servers in a container config (entries that fail the rules are skipped).
pub fn mcp_servers(config: &Value) -> BTreeMap<String, McpServer> {
    config
        .get(MCP_SERVERS_KEY)
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter_map(|(name, v)| {
            let server: McpServer = serde_json::from_value(v.clone()).ok()?;
            selfmod::check_mcp_server(name, &server).ok()?;
            Some((name.clone(), server))
        })
        .collect()
}

/// Writes `mcp-servers.json` in the agent's config dir so it matches the container config
/// (called on approval and whenever the dir is prepared for a wake). Owner-only: the env
/// values may be secrets; the container's user owns it when the host runs as root.
pub fn write_mcp_servers_file(config_dir: &Path, container_config: &Value) -> Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let servers = mcp_servers(container_config);
    let path = config_dir.join(MCP_SERVERS_FILE);
    if servers.is_empty() && !path.exists() {
        return Ok(());
    }
    let text = serde_json::to_string_pretty(&servers).map_err(|e| Error::Json {
        context: MCP_SERVERS_FILE.into(),
        source: e,
    })?;
    let tmp = config_dir.join(format!(".{MCP_SERVERS_FILE}.tmp"));
    let _ = std::fs::remove_file(&tmp);
    let io =
        |what: &str, e: std::io::Error| Error::invalid(format!("{what} {}: {e}", path.display()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| io("create", e))?;
    f.write_all(text.as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(|e| io("write", e))?;
    if let Some((uid, gid)) = crate::config::session_owner() {
        std::os::unix::fs::chown(&tmp, Some(uid), Some(gid)).map_err(|e| io("chown", e))?;
    }
    std::fs::rename(&tmp, &path).map_err(|e| io("replace", e))?;
    Ok(())
}

/// Carries out decided requests: approved ones change the agent (one at a time per agent,
/// off the delivery path), denied ones are told to the agent.
pub struct SelfMod {
    paths: Paths,
    /// Agents with a change being carried out.
    busy: Mutex<HashSet<AgentGroupId>>,
}

/// An agent's claim on carrying out one request; released when dropped.
pub struct Claim {
    owner: Arc<SelfMod>,
    agent: AgentGroupId,
    pub request: AgentRequest,
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.owner
            .busy
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.agent);
    }
}

impl SelfMod {
    pub fn new(paths: Paths) -> Self {
        SelfMod {
            paths,
            busy: Mutex::new(HashSet::new()),
        }
    }

    /// Tells the agents of denied requests (returns the sessions to flush and wake), and
    /// claims the approved requests to carry out now (at most one per agent).
    pub fn due(self: &Arc<Self>, db: &Db) -> Result<(Vec<Session>, Vec<Claim>)> {
        let unsettled = db.read(agent_requests::unsettled)?;
        let mut told = Vec::new();
        let mut claims = Vec::new();
        for r in unsettled {
            match r.status {
                RequestStatus::Denied => {
                    let session = db.write(|c| {
                        let by = match &r.decided_by {
                            Some(u) => approvals::user_label(c, u)?,
                            None => "the operator".to_string(),
                        };
                        let name = action_name(&r.change);
                        note(
                            c,
                            &r.session_id,
                            &format!("note-{}", r.id),
                            name,
                            false,
                            format!("{name} ({}) was rejected by {by}.", describe(&r.change)),
                            false,
                        )?;
                        agent_requests::finish(c, &r.id, RequestStatus::Denied, None)?;
                        registry::get(c, &r.session_id)
                    })?;
                    told.extend(session);
                }
                RequestStatus::Approved => {
                    let mut busy = self.busy.lock().unwrap_or_else(|p| p.into_inner());
                    if busy.insert(r.agent_group_id.clone()) {
                        claims.push(Claim {
                            owner: self.clone(),
                            agent: r.agent_group_id.clone(),
                            request: r,
                        });
                    }
                }
                _ => {}
            }
        }
        Ok((told, claims))
    }

    /// Carries out a claimed approved request, records how it ended with a note for the
    /// asking session (seen by its next container), and stops the agent's running containers
    /// when something changed. Returns the session to flush and wake.
    pub async fn carry_out(
        &self,
        db: &Db,
        supervisor: &Supervisor,
        claim: Claim,
    ) -> Result<Option<Session>> {
        let r = &claim.request;
        let name = action_name(&r.change);
        let Some(group) = db.read(|c| agent_groups::get(c, &r.agent_group_id))? else {
            return Ok(None);
        };
        let result: std::result::Result<String, String> = match &r.change {
            Change::InstallPackages { apt, npm, .. } => {
                self.install(db, supervisor.config(), &group, apt, npm)
                    .await
            }
            Change::AddMcpServer { name, server } => self.add_server(db, &group, name, server),
        };
        let ok = result.is_ok();
        let (status, text, outcome) = match result {
            Ok(text) => (RequestStatus::Applied, text, None),
            Err(why) => (
                RequestStatus::Failed,
                format!(
                    "{name} ({}) was approved but failed: {why}",
                    describe(&r.change)
                ),
                Some(why),
            ),
        };
        if ok {
            // The next container of the agent runs with the change.
            supervisor
                .stop_agent(&r.agent_group_id, "its configuration changed")
                .await;
        }
        let session = db.write(|c| {
            note(
                c,
                &r.session_id,
                &format!("note-{}", r.id),
                name,
                ok,
                text,
                ok,
            )?;
            agent_requests::finish(c, &r.id, status, outcome.as_deref())?;
            registry::get(c, &r.session_id)
        })?;
        tracing::info!(request = %r.id, agent = %group.folder, status = %status, "agent request carried out");
        Ok(session)
    }

    async fn install(
        &self,
        db: &Db,
        cfg: &SupervisorConfig,
        group: &AgentGroup,
        apt: &[String],
        npm: &[String],
    ) -> std::result::Result<String, String> {
        let (all_apt, all_npm) = merged_packages(&group.container_config, apt, npm);
        if all_apt.len() + all_npm.len() > MAX_PACKAGES_TOTAL {
            return Err(format!(
                "an agent may have at most {MAX_PACKAGES_TOTAL} packages in all"
            ));
        }
        let base = base_image(cfg, group);
        let spec = LayerSpec {
            folder: group.folder.as_str().to_string(),
            base: base.clone(),
            apt: all_apt.clone(),
            npm: all_npm.clone(),
        };
        let sources = PackageSources::load(&crate::config::secrets::SecretSource::new(
            self.paths.home(),
        ));
        let image = match image_build::build(&spec, &sources).await {
            Ok(tag) => tag,
            Err(e) => {
                tracing::warn!(agent = %group.folder, error = %e, "agent image layer not built; nothing changed");
                let tail = e.log_tail();
                return Err(if tail.is_empty() {
                    e.to_string()
                } else {
                    format!("{e}\nThe build's last lines:\n{}", tail.join("\n"))
                });
            }
        };
        // Recorded only now that the image exists; what else changed meanwhile is kept.
        let id = group.id.clone();
        db.write(|c| {
            let current = agent_groups::get(c, &id)?
                .ok_or_else(|| Error::not_found("agent group", id.as_str()))?;
            let mut config = current.container_config.clone();
            if !config.is_object() {
                config = json!({});
            }
            config["image"] = json!(image);
            config[PACKAGES_KEY] = json!({
                "apt": all_apt, "npm": all_npm, "base": base, "image": image,
            });
            agent_groups::set_container_config(c, &id, &config)
        })
        .map_err(|e| format!("the image was built but not recorded: {e}"))?;
        let mut named: Vec<String> = apt.to_vec();
        named.extend(npm.iter().cloned());
        Ok(format!(
            "Packages installed: {}. The container was rebuilt; check they work.",
            named.join(", ")
        ))
    }

    fn add_server(
        &self,
        db: &Db,
        group: &AgentGroup,
        name: &str,
        server: &McpServer,
    ) -> std::result::Result<String, String> {
        selfmod::check_mcp_server(name, server)?;
        let config_dir = self.paths.agent_config(group.folder.as_str());
        let id = group.id.clone();
        let written = db.write(|c| {
            let current = agent_groups::get(c, &id)?
                .ok_or_else(|| Error::not_found("agent group", id.as_str()))?;
            let mut config = current.container_config.clone();
            if !config.is_object() {
                config = json!({});
            }
            let mut servers = mcp_servers(&config);
            servers.insert(name.to_string(), server.clone());
            if servers.len() > MAX_MCP_SERVERS {
                return Err(Error::invalid(format!(
                    "an agent may have at most {MAX_MCP_SERVERS} MCP servers"
                )));
            }
            config[MCP_SERVERS_KEY] = serde_json::to_value(&servers).map_err(|e| Error::Json {
                context: "mcp servers".into(),
                source: e,
            })?;
            std::fs::create_dir_all(&config_dir)
                .map_err(|e| Error::invalid(format!("create {}: {e}", config_dir.display())))?;
            // The file first: if it cannot be written the transaction rolls back and the
            // config stays as it was.
            write_mcp_servers_file(&config_dir, &config)?;
            agent_groups::set_container_config(c, &id, &config)?;
            Ok(current.container_config)
        });
        match written {
            Ok(_) => Ok(format!(
                "MCP server {name} added; its tools are available now as mcp__{name}__<tool>."
            )),
            Err(e) => {
                // Put the file back in line with the config that stayed.
                if let Ok(Some(g)) = db.read(|c| agent_groups::get(c, &id)) {
                    let _ = write_mcp_servers_file(&config_dir, &g.container_config);
                }
                Err(e.to_string())
            }
        }
    }
}

/// Pending requests whose card was never posted (asked again when the daemon starts).
pub fn without_card(db: &Db) -> Result<Vec<AgentRequestId>> {
    Ok(list(db, false)?
        .into_iter()
        .filter(|r| r.card_messaging_group_id.is_none())
        .map(|r| r.id)
        .collect())
}

/// Requests as the CLI lists them.
pub fn list(db: &Db, all: bool) -> Result<Vec<AgentRequest>> {
    db.read(|c| agent_requests::list(c, (!all).then_some(RequestStatus::Pending)))
}

#[cfg(test)]
mod tests;
