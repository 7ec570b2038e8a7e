//! `GET /collab/health?week=YYYY-MM-DD`: the weekly collaboration health report the
//! Monday card links to — per role and per person: requests, mean response time, overdue
//! ratio, return rate. Managers and admins see it; others are told it is theirs to ask for.

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use axum::Router;
use serde::Deserialize;
use sqlx::Row;

use crate::collab::health::{self, Figures};
use crate::credibility::Week;
use crate::error::{Error, Result};
use crate::http::pages::session::Session;
use crate::http::pages::sidebar::{
    escape, message_page, not_signed_in, org_timezone, Html, PageResult,
};
use crate::http::AppState;
use crate::text::{self, role_label};

pub fn routes() -> Router<AppState> {
    Router::new().route("/collab/health", get(page))
}

#[derive(Debug, Deserialize)]
struct WeekQuery {
    week: Option<String>,
}

fn percent(r: Option<f64>) -> String {
    r.map_or("—".into(), |r| format!("{:.0}%", r * 100.0))
}

/// One table row; the overdue ratio above 20 % is marked.
fn row(label: &str, f: &Figures) -> String {
    let hot = f.overdue_ratio.is_some_and(|r| r > 0.2);
    format!(
        "<tr{}><th scope=\"row\">{}</th><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
        if hot { " class=\"overdue\"" } else { "" },
        escape(label),
        f.requests,
        text::minutes(f.mean_response_minutes),
        percent(f.overdue_ratio),
        percent(f.return_rate),
    )
}

const HEAD: &str = "<thead><tr><th scope=\"col\"></th><th scope=\"col\">请求数</th>\
    <th scope=\"col\">平均响应</th><th scope=\"col\">超时占比</th><th scope=\"col\">退回率</th></tr></thead>\n";

async fn may_see(s: &AppState, user: &str) -> Result<bool> {
    Ok(sqlx::query(
        "SELECT user_id FROM user_roles WHERE user_id = $1 AND role IN ('manager', 'admin') LIMIT 1",
    )
    .bind(user)
    .fetch_optional(&s.db.pool)
    .await?
    .is_some_and(|r| !r.get::<String, _>("user_id").is_empty()))
}

async fn page(
    State(s): State<AppState>,
    headers: HeaderMap,
    session: Result<Session>,
    Query(q): Query<WeekQuery>,
) -> PageResult {
    let session = match session {
        Ok(session) => session,
        Err(e) => return Ok(not_signed_in(&s, &headers, e, "/collab/health")),
    };
    if !may_see(&s, &session.user_id).await? {
        return Ok(message_page(
            StatusCode::FORBIDDEN,
            "仅限主管查看",
            &format!(
                "协作健康周报只对主管和管理员开放（角色在 {} 中设置）。",
                crate::access::WHERE_ROLES_ARE_SET
            ),
        ));
    }
    let tz = org_timezone(&s, &session.org_id).await?;
    let week = match &q.week {
        Some(d) => {
            let date = crate::validate::date("week", d).map_err(|_| {
                Error::invalid("周的日期无效，请从周报卡片或本页的上一周、下一周链接打开")
            })?;
            Week::containing(date, tz)?
        }
        None => Week::before(s.clock.now_ms(), tz)?,
    };
    let mut conn = s.db.pool.acquire().await.map_err(Error::from)?;
    let h = health::compute(&mut conn, &session.org_id, &week).await?;
    let mut roles = String::new();
    for (role, f) in &h.by_role {
        roles.push_str(&row(role_label(role), f));
    }
    let mut people = String::new();
    for p in &h.by_person {
        people.push_str(&row(
            &format!("{}（{}）", p.name, role_label(&p.role)),
            &p.figures,
        ));
    }
    let out_of_range = || Error::invalid("该周超出可显示的范围");
    let prev = week
        .monday
        .checked_sub_days(chrono::Days::new(7))
        .ok_or_else(out_of_range)?;
    let next = week
        .monday
        .checked_add_days(chrono::Days::new(7))
        .ok_or_else(out_of_range)?;
    let body = format!(
        "<h1>协作健康周报</h1>\n<p class=\"muted\">{label}（本企业时区）</p>\n\
         <nav class=\"weeks\"><a href=\"/collab/health?week={prev}\">上一周</a> · \
         <a href=\"/collab/health?week={next}\">下一周</a></nav>\n\
         <section id=\"overall\"><h2>总体</h2>\n<table>\n{HEAD}<tbody>\n{overall}</tbody></table></section>\n\
         <section id=\"by-role\"><h2>按角色</h2>\n<table>\n{HEAD}<tbody>\n{roles}</tbody></table></section>\n\
         <section id=\"by-person\"><h2>按负责人</h2>\n<table>\n{HEAD}<tbody>\n{people}</tbody></table></section>\n\
         <p class=\"muted\">平均响应：从发起到对方确认接受；超时占比：到期仍未答复的请求占比；退回率：被退回的请求占比。超时占比高于 20% 的行标红。</p>\n",
        label = escape(&text::week(week.monday)),
        overall = row("全部", &h.overall),
        roles = if roles.is_empty() {
            "<tr><td colspan=\"5\">本周没有协作请求。</td></tr>\n".to_string()
        } else {
            roles
        },
        people = if people.is_empty() {
            "<tr><td colspan=\"5\">—</td></tr>\n".to_string()
        } else {
            people
        },
    );
    Ok(Html {
        title: "协作健康周报".into(),
        page: "health",
        body,
        csrf: Some(session.csrf_token.clone()),
        signed_in: Some(session.user_name.clone()),
        ..Html::default()
    }
    .into_response(StatusCode::OK))
}
