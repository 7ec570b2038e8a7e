//! The collaboration pages in the browser's terms: the quick-ask and handoff forms on the
//! sidebar, the request page a card opens (countdown, status, snapshot, buttons only for
//! the receiver), the web steps with CSRF, overdue in red, each person's lists, and HTML
//! escaping of what people typed.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::{spawn_app_clocked, ManualClock, TestApp};
use crate::sidebar::no_redirects;

/// Monday 2026-11-30 10:00 in Shanghai: a working day, so 4 working hours end that day.
const MONDAY_10AM: i64 = 1_796_004_000_000;

struct Team {
    app: TestApp,
    clock: Arc<ManualClock>,
    rep: String,
    presales: String,
    presales2: String,
    delivery: String,
    customer: String,
}

async fn team() -> Team {
    let clock = ManualClock::new(MONDAY_10AM);
    let app = spawn_app_clocked("", clock.clone()).await;
    let rep = app.user("李明", &["sales"]).await;
    let presales = app.user("张工", &["presales"]).await;
    let presales2 = app.user("赵工", &["presales"]).await;
    let delivery = app.user("王工", &["delivery"]).await;
    let customer = app.customer("华南智造", Some(&rep)).await;
    let res = app
        .client
        .put(app.url(&format!(
            "/api/v1/customers/{customer}/assignments/presales"
        )))
        .bearer_auth(&app.key)
        .json(&json!({"user": presales}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    Team {
        app,
        clock,
        rep,
        presales,
        presales2,
        delivery,
        customer,
    }
}

/// A signed-in person: the session cookie and its CSRF token.
struct Person {
    cookie: String,
    csrf: String,
}

impl Team {
    fn now(&self) -> i64 {
        closeloop::clock::Clock::now_ms(self.clock.as_ref())
    }

    /// A session as a platform sign-in makes it, on the test's clock.
    async fn sign_in(&self, user: &str) -> Person {
        let (value, csrf) = closeloop::http::pages::session::create(
            &self.app.db,
            self.now(),
            &self.app.org_id,
            user,
            "wecom",
        )
        .await
        .unwrap();
        Person {
            cookie: format!("{}={value}", closeloop::http::pages::session::COOKIE),
            csrf,
        }
    }

    async fn page(&self, path: &str, who: &Person) -> (u16, String) {
        let res = no_redirects()
            .get(self.app.url(path))
            .header("cookie", &who.cookie)
            .send()
            .await
            .unwrap();
        (res.status().as_u16(), res.text().await.unwrap())
    }

    async fn post(&self, path: &str, who: &Person, csrf: bool, body: Value) -> reqwest::Response {
        let mut req = no_redirects()
            .post(self.app.url(path))
            .header("cookie", &who.cookie)
            .json(&body);
        if csrf {
            req = req.header("x-csrf-token", &who.csrf);
        }
        req.send().await.unwrap()
    }

    /// Opens a request through the sidebar's endpoint and expects 201.
    async fn open(&self, who: &Person, body: Value) -> Value {
        let res = self.post("/web/collab/requests", who, true, body).await;
        let status = res.status();
        let body: Value = res.json().await.unwrap();
        assert_eq!(status, 201, "{body}");
        body
    }

    async fn ask(&self, who: &Person, question: &str) -> Value {
        self.open(
            who,
            json!({"type": "presales_question", "customer": self.customer, "content": {"问题": question}}),
        )
        .await
    }

    async fn step(&self, id: &str, step: &str, who: &Person, body: Value) -> reqwest::Response {
        self.post(
            &format!("/web/collab/requests/{id}/{step}"),
            who,
            true,
            body,
        )
        .await
    }

    async fn upload(&self, who: &Person, filename: &str) -> String {
        let res = no_redirects()
            .post(self.app.url(&format!(
                "/web/customers/{}/documents?kind=artefact&filename={}",
                self.customer,
                urlencode(filename)
            )))
            .header("cookie", &who.cookie)
            .header("x-csrf-token", &who.csrf)
            .header("content-type", "text/plain")
            .body(format!("{filename} 的内容"))
            .send()
            .await
            .unwrap();
        let status = res.status();
        let body: Value = res.json().await.unwrap();
        assert_eq!(status, 201, "{body}");
        body["id"].as_str().unwrap().to_string()
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

async fn error_of(res: reqwest::Response) -> (u16, Value) {
    let status = res.status().as_u16();
    let body: Value = res.json().await.unwrap();
    (status, body["error"].clone())
}

/// The HTML of the element that starts at `start` up to its closing `end`.
fn part<'a>(html: &'a str, start: &str, end: &str) -> &'a str {
    let from = html
        .find(start)
        .unwrap_or_else(|| panic!("{start} not in {html}"));
    let len = html[from..].find(end).expect("closed") + end.len();
    &html[from..from + len]
}

#[tokio::test]
async fn the_quick_ask_form_shows_the_template_and_who_receives_it() {
    let t = team().await;
    let rep = t.sign_in(&t.rep).await;
    let (status, html) = t
        .page(&format!("/sidebar/customers/{}", t.customer), &rep)
        .await;
    assert_eq!(status, 200, "{html}");
    // The quick-ask button opens its type's form instead of recording a bare tap.
    assert!(
        html.contains(
            "data-collab=\"presales_question\" data-kind=\"quick_ask\" data-action=\"@售前快速提问\""
        ),
        "{html}"
    );
    let ask = part(
        &html,
        "<form class=\"collab-form\" data-type=\"presales_question\"",
        "</form>",
    );
    assert!(ask.contains("data-prompt=\"问题\""), "{ask}");
    assert!(
        ask.contains("发送给：<strong class=\"receiver-name\">张工</strong>"),
        "the assigned presales: {ask}"
    );
    assert!(ask.contains("时限 4小时（按工作时间计）"), "{ask}");
    // Nobody is assigned for delivery: the role's queue gets it.
    let schedule = part(
        &html,
        "<form class=\"collab-form\" data-type=\"delivery_schedule\"",
        "</form>",
    );
    assert!(
        schedule.contains("data-prompt=\"需要交付的内容\""),
        "{schedule}"
    );
    assert!(schedule.contains("交付队列</strong>（1 人"), "{schedule}");
    let payment = part(
        &html,
        "<form class=\"collab-form\" data-type=\"finance_payment\"",
        "</form>",
    );
    assert!(payment.contains("财务队列"), "{payment}");
    assert!(payment.contains("暂无成员"), "nobody has the finance role");
    // The handoff entry, with one file per required artefact.
    assert!(html.contains("data-collab=\"sales_to_presales\""), "{html}");
    assert!(html.contains(">交接给售前</button>"), "{html}");
    let handoff = part(
        &html,
        "<form class=\"collab-form\" data-type=\"sales_to_presales\"",
        "</form>",
    );
    for a in ["客户需求清单", "竞品对比表", "预算范围确认截图"] {
        assert!(
            handoff.contains(&format!("<input type=\"file\" data-artefact=\"{a}\">")),
            "{handoff}"
        );
    }
    assert!(
        handoff.contains("data-prompt=\"客户需求概述\""),
        "{handoff}"
    );
    // The collaboration script is served under the page's asset version.
    let end = html.find("/collab.js").unwrap() + "/collab.js".len();
    let src = &html[html[..end].rfind('"').unwrap() + 1..end];
    let res = no_redirects().get(t.app.url(src)).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.text().await.unwrap().contains("collab-request"));
}

#[tokio::test]
async fn posting_the_form_opens_a_request_routed_to_the_right_person() {
    let t = team().await;
    let rep = t.sign_in(&t.rep).await;
    let body = json!({"type": "presales_question", "customer": t.customer,
                      "content": {"问题": "是否支持私有化部署？"}});
    // No CSRF token: refused, in Chinese, and nothing is opened.
    let (status, err) = error_of(
        t.post("/web/collab/requests", &rep, false, body.clone())
            .await,
    )
    .await;
    assert_eq!(status, 403);
    assert_eq!(err["message"], "页面已过期，请刷新后重试");
    assert_eq!(t.app.count("collab_requests").await, 0);

    let r = t.open(&rep, body).await;
    assert_eq!(r["initiator"], t.rep.as_str(), "the session user asks");
    assert_eq!(r["assignee"], t.presales.as_str());
    assert_eq!(r["receiver"], "张工");
    assert_eq!(r["status"], "open");
    let id = r["id"].as_str().unwrap();
    assert_eq!(r["url"], format!("/collab/requests/{id}"));
    // Monday 10:00 + 4 working hours (lunch 12:00–13:30 does not count) = 15:30.
    assert_eq!(r["due_local"], "11月30日 15:30");
    assert_eq!(
        t.app
            .count(&format!(
                "cards WHERE recipient_user_id = '{}' AND purpose = 'collab.request'",
                t.presales
            ))
            .await,
        1
    );

    // Unassigned: delivery's queue.
    let q = t
        .open(
            &rep,
            json!({"type": "delivery_schedule", "customer": t.customer,
                   "content": {"需要交付的内容": "一期私有化部署"}}),
        )
        .await;
    assert!(q["assignee"].is_null());
    assert_eq!(q["receiver"], "交付队列");

    // A missing prompt is refused with the template's words.
    let (status, err) = error_of(
        t.post(
            "/web/collab/requests",
            &rep,
            true,
            json!({"type": "presales_question", "customer": t.customer, "content": {}}),
        )
        .await,
    )
    .await;
    assert_eq!(status, 422);
    assert!(
        err["message"].as_str().unwrap().contains("请填写：问题"),
        "{err}"
    );

    // The customer's page lists both, with their deadlines.
    let (_, html) = t
        .page(&format!("/sidebar/customers/{}", t.customer), &rep)
        .await;
    let list = part(&html, "<section id=\"collab-requests\"", "</section>");
    assert!(
        list.contains(&format!("href=\"/collab/requests/{id}\"")),
        "{list}"
    );
    assert!(list.contains("售前快速提问"), "{list}");
    assert!(list.contains("接收：交付队列"), "{list}");
    assert!(list.contains("截止 11月30日 15:30"), "{list}");
}

#[tokio::test]
async fn the_request_page_shows_the_countdown_and_status_and_buttons_only_to_the_receiver() {
    let t = team().await;
    let rep = t.sign_in(&t.rep).await;
    let r = t.ask(&rep, "是否支持私有化部署？").await;
    let id = r["id"].as_str().unwrap();
    let path = format!("/collab/requests/{id}");

    // The rep (not the assignee) reads it.
    let (status, html) = t.page(&path, &rep).await;
    assert_eq!(status, 200, "{html}");
    assert!(html.contains("<h1>售前快速提问</h1>"), "{html}");
    assert!(html.contains("badge-open\">待接受</span>"), "{html}");
    // 10:00–12:00 and 13:30–15:30: four working hours, five and a half on the clock.
    let due = MONDAY_10AM + 19_800_000;
    assert!(
        html.contains(&format!(
            "<span class=\"countdown\" data-due=\"{due}\" data-now=\"{MONDAY_10AM}\">剩余 5 小时 30 分</span>"
        )),
        "{html}"
    );
    assert!(
        html.contains("截止：2026年11月30日 15:30（按工作时间计）"),
        "{html}"
    );
    assert!(html.contains("<dt>客户</dt><dd>华南智造</dd>"), "{html}");
    assert!(html.contains("<dt>发起人</dt><dd>李明</dd>"), "{html}");
    assert!(html.contains("<dt>负责角色</dt><dd>售前</dd>"), "{html}");
    assert!(html.contains("<dd class=\"assignee\">张工</dd>"), "{html}");
    assert!(
        html.contains("未确认（应于 2026年11月30日 10:30 前确认）"),
        "{html}"
    );
    assert!(
        html.contains("<dt>问题</dt><dd>是否支持私有化部署？</dd>"),
        "{html}"
    );
    assert!(
        html.contains(r["content_hash"].as_str().unwrap()),
        "the snapshot's hash"
    );
    assert!(
        html.contains("2026年11月30日 10:00</span> 李明 发起请求"),
        "{html}"
    );
    assert!(!html.contains("data-step"), "read-only for the rep: {html}");
    assert!(html.contains("class=\"meta readonly\""), "{html}");
    // Another presales, not the assignee, does not see it: the request left the queue
    // when it was accepted, and the customer is not theirs (404, as for no request).
    let other = t.sign_in(&t.presales2).await;
    let (status, html) = t.page(&path, &other).await;
    assert_eq!(status, 404);
    assert!(!html.contains("data-step"), "{html}");
    // The assignee gets the button.
    let presales = t.sign_in(&t.presales).await;
    let (_, html) = t.page(&path, &presales).await;
    assert!(
        html.contains("data-step=\"accept\">确认收到并接受</button>"),
        "{html}"
    );
    assert!(
        !html.contains("data-step=\"answer\""),
        "accept first: {html}"
    );

    // The page is a page of ours: no caching, our scripts only.
    let res = no_redirects()
        .get(t.app.url(&path))
        .header("cookie", &rep.cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["cache-control"], "no-store");
    assert!(res.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .contains("script-src 'self'"));
    // Unknown requests and strangers.
    let (status, html) = t.page("/collab/requests/nope", &rep).await;
    assert_eq!(status, 404);
    assert!(html.contains("未找到"), "{html}");
    let res = no_redirects().get(t.app.url(&path)).send().await.unwrap();
    assert_eq!(
        res.status(),
        401,
        "without a session nor a sign-in to go to"
    );
}

#[tokio::test]
async fn accept_answer_and_return_through_the_web() {
    let t = team().await;
    let rep = t.sign_in(&t.rep).await;
    let presales = t.sign_in(&t.presales).await;
    let r = t.ask(&rep, "是否支持私有化部署？").await;
    let id = r["id"].as_str().unwrap().to_string();

    // CSRF on every step.
    let res = t
        .post(
            &format!("/web/collab/requests/{id}/accept"),
            &presales,
            false,
            json!({}),
        )
        .await;
    assert_eq!(res.status(), 403);
    // Only the receiver; the message is Chinese.
    let (status, err) = error_of(t.step(&id, "accept", &rep, json!({})).await).await;
    assert_eq!(status, 403);
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .starts_with("只有被指派的人员"),
        "{err}"
    );

    let res = t.step(&id, "accept", &presales, json!({})).await;
    assert_eq!(res.status(), 200);
    let accepted: Value = res.json().await.unwrap();
    assert_eq!(accepted["status"], "accepted");
    let (_, html) = t.page(&format!("/collab/requests/{id}"), &presales).await;
    assert!(html.contains("badge-accepted\">处理中</span>"), "{html}");
    assert!(
        html.contains("已确认收到（2026年11月30日 10:00）"),
        "{html}"
    );
    assert!(
        html.contains("<form class=\"step-form\" data-step=\"answer\">"),
        "{html}"
    );
    assert!(
        html.contains("<form class=\"step-form\" data-step=\"return\">"),
        "{html}"
    );
    assert!(
        !html.contains("type=\"date\""),
        "a quick question confirms no date"
    );

    let (status, err) =
        error_of(t.step(&id, "answer", &presales, json!({"text": " "})).await).await;
    assert_eq!(status, 422);
    assert_eq!(err["message"], "请填写答复内容");
    t.clock.advance(Duration::from_secs(20 * 60));
    let res = t
        .step(
            &id,
            "answer",
            &presales,
            json!({"text": "支持，需要 8 核 32G"}),
        )
        .await;
    assert_eq!(res.status(), 200);
    let (_, html) = t.page(&format!("/collab/requests/{id}"), &rep).await;
    assert!(html.contains("badge-answered\">已答复</span>"), "{html}");
    assert!(
        html.contains("<p class=\"answer\">支持，需要 8 核 32G</p>"),
        "{html}"
    );
    assert!(html.contains("已答复于 2026年11月30日 10:20"), "{html}");
    assert!(html.contains("张工 答复：支持，需要 8 核 32G"), "{html}");
    assert!(
        !html.contains("class=\"countdown"),
        "no clock on a closed request"
    );

    // A return needs a reason.
    let second = t.ask(&rep, "能否提供等保三级材料？").await;
    let second = second["id"].as_str().unwrap();
    t.step(second, "accept", &presales, json!({})).await;
    let (status, err) = error_of(t.step(second, "return", &presales, json!({})).await).await;
    assert_eq!(status, 422);
    assert_eq!(err["message"], "请填写退回原因");
    let res = t
        .step(
            second,
            "return",
            &presales,
            json!({"reason": "请先补充客户行业"}),
        )
        .await;
    assert_eq!(res.status(), 200);
    let (_, html) = t.page(&format!("/collab/requests/{second}"), &rep).await;
    assert!(html.contains("badge-returned\">已退回</span>"), "{html}");
    assert!(
        html.contains("<p class=\"reason\">请先补充客户行业</p>"),
        "{html}"
    );
    assert!(html.contains("张工 退回：请先补充客户行业"), "{html}");

    // Delivery's queue: a queue member who got the card accepts; the answer confirms a date.
    let delivery = t.sign_in(&t.delivery).await;
    let d = t
        .open(
            &rep,
            json!({"type": "delivery_schedule", "customer": t.customer,
                   "content": {"需要交付的内容": "一期私有化部署"}}),
        )
        .await;
    let d = d["id"].as_str().unwrap();
    let (_, html) = t.page(&format!("/collab/requests/{d}"), &delivery).await;
    assert!(html.contains("交付队列（待认领）"), "{html}");
    assert!(
        html.contains("data-step=\"accept\""),
        "a queue member may take it: {html}"
    );
    t.step(d, "accept", &delivery, json!({})).await;
    let (_, html) = t.page(&format!("/collab/requests/{d}"), &delivery).await;
    assert!(
        html.contains("<input type=\"date\" name=\"date\" required>"),
        "{html}"
    );
    let (status, err) = error_of(
        t.step(
            d,
            "answer",
            &delivery,
            json!({"text": "可排期", "date": "12/15"}),
        )
        .await,
    )
    .await;
    assert_eq!(status, 422);
    assert_eq!(err["message"], "日期无效，请重新选择日期");
    let res = t
        .step(
            d,
            "answer",
            &delivery,
            json!({"text": "可排期", "date": "2026-12-15"}),
        )
        .await;
    assert_eq!(res.status(), 200);
    let (_, html) = t.page(&format!("/collab/requests/{d}"), &rep).await;
    assert!(
        html.contains("预计交付日期：<strong>2026年12月15日</strong>"),
        "{html}"
    );
    assert!(html.contains("尚未同步客户"), "not ticked: {html}");
}

#[tokio::test]
async fn an_overdue_request_is_red_on_its_page_and_in_the_lists() {
    let t = team().await;
    let rep = t.sign_in(&t.rep).await;
    let r = t.ask(&rep, "是否支持私有化部署？").await;
    let id = r["id"].as_str().unwrap();
    // Tuesday 10:00: past Monday 15:30; the SLA clock marks it.
    t.clock.advance(Duration::from_secs(24 * 3600));
    t.app.worker.drain().await.unwrap();
    let overdue: Value = t
        .app
        .get(&format!("/api/v1/collab/requests/{id}"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(overdue["overdue"], true);
    // Sessions last 12 hours: sign in again on the moved clock.
    let presales = t.sign_in(&t.presales).await;
    let (_, html) = t.page(&format!("/collab/requests/{id}"), &presales).await;
    assert!(
        html.contains("<section id=\"deadline\" class=\"deadline overdue\">"),
        "{html}"
    );
    assert!(html.contains("<span class=\"countdown overdue\""), "{html}");
    assert!(html.contains("已超时 18 小时 30 分"), "{html}");
    assert!(html.contains("系统 已超时"), "the trail: {html}");
    assert!(
        html.contains("未确认（应于 2026年11月30日 10:30 前确认，已超时）"),
        "{html}"
    );
    let (_, html) = t.page("/collab", &presales).await;
    let assigned = part(&html, "<section id=\"assigned\">", "</section>");
    assert!(
        assigned.contains(&format!(
            "<li class=\"collab-item overdue\" data-request=\"{id}\">"
        )),
        "{assigned}"
    );
}

#[tokio::test]
async fn my_list_has_what_is_assigned_to_me_in_my_queues_and_mine() {
    let t = team().await;
    let rep = t.sign_in(&t.rep).await;
    let ask = t.ask(&rep, "是否支持私有化部署？").await;
    let ask = ask["id"].as_str().unwrap();
    let queued = t
        .open(
            &rep,
            json!({"type": "delivery_schedule", "customer": t.customer,
                   "content": {"需要交付的内容": "一期私有化部署"}}),
        )
        .await;
    let queued = queued["id"].as_str().unwrap();
    let presales = t.sign_in(&t.presales).await;
    let answered = t.ask(&rep, "第二个问题").await;
    let answered = answered["id"].as_str().unwrap();
    t.step(answered, "accept", &presales, json!({})).await;
    t.step(answered, "answer", &presales, json!({"text": "好"}))
        .await;

    let (status, html) = t.page("/collab", &presales).await;
    assert_eq!(status, 200, "{html}");
    let assigned = part(&html, "<section id=\"assigned\">", "</section>");
    let open_at = assigned.find(&format!("data-request=\"{ask}\"")).unwrap();
    let closed_at = assigned
        .find(&format!("data-request=\"{answered}\""))
        .unwrap();
    assert!(open_at < closed_at, "open requests first: {assigned}");
    assert!(assigned.contains("class=\"countdown\""), "{assigned}");
    assert!(!html.contains(queued), "not presales' queue");

    let delivery = t.sign_in(&t.delivery).await;
    let (_, html) = t.page("/collab", &delivery).await;
    let waiting = part(&html, "<section id=\"queued\">", "</section>");
    assert!(
        waiting.contains(&format!("data-request=\"{queued}\"")),
        "{waiting}"
    );
    assert!(waiting.contains("接收：交付队列"), "{waiting}");
    assert!(part(&html, "<section id=\"assigned\">", "</section>").contains("暂无指派给您的请求"));

    let (_, html) = t.page("/collab", &rep).await;
    let mine = part(&html, "<section id=\"initiated\">", "</section>");
    for id in [ask, queued, answered] {
        assert!(mine.contains(&format!("data-request=\"{id}\"")), "{mine}");
    }
    assert!(mine.contains("已答复于 11月30日 10:00"), "{mine}");
}

#[tokio::test]
async fn a_handoff_missing_an_artefact_is_refused_with_the_list() {
    let t = team().await;
    let rep = t.sign_in(&t.rep).await;
    let needs = t.upload(&rep, "需求清单.txt").await;
    let rivals = t.upload(&rep, "竞品对比.txt").await;
    let body = |artefacts: Value| {
        json!({"type": "sales_to_presales", "customer": t.customer,
               "content": {"客户需求概述": "私有化部署，500 人"}, "artefacts": artefacts})
    };
    let (status, err) = error_of(
        t.post(
            "/web/collab/requests",
            &rep,
            true,
            body(json!({"客户需求清单": needs, "竞品对比表": rivals})),
        )
        .await,
    )
    .await;
    assert_eq!(status, 409);
    assert_eq!(err["code"], "handoff_incomplete");
    assert_eq!(err["message"], "交接资料不全，缺少：预算范围确认截图");
    assert_eq!(err["details"]["missing"], json!(["预算范围确认截图"]));
    assert_eq!(t.app.count("collab_requests").await, 0);

    let budget = t.upload(&rep, "预算截图.txt").await;
    let r = t
        .open(
            &rep,
            body(json!({"客户需求清单": needs, "竞品对比表": rivals, "预算范围确认截图": budget})),
        )
        .await;
    assert_eq!(r["kind"], "handoff");
    assert_eq!(r["receiver"], "张工");
    let id = r["id"].as_str().unwrap();
    let presales = t.sign_in(&t.presales).await;
    let (_, html) = t.page(&format!("/collab/requests/{id}"), &presales).await;
    let artefacts = part(&html, "<section class=\"artefacts\">", "</section>");
    assert!(
        artefacts.contains(&format!(
            "<span class=\"what\">预算范围确认截图</span> <a href=\"/web/documents/{budget}/content\" translate=\"no\">预算截图.txt</a>"
        )),
        "{artefacts}"
    );
    // The receiver downloads it with the session, served as the API serves files.
    let res = no_redirects()
        .get(t.app.url(&format!("/web/documents/{budget}/content")))
        .header("cookie", &presales.cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-security-policy"], "sandbox");
    assert!(res.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .starts_with("attachment;"));
    assert_eq!(res.text().await.unwrap(), "预算截图.txt 的内容");
    let res = no_redirects()
        .get(t.app.url(&format!("/web/documents/{budget}/content")))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401, "no session, no file");
    // The receiver can hand it back with a reason.
    t.step(id, "accept", &presales, json!({})).await;
    let res = t
        .step(id, "return", &presales, json!({"reason": "预算截图看不清"}))
        .await;
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn what_people_typed_is_escaped() {
    let t = team().await;
    let rep = t.sign_in(&t.rep).await;
    let xss = "<img src=x onerror=alert(1)>";
    let r = t.ask(&rep, xss).await;
    let id = r["id"].as_str().unwrap();
    let presales = t.sign_in(&t.presales).await;
    t.step(id, "accept", &presales, json!({})).await;
    t.step(
        id,
        "answer",
        &presales,
        json!({"text": "\"><script>alert(2)</script>"}),
    )
    .await;
    let (_, html) = t.page(&format!("/collab/requests/{id}"), &rep).await;
    assert!(
        html.contains("&lt;img src=x onerror=alert(1)&gt;"),
        "{html}"
    );
    assert!(!html.contains("<img"), "{html}");
    assert!(
        html.contains("&quot;&gt;&lt;script&gt;alert(2)&lt;/script&gt;"),
        "{html}"
    );
    assert!(!html.contains("<script>alert"), "{html}");
}
