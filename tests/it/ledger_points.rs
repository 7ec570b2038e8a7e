//! Card clicks and the platform events closeloop acts on are tracking points, written in
//! the transaction of their effect and once per platform callback (the inbox dedupe key is
//! the point's external id), on the customer's timeline in order.

use closeloop::emulator::wecom::Emulator;
use serde_json::{json, Value};

use crate::callbacks::{deliver, CORP};
use crate::helpers::{spawn_app_with, TestApp};

async fn wecom_app() -> (Emulator, TestApp) {
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
    (emulator, app)
}

fn wecom_user(name: &str, role: &str, userid: &str) -> Value {
    json!({"name": name, "roles": [role], "identities": [{"platform": "wecom", "kind": "userid", "value": userid}]})
}

fn click(task: &str, from: &str, key: &str, code: &str) -> String {
    let ts = chrono::Utc::now().timestamp();
    format!(
        "<xml><ToUserName><![CDATA[{CORP}]]></ToUserName><FromUserName><![CDATA[{from}]]></FromUserName>\
         <CreateTime>{ts}</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[template_card_event]]></Event>\
         <EventKey><![CDATA[{key}]]></EventKey><TaskId><![CDATA[{task}]]></TaskId>\
         <CardType><![CDATA[button_interaction]]></CardType><ResponseCode><![CDATA[{code}]]></ResponseCode>\
         <AgentID>1000002</AgentID></xml>"
    )
}

fn external_change(change: &str, rep: &str, external: &str) -> String {
    let ts = chrono::Utc::now().timestamp();
    format!(
        "<xml><ToUserName><![CDATA[{CORP}]]></ToUserName><FromUserName><![CDATA[sys]]></FromUserName>\
         <CreateTime>{ts}</CreateTime><MsgType><![CDATA[event]]></MsgType>\
         <Event><![CDATA[change_external_contact]]></Event><ChangeType><![CDATA[{change}]]></ChangeType>\
         <UserID><![CDATA[{rep}]]></UserID><ExternalUserID><![CDATA[{external}]]></ExternalUserID>\
         <State><![CDATA[expo]]></State></xml>"
    )
}

/// Delivers a callback (signed and encrypted as WeCom does) and expects it accepted.
async fn send(app: &TestApp, body: &str) {
    let res = deliver(app, body, CORP, chrono::Utc::now().timestamp()).await;
    assert_eq!(res.status(), 200);
}

async fn points(app: &TestApp, query: &str) -> Vec<Value> {
    let page: Value = app
        .get(&format!("/api/v1/events?{query}"))
        .await
        .json()
        .await
        .unwrap();
    page["items"].as_array().unwrap().clone()
}

#[tokio::test]
async fn a_card_click_is_one_point_on_the_customers_timeline_even_when_retried() {
    let (emulator, app) = wecom_app().await;
    let rep = app
        .create("/api/v1/users", wecom_user("李明", "sales", "liming"))
        .await;
    let presales = app
        .create("/api/v1/users", wecom_user("张工", "presales", "zhanggong"))
        .await;
    app.create("/api/v1/users", wecom_user("王芳", "sales", "wangfang"))
        .await;
    let customer = app.customer("华南智造", rep["id"].as_str()).await;
    let r = app
        .create(
            "/api/v1/collab/requests",
            json!({"type": "presales_question", "customer": customer, "initiator": rep["id"],
                   "content": {"问题": "是否支持私有化部署？"}}),
        )
        .await;
    app.worker.drain().await.unwrap();
    let sent = emulator.received_messages();
    let card = sent
        .iter()
        .find(|m| m["touser"] == "zhanggong")
        .expect("the card reached presales");
    let task = card["template_card"]["task_id"]
        .as_str()
        .unwrap()
        .to_string();
    let before = points(&app, &format!("customer={customer}")).await;
    assert!(!before.is_empty(), "opening the request is on the timeline");

    // 张工 accepts; WeCom delivers the same callback twice.
    let code = emulator.issue_response_code();
    let first = click(&task, "zhanggong", &format!("accept:{task}"), &code);
    send(&app, &first).await;
    send(&app, &first).await;
    app.worker.drain().await.unwrap();
    let accepted: Value = app
        .get(&format!(
            "/api/v1/collab/requests/{}",
            r["id"].as_str().unwrap()
        ))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(accepted["status"], "accepted", "the click took effect");

    let timeline = points(&app, &format!("customer={customer}")).await;
    // The click, and the step it took (the request accepted from a card), once each.
    assert_eq!(timeline.len(), before.len() + 2, "one point for the click");
    let mut added: Vec<(&str, &str)> = timeline[before.len()..]
        .iter()
        .map(|p| (p["action"].as_str().unwrap(), p["source"].as_str().unwrap()))
        .collect();
    added.sort();
    assert_eq!(added, [("card.click", "card"), ("collab.accept", "card")]);
    assert_eq!(
        timeline[..before.len()]
            .iter()
            .map(|p| &p["id"])
            .collect::<Vec<_>>(),
        before.iter().map(|p| &p["id"]).collect::<Vec<_>>(),
        "the click comes after what came before"
    );
    let p = timeline
        .iter()
        .find(|p| p["action"] == "card.click")
        .unwrap();
    assert_eq!(p["action"], "card.click");
    assert_eq!(p["source"], "card");
    assert_eq!(p["actor_kind"], "user");
    assert_eq!(p["actor"], presales["id"]);
    assert_eq!(p["customer"], customer.as_str());
    assert_eq!(p["platform"], "wecom");
    assert!(p["external_id"].as_str().unwrap().starts_with("sha256:"));
    assert_eq!(
        p["payload"],
        json!({"card": task, "purpose": "collab.request", "button": "accept", "repeat": false, "recipient": true})
    );
    let inbox: Value = app
        .get("/api/v1/platform-events?type=template_card_event")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(inbox["items"][0]["dedupe_key"], p["external_id"]);

    // A repeat by the recipient (a double tap: a new code), a click on a forwarded card and a key that is no button.
    let again = emulator.issue_response_code();
    send(
        &app,
        &click(&task, "zhanggong", &format!("accept:{task}"), &again),
    )
    .await;
    let other = emulator.issue_response_code();
    send(
        &app,
        &click(&task, "wangfang", &format!("accept:{task}"), &other),
    )
    .await;
    let bogus = emulator.issue_response_code();
    send(
        &app,
        &click(&task, "zhanggong", &format!("bogus:{task}"), &bogus),
    )
    .await;
    app.worker.drain().await.unwrap();
    let clicks = points(&app, &format!("customer={customer}&action=card.click")).await;
    assert_eq!(clicks.len(), 3, "{clicks:?}");
    assert_eq!(clicks[1]["payload"]["button"], "accept");
    assert_eq!(clicks[1]["payload"]["repeat"], true);
    assert_eq!(clicks[1]["actor"], presales["id"]);
    assert_eq!(clicks[2]["payload"]["recipient"], false);
    assert_eq!(clicks[2]["payload"]["repeat"], false);
    assert_ne!(clicks[2]["actor"], presales["id"]);
    let accepted: Value = app
        .get(&format!(
            "/api/v1/collab/requests/{}",
            r["id"].as_str().unwrap()
        ))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        accepted["assignee"], presales["id"],
        "later clicks change nothing"
    );
}

#[tokio::test]
async fn external_contacts_added_and_removed_are_points_once_each() {
    let (emulator, app) = wecom_app().await;
    let rep = app
        .create("/api/v1/users", wecom_user("李明", "sales", "liming"))
        .await;
    emulator.add_external_contact(
        json!({"external_userid": "wmEXT001", "name": "张总", "corp_name": "华南智造", "type": 1}),
        json!([{"userid": "liming", "remark": "张总", "createtime": 1764206400, "state": "expo"}]),
    );
    send(
        &app,
        &external_change("add_external_contact", "liming", "wmEXT001"),
    )
    .await;
    app.worker.drain().await.unwrap();
    let found: Value = app
        .get(&format!(
            "/api/v1/customers?owner={}",
            rep["id"].as_str().unwrap()
        ))
        .await
        .json()
        .await
        .unwrap();
    let customer = found["items"][0]["id"].as_str().unwrap().to_string();

    let added = points(&app, &format!("customer={customer}")).await;
    assert_eq!(added.len(), 1, "{added:?}");
    let p = &added[0];
    assert_eq!(p["action"], "platform.contact_added");
    assert_eq!(p["source"], "platform_event");
    assert_eq!(p["actor_kind"], "user");
    assert_eq!(p["actor"], rep["id"]);
    assert_eq!(p["platform"], "wecom");
    assert_eq!(p["payload"], json!({"new_customer": true}));

    // The customer removes the rep (delivered twice), then the rep removes the customer.
    let by_customer = external_change("del_follow_user", "liming", "wmEXT001");
    send(&app, &by_customer).await;
    send(&app, &by_customer).await;
    app.worker.drain().await.unwrap();
    send(
        &app,
        &external_change("del_external_contact", "liming", "wmEXT001"),
    )
    .await;
    // A contact closeloop never linked: nothing to record.
    send(
        &app,
        &external_change("del_external_contact", "liming", "wmNOBODY"),
    )
    .await;
    app.worker.drain().await.unwrap();

    let removed = points(
        &app,
        &format!("customer={customer}&action=platform.contact_removed"),
    )
    .await;
    assert_eq!(removed.len(), 2, "{removed:?}");
    assert_eq!(removed[0]["actor_kind"], "customer");
    assert_eq!(removed[0]["payload"], json!({"by_customer": true}));
    assert_eq!(removed[1]["actor_kind"], "user");
    assert_eq!(removed[1]["actor"], rep["id"]);
    assert_eq!(removed[1]["payload"], json!({"by_customer": false}));
    assert_ne!(removed[0]["external_id"], removed[1]["external_id"]);
    assert_eq!(
        points(&app, "action=platform.contact_removed").await.len(),
        2,
        "the unlinked contact wrote nothing"
    );

    // Added by a member closeloop does not know: the platform is the actor.
    emulator.add_external_contact(
        json!({"external_userid": "wmEXT002", "name": "刘总", "corp_name": "东方精工", "type": 1}),
        json!([{"userid": "zhaoliu", "remark": "刘总", "createtime": 1764206400, "state": "expo"}]),
    );
    send(
        &app,
        &external_change("add_external_contact", "zhaoliu", "wmEXT002"),
    )
    .await;
    app.worker.drain().await.unwrap();
    let added = points(&app, "action=platform.contact_added").await;
    assert_eq!(added.len(), 2, "{added:?}");
    assert_eq!(added[1]["actor_kind"], "platform");
    assert_eq!(added[1]["actor"], Value::Null);
    assert_ne!(added[1]["customer"], customer.as_str());

    let inbox: Value = app
        .get("/api/v1/platform-events?type=change_external_contact.del_external_contact")
        .await
        .json()
        .await
        .unwrap();
    let statuses: Vec<&str> = inbox["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["processed", "ignored"]);
}

#[tokio::test]
async fn a_member_deleted_on_the_platform_is_a_point() {
    let (_emulator, app) = wecom_app().await;
    let member = app
        .create("/api/v1/users", wecom_user("张工", "presales", "zhanggong"))
        .await;
    let ts = chrono::Utc::now().timestamp();
    let body = format!(
        "<xml><ToUserName><![CDATA[{CORP}]]></ToUserName><FromUserName><![CDATA[sys]]></FromUserName>\
         <CreateTime>{ts}</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[change_contact]]></Event>\
         <ChangeType>delete_user</ChangeType><UserID><![CDATA[zhanggong]]></UserID></xml>"
    );
    send(&app, &body).await;
    send(&app, &body).await;
    app.worker.drain().await.unwrap();
    let left = points(&app, "action=platform.member_left").await;
    assert_eq!(left.len(), 1, "{left:?}");
    let p = &left[0];
    assert_eq!(p["actor_kind"], "platform");
    assert_eq!(p["actor"], member["id"]);
    assert_eq!(p["customer"], Value::Null);
    assert_eq!(p["source"], "platform_event");
    assert_eq!(p["platform"], "wecom");
    let user: Value = app
        .get(&format!("/api/v1/users/{}", member["id"].as_str().unwrap()))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(user["status"], "left");
}
