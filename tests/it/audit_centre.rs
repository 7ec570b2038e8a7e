//! The audit centre (issue 15 item 8): the page `/admin/audit` for security officers and
//! admins, the seed's case (three taps on 张总's customer from one IP within one minute,
//! found by the customer on the page and the API), and `closeloop audit verify` over every
//! organisation.

use closeloop::access::audit::{self, AuditEntry};
use closeloop::clock::{Clock, SystemClock};
use serde_json::{json, Value};

use crate::audit_chain::cli;
use crate::helpers::{spawn_app, TestApp};

/// A web session for `user`: (Cookie header, CSRF token).
async fn session(app: &TestApp, user: &str) -> (String, String) {
    let (value, csrf) = closeloop::http::pages::session::create(
        &app.db,
        SystemClock.now_ms(),
        &app.org_id,
        user,
        "dev",
    )
    .await
    .unwrap();
    (
        format!("{}={value}", closeloop::http::pages::session::COOKIE),
        csrf,
    )
}

async fn tap(app: &TestApp, customer: &str, cookie: &(String, String), action: &str) -> Value {
    let res = app
        .client
        .post(app.url(&format!("/web/customers/{customer}/actions")))
        .header("cookie", &cookie.0)
        .header("x-csrf-token", &cookie.1)
        .json(&json!({"action": action}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201, "{action}");
    res.json().await.unwrap()
}

async fn api_items(app: &TestApp, query: &str) -> Vec<Value> {
    let res = app.get(&format!("/api/v1/audit?{query}")).await;
    assert_eq!(res.status(), 200, "{query}");
    let body: Value = res.json().await.unwrap();
    body["items"].as_array().unwrap().clone()
}

/// The rows of the page's table: (data-action, the row's HTML).
fn rows(html: &str) -> Vec<(String, String)> {
    html.split("<tr class=\"entry\" data-action=\"")
        .skip(1)
        .map(|r| {
            let action = r[..r.find('"').unwrap()].to_string();
            (action, r[..r.find("</tr>").unwrap()].to_string())
        })
        .collect()
}

#[tokio::test]
async fn three_taps_from_one_ip_are_found_by_the_customer_on_the_page_and_the_api() {
    let app = spawn_app().await;
    let rep = app.user("李明", &["sales"]).await;
    let officer = app.user("赵安", &["security"]).await;
    let customer = app.customer("华南智造科技有限公司", Some(&rep)).await;
    let other = app.customer("北方重工", Some(&rep)).await;
    let cookie = session(&app, &rep).await;
    let mut points = Vec::new();
    for action in ["已电话沟通", "已发送样品清单", "客户提出价格异议"] {
        points.push(tap(&app, &customer, &cookie, action).await);
    }
    tap(&app, &other, &cookie, "已电话沟通").await;

    // The API: three `point.record` entries on the customer, by the rep, from one IP,
    // within one minute, naming the points by id.
    let found = api_items(&app, &format!("customer={customer}&action=point.record")).await;
    assert_eq!(found.len(), 3, "{found:#?}");
    let ip = found[0]["client_ip"].as_str().expect("an IP").to_string();
    assert_eq!(ip, "127.0.0.1");
    for (e, p) in found.iter().zip(&points) {
        assert_eq!(e["client_ip"], json!(ip));
        assert_eq!(e["actor_kind"], "user");
        assert_eq!(e["actor_id"], json!(rep));
        assert_eq!(e["target_id"], json!(customer));
        assert_eq!(e["detail"]["point"], p["id"]);
    }
    let times: Vec<i64> = found
        .iter()
        .map(|e| {
            chrono::DateTime::parse_from_rfc3339(e["at"].as_str().unwrap())
                .unwrap()
                .timestamp_millis()
        })
        .collect();
    assert!(times[2] - times[0] < 60_000, "{times:?}");
    // Ids only: no name, phone or typed action in any entry.
    let all = api_items(&app, "limit=500").await;
    let text = Value::Array(all).to_string();
    for personal in ["华南智造", "张总", "13800138000", "已电话沟通"] {
        assert!(!text.contains(personal), "{personal} in {text}");
    }

    // The page, as the security officer, by customer id and by part of its name.
    for q in [customer.clone(), "华南智造".into()] {
        let (status, html) = app
            .page_as(
                &officer,
                &format!(
                    "/admin/audit?customer={}&action=point.record",
                    urlencode(&q)
                ),
            )
            .await;
        assert_eq!(status, 200, "{html}");
        let r = rows(&html);
        assert_eq!(r.len(), 3, "{html}");
        for (action, row) in &r {
            assert_eq!(action, "point.record");
            assert!(row.contains("记录跟进动作"), "{row}");
            assert!(row.contains("李明"), "{row}");
            assert!(row.contains("127.0.0.1"), "{row}");
            assert!(
                row.contains(&format!(
                    "<a href=\"/sidebar/customers/{customer}\">客户：华南智造科技有限公司</a>"
                )),
                "{row}"
            );
            assert!(row.contains("年"), "a time in words: {row}");
            assert!(!row.contains("point.record<"), "no raw key shown: {row}");
        }
        assert!(html.contains("id=\"chain\""));
    }
    // Without the action filter the customer's creation is there too, the other
    // customer's tap is not.
    let (_, html) = app
        .page_as(&officer, &format!("/admin/audit?customer={customer}"))
        .await;
    let r = rows(&html);
    assert!(r.iter().any(|(a, _)| a == "customer.create"), "{html}");
    assert_eq!(r.iter().filter(|(a, _)| a == "point.record").count(), 3);
    // By IP and member: all four taps.
    let (_, html) = app
        .page_as(
            &officer,
            &format!("/admin/audit?ip=127.0.0.1&user={rep}&action=point.record"),
        )
        .await;
    assert_eq!(rows(&html).len(), 4, "{html}");
    // The action select offers Chinese labels.
    assert!(html.contains("<option value=\"deal.advance\">推进商机阶段</option>"));
}

fn urlencode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

#[tokio::test]
async fn the_page_is_for_security_officers_and_admins_only() {
    let app = spawn_app().await;
    let rep = app.user("王五", &["sales"]).await;
    let admin = app.user("钱七", &["admin"]).await;
    let officer = app.user("赵六", &["security"]).await;
    let (status, html) = app.page_as(&rep, "/admin/audit").await;
    assert_eq!(status, 403);
    // Refused by the access guard, naming the ability and where roles are set.
    assert!(html.contains("查阅审计日志与访问日志"), "{html}");
    assert!(html.contains("管理 → 人员与角色"), "{html}");
    for who in [&admin, &officer] {
        let (status, html) = app.page_as(who, "/admin/audit").await;
        assert_eq!(status, 200, "{html}");
        assert!(html.contains("审计日志"));
    }
    // Without a session: the sign-in (or, with no platform configured, a refusal).
    let res = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(app.url("/admin/audit"))
        .send()
        .await
        .unwrap();
    assert!(
        matches!(res.status().as_u16(), 303 | 401),
        "{}",
        res.status()
    );
    assert!(!res.text().await.unwrap().contains("id=\"entries\""));
    // Bad input: a clear Chinese error, no rows.
    let (status, html) = app.page_as(&officer, "/admin/audit?ip=localhost").await;
    assert_eq!(status, 422, "{html}");
    assert!(html.contains("IP 地址"), "{html}");
    assert!(rows(&html).is_empty());
    let (status, html) = app
        .page_as(&officer, "/admin/audit?customer=没有这个客户")
        .await;
    assert_eq!(status, 200);
    assert!(html.contains("没有名称含「没有这个客户」的客户"), "{html}");
    // A name matching several customers offers them.
    app.customer("甲一公司", None).await;
    app.customer("甲二公司", None).await;
    let (_, html) = app
        .page_as(&officer, "/admin/audit?customer=%E7%94%B2")
        .await;
    assert!(html.contains("有多个客户名称匹配"), "{html}");
}

#[tokio::test]
async fn the_page_pages_and_shows_the_chain_head() {
    let app = spawn_app().await;
    let officer = app.user("赵六", &["security"]).await;
    for i in 0..55 {
        app.customer(&format!("客户{i}"), None).await;
    }
    let head = audit::seal(&app.db, &app.org_id, SystemClock.now_ms())
        .await
        .unwrap()
        .head;
    let (_, html) = app
        .page_as(&officer, "/admin/audit?action=customer.create")
        .await;
    assert_eq!(rows(&html).len(), 50);
    assert!(html.contains(&format!("已封存 {} 条", head.seq)), "{html}");
    assert!(html.contains(&head.hash[..16]));
    let next = html
        .split("<nav class=\"pages\"><a href=\"")
        .nth(1)
        .map(|r| r[..r.find('"').unwrap()].replace("&amp;", "&"))
        .expect("a next page");
    assert!(next.contains("action=customer.create"), "{next}");
    let (_, html) = app.page_as(&officer, &next).await;
    assert_eq!(rows(&html).len(), 5, "{html}");
}

#[tokio::test]
async fn verify_checks_every_organisation_and_names_the_broken_one() {
    let app = spawn_app().await;
    let now = SystemClock.now_ms();
    let second = closeloop::directory::orgs::create(
        &app.db,
        now,
        "branch",
        "分公司",
        chrono_tz::Asia::Shanghai,
    )
    .await
    .unwrap();
    app.customer("本部客户", None).await;
    for i in 0..3 {
        let mut tx = app.db.begin().await.unwrap();
        audit::record(
            &mut tx,
            now + i,
            AuditEntry {
                org_id: Some(&second.id),
                actor_kind: "cli",
                actor_id: None,
                action: "customer.create",
                target_kind: Some("customer"),
                target_id: Some(&format!("c-{i}")),
                detail: json!({}),
            },
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let (code, out, err) = cli(&app, dir.path(), &["verify"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains(&format!(
            "organisation default ({}): audit chain intact",
            app.org_id
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "organisation branch ({}): audit chain intact: 3 entries",
            second.id
        )),
        "{out}"
    );

    // Change the second organisation's middle entry: verify names it, and the default
    // organisation is still reported intact.
    let changed: String =
        sqlx::query_scalar("SELECT id FROM audit_log WHERE org_id = $1 AND seq = 2")
            .bind(&second.id)
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    sqlx::query("UPDATE audit_log SET target_id = 'c-x' WHERE id = $1")
        .bind(&changed)
        .execute(&app.db.pool)
        .await
        .unwrap();
    let (code, out, err) = cli(&app, dir.path(), &["verify"]);
    assert_eq!(code, 2, "{out}\n{err}");
    assert!(out.contains("organisation default"), "{out}");
    assert!(
        err.contains(&format!(
            "organisation branch ({}): audit chain broken at entry {changed} (seq 2): changed",
            second.id
        )),
        "{err}"
    );
    assert!(!err.contains("organisation default"), "{err}");
    // One organisation at a time, by slug or id.
    let (code, out, _) = cli(&app, dir.path(), &["verify", "--org", "default"]);
    assert_eq!(code, 0);
    assert!(!out.contains("branch"), "{out}");
    let (code, _, err) = cli(&app, dir.path(), &["verify", "--org", &second.id]);
    assert_eq!(code, 2);
    assert!(err.contains(&changed), "{err}");
    let (code, _, err) = cli(&app, dir.path(), &["verify", "--org", "nowhere"]);
    assert_ne!(code, 0);
    assert!(err.contains("no organisation"), "{err}");
}

/// What the anchor receiver saw: (event, timestamp, signature, body).
type Seen = std::sync::Arc<std::sync::Mutex<Vec<(String, String, String, String)>>>;

async fn anchor_receiver(failures: usize) -> (String, Seen) {
    use axum::extract::State;
    use axum::http::{HeaderMap, StatusCode};
    let seen: Seen = Default::default();
    let left = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(failures));
    let app = axum::Router::new()
        .route(
            "/anchor",
            axum::routing::post(
                |State((seen, left)): State<(
                    Seen,
                    std::sync::Arc<std::sync::atomic::AtomicUsize>,
                )>,
                 headers: HeaderMap,
                 body: String| async move {
                    let h = |n: &str| {
                        headers
                            .get(n)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .to_string()
                    };
                    seen.lock().unwrap().push((
                        h("x-closeloop-event"),
                        h("x-closeloop-timestamp"),
                        h("x-closeloop-signature"),
                        body,
                    ));
                    let fail = left
                        .fetch_update(
                            std::sync::atomic::Ordering::SeqCst,
                            std::sync::atomic::Ordering::SeqCst,
                            |n| n.checked_sub(1),
                        )
                        .is_ok();
                    if fail {
                        StatusCode::SERVICE_UNAVAILABLE
                    } else {
                        StatusCode::OK
                    }
                },
            ),
        )
        .with_state((seen.clone(), left));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/anchor", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, seen)
}

const ANCHOR_SECRET: &str = "anchor-secret-0123456789";

#[tokio::test]
async fn the_daily_anchor_is_posted_signed_to_the_configured_webhook_and_retried() {
    let (url, seen) = anchor_receiver(1).await;
    let at = reqwest::Url::parse(&url).unwrap();
    let app = crate::helpers::spawn_app_with(&format!(
        "[audit]\nanchor_webhook = \"{url}\"\nanchor_webhook_secret = \"{ANCHOR_SECRET}\"\n\
         [webhooks]\nallow_private = [\"{}:{}\"]\n",
        at.host_str().unwrap(),
        at.port().unwrap()
    ))
    .await;
    app.user("赵六", &["security"]).await;
    app.customer("丙公司", None).await;
    closeloop::jobs::schedule::run_now(
        &app.db,
        SystemClock.now_ms(),
        Some(&app.org_id),
        "audit.anchor",
        &closeloop::access::Actor::cli(),
    )
    .await
    .unwrap();
    app.worker.drain().await.unwrap();
    // The receiver answered 503 once: the delivery waits for its retry.
    assert_eq!(seen.lock().unwrap().len(), 1);
    let state: String =
        sqlx::query_scalar("SELECT status FROM jobs WHERE kind = 'audit.anchor_deliver'")
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    assert_eq!(state, "queued", "waiting for its retry");
    sqlx::query("UPDATE jobs SET run_at = 0 WHERE kind = 'audit.anchor_deliver'")
        .execute(&app.db.pool)
        .await
        .unwrap();
    app.worker.drain().await.unwrap();
    let got = seen.lock().unwrap().clone();
    assert_eq!(got.len(), 2, "{got:#?}");
    let (event, timestamp, signature, body) = &got[1];
    assert_eq!(event, "audit.anchor");
    assert_eq!(
        signature,
        &format!(
            "sha256={}",
            closeloop::webhooks::sign(ANCHOR_SECRET, timestamp, body)
        )
    );
    let body: Value = serde_json::from_str(body).unwrap();
    let head = audit::status(&app.db, &app.org_id).await.unwrap();
    // The anchored head is the one the `audit.anchor` entry recorded.
    let recorded: String = sqlx::query_scalar(
        "SELECT detail FROM audit_log WHERE org_id = $1 AND action = 'audit.anchor'",
    )
    .bind(&app.org_id)
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    let recorded: Value = serde_json::from_str(&recorded).unwrap();
    assert_eq!(body["org"], json!(app.org_id));
    assert_eq!(body["head_hash"], recorded["hash"]);
    assert_eq!(body["sealed_through"], recorded["seq"]);
    assert!(
        body["at"].as_str().unwrap().ends_with('Z') || body["at"].as_str().unwrap().contains('+')
    );
    assert!(head.head.seq >= body["sealed_through"].as_i64().unwrap());
    // And the hash anchors `audit verify`.
    let dir = tempfile::tempdir().unwrap();
    let (code, out, err) = cli(
        &app,
        dir.path(),
        &["verify", "--anchor", body["head_hash"].as_str().unwrap()],
    );
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("anchor found in the chain"));
}

#[test]
fn an_anchor_webhook_needs_a_secret() {
    let e = closeloop::config::Config::from_toml_only(
        "[audit]\nanchor_webhook = \"https://anchor.example.com/in\"\n",
    )
    .unwrap_err();
    assert_eq!(e.key, "audit.anchor_webhook_secret");
    let e = closeloop::config::Config::from_toml_only(
        "[audit]\nanchor_webhook = \"ftp://anchor.example.com\"\nanchor_webhook_secret = \"0123456789abcdef\"\n",
    )
    .unwrap_err();
    assert_eq!(e.key, "audit.anchor_webhook");
    assert!(closeloop::config::Config::from_toml_only(
        "[audit]\nanchor_webhook = \"https://anchor.example.com/in\"\nanchor_webhook_secret = \"0123456789abcdef\"\n",
    )
    .is_ok());
}
