-- The audit log's hash chain (issue 15): writers insert entries unsealed, as before; the
-- sealer gives each, in batches, its organisation's next `seq`, the previous entry's hash
-- and its own hash (hex SHA-256), so replicas never serialise on single entries.
ALTER TABLE audit_log ADD COLUMN seq BIGINT;
ALTER TABLE audit_log ADD COLUMN prev_hash TEXT;
ALTER TABLE audit_log ADD COLUMN hash TEXT;
CREATE UNIQUE INDEX audit_log_chain ON audit_log (org_id, seq);
CREATE INDEX audit_log_actor ON audit_log (org_id, actor_id, at);
CREATE INDEX audit_log_target ON audit_log (org_id, target_id, at);

-- The chain head of each organisation as the sealer left it. Its row is the sealer's lock
-- (one sealer per organisation at a time, across replicas); `closeloop audit verify`
-- recomputes the chain from audit_log and never trusts this row, only compares with it.
CREATE TABLE audit_heads (
    org_id          TEXT PRIMARY KEY REFERENCES organisations(id),
    seq             BIGINT NOT NULL DEFAULT 0,
    hash            TEXT NOT NULL,
    at              BIGINT NOT NULL DEFAULT 0,
    sealed_at       BIGINT NOT NULL DEFAULT 0
);

-- The client IP of the web session or API key request that made the change (NULL for
-- jobs, the command line and platform callbacks); covered by the entry's hash.
ALTER TABLE audit_log ADD COLUMN client_ip TEXT;
CREATE INDEX audit_log_client_ip ON audit_log (org_id, client_ip, at);
