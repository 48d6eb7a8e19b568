-- Tokens the model APIs reported, one row per response the host's proxy forwarded. Written
-- by the host only (the proxy reads the upstream's answer; nothing here comes from a
-- container). `day` is the UTC date, for daily budgets and `nanoclaw usage`.
CREATE TABLE model_usage (
    id                      INTEGER PRIMARY KEY,
    agent_group_id          TEXT NOT NULL,
    session_id              TEXT NOT NULL,
    provider                TEXT NOT NULL,
    model                   TEXT,
    status                  INTEGER NOT NULL,
    input_tokens            INTEGER NOT NULL DEFAULT 0,
    output_tokens           INTEGER NOT NULL DEFAULT 0,
    cache_creation_tokens   INTEGER NOT NULL DEFAULT 0,
    cache_read_tokens       INTEGER NOT NULL DEFAULT 0,
    day                     TEXT NOT NULL,
    at                      TEXT NOT NULL
);
CREATE INDEX model_usage_by_group_day ON model_usage(agent_group_id, day);
CREATE INDEX model_usage_by_day ON model_usage(day);
