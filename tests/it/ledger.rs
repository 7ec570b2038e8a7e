//! One ledger: the schema every kind of tracking point needs (issue 13).

use closeloop::db::Db;

use crate::helpers::{fresh_database, migrate_to_before};

/// The SQL migrations before the ledger knew actor kinds and external ids.
async fn migrate_to_before_actor_kinds(db: &Db) {
    migrate_to_before(db, "20261208000300").await
}

async fn exec(db: &Db, sql: &str) -> Result<u64, sqlx::Error> {
    sqlx::query(sql)
        .execute(&db.pool)
        .await
        .map(|r| r.rows_affected())
}

#[tokio::test]
async fn an_existing_ledger_gains_actor_kinds_and_nullable_columns_keeping_every_reference() {
    let dir = tempfile::tempdir().unwrap();
    let url = fresh_database(dir.path()).await;
    let db = Db::connect(&url).await.unwrap();
    migrate_to_before_actor_kinds(&db).await;
    for sql in [
        "INSERT INTO organisations (id, slug, name, timezone, is_default, created_at) VALUES ('org', 'o', 'o', 'Asia/Shanghai', 1, 0)",
        "INSERT INTO users (id, org_id, name, created_at, updated_at) VALUES ('u1', 'org', '李明', 0, 0)",
        "INSERT INTO customers (id, org_id, name, created_at, updated_at) VALUES ('c1', 'org', '华南智造', 0, 0)",
        "INSERT INTO tracking_points (id, org_id, actor_user_id, customer_id, action, occurred_at, source, idempotency_key) \
         VALUES ('p1', 'org', 'u1', 'c1', '已电话沟通', 1, 'sidebar', 'k1')",
        "INSERT INTO tracking_points (id, org_id, actor_user_id, customer_id, action, occurred_at, source) \
         VALUES ('p2', 'org', 'u1', 'c1', 'rule.repeat_limit', 2, 'system')",
        "INSERT INTO point_verifications (point_id, org_id, customer_id, actor_user_id, claim, status, occurred_at, window_closes_at, updated_at) \
         VALUES ('p1', 'org', 'c1', 'u1', 'call', 'pending', 1, 9, 1)",
    ] {
        exec(&db, sql).await.unwrap();
    }
    // A NOT NULL column refuses a point without a customer before the upgrade.
    assert!(exec(
        &db,
        "INSERT INTO tracking_points (id, org_id, actor_user_id, customer_id, action, occurred_at, source) \
         VALUES ('p0', 'org', 'u1', NULL, 'x', 1, 'system')"
    )
    .await
    .is_err());
    db.close().await;

    let db = Db::connect(&url).await.unwrap();
    db.migrate().await.unwrap();
    // Twice is the same as once.
    db.migrate().await.unwrap();

    let kinds: Vec<(String, String)> =
        sqlx::query_as("SELECT id, actor_kind FROM tracking_points ORDER BY id")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(
        kinds,
        [("p1".into(), "user".into()), ("p2".into(), "system".into())]
    );
    let (verified,): (String,) = sqlx::query_as(
        "SELECT p.action FROM point_verifications v JOIN tracking_points p ON p.id = v.point_id",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        verified, "已电话沟通",
        "the claim still points at its point"
    );
    assert!(
        exec(
            &db,
            "INSERT INTO point_verifications (point_id, org_id, customer_id, actor_user_id, claim, status, occurred_at, window_closes_at, updated_at) \
             VALUES ('gone', 'org', 'c1', 'u1', 'call', 'pending', 1, 9, 1)"
        )
        .await
        .is_err(),
        "the reference to the rebuilt table is enforced"
    );

    // A directory change: no customer, no member, keyed by the platform's id.
    exec(
        &db,
        "INSERT INTO tracking_points (id, org_id, actor_user_id, customer_id, action, occurred_at, source, platform, actor_kind, external_id) \
         VALUES ('p3', 'org', NULL, NULL, 'platform.directory_changed', 3, 'platform_event', 'wecom', 'platform', 'ev-1')",
    )
    .await
    .unwrap();
    // The platform's retry of the same event cannot write it twice...
    assert!(exec(
        &db,
        "INSERT INTO tracking_points (id, org_id, action, occurred_at, source, platform, actor_kind, external_id) \
         VALUES ('p4', 'org', 'platform.directory_changed', 4, 'platform_event', 'wecom', 'platform', 'ev-1')"
    )
    .await
    .is_err());
    // ...while the same id from another platform, or with no platform, is another point.
    exec(
        &db,
        "INSERT INTO tracking_points (id, org_id, action, occurred_at, source, platform, actor_kind, external_id) \
         VALUES ('p5', 'org', 'platform.directory_changed', 4, 'platform_event', 'feishu', 'platform', 'ev-1')",
    )
    .await
    .unwrap();
    exec(
        &db,
        "INSERT INTO tracking_points (id, org_id, action, occurred_at, source, actor_kind, external_id) \
         VALUES ('p6', 'org', 'chat.day', 4, 'api', 'user', 'c1:2026-12-07')",
    )
    .await
    .unwrap();
    assert!(exec(
        &db,
        "INSERT INTO tracking_points (id, org_id, action, occurred_at, source, actor_kind, external_id) \
         VALUES ('p7', 'org', 'chat.day', 5, 'api', 'user', 'c1:2026-12-07')"
    )
    .await
    .is_err());
    // References are still enforced, and so is the idempotency key.
    assert!(exec(
        &db,
        "INSERT INTO tracking_points (id, org_id, actor_user_id, customer_id, action, occurred_at, source) \
         VALUES ('p8', 'org', 'u1', 'nobody', 'x', 1, 'api')"
    )
    .await
    .is_err());
    assert!(exec(
        &db,
        "INSERT INTO tracking_points (id, org_id, actor_user_id, customer_id, action, occurred_at, source, idempotency_key) \
         VALUES ('p9', 'org', 'u1', 'c1', 'x', 1, 'api', 'k1')"
    )
    .await
    .is_err());
}

#[tokio::test]
async fn subscriptions_made_before_card_and_platform_points_keep_receiving_what_they_did() {
    let dir = tempfile::tempdir().unwrap();
    let url = fresh_database(dir.path()).await;
    let db = Db::connect(&url).await.unwrap();
    migrate_to_before(&db, "20261208000100").await;
    for sql in [
        "INSERT INTO organisations (id, slug, name, timezone, is_default, created_at) VALUES ('org', 'o', 'o', 'Asia/Shanghai', 1, 0)",
        "INSERT INTO webhooks (id, org_id, url, secret_enc, events, active, created_at) \
         VALUES ('w1', 'org', 'https://crm.example.com/hook', 'x', 'tracking_point.created', 1, 0)",
    ] {
        exec(&db, sql).await.unwrap();
    }
    db.migrate().await.unwrap();
    let hooks = closeloop::webhooks::list(&db, "org").await.unwrap();
    assert_eq!(hooks.len(), 1);
    let shown = serde_json::to_value(&hooks[0]).unwrap();
    assert_eq!(
        shown["sources"],
        serde_json::json!(["sidebar", "api", "system"])
    );
    assert_eq!(shown["actions"], serde_json::Value::Null);
    assert_eq!(shown["payload_version"], 1);
}
