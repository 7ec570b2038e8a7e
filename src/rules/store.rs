//! Rule sets in the database: versions, import, and the handle every capability reads
//! the rules in force through.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use sha2::{Digest, Sha256};
use sqlx::Row;

use super::RuleSet;
use crate::access::Actor;
use crate::db::{new_id, Db};
use crate::error::Result;

/// The rules in force, cached per organisation and re-read when a newer version exists.
/// Each use costs one indexed lookup of the latest version number, so an import by
/// another process (the CLI, another replica) takes effect on the next request.
#[derive(Clone)]
pub struct Rules {
    db: Db,
    cache: Arc<RwLock<Cache>>,
}

/// Per organisation: the version cached and its rules.
type Cache = HashMap<String, (i64, Arc<RuleSet>)>;

/// A stored version.
#[derive(Debug, Clone)]
pub struct Version {
    pub version: i64,
    pub rules: Arc<RuleSet>,
}

impl Rules {
    pub fn new(db: Db) -> Rules {
        Rules {
            db,
            cache: Arc::default(),
        }
    }

    /// The rule set in force for `org_id` (the built-in defaults, version 0, until one is
    /// imported).
    pub async fn current(&self, org_id: &str) -> Result<Arc<RuleSet>> {
        Ok(self.current_version(org_id).await?.rules)
    }

    pub async fn current_version(&self, org_id: &str) -> Result<Version> {
        let latest: i64 = sqlx::query(
            "SELECT CAST(COALESCE(MAX(version), 0) AS BIGINT) AS v FROM rule_sets WHERE org_id = $1",
        )
        .bind(org_id)
        .fetch_one(&self.db.pool)
        .await?
        .get("v");
        self.at_version(org_id, latest).await
    }

    /// The rule set `version` of `org_id` (0: the built-in one), from the cache when it
    /// holds that version. For callers that learnt the latest version in a query of their
    /// own (the ledger asks along with its reference check: one round trip less a point).
    pub async fn at_version(&self, org_id: &str, version: i64) -> Result<Version> {
        if let Some((v, r)) = self.cache.read().expect("rules cache").get(org_id) {
            if *v == version {
                return Ok(Version {
                    version: *v,
                    rules: r.clone(),
                });
            }
        }
        let rules = Arc::new(load(&self.db, org_id, version).await?);
        self.cache
            .write()
            .expect("rules cache")
            .insert(org_id.to_string(), (version, rules.clone()));
        Ok(Version { version, rules })
    }
}

/// The rule set in force for `org_id`, read on `conn` without the cache: for code that
/// holds a connection or a transaction and no [`Rules`] handle (card clicks, jobs).
pub async fn in_force(conn: &mut sqlx::AnyConnection, org_id: &str) -> Result<RuleSet> {
    let text: Option<String> = sqlx::query(
        "SELECT content FROM rule_sets WHERE org_id = $1 ORDER BY version DESC LIMIT 1",
    )
    .bind(org_id)
    .fetch_optional(&mut *conn)
    .await?
    .map(|r| r.get("content"));
    match text {
        Some(text) => RuleSet::from_toml(&text),
        None => Ok(RuleSet::default()),
    }
}

async fn load(db: &Db, org_id: &str, version: i64) -> Result<RuleSet> {
    if version == 0 {
        return Ok(RuleSet::default());
    }
    let text: String =
        sqlx::query("SELECT content FROM rule_sets WHERE org_id = $1 AND version = $2")
            .bind(org_id)
            .bind(version)
            .fetch_one(&db.pool)
            .await?
            .get("content");
    // Stored sets were checked on import; a failure here means the row was edited by hand.
    RuleSet::from_toml(&text)
}

/// What an import did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Imported {
    /// Stored as this new version.
    New(i64),
    /// Identical to the version in force; nothing stored.
    Unchanged(i64),
}

/// Checks `text` and stores it as the next version, audited in the same transaction.
pub async fn import(
    db: &Db,
    now_ms: i64,
    org_id: &str,
    actor: &Actor,
    text: &str,
) -> Result<Imported> {
    let rules = RuleSet::from_toml(text)?;
    let normalised = rules.to_toml();
    let hash = hex::encode(Sha256::digest(normalised.as_bytes()));
    let mut tx = db.begin().await?;
    let row = sqlx::query(
        "SELECT version, content_hash FROM rule_sets WHERE org_id = $1 ORDER BY version DESC LIMIT 1",
    )
    .bind(org_id)
    .fetch_optional(&mut *tx)
    .await?;
    let (latest, latest_hash) = match &row {
        Some(r) => (
            r.get::<i64, _>("version"),
            Some(r.get::<String, _>("content_hash")),
        ),
        None => (0, None),
    };
    let same_as_defaults = latest == 0 && rules == RuleSet::default();
    if latest_hash.as_deref() == Some(hash.as_str()) || same_as_defaults {
        return Ok(Imported::Unchanged(latest));
    }
    let version = latest + 1;
    sqlx::query(
        "INSERT INTO rule_sets (id, org_id, version, content, content_hash, created_at, created_by) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(new_id())
    .bind(org_id)
    .bind(version)
    .bind(&normalised)
    .bind(&hash)
    .bind(now_ms)
    .bind(actor.id.as_deref().unwrap_or(actor.kind))
    .execute(&mut *tx)
    .await?;
    actor
        .audit(
            &mut tx,
            now_ms,
            org_id,
            "rules.import",
            ("rule_set", &version.to_string()),
            serde_json::json!({"version": version, "previous": latest, "sha256": hash}),
        )
        .await?;
    tx.commit().await?;
    Ok(Imported::New(version))
}

/// Who put a stored version in force, and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provenance {
    pub version: i64,
    pub created_at_ms: i64,
    /// `cli`, an API key id, or a user id.
    pub created_by: Option<String>,
}

/// The version in force's provenance; `None` while the built-in defaults are in force.
pub async fn provenance(db: &Db, org_id: &str) -> Result<Option<Provenance>> {
    let row = sqlx::query(
        "SELECT version, created_at, created_by FROM rule_sets WHERE org_id = $1 \
         ORDER BY version DESC LIMIT 1",
    )
    .bind(org_id)
    .fetch_optional(&db.pool)
    .await?;
    Ok(row.map(|r| Provenance {
        version: r.get("version"),
        created_at_ms: r.get("created_at"),
        created_by: r.get("created_by"),
    }))
}
