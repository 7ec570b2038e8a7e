//! Personal data at rest, as docs/personal-data.md decides it: the start-up data migrations
//! that seal rows (and files) written before their columns were encrypted. The columns'
//! encryption contexts are in `security::fields`, below every capability, so this module
//! may read the capabilities' rules without an import cycle.

use sqlx::Row;

use crate::customers::customer_name_for_person;
use crate::db::{Backend, Db, Tx};
use crate::inbox::strip_free_text;
use crate::security::fields::*;
use crate::security::Cipher;
use crate::storage::BlobStore;

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
