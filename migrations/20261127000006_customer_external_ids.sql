-- A customer as a platform knows them (WeCom external userid, …): how platform events
-- about a person find the customer and contact closeloop created for them.
CREATE TABLE customer_external_ids (
    org_id            TEXT NOT NULL REFERENCES organisations(id),
    platform          TEXT NOT NULL,
    external_user_id  TEXT NOT NULL,
    customer_id       TEXT NOT NULL REFERENCES customers(id),
    contact_id        TEXT REFERENCES contacts(id),
    created_at        BIGINT NOT NULL,
    PRIMARY KEY (org_id, platform, external_user_id)
);
