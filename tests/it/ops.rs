//! Health, readiness, metrics, OpenAPI, graceful shutdown.

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::{error_code, fresh_database, on_postgres, spawn_app, TEST_DATA_KEY};

#[tokio::test]
async fn health_readiness_and_unknown_routes() {
    let app = spawn_app().await;
    assert_eq!(
        app.client
            .get(app.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let ready: Value = app
        .client
        .get(app.url("/readyz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["status"], "ready");
    let (status, code, _) = error_code(app.get("/api/v1/nothing-here").await).await;
    assert_eq!((status, code.as_str()), (404, "not_found"));
    // Readiness follows the database.
    app.db.pool.close().await;
    let res = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(res.status(), 503);
}

#[tokio::test]
async fn metrics_label_requests_by_route_not_raw_uri() {
    let app = spawn_app().await;
    let rep = app.user("李明", &["sales"]).await;
    let customer = app.customer("华南智造", Some(&rep)).await;
    app.create(
        "/api/v1/events",
        json!({"actor": rep, "customer": customer, "action": "x"}),
    )
    .await;
    app.get(&format!("/api/v1/users/{rep}")).await;
    let text = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("http_requests_total"), "{text}");
    assert!(
        text.contains("route=\"/api/v1/users/{id}\""),
        "route label missing"
    );
    assert!(!text.contains(&rep), "a raw path leaked into metric labels");
    assert!(text.contains("closeloop_ledger_writes_total"));
    assert!(text.contains("http_request_duration_seconds_bucket"));
}

#[tokio::test]
async fn the_openapi_document_describes_the_api() {
    let app = spawn_app().await;
    let doc: Value = app
        .client
        .get(app.url("/api/v1/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for path in [
        "/api/v1/events",
        "/api/v1/users",
        "/api/v1/customers",
        "/api/v1/deals",
    ] {
        assert!(doc["paths"][path]["get"].is_object(), "{path} GET missing");
        assert!(
            doc["paths"][path]["post"].is_object(),
            "{path} POST missing"
        );
    }
    assert!(doc["components"]["securitySchemes"]["api_key"].is_object());
}

#[tokio::test]
async fn graceful_stop_finishes_in_flight_requests_and_loses_nothing() {
    let app = spawn_app().await;
    let rep = app.user("李明", &["sales"]).await;
    let customer = app.customer("华南智造", Some(&rep)).await;
    let mut tasks = Vec::new();
    for _ in 0..100 {
        let req = app
            .client
            .post(app.url("/api/v1/events"))
            .bearer_auth(&app.key)
            .json(&json!({"actor": rep, "customer": customer, "action": "x"}));
        tasks.push(tokio::spawn(async move {
            req.send().await.map(|r| r.status().as_u16())
        }));
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    let db_url = app.database_url.clone();
    let _dir = app.stop().await;
    let mut acknowledged = 0;
    for t in tasks {
        if let Ok(201) = t.await.unwrap() {
            acknowledged += 1;
        }
    }
    let db = closeloop::db::Db::connect(&db_url).await.unwrap();
    let (stored,): (i64,) = sqlx::query_as("SELECT CAST(COUNT(*) AS BIGINT) FROM tracking_points")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert!(acknowledged > 0, "no request finished before the stop");
    assert!(
        stored >= acknowledged,
        "acknowledged {acknowledged} but stored {stored}"
    );
}

/// The real binary: `serve` answers, then SIGTERM ends it cleanly.
#[tokio::test]
async fn serve_stops_cleanly_on_sigterm_and_serves_metrics_on_its_own_listener() {
    let dir = tempfile::tempdir().unwrap();
    let db_url = fresh_database(dir.path()).await;
    let port = free_port();
    let metrics_port = free_port();
    let key_line = if on_postgres() {
        format!("[security]\ndata_key = \"{TEST_DATA_KEY}\"\n")
    } else {
        String::new()
    };
    let config = dir.path().join("closeloop.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:{port}\"\nmetrics_listen = \"127.0.0.1:{metrics_port}\"\ndatabase_url = \"{db_url}\"\n{key_line}"
        ),
    )
    .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_closeloop"))
        .args(["serve", "--config"])
        .arg(&config)
        .env_remove("CLOSELOOP_TEST_POSTGRES_URL")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let client = reqwest::Client::new();
    let mut up = false;
    for _ in 0..100 {
        if let Ok(r) = client
            .get(format!("http://127.0.0.1:{port}/readyz"))
            .send()
            .await
        {
            up = r.status() == 200;
            if up {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(up, "server did not become ready");
    let on_main = client
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        on_main.status(),
        404,
        "/metrics must move to metrics_listen"
    );
    let on_private = client
        .get(format!("http://127.0.0.1:{metrics_port}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(on_private.status(), 200);

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(out.status.success(), "exit status {:?}", out.status);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("closeloop stopped"), "{stderr}");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
