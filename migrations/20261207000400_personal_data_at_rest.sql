-- Personal data at rest (docs/personal-data.md): columns that hold people's names and free
-- text become ciphertexts ("v1.<key id>.<base64>", the data key) and are renamed to say so.
-- SQL cannot encrypt, so the existing values are sealed by the start-up data migration
-- `seal_personal_data_v1` (src/personal_data.rs), which runs once, in one transaction, right
-- after these statements and is recorded in `data_migrations`. It also replaces
-- `call_records.record_key` (which held the callee's number) by a keyed hash.
ALTER TABLE contacts RENAME COLUMN name TO name_enc;

-- Data migrations done in Rust (each runs once; its row is written in its transaction).
CREATE TABLE data_migrations (
    name        TEXT PRIMARY KEY,
    applied_at  BIGINT NOT NULL
);

-- Meeting topics are free text (they often name the customer's people) and nothing reads
-- them: they are no longer kept.
UPDATE meeting_records SET topic = NULL;
