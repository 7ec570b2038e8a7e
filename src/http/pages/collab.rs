//! The collaboration pages: the quick-ask and handoff forms on the sidebar's customer
//! page, the request page a card links to (the content snapshot and its hash, artefacts,
//! a countdown to the deadline, acknowledgement, trail, and the receiver's buttons), and
//! each person's list of requests. Routing, checks and authorisation stay in
//! `crate::collab::requests`; this module renders pages and forwards what the script posts.
//!
//! Any member of the organisation may view a request page (cards get forwarded, managers
//! look in); only the people `requests::step` would allow see the buttons.

use std::collections::{BTreeMap, HashMap};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::Row;

use crate::collab::requests::{
    self, NewAdhoc, NewRequest, Request, Step, TrailEntry, CARD_PURPOSE,
};
use crate::error::{Error, Result};
use crate::http::pages::session::Session;
use crate::http::pages::sidebar::{enc, escape, not_signed_in, org_timezone, Html, PageResult};
use crate::http::{ApiJson, AppState};
use crate::rules::{CollabKind, CollabType, RuleSet};
use crate::text::{self, role_label, time as local, time_short as local_short};

/// Requests listed on a customer's sidebar page.
const CUSTOMER_REQUESTS: i64 = 5;
/// Requests listed in each part of `/collab`.
const LIST_LIMIT: i64 = 100;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/collab", get(my_requests))
        .route("/collab/requests/{id}", get(request_page))
        .route("/web/collab/requests", post(open_request))
        .route("/web/collab/adhoc", post(open_adhoc))
        .route("/web/collab/requests/{id}/{step}", post(step_request))
        .route("/web/documents/{id}/content", get(document_content))
}

// ----------------------------------------------------------------------------------------
// Wording and time

fn queue_label(role: &str) -> String {
    format!("{}队列", role_label(role))
}

fn status_label(status: &str) -> &'static str {
    match status {
        "open" => "待接受",
        "accepted" => "处理中",
        "answered" => "已答复",
        "returned" => "已退回",
        _ => "未知状态",
    }
}

fn is_closed(status: &str) -> bool {
    status == "answered" || status == "returned"
}

fn badge(status: &str) -> String {
    format!(
        "<span class=\"badge badge-{}\">{}</span>",
        escape(status),
        status_label(status)
    )
}

fn countdown_text(due: i64, now: i64) -> String {
    if due > now {
        format!("剩余 {}", text::span(due - now))
    } else {
        format!("已超时 {}", text::span(now - due))
    }
}

/// The countdown element: the server's clock at render time anchors it, so a phone whose
/// clock is off still counts down to the real deadline.
fn countdown(due: i64, now: i64) -> String {
    format!(
        "<span class=\"countdown{}\" data-due=\"{due}\" data-now=\"{now}\">{}</span>",
        if due > now { "" } else { " overdue" },
        countdown_text(due, now)
    )
}

/// Epoch milliseconds of a time `requests` rendered in the organisation's zone.
fn ms_of(rfc3339: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .ok()
        .map(|t| t.timestamp_millis())
}

// ----------------------------------------------------------------------------------------
// Errors of the endpoints the script calls

/// The API's JSON error shape, with a message a person can read in Chinese: the
/// collaboration rules already speak Chinese; generic errors get a Chinese sentence.
pub(crate) struct WebError(Error);

impl From<Error> for WebError {
    fn from(e: Error) -> Self {
        WebError(e)
    }
}

fn chinese_message(e: &Error) -> String {
    match e {
        Error::Internal(_) => "服务器内部错误，请稍后重试".into(),
        Error::Forbidden(m) if m.contains("X-CSRF-Token") => "页面已过期，请刷新后重试".into(),
        Error::NotFound { what } => match *what {
            "request" => "未找到该协作请求".into(),
            "document" => "未找到该文件".into(),
            "customer" => "未找到该客户".into(),
            _ => "未找到".into(),
        },
        other => text::error_for_people(other.code(), &other.to_string()),
    }
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        let e = self.0;
        if let Error::Internal(inner) = &e {
            tracing::error!(
                error = format!("{inner:#}"),
                "internal error on a collaboration endpoint"
            );
        }
        let mut body = json!({"error": {"code": e.code(), "message": chinese_message(&e)}});
        if let Error::Refused { details, .. } = &e {
            body["error"]["details"] = details.clone();
        }
        (e.status(), Json(body)).into_response()
    }
}

type WebResult<T> = std::result::Result<T, WebError>;

// ----------------------------------------------------------------------------------------
// Reads

/// Who a new request would reach, as the routing in `requests::open` decides it.
enum Receiver {
    Person(String),
    Queue { role: String, members: i64 },
}

async fn receiver(s: &AppState, org: &str, customer: &str, role: &str) -> Result<Receiver> {
    let assigned = sqlx::query(
        "SELECT u.name FROM customer_assignments a JOIN users u ON u.id = a.user_id \
         WHERE a.customer_id = $1 AND a.role = $2 AND u.org_id = $3 AND u.status = 'active'",
    )
    .bind(customer)
    .bind(role)
    .bind(org)
    .fetch_optional(&s.db.pool)
    .await?;
    if let Some(r) = assigned {
        return Ok(Receiver::Person(r.get("name")));
    }
    let members: i64 = sqlx::query(
        "SELECT CAST(COUNT(*) AS BIGINT) AS n FROM users u JOIN user_roles r ON r.user_id = u.id \
         WHERE u.org_id = $1 AND r.role = $2 AND u.status = 'active'",
    )
    .bind(org)
    .bind(role)
    .fetch_one(&s.db.pool)
    .await?
    .get("n");
    Ok(Receiver::Queue {
        role: role.to_string(),
        members,
    })
}

/// One line of a list of requests.
struct Summary {
    id: String,
    title: String,
    status: String,
    role: String,
    customer: String,
    initiator: String,
    assignee: Option<String>,
    due_at: i64,
    overdue_at: Option<i64>,
    closed_at: Option<i64>,
}

impl Summary {
    /// Past the deadline and still open: the SLA clock marks it, and the page does not
    /// wait for the clock's job to say what the time already says.
    fn overdue(&self, now: i64) -> bool {
        !is_closed(&self.status) && (self.overdue_at.is_some() || now >= self.due_at)
    }
}

const SUMMARY: &str =
    "SELECT r.id, r.title, r.status, r.responsible_role, r.due_at, r.overdue_at, r.closed_at, \
     c.name AS customer_name, i.name AS initiator_name, a.name AS assignee_name \
     FROM collab_requests r JOIN customers c ON c.id = r.customer_id \
     JOIN users i ON i.id = r.initiator_user_id LEFT JOIN users a ON a.id = r.assignee_user_id";

/// Open and accepted requests before closed ones.
const OPEN_FIRST: &str = "CASE WHEN r.status IN ('open', 'accepted') THEN 0 ELSE 1 END";

async fn summaries(
    s: &AppState,
    filter: &str,
    binds: &[&str],
    order: &str,
    limit: i64,
) -> Result<Vec<Summary>> {
    let sql = format!(
        "{SUMMARY} WHERE {filter} ORDER BY {order} LIMIT ${}",
        binds.len() + 1
    );
    let mut q = sqlx::query(&sql);
    for b in binds {
        q = q.bind(b.to_string());
    }
    Ok(q.bind(limit)
        .fetch_all(&s.db.pool)
        .await?
        .iter()
        .map(|r| Summary {
            id: r.get("id"),
            title: r.get("title"),
            status: r.get("status"),
            role: r.get("responsible_role"),
            customer: r.get("customer_name"),
            initiator: r.get("initiator_name"),
            assignee: r.get("assignee_name"),
            due_at: r.get("due_at"),
            overdue_at: r.get("overdue_at"),
            closed_at: r.get("closed_at"),
        })
        .collect())
}

fn summary_item(r: &Summary, now: i64, tz: chrono_tz::Tz) -> String {
    let overdue = r.overdue(now);
    let receiver = r.assignee.clone().unwrap_or_else(|| queue_label(&r.role));
    let timing = match (is_closed(&r.status), r.closed_at) {
        (true, Some(at)) => format!("{}于 {}", status_label(&r.status), local_short(at, tz)),
        (true, None) => status_label(&r.status).to_string(),
        (false, _) => format!(
            "截止 {} · {}",
            local_short(r.due_at, tz),
            countdown(r.due_at, now)
        ),
    };
    format!(
        "<li class=\"collab-item{}\" data-request=\"{}\">\n<div><a href=\"/collab/requests/{}\">{}</a> {}</div>\n\
         <div class=\"meta\">{} · 发起：{} · 接收：{}</div>\n<div class=\"meta timing\">{timing}</div>\n</li>\n",
        if overdue { " overdue" } else { "" },
        escape(&r.id),
        enc(&r.id),
        escape(&r.title),
        badge(&r.status),
        escape(&r.customer),
        escape(&r.initiator),
        escape(&receiver),
    )
}

fn summary_list(items: &[Summary], now: i64, tz: chrono_tz::Tz, empty: &str) -> String {
    if items.is_empty() {
        return format!("<p class=\"empty\">{}</p>\n", escape(empty));
    }
    let mut out = String::from("<ul class=\"list collab-list\">\n");
    for r in items {
        out.push_str(&summary_item(r, now, tz));
    }
    out.push_str("</ul>\n");
    out
}

async fn user_names(s: &AppState, org: &str, ids: &[&str]) -> Result<HashMap<String, String>> {
    let mut names = HashMap::new();
    for id in ids {
        if names.contains_key(*id) {
            continue;
        }
        let name: Option<String> =
            sqlx::query("SELECT name FROM users WHERE id = $1 AND org_id = $2")
                .bind(*id)
                .bind(org)
                .fetch_optional(&s.db.pool)
                .await?
                .map(|r| r.get("name"));
        names.insert(
            id.to_string(),
            name.unwrap_or_else(|| "（未知成员）".into()),
        );
    }
    Ok(names)
}

// ----------------------------------------------------------------------------------------
// The sidebar's part

/// The customer page's collaboration part: a form per quick-ask of the catalog (opened by
/// its button, which carries `data-collab`), a 「交接给…」 entry and form per handoff, and
/// the customer's latest requests.
pub(crate) async fn sidebar_sections(
    s: &AppState,
    rules: &RuleSet,
    org: &str,
    customer: &str,
    tz: chrono_tz::Tz,
    now: i64,
) -> Result<String> {
    let mut entries = String::new();
    let mut forms = String::new();
    for t in &rules.collaboration {
        match t.kind {
            // Only a catalog button opens a quick-ask.
            CollabKind::QuickAsk => {
                if t.action.as_deref().is_none_or(|a| rules.action(a).is_none()) {
                    continue;
                }
            }
            CollabKind::Handoff => entries.push_str(&format!(
                "<button type=\"button\" class=\"action handoff\" data-collab=\"{}\" title=\"{}\">交接给{}</button>\n",
                escape(&t.key),
                escape(&t.title),
                escape(role_label(&t.role))
            )),
        }
        let to = receiver(s, org, customer, &t.role).await?;
        forms.push_str(&request_form(t, &to));
    }
    // 「发起协作」: an ad-hoc anchored action to a named member.
    entries.push_str(
        "<button type=\"button\" class=\"action adhoc\" data-collab=\"adhoc\">发起协作</button>\n",
    );
    forms.push_str(&adhoc_form(s, rules, org, customer).await?);
    let mut out =
        String::from("<section id=\"collab-forms\" class=\"collab-forms\">\n<h2>协作</h2>\n");
    if !entries.is_empty() {
        out.push_str(&format!("<div class=\"buttons\">\n{entries}</div>\n"));
    }
    out.push_str(&forms);
    out.push_str(
        "<div id=\"collab-result\" class=\"notice\" role=\"status\" hidden></div>\n\
         <p class=\"meta\"><a href=\"/collab\">我的协作请求</a></p>\n</section>\n",
    );
    let recent = summaries(
        s,
        "r.org_id = $1 AND r.customer_id = $2",
        &[org, customer],
        "r.created_at DESC, r.id",
        CUSTOMER_REQUESTS,
    )
    .await?;
    out.push_str("<section id=\"collab-requests\" data-refresh>");
    if !recent.is_empty() {
        out.push_str("\n<h2>协作请求</h2>\n");
        out.push_str(&summary_list(&recent, now, tz, ""));
    }
    out.push_str("</section>\n");
    Ok(out)
}

/// The 「发起协作」 form: a subject (picked or typed), the responsible role, the member
/// named (the script offers the members holding the chosen role), a description and an
/// optional deal of the customer.
async fn adhoc_form(s: &AppState, rules: &RuleSet, org: &str, customer: &str) -> Result<String> {
    let mut subjects = String::new();
    for subject in &rules.adhoc.subjects {
        subjects.push_str(&format!("<option>{}</option>\n", escape(subject)));
    }
    let mut roles = String::from("<option value=\"\">请选择</option>\n");
    for role in crate::rules::COLLAB_ROLES {
        roles.push_str(&format!(
            "<option value=\"{role}\">{}</option>\n",
            escape(role_label(role))
        ));
    }
    let mut people = String::from("<option value=\"\">请先选择负责角色</option>\n");
    for r in sqlx::query(
        "SELECT u.id, u.name, r.role FROM users u JOIN user_roles r ON r.user_id = u.id \
         WHERE u.org_id = $1 AND u.status = 'active' ORDER BY r.role, u.name, u.id",
    )
    .bind(org)
    .fetch_all(&s.db.pool)
    .await?
    {
        let role: String = r.get("role");
        if !crate::rules::COLLAB_ROLES.contains(&role.as_str()) {
            continue;
        }
        people.push_str(&format!(
            "<option value=\"{}\" data-role=\"{}\" hidden>{}</option>\n",
            escape(&r.get::<String, _>("id")),
            escape(&role),
            escape(&r.get::<String, _>("name"))
        ));
    }
    let mut deals = String::from("<option value=\"\">不关联商机</option>\n");
    for d in sqlx::query(
        "SELECT id, title FROM deals WHERE customer_id = $1 AND org_id = $2 ORDER BY created_at DESC, id",
    )
    .bind(customer)
    .bind(org)
    .fetch_all(&s.db.pool)
    .await?
    {
        deals.push_str(&format!(
            "<option value=\"{}\">{}</option>\n",
            escape(&d.get::<String, _>("id")),
            escape(&d.get::<String, _>("title"))
        ));
    }
    let a = &rules.adhoc;
    Ok(format!(
        "<form class=\"collab-form adhoc-form\" data-type=\"adhoc\" data-kind=\"adhoc\" hidden>\n<h3>发起协作</h3>\n\
         <label class=\"field\"><span>协作事项</span><select name=\"subject\">\n{subjects}\
         <option value=\"\">自行填写…</option>\n</select></label>\n\
         <label class=\"field\"><span>自行填写的事项</span><input type=\"text\" name=\"subject_text\" maxlength=\"32\"></label>\n\
         <label class=\"field\"><span>负责角色</span><select name=\"role\" required>\n{roles}</select></label>\n\
         <label class=\"field\"><span>负责人</span><select name=\"assignee\" required>\n{people}</select></label>\n\
         <label class=\"field\"><span>说明</span><textarea name=\"description\" maxlength=\"2000\" required></textarea></label>\n\
         <label class=\"field\"><span>关联商机</span><select name=\"deal\">\n{deals}</select></label>\n\
         <p class=\"meta\">时限 {sla}{hours}；{ack}内需确认收到</p>\n\
         <div class=\"notice error\" data-error role=\"alert\" hidden></div>\n\
         <div class=\"form-actions\"><button type=\"submit\" class=\"action\">发送</button>\
         <button type=\"button\" class=\"cancel\" data-cancel>取消</button></div>\n</form>\n",
        sla = text::duration(a.sla),
        hours = if a.business_hours { "（按工作时间计）" } else { "" },
        ack = text::duration(a.ack_within),
    ))
}

/// The template as a form: one field per prompt, one file per required artefact.
fn request_form(t: &CollabType, to: &Receiver) -> String {
    let mut fields = String::new();
    for p in &t.prompts {
        fields.push_str(&format!(
            "<label class=\"field\"><span>{p}</span><input type=\"text\" data-prompt=\"{p}\" maxlength=\"2000\" required></label>\n",
            p = escape(p)
        ));
    }
    for a in &t.artefacts {
        fields.push_str(&format!(
            "<label class=\"field\"><span>{a} <em class=\"required\">必需</em></span><input type=\"file\" data-artefact=\"{a}\"></label>\n",
            a = escape(a)
        ));
    }
    let receiver = match to {
        Receiver::Person(name) => format!("<strong class=\"receiver-name\">{}</strong>", escape(name)),
        Receiver::Queue { role, members } if *members > 0 => format!(
            "<strong class=\"receiver-name\">{}</strong>（{members} 人，先接受者负责）",
            escape(&queue_label(role))
        ),
        Receiver::Queue { role, .. } => format!(
            "<strong class=\"receiver-name\">{}</strong> <span class=\"invalid\">暂无成员，请管理员在 {} 中设置</span>",
            escape(&queue_label(role)),
            crate::access::WHERE_ROLES_ARE_SET
        ),
    };
    format!(
        "<form class=\"collab-form\" data-type=\"{key}\" data-kind=\"{kind}\" hidden>\n<h3>{title}</h3>\n\
         <p class=\"receiver\">发送给：{receiver}</p>\n{fields}\
         <p class=\"meta\">时限 {sla}{hours}；{ack}内需确认收到</p>\n\
         <div class=\"notice error\" data-error role=\"alert\" hidden></div>\n\
         <div class=\"form-actions\"><button type=\"submit\" class=\"action\">发送</button>\
         <button type=\"button\" class=\"cancel\" data-cancel>取消</button></div>\n</form>\n",
        key = escape(&t.key),
        kind = match t.kind {
            CollabKind::QuickAsk => "quick_ask",
            CollabKind::Handoff => "handoff",
        },
        title = escape(&t.title),
        sla = text::duration(t.sla),
        hours = if t.business_hours { "（按工作时间计）" } else { "" },
        ack = text::duration(t.ack_within),
    )
}

// ----------------------------------------------------------------------------------------
// Pages

/// `GET /collab/requests/{id}`: what a card opens.
async fn request_page(
    State(s): State<AppState>,
    headers: HeaderMap,
    session: Result<Session>,
    Path(id): Path<String>,
) -> PageResult {
    let id =
        crate::validate::id("request", &id).map_err(|_| Error::NotFound { what: "request" })?;
    let session = match session {
        Ok(session) => session,
        Err(e) => {
            return Ok(not_signed_in(
                &s,
                &headers,
                e,
                &format!("/collab/requests/{id}"),
            ))
        }
    };
    let org = &session.org_id;
    let me = session.user_id.as_str();
    let tz = org_timezone(&s, org).await?;
    let now = s.clock.now_ms();
    let r = requests::get(&s.db, &s.cipher, org, tz, &id).await?;
    let rules = s.rules.current(org).await?;
    let t = rules.collab(&r.type_key);

    let customer: String = sqlx::query("SELECT name FROM customers WHERE id = $1 AND org_id = $2")
        .bind(&r.customer)
        .bind(org)
        .fetch_optional(&s.db.pool)
        .await
        .map_err(Error::from)?
        .map(|row| row.get("name"))
        .unwrap_or_default();
    let mut ids = vec![r.initiator.as_str()];
    ids.extend(r.assignee.as_deref());
    ids.extend(r.trail.iter().filter_map(|e| e.actor.as_deref()));
    ids.extend(r.undelivered.iter().map(|f| f.recipient.as_str()));
    let names = user_names(&s, org, &ids).await?;
    let name = |id: &str| names.get(id).cloned().unwrap_or_default();

    // The same test `requests::step_in` makes: a card of the request reached me.
    let got_card = sqlx::query(
        "SELECT 1 FROM cards WHERE purpose = $1 AND object_ref = $2 AND recipient_user_id = $3",
    )
    .bind(CARD_PURPOSE)
    .bind(&r.id)
    .bind(me)
    .fetch_optional(&s.db.pool)
    .await
    .map_err(Error::from)?
    .is_some();
    let can_accept = r.status == "open"
        && match &r.assignee {
            Some(a) => a == me,
            None => got_card,
        };
    let can_close = r.status == "accepted" && r.assignee.as_deref() == Some(me);

    let due = ms_of(&r.due_at).unwrap_or(now);
    let closed = is_closed(&r.status);
    let overdue = !closed && (r.overdue || now >= due);

    let mut body = format!(
        "<header class=\"request\">\n<h1>{}</h1> {}\n</header>\n\
         <div id=\"notice\" class=\"notice\" role=\"alert\" hidden></div>\n",
        escape(&r.title),
        badge(&r.status)
    );

    // Deadline.
    let hours = if r.business_hours {
        "（按工作时间计）"
    } else {
        ""
    };
    let timing = match (&r.closed_at, closed) {
        (Some(at), true) => format!(
            "<p>{}于 {}</p>\n",
            status_label(&r.status),
            ms_of(at).map(|ms| local(ms, tz)).unwrap_or_default()
        ),
        _ => format!("<p class=\"countdown-line\">{}</p>\n", countdown(due, now)),
    };
    body.push_str(&format!(
        "<section id=\"deadline\" class=\"deadline{}\">\n<h2>时限</h2>\n<p>截止：{}{hours}</p>\n{timing}</section>\n",
        if overdue { " overdue" } else { "" },
        local(due, tz)
    ));

    // Responsibility anchors.
    let assignee = match &r.assignee {
        Some(a) => escape(&name(a)),
        None => format!("{}（待认领）", escape(&queue_label(&r.responsible_role))),
    };
    let ack = match (&r.acknowledged_at, &r.ack_due_at) {
        (Some(at), _) => format!(
            "<span class=\"acked\">已确认收到（{}）</span>",
            ms_of(at).map(|ms| local(ms, tz)).unwrap_or_default()
        ),
        (None, _) if closed => "—".to_string(),
        (None, Some(d)) => {
            let d = ms_of(d).unwrap_or(now);
            if now >= d {
                format!(
                    "<span class=\"unacked late\">未确认（应于 {} 前确认，已超时）</span>",
                    local(d, tz)
                )
            } else {
                format!(
                    "<span class=\"unacked\">未确认（应于 {} 前确认）</span>",
                    local(d, tz)
                )
            }
        }
        (None, None) => "<span class=\"unacked\">未确认</span>".to_string(),
    };
    body.push_str(&format!(
        "<section class=\"anchors\">\n<h2>责任锚点</h2>\n<dl class=\"facts\">\n\
         <dt>客户</dt><dd>{}</dd>\n<dt>发起人</dt><dd>{}</dd>\n<dt>负责角色</dt><dd>{}</dd>\n\
         <dt>负责人</dt><dd class=\"assignee\">{assignee}</dd>\n<dt>确认收到</dt><dd class=\"ack\">{ack}</dd>\n\
         <dt>发起时间</dt><dd>{}</dd>\n</dl>\n</section>\n",
        escape(&customer),
        escape(&name(&r.initiator)),
        escape(role_label(&r.responsible_role)),
        ms_of(&r.created_at)
            .map(|ms| local(ms, tz))
            .unwrap_or_default(),
    ));

    // What was asked, as snapshotted.
    let mut content = String::new();
    if let Some(obj) = r.content.as_object() {
        for (k, v) in obj {
            content.push_str(&format!(
                "<dt>{}</dt><dd>{}</dd>\n",
                escape(k),
                escape(v.as_str().unwrap_or_default())
            ));
        }
    }
    body.push_str(&format!(
        "<section class=\"content\">\n<h2>请求内容</h2>\n<dl class=\"facts\">\n{content}</dl>\n\
         <p class=\"meta\">内容快照 SHA-256：<code class=\"hash\" translate=\"no\">{}</code></p>\n</section>\n",
        escape(&r.content_hash)
    ));

    if !r.artefacts.is_empty() {
        let mut items = String::new();
        for (artefact, doc) in &r.artefacts {
            let file = match crate::documents::get(&s.db, &s.cipher, org, doc).await {
                Ok(d) => format!(
                    "<a href=\"/web/documents/{}/content\" translate=\"no\">{}</a>",
                    enc(doc),
                    escape(&d.filename)
                ),
                Err(Error::NotFound { .. }) => "<span class=\"meta\">文件不存在</span>".into(),
                Err(e) => return Err(e.into()),
            };
            items.push_str(&format!(
                "<li><span class=\"what\">{}</span> {file}</li>\n",
                escape(artefact)
            ));
        }
        body.push_str(&format!(
            "<section class=\"artefacts\">\n<h2>交接资料</h2>\n<ul class=\"list\">\n{items}</ul>\n</section>\n"
        ));
    }

    match r.status.as_str() {
        "answered" => {
            let label = if r.confirms_date {
                "预计交付日期"
            } else {
                "确认日期"
            };
            let mut date = r
                .answer_date
                .as_deref()
                .map(|d| format!("<p>{label}：<strong>{}</strong></p>\n", escape(&text::date_text(d))))
                .unwrap_or_default();
            match r.customer_synced {
                Some(true) => date.push_str("<p class=\"synced\">已同步客户</p>\n"),
                Some(false) => date.push_str("<p class=\"synced not\">尚未同步客户</p>\n"),
                None => {}
            }
            body.push_str(&format!(
                "<section class=\"outcome\">\n<h2>答复</h2>\n<p class=\"answer\">{}</p>\n{date}</section>\n",
                escape(r.answer.as_deref().unwrap_or_default())
            ));
        }
        "returned" => body.push_str(&format!(
            "<section class=\"outcome returned\">\n<h2>退回原因</h2>\n<p class=\"reason\">{}</p>\n</section>\n",
            escape(r.return_reason.as_deref().unwrap_or_default())
        )),
        _ => {}
    }

    if !r.undelivered.is_empty() {
        let mut items = String::new();
        for f in &r.undelivered {
            items.push_str(&format!(
                "<li>卡片未能送达：{}（收件人：{}）</li>\n",
                escape(&f.reason_text),
                escape(&name(&f.recipient))
            ));
        }
        body.push_str(&format!(
            "<section id=\"undelivered\" class=\"undelivered notice error\">\n<h2>卡片送达</h2>\n<ul class=\"list\">\n{items}</ul>\n</section>\n"
        ));
    }

    if can_accept || can_close {
        body.push_str(&actions_section(
            can_accept,
            r.confirms_date || t.is_some_and(|t| t.confirms_date),
        ));
    } else if !closed {
        body.push_str(
            "<p class=\"meta readonly\">仅该请求的负责人（或待认领时收到卡片的成员）可以处理。</p>\n",
        );
    }

    let mut trail = String::new();
    for e in &r.trail {
        trail.push_str(&trail_item(e, &name, tz));
    }
    body.push_str(&format!(
        "<section class=\"trail\">\n<h2>处理记录</h2>\n<ol class=\"list trail\">\n{trail}</ol>\n</section>\n\
         <p class=\"meta\"><a href=\"/collab\">我的协作请求</a></p>\n"
    ));

    Ok(Html {
        title: r.title.clone(),
        page: "collab-request",
        main_attrs: format!(" data-request=\"{}\"", escape(&r.id)),
        body,
        csrf: Some(session.csrf_token),
        signed_in: Some(session.user_name),
        ..Html::default()
    }
    .into_response(StatusCode::OK))
}

fn actions_section(can_accept: bool, confirms_date: bool) -> String {
    let inner = if can_accept {
        "<button type=\"button\" class=\"action\" data-step=\"accept\">确认收到并接受</button>\n"
            .to_string()
    } else {
        // A schedule: the expected date (required) and whether the customer was told.
        let date = if confirms_date {
            "<label class=\"field\"><span>预计交付日期</span><input type=\"date\" name=\"date\" required></label>\n\
             <label class=\"field check\"><input type=\"checkbox\" name=\"customer_synced\" value=\"true\"><span>已同步客户</span></label>\n"
        } else {
            ""
        };
        format!(
            "<form class=\"step-form\" data-step=\"answer\">\n\
             <label class=\"field\"><span>答复</span><input type=\"text\" name=\"text\" maxlength=\"2000\" required></label>\n\
             {date}<button type=\"submit\" class=\"action\">提交答复</button>\n</form>\n\
             <form class=\"step-form\" data-step=\"return\">\n\
             <label class=\"field\"><span>退回原因</span><input type=\"text\" name=\"reason\" maxlength=\"500\" required></label>\n\
             <button type=\"submit\" class=\"danger\">退回</button>\n</form>\n"
        )
    };
    format!("<section id=\"collab-actions\" class=\"collab-actions\">\n<h2>处理</h2>\n{inner}</section>\n")
}

fn trail_item(e: &TrailEntry, name: &dyn Fn(&str) -> String, tz: chrono_tz::Tz) -> String {
    let who = e
        .actor
        .as_deref()
        .map(name)
        .unwrap_or_else(|| "系统".into());
    let detail = |k: &str| e.detail[k].as_str().unwrap_or_default().to_string();
    let (what, extra) = match e.action.as_str() {
        "opened" => ("发起请求".to_string(), String::new()),
        "accepted" => ("确认收到并接受".to_string(), String::new()),
        "answered" => ("答复".to_string(), detail("answer")),
        "returned" => ("退回".to_string(), detail("reason")),
        "ack_reminded" => ("提醒确认收到".to_string(), String::new()),
        "overdue" => ("已超时".to_string(), String::new()),
        "escalated" => ("超时升级至直属上级".to_string(), String::new()),
        "undelivered" => (
            "卡片未能送达".to_string(),
            crate::cards::failure_text(e.detail["reason"].as_str().unwrap_or_default()).to_string(),
        ),
        other => (other.to_string(), String::new()),
    };
    let extra = if extra.is_empty() {
        String::new()
    } else {
        format!("：{}", escape(&extra))
    };
    format!(
        "<li class=\"trail-{}\"><span class=\"when\">{}</span> {} {}{extra}</li>\n",
        escape(&e.action),
        ms_of(&e.at).map(|ms| local(ms, tz)).unwrap_or_default(),
        escape(&who),
        escape(&what)
    )
}

/// `GET /collab`: requests assigned to me, waiting in my roles' queues, and mine.
async fn my_requests(
    State(s): State<AppState>,
    headers: HeaderMap,
    session: Result<Session>,
) -> PageResult {
    let session = match session {
        Ok(session) => session,
        Err(e) => return Ok(not_signed_in(&s, &headers, e, "/collab")),
    };
    let org = session.org_id.as_str();
    let me = session.user_id.as_str();
    let tz = org_timezone(&s, org).await?;
    let now = s.clock.now_ms();
    let assigned = summaries(
        &s,
        "r.org_id = $1 AND r.assignee_user_id = $2",
        &[org, me],
        &format!("{OPEN_FIRST}, r.due_at, r.id"),
        LIST_LIMIT,
    )
    .await?;
    let queued = summaries(
        &s,
        "r.org_id = $1 AND r.assignee_user_id IS NULL AND r.status = 'open' AND EXISTS \
         (SELECT 1 FROM cards k WHERE k.purpose = $3 AND k.object_ref = r.id AND k.recipient_user_id = $2)",
        &[org, me, CARD_PURPOSE],
        "r.due_at, r.id",
        LIST_LIMIT,
    )
    .await?;
    let initiated = summaries(
        &s,
        "r.org_id = $1 AND r.initiator_user_id = $2",
        &[org, me],
        &format!("{OPEN_FIRST}, r.created_at DESC, r.id"),
        LIST_LIMIT,
    )
    .await?;
    let body = format!(
        "<h1>我的协作</h1>\n\
         <section id=\"assigned\">\n<h2>指派给我的</h2>\n{}</section>\n\
         <section id=\"queued\">\n<h2>待认领（我所在角色的队列）</h2>\n{}</section>\n\
         <section id=\"initiated\">\n<h2>我发起的</h2>\n{}</section>\n",
        summary_list(&assigned, now, tz, "暂无指派给您的请求。"),
        summary_list(&queued, now, tz, "队列中暂无待认领的请求。"),
        summary_list(&initiated, now, tz, "您还没有发起过协作请求。"),
    );
    Ok(Html {
        title: "我的协作".into(),
        page: "collab-list",
        body,
        csrf: Some(session.csrf_token),
        signed_in: Some(session.user_name),
        ..Html::default()
    }
    .into_response(StatusCode::OK))
}

/// `GET /web/documents/{id}/content`: an artefact for a signed-in colleague, served as
/// the API serves it (an attachment, never sniffed, sandboxed, not cached). Any member of
/// the organisation may download, as any member may view the request page linking it.
async fn document_content(
    State(s): State<AppState>,
    headers: HeaderMap,
    session: Result<Session>,
    Path(id): Path<String>,
) -> PageResult {
    let id =
        crate::validate::id("document", &id).map_err(|_| Error::NotFound { what: "document" })?;
    let session = match session {
        Ok(session) => session,
        Err(e) => {
            return Ok(not_signed_in(
                &s,
                &headers,
                e,
                &format!("/web/documents/{id}/content"),
            ))
        }
    };
    let (doc, bytes) =
        crate::documents::content(&s.db, &s.cipher, &s.blobs, &session.org_id, &id).await?;
    Ok(crate::http::documents::file_response(
        "attachment",
        &doc.filename,
        &doc.content_type,
        bytes,
    ))
}

// ----------------------------------------------------------------------------------------
// What the pages' script posts

/// The API's `NewRequest` without `initiator`: that is the signed-in person.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WebNewRequest {
    #[serde(rename = "type")]
    type_key: String,
    customer: String,
    deal: Option<String>,
    #[serde(default)]
    content: BTreeMap<String, String>,
    #[serde(default)]
    artefacts: BTreeMap<String, String>,
}

/// The request as opened, with what the sidebar shows about it.
#[derive(Debug, Serialize)]
struct Opened {
    #[serde(flatten)]
    request: Request,
    /// The page the cards link to.
    url: String,
    /// The assignee's name, or the role's queue.
    receiver: String,
    /// The deadline in the organisation's time, as `text::time_short` writes it (`11月30日 15:30`).
    due_local: String,
}

/// `POST /web/collab/requests`: the signed-in rep opens a quick-ask or a handoff.
async fn open_request(
    State(s): State<AppState>,
    session: Session,
    headers: HeaderMap,
    ApiJson(b): ApiJson<WebNewRequest>,
) -> WebResult<(StatusCode, Json<Opened>)> {
    session.require_csrf(&headers)?;
    let org = &session.org_id;
    let rules = s.rules.current(org).await?;
    let tz = org_timezone(&s, org).await?;
    let r = requests::open(
        &s.db,
        &s.cipher,
        &rules,
        &s.calendar,
        s.clock.now_ms(),
        org,
        tz,
        NewRequest {
            type_key: b.type_key,
            customer: b.customer,
            deal: b.deal,
            initiator: session.user_id.clone(),
            content: b.content,
            artefacts: b.artefacts,
            source: Some(crate::tracking::Source::Sidebar),
        },
    )
    .await?;
    opened(&s, org, tz, r).await
}

/// The API's `NewAdhoc` without `initiator`: that is the signed-in person.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WebNewAdhoc {
    customer: String,
    deal: Option<String>,
    subject: String,
    role: String,
    assignee: String,
    description: String,
}

/// `POST /web/collab/adhoc`: the signed-in member's 「发起协作」.
async fn open_adhoc(
    State(s): State<AppState>,
    session: Session,
    headers: HeaderMap,
    ApiJson(b): ApiJson<WebNewAdhoc>,
) -> WebResult<(StatusCode, Json<Opened>)> {
    session.require_csrf(&headers)?;
    let org = &session.org_id;
    let rules = s.rules.current(org).await?;
    let tz = org_timezone(&s, org).await?;
    let r = requests::open_adhoc(
        &s.db,
        &crate::access::Actor::user(&session.user_id),
        &s.cipher,
        &rules,
        &s.calendar,
        s.clock.now_ms(),
        org,
        tz,
        NewAdhoc {
            customer: b.customer,
            deal: b.deal.filter(|d| !d.is_empty()),
            initiator: session.user_id.clone(),
            subject: b.subject,
            role: b.role,
            assignee: b.assignee,
            description: b.description,
            source: Some(crate::tracking::Source::Sidebar),
        },
    )
    .await?;
    opened(&s, org, tz, r).await
}

/// What the sidebar shows about a request it opened.
async fn opened(
    s: &AppState,
    org: &str,
    tz: chrono_tz::Tz,
    r: Request,
) -> WebResult<(StatusCode, Json<Opened>)> {
    let receiver = match &r.assignee {
        Some(a) => user_names(s, org, &[a.as_str()])
            .await?
            .remove(a)
            .unwrap_or_default(),
        None => queue_label(&r.responsible_role),
    };
    let due_local = ms_of(&r.due_at)
        .map(|ms| local_short(ms, tz))
        .unwrap_or_default();
    Ok((
        StatusCode::CREATED,
        Json(Opened {
            url: format!("/collab/requests/{}", enc(&r.id)),
            receiver,
            due_local,
            request: r,
        }),
    ))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct StepBody {
    text: Option<String>,
    date: Option<String>,
    reason: Option<String>,
    customer_synced: Option<bool>,
}

/// `POST /web/collab/requests/{id}/{accept|answer|return}`: the signed-in person acts;
/// `requests::step` decides whether they may.
async fn step_request(
    State(s): State<AppState>,
    session: Session,
    headers: HeaderMap,
    Path((id, step)): Path<(String, String)>,
    ApiJson(b): ApiJson<StepBody>,
) -> WebResult<Json<Request>> {
    session.require_csrf(&headers)?;
    let blank = |v: &Option<String>| v.as_deref().is_none_or(|t| t.trim().is_empty());
    let st = match step.as_str() {
        "accept" => Step::Accept,
        "answer" => {
            if blank(&b.text) {
                return Err(Error::invalid("请填写答复内容").into());
            }
            let date = b.date.filter(|d| !d.trim().is_empty());
            if let Some(d) = &date {
                crate::validate::date("date", d)
                    .map_err(|_| Error::invalid("日期无效，请重新选择日期"))?;
            }
            Step::Answer {
                text: b.text.unwrap_or_default(),
                date: date.map(|d| d.trim().to_string()),
                customer_synced: b.customer_synced,
            }
        }
        "return" => {
            if blank(&b.reason) {
                return Err(Error::invalid("请填写退回原因").into());
            }
            Step::Return {
                reason: b.reason.unwrap_or_default(),
            }
        }
        _ => return Err(Error::NotFound { what: "step" }.into()),
    };
    let org = &session.org_id;
    let tz = org_timezone(&s, org).await?;
    Ok(Json(
        requests::step(
            &s.db,
            &s.cipher,
            s.clock.now_ms(),
            org,
            tz,
            &id,
            &session.user_id,
            &st,
            crate::tracking::Source::Sidebar,
        )
        .await?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn countdowns_read_in_chinese() {
        assert_eq!(
            countdown_text(10_000 + 3 * 3_600_000 + 12 * 60_000, 10_000),
            "剩余 3 小时 12 分"
        );
        assert_eq!(countdown_text(0, 90_000), "已超时 1 分 30 秒");
        assert_eq!(
            countdown_text(2 * 86_400_000 + 3_600_000, 0),
            "剩余 2 天 1 小时"
        );
    }

    #[test]
    fn errors_are_told_in_chinese() {
        assert_eq!(
            chinese_message(&Error::Forbidden("missing or wrong X-CSRF-Token".into())),
            "页面已过期，请刷新后重试"
        );
        assert_eq!(
            chinese_message(&Error::NotFound { what: "request" }),
            "未找到该协作请求"
        );
        assert_eq!(
            chinese_message(&Error::Conflict(
                "该请求已由他人接受 (someone else took it)".into()
            )),
            "该请求已由他人接受"
        );
        assert_eq!(
            chinese_message(&Error::invalid("answer must be at most 2000 characters")),
            "输入有误，请检查后重试"
        );
    }
}
