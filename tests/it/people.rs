//! People and roles without the API (issue 14): `closeloop users list|set-roles|
//! set-superiors|assign` with the real binary, the admin page 管理 → 人员与角色 over HTTP
//! (admins only, CSRF-protected, every change audited as the member who made it), and
//! superiors set by hand surviving the WeCom directory sync.

use std::path::Path;
use std::process::Command;

use closeloop::emulator::wecom::Emulator;
use serde_json::{json, Value};
use sqlx::Row;

use crate::callbacks::{deliver, CORP};
use crate::helpers::{on_postgres, spawn_app, spawn_app_with, TestApp, TEST_DATA_KEY};
use crate::sidebar::no_redirects;
use crate::wecom_directory::{member, user_by_wecom_id};

async fn user(app: &TestApp, id: &str) -> Value {
    let res = app.get(&format!("/api/v1/users/{id}")).await;
    assert_eq!(res.status(), 200);
    res.json().await.unwrap()
}

/// (actor kind, actor id, detail) of the audit entries for `action` on `target`, oldest first.
async fn audits(app: &TestApp, action: &str, target: &str) -> Vec<(String, Option<String>, Value)> {
    sqlx::query(
        "SELECT actor_kind, actor_id, detail FROM audit_log WHERE action = $1 AND target_id = $2 ORDER BY at, id",
    )
    .bind(action)
    .bind(target)
    .fetch_all(&app.db.pool)
    .await
    .unwrap()
    .iter()
    .map(|r| {
        (
            r.get("actor_kind"),
            r.get("actor_id"),
            serde_json::from_str(&r.get::<String, _>("detail")).unwrap(),
        )
    })
    .collect()
}

async fn assigned(app: &TestApp, customer: &str, role: &str) -> Option<String> {
    sqlx::query("SELECT user_id FROM customer_assignments WHERE customer_id = $1 AND role = $2")
        .bind(customer)
        .bind(role)
        .fetch_optional(&app.db.pool)
        .await
        .unwrap()
        .map(|r| r.get("user_id"))
}

// ----------------------------------------------------------------------------------------
// The command line

/// `closeloop users ARGS…` against the test app's database, with none of the test's own
/// `CLOSELOOP_*` variables.
fn users(app: &TestApp, dir: &Path, args: &[&str]) -> std::process::Output {
    let mut cmd: Command = crate::cli::closeloop(dir);
    cmd.env("CLOSELOOP_DATABASE_URL", &app.database_url);
    if on_postgres() {
        cmd.env("CLOSELOOP_SECURITY__DATA_KEY", TEST_DATA_KEY);
    }
    cmd.arg("users").args(args).output().expect("run closeloop")
}

fn ok(out: std::process::Output) -> String {
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success(),
        "failed\nstdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// A failed command: nothing on stdout, one line on stderr, which is returned.
fn refused(out: std::process::Output) -> String {
    assert!(!out.status.success(), "succeeded: {out:?}");
    assert!(out.stdout.is_empty(), "{out:?}");
    String::from_utf8(out.stderr).unwrap().trim().to_string()
}

#[tokio::test]
async fn the_command_line_sets_roles_superiors_and_assignments_each_audited() {
    let app = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    let rep = app
        .create(
            "/api/v1/users",
            json!({"name": "李明", "roles": ["sales"], "identities": [{"platform": "wecom", "kind": "userid", "value": "liming"}]}),
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let boss = app.user("王经理", &["manager"]).await;
    let presales = app.user("张工", &["presales"]).await;
    let customer = app.customer("华南智造", Some(&rep)).await;

    let list = ok(users(&app, dir.path(), &["list"]));
    let line = list.lines().find(|l| l.contains("李明")).expect(&list);
    assert!(line.starts_with(&rep), "{line}");
    assert!(line.contains("\tsales\t"), "{line}");
    assert!(line.contains("wecom:userid=liming"), "{line}");
    let presales_only = ok(users(&app, dir.path(), &["list", "--role", "presales"]));
    assert!(presales_only.contains("张工") && !presales_only.contains("李明"));

    // Roles, naming the member by their WeCom id; the audit entry says what they became.
    let out = ok(users(
        &app,
        dir.path(),
        &["set-roles", "wecom:liming", "sales", "manager"],
    ));
    assert!(out.contains("李明"), "{out}");
    assert_eq!(user(&app, &rep).await["roles"], json!(["manager", "sales"]));
    let entries = audits(&app, "user.update", &rep).await;
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].0, "cli");
    assert_eq!(entries[0].2["fields"], json!(["roles"]));
    assert_eq!(entries[0].2["roles"], json!(["sales", "manager"]));

    // Bad input is one clear line and changes nothing.
    let audit = app.count("audit_log").await;
    let line = refused(users(&app, dir.path(), &["set-roles", "李明", "ceo"]));
    assert!(line.contains("ceo"), "{line}");
    let line = refused(users(&app, dir.path(), &["set-roles", "无名氏", "sales"]));
    assert!(line.contains("无名氏"), "{line}");
    assert_eq!(line.lines().count(), 1, "{line}");
    let line = refused(users(&app, dir.path(), &["set-roles", "李明"]));
    assert!(line.contains("--none") || line.contains("ROLES"), "{line}");
    let line = refused(users(&app, dir.path(), &["set-superiors", "李明", "李明"]));
    assert!(line.contains("own superior"), "{line}");
    app.user("赵强", &["sales"]).await;
    app.user("赵强", &["sales"]).await;
    let line = refused(users(&app, dir.path(), &["set-superiors", "李明", "赵强"]));
    assert!(line.contains("several members"), "{line}");
    assert_eq!(
        app.count("audit_log").await,
        audit + 2,
        "only the two users created"
    );
    assert_eq!(user(&app, &rep).await["superiors"], json!([]));

    // Superiors by hand: kept by the directory sync until handed back.
    let out = ok(users(
        &app,
        dir.path(),
        &["set-superiors", "李明", "王经理"],
    ));
    assert!(out.contains("王经理"), "{out}");
    let after = user(&app, &rep).await;
    assert_eq!(after["superiors"], json!([boss]));
    assert_eq!(after["superior_source"], "manual");
    let entry = audits(&app, "user.update", &rep).await.pop().unwrap();
    assert_eq!(entry.2["superiors"], json!([boss]));
    assert_eq!(entry.2["superior_source"], "manual");
    ok(users(
        &app,
        dir.path(),
        &["set-superiors", &rep, "--directory"],
    ));
    let after = user(&app, &rep).await;
    assert_eq!(after["superior_source"], "directory");
    assert_eq!(after["superiors"], json!([boss]), "until the next sync");
    let list = ok(users(&app, dir.path(), &["list"]));
    let line = list.lines().find(|l| l.contains("李明")).unwrap();
    assert!(line.contains("\t王经理\tdirectory\t"), "{line}");

    // Who answers the customer's presales requests.
    let out = ok(users(
        &app,
        dir.path(),
        &["assign", "华南智造", "presales", "张工"],
    ));
    assert!(out.contains("张工"), "{out}");
    assert_eq!(
        assigned(&app, &customer, "presales").await,
        Some(presales.clone())
    );
    let entries = audits(&app, "customer.assign", &customer).await;
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].0, "cli");
    assert_eq!(entries[0].2, json!({"role": "presales", "user": presales}));
    let line = refused(users(
        &app,
        dir.path(),
        &["assign", "华南智造", "ceo", "张工"],
    ));
    assert!(line.contains("ceo"), "{line}");
    let line = refused(users(
        &app,
        dir.path(),
        &["assign", "不存在的客户", "presales", "张工"],
    ));
    assert!(line.contains("不存在的客户"), "{line}");
    ok(users(
        &app,
        dir.path(),
        &["assign", &customer, "presales", "--clear"],
    ));
    assert_eq!(assigned(&app, &customer, "presales").await, None);
    let entries = audits(&app, "customer.unassign", &customer).await;
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].2, json!({"role": "presales"}));
    // Clearing what is not set changes nothing, so writes no entry.
    ok(users(
        &app,
        dir.path(),
        &["assign", &customer, "presales", "--clear"],
    ));
    assert_eq!(audits(&app, "customer.unassign", &customer).await.len(), 1);
}

// ----------------------------------------------------------------------------------------
// The page

struct Browser {
    cookie: String,
    csrf: String,
}

async fn signed_in(app: &TestApp, user: &str) -> Browser {
    let (value, csrf) = closeloop::http::pages::session::create(
        &app.db,
        chrono::Utc::now().timestamp_millis(),
        &app.org_id,
        user,
        "dev",
    )
    .await
    .unwrap();
    Browser {
        cookie: format!("{}={value}", closeloop::http::pages::session::COOKIE),
        csrf,
    }
}

impl Browser {
    async fn get(&self, app: &TestApp, path: &str) -> (u16, String) {
        let res = no_redirects()
            .get(app.url(path))
            .header("cookie", &self.cookie)
            .send()
            .await
            .unwrap();
        (res.status().as_u16(), res.text().await.unwrap())
    }

    /// Posts a form; `csrf` adds the session's token. Returns (status, Location, body).
    async fn post(
        &self,
        app: &TestApp,
        path: &str,
        fields: &[(&str, &str)],
        csrf: bool,
    ) -> (u16, String, String) {
        let mut body: Vec<String> = fields.iter().map(|(k, v)| format!("{k}={v}")).collect();
        if csrf {
            body.push(format!("csrf_token={}", self.csrf));
        }
        let res = no_redirects()
            .post(app.url(path))
            .header("cookie", &self.cookie)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body.join("&"))
            .send()
            .await
            .unwrap();
        let location = res
            .headers()
            .get("location")
            .map(|l| l.to_str().unwrap().to_string())
            .unwrap_or_default();
        (res.status().as_u16(), location, res.text().await.unwrap())
    }
}

#[tokio::test]
async fn the_people_page_is_for_admins_and_every_change_is_audited() {
    let app = spawn_app().await;
    let admin = app.user("周管理", &["admin"]).await;
    let rep = app.user("李明", &["sales"]).await;
    let boss = app.user("王经理", &["manager"]).await;
    let presales = app.user("张工", &["presales"]).await;
    let customer = app.customer("华南智造", Some(&rep)).await;
    let member = format!("/admin/people/members/{rep}");

    // Nobody signed in sees nothing of it.
    let res = no_redirects()
        .get(app.url("/admin/people"))
        .send()
        .await
        .unwrap();
    assert_ne!(res.status(), 200);
    assert!(!res.text().await.unwrap().contains("李明"));

    // A member without the admin role is refused, reading and writing alike.
    let rep_browser = signed_in(&app, &rep).await;
    let customer_page = format!("/admin/people/customers/{customer}");
    for path in ["/admin/people", member.as_str(), customer_page.as_str()] {
        let (status, body) = rep_browser.get(&app, path).await;
        assert_eq!(status, 403, "{path}");
        assert!(body.contains("仅限管理员"), "{body}");
        assert!(body.contains("管理 → 人员与角色"), "says where: {body}");
        assert!(!body.contains("王经理"), "{body}");
    }
    let (status, _, _) = rep_browser
        .post(&app, &format!("{member}/roles"), &[("role", "admin")], true)
        .await;
    assert_eq!(status, 403);
    let (status, _, _) = rep_browser
        .post(
            &app,
            &format!("/admin/people/customers/{customer}/assignments/presales"),
            &[("user", rep.as_str())],
            true,
        )
        .await;
    assert_eq!(status, 403);
    assert_eq!(user(&app, &rep).await["roles"], json!(["sales"]));
    assert_eq!(assigned(&app, &customer, "presales").await, None);
    assert!(audits(&app, "user.update", &rep).await.is_empty());

    // The admin sees every member with roles and superiors in Chinese, and who is signed in.
    let browser = signed_in(&app, &admin).await;
    let (status, body) = browser.get(&app, "/admin/people").await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("当前登录：<strong class=\"signed-in-name\">周管理</strong>"),
        "{body}"
    );
    for text in [
        "李明",
        "王经理",
        "张工",
        "华南智造",
        "销售",
        "售前",
        "主管",
        "随通讯录同步",
    ] {
        assert!(body.contains(text), "`{text}` missing: {body}");
    }
    assert!(
        !body.contains(">sales<") && !body.contains(">presales<"),
        "{body}"
    );

    // Roles: the ticked boxes, audited as the admin.
    let (status, location, _) = browser
        .post(
            &app,
            &format!("{member}/roles"),
            &[("role", "sales"), ("role", "manager")],
            true,
        )
        .await;
    assert_eq!(status, 303);
    assert_eq!(location, format!("{member}?saved=1"));
    assert_eq!(user(&app, &rep).await["roles"], json!(["manager", "sales"]));
    let entries = audits(&app, "user.update", &rep).await;
    assert_eq!(entries.len(), 1);
    assert_eq!(
        (entries[0].0.as_str(), entries[0].1.as_deref()),
        ("user", Some(admin.as_str()))
    );
    assert_eq!(entries[0].2["roles"], json!(["sales", "manager"]));
    let (status, body) = browser.get(&app, &location).await;
    assert_eq!(status, 200);
    assert!(body.contains("已保存"), "{body}");
    assert!(body.contains("value=\"manager\" checked"), "{body}");

    // Without the session's token, or with bad input, nothing changes.
    let (status, _, body) = browser
        .post(
            &app,
            &format!("{member}/roles"),
            &[("role", "admin")],
            false,
        )
        .await;
    assert_eq!(status, 403);
    assert!(body.contains("页面已过期"), "{body}");
    let (status, _, _) = browser
        .post(
            &app,
            &format!("{member}/roles"),
            &[("role", "admin"), ("csrf_token", "forged")],
            false,
        )
        .await;
    assert_eq!(status, 403);
    let (status, _, body) = browser
        .post(&app, &format!("{member}/roles"), &[("role", "ceo")], true)
        .await;
    assert_eq!(status, 422);
    assert!(body.contains("提交的内容无效"), "{body}");
    assert!(!body.contains("ceo"), "{body}");
    let (status, _, _) = browser
        .post(
            &app,
            &format!("{member}/superiors"),
            &[("superior", rep.as_str())],
            true,
        )
        .await;
    assert_eq!(status, 422, "not their own superior");
    assert_eq!(user(&app, &rep).await["roles"], json!(["manager", "sales"]));
    assert_eq!(audits(&app, "user.update", &rep).await.len(), 1);

    // Superiors: set by hand, then handed back to the directory.
    let (status, _, _) = browser
        .post(
            &app,
            &format!("{member}/superiors"),
            &[("superior", boss.as_str())],
            true,
        )
        .await;
    assert_eq!(status, 303);
    let after = user(&app, &rep).await;
    assert_eq!(after["superiors"], json!([boss]));
    assert_eq!(after["superior_source"], "manual");
    let (_, body) = browser.get(&app, &member).await;
    assert!(body.contains("手动设置，通讯录同步不会覆盖"), "{body}");
    assert!(body.contains("交回通讯录同步"), "{body}");
    let (status, _, _) = browser
        .post(
            &app,
            &format!("{member}/superiors"),
            &[("source", "directory")],
            true,
        )
        .await;
    assert_eq!(status, 303);
    assert_eq!(user(&app, &rep).await["superior_source"], "directory");
    let entries = audits(&app, "user.update", &rep).await;
    assert_eq!(entries.len(), 3);
    assert_eq!(entries[1].2["superiors"], json!([boss]));
    assert_eq!(entries[2].2["fields"], json!(["superior_source"]));

    // Per-customer assignment: only presales members are offered; saved, then cleared.
    let path = format!("/admin/people/customers/{customer}");
    let (status, body) = browser.get(&app, &path).await;
    assert_eq!(status, 200);
    let presales_form = &body[body.find("id=\"assign-presales\"").unwrap()
        ..body.find("id=\"assign-delivery\"").unwrap()];
    assert!(
        presales_form.contains(&format!("value=\"{presales}\"")),
        "{presales_form}"
    );
    assert!(
        !presales_form.contains(&format!("value=\"{rep}\"")),
        "{presales_form}"
    );
    let (status, location, _) = browser
        .post(
            &app,
            &format!("{path}/assignments/presales"),
            &[("user", presales.as_str())],
            true,
        )
        .await;
    assert_eq!(status, 303);
    assert_eq!(location, format!("{path}?saved=1"));
    assert_eq!(
        assigned(&app, &customer, "presales").await,
        Some(presales.clone())
    );
    let (_, body) = browser.get(&app, "/admin/people").await;
    assert!(body.contains("售前：张工"), "{body}");
    let (status, _, body) = browser
        .post(
            &app,
            &format!("{path}/assignments/ceo"),
            &[("user", presales.as_str())],
            true,
        )
        .await;
    assert_eq!(status, 422, "{body}");
    let (status, _, _) = browser
        .post(
            &app,
            &format!("{path}/assignments/presales"),
            &[("user", "")],
            true,
        )
        .await;
    assert_eq!(status, 303);
    assert_eq!(assigned(&app, &customer, "presales").await, None);
    let assigns = audits(&app, "customer.assign", &customer).await;
    assert_eq!(assigns.len(), 1);
    assert_eq!(
        (assigns[0].0.as_str(), assigns[0].1.as_deref()),
        ("user", Some(admin.as_str()))
    );
    let unassigns = audits(&app, "customer.unassign", &customer).await;
    assert_eq!(unassigns.len(), 1);
    assert_eq!(unassigns[0].1.as_deref(), Some(admin.as_str()));

    // An unknown member or customer is a page saying so, not a change.
    let (status, _) = browser.get(&app, "/admin/people/members/nobody").await;
    assert_eq!(status, 404);
    let (status, _, body) = browser
        .post(
            &app,
            "/admin/people/customers/nobody/assignments/presales",
            &[("user", presales.as_str())],
            true,
        )
        .await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(app.count("customer_assignments").await, 0);
}

#[tokio::test]
async fn a_message_naming_a_role_says_where_it_is_set() {
    let app = spawn_app().await;
    let rep = app.user("李明", &["sales"]).await;
    let customer = app.customer("华南智造", Some(&rep)).await;
    let res = app
        .post(
            "/api/v1/collab/requests",
            &json!({"type": "presales_question", "customer": customer, "initiator": rep,
                    "content": {"问题": "是否支持私有化部署？"}}),
        )
        .await;
    assert_eq!(res.status(), 422);
    let body: Value = res.json().await.unwrap();
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("售前"), "{message}");
    assert!(message.contains("管理 → 人员与角色"), "{message}");
}

// ----------------------------------------------------------------------------------------
// The directory sync

async fn full_sync(app: &TestApp) {
    closeloop::jobs::enqueue_now(
        &app.db,
        chrono::Utc::now().timestamp_millis(),
        closeloop::jobs::NewJob::new("directory.sync", json!({})).org(&app.org_id),
    )
    .await
    .unwrap();
    app.worker.drain().await.unwrap();
}

#[tokio::test]
async fn a_directory_sync_keeps_superiors_set_by_hand() {
    let emulator = Emulator::start(CORP, vec![("app-secret".to_string(), "app")]).await;
    emulator.set_directory(
        vec![json!({"id": 2, "name": "华南销售部", "parentid": 1})],
        vec![
            member("wangjl", "王经理", &[]),
            member("liming", "李明", &["wangjl"]),
            member("zhanggong", "张工", &["wangjl"]),
        ],
    );
    let app = spawn_app_with(&format!(
        "[wecom]\ncorp_id = \"{CORP}\"\nagent_id = 1000002\nsecret = \"app-secret\"\ntoken = \"QDG6eK\"\n\
         encoding_aes_key = \"jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C\"\napi_base = \"{}\"\n",
        emulator.base_url()
    ))
    .await;
    app.worker.drain().await.unwrap(); // the start-up sync
    let wang = user_by_wecom_id(&app, "wangjl").await["id"].clone();
    let zhang = user_by_wecom_id(&app, "zhanggong").await["id"].clone();
    let liming = user_by_wecom_id(&app, "liming").await;
    assert_eq!(liming["superiors"], json!([wang]));
    assert_eq!(liming["superior_source"], "directory");

    // An admin on the people page makes 张工 李明's superior.
    let admin = app.user("周管理", &["admin"]).await;
    let browser = signed_in(&app, &admin).await;
    let liming_id = liming["id"].as_str().unwrap();
    let (status, _, _) = browser
        .post(
            &app,
            &format!("/admin/people/members/{liming_id}/superiors"),
            &[("superior", zhang.as_str().unwrap())],
            true,
        )
        .await;
    assert_eq!(status, 303);

    // A full sync, and an update the platform reports about 李明, leave that alone; the
    // directory still rules everyone else.
    emulator.set_directory(
        vec![json!({"id": 2, "name": "华南销售部", "parentid": 1})],
        vec![
            member("wangjl", "王经理", &[]),
            member("liming", "李明明", &["wangjl"]),
            member("zhanggong", "张工", &["liming"]),
        ],
    );
    full_sync(&app).await;
    let after = user_by_wecom_id(&app, "liming").await;
    assert_eq!(after["name"], "李明明", "the sync ran");
    assert_eq!(after["superiors"], json!([zhang]));
    assert_eq!(after["superior_source"], "manual");
    assert_eq!(
        user_by_wecom_id(&app, "zhanggong").await["superiors"],
        json!([liming_id])
    );
    let change = format!(
        "<xml><ToUserName><![CDATA[{CORP}]]></ToUserName><FromUserName><![CDATA[sys]]></FromUserName>\
         <CreateTime>{ts}</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[change_contact]]></Event>\
         <ChangeType>update_user</ChangeType><UserID><![CDATA[liming]]></UserID></xml>",
        ts = chrono::Utc::now().timestamp()
    );
    let res = deliver(&app, &change, CORP, chrono::Utc::now().timestamp()).await;
    assert_eq!(res.status(), 200);
    app.worker.drain().await.unwrap();
    assert_eq!(
        user_by_wecom_id(&app, "liming").await["superiors"],
        json!([zhang])
    );

    // Handed back, the next sync sets them from the directory again.
    let (status, _, _) = browser
        .post(
            &app,
            &format!("/admin/people/members/{liming_id}/superiors"),
            &[("source", "directory")],
            true,
        )
        .await;
    assert_eq!(status, 303);
    full_sync(&app).await;
    let after = user_by_wecom_id(&app, "liming").await;
    assert_eq!(after["superiors"], json!([wang]));
    assert_eq!(after["superior_source"], "directory");
}
