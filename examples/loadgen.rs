//! Load generator for `POST /api/v1/events` on loopback (see BENCHMARKS.md).
//!
//! Two modes:
//! - closed loop (`--concurrency N`): N workers send back to back; measures throughput;
//! - open loop (`--rate R`): requests start on a fixed schedule whatever the answers do,
//!   and latency counts from the scheduled start, so a stall is not hidden
//!   (no coordinated omission).
//!
//! It creates its own rep and customer through the API, so it needs an admin or
//! integration key: `loadgen --url http://127.0.0.1:8080 --key clk_… --concurrency 64`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::{json, Value};

#[derive(Parser, Debug)]
struct Args {
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    #[arg(long, env = "LOADGEN_KEY")]
    key: String,
    /// Closed loop with this many concurrent workers.
    #[arg(long, conflicts_with = "rate")]
    concurrency: Option<usize>,
    /// Open loop at this many requests per second.
    #[arg(long)]
    rate: Option<u64>,
    /// Seconds of measurement (after a 2 s warm-up).
    #[arg(long, default_value_t = 10)]
    seconds: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(1024)
        .timeout(Duration::from_secs(30))
        .build()?;
    let (actor, customer) = setup(&client, &args).await?;
    let body = Arc::new(
        json!({"actor": actor, "customer": customer, "action": "已电话沟通", "payload": {"bench": true}})
            .to_string(),
    );
    let url = Arc::new(format!("{}/api/v1/events", args.url));
    let key = Arc::new(format!("Bearer {}", args.key));
    let errors = Arc::new(AtomicU64::new(0));

    let send = {
        let client = client.clone();
        let errors = errors.clone();
        move || {
            let req = client
                .post(url.as_str())
                .header("authorization", key.as_str())
                .header("content-type", "application/json")
                .body(body.as_str().to_owned());
            let errors = errors.clone();
            async move {
                match req.send().await {
                    Ok(r) if r.status().as_u16() == 201 => true,
                    _ => {
                        errors.fetch_add(1, Ordering::Relaxed);
                        false
                    }
                }
            }
        }
    };

    // Warm-up: open connections, fill caches.
    let warm_until = Instant::now() + Duration::from_secs(2);
    let mut warm = Vec::new();
    for _ in 0..32 {
        let send = send.clone();
        warm.push(tokio::spawn(async move {
            while Instant::now() < warm_until {
                send().await;
            }
        }));
    }
    for w in warm {
        w.await?;
    }
    errors.store(0, Ordering::Relaxed);

    let measure = Duration::from_secs(args.seconds);
    let start = Instant::now();
    let mut latencies: Vec<u64> = Vec::new();
    let mode;
    if let Some(rate) = args.rate {
        mode = format!("open loop, {rate}/s");
        let total = rate * args.seconds;
        let interval = Duration::from_secs_f64(1.0 / rate as f64);
        let mut tasks = Vec::with_capacity(total as usize);
        for i in 0..total {
            let due = start + interval * i as u32;
            tokio::time::sleep_until(due.into()).await;
            let send = send.clone();
            tasks.push(tokio::spawn(async move {
                let ok = send().await;
                (ok, due.elapsed().as_micros() as u64)
            }));
        }
        for t in tasks {
            let (ok, us) = t.await?;
            if ok {
                latencies.push(us);
            }
        }
    } else {
        let workers = args.concurrency.unwrap_or(64);
        mode = format!("closed loop, {workers} workers");
        let mut tasks = Vec::new();
        for _ in 0..workers {
            let send = send.clone();
            tasks.push(tokio::spawn(async move {
                let mut mine = Vec::new();
                while start.elapsed() < measure {
                    let t = Instant::now();
                    if send().await {
                        mine.push(t.elapsed().as_micros() as u64);
                    }
                }
                mine
            }));
        }
        for t in tasks {
            latencies.extend(t.await?);
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let pct = |p: f64| -> f64 {
        if latencies.is_empty() {
            return f64::NAN;
        }
        let i = ((latencies.len() as f64 - 1.0) * p).round() as usize;
        latencies[i] as f64 / 1000.0
    };
    println!(
        "{mode}: {} ok in {elapsed:.1} s = {:.0} events/s; latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; errors {}",
        latencies.len(),
        latencies.len() as f64 / elapsed,
        pct(0.50),
        pct(0.99),
        pct(1.0),
        errors.load(Ordering::Relaxed)
    );
    Ok(())
}

async fn setup(client: &reqwest::Client, args: &Args) -> anyhow::Result<(String, String)> {
    let post = |path: &str, body: Value| {
        client
            .post(format!("{}{path}", args.url))
            .bearer_auth(&args.key)
            .json(&body)
            .send()
    };
    let user: Value = post(
        "/api/v1/users",
        json!({"name": "压测销售", "roles": ["sales"]}),
    )
    .await?
    .error_for_status()?
    .json()
    .await?;
    let actor = user["id"].as_str().unwrap_or_default().to_string();
    let customer: Value = post(
        "/api/v1/customers",
        json!({"name": "压测客户", "owner": actor}),
    )
    .await?
    .error_for_status()?
    .json()
    .await?;
    Ok((
        actor,
        customer["id"].as_str().unwrap_or_default().to_string(),
    ))
}
