//! The customer's timeline in the sidebar: the tracking ledger for one customer, in the
//! order it happened, labelled in Chinese and shown in the organisation's local time.

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

/// The Chinese label of closeloop's own actions; a rule set's actions are already named
/// in Chinese and show as they are.
pub fn action_label(action: &str) -> Option<&'static str> {
    Some(match action {
        "card.click" => "点击卡片",
        "chat.day" => "当日聊天消息",
        "document.sent" => "发送文档",
        "document.opened" => "客户打开文档",
        "collab.accept" => "接受协作请求",
        "collab.answer" => "答复协作请求",
        "collab.return" => "退回协作请求",
        "collab.escalate" => "协作请求超时升级",
        "stage.advance" => "推进商机阶段",
        "stage.rollback" => "回退商机阶段",
        "deal.reassigned" => "商机转交",
        "rule.repeat_limit" => "触发重复操作限制（已拒绝）",
        "rule.frozen" => "冻结期间的操作（已拒绝）",
        "rule.ip_burst" => "同一 IP 短时间内记录过多",
        "rule.gate" => "阶段推进未满足条件",
        _ => return None,
    })
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
        let when = crate::clock::from_ms(at)
            .with_timezone(&tz)
            .format("%Y-%m-%d %H:%M")
            .to_string();
        let what = action_label(&action)
            .map(str::to_string)
            .unwrap_or_else(|| action.clone());
        let who = actor_label(&r.get::<String, _>("actor_kind"), r.get("actor_name"));
        items.push_str(&format!(
            "<li class=\"point\" data-point=\"{}\" data-action=\"{}\" data-source=\"{}\">\
             <span class=\"what\">{}</span><div class=\"meta\">{when} · {} · {}</div></li>\n",
            escape(&r.get::<String, _>("id")),
            escape(&action),
            escape(&source),
            escape(&what),
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
        assert_eq!(action_label("card.click"), Some("点击卡片"));
        assert_eq!(action_label("已电话沟通"), None);
    }
}
