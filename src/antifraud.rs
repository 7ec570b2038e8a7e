//! Anti-fraud rules, applied by the ledger writer inside the transaction that would
//! write the point, so concurrent taps cannot slip past a count:
//!
//! - **repeat limit**: the same action on the same customer more than `repeat_limit`
//!   times within `repeat_window` is refused, and the rep's actions on that customer are
//!   frozen until a manager lifts the freeze;
//! - **frozen**: while frozen, every guarded action of that rep on that customer is refused;
//! - **IP burst**: `ip_burst_count` or more records by one rep from one IP within
//!   `ip_burst_window` are flagged (per rep, since an office shares one NAT address): an
//!   audit entry and an alert card to the rep's direct superiors.
//!
//! Every hit is itself a tracking point (`rule.*`, source `system`, actor kind `system`).
//! What each rule counts is named by [`COUNTED_SOURCES`], [`COUNTED_ACTOR`] and
//! [`BURST_REFUSED_ATTEMPTS`]: only the rep's own sidebar and API records.

use serde::Serialize;
use serde_json::json;
use sqlx::Row;

use crate::access::authority::{self, Managed};
use crate::access::{Actor, Who};
use crate::cards;
use crate::db::{new_id, Db, Select, Tx};
use crate::error::{Error, Result};
use crate::page::{Page, PageRequest};
use crate::rules::RuleSet;
use crate::security::fields::{self, LIFT_REASON};
use crate::security::Cipher;
use crate::tracking::{ActorKind, NewPoint, Source};

pub use crate::tracking::hooks::{Refusal, Screen, FROZEN, IP_BURST, REPEAT_LIMIT};

/// The points the repeat limit and the IP burst count as a rep's own actions: those a
/// member made from the sidebar or through the API. Card clicks, platform events,
/// customers' and closeloop's own points never count.
pub const COUNTED_SOURCES: [Source; 2] = [Source::Sidebar, Source::Api];
/// ... and made by the member themself.
pub const COUNTED_ACTOR: ActorKind = ActorKind::User;
/// Besides the rep's guarded actions, the IP burst counts the rep's refused attempts,
/// which the ledger records as these rule hits (written by the writer for a sidebar or
/// API attempt, with its address).
pub const BURST_REFUSED_ATTEMPTS: [&str; 2] = [REPEAT_LIMIT, FROZEN];

/// `source IN (...) AND actor_kind = ...` for the counted points (constants only, so
/// nothing of a request reaches the SQL text). The rule simulation replays the same points.
pub fn counted_clause() -> String {
    crate::tracking::counted_clause("", &COUNTED_SOURCES, COUNTED_ACTOR)
}

fn since_burst(at: i64, a: &crate::rules::AntifraudRules) -> i64 {
    at - a.ip_burst_window.as_millis() as i64
}

fn human(d: std::time::Duration) -> String {
    humantime::format_duration(d).to_string()
}

/// Applies the rules to one attempt of a guarded action.
pub async fn screen(tx: &mut Tx, rules: &RuleSet, p: &NewPoint, at: i64) -> Result<Screen> {
    let a = &rules.antifraud;
    let mut out = Screen::default();
    if active_freeze_in(tx, &p.org_id, p.actor_id(), p.customer_id())
        .await?
        .is_some()
    {
        out.refusal = Some(Refusal {
            rule: FROZEN,
            freeze: false,
            count: 0,
            limit: a.repeat_limit,
            window: human(a.repeat_window),
        });
    } else if a.repeat_limit > 0 {
        let since = at - a.repeat_window.as_millis() as i64;
        // The attempted action only, as the rep's own sidebar and API records of it.
        let sql = format!(
            "SELECT COUNT(*) AS n FROM tracking_points WHERE actor_user_id = $1 AND customer_id = $2 \
             AND action = $3 AND occurred_at > $4 AND {}",
            counted_clause()
        );
        let count: i64 = sqlx::query(&sql)
            .bind(&p.actor)
            .bind(&p.customer)
            .bind(&p.action)
            .bind(since)
            .fetch_one(&mut **tx)
            .await?
            .get("n");
        if count >= i64::from(a.repeat_limit) {
            out.refusal = Some(Refusal {
                rule: REPEAT_LIMIT,
                freeze: true,
                count,
                limit: a.repeat_limit,
                window: human(a.repeat_window),
            });
        }
    }
    if let (Some(ip), true) = (&p.client_ip, a.ip_burst_count > 0) {
        // Records are the rep's guarded actions from the sidebar and the API, and the
        // rep's refused attempts (as their rule hits); an integration's other events from
        // its server, card clicks and closeloop's own points are not counted.
        let guarded: Vec<&str> = rules
            .actions
            .iter()
            .filter(|d| d.guarded)
            .map(|d| d.name.as_str())
            .collect();
        let mut counted = guarded.clone();
        counted.extend(BURST_REFUSED_ATTEMPTS);
        let params = |from: usize, n: usize| {
            (from..from + n)
                .map(|i| format!("${i}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let actions = if guarded.is_empty() {
            "1 = 0".to_string()
        } else {
            format!("action IN ({})", params(5, guarded.len()))
        };
        let refused = params(5 + guarded.len(), BURST_REFUSED_ATTEMPTS.len());
        let sql = format!(
            "SELECT SUM(CASE WHEN action = $3 THEN 0 ELSE 1 END) AS n, \
                    SUM(CASE WHEN action = $3 THEN 1 ELSE 0 END) AS flagged \
             FROM tracking_points WHERE actor_user_id = $1 AND client_ip = $2 AND occurred_at > $4 \
             AND (action = $3 OR ({actions} AND {counted}) \
                  OR (action IN ({refused}) AND source = '{system}'))",
            counted = counted_clause(),
            system = Source::System.as_str(),
        );
        let mut q = sqlx::query(&sql)
            .bind(&p.actor)
            .bind(ip)
            .bind(IP_BURST)
            .bind(since_burst(at, a));
        for c in &counted {
            q = q.bind(*c);
        }
        let row = q.fetch_one(&mut **tx).await?;
        let n = row.get::<Option<i64>, _>("n").unwrap_or(0) + 1;
        let flagged = row.get::<Option<i64>, _>("flagged").unwrap_or(0) > 0;
        if n >= i64::from(a.ip_burst_count) && !flagged {
            out.burst = Some(n);
        }
    }
    Ok(out)
}

/// Freezes the rep's actions on the customer (the caller wrote the rule-hit point).
pub async fn freeze(
    tx: &mut Tx,
    at: i64,
    p: &NewPoint,
    refusal: &Refusal,
    point_id: &str,
) -> Result<()> {
    let id = new_id();
    let reason = format!(
        "同类动作「{}」在{}内超过{}次",
        p.action,
        crate::text::durations_in(&refusal.window),
        refusal.limit
    );
    sqlx::query(
        "INSERT INTO action_freezes (id, org_id, user_id, customer_id, rule, reason, point_id, frozen_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(&id)
    .bind(&p.org_id)
    .bind(&p.actor)
    .bind(&p.customer)
    .bind(refusal.rule)
    .bind(&reason)
    .bind(point_id)
    .bind(at)
    .execute(&mut **tx)
    .await?;
    Actor::system()
        .audit(
            tx,
            at,
            &p.org_id,
            "antifraud.freeze",
            ("action_freeze", &id),
            json!({"user": p.actor, "customer": p.customer, "action": p.action, "point": point_id}),
        )
        .await?;
    Ok(())
}

/// Audits a burst and sends an alert card to each of the rep's direct superiors.
pub async fn alert_burst(
    tx: &mut Tx,
    cipher: &Cipher,
    at: i64,
    p: &NewPoint,
    count: i64,
    point_id: &str,
) -> Result<()> {
    let ip = p.client_ip.as_deref().unwrap_or_default();
    Actor::system()
        .audit(
            tx,
            at,
            &p.org_id,
            "antifraud.ip_burst",
            ("user", p.actor_id()),
            json!({"ip": ip, "records_in_window": count, "customer": p.customer, "point": point_id}),
        )
        .await?;
    let names = sqlx::query(
        "SELECT (SELECT name FROM users WHERE id = $1) AS rep, (SELECT name FROM customers WHERE id = $2) AS customer, \
         (SELECT timezone FROM organisations WHERE id = $3) AS tz",
    )
    .bind(&p.actor)
    .bind(&p.customer)
    .bind(&p.org_id)
    .fetch_one(&mut **tx)
    .await?;
    let rep: String = names.get::<Option<String>, _>("rep").unwrap_or_default();
    // The alert shows the time in the organisation's zone.
    let tz = crate::text::zone(&names.get::<Option<String>, _>("tz").unwrap_or_default());
    let customer: String = names
        .get::<Option<String>, _>("customer")
        .unwrap_or_default();
    let card = cards::templates::compose(
        "antifraud.ip_burst",
        &[
            ("rep", rep),
            ("customer", customer),
            ("action", crate::text::action(&p.action).to_string()),
            ("ip", ip.to_string()),
            ("time", crate::text::time_short(at, tz)),
            ("count", count.to_string()),
        ],
    );
    for superior in direct_superiors(tx, p.actor_id()).await? {
        cards::send(
            tx,
            cipher,
            at,
            &p.org_id,
            &superior,
            "antifraud.ip_burst",
            Some(point_id),
            &card,
        )
        .await?;
    }
    Ok(())
}

/// The user's direct superiors (from the directory), active ones only.
pub async fn direct_superiors(tx: &mut Tx, user_id: &str) -> Result<Vec<String>> {
    let rows = sqlx::query(
        "SELECT s.superior_id FROM user_superiors s JOIN users u ON u.id = s.superior_id \
         WHERE s.user_id = $1 AND u.status = 'active' ORDER BY s.superior_id",
    )
    .bind(user_id)
    .fetch_all(&mut **tx)
    .await?;
    Ok(rows.iter().map(|r| r.get("superior_id")).collect())
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Freeze {
    pub id: String,
    pub user: String,
    pub customer: String,
    pub rule: String,
    pub reason: String,
    /// The rule-hit tracking point.
    pub point: Option<String>,
    pub frozen_at: String,
    pub lifted_at: Option<String>,
    pub lifted_by: Option<String>,
    pub lift_reason: Option<String>,
}

const FREEZE_COLUMNS: &str =
    "SELECT id, user_id, customer_id, rule, reason, point_id, frozen_at, lifted_at, lifted_by, \
     lift_reason_enc FROM action_freezes";

/// A freeze with its lift reason decrypted.
fn freeze_from_row(cipher: &Cipher, r: &sqlx::any::AnyRow) -> Result<Freeze> {
    Ok(Freeze {
        lift_reason: fields::open_opt(cipher, LIFT_REASON, r.get("lift_reason_enc"))?,
        ..active_from_row(r)
    })
}

/// A freeze in force: not lifted, so it has no lift reason to decrypt (this runs for every
/// point the ledger writes).
fn active_from_row(r: &sqlx::any::AnyRow) -> Freeze {
    Freeze {
        id: r.get("id"),
        user: r.get("user_id"),
        customer: r.get("customer_id"),
        rule: r.get("rule"),
        reason: r.get("reason"),
        point: r.get("point_id"),
        frozen_at: crate::clock::rfc3339(r.get("frozen_at")),
        lifted_at: r
            .get::<Option<i64>, _>("lifted_at")
            .map(crate::clock::rfc3339),
        lifted_by: r.get("lifted_by"),
        lift_reason: None,
    }
}

pub async fn active_freeze_in(
    tx: &mut Tx,
    org_id: &str,
    user: &str,
    customer: &str,
) -> Result<Option<Freeze>> {
    let row = sqlx::query(&format!(
        "{FREEZE_COLUMNS} WHERE org_id = $1 AND user_id = $2 AND customer_id = $3 AND lifted_at IS NULL \
         ORDER BY id LIMIT 1"
    ))
    .bind(org_id)
    .bind(user)
    .bind(customer)
    .fetch_optional(&mut **tx)
    .await?;
    Ok(row.as_ref().map(active_from_row))
}

/// The freeze in force on this rep's actions on this customer, if any.
pub async fn active_freeze(
    db: &Db,
    org_id: &str,
    user: &str,
    customer: &str,
) -> Result<Option<Freeze>> {
    let mut conn = db.pool.acquire().await?;
    let row = sqlx::query(&format!(
        "{FREEZE_COLUMNS} WHERE org_id = $1 AND user_id = $2 AND customer_id = $3 AND lifted_at IS NULL \
         ORDER BY id LIMIT 1"
    ))
    .bind(org_id)
    .bind(user)
    .bind(customer)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(row.as_ref().map(active_from_row))
}

#[derive(Debug, Default, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FreezeFilter {
    pub user: Option<String>,
    pub customer: Option<String>,
    /// `true`: only freezes in force.
    pub active: Option<bool>,
}

pub async fn list(
    db: &Db,
    cipher: &Cipher,
    org_id: &str,
    f: &FreezeFilter,
    page: &PageRequest,
) -> Result<Page<Freeze>> {
    let mut sel = Select::org_page(org_id, page);
    sel.equal_each(&[("user_id", &f.user), ("customer_id", &f.customer)]);
    if f.active == Some(true) {
        sel.and_all("lifted_at IS NULL", vec![]);
    }
    let sql = sel.sql(FREEZE_COLUMNS, "ORDER BY id LIMIT {limit}");
    let rows = sel
        .bind(sqlx::query(&sql))
        .bind(page.limit + 1)
        .fetch_all(&db.pool)
        .await?;
    let items = rows
        .iter()
        .map(|r| freeze_from_row(cipher, r))
        .collect::<Result<_>>()?;
    Ok(Page::from_rows(items, page, |f| &f.id))
}

/// Someone with authority over the frozen rep (`access::authority`: never the rep) lifts
/// the freeze; the reason is required and audited. `actor` is who the audit log names,
/// `who` whose authority counts and who is recorded as lifting it.
#[allow(clippy::too_many_arguments)]
pub async fn lift(
    db: &Db,
    cipher: &Cipher,
    now_ms: i64,
    org_id: &str,
    actor: &Actor,
    who: Who<'_>,
    id: &str,
    reason: &str,
) -> Result<Freeze> {
    let reason = crate::validate::text("reason", reason, 500)?;
    let mut tx = db.begin().await?;
    let select = format!("{FREEZE_COLUMNS} WHERE id = $1 AND org_id = $2");
    let rep: String = sqlx::query(&select)
        .bind(id)
        .bind(org_id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(Error::NotFound { what: "freeze" })?
        .get("user_id");
    authority::require(&mut tx, org_id, who, Managed::Freeze { rep: &rep }).await?;
    let lifted_by = match who {
        Who::Person(user) => user,
        Who::Key(_) => actor.id.as_deref().unwrap_or(actor.kind),
    };
    let lifted = sqlx::query(
        "UPDATE action_freezes SET lifted_at = $1, lifted_by = $2, lift_reason_enc = $3 \
         WHERE id = $4 AND org_id = $5 AND lifted_at IS NULL",
    )
    .bind(now_ms)
    .bind(lifted_by)
    .bind(cipher.encrypt(LIFT_REASON, &reason))
    .bind(id)
    .bind(org_id)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if lifted == 0 {
        return Err(Error::Conflict("this freeze was already lifted".into()));
    }
    let row = sqlx::query(&select)
        .bind(id)
        .bind(org_id)
        .fetch_one(&mut *tx)
        .await?;
    actor
        .audit(
            &mut tx,
            now_ms,
            org_id,
            "antifraud.lift",
            ("action_freeze", id),
            // The reason is a person's words: it stays encrypted on the freeze (the target).
            json!({"lifted_by": lifted_by}),
        )
        .await?;
    tx.commit().await?;
    freeze_from_row(cipher, &row)
}
