-- Personal data at rest, second step (docs/personal-data.md): the free text people type
-- (collaboration requests, answers and returns, attestation notes, the reasons of a lift,
-- a rollback or a reassignment), the cards that carry it and the names of uploaded files
-- become ciphertexts under the data key; the columns are renamed to say so. SQL cannot
-- encrypt, so the existing values are sealed by the start-up data migration
-- `seal_personal_data_v2` (src/personal_data.rs), which also encrypts the files of the blob
-- store and drops typed text from the collaboration trail, audit entries and the ledger.
ALTER TABLE collab_requests RENAME COLUMN content TO content_enc;
ALTER TABLE collab_requests RENAME COLUMN answer TO answer_enc;
ALTER TABLE collab_requests RENAME COLUMN return_reason TO return_reason_enc;
ALTER TABLE attestations RENAME COLUMN note TO note_enc;
ALTER TABLE cards RENAME COLUMN content TO content_enc;
ALTER TABLE blobs RENAME COLUMN filename TO filename_enc;
ALTER TABLE action_freezes RENAME COLUMN lift_reason TO lift_reason_enc;

-- A rollback's typed reason; `reason` keeps codes only (`created`).
ALTER TABLE deal_stage_history ADD COLUMN reason_enc TEXT;
-- The typed reason of a reassignment, on the ownership period it opened (`reason` is the
-- code: `reassigned`).
ALTER TABLE customer_owners ADD COLUMN note_enc TEXT;
