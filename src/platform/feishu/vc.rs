//! Feishu video meetings (飞书视频会议) as meeting records (verification evidence):
//! `feishu.vc_poll` lists the meetings that ended in a window overlapping earlier polls,
//! reads each new meeting's participants and stores one record per member.
//!
//! Sources (mirror of open.feishu.cn in wxkingstar/doc-hub-mcp,
//! `feishu/003-服务端API/vc-v1/meeting-room-data/`):
//! - `GET /open-apis/vc/v1/meeting_list` "查询会议明细", for meetings in progress or ended
//!   (`get.md`, source https://open.feishu.cn/document/server-docs/vc-v1/meeting-room-data/get):
//!   query `start_time`, `end_time` (unix seconds, as strings; end ≤ start + 1 year),
//!   `meeting_status` (1 进行中, 2 已结束 = the default), `meeting_no`, `user_id`, `room_id`,
//!   `meeting_type` (1 all, 2 video, 3 local screen sharing), `page_size` (20–100),
//!   `page_token`, `include_external_meetings`, `include_webinar`, `user_id_type`
//!   (`open_id` default | `union_id` | `user_id`). Answer `data.meeting_list[]`
//!   {`meeting_id` (the 9-digit meeting number), `meeting_topic`, `meeting_type`,
//!   `organizer`, `user_id`, `meeting_start_time` / `meeting_end_time` (strings such as
//!   `"2022.12.23 11:16:59 (GMT+08:00)"`), `meeting_duration` (`"00:01:52"`),
//!   `number_of_participants`, `is_external`, `meeting_subtype` (… 6 企业电话, 7 ip电话 …),
//!   `meeting_instance_id` (唯一会议ID)}, `data.page_token`, `data.has_more`. 100 calls per
//!   minute. Permissions `vc:room:readonly` or `vc:rooms.room.detailinfo:read` — the page
//!   notes these are historical and that the new permission works with a
//!   *user_access_token* only.
//! - `GET /open-apis/vc/v1/participant_list` "查询参会人明细" (`get-1.md`): query
//!   `meeting_start_time`, `meeting_end_time` (unix seconds; the meeting's own times; at
//!   most one day apart), `meeting_status`, `meeting_no` (required), `page_size`,
//!   `page_token`, `user_id_type`. Answer `data.participants[]` {`participant_name`,
//!   `user_id`, `meeting_room_id`, `join_time`, `leave_time`, `time_in_meeting`
//!   (`"00:01:52"`), `is_external`, `accept_status`, …}, `page_token`, `has_more`.
//!   Error 126009: no meeting matches the parameters.
//!
//! Unconfirmed: whether the window filters on a meeting's start or its end (the window is
//! generous either way); whether one-to-one calls (飞书通话) appear in `meeting_list` at
//! all — only `meeting_subtype` 6 (企业电话) and 7 (IP 电话) are recorded as kind `call`;
//! what `user_id` an external participant carries (it is used as the customer's external
//! id as given); whether the tenant access token is still accepted (see permissions);
//! whether `meeting_instance_id` is the meeting `id` that meeting events and "获取会议详情"
//! carry — records are keyed by it on that assumption, so the poll and
//! `feishu.meeting_fetch` store one meeting once.

use std::time::Duration;

use chrono::{FixedOffset, NaiveDateTime, TimeZone};
use serde_json::{json, Value};

use super::token::{FeishuApi, FeishuError};
use crate::chat::event::Platform;
use crate::clock::SharedClock;
use crate::db::Db;
use crate::jobs::{BoxFuture, ClaimedJob, Handler, JobError};
use crate::verification::meetings::{self, MeetingRecord, StoreOutcome};

pub const KIND: &str = "feishu.vc_poll";
pub const MEETING_LIST: &str = "/open-apis/vc/v1/meeting_list";
pub const PARTICIPANT_LIST: &str = "/open-apis/vc/v1/participant_list";
/// How often the poll runs.
pub const EVERY: Duration = Duration::from_secs(10 * 60);
/// Each poll re-reads this much history; meetings already stored are skipped.
pub const WINDOW: Duration = Duration::from_secs(24 * 3600);
const PAGE_SIZE: &str = "100";
/// A safety stop for one listing (5,000 meetings or participants).
const MAX_PAGES: usize = 50;

fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A time as the VC reports answer it: `"2022.12.23 11:16:59 (GMT+08:00)"`, or plain
/// unix seconds (or milliseconds). Epoch milliseconds.
pub fn parse_time(v: &Value) -> Option<i64> {
    let s = text(v)?;
    if let Ok(n) = s.parse::<i64>() {
        return Some(if n > 100_000_000_000 { n } else { n * 1000 });
    }
    let (local, zone) = match s.split_once('(') {
        Some((local, zone)) => (local.trim(), zone.trim_end_matches(')').trim()),
        // No zone given: China time, the zone Feishu's examples carry.
        None => (s.as_str(), "GMT+08:00"),
    };
    let naive = NaiveDateTime::parse_from_str(local, "%Y.%m.%d %H:%M:%S").ok()?;
    let offset = zone
        .strip_prefix("GMT")
        .or_else(|| zone.strip_prefix("UTC"))
        .unwrap_or(zone);
    let offset = if offset.is_empty() {
        FixedOffset::east_opt(0)?
    } else {
        let (sign, rest) = match offset.split_at(1) {
            ("+", rest) => (1, rest),
            ("-", rest) => (-1, rest),
            _ => return None,
        };
        let (h, m) = rest.split_once(':').unwrap_or((rest, "0"));
        let secs = h.parse::<i32>().ok()? * 3600 + m.parse::<i32>().ok()? * 60;
        FixedOffset::east_opt(sign * secs)?
    };
    offset
        .from_local_datetime(&naive)
        .single()
        .map(|t| t.timestamp_millis())
}

/// A duration as `"01:02:03"`, `"02:03"` or plain seconds; in seconds.
pub fn parse_duration(v: &Value) -> Option<i64> {
    let s = text(v)?;
    if let Ok(n) = s.parse::<i64>() {
        return Some(n.max(0));
    }
    let mut total = 0i64;
    for part in s.split(':') {
        total = total * 60 + part.trim().parse::<i64>().ok()?;
    }
    Some(total)
}

/// One ended meeting from a `meeting_list` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meeting {
    /// The unique instance id (the 9-digit number is reused), taken to be the meeting
    /// `id` of meeting events (unconfirmed, see the module notes).
    pub id: String,
    pub number: String,
    pub topic: Option<String>,
    pub start_ms: i64,
    pub end_ms: i64,
    pub kind: &'static str,
}

/// The meetings of one `meeting_list` page that carry what `participant_list` needs and
/// a `meeting_instance_id`. One without it is left out with a warning rather than keyed
/// some other way: the event path keys the same meeting by its `id`, so an invented key
/// could store it twice.
pub fn parse_meetings(page: &Value) -> Vec<Meeting> {
    page["data"]["meeting_list"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .filter_map(|m| {
            let number = text(&m["meeting_id"])?;
            let start_ms = parse_time(&m["meeting_start_time"])?;
            let end_ms = parse_time(&m["meeting_end_time"])
                .or_else(|| Some(start_ms + parse_duration(&m["meeting_duration"])? * 1000))?;
            let Some(id) = text(&m["meeting_instance_id"]) else {
                tracing::warn!(
                    platform = "feishu",
                    meeting_no = %number,
                    "meeting_list entry without meeting_instance_id: skipped"
                );
                return None;
            };
            Some(Meeting {
                id,
                number,
                topic: text(&m["meeting_topic"]),
                start_ms,
                end_ms,
                kind: match m["meeting_subtype"].as_i64() {
                    Some(6 | 7) => "call",
                    _ => "meeting",
                },
            })
        })
        .collect()
}

/// One record per member among `participants` (`participant_list` entries), with the
/// member's own time summed over their joins (at most the meeting's length) and every
/// external participant named.
pub fn records(meeting: &Meeting, participants: &[Value]) -> Vec<MeetingRecord> {
    let mut external = Vec::new();
    let mut members: Vec<(String, i64, Option<i64>)> = Vec::new();
    for p in participants {
        let Some(user) = text(&p["user_id"]) else {
            continue;
        };
        if p["is_external"].as_bool() == Some(true) {
            if !external.contains(&user) {
                external.push(user);
            }
            continue;
        }
        let secs = parse_duration(&p["time_in_meeting"]).unwrap_or(0);
        let joined = parse_time(&p["join_time"]);
        match members.iter_mut().find(|(u, _, _)| *u == user) {
            Some((_, total, first)) => {
                *total += secs;
                *first = match (*first, joined) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
            }
            None => members.push((user, secs, joined)),
        }
    }
    let length = ((meeting.end_ms - meeting.start_ms) / 1000).max(0);
    members
        .into_iter()
        .map(|(member, secs, joined)| MeetingRecord {
            platform: Platform::Feishu,
            meeting_id: meeting.id.clone(),
            member,
            external_participants: external.clone(),
            kind: meeting.kind.into(),
            topic: meeting.topic.clone(),
            started_at_ms: joined.unwrap_or(meeting.start_ms),
            duration_s: if length > 0 { secs.min(length) } else { secs },
        })
        .collect()
}

fn next_page(page: &Value, previous: Option<&str>) -> Option<String> {
    let data = &page["data"];
    let token = text(&data["page_token"])?;
    (data["has_more"].as_bool() == Some(true) && previous != Some(token.as_str())).then_some(token)
}

/// The scheduled poll: lists ended meetings in the window and stores the new ones.
pub struct VcPoll {
    pub api: FeishuApi,
    pub db: Db,
    pub clock: SharedClock,
    pub org_id: String,
    pub rules: crate::rules::Rules,
}

impl VcPoll {
    async fn poll(&self) -> Result<Value, JobError> {
        let end = self.clock.now_ms() / 1000;
        let start = (end - WINDOW.as_secs() as i64).to_string();
        let end = end.to_string();
        let mut found = Vec::new();
        let mut token: Option<String> = None;
        let mut pages = 0;
        while pages < MAX_PAGES {
            let mut query = vec![
                ("start_time", start.as_str()),
                ("end_time", end.as_str()),
                ("meeting_status", "2"),
                ("page_size", PAGE_SIZE),
                ("user_id_type", "user_id"),
            ];
            if let Some(t) = &token {
                query.push(("page_token", t.as_str()));
            }
            let page = self
                .api
                .call_json(reqwest::Method::GET, MEETING_LIST, &query, None)
                .await?;
            pages += 1;
            found.extend(parse_meetings(&page));
            match next_page(&page, token.as_deref()) {
                Some(next) => token = Some(next),
                None => break,
            }
        }
        let mut total = StoreOutcome::default();
        let mut read = 0;
        let mut skipped = 0;
        for meeting in &found {
            if self.known(&meeting.id).await? {
                continue;
            }
            read += 1;
            // Feishu refusing one meeting (126009 no such meeting, say) must not hold up
            // the others until they leave the window: it is skipped, and being unstored it
            // is asked for again by the next polls while it is in the window. A passing
            // failure or rejected credentials fail the poll instead; its retry skips the
            // meetings stored already.
            let participants = match self.participants(meeting).await {
                Ok(participants) => participants,
                Err(FeishuError::Api { code, msg }) => {
                    tracing::warn!(
                        platform = "feishu",
                        org = %self.org_id,
                        meeting_id = %meeting.id,
                        code,
                        msg = %msg,
                        "participant_list refused a meeting: skipped"
                    );
                    skipped += 1;
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            let recs = records(meeting, &participants);
            let rules = self
                .rules
                .current(&self.org_id)
                .await
                .map_err(|e| JobError::Retry(e.to_string()))?;
            let stored =
                meetings::store(&self.db, &rules, self.clock.now_ms(), &self.org_id, &recs).await?;
            total.inserted += stored.inserted;
            total.duplicates += stored.duplicates;
            total.unmatched += stored.unmatched;
        }
        Ok(json!({
            "pages": pages, "meetings": found.len(), "read": read, "skipped": skipped,
            "inserted": total.inserted, "duplicates": total.duplicates, "unmatched": total.unmatched,
        }))
    }

    /// Whether a record of this meeting is stored already (its participants were read).
    async fn known(&self, meeting_id: &str) -> Result<bool, JobError> {
        Ok(sqlx::query(
            "SELECT 1 AS one FROM meeting_records WHERE org_id = $1 AND platform = $2 AND meeting_id = $3 LIMIT 1",
        )
        .bind(&self.org_id)
        .bind(Platform::Feishu.as_str())
        .bind(meeting_id)
        .fetch_optional(&self.db.pool)
        .await?
        .is_some())
    }

    async fn participants(&self, meeting: &Meeting) -> Result<Vec<Value>, FeishuError> {
        let start = (meeting.start_ms / 1000).to_string();
        // The end must not be before the start, nor more than a day after it.
        let end = (meeting.end_ms / 1000)
            .clamp(meeting.start_ms / 1000, meeting.start_ms / 1000 + 86_400)
            .to_string();
        let mut all = Vec::new();
        let mut token: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let mut query = vec![
                ("meeting_start_time", start.as_str()),
                ("meeting_end_time", end.as_str()),
                ("meeting_status", "2"),
                ("meeting_no", meeting.number.as_str()),
                ("page_size", PAGE_SIZE),
                ("user_id_type", "user_id"),
            ];
            if let Some(t) = &token {
                query.push(("page_token", t.as_str()));
            }
            let page = self
                .api
                .call_json(reqwest::Method::GET, PARTICIPANT_LIST, &query, None)
                .await?;
            all.extend(
                page["data"]["participants"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default(),
            );
            match next_page(&page, token.as_deref()) {
                Some(next) => token = Some(next),
                None => break,
            }
        }
        Ok(all)
    }
}

impl Handler for VcPoll {
    fn perform<'a>(&'a self, _job: &'a ClaimedJob) -> BoxFuture<'a, Result<Value, JobError>> {
        Box::pin(self.poll())
    }
}

/// The job that reads one ended meeting, queued by `vc.meeting.meeting_ended_v1`.
pub const FETCH_KIND: &str = "feishu.meeting_fetch";
/// `GET /open-apis/vc/v1/meetings/:meeting_id` "获取会议详情" (open.larksuite.com
/// server-docs/vc-v1/meeting/get): permission `vc:meeting:readonly`, tenant token accepted,
/// meetings of the last 90 days, 1,000 calls a minute; `with_participants=true` adds
/// `participants[]` {`id` (in `user_id_type`), `first_join_time`, `final_leave_time`
/// (unix seconds, strings), `in_meeting_duration` (seconds, string), `user_type`,
/// `is_host`, `is_external`, `status`} — field names as an independent client reads them;
/// the page's own response table was not retrieved. The meeting's `start_time` /
/// `end_time` are unix seconds (vector F5's event carries the same shape).
pub const MEETING: &str = "/open-apis/vc/v1/meetings";

/// The fetch of meeting `id`, keyed by it: a repeated event queues nothing.
pub fn fetch_job(org_id: &str, id: &str, now_ms: i64) -> crate::jobs::NewJob {
    crate::jobs::NewJob::new(FETCH_KIND, json!({ "meeting_id": id }))
        .org(org_id)
        .at(now_ms)
        .dedupe(format!("{FETCH_KIND}:{org_id}:{id}"))
}

/// The records in a `meetings/:id?with_participants=true` answer: one per member, with
/// external participants named. A meeting two people took part in is a one-to-one call.
pub fn meeting_records(answer: &Value) -> Vec<MeetingRecord> {
    let m = &answer["data"]["meeting"];
    let (Some(id), Some(start_ms)) = (text(&m["id"]), parse_time(&m["start_time"])) else {
        return Vec::new();
    };
    let end_ms = parse_time(&m["end_time"]).unwrap_or(start_ms);
    let people: Vec<Value> = m["participants"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|p| {
            json!({"user_id": p["id"], "is_external": p["is_external"],
                   "time_in_meeting": p["in_meeting_duration"], "join_time": p["first_join_time"]})
        })
        .collect();
    let mut distinct: Vec<&Value> = people.iter().map(|p| &p["user_id"]).collect();
    distinct.sort_by_key(|v| v.to_string());
    distinct.dedup();
    let meeting = Meeting {
        id,
        number: text(&m["meeting_no"]).unwrap_or_default(),
        topic: text(&m["topic"]),
        start_ms,
        end_ms,
        kind: if distinct.len() == 2 {
            "call"
        } else {
            "meeting"
        },
    };
    records(&meeting, &people)
}

/// Reads one ended meeting with its participants and stores its members' records.
pub struct MeetingFetch {
    pub api: FeishuApi,
    pub db: Db,
    pub clock: SharedClock,
    pub org_id: String,
    pub rules: crate::rules::Rules,
}

impl MeetingFetch {
    async fn fetch(&self, job: &ClaimedJob) -> Result<Value, JobError> {
        let id = job.payload["meeting_id"]
            .as_str()
            .filter(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric()))
            .ok_or_else(|| JobError::GiveUp("the job names no valid meeting id".into()))?;
        let answer = self
            .api
            .call_json(
                reqwest::Method::GET,
                &format!("{MEETING}/{id}"),
                &[("with_participants", "true"), ("user_id_type", "user_id")],
                None,
            )
            .await?;
        let recs = meeting_records(&answer);
        let rules = self
            .rules
            .current(&self.org_id)
            .await
            .map_err(|e| JobError::Retry(e.to_string()))?;
        let stored =
            meetings::store(&self.db, &rules, self.clock.now_ms(), &self.org_id, &recs).await?;
        Ok(json!({
            "records": recs.len(), "inserted": stored.inserted,
            "duplicates": stored.duplicates, "unmatched": stored.unmatched,
        }))
    }
}

impl Handler for MeetingFetch {
    fn perform<'a>(&'a self, job: &'a ClaimedJob) -> BoxFuture<'a, Result<Value, JobError>> {
        Box::pin(self.fetch(job))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_meeting_with_its_participants_becomes_member_records() {
        let answer = json!({"code": 0, "data": {"meeting": {
        "id": "7203737444910661636", "topic": "方案沟通", "meeting_no": "112714536",
        "start_time": "1677254820", "end_time": "1677256020",
        "participants": [
            {"id": "liming", "first_join_time": "1677254830", "final_leave_time": "1677256000",
             "in_meeting_duration": "1170", "user_type": 1, "is_external": false},
            {"id": "ou_ext_1", "first_join_time": "1677254900", "in_meeting_duration": "1000",
             "user_type": 1, "is_external": true},
            {"id": "zhanggong", "first_join_time": "1677255000", "in_meeting_duration": "5000",
             "user_type": 1, "is_external": false}
        ]}}});
        let recs = meeting_records(&answer);
        assert_eq!(recs.len(), 2, "members only: {recs:?}");
        assert_eq!(recs[0].member, "liming");
        assert_eq!(recs[0].meeting_id, "7203737444910661636");
        assert_eq!(recs[0].external_participants, ["ou_ext_1"]);
        assert_eq!(recs[0].duration_s, 1170);
        assert_eq!(recs[0].started_at_ms, 1_677_254_830_000);
        assert_eq!(recs[0].kind, "meeting");
        // Capped at the meeting's own length (20 minutes).
        assert_eq!(recs[1].duration_s, 1200);

        let call = json!({"data": {"meeting": {"id": "1", "start_time": "1677254820",
            "end_time": "1677255000", "participants": [
                {"id": "liming", "in_meeting_duration": "170", "is_external": false},
                {"id": "ou_ext_1", "in_meeting_duration": "170", "is_external": true}]}}});
        let recs = meeting_records(&call);
        assert_eq!(recs.len(), 1);
        assert_eq!(recs[0].kind, "call", "two people: a one-to-one call");
        assert!(meeting_records(&json!({"data": {}})).is_empty());
    }

    #[test]
    fn feishu_times_and_durations() {
        // 2022-12-23 03:16:59 UTC.
        assert_eq!(
            parse_time(&json!("2022.12.23 11:16:59 (GMT+08:00)")),
            Some(1_671_765_419_000)
        );
        assert_eq!(
            parse_time(&json!("2022.12.23 03:16:59 (GMT)")),
            Some(1_671_765_419_000)
        );
        assert_eq!(parse_time(&json!("1671765419")), Some(1_671_765_419_000));
        assert_eq!(parse_time(&json!("not a time")), None);
        assert_eq!(parse_duration(&json!("00:01:52")), Some(112));
        assert_eq!(parse_duration(&json!("01:00:05")), Some(3605));
        assert_eq!(parse_duration(&json!("112")), Some(112));
        assert_eq!(parse_duration(&json!("")), None);
    }

    #[test]
    fn meeting_list_and_participants_become_member_records() {
        let page = json!({"code": 0, "msg": "success", "data": {
            "meeting_list": [
                {"meeting_id": "705605196", "meeting_topic": "华南智造方案沟通", "meeting_type": 1,
                 "organizer": "李明", "user_id": "liming",
                 "meeting_start_time": "2022.12.23 11:16:59 (GMT+08:00)",
                 "meeting_end_time": "2022.12.23 11:46:59 (GMT+08:00)",
                 "meeting_duration": "00:30:00", "number_of_participants": "3",
                 "is_external": false, "meeting_subtype": 1,
                 "meeting_instance_id": "7529416531681214468"},
                {"meeting_id": "705605197", "meeting_topic": "回访电话",
                 "meeting_start_time": "2022.12.23 12:00:00 (GMT+08:00)",
                 "meeting_duration": "00:05:00", "meeting_subtype": 6,
                 "meeting_instance_id": "7529416531681214470"},
                {"meeting_id": "705605199", "meeting_topic": "no instance id",
                 "meeting_start_time": "2022.12.23 13:00:00 (GMT+08:00)",
                 "meeting_duration": "00:05:00"},
                {"meeting_topic": "no number"}
            ],
            "page_token": "20", "has_more": true}});
        let meetings = parse_meetings(&page);
        assert_eq!(meetings.len(), 2, "no number or no instance id: left out");
        assert_eq!(meetings[0].id, "7529416531681214468");
        assert_eq!(meetings[0].kind, "meeting");
        assert_eq!(meetings[1].kind, "call", "企业电话 is a call");
        assert_eq!(meetings[1].id, "7529416531681214470");
        assert_eq!(meetings[1].end_ms - meetings[1].start_ms, 300_000);
        assert_eq!(next_page(&page, None).as_deref(), Some("20"));
        assert_eq!(next_page(&page, Some("20")), None);

        let participants = vec![
            json!({"participant_name": "李明", "user_id": "liming", "meeting_room_id": "omm_1",
                   "join_time": "2022.12.23 11:17:30 (GMT+08:00)",
                   "leave_time": "2022.12.23 11:27:30 (GMT+08:00)",
                   "time_in_meeting": "00:10:00", "is_external": false}),
            json!({"participant_name": "李明", "user_id": "liming",
                   "join_time": "2022.12.23 11:30:00 (GMT+08:00)",
                   "time_in_meeting": "00:15:00", "is_external": false}),
            json!({"participant_name": "张总", "user_id": "ext-zhang",
                   "time_in_meeting": "00:29:00", "is_external": true}),
            json!({"participant_name": "会议室", "user_id": "", "time_in_meeting": "00:30:00"}),
            json!({"participant_name": "王工", "user_id": "wanggong", "time_in_meeting": "00:40:00"}),
        ];
        let recs = records(&meetings[0], &participants);
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[0].member, "liming");
        assert_eq!(recs[0].duration_s, 1500, "joins are summed");
        assert_eq!(recs[0].started_at_ms, 1_671_765_450_000);
        assert_eq!(recs[0].external_participants, ["ext-zhang"]);
        assert_eq!(recs[0].meeting_id, "7529416531681214468");
        assert_eq!(recs[1].duration_s, 1800, "capped at the meeting's length");
        assert_eq!(recs[1].topic.as_deref(), Some("华南智造方案沟通"));
    }
}
