//! Weekly credibility per rep: counts and ratios for a past week, one alert card to the
//! faking rep's superior, one review task and notice for that rep, none for the honest
//! one, and nothing twice when the week is computed again (on demand or by the job).

use chrono::NaiveDate;
use closeloop::credibility::{self, Week};
use closeloop::db::new_id;
use closeloop::rules::Rules;
use serde_json::{json, Value};

use crate::helpers::{spawn_app, TestApp};

const TZ: chrono_tz::Tz = chrono_tz::Asia::Shanghai;

/// A recorded 「已电话沟通」 claim with its verification outcome.
async fn call(app: &TestApp, rep: &str, customer: &str, at: i64, status: &str) {
    let id = new_id();
    sqlx::query(
        "INSERT INTO tracking_points (id, org_id, actor_user_id, customer_id, action, occurred_at, source, verification) \
         VALUES ($1, $2, $3, $4, '已电话沟通', $5, 'sidebar', $6)",
    )
    .bind(&id)
    .bind(&app.org_id)
    .bind(rep)
    .bind(customer)
    .bind(at)
    .bind(status)
    .execute(&app.db.pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO point_verifications (point_id, org_id, customer_id, actor_user_id, claim, status, occurred_at, \
         window_closes_at, decided_at, updated_at) VALUES ($1, $2, $3, $4, 'call', $5, $6, $7, $7, $7)",
    )
    .bind(&id)
    .bind(&app.org_id)
    .bind(customer)
    .bind(rep)
    .bind(status)
    .bind(at)
    .bind(at + 1_800_000)
    .execute(&app.db.pool)
    .await
    .unwrap();
}

/// A proposal link sent by `rep` at `at`, opened or not.
async fn proposal_link(app: &TestApp, rep: &str, customer: &str, at: i64, opened: bool) {
    let blob = new_id();
    sqlx::query(
        "INSERT INTO blobs (id, org_id, sha256, size_bytes, content_type, filename_enc, storage_key, uploaded_by, created_at) \
         VALUES ($1, $2, $3, 3, 'application/pdf', $6, $3, $4, $5)",
    )
    .bind(&blob)
    .bind(&app.org_id)
    .bind(new_id())
    .bind(rep)
    .bind(at)
    .bind(app.cipher.encrypt("blobs.filename", "方案.pdf"))
    .execute(&app.db.pool)
    .await
    .unwrap();
    let document = new_id();
    sqlx::query(
        "INSERT INTO documents (id, org_id, customer_id, kind, blob_id, uploaded_by, created_at) \
         VALUES ($1, $2, $3, 'proposal', $4, $5, $6)",
    )
    .bind(&document)
    .bind(&app.org_id)
    .bind(customer)
    .bind(&blob)
    .bind(rep)
    .bind(at)
    .execute(&app.db.pool)
    .await
    .unwrap();
    // Sending writes the rep's `document.sent` point (from the sidebar), as a send does.
    let sent = new_id();
    sqlx::query(
        "INSERT INTO tracking_points (id, org_id, actor_user_id, customer_id, action, occurred_at, source, actor_kind, verification) \
         VALUES ($1, $2, $3, $4, 'document.sent', $5, 'sidebar', 'user', 'not_applicable')",
    )
    .bind(&sent)
    .bind(&app.org_id)
    .bind(rep)
    .bind(customer)
    .bind(at)
    .execute(&app.db.pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO document_links (id, org_id, document_id, customer_id, token_hash, sent_by, sent_at, expires_at, \
         first_opened_at, open_count, sent_point_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(new_id())
    .bind(&app.org_id)
    .bind(&document)
    .bind(customer)
    .bind(new_id())
    .bind(rep)
    .bind(at)
    .bind(at + 30 * 86_400_000)
    .bind(opened.then_some(at + 3_600_000))
    .bind(i64::from(opened))
    .bind(&sent)
    .execute(&app.db.pool)
    .await
    .unwrap();
}

struct Team {
    honest: String,
    faking: String,
    honest_boss: String,
    faking_boss: String,
}

async fn rep(app: &TestApp, name: &str, boss: &str) -> String {
    let u = app
        .create(
            "/api/v1/users",
            json!({"name": name, "roles": ["sales"], "superiors": [boss]}),
        )
        .await;
    u["id"].as_str().unwrap().to_string()
}

async fn team(app: &TestApp) -> Team {
    let honest_boss = app.user("王经理", &["manager"]).await;
    let faking_boss = app.user("赵经理", &["manager"]).await;
    let honest = rep(app, "李明", &honest_boss).await;
    let faking = rep(app, "张伟", &faking_boss).await;
    Team {
        honest,
        faking,
        honest_boss,
        faking_boss,
    }
}

/// Two reps' records in the week of 2025-03-03 (and a little outside it).
async fn a_week_of_records(app: &TestApp, t: &Team) -> Week {
    let week = Week::containing(NaiveDate::from_ymd_opt(2025, 3, 5).unwrap(), TZ).unwrap();
    let customer = app.customer("华南智造", Some(&t.honest)).await;
    let hour = 3_600_000;
    let at = |h: i64| week.start_ms + h * hour;
    // Honest: 3 of 4 calls verified (0.75), both proposals opened (1.0).
    for (i, status) in ["verified", "verified", "attested", "too_short"]
        .iter()
        .enumerate()
    {
        call(app, &t.honest, &customer, at(10 + 24 * i as i64), status).await;
    }
    proposal_link(app, &t.honest, &customer, at(30), true).await;
    proposal_link(app, &t.honest, &customer, at(50), true).await;
    // Faking: 1 of 4 verified (0.25), 1 of 3 proposals opened; the first call at the
    // very start of the week counts, the verified ones just outside it do not.
    call(app, &t.faking, &customer, week.start_ms, "unverified").await;
    call(app, &t.faking, &customer, at(20), "verified").await;
    call(app, &t.faking, &customer, at(21), "unverified").await;
    call(app, &t.faking, &customer, at(22), "pending").await;
    call(app, &t.faking, &customer, week.start_ms - 1, "verified").await;
    call(app, &t.faking, &customer, week.end_ms, "verified").await;
    proposal_link(app, &t.faking, &customer, at(40), true).await;
    proposal_link(app, &t.faking, &customer, at(41), false).await;
    proposal_link(app, &t.faking, &customer, at(42), false).await;
    proposal_link(app, &t.faking, &customer, week.end_ms + 1, true).await;
    week
}

/// The credibility cards sent: recipient, purpose and the card model (decrypted).
async fn cards(app: &TestApp) -> Vec<(String, String, String)> {
    let rows: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT recipient_user_id, purpose, content_enc FROM cards WHERE purpose LIKE 'credibility.%' ORDER BY purpose",
    )
    .fetch_all(&app.db.pool)
    .await
    .unwrap();
    rows.into_iter()
        .map(|(to, purpose, sealed)| {
            let content = app.cipher.decrypt("cards.content", &sealed).unwrap();
            (to, purpose, content)
        })
        .collect()
}

async fn tasks(app: &TestApp) -> Vec<(String, String, String, String, i64, i64)> {
    sqlx::query_as(
        "SELECT assignee_user_id, kind, title, status, due_at, created_at FROM tasks ORDER BY id",
    )
    .fetch_all(&app.db.pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_faking_rep_is_alerted_once_and_an_honest_one_never() {
    let app = spawn_app().await;
    let t = team(&app).await;
    let week = a_week_of_records(&app, &t).await;
    let rules = Rules::new(app.db.clone())
        .current(&app.org_id)
        .await
        .unwrap();
    let now = chrono::Utc::now().timestamp_millis();

    let reps = credibility::run_week(
        &app.db,
        &app.cipher,
        &rules.credibility,
        now,
        &app.org_id,
        TZ,
        &week,
    )
    .await
    .unwrap();
    assert_eq!(reps.len(), 2);
    let of = |id: &str| reps.iter().find(|r| r.user == id).unwrap().clone();
    let honest = of(&t.honest);
    assert_eq!(
        (honest.calls_recorded, honest.calls_verified),
        (4, 3),
        "attested counts as verified"
    );
    assert_eq!(honest.call_ratio, Some(0.75));
    assert_eq!((honest.proposals_sent, honest.proposals_opened), (2, 2));
    assert_eq!(honest.open_ratio, Some(1.0));
    assert!(!honest.below_threshold && !honest.alerted);
    let faking = of(&t.faking);
    assert_eq!((faking.calls_recorded, faking.calls_verified), (4, 1));
    assert_eq!(faking.call_ratio, Some(0.25));
    assert_eq!((faking.proposals_sent, faking.proposals_opened), (3, 1));
    assert_eq!(faking.open_ratio, Some(1.0 / 3.0));
    assert!(faking.below_threshold && faking.alerted);
    assert_eq!(faking.week_start, "2025-03-03");
    assert_eq!(faking.week_end, "2025-03-09");
    assert_eq!(faking.name.as_deref(), Some("张伟"));

    // One alert to the faking rep's superior, one notice to the rep; none for the honest.
    let sent = cards(&app).await;
    let who: Vec<(&str, &str)> = sent
        .iter()
        .map(|(r, p, _)| (r.as_str(), p.as_str()))
        .collect();
    assert_eq!(
        who,
        [
            (t.faking_boss.as_str(), credibility::ALERT),
            (t.faking.as_str(), credibility::NOTICE)
        ]
    );
    assert!(!sent.iter().any(|(r, _, _)| *r == t.honest_boss));
    let alert: Value = serde_json::from_str(&sent[0].2).unwrap();
    let text = alert.to_string();
    for word in [
        "张伟",
        "0.25（1/4）",
        "0.33（1/3）",
        "2025年3月3日至3月9日",
        "0.70",
    ] {
        assert!(
            text.contains(word),
            "`{word}` missing from the alert: {text}"
        );
    }
    let tasks_now = tasks(&app).await;
    assert_eq!(tasks_now.len(), 1);
    let (assignee, kind, title, status, due, created) = &tasks_now[0];
    assert_eq!(assignee, &t.faking);
    assert_eq!(kind, credibility::TASK_KIND);
    assert_eq!(title, "《合规跟进指引》学习与行为复盘");
    assert_eq!(status, "open");
    assert_eq!(due - created, 3 * 86_400_000);

    let stored: Vec<(String, i64, i64, i64)> = sqlx::query_as(
        "SELECT user_id, calls_recorded, calls_verified, alerted FROM credibility_weekly WHERE week_start = $1 \
         ORDER BY user_id",
    )
    .bind(week.start_ms)
    .fetch_all(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(stored.len(), 2);
    assert!(stored.contains(&(t.faking.clone(), 4, 1, 1)));
    assert!(stored.contains(&(t.honest.clone(), 4, 3, 0)));

    // Computing the week again changes nothing: no second card or task.
    let again = credibility::run_week(
        &app.db,
        &app.cipher,
        &rules.credibility,
        now + 1,
        &app.org_id,
        TZ,
        &week,
    )
    .await
    .unwrap();
    assert_eq!(again.iter().filter(|r| r.alerted).count(), 1);
    assert_eq!(cards(&app).await.len(), 2);
    assert_eq!(tasks(&app).await.len(), 1);
    assert_eq!(app.count("credibility_weekly").await, 2);

    // So does the scheduled job for that week (Monday 08:00 after it).
    let (schedules,): (i64,) = sqlx::query_as(
        "SELECT CAST(COUNT(*) AS BIGINT) FROM schedules WHERE kind = $1 AND cron = $2",
    )
    .bind(credibility::KIND)
    .bind(credibility::CRON)
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(schedules, 1, "the weekly job is scheduled");
    closeloop::jobs::enqueue_now(
        &app.db,
        now,
        closeloop::jobs::NewJob::new(
            credibility::KIND,
            json!({"scheduled_for": "2025-03-10T00:00:00.000Z"}),
        )
        .org(&app.org_id),
    )
    .await
    .unwrap();
    app.worker.drain().await.unwrap();
    let (done,): (i64,) = sqlx::query_as(
        "SELECT CAST(COUNT(*) AS BIGINT) FROM jobs WHERE kind = $1 AND status = 'done'",
    )
    .bind(credibility::KIND)
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(done, 1);
    assert_eq!(cards(&app).await.len(), 2);
    assert_eq!(tasks(&app).await.len(), 1);
}

#[tokio::test]
async fn the_job_computes_the_week_before_its_tick() {
    let app = spawn_app().await;
    let t = team(&app).await;
    let week = a_week_of_records(&app, &t).await;
    let now = chrono::Utc::now().timestamp_millis();
    // Monday 2025-03-10 08:00 in Shanghai.
    closeloop::jobs::enqueue_now(
        &app.db,
        now,
        closeloop::jobs::NewJob::new(
            credibility::KIND,
            json!({"scheduled_for": "2025-03-10T00:00:00.000Z"}),
        )
        .org(&app.org_id),
    )
    .await
    .unwrap();
    app.worker.drain().await.unwrap();
    let alerted: Vec<(String, i64)> = sqlx::query_as(
        "SELECT user_id, alerted FROM credibility_weekly WHERE week_start = $1 ORDER BY user_id",
    )
    .bind(week.start_ms)
    .fetch_all(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(alerted.len(), 2);
    assert!(alerted.contains(&(t.faking.clone(), 1)));
    assert_eq!(cards(&app).await.len(), 2);
    assert_eq!(tasks(&app).await.len(), 1);
}

#[tokio::test]
async fn credibility_and_tasks_are_listed_over_the_api() {
    let app = spawn_app().await;
    let t = team(&app).await;
    a_week_of_records(&app, &t).await;

    // Reading the week computes it without storing or alerting anything.
    let page: Value = app
        .get("/api/v1/credibility?week=2025-03-09")
        .await
        .json()
        .await
        .unwrap();
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{page}");
    let faking = items
        .iter()
        .find(|i| i["user"] == t.faking.as_str())
        .unwrap();
    assert_eq!(faking["call_ratio"], 0.25);
    assert_eq!(faking["proposals_sent"], 3);
    assert_eq!(faking["below_threshold"], true);
    assert_eq!(faking["alerted"], false);
    assert_eq!(faking["week_start"], "2025-03-03");
    assert!(page["next_cursor"].is_null());
    assert_eq!(app.count("credibility_weekly").await, 0);
    assert_eq!(app.count("tasks").await, 0);

    let first: Value = app
        .get("/api/v1/credibility?week=2025-03-05&limit=1")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(first["items"].as_array().unwrap().len(), 1);
    let cursor = first["next_cursor"].as_str().unwrap();
    let second: Value = app
        .get(&format!(
            "/api/v1/credibility?week=2025-03-05&limit=1&cursor={cursor}"
        ))
        .await
        .json()
        .await
        .unwrap();
    assert_ne!(second["items"][0]["user"], first["items"][0]["user"]);
    assert!(second["next_cursor"].is_null());

    let res = app.get("/api/v1/credibility?week=last-week").await;
    assert_eq!(res.status(), 422);
    let empty: Value = app.get("/api/v1/credibility").await.json().await.unwrap();
    assert_eq!(empty["items"], json!([]), "last week had no records");

    let week = Week::containing(NaiveDate::from_ymd_opt(2025, 3, 5).unwrap(), TZ).unwrap();
    let rules = Rules::new(app.db.clone())
        .current(&app.org_id)
        .await
        .unwrap();
    credibility::run_week(
        &app.db,
        &app.cipher,
        &rules.credibility,
        chrono::Utc::now().timestamp_millis(),
        &app.org_id,
        TZ,
        &week,
    )
    .await
    .unwrap();
    let tasks: Value = app
        .get(&format!("/api/v1/tasks?assignee={}&status=open", t.faking))
        .await
        .json()
        .await
        .unwrap();
    let items = tasks["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{tasks}");
    assert_eq!(items[0]["kind"], "credibility_review");
    assert_eq!(items[0]["title"], "《合规跟进指引》学习与行为复盘");
    assert_eq!(items[0]["detail"]["calls_recorded"], 4);
    let none: Value = app
        .get(&format!("/api/v1/tasks?assignee={}&status=open", t.honest))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(none["items"], json!([]));
    assert_eq!(app.get("/api/v1/tasks?status=later").await.status(), 422);
    let alerted: Value = app
        .get("/api/v1/credibility?week=2025-03-05")
        .await
        .json()
        .await
        .unwrap();
    let faking = alerted["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["user"] == t.faking.as_str())
        .unwrap();
    assert_eq!(faking["alerted"], true);
}
