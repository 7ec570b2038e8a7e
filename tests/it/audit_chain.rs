//! The audit log's hash chain (issue 15): sealing in batches, `closeloop audit verify`
//! naming the first changed, deleted or inserted entry, the daily anchor, and the search
//! API.

use std::path::Path;
use std::process::Command;

use closeloop::access::audit::{self, AuditEntry};
use closeloop::access::ApiKeyRole;
use closeloop::clock::{Clock, SystemClock};
use serde_json::{json, Value};
use sqlx::Row;

use crate::helpers::{on_postgres, spawn_app, TestApp, TEST_DATA_KEY};

fn now() -> i64 {
    SystemClock.now_ms()
}

/// `closeloop audit ARGS…` against the test app's database: (exit code, stdout, stderr).
pub fn cli(app: &TestApp, dir: &Path, args: &[&str]) -> (i32, String, String) {
    let mut cmd: Command = crate::cli::closeloop(dir);
    cmd.env("CLOSELOOP_DATABASE_URL", &app.database_url);
    if on_postgres() {
        cmd.env("CLOSELOOP_SECURITY__DATA_KEY", TEST_DATA_KEY);
    }
    let out = cmd.arg("audit").args(args).output().expect("run closeloop");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

/// Runs `audit verify` expecting a broken chain: exit 2, one line naming what broke.
fn broken(app: &TestApp, dir: &Path, args: &[&str]) -> String {
    let mut all = vec!["verify"];
    all.extend_from_slice(args);
    let (code, stdout, stderr) = cli(app, dir, &all);
    assert_eq!(code, 2, "stdout: {stdout}\nstderr: {stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    stderr
}

fn intact(app: &TestApp, dir: &Path, args: &[&str]) -> String {
    let mut all = vec!["verify"];
    all.extend_from_slice(args);
    let (code, stdout, stderr) = cli(app, dir, &all);
    assert_eq!(code, 0, "stdout: {stdout}\nstderr: {stderr}");
    assert!(stdout.contains("audit chain intact"), "{stdout}");
    stdout
}

/// The sealed chain: (id, seq, prev_hash, hash), by seq.
async fn chain(app: &TestApp) -> Vec<(String, i64, String, String)> {
    sqlx::query(
        "SELECT id, seq, prev_hash, hash FROM audit_log WHERE org_id = $1 AND seq IS NOT NULL ORDER BY seq",
    )
    .bind(&app.org_id)
    .fetch_all(&app.db.pool)
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get("id"), r.get("seq"), r.get("prev_hash"), r.get("hash")))
    .collect()
}

/// Five audited changes, sealed.
async fn five_sealed(app: &TestApp) -> Vec<(String, i64, String, String)> {
    for n in 0..5 {
        app.customer(&format!("客户{n}"), None).await;
    }
    audit::seal(&app.db, &app.org_id, now()).await.unwrap();
    let c = chain(app).await;
    assert!(c.len() >= 5, "{c:?}");
    c
}

async fn delete_entry(app: &TestApp, id: &str) {
    sqlx::query("DELETE FROM audit_log WHERE id = $1")
        .bind(id)
        .execute(&app.db.pool)
        .await
        .unwrap();
}

async fn unsealed(app: &TestApp) -> i64 {
    sqlx::query(
        "SELECT CAST(COUNT(*) AS BIGINT) AS n FROM audit_log WHERE org_id = $1 AND seq IS NULL",
    )
    .bind(&app.org_id)
    .fetch_one(&app.db.pool)
    .await
    .unwrap()
    .get("n")
}

#[tokio::test]
async fn entries_are_sealed_in_order_with_a_valid_chain_and_verify_prints_the_head() {
    let app = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    for n in 0..3 {
        app.customer(&format!("客户{n}"), None).await;
    }
    assert!(unsealed(&app).await >= 3, "writers insert unsealed entries");
    let s = audit::seal(&app.db, &app.org_id, now()).await.unwrap();
    assert_eq!(unsealed(&app).await, 0);
    let c = chain(&app).await;
    assert_eq!(s.sealed, c.len());
    let mut prev = audit::genesis(&app.org_id);
    for (i, (_, seq, prev_hash, hash)) in c.iter().enumerate() {
        assert_eq!(*seq, i as i64 + 1);
        assert_eq!(prev_hash, &prev);
        assert_eq!(hash.len(), 64);
        prev = hash.clone();
    }
    assert_eq!(s.head.seq, c.len() as i64);
    assert_eq!(s.head.hash, prev);
    // Sealed in id order: the order they were recorded in.
    let order: Vec<String> = sqlx::query("SELECT id FROM audit_log WHERE org_id = $1 ORDER BY id")
        .bind(&app.org_id)
        .fetch_all(&app.db.pool)
        .await
        .unwrap()
        .iter()
        .map(|r| r.get("id"))
        .collect();
    let by_seq: Vec<String> = c.iter().map(|e| e.0.clone()).collect();
    assert_eq!(order, by_seq);
    // A second pass seals nothing and keeps the head.
    let again = audit::seal(&app.db, &app.org_id, now()).await.unwrap();
    assert_eq!((again.sealed, again.head.clone()), (0, s.head.clone()));

    // New entries continue the chain; verify seals them first, then prints the head.
    app.customer("客户新", None).await;
    let out = intact(&app, dir.path(), &[]);
    let c = chain(&app).await;
    let (_, seq, prev_hash, hash) = c.last().unwrap();
    assert_eq!(prev_hash, &s.head.hash);
    assert!(out.contains(&format!("seq {seq}\nhash {hash}")), "{out}");
    let (code, head, _) = cli(&app, dir.path(), &["head"]);
    assert_eq!(code, 0);
    assert_eq!(head, format!("seq {seq}\nhash {hash}\n"));
    intact(&app, dir.path(), &["--anchor", &s.head.hash]);
}

#[tokio::test]
async fn a_changed_entry_is_named() {
    let app = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    let c = five_sealed(&app).await;
    let (id, _, _, _) = &c[2];
    sqlx::query("UPDATE audit_log SET detail = $1 WHERE id = $2")
        .bind(r#"{"contacts":7}"#)
        .bind(id)
        .execute(&app.db.pool)
        .await
        .unwrap();
    let line = broken(&app, dir.path(), &[]);
    assert!(
        line.contains(&format!("entry {id} (seq 3): changed")),
        "{line}"
    );
    // Changing who did it is caught the same way.
    sqlx::query("UPDATE audit_log SET detail = $1, actor_id = $2 WHERE id = $3")
        .bind(r#"{"contacts":1}"#)
        .bind("someone-else")
        .bind(id)
        .execute(&app.db.pool)
        .await
        .unwrap();
    let line = broken(&app, dir.path(), &[]);
    assert!(line.contains(&format!("entry {id} (seq 3)")), "{line}");
    // And so is a changed client IP.
    sqlx::query("UPDATE audit_log SET actor_id = (SELECT actor_id FROM audit_log WHERE id = $1), client_ip = '10.0.0.9' WHERE id = $2")
        .bind(&c[0].0)
        .bind(id)
        .execute(&app.db.pool)
        .await
        .unwrap();
    let line = broken(&app, dir.path(), &[]);
    assert!(
        line.contains(&format!("entry {id} (seq 3): changed")),
        "{line}"
    );
}

#[tokio::test]
async fn a_deleted_middle_entry_is_named() {
    let app = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    let c = five_sealed(&app).await;
    delete_entry(&app, &c[1].0).await;
    let line = broken(&app, dir.path(), &[]);
    assert!(
        line.contains(&format!(
            "entry {} (seq 3): deleted: the entry with seq 2 before it is missing",
            c[2].0
        )),
        "{line}"
    );
}

#[tokio::test]
async fn a_deleted_tail_is_caught_by_the_sealer_head_and_by_an_anchor() {
    let app = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    let c = five_sealed(&app).await;
    let (tail_id, tail_seq, tail_prev, anchor) = c.last().unwrap().clone();
    delete_entry(&app, &tail_id).await;
    let line = broken(&app, dir.path(), &[]);
    assert!(
        line.contains(&format!("the entries from seq {tail_seq} on are missing")),
        "{line}"
    );

    // Someone who also winds the sealer's head back is caught by the anchored head.
    sqlx::query("UPDATE audit_heads SET seq = $1, hash = $2 WHERE org_id = $3")
        .bind(tail_seq - 1)
        .bind(&tail_prev)
        .bind(&app.org_id)
        .execute(&app.db.pool)
        .await
        .unwrap();
    intact(&app, dir.path(), &[]);
    let line = broken(&app, dir.path(), &["--anchor", &anchor]);
    assert!(
        line.contains(&format!("the anchor {anchor} is not the hash of any entry")),
        "{line}"
    );
    // An anchor older than the cut still checks out.
    intact(&app, dir.path(), &["--anchor", &c[1].3]);
}

async fn forge(app: &TestApp, id: &str, at: i64, seq: Option<i64>, prev: Option<&str>) {
    sqlx::query(
        "INSERT INTO audit_log (id, org_id, at, actor_kind, actor_id, action, target_kind, target_id, detail, \
         seq, prev_hash, hash) VALUES ($1, $2, $3, 'user', 'forger', 'customer.update', 'customer', 'x', '{}', $4, $5, $6)",
    )
    .bind(id)
    .bind(&app.org_id)
    .bind(at)
    .bind(seq)
    .bind(prev)
    .bind(prev.map(|_| "0".repeat(64)))
    .execute(&app.db.pool)
    .await
    .unwrap();
}

#[tokio::test]
async fn a_forged_row_is_named() {
    let app = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    let c = five_sealed(&app).await;

    // A row slipped into the past: older than the sealed entries, so never sealed.
    let past = now() - 3 * 3600 * 1000;
    let ts = uuid::Timestamp::from_unix(
        uuid::NoContext,
        (past / 1000) as u64,
        ((past % 1000) * 1_000_000) as u32,
    );
    let backdated = uuid::Uuid::new_v7(ts).to_string();
    forge(&app, &backdated, past, None, None).await;
    let line = broken(&app, dir.path(), &[]);
    assert!(
        line.contains(&format!("entry {backdated} (unsealed): inserted")),
        "{line}"
    );
    // The minute sealer leaves it unsealed too.
    audit::seal(&app.db, &app.org_id, now()).await.unwrap();
    assert_eq!(unsealed(&app).await, 1);
    delete_entry(&app, &backdated).await;
    intact(&app, dir.path(), &[]);

    // A row given a place in the chain without the previous entry's hash.
    let next = chain(&app).await.len() as i64 + 1;
    let forged = uuid::Uuid::now_v7().to_string();
    forge(&app, &forged, now(), Some(next), Some(&c[0].3)).await;
    let line = broken(&app, dir.path(), &[]);
    assert!(
        line.contains(&format!("entry {forged} (seq {next}): inserted")),
        "{line}"
    );
}

/// Records a `test.write` entry at `at_ms` in a transaction of its own.
async fn write(db: &closeloop::db::Db, org_id: &str, at_ms: i64, target: &str) {
    let mut tx = db.begin().await.unwrap();
    audit::record(
        &mut tx,
        at_ms,
        AuditEntry {
            org_id: Some(org_id),
            actor_kind: "system",
            actor_id: None,
            action: "test.write",
            target_kind: Some("writer"),
            target_id: Some(target),
            detail: json!({}),
        },
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
}

#[tokio::test]
async fn a_long_run_keeping_its_start_time_is_sealed_not_taken_for_backdated() {
    let app = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    five_sealed(&app).await;
    // An import started two hours ago records with its start time, now.
    let start = now() - 2 * 3600 * 1000;
    for n in 0..3 {
        write(&app.db, &app.org_id, start, &format!("import-{n}")).await;
    }
    let s = audit::seal(&app.db, &app.org_id, now()).await.unwrap();
    assert_eq!((s.sealed, s.backdated.len()), (3, 0));
    assert_eq!(unsealed(&app).await, 0);
    intact(&app, dir.path(), &[]);
}

#[tokio::test]
async fn concurrent_writers_while_sealing_lose_nothing() {
    let app = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    let before: i64 =
        sqlx::query("SELECT CAST(COUNT(*) AS BIGINT) AS n FROM audit_log WHERE org_id = $1")
            .bind(&app.org_id)
            .fetch_one(&app.db.pool)
            .await
            .unwrap()
            .get("n");
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let db = app.db.clone();
            let org = app.org_id.clone();
            tokio::spawn(async move {
                for i in 0..20 {
                    write(&db, &org, now(), &format!("{w}-{i}")).await;
                }
            })
        })
        .collect();
    // Two sealers run all the while, as two replicas would.
    let sealers: Vec<_> = (0..2)
        .map(|_| {
            let db = app.db.clone();
            let org = app.org_id.clone();
            tokio::spawn(async move {
                for _ in 0..15 {
                    audit::seal(&db, &org, now()).await.unwrap();
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();
    for t in writers.into_iter().chain(sealers) {
        t.await.unwrap();
    }
    audit::seal(&app.db, &app.org_id, now()).await.unwrap();
    let c = chain(&app).await;
    assert_eq!(c.len() as i64, before + 80, "every entry sealed once");
    assert_eq!(unsealed(&app).await, 0);
    assert!(c.iter().enumerate().all(|(i, e)| e.1 == i as i64 + 1));
    intact(&app, dir.path(), &[]);
}

async fn search(app: &TestApp, query: &str) -> Vec<Value> {
    let res = app.get(&format!("/api/v1/audit?{query}")).await;
    assert_eq!(res.status(), 200, "{query}");
    let body: Value = res.json().await.unwrap();
    body["items"].as_array().unwrap().clone()
}

fn actions(items: &[Value]) -> Vec<String> {
    items
        .iter()
        .map(|i| i["action"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn the_audit_log_is_searched_by_customer_user_action_and_time() {
    let app = spawn_app().await;
    let a = app.customer("甲公司", None).await;
    let b = app.customer("乙公司", None).await;
    let res = app
        .patch(
            &format!("/api/v1/customers/{a}"),
            &json!({"name": "甲公司二"}),
        )
        .await;
    assert_eq!(res.status(), 200);
    // An entry about a deal that names the customer in its detail, by a member.
    let user = app.user("王五", &["sales"]).await;
    let mut tx = app.db.begin().await.unwrap();
    audit::record(
        &mut tx,
        now(),
        AuditEntry {
            org_id: Some(&app.org_id),
            actor_kind: "user",
            actor_id: Some(&user),
            action: "deal.reassigned",
            target_kind: Some("deal"),
            target_id: Some("deal-1"),
            detail: json!({"customer_id": a}),
        },
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();

    let of_a = search(&app, &format!("customer={a}")).await;
    assert_eq!(
        actions(&of_a),
        ["customer.create", "customer.update", "deal.reassigned"]
    );
    let of_b = search(&app, &format!("customer={b}")).await;
    assert_eq!(actions(&of_b), ["customer.create"]);
    assert_eq!(of_b[0]["target_id"], json!(b));
    // Ids only: the customer's name is in no entry.
    let all = search(&app, "limit=200").await;
    assert!(!Value::Array(all.clone()).to_string().contains("甲公司"));

    let by_user = search(&app, &format!("user={user}")).await;
    assert_eq!(actions(&by_user), ["deal.reassigned"]);
    let updates = search(&app, "action=customer.update").await;
    assert_eq!(updates.len(), 1);
    assert_eq!(updates[0]["target_id"], json!(a));

    // IP: the API requests' entries carry the client's address, the direct entry none.
    let from_here = search(&app, "ip=127.0.0.1&limit=200").await;
    assert!(actions(&from_here).contains(&"customer.update".to_string()));
    assert!(!actions(&from_here).contains(&"deal.reassigned".to_string()));
    assert!(from_here
        .iter()
        .all(|i| i["client_ip"] == json!("127.0.0.1")));
    assert!(search(&app, "ip=203.0.113.7").await.is_empty());

    // Time: a window ending before everything is empty; today's date holds it all.
    assert!(search(&app, "to=2020-01-01").await.is_empty());
    assert!(
        search(&app, "from=2020-01-01T00:00:00Z&to=2020-01-02T00:00:00Z")
            .await
            .is_empty()
    );
    let future = chrono::Utc::now() + chrono::Duration::days(2);
    assert!(search(&app, &format!("from={}", future.format("%Y-%m-%d")))
        .await
        .is_empty());
    let today = search(
        &app,
        &format!("from=2020-01-01&to={}&limit=200", future.format("%Y-%m-%d")),
    )
    .await;
    assert_eq!(today.len(), all.len());

    // Paged like the other lists.
    let res = app.get("/api/v1/audit?limit=1").await;
    let page: Value = res.json().await.unwrap();
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    let cursor = page["next_cursor"].as_str().expect("a next page");
    let next = search(&app, &format!("limit=1&cursor={cursor}")).await;
    assert_ne!(next[0]["id"], page["items"][0]["id"]);

    // Bad input is refused.
    for bad in [
        "from=yesterday",
        "to=2026-13-01",
        "customer=a%20b",
        "ip=localhost",
    ] {
        let res = app.get(&format!("/api/v1/audit?{bad}")).await;
        assert_eq!(res.status(), 422, "{bad}");
    }
}

#[tokio::test]
async fn only_admin_keys_search_the_audit_log() {
    let app = spawn_app().await;
    for role in [ApiKeyRole::ReadOnly, ApiKeyRole::Integration] {
        let key = app.key_with_role(role).await;
        let res = app
            .client
            .get(app.url("/api/v1/audit"))
            .bearer_auth(key)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 403, "{role:?}");
    }
    let res = app
        .client
        .get(app.url("/api/v1/audit"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    assert_eq!(app.get("/api/v1/audit").await.status(), 200);
}

#[tokio::test]
async fn the_daily_anchor_records_the_head_and_sends_it_to_the_security_officer() {
    let app = spawn_app().await;
    let officer = app.user("赵六", &["security"]).await;
    let admin = app.user("钱七", &["admin"]).await;
    app.customer("丙公司", None).await;
    closeloop::jobs::schedule::run_now(
        &app.db,
        now(),
        Some(&app.org_id),
        "audit.anchor",
        &closeloop::access::Actor::cli(),
    )
    .await
    .unwrap();
    app.worker.drain().await.unwrap();
    let row =
        sqlx::query("SELECT detail FROM audit_log WHERE org_id = $1 AND action = 'audit.anchor'")
            .bind(&app.org_id)
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    let detail: Value = serde_json::from_str(&row.get::<String, _>("detail")).unwrap();
    let c = chain(&app).await;
    // The anchored head is the chain as it stood before the anchor's own entry.
    let anchored = c
        .iter()
        .find(|e| Some(e.1) == detail["seq"].as_i64())
        .expect("anchored entry in the chain");
    assert_eq!(detail["hash"].as_str(), Some(anchored.3.as_str()));
    let recipients: Vec<String> =
        sqlx::query("SELECT recipient_user_id FROM cards WHERE purpose = 'audit.anchor'")
            .fetch_all(&app.db.pool)
            .await
            .unwrap()
            .iter()
            .map(|r| r.get("recipient_user_id"))
            .collect();
    assert_eq!(
        recipients,
        [officer],
        "the security officer, not the admin {admin}"
    );
    let dir = tempfile::tempdir().unwrap();
    intact(
        &app,
        dir.path(),
        &["--anchor", detail["hash"].as_str().unwrap()],
    );
}
