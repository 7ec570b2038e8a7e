//! Official call records, platform-neutral. Each record is stored once (unique record
//! key, kept as a keyed hash because WeCom's holds the callee's number), with the callee's
//! number normalised, encrypted and hashed like every other phone number, and linked to the
//! rep (by platform identity) and to the customer's contact (by the number's keyed hash).

use serde::Serialize;
use sqlx::Row;

use crate::chat::event::Platform;
use crate::customers::{DEFAULT_REGION, PHONE_CONTEXT};
use crate::db::{new_id, Db, Tx};
use crate::error::Result;
use crate::rules::RuleSet;
use crate::security::fields::CALL_RECORD_KEY;
use crate::security::{mask_phone, normalize_phone, Cipher};

/// One call as a platform reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallRecord {
    pub platform: Platform,
    /// Stable identity of the record on its platform; stored as a keyed hash only.
    pub record_key: String,
    /// The caller's platform user id (WeCom userid).
    pub caller: String,
    /// The external number called, as the platform gives it.
    pub callee_phone: Option<String>,
    pub started_at_ms: i64,
    /// Talk time in seconds.
    pub duration_s: i64,
    pub call_type: Option<String>,
}

#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct StoreOutcome {
    pub inserted: usize,
    pub duplicates: usize,
    /// Inserted, but the number matched no contact (or the caller no user).
    pub unmatched: usize,
}

/// The contact (and its customer) holding this number, under any known key.
async fn contact_for(
    tx: &mut Tx,
    org_id: &str,
    hashes: &[String],
) -> Result<Option<(String, String)>> {
    for h in hashes {
        let row = sqlx::query(
            "SELECT p.contact_id, c.customer_id FROM contact_phones p JOIN contacts c ON c.id = p.contact_id \
             WHERE p.org_id = $1 AND p.phone_hash = $2 ORDER BY p.id LIMIT 1",
        )
        .bind(org_id)
        .bind(h)
        .fetch_optional(&mut **tx)
        .await?;
        if let Some(r) = row {
            return Ok(Some((r.get("contact_id"), r.get("customer_id"))));
        }
    }
    Ok(None)
}

/// Stores the records not seen before, in one transaction, and in it: re-checks the
/// claimed calls each new record may back, and flags numbers that keep failing.
pub async fn store(
    db: &Db,
    cipher: &Cipher,
    rules: &RuleSet,
    now_ms: i64,
    org_id: &str,
    records: &[CallRecord],
) -> Result<StoreOutcome> {
    let mut out = StoreOutcome::default();
    let mut tx = db.begin().await?;
    for r in records {
        let caller_user =
            crate::directory::sync::user_of(&mut tx, org_id, r.platform, &r.caller).await?;
        let phone = r
            .callee_phone
            .as_deref()
            .and_then(|p| normalize_phone(p, DEFAULT_REGION).ok());
        let (contact, customer) = match &phone {
            Some(p) => contact_for(&mut tx, org_id, &cipher.lookup_hashes(PHONE_CONTEXT, p))
                .await?
                .map_or((None, None), |(c, k)| (Some(c), Some(k))),
            None => (None, None),
        };
        // The key is hashed under every known data key: a record stored before a key
        // rotation, hashed under the old key, is still a duplicate.
        let keys = cipher.lookup_hashes(CALL_RECORD_KEY, &r.record_key);
        let marks: Vec<String> = (0..keys.len()).map(|i| format!("${}", 16 + i)).collect();
        let sql = format!(
            "INSERT INTO call_records (id, org_id, platform, record_key, caller_platform_id, caller_user_id, \
             callee_phone_enc, callee_phone_hash, callee_phone_masked, callee_contact_id, customer_id, started_at, \
             duration_s, call_type, fetched_at) SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15 \
             WHERE NOT EXISTS (SELECT 1 FROM call_records WHERE org_id = $2 AND platform = $3 AND record_key IN ({})) \
             ON CONFLICT (org_id, platform, record_key) DO NOTHING",
            marks.join(", ")
        );
        let mut insert = sqlx::query(&sql)
            .bind(new_id())
            .bind(org_id)
            .bind(r.platform.as_str())
            .bind(&keys[0])
            .bind(&r.caller)
            .bind(&caller_user)
            .bind(phone.as_ref().map(|p| cipher.encrypt(PHONE_CONTEXT, p)))
            .bind(phone.as_ref().map(|p| cipher.lookup_hash(PHONE_CONTEXT, p)))
            .bind(phone.as_deref().map(mask_phone))
            .bind(&contact)
            .bind(&customer)
            .bind(r.started_at_ms)
            .bind(r.duration_s.max(0))
            .bind(&r.call_type)
            .bind(now_ms);
        for k in &keys {
            insert = insert.bind(k);
        }
        let inserted = insert.execute(&mut *tx).await?.rows_affected();
        if inserted == 1 {
            out.inserted += 1;
            if let Some(user) = &caller_user {
                super::claims::recheck_around(
                    &mut tx,
                    rules,
                    org_id,
                    user,
                    r.started_at_ms,
                    now_ms,
                )
                .await?;
            }
            if let Some(p) = &phone {
                let hash = cipher.lookup_hash(PHONE_CONTEXT, p);
                flag_if_failing(&mut tx, rules, org_id, &hash, now_ms).await?;
            }
            if contact.is_none() || caller_user.is_none() {
                out.unmatched += 1;
            }
        } else {
            out.duplicates += 1;
        }
    }
    tx.commit().await?;
    metrics::counter!("closeloop_call_records_stored_total").increment(out.inserted as u64);
    Ok(out)
}

/// A number whose last `failed_calls_to_invalidate` calls all had no talk time is flagged
/// invalid (the seed's 停机 case); a later answered call does not clear a flag by itself —
/// a person confirms the number again.
async fn flag_if_failing(
    tx: &mut Tx,
    rules: &RuleSet,
    org_id: &str,
    phone_hash: &str,
    now_ms: i64,
) -> Result<()> {
    let n = i64::from(rules.contacts.failed_calls_to_invalidate);
    if n == 0 {
        return Ok(());
    }
    let rows = sqlx::query(
        "SELECT duration_s FROM call_records WHERE org_id = $1 AND callee_phone_hash = $2 \
         ORDER BY started_at DESC LIMIT $3",
    )
    .bind(org_id)
    .bind(phone_hash)
    .bind(n)
    .fetch_all(&mut **tx)
    .await?;
    let failing = rows.len() as i64 == n && rows.iter().all(|r| r.get::<i64, _>("duration_s") == 0);
    if failing {
        sqlx::query(
            "UPDATE contact_phones SET valid = 0, invalid_reason = 'failed_calls', invalid_at = $1, invalid_by = NULL \
             WHERE org_id = $2 AND phone_hash = $3 AND valid = 1",
        )
        .bind(now_ms)
        .bind(org_id)
        .bind(phone_hash)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}
