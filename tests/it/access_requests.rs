//! Permission requests (issue 15 item 5): the approver chain; a request reaches the right
//! approver as a card, whose one tap approves it and creates a grant that expires; a
//! refusal; nobody but the approver (or an admin key) decides; the circuit breaker pauses
//! a member at the request over the limit within the window — not when the requests are
//! spread out — sends the security officers a card, and a lift (audited) lets the member
//! ask again; an integration key must name the person asking.

use closeloop::access::{Actor, ApiKeyRole};
use closeloop::approvals::{approver_for, grants_for, Approver, Why};
use closeloop::clock::Clock;
use serde_json::{json, Value};

use crate::helpers::{error_code, spawn_app, spawn_app_clocked, ManualClock, TestApp};
use crate::parity::{Chat, Received};

const PAUSED: &str = "权限申请过于频繁，已暂停，请联系安全官";

async fn member(app: &TestApp, name: &str, roles: &[&str], superiors: &[&str]) -> String {
    app.create(
        "/api/v1/users",
        json!({"name": name, "roles": roles, "superiors": superiors}),
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_string()
}

async fn patch_user(app: &TestApp, id: &str, body: Value) {
    let res = app.patch(&format!("/api/v1/users/{id}"), &body).await;
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
}

async fn approver(app: &TestApp, requester: &str) -> Option<Approver> {
    let mut tx = app.db.begin().await.unwrap();
    let a = approver_for(&mut tx, &app.org_id, requester).await.unwrap();
    tx.rollback().await.unwrap();
    a
}

fn is(user: &str, why: Why) -> Option<Approver> {
    Some(Approver {
        user_id: user.to_string(),
        why,
    })
}

async fn ask(app: &TestApp, actor: &str, kind: &str, target: &str) -> reqwest::Response {
    app.post(
        "/api/v1/access-requests",
        &json!({"actor": actor, "kind": kind, "target": target, "reason": "客户要求回电，需查看手机号"}),
    )
    .await
}

/// A team on WeCom's emulator, synced into a server on a clock the test moves.
async fn on_wecom(
    members: &[(&str, &str, Option<&str>)],
) -> (Chat, std::sync::Arc<ManualClock>, TestApp) {
    let chat = Chat::start("wecom").await;
    chat.set_members(members);
    let clock = ManualClock::new(chrono::Utc::now().timestamp_millis());
    let app = spawn_app_clocked(&chat.config(), clock.clone()).await;
    chat.connect(&app);
    app.worker.drain().await.unwrap();
    (chat, clock, app)
}

/// The closeloop user of a chat member (from the start-up directory sync).
async fn id_of(app: &TestApp, chat: &Chat, m: &str) -> String {
    let i = chat.identity(m);
    let page: Value = app
        .get(&format!(
            "/api/v1/users?platform={}&identity_kind={}&identity_value={m}",
            i["platform"].as_str().unwrap(),
            i["kind"].as_str().unwrap()
        ))
        .await
        .json()
        .await
        .unwrap();
    page["items"][0]["id"].as_str().unwrap().to_string()
}

async fn with_key(app: &TestApp, key: &str, path: &str, body: Value) -> reqwest::Response {
    app.client
        .post(app.url(path))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// The first direct superior; past one who left, the next level up; a chain that comes
/// back on itself ends; then the security officer; never the requester.
#[tokio::test]
async fn the_approver_is_the_first_active_superior_up_the_chain_else_the_security_officer() {
    let app = spawn_app().await;
    let officer = member(&app, "安全官", &["security"], &[]).await;
    let director = member(&app, "总监", &["manager"], &[]).await;
    let boss = member(&app, "王经理", &["manager"], &[&director]).await;
    let other = member(&app, "李经理", &["manager"], &[]).await;
    let rep = member(&app, "李明", &["sales"], &[&boss]).await;

    assert_eq!(approver(&app, &rep).await, is(&boss, Why::DirectSuperior));
    assert_eq!(
        approver(&app, &boss).await,
        is(&director, Why::DirectSuperior)
    );
    // Nobody above: the security officer.
    assert_eq!(approver(&app, &director).await, is(&officer, Why::Security));
    // Never the requester: an officer without superiors and no other officer has nobody.
    assert_eq!(approver(&app, &officer).await, None);

    // Two direct superiors: the first in the directory's order.
    let two = member(&app, "张三", &["sales"], &[&boss, &other]).await;
    let first = std::cmp::min(&boss, &other).clone();
    assert_eq!(approver(&app, &two).await, is(&first, Why::DirectSuperior));

    // The direct superior left: the superior's superior.
    patch_user(&app, &boss, json!({"status": "left"})).await;
    assert_eq!(
        approver(&app, &rep).await,
        is(&director, Why::HigherSuperior)
    );
    // Both left: the security officer.
    patch_user(&app, &director, json!({"status": "left"})).await;
    assert_eq!(approver(&app, &rep).await, is(&officer, Why::Security));

    // A cycle of members who left (王经理 → 总监 → 王经理) ends at the officer.
    patch_user(&app, &director, json!({"superiors": [boss]})).await;
    assert_eq!(approver(&app, &rep).await, is(&officer, Why::Security));
    // A chain that comes back to the requester ends too.
    patch_user(&app, &director, json!({"superiors": [rep]})).await;
    assert_eq!(approver(&app, &rep).await, is(&officer, Why::Security));

    // No officer either: nobody, and a request is refused with nothing written.
    patch_user(&app, &officer, json!({"roles": []})).await;
    assert_eq!(approver(&app, &rep).await, None);
    let res = ask(&app, &rep, "field", "phone").await;
    let (status, code, _) = error_code(res).await;
    assert_eq!((status, code.as_str()), (409, "conflict"));
    assert_eq!(app.count("access_requests").await, 0);
    app.stop().await;
}

/// The rep's request reaches 王经理 (their direct superior from the WeCom address book) as
/// a card; his tap on 同意 approves it, creates the grant (a field reveal: 7 days), the
/// card shows who approved, and the rep hears of it by a card. The grant ends on time.
#[tokio::test]
async fn a_request_reaches_the_approver_whose_tap_approves_it_and_the_grant_expires() {
    let (chat, clock, app) = on_wecom(&[
        ("wangjl", "王经理", None),
        ("liming", "李明", Some("wangjl")),
    ])
    .await;
    let boss = id_of(&app, &chat, "wangjl").await;
    let rep = id_of(&app, &chat, "liming").await;

    let res = ask(&app, &rep, "field", "phone").await;
    assert_eq!(res.status(), 201);
    let r: Value = res.json().await.unwrap();
    assert_eq!(r["approver"], boss.as_str());
    assert_eq!(r["approver_why"], "direct_superior");
    assert_eq!(r["status"], "pending");
    assert_eq!(r["reason"], "客户要求回电，需查看手机号");
    let id = r["id"].as_str().unwrap().to_string();
    app.worker.drain().await.unwrap();

    let got: Vec<Received> = chat
        .cards_to("wangjl")
        .into_iter()
        .filter(|c| c.title.contains("权限申请"))
        .collect();
    assert_eq!(got.len(), 1, "{got:?}");
    let card = &got[0];
    assert_eq!(card.actions.len(), 2, "{card:?}");
    assert!(card.actions[0].starts_with("approve:"), "{card:?}");
    assert!(card.actions[1].starts_with("refuse:"), "{card:?}");
    let (content,): (String,) =
        sqlx::query_as("SELECT content_enc FROM cards WHERE purpose = 'access.request'")
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    let shown = closeloop::cards::stored(
        &app.cipher,
        &content,
        closeloop::chat::event::Platform::Wecom,
    )
    .unwrap();
    let fields: Vec<String> = shown
        .fields
        .iter()
        .map(|(l, v)| format!("{l}:{v}"))
        .collect();
    assert!(fields.contains(&"申请人:李明".to_string()), "{fields:?}");
    assert!(
        fields.contains(&"申请内容:查看字段：电话".to_string()),
        "{fields:?}"
    );
    assert!(
        fields.contains(&"审批身份:直属上级".to_string()),
        "{fields:?}"
    );
    chat.press(&app, clock.now_ms(), "wangjl", card, &card.actions[0])
        .await;
    app.worker.drain().await.unwrap();
    let page: Value = app
        .get(&format!("/api/v1/access-requests?requester={rep}"))
        .await
        .json()
        .await
        .unwrap();
    let decided = &page["items"][0];
    assert_eq!(decided["id"], id.as_str());
    assert_eq!(decided["status"], "approved", "{decided}");
    assert_eq!(decided["decided_by"], boss.as_str());
    assert!(
        chat.updates().iter().any(|u| u.contains("已由王经理同意")),
        "{:?}",
        chat.updates()
    );
    let told: Vec<Received> = chat
        .cards_to("liming")
        .into_iter()
        .filter(|c| c.title.contains("权限申请"))
        .collect();
    assert_eq!(told.len(), 1, "{told:?}");
    assert!(told[0].title.contains("同意"), "{told:?}");

    // The grant: for the API and for the policy, until it expires after 7 days.
    let grants: Value = app
        .get(&format!("/api/v1/access-grants?user={rep}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(grants.as_array().unwrap().len(), 1, "{grants}");
    assert_eq!(grants[0]["kind"], "field");
    assert_eq!(grants[0]["target"], "phone");
    assert_eq!(grants[0]["active"], true);
    let now = clock.now_ms();
    let mut conn = app.db.pool.acquire().await.unwrap();
    let held = grants_for(&mut conn, &app.org_id, &rep, now).await.unwrap();
    assert_eq!(held.len(), 1);
    assert_eq!(
        (held[0].kind.as_str(), held[0].target.as_str()),
        ("field", "phone")
    );
    let expires = held[0].expires_at.unwrap();
    assert_eq!(expires, now + 7 * 86_400_000);
    assert_eq!(
        grants_for(&mut conn, &app.org_id, &rep, expires - 1)
            .await
            .unwrap()
            .len(),
        1
    );
    assert!(grants_for(&mut conn, &app.org_id, &rep, expires)
        .await
        .unwrap()
        .is_empty());
    drop(conn);

    for action in ["access.request", "access.approve"] {
        assert_eq!(
            app.count(&format!("audit_log WHERE action = '{action}'"))
                .await,
            1,
            "{action}"
        );
    }
    let details: Vec<(String,)> =
        sqlx::query_as("SELECT detail FROM audit_log WHERE action LIKE 'access.%'")
            .fetch_all(&app.db.pool)
            .await
            .unwrap();
    assert!(
        details.iter().all(|(d,)| !d.contains("手机号")),
        "{details:?}"
    );
    // The reason is encrypted at rest.
    let (sealed,): (String,) = sqlx::query_as("SELECT reason_enc FROM access_requests")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert!(!sealed.contains("手机号"));
    app.stop().await;
}

/// Only the approver (or an admin key acting for nobody) decides; a refusal creates no
/// grant; a decided request is not decided again; the pages say so in Chinese.
#[tokio::test]
async fn only_the_approver_decides_and_a_refusal_grants_nothing() {
    let app = spawn_app().await;
    let boss = member(&app, "王经理", &["manager"], &[]).await;
    let other = member(&app, "李经理", &["manager"], &[]).await;
    let rep = member(&app, "李明", &["sales"], &[&boss]).await;
    let customer = app.customer("华南智造", Some(&other)).await;
    let integration = app.key_with_role(ApiKeyRole::Integration).await;

    let r: Value = ask(&app, &rep, "customer", &customer)
        .await
        .json()
        .await
        .unwrap();
    let id = r["id"].as_str().unwrap().to_string();
    let decision = format!("/api/v1/access-requests/{id}/decision");
    // Someone else, and an integration key acting for nobody: refused, nothing changes.
    let res = with_key(
        &app,
        &integration,
        &decision,
        json!({"approve": true, "actor": other}),
    )
    .await;
    assert_eq!(res.status(), 403);
    let res = with_key(&app, &integration, &decision, json!({"approve": true})).await;
    assert_eq!(res.status(), 403);
    assert_eq!(app.count("access_grants").await, 0);

    // The pages: the approver sees 同意 and 拒绝; another member is told they may not look.
    let path = format!("/web/access-requests/{id}");
    let (status, html) = app.page_as(&boss, &path).await;
    assert_eq!(status, 200);
    assert!(
        html.contains("value=\"approve\"") && html.contains("拒绝"),
        "{html}"
    );
    assert!(html.contains("客户：华南智造"), "{html}");
    let (status, html) = app.page_as(&other, &path).await;
    assert_eq!(status, 403);
    assert!(html.contains("只有申请人和审批人可以查看此申请"), "{html}");
    let (status, html) = app.page_as(&rep, &path).await;
    assert_eq!(status, 200);
    assert!(
        html.contains("待审批") && !html.contains("value=\"approve\""),
        "{html}"
    );
    // Posting the form as someone else: a Chinese 403, nothing decided.
    let (status, html) = post_form(&app, &other, &format!("{path}/decision"), "approve").await;
    assert_eq!(status, 403);
    assert!(html.contains("只有该申请的审批人可以同意或拒绝"), "{html}");

    // The approver refuses on the page.
    let (status, _) = post_form(&app, &boss, &format!("{path}/decision"), "refuse").await;
    assert_eq!(status, 303);
    let got: Value = app
        .get(&format!("/api/v1/access-requests?approver={boss}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(got["items"][0]["status"], "refused");
    assert_eq!(got["items"][0]["decided_by"], boss.as_str());
    assert_eq!(app.count("access_grants").await, 0);
    assert_eq!(
        app.count("audit_log WHERE action = 'access.refuse'").await,
        1
    );
    assert_eq!(
        app.count(&format!(
            "cards WHERE purpose = 'access.decision' AND recipient_user_id = '{rep}'"
        ))
        .await,
        1
    );
    // Decided once only.
    let res = app.post(&decision, &json!({"approve": true})).await;
    assert_eq!(res.status(), 409);
    let (_, html) = app.page_as(&rep, "/web/access-requests").await;
    assert!(html.contains("已拒绝"), "{html}");

    // An admin key acting for nobody may decide: a region for 30 days.
    let r: Value = ask(&app, &rep, "region", "华南")
        .await
        .json()
        .await
        .unwrap();
    let res = app
        .post(
            &format!(
                "/api/v1/access-requests/{}/decision",
                r["id"].as_str().unwrap()
            ),
            &json!({"approve": true}),
        )
        .await;
    assert_eq!(res.status(), 200);
    let r: Value = res.json().await.unwrap();
    assert_eq!(r["status"], "approved");
    let grants: Value = app
        .get(&format!("/api/v1/access-grants?user={rep}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(grants.as_array().unwrap().len(), 1, "{grants}");
    assert_eq!(grants[0]["target"], "华南");

    // The requester withdraws a pending request (the page's 撤回申请); nobody else may, and
    // it is then not decided.
    let r: Value = ask(&app, &rep, "field", "amount")
        .await
        .json()
        .await
        .unwrap();
    let id = r["id"].as_str().unwrap().to_string();
    let res = with_key(
        &app,
        &integration,
        &format!("/api/v1/access-requests/{id}/withdraw"),
        json!({"actor": boss}),
    )
    .await;
    assert_eq!(res.status(), 403);
    let path = format!("/web/access-requests/{id}");
    let (_, html) = app.page_as(&rep, &path).await;
    assert!(html.contains("撤回申请"), "{html}");
    let (status, _) = post_form(&app, &rep, &format!("{path}/withdraw"), "").await;
    assert_eq!(status, 303);
    let got: Value = app
        .get("/api/v1/access-requests?status=withdrawn")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(got["items"][0]["id"], id.as_str());
    assert_eq!(got["items"][0]["decided_by"], rep.as_str());
    let res = app
        .post(
            &format!("/api/v1/access-requests/{id}/decision"),
            &json!({"approve": true}),
        )
        .await;
    assert_eq!(res.status(), 409);
    assert_eq!(
        app.count("audit_log WHERE action = 'access.withdraw'")
            .await,
        1
    );
    assert_eq!(app.count("access_grants").await, 1);
    let (_, html) = app.page_as(&rep, "/web/access-requests").await;
    assert!(html.contains("已撤回"), "{html}");
    app.stop().await;
}

async fn post_form(app: &TestApp, user: &str, path: &str, decision: &str) -> (u16, String) {
    let (cookie, csrf) = closeloop::http::pages::session::create(
        &app.db,
        chrono::Utc::now().timestamp_millis(),
        &app.org_id,
        user,
        "dev",
    )
    .await
    .unwrap();
    let res = crate::sidebar::no_redirects()
        .post(app.url(path))
        .header(
            "cookie",
            format!("{}={cookie}", closeloop::http::pages::session::COOKIE),
        )
        .form(&[("csrf_token", csrf.as_str()), ("decision", decision)])
        .send()
        .await
        .unwrap();
    (res.status().as_u16(), res.text().await.unwrap())
}

/// The sixth request within the hour is refused and pauses the member; the officer gets a
/// card; while paused every request is refused; only a security officer (or an admin key)
/// lifts it, audited; then the member may ask again. Spread over more than the window,
/// the same number of requests is fine.
#[tokio::test]
async fn the_sixth_request_within_the_hour_pauses_the_member_until_an_officer_lifts_it() {
    let clock = ManualClock::new(chrono::Utc::now().timestamp_millis());
    let app = spawn_app_clocked("", clock.clone()).await;
    let officer = member(&app, "安全官", &["security"], &[]).await;
    let boss = member(&app, "王经理", &["manager"], &[]).await;
    let rep = member(&app, "李明", &["sales"], &[&boss]).await;
    let patient = member(&app, "张三", &["sales"], &[&boss]).await;
    let integration = app.key_with_role(ApiKeyRole::Integration).await;

    for _ in 0..5 {
        assert_eq!(ask(&app, &rep, "field", "email").await.status(), 201);
        clock.advance(std::time::Duration::from_secs(60));
    }
    let (status, code, message) = error_code(ask(&app, &rep, "field", "email").await).await;
    assert_eq!((status, code.as_str()), (403, "forbidden"));
    assert!(message.contains(PAUSED), "{message}");
    assert_eq!(app.count("access_requests").await, 5);
    assert_eq!(app.count("request_pauses WHERE lifted_at IS NULL").await, 1);
    assert_eq!(
        app.count("audit_log WHERE action = 'access.pause'").await,
        1
    );
    assert_eq!(
        app.count(&format!(
            "cards WHERE purpose = 'access.pause' AND recipient_user_id = '{officer}'"
        ))
        .await,
        1
    );
    // Paused: refused even once the window has passed; no second pause.
    clock.advance(std::time::Duration::from_secs(7200));
    let (status, _, message) = error_code(ask(&app, &rep, "region", "华南").await).await;
    assert_eq!(status, 403);
    assert!(message.contains(PAUSED), "{message}");
    assert_eq!(app.count("request_pauses").await, 1);
    let (status, html) = app.page_as(&rep, "/web/access-requests").await;
    assert_eq!(status, 200);
    assert!(html.contains(PAUSED), "{html}");

    // Not the rep's manager, nor an integration key for nobody: only an officer.
    let lift = format!("/api/v1/request-pauses/{rep}/lift");
    assert_eq!(
        with_key(&app, &integration, &lift, json!({"actor": boss}))
            .await
            .status(),
        403
    );
    assert_eq!(
        with_key(&app, &integration, &lift, json!({}))
            .await
            .status(),
        403
    );
    assert_eq!(
        with_key(&app, &integration, &lift, json!({"actor": officer}))
            .await
            .status(),
        204
    );
    let (actor_id, detail): (String, String) =
        sqlx::query_as("SELECT actor_id, detail FROM audit_log WHERE action = 'access.lift'")
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    assert!(detail.contains(&officer), "{detail}");
    assert!(detail.contains(&rep), "{detail}");
    assert!(!actor_id.is_empty());
    // Lifted: nothing more to lift, and the member may ask again.
    assert_eq!(
        with_key(&app, &integration, &lift, json!({"actor": officer}))
            .await
            .status(),
        404
    );
    assert_eq!(ask(&app, &rep, "field", "email").await.status(), 201);

    // Spread out: five, then more than an hour later five more — never paused.
    for round in 0..2 {
        for _ in 0..5 {
            assert_eq!(
                ask(&app, &patient, "field", "amount").await.status(),
                201,
                "round {round}"
            );
        }
        clock.advance(std::time::Duration::from_secs(3601));
    }
    assert_eq!(
        app.count(&format!("request_pauses WHERE user_id = '{patient}'"))
            .await,
        0
    );

    // The rule set decides the numbers: a limit of 2 within 10 minutes.
    let mut rules = closeloop::rules::RuleSet::default();
    rules.access_requests.limit = 2;
    rules.access_requests.window = std::time::Duration::from_secs(600);
    closeloop::rules::store::import(
        &app.db,
        clock.now_ms(),
        &app.org_id,
        &Actor::cli(),
        &rules.to_toml(),
    )
    .await
    .unwrap();
    assert_eq!(ask(&app, &patient, "field", "amount").await.status(), 201);
    assert_eq!(ask(&app, &patient, "field", "amount").await.status(), 201);
    assert_eq!(ask(&app, &patient, "field", "amount").await.status(), 403);
    app.stop().await;
}

/// The officer's card lifts the pause with one tap on WeCom (audited as the officer).
#[tokio::test]
async fn the_officer_lifts_a_pause_with_one_tap() {
    let (chat, clock, app) = on_wecom(&[
        ("anquan", "安全官", None),
        ("wangjl", "王经理", None),
        ("liming", "李明", Some("wangjl")),
    ])
    .await;
    let officer = id_of(&app, &chat, "anquan").await;
    let rep = id_of(&app, &chat, "liming").await;
    patch_user(&app, &officer, json!({"roles": ["security"]})).await;
    for _ in 0..5 {
        assert_eq!(
            ask(&app, &rep, "field", "decision_chain").await.status(),
            201
        );
    }
    assert_eq!(
        ask(&app, &rep, "field", "decision_chain").await.status(),
        403
    );
    app.worker.drain().await.unwrap();
    let got: Vec<Received> = chat
        .cards_to("anquan")
        .into_iter()
        .filter(|c| c.title.contains("暂停"))
        .collect();
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(got[0].actions[0].starts_with("lift:"), "{got:?}");
    chat.press(
        &app,
        clock.now_ms(),
        "anquan",
        &got[0],
        &got[0].actions[0].clone(),
    )
    .await;
    app.worker.drain().await.unwrap();
    assert_eq!(app.count("request_pauses WHERE lifted_at IS NULL").await, 0);
    assert_eq!(
        app.count(&format!(
            "audit_log WHERE action = 'access.lift' AND actor_id = '{officer}'"
        ))
        .await,
        1
    );
    assert!(
        chat.updates().iter().any(|u| u.contains("已由安全官恢复")),
        "{:?}",
        chat.updates()
    );
    assert_eq!(
        ask(&app, &rep, "field", "decision_chain").await.status(),
        201
    );
    app.stop().await;
}

/// Bad input changes nothing: no `actor`, an unknown kind or field, a customer that does
/// not exist, an empty reason.
#[tokio::test]
async fn a_request_names_its_person_and_a_known_target() {
    let app = spawn_app().await;
    let boss = member(&app, "王经理", &["manager"], &[]).await;
    let rep = member(&app, "李明", &["sales"], &[&boss]).await;
    let integration = app.key_with_role(ApiKeyRole::Integration).await;
    let res = with_key(
        &app,
        &integration,
        "/api/v1/access-requests",
        json!({"kind": "field", "target": "phone", "reason": "回电"}),
    )
    .await;
    let (status, code, message) = error_code(res).await;
    assert_eq!((status, code.as_str()), (422, "invalid_input"));
    assert!(message.contains("actor"), "{message}");
    for (kind, target, want) in [
        ("salary", "x", "invalid_input"),
        ("field", "salary", "invalid_input"),
        ("customer", "no-such-customer", "unknown_reference"),
        ("region", "", "invalid_input"),
    ] {
        let (status, code, _) = error_code(ask(&app, &rep, kind, target).await).await;
        assert_eq!((status, code.as_str()), (422, want), "{kind} {target}");
    }
    let res = app
        .post(
            "/api/v1/access-requests",
            &json!({"actor": rep, "kind": "field", "target": "phone", "reason": "  "}),
        )
        .await;
    assert_eq!(res.status(), 422);
    assert_eq!(app.count("access_requests").await, 0);
    assert_eq!(app.count("audit_log WHERE action LIKE 'access.%'").await, 0);
    // With the person named, the integration key may ask for them.
    let res = with_key(
        &app,
        &integration,
        "/api/v1/access-requests",
        json!({"actor": rep, "kind": "field", "target": "phone", "reason": "回电"}),
    )
    .await;
    assert_eq!(res.status(), 201);
    app.stop().await;
}

/// The page: the customer page links to it naming the customer; the member's form post
/// sends the request (to the approver's card) and lists it in Chinese; the request over
/// the limit is refused on the page in Chinese, and the page then says the member is paused.
#[tokio::test]
async fn a_member_asks_from_the_page_opened_from_a_customer() {
    let app = spawn_app().await;
    let boss = member(&app, "王经理", &["manager"], &[]).await;
    let rep = member(&app, "李明", &["sales"], &[&boss]).await;
    // The boss's customer in the rep's region: the rep reads it and asks for more.
    let res = app
        .patch(&format!("/api/v1/users/{rep}"), &json!({"region": "华南"}))
        .await;
    assert_eq!(res.status(), 200);
    let customer = app
        .create(
            "/api/v1/customers",
            json!({"name": "华南智造", "owner": boss, "region": "华南"}),
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (_, html) = app
        .page_as(&rep, &format!("/sidebar/customers/{customer}"))
        .await;
    let link = format!("/web/access-requests?customer={customer}");
    assert!(html.contains(&link), "{html}");
    let (status, html) = app.page_as(&rep, &link).await;
    assert_eq!(status, 200);
    assert!(html.contains("客户：华南智造"), "{html}");
    assert!(
        html.contains("申请查看字段") && html.contains("申请区域"),
        "{html}"
    );

    let (cookie, csrf) = closeloop::http::pages::session::create(
        &app.db,
        chrono::Utc::now().timestamp_millis(),
        &app.org_id,
        &rep,
        "dev",
    )
    .await
    .unwrap();
    let cookie = format!("{}={cookie}", closeloop::http::pages::session::COOKIE);
    let send = |fields: Vec<(&'static str, String)>| {
        let cookie = cookie.clone();
        let url = app.url("/web/access-requests");
        async move {
            let res = crate::sidebar::no_redirects()
                .post(url)
                .header("cookie", cookie)
                .form(&fields)
                .send()
                .await
                .unwrap();
            (res.status().as_u16(), res.text().await.unwrap())
        }
    };
    // Without the CSRF token: refused, nothing written.
    let (status, _) = send(vec![
        ("kind", "customer".into()),
        ("target", customer.clone()),
        ("reason", "协助跟进".into()),
    ])
    .await;
    assert_eq!(status, 403);
    assert_eq!(app.count("access_requests").await, 0);
    let ask = |kind: &'static str, target: String| {
        send(vec![
            ("csrf_token", csrf.clone()),
            ("kind", kind.into()),
            ("target", target),
            ("reason", "协助跟进".into()),
        ])
    };
    let (status, _) = ask("customer", customer.clone()).await;
    assert_eq!(status, 303);
    let r: Value = app
        .get(&format!("/api/v1/access-requests?requester={rep}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(r["items"][0]["kind"], "customer");
    assert_eq!(r["items"][0]["target"], customer.as_str());
    assert_eq!(r["items"][0]["approver"], boss.as_str());
    assert_eq!(
        app.count(&format!(
            "cards WHERE purpose = 'access.request' AND recipient_user_id = '{boss}'"
        ))
        .await,
        1
    );
    let (_, html) = app.page_as(&rep, "/web/access-requests").await;
    assert!(
        html.contains("客户：华南智造") && html.contains("待审批"),
        "{html}"
    );
    let (_, html) = app.page_as(&boss, "/web/access-requests").await;
    assert!(html.contains("待我审批") && html.contains("李明"), "{html}");

    for _ in 0..4 {
        assert_eq!(ask("field", "email".into()).await.0, 303);
    }
    let (status, html) = ask("region", "华南".into()).await;
    assert_eq!(status, 403);
    assert!(html.contains(PAUSED), "{html}");
    let (_, html) = app.page_as(&rep, "/web/access-requests").await;
    assert!(html.contains(PAUSED), "{html}");
    app.stop().await;
}
