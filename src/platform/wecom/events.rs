//! Decrypted WeCom callback XML (docs/protocols/wecom.md) into an [`InboundEvent`].
//!
//! The body has passed the signature check and decryption, yet it is still parsed as
//! untrusted input: a size cap, no DTD and no entities beyond the five predefined ones, and a
//! pull parser that reads only the flat children of `<xml>`.

use std::borrow::Cow;

use quick_xml::errors::{Error as XmlError, SyntaxError};
use quick_xml::escape::EscapeError;
use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;
use sha2::{Digest, Sha256};

use crate::chat::event::{EventKind, InboundEvent, Platform};

/// Bodies above this are refused unparsed; real callbacks are well under 4 KiB.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventParseError {
    #[error("callback body is {0} bytes, over the {MAX_BODY_BYTES}-byte limit")]
    TooLarge(usize),
    /// A DOCTYPE, another markup declaration, or a reference to an undeclared entity.
    /// Nothing from a DTD is ever expanded, so such a body is refused outright.
    #[error("callback XML uses a DTD or entity ({0}); refused")]
    DtdOrEntity(String),
    #[error("callback XML is malformed: {0}")]
    Malformed(String),
    #[error("callback XML root is <{0}>, expected <xml>")]
    WrongRoot(String),
    #[error("callback XML lacks {0}")]
    MissingField(&'static str),
    #[error("callback XML repeats {0}")]
    DuplicateField(&'static str),
    #[error("callback XML has an invalid {0}")]
    InvalidField(&'static str),
}

/// Parses one decrypted callback body. Event and message types this crate does not model
/// become [`EventKind::Unknown`], never an error; a modelled type missing a field it needs is
/// an error.
pub fn parse(xml: &str) -> Result<InboundEvent, EventParseError> {
    if xml.len() > MAX_BODY_BYTES {
        return Err(EventParseError::TooLarge(xml.len()));
    }
    let fields = read_fields(xml)?;
    classify(&fields)
}

/// The inbox dedupe key. Messages carry a `MsgId`. Events do not, and contact events all come
/// from `sys`, so sender plus time would merge two customers added in the same second; a
/// retry, however, carries the same plaintext, so the hash of the body identifies it.
pub fn dedupe_key(event: &InboundEvent, decrypted_body: &str) -> String {
    match &event.kind {
        EventKind::Message { msg_id, .. } => format!("msg:{msg_id}"),
        _ => format!(
            "sha256:{}",
            hex::encode(Sha256::digest(decrypted_body.as_bytes()))
        ),
    }
}

/// The children of `<xml>` that the mapping reads.
#[derive(Debug, Clone, Copy)]
enum Field {
    FromUserName,
    CreateTime,
    MsgType,
    Event,
    ChangeType,
    UserId,
    NewUserId,
    ExternalUserId,
    State,
    WelcomeCode,
    FailReason,
    EventKey,
    TaskId,
    CardType,
    ResponseCode,
    MsgId,
    Content,
    Id,
}

const FIELD_COUNT: usize = Field::Id as usize + 1;

impl Field {
    fn from_tag(tag: &[u8]) -> Option<Field> {
        Some(match tag {
            b"FromUserName" => Field::FromUserName,
            b"CreateTime" => Field::CreateTime,
            b"MsgType" => Field::MsgType,
            b"Event" => Field::Event,
            b"ChangeType" => Field::ChangeType,
            b"UserID" => Field::UserId,
            b"NewUserID" => Field::NewUserId,
            b"ExternalUserID" => Field::ExternalUserId,
            b"State" => Field::State,
            b"WelcomeCode" => Field::WelcomeCode,
            b"FailReason" => Field::FailReason,
            b"EventKey" => Field::EventKey,
            b"TaskId" => Field::TaskId,
            b"CardType" => Field::CardType,
            b"ResponseCode" => Field::ResponseCode,
            b"MsgId" => Field::MsgId,
            b"Content" => Field::Content,
            b"Id" => Field::Id,
            _ => return None,
        })
    }

    fn tag(self) -> &'static str {
        match self {
            Field::FromUserName => "FromUserName",
            Field::CreateTime => "CreateTime",
            Field::MsgType => "MsgType",
            Field::Event => "Event",
            Field::ChangeType => "ChangeType",
            Field::UserId => "UserID",
            Field::NewUserId => "NewUserID",
            Field::ExternalUserId => "ExternalUserID",
            Field::State => "State",
            Field::WelcomeCode => "WelcomeCode",
            Field::FailReason => "FailReason",
            Field::EventKey => "EventKey",
            Field::TaskId => "TaskId",
            Field::CardType => "CardType",
            Field::ResponseCode => "ResponseCode",
            Field::MsgId => "MsgId",
            Field::Content => "Content",
            Field::Id => "Id",
        }
    }
}

/// Field values, borrowed from the body unless unescaping or concatenation needed a copy.
#[derive(Default)]
struct Fields<'a> {
    values: [Option<Cow<'a, str>>; FIELD_COUNT],
    seen: u32,
}

impl<'a> Fields<'a> {
    fn open(&mut self, field: Field) -> Result<(), EventParseError> {
        let bit = 1 << field as u32;
        if self.seen & bit != 0 {
            return Err(EventParseError::DuplicateField(field.tag()));
        }
        self.seen |= bit;
        Ok(())
    }

    /// Text and CDATA pieces of one element are joined, so `a<![CDATA[b]]>` reads `ab`.
    fn append(&mut self, field: Field, piece: Cow<'a, str>) {
        match &mut self.values[field as usize] {
            Some(value) => value.to_mut().push_str(&piece),
            slot => *slot = Some(piece),
        }
    }

    /// The value, treating an empty element as absent (WeCom sends `<EventKey><![CDATA[]]>`
    /// when there is no key).
    fn get(&self, field: Field) -> Option<&str> {
        self.values[field as usize]
            .as_deref()
            .filter(|value| !value.is_empty())
    }

    fn optional(&self, field: Field) -> Option<String> {
        self.get(field).map(str::to_owned)
    }

    fn required(&self, field: Field) -> Result<String, EventParseError> {
        self.optional(field)
            .ok_or(EventParseError::MissingField(field.tag()))
    }
}

fn read_fields(xml: &str) -> Result<Fields<'_>, EventParseError> {
    // No text trimming: whitespace inside a value is content, and trimming would also eat
    // the spaces between a text piece and a CDATA piece.
    let mut reader = Reader::from_str(xml);
    let mut fields = Fields::default();
    let mut root_seen = false;
    let mut depth = 0usize;
    // The field whose element is open as a direct child of the root.
    let mut current: Option<Field> = None;
    loop {
        let event = reader
            .read_event()
            .map_err(|err| xml_error(err, xml, reader.error_position()))?;
        match event {
            Event::Start(start) => {
                check_attributes(&start, xml, reader.buffer_position())?;
                match depth {
                    0 => enter_root(&start, &mut root_seen)?,
                    1 => {
                        current = Field::from_tag(start.name().as_ref());
                        if let Some(field) = current {
                            fields.open(field)?;
                        }
                    }
                    _ => {}
                }
                depth += 1;
            }
            Event::Empty(start) => {
                check_attributes(&start, xml, reader.buffer_position())?;
                match depth {
                    0 => enter_root(&start, &mut root_seen)?,
                    1 => {
                        if let Some(field) = Field::from_tag(start.name().as_ref()) {
                            fields.open(field)?;
                        }
                    }
                    _ => {}
                }
            }
            Event::End(_) => {
                depth = depth
                    .checked_sub(1)
                    .ok_or_else(|| malformed("closing tag without an opening tag"))?;
                if depth == 1 {
                    current = None;
                }
            }
            // Text is only decoded when it is kept or could hold an entity reference; the
            // rest (mostly whitespace between elements) is skipped for speed.
            Event::Text(text) => {
                let keep = kept_field(depth, current);
                if keep.is_none() && !text.contains(&b'&') {
                    outside_root_check(depth, &text)?;
                    continue;
                }
                let value = text
                    .unescape()
                    .map_err(|err| xml_error(err, xml, reader.buffer_position()))?;
                outside_root_check(depth, value.as_bytes())?;
                if let Some(field) = keep {
                    fields.append(field, value);
                }
            }
            Event::CData(cdata) => {
                if depth == 0 {
                    return Err(malformed("CDATA outside the root element"));
                }
                if let Some(field) = kept_field(depth, current) {
                    let value = cdata.decode().map_err(|err| malformed(&err.to_string()))?;
                    fields.append(field, value);
                }
            }
            Event::DocType(_) => return Err(EventParseError::DtdOrEntity("DOCTYPE".into())),
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) => {}
            Event::Eof => break,
        }
    }
    if depth != 0 {
        return Err(malformed("element not closed before the end"));
    }
    if !root_seen {
        return Err(malformed("no root element"));
    }
    Ok(fields)
}

fn enter_root(start: &BytesStart<'_>, root_seen: &mut bool) -> Result<(), EventParseError> {
    if *root_seen {
        return Err(malformed("more than one root element"));
    }
    *root_seen = true;
    let name = start.name();
    if name.as_ref() != b"xml" {
        // Capped: the name ends up in logs.
        let name = String::from_utf8_lossy(name.as_ref());
        return Err(EventParseError::WrongRoot(name.chars().take(64).collect()));
    }
    Ok(())
}

/// WeCom sends no attributes; any that appear are still checked so an entity cannot hide in
/// one.
fn check_attributes(
    start: &BytesStart<'_>,
    xml: &str,
    position: u64,
) -> Result<(), EventParseError> {
    for attribute in start.attributes() {
        let attribute = attribute.map_err(|err| malformed(&err.to_string()))?;
        attribute
            .unescape_value()
            .map_err(|err| xml_error(err, xml, position))?;
    }
    Ok(())
}

/// The field a text piece belongs to: only direct text of a known child of the root.
fn kept_field(depth: usize, current: Option<Field>) -> Option<Field> {
    if depth == 2 {
        current
    } else {
        None
    }
}

fn outside_root_check(depth: usize, text: &[u8]) -> Result<(), EventParseError> {
    if depth == 0 && !is_xml_space(text) {
        return Err(malformed("text outside the root element"));
    }
    Ok(())
}

fn is_xml_space(text: &[u8]) -> bool {
    text.iter()
        .all(|byte| matches!(byte, b' ' | b'\t' | b'\r' | b'\n'))
}

fn xml_error(err: XmlError, xml: &str, position: u64) -> EventParseError {
    match err {
        XmlError::Escape(EscapeError::UnrecognizedEntity(_, name)) => {
            EventParseError::DtdOrEntity(format!("entity &{name};"))
        }
        XmlError::Syntax(SyntaxError::UnclosedDoctype) => {
            EventParseError::DtdOrEntity("DOCTYPE".into())
        }
        // quick-xml knows only CDATA, comments and DOCTYPE after `<!`; anything else that
        // starts with a letter is a DTD markup declaration such as `<!ENTITY`.
        XmlError::Syntax(SyntaxError::InvalidBangMarkup)
            if is_markup_declaration(xml, position) =>
        {
            EventParseError::DtdOrEntity("markup declaration".into())
        }
        other => malformed(&format!("{other} at byte {position}")),
    }
}

fn is_markup_declaration(xml: &str, position: u64) -> bool {
    let rest = usize::try_from(position)
        .ok()
        .and_then(|at| xml.as_bytes().get(at..));
    matches!(rest, Some([b'<', b'!', letter, ..]) if letter.is_ascii_alphabetic())
}

fn malformed(what: &str) -> EventParseError {
    EventParseError::Malformed(what.to_owned())
}

/// The documented app message types (text, image, voice, video, location, link) plus file.
const MESSAGE_TYPES: [&str; 7] = [
    "text", "image", "voice", "video", "file", "location", "link",
];

fn classify(fields: &Fields<'_>) -> Result<InboundEvent, EventParseError> {
    let created_at = fields
        .get(Field::CreateTime)
        .map(|time| time.trim().parse::<i64>())
        .transpose()
        .map_err(|_| EventParseError::InvalidField("CreateTime"))?;
    let msg_type = fields
        .get(Field::MsgType)
        .ok_or(EventParseError::MissingField("MsgType"))?;
    let (type_name, kind) = if msg_type == "event" {
        classify_event(fields)?
    } else if MESSAGE_TYPES.contains(&msg_type) {
        let kind = EventKind::Message {
            user_id: fields.required(Field::FromUserName)?,
            msg_id: fields.required(Field::MsgId)?,
            msg_type: msg_type.to_owned(),
            text: if msg_type == "text" {
                fields.optional(Field::Content)
            } else {
                None
            },
        };
        (msg_type.to_owned(), kind)
    } else {
        unknown(msg_type.to_owned())
    };
    Ok(InboundEvent {
        platform: Platform::Wecom,
        kind,
        created_at,
        type_name,
    })
}

fn classify_event(fields: &Fields<'_>) -> Result<(String, EventKind), EventParseError> {
    let event = fields
        .get(Field::Event)
        .ok_or(EventParseError::MissingField("Event"))?;
    let kind = match event {
        "change_external_contact" => return classify_change(fields, event, external_contact),
        "change_contact" => return classify_change(fields, event, contact),
        "template_card_event" => EventKind::CardAction {
            user_id: fields.required(Field::FromUserName)?,
            task_id: fields.required(Field::TaskId)?,
            action_key: fields.required(Field::EventKey)?,
            response_code: fields.optional(Field::ResponseCode),
            card_type: fields.optional(Field::CardType),
        },
        "click" => EventKind::MenuClick {
            user_id: fields.required(Field::FromUserName)?,
            key: fields.required(Field::EventKey)?,
        },
        "enter_agent" => EventKind::EnterApp {
            user_id: fields.required(Field::FromUserName)?,
        },
        other => return Ok(unknown(other.to_owned())),
    };
    Ok((event.to_owned(), kind))
}

/// Events that carry a `ChangeType` are named `<Event>.<ChangeType>`.
fn classify_change(
    fields: &Fields<'_>,
    event: &str,
    map: fn(&Fields<'_>, &str) -> Result<Option<EventKind>, EventParseError>,
) -> Result<(String, EventKind), EventParseError> {
    let change = fields
        .get(Field::ChangeType)
        .ok_or(EventParseError::MissingField("ChangeType"))?;
    let type_name = format!("{event}.{change}");
    Ok(match map(fields, change)? {
        Some(kind) => (type_name, kind),
        None => unknown(type_name),
    })
}

fn external_contact(
    fields: &Fields<'_>,
    change: &str,
) -> Result<Option<EventKind>, EventParseError> {
    let ids = || -> Result<(String, String), EventParseError> {
        Ok((
            fields.required(Field::UserId)?,
            fields.required(Field::ExternalUserId)?,
        ))
    };
    Ok(Some(match change {
        // A half-added contact (the customer added the rep without verification) is already
        // a relationship the rep can work with.
        "add_external_contact" | "add_half_external_contact" => {
            let (user_id, external_user_id) = ids()?;
            EventKind::ExternalContactAdded {
                user_id,
                external_user_id,
                state: fields.optional(Field::State),
                welcome_code: fields.optional(Field::WelcomeCode),
            }
        }
        "edit_external_contact" => {
            let (user_id, external_user_id) = ids()?;
            EventKind::ExternalContactEdited {
                user_id,
                external_user_id,
            }
        }
        "del_external_contact" | "del_follow_user" => {
            let (user_id, external_user_id) = ids()?;
            EventKind::ExternalContactRemoved {
                user_id,
                external_user_id,
                by_customer: change == "del_follow_user",
            }
        }
        "transfer_fail" => {
            let (user_id, external_user_id) = ids()?;
            EventKind::ExternalContactTransferFailed {
                user_id,
                external_user_id,
                reason: fields.optional(Field::FailReason),
            }
        }
        _ => return Ok(None),
    }))
}

fn contact(fields: &Fields<'_>, change: &str) -> Result<Option<EventKind>, EventParseError> {
    let user_id = || fields.required(Field::UserId);
    let id = || fields.required(Field::Id);
    Ok(Some(match change {
        "create_user" => EventKind::UserCreated {
            user_id: user_id()?,
        },
        "update_user" => EventKind::UserUpdated {
            user_id: user_id()?,
            new_user_id: fields.optional(Field::NewUserId),
        },
        "delete_user" => EventKind::UserDeleted {
            user_id: user_id()?,
        },
        "create_party" => EventKind::DepartmentCreated { id: id()? },
        "update_party" => EventKind::DepartmentUpdated { id: id()? },
        "delete_party" => EventKind::DepartmentDeleted { id: id()? },
        _ => return Ok(None),
    }))
}

fn unknown(type_name: String) -> (String, EventKind) {
    let kind = EventKind::Unknown {
        event_type: type_name.clone(),
    };
    (type_name, kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An event from `sys` in the shape of the documented samples.
    fn sys_event(event: &str, change: &str, rest: &str) -> String {
        format!(
            "<xml>\n\
             \t<ToUserName><![CDATA[ww4asffe99e54c0f4c]]></ToUserName>\n\
             \t<FromUserName><![CDATA[sys]]></FromUserName>\n\
             \t<CreateTime>1403610513</CreateTime>\n\
             \t<MsgType><![CDATA[event]]></MsgType>\n\
             \t<Event><![CDATA[{event}]]></Event>\n\
             \t<ChangeType><![CDATA[{change}]]></ChangeType>\n\
             {rest}\n\
             </xml>"
        )
    }

    fn contact_change(change: &str, rest: &str) -> String {
        sys_event(
            "change_external_contact",
            change,
            &format!(
                "\t<UserID><![CDATA[zhangsan]]></UserID>\n\
                 \t<ExternalUserID><![CDATA[woAJ2GCAAAXtWyujaWJHDDGi0mACH71w]]></ExternalUserID>\n{rest}"
            ),
        )
    }

    fn kind(xml: &str) -> EventKind {
        parse(xml).unwrap().kind
    }

    #[test]
    fn add_external_contact() {
        let xml = contact_change(
            "add_external_contact",
            "\t<State><![CDATA[展会-2026-上海]]></State>\n\t<WelcomeCode><![CDATA[WELCOMECODE]]></WelcomeCode>",
        );
        let event = parse(&xml).unwrap();
        assert_eq!(event.platform, Platform::Wecom);
        assert_eq!(event.created_at, Some(1_403_610_513));
        assert_eq!(
            event.type_name,
            "change_external_contact.add_external_contact"
        );
        assert_eq!(
            event.kind,
            EventKind::ExternalContactAdded {
                user_id: "zhangsan".into(),
                external_user_id: "woAJ2GCAAAXtWyujaWJHDDGi0mACH71w".into(),
                state: Some("展会-2026-上海".into()),
                welcome_code: Some("WELCOMECODE".into()),
            }
        );
    }

    #[test]
    fn half_added_contact_counts_as_added_but_keeps_its_name() {
        let xml = contact_change(
            "add_half_external_contact",
            "\t<State><![CDATA[teststate]]></State>",
        );
        let event = parse(&xml).unwrap();
        assert_eq!(
            event.type_name,
            "change_external_contact.add_half_external_contact"
        );
        assert_eq!(
            event.kind,
            EventKind::ExternalContactAdded {
                user_id: "zhangsan".into(),
                external_user_id: "woAJ2GCAAAXtWyujaWJHDDGi0mACH71w".into(),
                state: Some("teststate".into()),
                welcome_code: None,
            }
        );
    }

    #[test]
    fn edit_external_contact() {
        let xml = contact_change("edit_external_contact", "");
        assert_eq!(
            kind(&xml),
            EventKind::ExternalContactEdited {
                user_id: "zhangsan".into(),
                external_user_id: "woAJ2GCAAAXtWyujaWJHDDGi0mACH71w".into(),
            }
        );
    }

    #[test]
    fn removal_says_who_removed_whom() {
        let by_rep = contact_change(
            "del_external_contact",
            "\t<Source><![CDATA[DELETE_BY_TRANSFER]]></Source>",
        );
        assert_eq!(
            kind(&by_rep),
            EventKind::ExternalContactRemoved {
                user_id: "zhangsan".into(),
                external_user_id: "woAJ2GCAAAXtWyujaWJHDDGi0mACH71w".into(),
                by_customer: false,
            }
        );
        let by_customer = contact_change("del_follow_user", "");
        let event = parse(&by_customer).unwrap();
        assert_eq!(event.type_name, "change_external_contact.del_follow_user");
        assert_eq!(
            event.kind,
            EventKind::ExternalContactRemoved {
                user_id: "zhangsan".into(),
                external_user_id: "woAJ2GCAAAXtWyujaWJHDDGi0mACH71w".into(),
                by_customer: true,
            }
        );
    }

    #[test]
    fn transfer_fail() {
        let xml = contact_change(
            "transfer_fail",
            "\t<FailReason><![CDATA[customer_refused]]></FailReason>",
        );
        assert_eq!(
            kind(&xml),
            EventKind::ExternalContactTransferFailed {
                user_id: "zhangsan".into(),
                external_user_id: "woAJ2GCAAAXtWyujaWJHDDGi0mACH71w".into(),
                reason: Some("customer_refused".into()),
            }
        );
    }

    #[test]
    fn member_changes_ignore_nested_attributes() {
        // The documented create_user sample writes ChangeType without CDATA and nests ExtAttr.
        let created = "<xml>\
            <ToUserName><![CDATA[toUser]]></ToUserName>\
            <FromUserName><![CDATA[sys]]></FromUserName>\
            <CreateTime>1403610513</CreateTime>\
            <MsgType><![CDATA[event]]></MsgType>\
            <Event><![CDATA[change_contact]]></Event>\
            <ChangeType>create_user</ChangeType>\
            <UserID><![CDATA[zhangsan]]></UserID>\
            <Name><![CDATA[张三]]></Name>\
            <Department><![CDATA[1,2,3]]></Department>\
            <ExtAttr><Item><Name><![CDATA[爱好]]></Name><Type>0</Type>\
              <Text><Value><![CDATA[旅游]]></Value></Text></Item></ExtAttr>\
            <Id>999</Id>\
            </xml>";
        let event = parse(created).unwrap();
        assert_eq!(event.type_name, "change_contact.create_user");
        assert_eq!(
            event.kind,
            EventKind::UserCreated {
                user_id: "zhangsan".into()
            }
        );

        let renamed = sys_event(
            "change_contact",
            "update_user",
            "<UserID><![CDATA[zhangsan]]></UserID><NewUserID><![CDATA[zhangsan01]]></NewUserID>",
        );
        assert_eq!(
            kind(&renamed),
            EventKind::UserUpdated {
                user_id: "zhangsan".into(),
                new_user_id: Some("zhangsan01".into()),
            }
        );
        let updated = sys_event(
            "change_contact",
            "update_user",
            "<UserID><![CDATA[zhangsan]]></UserID><Position><![CDATA[产品经理]]></Position>",
        );
        assert_eq!(
            kind(&updated),
            EventKind::UserUpdated {
                user_id: "zhangsan".into(),
                new_user_id: None,
            }
        );
        let deleted = sys_event(
            "change_contact",
            "delete_user",
            "<UserID><![CDATA[zhangsan]]></UserID>",
        );
        assert_eq!(
            kind(&deleted),
            EventKind::UserDeleted {
                user_id: "zhangsan".into()
            }
        );
    }

    #[test]
    fn department_changes() {
        let body =
            "<Id>2</Id><Name><![CDATA[华东销售部]]></Name><ParentId>1</ParentId><Order>1</Order>";
        let created = parse(&sys_event("change_contact", "create_party", body)).unwrap();
        assert_eq!(created.type_name, "change_contact.create_party");
        assert_eq!(
            created.kind,
            EventKind::DepartmentCreated { id: "2".into() }
        );
        assert_eq!(
            kind(&sys_event("change_contact", "update_party", body)),
            EventKind::DepartmentUpdated { id: "2".into() }
        );
        assert_eq!(
            kind(&sys_event("change_contact", "delete_party", "<Id>2</Id>")),
            EventKind::DepartmentDeleted { id: "2".into() }
        );
    }

    #[test]
    fn template_card_event() {
        let xml = "<xml>\n\
            <ToUserName><![CDATA[ww4asffe99e54c0f4c]]></ToUserName>\n\
            <FromUserName><![CDATA[lisi]]></FromUserName>\n\
            <CreateTime>1700000000</CreateTime>\n\
            <MsgType><![CDATA[event]]></MsgType>\n\
            <Event><![CDATA[template_card_event]]></Event>\n\
            <EventKey><![CDATA[verify:approve]]></EventKey>\n\
            <TaskId><![CDATA[deal-42_v1]]></TaskId>\n\
            <CardType><![CDATA[button_interaction]]></CardType>\n\
            <ResponseCode><![CDATA[RESPONSE_CODE_1]]></ResponseCode>\n\
            <AgentID>1000002</AgentID>\n\
            <SelectedItems><SelectedItem>\
              <QuestionKey><![CDATA[q1]]></QuestionKey>\
              <OptionIds><OptionId><![CDATA[o1]]></OptionId></OptionIds>\
            </SelectedItem></SelectedItems>\n\
            </xml>";
        let event = parse(xml).unwrap();
        assert_eq!(event.type_name, "template_card_event");
        assert_eq!(event.created_at, Some(1_700_000_000));
        assert_eq!(
            event.kind,
            EventKind::CardAction {
                user_id: "lisi".into(),
                task_id: "deal-42_v1".into(),
                action_key: "verify:approve".into(),
                response_code: Some("RESPONSE_CODE_1".into()),
                card_type: Some("button_interaction".into()),
            }
        );
    }

    #[test]
    fn menu_click_and_enter_app() {
        let click = "<xml><ToUserName><![CDATA[toUser]]></ToUserName>\
            <FromUserName><![CDATA[wangwu]]></FromUserName><CreateTime>1408091189</CreateTime>\
            <MsgType><![CDATA[event]]></MsgType><Event><![CDATA[click]]></Event>\
            <EventKey><![CDATA[menu_today]]></EventKey><AgentID>1</AgentID></xml>";
        let event = parse(click).unwrap();
        assert_eq!(event.type_name, "click");
        assert_eq!(
            event.kind,
            EventKind::MenuClick {
                user_id: "wangwu".into(),
                key: "menu_today".into()
            }
        );
        // enter_agent carries an empty EventKey.
        let enter = "<xml><ToUserName><![CDATA[toUser]]></ToUserName>\
            <FromUserName><![CDATA[wangwu]]></FromUserName><CreateTime>1408091189</CreateTime>\
            <MsgType><![CDATA[event]]></MsgType><Event><![CDATA[enter_agent]]></Event>\
            <EventKey><![CDATA[]]></EventKey><AgentID>1</AgentID></xml>";
        let event = parse(enter).unwrap();
        assert_eq!(event.type_name, "enter_agent");
        assert_eq!(
            event.kind,
            EventKind::EnterApp {
                user_id: "wangwu".into()
            }
        );
    }

    fn message(msg_type: &str, rest: &str) -> String {
        format!(
            "<xml><ToUserName><![CDATA[toUser]]></ToUserName>\
             <FromUserName><![CDATA[zhaoliu]]></FromUserName>\
             <CreateTime>1348831860</CreateTime>\
             <MsgType><![CDATA[{msg_type}]]></MsgType>{rest}\
             <MsgId>1234567890123456</MsgId><AgentID>1</AgentID></xml>"
        )
    }

    #[test]
    fn messages() {
        let text = parse(&message(
            "text",
            "<Content><![CDATA[客户已确认报价，请安排 <演示>]]></Content>",
        ))
        .unwrap();
        assert_eq!(text.type_name, "text");
        assert_eq!(text.created_at, Some(1_348_831_860));
        assert_eq!(
            text.kind,
            EventKind::Message {
                user_id: "zhaoliu".into(),
                msg_id: "1234567890123456".into(),
                msg_type: "text".into(),
                text: Some("客户已确认报价，请安排 <演示>".into()),
            }
        );
        let image = parse(&message(
            "image",
            "<PicUrl><![CDATA[https://example.com/a.png]]></PicUrl><MediaId><![CDATA[m1]]></MediaId>",
        ))
        .unwrap();
        assert_eq!(image.type_name, "image");
        assert_eq!(
            image.kind,
            EventKind::Message {
                user_id: "zhaoliu".into(),
                msg_id: "1234567890123456".into(),
                msg_type: "image".into(),
                text: None,
            }
        );
        for msg_type in ["voice", "video", "file", "location", "link"] {
            let event = parse(&message(msg_type, "")).unwrap();
            assert_eq!(event.type_name, msg_type);
            assert!(matches!(event.kind, EventKind::Message { text: None, .. }));
        }
    }

    #[test]
    fn cdata_and_plain_text_read_the_same() {
        let plain = "<xml><ToUserName>ww1</ToUserName><FromUserName>sys</FromUserName>\
            <CreateTime>1403610513</CreateTime><MsgType>event</MsgType>\
            <Event>change_external_contact</Event><ChangeType>add_external_contact</ChangeType>\
            <UserID>zhangsan</UserID><ExternalUserID>wmAAA</ExternalUserID>\
            <State>a&amp;b</State></xml>";
        let cdata = "<xml><ToUserName><![CDATA[ww1]]></ToUserName><FromUserName><![CDATA[sys]]></FromUserName>\
            <CreateTime>1403610513</CreateTime><MsgType><![CDATA[event]]></MsgType>\
            <Event><![CDATA[change_external_contact]]></Event><ChangeType><![CDATA[add_external_contact]]></ChangeType>\
            <UserID><![CDATA[zhangsan]]></UserID><ExternalUserID><![CDATA[wmAAA]]></ExternalUserID>\
            <State><![CDATA[a&b]]></State></xml>";
        assert_eq!(parse(plain).unwrap(), parse(cdata).unwrap());
    }

    #[test]
    fn escapes_are_unescaped_but_cdata_is_literal() {
        let plain = message(
            "text",
            "<Content>报价 &lt;10万&gt; &amp; &quot;含税&quot; &apos;ok&apos; &#x4E2D;&#25991;</Content>",
        );
        let EventKind::Message { text, .. } = kind(&plain) else {
            panic!("not a message");
        };
        assert_eq!(text.as_deref(), Some("报价 <10万> & \"含税\" 'ok' 中文"));

        let cdata = message("text", "<Content><![CDATA[a &amp; b]]></Content>");
        let EventKind::Message { text, .. } = kind(&cdata) else {
            panic!("not a message");
        };
        assert_eq!(text.as_deref(), Some("a &amp; b"));

        let mixed = message("text", "<Content>a &amp; <![CDATA[<b>]]></Content>");
        let EventKind::Message { text, .. } = kind(&mixed) else {
            panic!("not a message");
        };
        assert_eq!(text.as_deref(), Some("a & <b>"));
    }

    #[test]
    fn unknown_types_are_kept_not_refused() {
        let subscribe = "<xml><ToUserName><![CDATA[toUser]]></ToUserName>\
            <FromUserName><![CDATA[UserID]]></FromUserName><CreateTime>1348831860</CreateTime>\
            <MsgType><![CDATA[event]]></MsgType><Event><![CDATA[subscribe]]></Event>\
            <AgentID>1</AgentID></xml>";
        let event = parse(subscribe).unwrap();
        assert_eq!(event.type_name, "subscribe");
        assert_eq!(
            event.kind,
            EventKind::Unknown {
                event_type: "subscribe".into()
            }
        );

        let audit = contact_change(
            "msg_audit_approved",
            "<WelcomeCode><![CDATA[WELCOMECODE]]></WelcomeCode>",
        );
        let event = parse(&audit).unwrap();
        assert_eq!(
            event.type_name,
            "change_external_contact.msg_audit_approved"
        );
        assert_eq!(
            event.kind,
            EventKind::Unknown {
                event_type: "change_external_contact.msg_audit_approved".into()
            }
        );

        let tag = sys_event("change_contact", "update_tag", "<TagId>1</TagId>");
        assert_eq!(parse(&tag).unwrap().type_name, "change_contact.update_tag");

        let menu = "<xml><FromUserName><![CDATA[lisi]]></FromUserName>\
            <MsgType><![CDATA[event]]></MsgType><Event><![CDATA[template_card_menu_event]]></Event>\
            <EventKey><![CDATA[k]]></EventKey><TaskId><![CDATA[t]]></TaskId></xml>";
        assert_eq!(
            kind(menu),
            EventKind::Unknown {
                event_type: "template_card_menu_event".into()
            }
        );

        let shortvideo = "<xml><FromUserName><![CDATA[lisi]]></FromUserName>\
            <MsgType><![CDATA[shortvideo]]></MsgType></xml>";
        let event = parse(shortvideo).unwrap();
        assert_eq!(event.type_name, "shortvideo");
        assert_eq!(event.created_at, None);
    }

    fn refused(xml: &str) -> EventParseError {
        parse(xml).expect_err("should be refused")
    }

    #[test]
    fn doctype_is_refused() {
        let xxe = "<?xml version=\"1.0\"?>\n\
            <!DOCTYPE xml [<!ENTITY xxe SYSTEM \"file:///etc/passwd\">]>\n\
            <xml><MsgType>text</MsgType><FromUserName>a</FromUserName><MsgId>1</MsgId>\
            <Content>&xxe;</Content></xml>";
        assert_eq!(refused(xxe), EventParseError::DtdOrEntity("DOCTYPE".into()));
        let plain = "<!DOCTYPE xml><xml><MsgType>text</MsgType></xml>";
        assert!(matches!(refused(plain), EventParseError::DtdOrEntity(_)));
        let unclosed = "<!DOCTYPE xml [<!ENTITY a \"b\">";
        assert!(matches!(refused(unclosed), EventParseError::DtdOrEntity(_)));
    }

    #[test]
    fn entity_declaration_is_refused() {
        let xml = "<!ENTITY xxe SYSTEM \"file:///etc/passwd\"><xml><MsgType>text</MsgType></xml>";
        assert!(matches!(refused(xml), EventParseError::DtdOrEntity(_)));
        let inside = "<xml><!ENTITY lol \"lol\"><MsgType>text</MsgType></xml>";
        assert!(matches!(refused(inside), EventParseError::DtdOrEntity(_)));
    }

    #[test]
    fn undeclared_entities_are_refused() {
        let in_text = message("text", "<Content>&xxe;</Content>");
        assert_eq!(
            refused(&in_text),
            EventParseError::DtdOrEntity("entity &xxe;".into())
        );
        // Also where the mapping never looks: an unknown element and an attribute.
        let in_other = message("text", "<Other>&lol9;</Other>");
        assert!(matches!(
            refused(&in_other),
            EventParseError::DtdOrEntity(_)
        ));
        let in_attribute = "<xml a=\"&xxe;\"><MsgType>text</MsgType></xml>";
        assert!(matches!(
            refused(in_attribute),
            EventParseError::DtdOrEntity(_)
        ));
    }

    #[test]
    fn predefined_entities_are_accepted() {
        let xml = message("text", "<Content>Q&amp;A</Content>");
        let EventKind::Message { text, .. } = kind(&xml) else {
            panic!("not a message");
        };
        assert_eq!(text.as_deref(), Some("Q&A"));
    }

    #[test]
    fn malformed_xml_is_refused() {
        for xml in [
            "",
            "   ",
            "not xml at all",
            "<xml><MsgType>text</MsgType>",
            "<xml><MsgType>text</Event></xml>",
            "<xml><MsgType>text</MsgType></xml></xml>",
            "<xml><MsgType><![CDATA[text]]></MsgType></xml><xml></xml>",
            "<xml><MsgType>text</MsgType></xml>trailing",
            "<xml><MsgType><![CDATA[text]></MsgType></xml>",
            "<xml><Content>a & b</Content><MsgType>text</MsgType></xml>",
            "<xml><MsgType a=\"1\" a=\"2\">text</MsgType></xml>",
            "<xml",
        ] {
            assert!(
                matches!(refused(xml), EventParseError::Malformed(_)),
                "{xml:?} gave {:?}",
                parse(xml)
            );
        }
    }

    #[test]
    fn wrong_root_is_refused() {
        assert_eq!(
            refused("<root><MsgType>text</MsgType></root>"),
            EventParseError::WrongRoot("root".into())
        );
        assert_eq!(
            refused("<XML><MsgType>text</MsgType></XML>"),
            EventParseError::WrongRoot("XML".into())
        );
    }

    #[test]
    fn missing_fields_are_refused() {
        let xml = sys_event(
            "change_external_contact",
            "add_external_contact",
            "<UserID><![CDATA[zhangsan]]></UserID><State><![CDATA[s]]></State>",
        );
        assert_eq!(
            refused(&xml),
            EventParseError::MissingField("ExternalUserID")
        );
        let empty = contact_change("del_follow_user", "").replace("zhangsan", "");
        assert_eq!(refused(&empty), EventParseError::MissingField("UserID"));
        let no_task = "<xml><FromUserName>lisi</FromUserName><MsgType>event</MsgType>\
            <Event>template_card_event</Event><EventKey>k</EventKey></xml>";
        assert_eq!(refused(no_task), EventParseError::MissingField("TaskId"));
        let no_msg_id = "<xml><FromUserName>lisi</FromUserName><MsgType>text</MsgType>\
            <Content>hi</Content></xml>";
        assert_eq!(refused(no_msg_id), EventParseError::MissingField("MsgId"));
        let no_change = "<xml><FromUserName>sys</FromUserName><MsgType>event</MsgType>\
            <Event>change_contact</Event><Id>2</Id></xml>";
        assert_eq!(
            refused(no_change),
            EventParseError::MissingField("ChangeType")
        );
        assert_eq!(
            refused("<xml><FromUserName>a</FromUserName></xml>"),
            EventParseError::MissingField("MsgType")
        );
        assert_eq!(refused("<xml/>"), EventParseError::MissingField("MsgType"));
        assert_eq!(
            refused("<xml><MsgType>event</MsgType></xml>"),
            EventParseError::MissingField("Event")
        );
    }

    #[test]
    fn repeated_or_invalid_fields_are_refused() {
        let twice = contact_change("add_external_contact", "<UserID><![CDATA[lisi]]></UserID>");
        assert_eq!(refused(&twice), EventParseError::DuplicateField("UserID"));
        let bad_time = message("text", "").replace("1348831860", "yesterday");
        assert_eq!(
            refused(&bad_time),
            EventParseError::InvalidField("CreateTime")
        );
    }

    #[test]
    fn size_limit() {
        let frame = message("text", "<Content><![CDATA[]]></Content>");
        let at_limit = frame.replace(
            "<![CDATA[]]>",
            &format!("<![CDATA[{}]]>", "x".repeat(MAX_BODY_BYTES - frame.len())),
        );
        assert_eq!(at_limit.len(), MAX_BODY_BYTES);
        assert!(parse(&at_limit).is_ok());
        let over = at_limit.replacen('x', "xx", 1);
        assert_eq!(
            refused(&over),
            EventParseError::TooLarge(MAX_BODY_BYTES + 1)
        );
    }

    #[test]
    fn dedupe_keys() {
        // Two customers added by the same rep in the same second: same sender, same time.
        let first = contact_change("add_external_contact", "")
            .replace("woAJ2GCAAAXtWyujaWJHDDGi0mACH71w", "wmCustomerA");
        let second = contact_change("add_external_contact", "")
            .replace("woAJ2GCAAAXtWyujaWJHDDGi0mACH71w", "wmCustomerB");
        let key_first = dedupe_key(&parse(&first).unwrap(), &first);
        let key_second = dedupe_key(&parse(&second).unwrap(), &second);
        assert_ne!(key_first, key_second);
        assert!(key_first.starts_with("sha256:"));
        assert_eq!(key_first.len(), "sha256:".len() + 64);
        // A retry of the same event carries the same plaintext.
        assert_eq!(dedupe_key(&parse(&first).unwrap(), &first), key_first);

        let text = message("text", "<Content>你好</Content>");
        let key = dedupe_key(&parse(&text).unwrap(), &text);
        assert_eq!(key, "msg:1234567890123456");
        assert_eq!(dedupe_key(&parse(&text).unwrap(), &text), key);
    }

    /// Checks the parse budget (about 1–2 µs for 1 KB). Run with
    /// `cargo test --release --lib wecom::events -- --ignored --nocapture`.
    #[test]
    #[ignore = "timing; meaningful only in release builds"]
    fn parse_speed() {
        let xml = "<xml>\n\
            <ToUserName><![CDATA[ww4asffe99e54c0f4c]]></ToUserName>\n\
            <FromUserName><![CDATA[lisi]]></FromUserName>\n\
            <CreateTime>1700000000</CreateTime>\n\
            <MsgType><![CDATA[event]]></MsgType>\n\
            <Event><![CDATA[template_card_event]]></Event>\n\
            <EventKey><![CDATA[verify:approve:0123456789abcdef0123456789abcdef]]></EventKey>\n\
            <TaskId><![CDATA[deal-0123456789abcdef0123456789abcdef-v1]]></TaskId>\n\
            <CardType><![CDATA[button_interaction]]></CardType>\n\
            <ResponseCode><![CDATA[RESPONSE_CODE_0123456789abcdef0123456789abcdef0123456789abcdef]]></ResponseCode>\n\
            <AgentID>1000002</AgentID>\n\
            <SelectedItems><SelectedItem><QuestionKey><![CDATA[question_key_1]]></QuestionKey>\
            <OptionIds><OptionId><![CDATA[option_1]]></OptionId><OptionId><![CDATA[option_2]]></OptionId>\
            </OptionIds></SelectedItem><SelectedItem><QuestionKey><![CDATA[question_key_2]]></QuestionKey>\
            <OptionIds><OptionId><![CDATA[option_3]]></OptionId></OptionIds></SelectedItem>\
            </SelectedItems>\n\
            <Content><![CDATA[padding padding padding padding padding padding padding padding padding]]></Content>\n\
            </xml>";
        let rounds = 200_000u32;
        let started = std::time::Instant::now();
        for _ in 0..rounds {
            std::hint::black_box(parse(std::hint::black_box(xml)).unwrap());
        }
        let per_parse = started.elapsed() / rounds;
        println!("{} bytes: {per_parse:?} per parse", xml.len());
        if !cfg!(debug_assertions) {
            assert!(per_parse < std::time::Duration::from_micros(5));
        }
    }
}
