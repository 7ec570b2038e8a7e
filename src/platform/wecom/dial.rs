//! 公费电话 dial records (`dial/get_dial_record`,
//! docs/protocols/wecom.md#call-records-and-external-contacts) as platform-neutral call records. A
//! record has no id of its own; call time, caller and callee identify it.

use std::time::Duration;

use serde_json::{json, Value};

use super::api::WecomApi;
use super::token::SecretKind;
use crate::chat::event::Platform;
use crate::clock::SharedClock;
use crate::db::Db;
use crate::jobs::{BoxFuture, ClaimedJob, Handler, JobError};
use crate::security::Cipher;
use crate::verification::calls::{self, CallRecord, StoreOutcome};

pub const KIND: &str = "wecom.dial_poll";
const PATH: &str = "/cgi-bin/dial/get_dial_record";
/// Each poll re-reads this much history: records can reach WeCom late, and the overlap
/// with earlier polls costs nothing (records are stored once).
pub const WINDOW: Duration = Duration::from_secs(24 * 3600);
/// How often the poll runs.
pub const EVERY: Duration = Duration::from_secs(600);
/// A safety stop for one poll (10,000 records).
const MAX_PAGES: i64 = 100;

/// Most records one request returns; WeCom treats more as 100.
pub const PAGE_LIMIT: i64 = 100;

fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        // Numbers sometimes arrive unquoted.
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The calls to external numbers in one response page. Calls to colleagues (`userid`
/// callees) are not customer follow-ups and are left out.
pub fn parse_page(response: &Value) -> Vec<CallRecord> {
    let mut out = Vec::new();
    for rec in response["record"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        let (Some(call_time), Some(caller)) =
            (rec["call_time"].as_i64(), text(&rec["caller"]["userid"]))
        else {
            continue;
        };
        let call_type = rec["call_type"].as_i64().map(|t| match t {
            1 => "single".to_string(),
            2 => "multi".to_string(),
            other => other.to_string(),
        });
        for callee in rec["callee"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
        {
            let Some(phone) = text(&callee["phone"]) else {
                continue;
            };
            out.push(CallRecord {
                platform: Platform::Wecom,
                record_key: format!("{call_time}:{caller}:{phone}"),
                caller: caller.clone(),
                callee_phone: Some(phone),
                started_at_ms: call_time * 1000,
                duration_s: callee["duration"].as_i64().unwrap_or(0),
                call_type: call_type.clone(),
            });
        }
    }
    out
}

/// Raw records in the page (for paging: a full page means there may be more).
pub fn page_len(response: &Value) -> usize {
    response["record"].as_array().map_or(0, Vec::len)
}

/// The scheduled poll: pages through the window and stores what is new.
pub struct DialPoll {
    pub api: WecomApi,
    pub db: Db,
    pub cipher: Cipher,
    pub clock: SharedClock,
    pub org_id: String,
    pub rules: crate::rules::Rules,
}

impl DialPoll {
    async fn poll(&self) -> Result<Value, JobError> {
        let end = self.clock.now_ms() / 1000;
        let start = end - WINDOW.as_secs() as i64;
        let mut total = StoreOutcome::default();
        let mut pages = 0;
        for page in 0..MAX_PAGES {
            let response = self
                .api
                .call_json(
                    SecretKind::Dial,
                    PATH,
                    &json!({"start_time": start, "end_time": end, "offset": page * PAGE_LIMIT, "limit": PAGE_LIMIT}),
                )
                .await?;
            pages += 1;
            let records = parse_page(&response);
            let rules = self
                .rules
                .current(&self.org_id)
                .await
                .map_err(|e| JobError::Retry(e.to_string()))?;
            let stored = calls::store(
                &self.db,
                &self.cipher,
                &rules,
                self.clock.now_ms(),
                &self.org_id,
                &records,
            )
            .await?;
            total.inserted += stored.inserted;
            total.duplicates += stored.duplicates;
            total.unmatched += stored.unmatched;
            if (page_len(&response) as i64) < PAGE_LIMIT {
                break;
            }
        }
        Ok(
            json!({"pages": pages, "inserted": total.inserted, "duplicates": total.duplicates, "unmatched": total.unmatched}),
        )
    }
}

impl Handler for DialPoll {
    fn perform<'a>(&'a self, _job: &'a ClaimedJob) -> BoxFuture<'a, Result<Value, JobError>> {
        Box::pin(self.poll())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn external_callees_become_call_records() {
        let page = json!({"errcode": 0, "errmsg": "ok", "record": [
            {"call_time": 1764206400, "total_duration": 5, "call_type": 1,
             "caller": {"userid": "liming", "duration": 300},
             "callee": [{"phone": 13800138000u64, "duration": 296}]},
            {"call_time": 1764207000, "total_duration": 2, "call_type": 2,
             "caller": {"userid": "liming", "duration": 120},
             "callee": [{"userid": "zhanggong", "duration": 118}, {"phone": "+86 139 0000 1111", "duration": 100}]},
            {"call_time": 1764208000, "caller": {}, "callee": [{"phone": "13800138000", "duration": 1}]}
        ]});
        let recs = parse_page(&page);
        assert_eq!(
            recs.len(),
            2,
            "internal callees and callerless records are skipped"
        );
        assert_eq!(recs[0].callee_phone.as_deref(), Some("13800138000"));
        assert_eq!(recs[0].duration_s, 296);
        assert_eq!(recs[0].started_at_ms, 1_764_206_400_000);
        assert_eq!(recs[0].record_key, "1764206400:liming:13800138000");
        assert_eq!(recs[1].call_type.as_deref(), Some("multi"));
        assert_eq!(page_len(&page), 3);
        assert!(parse_page(&json!({"errcode": 0})).is_empty());
    }
}
