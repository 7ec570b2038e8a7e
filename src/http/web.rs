//! Browser endpoints: platform sign-in, the session, and what the sidebar page's
//! JavaScript asks for (JS-SDK signatures, the customer behind the open chat).

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;
use sqlx::Row;

use super::{ApiQuery, AppState};
use crate::chat::event::Platform;
use crate::error::{Error, Result};
use crate::http::pages::session::{self, Session};
use crate::jobs::JobError;
use crate::platform::wecom::jsapi::{self, WecomWeb};

fn wecom(s: &AppState) -> Result<&WecomWeb> {
    s.wecom_web.as_deref().ok_or(Error::NotFound {
        what: "WeCom sign-in",
    })
}

/// A platform call failed while a person waits: say so plainly, keep details in the log.
fn upstream(e: JobError) -> Error {
    tracing::warn!(error = %e, "platform call failed during a browser request");
    Error::Unavailable(
        "企业微信暂时无法响应，请稍后重试 (WeCom is not answering; try again)".into(),
    )
}

fn secure(s: &AppState) -> bool {
    s.config.public_url.starts_with("https://")
}

#[derive(Debug, Deserialize)]
pub struct LoginQuery {
    next: Option<String>,
}

/// `GET /auth/wecom/login?next=/path`: off to WeCom's OAuth2 page.
pub async fn wecom_login(
    State(s): State<AppState>,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<LoginQuery>,
) -> Result<Response> {
    let w = wecom(&s)?;
    let next = session::safe_next(q.next.as_deref());
    let (browser, set_cookie) = session::signin_binding(&headers, secure(&s));
    let state = session::new_oauth_state(&s.db, s.clock.now_ms(), &next, &browser).await?;
    let redirect_uri = format!(
        "{}/auth/wecom/callback",
        s.config.public_url.trim_end_matches('/')
    );
    Ok((
        [(header::SET_COOKIE, set_cookie)],
        Redirect::to(&jsapi::authorize_url(
            &w.oauth_base,
            &w.corp_id,
            &w.agent_id,
            &redirect_uri,
            &state,
        )),
    )
        .into_response())
}

#[derive(Debug, Deserialize)]
pub struct CallbackQuery {
    code: String,
    state: String,
}

/// `GET /auth/wecom/callback?code=…&state=…`: code → member → session cookie, only in
/// the browser that started the sign-in.
pub async fn wecom_callback(
    State(s): State<AppState>,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<CallbackQuery>,
) -> Result<Response> {
    let w = wecom(&s)?;
    let now = s.clock.now_ms();
    let next = match session::take_oauth_state(&s.db, now, &q.state, &headers, secure(&s)).await? {
        session::OAuthState::Next(next) => next,
        session::OAuthState::OtherBrowser => return Ok(session::other_browser_page()),
    };
    let userid = jsapi::userid_for_code(&w.api, &q.code)
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
    let mut tx = s.db.begin().await?;
    let user =
        crate::directory::sync::user_of(&mut tx, &s.default_org.id, Platform::Wecom, &userid)
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
    let (value, _csrf) = session::create(&s.db, now, &s.default_org.id, &user, "wecom").await?;
    Ok((
        StatusCode::SEE_OTHER,
        [
            (header::SET_COOKIE, session::set_cookie(&value, secure(&s))),
            (header::LOCATION, next),
        ],
    )
        .into_response())
}

/// `GET /web/session`: who is signed in, and the CSRF token for state-changing calls.
/// Same-origin only (no CORS), so another site cannot read the token.
pub async fn current(session: Session) -> Json<serde_json::Value> {
    Json(json!({"user_id": session.user_id, "csrf_token": session.csrf_token}))
}

/// `POST /auth/logout` (needs `X-CSRF-Token`).
pub async fn logout(
    State(s): State<AppState>,
    session: Session,
    headers: HeaderMap,
) -> Result<Response> {
    session.require_csrf(&headers)?;
    if let Some(value) = session::cookie_value(&headers) {
        session::delete(&s.db, &value).await?;
    }
    Ok((
        StatusCode::NO_CONTENT,
        [(header::SET_COOKIE, session::clear_cookie(secure(&s)))],
    )
        .into_response())
}

#[derive(Debug, Deserialize)]
pub struct JsConfigQuery {
    url: String,
}

/// `GET /web/wecom/js-config?url=…`: `wx.config` and `wx.agentConfig` signatures for the
/// page at `url`.
pub async fn wecom_js_config(
    State(s): State<AppState>,
    _session: Session,
    ApiQuery(q): ApiQuery<JsConfigQuery>,
) -> Result<Json<jsapi::JsConfig>> {
    let w = wecom(&s)?;
    if !(q.url.starts_with("http://") || q.url.starts_with("https://")) || q.url.len() > 2048 {
        return Err(Error::invalid(
            "url must be the page's absolute http(s) address",
        ));
    }
    let cfg = jsapi::js_config(
        &w.tickets,
        &w.corp_id,
        &w.agent_id,
        s.clock.now_ms() / 1000,
        &q.url,
    )
    .await
    .map_err(upstream)?;
    Ok(Json(cfg))
}

#[derive(Debug, Deserialize)]
pub struct ExternalQuery {
    external_userid: String,
}

/// `GET /web/wecom/customer?external_userid=…`: the customer behind the chat the sidebar
/// is open on (`getCurExternalContact`).
pub async fn wecom_customer(
    State(s): State<AppState>,
    session: Session,
    ApiQuery(q): ApiQuery<ExternalQuery>,
) -> Result<Json<serde_json::Value>> {
    let row = sqlx::query(
        "SELECT e.customer_id, c.name FROM customer_external_ids e JOIN customers c ON c.id = e.customer_id \
         WHERE e.org_id = $1 AND e.platform = 'wecom' AND e.external_user_id = $2",
    )
    .bind(&session.org_id)
    .bind(&q.external_userid)
    .fetch_optional(&s.db.pool)
    .await?
    .ok_or(Error::NotFound { what: "customer" })?;
    Ok(Json(
        json!({"customer_id": row.get::<String, _>("customer_id"), "name": row.get::<String, _>("name")}),
    ))
}
