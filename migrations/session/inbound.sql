-- inbound.db: written only by the host; the container sees it through a read-only mount.
-- Host seq numbers are even; the container's (outbound.db) are odd, so the two
-- writers never collide and seq orders a whole session.

CREATE TABLE IF NOT EXISTS messages_in (
    id                  TEXT PRIMARY KEY,
    seq                 INTEGER NOT NULL UNIQUE CHECK (seq > 0 AND seq % 2 = 0),
    -- chat | task | system
    kind                TEXT NOT NULL,
    timestamp           TEXT NOT NULL,
    -- pending -> completed | failed | deleted (its sender deleted it on the platform)
    status              TEXT NOT NULL DEFAULT 'pending',
    -- Do not process before this time (ISO-8601 UTC).
    process_after       TEXT,
    -- Processing attempts counted by the host's crash recovery.
    tries               INTEGER NOT NULL DEFAULT 0,
    -- 1 wakes the agent; 0 is context that rides along with the next trigger.
    trigger             INTEGER NOT NULL DEFAULT 1,
    -- Reply address. Agent-to-agent rows use channel_type 'agent' and the
    -- source agent group id as platform_id.
    channel_type        TEXT,
    platform_id         TEXT,
    thread_id           TEXT,
    -- The platform's own id of this message (for replies and reactions).
    platform_message_id TEXT,
    -- JSON, shape per kind (see nanoclaw-schema's session module).
    content             TEXT NOT NULL,
    -- Return path for agent-to-agent messages.
    source_session_id   TEXT,
    -- 1: only a freshly started container's first read sees this row.
    on_wake             INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS messages_in_pending ON messages_in(status, seq);

-- The host's record of what it did with each outbound.db row (the agent can read why a
-- row failed or was refused here).
CREATE TABLE IF NOT EXISTS delivered (
    message_out_id      TEXT PRIMARY KEY,
    platform_message_id TEXT,
    -- delivered | failed | rejected
    status              TEXT NOT NULL DEFAULT 'delivered',
    error               TEXT,
    delivered_at        TEXT NOT NULL
);

-- Progress of a message posted in parts: the intent is recorded before each platform
-- call and the platform's id after it, so a restart resumes where it stopped instead of
-- posting the parts again. A part left 'sending' by a crash is posted once more.
CREATE TABLE IF NOT EXISTS delivery_parts (
    message_out_id      TEXT NOT NULL,
    part                INTEGER NOT NULL CHECK (part >= 0),
    state               TEXT NOT NULL CHECK (state IN ('sending', 'sent')),
    platform_message_id TEXT,
    updated_at          TEXT NOT NULL,
    PRIMARY KEY (message_out_id, part)
);

-- Where delivery stands: every messages_out row at or below `frontier` is finished.
CREATE TABLE IF NOT EXISTS delivery_state (
    id              INTEGER PRIMARY KEY CHECK (id = 1),
    frontier        INTEGER NOT NULL
);

-- The session's view of its agent's destinations (routing map and ACL),
-- rewritten whole by the host whenever it changes.
CREATE TABLE IF NOT EXISTS destinations (
    name            TEXT PRIMARY KEY,
    display_name    TEXT,
    type            TEXT NOT NULL CHECK (type IN ('channel', 'agent')),
    channel_type    TEXT,
    platform_id     TEXT,
    agent_group_id  TEXT
);

-- The session's default reply address (its origin chat), one row.
CREATE TABLE IF NOT EXISTS session_routing (
    id              INTEGER PRIMARY KEY CHECK (id = 1),
    channel_type    TEXT,
    platform_id     TEXT,
    thread_id       TEXT
);

-- The session's scheduled tasks as the agent may list them (host projection).
CREATE TABLE IF NOT EXISTS scheduled_tasks (
    id          TEXT PRIMARY KEY,
    prompt      TEXT NOT NULL,
    recurrence  TEXT,
    next_run    TEXT,
    status      TEXT NOT NULL,
    -- The destination (local name) its runs are addressed to; NULL: this session's chat.
    destination TEXT
);
