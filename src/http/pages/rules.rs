//! `/admin/rules` — 管理 → 规则设置: the rule set in force (its version, who imported it
//! and when, and what it says), edited as a form for the common numbers or as TOML, then
//! checked, simulated over a chosen period or imported. Only active members holding the
//! `admin` role see or use it (decided in src/access/). The page runs what
//! `closeloop rules check|simulate|import` runs (`rules::candidate`,
//! `simulate::against_in_force`): checking and simulating write nothing; an import is the
//! next version, audited as the signed-in member. Plain HTML forms with the session's CSRF
//! token, so the page needs no script.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use axum::Router;
use chrono::{NaiveDate, TimeZone};
use serde::Deserialize;
use serde_json::Value;

use crate::access::Actor;
use crate::directory::users;
use crate::error::{Error, Result};
use crate::http::pages::people::{csrf_field, csrf_ok, require_admin, stale_form, value};
use crate::http::pages::session::Session;
use crate::http::pages::sidebar::{escape, form_pairs, org_timezone, redirect, Html, PageResult};
use crate::http::AppState;
use crate::rules::candidate::{self, ImportError, RuleError};
use crate::rules::store::{self, Imported};
use crate::rules::{ActionKind, Requirements, RuleSet};
use crate::simulate::{GateOutcome, Outcome, Report};
use crate::text;

const HOME: &str = "/admin/rules";
/// Where the page sits, as the people page names itself.
pub const WHERE_RULES_ARE_SET: &str = "管理 → 规则设置";
/// The default simulation period, in days back from today.
const DEFAULT_DAYS: u64 = 30;

/// The gate requirements the form edits and the summaries name: (key in `Requirements`,
/// label, unit). A field added to `Requirements` needs its line here (a unit test says so).
const REQUIREMENTS: &[(&str, &str, &str)] = &[
    ("communications", "有效沟通", "次"),
    ("proposals", "上传方案", "份"),
    ("valid_contact", "有效电话", ""),
    ("proposals_sent", "已发送方案", "份"),
    ("proposals_opened", "客户已打开方案", "份"),
    ("verified_calls", "已核实通话", "次"),
];

pub fn routes() -> Router<AppState> {
    Router::new().route("/admin/rules", get(overview).post(act)) // HOME, spelled out for the text guard
}

#[derive(Debug, Deserialize)]
struct PageQuery {
    /// Set after an import: the version now in force.
    imported: Option<i64>,
    /// Set after an import identical to the version in force.
    unchanged: Option<i64>,
}

// ----------------------------------------------------------------------------------------
// Requirements, field by field

fn requirement_label(key: &str) -> Option<(&'static str, &'static str)> {
    REQUIREMENTS
        .iter()
        .find(|(k, _, _)| *k == key)
        .map(|(_, label, unit)| (*label, *unit))
}

/// A requirement's name for people (a key without a label stays data, not text).
fn requirement_name(key: &str) -> String {
    match requirement_label(key) {
        Some((label, _)) => label.to_string(),
        None => format!("<span translate=\"no\">{}</span>", escape(key)),
    }
}

/// `Requirements` as (key, value) pairs: numbers and flags.
fn requirement_fields(q: &Requirements) -> Vec<(String, Value)> {
    match serde_json::to_value(q) {
        Ok(Value::Object(map)) => map.into_iter().collect(),
        _ => Vec::new(),
    }
}

/// What a stage's gate asks for, in words: `有效沟通 2 次、上传方案 1 份、有效电话`.
fn gate_words(q: &Requirements) -> String {
    let mut needs = Vec::new();
    for (key, v) in requirement_fields(q) {
        let name = requirement_name(&key);
        match v {
            Value::Bool(true) => needs.push(name),
            Value::Number(n) if n.as_u64().unwrap_or(0) > 0 => {
                let unit = requirement_label(&key).map_or("", |(_, u)| u);
                needs.push(format!("{name} {n} {unit}").trim_end().to_string());
            }
            _ => {}
        }
    }
    if needs.is_empty() {
        "无条件".into()
    } else {
        needs.join("、")
    }
}

// ----------------------------------------------------------------------------------------
// The summary in Chinese

fn document_label(kind: &str) -> String {
    match kind {
        "proposal" => "方案".into(),
        "proof" => "证明材料".into(),
        "artefact" => "交接资料".into(),
        other => format!("<span translate=\"no\">{}</span>", escape(other)),
    }
}

/// A number without a needless fraction: `0.7`, `1`.
fn number(x: f64) -> String {
    let s = format!("{x:.4}");
    match s.trim_end_matches('0').trim_end_matches('.') {
        "" | "-" => "0".into(),
        t => t.to_string(),
    }
}

/// The rule set as people read it: stages and gates, actions, anti-fraud and credibility
/// numbers, collaboration types with their time limits.
fn summary_html(r: &RuleSet) -> String {
    let stages: Vec<String> = r.stages.iter().map(|s| escape(&s.name)).collect();
    let mut gates = String::new();
    for s in r.stages.iter().skip(1) {
        gates.push_str(&format!(
            "<li>进入「{}」：{}</li>\n",
            escape(&s.name),
            gate_words(&s.requires)
        ));
    }
    let mut actions = String::new();
    for a in &r.actions {
        let mut what = vec![match a.kind {
            ActionKind::Tap => "点击记录".to_string(),
            ActionKind::Upload => format!(
                "上传{}",
                document_label(a.document.as_deref().unwrap_or_default())
            ),
            ActionKind::QuickAsk => format!(
                "向{}提问",
                escape(text::role_label(a.role.as_deref().unwrap_or_default()))
            ),
        }];
        if a.claim.is_some() {
            what.push("需核验通话".into());
        }
        if a.guarded {
            what.push("受防刷规则约束".into());
        }
        actions.push_str(&format!(
            "<li>「{}」：{}</li>\n",
            escape(text::action(&a.name)),
            what.join("，")
        ));
    }
    let af = &r.antifraud;
    let repeat = if af.repeat_limit == 0 {
        "重复操作限制：已关闭".to_string()
    } else {
        format!(
            "同一客户的同一动作在{}内超过 {} 次即拒绝，并冻结该销售对该客户的操作",
            text::duration(af.repeat_window),
            af.repeat_limit
        )
    };
    let burst = if af.ip_burst_count == 0 {
        "同一 IP 集中记录提醒：已关闭".to_string()
    } else {
        format!(
            "同一销售在{}内从同一 IP 记录 {} 次及以上即标记",
            text::duration(af.ip_burst_window),
            af.ip_burst_count
        )
    };
    let mut collab = String::new();
    for c in &r.collaboration {
        let hours = if c.business_hours {
            "（按工作时间计）"
        } else {
            ""
        };
        collab.push_str(&format!(
            "<li>「{}」：由{}答复，时限{}{hours}，{}内确认收到</li>\n",
            escape(&c.title),
            escape(text::role_label(&c.role)),
            text::duration(c.sla),
            text::duration(c.ack_within),
        ));
    }
    if collab.is_empty() {
        collab = "<li class=\"empty\">没有协作类型。</li>\n".into();
    }
    format!(
        "<dl class=\"facts\">\n<dt>阶段</dt><dd>{stages}</dd>\n</dl>\n\
         <h3>推进条件</h3>\n<ul class=\"list gates\">\n{gates}</ul>\n\
         <h3>动作（{n} 个）</h3>\n<ul class=\"list actions\">\n{actions}</ul>\n\
         <h3>防刷与可信度</h3>\n<ul class=\"list antifraud\">\n<li>{repeat}</li>\n<li>{burst}</li>\n\
         <li>通话至少 {secs} 秒才算有效沟通</li>\n\
         <li>可信度低于 {threshold} 时提醒直属上级（记录少于 {samples} 条时不判断）</li>\n</ul>\n\
         <h3>协作类型</h3>\n<ul class=\"list collaboration\">\n{collab}</ul>\n",
        stages = stages.join(" → "),
        n = r.actions.len(),
        secs = r.verification.min_call_seconds,
        threshold = number(r.credibility.threshold),
        samples = r.credibility.min_samples,
    )
}

// ----------------------------------------------------------------------------------------
// Errors in Chinese

/// What a check message from `RuleSet::check` means, in Chinese.
const CHECK_MESSAGES: &[(&str, &str)] = &[
    ("needs at least two stages", "至少需要两个阶段"),
    (
        "every stage needs a name",
        "每个阶段都需要 1 到 32 个字的名称",
    ),
    (
        "cannot have requirements",
        "第一个阶段不能设置推进条件：商机从这里开始",
    ),
    (
        "every action needs a name",
        "每个动作都需要 1 到 32 个字的名称",
    ),
    ("must not contain spaces", "名称不能包含空格或控制字符"),
    ("are reserved", "动作名称不能使用系统保留的前缀"),
    ("needs `document`", "上传类动作需要指定文档类型"),
    ("needs `role`", "提问类动作需要指定答复的角色"),
    ("only a tap can claim", "只有点击类动作可以要求核验"),
    (
        "no action uploads",
        "有阶段要求上传方案，但没有上传方案的动作",
    ),
    (
        "the keys are wecom",
        "证据策略只能针对企业微信、钉钉、飞书和默认",
    ),
    (
        "accepts` is empty",
        "证据策略不能为空，否则无法满足任何推进条件",
    ),
    (
        "call_window` must be",
        "通话核验窗口须在 1 秒到 24 小时之间",
    ),
    ("settle` must be", "核验等待时间不能超过 24 小时"),
    (
        "repeat_window` must be positive",
        "重复操作的时间窗口必须大于零",
    ),
    (
        "ip_burst_window` must be positive",
        "同一 IP 集中记录的时间窗口必须大于零",
    ),
    (
        "credibility.threshold` must be",
        "可信度阈值须大于 0 且不超过 1",
    ),
    (
        "lowercase letters and underscores",
        "协作类型标识只能由小写字母和下划线组成",
    ),
    ("is not presales, delivery", "协作类型的答复角色无效"),
    ("must be positive", "协作类型的答复时限和确认时限必须大于零"),
    ("needs a title", "协作类型需要标题"),
    (
        "is not a quick_ask action",
        "协作类型所用的动作不是提问类动作",
    ),
    ("lead_channels", "线索渠道权重须在 0 到 10 之间"),
    ("appears twice", "名称或标识重复出现"),
];

/// What a TOML reader's message means, in Chinese.
const SYNTAX_MESSAGES: &[(&str, &str)] = &[
    ("unknown field", "没有这个设置项"),
    ("invalid type", "值的类型不对"),
    ("missing field", "缺少必填的设置项"),
    ("unknown variant", "不是允许的取值"),
    ("duplicate key", "设置项重复"),
    ("invalid duration", "时长格式不对（例如 30m、24h）"),
];

/// A rule error for the page: Chinese first, the original in parentheses.
fn rule_error_html(e: &RuleError) -> String {
    let table = if e.syntax {
        SYNTAX_MESSAGES
    } else {
        CHECK_MESSAGES
    };
    let reason = table
        .iter()
        .find(|(needle, _)| e.message.contains(needle))
        .map_or(
            if e.syntax {
                "格式有误"
            } else {
                "未通过检查"
            },
            |(_, zh)| zh,
        );
    let place = match (e.line, &e.key) {
        (Some(l), Some(k)) => format!("第 {l} 行（<code translate=\"no\">{}</code>）：", escape(k)),
        (Some(l), None) => format!("第 {l} 行："),
        (None, Some(k)) => format!("<code translate=\"no\">{}</code>：", escape(k)),
        (None, None) => String::new(),
    };
    let what = if e.syntax {
        "规则文本有误"
    } else {
        "规则未通过检查"
    };
    format!(
        "<li class=\"rule-error\">{what}，{place}{reason}。<span class=\"meta\" translate=\"no\">（{}）</span></li>\n",
        escape(&e.to_string())
    )
}

fn error_notice(items: &str) -> String {
    format!(
        "<div id=\"errors\" class=\"notice error\" role=\"alert\">未保存，请修改后重试：<ul>\n{items}</ul></div>\n"
    )
}

/// An error in a form field: Chinese only (the field is named on the page).
fn field_error(message: &str) -> String {
    format!("<li class=\"field-error\">{}</li>\n", escape(message))
}

// ----------------------------------------------------------------------------------------
// The form editor

/// Minutes, without a needless fraction.
fn minutes(d: Duration) -> String {
    number(d.as_secs_f64() / 60.0)
}

fn number_input(name: &str, label: &str, value: &str, step: &str) -> String {
    format!(
        "<label class=\"field\"><span>{label}</span>\
         <input type=\"number\" name=\"{name}\" value=\"{}\" min=\"0\" step=\"{step}\" inputmode=\"decimal\"></label>\n",
        escape(value)
    )
}

fn form_editor(session: &Session, r: &RuleSet, period: &Period) -> String {
    let mut stages = String::new();
    for (i, s) in r.stages.iter().enumerate().skip(1) {
        let mut fields = String::new();
        for (key, v) in requirement_fields(&s.requires) {
            let name = format!("stage.{i}.{key}");
            let label = requirement_name(&key);
            match v {
                Value::Bool(on) => fields.push_str(&format!(
                    "<label class=\"check\"><input type=\"checkbox\" name=\"{name}\" value=\"1\"{}> 需要{label}</label>\n",
                    if on { " checked" } else { "" }
                )),
                other => {
                    let unit = requirement_label(&key).map_or("", |(_, u)| u);
                    let label = if unit.is_empty() {
                        label
                    } else {
                        format!("{label}（{unit}）")
                    };
                    fields.push_str(&number_input(&name, &label, &other.to_string(), "1"));
                }
            }
        }
        stages.push_str(&format!(
            "<fieldset class=\"stage\"><legend>进入「{}」的条件</legend>\n{fields}</fieldset>\n",
            escape(&s.name)
        ));
    }
    let af = &r.antifraud;
    let cr = &r.credibility;
    let mut collab = String::new();
    for (j, c) in r.collaboration.iter().enumerate() {
        collab.push_str(&format!(
            "<fieldset class=\"collab\"><legend>「{}」</legend>\n{}{}</fieldset>\n",
            escape(&c.title),
            number_input(
                &format!("collab.{j}.sla"),
                "答复时限（分钟）",
                &minutes(c.sla),
                "any"
            ),
            number_input(
                &format!("collab.{j}.ack_within"),
                "确认收到时限（分钟）",
                &minutes(c.ack_within),
                "any"
            ),
        ));
    }
    format!(
        "<section id=\"form-editor\"><h2>按表单修改</h2>\n\
         <p class=\"meta\">表单在下方规则文本的基础上修改常用数值；其他设置请在规则文本中修改。</p>\n\
         <form method=\"post\" action=\"{HOME}\">\n{csrf}\
         <input type=\"hidden\" name=\"source\" value=\"form\">\n\
         <input type=\"hidden\" name=\"base\" value=\"{base}\">\n\
         <h3>阶段推进条件</h3>\n{stages}\
         <h3>防刷规则</h3>\n<fieldset class=\"antifraud\"><legend>重复操作与同一 IP</legend>\n{repeat}{window}{burst}{burst_window}</fieldset>\n\
         <h3>可信度</h3>\n<fieldset class=\"credibility\"><legend>提醒直属上级</legend>\n{threshold}{samples}</fieldset>\n\
         <h3>协作时限</h3>\n{collab}{actions}</form></section>\n",
        csrf = csrf_field(session),
        base = escape(&r.to_toml()),
        repeat = number_input(
            "antifraud.repeat_limit",
            "同一动作次数上限（0 为关闭）",
            &af.repeat_limit.to_string(),
            "1"
        ),
        window = number_input(
            "antifraud.repeat_window",
            "次数上限的时间窗口（分钟）",
            &minutes(af.repeat_window),
            "any"
        ),
        burst = number_input(
            "antifraud.ip_burst_count",
            "同一 IP 集中记录次数（0 为关闭）",
            &af.ip_burst_count.to_string(),
            "1"
        ),
        burst_window = number_input(
            "antifraud.ip_burst_window",
            "同一 IP 的时间窗口（秒）",
            &af.ip_burst_window.as_secs().to_string(),
            "1"
        ),
        threshold = number_input(
            "credibility.threshold",
            "可信度阈值（0 到 1）",
            &number(cr.threshold),
            "0.01"
        ),
        samples = number_input(
            "credibility.min_samples",
            "最少记录数",
            &cr.min_samples.to_string(),
            "1"
        ),
        actions = actions_fields(period),
    )
}

fn toml_editor(session: &Session, text: &str, period: &Period) -> String {
    format!(
        "<section id=\"toml-editor\"><h2>按规则文本修改</h2>\n\
         <p class=\"meta\">与命令行导出、导入的规则文件相同。</p>\n\
         <form method=\"post\" action=\"{HOME}\">\n{csrf}\
         <input type=\"hidden\" name=\"source\" value=\"toml\">\n\
         <label class=\"field\"><span>规则文本</span>\
         <textarea name=\"toml\" rows=\"24\" spellcheck=\"false\" translate=\"no\">{text}</textarea></label>\n\
         {actions}</form></section>\n",
        csrf = csrf_field(session),
        text = escape(text),
        actions = actions_fields(period),
    )
}

/// The period to simulate over and the three buttons, under each editor.
fn actions_fields(period: &Period) -> String {
    format!(
        "<fieldset class=\"period\"><legend>模拟区间（按组织时区）</legend>\n\
         <label class=\"field\"><span>开始日期</span><input type=\"date\" name=\"since\" value=\"{since}\"></label>\n\
         <label class=\"field\"><span>结束日期</span><input type=\"date\" name=\"until\" value=\"{until}\"></label>\n\
         </fieldset>\n\
         <div class=\"form-actions\">\
         <button type=\"submit\" name=\"op\" value=\"check\" class=\"action\">检查</button> \
         <button type=\"submit\" name=\"op\" value=\"simulate\" class=\"action\">模拟</button> \
         <button type=\"submit\" name=\"op\" value=\"import\" class=\"action\">导入</button></div>\n\
         <p class=\"meta\">检查与模拟不写入任何数据；导入后成为新的生效版本，并记入审计日志。</p>\n",
        since = escape(&period.since),
        until = escape(&period.until),
    )
}

/// A form field: `None` when absent (the base's value stays), an error when it is not a
/// number of the kind asked for.
fn field<T: std::str::FromStr>(
    form: &[(String, String)],
    name: &str,
    what: &str,
) -> std::result::Result<Option<T>, String> {
    match value(form, name).map(str::trim) {
        None => Ok(None),
        Some(v) => v
            .parse::<T>()
            .map(Some)
            .map_err(|_| format!("{what}须为非负整数，收到「{v}」。")),
    }
}

/// A length of time entered in `unit_secs` units (minutes: 60).
fn duration_field(
    form: &[(String, String)],
    name: &str,
    what: &str,
    unit_secs: f64,
) -> std::result::Result<Option<Duration>, String> {
    match value(form, name).map(str::trim) {
        None => Ok(None),
        Some(v) => match v.parse::<f64>() {
            Ok(x) if x.is_finite() && x >= 0.0 && x * unit_secs < 1e9 => {
                Ok(Some(Duration::from_secs((x * unit_secs).round() as u64)))
            }
            _ => Err(format!("{what}须为非负数，收到「{v}」。")),
        },
    }
}

/// The form's numbers applied to the rule set it was shown from, and what was wrong with
/// any of them (none: the rule set is the candidate). With errors, the rule set holds every
/// other number entered (to show them again) and the base's for those in error.
fn apply_form(base: &RuleSet, form: &[(String, String)]) -> (RuleSet, Vec<String>) {
    let mut r = base.clone();
    let mut errors = Vec::new();
    let mut keep = |e: String| errors.push(e);
    for i in 1..r.stages.len() {
        let stage = r.stages[i].name.clone();
        let mut fields = serde_json::Map::new();
        for (key, v) in requirement_fields(&r.stages[i].requires) {
            let name = format!("stage.{i}.{key}");
            let label = requirement_label(&key).map_or(key.as_str(), |(l, _)| l);
            let new = match v {
                Value::Bool(_) => Value::Bool(value(form, &name).is_some()),
                old => match field::<u32>(form, &name, &format!("「{stage}」的{label}")) {
                    Ok(Some(n)) => Value::from(n),
                    Ok(None) => old,
                    Err(e) => {
                        keep(e);
                        old
                    }
                },
            };
            fields.insert(key, new);
        }
        match serde_json::from_value(Value::Object(fields)) {
            Ok(q) => r.stages[i].requires = q,
            Err(_) => keep(format!("「{stage}」的推进条件无效。")),
        }
    }
    let af = &mut r.antifraud;
    match field::<u32>(form, "antifraud.repeat_limit", "同一动作次数上限") {
        Ok(v) => af.repeat_limit = v.unwrap_or(af.repeat_limit),
        Err(e) => keep(e),
    }
    match duration_field(form, "antifraud.repeat_window", "次数上限的时间窗口", 60.0) {
        Ok(v) => af.repeat_window = v.unwrap_or(af.repeat_window),
        Err(e) => keep(e),
    }
    match field::<u32>(form, "antifraud.ip_burst_count", "同一 IP 集中记录次数") {
        Ok(v) => af.ip_burst_count = v.unwrap_or(af.ip_burst_count),
        Err(e) => keep(e),
    }
    match duration_field(form, "antifraud.ip_burst_window", "同一 IP 的时间窗口", 1.0) {
        Ok(v) => af.ip_burst_window = v.unwrap_or(af.ip_burst_window),
        Err(e) => keep(e),
    }
    let cr = &mut r.credibility;
    match value(form, "credibility.threshold").map(str::trim) {
        None => {}
        Some(v) => match v.parse::<f64>() {
            Ok(x) if x.is_finite() => cr.threshold = x,
            _ => keep(format!("可信度阈值须为 0 到 1 之间的数，收到「{v}」。")),
        },
    }
    match field::<u32>(form, "credibility.min_samples", "最少记录数") {
        Ok(v) => cr.min_samples = v.unwrap_or(cr.min_samples),
        Err(e) => keep(e),
    }
    for (j, c) in r.collaboration.iter_mut().enumerate() {
        let title = c.title.clone();
        match duration_field(
            form,
            &format!("collab.{j}.sla"),
            &format!("「{title}」的答复时限"),
            60.0,
        ) {
            Ok(v) => c.sla = v.unwrap_or(c.sla),
            Err(e) => keep(e),
        }
        match duration_field(
            form,
            &format!("collab.{j}.ack_within"),
            &format!("「{title}」的确认收到时限"),
            60.0,
        ) {
            Ok(v) => c.ack_within = v.unwrap_or(c.ack_within),
            Err(e) => keep(e),
        }
    }
    (r, errors)
}

// ----------------------------------------------------------------------------------------
// The simulation period and report

/// Two days in the organisation's zone, as the date inputs hold them (`YYYY-MM-DD`).
struct Period {
    since: String,
    until: String,
}

impl Period {
    fn default_for(now_ms: i64, tz: chrono_tz::Tz) -> Period {
        let today = chrono::DateTime::from_timestamp_millis(now_ms)
            .unwrap_or_default()
            .with_timezone(&tz)
            .date_naive();
        let since = today - chrono::Days::new(DEFAULT_DAYS);
        Period {
            since: since.format("%Y-%m-%d").to_string(),
            until: today.format("%Y-%m-%d").to_string(),
        }
    }

    fn from_form(form: &[(String, String)], fallback: Period) -> Period {
        let pick = |name: &str, d: String| {
            value(form, name)
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map_or(d, str::to_string)
        };
        Period {
            since: pick("since", fallback.since),
            until: pick("until", fallback.until),
        }
    }

    /// From the start of the first day to the end of the last (no later than now).
    fn window(&self, now_ms: i64, tz: chrono_tz::Tz) -> std::result::Result<(i64, i64), String> {
        let day = |s: &str, what: &str| {
            NaiveDate::parse_from_str(s, "%Y-%m-%d")
                .map_err(|_| format!("{what}无效，请选择日期。"))
        };
        let since = day(&self.since, "开始日期")?;
        let until = day(&self.until, "结束日期")?;
        if since > until {
            return Err("开始日期不能晚于结束日期。".into());
        }
        let start = |d: NaiveDate| {
            d.and_hms_opt(0, 0, 0)
                .and_then(|t| tz.from_local_datetime(&t).earliest())
                .map(|t| t.timestamp_millis())
                .ok_or_else(|| "日期超出范围。".to_string())
        };
        let from = start(since)?;
        let to = start(until.succ_opt().ok_or("日期超出范围。")?)?.min(now_ms);
        if from >= to {
            return Err("模拟区间还没有开始。".into());
        }
        Ok((from, to))
    }
}

fn outcome(o: Outcome) -> &'static str {
    match o {
        Outcome::Allowed => "放行",
        Outcome::RefusedRepeatLimit => "拒绝（超过次数上限）",
        Outcome::RefusedFrozen => "拒绝（冻结中）",
    }
}

fn gate_outcome(g: &GateOutcome) -> String {
    match g {
        GateOutcome::Passed => "通过".into(),
        GateOutcome::Refused(missing) => {
            let names: Vec<String> = missing.iter().map(|k| requirement_name(k)).collect();
            format!("拒绝（缺{}）", names.join("、"))
        }
        GateOutcome::UnknownStage => "无此阶段".into(),
    }
}

fn verification(v: &str) -> &'static str {
    if v == "too_short" {
        "通话过短"
    } else {
        "核验通过"
    }
}

/// A report's RFC 3339 time in the organisation's zone, in Chinese.
fn at(t: &str, tz: chrono_tz::Tz) -> String {
    chrono::DateTime::parse_from_rfc3339(t)
        .map(|d| text::time(d.timestamp_millis(), tz))
        .unwrap_or_else(|_| "时间未知".into())
}

fn name(n: &Option<String>, unknown: &str) -> String {
    escape(n.as_deref().unwrap_or(unknown))
}

fn report_html(r: &Report, since_ms: i64, until_ms: i64, tz: chrono_tz::Tz) -> String {
    let s = &r.summary;
    let p = &r.replayed;
    let in_force = if r.in_force_version == 0 {
        "内置默认规则".to_string()
    } else {
        format!("第 {} 版", r.in_force_version)
    };
    let mut out = format!(
        "<section id=\"simulation\"><h2>模拟结果</h2>\n\
         <p>候选规则对比生效的{in_force}，区间 {} 至 {}。</p>\n\
         <p class=\"meta\">回放：动作尝试 {} 次，通话核验 {} 条，阶段推进 {} 次，被拒推进 {} 次。</p>\n\
         <p class=\"total\">判定不同之处共 {} 处。</p>\n<ul class=\"list counts\">\n",
        text::time(since_ms, tz),
        text::time(until_ms, tz),
        p.attempts,
        p.call_claims,
        p.stage_moves,
        p.refused_stage_moves,
        s.total(),
    );
    for (label, n) in [
        ("原被拒绝、将被放行的动作", s.would_be_allowed),
        ("原被放行、将被拒绝的动作", s.would_be_refused),
        ("将被标记的同一 IP 集中记录", s.would_be_flagged),
        ("不再标记的同一 IP 集中记录", s.would_not_be_flagged),
        ("核验通过变为通话过短", s.verified_to_too_short),
        ("通话过短变为核验通过", s.too_short_to_verified),
        ("将被拒绝的阶段推进", s.moves_would_be_refused),
        ("将会通过的被拒推进", s.refused_moves_would_pass),
    ] {
        out.push_str(&format!("<li>{label}：{n}</li>\n"));
    }
    out.push_str("</ul>\n");
    if !r.attempts.is_empty() {
        out.push_str(
            "<h3>动作尝试</h3>\n<table class=\"attempts\"><thead><tr><th>时间</th><th>销售</th>\
             <th>客户</th><th>动作</th><th>生效规则</th><th>候选规则</th></tr></thead><tbody>\n",
        );
        for a in &r.attempts {
            out.push_str(&format!(
                "<tr data-point=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>\n",
                escape(&a.point),
                at(&a.at, tz),
                name(&a.rep_name, "未知成员"),
                name(&a.customer_name, "未知客户"),
                escape(text::action(&a.action)),
                outcome(a.in_force),
                outcome(a.candidate),
            ));
        }
        out.push_str("</tbody></table>\n");
    }
    if !r.bursts.is_empty() {
        out.push_str(
            "<h3>同一 IP 集中记录</h3>\n<table class=\"bursts\"><thead><tr><th>时间</th><th>销售</th>\
             <th>客户</th><th>动作</th><th>窗口内记录</th><th>候选规则</th></tr></thead><tbody>\n",
        );
        for b in &r.bursts {
            out.push_str(&format!(
                "<tr data-point=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{} 条</td><td>{}</td></tr>\n",
                escape(&b.point),
                at(&b.at, tz),
                name(&b.rep_name, "未知成员"),
                name(&b.customer_name, "未知客户"),
                escape(text::action(&b.action)),
                b.records_in_window,
                if b.change == "would_be_flagged" {
                    "将被标记"
                } else {
                    "不再标记"
                },
            ));
        }
        out.push_str("</tbody></table>\n");
    }
    if !r.verifications.is_empty() {
        out.push_str(
            "<h3>通话核验</h3>\n<table class=\"verifications\"><thead><tr><th>时间</th><th>销售</th>\
             <th>客户</th><th>通话时长</th><th>生效规则</th><th>候选规则</th></tr></thead><tbody>\n",
        );
        for v in &r.verifications {
            out.push_str(&format!(
                "<tr data-point=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{} 秒</td><td>{}</td><td>{}</td></tr>\n",
                escape(&v.point),
                at(&v.at, tz),
                name(&v.rep_name, "未知成员"),
                name(&v.customer_name, "未知客户"),
                v.duration_s,
                verification(v.in_force),
                verification(v.candidate),
            ));
        }
        out.push_str("</tbody></table>\n");
    }
    if !r.stage_moves.is_empty() {
        out.push_str(
            "<h3>阶段推进</h3>\n<table class=\"stage-moves\"><thead><tr><th>时间</th><th>操作人</th>\
             <th>客户</th><th>推进</th><th>生效规则</th><th>候选规则</th></tr></thead><tbody>\n",
        );
        for g in &r.stage_moves {
            let who = match &g.rep {
                Some(_) => name(&g.rep_name, "未知成员"),
                None => "系统".into(),
            };
            let kind = if g.kind == "advance" {
                ""
            } else {
                "（被拒的尝试）"
            };
            out.push_str(&format!(
                "<tr data-deal=\"{}\"><td>{}</td><td>{who}</td><td>{}</td><td>「{}」→「{}」{kind}</td><td>{}</td><td>{}</td></tr>\n",
                escape(&g.deal),
                at(&g.at, tz),
                name(&g.customer_name, "未知客户"),
                escape(g.from.as_deref().unwrap_or("—")),
                escape(&g.to),
                gate_outcome(&g.in_force),
                gate_outcome(&g.candidate),
            ));
        }
        out.push_str("</tbody></table>\n");
    }
    for n in &r.notes {
        if let Some(n) = text::for_people(n) {
            out.push_str(&format!(
                "<p class=\"meta note\">注：{}。</p>\n",
                escape(&n)
            ));
        }
    }
    out.push_str("<p class=\"meta\">模拟未写入任何数据。</p></section>\n");
    out
}

// ----------------------------------------------------------------------------------------
// The page

/// What the page shows besides the version in force.
struct View {
    /// The rule set the form shows (the candidate when it parsed, else the one in force).
    form: Option<RuleSet>,
    /// The TOML editor's text (the candidate as entered, else the one in force).
    text: Option<String>,
    period: Option<Period>,
    /// The result of the last check or simulation, or the errors.
    result: String,
    status: StatusCode,
}

impl View {
    fn plain(result: String) -> View {
        View {
            form: None,
            text: None,
            period: None,
            result,
            status: StatusCode::OK,
        }
    }
}

/// Who put a version in force, for people.
async fn imported_by(s: &AppState, org: &str, by: Option<&str>) -> String {
    match by {
        Some("cli") => "命令行".into(),
        Some("system") => "系统".into(),
        Some(id) => match users::get(&s.db, org, id).await {
            Ok(u) => escape(&u.name),
            Err(_) => "接口密钥".into(),
        },
        None => "未知".into(),
    }
}

async fn render(s: &AppState, session: &Session, view: View) -> PageResult {
    let org = session.org_id.as_str();
    let tz = org_timezone(s, org).await?;
    let current = s.rules.current_version(org).await?;
    let version = match store::provenance(&s.db, org).await? {
        Some(p) if p.version == current.version => format!(
            "第 {} 版，由{}于 {} 导入",
            p.version,
            imported_by(s, org, p.created_by.as_deref()).await,
            text::time(p.created_at_ms, tz)
        ),
        _ => "内置默认规则（尚未导入过规则）".into(),
    };
    let period = view
        .period
        .unwrap_or_else(|| Period::default_for(s.clock.now_ms(), tz));
    let form_rules = view.form.unwrap_or_else(|| current.rules.as_ref().clone());
    let text = view
        .text
        .unwrap_or_else(|| candidate::export(current.version, &current.rules));
    let body = format!(
        "<p class=\"meta\"><a href=\"/admin/people\">管理 → 人员与角色</a> · <a href=\"{HOME}\">{WHERE_RULES_ARE_SET}</a></p>\n\
         <h1>规则设置</h1>\n{result}\
         <section id=\"in-force\"><h2>生效规则</h2>\n<p class=\"version\">{version}</p>\n{summary}</section>\n\
         {form}{toml}",
        result = view.result,
        summary = summary_html(&current.rules),
        form = form_editor(session, &form_rules, &period),
        toml = toml_editor(session, &text, &period),
    );
    Ok(Html {
        title: "规则设置".into(),
        page: "rules",
        body,
        csrf: Some(session.csrf_token.clone()),
        signed_in: Some(session.user_name.clone()),
        ..Html::default()
    }
    .into_response(view.status))
}

/// `GET /admin/rules`.
async fn overview(
    State(s): State<AppState>,
    headers: HeaderMap,
    session: Result<Session>,
    Query(q): Query<PageQuery>,
) -> PageResult {
    let (session, _) = match require_admin(&s, &headers, session, HOME, WHERE_RULES_ARE_SET).await {
        Ok(ok) => ok,
        Err(page) => return Ok(page),
    };
    let notice = match (q.imported, q.unchanged) {
        (Some(v), _) => format!(
            "<p id=\"notice\" class=\"notice\" role=\"status\">已导入，第 {v} 版现已生效。</p>\n"
        ),
        (None, Some(v)) => format!(
            "<p id=\"notice\" class=\"notice\" role=\"status\">与生效的第 {v} 版相同，未保存新版本。</p>\n"
        ),
        (None, None) => String::new(),
    };
    render(&s, &session, View::plain(notice)).await
}

/// `POST /admin/rules`: `source` (`form` or `toml`) says which editor holds the candidate,
/// `op` (`check`, `simulate`, `import`) what to do with it.
async fn act(
    State(s): State<AppState>,
    headers: HeaderMap,
    session: Result<Session>,
    body: Bytes,
) -> PageResult {
    let (session, _) = match require_admin(&s, &headers, session, HOME, WHERE_RULES_ARE_SET).await {
        Ok(ok) => ok,
        Err(page) => return Ok(page),
    };
    let form = form_pairs(&body);
    if !csrf_ok(&session, &headers, &form) {
        return Ok(stale_form());
    }
    let org = session.org_id.as_str();
    let now = s.clock.now_ms();
    let tz = org_timezone(&s, org).await?;
    let period = Period::from_form(&form, Period::default_for(now, tz));
    let refused = |text: Option<String>, form_rules: Option<RuleSet>, items: String, period| View {
        form: form_rules,
        text,
        period: Some(period),
        result: error_notice(&items),
        status: StatusCode::UNPROCESSABLE_ENTITY,
    };

    // The candidate's text: as entered, or the form applied to the text it was shown from.
    let text = match value(&form, "source") {
        Some("toml") => value(&form, "toml").unwrap_or_default().to_string(),
        Some("form") => {
            let base = value(&form, "base").unwrap_or_default();
            let base = match candidate::parse(base) {
                Ok(r) => r,
                Err(e) => {
                    let view = refused(Some(base.into()), None, rule_error_html(&e), period);
                    return render(&s, &session, view).await;
                }
            };
            let (entered, errors) = apply_form(&base, &form);
            if !errors.is_empty() {
                let items: String = errors.iter().map(|e| field_error(e)).collect();
                let view = refused(Some(base.to_toml()), Some(entered), items, period);
                return render(&s, &session, view).await;
            }
            entered.to_toml()
        }
        _ => return Err(Error::invalid("未知的表单 (unknown form)").into()),
    };
    let rules = match candidate::parse(&text) {
        Ok(r) => r,
        Err(e) => {
            let view = refused(Some(text), None, rule_error_html(&e), period);
            return render(&s, &session, view).await;
        }
    };
    let result = match value(&form, "op") {
        Some("check") => format!(
            "<section id=\"check\"><h2>检查结果</h2>\n\
             <p class=\"notice\" role=\"status\">候选规则检查通过（未保存）。导入后将按以下规则执行：</p>\n{}</section>\n",
            summary_html(&rules)
        ),
        Some("simulate") => match period.window(now, tz) {
            Ok((since, until)) => {
                let report =
                    crate::simulate::against_in_force(&s.db, org, tz, &rules, since, until)
                        .await?;
                report_html(&report, since, until, tz)
            }
            Err(e) => {
                let view = refused(Some(text), Some(rules), field_error(&e), period);
                return render(&s, &session, view).await;
            }
        },
        Some("import") => {
            let actor = Actor::user(&session.user_id);
            return match candidate::import(&s.db, now, org, &actor, &text).await {
                Ok(Imported::New(v)) => Ok(redirect(&format!("{HOME}?imported={v}"))),
                Ok(Imported::Unchanged(v)) => Ok(redirect(&format!("{HOME}?unchanged={v}"))),
                Err(ImportError::Invalid(e)) => {
                    let view = refused(Some(text), None, rule_error_html(&e), period);
                    render(&s, &session, view).await
                }
                Err(ImportError::Store(e)) => Err(e.into()),
            };
        }
        _ => return Err(Error::invalid("未知的操作 (unknown operation)").into()),
    };
    let view = View {
        form: Some(rules),
        text: Some(text),
        period: Some(period),
        result,
        status: StatusCode::OK,
    };
    render(&s, &session, view).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_requirement_has_a_label_and_the_form_round_trips() {
        for (key, _) in requirement_fields(&Requirements::default()) {
            assert!(
                requirement_label(&key).is_some(),
                "add `{key}` to REQUIREMENTS: the form and the summaries name it"
            );
        }
        let base = RuleSet::default();
        let form = form_pairs(
            b"stage.1.communications=4&stage.1.valid_contact=1&antifraud.repeat_limit=5&\
              antifraud.repeat_window=90&collab.0.sla=120&credibility.threshold=0.8",
        );
        let (r, errors) = apply_form(&base, &form);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(r.stages[1].requires.communications, 4);
        assert!(r.stages[1].requires.valid_contact);
        assert_eq!(
            r.stages[1].requires.proposals,
            base.stages[1].requires.proposals
        );
        assert!(
            !r.stages[2].requires.valid_contact,
            "an unticked box is off"
        );
        assert_eq!(r.antifraud.repeat_limit, 5);
        assert_eq!(r.antifraud.repeat_window, Duration::from_secs(90 * 60));
        assert_eq!(r.collaboration[0].sla, Duration::from_secs(7200));
        assert_eq!(r.credibility.threshold, 0.8);
        assert_eq!(
            [number(0.0), number(0.7), number(10.0), number(1.5)],
            ["0", "0.7", "10", "1.5"]
        );
        assert_eq!(minutes(Duration::ZERO), "0");
        let (entered, errors) = apply_form(
            &base,
            &form_pairs(b"stage.1.communications=two&antifraud.repeat_limit=7"),
        );
        assert!(errors[0].contains("有效沟通"), "{errors:?}");
        assert_eq!(entered.antifraud.repeat_limit, 7, "kept to show again");
        assert_eq!(entered.stages[1].requires.communications, 2);
    }

    #[test]
    fn errors_read_in_chinese_with_the_original_in_parentheses() {
        let e = candidate::parse("[antifraud]\nrepeat_limt = 3\n").unwrap_err();
        let html = rule_error_html(&e);
        assert!(
            html.contains("第 2 行") && html.contains("没有这个设置项"),
            "{html}"
        );
        let e = candidate::parse("[credibility]\nthreshold = 1.5\n").unwrap_err();
        assert!(rule_error_html(&e).contains("可信度阈值"));
    }
}
