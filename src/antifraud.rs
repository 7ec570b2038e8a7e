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

use std::collections::HashMap;

use serde::Serialize;
use serde_json::json;
use sqlx::Row;

use crate::access::Actor;
use crate::cards;
use crate::db::{new_id, Db, Select, Tx};
use crate::error::{Error, Result};
use crate::page::{Page, PageRequest};
use crate::policy::authority::{self, Managed};
use crate::policy::Who;
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

/// The repeat limit's count: for each of `actions`, the rep's counted records of it on the
/// customer within the window before `at`. The screen and the sidebar's warning both ask
/// here, so the warning counts exactly what the refusal will.
async fn repeat_counts(
    conn: &mut sqlx::AnyConnection,
    user: &str,
    customer: &str,
    actions: &[&str],
    a: &crate::rules::AntifraudRules,
    at: i64,
) -> Result<HashMap<String, i64>> {
    if actions.is_empty() {
        return Ok(HashMap::new());
    }
    let since = at - a.repeat_window.as_millis() as i64;
    let params = (4..4 + actions.len())
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!(
        "SELECT action, COUNT(*) AS n FROM tracking_points WHERE actor_user_id = $1 AND customer_id = $2 \
         AND occurred_at > $3 AND action IN ({params}) AND {} GROUP BY action",
        counted_clause()
    );
    let mut q = sqlx::query(&sql).bind(user).bind(customer).bind(since);
    for action in actions {
        q = q.bind(*action);
    }
    Ok(q.fetch_all(&mut *conn)
        .await?
        .iter()
        .map(|r| (r.get::<String, _>("action"), r.get::<i64, _>("n")))
        .collect())
}

/// What the rep is told before a tap that the repeat limit would refuse and freeze, for
/// each guarded action of the rule set whose next record would: e.g. 「24小时内已记录2次
/// 「已发送样品清单」，再记录将被冻结」. Nothing while a freeze is in force (every tap is then
/// refused without a new freeze) or when the rule is off.
pub async fn repeat_warnings(
    db: &Db,
    rules: &RuleSet,
    org_id: &str,
    user: &str,
    customer: &str,
    at: i64,
) -> Result<HashMap<String, String>> {
    let a = &rules.antifraud;
    if a.repeat_limit == 0 || active_freeze(db, org_id, user, customer).await?.is_some() {
        return Ok(HashMap::new());
    }
    let guarded: Vec<&str> = rules
        .actions
        .iter()
        .filter(|d| d.guarded)
        .map(|d| d.name.as_str())
        .collect();
    let mut conn = db.pool.acquire().await?;
    let counts = repeat_counts(&mut conn, user, customer, &guarded, a, at).await?;
    Ok(counts
        .into_iter()
        .filter(|(_, n)| *n >= i64::from(a.repeat_limit))
        .map(|(action, n)| {
            let text = format!(
                "{}内已记录{n}次「{}」，再记录将被冻结",
                crate::text::duration(a.repeat_window),
                crate::text::action(&action)
            );
            (action, text)
        })
        .collect())
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
        // The attempted action only, as the rep's own sidebar and API records of it.
        let count = repeat_counts(tx, p.actor_id(), p.customer_id(), &[&p.action], a, at)
            .await?
            .remove(&p.action)
            .unwrap_or(0);
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

/// The purpose of the card a freeze sends the rep's direct superiors, with 「解除冻结」
/// (its object is the freeze); clicks come back to [`FreezeCardClicks`].
pub const FREEZE_CARD: &str = "antifraud.freeze";
/// The card button that lifts the freeze.
pub const LIFT_BUTTON: &str = "lift";
/// The reason a lift from the card records.
pub const CARD_LIFT_REASON: &str = "主管通过卡片一键解除";

/// Freezes the rep's actions on the customer (the caller wrote the rule-hit point), and
/// sends each of the rep's direct superiors a card to lift it with one tap.
pub async fn freeze(
    tx: &mut Tx,
    cipher: &Cipher,
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
    let names = context_names(tx, p).await?;
    let card = cards::templates::compose(
        FREEZE_CARD,
        &[
            ("rep", names.rep),
            ("customer", names.customer),
            ("action", crate::text::action(&p.action).to_string()),
            ("rule", reason),
            ("time", crate::text::time_short(at, names.tz)),
        ],
    );
    for superior in direct_superiors(tx, p.actor_id()).await? {
        cards::send(
            tx,
            cipher,
            at,
            &p.org_id,
            &superior,
            FREEZE_CARD,
            Some(&id),
            &card,
        )
        .await?;
    }
    Ok(())
}

/// The rep's and the customer's names and the organisation's zone, as cards show them.
struct Names {
    rep: String,
    customer: String,
    tz: chrono_tz::Tz,
}

async fn context_names(tx: &mut Tx, p: &NewPoint) -> Result<Names> {
    let row = sqlx::query(
        "SELECT (SELECT name FROM users WHERE id = $1) AS rep, (SELECT name FROM customers WHERE id = $2) AS customer, \
         (SELECT timezone FROM organisations WHERE id = $3) AS tz",
    )
    .bind(&p.actor)
    .bind(&p.customer)
    .bind(&p.org_id)
    .fetch_one(&mut **tx)
    .await?;
    Ok(Names {
        rep: row.get::<Option<String>, _>("rep").unwrap_or_default(),
        customer: row.get::<Option<String>, _>("customer").unwrap_or_default(),
        tz: crate::text::zone(&row.get::<Option<String>, _>("tz").unwrap_or_default()),
    })
}

/// Whether a card about freeze `id` went (or is going) to anyone: a rep without direct
/// superiors is told nobody was.
pub async fn superiors_notified(db: &Db, org_id: &str, id: &str) -> Result<bool> {
    Ok(sqlx::query(
        "SELECT 1 FROM cards WHERE org_id = $1 AND purpose = $2 AND object_ref = $3 AND status <> 'failed' LIMIT 1",
    )
    .bind(org_id)
    .bind(FREEZE_CARD)
    .bind(id)
    .fetch_optional(&db.pool)
    .await?
    .is_some())
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
    // The alert shows the time in the organisation's zone.
    let Names { rep, customer, tz } = context_names(tx, p).await?;
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

/// Someone with authority over the frozen rep (`policy::authority`: never the rep) lifts
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
    let mut tx = db.begin().await?;
    let freeze = lift_in(&mut tx, cipher, now_ms, org_id, actor, who, id, reason).await?;
    tx.commit().await?;
    Ok(freeze)
}

/// [`lift`] inside the caller's transaction (a card click's). Every card about the
/// freeze that its platform still lets closeloop update then shows who lifted it.
#[allow(clippy::too_many_arguments)]
pub async fn lift_in(
    tx: &mut Tx,
    cipher: &Cipher,
    now_ms: i64,
    org_id: &str,
    actor: &Actor,
    who: Who<'_>,
    id: &str,
    reason: &str,
) -> Result<Freeze> {
    let reason = crate::validate::text("reason", reason, 500)?;
    let select = format!("{FREEZE_COLUMNS} WHERE id = $1 AND org_id = $2");
    let rep: String = sqlx::query(&select)
        .bind(id)
        .bind(org_id)
        .fetch_optional(&mut **tx)
        .await?
        .ok_or(Error::NotFound { what: "freeze" })?
        .get("user_id");
    authority::require(tx, org_id, who, Managed::Freeze { rep: &rep }).await?;
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
    .execute(&mut **tx)
    .await?
    .rows_affected();
    if lifted == 0 {
        return Err(Error::Conflict("this freeze was already lifted".into()));
    }
    let row = sqlx::query(&select)
        .bind(id)
        .bind(org_id)
        .fetch_one(&mut **tx)
        .await?;
    actor
        .audit(
            tx,
            now_ms,
            org_id,
            "antifraud.lift",
            ("action_freeze", id),
            // The reason is a person's words: it stays encrypted on the freeze (the target).
            json!({"lifted_by": lifted_by}),
        )
        .await?;
    show_lifted(tx, now_ms, org_id, id, None).await?;
    freeze_from_row(cipher, &row)
}

/// 「已由王经理解除」 on the freeze's cards that can still be updated (`only`: on that one
/// card). A lift by a key acting for nobody reads 「已解除」.
async fn show_lifted(
    tx: &mut Tx,
    now_ms: i64,
    org_id: &str,
    id: &str,
    only: Option<&str>,
) -> Result<()> {
    let by: Option<String> = sqlx::query(
        "SELECT u.name FROM action_freezes f JOIN users u ON u.id = f.lifted_by WHERE f.id = $1",
    )
    .bind(id)
    .fetch_optional(&mut **tx)
    .await?
    .map(|r| r.get("name"));
    let text = by.map_or_else(|| "已解除".to_string(), |name| format!("已由{name}解除"));
    let cards: Vec<String> =
        sqlx::query("SELECT id FROM cards WHERE org_id = $1 AND purpose = $2 AND object_ref = $3")
            .bind(org_id)
            .bind(FREEZE_CARD)
            .bind(id)
            .fetch_all(&mut **tx)
            .await?
            .iter()
            .map(|r| r.get("id"))
            .filter(|c: &String| only.is_none_or(|o| o == c))
            .collect();
    for card in cards {
        cards::show_status(tx, now_ms, org_id, &card, &text).await?;
    }
    Ok(())
}

/// Clicks on freeze cards: the superior's 「解除冻结」 lifts the freeze through [`lift_in`]
/// (their authority checked there, audited, with [`CARD_LIFT_REASON`]). A click after the
/// freeze was lifted (on another card, on the page, through the API) changes nothing, and
/// the card says who lifted it; a click by someone without authority changes nothing, and
/// the card says so.
pub struct FreezeCardClicks {
    pub cipher: Cipher,
}

impl cards::ClickHandler for FreezeCardClicks {
    fn customer<'a>(
        &'a self,
        tx: &'a mut Tx,
        org_id: &'a str,
        object: &'a str,
    ) -> crate::jobs::BoxFuture<'a, Result<Option<String>>> {
        Box::pin(async move {
            Ok(
                sqlx::query("SELECT customer_id FROM action_freezes WHERE id = $1 AND org_id = $2")
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
    ) -> crate::jobs::BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            if click.action != LIFT_BUTTON {
                return Ok(());
            }
            let actor = Actor {
                kind: "user",
                id: Some(click.clicker.clone()),
            };
            let lifted = lift_in(
                tx,
                &self.cipher,
                click.now_ms,
                &click.org_id,
                &actor,
                Who::Person(&click.clicker),
                &click.object,
                CARD_LIFT_REASON,
            )
            .await;
            match lifted {
                Ok(_) => Ok(()),
                // Lifted elsewhere first: this card shows by whom.
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
                    "无权解除此冻结",
                )
                .await
                .map(|_| ()),
                Err(e) => Err(e),
            }
        })
    }
}
