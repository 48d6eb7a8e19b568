-- What an agent asked to change about itself (packages in its image, an MCP server in its
-- config), waiting for an owner or admin, then carried out or refused. Decided rows stay as
-- the record of who decided what and when.
CREATE TABLE agent_requests (
    -- Derived from the session and the outbound row, so a redelivered row opens nothing new.
    id                  TEXT PRIMARY KEY,
    kind                TEXT NOT NULL CHECK (kind IN ('install_packages', 'add_mcp_server')),
    agent_group_id      TEXT NOT NULL REFERENCES agent_groups(id) ON DELETE CASCADE,
    -- The session that asked: it is told the outcome.
    session_id          TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    -- The validated request (JSON).
    payload             TEXT NOT NULL,
    status              TEXT NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'approved', 'denied', 'applied', 'failed')),
    -- Who the card went to, and where.
    approver_user_id    TEXT REFERENCES users(id) ON DELETE SET NULL,
    card_messaging_group_id TEXT REFERENCES messaging_groups(id) ON DELETE SET NULL,
    card_message_id     TEXT,
    decided_by          TEXT REFERENCES users(id) ON DELETE SET NULL,
    decided_at          TEXT,
    -- What carrying it out did (a failed build's reason), for the operator.
    outcome             TEXT,
    -- When the agent was told how its request ended.
    notified_at         TEXT,
    -- Clicks that did not count (JSON array of {user, at}).
    ignored_clicks      TEXT NOT NULL DEFAULT '[]',
    created_at          TEXT NOT NULL
);
CREATE INDEX agent_requests_by_status ON agent_requests(status, created_at);
CREATE INDEX agent_requests_by_agent ON agent_requests(agent_group_id, status);
