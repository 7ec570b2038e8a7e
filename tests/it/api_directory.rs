//! REST API v1 for the directory (users), customers with contacts and phones, leads and
//! deals: happy paths, paging, bad input, authentication and organisation isolation.

use std::collections::HashSet;

use closeloop::access::{apikeys, ApiKeyRole, NewApiKey};
use closeloop::directory::orgs;
use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{spawn_app, spawn_app_with, TestApp};

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Reads an error response, checking it has exactly the shape
/// `{"error":{"code":"…","message":"…"}}` with both strings non-empty.
async fn api_error(res: reqwest::Response) -> (u16, String, String) {
    let status = res.status().as_u16();
    let text = res.text().await.unwrap();
    let body: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("error body is not JSON ({e}): {text}"));
    let outer = body.as_object().expect("error body is an object");
    assert_eq!(outer.len(), 1, "only `error` at the top level: {body}");
    let err = body["error"].as_object().expect("`error` is an object");
    assert_eq!(err.len(), 2, "error holds code and message only: {body}");
    let code = err["code"].as_str().expect("code is a string").to_string();
    let message = err["message"]
        .as_str()
        .expect("message is a string")
        .to_string();
    assert!(!code.is_empty() && !message.is_empty(), "{body}");
    (status, code, message)
}

/// A request with an explicit key (or none).
async fn send(
    app: &TestApp,
    key: Option<&str>,
    method: Method,
    path: &str,
    body: Option<&Value>,
) -> reqwest::Response {
    let mut req = app.client.request(method, app.url(path));
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    if let Some(b) = body {
        req = req.json(b);
    }
    req.send().await.unwrap()
}

/// A POST with a raw body sent as JSON.
async fn post_raw(app: &TestApp, path: &str, body: &str) -> reqwest::Response {
    app.client
        .post(app.url(path))
        .bearer_auth(&app.key)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap()
}

async fn ok_json(res: reqwest::Response) -> Value {
    let status = res.status();
    let body: Value = res.json().await.unwrap();
    assert_eq!(status, 200, "{body}");
    body
}

fn ids(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .expect("items is an array")
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_string())
        .collect()
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

async fn other_org_admin_key(app: &TestApp, slug: &str) -> (String, String) {
    let org = orgs::create(
        &app.db,
        now_ms(),
        slug,
        "另一家公司",
        chrono_tz::Asia::Shanghai,
    )
    .await
    .unwrap();
    let (_, key) = apikeys::create(
        &app.db,
        now_ms(),
        NewApiKey {
            org_id: org.id.clone(),
            name: "other-admin".into(),
            role: ApiKeyRole::Admin,
            expires_at_ms: None,
        },
    )
    .await
    .unwrap();
    (org.id, key)
}

// ---------------------------------------------------------------- users

#[tokio::test]
async fn users_are_created_read_updated_and_listed_with_roles_superiors_and_identities() {
    let app = spawn_app().await;
    let boss_a = app.user("王经理", &["manager"]).await;
    let boss_b = app.user("赵总监", &["manager", "sales"]).await;

    let created = app
        .create(
            "/api/v1/users",
            json!({
                "name": "  李明  ",
                "department": "华南销售部",
                "region": "华南",
                "roles": ["sales", "presales", "sales"],
                "superiors": [boss_a, boss_b],
                "identities": [
                    {"platform": "wecom", "kind": "userid", "value": "liming"},
                    {"platform": "feishu", "kind": "open_id", "value": "ou_7d8a6e6df7621556ce0d21922b676706"},
                    {"platform": "dingtalk", "kind": "unionid", "value": "z21HjQliSzpw0YWCNxmii6u2Os62cZ62iSiE"}
                ]
            }),
        )
        .await;
    let id = created["id"].as_str().unwrap().to_string();
    assert_eq!(created["name"], "李明", "names are trimmed");
    assert_eq!(created["org_id"], app.org_id.as_str());
    assert_eq!(created["department"], "华南销售部");
    assert_eq!(created["region"], "华南");
    assert_eq!(created["status"], "active");
    assert_eq!(
        created["roles"],
        json!(["presales", "sales"]),
        "duplicates dropped"
    );
    assert_eq!(
        created["superiors"],
        json!(sorted(vec![boss_a.clone(), boss_b.clone()]))
    );
    let identities = created["identities"].as_array().unwrap();
    assert_eq!(identities.len(), 3);
    assert!(identities.contains(&json!({"platform": "wecom", "kind": "userid", "value": "liming"})));
    assert!(identities.contains(
        &json!({"platform": "dingtalk", "kind": "unionid", "value": "z21HjQliSzpw0YWCNxmii6u2Os62cZ62iSiE"})
    ));

    let fetched = ok_json(app.get(&format!("/api/v1/users/{id}")).await).await;
    assert_eq!(fetched, created, "GET answers what POST answered");

    let updated = ok_json(
        app.patch(
            &format!("/api/v1/users/{id}"),
            &json!({
                "name": "李明明",
                "status": "left",
                "roles": ["delivery"],
                "superiors": [boss_b],
                "identities": [{"platform": "wecom", "kind": "open_userid", "value": "woAJ2GCAAAXtWyujaWJHDDGi0mACAAAA"}]
            }),
        )
        .await,
    )
    .await;
    assert_eq!(updated["name"], "李明明");
    assert_eq!(updated["status"], "left");
    assert_eq!(updated["roles"], json!(["delivery"]));
    assert_eq!(updated["superiors"], json!([boss_b]));
    assert_eq!(
        updated["identities"],
        json!([{"platform": "wecom", "kind": "open_userid", "value": "woAJ2GCAAAXtWyujaWJHDDGi0mACAAAA"}])
    );
    assert_eq!(
        updated["department"], "华南销售部",
        "fields left out stay as they were"
    );
    let again = ok_json(app.get(&format!("/api/v1/users/{id}")).await).await;
    assert_eq!(again, updated);

    // The replaced identities are gone from storage, not only from the answer.
    assert_eq!(app.count("user_identities").await, 1);

    let managers = ok_json(app.get("/api/v1/users?role=manager").await).await;
    assert_eq!(
        sorted(ids(&managers)),
        sorted(vec![boss_a.clone(), boss_b.clone()])
    );
    assert!(managers["next_cursor"].is_null());
    let all = ok_json(app.get("/api/v1/users").await).await;
    assert_eq!(all["items"].as_array().unwrap().len(), 3);

    let (status, code, _) = api_error(
        app.get("/api/v1/users/0190b8a0-0000-7000-8000-000000000000")
            .await,
    )
    .await;
    assert_eq!((status, code.as_str()), (404, "not_found"));
}

#[tokio::test]
async fn a_platform_identity_taken_by_another_user_is_a_conflict_and_writes_nothing() {
    let app = spawn_app().await;
    app.create(
        "/api/v1/users",
        json!({"name": "张三", "identities": [{"platform": "wecom", "kind": "userid", "value": "zhangsan"}]}),
    )
    .await;
    let users = app.count("users").await;
    let idents = app.count("user_identities").await;
    let roles = app.count("user_roles").await;
    let audit = app.count("audit_log").await;

    let res = app
        .post(
            "/api/v1/users",
            &json!({"name": "张三二号", "roles": ["sales"], "identities": [{"platform": "wecom", "kind": "userid", "value": "zhangsan"}]}),
        )
        .await;
    let (status, code, message) = api_error(res).await;
    assert_eq!((status, code.as_str()), (409, "conflict"));
    assert!(message.contains("zhangsan"), "{message}");
    assert_eq!(app.count("users").await, users);
    assert_eq!(app.count("user_identities").await, idents);
    assert_eq!(app.count("user_roles").await, roles);
    assert_eq!(app.count("audit_log").await, audit);

    // The same value under another platform or kind is a different identity.
    let other = app
        .create(
            "/api/v1/users",
            json!({"name": "李四", "identities": [
                {"platform": "dingtalk", "kind": "userid", "value": "zhangsan"},
                {"platform": "wecom", "kind": "open_userid", "value": "zhangsan"}
            ]}),
        )
        .await;
    let other_id = other["id"].as_str().unwrap();

    // Taking it over by PATCH fails too, and the user keeps the identities they had.
    let res = app
        .patch(
            &format!("/api/v1/users/{other_id}"),
            &json!({"name": "改名", "identities": [{"platform": "wecom", "kind": "userid", "value": "zhangsan"}]}),
        )
        .await;
    assert_eq!(api_error(res).await.0, 409);
    let after = ok_json(app.get(&format!("/api/v1/users/{other_id}")).await).await;
    assert_eq!(after["name"], "李四", "the failed PATCH changed nothing");
    assert_eq!(after["identities"], other["identities"]);
}

#[tokio::test]
async fn unknown_roles_platforms_kinds_and_superiors_are_rejected_without_writing() {
    let app = spawn_app().await;
    let boss = app.user("王经理", &["manager"]).await;
    let users = app.count("users").await;

    let cases = [
        (
            json!({"name": "甲", "roles": ["sales", "ceo"]}),
            "invalid_input",
            "ceo",
        ),
        (
            json!({"name": "甲", "identities": [{"platform": "slack", "kind": "userid", "value": "u1"}]}),
            "invalid_input",
            "slack",
        ),
        (
            json!({"name": "甲", "identities": [{"platform": "feishu", "kind": "userid", "value": "u1"}]}),
            "invalid_input",
            "userid",
        ),
        (
            json!({"name": "甲", "identities": [{"platform": "dingtalk", "kind": "open_id", "value": "u1"}]}),
            "invalid_input",
            "open_id",
        ),
        (
            json!({"name": "甲", "identities": [{"platform": "wecom", "kind": "userid", "value": "  "}]}),
            "invalid_input",
            "identity value",
        ),
        (
            json!({"name": "甲", "superiors": [boss, "0190b8a0-0000-7000-8000-000000000000"]}),
            "unknown_reference",
            "0190b8a0-0000-7000-8000-000000000000",
        ),
        (
            json!({"name": "甲", "superiors": ["not an id; DROP TABLE users"]}),
            "invalid_input",
            "superior",
        ),
    ];
    for (body, want_code, mentions) in cases {
        let (status, code, message) = api_error(app.post("/api/v1/users", &body).await).await;
        assert_eq!((status, code.as_str()), (422, want_code), "{body}");
        assert!(message.contains(mentions), "{message} for {body}");
    }
    assert_eq!(app.count("users").await, users);
    assert_eq!(app.count("user_roles").await, 1);
    assert_eq!(app.count("user_identities").await, 0);
    assert_eq!(app.count("user_superiors").await, 0);

    // Nobody is their own superior.
    let (status, code, message) = api_error(
        app.patch(
            &format!("/api/v1/users/{boss}"),
            &json!({"superiors": [boss]}),
        )
        .await,
    )
    .await;
    assert_eq!((status, code.as_str()), (422, "invalid_input"));
    assert!(message.contains("own superior"), "{message}");
    assert_eq!(app.count("user_superiors").await, 0);

    let (status, _, _) = api_error(
        app.patch(
            &format!("/api/v1/users/{boss}"),
            &json!({"status": "retired"}),
        )
        .await,
    )
    .await;
    assert_eq!(status, 422);
    let boss_now = ok_json(app.get(&format!("/api/v1/users/{boss}")).await).await;
    assert_eq!(boss_now["status"], "active");
}

#[tokio::test]
async fn a_user_is_found_by_a_platform_identity() {
    let app = spawn_app().await;
    let a = app
        .create(
            "/api/v1/users",
            json!({"name": "甲", "identities": [
                {"platform": "wecom", "kind": "userid", "value": "jia"},
                {"platform": "feishu", "kind": "union_id", "value": "on_1234"}
            ]}),
        )
        .await;
    let b = app
        .create(
            "/api/v1/users",
            json!({"name": "乙", "identities": [
                {"platform": "wecom", "kind": "open_userid", "value": "jia"},
                {"platform": "dingtalk", "kind": "userid", "value": "jia"}
            ]}),
        )
        .await;
    app.user("丙", &["sales"]).await;

    let found = ok_json(
        app.get("/api/v1/users?platform=wecom&identity_kind=userid&identity_value=jia")
            .await,
    )
    .await;
    assert_eq!(ids(&found), vec![a["id"].as_str().unwrap().to_string()]);

    let found = ok_json(
        app.get("/api/v1/users?platform=dingtalk&identity_kind=userid&identity_value=jia")
            .await,
    )
    .await;
    assert_eq!(ids(&found), vec![b["id"].as_str().unwrap().to_string()]);

    let found = ok_json(
        app.get("/api/v1/users?platform=feishu&identity_kind=union_id&identity_value=on_1234")
            .await,
    )
    .await;
    assert_eq!(found["items"][0]["name"], "甲");

    let none = ok_json(
        app.get("/api/v1/users?platform=feishu&identity_kind=union_id&identity_value=jia")
            .await,
    )
    .await;
    assert_eq!(none["items"], json!([]));
    assert!(none["next_cursor"].is_null());

    let (status, code, _) = api_error(app.get("/api/v1/users?platform=wecom").await).await;
    assert_eq!((status, code.as_str()), (422, "invalid_input"));

    // An LDAP uid (what `closeloop directory sync --source ldap` gives a member) is an
    // identity like the platforms' ones, with its own kind.
    let d = app
        .create(
            "/api/v1/users",
            json!({"name": "丁", "identities": [{"platform": "ldap", "kind": "uid", "value": "ding"}]}),
        )
        .await;
    assert_eq!(
        d["identities"],
        json!([{"platform": "ldap", "kind": "uid", "value": "ding"}])
    );
    let found = ok_json(
        app.get("/api/v1/users?platform=ldap&identity_kind=uid&identity_value=ding")
            .await,
    )
    .await;
    assert_eq!(ids(&found), vec![d["id"].as_str().unwrap().to_string()]);
    let (status, _, message) = api_error(
        send(
            &app,
            Some(&app.key),
            Method::POST,
            "/api/v1/users",
            Some(&json!({"name": "戊", "identities": [{"platform": "ldap", "kind": "userid", "value": "wu"}]})),
        )
        .await,
    )
    .await;
    assert_eq!(status, 422);
    assert!(message.contains("uid"), "{message}");
}

// ---------------------------------------------------------------- customers

#[tokio::test]
async fn phones_are_normalised_masked_encrypted_and_findable_in_any_spelling() {
    let app = spawn_app().await;
    let owner = app.user("李明", &["sales"]).await;
    let first = app
        .create(
            "/api/v1/customers",
            json!({
                "name": "华南智造",
                "tier": "A",
                "owner": owner,
                "contacts": [{
                    "name": "张总",
                    "title": "采购总监",
                    "email": "zhang.wei@example.com",
                    "phones": ["138 0013 8000", "+86 138-0013-8000"]
                }]
            }),
        )
        .await;
    assert_eq!(first["tier"], "A");
    assert_eq!(first["owner"], owner.as_str());
    let contact = &first["contacts"][0];
    assert_eq!(contact["name"], "张总");
    assert_eq!(contact["title"], "采购总监");
    assert_eq!(contact["email_masked"], "z***@example.com");
    assert_eq!(
        contact["phones"].as_array().unwrap().len(),
        1,
        "two spellings of one number are one phone: {contact}"
    );
    assert_eq!(contact["phones"][0]["masked"], "+86 138****8000");
    assert_eq!(contact["phones"][0]["valid"], true);

    let second = app
        .create(
            "/api/v1/customers",
            json!({"name": "北方重工", "contacts": [{"name": "刘工", "phones": ["+86 138-0013-8000"]}]}),
        )
        .await;
    let unrelated = app
        .create(
            "/api/v1/customers",
            json!({"name": "西部物流", "contacts": [{"name": "陈经理", "phones": ["13900139000"]}]}),
        )
        .await;

    let res = app.get("/api/v1/customers?phone=008613800138000").await;
    assert_eq!(res.status(), 200);
    let text = res.text().await.unwrap();
    assert!(
        !text.contains("13800138000"),
        "plaintext number in a response: {text}"
    );
    let found: Value = serde_json::from_str(&text).unwrap();
    let found_ids = ids(&found);
    assert_eq!(
        sorted(found_ids),
        sorted(vec![
            first["id"].as_str().unwrap().to_string(),
            second["id"].as_str().unwrap().to_string()
        ])
    );
    let found = ok_json(app.get("/api/v1/customers?phone=%2B8613900139000").await).await;
    assert_eq!(
        ids(&found),
        vec![unrelated["id"].as_str().unwrap().to_string()]
    );
    let none = ok_json(app.get("/api/v1/customers?phone=13700137000").await).await;
    assert_eq!(none["items"], json!([]));
    let (status, _, _) = api_error(app.get("/api/v1/customers?phone=12").await).await;
    assert_eq!(status, 422);

    // Every read path answers masked values only.
    for path in [
        format!("/api/v1/customers/{}", first["id"].as_str().unwrap()),
        "/api/v1/customers".to_string(),
    ] {
        let text = app.get(&path).await.text().await.unwrap();
        assert!(text.contains("138****8000"), "{text}");
        assert!(!text.contains("13800138000"), "{path}: {text}");
        assert!(!text.contains("zhang.wei"), "{path}: {text}");
    }

    // At rest: ciphertexts only, and one keyed hash per distinct number.
    let rows: Vec<(String, String, String)> =
        sqlx::query_as("SELECT phone_enc, phone_hash, phone_masked FROM contact_phones")
            .fetch_all(&app.db.pool)
            .await
            .unwrap();
    assert_eq!(rows.len(), 3);
    for (enc, hash, _) in &rows {
        assert!(
            !enc.contains("13800138000") && !enc.contains("13900139000"),
            "{enc}"
        );
        assert!(enc.starts_with("v1."), "{enc}");
        assert!(!hash.contains("13800138000"), "{hash}");
    }
    let hashes: HashSet<&str> = rows.iter().map(|r| r.1.as_str()).collect();
    assert_eq!(hashes.len(), 2, "both spellings hash to the same value");
    let encs: HashSet<&str> = rows.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(encs.len(), 3, "each ciphertext has its own nonce");

    let (email_enc, email_masked): (Option<String>, Option<String>) =
        sqlx::query_as("SELECT email_enc, email_masked FROM contacts WHERE email_enc IS NOT NULL")
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    let email_enc = email_enc.expect("e-mail stored");
    assert!(!email_enc.contains("zhang.wei"), "{email_enc}");
    assert!(!email_enc.contains("example.com"), "{email_enc}");
    assert_eq!(email_masked.as_deref(), Some("z***@example.com"));
}

#[tokio::test]
async fn contacts_can_be_added_and_bad_contacts_write_nothing() {
    let app = spawn_app().await;
    let customer = app.customer("华南智造", None).await;
    let before = app.count("contacts").await;

    let res = app
        .post(
            &format!("/api/v1/customers/{customer}/contacts"),
            &json!({"name": "王工", "phones": ["021-6234 5678"], "email": "wang@example.cn"}),
        )
        .await;
    assert_eq!(res.status(), 201);
    let body: Value = res.json().await.unwrap();
    let contacts = body["contacts"].as_array().unwrap();
    assert_eq!(contacts.len(), 2);
    let wang = contacts.iter().find(|c| c["name"] == "王工").unwrap();
    assert_eq!(wang["phones"][0]["masked"], "+86 216***5678");
    assert_eq!(app.count("contacts").await, before + 1);

    let phones = app.count("contact_phones").await;
    for (body, mentions) in [
        (json!({"name": "坏号码", "phones": ["12345"]}), "phone"),
        (
            json!({"name": "坏邮箱", "email": "not-an-address"}),
            "email",
        ),
        (json!({"name": "", "phones": ["13800138000"]}), "name"),
        (
            json!({"name": "多号码", "phones": vec!["13800138000"; 11]}),
            "10",
        ),
    ] {
        let (status, code, message) = api_error(
            app.post(&format!("/api/v1/customers/{customer}/contacts"), &body)
                .await,
        )
        .await;
        assert_eq!((status, code.as_str()), (422, "invalid_input"), "{body}");
        assert!(message.contains(mentions), "{message}");
        assert!(!message.contains("12345"), "the number is not echoed");
    }
    assert_eq!(app.count("contacts").await, before + 1);
    assert_eq!(app.count("contact_phones").await, phones);

    let (status, _, _) = api_error(
        app.post(
            "/api/v1/customers/0190b8a0-0000-7000-8000-000000000000/contacts",
            &json!({"name": "无主"}),
        )
        .await,
    )
    .await;
    assert_eq!(status, 404);

    let (status, code, _) = api_error(
        app.post(
            "/api/v1/customers",
            &json!({"name": "无主客户", "owner": "0190b8a0-0000-7000-8000-000000000000"}),
        )
        .await,
    )
    .await;
    assert_eq!((status, code.as_str()), (422, "unknown_reference"));
    let (status, _, _) = api_error(
        app.post("/api/v1/customers", &json!({"name": "分级", "tier": "S"}))
            .await,
    )
    .await;
    assert_eq!(status, 422);
    assert_eq!(app.count("customers").await, 1);
}

#[tokio::test]
async fn ownership_history_keeps_every_owner_with_the_hand_over_reason() {
    let app = spawn_app().await;
    let leaver = app.user("离职的销售", &["sales"]).await;
    let heir = app.user("接手的销售", &["sales"]).await;
    let customer = app.customer("华南智造", Some(&leaver)).await;

    let updated = ok_json(
        app.patch(
            &format!("/api/v1/customers/{customer}"),
            &json!({"owner": heir, "owner_reason": "leaver_handover"}),
        )
        .await,
    )
    .await;
    assert_eq!(updated["owner"], heir.as_str());

    let history = ok_json(
        app.get(&format!("/api/v1/customers/{customer}/owners"))
            .await,
    )
    .await;
    let items = history["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{history}");
    assert_eq!(items[0]["user"], leaver.as_str());
    assert_eq!(items[0]["reason"], "created");
    assert!(items[0]["until"].is_string(), "{history}");
    assert_eq!(items[1]["user"], heir.as_str());
    assert_eq!(items[1]["reason"], "leaver_handover");
    assert!(items[1]["until"].is_null(), "{history}");
    assert_eq!(items[0]["until"], items[1]["from"]);
    assert!(history["next_cursor"].is_null());

    // Setting the same owner again is no hand-over; a bad reason changes nothing.
    app.patch(
        &format!("/api/v1/customers/{customer}"),
        &json!({"owner": heir}),
    )
    .await;
    let (status, _, message) = api_error(
        app.patch(
            &format!("/api/v1/customers/{customer}"),
            &json!({"owner": leaver, "owner_reason": "whim"}),
        )
        .await,
    )
    .await;
    assert_eq!(status, 422);
    assert!(message.contains("owner_reason"), "{message}");
    let (status, code, _) = api_error(
        app.patch(
            &format!("/api/v1/customers/{customer}"),
            &json!({"owner": "0190b8a0-0000-7000-8000-000000000000"}),
        )
        .await,
    )
    .await;
    assert_eq!((status, code.as_str()), (422, "unknown_reference"));
    let history = ok_json(
        app.get(&format!("/api/v1/customers/{customer}/owners"))
            .await,
    )
    .await;
    assert_eq!(history["items"].as_array().unwrap().len(), 2, "{history}");
    assert_eq!(app.count("customer_owners").await, 2);
    let current = ok_json(app.get(&format!("/api/v1/customers/{customer}")).await).await;
    assert_eq!(current["owner"], heir.as_str());

    let (status, _, _) = api_error(
        app.get("/api/v1/customers/0190b8a0-0000-7000-8000-000000000000/owners")
            .await,
    )
    .await;
    assert_eq!(status, 404);
}

// ---------------------------------------------------------------- leads and deals

#[tokio::test]
async fn deals_hold_integer_fen_default_to_cny_and_start_in_the_first_stage() {
    let app = spawn_app().await;
    let rep = app.user("李明", &["sales"]).await;
    let customer = app.customer("华南智造", Some(&rep)).await;
    let other_customer = app.customer("北方重工", None).await;

    let lead = app
        .create(
            "/api/v1/leads",
            json!({"customer": customer, "source_channel": "抖音表单", "owner": rep}),
        )
        .await;
    assert_eq!(lead["source_channel"], "抖音表单");
    assert_eq!(lead["status"], "open");
    let leads = ok_json(app.get(&format!("/api/v1/leads?customer={customer}")).await).await;
    assert_eq!(ids(&leads), vec![lead["id"].as_str().unwrap().to_string()]);

    let deal = app
        .create(
            "/api/v1/deals",
            json!({
                "customer": customer,
                "lead": lead["id"],
                "title": "产线改造一期",
                "amount_fen": 12_345_678_900_i64,
                "region": "华南",
                "product_line": "MES",
                "owner": rep
            }),
        )
        .await;
    let id = deal["id"].as_str().unwrap().to_string();
    assert_eq!(deal["amount_fen"], json!(12_345_678_900_i64));
    assert!(deal["amount_fen"].is_i64());
    assert_eq!(deal["currency"], "CNY");
    assert_eq!(deal["stage"], "初步咨询");
    assert_eq!(deal["lead"], lead["id"]);
    let history = deal["stage_history"].as_array().unwrap();
    assert_eq!(history.len(), 1);
    assert!(history[0]["from"].is_null());
    assert_eq!(history[0]["to"], "初步咨询");
    assert_eq!(app.count("deal_stage_history").await, 1);

    let fetched = ok_json(app.get(&format!("/api/v1/deals/{id}")).await).await;
    assert_eq!(fetched, deal);

    let patched = ok_json(
        app.patch(
            &format!("/api/v1/deals/{id}"),
            &json!({"amount_fen": 500, "currency": "USD", "title": "产线改造"}),
        )
        .await,
    )
    .await;
    assert_eq!(patched["amount_fen"], 500);
    assert_eq!(patched["currency"], "USD");
    assert_eq!(patched["stage"], "初步咨询");

    let eur_deal = app
        .create(
            "/api/v1/deals",
            json!({"customer": other_customer, "title": "备件", "currency": "EUR"}),
        )
        .await;
    assert_eq!(eur_deal["amount_fen"], 0);
    assert_eq!(eur_deal["currency"], "EUR");
    let listed = ok_json(app.get(&format!("/api/v1/deals?customer={customer}")).await).await;
    assert_eq!(ids(&listed), vec![id.clone()]);
    assert!(
        listed["items"][0].get("stage_history").is_none(),
        "lists leave the history out"
    );
}

#[tokio::test]
async fn bad_deals_and_leads_are_rejected_and_write_nothing() {
    let app = spawn_app().await;
    let customer = app.customer("华南智造", None).await;
    let other = app.customer("北方重工", None).await;
    let lead_of_other = app
        .create(
            "/api/v1/leads",
            json!({"customer": other, "source_channel": "公众号菜单"}),
        )
        .await;
    let deals = app.count("deals").await;
    let history = app.count("deal_stage_history").await;
    let leads = app.count("leads").await;

    let cases = [
        (
            json!({"customer": customer, "title": "甲", "currency": "cny"}),
            "invalid_input",
        ),
        (
            json!({"customer": customer, "title": "甲", "currency": "RMB1"}),
            "invalid_input",
        ),
        (
            json!({"customer": customer, "title": "甲", "amount_fen": -1}),
            "invalid_input",
        ),
        (
            json!({"customer": customer, "title": "甲", "amount_fen": 1.5}),
            "invalid_input",
        ),
        (
            json!({"customer": customer, "title": "甲", "amount_fen": "100"}),
            "invalid_input",
        ),
        (
            json!({"customer": customer, "title": "甲", "amount_fen": 100_000_000_000_001_i64}),
            "invalid_input",
        ),
        (json!({"customer": customer}), "invalid_input"),
        (
            json!({"customer": customer, "title": "x".repeat(201)}),
            "invalid_input",
        ),
        (
            json!({"customer": "0190b8a0-0000-7000-8000-000000000000", "title": "甲"}),
            "unknown_reference",
        ),
        (
            json!({"customer": customer, "title": "甲", "owner": "0190b8a0-0000-7000-8000-000000000000"}),
            "unknown_reference",
        ),
        (
            json!({"customer": customer, "title": "甲", "lead": lead_of_other["id"]}),
            "unknown_reference",
        ),
    ];
    for (body, want) in cases {
        let (status, code, _) = api_error(app.post("/api/v1/deals", &body).await).await;
        assert_eq!((status, code.as_str()), (422, want), "{body}");
    }
    assert_eq!(app.count("deals").await, deals);
    assert_eq!(app.count("deal_stage_history").await, history);

    for body in [
        json!({"customer": "0190b8a0-0000-7000-8000-000000000000", "source_channel": "抖音表单"}),
        json!({"customer": customer, "source_channel": ""}),
        json!({"customer": customer}),
    ] {
        let (status, _, _) = api_error(app.post("/api/v1/leads", &body).await).await;
        assert_eq!(status, 422, "{body}");
    }
    assert_eq!(app.count("leads").await, leads);

    // A bad PATCH leaves the deal as it was.
    let deal = app
        .create(
            "/api/v1/deals",
            json!({"customer": customer, "title": "甲", "amount_fen": 100}),
        )
        .await;
    let path = format!("/api/v1/deals/{}", deal["id"].as_str().unwrap());
    let (status, _, _) = api_error(
        app.patch(&path, &json!({"title": "乙", "amount_fen": -5}))
            .await,
    )
    .await;
    assert_eq!(status, 422);
    let now = ok_json(app.get(&path).await).await;
    assert_eq!(
        (now["title"].as_str(), now["amount_fen"].as_i64()),
        (Some("甲"), Some(100))
    );
}

// ---------------------------------------------------------------- paging

#[tokio::test]
async fn lists_page_with_limit_and_cursor_without_duplicates() {
    let app = spawn_app().await;
    let mut created = Vec::new();
    for i in 0..5 {
        created.push(app.user(&format!("用户{i}"), &["sales"]).await);
    }

    let mut seen = Vec::new();
    let mut sizes = Vec::new();
    let mut path = "/api/v1/users?limit=2".to_string();
    loop {
        let page = ok_json(app.get(&path).await).await;
        let page_ids = ids(&page);
        sizes.push(page_ids.len());
        seen.extend(page_ids);
        match page["next_cursor"].as_str() {
            Some(c) => path = format!("/api/v1/users?limit=2&cursor={c}"),
            None => {
                assert!(page["next_cursor"].is_null());
                break;
            }
        }
        assert!(sizes.len() < 10, "paging does not end");
    }
    assert_eq!(sizes, vec![2, 2, 1]);
    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), 5, "no duplicates: {seen:?}");
    assert_eq!(sorted(seen), sorted(created.clone()));

    // A page that exactly holds the rest says there is no more.
    let whole = ok_json(app.get("/api/v1/users?limit=5").await).await;
    assert_eq!(ids(&whole).len(), 5);
    assert!(whole["next_cursor"].is_null());
    let max = ok_json(app.get("/api/v1/users?limit=500").await).await;
    assert_eq!(ids(&max).len(), 5);

    for query in [
        "limit=0",
        "limit=501",
        "limit=-1",
        "limit=two",
        "cursor=garbage",
        "cursor=%21%21%21",
        // Valid base64 of something this server never issued.
        "cursor=aGVsbG8",
    ] {
        for list in ["users", "customers", "deals", "leads"] {
            let (status, code, _) =
                api_error(app.get(&format!("/api/v1/{list}?{query}")).await).await;
            assert_eq!(
                (status, code.as_str()),
                (422, "invalid_input"),
                "{list}?{query}"
            );
        }
    }

    // Customers page the same way.
    for i in 0..3 {
        app.customer(&format!("客户{i}"), None).await;
    }
    let first = ok_json(app.get("/api/v1/customers?limit=2").await).await;
    let cursor = first["next_cursor"].as_str().expect("more customers");
    let second = ok_json(
        app.get(&format!("/api/v1/customers?limit=2&cursor={cursor}"))
            .await,
    )
    .await;
    assert_eq!(ids(&second).len(), 1);
    assert!(second["next_cursor"].is_null());
    assert!(!ids(&first).contains(&ids(&second)[0]));
}

// ---------------------------------------------------------------- bad input on writes

#[tokio::test]
async fn malformed_mistyped_unknown_and_over_long_writes_are_rejected_and_write_nothing() {
    let app = spawn_app().await;
    let customer = app.customer("华南智造", None).await;
    let users = app.count("users").await;
    let customers = app.count("customers").await;
    let deals = app.count("deals").await;
    let audit = app.count("audit_log").await;

    for path in ["/api/v1/users", "/api/v1/customers", "/api/v1/deals"] {
        // Cut off after a field the endpoint knows (an unknown one is refused first, 422).
        let truncated = if path.ends_with("deals") {
            "{\"title\": \"甲\","
        } else {
            "{\"name\": \"甲\","
        };
        for body in ["{]", "not json", "", truncated] {
            let (status, code, _) = api_error(post_raw(&app, path, body).await).await;
            assert_eq!(
                (status, code.as_str()),
                (400, "malformed_body"),
                "{path} {body:?}"
            );
        }
        let res = app
            .client
            .post(app.url(path))
            .bearer_auth(&app.key)
            .header("content-type", "text/plain")
            .body("{\"name\": \"甲\"}")
            .send()
            .await
            .unwrap();
        let (status, code, _) = api_error(res).await;
        assert_eq!((status, code.as_str()), (400, "malformed_body"), "{path}");
    }

    let name_101 = "名".repeat(101);
    let cases = [
        ("/api/v1/users", json!({"name": 5}), "name"),
        ("/api/v1/users", json!({}), "name"),
        (
            "/api/v1/users",
            json!({"name": "甲", "nickname": "x"}),
            "nickname",
        ),
        ("/api/v1/users", json!({"name": name_101}), "100"),
        ("/api/v1/users", json!({"name": "   "}), "name"),
        ("/api/v1/users", json!({"name": "甲\u{0007}"}), "control"),
        (
            "/api/v1/users",
            json!({"name": "甲", "roles": "sales"}),
            "roles",
        ),
        ("/api/v1/users", json!(["甲"]), ""),
        ("/api/v1/customers", json!({"name": 5}), "name"),
        (
            "/api/v1/customers",
            json!({"name": "甲", "contacts": [{"name": "乙", "mobile": "13800138000"}]}),
            "mobile",
        ),
        ("/api/v1/customers", json!({"name": "x".repeat(201)}), "200"),
        (
            "/api/v1/deals",
            json!({"customer": customer, "title": "甲", "stage": "赢单"}),
            "stage",
        ),
        (
            "/api/v1/deals",
            json!({"customer": 5, "title": "甲"}),
            "customer",
        ),
    ];
    for (path, body, mentions) in cases {
        let (status, code, message) = api_error(app.post(path, &body).await).await;
        assert_eq!(
            (status, code.as_str()),
            (422, "invalid_input"),
            "{path} {body}"
        );
        assert!(message.contains(mentions), "{path} {body}: {message}");
    }

    assert_eq!(app.count("users").await, users);
    assert_eq!(app.count("customers").await, customers);
    assert_eq!(app.count("contacts").await, 1);
    assert_eq!(app.count("deals").await, deals);
    assert_eq!(app.count("audit_log").await, audit);

    // The boundary itself is accepted.
    let ok = app
        .create("/api/v1/users", json!({"name": "名".repeat(100)}))
        .await;
    assert_eq!(ok["name"].as_str().unwrap().chars().count(), 100);

    // PATCH: same checks, and the record stays as it was.
    let id = ok["id"].as_str().unwrap();
    for body in [
        json!({"name": name_101}),
        json!({"name": 5}),
        json!({"name": "乙", "email": "x@example.com"}),
    ] {
        let (status, _, _) =
            api_error(app.patch(&format!("/api/v1/users/{id}"), &body).await).await;
        assert_eq!(status, 422, "{body}");
    }
    let after = ok_json(app.get(&format!("/api/v1/users/{id}")).await).await;
    assert_eq!(after["name"], ok["name"]);
    let (status, code, _) = api_error(
        app.patch(
            "/api/v1/users/0190b8a0-0000-7000-8000-000000000000",
            &json!({"name": "乙"}),
        )
        .await,
    )
    .await;
    assert_eq!((status, code.as_str()), (404, "not_found"));
}

#[tokio::test]
async fn a_body_over_the_limit_is_refused_and_writes_nothing() {
    let app = spawn_app_with("max_body_bytes = 2048").await;
    let users = app.count("users").await;
    let res = app
        .post(
            "/api/v1/users",
            &json!({"name": "甲", "department": "x".repeat(4096)}),
        )
        .await;
    let (status, code, _) = api_error(res).await;
    assert_eq!((status, code.as_str()), (413, "payload_too_large"));
    assert_eq!(app.count("users").await, users);
    // Just under the limit is read normally (and then judged on its fields).
    let res = app
        .post(
            "/api/v1/users",
            &json!({"name": "甲", "department": "x".repeat(1500)}),
        )
        .await;
    assert_eq!(api_error(res).await.0, 422);
}

// ---------------------------------------------------------------- authentication and roles

#[tokio::test]
async fn missing_wrong_revoked_and_expired_keys_are_unauthenticated() {
    let app = spawn_app().await;
    let user = app.user("李明", &["sales"]).await;
    let users = app.count("users").await;
    let body = json!({"name": "甲"});

    let (status, code, message) =
        api_error(send(&app, None, Method::GET, "/api/v1/users", None).await).await;
    assert_eq!((status, code.as_str()), (401, "unauthenticated"));
    assert!(message.contains("Authorization"), "{message}");
    let (status, _, _) =
        api_error(send(&app, None, Method::POST, "/api/v1/users", Some(&body)).await).await;
    assert_eq!(status, 401);

    let res = app
        .client
        .get(app.url("/api/v1/users"))
        .header("authorization", format!("Basic {}", app.key))
        .send()
        .await
        .unwrap();
    assert_eq!(api_error(res).await.0, 401);

    let mut wrong = app.key.clone();
    wrong.pop();
    wrong.push(if app.key.ends_with('A') { 'B' } else { 'A' });
    let long = "clk_x".repeat(100);
    for bad in [wrong.as_str(), "clk_", "not-a-key", long.as_str()] {
        let (status, code, _) =
            api_error(send(&app, Some(bad), Method::GET, "/api/v1/users", None).await).await;
        assert_eq!((status, code.as_str()), (401, "unauthenticated"), "{bad}");
    }

    let (revoked_id, revoked) = apikeys::create(
        &app.db,
        now_ms(),
        NewApiKey {
            org_id: app.org_id.clone(),
            name: "soon revoked".into(),
            role: ApiKeyRole::Admin,
            expires_at_ms: None,
        },
    )
    .await
    .unwrap();
    let res = send(
        &app,
        Some(&revoked),
        Method::GET,
        &format!("/api/v1/users/{user}"),
        None,
    )
    .await;
    assert_eq!(res.status(), 200, "valid before it is revoked");
    assert!(apikeys::revoke(&app.db, now_ms(), &revoked_id)
        .await
        .unwrap());
    let (status, code, message) = api_error(
        send(
            &app,
            Some(&revoked),
            Method::GET,
            &format!("/api/v1/users/{user}"),
            None,
        )
        .await,
    )
    .await;
    assert_eq!((status, code.as_str()), (401, "unauthenticated"));
    assert!(message.contains("revoked"), "{message}");
    let res = send(
        &app,
        Some(&revoked),
        Method::POST,
        "/api/v1/users",
        Some(&body),
    )
    .await;
    assert_eq!(api_error(res).await.0, 401);

    let (expired_id, expired) = apikeys::create(
        &app.db,
        now_ms(),
        NewApiKey {
            org_id: app.org_id.clone(),
            name: "short-lived".into(),
            role: ApiKeyRole::Admin,
            expires_at_ms: Some(now_ms() + 3_600_000),
        },
    )
    .await
    .unwrap();
    let res = send(&app, Some(&expired), Method::GET, "/api/v1/users", None).await;
    assert_eq!(res.status(), 200, "valid before it expires");
    sqlx::query("UPDATE api_keys SET expires_at = $1 WHERE id = $2")
        .bind(now_ms() - 1_000)
        .bind(&expired_id)
        .execute(&app.db.pool)
        .await
        .unwrap();
    let (status, code, message) =
        api_error(send(&app, Some(&expired), Method::GET, "/api/v1/users", None).await).await;
    assert_eq!((status, code.as_str()), (401, "unauthenticated"));
    assert!(message.contains("expired"), "{message}");
    let res = send(
        &app,
        Some(&expired),
        Method::POST,
        "/api/v1/users",
        Some(&body),
    )
    .await;
    assert_eq!(api_error(res).await.0, 401);

    assert_eq!(app.count("users").await, users, "no write got through");
}

#[tokio::test]
async fn a_read_only_key_reads_but_may_not_write_and_an_integration_key_writes() {
    let app = spawn_app().await;
    let user = app.user("李明", &["sales"]).await;
    let customer = app.customer("华南智造", Some(&user)).await;
    let read_only = app.key_with_role(ApiKeyRole::ReadOnly).await;
    let integration = app.key_with_role(ApiKeyRole::Integration).await;

    for path in [
        "/api/v1/users".to_string(),
        format!("/api/v1/users/{user}"),
        "/api/v1/customers".to_string(),
        format!("/api/v1/customers/{customer}"),
        format!("/api/v1/customers/{customer}/owners"),
        "/api/v1/deals".to_string(),
        "/api/v1/leads".to_string(),
    ] {
        let res = send(&app, Some(&read_only), Method::GET, &path, None).await;
        assert_eq!(res.status(), 200, "read-only GET {path}");
    }

    let users = app.count("users").await;
    let customers = app.count("customers").await;
    let contacts = app.count("contacts").await;
    let deals = app.count("deals").await;
    let leads = app.count("leads").await;
    let writes = [
        (
            Method::POST,
            "/api/v1/users".to_string(),
            json!({"name": "甲"}),
        ),
        (
            Method::PATCH,
            format!("/api/v1/users/{user}"),
            json!({"name": "改名"}),
        ),
        (
            Method::POST,
            "/api/v1/customers".to_string(),
            json!({"name": "乙"}),
        ),
        (
            Method::PATCH,
            format!("/api/v1/customers/{customer}"),
            json!({"name": "改名"}),
        ),
        (
            Method::POST,
            format!("/api/v1/customers/{customer}/contacts"),
            json!({"name": "丙"}),
        ),
        (
            Method::POST,
            "/api/v1/deals".to_string(),
            json!({"customer": customer, "title": "丁"}),
        ),
        (
            Method::POST,
            "/api/v1/leads".to_string(),
            json!({"customer": customer, "source_channel": "抖音表单"}),
        ),
    ];
    for (method, path, body) in &writes {
        let (status, code, message) =
            api_error(send(&app, Some(&read_only), method.clone(), path, Some(body)).await).await;
        assert_eq!(
            (status, code.as_str()),
            (403, "forbidden"),
            "{method} {path}"
        );
        assert!(message.contains("read-only"), "{message}");
    }
    assert_eq!(app.count("users").await, users);
    assert_eq!(app.count("customers").await, customers);
    assert_eq!(app.count("contacts").await, contacts);
    assert_eq!(app.count("deals").await, deals);
    assert_eq!(app.count("leads").await, leads);
    let unchanged = ok_json(app.get(&format!("/api/v1/users/{user}")).await).await;
    assert_eq!(unchanged["name"], "李明");

    for (method, path, body) in &writes {
        let res = send(&app, Some(&integration), method.clone(), path, Some(body)).await;
        let status = res.status().as_u16();
        let text = res.text().await.unwrap();
        let want = if *method == Method::PATCH { 200 } else { 201 };
        assert_eq!(status, want, "integration {method} {path}: {text}");
    }
    assert_eq!(app.count("users").await, users + 1);
    assert_eq!(app.count("deals").await, deals + 1);
}

// ---------------------------------------------------------------- organisations

#[tokio::test]
async fn a_key_of_another_organisation_sees_nothing_of_this_one() {
    let app = spawn_app().await;
    let user = app
        .create(
            "/api/v1/users",
            json!({"name": "李明", "roles": ["sales"], "identities": [{"platform": "wecom", "kind": "userid", "value": "liming"}]}),
        )
        .await;
    let user = user["id"].as_str().unwrap().to_string();
    let customer = app.customer("华南智造", Some(&user)).await;
    let deal = app
        .create(
            "/api/v1/deals",
            json!({"customer": customer, "title": "一期"}),
        )
        .await;
    let deal = deal["id"].as_str().unwrap().to_string();
    let (other_org, other) = other_org_admin_key(&app, "other-co").await;
    let key = Some(other.as_str());

    for path in [
        format!("/api/v1/users/{user}"),
        format!("/api/v1/customers/{customer}"),
        format!("/api/v1/customers/{customer}/owners"),
        format!("/api/v1/deals/{deal}"),
    ] {
        let (status, code, _) = api_error(send(&app, key, Method::GET, &path, None).await).await;
        assert_eq!((status, code.as_str()), (404, "not_found"), "{path}");
    }
    for path in [
        "/api/v1/users",
        "/api/v1/customers",
        "/api/v1/deals",
        "/api/v1/leads",
        "/api/v1/customers?phone=13800138000",
        "/api/v1/users?platform=wecom&identity_kind=userid&identity_value=liming",
    ] {
        let page = ok_json(send(&app, key, Method::GET, path, None).await).await;
        assert_eq!(page["items"], json!([]), "{path}");
        assert!(page["next_cursor"].is_null());
    }

    // Nor can it change or point at this organisation's records.
    let res = send(
        &app,
        key,
        Method::PATCH,
        &format!("/api/v1/users/{user}"),
        Some(&json!({"name": "被改"})),
    )
    .await;
    assert_eq!(api_error(res).await.0, 404);
    let res = send(
        &app,
        key,
        Method::PATCH,
        &format!("/api/v1/customers/{customer}"),
        Some(&json!({"name": "被改"})),
    )
    .await;
    assert_eq!(api_error(res).await.0, 404);
    let res = send(
        &app,
        key,
        Method::POST,
        &format!("/api/v1/customers/{customer}/contacts"),
        Some(&json!({"name": "外人"})),
    )
    .await;
    assert_eq!(api_error(res).await.0, 404);
    for (path, body) in [
        ("/api/v1/customers", json!({"name": "乙", "owner": user})),
        ("/api/v1/users", json!({"name": "乙", "superiors": [user]})),
        (
            "/api/v1/deals",
            json!({"customer": customer, "title": "乙"}),
        ),
        (
            "/api/v1/leads",
            json!({"customer": customer, "source_channel": "抖音表单"}),
        ),
    ] {
        let (status, code, _) =
            api_error(send(&app, key, Method::POST, path, Some(&body)).await).await;
        assert_eq!(
            (status, code.as_str()),
            (422, "unknown_reference"),
            "{path}"
        );
    }
    let mine = ok_json(app.get(&format!("/api/v1/users/{user}")).await).await;
    assert_eq!(mine["name"], "李明");

    // Identities are unique per organisation, not across them.
    let res = send(
        &app,
        key,
        Method::POST,
        "/api/v1/users",
        Some(&json!({"name": "另一个李明", "identities": [{"platform": "wecom", "kind": "userid", "value": "liming"}]})),
    )
    .await;
    assert_eq!(res.status(), 201);
    let theirs: Value = res.json().await.unwrap();
    assert_eq!(theirs["org_id"], other_org.as_str());
    let ours = ok_json(app.get("/api/v1/users").await).await;
    assert_eq!(ids(&ours), vec![user.clone()]);
    let found = ok_json(
        app.get("/api/v1/users?platform=wecom&identity_kind=userid&identity_value=liming")
            .await,
    )
    .await;
    assert_eq!(ids(&found), vec![user]);
}
