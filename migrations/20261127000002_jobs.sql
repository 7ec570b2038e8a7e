-- Durable jobs: one table serves the outbox, timers and schedule runs.
CREATE TABLE jobs (
    id              TEXT PRIMARY KEY,          -- UUIDv7: creation order
    org_id          TEXT REFERENCES organisations(id),
    kind            TEXT NOT NULL,
    payload         TEXT NOT NULL DEFAULT '{}',
    -- Jobs sharing an ordering key run one at a time, in id order.
    ordering_key    TEXT,
    -- Optional unique key: enqueueing the same work twice is a no-op.
    dedupe_key      TEXT,
    status          TEXT NOT NULL DEFAULT 'queued', -- queued | running | done | dead
    run_at          BIGINT NOT NULL,           -- due time (epoch ms)
    attempts        BIGINT NOT NULL DEFAULT 0, -- attempts counted against max_attempts
    max_attempts    BIGINT NOT NULL,
    lease_owner     TEXT,
    lease_until     BIGINT,
    -- Fencing token: bumped on every claim; only the holder of the current token may
    -- finish the job.
    lease_token     BIGINT NOT NULL DEFAULT 0,
    last_error      TEXT,
    output          TEXT,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    finished_at     BIGINT
);
CREATE UNIQUE INDEX jobs_dedupe ON jobs (dedupe_key);
CREATE INDEX jobs_due ON jobs (status, run_at, id);
CREATE INDEX jobs_ordering ON jobs (ordering_key, id);

-- Recurring work. A tick is claimed by moving next_run_at forward with a compare-and-set,
-- so it fires once across replicas.
CREATE TABLE schedules (
    id              TEXT PRIMARY KEY,          -- stable name
    org_id          TEXT REFERENCES organisations(id),
    kind            TEXT NOT NULL,
    payload         TEXT NOT NULL DEFAULT '{}',
    cron            TEXT,                      -- cron expression in `timezone`
    every_ms        BIGINT,                    -- or a fixed interval
    timezone        TEXT NOT NULL,
    misfire         TEXT NOT NULL DEFAULT 'once', -- once | skip: what missed ticks do
    next_run_at     BIGINT NOT NULL,
    last_run_at     BIGINT,
    enabled         SMALLINT NOT NULL DEFAULT 1,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
);

-- Outbound webhooks: integrations subscribe to ledger events.
CREATE TABLE webhooks (
    id              TEXT PRIMARY KEY,
    org_id          TEXT NOT NULL REFERENCES organisations(id),
    url             TEXT NOT NULL,
    secret_enc      TEXT NOT NULL,
    events          TEXT NOT NULL,             -- comma-separated event types
    active          SMALLINT NOT NULL DEFAULT 1,
    created_at      BIGINT NOT NULL
);
CREATE INDEX webhooks_org ON webhooks (org_id, active);

-- One row per delivered job: written in the job's completing transaction, so a
-- delivery is recorded exactly once even when the send itself was repeated.
CREATE TABLE webhook_deliveries (
    id              TEXT PRIMARY KEY,
    webhook_id      TEXT NOT NULL REFERENCES webhooks(id),
    job_id          TEXT NOT NULL UNIQUE,
    event_id        TEXT NOT NULL,
    status_code     BIGINT NOT NULL,
    delivered_at    BIGINT NOT NULL
);
