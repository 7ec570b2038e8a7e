//! The tracking ledger: every sidebar tap, card click, platform event and API call that
//! matters becomes an append-only, server-timestamped tracking point.
//!
//! Writes go through one group-commit writer ([`Ledger`]): concurrent requests are
//! collected into one transaction, so one fsync acknowledges many points durably.

mod writer;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::Row;

use crate::db::{Arg, Db, Select};
use crate::error::{Error, Result};
use crate::page::{Page, PageRequest};
use crate::validate;

pub use writer::{write_in, Ledger};

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
    pub actor: String,
    pub customer: String,
    pub deal: Option<String>,
    pub action: String,
    pub payload: Value,
    pub source: Source,
    pub platform: Option<String>,
    pub client_ip: Option<String>,
    pub user_agent: Option<String>,
    pub idempotency_key: Option<String>,
    pub api_key_id: Option<String>,
    /// Effects to write with the point (not with a rule refusal).
    pub after: Option<After>,
}

impl NewPoint {
    /// A point with no request context (IP, user agent, idempotency key, API key).
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
            actor: actor.into(),
            customer: customer.into(),
            deal: None,
            action: action.into(),
            payload,
            source,
            platform: None,
            client_ip: None,
            user_agent: None,
            idempotency_key: None,
            api_key_id: None,
            after: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TrackingPoint {
    pub id: String,
    pub actor: String,
    pub customer: String,
    pub deal: Option<String>,
    pub action: String,
    /// Server time, UTC.
    pub occurred_at: String,
    /// The same instant in the organisation's time zone.
    pub occurred_at_local: String,
    pub source: String,
    pub platform: Option<String>,
    pub client_ip: Option<String>,
    pub user_agent: Option<String>,
    #[schema(value_type = Object)]
    pub payload: Value,
    /// `not_applicable`, `pending`, `verified`, `too_short`, `unverified`, …
    pub verification: String,
}

/// What `record` did: wrote a new point, or found the one an earlier request with the
/// same idempotency key wrote.
#[derive(Debug, Clone)]
pub enum Recorded {
    Created(TrackingPoint),
    Replayed(TrackingPoint),
}

pub const MAX_PAYLOAD_BYTES: usize = 16 * 1024;

/// Action prefixes closeloop writes itself (rule hits, document opens, stage moves); the
/// API and the action catalog cannot use them, so nobody can fake one.
pub const RESERVED_PREFIXES: [&str; 6] = [
    "rule.",
    "system.",
    "document.",
    "stage.",
    "deal.",
    "attestation.",
];

pub fn is_reserved(action: &str) -> bool {
    RESERVED_PREFIXES.iter().any(|p| action.starts_with(p))
}

/// Checks the caller's fields before the point is queued for writing.
pub fn check(p: &NewPoint) -> Result<()> {
    validate::id("actor", &p.actor)?;
    validate::id("customer", &p.customer)?;
    if let Some(d) = &p.deal {
        validate::id("deal", d)?;
    }
    validate::text("action", &p.action, 64)?;
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
/// This catches the common slip of pasting a phone number into a payload.
fn carries_phone_number(v: &Value) -> bool {
    match v {
        Value::String(s) => looks_like_phone(s),
        Value::Array(a) => a.iter().any(carries_phone_number),
        Value::Object(o) => o.values().any(carries_phone_number),
        _ => false,
    }
}

fn looks_like_phone(s: &str) -> bool {
    // Ids (UUIDs, hex digests) hold long digit runs that are not phone numbers.
    if uuid::Uuid::parse_str(s.trim()).is_ok() {
        return false;
    }
    // Separators inside a number (138-0013-8000, 138 0013 8000) are dropped; others stay,
    // so a number keeps its neighbours.
    let chars: Vec<char> = s.chars().collect();
    let mut compact: Vec<char> = Vec::with_capacity(chars.len());
    for (i, c) in chars.iter().enumerate() {
        let inside = matches!(c, ' ' | '-')
            && compact.last().is_some_and(|p: &char| p.is_ascii_digit())
            && chars.get(i + 1).is_some_and(|n| n.is_ascii_digit());
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
            let cn_mobile = digits.len() == 11
                && digits.starts_with('1')
                && matches!(digits.as_bytes()[1], b'3'..=b'9');
            if cn_mobile || (run.starts_with('+') && digits.len() >= 8) {
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
        "id, actor_user_id, customer_id, deal_id, action, occurred_at, source, platform, \
         client_ip, user_agent, payload, verification"
    };
}
use point_fields;

const COLUMNS: &str = concat!("SELECT ", point_fields!(), " FROM tracking_points");

fn from_row(r: &sqlx::any::AnyRow, tz: chrono_tz::Tz) -> TrackingPoint {
    let at: i64 = r.get("occurred_at");
    let payload: String = r.get("payload");
    TrackingPoint {
        id: r.get("id"),
        actor: r.get("actor_user_id"),
        customer: r.get("customer_id"),
        deal: r.get("deal_id"),
        action: r.get("action"),
        occurred_at: crate::clock::rfc3339(at),
        occurred_at_local: crate::clock::in_zone(at, tz),
        source: r.get("source"),
        platform: r.get("platform"),
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
            &serde_json::json!({"contact": "0190-abc", "n": 13800138000u64})
        ));
    }
}
