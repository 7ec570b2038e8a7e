//! Sign-in is bound to the browser that started it (login CSRF): a WeCom or Feishu
//! callback URL opened by any other client signs no one in, and DingTalk's 免登 code is
//! accepted only from our own page.

use closeloop::emulator::dingtalk::Emulator as DingtalkEmulator;
use closeloop::emulator::feishu::Emulator as FeishuEmulator;
use closeloop::emulator::wecom::Emulator as WecomEmulator;
use serde_json::json;

use crate::helpers::{error_code, spawn_app_with, TestApp};

const CORP: &str = "wwcl0000000000001";
const WECOM_AES: &str = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C";

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

async fn wecom_app(public_url: &str) -> (WecomEmulator, TestApp) {
    let emulator = WecomEmulator::start(CORP, vec![("app-secret".to_string(), "app")]).await;
    let app = spawn_app_with(&format!(
        "public_url = \"{public_url}\"\n[wecom]\ncorp_id = \"{CORP}\"\nagent_id = 1000002\n\
         secret = \"app-secret\"\ntoken = \"QDG6eK\"\nencoding_aes_key = \"{WECOM_AES}\"\n\
         api_base = \"{}\"\n",
        emulator.base_url()
    ))
    .await;
    (emulator, app)
}

/// `GET login` as a browser holding `cookie` (if any): the `Set-Cookie` it answers, and
/// the `state` in the authorize address it sends the browser to.
async fn start_sign_in(app: &TestApp, login: &str, cookie: Option<&str>) -> (String, String) {
    let mut req = no_redirects().get(app.url(login));
    if let Some(c) = cookie {
        req = req.header("cookie", c);
    }
    let res = req.send().await.unwrap();
    assert_eq!(res.status(), 303);
    let set = res.headers()["set-cookie"].to_str().unwrap().to_string();
    let location = reqwest::Url::parse(res.headers()["location"].to_str().unwrap()).unwrap();
    let state = location
        .query_pairs()
        .find(|(k, _)| k == "state")
        .map(|(_, v)| v.into_owned())
        .unwrap();
    (set, state)
}

/// `name=value` of a `Set-Cookie`.
fn pair(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap().to_string()
}

async fn open(app: &TestApp, path_and_query: &str, cookie: Option<&str>) -> reqwest::Response {
    let mut req = no_redirects().get(app.url(path_and_query));
    if let Some(c) = cookie {
        req = req.header("cookie", c);
    }
    req.send().await.unwrap()
}

/// A refusal a person reads: a Chinese page, 403, and no session cookie.
async fn assert_other_browser_page(res: reqwest::Response) {
    assert_eq!(res.status(), 403);
    assert!(
        res.headers().get("set-cookie").is_none(),
        "a refused callback sets no cookie"
    );
    let kind = res.headers()["content-type"].to_str().unwrap().to_string();
    assert!(kind.starts_with("text/html"), "{kind}");
    let page = res.text().await.unwrap();
    assert!(
        page.contains("该登录链接不是在当前浏览器中发起的"),
        "{page}"
    );
}

#[tokio::test]
async fn a_wecom_callback_opened_in_another_browser_signs_no_one_in() {
    let (emulator, app) = wecom_app("https://closeloop.example.com").await;
    app.create(
        "/api/v1/users",
        json!({"name": "李明", "identities": [{"platform": "wecom", "kind": "userid", "value": "liming"}]}),
    )
    .await;
    // The insider starts a sign-in and, instead of finishing it, sends the callback URL
    // (their own code and state) to a colleague.
    let (insider_set, state) = start_sign_in(&app, "/auth/wecom/login?next=%2Fsidebar", None).await;
    let code = emulator.issue_oauth_code(Some("liming"));
    let callback = format!("/auth/wecom/callback?code={code}&state={state}");

    // The colleague's browser has no sign-in cookie, or one of its own.
    assert_other_browser_page(open(&app, &callback, None).await).await;
    let (colleague_set, _) = start_sign_in(&app, "/auth/wecom/login", None).await;
    assert_ne!(pair(&colleague_set), pair(&insider_set));
    assert_other_browser_page(open(&app, &callback, Some(&pair(&colleague_set))).await).await;
    let forged = format!(
        "{}=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        pair(&insider_set).split('=').next().unwrap()
    );
    assert_other_browser_page(open(&app, &callback, Some(&forged)).await).await;
    assert_eq!(app.count("web_sessions").await, 0, "nothing was created");

    // The browser that started it still finishes: the refusals neither used the state nor
    // traded the code.
    let res = open(&app, &callback, Some(&pair(&insider_set))).await;
    assert_eq!(res.status(), 303);
    assert_eq!(res.headers()["location"], "/sidebar");
    assert_eq!(app.count("web_sessions").await, 1);
    // And only once.
    let (status, _, _) = error_code(open(&app, &callback, Some(&pair(&insider_set))).await).await;
    assert_eq!(status, 422);
}

#[tokio::test]
async fn the_sign_in_cookie_is_host_only_over_tls_and_scoped_to_auth_over_http() {
    let (emulator, app) = wecom_app("https://closeloop.example.com").await;
    let (set, first_state) = start_sign_in(&app, "/auth/wecom/login", None).await;
    assert!(set.starts_with("__Host-closeloop_signin="), "{set}");
    for attribute in [
        "Path=/;",
        "Secure",
        "HttpOnly",
        "SameSite=Lax",
        "Max-Age=600",
    ] {
        assert!(set.contains(attribute), "{attribute} missing: {set}");
    }
    assert!(!set.contains("Domain"), "{set}");

    // Two tabs of one browser: the second sign-in keeps the first one's cookie, so both
    // callbacks belong to this browser.
    let (again, second_state) = start_sign_in(&app, "/auth/wecom/login", Some(&pair(&set))).await;
    assert_eq!(pair(&again), pair(&set));
    app.create(
        "/api/v1/users",
        json!({"name": "李明", "identities": [{"platform": "wecom", "kind": "userid", "value": "liming"}]}),
    )
    .await;
    for state in [second_state, first_state] {
        let code = emulator.issue_oauth_code(Some("liming"));
        let res = open(
            &app,
            &format!("/auth/wecom/callback?code={code}&state={state}"),
            Some(&pair(&set)),
        )
        .await;
        assert_eq!(res.status(), 303);
    }
    assert_eq!(app.count("web_sessions").await, 2);

    let (_emulator, plain) = wecom_app("http://closeloop.example.com").await;
    let (set, _) = start_sign_in(&plain, "/auth/wecom/login", None).await;
    assert!(set.starts_with("closeloop_signin="), "{set}");
    assert!(
        set.contains("Path=/auth;") && set.contains("HttpOnly"),
        "{set}"
    );
    assert!(!set.contains("Secure"), "{set}");
}

#[tokio::test]
async fn a_feishu_callback_opened_in_another_browser_signs_no_one_in() {
    let emu = FeishuEmulator::start("cli_hardening", "feishu-secret").await;
    let app = spawn_app_with(&format!(
        "public_url = \"https://closeloop.example.com\"\n[feishu]\napp_id = \"cli_hardening\"\n\
         app_secret = \"feishu-secret\"\nverification_token = \"vtoken\"\n\
         api_base = \"{base}\"\naccounts_base = \"{base}\"\n",
        base = emu.base_url()
    ))
    .await;
    app.create(
        "/api/v1/users",
        json!({"name": "李明", "identities": [{"platform": "feishu", "kind": "user_id", "value": "fs_liming"}]}),
    )
    .await;
    emu.set_current_member(Some(
        json!({"user_id": "fs_liming", "open_id": "ou_liming", "name": "李明"}),
    ));
    let login = no_redirects()
        .get(app.url("/auth/feishu/login?next=%2Fsidebar"))
        .send()
        .await
        .unwrap();
    let insider = pair(login.headers()["set-cookie"].to_str().unwrap());
    // Feishu's authorize page sends the browser back with the code and the state.
    let authorize = login.headers()["location"].to_str().unwrap();
    let page = no_redirects().get(authorize).send().await.unwrap();
    assert_eq!(page.status(), 302);
    let back = reqwest::Url::parse(page.headers()["location"].to_str().unwrap()).unwrap();
    let callback = format!("{}?{}", back.path(), back.query().unwrap());

    assert_other_browser_page(open(&app, &callback, None).await).await;
    assert_eq!(emu.oauth_token_calls(), 0, "the code was not traded");
    assert_eq!(app.count("web_sessions").await, 0);

    let res = open(&app, &callback, Some(&insider)).await;
    assert_eq!(res.status(), 303);
    assert_eq!(res.headers()["location"], "/sidebar");
    assert_eq!(emu.oauth_token_calls(), 1);
    assert_eq!(app.count("web_sessions").await, 1);
}

#[tokio::test]
async fn a_dingtalk_code_posted_from_another_site_is_refused() {
    let emu = DingtalkEmulator::start("dingappkey", "ding-secret").await;
    let app = spawn_app_with(&format!(
        "public_url = \"https://closeloop.example.com\"\n[dingtalk]\napp_key = \"dingappkey\"\n\
         app_secret = \"ding-secret\"\nagent_id = 3000001\ncorp_id = \"dingcorp\"\ntoken = \"t\"\n\
         aes_key = \"Yue0EfdN5900c1ce5cf6A152c63DDe1808a60c5ecd7\"\n\
         api_base = \"{base}\"\noapi_base = \"{base}\"\n",
        base = emu.base_url()
    ))
    .await;
    app.create(
        "/api/v1/users",
        json!({"name": "李明", "identities": [{"platform": "dingtalk", "kind": "userid", "value": "liming"}]}),
    )
    .await;
    // Someone else's code, posted by a page on another site into the visitor's browser.
    let code = emu.issue_auth_code("liming");
    let post = |headers: Vec<(&'static str, &'static str)>| {
        let mut req = no_redirects()
            .post(app.url("/auth/dingtalk/code"))
            .json(&json!({ "code": code }));
        for (k, v) in headers {
            req = req.header(k, v);
        }
        req.send()
    };
    for headers in [
        vec![
            ("sec-fetch-site", "cross-site"),
            ("origin", "https://evil.example"),
        ],
        vec![("origin", "https://evil.example")],
        vec![("origin", "null")],
        vec![
            ("sec-fetch-site", "same-site"),
            ("origin", "https://a.closeloop.example.com"),
        ],
        vec![],
    ] {
        let res = post(headers.clone()).await.unwrap();
        assert!(res.headers().get("set-cookie").is_none(), "{headers:?}");
        let (status, code, message) = error_code(res).await;
        assert_eq!((status, code.as_str()), (403, "forbidden"), "{headers:?}");
        assert!(message.contains("钉钉登录页面"), "{message}");
    }
    assert_eq!(app.count("web_sessions").await, 0);

    // Our own page's request: the code was never traded above, so it still works.
    let res = post(vec![("origin", "https://closeloop.example.com")])
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    assert_eq!(app.count("web_sessions").await, 1);
    let fresh = emu.issue_auth_code("liming");
    let res = no_redirects()
        .post(app.url("/auth/dingtalk/code"))
        .header("sec-fetch-site", "same-origin")
        .json(&json!({ "code": fresh }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
}
