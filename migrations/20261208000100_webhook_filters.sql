-- Subscribers choose what they receive and in which shape. `sources` and `actions` are JSON
-- lists (an action entry may end in `*`, a prefix); NULL is "all". `payload_version` 1 is
-- the body every delivery had before. Subscriptions that existed keep version 1 and the
-- sources that were tracking points when they were made (card clicks and platform events
-- became points in the same release), so they receive exactly what they received before.
ALTER TABLE webhooks ADD COLUMN sources TEXT;
ALTER TABLE webhooks ADD COLUMN actions TEXT;
ALTER TABLE webhooks ADD COLUMN payload_version BIGINT NOT NULL DEFAULT 1;

UPDATE webhooks SET sources = '["sidebar","api","system"]';
