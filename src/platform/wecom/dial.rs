//! 公费电话 dial records (`dial/get_dial_record`, PROTOCOLS.md §1.5) as platform-neutral
//! call records. A record has no id of its own; call time, caller and callee identify it.

use serde_json::Value;

use crate::platform::event::Platform;
use crate::verification::calls::CallRecord;

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
