//! DingTalk HTTP-push event subscription end to end: pushed by the DingTalk emulator (or by
//! hand, for the bad cases) signed and encrypted as DingTalk does, into the inbox.

use closeloop::emulator::dingtalk::{
    self as emulator, Emulator, Failure, PushTarget, ACCESS_TOKEN, CARD_CREATE_AND_DELIVER,
    GETTOKEN,
};
use closeloop::platform::crypto::EncodingAesKey;
use closeloop::platform::dingtalk::crypto::DingtalkCrypto;
use serde_json::{json, Value};

use crate::helpers::{error_code, spawn_app_with, TestApp};

const APP_KEY: &str = "dingclapp0000001";
const APP_SECRET: &str = "app-secret-xyz";
const CORP_ID: &str = "dingcorp00000001";
const TOKEN: &str = "mryue";
const AES_KEY: &str = "Yue0EfdN5900c1ce5cf6A152c63DDe1808a60c5ecd7";

fn dingtalk_toml(skew: &str) -> String {
    format!(
        "[dingtalk]\napp_key = \"{APP_KEY}\"\napp_secret = \"{APP_SECRET}\"\ncorp_id = \"{CORP_ID}\"\n\
         token = \"{TOKEN}\"\naes_key = \"{AES_KEY}\"\nmax_clock_skew = \"{skew}\"\n\
         # No DingTalk API in these tests: the discard port refuses at once.\n\
         api_base = \"http://127.0.0.1:9\"\noapi_base = \"http://127.0.0.1:9\"\n"
    )
}

fn crypto_for(owner: &str) -> DingtalkCrypto {
    DingtalkCrypto::new(TOKEN, EncodingAesKey::parse(AES_KEY).unwrap(), owner)
}

fn target(app: &TestApp, owner: &str) -> PushTarget {
    PushTarget {
        url: app.url("/callback/dingtalk"),
        token: TOKEN.into(),
        aes_key: AES_KEY.into(),
        owner_key: owner.into(),
    }
}

fn user_added(event_id: &str, user: &str) -> String {
    json!({
        "EventType": "user_add_org", "TimeStamp": chrono::Utc::now().timestamp_millis().to_string(),
        "UserId": [user], "CorpId": CORP_ID, "eventId": event_id
    })
    .to_string()
}

async fn inbox(app: &TestApp) -> Vec<Value> {
    let page: Value = app
        .get("/api/v1/platform-events?platform=dingtalk")
        .await
        .json()
        .await
        .unwrap();
    page["items"].as_array().unwrap().clone()
}

/// POSTs by hand: `plain` encrypted for `owner`, signed with `ts` (a literal string).
async fn post_signed(app: &TestApp, plain: &str, owner: &str, ts: &str) -> reqwest::Response {
    let crypto = crypto_for(owner);
    let encrypted = crypto.encrypt_random(plain);
    let sig = crypto.signature(ts, "WL4PK6yA", &encrypted);
    app.client
        .post(app.url(&format!(
            "/callback/dingtalk?msg_signature={sig}&timeStamp={ts}&nonce=WL4PK6yA"
        )))
        .json(&json!({ "encrypt": encrypted }))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn check_url_is_answered_with_the_encrypted_success() {
    let app = spawn_app_with(&dingtalk_toml("5m")).await;
    let emu = Emulator::start(APP_KEY, APP_SECRET).await;
    let attempts = emu
        .push_event(&target(&app, APP_KEY), r#"{"EventType":"check_url"}"#)
        .await;
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].status, 200);
    assert!(attempts[0].success_reply);
    // The URL check is a handshake, not an event.
    assert_eq!(app.count("inbox").await, 0);

    // By hand, with the other parameter spellings and a seconds timestamp.
    let ts = chrono::Utc::now().timestamp().to_string();
    let res = post_signed(&app, r#"{"EventType":"check_url"}"#, APP_KEY, &ts).await;
    assert_eq!(res.status(), 200);
    let body = res.bytes().await.unwrap();
    assert!(crypto_for(APP_KEY).is_success_reply(&body));
}

#[tokio::test]
async fn a_push_is_stored_once_even_when_pushed_again() {
    let app = spawn_app_with(&dingtalk_toml("5m")).await;
    let emu = Emulator::start(APP_KEY, APP_SECRET).await;
    let event = user_added("c7c7a1", "manager8");
    let first = emu.push_event(&target(&app, APP_KEY), &event).await;
    assert!(first[0].success_reply);
    // DingTalk pushes the same event again (fresh encryption, same eventId).
    let again = emu.push_event(&target(&app, APP_KEY), &event).await;
    assert!(again[0].success_reply, "a re-push is acknowledged too");
    let items = inbox(&app).await;
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["event_type"], "user_add_org");
    assert_eq!(items[0]["dedupe_key"], "event:c7c7a1");
    assert_eq!(items[0]["status"], "received");
    assert_eq!(items[0]["summary"]["type"], "user_created");
    assert_eq!(items[0]["summary"]["user_id"], "manager8");

    // An enterprise-level subscription encrypts for the CorpId: accepted as well.
    let dept = json!({"EventType": "org_dept_create", "DeptId": [7], "eventId": "d1"}).to_string();
    assert!(emu.push_event(&target(&app, CORP_ID), &dept).await[0].success_reply);
    // Events closeloop does not model are kept raw.
    let other = json!({"EventType": "bpms_task_change", "eventId": "b1"}).to_string();
    assert!(emu.push_event(&target(&app, APP_KEY), &other).await[0].success_reply);
    let items = inbox(&app).await;
    assert_eq!(items.len(), 3);
    let by_type = |t: &str| items.iter().find(|i| i["event_type"] == t).unwrap().clone();
    assert_eq!(by_type("org_dept_create")["summary"]["id"], "7");
    assert_eq!(by_type("bpms_task_change")["summary"]["type"], "unknown");
    assert_eq!(by_type("bpms_task_change")["status"], "ignored");

    // The body is stored encrypted.
    let bodies: Vec<(String,)> = sqlx::query_as("SELECT body FROM inbox")
        .fetch_all(&app.db.pool)
        .await
        .unwrap();
    assert!(bodies.iter().all(|(b,)| !b.contains("manager8")));
}

#[tokio::test]
async fn bad_pushes_are_refused_and_write_nothing() {
    let app = spawn_app_with(&dingtalk_toml("5m")).await;
    let event = user_added("e1", "u1");
    let now_ms = chrono::Utc::now().timestamp_millis();

    let stale = post_signed(&app, &event, APP_KEY, &(now_ms - 600_000).to_string()).await;
    let (status, code, _) = error_code(stale).await;
    assert_eq!((status, code.as_str()), (401, "stale_timestamp"));
    let stale_secs = post_signed(&app, &event, APP_KEY, &(now_ms / 1000 - 600).to_string()).await;
    assert_eq!(error_code(stale_secs).await.1, "stale_timestamp");

    let wrong_owner = post_signed(&app, &event, "dingSOMEONEELSE", &now_ms.to_string()).await;
    let (status, code, _) = error_code(wrong_owner).await;
    assert_eq!((status, code.as_str()), (401, "wrong_receiver"));

    let crypto = crypto_for(APP_KEY);
    let encrypted = crypto.encrypt_random(&event);
    let ts = now_ms.to_string();
    let good_sig = crypto.signature(&ts, "n", &encrypted);
    let post = |query: String, body: String| {
        app.client
            .post(app.url(&format!("/callback/dingtalk?{query}")))
            .body(body)
            .send()
    };
    let body = json!({ "encrypt": encrypted }).to_string();
    let res = post(
        format!("signature={}&timestamp={ts}&nonce=n", "a".repeat(40)),
        body.clone(),
    )
    .await
    .unwrap();
    assert_eq!(error_code(res).await.1, "bad_signature");
    let res = post(
        format!("signature={good_sig}&timestamp={}&nonce=n", now_ms + 1),
        body.clone(),
    )
    .await
    .unwrap();
    assert_eq!(
        error_code(res).await.1,
        "bad_signature",
        "a changed timestamp breaks the signature"
    );
    let res = post(format!("timestamp={ts}&nonce=n"), body.clone())
        .await
        .unwrap();
    assert_eq!(error_code(res).await.0, 400);
    let res = post(
        format!("signature={good_sig}&timestamp={ts}&nonce=n"),
        "{\"encrypt\":".into(),
    )
    .await
    .unwrap();
    assert_eq!(error_code(res).await.0, 400);
    let res = post(
        format!("signature={good_sig}&timestamp=12x&nonce=n"),
        body.clone(),
    )
    .await
    .unwrap();
    assert_eq!(error_code(res).await.0, 400);
    let huge = json!({ "encrypt": "A".repeat(70 * 1024) }).to_string();
    let res = post(format!("signature={good_sig}&timestamp={ts}&nonce=n"), huge)
        .await
        .unwrap();
    assert_eq!(res.status(), 413);
    assert_eq!(app.count("inbox").await, 0);
}

#[tokio::test]
async fn the_clock_check_can_be_turned_off_for_replays() {
    let app = spawn_app_with(&dingtalk_toml("0s")).await;
    let res = post_signed(&app, &user_added("old1", "u1"), APP_KEY, "1608001896814").await;
    assert_eq!(res.status(), 200);
    assert_eq!(inbox(&app).await.len(), 1);
}

#[tokio::test]
async fn a_signed_but_unparsable_push_is_quarantined() {
    let app = spawn_app_with(&dingtalk_toml("5m")).await;
    let emu = Emulator::start(APP_KEY, APP_SECRET).await;
    let attempts = emu
        .push_event(&target(&app, APP_KEY), "this is not an event")
        .await;
    assert!(
        attempts[0].success_reply,
        "acknowledged so it is not re-pushed"
    );
    let items = inbox(&app).await;
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["status"], "quarantined");
    assert!(items[0]["error"].is_string());
}

/// A push whose signature holds but whose ciphertext cannot be decrypted is DingTalk's:
/// answered with the encrypted success and kept in quarantine once, never processed. One
/// with a bad signature is refused and not kept.
#[tokio::test]
async fn a_signed_but_undecryptable_push_is_quarantined_once() {
    let app = spawn_app_with(&dingtalk_toml("0s")).await;
    let crypto = crypto_for(APP_KEY);
    // Whole AES blocks that do not decrypt to a valid message.
    let garbage = {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode([7u8; 64])
    };
    let sig = crypto.signature("1608001896814", "WL4PK6yA", &garbage);
    let send = |sig: String| {
        let app = &app;
        let garbage = garbage.clone();
        async move {
            app.client
                .post(app.url(&format!(
                    "/callback/dingtalk?signature={sig}&timestamp=1608001896814&nonce=WL4PK6yA"
                )))
                .json(&json!({ "encrypt": garbage }))
                .send()
                .await
                .unwrap()
        }
    };
    let res = send("0".repeat(40)).await;
    assert_eq!(res.status(), 401);
    assert_eq!(app.count("inbox").await, 0);
    for _ in 0..2 {
        let res = send(sig.clone()).await;
        assert_eq!(res.status(), 200);
        let reply: Value = res.json().await.unwrap();
        assert!(
            reply["encrypt"].is_string(),
            "the encrypted success: {reply}"
        );
    }
    let items = inbox(&app).await;
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["status"], "quarantined");
    assert_eq!(items[0]["event_type"], "undecryptable");
    assert_eq!(app.count("jobs WHERE kind = 'inbox.process'").await, 0);
}

#[tokio::test]
async fn the_emulator_retries_a_push_that_is_refused() {
    let app = spawn_app_with(&dingtalk_toml("5m")).await;
    let emu = Emulator::start(APP_KEY, APP_SECRET).await;
    let mut wrong = target(&app, APP_KEY);
    wrong.token = "not-the-token".into();
    let attempts = emu.push_event(&wrong, &user_added("r1", "u1")).await;
    assert_eq!(attempts.len(), 4);
    assert!(attempts.iter().all(|a| a.status == 401 && !a.success_reply));
    assert_eq!(emu.pushes().len(), 4);
    assert_eq!(app.count("inbox").await, 0);
}

#[tokio::test]
async fn emulator_tokens_old_and_new_with_expiry_and_failures() {
    let emu = Emulator::start(APP_KEY, APP_SECRET).await;
    let client = reqwest::Client::new();
    let base = emu.base_url();
    let new_token = |secret: &'static str| {
        client
            .post(format!("{base}{ACCESS_TOKEN}"))
            .json(&json!({"appKey": APP_KEY, "appSecret": secret}))
            .send()
    };
    let res = new_token(APP_SECRET).await.unwrap();
    assert_eq!(res.status(), 200);
    let v: Value = res.json().await.unwrap();
    let token = v["accessToken"].as_str().unwrap().to_string();
    assert_eq!(v["expireIn"], 7200);
    // Within its lifetime the same token comes back, from either API.
    let old: Value = client
        .get(format!(
            "{base}{GETTOKEN}?appkey={APP_KEY}&appsecret={APP_SECRET}"
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(old["errcode"], 0);
    assert_eq!(old["access_token"], token.as_str());
    assert_eq!(old["expires_in"], 7200);

    // Wrong credentials.
    assert_eq!(new_token("wrong").await.unwrap().status(), 400);
    let old: Value = client
        .get(format!("{base}{GETTOKEN}?appkey={APP_KEY}&appsecret=wrong"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_ne!(old["errcode"], 0);

    // A card with the token is accepted; without one, or after expiry, refused.
    let card = json!({"cardTemplateId": "tpl", "outTrackId": "card1", "openSpaceId": "dtv1.card//IM_ROBOT.u1",
                      "cardData": {"cardParamMap": {"title": "t"}},
                      "imRobotOpenDeliverModel": {"spaceType": "IM_ROBOT", "robotCode": "r"}});
    let send = |token: Option<String>| {
        let mut req = client
            .post(format!("{base}{CARD_CREATE_AND_DELIVER}"))
            .json(&card);
        if let Some(t) = token {
            req = req.header(emulator::TOKEN_HEADER, t);
        }
        req.send()
    };
    assert_eq!(send(Some(token.clone())).await.unwrap().status(), 200);
    let res = send(None).await.unwrap();
    assert_eq!(res.status(), 401);
    let v: Value = res.json().await.unwrap();
    assert_eq!(v["code"], "InvalidAuthentication");
    emu.expire_tokens();
    assert_eq!(send(Some(token.clone())).await.unwrap().status(), 401);
    let v: Value = new_token(APP_SECRET).await.unwrap().json().await.unwrap();
    let fresh = v["accessToken"].as_str().unwrap().to_string();
    assert_ne!(fresh, token);
    assert_eq!(emu.cards().len(), 1);

    // Injected failures, one request each.
    emu.fail_next(CARD_CREATE_AND_DELIVER, 1, Failure::Http5xx);
    emu.fail_next(GETTOKEN, 1, Failure::Errcode(90002));
    emu.fail_next(ACCESS_TOKEN, 1, Failure::Errcode(42001));
    assert_eq!(send(Some(fresh.clone())).await.unwrap().status(), 500);
    assert_eq!(send(Some(fresh.clone())).await.unwrap().status(), 200);
    let old: Value = client
        .get(format!(
            "{base}{GETTOKEN}?appkey={APP_KEY}&appsecret={APP_SECRET}"
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(old["errcode"], 90002);
    assert_eq!(new_token(APP_SECRET).await.unwrap().status(), 401);
    emu.set_timeout_delay(std::time::Duration::from_millis(300));
    emu.fail_next(ACCESS_TOKEN, 1, Failure::Timeout);
    let quick = reqwest::Client::builder()
        .timeout(std::time::Duration::from_millis(100))
        .build()
        .unwrap();
    assert!(quick
        .post(format!("{base}{ACCESS_TOKEN}"))
        .json(&json!({"appKey": APP_KEY, "appSecret": APP_SECRET}))
        .send()
        .await
        .is_err());
}

const CARD_SECRET: &str = "card-callback-secret";

fn card_click(card: &str, user: &str, action: &str) -> String {
    let content = json!({"cardPrivateData": {"actionIds": [action], "params": {}}}).to_string();
    json!({"type": "actionCallback", "outTrackId": card, "corpId": CORP_ID, "userId": user, "content": content})
        .to_string()
}

async fn post_click(app: &TestApp, body: &str, ts: &str, signature: &str) -> reqwest::Response {
    app.client
        .post(app.url("/callback/dingtalk/card"))
        .header("x-ddpaas-signature-timestamp", ts)
        .header("x-ddpaas-signature", signature)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_card_click_is_verified_stored_once_and_recorded_on_the_card() {
    use closeloop::cards::{self, Button, ButtonStyle, Card};
    use closeloop::platform::dingtalk::inbound::card_signature;

    let app = spawn_app_with(&format!(
        "{}card_callback_secret = \"{CARD_SECRET}\"\n",
        dingtalk_toml("5m")
    ))
    .await;
    let presales = app
        .create(
            "/api/v1/users",
            json!({"name": "张工", "identities": [{"platform": "dingtalk", "kind": "userid", "value": "zhanggong"}]}),
        )
        .await;
    let card = Card {
        title: "售前快速提问".into(),
        description: None,
        fields: vec![("问题".into(), "是否支持私有化部署？".into())],
        buttons: vec![Button {
            action: "accept".into(),
            label: "接受".into(),
            style: ButtonStyle::Primary,
        }],
        ..Default::default()
    };
    let mut tx = app.db.begin().await.unwrap();
    let id = cards::send(
        &mut tx,
        &app.cipher,
        chrono::Utc::now().timestamp_millis(),
        &app.org_id,
        presales["id"].as_str().unwrap(),
        "quick_ask",
        None,
        &card,
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();

    let ts = chrono::Utc::now().timestamp_millis().to_string();
    let sig = card_signature(CARD_SECRET, &ts);
    let click = card_click(&id, "zhanggong", "accept");
    // Bad cases first: nothing is written.
    let res = post_click(&app, &click, &ts, &card_signature("wrong", &ts)).await;
    assert_eq!(error_code(res).await.1, "bad_signature");
    let old = (chrono::Utc::now().timestamp_millis() - 600_000).to_string();
    let res = post_click(&app, &click, &old, &card_signature(CARD_SECRET, &old)).await;
    assert_eq!(error_code(res).await.1, "stale_timestamp");
    let res = app
        .client
        .post(app.url("/callback/dingtalk/card"))
        .body(click.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let res = post_click(&app, "not json", &ts, &sig).await;
    assert_eq!(res.status(), 400);
    assert_eq!(app.count("inbox").await, 0);

    // The click, delivered twice, is stored once.
    assert_eq!(post_click(&app, &click, &ts, &sig).await.status(), 200);
    assert_eq!(post_click(&app, &click, &ts, &sig).await.status(), 200);
    let items = inbox(&app).await;
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["event_type"], "actionCallback");
    assert_eq!(
        items[0]["dedupe_key"],
        format!("click:zhanggong:accept:{id}").as_str()
    );
    let _ = app.worker.drain().await;
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
}

/// The card route takes card callbacks only: its signature covers nothing but the
/// timestamp, so a signed header pair must not carry any other body, a captured pair must
/// not carry a forged click, and its age is bounded even with the clock-skew check off.
#[tokio::test]
async fn the_card_route_takes_only_card_callbacks_and_no_replayed_signatures() {
    use closeloop::platform::dingtalk::inbound::card_signature;
    let app = spawn_app_with(&format!(
        "{}card_callback_secret = \"{CARD_SECRET}\"\n",
        dingtalk_toml("0s")
    ))
    .await;
    let ts = chrono::Utc::now().timestamp_millis().to_string();
    let sig = card_signature(CARD_SECRET, &ts);

    // A directory event, correctly signed for this route: refused, nothing stored.
    let leave =
        json!({"EventType": "user_leave_org", "UserId": ["boss"], "eventId": "x1"}).to_string();
    let res = post_click(&app, &leave, &ts, &sig).await;
    assert_eq!(res.status(), 400);
    assert_eq!(app.count("inbox").await, 0);

    // A click, then the same header pair with someone else's click: refused.
    let click = card_click("card1", "zhanggong", "accept");
    assert_eq!(post_click(&app, &click, &ts, &sig).await.status(), 200);
    assert_eq!(
        post_click(&app, &click, &ts, &sig).await.status(),
        200,
        "a retry"
    );
    let forged = card_click("card1", "boss", "accept");
    let (status, code, _) = error_code(post_click(&app, &forged, &ts, &sig).await).await;
    assert_eq!((status, code.as_str()), (401, "replayed_signature"));
    assert_eq!(app.count("inbox").await, 1);

    // max_clock_skew = 0 turns off the event-push window, not this one.
    let old = (chrono::Utc::now().timestamp_millis() - 600_000).to_string();
    let res = post_click(&app, &click, &old, &card_signature(CARD_SECRET, &old)).await;
    assert_eq!(error_code(res).await.1, "stale_timestamp");
}

async fn card_app(emu: &Emulator, secret: &str) -> TestApp {
    let toml = dingtalk_toml("5m")
        .replace("http://127.0.0.1:9", &emu.base_url())
        .replace(APP_SECRET, secret);
    spawn_app_with(&format!(
        "{toml}card_callback_secret = \"{CARD_SECRET}\"\ncard_template_id = \"tpl-closeloop.schema\"\nrobot_code = \"dingrobot1\"\n"
    ))
    .await
}

async fn send_card(app: &TestApp, to: &str) -> String {
    use closeloop::cards::{self, Button, ButtonStyle, Card};
    let card = Card {
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
    };
    let mut tx = app.db.begin().await.unwrap();
    let id = cards::send(
        &mut tx,
        &app.cipher,
        chrono::Utc::now().timestamp_millis(),
        &app.org_id,
        to,
        "quick_ask",
        None,
        &card,
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    id
}

async fn dingtalk_user(app: &TestApp, name: &str, userid: &str) -> String {
    let user = app
        .create(
            "/api/v1/users",
            json!({"name": name, "identities": [{"platform": "dingtalk", "kind": "userid", "value": userid}]}),
        )
        .await;
    user["id"].as_str().unwrap().to_string()
}

/// DingTalk can accept the call and still reach nobody (`deliverResults[].success` false):
/// that card failed, visibly, and is not taken for sent.
#[tokio::test]
async fn a_card_dingtalk_could_not_deliver_is_failed_not_sent() {
    let emu = Emulator::start(APP_KEY, APP_SECRET).await;
    let app = card_app(&emu, APP_SECRET).await;
    let outsider = dingtalk_user(&app, "王芳", "wangfang").await;
    let member = dingtalk_user(&app, "张工", "zhanggong").await;
    emu.refuse_cards_to("wangfang");
    let refused = send_card(&app, &outsider).await;
    let delivered = send_card(&app, &member).await;
    app.worker.drain().await.unwrap();
    let status = |id: String| {
        let app = &app;
        async move {
            let (s,): (String,) = sqlx::query_as("SELECT status FROM cards WHERE id = $1")
                .bind(id)
                .fetch_one(&app.db.pool)
                .await
                .unwrap();
            s
        }
    };
    assert_eq!(status(refused.clone()).await, "failed");
    assert_eq!(status(delivered).await, "sent");
    let (job, error): (String, Option<String>) =
        sqlx::query_as("SELECT status, last_error FROM jobs WHERE dedupe_key = $1")
            .bind(format!("card.deliver:{refused}"))
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    assert_eq!(job, "dead");
    assert!(error.unwrap_or_default().contains("visible range"));
}

/// A card with a DingTalk template of its own (`card_templates`) goes out on it; the rest
/// on `card_template_id`.
#[tokio::test]
async fn a_card_can_have_a_dingtalk_template_of_its_own() {
    let emu = Emulator::start(APP_KEY, APP_SECRET).await;
    let toml = dingtalk_toml("5m").replace("http://127.0.0.1:9", &emu.base_url());
    let app = spawn_app_with(&format!(
        "{toml}card_template_id = \"tpl-closeloop.schema\"\n\
         card_templates = {{ \"collab.request\" = \"tpl-request.schema\" }}\n"
    ))
    .await;
    let presales = dingtalk_user(&app, "张工", "zhanggong").await;
    let vars = |names: &[&'static str]| -> Vec<(&'static str, String)> {
        names.iter().map(|n| (*n, format!("<{n}>"))).collect()
    };
    let request = closeloop::cards::templates::compose(
        "collab.request",
        &vars(&["title", "hint", "initiator", "customer", "content", "due"]),
    );
    let nudge =
        closeloop::cards::templates::compose("collab.nudge", &vars(&["title", "customer", "text"]));
    let mut tx = app.db.begin().await.unwrap();
    let now = chrono::Utc::now().timestamp_millis();
    for card in [&request, &nudge] {
        closeloop::cards::send(
            &mut tx,
            &app.cipher,
            now,
            &app.org_id,
            &presales,
            "note",
            None,
            card,
        )
        .await
        .unwrap();
    }
    tx.commit().await.unwrap();
    app.worker.drain().await.unwrap();
    let used: Vec<String> = emu
        .cards()
        .iter()
        .map(|c| c["cardTemplateId"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(used, ["tpl-request.schema", "tpl-closeloop.schema"]);
}

#[tokio::test]
async fn cards_go_out_as_template_instances_and_a_click_updates_them() {
    use closeloop::platform::dingtalk::inbound::card_signature;

    let emu = Emulator::start(APP_KEY, APP_SECRET).await;
    let app = card_app(&emu, APP_SECRET).await;
    let presales = dingtalk_user(&app, "张工", "zhanggong").await;
    let id = send_card(&app, &presales).await;
    app.worker.drain().await.unwrap();
    let sent = emu.cards();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0]["outTrackId"], id.as_str());
    assert_eq!(sent[0]["cardTemplateId"], "tpl-closeloop.schema");
    assert_eq!(sent[0]["openSpaceId"], "dtv1.card//IM_ROBOT.zhanggong");
    assert_eq!(
        sent[0]["imRobotOpenDeliverModel"]["robotCode"],
        "dingrobot1"
    );
    assert_eq!(sent[0]["cardData"]["cardParamMap"]["title"], "售前快速提问");
    let (status, platform): (String, Option<String>) =
        sqlx::query_as("SELECT status, platform FROM cards WHERE id = $1")
            .bind(&id)
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    assert_eq!(
        (status.as_str(), platform.as_deref()),
        ("sent", Some("dingtalk"))
    );

    // The token expires early: the next card refreshes it once and goes out.
    emu.expire_tokens();
    send_card(&app, &presales).await;
    app.worker.drain().await.unwrap();
    assert_eq!(emu.cards().len(), 2);
    assert_eq!(emu.token_calls(), 2);

    // A seconds timestamp is accepted as well as milliseconds.
    let ts = chrono::Utc::now().timestamp().to_string();
    let sig = card_signature(CARD_SECRET, &ts);
    let res = post_click(&app, &card_click(&id, "zhanggong", "accept"), &ts, &sig).await;
    assert_eq!(res.status(), 200);
    // The same press delivered again by the emulator (milliseconds) is stored once.
    let url = app.url("/callback/dingtalk/card");
    let status = emu
        .press_card_button(&url, CARD_SECRET, &id, "zhanggong", "accept")
        .await;
    assert_eq!(status, 200);
    assert_eq!(inbox(&app).await.len(), 1);
    app.worker.drain().await.unwrap();
    let updates = emu.card_updates();
    assert_eq!(updates.len(), 1);
    assert_eq!(updates[0]["outTrackId"], id.as_str());
    assert_eq!(updates[0]["cardData"]["cardParamMap"]["status"], "已接受");
}

#[tokio::test]
async fn wrong_credentials_are_a_configuration_error_not_a_retry_loop() {
    let emu = Emulator::start(APP_KEY, APP_SECRET).await;
    let app = card_app(&emu, "not-the-secret").await;
    let presales = dingtalk_user(&app, "张工", "zhanggong").await;
    send_card(&app, &presales).await;
    send_card(&app, &presales).await;
    let _ = app.worker.drain().await;
    assert!(emu.cards().is_empty());
    assert_eq!(emu.token_calls(), 1, "the bad secret is presented once");
    let (dead,): (i64,) = sqlx::query_as(
        "SELECT CAST(COUNT(*) AS BIGINT) FROM jobs WHERE kind = 'card.deliver' AND status = 'dead'",
    )
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(dead, 2);
}

async fn user_by_dingtalk_id(app: &TestApp, id: &str) -> Value {
    let page: Value = app
        .get(&format!(
            "/api/v1/users?platform=dingtalk&identity_kind=userid&identity_value={id}"
        ))
        .await
        .json()
        .await
        .unwrap();
    page["items"][0].clone()
}

/// DingTalk may name several members in one event: none of them is lost — the directory
/// is read again.
#[tokio::test]
async fn an_event_naming_several_members_has_the_directory_read_again() {
    let emu = Emulator::start(APP_KEY, APP_SECRET).await;
    let user = |id: &str, name: &str| json!({"userid": id, "name": name, "dept_id_list": [3], "manager_userid": "", "active": true});
    let everyone = vec![
        user("wangjl", "王经理"),
        user("liming", "李明"),
        user("zhaojf", "赵交付"),
    ];
    let dept = vec![json!({"dept_id": 3, "name": "华南销售部", "parent_id": 1})];
    emu.set_directory(dept.clone(), everyone);
    let app = card_app(&emu, APP_SECRET).await;
    app.worker.drain().await.unwrap(); // the start-up sync
    assert_eq!(
        user_by_dingtalk_id(&app, "zhaojf").await["status"],
        "active"
    );

    emu.set_directory(dept, vec![user("wangjl", "王经理")]);
    let leave = json!({"EventType": "user_leave_org", "UserId": ["liming", "zhaojf"],
                       "eventId": "leave-two", "CorpId": CORP_ID})
    .to_string();
    let pushed = emu.push_event(&target(&app, APP_KEY), &leave).await;
    assert!(pushed[0].success_reply);
    app.worker.drain().await.unwrap();
    for id in ["liming", "zhaojf"] {
        assert_eq!(
            user_by_dingtalk_id(&app, id).await["status"],
            "left",
            "{id}"
        );
    }
    assert_eq!(
        user_by_dingtalk_id(&app, "wangjl").await["status"],
        "active"
    );
    let items = inbox(&app).await;
    assert_eq!(items[0]["status"], "processed", "{items:?}");
}

#[tokio::test]
async fn the_address_book_syncs_and_follows_user_events() {
    let emu = Emulator::start(APP_KEY, APP_SECRET).await;
    let dept = |id: i64, name: &str, parent: i64| json!({"dept_id": id, "name": name, "parent_id": parent});
    let user = |id: &str, name: &str, manager: &str| json!({"userid": id, "name": name, "dept_id_list": [3], "manager_userid": manager, "active": true});
    emu.set_directory(
        vec![dept(2, "销售中心", 1), dept(3, "华南销售部", 2)],
        vec![
            user("wangjl", "王经理", ""),
            user("liming", "李明", "wangjl"),
        ],
    );
    let app = card_app(&emu, APP_SECRET).await;
    app.worker.drain().await.unwrap(); // the start-up sync
    let wang = user_by_dingtalk_id(&app, "wangjl").await;
    let liming = user_by_dingtalk_id(&app, "liming").await;
    assert_eq!(liming["name"], "李明");
    assert_eq!(liming["department"], "华南销售部");
    assert_eq!(liming["superiors"], json!([wang["id"]]));

    // A new member joins: the user_add_org push brings them in through user/get.
    emu.set_directory(
        vec![dept(2, "销售中心", 1), dept(3, "华南销售部", 2)],
        vec![
            user("wangjl", "王经理", ""),
            user("liming", "李明", "wangjl"),
            user("zhaojf", "赵交付", "wangjl"),
        ],
    );
    let pushed = emu
        .push_event(&target(&app, APP_KEY), &user_added("join1", "zhaojf"))
        .await;
    assert!(pushed[0].success_reply);
    let leave = json!({"EventType": "user_leave_org", "UserId": ["liming"], "eventId": "leave1"})
        .to_string();
    assert!(emu.push_event(&target(&app, APP_KEY), &leave).await[0].success_reply);
    app.worker.drain().await.unwrap();
    let zhao = user_by_dingtalk_id(&app, "zhaojf").await;
    assert_eq!(zhao["name"], "赵交付");
    assert_eq!(zhao["superiors"], json!([wang["id"]]));
    assert_eq!(user_by_dingtalk_id(&app, "liming").await["status"], "left");
    assert!(inbox(&app).await.iter().all(|i| i["status"] == "processed"));
}

#[tokio::test]
async fn a_free_login_code_signs_a_member_in_and_dd_config_is_signed() {
    use closeloop::platform::dingtalk::crypto::jsapi_signature;

    let emu = Emulator::start(APP_KEY, APP_SECRET).await;
    let app = card_app(&emu, APP_SECRET).await;
    dingtalk_user(&app, "李明", "liming").await;
    let sign_in = |code: String| {
        app.client
            .post(app.url("/auth/dingtalk/code"))
            .header("sec-fetch-site", "same-origin")
            .json(&json!({ "code": code }))
            .send()
    };
    let code = emu.issue_auth_code("liming");
    let res = sign_in(code.clone()).await.unwrap();
    assert_eq!(res.status(), 204);
    let cookie = res
        .headers()
        .get("set-cookie")
        .unwrap()
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    // The code is single use.
    assert_eq!(sign_in(code).await.unwrap().status(), 422);
    // A DingTalk member without a closeloop account is turned away.
    let stranger = emu.issue_auth_code("nobody");
    assert_eq!(sign_in(stranger).await.unwrap().status(), 403);

    let page = "https://cl.example.com/sidebar?a=1%202#top";
    let res = app
        .client
        .get(app.url("/web/dingtalk/js-config"))
        .query(&[("url", page)])
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let cfg: Value = res.json().await.unwrap();
    assert_eq!(cfg["corpId"], CORP_ID);
    let ticket = emu.jsapi_ticket().unwrap();
    let expected = jsapi_signature(
        &ticket,
        cfg["nonceStr"].as_str().unwrap(),
        cfg["timeStamp"].as_str().unwrap(),
        page,
    )
    .unwrap();
    assert_eq!(cfg["signature"], expected.as_str());
    // A page address with a broken escape is the caller's mistake: 422, not 503.
    let res = app
        .client
        .get(app.url("/web/dingtalk/js-config"))
        .query(&[("url", "https://cl.example.com/sidebar?a=%zz")])
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 422);
    // Not signed in: no signatures.
    let res = app
        .client
        .get(app.url("/web/dingtalk/js-config"))
        .query(&[("url", page)])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
}

/// The (status, run_at) of the card.deliver job for `card_id`.
async fn deliver_job(app: &TestApp, card_id: &str) -> (String, i64) {
    sqlx::query_as("SELECT status, run_at FROM jobs WHERE dedupe_key = $1")
        .bind(format!("card.deliver:{card_id}"))
        .fetch_one(&app.db.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn an_ip_ban_answer_delays_the_card_instead_of_passing_for_sent() {
    let emu = Emulator::start(APP_KEY, APP_SECRET).await;
    let app = card_app(&emu, APP_SECRET).await;
    let zhang = dingtalk_user(&app, "张工", "zhanggong").await;
    let wang = dingtalk_user(&app, "王芳", "wangfang").await;
    // The ban comes as HTTP 200 `{"status":1111,"wait":5,…}` without an errcode.
    emu.fail_next(CARD_CREATE_AND_DELIVER, 1, Failure::IpBanned);
    let before = chrono::Utc::now().timestamp_millis();
    let first = send_card(&app, &zhang).await;
    app.worker.drain().await.unwrap();
    assert!(emu.cards().is_empty());
    let (card_status,): (String,) = sqlx::query_as("SELECT status FROM cards WHERE id = $1")
        .bind(&first)
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_ne!(card_status, "sent");
    let (status, run_at) = deliver_job(&app, &first).await;
    assert_eq!(status, "queued");
    assert!(run_at >= before + 5 * 60_000, "waits out the 5-minute ban");

    // Banned while refreshing the token: a delay too, not a wrong-credentials verdict.
    emu.expire_tokens();
    emu.fail_next(ACCESS_TOKEN, 1, Failure::IpBanned);
    let second = send_card(&app, &wang).await;
    app.worker.drain().await.unwrap();
    assert!(emu.cards().is_empty());
    let (status, run_at) = deliver_job(&app, &second).await;
    assert_eq!(status, "queued");
    assert!(run_at >= before + 5 * 60_000);
}

#[tokio::test]
async fn a_sharply_shrunken_or_banned_listing_marks_nobody_left() {
    use closeloop::emulator::dingtalk::DEPARTMENT_LISTSUB;

    let emu = Emulator::start(APP_KEY, APP_SECRET).await;
    let dept = || vec![json!({"dept_id": 3, "name": "华南销售部", "parent_id": 1})];
    let users = |n: usize| -> Vec<Value> {
        (1..=n)
            .map(|i| json!({"userid": format!("u{i}"), "name": format!("成员{i}"), "dept_id_list": [3], "active": true}))
            .collect()
    };
    emu.set_directory(dept(), users(10));
    let app = card_app(&emu, APP_SECRET).await;
    app.worker.drain().await.unwrap(); // the start-up sync
    let active = || async {
        let (n,): (i64,) =
            sqlx::query_as("SELECT CAST(COUNT(*) AS BIGINT) FROM users WHERE status = 'active'")
                .fetch_one(&app.db.pool)
                .await
                .unwrap();
        n
    };
    assert_eq!(active().await, 10);
    let sync = || async {
        closeloop::jobs::enqueue_now(
            &app.db,
            chrono::Utc::now().timestamp_millis(),
            closeloop::jobs::NewJob::new("directory.sync", json!({})).org(&app.org_id),
        )
        .await
        .unwrap();
        app.worker.drain().await.unwrap();
        let (output,): (Option<String>,) = sqlx::query_as(
            "SELECT output FROM jobs WHERE kind = 'directory.sync' ORDER BY id DESC LIMIT 1",
        )
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
        output.map(|o| serde_json::from_str::<Value>(&o).unwrap())
    };

    // Eight of ten gone at once looks like a partial answer: nobody is marked left.
    emu.set_directory(dept(), users(2));
    let out = sync().await.unwrap();
    assert_eq!(out["dingtalk"]["left"], 0);
    assert_eq!(out["dingtalk"]["withheld_left"], 8);
    assert_eq!(active().await, 10);

    // One leaver among ten is believed.
    emu.set_directory(dept(), users(9));
    let out = sync().await.unwrap();
    assert_eq!(out["dingtalk"]["left"], 1);
    assert_eq!(out["dingtalk"]["withheld_left"], 0);
    assert_eq!(user_by_dingtalk_id(&app, "u10").await["status"], "left");

    // An IP ban on the department walk is no empty department list: the sync waits.
    emu.fail_next(DEPARTMENT_LISTSUB, 1, Failure::IpBanned);
    assert!(sync().await.is_none(), "the banned sync is not done");
    let (status,): (String,) = sqlx::query_as(
        "SELECT status FROM jobs WHERE kind = 'directory.sync' ORDER BY id DESC LIMIT 1",
    )
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(status, "queued");
    assert_eq!(active().await, 9);
}
