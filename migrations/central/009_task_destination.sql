-- A task's runs may be addressed to one of its agent's destinations instead of the chat it
-- was scheduled from; the address columns then hold that destination's, and this its name.
ALTER TABLE scheduled_tasks ADD COLUMN destination TEXT;
