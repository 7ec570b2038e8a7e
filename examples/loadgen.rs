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
//! With `--read` it instead sends `GET /api/v1/customers/{id}` for that customer (the
//! access log's bench, `benches/access_log.sh`).
//!
//! With `--wecom-corp`, `--wecom-token` and `--wecom-key` it instead POSTs WeCom
//! callbacks to `/callback/wecom`: each a distinct text message, encrypted and signed as
//! WeCom does, acknowledged only after the inbox commit. Likewise DingTalk pushes
//! (`--dingtalk-app-key`, `--dingtalk-token`, `--dingtalk-aes-key`: each a distinct
//! `eventId`, answered with the encrypted `success`) and Feishu events
//! (`--feishu-encrypt-key`, `--feishu-token`: each a distinct `event_id`, encrypted and
//! signed with `X-Lark-Signature`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use closeloop::platform::crypto::EncodingAesKey;
use closeloop::platform::dingtalk::crypto::DingtalkCrypto;
use closeloop::platform::feishu::crypto::FeishuCrypto;
use closeloop::platform::wecom::crypto::WecomCrypto;
use serde_json::{json, Value};

#[derive(Parser, Debug)]
struct Args {
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    #[arg(long, env = "LOADGEN_KEY", default_value = "")]
    key: String,
    /// WeCom mode: the server's `[wecom] corp_id`.
    #[arg(long)]
    wecom_corp: Option<String>,
    #[arg(long, default_value = "")]
    wecom_token: String,
    #[arg(long, default_value = "")]
    wecom_key: String,
    /// DingTalk mode: the server's `[dingtalk] app_key` (the owner key of the pushes).
    #[arg(long)]
    dingtalk_app_key: Option<String>,
    #[arg(long, default_value = "")]
    dingtalk_token: String,
    #[arg(long, default_value = "")]
    dingtalk_aes_key: String,
    /// Feishu mode: the server's `[feishu] encrypt_key`.
    #[arg(long)]
    feishu_encrypt_key: Option<String>,
    /// The server's `[feishu] verification_token`.
    #[arg(long, default_value = "")]
    feishu_token: String,
    /// Read mode: `GET /api/v1/customers/{id}` of the customer it created.
    #[arg(long)]
    read: bool,
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
    let errors = Arc::new(AtomicU64::new(0));
    let target = Target::new(&client, &args).await?;
    let send = {
        let client = client.clone();
        let errors = errors.clone();
        let target = Arc::new(target);
        move || {
            let req = target.request(&client);
            let errors = errors.clone();
            async move {
                match req.send().await {
                    Ok(r) if r.status().is_success() => true,
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
        "{mode}: {} ok in {elapsed:.1} s = {:.0} {}/s; latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; errors {}",
        latencies.len(),
        latencies.len() as f64 / elapsed,
        if args.read { "requests" } else { "events" },
        pct(0.50),
        pct(0.99),
        pct(1.0),
        errors.load(Ordering::Relaxed)
    );
    Ok(())
}

/// What each request is: a tracking point through the API, or a WeCom callback.
enum Target {
    Events {
        url: String,
        key: String,
        body: String,
    },
    Read {
        url: String,
        key: String,
    },
    Wecom {
        url: String,
        corp: String,
        crypto: Box<WecomCrypto>,
        seq: AtomicU64,
    },
    Dingtalk {
        url: String,
        crypto: Box<DingtalkCrypto>,
        seq: AtomicU64,
    },
    Feishu {
        url: String,
        token: String,
        crypto: Box<FeishuCrypto>,
        seq: AtomicU64,
    },
}

impl Target {
    async fn new(client: &reqwest::Client, args: &Args) -> anyhow::Result<Target> {
        if let Some(corp) = &args.wecom_corp {
            let key = EncodingAesKey::parse(&args.wecom_key)
                .map_err(|e| anyhow::anyhow!("--wecom-key: {e}"))?;
            return Ok(Target::Wecom {
                url: format!("{}/callback/wecom", args.url),
                corp: corp.clone(),
                crypto: Box::new(WecomCrypto::new(
                    args.wecom_token.as_str(),
                    key,
                    corp.clone(),
                )),
                seq: AtomicU64::new(rand::random::<u32>() as u64 * 1_000_000_000),
            });
        }
        let seq = || AtomicU64::new(rand::random::<u32>() as u64 * 1_000_000_000);
        if let Some(app_key) = &args.dingtalk_app_key {
            let key = EncodingAesKey::parse(&args.dingtalk_aes_key)
                .map_err(|e| anyhow::anyhow!("--dingtalk-aes-key: {e}"))?;
            return Ok(Target::Dingtalk {
                url: format!("{}/callback/dingtalk", args.url),
                crypto: Box::new(DingtalkCrypto::new(
                    args.dingtalk_token.as_str(),
                    key,
                    app_key.clone(),
                )),
                seq: seq(),
            });
        }
        if let Some(encrypt_key) = &args.feishu_encrypt_key {
            return Ok(Target::Feishu {
                url: format!("{}/callback/feishu", args.url),
                token: args.feishu_token.clone(),
                crypto: Box::new(
                    FeishuCrypto::new(encrypt_key)
                        .map_err(|e| anyhow::anyhow!("--feishu-encrypt-key: {e}"))?,
                ),
                seq: seq(),
            });
        }
        let (actor, customer) = setup(client, args).await?;
        if args.read {
            return Ok(Target::Read {
                url: format!("{}/api/v1/customers/{customer}", args.url),
                key: format!("Bearer {}", args.key),
            });
        }
        Ok(Target::Events {
            url: format!("{}/api/v1/events", args.url),
            key: format!("Bearer {}", args.key),
            body: json!({"actor": actor, "customer": customer, "action": "拜访记录", "payload": {"bench": true}})
                .to_string(),
        })
    }

    fn request(&self, client: &reqwest::Client) -> reqwest::RequestBuilder {
        match self {
            Target::Events { url, key, body } => client
                .post(url)
                .header("authorization", key)
                .header("content-type", "application/json")
                .body(body.clone()),
            Target::Read { url, key } => client.get(url).header("authorization", key),
            Target::Wecom {
                url,
                corp,
                crypto,
                seq,
            } => {
                let n = seq.fetch_add(1, Ordering::Relaxed);
                let ts = chrono::Utc::now().timestamp();
                let plain = format!(
                    "<xml><ToUserName><![CDATA[{corp}]]></ToUserName><FromUserName><![CDATA[liming]]></FromUserName>\
                     <CreateTime>{ts}</CreateTime><MsgType><![CDATA[text]]></MsgType>\
                     <Content><![CDATA[客户提出价格异议，希望下周安排技术交流。]]></Content><MsgId>{n}</MsgId>\
                     <AgentID>1000002</AgentID></xml>"
                );
                let encrypted = crypto.encrypt_random(&plain);
                let sig = crypto.signature(&ts.to_string(), "1372623149", &encrypted);
                client
                    .post(format!("{url}?msg_signature={sig}&timestamp={ts}&nonce=1372623149"))
                    .body(format!("<xml><ToUserName><![CDATA[{corp}]]></ToUserName><Encrypt><![CDATA[{encrypted}]]></Encrypt></xml>"))
            }
            Target::Dingtalk { url, crypto, seq } => {
                // An approval-task change: stored once by its eventId, not acted on.
                let n = seq.fetch_add(1, Ordering::Relaxed);
                let ms = chrono::Utc::now().timestamp_millis();
                let plain = json!({"EventType": "bpms_task_change", "EventTime": ms,
                    "eventId": format!("bench{n}"), "processInstanceId": format!("pi{n}"),
                    "type": "finish", "result": "agree"})
                .to_string();
                let encrypted = crypto.encrypt_random(&plain);
                let sig = crypto.signature(&ms.to_string(), "WL4PK6yA", &encrypted);
                client
                    .post(format!(
                        "{url}?signature={sig}&timestamp={ms}&nonce=WL4PK6yA"
                    ))
                    .header("content-type", "application/json")
                    .body(json!({ "encrypt": encrypted }).to_string())
            }
            Target::Feishu {
                url,
                token,
                crypto,
                seq,
            } => {
                // A message to the bot: stored once by its event_id, not acted on.
                let n = seq.fetch_add(1, Ordering::Relaxed);
                let ts = chrono::Utc::now().timestamp();
                let plain = json!({"schema": "2.0",
                    "header": {"event_id": format!("bench{n}"), "event_type": "im.message.receive_v1",
                               "create_time": (ts * 1000).to_string(), "token": token,
                               "app_id": "cli_bench", "tenant_key": "bench"},
                    "event": {"sender": {"sender_id": {"user_id": "liming"}},
                              "message": {"message_id": format!("om_{n}"), "message_type": "text",
                                          "content": "{\"text\":\"客户提出价格异议\"}"}}})
                .to_string();
                let body = json!({ "encrypt": crypto.encrypt_random(&plain) }).to_string();
                let sig = crypto.signature(&ts.to_string(), "n0nce", body.as_bytes());
                client
                    .post(url)
                    .header("content-type", "application/json")
                    .header("X-Lark-Request-Timestamp", ts.to_string())
                    .header("X-Lark-Request-Nonce", "n0nce")
                    .header("X-Lark-Signature", sig)
                    .body(body)
            }
        }
    }
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
