//! The customer page's tools for closing the verified loop from the sidebar: sending a
//! proposal as a tracked link (inside WeCom straight into the open chat with the JS-SDK's
//! `sendChatMessage`, elsewhere as a link to copy), attesting a claim the platform could
//! not verify, marking a phone number invalid or valid again, ending a deal lost (输单),
//! and the manager's tools — rolling a deal back, reassigning it, reopening a lost one,
//! lifting a freeze.
//!
//! The rules stay in their modules (`documents`, `verification::attest`, `customers`,
//! `gates`, `antifraud`, and `policy::authority` for who manages whom); this module
//! renders the page's parts, reads what they show, and forwards what the script
//! (assets/tools.js) posts with the signed-in person as the actor.

use std::collections::HashMap;

use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::HeaderMap;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::Deserialize;
use sqlx::Row;

use crate::access::Actor;
use crate::antifraud::{self, Freeze};
use crate::customers::{self, Phone};
use crate::error::{Error, Result};
use crate::gates::{self, Mover};
use crate::http::pages::collab::WebError;
use crate::http::pages::session::Session;
use crate::http::pages::sidebar::{escape, message_page, not_signed_in, org_timezone, PageResult};
use crate::http::{ApiJson, AppState};
use crate::pipeline::Deal;
use crate::policy::authority::{Authority, Managed};
use crate::policy::Who;
use crate::rules::RuleSet;
use crate::verification::attest::{self, Attestation, NewAttestation};

/// Proposals listed on a customer's page.
const PROPOSALS: i64 = 20;
/// People offered when reassigning a deal.
const MEMBERS: i64 = 500;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/web/events/{id}/attestations", post(request_attestation))
        .route("/web/phones/{id}/validity", put(phone_validity))
        .route("/web/deals/{id}/rollback", post(rollback))
        .route("/web/deals/{id}/reassign", post(reassign))
        .route("/web/deals/{id}/lose", post(lose))
        .route("/web/deals/{id}/reopen", post(reopen))
        .route("/web/freezes/{id}/lift", post(lift))
        .route("/web/attestations/{id}/proof", get(attestation_proof))
}

use crate::text::time_short as local;

// ----------------------------------------------------------------------------------------
// Who is looking

/// The signed-in person as the customer page renders for them.
pub(crate) struct Viewer {
    user: String,
    authority: Authority,
    /// Active members a deal can be handed to (loaded for those who manage someone).
    members: Vec<(String, String)>,
    now: i64,
}

/// A touch on the page: its point and who recorded it.
pub(crate) struct Touch {
    pub(crate) point: String,
    pub(crate) actor: String,
}

impl Viewer {
    pub(crate) async fn load(s: &AppState, org: &str, user: &str, now: i64) -> Result<Viewer> {
        let mut conn = s.db.pool.acquire().await?;
        let authority = Authority::load(&mut conn, org, Who::Person(user)).await?;
        let members = if authority.manages_anyone() {
            sqlx::query(
                "SELECT id, name FROM users WHERE org_id = $1 AND status = 'active' \
                 ORDER BY name, id LIMIT $2",
            )
            .bind(org)
            .bind(MEMBERS)
            .fetch_all(&mut *conn)
            .await?
            .iter()
            .map(|r| (r.get("id"), r.get("name")))
            .collect()
        } else {
            Vec::new()
        };
        Ok(Viewer {
            user: user.to_string(),
            authority,
            members,
            now,
        })
    }

    /// Under an open deal: 「输单」 for its owner and whoever may manage it; 「回退阶段」 and
    /// 「重新分配」 for whoever may manage its owner.
    pub(crate) fn deal_tools(
        &self,
        rules: &RuleSet,
        deal: &str,
        stage: &str,
        owner: Option<&str>,
    ) -> String {
        let mut buttons = String::new();
        let mut forms = String::new();
        if self.authority.allows(Managed::Closing { owner }) {
            let mut options = String::from("<option value=\"\">请选择</option>");
            for r in &rules.lost_reasons {
                options.push_str(&format!("<option>{}</option>", escape(r)));
            }
            buttons.push_str(
                "<button type=\"button\" class=\"tool\" data-open-tool=\"lose\">输单</button>\n",
            );
            forms.push_str(&format!(
                "<form class=\"tool-form\" data-tool=\"lose\" data-deal=\"{deal}\" hidden>\n\
                 <p class=\"confirm-text\">确认后该商机将结束为输单，停在「{stage}」阶段；主管可重新打开。</p>\n\
                 <label class=\"field\"><span>输单原因 <em class=\"required\">必填</em></span><select name=\"reason\" required>{options}</select></label>\n\
                 <label class=\"field\"><span>补充说明（可选）</span><input type=\"text\" name=\"note\" maxlength=\"500\"></label>\n\
                 {actions}</form>\n",
                deal = escape(deal),
                stage = escape(stage),
                actions = form_actions("确认输单", "danger"),
            ));
        }
        if self.authority.allows(Managed::Deal { owner }) {
            let (b, f) = rollback_tool(rules, deal, stage);
            buttons.push_str(&b);
            forms.push_str(&f);
            let mut options = String::from("<option value=\"\">请选择</option>");
            for (id, name) in &self.members {
                if Some(id.as_str()) != owner {
                    options.push_str(&format!(
                        "<option value=\"{}\">{}</option>",
                        escape(id),
                        escape(name)
                    ));
                }
            }
            buttons.push_str(
                "<button type=\"button\" class=\"tool\" data-open-tool=\"reassign\">重新分配</button>\n",
            );
            forms.push_str(&format!(
                "<form class=\"tool-form\" data-tool=\"reassign\" data-deal=\"{deal}\" hidden>\n\
                 <label class=\"field\"><span>分配给</span><select name=\"owner\" required>{options}</select></label>\n\
                 <label class=\"field\"><span>原因 <em class=\"required\">必填</em></span>\
                 <input type=\"text\" name=\"reason\" maxlength=\"500\" required></label>\n\
                 {actions}</form>\n",
                deal = escape(deal),
                actions = form_actions("确认分配", "action"),
            ));
        }
        tools_box(&buttons, &forms)
    }

    /// Under a closed deal, for whoever may manage its owner: 「回退阶段」 for a won deal,
    /// 「重新打开」 for a lost one.
    pub(crate) fn closed_deal_tools(
        &self,
        rules: &RuleSet,
        deal: &str,
        stage: &str,
        owner: Option<&str>,
        won: bool,
    ) -> String {
        if !self.authority.allows(Managed::Deal { owner }) {
            return String::new();
        }
        let (buttons, forms) = if won {
            rollback_tool(rules, deal, stage)
        } else {
            (
                "<button type=\"button\" class=\"tool\" data-open-tool=\"reopen\">重新打开</button>\n".to_string(),
                format!(
                    "<form class=\"tool-form\" data-tool=\"reopen\" data-deal=\"{deal}\" hidden>\n\
                     <p class=\"confirm-text\">重新打开后，该商机回到「{stage}」阶段继续跟进。</p>\n\
                     <label class=\"field\"><span>原因 <em class=\"required\">必填</em></span>\
                     <input type=\"text\" name=\"reason\" maxlength=\"500\" required></label>\n\
                     {actions}</form>\n",
                    deal = escape(deal),
                    stage = escape(stage),
                    actions = form_actions("确认重新打开", "action"),
                ),
            )
        };
        tools_box(&buttons, &forms)
    }

    /// Per touch that claims something: the state of its attestation, and 「补充证明」
    /// for the rep who made a claim the evidence did not back.
    pub(crate) async fn touch_tools(
        &self,
        s: &AppState,
        org: &str,
        touches: &[Touch],
    ) -> Result<HashMap<String, String>> {
        let mut out = HashMap::new();
        if touches.is_empty() {
            return Ok(out);
        }
        let list = (0..touches.len())
            .map(|i| format!("${}", i + 2))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "SELECT v.point_id, v.status, v.window_closes_at, \
             (SELECT a.status FROM attestations a WHERE a.point_id = v.point_id \
              ORDER BY a.created_at DESC, a.id DESC LIMIT 1) AS attestation \
             FROM point_verifications v WHERE v.org_id = $1 AND v.point_id IN ({list})"
        );
        let mut q = sqlx::query(&sql).bind(org);
        for t in touches {
            q = q.bind(&t.point);
        }
        let rows = q.fetch_all(&s.db.pool).await?;
        let authors: HashMap<&str, &str> = touches
            .iter()
            .map(|t| (t.point.as_str(), t.actor.as_str()))
            .collect();
        for r in &rows {
            let point: String = r.get("point_id");
            let status: String = r.get("status");
            let window_closes_at: i64 = r.get("window_closes_at");
            let attestation: Option<String> = r.get("attestation");
            let label = match attestation.as_deref() {
                Some("pending") => "<span class=\"attest attest-pending\">证明待主管确认</span>",
                Some("confirmed") => "<span class=\"attest attest-confirmed\">主管已确认</span>",
                Some("rejected") => "<span class=\"attest attest-rejected\">主管已驳回</span>",
                _ => "",
            };
            let unbacked = match status.as_str() {
                "unverified" | "too_short" => true,
                "pending" => window_closes_at <= self.now,
                _ => false,
            };
            let mine = authors.get(point.as_str()) == Some(&self.user.as_str());
            let form = if mine && unbacked && attestation.as_deref() != Some("pending") {
                attest_form(&point)
            } else {
                String::new()
            };
            if !label.is_empty() || !form.is_empty() {
                out.insert(
                    point,
                    format!("<div class=\"tools attest-tools\">{label}{form}</div>"),
                );
            }
        }
        Ok(out)
    }

    /// Banners for the freezes on this customer that the viewer may lift (another rep's,
    /// whom they manage), each with 「解除冻结」. The viewer's own freeze has its banner in
    /// the page and no button.
    pub(crate) async fn freezes_section(
        &self,
        s: &AppState,
        org: &str,
        customer: &str,
        tz: chrono_tz::Tz,
    ) -> Result<String> {
        let mut inner = String::new();
        if self.authority.manages_anyone() {
            let rows = sqlx::query(
                "SELECT f.id, f.user_id, f.reason, f.frozen_at, u.name FROM action_freezes f \
                 JOIN users u ON u.id = f.user_id WHERE f.org_id = $1 AND f.customer_id = $2 \
                 AND f.lifted_at IS NULL ORDER BY f.frozen_at, f.id",
            )
            .bind(org)
            .bind(customer)
            .fetch_all(&s.db.pool)
            .await?;
            for r in &rows {
                let rep: String = r.get("user_id");
                if !self.authority.allows(Managed::Freeze { rep: &rep }) {
                    continue;
                }
                let id: String = r.get("id");
                let name: String = r.get("name");
                let reason: String = r.get("reason");
                inner.push_str(&format!(
                    "<div class=\"banner frozen tools\" data-freeze=\"{id}\">\n\
                     <p>{name} 对该客户的操作已冻结：{reason}（{at}）</p>\n\
                     <div class=\"tool-buttons\"><button type=\"button\" class=\"tool\" data-open-tool=\"lift\">解除冻结</button></div>\n\
                     <form class=\"tool-form\" data-tool=\"lift\" data-freeze=\"{id}\" hidden>\n\
                     <label class=\"field\"><span>解除原因 <em class=\"required\">必填</em></span>\
                     <input type=\"text\" name=\"reason\" maxlength=\"500\" required></label>\n\
                     {actions}</form>\n</div>\n",
                    id = escape(&id),
                    name = escape(&name),
                    reason = escape(&crate::text::durations_in(&reason)),
                    at = local(r.get("frozen_at"), tz),
                    actions = form_actions("确认解除", "action"),
                ));
            }
        }
        Ok(format!(
            "<section id=\"freeze-tools\" data-refresh>{inner}</section>\n"
        ))
    }
}

fn tools_box(buttons: &str, forms: &str) -> String {
    if buttons.is_empty() {
        return String::new();
    }
    format!(
        "<div class=\"tools manager-tools\">\n<div class=\"tool-buttons\">\n{buttons}</div>\n{forms}</div>\n"
    )
}

/// 「回退阶段」 and its form: the stages before `stage` (a stage no longer in the rules
/// counts as later than all of them, as in `gates`); nothing in the first stage.
fn rollback_tool(rules: &RuleSet, deal: &str, stage: &str) -> (String, String) {
    let current = rules.stage_index(stage).unwrap_or(rules.stages.len());
    if current == 0 {
        return (String::new(), String::new());
    }
    let mut options = String::new();
    for st in rules.stages[..current].iter().rev() {
        options.push_str(&format!("<option>{}</option>", escape(&st.name)));
    }
    (
        "<button type=\"button\" class=\"tool\" data-open-tool=\"rollback\">回退阶段</button>\n".to_string(),
        format!(
            "<form class=\"tool-form\" data-tool=\"rollback\" data-deal=\"{deal}\" hidden>\n\
             <label class=\"field\"><span>回退到</span><select name=\"to\" required>{options}</select></label>\n\
             <label class=\"field\"><span>原因 <em class=\"required\">必填</em></span>\
             <input type=\"text\" name=\"reason\" maxlength=\"500\" required></label>\n\
             {actions}</form>\n",
            deal = escape(deal),
            actions = form_actions("确认回退", "danger"),
        ),
    )
}

fn form_actions(submit: &str, class: &str) -> String {
    format!(
        "<div class=\"notice error\" data-error role=\"alert\" hidden></div>\n\
         <div class=\"form-actions\"><button type=\"submit\" class=\"{class}\">{submit}</button>\
         <button type=\"button\" class=\"cancel\" data-tool-cancel>取消</button></div>\n"
    )
}

fn attest_form(point: &str) -> String {
    format!(
        "<div class=\"tool-buttons\"><button type=\"button\" class=\"tool\" data-open-tool=\"attest\">补充证明</button></div>\n\
         <form class=\"tool-form\" data-tool=\"attest\" data-point=\"{point}\" hidden>\n\
         <label class=\"field\"><span>说明</span><input type=\"text\" name=\"note\" maxlength=\"1000\" \
         placeholder=\"如：客户用座机回电，通话约 10 分钟\"></label>\n\
         <label class=\"field\"><span>证明文件（可选）</span><input type=\"file\" name=\"proof\"></label>\n\
         <p class=\"meta\">提交后由您的直属上级确认；说明与文件至少填一项。</p>\n{actions}</form>\n",
        point = escape(point),
        actions = form_actions("提交证明", "action"),
    )
}

/// 「标记无效」 (with its reasons) or 「恢复有效」 after a phone number.
pub(crate) fn phone_tools(p: &Phone) -> String {
    if !p.valid {
        return format!(
            " <button type=\"button\" class=\"tool\" data-phone-restore=\"{}\">恢复有效</button>",
            escape(&p.id)
        );
    }
    let mut options = String::from("<option value=\"\">请选择</option>");
    for r in customers::INVALID_REASONS {
        options.push_str(&format!("<option>{r}</option>"));
    }
    format!(
        "<div class=\"tools phone-tools\"><button type=\"button\" class=\"tool\" data-open-tool=\"invalidate\">标记无效</button>\n\
         <form class=\"tool-form\" data-tool=\"invalidate\" data-phone=\"{id}\" hidden>\n\
         <label class=\"field\"><span>无效原因</span><select name=\"reason\" required>{options}</select></label>\n\
         <label class=\"field\"><span>补充说明（可选）</span><input type=\"text\" name=\"detail\" maxlength=\"100\"></label>\n\
         {actions}</form></div>",
        id = escape(&p.id),
        actions = form_actions("标记无效", "danger"),
    )
}

/// The customer's proposals with how often each went out and whether the customer has
/// opened it, each with 「发送给客户」.
pub(crate) async fn proposals_section(
    s: &AppState,
    org: &str,
    customer: &str,
    tz: chrono_tz::Tz,
    in_wecom: bool,
) -> Result<String> {
    let rows = sqlx::query(
        "SELECT d.id, b.filename_enc, d.created_at, CAST(COUNT(l.id) AS BIGINT) AS sent, \
         MAX(l.sent_at) AS last_sent, MIN(l.first_opened_at) AS first_opened, \
         CAST(COALESCE(SUM(l.open_count), 0) AS BIGINT) AS opens \
         FROM documents d JOIN blobs b ON b.id = d.blob_id \
         LEFT JOIN document_links l ON l.document_id = d.id \
         WHERE d.org_id = $1 AND d.customer_id = $2 AND d.kind = 'proposal' \
         GROUP BY d.id, b.filename_enc, d.created_at ORDER BY d.created_at DESC, d.id DESC LIMIT $3",
    )
    .bind(org)
    .bind(customer)
    .bind(PROPOSALS)
    .fetch_all(&s.db.pool)
    .await?;
    let mut items = String::new();
    for r in &rows {
        let id: String = r.get("id");
        let filename = crate::security::fields::open(
            &s.cipher,
            crate::security::fields::BLOB_FILENAME,
            &r.get::<String, _>("filename_enc"),
        )?;
        let sent: i64 = r.get("sent");
        let last_sent: Option<i64> = r.get("last_sent");
        let first_opened: Option<i64> = r.get("first_opened");
        let opens: i64 = r.get("opens");
        let state = match (first_opened, last_sent) {
            (Some(at), _) => format!(
                "<span class=\"status status-opened\">已打开</span> \
                 <span class=\"meta\">首次打开 {} · 共打开 {opens} 次 · 已发送 {sent} 次</span>",
                local(at, tz)
            ),
            (None, Some(at)) => format!(
                "<span class=\"status status-sent\">已发送</span> \
                 <span class=\"meta\">{sent} 次，最近 {} · 客户尚未打开</span>",
                local(at, tz)
            ),
            (None, None) => "<span class=\"status status-unsent\">未发送</span>".to_string(),
        };
        items.push_str(&format!(
            "<li class=\"proposal\" data-document=\"{id}\">\n<div class=\"doc-name\" translate=\"no\">{name}</div>\n\
             <div class=\"meta\">上传于 {uploaded}</div>\n<div class=\"doc-state\">{state}</div>\n\
             <button type=\"button\" class=\"action send\" data-send-document=\"{id}\" data-title=\"{name}\">发送给客户</button>\n</li>\n",
            id = escape(&id),
            name = escape(&filename),
            uploaded = local(r.get("created_at"), tz),
        ));
    }
    let list = if items.is_empty() {
        "<p class=\"empty\">还没有方案文档，可用「上传方案」上传。</p>\n".to_string()
    } else {
        format!("<ul class=\"list proposals\">\n{items}</ul>\n")
    };
    let hint = if in_wecom {
        "发送时生成可追踪链接并放入当前聊天；客户首次打开时记录。"
    } else {
        "发送时生成可追踪链接，复制后发给客户；客户首次打开时记录。"
    };
    Ok(format!(
        "<section class=\"proposals-box\">\n<h2>方案文档</h2>\n<div id=\"proposals\" data-refresh>\n{list}</div>\n\
         <p class=\"meta\">{hint}</p>\n<div id=\"share-result\" class=\"share\" role=\"status\" hidden></div>\n</section>\n"
    ))
}

// ----------------------------------------------------------------------------------------
// What the page's script posts

/// A signed-in person whose request carries the session's CSRF token, checked before the
/// body is read, so a forged request learns nothing from how its body would be judged.
struct Checked(Session);

impl FromRequestParts<AppState> for Checked {
    type Rejection = WebError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> std::result::Result<Self, Self::Rejection> {
        let session = Session::from_request_parts(parts, state).await?;
        session.require_csrf(&parts.headers)?;
        Ok(Checked(session))
    }
}

type WebResult<T> = std::result::Result<T, WebError>;

fn actor(session: &Session) -> Actor {
    Actor {
        kind: "user",
        id: Some(session.user_id.clone()),
    }
}

fn mover(session: &Session) -> Mover {
    Mover {
        actor: actor(session),
        user: Some(session.user_id.clone()),
        platform: session.platform.clone(),
        key: None,
    }
}

/// A reason the person must give.
fn required(value: Option<String>, missing: &str) -> Result<String> {
    match value.as_deref().map(str::trim) {
        Some(v) if !v.is_empty() => Ok(v.to_string()),
        _ => Err(Error::invalid(missing)),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AttestBody {
    note: Option<String>,
    /// A `proof` document of the customer, uploaded first.
    document: Option<String>,
}

/// `POST /web/events/{id}/attestations` `{"note": …, "document": …}`: the signed-in rep
/// asks their direct superior to confirm a claim; `attest::request` refuses anyone but
/// the claim's author.
async fn request_attestation(
    State(s): State<AppState>,
    Checked(session): Checked,
    Path(id): Path<String>,
    ApiJson(b): ApiJson<AttestBody>,
) -> WebResult<(StatusCode, Json<Attestation>)> {
    let point = crate::validate::id("event", &id).map_err(|_| Error::NotFound {
        what: "claim to verify",
    })?;
    let document = b
        .document
        .filter(|d| !d.trim().is_empty())
        .map(|d| crate::validate::id("document", &d))
        .transpose()?;
    let a = attest::request(
        &s.db,
        &s.cipher,
        s.clock.now_ms(),
        &session.org_id,
        &actor(&session),
        &point,
        NewAttestation {
            actor: session.user_id.clone(),
            document,
            note: b.note,
        },
    )
    .await?;
    Ok((StatusCode::CREATED, Json(a)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ValidityBody {
    valid: bool,
    /// Why it is invalid: 停机, 空号, 非本人, 其他…
    reason: Option<String>,
}

/// `PUT /web/phones/{id}/validity` `{"valid": false, "reason": "空号"}`: marks a number
/// dead (a reason is required) or valid again; the gates read it at once.
async fn phone_validity(
    State(s): State<AppState>,
    Checked(session): Checked,
    Path(id): Path<String>,
    ApiJson(b): ApiJson<ValidityBody>,
) -> WebResult<Json<Phone>> {
    let phone = crate::validate::id("phone", &id).map_err(|_| Error::NotFound { what: "phone" })?;
    let reason = if b.valid {
        None
    } else {
        Some(required(
            b.reason,
            "请选择号码无效的原因（停机、空号、非本人或其他）",
        )?)
    };
    Ok(Json(
        customers::set_phone_validity(
            &s.db,
            s.clock.now_ms(),
            &session.org_id,
            &actor(&session),
            &phone,
            b.valid,
            reason.as_deref(),
        )
        .await?,
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RollbackBody {
    to: Option<String>,
    reason: Option<String>,
}

/// `POST /web/deals/{id}/rollback` `{"to": "初步咨询", "reason": …}`: `gates::rollback`
/// checks that the signed-in person manages the deal's owner.
async fn rollback(
    State(s): State<AppState>,
    Checked(session): Checked,
    Path(id): Path<String>,
    ApiJson(b): ApiJson<RollbackBody>,
) -> WebResult<Json<Deal>> {
    let to = required(b.to, "请选择要回退到的阶段")?;
    let reason = required(b.reason, "请填写回退原因")?;
    let org = &session.org_id;
    let rules = s.rules.current(org).await?;
    let tz = org_timezone(&s, org).await?;
    Ok(Json(
        gates::rollback(
            &s.db,
            &s.cipher,
            &rules,
            s.clock.now_ms(),
            org,
            tz,
            &id,
            &to,
            &reason,
            &mover(&session),
        )
        .await?,
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LoseBody {
    reason: Option<String>,
    note: Option<String>,
}

/// `POST /web/deals/{id}/lose` `{"reason": one of the rule set's, "note": optional}`:
/// `gates::lose` checks that the signed-in person owns the deal or manages its owner.
async fn lose(
    State(s): State<AppState>,
    Checked(session): Checked,
    Path(id): Path<String>,
    ApiJson(b): ApiJson<LoseBody>,
) -> WebResult<Json<Deal>> {
    let reason = required(b.reason, "请选择输单原因")?;
    let org = &session.org_id;
    let rules = s.rules.current(org).await?;
    let tz = org_timezone(&s, org).await?;
    Ok(Json(
        gates::lose(
            &s.db,
            &s.cipher,
            &rules,
            s.clock.now_ms(),
            org,
            tz,
            &id,
            &reason,
            b.note.as_deref(),
            &mover(&session),
        )
        .await?,
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReopenBody {
    reason: Option<String>,
}

/// `POST /web/deals/{id}/reopen` `{"reason": …}`: `gates::reopen` checks that the
/// signed-in person manages the deal's owner.
async fn reopen(
    State(s): State<AppState>,
    Checked(session): Checked,
    Path(id): Path<String>,
    ApiJson(b): ApiJson<ReopenBody>,
) -> WebResult<Json<Deal>> {
    let reason = required(b.reason, "请填写重新打开的原因")?;
    let org = &session.org_id;
    let tz = org_timezone(&s, org).await?;
    Ok(Json(
        gates::reopen(
            &s.db,
            &s.cipher,
            s.clock.now_ms(),
            org,
            tz,
            &id,
            &reason,
            &mover(&session),
        )
        .await?,
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReassignBody {
    owner: Option<String>,
    reason: Option<String>,
}

/// `POST /web/deals/{id}/reassign` `{"owner": user id, "reason": …}`: `gates::reassign`
/// checks that the signed-in person manages the deal's owner.
async fn reassign(
    State(s): State<AppState>,
    Checked(session): Checked,
    Path(id): Path<String>,
    ApiJson(b): ApiJson<ReassignBody>,
) -> WebResult<Json<Deal>> {
    let owner = required(b.owner, "请选择接手的销售")?;
    let reason = required(b.reason, "请填写重新分配的原因")?;
    let org = &session.org_id;
    let tz = org_timezone(&s, org).await?;
    Ok(Json(
        gates::reassign(
            &s.db,
            &s.cipher,
            s.clock.now_ms(),
            org,
            tz,
            &id,
            &owner,
            &reason,
            &mover(&session),
        )
        .await?,
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LiftBody {
    reason: Option<String>,
}

/// `POST /web/freezes/{id}/lift` `{"reason": …}`: `antifraud::lift` checks that the
/// signed-in person manages the frozen rep (and is not that rep).
async fn lift(
    State(s): State<AppState>,
    Checked(session): Checked,
    Path(id): Path<String>,
    ApiJson(b): ApiJson<LiftBody>,
) -> WebResult<Json<Freeze>> {
    let id = crate::validate::id("freeze", &id).map_err(|_| Error::NotFound { what: "freeze" })?;
    let reason = required(b.reason, "请填写解除冻结的原因")?;
    Ok(Json(
        antifraud::lift(
            &s.db,
            &s.cipher,
            s.clock.now_ms(),
            &session.org_id,
            &actor(&session),
            Who::Person(&session.user_id),
            &id,
            &reason,
        )
        .await?,
    ))
}

/// `GET /web/attestations/{id}/proof`: the proof document the rep attached, which the
/// card asking the superior to decide links to. After sign-in, for those with authority
/// over the rep only (`attest::proof` asks `policy::authority`); shown in the browser
/// under the same sandbox as every served document.
async fn attestation_proof(
    State(s): State<AppState>,
    headers: HeaderMap,
    session: Result<Session>,
    Path(id): Path<String>,
) -> PageResult {
    let id = crate::validate::id("attestation", &id).map_err(|_| Error::NotFound {
        what: "attestation",
    })?;
    let session = match session {
        Ok(session) => session,
        Err(e) => {
            return Ok(not_signed_in(
                &s,
                &headers,
                e,
                &format!("/web/attestations/{id}/proof"),
            ))
        }
    };
    match attest::proof(
        &s.db,
        &s.cipher,
        &s.blobs,
        &session.org_id,
        Who::Person(&session.user_id),
        &id,
    )
    .await
    {
        Ok((doc, bytes)) => Ok(crate::http::documents::file_response(
            "inline",
            &doc.filename,
            &doc.content_type,
            bytes,
        )),
        Err(Error::NotFound {
            what: "proof document",
        }) => Ok(no_proof_file()),
        Err(e) => Err(e.into()),
    }
}

fn no_proof_file() -> Response {
    message_page(
        StatusCode::NOT_FOUND,
        "没有证明文件",
        "该证明只附了说明，没有上传文件：说明见卡片。",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn phone(valid: bool) -> Phone {
        Phone {
            id: "p-1\"><script>".into(),
            masked: "+86 138****8000".into(),
            valid,
            invalid_reason: None,
        }
    }

    #[test]
    fn phone_tools_offer_the_reasons_and_escape_the_id() {
        let html = phone_tools(&phone(true));
        for r in customers::INVALID_REASONS {
            assert!(html.contains(&format!("<option>{r}</option>")), "{html}");
        }
        assert!(
            html.contains("data-phone=\"p-1&quot;&gt;&lt;script&gt;\""),
            "{html}"
        );
        assert!(!html.contains("<script>"));
        assert!(phone_tools(&phone(false)).contains("恢复有效"));
    }

    #[test]
    fn reasons_are_required() {
        assert_eq!(required(Some(" 空号 ".into()), "x").unwrap(), "空号");
        assert!(required(Some("  ".into()), "x").is_err());
        assert!(required(None, "x").is_err());
    }
}
