-- Messages their senders deleted, still to be taken back from a session whose inbound.db was
-- busy (its container may hold it locked): the session writer applies them and retries.
CREATE TABLE inbound_withdrawals (
    session_id  TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    -- messages_in.id
    message_id  TEXT NOT NULL,
    queued_at   TEXT NOT NULL,
    PRIMARY KEY (session_id, message_id)
);
