-- Messages decided for a session and not yet written into its inbound.db: those whose
-- session DB was busy when they came (or had messages waiting already), and those of task
-- firing, agent-to-agent delivery and the host's notes, which append here in their own
-- transaction. Each session's writer moves the rows into that session's inbound.db, so a
-- session DB that is slow or held locked by its container delays only its own session.
CREATE TABLE inbound_queue (
    seq                 INTEGER PRIMARY KEY,
    session_id          TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    -- messages_in.id; a redelivery of the same message is the same row.
    message_id          TEXT NOT NULL,
    kind                TEXT NOT NULL,
    timestamp           TEXT NOT NULL,
    trigger             INTEGER NOT NULL,
    channel_type        TEXT,
    platform_id         TEXT,
    thread_id           TEXT,
    platform_message_id TEXT,
    content             TEXT NOT NULL,
    process_after       TEXT,
    source_session_id   TEXT,
    on_wake             INTEGER NOT NULL DEFAULT 0,
    queued_at           TEXT NOT NULL,
    UNIQUE (session_id, message_id)
);

-- Agent-to-agent messages: the route back for a reply is decided from here, never from
-- anything a container wrote.
CREATE TABLE agent_messages (
    id                  TEXT PRIMARY KEY,
    from_session_id     TEXT NOT NULL,
    from_agent_group_id TEXT NOT NULL,
    to_session_id       TEXT NOT NULL,
    to_agent_group_id   TEXT NOT NULL,
    created_at          TEXT NOT NULL
);
CREATE INDEX agent_messages_by_receiver
    ON agent_messages(to_session_id, from_agent_group_id, created_at);

-- Senders an approver let in: to one agent, in one chat. An approval grants no more.
CREATE TABLE chat_senders (
    messaging_group_id  TEXT NOT NULL REFERENCES messaging_groups(id) ON DELETE CASCADE,
    agent_group_id      TEXT NOT NULL REFERENCES agent_groups(id) ON DELETE CASCADE,
    user_id             TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    approval_id         TEXT,
    added_by            TEXT REFERENCES users(id) ON DELETE SET NULL,
    added_at            TEXT NOT NULL,
    PRIMARY KEY (messaging_group_id, agent_group_id, user_id)
);

-- Wrong pairing codes, counted per sender: a stranger guessing locks out only themselves.
CREATE TABLE pairing_attempts (
    user_id             TEXT PRIMARY KEY,
    failures            INTEGER NOT NULL,
    window_started_at   TEXT NOT NULL
);

-- Question cards agents asked in chats. The buttons carry the host's card id, never one an
-- agent chose, and a click counts only from the message the card was posted as.
CREATE TABLE question_cards (
    id                  TEXT PRIMARY KEY,
    session_id          TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    message_out_id      TEXT NOT NULL,
    question_id         TEXT NOT NULL,
    options             TEXT NOT NULL,
    channel_type        TEXT NOT NULL,
    platform_id         TEXT NOT NULL,
    card_message_id     TEXT,
    answered_by         TEXT,
    answer              INTEGER,
    created_at          TEXT NOT NULL,
    UNIQUE (session_id, message_out_id)
);
