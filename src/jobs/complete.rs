//! Finishing jobs: fence on the lease token, apply the effects, mark done — atomically.
//!
//! On SQLite, where every commit is an fsync and there is one writer anyway, finished
//! runs go through a group commit: each is fenced and applied inside its own savepoint,
//! many share one transaction, and each caller is answered after the commit. On
//! PostgreSQL parallel transactions are faster (the server batches WAL flushes itself),
//! so each run commits alone.

use std::sync::Arc;

use serde_json::Value;
use tokio::sync::{mpsc, oneshot};

use super::{ClaimedJob, Handler, JobError};
use crate::clock::SharedClock;
use crate::db::{Db, Tx};

const MAX_BATCH: usize = 128;

/// What became of a finished run once committed.
#[derive(Debug)]
pub enum Completed {
    Done,
    /// The lease had passed to another worker; nothing was written.
    LostLease,
    /// `apply` or the commit failed; the caller records a retry.
    Failed(JobError),
}

pub struct Completion {
    pub job: ClaimedJob,
    pub handler: Arc<dyn Handler>,
    pub output: Value,
    pub reply: oneshot::Sender<Completed>,
}

pub fn start(db: Db, clock: SharedClock) -> mpsc::Sender<Completion> {
    let (tx, rx) = mpsc::channel(1024);
    tokio::spawn(run(db, clock, rx));
    tx
}

async fn run(db: Db, clock: SharedClock, mut rx: mpsc::Receiver<Completion>) {
    let mut batch: Vec<Completion> = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.recv().await {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(c) => batch.push(c),
                Err(_) => break,
            }
        }
        match commit_batch(&db, &clock, &batch).await {
            Ok(results) => {
                for (c, r) in batch.drain(..).zip(results) {
                    let _ = c.reply.send(r);
                }
            }
            Err(e) => {
                let message = format!("cannot commit job completion: {e}");
                for c in batch.drain(..) {
                    let _ = c
                        .reply
                        .send(Completed::Failed(JobError::Retry(message.clone())));
                }
            }
        }
    }
}

async fn commit_batch(
    db: &Db,
    clock: &SharedClock,
    batch: &[Completion],
) -> Result<Vec<Completed>, sqlx::Error> {
    let mut tx = db.begin().await?;
    let mut results = Vec::with_capacity(batch.len());
    for c in batch {
        sqlx::query("SAVEPOINT job_completion")
            .execute(&mut *tx)
            .await?;
        let result = finish_one(&mut tx, clock, c).await;
        if !matches!(result, Completed::Done) {
            // Undo whatever this run wrote (and leave an aborted PostgreSQL statement).
            sqlx::query("ROLLBACK TO SAVEPOINT job_completion")
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query("RELEASE SAVEPOINT job_completion")
            .execute(&mut *tx)
            .await?;
        results.push(result);
    }
    tx.commit().await?;
    Ok(results)
}

/// One run in a transaction of its own (PostgreSQL).
pub async fn finish_alone(db: &Db, clock: &SharedClock, c: &Completion) -> Completed {
    let mut tx = match db.begin().await {
        Ok(tx) => tx,
        Err(e) => return Completed::Failed(e.into()),
    };
    let result = finish_one(&mut tx, clock, c).await;
    if matches!(result, Completed::Done) {
        if let Err(e) = tx.commit().await {
            return Completed::Failed(e.into());
        }
    }
    result
}

/// Fences on the lease token, then applies the job's effects.
async fn finish_one(tx: &mut Tx, clock: &SharedClock, c: &Completion) -> Completed {
    let now = clock.now_ms();
    let fenced = sqlx::query(
        "UPDATE jobs SET status = 'done', lease_owner = NULL, lease_until = NULL, finished_at = $1, \
         updated_at = $1, output = $2, last_error = NULL \
         WHERE id = $3 AND lease_token = $4 AND status = 'running'",
    )
    .bind(now)
    .bind(c.handler.stored_output(&c.output).to_string())
    .bind(&c.job.id)
    .bind(c.job.lease_token)
    .execute(&mut **tx)
    .await;
    match fenced {
        Ok(r) if r.rows_affected() == 1 => {}
        Ok(_) => return Completed::LostLease,
        Err(e) => return Completed::Failed(e.into()),
    }
    match c.handler.apply(tx, &c.job, &c.output).await {
        Ok(()) => Completed::Done,
        Err(e) => Completed::Failed(e),
    }
}
