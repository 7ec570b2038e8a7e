-- Collaboration, issue 14: the delivery person's 「已同步客户」 tick when confirming a
-- schedule, and why a card could not be delivered (shown to its sender).
ALTER TABLE collab_requests ADD COLUMN customer_synced SMALLINT;
ALTER TABLE cards ADD COLUMN failure_reason TEXT;
-- Whether the request's answer confirms a date (its type's `confirms_date` when opened).
ALTER TABLE collab_requests ADD COLUMN confirms_date SMALLINT NOT NULL DEFAULT 0;
