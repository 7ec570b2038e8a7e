-- Binds each OAuth `state` to the browser that started the sign-in: the hash of a random
-- pre-login cookie set by `/auth/<platform>/login`. The callback refuses a state whose
-- browser does not present that cookie. Rows written before this column existed have no
-- binding and are refused; they expire within ten minutes anyway.
ALTER TABLE oauth_states ADD COLUMN browser_hash TEXT;
