//! Webhooks: deliveries enqueued with the tracking point, signed, recorded once — also
//! across a `kill -9` of the server in the middle of the work.

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use closeloop::access::ApiKeyRole;
use serde_json::{json, Value};

use crate::helpers::{
    error_code, fresh_database, on_postgres, spawn_app, spawn_app_with, TEST_DATA_KEY,
};

/// One received request: delivery id, timestamp, signature, body.
type Received = (String, String, String, String);

#[derive(Clone, Default)]
struct Sink {
    seen: Arc<Mutex<Vec<Received>>>,
    delay: Duration,
}

async fn receive(State(sink): State<Sink>, headers: HeaderMap, body: String) -> StatusCode {
    tokio::time::sleep(sink.delay).await;
    let h = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    sink.seen.lock().unwrap().push((
        h("x-closeloop-delivery"),
        h("x-closeloop-timestamp"),
        h("x-closeloop-signature"),
        body,
    ));
    StatusCode::OK
}

/// The `[webhooks]` section that lets deliveries reach the local receiver at `url`.
fn allow_private(url: &str) -> String {
    let at = reqwest::Url::parse(url).unwrap();
    format!(
        "[webhooks]\nallow_private = [\"{}:{}\"]\n",
        at.host_str().unwrap(),
        at.port().unwrap()
    )
}

async fn start_sink(delay: Duration) -> (String, Sink) {
    let sink = Sink {
        delay,
        ..Sink::default()
    };
    let app = Router::new()
        .route("/hook", post(receive))
        .with_state(sink.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, sink)
}

#[tokio::test]
async fn a_tracking_point_is_delivered_signed_and_recorded_once() {
    let (url, sink) = start_sink(Duration::ZERO).await;
    let app = spawn_app_with(&allow_private(&url)).await;
    let hook = app
        .create(
            "/api/v1/webhooks",
            json!({"url": url, "events": ["tracking_point.created"]}),
        )
        .await;
    let secret = hook["secret"].as_str().unwrap().to_string();
    let listed: Value = app.get("/api/v1/webhooks").await.json().await.unwrap();
    assert!(
        listed["items"][0]["secret"].is_null(),
        "the secret is shown only once"
    );

    let rep = app.user("李明", &["sales"]).await;
    let customer = app.customer("华南智造", Some(&rep)).await;
    let point = app
        .create(
            "/api/v1/events",
            json!({"actor": rep, "customer": customer, "action": "已电话沟通"}),
        )
        .await;
    assert_eq!(
        app.count("jobs WHERE kind = 'webhook.deliver'").await,
        1,
        "enqueued with the point"
    );

    assert_eq!(app.worker.drain().await.unwrap(), 1);
    let seen = sink.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    let (delivery, timestamp, signature, body) = &seen[0];
    assert_eq!(
        signature,
        &format!(
            "sha256={}",
            closeloop::webhooks::sign(&secret, timestamp, body)
        )
    );
    let body: Value = serde_json::from_str(body).unwrap();
    assert_eq!(body["type"], "tracking_point.created");
    assert_eq!(body["data"]["id"], point["id"]);
    let (job_id, status): (String, i64) =
        sqlx::query_as("SELECT job_id, status_code FROM webhook_deliveries")
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    assert_eq!((&job_id, status), (delivery, 200));

    // Deactivated: later points enqueue nothing.
    let id = hook["id"].as_str().unwrap();
    let res = app
        .client
        .delete(app.url(&format!("/api/v1/webhooks/{id}")))
        .bearer_auth(&app.key)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    app.create(
        "/api/v1/events",
        json!({"actor": rep, "customer": customer, "action": "客户提出价格异议"}),
    )
    .await;
    assert_eq!(app.count("jobs WHERE kind = 'webhook.deliver'").await, 1);
}

#[tokio::test]
async fn bad_webhooks_are_refused() {
    let app = spawn_app().await;
    for (body, code) in [
        (
            json!({"url": "ftp://example.com/x", "events": ["tracking_point.created"]}),
            422,
        ),
        (
            json!({"url": "https://hooks.example.com/x", "events": ["deal.won"]}),
            422,
        ),
        (
            json!({"url": "https://hooks.example.com/x", "events": []}),
            422,
        ),
        (json!({"url": "https://hooks.example.com/x"}), 422),
    ] {
        let (status, _, msg) = error_code(app.post("/api/v1/webhooks", &body).await).await;
        assert_eq!(status, code, "{body}: {msg}");
    }
    let integration = app.key_with_role(ApiKeyRole::Integration).await;
    let res = app
        .client
        .post(app.url("/api/v1/webhooks"))
        .bearer_auth(integration)
        .json(&json!({"url": "https://hooks.example.com/x", "events": ["tracking_point.created"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    assert_eq!(app.count("webhooks").await, 0);
}

struct Server {
    child: Child,
    port: u16,
}

fn start_server(config: &std::path::Path, port: u16) -> Server {
    let child = Command::new(env!("CARGO_BIN_EXE_closeloop"))
        .args(["serve", "--config"])
        .arg(config)
        .env_remove("CLOSELOOP_TEST_POSTGRES_URL")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Server { child, port }
}

async fn wait_ready(client: &reqwest::Client, port: u16) {
    for _ in 0..150 {
        if let Ok(r) = client
            .get(format!("http://127.0.0.1:{port}/readyz"))
            .send()
            .await
        {
            if r.status() == 200 {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("server on {port} did not become ready");
}

/// A real `closeloop serve` is killed with SIGKILL while delivering; after a restart
/// every delivery completes and each is recorded exactly once in our database.
#[tokio::test]
async fn kill_minus_nine_mid_work_loses_nothing_and_records_each_job_once() {
    let dir = tempfile::tempdir().unwrap();
    let db_url = fresh_database(dir.path()).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let key_line = if on_postgres() {
        format!("data_key = \"{TEST_DATA_KEY}\"")
    } else {
        String::new()
    };
    let (hook_url, sink) = start_sink(Duration::from_millis(15)).await;
    let config = dir.path().join("closeloop.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:{port}\"\ndatabase_url = \"{db_url}\"\n\
             [jobs]\nconcurrency = 4\nlease = \"3s\"\ntimeout = \"2s\"\npoll_interval = \"50ms\"\n\
             [security]\n{key_line}\n{}",
            allow_private(&hook_url)
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_closeloop"))
        .args([
            "apikey", "create", "--name", "t", "--role", "admin", "--config",
        ])
        .arg(&config)
        .env_remove("CLOSELOOP_TEST_POSTGRES_URL")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key = String::from_utf8(out.stdout).unwrap().trim().to_string();

    let client = reqwest::Client::new();
    let mut server = start_server(&config, port);
    wait_ready(&client, port).await;
    let api = |path: &str| format!("http://127.0.0.1:{port}{path}");
    let post =
        |path: &str, body: Value| client.post(api(path)).bearer_auth(&key).json(&body).send();
    post(
        "/api/v1/webhooks",
        json!({"url": hook_url, "events": ["tracking_point.created"]}),
    )
    .await
    .unwrap();
    let rep: Value = post("/api/v1/users", json!({"name": "李明"}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let customer: Value = post("/api/v1/customers", json!({"name": "华南智造"}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    const N: usize = 200;
    let mut acknowledged = Vec::new();
    for _ in 0..N {
        let res = post(
            "/api/v1/events",
            json!({"actor": rep["id"], "customer": customer["id"], "action": "拜访记录"}),
        )
        .await
        .unwrap();
        assert_eq!(res.status(), 201);
        let v: Value = res.json().await.unwrap();
        acknowledged.push(v["id"].as_str().unwrap().to_string());
    }

    // Kill without warning once the deliveries are under way.
    let deadline = Instant::now() + Duration::from_secs(30);
    while sink.seen.lock().unwrap().len() < N / 5 {
        assert!(Instant::now() < deadline, "deliveries did not start");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    let at_kill = sink.seen.lock().unwrap().len();
    assert!(at_kill < N, "the kill came too late to test anything");

    let mut server = start_server(&config, server.port);
    wait_ready(&client, port).await;
    let db = closeloop::db::Db::connect(&db_url).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (open,): (i64,) = sqlx::query_as(
            "SELECT CAST(COUNT(*) AS BIGINT) FROM jobs WHERE kind = 'webhook.deliver' AND status <> 'done'",
        )
        .fetch_one(&db.pool)
        .await
        .unwrap();
        if open == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{open} deliveries still open after restart"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server.child.kill().unwrap();
    server.child.wait().unwrap();

    // Every acknowledged point is stored once, and each has exactly one recorded delivery.
    let (points,): (i64,) = sqlx::query_as("SELECT CAST(COUNT(*) AS BIGINT) FROM tracking_points")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(points as usize, N);
    let rows: Vec<(String,)> = sqlx::query_as("SELECT event_id FROM webhook_deliveries")
        .fetch_all(&db.pool)
        .await
        .unwrap();
    let mut per_event: HashMap<String, usize> = HashMap::new();
    for (e,) in rows {
        *per_event.entry(e).or_default() += 1;
    }
    for id in &acknowledged {
        assert_eq!(
            per_event.get(id),
            Some(&1),
            "point {id} not recorded exactly once"
        );
    }
    assert_eq!(per_event.len(), N);
    // Sending is at least once: the receiver saw every delivery, some maybe twice.
    let seen = sink.seen.lock().unwrap();
    let distinct: std::collections::HashSet<&String> = seen.iter().map(|s| &s.0).collect();
    assert_eq!(distinct.len(), N);
}
