//! DingTalk event JSON (HTTP push, docs/protocols/dingtalk.md#callback-security-and-crypto) and
//! card-callback JSON (docs/protocols/dingtalk.md#the-card-callback) into
//! the common [`InboundEvent`]. Events closeloop does not model are kept as
//! [`EventKind::Unknown`] with their type, so the inbox records them.

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::chat::event::{EventKind, InboundEvent, Platform};

/// The plaintext `EventType` of DingTalk's URL check (and the ISV suite variants).
pub const CHECK_URL: &[&str] = &[
    "check_url",
    "check_create_suite_url",
    "check_update_suite_url",
];

/// The `type` of a card button callback.
pub const CARD_CALLBACK: &str = "actionCallback";

/// Whether a decrypted push is DingTalk's URL check rather than an event.
pub fn is_check_url(message: &str) -> bool {
    serde_json::from_str::<Value>(message)
        .ok()
        .and_then(|v| {
            v.get("EventType")
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .is_some_and(|t| CHECK_URL.contains(&t.as_str()))
}

/// Parses a decrypted event push or a card callback body.
pub fn parse(message: &str) -> Result<InboundEvent, String> {
    let v: Value =
        serde_json::from_str(message).map_err(|_| "message is not valid JSON".to_string())?;
    let obj = v.as_object().ok_or("message is not a JSON object")?;
    if obj.get("type").and_then(Value::as_str) == Some(CARD_CALLBACK) {
        return parse_card_callback(obj);
    }
    let event_type = obj
        .get("EventType")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .ok_or("message has no EventType")?;
    let created_at = obj
        .get("EventTime")
        .or_else(|| obj.get("TimeStamp"))
        .or_else(|| obj.get("timeStamp"))
        .and_then(epoch_secs);
    let users = ids(obj, "UserId");
    let depts = ids(obj, "DeptId");
    let one = |list: &[String]| (list.len() == 1).then(|| list[0].clone());
    // An event naming several members or departments at once has the directory read
    // again: the common events carry one id each, and none of the others may be lost.
    let kind = match (event_type, one(&users), one(&depts)) {
        ("user_add_org", Some(user_id), _) => EventKind::UserCreated { user_id },
        ("user_modify_org", Some(user_id), _) => EventKind::UserUpdated {
            user_id,
            new_user_id: None,
        },
        ("user_leave_org", Some(user_id), _) => EventKind::UserDeleted { user_id },
        ("org_dept_create", _, Some(id)) => EventKind::DepartmentCreated { id },
        ("org_dept_modify", _, Some(id)) => EventKind::DepartmentUpdated { id },
        ("org_dept_remove", _, Some(id)) => EventKind::DepartmentDeleted { id },
        (
            "user_add_org" | "user_modify_org" | "user_leave_org" | "org_dept_create"
            | "org_dept_modify" | "org_dept_remove",
            _,
            _,
        ) if users.len() > 1 || depts.len() > 1 => EventKind::DirectoryChanged,
        // 视频会议状态变更 (事件订阅 0050, HTTP push): `openConfModel.conferenceId`, and
        // `changeScene` `conference_created` or `conference_closed`.
        ("meeting_status_change", _, _) => {
            match obj
                .get("openConfModel")
                .and_then(|m| m.get("conferenceId"))
                .and_then(Value::as_str)
                .filter(|id| !id.is_empty())
            {
                Some(id) => EventKind::MeetingChanged {
                    meeting_id: id.to_string(),
                    ended: obj.get("changeScene").and_then(Value::as_str)
                        == Some("conference_closed"),
                },
                None => return Err("meeting_status_change without a conferenceId".into()),
            }
        }
        _ => EventKind::Unknown {
            event_type: event_type.to_string(),
        },
    };
    Ok(InboundEvent {
        platform: Platform::Dingtalk,
        kind,
        created_at,
        type_name: event_type.to_string(),
    })
}

/// `{"type":"actionCallback","outTrackId":…,"userId":…,"content":"{\"cardPrivateData\":…}"}`:
/// `outTrackId` is our card id, the pressed button's action id names the action.
fn parse_card_callback(obj: &Map<String, Value>) -> Result<InboundEvent, String> {
    let field = |k: &str| {
        obj.get(k)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| format!("card callback has no {k}"))
    };
    let card = field("outTrackId")?;
    let user_id = field("userId")?;
    let content: Value = serde_json::from_str(field("content")?)
        .map_err(|_| "card callback content is not JSON".to_string())?;
    let private = &content["cardPrivateData"];
    let action = private["params"]["action"]
        .as_str()
        .or_else(|| private["actionIds"].get(0).and_then(Value::as_str))
        .filter(|a| !a.is_empty())
        .ok_or("card callback names no action")?;
    Ok(InboundEvent {
        platform: Platform::Dingtalk,
        kind: EventKind::CardAction {
            user_id: user_id.to_string(),
            task_id: card.to_string(),
            action_key: crate::cards::button_key(action, card),
            response_code: Some(super::cards::UPDATE_BY_TRACK_ID.to_string()),
            card_type: None,
        },
        created_at: None,
        type_name: CARD_CALLBACK.to_string(),
    })
}

/// The inbox dedupe key: DingTalk's `eventId` when the push carries one (a re-push of the
/// same event has the same id), otherwise the hash of the decrypted message.
pub fn dedupe_key(message: &str) -> String {
    // A click is one press of one button by one person, however often it is delivered.
    if let Ok(InboundEvent {
        kind:
            EventKind::CardAction {
                user_id,
                action_key,
                ..
            },
        ..
    }) = parse(message)
    {
        return format!("click:{user_id}:{action_key}");
    }
    let event_id = serde_json::from_str::<Value>(message).ok().and_then(|v| {
        v.get("eventId")
            .or_else(|| v.get("EventId"))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    });
    match event_id {
        Some(id) => format!("event:{id}"),
        None => format!("sha256:{}", hex::encode(Sha256::digest(message.as_bytes()))),
    }
}

/// `UserId` / `DeptId` arrive as a list (sometimes a single value).
fn ids(obj: &Map<String, Value>, key: &str) -> Vec<String> {
    let scalar = |v: &Value| match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    };
    match obj.get(key) {
        Some(Value::Array(items)) => items.iter().filter_map(scalar).collect(),
        Some(v) => scalar(v).into_iter().collect(),
        None => Vec::new(),
    }
}

/// DingTalk times are seconds or milliseconds, as numbers or strings.
fn epoch_secs(v: &Value) -> Option<i64> {
    let t = match v {
        Value::Number(n) => n.as_i64()?,
        Value::String(s) => s.parse().ok()?,
        _ => return None,
    };
    Some(if t >= 100_000_000_000 { t / 1000 } else { t })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directory_events_map_to_common_kinds() {
        let e = parse(r#"{"EventType":"user_add_org","TimeStamp":"1609395587000","UserId":["manager8"],"CorpId":"dingc"}"#).unwrap();
        assert_eq!(
            e.kind,
            EventKind::UserCreated {
                user_id: "manager8".into()
            }
        );
        assert_eq!(e.created_at, Some(1_609_395_587));
        let e = parse(r#"{"EventType":"org_dept_remove","DeptId":[42]}"#).unwrap();
        assert_eq!(e.kind, EventKind::DepartmentDeleted { id: "42".into() });
        // Several at once: the directory is read again, none is lost.
        let e = parse(r#"{"EventType":"user_leave_org","UserId":["a","b"]}"#).unwrap();
        assert_eq!(e.kind, EventKind::DirectoryChanged);
        let e = parse(r#"{"EventType":"org_dept_modify","DeptId":[1,2,3]}"#).unwrap();
        assert_eq!(e.kind, EventKind::DirectoryChanged);
        let e = parse(r#"{"EventType":"bpms_task_change","EventTime":1663143335567}"#).unwrap();
        assert_eq!(e.type_name, "bpms_task_change");
        assert_eq!(e.created_at, Some(1_663_143_335));
        assert!(parse(r#"{"foo":1}"#).is_err());
        assert!(parse("not json").is_err());
    }

    #[test]
    fn card_callbacks_become_card_actions() {
        let body = serde_json::json!({
            "type": "actionCallback", "outTrackId": "card1", "corpId": "dingc", "userId": "u1",
            "content": "{\"cardPrivateData\":{\"actionIds\":[\"accept\"],\"params\":{}}}"
        })
        .to_string();
        let e = parse(&body).unwrap();
        assert_eq!(
            e.kind,
            EventKind::CardAction {
                user_id: "u1".into(),
                task_id: "card1".into(),
                action_key: "accept:card1".into(),
                // No one-shot code on DingTalk: the mark that the card may be updated.
                response_code: Some(crate::platform::dingtalk::cards::UPDATE_BY_TRACK_ID.into()),
                card_type: None,
            }
        );
    }

    #[test]
    fn conference_status_changes_name_the_conference() {
        let e = parse(r#"{"EventType":"meeting_status_change","EventTime":1663143335567,"eventId":"e1",
            "openConfModel":{"conferenceId":"6321ab","status":2,"title":"方案沟通"},"statusSeqNum":2,
            "changeScene":"conference_closed"}"#)
        .unwrap();
        assert_eq!(
            e.kind,
            EventKind::MeetingChanged {
                meeting_id: "6321ab".into(),
                ended: true
            }
        );
        let e = parse(
            r#"{"EventType":"meeting_status_change","openConfModel":{"conferenceId":"6321ab"},
            "changeScene":"conference_created"}"#,
        )
        .unwrap();
        assert_eq!(
            e.kind,
            EventKind::MeetingChanged {
                meeting_id: "6321ab".into(),
                ended: false
            }
        );
        assert!(parse(r#"{"EventType":"meeting_status_change","openConfModel":{}}"#).is_err());
    }

    #[test]
    fn dedupe_prefers_the_event_id() {
        assert_eq!(
            dedupe_key(r#"{"EventType":"x","eventId":"c7c7"}"#),
            "event:c7c7"
        );
        assert!(dedupe_key(r#"{"EventType":"x"}"#).starts_with("sha256:"));
        assert!(is_check_url(r#"{"EventType":"check_url"}"#));
        assert!(!is_check_url(r#"{"EventType":"user_add_org"}"#));
    }
}
