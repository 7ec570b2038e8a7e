//! Collaboration as the article describes it (issue 14): ad-hoc anchored requests to a
//! named member of a role, the delivery person's 「已同步客户」 and 预计交付日期 when
//! confirming a schedule, a legal review with its own SLA, cards that stay true when a
//! request is accepted or answered, and cards that could not be delivered told to the
//! initiator.

use std::sync::Arc;

use closeloop::emulator::dingtalk::Emulator as DingtalkEmulator;
use closeloop::emulator::wecom::{Emulator as WecomEmulator, Failure};
use serde_json::{json, Value};

use crate::helpers::{error_code, spawn_app_clocked, ManualClock, TestApp};
use crate::sidebar::no_redirects;

/// Friday 2026-11-27 16:00 in Shanghai.
const FRIDAY_4PM: i64 = 1_795_766_400_000;

async fn request(app: &TestApp, id: &str) -> Value {
    app.get(&format!("/api/v1/collab/requests/{id}"))
        .await
        .json()
        .await
        .unwrap()
}

/// The request page as `user` sees it.
async fn page(app: &TestApp, now: i64, user: &str, id: &str) -> String {
    let (value, _) =
        closeloop::http::pages::session::create(&app.db, now, &app.org_id, user, "dev")
            .await
            .unwrap();
    let res = no_redirects()
        .get(app.url(&format!("/collab/requests/{id}")))
        .header(
            "cookie",
            format!("{}={value}", closeloop::http::pages::session::COOKIE),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    res.text().await.unwrap()
}

#[tokio::test]
async fn an_adhoc_request_goes_to_the_named_member_and_a_person_without_the_role_is_refused() {
    let clock = ManualClock::new(FRIDAY_4PM);
    let app = spawn_app_clocked("", clock.clone()).await;
    let rep = app.user("李明", &["sales"]).await;
    let lawyer = app.user("王律师", &["legal"]).await;
    let presales = app.user("张工", &["presales"]).await;
    let customer = app.customer("华南智造", Some(&rep)).await;
    let body = |assignee: &str, subject: &str| {
        json!({"customer": customer, "initiator": rep, "subject": subject, "role": "legal",
               "assignee": assignee, "description": "第 7 条违约金比例需下调至 10%"})
    };

    // 张工 is not in legal: refused in Chinese, nothing opened.
    let (status, code, message) = error_code(
        app.post("/api/v1/collab/adhoc", &body(&presales, "合同条款修订"))
            .await,
    )
    .await;
    assert_eq!((status, code.as_str()), (422, "invalid_input"), "{message}");
    assert!(message.contains("张工没有「法务」角色"), "{message}");
    let (status, _, message) =
        error_code(app.post("/api/v1/collab/adhoc", &body(&lawyer, "  ")).await).await;
    assert_eq!(status, 422, "{message}");
    assert!(message.contains("协作事项"), "{message}");
    assert_eq!(app.count("collab_requests").await, 0);

    let r = app
        .create("/api/v1/collab/adhoc", body(&lawyer, "合同条款修订"))
        .await;
    let id = r["id"].as_str().unwrap();
    assert_eq!(r["type"], "adhoc");
    assert_eq!(r["kind"], "adhoc");
    assert_eq!(r["title"], "合同条款修订");
    assert_eq!(r["responsible_role"], "legal");
    assert_eq!(r["assignee"], lawyer.as_str());
    assert_eq!(r["content"]["说明"], "第 7 条违约金比例需下调至 10%");
    // Friday 16:00 + 8 working hours (09:00-12:00, 13:30-18:00) = Monday 16:30.
    assert!(
        r["due_at"]
            .as_str()
            .unwrap()
            .starts_with("2026-11-30T16:30:00"),
        "{}",
        r["due_at"]
    );
    assert_eq!(
        app.count(&format!(
            "cards WHERE recipient_user_id = '{lawyer}' AND purpose = 'collab.request' AND object_ref = '{id}'"
        ))
        .await,
        1
    );
    assert_eq!(
        app.count("tracking_points WHERE action = 'collab.adhoc'")
            .await,
        1,
        "opening it is a tracking point"
    );
    assert_eq!(
        app.count(&format!(
            "audit_log WHERE action = 'collab.adhoc' AND target_id = '{id}'"
        ))
        .await,
        1,
        "and audited"
    );

    // A subject of one's own is fine; the steps are the other requests' steps.
    let own = app
        .create("/api/v1/collab/adhoc", body(&lawyer, "保密协议盖章"))
        .await;
    assert_eq!(own["title"], "保密协议盖章");
    let step = |s: &str, b: Value| {
        let app = &app;
        let url = format!("/api/v1/collab/requests/{id}/{s}");
        async move { app.post(&url, &b).await }
    };
    assert_eq!(
        step("accept", json!({"actor": presales})).await.status(),
        403
    );
    assert_eq!(step("accept", json!({"actor": lawyer})).await.status(), 200);
    let res = step("answer", json!({"actor": lawyer, "text": "已改为 10%"})).await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        app.count("tracking_points WHERE action IN ('collab.accept', 'collab.answer')")
            .await,
        2
    );
    assert_eq!(request(&app, id).await["status"], "answered");
}

#[tokio::test]
async fn the_sidebar_offers_adhoc_requests_and_legal_review() {
    let clock = ManualClock::new(FRIDAY_4PM);
    let app = spawn_app_clocked("", clock.clone()).await;
    let rep = app.user("李明", &["sales"]).await;
    let lawyer = app.user("王律师", &["legal"]).await;
    let customer = app.customer("华南智造", Some(&rep)).await;
    let (value, csrf) =
        closeloop::http::pages::session::create(&app.db, FRIDAY_4PM, &app.org_id, &rep, "dev")
            .await
            .unwrap();
    let cookie = format!("{}={value}", closeloop::http::pages::session::COOKIE);
    let html = no_redirects()
        .get(app.url(&format!("/sidebar/customers/{customer}")))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        html.contains("data-collab=\"adhoc\">发起协作</button>"),
        "{html}"
    );
    assert!(html.contains("<option>合同条款修订</option>"), "{html}");
    assert!(html.contains("<option>付款条件调整</option>"), "{html}");
    assert!(
        html.contains(&format!(
            "<option value=\"{lawyer}\" data-role=\"legal\" hidden>王律师</option>"
        )),
        "{html}"
    );
    assert!(html.contains("交接给法务"), "{html}");
    assert!(
        html.contains("data-type=\"legal_contract_review\""),
        "{html}"
    );

    let post = |body: Value, with_csrf: bool| {
        let mut req = no_redirects()
            .post(app.url("/web/collab/adhoc"))
            .header("cookie", &cookie)
            .json(&body);
        if with_csrf {
            req = req.header("x-csrf-token", &csrf);
        }
        req.send()
    };
    let body = json!({"customer": customer, "subject": "发票开具", "role": "legal",
                      "assignee": lawyer, "description": "请确认开票抬头", "deal": ""});
    assert_eq!(post(body.clone(), false).await.unwrap().status(), 403);
    let res = post(body, true).await.unwrap();
    assert_eq!(res.status(), 201);
    let opened: Value = res.json().await.unwrap();
    assert_eq!(opened["receiver"], "王律师");
    assert_eq!(opened["initiator"], rep.as_str());
    assert_eq!(
        app.count("tracking_points WHERE action = 'collab.adhoc' AND source = 'sidebar'")
            .await,
        1
    );
}

#[tokio::test]
async fn a_legal_review_carries_the_contract_and_has_a_working_day() {
    let clock = ManualClock::new(FRIDAY_4PM);
    let app = spawn_app_clocked("", clock.clone()).await;
    let rep = app.user("李明", &["sales"]).await;
    let lawyer = app.user("王律师", &["legal"]).await;
    let customer = app.customer("华南智造", Some(&rep)).await;
    let res = app
        .client
        .put(app.url(&format!("/api/v1/customers/{customer}/assignments/legal")))
        .bearer_auth(&app.key)
        .json(&json!({"user": lawyer}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204, "legal is a role one can assign");
    let body = |artefacts: Value| {
        json!({"type": "legal_contract_review", "customer": customer, "initiator": rep,
               "content": {"审核要点": "违约责任与付款节点"}, "artefacts": artefacts})
    };
    let (status, code, _) =
        error_code(app.post("/api/v1/collab/requests", &body(json!({}))).await).await;
    assert_eq!((status, code.as_str()), (409, "handoff_incomplete"));
    let doc: Value = app
        .client
        .post(app.url(&format!(
            "/api/v1/customers/{customer}/documents?actor={rep}&kind=artefact&filename=contract.pdf"
        )))
        .bearer_auth(&app.key)
        .header("content-type", "application/pdf")
        .body("%PDF contract")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let r = app
        .create(
            "/api/v1/collab/requests",
            body(json!({"合同文件": doc["id"]})),
        )
        .await;
    assert_eq!(r["assignee"], lawyer.as_str());
    assert_eq!(r["responsible_role"], "legal");
    // Friday 16:00 + one working day (7.5 working hours) = Monday 16:00.
    assert!(
        r["due_at"]
            .as_str()
            .unwrap()
            .starts_with("2026-11-30T16:00:00"),
        "{}",
        r["due_at"]
    );
}

/// An app on the WeCom emulator, on the test's clock.
async fn wecom_app(clock: Arc<ManualClock>) -> (WecomEmulator, TestApp) {
    let emulator =
        WecomEmulator::start("wwcl0000000000001", vec![("app-secret".to_string(), "app")]).await;
    let app = spawn_app_clocked(
        &format!(
            "[wecom]\ncorp_id = \"wwcl0000000000001\"\nagent_id = 1000002\nsecret = \"app-secret\"\ntoken = \"QDG6eK\"\n\
             encoding_aes_key = \"jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C\"\napi_base = \"{}\"\n",
            emulator.base_url()
        ),
        clock,
    )
    .await;
    (emulator, app)
}

fn member(platform: &str, name: &str, role: &str, userid: &str) -> Value {
    json!({"name": name, "roles": [role],
           "identities": [{"platform": platform, "kind": "userid", "value": userid}]})
}

#[tokio::test]
async fn delivery_confirms_a_schedule_with_the_customer_tick_and_a_required_date() {
    let clock = ManualClock::new(FRIDAY_4PM);
    let (emulator, app) = wecom_app(clock.clone()).await;
    let rep = app
        .create("/api/v1/users", member("wecom", "李明", "sales", "liming"))
        .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let delivery = app
        .create(
            "/api/v1/users",
            member("wecom", "交付王", "delivery", "wang"),
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let customer = app.customer("华南智造", Some(&rep)).await;
    let r = app
        .create(
            "/api/v1/collab/requests",
            json!({"type": "delivery_schedule", "customer": customer, "initiator": rep,
                   "content": {"需要交付的内容": "质检设备 2 台"}}),
        )
        .await;
    let id = r["id"].as_str().unwrap();
    assert_eq!(r["confirms_date"], true);
    let step = |s: &str, b: Value| {
        let app = &app;
        let url = format!("/api/v1/collab/requests/{id}/{s}");
        async move { app.post(&url, &b).await }
    };
    assert_eq!(
        step("accept", json!({"actor": delivery})).await.status(),
        200
    );
    // The page's answer form asks for both.
    let html = page(&app, FRIDAY_4PM, &delivery, id).await;
    assert!(
        html.contains("<span>预计交付日期</span><input type=\"date\" name=\"date\" required>"),
        "{html}"
    );
    assert!(html.contains("name=\"customer_synced\""), "{html}");
    assert!(html.contains("<span>已同步客户</span>"), "{html}");

    // No date: refused, nothing changes.
    let (status, _, message) =
        error_code(step("answer", json!({"actor": delivery, "text": "下月到货"})).await).await;
    assert_eq!(status, 422);
    assert!(message.contains("预计交付日期"), "{message}");
    assert_eq!(request(&app, id).await["status"], "accepted");

    let res = step(
        "answer",
        json!({"actor": delivery, "text": "到货安装", "date": "2026-12-15", "customer_synced": true}),
    )
    .await;
    assert_eq!(res.status(), 200);
    let done = request(&app, id).await;
    assert_eq!(done["customer_synced"], true);
    assert_eq!(done["answer_date"], "2026-12-15");
    assert_eq!(
        app.count(&format!(
            "calendar_entries WHERE user_id = '{rep}' AND day = '2026-12-15'"
        ))
        .await,
        1,
        "the date goes to the rep's calendar"
    );
    let html = page(&app, FRIDAY_4PM, &rep, id).await;
    assert!(html.contains("预计交付日期：<strong>"), "{html}");
    assert!(
        html.contains("<p class=\"synced\">已同步客户</p>"),
        "{html}"
    );

    // The result card tells the rep both.
    app.worker.drain().await.unwrap();
    let reply = emulator
        .received_messages()
        .into_iter()
        .find(|m| m["touser"] == "liming")
        .expect("the answer reached the rep");
    let fields = reply["template_card"]["horizontal_content_list"].to_string();
    assert!(fields.contains("客户同步"), "{fields}");
    assert!(fields.contains("已同步客户"), "{fields}");
    assert!(fields.contains("确认日期"), "{fields}");
}

#[tokio::test]
async fn a_card_that_could_not_be_delivered_is_shown_to_the_initiator_once() {
    let clock = ManualClock::new(FRIDAY_4PM);
    let (emulator, app) = wecom_app(clock.clone()).await;
    let rep = app
        .create("/api/v1/users", member("wecom", "李明", "sales", "liming"))
        .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let presales = app
        .create(
            "/api/v1/users",
            member("wecom", "张工", "presales", "zhanggong"),
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let customer = app.customer("华南智造", Some(&rep)).await;
    // WeCom refuses the recipient (81013: not in the app's visible range).
    emulator.fail_next("/cgi-bin/message/send", 1, Failure::Errcode(81013));
    let r = app
        .create(
            "/api/v1/collab/adhoc",
            json!({"customer": customer, "initiator": rep, "subject": "付款条件调整", "role": "presales",
                   "assignee": presales, "description": "客户希望分三期付款"}),
        )
        .await;
    let id = r["id"].as_str().unwrap();
    app.worker.drain().await.unwrap();
    app.worker.drain().await.unwrap();

    let r = request(&app, id).await;
    assert_eq!(r["undelivered"][0]["recipient"], presales.as_str());
    assert_eq!(r["undelivered"][0]["reason"], "not_visible");
    let html = page(&app, FRIDAY_4PM, &rep, id).await;
    assert!(
        html.contains("卡片未能送达：收件人不在应用的可见范围内（收件人：张工）"),
        "{html}"
    );
    assert!(!html.contains("81013"), "no raw error codes: {html}");
    let notices: Vec<Value> = emulator
        .received_messages()
        .into_iter()
        .filter(|m| m["touser"] == "liming")
        .collect();
    assert_eq!(notices.len(), 1, "{notices:?}");
    assert_eq!(
        notices[0]["template_card"]["main_title"]["title"],
        "【未送达】付款条件调整"
    );
    // Re-driving the dead job and failing again does not tell the rep twice.
    let job: (String,) =
        sqlx::query_as("SELECT id FROM jobs WHERE kind = 'card.deliver' AND status = 'dead'")
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    emulator.fail_next("/cgi-bin/message/send", 1, Failure::Errcode(81013));
    closeloop::jobs::retry_dead(&app.db, FRIDAY_4PM, None, &job.0)
        .await
        .unwrap();
    app.worker.drain().await.unwrap();
    let notices = emulator
        .received_messages()
        .into_iter()
        .filter(|m| m["touser"] == "liming")
        .count();
    assert_eq!(notices, 1);
    let trail: Vec<String> = request(&app, id).await["trail"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        trail.iter().filter(|a| *a == "undelivered").count(),
        1,
        "{trail:?}"
    );
}

const DT_KEY: &str = "dingclapp0000001";
const DT_SECRET: &str = "app-secret-xyz";

/// On DingTalk, where a card can change more than once: accepting shows who took the
/// request on every queue member's card; answering shows it on the escalation too.
#[tokio::test]
async fn cards_show_who_accepted_and_escalations_show_the_answer() {
    let clock = ManualClock::new(FRIDAY_4PM);
    let emulator = DingtalkEmulator::start(DT_KEY, DT_SECRET).await;
    let app = spawn_app_clocked(
        &format!(
            "[dingtalk]\napp_key = \"{DT_KEY}\"\napp_secret = \"{DT_SECRET}\"\ncorp_id = \"dingcorp00000001\"\n\
             token = \"mryue\"\naes_key = \"Yue0EfdN5900c1ce5cf6A152c63DDe1808a60c5ecd7\"\n\
             max_clock_skew = \"0s\"\napi_base = \"{b}\"\noapi_base = \"{b}\"\n\
             card_callback_secret = \"card-callback-secret\"\ncard_template_id = \"tpl-closeloop.schema\"\n\
             robot_code = \"dingrobot1\"\n",
            b = emulator.base_url()
        ),
        clock.clone(),
    )
    .await;
    let id_of = |v: Value| v["id"].as_str().unwrap().to_string();
    let rep = id_of(
        app.create(
            "/api/v1/users",
            member("dingtalk", "李明", "sales", "liming"),
        )
        .await,
    );
    let boss = id_of(
        app.create(
            "/api/v1/users",
            member("dingtalk", "售前总监", "manager", "boss"),
        )
        .await,
    );
    let mut zhang = member("dingtalk", "张工", "presales", "zhanggong");
    zhang["superiors"] = json!([boss]);
    let presales = id_of(app.create("/api/v1/users", zhang).await);
    let presales2 = id_of(
        app.create(
            "/api/v1/users",
            member("dingtalk", "赵工", "presales", "zhao"),
        )
        .await,
    );
    let customer = app.customer("华南智造", Some(&rep)).await;
    let r = app
        .create(
            "/api/v1/collab/requests",
            json!({"type": "presales_question", "customer": customer, "initiator": rep,
                   "content": {"问题": "是否支持私有化部署？"}}),
        )
        .await;
    let id = r["id"].as_str().unwrap().to_string();
    app.worker.drain().await.unwrap();
    assert!(emulator.card_updates().is_empty());

    let res = app
        .post(
            &format!("/api/v1/collab/requests/{id}/accept"),
            &json!({"actor": presales}),
        )
        .await;
    assert_eq!(res.status(), 200);
    app.worker.drain().await.unwrap();
    let card_of = |user: &str| {
        let app = &app;
        let id = id.clone();
        let user = user.to_string();
        async move {
            sqlx::query_as::<_, (String,)>(
                "SELECT id FROM cards WHERE object_ref = $1 AND recipient_user_id = $2 ORDER BY created_at LIMIT 1",
            )
            .bind(&id)
            .bind(&user)
            .fetch_one(&app.db.pool)
            .await
            .unwrap()
            .0
        }
    };
    let status_of = |card: String| {
        emulator
            .card_updates()
            .iter()
            .filter(|u| u["outTrackId"] == card.as_str())
            .map(|u| {
                u["cardData"]["cardParamMap"]["status"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string()
            })
            .collect::<Vec<_>>()
    };
    let zhao_card = card_of(&presales2).await;
    let zhang_card = card_of(&presales).await;
    assert_eq!(status_of(zhao_card.clone()), ["张工已接受16:00"]);
    assert_eq!(status_of(zhang_card.clone()), ["张工已接受16:00"]);

    // Monday past the deadline: the escalation goes to 张工's superior.
    clock.set(FRIDAY_4PM + (3 * 24 * 3600 - 5 * 3600 + 60) * 1000);
    app.worker.drain().await.unwrap();
    let escalation = sqlx::query_as::<_, (String,)>(
        "SELECT id FROM cards WHERE purpose = 'collab.escalation' AND object_ref = $1",
    )
    .bind(&id)
    .fetch_one(&app.db.pool)
    .await
    .unwrap()
    .0;
    assert!(status_of(escalation.clone()).is_empty());

    let res = app
        .post(
            &format!("/api/v1/collab/requests/{id}/answer"),
            &json!({"actor": presales, "text": "支持，需 8 核 32G"}),
        )
        .await;
    assert_eq!(res.status(), 200);
    app.worker.drain().await.unwrap();
    let shown = status_of(escalation);
    assert_eq!(shown.len(), 1, "{shown:?}");
    assert!(shown[0].starts_with("张工已答复"), "{shown:?}");
    let shown = status_of(zhang_card);
    assert_eq!(shown.len(), 2, "{shown:?}");
    assert!(shown[1].starts_with("张工已答复"), "{shown:?}");
}
