//! Housekeeping: finished jobs are kept for a week (for `jobs list` and audits), then
//! deleted. Dead jobs are kept until someone re-drives or inspects them.

use std::time::Duration;

use serde_json::{json, Value};

use super::{BoxFuture, ClaimedJob, Handler, JobError};
use crate::clock::SharedClock;
use crate::db::Db;

pub const KIND: &str = "jobs.cleanup";
pub const KEEP_DONE: Duration = Duration::from_secs(7 * 24 * 3600);

pub struct Cleanup {
    pub db: Db,
    pub clock: SharedClock,
}

impl Handler for Cleanup {
    fn perform<'a>(&'a self, _job: &'a ClaimedJob) -> BoxFuture<'a, Result<Value, JobError>> {
        Box::pin(async move {
            let cutoff = self.clock.now_ms() - KEEP_DONE.as_millis() as i64;
            let deleted =
                sqlx::query("DELETE FROM jobs WHERE status = 'done' AND finished_at < $1")
                    .bind(cutoff)
                    .execute(&self.db.pool)
                    .await?
                    .rows_affected();
            Ok(json!({"deleted": deleted}))
        })
    }
}
