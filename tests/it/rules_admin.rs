//! The rules without a shell (issue 14): the admin page 管理 → 规则设置 over HTTP — admins
//! only, the version in force and its summary in Chinese, a form edit checked and imported
//! as a new audited version, a TOML error refused in Chinese with nothing written, and a
//! simulation over a chosen period listing what `closeloop rules simulate` lists.

use std::process::Command;

use closeloop::rules::Rules;
use serde_json::{json, Value};
use sqlx::Row;

use crate::helpers::{on_postgres, spawn_app, TestApp, TEST_DATA_KEY};
use crate::sidebar::no_redirects;

const PAGE: &str = "/admin/rules";

struct Browser {
    cookie: String,
    csrf: String,
}

async fn signed_in(app: &TestApp, user: &str) -> Browser {
    let (value, csrf) = closeloop::http::pages::session::create(
        &app.db,
        chrono::Utc::now().timestamp_millis(),
        &app.org_id,
        user,
        "dev",
    )
    .await
    .unwrap();
    Browser {
        cookie: format!("{}={value}", closeloop::http::pages::session::COOKIE),
        csrf,
    }
}

fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

impl Browser {
    async fn get(&self, app: &TestApp, path: &str) -> (u16, String) {
        let res = no_redirects()
            .get(app.url(path))
            .header("cookie", &self.cookie)
            .send()
            .await
            .unwrap();
        (res.status().as_u16(), res.text().await.unwrap())
    }

    /// Posts the page's form; `csrf` adds the session's token. Returns (status, Location, body).
    async fn post(
        &self,
        app: &TestApp,
        fields: &[(&str, &str)],
        csrf: bool,
    ) -> (u16, String, String) {
        let mut body: Vec<String> = fields
            .iter()
            .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
            .collect();
        if csrf {
            body.push(format!("csrf_token={}", enc(&self.csrf)));
        }
        let res = no_redirects()
            .post(app.url(PAGE))
            .header("cookie", &self.cookie)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body.join("&"))
            .send()
            .await
            .unwrap();
        let location = res
            .headers()
            .get("location")
            .map(|l| l.to_str().unwrap().to_string())
            .unwrap_or_default();
        (res.status().as_u16(), location, res.text().await.unwrap())
    }
}

fn decode(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}

/// The `value` of the page's hidden input `name`.
fn hidden(body: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = body.find(&marker).expect(name) + marker.len();
    let end = body[start..].find('"').unwrap();
    decode(&body[start..start + end])
}

/// The TOML editor's text.
fn textarea(body: &str) -> String {
    let start = body.find("<textarea").unwrap();
    let start = start + body[start..].find('>').unwrap() + 1;
    let end = body[start..].find("</textarea>").unwrap();
    decode(&body[start..start + end])
}

async fn audits(app: &TestApp) -> Vec<(String, Option<String>, Value)> {
    sqlx::query(
        "SELECT actor_kind, actor_id, detail FROM audit_log WHERE action = 'rules.import' ORDER BY at, id",
    )
    .fetch_all(&app.db.pool)
    .await
    .unwrap()
    .iter()
    .map(|r| {
        (
            r.get("actor_kind"),
            r.get("actor_id"),
            serde_json::from_str(&r.get::<String, _>("detail")).unwrap(),
        )
    })
    .collect()
}

#[tokio::test]
async fn the_rules_page_is_for_admins_only() {
    let app = spawn_app().await;
    let rep = app.user("李明", &["sales"]).await;

    let res = no_redirects().get(app.url(PAGE)).send().await.unwrap();
    assert_ne!(res.status(), 200);
    assert!(!res.text().await.unwrap().contains("需求确认"));

    let browser = signed_in(&app, &rep).await;
    let (status, body) = browser.get(&app, PAGE).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("仅限管理员"), "{body}");
    assert!(body.contains("管理 → 规则设置"), "{body}");
    assert!(!body.contains("需求确认"), "{body}");
    let toml = "[antifraud]\nrepeat_limit = 9\n";
    let (status, _, _) = browser
        .post(
            &app,
            &[("source", "toml"), ("toml", toml), ("op", "import")],
            true,
        )
        .await;
    assert_eq!(status, 403);
    assert_eq!(app.count("rule_sets").await, 0);
    assert!(audits(&app).await.is_empty());
}

#[tokio::test]
async fn an_admin_edits_the_form_checks_it_and_imports_a_new_audited_version() {
    let app = spawn_app().await;
    let admin = app.user("周管理", &["admin"]).await;
    let browser = signed_in(&app, &admin).await;

    // The built-in rules, summarised in Chinese; the people page and this one link each other.
    let (status, body) = browser.get(&app, PAGE).await;
    assert_eq!(status, 200, "{body}");
    for text in [
        "当前登录：<strong class=\"signed-in-name\">周管理</strong>",
        "内置默认规则",
        "初步咨询 → 需求确认 → 方案报价 → 商务谈判 → 赢单",
        "进入「需求确认」：有效沟通 2 次、上传方案 1 份、有效电话",
        "同一客户的同一动作在24小时内超过 2 次即拒绝",
        "可信度低于 0.7 时提醒直属上级",
        "「售前快速提问」：由售前答复，时限4小时（按工作时间计），30分钟内确认收到",
        "href=\"/admin/people\"",
        "name=\"stage.1.communications\" value=\"2\"",
        "name=\"antifraud.repeat_limit\" value=\"2\"",
        "name=\"collab.0.sla\" value=\"240\"",
    ] {
        assert!(body.contains(text), "`{text}` missing: {body}");
    }
    assert!(textarea(&body).contains("repeat_limit = 2"));
    let (_, people) = browser.get(&app, "/admin/people").await;
    assert!(people.contains("href=\"/admin/rules\""), "{people}");

    // A stale form changes nothing.
    let base = hidden(&body, "base");
    let edit = |op: &'static str| {
        vec![
            ("source", "form".to_string()),
            ("base", base.clone()),
            ("stage.1.communications", "3".into()),
            ("stage.1.proposals", "1".into()),
            ("stage.1.valid_contact", "1".into()),
            ("stage.2.valid_contact", "1".into()),
            ("stage.3.valid_contact", "1".into()),
            ("stage.4.valid_contact", "1".into()),
            ("antifraud.repeat_limit", "4".into()),
            ("collab.0.sla", "120".into()),
            ("op", op.to_string()),
        ]
    };
    let post = |op: &'static str, csrf: bool| {
        let fields = edit(op);
        let (browser, app) = (&browser, &app);
        async move {
            let refs: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
            browser.post(app, &refs, csrf).await
        }
    };
    let (status, _, body) = post("import", false).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(app.count("rule_sets").await, 0);

    // 检查: the candidate's summary, nothing written; both editors show the candidate.
    let (status, _, body) = post("check", true).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("候选规则检查通过"), "{body}");
    assert!(
        body.contains("进入「需求确认」：有效沟通 3 次、上传方案 1 份、有效电话"),
        "{body}"
    );
    assert!(body.contains("超过 4 次即拒绝"), "{body}");
    assert!(textarea(&body).contains("repeat_limit = 4"), "{body}");
    assert_eq!(app.count("rule_sets").await, 0);
    assert!(audits(&app).await.is_empty());

    // 导入: version 1, audited as the admin, in force; the page says who and when.
    let (status, location, _) = post("import", true).await;
    assert_eq!(
        (status, location.as_str()),
        (303, "/admin/rules?imported=1")
    );
    assert_eq!(app.count("rule_sets").await, 1);
    let entries = audits(&app).await;
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].0, "user");
    assert_eq!(entries[0].1.as_deref(), Some(admin.as_str()));
    assert_eq!(entries[0].2["version"], 1);
    let rules = Rules::new(app.db.clone())
        .current(&app.org_id)
        .await
        .unwrap();
    assert_eq!(rules.stages[1].requires.communications, 3);
    assert_eq!(rules.antifraud.repeat_limit, 4);
    assert_eq!(rules.collaboration[0].sla.as_secs(), 7200);
    assert!(rules.stages[2].requires.valid_contact);
    let (status, body) = browser.get(&app, &location).await;
    assert_eq!(status, 200);
    assert!(body.contains("已导入，第 1 版现已生效"), "{body}");
    assert!(body.contains("第 1 版，由周管理于 "), "{body}");
    assert!(body.contains("年"), "a Chinese time: {body}");
    assert!(body.contains("有效沟通 3 次"), "{body}");

    // The same content again is no new version.
    let (status, location, _) = post("import", true).await;
    assert_eq!(
        (status, location.as_str()),
        (303, "/admin/rules?unchanged=1")
    );
    assert_eq!(app.count("rule_sets").await, 1);

    // A number that is not one is refused in Chinese, nothing written.
    let (status, _, body) = browser
        .post(
            &app,
            &[
                ("source", "form"),
                ("base", &base),
                ("antifraud.repeat_limit", "很多"),
                ("op", "import"),
            ],
            true,
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("同一动作次数上限须为非负整数"), "{body}");
    assert_eq!(app.count("rule_sets").await, 1);
}

#[tokio::test]
async fn toml_with_an_error_is_refused_in_chinese_and_kept_in_the_editor() {
    let app = spawn_app().await;
    let admin = app.user("周管理", &["admin"]).await;
    let browser = signed_in(&app, &admin).await;
    for (text, says) in [
        ("[antifraud]\nrepeat_limt = 3\n", "第 2 行"),
        ("[antifraud]\nrepeat_limit = \"three\"\n", "值的类型不对"),
        (
            "[credibility]\nthreshold = 1.5\n",
            "可信度阈值须大于 0 且不超过 1",
        ),
    ] {
        for op in ["check", "simulate", "import"] {
            let (status, _, body) = browser
                .post(
                    &app,
                    &[("source", "toml"), ("toml", text), ("op", op)],
                    true,
                )
                .await;
            assert_eq!(status, 422, "{op} {text}: {body}");
            assert!(body.contains("未保存，请修改后重试"), "{body}");
            assert!(body.contains(says), "`{says}` missing: {body}");
            assert_eq!(textarea(&body), text, "the text stays in the editor");
        }
    }
    let (_, _, body) = browser
        .post(
            &app,
            &[
                ("source", "toml"),
                ("toml", "[antifraud]\nrepeat_limt = 3\n"),
                ("op", "import"),
            ],
            true,
        )
        .await;
    assert!(body.contains("没有这个设置项"), "{body}");
    assert_eq!(app.count("rule_sets").await, 0);
    assert!(audits(&app).await.is_empty());
}

async fn tap(app: &TestApp, rep: &str, customer: &str, action: &str) -> u16 {
    app.post(
        "/api/v1/events",
        &json!({"actor": rep, "customer": customer, "action": action}),
    )
    .await
    .status()
    .as_u16()
}

#[tokio::test]
async fn a_simulation_over_a_period_shows_what_the_command_line_shows() {
    let app = spawn_app().await;
    let admin = app.user("周管理", &["admin"]).await;
    let rep = app.user("李明", &["sales"]).await;
    let busy = app.customer("华南智造", Some(&rep)).await;
    let mut statuses = Vec::new();
    for action in ["已电话沟通", "已电话沟通", "已电话沟通", "已发送样品清单"]
    {
        statuses.push(tap(&app, &rep, &busy, action).await);
    }
    assert_eq!(statuses, [201, 201, 409, 409]);
    let candidate = "[antifraud]\nrepeat_limit = 5\n";

    // The command line's report.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("five.toml"), candidate).unwrap();
    let mut cmd: Command = crate::cli::closeloop(dir.path());
    cmd.env("CLOSELOOP_DATABASE_URL", &app.database_url);
    if on_postgres() {
        cmd.env("CLOSELOOP_SECURITY__DATA_KEY", TEST_DATA_KEY);
    }
    let out = cmd
        .args(["rules", "simulate", "--json", "--since", "1d", "five.toml"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cli: Value = serde_json::from_slice(&out.stdout).unwrap();
    let cli_points: Vec<String> = cli["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["point"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(cli_points.len(), 2, "{cli:#}");

    // The page over yesterday and today (in any zone, the taps fall inside).
    let today = chrono::Utc::now().date_naive();
    let since = (today - chrono::Days::new(1))
        .format("%Y-%m-%d")
        .to_string();
    let until = (today + chrono::Days::new(1))
        .format("%Y-%m-%d")
        .to_string();
    let browser = signed_in(&app, &admin).await;
    let points = app.count("tracking_points").await;
    let (status, _, body) = browser
        .post(
            &app,
            &[
                ("source", "toml"),
                ("toml", candidate),
                ("op", "simulate"),
                ("since", &since),
                ("until", &until),
            ],
            true,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("模拟结果"), "{body}");
    assert!(body.contains("原被拒绝、将被放行的动作：2"), "{body}");
    assert!(body.contains("拒绝（超过次数上限）"), "{body}");
    assert!(body.contains("拒绝（冻结中）"), "{body}");
    assert!(body.contains("华南智造") && body.contains("李明"), "{body}");
    assert!(body.contains("模拟未写入任何数据"), "{body}");
    let page_points: Vec<String> = body
        .match_indices("data-point=\"")
        .map(|(i, m)| {
            let rest = &body[i + m.len()..];
            rest[..rest.find('"').unwrap()].to_string()
        })
        .collect();
    assert_eq!(page_points, cli_points, "the page lists what the CLI lists");
    assert_eq!(
        textarea(&body),
        candidate,
        "the candidate stays in the editor"
    );
    assert_eq!(hidden(&body, "since"), since);
    assert_eq!(app.count("rule_sets").await, 0);
    assert_eq!(app.count("tracking_points").await, points);

    // A period before the taps shows no difference; a backwards one is refused in Chinese.
    let (status, _, body) = browser
        .post(
            &app,
            &[
                ("source", "toml"),
                ("toml", candidate),
                ("op", "simulate"),
                ("since", "2026-01-01"),
                ("until", "2026-01-31"),
            ],
            true,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("判定不同之处共 0 处"), "{body}");
    let (status, _, body) = browser
        .post(
            &app,
            &[
                ("source", "toml"),
                ("toml", candidate),
                ("op", "simulate"),
                ("since", &until),
                ("until", &since),
            ],
            true,
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("开始日期不能晚于结束日期"), "{body}");
}

#[tokio::test]
async fn the_api_reads_the_rules_in_force_and_checks_a_candidate_writing_nothing() {
    let app = spawn_app().await;
    let res = app.get("/api/v1/rules").await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["version"], 0);
    assert_eq!(body["imported_by"], Value::Null);
    assert!(
        body["toml"].as_str().unwrap().contains("repeat_limit = 2"),
        "{body}"
    );

    let res = app
        .post(
            "/api/v1/rules/check",
            &json!({"toml": "[antifraud]\nrepeat_limit = 5\n"}),
        )
        .await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert!(
        body["summary"].as_str().unwrap().contains("more than 5"),
        "{body}"
    );
    let (status, code, message) = crate::helpers::error_code(
        app.post(
            "/api/v1/rules/check",
            &json!({"toml": "[antifraud]\nrepeat_limt = 3\n"}),
        )
        .await,
    )
    .await;
    assert_eq!((status, code.as_str()), (422, "invalid_input"));
    assert!(
        message.contains("antifraud.repeat_limt") && message.contains("line 2"),
        "{message}"
    );
    let read_only = app
        .key_with_role(closeloop::access::ApiKeyRole::ReadOnly)
        .await;
    let res = reqwest::Client::new()
        .post(app.url("/api/v1/rules/check"))
        .bearer_auth(&read_only)
        .json(&json!({"toml": ""}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    assert_eq!(app.count("rule_sets").await, 0);

    // After an import on the page, the API names the version and who imported it.
    let admin = app.user("周管理", &["admin"]).await;
    let (status, _, _) = signed_in(&app, &admin)
        .await
        .post(
            &app,
            &[
                ("source", "toml"),
                ("toml", "[antifraud]\nrepeat_limit = 5\n"),
                ("op", "import"),
            ],
            true,
        )
        .await;
    assert_eq!(status, 303);
    let body: Value = app.get("/api/v1/rules").await.json().await.unwrap();
    assert_eq!(body["version"], 1);
    assert_eq!(body["imported_by"], admin.as_str());
    assert!(
        body["imported_at"].as_str().unwrap().ends_with('Z'),
        "{body}"
    );
    assert!(
        body["toml"].as_str().unwrap().contains("repeat_limit = 5"),
        "{body}"
    );
}
