//! The audit chain's scheduled work: sealing every minute, and the daily anchor that takes
//! the chain head out of the database (a card to the security officers, an audit entry).

use serde_json::json;

use crate::access::audit::{self, AuditEntry};
use crate::cards;
use crate::clock::SharedClock;
use crate::db::Tx;
use crate::directory::users::active_with_role;
use crate::jobs::{BoxFuture, ClaimedJob, JobError, TxJob};

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
}

impl TxJob for Anchor {
    fn run<'a>(
        &'a self,
        tx: &'a mut Tx,
        _job: &'a ClaimedJob,
    ) -> BoxFuture<'a, Result<(), JobError>> {
        Box::pin(async move {
            let now = self.clock.now_ms();
            let sent = anchor(tx, &self.cipher, now, &self.org_id, self.tz).await?;
            tracing::info!(cards = sent, "audit chain head anchored");
            Ok(())
        })
    }
}

/// Seals, records the head as an `audit.anchor` entry and sends it as a card to every
/// active member holding the role `security`, or `admin` when no one holds it. Returns the
/// number of cards.
pub async fn anchor(
    tx: &mut Tx,
    cipher: &crate::security::Cipher,
    now_ms: i64,
    org_id: &str,
    tz: chrono_tz::Tz,
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
    Ok(recipients.len())
}
