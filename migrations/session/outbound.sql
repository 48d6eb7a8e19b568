-- outbound.db: written only by the agent-runner (container), read by the host.
-- The host writes here in one case only: clearing stale 'processing' claims
-- after it has stopped the container that made them.

CREATE TABLE IF NOT EXISTS messages_out (
    id              TEXT PRIMARY KEY,
    seq             INTEGER NOT NULL UNIQUE CHECK (seq > 0 AND seq % 2 = 1),
    in_reply_to     TEXT,
    timestamp       TEXT NOT NULL,
    deliver_after   TEXT,
    -- chat | system
    kind            TEXT NOT NULL,
    channel_type    TEXT,
    platform_id     TEXT,
    thread_id       TEXT,
    content         TEXT NOT NULL
);

-- What the container has claimed and finished (it cannot write inbound.db).
CREATE TABLE IF NOT EXISTS processing_ack (
    message_id      TEXT PRIMARY KEY,
    -- processing | completed | failed
    status          TEXT NOT NULL,
    status_changed  TEXT NOT NULL
);

-- Container key-value state (e.g. the provider's continuation id).
CREATE TABLE IF NOT EXISTS session_state (
    key         TEXT PRIMARY KEY,
    value       TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);

-- What the agent is doing right now, so the host can widen its stuck timers.
CREATE TABLE IF NOT EXISTS container_state (
    id                          INTEGER PRIMARY KEY CHECK (id = 1),
    current_tool                TEXT,
    tool_declared_timeout_ms    INTEGER,
    tool_started_at             TEXT,
    updated_at                  TEXT NOT NULL
);
