//! The customer page's tools: a proposal sent as a tracked link and seen opened, a claim
//! attested from the sidebar, a dead number blocking the gate until restored, and the
//! manager's rollback, reassignment and freeze lifting — each behind the session's CSRF
//! token and the manager rule.

use closeloop::emulator::wecom::Emulator;
use serde_json::{json, Value};
use sqlx::Row;

use crate::sidebar::{no_redirects, spawn_sidebar, wecom_config, SidebarApp, CORP};

/// An admin API key of the app's organisation (the helper's own is private to it).
pub async fn api_key(app: &SidebarApp) -> String {
    closeloop::access::apikeys::create(
        &app.db,
        chrono::Utc::now().timestamp_millis(),
        closeloop::access::NewApiKey {
            org_id: app.org_id.clone(),
            name: "sidebar-tools".into(),
            role: closeloop::access::ApiKeyRole::Admin,
            expires_at_ms: None,
        },
    )
    .await
    .unwrap()
    .1
}

/// Uploads a proposal for `customer` as `rep` through the API; returns its id.
pub async fn upload_proposal(
    app: &SidebarApp,
    customer: &str,
    rep: &str,
    filename: &str,
) -> String {
    let key = api_key(app).await;
    let res = reqwest::Client::new()
        .post(app.url(&format!("/api/v1/customers/{customer}/documents")))
        .query(&[("actor", rep), ("kind", "proposal"), ("filename", filename)])
        .bearer_auth(key)
        .header("content-type", "application/pdf")
        .body(b"%PDF-1.4 proposal".to_vec())
        .send()
        .await
        .unwrap();
    let status = res.status();
    let body: Value = res.json().await.unwrap();
    assert_eq!(status, 201, "{body}");
    body["id"].as_str().unwrap().to_string()
}

/// A JSON request as the page's script makes it; `csrf` None leaves the token out.
async fn send(
    app: &SidebarApp,
    method: reqwest::Method,
    path: &str,
    cookie: &str,
    csrf: Option<&str>,
    body: Value,
) -> (u16, Value) {
    let mut req = no_redirects()
        .request(method, app.url(path))
        .header("cookie", cookie)
        .json(&body);
    if let Some(t) = csrf {
        req = req.header("x-csrf-token", t);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    let text = res.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn post(
    app: &SidebarApp,
    path: &str,
    cookie: &str,
    csrf: Option<&str>,
    body: Value,
) -> (u16, Value) {
    send(app, reqwest::Method::POST, path, cookie, csrf, body).await
}

async fn user(app: &SidebarApp, body: Value) -> String {
    app.create("/api/v1/users", body).await["id"]
        .as_str()
        .unwrap()
        .to_string()
}

async fn deal(app: &SidebarApp, customer: &str, owner: &str) -> String {
    app.create(
        "/api/v1/deals",
        json!({"customer": customer, "title": "质检方案", "owner": owner}),
    )
    .await["id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// The HTML of the element `<… id="{id}" …>…</{tag}>` on the page.
fn part<'a>(html: &'a str, id: &str, tag: &str) -> &'a str {
    let start = html
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no #{id} in {html}"));
    let end = html[start..]
        .find(&format!("</{tag}>"))
        .map_or(html.len(), |e| start + e);
    &html[start..end]
}

async fn count(app: &SidebarApp, sql: &str, bind: &str) -> i64 {
    sqlx::query(sql)
        .bind(bind)
        .fetch_one(&app.db.pool)
        .await
        .unwrap()
        .get::<i64, _>(0)
}

#[tokio::test]
async fn a_proposal_goes_out_as_a_tracked_link_and_its_first_open_shows() {
    let emulator = Emulator::start(CORP, vec![("app-secret".to_string(), "app")]).await;
    let app = spawn_sidebar(&wecom_config(&emulator), false).await;
    let rep = app.member("李明", "liming").await;
    let customer = app.customer("华南智造", &rep).await;
    let doc = upload_proposal(&app, &customer, &rep, "报价方案 <v2>.pdf").await;
    let path = format!("/sidebar/customers/{customer}");

    // Outside WeCom (a demo session) the page loads no JS-SDK; the link is copied.
    let (dev_cookie, _) = app.session(&rep, "dev").await;
    let (status, html) = app.page(&path, &dev_cookie).await;
    assert_eq!(status, 200);
    assert!(!html.contains(&emulator.jssdk_url()), "{html}");
    assert!(html.contains("复制后发给客户"), "{html}");
    let proposals = part(&html, "proposals", "ul");
    assert!(proposals.contains("报价方案 &lt;v2&gt;.pdf"), "{proposals}");
    assert!(proposals.contains(&format!("data-send-document=\"{doc}\"")));
    assert!(proposals.contains("未发送"), "{proposals}");

    // Inside WeCom the customer page signs the JS-SDK as the entry page does.
    let (cookie, csrf) = app.session(&rep, "wecom").await;
    let res = no_redirects()
        .get(app.url(&path))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    let csp = res.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    let html = res.text().await.unwrap();
    assert!(
        html.contains(&format!(
            "<script src=\"{}\" referrerpolicy=\"origin\"></script>",
            emulator.jssdk_url()
        )),
        "{html}"
    );
    assert!(
        csp.contains(&format!("script-src 'self' {}", emulator.base_url())),
        "{csp}"
    );
    assert!(html.contains("/tools.js\"></script>"), "{html}");

    // Sending needs the CSRF token; then the link is recorded as `document.sent`.
    let (status, _) = post(
        &app,
        &format!("/web/documents/{doc}/links"),
        &cookie,
        None,
        json!({}),
    )
    .await;
    assert_eq!(status, 403);
    let (status, link) = post(
        &app,
        &format!("/web/documents/{doc}/links"),
        &cookie,
        Some(&csrf),
        json!({}),
    )
    .await;
    assert_eq!(status, 201, "{link}");
    let url = link["url"].as_str().unwrap().to_string();
    assert!(url.starts_with(&app.url("/d/")), "{url}");
    let sent = count(
        &app,
        "SELECT CAST(COUNT(*) AS BIGINT) FROM tracking_points WHERE customer_id = $1 AND action = 'document.sent'",
        &customer,
    )
    .await;
    assert_eq!(sent, 1);
    let (_, html) = app.page(&path, &cookie).await;
    let proposals = part(&html, "proposals", "ul");
    assert!(proposals.contains("已发送"), "{proposals}");
    assert!(proposals.contains("1 次"), "{proposals}");
    assert!(proposals.contains("客户尚未打开"), "{proposals}");

    // The customer opens it (no session): the page says so.
    let res = reqwest::get(&url).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.bytes().await.unwrap().as_ref(), b"%PDF-1.4 proposal");
    let (_, html) = app.page(&path, &cookie).await;
    let proposals = part(&html, "proposals", "ul");
    assert!(proposals.contains("已打开"), "{proposals}");
    assert!(proposals.contains("共打开 1 次"), "{proposals}");
    app.stop().await;
}

/// A manager, a rep reporting to them, a colleague, the rep's customer and a claimed call
/// whose window closed without a record.
struct Claim {
    app: SidebarApp,
    manager: String,
    rep: String,
    colleague: String,
    customer: String,
    point: String,
}

async fn unverified_claim() -> Claim {
    let app = spawn_sidebar("", false).await;
    let manager = user(&app, json!({"name": "王经理", "roles": ["manager"]})).await;
    let rep = user(
        &app,
        json!({"name": "李明", "roles": ["sales"], "superiors": [manager]}),
    )
    .await;
    let colleague = user(&app, json!({"name": "赵强", "roles": ["sales"]})).await;
    let customer = app.customer("华东医疗器械", &rep).await;
    let (cookie, csrf) = app.session(&rep, "dev").await;
    let res = app
        .tap(
            &customer,
            &cookie,
            Some(&csrf),
            json!({"action": "已电话沟通"}),
        )
        .await;
    assert_eq!(res.status(), 201);
    let point = res.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    Claim {
        app,
        manager,
        rep,
        colleague,
        customer,
        point,
    }
}

impl Claim {
    fn path(&self) -> String {
        format!("/sidebar/customers/{}", self.customer)
    }

    /// The touch of the claim on the page, as `who` sees it.
    async fn touch(&self, cookie: &str) -> String {
        let (status, html) = self.app.page(&self.path(), cookie).await;
        assert_eq!(status, 200);
        let start = html
            .find(&format!("data-point=\"{}\"", self.point))
            .unwrap_or_else(|| panic!("the claim is not listed: {html}"));
        let end = html[start..].find("</li>").unwrap() + start;
        html[start..end].to_string()
    }

    async fn settle(&self, status: &str, window_closes_at: i64) {
        sqlx::query(
            "UPDATE point_verifications SET status = $1, window_closes_at = $2 WHERE point_id = $3",
        )
        .bind(status)
        .bind(window_closes_at)
        .bind(&self.point)
        .execute(&self.app.db.pool)
        .await
        .unwrap();
        sqlx::query("UPDATE tracking_points SET verification = $1 WHERE id = $2")
            .bind(status)
            .bind(&self.point)
            .execute(&self.app.db.pool)
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn a_rep_attests_an_unbacked_claim_and_only_the_author_may() {
    let c = unverified_claim().await;
    let app = &c.app;
    let (cookie, csrf) = app.session(&c.rep, "dev").await;
    let attest = format!("/web/events/{}/attestations", c.point);

    // Still inside its window: nothing to prove yet.
    let touch = c.touch(&cookie).await;
    assert!(!touch.contains("补充证明"), "{touch}");
    // Pending past its window (the settling job lags), or settled unverified: 补充证明.
    c.settle("pending", 1).await;
    assert!(c.touch(&cookie).await.contains("补充证明"));
    c.settle("unverified", 1).await;
    let touch = c.touch(&cookie).await;
    assert!(touch.contains("补充证明"), "{touch}");
    assert!(touch.contains(&format!("data-point=\"{}\"", c.point)));
    // A colleague does not see the rep's customer at all.
    let (other_cookie, other_csrf) = app.session(&c.colleague, "dev").await;
    let (status, html) = app.page(&c.path(), &other_cookie).await;
    assert_eq!(status, 404);
    assert!(!html.contains("补充证明"));

    // The proof goes up as a `proof` document first, as the page's script does.
    let res = no_redirects()
        .post(app.url(&format!(
            "/web/customers/{}/documents?kind=proof&filename=%E9%80%9A%E8%AF%9D%E6%88%AA%E5%9B%BE.png",
            c.customer
        )))
        .header("cookie", &cookie)
        .header("x-csrf-token", &csrf)
        .header("content-type", "image/png")
        .body(b"\x89PNG proof".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let proof = res.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();

    let body = json!({"note": "客户用座机回电，通话约 10 分钟", "document": proof});
    let (status, _) = post(app, &attest, &cookie, None, body.clone()).await;
    assert_eq!(status, 403, "no CSRF token");
    let (status, err) = post(app, &attest, &other_cookie, Some(&other_csrf), body.clone()).await;
    assert_eq!(
        status, 404,
        "not the claim's author, not even visible: {err}"
    );
    let (status, err) = post(app, &attest, &cookie, Some(&csrf), json!({})).await;
    assert_eq!(status, 422, "neither note nor proof: {err}");
    assert_eq!(
        count(
            app,
            "SELECT CAST(COUNT(*) AS BIGINT) FROM attestations WHERE point_id = $1",
            &c.point
        )
        .await,
        0
    );

    let (status, a) = post(app, &attest, &cookie, Some(&csrf), body.clone()).await;
    assert_eq!(status, 201, "{a}");
    assert_eq!(a["status"], "pending");
    assert_eq!(a["approver"], c.manager.as_str());
    assert_eq!(a["requested_by"], c.rep.as_str());
    assert_eq!(a["document"], proof.as_str());
    let cards = count(
        app,
        "SELECT CAST(COUNT(*) AS BIGINT) FROM cards WHERE purpose = 'attestation' AND recipient_user_id = $1",
        &c.manager,
    )
    .await;
    assert_eq!(cards, 1, "the superior gets a card");
    let touch = c.touch(&cookie).await;
    assert!(touch.contains("证明待主管确认"), "{touch}");
    assert!(
        !touch.contains("补充证明"),
        "one request at a time: {touch}"
    );

    // The superior rejects (the card's click, here through the API): the rep may try again.
    let key = api_key(app).await;
    let decide = |id: String, approve: bool| {
        let key = key.clone();
        let manager = c.manager.clone();
        async move {
            let res = reqwest::Client::new()
                .post(app.url(&format!("/api/v1/attestations/{id}/decision")))
                .bearer_auth(key)
                .json(&json!({"actor": manager, "approve": approve}))
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 200);
        }
    };
    decide(a["id"].as_str().unwrap().to_string(), false).await;
    let touch = c.touch(&cookie).await;
    assert!(touch.contains("主管已驳回"), "{touch}");
    assert!(touch.contains("补充证明"), "{touch}");

    let (status, a) = post(
        app,
        &attest,
        &cookie,
        Some(&csrf),
        json!({"note": "补充：通话录音已交主管"}),
    )
    .await;
    assert_eq!(status, 201, "{a}");
    decide(a["id"].as_str().unwrap().to_string(), true).await;
    let touch = c.touch(&cookie).await;
    assert!(touch.contains("主管已确认"), "{touch}");
    assert!(touch.contains("已证明"), "{touch}");
    assert!(!touch.contains("补充证明"), "{touch}");
    c.app.stop().await;
}

#[tokio::test]
async fn a_dead_number_blocks_the_gate_until_it_is_restored() {
    let app = spawn_sidebar("", false).await;
    let rep = user(&app, json!({"name": "李明"})).await;
    let customer = app.customer("华南智造", &rep).await;
    deal(&app, &customer, &rep).await;
    let (cookie, csrf) = app.session(&rep, "dev").await;
    let path = format!("/sidebar/customers/{customer}");
    let phone: String = sqlx::query(
        "SELECT p.id FROM contact_phones p JOIN contacts c ON c.id = p.contact_id WHERE c.customer_id = $1",
    )
    .bind(&customer)
    .fetch_one(&app.db.pool)
    .await
    .unwrap()
    .get("id");
    let validity = format!("/web/phones/{phone}/validity");

    let (_, html) = app.page(&path, &cookie).await;
    let contacts = part(&html, "contacts", "section");
    assert!(
        contacts.contains(&format!("data-phone=\"{phone}\"")),
        "{contacts}"
    );
    assert!(contacts.contains("标记无效"), "{contacts}");
    for reason in ["停机", "空号", "非本人", "其他"] {
        assert!(contacts.contains(&format!("<option>{reason}</option>")));
    }
    assert!(!part(&html, "deals", "section").contains("data-missing=\"valid_contact\""));

    let put = |csrf: Option<String>, body: Value| {
        let cookie = cookie.clone();
        let validity = validity.clone();
        let app = &app;
        async move {
            send(
                app,
                reqwest::Method::PUT,
                &validity,
                &cookie,
                csrf.as_deref(),
                body,
            )
            .await
        }
    };
    let (status, _) = put(None, json!({"valid": false, "reason": "空号"})).await;
    assert_eq!(status, 403);
    let (status, err) = put(Some(csrf.clone()), json!({"valid": false})).await;
    assert_eq!(status, 422, "a reason is required: {err}");
    let (status, phone_row) = put(
        Some(csrf.clone()),
        json!({"valid": false, "reason": "空号"}),
    )
    .await;
    assert_eq!(status, 200, "{phone_row}");
    assert_eq!(phone_row["valid"], false);
    assert_eq!(phone_row["invalid_reason"], "空号");

    let (_, html) = app.page(&path, &cookie).await;
    let deals = part(&html, "deals", "section");
    assert!(deals.contains("data-missing=\"valid_contact\""), "{deals}");
    assert!(deals.contains("缺少有效联系方式"), "{deals}");
    let contacts = part(&html, "contacts", "section");
    assert!(contacts.contains("已失效（空号）"), "{contacts}");
    assert!(contacts.contains("恢复有效"), "{contacts}");
    let audited = count(
        &app,
        "SELECT CAST(COUNT(*) AS BIGINT) FROM audit_log WHERE action = 'phone.mark_invalid' AND actor_id = $1",
        &rep,
    )
    .await;
    assert_eq!(audited, 1);

    let (status, _) = put(Some(csrf.clone()), json!({"valid": true})).await;
    assert_eq!(status, 200);
    let (_, html) = app.page(&path, &cookie).await;
    assert!(!part(&html, "deals", "section").contains("data-missing=\"valid_contact\""));
    assert!(part(&html, "contacts", "section").contains("标记无效"));

    let (status, _) = send(
        &app,
        reqwest::Method::PUT,
        "/web/phones/0190b8a0-0000-7000-8000-000000000000/validity",
        &cookie,
        Some(&csrf),
        json!({"valid": true}),
    )
    .await;
    assert_eq!(status, 404);
    app.stop().await;
}

#[tokio::test]
async fn managers_roll_back_reassign_and_lift_and_reps_cannot() {
    let app = spawn_sidebar("", false).await;
    let manager = user(&app, json!({"name": "王经理", "roles": ["manager"]})).await;
    // A manager's authority is their directory subtree: the lead reports to them.
    let lead = user(&app, json!({"name": "周组长", "superiors": [manager]})).await;
    let rep = user(&app, json!({"name": "李明", "superiors": [lead]})).await;
    let other = user(&app, json!({"name": "赵强"})).await;
    let customer = app.customer("华东医疗器械", &rep).await;
    let deal = deal(&app, &customer, &rep).await;
    sqlx::query("UPDATE deals SET stage = '需求确认' WHERE id = $1")
        .bind(&deal)
        .execute(&app.db.pool)
        .await
        .unwrap();
    let (m_cookie, m_csrf) = app.session(&manager, "dev").await;
    let (l_cookie, l_csrf) = app.session(&lead, "dev").await;
    let (r_cookie, r_csrf) = app.session(&rep, "dev").await;
    let (o_cookie, o_csrf) = app.session(&other, "dev").await;
    let path = format!("/sidebar/customers/{customer}");

    // The tools show for a manager and for the owner's direct superior, not for reps.
    for cookie in [&m_cookie, &l_cookie] {
        let (_, html) = app.page(&path, cookie).await;
        let deals = part(&html, "deals", "section");
        assert!(
            deals.contains("回退阶段") && deals.contains("重新分配"),
            "{deals}"
        );
        assert!(deals.contains("<option>初步咨询</option>"), "{deals}");
        assert!(deals.contains(&format!("<option value=\"{other}\">赵强</option>")));
        assert!(
            !deals.contains(&format!("<option value=\"{rep}\">")),
            "not to the owner"
        );
    }
    let (_, html) = app.page(&path, &r_cookie).await;
    assert!(!html.contains("回退阶段") && !html.contains("重新分配"));

    // Rollback: CSRF, the manager rule (checked by gates), a reason.
    let rollback = format!("/web/deals/{deal}/rollback");
    let body = json!({"to": "初步咨询", "reason": "通话记录造假，退回重新跟进"});
    let (status, _) = post(&app, &rollback, &m_cookie, None, body.clone()).await;
    assert_eq!(status, 403);
    let (status, err) = post(&app, &rollback, &r_cookie, Some(&r_csrf), body.clone()).await;
    assert_eq!(status, 403, "{err}");
    let (status, err) = post(
        &app,
        &rollback,
        &m_cookie,
        Some(&m_csrf),
        json!({"to": "初步咨询", "reason": "  "}),
    )
    .await;
    assert_eq!(status, 422, "{err}");
    assert!(
        err["error"]["message"].as_str().unwrap().contains("原因"),
        "{err}"
    );
    let (status, moved) = post(&app, &rollback, &m_cookie, Some(&m_csrf), body.clone()).await;
    assert_eq!(status, 200, "{moved}");
    assert_eq!(moved["stage"], "初步咨询");
    // Kept in the stage history, encrypted.
    let history: String = sqlx::query(
        "SELECT reason_enc FROM deal_stage_history WHERE deal_id = $1 AND kind = 'rollback'",
    )
    .bind(&deal)
    .fetch_one(&app.db.pool)
    .await
    .unwrap()
    .get("reason_enc");
    assert_eq!(
        app.cipher
            .decrypt("deal_stage_history.reason", &history)
            .unwrap(),
        "通话记录造假，退回重新跟进"
    );

    // Reassign: the rep's direct superior may, a colleague may not.
    let reassign = format!("/web/deals/{deal}/reassign");
    let body = json!({"owner": other, "reason": "客户要求更换对接人"});
    let (status, _) = post(&app, &reassign, &l_cookie, None, body.clone()).await;
    assert_eq!(status, 403);
    let (status, _) = post(&app, &reassign, &o_cookie, Some(&o_csrf), body.clone()).await;
    assert_eq!(status, 404, "the colleague does not see the deal");
    let (status, _) = post(&app, &reassign, &r_cookie, Some(&r_csrf), body.clone()).await;
    assert_eq!(status, 403);
    let (status, _) = post(
        &app,
        &reassign,
        &l_cookie,
        Some(&l_csrf),
        json!({"owner": other}),
    )
    .await;
    assert_eq!(status, 422);
    let (status, moved) = post(&app, &reassign, &l_cookie, Some(&l_csrf), body).await;
    assert_eq!(status, 200, "{moved}");
    assert_eq!(moved["owner"], other.as_str());
    // The customer went with the deal: the rep no longer works it, until it comes back.
    let res = app
        .tap(
            &customer,
            &r_cookie,
            Some(&r_csrf),
            json!({"action": "已电话沟通"}),
        )
        .await;
    assert_eq!(res.status(), 404, "no longer the rep's customer");
    // Nor does the lead see it now (赵强 is not in the lead's team): an admin moves it back.
    let back = json!({"owner": rep, "reason": "客户要求换回原对接人"});
    let (status, _) = post(&app, &reassign, &l_cookie, Some(&l_csrf), back.clone()).await;
    assert_eq!(status, 404);
    let res = reqwest::Client::new()
        .post(app.url(&format!("/api/v1/deals/{deal}/reassign")))
        .bearer_auth(&app.key)
        .json(&back)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);

    // The rep's third call claim in 24 h is refused and freezes them on this customer.
    for _ in 0..3 {
        app.tap(
            &customer,
            &r_cookie,
            Some(&r_csrf),
            json!({"action": "已电话沟通"}),
        )
        .await;
    }
    let freeze: String = sqlx::query("SELECT id FROM action_freezes WHERE user_id = $1")
        .bind(&rep)
        .fetch_one(&app.db.pool)
        .await
        .unwrap()
        .get("id");
    let (_, html) = app.page(&path, &m_cookie).await;
    let banner = part(&html, "freeze-tools", "section");
    assert!(banner.contains("李明 对该客户的操作已冻结"), "{banner}");
    assert!(
        banner.contains(&format!("data-freeze=\"{freeze}\"")),
        "{banner}"
    );
    assert!(banner.contains("解除冻结"), "{banner}");
    let (_, html) = app.page(&path, &r_cookie).await;
    assert!(html.contains("您对该客户的操作已冻结"));
    assert!(!html.contains("解除冻结"), "nobody lifts their own freeze");
    let (_, html) = app.page(&path, &o_cookie).await;
    assert!(!html.contains("解除冻结"));

    let lift = format!("/web/freezes/{freeze}/lift");
    let body = json!({"reason": "已核实，为重复点击"});
    let (status, _) = post(&app, &lift, &m_cookie, None, body.clone()).await;
    assert_eq!(status, 403);
    let (status, _) = post(&app, &lift, &r_cookie, Some(&r_csrf), body.clone()).await;
    assert_eq!(status, 403, "the frozen rep");
    let (status, _) = post(&app, &lift, &o_cookie, Some(&o_csrf), body.clone()).await;
    assert_eq!(status, 404, "a colleague does not even see the rep's work");
    let (status, _) = post(&app, &lift, &m_cookie, Some(&m_csrf), json!({"reason": ""})).await;
    assert_eq!(status, 422);
    let (status, lifted) = post(&app, &lift, &m_cookie, Some(&m_csrf), body.clone()).await;
    assert_eq!(status, 200, "{lifted}");
    assert_eq!(lifted["lifted_by"], manager.as_str());
    assert_eq!(lifted["lift_reason"], "已核实，为重复点击");
    let (status, _) = post(&app, &lift, &m_cookie, Some(&m_csrf), body).await;
    assert_eq!(status, 409, "already lifted");
    let (_, html) = app.page(&path, &m_cookie).await;
    assert!(!part(&html, "freeze-tools", "section").contains("解除冻结"));
    let res = app
        .tap(
            &customer,
            &r_cookie,
            Some(&r_csrf),
            json!({"action": "已发送样品清单"}),
        )
        .await;
    assert_eq!(res.status(), 201, "the rep works again");
    app.stop().await;
}
