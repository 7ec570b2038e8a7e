-- Browser sessions (sidebar, dashboards) after a platform's OAuth sign-in. Stored in the
-- database so any replica serves them; only a hash of the cookie value is kept.
CREATE TABLE web_sessions (
    id_hash     TEXT PRIMARY KEY,
    org_id      TEXT NOT NULL REFERENCES organisations(id),
    user_id     TEXT NOT NULL REFERENCES users(id),
    csrf_token  TEXT NOT NULL,
    platform    TEXT,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL
);
CREATE INDEX web_sessions_user ON web_sessions (user_id);

-- OAuth `state` values: single use, short-lived, remembering where to go after sign-in.
CREATE TABLE oauth_states (
    state_hash  TEXT PRIMARY KEY,
    next_path   TEXT NOT NULL,
    expires_at  BIGINT NOT NULL
);
