//! Official call records: stored once, linked to the rep and the customer's contact.

use closeloop::chat::event::Platform;
use closeloop::verification::calls::{self, CallRecord};
use serde_json::json;

use crate::helpers::spawn_app;

fn record(key: &str, phone: &str, secs: i64) -> CallRecord {
    CallRecord {
        platform: Platform::Wecom,
        record_key: key.into(),
        caller: "liming".into(),
        callee_phone: Some(phone.into()),
        started_at_ms: 1_764_206_400_000,
        duration_s: secs,
        call_type: Some("single".into()),
    }
}

#[tokio::test]
async fn call_records_are_stored_once_and_linked_by_phone_hash() {
    let app = spawn_app().await;
    let rep = app
        .create(
            "/api/v1/users",
            json!({"name": "李明", "roles": ["sales"], "identities": [{"platform": "wecom", "kind": "userid", "value": "liming"}]}),
        )
        .await;
    let customer = app
        .create(
            "/api/v1/customers",
            json!({"name": "华南智造", "contacts": [{"name": "张总", "phones": ["+86 138-0013-8000"]}]}),
        )
        .await;
    let state_cipher = app.cipher.clone();
    let recs = vec![
        record("1:liming:13800138000", "13800138000", 296),
        record("2:liming:13900001111", "13900001111", 30),
    ];
    let out = calls::store(
        &app.db,
        &state_cipher,
        &Default::default(),
        1,
        &app.org_id,
        &recs,
    )
    .await
    .unwrap();
    assert_eq!((out.inserted, out.duplicates, out.unmatched), (2, 0, 1));
    let again = calls::store(
        &app.db,
        &state_cipher,
        &Default::default(),
        2,
        &app.org_id,
        &recs,
    )
    .await
    .unwrap();
    assert_eq!(
        (again.inserted, again.duplicates),
        (0, 2),
        "a record is stored once"
    );

    let (user, cust, masked, enc, key): (Option<String>, Option<String>, String, String, String) = sqlx::query_as(
        "SELECT caller_user_id, customer_id, callee_phone_masked, callee_phone_enc, record_key FROM call_records \
         WHERE started_at = 1764206400000 AND duration_s = 296",
    )
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(user.as_deref(), rep["id"].as_str());
    assert_eq!(cust.as_deref(), customer["id"].as_str());
    assert_eq!(masked, "+86 138****8000");
    assert!(
        !enc.contains("13800138000"),
        "callee number stored in the clear"
    );
    assert!(
        !key.contains("13800138000"),
        "record key stored in the clear"
    );
}

/// The scheduled 公费电话 poll against the WeCom emulator: pages through the window,
/// stores each record once, links it, and uses the dial secret's token.
#[tokio::test]
async fn dial_records_are_polled_with_paging_and_stored_once() {
    use closeloop::emulator::wecom::Emulator;

    let emulator = Emulator::start(
        "wwcl0000000000001",
        vec![
            ("app-secret".to_string(), "app"),
            ("dial-secret".to_string(), "dial"),
        ],
    )
    .await;
    let app = crate::helpers::spawn_app_with(&format!(
        "[wecom]\ncorp_id = \"wwcl0000000000001\"\nagent_id = 1000002\nsecret = \"app-secret\"\n\
         dial_secret = \"dial-secret\"\ntoken = \"QDG6eK\"\n\
         encoding_aes_key = \"jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C\"\napi_base = \"{}\"\n",
        emulator.base_url()
    ))
    .await;
    let rep = app.create(
        "/api/v1/users",
        json!({"name": "李明", "identities": [{"platform": "wecom", "kind": "userid", "value": "liming"}]}),
    )
    .await;
    let customer = app
        .create(
            "/api/v1/customers",
            json!({"name": "华南智造", "contacts": [{"name": "张总", "phones": ["13800138000"]}]}),
        )
        .await;
    // The rep claims the call; the polled record verifies the claim.
    let claim = app
        .create(
            "/api/v1/events",
            json!({"actor": rep["id"], "customer": customer["id"], "action": "已电话沟通"}),
        )
        .await;
    assert_eq!(claim["verification"], "pending");
    let now = chrono::Utc::now().timestamp();
    let mut records: Vec<serde_json::Value> = (0..149)
        .map(|i| {
            json!({"call_time": now - 3600 + i, "total_duration": 1, "call_type": 1,
                   "caller": {"userid": "liming", "duration": 60},
                   "callee": [{"phone": format!("1390000{:04}", i), "duration": 60}]})
        })
        .collect();
    records.push(json!({"call_time": now - 60, "call_type": 1, "caller": {"userid": "liming", "duration": 300},
                        "callee": [{"phone": 13800138000u64, "duration": 296}]}));
    // Outside the window: not read.
    records.push(json!({"call_time": now - 3 * 86_400, "call_type": 1, "caller": {"userid": "liming", "duration": 9},
                        "callee": [{"phone": "13800138000", "duration": 9}]}));
    emulator.add_dial_records(records);

    let (schedules,): (i64,) = sqlx::query_as(
        "SELECT CAST(COUNT(*) AS BIGINT) FROM schedules WHERE kind = 'wecom.dial_poll'",
    )
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(
        schedules, 1,
        "the poll is scheduled when dial_secret is configured"
    );

    let poll = || async {
        closeloop::jobs::enqueue_now(
            &app.db,
            chrono::Utc::now().timestamp_millis(),
            closeloop::jobs::NewJob::new("wecom.dial_poll", json!({})).org(&app.org_id),
        )
        .await
        .unwrap();
        app.worker.drain().await.unwrap();
    };
    poll().await;
    assert_eq!(app.count("call_records").await, 150);
    let offsets: Vec<i64> = emulator
        .dial_requests()
        .iter()
        .map(|r| r["offset"].as_i64().unwrap())
        .collect();
    assert_eq!(offsets, [0, 100]);
    let (linked,): (i64,) =
        sqlx::query_as("SELECT CAST(COUNT(*) AS BIGINT) FROM call_records WHERE customer_id = $1")
            .bind(customer["id"].as_str().unwrap())
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    assert_eq!(linked, 1);
    let verification: serde_json::Value = app
        .get(&format!(
            "/api/v1/events/{}/verification",
            claim["id"].as_str().unwrap()
        ))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(verification["status"], "verified", "{verification}");
    assert_eq!(verification["duration_s"], 296);
    poll().await;
    assert_eq!(
        app.count("call_records").await,
        150,
        "a second poll stores nothing twice"
    );
    assert_eq!(
        app.count("jobs WHERE kind = 'wecom.dial_poll' AND status = 'done'")
            .await,
        2
    );
}
