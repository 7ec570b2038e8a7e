//! Recurring work in an organisation's time zone: cron expressions ("0 8 * * MON" =
//! Monday 08:00) or fixed intervals ("every 10 minutes").
//!
//! A due tick is taken by moving `next_run_at` forward with a compare-and-set, and its job
//! carries the dedupe key `schedule:<id>:<tick>`; so across any number of replicas a tick
//! enqueues exactly one job. After downtime the next time is computed from *now*, so the
//! missed ticks collapse into one run (`misfire = once`) or none (`misfire = skip`).

use std::str::FromStr;
use std::time::Duration;

use chrono::TimeZone;
use serde_json::Value;
use sqlx::Row;

use super::NewJob;
use crate::db::Db;
use crate::error::{Error, Result};

/// How long after its tick a `skip` schedule still runs.
const SKIP_GRACE_MS: i64 = 60_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Every {
    Cron(String),
    Interval(Duration),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Misfire {
    /// Missed ticks run once, as soon as possible.
    Once,
    /// Missed ticks are dropped; the next on-time tick runs.
    Skip,
}

impl Misfire {
    fn as_str(self) -> &'static str {
        match self {
            Misfire::Once => "once",
            Misfire::Skip => "skip",
        }
    }
}

#[derive(Debug, Clone)]
pub struct ScheduleSpec {
    /// Stable name, e.g. `weekly-review:<org id>`.
    pub id: String,
    pub org_id: Option<String>,
    pub kind: String,
    pub payload: Value,
    pub every: Every,
    pub timezone: chrono_tz::Tz,
    pub misfire: Misfire,
}

fn parse_cron(expr: &str) -> Result<croner::Cron> {
    croner::Cron::new(expr)
        .parse()
        .map_err(|e| Error::invalid(format!("cron expression `{expr}`: {e}")))
}

/// The first tick strictly after `after_ms`.
pub fn next_after(every: &Every, tz: chrono_tz::Tz, after_ms: i64) -> Result<i64> {
    match every {
        Every::Interval(d) => {
            let step = (d.as_millis() as i64).max(1000);
            // Intervals are aligned to the epoch so every replica computes the same ticks.
            Ok((after_ms.div_euclid(step) + 1) * step)
        }
        Every::Cron(expr) => {
            let cron = parse_cron(expr)?;
            let local = tz
                .timestamp_millis_opt(after_ms)
                .single()
                .ok_or_else(|| Error::invalid("time out of range"))?;
            let next = cron.find_next_occurrence(&local, false).map_err(|e| {
                Error::invalid(format!("cron expression `{expr}` has no next time: {e}"))
            })?;
            Ok(next.timestamp_millis())
        }
    }
}

/// Creates or updates a schedule. Changing its timing recomputes the next tick.
pub async fn upsert(db: &Db, now_ms: i64, spec: &ScheduleSpec) -> Result<()> {
    let (cron, every_ms) = match &spec.every {
        Every::Cron(c) => {
            parse_cron(c)?;
            (Some(c.clone()), None)
        }
        Every::Interval(d) => (None, Some(d.as_millis() as i64)),
    };
    let next = next_after(&spec.every, spec.timezone, now_ms)?;
    let mut tx = db.begin().await?;
    let existing = sqlx::query("SELECT cron, every_ms, timezone FROM schedules WHERE id = $1")
        .bind(&spec.id)
        .fetch_optional(&mut *tx)
        .await?;
    match existing {
        None => {
            sqlx::query(
                "INSERT INTO schedules (id, org_id, kind, payload, cron, every_ms, timezone, misfire, next_run_at, \
                 enabled, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 1, $10, $10) \
                 ON CONFLICT (id) DO NOTHING",
            )
            .bind(&spec.id)
            .bind(&spec.org_id)
            .bind(&spec.kind)
            .bind(spec.payload.to_string())
            .bind(&cron)
            .bind(every_ms)
            .bind(spec.timezone.name())
            .bind(spec.misfire.as_str())
            .bind(next)
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
        }
        Some(row) => {
            let same_timing = row.get::<Option<String>, _>("cron") == cron
                && row.get::<Option<i64>, _>("every_ms") == every_ms
                && row.get::<String, _>("timezone") == spec.timezone.name();
            sqlx::query(
                "UPDATE schedules SET kind = $1, payload = $2, misfire = $3, cron = $4, every_ms = $5, \
                 timezone = $6, updated_at = $7, next_run_at = CASE WHEN $8 = 1 THEN next_run_at ELSE $9 END \
                 WHERE id = $10",
            )
            .bind(&spec.kind)
            .bind(spec.payload.to_string())
            .bind(spec.misfire.as_str())
            .bind(&cron)
            .bind(every_ms)
            .bind(spec.timezone.name())
            .bind(now_ms)
            .bind(same_timing as i64)
            .bind(next)
            .bind(&spec.id)
            .execute(&mut *tx)
            .await?;
        }
    }
    tx.commit().await?;
    Ok(())
}

/// Enqueues one job for every due schedule tick this caller wins. Returns how many.
pub async fn fire_due(db: &Db, now_ms: i64) -> Result<usize, sqlx::Error> {
    let due = sqlx::query(
        "SELECT id, org_id, kind, payload, cron, every_ms, timezone, misfire, next_run_at FROM schedules \
         WHERE enabled = 1 AND next_run_at <= $1",
    )
    .bind(now_ms)
    .fetch_all(&db.pool)
    .await?;
    let mut fired = 0;
    for row in due {
        let id: String = row.get("id");
        let tick: i64 = row.get("next_run_at");
        let tz: chrono_tz::Tz = chrono_tz::Tz::from_str(&row.get::<String, _>("timezone"))
            .unwrap_or(chrono_tz::Asia::Shanghai);
        let every = match (
            row.get::<Option<String>, _>("cron"),
            row.get::<Option<i64>, _>("every_ms"),
        ) {
            (Some(c), _) => Every::Cron(c),
            (None, Some(ms)) => Every::Interval(Duration::from_millis(ms.max(1000) as u64)),
            (None, None) => continue,
        };
        let Ok(next) = next_after(&every, tz, now_ms) else {
            tracing::error!(schedule = %id, "schedule has no next time; disabling it");
            sqlx::query("UPDATE schedules SET enabled = 0 WHERE id = $1")
                .bind(&id)
                .execute(&db.pool)
                .await?;
            continue;
        };
        let skip = row.get::<String, _>("misfire") == "skip" && now_ms - tick > SKIP_GRACE_MS;
        let mut tx = db.begin().await?;
        let won = sqlx::query(
            "UPDATE schedules SET next_run_at = $1, last_run_at = $2, updated_at = $3 \
             WHERE id = $4 AND next_run_at = $2 AND enabled = 1",
        )
        .bind(next)
        .bind(tick)
        .bind(now_ms)
        .bind(&id)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if won && !skip {
            let mut payload: Value =
                serde_json::from_str(&row.get::<String, _>("payload")).unwrap_or(Value::Null);
            if let Value::Object(m) = &mut payload {
                m.insert(
                    "scheduled_for".into(),
                    Value::from(crate::clock::rfc3339(tick)),
                );
            }
            let mut job = NewJob::new(row.get::<String, _>("kind"), payload)
                .dedupe(format!("schedule:{id}:{tick}"))
                .at(now_ms);
            job.org_id = row.get("org_id");
            super::enqueue(&mut tx, now_ms, job)
                .await
                .map_err(|e| sqlx::Error::Protocol(e.to_string()))?;
            fired += 1;
        }
        tx.commit().await?;
    }
    Ok(fired)
}

/// Queues each schedule of `kind` (of `org_id`'s schedules, or of every organisation's
/// when `None`) to run now, outside its timing, with its own payload: `closeloop jobs
/// run-now` and `POST /api/v1/jobs/run-now`. The schedule's next tick stays as it was. Each
/// job is audited as `job.run_now` in its enqueueing transaction. Returns the jobs' ids; an
/// unknown kind is refused with the kinds there are, and queues nothing.
pub async fn run_now(
    db: &Db,
    now_ms: i64,
    org_id: Option<&str>,
    kind: &str,
    actor: &crate::access::Actor,
) -> Result<Vec<String>> {
    let of_org = if org_id.is_some() {
        " AND org_id = $2"
    } else {
        ""
    };
    let mut tx = db.begin().await?;
    let sql =
        format!("SELECT id, org_id, payload FROM schedules WHERE kind = $1{of_org} ORDER BY id");
    let mut query = sqlx::query(&sql).bind(kind);
    if let Some(o) = org_id {
        query = query.bind(o);
    }
    let schedules = query.fetch_all(&mut *tx).await?;
    if schedules.is_empty() {
        let sql =
            format!("SELECT DISTINCT kind FROM schedules WHERE kind <> $1{of_org} ORDER BY kind");
        let mut known = sqlx::query(&sql).bind(kind);
        if let Some(o) = org_id {
            known = known.bind(o);
        }
        let known: Vec<String> = known
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|r| r.get("kind"))
            .collect();
        let shown: String = kind.chars().take(64).collect();
        return Err(Error::invalid(format!(
            "`{shown}` is not a scheduled job kind; scheduled kinds: {}",
            known.join(", ")
        )));
    }
    let mut ids = Vec::new();
    for row in schedules {
        let schedule: String = row.get("id");
        let job_org: Option<String> = row.get("org_id");
        let payload: Value =
            serde_json::from_str(&row.get::<String, _>("payload")).unwrap_or(Value::Null);
        let mut job = NewJob::new(kind, payload).at(now_ms);
        job.org_id = job_org.clone();
        let id = super::enqueue(&mut tx, now_ms, job).await?.ok_or_else(|| {
            Error::Internal(anyhow::anyhow!("a job without a dedupe key was refused"))
        })?;
        crate::access::audit::record(
            &mut tx,
            now_ms,
            crate::access::audit::AuditEntry {
                org_id: job_org.as_deref(),
                actor_kind: actor.kind,
                actor_id: actor.id.as_deref(),
                action: "job.run_now",
                target_kind: Some("job"),
                target_id: Some(&id),
                detail: serde_json::json!({"kind": kind, "schedule": schedule}),
            },
        )
        .await?;
        ids.push(id);
    }
    tx.commit().await?;
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monday_eight_in_shanghai() {
        // 2026-11-27 is a Friday; the next Monday 08:00 +08:00 is 2026-11-30T00:00Z.
        let now = chrono::DateTime::parse_from_rfc3339("2026-11-27T10:00:00+08:00").unwrap();
        let next = next_after(
            &Every::Cron("0 8 * * MON".into()),
            chrono_tz::Asia::Shanghai,
            now.timestamp_millis(),
        )
        .unwrap();
        assert_eq!(crate::clock::rfc3339(next), "2026-11-30T00:00:00.000Z");
    }

    #[test]
    fn intervals_align_to_the_epoch() {
        let ten = Every::Interval(Duration::from_secs(600));
        let next = next_after(&ten, chrono_tz::UTC, 1_000_000_123).unwrap();
        assert_eq!(next % 600_000, 0);
        assert!(next > 1_000_000_123 && next - 1_000_000_123 <= 600_000);
        assert!(next_after(&Every::Cron("not cron".into()), chrono_tz::UTC, 0).is_err());
    }
}
