//! Group commit for the ledger. Callers queue a point and wait; one task takes whatever is
//! queued (up to `MAX_BATCH`), writes it in one transaction and answers each caller only
//! after the commit is durable. Under load one fsync covers hundreds of points; with a
//! single caller the latency is one plain commit.

use sha2::{Digest, Sha256};
use sqlx::Row;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::{check, from_row, point_fields, NewPoint, Recorded, TrackingPoint};
use crate::clock::SharedClock;
use crate::db::{new_id, Db, Tx};
use crate::error::{Error, Result};
use crate::webhooks::Subscribers;

const MAX_BATCH: usize = 512;
const QUEUE: usize = 8192;

struct Job {
    point: NewPoint,
    tz: chrono_tz::Tz,
    reply: oneshot::Sender<Result<Recorded>>,
}

/// Handle to the ledger writer; cheap to clone. The writer stops once every handle is
/// dropped and the queue is drained, so nothing queued is lost on shutdown.
#[derive(Clone)]
pub struct Ledger {
    queue: mpsc::Sender<Job>,
    db: Db,
}

impl Ledger {
    pub fn start(db: Db, clock: SharedClock) -> (Ledger, JoinHandle<()>) {
        let (queue, rx) = mpsc::channel(QUEUE);
        let task = tokio::spawn(run(db.clone(), clock, rx));
        (Ledger { queue, db }, task)
    }

    /// Validates, checks references, queues, and waits for the durable commit.
    pub async fn record(&self, point: NewPoint, tz: chrono_tz::Tz) -> Result<Recorded> {
        check(&point)?;
        check_references(&self.db, &point).await?;
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Job { point, tz, reply })
            .await
            .map_err(|_| Error::Unavailable("the ledger is shutting down".into()))?;
        answer
            .await
            .map_err(|_| Error::Internal(anyhow::anyhow!("ledger writer stopped")))?
    }
}

/// One round trip tells whether actor, customer and deal exist in the caller's org.
async fn check_references(db: &Db, p: &NewPoint) -> Result<()> {
    let row = sqlx::query(
        "SELECT (SELECT status FROM users WHERE id = $1 AND org_id = $4) AS actor, \
                (SELECT id FROM customers WHERE id = $2 AND org_id = $4) AS customer, \
                (SELECT customer_id FROM deals WHERE id = $3 AND org_id = $4) AS deal_customer",
    )
    .bind(&p.actor)
    .bind(&p.customer)
    .bind(p.deal.as_deref().unwrap_or(""))
    .bind(&p.org_id)
    .fetch_one(&db.pool)
    .await?;
    if row.get::<Option<String>, _>("actor").is_none() {
        return Err(Error::UnknownReference(format!(
            "actor `{}` does not exist",
            p.actor
        )));
    }
    if row.get::<Option<String>, _>("customer").is_none() {
        return Err(Error::UnknownReference(format!(
            "customer `{}` does not exist",
            p.customer
        )));
    }
    if let Some(d) = &p.deal {
        match row.get::<Option<String>, _>("deal_customer") {
            None => {
                return Err(Error::UnknownReference(format!(
                    "deal `{d}` does not exist"
                )))
            }
            Some(c) if c != p.customer => {
                return Err(Error::invalid(format!(
                    "deal `{d}` belongs to another customer"
                )))
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// What a retry must match to count as the same request.
fn request_hash(p: &NewPoint) -> String {
    let canonical = serde_json::json!([p.actor, p.customer, p.deal, p.action, p.payload]);
    hex::encode(Sha256::digest(canonical.to_string().as_bytes()))
}

async fn run(db: Db, clock: SharedClock, mut rx: mpsc::Receiver<Job>) {
    let mut batch: Vec<Job> = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.recv().await {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        write_batch(&db, &clock, &mut batch).await;
    }
}

async fn write_batch(db: &Db, clock: &SharedClock, batch: &mut Vec<Job>) {
    let size = batch.len();
    match write_all(db, clock, batch).await {
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
                let result = match write_all(db, clock, one).await {
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
async fn write_all(db: &Db, clock: &SharedClock, jobs: &[Job]) -> Result<Vec<Result<Recorded>>> {
    let mut tx = db.begin().await?;
    let mut results = Vec::with_capacity(jobs.len());
    let mut subscribers = Subscribers::default();
    for job in jobs {
        results.push(write_one(&mut tx, clock, &mut subscribers, job).await?);
    }
    tx.commit().await?;
    Ok(results)
}

async fn write_one(
    tx: &mut Tx,
    clock: &SharedClock,
    subscribers: &mut Subscribers,
    job: &Job,
) -> Result<Result<Recorded>> {
    let p = &job.point;
    let id = new_id();
    let at = clock.now_ms();
    let hash = p.idempotency_key.as_ref().map(|_| request_hash(p));
    let inserted = sqlx::query(
        "INSERT INTO tracking_points (id, org_id, actor_user_id, customer_id, deal_id, action, occurred_at, \
         source, platform, client_ip, user_agent, payload, verification, idempotency_key, request_hash, api_key_id) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, 'not_applicable', $13, $14, $15) \
         ON CONFLICT (org_id, idempotency_key) DO NOTHING",
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
    .bind(&hash)
    .bind(&p.api_key_id)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    if inserted == 1 {
        let point = TrackingPoint {
            id,
            actor: p.actor.clone(),
            customer: p.customer.clone(),
            deal: p.deal.clone(),
            action: p.action.clone(),
            occurred_at: crate::clock::rfc3339(at),
            occurred_at_local: crate::clock::in_zone(at, job.tz),
            source: p.source.as_str().to_string(),
            platform: p.platform.clone(),
            client_ip: p.client_ip.clone(),
            user_agent: p.user_agent.clone(),
            payload: p.payload.clone(),
            verification: "not_applicable".into(),
        };
        // Deliveries commit with the point: a point is never without its webhooks.
        subscribers.enqueue_point(tx, at, &p.org_id, &point).await?;
        return Ok(Ok(Recorded::Created(point)));
    }
    // The key was used before: answer with the first result if it is the same request.
    let row = sqlx::query(concat!(
        "SELECT ",
        point_fields!(),
        ", request_hash AS stored_hash FROM tracking_points WHERE org_id = $1 AND idempotency_key = $2"
    ))
    .bind(&p.org_id)
    .bind(&p.idempotency_key)
    .fetch_one(&mut **tx)
    .await?;
    let stored: Option<String> = row.get("stored_hash");
    if stored != hash {
        return Ok(Err(Error::Conflict(
            "this Idempotency-Key was already used for a different request".into(),
        )));
    }
    Ok(Ok(Recorded::Replayed(from_row(&row, job.tz))))
}
