//! The encryption contexts of the columns that hold people's names, numbers and free text
//! (docs/personal-data.md), and reading them back. A context is authenticated with each
//! ciphertext, so a value copied into another column does not decrypt.

use super::Cipher;

/// `contacts.name_enc`: a customer's contact person.
pub const CONTACT_NAME: &str = "contacts.name";
/// `call_records.record_key`: the platform's identity of a call record (WeCom's holds the
/// callee's number), kept only as a keyed hash since it serves duplicate detection alone.
pub const CALL_RECORD_KEY: &str = "call_records.record_key";

/// `collab_requests.content_enc`: what a quick-ask or handoff asks (the filled template).
pub const COLLAB_CONTENT: &str = "collab_requests.content";
/// `collab_requests.answer_enc`: the answer.
pub const COLLAB_ANSWER: &str = "collab_requests.answer";
/// `collab_requests.return_reason_enc`: why it was handed back.
pub const COLLAB_RETURN_REASON: &str = "collab_requests.return_reason";
/// `attestations.note_enc`: the rep's account of what happened.
pub const ATTESTATION_NOTE: &str = "attestations.note";
/// `cards.content_enc`: the card model (it carries request text, answers and notes).
pub const CARD_CONTENT: &str = "cards.content";
/// `blobs.filename_enc`: an uploaded file's name.
pub const BLOB_FILENAME: &str = "blobs.filename";
/// The bytes of a file in the blob store.
pub const BLOB_FILE: &str = "blobs.file";
/// `action_freezes.lift_reason_enc`: why a freeze was lifted.
pub const LIFT_REASON: &str = "action_freezes.lift_reason";
/// `deal_stage_history.reason_enc`: why a deal was rolled back or reopened.
pub const ROLLBACK_REASON: &str = "deal_stage_history.reason";
/// `deals.lost_note_enc`: what the rep wrote when the deal was lost (输单).
pub const LOST_NOTE: &str = "deals.lost_note";
/// `customer_owners.note_enc`: why a deal (and its customer) was reassigned.
pub const REASSIGN_REASON: &str = "customer_owners.note";
/// `access_requests.reason_enc`: why a member asks for more access.
pub const ACCESS_REASON: &str = "access_requests.reason";

/// Decrypts a stored value of `context`; a value that does not decrypt is an internal error
/// naming the context, never the value.
pub fn open(cipher: &Cipher, context: &str, sealed: &str) -> crate::error::Result<String> {
    cipher
        .decrypt(context, sealed)
        .map_err(|e| crate::error::Error::Internal(anyhow::anyhow!("{context} unreadable: {e}")))
}

/// [`open`] for a nullable column.
pub fn open_opt(
    cipher: &Cipher,
    context: &str,
    sealed: Option<String>,
) -> crate::error::Result<Option<String>> {
    sealed.map(|s| open(cipher, context, &s)).transpose()
}
