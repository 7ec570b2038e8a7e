//! The audit log: who did what to which object. Written in the same transaction as the
//! change it describes, so an audited change cannot exist without its entry.

use serde_json::Value;

use crate::db::{new_id, Tx};

pub struct AuditEntry<'a> {
    pub org_id: Option<&'a str>,
    pub actor_kind: &'a str,
    pub actor_id: Option<&'a str>,
    pub action: &'a str,
    pub target_kind: Option<&'a str>,
    pub target_id: Option<&'a str>,
    pub detail: Value,
}

pub async fn record(tx: &mut Tx, at_ms: i64, e: AuditEntry<'_>) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO audit_log (id, org_id, at, actor_kind, actor_id, action, target_kind, target_id, detail) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(new_id())
    .bind(e.org_id)
    .bind(at_ms)
    .bind(e.actor_kind)
    .bind(e.actor_id)
    .bind(e.action)
    .bind(e.target_kind)
    .bind(e.target_id)
    .bind(e.detail.to_string())
    .execute(&mut **tx)
    .await?;
    Ok(())
}
