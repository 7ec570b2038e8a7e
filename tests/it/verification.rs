//! Official call records: stored once, linked to the rep and the customer's contact.

use closeloop::platform::event::Platform;
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
    let out = calls::store(&app.db, &state_cipher, 1, &app.org_id, &recs)
        .await
        .unwrap();
    assert_eq!((out.inserted, out.duplicates, out.unmatched), (2, 0, 1));
    let again = calls::store(&app.db, &state_cipher, 2, &app.org_id, &recs)
        .await
        .unwrap();
    assert_eq!(
        (again.inserted, again.duplicates),
        (0, 2),
        "a record is stored once"
    );

    let (user, cust, masked, enc): (Option<String>, Option<String>, String, String) = sqlx::query_as(
        "SELECT caller_user_id, customer_id, callee_phone_masked, callee_phone_enc FROM call_records \
         WHERE record_key = '1:liming:13800138000'",
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
}
