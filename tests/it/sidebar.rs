//! The sidebar page and what its script calls: sessions, the action catalog, CSRF, what a
//! tap records, HTML escaping, gates, and the demo's development sign-in.

use std::sync::Arc;

use closeloop::access::Actor;
use closeloop::clock::SystemClock;
use closeloop::db::Db;
use closeloop::emulator::wecom::Emulator;
use closeloop::{App, Config};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::helpers::{fresh_database, on_postgres, TEST_DATA_KEY};

pub const CORP: &str = "wwcl0000000000001";

/// A server whose `public_url` is its real address (browsers follow the OAuth redirects
/// built from it), optionally with the demo's development sign-in.
pub struct SidebarApp {
    pub base: String,
    pub db: Db,
    pub org_id: String,
    /// The data-key cipher the server loaded.
    pub cipher: closeloop::security::Cipher,
    pub key: String,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<anyhow::Result<()>>>,
    _dir: tempfile::TempDir,
}

/// Starts the server; `extra` is TOML appended to the configuration.
pub async fn spawn_sidebar(extra: &str, dev_sign_in: bool) -> SidebarApp {
    let dir = tempfile::tempdir().unwrap();
    let database_url = fresh_database(dir.path()).await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let data_key = if on_postgres() {
        format!("data_key = \"{TEST_DATA_KEY}\"")
    } else {
        String::new()
    };
    let config = Config::from_toml_only(&format!(
        "public_url = \"{base}\"\ndatabase_url = \"{database_url}\"\n{extra}\n\
         [jobs]\nworker = false\n[security]\n{data_key}\n"
    ))
    .expect("test config");
    let mut app = App::build(config, Arc::new(SystemClock))
        .await
        .expect("build app");
    // What `closeloop demo` does; configuration cannot.
    app.state.dev_sign_in = dev_sign_in;
    let db = app.state.db.clone();
    let org_id = app.state.default_org.id.clone();
    let cipher = app.state.cipher.clone();
    let (_, key) = closeloop::access::apikeys::create(
        &db,
        chrono::Utc::now().timestamp_millis(),
        closeloop::access::NewApiKey {
            org_id: org_id.clone(),
            name: "test-admin".into(),
            role: closeloop::access::ApiKeyRole::Admin,
            expires_at_ms: None,
        },
    )
    .await
    .unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(app.serve(listener, None, async move {
        let _ = stopped.await;
    }));
    SidebarApp {
        base,
        db,
        org_id,
        cipher,
        key,
        stop: Some(stop),
        server: Some(server),
        _dir: dir,
    }
}

/// `[wecom]` pointing every WeCom address (API, OAuth, JS-SDK) at `emulator`.
pub fn wecom_config(emulator: &Emulator) -> String {
    format!(
        "[wecom]\ncorp_id = \"{CORP}\"\nagent_id = 1000002\nsecret = \"app-secret\"\ntoken = \"QDG6eK\"\n\
         encoding_aes_key = \"jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C\"\n\
         api_base = \"{base}\"\noauth_base = \"{base}\"\njssdk_url = \"{jssdk}\"\n",
        base = emulator.base_url(),
        jssdk = emulator.jssdk_url()
    )
}

pub fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

impl SidebarApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// POSTs to the API as admin and expects 201; returns the body.
    pub async fn create(&self, path: &str, body: Value) -> Value {
        let res = reqwest::Client::new()
            .post(self.url(path))
            .bearer_auth(&self.key)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = res.status();
        let body: Value = res.json().await.unwrap();
        assert_eq!(status, 201, "POST {path} answered {body}");
        body
    }

    /// A user with a WeCom userid; returns the user id.
    pub async fn member(&self, name: &str, wecom_userid: &str) -> String {
        let u = self
            .create(
                "/api/v1/users",
                json!({"name": name, "identities": [{"platform": "wecom", "kind": "userid", "value": wecom_userid}]}),
            )
            .await;
        u["id"].as_str().unwrap().to_string()
    }

    pub async fn customer(&self, name: &str, owner: &str) -> String {
        let c = self
            .create(
                "/api/v1/customers",
                json!({"name": name, "tier": "A", "owner": owner,
                       "contacts": [{"name": "张总", "phones": ["13800138000"]}]}),
            )
            .await;
        c["id"].as_str().unwrap().to_string()
    }

    /// Links `customer` to a WeCom external userid, as the contact sync does.
    pub async fn link_external(&self, customer: &str, external_userid: &str) {
        sqlx::query(
            "INSERT INTO customer_external_ids (org_id, platform, external_user_id, customer_id, contact_id, created_at) \
             VALUES ($1, 'wecom', $2, $3, NULL, 0)",
        )
        .bind(&self.org_id)
        .bind(external_userid)
        .bind(customer)
        .execute(&self.db.pool)
        .await
        .unwrap();
    }

    /// A session as a platform sign-in makes it: (Cookie header value, CSRF token).
    pub async fn session(&self, user: &str, platform: &str) -> (String, String) {
        let (value, csrf) = closeloop::http::pages::session::create(
            &self.db,
            chrono::Utc::now().timestamp_millis(),
            &self.org_id,
            user,
            platform,
        )
        .await
        .unwrap();
        (
            format!("{}={value}", closeloop::http::pages::session::COOKIE),
            csrf,
        )
    }

    pub async fn page(&self, path: &str, cookie: &str) -> (u16, String) {
        let res = no_redirects()
            .get(self.url(path))
            .header("cookie", cookie)
            .send()
            .await
            .unwrap();
        (res.status().as_u16(), res.text().await.unwrap())
    }

    pub async fn tap(
        &self,
        customer: &str,
        cookie: &str,
        csrf: Option<&str>,
        body: Value,
    ) -> reqwest::Response {
        let mut req = no_redirects()
            .post(self.url(&format!("/web/customers/{customer}/actions")))
            .header("cookie", cookie)
            .header("user-agent", "Mozilla/5.0 (closeloop test) Chrome/1.0")
            .json(&body);
        if let Some(t) = csrf {
            req = req.header("x-csrf-token", t);
        }
        req.send().await.unwrap()
    }

    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(h) = self.server.take() {
            h.await.unwrap().unwrap();
        }
    }
}

async fn error_of(res: reqwest::Response) -> (u16, Value) {
    let status = res.status().as_u16();
    let body: Value = res.json().await.unwrap();
    (status, body["error"].clone())
}

#[tokio::test]
async fn the_page_needs_a_session() {
    let emulator = Emulator::start(CORP, vec![("app-secret".to_string(), "app")]).await;
    let app = spawn_sidebar(&wecom_config(&emulator), false).await;
    let client = no_redirects();
    let res = client.get(app.url("/sidebar")).send().await.unwrap();
    assert_eq!(res.status(), 303);
    assert_eq!(
        res.headers()["location"],
        "/auth/wecom/login?next=%2Fsidebar"
    );
    let res = client
        .get(app.url("/sidebar/customers/c-1"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.headers()["location"],
        "/auth/wecom/login?next=%2Fsidebar%2Fcustomers%2Fc-1"
    );
    // A forged or expired cookie is no session either.
    let res = client
        .get(app.url("/sidebar"))
        .header("cookie", "closeloop_session=forged")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303);
    let res = client
        .post(app.url("/web/customers/c-1/actions"))
        .json(&json!({"action": "已电话沟通"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    app.stop().await;

    // Without WeCom: the demo's sign-in, or a page saying where to open the sidebar.
    let demo = spawn_sidebar("", true).await;
    let res = client.get(demo.url("/sidebar")).send().await.unwrap();
    assert_eq!(res.headers()["location"], "/auth/dev?next=%2Fsidebar");
    demo.stop().await;
    let bare = spawn_sidebar("", false).await;
    let res = client.get(bare.url("/sidebar")).send().await.unwrap();
    assert_eq!(res.status(), 401);
    assert!(res.text().await.unwrap().contains("企业微信"));
    bare.stop().await;
}

#[tokio::test]
async fn inside_wecom_the_page_asks_the_js_sdk_for_the_chat() {
    let emulator = Emulator::start(CORP, vec![("app-secret".to_string(), "app")]).await;
    let app = spawn_sidebar(&wecom_config(&emulator), false).await;
    let rep = app.member("李明", "liming").await;
    let (cookie, csrf) = app.session(&rep, "wecom").await;
    let res = no_redirects()
        .get(app.url("/sidebar"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let csp = res.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(res.headers()["cache-control"], "no-store");
    let html = res.text().await.unwrap();
    assert!(
        html.contains(&format!(
            "<script src=\"{}\" referrerpolicy=\"origin\"></script>",
            emulator.jssdk_url()
        )),
        "{html}"
    );
    assert!(html.contains(&format!("content=\"{csrf}\"")));
    assert!(
        csp.contains(&format!("script-src 'self' {}", emulator.base_url())),
        "{csp}"
    );
    assert!(csp.starts_with("default-src 'none'"), "{csp}");
    assert!(csp.contains("connect-src 'self'"), "{csp}");

    // The embedded assets: versioned URLs, cached for a year; other versions are gone.
    let js = html
        .split("<script src=\"")
        .filter_map(|s| s.split('"').next())
        .find(|s| s.starts_with("/assets/"))
        .unwrap()
        .to_string();
    let res = reqwest::get(app.url(&js)).await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.headers()["cache-control"]
        .to_str()
        .unwrap()
        .contains("immutable"));
    assert!(res.text().await.unwrap().contains("getCurExternalContact"));
    let stale = reqwest::get(app.url("/assets/000000000000/sidebar.js"))
        .await
        .unwrap();
    assert_eq!(stale.status(), 404);
    app.stop().await;
}

#[tokio::test]
async fn a_tap_records_a_catalog_action_with_ip_and_user_agent() {
    let emulator = Emulator::start(CORP, vec![("app-secret".to_string(), "app")]).await;
    let app = spawn_sidebar(&wecom_config(&emulator), false).await;
    let rep = app.member("李明", "liming").await;
    let customer = app.customer("华南智造", &rep).await;
    let (cookie, csrf) = app.session(&rep, "wecom").await;

    // State-changing: refused without the session's CSRF token, or with another one.
    let res = app
        .tap(&customer, &cookie, None, json!({"action": "已电话沟通"}))
        .await;
    assert_eq!(res.status(), 403);
    let res = app
        .tap(
            &customer,
            &cookie,
            Some("not-the-token"),
            json!({"action": "已电话沟通"}),
        )
        .await;
    assert_eq!(res.status(), 403);

    // Only taps and quick-asks of the catalog in force.
    let (status, err) = error_of(
        app.tap(
            &customer,
            &cookie,
            Some(&csrf),
            json!({"action": "随便写的动作"}),
        )
        .await,
    )
    .await;
    assert_eq!(status, 422);
    assert!(
        err["message"].as_str().unwrap().contains("动作目录"),
        "{err}"
    );
    let (status, _) = error_of(
        app.tap(
            &customer,
            &cookie,
            Some(&csrf),
            json!({"action": "上传方案"}),
        )
        .await,
    )
    .await;
    assert_eq!(status, 422, "an upload needs its file");
    let (status, _) = error_of(
        app.tap(
            &customer,
            &cookie,
            Some(&csrf),
            json!({"action": "rule.frozen"}),
        )
        .await,
    )
    .await;
    assert_eq!(status, 422);
    assert_eq!(app_points(&app).await, 0);

    let res = app
        .tap(
            &customer,
            &cookie,
            Some(&csrf),
            json!({"action": "已电话沟通"}),
        )
        .await;
    assert_eq!(res.status(), 201);
    let point: Value = res.json().await.unwrap();
    assert_eq!(point["source"], "sidebar");
    assert_eq!(point["platform"], "wecom");
    assert_eq!(point["actor"], rep.as_str());
    assert_eq!(point["customer"], customer.as_str());
    assert_eq!(point["client_ip"], "127.0.0.1");
    assert_eq!(
        point["user_agent"],
        "Mozilla/5.0 (closeloop test) Chrome/1.0"
    );
    let res = app
        .tap(
            &customer,
            &cookie,
            Some(&csrf),
            json!({"action": "@售前快速提问"}),
        )
        .await;
    assert_eq!(res.status(), 201, "quick-asks record a tap for now");

    // A user agent is kept to 512 characters.
    let long = format!("Mozilla/5.0 {}", "x".repeat(700));
    let res = no_redirects()
        .post(app.url(&format!("/web/customers/{customer}/actions")))
        .header("cookie", &cookie)
        .header("x-csrf-token", &csrf)
        .header("user-agent", &long)
        .json(&json!({"action": "已发送样品清单"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let point: Value = res.json().await.unwrap();
    assert_eq!(point["user_agent"].as_str().unwrap().chars().count(), 512);

    // The page lists the touches, newest first, with the verification in Chinese.
    let (status, html) = app
        .page(&format!("/sidebar/customers/{customer}"), &cookie)
        .await;
    assert_eq!(status, 200);
    assert!(html.contains("华南智造") && html.contains("A 级"), "{html}");
    assert!(
        html.contains("<span class=\"what\">已电话沟通</span> <span class=\"status status-pending\">待核验</span>"),
        "{html}"
    );
    assert!(html.contains("· 李明"), "{html}");
    assert!(
        html.contains("+86 138****8000") && html.contains("有效"),
        "{html}"
    );
    assert!(!html.contains("13800138000"), "phone numbers are masked");
    let newest = html.find("已发送样品清单</span>").unwrap();
    let oldest = html.find("已电话沟通</span>").unwrap();
    let touches = html.find("最近跟进").unwrap();
    assert!(touches < newest && newest < oldest);
    app.stop().await;
}

async fn app_points(app: &SidebarApp) -> i64 {
    sqlx::query_as::<_, (i64,)>("SELECT CAST(COUNT(*) AS BIGINT) FROM tracking_points")
        .fetch_one(&app.db.pool)
        .await
        .unwrap()
        .0
}

#[tokio::test]
async fn the_third_repeat_is_refused_and_the_page_shows_the_freeze() {
    let app = spawn_sidebar("", true).await;
    let rep = app.create("/api/v1/users", json!({"name": "王芳"})).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let customer = app.customer("华东精密", &rep).await;
    let (cookie, csrf) = app.session(&rep, "dev").await;
    for _ in 0..2 {
        let res = app
            .tap(
                &customer,
                &cookie,
                Some(&csrf),
                json!({"action": "客户提出价格异议"}),
            )
            .await;
        assert_eq!(res.status(), 201);
    }
    let (status, err) = error_of(
        app.tap(
            &customer,
            &cookie,
            Some(&csrf),
            json!({"action": "客户提出价格异议"}),
        )
        .await,
    )
    .await;
    assert_eq!(status, 409);
    assert_eq!(err["code"], "repeat_limit");
    let (status, err) = error_of(
        app.tap(
            &customer,
            &cookie,
            Some(&csrf),
            json!({"action": "已电话沟通"}),
        )
        .await,
    )
    .await;
    assert_eq!((status, err["code"].as_str()), (409, Some("action_frozen")));
    let (_, html) = app
        .page(&format!("/sidebar/customers/{customer}"), &cookie)
        .await;
    assert!(
        html.contains("<p class=\"banner frozen\">您对该客户的操作已冻结"),
        "{html}"
    );
    // Rule hits are not touches.
    assert_eq!(html.matches("class=\"touch\"").count(), 2, "{html}");
    app.stop().await;
}

#[tokio::test]
async fn everything_shown_is_escaped() {
    let app = spawn_sidebar("", true).await;
    let rep = app
        .create("/api/v1/users", json!({"name": "<b>rep</b>"}))
        .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let customer = app.customer("<script>alert(1)</script>", &rep).await;
    let (cookie, csrf) = app.session(&rep, "dev").await;
    app.tap(
        &customer,
        &cookie,
        Some(&csrf),
        json!({"action": "已发送样品清单"}),
    )
    .await;
    let (status, html) = app
        .page(&format!("/sidebar/customers/{customer}"), &cookie)
        .await;
    assert_eq!(status, 200);
    assert!(!html.contains("<script>alert(1)"), "{html}");
    assert!(
        html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{html}"
    );
    assert!(html.contains("&lt;b&gt;rep&lt;/b&gt;"), "{html}");
    assert!(!html.contains("<b>rep"), "{html}");
    let (_, list) = app.page("/sidebar", &cookie).await;
    assert!(
        list.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{list}"
    );
    assert!(!list.contains("<script>alert(1)"), "{list}");
    app.stop().await;
}

#[tokio::test]
async fn the_buttons_come_from_the_rule_set_in_force() {
    let app = spawn_sidebar("", true).await;
    let rep = app.create("/api/v1/users", json!({"name": "赵磊"})).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let customer = app.customer("西南电子", &rep).await;
    let (cookie, csrf) = app.session(&rep, "dev").await;
    let (_, html) = app
        .page(&format!("/sidebar/customers/{customer}"), &cookie)
        .await;
    for name in [
        "已电话沟通",
        "已发送样品清单",
        "客户提出价格异议",
        "@售前快速提问",
        "@交付查排期",
        "@财务查回款",
    ] {
        assert!(
            html.contains(&format!("data-action=\"{name}\">{name}</button>")),
            "{name}: {html}"
        );
    }
    assert!(
        html.contains("data-action=\"上传方案\" data-document=\"proposal\">上传方案</button>"),
        "{html}"
    );

    // A catalog of its own; the default quick-asks stay because the default
    // collaboration types open from them.
    let toml = r#"
[[actions]]
name = "已上门拜访"

[[actions]]
name = "上传方案"
kind = "upload"
document = "proposal"

[[actions]]
name = "@售前快速提问"
kind = "quick_ask"
role = "presales"

[[actions]]
name = "@交付查排期"
kind = "quick_ask"
role = "delivery"

[[actions]]
name = "@财务查回款"
kind = "quick_ask"
role = "finance"
"#;
    closeloop::rules::store::import(
        &app.db,
        chrono::Utc::now().timestamp_millis(),
        &app.org_id,
        &Actor::cli(),
        toml,
    )
    .await
    .unwrap();
    let (_, html) = app
        .page(&format!("/sidebar/customers/{customer}"), &cookie)
        .await;
    assert!(
        html.contains("data-kind=\"tap\" data-action=\"已上门拜访\">已上门拜访</button>"),
        "{html}"
    );
    assert!(
        html.contains("data-kind=\"quick_ask\" data-action=\"@财务查回款\""),
        "{html}"
    );
    assert!(
        html.contains("data-kind=\"upload\" data-action=\"上传方案\" data-document=\"proposal\""),
        "{html}"
    );
    assert!(
        !html.contains("已发送样品清单") && !html.contains("已电话沟通"),
        "{html}"
    );
    let res = app
        .tap(
            &customer,
            &cookie,
            Some(&csrf),
            json!({"action": "已发送样品清单"}),
        )
        .await;
    assert_eq!(res.status(), 422, "no longer in the catalog");
    let res = app
        .tap(
            &customer,
            &cookie,
            Some(&csrf),
            json!({"action": "已上门拜访"}),
        )
        .await;
    assert_eq!(res.status(), 201);
    app.stop().await;
}

#[tokio::test]
async fn deals_show_what_the_next_stage_needs_and_advance_when_it_holds() {
    let app = spawn_sidebar("", true).await;
    let rep = app.create("/api/v1/users", json!({"name": "陈静"})).await["id"]
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
    let (cookie, csrf) = app.session(&rep, "dev").await;
    let (_, html) = app
        .page(&format!("/sidebar/customers/{customer}"), &cookie)
        .await;
    assert!(html.contains("二期产线改造"), "{html}");
    assert!(
        html.contains("当前阶段：<strong>初步咨询</strong>"),
        "{html}"
    );
    assert!(html.contains("进入「需求确认」还需："), "{html}");
    assert!(html.contains("还需 2 次有效沟通"), "{html}");
    assert!(html.contains("还需上传 1 份方案文档"), "{html}");
    assert!(!html.contains("data-advance"), "{html}");

    let advance = |token: Option<String>| {
        let mut req = no_redirects()
            .post(app.url(&format!("/web/deals/{deal}/advance")))
            .header("cookie", &cookie)
            .json(&json!({"confirm": true}));
        if let Some(t) = token {
            req = req.header("x-csrf-token", t);
        }
        req.send()
    };
    assert_eq!(advance(None).await.unwrap().status(), 403);
    let (status, err) = error_of(advance(Some(csrf.clone())).await.unwrap()).await;
    assert_eq!(status, 409);
    assert_eq!(err["code"], "gate_not_met");
    let missing: Vec<&str> = err["details"]["missing"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["code"].as_str().unwrap())
        .collect();
    assert_eq!(missing, ["communications", "proposals"]);

    // Under rules whose gates hold, the page offers the move and the deal advances; a
    // deal in the last stage is closed and leaves the sidebar.
    closeloop::rules::store::import(
        &app.db,
        chrono::Utc::now().timestamp_millis(),
        &app.org_id,
        &Actor::cli(),
        "[[stages]]\nname = \"初步咨询\"\n[[stages]]\nname = \"需求确认\"\n[[stages]]\nname = \"赢单\"\n",
    )
    .await
    .unwrap();
    let (_, html) = app
        .page(&format!("/sidebar/customers/{customer}"), &cookie)
        .await;
    assert!(html.contains("已满足进入「需求确认」的条件"), "{html}");
    assert!(
        html.contains("data-advance-open>推进到「需求确认」</button>"),
        "{html}"
    );
    assert!(
        html.contains("确认将「二期产线改造」从「初步咨询」推进到「需求确认」？"),
        "the confirmation names the deal, from and to: {html}"
    );
    assert!(
        html.contains(&format!("data-advance=\"{deal}\">确认推进</button>")),
        "{html}"
    );
    // Without the page's confirmation nothing moves.
    for body in [json!({}), json!({"confirm": false})] {
        let res = no_redirects()
            .post(app.url(&format!("/web/deals/{deal}/advance")))
            .header("cookie", &cookie)
            .header("x-csrf-token", &csrf)
            .json(&body)
            .send()
            .await
            .unwrap();
        let (status, err) = error_of(res).await;
        assert_eq!(status, 400);
        assert_eq!(err["code"], "confirmation_required");
    }
    let res = advance(Some(csrf.clone())).await.unwrap();
    assert_eq!(res.status(), 200);
    let moved: Value = res.json().await.unwrap();
    assert_eq!(moved["stage"], "需求确认");
    let res = advance(Some(csrf.clone())).await.unwrap();
    assert_eq!(res.status(), 200);
    let (_, html) = app
        .page(&format!("/sidebar/customers/{customer}"), &cookie)
        .await;
    assert!(html.contains("暂无进行中的商机"), "{html}");
    assert!(
        html.contains("已结束的商机") && html.contains("outcome-won\">赢单"),
        "a won deal stays visible: {html}"
    );
    app.stop().await;
}

#[tokio::test]
async fn the_development_sign_in_exists_only_in_the_demo() {
    let app = spawn_sidebar("", false).await;
    let rep = app.create("/api/v1/users", json!({"name": "刘洋"})).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let client = no_redirects();
    assert_eq!(
        client
            .get(app.url("/auth/dev"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    let res = client
        .post(app.url("/auth/dev"))
        .header("origin", &app.base)
        .json(&json!({"user_id": rep}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    assert_eq!(
        sqlx::query_as::<_, (i64,)>("SELECT CAST(COUNT(*) AS BIGINT) FROM web_sessions")
            .fetch_one(&app.db.pool)
            .await
            .unwrap()
            .0,
        0
    );
    app.stop().await;

    let demo = spawn_sidebar("", true).await;
    let rep = demo.create("/api/v1/users", json!({"name": "刘洋"})).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let customer = demo.customer("东莞五金", &rep).await;
    let page = client
        .get(demo.url("/auth/dev"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("刘洋") && page.contains(&rep), "{page}");
    // Login CSRF: a form on another site cannot sign a visitor in.
    let res = client
        .post(demo.url("/auth/dev"))
        .header("origin", "https://evil.example")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("user_id={rep}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    let res = client
        .post(demo.url("/auth/dev"))
        .header("origin", &demo.base)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("user_id={rep}&next=%2Fsidebar"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303);
    assert_eq!(res.headers()["location"], "/sidebar");
    let cookie = res.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let (status, list) = demo.page("/sidebar", &cookie).await;
    assert_eq!(status, 200);
    assert!(
        list.contains(&format!(
            "href=\"/sidebar/customers/{customer}\">东莞五金</a>"
        )),
        "{list}"
    );
    // The session says how it was made: points record platform `dev`.
    let me: Value = client
        .get(demo.url("/web/session"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let res = demo
        .tap(
            &customer,
            &cookie,
            me["csrf_token"].as_str(),
            json!({"action": "已电话沟通"}),
        )
        .await;
    assert_eq!(res.status(), 201);
    let point: Value = res.json().await.unwrap();
    assert_eq!(point["platform"], "dev");
    // JSON works too; unknown users do not.
    let res = client
        .post(demo.url("/auth/dev"))
        .json(&json!({"user_id": "no-such-user"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 422);
    demo.stop().await;
}
