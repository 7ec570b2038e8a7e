//! `/admin/audit` — 管理 → 审计日志: the organisation's audit log searched by customer,
//! member, action, IP and time, with where the hash chain stands. Open to whoever a
//! package gives `audit.read` (by default the `security` and `admin` roles), as the access
//! guard decides (`crate::http::guard`). Read-only: a plain GET form, so the page needs
//! no script.

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use axum::Router;
use serde::Deserialize;

use crate::access::audit::{self, AuditFilter, AuditItem};
use crate::access::audit_actions::{self, ACTIONS};
use crate::access::WHERE_ROLES_ARE_SET;
use crate::customers;
use crate::directory::users;
use crate::error::{Error, Result};
use crate::http::pages::session::Session;
use crate::http::pages::sidebar::{enc, escape, not_signed_in, org_timezone, Html, PageResult};
use crate::http::AppState;
use crate::page::PageParams;

const HOME: &str = "/admin/audit";
const PER_PAGE: i64 = 50;
/// Customers offered when a name matches several.
const NAME_MATCHES: i64 = 10;

pub fn routes() -> Router<AppState> {
    Router::new().route("/admin/audit", get(page)) // HOME, spelled out: the text guard reads routes from the source
}

/// Who may read the audit log here: an active member holding the `security` or `admin`
/// role. The one place the page decides it.

#[derive(Debug, Default, Deserialize)]
struct AuditQuery {
    /// A customer id, or part of a customer's name.
    customer: Option<String>,
    user: Option<String>,
    action: Option<String>,
    ip: Option<String>,
    /// Days `YYYY-MM-DD` in the organisation's zone, both inclusive.
    from: Option<String>,
    to: Option<String>,
    cursor: Option<String>,
}

fn given(v: &Option<String>) -> Option<String> {
    v.as_deref()
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_string)
}

impl AuditQuery {
    /// The query string of these filters (without the cursor).
    fn link(&self, customer: Option<&str>) -> String {
        let mut parts = Vec::new();
        let customer = customer
            .map(str::to_string)
            .or_else(|| given(&self.customer));
        for (k, v) in [
            ("customer", customer),
            ("user", given(&self.user)),
            ("action", given(&self.action)),
            ("ip", given(&self.ip)),
            ("from", given(&self.from)),
            ("to", given(&self.to)),
        ] {
            if let Some(v) = v {
                parts.push(format!("{k}={}", enc(&v)));
            }
        }
        parts.join("&")
    }
}

/// How the customer field resolved.
enum Customer {
    None,
    Id(String),
    /// A name matching several customers: the page offers them.
    Several(Vec<(String, String)>),
    /// A name matching no customer.
    Unknown,
}

async fn resolve_customer(s: &AppState, org: &str, text: Option<String>) -> Result<Customer> {
    let Some(text) = text else {
        return Ok(Customer::None);
    };
    if crate::validate::id("customer", &text).is_ok()
        && !customers::names_of(&s.db, org, std::slice::from_ref(&text))
            .await?
            .is_empty()
    {
        return Ok(Customer::Id(text));
    }
    let mut found = customers::named(&s.db, org, &text, NAME_MATCHES).await?;
    Ok(match found.len() {
        0 => Customer::Unknown,
        1 => Customer::Id(found.remove(0).0),
        _ => Customer::Several(found),
    })
}

/// `2026年12月7日 09:43:05` in `tz`.
fn time_with_seconds(at: &str, tz: chrono_tz::Tz) -> String {
    use chrono::Timelike;
    let Ok(t) = chrono::DateTime::parse_from_rfc3339(at) else {
        return String::new();
    };
    let ms = t.timestamp_millis();
    let second = t.with_timezone(&tz).second();
    format!("{}:{second:02}", crate::text::time(ms, tz))
}

/// Who did it, in words.
fn actor(i: &AuditItem, names: &HashMap<&str, &str>) -> String {
    match (i.actor_kind.as_str(), i.actor_id.as_deref()) {
        ("user", Some(id)) => escape(names.get(id).copied().unwrap_or("未知成员")),
        ("api_key", _) => "接口密钥".into(),
        ("cli", _) => "命令行".into(),
        ("admin", _) => "运维操作".into(),
        _ => "系统".into(),
    }
}

fn target_kind_label(kind: &str) -> &'static str {
    match kind {
        "customer" => "客户",
        "contact" => "联系人",
        "contact_phone" => "联系人号码",
        "deal" => "商机",
        "lead" => "线索",
        "user" => "成员",
        "collab_request" => "协作请求",
        "attestation" => "跟进证明",
        "action_freeze" => "操作冻结",
        "api_key" => "接口密钥",
        "webhook" => "事件推送订阅",
        "rule_set" => "规则",
        "job" => "后台任务",
        "platform" => "平台",
        "directory" => "通讯录",
        _ => "其他对象",
    }
}

/// The target: the customer's name linked to its page, else the kind of object.
fn target(i: &AuditItem, customer_names: &HashMap<String, String>) -> String {
    match (i.target_kind.as_deref(), i.target_id.as_deref()) {
        (Some("customer"), Some(id)) => format!(
            "<a href=\"/sidebar/customers/{}\">客户：{}</a>",
            enc(id),
            escape(
                customer_names
                    .get(id)
                    .map_or("已删除的客户", String::as_str)
            )
        ),
        (Some(kind), _) => target_kind_label(kind).to_string(),
        (None, _) => "—".into(),
    }
}

fn select(name: &str, label: &str, options: &[(String, String)], chosen: Option<&str>) -> String {
    let mut out =
        format!("<label>{label} <select name=\"{name}\"><option value=\"\">全部</option>");
    for (value, text) in options {
        let sel = if chosen == Some(value.as_str()) {
            " selected"
        } else {
            ""
        };
        out.push_str(&format!(
            "<option value=\"{}\"{sel}>{}</option>",
            escape(value),
            escape(text)
        ));
    }
    out.push_str("</select></label>\n");
    out
}

fn input(name: &str, label: &str, kind: &str, value: Option<String>) -> String {
    format!(
        "<label>{label} <input type=\"{kind}\" name=\"{name}\" value=\"{}\"></label>\n",
        escape(&value.unwrap_or_default())
    )
}

async fn page(
    State(s): State<AppState>,
    headers: HeaderMap,
    session: Result<Session>,
    Query(q): Query<AuditQuery>,
) -> PageResult {
    let session = match session {
        Ok(session) => session,
        Err(e) => return Ok(not_signed_in(&s, &headers, e, HOME)),
    };
    let org = session.org_id.as_str();
    let tz = org_timezone(&s, org).await?;
    let members = users::all(&s.db, org).await?;
    let names: HashMap<&str, &str> = members
        .iter()
        .map(|u| (u.id.as_str(), u.name.as_str()))
        .collect();

    let customer = resolve_customer(&s, org, given(&q.customer)).await?;
    let mut notice = String::new();
    let mut status = StatusCode::OK;
    let mut rows = String::new();
    let mut next = None;
    let customer_id = match &customer {
        Customer::Id(id) => Some(id.clone()),
        _ => None,
    };
    match &customer {
        Customer::Unknown => {
            notice = format!(
                "<p id=\"notice\" class=\"notice error\" role=\"alert\">没有名称含「{}」的客户。</p>\n",
                escape(&given(&q.customer).unwrap_or_default())
            );
        }
        Customer::Several(found) => {
            let links: Vec<String> = found
                .iter()
                .map(|(id, name)| {
                    format!(
                        "<a href=\"{HOME}?{}\">{}</a>",
                        q.link(Some(id)),
                        escape(name)
                    )
                })
                .collect();
            notice = format!(
                "<p id=\"notice\" class=\"notice\" role=\"status\">有多个客户名称匹配，请选择：{}</p>\n",
                links.join("、")
            );
        }
        Customer::None | Customer::Id(_) => {
            let filter = AuditFilter {
                customer: customer_id.clone(),
                user: given(&q.user),
                ip: given(&q.ip),
                action: given(&q.action),
                from: given(&q.from),
                to: given(&q.to),
            };
            let paging = PageParams {
                limit: Some(PER_PAGE),
                cursor: given(&q.cursor),
            };
            let found = match paging.validate() {
                Ok(p) => audit::search(&s.db, org, tz, &filter, &p).await,
                Err(e) => Err(e),
            };
            match found {
                Ok(found) => {
                    let ids: Vec<String> = found
                        .items
                        .iter()
                        .filter(|i| i.target_kind.as_deref() == Some("customer"))
                        .filter_map(|i| i.target_id.clone())
                        .collect();
                    let customer_names = customers::names_of(&s.db, org, &ids).await?;
                    for i in &found.items {
                        rows.push_str(&format!(
                            "<tr class=\"entry\" data-action=\"{action}\"><td>{time}</td><td>{who}</td>\
                             <td>{label}</td><td>{target}</td><td class=\"ip\">{ip}</td></tr>\n",
                            action = escape(&i.action),
                            time = time_with_seconds(&i.at, tz),
                            who = actor(i, &names),
                            label = audit_actions::shown(&i.action),
                            target = target(i, &customer_names),
                            ip = escape(i.client_ip.as_deref().unwrap_or("—")),
                        ));
                    }
                    next = found.next_cursor;
                }
                Err(e @ (Error::InvalidInput(_) | Error::MalformedBody(_))) => {
                    status = StatusCode::UNPROCESSABLE_ENTITY;
                    notice = format!(
                        "<p id=\"notice\" class=\"notice error\" role=\"alert\">{}</p>\n",
                        escape(&crate::text::error_for_people(e.code(), &e.to_string()))
                    );
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
    if rows.is_empty() && notice.is_empty() {
        rows = "<tr class=\"empty\"><td colspan=\"5\">没有符合条件的记录。</td></tr>\n".into();
    }

    let chain = audit::status(&s.db, org).await.map_err(Error::from)?;
    let sealed = match chain.sealed_at {
        Some(at) if chain.head.seq > 0 => format!(
            "已封存 {} 条，最新哈希 <code>{}</code>（{} 封存）",
            chain.head.seq,
            escape(&chain.head.hash[..chain.head.hash.len().min(16)]),
            crate::text::time(at, tz)
        ),
        _ => "尚未封存任何记录".into(),
    };
    let waiting = if chain.unsealed > 0 {
        format!("，{} 条新记录等待封存（每分钟一次）", chain.unsealed)
    } else {
        String::new()
    };

    let mut member_options: Vec<(String, String)> = members
        .iter()
        .map(|u| (u.id.clone(), u.name.clone()))
        .collect();
    member_options.sort_by(|a, b| a.1.cmp(&b.1));
    let action_options: Vec<(String, String)> = ACTIONS
        .iter()
        .map(|(k, l)| (k.to_string(), l.to_string()))
        .collect();
    let customer_value = match &customer {
        Customer::Id(id) => Some(id.clone()),
        _ => given(&q.customer),
    };
    let form = format!(
        "<form id=\"filters\" method=\"get\" action=\"{HOME}\">\n{customer}{user}{action}{ip}{from}{to}\
         <button type=\"submit\">查询</button> <a href=\"{HOME}\">清除条件</a>\n</form>\n",
        customer = input("customer", "客户（名称或编号）", "text", customer_value),
        user = select("user", "操作人", &member_options, given(&q.user).as_deref()),
        action = select("action", "操作", &action_options, given(&q.action).as_deref()),
        ip = input("ip", "IP 地址", "text", given(&q.ip)),
        from = input("from", "开始日期", "date", given(&q.from)),
        to = input("to", "结束日期", "date", given(&q.to)),
    );
    let pages = match next {
        Some(c) => format!(
            "<nav class=\"pages\"><a href=\"{HOME}?{}&cursor={}\">下一页</a></nav>\n",
            q.link(customer_id.as_deref()),
            enc(&c)
        ),
        None => String::new(),
    };
    let body = format!(
        "<p class=\"meta\"><a href=\"/admin/people\">{WHERE_ROLES_ARE_SET}</a> · <a href=\"/admin/rules\">管理 → 规则设置</a></p>\n\
         <h1>审计日志</h1>\n\
         <p id=\"chain\" class=\"meta\">审计链：{sealed}{waiting}。每日 08:00 的锚点卡片会发给安全管理员。</p>\n\
         {form}{notice}\
         <table id=\"entries\">\n<thead><tr><th>时间</th><th>操作人</th><th>操作</th><th>对象</th><th>IP 地址</th></tr></thead>\n\
         <tbody>\n{rows}</tbody></table>\n{pages}\
         <p class=\"meta\">按时间先后排列；时间为本组织时区。记录只含编号，不含电话、邮箱等个人信息。</p>\n"
    );
    Ok(Html {
        title: "审计日志".into(),
        page: "audit",
        body,
        csrf: Some(session.csrf_token.clone()),
        signed_in: Some(session.user_name.clone()),
        ..Html::default()
    }
    .into_response(status))
}
