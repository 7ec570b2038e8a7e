-- Meeting records fetched from a platform (DingTalk conferences, Feishu VC meetings and
-- one-to-one calls): evidence for claimed communications where the platform has no
-- phone-call records. One row per (meeting, participating member).
CREATE TABLE meeting_records (
    id                  TEXT PRIMARY KEY,
    org_id              TEXT NOT NULL REFERENCES organisations(id),
    platform            TEXT NOT NULL,
    -- Stable identity of the record on its platform (meeting id + member).
    record_key          TEXT NOT NULL,
    meeting_id          TEXT NOT NULL,
    member_platform_id  TEXT NOT NULL,
    user_id             TEXT REFERENCES users(id),
    -- The customer an external participant belongs to, when one could be linked.
    customer_id         TEXT REFERENCES customers(id),
    kind                TEXT NOT NULL,   -- meeting | call
    topic               TEXT,
    started_at          BIGINT NOT NULL,
    duration_s          BIGINT NOT NULL,
    fetched_at          BIGINT NOT NULL
);
CREATE UNIQUE INDEX meeting_records_key ON meeting_records (org_id, platform, record_key);
CREATE INDEX meeting_records_user ON meeting_records (user_id, started_at);
CREATE INDEX meeting_records_customer ON meeting_records (customer_id, started_at);
