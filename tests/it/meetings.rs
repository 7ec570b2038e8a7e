//! Meeting records as verification evidence, end to end against the DingTalk and Feishu
//! emulators: the polls are scheduled when `poll_meetings` is on, store each member's part
//! once, link the customer through an external participant, and verify the pending claim.

use std::sync::Arc;
use std::time::Duration;

use chrono::TimeZone;
use closeloop::clock::Clock;
use serde_json::{json, Value};

use crate::helpers::{spawn_app_clocked, ManualClock, TestApp};

const MINUTE: i64 = 60_000;

async fn scalar(app: &TestApp, sql: &str) -> i64 {
    let (n,): (i64,) = sqlx::query_as(sql).fetch_one(&app.db.pool).await.unwrap();
    n
}

/// A rep known on `platform` by `member_id`, a customer known there by `external_id`, and
/// the rep's pending claim of a call with the customer.
async fn rep_customer_claim(
    app: &TestApp,
    platform: &str,
    kind: &str,
    member_id: &str,
    external_id: &str,
) -> (String, String) {
    let rep = app
        .create(
            "/api/v1/users",
            json!({"name": "李明", "roles": ["sales"],
                   "identities": [{"platform": platform, "kind": kind, "value": member_id}]}),
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let customer = app.customer("华南智造", Some(&rep)).await;
    sqlx::query(
        "INSERT INTO customer_external_ids (org_id, platform, external_user_id, customer_id, created_at) \
         VALUES ($1, $2, $3, $4, 0)",
    )
    .bind(&app.org_id)
    .bind(platform)
    .bind(external_id)
    .bind(&customer)
    .execute(&app.db.pool)
    .await
    .unwrap();
    let claim = app
        .create(
            "/api/v1/events",
            json!({"actor": rep, "customer": customer, "action": "已电话沟通"}),
        )
        .await;
    assert_eq!(claim["verification"], "pending");
    (claim["id"].as_str().unwrap().to_string(), customer)
}

async fn verification(app: &TestApp, claim: &str) -> Value {
    app.get(&format!("/api/v1/events/{claim}/verification"))
        .await
        .json()
        .await
        .unwrap()
}

/// Queues one run of `kind` now and steps the worker until nothing is due.
async fn run(app: &TestApp, clock: &ManualClock, kind: &str, payload: Value) {
    closeloop::jobs::enqueue_now(
        &app.db,
        clock.now_ms(),
        closeloop::jobs::NewJob::new(kind, payload).org(&app.org_id),
    )
    .await
    .unwrap();
    app.worker.drain().await.unwrap();
}

mod dingtalk {
    use super::*;
    use closeloop::platform::dingtalk::emulator::{
        Emulator, Failure, CONFERENCE_MEMBERS, ORG_CONFERENCES,
    };

    const APP_KEY: &str = "dingclapp0000001";
    const APP_SECRET: &str = "app-secret-xyz";

    async fn setup() -> (TestApp, Emulator, Arc<ManualClock>) {
        let emu = Emulator::start(APP_KEY, APP_SECRET).await;
        let clock = ManualClock::new(chrono::Utc::now().timestamp_millis());
        let app = spawn_app_clocked(
            &format!(
                "[dingtalk]\napp_key = \"{APP_KEY}\"\napp_secret = \"{APP_SECRET}\"\n\
                 token = \"mryue\"\naes_key = \"Yue0EfdN5900c1ce5cf6A152c63DDe1808a60c5ecd7\"\n\
                 api_base = \"{0}\"\noapi_base = \"{0}\"\npoll_meetings = true\n",
                emu.base_url()
            ),
            clock.clone(),
        )
        .await;
        emu.set_directory(
            vec![],
            vec![json!({"userid": "liming-dd", "name": "李明", "unionid": "u-liming"})],
        );
        (app, emu, clock)
    }

    /// A conference with the rep, the customer's contact (an outsider) and someone
    /// DingTalk does not know as an employee.
    fn conference(now: i64, status: i64) -> Value {
        json!({
            "conferenceId": "67595244412cc3026ec4a260", "title": "华南智造方案沟通",
            "roomCode": "841000003", "status": status, "bizType": "0",
            "startTime": now - 10 * MINUTE, "endTime": now + 10 * MINUTE,
            "creatorId": "u-liming", "creatorNick": "李明",
            "members": [
                {"unionId": "u-liming", "userNick": "李明", "joinTime": now - 9 * MINUTE,
                 "leaveTime": now + 10 * MINUTE, "duration": 19 * MINUTE, "host": true,
                 "attendStatus": 6, "pstnJoin": false},
                {"unionId": "u-zhang", "userNick": "张总", "joinTime": now - 8 * MINUTE,
                 "leaveTime": now + 10 * MINUTE, "duration": 18 * MINUTE,
                 "attendStatus": 6, "outerOrgMember": true, "pstnJoin": false},
                {"unionId": "u-guest", "userNick": "访客", "joinTime": now - 8 * MINUTE,
                 "duration": 5 * MINUTE, "attendStatus": 6}
            ]
        })
    }

    /// Conferences in progress are seen by the poll, checked until they end, then each
    /// member's own time is stored once and backs the pending claim.
    #[tokio::test]
    async fn conference_seen_running_is_recorded_once_it_ends_and_verifies_the_claim() {
        let (app, emu, clock) = setup().await;
        let (claim, customer) =
            rep_customer_claim(&app, "dingtalk", "userid", "liming-dd", "u-zhang").await;
        let start = clock.now_ms();
        emu.set_conferences(vec![conference(start, 2)]);
        assert_eq!(
            scalar(
                &app,
                "SELECT CAST(COUNT(*) AS BIGINT) FROM schedules WHERE kind = 'dingtalk.conference_poll'"
            )
            .await,
            1,
            "the poll is scheduled when poll_meetings is on"
        );

        run(&app, &clock, "dingtalk.conference_poll", json!({})).await;
        run(&app, &clock, "dingtalk.conference_poll", json!({})).await;
        let fetches = "jobs WHERE kind = 'dingtalk.conference_fetch'";
        assert_eq!(
            app.count(fetches).await,
            1,
            "a conference seen twice is fetched once"
        );

        // Still running at the first check: nothing stored, a later check queued.
        clock.advance(Duration::from_secs(16 * 60));
        app.worker.drain().await.unwrap();
        assert_eq!(app.count("meeting_records").await, 0);
        assert_eq!(app.count(fetches).await, 2);
        assert_eq!(verification(&app, &claim).await["status"], "pending");

        emu.set_conferences(vec![conference(start, 1)]);
        clock.advance(Duration::from_secs(16 * 60));
        app.worker.drain().await.unwrap();
        assert_eq!(
            app.count("meeting_records").await,
            1,
            "one record: the outsider and the unknown guest are not members"
        );
        let (member, linked, kind, secs): (String, Option<String>, String, i64) = sqlx::query_as(
            "SELECT member_platform_id, customer_id, kind, duration_s FROM meeting_records",
        )
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
        assert_eq!(
            (member.as_str(), linked.as_deref(), kind.as_str(), secs),
            ("liming-dd", Some(customer.as_str()), "meeting", 19 * 60)
        );
        let v = verification(&app, &claim).await;
        assert_eq!(v["status"], "verified", "{v}");
        assert_eq!(v["evidence_source"], "meeting");
        assert_eq!(v["duration_s"], 19 * 60);

        // Fetching the ended conference again stores nothing twice.
        run(
            &app,
            &clock,
            "dingtalk.conference_fetch",
            json!({"conference_id": "67595244412cc3026ec4a260", "check": 99}),
        )
        .await;
        assert_eq!(app.count("meeting_records").await, 1);
        assert_eq!(app.count("jobs WHERE status = 'dead'").await, 0);
    }

    /// A refused token is refreshed within the call; a 5xx fails the job, which is retried
    /// and stores the record once.
    #[tokio::test]
    async fn token_errors_and_server_errors_are_retried_without_duplicates() {
        let (app, emu, clock) = setup().await;
        rep_customer_claim(&app, "dingtalk", "userid", "liming-dd", "u-zhang").await;
        let start = clock.now_ms();
        emu.set_conferences(vec![conference(start, 2)]);
        emu.fail_next(ORG_CONFERENCES, 1, Failure::Errcode(42001));
        run(&app, &clock, "dingtalk.conference_poll", json!({})).await;
        assert_eq!(
            app.count("jobs WHERE kind = 'dingtalk.conference_poll' AND status = 'done'")
                .await,
            1,
            "the refused token was replaced and the call repeated"
        );
        assert_eq!(emu.token_calls(), 2);
        emu.set_conferences(vec![conference(start, 1)]);

        emu.fail_next(CONFERENCE_MEMBERS, 1, Failure::Http5xx);
        clock.advance(Duration::from_secs(16 * 60));
        app.worker.drain().await.unwrap();
        assert_eq!(app.count("meeting_records").await, 0);
        assert_eq!(
            app.count("jobs WHERE kind = 'dingtalk.conference_fetch' AND status = 'queued'")
                .await,
            1,
            "the failed fetch waits for its retry"
        );
        clock.advance(Duration::from_secs(3600));
        app.worker.drain().await.unwrap();
        assert_eq!(app.count("meeting_records").await, 1);
        assert_eq!(
            app.count("jobs WHERE kind = 'dingtalk.conference_fetch' AND status = 'done'")
                .await,
            1
        );
        run(
            &app,
            &clock,
            "dingtalk.conference_fetch",
            json!({"conference_id": "67595244412cc3026ec4a260", "check": 99}),
        )
        .await;
        assert_eq!(app.count("meeting_records").await, 1, "stored once");
    }
}

mod feishu {
    use super::*;
    use closeloop::platform::feishu::emulator::{
        Emulator, Failure, TENANT_TOKEN_INVALID, VC_MEETING_LIST, VC_PARTICIPANT_LIST,
    };

    const APP_ID: &str = "cli_a1b2c3d4e5f6";
    const SECRET: &str = "feishu-app-secret";

    async fn setup() -> (TestApp, Emulator, Arc<ManualClock>) {
        let emu = Emulator::start(APP_ID, SECRET).await;
        let clock = ManualClock::new(chrono::Utc::now().timestamp_millis());
        let app = spawn_app_clocked(
            &format!(
                "[feishu]\napp_id = \"{APP_ID}\"\napp_secret = \"{SECRET}\"\n\
                 verification_token = \"vtoken-123\"\napi_base = \"{}\"\npoll_meetings = true\n",
                emu.base_url()
            ),
            clock.clone(),
        )
        .await;
        (app, emu, clock)
    }

    /// Feishu's own time format, in China time.
    fn at(ms: i64) -> String {
        chrono::FixedOffset::east_opt(8 * 3600)
            .unwrap()
            .timestamp_millis_opt(ms)
            .unwrap()
            .format("%Y.%m.%d %H:%M:%S (GMT+08:00)")
            .to_string()
    }

    /// A meeting with the rep (two joins) and the customer's contact, and an enterprise
    /// phone call of the rep with nobody linked.
    fn meetings(now: i64) -> Vec<Value> {
        vec![
            json!({
                "meeting_id": "705605196", "meeting_topic": "华南智造方案沟通", "meeting_type": 1,
                "organizer": "李明", "user_id": "liming-fs",
                "meeting_start_time": at(now - 25 * MINUTE), "meeting_end_time": at(now - 5 * MINUTE),
                "meeting_duration": "00:20:00", "number_of_participants": "2",
                "is_external": false, "meeting_subtype": 1,
                "meeting_instance_id": "7529416531681214468",
                "participants": [
                    {"participant_name": "李明", "user_id": "liming-fs", "join_time": at(now - 24 * MINUTE),
                     "leave_time": at(now - 16 * MINUTE), "time_in_meeting": "00:08:00", "is_external": false},
                    {"participant_name": "李明", "user_id": "liming-fs", "join_time": at(now - 15 * MINUTE),
                     "leave_time": at(now - 5 * MINUTE), "time_in_meeting": "00:10:00", "is_external": false},
                    {"participant_name": "张总", "user_id": "ou-ext-zhang", "join_time": at(now - 24 * MINUTE),
                     "time_in_meeting": "00:19:00", "is_external": true}
                ]
            }),
            json!({
                "meeting_id": "705605197", "meeting_topic": "回访", "meeting_subtype": 6,
                "meeting_start_time": at(now - 3 * 3_600_000), "meeting_end_time": at(now - 3 * 3_600_000 + 4 * MINUTE),
                "meeting_duration": "00:04:00", "meeting_instance_id": "7529416531681214999",
                "participants": [
                    {"participant_name": "李明", "user_id": "liming-fs", "time_in_meeting": "00:04:00",
                     "join_time": at(now - 3 * 3_600_000), "is_external": false}
                ]
            }),
            // Two days ago: outside the poll's window.
            json!({
                "meeting_id": "705605198", "meeting_topic": "旧会",
                "meeting_start_time": at(now - 48 * 3_600_000), "meeting_end_time": at(now - 47 * 3_600_000),
                "meeting_instance_id": "7529416531681215000",
                "participants": [{"user_id": "liming-fs", "time_in_meeting": "01:00:00"}]
            }),
        ]
    }

    #[tokio::test]
    async fn ended_meetings_are_stored_once_per_member_and_verify_the_claim() {
        let (app, emu, clock) = setup().await;
        let (claim, customer) =
            rep_customer_claim(&app, "feishu", "user_id", "liming-fs", "ou-ext-zhang").await;
        emu.set_vc_meetings(meetings(clock.now_ms()));
        assert_eq!(
            scalar(
                &app,
                "SELECT CAST(COUNT(*) AS BIGINT) FROM schedules WHERE kind = 'feishu.vc_poll'"
            )
            .await,
            1
        );

        run(&app, &clock, "feishu.vc_poll", json!({})).await;
        assert_eq!(app.count("meeting_records").await, 2);
        let rows: Vec<(String, String, Option<String>, i64)> = sqlx::query_as(
            "SELECT meeting_id, kind, customer_id, duration_s FROM meeting_records ORDER BY meeting_id",
        )
        .fetch_all(&app.db.pool)
        .await
        .unwrap();
        assert_eq!(
            rows,
            [
                (
                    "7529416531681214468".to_string(),
                    "meeting".to_string(),
                    Some(customer.clone()),
                    18 * 60
                ),
                (
                    "7529416531681214999".to_string(),
                    "call".to_string(),
                    None,
                    4 * 60
                ),
            ]
        );
        let v = verification(&app, &claim).await;
        assert_eq!(v["status"], "verified", "{v}");
        assert_eq!(v["evidence_source"], "meeting");
        assert_eq!(v["duration_s"], 18 * 60);

        run(&app, &clock, "feishu.vc_poll", json!({})).await;
        assert_eq!(
            app.count("meeting_records").await,
            2,
            "a second poll stores nothing twice"
        );
        assert_eq!(
            app.count("jobs WHERE kind = 'feishu.vc_poll' AND status = 'done'")
                .await,
            2
        );
    }

    #[tokio::test]
    async fn token_errors_and_server_errors_are_retried_without_duplicates() {
        let (app, emu, clock) = setup().await;
        rep_customer_claim(&app, "feishu", "user_id", "liming-fs", "ou-ext-zhang").await;
        emu.set_vc_meetings(meetings(clock.now_ms()));
        emu.fail_next(VC_MEETING_LIST, 1, Failure::Code(TENANT_TOKEN_INVALID));
        emu.fail_next(VC_PARTICIPANT_LIST, 1, Failure::Http5xx);
        let poll = "jobs WHERE kind = 'feishu.vc_poll'";

        run(&app, &clock, "feishu.vc_poll", json!({})).await;
        assert_eq!(emu.token_calls(), 2, "the refused token was replaced once");
        assert_eq!(
            app.count(&format!("{poll} AND status = 'queued'")).await,
            1,
            "the 5xx leaves the poll waiting for its retry"
        );
        let partial = app.count("meeting_records").await;
        assert!(partial < 2, "{partial}");

        clock.advance(Duration::from_secs(3600));
        app.worker.drain().await.unwrap();
        assert_eq!(
            app.count(&format!("{poll} AND status <> 'done'")).await,
            0,
            "the retry succeeded"
        );
        assert_eq!(app.count("meeting_records").await, 2);
        run(&app, &clock, "feishu.vc_poll", json!({})).await;
        assert_eq!(app.count("meeting_records").await, 2, "stored once");
    }
}
