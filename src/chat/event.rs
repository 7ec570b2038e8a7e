//! The one inbound event type every platform's callbacks map into. Domain code matches on
//! [`EventKind`] and names a platform only through the [`Platform`] value.

use serde::Serialize;

/// The chat platform an event came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Platform {
    Wecom,
    Dingtalk,
    Feishu,
}

impl Platform {
    pub const ALL: [Platform; 3] = [Platform::Wecom, Platform::Dingtalk, Platform::Feishu];

    pub fn as_str(self) -> &'static str {
        match self {
            Platform::Wecom => "wecom",
            Platform::Dingtalk => "dingtalk",
            Platform::Feishu => "feishu",
        }
    }

    pub fn parse(s: &str) -> Option<Platform> {
        match s {
            "wecom" => Some(Platform::Wecom),
            "dingtalk" => Some(Platform::Dingtalk),
            "feishu" => Some(Platform::Feishu),
            _ => None,
        }
    }

    /// The identity kind under which a member's id arrives in this platform's events.
    pub fn member_id_kind(self) -> &'static str {
        match self {
            Platform::Wecom | Platform::Dingtalk => "userid",
            Platform::Feishu => "user_id",
        }
    }
}

/// What happened. User ids are the platform's own ids for members of the organisation;
/// external user ids are the platform's ids for customers.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventKind {
    /// A rep added a customer. `state` is the channel tag of the add-me link or QR code;
    /// `welcome_code` lets the app send a welcome message for a short while.
    ExternalContactAdded {
        user_id: String,
        external_user_id: String,
        state: Option<String>,
        welcome_code: Option<String>,
    },
    ExternalContactEdited {
        user_id: String,
        external_user_id: String,
    },
    /// The relationship ended: the rep removed the customer (`by_customer` false), or the
    /// customer removed the rep (`by_customer` true).
    ExternalContactRemoved {
        user_id: String,
        external_user_id: String,
        by_customer: bool,
    },
    /// Handing the customer over to `user_id` (the taking-over rep) failed.
    ExternalContactTransferFailed {
        user_id: String,
        external_user_id: String,
        reason: Option<String>,
    },
    UserCreated {
        user_id: String,
    },
    /// `new_user_id` is set when the member's id itself changed.
    UserUpdated {
        user_id: String,
        new_user_id: Option<String>,
    },
    UserDeleted {
        user_id: String,
    },
    DepartmentCreated {
        id: String,
    },
    DepartmentUpdated {
        id: String,
    },
    DepartmentDeleted {
        id: String,
    },
    /// A button on an interactive card was pressed. `response_code`, when given, allows one
    /// update of that card.
    CardAction {
        user_id: String,
        task_id: String,
        action_key: String,
        response_code: Option<String>,
        card_type: Option<String>,
    },
    MenuClick {
        user_id: String,
        key: String,
    },
    EnterApp {
        user_id: String,
    },
    /// A member wrote to the app. `text` is set for text messages only.
    Message {
        user_id: String,
        msg_id: String,
        msg_type: String,
        text: Option<String>,
    },
    /// Several members or departments changed at once: the directory is read again.
    DirectoryChanged,
    /// A video meeting (conference) began or ended; its records are read once it ended.
    MeetingChanged {
        meeting_id: String,
        ended: bool,
    },
    /// Anything not modelled above; kept so the inbox records it rather than dropping it.
    Unknown {
        event_type: String,
    },
}

impl EventKind {
    /// The event kind's stable name (as serialised in `type`), e.g. `card_action`: the key
    /// under which a capability registers its inbox handler.
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::ExternalContactAdded { .. } => "external_contact_added",
            EventKind::ExternalContactEdited { .. } => "external_contact_edited",
            EventKind::ExternalContactRemoved { .. } => "external_contact_removed",
            EventKind::ExternalContactTransferFailed { .. } => "external_contact_transfer_failed",
            EventKind::UserCreated { .. } => "user_created",
            EventKind::UserUpdated { .. } => "user_updated",
            EventKind::UserDeleted { .. } => "user_deleted",
            EventKind::DepartmentCreated { .. } => "department_created",
            EventKind::DepartmentUpdated { .. } => "department_updated",
            EventKind::DepartmentDeleted { .. } => "department_deleted",
            EventKind::CardAction { .. } => "card_action",
            EventKind::MenuClick { .. } => "menu_click",
            EventKind::EnterApp { .. } => "enter_app",
            EventKind::Message { .. } => "message",
            EventKind::DirectoryChanged => "directory_changed",
            EventKind::MeetingChanged { .. } => "meeting_changed",
            EventKind::Unknown { .. } => "unknown",
        }
    }

    /// The organisation member the event is about or came from, if there is one.
    pub fn user_id(&self) -> Option<&str> {
        match self {
            EventKind::ExternalContactAdded { user_id, .. }
            | EventKind::ExternalContactEdited { user_id, .. }
            | EventKind::ExternalContactRemoved { user_id, .. }
            | EventKind::ExternalContactTransferFailed { user_id, .. }
            | EventKind::UserCreated { user_id }
            | EventKind::UserUpdated { user_id, .. }
            | EventKind::UserDeleted { user_id }
            | EventKind::CardAction { user_id, .. }
            | EventKind::MenuClick { user_id, .. }
            | EventKind::EnterApp { user_id }
            | EventKind::Message { user_id, .. } => Some(user_id),
            EventKind::DepartmentCreated { .. }
            | EventKind::DepartmentUpdated { .. }
            | EventKind::DepartmentDeleted { .. }
            | EventKind::MeetingChanged { .. }
            | EventKind::DirectoryChanged
            | EventKind::Unknown { .. } => None,
        }
    }
}

/// One verified, decrypted callback from a platform.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InboundEvent {
    pub platform: Platform,
    pub kind: EventKind,
    /// The platform's own time for the event (epoch seconds), if it gave one.
    pub created_at: Option<i64>,
    /// A stable name of the platform's event type for the inbox, e.g.
    /// `change_external_contact.add_external_contact`, `template_card_event`, `text`.
    pub type_name: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_names_match_serde() {
        for kind in [
            EventKind::ExternalContactRemoved {
                user_id: "a".into(),
                external_user_id: "b".into(),
                by_customer: true,
            },
            EventKind::UserDeleted {
                user_id: "a".into(),
            },
            EventKind::DirectoryChanged,
            EventKind::MeetingChanged {
                meeting_id: "m".into(),
                ended: true,
            },
            EventKind::CardAction {
                user_id: "a".into(),
                task_id: "t".into(),
                action_key: "k".into(),
                response_code: None,
                card_type: None,
            },
        ] {
            assert_eq!(serde_json::to_value(&kind).unwrap()["type"], kind.name());
        }
    }

    #[test]
    fn platform_names_match_serde() {
        for platform in [Platform::Wecom, Platform::Dingtalk, Platform::Feishu] {
            assert_eq!(
                serde_json::to_value(platform).unwrap(),
                serde_json::Value::String(platform.as_str().to_owned())
            );
        }
    }

    #[test]
    fn user_id_is_the_member_when_there_is_one() {
        let added = EventKind::ExternalContactAdded {
            user_id: "zhangsan".into(),
            external_user_id: "wmAAA".into(),
            state: None,
            welcome_code: None,
        };
        assert_eq!(added.user_id(), Some("zhangsan"));
        let message = EventKind::Message {
            user_id: "lisi".into(),
            msg_id: "1".into(),
            msg_type: "text".into(),
            text: Some("你好".into()),
        };
        assert_eq!(message.user_id(), Some("lisi"));
        assert_eq!(
            EventKind::DepartmentDeleted { id: "2".into() }.user_id(),
            None
        );
        let unknown = EventKind::Unknown {
            event_type: "subscribe".into(),
        };
        assert_eq!(unknown.user_id(), None);
    }

    #[test]
    fn serializes_with_a_type_tag() {
        let event = InboundEvent {
            platform: Platform::Wecom,
            kind: EventKind::ExternalContactRemoved {
                user_id: "zhangsan".into(),
                external_user_id: "wmAAA".into(),
                by_customer: true,
            },
            created_at: Some(1_403_610_513),
            type_name: "change_external_contact.del_follow_user".into(),
        };
        assert_eq!(
            serde_json::to_value(&event).unwrap(),
            serde_json::json!({
                "platform": "wecom",
                "kind": {
                    "type": "external_contact_removed",
                    "user_id": "zhangsan",
                    "external_user_id": "wmAAA",
                    "by_customer": true
                },
                "created_at": 1_403_610_513,
                "type_name": "change_external_contact.del_follow_user"
            })
        );
    }
}
