//! `closeloop customers import --platform wecom` against the WeCom emulator: the members'
//! external contacts, read page by page through `externalcontact/list` and
//! `externalcontact/batch/get_by_user`, become customers with contacts and owners
//! (`source = import`, no lead), or are linked to the customer holding their number; a
//! customer added earlier through the callback is left as it is; a re-run changes nothing;
//! a wrong secret writes nothing. The same against the DingTalk emulator's organisation-wide
//! external-contact book (`topapi/extcontact/list`, paged by offset), where each contact's
//! 负责人 (`follower_user_id`) becomes the owner.

use std::sync::Arc;

use closeloop::access::Actor;
use closeloop::chat::event::Platform;
use closeloop::clock::SystemClock;
use closeloop::config::Config;
use closeloop::customers::import::{self, Progress};
use closeloop::emulator::dingtalk::Emulator as DingtalkEmulator;
use closeloop::emulator::wecom::Emulator;
use closeloop::platform::dingtalk::api::DingtalkApi;
use closeloop::platform::wecom::api::WecomApi;
use serde_json::{json, Value};

use crate::callbacks::{deliver, CORP};
use crate::helpers::{spawn_app_with, TestApp};

const CALLBACK_TOKEN: &str = "QDG6eK";
const AES_KEY: &str = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C";
/// Contacts of the busiest rep: more than two pages of 100.
const MANY: usize = 205;

fn wecom_toml(emulator: &Emulator, contact_secret: &str) -> String {
    format!(
        "[wecom]\ncorp_id = \"{CORP}\"\nagent_id = 1000002\nsecret = \"app-secret\"\ncontact_secret = \"{contact_secret}\"\n\
         token = \"{CALLBACK_TOKEN}\"\nencoding_aes_key = \"{AES_KEY}\"\napi_base = \"{}\"\n",
        emulator.base_url()
    )
}

async fn emulator() -> Emulator {
    Emulator::start(
        CORP,
        vec![
            ("app-secret".to_string(), "app"),
            ("contact-secret".to_string(), "contact"),
        ],
    )
    .await
}

fn api(emulator: &Emulator, contact_secret: &str) -> WecomApi {
    let config = Config::from_toml_only(&wecom_toml(emulator, contact_secret)).unwrap();
    WecomApi::from_config(
        config.wecom.as_ref().unwrap(),
        reqwest::Client::new(),
        Arc::new(SystemClock),
    )
}

async fn member(app: &TestApp, name: &str, userid: &str) -> String {
    app.create(
        "/api/v1/users",
        json!({"name": name, "roles": ["sales"], "identities": [{"platform": "wecom", "kind": "userid", "value": userid}]}),
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_string()
}

fn contact(id: &str, name: &str, company: &str) -> Value {
    json!({"external_userid": id, "name": name, "position": "采购经理", "corp_name": company,
           "corp_full_name": company, "type": 2, "gender": 1})
}

fn follow(userid: &str, createtime: i64, mobiles: &[&str]) -> Value {
    json!({"userid": userid, "remark": "", "createtime": createtime, "add_way": 1, "state": "",
           "remark_mobiles": mobiles})
}

async fn run(
    app: &TestApp,
    api: &WecomApi,
    reports: &mut Vec<Progress>,
) -> closeloop::error::Result<Progress> {
    run_on(app, Platform::Wecom, api, reports).await
}

async fn run_on(
    app: &TestApp,
    platform: Platform,
    book: &dyn import::ContactBook,
    reports: &mut Vec<Progress>,
) -> closeloop::error::Result<Progress> {
    import::run(
        &app.db,
        &app.cipher,
        chrono::Utc::now().timestamp_millis(),
        &app.org_id,
        &Actor::cli(),
        platform,
        book,
        |p| reports.push(p.clone()),
    )
    .await
}

/// Every row of the tables an import writes, with its `updated_at` where it has one.
async fn snapshot(app: &TestApp) -> Vec<(String, i64, i64)> {
    let mut out = Vec::new();
    for (table, stamp) in [
        ("customers", "updated_at"),
        ("contacts", "updated_at"),
        ("contact_phones", "created_at"),
        ("customer_owners", "from_at"),
        ("customer_external_ids", "created_at"),
        ("leads", "updated_at"),
        ("tracking_points", "0"),
    ] {
        let row: (i64, i64) = sqlx::query_as(&format!(
            "SELECT CAST(COUNT(*) AS BIGINT), CAST(COALESCE(SUM({stamp}), 0) AS BIGINT) FROM {table}"
        ))
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
        out.push((table.to_string(), row.0, row.1));
    }
    out
}

async fn import_runs(app: &TestApp) -> i64 {
    scalar(
        app,
        "SELECT CAST(COUNT(*) AS BIGINT) FROM audit_log WHERE action = 'customer.import'",
    )
    .await
}

async fn scalar(app: &TestApp, sql: &str) -> i64 {
    let row: (i64,) = sqlx::query_as(sql).fetch_one(&app.db.pool).await.unwrap();
    row.0
}

#[tokio::test]
async fn existing_external_contacts_come_in_page_by_page_without_leads_and_a_rerun_changes_nothing()
{
    let emulator = emulator().await;
    let app = spawn_app_with(&wecom_toml(&emulator, "contact-secret")).await;
    let liming = member(&app, "李明", "liming").await;
    let wangfang = member(&app, "王芳", "wangfang").await;
    let _zhao = member(&app, "赵磊", "zhaolei").await; // no customers: WeCom answers 84061

    // 李明's many customers.
    for i in 0..MANY {
        emulator.add_external_contact(
            contact(
                &format!("wmBULK{i:04}"),
                &format!("客户{i}"),
                &format!("公司{i}"),
            ),
            json!([follow("liming", 1_700_000_000 + i as i64, &[])]),
        );
    }
    // One customer both added: 王芳 first, so she owns them.
    emulator.add_external_contact(
        contact("wmSHARED", "共同客户", "双跟进有限公司"),
        json!([
            follow("liming", 1_700_900_000, &[]),
            follow("wangfang", 1_700_000_000, &["13900139000"])
        ]),
    );
    // A customer added earlier through the callback: linked already, with its lead.
    emulator.add_external_contact(
        contact("wmCALLBACK", "张总", "华南智造科技有限公司"),
        json!([follow("liming", 1_700_000_000, &["13800138000"])]),
    );
    let ts = chrono::Utc::now().timestamp();
    assert_eq!(
        deliver(
            &app,
            &crate::wecom_customers::added("wmCALLBACK", "liming", "douyin-form"),
            CORP,
            ts
        )
        .await
        .status(),
        200
    );
    app.worker.drain().await.unwrap();
    assert_eq!(app.count("customers").await, 1);
    assert_eq!(app.count("leads").await, 1);
    // A customer entered through the API, with no owner, holding a number 王芳 noted.
    let by_number = app
        .create(
            "/api/v1/customers",
            json!({"name": "老客户有限公司", "contacts": [{"name": "刘总", "phones": ["+86 137 0013 7000"]}]}),
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    emulator.add_external_contact(
        contact("wmBYNUMBER", "刘总", "老客户有限公司"),
        json!([follow("wangfang", 1_700_000_500, &["13700137000"])]),
    );
    let points_before = app.count("tracking_points").await;

    let api = api(&emulator, "contact-secret");
    let mut reports = Vec::new();
    let done = run(&app, &api, &mut reports).await.unwrap();
    let seen = MANY + 3;
    assert_eq!(
        done,
        Progress {
            members: 3,
            members_done: 3,
            contacts_seen: seen,
            created: MANY + 1,
            linked: 1,
            unchanged: 1,
        }
    );
    assert_eq!(reports.last(), Some(&done), "the end is reported");
    assert!(
        reports.len() >= 2,
        "progress is reported while listing: {reports:?}"
    );

    // Paged with the cursor, 100 a page, all three members in one call.
    let requests = emulator.batch_requests();
    assert_eq!(requests.len(), 3, "{} entries in pages of 100", MANY + 4);
    assert_eq!(requests[0]["cursor"], "");
    assert!(requests[1]["cursor"].as_str().unwrap().len() > 1);
    assert_ne!(requests[1]["cursor"], requests[2]["cursor"]);
    for r in &requests {
        assert_eq!(r["limit"], 100);
        assert_eq!(r["userid_list"], json!(["liming", "wangfang", "zhaolei"]));
    }

    // Customers, contacts and owners as an added contact gets them, but no lead.
    assert_eq!(app.count("customers").await as usize, 1 + 1 + MANY + 1);
    assert_eq!(
        scalar(
            &app,
            "SELECT CAST(COUNT(*) AS BIGINT) FROM customers WHERE source = 'import'"
        )
        .await as usize,
        MANY + 1
    );
    assert_eq!(app.count("leads").await, 1, "an import creates no lead");
    let leads: Value = app.get("/api/v1/leads").await.json().await.unwrap();
    assert_eq!(leads["items"].as_array().unwrap().len(), 1);
    assert_eq!(
        app.count("tracking_points").await,
        points_before,
        "nothing for the ledger's metrics"
    );
    let found: Value = app
        .get("/api/v1/customers?phone=13900139000")
        .await
        .json()
        .await
        .unwrap();
    let shared = &found["items"][0];
    assert_eq!(shared["name"], "双跟进有限公司");
    assert_eq!(shared["source"], "import");
    assert_eq!(
        shared["owner"],
        wangfang.as_str(),
        "the member who added them first owns them"
    );
    assert_eq!(shared["contacts"][0]["name"], "共同客户");
    assert_eq!(shared["contacts"][0]["title"], "采购经理");
    let owners: Value = app
        .get(&format!(
            "/api/v1/customers/{}/owners",
            shared["id"].as_str().unwrap()
        ))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(owners["items"][0]["user"], wangfang.as_str());
    assert_eq!(owners["items"][0]["reason"], "created");
    assert_eq!(
        scalar(
            &app,
            &format!("SELECT CAST(COUNT(*) AS BIGINT) FROM customers WHERE source = 'import' AND owner_user_id = '{liming}'")
        )
        .await as usize,
        MANY
    );

    // The callback's customer: linked, not duplicated.
    let found: Value = app
        .get("/api/v1/customers?phone=13800138000")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(found["items"].as_array().unwrap().len(), 1);
    assert_eq!(found["items"][0]["source"], "platform_event");
    // The API's customer: linked by its number, now owned by the member who added them.
    let linked: Value = app
        .get(&format!("/api/v1/customers/{by_number}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(linked["source"], "api");
    assert_eq!(linked["owner"], wangfang.as_str());
    assert_eq!(
        linked["contacts"].as_array().unwrap().len(),
        1,
        "no second contact"
    );
    assert_eq!(
        scalar(
            &app,
            &format!("SELECT CAST(COUNT(*) AS BIGINT) FROM customer_external_ids WHERE external_user_id = 'wmBYNUMBER' AND customer_id = '{by_number}'")
        )
        .await,
        1
    );
    assert_eq!(import_runs(&app).await, 1);

    // A re-run changes nothing.
    let before = snapshot(&app).await;
    let again = run(&app, &api, &mut Vec::new()).await.unwrap();
    assert_eq!((again.created, again.linked, again.unchanged), (0, 0, seen));
    assert_eq!(snapshot(&app).await, before);
    assert_eq!(import_runs(&app).await, 2, "each run is audited");
}

#[tokio::test]
async fn a_wrong_contact_secret_is_a_clear_error_and_writes_nothing() {
    let emulator = emulator().await;
    let app = spawn_app_with(&wecom_toml(&emulator, "not-the-secret")).await;
    member(&app, "李明", "liming").await;
    emulator.add_external_contact(
        contact("wmONE", "客户", "某公司"),
        json!([follow("liming", 1_700_000_000, &[])]),
    );
    let before = snapshot(&app).await;
    let err = run(&app, &api(&emulator, "not-the-secret"), &mut Vec::new())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("wecom.contact_secret"), "{err}");
    assert!(
        !err.contains("not-the-secret"),
        "the secret is never shown: {err}"
    );
    assert_eq!(snapshot(&app).await, before);
    assert_eq!(import_runs(&app).await, 0);
}

#[tokio::test]
async fn the_command_prints_its_progress_and_totals() {
    let emulator = emulator().await;
    let app = spawn_app_with(&wecom_toml(&emulator, "contact-secret")).await;
    member(&app, "李明", "liming").await;
    for id in ["wmA", "wmB"] {
        emulator.add_external_contact(
            contact(id, "客户", id),
            json!([follow("liming", 1_700_000_000, &[])]),
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let data_key = if crate::helpers::on_postgres() {
        format!("data_key = \"{}\"\n", crate::helpers::TEST_DATA_KEY)
    } else {
        String::new()
    };
    let config = dir.path().join("closeloop.toml");
    std::fs::write(
        &config,
        format!(
            "database_url = \"{}\"\n{}[security]\n{data_key}",
            app.database_url,
            wecom_toml(&emulator, "contact-secret")
        ),
    )
    .unwrap();
    let mut cmd = crate::cli::closeloop(dir.path());
    cmd.args(["customers", "import", "--platform", "wecom", "--config"])
        .arg(&config);
    // The emulator answers on this test's runtime: wait for the command without blocking it.
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .unwrap()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(
        stderr.contains("members done 1/1, contacts seen 2"),
        "{stderr}"
    );
    assert_eq!(
        stdout.trim(),
        "imported: members done 1/1, contacts seen 2, created 2, linked 0, unchanged 0"
    );
    assert_eq!(app.count("customers").await, 2);
}

// ----------------------------------------------------------------------------------------
// DingTalk: the organisation's external-contact book

const DT_KEY: &str = "dingimportapp01";
const DT_SECRET: &str = "dt-import-secret";

fn dingtalk_toml(emulator: &DingtalkEmulator, secret: &str) -> String {
    format!(
        "[dingtalk]\napp_key = \"{DT_KEY}\"\napp_secret = \"{secret}\"\ncorp_id = \"dingcorpimport01\"\n\
         token = \"tok\"\naes_key = \"Yue0EfdN5900c1ce5cf6A152c63DDe1808a60c5ecd7\"\n\
         api_base = \"{0}\"\noapi_base = \"{0}\"\n",
        emulator.base_url()
    )
}

fn dingtalk_api(emulator: &DingtalkEmulator, secret: &str) -> DingtalkApi {
    let config = Config::from_toml_only(&dingtalk_toml(emulator, secret)).unwrap();
    DingtalkApi::from_config(
        config.dingtalk.as_ref().unwrap(),
        reqwest::Client::new(),
        Arc::new(SystemClock),
    )
}

async fn dingtalk_member(app: &TestApp, name: &str, userid: &str) -> String {
    app.create(
        "/api/v1/users",
        json!({"name": name, "roles": ["sales"], "identities": [{"platform": "dingtalk", "kind": "userid", "value": userid}]}),
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_string()
}

fn ext(id: &str, name: &str, follower: &str, mobile: &str) -> Value {
    json!({"userid": id, "name": name, "mobile": mobile, "state_code": "86",
           "company_name": format!("{name}的公司"), "title": "采购经理",
           "follower_user_id": follower, "share_user_ids": [], "label_ids": []})
}

#[tokio::test]
async fn the_dingtalk_contact_book_comes_in_page_by_page_with_followers_as_owners_and_a_rerun_changes_nothing(
) {
    let emulator = DingtalkEmulator::start(DT_KEY, DT_SECRET).await;
    let app = spawn_app_with(&dingtalk_toml(&emulator, DT_SECRET)).await;
    let wang = dingtalk_member(&app, "王芳", "wangfang").await;
    let zhao = dingtalk_member(&app, "赵强", "zhaoqiang").await;
    // 205 contacts of 王芳 (three pages of at most 100), two of 赵强, one whose 负责人 is
    // no member closeloop knows (left out), and one with the number of a customer the
    // team already has (linked to it, not duplicated).
    let mut book: Vec<Value> = (0..MANY)
        .map(|i| {
            ext(
                &format!("dtw{i:03}"),
                &format!("客户{i}"),
                "wangfang",
                &format!("1390000{i:04}"),
            )
        })
        .collect();
    book.push(ext("dtz1", "周经理", "zhaoqiang", "13700000001"));
    book.push(ext("dtz2", "吴经理", "zhaoqiang", "13700000002"));
    book.push(ext("dtx1", "外人", "stranger", "13600000001"));
    book.push(ext("dtk1", "老客户", "zhaoqiang", "13500000001"));
    emulator.set_ext_contacts(book);
    let known = app
        .create(
            "/api/v1/customers",
            json!({"name": "老客户公司", "contacts": [{"name": "老客户", "phones": ["13500000001"]}]}),
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_string();

    let api = dingtalk_api(&emulator, DT_SECRET);
    let mut reports = Vec::new();
    let done = run_on(&app, Platform::Dingtalk, &api, &mut reports)
        .await
        .unwrap();
    assert_eq!(
        done,
        Progress {
            members: 2,
            members_done: 2,
            contacts_seen: MANY + 3,
            created: MANY + 2,
            linked: 1,
            unchanged: 0,
        }
    );
    assert!(!reports.is_empty() && reports.last() == Some(&done));
    // Paged by offset, 100 at a time, until a short page.
    assert_eq!(
        emulator.ext_list_calls(),
        vec![(0, 100), (100, 100), (200, 100)]
    );
    // One more than the customers created: the one the team had.
    assert_eq!(app.count("customers").await, (MANY + 3) as i64);
    assert_eq!(
        scalar(
            &app,
            "SELECT CAST(COUNT(*) AS BIGINT) FROM customers WHERE source = 'import'"
        )
        .await,
        (MANY + 2) as i64
    );
    assert_eq!(app.count("leads").await, 0, "an import creates no lead");
    let owner_of = |ext_id: &'static str| {
        let app = &app;
        async move {
            let row: (Option<String>,) = sqlx::query_as(
                "SELECT c.owner_user_id FROM customers c JOIN customer_external_ids e ON e.customer_id = c.id \
                 WHERE e.platform = 'dingtalk' AND e.external_user_id = $1",
            )
            .bind(ext_id)
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
            row.0
        }
    };
    assert_eq!(owner_of("dtw204").await.as_deref(), Some(wang.as_str()));
    assert_eq!(owner_of("dtz2").await.as_deref(), Some(zhao.as_str()));
    assert_eq!(
        scalar(&app, "SELECT CAST(COUNT(*) AS BIGINT) FROM customer_external_ids WHERE external_user_id = 'dtx1'").await,
        0,
        "a contact whose 负责人 is unknown is left out"
    );
    let linked: (String,) = sqlx::query_as(
        "SELECT customer_id FROM customer_external_ids WHERE platform = 'dingtalk' AND external_user_id = 'dtk1'",
    )
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(linked.0, known);
    assert_eq!(import_runs(&app).await, 1);

    // A re-run reads everything again and changes nothing.
    let before = snapshot(&app).await;
    let again = run_on(&app, Platform::Dingtalk, &api, &mut Vec::new())
        .await
        .unwrap();
    assert_eq!(
        (again.created, again.linked, again.unchanged),
        (0, 0, MANY + 3)
    );
    assert_eq!(snapshot(&app).await, before);
    assert_eq!(import_runs(&app).await, 2);
}

#[tokio::test]
async fn a_wrong_dingtalk_secret_is_a_clear_error_and_writes_nothing() {
    let emulator = DingtalkEmulator::start(DT_KEY, DT_SECRET).await;
    let app = spawn_app_with(&dingtalk_toml(&emulator, "not-the-secret")).await;
    dingtalk_member(&app, "王芳", "wangfang").await;
    emulator.set_ext_contacts(vec![ext("dt1", "客户", "wangfang", "13900000001")]);
    let before = snapshot(&app).await;
    let err = run_on(
        &app,
        Platform::Dingtalk,
        &dingtalk_api(&emulator, "not-the-secret"),
        &mut Vec::new(),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(err.starts_with("dingtalk import:"), "{err}");
    assert!(
        err.contains("dingtalk.app_secret"),
        "the key to fix is named: {err}"
    );
    assert!(
        !err.contains("not-the-secret"),
        "the secret is never shown: {err}"
    );
    assert_eq!(snapshot(&app).await, before);
    assert_eq!(import_runs(&app).await, 0);
}
