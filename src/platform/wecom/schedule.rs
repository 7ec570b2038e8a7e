//! Dated calendar entries onto the member's WeCom calendar (日程): `POST
//! /cgi-bin/oa/schedule/add` with the app's token, a whole-day event with the member as
//! attendee (developer.work.weixin.qq.com/document/path/93703, updated 2023-06-20: body
//! `{"schedule": {start_time, end_time, is_whole_day, attendees: [{userid}], summary ≤128,
//! description ≤1000}, "agentid"}` → `schedule_id`; the app must be allowed under 日程 →
//! 可调用接口的应用, and one app may create 10,000 events a day). The ICS feed carries the
//! same entries for any other calendar.

use chrono::TimeZone;
use serde_json::{json, Value};
use sqlx::Row;

use super::api::WecomApi;
use super::token::SecretKind;
use crate::clock::SharedClock;
use crate::db::{Db, Tx};
use crate::jobs::{BoxFuture, ClaimedJob, Handler, JobError};

pub const PATH: &str = "/cgi-bin/oa/schedule/add";

/// Pushes one calendar entry (job `calendar.push`).
pub struct PushSchedule {
    pub api: WecomApi,
    pub db: Db,
    pub clock: SharedClock,
    pub agent_id: i64,
    pub tz: chrono_tz::Tz,
}

/// The body for a whole-day event on `day` (YYYY-MM-DD) in `tz`.
pub fn body(
    userid: &str,
    title: &str,
    day: &str,
    tz: chrono_tz::Tz,
    agent_id: i64,
) -> Option<Value> {
    let d = chrono::NaiveDate::parse_from_str(day, "%Y-%m-%d").ok()?;
    let start = tz
        .from_local_datetime(&d.and_hms_opt(0, 0, 0)?)
        .earliest()?
        .timestamp();
    let end = tz
        .from_local_datetime(&d.and_hms_opt(23, 59, 59)?)
        .earliest()?
        .timestamp();
    let summary: String = title.chars().take(128).collect();
    Some(json!({
        "schedule": {
            "start_time": start,
            "end_time": end,
            "is_whole_day": 1,
            "attendees": [{"userid": userid}],
            "summary": summary,
            "description": "closeloop 协作确认的日期",
        },
        "agentid": agent_id,
    }))
}

impl Handler for PushSchedule {
    fn perform<'a>(&'a self, job: &'a ClaimedJob) -> BoxFuture<'a, Result<Value, JobError>> {
        Box::pin(async move {
            let entry = job.payload["entry_id"].as_str().unwrap_or_default();
            let row = sqlx::query(
                "SELECT e.title, e.day, e.platform_ref, i.value AS userid FROM calendar_entries e \
                 LEFT JOIN user_identities i ON i.user_id = e.user_id AND i.platform = 'wecom' AND i.kind = 'userid' \
                 WHERE e.id = $1",
            )
            .bind(entry)
            .fetch_optional(&self.db.pool)
            .await?
            .ok_or_else(|| JobError::GiveUp(format!("calendar entry {entry} does not exist")))?;
            if row.get::<Option<String>, _>("platform_ref").is_some() {
                return Ok(json!({"skipped": "already on the WeCom calendar"}));
            }
            let Some(userid) = row.get::<Option<String>, _>("userid") else {
                return Ok(json!({"skipped": "the person has no WeCom userid"}));
            };
            let day: String = row.get("day");
            let body = body(
                &userid,
                &row.get::<String, _>("title"),
                &day,
                self.tz,
                self.agent_id,
            )
            .ok_or_else(|| JobError::GiveUp(format!("`{day}` is not a date")))?;
            let response = self.api.call_json(SecretKind::App, PATH, &body).await?;
            Ok(json!({"schedule_id": response["schedule_id"]}))
        })
    }

    fn apply<'a>(
        &'a self,
        tx: &'a mut Tx,
        job: &'a ClaimedJob,
        output: &'a Value,
    ) -> BoxFuture<'a, Result<(), JobError>> {
        Box::pin(async move {
            if let Some(id) = output["schedule_id"].as_str() {
                sqlx::query(
                    "UPDATE calendar_entries SET platform_ref = $1, updated_at = $2 WHERE id = $3",
                )
                .bind(id)
                .bind(self.clock.now_ms())
                .bind(job.payload["entry_id"].as_str().unwrap_or_default())
                .execute(&mut **tx)
                .await?;
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_whole_day_event_in_the_org_zone() {
        let b = body(
            "liming",
            "交付排期查询（交付王确认）",
            "2026-12-15",
            chrono_tz::Asia::Shanghai,
            1_000_002,
        )
        .unwrap();
        // 2026-12-15 00:00 +08:00 = 2026-12-14 16:00 UTC.
        assert_eq!(b["schedule"]["start_time"], 1_797_264_000i64);
        assert_eq!(b["schedule"]["end_time"], 1_797_264_000i64 + 24 * 3600 - 1);
        assert_eq!(b["schedule"]["is_whole_day"], 1);
        assert_eq!(b["schedule"]["attendees"][0]["userid"], "liming");
        assert_eq!(b["agentid"], 1_000_002);
        assert!(body("x", "t", "12/15", chrono_tz::Asia::Shanghai, 1).is_none());
    }
}
