-- What the inbox shows of a callback without decrypting its body: the parsed event with
-- personal content left out. The body itself is stored encrypted.
ALTER TABLE inbox ADD COLUMN summary TEXT;
