//! The two clocks of a request, as durable timers: the acknowledgement clock (no 确认收到
//! in time → a reminder) and the SLA clock (not answered by the deadline → overdue, a
//! reminder to the assignee and an escalation to the assignee's direct superiors). Both
//! run in the completing transaction, so a timer acts once even if it fires twice.

use serde_json::{json, Value};
use sqlx::Row;

use super::requests::{CARD_PURPOSE, ESCALATION_PURPOSE};
use crate::cards::{self, Card};
use crate::clock::SharedClock;
use crate::db::Tx;
use crate::jobs::{BoxFuture, ClaimedJob, JobError, TxJob};

/// The tracking point of an escalation (source and actor kind `system`).
pub const ESCALATE_ACTION: &str = "collab.escalate";

struct Pending {
    org: String,
    title: String,
    status: String,
    assignee: Option<String>,
    initiator: String,
    customer: String,
    customer_id: String,
    timezone: String,
    acked: bool,
    overdue: bool,
}

async fn load(tx: &mut Tx, id: &str) -> Result<Option<Pending>, JobError> {
    let row = sqlx::query(
        "SELECT r.org_id, r.title, r.status, r.assignee_user_id, r.initiator_user_id, r.acked_at, r.overdue_at, \
         c.name AS customer, r.customer_id, o.timezone FROM collab_requests r \
         JOIN customers c ON c.id = r.customer_id JOIN organisations o ON o.id = r.org_id WHERE r.id = $1",
    )
    .bind(id)
    .fetch_optional(&mut **tx)
    .await?;
    Ok(row.map(|r| Pending {
        org: r.get("org_id"),
        title: r.get("title"),
        status: r.get("status"),
        assignee: r.get("assignee_user_id"),
        initiator: r.get("initiator_user_id"),
        customer: r.get("customer"),
        customer_id: r.get("customer_id"),
        timezone: r.get("timezone"),
        acked: r.get::<Option<i64>, _>("acked_at").is_some(),
        overdue: r.get::<Option<i64>, _>("overdue_at").is_some(),
    }))
}

/// Who is on the hook: the assignee, or everyone the request was queued to.
async fn responsible(tx: &mut Tx, id: &str, p: &Pending) -> Result<Vec<String>, JobError> {
    if let Some(a) = &p.assignee {
        return Ok(vec![a.clone()]);
    }
    Ok(sqlx::query(
        "SELECT DISTINCT recipient_user_id FROM cards WHERE purpose = $1 AND object_ref = $2 ORDER BY recipient_user_id",
    )
    .bind(CARD_PURPOSE)
    .bind(id)
    .fetch_all(&mut **tx)
    .await?
    .iter()
    .map(|r| r.get("recipient_user_id"))
    .collect())
}

async fn event(
    tx: &mut Tx,
    now: i64,
    id: &str,
    action: &str,
    detail: Value,
) -> Result<(), JobError> {
    sqlx::query(
        "INSERT INTO collab_events (id, request_id, at, actor_user_id, action, detail) VALUES ($1, $2, $3, NULL, $4, $5)",
    )
    .bind(crate::db::new_id())
    .bind(id)
    .bind(now)
    .bind(action)
    .bind(detail.to_string())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

fn reminder(p: &Pending, text: &str) -> Card {
    cards::templates::compose(
        // Until 确认收到 the reminder still carries the button.
        if p.acked {
            "collab.nudge"
        } else {
            "collab.reminder"
        },
        &[
            ("title", p.title.clone()),
            ("customer", p.customer.clone()),
            ("text", text.to_string()),
        ],
    )
}

fn request_id(job: &ClaimedJob) -> Result<&str, JobError> {
    job.payload["request_id"]
        .as_str()
        .ok_or_else(|| JobError::GiveUp("payload without request_id".into()))
}

fn closed(status: &str) -> bool {
    status == "answered" || status == "returned"
}

/// No acknowledgement in time → a reminder to whoever has to acknowledge.
pub struct AckClock {
    pub clock: SharedClock,
    pub cipher: crate::security::Cipher,
}

impl TxJob for AckClock {
    fn run<'a>(
        &'a self,
        tx: &'a mut Tx,
        job: &'a ClaimedJob,
    ) -> BoxFuture<'a, Result<(), JobError>> {
        Box::pin(async move {
            let id = request_id(job)?;
            let now = self.clock.now_ms();
            let Some(p) = load(tx, id).await? else {
                return Ok(());
            };
            if p.acked || closed(&p.status) {
                return Ok(());
            }
            let to = responsible(tx, id, &p).await?;
            let card = reminder(&p, "请尽快确认收到该请求");
            for u in &to {
                cards::send(
                    tx,
                    &self.cipher,
                    now,
                    &p.org,
                    u,
                    CARD_PURPOSE,
                    Some(id),
                    &card,
                )
                .await?;
            }
            event(tx, now, id, "ack_reminded", json!({"to": to})).await
        })
    }
}

/// The deadline passed unanswered → overdue (red), a reminder to the assignee and an
/// escalation card to each of the assignee's direct superiors.
pub struct SlaClock {
    pub clock: SharedClock,
    pub cipher: crate::security::Cipher,
}

impl TxJob for SlaClock {
    fn run<'a>(
        &'a self,
        tx: &'a mut Tx,
        job: &'a ClaimedJob,
    ) -> BoxFuture<'a, Result<(), JobError>> {
        Box::pin(async move {
            let id = request_id(job)?;
            let now = self.clock.now_ms();
            let Some(p) = load(tx, id).await? else {
                return Ok(());
            };
            if p.overdue || closed(&p.status) {
                return Ok(());
            }
            sqlx::query(
                "UPDATE collab_requests SET overdue_at = $1, updated_at = $1 WHERE id = $2",
            )
            .bind(now)
            .bind(id)
            .execute(&mut **tx)
            .await?;
            event(tx, now, id, "overdue", json!({})).await?;
            let to = responsible(tx, id, &p).await?;
            let card = reminder(&p, "已超过约定时限，请立即处理");
            for u in &to {
                cards::send(
                    tx,
                    &self.cipher,
                    now,
                    &p.org,
                    u,
                    CARD_PURPOSE,
                    Some(id),
                    &card,
                )
                .await?;
            }
            let mut bosses = std::collections::BTreeSet::new();
            for u in &to {
                for s in crate::antifraud::direct_superiors(tx, u)
                    .await
                    .map_err(|e| JobError::Retry(e.to_string()))?
                {
                    bosses.insert(s);
                }
            }
            let mut names = Vec::new();
            for u in &to {
                let n: Option<String> = sqlx::query("SELECT name FROM users WHERE id = $1")
                    .bind(u)
                    .fetch_optional(&mut **tx)
                    .await?
                    .map(|r| r.get("name"));
                names.push(n.unwrap_or_default());
            }
            let initiator: String = sqlx::query("SELECT name FROM users WHERE id = $1")
                .bind(&p.initiator)
                .fetch_optional(&mut **tx)
                .await?
                .map(|r| r.get("name"))
                .unwrap_or_default();
            let escalation = cards::templates::compose(
                "collab.escalation",
                &[
                    ("title", p.title.clone()),
                    ("assignees", names.join("、")),
                    ("initiator", initiator),
                    ("customer", p.customer.clone()),
                ],
            );
            for b in &bosses {
                cards::send(
                    tx,
                    &self.cipher,
                    now,
                    &p.org,
                    b,
                    ESCALATION_PURPOSE,
                    Some(id),
                    &escalation,
                )
                .await?;
            }
            // The escalation is closeloop's step on the customer's request: a system point
            // about the assignee (none while the request is still queued).
            let tz: chrono_tz::Tz = p
                .timezone
                .parse()
                .map_err(|e| JobError::GiveUp(format!("organisation time zone: {e}")))?;
            let point = crate::tracking::NewPoint {
                actor: p.assignee.clone(),
                ..crate::tracking::NewPoint::new(
                    &p.org,
                    "",
                    &p.customer_id,
                    ESCALATE_ACTION,
                    crate::tracking::Source::System,
                    json!({"request": id, "escalated_to": bosses}),
                )
            };
            crate::tracking::write_in(tx, now, &point, tz).await?;
            event(
                tx,
                now,
                id,
                "escalated",
                json!({"reminded": to, "escalated_to": bosses}),
            )
            .await
        })
    }
}
