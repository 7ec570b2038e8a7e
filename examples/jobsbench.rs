//! Durable-jobs benchmark (see BENCHMARKS.md).
//!
//! `jobsbench throughput --database URL --jobs N --processes K` enqueues N due jobs, starts
//! K worker processes (this binary with `work`), and reports jobs completed per second.
//! `jobsbench timers --database URL --jobs N --window-seconds W --processes K` enqueues N
//! timers due within the next W seconds and reports how late they started (p50/p99).
//! Each job's `apply` records its start in `bench_runs` inside the fenced completing
//! transaction, so the run also checks that every job ran exactly once.

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use closeloop::clock::{Clock, SystemClock};
use closeloop::db::{Db, Tx};
use closeloop::jobs::{
    self, BoxFuture, ClaimedJob, Handler, JobError, NewJob, Registry, Worker, WorkerConfig,
};
use serde_json::{json, Value};

#[derive(Parser)]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    Throughput {
        #[arg(long)]
        database: String,
        #[arg(long, default_value_t = 20_000)]
        jobs: usize,
        #[arg(long, default_value_t = 1)]
        processes: usize,
    },
    Timers {
        #[arg(long)]
        database: String,
        #[arg(long, default_value_t = 100_000)]
        jobs: usize,
        #[arg(long, default_value_t = 60)]
        window_seconds: u64,
        #[arg(long, default_value_t = 1)]
        processes: usize,
    },
    /// A worker process: runs until nothing is left.
    Work {
        #[arg(long)]
        database: String,
    },
}

struct Record;

impl Handler for Record {
    fn perform<'a>(&'a self, _job: &'a ClaimedJob) -> BoxFuture<'a, Result<Value, JobError>> {
        Box::pin(async { Ok(json!({"started": SystemClock.now_ms()})) })
    }

    fn apply<'a>(
        &'a self,
        tx: &'a mut Tx,
        job: &'a ClaimedJob,
        out: &'a Value,
    ) -> BoxFuture<'a, Result<(), JobError>> {
        Box::pin(async move {
            sqlx::query("INSERT INTO bench_runs (job_id, due, started) VALUES ($1, $2, $3)")
                .bind(&job.id)
                .bind(job.run_at_ms)
                .bind(out["started"].as_i64().unwrap_or_default())
                .execute(&mut **tx)
                .await?;
            Ok(())
        })
    }
}

async fn prepare(database: &str) -> anyhow::Result<Db> {
    let db = Db::connect(database).await?;
    db.migrate().await?;
    sqlx::query("DROP TABLE IF EXISTS bench_runs")
        .execute(&db.pool)
        .await?;
    sqlx::query("CREATE TABLE bench_runs (job_id TEXT NOT NULL, due BIGINT NOT NULL, started BIGINT NOT NULL)")
        .execute(&db.pool)
        .await?;
    sqlx::query("DELETE FROM jobs WHERE kind = 'bench.record'")
        .execute(&db.pool)
        .await?;
    Ok(db)
}

async fn enqueue(db: &Db, n: usize, due: impl Fn(usize) -> i64) -> anyhow::Result<()> {
    let now = SystemClock.now_ms();
    for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
        let mut tx = db.begin().await?;
        for &i in chunk {
            jobs::enqueue(
                &mut tx,
                now,
                NewJob::new("bench.record", json!({"i": i})).at(due(i)),
            )
            .await?;
        }
        tx.commit().await?;
    }
    Ok(())
}

fn spawn_workers(database: &str, k: usize) -> anyhow::Result<Vec<std::process::Child>> {
    let exe = std::env::current_exe()?;
    (0..k)
        .map(|_| {
            Command::new(&exe)
                .args(["work", "--database", database])
                .spawn()
                .map_err(Into::into)
        })
        .collect()
}

async fn verify(db: &Db, n: usize) -> anyhow::Result<Vec<i64>> {
    let rows: Vec<(String, i64, i64)> =
        sqlx::query_as("SELECT job_id, due, started FROM bench_runs")
            .fetch_all(&db.pool)
            .await?;
    let distinct: std::collections::HashSet<&String> = rows.iter().map(|r| &r.0).collect();
    anyhow::ensure!(
        rows.len() == n && distinct.len() == n,
        "ran {} times for {} distinct of {n} jobs",
        rows.len(),
        distinct.len()
    );
    Ok(rows.iter().map(|r| (r.2 - r.1).max(0)).collect())
}

fn percentile(sorted: &[i64], p: f64) -> i64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Args::parse().cmd {
        Cmd::Work { database } => {
            let db = Db::connect(&database).await?;
            let mut registry = Registry::new();
            registry.register("bench.record", Record);
            let worker = Worker::new(
                db.clone(),
                Arc::new(SystemClock),
                registry,
                WorkerConfig {
                    concurrency: 32,
                    ..WorkerConfig::default()
                },
            );
            let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
            let run = tokio::spawn(worker.run(stop_rx));
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                let (open,): (i64,) = sqlx::query_as(
                    "SELECT CAST(COUNT(*) AS BIGINT) FROM jobs WHERE kind = 'bench.record' AND status <> 'done'",
                )
                .fetch_one(&db.pool)
                .await?;
                if open == 0 {
                    break;
                }
            }
            let _ = stop_tx.send(true);
            run.await?;
        }
        Cmd::Throughput {
            database,
            jobs,
            processes,
        } => {
            let db = prepare(&database).await?;
            let now = SystemClock.now_ms();
            enqueue(&db, jobs, |_| now).await?;
            let start = Instant::now();
            for mut c in spawn_workers(&database, processes)? {
                c.wait()?;
            }
            let secs = start.elapsed().as_secs_f64();
            verify(&db, jobs).await?;
            println!(
                "throughput: {jobs} jobs, {processes} process(es): {secs:.2} s = {:.0} jobs/s (each exactly once)",
                jobs as f64 / secs
            );
        }
        Cmd::Timers {
            database,
            jobs,
            window_seconds,
            processes,
        } => {
            let db = prepare(&database).await?;
            let first_due = SystemClock.now_ms() + 15_000;
            let window = window_seconds as i64 * 1000;
            enqueue(&db, jobs, |i| first_due + (i as i64 * window) / jobs as i64).await?;
            let wait = first_due - SystemClock.now_ms();
            anyhow::ensure!(wait > 0, "enqueueing took longer than the 15 s lead");
            for mut c in spawn_workers(&database, processes)? {
                c.wait()?;
            }
            let mut late = verify(&db, jobs).await?;
            late.sort_unstable();
            println!(
                "timers: {jobs} due within {window_seconds} s, {processes} process(es): lateness p50 {} ms, p99 {} ms, max {} ms (each exactly once)",
                percentile(&late, 0.5),
                percentile(&late, 0.99),
                late.last().copied().unwrap_or_default()
            );
        }
    }
    Ok(())
}
