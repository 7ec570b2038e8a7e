//! The sidebar for a team on DingTalk (H5 微应用) or Feishu (网页应用): without a session
//! the client's User-Agent picks the sign-in, DingTalk's 免登 page hands the JSAPI the
//! organisation and app, both sign-ins (emulated) lead to the rep's customer list with that
//! platform's SDK allowed by the page's policy, and a tap records a tracking point.

use closeloop::emulator::dingtalk::Emulator as DingtalkEmulator;
use closeloop::emulator::feishu::Emulator as FeishuEmulator;
use closeloop::emulator::wecom::Emulator as WecomEmulator;
use serde_json::{json, Value};

use crate::sidebar::{no_redirects, spawn_sidebar, wecom_config, SidebarApp, CORP};

const DINGTALK_APP_KEY: &str = "dingclapp0000001";
const DINGTALK_SECRET: &str = "app-secret-xyz";
const DINGTALK_CORP: &str = "dingcorp00000001";
const DINGTALK_JSAPI: &str = "https://g.alicdn.com/dingding/dingtalk-jsapi/3.1.0/dingtalk.open.js";
const FEISHU_APP_ID: &str = "cli_a1b2c3d4e5f6";
const FEISHU_SECRET: &str = "feishu-app-secret";
const FEISHU_H5SDK: &str = "https://lf1-cdn-tos.bytegoofy.com/goofy/lark/op/h5-js-sdk-1.5.23.js";

/// What DingTalk's and Feishu's in-app browsers send (Android samples), and a desktop one.
const DINGTALK_UA: &str = "Mozilla/5.0 (Linux; U; Android 12; zh-CN) AppleWebKit/537.36 \
    (KHTML, like Gecko) Version/4.0 Chrome/69.0.3497.100 Mobile Safari/537.36 \
    AliApp(DingTalk/6.5.20) com.alibaba.android.rimet/24646881 language/zh-CN";
const FEISHU_UA: &str = "Mozilla/5.0 (Linux; Android 9; wv) AppleWebKit/537.36 (KHTML, like \
    Gecko) Version/4.0 Chrome/75.0.3770.156 Mobile Safari/537.36 Lark/5.10.4 \
    LarkLocale/zh_CN ChannelName/Feishu";
const WECOM_UA: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) \
    AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 wxwork/4.1.10 MicroMessenger/7.0.1";
const DESKTOP_UA: &str = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like \
    Gecko) Chrome/120.0 Safari/537.36";

/// `[dingtalk]` with every DingTalk address at `emu` (none when `emu` is None: the
/// discard port refuses at once); `corp_id` only when given.
fn dingtalk_config(emu: Option<&DingtalkEmulator>, corp_id: Option<&str>) -> String {
    let base = emu.map_or("http://127.0.0.1:9".to_string(), |e| e.base_url());
    let corp = corp_id
        .map(|c| format!("corp_id = \"{c}\"\n"))
        .unwrap_or_default();
    format!(
        "[dingtalk]\napp_key = \"{DINGTALK_APP_KEY}\"\napp_secret = \"{DINGTALK_SECRET}\"\n\
         agent_id = 3000001\n{corp}token = \"mryue\"\n\
         aes_key = \"Yue0EfdN5900c1ce5cf6A152c63DDe1808a60c5ecd7\"\n\
         api_base = \"{base}\"\noapi_base = \"{base}\"\n"
    )
}

fn feishu_config(emu: Option<&FeishuEmulator>) -> String {
    let base = emu.map_or("http://127.0.0.1:9".to_string(), |e| e.base_url());
    format!(
        "[feishu]\napp_id = \"{FEISHU_APP_ID}\"\napp_secret = \"{FEISHU_SECRET}\"\n\
         verification_token = \"vtoken-123\"\napi_base = \"{base}\"\naccounts_base = \"{base}\"\n"
    )
}

/// `GET path` without a session, from the client whose User-Agent is `ua`.
async fn anonymous(app: &SidebarApp, path: &str, ua: &str) -> reqwest::Response {
    no_redirects()
        .get(app.url(path))
        .header("user-agent", ua)
        .send()
        .await
        .unwrap()
}

fn location(res: &reqwest::Response) -> String {
    res.headers()["location"].to_str().unwrap().to_string()
}

fn cookie_of(res: &reqwest::Response) -> String {
    let set = res.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(set.contains("HttpOnly"), "{set}");
    set.split(';').next().unwrap().to_string()
}

/// The CSRF token a page carries for its script.
fn csrf_of(html: &str) -> String {
    html.split("name=\"csrf-token\" content=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("no CSRF token in {html}"))
        .to_string()
}

/// Every `<script>` of a page loads a file: the pages' policy has no inline scripts.
fn assert_no_inline_script(html: &str) {
    for tag in html.split("<script").skip(1) {
        assert!(tag.starts_with(" src=\""), "inline script in {html}");
    }
}

/// GET with the session cookie: (status, Content-Security-Policy, body).
async fn page(app: &SidebarApp, path: &str, cookie: &str) -> (u16, String, String) {
    let res = no_redirects()
        .get(app.url(path))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    let csp = res
        .headers()
        .get("content-security-policy")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (status, csp, res.text().await.unwrap())
}

/// The rep's customer list as a signed-in page on `platform`, loading `sdk`.
async fn assert_customer_list(
    app: &SidebarApp,
    cookie: &str,
    platform: &str,
    sdk: &str,
    mine: &str,
    others: &str,
) {
    let (status, csp, html) = page(app, "/sidebar", cookie).await;
    assert_eq!(status, 200, "{html}");
    assert!(html.contains("data-page=\"list\""), "{html}");
    assert!(
        html.contains(&format!("data-platform=\"{platform}\"")),
        "{html}"
    );
    assert!(
        html.contains(&format!("<a href=\"/sidebar/customers/{mine}\">")),
        "{html}"
    );
    assert!(
        !html.contains(others),
        "another rep's customer is listed: {html}"
    );
    assert!(
        html.contains(&format!(
            "<script src=\"{sdk}\" referrerpolicy=\"origin\"></script>"
        )),
        "{html}"
    );
    let origin = sdk.split('/').take(3).collect::<Vec<_>>().join("/");
    assert!(
        csp.contains(&format!("script-src 'self' {origin};")),
        "{csp}"
    );
    assert!(csp.contains("connect-src 'self'"), "{csp}");
    assert_no_inline_script(&html);
}

/// One tap from the customer page, as sidebar.js posts it; returns the tracking point.
async fn tap_from_the_page(
    app: &SidebarApp,
    cookie: &str,
    customer: &str,
    platform: &str,
    sdk: &str,
) -> Value {
    let (status, _, html) = page(app, &format!("/sidebar/customers/{customer}"), cookie).await;
    assert_eq!(status, 200, "{html}");
    assert!(
        html.contains(&format!("data-platform=\"{platform}\"")),
        "{html}"
    );
    assert!(html.contains(&format!("<script src=\"{sdk}\"")), "{html}");
    // No open chat to send into: a proposal goes out as a tracked link to copy.
    assert!(html.contains("复制后发给客户"), "{html}");
    let res = app
        .tap(
            customer,
            cookie,
            Some(&csrf_of(&html)),
            json!({"action": "已电话沟通"}),
        )
        .await;
    assert_eq!(res.status(), 201);
    res.json().await.unwrap()
}

#[tokio::test]
async fn dingtalk_sends_a_visitor_to_its_free_login_page_which_hands_the_jsapi_the_app() {
    let app = spawn_sidebar(&dingtalk_config(None, Some(DINGTALK_CORP)), false).await;
    let res = anonymous(&app, "/sidebar", DINGTALK_UA).await;
    assert_eq!(res.status(), 303);
    assert_eq!(location(&res), "/auth/dingtalk/login?next=%2Fsidebar");
    let res = anonymous(&app, "/sidebar/customers/c-1", DINGTALK_UA).await;
    assert_eq!(
        location(&res),
        "/auth/dingtalk/login?next=%2Fsidebar%2Fcustomers%2Fc-1"
    );
    // The only platform configured is also where a plain browser is sent.
    let res = anonymous(&app, "/sidebar", DESKTOP_UA).await;
    assert_eq!(location(&res), "/auth/dingtalk/login?next=%2Fsidebar");

    let res = anonymous(&app, "/auth/dingtalk/login?next=%2Fsidebar", DINGTALK_UA).await;
    assert_eq!(res.status(), 200);
    let csp = res.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        csp.contains("script-src 'self' https://g.alicdn.com;"),
        "{csp}"
    );
    let html = res.text().await.unwrap();
    assert!(
        html.contains(&format!(
            "<script src=\"{DINGTALK_JSAPI}\" referrerpolicy=\"origin\"></script>"
        )),
        "{html}"
    );
    assert!(
        html.contains(&format!(
            "<main data-page=\"dingtalk-login\" data-corp-id=\"{DINGTALK_CORP}\" \
             data-client-id=\"{DINGTALK_APP_KEY}\" data-next=\"/sidebar\">"
        )),
        "{html}"
    );
    assert_no_inline_script(&html);
    // The script that asks for the code and posts it is ours, served from the binary.
    let js = html
        .split("<script src=\"")
        .filter_map(|s| s.split('"').next())
        .find(|s| s.ends_with("/sidebar.js"))
        .unwrap()
        .to_string();
    let script = reqwest::get(app.url(&js))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        script.contains("dd.runtime.permission.requestAuthCode(")
            && script.contains("clientId: main.getAttribute('data-client-id')")
            && script.contains("'/auth/dingtalk/code'"),
        "{script}"
    );

    // `next` may only be a path on this site.
    for evil in [
        "https%3A%2F%2Fevil.example",
        "%2F%2Fevil.example",
        "%2F%5Cevil.example",
    ] {
        let res = anonymous(
            &app,
            &format!("/auth/dingtalk/login?next={evil}"),
            DINGTALK_UA,
        )
        .await;
        let html = res.text().await.unwrap();
        assert!(html.contains("data-next=\"/\""), "{evil}: {html}");
        assert!(!html.contains("evil.example"), "{evil}: {html}");
    }
    app.stop().await;

    // Without a CorpId DingTalk cannot sign anyone in, so it is not offered.
    let app = spawn_sidebar(&dingtalk_config(None, None), false).await;
    let res = anonymous(&app, "/sidebar", DINGTALK_UA).await;
    assert_eq!(res.status(), 401);
    assert!(res.text().await.unwrap().contains("尚未配置"));
    let res = anonymous(&app, "/auth/dingtalk/login?next=%2Fsidebar", DINGTALK_UA).await;
    assert_eq!(res.status(), 503);
    assert!(res.text().await.unwrap().contains("钉钉企业编号"));
    app.stop().await;
}

#[tokio::test]
async fn a_rep_signed_in_through_dingtalk_sees_their_customers_and_taps() {
    let emu = DingtalkEmulator::start(DINGTALK_APP_KEY, DINGTALK_SECRET).await;
    let app = spawn_sidebar(&dingtalk_config(Some(&emu), Some(DINGTALK_CORP)), false).await;
    let rep = app
        .create(
            "/api/v1/users",
            json!({"name": "李明", "identities": [{"platform": "dingtalk", "kind": "userid", "value": "liming"}]}),
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let other = app.create("/api/v1/users", json!({"name": "王芳"})).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let mine = app.customer("华南智造", &rep).await;
    app.customer("西北重工", &other).await;

    // What the login page's script does with the code the JSAPI hands it.
    let res = no_redirects()
        .post(app.url("/auth/dingtalk/code"))
        .header("user-agent", DINGTALK_UA)
        .header("origin", &app.base)
        .json(&json!({"code": emu.issue_auth_code("liming")}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    let cookie = cookie_of(&res);

    assert_customer_list(&app, &cookie, "dingtalk", DINGTALK_JSAPI, &mine, "西北重工").await;
    // What the page's script asks for `dd.config`.
    let cfg: Value = no_redirects()
        .get(app.url("/web/dingtalk/js-config"))
        .query(&[("url", app.url("/sidebar"))])
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (cfg["corpId"].as_str(), cfg["agentId"].as_str()),
        (Some(DINGTALK_CORP), Some("3000001"))
    );

    let point = tap_from_the_page(&app, &cookie, &mine, "dingtalk", DINGTALK_JSAPI).await;
    assert_eq!(point["platform"], "dingtalk");
    assert_eq!(point["source"], "sidebar");
    assert_eq!(point["actor"], rep.as_str());
    assert_eq!(point["customer"], mine.as_str());
    app.stop().await;
}

#[tokio::test]
async fn a_rep_signed_in_through_feishu_oauth_sees_their_customers_and_taps() {
    let emu = FeishuEmulator::start(FEISHU_APP_ID, FEISHU_SECRET).await;
    let app = spawn_sidebar(&feishu_config(Some(&emu)), false).await;
    let rep = app
        .create(
            "/api/v1/users",
            json!({"name": "李明", "identities": [{"platform": "feishu", "kind": "user_id", "value": "fs_liming"}]}),
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let mine = app.customer("华南智造", &rep).await;
    emu.set_current_member(Some(
        json!({"user_id": "fs_liming", "open_id": "ou_liming", "name": "李明"}),
    ));

    // Feishu's browser without a session → our login → Feishu's authorize page → back.
    let res = anonymous(&app, "/sidebar", FEISHU_UA).await;
    assert_eq!(res.status(), 303);
    let login = location(&res);
    assert_eq!(login, "/auth/feishu/login?next=%2Fsidebar");
    let (res, _) = feishu_round_trip(&app, &login).await;
    assert_eq!(res.status(), 303);
    assert_eq!(location(&res), "/sidebar");
    let cookie = cookie_of(&res);

    assert_customer_list(&app, &cookie, "feishu", FEISHU_H5SDK, &mine, "西北重工").await;
    let cfg: Value = no_redirects()
        .get(app.url("/web/feishu/js-config"))
        .query(&[("url", app.url("/sidebar"))])
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(cfg["appId"], FEISHU_APP_ID);

    let point = tap_from_the_page(&app, &cookie, &mine, "feishu", FEISHU_H5SDK).await;
    assert_eq!(point["platform"], "feishu");
    assert_eq!(point["actor"], rep.as_str());

    // `next` may only be a path on this site.
    let (res, authorize) =
        feishu_round_trip(&app, "/auth/feishu/login?next=https%3A%2F%2Fevil.example").await;
    assert!(!authorize.contains("evil.example"), "{authorize}");
    assert_eq!(location(&res), "/");
    app.stop().await;
}

/// `login` (our Feishu sign-in) → the emulated authorize page → our callback; returns the
/// callback's answer and the authorize address.
async fn feishu_round_trip(app: &SidebarApp, login: &str) -> (reqwest::Response, String) {
    let client = no_redirects();
    let res = client
        .get(app.url(login))
        .header("user-agent", FEISHU_UA)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303);
    let binding = res.headers()["set-cookie"].to_str().unwrap();
    let binding = binding.split(';').next().unwrap().to_string();
    let authorize = location(&res);
    let res = client.get(&authorize).send().await.unwrap();
    assert_eq!(res.status(), 302);
    let back = location(&res);
    assert!(
        back.starts_with(&app.url("/auth/feishu/callback?")),
        "{back}"
    );
    let res = client.get(&back).header("cookie", binding).send().await;
    (res.unwrap(), authorize)
}

#[tokio::test]
async fn with_several_platforms_the_user_agent_decides() {
    let wecom = WecomEmulator::start(CORP, vec![("app-secret".to_string(), "app")]).await;
    let all = format!(
        "{}{}{}",
        wecom_config(&wecom),
        dingtalk_config(None, Some(DINGTALK_CORP)),
        feishu_config(None)
    );
    let app = spawn_sidebar(&all, false).await;
    for (ua, sign_in) in [
        (DINGTALK_UA, "/auth/dingtalk/login"),
        (FEISHU_UA, "/auth/feishu/login"),
        (WECOM_UA, "/auth/wecom/login"),
        // Any other browser: WeCom, as before there were other platforms.
        (DESKTOP_UA, "/auth/wecom/login"),
    ] {
        let res = anonymous(&app, "/sidebar", ua).await;
        assert_eq!(res.status(), 303, "{ua}");
        assert_eq!(location(&res), format!("{sign_in}?next=%2Fsidebar"), "{ua}");
    }
    app.stop().await;

    // DingTalk and Feishu without WeCom: a plain browser is told where to open the page,
    // or gets the demo's sign-in.
    let both = format!(
        "{}{}",
        dingtalk_config(None, Some(DINGTALK_CORP)),
        feishu_config(None)
    );
    let app = spawn_sidebar(&both, false).await;
    let res = anonymous(&app, "/sidebar", FEISHU_UA).await;
    assert_eq!(location(&res), "/auth/feishu/login?next=%2Fsidebar");
    // A WeCom client where WeCom is not configured is just another browser.
    for ua in [DESKTOP_UA, WECOM_UA] {
        let res = anonymous(&app, "/sidebar", ua).await;
        assert_eq!(res.status(), 401);
        let text = res.text().await.unwrap();
        assert!(
            text.contains("请在钉钉或飞书客户端的工作台中打开本页面"),
            "{text}"
        );
    }
    app.stop().await;
    let demo = spawn_sidebar(&both, true).await;
    let res = anonymous(&demo, "/sidebar", DESKTOP_UA).await;
    assert_eq!(location(&res), "/auth/dev?next=%2Fsidebar");
    let res = anonymous(&demo, "/sidebar", DINGTALK_UA).await;
    assert_eq!(location(&res), "/auth/dingtalk/login?next=%2Fsidebar");
    demo.stop().await;
}
