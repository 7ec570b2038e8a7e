//! Cross-role collaboration: quick-asks and handoffs routed to the right person, SLA clocks
//! in business hours with escalation to the assignee's superior, acknowledgements,
//! authorisation and idempotency, and delivery dates in the rep's ICS feed.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::{error_code, spawn_app_clocked, ManualClock, TestApp};

/// Friday 2026-11-27 16:00 in Shanghai.
const FRIDAY_4PM: i64 = 1_795_766_400_000;

struct Team {
    app: TestApp,
    clock: Arc<ManualClock>,
    rep: String,
    presales_boss: String,
    presales: String,
    presales2: String,
    customer: String,
}

async fn team(extra: &str) -> Team {
    let clock = ManualClock::new(FRIDAY_4PM);
    let app = spawn_app_clocked(extra, clock.clone()).await;
    let rep = app.user("李明", &["sales"]).await;
    let presales_boss = app.user("售前总监", &["manager"]).await;
    let mk = |name: &'static str| {
        let app = &app;
        let boss = presales_boss.clone();
        async move {
            app.create(
                "/api/v1/users",
                json!({"name": name, "roles": ["presales"], "superiors": [boss]}),
            )
            .await["id"]
                .as_str()
                .unwrap()
                .to_string()
        }
    };
    let presales = mk("张工").await;
    let presales2 = mk("赵工").await;
    let customer = app.customer("华南智造", Some(&rep)).await;
    Team {
        app,
        clock,
        rep,
        presales_boss,
        presales,
        presales2,
        customer,
    }
}

impl Team {
    async fn ask(&self) -> Value {
        self.app
            .create(
                "/api/v1/collab/requests",
                json!({"type": "presales_question", "customer": self.customer, "initiator": self.rep,
                       "content": {"问题": "是否支持私有化部署？"}}),
            )
            .await
    }

    async fn step(&self, id: &str, step: &str, body: Value) -> reqwest::Response {
        self.app
            .post(&format!("/api/v1/collab/requests/{id}/{step}"), &body)
            .await
    }

    async fn cards_to(&self, user: &str, purpose: &str) -> i64 {
        self.app
            .count(&format!(
                "cards WHERE recipient_user_id = '{user}' AND purpose = '{purpose}'"
            ))
            .await
    }

    async fn assign_presales(&self, user: &str) {
        let res = self
            .app
            .client
            .put(self.app.url(&format!(
                "/api/v1/customers/{}/assignments/presales",
                self.customer
            )))
            .bearer_auth(&self.app.key)
            .json(&json!({"user": user}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 204);
    }
}

#[tokio::test]
async fn a_quick_ask_goes_to_the_assigned_presales_and_the_answer_back_to_the_rep() {
    let t = team("").await;
    t.assign_presales(&t.presales).await;
    let r = t.ask().await;
    let id = r["id"].as_str().unwrap();
    assert_eq!(r["assignee"], t.presales.as_str());
    assert_eq!(r["responsible_role"], "presales");
    assert_eq!(r["status"], "open");
    assert_eq!(r["content"]["问题"], "是否支持私有化部署？");
    assert_eq!(r["content_hash"].as_str().unwrap().len(), 64);
    assert_eq!(r["trail"][0]["action"], "opened");
    // Friday 16:00 + 4 working hours = Monday 11:00.
    assert!(
        r["due_at"]
            .as_str()
            .unwrap()
            .starts_with("2026-11-30T11:00:00"),
        "{}",
        r["due_at"]
    );
    assert_eq!(t.cards_to(&t.presales, "collab.request").await, 1);
    assert_eq!(t.cards_to(&t.presales2, "collab.request").await, 0);
    assert_eq!(
        t.app
            .count("tracking_points WHERE action = '@售前快速提问'")
            .await,
        1,
        "the ask is a tracking point"
    );

    // Only the assignee acts; answering needs accepting first.
    let (status, _, _) =
        error_code(t.step(id, "accept", json!({"actor": t.presales2})).await).await;
    assert_eq!(status, 403);
    let (status, _, _) = error_code(
        t.step(id, "answer", json!({"actor": t.presales, "text": "支持"}))
            .await,
    )
    .await;
    assert_eq!(status, 409);
    let accepted: Value = t
        .step(id, "accept", json!({"actor": t.presales}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(accepted["status"], "accepted");
    assert!(accepted["acknowledged_at"].is_string());
    let (status, _, _) = error_code(
        t.step(id, "answer", json!({"actor": t.rep, "text": "我自己答"}))
            .await,
    )
    .await;
    assert_eq!(status, 403, "the rep cannot answer their own question");
    let answered: Value = t
        .step(
            id,
            "answer",
            json!({"actor": t.presales, "text": "支持私有化部署，需要 8 核 32G"}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(answered["status"], "answered");
    assert_eq!(answered["answer"], "支持私有化部署，需要 8 核 32G");
    assert_eq!(t.cards_to(&t.rep, "collab.reply").await, 1);
    // A repeat changes nothing: no second reply.
    let again = t
        .step(id, "answer", json!({"actor": t.presales, "text": "改口"}))
        .await;
    assert_eq!(again.status(), 200);
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["answer"], "支持私有化部署，需要 8 核 32G");
    assert_eq!(t.cards_to(&t.rep, "collab.reply").await, 1);
    let actions: Vec<&str> = again["trail"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["opened", "accepted", "answered"]);

    // Answered in time: the deadline passes without an escalation.
    t.clock.advance(Duration::from_secs(4 * 24 * 3600));
    t.app.worker.drain().await.unwrap();
    assert_eq!(t.cards_to(&t.presales_boss, "collab.escalation").await, 0);
}

#[tokio::test]
async fn without_an_assignment_the_role_queue_gets_it_and_the_first_to_accept_takes_it() {
    let t = team("").await;
    let r = t.ask().await;
    let id = r["id"].as_str().unwrap();
    assert!(r["assignee"].is_null());
    assert_eq!(t.cards_to(&t.presales, "collab.request").await, 1);
    assert_eq!(t.cards_to(&t.presales2, "collab.request").await, 1);
    let res = t.step(id, "accept", json!({"actor": t.presales2})).await;
    assert_eq!(res.status(), 200);
    let (status, _, _) = error_code(t.step(id, "accept", json!({"actor": t.presales})).await).await;
    assert_eq!(status, 409, "already taken");
    let r: Value = t
        .app
        .get(&format!("/api/v1/collab/requests/{id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(r["assignee"], t.presales2.as_str());
}

#[tokio::test]
async fn overdue_requests_turn_red_remind_the_assignee_and_escalate_to_the_superior() {
    let t = team("").await;
    t.assign_presales(&t.presales).await;
    let r = t.ask().await;
    let id = r["id"].as_str().unwrap();
    // 30 minutes without 确认收到: a reminder.
    t.clock.advance(Duration::from_secs(31 * 60));
    t.app.worker.drain().await.unwrap();
    assert_eq!(t.cards_to(&t.presales, "collab.request").await, 2);
    // The weekend does not count: Monday 10:59 is still in time.
    t.clock
        .set(FRIDAY_4PM + (3 * 24 * 3600 - 5 * 3600 - 60) * 1000);
    t.app.worker.drain().await.unwrap();
    let r: Value = t
        .app
        .get(&format!("/api/v1/collab/requests/{id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(r["overdue"], false);
    assert_eq!(t.cards_to(&t.presales_boss, "collab.escalation").await, 0);
    // Monday 11:00: overdue.
    t.clock.advance(Duration::from_secs(120));
    t.app.worker.drain().await.unwrap();
    let r: Value = t
        .app
        .get(&format!("/api/v1/collab/requests/{id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(r["overdue"], true);
    assert_eq!(
        t.cards_to(&t.presales, "collab.request").await,
        3,
        "a reminder"
    );
    assert_eq!(
        t.cards_to(&t.presales_boss, "collab.escalation").await,
        1,
        "the assignee's direct superior is told"
    );
    assert_eq!(t.cards_to(&t.rep, "collab.escalation").await, 0);
    let actions: Vec<&str> = r["trail"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["opened", "ack_reminded", "overdue", "escalated"]);
    // The escalation is closeloop's point on the customer, about the assignee.
    let escalations = || async {
        sqlx::query_as::<_, (String, String, Option<String>, Option<String>)>(
            "SELECT actor_kind, source, actor_user_id, customer_id FROM tracking_points \
             WHERE action = 'collab.escalate'",
        )
        .fetch_all(&t.app.db.pool)
        .await
        .unwrap()
    };
    assert_eq!(
        escalations().await,
        [(
            "system".to_string(),
            "system".to_string(),
            Some(t.presales.clone()),
            Some(t.customer.clone())
        )]
    );
    // The timer fired once: running again changes nothing.
    t.app.worker.drain().await.unwrap();
    assert_eq!(t.cards_to(&t.presales_boss, "collab.escalation").await, 1);
    assert_eq!(escalations().await.len(), 1);
}

#[tokio::test]
async fn a_handoff_needs_every_artefact_and_can_be_returned_with_a_reason() {
    let t = team("").await;
    t.assign_presales(&t.presales).await;
    let doc = |name: &str| {
        let app = &t.app;
        let customer = t.customer.clone();
        let rep = t.rep.clone();
        let name = name.to_string();
        async move {
            let res = app
                .client
                .post(app.url(&format!(
                    "/api/v1/customers/{customer}/documents?actor={rep}&kind=artefact&filename=a.pdf"
                )))
                .bearer_auth(&app.key)
                .header("content-type", "application/pdf")
                .body(format!("%PDF {name}"))
                .send()
                .await
                .unwrap();
            let body: Value = res.json().await.unwrap();
            body["id"].as_str().unwrap().to_string()
        }
    };
    let needs = doc("需求").await;
    let rivals = doc("竞品").await;
    let body = |artefacts: Value| {
        json!({"type": "sales_to_presales", "customer": t.customer, "initiator": t.rep,
               "content": {"客户需求概述": "产线质检"}, "artefacts": artefacts})
    };
    let res = t
        .app
        .post(
            "/api/v1/collab/requests",
            &body(json!({"客户需求清单": needs, "竞品对比表": rivals})),
        )
        .await;
    assert_eq!(res.status(), 409);
    let err: Value = res.json().await.unwrap();
    assert_eq!(err["error"]["code"], "handoff_incomplete");
    assert_eq!(
        err["error"]["details"]["missing"],
        json!(["预算范围确认截图"])
    );
    assert_eq!(t.app.count("collab_requests").await, 0, "nothing opened");
    let budget = doc("预算").await;
    let r = t
        .app
        .create(
            "/api/v1/collab/requests",
            body(json!({"客户需求清单": needs, "竞品对比表": rivals, "预算范围确认截图": budget})),
        )
        .await;
    let id = r["id"].as_str().unwrap();
    assert_eq!(r["kind"], "handoff");
    assert_eq!(r["artefacts"]["预算范围确认截图"], budget.as_str());
    t.step(id, "accept", json!({"actor": t.presales})).await;
    let (status, _, _) = error_code(t.step(id, "return", json!({"actor": t.presales})).await).await;
    assert_eq!(status, 422, "a reason is required");
    let returned: Value = t
        .step(
            id,
            "return",
            json!({"actor": t.presales, "reason": "预算截图看不清"}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(returned["status"], "returned");
    assert_eq!(returned["return_reason"], "预算截图看不清");
    assert_eq!(t.cards_to(&t.rep, "collab.reply").await, 1);
}

#[tokio::test]
async fn a_confirmed_delivery_date_reaches_the_reps_calendar_feed() {
    let t = team("").await;
    let delivery = t.app.user("交付王", &["delivery"]).await;
    let r = t
        .app
        .create(
            "/api/v1/collab/requests",
            json!({"type": "delivery_schedule", "customer": t.customer, "initiator": t.rep,
                   "content": {"需要交付的内容": "质检设备 2 台"}}),
        )
        .await;
    let id = r["id"].as_str().unwrap();
    t.step(id, "accept", json!({"actor": delivery})).await;
    let bad = t
        .step(
            id,
            "answer",
            json!({"actor": delivery, "text": "可以", "date": "12/15"}),
        )
        .await;
    assert_eq!(bad.status(), 422);
    let ok = t
        .step(
            id,
            "answer",
            json!({"actor": delivery, "text": "12 月 15 日到货安装", "date": "2026-12-15"}),
        )
        .await;
    assert_eq!(ok.status(), 200);
    let feed: Value = t
        .app
        .post(
            &format!("/api/v1/users/{}/calendar-feed", t.rep),
            &json!({}),
        )
        .await
        .json()
        .await
        .unwrap();
    let url = feed["url"].as_str().unwrap();
    let path = &url[url.find("/calendar/").unwrap()..];
    let res = reqwest::get(t.app.url(path)).await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/calendar"));
    let ics = res.text().await.unwrap();
    assert!(ics.starts_with("BEGIN:VCALENDAR\r\n"), "{ics}");
    assert!(ics.contains("DTSTART;VALUE=DATE:20261215\r\n"), "{ics}");
    assert!(ics.contains("DTEND;VALUE=DATE:20261216\r\n"), "{ics}");
    assert!(ics.contains("SUMMARY:交付排期查询"), "{ics}");
    // A wrong token shows nothing; a new address revokes the old one.
    let res = reqwest::get(t.app.url("/calendar/wrong.ics"))
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    t.app
        .post(
            &format!("/api/v1/users/{}/calendar-feed", t.rep),
            &json!({}),
        )
        .await;
    assert_eq!(reqwest::get(t.app.url(path)).await.unwrap().status(), 404);
}

#[tokio::test]
async fn the_weekly_health_report_measures_response_overdue_and_returns_and_reaches_managers_once()
{
    let t = team("").await;
    t.assign_presales(&t.presales).await;
    // Three asks on Friday: one answered within an hour, one returned, one left to go overdue.
    let a = t.ask().await;
    let b = t.ask().await;
    let c = t.ask().await;
    let (a, b, c) = (
        a["id"].as_str().unwrap().to_string(),
        b["id"].as_str().unwrap().to_string(),
        c["id"].as_str().unwrap().to_string(),
    );
    t.clock.advance(Duration::from_secs(30 * 60));
    t.step(&a, "accept", json!({"actor": t.presales})).await;
    t.step(&b, "accept", json!({"actor": t.presales})).await;
    t.clock.advance(Duration::from_secs(30 * 60));
    t.step(&a, "answer", json!({"actor": t.presales, "text": "可以"}))
        .await;
    t.step(
        &b,
        "return",
        json!({"actor": t.presales, "reason": "不是售前的问题"}),
    )
    .await;
    let _ = c;
    // Monday 12:00: the deadline of `c` (11:00) has passed and the 08:00 report has run.
    t.clock.set(FRIDAY_4PM + (2 * 24 + 20) * 3600 * 1000);
    t.app.worker.drain().await.unwrap();
    let h: Value = t
        .app
        .get("/api/v1/collab/health?week=2026-11-27")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(h["week"], "2026-11-23");
    assert_eq!(h["overall"]["requests"], 3);
    assert_eq!(h["overall"]["responded"], 2);
    assert_eq!(h["overall"]["mean_response_minutes"], 30.0);
    assert_eq!(h["overall"]["overdue"], 1);
    assert_eq!(h["overall"]["returned"], 1);
    let rate = h["overall"]["return_rate"].as_f64().unwrap();
    assert!((rate - 1.0 / 3.0).abs() < 1e-9);
    assert_eq!(h["by_role"]["presales"]["requests"], 3);
    assert_eq!(h["by_person"][0]["user"], t.presales.as_str());
    // The manager got this week's card, once, even if the job runs again.
    assert_eq!(t.cards_to(&t.presales_boss, "collab.health").await, 1);
    let mut tx = t.app.db.begin().await.unwrap();
    let week = closeloop::credibility::Week::containing(
        chrono::NaiveDate::from_ymd_opt(2026, 11, 27).unwrap(),
        chrono_tz::Asia::Shanghai,
    )
    .unwrap();
    let sent = closeloop::collab::health::push(
        &mut tx,
        &t.app.cipher,
        FRIDAY_4PM,
        &t.app.org_id,
        &week,
        "http://x",
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(sent, 0);
    assert_eq!(t.cards_to(&t.presales_boss, "collab.health").await, 1);
}

#[tokio::test]
async fn the_assignee_may_return_at_once_and_answers_keep_their_lines() {
    let t = team("").await;
    t.assign_presales(&t.presales).await;
    let r = t.ask().await;
    let id = r["id"].as_str().unwrap();
    let back: Value = t
        .step(
            id,
            "return",
            json!({"actor": t.presales, "reason": "请先补充预算\r\n再来问"}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(back["status"], "returned");
    assert_eq!(back["return_reason"], "请先补充预算\n再来问");
    let r = t.ask().await;
    let id = r["id"].as_str().unwrap();
    t.step(id, "accept", json!({"actor": t.presales})).await;
    let answered: Value = t
        .step(
            id,
            "answer",
            json!({"actor": t.presales, "text": "一、支持\n二、需 8 核"}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(answered["answer"], "一、支持\n二、需 8 核");
}

/// With WeCom configured, a confirmed delivery date also lands on the rep's WeCom calendar
/// (日程) as a whole-day event, through a durable job.
#[tokio::test]
async fn a_confirmed_date_is_pushed_to_the_reps_wecom_calendar() {
    let (emulator, app) = wecom_app().await;
    let rep = app
        .create("/api/v1/users", wecom_user("李明", "sales", "liming"))
        .await;
    let delivery = app
        .create("/api/v1/users", wecom_user("交付王", "delivery", "jiaofu"))
        .await;
    let customer = app.customer("华南智造", rep["id"].as_str()).await;
    let r = app
        .create(
            "/api/v1/collab/requests",
            json!({"type": "delivery_schedule", "customer": customer, "initiator": rep["id"],
                   "content": {"需要交付的内容": "质检设备"}}),
        )
        .await;
    let id = r["id"].as_str().unwrap();
    let res = app
        .post(
            &format!("/api/v1/collab/requests/{id}/accept"),
            &json!({"actor": delivery["id"]}),
        )
        .await;
    assert_eq!(res.status(), 200);
    let res = app
        .post(
            &format!("/api/v1/collab/requests/{id}/answer"),
            &json!({"actor": delivery["id"], "text": "到货安装", "date": "2026-12-15"}),
        )
        .await;
    assert_eq!(res.status(), 200);
    app.worker.drain().await.unwrap();
    let pushed = emulator.schedules();
    assert_eq!(pushed.len(), 1, "{pushed:?}");
    let s = &pushed[0]["schedule"];
    assert_eq!(s["is_whole_day"], 1);
    assert_eq!(s["attendees"][0]["userid"], "liming");
    assert_eq!(
        s["start_time"], 1_797_264_000i64,
        "2026-12-15 00:00 in Shanghai"
    );
    assert!(s["summary"].as_str().unwrap().contains("交付排期查询"));
    let (platform_ref,): (Option<String>,) =
        sqlx::query_as("SELECT platform_ref FROM calendar_entries")
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    assert_eq!(platform_ref.as_deref(), Some("emulated-schedule-1"));
    // Running the worker again pushes nothing twice.
    app.worker.drain().await.unwrap();
    assert_eq!(emulator.schedules().len(), 1);
}

/// The whole flow through the WeCom emulator: the card reaches presales, the click (a
/// signed, encrypted callback) accepts, the answer goes back to the rep as a card, and the
/// original card is updated to show who answered and when.
#[tokio::test]
async fn a_quick_ask_runs_on_wecom_cards_end_to_end() {
    let (emulator, app) = wecom_app().await;
    let rep = app
        .create("/api/v1/users", wecom_user("李明", "sales", "liming"))
        .await;
    let presales = app
        .create("/api/v1/users", wecom_user("张工", "presales", "zhanggong"))
        .await;
    let customer = app.customer("华南智造", rep["id"].as_str()).await;
    let r = app
        .create(
            "/api/v1/collab/requests",
            json!({"type": "presales_question", "customer": customer, "initiator": rep["id"],
                   "content": {"问题": "是否支持私有化部署？"}}),
        )
        .await;
    let id = r["id"].as_str().unwrap();
    app.worker.drain().await.unwrap();
    let sent = emulator.received_messages();
    let card = sent
        .iter()
        .find(|m| m["touser"] == "zhanggong")
        .expect("the card reached presales");
    let tc = &card["template_card"];
    assert_eq!(tc["main_title"]["title"], "售前快速提问");
    assert!(tc["card_action"]["url"]
        .as_str()
        .unwrap()
        .ends_with(&format!("/collab/requests/{id}")));
    let task = tc["task_id"].as_str().unwrap().to_string();
    let key = tc["button_list"][0]["key"].as_str().unwrap().to_string();
    assert_eq!(key, format!("accept:{task}"));

    // 张工 taps 确认收到并接受: WeCom calls back (twice, as it retries).
    let code = emulator.issue_response_code();
    let ts = chrono::Utc::now().timestamp();
    let body = format!(
        "<xml><ToUserName><![CDATA[{corp}]]></ToUserName><FromUserName><![CDATA[zhanggong]]></FromUserName>\
         <CreateTime>{ts}</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[template_card_event]]></Event>\
         <EventKey><![CDATA[{key}]]></EventKey><TaskId><![CDATA[{task}]]></TaskId>\
         <CardType><![CDATA[button_interaction]]></CardType><ResponseCode><![CDATA[{code}]]></ResponseCode>\
         <AgentID>1000002</AgentID></xml>",
        corp = crate::callbacks::CORP
    );
    for _ in 0..2 {
        let res = crate::callbacks::deliver(&app, &body, crate::callbacks::CORP, ts).await;
        assert_eq!(res.status(), 200);
    }
    app.worker.drain().await.unwrap();
    let accepted: Value = app
        .get(&format!("/api/v1/collab/requests/{id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(accepted["status"], "accepted");
    assert_eq!(accepted["assignee"], presales["id"]);
    assert!(
        emulator.card_updates().is_empty(),
        "the card keeps its code until the request is done"
    );

    let res = app
        .post(
            &format!("/api/v1/collab/requests/{id}/answer"),
            &json!({"actor": presales["id"], "text": "支持，需 8 核 32G"}),
        )
        .await;
    assert_eq!(res.status(), 200);
    app.worker.drain().await.unwrap();
    let updates = emulator.card_updates();
    assert_eq!(updates.len(), 1);
    assert_eq!(updates[0]["response_code"], code.as_str());
    let label = updates[0]["button"]["replace_name"].as_str().unwrap();
    assert!(label.starts_with("张工已答复"), "{label}");
    assert_eq!(
        label.chars().count(),
        10,
        "who, what and when fit WeCom's 10 characters"
    );
    let reply = emulator
        .received_messages()
        .into_iter()
        .find(|m| m["touser"] == "liming")
        .expect("the answer reached the rep");
    assert_eq!(
        reply["template_card"]["main_title"]["title"],
        "售前快速提问：已答复"
    );
}

#[tokio::test]
async fn the_health_page_is_for_managers() {
    let t = team("").await;
    t.assign_presales(&t.presales).await;
    t.ask().await;
    let cookie = |user: String| {
        let db = t.app.db.clone();
        let org = t.app.org_id.clone();
        async move {
            let (value, _) =
                closeloop::http::pages::session::create(&db, FRIDAY_4PM, &org, &user, "dev")
                    .await
                    .unwrap();
            format!("closeloop_session={value}")
        }
    };
    let get = |cookie: String| {
        t.app
            .client
            .get(t.app.url("/collab/health?week=2026-11-27"))
            .header("cookie", cookie)
            .send()
    };
    let res = get(cookie(t.presales_boss.clone()).await).await.unwrap();
    assert_eq!(res.status(), 200);
    let html = res.text().await.unwrap();
    assert!(html.contains("2026年11月23日至11月29日"), "{html}");
    assert!(
        html.contains("<th scope=\"row\">售前</th><td>1</td>"),
        "{html}"
    );
    assert!(html.contains("张工（售前）"), "{html}");
    let res = get(cookie(t.rep.clone()).await).await.unwrap();
    assert_eq!(res.status(), 403);
    let res = t
        .app
        .client
        .get(t.app.url("/collab/health"))
        .send()
        .await
        .unwrap();
    assert_ne!(res.status(), 200, "a session is needed");
}

/// An app on the WeCom emulator.
async fn wecom_app() -> (closeloop::emulator::wecom::Emulator, TestApp) {
    use closeloop::emulator::wecom::Emulator;
    let emulator =
        Emulator::start("wwcl0000000000001", vec![("app-secret".to_string(), "app")]).await;
    let app = crate::helpers::spawn_app_with(&format!(
        "[wecom]\ncorp_id = \"wwcl0000000000001\"\nagent_id = 1000002\nsecret = \"app-secret\"\ntoken = \"QDG6eK\"\n\
         encoding_aes_key = \"jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C\"\napi_base = \"{}\"\n",
        emulator.base_url()
    ))
    .await;
    (emulator, app)
}

/// A user with a role and a WeCom userid.
fn wecom_user(name: &str, role: &str, userid: &str) -> Value {
    json!({"name": name, "roles": [role], "identities": [{"platform": "wecom", "kind": "userid", "value": userid}]})
}
