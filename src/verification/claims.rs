//! Claims checked against evidence. A tap that claims a call (「已电话沟通」) opens a
//! verification: pending until a matching official record is found — caller = the rep,
//! callee = one of the customer's numbers, started within the window around the tap — or
//! until the window has closed and settled, when it becomes `too_short` (only shorter
//! calls) or `unverified` (none). A record that arrives later still upgrades it. Each
//! record backs one claim only.
//!
//! Evidence sources sit behind [`EvidenceSource`]; the platform's evidence policy (in the
//! rule set) says which of them count. Attested evidence is set by a superior's
//! confirmation (see `attest`), not found by search.

use serde::Serialize;
use serde_json::json;
use sqlx::Row;

use crate::clock::SharedClock;
use crate::db::{Db, Tx};
use crate::error::Result;
use crate::jobs::{self, BoxFuture, ClaimedJob, JobError, NewJob, TxJob};
use crate::rules::{Claim, EvidenceKind, RuleSet, Rules};
use crate::tracking::TrackingPoint;

/// The job that settles a claim once its window has closed.
pub const SETTLE: &str = "verification.settle";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Pending,
    Verified,
    TooShort,
    Unverified,
    Attested,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Verified => "verified",
            Status::TooShort => "too_short",
            Status::Unverified => "unverified",
            Status::Attested => "attested",
        }
    }
}

/// What a source is asked about.
#[derive(Debug, Clone)]
pub struct ClaimCtx {
    pub point_id: String,
    pub org_id: String,
    pub actor: String,
    pub customer: String,
    pub occurred_at: i64,
    pub window_ms: i64,
}

/// A record that may back a claim.
#[derive(Debug, Clone)]
pub struct Found {
    /// `call_record`, `meeting`, ...
    pub source: &'static str,
    pub reference: String,
    pub duration_s: i64,
}

/// One kind of evidence (official call records, meeting records, ...).
pub trait EvidenceSource: Send + Sync {
    fn kind(&self) -> EvidenceKind;

    /// Candidate records for the claim not already backing another claim.
    fn find<'a>(&'a self, tx: &'a mut Tx, c: &'a ClaimCtx) -> BoxFuture<'a, Result<Vec<Found>>>;
}

/// Official call records (WeCom 公费电话 and any platform that stores `call_records`).
pub struct CallRecords;

impl EvidenceSource for CallRecords {
    fn kind(&self) -> EvidenceKind {
        EvidenceKind::Call
    }

    fn find<'a>(&'a self, tx: &'a mut Tx, c: &'a ClaimCtx) -> BoxFuture<'a, Result<Vec<Found>>> {
        Box::pin(async move {
            // The callee is one of the customer's numbers: linked when the record was
            // stored, or matching by hash a number added since.
            let rows = sqlx::query(
                "SELECT r.id, r.duration_s FROM call_records r \
                 WHERE r.org_id = $1 AND r.caller_user_id = $2 AND r.started_at >= $3 AND r.started_at <= $4 \
                 AND (r.customer_id = $5 OR r.callee_phone_hash IN \
                      (SELECT p.phone_hash FROM contact_phones p JOIN contacts k ON k.id = p.contact_id WHERE k.customer_id = $5)) \
                 AND NOT EXISTS (SELECT 1 FROM point_verifications v WHERE v.evidence_source = 'call_record' \
                                 AND v.evidence_ref = r.id AND v.point_id <> $6) \
                 ORDER BY r.duration_s DESC, r.id",
            )
            .bind(&c.org_id)
            .bind(&c.actor)
            .bind(c.occurred_at - c.window_ms)
            .bind(c.occurred_at + c.window_ms)
            .bind(&c.customer)
            .bind(&c.point_id)
            .fetch_all(&mut **tx)
            .await?;
            Ok(rows
                .iter()
                .map(|r| Found {
                    source: "call_record",
                    reference: r.get("id"),
                    duration_s: r.get("duration_s"),
                })
                .collect())
        })
    }
}

/// Meeting records (DingTalk conferences, Feishu VC meetings and one-to-one calls): the
/// rep took part, the customer's side was linked, within the window.
pub struct MeetingRecords;

impl EvidenceSource for MeetingRecords {
    fn kind(&self) -> EvidenceKind {
        EvidenceKind::Meeting
    }

    fn find<'a>(&'a self, tx: &'a mut Tx, c: &'a ClaimCtx) -> BoxFuture<'a, Result<Vec<Found>>> {
        Box::pin(async move {
            let rows = sqlx::query(
                "SELECT m.id, m.duration_s FROM meeting_records m \
                 WHERE m.org_id = $1 AND m.user_id = $2 AND m.customer_id = $3 \
                 AND m.started_at >= $4 AND m.started_at <= $5 \
                 AND NOT EXISTS (SELECT 1 FROM point_verifications v WHERE v.evidence_source = 'meeting' \
                                 AND v.evidence_ref = m.id AND v.point_id <> $6) \
                 ORDER BY m.duration_s DESC, m.id",
            )
            .bind(&c.org_id)
            .bind(&c.actor)
            .bind(&c.customer)
            .bind(c.occurred_at - c.window_ms)
            .bind(c.occurred_at + c.window_ms)
            .bind(&c.point_id)
            .fetch_all(&mut **tx)
            .await?;
            Ok(rows
                .iter()
                .map(|r| Found {
                    source: "meeting",
                    reference: r.get("id"),
                    duration_s: r.get("duration_s"),
                })
                .collect())
        })
    }
}

/// Every evidence source closeloop knows, searched in this order.
pub fn sources() -> Vec<Box<dyn EvidenceSource>> {
    vec![Box::new(CallRecords), Box::new(MeetingRecords)]
}

/// Which evidence kind a stored `evidence_source` is.
pub fn kind_of(source: &str) -> Option<EvidenceKind> {
    match source {
        "call_record" => Some(EvidenceKind::Call),
        "meeting" => Some(EvidenceKind::Meeting),
        "chat" => Some(EvidenceKind::Chat),
        "attestation" => Some(EvidenceKind::Attested),
        _ => None,
    }
}

/// Opens the verification of a freshly written point, in its transaction: pending, an
/// immediate look for evidence already stored, and the settling job at window close.
/// Returns the status the point starts with.
pub async fn open(
    tx: &mut Tx,
    rules: &RuleSet,
    point: &TrackingPoint,
    claim: Claim,
    at: i64,
) -> Result<Status> {
    let v = &rules.verification;
    let closes = at + v.call_window.as_millis() as i64;
    sqlx::query(
        "INSERT INTO point_verifications (point_id, org_id, customer_id, actor_user_id, claim, platform, status, \
         occurred_at, window_closes_at, updated_at) \
         SELECT id, org_id, customer_id, actor_user_id, $2, platform, 'pending', occurred_at, $3, $4 \
         FROM tracking_points WHERE id = $1",
    )
    .bind(&point.id)
    .bind(claim.as_str())
    .bind(closes)
    .bind(at)
    .execute(&mut **tx)
    .await?;
    set_point_status(tx, &point.id, Status::Pending).await?;
    let status = evaluate(tx, rules, &point.id, at, false)
        .await?
        .unwrap_or(Status::Pending);
    let org = org_of(tx, &point.id).await?;
    jobs::enqueue(
        tx,
        at,
        NewJob::new(SETTLE, json!({"point_id": point.id}))
            .org(org)
            .at(closes + v.settle.as_millis() as i64)
            .dedupe(format!("{SETTLE}:{}", point.id)),
    )
    .await?;
    Ok(status)
}

async fn org_of(tx: &mut Tx, point_id: &str) -> Result<String> {
    Ok(
        sqlx::query("SELECT org_id FROM point_verifications WHERE point_id = $1")
            .bind(point_id)
            .fetch_one(&mut **tx)
            .await?
            .get("org_id"),
    )
}

async fn set_point_status(tx: &mut Tx, point_id: &str, s: Status) -> Result<()> {
    sqlx::query("UPDATE tracking_points SET verification = $1 WHERE id = $2")
        .bind(s.as_str())
        .bind(point_id)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Looks for evidence for one claim and records the outcome. `settle`: the window has
/// closed, so no evidence means `unverified` (and only short calls `too_short`).
/// Returns the new status when it changed.
pub async fn evaluate(
    tx: &mut Tx,
    rules: &RuleSet,
    point_id: &str,
    now: i64,
    settle: bool,
) -> Result<Option<Status>> {
    let Some(row) = sqlx::query(
        "SELECT org_id, customer_id, actor_user_id, platform, status, occurred_at, window_closes_at \
         FROM point_verifications WHERE point_id = $1",
    )
    .bind(point_id)
    .fetch_optional(&mut **tx)
    .await?
    else {
        return Ok(None);
    };
    let current: String = row.get("status");
    if current == "verified" || current == "attested" {
        return Ok(None);
    }
    let occurred_at: i64 = row.get("occurred_at");
    let ctx = ClaimCtx {
        point_id: point_id.to_string(),
        org_id: row.get("org_id"),
        actor: row.get("actor_user_id"),
        customer: row.get("customer_id"),
        occurred_at,
        window_ms: row.get::<i64, _>("window_closes_at") - occurred_at,
    };
    let platform: Option<String> = row.get("platform");
    let policy = rules.policy(platform.as_deref());
    let mut best: Option<Found> = None;
    for source in sources() {
        if !policy.contains(&source.kind()) {
            continue;
        }
        for f in source.find(tx, &ctx).await? {
            if best.as_ref().is_none_or(|b| f.duration_s > b.duration_s) {
                best = Some(f);
            }
        }
    }
    let min = rules.verification.min_call_seconds as i64;
    let (status, evidence) = match best {
        Some(f) if f.duration_s >= min => (Status::Verified, Some(f)),
        Some(f) if settle || current == "too_short" || current == "unverified" => {
            (Status::TooShort, Some(f))
        }
        None if settle => (Status::Unverified, None),
        _ => return Ok(None),
    };
    if status.as_str() == current && evidence.is_none() {
        return Ok(None);
    }
    sqlx::query(
        "UPDATE point_verifications SET status = $1, evidence_source = $2, evidence_ref = $3, duration_s = $4, \
         decided_at = $5, updated_at = $5 WHERE point_id = $6",
    )
    .bind(status.as_str())
    .bind(evidence.as_ref().map(|f| f.source))
    .bind(evidence.as_ref().map(|f| f.reference.clone()))
    .bind(evidence.as_ref().map(|f| f.duration_s))
    .bind(now)
    .bind(point_id)
    .execute(&mut **tx)
    .await?;
    set_point_status(tx, point_id, status).await?;
    Ok((status.as_str() != current).then_some(status))
}

/// A new call record by `user` starting at `started_at` may back claims made around it.
pub async fn recheck_around(
    tx: &mut Tx,
    rules: &RuleSet,
    org_id: &str,
    user: &str,
    started_at: i64,
    now: i64,
) -> Result<()> {
    let window = rules.verification.call_window.as_millis() as i64;
    let rows = sqlx::query(
        "SELECT point_id, window_closes_at FROM point_verifications WHERE org_id = $1 AND actor_user_id = $2 \
         AND occurred_at >= $3 AND occurred_at <= $4 AND status IN ('pending', 'too_short', 'unverified') \
         ORDER BY occurred_at",
    )
    .bind(org_id)
    .bind(user)
    .bind(started_at - window)
    .bind(started_at + window)
    .fetch_all(&mut **tx)
    .await?;
    for r in rows {
        let id: String = r.get("point_id");
        let closed = r.get::<i64, _>("window_closes_at") <= now;
        evaluate(tx, rules, &id, now, closed).await?;
    }
    Ok(())
}

/// One claim's verification as the API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Verification {
    pub point: String,
    pub claim: String,
    pub status: String,
    pub window_closes_at: String,
    pub evidence_source: Option<String>,
    pub evidence_ref: Option<String>,
    pub duration_s: Option<i64>,
    pub decided_at: Option<String>,
}

pub async fn get(db: &Db, org_id: &str, point_id: &str) -> Result<Option<Verification>> {
    let row = sqlx::query(
        "SELECT point_id, claim, status, window_closes_at, evidence_source, evidence_ref, duration_s, decided_at \
         FROM point_verifications WHERE point_id = $1 AND org_id = $2",
    )
    .bind(point_id)
    .bind(org_id)
    .fetch_optional(&db.pool)
    .await?;
    Ok(row.map(|r| Verification {
        point: r.get("point_id"),
        claim: r.get("claim"),
        status: r.get("status"),
        window_closes_at: crate::clock::rfc3339(r.get("window_closes_at")),
        evidence_source: r.get("evidence_source"),
        evidence_ref: r.get("evidence_ref"),
        duration_s: r.get("duration_s"),
        decided_at: r
            .get::<Option<i64>, _>("decided_at")
            .map(crate::clock::rfc3339),
    }))
}

/// Settles a claim when its window has closed (and the poll's lag has passed).
pub struct Settle {
    pub rules: Rules,
    pub clock: SharedClock,
}

impl TxJob for Settle {
    fn run<'a>(
        &'a self,
        tx: &'a mut Tx,
        job: &'a ClaimedJob,
    ) -> BoxFuture<'a, Result<(), JobError>> {
        Box::pin(async move {
            let point = job.payload["point_id"]
                .as_str()
                .ok_or_else(|| JobError::GiveUp("payload without point_id".into()))?;
            let org = job.org_id.as_deref().unwrap_or_default();
            let rules = self
                .rules
                .current(org)
                .await
                .map_err(|e| JobError::Retry(e.to_string()))?;
            evaluate(tx, &rules, point, self.clock.now_ms(), true)
                .await
                .map_err(|e| JobError::Retry(e.to_string()))?;
            Ok(())
        })
    }
}
