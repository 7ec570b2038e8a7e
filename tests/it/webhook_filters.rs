//! Webhook subscribers choose: source and action filters decide at enqueue time which
//! points a subscription gets, `payload_version` decides the body's shape, and a
//! subscription made the old way keeps receiving exactly the body it received before.

use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use serde_json::{json, Map, Value};

use crate::helpers::{error_code, spawn_app_with, TestApp};

/// The point's keys in a delivery body before subscriptions had versions, read from
/// `TrackingPoint` as it was then. A version-1 body carries exactly these, whatever the
/// point gains later.
const VERSION_ONE_KEYS: [&str; 13] = [
    "action",
    "actor",
    "client_ip",
    "customer",
    "deal",
    "id",
    "occurred_at",
    "occurred_at_local",
    "payload",
    "platform",
    "source",
    "user_agent",
    "verification",
];

/// One received request: the path's receiver name, headers we check, raw body.
#[derive(Debug, Clone)]
struct Got {
    receiver: String,
    version: String,
    timestamp: String,
    signature: String,
    body: String,
}

#[derive(Clone, Default)]
struct Sink {
    got: Arc<Mutex<Vec<Got>>>,
}

async fn receive(
    State(sink): State<Sink>,
    Path(receiver): Path<String>,
    headers: HeaderMap,
    body: String,
) -> StatusCode {
    let h = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    sink.got.lock().unwrap().push(Got {
        receiver,
        version: h("x-closeloop-payload-version"),
        timestamp: h("x-closeloop-timestamp"),
        signature: h("x-closeloop-signature"),
        body,
    });
    StatusCode::OK
}

/// A receiver on 127.0.0.1 (`<base>/<name>` for any name) and a server allowed to reach it.
async fn start() -> (TestApp, String, Sink) {
    let sink = Sink::default();
    let router = Router::new()
        .route("/{receiver}", post(receive))
        .with_state(sink.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let at = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    let app = spawn_app_with(&format!(
        "[webhooks]\nallow_private = [\"127.0.0.1:{}\"]\n",
        at.port()
    ))
    .await;
    (app, format!("http://{at}"), sink)
}

impl Sink {
    fn take(&self) -> Vec<Got> {
        std::mem::take(&mut *self.got.lock().unwrap())
    }
}

async fn subscribe(app: &TestApp, url: String, extra: Value) -> Value {
    let mut body = json!({"url": url, "events": ["tracking_point.created"]});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    app.create("/api/v1/webhooks", body).await
}

/// The (source, action) of each point queued for delivery to `hook`, in order.
async fn queued(app: &TestApp, hook: &Value) -> Vec<(String, String)> {
    let rows: Vec<(String,)> = sqlx::query_as(
        "SELECT payload FROM jobs WHERE kind = 'webhook.deliver' ORDER BY created_at, id",
    )
    .fetch_all(&app.db.pool)
    .await
    .unwrap();
    rows.iter()
        .map(|(p,)| serde_json::from_str::<Value>(p).unwrap())
        .filter(|p| p["webhook_id"] == hook["id"])
        .map(|p| {
            let e = &p["event"];
            let point = if e["version"] == 2 {
                &e["point"]
            } else {
                &e["data"]
            };
            (
                point["source"].as_str().unwrap().to_string(),
                point["action"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// The actions of the points queued for delivery to `hook`, in order.
async fn queued_actions(app: &TestApp, hook: &Value) -> Vec<String> {
    queued(app, hook)
        .await
        .into_iter()
        .map(|(_, a)| a)
        .collect()
}

/// Records a point through the API; returns the API's answer (201 or the refusal).
async fn record(app: &TestApp, rep: &str, customer: &str, action: &str) -> (u16, Value) {
    let res = app
        .post(
            "/api/v1/events",
            &json!({"actor": rep, "customer": customer, "action": action}),
        )
        .await;
    (res.status().as_u16(), res.json().await.unwrap())
}

/// A sidebar tap by `rep`, signed in on WeCom.
async fn tap(app: &TestApp, rep: &str, customer: &str, action: &str) -> u16 {
    let (value, csrf) = closeloop::http::pages::session::create(
        &app.db,
        chrono::Utc::now().timestamp_millis(),
        &app.org_id,
        rep,
        "wecom",
    )
    .await
    .unwrap();
    app.client
        .post(app.url(&format!("/web/customers/{customer}/actions")))
        .header(
            "cookie",
            format!("{}={value}", closeloop::http::pages::session::COOKIE),
        )
        .header("x-csrf-token", csrf)
        .json(&json!({"action": action}))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

fn keys(v: &Value) -> Vec<String> {
    v.as_object().unwrap().keys().cloned().collect()
}

fn signed(secret: &Value, got: &Got) -> bool {
    got.signature
        == format!(
            "sha256={}",
            closeloop::webhooks::sign(secret.as_str().unwrap(), &got.timestamp, &got.body)
        )
}

#[tokio::test]
async fn a_subscription_made_the_old_way_receives_the_version_one_body_unchanged() {
    let (app, base, sink) = start().await;
    let hook = subscribe(&app, format!("{base}/old"), json!({})).await;
    assert_eq!(hook["sources"], Value::Null);
    assert_eq!(hook["actions"], Value::Null);
    assert_eq!(hook["payload_version"], 1);
    // A row from before the filters existed: the migration's defaults.
    let legacy = closeloop::db::new_id();
    sqlx::query(
        "INSERT INTO webhooks (id, org_id, url, secret_enc, events, active, created_at) \
         VALUES ($1, $2, $3, $4, 'tracking_point.created', 1, 0)",
    )
    .bind(&legacy)
    .bind(&app.org_id)
    .bind(format!("{base}/legacy"))
    .bind(app.cipher.encrypt("webhooks.secret", "whsec_legacy"))
    .execute(&app.db.pool)
    .await
    .unwrap();
    let listed: Value = app.get("/api/v1/webhooks").await.json().await.unwrap();
    for item in listed["items"].as_array().unwrap() {
        assert_eq!(
            (&item["sources"], &item["actions"], &item["payload_version"]),
            (&Value::Null, &Value::Null, &json!(1)),
            "{item}"
        );
    }

    let rep = app.user("李明", &["sales"]).await;
    let customer = app.customer("华南智造", Some(&rep)).await;
    let (status, point) = record(&app, &rep, &customer, "已电话沟通").await;
    assert_eq!(status, 201);
    for key in VERSION_ONE_KEYS {
        assert!(point.get(key).is_some(), "the point still has {key}");
    }
    // Every source and action, as before.
    assert_eq!(tap(&app, &rep, &customer, "客户提出价格异议").await, 201);
    // A delivery queued before the upgrade carries no version: it is version 1.
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT id, payload FROM jobs WHERE kind = 'webhook.deliver' ORDER BY created_at, id",
    )
    .fetch_all(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(rows.len(), 4, "two points, two subscribers");
    let (job, payload) = &rows[0];
    let mut payload: Value = serde_json::from_str(payload).unwrap();
    payload.as_object_mut().unwrap().remove("payload_version");
    sqlx::query("UPDATE jobs SET payload = $1 WHERE id = $2")
        .bind(payload.to_string())
        .bind(job)
        .execute(&app.db.pool)
        .await
        .unwrap();

    assert_eq!(app.worker.drain().await.unwrap(), 4);
    let got = sink.take();
    assert_eq!(got.len(), 4);
    for g in &got {
        assert_eq!(g.version, "1", "{g:?}");
        let secret = if g.receiver == "old" {
            hook["secret"].clone()
        } else {
            json!("whsec_legacy")
        };
        assert!(signed(&secret, g), "the signature scheme is unchanged");
        let body: Value = serde_json::from_str(&g.body).unwrap();
        assert_eq!(keys(&body), ["data", "type"]);
        assert_eq!(keys(&body["data"]), VERSION_ONE_KEYS);
        assert_eq!(body["type"], "tracking_point.created");
    }
    // Byte for byte what a delivery of this point was: `{"data": point, "type": …}`
    // with the keys in order, the point cut to the version-1 keys.
    let mut data = Map::new();
    for key in VERSION_ONE_KEYS {
        data.insert(key.into(), point[key].clone());
    }
    let expected = json!({"type": "tracking_point.created", "data": data}).to_string();
    for receiver in ["old", "legacy"] {
        let first = got
            .iter()
            .find(|g| g.receiver == receiver && g.body.contains(point["id"].as_str().unwrap()))
            .unwrap();
        assert_eq!(first.body, expected, "{receiver}");
    }
    let sources: Vec<String> = got
        .iter()
        .map(|g| serde_json::from_str::<Value>(&g.body).unwrap()["data"]["source"].to_string())
        .collect();
    assert_eq!(sources.iter().filter(|s| *s == "\"sidebar\"").count(), 2);
}

#[tokio::test]
async fn a_source_filter_delivers_only_those_sources() {
    let (app, base, sink) = start().await;
    let sidebar = subscribe(
        &app,
        format!("{base}/sidebar"),
        json!({"sources": ["sidebar"]}),
    )
    .await;
    assert_eq!(sidebar["sources"], json!(["sidebar"]));
    let everything = subscribe(&app, format!("{base}/all"), json!({})).await;
    let rep = app.user("王芳", &["sales"]).await;
    let customer = app.customer("华东精密", Some(&rep)).await;

    assert_eq!(record(&app, &rep, &customer, "已电话沟通").await.0, 201);
    for _ in 0..2 {
        assert_eq!(tap(&app, &rep, &customer, "客户提出价格异议").await, 201);
    }
    // The third repeat is refused and writes the rule hit, a `system` point.
    assert_eq!(tap(&app, &rep, &customer, "客户提出价格异议").await, 409);
    let all = queued(&app, &everything).await;
    let sources: Vec<&str> = all.iter().map(|(s, _)| s.as_str()).collect();
    assert!(
        all.contains(&("system".into(), "rule.repeat_limit".into())),
        "the unfiltered subscription gets every point, the rule hit too: {all:?}"
    );
    assert!(sources.contains(&"api"), "{all:?}");
    let wanted: Vec<(String, String)> = all
        .iter()
        .filter(|(s, _)| s == "sidebar")
        .cloned()
        .collect();
    assert_eq!(
        wanted,
        [
            ("sidebar".to_string(), "客户提出价格异议".to_string()),
            ("sidebar".to_string(), "客户提出价格异议".to_string())
        ]
    );
    assert_eq!(
        queued(&app, &sidebar).await,
        wanted,
        "neither the API point nor the system rule hits are queued"
    );

    assert_eq!(app.worker.drain().await.unwrap(), all.len() + wanted.len());
    let got: Vec<Value> = sink
        .take()
        .into_iter()
        .filter(|g| g.receiver == "sidebar")
        .map(|g| serde_json::from_str(&g.body).unwrap())
        .collect();
    assert_eq!(got.len(), 2);
    assert!(got.iter().all(|b| b["data"]["source"] == "sidebar"));
}

#[tokio::test]
async fn an_action_filter_matches_exact_names_and_prefixes() {
    let (app, base, _sink) = start().await;
    let hook = subscribe(
        &app,
        format!("{base}/actions"),
        json!({"actions": ["rule.*", "已电话沟通", "rule.*"]}),
    )
    .await;
    assert_eq!(
        hook["actions"],
        json!(["rule.*", "已电话沟通"]),
        "duplicates dropped"
    );
    let api_only = subscribe(
        &app,
        format!("{base}/both"),
        json!({"sources": ["api"], "actions": ["客户提出*"]}),
    )
    .await;
    let rep = app.user("张伟", &["sales"]).await;
    let customer = app.customer("西部物联", Some(&rep)).await;

    assert_eq!(record(&app, &rep, &customer, "已电话沟通").await.0, 201);
    assert_eq!(record(&app, &rep, &customer, "已电话沟通过").await.0, 201);
    assert_eq!(tap(&app, &rep, &customer, "客户提出价格异议").await, 201);
    assert_eq!(
        record(&app, &rep, &customer, "客户提出价格异议").await.0,
        201
    );
    let (status, refused) = record(&app, &rep, &customer, "客户提出价格异议").await;
    assert_eq!(status, 409, "{refused}");

    let got = queued_actions(&app, &hook).await;
    assert!(
        got.contains(&"rule.repeat_limit".to_string()),
        "`rule.*` matches the rule hit: {got:?}"
    );
    assert_eq!(
        got.iter()
            .filter(|a| !a.starts_with("rule."))
            .collect::<Vec<_>>(),
        ["已电话沟通"],
        "an exact name matches only itself"
    );
    assert_eq!(
        queued_actions(&app, &api_only).await,
        ["客户提出价格异议"],
        "both filters must hold: the sidebar tap and the system rule hit are left out"
    );
}

#[tokio::test]
async fn version_two_wraps_the_whole_point_in_an_envelope() {
    let (app, base, sink) = start().await;
    let hook = subscribe(&app, format!("{base}/v2"), json!({"payload_version": 2})).await;
    assert_eq!(hook["payload_version"], 2);
    let rep = app.user("李明", &["sales"]).await;
    let customer = app.customer("华南智造", Some(&rep)).await;
    let (_, point) = record(&app, &rep, &customer, "已电话沟通").await;

    assert_eq!(app.worker.drain().await.unwrap(), 1);
    let got = sink.take();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].version, "2");
    assert!(signed(&hook["secret"], &got[0]));
    let body: Value = serde_json::from_str(&got[0].body).unwrap();
    assert_eq!(
        keys(&body),
        [
            "event",
            "id",
            "occurred_at",
            "point",
            "version",
            "webhook_id"
        ]
    );
    assert_eq!(body["version"], 2);
    assert_eq!(body["event"], "tracking_point.created");
    assert_eq!(body["id"], point["id"]);
    assert_eq!(body["webhook_id"], hook["id"]);
    assert_eq!(body["occurred_at"], point["occurred_at"]);
    assert_eq!(
        body["point"], point,
        "the whole point, as the API shows it, every field"
    );
}

#[tokio::test]
async fn bad_filters_are_refused_and_nothing_is_written() {
    let (app, base, _sink) = start().await;
    let url = format!("{base}/x");
    let audit = app.count("audit_log").await;
    for (extra, says) in [
        (json!({"sources": ["email"]}), "unknown source `email`"),
        (json!({"sources": []}), "at least one source"),
        (json!({"actions": []}), "at least one action"),
        (json!({"actions": ["*"]}), "`*` may only end"),
        (json!({"actions": ["a*b"]}), "`*` may only end"),
        (json!({"actions": ["rule. *"]}), "spaces"),
        (json!({"actions": ["x".repeat(65)]}), "longer than 64"),
        (json!({"actions": vec!["x"; 51]}), "at most 50"),
        (json!({"actions": "rule.*"}), "actions"),
        (
            json!({"payload_version": 3}),
            "payload_version must be 1 or 2",
        ),
        (
            json!({"payload_version": 0}),
            "payload_version must be 1 or 2",
        ),
        (json!({"payload_version": "2"}), "payload_version"),
    ] {
        let mut body = json!({"url": url, "events": ["tracking_point.created"]});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        let (status, code, message) = error_code(app.post("/api/v1/webhooks", &body).await).await;
        assert_eq!((status, code.as_str()), (422, "invalid_input"), "{extra}");
        assert!(message.contains(says), "{extra}: {message}");
    }
    assert_eq!(app.count("webhooks").await, 0);
    assert_eq!(app.count("audit_log").await, audit);
}

#[tokio::test]
async fn the_audit_names_the_filters_and_the_version() {
    let (app, base, _sink) = start().await;
    let hook = subscribe(
        &app,
        format!("{base}/a"),
        json!({"sources": ["card", "platform_event"], "actions": ["card.*"], "payload_version": 2}),
    )
    .await;
    let id = hook["id"].as_str().unwrap();
    let listed: Value = app.get("/api/v1/webhooks").await.json().await.unwrap();
    let item = &listed["items"][0];
    assert_eq!(item["sources"], json!(["card", "platform_event"]));
    assert_eq!(item["actions"], json!(["card.*"]));
    assert_eq!(item["payload_version"], 2);
    let res = app
        .client
        .delete(app.url(&format!("/api/v1/webhooks/{id}")))
        .bearer_auth(&app.key)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    for action in ["webhook.create", "webhook.deactivate"] {
        let (detail,): (String,) =
            sqlx::query_as("SELECT detail FROM audit_log WHERE action = $1 AND target_id = $2")
                .bind(action)
                .bind(id)
                .fetch_one(&app.db.pool)
                .await
                .unwrap();
        let detail: Value = serde_json::from_str(&detail).unwrap();
        assert_eq!(
            detail["sources"],
            json!(["card", "platform_event"]),
            "{action}"
        );
        assert_eq!(detail["actions"], json!(["card.*"]), "{action}");
        assert_eq!(detail["payload_version"], 2, "{action}");
        assert!(detail.get("secret").is_none());
    }
}

#[tokio::test]
async fn the_openapi_document_states_the_filters_precisely() {
    let (app, _, _) = start().await;
    let doc: Value = app
        .client
        .get(app.url("/api/v1/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let schemas = &doc["components"]["schemas"];
    let new = &schemas["NewWebhook"]["properties"];
    let shown = &schemas["Webhook"]["properties"];
    let sources = json!(["sidebar", "api", "card", "platform_event", "system"]);
    for (schema, nullable) in [(new, false), (shown, true)] {
        assert_eq!(schema["sources"]["items"]["enum"], sources);
        assert_eq!(
            (
                &schema["sources"]["minItems"],
                &schema["sources"]["maxItems"]
            ),
            (&json!(1), &json!(5))
        );
        assert_eq!(schema["sources"]["uniqueItems"], true);
        assert_eq!(
            (
                &schema["actions"]["minItems"],
                &schema["actions"]["maxItems"]
            ),
            (&json!(1), &json!(50))
        );
        assert_eq!(schema["actions"]["items"]["maxLength"], 64);
        assert_eq!(schema["payload_version"]["enum"], json!([1, 2]));
        let ty = if nullable {
            json!(["array", "null"])
        } else {
            json!("array")
        };
        assert_eq!(schema["sources"]["type"], ty);
        assert_eq!(schema["actions"]["type"], ty);
    }
    assert_eq!(
        schemas["NewWebhook"]["required"],
        json!(["url", "events"]),
        "the filters and the version are optional"
    );
}
