-- Pairing codes: an operator proves which chat is theirs by sending the bot a one-time code.
-- Only a hash of the code is stored.
CREATE TABLE pairing_codes (
    code_hash       TEXT PRIMARY KEY,
    channel_type    TEXT NOT NULL,
    status          TEXT NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'consumed', 'expired', 'revoked')),
    created_at      TEXT NOT NULL,
    expires_at      TEXT NOT NULL,
    -- Wrong codes sent on this channel while this one was pending.
    failed_attempts INTEGER NOT NULL DEFAULT 0,
    -- Who paired, from which chat, and whether that made them the owner.
    user_id         TEXT,
    platform_id     TEXT,
    is_group        INTEGER,
    made_owner      INTEGER,
    consumed_at     TEXT
);
CREATE INDEX pairing_codes_pending ON pairing_codes(channel_type, status);
