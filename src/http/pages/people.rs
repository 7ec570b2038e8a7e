//! `/admin/people` — 管理 → 人员与角色: the members with their closeloop roles and direct
//! superiors, and who answers each customer's presales, delivery and finance requests.
//! Only active members holding the `admin` role see or change it (decided in src/access/).
//! Every change goes through the domain functions the API and `closeloop users` use, each
//! audited as the signed-in member. The forms are plain HTML posts carrying the session's
//! CSRF token, so the page needs no script.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;
use subtle::ConstantTimeEq;

use crate::access::{Actor, WHERE_ROLES_ARE_SET};
use crate::collab::assignments::{self, ASSIGNED_ROLES};
use crate::directory::users::{self, User, UserPatch};
use crate::error::{Error, Result};
use crate::http::pages::session::Session;
use crate::http::pages::sidebar::{
    enc, escape, form_pairs, message_page, not_signed_in, redirect, Html, PageError, PageResult,
};
use crate::http::AppState;
use crate::policy::Grant;
use crate::text::role_label;

const HOME: &str = "/admin/people";
const CUSTOMERS_PER_PAGE: i64 = 50;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/admin/people", get(overview)) // HOME, spelled out: the text guard reads routes from the source
        .route("/admin/people/{kind}/{id}", get(detail_page))
        .route("/admin/people/members/{id}/{what}", post(save_member))
        .route(
            "/admin/people/customers/{id}/assignments/{role}",
            post(save_assignment),
        )
}

fn member_path(id: &str) -> String {
    format!("{HOME}/members/{}", enc(id))
}

fn customer_path(id: &str) -> String {
    format!("{HOME}/customers/{}", enc(id))
}

#[derive(Debug, Deserialize)]
struct PageQuery {
    /// Customers skipped (the overview's paging).
    from: Option<String>,
    /// Set after a change was saved.
    saved: Option<String>,
}

/// The signed-in admin and their grant, or the page to show instead: the sign-in for
/// someone without a session, a refusal for a member without the `admin` role.
async fn admin(
    s: &AppState,
    headers: &HeaderMap,
    session: Result<Session>,
    here: &str,
) -> std::result::Result<(Session, Grant), Response> {
    require_admin(s, headers, session, here, WHERE_ROLES_ARE_SET).await
}

/// [`admin`] for any admin page; `page` names it in the refusal.
pub(crate) async fn require_admin(
    s: &AppState,
    headers: &HeaderMap,
    session: Result<Session>,
    here: &str,
    page: &str,
) -> std::result::Result<(Session, Grant), Response> {
    let session = session.map_err(|e| not_signed_in(s, headers, e, here))?;
    let grant = match s.db.pool.acquire().await {
        Ok(mut conn) => Grant::of_member(&mut conn, &session.org_id, &session.user_id).await,
        Err(e) => Err(e.into()),
    }
    .map_err(|e| PageError(e).into_response())?;
    if grant == Grant::Refused {
        return Err(message_page(
            StatusCode::FORBIDDEN,
            "仅限管理员",
            &format!("{page} 只对管理员开放，请联系管理员在 {WHERE_ROLES_ARE_SET} 中为您设置管理员角色。"),
        ));
    }
    Ok((session, grant))
}

/// What the page says about the last change.
enum Notice {
    Saved,
    Refused(String),
}

impl Notice {
    fn html(notice: Option<&Notice>) -> String {
        match notice {
            None => String::new(),
            Some(Notice::Saved) => {
                "<p id=\"notice\" class=\"notice\" role=\"status\">已保存。</p>\n".into()
            }
            Some(Notice::Refused(m)) => format!(
                "<p id=\"notice\" class=\"notice error\" role=\"alert\">{}</p>\n",
                escape(m)
            ),
        }
    }
}

/// A refused change in words for the page; anything else is the page's error.
fn refusal(e: Error) -> std::result::Result<(StatusCode, Notice), PageError> {
    let status = e.status();
    let message = match e {
        Error::InvalidInput(_) | Error::MalformedBody(_) => "提交的内容无效，请刷新页面后重试。",
        Error::UnknownReference(_) => "所选的成员或客户不存在，请刷新页面后重试。",
        Error::Conflict(_) => "保存时发生冲突，请刷新页面后重试。",
        Error::Forbidden(_) => "只有管理员可以修改人员与角色。",
        other => return Err(PageError(other)),
    };
    Ok((status, Notice::Refused(message.into())))
}

/// The form's `csrf_token` (or, from a script, `X-CSRF-Token`) must be the session's.
pub(crate) fn csrf_ok(session: &Session, headers: &HeaderMap, form: &[(String, String)]) -> bool {
    match value(form, "csrf_token") {
        Some(t) => t.as_bytes().ct_eq(session.csrf_token.as_bytes()).into(),
        None => session.require_csrf(headers).is_ok(),
    }
}

pub(crate) fn stale_form() -> Response {
    message_page(
        StatusCode::FORBIDDEN,
        "页面已过期",
        "请刷新页面后重新提交。",
    )
}

pub(crate) fn value<'a>(form: &'a [(String, String)], name: &str) -> Option<&'a str> {
    form.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn values(form: &[(String, String)], name: &str) -> Vec<String> {
    form.iter()
        .filter(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
        .collect()
}

pub(crate) fn csrf_field(session: &Session) -> String {
    format!(
        "<input type=\"hidden\" name=\"csrf_token\" value=\"{}\">\n",
        escape(&session.csrf_token)
    )
}

fn status_label(status: &str) -> &'static str {
    if status == "left" {
        "已离职"
    } else {
        "在职"
    }
}

fn source_label(source: &str) -> &'static str {
    if source == "manual" {
        "手动设置，通讯录同步不会覆盖"
    } else {
        "随通讯录同步"
    }
}

/// Names by user id.
fn names(members: &[User]) -> HashMap<&str, &str> {
    members
        .iter()
        .map(|u| (u.id.as_str(), u.name.as_str()))
        .collect()
}

fn name_or_none(names: &HashMap<&str, &str>, id: Option<&String>) -> String {
    id.map_or("未指定".into(), |id| {
        escape(names.get(id.as_str()).copied().unwrap_or("未知成员"))
    })
}

/// The page's head: where it sits and its title (who is signed in is the page frame's).
fn head(title: &str) -> String {
    format!(
        "<p class=\"meta\"><a href=\"{HOME}\">{WHERE_ROLES_ARE_SET}</a> · <a href=\"/admin/rules\">管理 → 规则设置</a></p>\n<h1>{}</h1>\n",
        escape(title)
    )
}

fn page(title: &str, body: String, session: &Session, status: StatusCode) -> Response {
    Html {
        title: title.into(),
        page: "people",
        body,
        csrf: Some(session.csrf_token.clone()),
        signed_in: Some(session.user_name.clone()),
        ..Html::default()
    }
    .into_response(status)
}

// ----------------------------------------------------------------------------------------
// The overview

fn member_item(u: &User, names: &HashMap<&str, &str>) -> String {
    let roles = if u.roles.is_empty() {
        "<span class=\"meta\">无角色</span>".to_string()
    } else {
        u.roles
            .iter()
            .map(|r| format!("<span class=\"badge\">{}</span>", role_label(r)))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let superiors: Vec<String> = u
        .superiors
        .iter()
        .map(|s| escape(names.get(s.as_str()).copied().unwrap_or("未知成员")))
        .collect();
    let superiors = if superiors.is_empty() {
        "无".to_string()
    } else {
        superiors.join("、")
    };
    let department = u
        .department
        .as_deref()
        .map(|d| format!("{} · ", escape(d)))
        .unwrap_or_default();
    format!(
        "<li class=\"member\" data-user=\"{id}\"><a href=\"{path}\">{name}</a> \
         <span class=\"meta\">{department}{status}</span>\n<div class=\"roles\">{roles}</div>\n\
         <div class=\"meta\">直属上级：{superiors}（{source}）</div></li>\n",
        id = escape(&u.id),
        path = member_path(&u.id),
        name = escape(&u.name),
        status = status_label(&u.status),
        source = source_label(&u.superior_source),
    )
}

async fn overview(
    State(s): State<AppState>,
    headers: HeaderMap,
    session: Result<Session>,
    Query(q): Query<PageQuery>,
) -> PageResult {
    let (session, _) = match admin(&s, &headers, session, HOME).await {
        Ok(ok) => ok,
        Err(page) => return Ok(page),
    };
    let from = match q.from.as_deref() {
        None => 0,
        Some(f) => f
            .parse::<i64>()
            .ok()
            .filter(|n| *n >= 0)
            .ok_or_else(|| Error::invalid("页码无效"))?,
    };
    let org = session.org_id.as_str();
    let members = users::all(&s.db, org).await?;
    let names = names(&members);
    let mut people = String::new();
    for u in &members {
        people.push_str(&member_item(u, &names));
    }
    let (customers, more) = assignments::page(&s.db, org, from, CUSTOMERS_PER_PAGE).await?;
    let mut rows = String::new();
    for c in &customers {
        let assigned: Vec<String> = ASSIGNED_ROLES
            .iter()
            .map(|r| {
                format!(
                    "{}：{}",
                    role_label(r),
                    name_or_none(&names, c.assigned.get(*r))
                )
            })
            .collect();
        rows.push_str(&format!(
            "<li class=\"customer\" data-customer=\"{id}\"><a href=\"{path}\">{name}</a> \
             <span class=\"meta\">负责销售：{owner}</span>\n<div class=\"meta\">{assigned}</div></li>\n",
            id = escape(&c.id),
            path = customer_path(&c.id),
            name = escape(&c.name),
            owner = name_or_none(&names, c.owner.as_ref()),
            assigned = assigned.join(" · "),
        ));
    }
    if rows.is_empty() {
        rows = "<li class=\"empty\">还没有客户。</li>\n".into();
    }
    let mut pages = Vec::new();
    if from > 0 {
        pages.push(format!(
            "<a href=\"{HOME}?from={}\">上一页</a>",
            (from - CUSTOMERS_PER_PAGE).max(0)
        ));
    }
    if more {
        pages.push(format!(
            "<a href=\"{HOME}?from={}\">下一页</a>",
            from + CUSTOMERS_PER_PAGE
        ));
    }
    let body = format!(
        "{head}<section id=\"members\"><h2>成员（{count} 人）</h2>\n\
         <p class=\"meta\">角色决定谁接收哪类协作请求、谁能管理他人的商机与冻结；手动设置的直属上级不会被通讯录同步覆盖。</p>\n\
         <ul class=\"list\">\n{people}</ul></section>\n\
         <section id=\"assignments\"><h2>客户负责人</h2>\n\
         <p class=\"meta\">为客户指定售前、交付、财务负责人后，该客户的对应请求直接发给此人；未指定时发给担任该角色的全部成员，先接受者负责。</p>\n\
         <ul class=\"list\">\n{rows}</ul>\n<nav class=\"pages\">{pages}</nav></section>\n",
        head = head("人员与角色"),
        count = members.len(),
        pages = pages.join(" · "),
    );
    Ok(page("人员与角色", body, &session, StatusCode::OK))
}

// ----------------------------------------------------------------------------------------
// A member: roles and superiors

async fn member_view(
    s: &AppState,
    session: &Session,
    id: &str,
    notice: Option<Notice>,
    status: StatusCode,
) -> PageResult {
    let members = users::all(&s.db, &session.org_id).await?;
    let u = members
        .iter()
        .find(|u| u.id == id)
        .ok_or(Error::NotFound { what: "user" })?;
    let path = member_path(&u.id);
    let from_directory = users::directory_roles(&s.db, &u.id).await?;
    let rules = s.rules.current(&session.org_id).await?;
    let mut roles = String::new();
    for role in &rules.roles {
        let r = role.key.as_str();
        let synced = if from_directory.iter().any(|d| d == r) {
            " <span class=\"meta role-synced\">（目录同步：随所在组变化，在此取消后下次同步会恢复）</span>"
        } else {
            ""
        };
        roles.push_str(&format!(
            "<label class=\"check\"><input type=\"checkbox\" name=\"role\" value=\"{r}\"{}> {}</label>{synced}<br>\n",
            if u.roles.iter().any(|h| h == r) { " checked" } else { "" },
            escape(&role.label)
        ));
    }
    let own = if u.id == session.user_id {
        "<p class=\"meta\">取消自己的管理员角色后，您将无法再打开本页。</p>\n"
    } else {
        ""
    };
    let mut candidates = String::new();
    for m in members
        .iter()
        .filter(|m| m.id != u.id && (m.status == "active" || u.superiors.contains(&m.id)))
    {
        let department = m
            .department
            .as_deref()
            .map(|d| format!(" <span class=\"meta\">{}</span>", escape(d)))
            .unwrap_or_default();
        let left = if m.status == "left" {
            " <span class=\"meta\">（已离职）</span>"
        } else {
            ""
        };
        candidates.push_str(&format!(
            "<label class=\"check\"><input type=\"checkbox\" name=\"superior\" value=\"{}\"{}> {}</label>{department}{left}<br>\n",
            escape(&m.id),
            if u.superiors.contains(&m.id) { " checked" } else { "" },
            escape(&m.name),
        ));
    }
    if candidates.is_empty() {
        candidates = "<p class=\"empty\">没有其他成员可选。</p>\n".into();
    }
    let hand_back = if u.superior_source == "manual" {
        format!(
            "<form method=\"post\" action=\"{path}/superiors\" class=\"hand-back\">\n{csrf}\
             <input type=\"hidden\" name=\"source\" value=\"directory\">\n\
             <div class=\"form-actions\"><button type=\"submit\" class=\"cancel\">交回通讯录同步</button></div>\n\
             <p class=\"meta\">交回后，下次通讯录同步将按通讯录中的直属上级重新设置。</p>\n</form>\n",
            csrf = csrf_field(session),
        )
    } else {
        String::new()
    };
    let department = u
        .department
        .as_deref()
        .map_or_else(|| "—".to_string(), escape);
    let body = format!(
        "{head}{notice}<section id=\"facts\"><dl class=\"facts\">\n<dt>部门</dt><dd>{department}</dd>\n\
         <dt>状态</dt><dd>{status}</dd>\n</dl></section>\n\
         <section id=\"roles\"><h2>角色</h2>\n<form method=\"post\" action=\"{path}/roles\">\n{csrf}{roles}{own}\
         <div class=\"form-actions\"><button type=\"submit\" class=\"action\">保存角色</button></div>\n</form></section>\n\
         <section id=\"superiors\"><h2>直属上级</h2>\n<p class=\"meta source\">当前：{source}。</p>\n\
         <form method=\"post\" action=\"{path}/superiors\">\n{csrf}{candidates}\
         <div class=\"form-actions\"><button type=\"submit\" class=\"action\">保存上级</button></div>\n\
         <p class=\"meta\">保存后为手动设置，通讯录同步不再覆盖。</p>\n</form>\n{hand_back}</section>\n\
         <p><a href=\"{HOME}\">返回人员与角色</a></p>\n",
        head = head(&u.name),
        notice = Notice::html(notice.as_ref()),
        status = status_label(&u.status),
        csrf = csrf_field(session),
        source = source_label(&u.superior_source),
    );
    Ok(page(&u.name, body, session, status))
}

// ----------------------------------------------------------------------------------------
// A customer: who answers its requests per role

async fn customer_view(
    s: &AppState,
    session: &Session,
    id: &str,
    notice: Option<Notice>,
    status: StatusCode,
) -> PageResult {
    let org = session.org_id.as_str();
    let c = assignments::of_customer(&s.db, org, id).await?;
    let members = users::all(&s.db, org).await?;
    let names = names(&members);
    let path = customer_path(&c.id);
    let mut sections = String::new();
    for role in ASSIGNED_ROLES {
        let label = role_label(role);
        let current = c.assigned.get(role);
        let mut options = format!(
            "<option value=\"\"{}>未指定（{label}成员中先接受者负责）</option>\n",
            if current.is_none() { " selected" } else { "" }
        );
        let mut holders = 0;
        for m in &members {
            let holds = m.status == "active" && m.roles.iter().any(|r| r == role);
            let is_current = current == Some(&m.id);
            if !holds && !is_current {
                continue;
            }
            holders += usize::from(holds);
            let note = match (holds, m.status.as_str()) {
                (true, _) => String::new(),
                (false, "left") => "（已离职）".into(),
                (false, _) => format!("（未担任{label}）"),
            };
            options.push_str(&format!(
                "<option value=\"{}\"{}>{}{note}</option>\n",
                escape(&m.id),
                if is_current { " selected" } else { "" },
                escape(&m.name),
            ));
        }
        let none = if holders == 0 {
            format!("<p class=\"meta\">还没有成员担任{label}，可在成员页面中设置角色。</p>\n")
        } else {
            String::new()
        };
        sections.push_str(&format!(
            "<section class=\"assignment\" id=\"assign-{role}\"><h2>{label}负责人</h2>\n\
             <form method=\"post\" action=\"{path}/assignments/{role}\">\n{csrf}\
             <label class=\"field\"><span>{label}</span><select name=\"user\">\n{options}</select></label>\n{none}\
             <div class=\"form-actions\"><button type=\"submit\" class=\"action\">保存</button></div>\n</form></section>\n",
            csrf = csrf_field(session),
        ));
    }
    let body = format!(
        "{head}{notice}<section id=\"facts\"><dl class=\"facts\">\n<dt>负责销售</dt><dd>{owner}</dd>\n</dl>\n\
         <p class=\"meta\">指定负责人后，该客户的对应请求直接发给此人；未指定时发给担任该角色的全部成员。</p></section>\n\
         {sections}<p><a href=\"{HOME}\">返回人员与角色</a></p>\n",
        head = head(&c.name),
        notice = Notice::html(notice.as_ref()),
        owner = name_or_none(&names, c.owner.as_ref()),
    );
    Ok(page(&c.name, body, session, status))
}

// ----------------------------------------------------------------------------------------
// Showing a page and applying its forms

/// The page a form belongs to.
#[derive(Debug, Clone, Copy)]
enum Target<'a> {
    Member(&'a str),
    Customer(&'a str),
}

impl Target<'_> {
    fn path(self) -> String {
        match self {
            Target::Member(id) => member_path(id),
            Target::Customer(id) => customer_path(id),
        }
    }

    async fn view(
        self,
        s: &AppState,
        session: &Session,
        notice: Option<Notice>,
        status: StatusCode,
    ) -> PageResult {
        match self {
            Target::Member(id) => member_view(s, session, id, notice, status).await,
            Target::Customer(id) => customer_view(s, session, id, notice, status).await,
        }
    }
}

/// What a form asks for.
enum Edit {
    /// A member's roles or superiors.
    Member { id: String, patch: UserPatch },
    /// A customer's person for a role; `None`: nobody, the role's queue answers.
    Assignment {
        customer: String,
        role: String,
        user: Option<String>,
    },
}

impl Edit {
    fn target(&self) -> Target<'_> {
        match self {
            Edit::Member { id, .. } => Target::Member(id),
            Edit::Assignment { customer, .. } => Target::Customer(customer),
        }
    }
}

async fn show(
    s: &AppState,
    headers: &HeaderMap,
    session: Result<Session>,
    q: PageQuery,
    target: Target<'_>,
) -> PageResult {
    let (session, _) = match admin(s, headers, session, &target.path()).await {
        Ok(ok) => ok,
        Err(page) => return Ok(page),
    };
    let notice = q.saved.is_some().then_some(Notice::Saved);
    target.view(s, &session, notice, StatusCode::OK).await
}

/// Applies a form through the domain as the signed-in admin: back to the page saying it
/// was saved, or the page again saying why not.
async fn apply(
    s: &AppState,
    headers: &HeaderMap,
    session: Result<Session>,
    form: &[(String, String)],
    edit: Edit,
) -> PageResult {
    let target = edit.target();
    let (session, grant) = match admin(s, headers, session, &target.path()).await {
        Ok(ok) => ok,
        Err(page) => return Ok(page),
    };
    if !csrf_ok(&session, headers, form) {
        return Ok(stale_form());
    }
    let (now, org, actor) = (
        s.clock.now_ms(),
        session.org_id.as_str(),
        Actor::user(&session.user_id),
    );
    let done = match &edit {
        Edit::Member { id, patch } => {
            users::update(&s.db, now, org, &actor, grant, id, patch.clone())
                .await
                .map(drop)
        }
        Edit::Assignment {
            customer,
            role,
            user,
        } => {
            assignments::set(
                &s.db,
                now,
                org,
                &actor,
                grant,
                customer,
                role,
                user.as_deref(),
            )
            .await
        }
    };
    match done {
        Ok(()) => Ok(redirect(&format!("{}?saved=1", target.path()))),
        Err(e) => {
            let (status, notice) = refusal(e)?;
            target.view(s, &session, Some(notice), status).await
        }
    }
}

/// `GET /admin/people/members/{id}` and `/admin/people/customers/{id}`.
async fn detail_page(
    State(s): State<AppState>,
    headers: HeaderMap,
    session: Result<Session>,
    Path((kind, id)): Path<(String, String)>,
    Query(q): Query<PageQuery>,
) -> PageResult {
    let target = match kind.as_str() {
        "members" => Target::Member(&id),
        "customers" => Target::Customer(&id),
        _ => return Err(Error::NotFound { what: "page" }.into()),
    };
    show(&s, &headers, session, q, target).await
}

/// `POST …/members/{id}/roles`: the roles ticked become the member's roles.
/// `POST …/members/{id}/superiors`: the superiors ticked become the member's, set by
/// hand; `source=directory` hands them back to the directory sync instead.
async fn save_member(
    State(s): State<AppState>,
    headers: HeaderMap,
    session: Result<Session>,
    Path((id, what)): Path<(String, String)>,
    body: Bytes,
) -> PageResult {
    let form = form_pairs(&body);
    let patch = match (what.as_str(), value(&form, "source")) {
        ("roles", _) => UserPatch {
            roles: Some(values(&form, "role")),
            ..UserPatch::default()
        },
        ("superiors", Some(source)) => UserPatch {
            superior_source: Some(source.into()),
            ..UserPatch::default()
        },
        ("superiors", None) => UserPatch {
            superiors: Some(values(&form, "superior")),
            ..UserPatch::default()
        },
        _ => return Err(Error::NotFound { what: "page" }.into()),
    };
    apply(&s, &headers, session, &form, Edit::Member { id, patch }).await
}

/// `user` becomes the customer's person for the role (empty: nobody).
async fn save_assignment(
    State(s): State<AppState>,
    headers: HeaderMap,
    session: Result<Session>,
    Path((customer, role)): Path<(String, String)>,
    body: Bytes,
) -> PageResult {
    let form = form_pairs(&body);
    let user = value(&form, "user")
        .filter(|u| !u.is_empty())
        .map(str::to_string);
    let edit = Edit::Assignment {
        customer,
        role,
        user,
    };
    apply(&s, &headers, session, &form, edit).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_values_repeat_and_refusals_read_in_chinese() {
        let form = form_pairs(b"role=sales&role=manager&csrf_token=t&user=");
        assert_eq!(values(&form, "role"), ["sales", "manager"]);
        assert_eq!(value(&form, "user"), Some(""));
        assert_eq!(value(&form, "superior"), None);
        let (status, notice) =
            refusal(Error::invalid("unknown role `x`")).unwrap_or_else(|_| panic!());
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(matches!(notice, Notice::Refused(m) if !m.is_ascii() && !m.contains("role")));
        assert!(refusal(Error::Internal(anyhow::anyhow!("db down"))).is_err());
    }
}
