//! The DingTalk H5 micro-app (docs/protocols/dingtalk.md#h5-micro-app-jsapi-and-sign-in):
//! `dd.config` signatures from a cached jsapi ticket, and 免登 sign-in: the page's `requestAuthCode`
//! code → the member's userid (`topapi/v2/user/getuserinfo`) → a closeloop session.
//!
//! - `GET /auth/dingtalk/login?next=/path` → a page whose script (assets/sidebar.js) asks
//!   the JSAPI for a 免登 code, posts it to `/auth/dingtalk/code` and goes on to `next`.
//! - `POST /auth/dingtalk/code` `{"code":"…"}` → 204 with the session cookie.
//! - `GET /web/dingtalk/js-config?url=…` (signed in) → `{agentId, corpId, timeStamp,
//!   nonceStr, signature, type}` for `dd.config`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sqlx::Row;

use crate::chat::event::Platform;
use crate::clock::SharedClock;
use crate::error::{Error, Result};
use crate::http::pages::session::{self, Session};
use crate::http::pages::sidebar::{escape, message_page, Html, PageResult};
use crate::http::{ApiJson, ApiQuery, AppState};
use crate::jobs::JobError;
use crate::platform::crypto::random_nonce;
use crate::platform::dingtalk::api::DingtalkApi;

const JSAPI_TICKETS: &str = "/v1.0/oauth2/jsapiTickets";
const GETUSERINFO: &str = "/topapi/v2/user/getuserinfo";
/// Renew the ticket when less than this is left of it.
const TICKET_MARGIN_MS: i64 = 5 * 60 * 1000;

/// What the H5 endpoints need: the API client, the ids `dd.config` names, and the ticket.
pub struct DingtalkWeb {
    pub api: DingtalkApi,
    pub clock: SharedClock,
    pub corp_id: String,
    pub agent_id: String,
    ticket: tokio::sync::Mutex<Option<(SecretString, i64)>>,
}

/// The `dd.config` parameters for one page.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JsConfig {
    pub agent_id: String,
    pub corp_id: String,
    pub time_stamp: String,
    pub nonce_str: String,
    pub signature: String,
    #[serde(rename = "type")]
    pub kind: i64,
}

impl DingtalkWeb {
    pub fn new(api: DingtalkApi, clock: SharedClock, corp_id: String, agent_id: String) -> Self {
        DingtalkWeb {
            api,
            clock,
            corp_id,
            agent_id,
            ticket: tokio::sync::Mutex::new(None),
        }
    }

    /// The app's jsapi ticket, cached while valid (one request at a time).
    async fn ticket(&self) -> Result<SecretString, JobError> {
        let now = self.clock.now_ms();
        let mut cached = self.ticket.lock().await;
        if let Some((ticket, expires)) = cached.as_ref() {
            if expires - TICKET_MARGIN_MS > now {
                return Ok(ticket.clone());
            }
        }
        let answer = self
            .api
            .call(reqwest::Method::POST, JSAPI_TICKETS, &json!({}))
            .await?;
        let ticket = answer["jsapiTicket"]
            .as_str()
            .filter(|t| !t.is_empty())
            .ok_or_else(|| JobError::Retry("DingTalk answered without a jsapiTicket".into()))?;
        let ticket = SecretString::from(ticket.to_string());
        let expire_in = answer["expireIn"].as_i64().unwrap_or(7200);
        *cached = Some((ticket.clone(), now + expire_in * 1000));
        Ok(ticket)
    }

    pub async fn js_config(&self, url: &str) -> Result<JsConfig, JobError> {
        let ticket = self.ticket().await?;
        let nonce = random_nonce();
        let ts = (self.clock.now_ms() / 1000).to_string();
        let signature = crate::platform::dingtalk::crypto::jsapi_signature(
            ticket.expose_secret(),
            &nonce,
            &ts,
            url,
        )
        .map_err(|e| JobError::GiveUp(e.to_string()))?;
        Ok(JsConfig {
            agent_id: self.agent_id.clone(),
            corp_id: self.corp_id.clone(),
            time_stamp: ts,
            nonce_str: nonce,
            signature,
            kind: 0,
        })
    }

    /// The member a 免登 code belongs to; `None` when DingTalk names no userid.
    pub async fn userid_for_code(&self, code: &str) -> Result<Option<String>, JobError> {
        let answer = self
            .api
            .call_oapi(GETUSERINFO, &json!({ "code": code }))
            .await?;
        Ok(answer["result"]["userid"]
            .as_str()
            .filter(|u| !u.is_empty())
            .map(str::to_owned))
    }
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/auth/dingtalk/login", get(login))
        .route("/auth/dingtalk/code", post(sign_in))
        .route("/web/dingtalk/js-config", get(js_config))
}

fn web(s: &AppState) -> Result<&Arc<DingtalkWeb>> {
    s.dingtalk_web.as_ref().ok_or(Error::NotFound {
        what: "DingTalk sign-in",
    })
}

fn upstream(e: JobError) -> Error {
    tracing::warn!(error = %e, "DingTalk call failed during a browser request");
    Error::Unavailable("钉钉暂时无法响应，请稍后重试 (DingTalk is not answering; try again)".into())
}

#[derive(Debug, Deserialize)]
struct LoginQuery {
    next: Option<String>,
}

/// `GET /auth/dingtalk/login?next=/path`: the 免登 page. `requestAuthCode` names the
/// organisation (`corp_id`) and the app (`app_key`, DingTalk's Client ID); the page loads
/// the JSAPI from `dingtalk.jsapi_url`. `next` is made a local path here, as every sign-in
/// does, before it reaches the page.
async fn login(State(s): State<AppState>, ApiQuery(q): ApiQuery<LoginQuery>) -> PageResult {
    let w = web(&s)?;
    let Some(cfg) = s.config.dingtalk.as_ref() else {
        return Err(Error::NotFound {
            what: "DingTalk sign-in",
        }
        .into());
    };
    if w.corp_id.is_empty() {
        return Ok(message_page(
            StatusCode::SERVICE_UNAVAILABLE,
            "无法登录",
            "本服务尚未配置钉钉企业编号，请联系管理员。",
        ));
    }
    let next = session::safe_next(q.next.as_deref());
    Ok(Html {
        title: "钉钉登录".into(),
        page: "dingtalk-login",
        main_attrs: format!(
            " data-corp-id=\"{}\" data-client-id=\"{}\" data-next=\"{}\"",
            escape(&w.corp_id),
            escape(&cfg.app_key),
            escape(&next)
        ),
        body: "<h1>正在登录</h1>\n\
               <p id=\"status\" class=\"notice\" role=\"status\">正在通过钉钉确认您的身份…</p>\n"
            .into(),
        jssdk: Some(cfg.jsapi_url.clone()),
        ..Html::default()
    }
    .into_response(StatusCode::OK))
}

#[derive(Debug, Deserialize)]
struct CodeBody {
    code: String,
}

/// `POST /auth/dingtalk/code`: the 免登 code (5 min, single use) → the session cookie.
/// Only our login page may post it (checked before the code is traded).
async fn sign_in(
    State(s): State<AppState>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<CodeBody>,
) -> Result<Response> {
    let w = web(&s)?;
    if !session::from_our_page(&headers, &s.config.public_url) {
        return Err(Error::Forbidden(
            "登录请求必须来自本站的钉钉登录页面 (cross-site sign-in refused)".into(),
        ));
    }
    if body.code.is_empty() || body.code.len() > 256 {
        return Err(Error::invalid("code is missing"));
    }
    let userid = w
        .userid_for_code(&body.code)
        .await
        .map_err(|e| match e {
            JobError::GiveUp(_) => {
                Error::invalid("登录码无效或已使用，请重新打开页面 (invalid or used sign-in code)")
            }
            other => upstream(other),
        })?
        .ok_or_else(|| {
            Error::Forbidden("仅限本企业成员使用 (members of the organisation only)".into())
        })?;
    let now = s.clock.now_ms();
    let mut tx = s.db.begin().await?;
    let user =
        crate::directory::sync::user_of(&mut tx, &s.default_org.id, Platform::Dingtalk, &userid)
            .await?;
    tx.commit().await?;
    let Some(user) = user else {
        return Err(Error::Forbidden(
            "未找到您的 closeloop 账号，请联系管理员同步通讯录 (no closeloop account for you yet)"
                .into(),
        ));
    };
    let active = sqlx::query("SELECT status FROM users WHERE id = $1")
        .bind(&user)
        .fetch_one(&s.db.pool)
        .await?
        .get::<String, _>("status")
        == "active";
    if !active {
        return Err(Error::Forbidden(
            "该账号已停用 (this account has left)".into(),
        ));
    }
    let (value, _csrf) = session::create(&s.db, now, &s.default_org.id, &user, "dingtalk").await?;
    let secure = s.config.public_url.starts_with("https://");
    Ok((
        StatusCode::NO_CONTENT,
        [(header::SET_COOKIE, session::set_cookie(&value, secure))],
    )
        .into_response())
}

#[derive(Debug, Deserialize)]
struct JsConfigQuery {
    url: String,
}

/// `GET /web/dingtalk/js-config?url=…`: the `dd.config` parameters for the page at `url`.
async fn js_config(
    State(s): State<AppState>,
    _session: Session,
    ApiQuery(q): ApiQuery<JsConfigQuery>,
) -> Result<Json<Value>> {
    let w = web(&s)?;
    if !(q.url.starts_with("http://") || q.url.starts_with("https://")) || q.url.len() > 2048 {
        return Err(Error::invalid(
            "url must be the page's absolute http(s) address",
        ));
    }
    // A URL the signature cannot be computed over is the caller's mistake, not DingTalk's.
    crate::platform::dingtalk::crypto::jsapi_signature("", "", "", &q.url)
        .map_err(|_| Error::invalid("url has an invalid percent-encoded query"))?;
    let cfg = w.js_config(&q.url).await.map_err(upstream)?;
    Ok(Json(serde_json::to_value(cfg).unwrap_or(Value::Null)))
}
