//! The one enforcement point: the router walk (every route has a rule; strangers get
//! nothing) and the role × object × action matrix over every route of the router.

use std::collections::BTreeMap;
use std::sync::Arc;

use closeloop::http::guard::{self, Object, Rule, DENIED_HEADER};
use closeloop::rules::access::{Ability, Action};
use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{on_postgres, spawn_app, TestApp, TEST_DATA_KEY};

/// The real router of a server on the test's database.
async fn router_of(app: &TestApp) -> axum::Router {
    let data_key = if on_postgres() {
        format!("data_key = \"{TEST_DATA_KEY}\"")
    } else {
        String::new()
    };
    let config = closeloop::Config::from_toml_only(&format!(
        "database_url = \"{}\"\n[jobs]\nworker = false\n[security]\n{data_key}\n",
        app.database_url
    ))
    .unwrap();
    let built = closeloop::App::build(config, Arc::new(closeloop::clock::SystemClock))
        .await
        .unwrap();
    closeloop::http::router(built.state.clone())
}

/// A path with every `{param}` filled with `value`.
fn concrete(template: &str, value: &str) -> String {
    template
        .split('/')
        .map(|seg| match seg {
            "{file}" => "x.ics".to_string(),
            s if s.starts_with('{') => value.to_string(),
            s => s.to_string(),
        })
        .collect::<Vec<_>>()
        .join("/")
}

#[tokio::test]
async fn every_route_has_a_rule_and_strangers_get_nothing() {
    let app = spawn_app().await;
    let router = router_of(&app).await;
    let routes = guard::routes_of(&router);
    assert!(routes.len() > 80, "{} routes found", routes.len());
    assert_eq!(guard::unguarded(&router), Vec::<String>::new());
    // A route added without a rule is caught.
    let extra = router
        .clone()
        .route("/api/v1/unruled", axum::routing::get(|| async { "x" }));
    assert_eq!(guard::unguarded(&extra), vec!["GET /api/v1/unruled"]);

    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let mut guarded = 0;
    for (method, path) in &routes {
        let rule = guard::rule(method, path).unwrap();
        if matches!(rule, Rule::Public(_) | Rule::Signed | Rule::Token) {
            continue;
        }
        guarded += 1;
        let url = app.url(&concrete(path, "00000000-0000-7000-8000-000000000000"));
        let mut req = client.request(method.clone(), url);
        if *method != Method::GET {
            req = req.json(&json!({}));
        }
        let res = req.send().await.unwrap();
        let status = res.status().as_u16();
        let body = res.text().await.unwrap();
        let sign_in = status == 401
            || (300..400).contains(&status)
            || (status == 200 && body.contains("登录") && !body.contains("\"items\""));
        assert!(
            sign_in,
            "{method} {path} answered a stranger {status}: {body}"
        );
    }
    assert!(guarded > 60, "{guarded}");
    app.stop().await;
}

/// The seed's packages, written down independently of the code: what each persona may
/// do to a customer by how it relates to them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Want {
    Allow,
    Refuse,
    Hide,
}

/// `A` is the rep's, `B` a colleague's in the rep's region, `C` another region's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Which {
    A,
    B,
    C,
}

fn want(persona: &str, which: Which, action: Action) -> Want {
    use Action::*;
    use Want::*;
    let allowed = |actions: &[Action]| {
        if actions.contains(&action) {
            Allow
        } else {
            Refuse
        }
    };
    match (persona, which) {
        ("admin" | "admin_key", _) => Allow,
        ("integration_key", _) => allowed(&[View, Note, Edit]),
        ("read_only_key", _) => allowed(&[View]),
        // 销售代表: edits their own, reads their region.
        ("rep", Which::A) => allowed(&[View, Note, Edit]),
        ("rep", Which::B) => allowed(&[View]),
        // 销售组长 (has direct reports): notes and manages the team's.
        ("lead", Which::A) => allowed(&[View, Note, Manage]),
        // Manager: the whole subtree.
        ("manager", Which::A) => Allow,
        // Presales: what they are assigned to (A), and every customer with a request
        // waiting in the presales queue (B and C have one).
        ("presales", _) => allowed(&[View, Note]),
        _ => Hide,
    }
}

/// Whether any package of `persona` grants `action` on some customers: when none does,
/// the answer is 403 before any object is looked up.
fn anywhere(persona: &str, action: Action) -> bool {
    use Action::*;
    match persona {
        "admin" | "admin_key" => true,
        "integration_key" => matches!(action, View | Note | Edit),
        "read_only_key" => action == View,
        // Everyone works the customers they own.
        "lead" => action != Assign,
        "manager" => true,
        _ => matches!(action, View | Note | Edit),
    }
}

fn can(persona: &str, ability: Ability) -> bool {
    use Ability::*;
    match persona {
        "admin" | "admin_key" => true,
        "integration_key" | "read_only_key" => ability == TeamReports,
        "rep" => ability == ClaimLeads,
        "lead" | "manager" => matches!(ability, ClaimLeads | AssignLeads | TeamReports),
        "security" => matches!(ability, ReadAudit | PermissionReports),
        _ => false,
    }
}

/// Everything a customer has that a path can name.
#[derive(Debug, Default, Clone)]
struct Things {
    ids: BTreeMap<&'static str, String>,
}

struct World {
    app: TestApp,
    people: BTreeMap<&'static str, String>,
    things: BTreeMap<Which, Things>,
    /// Per persona: (session cookie, CSRF token).
    sessions: BTreeMap<&'static str, (String, String)>,
    /// Per persona: an API key acting for that member, or acting for the organisation.
    keys: BTreeMap<&'static str, String>,
}

async fn user(app: &TestApp, body: Value) -> String {
    app.create("/api/v1/users", body).await["id"]
        .as_str()
        .unwrap()
        .to_string()
}

async fn world() -> World {
    let app = spawn_app().await;
    let mut people = BTreeMap::new();
    let manager = user(&app, json!({"name": "王经理", "roles": ["manager"]})).await;
    let lead = user(&app, json!({"name": "周组长", "superiors": [manager]})).await;
    let rep = user(
        &app,
        json!({"name": "李明", "roles": ["sales"], "region": "华东", "superiors": [lead]}),
    )
    .await;
    // The other reps answer to a lead of their own, outside every persona's team.
    let lead2 = user(&app, json!({"name": "钱组长"})).await;
    let rep2 = user(
        &app,
        json!({"name": "赵强", "roles": ["sales"], "region": "华东", "superiors": [lead2]}),
    )
    .await;
    let rep3 = user(
        &app,
        json!({"name": "孙丽", "roles": ["sales"], "region": "华北", "superiors": [lead2]}),
    )
    .await;
    people.insert("manager", manager);
    people.insert("lead", lead);
    people.insert("rep", rep.clone());
    people.insert(
        "presales",
        user(&app, json!({"name": "陈工", "roles": ["presales"]})).await,
    );
    people.insert(
        "finance",
        user(&app, json!({"name": "钱会计", "roles": ["finance"]})).await,
    );
    people.insert(
        "security",
        user(&app, json!({"name": "吴安全", "roles": ["security"]})).await,
    );
    people.insert(
        "admin",
        user(&app, json!({"name": "郑管理", "roles": ["admin"]})).await,
    );

    let mut things = BTreeMap::new();
    for (which, owner) in [(Which::A, &rep), (Which::B, &rep2), (Which::C, &rep3)] {
        let mut t = Things::default();
        let c = app
            .create(
                "/api/v1/customers",
                json!({"name": format!("客户{which:?}"), "owner": owner,
                       "contacts": [{"name": "张总", "phones": ["13800138000"]}]}),
            )
            .await;
        let customer = c["id"].as_str().unwrap().to_string();
        t.ids.insert(
            "phone",
            c["contacts"][0]["phones"][0]["id"].as_str().unwrap().into(),
        );
        let id = |v: Value| v["id"].as_str().unwrap().to_string();
        t.ids.insert(
            "deal",
            id(app
                .create(
                    "/api/v1/deals",
                    json!({"customer": customer, "title": "方案", "owner": owner}),
                )
                .await),
        );
        t.ids.insert(
            "lead",
            id(app
                .create(
                    "/api/v1/leads",
                    json!({"customer": customer, "source_channel": "抖音表单"}),
                )
                .await),
        );
        let claim = id(app
            .create(
                "/api/v1/events",
                json!({"actor": owner, "customer": customer, "action": "已电话沟通"}),
            )
            .await);
        t.ids.insert(
            "attestation",
            id(app
                .create(
                    &format!("/api/v1/events/{claim}/attestations"),
                    json!({"actor": owner, "note": "客户用座机回拨"}),
                )
                .await),
        );
        t.ids.insert("event", claim);
        t.ids.insert(
            "request",
            id(app
                .create(
                    "/api/v1/collab/requests",
                    json!({"type": "presales_question", "customer": customer, "initiator": owner,
                           "content": {"问题": "是否支持私有化部署？"}}),
                )
                .await),
        );
        let res = app
            .client
            .post(app.url(&format!("/api/v1/customers/{customer}/documents")))
            .query(&[
                ("actor", owner.as_str()),
                ("kind", "proposal"),
                ("filename", "方案.pdf"),
            ])
            .bearer_auth(&app.key)
            .header("content-type", "application/pdf")
            .body(b"%PDF-1.4 x".to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 201);
        t.ids.insert("document", id(res.json().await.unwrap()));
        let freeze = closeloop::db::new_id();
        sqlx::query(
            "INSERT INTO action_freezes (id, org_id, user_id, customer_id, rule, reason, frozen_at) \
             VALUES ($1, $2, $3, $4, 'repeat', 'test', 1)",
        )
        .bind(&freeze)
        .bind(&app.org_id)
        .bind(owner)
        .bind(&customer)
        .execute(&app.db.pool)
        .await
        .unwrap();
        t.ids.insert("freeze", freeze);
        t.ids.insert("customer", customer);
        things.insert(which, t);
    }
    let a = things[&Which::A].ids["customer"].clone();
    let res = app
        .client
        .put(app.url(&format!("/api/v1/customers/{a}/assignments/presales")))
        .bearer_auth(&app.key)
        .json(&json!({"user": people["presales"]}))
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success(), "{}", res.text().await.unwrap());

    let now = chrono::Utc::now().timestamp_millis();
    let mut sessions = BTreeMap::new();
    let mut keys = BTreeMap::new();
    for (persona, id) in &people {
        let session = closeloop::http::pages::session::create(&app.db, now, &app.org_id, id, "dev")
            .await
            .unwrap();
        sessions.insert(*persona, session);
        let (_, key) = closeloop::access::apikeys::create_acting(
            &app.db,
            now,
            closeloop::access::NewApiKey {
                org_id: app.org_id.clone(),
                name: format!("acting-{persona}"),
                role: closeloop::access::ApiKeyRole::Integration,
                expires_at_ms: None,
            },
            closeloop::access::Acting::Actor,
        )
        .await
        .unwrap();
        keys.insert(*persona, key);
    }
    keys.insert("admin_key", app.key.clone());
    keys.insert(
        "integration_key",
        app.key_with_role(closeloop::access::ApiKeyRole::Integration)
            .await,
    );
    keys.insert(
        "read_only_key",
        app.key_with_role(closeloop::access::ApiKeyRole::ReadOnly)
            .await,
    );
    World {
        app,
        people,
        things,
        sessions,
        keys,
    }
}

impl World {
    /// Sends `method path` as `persona`: a member by session on pages and by an acting key
    /// on the API; a key persona only on the API. Returns (status, denied by the policy).
    async fn send(
        &self,
        persona: &'static str,
        method: &Method,
        path: &str,
        body: Value,
    ) -> Option<(u16, bool)> {
        let api = path.starts_with("/api/");
        let mut req = self.app.client.request(method.clone(), self.app.url(path));
        if api {
            req = req.bearer_auth(&self.keys[persona]);
            if let Some(id) = self.people.get(persona) {
                req = req.header(guard::ACTOR_HEADER, id.as_str());
            }
        } else {
            let (cookie, csrf) = self.sessions.get(persona)?;
            req = req
                .header(
                    "cookie",
                    format!("{}={cookie}", closeloop::http::pages::session::COOKIE),
                )
                .header("x-csrf-token", csrf.as_str());
        }
        if *method != Method::GET {
            req = req.json(&body);
        }
        let res = req.send().await.unwrap();
        Some((
            res.status().as_u16(),
            res.headers().contains_key(DENIED_HEADER),
        ))
    }
}

const PERSONAS: [&str; 10] = [
    "rep",
    "lead",
    "manager",
    "presales",
    "finance",
    "security",
    "admin",
    "admin_key",
    "integration_key",
    "read_only_key",
];

fn object_key(o: Object) -> &'static str {
    match o {
        Object::Customer => "customer",
        Object::Deal => "deal",
        Object::Event => "event",
        Object::Attestation => "attestation",
        Object::Request => "request",
        Object::Document => "document",
        Object::Phone => "phone",
        Object::Freeze => "freeze",
        Object::Lead => "lead",
    }
}

fn check(outcome: Option<(u16, bool)>, want: Want, what: &str) {
    let Some((status, denied)) = outcome else {
        return;
    };
    match want {
        Want::Allow => assert!(!denied, "{what}: refused by the policy ({status})"),
        Want::Refuse => assert!(denied && status == 403, "{what}: want 403, got {status}"),
        Want::Hide => assert!(denied && status == 404, "{what}: want 404, got {status}"),
    }
}

#[tokio::test]
async fn every_route_asks_the_policy_role_by_object_by_action() {
    let w = world().await;
    let router = router_of(&w.app).await;
    let mut covered = 0;
    for (method, path) in guard::routes_of(&router) {
        let rule = guard::rule(&method, &path).unwrap();
        for persona in PERSONAS {
            let what = |x: &str| format!("{persona} {method} {path} {x}");
            match rule {
                Rule::Public(_) | Rule::Signed | Rule::Token | Rule::Member | Rule::List => {}
                Rule::Can(ability) => {
                    let outcome = w
                        .send(persona, &method, &concrete(&path, "x"), json!({}))
                        .await;
                    let want = if can(persona, ability) {
                        Want::Allow
                    } else {
                        Want::Refuse
                    };
                    check(outcome, want, &what(""));
                }
                Rule::Org(action) | Rule::Any(action) => {
                    let everyone = matches!(rule, Rule::Org(_));
                    let allowed = match persona {
                        "admin" | "admin_key" => true,
                        "integration_key" => action != Action::Manage && action != Action::Assign,
                        "read_only_key" => action == Action::View,
                        // Any member may create a customer of their own.
                        _ => !everyone,
                    };
                    let outcome = w
                        .send(persona, &method, &concrete(&path, "x"), json!({}))
                        .await;
                    check(
                        outcome,
                        if allowed { Want::Allow } else { Want::Refuse },
                        &what(""),
                    );
                }
                Rule::On(object, _) | Rule::Managed(object) => {
                    let action = action_of(rule);
                    for which in [Which::A, Which::B, Which::C] {
                        let id = &w.things[&which].ids[object_key(object)];
                        let want = match rule {
                            // Managing: whoever may edit or manage anything gets as far as
                            // the object; visible, the domain decides about the person's
                            // work.
                            Rule::Managed(_) => {
                                if !anywhere(persona, Action::Manage)
                                    && !anywhere(persona, Action::Edit)
                                {
                                    Want::Refuse
                                } else if want(persona, which, Action::View) == Want::Hide {
                                    Want::Hide
                                } else {
                                    Want::Allow
                                }
                            }
                            _ if !anywhere(persona, action) => Want::Refuse,
                            _ => want(persona, which, action),
                        };
                        let outcome = w
                            .send(persona, &method, &concrete(&path, id), json!({}))
                            .await;
                        check(outcome, want, &what(&format!("{which:?}")));
                    }
                }
                Rule::OnBody(_, action) => {
                    for which in [Which::A, Which::B, Which::C] {
                        let customer = &w.things[&which].ids["customer"];
                        let outcome = w
                            .send(persona, &method, &path, json!({"customer": customer}))
                            .await;
                        let want = if anywhere(persona, action) {
                            want(persona, which, action)
                        } else {
                            Want::Refuse
                        };
                        check(outcome, want, &what(&format!("{which:?}")));
                    }
                }
            }
        }
        covered += 1;
    }
    assert!(covered > 80, "{covered}");

    // A list shows only what the asker may see.
    let list = |persona: &'static str| {
        let w = &w;
        async move {
            let res = w
                .app
                .client
                .get(w.app.url("/api/v1/customers?limit=100"))
                .bearer_auth(&w.keys[persona])
                .header(guard::ACTOR_HEADER, w.people[persona].as_str())
                .send()
                .await
                .unwrap();
            let page: Value = res.json().await.unwrap();
            let mut names: Vec<String> = page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["name"].as_str().unwrap().to_string())
                .collect();
            names.sort();
            names
        }
    };
    assert_eq!(list("rep").await, ["客户A", "客户B"]);
    assert_eq!(list("lead").await, ["客户A"]);
    assert_eq!(
        list("presales").await,
        ["客户A", "客户B", "客户C"],
        "assigned and queued"
    );
    assert!(list("finance").await.is_empty());
    assert_eq!(list("admin").await, ["客户A", "客户B", "客户C"]);
    w.app.stop().await;
}

fn action_of(rule: Rule) -> Action {
    match rule {
        Rule::On(_, a) | Rule::OnBody(_, a) | Rule::Org(a) | Rule::Any(a) => a,
        _ => Action::Manage,
    }
}

/// What every route needs, written down: a change to a route's rule must change this
/// list too (the matrix test above derives its questions from the rules; this pins them).
const SPEC: &str = "\
GET /admin/audit Can(ReadAudit)\n\
GET /admin/people Can(ManagePeople)\n\
POST /admin/people/customers/{id}/assignments/{role} Can(ManagePeople)\n\
POST /admin/people/members/{id}/{what} Can(ManagePeople)\n\
GET /admin/people/{kind}/{id} Can(ManagePeople)\n\
GET /admin/rules Can(ManageRules)\n\
POST /admin/rules Can(ManageRules)\n\
POST /api/v1/attestations/{id}/decision Managed(Attestation)\n\
GET /api/v1/access-grants Member\n\
GET /api/v1/access-requests Member\n\
GET /api/v1/access-log Can(ReadAudit)\n\
POST /api/v1/access-requests Member\n\
POST /api/v1/access-requests/{id}/decision Member\n\
POST /api/v1/access-requests/{id}/withdraw Member\n\
POST /api/v1/request-pauses/{user}/lift Member\n\
GET /web/access-requests Member\n\
POST /web/access-requests Member\n\
GET /web/access-requests/{id} Member\n\
POST /web/access-requests/{id}/decision Member\n\
POST /web/access-requests/{id}/withdraw Member\n\
GET /api/v1/audit Can(ReadAudit)\n\
PUT /api/v1/chat-counts OnBody(\"customer\", Note)\n\
POST /api/v1/collab/adhoc OnBody(\"customer\", Note)\n\
GET /api/v1/collab/health Can(TeamReports)\n\
GET /api/v1/collab/requests Org(View)\n\
POST /api/v1/collab/requests OnBody(\"customer\", Note)\n\
GET /api/v1/collab/requests/{id} On(Request, View)\n\
POST /api/v1/collab/requests/{id}/{step} On(Request, Note)\n\
GET /api/v1/credibility Can(TeamReports)\n\
GET /api/v1/customers List\n\
POST /api/v1/customers Any(Edit)\n\
GET /api/v1/customers/{id} On(Customer, View)\n\
PATCH /api/v1/customers/{id} On(Customer, Edit)\n\
DELETE /api/v1/customers/{id}/assignments/{role} On(Customer, Assign)\n\
PUT /api/v1/customers/{id}/assignments/{role} On(Customer, Assign)\n\
POST /api/v1/customers/{id}/contacts On(Customer, Edit)\n\
POST /api/v1/customers/{id}/documents On(Customer, Edit)\n\
POST /api/v1/customers/{id}/external-ids On(Customer, Edit)\n\
GET /api/v1/customers/{id}/owners On(Customer, View)\n\
GET /api/v1/customers/{id}/timeline On(Customer, View)\n\
GET /api/v1/deals Org(View)\n\
POST /api/v1/deals OnBody(\"customer\", Edit)\n\
GET /api/v1/deals/{id} On(Deal, View)\n\
PATCH /api/v1/deals/{id} On(Deal, Edit)\n\
POST /api/v1/deals/{id}/advance On(Deal, Edit)\n\
GET /api/v1/deals/{id}/gate On(Deal, View)\n\
POST /api/v1/deals/{id}/lose Managed(Deal)\n\
POST /api/v1/deals/{id}/reassign Managed(Deal)\n\
POST /api/v1/deals/{id}/reopen Managed(Deal)\n\
POST /api/v1/deals/{id}/rollback Managed(Deal)\n\
GET /api/v1/documents Org(View)\n\
GET /api/v1/documents/{id} On(Document, View)\n\
GET /api/v1/documents/{id}/content On(Document, View)\n\
POST /api/v1/documents/{id}/links On(Document, Note)\n\
GET /api/v1/events Org(View)\n\
POST /api/v1/events OnBody(\"customer\", Note)\n\
GET /api/v1/events/{id} On(Event, View)\n\
POST /api/v1/events/{id}/attestations On(Event, Note)\n\
GET /api/v1/events/{id}/verification On(Event, View)\n\
GET /api/v1/freezes Org(View)\n\
POST /api/v1/freezes/{id}/lift Managed(Freeze)\n\
GET /api/v1/jobs Can(Operate)\n\
POST /api/v1/jobs/run-now Can(Operate)\n\
POST /api/v1/jobs/{id}/retry Can(Operate)\n\
GET /api/v1/leads Org(View)\n\
POST /api/v1/leads OnBody(\"customer\", Edit)\n\
GET /api/v1/openapi.json Public(\"the API's description\")\n\
PUT /api/v1/phones/{id}/validity On(Phone, Note)\n\
GET /api/v1/platform-events Can(Operate)\n\
GET /api/v1/rules Member\n\
POST /api/v1/rules/check Can(ManageRules)\n\
GET /api/v1/tasks Can(TeamReports)\n\
GET /api/v1/users Member\n\
POST /api/v1/users Org(Edit)\n\
GET /api/v1/users/{id} Member\n\
PATCH /api/v1/users/{id} Org(Edit)\n\
POST /api/v1/users/{id}/calendar-feed Can(ManagePeople)\n\
GET /api/v1/webhooks Can(Operate)\n\
POST /api/v1/webhooks Can(Operate)\n\
DELETE /api/v1/webhooks/{id} Can(Operate)\n\
GET /assets/{version}/{file} Public(\"scripts and styles\")\n\
GET /auth/dev Public(\"signing in and out\")\n\
POST /auth/dev Public(\"signing in and out\")\n\
POST /auth/dingtalk/code Public(\"signing in and out\")\n\
GET /auth/dingtalk/login Public(\"signing in and out\")\n\
GET /auth/feishu/callback Public(\"signing in and out\")\n\
GET /auth/feishu/login Public(\"signing in and out\")\n\
POST /auth/logout Public(\"signing in and out\")\n\
GET /auth/wecom/callback Public(\"signing in and out\")\n\
GET /auth/wecom/login Public(\"signing in and out\")\n\
GET /calendar/{file} Token\n\
POST /callback/dingtalk Signed\n\
POST /callback/dingtalk/card Signed\n\
POST /callback/feishu Signed\n\
GET /callback/wecom Signed\n\
POST /callback/wecom Signed\n\
GET /collab Member\n\
GET /collab/health Can(TeamReports)\n\
GET /collab/requests/{id} On(Request, View)\n\
GET /d/{token} Token\n\
GET /healthz Public(\"operations probes\")\n\
GET /metrics Public(\"operations probes\")\n\
GET /readyz Public(\"operations probes\")\n\
GET /sidebar Member\n\
GET /sidebar/customers/{id} On(Customer, View)\n\
GET /web/attestations/{id}/proof Managed(Attestation)\n\
POST /web/collab/adhoc OnBody(\"customer\", Note)\n\
POST /web/collab/requests OnBody(\"customer\", Note)\n\
POST /web/collab/requests/{id}/{step} On(Request, Note)\n\
POST /web/customers/{id}/actions On(Customer, Note)\n\
POST /web/customers/{id}/documents On(Customer, Edit)\n\
POST /web/deals/{id}/advance On(Deal, Edit)\n\
POST /web/deals/{id}/lose Managed(Deal)\n\
POST /web/deals/{id}/reassign Managed(Deal)\n\
POST /web/deals/{id}/reopen Managed(Deal)\n\
POST /web/deals/{id}/rollback Managed(Deal)\n\
GET /web/dingtalk/js-config Member\n\
GET /web/documents/{id}/content On(Document, View)\n\
POST /web/documents/{id}/links On(Document, Note)\n\
POST /web/events/{id}/attestations On(Event, Note)\n\
GET /web/feishu/js-config Member\n\
POST /web/freezes/{id}/lift Managed(Freeze)\n\
PUT /web/phones/{id}/validity On(Phone, Note)\n\
GET /web/session Member\n\
GET /web/wecom/customer Member\n\
GET /web/wecom/js-config Member\n\
";

#[tokio::test]
async fn every_routes_rule_is_the_one_written_down() {
    let app = spawn_app().await;
    let router = router_of(&app).await;
    let spec: std::collections::BTreeSet<&str> = SPEC
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let actual: std::collections::BTreeSet<String> = guard::routes_of(&router)
        .into_iter()
        .map(|(m, p)| format!("{m} {p} {:?}", guard::rule(&m, &p).unwrap()))
        .collect();
    let missing: Vec<&String> = actual
        .iter()
        .filter(|a| !spec.contains(a.as_str()))
        .collect();
    let stale: Vec<&&str> = spec.iter().filter(|s| !actual.contains(**s)).collect();
    assert!(
        missing.is_empty() && stale.is_empty(),
        "not written down: {missing:#?}\nno longer true: {stale:#?}"
    );
    app.stop().await;
}

/// An approved permission request opens what it names, for as long as it lasts: a
/// customer of another region is hidden from the rep until their superior approves.
#[tokio::test]
async fn an_approved_request_opens_the_customer_it_names() {
    let app = spawn_app().await;
    let boss = user(&app, json!({"name": "王经理", "roles": ["manager"]})).await;
    let rep = user(
        &app,
        json!({"name": "李明", "roles": ["sales"], "region": "华东", "superiors": [boss]}),
    )
    .await;
    let far = user(
        &app,
        json!({"name": "孙丽", "roles": ["sales"], "region": "华北"}),
    )
    .await;
    let customer = app.customer("北方重工", Some(&far)).await;
    let page = format!("/sidebar/customers/{customer}");
    assert_eq!(app.page_as(&rep, &page).await.0, 404);

    let asked = app
        .create(
            "/api/v1/access-requests",
            json!({"actor": rep, "kind": "customer", "target": customer, "reason": "客户转介绍"}),
        )
        .await;
    let id = asked["id"].as_str().unwrap();
    assert_eq!(
        app.page_as(&rep, &page).await.0,
        404,
        "pending is not granted"
    );
    let res = app
        .post(
            &format!("/api/v1/access-requests/{id}/decision"),
            &json!({"approve": true, "actor": boss}),
        )
        .await;
    assert!(res.status().is_success(), "{}", res.text().await.unwrap());
    let (status, html) = app.page_as(&rep, &page).await;
    assert_eq!(status, 200, "{html}");
    // Read and follow up, not change: the grant gives 查看 and 记录跟进.
    let key = {
        let (_, key) = closeloop::access::apikeys::create_acting(
            &app.db,
            chrono::Utc::now().timestamp_millis(),
            closeloop::access::NewApiKey {
                org_id: app.org_id.clone(),
                name: "acting".into(),
                role: closeloop::access::ApiKeyRole::Integration,
                expires_at_ms: None,
            },
            closeloop::access::Acting::Actor,
        )
        .await
        .unwrap();
        key
    };
    let res = app
        .client
        .patch(app.url(&format!("/api/v1/customers/{customer}")))
        .bearer_auth(&key)
        .header(guard::ACTOR_HEADER, rep.as_str())
        .json(&json!({"name": "改名"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    let listed: Value = app
        .client
        .get(app.url("/api/v1/customers"))
        .bearer_auth(&key)
        .header(guard::ACTOR_HEADER, rep.as_str())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["items"].as_array().unwrap().len(), 1, "{listed}");
    app.stop().await;
}

/// `closeloop users explain`: which package grants what, and why the member holds it.
#[tokio::test]
async fn the_command_line_explains_a_members_permissions() {
    let app = spawn_app().await;
    let boss = user(&app, json!({"name": "王经理", "roles": ["manager"]})).await;
    user(
        &app,
        json!({"name": "李明", "roles": ["sales"], "region": "华东", "superiors": [boss]}),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let run = |who: &str| {
        let mut cmd = crate::cli::closeloop(dir.path());
        cmd.env("CLOSELOOP_DATABASE_URL", &app.database_url);
        if on_postgres() {
            cmd.env("CLOSELOOP_SECURITY__DATA_KEY", TEST_DATA_KEY);
        }
        let out = cmd.args(["users", "explain", who]).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let rep = run("李明");
    assert!(rep.contains("权限包「销售代表」（角色：销售）"), "{rep}");
    assert!(rep.contains("本区域的客户：查看"), "{rep}");
    assert!(rep.contains("区域：华东"), "{rep}");
    assert!(!rep.contains("销售组长"), "no reports: {rep}");
    let lead = run("王经理");
    assert!(lead.contains("权限包「销售组长」（有直属下属）"), "{lead}");
    assert!(
        lead.contains(
            "所有下属（含间接）负责的客户：查看、记录跟进、编辑、管理（回退、改派、解冻）、分配"
        ),
        "{lead}"
    );
    assert!(lead.contains("直属下属 1 人"), "{lead}");
    app.stop().await;
}
