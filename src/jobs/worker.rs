//! Claims due jobs with a lease, runs them, and finishes them under a fencing check.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use sqlx::Row;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use super::complete::{self, Completed, Completion};
use super::{ClaimedJob, Handler, JobError};
use crate::clock::SharedClock;
use crate::config::Backend;
use crate::db::Db;

/// The job kinds this process can run, by name.
#[derive(Clone, Default)]
pub struct Registry {
    handlers: HashMap<String, Arc<dyn Handler>>,
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn register(&mut self, kind: impl Into<String>, handler: impl Handler) -> &mut Self {
        self.handlers.insert(kind.into(), Arc::new(handler));
        self
    }

    pub fn kinds(&self) -> Vec<String> {
        let mut k: Vec<String> = self.handlers.keys().cloned().collect();
        k.sort();
        k
    }

    fn get(&self, kind: &str) -> Option<Arc<dyn Handler>> {
        self.handlers.get(kind).cloned()
    }
}

#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Jobs run at once by this process.
    pub concurrency: usize,
    /// How long a claim holds; a worker silent for longer loses the job.
    pub lease: Duration,
    /// Longest one run may take (must be shorter than the lease).
    pub timeout: Duration,
    /// Sleep between polls when nothing is due.
    pub poll_interval: Duration,
    /// Names this worker in `lease_owner` (host and process).
    pub owner: String,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            concurrency: 8,
            lease: Duration::from_secs(120),
            timeout: Duration::from_secs(60),
            poll_interval: Duration::from_millis(500),
            owner: default_owner(),
        }
    }
}

pub fn default_owner() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "localhost".into());
    format!(
        "{host}:{}:{}",
        std::process::id(),
        &crate::db::new_id()[24..]
    )
}

/// What became of one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Done,
    Retrying,
    Delayed,
    Dead,
    /// Another worker holds the job now; nothing was written.
    LostLease,
}

#[derive(Clone)]
pub struct Worker {
    db: Db,
    clock: SharedClock,
    registry: Arc<Registry>,
    config: WorkerConfig,
    /// SQLite only: commits finished runs in batches.
    completer: Option<mpsc::Sender<Completion>>,
    /// When expired leases were last put back in the queue (worker clock, ms).
    last_reclaim: Arc<std::sync::atomic::AtomicI64>,
}

impl Worker {
    /// Must be called inside a Tokio runtime: it starts the completer task.
    pub fn new(db: Db, clock: SharedClock, registry: Registry, config: WorkerConfig) -> Worker {
        Worker {
            completer: (db.backend == Backend::Sqlite)
                .then(|| complete::start(db.clone(), clock.clone())),
            last_reclaim: Arc::new(std::sync::atomic::AtomicI64::new(i64::MIN)),
            db,
            clock,
            registry: Arc::new(registry),
            config,
        }
    }

    /// Claims up to `n` due jobs of the kinds this worker knows.
    pub async fn claim(&self, n: usize) -> Result<Vec<ClaimedJob>, sqlx::Error> {
        let kinds = self.registry.kinds();
        if kinds.is_empty() || n == 0 {
            return Ok(Vec::new());
        }
        let now = self.clock.now_ms();
        let marks: Vec<String> = (0..kinds.len()).map(|i| format!("${}", i + 5)).collect();
        let lock = match self.db.backend {
            Backend::Postgres => "FOR UPDATE SKIP LOCKED",
            // SQLite serialises writers: BEGIN IMMEDIATE is the lock.
            Backend::Sqlite => "",
        };
        let sql = format!(
            "UPDATE jobs SET status = 'running', lease_owner = $1, lease_until = $2, \
             lease_token = lease_token + 1, attempts = attempts + 1, updated_at = $3 \
             WHERE id IN (SELECT j.id FROM jobs j \
               WHERE j.status = 'queued' AND j.run_at <= $3 \
                 AND j.kind IN ({kinds}) \
                 AND (j.ordering_key IS NULL OR NOT EXISTS (SELECT 1 FROM jobs e \
                      WHERE e.ordering_key = j.ordering_key AND e.id < j.id AND e.status IN ('queued', 'running'))) \
               ORDER BY j.run_at, j.id LIMIT $4 {lock}) \
             RETURNING id, kind, org_id, payload, ordering_key, attempts, max_attempts, run_at, lease_token",
            kinds = marks.join(", ")
        );
        let mut q = sqlx::query(&sql)
            .bind(&self.config.owner)
            .bind(now + self.config.lease.as_millis() as i64)
            .bind(now)
            .bind(n as i64);
        for k in &kinds {
            q = q.bind(k.as_str());
        }
        let mut tx = self.db.begin().await?;
        // A lease that ran out puts its job back in the queue; the claim below then bumps
        // the token, so the worker that lost it can no longer finish it. Leases last
        // minutes, so looking for expired ones every few seconds is enough (and keeps
        // each claim from walking the index entries of every job that ever ran).
        let every = (self.config.lease.as_millis() as i64 / 4).clamp(1, 5_000);
        let last = self.last_reclaim.load(std::sync::atomic::Ordering::Relaxed);
        if last == i64::MIN || now - last >= every {
            self.last_reclaim
                .store(now, std::sync::atomic::Ordering::Relaxed);
            sqlx::query(
                "UPDATE jobs SET status = 'queued', lease_owner = NULL, lease_until = NULL, updated_at = $1 \
                 WHERE status = 'running' AND lease_until < $1",
            )
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        let rows = q.fetch_all(&mut *tx).await?;
        tx.commit().await?;
        let mut jobs: Vec<ClaimedJob> = rows
            .iter()
            .map(|r| {
                let payload: String = r.get("payload");
                ClaimedJob {
                    id: r.get("id"),
                    kind: r.get("kind"),
                    org_id: r.get("org_id"),
                    payload: serde_json::from_str(&payload).unwrap_or(Value::Null),
                    ordering_key: r.get("ordering_key"),
                    attempt: r.get::<i64, _>("attempts").max(1) as u32,
                    max_attempts: r.get::<i64, _>("max_attempts").max(1) as u32,
                    run_at_ms: r.get("run_at"),
                    lease_token: r.get("lease_token"),
                }
            })
            .collect();
        jobs.sort_by(|a, b| (a.run_at_ms, &a.id).cmp(&(b.run_at_ms, &b.id)));
        Ok(jobs)
    }

    /// Runs one claimed job to its outcome.
    pub async fn run_job(&self, job: ClaimedJob) -> Outcome {
        let Some(handler) = self.registry.get(&job.kind) else {
            return self
                .fail(
                    &job,
                    &JobError::GiveUp(format!("no handler for kind {}", job.kind)),
                    None,
                )
                .await;
        };
        let started = Instant::now();
        let mut result = self.perform(&*handler, &job).await;
        if let Err(JobError::RefreshCredentials(_)) = &result {
            handler.refresh_credentials(&job).await;
            result = match self.perform(&*handler, &job).await {
                Err(JobError::RefreshCredentials(m)) => Err(JobError::Retry(format!(
                    "credentials still rejected after a refresh: {m}"
                ))),
                other => other,
            };
        }
        let outcome = match result {
            Ok(output) => self.complete(handler.clone(), &job, output).await,
            Err(e) => self.fail(&job, &e, Some(&*handler)).await,
        };
        let label = match outcome {
            Outcome::Done => "done",
            Outcome::Retrying => "retry",
            Outcome::Delayed => "delayed",
            Outcome::Dead => "dead",
            Outcome::LostLease => "lost_lease",
        };
        metrics::counter!("closeloop_job_attempts_total", "kind" => job.kind.clone(), "outcome" => label)
            .increment(1);
        metrics::histogram!("closeloop_job_run_seconds", "kind" => job.kind.clone())
            .record(started.elapsed().as_secs_f64());
        outcome
    }

    async fn perform(&self, handler: &dyn Handler, job: &ClaimedJob) -> Result<Value, JobError> {
        match tokio::time::timeout(self.config.timeout, handler.perform(job)).await {
            Ok(r) => r,
            Err(_) => Err(JobError::Retry(format!(
                "timed out after {:?}",
                self.config.timeout
            ))),
        }
    }

    /// Marks the job done and applies its effects — only if this worker still holds the
    /// current lease — through the group-commit completer.
    async fn complete(
        &self,
        handler: Arc<dyn Handler>,
        job: &ClaimedJob,
        output: Value,
    ) -> Outcome {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let completion = Completion {
            job: job.clone(),
            handler: handler.clone(),
            output,
            reply,
        };
        let result = match &self.completer {
            None => complete::finish_alone(&self.db, &self.clock, &completion).await,
            Some(completer) => match completer.send(completion).await {
                Ok(()) => answer.await.unwrap_or_else(|_| {
                    Completed::Failed(JobError::Retry("completer stopped".into()))
                }),
                Err(_) => Completed::Failed(JobError::Retry("completer stopped".into())),
            },
        };
        match result {
            Completed::Done => Outcome::Done,
            Completed::LostLease => {
                tracing::warn!(job = %job.id, kind = %job.kind, "lost the lease before finishing; result discarded");
                Outcome::LostLease
            }
            Completed::Failed(e) => self.fail(job, &e, Some(&*handler)).await,
        }
    }

    /// Records a failed run: queued again after a delay, or dead.
    async fn fail(&self, job: &ClaimedJob, e: &JobError, handler: Option<&dyn Handler>) -> Outcome {
        let policy = handler.map(|h| h.retry_policy()).unwrap_or_default();
        let now = self.clock.now_ms();
        let (status, run_at, refund, outcome) = match e {
            JobError::GiveUp(_) => ("dead", now, 0i64, Outcome::Dead),
            JobError::RateLimited { retry_after, .. } => {
                let d = policy.rate_limited(*retry_after);
                ("queued", now + d.as_millis() as i64, 1i64, Outcome::Delayed)
            }
            JobError::Retry(_) | JobError::RefreshCredentials(_) => {
                if job.attempt >= job.max_attempts {
                    ("dead", now, 0, Outcome::Dead)
                } else {
                    let d = policy.delay(job.attempt);
                    ("queued", now + d.as_millis() as i64, 0, Outcome::Retrying)
                }
            }
        };
        let message: String = e.to_string().chars().take(2000).collect();
        let res = self
            .record_failure(job, status, run_at, refund, &message, now, handler)
            .await;
        match res {
            Ok(r) if r.rows_affected() == 1 => {
                if outcome == Outcome::Dead {
                    metrics::counter!("closeloop_jobs_dead_total", "kind" => job.kind.clone())
                        .increment(1);
                    tracing::error!(job = %job.id, kind = %job.kind, error = %message, "job is dead");
                } else {
                    tracing::warn!(job = %job.id, kind = %job.kind, attempt = job.attempt, error = %message, "job failed; will run again");
                }
                outcome
            }
            Ok(_) => Outcome::LostLease,
            Err(db_err) => {
                // The lease runs out and the job is claimed again.
                tracing::error!(job = %job.id, error = %db_err, "cannot record job failure");
                Outcome::Retrying
            }
        }
    }

    /// Writes a failed run's state; a job that is now dead tells its handler in the same
    /// transaction ([`Handler::died`]). Should the handler fail, the job is dead all the same.
    #[allow(clippy::too_many_arguments)]
    async fn record_failure(
        &self,
        job: &ClaimedJob,
        status: &str,
        run_at: i64,
        refund: i64,
        message: &str,
        now: i64,
        handler: Option<&dyn Handler>,
    ) -> Result<sqlx::any::AnyQueryResult, sqlx::Error> {
        const SQL: &str =
            "UPDATE jobs SET status = $1, run_at = $2, attempts = attempts - $3, last_error = $4, \
             lease_owner = NULL, lease_until = NULL, updated_at = $5, \
             finished_at = CASE WHEN $1 = 'dead' THEN $5 ELSE NULL END \
             WHERE id = $6 AND lease_token = $7 AND status = 'running'";
        let update = || {
            sqlx::query(SQL)
                .bind(status)
                .bind(run_at)
                .bind(refund)
                .bind(message)
                .bind(now)
                .bind(&job.id)
                .bind(job.lease_token)
        };
        if let (Some(handler), "dead") = (handler, status) {
            let mut tx = self.db.begin().await?;
            let res = update().execute(&mut *tx).await?;
            if res.rows_affected() != 1 {
                return Ok(res);
            }
            match handler.died(&mut tx, job, now, message).await {
                Ok(()) => {
                    tx.commit().await?;
                    return Ok(res);
                }
                Err(e) => {
                    tracing::error!(job = %job.id, kind = %job.kind, error = %e, "cannot record what the dead job means");
                    tx.rollback().await?;
                }
            }
        }
        update().execute(&self.db.pool).await
    }

    /// One step for tests and tools: fire due schedules, claim up to `concurrency` jobs,
    /// run them all, return how many ran.
    pub async fn run_once(&self) -> Result<usize, sqlx::Error> {
        super::schedule::fire_due(&self.db, self.clock.now_ms()).await?;
        let jobs = self.claim(self.config.concurrency).await?;
        let n = jobs.len();
        let mut set = JoinSet::new();
        for job in jobs {
            let w = self.clone();
            set.spawn(async move { w.run_job(job).await });
        }
        while set.join_next().await.is_some() {}
        Ok(n)
    }

    /// Steps until nothing is due (tests).
    pub async fn drain(&self) -> Result<usize, sqlx::Error> {
        let mut total = 0;
        loop {
            let n = self.run_once().await?;
            if n == 0 {
                return Ok(total);
            }
            total += n;
        }
    }

    /// The production loop: keeps up to `concurrency` jobs running, polls when idle, and
    /// on `stop` claims nothing more and waits for the running jobs.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut running: JoinSet<Outcome> = JoinSet::new();
        let mut last_gauges = Instant::now() - Duration::from_secs(60);
        tracing::info!(owner = %self.config.owner, kinds = ?self.registry.kinds(), "job worker started");
        loop {
            if *stop.borrow() {
                break;
            }
            if let Err(e) = super::schedule::fire_due(&self.db, self.clock.now_ms()).await {
                tracing::warn!(error = %e, "cannot fire schedules");
            }
            let free = self.config.concurrency.saturating_sub(running.len());
            let claimed = if free > 0 {
                match self.claim(free).await {
                    Ok(jobs) => jobs,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot claim jobs");
                        Vec::new()
                    }
                }
            } else {
                Vec::new()
            };
            let got = claimed.len();
            for job in claimed {
                let w = self.clone();
                running.spawn(async move { w.run_job(job).await });
            }
            if last_gauges.elapsed() > Duration::from_secs(5) {
                last_gauges = Instant::now();
                if let Err(e) = self.refresh_gauges().await {
                    tracing::debug!(error = %e, "cannot read job gauges");
                }
            }
            if got > 0 && got == free {
                // Full: wait for a slot, not for the poll interval.
                tokio::select! {
                    _ = running.join_next() => {}
                    _ = stop.changed() => {}
                }
            } else if got == 0 {
                tokio::select! {
                    _ = tokio::time::sleep(self.config.poll_interval) => {}
                    Some(_) = running.join_next(), if !running.is_empty() => {}
                    _ = stop.changed() => {}
                }
            }
            while running.try_join_next().is_some() {}
        }
        while running.join_next().await.is_some() {}
        tracing::info!("job worker stopped");
    }

    async fn refresh_gauges(&self) -> Result<(), sqlx::Error> {
        let now = self.clock.now_ms();
        let row = sqlx::query(
            "SELECT CAST(COUNT(*) AS BIGINT) AS queued, CAST(MIN(run_at) AS BIGINT) AS oldest FROM jobs \
             WHERE status = 'queued' AND run_at <= $1",
        )
        .bind(now)
        .fetch_one(&self.db.pool)
        .await?;
        let queued: i64 = row.get("queued");
        let oldest: Option<i64> = row.get("oldest");
        let dead: i64 =
            sqlx::query("SELECT CAST(COUNT(*) AS BIGINT) AS n FROM jobs WHERE status = 'dead'")
                .fetch_one(&self.db.pool)
                .await?
                .get("n");
        metrics::gauge!("closeloop_jobs_due").set(queued as f64);
        metrics::gauge!("closeloop_jobs_oldest_due_age_seconds").set(
            oldest
                .map(|o| (now - o).max(0) as f64 / 1000.0)
                .unwrap_or(0.0),
        );
        metrics::gauge!("closeloop_jobs_dead").set(dead as f64);
        Ok(())
    }
}
