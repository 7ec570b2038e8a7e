//! What people read on pages and cards: times in the organisation's zone in a Chinese
//! format, durations in Chinese, the Chinese label of every action key closeloop writes
//! itself, role names, error messages without the API's English tail, and texts fitted to
//! a platform's card limits without losing their closing instruction.
//!
//! This module sits at the bottom of the module graph (it names no other module of the
//! crate), so every capability, page and card can use it. `tests/it/text_guard.rs` renders
//! every page and card and fails on an ISO timestamp, a raw action key or an English word.

use std::time::Duration;

use chrono::{DateTime, Datelike, NaiveDate, Timelike, Utc};

fn local(ms: i64, tz: chrono_tz::Tz) -> DateTime<chrono_tz::Tz> {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .unwrap_or_default()
        .with_timezone(&tz)
}

/// An organisation's zone from its stored IANA name (validated when it was stored);
/// the configuration's default, Asia/Shanghai, should a name not parse.
pub fn zone(name: &str) -> chrono_tz::Tz {
    name.parse().unwrap_or(chrono_tz::Asia::Shanghai)
}

/// A moment in the organisation's zone: `2026年12月7日 09:43`.
pub fn time(ms: i64, tz: chrono_tz::Tz) -> String {
    let t = local(ms, tz);
    format!(
        "{}年{}月{}日 {:02}:{:02}",
        t.year(),
        t.month(),
        t.day(),
        t.hour(),
        t.minute()
    )
}

/// A moment in the organisation's zone, without the year (lists, cards): `12月7日 09:43`.
pub fn time_short(ms: i64, tz: chrono_tz::Tz) -> String {
    let t = local(ms, tz);
    format!(
        "{}月{}日 {:02}:{:02}",
        t.month(),
        t.day(),
        t.hour(),
        t.minute()
    )
}

/// The clock time alone in the organisation's zone: `09:43`.
pub fn clock(ms: i64, tz: chrono_tz::Tz) -> String {
    let t = local(ms, tz);
    format!("{:02}:{:02}", t.hour(), t.minute())
}

/// A calendar day: `2026年12月7日`.
pub fn date(d: NaiveDate) -> String {
    format!("{}年{}月{}日", d.year(), d.month(), d.day())
}

/// A `YYYY-MM-DD` day as [`date`] writes it; anything else unchanged.
pub fn date_text(s: &str) -> String {
    NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d").map_or_else(|_| s.to_string(), date)
}

/// A week from its Monday: `2026年11月23日至11月29日` (the year once).
pub fn week(monday: NaiveDate) -> String {
    let sunday = monday + chrono::Days::new(6);
    if sunday.year() == monday.year() {
        format!("{}至{}月{}日", date(monday), sunday.month(), sunday.day())
    } else {
        format!("{}至{}", date(monday), date(sunday))
    }
}

/// A length of time in Chinese: `24小时`, `30分钟`, `1小时30分钟`, `2天`, `45秒`. Whole
/// days are written as hours up to 48 hours, the way people say a rolling window.
pub fn duration(d: Duration) -> String {
    let secs = d.as_secs();
    if secs == 0 {
        return "0分钟".into();
    }
    if secs < 60 {
        return format!("{secs}秒");
    }
    let minutes = secs.div_ceil(60);
    let (hours, m) = (minutes / 60, minutes % 60);
    if hours > 48 && m == 0 {
        let (days, h) = (hours / 24, hours % 24);
        return if h == 0 {
            format!("{days}天")
        } else {
            format!("{days}天{h}小时")
        };
    }
    match (hours, m) {
        (0, m) => format!("{m}分钟"),
        (h, 0) => format!("{h}小时"),
        (h, m) => format!("{h}小时{m}分钟"),
    }
}

/// `text` with every duration written the machine way (`1day`, `24h`, `30m`, as rule sets
/// and older records hold them) written in Chinese: `在1day内` → `在24小时内`.
pub fn durations_in(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut run = String::new();
    let flush = |run: &mut String, out: &mut String| {
        let token = run.trim();
        let starts_with_digit = token.starts_with(|c: char| c.is_ascii_digit());
        let has_unit = token.contains(|c: char| c.is_ascii_alphabetic());
        match humantime::parse_duration(token) {
            Ok(d) if starts_with_digit && has_unit => {
                out.push_str(&run[..run.len() - run.trim_start().len()]);
                out.push_str(&duration(d));
                out.push_str(&run[run.trim_end().len()..]);
            }
            _ => out.push_str(run),
        }
        run.clear();
    };
    for c in text.chars() {
        if c.is_ascii_alphanumeric() || c == ' ' {
            run.push(c);
        } else {
            flush(&mut run, &mut out);
            out.push(c);
        }
    }
    flush(&mut run, &mut out);
    out
}

/// Minutes as a mean response time: `45 分钟`, `2.5 小时`, `—` when there is none.
pub fn minutes(m: Option<f64>) -> String {
    match m {
        None => "—".into(),
        Some(m) if m < 120.0 => format!("{m:.0} 分钟"),
        Some(m) => format!("{:.1} 小时", m / 60.0),
    }
}

/// Time left or past on a countdown: `2 天 1 小时`, `3 小时 12 分`, `1 分 30 秒`
/// (assets/collab.js counts down in the same words).
pub fn span(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    let (d, h, m, sec) = (s / 86_400, s % 86_400 / 3600, s % 3600 / 60, s % 60);
    if d > 0 {
        format!("{d} 天 {h} 小时")
    } else if h > 0 {
        format!("{h} 小时 {m} 分")
    } else {
        format!("{m} 分 {sec} 秒")
    }
}

/// The action keys closeloop writes itself, with their Chinese labels. A rule set's own
/// actions (「已电话沟通」) are named in Chinese already and show as they are.
pub const SYSTEM_ACTIONS: &[(&str, &str)] = &[
    ("card.click", "点击卡片"),
    ("chat.day", "当日聊天消息"),
    ("document.sent", "发送文档"),
    ("document.opened", "客户打开文档"),
    ("collab.accept", "接受协作请求"),
    ("collab.answer", "答复协作请求"),
    ("collab.return", "退回协作请求"),
    ("collab.escalate", "协作请求超时升级"),
    ("stage.advance", "推进商机阶段"),
    ("stage.rollback", "回退商机阶段"),
    ("stage.lost", "商机输单"),
    ("stage.reopen", "重新打开商机"),
    ("deal.reassigned", "商机转交"),
    ("rule.repeat_limit", "触发重复操作限制（已拒绝）"),
    ("rule.frozen", "冻结期间的操作（已拒绝）"),
    ("rule.ip_burst", "同一 IP 短时间内记录过多"),
    ("rule.gate", "阶段推进未满足条件"),
    ("platform.contact_added", "添加客户联系人"),
    ("platform.contact_removed", "客户联系人已删除"),
    ("platform.member_left", "成员离职"),
    ("platform.meeting_ended", "会议结束"),
];

/// The prefixes of closeloop's own action keys: a key starting with one of them that has
/// no label is shown as the prefix's family, never raw.
const FAMILIES: &[(&str, &str)] = &[
    ("card.", "卡片操作"),
    ("chat.", "聊天记录"),
    ("document.", "文档记录"),
    ("collab.", "协作记录"),
    ("stage.", "商机阶段变更"),
    ("deal.", "商机变更"),
    ("rule.", "规则提醒"),
    ("platform.", "平台事件"),
    ("attestation.", "跟进证明"),
    ("system.", "系统记录"),
];

/// The Chinese label of one of closeloop's own action keys, if it is one.
pub fn action_label(action: &str) -> Option<&'static str> {
    SYSTEM_ACTIONS
        .iter()
        .find(|(k, _)| *k == action)
        .or_else(|| FAMILIES.iter().find(|(p, _)| action.starts_with(*p)))
        .map(|(_, label)| *label)
}

/// An action as people read it: closeloop's own keys by their label, the rule set's
/// (Chinese) names as they are.
pub fn action(action: &str) -> &str {
    action_label(action).unwrap_or(action)
}

/// The built-in roles' names, in the order pages list them (the rule set's default
/// `[[roles]]`).
pub const BUILTIN_ROLE_LABELS: [(&str, &str); 9] = [
    ("sales", "销售"),
    ("team_lead", "销售组长"),
    ("manager", "主管"),
    ("presales", "售前"),
    ("delivery", "交付"),
    ("finance", "财务"),
    ("legal", "法务"),
    ("security", "安全管理员"),
    ("admin", "管理员"),
];

/// A built-in role's Chinese name; any other role keeps its key (a role the rule set
/// adds is named by the rule set: `RuleSet::role_label`).
pub fn role_label(role: &str) -> &str {
    BUILTIN_ROLE_LABELS
        .iter()
        .find(|(key, _)| *key == role)
        .map_or(role, |(_, label)| label)
}

/// Whether `s` holds Chinese.
pub fn has_chinese(s: &str) -> bool {
    s.chars().any(|c| ('\u{4e00}'..='\u{9fff}').contains(&c))
}

/// A message for a page: the API's bilingual messages (`中文 (English)`) lose their English
/// tail. Returns `None` when the message has no Chinese at all.
pub fn for_people(message: &str) -> Option<String> {
    if !has_chinese(message) {
        return None;
    }
    let mut s = message.trim_end();
    // `… (english tail)`: the last parenthesis when it holds no Chinese.
    while s.ends_with(')') {
        let Some(open) = s.rfind(" (").or_else(|| s.rfind('(')) else {
            break;
        };
        if has_chinese(&s[open..]) || open == 0 {
            break;
        }
        s = s[..open].trim_end();
    }
    Some(s.to_string())
}

/// A message for a page, from an API error's code and message: Chinese messages without
/// their English tail, otherwise a Chinese sentence for the code.
pub fn error_for_people(code: &str, message: &str) -> String {
    if let Some(m) = for_people(message) {
        return m;
    }
    match code {
        "invalid_input" => "输入有误，请检查后重试",
        "malformed_body" | "bad_request" => "请求格式有误，请刷新页面后重试",
        "payload_too_large" => "内容过大，请缩小后重试",
        "unknown_reference" => "引用的对象不存在，请刷新页面后重试",
        "unauthenticated" => "请先登录",
        "forbidden" => "无权执行该操作",
        "not_found" => "未找到",
        "conflict" => "操作冲突，请刷新页面后重试",
        "unavailable" => "服务暂不可用，请稍后重试",
        "internal" => "服务器内部错误，请稍后重试",
        _ => "操作被拒绝",
    }
    .to_string()
}

/// How much text a platform's card shows in each place, in characters; `None` where the
/// platform documents no limit. Only WeCom cuts a card's texts (its template-card fields are
/// "建议不超过" 26 / 30 / 5 / 26 / 10 characters, docs/protocols/wecom.md); Feishu limits the
/// whole card to 30 KB and DingTalk documents no length for `cardParamMap` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CardLimits {
    pub title: Option<usize>,
    pub description: Option<usize>,
    pub label: Option<usize>,
    pub value: Option<usize>,
    pub button: Option<usize>,
}

/// WeCom's template card: `main_title.title` 26, `main_title.desc` 30,
/// `horizontal_content_list` `keyname` 5 and `value` 26, a button's `text` 10.
pub const WECOM_CARD: CardLimits = CardLimits {
    title: Some(26),
    description: Some(30),
    label: Some(5),
    value: Some(26),
    button: Some(10),
};

/// `s` in at most `max` characters, cut with an ellipsis when longer.
pub fn fit(s: &str, max: Option<usize>) -> String {
    match max {
        Some(max) if s.chars().count() > max => {
            let mut cut: String = s.chars().take(max.saturating_sub(1)).collect();
            cut.push('…');
            cut
        }
        _ => s.to_string(),
    }
}

/// `s` in at most `max` characters keeping its closing clause — the instruction a card
/// ends with (「请核实是否真实发生。」): the beginning is shortened instead. Falls back to
/// [`fit`] when the closing clause alone does not fit.
pub fn fit_keeping_end(s: &str, max: Option<usize>) -> String {
    let Some(max) = max else {
        return s.to_string();
    };
    if s.chars().count() <= max {
        return s.to_string();
    }
    let body = s.trim_end_matches(['。', '！', '.', '!']);
    let Some(cut) = body.rfind(['，', '；', '。', '：']) else {
        return fit(s, Some(max));
    };
    let tail = &s[cut..];
    let tail_len = tail.chars().count();
    if tail_len + 2 > max {
        return fit(s, Some(max));
    }
    let head: String = s[..cut].chars().take(max - tail_len - 1).collect();
    format!("{}…{tail}", head.trim_end_matches(is_cjk_space))
}

fn is_cjk_space(c: char) -> bool {
    c.is_whitespace() || matches!(c, '\u{3000}' | '，' | '、')
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHANGHAI: chrono_tz::Tz = chrono_tz::Asia::Shanghai;

    #[test]
    fn times_are_local_and_chinese() {
        // 2026-12-07T01:43:58.023Z is 09:43 in Shanghai.
        let ms = 1_796_607_838_023;
        assert_eq!(time(ms, SHANGHAI), "2026年12月7日 09:43");
        assert_eq!(time_short(ms, SHANGHAI), "12月7日 09:43");
        assert_eq!(clock(ms, SHANGHAI), "09:43");
        assert_eq!(time(ms, chrono_tz::UTC), "2026年12月7日 01:43");
        assert_eq!(date_text("2026-11-23"), "2026年11月23日");
        assert_eq!(date_text("soon"), "soon");
        let monday = NaiveDate::from_ymd_opt(2026, 11, 23).unwrap();
        assert_eq!(week(monday), "2026年11月23日至11月29日");
        let monday = NaiveDate::from_ymd_opt(2026, 12, 28).unwrap();
        assert_eq!(week(monday), "2026年12月28日至2027年1月3日");
    }

    #[test]
    fn durations_are_chinese() {
        let h = |n: u64| Duration::from_secs(n * 3600);
        assert_eq!(duration(h(24)), "24小时");
        assert_eq!(duration(Duration::from_secs(60)), "1分钟");
        assert_eq!(duration(Duration::from_secs(90 * 60)), "1小时30分钟");
        assert_eq!(duration(h(4)), "4小时");
        assert_eq!(duration(h(72)), "3天");
        assert_eq!(duration(h(74)), "3天2小时");
        assert_eq!(duration(Duration::from_secs(45)), "45秒");
        assert_eq!(
            durations_in("同类动作「已电话沟通」在1day内超过2次"),
            "同类动作「已电话沟通」在24小时内超过2次"
        );
        assert_eq!(durations_in("在 1h 30m 内"), "在 1小时30分钟 内");
        assert_eq!(durations_in("上限 2 次"), "上限 2 次");
        assert_eq!(minutes(Some(45.0)), "45 分钟");
        assert_eq!(minutes(Some(150.0)), "2.5 小时");
        assert_eq!(span(3 * 3_600_000 + 12 * 60_000), "3 小时 12 分");
        assert_eq!(span(90_000), "1 分 30 秒");
        assert_eq!(span(2 * 86_400_000 + 3_600_000), "2 天 1 小时");
    }

    #[test]
    fn closeloop_keys_have_labels_and_rule_set_names_stay() {
        assert_eq!(action("document.sent"), "发送文档");
        assert_eq!(action("platform.contact_added"), "添加客户联系人");
        assert_eq!(action("collab.something_new"), "协作记录");
        assert_eq!(action("已电话沟通"), "已电话沟通");
        for (key, label) in SYSTEM_ACTIONS {
            assert!(has_chinese(label), "{key}");
        }
        assert_eq!(role_label("presales"), "售前");
    }

    #[test]
    fn english_tails_leave_page_messages() {
        assert_eq!(
            for_people("该请求已由他人接受 (someone else took it)").as_deref(),
            Some("该请求已由他人接受")
        );
        assert_eq!(
            for_people("请填写：预算（万元） (the template's fields are required)").as_deref(),
            Some("请填写：预算（万元）")
        );
        assert_eq!(for_people("not found"), None);
        assert_eq!(
            error_for_people("invalid_input", "answer must be at most 2000 characters"),
            "输入有误，请检查后重试"
        );
    }

    #[test]
    fn a_long_card_text_keeps_its_instruction() {
        let alert = "李明 在短时间内从同一 IP 连续记录了 3 条跟进，请核实是否真实发生。";
        let fitted = fit_keeping_end(alert, Some(30));
        assert!(fitted.chars().count() <= 30, "{fitted}");
        assert!(fitted.ends_with("，请核实是否真实发生。"), "{fitted}");
        assert!(fitted.starts_with("李明"), "{fitted}");
        assert_eq!(fit_keeping_end("短文本。", Some(30)), "短文本。");
        assert_eq!(fit("一二三四五六", Some(4)), "一二三…");
        assert_eq!(fit("一二三四五六", None), "一二三四五六");
    }
}
