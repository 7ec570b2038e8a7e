//! The sidebar in a real headless browser (Debian's `chromium` and `chromium-driver`),
//! driven over W3C WebDriver with plain HTTP: WeCom sign-in through the emulator's OAuth
//! page, the JS-SDK stand-in finding the customer of the open chat, taps, the
//! anti-fraud freeze as the rep sees it (warned before the tap that freezes), a proposal sent into the open chat as a tracked
//! link, and a quick-ask and a handoff from the sidebar to the request page where
//! presales accepts and answers; a stage move confirmed (and cancelled) in the page, a
//! gate's missing list, 输单 with a reason, and a manager reopening the deal. In DingTalk's and Feishu's browsers (their User-Agents,
//! their SDKs stood in for by scripts served from an origin of their own): 免登 and
//! Feishu's OAuth, the SDK configured with the server's signature, a tap, and a proposal
//! handed out as a link to copy.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use closeloop::emulator::dingtalk::Emulator as DingtalkEmulator;
use closeloop::emulator::feishu::Emulator as FeishuEmulator;
use closeloop::emulator::wecom::Emulator;
use serde_json::{json, Value};
use sqlx::Row;

use crate::sidebar::{spawn_sidebar, wecom_config, SidebarApp, CORP};

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";
/// The W3C name of an element reference in WebDriver answers.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";
/// How long the page may take to reach a state (sign-in runs through three redirects).
const PATIENCE: Duration = Duration::from_secs(20);

/// A chromedriver process and one browser session. Dropping it ends the session (which
/// closes the browser) and kills chromedriver, also when a test fails halfway.
struct Browser {
    driver: Child,
    addr: SocketAddr,
    session: Option<String>,
    http: reqwest::Client,
    _profile: tempfile::TempDir,
}

/// Whether the browser tests can run here. Where Chromium is missing they are skipped with
/// a note (a developer's fresh machine), unless `CI_REQUIRE_BROWSER=1` — which
/// `.ci/run` sets after installing it — makes that a failure.
fn browser_available() -> bool {
    if std::path::Path::new(CHROMEDRIVER).exists() && std::path::Path::new(CHROMIUM).exists() {
        return true;
    }
    let hint = "install the browser with `apt-get install -y chromium chromium-driver`";
    if std::env::var("CI_REQUIRE_BROWSER").as_deref() == Ok("1") {
        panic!("{CHROMEDRIVER} or {CHROMIUM} is missing: {hint}");
    }
    println!("note: {CHROMEDRIVER} or {CHROMIUM} is missing; browser test skipped ({hint})");
    false
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Browser {
    async fn start() -> Browser {
        Browser::launch(None).await
    }

    /// A browser that introduces itself as `user_agent`, as a platform's in-app browser does.
    async fn start_as(user_agent: &str) -> Browser {
        Browser::launch(Some(user_agent)).await
    }

    async fn launch(user_agent: Option<&str>) -> Browser {
        let port = free_port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let profile = tempfile::tempdir().unwrap();
        let mut browser = Browser {
            driver,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            session: None,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .unwrap(),
            _profile: profile,
        };
        let deadline = Instant::now() + PATIENCE;
        loop {
            let ready = browser
                .http
                .get(format!("http://{}/status", browser.addr))
                .send()
                .await
                .ok();
            let ready = match ready {
                Some(r) => r.json::<Value>().await.ok(),
                None => None,
            };
            if ready.is_some_and(|v| v["value"]["ready"] == true) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver did not become ready on port {port}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let profile = browser._profile.path().display().to_string();
        let mut args = vec![
            "--headless=new".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-dev-shm-usage".into(),
            "--disable-quic".into(),
            "--no-first-run".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            format!("--user-data-dir={profile}"),
        ];
        if let Some(ua) = user_agent {
            args.push(format!("--user-agent={ua}"));
        }
        let created = browser
            .command(
                reqwest::Method::POST,
                "/session",
                Some(json!({"capabilities": {"alwaysMatch": {
                    "browserName": "chrome",
                    "goog:chromeOptions": {"binary": CHROMIUM, "args": args},
                }}})),
            )
            .await;
        browser.session = Some(
            created["sessionId"]
                .as_str()
                .expect("a new session has an id")
                .to_string(),
        );
        browser
    }

    /// One WebDriver command; panics with the driver's answer on an error.
    async fn command(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        match self.try_command(method.clone(), path, body).await {
            Ok(v) => v,
            Err((status, v)) => panic!("{method} {path}: {status} {v}"),
        }
    }

    /// One WebDriver command: its value, or the status and the driver's error answer.
    async fn try_command(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, (reqwest::StatusCode, Value)> {
        let mut req = self
            .http
            .request(method, format!("http://{}{path}", self.addr));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.expect("chromedriver answers");
        let status = res.status();
        let v: Value = res.json().await.expect("chromedriver answers JSON");
        if status.is_success() {
            Ok(v["value"].clone())
        } else {
            Err((status, v))
        }
    }

    fn session_path(&self, rest: &str) -> String {
        format!("/session/{}{rest}", self.session.as_deref().unwrap())
    }

    async fn goto(&self, url: &str) {
        self.command(
            reqwest::Method::POST,
            &self.session_path("/url"),
            Some(json!({"url": url})),
        )
        .await;
    }

    async fn current_url(&self) -> String {
        self.command(reqwest::Method::GET, &self.session_path("/url"), None)
            .await
            .as_str()
            .unwrap()
            .to_string()
    }

    /// Runs `script` in the page and returns its value. A page that is being replaced (a
    /// sign-in redirect, a form post) has no document to run in for a moment: tried again.
    async fn eval(&self, script: &str, args: Value) -> Value {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let answer = self
                .try_command(
                    reqwest::Method::POST,
                    &self.session_path("/execute/sync"),
                    Some(json!({"script": script, "args": args.clone()})),
                )
                .await;
            match answer {
                Ok(v) => return v,
                Err((status, v)) => {
                    let error = v["value"]["error"].as_str().unwrap_or_default();
                    let navigating = matches!(
                        error,
                        "javascript error" | "no such execution context" | "no such window"
                    );
                    if !navigating || Instant::now() > deadline {
                        panic!("execute {script}: {status} {v}");
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    /// Runs `script` in the page and returns what it passes to its last argument.
    async fn eval_async(&self, script: &str) -> Value {
        self.command(
            reqwest::Method::POST,
            &self.session_path("/execute/async"),
            Some(json!({"script": script, "args": []})),
        )
        .await
    }

    async fn find(&self, css: &str) -> String {
        let found = self
            .command(
                reqwest::Method::POST,
                &self.session_path("/element"),
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        found[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("no element reference for {css}: {found}"))
            .to_string()
    }

    /// Clicks like a person: the element must be visible and enabled.
    /// Clicks the element `css` selects. A page script may replace the element between
    /// finding and clicking it (a refreshed fragment): it is found again.
    async fn click(&self, css: &str) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let id = self.find(css).await;
            let clicked = self
                .try_command(
                    reqwest::Method::POST,
                    &self.session_path(&format!("/element/{id}/click")),
                    Some(json!({})),
                )
                .await;
            match clicked {
                Ok(_) => return,
                Err((_, v))
                    if v["value"]["error"] == "stale element reference"
                        && Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err((status, v)) => panic!("click {css}: {status} {v}"),
            }
        }
    }

    /// Types `text` into the element like a person (it must be visible and enabled).
    async fn type_into(&self, css: &str, text: &str) {
        let id = self.find(css).await;
        self.command(
            reqwest::Method::POST,
            &self.session_path(&format!("/element/{id}/value")),
            Some(json!({"text": text})),
        )
        .await;
    }

    /// Sets the session cookie (of `Cookie` header form `name=value`) for the current
    /// origin, as a sign-in would: another person in the same browser.
    async fn sign_in_as(&self, cookie: &str) {
        let (name, value) = cookie.split_once('=').unwrap();
        self.command(
            reqwest::Method::POST,
            &self.session_path("/cookie"),
            Some(json!({"cookie": {"name": name, "value": value, "path": "/", "httpOnly": true}})),
        )
        .await;
    }

    /// Text of the first element matching `css`, "" when there is none.
    async fn text(&self, css: &str) -> String {
        self.eval(
            "var e = document.querySelector(arguments[0]); return e ? e.innerText : '';",
            json!([css]),
        )
        .await
        .as_str()
        .unwrap_or_default()
        .to_string()
    }

    /// Polls `check` until it holds; panics with `what` and the page text otherwise.
    async fn wait_for<F, Fut>(&self, what: &str, check: F)
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = Instant::now() + PATIENCE;
        while !check().await {
            if Instant::now() > deadline {
                let url = self.current_url().await;
                let body = self.text("body").await;
                panic!("timed out waiting for {what}; at {url}:\n{body}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn quit(mut self) {
        if let Some(id) = self.session.take() {
            let _ = self
                .http
                .delete(format!("http://{}/session/{id}", self.addr))
                .send()
                .await;
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Drop cannot await: end the session with a plain blocking request, so chromedriver
        // closes the browser before it is killed.
        if let Some(id) = self.session.take() {
            if let Ok(mut stream) = TcpStream::connect_timeout(&self.addr, Duration::from_secs(2)) {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
                let _ = write!(
                    stream,
                    "DELETE /session/{id} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
                    self.addr
                );
                // chromedriver keeps the connection open after answering, so read until
                // the whole answer is in rather than until the end of the stream.
                let mut answer = Vec::new();
                let mut chunk = [0u8; 1024];
                while !complete_http_answer(&answer) {
                    match stream.read(&mut chunk) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => answer.extend_from_slice(&chunk[..n]),
                    }
                }
            }
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// Whether `bytes` hold an HTTP answer's head and its whole `Content-Length` body.
fn complete_http_answer(bytes: &[u8]) -> bool {
    let text = String::from_utf8_lossy(bytes);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return false;
    };
    let length = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    body.len() >= length
}

/// Whether the freeze warning (仍要记录 / 取消) is showing.
async fn warning_shown(browser: &Browser) -> bool {
    browser
        .eval(
            "var w = document.getElementById('freeze-warning'); return !!w && !w.hidden;",
            json!([]),
        )
        .await
        == true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rep_signs_in_through_wecom_taps_and_meets_the_freeze() {
    if !browser_available() {
        return;
    }
    let emulator = Emulator::start(CORP, vec![("app-secret".to_string(), "app")]).await;
    let app = spawn_sidebar(&wecom_config(&emulator), false).await;
    let rep = app.member("李明", "liming").await;
    let customer = app.customer("华南智造", &rep).await;
    app.link_external(&customer, "wmEXT001").await;
    emulator.set_current_member(Some("liming"));
    emulator.set_current_external_contact(Some("wmEXT001"));

    let browser = Browser::start().await;
    // The toolbar opens /sidebar: OAuth through the emulator, then the JS-SDK stand-in
    // names the chat's external contact and the page goes to that customer.
    browser.goto(&app.url("/sidebar")).await;
    let customer_path = format!("/sidebar/customers/{customer}");
    browser
        .wait_for("the customer's page", || async {
            browser.current_url().await.ends_with(&customer_path)
                && !browser.text("h1").await.is_empty()
        })
        .await;
    assert_eq!(browser.text("header.customer h1").await, "华南智造");
    for name in [
        "已电话沟通",
        "已发送样品清单",
        "客户提出价格异议",
        "上传方案",
    ] {
        assert_eq!(
            browser
                .text(&format!("button[data-action=\"{name}\"]"))
                .await,
            name
        );
    }

    // One tap: the touch appears as 待核验, and the ledger has the whole context.
    browser.click("button[data-action=\"已电话沟通\"]").await;
    browser
        .wait_for("the new touch", || async {
            browser.text("#touches .touch").await.contains("待核验")
        })
        .await;
    browser
        .wait_for("the toast", || async {
            browser.text("#toast").await == "已记录"
        })
        .await;
    let rows = sqlx::query(
        "SELECT source, actor_user_id, client_ip, user_agent, platform, verification FROM tracking_points \
         WHERE customer_id = $1 AND action = '已电话沟通'",
    )
    .bind(&customer)
    .fetch_all(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(rows.len(), 1);
    let row = &rows[0];
    assert_eq!(row.get::<String, _>("source"), "sidebar");
    assert_eq!(row.get::<String, _>("actor_user_id"), rep);
    assert_eq!(
        row.get::<Option<String>, _>("client_ip").as_deref(),
        Some("127.0.0.1")
    );
    let agent: String = row.get::<Option<String>, _>("user_agent").unwrap();
    assert!(agent.contains("Chrome"), "{agent}");
    assert_eq!(
        row.get::<Option<String>, _>("platform").as_deref(),
        Some("wecom")
    );
    assert_eq!(row.get::<String, _>("verification"), "pending");

    // The second is recorded; the third would freeze: the page warns first.
    browser.click("button[data-action=\"已电话沟通\"]").await;
    browser
        .wait_for("the second touch", || async {
            browser
                .eval(
                    "return document.querySelectorAll('#touches .touch').length;",
                    json!([]),
                )
                .await
                == 2
        })
        .await;
    browser
        .wait_for("the button to be ready again", || async {
            browser
                .eval(
                    "return !document.querySelector('button[data-action=\"已电话沟通\"]').disabled;",
                    json!([]),
                )
                .await
                == true
        })
        .await;
    // The third would freeze: the page says so before sending anything, with the count
    // and the window of the rules in force.
    browser
        .wait_for("the warning on the button", || async {
            browser
                .eval(
                    "var b = document.querySelector('button[data-action=\"已电话沟通\"]'); \
                     return b ? b.getAttribute('data-warn') : null;",
                    json!([]),
                )
                .await
                == "24小时内已记录2次「已电话沟通」，再记录将被冻结"
        })
        .await;
    let points_before = points(&app, &customer, "已电话沟通").await.len();
    browser.click("button[data-action=\"已电话沟通\"]").await;
    browser
        .wait_for("the warning", || async { warning_shown(&browser).await })
        .await;
    assert_eq!(
        browser.text("#freeze-warning .warning-text").await,
        "24小时内已记录2次「已电话沟通」，再记录将被冻结"
    );
    // 取消 records nothing.
    browser
        .click("#freeze-warning button[data-warn-cancel]")
        .await;
    browser
        .wait_for("the warning to close", || async {
            !warning_shown(&browser).await
        })
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        points(&app, &customer, "已电话沟通").await.len(),
        points_before
    );
    assert!(
        points(&app, &customer, "rule.repeat_limit")
            .await
            .is_empty(),
        "cancel froze nothing"
    );
    assert!(browser.text("#freeze").await.is_empty());

    // 仍要记录: the tap goes out, is refused and freezes the rep on this customer.
    browser.click("button[data-action=\"已电话沟通\"]").await;
    browser
        .wait_for("the warning again", || async {
            warning_shown(&browser).await
        })
        .await;
    browser.click("#freeze-warning button[data-warn-go]").await;
    browser
        .wait_for("the refusal", || async {
            !browser.text("#notice").await.is_empty()
        })
        .await;
    assert_eq!(points(&app, &customer, "rule.repeat_limit").await.len(), 1);
    // The banner shows at once (the page's sections are refreshed), and 李明 has no
    // direct superior: it says nobody was notified. The buttons no longer warn.
    browser
        .wait_for("the banner", || async {
            browser
                .text("#freeze .banner.frozen")
                .await
                .contains("您没有直属上级")
        })
        .await;
    assert_eq!(
        browser
            .eval(
                "return document.querySelectorAll('#action-buttons button[data-warn]').length;",
                json!([]),
            )
            .await,
        0
    );
    let code = browser
        .eval(
            "return document.getElementById('notice').getAttribute('data-code');",
            json!([]),
        )
        .await;
    assert_eq!(code, "repeat_limit");
    assert!(browser.text("#notice").await.contains("冻结"));
    assert_eq!(
        browser
            .eval(
                "return document.querySelectorAll('#touches .touch').length;",
                json!([]),
            )
            .await,
        2,
        "the refused tap is no touch"
    );
    browser.goto(&app.url(&customer_path)).await;
    browser
        .wait_for("the page after reload", || async {
            browser.text("header.customer h1").await == "华南智造"
        })
        .await;
    let banner = browser.text("#freeze .banner.frozen").await;
    assert!(banner.contains("您对该客户的操作已冻结"), "{banner}");

    browser.quit().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_contact_gets_a_clear_message_and_the_stand_in_checks_signatures() {
    if !browser_available() {
        return;
    }
    let emulator = Emulator::start(CORP, vec![("app-secret".to_string(), "app")]).await;
    let app = spawn_sidebar(&wecom_config(&emulator), false).await;
    app.member("李明", "liming").await;
    emulator.set_current_member(Some("liming"));
    // Outside a customer chat, or with a contact closeloop does not know: a clear message.
    emulator.set_current_external_contact(Some("wmUNKNOWN"));
    let browser = Browser::start().await;
    browser.goto(&app.url("/sidebar")).await;
    browser
        .wait_for("the unknown-contact message", || async {
            browser.text("#status").await.contains("还没有对应的客户")
        })
        .await;
    // The stand-in checks what the page passes to wx.config.
    let err = browser
        .command(
            reqwest::Method::POST,
            &browser.session_path("/execute/async"),
            Some(json!({
                "script": "var done = arguments[arguments.length - 1]; \
                           wx.error(function (res) { done(res.errMsg); }); \
                           wx.config({appId: 'x', timestamp: 1, nonceStr: 'n'});",
                "args": []
            })),
        )
        .await;
    assert!(err.as_str().unwrap().contains("missing signature"), "{err}");
    // What the page would post into the chat is kept for tests to read.
    let sent = browser
        .command(
            reqwest::Method::POST,
            &browser.session_path("/execute/async"),
            Some(json!({
                "script": "var done = arguments[arguments.length - 1]; \
                           wx.invoke('sendChatMessage', {msgtype: 'text', text: {content: '方案已发送'}}, function (res) { \
                             done([res.err_msg, wx.__calls.filter(function (c) { return c.api === 'sendChatMessage'; })]); });",
                "args": []
            })),
        )
        .await;
    assert_eq!(sent[0], "sendChatMessage:ok");
    assert_eq!(sent[1][0]["args"]["text"]["content"], "方案已发送");
    browser.quit().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rep_asks_presales_from_the_sidebar_and_presales_accepts_on_the_request_page() {
    if !browser_available() {
        return;
    }
    let app = spawn_sidebar("", false).await;
    let rep = app.create("/api/v1/users", json!({"name": "李明"})).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let presales = app
        .create(
            "/api/v1/users",
            json!({"name": "张工", "roles": ["presales"]}),
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let customer = app.customer("华南智造", &rep).await;
    sqlx::query(
        "INSERT INTO customer_assignments (customer_id, role, user_id, assigned_at) VALUES ($1, 'presales', $2, 0)",
    )
    .bind(&customer)
    .bind(&presales)
    .execute(&app.db.pool)
    .await
    .unwrap();
    let (rep_cookie, _) = app.session(&rep, "wecom").await;
    let (presales_cookie, _) = app.session(&presales, "wecom").await;

    let browser = Browser::start().await;
    // Cookies belong to an origin: be on it first.
    browser.goto(&app.url("/healthz")).await;
    browser.sign_in_as(&rep_cookie).await;
    browser
        .goto(&app.url(&format!("/sidebar/customers/{customer}")))
        .await;
    browser
        .wait_for("the customer's page", || async {
            browser.text("header.customer h1").await == "华南智造"
        })
        .await;

    // The quick-ask opens its form: the template's prompt and who receives it.
    let form = "form.collab-form[data-type=\"presales_question\"]";
    browser.click("button[data-action=\"@售前快速提问\"]").await;
    browser
        .wait_for("the quick-ask form", || async {
            browser
                .eval(
                    "return !document.querySelector(arguments[0]).hidden;",
                    json!([form]),
                )
                .await
                == true
        })
        .await;
    assert!(
        browser
            .text(&format!("{form} .receiver"))
            .await
            .contains("张工"),
        "{}",
        browser.text(form).await
    );
    browser
        .type_into(
            &format!("{form} input[data-prompt=\"问题\"]"),
            "是否支持私有化部署？",
        )
        .await;
    browser
        .click(&format!("{form} button[type=\"submit\"]"))
        .await;
    browser
        .wait_for("the request to be sent", || async {
            browser
                .text("#collab-result")
                .await
                .contains("已发送给 张工")
        })
        .await;
    browser
        .wait_for("the customer's requests to list it", || async {
            browser
                .text("#collab-requests")
                .await
                .contains("售前快速提问")
        })
        .await;
    let taps: i64 = sqlx::query(
        "SELECT CAST(COUNT(*) AS BIGINT) AS n FROM tracking_points WHERE action = '@售前快速提问'",
    )
    .fetch_one(&app.db.pool)
    .await
    .unwrap()
    .get("n");
    assert_eq!(
        taps, 1,
        "the form opens a request, recorded as one tracking point (no extra bare tap)"
    );

    // A handoff with one of its three artefacts: the file goes up, the refusal lists the
    // other two; with all three it is sent.
    let files = tempfile::tempdir().unwrap();
    let file = |name: &str| {
        let path = files.path().join(name);
        std::fs::write(&path, format!("{name} 的内容")).unwrap();
        path.display().to_string()
    };
    let handoff = "form.collab-form[data-type=\"sales_to_presales\"]";
    browser
        .click("button[data-collab=\"sales_to_presales\"]")
        .await;
    browser
        .type_into(
            &format!("{handoff} input[data-prompt=\"客户需求概述\"]"),
            "私有化部署，500 人",
        )
        .await;
    browser
        .type_into(
            &format!("{handoff} input[data-artefact=\"客户需求清单\"]"),
            &file("needs.txt"),
        )
        .await;
    browser
        .click(&format!("{handoff} button[type=\"submit\"]"))
        .await;
    let refusal = format!("{handoff} [data-error]");
    browser
        .wait_for("the refusal", || async {
            browser.text(&refusal).await.contains("交接资料不全")
        })
        .await;
    let listed = browser
        .eval(
            "return Array.prototype.map.call(document.querySelectorAll(arguments[0] + ' li'), \
             function (li) { return li.textContent; });",
            json!([refusal]),
        )
        .await;
    assert_eq!(listed, json!(["竞品对比表", "预算范围确认截图"]));
    for (artefact, name) in [
        ("竞品对比表", "rivals.txt"),
        ("预算范围确认截图", "budget.txt"),
    ] {
        browser
            .type_into(
                &format!("{handoff} input[data-artefact=\"{artefact}\"]"),
                &file(name),
            )
            .await;
    }
    browser
        .click(&format!("{handoff} button[type=\"submit\"]"))
        .await;
    browser
        .wait_for("the handoff to be sent", || async {
            browser
                .text("#collab-requests")
                .await
                .contains("销售→售前交接")
        })
        .await;
    let documents: i64 =
        sqlx::query("SELECT CAST(COUNT(*) AS BIGINT) AS n FROM documents WHERE kind = 'artefact'")
            .fetch_one(&app.db.pool)
            .await
            .unwrap()
            .get("n");
    assert_eq!(
        documents, 3,
        "the first file went up once, not again on the retry"
    );

    let row = sqlx::query(
        "SELECT id, initiator_user_id, assignee_user_id, content_enc FROM collab_requests \
         WHERE type_key = 'presales_question'",
    )
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    let id: String = row.get("id");
    assert_eq!(row.get::<String, _>("initiator_user_id"), rep);
    assert_eq!(
        row.get::<Option<String>, _>("assignee_user_id").as_deref(),
        Some(presales.as_str())
    );
    assert_eq!(
        app.cipher
            .decrypt(
                "collab_requests.content",
                &row.get::<String, _>("content_enc")
            )
            .unwrap(),
        r#"{"问题":"是否支持私有化部署？"}"#
    );

    // Presales, in the same browser with a session of their own, opens what the card links.
    browser.sign_in_as(&presales_cookie).await;
    browser
        .goto(&app.url(&format!("/collab/requests/{id}")))
        .await;
    browser
        .wait_for("the request page", || async {
            browser.text("header.request h1").await == "售前快速提问"
        })
        .await;
    assert_eq!(browser.text("header.request .badge").await, "待接受");
    browser
        .wait_for("the countdown to run", || async {
            browser
                .eval(
                    "var c = document.querySelector('#deadline .countdown'); \
                     return !!c && c.hasAttribute('data-skew') && c.textContent.indexOf('剩余') === 0;",
                    json!([]),
                )
                .await
                == true
        })
        .await;
    browser.click("button[data-step=\"accept\"]").await;
    browser
        .wait_for("the request to be accepted", || async {
            browser.text("header.request .badge").await == "处理中"
        })
        .await;
    assert!(browser.text(".ack").await.contains("已确认收到"));
    browser
        .type_into(
            "form[data-step=\"answer\"] input[name=\"text\"]",
            "支持，需要 8 核 32G",
        )
        .await;
    browser
        .click("form[data-step=\"answer\"] button[type=\"submit\"]")
        .await;
    browser
        .wait_for("the answer", || async {
            browser.text("header.request .badge").await == "已答复"
        })
        .await;
    assert_eq!(browser.text("p.answer").await, "支持，需要 8 核 32G");

    browser.quit().await;
    app.stop().await;
}

/// 「发起协作」 in the browser: the role narrows the people offered, the request goes to
/// the named member.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rep_opens_an_adhoc_request_to_a_named_member_from_the_sidebar() {
    if !browser_available() {
        return;
    }
    let app = spawn_sidebar("", false).await;
    let rep = app.create("/api/v1/users", json!({"name": "李明"})).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let lawyer = app
        .create(
            "/api/v1/users",
            json!({"name": "王律师", "roles": ["legal"]}),
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    app.create(
        "/api/v1/users",
        json!({"name": "张工", "roles": ["presales"]}),
    )
    .await;
    let customer = app.customer("华南智造", &rep).await;
    let (rep_cookie, _) = app.session(&rep, "wecom").await;
    let browser = Browser::start().await;
    browser.goto(&app.url("/healthz")).await;
    browser.sign_in_as(&rep_cookie).await;
    browser
        .goto(&app.url(&format!("/sidebar/customers/{customer}")))
        .await;
    let form = "form.collab-form[data-type=\"adhoc\"]";
    browser.click("button[data-collab=\"adhoc\"]").await;
    browser
        .wait_for("the ad-hoc form", || async {
            browser
                .eval(
                    "return !document.querySelector(arguments[0]).hidden;",
                    json!([form]),
                )
                .await
                == true
        })
        .await;
    // Choosing 法务 offers only 王律师.
    let offered = browser
        .eval(
            "var f = document.querySelector(arguments[0]); var r = f.querySelector('[name=role]'); \
             r.value = 'legal'; r.dispatchEvent(new Event('change')); \
             f.querySelector('[name=subject]').value = '付款条件调整'; \
             return Array.prototype.filter.call(f.querySelectorAll('[name=assignee] option[data-role]'), \
             function (o) { return !o.hidden; }).map(function (o) { return o.textContent; });",
            json!([form]),
        )
        .await;
    assert_eq!(offered, json!(["王律师"]));
    browser
        .eval(
            "document.querySelector(arguments[0] + ' [name=assignee]').value = arguments[1];",
            json!([form, lawyer]),
        )
        .await;
    browser
        .type_into(
            &format!("{form} textarea[name=\"description\"]"),
            "客户希望分三期付款",
        )
        .await;
    browser
        .click(&format!("{form} button[type=\"submit\"]"))
        .await;
    browser
        .wait_for("the request to be sent", || async {
            browser
                .text("#collab-result")
                .await
                .contains("已发送给 王律师")
        })
        .await;
    let (title, assignee): (String, Option<String>) =
        sqlx::query_as("SELECT title, assignee_user_id FROM collab_requests")
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    assert_eq!((title.as_str(), assignee), ("付款条件调整", Some(lawyer)));
    browser.quit().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_wecom_a_rep_sends_a_proposal_into_the_chat_as_a_tracked_link() {
    if !browser_available() {
        return;
    }
    let emulator = Emulator::start(CORP, vec![("app-secret".to_string(), "app")]).await;
    let app = spawn_sidebar(&wecom_config(&emulator), false).await;
    let rep = app.member("李明", "liming").await;
    let customer = app.customer("华南智造", &rep).await;
    app.link_external(&customer, "wmEXT001").await;
    // Nothing new to upload: the proposal is already there.
    let doc =
        crate::sidebar_tools::upload_proposal(&app, &customer, &rep, "华南智造-质检方案.pdf").await;
    emulator.set_current_member(Some("liming"));
    emulator.set_current_external_contact(Some("wmEXT001"));

    let browser = Browser::start().await;
    browser.goto(&app.url("/sidebar")).await;
    let customer_path = format!("/sidebar/customers/{customer}");
    browser
        .wait_for("the customer's page", || async {
            browser.current_url().await.ends_with(&customer_path)
                && browser.text("header.customer h1").await == "华南智造"
        })
        .await;
    assert!(browser
        .text("#proposals")
        .await
        .contains("华南智造-质检方案.pdf"));
    // The customer page signs the JS-SDK itself, as the entry page does.
    browser
        .wait_for("the page's own agentConfig", || async {
            browser
                .eval(
                    "return !!window.wx && wx.__calls.some(function (c) { \
                       return c.api === 'agentConfig' && c.args.jsApiList.indexOf('sendChatMessage') >= 0; });",
                    json!([]),
                )
                .await
                == true
        })
        .await;

    browser
        .click(&format!("button[data-send-document=\"{doc}\"]"))
        .await;
    browser
        .wait_for("the toast", || async {
            browser.text("#toast").await == "已发送到聊天"
        })
        .await;
    let sent = browser
        .eval(
            "return wx.__calls.filter(function (c) { return c.api === 'sendChatMessage'; });",
            json!([]),
        )
        .await;
    assert_eq!(sent.as_array().unwrap().len(), 1, "{sent}");
    let args = &sent[0]["args"];
    assert_eq!(args["msgtype"], "news", "{args}");
    assert_eq!(args["news"]["title"], "华南智造-质检方案.pdf");
    assert_eq!(args["news"]["imgUrl"], "");
    let link = args["news"]["link"].as_str().unwrap().to_string();
    assert!(link.starts_with(&app.url("/d/")), "{link}");
    browser
        .wait_for("the proposal to show as sent", || async {
            browser.text("#proposals").await.contains("已发送")
        })
        .await;
    assert_eq!(
        browser
            .eval(
                "return document.getElementById('share-result').hidden;",
                json!([])
            )
            .await,
        true,
        "no link to copy inside WeCom"
    );

    // The ledger has the `document.sent` point, and the link in the chat is the tracked one.
    let rows = sqlx::query(
        "SELECT actor_user_id, source, payload FROM tracking_points \
         WHERE customer_id = $1 AND action = 'document.sent'",
    )
    .bind(&customer)
    .fetch_all(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].get::<String, _>("actor_user_id"), rep);
    assert_eq!(rows[0].get::<String, _>("source"), "sidebar");
    assert!(rows[0].get::<String, _>("payload").contains(&doc));
    let res = reqwest::get(&link).await.unwrap();
    assert_eq!(res.status(), 200);
    let opened: Option<i64> =
        sqlx::query("SELECT first_opened_at FROM document_links WHERE document_id = $1")
            .bind(&doc)
            .fetch_one(&app.db.pool)
            .await
            .unwrap()
            .get("first_opened_at");
    assert!(opened.is_some(), "the chat's link is the tracked one");

    // Outside WeCom (a demo session, no JS-SDK on the page) the link is shown to copy.
    let (dev_cookie, _) = app.session(&rep, "dev").await;
    browser.sign_in_as(&dev_cookie).await;
    browser.goto(&app.url(&customer_path)).await;
    browser
        .wait_for("the page without the JS-SDK", || async {
            browser.text("#proposals").await.contains("已打开")
        })
        .await;
    assert_eq!(
        browser.eval("return typeof window.wx;", json!([])).await,
        "undefined"
    );
    browser
        .click(&format!("button[data-send-document=\"{doc}\"]"))
        .await;
    browser
        .wait_for("the link to copy", || async {
            browser
                .eval(
                    "var i = document.querySelector('#share-result input'); return i ? i.value : '';",
                    json!([]),
                )
                .await
                .as_str()
                .is_some_and(|v| v.starts_with(&app.url("/d/")) && v != link)
        })
        .await;
    let sent: i64 = sqlx::query(
        "SELECT CAST(COUNT(*) AS BIGINT) AS n FROM document_links WHERE document_id = $1",
    )
    .bind(&doc)
    .fetch_one(&app.db.pool)
    .await
    .unwrap()
    .get("n");
    assert_eq!(sent, 2);

    browser.quit().await;
    app.stop().await;
}

const DINGTALK_APP_KEY: &str = "dingclapp0000001";
const DINGTALK_SECRET: &str = "app-secret-xyz";
const DINGTALK_CORP: &str = "dingcorp00000001";
const DINGTALK_AGENT: &str = "3000001";
const FEISHU_APP_ID: &str = "cli_a1b2c3d4e5f6";
const FEISHU_SECRET: &str = "feishu-app-secret";
/// What DingTalk's and Feishu's in-app browsers send (Android); the server picks the
/// sign-in by the `DingTalk` and `Lark` markers.
const DINGTALK_UA: &str = "Mozilla/5.0 (Linux; Android 13; zh-CN) AppleWebKit/537.36 \
    (KHTML, like Gecko) Chrome/120.0.0.0 Mobile Safari/537.36 AliApp(DingTalk/7.0.0) \
    com.alibaba.android.rimet/36000000 language/zh-CN";
const FEISHU_UA: &str = "Mozilla/5.0 (Linux; Android 13; wv) AppleWebKit/537.36 (KHTML, like \
    Gecko) Version/4.0 Chrome/120.0.0.0 Mobile Safari/537.36 Lark/7.1.0 LarkLocale/zh_CN \
    ChannelName/Feishu";

/// What both SDK stand-ins share, inside `(function (want) { … })`: every call is kept
/// (data only) in `calls`, and `configure` settles `ready`/`error` listeners the way the
/// clients do, failing a configuration that lacks one of `required`.
const SDK_STAND_IN_BASE: &str = r#"
  'use strict';
  var calls = [];
  var verdict = null;
  var waiting = { ready: [], error: [] };
  function record(api, args) {
    calls.push({ api: api, args: JSON.parse(JSON.stringify(args || {})) });
  }
  function soon(fn, arg) {
    if (typeof fn === 'function') { setTimeout(function () { fn(arg); }, 0); }
  }
  function settle() {
    if (!verdict) { return; }
    (verdict.ok ? waiting.ready : waiting.error).splice(0).forEach(function (fn) {
      soon(fn, verdict.answer);
    });
  }
  function configure(cfg, required) {
    record('config', cfg);
    var missing = required.filter(function (k) { return !cfg[k]; });
    verdict = missing.length
      ? { ok: false, answer: { errorMessage: 'config: missing ' + missing.join(', ') } }
      : { ok: true, answer: {} };
    settle();
    return verdict;
  }
  function ready(fn) { waiting.ready.push(fn); settle(); }
  function error(fn) { waiting.error.push(fn); settle(); }
"#;

/// DingTalk's JSAPI (`window.dd`): `requestAuthCode` hands out `want.code` only for the
/// organisation and app in `want`, as the client only signs in its own members.
const DINGTALK_STAND_IN: &str = r#"
  window.dd = {
    __calls: calls,
    config: function (cfg) {
      configure(cfg, ['agentId', 'corpId', 'timeStamp', 'nonceStr', 'signature']);
    },
    ready: ready,
    error: error,
    runtime: { permission: { requestAuthCode: function (opts) {
      record('runtime.permission.requestAuthCode', opts);
      var ok = opts.corpId === want.corpId && opts.clientId === want.clientId;
      var answer = ok ? { code: want.code } : { errorMessage: 'not this organisation or app' };
      soon(ok ? opts.onSuccess : opts.onFail, answer);
      return ok ? Promise.resolve(answer) : Promise.reject(answer);
    } } },
    biz: { navigation: { setTitle: function (opts) {
      record('biz.navigation.setTitle', opts);
      soon(opts.onSuccess, {});
    } } }
  };
"#;

/// Feishu's JSSDK (`window.h5sdk`): `config` answers through its own callbacks as well.
const FEISHU_STAND_IN: &str = r#"
  window.h5sdk = {
    __calls: calls,
    config: function (cfg) {
      var v = configure(cfg, ['appId', 'timestamp', 'nonceStr', 'signature']);
      soon(v.ok ? cfg.onSuccess : cfg.onFail, v.answer);
    },
    ready: ready,
    error: error
  };
"#;

/// Serves a stand-in SDK (`stand_in` given `want`) at `/sdk.js` from an origin of its own,
/// as the platform's CDN serves the real one; returns the script's address. The server
/// lives as long as the test's runtime.
async fn serve_sdk(stand_in: &str, want: Value) -> String {
    let script = format!("(function (want) {{{SDK_STAND_IN_BASE}{stand_in}}})({want});\n");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = axum::Router::new().route(
        "/sdk.js",
        axum::routing::get(move || {
            let script = script.clone();
            async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/javascript; charset=utf-8",
                    )],
                    script,
                )
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, router).await });
    format!("http://{addr}/sdk.js")
}

/// `[dingtalk]` with the APIs at `emu` and the JSAPI at `jsapi_url`.
fn dingtalk_config(emu: &DingtalkEmulator, jsapi_url: &str) -> String {
    format!(
        "[dingtalk]\napp_key = \"{DINGTALK_APP_KEY}\"\napp_secret = \"{DINGTALK_SECRET}\"\n\
         agent_id = {DINGTALK_AGENT}\ncorp_id = \"{DINGTALK_CORP}\"\ntoken = \"mryue\"\n\
         aes_key = \"Yue0EfdN5900c1ce5cf6A152c63DDe1808a60c5ecd7\"\n\
         api_base = \"{base}\"\noapi_base = \"{base}\"\njsapi_url = \"{jsapi_url}\"\n",
        base = emu.base_url()
    )
}

/// `[feishu]` with the APIs and the authorize page at `emu` and the JSSDK at `h5sdk_url`.
fn feishu_config(emu: &FeishuEmulator, h5sdk_url: &str) -> String {
    format!(
        "[feishu]\napp_id = \"{FEISHU_APP_ID}\"\napp_secret = \"{FEISHU_SECRET}\"\n\
         verification_token = \"vtoken-123\"\napi_base = \"{base}\"\n\
         accounts_base = \"{base}\"\nh5sdk_url = \"{h5sdk_url}\"\n",
        base = emu.base_url()
    )
}

/// A rep known to `platform` as `kind` `value`; returns the user id.
async fn rep_on(app: &SidebarApp, platform: &str, kind: &str, value: &str) -> String {
    app.create(
        "/api/v1/users",
        json!({"name": "李明", "identities": [{"platform": platform, "kind": kind, "value": value}]}),
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// The tracking points of `customer` with `action`, read through the API.
async fn points(app: &SidebarApp, customer: &str, action: &str) -> Vec<Value> {
    let key = crate::sidebar_tools::api_key(app).await;
    let page: Value = reqwest::Client::new()
        .get(app.url("/api/v1/events"))
        .query(&[("customer", customer), ("action", action)])
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    page["items"].as_array().cloned().unwrap_or_default()
}

/// The calls the page made to the SDK stand-in `sdk` (`dd` or `h5sdk`) named `api`.
async fn sdk_calls(browser: &Browser, sdk: &str, api: &str) -> Vec<Value> {
    browser
        .eval(
            "var sdk = window[arguments[0]], api = arguments[1]; if (!sdk) { return []; } \
             return sdk.__calls.filter(function (c) { return c.api === api; });",
            json!([sdk, api]),
        )
        .await
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Waits for the rep's customer list on `platform` at `/sidebar`: signed in.
async fn wait_for_the_list(browser: &Browser, app: &SidebarApp, platform: &str) {
    browser
        .wait_for("the rep's customer list", || async {
            browser.current_url().await == app.url("/sidebar")
                && browser
                    .eval(
                        "var m = document.querySelector('main[data-page=\"list\"]'); \
                         return m ? m.getAttribute('data-platform') : '';",
                        json!([]),
                    )
                    .await
                    == platform
        })
        .await;
}

/// A tap on the customer's page, seen as the toast and then through the API as a sidebar
/// point from `platform`'s browser; returns the point.
async fn tap_and_find_the_point(
    browser: &Browser,
    app: &SidebarApp,
    customer: &str,
    rep: &str,
    platform: &str,
) -> Value {
    browser.click("button[data-action=\"已电话沟通\"]").await;
    browser
        .wait_for("the toast", || async {
            browser.text("#toast").await == "已记录"
        })
        .await;
    let found = points(app, customer, "已电话沟通").await;
    assert_eq!(found.len(), 1, "{found:?}");
    let point = found[0].clone();
    assert_eq!(point["source"], "sidebar");
    assert_eq!(point["platform"], platform);
    assert_eq!(point["actor"], rep);
    point
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_dingtalk_a_rep_signs_in_free_taps_and_copies_a_proposal_link() {
    if !browser_available() {
        return;
    }
    let emu = DingtalkEmulator::start(DINGTALK_APP_KEY, DINGTALK_SECRET).await;
    // What the rep's client would hand the page: a 免登 code for them, once.
    let want = json!({"corpId": DINGTALK_CORP, "clientId": DINGTALK_APP_KEY,
                      "code": emu.issue_auth_code("liming")});
    let sdk = serve_sdk(DINGTALK_STAND_IN, want).await;
    let app = spawn_sidebar(&dingtalk_config(&emu, &sdk), false).await;
    let rep = rep_on(&app, "dingtalk", "userid", "liming").await;
    let other = app.create("/api/v1/users", json!({"name": "王芳"})).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let customer = app.customer("华南智造", &rep).await;
    app.customer("西北重工", &other).await;
    let doc =
        crate::sidebar_tools::upload_proposal(&app, &customer, &rep, "华南智造-质检方案.pdf").await;

    let browser = Browser::start_as(DINGTALK_UA).await;
    // The workbench opens /sidebar: the 免登 page asks the JSAPI for a code, trades it for
    // a session and comes back to the rep's own customers.
    browser.goto(&app.url("/sidebar")).await;
    wait_for_the_list(&browser, &app, "dingtalk").await;
    let list = browser.text("main").await;
    assert!(list.contains("华南智造"), "{list}");
    assert!(!list.contains("西北重工"), "another rep's customer: {list}");

    // The list page configures the JSAPI with the server's signature for this very page:
    // the emulator's ticket, the nonce and time the server chose, the page's address.
    browser
        .wait_for("the title set once dd is ready", || async {
            !sdk_calls(&browser, "dd", "biz.navigation.setTitle")
                .await
                .is_empty()
        })
        .await;
    let configs = sdk_calls(&browser, "dd", "config").await;
    assert_eq!(configs.len(), 1, "{configs:?}");
    let cfg = &configs[0]["args"];
    assert_eq!(cfg["corpId"], DINGTALK_CORP, "{cfg}");
    assert_eq!(cfg["agentId"], DINGTALK_AGENT, "{cfg}");
    assert_eq!(cfg["type"], 0, "{cfg}");
    assert_eq!(
        cfg["jsApiList"],
        json!(["biz.navigation.setTitle"]),
        "{cfg}"
    );
    let ticket = emu
        .jsapi_ticket()
        .expect("the server fetched a jsapi ticket");
    let (nonce, ts) = (
        cfg["nonceStr"].as_str().unwrap(),
        cfg["timeStamp"].as_str().unwrap(),
    );
    let expected = closeloop::platform::dingtalk::crypto::jsapi_signature(
        &ticket,
        nonce,
        ts,
        &app.url("/sidebar"),
    )
    .unwrap();
    assert_eq!(cfg["signature"], expected.as_str(), "{cfg}");
    let age = chrono::Utc::now().timestamp() - ts.parse::<i64>().unwrap();
    assert!((0..60).contains(&age), "timeStamp is in seconds, now: {ts}");
    assert_eq!(
        sdk_calls(&browser, "dd", "biz.navigation.setTitle").await[0]["args"]["title"],
        "我的客户"
    );

    browser
        .click(&format!("a[href=\"/sidebar/customers/{customer}\"]"))
        .await;
    browser
        .wait_for("the customer's page", || async {
            browser.text("header.customer h1").await == "华南智造"
        })
        .await;
    let point = tap_and_find_the_point(&browser, &app, &customer, &rep, "dingtalk").await;
    let agent = point["user_agent"].as_str().unwrap_or_default();
    assert!(agent.contains("DingTalk/7.0.0"), "{agent}");

    // DingTalk names no open chat: 发送给客户 hands out the tracked link to copy.
    browser
        .click(&format!("button[data-send-document=\"{doc}\"]"))
        .await;
    let link_of_page = || async {
        browser
            .eval(
                "var i = document.querySelector('#share-result input'); return i ? i.value : '';",
                json!([]),
            )
            .await
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    browser
        .wait_for("the link to copy", || async {
            link_of_page().await.starts_with(&app.url("/d/"))
        })
        .await;
    let link = link_of_page().await;
    let shown = browser.text("#share-result").await;
    assert!(shown.contains("请复制后发给客户"), "{shown}");
    assert_eq!(
        browser
            .eval(
                "return [typeof window.wx, typeof window.jWeixin];",
                json!([])
            )
            .await,
        json!(["undefined", "undefined"]),
        "no WeCom SDK on a DingTalk page"
    );
    let apis = browser
        .eval(
            "return dd.__calls.map(function (c) { return c.api; });",
            json!([]),
        )
        .await;
    assert_eq!(
        apis,
        json!(["config", "biz.navigation.setTitle"]),
        "the customer page only configures the JSAPI"
    );
    let sent = points(&app, &customer, "document.sent").await;
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0]["source"], "sidebar");
    assert_eq!(sent[0]["actor"], rep.as_str());
    assert_eq!(
        sent[0]["platform"], "dingtalk",
        "sent from the DingTalk sidebar"
    );
    assert!(sent[0]["payload"].to_string().contains(&doc), "{sent:?}");
    assert_eq!(reqwest::get(&link).await.unwrap().status(), 200);

    browser.quit().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_feishu_a_rep_signs_in_through_oauth_and_taps_with_the_jssdk_configured() {
    if !browser_available() {
        return;
    }
    let emu = FeishuEmulator::start(FEISHU_APP_ID, FEISHU_SECRET).await;
    let sdk = serve_sdk(FEISHU_STAND_IN, json!({})).await;
    let app = spawn_sidebar(&feishu_config(&emu, &sdk), false).await;
    let rep = rep_on(&app, "feishu", "user_id", "fs_liming").await;
    let customer = app.customer("华南智造", &rep).await;
    emu.set_current_member(Some(
        json!({"user_id": "fs_liming", "open_id": "ou_liming", "name": "李明"}),
    ));

    let browser = Browser::start_as(FEISHU_UA).await;
    // Feishu's browser without a session: our login → the authorize page → our callback.
    browser.goto(&app.url("/sidebar")).await;
    wait_for_the_list(&browser, &app, "feishu").await;
    assert!(browser.text("main").await.contains("华南智造"));
    assert_eq!(emu.oauth_token_calls(), 1, "one code, traded once");

    // h5sdk.config gets the server's signature for this page (millisecond timestamp), and
    // the page's own promise sees it succeed.
    let configured = browser
        .eval_async(
            "var done = arguments[arguments.length - 1]; \
             closeloop.feishu().then(function () { done('ok'); }, function (e) { done(e.message); });",
        )
        .await;
    assert_eq!(configured, "ok");
    let configs = sdk_calls(&browser, "h5sdk", "config").await;
    assert_eq!(configs.len(), 1, "{configs:?}");
    let cfg = &configs[0]["args"];
    assert_eq!(cfg["appId"], FEISHU_APP_ID, "{cfg}");
    assert_eq!(cfg["jsApiList"], json!([]), "{cfg}");
    let ticket = emu
        .jsapi_ticket()
        .expect("the server fetched a JSAPI ticket");
    let ts = cfg["timestamp"].as_i64().expect("a numeric timestamp");
    let expected = closeloop::platform::feishu::crypto::jsapi_signature(
        &ticket,
        cfg["nonceStr"].as_str().unwrap(),
        &ts.to_string(),
        &app.url("/sidebar"),
    );
    assert_eq!(cfg["signature"], expected.as_str(), "{cfg}");
    let age = chrono::Utc::now().timestamp_millis() - ts;
    assert!((0..60_000).contains(&age), "timestamp is in ms, now: {ts}");

    browser
        .click(&format!("a[href=\"/sidebar/customers/{customer}\"]"))
        .await;
    browser
        .wait_for("the customer's page", || async {
            browser.text("header.customer h1").await == "华南智造"
        })
        .await;
    let point = tap_and_find_the_point(&browser, &app, &customer, &rep, "feishu").await;
    let agent = point["user_agent"].as_str().unwrap_or_default();
    assert!(agent.contains("Lark/7.1.0"), "{agent}");
    assert_eq!(
        browser.eval("return typeof window.wx;", json!([])).await,
        "undefined"
    );

    browser.quit().await;
    app.stop().await;
}

/// The deal's stage and outcome as stored.
async fn deal_state(app: &SidebarApp, deal: &str) -> (String, String) {
    let r = sqlx::query("SELECT stage, outcome FROM deals WHERE id = $1")
        .bind(deal)
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    (r.get("stage"), r.get("outcome"))
}

#[tokio::test]
async fn a_rep_confirms_a_stage_move_ends_a_deal_lost_and_the_manager_reopens_it() {
    if !browser_available() {
        return;
    }
    let app = spawn_sidebar("", false).await;
    let manager = app.create("/api/v1/users", json!({"name": "王经理"})).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let rep = app
        .create(
            "/api/v1/users",
            json!({"name": "李明", "superiors": [manager]}),
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let customer = app.customer("华南智造", &rep).await;
    let deal = app
        .create(
            "/api/v1/deals",
            json!({"customer": customer, "title": "智能质检方案", "owner": rep}),
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    // 需求确认 is open to all; 方案报价 needs a proposal sent to the customer.
    closeloop::rules::store::import(
        &app.db,
        chrono::Utc::now().timestamp_millis(),
        &app.org_id,
        &closeloop::access::Actor::cli(),
        "[[stages]]\nname = \"初步咨询\"\n[[stages]]\nname = \"需求确认\"\n\
         [[stages]]\nname = \"方案报价\"\n[stages.requires]\nproposals_sent = 1\n",
    )
    .await
    .unwrap();
    let (rep_cookie, _) = app.session(&rep, "dev").await;
    let (manager_cookie, _) = app.session(&manager, "dev").await;
    let page = app.url(&format!("/sidebar/customers/{customer}"));

    let browser = Browser::start().await;
    browser.goto(&app.url("/healthz")).await;
    browser.sign_in_as(&rep_cookie).await;
    browser.goto(&page).await;
    browser
        .wait_for("the customer's page", || async {
            browser.text("header.customer h1").await == "华南智造"
        })
        .await;

    // 推进 opens the page's own confirmation; 取消 moves nothing.
    browser.click("[data-advance-open]").await;
    let confirm = browser.text("[data-advance-confirm]").await;
    assert!(
        confirm.contains("确认将「智能质检方案」从「初步咨询」推进到「需求确认」"),
        "{confirm}"
    );
    browser.click("[data-advance-cancel]").await;
    browser
        .wait_for("the confirmation to close", || async {
            browser
                .eval(
                    "return document.querySelector('[data-advance-confirm]').hidden;",
                    json!([]),
                )
                .await
                == json!(true)
        })
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(deal_state(&app, &deal).await.0, "初步咨询");
    assert!(points(&app, &customer, "stage.advance").await.is_empty());

    // 确认推进 moves it.
    browser.click("[data-advance-open]").await;
    browser.click("[data-advance]").await;
    browser
        .wait_for("the move", || async {
            deal_state(&app, &deal).await.0 == "需求确认"
        })
        .await;
    // The next gate lists what is missing and offers no move.
    browser
        .wait_for("the next gate's missing list", || async {
            browser
                .text("[data-missing=\"proposals_sent\"]")
                .await
                .contains("还需向客户发送 1 份方案")
        })
        .await;
    assert_eq!(
        browser
            .eval(
                "return document.querySelectorAll('[data-advance-open], [data-advance]').length;",
                json!([])
            )
            .await,
        json!(0)
    );

    // 输单 with a reason, in its own form; the rep has no 重新打开.
    browser.click("[data-open-tool=\"lose\"]").await;
    browser
        .eval(
            "document.querySelector('form[data-tool=\"lose\"] select[name=\"reason\"]').value = '竞品';",
            json!([]),
        )
        .await;
    browser
        .type_into(
            "form[data-tool=\"lose\"] input[name=\"note\"]",
            "客户选了别家",
        )
        .await;
    browser
        .click("form[data-tool=\"lose\"] button[type=\"submit\"]")
        .await;
    browser
        .wait_for("the loss", || async {
            deal_state(&app, &deal).await.1 == "lost"
        })
        .await;
    browser
        .wait_for("the closed deal on the page", || async {
            let text = browser.text("li.deal.closed").await;
            text.contains("输单") && text.contains("竞品") && text.contains("客户选了别家")
        })
        .await;
    assert!(browser.text("#deals").await.contains("已结束的商机"));
    assert_eq!(
        browser
            .eval(
                "return document.querySelectorAll('[data-open-tool=\"reopen\"]').length;",
                json!([])
            )
            .await,
        json!(0),
        "reopening is the manager's"
    );

    // The manager reopens it from the page, with a reason.
    browser.sign_in_as(&manager_cookie).await;
    browser.goto(&page).await;
    browser
        .click("li.deal.closed [data-open-tool=\"reopen\"]")
        .await;
    browser
        .type_into(
            "form[data-tool=\"reopen\"] input[name=\"reason\"]",
            "客户重新询价",
        )
        .await;
    browser
        .click("form[data-tool=\"reopen\"] button[type=\"submit\"]")
        .await;
    browser
        .wait_for("the reopening", || async {
            deal_state(&app, &deal).await == ("需求确认".to_string(), "open".to_string())
        })
        .await;
    browser
        .wait_for("the deal back among the open ones", || async {
            browser
                .text("li.deal:not(.closed) .stage")
                .await
                .contains("需求确认")
        })
        .await;
    assert_eq!(points(&app, &customer, "stage.lost").await.len(), 1);
    assert_eq!(points(&app, &customer, "stage.reopen").await.len(), 1);
    browser.quit().await;
    app.stop().await;
}
