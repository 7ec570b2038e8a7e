-- The platform-id index covers only the points that carry a platform id. Sidebar taps and
-- API writes (nearly every point) have none, so they no longer pay for an index entry that
-- could never clash; the lookup by platform id (`external_id = ?`) still uses the index.
DROP INDEX tracking_points_external;
CREATE UNIQUE INDEX tracking_points_external
    ON tracking_points (org_id, source, COALESCE(platform, ''), external_id)
    WHERE external_id IS NOT NULL;
