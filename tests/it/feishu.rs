//! Feishu event callbacks end to end: pushed by the Feishu emulator signed and encrypted as
//! Feishu does (or plaintext with only the Verification Token), into the inbox.

use std::time::Duration;

use closeloop::emulator::feishu::{signed_request, Emulator, EventTarget};
use closeloop::platform::feishu::crypto::{
    FeishuCrypto, NONCE_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER,
};
use serde_json::{json, Value};

use crate::helpers::{error_code, spawn_app_with, TestApp};

const APP_ID: &str = "cli_a1b2c3d4e5f6";
const SECRET: &str = "feishu-app-secret";
const TOKEN: &str = "vtoken-123";
const KEY: &str = "Fq3BucfwoJQMjXxrwi3I6fFildR0NgmI";

fn feishu_toml(encrypt_key: Option<&str>, skew: &str) -> String {
    let key = encrypt_key
        .map(|k| format!("encrypt_key = \"{k}\"\n"))
        .unwrap_or_default();
    format!(
        "[feishu]\napp_id = \"{APP_ID}\"\napp_secret = \"{SECRET}\"\n\
         verification_token = \"{TOKEN}\"\n{key}max_clock_skew = \"{skew}\"\n\
         api_base = \"http://127.0.0.1:9\"\n"
    )
}

struct Setup {
    app: TestApp,
    emu: Emulator,
    target: EventTarget,
}

async fn setup(encrypt_key: Option<&str>) -> Setup {
    let app = spawn_app_with(&feishu_toml(encrypt_key, "5m")).await;
    let emu = Emulator::start(APP_ID, SECRET).await;
    emu.set_retry_delays(vec![Duration::from_millis(10); 2]);
    let target = EventTarget {
        url: app.url("/callback/feishu"),
        encrypt_key: encrypt_key.map(str::to_owned),
        verification_token: TOKEN.into(),
    };
    Setup { app, emu, target }
}

fn user_created(emu: &Emulator, token: &str, user_id: &str) -> Value {
    emu.event(
        "contact.user.created_v3",
        token,
        json!({"object": {"user_id": user_id, "open_id": "ou_1", "name": "张三"}}),
    )
}

async fn inbox(app: &TestApp) -> Vec<Value> {
    let page: Value = app
        .get("/api/v1/platform-events?platform=feishu")
        .await
        .json()
        .await
        .unwrap();
    page["items"].as_array().unwrap().clone()
}

/// POSTs `body` with the given headers to `/callback/feishu`.
async fn post(app: &TestApp, headers: &[(&str, String)], body: String) -> reqwest::Response {
    let mut req = app
        .client
        .post(app.url("/callback/feishu"))
        .header("content-type", "application/json")
        .body(body);
    for (name, value) in headers {
        req = req.header(*name, value);
    }
    req.send().await.unwrap()
}

fn now() -> String {
    chrono::Utc::now().timestamp().to_string()
}

#[tokio::test]
async fn url_verification_answers_the_challenge_with_and_without_an_encrypt_key() {
    for key in [Some(KEY), None] {
        let s = setup(key).await;
        let check =
            json!({"challenge": "ajls384kdjx98XX", "token": TOKEN, "type": "url_verification"});
        let attempts = s.emu.push(&s.target, &check).await;
        assert_eq!(attempts.len(), 1, "{key:?}");
        assert_eq!(attempts[0].status, 200);
        assert_eq!(
            attempts[0].body,
            Some(json!({"challenge": "ajls384kdjx98XX"}))
        );
        // The console's check may come unsigned; the encryption (or token) vouches for it.
        let (_, body) = signed_request(&s.target, &check, &now(), "n");
        let res = post(&s.app, &[], body).await;
        assert_eq!(res.status(), 200);
        // A wrong token is refused.
        let wrong = json!({"challenge": "x", "token": "nope", "type": "url_verification"});
        let (headers, body) = signed_request(&s.target, &wrong, &now(), "n");
        let res = post(&s.app, &headers, body).await;
        let (status, code, _) = error_code(res).await;
        assert_eq!((status, code.as_str()), (401, "bad_token"));
        assert!(inbox(&s.app).await.is_empty());
    }
}

#[tokio::test]
async fn an_event_is_stored_once_even_when_pushed_again() {
    for key in [Some(KEY), None] {
        let s = setup(key).await;
        let event = user_created(&s.emu, TOKEN, "e33ggbyz");
        let first = s.emu.push(&s.target, &event).await;
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].status, 200);
        assert_eq!(first[0].body, Some(json!({"msg": "success"})));
        // Feishu re-pushes the same event_id (freshly encrypted): acknowledged, not stored again.
        assert_eq!(s.emu.push(&s.target, &event).await[0].status, 200);
        let items = inbox(&s.app).await;
        assert_eq!(items.len(), 1, "{key:?}");
        assert_eq!(items[0]["event_type"], "contact.user.created_v3");
        assert_eq!(items[0]["dedupe_key"], event["header"]["event_id"]);
        assert_eq!(items[0]["status"], "received");
        assert_eq!(items[0]["summary"]["type"], "user_created");
        assert_eq!(items[0]["summary"]["user_id"], "e33ggbyz");
        // Another event is another row; an unmodelled one is kept, marked ignored.
        let other = s.emu.event(
            "vc.meeting.recording_ready_v1",
            TOKEN,
            json!({"meeting": {"meeting_no": "235812466"}}),
        );
        assert_eq!(s.emu.push(&s.target, &other).await[0].status, 200);
        let items = inbox(&s.app).await;
        assert_eq!(items.len(), 2);
        assert!(items.iter().any(
            |i| i["event_type"] == "vc.meeting.recording_ready_v1" && i["status"] == "ignored"
        ));
        let (body,): (String,) = sqlx::query_as("SELECT body FROM inbox LIMIT 1")
            .fetch_one(&s.app.db.pool)
            .await
            .unwrap();
        assert!(!body.contains("e33ggbyz"), "inbox body stored in the clear");
    }
}

#[tokio::test]
async fn card_clicks_are_stored_and_a_click_on_an_unknown_card_is_answered_with_a_toast() {
    let s = setup(Some(KEY)).await;
    let click = s.emu.event(
        "card.action.trigger",
        TOKEN,
        json!({"operator": {"user_id": "u1", "open_id": "ou_1"}, "token": "c-secret-token",
               "action": {"tag": "button", "value": {"key": "accept:card42"}}}),
    );
    let attempts = s.emu.push(&s.target, &click).await;
    assert_eq!(attempts[0].status, 200);
    let answer = attempts[0].body.as_ref().unwrap();
    assert_eq!(answer["toast"]["type"], "error");
    assert!(answer.get("card").is_none(), "no card to show: {answer}");
    let items = inbox(&s.app).await;
    assert_eq!(items[0]["summary"]["type"], "card_action");
    assert_eq!(items[0]["summary"]["action_key"], "accept:card42");
    let listed = s
        .app
        .get("/api/v1/platform-events")
        .await
        .text()
        .await
        .unwrap();
    assert!(!listed.contains("c-secret-token"), "update token leaked");
}

#[tokio::test]
async fn bad_signatures_stale_and_malformed_pushes_are_refused_and_not_written() {
    let s = setup(Some(KEY)).await;
    let event = user_created(&s.emu, TOKEN, "u1");
    let ts = now();
    let (headers, body) = signed_request(&s.target, &event, &ts, "n1");

    // Wrong signature.
    let mut bad = headers.clone();
    bad[2].1 = "0".repeat(64);
    let (status, code, _) = error_code(post(&s.app, &bad, body.clone()).await).await;
    assert_eq!((status, code.as_str()), (401, "bad_signature"));

    // The same body, re-serialised: the signature covers the raw bytes.
    let respaced = body.replacen("\":\"", "\": \"", 1);
    let (status, code, _) = error_code(post(&s.app, &headers, respaced).await).await;
    assert_eq!((status, code.as_str()), (401, "bad_signature"));

    // Stale: correctly signed ten minutes ago.
    let old = (chrono::Utc::now().timestamp() - 600).to_string();
    let (stale_headers, stale_body) = signed_request(&s.target, &event, &old, "n2");
    let (status, code, _) = error_code(post(&s.app, &stale_headers, stale_body).await).await;
    assert_eq!((status, code.as_str()), (401, "stale_timestamp"));

    // No signature headers on an event.
    let (status, code, _) = error_code(post(&s.app, &[], body.clone()).await).await;
    assert_eq!((status, code.as_str()), (401, "missing_signature"));

    // Wrong Verification Token inside a correctly signed body.
    let forged = user_created(&s.emu, "another-token", "u1");
    let (h, b) = signed_request(&s.target, &forged, &ts, "n4");
    let (status, code, _) = error_code(post(&s.app, &h, b).await).await;
    assert_eq!((status, code.as_str()), (401, "bad_token"));

    // Oversized.
    let crypto = FeishuCrypto::new(KEY).unwrap();
    let huge = json!({"encrypt": "A".repeat(100 * 1024)}).to_string();
    let sig = crypto.signature(&ts, "n5", huge.as_bytes());
    let h = [
        (TIMESTAMP_HEADER, ts.clone()),
        (NONCE_HEADER, "n5".to_string()),
        (SIGNATURE_HEADER, sig),
    ];
    assert_eq!(post(&s.app, &h, huge).await.status(), 413);

    assert_eq!(s.app.count("inbox").await, 0);
    // And the genuine push still goes through.
    assert_eq!(post(&s.app, &headers, body).await.status(), 200);
    assert_eq!(s.app.count("inbox").await, 1);

    // Correctly signed garbage that is not an encrypted envelope: Feishu's (the signature
    // says so), only unreadable — kept in quarantine, once per body, never processed.
    for garbage in ["not json", "{}", r#"{"encrypt":"!!"}"#] {
        for nonce in ["n3", "n3b"] {
            let sig = crypto.signature(&ts, nonce, garbage.as_bytes());
            let h = [
                (TIMESTAMP_HEADER, ts.clone()),
                (NONCE_HEADER, nonce.to_string()),
                (SIGNATURE_HEADER, sig),
            ];
            let res = post(&s.app, &h, garbage.to_string()).await;
            assert_eq!(res.status(), 200, "{garbage}");
        }
    }
    assert_eq!(
        s.app
            .count("inbox WHERE status = 'quarantined' AND event_type = 'unparsable'")
            .await,
        3
    );
    assert_eq!(
        s.app.count("jobs WHERE kind = 'inbox.process'").await,
        1,
        "only the genuine push is processed"
    );
}

#[tokio::test]
async fn without_an_encrypt_key_the_token_is_the_check() {
    let s = setup(None).await;
    let forged = user_created(&s.emu, "another-token", "u1");
    let (status, code, _) = error_code(post(&s.app, &[], forged.to_string()).await).await;
    assert_eq!((status, code.as_str()), (401, "bad_token"));
    for garbage in ["not json", "[]", r#"{"schema":"2.0"}"#] {
        let res = post(&s.app, &[], garbage.to_string()).await;
        assert_eq!(res.status(), 400, "{garbage}");
    }
    assert_eq!(s.app.count("inbox").await, 0);
}

#[tokio::test]
async fn signed_but_unparsable_events_are_quarantined_once() {
    let s = setup(Some(KEY)).await;
    // A 2.0 header with a known type but a body that lacks the user: signed, so kept.
    let broken = s
        .emu
        .event("contact.user.created_v3", TOKEN, json!({"object": {}}));
    assert_eq!(s.emu.push(&s.target, &broken).await[0].status, 200);
    assert_eq!(s.emu.push(&s.target, &broken).await[0].status, 200);
    // Signed, decryptable, but not JSON at all.
    let crypto = FeishuCrypto::new(KEY).unwrap();
    let body = json!({"encrypt": crypto.encrypt_random("not json")}).to_string();
    let ts = now();
    let h = [
        (TIMESTAMP_HEADER, ts.clone()),
        (NONCE_HEADER, "n".to_string()),
        (
            SIGNATURE_HEADER,
            crypto.signature(&ts, "n", body.as_bytes()),
        ),
    ];
    assert_eq!(post(&s.app, &h, body).await.status(), 200);
    let items = inbox(&s.app).await;
    assert_eq!(items.len(), 2);
    assert!(items.iter().all(|i| i["status"] == "quarantined"));
}

#[tokio::test]
async fn unacknowledged_pushes_are_retried() {
    // No `[feishu]` section: closeloop answers 404, so the emulator pushes again.
    let app = spawn_app_with("").await;
    let emu = Emulator::start(APP_ID, SECRET).await;
    emu.set_retry_delays(vec![Duration::from_millis(5); 3]);
    let target = EventTarget {
        url: app.url("/callback/feishu"),
        encrypt_key: Some(KEY.into()),
        verification_token: TOKEN.into(),
    };
    let attempts = emu.push(&target, &user_created(&emu, TOKEN, "u1")).await;
    assert_eq!(attempts.len(), 4);
    assert!(attempts.iter().all(|a| a.status == 404));
    assert_eq!(emu.deliveries().len(), 4);
}

fn quick_ask() -> closeloop::cards::Card {
    use closeloop::cards::{Button, ButtonStyle, Card};
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

fn click(emu: &Emulator, card: &str, user_id: &str, action: &str) -> Value {
    emu.event(
        "card.action.trigger",
        TOKEN,
        json!({"operator": {"user_id": user_id, "open_id": format!("ou_{user_id}")},
               "token": "c-delayed-update-token",
               "action": {"tag": "button", "value": {"key": format!("{action}:{card}")}},
               "context": {"open_message_id": "om_x", "open_chat_id": "oc_x"}}),
    )
}

/// An app on the Feishu emulator (Encrypt Key on) and where the emulator pushes to it.
async fn emulated_app() -> (Emulator, TestApp, EventTarget) {
    let emu = Emulator::start(APP_ID, SECRET).await;
    emu.set_retry_delays(vec![Duration::from_millis(10); 2]);
    let app = spawn_app_with(
        &feishu_toml(Some(KEY), "5m").replace("http://127.0.0.1:9", &emu.base_url()),
    )
    .await;
    let target = EventTarget {
        url: app.url("/callback/feishu"),
        encrypt_key: Some(KEY.into()),
        verification_token: TOKEN.into(),
    };
    (emu, app, target)
}

/// Queues a quick-ask card for `recipient` (a closeloop user id) and delivers it.
async fn send_quick_ask(app: &TestApp, recipient: &str) -> String {
    let mut tx = app.db.begin().await.unwrap();
    let id = closeloop::cards::send(
        &mut tx,
        &app.cipher,
        chrono::Utc::now().timestamp_millis(),
        &app.org_id,
        recipient,
        "quick_ask",
        Some("ask:1"),
        &quick_ask(),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    app.worker.drain().await.unwrap();
    id
}

#[tokio::test]
async fn cards_go_out_as_interactive_messages_and_the_recipients_click_updates_them_once() {
    let (emu, app, target) = emulated_app().await;
    let presales = app
        .create(
            "/api/v1/users",
            json!({"name": "张工", "identities": [{"platform": "feishu", "kind": "user_id", "value": "zhanggong"}]}),
        )
        .await;
    app.create(
        "/api/v1/users",
        json!({"name": "王芳", "identities": [{"platform": "feishu", "kind": "user_id", "value": "wangfang"}]}),
    )
    .await;
    let id = send_quick_ask(&app, presales["id"].as_str().unwrap()).await;

    let sent = emu.messages();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0]["receive_id"], "zhanggong");
    assert_eq!(sent[0]["receive_id_type"], "user_id");
    assert_eq!(sent[0]["msg_type"], "interactive");
    let card: Value = serde_json::from_str(sent[0]["content"].as_str().unwrap()).unwrap();
    assert_eq!(card["config"]["update_multi"], true);
    assert_eq!(
        card["elements"][2]["actions"][1]["value"]["key"],
        format!("reject:{id}")
    );
    let (status, message_id): (String, Option<String>) =
        sqlx::query_as("SELECT status, platform_message_id FROM cards WHERE id = $1")
            .bind(&id)
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    assert_eq!(status, "sent");
    assert_eq!(message_id.as_deref(), sent[0]["message_id"].as_str());

    // A forwarded card clicked by someone else changes nothing.
    let stranger = emu
        .push(&target, &click(&emu, &id, "wangfang", "accept"))
        .await;
    assert_eq!(stranger[0].status, 200);
    let answer = stranger[0].body.clone().unwrap();
    assert_eq!(answer["toast"]["type"], "warning");
    assert!(answer.get("card").is_none(), "the card stays as it is");
    app.worker.drain().await.unwrap();
    let (clicked,): (Option<String>,) =
        sqlx::query_as("SELECT clicked_action FROM cards WHERE id = $1")
            .bind(&id)
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    assert_eq!(clicked, None);

    // The recipient's click, re-pushed by Feishu, then a second (different) click.
    let first = click(&emu, &id, "zhanggong", "accept");
    // The recipient: answered within the request with the card as it now looks.
    let answer = emu.push(&target, &first).await;
    assert_eq!(answer[0].status, 200);
    let body = answer[0].body.clone().unwrap();
    assert_eq!(body["toast"]["type"], "success");
    assert_eq!(body["card"]["type"], "raw");
    let shown = body["card"]["data"].to_string();
    assert!(shown.contains("已接受"), "{shown}");
    assert!(!shown.contains("\"button\""), "{shown}");
    assert_eq!(body["card"]["data"]["config"]["update_multi"], true);
    assert_eq!(emu.push(&target, &first).await[0].status, 200);
    app.worker.drain().await.unwrap();
    // A later press on the other button is answered with the first choice.
    let double = click(&emu, &id, "zhanggong", "reject");
    let again = emu.push(&target, &double).await;
    assert_eq!(again[0].status, 200);
    let body = again[0].body.clone().unwrap();
    assert_eq!(body["toast"]["content"], "您已选择过：已接受");
    assert!(body["card"]["data"].to_string().contains("已接受"));
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
    let updates = emu.message_updates();
    assert_eq!(updates.len(), 1, "one update for one answer");
    assert_eq!(updates[0]["message_id"], sent[0]["message_id"]);
    let updated: Value = serde_json::from_str(updates[0]["content"].as_str().unwrap()).unwrap();
    assert!(updated.to_string().contains("已接受"));
    assert!(!updated.to_string().contains("\"button\""));
}

/// An app that may not read user ids gets clicks naming the member by `open_id` only: a
/// member known by that open_id is still the card's recipient.
#[tokio::test]
async fn a_click_naming_only_the_open_id_is_the_recipients() {
    let (emu, app, target) = emulated_app().await;
    let presales = app
        .create(
            "/api/v1/users",
            json!({"name": "张工", "identities": [
                {"platform": "feishu", "kind": "user_id", "value": "zhanggong"},
                {"platform": "feishu", "kind": "open_id", "value": "ou_zhanggong"}]}),
        )
        .await;
    let id = send_quick_ask(&app, presales["id"].as_str().unwrap()).await;
    let press = emu.event(
        "card.action.trigger",
        TOKEN,
        json!({"operator": {"open_id": "ou_zhanggong"}, "token": "c-t",
               "action": {"tag": "button", "value": {"key": format!("accept:{id}")}}}),
    );
    let answer = emu.push(&target, &press).await;
    assert_eq!(answer[0].body.as_ref().unwrap()["toast"]["type"], "success");
    app.worker.drain().await.unwrap();
    let (clicked,): (Option<String>,) =
        sqlx::query_as("SELECT clicked_action FROM cards WHERE id = $1")
            .bind(&id)
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    assert_eq!(clicked.as_deref(), Some("accept"));
}

#[tokio::test]
async fn a_contact_event_brings_the_member_and_their_leader_in_from_the_directory() {
    let emu = Emulator::start(APP_ID, SECRET).await;
    let app = spawn_app_with(
        &feishu_toml(Some(KEY), "5m").replace("http://127.0.0.1:9", &emu.base_url()),
    )
    .await;
    // The start-up directory sync runs first, on an empty address book, so it does not race
    // the events' processing for the same members.
    app.worker.drain().await.unwrap();
    emu.set_directory(
        vec![json!({"department_id": "D1", "name": "华南销售部"})],
        vec![
            json!({"user_id": "liming", "name": "李明", "department_ids": ["D1"], "leader_user_id": "wangzong"}),
            json!({"user_id": "wangzong", "name": "王总", "department_ids": ["0"]}),
        ],
    );
    let target = EventTarget {
        url: app.url("/callback/feishu"),
        encrypt_key: Some(KEY.into()),
        verification_token: TOKEN.into(),
    };
    for user in ["wangzong", "liming"] {
        let event = user_created(&emu, TOKEN, user);
        assert_eq!(emu.push(&target, &event).await[0].status, 200);
    }
    app.worker.drain().await.unwrap();
    let items = inbox(&app).await;
    assert!(
        items.iter().all(|i| i["status"] == "processed"),
        "{items:?}"
    );
    let (name,): (String,) = sqlx::query_as(
        "SELECT u.name FROM users u JOIN user_identities i ON i.user_id = u.id \
         WHERE i.platform = 'feishu' AND i.kind = 'user_id' AND i.value = 'liming'",
    )
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(name, "李明");
    let (superior,): (String,) = sqlx::query_as(
        "SELECT b.name FROM user_superiors s \
         JOIN user_identities i ON i.user_id = s.user_id AND i.platform = 'feishu' AND i.value = 'liming' \
         JOIN users b ON b.id = s.superior_id",
    )
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(superior, "王总");
}

// --- H5 sign-in (OAuth) and h5sdk.config -------------------------------------------------

const PUBLIC: &str = "https://closeloop.example.com";

async fn h5_app(emu: &Emulator) -> TestApp {
    spawn_app_with(&format!(
        "public_url = \"{PUBLIC}\"\n[feishu]\napp_id = \"{APP_ID}\"\napp_secret = \"{SECRET}\"\n\
         verification_token = \"{TOKEN}\"\napi_base = \"{base}\"\naccounts_base = \"{base}\"\n",
        base = emu.base_url()
    ))
    .await
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

async fn feishu_user(app: &TestApp, name: &str, kind: &str, value: &str) -> String {
    let user = app
        .create(
            "/api/v1/users",
            json!({"name": name, "identities": [{"platform": "feishu", "kind": kind, "value": value}]}),
        )
        .await;
    user["id"].as_str().unwrap().to_string()
}

/// `/auth/feishu/login` → the emulated authorize page → the callback's (code, state), and
/// the sign-in cookie the browser keeps for the callback.
async fn authorize(app: &TestApp, emu: &Emulator, next: &str) -> (String, String, String) {
    let client = no_redirects();
    let login = client
        .get(app.url("/auth/feishu/login"))
        .query(&[("next", next)])
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 303);
    let binding = login.headers()["set-cookie"].to_str().unwrap();
    let binding = binding.split(';').next().unwrap().to_string();
    let authorize = login.headers()["location"].to_str().unwrap().to_string();
    assert!(authorize.starts_with(&format!(
        "{}/open-apis/authen/v1/authorize?client_id={APP_ID}",
        emu.base_url()
    )));
    let page = client.get(&authorize).send().await.unwrap();
    assert_eq!(page.status(), 302);
    let back = reqwest::Url::parse(page.headers()["location"].to_str().unwrap()).unwrap();
    assert_eq!(
        back.as_str().split('?').next().unwrap(),
        format!("{PUBLIC}/auth/feishu/callback")
    );
    let param = |k: &str| {
        back.query_pairs()
            .find(|(name, _)| name == k)
            .map(|(_, v)| v.into_owned())
            .unwrap()
    };
    (param("code"), param("state"), binding)
}

async fn callback(app: &TestApp, code: &str, state: &str, binding: &str) -> reqwest::Response {
    no_redirects()
        .get(app.url("/auth/feishu/callback"))
        .query(&[("code", code), ("state", state)])
        .header("cookie", binding)
        .send()
        .await
        .unwrap()
}

fn session_cookie(res: &reqwest::Response) -> String {
    let set = res.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(set.contains("HttpOnly") && set.contains("Secure"), "{set}");
    set.split(';').next().unwrap().to_string()
}

#[tokio::test]
async fn feishu_oauth_signs_a_member_in_and_refuses_bad_codes_and_states() {
    let emu = Emulator::start(APP_ID, SECRET).await;
    let app = h5_app(&emu).await;
    let liming = feishu_user(&app, "李明", "user_id", "fs_liming").await;
    emu.set_current_member(Some(
        json!({"user_id": "fs_liming", "open_id": "ou_liming", "name": "李明"}),
    ));

    let (code, state, binding) = authorize(&app, &emu, "/sidebar?x=1").await;
    let res = callback(&app, &code, &state, &binding).await;
    assert_eq!(res.status(), 303);
    assert_eq!(res.headers()["location"], "/sidebar?x=1");
    let cookie = session_cookie(&res);
    let me: Value = app
        .client
        .get(app.url("/web/session"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["user_id"], liming.as_str());
    let platform: (Option<String>,) = sqlx::query_as("SELECT platform FROM web_sessions")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(platform.0.as_deref(), Some("feishu"));
    let (sessions, users) = (app.count("web_sessions").await, app.count("users").await);

    // The code is single use; a made-up one is refused the same way.
    let (_, fresh_state, binding) = authorize(&app, &emu, "/").await;
    let (status, _, msg) = error_code(callback(&app, &code, &fresh_state, &binding).await).await;
    assert_eq!(status, 422);
    assert!(msg.contains("登录码无效"), "{msg}");
    let (_, fresh_state, binding) = authorize(&app, &emu, "/").await;
    assert_eq!(
        callback(&app, "made-up", &fresh_state, &binding)
            .await
            .status(),
        422
    );
    // An unknown state is refused before the code is even exchanged.
    let exchanges = emu.oauth_token_calls();
    let (unused_code, _, binding) = authorize(&app, &emu, "/").await;
    let (status, _, msg) =
        error_code(callback(&app, &unused_code, "made-up", &binding).await).await;
    assert_eq!(status, 422);
    assert!(msg.contains("登录请求已失效"), "{msg}");
    assert_eq!(emu.oauth_token_calls(), exchanges);
    // A state is single use too.
    let (code2, state2, binding2) = authorize(&app, &emu, "/").await;
    assert_eq!(
        callback(&app, &code2, &state2, &binding2).await.status(),
        303
    );
    let (code3, _, binding) = authorize(&app, &emu, "/").await;
    assert_eq!(
        callback(&app, &code3, &state2, &binding).await.status(),
        422
    );
    assert_eq!(app.count("web_sessions").await, sessions + 1);

    // Someone outside the organisation is turned away, and nothing is created.
    emu.set_current_member(None);
    let (code, state, binding) = authorize(&app, &emu, "/").await;
    let (status, _, msg) = error_code(callback(&app, &code, &state, &binding).await).await;
    assert_eq!(status, 403);
    assert!(msg.contains("未找到您的 closeloop 账号"), "{msg}");
    assert_eq!(app.count("web_sessions").await, sessions + 1);
    assert_eq!(app.count("users").await, users);

    // A member known only by open_id signs in through that identity.
    let wang = feishu_user(&app, "王芳", "open_id", "ou_wangfang").await;
    emu.set_current_member(Some(json!({"open_id": "ou_wangfang", "name": "王芳"})));
    let (code, state, binding) = authorize(&app, &emu, "/").await;
    let res = callback(&app, &code, &state, &binding).await;
    assert_eq!(res.status(), 303);
    let me: Value = app
        .client
        .get(app.url("/web/session"))
        .header("cookie", session_cookie(&res))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["user_id"], wang.as_str());

    // A member who has left is refused, and their old session stops working.
    sqlx::query("UPDATE users SET status = 'left' WHERE id = $1")
        .bind(&liming)
        .execute(&app.db.pool)
        .await
        .unwrap();
    emu.set_current_member(Some(
        json!({"user_id": "fs_liming", "open_id": "ou_liming"}),
    ));
    let (code, state, binding) = authorize(&app, &emu, "/").await;
    let (status, _, msg) = error_code(callback(&app, &code, &state, &binding).await).await;
    assert_eq!(status, 403);
    assert!(msg.contains("已停用"), "{msg}");
    let old = app
        .client
        .get(app.url("/web/session"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(old.status(), 401);
}

#[tokio::test]
async fn feishu_sign_in_reports_an_unreachable_feishu_as_unavailable() {
    use closeloop::emulator::feishu::{Failure, OAUTH_TOKEN};

    let emu = Emulator::start(APP_ID, SECRET).await;
    let app = h5_app(&emu).await;
    feishu_user(&app, "李明", "user_id", "fs_liming").await;
    emu.set_current_member(Some(
        json!({"user_id": "fs_liming", "open_id": "ou_liming"}),
    ));
    emu.fail_next(OAUTH_TOKEN, 1, Failure::Http5xx);
    let (code, state, binding) = authorize(&app, &emu, "/").await;
    let res = callback(&app, &code, &state, &binding).await;
    assert_eq!(res.status(), 503);
    let body = res.text().await.unwrap();
    assert!(!body.contains(SECRET) && !body.contains(&code), "{body}");
    assert_eq!(app.count("web_sessions").await, 0);
}

#[tokio::test]
async fn feishu_js_config_is_signed_from_one_cached_ticket() {
    use closeloop::emulator::feishu::{Failure, JSAPI_TICKET};
    use closeloop::platform::feishu::crypto::jsapi_signature;

    let emu = Emulator::start(APP_ID, SECRET).await;
    let app = h5_app(&emu).await;
    feishu_user(&app, "李明", "user_id", "fs_liming").await;
    emu.set_current_member(Some(
        json!({"user_id": "fs_liming", "open_id": "ou_liming"}),
    ));
    let (code, state, binding) = authorize(&app, &emu, "/").await;
    let cookie = session_cookie(&callback(&app, &code, &state, &binding).await);

    let page = "https://cl.example.com/h5?a=1%202#top";
    let js_config = || {
        app.client
            .get(app.url("/web/feishu/js-config"))
            .query(&[("url", page)])
            .header("cookie", &cookie)
            .send()
    };
    // A failing ticket endpoint is a 503 and nothing is cached.
    emu.fail_next(JSAPI_TICKET, 1, Failure::Http5xx);
    assert_eq!(js_config().await.unwrap().status(), 503);
    assert!(emu.jsapi_ticket().is_none());

    let before = chrono::Utc::now().timestamp_millis();
    let (a, b, c) = tokio::join!(js_config(), js_config(), js_config());
    for res in [a, b, c] {
        let res = res.unwrap();
        assert_eq!(res.status(), 200);
        let cfg: Value = res.json().await.unwrap();
        assert_eq!(cfg["appId"], APP_ID);
        let ts = cfg["timestamp"].as_i64().unwrap();
        assert!(ts >= before - 1000 && ts <= chrono::Utc::now().timestamp_millis() + 1000);
        let expected = jsapi_signature(
            &emu.jsapi_ticket().unwrap(),
            cfg["nonceStr"].as_str().unwrap(),
            &ts.to_string(),
            page,
        );
        assert_eq!(cfg["signature"], expected.as_str());
    }
    assert_eq!(js_config().await.unwrap().status(), 200);
    assert_eq!(emu.ticket_calls(), 1);

    // Not signed in: no signatures; a relative url is refused.
    let anonymous = app
        .client
        .get(app.url("/web/feishu/js-config"))
        .query(&[("url", page)])
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    let relative = app
        .client
        .get(app.url("/web/feishu/js-config"))
        .query(&[("url", "/h5")])
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(relative.status(), 422);
}

#[tokio::test]
async fn token_refusals_other_than_bad_credentials_and_rate_limits_do_not_lose_cards() {
    use closeloop::emulator::feishu::{Failure, MESSAGES, TENANT_TOKEN};

    let emu = Emulator::start(APP_ID, SECRET).await;
    // The first token request meets an internal error: before the fix any non-zero code
    // started the wrong-credentials blackout and every job in it gave up.
    emu.fail_next(TENANT_TOKEN, 1, Failure::Code(1500));
    let app = spawn_app_with(
        &feishu_toml(Some(KEY), "5m").replace("http://127.0.0.1:9", &emu.base_url()),
    )
    .await;
    let mut people = Vec::new();
    for (name, id) in [
        ("张工", "zhanggong"),
        ("王芳", "wangfang"),
        ("李明", "liming"),
    ] {
        people.push(feishu_user(&app, name, "user_id", id).await);
    }
    let send = |to: String| {
        let app = &app;
        async move {
            let mut tx = app.db.begin().await.unwrap();
            let id = closeloop::cards::send(
                &mut tx,
                &app.cipher,
                chrono::Utc::now().timestamp_millis(),
                &app.org_id,
                &to,
                "quick_ask",
                None,
                &quick_ask(),
            )
            .await
            .unwrap();
            tx.commit().await.unwrap();
            id
        }
    };
    let job = |card: String| {
        let app = &app;
        async move {
            let (status, attempts): (String, i64) =
                sqlx::query_as("SELECT status, attempts FROM jobs WHERE dedupe_key = $1")
                    .bind(format!("card.deliver:{card}"))
                    .fetch_one(&app.db.pool)
                    .await
                    .unwrap();
            (status, attempts)
        }
    };
    let dead = || async {
        let (n,): (i64,) =
            sqlx::query_as("SELECT CAST(COUNT(*) AS BIGINT) FROM jobs WHERE status = 'dead'")
                .fetch_one(&app.db.pool)
                .await
                .unwrap();
        n
    };
    // The start-up sync meets the internal error and is retried; the card goes out.
    send(people[0].clone()).await;
    app.worker.drain().await.unwrap();
    assert_eq!(emu.messages().len(), 1);
    assert_eq!(dead().await, 0);

    // A rate-limited send (HTTP 429, code 99991400) waits without using up an attempt.
    emu.fail_next(MESSAGES, 1, Failure::RateLimited);
    let limited = send(people[1].clone()).await;
    app.worker.drain().await.unwrap();
    assert_eq!(emu.messages().len(), 1);
    assert_eq!(job(limited).await, ("queued".to_string(), 0));

    // A rate-limited token request is a delay too, and no blackout: the next card gets a
    // token at once.
    emu.invalidate_tokens();
    emu.fail_next(TENANT_TOKEN, 1, Failure::RateLimited);
    let delayed = send(people[2].clone()).await;
    app.worker.drain().await.unwrap();
    assert_eq!(job(delayed).await, ("queued".to_string(), 0));
    send(people[0].clone()).await;
    app.worker.drain().await.unwrap();
    assert_eq!(emu.messages().len(), 2);
    assert_eq!(dead().await, 0);
}
