-- Question cards wait for a click only so long; then the agent is told nobody answered.
ALTER TABLE question_cards ADD COLUMN expires_at TEXT;
CREATE INDEX question_cards_open ON question_cards(expires_at) WHERE answer IS NULL;
