-- The verified process loop: versioned rule sets, verification of claimed actions,
-- anti-fraud freezes, attested evidence, contact validity, documents with tracked links,
-- review tasks and the weekly credibility figures.

-- Rule sets are versioned; the highest version of an organisation is the one in force.
CREATE TABLE rule_sets (
    id              TEXT PRIMARY KEY,
    org_id          TEXT NOT NULL REFERENCES organisations(id),
    version         BIGINT NOT NULL,
    content         TEXT NOT NULL,   -- TOML, as imported (normalised)
    content_hash    TEXT NOT NULL,
    created_at      BIGINT NOT NULL,
    created_by      TEXT             -- "cli", an API key id, or a user id
);
CREATE UNIQUE INDEX rule_sets_version ON rule_sets (org_id, version);

-- One row per tracking point whose action claims something checkable (a call, ...).
-- tracking_points.verification mirrors `status`.
CREATE TABLE point_verifications (
    point_id        TEXT PRIMARY KEY REFERENCES tracking_points(id),
    org_id          TEXT NOT NULL REFERENCES organisations(id),
    customer_id     TEXT NOT NULL REFERENCES customers(id),
    actor_user_id   TEXT NOT NULL REFERENCES users(id),
    claim           TEXT NOT NULL,   -- call | ...
    platform        TEXT,            -- whose evidence policy applies
    status          TEXT NOT NULL,   -- pending | verified | too_short | unverified | attested
    occurred_at     BIGINT NOT NULL,
    window_closes_at BIGINT NOT NULL,
    evidence_source TEXT,            -- call_record | meeting | chat | attestation
    evidence_ref    TEXT,            -- id of the backing record; one record backs one point
    duration_s      BIGINT,
    decided_at      BIGINT,
    updated_at      BIGINT NOT NULL
);
CREATE UNIQUE INDEX point_verifications_evidence ON point_verifications (evidence_source, evidence_ref);
CREATE INDEX point_verifications_customer ON point_verifications (customer_id, status);
CREATE INDEX point_verifications_actor ON point_verifications (actor_user_id, occurred_at);
CREATE INDEX point_verifications_pending ON point_verifications (status, window_closes_at);

-- Daily chat-message counts between a rep and a customer, from a message source.
CREATE TABLE chat_message_days (
    org_id          TEXT NOT NULL REFERENCES organisations(id),
    user_id         TEXT NOT NULL REFERENCES users(id),
    customer_id     TEXT NOT NULL REFERENCES customers(id),
    day             TEXT NOT NULL,   -- YYYY-MM-DD in the organisation's zone
    messages        BIGINT NOT NULL,
    source          TEXT NOT NULL,
    updated_at      BIGINT NOT NULL,
    PRIMARY KEY (org_id, user_id, customer_id, day)
);
CREATE INDEX chat_message_days_customer ON chat_message_days (customer_id, day);

-- A rep's actions on a customer, frozen by a rule until a manager lifts it.
CREATE TABLE action_freezes (
    id              TEXT PRIMARY KEY,
    org_id          TEXT NOT NULL REFERENCES organisations(id),
    user_id         TEXT NOT NULL REFERENCES users(id),
    customer_id     TEXT NOT NULL REFERENCES customers(id),
    rule            TEXT NOT NULL,
    reason          TEXT NOT NULL,
    point_id        TEXT,            -- the rule-hit tracking point
    frozen_at       BIGINT NOT NULL,
    lifted_at       BIGINT,
    lifted_by       TEXT,
    lift_reason     TEXT
);
CREATE INDEX action_freezes_active ON action_freezes (user_id, customer_id, lifted_at);
CREATE INDEX action_freezes_org ON action_freezes (org_id, id);

-- Files in the blob store (content addressed by sha256 within an organisation).
CREATE TABLE blobs (
    id              TEXT PRIMARY KEY,
    org_id          TEXT NOT NULL REFERENCES organisations(id),
    sha256          TEXT NOT NULL,
    size_bytes      BIGINT NOT NULL,
    content_type    TEXT NOT NULL,
    filename        TEXT NOT NULL,
    storage_key     TEXT NOT NULL,
    uploaded_by     TEXT REFERENCES users(id),
    created_at      BIGINT NOT NULL
);
CREATE INDEX blobs_org ON blobs (org_id, id);

-- Documents attached to a customer: proposals, attestation proofs, handoff artefacts.
CREATE TABLE documents (
    id              TEXT PRIMARY KEY,
    org_id          TEXT NOT NULL REFERENCES organisations(id),
    customer_id     TEXT NOT NULL REFERENCES customers(id),
    deal_id         TEXT REFERENCES deals(id),
    kind            TEXT NOT NULL,   -- proposal | proof | artefact
    blob_id         TEXT NOT NULL REFERENCES blobs(id),
    uploaded_by     TEXT NOT NULL REFERENCES users(id),
    point_id        TEXT,            -- the upload's tracking point
    created_at      BIGINT NOT NULL
);
CREATE INDEX documents_customer ON documents (customer_id, kind);

-- A document sent to a customer as a tracked link; the first open is a tracking point.
CREATE TABLE document_links (
    id              TEXT PRIMARY KEY,
    org_id          TEXT NOT NULL REFERENCES organisations(id),
    document_id     TEXT NOT NULL REFERENCES documents(id),
    customer_id     TEXT NOT NULL REFERENCES customers(id),
    token_hash      TEXT NOT NULL UNIQUE,
    sent_by         TEXT NOT NULL REFERENCES users(id),
    sent_at         BIGINT NOT NULL,
    sent_point_id   TEXT,
    expires_at      BIGINT NOT NULL,
    first_opened_at BIGINT,
    opened_point_id TEXT,
    open_count      BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX document_links_document ON document_links (document_id);
CREATE INDEX document_links_sender ON document_links (sent_by, sent_at);

-- Proof attached by a rep for a claim, confirmed by the direct superior on a card.
CREATE TABLE attestations (
    id              TEXT PRIMARY KEY,
    org_id          TEXT NOT NULL REFERENCES organisations(id),
    point_id        TEXT NOT NULL REFERENCES tracking_points(id),
    requested_by    TEXT NOT NULL REFERENCES users(id),
    approver_user_id TEXT NOT NULL REFERENCES users(id),
    document_id     TEXT REFERENCES documents(id),
    note            TEXT,
    status          TEXT NOT NULL,   -- pending | confirmed | rejected
    card_id         TEXT,
    created_at      BIGINT NOT NULL,
    decided_at      BIGINT
);
CREATE INDEX attestations_point ON attestations (point_id);

-- Things someone has to do (a review after a credibility drop, a follow-up, ...).
CREATE TABLE tasks (
    id              TEXT PRIMARY KEY,
    org_id          TEXT NOT NULL REFERENCES organisations(id),
    assignee_user_id TEXT NOT NULL REFERENCES users(id),
    kind            TEXT NOT NULL,
    title           TEXT NOT NULL,
    detail          TEXT NOT NULL DEFAULT '{}',
    object_ref      TEXT,
    status          TEXT NOT NULL DEFAULT 'open', -- open | done | cancelled
    due_at          BIGINT,
    created_at      BIGINT NOT NULL,
    completed_at    BIGINT,
    dedupe_key      TEXT NOT NULL
);
CREATE UNIQUE INDEX tasks_dedupe ON tasks (org_id, dedupe_key);
CREATE INDEX tasks_assignee ON tasks (assignee_user_id, status);

-- Weekly credibility counts per rep (week_start: Monday 00:00 in the org's zone, epoch ms).
CREATE TABLE credibility_weekly (
    org_id          TEXT NOT NULL REFERENCES organisations(id),
    user_id         TEXT NOT NULL REFERENCES users(id),
    week_start      BIGINT NOT NULL,
    calls_recorded  BIGINT NOT NULL,
    calls_verified  BIGINT NOT NULL,
    proposals_sent  BIGINT NOT NULL,
    proposals_opened BIGINT NOT NULL,
    alerted         SMALLINT NOT NULL DEFAULT 0,
    computed_at     BIGINT NOT NULL,
    PRIMARY KEY (org_id, user_id, week_start)
);

-- Contact validity: who marked a number and when.
ALTER TABLE contact_phones ADD COLUMN invalid_at BIGINT;
ALTER TABLE contact_phones ADD COLUMN invalid_by TEXT;

-- Stage moves: forward by a gate, back by a manager's rollback.
ALTER TABLE deal_stage_history ADD COLUMN kind TEXT NOT NULL DEFAULT 'advance';
