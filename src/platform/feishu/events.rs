//! Feishu event payloads (docs/protocols/feishu.md#callback-security-and-crypto and
//! docs/protocols/feishu.md#cards) mapped into the common [`EventKind`].
//!
//! Schema 2.0 events carry `schema`, `header` + `event`; the older 1.0 events carry `uuid`,
//! `token`, `type: event_callback` and `event.type`. Which one a body is, its type and its
//! token are read by the official SDK's precedence (`docs/protocols/feishu.md`). Events
//! closeloop does not model are kept as [`EventKind::Unknown`] with their type name.

use serde_json::Value;

use crate::chat::event::{EventKind, InboundEvent, Platform};

/// The envelope fields every decrypted payload is checked by before it is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub kind: EnvelopeKind,
    /// The Verification Token the payload carries where its schema puts it (`header.token`
    /// in 2.0, `token` otherwise): `None` when absent or null; a value that is not a string
    /// reads as `Some("")`, which no configured token equals.
    pub token: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvelopeKind {
    UrlVerification {
        challenge: String,
    },
    /// An event, with its dedupe key (`header.event_id` or `uuid`).
    Event {
        event_id: String,
    },
}

/// Which schema a payload is, decided as Feishu's official SDK decides it (see
/// `docs/protocols/feishu.md`): a non-empty `schema` makes it 2.0 whatever else it carries;
/// otherwise a non-empty `uuid` makes it 1.0; otherwise only the top-level `type` counts.
enum Schema<'a> {
    V2 {
        header: &'a serde_json::Map<String, Value>,
    },
    V1 {
        uuid: String,
    },
    Bare,
}

fn schema(obj: &serde_json::Map<String, Value>) -> Result<Schema<'_>, String> {
    match obj.get("schema") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) if s.is_empty() => {}
        Some(Value::String(_)) => {
            return match obj.get("header") {
                Some(Value::Object(header)) => Ok(Schema::V2 { header }),
                _ => Err("2.0 payload without a header object".into()),
            }
        }
        Some(_) => return Err("schema is not a string".into()),
    }
    match obj.get("uuid") {
        Some(Value::String(uuid)) if !uuid.is_empty() => Ok(Schema::V1 { uuid: uuid.clone() }),
        None | Some(Value::Null) | Some(Value::String(_)) => Ok(Schema::Bare),
        Some(_) => Err("uuid is not a string".into()),
    }
}

/// Reads the envelope of a decrypted payload; `Err` when it is not a Feishu payload at all.
pub fn envelope(v: &Value) -> Result<Envelope, String> {
    let obj = v.as_object().ok_or("payload is not a JSON object")?;
    let token_in = |m: &serde_json::Map<String, Value>| match m.get("token") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => Some(String::new()),
    };
    let text = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_owned);
    let schema = schema(obj)?;
    let (event_type, token) = match &schema {
        Schema::V2 { header } => (text(header.get("event_type")), token_in(header)),
        Schema::V1 { .. } => (
            text(obj.get("event").and_then(|e| e.get("type"))),
            token_in(obj),
        ),
        Schema::Bare => (text(obj.get("type")), token_in(obj)),
    };
    if event_type.as_deref() == Some("url_verification") {
        let challenge = text(obj.get("challenge")).ok_or("url_verification without challenge")?;
        return Ok(Envelope {
            kind: EnvelopeKind::UrlVerification { challenge },
            token,
        });
    }
    let event_id = match schema {
        Schema::V2 { header } => text(header.get("event_id"))
            .filter(|s| !s.is_empty())
            .ok_or("header.event_id missing")?,
        Schema::V1 { uuid } => uuid,
        Schema::Bare => return Err("neither a 2.0 schema nor a 1.0 uuid".into()),
    };
    Ok(Envelope {
        kind: EnvelopeKind::Event { event_id },
        token,
    })
}

/// Parses a decrypted event payload (2.0 or 1.0, told apart as [`envelope`] does) into the
/// common event type.
pub fn parse(body: &str) -> Result<InboundEvent, String> {
    let v: Value = serde_json::from_str(body).map_err(|_| "event is not valid JSON".to_string())?;
    let obj = v.as_object().ok_or("event is not a JSON object")?;
    match schema(obj)? {
        Schema::V2 { header } => {
            let event_type = header
                .get("event_type")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .ok_or("header.event_type missing")?;
            let event = obj.get("event").ok_or("event body missing")?;
            let created_at = header
                .get("create_time")
                .and_then(Value::as_str)
                .and_then(epoch_seconds);
            Ok(InboundEvent {
                platform: Platform::Feishu,
                kind: kind_v2(event_type, event)?,
                created_at,
                type_name: event_type.to_owned(),
            })
        }
        Schema::V1 { .. } => {
            let event_type = obj
                .get("event")
                .and_then(|e| e.get("type"))
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .ok_or("event.type missing")?;
            Ok(InboundEvent {
                platform: Platform::Feishu,
                kind: EventKind::Unknown {
                    event_type: event_type.to_owned(),
                },
                created_at: obj
                    .get("ts")
                    .and_then(Value::as_str)
                    .and_then(epoch_seconds),
                type_name: event_type.to_owned(),
            })
        }
        Schema::Bare => Err("not a Feishu event payload".into()),
    }
}

fn kind_v2(event_type: &str, event: &Value) -> Result<EventKind, String> {
    let field = |path: &[&str]| -> Option<String> {
        let mut cur = event;
        for p in path {
            cur = cur.get(*p)?;
        }
        cur.as_str().filter(|s| !s.is_empty()).map(str::to_owned)
    };
    let required = |path: &[&str]| {
        field(path).ok_or_else(|| format!("{event_type}: event.{} missing", path.join(".")))
    };
    Ok(match event_type {
        "contact.user.created_v3" => EventKind::UserCreated {
            user_id: required(&["object", "user_id"])?,
        },
        "contact.user.updated_v3" => {
            let new_id = required(&["object", "user_id"])?;
            let old_id = field(&["old_object", "user_id"]);
            match old_id {
                Some(old) if old != new_id => EventKind::UserUpdated {
                    user_id: old,
                    new_user_id: Some(new_id),
                },
                _ => EventKind::UserUpdated {
                    user_id: new_id,
                    new_user_id: None,
                },
            }
        }
        "contact.user.deleted_v3" => EventKind::UserDeleted {
            user_id: required(&["object", "user_id"])?,
        },
        "contact.department.created_v3" => EventKind::DepartmentCreated {
            id: department_id(event)?,
        },
        "contact.department.updated_v3" => EventKind::DepartmentUpdated {
            id: department_id(event)?,
        },
        "contact.department.deleted_v3" => EventKind::DepartmentDeleted {
            id: department_id(event)?,
        },
        // 会议结束 (vector F5): `event.meeting.id` is the meeting instance.
        "vc.meeting.meeting_ended_v1" => EventKind::MeetingChanged {
            meeting_id: field(&["meeting", "id"]).ok_or("meeting_ended: meeting.id missing")?,
            ended: true,
        },
        "card.action.trigger" => {
            // Members are known by user_id; open_id only when the app may not read user_id.
            let user_id = field(&["operator", "user_id"])
                .or_else(|| field(&["operator", "open_id"]))
                .ok_or("card.action.trigger: operator id missing")?;
            let action_key = button_key(&event["action"]["value"])
                .ok_or("card.action.trigger: action.value carries no button key")?;
            let task_id = crate::cards::parse_button_key(&action_key)
                .map(|(_, card)| card.to_owned())
                .unwrap_or_default();
            EventKind::CardAction {
                user_id,
                task_id,
                action_key,
                response_code: field(&["token"]),
                card_type: field(&["action", "tag"]),
            }
        }
        other => EventKind::Unknown {
            event_type: other.to_owned(),
        },
    })
}

/// The button key closeloop puts into a button's `value` (`{"key": "…"}`); a bare string
/// value is accepted too.
pub fn button_key(value: &Value) -> Option<String> {
    match value {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Object(m) => m
            .get("key")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned),
        _ => None,
    }
}

fn department_id(event: &Value) -> Result<String, String> {
    let obj = &event["object"];
    ["department_id", "open_department_id"]
        .iter()
        .find_map(|k| {
            obj.get(*k)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
        })
        .map(str::to_owned)
        .ok_or_else(|| "department id missing".to_string())
}

/// `create_time` is a string of digits whose unit is not reliable (documented as ms, seen
/// as µs); the number of digits tells seconds, milliseconds and microseconds apart.
fn epoch_seconds(s: &str) -> Option<i64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: i64 = s.parse().ok()?;
    Some(match s.len() {
        0..=11 => n,
        12..=14 => n / 1_000,
        _ => n / 1_000_000,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn v2(event_type: &str, event: Value) -> String {
        json!({
            "schema": "2.0",
            "header": {"event_id": "e1", "event_type": event_type, "create_time": "1603977298000",
                       "token": "v", "app_id": "cli_x", "tenant_key": "t"},
            "event": event
        })
        .to_string()
    }

    #[test]
    fn contact_events_map_to_the_common_kinds() {
        let ev = parse(&v2(
            "contact.user.created_v3",
            json!({"object": {"user_id": "e33ggbyz", "open_id": "ou_1"}}),
        ))
        .unwrap();
        assert_eq!(
            ev.kind,
            EventKind::UserCreated {
                user_id: "e33ggbyz".into()
            }
        );
        assert_eq!(ev.created_at, Some(1_603_977_298));
        assert_eq!(ev.platform, Platform::Feishu);

        let ev = parse(&v2(
            "contact.user.updated_v3",
            json!({"object": {"user_id": "new"}, "old_object": {"user_id": "old"}}),
        ))
        .unwrap();
        assert_eq!(
            ev.kind,
            EventKind::UserUpdated {
                user_id: "old".into(),
                new_user_id: Some("new".into())
            }
        );
        let ev = parse(&v2(
            "contact.user.updated_v3",
            json!({"object": {"user_id": "same"}, "old_object": {"name": "x"}}),
        ))
        .unwrap();
        assert_eq!(
            ev.kind,
            EventKind::UserUpdated {
                user_id: "same".into(),
                new_user_id: None
            }
        );
        let ev = parse(&v2(
            "contact.department.deleted_v3",
            json!({"object": {"open_department_id": "od-1"}}),
        ))
        .unwrap();
        assert_eq!(ev.kind, EventKind::DepartmentDeleted { id: "od-1".into() });
        assert!(parse(&v2("contact.user.deleted_v3", json!({"object": {}}))).is_err());
    }

    #[test]
    fn card_clicks_carry_the_button_key_and_token() {
        let ev = parse(&v2(
            "card.action.trigger",
            json!({"operator": {"user_id": "u1", "open_id": "ou_1"}, "token": "c-123",
                   "action": {"tag": "button", "value": {"key": "accept:card9"}}}),
        ))
        .unwrap();
        assert_eq!(
            ev.kind,
            EventKind::CardAction {
                user_id: "u1".into(),
                task_id: "card9".into(),
                action_key: "accept:card9".into(),
                response_code: Some("c-123".into()),
                card_type: Some("button".into()),
            }
        );
    }

    #[test]
    fn unknown_and_v1_events_are_kept_raw() {
        let ev = parse(&v2("vc.meeting.room_created_v1", json!({"room": {}}))).unwrap();
        assert_eq!(
            ev.kind,
            EventKind::Unknown {
                event_type: "vc.meeting.room_created_v1".into()
            }
        );
        let ev = parse(&v2(
            "vc.meeting.meeting_ended_v1",
            json!({"meeting": {"id": "7203737444910661636", "meeting_no": "112714536"}}),
        ))
        .unwrap();
        assert_eq!(
            ev.kind,
            EventKind::MeetingChanged {
                meeting_id: "7203737444910661636".into(),
                ended: true
            }
        );
        assert!(parse(&v2("vc.meeting.meeting_ended_v1", json!({"meeting": {}}))).is_err());
        let v1 = json!({"uuid": "u-1", "token": "v", "ts": "1603977298", "type": "event_callback",
                        "event": {"type": "message"}})
        .to_string();
        let ev = parse(&v1).unwrap();
        assert_eq!(ev.type_name, "message");
        assert_eq!(ev.created_at, Some(1_603_977_298));
        assert!(parse("[1]").is_err());
        assert!(parse("{").is_err());
    }

    #[test]
    fn envelopes_name_the_dedupe_key_and_token() {
        let e =
            envelope(&json!({"type": "url_verification", "challenge": "c", "token": "v"})).unwrap();
        assert_eq!(
            e.kind,
            EnvelopeKind::UrlVerification {
                challenge: "c".into()
            }
        );
        assert_eq!(e.token.as_deref(), Some("v"));
        let e = envelope(&serde_json::from_str(&v2("x", json!({}))).unwrap()).unwrap();
        assert_eq!(
            e.kind,
            EnvelopeKind::Event {
                event_id: "e1".into()
            }
        );
        assert!(envelope(&json!({"header": {}})).is_err());
        assert!(envelope(&json!({"a": 1})).is_err());
    }

    #[test]
    fn the_schema_decides_where_type_and_token_are_read() {
        let read = |v: Value| envelope(&v).map(|e| (e.kind, e.token));
        let event = |id: &str| EnvelopeKind::Event {
            event_id: id.into(),
        };
        // 2.0: the header's type and token, whatever the top level says.
        let v2 = json!({"schema": "2.0", "type": "url_verification", "challenge": "c",
                        "token": "top", "header": {"event_id": "e1", "event_type": "x", "token": "h"}});
        assert_eq!(read(v2).unwrap(), (event("e1"), Some("h".into())));
        let no_token = json!({"schema": "2.0", "type": "url_verification", "challenge": "c",
                              "header": {"event_id": "e1", "event_type": "x"}});
        assert_eq!(read(no_token).unwrap(), (event("e1"), None));
        let check = json!({"schema": "2.0", "challenge": "c",
                           "header": {"event_type": "url_verification", "token": "h"}});
        assert_eq!(
            read(check).unwrap(),
            (
                EnvelopeKind::UrlVerification {
                    challenge: "c".into()
                },
                Some("h".into())
            )
        );
        // 1.0: `event.type` is the type, so a top-level url_verification is not a URL check.
        let v1 = json!({"uuid": "u1", "type": "url_verification", "challenge": "c", "token": "t",
                        "event": {"type": "message"}});
        assert_eq!(read(v1).unwrap(), (event("u1"), Some("t".into())));
        // A header without a schema is not 2.0; a token that is not a string is no token.
        assert!(read(json!({"header": {"event_id": "e", "event_type": "x"}})).is_err());
        let odd =
            json!({"schema": "2.0", "header": {"event_id": "e", "event_type": "x", "token": 7}});
        assert_eq!(read(odd).unwrap().1, Some(String::new()));
        assert!(read(json!({"schema": "2.0"})).is_err());
        assert!(read(json!({"schema": 2, "header": {}})).is_err());
        // Parsing follows the same schema rule.
        let ev = parse(
            &json!({"uuid": "u1", "type": "url_verification", "event": {"type": "message"}})
                .to_string(),
        )
        .unwrap();
        assert_eq!(ev.type_name, "message");
        assert!(parse(&json!({"header": {"event_type": "x"}, "event": {}}).to_string()).is_err());
    }

    #[test]
    fn create_time_units_are_told_apart() {
        assert_eq!(epoch_seconds("1603977298"), Some(1_603_977_298));
        assert_eq!(epoch_seconds("1603977298000"), Some(1_603_977_298));
        assert_eq!(epoch_seconds("1603977298000000"), Some(1_603_977_298));
        assert_eq!(epoch_seconds("x"), None);
    }
}
