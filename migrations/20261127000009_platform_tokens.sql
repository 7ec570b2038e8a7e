-- Platform access tokens shared by replicas on PostgreSQL (one refresh at a time across
-- them, under an advisory lock). Tokens are encrypted with the data key.
CREATE TABLE platform_tokens (
    key             TEXT PRIMARY KEY,   -- platform:corp:kind:<hash of the secret>
    token_enc       TEXT NOT NULL,
    expires_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
);
