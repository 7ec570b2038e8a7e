//! `closeloop demo` and the WeCom emulator's chat view: every member's received cards,
//! readable, and clickable as WeCom's own signed, encrypted callback; and the demo's live
//! loop end to end (the parts one by one: `demo_live.rs`).

use std::io::BufRead as _;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use closeloop::cards::{self, Button, ButtonStyle, Card};
use closeloop::emulator::wecom::Emulator;
use serde_json::{json, Value};

use crate::cli::{closeloop, free_port};
use crate::demo_live::{post_form, Browser};
use crate::helpers::{spawn_app_with, TestApp};

const CORP: &str = "wwcl0000000000001";
const TOKEN: &str = "QDG6eK";
const AES_KEY: &str = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C";

/// A client that shows redirects instead of following them.
pub(crate) fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// The value of the hidden input `name` in the first form of `html`.
fn hidden(html: &str, name: &str) -> Option<String> {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html.find(&marker)? + marker.len();
    let end = html[start..].find('"')?;
    Some(
        html[start..start + end]
            .replace("&quot;", "\"")
            .replace("&#39;", "'")
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&amp;", "&"),
    )
}

/// Presses a button in the chat view, as the member's browser posts the form.
async fn press(chat_url: &str, userid: &str, task_id: &str, key: &str) -> reqwest::Response {
    post_form(
        &format!("{chat_url}/{userid}/click"),
        &[("task_id", task_id), ("key", key)],
    )
    .await
}

pub(crate) async fn text(url: &str) -> (u16, String) {
    let res = client().get(url).send().await.unwrap();
    (res.status().as_u16(), res.text().await.unwrap())
}

async fn setup() -> (Emulator, TestApp) {
    let emulator = Emulator::start(CORP, vec![("app-secret".to_string(), "app")]).await;
    let app = spawn_app_with(&format!(
        "[wecom]\ncorp_id = \"{CORP}\"\nagent_id = 1000002\nsecret = \"app-secret\"\ntoken = \"{TOKEN}\"\n\
         encoding_aes_key = \"{AES_KEY}\"\napi_base = \"{}\"\n",
        emulator.base_url()
    ))
    .await;
    emulator.set_directory(
        vec![json!({"id": 1, "name": "总部", "parentid": 0})],
        vec![
            json!({"userid": "zhanggong", "name": "张工", "department": [1], "status": 1}),
            json!({"userid": "wangfang", "name": "王芳", "department": [1], "status": 1}),
        ],
    );
    (emulator, app)
}

fn approval_card() -> Card {
    Card {
        title: "报价<审批>".into(),
        description: Some("李明 · 华南智造".into()),
        fields: vec![("问题".into(), "是否支持\"私有化\"部署？".into())],
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

async fn clicked_action(app: &TestApp, card: &str) -> Option<String> {
    let (clicked,): (Option<String>,) =
        sqlx::query_as("SELECT clicked_action FROM cards WHERE id = $1")
            .bind(card)
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    clicked
}

#[tokio::test]
async fn a_click_in_the_chat_view_is_a_signed_encrypted_callback_that_updates_the_card() {
    let (emulator, app) = setup().await;
    let chat = emulator.chat_url();
    let user = app
        .create(
            "/api/v1/users",
            json!({"name": "张工", "identities": [{"platform": "wecom", "kind": "userid", "value": "zhanggong"}]}),
        )
        .await;
    let mut tx = app.db.begin().await.unwrap();
    let card = cards::send(
        &mut tx,
        &app.cipher,
        chrono::Utc::now().timestamp_millis(),
        &app.org_id,
        user["id"].as_str().unwrap(),
        "quick_ask",
        None,
        &approval_card(),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    app.worker.drain().await.unwrap();

    // Every directory member is listed, with what waits for them.
    let (status, members) = text(&chat).await;
    assert_eq!(status, 200);
    assert!(
        members.contains("张工") && members.contains("王芳"),
        "{members}"
    );
    assert!(members.contains("1 张待处理"), "{members}");
    let (status, page) = text(&format!("{chat}/zhanggong")).await;
    assert_eq!(status, 200);
    assert!(page.contains("报价&lt;审批&gt;"), "escaped title: {page}");
    assert!(!page.contains("<审批>"), "{page}");
    assert!(page.contains("李明 · 华南智造"), "{page}");
    assert!(page.contains("是否支持&quot;私有化&quot;部署？"), "{page}");
    assert!(page.contains("接受") && page.contains("退回"), "{page}");
    assert_eq!(hidden(&page, "task_id").as_deref(), Some(card.as_str()));
    assert_eq!(
        hidden(&page, "key").as_deref(),
        Some(format!("accept:{card}").as_str())
    );
    let (status, _) = text(&format!("{chat}/nobody")).await;
    assert_eq!(status, 404);

    // Without knowing closeloop's callback URL the emulator cannot call back.
    let res = press(&chat, "zhanggong", &card, &format!("accept:{card}")).await;
    assert_eq!(res.status(), 503);

    emulator.set_callback_target(app.url("/callback/wecom"), TOKEN, AES_KEY);
    // Only the card's own buttons, only for its recipient.
    let res = press(&chat, "zhanggong", &card, &format!("approve:{card}")).await;
    assert_eq!(res.status(), 400);
    let res = press(&chat, "wangfang", &card, &format!("accept:{card}")).await;
    assert_eq!(res.status(), 404);
    assert_eq!(
        app.count("inbox").await,
        0,
        "no callback for a refused click"
    );

    let res = press(&chat, "zhanggong", &card, &format!("accept:{card}")).await;
    assert_eq!(res.status(), 303);
    assert_eq!(
        res.headers()["location"].to_str().unwrap(),
        "/chat/zhanggong?delivered=200"
    );
    app.worker.drain().await.unwrap();
    assert_eq!(clicked_action(&app, &card).await.as_deref(), Some("accept"));
    let events: Value = app
        .get("/api/v1/platform-events?type=template_card_event")
        .await
        .json()
        .await
        .unwrap();
    let event = &events["items"][0];
    assert_eq!(event["status"], "processed");
    assert_eq!(event["summary"]["user_id"], "zhanggong");
    assert_eq!(event["summary"]["action_key"], format!("accept:{card}"));

    // closeloop spent the click's fresh response code on the update; the card shows it
    // and its buttons are gone.
    let updates = emulator.card_updates();
    assert_eq!(updates.len(), 1);
    assert_eq!(updates[0]["button"]["replace_name"], "已接受");
    let (_, page) = text(&format!("{chat}/zhanggong")).await;
    assert!(page.contains("按钮替换为「已接受」"), "{page}");
    assert!(page.contains("点击了「接受」，回调 HTTP 200"), "{page}");
    assert_eq!(hidden(&page, "key"), None, "no button left to press");
    let (_, members) = text(&chat).await;
    assert!(!members.contains("待处理"), "{members}");
    let res = press(&chat, "zhanggong", &card, &format!("reject:{card}")).await;
    assert_eq!(res.status(), 409, "an updated card's buttons are disabled");
}

/// Kills the demo if the test fails before stopping it.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The printed address on the line with `label`.
fn address(lines: &[String], label: &str) -> String {
    let line = lines
        .iter()
        .find(|l| l.contains(label))
        .unwrap_or_else(|| panic!("no `{label}` line in {lines:#?}"));
    line.split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no address on `{line}`"))
        .trim_end_matches('\'')
        .to_string()
}

/// GETs `url` with the API key `key`; the JSON answer, or `None` when none came.
async fn get_json(url: String, key: String) -> Option<Value> {
    reqwest::Client::new()
        .get(url)
        .bearer_auth(key)
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()
}

/// Polls `check` every 200 ms until it answers, for at most 30 s.
async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn the_demo_serves_a_sample_organisation_whose_cards_click_through_the_emulator() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let emulator_port = free_port();
    let log_path = dir.path().join("demo.log");
    let child = closeloop(dir.path())
        .args([
            "demo",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--emulator-port",
            &emulator_port.to_string(),
        ])
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    let mut demo = Running(child);
    let (tx, rx) = mpsc::channel();
    let stdout = demo.0.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !lines.iter().any(|l: &String| l.contains("API key (admin)")) {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(line) => lines.push(line),
            Err(_) => {
                if let Some(status) = demo.0.try_wait().unwrap() {
                    panic!(
                        "demo exited with {status}: {lines:#?}\n{}",
                        std::fs::read_to_string(&log_path).unwrap()
                    );
                }
                assert!(Instant::now() < deadline, "the demo printed {lines:#?}");
            }
        }
    }
    let base = format!("http://127.0.0.1:{port}");
    assert_eq!(address(&lines, "sidebar"), format!("{base}/sidebar"));
    assert_eq!(
        address(&lines, "collaboration"),
        format!("{base}/collab"),
        "{lines:#?}"
    );
    assert_eq!(address(&lines, "metrics"), format!("{base}/metrics"));
    let chat = address(&lines, "emulated chat");
    assert_eq!(chat, format!("http://127.0.0.1:{emulator_port}/chat"));
    let emulator = format!("http://127.0.0.1:{emulator_port}");
    let key = lines
        .iter()
        .find(|l| l.contains("API key (admin)"))
        .and_then(|l| l.split_whitespace().last())
        .unwrap()
        .to_string();
    assert!(key.starts_with("clk_"), "{key}");
    let printed = lines.join("\n");
    for word in ["secret", "encoding_aes_key", "token ="] {
        assert!(!printed.contains(word), "`{word}` printed: {printed}");
    }

    // The development sign-in lists the sample members; the sidebar signs in through the
    // emulated WeCom and opens the chat's customer through the JS-SDK stand-in.
    let (status, dev) = text(&format!("{base}/auth/dev")).await;
    assert_eq!(status, 200);
    for name in ["王经理", "李明", "张工", "赵交付", "钱财务"] {
        assert!(dev.contains(name), "{name} missing: {dev}");
    }
    let http = client();
    let mut url = format!("{base}/sidebar");
    let mut cookie = None::<String>;
    for _ in 0..6 {
        let mut req = http.get(&url);
        if let Some(c) = &cookie {
            req = req.header("cookie", c);
        }
        let res = req.send().await.unwrap();
        if let Some(c) = res.headers().get("set-cookie") {
            cookie = Some(c.to_str().unwrap().split(';').next().unwrap().to_string());
        }
        if !res.status().is_redirection() {
            assert_eq!(res.status(), 200, "{url}");
            let page = res.text().await.unwrap();
            assert!(page.contains("客户侧边栏"), "{page}");
            break;
        }
        let to = res.headers()["location"].to_str().unwrap().to_string();
        url = if to.starts_with('/') {
            format!("{base}{to}")
        } else {
            to
        };
    }
    assert!(
        cookie.is_some(),
        "the emulated WeCom sign-in made a session"
    );

    let (status, members) = text(&chat).await;
    assert_eq!(status, 200);
    for name in [
        "周总监",
        "王经理",
        "李明",
        "孙悦",
        "张工",
        "吴工",
        "赵交付",
        "钱财务",
    ] {
        assert!(members.contains(name), "{name} missing: {members}");
    }

    // The presales engineer's quick-ask card arrives once the worker has delivered it.
    let page = eventually("张工's card", || async {
        let (_, page) = text(&format!("{chat}/zhanggong")).await;
        page.contains("name=\"task_id\"").then_some(page)
    })
    .await;
    assert!(page.contains("售前快速提问"), "{page}");
    assert!(page.contains("确认收到并接受"), "{page}");
    let task = hidden(&page, "task_id").unwrap();
    let button = hidden(&page, "key").unwrap();
    let res = press(&chat, "zhanggong", &task, &button).await;
    assert_eq!(res.status(), 303);
    assert!(
        res.headers()["location"]
            .to_str()
            .unwrap()
            .ends_with("delivered=200"),
        "{:?}",
        res.headers()
    );

    // closeloop verified, decrypted and processed the click.
    let api = reqwest::Client::new();
    let event = eventually("the processed click", || {
        let url = format!("{base}/api/v1/platform-events?type=template_card_event");
        let key = key.clone();
        async move {
            let events = get_json(url, key).await?;
            events["items"]
                .as_array()?
                .iter()
                .find(|e| e["status"] == "processed")
                .cloned()
        }
    })
    .await;
    assert_eq!(event["summary"]["user_id"], "zhanggong");
    assert_eq!(event["summary"]["action_key"], button.as_str());
    let requests = get_json(format!("{base}/api/v1/collab/requests"), key.clone())
        .await
        .unwrap();
    let statuses: Vec<(&str, &str)> = requests["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["type"].as_str().unwrap(), r["status"].as_str().unwrap()))
        .collect();
    assert!(
        statuses.contains(&("presales_question", "accepted")),
        "{statuses:?}"
    );
    eventually("the overdue delivery request", || {
        let url = format!("{base}/api/v1/collab/requests");
        let key = key.clone();
        async move {
            let requests = get_json(url, key).await?;
            requests["items"]
                .as_array()?
                .iter()
                .any(|r| r["type"] == "delivery_schedule" && r["overdue"] == true)
                .then_some(())
        }
    })
    .await;

    // The live loop. From 李明's chat, the sidebar beside 张总's chat opens signed in as
    // him; he taps 「已电话沟通」 and places the call in the chat; the claim is verified.
    let (_, liming_chat) = text(&format!("{chat}/liming")).await;
    let href = |html: &str, containing: &str| -> String {
        html.split("href=\"")
            .filter_map(|s| s.split('"').next())
            .find(|h| h.contains(containing))
            .unwrap_or_else(|| panic!("no link with {containing}: {html}"))
            .replace("&amp;", "&")
    };
    let toolbar = href(&liming_chat, "external_userid=wmDemoHuananZhizao0001");
    let mut browser = Browser::new(str::to_string);
    let (status, at, _) = browser.open(&format!("{emulator}{toolbar}")).await;
    assert_eq!(status, 200);
    assert!(at.starts_with(&format!("{base}/sidebar")), "{at}");
    let (liming, csrf) = browser.session(&base).await;
    let found = get_json(
        format!("{base}/api/v1/customers?phone=13800138000"),
        key.clone(),
    )
    .await
    .unwrap();
    let customer = found["items"][0]["id"].as_str().unwrap().to_string();
    let tap = api
        .post(format!("{base}/web/customers/{customer}/actions"))
        .header("cookie", browser.cookies())
        .header("x-csrf-token", csrf)
        .json(&json!({"action": "已电话沟通"}))
        .send()
        .await
        .unwrap();
    assert_eq!(tap.status(), 201);
    let tap: Value = tap.json().await.unwrap();
    assert_eq!(tap["actor"], liming.as_str());
    let point = tap["id"].as_str().unwrap().to_string();
    let status_of = |point: String| {
        let key = key.clone();
        let url = format!("{base}/api/v1/events/{point}/verification");
        async move {
            let v = get_json(url, key).await?;
            v["status"].as_str().map(str::to_string)
        }
    };
    assert_eq!(status_of(point.clone()).await.as_deref(), Some("pending"));
    let res = post_form(
        &format!("{chat}/liming/call"),
        &[
            ("external_userid", "wmDemoHuananZhizao0001"),
            ("minutes", "5"),
            ("seconds", "0"),
        ],
    )
    .await;
    assert_eq!(res.status(), 303);
    eventually("the call verifying the tap", || {
        let point = point.clone();
        let status_of = &status_of;
        async move { (status_of(point).await.as_deref() == Some("verified")).then_some(()) }
    })
    .await;

    // 孙悦 adds a customer in her chat: WeCom's callback makes it closeloop's.
    let res = post_form(
        &format!("{chat}/sunyue/contacts"),
        &[
            ("name", "周总"),
            ("corp_name", "宁波海川机械有限公司"),
            ("phone", "13312345678"),
            ("state", "抖音表单"),
        ],
    )
    .await;
    assert_eq!(res.status(), 303);
    assert!(
        res.headers()["location"]
            .to_str()
            .unwrap()
            .ends_with("added=200"),
        "{:?}",
        res.headers()
    );
    let added = eventually("the added customer", || {
        let url = format!("{base}/api/v1/customers?phone=13312345678");
        let key = key.clone();
        async move {
            let found = get_json(url, key).await?;
            found["items"].as_array()?.first().cloned()
        }
    })
    .await;
    assert_eq!(added["name"], "宁波海川机械有限公司");
    let owner = get_json(
        format!("{base}/api/v1/users/{}", added["owner"].as_str().unwrap()),
        key.clone(),
    )
    .await
    .unwrap();
    assert_eq!(owner["name"], "孙悦");

    // The link on 张工's card opens signed in as 张工, in the browser that was 李明's.
    let card_link = href(&page, "/chat/zhanggong/open?to=");
    let (status, at, _) = browser.open(&format!("{emulator}{card_link}")).await;
    assert_eq!(status, 200, "{at}");
    assert!(at.starts_with(&format!("{base}/collab/requests/")), "{at}");
    let (zhanggong, _) = browser.session(&base).await;
    let who = get_json(format!("{base}/api/v1/users/{zhanggong}"), key.clone())
        .await
        .unwrap();
    assert_eq!(who["name"], "张工");

    // The Monday report, run now, reaches 王经理's chat.
    let cards_of = |html: &str| html.matches("<section class=\"card\"").count();
    let (_, before) = text(&format!("{chat}/wangjl")).await;
    let res = api
        .post(format!("{base}/api/v1/jobs/run-now"))
        .bearer_auth(&key)
        .json(&json!({"kind": "collab.health_weekly"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    eventually("the Monday card", || {
        let url = format!("{chat}/wangjl");
        let before = cards_of(&before);
        async move { (cards_of(&text(&url).await.1) > before).then_some(()) }
    })
    .await;

    // A week of history: points on at least six distinct days, and claimed calls both
    // verified and not.
    let points = get_json(format!("{base}/api/v1/events?limit=200"), key.clone())
        .await
        .unwrap();
    let items = points["items"].as_array().unwrap();
    let days: std::collections::BTreeSet<&str> = items
        .iter()
        .map(|p| &p["occurred_at_local"].as_str().unwrap()[..10])
        .collect();
    assert!(days.len() >= 6, "{days:?}");
    let verification: std::collections::BTreeSet<&str> = items
        .iter()
        .filter(|p| p["action"] == "已电话沟通")
        .map(|p| p["verification"].as_str().unwrap())
        .collect();
    assert!(verification.contains("verified"), "{verification:?}");
    assert!(
        verification.contains("unverified") || verification.contains("pending"),
        "{verification:?}"
    );

    let pid = demo.0.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let status = demo.0.wait().unwrap();
    assert!(
        status.success(),
        "demo ended with {status} on SIGTERM: {}",
        std::fs::read_to_string(&log_path).unwrap()
    );
}
