//! WeCom callbacks end to end: signed and encrypted exactly as WeCom does, into the inbox.

use closeloop::platform::crypto::EncodingAesKey;
use closeloop::platform::wecom::crypto::WecomCrypto;
use serde_json::Value;

use crate::helpers::{error_code, spawn_app_with, TestApp};

pub(crate) const CORP: &str = "wwcl0000000000001";
const TOKEN: &str = "QDG6eK";
const KEY: &str = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C";

fn wecom_toml(skew: &str) -> String {
    format!(
        "[wecom]\ncorp_id = \"{CORP}\"\nagent_id = 1000002\nsecret = \"app-secret\"\ntoken = \"{TOKEN}\"\n\
         encoding_aes_key = \"{KEY}\"\nmax_clock_skew = \"{skew}\"\n\
         # No WeCom API in these tests: the discard port refuses at once.\n\
         api_base = \"http://127.0.0.1:9\"\n"
    )
}

fn crypto_for(receiver: &str) -> WecomCrypto {
    WecomCrypto::new(
        TOKEN,
        EncodingAesKey::parse(KEY).unwrap(),
        receiver.to_string(),
    )
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn pct(s: &str) -> String {
    s.replace('%', "%25")
        .replace('+', "%2B")
        .replace('/', "%2F")
        .replace('=', "%3D")
}

/// POSTs `plain` the way WeCom would: encrypted for `receiver`, signed at `ts`.
pub(crate) async fn deliver(
    app: &TestApp,
    plain: &str,
    receiver: &str,
    ts: i64,
) -> reqwest::Response {
    let crypto = crypto_for(receiver);
    let encrypted = crypto.encrypt_random(plain);
    let sig = crypto.signature(&ts.to_string(), "1372623149", &encrypted);
    let body = format!(
        "<xml><ToUserName><![CDATA[{CORP}]]></ToUserName><AgentID><![CDATA[1000002]]></AgentID>\
         <Encrypt><![CDATA[{encrypted}]]></Encrypt></xml>"
    );
    app.client
        .post(app.url(&format!(
            "/callback/wecom?msg_signature={sig}&timestamp={ts}&nonce=1372623149"
        )))
        .body(body)
        .send()
        .await
        .unwrap()
}

fn add_contact(external: &str, ts: i64) -> String {
    format!(
        "<xml><ToUserName><![CDATA[{CORP}]]></ToUserName><FromUserName><![CDATA[sys]]></FromUserName>\
         <CreateTime>{ts}</CreateTime><MsgType><![CDATA[event]]></MsgType>\
         <Event><![CDATA[change_external_contact]]></Event><ChangeType><![CDATA[add_external_contact]]></ChangeType>\
         <UserID><![CDATA[liming]]></UserID><ExternalUserID><![CDATA[{external}]]></ExternalUserID>\
         <State><![CDATA[douyin-form]]></State><WelcomeCode><![CDATA[WELCOMECODE]]></WelcomeCode></xml>"
    )
}

async fn inbox(app: &TestApp) -> Vec<Value> {
    let page: Value = app
        .get("/api/v1/platform-events?platform=wecom")
        .await
        .json()
        .await
        .unwrap();
    page["items"].as_array().unwrap().clone()
}

#[tokio::test]
async fn url_verification_echoes_the_bare_plaintext() {
    let app = spawn_app_with(&wecom_toml("5m")).await;
    let crypto = crypto_for(CORP);
    let echostr = crypto.encrypt_random("4388326154298702389");
    let ts = now().to_string();
    let sig = crypto.signature(&ts, "nonce1", &echostr);
    let res = app
        .client
        .get(app.url(&format!(
            "/callback/wecom?msg_signature={sig}&timestamp={ts}&nonce=nonce1&echostr={}",
            pct(&echostr)
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.text().await.unwrap(), "4388326154298702389");
    let bad = app
        .client
        .get(app.url(&format!(
            "/callback/wecom?msg_signature={}&timestamp={ts}&nonce=nonce1&echostr={}",
            "0".repeat(40),
            pct(&echostr)
        )))
        .send()
        .await
        .unwrap();
    let (status, code, _) = error_code(bad).await;
    assert_eq!((status, code.as_str()), (401, "bad_signature"));
}

#[tokio::test]
async fn an_event_is_stored_once_and_listed() {
    let app = spawn_app_with(&wecom_toml("5m")).await;
    let ts = now();
    let xml = add_contact("wmEXT001", ts);
    let res = deliver(&app, &xml, CORP, ts).await;
    assert_eq!(res.status(), 200);
    // WeCom retries the same event (fresh encryption, same content): acknowledged, not stored again.
    let again = deliver(&app, &xml, CORP, ts + 5).await;
    assert_eq!(again.status(), 200);
    let items = inbox(&app).await;
    assert_eq!(items.len(), 1);
    assert_eq!(
        items[0]["event_type"],
        "change_external_contact.add_external_contact"
    );
    // Stored and waiting for its processing job (the worker is not stepped here).
    assert_eq!(items[0]["status"], "received");
    assert_eq!(items[0]["summary"]["external_user_id"], "wmEXT001");
    assert_eq!(items[0]["summary"]["state"], "douyin-form");
    // Two different contact events in the same second, both from `sys`, stay two.
    deliver(&app, &add_contact("wmEXT002", ts), CORP, ts).await;
    assert_eq!(inbox(&app).await.len(), 2);
    // The body is stored encrypted.
    let (body,): (String,) = sqlx::query_as("SELECT body FROM inbox LIMIT 1")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert!(!body.contains("wmEXT"), "inbox body stored in the clear");
}

#[tokio::test]
async fn messages_dedupe_on_msg_id_and_keep_text_out_of_the_api() {
    let app = spawn_app_with(&wecom_toml("5m")).await;
    let ts = now();
    let xml = format!(
        "<xml><ToUserName><![CDATA[{CORP}]]></ToUserName><FromUserName><![CDATA[liming]]></FromUserName>\
         <CreateTime>{ts}</CreateTime><MsgType><![CDATA[text]]></MsgType><Content><![CDATA[张总电话 13800138000]]></Content>\
         <MsgId>7091234567890</MsgId><AgentID>1000002</AgentID></xml>"
    );
    assert_eq!(deliver(&app, &xml, CORP, ts).await.status(), 200);
    assert_eq!(deliver(&app, &xml, CORP, ts).await.status(), 200);
    let items = inbox(&app).await;
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["dedupe_key"], "msg:7091234567890");
    let text = app
        .get("/api/v1/platform-events")
        .await
        .text()
        .await
        .unwrap();
    assert!(
        !text.contains("13800138000"),
        "message text leaked into the API"
    );
}

#[tokio::test]
async fn the_json_envelope_is_accepted_too() {
    let app = spawn_app_with(&wecom_toml("5m")).await;
    let ts = now();
    let crypto = crypto_for(CORP);
    let inner = serde_json::json!({
        "ToUserName": CORP, "FromUserName": "sys", "CreateTime": ts, "MsgType": "event",
        "Event": "change_external_contact", "ChangeType": "del_follow_user",
        "UserID": "liming", "ExternalUserID": "wmEXT009"
    })
    .to_string();
    let encrypted = crypto.encrypt_random(&inner);
    let sig = crypto.signature(&ts.to_string(), "n1", &encrypted);
    let body = serde_json::json!({"tousername": CORP, "encrypt": encrypted, "agentid": 1000002})
        .to_string();
    let res = app
        .client
        .post(app.url(&format!(
            "/callback/wecom?msg_signature={sig}&timestamp={ts}&nonce=n1"
        )))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let items = inbox(&app).await;
    assert_eq!(
        items[0]["event_type"],
        "change_external_contact.del_follow_user"
    );
    assert_eq!(items[0]["summary"]["by_customer"], true);
}

#[tokio::test]
async fn bad_callbacks_are_refused_and_write_nothing() {
    let app = spawn_app_with(&wecom_toml("5m")).await;
    let ts = now();
    let xml = add_contact("wmEXT001", ts);

    let stale = deliver(&app, &xml, CORP, ts - 600).await;
    let (status, code, _) = error_code(stale).await;
    assert_eq!((status, code.as_str()), (401, "stale_timestamp"));

    let wrong_corp = deliver(&app, &xml, "wwSOMEONEELSE", ts).await;
    let (status, code, _) = error_code(wrong_corp).await;
    assert_eq!((status, code.as_str()), (401, "wrong_receiver"));

    let crypto = crypto_for(CORP);
    let encrypted = crypto.encrypt_random(&xml);
    let post = |query: String, body: String| {
        app.client
            .post(app.url(&format!("/callback/wecom?{query}")))
            .body(body)
            .send()
    };
    let good_sig = crypto.signature(&ts.to_string(), "n", &encrypted);
    let envelope = format!("<xml><Encrypt><![CDATA[{encrypted}]]></Encrypt></xml>");

    let res = post(
        format!("msg_signature={}&timestamp={ts}&nonce=n", "a".repeat(40)),
        envelope.clone(),
    )
    .await
    .unwrap();
    assert_eq!(error_code(res).await.1, "bad_signature");
    let res = post(
        format!("msg_signature={good_sig}&timestamp={}&nonce=n", ts + 1),
        envelope.clone(),
    )
    .await
    .unwrap();
    assert_eq!(
        error_code(res).await.1,
        "bad_signature",
        "a changed timestamp breaks the signature"
    );
    let res = post(format!("timestamp={ts}&nonce=n"), envelope.clone())
        .await
        .unwrap();
    assert_eq!(error_code(res).await.0, 400);
    let res = post(
        format!("msg_signature={good_sig}&timestamp={ts}&nonce=n"),
        "<xml><Encrypt>".into(),
    )
    .await
    .unwrap();
    assert_eq!(error_code(res).await.0, 400);
    let doctype = format!(
        "<!DOCTYPE xml [<!ENTITY x \"y\">]><xml><Encrypt><![CDATA[{encrypted}]]></Encrypt></xml>"
    );
    let res = post(
        format!("msg_signature={good_sig}&timestamp={ts}&nonce=n"),
        doctype,
    )
    .await
    .unwrap();
    assert_eq!(error_code(res).await.0, 400);
    let entity = "<xml><Encrypt>&xxe;</Encrypt></xml>".to_string();
    let res = post(
        format!("msg_signature={good_sig}&timestamp={ts}&nonce=n"),
        entity,
    )
    .await
    .unwrap();
    assert_eq!(error_code(res).await.0, 400);
    let huge = format!("<xml><Encrypt>{}</Encrypt></xml>", "A".repeat(70 * 1024));
    let res = post(
        format!("msg_signature={good_sig}&timestamp={ts}&nonce=n"),
        huge,
    )
    .await
    .unwrap();
    assert_eq!(res.status(), 413);

    assert_eq!(
        app.count("inbox").await,
        0,
        "a refused callback wrote something"
    );
}

#[tokio::test]
async fn a_signed_but_unparsable_body_is_quarantined_not_lost() {
    let app = spawn_app_with(&wecom_toml("0")).await;
    // An old timestamp passes when max_clock_skew = 0 (replaying recorded callbacks).
    let ts = now() - 86_400;
    for body in [
        "<xml><MsgType>event</MsgType><Event>change_external_contact".to_string(),
        "<!DOCTYPE xml><xml><MsgType>event</MsgType></xml>".to_string(),
    ] {
        assert_eq!(deliver(&app, &body, CORP, ts).await.status(), 200);
    }
    let items = inbox(&app).await;
    assert_eq!(items.len(), 2);
    assert!(items
        .iter()
        .all(|i| i["status"] == "quarantined" && i["error"].is_string()));
    let quarantined: Value = app
        .get("/api/v1/platform-events?status=quarantined")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(quarantined["items"].as_array().unwrap().len(), 2);
    // Unknown events are kept, never refused.
    let unknown = format!(
        "<xml><ToUserName>{CORP}</ToUserName><FromUserName>sys</FromUserName><CreateTime>{ts}</CreateTime>\
         <MsgType>event</MsgType><Event>some_future_event</Event></xml>"
    );
    assert_eq!(deliver(&app, &unknown, CORP, ts).await.status(), 200);
    let all = inbox(&app).await;
    assert_eq!(all.len(), 3);
    assert_eq!(all[2]["event_type"], "some_future_event");
    assert_ne!(all[2]["status"], "quarantined");
}

/// `kill -9` while callbacks stream in: every acknowledged callback is in the inbox exactly
/// once after a restart, and WeCom's retries of everything (acknowledged or not) store
/// each event once.
#[tokio::test]
async fn no_acknowledged_callback_is_lost_or_stored_twice_across_kill_minus_nine() {
    use std::process::{Command, Stdio};
    use std::time::Duration;

    let dir = tempfile::tempdir().unwrap();
    let db_url = crate::helpers::fresh_database(dir.path()).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let key_line = if crate::helpers::on_postgres() {
        format!(
            "[security]\ndata_key = \"{}\"\n",
            crate::helpers::TEST_DATA_KEY
        )
    } else {
        String::new()
    };
    let config = dir.path().join("closeloop.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:{port}\"\ndatabase_url = \"{db_url}\"\n{}{key_line}",
            wecom_toml("5m")
        ),
    )
    .unwrap();
    let start = || {
        Command::new(env!("CARGO_BIN_EXE_closeloop"))
            .args(["serve", "--config"])
            .arg(&config)
            .env_remove("CLOSELOOP_TEST_POSTGRES_URL")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let client = reqwest::Client::new();
    let ready = move |client: reqwest::Client| async move {
        for _ in 0..150 {
            if let Ok(r) = client
                .get(format!("http://127.0.0.1:{port}/readyz"))
                .send()
                .await
            {
                if r.status() == 200 {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("server did not become ready");
    };
    let mut server = start();
    ready(client.clone()).await;

    let crypto = std::sync::Arc::new(crypto_for(CORP));
    let sender = client.clone();
    let send = move |n: u64| {
        let client = sender.clone();
        let crypto = crypto.clone();
        async move {
            let ts = now();
            let plain = format!(
                "<xml><ToUserName>{CORP}</ToUserName><FromUserName>liming</FromUserName><CreateTime>{ts}</CreateTime>\
                 <MsgType>text</MsgType><Content>第{n}条</Content><MsgId>{n}</MsgId></xml>"
            );
            let encrypted = crypto.encrypt_random(&plain);
            let sig = crypto.signature(&ts.to_string(), "n", &encrypted);
            let res = client
                .post(format!("http://127.0.0.1:{port}/callback/wecom?msg_signature={sig}&timestamp={ts}&nonce=n"))
                .body(format!("<xml><Encrypt><![CDATA[{encrypted}]]></Encrypt></xml>"))
                .timeout(Duration::from_secs(5))
                .send()
                .await;
            matches!(res, Ok(r) if r.status() == 200)
        }
    };
    // Stream 3,000 callbacks from 16 senders; kill the server part-way.
    const N: u64 = 3000;
    let next = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(1));
    let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut senders = Vec::new();
    for _ in 0..16 {
        let next = next.clone();
        let acked = acked.clone();
        let send = send.clone();
        senders.push(tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if n > N {
                    break;
                }
                if send(n).await {
                    acked.lock().unwrap().push(n);
                }
            }
        }));
    }
    while acked.lock().unwrap().len() < 300 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    server.kill().unwrap();
    server.wait().unwrap();
    for s in senders {
        s.await.unwrap();
    }
    let acked_before_restart: Vec<u64> = acked.lock().unwrap().clone();
    assert!(
        acked_before_restart.len() < N as usize,
        "the kill came too late to test anything"
    );

    let mut server = start();
    ready(client.clone()).await;
    let db = closeloop::db::Db::connect(&db_url).await.unwrap();
    let stored: Vec<(String,)> = sqlx::query_as("SELECT dedupe_key FROM inbox")
        .fetch_all(&db.pool)
        .await
        .unwrap();
    let stored: std::collections::HashSet<String> = stored.into_iter().map(|r| r.0).collect();
    for n in &acked_before_restart {
        assert!(
            stored.contains(&format!("msg:{n}")),
            "acknowledged callback {n} was lost"
        );
    }
    // WeCom retries everything it did not see acknowledged (and some it did).
    for n in 1..=N {
        assert!(send(n).await, "retry of {n} refused");
    }
    let (rows, distinct): (i64, i64) = sqlx::query_as(
        "SELECT CAST(COUNT(*) AS BIGINT), CAST(COUNT(DISTINCT dedupe_key) AS BIGINT) FROM inbox",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        (rows, distinct),
        (N as i64, N as i64),
        "each callback stored exactly once"
    );
    server.kill().unwrap();
    server.wait().unwrap();
}

/// The emulator delivers callbacks itself, WeCom-style: retried until a 200 (three retries
/// at most), each retry freshly encrypted; closeloop stores the event once.
#[tokio::test]
async fn emulator_delivered_callbacks_and_their_retries_are_stored_once() {
    let app = spawn_app_with(&wecom_toml("5m")).await;
    let emulator = closeloop::emulator::wecom::Emulator::start(CORP, vec![]).await;
    let url = app.url("/callback/wecom");
    let xml = add_contact("wmEXT777", now());
    assert_eq!(
        emulator.deliver_callback(&url, TOKEN, KEY, &xml).await,
        [200]
    );
    // The ack got lost on the way back, so WeCom sends the same event again.
    assert_eq!(
        emulator.deliver_callback(&url, TOKEN, KEY, &xml).await,
        [200]
    );
    assert_eq!(inbox(&app).await.len(), 1);
    // A misconfigured token is refused on every retry, and nothing is stored.
    let refused = emulator
        .deliver_callback(&url, "wrong-token", KEY, &add_contact("wmEXT778", now()))
        .await;
    assert_eq!(refused, [401, 401, 401, 401]);
    assert_eq!(inbox(&app).await.len(), 1);
}
