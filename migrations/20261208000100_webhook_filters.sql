-- Subscribers choose what they receive and in which shape. `sources` and `actions` are JSON
-- lists (an action entry may end in `*`, a prefix); NULL is "all". `payload_version` 1 is
-- the body every delivery had before: subscriptions that existed keep NULL filters and
-- version 1, so they receive what they received before.
ALTER TABLE webhooks ADD COLUMN sources TEXT;
ALTER TABLE webhooks ADD COLUMN actions TEXT;
ALTER TABLE webhooks ADD COLUMN payload_version BIGINT NOT NULL DEFAULT 1;
