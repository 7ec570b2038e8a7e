-- Who granted a closeloop role (issue 15): `admin` — set through the API, `closeloop users
-- set-roles` or the people page, and kept by every directory sync — or `ldap` — granted by
-- the LDAP directory sync from a group in `[ldap.group_roles]`, and taken away by it when
-- the membership goes.
ALTER TABLE user_roles ADD COLUMN source TEXT NOT NULL DEFAULT 'admin';
