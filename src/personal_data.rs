//! Personal data at rest, as docs/personal-data.md decides it: the encryption contexts of
//! the columns that hold people's names, numbers and free text, and the start-up data
//! migrations that seal rows (and files) written before those columns were encrypted.
//!
//! A context is authenticated with each ciphertext, so a value copied into another column
//! does not decrypt.

use sqlx::Row;

use crate::db::{Backend, Db, Tx};
use crate::security::Cipher;
use crate::storage::BlobStore;

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
/// `deal_stage_history.reason_enc`: why a deal was rolled back.
pub const ROLLBACK_REASON: &str = "deal_stage_history.reason";
/// `customer_owners.note_enc`: why a deal (and its customer) was reassigned.
pub const REASSIGN_REASON: &str = "customer_owners.note";

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

/// Rows are read and rewritten in pages of this many, so a large table never sits in memory.
const PAGE: i64 = 500;

/// Runs the data migrations not yet recorded; called right after the SQL migrations, before
/// anything else touches the database. Returns the names of the migrations that ran.
pub async fn migrate(
    db: &Db,
    cipher: &Cipher,
    blobs: &BlobStore,
    now_ms: i64,
) -> anyhow::Result<Vec<&'static str>> {
    let mut ran = Vec::new();
    if seal_v1(db, cipher, now_ms).await? {
        ran.push(SEAL_V1);
    }
    if seal_v2(db, cipher, blobs, now_ms).await? {
        ran.push(SEAL_V2);
    }
    // The rows were rewritten in place; on SQLite the old plaintext pages would otherwise
    // survive in the write-ahead log and in free pages of the file.
    if !ran.is_empty() && db.backend == Backend::Sqlite {
        scrub_sqlite(db).await?;
    }
    Ok(ran)
}

const SEAL_V1: &str = "seal_personal_data_v1";
const SEAL_V2: &str = "seal_personal_data_v2";

/// Claims a data migration inside `tx`: `false` when it was recorded before (or another
/// replica recorded it while this one waited on the row).
async fn claim(tx: &mut Tx, name: &str, now_ms: i64) -> Result<bool, sqlx::Error> {
    let claimed = sqlx::query(
        "INSERT INTO data_migrations (name, applied_at) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
    )
    .bind(name)
    .bind(now_ms)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    Ok(claimed == 1)
}

/// Encrypts contact names, hashes call-record keys, names customers created from a person
/// (no company known) after the masked name, drops message text from inbox summaries and
/// fetched contacts from the rows of finished callback processing.
async fn seal_v1(db: &Db, cipher: &Cipher, now_ms: i64) -> anyhow::Result<bool> {
    let mut tx = db.begin().await?;
    if !claim(&mut tx, SEAL_V1, now_ms).await? {
        return Ok(false);
    }
    // Before the names are sealed: a customer named exactly like its contact was named
    // after the person.
    let named_after_person = sqlx::query(
        "SELECT c.id, c.name FROM customer_external_ids x JOIN contacts k ON k.id = x.contact_id \
         JOIN customers c ON c.id = x.customer_id WHERE c.name = k.name_enc",
    )
    .fetch_all(&mut *tx)
    .await?;
    for r in &named_after_person {
        sqlx::query("UPDATE customers SET name = $1 WHERE id = $2")
            .bind(customer_name_for_person(&r.get::<String, _>("name")))
            .bind(r.get::<String, _>("id"))
            .execute(&mut *tx)
            .await?;
    }
    rewrite_column(&mut tx, "contacts", "name_enc", "", |name| {
        Some(cipher.encrypt(CONTACT_NAME, name))
    })
    .await?;
    rewrite_column(&mut tx, "call_records", "record_key", "", |key| {
        Some(cipher.lookup_hash(CALL_RECORD_KEY, key))
    })
    .await?;
    rewrite_column(&mut tx, "inbox", "summary", "", |summary| {
        let mut value: serde_json::Value = serde_json::from_str(summary).ok()?;
        strip_free_text(&mut value).then(|| value.to_string())
    })
    .await?;
    // Processing a callback kept the contact or member it fetched (names, numbers).
    let process = format!("AND kind = '{}'", crate::inbox::PROCESS);
    rewrite_column(&mut tx, "jobs", "output", &process, |output| {
        let value: serde_json::Value = serde_json::from_str(output).ok()?;
        Some(crate::inbox::stored_output(&value).to_string())
    })
    .await?;
    tx.commit().await?;
    Ok(true)
}

/// Encrypts the free text people typed and the cards and files that carry it; drops typed
/// reasons and answers from the collaboration trail, the audit log, the ledger and queued
/// webhook deliveries, where the rows that own them are named instead (a reassignment's
/// reason moves onto the ownership period it opened).
async fn seal_v2(db: &Db, cipher: &Cipher, blobs: &BlobStore, now_ms: i64) -> anyhow::Result<bool> {
    let mut tx = db.begin().await?;
    if !claim(&mut tx, SEAL_V2, now_ms).await? {
        return Ok(false);
    }
    for (table, column, context) in [
        ("collab_requests", "content_enc", COLLAB_CONTENT),
        ("collab_requests", "answer_enc", COLLAB_ANSWER),
        ("collab_requests", "return_reason_enc", COLLAB_RETURN_REASON),
        ("attestations", "note_enc", ATTESTATION_NOTE),
        ("cards", "content_enc", CARD_CONTENT),
        ("blobs", "filename_enc", BLOB_FILENAME),
        ("action_freezes", "lift_reason_enc", LIFT_REASON),
    ] {
        rewrite_column(&mut tx, table, column, "", |v| {
            Some(cipher.encrypt(context, v))
        })
        .await?;
    }
    // A rollback's reason moves to its encrypted column; `reason` keeps codes.
    loop {
        // Rewritten rows leave the selection, so each page starts from the top.
        let rollbacks = sqlx::query(
            "SELECT id, reason FROM deal_stage_history WHERE kind = 'rollback' AND reason IS NOT NULL \
             ORDER BY id LIMIT $1",
        )
        .bind(PAGE)
        .fetch_all(&mut *tx)
        .await?;
        for r in &rollbacks {
            sqlx::query(
                "UPDATE deal_stage_history SET reason_enc = $1, reason = NULL WHERE id = $2",
            )
            .bind(cipher.encrypt(ROLLBACK_REASON, &r.get::<String, _>("reason")))
            .bind(r.get::<String, _>("id"))
            .execute(&mut *tx)
            .await?;
        }
        if (rollbacks.len() as i64) < PAGE {
            break;
        }
    }
    // A reassignment's reason was kept only in its audit entry (and the ledger): it moves
    // onto the ownership period the reassignment opened (same customer, same instant).
    let reassigns = sqlx::query(
        "SELECT a.detail, a.at, d.customer_id FROM audit_log a JOIN deals d ON d.id = a.target_id \
         WHERE a.action = 'deal.reassign'",
    )
    .fetch_all(&mut *tx)
    .await?;
    for r in &reassigns {
        let detail: serde_json::Value =
            serde_json::from_str(&r.get::<String, _>("detail")).unwrap_or_default();
        if let Some(reason) = detail["reason"].as_str() {
            sqlx::query(
                "UPDATE customer_owners SET note_enc = $1 WHERE customer_id = $2 AND from_at = $3 \
                 AND reason = 'reassigned' AND note_enc IS NULL",
            )
            .bind(cipher.encrypt(REASSIGN_REASON, reason))
            .bind(r.get::<String, _>("customer_id"))
            .bind(r.get::<i64, _>("at"))
            .execute(&mut *tx)
            .await?;
        }
    }
    let without = |keys: &'static [&'static str]| {
        move |json: &str| {
            let mut value: serde_json::Value = serde_json::from_str(json).ok()?;
            let o = value.as_object_mut()?;
            let before = o.len();
            o.retain(|k, _| !keys.contains(&k.as_str()));
            (o.len() < before).then(|| value.to_string())
        }
    };
    rewrite_column(
        &mut tx,
        "collab_events",
        "detail",
        "AND action IN ('answered', 'returned')",
        without(&["answer", "reason"]),
    )
    .await?;
    rewrite_column(
        &mut tx,
        "audit_log",
        "detail",
        "AND action IN ('antifraud.lift', 'deal.rollback', 'deal.reassign')",
        without(&["reason"]),
    )
    .await?;
    rewrite_column(
        &mut tx,
        "tracking_points",
        "payload",
        "AND action IN ('stage.rollback', 'deal.reassigned')",
        without(&["reason"]),
    )
    .await?;
    // Deliveries still queued carry the point as it was.
    let webhook = format!("AND kind = '{}'", crate::webhooks::KIND);
    rewrite_column(&mut tx, "jobs", "payload", &webhook, |payload| {
        let mut value: serde_json::Value = serde_json::from_str(payload).ok()?;
        let point = value.pointer_mut("/event/data")?;
        if !matches!(
            point["action"].as_str(),
            Some("stage.rollback" | "deal.reassigned")
        ) {
            return None;
        }
        point
            .get_mut("payload")?
            .as_object_mut()?
            .remove("reason")?;
        Some(value.to_string())
    })
    .await?;
    // Files are sealed before the claim commits: a crash leaves the claim unrecorded, and
    // sealing again skips the files already sealed.
    let files = blobs.seal_existing().await?;
    tracing::info!(files, "blob store files sealed");
    tx.commit().await?;
    Ok(true)
}

/// Rewrites every non-null value of `table.column` (on rows matching `and`, a condition
/// starting with AND, or "") that `f` maps to a new value, a page of rows at a time.
async fn rewrite_column(
    tx: &mut Tx,
    table: &str,
    column: &str,
    and: &str,
    f: impl Fn(&str) -> Option<String>,
) -> Result<(), sqlx::Error> {
    let select = format!(
        "SELECT id, {column} AS v FROM {table} WHERE id > $1 AND {column} IS NOT NULL {and} ORDER BY id LIMIT $2"
    );
    let update = format!("UPDATE {table} SET {column} = $1 WHERE id = $2");
    let mut after = String::new();
    loop {
        let rows = sqlx::query(&select)
            .bind(&after)
            .bind(PAGE)
            .fetch_all(&mut **tx)
            .await?;
        for r in &rows {
            let id: String = r.get("id");
            if let Some(new) = f(&r.get::<String, _>("v")) {
                sqlx::query(&update)
                    .bind(new)
                    .bind(&id)
                    .execute(&mut **tx)
                    .await?;
            }
            after = id;
        }
        if (rows.len() as i64) < PAGE {
            return Ok(());
        }
    }
}

/// Empties the write-ahead log into the file, rebuilds the file without its free pages
/// (`VACUUM`), and empties the log again, so no copy of a rewritten row is left on disk.
async fn scrub_sqlite(db: &Db) -> Result<(), sqlx::Error> {
    let mut conn = db.pool.acquire().await?;
    sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
        .execute(&mut *conn)
        .await?;
    sqlx::query("VACUUM").execute(&mut *conn).await?;
    sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// What a customer is called when the platform knows a person but no company: the person's
/// masked name (张**), since customer names are stored and shown in the clear.
pub fn customer_name_for_person(person: &str) -> String {
    let mut chars = person.trim().chars();
    match chars.next() {
        Some(first) => {
            let hidden = chars.count().clamp(1, 3);
            format!("{first}{}（个人）", "*".repeat(hidden))
        }
        None => "未命名客户".into(),
    }
}

/// Drops free text from an inbox summary (a message's `text`); `true` when something was
/// dropped. Summaries are shown without decryption, so they keep ids and types only.
pub fn strip_free_text(summary: &mut serde_json::Value) -> bool {
    summary
        .as_object_mut()
        .is_some_and(|o| o.remove("text").is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_person_becomes_a_masked_customer_name() {
        assert_eq!(customer_name_for_person("欧阳明月"), "欧***（个人）");
        assert_eq!(customer_name_for_person("张三"), "张*（个人）");
        assert_eq!(customer_name_for_person("Z"), "Z*（个人）");
        assert_eq!(customer_name_for_person("  "), "未命名客户");
        assert!(!customer_name_for_person("Zhang Weiguo").contains("Weiguo"));
    }

    #[test]
    fn message_text_leaves_the_summary() {
        let mut s =
            serde_json::json!({"type": "message", "user_id": "liming", "text": "13800138000"});
        assert!(strip_free_text(&mut s));
        assert_eq!(
            s,
            serde_json::json!({"type": "message", "user_id": "liming"})
        );
        let mut other = serde_json::json!({"type": "enter_app", "user_id": "liming"});
        assert!(!strip_free_text(&mut other));
    }
}
