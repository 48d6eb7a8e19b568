-- Central database: entities, privileges, wiring, sessions.
-- Timestamps are UTC ISO-8601 with milliseconds and a Z ("2026-01-02T03:04:05.678Z"),
-- so they compare correctly as text.

-- One agent identity: a folder under groups/, its memory and container settings.
CREATE TABLE agent_groups (
    id              TEXT PRIMARY KEY,
    name            TEXT NOT NULL,
    folder          TEXT NOT NULL UNIQUE,
    -- Agent provider run inside the container (mock | claude). NULL = host default.
    provider        TEXT,
    assistant_name  TEXT,
    -- JSON object of container settings (model, memory, extra mounts, ...).
    container_config TEXT NOT NULL DEFAULT '{}',
    created_at      TEXT NOT NULL
);

-- One platform chat (a DM, a group, a channel) as a plugin names it.
CREATE TABLE messaging_groups (
    id                      TEXT PRIMARY KEY,
    channel_type            TEXT NOT NULL,
    platform_id             TEXT NOT NULL,
    name                    TEXT,
    is_group                INTEGER NOT NULL DEFAULT 0 CHECK (is_group IN (0, 1)),
    unknown_sender_policy   TEXT NOT NULL DEFAULT 'strict'
        CHECK (unknown_sender_policy IN ('strict', 'request_approval', 'public')),
    created_at              TEXT NOT NULL,
    UNIQUE (channel_type, platform_id)
);

-- Wiring between chats and agents (many to many), with the rules that decide
-- which messages engage the agent and how sessions are keyed.
CREATE TABLE messaging_group_agents (
    id                      TEXT PRIMARY KEY,
    messaging_group_id      TEXT NOT NULL REFERENCES messaging_groups(id) ON DELETE CASCADE,
    agent_group_id          TEXT NOT NULL REFERENCES agent_groups(id) ON DELETE CASCADE,
    engage_mode             TEXT NOT NULL DEFAULT 'pattern'
        CHECK (engage_mode IN ('pattern', 'mention', 'mention-sticky')),
    -- Regex for pattern mode; NULL means every message.
    engage_pattern          TEXT,
    sender_scope            TEXT NOT NULL DEFAULT 'all' CHECK (sender_scope IN ('all', 'known')),
    ignored_message_policy  TEXT NOT NULL DEFAULT 'drop'
        CHECK (ignored_message_policy IN ('drop', 'accumulate')),
    session_mode            TEXT NOT NULL DEFAULT 'shared'
        CHECK (session_mode IN ('shared', 'per-thread', 'agent-shared')),
    priority                INTEGER NOT NULL DEFAULT 0,
    created_at              TEXT NOT NULL,
    UNIQUE (messaging_group_id, agent_group_id)
);
CREATE INDEX messaging_group_agents_by_agent ON messaging_group_agents(agent_group_id);

-- One platform identity, namespaced "<channel>:<handle>".
CREATE TABLE users (
    id              TEXT PRIMARY KEY,
    kind            TEXT NOT NULL,
    display_name    TEXT,
    created_at      TEXT NOT NULL
);

-- Privilege grants. owner is global only; admin is global (NULL) or scoped.
CREATE TABLE user_roles (
    user_id         TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    role            TEXT NOT NULL CHECK (role IN ('owner', 'admin')),
    agent_group_id  TEXT REFERENCES agent_groups(id) ON DELETE CASCADE,
    granted_by      TEXT REFERENCES users(id) ON DELETE SET NULL,
    granted_at      TEXT NOT NULL,
    CHECK (role <> 'owner' OR agent_group_id IS NULL)
);
-- NULL-safe uniqueness: a PRIMARY KEY would treat two global grants as distinct.
CREATE UNIQUE INDEX user_roles_unique ON user_roles(user_id, role, IFNULL(agent_group_id, ''));
CREATE INDEX user_roles_by_group ON user_roles(agent_group_id, role);

-- Unprivileged access to an agent group. Admins and owners are implicit members.
CREATE TABLE agent_group_members (
    user_id         TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    agent_group_id  TEXT NOT NULL REFERENCES agent_groups(id) ON DELETE CASCADE,
    added_by        TEXT REFERENCES users(id) ON DELETE SET NULL,
    added_at        TEXT NOT NULL,
    PRIMARY KEY (user_id, agent_group_id)
);

-- Cold-DM cache: which chat reaches a user on a channel.
CREATE TABLE user_dms (
    user_id             TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    channel_type        TEXT NOT NULL,
    messaging_group_id  TEXT NOT NULL REFERENCES messaging_groups(id) ON DELETE CASCADE,
    resolved_at         TEXT NOT NULL,
    PRIMARY KEY (user_id, channel_type)
);

-- Routing map AND access list for everything an agent sends. A row exists iff
-- the agent may send to the target; names are local to each agent.
CREATE TABLE agent_destinations (
    agent_group_id  TEXT NOT NULL REFERENCES agent_groups(id) ON DELETE CASCADE,
    local_name      TEXT NOT NULL,
    target_type     TEXT NOT NULL CHECK (target_type IN ('channel', 'agent')),
    target_id       TEXT NOT NULL,
    created_at      TEXT NOT NULL,
    PRIMARY KEY (agent_group_id, local_name),
    UNIQUE (agent_group_id, target_type, target_id)
);
CREATE INDEX agent_destinations_by_target ON agent_destinations(target_type, target_id);

-- Session registry: one folder, one pair of session DBs, at most one container.
CREATE TABLE sessions (
    id                  TEXT PRIMARY KEY,
    agent_group_id      TEXT NOT NULL REFERENCES agent_groups(id) ON DELETE CASCADE,
    -- Origin chat; NULL for sessions created by agent-to-agent messages.
    messaging_group_id  TEXT REFERENCES messaging_groups(id) ON DELETE SET NULL,
    thread_id           TEXT,
    provider            TEXT,
    status              TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'closed')),
    container_status    TEXT NOT NULL DEFAULT 'stopped'
        CHECK (container_status IN ('starting', 'running', 'stopped')),
    last_active         TEXT,
    created_at          TEXT NOT NULL
);
CREATE INDEX sessions_by_agent ON sessions(agent_group_id, status, created_at);
CREATE INDEX sessions_by_chat ON sessions(messaging_group_id, thread_id);
-- At most one active session per (agent, chat, thread).
CREATE UNIQUE INDEX sessions_one_active
    ON sessions(agent_group_id, IFNULL(messaging_group_id, ''), IFNULL(thread_id, ''))
    WHERE status = 'active';

-- Requests that need an approver's decision (unknown senders first; later
-- agent actions). Decided rows are kept as the record of who decided what.
CREATE TABLE approvals (
    id                  TEXT PRIMARY KEY,
    kind                TEXT NOT NULL CHECK (kind IN ('sender')),
    agent_group_id      TEXT NOT NULL REFERENCES agent_groups(id) ON DELETE CASCADE,
    messaging_group_id  TEXT REFERENCES messaging_groups(id) ON DELETE CASCADE,
    subject_user_id     TEXT REFERENCES users(id) ON DELETE CASCADE,
    payload             TEXT NOT NULL DEFAULT '{}',
    -- Who the card went to, and where.
    approver_user_id    TEXT REFERENCES users(id) ON DELETE SET NULL,
    card_messaging_group_id TEXT REFERENCES messaging_groups(id) ON DELETE SET NULL,
    card_message_id     TEXT,
    status              TEXT NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'approved', 'denied', 'expired')),
    decided_by          TEXT REFERENCES users(id) ON DELETE SET NULL,
    decided_at          TEXT,
    created_at          TEXT NOT NULL
);
-- One open sender request per (chat, agent, sender).
CREATE UNIQUE INDEX approvals_one_pending_sender
    ON approvals(messaging_group_id, agent_group_id, subject_user_id)
    WHERE kind = 'sender' AND status = 'pending';
CREATE INDEX approvals_by_status ON approvals(status, created_at);

-- Inbound events held while a sender approval is pending; replayed on approve.
CREATE TABLE held_messages (
    id              INTEGER PRIMARY KEY,
    approval_id     TEXT NOT NULL REFERENCES approvals(id) ON DELETE CASCADE,
    event           TEXT NOT NULL,
    received_at     TEXT NOT NULL
);
CREATE INDEX held_messages_by_approval ON held_messages(approval_id, id);

-- Audit of messages that reached no agent, one row per (chat, sender, reason).
CREATE TABLE dropped_messages (
    id                  INTEGER PRIMARY KEY,
    channel_type        TEXT NOT NULL,
    platform_id         TEXT NOT NULL,
    user_id             TEXT,
    sender_name         TEXT,
    reason              TEXT NOT NULL,
    messaging_group_id  TEXT,
    agent_group_id      TEXT,
    message_count       INTEGER NOT NULL DEFAULT 1,
    first_seen          TEXT NOT NULL,
    last_seen           TEXT NOT NULL
);
CREATE UNIQUE INDEX dropped_messages_key
    ON dropped_messages(channel_type, platform_id, IFNULL(user_id, ''), reason);
CREATE INDEX dropped_messages_by_time ON dropped_messages(last_seen);

-- Scheduled tasks. The schedule lives here; each firing becomes a task
-- message in the session's inbound.db.
CREATE TABLE scheduled_tasks (
    id              TEXT PRIMARY KEY,
    session_id      TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    agent_group_id  TEXT NOT NULL REFERENCES agent_groups(id) ON DELETE CASCADE,
    prompt          TEXT NOT NULL,
    script          TEXT,
    -- Cron expression; NULL for a one-shot task.
    recurrence      TEXT,
    next_run        TEXT,
    status          TEXT NOT NULL DEFAULT 'active'
        CHECK (status IN ('active', 'paused', 'completed', 'cancelled')),
    -- Reply address for the task's output.
    channel_type    TEXT,
    platform_id     TEXT,
    thread_id       TEXT,
    last_run        TEXT,
    run_count       INTEGER NOT NULL DEFAULT 0,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL
);
CREATE INDEX scheduled_tasks_due ON scheduled_tasks(status, next_run);
CREATE INDEX scheduled_tasks_by_session ON scheduled_tasks(session_id);

-- Plugin state store, namespaced by plugin name.
CREATE TABLE plugin_kv (
    plugin      TEXT NOT NULL,
    key         TEXT NOT NULL,
    value       TEXT NOT NULL,
    -- Unix epoch milliseconds; NULL = never expires.
    expires_at  INTEGER,
    PRIMARY KEY (plugin, key)
);
CREATE TABLE plugin_subscriptions (
    plugin          TEXT NOT NULL,
    thread_id       TEXT NOT NULL,
    subscribed_at   TEXT NOT NULL,
    PRIMARY KEY (plugin, thread_id)
);
CREATE TABLE plugin_locks (
    plugin      TEXT NOT NULL,
    name        TEXT NOT NULL,
    token       TEXT NOT NULL,
    expires_at  INTEGER NOT NULL,
    PRIMARY KEY (plugin, name)
);
CREATE TABLE plugin_lists (
    plugin      TEXT NOT NULL,
    key         TEXT NOT NULL,
    idx         INTEGER NOT NULL,
    value       TEXT NOT NULL,
    expires_at  INTEGER,
    PRIMARY KEY (plugin, key, idx)
);
