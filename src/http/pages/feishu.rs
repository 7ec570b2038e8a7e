//! The Feishu H5 app (docs/protocols/feishu.md#h5-app-jsapi-and-oauth): OAuth sign-in and
//! `h5sdk.config` signatures from a cached JSAPI ticket.
//!
//! - `GET /auth/feishu/login?next=/path` → Feishu's authorize page on `accounts_base`.
//! - `GET /auth/feishu/callback?code=…&state=…` → code → user access token
//!   (`authen/v2/oauth/token`) → member (`authen/v1/user_info`) → session cookie.
//! - `GET /web/feishu/js-config?url=…` (signed in) → `{appId, timestamp, nonceStr, signature}`
//!   with a millisecond timestamp, as the official sample signs.
//!
//! Tokens, tickets and the app secret never appear in logs or errors.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{Json, Router};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{json, Value};
use sqlx::Row;

use crate::chat::event::Platform;
use crate::clock::SharedClock;
use crate::config::FeishuConfig;
use crate::error::{Error, Result};
use crate::http::pages::session::{self, Session};
use crate::http::{ApiQuery, AppState};
use crate::jobs::JobError;
use crate::platform::crypto::random_nonce;
use crate::platform::feishu::token::{FeishuApi, FeishuError};

pub const AUTHORIZE: &str = "/open-apis/authen/v1/authorize";
pub const OAUTH_TOKEN: &str = "/open-apis/authen/v2/oauth/token";
pub const USER_INFO: &str = "/open-apis/authen/v1/user_info";
pub const JSAPI_TICKET: &str = "/open-apis/jssdk/ticket/get";
/// Renew the ticket when less than this is left of it.
const TICKET_MARGIN_MS: i64 = 5 * 60 * 1000;

/// What the H5 endpoints need: the tenant-token API, the OAuth client, and the ticket.
pub struct FeishuWeb {
    pub api: FeishuApi,
    pub clock: SharedClock,
    pub app_id: String,
    app_secret: SecretString,
    api_base: String,
    accounts_base: String,
    client: reqwest::Client,
    ticket: tokio::sync::Mutex<Option<(SecretString, i64)>>,
}

/// Who a sign-in code belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeishuMember {
    pub user_id: Option<String>,
    pub open_id: Option<String>,
}

impl FeishuWeb {
    /// `api` is the app's one API client, so sign-in shares the jobs' token cache.
    pub fn from_config(
        cfg: &FeishuConfig,
        api: FeishuApi,
        client: reqwest::Client,
        clock: SharedClock,
    ) -> Self {
        FeishuWeb {
            api,
            clock,
            app_id: cfg.app_id.clone(),
            app_secret: SecretString::from(cfg.app_secret.expose().to_string()),
            api_base: cfg.api_base.trim_end_matches('/').to_string(),
            accounts_base: cfg.accounts_base.trim_end_matches('/').to_string(),
            client,
            ticket: tokio::sync::Mutex::new(None),
        }
    }

    /// Feishu's authorize page, coming back to `redirect_uri` with `code` and `state`.
    pub fn authorize_url(&self, redirect_uri: &str, state: &str) -> String {
        let base = format!("{}{AUTHORIZE}", self.accounts_base);
        match reqwest::Url::parse_with_params(
            &base,
            &[
                ("client_id", self.app_id.as_str()),
                ("redirect_uri", redirect_uri),
                ("response_type", "code"),
                ("state", state),
            ],
        ) {
            Ok(url) => url.to_string(),
            Err(_) => base,
        }
    }

    /// The app's JSAPI ticket, cached while valid (one request at a time).
    async fn ticket(&self) -> Result<SecretString, JobError> {
        let mut cached = self.ticket.lock().await;
        let now = self.clock.now_ms();
        if let Some((ticket, expires)) = cached.as_ref() {
            if expires - TICKET_MARGIN_MS > now {
                return Ok(ticket.clone());
            }
        }
        let answer = self
            .api
            .call_json(reqwest::Method::POST, JSAPI_TICKET, &[], Some(&json!({})))
            .await?;
        let ticket = answer["data"]["ticket"]
            .as_str()
            .filter(|t| !t.is_empty())
            .ok_or_else(|| JobError::Retry("Feishu answered without a JSAPI ticket".into()))?;
        let ticket = SecretString::from(ticket.to_string());
        let expire_in = answer["data"]["expire_in"].as_i64().unwrap_or(7200);
        *cached = Some((ticket.clone(), now + expire_in * 1000));
        Ok(ticket)
    }

    /// The `h5sdk.config` parameters for the page at `url`.
    pub async fn js_config(&self, url: &str) -> Result<Value, JobError> {
        let ticket = self.ticket().await?;
        let nonce = random_nonce();
        let ts = self.clock.now_ms();
        let signature = crate::platform::feishu::crypto::jsapi_signature(
            ticket.expose_secret(),
            &nonce,
            &ts.to_string(),
            url,
        );
        Ok(json!({
            "appId": self.app_id,
            "timestamp": ts,
            "nonceStr": nonce,
            "signature": signature,
        }))
    }

    /// The member a sign-in code belongs to. A refused code is `GiveUp`; an unreachable
    /// Feishu is `Retry`.
    pub async fn member_for_code(
        &self,
        code: &str,
        redirect_uri: &str,
    ) -> Result<FeishuMember, JobError> {
        let answer = send(
            self.client
                .post(format!("{}{OAUTH_TOKEN}", self.api_base))
                .json(&json!({
                    "grant_type": "authorization_code",
                    "client_id": self.app_id,
                    "client_secret": self.app_secret.expose_secret(),
                    "code": code,
                    "redirect_uri": redirect_uri,
                })),
        )
        .await?;
        let status = answer["code"].as_i64().unwrap_or(-1);
        let token = match answer["access_token"].as_str() {
            Some(t) if status == 0 && !t.is_empty() => SecretString::from(t.to_string()),
            _ => {
                // Feishu's `error` names the reason (e.g. invalid_grant); never the code itself.
                tracing::warn!(
                    platform = "feishu",
                    code = status,
                    error = answer["error"].as_str().unwrap_or_default(),
                    "Feishu refused a sign-in code"
                );
                return Err(JobError::GiveUp(format!(
                    "Feishu refused the sign-in code (code {status})"
                )));
            }
        };
        let info = send(
            self.client
                .get(format!("{}{USER_INFO}", self.api_base))
                .bearer_auth(token.expose_secret()),
        )
        .await?;
        let status = info["code"].as_i64().unwrap_or(-1);
        if status != 0 {
            return Err(JobError::Retry(format!(
                "Feishu user_info failed (code {status})"
            )));
        }
        let id = |k: &str| {
            info["data"][k]
                .as_str()
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
        };
        Ok(FeishuMember {
            user_id: id("user_id"),
            open_id: id("open_id"),
        })
    }
}

/// Sends and reads a JSON answer; transport errors without their URL.
async fn send(req: reqwest::RequestBuilder) -> Result<Value, JobError> {
    let res = req.send().await.map_err(|e| {
        JobError::from(FeishuError::Transient(if e.is_timeout() {
            "timed out".into()
        } else {
            "transport error".into()
        }))
    })?;
    let status = res.status();
    if status.is_server_error() {
        return Err(JobError::Retry(format!("Feishu answered HTTP {status}")));
    }
    res.json::<Value>()
        .await
        .map_err(|_| JobError::Retry(format!("Feishu answered HTTP {status} without JSON")))
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/auth/feishu/login", get(login))
        .route("/auth/feishu/callback", get(callback))
        .route("/web/feishu/js-config", get(js_config))
}

fn web(s: &AppState) -> Result<&Arc<FeishuWeb>> {
    s.feishu_web.as_ref().ok_or(Error::NotFound {
        what: "Feishu sign-in",
    })
}

fn upstream(e: JobError) -> Error {
    tracing::warn!(error = %e, "Feishu call failed during a browser request");
    Error::Unavailable("飞书暂时无法响应，请稍后重试 (Feishu is not answering; try again)".into())
}

fn secure(s: &AppState) -> bool {
    s.config.public_url.starts_with("https://")
}

fn redirect_uri(s: &AppState) -> String {
    format!(
        "{}/auth/feishu/callback",
        s.config.public_url.trim_end_matches('/')
    )
}

#[derive(Debug, Deserialize)]
struct LoginQuery {
    next: Option<String>,
}

/// `GET /auth/feishu/login?next=/path`: off to Feishu's authorize page.
async fn login(
    State(s): State<AppState>,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<LoginQuery>,
) -> Result<Response> {
    let w = web(&s)?;
    let next = session::safe_next(q.next.as_deref());
    let (browser, set_cookie) = session::signin_binding(&headers, secure(&s));
    let state = session::new_oauth_state(&s.db, s.clock.now_ms(), &next, &browser).await?;
    Ok((
        [(header::SET_COOKIE, set_cookie)],
        Redirect::to(&w.authorize_url(&redirect_uri(&s), &state)),
    )
        .into_response())
}

#[derive(Debug, Deserialize)]
struct CallbackQuery {
    code: String,
    state: String,
}

/// `GET /auth/feishu/callback?code=…&state=…`: code → member → session cookie, only in
/// the browser that started the sign-in.
async fn callback(
    State(s): State<AppState>,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<CallbackQuery>,
) -> Result<Response> {
    let w = web(&s)?;
    let now = s.clock.now_ms();
    let next = match session::take_oauth_state(&s.db, now, &q.state, &headers, secure(&s)).await? {
        session::OAuthState::Next(next) => next,
        session::OAuthState::OtherBrowser => return Ok(session::other_browser_page()),
    };
    if q.code.is_empty() || q.code.len() > 512 {
        return Err(Error::invalid("code is missing"));
    }
    let member = w
        .member_for_code(&q.code, &redirect_uri(&s))
        .await
        .map_err(|e| match e {
            JobError::GiveUp(_) => {
                Error::invalid("登录码无效或已使用，请重新打开页面 (invalid or used sign-in code)")
            }
            other => upstream(other),
        })?;
    if member.user_id.is_none() && member.open_id.is_none() {
        return Err(Error::Forbidden(
            "仅限本企业成员使用 (members of the organisation only)".into(),
        ));
    }
    let org = &s.default_org.id;
    let mut tx = s.db.begin().await?;
    let mut user = None;
    if let Some(user_id) = &member.user_id {
        user = crate::directory::sync::user_of(&mut tx, org, Platform::Feishu, user_id).await?;
    }
    if let (None, Some(open_id)) = (&user, &member.open_id) {
        user = sqlx::query(
            "SELECT user_id FROM user_identities WHERE org_id = $1 AND platform = $2 AND kind = 'open_id' AND value = $3",
        )
        .bind(org)
        .bind(Platform::Feishu.as_str())
        .bind(open_id)
        .fetch_optional(&mut *tx)
        .await?
        .map(|r| r.get::<String, _>("user_id"));
    }
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
    let (value, _csrf) = session::create(&s.db, now, org, &user, "feishu").await?;
    Ok((
        StatusCode::SEE_OTHER,
        [
            (header::SET_COOKIE, session::set_cookie(&value, secure(&s))),
            (header::LOCATION, next),
        ],
    )
        .into_response())
}

#[derive(Debug, Deserialize)]
struct JsConfigQuery {
    url: String,
}

/// `GET /web/feishu/js-config?url=…`: the `h5sdk.config` parameters for the page at `url`.
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
    Ok(Json(w.js_config(&q.url).await.map_err(upstream)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_authorize_url_encodes_its_parameters() {
        let cfg: FeishuConfig = serde_json::from_value(json!({
            "app_id": "cli_x",
            "app_secret": "s",
            "accounts_base": "https://accounts.example.com/",
        }))
        .unwrap();
        let clock: SharedClock = std::sync::Arc::new(crate::clock::SystemClock);
        let client = reqwest::Client::new();
        let api = FeishuApi::from_config(&cfg, client.clone(), clock.clone());
        let web = FeishuWeb::from_config(&cfg, api, client, clock);
        let url = web.authorize_url("https://cl.example.com/auth/feishu/callback", "a+b/c");
        assert_eq!(
            url,
            "https://accounts.example.com/open-apis/authen/v1/authorize?client_id=cli_x\
             &redirect_uri=https%3A%2F%2Fcl.example.com%2Fauth%2Ffeishu%2Fcallback\
             &response_type=code&state=a%2Bb%2Fc"
        );
    }
}
