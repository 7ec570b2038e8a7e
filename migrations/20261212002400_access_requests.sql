-- Permission requests (issue 15 item 5): a member asks for more (a field reveal, a region,
-- a customer); the approver the chain names (src/approvals/) decides. An approved request
-- creates a grant, which the central policy reads. Times are BIGINT milliseconds.
CREATE TABLE access_requests (
    id           TEXT PRIMARY KEY,
    org_id       TEXT NOT NULL REFERENCES organisations(id),
    requester    TEXT NOT NULL REFERENCES users(id),
    -- field | region | customer
    kind         TEXT NOT NULL,
    -- a field key (phone, email, amount, decision_chain), a region name or a customer id
    target       TEXT NOT NULL,
    -- the requester's typed reason, encrypted with the data key (docs/personal-data.md)
    reason_enc   TEXT NOT NULL,
    approver     TEXT NOT NULL REFERENCES users(id),
    -- direct_superior | higher_superior | security
    approver_why TEXT NOT NULL,
    -- pending | approved | refused | withdrawn
    status       TEXT NOT NULL DEFAULT 'pending',
    -- a user id, or the API key id of an admin key acting for nobody
    decided_by   TEXT,
    decided_at   BIGINT,
    created_at   BIGINT NOT NULL,
    -- when the grant an approval created ends
    expires_at   BIGINT
);
CREATE INDEX access_requests_requester ON access_requests (org_id, requester, created_at);
CREATE INDEX access_requests_approver ON access_requests (org_id, approver, status);

CREATE TABLE access_grants (
    id          TEXT PRIMARY KEY,
    org_id      TEXT NOT NULL REFERENCES organisations(id),
    user_id     TEXT NOT NULL REFERENCES users(id),
    kind        TEXT NOT NULL,
    target      TEXT NOT NULL,
    request_id  TEXT REFERENCES access_requests(id),
    granted_by  TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT,
    revoked_at  BIGINT
);
CREATE INDEX access_grants_user ON access_grants (org_id, user_id);

-- The circuit breaker: a member whose requests are paused until a security officer lifts it.
CREATE TABLE request_pauses (
    id          TEXT PRIMARY KEY,
    org_id      TEXT NOT NULL REFERENCES organisations(id),
    user_id     TEXT NOT NULL REFERENCES users(id),
    paused_at   BIGINT NOT NULL,
    lifted_by   TEXT,
    lifted_at   BIGINT
);
CREATE INDEX request_pauses_user ON request_pauses (org_id, user_id);
