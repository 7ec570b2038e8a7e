//! DingTalk video conferences (视频会议) as meeting records (verification evidence).
//!
//! DingTalk offers no list of *ended* conferences, so the record is built in two steps:
//!
//! 1. `dingtalk.conference_poll` (every [`EVERY`]) reads the organisation's conferences in
//!    progress and queues one `dingtalk.conference_fetch` per conference (deduplicated).
//! 2. `dingtalk.conference_fetch` reads the conference; while it is still running it checks
//!    again later (at most [`MAX_CHECKS`] times), and once it has ended it reads the members
//!    with their own time in the meeting and stores one record per member. A conference
//!    still running at the last check is given up on and nothing is stored (see
//!    [`MAX_CHECKS`]).
//!
//! A conference that starts and ends between two polls is never seen: the poll interval
//! bounds the shortest meeting that can count as evidence.
//!
//! Sources (doc mirror apolloyyu/kb-dingtalk-open-platform, snapshot 2026-08):
//! - `GET /v1.0/conference/orgConferences` is "查询企业进行中会议列表" — conferences *in
//!   progress* only; query `nextToken`, `maxResults`; answer `nextToken`, `totalCount`,
//!   `hasMore`, `onGoingConfList[]` {`conferenceId`, `title`, `roomCode`, `status` (2 =
//!   进行中), `startTime`, `endTime`, `creatorId` (unionId), `creatorNick`, `bizType`}
//!   (docs/01-应用开发/02-4a8AMF6u2A-服务端-API/0405-api-queryorgconferencelist.md).
//! - `GET /v1.0/conference/videoConferences/{conferenceId}` → `confInfo` {`status` (0 初始化,
//!   1 会议结束, 2 会议开始), `title`, `startTime`/`endTime` (ms; `endTime` and
//!   `confDuration` only once ended), `creatorId`, `bizType`} (…/0401-querying-video-conference-information.md).
//! - `GET /v1.0/conference/videoConferences/{conferenceId}/members?nextToken=&maxResults=`
//!   → `memberModels[]` {`unionId`, `userNick`, `joinTime`/`leaveTime` (ms), `duration`
//!   (ms in the meeting), `attendStatus`, `outerOrgMember` (true: not of the organisation;
//!   absent for members), `pstnJoin`}, `nextToken`, `totalCount`; `maxResults` defaults to
//!   128 (…/0402-querying-video-conference-members.md). Errors: 404 `roomNotFound`, 403
//!   `noPermission`. Permission `VideoConference.Conference.Read`.
//! - Members are named by unionId; `POST oapi /topapi/user/getbyunionid {unionid}` →
//!   `result.userid`, `result.contact_type` (0 employee, 1 external contact); errcode 60121
//!   未找到对应员工 (…/0064-query-a-user-by-the-union-id.md).
//!
//! Unconfirmed: whether a multi-join member appears once or once per join (durations are
//! summed either way); whether `duration` is filled for every member of an ended
//! conference; whether `nextToken` is absent or repeated on the last members page (paging
//! stops on either). When the app is subscribed to "视频会议状态变更" (`meeting_status_change`,
//! 事件订阅 0050), the event queues `dingtalk.conference_fetch` directly (see `events.rs`);
//! the poll (`poll_meetings`) is for conferences no event reported.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{json, Value};

use super::api::{refusal_errcode, DingtalkApi};
use crate::chat::event::Platform;
use crate::clock::SharedClock;
use crate::db::{Db, Tx};
use crate::jobs::{self, BoxFuture, ClaimedJob, Handler, JobError, NewJob};
use crate::verification::meetings::{self, MeetingRecord};

pub const POLL_KIND: &str = "dingtalk.conference_poll";
pub const FETCH_KIND: &str = "dingtalk.conference_fetch";
pub const ONGOING: &str = "/v1.0/conference/orgConferences";
pub const CONFERENCE: &str = "/v1.0/conference/videoConferences";
pub const BY_UNIONID: &str = "/topapi/user/getbyunionid";
/// `getbyunionid`'s 未找到对应员工: the unionId is nobody of the organisation.
const NO_SUCH_EMPLOYEE: i64 = 60121;
/// How often conferences in progress are listed.
pub const EVERY: Duration = Duration::from_secs(5 * 60);
/// How long after it was seen (and between checks) a conference is looked at again.
pub const CHECK_AFTER: Duration = Duration::from_secs(15 * 60);
/// A conference still running at this check (about 12 hours after it was seen) is given
/// up on: no further check is queued and nothing is stored. Its members' durations would
/// be partial, and `meetings::store` never overwrites a record, so storing them now would
/// keep the wrong durations for good; evidence must be what happened.
pub const MAX_CHECKS: i64 = 48;
const PAGE: i64 = 50;
/// A safety stop for one listing (2,500 conferences or members).
const MAX_PAGES: usize = 50;

fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The conference ids of one `orgConferences` page.
pub fn ongoing_ids(page: &Value) -> Vec<String> {
    page["onGoingConfList"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .filter_map(|c| text(&c["conferenceId"]))
        .collect()
}

/// The cursor for the next page, when the answer says there is one.
fn next_token(page: &Value, items: usize, previous: &str) -> Option<String> {
    let token = text(&page["nextToken"])?;
    let more = page["hasMore"].as_bool().unwrap_or(items > 0);
    (more && items > 0 && token != previous).then_some(token)
}

/// One person's part in a conference, all their joins together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attendance {
    pub union_id: String,
    /// Not of the organisation (`outerOrgMember`).
    pub outsider: bool,
    pub first_join_ms: Option<i64>,
    pub duration_ms: i64,
}

/// The people of `memberModels` entries, in first-seen order. Dial-in phones and
/// entries without a unionId name nobody closeloop can link and are left out, as are
/// people who never got in.
pub fn attendance(members: &[Value]) -> Vec<Attendance> {
    let mut out: Vec<Attendance> = Vec::new();
    for m in members {
        let Some(union_id) = text(&m["unionId"]) else {
            continue;
        };
        if m["pstnJoin"].as_bool() == Some(true) {
            continue;
        }
        let joined = m["joinTime"].as_i64().filter(|t| *t > 0);
        let duration = m["duration"].as_i64().unwrap_or(0).max(0);
        if joined.is_none() && duration == 0 {
            continue;
        }
        let outsider = m["outerOrgMember"].as_bool() == Some(true);
        match out.iter_mut().find(|a| a.union_id == union_id) {
            Some(a) => {
                a.duration_ms += duration;
                a.first_join_ms = match (a.first_join_ms, joined) {
                    (Some(x), Some(y)) => Some(x.min(y)),
                    (x, y) => x.or(y),
                };
            }
            None => out.push(Attendance {
                union_id,
                outsider,
                first_join_ms: joined,
                duration_ms: duration,
            }),
        }
    }
    out
}

/// One record per member whose userid is known (`userids`: unionId → userid), each
/// naming every outsider of the conference.
pub fn records(
    info: &Value,
    people: &[Attendance],
    userids: &HashMap<String, String>,
) -> Vec<MeetingRecord> {
    let Some(conference_id) = text(&info["conferenceId"]) else {
        return Vec::new();
    };
    let outsiders: Vec<String> = people
        .iter()
        .filter(|a| a.outsider)
        .map(|a| a.union_id.clone())
        .collect();
    let started = info["startTime"].as_i64().unwrap_or(0);
    people
        .iter()
        .filter(|a| !a.outsider)
        .filter_map(|a| {
            let member = userids.get(&a.union_id)?;
            Some(MeetingRecord {
                platform: Platform::Dingtalk,
                meeting_id: conference_id.clone(),
                member: member.clone(),
                external_participants: outsiders.clone(),
                kind: "meeting".into(),
                topic: text(&info["title"]),
                started_at_ms: a.first_join_ms.unwrap_or(started),
                duration_s: a.duration_ms / 1000,
            })
        })
        .collect()
}

/// Lists conferences in progress and queues a fetch for each one not queued before.
pub struct ConferencePoll {
    pub api: DingtalkApi,
    pub clock: SharedClock,
    pub org_id: String,
}

impl ConferencePoll {
    async fn list(&self) -> Result<Value, JobError> {
        let mut ids = Vec::new();
        let mut token = "0".to_string();
        let mut pages = 0;
        while pages < MAX_PAGES {
            let page = self
                .api
                .call(
                    reqwest::Method::GET,
                    &format!(
                        "{ONGOING}?maxResults={PAGE}&nextToken={}",
                        urlencoding(&token)
                    ),
                    &Value::Null,
                )
                .await?;
            pages += 1;
            let found = ongoing_ids(&page);
            let count = found.len();
            ids.extend(found);
            match next_token(&page, count, &token) {
                Some(next) => token = next,
                None => break,
            }
        }
        Ok(json!({ "pages": pages, "conferences": ids }))
    }
}

impl Handler for ConferencePoll {
    fn perform<'a>(&'a self, _job: &'a ClaimedJob) -> BoxFuture<'a, Result<Value, JobError>> {
        Box::pin(self.list())
    }

    fn apply<'a>(
        &'a self,
        tx: &'a mut Tx,
        _job: &'a ClaimedJob,
        output: &'a Value,
    ) -> BoxFuture<'a, Result<(), JobError>> {
        Box::pin(async move {
            let now = self.clock.now_ms();
            for id in output["conferences"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
                .iter()
                .filter_map(Value::as_str)
            {
                jobs::enqueue(tx, now, fetch_job(&self.org_id, id, 1, now, false)).await?;
            }
            Ok(())
        })
    }
}

/// The `check`th look at conference `id`, `CHECK_AFTER` from now or, when the conference
/// is known to have ended, at once. The first one is keyed by the conference alone, so
/// polls and events that see it again queue nothing.
pub fn fetch_job(org_id: &str, id: &str, check: i64, now_ms: i64, ended: bool) -> NewJob {
    // DingTalk's word that the conference closed gets a look of its own, even when a
    // poll's chain of checks gave up on it earlier (records are stored once either way).
    let key = if ended {
        format!("{FETCH_KIND}:{org_id}:{id}:closed")
    } else if check == 1 {
        format!("{FETCH_KIND}:{org_id}:{id}")
    } else {
        format!("{FETCH_KIND}:{org_id}:{id}:{check}")
    };
    NewJob::new(FETCH_KIND, json!({ "conference_id": id, "check": check }))
        .org(org_id)
        .at(if ended {
            now_ms
        } else {
            now_ms + CHECK_AFTER.as_millis() as i64
        })
        .dedupe(key)
}

/// Reads one conference; once it has ended, stores its members' records.
pub struct ConferenceFetch {
    pub api: DingtalkApi,
    pub db: Db,
    pub clock: SharedClock,
    pub org_id: String,
    pub rules: crate::rules::Rules,
}

impl ConferenceFetch {
    async fn fetch(&self, job: &ClaimedJob) -> Result<Value, JobError> {
        let id = job.payload["conference_id"]
            .as_str()
            .filter(|s| !s.is_empty() && !s.contains(['/', '?', '#']))
            .ok_or_else(|| JobError::GiveUp("conference fetch without a conference id".into()))?;
        let check = job.payload["check"].as_i64().unwrap_or(1);
        let answer = self
            .api
            .call(
                reqwest::Method::GET,
                &format!("{CONFERENCE}/{id}"),
                &Value::Null,
            )
            .await?;
        let info = &answer["confInfo"];
        let ended = info["status"].as_i64() == Some(1);
        if !ended && check < MAX_CHECKS {
            return Ok(
                json!({ "conference_id": id, "ended": false, "check": check, "recheck": true }),
            );
        }
        if !ended {
            tracing::warn!(
                platform = "dingtalk",
                org = %self.org_id,
                conference_id = id,
                check,
                "conference still running at its last check: given up, nothing stored"
            );
            return Ok(json!({
                "conference_id": id, "ended": false, "check": check, "recheck": false,
                "stored": false, "reason": "still running at the last check",
            }));
        }
        let members = self.members(id).await?;
        let people = attendance(&members);
        let mut userids = HashMap::new();
        for a in people.iter().filter(|a| !a.outsider) {
            if let Some(userid) = self.userid(&a.union_id).await? {
                userids.insert(a.union_id.clone(), userid);
            }
        }
        let mut info = info.clone();
        if text(&info["conferenceId"]).is_none() {
            info["conferenceId"] = Value::String(id.to_string());
        }
        let recs = records(&info, &people, &userids);
        let rules = self
            .rules
            .current(&self.org_id)
            .await
            .map_err(|e| JobError::Retry(e.to_string()))?;
        let stored =
            meetings::store(&self.db, &rules, self.clock.now_ms(), &self.org_id, &recs).await?;
        Ok(json!({
            "conference_id": id, "ended": true, "check": check, "members": people.len(),
            "inserted": stored.inserted, "duplicates": stored.duplicates, "unmatched": stored.unmatched,
        }))
    }

    async fn members(&self, id: &str) -> Result<Vec<Value>, JobError> {
        let mut all = Vec::new();
        let mut token = "0".to_string();
        for _ in 0..MAX_PAGES {
            let page = self
                .api
                .call(
                    reqwest::Method::GET,
                    &format!(
                        "{CONFERENCE}/{id}/members?maxResults={PAGE}&nextToken={}",
                        urlencoding(&token)
                    ),
                    &Value::Null,
                )
                .await?;
            let items = page["memberModels"].as_array().cloned().unwrap_or_default();
            let count = items.len();
            all.extend(items);
            let total = page["totalCount"].as_i64().map(|t| t as usize);
            match next_token(&page, count, &token) {
                Some(next) if total.is_none_or(|t| all.len() < t) => token = next,
                _ => break,
            }
        }
        Ok(all)
    }

    /// The userid of an employee's unionId; `None` for anyone DingTalk does not know as
    /// an employee of the organisation. Any other refusal (a missing permission, say) fails
    /// the fetch rather than silently dropping a member's evidence.
    async fn userid(&self, union_id: &str) -> Result<Option<String>, JobError> {
        match self
            .api
            .call_oapi(BY_UNIONID, &json!({ "unionid": union_id }))
            .await
        {
            Ok(answer) => Ok(text(&answer["result"]["userid"])
                .filter(|_| answer["result"]["contact_type"].as_i64().unwrap_or(0) == 0)),
            Err(e) if refusal_errcode(&e) == Some(NO_SUCH_EMPLOYEE) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

impl Handler for ConferenceFetch {
    fn perform<'a>(&'a self, job: &'a ClaimedJob) -> BoxFuture<'a, Result<Value, JobError>> {
        Box::pin(self.fetch(job))
    }

    fn apply<'a>(
        &'a self,
        tx: &'a mut Tx,
        _job: &'a ClaimedJob,
        output: &'a Value,
    ) -> BoxFuture<'a, Result<(), JobError>> {
        Box::pin(async move {
            if output["recheck"].as_bool() == Some(true) {
                if let (Some(id), Some(check)) =
                    (output["conference_id"].as_str(), output["check"].as_i64())
                {
                    let now = self.clock.now_ms();
                    jobs::enqueue(tx, now, fetch_job(&self.org_id, id, check + 1, now, false))
                        .await?;
                }
            }
            Ok(())
        })
    }
}

/// Percent-encodes a cursor for a query string.
fn urlencoding(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ongoing_page_and_cursor() {
        let page = json!({
            "nextToken": "50742351870", "totalCount": 2, "hasMore": true,
            "onGoingConfList": [
                {"conferenceId": "67595244412cc3026ec4a260", "title": "华南智造需求沟通",
                 "roomCode": "841000003", "status": 2, "startTime": 1733879547000u64,
                 "endTime": 1733889547000u64, "creatorId": "urC45UUEAA1iiYsRkksAiEiE",
                 "creatorNick": "李明", "bizType": "0"},
                {"title": "no id"}
            ]
        });
        assert_eq!(ongoing_ids(&page), ["67595244412cc3026ec4a260"]);
        assert_eq!(next_token(&page, 1, "0").as_deref(), Some("50742351870"));
        let last = json!({"nextToken": "50742351870", "hasMore": false, "onGoingConfList": []});
        assert_eq!(next_token(&last, 0, "0"), None);
        assert_eq!(
            next_token(&page, 1, "50742351870"),
            None,
            "a repeated cursor ends the paging"
        );
    }

    #[test]
    fn members_become_one_record_each_with_their_own_time() {
        let info = json!({"conferenceId": "6323d7aa", "title": "方案评审", "status": 1,
                          "startTime": 1_764_206_400_000i64, "endTime": 1_764_210_000_000i64});
        let members = vec![
            json!({"unionId": "u-liming", "conferenceId": "6323d7aa", "userNick": "李明",
                   "joinTime": 1_764_206_460_000i64, "leaveTime": 1_764_207_000_000i64,
                   "duration": 540_000, "host": true, "attendStatus": 6, "pstnJoin": false}),
            json!({"unionId": "u-liming", "joinTime": 1_764_207_600_000i64,
                   "leaveTime": 1_764_208_200_000i64, "duration": 600_000, "attendStatus": 6}),
            json!({"unionId": "u-zhang", "userNick": "张总", "joinTime": 1_764_206_500_000i64,
                   "duration": 1_200_000, "attendStatus": 6, "outerOrgMember": true}),
            json!({"unionId": "u-wang", "userNick": "王工", "attendStatus": 4, "duration": 0}),
            json!({"unionId": "u-phone", "joinTime": 1_764_206_500_000i64, "duration": 60_000,
                   "pstnJoin": true}),
            json!({"unionId": "u-unknown", "joinTime": 1_764_206_500_000i64, "duration": 30_000}),
        ];
        let people = attendance(&members);
        assert_eq!(people.len(), 3, "{people:?}");
        assert_eq!(people[0].duration_ms, 1_140_000, "two joins are summed");
        assert_eq!(people[0].first_join_ms, Some(1_764_206_460_000));
        let userids = HashMap::from([("u-liming".to_string(), "liming".to_string())]);
        let recs = records(&info, &people, &userids);
        assert_eq!(recs.len(), 1, "only members with a known userid");
        let r = &recs[0];
        assert_eq!(r.member, "liming");
        assert_eq!(r.meeting_id, "6323d7aa");
        assert_eq!(r.external_participants, ["u-zhang"]);
        assert_eq!(r.duration_s, 1140);
        assert_eq!(r.kind, "meeting");
        assert_eq!(r.topic.as_deref(), Some("方案评审"));
        assert_eq!(r.started_at_ms, 1_764_206_460_000);
    }
}
