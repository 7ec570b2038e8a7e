//! Webhook URLs cannot reach inside the network (SSRF): special addresses are refused at
//! registration however they are spelled, names that resolve inside are refused at
//! delivery, redirects are not followed, and a failed delivery's stored error tells
//! nothing about what listens where. `[webhooks] allow_private` lets deliberate internal
//! receivers through.

use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use axum::Router;
use serde_json::{json, Value};

use crate::helpers::{error_code, spawn_app, spawn_app_with, TestApp};

/// A local receiver: `/hook` records the signature of what it gets, `/moved` redirects
/// there with 307 (which keeps method, body and headers when followed).
#[derive(Clone, Default)]
struct Receiver {
    signatures: Arc<Mutex<Vec<String>>>,
}

async fn hook(State(r): State<Receiver>, headers: HeaderMap) -> StatusCode {
    let signature = headers
        .get("x-closeloop-signature")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    r.signatures.lock().unwrap().push(signature);
    StatusCode::OK
}

/// Starts a receiver; returns its port.
async fn start_receiver() -> (u16, Receiver) {
    let receiver = Receiver::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = Router::new()
        .route("/hook", post(hook))
        .route(
            "/moved",
            post(move || async move {
                (
                    StatusCode::TEMPORARY_REDIRECT,
                    [(header::LOCATION, format!("http://127.0.0.1:{port}/hook"))],
                )
                    .into_response()
            }),
        )
        .with_state(receiver.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (port, receiver)
}

/// A port nothing listens on.
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn subscribe(app: &TestApp, url: &str) -> Value {
    app.create(
        "/api/v1/webhooks",
        json!({"url": url, "events": ["tracking_point.created"]}),
    )
    .await
}

/// Records one tracking point (one delivery per subscriber) and runs the worker.
async fn record_a_point_and_deliver(app: &TestApp) {
    let rep = app.user("李明", &["sales"]).await;
    let customer = app.customer("华南智造", Some(&rep)).await;
    app.create(
        "/api/v1/events",
        json!({"actor": rep, "customer": customer, "action": "已电话沟通"}),
    )
    .await;
    app.worker.drain().await.unwrap();
}

/// (status, last_error) of every delivery job.
async fn delivery_outcomes(app: &TestApp) -> Vec<(String, Option<String>)> {
    sqlx::query_as("SELECT status, last_error FROM jobs WHERE kind = 'webhook.deliver' ORDER BY id")
        .fetch_all(&app.db.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn every_spelling_of_an_inside_address_is_refused_at_registration() {
    let app = spawn_app().await;
    for url in [
        "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
        "http://127.0.0.1:8080/x",
        "http://127.1:8080/x",
        "http://2130706433:8080/x",
        "http://0x7f.1/x",
        "http://0177.0.0.1/x",
        "http://[::1]:8080/x",
        "http://[::ffff:127.0.0.1]/x",
        "http://[::ffff:a9fe:a9fe]/x",
        "http://0.0.0.0:8080/x",
        "http://0/x",
        "http://10.0.0.5/x",
        "http://172.16.3.4/x",
        "http://192.168.1.1/x",
        "http://100.64.0.1/x",
        "http://224.0.0.1/x",
        "https://[fd00::1]/x",
        "https://[fe80::1]/x",
    ] {
        let res = app
            .post(
                "/api/v1/webhooks",
                &json!({"url": url, "events": ["tracking_point.created"]}),
            )
            .await;
        let (status, code, message) = error_code(res).await;
        assert_eq!((status, code.as_str()), (422, "invalid_input"), "{url}");
        assert!(
            message.contains("不能指向本机、内网或保留地址") && message.contains("allow_private"),
            "{url}: {message}"
        );
    }
    assert_eq!(app.count("webhooks").await, 0);
    // A public address is fine.
    subscribe(&app, "https://hooks.example.com/closeloop").await;
}

#[tokio::test]
async fn a_name_that_resolves_inside_is_refused_at_delivery_whatever_listens_there() {
    let (open_port, receiver) = start_receiver().await;
    let app = spawn_app().await;
    // `localhost` is a name, so registration cannot judge it; delivery resolves it to
    // loopback and refuses. An open and a closed port end the same way.
    subscribe(&app, &format!("http://localhost:{open_port}/hook")).await;
    subscribe(&app, &format!("http://localhost:{}/hook", closed_port())).await;
    record_a_point_and_deliver(&app).await;
    assert!(receiver.signatures.lock().unwrap().is_empty());
    let outcomes = delivery_outcomes(&app).await;
    assert_eq!(outcomes.len(), 2);
    for outcome in outcomes {
        assert_eq!(
            outcome,
            (
                "dead".to_string(),
                Some("refused: address not allowed".into())
            )
        );
    }
    assert_eq!(app.count("webhook_deliveries").await, 0);
}

#[tokio::test]
async fn a_literal_inside_address_saved_before_the_check_is_refused_at_delivery() {
    let (port, receiver) = start_receiver().await;
    let app = spawn_app().await;
    subscribe(&app, "https://hooks.example.com/closeloop").await;
    // As a subscription saved by an earlier version would be.
    sqlx::query("UPDATE webhooks SET url = $1")
        .bind(format!("http://127.1:{port}/hook"))
        .execute(&app.db.pool)
        .await
        .unwrap();
    record_a_point_and_deliver(&app).await;
    assert!(receiver.signatures.lock().unwrap().is_empty());
    assert_eq!(
        delivery_outcomes(&app).await,
        vec![(
            "dead".to_string(),
            Some("refused: address not allowed".into())
        )]
    );
}

#[tokio::test]
async fn a_redirect_is_not_followed() {
    let (port, receiver) = start_receiver().await;
    let app = spawn_app_with(&format!(
        "[webhooks]\nallow_private = [\"127.0.0.1:{port}\"]\n"
    ))
    .await;
    subscribe(&app, &format!("http://127.0.0.1:{port}/moved")).await;
    record_a_point_and_deliver(&app).await;
    assert!(
        receiver.signatures.lock().unwrap().is_empty(),
        "the signed delivery went nowhere else"
    );
    assert_eq!(
        delivery_outcomes(&app).await,
        vec![(
            "dead".to_string(),
            Some("webhook answered 307 Temporary Redirect".into())
        )]
    );
}

#[tokio::test]
async fn allow_private_lets_the_named_receivers_through_and_no_others() {
    let (port, receiver) = start_receiver().await;
    let (other_port, other) = start_receiver().await;
    let closed = closed_port();
    let app = spawn_app_with(&format!(
        "[webhooks]\nallow_private = [\"localhost:{port}\", \"127.0.0.1:{closed}\"]\n"
    ))
    .await;
    subscribe(&app, &format!("http://localhost:{port}/hook")).await;
    subscribe(&app, &format!("http://127.0.0.1:{closed}/hook")).await;
    // Another port of the same host is not on the list.
    let res = app
        .post(
            "/api/v1/webhooks",
            &json!({"url": format!("http://127.0.0.1:{other_port}/hook"), "events": ["tracking_point.created"]}),
        )
        .await;
    assert_eq!(error_code(res).await.0, 422);
    subscribe(&app, &format!("http://localhost:{other_port}/hook")).await;

    record_a_point_and_deliver(&app).await;
    let seen = receiver.signatures.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert!(seen[0].starts_with("sha256="), "{seen:?}");
    assert!(other.signatures.lock().unwrap().is_empty());
    let mut outcomes = delivery_outcomes(&app).await;
    outcomes.sort();
    assert_eq!(
        outcomes,
        vec![
            (
                "dead".to_string(),
                Some("refused: address not allowed".into())
            ),
            ("done".to_string(), None),
            // A closed allowed port says only that the connection failed, and retries.
            ("queued".to_string(), Some("connection failed".into())),
        ]
    );
}

#[test]
fn allow_private_entries_must_be_host_and_port() {
    for bad in ["10.0.0.5", "http://10.0.0.5:80", "10.0.0.5:80/hook"] {
        let e = closeloop::Config::from_toml_only(&format!(
            "[webhooks]\nallow_private = [\"{bad}\"]\n"
        ))
        .unwrap_err();
        assert_eq!(e.key, "webhooks.allow_private", "{bad}");
        assert!(e.problem.contains(bad), "{}", e.problem);
    }
    closeloop::Config::from_toml_only("[webhooks]\nallow_private = [\"10.0.0.5:8080\"]\n").unwrap();
}
