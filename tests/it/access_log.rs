//! The access log (issue 15): reads of customers and deals through the API and the sidebar
//! are recorded off the request path with who, what, when and the client IP; never a
//! personal value; kept for `access_log_retention`; searched by admins.

use std::time::Duration;

use closeloop::access::ApiKeyRole;
use closeloop::access_log::{AccessEntry, Object, Purpose};
use closeloop::clock::Clock;
use closeloop::db::Db;
use serde_json::{json, Value};
use sqlx::Row;

use crate::helpers::{
    error_code, spawn_app, spawn_app_clocked, spawn_app_with, ManualClock, TestApp,
};

const PHONE: &str = "13800138000";
const DAY: Duration = Duration::from_secs(24 * 3600);

/// Every entry of the organisation, oldest first, each column as text ("" for NULL).
async fn entries(app: &TestApp) -> Vec<Vec<String>> {
    entries_in(&app.db, &app.org_id).await
}

async fn entries_in(db: &Db, org: &str) -> Vec<Vec<String>> {
    sqlx::query(
        "SELECT user_id, api_key_id, object_kind, object_id, field, purpose, client_ip, \
         CAST(at AS TEXT) AS at, id FROM access_log WHERE org_id = $1 ORDER BY id",
    )
    .bind(org)
    .fetch_all(&db.pool)
    .await
    .unwrap()
    .iter()
    .map(|r| {
        (0..9)
            .map(|i| r.get::<Option<String>, _>(i).unwrap_or_default())
            .collect()
    })
    .collect()
}

async fn admin_key_id(app: &TestApp) -> String {
    sqlx::query("SELECT id FROM api_keys WHERE name = 'test-admin'")
        .fetch_one(&app.db.pool)
        .await
        .unwrap()
        .get("id")
}

/// A rep, a customer with a phone number and a deal of theirs.
async fn customer_with_deal(app: &TestApp) -> (String, String, String) {
    let rep = app.user("王五", &["sales"]).await;
    let customer = app.customer("甲公司", Some(&rep)).await;
    let deal = app
        .create(
            "/api/v1/deals",
            json!({"customer": customer, "title": "产线改造一期", "amount_fen": 9_900_000, "owner": rep}),
        )
        .await;
    (rep, customer, deal["id"].as_str().unwrap().to_string())
}

async fn ok(res: reqwest::Response) -> Value {
    let status = res.status();
    let body: Value = res.json().await.unwrap();
    assert_eq!(status, 200, "{body}");
    body
}

#[tokio::test]
async fn api_reads_are_recorded_with_the_key_the_ip_and_the_object_never_a_personal_value() {
    let app = spawn_app().await;
    let (_, customer, deal) = customer_with_deal(&app).await;
    let other = app.customer("乙公司", None).await;
    app.access_log.flush().await;
    assert!(entries(&app).await.is_empty(), "writes are not reads");

    ok(app.get(&format!("/api/v1/customers/{customer}")).await).await;
    ok(app
        .get(&format!("/api/v1/customers/{customer}/timeline"))
        .await)
    .await;
    ok(app.get(&format!("/api/v1/deals/{deal}")).await).await;
    let listed = ok(app.get("/api/v1/customers?limit=10").await).await;
    assert_eq!(listed["items"].as_array().unwrap().len(), 2);
    // A read that finds nothing records nothing (and never what the caller typed).
    let missing = app.get(&format!("/api/v1/customers/{PHONE}")).await;
    assert_eq!(missing.status(), 404);
    app.access_log.flush().await;

    let key = admin_key_id(&app).await;
    let rows = entries(&app).await;
    let got: Vec<[&str; 7]> = rows
        .iter()
        .map(|r| {
            [
                r[0].as_str(),
                r[1].as_str(),
                r[2].as_str(),
                r[3].as_str(),
                r[4].as_str(),
                r[5].as_str(),
                r[6].as_str(),
            ]
        })
        .collect();
    let ip = "127.0.0.1";
    let want = [
        [
            "",
            key.as_str(),
            "customer",
            customer.as_str(),
            "",
            "view",
            ip,
        ],
        ["", &key, "customer", &customer, "timeline", "view", ip],
        ["", &key, "deal", &deal, "", "view", ip],
    ];
    let mut listed_rows = vec![
        [
            "",
            key.as_str(),
            "customer",
            customer.as_str(),
            "",
            "list",
            ip,
        ],
        ["", &key, "customer", &other, "", "list", ip],
    ];
    listed_rows.sort();
    let (head, tail) = got.split_at(3);
    let mut tail = tail.to_vec();
    tail.sort();
    assert_eq!(head, &want[..]);
    assert_eq!(tail, listed_rows);
    for r in &rows {
        for v in r {
            for personal in [
                PHONE,
                "8000",
                "甲公司",
                "乙公司",
                "产线改造",
                "王五",
                "9900000",
            ] {
                assert!(!v.contains(personal), "{personal} in {r:?}");
            }
        }
    }
}

#[tokio::test]
async fn the_sidebar_customer_page_records_the_signed_in_member() {
    let app = spawn_app().await;
    let (rep, customer, _) = customer_with_deal(&app).await;
    let (status, _) = app
        .page_as(&rep, &format!("/sidebar/customers/{customer}"))
        .await;
    assert_eq!(status, 200);
    app.access_log.flush().await;
    let rows = entries(&app).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(
        rows[0][..7],
        [
            rep.as_str(),
            "",
            "customer",
            customer.as_str(),
            "",
            "view",
            "127.0.0.1"
        ]
    );
}

#[tokio::test]
async fn every_recorded_entry_lands_after_a_flush_across_many_batches() {
    let app = spawn_app().await;
    let customer = app.customer("甲公司", None).await;
    // More than two batches' worth (500 each), from one task, without waiting.
    for _ in 0..1_234 {
        app.access_log.record(AccessEntry::by_member(
            &app.org_id,
            "u-bulk",
            Object::Customer,
            &customer,
            Purpose::View,
        ));
    }
    // And concurrent requests.
    let mut reads = tokio::task::JoinSet::new();
    for _ in 0..40 {
        let req = app
            .client
            .get(app.url(&format!("/api/v1/customers/{customer}")))
            .bearer_auth(&app.key);
        reads.spawn(async move { req.send().await.unwrap().status() });
    }
    while let Some(status) = reads.join_next().await {
        assert_eq!(status.unwrap(), 200);
    }
    app.access_log.flush().await;
    let rows = entries(&app).await;
    assert_eq!(rows.iter().filter(|r| r[0] == "u-bulk").count(), 1_234);
    assert_eq!(rows.iter().filter(|r| !r[1].is_empty()).count(), 40);
    assert_eq!(app.access_log.dropped(), 0);
}

#[tokio::test]
async fn entries_queued_at_shutdown_are_written_before_the_server_stops() {
    let app = spawn_app().await;
    let customer = app.customer("甲公司", None).await;
    let (url, org) = (app.database_url.clone(), app.org_id.clone());
    for _ in 0..25 {
        app.access_log.record(AccessEntry::by_member(
            &org,
            "u-late",
            Object::Customer,
            &customer,
            Purpose::View,
        ));
    }
    let _dir = app.stop().await;
    let db = Db::connect(&url).await.unwrap();
    assert_eq!(entries_in(&db, &org).await.len(), 25);
    db.close().await;
}

#[tokio::test]
async fn switched_off_nothing_is_recorded() {
    let app = spawn_app_with("access_log = false").await;
    let customer = app.customer("甲公司", None).await;
    ok(app.get(&format!("/api/v1/customers/{customer}")).await).await;
    app.access_log.flush().await;
    assert!(entries(&app).await.is_empty());
}

#[tokio::test]
async fn the_retention_job_deletes_only_entries_older_than_the_configured_period() {
    let start = 1_800_000_000_000; // 2027-01-15
    let clock = ManualClock::new(start);
    let app = spawn_app_clocked("access_log_retention = \"30d\"", clock.clone()).await;
    let record = |who: &str| {
        app.access_log.record(AccessEntry::by_member(
            &app.org_id,
            who,
            Object::Deal,
            "d-1",
            Purpose::View,
        ))
    };
    for _ in 0..3 {
        record("u-old");
    }
    clock.advance(DAY * 20);
    for _ in 0..2 {
        record("u-new");
    }
    clock.advance(DAY * 15); // the old ones are 35 days old, the new ones 15
    app.access_log.flush().await;
    assert_eq!(entries(&app).await.len(), 5);
    let ids = closeloop::jobs::schedule::run_now(
        &app.db,
        clock.now_ms(),
        None,
        closeloop::access_log::retention::KIND,
        &closeloop::access::Actor::cli(),
    )
    .await
    .unwrap();
    assert_eq!(ids.len(), 1);
    app.worker.drain().await.unwrap();
    let left: Vec<String> = entries(&app)
        .await
        .into_iter()
        .map(|r| r[0].clone())
        .collect();
    assert_eq!(left, ["u-new", "u-new"]);
    // The schedule's own tick may have come due on the moved clock too: between them the
    // runs deleted the three old entries and left nothing older.
    let outputs: Vec<Value> =
        sqlx::query("SELECT output FROM jobs WHERE kind = $1 AND status = 'done'")
            .bind(closeloop::access_log::retention::KIND)
            .fetch_all(&app.db.pool)
            .await
            .unwrap()
            .iter()
            .map(|r| serde_json::from_str(&r.get::<String, _>("output")).unwrap())
            .collect();
    assert!(outputs.iter().any(|o| o["deleted"] == 3), "{outputs:?}");
    assert!(outputs.iter().all(|o| o["done"] == true), "{outputs:?}");
    assert_eq!(
        outputs
            .iter()
            .map(|o| o["deleted"].as_u64().unwrap())
            .sum::<u64>(),
        3
    );
}

#[test]
fn a_retention_below_a_day_is_refused_naming_the_key() {
    let Err(e) = closeloop::Config::from_toml_only("access_log_retention = \"180\"") else {
        panic!("180 seconds is refused");
    };
    assert_eq!(e.key, "access_log_retention");
    let c = closeloop::Config::from_toml_only("").unwrap();
    assert_eq!(c.access_log_retention, DAY * 180);
    assert!(c.access_log);
}

#[tokio::test]
async fn admins_search_the_log_by_reader_object_and_time_other_keys_get_403() {
    let app = spawn_app().await;
    let (rep, customer, deal) = customer_with_deal(&app).await;
    let before = chrono::Utc::now();
    ok(app.get(&format!("/api/v1/customers/{customer}")).await).await;
    ok(app.get(&format!("/api/v1/deals/{deal}")).await).await;
    let (status, _) = app
        .page_as(&rep, &format!("/sidebar/customers/{customer}"))
        .await;
    assert_eq!(status, 200);
    app.access_log.flush().await;

    let search = |q: &str| {
        let q = q.to_string();
        let app = &app;
        async move { ok(app.get(&format!("/api/v1/access-log{q}")).await).await }
    };
    let kinds = |page: &Value| -> Vec<String> {
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| {
                format!(
                    "{}/{}",
                    i["object_kind"].as_str().unwrap(),
                    i["purpose"].as_str().unwrap()
                )
            })
            .collect()
    };
    let all = search("").await;
    assert_eq!(kinds(&all), ["customer/view", "deal/view", "customer/view"]);
    let first = &all["items"][0];
    assert_eq!(first["object_id"], customer.as_str());
    assert_eq!(first["api_key_id"], admin_key_id(&app).await.as_str());
    assert_eq!(first["client_ip"], "127.0.0.1");
    assert!(first["at"].as_str().unwrap().ends_with('Z'), "{first}");

    let mine = search(&format!("?user={rep}")).await;
    assert_eq!(mine["items"].as_array().unwrap().len(), 1);
    assert_eq!(mine["items"][0]["user_id"], rep.as_str());
    assert_eq!(kinds(&search("?object_kind=deal").await), ["deal/view"]);
    assert_eq!(
        kinds(&search(&format!("?object_kind=customer&object_id={customer}")).await),
        ["customer/view", "customer/view"]
    );
    let since = (before - chrono::Duration::seconds(5)).to_rfc3339();
    let since = since.replace('+', "%2B");
    assert_eq!(kinds(&search(&format!("?since={since}")).await).len(), 3);
    assert!(kinds(&search(&format!("?until={since}")).await).is_empty());

    // Paged like every list.
    let p1 = search("?limit=2").await;
    assert_eq!(p1["items"].as_array().unwrap().len(), 2);
    let cursor = p1["next_cursor"].as_str().unwrap();
    let p2 = search(&format!("?limit=2&cursor={cursor}")).await;
    assert_eq!(kinds(&p2), ["customer/view"]);
    assert!(p2["next_cursor"].is_null());

    // Bad input is a clear 422.
    for q in ["?object_kind=phone", "?since=yesterday", "?user=a%20b"] {
        let (status, code, _) = error_code(app.get(&format!("/api/v1/access-log{q}")).await).await;
        assert_eq!((status, code.as_str()), (422, "invalid_input"), "{q}");
    }

    // Admin keys only.
    for role in [ApiKeyRole::Integration, ApiKeyRole::ReadOnly] {
        let key = app.key_with_role(role).await;
        let res = app
            .client
            .get(app.url("/api/v1/access-log"))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap();
        let (status, code, _) = error_code(res).await;
        assert_eq!((status, code.as_str()), (403, "forbidden"));
    }
    let doc = ok(app.get("/api/v1/openapi.json").await).await;
    assert!(doc["paths"]["/api/v1/access-log"]["get"].is_object());
}
