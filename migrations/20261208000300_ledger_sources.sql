-- One ledger (docs/design.md): card clicks, platform events and closeloop's own findings are
-- tracking points too. A point names what kind of actor made it (`user`, `customer`,
-- `platform`, `system`) and, when it came from a platform, the platform's own id for it: a
-- platform that retries a callback never writes a point twice.
--
-- `actor_user_id` and `customer_id` become nullable (a directory change has no customer, a
-- platform event may have no member). SQLite cannot drop NOT NULL in SQL, so that step is
-- done right after these statements by `Db::migrate` (src/db.rs), once, recorded in
-- `data_migrations` as `ledger_nullable_actor_customer`.
ALTER TABLE tracking_points ADD COLUMN actor_kind TEXT NOT NULL DEFAULT 'user';
ALTER TABLE tracking_points ADD COLUMN external_id TEXT;

-- Closeloop's own points written so far (rule hits, stage moves, document opens) were
-- made by the system, about the rep they name.
UPDATE tracking_points SET actor_kind = 'system' WHERE source = 'system';

-- A platform's id is unique per organisation, source and platform (NULL ids never clash).
CREATE UNIQUE INDEX tracking_points_external
    ON tracking_points (org_id, source, COALESCE(platform, ''), external_id);
