//! Weekly collaboration health: per responsible role and per person, the mean response
//! time (opened → accepted), the overdue ratio and the return (rejection) rate of the
//! requests opened that week. Every Monday 08:00 (organisation time zone) the managers get
//! a card with the headline figures, linking to the full page.

use std::collections::BTreeMap;

use serde::Serialize;
use sqlx::{AnyConnection, Row};

use crate::cards;
use crate::clock::SharedClock;
use crate::credibility::Week;
use crate::db::Tx;
use crate::error::Result;
use crate::jobs::{BoxFuture, ClaimedJob, JobError, TxJob};

pub const KIND: &str = "collab.health_weekly";
pub const CRON: &str = "0 8 * * 1";
pub const CARD_PURPOSE: &str = "collab.health";

#[derive(Debug, Clone, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Figures {
    pub requests: i64,
    /// Accepted (responded to) so far.
    pub responded: i64,
    /// Mean minutes from opening to acceptance, over the responded ones.
    pub mean_response_minutes: Option<f64>,
    pub overdue: i64,
    pub overdue_ratio: Option<f64>,
    pub returned: i64,
    pub return_rate: Option<f64>,
}

impl Figures {
    fn add(&mut self, response_ms: Option<i64>, overdue: bool, returned: bool, sum_ms: &mut i64) {
        self.requests += 1;
        if let Some(ms) = response_ms {
            self.responded += 1;
            *sum_ms += ms;
        }
        self.overdue += i64::from(overdue);
        self.returned += i64::from(returned);
    }

    fn finish(&mut self, sum_ms: i64) {
        let ratio = |n: i64, d: i64| (d > 0).then(|| n as f64 / d as f64);
        self.mean_response_minutes =
            (self.responded > 0).then(|| sum_ms as f64 / self.responded as f64 / 60_000.0);
        self.overdue_ratio = ratio(self.overdue, self.requests);
        self.return_rate = ratio(self.returned, self.requests);
    }
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PersonFigures {
    pub user: String,
    pub name: String,
    pub role: String,
    #[serde(flatten)]
    pub figures: Figures,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Health {
    /// Monday of the week, YYYY-MM-DD.
    pub week: String,
    pub overall: Figures,
    pub by_role: BTreeMap<String, Figures>,
    /// Per assignee (requests still in a queue count for the role only).
    pub by_person: Vec<PersonFigures>,
}

/// The figures of the requests opened in `week`.
pub async fn compute(conn: &mut AnyConnection, org_id: &str, week: &Week) -> Result<Health> {
    let rows = sqlx::query(
        "SELECT r.responsible_role, r.assignee_user_id, u.name, r.created_at, r.accepted_at, r.overdue_at, r.status \
         FROM collab_requests r LEFT JOIN users u ON u.id = r.assignee_user_id \
         WHERE r.org_id = $1 AND r.created_at >= $2 AND r.created_at < $3 ORDER BY r.id",
    )
    .bind(org_id)
    .bind(week.start_ms)
    .bind(week.end_ms)
    .fetch_all(&mut *conn)
    .await?;
    let mut overall = (Figures::default(), 0i64);
    let mut roles: BTreeMap<String, (Figures, i64)> = BTreeMap::new();
    let mut people: BTreeMap<String, (String, String, Figures, i64)> = BTreeMap::new();
    for r in &rows {
        let created: i64 = r.get("created_at");
        let response = r.get::<Option<i64>, _>("accepted_at").map(|a| a - created);
        let overdue = r.get::<Option<i64>, _>("overdue_at").is_some();
        let returned = r.get::<String, _>("status") == "returned";
        let role: String = r.get("responsible_role");
        overall.0.add(response, overdue, returned, &mut overall.1);
        let e = roles.entry(role.clone()).or_default();
        e.0.add(response, overdue, returned, &mut e.1);
        if let Some(user) = r.get::<Option<String>, _>("assignee_user_id") {
            let name: String = r.get::<Option<String>, _>("name").unwrap_or_default();
            let e = people
                .entry(user)
                .or_insert_with(|| (name, role.clone(), Figures::default(), 0));
            e.2.add(response, overdue, returned, &mut e.3);
        }
    }
    overall.0.finish(overall.1);
    Ok(Health {
        week: week.monday.to_string(),
        overall: overall.0,
        by_role: roles
            .into_iter()
            .map(|(k, (mut f, sum))| {
                f.finish(sum);
                (k, f)
            })
            .collect(),
        by_person: people
            .into_iter()
            .map(|(user, (name, role, mut f, sum))| {
                f.finish(sum);
                PersonFigures {
                    user,
                    name,
                    role,
                    figures: f,
                }
            })
            .collect(),
    })
}

fn percent(r: Option<f64>) -> String {
    r.map_or("—".into(), |r| format!("{:.0}%", r * 100.0))
}

/// Sends the week's card to every manager, once per week whatever re-runs.
pub async fn push(
    tx: &mut Tx,
    cipher: &crate::security::Cipher,
    now_ms: i64,
    org_id: &str,
    week: &Week,
    public_url: &str,
) -> Result<usize> {
    let h = compute(tx, org_id, week).await?;
    let managers: Vec<String> = sqlx::query(
        "SELECT u.id FROM users u JOIN user_roles r ON r.user_id = u.id \
         WHERE u.org_id = $1 AND r.role = 'manager' AND u.status = 'active' ORDER BY u.id",
    )
    .bind(org_id)
    .fetch_all(&mut **tx)
    .await?
    .iter()
    .map(|r| r.get("id"))
    .collect();
    let mean = crate::text::minutes(h.overall.mean_response_minutes);
    let worst = h
        .by_role
        .iter()
        .max_by(|a, b| {
            a.1.overdue_ratio
                .unwrap_or(0.0)
                .total_cmp(&b.1.overdue_ratio.unwrap_or(0.0))
        })
        .map(|(role, f)| {
            format!(
                "{}（超时 {}）",
                crate::text::role_label(role),
                percent(f.overdue_ratio)
            )
        })
        .unwrap_or_else(|| "—".into());
    let card = cards::templates::compose(
        "collab.health",
        &[
            ("week", crate::text::week(week.monday)),
            ("requests", h.overall.requests.to_string()),
            ("mean", mean),
            ("overdue", percent(h.overall.overdue_ratio)),
            ("returns", percent(h.overall.return_rate)),
            ("worst", worst),
            (
                "link",
                format!(
                    "{}/collab/health?week={}",
                    public_url.trim_end_matches('/'),
                    week.monday
                ),
            ),
        ],
    );
    let mut sent = 0;
    for m in &managers {
        // One card per manager and week: the object reference carries the week.
        let already = sqlx::query(
            "SELECT 1 AS one FROM cards WHERE recipient_user_id = $1 AND purpose = $2 AND object_ref = $3",
        )
        .bind(m)
        .bind(CARD_PURPOSE)
        .bind(week.monday.to_string())
        .fetch_optional(&mut **tx)
        .await?;
        if already.is_none() {
            cards::send(
                tx,
                cipher,
                now_ms,
                org_id,
                m,
                CARD_PURPOSE,
                Some(&week.monday.to_string()),
                &card,
            )
            .await?;
            sent += 1;
        }
    }
    Ok(sent)
}

/// The Monday job: last week's health to the managers.
pub struct Weekly {
    pub clock: SharedClock,
    pub cipher: crate::security::Cipher,
    pub org_id: String,
    pub tz: chrono_tz::Tz,
    pub public_url: String,
}

impl TxJob for Weekly {
    fn run<'a>(
        &'a self,
        tx: &'a mut Tx,
        _job: &'a ClaimedJob,
    ) -> BoxFuture<'a, Result<(), JobError>> {
        Box::pin(async move {
            let now = self.clock.now_ms();
            let week = Week::before(now, self.tz)?;
            let sent = push(tx, &self.cipher, now, &self.org_id, &week, &self.public_url).await?;
            tracing::info!(week = %week.monday, cards = sent, "collaboration health pushed");
            Ok(())
        })
    }
}
