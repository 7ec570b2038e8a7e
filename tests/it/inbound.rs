//! The one inbound pipeline (verify → inbox → acknowledge) on all three platforms at once:
//! a platform's retry of an event, and of a signed body that cannot be parsed, is
//! acknowledged the platform's way every time and kept once.

use closeloop::emulator::dingtalk::{Emulator as DingtalkEmulator, PushTarget};
use closeloop::emulator::feishu::{Emulator as FeishuEmulator, EventTarget};
use closeloop::emulator::wecom::Emulator as WecomEmulator;
use serde_json::{json, Value};

use crate::helpers::{spawn_app_with, TestApp};

const WECOM_CORP: &str = "wwinbound00000001";
const WECOM_TOKEN: &str = "wecomtoken";
const WECOM_KEY: &str = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C";
const DINGTALK_APP_KEY: &str = "dinginbound00001";
const DINGTALK_TOKEN: &str = "dingtoken";
const DINGTALK_KEY: &str = "Yue0EfdN5900c1ce5cf6A152c63DDe1808a60c5ecd7";
const FEISHU_APP_ID: &str = "cli_inbound00001";
const FEISHU_TOKEN: &str = "feishu-vtoken";
const FEISHU_KEY: &str = "Fq3BucfwoJQMjXxrwi3I6fFildR0NgmI";

fn config() -> String {
    format!(
        "[wecom]\ncorp_id = \"{WECOM_CORP}\"\nagent_id = 1000002\nsecret = \"s\"\n\
         token = \"{WECOM_TOKEN}\"\nencoding_aes_key = \"{WECOM_KEY}\"\n\
         api_base = \"http://127.0.0.1:9\"\n\
         [dingtalk]\napp_key = \"{DINGTALK_APP_KEY}\"\napp_secret = \"s\"\n\
         token = \"{DINGTALK_TOKEN}\"\naes_key = \"{DINGTALK_KEY}\"\n\
         api_base = \"http://127.0.0.1:9\"\noapi_base = \"http://127.0.0.1:9\"\n\
         [feishu]\napp_id = \"{FEISHU_APP_ID}\"\napp_secret = \"s\"\n\
         verification_token = \"{FEISHU_TOKEN}\"\nencrypt_key = \"{FEISHU_KEY}\"\n\
         api_base = \"http://127.0.0.1:9\"\n"
    )
}

async fn inbox(app: &TestApp, platform: &str) -> Vec<Value> {
    let page: Value = app
        .get(&format!("/api/v1/platform-events?platform={platform}"))
        .await
        .json()
        .await
        .unwrap();
    page["items"].as_array().unwrap().clone()
}

/// One stored event (`received`, with its processing job) and one quarantined body.
async fn assert_kept_once(app: &TestApp, platform: &str, event_type: &str) {
    let items = inbox(app, platform).await;
    assert_eq!(items.len(), 2, "{platform}: {items:?}");
    let event = items.iter().find(|i| i["event_type"] == event_type);
    assert_eq!(event.unwrap()["status"], "received", "{platform}");
    let quarantined: Vec<_> = items
        .iter()
        .filter(|i| i["status"] == "quarantined")
        .collect();
    assert_eq!(quarantined.len(), 1, "{platform}");
    assert!(quarantined[0]["error"].is_string(), "{platform}");
    let jobs: (i64,) = sqlx::query_as(
        "SELECT CAST(COUNT(*) AS BIGINT) FROM jobs WHERE kind = 'inbox.process' \
         AND payload LIKE $1",
    )
    .bind(format!(
        "%{}%",
        event.unwrap()["id"].as_str().unwrap_or("no id")
    ))
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(jobs.0, 1, "{platform}: one processing job for the event");
}

#[tokio::test]
async fn every_platform_acknowledges_a_retry_alike_and_keeps_it_once() {
    let app = spawn_app_with(&config()).await;

    // WeCom: an empty 200 for each delivery of a member's creation and of a body that is
    // signed but no event.
    let wecom = WecomEmulator::start(WECOM_CORP, vec![]).await;
    let ts = chrono::Utc::now().timestamp();
    let created = format!(
        "<xml><ToUserName><![CDATA[{WECOM_CORP}]]></ToUserName><FromUserName><![CDATA[sys]]></FromUserName>\
         <CreateTime>{ts}</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[change_contact]]></Event>\
         <ChangeType>create_user</ChangeType><UserID><![CDATA[zhaojf]]></UserID></xml>"
    );
    let url = app.url("/callback/wecom");
    for plain in [created.as_str(), "<xml><MsgType>event</MsgType><Event>"] {
        for _ in 0..2 {
            let statuses = wecom
                .deliver_callback(&url, WECOM_TOKEN, WECOM_KEY, plain)
                .await;
            assert_eq!(statuses, vec![200], "wecom answers once with 200");
        }
    }
    assert_kept_once(&app, "wecom", "change_contact.create_user").await;

    // DingTalk: the encrypted `success` for each push.
    let dingtalk = DingtalkEmulator::start(DINGTALK_APP_KEY, "s").await;
    let target = PushTarget {
        url: app.url("/callback/dingtalk"),
        token: DINGTALK_TOKEN.into(),
        aes_key: DINGTALK_KEY.into(),
        owner_key: DINGTALK_APP_KEY.into(),
    };
    let added = json!({
        "EventType": "user_add_org", "TimeStamp": chrono::Utc::now().timestamp_millis().to_string(),
        "UserId": ["manager8"], "eventId": "e-inbound-1"
    })
    .to_string();
    for event in [added.as_str(), "this is not an event"] {
        for _ in 0..2 {
            let attempts = dingtalk.push_event(&target, event).await;
            assert_eq!(attempts.len(), 1);
            assert!(attempts[0].success_reply, "dingtalk: {event}");
        }
    }
    assert_kept_once(&app, "dingtalk", "user_add_org").await;

    // Feishu: `success` for each push, signed and encrypted.
    let feishu = FeishuEmulator::start(FEISHU_APP_ID, "s").await;
    let target = EventTarget {
        url: app.url("/callback/feishu"),
        encrypt_key: Some(FEISHU_KEY.into()),
        verification_token: FEISHU_TOKEN.into(),
    };
    let user = feishu.event(
        "contact.user.created_v3",
        FEISHU_TOKEN,
        json!({"object": {"user_id": "u1", "open_id": "ou_1", "name": "张三"}}),
    );
    let broken = feishu.event(
        "contact.user.created_v3",
        FEISHU_TOKEN,
        json!({"object": {}}),
    );
    for event in [&user, &broken] {
        for _ in 0..2 {
            let attempts = feishu.push(&target, event).await;
            assert_eq!(attempts.len(), 1);
            assert_eq!(attempts[0].status, 200);
            assert_eq!(attempts[0].body, Some(json!({"msg": "success"})));
        }
    }
    assert_kept_once(&app, "feishu", "contact.user.created_v3").await;
}
