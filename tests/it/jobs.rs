//! Durable jobs: transactional enqueue, leases and fencing, retries, dead jobs,
//! ordering keys, schedules, concurrent claiming.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use closeloop::access::ApiKeyRole;
use closeloop::clock::{Clock, SharedClock};
use closeloop::db::{Db, Tx};
use closeloop::jobs::schedule::{self, Every, Misfire, ScheduleSpec};
use closeloop::jobs::worker::Outcome;
use closeloop::jobs::{
    self, BoxFuture, ClaimedJob, Handler, JobError, NewJob, Registry, RetryPolicy, Worker,
    WorkerConfig,
};
use serde_json::{json, Value};

use crate::helpers::{error_code, spawn_app, ManualClock};

const T0: i64 = 1_800_000_000_000;

/// What the test handler does on each run of a job, by payload `"script"`:
/// a list of outcomes consumed one per run; past its end, success.
#[derive(Default)]
struct Scripted {
    runs: Mutex<Vec<String>>,
    refreshed: AtomicUsize,
    per_job: Mutex<HashMap<String, usize>>,
}

struct TestHandler(Arc<Scripted>);

impl Handler for TestHandler {
    fn perform<'a>(&'a self, job: &'a ClaimedJob) -> BoxFuture<'a, Result<Value, JobError>> {
        Box::pin(async move {
            let n = {
                let mut per = self.0.per_job.lock().unwrap();
                let c = per.entry(job.id.clone()).or_default();
                *c += 1;
                *c
            };
            self.0
                .runs
                .lock()
                .unwrap()
                .push(job.payload["name"].as_str().unwrap_or("").to_string());
            let script = job.payload["script"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            match script.get(n - 1).and_then(|v| v.as_str()) {
                Some("retry") => Err(JobError::Retry("boom".into())),
                Some("giveup") => Err(JobError::GiveUp("bad request".into())),
                Some("ratelimit") => Err(JobError::RateLimited {
                    retry_after: Some(Duration::from_secs(60)),
                    message: "45009".into(),
                }),
                Some("refresh") => Err(JobError::RefreshCredentials("42001".into())),
                _ => Ok(json!({"ok": n})),
            }
        })
    }

    fn apply<'a>(
        &'a self,
        tx: &'a mut Tx,
        job: &'a ClaimedJob,
        _out: &'a Value,
    ) -> BoxFuture<'a, Result<(), JobError>> {
        Box::pin(async move {
            if job.payload["apply_fails_once"] == true && job.attempt == 1 {
                // A failing statement: on PostgreSQL it aborts the surrounding transaction.
                sqlx::query("INSERT INTO no_such_table VALUES (1)")
                    .execute(&mut **tx)
                    .await?;
            }
            sqlx::query("INSERT INTO test_effects (job_id) VALUES ($1)")
                .bind(&job.id)
                .execute(&mut **tx)
                .await?;
            Ok(())
        })
    }

    fn refresh_credentials<'a>(&'a self, _job: &'a ClaimedJob) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            self.0.refreshed.fetch_add(1, Ordering::SeqCst);
        })
    }

    fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy {
            base: Duration::from_secs(10),
            cap: Duration::from_secs(600),
            max_attempts: 3,
        }
    }
}

/// Built-in schedules (housekeeping) would fire too when tests move time far ahead.
async fn only_test_schedules(db: &Db) {
    sqlx::query("UPDATE schedules SET enabled = 0")
        .execute(&db.pool)
        .await
        .unwrap();
}

async fn effects_table(db: &Db) {
    sqlx::query("CREATE TABLE test_effects (job_id TEXT NOT NULL)")
        .execute(&db.pool)
        .await
        .unwrap();
}

fn worker(db: &Db, clock: SharedClock, script: Arc<Scripted>, owner: &str) -> Worker {
    let mut registry = Registry::new();
    registry.register("test.job", TestHandler(script));
    Worker::new(
        db.clone(),
        clock,
        registry,
        WorkerConfig {
            concurrency: 4,
            lease: Duration::from_secs(30),
            timeout: Duration::from_secs(10),
            poll_interval: Duration::from_millis(20),
            owner: owner.into(),
        },
    )
}

async fn status_of(db: &Db, id: &str) -> (String, i64, i64, Option<String>) {
    sqlx::query_as("SELECT status, attempts, run_at, last_error FROM jobs WHERE id = $1")
        .bind(id)
        .fetch_one(&db.pool)
        .await
        .unwrap()
}

async fn effects(db: &Db, id: &str) -> i64 {
    let (n,): (i64,) =
        sqlx::query_as("SELECT CAST(COUNT(*) AS BIGINT) FROM test_effects WHERE job_id = $1")
            .bind(id)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    n
}

#[tokio::test]
async fn a_job_exists_only_if_its_transaction_commits() {
    let app = spawn_app().await;
    let mut tx = app.db.begin().await.unwrap();
    jobs::enqueue(&mut tx, T0, NewJob::new("test.job", json!({})))
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    assert_eq!(app.count("jobs WHERE kind = 'test.job'").await, 0);
    let mut tx = app.db.begin().await.unwrap();
    jobs::enqueue(&mut tx, T0, NewJob::new("test.job", json!({})).dedupe("k1"))
        .await
        .unwrap();
    let again = jobs::enqueue(&mut tx, T0, NewJob::new("test.job", json!({})).dedupe("k1"))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert!(again.is_none(), "a taken dedupe key must enqueue nothing");
    assert_eq!(app.count("jobs WHERE kind = 'test.job'").await, 1);
}

#[tokio::test]
async fn failures_back_off_then_die_and_can_be_redriven() {
    let app = spawn_app().await;
    effects_table(&app.db).await;
    let clock = ManualClock::new(T0);
    let script = Arc::new(Scripted::default());
    let w = worker(&app.db, clock.clone(), script.clone(), "w1");
    let id = jobs::enqueue_now(
        &app.db,
        T0,
        NewJob::new(
            "test.job",
            json!({"name": "a", "script": ["retry", "retry", "retry", "ok"]}),
        )
        .org(&app.org_id)
        .max_attempts(3),
    )
    .await
    .unwrap()
    .unwrap();

    assert_eq!(w.run_once().await.unwrap(), 1);
    let (status, attempts, run_at, err) = status_of(&app.db, &id).await;
    assert_eq!((status.as_str(), attempts), ("queued", 1));
    assert!(
        (T0 + 10_000..=T0 + 12_500).contains(&run_at),
        "first retry after base delay + jitter"
    );
    assert_eq!(err.as_deref(), Some("boom"));
    assert_eq!(w.run_once().await.unwrap(), 0, "not due before its backoff");

    clock.advance(Duration::from_secs(13));
    assert_eq!(w.run_once().await.unwrap(), 1);
    let (_, _, run_at2, _) = status_of(&app.db, &id).await;
    assert!(
        run_at2 - clock.now_ms() >= 20_000,
        "second retry waits twice the base"
    );
    clock.advance(Duration::from_secs(30));
    assert_eq!(w.run_once().await.unwrap(), 1);
    let (status, attempts, _, err) = status_of(&app.db, &id).await;
    assert_eq!(
        (status.as_str(), attempts, err.as_deref()),
        ("dead", 3, Some("boom"))
    );
    clock.advance(Duration::from_secs(3600));
    assert_eq!(w.run_once().await.unwrap(), 0, "dead jobs stay dead");
    assert_eq!(effects(&app.db, &id).await, 0);

    // The admin API shows and re-drives it; a read-only key may not.
    let listed: Value = app
        .get("/api/v1/jobs?status=dead")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed["items"][0]["id"], id.as_str());
    assert_eq!(listed["items"][0]["payload"]["name"], "a");
    let ro = app.key_with_role(ApiKeyRole::ReadOnly).await;
    let res = app
        .client
        .post(app.url(&format!("/api/v1/jobs/{id}/retry")))
        .bearer_auth(ro)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    let res = app
        .post(&format!("/api/v1/jobs/{id}/retry"), &json!({}))
        .await;
    assert_eq!(res.status(), 200);
    let (status, code, _) = error_code(
        app.post(&format!("/api/v1/jobs/{id}/retry"), &json!({}))
            .await,
    )
    .await;
    assert_eq!((status, code.as_str()), (409, "conflict"));

    // Re-driven at the server's (real) time, which is before our manual clock.
    assert_eq!(w.run_once().await.unwrap(), 1);
    assert_eq!(status_of(&app.db, &id).await.0, "done");
    assert_eq!(effects(&app.db, &id).await, 1);
}

#[tokio::test]
async fn give_up_rate_limits_and_credential_refresh() {
    let app = spawn_app().await;
    effects_table(&app.db).await;
    let clock = ManualClock::new(T0);
    let script = Arc::new(Scripted::default());
    let w = worker(&app.db, clock.clone(), script.clone(), "w1");
    let give_up = jobs::enqueue_now(
        &app.db,
        T0,
        NewJob::new("test.job", json!({"script": ["giveup"]})),
    )
    .await
    .unwrap()
    .unwrap();
    let limited = jobs::enqueue_now(
        &app.db,
        T0,
        NewJob::new(
            "test.job",
            json!({"script": ["ratelimit", "ratelimit", "ratelimit", "ratelimit"]}),
        )
        .max_attempts(2),
    )
    .await
    .unwrap()
    .unwrap();
    let refresh = jobs::enqueue_now(
        &app.db,
        T0,
        NewJob::new("test.job", json!({"script": ["refresh"]})),
    )
    .await
    .unwrap()
    .unwrap();
    w.run_once().await.unwrap();
    assert_eq!(status_of(&app.db, &give_up).await.0, "dead");
    assert_eq!(status_of(&app.db, &refresh).await.0, "done");
    assert_eq!(script.refreshed.load(Ordering::SeqCst), 1);
    assert_eq!(
        script.per_job.lock().unwrap()[&refresh],
        2,
        "one immediate retry after the refresh"
    );

    // The first run above was rate limited; four more runs: three limited, then success.
    for _ in 0..4 {
        let (status, attempts, run_at, _) = status_of(&app.db, &limited).await;
        assert_eq!(
            (status.as_str(), attempts),
            ("queued", 0),
            "rate limits only delay"
        );
        assert!(run_at >= clock.now_ms() + 60_000 || run_at == T0);
        clock.set(run_at.max(clock.now_ms()));
        w.run_once().await.unwrap();
    }
    assert_eq!(
        status_of(&app.db, &limited).await.0,
        "done",
        "never dead from rate limits alone"
    );
}

#[tokio::test]
async fn a_worker_that_lost_its_lease_cannot_finish_the_job() {
    let app = spawn_app().await;
    effects_table(&app.db).await;
    let clock = ManualClock::new(T0);
    let script = Arc::new(Scripted::default());
    let stale = worker(&app.db, clock.clone(), script.clone(), "stale");
    let fresh = worker(&app.db, clock.clone(), script.clone(), "fresh");
    let id = jobs::enqueue_now(&app.db, T0, NewJob::new("test.job", json!({})))
        .await
        .unwrap()
        .unwrap();

    let mut held = stale.claim(1).await.unwrap();
    assert_eq!(held.len(), 1);
    assert!(
        fresh.claim(1).await.unwrap().is_empty(),
        "a leased job is not claimed twice"
    );
    clock.advance(Duration::from_secs(31));
    let mut taken = fresh.claim(1).await.unwrap();
    assert_eq!(taken.len(), 1, "an expired lease is claimed again");
    assert!(taken[0].lease_token > held[0].lease_token);

    assert_eq!(stale.run_job(held.pop().unwrap()).await, Outcome::LostLease);
    assert_eq!(
        effects(&app.db, &id).await,
        0,
        "the stale worker wrote nothing"
    );
    assert_eq!(fresh.run_job(taken.pop().unwrap()).await, Outcome::Done);
    assert_eq!(effects(&app.db, &id).await, 1);
    assert_eq!(status_of(&app.db, &id).await.0, "done");
}

#[tokio::test]
async fn jobs_with_one_ordering_key_run_one_at_a_time_in_order() {
    let app = spawn_app().await;
    effects_table(&app.db).await;
    let clock = ManualClock::new(T0);
    let script = Arc::new(Scripted::default());
    let w = worker(&app.db, clock.clone(), script.clone(), "w1");
    // The first update of card X fails once; the later ones must wait for it.
    for (i, s) in [json!(["retry"]), json!([]), json!([]), json!([])]
        .into_iter()
        .enumerate()
    {
        jobs::enqueue_now(
            &app.db,
            T0,
            NewJob::new("test.job", json!({"name": format!("x{i}"), "script": s}))
                .ordered_by("card:X"),
        )
        .await
        .unwrap();
    }
    for i in 0..3 {
        jobs::enqueue_now(
            &app.db,
            T0,
            NewJob::new("test.job", json!({"name": format!("free{i}")})),
        )
        .await
        .unwrap();
    }
    let claimed = w.claim(10).await.unwrap();
    let keyed = claimed.iter().filter(|j| j.ordering_key.is_some()).count();
    assert_eq!(
        (claimed.len(), keyed),
        (4, 1),
        "only the head of a key is claimable"
    );
    for j in claimed {
        w.run_job(j).await;
    }
    assert_eq!(
        w.run_once().await.unwrap(),
        0,
        "x1..x3 wait behind x0's retry"
    );
    clock.advance(Duration::from_secs(15));
    w.drain().await.unwrap();
    let runs = script.runs.lock().unwrap().clone();
    let xs: Vec<&String> = runs.iter().filter(|r| r.starts_with('x')).collect();
    assert_eq!(xs, ["x0", "x0", "x1", "x2", "x3"]);
}

#[tokio::test]
async fn concurrent_workers_never_run_a_job_twice() {
    let app = spawn_app().await;
    effects_table(&app.db).await;
    let clock: SharedClock = Arc::new(closeloop::clock::SystemClock);
    let script = Arc::new(Scripted::default());
    let mut tx = app.db.begin().await.unwrap();
    for i in 0..300 {
        jobs::enqueue(
            &mut tx,
            clock.now_ms(),
            NewJob::new("test.job", json!({"name": format!("j{i}")})),
        )
        .await
        .unwrap();
    }
    tx.commit().await.unwrap();
    // Three workers on separate connection pools, as separate processes would be.
    let mut handles = Vec::new();
    for n in 0..3 {
        let db = Db::connect(&app.database_url).await.unwrap();
        let w = worker(&db, clock.clone(), script.clone(), &format!("w{n}"));
        handles.push(tokio::spawn(async move { w.drain().await.unwrap() }));
    }
    let mut total = 0;
    for h in handles {
        total += h.await.unwrap();
    }
    assert_eq!(total, 300);
    let per = script.per_job.lock().unwrap().clone();
    assert_eq!(per.len(), 300);
    assert!(per.values().all(|&c| c == 1), "a job ran twice");
    assert_eq!(app.count("test_effects").await, 300);
    assert_eq!(
        app.count("jobs WHERE kind = 'test.job' AND status = 'done'")
            .await,
        300
    );
}

#[tokio::test]
async fn a_schedule_fires_once_per_tick_across_replicas_and_collapses_missed_ticks() {
    let app = spawn_app().await;
    let spec = |id: &str, misfire| ScheduleSpec {
        id: id.into(),
        org_id: Some(app.org_id.clone()),
        kind: "test.job".into(),
        payload: json!({"name": id}),
        every: Every::Interval(Duration::from_secs(600)),
        timezone: chrono_tz::Asia::Shanghai,
        misfire,
    };
    only_test_schedules(&app.db).await;
    let start = T0 - T0 % 600_000;
    schedule::upsert(&app.db, start, &spec("poll", Misfire::Once))
        .await
        .unwrap();
    schedule::upsert(&app.db, start, &spec("strict", Misfire::Skip))
        .await
        .unwrap();
    // Two replicas (separate pools) race on every tick.
    let a = Db::connect(&app.database_url).await.unwrap();
    let b = Db::connect(&app.database_url).await.unwrap();
    for tick in 1..=20 {
        let at = start + tick * 600_000 + 5;
        let (x, y) = tokio::join!(schedule::fire_due(&a, at), schedule::fire_due(&b, at));
        assert_eq!(
            x.unwrap() + y.unwrap(),
            2,
            "tick {tick}: each schedule fires exactly once"
        );
    }
    assert_eq!(app.count("jobs WHERE kind = 'test.job'").await, 40);
    // Downtime of ten ticks: `once` runs one catch-up job, `skip` none.
    let late = start + 30 * 600_000 + 5;
    let fired = schedule::fire_due(&a, late).await.unwrap();
    assert_eq!(fired, 1);
    assert_eq!(
        app.count("jobs WHERE kind = 'test.job' AND payload LIKE '%\"name\":\"poll\"%'")
            .await,
        21
    );
    assert_eq!(
        schedule::fire_due(&a, late).await.unwrap(),
        0,
        "nothing left due"
    );
    let (next,): (i64,) = sqlx::query_as("SELECT next_run_at FROM schedules WHERE id = 'strict'")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(next, start + 31 * 600_000);
}

#[tokio::test]
async fn a_cron_schedule_follows_the_org_time_zone() {
    let app = spawn_app().await;
    only_test_schedules(&app.db).await;
    // Friday 2026-11-27 10:00 in Shanghai.
    let now = chrono::DateTime::parse_from_rfc3339("2026-11-27T10:00:00+08:00")
        .unwrap()
        .timestamp_millis();
    schedule::upsert(
        &app.db,
        now,
        &ScheduleSpec {
            id: "weekly".into(),
            org_id: Some(app.org_id.clone()),
            kind: "test.job".into(),
            payload: json!({}),
            every: Every::Cron("0 8 * * MON".into()),
            timezone: chrono_tz::Asia::Shanghai,
            misfire: Misfire::Once,
        },
    )
    .await
    .unwrap();
    let monday_8 = chrono::DateTime::parse_from_rfc3339("2026-11-30T08:00:00+08:00")
        .unwrap()
        .timestamp_millis();
    assert_eq!(schedule::fire_due(&app.db, monday_8 - 1).await.unwrap(), 0);
    assert_eq!(schedule::fire_due(&app.db, monday_8).await.unwrap(), 1);
    let (next,): (i64,) = sqlx::query_as("SELECT next_run_at FROM schedules WHERE id = 'weekly'")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(next - monday_8, 7 * 24 * 3600 * 1000);
}

#[tokio::test]
async fn one_failing_completion_does_not_undo_its_batch_neighbours() {
    let app = spawn_app().await;
    effects_table(&app.db).await;
    let clock = ManualClock::new(T0);
    let script = Arc::new(Scripted::default());
    let w = worker(&app.db, clock.clone(), script.clone(), "w1");
    let mut ids = Vec::new();
    for i in 0..4 {
        let id = jobs::enqueue_now(
            &app.db,
            T0,
            NewJob::new(
                "test.job",
                json!({"name": format!("n{i}"), "apply_fails_once": i == 1}),
            ),
        )
        .await
        .unwrap()
        .unwrap();
        ids.push(id);
    }
    assert_eq!(w.run_once().await.unwrap(), 4);
    for (i, id) in ids.iter().enumerate() {
        let (status, ..) = status_of(&app.db, id).await;
        let expected = if i == 1 { "queued" } else { "done" };
        assert_eq!(status, expected, "job {i}");
        assert_eq!(effects(&app.db, id).await, i64::from(i != 1));
    }
    clock.advance(Duration::from_secs(15));
    assert_eq!(w.run_once().await.unwrap(), 1);
    assert_eq!(status_of(&app.db, &ids[1]).await.0, "done");
    assert_eq!(effects(&app.db, &ids[1]).await, 1);
}
