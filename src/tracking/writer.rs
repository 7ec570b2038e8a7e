//! Group commit for the ledger. Callers queue a point and wait; one task takes whatever is
//! queued (up to `MAX_BATCH`), writes it in one transaction and answers each caller only
//! after the commit is durable. Under load one fsync covers hundreds of points; with a
//! single caller the latency is one plain commit.

use sha2::{Digest, Sha256};
use sqlx::Row;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use std::sync::Arc;

use super::hooks::{self, Deliveries, LedgerHooks, Refusal, IP_BURST};
use super::{check, from_row, point_fields, ActorKind, NewPoint, Recorded, Source, TrackingPoint};
use crate::access::{audit, Actor};
use crate::clock::SharedClock;
use crate::db::{new_id, Db, Tx};
use crate::error::{Error, Result};
use crate::rules::{RuleSet, Rules};
use crate::security::Cipher;

const MAX_BATCH: usize = 512;
const QUEUE: usize = 8192;

struct Job {
    point: NewPoint,
    tz: chrono_tz::Tz,
    /// The rules in force when the request came in (None for system points).
    rules: Option<Arc<RuleSet>>,
    reply: oneshot::Sender<Result<Recorded>>,
}

/// Handle to the ledger writer; cheap to clone. The writer stops once every handle is
/// dropped and the queue is drained, so nothing queued is lost on shutdown.
#[derive(Clone)]
pub struct Ledger {
    queue: mpsc::Sender<Job>,
    db: Db,
    rules: Rules,
}

impl Ledger {
    /// `cipher` seals the alert cards an IP burst sends; points themselves are never
    /// encrypted (their payloads hold ids only). `hooks` are the rules and subscribers
    /// the writer calls around each point (built at start-up).
    pub fn start(
        db: Db,
        clock: SharedClock,
        rules: Rules,
        cipher: Cipher,
        hooks: Arc<dyn LedgerHooks>,
    ) -> (Ledger, JoinHandle<()>) {
        let (queue, rx) = mpsc::channel(QUEUE);
        let writer = Writer {
            db: db.clone(),
            clock,
            cipher,
            hooks,
        };
        let task = tokio::spawn(run(writer, rx));
        (Ledger { queue, db, rules }, task)
    }

    /// Validates, checks references, queues, and waits for the durable commit.
    pub async fn record(&self, point: NewPoint, tz: chrono_tz::Tz) -> Result<Recorded> {
        check(&point)?;
        let rules_version = check_references(&self.db, &point).await?;
        let rules = match point.source {
            Source::System => None,
            _ => Some(
                self.rules
                    .at_version(&point.org_id, rules_version)
                    .await?
                    .rules,
            ),
        };
        // An upload action's point is written with its document (documents::upload).
        if let Some(def) = rules
            .as_ref()
            .and_then(|r| r.action(&point.action))
            .filter(|d| d.kind == crate::rules::ActionKind::Upload && point.after.is_none())
        {
            return Err(Error::invalid(format!(
                "`{}` uploads a document: use POST /api/v1/customers/{{id}}/documents?kind={}",
                def.name,
                def.document.as_deref().unwrap_or_default()
            )));
        }
        if point.source != Source::System && point.action.starts_with("rule.") {
            return Err(Error::invalid("rule hits are written by closeloop only"));
        }
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Job {
                point,
                tz,
                rules,
                reply,
            })
            .await
            .map_err(|_| Error::Unavailable("the ledger is shutting down".into()))?;
        answer
            .await
            .map_err(|_| Error::Internal(anyhow::anyhow!("ledger writer stopped")))?
    }
}

/// One round trip tells whether actor, customer and deal exist in the caller's org, and
/// which version of the org's rule set is in force (returned).
async fn check_references(db: &Db, p: &NewPoint) -> Result<i64> {
    let row = sqlx::query(
        "SELECT (SELECT status FROM users WHERE id = $1 AND org_id = $4) AS actor, \
                (SELECT id FROM customers WHERE id = $2 AND org_id = $4) AS customer, \
                (SELECT customer_id FROM deals WHERE id = $3 AND org_id = $4) AS deal_customer, \
                (SELECT CAST(COALESCE(MAX(version), 0) AS BIGINT) FROM rule_sets WHERE org_id = $4) AS rules_version",
    )
    .bind(p.actor_id())
    .bind(p.customer_id())
    .bind(p.deal.as_deref().unwrap_or(""))
    .bind(&p.org_id)
    .fetch_one(&db.pool)
    .await?;
    if let Some(actor) = &p.actor {
        if row.get::<Option<String>, _>("actor").is_none() {
            return Err(Error::UnknownReference(format!(
                "actor `{actor}` does not exist"
            )));
        }
    }
    if let Some(customer) = &p.customer {
        if row.get::<Option<String>, _>("customer").is_none() {
            return Err(Error::UnknownReference(format!(
                "customer `{customer}` does not exist"
            )));
        }
    }
    if let Some(d) = &p.deal {
        match row.get::<Option<String>, _>("deal_customer") {
            None => {
                return Err(Error::UnknownReference(format!(
                    "deal `{d}` does not exist"
                )))
            }
            Some(c) if Some(&c) != p.customer.as_ref() => {
                return Err(Error::invalid(format!(
                    "deal `{d}` belongs to another customer"
                )))
            }
            Some(_) => {}
        }
    }
    Ok(row.get::<Option<i64>, _>("rules_version").unwrap_or(0))
}

/// What a retry must match to count as the same request.
fn request_hash(p: &NewPoint) -> String {
    let canonical = serde_json::json!([p.actor, p.customer, p.deal, p.action, p.payload]);
    hex::encode(Sha256::digest(canonical.to_string().as_bytes()))
}

/// What the writer task holds.
struct Writer {
    db: Db,
    clock: SharedClock,
    cipher: Cipher,
    hooks: Arc<dyn LedgerHooks>,
}

async fn run(w: Writer, mut rx: mpsc::Receiver<Job>) {
    let mut batch: Vec<Job> = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.recv().await {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        write_batch(&w, &mut batch).await;
    }
}

async fn write_batch(w: &Writer, batch: &mut Vec<Job>) {
    let size = batch.len();
    match write_all(w, batch).await {
        Ok(results) => {
            metrics::counter!("closeloop_ledger_writes_total").increment(size as u64);
            metrics::histogram!("closeloop_ledger_batch_size").record(size as f64);
            for (job, result) in batch.drain(..).zip(results) {
                let _ = job.reply.send(result);
            }
        }
        Err(e) => {
            // One bad point must not fail its neighbours: retry each alone.
            tracing::warn!(error = %e, size, "ledger batch failed; writing points one by one");
            for job in batch.drain(..) {
                let one = std::slice::from_ref(&job);
                let result = match write_all(w, one).await {
                    Ok(mut r) => r.pop().unwrap_or_else(|| {
                        Err(Error::Internal(anyhow::anyhow!("empty ledger result")))
                    }),
                    Err(e) => Err(e),
                };
                if result.is_ok() {
                    metrics::counter!("closeloop_ledger_writes_total").increment(1);
                }
                let _ = job.reply.send(result);
            }
        }
    }
}

/// Writes every job in one transaction. Per-job refusals (an idempotency key reused
/// with a different request) are results; database failures abort the whole batch.
async fn write_all(w: &Writer, jobs: &[Job]) -> Result<Vec<Result<Recorded>>> {
    let mut tx = w.db.begin().await?;
    let mut results = Vec::with_capacity(jobs.len());
    let mut deliveries = w.hooks.deliveries();
    for job in jobs {
        results.push(write_one(w, &mut tx, deliveries.as_mut(), job).await?);
    }
    tx.commit().await?;
    Ok(results)
}

async fn write_one(
    w: &Writer,
    tx: &mut Tx,
    deliveries: &mut dyn Deliveries,
    job: &Job,
) -> Result<Result<Recorded>> {
    let p = &job.point;
    let hash = p.idempotency_key.as_ref().map(|_| request_hash(p));
    // A retry is answered from the first result, before any rule counts it again.
    if let Some(key) = &p.idempotency_key {
        if let Some(earlier) = replay(tx, &p.org_id, key, hash.as_deref(), job.tz).await? {
            return Ok(earlier);
        }
    }
    let at = w.clock.now_ms();
    let def = job.rules.as_ref().and_then(|r| r.action(&p.action));
    let screen = match (&job.rules, def) {
        (Some(rules), Some(d)) if d.guarded => w.hooks.screen(tx, rules, p, at).await?,
        _ => hooks::Screen::default(),
    };
    let mut written = Vec::with_capacity(2);
    let result = match &screen.refusal {
        Some(refusal) => {
            // The refused attempt is itself a point: the rule hit (closeloop's, about the
            // rep), with the request's key so that a retry gets the same answer.
            let hit = NewPoint {
                action: refusal.rule.into(),
                payload: refusal.payload(&p.action),
                source: Source::System,
                actor_kind: ActorKind::System,
                after: None,
                ..p.clone()
            };
            let point = insert(tx, &hit, at, hash.as_deref(), job.tz).await?;
            w.hooks.refused(tx, at, p, refusal, &point).await?;
            let err = refusal.error();
            written.push(point);
            Err(err)
        }
        None => {
            let mut point = insert(tx, p, at, hash.as_deref(), job.tz).await?;
            if let (Some(rules), Some(claim)) = (&job.rules, def.and_then(|d| d.claim)) {
                point.verification = w.hooks.claimed(tx, rules, &point, claim, at).await?;
            }
            if let Some(after) = &p.after {
                after.0.apply(tx, &point).await?;
            }
            audit_member_record(tx, at, p, &point).await?;
            written.push(point.clone());
            Ok(Recorded::Created(point))
        }
    };
    if let Some(count) = screen.burst {
        let flag = NewPoint {
            action: IP_BURST.into(),
            payload: serde_json::json!({"attempted": p.action, "records_in_window": count}),
            source: Source::System,
            actor_kind: ActorKind::System,
            idempotency_key: None,
            after: None,
            ..p.clone()
        };
        let point = insert(tx, &flag, at, None, job.tz).await?;
        w.hooks.burst(tx, &w.cipher, at, p, count, &point).await?;
        written.push(point);
    }
    // Deliveries commit with the points: a point is never without its webhooks.
    for point in &written {
        deliveries.enqueue(tx, at, &p.org_id, point).await?;
    }
    Ok(result)
}

/// A member's own record (a tap in the sidebar, an upload, a record through the API on
/// their behalf) is audited as `point.record` on its customer, with the request's client
/// IP, in the point's transaction. closeloop's own points (rule hits, platform events,
/// stage moves written with their audited change) are not.
async fn audit_member_record(
    tx: &mut Tx,
    at: i64,
    p: &NewPoint,
    point: &TrackingPoint,
) -> Result<()> {
    if p.actor_kind != ActorKind::User || p.source == Source::System {
        return Ok(());
    }
    let (Some(actor), Some(customer)) = (&p.actor, &p.customer) else {
        return Ok(());
    };
    let who = Actor::key_or_user(p.api_key_id.as_deref(), actor);
    let mut detail = serde_json::json!({"point": point.id, "user": actor});
    if let Some(deal) = &p.deal {
        detail["deal"] = serde_json::json!(deal);
    }
    audit::CLIENT_IP
        .scope(
            p.client_ip.clone(),
            who.audit(
                tx,
                at,
                &p.org_id,
                "point.record",
                ("customer", customer),
                detail,
            ),
        )
        .await?;
    Ok(())
}

/// Inserts one point at `at`; the unique key makes a concurrent duplicate an error that
/// fails the batch (and the retry alone then finds it as a replay).
async fn insert(
    tx: &mut Tx,
    p: &NewPoint,
    at: i64,
    hash: Option<&str>,
    tz: chrono_tz::Tz,
) -> Result<TrackingPoint> {
    let id = new_id();
    sqlx::query(
        "INSERT INTO tracking_points (id, org_id, actor_user_id, customer_id, deal_id, action, occurred_at, \
         source, platform, client_ip, user_agent, payload, verification, idempotency_key, request_hash, api_key_id, \
         actor_kind, external_id) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, 'not_applicable', $13, $14, $15, $16, $17)",
    )
    .bind(&id)
    .bind(&p.org_id)
    .bind(&p.actor)
    .bind(&p.customer)
    .bind(&p.deal)
    .bind(&p.action)
    .bind(at)
    .bind(p.source.as_str())
    .bind(&p.platform)
    .bind(&p.client_ip)
    .bind(&p.user_agent)
    .bind(p.payload.to_string())
    .bind(&p.idempotency_key)
    .bind(hash)
    .bind(&p.api_key_id)
    .bind(p.actor_kind.as_str())
    .bind(&p.external_id)
    .execute(&mut **tx)
    .await?;
    Ok(TrackingPoint {
        id,
        actor_kind: p.actor_kind.as_str().to_string(),
        actor: p.actor.clone(),
        customer: p.customer.clone(),
        deal: p.deal.clone(),
        action: p.action.clone(),
        occurred_at: crate::clock::rfc3339(at),
        occurred_at_local: crate::clock::in_zone(at, tz),
        source: p.source.as_str().to_string(),
        platform: p.platform.clone(),
        external_id: p.external_id.clone(),
        client_ip: p.client_ip.clone(),
        user_agent: p.user_agent.clone(),
        payload: p.payload.clone(),
        verification: "not_applicable".into(),
    })
}

/// The answer an earlier request with this key got: its point, or its refusal.
async fn replay(
    tx: &mut Tx,
    org_id: &str,
    key: &str,
    hash: Option<&str>,
    tz: chrono_tz::Tz,
) -> Result<Option<Result<Recorded>>> {
    let row = sqlx::query(concat!(
        "SELECT ",
        point_fields!(),
        ", request_hash AS stored_hash FROM tracking_points WHERE org_id = $1 AND idempotency_key = $2"
    ))
    .bind(org_id)
    .bind(key)
    .fetch_optional(&mut **tx)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let stored: Option<String> = row.get("stored_hash");
    if stored.as_deref() != hash {
        return Ok(Some(Err(Error::Conflict(
            "this Idempotency-Key was already used for a different request".into(),
        ))));
    }
    let point = from_row(&row, tz);
    if let Some(refusal) = Refusal::from_hit(&point) {
        return Ok(Some(Err(refusal.error())));
    }
    Ok(Some(Ok(Recorded::Replayed(point))))
}

/// Writes one of closeloop's own points (a document open, a stage move, a rule hit
/// outside the writer, a card click, a platform event) inside the caller's transaction,
/// with its webhook deliveries. No rules apply; the caller has checked what it writes. A
/// point with an external id that is already in the ledger (a platform's retry) is not
/// written again: the earlier one is returned.
pub async fn write_in(
    tx: &mut Tx,
    at: i64,
    p: &NewPoint,
    tz: chrono_tz::Tz,
) -> Result<TrackingPoint> {
    check(p)?;
    if let Some(earlier) = by_external_id(tx, p, tz).await? {
        return Ok(earlier);
    }
    let mut deliveries = hooks::installed()?.deliveries();
    let point = insert(tx, p, at, None, tz).await?;
    deliveries.enqueue(tx, at, &p.org_id, &point).await?;
    Ok(point)
}

/// Writes a point that stands for a running count (a contact's messages on one day): the
/// first write inserts it, later ones with the same external id replace its payload in
/// place (its time stays the first sighting's) and notify subscribers only of the insert.
pub async fn upsert_in(
    tx: &mut Tx,
    at: i64,
    p: &NewPoint,
    tz: chrono_tz::Tz,
) -> Result<TrackingPoint> {
    check(p)?;
    if p.external_id.is_none() {
        return Err(Error::invalid(
            "a point updated in place needs an external id",
        ));
    }
    match by_external_id(tx, p, tz).await? {
        Some(mut earlier) => {
            if earlier.payload != p.payload {
                sqlx::query("UPDATE tracking_points SET payload = $1 WHERE id = $2")
                    .bind(p.payload.to_string())
                    .bind(&earlier.id)
                    .execute(&mut **tx)
                    .await?;
                earlier.payload = p.payload.clone();
            }
            Ok(earlier)
        }
        None => write_in(tx, at, p, tz).await,
    }
}

/// The point already written for `p`'s external id, if any.
async fn by_external_id(
    tx: &mut Tx,
    p: &NewPoint,
    tz: chrono_tz::Tz,
) -> Result<Option<TrackingPoint>> {
    let Some(external) = &p.external_id else {
        return Ok(None);
    };
    let row = sqlx::query(concat!(
        "SELECT ",
        point_fields!(),
        " FROM tracking_points WHERE org_id = $1 AND source = $2 \
          AND COALESCE(platform, '') = $3 AND external_id = $4"
    ))
    .bind(&p.org_id)
    .bind(p.source.as_str())
    .bind(p.platform.as_deref().unwrap_or_default())
    .bind(external)
    .fetch_optional(&mut **tx)
    .await?;
    Ok(row.map(|r| from_row(&r, tz)))
}
