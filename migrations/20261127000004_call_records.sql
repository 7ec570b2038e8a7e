-- Official call records fetched from a platform (WeCom 公费电话 now), stored once each and
-- linked to the rep and, through the phone number's keyed hash, to a customer's contact.
CREATE TABLE call_records (
    id                  TEXT PRIMARY KEY,
    org_id              TEXT NOT NULL REFERENCES organisations(id),
    platform            TEXT NOT NULL,
    -- Stable identity of the record on its platform (it has no id of its own).
    record_key          TEXT NOT NULL,
    caller_platform_id  TEXT NOT NULL,
    caller_user_id      TEXT REFERENCES users(id),
    callee_phone_enc    TEXT,
    callee_phone_hash   TEXT,
    callee_phone_masked TEXT,
    callee_contact_id   TEXT REFERENCES contacts(id),
    customer_id         TEXT REFERENCES customers(id),
    started_at          BIGINT NOT NULL,
    duration_s          BIGINT NOT NULL,
    call_type           TEXT,
    fetched_at          BIGINT NOT NULL
);
CREATE UNIQUE INDEX call_records_key ON call_records (org_id, platform, record_key);
CREATE INDEX call_records_customer ON call_records (customer_id, started_at);
CREATE INDEX call_records_caller ON call_records (caller_user_id, started_at);
