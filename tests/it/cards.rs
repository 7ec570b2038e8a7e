//! Interactive cards delivered through WeCom (emulated): transactional, rendered from the
//! card model, resilient to rate limits and token expiry.

use closeloop::cards::{self, Button, ButtonStyle, Card};
use closeloop::emulator::wecom::{Emulator, Failure};
use serde_json::json;

use crate::helpers::{spawn_app_with, TestApp};

async fn setup() -> (Emulator, TestApp) {
    let emulator =
        Emulator::start("wwcl0000000000001", vec![("app-secret".to_string(), "app")]).await;
    let app = spawn_app_with(&format!(
        "[wecom]\ncorp_id = \"wwcl0000000000001\"\nagent_id = 1000002\nsecret = \"app-secret\"\ntoken = \"QDG6eK\"\n\
         encoding_aes_key = \"jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C\"\napi_base = \"{}\"\n",
        emulator.base_url()
    ))
    .await;
    (emulator, app)
}

fn quick_ask() -> Card {
    Card {
        title: "售前快速提问".into(),
        description: Some("李明 · 华南智造".into()),
        fields: vec![("问题".into(), "是否支持私有化部署？".into())],
        buttons: vec![
            Button {
                action: "accept".into(),
                label: "接受".into(),
                style: ButtonStyle::Primary,
            },
            Button {
                action: "reject".into(),
                label: "退回".into(),
                style: ButtonStyle::Danger,
            },
        ],
        ..Default::default()
    }
}

async fn send(app: &TestApp, to: &str) -> String {
    let mut tx = app.db.begin().await.unwrap();
    let id = cards::send(
        &mut tx,
        &app.cipher,
        chrono::Utc::now().timestamp_millis(),
        &app.org_id,
        to,
        "quick_ask",
        Some("ask:1"),
        &quick_ask(),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    id
}

async fn card_status(app: &TestApp, id: &str) -> (String, Option<String>, Option<i64>) {
    sqlx::query_as(
        "SELECT status, response_code, response_code_expires_at FROM cards WHERE id = $1",
    )
    .bind(id)
    .fetch_one(&app.db.pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_card_is_sent_once_as_a_wecom_template_card() {
    let (emulator, app) = setup().await;
    let presales = app
        .create(
            "/api/v1/users",
            json!({"name": "张工", "roles": ["presales"], "identities": [{"platform": "wecom", "kind": "userid", "value": "zhanggong"}]}),
        )
        .await;
    let to = presales["id"].as_str().unwrap();

    // Rolled back: no card, no job.
    let mut tx = app.db.begin().await.unwrap();
    cards::send(
        &mut tx,
        &app.cipher,
        0,
        &app.org_id,
        to,
        "quick_ask",
        None,
        &quick_ask(),
    )
    .await
    .unwrap();
    tx.rollback().await.unwrap();
    assert_eq!(app.count("cards").await, 0);
    assert_eq!(app.count("jobs WHERE kind = 'card.deliver'").await, 0);

    let id = send(&app, to).await;
    app.worker.drain().await.unwrap();
    let sent = emulator.received_messages();
    assert_eq!(sent.len(), 1);
    let m = &sent[0];
    assert_eq!(
        (m["touser"].as_str(), m["agentid"].as_i64()),
        (Some("zhanggong"), Some(1_000_002))
    );
    assert_eq!(m["enable_duplicate_check"], 1);
    assert_eq!(m["template_card"]["task_id"], id.as_str());
    assert_eq!(
        m["template_card"]["button_list"][1]["key"],
        format!("reject:{id}")
    );
    let (status, code, expires) = card_status(&app, &id).await;
    assert_eq!(status, "sent");
    assert!(code.unwrap().starts_with("emulated-rc-"));
    let ttl = expires.unwrap() - chrono::Utc::now().timestamp_millis();
    assert!(
        (71 * 3_600_000..=72 * 3_600_000).contains(&ttl),
        "response code valid for 72 h"
    );
    app.worker.drain().await.unwrap();
    assert_eq!(emulator.received_messages().len(), 1, "delivered once");
}

#[tokio::test]
async fn rate_limits_delay_and_expired_tokens_refresh_nothing_is_dropped() {
    let (emulator, app) = setup().await;
    let user = app
        .create(
            "/api/v1/users",
            json!({"name": "张工", "identities": [{"platform": "wecom", "kind": "userid", "value": "zhanggong"}]}),
        )
        .await;
    let to = user["id"].as_str().unwrap();

    emulator.fail_next("/cgi-bin/message/send", 1, Failure::Errcode(45009));
    let limited = send(&app, to).await;
    app.worker.drain().await.unwrap();
    assert_eq!(card_status(&app, &limited).await.0, "queued");
    let (status, attempts): (String, i64) =
        sqlx::query_as("SELECT status, attempts FROM jobs WHERE kind = 'card.deliver'")
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    assert_eq!(
        (status.as_str(), attempts),
        ("queued", 0),
        "a rate limit delays without using an attempt"
    );

    // Token invalidated by WeCom: the call refreshes once and goes through. (Another
    // recipient: one person's cards go out in order, so theirs wait behind the first.)
    let other = app
        .create(
            "/api/v1/users",
            json!({"name": "王芳", "identities": [{"platform": "wecom", "kind": "userid", "value": "wangfang"}]}),
        )
        .await;
    emulator.expire_tokens();
    let calls_before = emulator.gettoken_calls();
    let fresh = send(&app, other["id"].as_str().unwrap()).await;
    app.worker.drain().await.unwrap();
    assert_eq!(card_status(&app, &fresh).await.0, "sent");
    assert_eq!(emulator.gettoken_calls(), calls_before + 1);
}

#[tokio::test]
async fn a_recipient_without_a_wecom_id_fails_visibly() {
    let (emulator, app) = setup().await;
    let nobody = app.user("无企业微信账号", &["finance"]).await;
    let id = send(&app, &nobody).await;
    app.worker.drain().await.unwrap();
    assert_eq!(card_status(&app, &id).await.0, "failed");
    let dead: serde_json::Value = app
        .get("/api/v1/jobs?status=dead&kind=card.deliver")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(dead["items"].as_array().unwrap().len(), 1);
    assert!(emulator.received_messages().is_empty());
}

fn click(card: &str, from: &str, action: &str, code: &str) -> String {
    let ts = chrono::Utc::now().timestamp();
    format!(
        "<xml><ToUserName><![CDATA[{corp}]]></ToUserName><FromUserName><![CDATA[{from}]]></FromUserName>\
         <CreateTime>{ts}</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[template_card_event]]></Event>\
         <EventKey><![CDATA[{action}:{card}]]></EventKey><TaskId><![CDATA[{card}]]></TaskId>\
         <CardType><![CDATA[button_interaction]]></CardType><ResponseCode><![CDATA[{code}]]></ResponseCode>\
         <AgentID>1000002</AgentID></xml>",
        corp = crate::callbacks::CORP
    )
}

#[tokio::test]
async fn the_recipients_first_click_is_recorded_once_and_updates_the_card() {
    let (emulator, app) = setup().await;
    let presales = app
        .create(
            "/api/v1/users",
            json!({"name": "张工", "identities": [{"platform": "wecom", "kind": "userid", "value": "zhanggong"}]}),
        )
        .await;
    app.create(
        "/api/v1/users",
        json!({"name": "王芳", "identities": [{"platform": "wecom", "kind": "userid", "value": "wangfang"}]}),
    )
    .await;
    let id = send(&app, presales["id"].as_str().unwrap()).await;
    app.worker.drain().await.unwrap();
    let corp = crate::callbacks::CORP;
    let ts = chrono::Utc::now().timestamp();

    // A forwarded card clicked by someone else changes nothing.
    let stranger = emulator.issue_response_code();
    let res =
        crate::callbacks::deliver(&app, &click(&id, "wangfang", "accept", &stranger), corp, ts)
            .await;
    assert_eq!(res.status(), 200);
    app.worker.drain().await.unwrap();
    let (clicked,): (Option<String>,) =
        sqlx::query_as("SELECT clicked_action FROM cards WHERE id = $1")
            .bind(&id)
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    assert_eq!(clicked, None);

    let code = emulator.issue_response_code();
    let first = click(&id, "zhanggong", "accept", &code);
    assert_eq!(
        crate::callbacks::deliver(&app, &first, corp, ts)
            .await
            .status(),
        200
    );
    // WeCom retries the same callback, and the user double-clicks (a new code).
    assert_eq!(
        crate::callbacks::deliver(&app, &first, corp, ts)
            .await
            .status(),
        200
    );
    let again = emulator.issue_response_code();
    let double = click(&id, "zhanggong", "reject", &again);
    assert_eq!(
        crate::callbacks::deliver(&app, &double, corp, ts)
            .await
            .status(),
        200
    );
    app.worker.drain().await.unwrap();

    let (clicked, by): (Option<String>, Option<String>) =
        sqlx::query_as("SELECT clicked_action, clicked_by_user_id FROM cards WHERE id = $1")
            .bind(&id)
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    assert_eq!(
        (clicked.as_deref(), by.as_deref()),
        (Some("accept"), presales["id"].as_str())
    );
    let updates = emulator.card_updates();
    assert_eq!(updates.len(), 1, "one update for one answer");
    assert_eq!(updates[0]["response_code"], code.as_str());
    assert_eq!(updates[0]["button"]["replace_name"], "已接受");
    assert_eq!(updates[0]["userids"][0], "zhanggong");

    let events: serde_json::Value = app
        .get("/api/v1/platform-events?type=template_card_event")
        .await
        .json()
        .await
        .unwrap();
    let statuses: Vec<&str> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["ignored", "processed", "processed"]);
    let text = events.to_string();
    assert!(!text.contains(&code), "a response code leaked into the API");
}

#[tokio::test]
async fn a_rate_limit_storm_delays_every_card_and_drops_none() {
    let (emulator, app) = setup().await;
    const N: usize = 40;
    let mut recipients = Vec::new();
    for i in 0..N {
        let u = app
            .create(
                "/api/v1/users",
                json!({"name": format!("成员{i}"), "identities": [{"platform": "wecom", "kind": "userid", "value": format!("m{i}")}]}),
            )
            .await;
        recipients.push(u["id"].as_str().unwrap().to_string());
    }
    emulator.fail_next("/cgi-bin/message/send", N / 2, Failure::Errcode(45009));
    emulator.fail_next("/cgi-bin/message/send", N / 2, Failure::Errcode(45033));
    let mut ids = Vec::new();
    for to in &recipients {
        ids.push(send(&app, to).await);
    }
    app.worker.drain().await.unwrap();
    let (queued, dead): (i64, i64) = sqlx::query_as(
        "SELECT CAST(SUM(CASE WHEN status = 'queued' AND attempts = 0 THEN 1 ELSE 0 END) AS BIGINT), \
         CAST(SUM(CASE WHEN status = 'dead' THEN 1 ELSE 0 END) AS BIGINT) FROM jobs WHERE kind = 'card.deliver'",
    )
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(
        (queued, dead),
        (N as i64, 0),
        "every card waits, none is given up"
    );
    assert!(emulator.received_messages().is_empty());

    // The wait is over (a minute later): every card goes out, once.
    sqlx::query("UPDATE jobs SET run_at = 0 WHERE kind = 'card.deliver' AND status = 'queued'")
        .execute(&app.db.pool)
        .await
        .unwrap();
    app.worker.drain().await.unwrap();
    let sent = emulator.received_messages();
    assert_eq!(sent.len(), N);
    let mut task_ids: Vec<String> = sent
        .iter()
        .map(|m| m["template_card"]["task_id"].as_str().unwrap().to_string())
        .collect();
    task_ids.sort();
    ids.sort();
    assert_eq!(task_ids, ids);
}

#[tokio::test]
async fn closeloop_paces_itself_to_thirty_messages_a_minute_per_member() {
    let (emulator, app) = setup().await;
    let user = app
        .create(
            "/api/v1/users",
            json!({"name": "张工", "identities": [{"platform": "wecom", "kind": "userid", "value": "zhanggong"}]}),
        )
        .await;
    let to = user["id"].as_str().unwrap();
    let mut ids = Vec::new();
    for _ in 0..32 {
        ids.push(send(&app, to).await);
    }
    app.worker.drain().await.unwrap();
    assert_eq!(
        emulator.received_messages().len(),
        30,
        "the 31st waits for the minute to pass"
    );
    let (waiting, attempts): (i64, i64) = sqlx::query_as(
        "SELECT CAST(COUNT(*) AS BIGINT), CAST(COALESCE(MAX(attempts), 0) AS BIGINT) FROM jobs \
         WHERE kind = 'card.deliver' AND status = 'queued'",
    )
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    assert_eq!((waiting, attempts), (2, 0), "delayed, not failed");
    // In enqueue order: the first thirty cards are the ones sent.
    let sent: Vec<String> = emulator
        .received_messages()
        .iter()
        .map(|m| m["template_card"]["task_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(sent, ids[..30]);
}

/// Attested evidence decided on the card: the superior's click (a signed, encrypted WeCom
/// callback) confirms the claim; a WeCom retry changes nothing more.
#[tokio::test]
async fn an_attestation_is_confirmed_by_the_superiors_card_click() {
    let (emulator, app) = setup().await;
    let manager = app
        .create(
            "/api/v1/users",
            json!({"name": "王经理", "roles": ["manager"], "identities": [{"platform": "wecom", "kind": "userid", "value": "wangjl"}]}),
        )
        .await;
    let rep = app
        .create(
            "/api/v1/users",
            json!({"name": "李明", "superiors": [manager["id"]], "identities": [{"platform": "wecom", "kind": "userid", "value": "liming"}]}),
        )
        .await;
    let customer = app.customer("华南智造", rep["id"].as_str()).await;
    let claim = app
        .create(
            "/api/v1/events",
            json!({"actor": rep["id"], "customer": customer, "action": "已电话沟通"}),
        )
        .await;
    let att = app
        .create(
            &format!(
                "/api/v1/events/{}/attestations",
                claim["id"].as_str().unwrap()
            ),
            json!({"actor": rep["id"], "note": "客户用座机回拨，未走公费电话"}),
        )
        .await;
    app.worker.drain().await.unwrap();
    let sent = emulator.received_messages();
    let card = sent
        .iter()
        .find(|m| m["touser"] == "wangjl")
        .expect("the card reached the superior");
    assert_eq!(
        card["template_card"]["main_title"]["title"],
        "跟进证明待确认"
    );
    let (card_id,): (String,) = sqlx::query_as("SELECT card_id FROM attestations WHERE id = $1")
        .bind(att["id"].as_str().unwrap())
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    let corp = crate::callbacks::CORP;
    let ts = chrono::Utc::now().timestamp();
    let code = emulator.issue_response_code();
    let body = click(&card_id, "wangjl", "confirm", &code);
    for _ in 0..2 {
        let res = crate::callbacks::deliver(&app, &body, corp, ts).await;
        assert_eq!(res.status(), 200);
    }
    app.worker.drain().await.unwrap();
    let v: serde_json::Value = app
        .get(&format!(
            "/api/v1/events/{}/verification",
            claim["id"].as_str().unwrap()
        ))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["status"], "attested");
    assert_eq!(v["evidence_source"], "attestation");
    let (status,): (String,) = sqlx::query_as("SELECT status FROM attestations WHERE id = $1")
        .bind(att["id"].as_str().unwrap())
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(status, "confirmed");
    assert_eq!(
        app.count("audit_log WHERE action = 'attestation.confirmed'")
            .await,
        1
    );
    // The superior's click is a point on the claim's customer.
    let clicks: serde_json::Value = app
        .get(&format!(
            "/api/v1/events?customer={customer}&action=card.click"
        ))
        .await
        .json()
        .await
        .unwrap();
    let clicks = clicks["items"].as_array().unwrap();
    assert_eq!(clicks.len(), 1, "{clicks:?}");
    assert_eq!(clicks[0]["actor"], manager["id"]);
    assert_eq!(clicks[0]["payload"]["purpose"], "attestation");
    assert_eq!(clicks[0]["payload"]["button"], "confirm");
}

/// How long after a click a card can still show what became of its request depends on the
/// platform it went out on: WeCom's one-shot code lasts 72 hours, Feishu edits messages for
/// 14 days, DingTalk updates by track id (30 days here).
#[tokio::test]
async fn a_clicked_card_can_be_updated_for_as_long_as_its_platform_allows() {
    let app = crate::helpers::spawn_app().await;
    let user = app.user("张工", &["presales"]).await;
    let day = 24 * 3600 * 1000;
    let t0 = chrono::Utc::now().timestamp_millis();
    for (platform, after_days, updatable) in [
        ("wecom", 2, true),
        ("wecom", 4, false),
        ("feishu", 13, true),
        ("feishu", 15, false),
        ("dingtalk", 29, true),
        ("dingtalk", 31, false),
    ] {
        let mut tx = app.db.begin().await.unwrap();
        let id = cards::send(
            &mut tx,
            &app.cipher,
            t0,
            &app.org_id,
            &user,
            "collab.request",
            None,
            &quick_ask(),
        )
        .await
        .unwrap();
        sqlx::query("UPDATE cards SET status = 'sent', platform = $1 WHERE id = $2")
            .bind(platform)
            .bind(&id)
            .execute(&mut *tx)
            .await
            .unwrap();
        let click = cards::record_click(
            &mut tx,
            &app.cipher,
            t0,
            &app.org_id,
            &id,
            "accept",
            Some(&user),
            Some("code"),
        )
        .await
        .unwrap();
        assert_eq!(click, cards::Click::Recorded);
        let shown = cards::show_status(
            &mut tx,
            t0 + after_days * day,
            &app.org_id,
            &id,
            "张工已答复",
        )
        .await
        .unwrap();
        assert_eq!(shown, updatable, "{platform} after {after_days} days");
        tx.rollback().await.unwrap();
    }
}
