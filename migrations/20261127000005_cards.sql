-- Interactive cards sent to people (quick-asks, handoffs, SLA reminders, reviews).
-- The card id doubles as the platform's task id, so a click names its card.
CREATE TABLE cards (
    id                        TEXT PRIMARY KEY,
    org_id                    TEXT NOT NULL REFERENCES organisations(id),
    recipient_user_id         TEXT NOT NULL REFERENCES users(id),
    purpose                   TEXT NOT NULL,
    object_ref                TEXT,
    content                   TEXT NOT NULL,              -- the card model as JSON
    status                    TEXT NOT NULL DEFAULT 'queued', -- queued | sent | failed
    platform                  TEXT,
    platform_message_id       TEXT,
    sent_at                   BIGINT,
    -- One-shot code to update the card (WeCom: 72 h); never shown by the API.
    response_code             TEXT,
    response_code_expires_at  BIGINT,
    -- The first click by the recipient; later clicks change nothing.
    clicked_action            TEXT,
    clicked_by_user_id        TEXT REFERENCES users(id),
    clicked_at                BIGINT,
    created_at                BIGINT NOT NULL,
    updated_at                BIGINT NOT NULL
);
CREATE INDEX cards_recipient ON cards (recipient_user_id, created_at);
CREATE INDEX cards_recipient_sent ON cards (recipient_user_id, sent_at);
