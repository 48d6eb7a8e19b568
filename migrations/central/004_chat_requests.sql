-- Group chats the bot found itself in that nobody wired yet. The owner (or an admin) gets a
-- card in their DM: wire the chat to one of the agents offered, or ignore it. One request per
-- chat, kept as the record of the choice: an ignored chat stays quiet until an operator wires
-- it by hand.
CREATE TABLE chat_requests (
    id                  TEXT PRIMARY KEY,
    messaging_group_id  TEXT NOT NULL UNIQUE REFERENCES messaging_groups(id) ON DELETE CASCADE,
    -- The agents the card offered, in button order (a JSON array of agent group ids), so a
    -- click means the agent that was shown even if agents were added since.
    offered             TEXT NOT NULL DEFAULT '[]',
    approver_user_id    TEXT REFERENCES users(id) ON DELETE SET NULL,
    card_messaging_group_id TEXT REFERENCES messaging_groups(id) ON DELETE SET NULL,
    card_message_id     TEXT,
    status              TEXT NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'wired', 'ignored')),
    agent_group_id      TEXT REFERENCES agent_groups(id) ON DELETE SET NULL,
    decided_by          TEXT REFERENCES users(id) ON DELETE SET NULL,
    decided_at          TEXT,
    created_at          TEXT NOT NULL
);
CREATE INDEX chat_requests_by_status ON chat_requests(status, created_at);

-- Messages of a chat waiting for its request; replayed when it is wired, dropped when ignored.
CREATE TABLE chat_request_held (
    id                  INTEGER PRIMARY KEY,
    request_id          TEXT NOT NULL REFERENCES chat_requests(id) ON DELETE CASCADE,
    event               TEXT NOT NULL,
    received_at         TEXT NOT NULL
);
CREATE INDEX chat_request_held_by_request ON chat_request_held(request_id, id);
