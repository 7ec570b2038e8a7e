-- Core model, portable between SQLite and PostgreSQL (sqlx Any driver):
-- ids are TEXT (UUIDv7, time-ordered), times are BIGINT epoch milliseconds (UTC),
-- flags are SMALLINT, JSON is TEXT, ciphertexts are TEXT ("v1.<key id>.<base64>").

CREATE TABLE organisations (
    id          TEXT PRIMARY KEY,
    slug        TEXT NOT NULL UNIQUE,
    name        TEXT NOT NULL,
    timezone    TEXT NOT NULL DEFAULT 'Asia/Shanghai',
    is_default  SMALLINT NOT NULL DEFAULT 0,
    created_at  BIGINT NOT NULL
);

CREATE TABLE users (
    id          TEXT PRIMARY KEY,
    org_id      TEXT NOT NULL REFERENCES organisations(id),
    name        TEXT NOT NULL,
    department  TEXT,
    region      TEXT,
    -- active | left (离职: kept for history and hand-over)
    status      TEXT NOT NULL DEFAULT 'active',
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);
CREATE INDEX users_org ON users (org_id, id);

-- closeloop roles: sales, presales, delivery, finance, legal, manager, admin, security
CREATE TABLE user_roles (
    user_id     TEXT NOT NULL REFERENCES users(id),
    role        TEXT NOT NULL,
    PRIMARY KEY (user_id, role)
);

-- Typed platform identities; one person may hold identities on several platforms.
CREATE TABLE user_identities (
    org_id      TEXT NOT NULL REFERENCES organisations(id),
    platform    TEXT NOT NULL,   -- wecom | dingtalk | feishu
    kind        TEXT NOT NULL,   -- userid | open_userid | unionid | user_id | open_id | union_id
    value       TEXT NOT NULL,
    user_id     TEXT NOT NULL REFERENCES users(id),
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (org_id, platform, kind, value)
);
CREATE INDEX user_identities_user ON user_identities (user_id);

-- Direct superiors: several are possible (matrix organisations).
CREATE TABLE user_superiors (
    user_id      TEXT NOT NULL REFERENCES users(id),
    superior_id  TEXT NOT NULL REFERENCES users(id),
    PRIMARY KEY (user_id, superior_id)
);

CREATE TABLE customers (
    id              TEXT PRIMARY KEY,
    org_id          TEXT NOT NULL REFERENCES organisations(id),
    name            TEXT NOT NULL,
    tier            TEXT,           -- A | B | C, set by the tiers capability
    owner_user_id   TEXT REFERENCES users(id),
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
);
CREATE INDEX customers_org ON customers (org_id, id);
CREATE INDEX customers_owner ON customers (owner_user_id);

-- People at a customer. Personal fields are encrypted; name stays readable for display.
CREATE TABLE contacts (
    id              TEXT PRIMARY KEY,
    org_id          TEXT NOT NULL REFERENCES organisations(id),
    customer_id     TEXT NOT NULL REFERENCES customers(id),
    name            TEXT NOT NULL,
    title           TEXT,
    email_enc       TEXT,
    email_masked    TEXT,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
);
CREATE INDEX contacts_customer ON contacts (customer_id);

-- Phone numbers: E.164, encrypted, plus a keyed hash for lookups. `valid` is 0 once flagged.
CREATE TABLE contact_phones (
    id              TEXT PRIMARY KEY,
    org_id          TEXT NOT NULL REFERENCES organisations(id),
    contact_id      TEXT NOT NULL REFERENCES contacts(id),
    phone_enc       TEXT NOT NULL,
    phone_hash      TEXT NOT NULL,
    phone_masked    TEXT NOT NULL,
    valid           SMALLINT NOT NULL DEFAULT 1,
    invalid_reason  TEXT,
    created_at      BIGINT NOT NULL
);
CREATE INDEX contact_phones_contact ON contact_phones (contact_id);
CREATE INDEX contact_phones_hash ON contact_phones (org_id, phone_hash);

-- Who owned a customer when; until_at NULL is the current owner.
CREATE TABLE customer_owners (
    id              TEXT PRIMARY KEY,
    customer_id     TEXT NOT NULL REFERENCES customers(id),
    user_id         TEXT NOT NULL REFERENCES users(id),
    from_at         BIGINT NOT NULL,
    until_at        BIGINT,
    reason          TEXT NOT NULL   -- created | reassigned | leaver_handover | ...
);
CREATE INDEX customer_owners_customer ON customer_owners (customer_id, from_at);

CREATE TABLE leads (
    id              TEXT PRIMARY KEY,
    org_id          TEXT NOT NULL REFERENCES organisations(id),
    customer_id     TEXT NOT NULL REFERENCES customers(id),
    source_channel  TEXT NOT NULL,  -- e.g. 抖音表单, 公众号菜单; weights live in the rule set
    owner_user_id   TEXT REFERENCES users(id),
    status          TEXT NOT NULL DEFAULT 'open',
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
);
CREATE INDEX leads_customer ON leads (customer_id);

CREATE TABLE deals (
    id              TEXT PRIMARY KEY,
    org_id          TEXT NOT NULL REFERENCES organisations(id),
    customer_id     TEXT NOT NULL REFERENCES customers(id),
    lead_id         TEXT REFERENCES leads(id),
    title           TEXT NOT NULL,
    amount_fen      BIGINT NOT NULL DEFAULT 0,
    currency        TEXT NOT NULL DEFAULT 'CNY',
    region          TEXT,
    product_line    TEXT,
    stage           TEXT NOT NULL,
    owner_user_id   TEXT REFERENCES users(id),
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
);
CREATE INDEX deals_org ON deals (org_id, id);
CREATE INDEX deals_customer ON deals (customer_id);

CREATE TABLE deal_stage_history (
    id              TEXT PRIMARY KEY,
    deal_id         TEXT NOT NULL REFERENCES deals(id),
    from_stage      TEXT,
    to_stage        TEXT NOT NULL,
    actor_user_id   TEXT REFERENCES users(id),
    actor_api_key_id TEXT,
    reason          TEXT,
    at              BIGINT NOT NULL
);
CREATE INDEX deal_stage_history_deal ON deal_stage_history (deal_id, at);

-- The tracking ledger: append-only. Only `verification` changes after insert.
-- Payloads reference people by id and never carry personal data.
CREATE TABLE tracking_points (
    id              TEXT PRIMARY KEY,
    org_id          TEXT NOT NULL REFERENCES organisations(id),
    actor_user_id   TEXT NOT NULL REFERENCES users(id),
    customer_id     TEXT NOT NULL REFERENCES customers(id),
    deal_id         TEXT REFERENCES deals(id),
    action          TEXT NOT NULL,
    occurred_at     BIGINT NOT NULL,
    source          TEXT NOT NULL,   -- sidebar | card | platform_event | api
    platform        TEXT,            -- wecom | dingtalk | feishu
    client_ip       TEXT,
    user_agent      TEXT,
    payload         TEXT NOT NULL DEFAULT '{}',
    verification    TEXT NOT NULL DEFAULT 'not_applicable',
    idempotency_key TEXT,
    request_hash    TEXT,
    api_key_id      TEXT
);
CREATE UNIQUE INDEX tracking_points_idem ON tracking_points (org_id, idempotency_key);
CREATE INDEX tracking_points_org_time ON tracking_points (org_id, occurred_at, id);
CREATE INDEX tracking_points_customer ON tracking_points (customer_id, occurred_at);
CREATE INDEX tracking_points_actor ON tracking_points (actor_user_id, occurred_at);

-- Raw inbound platform callbacks, written before they are acknowledged.
CREATE TABLE inbox (
    id              TEXT PRIMARY KEY,
    org_id          TEXT NOT NULL REFERENCES organisations(id),
    platform        TEXT NOT NULL,
    app             TEXT NOT NULL DEFAULT 'default',
    dedupe_key      TEXT NOT NULL,
    event_type      TEXT NOT NULL,
    received_at     BIGINT NOT NULL,
    body            TEXT NOT NULL,
    status          TEXT NOT NULL DEFAULT 'received', -- received | processed | ignored | quarantined | failed
    processed_at    BIGINT,
    error           TEXT
);
CREATE UNIQUE INDEX inbox_dedupe ON inbox (org_id, platform, app, dedupe_key);
CREATE INDEX inbox_received ON inbox (org_id, received_at, id);

CREATE TABLE api_keys (
    id              TEXT PRIMARY KEY,
    org_id          TEXT NOT NULL REFERENCES organisations(id),
    name            TEXT NOT NULL,
    role            TEXT NOT NULL,   -- admin | integration | read-only
    prefix          TEXT NOT NULL,   -- first characters, shown in listings to recognise a key
    key_hash        TEXT NOT NULL UNIQUE,
    created_at      BIGINT NOT NULL,
    expires_at      BIGINT,
    revoked_at      BIGINT,
    last_used_at    BIGINT
);

CREATE TABLE audit_log (
    id              TEXT PRIMARY KEY,
    org_id          TEXT REFERENCES organisations(id),
    at              BIGINT NOT NULL,
    actor_kind      TEXT NOT NULL,   -- api_key | user | system | cli
    actor_id        TEXT,
    action          TEXT NOT NULL,
    target_kind     TEXT,
    target_id       TEXT,
    detail          TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_log_org_time ON audit_log (org_id, at);
