//! The transport holds against hostile clients: dates from a request are range-checked
//! (never a panic), every error the framework produces answers the JSON error shape,
//! metric labels stay bounded whatever a client sends, and slow or idle connections are
//! closed while the connection cap keeps the rest waiting.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::helpers::{error_code, spawn_app, spawn_app_with, TestApp};

async fn get_as_admin(app: &TestApp, path: &str) -> reqwest::Response {
    app.client
        .get(app.url(path))
        .bearer_auth(&app.key)
        .send()
        .await
        .expect("the server answers instead of dropping the connection")
}

#[tokio::test]
async fn dates_out_of_range_answer_invalid_input() {
    let app = spawn_app().await;
    for path in [
        "/api/v1/collab/health?week=-262143-01-01",
        "/api/v1/credibility?week=%2B262142-12-31",
        "/api/v1/collab/health?week=0000-01-03",
        "/api/v1/credibility?week=10000-01-01",
    ] {
        let (status, code, _) = error_code(get_as_admin(&app, path).await).await;
        assert_eq!((status, code.as_str()), (422, "invalid_input"), "{path}");
    }
    // An ordinary week still answers.
    assert_eq!(
        get_as_admin(&app, "/api/v1/collab/health?week=2026-11-23")
            .await
            .status(),
        200
    );

    // The web report reads the same parameter.
    let boss = app.user("周总", &["manager"]).await;
    let (session, _) = closeloop::http::pages::session::create(
        &app.db,
        chrono::Utc::now().timestamp_millis(),
        &app.org_id,
        &boss,
        "wecom",
    )
    .await
    .unwrap();
    let res = app
        .client
        .get(app.url("/collab/health?week=-262143-01-08"))
        .header(
            "cookie",
            format!("{}={session}", closeloop::http::pages::session::COOKIE),
        )
        .send()
        .await
        .expect("the server answers instead of dropping the connection");
    assert_eq!(res.status(), 422);
    let page = res.text().await.unwrap();
    assert!(page.contains("周的日期无效"), "{page}");

    // A day far outside the calendar is not stored either.
    let rep = app.user("李明", &["sales"]).await;
    let customer = app.customer("华南智造", Some(&rep)).await;
    let res = app
        .client
        .put(app.url("/api/v1/chat-counts"))
        .bearer_auth(&app.key)
        .json(&json!({"user": rep, "customer": customer, "day": "+262142-12-31", "messages": 3, "source": "wecom"}))
        .send()
        .await
        .unwrap();
    let (status, code, _) = error_code(res).await;
    assert_eq!((status, code.as_str()), (422, "invalid_input"));
    assert_eq!(app.count("chat_message_days").await, 0);
}

fn is_json_error(body: &Value) -> bool {
    body["error"]["code"]
        .as_str()
        .is_some_and(|c| !c.is_empty())
        && body["error"]["message"].as_str().is_some()
}

async fn json_error(res: reqwest::Response) -> (u16, Value) {
    let status = res.status().as_u16();
    let kind = res
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let text = res.text().await.unwrap();
    assert!(
        kind.starts_with("application/json"),
        "{status} answered `{kind}`: {text}"
    );
    (status, serde_json::from_str(&text).unwrap())
}

#[tokio::test]
async fn framework_rejections_answer_the_json_error_shape() {
    let app = spawn_app().await;

    // Over the callback limit.
    let res = app
        .client
        .post(app.url("/callback/wecom?msg_signature=x&timestamp=1&nonce=n"))
        .body(vec![b'x'; 70 * 1024])
        .send()
        .await
        .unwrap();
    let (status, body) = json_error(res).await;
    assert_eq!(status, 413);
    assert_eq!(body["error"]["code"], "payload_too_large", "{body}");

    // Invalid UTF-8 in a path parameter.
    let (status, body) = json_error(get_as_admin(&app, "/api/v1/users/%FF%FE").await).await;
    assert_eq!(status, 400);
    assert!(is_json_error(&body), "{body}");

    // A made-up method and a known one the route does not take.
    for method in ["FROB", "DELETE"] {
        let res = app
            .client
            .request(
                reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
                app.url("/healthz"),
            )
            .send()
            .await
            .unwrap();
        let (status, body) = json_error(res).await;
        assert_eq!(status, 405, "{method}");
        assert_eq!(body["error"]["code"], "method_not_allowed", "{body}");
    }

    // A query string the web page cannot read (from someone who may open the page:
    // a stranger is sent to sign in first).
    let boss = app.user("王经理", &["manager"]).await;
    let (cookie, _) = closeloop::http::pages::session::create(
        &app.db,
        chrono::Utc::now().timestamp_millis(),
        &app.org_id,
        &boss,
        "dev",
    )
    .await
    .unwrap();
    let res = app
        .client
        .get(app.url("/collab/health?week=a&week=b"))
        .header(
            "cookie",
            format!("{}={cookie}", closeloop::http::pages::session::COOKIE),
        )
        .send()
        .await
        .unwrap();
    let (status, body) = json_error(res).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "bad_request", "{body}");

    // Intended plain-text answers are left as they are.
    let metrics = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(metrics.status(), 200);
    assert!(metrics.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
}

#[tokio::test]
async fn metric_labels_stay_bounded_whatever_a_client_sends() {
    let app = spawn_app().await;
    for i in 0..30 {
        let method = format!("MADEUP{i}");
        for path in [
            "/healthz".to_string(),
            format!("/no/such/route/{i}"),
            format!("/api/v1/no-such-route-{i}"),
        ] {
            app.client
                .request(
                    reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
                    app.url(&path),
                )
                .send()
                .await
                .unwrap();
        }
    }
    app.client.get(app.url("/healthz")).send().await.unwrap();
    let text = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let series: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("http_requests_total{"))
        .collect();
    assert!(
        !text.contains("MADEUP"),
        "a client's method became a label:\n{}",
        series.join("\n")
    );
    assert!(
        !text.contains("/no/such/route") && !text.contains("no-such-route"),
        "a raw path became a label"
    );
    assert!(
        series
            .iter()
            .any(|l| l.contains("method=\"other\"") && l.contains("route=\"/healthz\"")),
        "{}",
        series.join("\n")
    );
    assert!(
        series
            .iter()
            .any(|l| l.contains("method=\"GET\"") && l.contains("route=\"/healthz\"")),
        "{}",
        series.join("\n")
    );
    assert!(series.len() <= 6, "{}", series.join("\n"));
}

/// The address of the running server, for raw TCP clients.
fn addr(app: &TestApp) -> String {
    app.base.trim_start_matches("http://").to_string()
}

const HEALTHZ: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: closeloop\r\n\r\n";

/// Reads one response with a `Content-Length` body.
async fn read_response(stream: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut chunk))
            .await
            .expect("a response within 5s")
            .unwrap();
        assert!(n > 0, "the connection closed before the response ended");
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).to_string();
        if let Some(end) = text.find("\r\n\r\n") {
            let length: usize = text[..end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap())
                })
                .unwrap_or(0);
            if buf.len() >= end + 4 + length {
                return text;
            }
        }
    }
}

/// Waits for the server to close the connection; returns how long that took.
async fn closed_within(stream: &mut TcpStream, limit: Duration) -> Duration {
    let start = Instant::now();
    let mut chunk = [0u8; 256];
    loop {
        match tokio::time::timeout(limit, stream.read(&mut chunk)).await {
            Err(_) => panic!("the connection was still open after {limit:?}"),
            Ok(Ok(0)) | Ok(Err(_)) => return start.elapsed(),
            Ok(Ok(_)) => {}
        }
    }
}

#[tokio::test]
async fn a_client_that_never_finishes_its_headers_is_disconnected() {
    let app = spawn_app_with("[http]\nheader_read_timeout = \"300ms\"\n").await;
    let mut slow = TcpStream::connect(addr(&app)).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: closeloop\r\nX-Slow: ")
        .await
        .unwrap();
    let took = closed_within(&mut slow, Duration::from_secs(5)).await;
    assert!(took >= Duration::from_millis(200), "closed after {took:?}");
    // Other clients are served as usual.
    let mut ok = TcpStream::connect(addr(&app)).await.unwrap();
    ok.write_all(HEALTHZ).await.unwrap();
    assert!(read_response(&mut ok).await.starts_with("HTTP/1.1 200"));
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_its_own_timeout() {
    let app = spawn_app_with(
        "[http]\nheader_read_timeout = \"300ms\"\nkeep_alive_timeout = \"1500ms\"\n",
    )
    .await;
    let mut conn = TcpStream::connect(addr(&app)).await.unwrap();
    conn.write_all(HEALTHZ).await.unwrap();
    assert!(read_response(&mut conn).await.starts_with("HTTP/1.1 200"));
    // Idle for longer than the header timeout: still open, and serves the next request.
    tokio::time::sleep(Duration::from_millis(700)).await;
    conn.write_all(HEALTHZ).await.unwrap();
    assert!(read_response(&mut conn).await.starts_with("HTTP/1.1 200"));
    let took = closed_within(&mut conn, Duration::from_secs(6)).await;
    assert!(took >= Duration::from_millis(1200), "closed after {took:?}");
}

#[tokio::test]
async fn connections_beyond_the_cap_wait_until_one_closes() {
    let app = spawn_app_with("[http]\nmax_connections = 2\nkeep_alive_timeout = \"30s\"\n").await;
    let mut first = TcpStream::connect(addr(&app)).await.unwrap();
    let mut second = TcpStream::connect(addr(&app)).await.unwrap();
    for c in [&mut first, &mut second] {
        c.write_all(HEALTHZ).await.unwrap();
        assert!(read_response(c).await.starts_with("HTTP/1.1 200"));
    }
    let mut third = TcpStream::connect(addr(&app)).await.unwrap();
    third.write_all(HEALTHZ).await.unwrap();
    let mut chunk = [0u8; 64];
    assert!(
        tokio::time::timeout(Duration::from_millis(800), third.read(&mut chunk))
            .await
            .is_err(),
        "a third connection was served while two were open"
    );
    drop(first);
    assert!(read_response(&mut third).await.starts_with("HTTP/1.1 200"));
    // Open, idle connections do not hold up a graceful stop.
    tokio::time::timeout(Duration::from_secs(10), app.stop())
        .await
        .expect("the server stopped with idle connections open");
    drop(second);
}
