//! The tracking ledger through `POST/GET /api/v1/events`.

use closeloop::access::ApiKeyRole;
use serde_json::{json, Value};

use crate::helpers::{error_code, spawn_app, spawn_app_with, TestApp};

async fn rep_and_customer(app: &TestApp) -> (String, String) {
    let rep = app.user("李明", &["sales"]).await;
    let customer = app.customer("华南智造", Some(&rep)).await;
    (rep, customer)
}

#[tokio::test]
async fn a_tracking_point_gets_server_time_ip_and_agent_and_is_listed() {
    let app = spawn_app().await;
    let (rep, customer) = rep_and_customer(&app).await;
    let before = chrono::Utc::now() - chrono::Duration::seconds(1);
    let res = app
        .client
        .post(app.url("/api/v1/events"))
        .bearer_auth(&app.key)
        .header("user-agent", "wxwork/4.1 test")
        .json(&json!({"actor": rep, "customer": customer, "action": "已电话沟通", "payload": {"note_id": "n1"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let point: Value = res.json().await.unwrap();
    let at = chrono::DateTime::parse_from_rfc3339(point["occurred_at"].as_str().unwrap()).unwrap();
    assert!(at >= before && at <= chrono::Utc::now() + chrono::Duration::seconds(1));
    assert!(point["occurred_at_local"]
        .as_str()
        .unwrap()
        .ends_with("+08:00"));
    assert_eq!(point["client_ip"], "127.0.0.1");
    assert_eq!(point["user_agent"], "wxwork/4.1 test");
    assert_eq!(point["source"], "api");
    assert_eq!(point["payload"]["note_id"], "n1");

    let page: Value = app
        .get(&format!("/api/v1/events?customer={customer}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    assert_eq!(page["items"][0]["id"], point["id"]);
    assert!(page["next_cursor"].is_null());
    let single: Value = app
        .get(&format!("/api/v1/events/{}", point["id"].as_str().unwrap()))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(single["action"], "已电话沟通");
}

#[tokio::test]
async fn the_client_cannot_choose_the_time() {
    let app = spawn_app().await;
    let (rep, customer) = rep_and_customer(&app).await;
    let res = app
        .post(
            "/api/v1/events",
            &json!({"actor": rep, "customer": customer, "action": "x", "occurred_at": "2020-01-01T00:00:00Z"}),
        )
        .await;
    let (status, code, _) = error_code(res).await;
    assert_eq!((status, code.as_str()), (422, "invalid_input"));
    assert_eq!(app.count("tracking_points").await, 0);
}

#[tokio::test]
async fn filters_and_paging_walk_the_ledger() {
    let app = spawn_app().await;
    let (rep, customer) = rep_and_customer(&app).await;
    let other = app.user("王芳", &["sales"]).await;
    for i in 0..5 {
        let actor = if i % 2 == 0 { &rep } else { &other };
        app.create(
            "/api/v1/events",
            json!({"actor": actor, "customer": customer, "action": if i < 3 { "拜访记录" } else { "客户提出价格异议" }}),
        )
        .await;
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = "/api/v1/events?limit=2".to_string();
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let page: Value = app.get(&path).await.json().await.unwrap();
        for item in page["items"].as_array().unwrap() {
            seen.push(item["id"].as_str().unwrap().to_string());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 5);
    let mut dedup = seen.clone();
    dedup.dedup();
    assert_eq!(dedup, seen, "pages overlap or are out of order");

    let by_actor: Value = app
        .get(&format!("/api/v1/events?actor={other}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(by_actor["items"].as_array().unwrap().len(), 2);
    let by_action: Value = app
        .get("/api/v1/events?action=%E5%AE%A2%E6%88%B7%E6%8F%90%E5%87%BA%E4%BB%B7%E6%A0%BC%E5%BC%82%E8%AE%AE")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(by_action["items"].as_array().unwrap().len(), 2);
    let future = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let since_future: Value = app
        .get(&format!("/api/v1/events?since={}", urlencode(&future)))
        .await
        .json()
        .await
        .unwrap();
    assert!(since_future["items"].as_array().unwrap().is_empty());
    let until_future: Value = app
        .get(&format!("/api/v1/events?until={}", urlencode(&future)))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(until_future["items"].as_array().unwrap().len(), 5);
    let (status, _, msg) = error_code(app.get("/api/v1/events?since=yesterday").await).await;
    assert_eq!(status, 422);
    assert!(msg.contains("since"), "{msg}");
}

fn urlencode(s: &str) -> String {
    s.replace('+', "%2B").replace(':', "%3A")
}

#[tokio::test]
async fn an_idempotency_key_replays_the_first_result_and_writes_nothing_new() {
    let app = spawn_app().await;
    let (rep, customer) = rep_and_customer(&app).await;
    let body = json!({"actor": rep, "customer": customer, "action": "已发送样品清单"});
    let send = |b: Value| {
        app.client
            .post(app.url("/api/v1/events"))
            .bearer_auth(&app.key)
            .header("idempotency-key", "tap-42")
            .json(&b)
            .send()
    };
    let first = send(body.clone()).await.unwrap();
    assert_eq!(first.status(), 201);
    let first: Value = first.json().await.unwrap();
    let again = send(body.clone()).await.unwrap();
    assert_eq!(again.status(), 200);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["id"], first["id"]);
    assert_eq!(again["occurred_at"], first["occurred_at"]);
    assert_eq!(app.count("tracking_points").await, 1);

    let mut different = body.clone();
    different["action"] = json!("客户提出价格异议");
    let (status, code, _) = error_code(send(different).await.unwrap()).await;
    assert_eq!((status, code.as_str()), (409, "conflict"));
    assert_eq!(app.count("tracking_points").await, 1);
}

#[tokio::test]
async fn concurrent_writes_are_all_durable_and_concurrent_retries_write_once() {
    let app = spawn_app().await;
    let (rep, customer) = rep_and_customer(&app).await;
    let body = json!({"actor": rep, "customer": customer, "action": "拜访记录"});
    let mut tasks = Vec::new();
    for i in 0..200 {
        let client = app.client.clone();
        let url = app.url("/api/v1/events");
        let key = app.key.clone();
        let body = body.clone();
        tasks.push(tokio::spawn(async move {
            let mut req = client.post(url).bearer_auth(key).json(&body);
            // Every fourth request is a retry storm on one key.
            if i % 4 == 0 {
                req = req.header("idempotency-key", "same-tap");
            }
            let res = req.send().await.unwrap();
            let status = res.status().as_u16();
            let v: Value = res.json().await.unwrap();
            (i, status, v["id"].as_str().unwrap().to_string())
        }));
    }
    let mut ids = std::collections::HashSet::new();
    let mut replay_ids = std::collections::HashSet::new();
    for t in tasks {
        let (i, status, id) = t.await.unwrap();
        if i % 4 == 0 {
            assert!(status == 201 || status == 200, "status {status}");
            replay_ids.insert(id);
        } else {
            assert_eq!(status, 201);
            assert!(ids.insert(id), "duplicate id");
        }
    }
    assert_eq!(
        replay_ids.len(),
        1,
        "one idempotency key must map to one point"
    );
    assert_eq!(app.count("tracking_points").await, 150 + 1);
}

#[tokio::test]
async fn bad_events_are_refused_and_write_nothing() {
    let app = spawn_app().await;
    let (rep, customer) = rep_and_customer(&app).await;
    let other_customer = app.customer("东方精密", None).await;
    let deal = app
        .create(
            "/api/v1/deals",
            json!({"customer": other_customer, "title": "质检"}),
        )
        .await;
    let cases = [
        (
            json!({"actor": "nobody", "customer": customer, "action": "x"}),
            422,
            "unknown_reference",
        ),
        (
            json!({"actor": rep, "customer": "nobody", "action": "x"}),
            422,
            "unknown_reference",
        ),
        (
            json!({"actor": rep, "customer": customer, "action": "x", "deal": deal["id"]}),
            422,
            "invalid_input",
        ),
        (
            json!({"actor": rep, "customer": customer, "action": "x", "deal": "nodeal"}),
            422,
            "unknown_reference",
        ),
        (
            json!({"actor": rep, "customer": customer, "action": ""}),
            422,
            "invalid_input",
        ),
        (
            json!({"actor": rep, "customer": customer, "action": "x".repeat(65)}),
            422,
            "invalid_input",
        ),
        (
            json!({"actor": rep, "customer": customer}),
            422,
            "invalid_input",
        ),
        (
            json!({"actor": 7, "customer": customer, "action": "x"}),
            422,
            "invalid_input",
        ),
        (
            json!({"actor": rep, "customer": customer, "action": "x", "payload": [1, 2]}),
            422,
            "invalid_input",
        ),
        (
            json!({"actor": rep, "customer": customer, "action": "x", "payload": {"note": "回拨 138-0013-8000"}}),
            422,
            "invalid_input",
        ),
    ];
    for (body, status, code) in cases {
        let got = error_code(app.post("/api/v1/events", &body).await).await;
        assert_eq!(
            (got.0, got.1.as_str()),
            (status, code),
            "for {body}: {}",
            got.2
        );
    }
    let res = app
        .client
        .post(app.url("/api/v1/events"))
        .bearer_auth(&app.key)
        .header("content-type", "application/json")
        .body("{\"actor\": ")
        .send()
        .await
        .unwrap();
    let (status, code, _) = error_code(res).await;
    assert_eq!((status, code.as_str()), (400, "malformed_body"));
    assert_eq!(app.count("tracking_points").await, 0);
}

#[tokio::test]
async fn an_oversized_body_is_refused_with_413() {
    let app = spawn_app_with("max_body_bytes = 2048").await;
    let (rep, customer) = rep_and_customer(&app).await;
    let big = "很".repeat(2000);
    let res = app
        .post(
            "/api/v1/events",
            &json!({"actor": rep, "customer": customer, "action": "x", "payload": {"t": big}}),
        )
        .await;
    let (status, code, _) = error_code(res).await;
    assert_eq!((status, code.as_str()), (413, "payload_too_large"));
    assert_eq!(app.count("tracking_points").await, 0);
}

#[tokio::test]
async fn roles_decide_who_may_record() {
    let app = spawn_app().await;
    let (rep, customer) = rep_and_customer(&app).await;
    let body = json!({"actor": rep, "customer": customer, "action": "x"});
    let read_only = app.key_with_role(ApiKeyRole::ReadOnly).await;
    let res = app
        .client
        .post(app.url("/api/v1/events"))
        .bearer_auth(&read_only)
        .json(&body)
        .send()
        .await
        .unwrap();
    let (status, code, _) = error_code(res).await;
    assert_eq!((status, code.as_str()), (403, "forbidden"));
    let listed = app
        .client
        .get(app.url("/api/v1/events"))
        .bearer_auth(&read_only)
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), 200);
    let integration = app.key_with_role(ApiKeyRole::Integration).await;
    let res = app
        .client
        .post(app.url("/api/v1/events"))
        .bearer_auth(&integration)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let res = app
        .client
        .post(app.url("/api/v1/events"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let (status, code, _) = error_code(res).await;
    assert_eq!((status, code.as_str()), (401, "unauthenticated"));
    assert_eq!(app.count("tracking_points").await, 1);
}

#[tokio::test]
async fn forwarded_for_counts_only_from_trusted_proxies() {
    let trusting = spawn_app_with("trusted_proxies = [\"127.0.0.1/32\"]").await;
    let (rep, customer) = rep_and_customer(&trusting).await;
    let send = |app: &TestApp, rep: String, customer: String| {
        app.client
            .post(app.url("/api/v1/events"))
            .bearer_auth(&app.key)
            .header("x-forwarded-for", "203.0.113.7")
            .json(&json!({"actor": rep, "customer": customer, "action": "x"}))
            .send()
    };
    let v: Value = send(&trusting, rep, customer)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["client_ip"], "203.0.113.7");

    let plain = spawn_app().await;
    let (rep, customer) = rep_and_customer(&plain).await;
    let v: Value = send(&plain, rep, customer)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["client_ip"], "127.0.0.1");
}

/// An upload action's point is written with its document: recording 上传方案 as a bare
/// event is refused and names the endpoint that takes the file.
#[tokio::test]
async fn an_upload_action_is_not_a_bare_event() {
    let app = spawn_app().await;
    let (rep, customer) = rep_and_customer(&app).await;
    let res = app
        .post(
            "/api/v1/events",
            &json!({"actor": rep, "customer": customer, "action": "上传方案"}),
        )
        .await;
    let (status, _, message) = error_code(res).await;
    assert_eq!(status, 422);
    assert!(message.contains("/documents?kind=proposal"), "{message}");
    assert_eq!(app.count("tracking_points").await, 0);
}
