//! The demo's live loop on the WeCom emulator's chat view: a 公费电话 call placed there
//! verifies a tapped claim, an external contact added there becomes a customer, a link
//! there signs the browser in as that member, and scheduled jobs run now
//! (`POST /api/v1/jobs/run-now`, `closeloop jobs run-now`) — plus `demo --emulator-port`.

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use closeloop::access::ApiKeyRole;
use closeloop::emulator::wecom::Emulator;
use serde_json::{json, Value};
use sqlx::Row;

use crate::cli::{closeloop, free_port};
use crate::demo::{client, text};
use crate::helpers::{spawn_app_with, TestApp, TEST_DATA_KEY};

const CORP: &str = "wwcl0000000000001";
const TOKEN: &str = "QDG6eK";
const AES_KEY: &str = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C";
/// closeloop's default `public_url`, where its OAuth redirect sends the browser.
const PUBLIC_URL: &str = "http://127.0.0.1:8080";

fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// Posts an HTML form as the member's browser does; the response is not followed.
pub(crate) async fn post_form(url: &str, fields: &[(&str, &str)]) -> reqwest::Response {
    let body: Vec<String> = fields
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect();
    client()
        .post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body.join("&"))
        .send()
        .await
        .unwrap()
}

/// A browser on 127.0.0.1: follows redirects by hand and keeps cookies by name (cookies
/// do not keep ports apart, so closeloop's and the emulator's share the jar). `reach`
/// maps an address to where the test can reach it.
pub(crate) struct Browser {
    jar: HashMap<String, String>,
    reach: Box<dyn Fn(&str) -> String + Send + Sync>,
}

impl Browser {
    pub(crate) fn new(reach: impl Fn(&str) -> String + Send + Sync + 'static) -> Browser {
        Browser {
            jar: HashMap::new(),
            reach: Box::new(reach),
        }
    }

    pub(crate) fn cookies(&self) -> String {
        let pairs: Vec<String> = self.jar.iter().map(|(k, v)| format!("{k}={v}")).collect();
        pairs.join("; ")
    }

    /// Opens `url` and follows up to ten redirects; the final status, address and body.
    pub(crate) async fn open(&mut self, url: &str) -> (u16, String, String) {
        let client = client();
        let mut url = (self.reach)(url);
        for _ in 0..10 {
            let res = client
                .get(&url)
                .header("cookie", self.cookies())
                .send()
                .await
                .unwrap();
            for set in res.headers().get_all("set-cookie") {
                let pair = set.to_str().unwrap().split(';').next().unwrap();
                let (name, value) = pair.split_once('=').unwrap();
                self.jar.insert(name.to_string(), value.to_string());
            }
            if !res.status().is_redirection() {
                let status = res.status().as_u16();
                return (status, url, res.text().await.unwrap());
            }
            let to = res.headers()["location"].to_str().unwrap();
            let next = reqwest::Url::parse(&url).unwrap().join(to).unwrap();
            url = (self.reach)(next.as_str());
        }
        panic!("more than ten redirects from {url}");
    }

    /// The signed-in user at `base` (`/web/session`) and the session's CSRF token.
    pub(crate) async fn session(&mut self, base: &str) -> (String, String) {
        let (status, _, body) = self.open(&format!("{base}/web/session")).await;
        assert_eq!(status, 200, "{body}");
        let me: Value = serde_json::from_str(&body).unwrap();
        (
            me["user_id"].as_str().unwrap().to_string(),
            me["csrf_token"].as_str().unwrap().to_string(),
        )
    }
}

/// closeloop with WeCom (app, 客户联系 and 公费电话 secrets) on the emulator, whose directory
/// holds 李明 (sales), 王经理 (manager, his superior) and 张工 (presales).
async fn setup() -> (Emulator, TestApp, HashMap<&'static str, String>) {
    let emulator = Emulator::start(
        CORP,
        vec![
            ("app-secret".to_string(), "app"),
            ("contact-secret".to_string(), "contact"),
            ("dial-secret".to_string(), "dial"),
        ],
    )
    .await;
    let app = spawn_app_with(&format!(
        "[wecom]\ncorp_id = \"{CORP}\"\nagent_id = 1000002\nsecret = \"app-secret\"\n\
         contact_secret = \"contact-secret\"\ndial_secret = \"dial-secret\"\ntoken = \"{TOKEN}\"\n\
         encoding_aes_key = \"{AES_KEY}\"\napi_base = \"{api}\"\noauth_base = \"{api}\"\n",
        api = emulator.base_url()
    ))
    .await;
    emulator.set_directory(
        vec![json!({"id": 1, "name": "总部", "parentid": 0})],
        vec![
            json!({"userid": "wangjl", "name": "王经理", "department": [1], "status": 1}),
            json!({"userid": "liming", "name": "李明", "department": [1], "status": 1, "direct_leader": ["wangjl"]}),
            json!({"userid": "zhanggong", "name": "张工", "department": [1], "status": 1}),
        ],
    );
    let mut users = HashMap::new();
    for (userid, name, role) in [
        ("wangjl", "王经理", "manager"),
        ("liming", "李明", "sales"),
        ("zhanggong", "张工", "presales"),
    ] {
        let superiors: Vec<&String> = users.get("wangjl").into_iter().collect();
        let superiors = if role == "sales" { superiors } else { vec![] };
        let user = app
            .create(
                "/api/v1/users",
                json!({"name": name, "roles": [role], "superiors": superiors,
                       "identities": [{"platform": "wecom", "kind": "userid", "value": userid}]}),
            )
            .await;
        users.insert(userid, user["id"].as_str().unwrap().to_string());
    }
    (emulator, app, users)
}

async fn verification(app: &TestApp, point: &str) -> String {
    let v: Value = app
        .get(&format!("/api/v1/events/{point}/verification"))
        .await
        .json()
        .await
        .unwrap();
    v["status"].as_str().unwrap_or("none").to_string()
}

async fn jobs_of(app: &TestApp, kind: &str) -> Vec<(String, String)> {
    sqlx::query("SELECT id, status FROM jobs WHERE kind = $1 ORDER BY id")
        .bind(kind)
        .fetch_all(&app.db.pool)
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get("id"), r.get("status")))
        .collect()
}

async fn run_now_audits(app: &TestApp) -> Vec<(String, String, String)> {
    sqlx::query(
        "SELECT actor_kind, target_id, detail FROM audit_log WHERE action = 'job.run_now' ORDER BY at, id",
    )
    .fetch_all(&app.db.pool)
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get("actor_kind"), r.get("target_id"), r.get("detail")))
    .collect()
}

#[tokio::test]
async fn a_call_placed_in_the_chat_verifies_the_tapped_claim() {
    let (emulator, app, users) = setup().await;
    let polls = Arc::new(AtomicUsize::new(0));
    let seen = polls.clone();
    emulator.on_dial_record(move || {
        seen.fetch_add(1, Ordering::SeqCst);
    });
    let customer = app
        .customer("华南智造", Some(users["liming"].as_str()))
        .await;
    emulator.add_external_contact(
        json!({"external_userid": "wmHuanan01", "name": "张总", "corp_name": "华南智造", "type": 1}),
        json!([{"userid": "liming", "remark": "张总", "createtime": 1764206400,
                "remark_mobiles": ["13800138000"]}]),
    );
    emulator.add_external_contact(
        json!({"external_userid": "wmNoPhone02", "name": "陈工", "type": 1}),
        json!([{"userid": "liming", "createtime": 1764206500}]),
    );
    let chat = emulator.chat_url();
    let (status, html) = text(&format!("{chat}/liming")).await;
    assert_eq!(status, 200);
    assert!(html.contains("拨打公费电话"), "{html}");
    assert!(
        html.contains("<option value=\"wmHuanan01\">张总 138****8000</option>"),
        "the member's customer with a number can be called: {html}"
    );
    assert!(
        !html.contains("<option value=\"wmNoPhone02\""),
        "no number, no call: {html}"
    );

    // The rep taps 「已电话沟通」: a claim waiting for an official record.
    let tap = app
        .create(
            "/api/v1/events",
            json!({"actor": users["liming"], "customer": customer, "action": "已电话沟通"}),
        )
        .await;
    let point = tap["id"].as_str().unwrap();
    assert_eq!(verification(&app, point).await, "pending");

    // Bad calls are refused and leave no record.
    let call = format!("{chat}/liming/call");
    for (fields, code) in [
        (
            vec![("external_userid", "wmHuanan01"), ("minutes", "五")],
            400,
        ),
        (
            vec![("external_userid", "wmHuanan01"), ("minutes", "241")],
            400,
        ),
        (
            vec![("external_userid", "wmHuanan01"), ("seconds", "60")],
            400,
        ),
        (vec![("minutes", "5")], 400),
        (
            vec![("external_userid", "wmNoPhone02"), ("minutes", "5")],
            400,
        ),
        (
            vec![("external_userid", "wmSomeoneElse"), ("minutes", "5")],
            404,
        ),
    ] {
        let res = post_form(&call, &fields).await;
        assert_eq!(res.status().as_u16(), code, "{fields:?}");
    }
    let res = post_form(
        &format!("{chat}/nobody/call"),
        &[("external_userid", "wmHuanan01"), ("minutes", "5")],
    )
    .await;
    assert_eq!(res.status(), 404);
    assert!(emulator.dial_records().is_empty());
    assert_eq!(polls.load(Ordering::SeqCst), 0);

    // Five minutes with 张总, hung up now.
    let before = chrono::Utc::now().timestamp();
    let res = post_form(
        &call,
        &[
            ("external_userid", "wmHuanan01"),
            ("minutes", "5"),
            ("seconds", "0"),
        ],
    )
    .await;
    assert_eq!(res.status(), 303);
    assert_eq!(res.headers()["location"], "/chat/liming?called=300");
    let records = emulator.dial_records();
    assert_eq!(records.len(), 1);
    let r = &records[0];
    assert_eq!(r["caller"]["userid"], "liming");
    assert_eq!(r["caller"]["duration"], 300);
    assert_eq!(r["callee"][0]["phone"], "13800138000");
    assert_eq!(r["callee"][0]["duration"], 300);
    assert_eq!(r["total_duration"], 5, "minutes, as documented");
    let started = r["call_time"].as_i64().unwrap();
    assert!(
        (before - 300..=before - 299 + 5).contains(&started),
        "{started} vs {before}"
    );
    assert_eq!(polls.load(Ordering::SeqCst), 1, "the hook heard of it");
    let (_, html) = text(&format!("{chat}/liming?called=300")).await;
    assert!(html.contains("已拨打公费电话，通话5分0秒"), "{html}");
    assert!(
        html.contains("通话5分0秒</li>"),
        "the member's calls: {html}"
    );

    // Nothing verified until closeloop polls; the scheduled poll, run now, finds it.
    assert_eq!(verification(&app, point).await, "pending");
    let res = app
        .post("/api/v1/jobs/run-now", &json!({"kind": "wecom.dial_poll"}))
        .await;
    assert_eq!(res.status(), 202);
    app.worker.drain().await.unwrap();
    assert_eq!(verification(&app, point).await, "verified");
    assert!(
        emulator
            .dial_requests()
            .iter()
            .any(|q| q["end_time"].as_i64().unwrap() >= started),
        "closeloop read the records through dial/get_dial_record"
    );
}

#[tokio::test]
async fn adding_a_contact_in_the_chat_creates_the_customer() {
    let (emulator, app, users) = setup().await;
    let chat = emulator.chat_url();
    let add = format!("{chat}/liming/contacts");
    let good = [
        ("name", "周总"),
        ("corp_name", "宁波海川机械有限公司"),
        ("position", "厂长"),
        ("phone", "133 1234-5678"),
        ("state", "抖音表单"),
    ];
    // Without closeloop's callback address the emulator cannot tell it.
    let res = post_form(&add, &good).await;
    assert_eq!(res.status(), 503);
    emulator.set_callback_target(app.url("/callback/wecom"), TOKEN, AES_KEY);

    let long_state = "渠".repeat(31);
    for fields in [
        vec![("name", "  ")],
        vec![("name", "周总"), ("phone", "not a number")],
        vec![("name", "周总"), ("phone", "1234")],
        vec![("name", "周总"), ("state", long_state.as_str())],
    ] {
        let res = post_form(&add, &fields).await;
        assert_eq!(res.status(), 400, "{fields:?}");
    }
    let res = post_form(&format!("{chat}/nobody/contacts"), &[("name", "周总")]).await;
    assert_eq!(res.status(), 404);
    assert_eq!(
        app.count("inbox").await,
        0,
        "a refused form sends no callback"
    );

    let res = post_form(&add, &good).await;
    assert_eq!(res.status(), 303);
    assert_eq!(res.headers()["location"], "/chat/liming?added=200");
    app.worker.drain().await.unwrap();
    let events: Value = app
        .get("/api/v1/platform-events?type=change_external_contact.add_external_contact")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(events["items"].as_array().unwrap().len(), 1, "{events}");
    assert_eq!(events["items"][0]["status"], "processed");

    let found: Value = app
        .get("/api/v1/customers?phone=13312345678")
        .await
        .json()
        .await
        .unwrap();
    let customers = found["items"].as_array().unwrap();
    assert_eq!(customers.len(), 1, "{found}");
    let c = &customers[0];
    assert_eq!(c["name"], "宁波海川机械有限公司");
    assert_eq!(c["owner"], users["liming"].as_str());
    assert_eq!(c["contacts"][0]["name"], "周总");
    assert_eq!(c["contacts"][0]["title"], "厂长");
    let leads: Value = app
        .get(&format!(
            "/api/v1/leads?customer={}",
            c["id"].as_str().unwrap()
        ))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(leads["items"][0]["source_channel"], "抖音表单");

    // The member's chat lists the new customer, ready to be called.
    let (_, html) = text(&format!("{chat}/liming?added=200")).await;
    assert!(html.contains("已添加客户"), "{html}");
    assert!(html.contains("周总 · 宁波海川机械有限公司"), "{html}");
    assert!(html.contains("周总 133****5678</option>"), "{html}");
}

#[tokio::test]
async fn a_link_in_a_members_chat_signs_the_browser_in_as_that_member() {
    let (emulator, app, users) = setup().await;
    let chat = emulator.chat_url();
    emulator.add_external_contact(
        json!({"external_userid": "wmHuanan01", "name": "张总", "type": 1}),
        json!([{"userid": "liming", "createtime": 1764206400, "remark_mobiles": ["13800138000"]}]),
    );
    let open = |member: &str, to: &str| format!("{chat}/{member}/open?to={}", enc(to));

    // Refused: not a web address, not a member, not the member's customer.
    let (status, _) = text(&open("zhanggong", "javascript:alert(1)")).await;
    assert_eq!(status, 400);
    let (status, _) = text(&open("nobody", &app.url("/collab"))).await;
    assert_eq!(status, 404);
    let (status, _) = text(&format!(
        "{}&external_userid=wmHuanan01",
        open("zhanggong", &app.url("/sidebar"))
    ))
    .await;
    assert_eq!(status, 404);

    // Before the app's sign-in page is known, a link opens as it is.
    let res = client()
        .get(open("zhanggong", &app.url("/collab")))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303);
    assert_eq!(res.headers()["location"], app.url("/collab").as_str());

    emulator.set_sign_in_url(app.url("/auth/wecom/login"));
    emulator.set_chat_toolbar_url(app.url("/sidebar"));
    let res = client()
        .get(open("zhanggong", &app.url("/collab?mine=1")))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303);
    assert_eq!(
        res.headers()["location"],
        app.url("/auth/wecom/login?next=%2Fcollab%3Fmine%3D1")
            .as_str()
    );
    // Another site's link is not the app's to sign in to.
    let res = client()
        .get(open("zhanggong", "https://example.com/a?b=1"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["location"], "https://example.com/a?b=1");

    // The whole way: the app's sign-in, the emulated OAuth page, the app's callback.
    let base = app.base.clone();
    let mut browser = Browser::new(move |u| u.replace(PUBLIC_URL, &base));
    let (status, at, _) = browser
        .open(&open("zhanggong", &app.url("/collab?mine=1")))
        .await;
    assert_eq!(status, 200);
    assert_eq!(at, app.url("/collab?mine=1"));
    assert_eq!(browser.session(&app.base).await.0, users["zhanggong"]);

    // The same browser, now in 李明's chat, opens the toolbar beside his customer's chat:
    // signed in as 李明, and the JS-SDK stand-in names that customer.
    let (_, html) = text(&format!("{chat}/liming")).await;
    let toolbar = format!(
        "{}&amp;external_userid=wmHuanan01",
        open("liming", &app.url("/sidebar"))
            .trim_start_matches(&emulator.base_url())
            .replace('&', "&amp;")
    );
    assert!(
        html.contains(&toolbar),
        "「在侧边栏打开」 goes through the member's sign-in: {html}"
    );
    let (status, _, _) = browser
        .open(&format!(
            "{}&external_userid=wmHuanan01",
            open("liming", &app.url("/sidebar"))
        ))
        .await;
    assert_eq!(status, 200);
    assert_eq!(browser.session(&app.base).await.0, users["liming"]);
    let (_, sdk) = text(&emulator.jssdk_url()).await;
    assert!(sdk.contains("\"externalUserId\":\"wmHuanan01\""), "{sdk}");
}

#[tokio::test]
async fn run_now_queues_a_scheduled_kind_once_audited_and_the_monday_card_arrives() {
    let (emulator, app, users) = setup().await;
    let kind = "collab.health_weekly";
    let next_tick = || async {
        let (next,): (i64,) = sqlx::query_as("SELECT next_run_at FROM schedules WHERE kind = $1")
            .bind(kind)
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
        next
    };
    let tick = next_tick().await;

    // Operators only: other keys are refused and queue nothing.
    for role in [ApiKeyRole::Integration, ApiKeyRole::ReadOnly] {
        let key = app.key_with_role(role).await;
        let res = app
            .client
            .post(app.url("/api/v1/jobs/run-now"))
            .bearer_auth(key)
            .json(&json!({ "kind": kind }))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 403, "{role:?}");
    }
    // An unknown kind is refused with the kinds there are.
    let res = app
        .post("/api/v1/jobs/run-now", &json!({"kind": "weekly.nonsense"}))
        .await;
    assert_eq!(res.status(), 422);
    let body: Value = res.json().await.unwrap();
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("not a scheduled job kind") && message.contains(kind),
        "{message}"
    );
    assert!(jobs_of(&app, kind).await.is_empty());
    assert!(run_now_audits(&app).await.is_empty());

    let res = app
        .post("/api/v1/jobs/run-now", &json!({ "kind": kind }))
        .await;
    assert_eq!(res.status(), 202);
    let ran: Value = res.json().await.unwrap();
    assert_eq!(ran["kind"], kind);
    assert_eq!(ran["status"], "queued");
    let id = ran["id"].as_str().unwrap();
    assert_eq!(
        jobs_of(&app, kind).await,
        vec![(id.to_string(), "queued".to_string())]
    );
    let audits = run_now_audits(&app).await;
    assert_eq!(audits.len(), 1);
    assert_eq!(audits[0].0, "api_key");
    assert_eq!(audits[0].1, id);
    let detail: Value = serde_json::from_str(&audits[0].2).unwrap();
    assert_eq!(detail["kind"], kind);
    assert_eq!(next_tick().await, tick, "the schedule keeps its timing");

    // The worker runs it once: the Monday card reaches the manager's chat.
    app.worker.drain().await.unwrap();
    assert_eq!(
        jobs_of(&app, kind).await,
        vec![(id.to_string(), "done".to_string())]
    );
    assert!(
        emulator
            .received_messages()
            .iter()
            .any(|m| m["touser"] == "wangjl" && m["msgtype"] == "template_card"),
        "{:?}",
        emulator.received_messages()
    );
    let (_, html) = text(&format!("{}/wangjl", emulator.chat_url())).await;
    assert!(
        html.contains("href=\"/chat/wangjl/open?to="),
        "the card's page opens as 王经理: {html}"
    );
    let (cards,): (i64,) = sqlx::query_as(
        "SELECT CAST(COUNT(*) AS BIGINT) FROM cards WHERE recipient_user_id = $1 AND purpose = 'collab.health'",
    )
    .bind(&users["wangjl"])
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(cards, 1);

    // The command line does the same, audited as the CLI; an unknown kind is one line.
    let dir = tempfile::tempdir().unwrap();
    let cli = |args: &[&str]| {
        let mut cmd = closeloop(dir.path());
        cmd.args(args)
            .env("CLOSELOOP_DATABASE_URL", &app.database_url)
            .env("CLOSELOOP_SECURITY__DATA_KEY", TEST_DATA_KEY);
        cmd.output().unwrap()
    };
    let out = cli(&["jobs", "run-now", "credibility.weekly", "--wait", "0s"]);
    assert!(out.status.success(), "{out:?}");
    let printed = String::from_utf8(out.stdout).unwrap();
    let queued = jobs_of(&app, "credibility.weekly").await;
    assert_eq!(queued.len(), 1);
    assert_eq!(printed.trim(), queued[0].0);
    assert_eq!(run_now_audits(&app).await.last().unwrap().0, "cli");
    let out = cli(&["jobs", "run-now", "credibility.nonsense", "--wait", "0s"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("not a scheduled job kind"), "{stderr}");
    assert_eq!(run_now_audits(&app).await.len(), 2);
    app.worker.drain().await.unwrap();
    assert_eq!(jobs_of(&app, "credibility.weekly").await[0].1, "done");

    // Waiting: the worker finishes the job while the command waits.
    {
        let waiting = {
            let mut cmd = closeloop(dir.path());
            cmd.args(["jobs", "run-now", "credibility.weekly", "--wait", "20s"])
                .env("CLOSELOOP_DATABASE_URL", &app.database_url)
                .env("CLOSELOOP_SECURITY__DATA_KEY", TEST_DATA_KEY)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            cmd.spawn().unwrap()
        };
        let mut done = false;
        for _ in 0..100 {
            app.worker.drain().await.unwrap();
            if jobs_of(&app, "credibility.weekly").await.len() == 2
                && jobs_of(&app, "credibility.weekly").await[1].1 == "done"
            {
                done = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert!(done);
        let out = waiting.wait_with_output().unwrap();
        assert!(out.status.success(), "{out:?}");
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert!(stderr.contains("done"), "{stderr}");
    }
}

#[tokio::test]
async fn the_demo_takes_its_emulator_port_before_touching_anything() {
    let dir = tempfile::tempdir().unwrap();
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    let out = closeloop(dir.path())
        .args([
            "demo",
            "--listen",
            &format!("127.0.0.1:{}", free_port()),
            "--emulator-port",
            &port.to_string(),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains(&format!("127.0.0.1:{port}")) && stderr.contains("--emulator-port"),
        "{stderr}"
    );
    assert!(
        !dir.path().join("closeloop-demo.db").exists(),
        "nothing was created"
    );
}
