-- A customer's region, so a package's `region` scope has something to match: it defaults
-- to the owner's region when the customer is created and stays editable.
ALTER TABLE customers ADD COLUMN region TEXT;
UPDATE customers SET region = (SELECT u.region FROM users u WHERE u.id = customers.owner_user_id);
CREATE INDEX customers_region ON customers (org_id, region);

-- Whom an API key acts for: `organisation` (the key's role decides) or `actor` (every
-- request names a member, whose permissions apply).
ALTER TABLE api_keys ADD COLUMN acting TEXT NOT NULL DEFAULT 'organisation';

-- The policy walks reporting lines downwards (a superior's reports and subtree).
CREATE INDEX user_superiors_superior ON user_superiors (superior_id);
