//! The tracking ledger: every sidebar tap, card click, platform event and API call that
//! matters becomes an append-only, server-timestamped tracking point.
//!
//! Writes go through one group-commit writer ([`Ledger`]): concurrent requests are
//! collected into one transaction, so one fsync acknowledges many points durably.

pub mod hooks;
mod writer;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::Row;

use crate::db::{Arg, Db, Select};
use crate::error::{Error, Result};
use crate::page::{Page, PageRequest};
use crate::validate;

pub use hooks::{Deliveries, LedgerHooks};
pub use writer::{upsert_in, write_in, Ledger};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    Sidebar,
    Card,
    PlatformEvent,
    Api,
    /// Written by closeloop itself: rule hits, document opens, stage moves.
    System,
}

impl Source {
    pub const ALL: [Source; 5] = [
        Source::Sidebar,
        Source::Api,
        Source::Card,
        Source::PlatformEvent,
        Source::System,
    ];

    pub fn parse(s: &str) -> Option<Source> {
        Source::ALL.into_iter().find(|x| x.as_str() == s)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Source::Sidebar => "sidebar",
            Source::Card => "card",
            Source::PlatformEvent => "platform_event",
            Source::Api => "api",
            Source::System => "system",
        }
    }
}

/// Who made a point: a member of the organisation (`actor` names them), the customer (a
/// document opened, a contact removed by the customer), a platform (a directory change), or
/// closeloop itself (a rule hit, a stage move; `actor` names the rep it is about).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ActorKind {
    User,
    Customer,
    Platform,
    System,
}

impl ActorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ActorKind::User => "user",
            ActorKind::Customer => "customer",
            ActorKind::Platform => "platform",
            ActorKind::System => "system",
        }
    }
}

/// `<alias>source IN (...) AND <alias>actor_kind = '...'`: the SQL condition for the points
/// a rule counts as a member's own records (`alias` is `""` or a table alias with its dot).
/// Built from constants only, so nothing of a request reaches the SQL text.
pub fn counted_clause(alias: &str, sources: &[Source], actor: ActorKind) -> String {
    let sources = sources
        .iter()
        .map(|s| format!("'{}'", s.as_str()))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "{alias}source IN ({sources}) AND {alias}actor_kind = '{}'",
        actor.as_str()
    )
}

/// Domain effects written in the same transaction as a point (a document row for an
/// upload, ...), so the point and what it records commit together or not at all.
pub trait AfterWrite: Send + Sync + 'static {
    fn apply<'a>(
        &'a self,
        tx: &'a mut crate::db::Tx,
        point: &'a TrackingPoint,
    ) -> crate::jobs::BoxFuture<'a, Result<()>>;
}

#[derive(Clone)]
pub struct After(pub std::sync::Arc<dyn AfterWrite>);

impl std::fmt::Debug for After {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("After(..)")
    }
}

/// A tracking point to record; `occurred_at` is taken from the server clock on write.
#[derive(Debug, Clone)]
pub struct NewPoint {
    pub org_id: String,
    pub actor_kind: ActorKind,
    /// The member who acted (or, for a system point, the rep it is about); `None` when no
    /// member is involved.
    pub actor: Option<String>,
    /// `None` when no customer is involved (a directory change).
    pub customer: Option<String>,
    pub deal: Option<String>,
    pub action: String,
    pub payload: Value,
    pub source: Source,
    pub platform: Option<String>,
    /// The platform's own id for what happened (a callback's event id, a contact-day):
    /// unique per organisation, source and platform.
    pub external_id: Option<String>,
    pub client_ip: Option<String>,
    pub user_agent: Option<String>,
    pub idempotency_key: Option<String>,
    pub api_key_id: Option<String>,
    /// Effects to write with the point (not with a rule refusal).
    pub after: Option<After>,
}

impl NewPoint {
    /// A point with no request context (IP, user agent, idempotency key, API key). The
    /// actor is a user, or the system for [`Source::System`].
    pub fn new(
        org_id: &str,
        actor: &str,
        customer: &str,
        action: &str,
        source: Source,
        payload: Value,
    ) -> NewPoint {
        NewPoint {
            org_id: org_id.into(),
            actor_kind: match source {
                Source::System => ActorKind::System,
                _ => ActorKind::User,
            },
            actor: Some(actor.into()),
            customer: Some(customer.into()),
            deal: None,
            action: action.into(),
            payload,
            source,
            platform: None,
            external_id: None,
            client_ip: None,
            user_agent: None,
            idempotency_key: None,
            api_key_id: None,
            after: None,
        }
    }

    /// A point a platform's callback caused, keyed by the platform's own id for it.
    #[allow(clippy::too_many_arguments)]
    pub fn from_platform(
        org_id: &str,
        actor_kind: ActorKind,
        actor: Option<&str>,
        customer: Option<&str>,
        action: &str,
        source: Source,
        platform: &str,
        external_id: &str,
        payload: Value,
    ) -> NewPoint {
        NewPoint {
            actor_kind,
            actor: actor.map(str::to_string),
            customer: customer.map(str::to_string),
            platform: Some(platform.into()),
            external_id: Some(external_id.into()),
            ..NewPoint::new(org_id, "", "", action, source, payload)
        }
    }

    /// The actor's id, or "" when no member is involved.
    pub fn actor_id(&self) -> &str {
        self.actor.as_deref().unwrap_or_default()
    }

    /// The customer's id, or "" when no customer is involved.
    pub fn customer_id(&self) -> &str {
        self.customer.as_deref().unwrap_or_default()
    }
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TrackingPoint {
    pub id: String,
    /// `user`, `customer`, `platform` or `system`.
    pub actor_kind: String,
    /// The member who acted (for a system point: the rep it is about); null when none.
    pub actor: Option<String>,
    /// Null when no customer is involved.
    pub customer: Option<String>,
    pub deal: Option<String>,
    pub action: String,
    /// Server time, UTC.
    pub occurred_at: String,
    /// The same instant in the organisation's time zone.
    pub occurred_at_local: String,
    pub source: String,
    pub platform: Option<String>,
    /// The platform's own id for what happened, for points a platform caused.
    pub external_id: Option<String>,
    pub client_ip: Option<String>,
    pub user_agent: Option<String>,
    #[schema(value_type = Object)]
    pub payload: Value,
    /// `not_applicable`, `pending`, `verified`, `too_short`, `unverified`, …
    pub verification: String,
}

impl TrackingPoint {
    /// The actor's id, or "" when no member is involved.
    pub fn actor_id(&self) -> &str {
        self.actor.as_deref().unwrap_or_default()
    }

    /// The customer's id, or "" when no customer is involved.
    pub fn customer_id(&self) -> &str {
        self.customer.as_deref().unwrap_or_default()
    }
}

/// What `record` did: wrote a new point, or found the one an earlier request with the
/// same idempotency key wrote.
#[derive(Debug, Clone)]
pub enum Recorded {
    Created(TrackingPoint),
    Replayed(TrackingPoint),
}

pub const MAX_PAYLOAD_BYTES: usize = 16 * 1024;

pub use crate::rules::{is_reserved, RESERVED_PREFIXES};

/// Checks the caller's fields before the point is queued for writing.
pub fn check(p: &NewPoint) -> Result<()> {
    if let Some(actor) = &p.actor {
        validate::id("actor", actor)?;
    } else if p.actor_kind == ActorKind::User {
        return Err(Error::invalid("a user's point names its actor"));
    }
    if let Some(customer) = &p.customer {
        validate::id("customer", customer)?;
    }
    if let Some(e) = &p.external_id {
        if e.is_empty() || e.len() > 255 || e.chars().any(char::is_control) {
            return Err(Error::invalid("external id must be 1 to 255 characters"));
        }
    }
    if let Some(d) = &p.deal {
        validate::id("deal", d)?;
    }
    validate::text("action", &p.action, 64)?;
    // Checked on the name as given: `text` trims, and a stored " rule.x" would slip past
    // the reserved prefixes and read as another action than the one shown.
    if p.action
        .chars()
        .any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(Error::invalid(
            "action must not contain spaces or control characters",
        ));
    }
    if !p.payload.is_object() {
        return Err(Error::invalid("payload must be a JSON object"));
    }
    if p.payload.to_string().len() > MAX_PAYLOAD_BYTES {
        return Err(Error::invalid(format!(
            "payload must be at most {MAX_PAYLOAD_BYTES} bytes"
        )));
    }
    if carries_phone_number(&p.payload) {
        return Err(Error::invalid(
            "payload must not carry personal data such as phone numbers; reference contacts by id",
        ));
    }
    if let Some(k) = &p.idempotency_key {
        if k.is_empty() || k.len() > 255 || !k.is_ascii() {
            return Err(Error::invalid(
                "Idempotency-Key must be 1 to 255 ASCII characters",
            ));
        }
    }
    Ok(())
}

/// The ledger is append-only and never rewritten, so personal data must stay out of it.
/// This catches the common slip of pasting a phone number into a payload, wherever it sits
/// (a value, an object key, a JSON number) and however it is written.
fn carries_phone_number(v: &Value) -> bool {
    match v {
        Value::String(s) => looks_like_phone(s),
        Value::Number(n) => looks_like_phone(&number_digits(n)),
        Value::Array(a) => a.iter().any(carries_phone_number),
        Value::Object(o) => o
            .iter()
            .any(|(k, v)| looks_like_phone(k) || carries_phone_number(v)),
        _ => false,
    }
}

/// A JSON number as the digits someone typed: `13800138000.0` is the same number as
/// `13800138000`.
fn number_digits(n: &serde_json::Number) -> String {
    match n.as_f64() {
        Some(f) if n.is_f64() && f.fract() == 0.0 && f.abs() < 1e18 => format!("{f:.0}"),
        _ => n.to_string(),
    }
}

/// Full-width digits and plus (`１３８…`, `＋８６`) read as their ASCII forms.
fn fold_width(c: char) -> char {
    match c {
        '\u{FF10}'..='\u{FF19}' => char::from(b'0' + (c as u32 - 0xFF10) as u8),
        '\u{FF0B}' => '+',
        _ => c,
    }
}

/// Characters people put between the digit groups of a number: spaces (also the
/// ideographic and no-break ones), dashes of every width and dots.
fn is_digit_separator(c: char) -> bool {
    matches!(
        c,
        ' ' | '\u{00A0}' | '\u{3000}' | '-' | '\u{2010}'
            ..='\u{2015}' | '\u{FF0D}' | '.' | '\u{FF0E}' | '\u{00B7}'
    )
}

/// A digit run is a mobile number when it is `1[3-9]` and nine more digits, optionally
/// behind the country code written as `86`, `0086` or `+86`.
fn is_cn_mobile(run: &str) -> bool {
    let national = run
        .strip_prefix("+86")
        .or_else(|| run.strip_prefix("0086"))
        .or_else(|| run.strip_prefix("86").filter(|n| n.len() == 11))
        .unwrap_or(run);
    let b = national.as_bytes();
    b.len() == 11 && b[0] == b'1' && matches!(b[1], b'3'..=b'9')
}

fn looks_like_phone(s: &str) -> bool {
    // Ids (UUIDs, hex digests) hold long digit runs that are not phone numbers.
    if uuid::Uuid::parse_str(s.trim()).is_ok() {
        return false;
    }
    // Separators inside a number (138-0013-8000, 138 0013 8000, 138.0013.8000) are
    // dropped; others stay, so a number keeps its neighbours.
    let chars: Vec<char> = s.chars().map(fold_width).collect();
    let mut compact: Vec<char> = Vec::with_capacity(chars.len());
    for (i, c) in chars.iter().enumerate() {
        let inside = is_digit_separator(*c)
            && compact
                .last()
                .is_some_and(|p: &char| p.is_ascii_digit() || *p == '+')
            && chars[i + 1..]
                .iter()
                .find(|n| !is_digit_separator(**n))
                .is_some_and(char::is_ascii_digit);
        if !inside {
            compact.push(*c);
        }
    }
    let mut i = 0;
    while i < compact.len() {
        if compact[i].is_ascii_digit() || compact[i] == '+' {
            let start = i;
            i += 1;
            while i < compact.len() && compact[i].is_ascii_digit() {
                i += 1;
            }
            // A run glued to letters is part of a code or an id, not a number.
            let glued = (start > 0 && compact[start - 1].is_ascii_alphabetic())
                || (i < compact.len() && compact[i].is_ascii_alphabetic());
            if glued {
                continue;
            }
            let run: String = compact[start..i].iter().collect();
            let digits = run.trim_start_matches('+');
            if is_cn_mobile(&run) || (run.starts_with('+') && digits.len() >= 8) {
                return true;
            }
        } else {
            i += 1;
        }
    }
    false
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventFilter {
    pub customer: Option<String>,
    pub actor: Option<String>,
    pub deal: Option<String>,
    pub action: Option<String>,
    /// RFC 3339; points at or after this time.
    #[param(format = DateTime)]
    pub since: Option<String>,
    /// RFC 3339; points before this time.
    #[param(format = DateTime)]
    pub until: Option<String>,
}

macro_rules! point_fields {
    () => {
        "id, actor_kind, actor_user_id, customer_id, deal_id, action, occurred_at, source, platform, \
         external_id, client_ip, user_agent, payload, verification"
    };
}
use point_fields;

const COLUMNS: &str = concat!("SELECT ", point_fields!(), " FROM tracking_points");

fn from_row(r: &sqlx::any::AnyRow, tz: chrono_tz::Tz) -> TrackingPoint {
    let at: i64 = r.get("occurred_at");
    let payload: String = r.get("payload");
    TrackingPoint {
        id: r.get("id"),
        actor_kind: r.get("actor_kind"),
        actor: r.get("actor_user_id"),
        customer: r.get("customer_id"),
        deal: r.get("deal_id"),
        action: r.get("action"),
        occurred_at: crate::clock::rfc3339(at),
        occurred_at_local: crate::clock::in_zone(at, tz),
        source: r.get("source"),
        platform: r.get("platform"),
        external_id: r.get("external_id"),
        client_ip: r.get("client_ip"),
        user_agent: r.get("user_agent"),
        payload: serde_json::from_str(&payload).unwrap_or(Value::Null),
        verification: r.get("verification"),
    }
}

pub async fn list(
    db: &Db,
    org_id: &str,
    tz: chrono_tz::Tz,
    f: &EventFilter,
    page: &PageRequest,
) -> Result<Page<TrackingPoint>> {
    let mut sel = Select::org_page(org_id, page);
    sel.equal_each(&[
        ("customer_id", &f.customer),
        ("actor_user_id", &f.actor),
        ("deal_id", &f.deal),
        ("action", &f.action),
    ]);
    if let Some(s) = &f.since {
        sel.and("occurred_at >= {}", Arg::Int(validate::time("since", s)?));
    }
    if let Some(u) = &f.until {
        sel.and("occurred_at < {}", Arg::Int(validate::time("until", u)?));
    }
    let sql = sel.sql(COLUMNS, "ORDER BY id LIMIT {limit}");
    let rows = sel
        .bind(sqlx::query(&sql))
        .bind(page.limit + 1)
        .fetch_all(&db.pool)
        .await?;
    let points = rows.iter().map(|r| from_row(r, tz)).collect();
    Ok(Page::from_rows(points, page, |p| &p.id))
}

/// A customer's timeline: every point on the customer, in the order it happened (time,
/// then id for points of the same millisecond). The cursor holds the last point's time
/// and id. An unknown customer is not found.
pub async fn timeline(
    db: &Db,
    org_id: &str,
    tz: chrono_tz::Tz,
    customer: &str,
    page: &PageRequest,
) -> Result<Page<TrackingPoint>> {
    let known = sqlx::query("SELECT id FROM customers WHERE id = $1 AND org_id = $2")
        .bind(customer)
        .bind(org_id)
        .fetch_optional(&db.pool)
        .await?;
    if known.is_none() {
        return Err(Error::NotFound { what: "customer" });
    }
    let (after_at, after_id) = match &page.after {
        None => (i64::MIN, String::new()),
        Some(c) => {
            let bad = || Error::invalid("cursor is not one this server issued");
            let (at, id) = c.split_once(':').ok_or_else(bad)?;
            (at.parse::<i64>().map_err(|_| bad())?, id.to_string())
        }
    };
    let rows = sqlx::query(&format!(
        "{COLUMNS} WHERE org_id = $1 AND customer_id = $2 \
         AND (occurred_at > $3 OR (occurred_at = $3 AND id > $4)) \
         ORDER BY occurred_at, id LIMIT $5"
    ))
    .bind(org_id)
    .bind(customer)
    .bind(after_at)
    .bind(&after_id)
    .bind(page.limit + 1)
    .fetch_all(&db.pool)
    .await?;
    let points: Vec<(i64, TrackingPoint)> = rows
        .iter()
        .map(|r| (r.get::<i64, _>("occurred_at"), from_row(r, tz)))
        .collect();
    let page = Page::from_rows_keyed(points, page, |(at, p)| format!("{at}:{}", p.id));
    Ok(Page {
        items: page.items.into_iter().map(|(_, p)| p).collect(),
        next_cursor: page.next_cursor,
    })
}

pub async fn get(db: &Db, org_id: &str, tz: chrono_tz::Tz, id: &str) -> Result<TrackingPoint> {
    let row = sqlx::query(&format!("{COLUMNS} WHERE id = $1 AND org_id = $2"))
        .bind(id)
        .bind(org_id)
        .fetch_optional(&db.pool)
        .await?
        .ok_or(Error::NotFound {
            what: "tracking point",
        })?;
    Ok(from_row(&row, tz))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phone_numbers_in_payloads_are_spotted() {
        assert!(looks_like_phone("13800138000"));
        assert!(looks_like_phone("call 138-0013-8000 back"));
        assert!(looks_like_phone("+1 415 555 2671"));
        assert!(!looks_like_phone("order 2026112700"));
        assert!(!looks_like_phone("amount 12000000"));
        assert!(!looks_like_phone("已电话沟通"));
        assert!(!looks_like_phone("01a21b89-b2d8-70e3-bbbe-e17314142733"));
        assert!(!looks_like_phone("ref abc13800138000"));
        assert!(looks_like_phone("电话13800138000请回拨"));
        // Ids never look like numbers (about 0.06 % of UUIDv7s hold a mobile-like run).
        for _ in 0..50_000 {
            let id = crate::db::new_id();
            assert!(!looks_like_phone(&id), "{id}");
            assert!(!looks_like_phone(&format!("point {id}")), "{id}");
        }
        let v = serde_json::json!({"note": {"list": ["x", "13912345678"]}});
        assert!(carries_phone_number(&v));
        assert!(!carries_phone_number(
            &serde_json::json!({"contact": "0190-abc", "n": 2026112700u64, "amount": 12000000})
        ));
    }

    #[test]
    fn mobile_numbers_are_spotted_however_written() {
        for written in [
            "138.0013.8000",
            "138 - 0013 - 8000",
            "１３８００１３８０００",
            "１３８－００１３－８０００",
            "＋８６ １３８ ００１３ ８０００",
            "8613800138000",
            "008613800138000",
            "0086 138 0013 8000",
            "+86.138.0013.8000",
            "+86-13800138000",
            "138\u{3000}0013\u{3000}8000",
            "电话：１３８００１３８０００",
        ] {
            assert!(looks_like_phone(written), "{written:?}");
        }
        for payload in [
            serde_json::json!({"n": 13800138000u64}),
            serde_json::json!({"n": 8613800138000u64}),
            serde_json::json!({"n": 13800138000.0}),
            serde_json::json!({"list": [1, 13912345678u64]}),
            serde_json::json!({"13800138000": "called"}),
            serde_json::json!({"nested": {"１３８００１３８０００": true}}),
        ] {
            assert!(carries_phone_number(&payload), "{payload}");
        }
    }

    #[test]
    fn order_numbers_amounts_and_ids_are_not_phones() {
        for text in [
            "order 2026112700",
            "amount 12,000,000.00",
            "price 1.380",
            "2026-11-27 13:00",
            "v1.38.0",
            "10.0.0.138",
            "ref abc13800138000",
            "12800138000",
            "138001380001",
            "1380013800",
        ] {
            assert!(!looks_like_phone(text), "{text:?}");
        }
        for payload in [
            serde_json::json!({"order": 2026112700u64, "amount_fen": 1200000000u64}),
            serde_json::json!({"ms": 1764206400000u64, "ratio": 0.75}),
            serde_json::json!({"2026112700": 1}),
        ] {
            assert!(!carries_phone_number(&payload), "{payload}");
        }
    }

    fn full_width(s: &str) -> String {
        s.chars()
            .map(|c| match c {
                '0'..='9' => char::from_u32(0xFF10 + (c as u32 - '0' as u32)).unwrap(),
                '+' => '\u{FF0B}',
                '-' => '\u{FF0D}',
                other => other,
            })
            .collect()
    }

    proptest::proptest! {
        #[test]
        fn any_spelling_of_a_mobile_is_refused(
            second in 3u8..=9,
            rest in proptest::collection::vec(0u8..=9, 9),
            prefix in proptest::sample::select(vec!["", "86", "0086", "+86", "+86 ", "0086-"]),
            separator in proptest::sample::select(vec!["", " ", "-", ".", " - ", "\u{3000}"]),
            wide in proptest::bool::ANY,
            around in proptest::sample::select(vec![("", ""), ("电话", "请回拨"), ("call ", " now")]),
        ) {
            let digits: String = std::iter::once(1u8)
                .chain(std::iter::once(second))
                .chain(rest)
                .map(|d| char::from(b'0' + d))
                .collect();
            let grouped = [&digits[..3], &digits[3..7], &digits[7..]].join(separator);
            let mut written = format!("{}{prefix}{grouped}{}", around.0, around.1);
            if wide {
                written = full_width(&written);
            }
            proptest::prop_assert!(looks_like_phone(&written), "{}", written);
            let as_key = serde_json::json!({ written.clone(): 1 });
            proptest::prop_assert!(carries_phone_number(&as_key), "{}", written);
            let number: u64 = format!("{}{digits}", prefix.trim_start_matches('+').trim().trim_end_matches('-')).parse().unwrap();
            let as_number = serde_json::json!({ "n": number });
            proptest::prop_assert!(carries_phone_number(&as_number), "{}", number);
        }

        #[test]
        fn digit_runs_of_other_lengths_pass(run in "[1-9][0-9]{0,9}|[1-9][0-9]{11}|[1-9][0-9]{13}") {
            // Only 11 (bare), 13 (86) and 15 (0086) digit runs can be mobiles.
            proptest::prop_assert!(!looks_like_phone(&format!("order {run}")), "{}", run);
        }
    }

    fn point_with_action(action: &str) -> NewPoint {
        NewPoint::new(
            "org",
            &crate::db::new_id(),
            &crate::db::new_id(),
            action,
            Source::Api,
            serde_json::json!({}),
        )
    }

    #[test]
    fn action_names_with_spaces_or_control_characters_are_refused() {
        for bad in [
            " rule.repeat_limit",
            "rule.repeat_limit ",
            "已电话 沟通",
            "已电话\u{3000}沟通",
            "已电话\t沟通",
            "已电话\u{7}沟通",
        ] {
            assert!(
                matches!(check(&point_with_action(bad)), Err(Error::InvalidInput(_))),
                "{bad:?}"
            );
        }
        assert!(check(&point_with_action("已电话沟通")).is_ok());
    }
}
