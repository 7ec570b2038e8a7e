//! How deals end: 输单 with a reason from the rule set, reopening by a manager, who may do
//! either, the ledger and audit entries they write, and the evidence gates of the later
//! stages (a proposal sent, then opened by the customer, then a verified call).

use closeloop::chat::event::Platform;
use closeloop::verification::calls::{self, CallRecord};
use serde_json::{json, Value};
use sqlx::Row;

use crate::helpers::{error_code, spawn_app_with, TestApp};

struct Deals {
    app: TestApp,
    manager: String,
    rep: String,
    other: String,
    customer: String,
    deal: String,
}

/// A rep (reporting to a manager) owning a customer and a deal; another rep besides.
/// Requests from 127.0.0.1 may name the client in X-Forwarded-For.
async fn setup() -> Deals {
    let app = spawn_app_with("trusted_proxies = [\"127.0.0.1/32\"]").await;
    let manager = app.user("王经理", &["sales"]).await;
    let rep = app
        .create(
            "/api/v1/users",
            json!({"name": "李明", "roles": ["sales"], "superiors": [manager],
                   "identities": [{"platform": "wecom", "kind": "userid", "value": "liming"}]}),
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let other = app.user("路人", &["sales"]).await;
    let customer = app.customer("华东医疗器械", Some(&rep)).await;
    let deal = app
        .create(
            "/api/v1/deals",
            json!({"customer": customer, "title": "质检方案", "owner": rep}),
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    Deals {
        app,
        manager,
        rep,
        other,
        customer,
        deal,
    }
}

impl Deals {
    async fn post(&self, step: &str, body: Value) -> reqwest::Response {
        self.app
            .post(&format!("/api/v1/deals/{}/{step}", self.deal), &body)
            .await
    }

    async fn deal(&self) -> Value {
        self.app
            .get(&format!("/api/v1/deals/{}", self.deal))
            .await
            .json()
            .await
            .unwrap()
    }

    async fn count(&self, sql: &str, value: &str) -> i64 {
        sqlx::query(sql)
            .bind(value)
            .bind(&self.deal)
            .fetch_one(&self.app.db.pool)
            .await
            .unwrap()
            .get("n")
    }

    async fn points(&self, action: &str) -> i64 {
        self.count(
            "SELECT CAST(COUNT(*) AS BIGINT) AS n FROM tracking_points \
             WHERE action = $1 AND deal_id = $2 AND source = 'system'",
            action,
        )
        .await
    }

    async fn audits(&self, action: &str) -> i64 {
        self.count(
            "SELECT CAST(COUNT(*) AS BIGINT) AS n FROM audit_log WHERE action = $1 AND target_id = $2",
            action,
        )
        .await
    }

    async fn set_stage(&self, stage: &str) {
        sqlx::query("UPDATE deals SET stage = $1 WHERE id = $2")
            .bind(stage)
            .bind(&self.deal)
            .execute(&self.app.db.pool)
            .await
            .unwrap();
    }
}

/// Sends the document to the customer as a tracked link; returns its address.
async fn send_link(t: &Deals, document: &str) -> String {
    let l = t
        .app
        .create(
            &format!("/api/v1/documents/{document}/links"),
            json!({"actor": t.rep}),
        )
        .await;
    let token = l["url"].as_str().unwrap().rsplit('/').next().unwrap();
    t.app.url(&format!("/d/{token}"))
}

/// The customer opens a link, from `from` (X-Forwarded-For) or from the test's address.
async fn open(url: String, from: Option<&str>) {
    let mut req = reqwest::Client::new().get(url);
    if let Some(ip) = from {
        req = req.header("x-forwarded-for", ip);
    }
    assert_eq!(req.send().await.unwrap().status(), 200);
}

async fn missing_codes(res: reqwest::Response) -> Vec<String> {
    let status = res.status();
    let body: Value = res.json().await.unwrap();
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "gate_not_met", "{body}");
    body["error"]["details"]["missing"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["code"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn a_lost_deal_keeps_its_reason_cannot_move_and_a_manager_reopens_it() {
    let t = setup().await;
    // A reason outside the rule set's list changes nothing.
    let (status, code, message) = error_code(
        t.post("lose", json!({"actor": t.rep, "reason": "天气"}))
            .await,
    )
    .await;
    assert_eq!((status, code.as_str()), (422, "invalid_input"));
    assert!(message.contains("预算取消"), "{message}");
    // Only the owner or someone who may manage the deal.
    let (status, _, message) = error_code(
        t.post("lose", json!({"actor": t.other, "reason": "价格"}))
            .await,
    )
    .await;
    assert_eq!(status, 403, "{message}");
    assert_eq!(t.deal().await["outcome"], "open");
    assert_eq!(t.points("stage.lost").await, 0);

    let res = t
        .post(
            "lose",
            json!({"actor": t.rep, "reason": "价格", "note": "客户选了报价低两成的竞品"}),
        )
        .await;
    assert_eq!(res.status(), 200);
    let lost = t.deal().await;
    assert_eq!(lost["outcome"], "lost");
    assert_eq!(
        lost["stage"], "初步咨询",
        "it stays in the stage it was lost in"
    );
    assert_eq!(lost["lost_reason"], "价格");
    assert_eq!(lost["lost_note"], "客户选了报价低两成的竞品");
    assert!(lost["closed_at"].is_string(), "{lost}");
    let last = lost["stage_history"].as_array().unwrap().last().unwrap();
    assert_eq!(last["kind"], "lost");
    assert_eq!(last["reason"], "价格");
    assert_eq!(last["actor"], t.rep.as_str());
    // The note is encrypted at rest, and neither the ledger nor the audit log holds it.
    let stored: String = sqlx::query("SELECT lost_note_enc FROM deals WHERE id = $1")
        .bind(&t.deal)
        .fetch_one(&t.app.db.pool)
        .await
        .unwrap()
        .get("lost_note_enc");
    assert!(!stored.contains("竞品"));
    assert_eq!(t.points("stage.lost").await, 1);
    assert_eq!(t.audits("deal.lost").await, 1);
    let payload: String = sqlx::query(
        "SELECT payload FROM tracking_points WHERE action = 'stage.lost' AND deal_id = $1",
    )
    .bind(&t.deal)
    .fetch_one(&t.app.db.pool)
    .await
    .unwrap()
    .get("payload");
    let payload: Value = serde_json::from_str(&payload).unwrap();
    assert_eq!(payload["reason"], "价格");
    assert_eq!(payload["outcome"], "lost");
    assert!(!payload.to_string().contains("竞品"), "{payload}");
    // Listed by outcome.
    let listed: Value = t
        .app
        .get("/api/v1/deals?outcome=lost")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed["items"].as_array().unwrap().len(), 1);

    // A lost deal neither advances, nor rolls back, nor is lost twice.
    let (status, code, _) = error_code(t.post("advance", json!({"actor": t.rep})).await).await;
    assert_eq!((status, code.as_str()), (409, "deal_lost"));
    let (_, code, _) = error_code(
        t.post("lose", json!({"actor": t.manager, "reason": "竞品"}))
            .await,
    )
    .await;
    assert_eq!(code, "deal_closed");
    assert_eq!(t.points("stage.advance").await, 0);

    // Reopening is a manager's, with a reason.
    let (status, _, _) = error_code(
        t.post("reopen", json!({"actor": t.rep, "reason": "客户回来了"}))
            .await,
    )
    .await;
    assert_eq!(status, 403, "the owner does not reopen their own lost deal");
    let (status, _, _) = error_code(
        t.post("reopen", json!({"actor": t.manager, "reason": "  "}))
            .await,
    )
    .await;
    assert_eq!(status, 422);
    assert_eq!(t.deal().await["outcome"], "lost");
    let res = t
        .post(
            "reopen",
            json!({"actor": t.manager, "reason": "客户预算恢复，重新评估"}),
        )
        .await;
    assert_eq!(res.status(), 200);
    let open = t.deal().await;
    assert_eq!(open["outcome"], "open");
    assert_eq!(open["stage"], "初步咨询");
    assert!(
        open["closed_at"].is_null() && open["lost_reason"].is_null(),
        "{open}"
    );
    let last = open["stage_history"].as_array().unwrap().last().unwrap();
    assert_eq!(last["kind"], "reopen");
    assert_eq!(last["reason"], "客户预算恢复，重新评估");
    assert_eq!(last["actor"], t.manager.as_str());
    assert_eq!(t.points("stage.reopen").await, 1);
    assert_eq!(t.audits("deal.reopen").await, 1);
    let (_, code, _) = error_code(
        t.post("reopen", json!({"actor": t.manager, "reason": "再来一次"}))
            .await,
    )
    .await;
    assert_eq!(code, "deal_not_lost");
    // The manager may end it lost too.
    let res = t
        .post("lose", json!({"actor": t.manager, "reason": "失去联系"}))
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(t.deal().await["lost_reason"], "失去联系");
    t.app.stop().await;
}

#[tokio::test]
async fn a_won_deal_is_closed_and_a_rollback_opens_it_again() {
    let t = setup().await;
    closeloop::rules::store::import(
        &t.app.db,
        chrono::Utc::now().timestamp_millis(),
        &t.app.org_id,
        &closeloop::access::Actor::cli(),
        "[[stages]]\nname = \"初步咨询\"\n[[stages]]\nname = \"赢单\"\n",
    )
    .await
    .unwrap();
    assert_eq!(
        t.post("advance", json!({"actor": t.rep})).await.status(),
        200
    );
    let won = t.deal().await;
    assert_eq!(won["outcome"], "won");
    assert!(won["closed_at"].is_string());
    let (_, code, _) = error_code(
        t.post("lose", json!({"actor": t.rep, "reason": "价格"}))
            .await,
    )
    .await;
    assert_eq!(code, "deal_closed", "a won deal is not lost");
    let (_, code, _) = error_code(t.post("advance", json!({"actor": t.rep})).await).await;
    assert_eq!(code, "deal_closed", "nor moved on");
    let res = t
        .post(
            "rollback",
            json!({"actor": t.manager, "to": "初步咨询", "reason": "合同未签"}),
        )
        .await;
    assert_eq!(res.status(), 200);
    let back = t.deal().await;
    assert_eq!(back["outcome"], "open");
    assert!(back["closed_at"].is_null());
    t.app.stop().await;
}

#[tokio::test]
async fn the_later_stages_need_a_proposal_sent_then_opened_then_a_verified_call() {
    let t = setup().await;
    t.set_stage("需求确认").await;
    assert_eq!(
        missing_codes(t.post("advance", json!({"actor": t.rep})).await).await,
        ["proposals_sent"]
    );
    // Uploaded is not sent.
    let res = t
        .app
        .client
        .post(
            t.app
                .url(&format!("/api/v1/customers/{}/documents", t.customer)),
        )
        .bearer_auth(&t.app.key)
        .query(&[
            ("actor", t.rep.as_str()),
            ("kind", "proposal"),
            ("filename", "方案.pdf"),
        ])
        .header("content-type", "application/pdf")
        .body(b"%PDF-1.4 proposal".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let document: Value = res.json().await.unwrap();
    let document = document["id"].as_str().unwrap().to_string();
    let res = t.post("advance", json!({"actor": t.rep})).await;
    let body: Value = res.json().await.unwrap();
    assert_eq!(
        body["error"]["details"]["missing"][0]["code"],
        "proposals_sent"
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("还需向客户发送 1 份方案"),
        "{body}"
    );
    let first = send_link(&t, &document).await;
    let res = t.post("advance", json!({"actor": t.rep})).await;
    assert_eq!(res.status(), 200);
    assert_eq!(t.deal().await["stage"], "方案报价");

    // Opened from the address the link was sent from: not the customer's interest.
    open(first, None).await;
    assert_eq!(
        missing_codes(t.post("advance", json!({"actor": t.rep})).await).await,
        ["proposals_opened"]
    );
    let second = send_link(&t, &document).await;
    open(second, Some("203.0.113.7")).await;
    assert_eq!(
        t.post("advance", json!({"actor": t.rep})).await.status(),
        200
    );
    assert_eq!(t.deal().await["stage"], "商务谈判");

    // 赢单 needs a call the platform's records back; a claimed call alone is not enough.
    let tap = t
        .app
        .create(
            "/api/v1/events",
            json!({"actor": t.rep, "customer": t.customer, "action": "已电话沟通"}),
        )
        .await;
    assert_eq!(
        missing_codes(t.post("advance", json!({"actor": t.rep})).await).await,
        ["verified_calls"]
    );
    let now = chrono::Utc::now().timestamp_millis();
    let rules = closeloop::rules::Rules::new(t.app.db.clone())
        .current(&t.app.org_id)
        .await
        .unwrap();
    calls::store(
        &t.app.db,
        &t.app.cipher,
        &rules,
        now,
        &t.app.org_id,
        &[CallRecord {
            platform: Platform::Wecom,
            record_key: "r-1".into(),
            caller: "liming".into(),
            callee_phone: Some("+86 138 0013 8000".into()),
            started_at_ms: now - 60_000,
            duration_s: 240,
            call_type: Some("single".into()),
        }],
    )
    .await
    .unwrap();
    let v: Value = t
        .app
        .get(&format!(
            "/api/v1/events/{}/verification",
            tap["id"].as_str().unwrap()
        ))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["status"], "verified", "{v}");
    assert_eq!(
        t.post("advance", json!({"actor": t.rep})).await.status(),
        200
    );
    let won = t.deal().await;
    assert_eq!(won["stage"], "赢单");
    assert_eq!(won["outcome"], "won");
    let gate: Value = t
        .app
        .get(&format!("/api/v1/deals/{}/gate", t.deal))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        gate["evidence"]["proposals_sent"], 1,
        "one proposal, sent twice"
    );
    assert_eq!(gate["evidence"]["proposals_opened"], 1);
    assert_eq!(gate["evidence"]["verified_calls"], 1);
    t.app.stop().await;
}

#[tokio::test]
async fn the_page_offers_lose_to_the_owner_and_its_routes_check_csrf_and_authority() {
    use crate::sidebar::{no_redirects, spawn_sidebar};
    let app = spawn_sidebar("", false).await;
    let rep = app.create("/api/v1/users", json!({"name": "陈静"})).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let other = app.create("/api/v1/users", json!({"name": "路人"})).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let customer = app.customer("北方重工", &rep).await;
    let deal = app
        .create(
            "/api/v1/deals",
            json!({"customer": customer, "title": "二期产线改造", "owner": rep}),
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (rep_cookie, rep_csrf) = app.session(&rep, "dev").await;
    let (other_cookie, other_csrf) = app.session(&other, "dev").await;
    let page = format!("/sidebar/customers/{customer}");
    let (_, html) = app.page(&page, &rep_cookie).await;
    assert!(
        html.contains("data-open-tool=\"lose\">输单</button>"),
        "{html}"
    );
    for r in ["价格", "竞品", "预算取消", "需求变化", "失去联系", "其他"] {
        assert!(html.contains(&format!("<option>{r}</option>")), "{html}");
    }
    let (_, html) = app.page(&page, &other_cookie).await;
    assert!(!html.contains("data-open-tool=\"lose\""), "{html}");

    let post = |step: &'static str, cookie: &str, csrf: Option<&str>, body: Value| {
        let mut req = no_redirects()
            .post(app.url(&format!("/web/deals/{deal}/{step}")))
            .header("cookie", cookie)
            .json(&body);
        if let Some(t) = csrf {
            req = req.header("x-csrf-token", t);
        }
        req.send()
    };
    let reason = json!({"reason": "预算取消"});
    let res = post("lose", &rep_cookie, None, reason.clone())
        .await
        .unwrap();
    assert_eq!(res.status(), 403, "no CSRF token");
    let res = post("lose", &other_cookie, Some(&other_csrf), reason.clone())
        .await
        .unwrap();
    assert_eq!(res.status(), 404, "not theirs: they do not even see it");
    let res = post("lose", &rep_cookie, Some(&rep_csrf), json!({"note": "x"}))
        .await
        .unwrap();
    assert_eq!(res.status(), 422, "a reason is required");
    let res = post("lose", &rep_cookie, Some(&rep_csrf), reason)
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let res = post(
        "reopen",
        &rep_cookie,
        Some(&rep_csrf),
        json!({"reason": "再谈谈"}),
    )
    .await
    .unwrap();
    assert_eq!(res.status(), 403, "reopening is a manager's");
    let (_, html) = app.page(&page, &rep_cookie).await;
    assert!(html.contains("暂无进行中的商机"), "{html}");
    assert!(html.contains("输单原因：预算取消"), "{html}");
    assert!(
        html.contains("输单时阶段：<strong>初步咨询</strong>"),
        "{html}"
    );
    app.stop().await;
}
