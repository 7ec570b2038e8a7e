//! Keeping the access log for `access_log_retention` (180 days by default): the daily
//! `access_log.prune` job deletes older entries, organisation by organisation, in chunks
//! of [`CHUNK`] rows (each its own statement, so no lock is held long).

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sqlx::Row;

use crate::clock::SharedClock;
use crate::db::Db;
use crate::jobs::{BoxFuture, ClaimedJob, Handler, JobError};

pub const KIND: &str = "access_log.prune";
/// Every day at 03:45 in the organisation's zone.
pub const CRON: &str = "45 3 * * *";
/// Rows deleted per statement.
pub const CHUNK: i64 = 5000;
/// A run stops starting chunks after this long; the next run continues.
pub const BUDGET: Duration = Duration::from_secs(30);

pub struct Prune {
    pub db: Db,
    pub clock: SharedClock,
    /// Entries older than this are deleted.
    pub keep: Duration,
}

impl Handler for Prune {
    fn perform<'a>(&'a self, _job: &'a ClaimedJob) -> BoxFuture<'a, Result<Value, JobError>> {
        Box::pin(async move {
            let cutoff = self.clock.now_ms() - self.keep.as_millis() as i64;
            let (deleted, done) = prune(&self.db, cutoff, BUDGET).await?;
            Ok(json!({"deleted": deleted, "done": done}))
        })
    }
}

/// Deletes every entry read before `cutoff_ms` (epoch ms), chunk by chunk, until none is
/// left or `budget` has passed: (entries deleted, whether none older is left).
pub async fn prune(db: &Db, cutoff_ms: i64, budget: Duration) -> Result<(u64, bool), sqlx::Error> {
    let started = Instant::now();
    let orgs: Vec<String> = sqlx::query("SELECT id FROM organisations ORDER BY id")
        .fetch_all(&db.pool)
        .await?
        .iter()
        .map(|r| r.get("id"))
        .collect();
    let mut deleted = 0;
    for org in orgs {
        loop {
            if started.elapsed() >= budget {
                return Ok((deleted, false));
            }
            let n = sqlx::query(
                "DELETE FROM access_log WHERE id IN \
                 (SELECT id FROM access_log WHERE org_id = $1 AND at < $2 LIMIT $3)",
            )
            .bind(&org)
            .bind(cutoff_ms)
            .bind(CHUNK)
            .execute(&db.pool)
            .await?
            .rows_affected();
            deleted += n;
            if n < CHUNK as u64 {
                break;
            }
        }
    }
    Ok((deleted, true))
}
