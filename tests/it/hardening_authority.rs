//! Integration keys cannot grant authority: roles, platform identities, superiors,
//! status, customer owners, assignments and calendar feeds are admin-only and audited;
//! who may roll back, reassign and lift freezes is one rule for the API and the web pages.

use closeloop::access::ApiKeyRole;
use closeloop::emulator::wecom::Emulator;
use reqwest::Method;
use serde_json::{json, Value};
use sqlx::Row;

use crate::helpers::{error_code, spawn_app, spawn_app_with, TestApp};

const CORP: &str = "wwcl0000000000001";

async fn send(
    app: &TestApp,
    key: &str,
    method: Method,
    path: &str,
    body: Option<&Value>,
) -> reqwest::Response {
    let mut req = app.client.request(method, app.url(path)).bearer_auth(key);
    if let Some(b) = body {
        req = req.json(b);
    }
    req.send().await.unwrap()
}

/// Expects 403 `forbidden`; returns the message.
async fn forbidden(res: reqwest::Response) -> String {
    let (status, code, message) = error_code(res).await;
    assert_eq!((status, code.as_str()), (403, "forbidden"), "{message}");
    message
}

async fn user(app: &TestApp, id: &str) -> Value {
    let res = app.get(&format!("/api/v1/users/{id}")).await;
    assert_eq!(res.status(), 200);
    res.json().await.unwrap()
}

/// The details of the audit entries for `action` on `target`, oldest first.
async fn audits(app: &TestApp, action: &str, target: &str) -> Vec<(String, Value)> {
    sqlx::query(
        "SELECT actor_kind, detail FROM audit_log WHERE action = $1 AND target_id = $2 ORDER BY at, id",
    )
    .bind(action)
    .bind(target)
    .fetch_all(&app.db.pool)
    .await
    .unwrap()
    .iter()
    .map(|r| {
        (
            r.get::<String, _>("actor_kind"),
            serde_json::from_str(&r.get::<String, _>("detail")).unwrap(),
        )
    })
    .collect()
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// The WeCom OAuth round trip as a browser makes it (any cookie the login sets goes back
/// with the callback); returns the callback's response.
async fn wecom_sign_in(app: &TestApp, emulator: &Emulator, userid: &str) -> reqwest::Response {
    let client = no_redirects();
    let login = client
        .get(app.url("/auth/wecom/login?next=/"))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 303);
    let cookies: Vec<String> = login
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|c| c.to_str().unwrap().split(';').next().unwrap().to_string())
        .collect();
    let location = login.headers()["location"].to_str().unwrap();
    let state = location
        .split("state=")
        .nth(1)
        .unwrap()
        .split(['&', '#'])
        .next()
        .unwrap()
        .to_string();
    let code = emulator.issue_oauth_code(Some(userid));
    let mut callback =
        client.get(app.url(&format!("/auth/wecom/callback?code={code}&state={state}")));
    if !cookies.is_empty() {
        callback = callback.header("cookie", cookies.join("; "));
    }
    callback.send().await.unwrap()
}

#[tokio::test]
async fn an_integration_key_cannot_take_over_a_managers_wecom_sign_in() {
    let emulator = Emulator::start(CORP, vec![("app-secret".to_string(), "app")]).await;
    let app = spawn_app_with(&format!(
        "public_url = \"https://closeloop.example.com\"\n[wecom]\ncorp_id = \"{CORP}\"\nagent_id = 1000002\n\
         secret = \"app-secret\"\ntoken = \"QDG6eK\"\nencoding_aes_key = \"jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C\"\n\
         api_base = \"{}\"\n",
        emulator.base_url()
    ))
    .await;
    let manager = app
        .create(
            "/api/v1/users",
            json!({"name": "王经理", "roles": ["manager"],
                   "identities": [{"platform": "wecom", "kind": "userid", "value": "wangjl"}]}),
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let integration = app.key_with_role(ApiKeyRole::Integration).await;
    let hijack =
        json!({"identities": [{"platform": "wecom", "kind": "userid", "value": "attacker01"}]});
    let message = forbidden(
        send(
            &app,
            &integration,
            Method::PATCH,
            &format!("/api/v1/users/{manager}"),
            Some(&hijack),
        )
        .await,
    )
    .await;
    assert!(message.contains("identities"), "{message}");
    assert_eq!(
        user(&app, &manager).await["identities"],
        json!([{"platform": "wecom", "kind": "userid", "value": "wangjl"}]),
        "nothing written"
    );

    // attacker01 is a member of the corp, but of nobody in closeloop: no session.
    let (status, _, _) = error_code(wecom_sign_in(&app, &emulator, "attacker01").await).await;
    assert_eq!(status, 403);
    assert_eq!(app.count("web_sessions").await, 0);
    // The manager's own sign-in still works.
    let res = wecom_sign_in(&app, &emulator, "wangjl").await;
    assert_eq!(res.status(), 303);
    assert_eq!(app.count("web_sessions").await, 1);
}

#[tokio::test]
async fn an_integration_key_creates_people_but_grants_them_nothing() {
    let app = spawn_app().await;
    let boss = app.user("王经理", &["manager"]).await;
    let integration = app.key_with_role(ApiKeyRole::Integration).await;
    let users = app.count("users").await;
    for (body, field) in [
        (
            json!({"name": "x", "roles": ["admin", "manager", "security"]}),
            "roles",
        ),
        (json!({"name": "x", "superiors": [boss]}), "superiors"),
        (
            json!({"name": "x", "identities": [{"platform": "feishu", "kind": "open_id", "value": "ou_1"}]}),
            "identities",
        ),
    ] {
        let message = forbidden(
            send(
                &app,
                &integration,
                Method::POST,
                "/api/v1/users",
                Some(&body),
            )
            .await,
        )
        .await;
        assert!(message.contains(field), "{message}");
    }
    assert_eq!(app.count("users").await, users, "nothing written");
    assert_eq!(app.count("user_roles").await, 1);
    assert_eq!(app.count("user_identities").await, 0);

    // A person with no authority is business data an integration may write.
    let res = send(
        &app,
        &integration,
        Method::POST,
        "/api/v1/users",
        Some(&json!({"name": "x", "department": "销售一部", "roles": []})),
    )
    .await;
    assert_eq!(res.status(), 201);
    // The admin key may grant; the audit entry names what it granted.
    let admin = app
        .create(
            "/api/v1/users",
            json!({"name": "y", "roles": ["admin"], "superiors": [boss]}),
        )
        .await;
    let id = admin["id"].as_str().unwrap();
    assert_eq!(admin["roles"], json!(["admin"]));
    let entries = audits(&app, "user.create", id).await;
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].0, "api_key");
    assert_eq!(entries[0].1["fields"], json!(["roles", "superiors"]));
}

#[tokio::test]
async fn an_integration_key_changes_no_status_roles_superiors_or_identities() {
    let app = spawn_app().await;
    let boss = app.user("王经理", &["manager"]).await;
    let rep = app.user("李明", &["sales"]).await;
    let res = app
        .patch(&format!("/api/v1/users/{rep}"), &json!({"status": "left"}))
        .await;
    assert_eq!(res.status(), 200);
    let integration = app.key_with_role(ApiKeyRole::Integration).await;
    let path = format!("/api/v1/users/{rep}");
    for (patch, field) in [
        (json!({"status": "active"}), "status"),
        (json!({"status": "left", "name": "改名"}), "status"),
        (json!({"roles": ["manager"]}), "roles"),
        (json!({"roles": []}), "roles"),
        (json!({"superiors": [boss]}), "superiors"),
        (json!({"identities": []}), "identities"),
    ] {
        let message =
            forbidden(send(&app, &integration, Method::PATCH, &path, Some(&patch)).await).await;
        assert!(message.contains(field), "{patch}: {message}");
    }
    let after = user(&app, &rep).await;
    assert_eq!(after["status"], "left", "the leaver stays a leaver");
    assert_eq!(after["name"], "李明", "a refused patch writes nothing");
    assert_eq!(after["roles"], json!(["sales"]));
    assert_eq!(after["superiors"], json!([]));
    assert!(audits(&app, "user.update", &rep)
        .await
        .iter()
        .all(|(_, d)| d["fields"] == json!(["status"])));

    // Business fields stay open to an integration; the admin key changes the rest,
    // each change audited with the fields it touched.
    let res = send(
        &app,
        &integration,
        Method::PATCH,
        &path,
        Some(&json!({"name": "李明明", "region": "华东"})),
    )
    .await;
    assert_eq!(res.status(), 200);
    let res = app
        .patch(
            &path,
            &json!({"status": "active", "roles": ["sales", "presales"], "superiors": [boss]}),
        )
        .await;
    assert_eq!(res.status(), 200);
    let after = user(&app, &rep).await;
    assert_eq!(after["status"], "active");
    assert_eq!(after["superiors"], json!([boss]));
    let fields: Vec<Value> = audits(&app, "user.update", &rep)
        .await
        .into_iter()
        .map(|(_, d)| d["fields"].clone())
        .collect();
    assert_eq!(
        fields,
        [
            json!(["status"]),
            json!(["name", "region"]),
            json!(["status", "roles", "superiors"])
        ]
    );
}

#[tokio::test]
async fn only_an_admin_key_hands_a_customer_to_another_owner() {
    let app = spawn_app().await;
    let rep = app.user("李明", &["sales"]).await;
    let other = app.user("赵强", &["sales"]).await;
    let customer = app.customer("华南智造", Some(&rep)).await;
    let integration = app.key_with_role(ApiKeyRole::Integration).await;
    let path = format!("/api/v1/customers/{customer}");
    let message = forbidden(
        send(
            &app,
            &integration,
            Method::PATCH,
            &path,
            Some(&json!({"owner": other, "name": "改名"})),
        )
        .await,
    )
    .await;
    assert!(message.contains("owner"), "{message}");
    let c: Value = app.get(&path).await.json().await.unwrap();
    assert_eq!(c["owner"], rep.as_str());
    assert_eq!(c["name"], "华南智造");
    let res = send(
        &app,
        &integration,
        Method::PATCH,
        &path,
        Some(&json!({"tier": "A"})),
    )
    .await;
    assert_eq!(res.status(), 200, "the tier is business data");

    let res = app.patch(&path, &json!({"owner": other})).await;
    assert_eq!(res.status(), 200);
    let c: Value = res.json().await.unwrap();
    assert_eq!(c["owner"], other.as_str());
    let fields: Vec<Value> = audits(&app, "customer.update", &customer)
        .await
        .into_iter()
        .map(|(_, d)| d["fields"].clone())
        .collect();
    assert_eq!(fields, [json!(["tier"]), json!(["owner"])]);
}

#[tokio::test]
async fn assignments_take_a_known_role_from_an_admin_key_and_are_audited() {
    let app = spawn_app().await;
    let rep = app.user("李明", &["sales"]).await;
    let presales = app.user("张工", &["presales"]).await;
    let customer = app.customer("华南智造", Some(&rep)).await;
    let integration = app.key_with_role(ApiKeyRole::Integration).await;
    let put = |key: String, role: String| {
        let app = &app;
        let customer = customer.clone();
        let presales = presales.clone();
        async move {
            send(
                app,
                &key,
                Method::PUT,
                &format!("/api/v1/customers/{customer}/assignments/{role}"),
                Some(&json!({"user": presales})),
            )
            .await
        }
    };
    forbidden(put(integration.clone(), "presales".into()).await).await;
    let long = "p".repeat(5000);
    for role in [
        "ceo",
        "pre%01sales",
        "presales%0A",
        long.as_str(),
        "Presales",
    ] {
        let (status, code, message) = error_code(put(app.key.clone(), role.into()).await).await;
        assert_eq!((status, code.as_str()), (422, "invalid_input"), "{role}");
        assert!(message.contains("presales"), "lists the roles: {message}");
        assert!(!message.contains(&long), "does not echo the input");
    }
    assert_eq!(app.count("customer_assignments").await, 0, "nothing stored");
    assert!(audits(&app, "customer.assign", &customer).await.is_empty());

    let res = put(app.key.clone(), "presales".into()).await;
    assert_eq!(res.status(), 204);
    let stored: (String, String) =
        sqlx::query_as("SELECT role, user_id FROM customer_assignments WHERE customer_id = $1")
            .bind(&customer)
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    assert_eq!(stored, ("presales".to_string(), presales.clone()));
    let entries = audits(&app, "customer.assign", &customer).await;
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].0, "api_key");
    assert_eq!(
        entries[0].1,
        json!({"role": "presales", "user": presales.as_str()})
    );

    // Clearing: an admin key only, audited once; clearing what is not set changes nothing.
    let path = format!("/api/v1/customers/{customer}/assignments/presales");
    forbidden(send(&app, &integration, Method::DELETE, &path, None).await).await;
    assert_eq!(app.count("customer_assignments").await, 1, "still assigned");
    for _ in 0..2 {
        let res = send(&app, &app.key, Method::DELETE, &path, None).await;
        assert_eq!(res.status(), 204);
    }
    assert_eq!(app.count("customer_assignments").await, 0);
    let cleared = audits(&app, "customer.unassign", &customer).await;
    assert_eq!(cleared.len(), 1, "the second clear changed nothing");
    assert_eq!(cleared[0].1, json!({"role": "presales"}));
    let res = send(
        &app,
        &app.key,
        Method::DELETE,
        "/api/v1/customers/nobody/assignments/presales",
        None,
    )
    .await;
    assert_eq!(res.status(), 404, "an unknown customer is not found");
}

#[tokio::test]
async fn calendar_feeds_are_made_by_an_admin_key_and_audited_without_the_token() {
    let app = spawn_app().await;
    let rep = app.user("李明", &["sales"]).await;
    let integration = app.key_with_role(ApiKeyRole::Integration).await;
    let path = format!("/api/v1/users/{rep}/calendar-feed");
    forbidden(send(&app, &integration, Method::POST, &path, None).await).await;
    assert_eq!(app.count("calendar_feeds").await, 0);
    let res = send(&app, &app.key, Method::POST, &path, None).await;
    assert_eq!(res.status(), 201);
    let url = res.json::<Value>().await.unwrap()["url"]
        .as_str()
        .unwrap()
        .to_string();
    let token = url.rsplit('/').next().unwrap().trim_end_matches(".ics");
    let entries = audits(&app, "user.calendar_feed", &rep).await;
    assert_eq!(entries.len(), 1);
    assert!(!entries[0].1.to_string().contains(token));
}

/// A manager, a team lead over the rep, the rep and a colleague, with the rep's deal one
/// stage on and the rep frozen on the customer.
struct Team {
    app: TestApp,
    manager: String,
    lead: String,
    rep: String,
    colleague: String,
    customer: String,
    deal: String,
    integration: String,
}

async fn team() -> Team {
    let app = spawn_app().await;
    let manager = app.user("王经理", &["manager"]).await;
    // A manager's authority is their directory subtree: the lead reports to them.
    let lead = app
        .create(
            "/api/v1/users",
            json!({"name": "周组长", "roles": ["sales"], "superiors": [manager]}),
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let rep = app
        .create(
            "/api/v1/users",
            json!({"name": "李明", "roles": ["sales"], "superiors": [lead]}),
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let colleague = app.user("赵强", &["sales"]).await;
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
    let integration = app.key_with_role(ApiKeyRole::Integration).await;
    let t = Team {
        app,
        manager,
        lead,
        rep,
        colleague,
        customer,
        deal,
        integration,
    };
    t.stage("需求确认").await;
    t
}

impl Team {
    async fn stage(&self, stage: &str) {
        sqlx::query("UPDATE deals SET stage = $1 WHERE id = $2")
            .bind(stage)
            .bind(&self.deal)
            .execute(&self.app.db.pool)
            .await
            .unwrap();
    }

    /// Freezes the rep on the customer (the repeat limit, through the API) and returns
    /// the freeze in force.
    async fn freeze(&self) -> String {
        loop {
            let res = self
                .app
                .post(
                    "/api/v1/events",
                    &json!({"actor": self.rep, "customer": self.customer, "action": "已发送样品清单"}),
                )
                .await;
            if res.status() != 201 {
                break;
            }
        }
        let page: Value = self
            .app
            .get("/api/v1/freezes?active=true")
            .await
            .json()
            .await
            .unwrap();
        page["items"][0]["id"].as_str().unwrap().to_string()
    }

    async fn call(&self, key: &str, path: &str, body: Value) -> reqwest::Response {
        send(&self.app, key, Method::POST, path, Some(&body)).await
    }

    async fn rollback(&self, key: &str, actor: Option<&str>) -> reqwest::Response {
        let mut body = json!({"to": "初步咨询", "reason": "虚假跟进"});
        if let Some(a) = actor {
            body["actor"] = json!(a);
        }
        self.call(key, &format!("/api/v1/deals/{}/rollback", self.deal), body)
            .await
    }

    async fn reassign(&self, key: &str, to: &str, actor: Option<&str>) -> reqwest::Response {
        let mut body = json!({"owner": to, "reason": "客户要求更换对接人"});
        if let Some(a) = actor {
            body["actor"] = json!(a);
        }
        self.call(key, &format!("/api/v1/deals/{}/reassign", self.deal), body)
            .await
    }

    async fn lift(&self, key: &str, freeze: &str, actor: Option<&str>) -> reqwest::Response {
        let mut body = json!({"reason": "已核实"});
        if let Some(a) = actor {
            body["actor"] = json!(a);
        }
        self.call(key, &format!("/api/v1/freezes/{freeze}/lift"), body)
            .await
    }

    async fn owner(&self) -> String {
        let d: Value = self
            .app
            .get(&format!("/api/v1/deals/{}", self.deal))
            .await
            .json()
            .await
            .unwrap();
        d["owner"].as_str().unwrap().to_string()
    }
}

#[tokio::test]
async fn rollback_follows_the_key_or_the_person_it_acts_for() {
    let t = team().await;
    let int = t.integration.clone();
    // Without an actor an integration key has no authority of its own.
    let message = forbidden(t.rollback(&int, None).await).await;
    assert!(message.contains("actor"), "{message}");
    // For a plain rep, or a colleague, it has theirs: none.
    forbidden(t.rollback(&int, Some(&t.rep)).await).await;
    forbidden(t.rollback(&int, Some(&t.colleague)).await).await;
    // An admin key naming a rep acts as that rep too.
    forbidden(t.rollback(&t.app.key, Some(&t.rep)).await).await;
    let history = |kind: &'static str| {
        let app = &t.app;
        let deal = t.deal.clone();
        async move {
            sqlx::query_as::<_, (Option<String>, Option<String>)>(
                "SELECT actor_user_id, actor_api_key_id FROM deal_stage_history \
                 WHERE deal_id = $1 AND kind = $2 ORDER BY at, id",
            )
            .bind(deal)
            .bind(kind)
            .fetch_all(&app.db.pool)
            .await
            .unwrap()
        }
    };
    assert!(history("rollback").await.is_empty(), "nothing moved");

    // For a manager, or the rep's team lead, it may.
    for who in [&t.manager, &t.lead] {
        let res = t.rollback(&int, Some(who)).await;
        assert_eq!(res.status(), 200);
        t.stage("需求确认").await;
    }
    // An admin key acting for nobody may.
    let res = t.rollback(&t.app.key, None).await;
    assert_eq!(res.status(), 200);
    let rows = history("rollback").await;
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[0].0.as_deref(), Some(t.manager.as_str()));
    assert_eq!(rows[1].0.as_deref(), Some(t.lead.as_str()));
    assert_eq!(rows[2].0, None);
    assert!(rows.iter().all(|r| r.1.is_some()), "the key is recorded");
}

#[tokio::test]
async fn reassignment_follows_the_key_or_the_person_it_acts_for() {
    let t = team().await;
    let int = t.integration.clone();
    forbidden(t.reassign(&int, &t.colleague, None).await).await;
    forbidden(t.reassign(&int, &t.colleague, Some(&t.rep)).await).await;
    forbidden(t.reassign(&int, &t.colleague, Some(&t.colleague)).await).await;
    assert_eq!(t.owner().await, t.rep);

    let res = t.reassign(&int, &t.colleague, Some(&t.manager)).await;
    assert_eq!(res.status(), 200);
    assert_eq!(t.owner().await, t.colleague);
    // The rep's lead manages the rep, not the colleague who owns the deal now.
    forbidden(t.reassign(&int, &t.rep, Some(&t.lead)).await).await;
    let res = t.reassign(&t.app.key, &t.rep, None).await;
    assert_eq!(res.status(), 200);
    assert_eq!(t.owner().await, t.rep);
    let res = t.reassign(&int, &t.colleague, Some(&t.lead)).await;
    assert_eq!(res.status(), 200);
    assert_eq!(t.owner().await, t.colleague);
}

#[tokio::test]
async fn lifting_a_freeze_follows_the_key_or_the_person_it_acts_for() {
    let t = team().await;
    let int = t.integration.clone();
    let freeze = t.freeze().await;
    forbidden(t.lift(&int, &freeze, None).await).await;
    let message = forbidden(t.lift(&int, &freeze, Some(&t.rep)).await).await;
    assert!(
        message.contains("自己"),
        "nobody lifts their own: {message}"
    );
    forbidden(t.lift(&t.app.key, &freeze, Some(&t.rep)).await).await;
    forbidden(t.lift(&int, &freeze, Some(&t.colleague)).await).await;
    let active: Value = t
        .app
        .get("/api/v1/freezes?active=true")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(active["items"][0]["id"], freeze.as_str(), "still in force");

    let res = t.lift(&int, &freeze, Some(&t.manager)).await;
    assert_eq!(res.status(), 200);
    let lifted: Value = res.json().await.unwrap();
    assert_eq!(lifted["lifted_by"], t.manager.as_str());
    let entries = audits(&t.app, "antifraud.lift", &freeze).await;
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].0, "api_key");
    assert_eq!(entries[0].1["lifted_by"], t.manager.as_str());

    let freeze = t.freeze().await;
    let res = t.lift(&int, &freeze, Some(&t.lead)).await;
    assert_eq!(res.status(), 200);
    let freeze = t.freeze().await;
    let res = t.lift(&t.app.key, &freeze, None).await;
    assert_eq!(res.status(), 200);
    let lifted: Value = res.json().await.unwrap();
    assert!(
        lifted["lifted_by"].as_str().is_some_and(|b| b != t.rep),
        "{lifted}"
    );
}

/// A signed-in person's request to a `/web/` tool.
async fn web(app: &TestApp, user: &str, path: &str, body: Value) -> u16 {
    let (value, csrf) = closeloop::http::pages::session::create(
        &app.db,
        chrono::Utc::now().timestamp_millis(),
        &app.org_id,
        user,
        "dev",
    )
    .await
    .unwrap();
    no_redirects()
        .post(app.url(path))
        .header(
            "cookie",
            format!("{}={value}", closeloop::http::pages::session::COOKIE),
        )
        .header("x-csrf-token", csrf)
        .json(&body)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn the_web_pages_and_the_api_apply_the_same_rule() {
    let t = team().await;
    let int = t.integration.clone();
    let rollback = format!("/web/deals/{}/rollback", t.deal);
    let body = json!({"to": "初步咨询", "reason": "虚假跟进"});
    // The same people are refused on both sides: on the page the colleague does not
    // even see the rep's deal (404); the key sees every deal, and the named person's
    // authority refuses (403).
    for (who, page) in [(&t.rep, 403), (&t.colleague, 404)] {
        assert_eq!(web(&t.app, who, &rollback, body.clone()).await, page);
        forbidden(t.rollback(&int, Some(who)).await).await;
    }
    // ...and allowed on both: the rep's lead.
    assert_eq!(web(&t.app, &t.lead, &rollback, body.clone()).await, 200);
    t.stage("需求确认").await;
    assert_eq!(t.rollback(&int, Some(&t.lead)).await.status(), 200);

    let freeze = t.freeze().await;
    let lift = format!("/web/freezes/{freeze}/lift");
    let reason = json!({"reason": "已核实"});
    for (who, page) in [(&t.rep, 403), (&t.colleague, 404)] {
        assert_eq!(web(&t.app, who, &lift, reason.clone()).await, page);
        forbidden(t.lift(&int, &freeze, Some(who)).await).await;
    }
    assert_eq!(web(&t.app, &t.lead, &lift, reason.clone()).await, 200);

    // A manager who has left has no authority any more: the API refuses them as an
    // `actor`, and their session no longer signs them in.
    let res = t
        .app
        .patch(
            &format!("/api/v1/users/{}", t.manager),
            &json!({"status": "left"}),
        )
        .await;
    assert_eq!(res.status(), 200);
    let freeze = t.freeze().await;
    forbidden(t.lift(&int, &freeze, Some(&t.manager)).await).await;
    forbidden(t.reassign(&int, &t.colleague, Some(&t.manager)).await).await;
    assert_eq!(
        web(
            &t.app,
            &t.manager,
            &format!("/web/freezes/{freeze}/lift"),
            reason
        )
        .await,
        401
    );
}
