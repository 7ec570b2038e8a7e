//! Stage gates: a deal moves forward one stage at a time, and only when the target
//! stage's requirements (in the rule set) hold on evidence; a refusal lists exactly what
//! is missing and is itself a tracking point. A manager can roll a deal back to an
//! earlier stage (reason required, recorded) and reassign it; who counts as a manager is
//! `policy::authority`'s decision. A deal reaching the last stage is won; its owner (or a
//! manager) can end it lost (输单) from any open stage with a reason from the rule set, and
//! a manager can reopen a lost deal in the stage it was lost in.

use serde::Serialize;
use serde_json::json;
use sqlx::{AnyConnection, Row};

use crate::access::{Actor, ApiKeyRole};
use crate::db::{Db, Tx};
use crate::error::{Error, Result};
use crate::pipeline::{self, Deal};
use crate::policy::authority::{self, Managed};
use crate::policy::Who;
use crate::rules::{EvidenceKind, RuleSet};
use crate::security::fields::{LOST_NOTE, REASSIGN_REASON, ROLLBACK_REASON};
use crate::security::Cipher;
use crate::tracking::{self, NewPoint, Source};
use crate::verification::claims;

/// Who moves a deal: the audit actor, and the person when there is one (a signed-in
/// user, or the `actor` an integration names), whose freezes apply and who appears in
/// the ledger.
#[derive(Debug, Clone)]
pub struct Mover {
    pub actor: Actor,
    pub user: Option<String>,
    /// Where the move was made (`wecom`, ... or None for the API).
    pub platform: Option<String>,
    /// The API key's role when a key moves the deal; with no `user` it decides who may
    /// roll back and reassign.
    pub key: Option<ApiKeyRole>,
}

/// The evidence a customer has, as of a moment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Evidence {
    /// Valid communications: verified or attested claims the policy accepts, plus days of
    /// chat with enough messages.
    pub communications: i64,
    pub proposals: i64,
    /// Proposal documents sent to the customer as tracked links.
    pub proposals_sent: i64,
    /// Proposal documents the customer opened (not from the sender's own address).
    pub proposals_opened: i64,
    /// Claimed calls verified against a platform record (call or meeting record).
    pub verified_calls: i64,
    pub valid_phones: i64,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Missing {
    /// `communications`, `proposals`, `proposals_sent`, `proposals_opened`,
    /// `verified_calls`, `valid_contact` or `frozen`.
    pub code: &'static str,
    pub need: i64,
    pub have: i64,
    /// What to do, in Chinese.
    pub message: String,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct GateReport {
    pub deal: String,
    pub from: String,
    /// The next stage; None at the last one.
    pub to: Option<String>,
    pub passed: bool,
    pub missing: Vec<Missing>,
    pub evidence: Evidence,
}

/// Counts the customer's evidence as of `as_of` (epoch ms).
pub async fn evidence(
    conn: &mut AnyConnection,
    rules: &RuleSet,
    customer_id: &str,
    as_of: i64,
) -> Result<Evidence> {
    let mut out = Evidence::default();
    let rows = sqlx::query(
        "SELECT status, evidence_source, platform FROM point_verifications \
         WHERE customer_id = $1 AND status IN ('verified', 'attested') AND decided_at <= $2",
    )
    .bind(customer_id)
    .bind(as_of)
    .fetch_all(&mut *conn)
    .await?;
    for r in &rows {
        if r.get::<String, _>("status") == "verified"
            && matches!(
                r.get::<Option<String>, _>("evidence_source").as_deref(),
                Some("call_record" | "meeting")
            )
        {
            out.verified_calls += 1;
        }
        let kind = if r.get::<String, _>("status") == "attested" {
            Some(EvidenceKind::Attested)
        } else {
            r.get::<Option<String>, _>("evidence_source")
                .as_deref()
                .and_then(claims::kind_of)
        };
        let platform: Option<String> = r.get("platform");
        if kind.is_some_and(|k| rules.policy(platform.as_deref()).contains(&k)) {
            out.communications += 1;
        }
    }
    let days = sqlx::query(
        "SELECT DISTINCT day, source FROM chat_message_days \
         WHERE customer_id = $1 AND messages >= $2 AND updated_at <= $3",
    )
    .bind(customer_id)
    .bind(i64::from(rules.verification.chat_min_messages))
    .bind(as_of)
    .fetch_all(&mut *conn)
    .await?;
    let mut counted = std::collections::BTreeSet::new();
    for d in &days {
        let source: String = d.get("source");
        if rules.policy(Some(&source)).contains(&EvidenceKind::Chat) {
            counted.insert(d.get::<String, _>("day"));
        }
    }
    out.communications += counted.len() as i64;
    out.proposals = sqlx::query(
        "SELECT COUNT(*) AS n FROM documents WHERE customer_id = $1 AND kind = 'proposal' AND created_at <= $2",
    )
    .bind(customer_id)
    .bind(as_of)
    .fetch_one(&mut *conn)
    .await?
    .get("n");
    // Each proposal counts once however often it went out; an open counts only when it
    // did not come from the address the rep sent the link from (documents::count_open).
    let links = sqlx::query(
        "SELECT l.document_id, l.sent_at, l.first_opened_at, p.payload FROM document_links l \
         JOIN documents d ON d.id = l.document_id \
         LEFT JOIN tracking_points p ON p.id = l.opened_point_id \
         WHERE l.customer_id = $1 AND d.kind = 'proposal' AND l.sent_at <= $2",
    )
    .bind(customer_id)
    .bind(as_of)
    .fetch_all(&mut *conn)
    .await?;
    let mut sent = std::collections::BTreeSet::new();
    let mut opened = std::collections::BTreeSet::new();
    for l in &links {
        let document: String = l.get("document_id");
        let first_opened: Option<i64> = l.get("first_opened_at");
        let payload: Option<String> = l.get("payload");
        let by_sender = payload
            .and_then(|p| serde_json::from_str::<serde_json::Value>(&p).ok())
            .is_some_and(|p| p["from_sender_ip"] == json!(true));
        if first_opened.is_some_and(|at| at <= as_of) && !by_sender {
            opened.insert(document.clone());
        }
        sent.insert(document);
    }
    out.proposals_sent = sent.len() as i64;
    out.proposals_opened = opened.len() as i64;
    out.valid_phones = sqlx::query(
        "SELECT COUNT(*) AS n FROM contact_phones p JOIN contacts c ON c.id = p.contact_id \
         WHERE c.customer_id = $1 AND p.valid = 1",
    )
    .bind(customer_id)
    .fetch_one(&mut *conn)
    .await?
    .get("n");
    Ok(out)
}

/// What entering `to` still needs, given the evidence.
pub fn missing_for(rules: &RuleSet, to: &str, e: &Evidence) -> Vec<Missing> {
    let Some(stage) = rules.stages.iter().find(|s| s.name == to) else {
        return Vec::new();
    };
    let r = &stage.requires;
    let mut out = Vec::new();
    let need = i64::from(r.communications);
    if e.communications < need {
        out.push(Missing {
            code: "communications",
            need,
            have: e.communications,
            message: format!(
                "还需 {} 次有效沟通（已有 {} 次，需 {} 次）：核验通过且不少于 {} 分钟的通话、单日不少于 {} 条消息的聊天，或主管确认的证明",
                need - e.communications,
                e.communications,
                need,
                rules.verification.min_call_seconds.div_ceil(60),
                rules.verification.chat_min_messages
            ),
        });
    }
    let need = i64::from(r.proposals);
    if e.proposals < need {
        out.push(Missing {
            code: "proposals",
            need,
            have: e.proposals,
            message: format!(
                "还需上传 {} 份方案文档（已有 {} 份）",
                need - e.proposals,
                e.proposals
            ),
        });
    }
    let need = i64::from(r.proposals_sent);
    if e.proposals_sent < need {
        out.push(Missing {
            code: "proposals_sent",
            need,
            have: e.proposals_sent,
            message: format!(
                "还需向客户发送 {} 份方案（已发送 {} 份）：在「方案文档」中点「发送给客户」",
                need - e.proposals_sent,
                e.proposals_sent
            ),
        });
    }
    let need = i64::from(r.proposals_opened);
    if e.proposals_opened < need {
        out.push(Missing {
            code: "proposals_opened",
            need,
            have: e.proposals_opened,
            message: format!(
                "还需客户打开 {} 份已发送的方案（已打开 {} 份）",
                need - e.proposals_opened,
                e.proposals_opened
            ),
        });
    }
    let need = i64::from(r.verified_calls);
    if e.verified_calls < need {
        out.push(Missing {
            code: "verified_calls",
            need,
            have: e.verified_calls,
            message: format!(
                "还需 {} 次经平台记录核验的通话或会议（已有 {} 次）",
                need - e.verified_calls,
                e.verified_calls
            ),
        });
    }
    if r.valid_contact && e.valid_phones == 0 {
        out.push(Missing {
            code: "valid_contact",
            need: 1,
            have: 0,
            message: "缺少有效联系方式：客户的号码均已被标记失效，请先核实并更新号码".into(),
        });
    }
    out
}

struct DealRow {
    customer: String,
    stage: String,
    owner: Option<String>,
    lead: Option<String>,
    /// `open`, `won` or `lost`.
    outcome: String,
}

async fn deal_row(conn: &mut AnyConnection, org_id: &str, deal_id: &str) -> Result<DealRow> {
    let r = sqlx::query(
        "SELECT customer_id, stage, owner_user_id, lead_id, outcome FROM deals WHERE id = $1 AND org_id = $2",
    )
    .bind(deal_id)
    .bind(org_id)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or(Error::NotFound { what: "deal" })?;
    Ok(DealRow {
        customer: r.get("customer_id"),
        stage: r.get("stage"),
        owner: r.get("owner_user_id"),
        lead: r.get("lead_id"),
        outcome: r.get("outcome"),
    })
}

/// The refusal for moving a lost deal other than by reopening it.
fn lost(d: &DealRow, deal_id: &str) -> Error {
    Error::Refused {
        code: "deal_lost",
        message: "该商机已输单，需由主管重新打开后才能继续 (the deal is lost; a manager reopens it first)"
            .into(),
        details: json!({"deal": deal_id, "stage": d.stage, "outcome": d.outcome}),
    }
}

/// The target of a forward move: the next stage, which `to` may name but not skip past.
fn next_stage<'r>(rules: &'r RuleSet, from: &str, to: Option<&str>) -> Result<&'r str> {
    let illegal = |message: String| Error::Refused {
        code: "illegal_stage_move",
        message,
        details: json!({"from": from, "to": to, "stages": rules.stages.iter().map(|s| &s.name).collect::<Vec<_>>()}),
    };
    let Some(i) = rules.stage_index(from) else {
        return Err(illegal(format!(
            "当前阶段「{from}」不在生效的规则中，请由主管回退到规则中的阶段 (stage not in the rule set)"
        )));
    };
    let Some(next) = rules.stages.get(i + 1) else {
        return Err(illegal(format!(
            "「{from}」已是最后阶段 (already the last stage)"
        )));
    };
    match to {
        Some(t) if t != next.name => Err(illegal(format!(
            "只能从「{from}」推进到下一阶段「{}」，不能到「{t}」 (a deal moves forward one stage at a time)",
            next.name
        ))),
        _ => Ok(&next.name),
    }
}

/// The gate between a deal's stage and the next, with what is missing.
pub async fn report(db: &Db, rules: &RuleSet, org_id: &str, deal_id: &str) -> Result<GateReport> {
    let mut conn = db.pool.acquire().await?;
    let d = deal_row(&mut conn, org_id, deal_id).await?;
    let e = evidence(&mut conn, rules, &d.customer, i64::MAX).await?;
    let to = rules
        .stage_index(&d.stage)
        .and_then(|i| rules.stages.get(i + 1))
        .map(|s| s.name.clone());
    let missing = to
        .as_deref()
        .map(|t| missing_for(rules, t, &e))
        .unwrap_or_default();
    Ok(GateReport {
        deal: deal_id.to_string(),
        from: d.stage,
        passed: to.is_some() && missing.is_empty(),
        to,
        missing,
        evidence: e,
    })
}

fn stage_point(
    org_id: &str,
    user: &str,
    customer: &str,
    deal: &str,
    action: &str,
    by: &Mover,
    payload: serde_json::Value,
) -> NewPoint {
    NewPoint {
        deal: Some(deal.to_string()),
        platform: by.platform.clone(),
        ..NewPoint::new(org_id, user, customer, action, Source::System, payload)
    }
}

/// Moves a deal to its next stage if the gate holds; otherwise records the refusal (a
/// `rule.gate` point when a person tried) and answers what is missing.
#[allow(clippy::too_many_arguments)]
pub async fn advance(
    db: &Db,
    cipher: &Cipher,
    rules: &RuleSet,
    now_ms: i64,
    org_id: &str,
    tz: chrono_tz::Tz,
    deal_id: &str,
    to: Option<&str>,
    by: &Mover,
) -> Result<Deal> {
    let mut tx = db.begin().await?;
    let d = deal_row(&mut tx, org_id, deal_id).await?;
    match d.outcome.as_str() {
        "lost" => return Err(lost(&d, deal_id)),
        // Won under a rule set whose last stage it was: a rollback reopens it first.
        "won" => {
            return Err(Error::Refused {
                code: "deal_closed",
                message: "该商机已赢单；如需继续推进，请由主管先回退阶段 (the deal is won)".into(),
                details: json!({"deal": deal_id, "stage": d.stage, "outcome": d.outcome}),
            })
        }
        _ => {}
    }
    let target = next_stage(rules, &d.stage, to)?.to_string();
    let e = evidence(&mut tx, rules, &d.customer, i64::MAX).await?;
    let mut missing = missing_for(rules, &target, &e);
    if let Some(user) = &by.user {
        if crate::directory::users::exists_in(&mut tx, org_id, user).await? {
            if crate::antifraud::active_freeze_in(&mut tx, org_id, user, &d.customer)
                .await?
                .is_some()
            {
                missing.push(Missing {
                    code: "frozen",
                    need: 0,
                    have: 1,
                    message: "您对该客户的操作已被冻结，请联系主管解除".into(),
                });
            }
        } else {
            return Err(Error::UnknownReference(format!(
                "actor `{user}` does not exist"
            )));
        }
    }
    if !missing.is_empty() {
        let details = json!({"deal": deal_id, "from": d.stage, "to": target, "missing": missing, "evidence": e});
        if let Some(user) = &by.user {
            let p = stage_point(
                org_id,
                user,
                &d.customer,
                deal_id,
                "rule.gate",
                by,
                details.clone(),
            );
            tracking::write_in(&mut tx, now_ms, &p, tz).await?;
        }
        by.actor
            .audit(
                &mut tx,
                now_ms,
                org_id,
                "deal.advance_refused",
                ("deal", deal_id),
                details.clone(),
            )
            .await?;
        tx.commit().await?;
        let list: Vec<&str> = missing.iter().map(|m| m.message.as_str()).collect();
        return Err(Error::Refused {
            code: "gate_not_met",
            message: format!("无法推进到「{target}」：{}", list.join("；")),
            details,
        });
    }
    let last = rules.stages.last().is_some_and(|s| s.name == target);
    let change = Change {
        target: &target,
        kind: "advance",
        outcome: if last { "won" } else { "open" },
        ..Change::default()
    };
    move_stage(&mut tx, now_ms, org_id, tz, deal_id, &d, &change, by).await?;
    tx.commit().await?;
    pipeline::get_deal(db, cipher, org_id, deal_id).await
}

/// One change of a deal's stage or outcome, as `move_stage` records it.
#[derive(Default)]
struct Change<'a> {
    target: &'a str,
    /// `advance`, `rollback`, `lost` or `reopen`: the history row's kind and the names of
    /// the ledger point (`stage.{kind}`) and audit entry (`deal.{kind}`).
    kind: &'a str,
    /// The outcome after the change: `open`, `won` or `lost`.
    outcome: &'a str,
    /// A code kept in clear in the history row (a lost deal's reason from the rule set).
    reason_code: Option<&'a str>,
    /// A typed reason, encrypted (`ROLLBACK_REASON`).
    reason_enc: Option<&'a str>,
    /// A lost deal's note, encrypted (`LOST_NOTE`).
    lost_note_enc: Option<&'a str>,
}

#[allow(clippy::too_many_arguments)]
async fn move_stage(
    tx: &mut Tx,
    now_ms: i64,
    org_id: &str,
    tz: chrono_tz::Tz,
    deal_id: &str,
    d: &DealRow,
    c: &Change<'_>,
    by: &Mover,
) -> Result<()> {
    let history = crate::db::new_id();
    let closed_at = (c.outcome != "open").then_some(now_ms);
    let lost_reason = if c.outcome == "lost" {
        c.reason_code
    } else {
        None
    };
    // Compare-and-set: a concurrent move of the same deal makes this one a conflict.
    let moved = sqlx::query(
        "UPDATE deals SET stage = $1, updated_at = $2, outcome = $5, closed_at = $6, \
         lost_reason = $7, lost_note_enc = $8 WHERE id = $3 AND stage = $4 AND outcome = $9",
    )
    .bind(c.target)
    .bind(now_ms)
    .bind(deal_id)
    .bind(&d.stage)
    .bind(c.outcome)
    .bind(closed_at)
    .bind(lost_reason)
    .bind(c.lost_note_enc)
    .bind(&d.outcome)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    if moved != 1 {
        return Err(Error::Conflict(
            "the deal's stage changed meanwhile; reload and try again".into(),
        ));
    }
    sqlx::query(
        "INSERT INTO deal_stage_history (id, deal_id, from_stage, to_stage, actor_user_id, actor_api_key_id, reason, reason_enc, at, kind) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(&history)
    .bind(deal_id)
    .bind(&d.stage)
    .bind(c.target)
    .bind(&by.user)
    .bind(if by.actor.kind == "api_key" { by.actor.id.clone() } else { None })
    .bind(c.reason_code)
    .bind(c.reason_enc)
    .bind(now_ms)
    .bind(c.kind)
    .execute(&mut **tx)
    .await?;
    // A typed reason stays encrypted in the history row; the ledger and the audit log
    // name the row.
    let mut detail = json!({"from": d.stage, "to": c.target, "stage_history": history});
    if c.outcome != d.outcome {
        detail["outcome"] = json!(c.outcome);
    }
    if let Some(code) = c.reason_code {
        detail["reason"] = json!(code);
    }
    if let Some(user) = &by.user {
        let p = stage_point(
            org_id,
            user,
            &d.customer,
            deal_id,
            &format!("stage.{}", c.kind),
            by,
            detail.clone(),
        );
        tracking::write_in(tx, now_ms, &p, tz).await?;
    }
    by.actor
        .audit(
            tx,
            now_ms,
            org_id,
            &format!("deal.{}", c.kind),
            ("deal", deal_id),
            detail,
        )
        .await?;
    Ok(())
}

/// Refuses a rollback or reassignment unless the mover may manage the deal's owner
/// (`policy::authority` decides, as for the web pages).
async fn require_manager(tx: &mut Tx, org_id: &str, by: &Mover, owner: Option<&str>) -> Result<()> {
    require(tx, org_id, by, Managed::Deal { owner }).await
}

async fn require(tx: &mut Tx, org_id: &str, by: &Mover, what: Managed<'_>) -> Result<()> {
    let who = match (&by.user, by.key) {
        (Some(user), _) => Who::Person(user),
        (None, Some(role)) => Who::Key(role),
        (None, None) => {
            return Err(Error::Forbidden(
                "a rollback, reassignment, reopening or loss needs a person or an admin key".into(),
            ))
        }
    };
    authority::require(tx, org_id, who, what).await
}

/// A manager rolls a deal back to an earlier stage; the reason is required and kept,
/// encrypted, in the stage history, which the audit log and the ledger name.
#[allow(clippy::too_many_arguments)]
pub async fn rollback(
    db: &Db,
    cipher: &Cipher,
    rules: &RuleSet,
    now_ms: i64,
    org_id: &str,
    tz: chrono_tz::Tz,
    deal_id: &str,
    to: &str,
    reason: &str,
    by: &Mover,
) -> Result<Deal> {
    let reason = crate::validate::text("reason", reason, 500)?;
    let mut tx = db.begin().await?;
    let d = deal_row(&mut tx, org_id, deal_id).await?;
    require_manager(&mut tx, org_id, by, d.owner.as_deref()).await?;
    if d.outcome == "lost" {
        return Err(lost(&d, deal_id));
    }
    let Some(target) = rules.stage_index(to) else {
        return Err(Error::invalid(format!(
            "stage `{to}` is not in the rule set"
        )));
    };
    // A stage no longer in the rules counts as later than all of them.
    let current = rules.stage_index(&d.stage).unwrap_or(usize::MAX);
    if target >= current {
        return Err(Error::Refused {
            code: "illegal_stage_move",
            message: format!(
                "只能回退到「{}」之前的阶段 (a rollback goes to an earlier stage)",
                d.stage
            ),
            details: json!({"from": d.stage, "to": to}),
        });
    }
    // A won deal rolled back is open again.
    let reason_enc = cipher.encrypt(ROLLBACK_REASON, &reason);
    let change = Change {
        target: to,
        kind: "rollback",
        outcome: "open",
        reason_enc: Some(&reason_enc),
        ..Change::default()
    };
    move_stage(&mut tx, now_ms, org_id, tz, deal_id, &d, &change, by).await?;
    tx.commit().await?;
    pipeline::get_deal(db, cipher, org_id, deal_id).await
}

/// Ends an open deal lost (输单) in the stage it is in: a reason from the rule set's
/// `lost_reasons` and an optional note (kept encrypted on the deal). Its owner may, and
/// whoever may manage the deal.
#[allow(clippy::too_many_arguments)]
pub async fn lose(
    db: &Db,
    cipher: &Cipher,
    rules: &RuleSet,
    now_ms: i64,
    org_id: &str,
    tz: chrono_tz::Tz,
    deal_id: &str,
    reason: &str,
    note: Option<&str>,
    by: &Mover,
) -> Result<Deal> {
    let reason = reason.trim();
    if !rules.lost_reasons.iter().any(|r| r == reason) {
        return Err(Error::invalid(format!(
            "输单原因须为以下之一：{} (reason must be one of the rule set's lost_reasons)",
            rules.lost_reasons.join("、")
        )));
    }
    let note = crate::validate::opt_text("note", note, 500)?;
    let mut tx = db.begin().await?;
    let d = deal_row(&mut tx, org_id, deal_id).await?;
    require(
        &mut tx,
        org_id,
        by,
        Managed::Closing {
            owner: d.owner.as_deref(),
        },
    )
    .await?;
    if d.outcome != "open" {
        return Err(Error::Refused {
            code: "deal_closed",
            message: format!(
                "该商机已{}，不能再标记输单 (only an open deal can be lost)",
                if d.outcome == "won" {
                    "赢单"
                } else {
                    "输单"
                }
            ),
            details: json!({"deal": deal_id, "stage": d.stage, "outcome": d.outcome}),
        });
    }
    let note_enc = note.as_deref().map(|n| cipher.encrypt(LOST_NOTE, n));
    let change = Change {
        target: &d.stage,
        kind: "lost",
        outcome: "lost",
        reason_code: Some(reason),
        lost_note_enc: note_enc.as_deref(),
        ..Change::default()
    };
    move_stage(&mut tx, now_ms, org_id, tz, deal_id, &d, &change, by).await?;
    tx.commit().await?;
    pipeline::get_deal(db, cipher, org_id, deal_id).await
}

/// A manager reopens a lost deal in the stage it was lost in; the reason is required and
/// kept, encrypted, in the stage history.
#[allow(clippy::too_many_arguments)]
pub async fn reopen(
    db: &Db,
    cipher: &Cipher,
    now_ms: i64,
    org_id: &str,
    tz: chrono_tz::Tz,
    deal_id: &str,
    reason: &str,
    by: &Mover,
) -> Result<Deal> {
    let reason = crate::validate::text("reason", reason, 500)?;
    let mut tx = db.begin().await?;
    let d = deal_row(&mut tx, org_id, deal_id).await?;
    require_manager(&mut tx, org_id, by, d.owner.as_deref()).await?;
    if d.outcome != "lost" {
        return Err(Error::Refused {
            code: "deal_not_lost",
            message: "只有输单的商机可以重新打开；赢单的商机可回退阶段 (only a lost deal reopens; roll a won one back)"
                .into(),
            details: json!({"deal": deal_id, "stage": d.stage, "outcome": d.outcome}),
        });
    }
    let reason_enc = cipher.encrypt(ROLLBACK_REASON, &reason);
    let change = Change {
        target: &d.stage,
        kind: "reopen",
        outcome: "open",
        reason_enc: Some(&reason_enc),
        ..Change::default()
    };
    move_stage(&mut tx, now_ms, org_id, tz, deal_id, &d, &change, by).await?;
    tx.commit().await?;
    pipeline::get_deal(db, cipher, org_id, deal_id).await
}

/// A manager hands a deal (and its lead and customer) to another rep; the reason is kept,
/// encrypted, on the customer's new ownership period, which the audit log and the ledger
/// name.
#[allow(clippy::too_many_arguments)]
pub async fn reassign(
    db: &Db,
    cipher: &Cipher,
    now_ms: i64,
    org_id: &str,
    tz: chrono_tz::Tz,
    deal_id: &str,
    owner: &str,
    reason: &str,
    by: &Mover,
) -> Result<Deal> {
    let reason = crate::validate::text("reason", reason, 500)?;
    let mut tx = db.begin().await?;
    let d = deal_row(&mut tx, org_id, deal_id).await?;
    require_manager(&mut tx, org_id, by, d.owner.as_deref()).await?;
    let active = sqlx::query("SELECT status FROM users WHERE id = $1 AND org_id = $2")
        .bind(owner)
        .bind(org_id)
        .fetch_optional(&mut *tx)
        .await?
        .map(|r| r.get::<String, _>("status"));
    match active.as_deref() {
        None => {
            return Err(Error::UnknownReference(format!(
                "owner `{owner}` does not exist"
            )))
        }
        Some("active") => {}
        Some(_) => return Err(Error::invalid(format!("owner `{owner}` has left"))),
    }
    if d.owner.as_deref() == Some(owner) {
        return Err(Error::Conflict(
            "the deal already belongs to this person".into(),
        ));
    }
    sqlx::query("UPDATE deals SET owner_user_id = $1, updated_at = $2 WHERE id = $3")
        .bind(owner)
        .bind(now_ms)
        .bind(deal_id)
        .execute(&mut *tx)
        .await?;
    if let Some(lead) = &d.lead {
        sqlx::query("UPDATE leads SET owner_user_id = $1, updated_at = $2 WHERE id = $3")
            .bind(owner)
            .bind(now_ms)
            .bind(lead)
            .execute(&mut *tx)
            .await?;
    }
    let ownership = crate::customers::transfer_owner(
        &mut tx,
        now_ms,
        &d.customer,
        Some(owner),
        "reassigned",
        Some(&cipher.encrypt(REASSIGN_REASON, &reason)),
    )
    .await?;
    let detail = json!({"from": d.owner, "to": owner, "ownership": ownership});
    if let Some(user) = &by.user {
        let p = stage_point(
            org_id,
            user,
            &d.customer,
            deal_id,
            "deal.reassigned",
            by,
            detail.clone(),
        );
        tracking::write_in(&mut tx, now_ms, &p, tz).await?;
    }
    by.actor
        .audit(
            &mut tx,
            now_ms,
            org_id,
            "deal.reassign",
            ("deal", deal_id),
            detail,
        )
        .await?;
    tx.commit().await?;
    pipeline::get_deal(db, cipher, org_id, deal_id).await
}
