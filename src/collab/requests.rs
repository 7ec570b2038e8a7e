//! Collaboration requests: quick-asks and handoffs from a rep to a role.
//!
//! Opening one routes it (the customer's assigned person for the role, else the role's
//! queue: every active member gets the card and the first to accept takes it), checks a
//! handoff's artefacts, snapshots the content with its hash, sends the cards and starts
//! the clocks (acknowledgement and SLA) — all in one transaction. Only the assignee may
//! answer or return it; a repeated action changes nothing.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use sqlx::Row;

use super::calendar::WorkCalendar;
use crate::access::Actor;
use crate::cards::{self, Card};
use crate::db::{new_id, Db, Tx};
use crate::error::{Error, Result};
use crate::jobs::{self, NewJob};
use crate::rules::{CollabKind, CollabType, RuleSet};
use crate::security::fields::{self, COLLAB_ANSWER, COLLAB_CONTENT, COLLAB_RETURN_REASON};
use crate::security::Cipher;

/// Card purpose of a request's card to its assignee (or a queue member).
pub const CARD_PURPOSE: &str = "collab.request";
/// The purpose of the card an overdue request's assignee's superiors get ([`super::sla`]).
pub const ESCALATION_PURPOSE: &str = "collab.escalation";
/// Job kinds of the two clocks.
pub const SLA_JOB: &str = "collab.sla";
pub const ACK_JOB: &str = "collab.ack";

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewRequest {
    /// The collaboration type (`presales_question`, `sales_to_presales`, ...).
    #[serde(rename = "type")]
    pub type_key: String,
    pub customer: String,
    pub deal: Option<String>,
    /// The rep asking.
    pub initiator: String,
    /// The template's prompts and their answers, e.g. {"问题": "是否支持私有化部署？"}.
    #[serde(default)]
    pub content: BTreeMap<String, String>,
    /// A handoff's artefacts: name → document id.
    #[serde(default)]
    pub artefacts: BTreeMap<String, String>,
    /// Where it was opened (the ledger point's source); the API when unset.
    #[serde(skip)]
    pub source: Option<crate::tracking::Source>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TrailEntry {
    pub at: String,
    pub actor: Option<String>,
    pub action: String,
    #[schema(value_type = Object)]
    pub detail: Value,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Request {
    pub id: String,
    /// `quick_ask`, `handoff` or `adhoc`.
    pub kind: String,
    #[serde(rename = "type")]
    pub type_key: String,
    pub title: String,
    pub customer: String,
    pub deal: Option<String>,
    pub initiator: String,
    pub responsible_role: String,
    /// None while it waits in the role's queue.
    pub assignee: Option<String>,
    /// `open`, `accepted`, `answered` or `returned`.
    pub status: String,
    #[schema(value_type = Object)]
    pub content: Value,
    /// SHA-256 of the content snapshot.
    pub content_hash: String,
    pub artefacts: BTreeMap<String, String>,
    pub answer: Option<String>,
    pub answer_date: Option<String>,
    /// The answer confirms a date (a schedule): 预计交付日期 is required.
    pub confirms_date: bool,
    /// A schedule's answer: the delivery person ticked 「已同步客户」 (None: not asked).
    pub customer_synced: Option<bool>,
    pub return_reason: Option<String>,
    pub acknowledged_at: Option<String>,
    pub ack_due_at: Option<String>,
    pub due_at: String,
    pub business_hours: bool,
    /// Past its deadline and not answered (shown red).
    pub overdue: bool,
    pub created_at: String,
    pub closed_at: Option<String>,
    pub trail: Vec<TrailEntry>,
    /// The request's cards that could not be delivered (shown to the initiator).
    pub undelivered: Vec<CardFailure>,
}

/// A card of the request that could not be delivered.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct CardFailure {
    pub card: String,
    pub recipient: String,
    /// `no_identity`, `not_visible`, `rate_limited` or `platform_refused`.
    pub reason: String,
    /// The reason in Chinese.
    pub reason_text: String,
}

/// The content snapshot's hash: canonical JSON (sorted keys) of the filled template.
pub fn content_hash(content: &Value) -> String {
    hex::encode(Sha256::digest(content.to_string().as_bytes()))
}

async fn trail(
    tx: &mut Tx,
    now_ms: i64,
    request: &str,
    actor: Option<&str>,
    action: &str,
    detail: Value,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO collab_events (id, request_id, at, actor_user_id, action, detail) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(new_id())
    .bind(request)
    .bind(now_ms)
    .bind(actor)
    .bind(action)
    .bind(detail.to_string())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn user_name(tx: &mut Tx, id: &str) -> Result<String> {
    Ok(sqlx::query("SELECT name FROM users WHERE id = $1")
        .bind(id)
        .fetch_optional(&mut **tx)
        .await?
        .map(|r| r.get("name"))
        .unwrap_or_default())
}

/// Who gets the request: the customer's assigned person for the role, else the role's
/// queue (every active member with that role). Returns (assignee, recipients).
async fn route(
    tx: &mut Tx,
    org_id: &str,
    customer: &str,
    role: &str,
) -> Result<(Option<String>, Vec<String>)> {
    let assigned = sqlx::query(
        "SELECT a.user_id FROM customer_assignments a JOIN users u ON u.id = a.user_id \
         WHERE a.customer_id = $1 AND a.role = $2 AND u.status = 'active'",
    )
    .bind(customer)
    .bind(role)
    .fetch_optional(&mut **tx)
    .await?;
    if let Some(r) = assigned {
        let id: String = r.get("user_id");
        return Ok((Some(id.clone()), vec![id]));
    }
    let queue = crate::directory::users::active_with_role(tx, org_id, role).await?;
    Ok((None, queue))
}

fn request_card(
    title: &str,
    hint: &str,
    initiator: &str,
    customer: &str,
    content: &Value,
    due: &str,
) -> Card {
    let content = content
        .as_object()
        .map(|o| {
            o.iter()
                .map(|(k, v)| format!("{k}：{}", v.as_str().unwrap_or_default()))
                .collect::<Vec<_>>()
                .join("；")
        })
        .unwrap_or_default();
    cards::templates::compose(
        "collab.request",
        &[
            ("title", title.to_string()),
            ("hint", hint.to_string()),
            ("initiator", initiator.to_string()),
            ("customer", customer.to_string()),
            ("content", content),
            ("due", due.to_string()),
        ],
    )
}

/// The deadline of `t` counted from `now`.
pub fn deadline(t: &CollabType, calendar: &WorkCalendar, now_ms: i64) -> i64 {
    deadline_of(t.sla, t.business_hours, calendar, now_ms)
}

/// `sla` from `now`, counted in working hours when `business_hours`.
fn deadline_of(
    sla: std::time::Duration,
    business_hours: bool,
    calendar: &WorkCalendar,
    now_ms: i64,
) -> i64 {
    if business_hours {
        if let Some(d) = calendar.add(crate::clock::from_ms(now_ms), sla) {
            return d.timestamp_millis();
        }
    }
    now_ms + sla.as_millis() as i64
}

/// The request's anchors: the initiator (an active member) and the customer of the
/// organisation, and the deal of that customer if one is named. Returns their names.
async fn anchor(
    tx: &mut Tx,
    org_id: &str,
    initiator: &str,
    customer: &str,
    deal: Option<&str>,
) -> Result<(String, String)> {
    let who = sqlx::query(
        "SELECT (SELECT name FROM users WHERE id = $1 AND org_id = $3 AND status = 'active') AS initiator, \
                (SELECT name FROM customers WHERE id = $2 AND org_id = $3) AS customer",
    )
    .bind(initiator)
    .bind(customer)
    .bind(org_id)
    .fetch_one(&mut **tx)
    .await?;
    let Some(initiator_name) = who.get::<Option<String>, _>("initiator") else {
        return Err(Error::UnknownReference(format!(
            "initiator `{}` does not exist",
            initiator
        )));
    };
    let Some(customer_name) = who.get::<Option<String>, _>("customer") else {
        return Err(Error::UnknownReference(format!(
            "customer `{}` does not exist",
            customer
        )));
    };
    if let Some(d) = deal {
        let ok = sqlx::query("SELECT 1 FROM deals WHERE id = $1 AND customer_id = $2")
            .bind(d)
            .bind(customer)
            .fetch_optional(&mut **tx)
            .await?;
        if ok.is_none() {
            return Err(Error::UnknownReference(format!(
                "deal `{d}` does not exist for this customer"
            )));
        }
    }
    Ok((initiator_name, customer_name))
}

/// Opens a request in one transaction: checks, snapshot, cards, clocks.
#[allow(clippy::too_many_arguments)]
pub async fn open(
    db: &Db,
    cipher: &Cipher,
    rules: &RuleSet,
    calendar: &WorkCalendar,
    now_ms: i64,
    org_id: &str,
    tz: chrono_tz::Tz,
    new: NewRequest,
) -> Result<Request> {
    let t = rules.collab(&new.type_key).ok_or_else(|| {
        Error::invalid(format!(
            "type `{}` is not a collaboration type of the rule set ({})",
            new.type_key,
            rules
                .collaboration
                .iter()
                .map(|c| c.key.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))
    })?;
    for (k, v) in &new.content {
        crate::validate::text("content key", k, 40)?;
        crate::validate::multiline(k, v, 2000)?;
    }
    let missing_prompts: Vec<&str> = t
        .prompts
        .iter()
        .filter(|p| new.content.get(*p).is_none_or(|v| v.trim().is_empty()))
        .map(String::as_str)
        .collect();
    if !missing_prompts.is_empty() {
        return Err(Error::invalid(format!(
            "请填写：{} (the template's fields are required)",
            missing_prompts.join("、")
        )));
    }
    let mut tx = db.begin().await?;
    let (initiator_name, customer_name) = anchor(
        &mut tx,
        org_id,
        &new.initiator,
        &new.customer,
        new.deal.as_deref(),
    )
    .await?;
    // A handoff carries every configured artefact, each a document of this customer.
    let mut missing = Vec::new();
    for name in &t.artefacts {
        match new.artefacts.get(name) {
            None => missing.push(name.clone()),
            Some(doc) => {
                let ok = sqlx::query(
                    "SELECT 1 FROM documents WHERE id = $1 AND org_id = $2 AND customer_id = $3",
                )
                .bind(doc)
                .bind(org_id)
                .bind(&new.customer)
                .fetch_optional(&mut *tx)
                .await?;
                if ok.is_none() {
                    missing.push(name.clone());
                }
            }
        }
    }
    if !missing.is_empty() {
        return Err(Error::Refused {
            code: "handoff_incomplete",
            message: format!("交接资料不全，缺少：{}", missing.join("、")),
            details: json!({"missing": missing, "required": t.artefacts}),
        });
    }
    if let Some(extra) = new.artefacts.keys().find(|k| !t.artefacts.contains(k)) {
        return Err(Error::invalid(format!(
            "artefact `{extra}` is not one this type carries"
        )));
    }
    let (assignee, recipients) = route(&mut tx, org_id, &new.customer, &t.role).await?;
    if recipients.is_empty() {
        return Err(Error::invalid(format!(
            "没有可接收的{role}人员：请管理员在 {where_set} 中为成员设置「{role}」角色，或为该客户指定{role}负责人",
            role = crate::text::role_label(&t.role),
            where_set = crate::access::WHERE_ROLES_ARE_SET,
        )));
    }
    let content = serde_json::to_value(&new.content).map_err(|e| Error::Internal(e.into()))?;
    let id = insert(
        &mut tx,
        cipher,
        now_ms,
        org_id,
        tz,
        Opening {
            kind: match t.kind {
                CollabKind::QuickAsk => "quick_ask",
                CollabKind::Handoff => "handoff",
            },
            type_key: &t.key,
            title: &t.title,
            hint: match t.kind {
                CollabKind::QuickAsk => "请确认收到并在时限内答复",
                CollabKind::Handoff => "交接资料已齐，请确认收到并在时限内出初稿",
            },
            role: &t.role,
            customer: &new.customer,
            customer_name: &customer_name,
            deal: new.deal.as_deref(),
            initiator: &new.initiator,
            initiator_name: &initiator_name,
            assignee,
            recipients,
            content,
            artefacts: &new.artefacts,
            due: deadline(t, calendar, now_ms),
            ack_due: now_ms + t.ack_within.as_millis() as i64,
            business_hours: t.business_hours,
            confirms_date: t.confirms_date,
            action: t.action.as_deref().unwrap_or(&t.title),
            source: new.source.unwrap_or(crate::tracking::Source::Api),
        },
    )
    .await?;
    Actor::user(&new.initiator)
        .audit(
            &mut tx,
            now_ms,
            org_id,
            "collab.open",
            ("collab_request", &id),
            json!({"type": t.key, "customer": new.customer, "deal": new.deal}),
        )
        .await?;
    tx.commit().await?;
    get(db, cipher, org_id, tz, &id).await
}

/// A checked request, ready to be stored.
struct Opening<'a> {
    kind: &'a str,
    type_key: &'a str,
    title: &'a str,
    /// The card's line under the title.
    hint: &'a str,
    role: &'a str,
    customer: &'a str,
    customer_name: &'a str,
    deal: Option<&'a str>,
    initiator: &'a str,
    initiator_name: &'a str,
    assignee: Option<String>,
    recipients: Vec<String>,
    content: Value,
    artefacts: &'a BTreeMap<String, String>,
    due: i64,
    ack_due: i64,
    business_hours: bool,
    confirms_date: bool,
    /// The action of the opening's tracking point.
    action: &'a str,
    source: crate::tracking::Source,
}

/// Stores a checked request in the caller's transaction: the snapshot with its hash, the
/// cards, the tracking point, the trail and the clocks. Returns its id.
async fn insert(
    tx: &mut Tx,
    cipher: &Cipher,
    now_ms: i64,
    org_id: &str,
    tz: chrono_tz::Tz,
    o: Opening<'_>,
) -> Result<String> {
    let hash = content_hash(&o.content);
    let id = new_id();
    sqlx::query(
        "INSERT INTO collab_requests (id, org_id, kind, type_key, title, customer_id, deal_id, initiator_user_id, \
         responsible_role, assignee_user_id, status, content_enc, content_hash, ack_due_at, due_at, business_hours, \
         created_at, updated_at, confirms_date) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 'open', $11, $12, $13, $14, $15, $16, $16, $17)",
    )
    .bind(&id)
    .bind(org_id)
    .bind(o.kind)
    .bind(o.type_key)
    .bind(o.title)
    .bind(o.customer)
    .bind(o.deal)
    .bind(o.initiator)
    .bind(o.role)
    .bind(&o.assignee)
    .bind(cipher.encrypt(COLLAB_CONTENT, &o.content.to_string()))
    .bind(&hash)
    .bind(o.ack_due)
    .bind(o.due)
    .bind(i16::from(o.business_hours))
    .bind(now_ms)
    .bind(i16::from(o.confirms_date))
    .execute(&mut **tx)
    .await?;
    for (name, doc) in o.artefacts {
        sqlx::query(
            "INSERT INTO collab_artefacts (request_id, name, document_id) VALUES ($1, $2, $3)",
        )
        .bind(&id)
        .bind(name)
        .bind(doc)
        .execute(&mut **tx)
        .await?;
    }
    let card = request_card(
        o.title,
        o.hint,
        o.initiator_name,
        o.customer_name,
        &o.content,
        &crate::text::time_short(o.due, tz),
    );
    for r in &o.recipients {
        cards::send(
            tx,
            cipher,
            now_ms,
            org_id,
            r,
            CARD_PURPOSE,
            Some(&id),
            &card,
        )
        .await?;
    }
    // The rep's ask is a tracking point like any sidebar tap.
    let point = crate::tracking::NewPoint {
        deal: o.deal.map(str::to_string),
        ..crate::tracking::NewPoint::new(
            org_id,
            o.initiator,
            o.customer,
            o.action,
            o.source,
            json!({"request": id, "type": o.type_key}),
        )
    };
    crate::tracking::write_in(tx, now_ms, &point, tz).await?;
    trail(
        tx,
        now_ms,
        &id,
        Some(o.initiator),
        "opened",
        json!({"responsible_role": o.role, "assignee": o.assignee, "recipients": o.recipients, "content_hash": hash}),
    )
    .await?;
    for (kind, at) in [(ACK_JOB, o.ack_due), (SLA_JOB, o.due)] {
        jobs::enqueue(
            tx,
            now_ms,
            NewJob::new(kind, json!({"request_id": id}))
                .org(org_id)
                .at(at)
                .dedupe(format!("{kind}:{id}")),
        )
        .await?;
    }
    Ok(id)
}

/// An ad-hoc anchored action (「发起协作」): a subject picked from the rule set's list or
/// typed, a responsible role, and a named member holding it.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewAdhoc {
    pub customer: String,
    pub deal: Option<String>,
    /// The member asking.
    pub initiator: String,
    /// What it is about, e.g. 合同条款修订 (one of `adhoc.subjects`, or typed: 1–32 characters).
    pub subject: String,
    /// The responsible role: presales, delivery, finance, legal, sales or manager.
    pub role: String,
    /// The member named to answer (must hold `role`).
    pub assignee: String,
    /// What is asked.
    pub description: String,
    #[serde(skip)]
    pub source: Option<crate::tracking::Source>,
}

/// The `type` of every ad-hoc request.
pub const ADHOC_TYPE: &str = "adhoc";
/// The tracking point of opening an ad-hoc request (the subject is in its detail).
pub const ADHOC_ACTION: &str = "collab.adhoc";

/// Opens an ad-hoc request in one transaction: anchored to the customer (and deal), sent
/// to the named member, with the clocks of the rule set's `adhoc`; audited
/// (`collab.adhoc`) as done by `actor` (the signed-in member, or the API key).
#[allow(clippy::too_many_arguments)]
pub async fn open_adhoc(
    db: &Db,
    actor: &Actor,
    cipher: &Cipher,
    rules: &RuleSet,
    calendar: &WorkCalendar,
    now_ms: i64,
    org_id: &str,
    tz: chrono_tz::Tz,
    new: NewAdhoc,
) -> Result<Request> {
    let subject = new.subject.trim();
    if subject.is_empty() || subject.chars().count() > 32 || subject.chars().any(char::is_control) {
        return Err(Error::invalid(
            "请选择或填写协作事项（1 到 32 个字） (subject: 1 to 32 characters)",
        ));
    }
    if !crate::rules::COLLAB_ROLES.contains(&new.role.as_str()) {
        return Err(Error::invalid(format!(
            "请选择负责角色 (role must be one of {})",
            crate::rules::COLLAB_ROLES.join(", ")
        )));
    }
    let description = crate::validate::multiline("description", &new.description, 2000)?;
    if description.trim().is_empty() {
        return Err(Error::invalid("请填写说明 (description is required)"));
    }
    let mut tx = db.begin().await?;
    let (initiator_name, customer_name) = anchor(
        &mut tx,
        org_id,
        &new.initiator,
        &new.customer,
        new.deal.as_deref(),
    )
    .await?;
    let person = sqlx::query(
        "SELECT u.name, (SELECT 1 FROM user_roles r WHERE r.user_id = u.id AND r.role = $3) AS holds          FROM users u WHERE u.id = $1 AND u.org_id = $2 AND u.status = 'active'",
    )
    .bind(&new.assignee)
    .bind(org_id)
    .bind(&new.role)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or_else(|| {
        Error::UnknownReference(format!("assignee `{}` is not an active member", new.assignee))
    })?;
    let role = crate::text::role_label(&new.role);
    if person.get::<Option<i64>, _>("holds").unwrap_or(0) == 0 {
        return Err(Error::invalid(format!(
            "{}没有「{role}」角色，请选择一位{role}成员，或请管理员在 {} 中设置 (the person does not hold the role)",
            person.get::<String, _>("name"),
            crate::access::WHERE_ROLES_ARE_SET,
        )));
    }
    let a = &rules.adhoc;
    let content = json!({"事项": subject, "说明": description});
    let id = insert(
        &mut tx,
        cipher,
        now_ms,
        org_id,
        tz,
        Opening {
            kind: ADHOC_TYPE,
            type_key: ADHOC_TYPE,
            title: subject,
            hint: "请确认收到并在时限内答复",
            role: &new.role,
            customer: &new.customer,
            customer_name: &customer_name,
            deal: new.deal.as_deref(),
            initiator: &new.initiator,
            initiator_name: &initiator_name,
            assignee: Some(new.assignee.clone()),
            recipients: vec![new.assignee.clone()],
            content,
            artefacts: &BTreeMap::new(),
            due: deadline_of(a.sla, a.business_hours, calendar, now_ms),
            ack_due: now_ms + a.ack_within.as_millis() as i64,
            business_hours: a.business_hours,
            confirms_date: false,
            action: ADHOC_ACTION,
            source: new.source.unwrap_or(crate::tracking::Source::Api),
        },
    )
    .await?;
    actor
        .audit(
            &mut tx,
            now_ms,
            org_id,
            ADHOC_ACTION,
            ("collab_request", &id),
            // The subject is typed text: the request holds it, the entry names the request.
            json!({"role": new.role, "assignee": new.assignee, "customer": new.customer}),
        )
        .await?;
    tx.commit().await?;
    get(db, cipher, org_id, tz, &id).await
}

const COLUMNS: &str = "SELECT id, kind, type_key, title, customer_id, deal_id, initiator_user_id, responsible_role, \
     assignee_user_id, status, content_enc, content_hash, answer_enc, answer_date, CAST(customer_synced AS BIGINT) AS customer_synced, CAST(confirms_date AS BIGINT) AS confirms_date, return_reason_enc, acked_at, ack_due_at, due_at, \
     CAST(business_hours AS BIGINT) AS business_hours, overdue_at, created_at, closed_at FROM collab_requests";

async fn from_row(
    conn: &mut sqlx::AnyConnection,
    cipher: &Cipher,
    r: &sqlx::any::AnyRow,
    tz: chrono_tz::Tz,
) -> Result<Request> {
    let id: String = r.get("id");
    let answer = fields::open_opt(cipher, COLLAB_ANSWER, r.get("answer_enc"))?;
    let return_reason = fields::open_opt(cipher, COLLAB_RETURN_REASON, r.get("return_reason_enc"))?;
    let artefacts = sqlx::query(
        "SELECT name, document_id FROM collab_artefacts WHERE request_id = $1 ORDER BY name",
    )
    .bind(&id)
    .fetch_all(&mut *conn)
    .await?
    .iter()
    .map(|a| (a.get("name"), a.get("document_id")))
    .collect();
    let trail = sqlx::query(
        "SELECT at, actor_user_id, action, detail FROM collab_events WHERE request_id = $1 ORDER BY at, id",
    )
    .bind(&id)
    .fetch_all(&mut *conn)
    .await?
    .iter()
    .map(|e| {
        let action: String = e.get("action");
        let mut detail: Value =
            serde_json::from_str(&e.get::<String, _>("detail")).unwrap_or(Value::Null);
        // The trail keeps ids and dates; the text it shows comes from the request's
        // encrypted columns (a request is answered or returned once).
        if let Some(d) = detail
            .as_object_mut()
            .filter(|_| action == "answered" || action == "returned")
        {
            d.insert("answer".into(), json!(answer));
            d.insert("reason".into(), json!(return_reason));
        }
        TrailEntry {
            at: crate::clock::in_zone(e.get("at"), tz),
            actor: e.get("actor_user_id"),
            action,
            detail,
        }
    })
    .collect();
    let undelivered = sqlx::query(
        "SELECT id, recipient_user_id, failure_reason FROM cards WHERE object_ref = $1 \
         AND purpose LIKE 'collab.%' AND status = 'failed' ORDER BY created_at, id",
    )
    .bind(&id)
    .fetch_all(&mut *conn)
    .await?
    .iter()
    .map(|c| {
        let reason: String = c
            .get::<Option<String>, _>("failure_reason")
            .unwrap_or_else(|| "platform_refused".into());
        CardFailure {
            card: c.get("id"),
            recipient: c.get("recipient_user_id"),
            reason_text: cards::failure_text(&reason).to_string(),
            reason,
        }
    })
    .collect();
    let opt = |k: &str| {
        r.get::<Option<i64>, _>(k)
            .map(|ms| crate::clock::in_zone(ms, tz))
    };
    Ok(Request {
        kind: r.get("kind"),
        type_key: r.get("type_key"),
        title: r.get("title"),
        customer: r.get("customer_id"),
        deal: r.get("deal_id"),
        initiator: r.get("initiator_user_id"),
        responsible_role: r.get("responsible_role"),
        assignee: r.get("assignee_user_id"),
        status: r.get("status"),
        content: serde_json::from_str(&fields::open(
            cipher,
            COLLAB_CONTENT,
            &r.get::<String, _>("content_enc"),
        )?)
        .unwrap_or(Value::Null),
        content_hash: r.get("content_hash"),
        artefacts,
        answer,
        answer_date: r.get("answer_date"),
        customer_synced: r.get::<Option<i64>, _>("customer_synced").map(|v| v == 1),
        confirms_date: r.get::<i64, _>("confirms_date") == 1,
        return_reason,
        acknowledged_at: opt("acked_at"),
        ack_due_at: opt("ack_due_at"),
        due_at: crate::clock::in_zone(r.get("due_at"), tz),
        business_hours: r.get::<i64, _>("business_hours") == 1,
        overdue: r.get::<Option<i64>, _>("overdue_at").is_some(),
        created_at: crate::clock::in_zone(r.get("created_at"), tz),
        closed_at: opt("closed_at"),
        trail,
        undelivered,
        id,
    })
}

pub async fn get(
    db: &Db,
    cipher: &Cipher,
    org_id: &str,
    tz: chrono_tz::Tz,
    id: &str,
) -> Result<Request> {
    let mut conn = db.pool.acquire().await?;
    let row = sqlx::query(&format!("{COLUMNS} WHERE id = $1 AND org_id = $2"))
        .bind(id)
        .bind(org_id)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or(Error::NotFound { what: "request" })?;
    from_row(&mut conn, cipher, &row, tz).await
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RequestFilter {
    pub assignee: Option<String>,
    pub initiator: Option<String>,
    pub customer: Option<String>,
    pub status: Option<String>,
}

pub async fn list(
    db: &Db,
    cipher: &Cipher,
    org_id: &str,
    tz: chrono_tz::Tz,
    f: &RequestFilter,
    page: &crate::page::PageRequest,
) -> Result<crate::page::Page<Request>> {
    let mut sel = crate::db::Select::org_page(org_id, page);
    sel.equal_each(&[
        ("assignee_user_id", &f.assignee),
        ("initiator_user_id", &f.initiator),
        ("customer_id", &f.customer),
        ("status", &f.status),
    ]);
    let sql = sel.sql(COLUMNS, "ORDER BY id LIMIT {limit}");
    let mut conn = db.pool.acquire().await?;
    let rows = sel
        .bind(sqlx::query(&sql))
        .bind(page.limit + 1)
        .fetch_all(&mut *conn)
        .await?;
    let mut items = Vec::with_capacity(rows.len());
    for r in &rows {
        items.push(from_row(&mut conn, cipher, r, tz).await?);
    }
    Ok(crate::page::Page::from_rows(items, page, |r| &r.id))
}

/// What the assignee (or a queue member) does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// 确认收到 and take it on (claims a queued request).
    Accept,
    Answer {
        text: String,
        date: Option<String>,
        /// A schedule's answer: 「已同步客户」 was ticked.
        customer_synced: Option<bool>,
    },
    Return {
        reason: String,
    },
}

impl Step {
    /// The step's name in its tracking point's action, `collab.<name>`.
    pub fn name(&self) -> &'static str {
        match self {
            Step::Accept => "accept",
            Step::Answer { .. } => "answer",
            Step::Return { .. } => "return",
        }
    }
}

/// The action of a step's tracking point: `collab.accept`, `collab.answer`, `collab.return`.
pub fn step_action(step: &Step) -> String {
    format!("collab.{}", step.name())
}

/// A step taken from a card click ([`step_in_from`] with source `card`).
#[allow(clippy::too_many_arguments)]
pub async fn step_in(
    tx: &mut Tx,
    cipher: &Cipher,
    now_ms: i64,
    org_id: &str,
    tz: chrono_tz::Tz,
    id: &str,
    user: &str,
    step: &Step,
) -> Result<bool> {
    step_in_from(
        tx,
        cipher,
        now_ms,
        org_id,
        tz,
        id,
        user,
        step,
        crate::tracking::Source::Card,
    )
    .await
}

/// Applies one step inside the caller's transaction; `Ok(false)` when it changed nothing
/// (a repeat). Authorisation: accepting needs to be a recipient of the request's cards
/// (the assignee, or anyone in the queue while unclaimed); answering and returning need
/// to be the assignee. A step that changed the request is a tracking point
/// (`collab.<step>`, by the user, on the request's customer, from `origin`), written in
/// the same transaction.
#[allow(clippy::too_many_arguments)]
pub async fn step_in_from(
    tx: &mut Tx,
    cipher: &Cipher,
    now_ms: i64,
    org_id: &str,
    tz: chrono_tz::Tz,
    id: &str,
    user: &str,
    step: &Step,
    origin: crate::tracking::Source,
) -> Result<bool> {
    let changed = apply_step(tx, cipher, now_ms, org_id, tz, id, user, step).await?;
    if changed {
        let row =
            sqlx::query("SELECT customer_id, deal_id, type_key FROM collab_requests WHERE id = $1")
                .bind(id)
                .fetch_one(&mut **tx)
                .await?;
        let point = crate::tracking::NewPoint {
            deal: row.get("deal_id"),
            ..crate::tracking::NewPoint::new(
                org_id,
                user,
                &row.get::<String, _>("customer_id"),
                &step_action(step),
                origin,
                json!({"request": id, "type": row.get::<String, _>("type_key")}),
            )
        };
        crate::tracking::write_in(tx, now_ms, &point, tz).await?;
        Actor::user(user)
            .audit(
                tx,
                now_ms,
                org_id,
                &format!("collab.{}", step.name()),
                ("collab_request", id),
                json!({"customer": point.customer}),
            )
            .await?;
    }
    Ok(changed)
}

#[allow(clippy::too_many_arguments)]
async fn apply_step(
    tx: &mut Tx,
    cipher: &Cipher,
    now_ms: i64,
    org_id: &str,
    tz: chrono_tz::Tz,
    id: &str,
    user: &str,
    step: &Step,
) -> Result<bool> {
    let row = sqlx::query(
        "SELECT status, assignee_user_id, initiator_user_id, title, type_key, kind, customer_id, acked_at, \
         CAST(confirms_date AS BIGINT) AS confirms_date \
         FROM collab_requests WHERE id = $1 AND org_id = $2",
    )
    .bind(id)
    .bind(org_id)
    .fetch_optional(&mut **tx)
    .await?
    .ok_or(Error::NotFound { what: "request" })?;
    let status: String = row.get("status");
    let assignee: Option<String> = row.get("assignee_user_id");
    let closed = status == "answered" || status == "returned";
    match step {
        Step::Accept => {
            let recipient = sqlx::query(
                "SELECT 1 FROM cards WHERE purpose = $1 AND object_ref = $2 AND recipient_user_id = $3",
            )
            .bind(CARD_PURPOSE)
            .bind(id)
            .bind(user)
            .fetch_optional(&mut **tx)
            .await?;
            if recipient.is_none() {
                return Err(Error::Forbidden(
                    "只有被指派的人员可以接受该请求 (only its assignee or queue may accept)".into(),
                ));
            }
            match &assignee {
                Some(a) if a != user => {
                    return Err(Error::Conflict(
                        "该请求已由他人接受 (someone else took it)".into(),
                    ))
                }
                Some(_) if status != "open" => return Ok(false),
                _ => {}
            }
            if closed {
                return Ok(false);
            }
            let changed = sqlx::query(
                "UPDATE collab_requests SET assignee_user_id = $1, status = 'accepted', accepted_at = $2, \
                 acked_at = COALESCE(acked_at, $2), acked_by = COALESCE(acked_by, $1), updated_at = $2 \
                 WHERE id = $3 AND status = 'open' AND (assignee_user_id IS NULL OR assignee_user_id = $1)",
            )
            .bind(user)
            .bind(now_ms)
            .bind(id)
            .execute(&mut **tx)
            .await?
            .rows_affected();
            if changed == 0 {
                return Ok(false);
            }
            trail(tx, now_ms, id, Some(user), "accepted", json!({})).await?;
            // The request's cards show who took it and when: the accepter's own card where
            // it can change again later, every other queue member's card for good.
            let name = user_name(tx, user).await?;
            let text = format!("{name}已接受{}", crate::text::clock(now_ms, tz));
            for (card, recipient) in request_cards(tx, id, &[CARD_PURPOSE]).await? {
                let moment = if recipient == user {
                    cards::Moment::Interim
                } else {
                    cards::Moment::Last
                };
                cards::refresh_status(tx, now_ms, org_id, &card, &text, moment).await?;
            }
            Ok(true)
        }
        Step::Answer { .. } | Step::Return { .. } => {
            if assignee.as_deref() != Some(user) {
                return Err(Error::Forbidden(
                    "只有该请求的负责人可以答复或退回 (only the assignee may answer)".into(),
                ));
            }
            if closed {
                return Ok(false);
            }
            // An assignee may return a request straight away; answering needs accepting.
            if status == "open" && matches!(step, Step::Answer { .. }) {
                return Err(Error::Conflict(
                    "请先确认收到并接受该请求 (accept it first)".into(),
                ));
            }
            let initiator: String = row.get("initiator_user_id");
            let title: String = row.get("title");
            let name = user_name(tx, user).await?;
            let when = crate::text::time_short(now_ms, tz);
            let confirms_date = row.get::<i64, _>("confirms_date") == 1;
            let (new_status, text, date, reason, synced) = match step {
                Step::Answer {
                    text,
                    date,
                    customer_synced,
                } => {
                    let text = crate::validate::multiline("answer", text, 2000)?;
                    let date = match date {
                        Some(d) => Some(crate::validate::date("date", d)?.to_string()),
                        None if confirms_date => {
                            return Err(Error::invalid(
                                "请填写预计交付日期 (a schedule's answer needs its date)",
                            ))
                        }
                        None => None,
                    };
                    // A schedule's answer always says whether the customer was told.
                    let synced = match customer_synced {
                        Some(v) => Some(*v),
                        None if confirms_date => Some(false),
                        None => None,
                    };
                    ("answered", Some(text), date, None, synced)
                }
                Step::Return { reason } => (
                    "returned",
                    None,
                    None,
                    Some(crate::validate::multiline("reason", reason, 500)?),
                    None,
                ),
                Step::Accept => unreachable!("handled above"),
            };
            sqlx::query(
                "UPDATE collab_requests SET status = $1, answer_enc = $2, answer_date = $3, return_reason_enc = $4, \
                 closed_at = $5, closed_by = $6, updated_at = $5, customer_synced = $8 WHERE id = $7",
            )
            .bind(new_status)
            .bind(text.as_deref().map(|t| cipher.encrypt(COLLAB_ANSWER, t)))
            .bind(&date)
            .bind(
                reason
                    .as_deref()
                    .map(|r| cipher.encrypt(COLLAB_RETURN_REASON, r)),
            )
            .bind(now_ms)
            .bind(user)
            .bind(id)
            .bind(synced.map(i16::from))
            .execute(&mut **tx)
            .await?;
            trail(
                tx,
                now_ms,
                id,
                Some(user),
                new_status,
                // The text itself stays in the request's encrypted columns.
                json!({"date": date, "customer_synced": synced}),
            )
            .await?;
            // The original cards now show who handled it and when.
            let verb = if new_status == "answered" {
                "已答复"
            } else {
                "已退回"
            };
            // WeCom shows at most 10 characters in place of the buttons: who, what, when.
            let hhmm = crate::text::clock(now_ms, tz);
            let status_text = format!("{name}{verb}{hhmm}");
            // So do the reminders and escalations its clocks sent.
            for (c, _) in request_cards(tx, id, &[CARD_PURPOSE, ESCALATION_PURPOSE]).await? {
                cards::refresh_status(tx, now_ms, org_id, &c, &status_text, cards::Moment::Last)
                    .await?;
            }
            // The answer goes back to the rep as a card.
            let reply = cards::templates::compose(
                "collab.reply",
                &[
                    ("title", title.clone()),
                    ("verb", verb.to_string()),
                    ("handler", name.clone()),
                    ("time", when),
                    ("answer", text.clone().unwrap_or_default()),
                    ("reason", reason.clone().unwrap_or_default()),
                    (
                        "date",
                        date.as_deref()
                            .map(crate::text::date_text)
                            .unwrap_or_default(),
                    ),
                    (
                        "synced",
                        match synced {
                            Some(true) => "已同步客户".into(),
                            Some(false) => "尚未同步客户".into(),
                            None => String::new(),
                        },
                    ),
                ],
            );
            cards::send(
                tx,
                cipher,
                now_ms,
                org_id,
                &initiator,
                "collab.reply",
                Some(id),
                &reply,
            )
            .await?;
            if let Some(d) = &date {
                super::calendar_feed::put_entry(
                    tx,
                    now_ms,
                    org_id,
                    &initiator,
                    id,
                    &format!("{title}（{name}确认）"),
                    d,
                )
                .await?;
            }
            Ok(true)
        }
    }
}

/// The request's cards of `purposes`: (card id, recipient).
async fn request_cards(tx: &mut Tx, id: &str, purposes: &[&str]) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for p in purposes {
        let rows = sqlx::query(
            "SELECT id, recipient_user_id FROM cards WHERE purpose = $1 AND object_ref = $2 ORDER BY id",
        )
        .bind(p)
        .bind(id)
        .fetch_all(&mut **tx)
        .await?;
        out.extend(
            rows.iter()
                .map(|r| (r.get("id"), r.get("recipient_user_id"))),
        );
    }
    Ok(out)
}

/// One step as its own transaction (from the sidebar or the API: `origin`), answering
/// with the request as it is afterwards.
#[allow(clippy::too_many_arguments)]
pub async fn step(
    db: &Db,
    cipher: &Cipher,
    now_ms: i64,
    org_id: &str,
    tz: chrono_tz::Tz,
    id: &str,
    user: &str,
    s: &Step,
    origin: crate::tracking::Source,
) -> Result<Request> {
    let mut tx = db.begin().await?;
    step_in_from(&mut tx, cipher, now_ms, org_id, tz, id, user, s, origin).await?;
    tx.commit().await?;
    get(db, cipher, org_id, tz, id).await
}

/// Clicks on request cards: 确认收到并接受 (`accept`) takes the request on.
pub struct CardClicks {
    pub cipher: Cipher,
}

impl cards::ClickHandler for CardClicks {
    fn customer<'a>(
        &'a self,
        tx: &'a mut Tx,
        org_id: &'a str,
        object: &'a str,
    ) -> jobs::BoxFuture<'a, Result<Option<String>>> {
        Box::pin(async move {
            Ok(
                sqlx::query(
                    "SELECT customer_id FROM collab_requests WHERE id = $1 AND org_id = $2",
                )
                .bind(object)
                .bind(org_id)
                .fetch_optional(&mut **tx)
                .await?
                .map(|r| r.get("customer_id")),
            )
        })
    }

    fn click<'a>(
        &'a self,
        tx: &'a mut Tx,
        click: &'a cards::ClickContext,
    ) -> jobs::BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            if click.action != "accept" {
                return Ok(());
            }
            step_in(
                tx,
                &self.cipher,
                click.now_ms,
                &click.org_id,
                click.tz,
                &click.object,
                &click.clicker,
                &Step::Accept,
            )
            .await
            .map(|_| ())
        })
    }
}

/// Card purpose of the notice to the initiator that a card of the request was not delivered.
pub const UNDELIVERED_PURPOSE: &str = "collab.undelivered";

/// A card of a request that could not be delivered: the trail records it, and the
/// initiator hears of it once per card by a card of their own (unless it was theirs).
pub struct Undelivered {
    pub cipher: Cipher,
}

impl cards::Undelivered for Undelivered {
    fn undelivered<'a>(
        &'a self,
        tx: &'a mut Tx,
        now_ms: i64,
        card: &'a cards::FailedCard,
    ) -> jobs::BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let Some(id) = card.object_ref.as_deref() else {
                return Ok(());
            };
            if !card.purpose.starts_with(cards::DEFERRED_UPDATE_PREFIX) {
                return Ok(());
            }
            let Some(row) = sqlx::query(
                "SELECT r.initiator_user_id, r.title, c.name AS customer FROM collab_requests r \
                 JOIN customers c ON c.id = r.customer_id WHERE r.id = $1 AND r.org_id = $2",
            )
            .bind(id)
            .bind(&card.org_id)
            .fetch_optional(&mut **tx)
            .await?
            else {
                return Ok(());
            };
            let told = sqlx::query(
                "SELECT detail FROM collab_events WHERE request_id = $1 AND action = 'undelivered'",
            )
            .bind(id)
            .fetch_all(&mut **tx)
            .await?
            .iter()
            .any(|e| {
                serde_json::from_str::<Value>(&e.get::<String, _>("detail"))
                    .is_ok_and(|d| d["card"] == card.id.as_str())
            });
            if told {
                return Ok(());
            }
            trail(
                tx,
                now_ms,
                id,
                None,
                "undelivered",
                json!({"card": card.id, "recipient": card.recipient_user_id, "reason": card.reason}),
            )
            .await?;
            let initiator: String = row.get("initiator_user_id");
            if card.recipient_user_id == initiator {
                return Ok(());
            }
            let recipient = user_name(tx, &card.recipient_user_id).await?;
            let notice = cards::templates::compose(
                "collab.undelivered",
                &[
                    ("title", row.get::<String, _>("title")),
                    ("recipient", recipient),
                    ("reason", cards::failure_text(card.reason).to_string()),
                    ("customer", row.get::<String, _>("customer")),
                ],
            );
            cards::send(
                tx,
                &self.cipher,
                now_ms,
                &card.org_id,
                &initiator,
                UNDELIVERED_PURPOSE,
                Some(id),
                &notice,
            )
            .await?;
            Ok(())
        })
    }
}
