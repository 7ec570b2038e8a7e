//! Every write path records its audit entry (issue 15 item 8): the main writes through the
//! API and the pages, each followed by the action it must have written, and no entry
//! holding a name, number or typed text.

use closeloop::access::audit_actions;
use serde_json::{json, Value};
use sqlx::Row;

use crate::helpers::{spawn_app, TestApp};

/// The audit entries written since `since` rows: (action, target_kind, target_id, detail).
async fn entries_after(app: &TestApp, since: i64) -> Vec<(String, String, String, String)> {
    sqlx::query(
        "SELECT action, target_kind, target_id, detail FROM audit_log WHERE org_id = $1 ORDER BY id",
    )
    .bind(&app.org_id)
    .fetch_all(&app.db.pool)
    .await
    .unwrap()
    .iter()
    .skip(since as usize)
    .map(|r| {
        (
            r.get("action"),
            r.get::<Option<String>, _>("target_kind").unwrap_or_default(),
            r.get::<Option<String>, _>("target_id").unwrap_or_default(),
            r.get("detail"),
        )
    })
    .collect()
}

struct Sweep<'a> {
    app: &'a TestApp,
    seen: i64,
    all: Vec<String>,
}

impl Sweep<'_> {
    /// The entries written since the last check must include `action` on `target`.
    async fn wrote(&mut self, what: &str, action: &str, target: Option<&str>) {
        let new = entries_after(self.app, self.seen).await;
        self.seen += new.len() as i64;
        assert!(
            new.iter()
                .any(|(a, _, t, _)| a == action && target.is_none_or(|x| x == t)),
            "{what}: expected `{action}` on {target:?}, got {new:#?}"
        );
        for (a, _, _, detail) in &new {
            assert!(audit_actions::label(a).is_some(), "{a} has no label");
            self.all.push(detail.clone());
        }
    }
}

async fn ok(res: reqwest::Response) -> Value {
    let status = res.status();
    let text = res.text().await.unwrap();
    assert!(status.is_success(), "{status}: {text}");
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

#[tokio::test]
async fn the_main_write_paths_each_write_their_audit_entry() {
    let app = spawn_app().await;
    let mut s = Sweep {
        app: &app,
        seen: entries_after(&app, 0).await.len() as i64,
        all: Vec::new(),
    };

    let rep = app.user("李明", &["sales"]).await;
    s.wrote("a member", "user.create", Some(&rep)).await;
    let lawyer = app.user("王律师", &["legal"]).await;
    s.wrote("a member", "user.create", Some(&lawyer)).await;
    ok(app
        .patch(
            &format!("/api/v1/users/{rep}"),
            &json!({"roles": ["sales", "manager"]}),
        )
        .await)
    .await;
    s.wrote("roles", "user.update", Some(&rep)).await;

    let customer = app.customer("华南智造科技有限公司", Some(&rep)).await;
    s.wrote("a customer", "customer.create", Some(&customer))
        .await;
    ok(app
        .patch(
            &format!("/api/v1/customers/{customer}"),
            &json!({"tier": "A"}),
        )
        .await)
    .await;
    s.wrote("a customer's tier", "customer.update", Some(&customer))
        .await;
    let c = ok(app
        .post(
            &format!("/api/v1/customers/{customer}/contacts"),
            &json!({"name": "王经理", "phones": ["13900139000"], "email": "wang@example.com"}),
        )
        .await)
    .await;
    assert!(c.is_object());
    s.wrote("a contact", "contact.create", None).await;
    let res = app
        .client
        .put(app.url(&format!("/api/v1/customers/{customer}/assignments/legal")))
        .bearer_auth(&app.key)
        .json(&json!({"user": lawyer}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    s.wrote("an assignment", "customer.assign", Some(&customer))
        .await;

    let lead = app
        .create(
            "/api/v1/leads",
            json!({"customer": customer, "source_channel": "抖音表单", "owner": rep}),
        )
        .await;
    s.wrote("a lead", "lead.create", lead["id"].as_str()).await;
    let deal = app
        .create(
            "/api/v1/deals",
            json!({"customer": customer, "title": "一期"}),
        )
        .await;
    let deal = deal["id"].as_str().unwrap().to_string();
    s.wrote("a deal", "deal.create", Some(&deal)).await;
    ok(app
        .patch(
            &format!("/api/v1/deals/{deal}"),
            &json!({"amount_fen": 1000}),
        )
        .await)
    .await;
    s.wrote("a deal's amount", "deal.update", Some(&deal)).await;

    // A record through the API on the rep's behalf.
    let point = app
        .create(
            "/api/v1/events",
            json!({"actor": rep, "customer": customer, "action": "已电话沟通"}),
        )
        .await;
    s.wrote("a record by API", "point.record", Some(&customer))
        .await;
    assert!(point["id"].is_string());

    // A document upload and a link to it.
    let res = app
        .client
        .post(app.url(&format!("/api/v1/customers/{customer}/documents")))
        .bearer_auth(&app.key)
        .query(&[
            ("actor", rep.as_str()),
            ("kind", "proposal"),
            ("filename", "报价方案.pdf"),
        ])
        .header("content-type", "application/pdf")
        .body(b"%PDF-1.4 test".to_vec())
        .send()
        .await
        .unwrap();
    let doc = ok(res).await;
    s.wrote("an upload", "point.record", Some(&customer)).await;
    app.create(
        &format!("/api/v1/documents/{}/links", doc["id"].as_str().unwrap()),
        json!({"actor": rep}),
    )
    .await;
    s.wrote("a document link", "document.link", Some(&customer))
        .await;

    // A collaboration request and its steps.
    let r = app
        .create(
            "/api/v1/collab/adhoc",
            json!({"customer": customer, "initiator": rep, "subject": "保密协议盖章", "role": "legal",
                   "assignee": lawyer, "description": "请于周五前盖章"}),
        )
        .await;
    let request = r["id"].as_str().unwrap().to_string();
    s.wrote("an ad-hoc request", "collab.adhoc", Some(&request))
        .await;
    ok(app
        .post(
            &format!("/api/v1/collab/requests/{request}/accept"),
            &json!({"actor": lawyer}),
        )
        .await)
    .await;
    s.wrote("accepting", "collab.accept", Some(&request)).await;

    // The webhooks.
    let hook = app
        .create(
            "/api/v1/webhooks",
            json!({"url": "https://hooks.example.com/closeloop", "events": ["tracking_point.created"]}),
        )
        .await;
    s.wrote("a webhook", "webhook.create", hook["id"].as_str())
        .await;

    // A page: a tap in the sidebar.
    let (cookie, csrf) = closeloop::http::pages::session::create(
        &app.db,
        chrono::Utc::now().timestamp_millis(),
        &app.org_id,
        &rep,
        "dev",
    )
    .await
    .unwrap();
    let res = app
        .client
        .post(app.url(&format!("/web/customers/{customer}/actions")))
        .header(
            "cookie",
            format!("{}={cookie}", closeloop::http::pages::session::COOKIE),
        )
        .header("x-csrf-token", &csrf)
        .json(&json!({"action": "已发送样品清单"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    s.wrote("a sidebar tap", "point.record", Some(&customer))
        .await;

    // Ids, never personal values or typed text.
    let all = s.all.join("\n");
    for personal in [
        "李明",
        "王律师",
        "华南智造",
        "王经理",
        "13900139000",
        "wang@example.com",
        "报价方案",
        "保密协议盖章",
        "请于周五前盖章",
        "已电话沟通",
    ] {
        assert!(!all.contains(personal), "{personal} in {all}");
    }
}
