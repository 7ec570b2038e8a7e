//! The customer's timeline in the sidebar: the tracking ledger for one customer, in the
//! order it happened, labelled in Chinese (`crate::text`) and shown in the organisation's
//! local time.

use sqlx::Row;

use super::sidebar::escape;
use crate::error::Result;
use crate::http::AppState;

/// How many of the latest points the sidebar shows.
pub const SHOWN: i64 = 50;

/// The Chinese label of where a point came from.
pub fn source_label(source: &str) -> &'static str {
    match source {
        "sidebar" => "侧边栏",
        "api" => "接口",
        "card" => "卡片",
        "platform_event" => "平台事件",
        "system" => "系统",
        _ => "其他",
    }
}

/// Who made a point, in Chinese: the member's name, or the customer, a platform or the
/// system.
fn actor_label(kind: &str, name: Option<String>) -> String {
    match kind {
        "customer" => "客户".into(),
        "platform" => "平台".into(),
        "system" => "系统".into(),
        _ => name.unwrap_or_else(|| "—".into()),
    }
}

/// The section: the latest [`SHOWN`] points on the customer, oldest first.
pub async fn section(s: &AppState, org: &str, customer: &str, tz: chrono_tz::Tz) -> Result<String> {
    let rows = sqlx::query(
        "SELECT p.id, p.actor_kind, p.action, p.source, p.occurred_at, u.name AS actor_name \
         FROM tracking_points p LEFT JOIN users u ON u.id = p.actor_user_id \
         WHERE p.org_id = $1 AND p.customer_id = $2 \
         ORDER BY p.occurred_at DESC, p.id DESC LIMIT $3",
    )
    .bind(org)
    .bind(customer)
    .bind(SHOWN + 1)
    .fetch_all(&s.db.pool)
    .await?;
    let more = rows.len() as i64 > SHOWN;
    let mut items = String::new();
    for r in rows.iter().take(SHOWN as usize).rev() {
        let action: String = r.get("action");
        let source: String = r.get("source");
        let at: i64 = r.get("occurred_at");
        let when = crate::text::time(at, tz);
        let what = crate::text::action(&action);
        let who = actor_label(&r.get::<String, _>("actor_kind"), r.get("actor_name"));
        items.push_str(&format!(
            "<li class=\"point\" data-point=\"{}\" data-action=\"{}\" data-source=\"{}\">\
             <span class=\"what\">{}</span><div class=\"meta\">{when} · {} · {}</div></li>\n",
            escape(&r.get::<String, _>("id")),
            escape(&action),
            escape(&source),
            escape(what),
            escape(&who),
            source_label(&source),
        ));
    }
    let inner = if items.is_empty() {
        "<p class=\"empty\">还没有记录。</p>\n".to_string()
    } else {
        let note = if more {
            format!("<p class=\"meta\">仅显示最近 {SHOWN} 条。</p>\n")
        } else {
            String::new()
        };
        format!("{note}<ol class=\"list timeline\">\n{items}</ol>\n")
    };
    Ok(format!(
        "<section id=\"timeline\" data-refresh>\n<h2>客户时间线</h2>\n{inner}</section>\n"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_source_has_a_chinese_label() {
        for s in crate::tracking::Source::ALL {
            assert_ne!(source_label(s.as_str()), "其他", "{}", s.as_str());
        }
        assert_eq!(source_label("platform_event"), "平台事件");
        assert_eq!(crate::text::action_label("card.click"), Some("点击卡片"));
        assert_eq!(crate::text::action_label("已电话沟通"), None);
    }
}
