//! Permission requests: a member asks for more — a field reveal (`field`: `phone`,
//! `email`, `amount`, `decision_chain`), a region (`region`: its name) or a customer
//! (`customer`: its id) — with a reason (encrypted at rest). The approver
//! ([`super::approver_for`]) gets a card to approve or refuse; the decision (on the card,
//! the page or the API) creates a grant for the duration the rule set's
//! `[access_requests]` gives the kind, updates the approver's cards where the platform
//! allows, and tells the requester by a card.
//!
//! The circuit breaker: a request that would be the `limit + 1`-th of one person within
//! `window` (counted by `created_at`, since the last lift of a pause) is refused, the
//! person's requests are paused, and every security officer gets a card to lift the
//! pause with one tap; while paused, every request is refused.
//!
//! Every step is audited (`access.request`, `access.approve`, `access.refuse`,
//! `access.withdraw`, `access.pause`, `access.lift`) with ids only, never the reason.

use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::{AnyConnection, Row};

use super::{approver_for, Why, SECURITY_ROLE};
use crate::access::{Actor, ApiKeyRole};
use crate::cards::{self, Moment};
use crate::db::{new_id, Db, Select, Tx};
use crate::error::{Error, Result};
use crate::page::{Page, PageRequest};
use crate::policy::Who;
use crate::rules::RuleSet;
use crate::security::fields::{self, ACCESS_REASON};
use crate::security::Cipher;

/// The card asking the approver to decide (its object is the request).
pub const REQUEST_CARD: &str = "access.request";
/// The card telling the requester the decision.
pub const DECISION_CARD: &str = "access.decision";
/// The card asking the security officers to lift a pause (its object is the pause).
pub const PAUSE_CARD: &str = "access.pause";
/// The buttons of [`REQUEST_CARD`].
pub const APPROVE_BUTTON: &str = "approve";
pub const REFUSE_BUTTON: &str = "refuse";
/// The button of [`PAUSE_CARD`].
pub const LIFT_BUTTON: &str = "lift";

/// What may be asked for.
pub const KINDS: [&str; 3] = ["field", "region", "customer"];
/// The fields a reveal may name, with their labels.
pub const FIELDS: [(&str, &str); 4] = [
    ("phone", "电话"),
    ("email", "邮箱"),
    ("amount", "金额"),
    ("decision_chain", "决策链"),
];
/// The refusal while a person's requests are paused.
pub const PAUSED: &str = "权限申请过于频繁，已暂停，请联系安全官";

const REASON_MAX: usize = 500;
const REGION_MAX: usize = 64;

/// A kind as people read it.
pub fn kind_label(kind: &str) -> &'static str {
    match kind {
        "field" => "查看字段",
        "region" => "区域",
        "customer" => "客户",
        _ => "其他",
    }
}

pub fn field_label(key: &str) -> Option<&'static str> {
    FIELDS.iter().find(|(k, _)| *k == key).map(|(_, l)| *l)
}

/// A status as people read it.
pub fn status_label(status: &str) -> &'static str {
    match status {
        "pending" => "待审批",
        "approved" => "已同意",
        "refused" => "已拒绝",
        "withdrawn" => "已撤回",
        _ => "未知",
    }
}

/// What was asked for, as people read it: 「查看字段：电话」, 「区域：华南」, 「客户：华南智造」
/// (`customer_name`: the customer's name for a `customer` request).
pub fn describe(kind: &str, target: &str, customer_name: Option<&str>) -> String {
    let shown = match kind {
        "field" => field_label(target).unwrap_or("未知字段").to_string(),
        "customer" => customer_name.unwrap_or("未知客户").to_string(),
        _ => target.to_string(),
    };
    format!("{}：{shown}", kind_label(kind))
}

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewRequest {
    /// The member asking (required: a request is a person's).
    pub actor: Option<String>,
    /// `field`, `region` or `customer`.
    #[schema(schema_with = kind_schema)]
    pub kind: String,
    /// `field`: `phone`, `email`, `amount` or `decision_chain`; `region`: its name;
    /// `customer`: its id (it must exist in the organisation).
    pub target: String,
    /// Why (stored encrypted; never in the audit log).
    #[schema(min_length = 1, max_length = 500)]
    pub reason: String,
}

fn kind_schema() -> utoipa::openapi::Object {
    crate::validate::one_of(&KINDS)
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AccessRequest {
    pub id: String,
    pub requester: String,
    pub kind: String,
    pub target: String,
    pub reason: String,
    pub approver: String,
    pub approver_why: Why,
    /// `pending`, `approved`, `refused` or `withdrawn`.
    pub status: String,
    /// A user id, or the id of the admin key that decided acting for nobody.
    pub decided_by: Option<String>,
    pub decided_at: Option<String>,
    pub created_at: String,
    /// When the grant an approval created ends.
    pub expires_at: Option<String>,
}

const COLUMNS: &str =
    "SELECT id, requester, kind, target, reason_enc, approver, approver_why, status, \
     decided_by, decided_at, created_at, expires_at FROM access_requests";

fn from_row(cipher: &Cipher, r: &sqlx::any::AnyRow) -> Result<AccessRequest> {
    Ok(AccessRequest {
        id: r.get("id"),
        requester: r.get("requester"),
        kind: r.get("kind"),
        target: r.get("target"),
        reason: fields::open(cipher, ACCESS_REASON, &r.get::<String, _>("reason_enc"))?,
        approver: r.get("approver"),
        approver_why: Why::parse(&r.get::<String, _>("approver_why")).unwrap_or(Why::Security),
        status: r.get("status"),
        decided_by: r.get("decided_by"),
        decided_at: r
            .get::<Option<i64>, _>("decided_at")
            .map(crate::clock::rfc3339),
        created_at: crate::clock::rfc3339(r.get("created_at")),
        expires_at: r
            .get::<Option<i64>, _>("expires_at")
            .map(crate::clock::rfc3339),
    })
}

/// The target, checked for its kind.
async fn check_target(tx: &mut Tx, org_id: &str, kind: &str, target: &str) -> Result<String> {
    match kind {
        "field" => field_label(target.trim())
            .map(|_| target.trim().to_string())
            .ok_or_else(|| {
                Error::invalid(format!(
                    "未知字段 (unknown field `{}`; fields are {})",
                    target.escape_debug(),
                    FIELDS.map(|(k, _)| k).join(", ")
                ))
            }),
        "region" => crate::validate::text("target", target, REGION_MAX),
        "customer" => {
            let id = crate::validate::id("target", target)?;
            let exists = sqlx::query("SELECT 1 FROM customers WHERE id = $1 AND org_id = $2")
                .bind(&id)
                .bind(org_id)
                .fetch_optional(&mut **tx)
                .await?
                .is_some();
            if exists {
                Ok(id)
            } else {
                Err(Error::UnknownReference(format!(
                    "客户不存在 (customer `{id}` does not exist)"
                )))
            }
        }
        _ => Err(Error::invalid(format!(
            "未知申请类型 (unknown kind `{}`; kinds are {})",
            kind.escape_debug(),
            KINDS.join(", ")
        ))),
    }
}

/// The pause in force on `user`'s requests, if any.
pub async fn active_pause(
    conn: &mut AnyConnection,
    org_id: &str,
    user: &str,
) -> Result<Option<String>> {
    Ok(sqlx::query(
        "SELECT id FROM request_pauses WHERE org_id = $1 AND user_id = $2 AND lifted_at IS NULL \
         ORDER BY paused_at, id LIMIT 1",
    )
    .bind(org_id)
    .bind(user)
    .fetch_optional(&mut *conn)
    .await?
    .map(|r| r.get("id")))
}

fn paused() -> Error {
    Error::Forbidden(format!(
        "{PAUSED} (access requests are paused: too many within the window; a security officer lifts the pause)"
    ))
}

async fn name_of(tx: &mut Tx, user: &str) -> Result<Option<String>> {
    Ok(sqlx::query("SELECT name FROM users WHERE id = $1")
        .bind(user)
        .fetch_optional(&mut **tx)
        .await?
        .map(|r| r.get("name")))
}

async fn zone_of(tx: &mut Tx, org_id: &str) -> Result<chrono_tz::Tz> {
    let tz: Option<String> = sqlx::query("SELECT timezone FROM organisations WHERE id = $1")
        .bind(org_id)
        .fetch_optional(&mut **tx)
        .await?
        .map(|r| r.get("timezone"));
    Ok(crate::text::zone(&tz.unwrap_or_default()))
}

async fn customer_name(
    tx: &mut Tx,
    org_id: &str,
    kind: &str,
    target: &str,
) -> Result<Option<String>> {
    if kind != "customer" {
        return Ok(None);
    }
    Ok(
        sqlx::query("SELECT name FROM customers WHERE id = $1 AND org_id = $2")
            .bind(target)
            .bind(org_id)
            .fetch_optional(&mut **tx)
            .await?
            .map(|r| r.get("name")),
    )
}

/// A member's request: checked, counted by the circuit breaker, sent to the approver.
/// `actor` is who the audit log names (the key, or the signed-in member).
#[allow(clippy::too_many_arguments)]
pub async fn create(
    db: &Db,
    cipher: &Cipher,
    rules: &RuleSet,
    now_ms: i64,
    org_id: &str,
    actor: &Actor,
    new: &NewRequest,
) -> Result<AccessRequest> {
    let requester = match new.actor.as_deref() {
        Some(a) => crate::validate::id("actor", a)?,
        None => {
            return Err(Error::invalid(
                "请指明申请人 (`actor` is required: a request is a person's)",
            ))
        }
    };
    let kind = new.kind.trim();
    if !KINDS.contains(&kind) {
        return Err(Error::invalid(format!(
            "未知申请类型 (unknown kind `{}`; kinds are {})",
            kind.escape_debug(),
            KINDS.join(", ")
        )));
    }
    let reason = crate::validate::multiline("reason", &new.reason, REASON_MAX)?;
    let mut tx = db.begin().await?;
    let member =
        sqlx::query("SELECT name FROM users WHERE id = $1 AND org_id = $2 AND status = 'active'")
            .bind(&requester)
            .bind(org_id)
            .fetch_optional(&mut *tx)
            .await?;
    let Some(member) = member else {
        return Err(Error::UnknownReference(format!(
            "申请人不是在职成员 (actor `{requester}` is not an active member)"
        )));
    };
    let requester_name: String = member.get("name");
    let target = check_target(&mut tx, org_id, kind, &new.target).await?;
    // One person's requests are counted one at a time: this write holds the person's row
    // until the transaction ends, so concurrent requests cannot slip past the count.
    sqlx::query("UPDATE users SET status = status WHERE id = $1")
        .bind(&requester)
        .execute(&mut *tx)
        .await?;
    if active_pause(&mut tx, org_id, &requester).await?.is_some() {
        return Err(paused());
    }
    let breaker = &rules.access_requests;
    if breaker.limit > 0 {
        let window_start = now_ms - breaker.window.as_millis() as i64;
        let last_lift: Option<i64> = sqlx::query(
            "SELECT MAX(lifted_at) AS t FROM request_pauses WHERE org_id = $1 AND user_id = $2",
        )
        .bind(org_id)
        .bind(&requester)
        .fetch_one(&mut *tx)
        .await?
        .get("t");
        let since = last_lift.map_or(window_start, |t| t.max(window_start));
        let count: i64 = sqlx::query(
            "SELECT CAST(COUNT(*) AS BIGINT) AS n FROM access_requests \
             WHERE org_id = $1 AND requester = $2 AND created_at > $3",
        )
        .bind(org_id)
        .bind(&requester)
        .bind(since)
        .fetch_one(&mut *tx)
        .await?
        .get("n");
        if count >= i64::from(breaker.limit) {
            pause(
                &mut tx,
                cipher,
                rules,
                now_ms,
                org_id,
                &requester,
                &requester_name,
            )
            .await?;
            tx.commit().await?;
            return Err(paused());
        }
    }
    let approver = approver_for(&mut tx, org_id, &requester)
        .await?
        .ok_or_else(|| {
            Error::Conflict(
                "没有可审批的人：没有在职的上级，也没有安全官 (no approver: no active superior up the chain and no security officer)"
                    .into(),
            )
        })?;
    let id = new_id();
    sqlx::query(
        "INSERT INTO access_requests (id, org_id, requester, kind, target, reason_enc, approver, approver_why, \
         status, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'pending', $9)",
    )
    .bind(&id)
    .bind(org_id)
    .bind(&requester)
    .bind(kind)
    .bind(&target)
    .bind(cipher.encrypt(ACCESS_REASON, &reason))
    .bind(&approver.user_id)
    .bind(approver.why.as_str())
    .bind(now_ms)
    .execute(&mut *tx)
    .await?;
    actor
        .audit(
            &mut tx,
            now_ms,
            org_id,
            "access.request",
            ("access_request", &id),
            json!({
                "requester": requester,
                "kind": kind,
                "approver": approver.user_id,
                "why": approver.why.as_str(),
            }),
        )
        .await?;
    let tz = zone_of(&mut tx, org_id).await?;
    let customer = customer_name(&mut tx, org_id, kind, &target).await?;
    let card = cards::templates::compose(
        REQUEST_CARD,
        &[
            ("requester", requester_name),
            ("what", describe(kind, &target, customer.as_deref())),
            ("reason", reason),
            ("why", approver.why.label().to_string()),
            ("time", crate::text::time_short(now_ms, tz)),
        ],
    );
    cards::send(
        &mut tx,
        cipher,
        now_ms,
        org_id,
        &approver.user_id,
        REQUEST_CARD,
        Some(&id),
        &card,
    )
    .await?;
    let row = sqlx::query(&format!("{COLUMNS} WHERE id = $1"))
        .bind(&id)
        .fetch_one(&mut *tx)
        .await?;
    tx.commit().await?;
    from_row(cipher, &row)
}

/// Pauses `user`'s requests and sends every other active security officer a card to lift
/// the pause.
async fn pause(
    tx: &mut Tx,
    cipher: &Cipher,
    rules: &RuleSet,
    now_ms: i64,
    org_id: &str,
    user: &str,
    user_name: &str,
) -> Result<()> {
    let id = new_id();
    sqlx::query(
        "INSERT INTO request_pauses (id, org_id, user_id, paused_at) VALUES ($1, $2, $3, $4)",
    )
    .bind(&id)
    .bind(org_id)
    .bind(user)
    .bind(now_ms)
    .execute(&mut **tx)
    .await?;
    let breaker = &rules.access_requests;
    Actor::system()
        .audit(
            tx,
            now_ms,
            org_id,
            "access.pause",
            ("request_pause", &id),
            json!({"user": user, "limit": breaker.limit, "window": humantime::format_duration(breaker.window).to_string()}),
        )
        .await?;
    let tz = zone_of(tx, org_id).await?;
    let card = cards::templates::compose(
        PAUSE_CARD,
        &[
            ("person", user_name.to_string()),
            (
                "rule",
                format!(
                    "{}内申请超过{}次",
                    crate::text::duration(breaker.window),
                    breaker.limit
                ),
            ),
            ("time", crate::text::time_short(now_ms, tz)),
        ],
    );
    for officer in crate::directory::users::active_with_role(tx, org_id, SECURITY_ROLE).await? {
        if officer == user {
            continue;
        }
        cards::send(
            tx,
            cipher,
            now_ms,
            org_id,
            &officer,
            PAUSE_CARD,
            Some(&id),
            &card,
        )
        .await?;
    }
    Ok(())
}

/// Who decided or lifted, as recorded: the person, else the key.
fn recorded_as(actor: &Actor, who: Who<'_>) -> String {
    match who {
        Who::Person(user) => user.to_string(),
        Who::Key(_) => actor.id.clone().unwrap_or_else(|| actor.kind.to_string()),
    }
}

/// The approver (or an admin key acting for nobody) approves or refuses a pending request.
/// An approval creates the grant. `clicked`: the card the decision was tapped on.
#[allow(clippy::too_many_arguments)]
pub async fn decide_in(
    tx: &mut Tx,
    cipher: &Cipher,
    rules: &RuleSet,
    now_ms: i64,
    org_id: &str,
    actor: &Actor,
    who: Who<'_>,
    id: &str,
    approve: bool,
    clicked: Option<&str>,
) -> Result<()> {
    let row = sqlx::query(
        "SELECT requester, kind, target, approver, status FROM access_requests WHERE id = $1 AND org_id = $2",
    )
    .bind(id)
    .bind(org_id)
    .fetch_optional(&mut **tx)
    .await?
    .ok_or(Error::NotFound {
        what: "access request",
    })?;
    let approver: String = row.get("approver");
    let allowed = match who {
        Who::Key(role) => role == ApiKeyRole::Admin,
        Who::Person(user) => user == approver,
    };
    if !allowed {
        return Err(Error::Forbidden(
            "只有审批人可以处理此申请 (only the request's approver, or an admin key, may decide it)"
                .into(),
        ));
    }
    let requester: String = row.get("requester");
    let kind: String = row.get("kind");
    let target: String = row.get("target");
    let decided_by = recorded_as(actor, who);
    let expires_at =
        approve.then(|| now_ms + rules.access_requests.grant_duration(&kind).as_millis() as i64);
    let changed = sqlx::query(
        "UPDATE access_requests SET status = $1, decided_by = $2, decided_at = $3, expires_at = $4 \
         WHERE id = $5 AND org_id = $6 AND status = 'pending'",
    )
    .bind(if approve { "approved" } else { "refused" })
    .bind(&decided_by)
    .bind(now_ms)
    .bind(expires_at)
    .bind(id)
    .bind(org_id)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    if changed == 0 {
        return Err(Error::Conflict(
            "该申请已处理 (the request was already decided)".into(),
        ));
    }
    let mut detail = json!({"requester": requester, "decided_by": decided_by});
    if approve {
        let grant = new_id();
        sqlx::query(
            "INSERT INTO access_grants (id, org_id, user_id, kind, target, request_id, granted_by, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&grant)
        .bind(org_id)
        .bind(&requester)
        .bind(&kind)
        .bind(&target)
        .bind(id)
        .bind(&decided_by)
        .bind(now_ms)
        .bind(expires_at)
        .execute(&mut **tx)
        .await?;
        detail["grant"] = json!(grant);
    }
    actor
        .audit(
            tx,
            now_ms,
            org_id,
            if approve {
                "access.approve"
            } else {
                "access.refuse"
            },
            ("access_request", id),
            detail,
        )
        .await?;

    let verb = if approve { "同意" } else { "拒绝" };
    let by = match who {
        Who::Person(user) => name_of(tx, user).await?,
        Who::Key(_) => None,
    };
    let status = by
        .as_deref()
        .map_or_else(|| format!("已{verb}"), |n| format!("已由{n}{verb}"));
    show_on_cards(tx, now_ms, org_id, REQUEST_CARD, id, &status, clicked).await?;
    let tz = zone_of(tx, org_id).await?;
    let customer = customer_name(tx, org_id, &kind, &target).await?;
    let card = cards::templates::compose(
        DECISION_CARD,
        &[
            ("what", describe(&kind, &target, customer.as_deref())),
            ("outcome", verb.to_string()),
            ("approver", by.unwrap_or_else(|| "管理员".into())),
            (
                "expires",
                expires_at
                    .map(|t| crate::text::time_short(t, tz))
                    .unwrap_or_default(),
            ),
        ],
    );
    cards::send(
        tx,
        cipher,
        now_ms,
        org_id,
        &requester,
        DECISION_CARD,
        Some(id),
        &card,
    )
    .await?;
    Ok(())
}

/// [`decide_in`] in a transaction of its own; returns the request as decided.
#[allow(clippy::too_many_arguments)]
pub async fn decide(
    db: &Db,
    cipher: &Cipher,
    rules: &RuleSet,
    now_ms: i64,
    org_id: &str,
    actor: &Actor,
    who: Who<'_>,
    id: &str,
    approve: bool,
) -> Result<AccessRequest> {
    let mut tx = db.begin().await?;
    decide_in(
        &mut tx, cipher, rules, now_ms, org_id, actor, who, id, approve, None,
    )
    .await?;
    tx.commit().await?;
    get(db, cipher, org_id, id).await
}

/// `text` in place of the buttons on every card of `purpose` about `object` that its
/// platform still lets closeloop change (`clicked`: the card tapped, whose fresh one-shot
/// code the click left).
async fn show_on_cards(
    tx: &mut Tx,
    now_ms: i64,
    org_id: &str,
    purpose: &str,
    object: &str,
    text: &str,
    clicked: Option<&str>,
) -> Result<()> {
    let cards: Vec<String> = sqlx::query(
        "SELECT id FROM cards WHERE org_id = $1 AND purpose = $2 AND object_ref = $3 ORDER BY id",
    )
    .bind(org_id)
    .bind(purpose)
    .bind(object)
    .fetch_all(&mut **tx)
    .await?
    .iter()
    .map(|r| r.get("id"))
    .collect();
    for card in cards {
        if Some(card.as_str()) == clicked {
            cards::show_status(tx, now_ms, org_id, &card, text).await?;
        } else {
            cards::refresh_status(tx, now_ms, org_id, &card, text, Moment::Last).await?;
        }
    }
    Ok(())
}

/// The requester (or an admin key acting for nobody) withdraws a pending request; the
/// approver's cards then show 「已撤回」. Audited as `access.withdraw`.
pub async fn withdraw(
    db: &Db,
    cipher: &Cipher,
    now_ms: i64,
    org_id: &str,
    actor: &Actor,
    who: Who<'_>,
    id: &str,
) -> Result<AccessRequest> {
    let mut tx = db.begin().await?;
    let requester: String =
        sqlx::query("SELECT requester FROM access_requests WHERE id = $1 AND org_id = $2")
            .bind(id)
            .bind(org_id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(Error::NotFound {
                what: "access request",
            })?
            .get("requester");
    let allowed = match who {
        Who::Key(role) => role == ApiKeyRole::Admin,
        Who::Person(user) => user == requester,
    };
    if !allowed {
        return Err(Error::Forbidden(
            "只有申请人可以撤回此申请 (only the requester, or an admin key, may withdraw it)"
                .into(),
        ));
    }
    let by = recorded_as(actor, who);
    let changed = sqlx::query(
        "UPDATE access_requests SET status = 'withdrawn', decided_by = $1, decided_at = $2 \
         WHERE id = $3 AND org_id = $4 AND status = 'pending'",
    )
    .bind(&by)
    .bind(now_ms)
    .bind(id)
    .bind(org_id)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if changed == 0 {
        return Err(Error::Conflict(
            "该申请已处理 (the request was already decided)".into(),
        ));
    }
    actor
        .audit(
            &mut tx,
            now_ms,
            org_id,
            "access.withdraw",
            ("access_request", id),
            json!({"requester": requester, "withdrawn_by": by}),
        )
        .await?;
    show_on_cards(&mut tx, now_ms, org_id, REQUEST_CARD, id, "已撤回", None).await?;
    tx.commit().await?;
    get(db, cipher, org_id, id).await
}

pub async fn get(db: &Db, cipher: &Cipher, org_id: &str, id: &str) -> Result<AccessRequest> {
    let row = sqlx::query(&format!("{COLUMNS} WHERE id = $1 AND org_id = $2"))
        .bind(id)
        .bind(org_id)
        .fetch_optional(&db.pool)
        .await?
        .ok_or(Error::NotFound {
            what: "access request",
        })?;
    from_row(cipher, &row)
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RequestFilter {
    pub requester: Option<String>,
    pub approver: Option<String>,
    /// `pending`, `approved`, `refused` or `withdrawn`.
    pub status: Option<String>,
}

pub async fn list(
    db: &Db,
    cipher: &Cipher,
    org_id: &str,
    f: &RequestFilter,
    page: &PageRequest,
) -> Result<Page<AccessRequest>> {
    let mut sel = Select::org_page(org_id, page);
    sel.equal_each(&[
        ("requester", &f.requester),
        ("approver", &f.approver),
        ("status", &f.status),
    ]);
    let sql = sel.sql(COLUMNS, "ORDER BY id LIMIT {limit}");
    let rows = sel
        .bind(sqlx::query(&sql))
        .bind(page.limit + 1)
        .fetch_all(&db.pool)
        .await?;
    let items = rows
        .iter()
        .map(|r| from_row(cipher, r))
        .collect::<Result<_>>()?;
    Ok(Page::from_rows(items, page, |r| &r.id))
}

/// A grant as the API lists it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct GrantRecord {
    pub id: String,
    pub user: String,
    pub kind: String,
    pub target: String,
    pub request: Option<String>,
    pub granted_by: String,
    pub created_at: String,
    pub expires_at: Option<String>,
    pub revoked_at: Option<String>,
    /// Not revoked and not expired now.
    pub active: bool,
}

/// Every grant of `user` (in force or not), newest first.
pub async fn grants_of(db: &Db, org_id: &str, user: &str, now_ms: i64) -> Result<Vec<GrantRecord>> {
    Ok(sqlx::query(
        "SELECT id, user_id, kind, target, request_id, granted_by, created_at, expires_at, revoked_at \
         FROM access_grants WHERE org_id = $1 AND user_id = $2 ORDER BY created_at DESC, id LIMIT 500",
    )
    .bind(org_id)
    .bind(user)
    .fetch_all(&db.pool)
    .await?
    .iter()
    .map(|r| {
        let expires: Option<i64> = r.get("expires_at");
        let revoked: Option<i64> = r.get("revoked_at");
        GrantRecord {
            id: r.get("id"),
            user: r.get("user_id"),
            kind: r.get("kind"),
            target: r.get("target"),
            request: r.get("request_id"),
            granted_by: r.get("granted_by"),
            created_at: crate::clock::rfc3339(r.get("created_at")),
            expires_at: expires.map(crate::clock::rfc3339),
            revoked_at: revoked.map(crate::clock::rfc3339),
            active: revoked.is_none() && expires.is_none_or(|e| e > now_ms),
        }
    })
    .collect())
}

/// A security officer (an active member holding `security`, not the paused person) or an
/// admin key acting for nobody lifts pause `id`; audited. `clicked`: the card it was
/// tapped on.
#[allow(clippy::too_many_arguments)]
pub async fn lift_in(
    tx: &mut Tx,
    now_ms: i64,
    org_id: &str,
    actor: &Actor,
    who: Who<'_>,
    id: &str,
    clicked: Option<&str>,
) -> Result<()> {
    let paused: String =
        sqlx::query("SELECT user_id FROM request_pauses WHERE id = $1 AND org_id = $2")
            .bind(id)
            .bind(org_id)
            .fetch_optional(&mut **tx)
            .await?
            .ok_or(Error::NotFound { what: "pause" })?
            .get("user_id");
    let allowed = match who {
        Who::Key(role) => role == ApiKeyRole::Admin,
        Who::Person(user) => {
            user != paused
                && crate::directory::users::active_with_role(tx, org_id, SECURITY_ROLE)
                    .await?
                    .iter()
                    .any(|o| o == user)
        }
    };
    if !allowed {
        return Err(Error::Forbidden(
            "只有安全官可以恢复权限申请 (only a security officer, or an admin key, may lift a pause)"
                .into(),
        ));
    }
    let lifted_by = recorded_as(actor, who);
    let changed = sqlx::query(
        "UPDATE request_pauses SET lifted_by = $1, lifted_at = $2 WHERE id = $3 AND org_id = $4 AND lifted_at IS NULL",
    )
    .bind(&lifted_by)
    .bind(now_ms)
    .bind(id)
    .bind(org_id)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    if changed == 0 {
        return Err(Error::Conflict(
            "已恢复 (the pause was already lifted)".into(),
        ));
    }
    actor
        .audit(
            tx,
            now_ms,
            org_id,
            "access.lift",
            ("request_pause", id),
            json!({"user": paused, "lifted_by": lifted_by}),
        )
        .await?;
    show_lifted(tx, now_ms, org_id, id, clicked).await
}

/// 「已由张安全恢复」 on the pause's cards that can still be updated.
async fn show_lifted(
    tx: &mut Tx,
    now_ms: i64,
    org_id: &str,
    id: &str,
    clicked: Option<&str>,
) -> Result<()> {
    let by: Option<String> = sqlx::query(
        "SELECT u.name FROM request_pauses p JOIN users u ON u.id = p.lifted_by WHERE p.id = $1",
    )
    .bind(id)
    .fetch_optional(&mut **tx)
    .await?
    .map(|r| r.get("name"));
    let text = by.map_or_else(|| "已恢复".to_string(), |n| format!("已由{n}恢复"));
    show_on_cards(tx, now_ms, org_id, PAUSE_CARD, id, &text, clicked).await
}

/// Lifts the pause in force on `user`'s requests.
pub async fn lift_user(
    db: &Db,
    now_ms: i64,
    org_id: &str,
    actor: &Actor,
    who: Who<'_>,
    user: &str,
) -> Result<()> {
    let mut tx = db.begin().await?;
    let id = active_pause(&mut tx, org_id, user)
        .await?
        .ok_or(Error::NotFound { what: "pause" })?;
    lift_in(&mut tx, now_ms, org_id, actor, who, &id, None).await?;
    tx.commit().await?;
    Ok(())
}

/// Clicks on request cards: 「同意」 or 「拒绝」 decides through [`decide_in`] as the
/// clicker (the approver). Clicked after a decision elsewhere, the card says it was
/// handled; clicked by someone else, that they may not.
pub struct RequestCardClicks {
    pub cipher: Cipher,
    pub rules: crate::rules::Rules,
}

/// Clicks on pause cards: 「恢复申请」 lifts the pause through [`lift_in`].
pub struct PauseCardClicks;

impl cards::ClickHandler for RequestCardClicks {
    fn customer<'a>(
        &'a self,
        tx: &'a mut Tx,
        org_id: &'a str,
        object: &'a str,
    ) -> crate::jobs::BoxFuture<'a, Result<Option<String>>> {
        Box::pin(async move {
            Ok(sqlx::query(
                "SELECT target FROM access_requests WHERE id = $1 AND org_id = $2 AND kind = 'customer'",
            )
            .bind(object)
            .bind(org_id)
            .fetch_optional(&mut **tx)
            .await?
            .map(|r| r.get("target")))
        })
    }

    fn click<'a>(
        &'a self,
        tx: &'a mut Tx,
        click: &'a cards::ClickContext,
    ) -> crate::jobs::BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let approve = match click.action.as_str() {
                APPROVE_BUTTON => true,
                REFUSE_BUTTON => false,
                _ => return Ok(()),
            };
            let rules = self.rules.current(&click.org_id).await?;
            let decided = decide_in(
                tx,
                &self.cipher,
                &rules,
                click.now_ms,
                &click.org_id,
                &Actor::user(&click.clicker),
                Who::Person(&click.clicker),
                &click.object,
                approve,
                Some(&click.card),
            )
            .await;
            let note = match decided {
                Ok(()) => return Ok(()),
                Err(Error::Conflict(_)) => "该申请已处理",
                Err(Error::Forbidden(_)) => "无权审批此申请",
                Err(e) => return Err(e),
            };
            cards::show_status(tx, click.now_ms, &click.org_id, &click.card, note)
                .await
                .map(|_| ())
        })
    }
}

impl cards::ClickHandler for PauseCardClicks {
    fn customer<'a>(
        &'a self,
        _tx: &'a mut Tx,
        _org_id: &'a str,
        _object: &'a str,
    ) -> crate::jobs::BoxFuture<'a, Result<Option<String>>> {
        Box::pin(async move { Ok(None) })
    }

    fn click<'a>(
        &'a self,
        tx: &'a mut Tx,
        click: &'a cards::ClickContext,
    ) -> crate::jobs::BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            if click.action != LIFT_BUTTON {
                return Ok(());
            }
            let lifted = lift_in(
                tx,
                click.now_ms,
                &click.org_id,
                &Actor::user(&click.clicker),
                Who::Person(&click.clicker),
                &click.object,
                Some(&click.card),
            )
            .await;
            match lifted {
                Ok(()) => Ok(()),
                Err(Error::Conflict(_)) => {
                    show_lifted(
                        tx,
                        click.now_ms,
                        &click.org_id,
                        &click.object,
                        Some(&click.card),
                    )
                    .await
                }
                Err(Error::Forbidden(_)) => cards::show_status(
                    tx,
                    click.now_ms,
                    &click.org_id,
                    &click.card,
                    "无权恢复此成员的权限申请",
                )
                .await
                .map(|_| ()),
                Err(e) => Err(e),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_was_asked_reads_in_chinese() {
        assert_eq!(describe("field", "phone", None), "查看字段：电话");
        assert_eq!(describe("region", "华南", None), "区域：华南");
        assert_eq!(
            describe("customer", "c1", Some("华南智造")),
            "客户：华南智造"
        );
        assert_eq!(status_label("pending"), "待审批");
    }
}
