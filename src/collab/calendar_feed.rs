//! Dates that reach a person's calendar: an ICS feed per user (RFC 5545) that any
//! calendar app can subscribe to, behind a secret address (only its hash is stored).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rand::RngCore;
use sha2::{Digest, Sha256};
use sqlx::Row;

use crate::access::Actor;
use crate::db::{new_id, Db, Tx};
use crate::error::{Error, Result};

/// The job that puts an entry on the person's platform calendar too.
pub const PUSH: &str = "calendar.push";

/// Adds (or moves) the entry a request puts on `user`'s calendar, and queues its push to
/// the platform's calendar in the same transaction.
pub async fn put_entry(
    tx: &mut Tx,
    now_ms: i64,
    org_id: &str,
    user: &str,
    request: &str,
    title: &str,
    day: &str,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO calendar_entries (id, org_id, user_id, request_id, title, day, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $7) ON CONFLICT (request_id, user_id) \
         DO UPDATE SET title = excluded.title, day = excluded.day, updated_at = excluded.updated_at",
    )
    .bind(new_id())
    .bind(org_id)
    .bind(user)
    .bind(request)
    .bind(title)
    .bind(day)
    .bind(now_ms)
    .execute(&mut **tx)
    .await?;
    let id: String =
        sqlx::query("SELECT id FROM calendar_entries WHERE request_id = $1 AND user_id = $2")
            .bind(request)
            .bind(user)
            .fetch_one(&mut **tx)
            .await?
            .get("id");
    crate::jobs::enqueue(
        tx,
        now_ms,
        crate::jobs::NewJob::new(PUSH, serde_json::json!({"entry_id": id}))
            .org(org_id)
            .dedupe(format!("{PUSH}:{id}:{day}")),
    )
    .await?;
    Ok(())
}

/// Where no platform calendar is configured, a push has nothing to do.
pub struct NoPlatformCalendar;

impl crate::jobs::Handler for NoPlatformCalendar {
    fn perform<'a>(
        &'a self,
        _job: &'a crate::jobs::ClaimedJob,
    ) -> crate::jobs::BoxFuture<'a, std::result::Result<serde_json::Value, crate::jobs::JobError>>
    {
        Box::pin(async {
            Ok(
                serde_json::json!({"skipped": "no platform calendar is configured; the ICS feed has it"}),
            )
        })
    }
}

fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// A new secret feed token for `user`, replacing any earlier one (so a leaked address
/// can be revoked by making a new one). Returned once; only its hash is kept, and the
/// audit entry names the user, never the token.
pub async fn new_feed(
    db: &Db,
    now_ms: i64,
    org_id: &str,
    actor: &Actor,
    user: &str,
) -> Result<String> {
    let mut tx = db.begin().await?;
    let exists = sqlx::query("SELECT id FROM users WHERE id = $1 AND org_id = $2")
        .bind(user)
        .bind(org_id)
        .fetch_optional(&mut *tx)
        .await?;
    if exists.is_none() {
        return Err(Error::UnknownReference(format!(
            "user `{user}` does not exist"
        )));
    }
    let mut raw = [0u8; 24];
    rand::rngs::OsRng.fill_bytes(&mut raw);
    let token = URL_SAFE_NO_PAD.encode(raw);
    sqlx::query(
        "INSERT INTO calendar_feeds (user_id, token_hash, created_at) VALUES ($1, $2, $3) \
         ON CONFLICT (user_id) DO UPDATE SET token_hash = excluded.token_hash, created_at = excluded.created_at",
    )
    .bind(user)
    .bind(hash(&token))
    .bind(now_ms)
    .execute(&mut *tx)
    .await?;
    actor
        .audit(
            &mut tx,
            now_ms,
            org_id,
            "user.calendar_feed",
            ("user", user),
            serde_json::json!({}),
        )
        .await?;
    tx.commit().await?;
    Ok(token)
}

/// Text escaping for ICS values (RFC 5545 §3.3.11).
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            ';' => out.push_str("\\;"),
            ',' => out.push_str("\\,"),
            '\n' => out.push_str("\\n"),
            '\r' => {}
            c => out.push(c),
        }
    }
    out
}

/// Folds a content line at 75 octets (RFC 5545 §3.1), never inside a UTF-8 character.
fn fold(line: &str) -> String {
    let mut out = String::new();
    let mut len = 0;
    for c in line.chars() {
        let n = c.len_utf8();
        if len + n > 75 {
            out.push_str("\r\n ");
            len = 1;
        }
        out.push(c);
        len += n;
    }
    out.push_str("\r\n");
    out
}

/// The feed behind `token`: every dated entry of its user, as all-day events.
pub async fn feed(db: &Db, now_ms: i64, token: &str) -> Result<String> {
    let user = sqlx::query("SELECT user_id FROM calendar_feeds WHERE token_hash = $1")
        .bind(hash(token))
        .fetch_optional(&db.pool)
        .await?
        .ok_or(Error::NotFound { what: "calendar" })?
        .get::<String, _>("user_id");
    let rows = sqlx::query(
        "SELECT id, title, day, updated_at FROM calendar_entries WHERE user_id = $1 ORDER BY day, id",
    )
    .bind(&user)
    .fetch_all(&db.pool)
    .await?;
    let stamp = crate::clock::from_ms(now_ms)
        .format("%Y%m%dT%H%M%SZ")
        .to_string();
    let mut out = String::new();
    for l in [
        "BEGIN:VCALENDAR",
        "VERSION:2.0",
        "PRODID:-//closeloop//collaboration//ZH",
        "CALSCALE:GREGORIAN",
        "X-WR-CALNAME:closeloop 交付日程",
    ] {
        out.push_str(&fold(l));
    }
    for r in &rows {
        let day: String = r.get("day");
        let Ok(d) = chrono::NaiveDate::parse_from_str(&day, "%Y-%m-%d") else {
            continue;
        };
        let next = d.succ_opt().unwrap_or(d);
        let modified = crate::clock::from_ms(r.get("updated_at"))
            .format("%Y%m%dT%H%M%SZ")
            .to_string();
        for l in [
            "BEGIN:VEVENT".to_string(),
            format!("UID:{}@closeloop", r.get::<String, _>("id")),
            format!("DTSTAMP:{stamp}"),
            format!("LAST-MODIFIED:{modified}"),
            format!("DTSTART;VALUE=DATE:{}", d.format("%Y%m%d")),
            format!("DTEND;VALUE=DATE:{}", next.format("%Y%m%d")),
            format!("SUMMARY:{}", escape(&r.get::<String, _>("title"))),
            "END:VEVENT".to_string(),
        ] {
            out.push_str(&fold(&l));
        }
    }
    out.push_str(&fold("END:VCALENDAR"));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_fold_at_75_octets_without_splitting_characters() {
        let long = format!("SUMMARY:{}", "交付排期".repeat(20));
        let folded = fold(&long);
        for line in folded.split("\r\n").filter(|l| !l.is_empty()) {
            assert!(line.len() <= 75, "{} octets", line.len());
        }
        let unfolded = folded.replace("\r\n ", "");
        assert_eq!(unfolded.trim_end(), long);
        assert_eq!(escape("a,b;c\\d\ne"), "a\\,b\\;c\\\\d\\ne");
    }
}
