//! The WeCom directory: a full sync at start (and on schedule) and incremental updates from
//! contact-change callbacks; closeloop roles survive every sync.

use closeloop::emulator::wecom::Emulator;
use serde_json::{json, Value};

use crate::callbacks::{deliver, CORP};
use crate::helpers::{spawn_app_with, TestApp};

pub(crate) fn member(id: &str, name: &str, leaders: &[&str]) -> Value {
    json!({"userid": id, "name": name, "department": [2], "main_department": 2, "status": 1, "direct_leader": leaders})
}

pub(crate) async fn user_by_wecom_id(app: &TestApp, id: &str) -> Value {
    let page: Value = app
        .get(&format!(
            "/api/v1/users?platform=wecom&identity_kind=userid&identity_value={id}"
        ))
        .await
        .json()
        .await
        .unwrap();
    page["items"][0].clone()
}

fn contact_change(change: &str, id: &str) -> String {
    let ts = chrono::Utc::now().timestamp();
    format!(
        "<xml><ToUserName><![CDATA[{CORP}]]></ToUserName><FromUserName><![CDATA[sys]]></FromUserName>\
         <CreateTime>{ts}</CreateTime><MsgType><![CDATA[event]]></MsgType><Event><![CDATA[change_contact]]></Event>\
         <ChangeType>{change}</ChangeType><UserID><![CDATA[{id}]]></UserID></xml>"
    )
}

#[tokio::test]
async fn the_directory_syncs_in_full_and_incrementally_and_keeps_roles() {
    let emulator = Emulator::start(CORP, vec![("app-secret".to_string(), "app")]).await;
    emulator.set_directory(
        vec![
            json!({"id": 1, "name": "总部", "parentid": 0}),
            json!({"id": 2, "name": "华南销售部", "parentid": 1}),
        ],
        vec![
            member("wangjl", "王经理", &[]),
            member("liming", "李明", &["wangjl"]),
            member("zhanggong", "张工", &["wangjl", "liming"]),
        ],
    );
    let app = spawn_app_with(&format!(
        "[wecom]\ncorp_id = \"{CORP}\"\nagent_id = 1000002\nsecret = \"app-secret\"\ntoken = \"QDG6eK\"\n\
         encoding_aes_key = \"jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C\"\napi_base = \"{}\"\n",
        emulator.base_url()
    ))
    .await;
    // Known before the sync, with a closeloop role the platform knows nothing about.
    let before = app
        .create(
            "/api/v1/users",
            json!({"name": "Li", "roles": ["sales"], "identities": [{"platform": "wecom", "kind": "userid", "value": "liming"}]}),
        )
        .await;
    app.worker.drain().await.unwrap(); // the start-up sync
    assert_eq!(app.count("users").await, 3);
    let liming = user_by_wecom_id(&app, "liming").await;
    let wang = user_by_wecom_id(&app, "wangjl").await;
    assert_eq!(liming["id"], before["id"], "linked, not duplicated");
    assert_eq!(liming["name"], "李明");
    assert_eq!(liming["department"], "华南销售部");
    assert_eq!(liming["roles"], json!(["sales"]), "roles survive the sync");
    assert_eq!(liming["superiors"], json!([wang["id"]]));
    let zhang = user_by_wecom_id(&app, "zhanggong").await;
    assert_eq!(zhang["superiors"].as_array().unwrap().len(), 2);

    // Incremental: a new member, then a deletion.
    let mut users = vec![
        member("wangjl", "王经理", &[]),
        member("liming", "李明", &["wangjl"]),
    ];
    users.push(member("zhaojf", "赵交付", &["wangjl"]));
    users.push(member("zhanggong", "张工", &["wangjl", "liming"]));
    emulator.set_directory(
        vec![json!({"id": 2, "name": "华南销售部", "parentid": 1})],
        users,
    );
    let ts = chrono::Utc::now().timestamp();
    assert_eq!(
        deliver(&app, &contact_change("create_user", "zhaojf"), CORP, ts)
            .await
            .status(),
        200
    );
    assert_eq!(
        deliver(&app, &contact_change("delete_user", "zhanggong"), CORP, ts)
            .await
            .status(),
        200
    );
    app.worker.drain().await.unwrap();
    let zhao = user_by_wecom_id(&app, "zhaojf").await;
    assert_eq!(zhao["name"], "赵交付");
    assert_eq!(zhao["superiors"], json!([wang["id"]]));
    assert_eq!(user_by_wecom_id(&app, "zhanggong").await["status"], "left");

    // A later full sync marks whoever the platform no longer lists as left.
    emulator.set_directory(
        vec![json!({"id": 2, "name": "华南销售部", "parentid": 1})],
        vec![
            member("wangjl", "王经理", &[]),
            member("liming", "李明明", &["wangjl"]),
        ],
    );
    closeloop::jobs::enqueue_now(
        &app.db,
        chrono::Utc::now().timestamp_millis(),
        closeloop::jobs::NewJob::new("directory.sync", json!({})).org(&app.org_id),
    )
    .await
    .unwrap();
    app.worker.drain().await.unwrap();
    let zhao = user_by_wecom_id(&app, "zhaojf").await;
    assert_eq!(zhao["status"], "left");
    assert_eq!(user_by_wecom_id(&app, "liming").await["name"], "李明明");
    // The departure the sync found is a point about the member, once: a second sync of the
    // same listing compares active members only.
    let left_points = || async {
        let page: serde_json::Value = app
            .get(&format!(
                "/api/v1/events?actor={}&action=platform.member_left",
                zhao["id"].as_str().unwrap()
            ))
            .await
            .json()
            .await
            .unwrap();
        page["items"].as_array().unwrap().clone()
    };
    let points = left_points().await;
    assert_eq!(points.len(), 1, "{points:?}");
    assert_eq!(points[0]["source"], "system");
    assert_eq!(points[0]["actor_kind"], "platform");
    assert_eq!(points[0]["platform"], "wecom");
    assert_eq!(points[0]["customer"], serde_json::Value::Null);
    assert_eq!(points[0]["payload"], json!({"via": "directory_sync"}));
    closeloop::jobs::enqueue_now(
        &app.db,
        chrono::Utc::now().timestamp_millis(),
        closeloop::jobs::NewJob::new("directory.sync", json!({})).org(&app.org_id),
    )
    .await
    .unwrap();
    app.worker.drain().await.unwrap();
    assert_eq!(left_points().await.len(), 1);
    assert_eq!(
        user_by_wecom_id(&app, "liming").await["roles"],
        json!(["sales"])
    );
}
