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

/// The outputs of the finished runs of `kind`, oldest first.
async fn outputs(app: &TestApp, kind: &str) -> Vec<Value> {
    let rows: Vec<(String,)> =
        sqlx::query_as("SELECT output FROM jobs WHERE kind = $1 AND status = 'done' ORDER BY id")
            .bind(kind)
            .fetch_all(&app.db.pool)
            .await
            .unwrap();
    rows.iter()
        .map(|(o,)| serde_json::from_str(o).unwrap())
        .collect()
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
    use closeloop::emulator::dingtalk::{
        Emulator, Failure, CONFERENCE_MEMBERS, GETBYUNIONID, ORG_CONFERENCES,
    };
    use closeloop::platform::dingtalk::conference::MAX_CHECKS;

    const CONFERENCE_ID: &str = "67595244412cc3026ec4a260";

    const APP_KEY: &str = "dingclapp0000001";
    const APP_SECRET: &str = "app-secret-xyz";

    async fn setup() -> (TestApp, Emulator, Arc<ManualClock>) {
        setup_polling(true).await
    }

    async fn setup_polling(poll: bool) -> (TestApp, Emulator, Arc<ManualClock>) {
        let emu = Emulator::start(APP_KEY, APP_SECRET).await;
        let clock = ManualClock::new(chrono::Utc::now().timestamp_millis());
        let app = spawn_app_clocked(
            &format!(
                "[dingtalk]\napp_key = \"{APP_KEY}\"\napp_secret = \"{APP_SECRET}\"\n\
                 token = \"mryue\"\naes_key = \"Yue0EfdN5900c1ce5cf6A152c63DDe1808a60c5ecd7\"\n\
                 api_base = \"{0}\"\noapi_base = \"{0}\"\npoll_meetings = {poll}\n",
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

    /// A conference still running at the last check is given up on: its members' partial
    /// durations are not stored (they could never be corrected) and no further check is
    /// queued — also for a check beyond the last, as older versions queued.
    #[tokio::test]
    async fn a_conference_still_running_at_the_last_check_stores_nothing_and_stops() {
        let (app, emu, clock) = setup().await;
        rep_customer_claim(&app, "dingtalk", "userid", "liming-dd", "u-zhang").await;
        emu.set_conferences(vec![conference(clock.now_ms(), 2)]);
        let fetch = "dingtalk.conference_fetch";
        for check in [MAX_CHECKS, MAX_CHECKS + 1] {
            run(
                &app,
                &clock,
                fetch,
                json!({"conference_id": CONFERENCE_ID, "check": check}),
            )
            .await;
        }
        assert_eq!(
            app.count("meeting_records").await,
            0,
            "partial durations are not evidence"
        );
        assert_eq!(
            app.count("jobs WHERE kind = 'dingtalk.conference_fetch'")
                .await,
            2,
            "no check is queued after the last (a queued one would be due in 15 minutes)"
        );
        for output in outputs(&app, fetch).await {
            assert_eq!(
                (&output["ended"], &output["recheck"], &output["stored"]),
                (&json!(false), &json!(false), &json!(false)),
                "{output}"
            );
        }
    }

    /// Only errcode 60121 (no such employee) makes a unionId "not a member"; any other
    /// refusal of the lookup (here a missing permission) fails the fetch visibly instead
    /// of silently dropping the member's evidence.
    #[tokio::test]
    async fn a_refused_unionid_lookup_fails_the_fetch_instead_of_dropping_the_member() {
        let (app, emu, clock) = setup().await;
        rep_customer_claim(&app, "dingtalk", "userid", "liming-dd", "u-zhang").await;
        emu.set_conferences(vec![conference(clock.now_ms() - 20 * MINUTE, 1)]);
        emu.fail_next(GETBYUNIONID, 1, Failure::Errcode(60011));
        let payload = json!({"conference_id": CONFERENCE_ID, "check": 1});
        run(&app, &clock, "dingtalk.conference_fetch", payload.clone()).await;
        assert_eq!(app.count("meeting_records").await, 0);
        let (status, error): (String, Option<String>) = sqlx::query_as(
            "SELECT status, last_error FROM jobs WHERE kind = 'dingtalk.conference_fetch'",
        )
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
        assert_eq!(
            status, "dead",
            "the refusal is not taken for 'not a member'"
        );
        assert!(
            error
                .as_deref()
                .is_some_and(|e| e.contains("errcode 60011")),
            "{error:?}"
        );

        // Once the lookup answers, the member is recorded; the unknown guest (60121) is
        // still just not a member.
        run(&app, &clock, "dingtalk.conference_fetch", payload).await;
        assert_eq!(app.count("meeting_records").await, 1);
        assert_eq!(outputs(&app, "dingtalk.conference_fetch").await.len(), 1);
    }

    /// With only the event subscription (no poll): 视频会议状态变更 `conference_closed`
    /// pushed by DingTalk has the conference read at once; the re-push changes nothing.
    #[tokio::test]
    async fn a_closed_conference_event_records_it_without_the_poll() {
        use closeloop::emulator::dingtalk::PushTarget;
        let (app, emu, clock) = setup_polling(false).await;
        let (claim, customer) =
            rep_customer_claim(&app, "dingtalk", "userid", "liming-dd", "u-zhang").await;
        assert_eq!(
            scalar(
                &app,
                "SELECT CAST(COUNT(*) AS BIGINT) FROM schedules WHERE kind = 'dingtalk.conference_poll'"
            )
            .await,
            0,
            "no poll without poll_meetings"
        );
        emu.set_conferences(vec![conference(clock.now_ms() - 20 * MINUTE, 1)]);
        let target = PushTarget {
            url: app.url("/callback/dingtalk"),
            token: "mryue".into(),
            aes_key: "Yue0EfdN5900c1ce5cf6A152c63DDe1808a60c5ecd7".into(),
            owner_key: APP_KEY.into(),
        };
        let closed = json!({"EventType": "meeting_status_change", "EventTime": clock.now_ms(),
            "eventId": "conf-closed-1", "changeScene": "conference_closed", "statusSeqNum": 3,
            "openConfModel": {"conferenceId": "67595244412cc3026ec4a260", "status": 1,
                              "title": "华南智造方案沟通", "creatorId": "u-liming"}})
        .to_string();
        for _ in 0..2 {
            let pushed = emu.push_event(&target, &closed).await;
            assert!(
                pushed[0].success_reply,
                "answered with the encrypted success"
            );
        }
        app.worker.drain().await.unwrap();
        assert_eq!(
            app.count("jobs WHERE kind = 'dingtalk.conference_fetch'")
                .await,
            1
        );
        let (linked,): (Option<String>,) =
            sqlx::query_as("SELECT customer_id FROM meeting_records")
                .fetch_one(&app.db.pool)
                .await
                .unwrap();
        assert_eq!(linked.as_deref(), Some(customer.as_str()));
        let v = verification(&app, &claim).await;
        assert_eq!(v["status"], "verified", "{v}");
        assert_eq!(v["evidence_source"], "meeting");
    }
}

mod feishu {
    use super::*;
    use closeloop::emulator::feishu::{
        Emulator, Failure, TENANT_TOKEN_INVALID, VC_MEETING_LIST, VC_NO_MEETING,
        VC_PARTICIPANT_LIST,
    };

    const APP_ID: &str = "cli_a1b2c3d4e5f6";
    const SECRET: &str = "feishu-app-secret";

    async fn setup() -> (TestApp, Emulator, Arc<ManualClock>) {
        setup_polling(true).await
    }

    async fn setup_polling(poll: bool) -> (TestApp, Emulator, Arc<ManualClock>) {
        let emu = Emulator::start(APP_ID, SECRET).await;
        emu.set_retry_delays(vec![Duration::from_millis(10); 2]);
        let clock = ManualClock::new(chrono::Utc::now().timestamp_millis());
        let app = spawn_app_clocked(
            &format!(
                "[feishu]\napp_id = \"{APP_ID}\"\napp_secret = \"{SECRET}\"\n\
                 verification_token = \"vtoken-123\"\napi_base = \"{}\"\npoll_meetings = {poll}\n",
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

    /// The meeting ids of the stored records, in order.
    async fn stored_meetings(app: &TestApp) -> Vec<String> {
        let rows: Vec<(String,)> =
            sqlx::query_as("SELECT meeting_id FROM meeting_records ORDER BY meeting_id")
                .fetch_all(&app.db.pool)
                .await
                .unwrap();
        rows.into_iter().map(|(id,)| id).collect()
    }

    /// Feishu refusing one meeting's participants (126009, no such meeting) skips that
    /// meeting, not the whole poll: the later meetings are stored, and the refused one is
    /// asked for again by the next poll.
    #[tokio::test]
    async fn a_meeting_feishu_refuses_is_skipped_and_the_others_are_stored() {
        let (app, emu, clock) = setup().await;
        rep_customer_claim(&app, "feishu", "user_id", "liming-fs", "ou-ext-zhang").await;
        emu.set_vc_meetings(meetings(clock.now_ms()));
        emu.fail_next(VC_PARTICIPANT_LIST, 1, Failure::Code(VC_NO_MEETING));

        run(&app, &clock, "feishu.vc_poll", json!({})).await;
        assert_eq!(
            app.count("jobs WHERE kind = 'feishu.vc_poll' AND status <> 'done'")
                .await,
            0,
            "the poll succeeds"
        );
        assert_eq!(stored_meetings(&app).await, ["7529416531681214999"]);
        let output = &outputs(&app, "feishu.vc_poll").await[0];
        assert_eq!(
            (&output["read"], &output["skipped"]),
            (&json!(2), &json!(1))
        );

        run(&app, &clock, "feishu.vc_poll", json!({})).await;
        assert_eq!(
            stored_meetings(&app).await,
            ["7529416531681214468", "7529416531681214999"]
        );
        let output = &outputs(&app, "feishu.vc_poll").await[1];
        assert_eq!(
            (&output["read"], &output["skipped"]),
            (&json!(1), &json!(0))
        );
    }

    /// A listed meeting without `meeting_instance_id` is skipped rather than keyed some
    /// other way: the event path keys a meeting by its `id`, so an invented key could
    /// store the same meeting twice.
    #[tokio::test]
    async fn a_listed_meeting_without_an_instance_id_is_not_stored() {
        let (app, emu, clock) = setup().await;
        let mut list = meetings(clock.now_ms());
        list[1]
            .as_object_mut()
            .unwrap()
            .remove("meeting_instance_id");
        emu.set_vc_meetings(list);
        run(&app, &clock, "feishu.vc_poll", json!({})).await;
        assert_eq!(stored_meetings(&app).await, ["7529416531681214468"]);
        assert_eq!(
            app.count("jobs WHERE kind = 'feishu.vc_poll' AND status = 'done'")
                .await,
            1
        );
    }

    /// With only the event subscription (no poll): `vc.meeting.meeting_ended_v1` has the
    /// meeting read with its participants (`vc/v1/meetings/:id`); a re-push and a second
    /// event for the same meeting store nothing twice.
    #[tokio::test]
    async fn a_meeting_ended_event_records_it_without_the_poll() {
        use closeloop::emulator::feishu::{EventTarget, VC_MEETING};
        let (app, emu, clock) = setup_polling(false).await;
        let (claim, customer) =
            rep_customer_claim(&app, "feishu", "user_id", "liming-fs", "ou-ext-zhang").await;
        emu.set_vc_meetings(meetings(clock.now_ms()));
        let target = EventTarget {
            url: app.url("/callback/feishu"),
            encrypt_key: None,
            verification_token: "vtoken-123".into(),
        };
        let ended = emu.event(
            "vc.meeting.meeting_ended_v1",
            "vtoken-123",
            json!({"meeting": {"id": "7529416531681214468", "meeting_no": "705605196",
                               "topic": "华南智造方案沟通", "meeting_source": 1}}),
        );
        // The first read fails (Feishu 5xx): retried, stored once.
        emu.fail_next(VC_MEETING, 1, Failure::Http5xx);
        for _ in 0..2 {
            assert_eq!(emu.push(&target, &ended).await[0].status, 200);
        }
        app.worker.drain().await.unwrap();
        clock.advance(Duration::from_secs(600));
        app.worker.drain().await.unwrap();
        assert_eq!(
            app.count("jobs WHERE kind = 'feishu.meeting_fetch'").await,
            1
        );
        let rows: Vec<(String, Option<String>, String, i64)> = sqlx::query_as(
            "SELECT member_platform_id, customer_id, kind, duration_s FROM meeting_records",
        )
        .fetch_all(&app.db.pool)
        .await
        .unwrap();
        assert_eq!(
            rows,
            [(
                "liming-fs".to_string(),
                Some(customer.clone()),
                "call".to_string(),
                18 * 60
            )],
            "the rep's two joins summed; two people: a one-to-one call"
        );
        let v = verification(&app, &claim).await;
        assert_eq!(v["status"], "verified", "{v}");
        assert_eq!(v["evidence_source"], "meeting");

        // Feishu pushes the same meeting again under a new event id: nothing new stored.
        let again = emu.event(
            "vc.meeting.meeting_ended_v1",
            "vtoken-123",
            json!({"meeting": {"id": "7529416531681214468"}}),
        );
        assert_eq!(emu.push(&target, &again).await[0].status, 200);
        app.worker.drain().await.unwrap();
        assert_eq!(app.count("meeting_records").await, 1);
        assert_eq!(app.count("jobs WHERE status = 'dead'").await, 0);
        // The end is one tracking point, however often it is reported.
        let ended: Value = app
            .get("/api/v1/events?action=platform.meeting_ended")
            .await
            .json()
            .await
            .unwrap();
        let items = ended["items"].as_array().unwrap();
        assert_eq!(items.len(), 1, "{ended}");
        assert_eq!(items[0]["source"], "platform_event");
        assert_eq!(items[0]["actor_kind"], "platform");
        assert_eq!(items[0]["platform"], "feishu");
        assert_eq!(items[0]["customer"], Value::Null);
        assert_eq!(items[0]["external_id"], "meeting_ended:7529416531681214468");
        assert_eq!(items[0]["payload"]["meeting"], "7529416531681214468");
    }
}

/// An admin (or an integration) tells closeloop who a customer is on a platform, so that
/// meeting records with that outside participant count for the customer.
#[tokio::test]
async fn a_customer_is_linked_to_a_platform_id_once() {
    let app = crate::helpers::spawn_app().await;
    let rep = app.user("李明", &["sales"]).await;
    let a = app.customer("华南智造", Some(&rep)).await;
    let b = app.customer("西北重工", Some(&rep)).await;
    let link = |customer: String, body: Value| {
        let app = &app;
        async move {
            app.post(&format!("/api/v1/customers/{customer}/external-ids"), &body)
                .await
        }
    };
    let body = json!({"platform": "dingtalk", "external_user_id": "u-zhang"});
    assert_eq!(link(a.clone(), body.clone()).await.status(), 204);
    assert_eq!(
        link(a.clone(), body.clone()).await.status(),
        204,
        "again: a no-op"
    );
    let (status, code, _) = crate::helpers::error_code(link(b.clone(), body).await).await;
    assert_eq!((status, code.as_str()), (409, "external_id_taken"));
    let bad = json!({"platform": "slack", "external_user_id": "x"});
    assert_eq!(link(a.clone(), bad).await.status(), 422);
    let empty = json!({"platform": "feishu", "external_user_id": " "});
    assert_eq!(link(a.clone(), empty).await.status(), 422);
    let unknown = json!({"platform": "feishu", "external_user_id": "ou-1"});
    assert_eq!(link("nope".into(), unknown).await.status(), 404);
    let (n,): (i64,) = sqlx::query_as(
        "SELECT CAST(COUNT(*) AS BIGINT) FROM customer_external_ids WHERE customer_id = $1",
    )
    .bind(&a)
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(n, 1);
    assert_eq!(
        app.count("audit_log WHERE action = 'customer.external_id'")
            .await,
        1
    );
}
