//! The audit chain's scheduled work: sealing every minute, and the daily anchor that takes
//! the chain head out of the database (a card to the security officers, an audit entry,
//! and — with `[audit] anchor_webhook` — a signed POST, delivered as a durable job).

use serde_json::{json, Value};

use crate::access::audit::{self, AuditEntry};
use crate::cards;
use crate::clock::SharedClock;
use crate::db::Tx;
use crate::directory::users::active_with_role;
use crate::jobs::{self, BoxFuture, ClaimedJob, Handler, JobError, NewJob, TxJob};

/// Seals the organisation's new audit entries.
pub const SEAL_KIND: &str = "audit.seal";
/// How often the sealer runs.
pub const SEAL_EVERY: std::time::Duration = std::time::Duration::from_secs(60);
/// Seals, then records and sends the chain head.
pub const ANCHOR_KIND: &str = "audit.anchor";
/// Every day at 08:00 in the organisation's zone.
pub const ANCHOR_CRON: &str = "0 8 * * *";
/// The anchor card's purpose and template.
pub const CARD: &str = "audit.anchor";
/// POSTs one anchor to `[audit] anchor_webhook`.
pub const DELIVER_KIND: &str = "audit.anchor_deliver";

pub struct Seal {
    pub clock: SharedClock,
    pub org_id: String,
}

impl TxJob for Seal {
    fn run<'a>(
        &'a self,
        tx: &'a mut Tx,
        _job: &'a ClaimedJob,
    ) -> BoxFuture<'a, Result<(), JobError>> {
        Box::pin(async move {
            let s = audit::seal_in(tx, &self.org_id, self.clock.now_ms()).await?;
            if !s.backdated.is_empty() {
                tracing::warn!(
                    entries = s.backdated.len(),
                    first = %s.backdated[0],
                    "audit entries recorded before sealed ones were left unsealed: run `closeloop audit verify`"
                );
            }
            Ok(())
        })
    }
}

pub struct Anchor {
    pub clock: SharedClock,
    pub cipher: crate::security::Cipher,
    pub org_id: String,
    pub tz: chrono_tz::Tz,
    /// Whether `[audit] anchor_webhook` is set: each anchor is then also POSTed.
    pub webhook: bool,
}

impl TxJob for Anchor {
    fn run<'a>(
        &'a self,
        tx: &'a mut Tx,
        _job: &'a ClaimedJob,
    ) -> BoxFuture<'a, Result<(), JobError>> {
        Box::pin(async move {
            let now = self.clock.now_ms();
            let sent = anchor(tx, &self.cipher, now, &self.org_id, self.tz, self.webhook).await?;
            tracing::info!(cards = sent, "audit chain head anchored");
            Ok(())
        })
    }
}

/// Seals, records the head as an `audit.anchor` entry and sends it as a card to every
/// active member holding the role `security`, or `admin` when no one holds it; with
/// `webhook`, also queues its POST ([`DELIVER_KIND`]). Returns the number of cards.
pub async fn anchor(
    tx: &mut Tx,
    cipher: &crate::security::Cipher,
    now_ms: i64,
    org_id: &str,
    tz: chrono_tz::Tz,
    webhook: bool,
) -> crate::error::Result<usize> {
    let head = audit::seal_in(tx, org_id, now_ms).await?.head;
    audit::record(
        tx,
        now_ms,
        AuditEntry {
            org_id: Some(org_id),
            actor_kind: "system",
            actor_id: None,
            action: "audit.anchor",
            target_kind: None,
            target_id: None,
            detail: json!({"seq": head.seq, "hash": head.hash}),
        },
    )
    .await?;
    let mut recipients = active_with_role(tx, org_id, "security").await?;
    if recipients.is_empty() {
        recipients = active_with_role(tx, org_id, "admin").await?;
    }
    let card = cards::templates::compose(
        CARD,
        &[
            ("seq", head.seq.to_string()),
            ("hash", head.hash.clone()),
            ("time", crate::text::time(now_ms, tz)),
        ],
    );
    let object = format!("{}:{}", head.seq, head.hash);
    for m in &recipients {
        cards::send(tx, cipher, now_ms, org_id, m, CARD, Some(&object), &card).await?;
    }
    if webhook {
        let body = json!({
            "org": org_id,
            "head_hash": head.hash,
            "sealed_through": head.seq,
            "at": crate::clock::rfc3339(now_ms),
        });
        jobs::enqueue(
            tx,
            now_ms,
            NewJob::new(DELIVER_KIND, json!({"anchor": body}))
                .org(org_id)
                .dedupe(format!("audit-anchor:{org_id}:{}:{now_ms}", head.seq))
                .max_attempts(12),
        )
        .await?;
    }
    Ok(recipients.len())
}

/// Sends one anchor to `[audit] anchor_webhook`, signed like the webhooks' deliveries
/// (`X-Closeloop-Event: audit.anchor`).
pub struct DeliverAnchor {
    pub clock: SharedClock,
    pub url: reqwest::Url,
    pub secret: String,
    pub destinations: crate::webhooks::destination::Destinations,
}

impl Handler for DeliverAnchor {
    fn perform<'a>(&'a self, job: &'a ClaimedJob) -> BoxFuture<'a, Result<Value, JobError>> {
        Box::pin(async move {
            let timestamp = (self.clock.now_ms() / 1000).to_string();
            crate::webhooks::post_signed(
                &self.destinations,
                self.url.clone(),
                crate::webhooks::Signed {
                    secret: &self.secret,
                    timestamp: &timestamp,
                    event: CARD,
                    delivery: &job.id,
                    payload_version: None,
                },
                job.payload["anchor"].to_string(),
            )
            .await
        })
    }
}
