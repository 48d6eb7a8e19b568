-- Failing scheduled tasks back off and pause themselves. Written by the host only, from what
-- it knows: an ack of a task firing it queued, or its own crash recovery giving up.
ALTER TABLE scheduled_tasks ADD COLUMN consecutive_failures INTEGER NOT NULL DEFAULT 0;
ALTER TABLE scheduled_tasks ADD COLUMN last_error TEXT;
ALTER TABLE scheduled_tasks ADD COLUMN last_failure_at TEXT;
-- The firing (inbound message id) last counted, so one outcome is never counted twice.
ALTER TABLE scheduled_tasks ADD COLUMN last_outcome_id TEXT;
