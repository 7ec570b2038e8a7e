//! Sidebar sign-in through WeCom OAuth (emulated), sessions with CSRF, and the JS-SDK
//! signatures the page needs.

use closeloop::emulator::wecom::Emulator;
use closeloop::platform::wecom::crypto::jsapi_signature;
use serde_json::{json, Value};

use crate::helpers::{error_code, spawn_app_with, TestApp};

const CORP: &str = "wwcl0000000000001";

async fn setup() -> (Emulator, TestApp) {
    let emulator = Emulator::start(CORP, vec![("app-secret".to_string(), "app")]).await;
    let app = spawn_app_with(&format!(
        "public_url = \"https://closeloop.example.com\"\n[wecom]\ncorp_id = \"{CORP}\"\nagent_id = 1000002\n\
         secret = \"app-secret\"\ntoken = \"QDG6eK\"\nencoding_aes_key = \"jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C\"\n\
         api_base = \"{}\"\n",
        emulator.base_url()
    ))
    .await;
    (emulator, app)
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Runs the OAuth round trip for `userid`; returns the callback's response.
async fn sign_in(
    app: &TestApp,
    emulator: &Emulator,
    userid: Option<&str>,
    next: &str,
) -> reqwest::Response {
    let client = no_redirects();
    let login = client
        .get(app.url(&format!("/auth/wecom/login?next={next}")))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 303);
    let location = login.headers()["location"].to_str().unwrap().to_string();
    assert!(location.starts_with(
        "https://open.weixin.qq.com/connect/oauth2/authorize?appid=wwcl0000000000001"
    ));
    assert!(location.contains(
        "redirect_uri=https%3A%2F%2Fcloseloop%2Eexample%2Ecom%2Fauth%2Fwecom%2Fcallback"
    ));
    assert!(location.ends_with("#wechat_redirect"));
    let state = location
        .split("state=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap()
        .to_string();
    // The browser keeps the sign-in cookie the login set and shows it to the callback.
    let binding = login.headers()["set-cookie"].to_str().unwrap();
    let binding = binding.split(';').next().unwrap().to_string();
    let code = emulator.issue_oauth_code(userid);
    client
        .get(app.url(&format!("/auth/wecom/callback?code={code}&state={state}")))
        .header("cookie", binding)
        .send()
        .await
        .unwrap()
}

fn cookie_of(res: &reqwest::Response) -> String {
    let set = res.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Lax") && set.contains("Secure"),
        "{set}"
    );
    set.split(';').next().unwrap().to_string()
}

#[tokio::test]
async fn a_member_signs_in_and_the_session_serves_the_sidebar() {
    let (emulator, app) = setup().await;
    let rep = app
        .create(
            "/api/v1/users",
            json!({"name": "李明", "identities": [{"platform": "wecom", "kind": "userid", "value": "liming"}]}),
        )
        .await;
    let res = sign_in(&app, &emulator, Some("liming"), "/sidebar%3Fx%3D1").await;
    assert_eq!(res.status(), 303);
    assert_eq!(res.headers()["location"], "/sidebar?x=1");
    let cookie = cookie_of(&res);
    let client = no_redirects();
    let me: Value = client
        .get(app.url("/web/session"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["user_id"], rep["id"]);
    let csrf = me["csrf_token"].as_str().unwrap().to_string();

    // JS-SDK: both signatures over the page URL without its fragment, tickets cached.
    let url = "https://closeloop.example.com/sidebar?x=1";
    let cfg: Value = client
        .get(app.url(&format!(
                "/web/wecom/js-config?url={}",
                url.replace(':', "%3A")
                    .replace('/', "%2F")
                    .replace('?', "%3F")
                    .replace('=', "%3D")
            )))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let (ts, nonce) = (
        cfg["timestamp"].as_str().unwrap(),
        cfg["nonce_str"].as_str().unwrap(),
    );
    assert_eq!(
        cfg["signature"],
        jsapi_signature(Emulator::CORP_TICKET, nonce, ts, url)
    );
    assert_eq!(
        cfg["agent_signature"],
        jsapi_signature(Emulator::AGENT_TICKET, nonce, ts, url)
    );
    assert_eq!(cfg["corp_id"], CORP);
    let again = client
        .get(app.url("/web/wecom/js-config?url=https%3A%2F%2Fcloseloop.example.com%2Fother"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 200);
    assert_eq!(
        emulator.ticket_calls(),
        2,
        "each ticket fetched once, then cached"
    );

    // The customer behind the open chat (getCurExternalContact's external userid).
    let customer = app.customer("华南智造", None).await;
    sqlx::query(
        "INSERT INTO customer_external_ids (org_id, platform, external_user_id, customer_id, contact_id, created_at) \
         VALUES ($1, 'wecom', 'wmEXT001', $2, NULL, 0)",
    )
    .bind(&app.org_id)
    .bind(&customer)
    .execute(&app.db.pool)
    .await
    .unwrap();
    let found: Value = client
        .get(app.url("/web/wecom/customer?external_userid=wmEXT001"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (found["customer_id"].as_str(), found["name"].as_str()),
        (Some(customer.as_str()), Some("华南智造"))
    );
    let unknown = client
        .get(app.url("/web/wecom/customer?external_userid=wmNOPE"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    let anonymous = client
        .get(app.url("/web/wecom/customer?external_userid=wmEXT001"))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);

    // Logout is state-changing: refused without the CSRF token, done with it.
    let refused = client
        .post(app.url("/auth/logout"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    let done = client
        .post(app.url("/auth/logout"))
        .header("cookie", &cookie)
        .header("x-csrf-token", &csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(done.status(), 204);
    let after = client
        .get(app.url("/web/session"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(after.status(), 401);
}

#[tokio::test]
async fn sign_in_refuses_strangers_replays_and_open_redirects() {
    let (emulator, app) = setup().await;
    // Not a member of the corp.
    let (status, _, _) = error_code(sign_in(&app, &emulator, None, "/").await).await;
    assert_eq!(status, 403);
    // A member closeloop does not know.
    let (status, _, msg) = error_code(sign_in(&app, &emulator, Some("nobody"), "/").await).await;
    assert_eq!(status, 403);
    assert!(msg.contains("closeloop"), "{msg}");
    // A state cannot be used twice, nor invented.
    let client = no_redirects();
    let code = emulator.issue_oauth_code(Some("nobody"));
    let res = client
        .get(app.url(&format!("/auth/wecom/callback?code={code}&state=made-up")))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(res).await.0, 422);
    // `next` may only be a path on this site.
    app.create(
        "/api/v1/users",
        json!({"name": "李明", "identities": [{"platform": "wecom", "kind": "userid", "value": "liming"}]}),
    )
    .await;
    let res = sign_in(&app, &emulator, Some("liming"), "%2F%2Fevil.example.com").await;
    assert_eq!(res.headers()["location"], "/");
    assert_eq!(app.count("web_sessions").await, 1);
}
