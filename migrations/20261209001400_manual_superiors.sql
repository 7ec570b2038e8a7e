-- Who set a user's direct superiors (issue 14): `directory` — the platform's directory sync
-- keeps them in step with 直属上级 — or `manual` — an admin changed them (the API, `closeloop
-- users set-superiors`, the people page) and the sync leaves them alone until an admin hands
-- them back to the directory.
ALTER TABLE users ADD COLUMN superior_source TEXT NOT NULL DEFAULT 'directory';
