-- The access log (issue 15): who read which customer-level object or sensitive field, when
-- and from where. Ids and fixed keys only, never a personal value. Written in batches off
-- the request path (src/access_log/), deleted after `access_log_retention` (180 days by
-- default) by the daily `access_log.prune` job.
CREATE TABLE access_log (
    id              TEXT PRIMARY KEY,
    org_id          TEXT NOT NULL REFERENCES organisations(id),
    at              BIGINT NOT NULL,
    user_id         TEXT,
    api_key_id      TEXT,
    object_kind     TEXT NOT NULL,
    object_id       TEXT NOT NULL,
    field           TEXT,
    purpose         TEXT NOT NULL,
    client_ip       TEXT
);
CREATE INDEX access_log_at ON access_log (org_id, at);
CREATE INDEX access_log_user ON access_log (org_id, user_id, at);
CREATE INDEX access_log_object ON access_log (org_id, object_kind, object_id);
