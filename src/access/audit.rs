//! The audit log: who did what to which object. Written in the same transaction as the
//! change it describes, so an audited change cannot exist without its entry.
//!
//! Entries are hash-chained per organisation in batches, off the write path ([`seal`]),
//! checked by [`verify`] (`closeloop audit verify`) and searched by [`search`]
//! (`GET /api/v1/audit`).

use serde_json::Value;
use sha2::{Digest, Sha256};
use sqlx::Row;

use crate::db::{new_id, Db, Tx};

pub struct AuditEntry<'a> {
    pub org_id: Option<&'a str>,
    pub actor_kind: &'a str,
    pub actor_id: Option<&'a str>,
    pub action: &'a str,
    pub target_kind: Option<&'a str>,
    pub target_id: Option<&'a str>,
    pub detail: Value,
}

tokio::task_local! {
    /// The client IP of the HTTP request being served (set by the HTTP layer for web
    /// sessions and API keys; platform callbacks, jobs and the command line have none).
    pub static CLIENT_IP: Option<String>;
}

/// The IP an entry by `actor_kind` records: a member's or an API key's request only.
fn client_ip(actor_kind: &str) -> Option<String> {
    if !matches!(actor_kind, "user" | "api_key") {
        return None;
    }
    CLIENT_IP.try_with(Clone::clone).ok().flatten()
}

pub async fn record(tx: &mut Tx, at_ms: i64, e: AuditEntry<'_>) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO audit_log (id, org_id, at, actor_kind, actor_id, action, target_kind, target_id, detail, \
         client_ip) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(new_id())
    .bind(e.org_id)
    .bind(at_ms)
    .bind(e.actor_kind)
    .bind(e.actor_id)
    .bind(e.action)
    .bind(e.target_kind)
    .bind(e.target_id)
    .bind(e.detail.to_string())
    .bind(client_ip(e.actor_kind))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

// ----------------------------------------------------------------------------------------
// The hash chain

/// How much older than the sealed head (by the time in its UUIDv7 id, taken when the
/// writer recorded it) an unsealed entry may be and still be sealed as a late commit. An
/// older one is backdated: the sealer leaves it unsealed and `audit verify` reports it.
pub const LATE_COMMIT_GRACE_MS: i64 = 10 * 60 * 1000;

/// Entries sealed per transaction.
const SEAL_BATCH: i64 = 2000;

/// The `prev_hash` of an organisation's first entry.
pub fn genesis(org_id: &str) -> String {
    format!("closeloop-audit-genesis:{org_id}")
}

/// One entry as the chain covers it.
#[derive(Debug, Clone)]
pub struct ChainRow {
    pub id: String,
    pub org_id: String,
    pub at: i64,
    pub actor_kind: String,
    pub actor_id: Option<String>,
    pub action: String,
    pub target_kind: Option<String>,
    pub target_id: Option<String>,
    pub detail: String,
    pub client_ip: Option<String>,
    pub seq: Option<i64>,
    pub prev_hash: Option<String>,
    pub hash: Option<String>,
}

const CHAIN_COLUMNS: &str = "id, org_id, at, actor_kind, actor_id, action, target_kind, \
    target_id, detail, client_ip, seq, prev_hash, hash";

fn chain_row(r: &sqlx::any::AnyRow) -> ChainRow {
    ChainRow {
        id: r.get("id"),
        org_id: r.get("org_id"),
        at: r.get("at"),
        actor_kind: r.get("actor_kind"),
        actor_id: r.get("actor_id"),
        action: r.get("action"),
        target_kind: r.get("target_kind"),
        target_id: r.get("target_id"),
        detail: r.get("detail"),
        client_ip: r.get("client_ip"),
        seq: r.get("seq"),
        prev_hash: r.get("prev_hash"),
        hash: r.get("hash"),
    }
}

/// The hex SHA-256 of an entry at `seq` after `prev_hash`: over a JSON array of the
/// sequence, the previous hash and every column of the entry (`client_ip` last), in a
/// fixed order.
pub fn entry_hash(seq: i64, prev_hash: &str, e: &ChainRow) -> String {
    let canonical = serde_json::json!([
        seq,
        prev_hash,
        e.id,
        e.org_id,
        e.at,
        e.actor_kind,
        e.actor_id,
        e.action,
        e.target_kind,
        e.target_id,
        e.detail,
        e.client_ip,
    ]);
    hex::encode(Sha256::digest(canonical.to_string().as_bytes()))
}

/// When the entry was recorded, from its UUIDv7 id (its `at` when the id is not one).
fn recorded_ms(e: &ChainRow) -> i64 {
    uuid::Uuid::parse_str(&e.id)
        .ok()
        .and_then(|u| u.get_timestamp())
        .map(|t| {
            let (s, n) = t.to_unix();
            (s as i64) * 1000 + i64::from(n / 1_000_000)
        })
        .unwrap_or(e.at)
}

/// The newest sealed entry of an organisation: what gets anchored.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct Head {
    /// 0 before the first entry is sealed.
    pub seq: i64,
    pub hash: String,
}

/// What one sealing pass did.
#[derive(Debug, Clone)]
pub struct Sealed {
    pub sealed: usize,
    pub head: Head,
    /// Unsealed entries older than the head by more than [`LATE_COMMIT_GRACE_MS`]: left
    /// unsealed, as inserted after the fact.
    pub backdated: Vec<String>,
    /// More entries wait: run again.
    pub more: bool,
}

/// Seals (part of) the organisation's unsealed entries inside `tx`, in id order: ids are
/// UUIDv7, taken when the writer recorded the entry, while `at` is the writer's `now`,
/// which a long run (an import) keeps from its start. The organisation's
/// `audit_heads` row is updated first, so a second sealer (another replica) waits for
/// this transaction and then continues from the head it left.
pub async fn seal_in(tx: &mut Tx, org_id: &str, now_ms: i64) -> Result<Sealed, sqlx::Error> {
    sqlx::query(
        "INSERT INTO audit_heads (org_id, seq, hash, at, sealed_at) VALUES ($1, 0, $2, 0, 0) \
         ON CONFLICT (org_id) DO NOTHING",
    )
    .bind(org_id)
    .bind(genesis(org_id))
    .execute(&mut **tx)
    .await?;
    sqlx::query("UPDATE audit_heads SET sealed_at = $2 WHERE org_id = $1")
        .bind(org_id)
        .bind(now_ms)
        .execute(&mut **tx)
        .await?;
    let head = sqlx::query("SELECT seq, hash, at FROM audit_heads WHERE org_id = $1")
        .bind(org_id)
        .fetch_one(&mut **tx)
        .await?;
    let (mut seq, mut hash, mut newest): (i64, String, i64) =
        (head.get("seq"), head.get("hash"), head.get("at"));
    let rows = sqlx::query(&format!(
        "SELECT {CHAIN_COLUMNS} FROM audit_log WHERE org_id = $1 AND seq IS NULL \
         ORDER BY id LIMIT $2"
    ))
    .bind(org_id)
    .bind(SEAL_BATCH)
    .fetch_all(&mut **tx)
    .await?;
    let more = rows.len() as i64 == SEAL_BATCH;
    let mut sealed = 0;
    let mut backdated = Vec::new();
    for r in rows.iter().map(chain_row) {
        let recorded = recorded_ms(&r);
        // The first pass seals the history written before the chain existed.
        if seq > 0 && recorded < newest - LATE_COMMIT_GRACE_MS {
            backdated.push(r.id);
            continue;
        }
        let next = seq + 1;
        let h = entry_hash(next, &hash, &r);
        sqlx::query(
            "UPDATE audit_log SET seq = $1, prev_hash = $2, hash = $3 WHERE id = $4 AND seq IS NULL",
        )
        .bind(next)
        .bind(&hash)
        .bind(&h)
        .bind(&r.id)
        .execute(&mut **tx)
        .await?;
        seq = next;
        hash = h;
        newest = newest.max(recorded);
        sealed += 1;
    }
    sqlx::query("UPDATE audit_heads SET seq = $2, hash = $3, at = $4 WHERE org_id = $1")
        .bind(org_id)
        .bind(seq)
        .bind(&hash)
        .bind(newest)
        .execute(&mut **tx)
        .await?;
    Ok(Sealed {
        sealed,
        head: Head { seq, hash },
        backdated,
        more: more && sealed > 0,
    })
}

/// Seals every unsealed entry of the organisation, in transactions of their own.
pub async fn seal(db: &Db, org_id: &str, now_ms: i64) -> Result<Sealed, sqlx::Error> {
    let mut total = 0;
    loop {
        let mut tx = db.begin().await?;
        let mut s = seal_in(&mut tx, org_id, now_ms).await?;
        tx.commit().await?;
        total += s.sealed;
        if !s.more {
            s.sealed = total;
            return Ok(s);
        }
    }
}

/// The first thing wrong with a chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broken {
    /// The entry named: the changed one, the first after a gap, the inserted one.
    pub id: Option<String>,
    pub seq: Option<i64>,
    pub what: String,
}

impl std::fmt::Display for Broken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.id, self.seq) {
            (Some(id), Some(seq)) => write!(f, "entry {id} (seq {seq}): {}", self.what),
            (Some(id), None) => write!(f, "entry {id} (unsealed): {}", self.what),
            _ => write!(f, "{}", self.what),
        }
    }
}

/// A verified chain.
#[derive(Debug, Clone)]
pub struct Verified {
    pub entries: i64,
    pub head: Head,
}

/// Seals, then walks the organisation's chain from its first entry and recomputes every
/// hash. With `anchor`, the anchored hash must be that of an entry of the intact chain.
pub async fn verify(
    db: &Db,
    org_id: &str,
    now_ms: i64,
    anchor: Option<&str>,
) -> Result<Result<Verified, Broken>, sqlx::Error> {
    let sealed = seal(db, org_id, now_ms).await?;
    if let Some(id) = sealed.backdated.first() {
        return Ok(Err(Broken {
            id: Some(id.clone()),
            seq: None,
            what: "inserted: an unsealed entry recorded before sealed ones".into(),
        }));
    }
    let rows = sqlx::query(&format!(
        "SELECT {CHAIN_COLUMNS} FROM audit_log WHERE org_id = $1 AND seq IS NOT NULL ORDER BY seq, id"
    ))
    .bind(org_id)
    .fetch_all(&db.pool)
    .await?;
    let recorded_head = sqlx::query("SELECT seq FROM audit_heads WHERE org_id = $1")
        .bind(org_id)
        .fetch_optional(&db.pool)
        .await?
        .map_or(0, |r| r.get::<i64, _>("seq"));
    let mut prev = genesis(org_id);
    let mut last = 0i64;
    let mut anchored = false;
    for r in rows.iter().map(chain_row) {
        let seq = r.seq.unwrap_or_default();
        let named = |what: String| Broken {
            id: Some(r.id.clone()),
            seq: Some(seq),
            what,
        };
        if seq == last {
            return Ok(Err(named(format!(
                "inserted: a second entry with seq {seq}"
            ))));
        }
        if seq != last + 1 {
            let what = if seq == last + 2 {
                format!(
                    "deleted: the entry with seq {} before it is missing",
                    last + 1
                )
            } else {
                format!(
                    "deleted: the entries with seq {} to {} before it are missing",
                    last + 1,
                    seq - 1
                )
            };
            return Ok(Err(named(what)));
        }
        if r.prev_hash.as_deref() != Some(prev.as_str()) {
            return Ok(Err(named(
                "inserted or reordered: its prev_hash is not the previous entry's hash".into(),
            )));
        }
        let h = entry_hash(seq, &prev, &r);
        if r.hash.as_deref() != Some(h.as_str()) {
            return Ok(Err(named(
                "changed: its content does not match its hash".into(),
            )));
        }
        if anchor == Some(h.as_str()) {
            anchored = true;
        }
        prev = h;
        last = seq;
    }
    if recorded_head > last {
        return Ok(Err(Broken {
            id: None,
            seq: Some(last + 1),
            what: format!(
                "deleted: the chain ends at seq {last} but the sealer's head is seq {recorded_head} (the entries from seq {} on are missing)",
                last + 1
            ),
        }));
    }
    if let Some(a) = anchor {
        if !anchored {
            return Ok(Err(Broken {
                id: None,
                seq: None,
                what: format!(
                    "the anchor {a} is not the hash of any entry of the chain (head seq {last}): entries up to the anchor were deleted or rewritten"
                ),
            }));
        }
    }
    Ok(Ok(Verified {
        entries: rows.len() as i64,
        head: Head {
            seq: last,
            hash: prev,
        },
    }))
}

/// Where an organisation's chain stands, read without sealing (the audit page's line).
#[derive(Debug, Clone)]
pub struct ChainStatus {
    pub head: Head,
    /// When the sealer last ran; `None` before its first run.
    pub sealed_at: Option<i64>,
    /// Entries waiting for the next sealing pass.
    pub unsealed: i64,
}

pub async fn status(db: &Db, org_id: &str) -> Result<ChainStatus, sqlx::Error> {
    let head = sqlx::query("SELECT seq, hash, sealed_at FROM audit_heads WHERE org_id = $1")
        .bind(org_id)
        .fetch_optional(&db.pool)
        .await?;
    let unsealed = sqlx::query(
        "SELECT CAST(COUNT(*) AS BIGINT) AS n FROM audit_log WHERE org_id = $1 AND seq IS NULL",
    )
    .bind(org_id)
    .fetch_one(&db.pool)
    .await?
    .get("n");
    Ok(match head {
        Some(r) => ChainStatus {
            head: Head {
                seq: r.get("seq"),
                hash: r.get("hash"),
            },
            sealed_at: Some(r.get("sealed_at")),
            unsealed,
        },
        None => ChainStatus {
            head: Head {
                seq: 0,
                hash: genesis(org_id),
            },
            sealed_at: None,
            unsealed,
        },
    })
}

/// The organisation's head after sealing: what to anchor.
pub async fn head(db: &Db, org_id: &str, now_ms: i64) -> Result<Head, sqlx::Error> {
    Ok(seal(db, org_id, now_ms).await?.head)
}

// ----------------------------------------------------------------------------------------
// Search

/// Which entries `GET /api/v1/audit` returns. Every filter is optional.
#[derive(Debug, Default, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditFilter {
    /// A customer id: entries about the customer (their target) or naming it in `detail`.
    pub customer: Option<String>,
    /// A member id: entries the member did.
    pub user: Option<String>,
    /// The client IP of the request that made the change (web sessions and API keys).
    pub ip: Option<String>,
    /// An action key, e.g. `customer.update`.
    pub action: Option<String>,
    /// From this time (RFC 3339) or day (`YYYY-MM-DD`, organisation time zone), inclusive.
    pub from: Option<String>,
    /// Up to this time (RFC 3339, exclusive) or through this day (`YYYY-MM-DD`).
    pub to: Option<String>,
}

/// One audit entry: ids and keys, never personal values.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct AuditItem {
    pub id: String,
    pub at: String,
    /// api_key | user | system | cli | admin
    pub actor_kind: String,
    pub actor_id: Option<String>,
    pub action: String,
    pub target_kind: Option<String>,
    pub target_id: Option<String>,
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
    /// The client IP of the web session or API key request; none for jobs, the command
    /// line and platform callbacks.
    pub client_ip: Option<String>,
    /// Its place in the organisation's hash chain; absent until sealed (within a minute).
    pub seq: Option<i64>,
    pub hash: Option<String>,
}

/// The epoch ms a `from`/`to` parameter names; a day is its start (`from`) or the start of
/// the next day (`to`) in `tz`.
fn bound(field: &str, value: &str, tz: chrono_tz::Tz, end: bool) -> crate::error::Result<i64> {
    use chrono::TimeZone;
    let v = value.trim();
    if v.len() == 10 {
        let d = crate::validate::date(field, v)?;
        let d = if end { d.succ_opt().unwrap_or(d) } else { d };
        let start = d.and_hms_opt(0, 0, 0).unwrap_or_default();
        return tz
            .from_local_datetime(&start)
            .earliest()
            .map(|t| t.timestamp_millis())
            .ok_or_else(|| crate::error::Error::invalid(format!("{field}: no such time")));
    }
    crate::validate::time(field, v).map_err(|_| {
        crate::error::Error::invalid(format!(
            "{field} 须为日期或时间 ({field} must be a date YYYY-MM-DD or an RFC 3339 time such as 2026-01-31T08:00:00+08:00)"
        ))
    })
}

/// A page of the organisation's audit entries, oldest first.
pub async fn search(
    db: &Db,
    org_id: &str,
    tz: chrono_tz::Tz,
    f: &AuditFilter,
    page: &crate::page::PageRequest,
) -> crate::error::Result<crate::page::Page<AuditItem>> {
    use crate::db::{Arg, Select};
    let mut sel = Select::org_page(org_id, page);
    if let Some(c) = f.customer.as_deref() {
        let c = crate::validate::id("customer", c)?;
        sel.and_all(
            "(target_id = {} OR detail LIKE {})",
            vec![Arg::Text(c.clone()), Arg::Text(format!("%\"{c}\"%"))],
        );
    }
    if let Some(u) = f.user.as_deref() {
        let u = crate::validate::id("user", u)?;
        sel.and("actor_id = {}", Arg::Text(u));
    }
    if let Some(ip) = f.ip.as_deref() {
        let ip: std::net::IpAddr = ip.trim().parse().map_err(|_| {
            crate::error::Error::invalid(
                "ip 须为 IP 地址 (ip must be an IPv4 or IPv6 address such as 203.0.113.7)",
            )
        })?;
        sel.and("client_ip = {}", Arg::Text(ip.to_string()));
    }
    if let Some(a) = f.action.as_deref() {
        let a = crate::validate::text("action", a, 100)?;
        sel.and("action = {}", Arg::Text(a));
    }
    if let Some(v) = f.from.as_deref() {
        sel.and("at >= {}", Arg::Int(bound("from", v, tz, false)?));
    }
    if let Some(v) = f.to.as_deref() {
        sel.and("at < {}", Arg::Int(bound("to", v, tz, true)?));
    }
    let sql = sel.sql(
        &format!("SELECT {CHAIN_COLUMNS} FROM audit_log"),
        "ORDER BY id LIMIT {limit}",
    );
    let rows = sel
        .bind(sqlx::query(&sql))
        .bind(page.limit + 1)
        .fetch_all(&db.pool)
        .await?;
    let items = rows
        .iter()
        .map(chain_row)
        .map(|r| AuditItem {
            at: crate::clock::rfc3339(r.at),
            detail: serde_json::from_str(&r.detail).unwrap_or(serde_json::Value::Null),
            id: r.id,
            actor_kind: r.actor_kind,
            actor_id: r.actor_id,
            action: r.action,
            target_kind: r.target_kind,
            target_id: r.target_id,
            client_ip: r.client_ip,
            seq: r.seq,
            hash: r.hash,
        })
        .collect();
    Ok(crate::page::Page::from_rows(items, page, |i| &i.id))
}
