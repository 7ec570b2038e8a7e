//! Personal data at rest, as docs/personal-data.md decides it: the encryption contexts of
//! the columns that hold people's names, numbers and free text, and the start-up data
//! migrations that seal rows written before those columns were encrypted.
//!
//! A context is authenticated with each ciphertext, so a value copied into another column
//! does not decrypt.

use sqlx::Row;

use crate::db::{Backend, Db, Tx};
use crate::security::Cipher;

/// `contacts.name_enc`: a customer's contact person.
pub const CONTACT_NAME: &str = "contacts.name";
/// `call_records.record_key`: the platform's identity of a call record (WeCom's holds the
/// callee's number), kept only as a keyed hash since it serves duplicate detection alone.
pub const CALL_RECORD_KEY: &str = "call_records.record_key";

/// Rows are read and rewritten in pages of this many, so a large table never sits in memory.
const PAGE: i64 = 500;

/// Runs the data migrations not yet recorded; called right after the SQL migrations, before
/// anything else touches the database. Returns the names of the migrations that ran.
pub async fn migrate(db: &Db, cipher: &Cipher, now_ms: i64) -> anyhow::Result<Vec<&'static str>> {
    let mut ran = Vec::new();
    if seal_v1(db, cipher, now_ms).await? {
        ran.push(SEAL_V1);
        // The rows were rewritten in place; on SQLite the old plaintext pages would
        // otherwise survive in the write-ahead log and in free pages of the file.
        if db.backend == Backend::Sqlite {
            scrub_sqlite(db).await?;
        }
    }
    Ok(ran)
}

const SEAL_V1: &str = "seal_personal_data_v1";

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
