-- Cross-role collaboration: quick-asks and handoffs between roles, with SLA clocks,
-- responsibility anchors (initiator, responsible role, assignee, content snapshot with
-- hash, acknowledgement) and delivery dates that reach the rep's calendar.

-- Who serves a customer in each role (presales, delivery, finance, ...).
CREATE TABLE customer_assignments (
    customer_id     TEXT NOT NULL REFERENCES customers(id),
    role            TEXT NOT NULL,
    user_id         TEXT NOT NULL REFERENCES users(id),
    assigned_at     BIGINT NOT NULL,
    PRIMARY KEY (customer_id, role)
);

CREATE TABLE collab_requests (
    id              TEXT PRIMARY KEY,
    org_id          TEXT NOT NULL REFERENCES organisations(id),
    kind            TEXT NOT NULL,   -- quick_ask | handoff
    type_key        TEXT NOT NULL,   -- the rule set's collaboration type
    title           TEXT NOT NULL,
    customer_id     TEXT NOT NULL REFERENCES customers(id),
    deal_id         TEXT REFERENCES deals(id),
    initiator_user_id TEXT NOT NULL REFERENCES users(id),
    responsible_role TEXT NOT NULL,
    -- NULL while it waits in the role's queue; set by the first to accept.
    assignee_user_id TEXT REFERENCES users(id),
    status          TEXT NOT NULL,   -- open | accepted | answered | returned
    content         TEXT NOT NULL,   -- JSON snapshot of what was asked
    content_hash    TEXT NOT NULL,   -- sha256 of `content`
    answer          TEXT,
    answer_date     TEXT,            -- a date the answer confirms (delivery), YYYY-MM-DD
    return_reason   TEXT,
    acked_at        BIGINT,
    acked_by        TEXT,
    ack_due_at      BIGINT,
    due_at          BIGINT NOT NULL,
    business_hours  SMALLINT NOT NULL DEFAULT 0,
    overdue_at      BIGINT,
    created_at      BIGINT NOT NULL,
    accepted_at     BIGINT,
    closed_at       BIGINT,
    closed_by       TEXT,
    updated_at      BIGINT NOT NULL
);
CREATE INDEX collab_requests_org ON collab_requests (org_id, id);
CREATE INDEX collab_requests_assignee ON collab_requests (assignee_user_id, status);
CREATE INDEX collab_requests_customer ON collab_requests (customer_id, created_at);

-- The artefacts a handoff carries (documents in the blob store).
CREATE TABLE collab_artefacts (
    request_id      TEXT NOT NULL REFERENCES collab_requests(id),
    name            TEXT NOT NULL,
    document_id     TEXT NOT NULL REFERENCES documents(id),
    PRIMARY KEY (request_id, name)
);

-- Everything that happened to a request, in order: the responsibility trail.
CREATE TABLE collab_events (
    id              TEXT PRIMARY KEY,
    request_id      TEXT NOT NULL REFERENCES collab_requests(id),
    at              BIGINT NOT NULL,
    actor_user_id   TEXT,
    action          TEXT NOT NULL,   -- opened | acknowledged | accepted | answered | returned | reminded | overdue | escalated
    detail          TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX collab_events_request ON collab_events (request_id, at);

-- Dated entries for a person's calendar (the ICS feed).
CREATE TABLE calendar_entries (
    id              TEXT PRIMARY KEY,
    org_id          TEXT NOT NULL REFERENCES organisations(id),
    user_id         TEXT NOT NULL REFERENCES users(id),
    request_id      TEXT REFERENCES collab_requests(id),
    title           TEXT NOT NULL,
    day             TEXT NOT NULL,   -- YYYY-MM-DD
    -- The event on the person's platform calendar (WeCom schedule_id), once pushed.
    platform_ref    TEXT,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
);
CREATE UNIQUE INDEX calendar_entries_request ON calendar_entries (request_id, user_id);
CREATE INDEX calendar_entries_user ON calendar_entries (user_id, day);

-- Per-person secret feed addresses for calendar apps (only a hash is kept).
CREATE TABLE calendar_feeds (
    user_id         TEXT PRIMARY KEY REFERENCES users(id),
    token_hash      TEXT NOT NULL UNIQUE,
    created_at      BIGINT NOT NULL
);

-- What an updated card shows in place of its buttons (who handled it, and when).
ALTER TABLE cards ADD COLUMN status_text TEXT;
