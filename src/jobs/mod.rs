//! Durable jobs: everything closeloop sends or does later — card deliveries and updates,
//! SLA deadlines, weekly reviews, call-record polls, directory syncs, webhooks — is a row
//! in one table of our own database.
//!
//! - **Enqueue** happens inside the caller's transaction ([`enqueue`]), so a job exists if
//!   and only if the business change committed.
//! - **Claiming** takes a lease and bumps a fencing token; a worker that dies loses the
//!   lease and the job runs again; a stale worker cannot finish a job it lost.
//! - **Retries** follow [`retry::RetryPolicy`]; after the last attempt a job is *dead*,
//!   kept with its payload and last error, and can be re-driven.
//! - **Schedules** ([`schedule`]) fire each tick once across replicas.
//! - **Ordering keys** make jobs of one key run one at a time, in order.

pub mod cleanup;
mod complete;
pub mod retry;
pub mod schedule;
pub mod worker;

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::Row;

use crate::db::{new_id, Arg, Db, Select, Tx};
use crate::error::{Error, Result};
use crate::page::{Page, PageRequest};

pub use retry::RetryPolicy;
pub use worker::{Registry, Worker, WorkerConfig};

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A job to enqueue.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub kind: String,
    pub org_id: Option<String>,
    pub payload: Value,
    /// Not before this time (epoch ms); `None` is now.
    pub run_at_ms: Option<i64>,
    pub ordering_key: Option<String>,
    /// Enqueueing a job whose key already exists does nothing.
    pub dedupe_key: Option<String>,
    pub max_attempts: Option<u32>,
}

impl NewJob {
    pub fn new(kind: impl Into<String>, payload: Value) -> NewJob {
        NewJob {
            kind: kind.into(),
            org_id: None,
            payload,
            run_at_ms: None,
            ordering_key: None,
            dedupe_key: None,
            max_attempts: None,
        }
    }

    pub fn org(mut self, org_id: impl Into<String>) -> Self {
        self.org_id = Some(org_id.into());
        self
    }

    pub fn at(mut self, run_at_ms: i64) -> Self {
        self.run_at_ms = Some(run_at_ms);
        self
    }

    pub fn ordered_by(mut self, key: impl Into<String>) -> Self {
        self.ordering_key = Some(key.into());
        self
    }

    pub fn dedupe(mut self, key: impl Into<String>) -> Self {
        self.dedupe_key = Some(key.into());
        self
    }

    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = Some(n);
        self
    }
}

/// Enqueues inside the caller's transaction. Returns the new id, or `None` when the
/// dedupe key was already taken.
pub async fn enqueue(tx: &mut Tx, now_ms: i64, job: NewJob) -> Result<Option<String>> {
    let id = new_id();
    let max = job
        .max_attempts
        .unwrap_or(RetryPolicy::default().max_attempts)
        .max(1);
    let inserted = sqlx::query(
        "INSERT INTO jobs (id, org_id, kind, payload, ordering_key, dedupe_key, status, run_at, attempts, \
         max_attempts, lease_token, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, 'queued', $7, 0, $8, 0, $9, $9) ON CONFLICT (dedupe_key) DO NOTHING",
    )
    .bind(&id)
    .bind(&job.org_id)
    .bind(&job.kind)
    .bind(job.payload.to_string())
    .bind(&job.ordering_key)
    .bind(&job.dedupe_key)
    .bind(job.run_at_ms.unwrap_or(now_ms))
    .bind(max as i64)
    .bind(now_ms)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    Ok((inserted == 1).then_some(id))
}

/// Enqueues in a transaction of its own.
pub async fn enqueue_now(db: &Db, now_ms: i64, job: NewJob) -> Result<Option<String>> {
    let mut tx = db.begin().await?;
    let id = enqueue(&mut tx, now_ms, job).await?;
    tx.commit().await?;
    Ok(id)
}

/// How a run failed, and so what happens next.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// A passing fault: retry with backoff.
    #[error("{0}")]
    Retry(String),
    /// Rate limited: wait (at least the hint) and do not count the attempt.
    #[error("rate limited: {message}")]
    RateLimited {
        retry_after: Option<Duration>,
        message: String,
    },
    /// Credentials went stale (expired token): refresh them and retry once at once.
    #[error("credentials need refreshing: {0}")]
    RefreshCredentials(String),
    /// Retrying cannot help (bad request, configuration error): the job is dead now.
    #[error("{0}")]
    GiveUp(String),
}

impl From<sqlx::Error> for JobError {
    fn from(e: sqlx::Error) -> Self {
        JobError::Retry(format!("database: {e}"))
    }
}

impl From<Error> for JobError {
    fn from(e: Error) -> Self {
        match e {
            Error::Internal(_) | Error::Unavailable(_) => JobError::Retry(e.to_string()),
            other => JobError::GiveUp(other.to_string()),
        }
    }
}

/// A job as a worker holds it.
#[derive(Debug, Clone)]
pub struct ClaimedJob {
    pub id: String,
    pub kind: String,
    pub org_id: Option<String>,
    pub payload: Value,
    pub ordering_key: Option<String>,
    /// 1 on the first run.
    pub attempt: u32,
    pub max_attempts: u32,
    pub run_at_ms: i64,
    pub lease_token: i64,
}

/// What a job kind does.
///
/// `perform` does the outside work (an HTTP call) with no transaction open. `apply`
/// records its effects in our database inside the transaction that also marks the job
/// done, after the fencing check — so effects are written once, by the current lease
/// holder only, even if `perform` ran twice.
pub trait Handler: Send + Sync + 'static {
    fn perform<'a>(&'a self, job: &'a ClaimedJob) -> BoxFuture<'a, Result<Value, JobError>>;

    fn apply<'a>(
        &'a self,
        _tx: &'a mut Tx,
        _job: &'a ClaimedJob,
        _output: &'a Value,
    ) -> BoxFuture<'a, Result<(), JobError>> {
        Box::pin(async { Ok(()) })
    }

    /// What of `output` the job row keeps (the jobs API shows it). A handler whose output
    /// carries personal data fetched from a platform keeps less (docs/personal-data.md).
    fn stored_output(&self, output: &Value) -> Value {
        output.clone()
    }

    /// Called once before the immediate retry that follows `RefreshCredentials`.
    fn refresh_credentials<'a>(&'a self, _job: &'a ClaimedJob) -> BoxFuture<'a, ()> {
        Box::pin(async {})
    }

    /// Retry timing for this kind.
    fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy::default()
    }

    /// The job is dead (it gave up, or used its last attempt) with `error`: what that
    /// means for the job's object, written in the transaction that marks it dead.
    fn died<'a>(
        &'a self,
        _tx: &'a mut Tx,
        _job: &'a ClaimedJob,
        _now_ms: i64,
        _error: &'a str,
    ) -> BoxFuture<'a, Result<(), JobError>> {
        Box::pin(async { Ok(()) })
    }
}

/// A job whose whole effect is database writes (timers that change rows, weekly
/// reports that queue cards): it runs inside the fenced completing transaction, so it acts
/// once even if the job is claimed twice.
pub trait TxJob: Send + Sync + 'static {
    fn run<'a>(
        &'a self,
        tx: &'a mut Tx,
        job: &'a ClaimedJob,
    ) -> BoxFuture<'a, Result<(), JobError>>;
}

impl<T: TxJob> Handler for T {
    fn perform<'a>(&'a self, _job: &'a ClaimedJob) -> BoxFuture<'a, Result<Value, JobError>> {
        Box::pin(async { Ok(Value::Null) })
    }

    fn apply<'a>(
        &'a self,
        tx: &'a mut Tx,
        job: &'a ClaimedJob,
        _output: &'a Value,
    ) -> BoxFuture<'a, Result<(), JobError>> {
        self.run(tx, job)
    }
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct JobInfo {
    pub id: String,
    pub kind: String,
    pub status: String,
    #[schema(value_type = Object)]
    pub payload: Value,
    pub ordering_key: Option<String>,
    pub run_at: String,
    pub attempts: i64,
    pub max_attempts: i64,
    pub last_error: Option<String>,
    pub created_at: String,
    pub finished_at: Option<String>,
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct JobFilter {
    /// queued | running | done | dead
    #[param(schema_with = status_schema)]
    pub status: Option<String>,
    pub kind: Option<String>,
}

pub const STATUSES: [&str; 4] = ["queued", "running", "done", "dead"];

fn status_schema() -> utoipa::openapi::Object {
    crate::validate::one_of(&STATUSES)
}

/// Jobs of one organisation, or of all when `org_id` is `None` (the CLI).
pub async fn list(
    db: &Db,
    org_id: Option<&str>,
    f: &JobFilter,
    page: &PageRequest,
) -> Result<Page<JobInfo>> {
    let mut sel = Select::new();
    if let Some(o) = org_id {
        sel.and("org_id = {}", Arg::Text(o.into()));
    }
    if let Some(after) = &page.after {
        sel.and("id > {}", Arg::Text(after.clone()));
    }
    if let Some(s) = &f.status {
        if !STATUSES.contains(&s.as_str()) {
            return Err(Error::invalid(
                "status must be queued, running, done or dead",
            ));
        }
        sel.and("status = {}", Arg::Text(s.clone()));
    }
    if let Some(k) = &f.kind {
        sel.and("kind = {}", Arg::Text(k.clone()));
    }
    let sql = sel.sql(
        "SELECT id, kind, status, payload, ordering_key, run_at, attempts, max_attempts, last_error, \
         created_at, finished_at FROM jobs",
        "ORDER BY id LIMIT {limit}",
    );
    let rows = sel
        .bind(sqlx::query(&sql))
        .bind(page.limit + 1)
        .fetch_all(&db.pool)
        .await?;
    let jobs = rows
        .iter()
        .map(|r| {
            let payload: String = r.get("payload");
            JobInfo {
                id: r.get("id"),
                kind: r.get("kind"),
                status: r.get("status"),
                payload: serde_json::from_str(&payload).unwrap_or(Value::Null),
                ordering_key: r.get("ordering_key"),
                run_at: crate::clock::rfc3339(r.get("run_at")),
                attempts: r.get("attempts"),
                max_attempts: r.get("max_attempts"),
                last_error: r.get("last_error"),
                created_at: crate::clock::rfc3339(r.get("created_at")),
                finished_at: r
                    .get::<Option<i64>, _>("finished_at")
                    .map(crate::clock::rfc3339),
            }
        })
        .collect();
    Ok(Page::from_rows(jobs, page, |j| &j.id))
}

/// A job's status and last error, if the job exists (`closeloop jobs run-now` waits on it).
pub async fn status(db: &Db, id: &str) -> Result<Option<(String, Option<String>)>> {
    Ok(
        sqlx::query("SELECT status, last_error FROM jobs WHERE id = $1")
            .bind(id)
            .fetch_optional(&db.pool)
            .await?
            .map(|r| (r.get("status"), r.get("last_error"))),
    )
}

/// Re-drives a dead job: queued again now with a fresh set of attempts.
pub async fn retry_dead(db: &Db, now_ms: i64, org_id: Option<&str>, id: &str) -> Result<()> {
    let mut tx = db.begin().await?;
    let row = sqlx::query("SELECT status, org_id FROM jobs WHERE id = $1")
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(Error::NotFound { what: "job" })?;
    let job_org: Option<String> = row.get("org_id");
    if let Some(o) = org_id {
        if job_org.as_deref() != Some(o) {
            return Err(Error::NotFound { what: "job" });
        }
    }
    let status: String = row.get("status");
    if status != "dead" {
        return Err(Error::Conflict(format!(
            "only dead jobs can be retried; this one is {status}"
        )));
    }
    sqlx::query(
        "UPDATE jobs SET status = 'queued', attempts = 0, run_at = $1, updated_at = $1, finished_at = NULL \
         WHERE id = $2 AND status = 'dead'",
    )
    .bind(now_ms)
    .bind(id)
    .execute(&mut *tx)
    .await?;
    crate::access::audit::record(
        &mut tx,
        now_ms,
        crate::access::audit::AuditEntry {
            org_id: job_org.as_deref(),
            actor_kind: "admin",
            actor_id: None,
            action: "job.retry",
            target_kind: Some("job"),
            target_id: Some(id),
            detail: serde_json::json!({}),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(())
}
