//! Meeting records, platform-neutral (DingTalk conferences, Feishu VC meetings and
//! one-to-one calls): stored once per (meeting, member), linked to the rep by platform
//! identity and to the customer through an external participant the platform knows
//! (`customer_external_ids`). New records re-check the claims made around them.

use sqlx::Row;

use crate::chat::event::Platform;
use crate::db::{new_id, Db};
use crate::error::Result;
use crate::rules::RuleSet;

/// One member's part in one meeting, as a platform reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeetingRecord {
    pub platform: Platform,
    pub meeting_id: String,
    /// The member's platform user id.
    pub member: String,
    /// External participants' platform ids (customers' contacts).
    pub external_participants: Vec<String>,
    /// `meeting` or `call` (a one-to-one call).
    pub kind: String,
    /// Free text that often names the customer's people; read for logs, never stored
    /// (docs/personal-data.md).
    pub topic: Option<String>,
    pub started_at_ms: i64,
    /// The member's time in the meeting, in seconds.
    pub duration_s: i64,
}

#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct StoreOutcome {
    pub inserted: usize,
    pub duplicates: usize,
    /// Inserted, but no member or no customer could be linked.
    pub unmatched: usize,
}

/// Stores the records not seen before, in one transaction, re-checking the claims each
/// new linked record may back.
pub async fn store(
    db: &Db,
    rules: &RuleSet,
    now_ms: i64,
    org_id: &str,
    records: &[MeetingRecord],
) -> Result<StoreOutcome> {
    let mut out = StoreOutcome::default();
    let mut tx = db.begin().await?;
    for r in records {
        let user = crate::directory::sync::user_of(&mut tx, org_id, r.platform, &r.member).await?;
        let mut customer: Option<String> = None;
        for ext in &r.external_participants {
            customer = sqlx::query(
                "SELECT customer_id FROM customer_external_ids WHERE org_id = $1 AND platform = $2 AND external_user_id = $3",
            )
            .bind(org_id)
            .bind(r.platform.as_str())
            .bind(ext)
            .fetch_optional(&mut *tx)
            .await?
            .map(|row| row.get("customer_id"));
            if customer.is_some() {
                break;
            }
        }
        let inserted = sqlx::query(
            "INSERT INTO meeting_records (id, org_id, platform, record_key, meeting_id, member_platform_id, user_id, \
             customer_id, kind, started_at, duration_s, fetched_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
             ON CONFLICT (org_id, platform, record_key) DO NOTHING",
        )
        .bind(new_id())
        .bind(org_id)
        .bind(r.platform.as_str())
        .bind(format!("{}:{}", r.meeting_id, r.member))
        .bind(&r.meeting_id)
        .bind(&r.member)
        .bind(&user)
        .bind(&customer)
        .bind(&r.kind)
        .bind(r.started_at_ms)
        .bind(r.duration_s.max(0))
        .bind(now_ms)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if inserted == 0 {
            out.duplicates += 1;
            continue;
        }
        out.inserted += 1;
        match (&user, &customer) {
            (Some(u), Some(_)) => {
                super::claims::recheck_around(&mut tx, rules, org_id, u, r.started_at_ms, now_ms)
                    .await?;
            }
            _ => out.unmatched += 1,
        }
    }
    tx.commit().await?;
    metrics::counter!("closeloop_meeting_records_stored_total").increment(out.inserted as u64);
    Ok(out)
}
