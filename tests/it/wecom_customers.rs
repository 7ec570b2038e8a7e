//! A customer added on WeCom becomes a closeloop customer with its contact, owner and
//! lead source (the channel's `State`), through `externalcontact/get` on the emulator.

use closeloop::emulator::wecom::Emulator;
use serde_json::{json, Value};

use crate::callbacks::{deliver, CORP};
use crate::helpers::spawn_app_with;

pub(crate) fn added(external: &str, rep: &str, state: &str) -> String {
    let ts = chrono::Utc::now().timestamp();
    format!(
        "<xml><ToUserName><![CDATA[{CORP}]]></ToUserName><FromUserName><![CDATA[sys]]></FromUserName>\
         <CreateTime>{ts}</CreateTime><MsgType><![CDATA[event]]></MsgType>\
         <Event><![CDATA[change_external_contact]]></Event><ChangeType><![CDATA[add_external_contact]]></ChangeType>\
         <UserID><![CDATA[{rep}]]></UserID><ExternalUserID><![CDATA[{external}]]></ExternalUserID>\
         <State><![CDATA[{state}]]></State><WelcomeCode><![CDATA[W]]></WelcomeCode></xml>"
    )
}

#[tokio::test]
async fn an_added_external_contact_becomes_a_customer_with_its_lead_source() {
    let emulator = Emulator::start(
        CORP,
        vec![
            ("app-secret".to_string(), "app"),
            ("contact-secret".to_string(), "contact"),
        ],
    )
    .await;
    let app = spawn_app_with(&format!(
        "[wecom]\ncorp_id = \"{CORP}\"\nagent_id = 1000002\nsecret = \"app-secret\"\ncontact_secret = \"contact-secret\"\n\
         token = \"QDG6eK\"\nencoding_aes_key = \"jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C\"\napi_base = \"{}\"\n",
        emulator.base_url()
    ))
    .await;
    let rep = app
        .create(
            "/api/v1/users",
            json!({"name": "李明", "roles": ["sales"], "identities": [{"platform": "wecom", "kind": "userid", "value": "liming"}]}),
        )
        .await;
    emulator.add_external_contact(
        json!({"external_userid": "wmEXT001", "name": "张总", "position": "生产总监", "corp_name": "华南智造",
               "corp_full_name": "华南智造科技有限公司", "type": 1, "gender": 1}),
        json!([{"userid": "liming", "remark": "张总", "createtime": 1764206400, "state": "douyin-form",
                "remark_mobiles": ["13800138000"]}]),
    );
    let ts = chrono::Utc::now().timestamp();
    assert_eq!(
        deliver(&app, &added("wmEXT001", "liming", "douyin-form"), CORP, ts)
            .await
            .status(),
        200
    );
    app.worker.drain().await.unwrap();

    let found: Value = app
        .get("/api/v1/customers?phone=138%200013%208000")
        .await
        .json()
        .await
        .unwrap();
    let customers = found["items"].as_array().unwrap();
    assert_eq!(customers.len(), 1, "found by the number the rep noted");
    let c = &customers[0];
    assert_eq!(c["name"], "华南智造科技有限公司");
    assert_eq!(c["owner"], rep["id"]);
    assert_eq!(c["contacts"][0]["name"], "张总");
    assert_eq!(c["contacts"][0]["title"], "生产总监");
    let leads: Value = app
        .get(&format!(
            "/api/v1/leads?customer={}",
            c["id"].as_str().unwrap()
        ))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(leads["items"][0]["source_channel"], "douyin-form");

    // Added again (another rep, or a re-add): linked, not duplicated.
    assert_eq!(
        deliver(&app, &added("wmEXT001", "liming", "other"), CORP, ts + 1)
            .await
            .status(),
        200
    );
    app.worker.drain().await.unwrap();
    assert_eq!(app.count("customers").await, 1);
    let events: Value = app
        .get("/api/v1/platform-events?type=change_external_contact.add_external_contact")
        .await
        .json()
        .await
        .unwrap();
    let items = events["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert!(items.iter().all(|i| i["status"] == "processed"));
    assert_eq!(items[1]["error"], "the customer was known already");
}
