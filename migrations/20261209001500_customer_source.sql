-- Where a customer came from: `api` (created through the REST API or a page),
-- `platform_event` (a rep added them as an external contact, with a lead), or `import`
-- (`closeloop customers import`: an existing external contact, no lead).
ALTER TABLE customers ADD COLUMN source TEXT NOT NULL DEFAULT 'api';
UPDATE customers SET source = 'platform_event'
    WHERE id IN (SELECT customer_id FROM customer_external_ids WHERE contact_id IS NOT NULL);
