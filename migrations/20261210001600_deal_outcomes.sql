-- How a deal ended: `open`, `won` (it reached the last stage) or `lost` (输单, with a reason
-- from the rule set's list and an optional note, encrypted like other free text). A lost
-- deal keeps the stage it was lost in, so reopening it goes back there.
ALTER TABLE deals ADD COLUMN outcome TEXT NOT NULL DEFAULT 'open';
ALTER TABLE deals ADD COLUMN closed_at BIGINT;
ALTER TABLE deals ADD COLUMN lost_reason TEXT;
ALTER TABLE deals ADD COLUMN lost_note_enc TEXT;
-- Deals already in the default pipeline's last stage were won when they got there.
UPDATE deals SET outcome = 'won', closed_at = updated_at WHERE stage = '赢单';
