//! `/web/access-requests` — 权限申请: a signed-in member asks for a field reveal, a region
//! or a customer (opened from a customer's page, which names the customer) with a reason,
//! and sees their requests, what waits for their decision and the grants they hold.
//! `/web/access-requests/{id}` is the request the approver's card links to: its requester
//! and its approver may open it, only the approver gets 同意 and 拒绝, and the requester may
//! withdraw it (撤回申请) while it is pending. The forms are
//! plain HTML posts carrying the session's CSRF token; the rules are in
//! `approvals::requests`.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;
use sqlx::Row;

use crate::access::Actor;
use crate::approvals::requests::{self, NewRequest, FIELDS};
use crate::error::{Error, Result};
use crate::http::pages::people::{csrf_field, csrf_ok, stale_form, value};
use crate::http::pages::session::Session;
use crate::http::pages::sidebar::{
    enc, escape, form_pairs, message_page, not_signed_in, org_timezone, redirect, Html, PageError,
    PageResult,
};
use crate::http::AppState;
use crate::policy::Who;
use crate::text::time_short;

const HOME: &str = "/web/access-requests";
/// Requests listed per section.
const LISTED: i64 = 50;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/web/access-requests", get(overview).post(create)) // HOME, spelled out for the text guard
        .route("/web/access-requests/{id}/decision", post(decide))
        .route("/web/access-requests/{id}/withdraw", post(withdraw))
        .route("/web/access-requests/{id}", get(detail))
}

/// The customer page's link to ask for more about that customer.
pub(crate) fn sidebar_link(customer: &str) -> String {
    format!(
        "<p class=\"meta access-link\"><a href=\"{HOME}?customer={}\">申请更多权限（字段、区域、客户）</a></p>\n",
        enc(customer)
    )
}

#[derive(Debug, Default, Deserialize)]
struct OverviewQuery {
    /// The customer the page was opened from.
    customer: Option<String>,
    /// Set after a request was sent.
    sent: Option<String>,
}

fn page(title: &str, body: String, session: &Session, status: StatusCode) -> Response {
    Html {
        title: title.into(),
        page: "access-requests",
        body,
        csrf: Some(session.csrf_token.clone()),
        signed_in: Some(session.user_name.clone()),
        ..Html::default()
    }
    .into_response(status)
}

fn chinese(e: &Error) -> String {
    match e {
        Error::NotFound { .. } => "未找到该申请".into(),
        other => crate::text::error_for_people(other.code(), &other.to_string()),
    }
}

async fn names(s: &AppState, org: &str) -> Result<std::collections::HashMap<String, String>> {
    Ok(sqlx::query("SELECT id, name FROM users WHERE org_id = $1")
        .bind(org)
        .fetch_all(&s.db.pool)
        .await?
        .iter()
        .map(|r| (r.get("id"), r.get("name")))
        .collect())
}

async fn customer_name(s: &AppState, org: &str, id: &str) -> Result<Option<String>> {
    Ok(
        sqlx::query("SELECT name FROM customers WHERE id = $1 AND org_id = $2")
            .bind(id)
            .bind(org)
            .fetch_optional(&s.db.pool)
            .await?
            .map(|r| r.get("name")),
    )
}

/// One request as a list item: what, its status and when, linking to its page.
async fn item(
    s: &AppState,
    org: &str,
    r: &sqlx::any::AnyRow,
    who: &str,
    tz: chrono_tz::Tz,
) -> Result<String> {
    let id: String = r.get("id");
    let kind: String = r.get("kind");
    let target: String = r.get("target");
    let status: String = r.get("status");
    let customer = if kind == "customer" {
        customer_name(s, org, &target).await?
    } else {
        None
    };
    Ok(format!(
        "<li class=\"access-request\"><a href=\"{HOME}/{}\">{}</a> <span class=\"badge status-{}\">{}</span>\n\
         <div class=\"meta\">{}{}</div></li>\n",
        enc(&id),
        escape(&requests::describe(&kind, &target, customer.as_deref())),
        escape(&status),
        requests::status_label(&status),
        escape(who),
        time_short(r.get("created_at"), tz),
    ))
}

async fn rows(
    s: &AppState,
    org: &str,
    column: &str,
    user: &str,
    pending: bool,
) -> Result<Vec<sqlx::any::AnyRow>> {
    let only = if pending {
        " AND status = 'pending'"
    } else {
        ""
    };
    Ok(sqlx::query(&format!(
        "SELECT id, requester, kind, target, status, created_at FROM access_requests \
         WHERE org_id = $1 AND {column} = $2{only} ORDER BY created_at DESC, id LIMIT $3"
    ))
    .bind(org)
    .bind(user)
    .bind(LISTED)
    .fetch_all(&s.db.pool)
    .await?)
}

fn list(items: Vec<String>, empty: &str) -> String {
    if items.is_empty() {
        format!("<p class=\"empty\">{empty}</p>\n")
    } else {
        format!("<ul class=\"list\">\n{}</ul>\n", items.concat())
    }
}

/// The page: the forms, what waits for me, my requests and my grants; `notice` says how
/// the last submission went (`true`: refused).
async fn render(
    s: &AppState,
    session: &Session,
    customer: Option<&str>,
    notice: Option<(bool, String)>,
    status: StatusCode,
) -> PageResult {
    let org = session.org_id.as_str();
    let me = session.user_id.as_str();
    let tz = org_timezone(s, org).await?;
    let now = s.clock.now_ms();
    let names = names(s, org).await?;
    let name = |id: &str| names.get(id).cloned().unwrap_or_else(|| "未知成员".into());
    let mut body = String::from("<h1>权限申请</h1>\n");
    if let Some((refused, text)) = notice {
        let (class, role) = if refused {
            ("notice error", "alert")
        } else {
            ("notice", "status")
        };
        body.push_str(&format!(
            "<p id=\"notice\" class=\"{class}\" role=\"{role}\">{}</p>\n",
            escape(&text)
        ));
    }
    let mut conn = s.db.pool.acquire().await.map_err(Error::from)?;
    if requests::active_pause(&mut conn, org, me).await?.is_some() {
        body.push_str(&format!(
            "<p class=\"banner frozen\">{}。</p>\n",
            requests::PAUSED
        ));
    }
    drop(conn);

    let csrf = csrf_field(session);
    let reason = "<label class=\"field\"><span>理由 <em class=\"required\">必填</em></span>\
                  <input type=\"text\" name=\"reason\" maxlength=\"500\" required></label>\n";
    let mut options = String::new();
    for (key, label) in FIELDS {
        options.push_str(&format!("<option value=\"{key}\">{label}</option>"));
    }
    body.push_str(&format!(
        "<section id=\"new-request\">\n<h2>申请更多权限</h2>\n\
         <form method=\"post\" action=\"{HOME}\" class=\"access-form\" data-kind=\"field\">\n{csrf}\
         <input type=\"hidden\" name=\"kind\" value=\"field\">\n\
         <label class=\"field\"><span>查看字段</span><select name=\"target\" required>{options}</select></label>\n\
         {reason}<button type=\"submit\" class=\"action\">申请查看字段</button>\n</form>\n\
         <form method=\"post\" action=\"{HOME}\" class=\"access-form\" data-kind=\"region\">\n{csrf}\
         <input type=\"hidden\" name=\"kind\" value=\"region\">\n\
         <label class=\"field\"><span>区域名称</span><input type=\"text\" name=\"target\" maxlength=\"64\" required></label>\n\
         {reason}<button type=\"submit\" class=\"action\">申请区域</button>\n</form>\n"
    ));
    let named = match customer {
        Some(c) => customer_name(s, org, c).await?.map(|n| (c, n)),
        None => None,
    };
    match named {
        Some((id, customer_name)) => body.push_str(&format!(
            "<form method=\"post\" action=\"{HOME}\" class=\"access-form\" data-kind=\"customer\">\n{csrf}\
             <input type=\"hidden\" name=\"kind\" value=\"customer\">\n\
             <input type=\"hidden\" name=\"target\" value=\"{}\">\n\
             <p class=\"meta\">客户：{}</p>\n\
             {reason}<button type=\"submit\" class=\"action\">申请该客户</button>\n</form>\n",
            escape(id),
            escape(&customer_name)
        )),
        None => body.push_str("<p class=\"meta\">申请某个客户：请从该客户页面的链接进入。</p>\n"),
    }
    body.push_str("</section>\n");

    let mut waiting = Vec::new();
    for r in rows(s, org, "approver", me, true).await? {
        let requester: String = r.get("requester");
        waiting.push(item(s, org, &r, &format!("{} · ", name(&requester)), tz).await?);
    }
    body.push_str(&format!(
        "<section id=\"to-decide\">\n<h2>待我审批</h2>\n{}</section>\n",
        list(waiting, "暂无待您审批的申请。")
    ));
    let mut mine = Vec::new();
    for r in rows(s, org, "requester", me, false).await? {
        mine.push(item(s, org, &r, "", tz).await?);
    }
    body.push_str(&format!(
        "<section id=\"mine\">\n<h2>我的申请</h2>\n{}</section>\n",
        list(mine, "您还没有提交过权限申请。")
    ));
    let mut conn = s.db.pool.acquire().await.map_err(Error::from)?;
    let grants = crate::approvals::grants_for(&mut conn, org, me, now).await?;
    drop(conn);
    let mut held = Vec::new();
    for g in &grants {
        let customer = if g.kind == "customer" {
            customer_name(s, org, &g.target).await?
        } else {
            None
        };
        let until = g.expires_at.map_or("长期有效".to_string(), |t| {
            format!("有效期至 {}", time_short(t, tz))
        });
        held.push(format!(
            "<li class=\"grant\">{} <span class=\"meta\">{until}</span></li>\n",
            escape(&requests::describe(&g.kind, &g.target, customer.as_deref()))
        ));
    }
    body.push_str(&format!(
        "<section id=\"grants\">\n<h2>我的有效授权</h2>\n{}</section>\n",
        list(held, "暂无有效授权。")
    ));
    Ok(page("权限申请", body, session, status))
}

/// `GET /web/access-requests`.
async fn overview(
    State(s): State<AppState>,
    headers: HeaderMap,
    session: Result<Session>,
    Query(q): Query<OverviewQuery>,
) -> PageResult {
    let session = match session {
        Ok(session) => session,
        Err(e) => return Ok(not_signed_in(&s, &headers, e, HOME)),
    };
    let notice = q
        .sent
        .is_some()
        .then(|| (false, "申请已提交，已通知审批人。".to_string()));
    render(&s, &session, q.customer.as_deref(), notice, StatusCode::OK).await
}

/// `POST /web/access-requests`: the signed-in member's request.
async fn create(
    State(s): State<AppState>,
    headers: HeaderMap,
    session: Result<Session>,
    body: Bytes,
) -> PageResult {
    let session = match session {
        Ok(session) => session,
        Err(e) => return Ok(not_signed_in(&s, &headers, e, HOME)),
    };
    let form = form_pairs(&body);
    if !csrf_ok(&session, &headers, &form) {
        return Ok(stale_form());
    }
    let new = NewRequest {
        actor: Some(session.user_id.clone()),
        kind: value(&form, "kind").unwrap_or_default().to_string(),
        target: value(&form, "target").unwrap_or_default().to_string(),
        reason: value(&form, "reason").unwrap_or_default().to_string(),
    };
    let customer = (new.kind == "customer").then(|| new.target.clone());
    if new.reason.trim().is_empty() {
        let text = "请填写申请理由".to_string();
        return render(
            &s,
            &session,
            customer.as_deref(),
            Some((true, text)),
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
    }
    let rules = s.rules.current(&session.org_id).await?;
    match requests::create(
        &s.db,
        &s.cipher,
        &rules,
        s.clock.now_ms(),
        &session.org_id,
        &Actor::user(&session.user_id),
        &new,
    )
    .await
    {
        Ok(_) => Ok(redirect(&format!("{HOME}?sent=1"))),
        Err(Error::Internal(e)) => Err(PageError(Error::Internal(e))),
        Err(e) => {
            let status = e.status();
            render(
                &s,
                &session,
                customer.as_deref(),
                Some((true, chinese(&e))),
                status,
            )
            .await
        }
    }
}

/// `GET /web/access-requests/{id}`: the request, for its requester and its approver; the
/// approver decides it here.
async fn detail(
    State(s): State<AppState>,
    headers: HeaderMap,
    session: Result<Session>,
    Path(id): Path<String>,
) -> PageResult {
    let id = crate::validate::id("request", &id).map_err(|_| Error::NotFound {
        what: "access request",
    })?;
    let here = format!("{HOME}/{}", enc(&id));
    let session = match session {
        Ok(session) => session,
        Err(e) => return Ok(not_signed_in(&s, &headers, e, &here)),
    };
    let org = session.org_id.as_str();
    let me = session.user_id.as_str();
    let r = match requests::get(&s.db, &s.cipher, org, &id).await {
        Ok(r) => r,
        Err(e @ Error::NotFound { .. }) => {
            return Ok(message_page(StatusCode::NOT_FOUND, "未找到", &chinese(&e)))
        }
        Err(e) => return Err(e.into()),
    };
    if me != r.approver && me != r.requester {
        return Ok(message_page(
            StatusCode::FORBIDDEN,
            "无权查看",
            "只有申请人和审批人可以查看此申请。",
        ));
    }
    let tz = org_timezone(&s, org).await?;
    let names = names(&s, org).await?;
    let name = |id: &str| names.get(id).cloned().unwrap_or_else(|| "未知成员".into());
    let customer = if r.kind == "customer" {
        customer_name(&s, org, &r.target).await?
    } else {
        None
    };
    let ms = |t: &str| {
        chrono::DateTime::parse_from_rfc3339(t)
            .map(|d| time_short(d.timestamp_millis(), tz))
            .unwrap_or_default()
    };
    let mut rows = vec![
        ("申请人", name(&r.requester)),
        (
            "申请内容",
            requests::describe(&r.kind, &r.target, customer.as_deref()),
        ),
        ("理由", r.reason.clone()),
        (
            "审批人",
            format!("{}（{}）", name(&r.approver), r.approver_why.label()),
        ),
        ("状态", requests::status_label(&r.status).to_string()),
        ("申请时间", ms(&r.created_at)),
    ];
    if let Some(decided) = &r.decided_at {
        let by = r.decided_by.as_deref().map_or_else(
            || "管理员".to_string(),
            |d| names.get(d).cloned().unwrap_or_else(|| "管理员".into()),
        );
        rows.push(("处理人", by));
        rows.push(("处理时间", ms(decided)));
    }
    if let Some(expires) = &r.expires_at {
        rows.push(("有效期至", ms(expires)));
    }
    let mut body = String::from("<p class=\"meta\"><a href=\"/web/access-requests\">权限申请</a></p>\n<h1>权限申请详情</h1>\n<dl class=\"access-request\">\n");
    for (label, v) in rows {
        body.push_str(&format!("<dt>{label}</dt><dd>{}</dd>\n", escape(&v)));
    }
    body.push_str("</dl>\n");
    if r.status == "pending" {
        if me == r.approver {
            body.push_str(&format!(
                "<form method=\"post\" action=\"{here}/decision\" class=\"access-decision\">\n{}\
                 <button type=\"submit\" name=\"decision\" value=\"approve\" class=\"action\">同意</button>\n\
                 <button type=\"submit\" name=\"decision\" value=\"refuse\" class=\"danger\">拒绝</button>\n</form>\n",
                csrf_field(&session)
            ));
        } else {
            body.push_str(&format!(
                "<p class=\"meta readonly\">等待审批人处理。</p>\n\
                 <form method=\"post\" action=\"{here}/withdraw\" class=\"access-withdraw\">\n{}\
                 <button type=\"submit\" class=\"danger\">撤回申请</button>\n</form>\n",
                csrf_field(&session)
            ));
        }
    }
    Ok(page("权限申请详情", body, &session, StatusCode::OK))
}

/// `POST /web/access-requests/{id}/decision`: 同意 or 拒绝, by the approver only.
async fn decide(
    State(s): State<AppState>,
    headers: HeaderMap,
    session: Result<Session>,
    Path(id): Path<String>,
    body: Bytes,
) -> PageResult {
    let here = format!("{HOME}/{}", enc(&id));
    let session = match session {
        Ok(session) => session,
        Err(e) => return Ok(not_signed_in(&s, &headers, e, &here)),
    };
    let form = form_pairs(&body);
    if !csrf_ok(&session, &headers, &form) {
        return Ok(stale_form());
    }
    let approve = match value(&form, "decision") {
        Some("approve") => true,
        Some("refuse") => false,
        _ => {
            return Ok(message_page(
                StatusCode::UNPROCESSABLE_ENTITY,
                "提交无效",
                "请选择同意或拒绝。",
            ))
        }
    };
    let rules = s.rules.current(&session.org_id).await?;
    match requests::decide(
        &s.db,
        &s.cipher,
        &rules,
        s.clock.now_ms(),
        &session.org_id,
        &Actor::user(&session.user_id),
        Who::Person(&session.user_id),
        &id,
        approve,
    )
    .await
    {
        Ok(_) => Ok(redirect(&here)),
        Err(Error::Forbidden(_)) => Ok(message_page(
            StatusCode::FORBIDDEN,
            "无权审批",
            "只有该申请的审批人可以同意或拒绝。",
        )),
        Err(Error::Conflict(_)) => Ok(message_page(
            StatusCode::CONFLICT,
            "申请已处理",
            "该申请已处理，请刷新页面查看结果。",
        )),
        Err(e @ Error::NotFound { .. }) => {
            Ok(message_page(StatusCode::NOT_FOUND, "未找到", &chinese(&e)))
        }
        Err(e) => Err(e.into()),
    }
    .map(IntoResponse::into_response)
}

/// `POST /web/access-requests/{id}/withdraw`: the requester withdraws a pending request.
async fn withdraw(
    State(s): State<AppState>,
    headers: HeaderMap,
    session: Result<Session>,
    Path(id): Path<String>,
    body: Bytes,
) -> PageResult {
    let here = format!("{HOME}/{}", enc(&id));
    let session = match session {
        Ok(session) => session,
        Err(e) => return Ok(not_signed_in(&s, &headers, e, &here)),
    };
    if !csrf_ok(&session, &headers, &form_pairs(&body)) {
        return Ok(stale_form());
    }
    match requests::withdraw(
        &s.db,
        &s.cipher,
        s.clock.now_ms(),
        &session.org_id,
        &Actor::user(&session.user_id),
        Who::Person(&session.user_id),
        &id,
    )
    .await
    {
        Ok(_) => Ok(redirect(&here)),
        Err(Error::Forbidden(_)) => Ok(message_page(
            StatusCode::FORBIDDEN,
            "无权撤回",
            "只有申请人可以撤回此申请。",
        )),
        Err(Error::Conflict(_)) => Ok(message_page(
            StatusCode::CONFLICT,
            "申请已处理",
            "该申请已处理，请刷新页面查看结果。",
        )),
        Err(e @ Error::NotFound { .. }) => {
            Ok(message_page(StatusCode::NOT_FOUND, "未找到", &chinese(&e)))
        }
        Err(e) => Err(e.into()),
    }
}
