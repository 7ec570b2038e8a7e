//! Per-rep credibility, weekly: verified ÷ recorded follow-up calls, and proposals opened
//! ÷ proposals sent. Faked records make both fall. Every Monday 08:00 (organisation time
//! zone) the previous Monday–Sunday week is computed and stored; a rep whose judged
//! ratio is below the rule set's threshold gets a review task and a card, and each of
//! the rep's direct superiors an alert card — once per rep and week, whatever re-runs.

use std::collections::BTreeMap;

use chrono::{Datelike, Days, NaiveDate, TimeZone};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::{AnyConnection, Row};

use crate::cards;
use crate::clock::SharedClock;
use crate::db::{new_id, Db, Tx};
use crate::error::{Error, Result};
use crate::jobs::{BoxFuture, ClaimedJob, JobError, TxJob};
use crate::page::{Page, PageRequest};
use crate::rules::{Claim, CredibilityRules, Rules};
use crate::tracking::{ActorKind, Source};

/// The weekly job; its schedule is [`CRON`] in the organisation's zone.
pub const KIND: &str = "credibility.weekly";
pub const CRON: &str = "0 8 * * 1";
pub const TASK_KIND: &str = "credibility_review";
pub const TASK_TITLE: &str = "《合规跟进指引》学习与行为复盘";
/// Card purposes: the superior's alert and the rep's notice.
pub const ALERT: &str = "credibility.alert";
pub const NOTICE: &str = "credibility.review";
const REVIEW_DUE_MS: i64 = 3 * 24 * 3600 * 1000;

/// What the call ratio counts: the rep's claimed calls (points whose action claims
/// `call`), made by the rep from the sidebar or the API.
pub const COUNTED_CLAIM: Claim = Claim::Call;
/// What the open ratio counts: links to documents of this kind, sent by the rep from the
/// sidebar or the API (their `document.sent` points).
pub const COUNTED_DOCUMENT: &str = "proposal";
/// The sources of the rep's own records that credibility counts.
pub const COUNTED_SOURCES: [Source; 2] = [Source::Sidebar, Source::Api];
/// The actor kind of the counted records: the rep themself.
pub const COUNTED_ACTOR: ActorKind = ActorKind::User;

/// `p.source IN (...) AND p.actor_kind = ...` over the counted records' points `p`.
fn counted_clause() -> String {
    crate::tracking::counted_clause("p.", &COUNTED_SOURCES, COUNTED_ACTOR)
}

/// A Monday–Sunday week in the organisation's zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Week {
    pub monday: NaiveDate,
    /// Monday 00:00 local, epoch ms (inclusive).
    pub start_ms: i64,
    /// The next Monday 00:00 local, epoch ms (exclusive).
    pub end_ms: i64,
}

fn local_midnight(date: NaiveDate, tz: chrono_tz::Tz) -> Result<i64> {
    let midnight = date
        .and_hms_opt(0, 0, 0)
        .ok_or_else(|| Error::invalid("date out of range"))?;
    tz.from_local_datetime(&midnight)
        .earliest()
        .map(|t| t.timestamp_millis())
        .ok_or_else(|| Error::invalid(format!("{date} has no midnight in {tz}")))
}

impl Week {
    /// The week `date` falls in.
    pub fn containing(date: NaiveDate, tz: chrono_tz::Tz) -> Result<Week> {
        let out_of_range = || Error::invalid(format!("the week of {date} is out of range"));
        let monday = date
            .checked_sub_days(Days::new(u64::from(date.weekday().num_days_from_monday())))
            .ok_or_else(out_of_range)?;
        let next = monday
            .checked_add_days(Days::new(7))
            .ok_or_else(out_of_range)?;
        Ok(Week {
            monday,
            start_ms: local_midnight(monday, tz)?,
            end_ms: local_midnight(next, tz)?,
        })
    }

    /// The last complete week before the moment `at_ms`.
    pub fn before(at_ms: i64, tz: chrono_tz::Tz) -> Result<Week> {
        let today = crate::clock::from_ms(at_ms).with_timezone(&tz).date_naive();
        let week_ago = today
            .checked_sub_days(Days::new(7))
            .ok_or_else(|| Error::invalid("the week before is out of range"))?;
        Week::containing(week_ago, tz)
    }

    pub fn sunday(&self) -> NaiveDate {
        self.monday + Days::new(6)
    }
}

/// One rep's week.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct RepWeek {
    /// The Monday the week starts on (organisation zone).
    pub week_start: String,
    pub week_end: String,
    pub user: String,
    pub name: Option<String>,
    /// 「已电话沟通」 claims recorded in the week.
    pub calls_recorded: i64,
    /// Of those, verified against official records or attested by the superior.
    pub calls_verified: i64,
    /// verified ÷ recorded; null when fewer than `min_samples` calls were recorded.
    pub call_ratio: Option<f64>,
    /// Proposal links sent in the week.
    pub proposals_sent: i64,
    /// Of those, opened by the customer (so far).
    pub proposals_opened: i64,
    /// opened ÷ sent; null when fewer than `min_samples` were sent.
    pub open_ratio: Option<f64>,
    /// A judged ratio is below the threshold.
    pub below_threshold: bool,
    /// The superior was alerted for this week.
    pub alerted: bool,
}

fn ratio(part: i64, whole: i64, rules: &CredibilityRules) -> Option<f64> {
    (whole > 0 && whole >= i64::from(rules.min_samples)).then(|| part as f64 / whole as f64)
}

/// The week's figures per rep, from the records (read-only); `alerted` as stored.
pub async fn figures(
    conn: &mut AnyConnection,
    rules: &CredibilityRules,
    org_id: &str,
    week: &Week,
) -> Result<Vec<RepWeek>> {
    #[derive(Default)]
    struct Counts {
        calls: i64,
        verified: i64,
        sent: i64,
        opened: i64,
    }
    let mut by_rep: BTreeMap<String, Counts> = BTreeMap::new();
    let sql = format!(
        "SELECT v.actor_user_id, CAST(COUNT(*) AS BIGINT) AS n, \
         CAST(SUM(CASE WHEN v.status IN ('verified', 'attested') THEN 1 ELSE 0 END) AS BIGINT) AS ok \
         FROM point_verifications v JOIN tracking_points p ON p.id = v.point_id \
         WHERE v.org_id = $1 AND v.claim = $4 AND v.occurred_at >= $2 AND v.occurred_at < $3 AND {} \
         GROUP BY v.actor_user_id",
        counted_clause()
    );
    let calls = sqlx::query(&sql)
        .bind(org_id)
        .bind(week.start_ms)
        .bind(week.end_ms)
        .bind(COUNTED_CLAIM.as_str())
        .fetch_all(&mut *conn)
        .await?;
    for r in &calls {
        let c = by_rep.entry(r.get("actor_user_id")).or_default();
        c.calls = r.get("n");
        c.verified = r.get::<Option<i64>, _>("ok").unwrap_or(0);
    }
    let sql = format!(
        "SELECT l.sent_by, CAST(COUNT(*) AS BIGINT) AS n, \
         CAST(SUM(CASE WHEN l.first_opened_at IS NULL THEN 0 ELSE 1 END) AS BIGINT) AS opened \
         FROM document_links l JOIN documents d ON d.id = l.document_id \
         JOIN tracking_points p ON p.id = l.sent_point_id \
         WHERE l.org_id = $1 AND d.kind = $4 AND l.sent_at >= $2 AND l.sent_at < $3 AND {} \
         GROUP BY l.sent_by",
        counted_clause()
    );
    let links = sqlx::query(&sql)
        .bind(org_id)
        .bind(week.start_ms)
        .bind(week.end_ms)
        .bind(COUNTED_DOCUMENT)
        .fetch_all(&mut *conn)
        .await?;
    for r in &links {
        let c = by_rep.entry(r.get("sent_by")).or_default();
        c.sent = r.get("n");
        c.opened = r.get::<Option<i64>, _>("opened").unwrap_or(0);
    }
    let stored = sqlx::query(
        "SELECT user_id, alerted FROM credibility_weekly WHERE org_id = $1 AND week_start = $2",
    )
    .bind(org_id)
    .bind(week.start_ms)
    .fetch_all(&mut *conn)
    .await?;
    let alerted: BTreeMap<String, bool> = stored
        .iter()
        .map(|r| (r.get("user_id"), r.get::<i64, _>("alerted") != 0))
        .collect();
    let mut names = BTreeMap::new();
    let users = sqlx::query("SELECT id, name FROM users WHERE org_id = $1")
        .bind(org_id)
        .fetch_all(&mut *conn)
        .await?;
    for r in &users {
        names.insert(r.get::<String, _>("id"), r.get::<String, _>("name"));
    }
    Ok(by_rep
        .into_iter()
        .map(|(user, c)| {
            let call_ratio = ratio(c.verified, c.calls, rules);
            let open_ratio = ratio(c.opened, c.sent, rules);
            let below = [call_ratio, open_ratio]
                .iter()
                .flatten()
                .any(|r| *r < rules.threshold);
            RepWeek {
                week_start: week.monday.to_string(),
                week_end: week.sunday().to_string(),
                name: names.get(&user).cloned(),
                alerted: alerted.get(&user).copied().unwrap_or(false),
                user,
                calls_recorded: c.calls,
                calls_verified: c.verified,
                call_ratio,
                proposals_sent: c.sent,
                proposals_opened: c.opened,
                open_ratio,
                below_threshold: below,
            }
        })
        .collect())
}

/// Computes the week, stores it, and alerts for every rep below the threshold not yet
/// alerted — in the caller's transaction, so the alert, the task and the mark commit
/// together.
#[allow(clippy::too_many_arguments)]
pub async fn apply_week(
    tx: &mut Tx,
    cipher: &crate::security::Cipher,
    rules: &CredibilityRules,
    now_ms: i64,
    org_id: &str,
    tz: chrono_tz::Tz,
    week: &Week,
) -> Result<Vec<RepWeek>> {
    let mut reps = figures(tx, rules, org_id, week).await?;
    for r in &mut reps {
        sqlx::query(
            "INSERT INTO credibility_weekly (org_id, user_id, week_start, calls_recorded, calls_verified, \
             proposals_sent, proposals_opened, alerted, computed_at) VALUES ($1, $2, $3, $4, $5, $6, $7, 0, $8) \
             ON CONFLICT (org_id, user_id, week_start) DO UPDATE SET calls_recorded = excluded.calls_recorded, \
             calls_verified = excluded.calls_verified, proposals_sent = excluded.proposals_sent, \
             proposals_opened = excluded.proposals_opened, computed_at = excluded.computed_at",
        )
        .bind(org_id)
        .bind(&r.user)
        .bind(week.start_ms)
        .bind(r.calls_recorded)
        .bind(r.calls_verified)
        .bind(r.proposals_sent)
        .bind(r.proposals_opened)
        .bind(now_ms)
        .execute(&mut **tx)
        .await?;
        if !r.below_threshold || r.alerted {
            continue;
        }
        // Compare-and-set: of two concurrent runs, one alerts.
        let won = sqlx::query(
            "UPDATE credibility_weekly SET alerted = 1 WHERE org_id = $1 AND user_id = $2 AND week_start = $3 \
             AND alerted = 0",
        )
        .bind(org_id)
        .bind(&r.user)
        .bind(week.start_ms)
        .execute(&mut **tx)
        .await?
        .rows_affected()
            == 1;
        if won {
            alert(tx, cipher, rules, now_ms, org_id, tz, week, r).await?;
            r.alerted = true;
        }
    }
    Ok(reps)
}

fn show_ratio(r: Option<f64>, part: i64, whole: i64) -> String {
    match r {
        Some(r) => format!("{r:.2}（{part}/{whole}）"),
        None => format!("样本不足，未评判（{part}/{whole}）"),
    }
}

#[allow(clippy::too_many_arguments)]
async fn alert(
    tx: &mut Tx,
    cipher: &crate::security::Cipher,
    rules: &CredibilityRules,
    now_ms: i64,
    org_id: &str,
    tz: chrono_tz::Tz,
    week: &Week,
    r: &RepWeek,
) -> Result<()> {
    let due = now_ms + REVIEW_DUE_MS;
    let due_local = crate::text::time(due, tz);
    let name = r.name.clone().unwrap_or_else(|| r.user.clone());
    let calls = show_ratio(r.call_ratio, r.calls_verified, r.calls_recorded);
    let opens = show_ratio(r.open_ratio, r.proposals_opened, r.proposals_sent);
    let threshold = format!("{:.2}", rules.threshold);
    let object = format!("credibility:{}:{}", r.user, week.monday);
    let task_id = new_id();
    let created = sqlx::query(
        "INSERT INTO tasks (id, org_id, assignee_user_id, kind, title, detail, object_ref, status, due_at, \
         created_at, dedupe_key) VALUES ($1, $2, $3, $4, $5, $6, $7, 'open', $8, $9, $10) \
         ON CONFLICT (org_id, dedupe_key) DO NOTHING",
    )
    .bind(&task_id)
    .bind(org_id)
    .bind(&r.user)
    .bind(TASK_KIND)
    .bind(TASK_TITLE)
    .bind(
        json!({
            "week_start": r.week_start, "week_end": r.week_end,
            "calls_recorded": r.calls_recorded, "calls_verified": r.calls_verified, "call_ratio": r.call_ratio,
            "proposals_sent": r.proposals_sent, "proposals_opened": r.proposals_opened, "open_ratio": r.open_ratio,
            "threshold": rules.threshold,
        })
        .to_string(),
    )
    .bind(&object)
    .bind(due)
    .bind(now_ms)
    .bind(format!("{TASK_KIND}:{}:{}", r.user, week.monday))
    .execute(&mut **tx)
    .await?
    .rows_affected()
        == 1;
    if !created {
        // The week's task exists already (an alert before this row was marked).
        return Ok(());
    }
    let vars = [
        ("name", name.clone()),
        ("week", crate::text::week(week.monday)),
        ("calls", calls),
        ("opens", opens),
        ("threshold", threshold.clone()),
        ("due", due_local.clone()),
        ("task", TASK_TITLE.to_string()),
    ];
    let superior_card = cards::templates::compose("credibility.alert", &vars);
    for superior in crate::antifraud::direct_superiors(tx, &r.user).await? {
        cards::send(
            tx,
            cipher,
            now_ms,
            org_id,
            &superior,
            ALERT,
            Some(&object),
            &superior_card,
        )
        .await?;
    }
    let notice = cards::templates::compose("credibility.review", &vars);
    cards::send(
        tx,
        cipher,
        now_ms,
        org_id,
        &r.user,
        NOTICE,
        Some(&task_id),
        &notice,
    )
    .await?;
    Ok(())
}

/// Computes `week` on demand in a transaction of its own (alerting as the job would).
pub async fn run_week(
    db: &Db,
    cipher: &crate::security::Cipher,
    rules: &CredibilityRules,
    now_ms: i64,
    org_id: &str,
    tz: chrono_tz::Tz,
    week: &Week,
) -> Result<Vec<RepWeek>> {
    let mut tx = db.begin().await?;
    let reps = apply_week(&mut tx, cipher, rules, now_ms, org_id, tz, week).await?;
    tx.commit().await?;
    Ok(reps)
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct WeekQuery {
    /// Any date (YYYY-MM-DD) in the Monday–Sunday week; default: last week.
    #[param(format = Date)]
    pub week: Option<String>,
}

/// One page of a week's figures, by user id; computed from the records, writing nothing.
pub async fn report(
    db: &Db,
    rules: &CredibilityRules,
    now_ms: i64,
    org_id: &str,
    tz: chrono_tz::Tz,
    q: &WeekQuery,
    page: &PageRequest,
) -> Result<Page<RepWeek>> {
    let week = match q.week.as_deref() {
        None => Week::before(now_ms, tz)?,
        Some(d) => Week::containing(crate::validate::date("week", d)?, tz)?,
    };
    let mut conn = db.pool.acquire().await?;
    let rows: Vec<RepWeek> = figures(&mut conn, rules, org_id, &week)
        .await?
        .into_iter()
        .filter(|r| page.after.as_deref().is_none_or(|a| r.user.as_str() > a))
        .take(page.limit as usize + 1)
        .collect();
    Ok(Page::from_rows(rows, page, |r| &r.user))
}

/// The `credibility.weekly` job: the week before its scheduled tick.
pub struct Weekly {
    pub rules: Rules,
    pub clock: SharedClock,
    pub cipher: crate::security::Cipher,
}

impl TxJob for Weekly {
    fn run<'a>(
        &'a self,
        tx: &'a mut Tx,
        job: &'a ClaimedJob,
    ) -> BoxFuture<'a, Result<(), JobError>> {
        Box::pin(async move {
            let org = job.org_id.as_deref().ok_or_else(|| {
                JobError::GiveUp("credibility job without an organisation".into())
            })?;
            let now = self.clock.now_ms();
            let tick = job.payload["scheduled_for"]
                .as_str()
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                .map_or(now, |t| t.timestamp_millis());
            let zone: String = sqlx::query("SELECT timezone FROM organisations WHERE id = $1")
                .bind(org)
                .fetch_one(&mut **tx)
                .await?
                .get("timezone");
            let tz: chrono_tz::Tz = zone
                .parse()
                .map_err(|_| JobError::GiveUp(format!("unknown time zone {zone}")))?;
            let rules = self.rules.current(org).await?;
            let week = Week::before(tick, tz)?;
            let reps =
                apply_week(tx, &self.cipher, &rules.credibility, now, org, tz, &week).await?;
            tracing::info!(
                org,
                week = %week.monday,
                reps = reps.len(),
                below = reps.iter().filter(|r| r.below_threshold).count(),
                "credibility computed"
            );
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weeks_run_monday_to_sunday_in_the_org_zone() {
        let tz = chrono_tz::Asia::Shanghai;
        let w = Week::containing(NaiveDate::from_ymd_opt(2026, 11, 19).unwrap(), tz).unwrap();
        assert_eq!(w.monday.to_string(), "2026-11-16");
        assert_eq!(
            crate::clock::rfc3339(w.start_ms),
            "2026-11-15T16:00:00.000Z"
        );
        assert_eq!(w.end_ms - w.start_ms, 7 * 24 * 3600 * 1000);
        // The Monday 08:00 tick computes the week that ended the night before.
        let tick = chrono::DateTime::parse_from_rfc3339("2026-11-23T08:00:00+08:00")
            .unwrap()
            .timestamp_millis();
        assert_eq!(Week::before(tick, tz).unwrap(), w);
    }

    #[test]
    fn a_ratio_is_judged_only_on_enough_samples() {
        let rules = CredibilityRules {
            threshold: 0.7,
            min_samples: 3,
        };
        assert_eq!(ratio(1, 2, &rules), None);
        assert_eq!(ratio(1, 4, &rules), Some(0.25));
        let zero = CredibilityRules {
            min_samples: 0,
            ..rules
        };
        assert_eq!(ratio(0, 0, &zero), None);
    }
}
