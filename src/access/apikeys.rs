//! API keys are principals: an organisation and a role. The key itself is shown once;
//! only its SHA-256 is stored (keys are 192 random bits, so a fast hash is enough).

use base64::Engine as _;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::Row;

use crate::access::audit::{self, AuditEntry};
use crate::db::{new_id, Db};
use crate::error::{Error, Result};

const KEY_PREFIX: &str = "clk_";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ApiKeyRole {
    /// Everything, including administration.
    Admin,
    /// Reads and writes business data (users, customers, deals, tracking points).
    Integration,
    /// Reads only.
    ReadOnly,
}

impl ApiKeyRole {
    pub fn as_str(self) -> &'static str {
        match self {
            ApiKeyRole::Admin => "admin",
            ApiKeyRole::Integration => "integration",
            ApiKeyRole::ReadOnly => "read-only",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "admin" => Some(ApiKeyRole::Admin),
            "integration" => Some(ApiKeyRole::Integration),
            "read-only" => Some(ApiKeyRole::ReadOnly),
            _ => None,
        }
    }
}

/// What a request is allowed to do, decided by the key's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    Read,
    Write,
    Admin,
}

/// Whom a key acts for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acting {
    /// The organisation: the key's role decides what it may do.
    Organisation,
    /// A member: every request names one (`X-Closeloop-Actor` or `actor`), and that
    /// member's permissions apply — the key's role adds nothing.
    Actor,
}

impl Acting {
    pub fn as_str(self) -> &'static str {
        match self {
            Acting::Organisation => "organisation",
            Acting::Actor => "actor",
        }
    }

    pub fn parse(s: &str) -> Option<Acting> {
        match s {
            "organisation" => Some(Acting::Organisation),
            "actor" => Some(Acting::Actor),
            _ => None,
        }
    }
}

/// The authenticated caller of an API request.
#[derive(Debug, Clone)]
pub struct Principal {
    pub api_key_id: String,
    pub org_id: String,
    pub role: ApiKeyRole,
    pub acting: Acting,
    /// The organisation's time zone, for showing times.
    pub tz: chrono_tz::Tz,
}

impl Principal {
    pub fn require(&self, p: Permission) -> Result<()> {
        let allowed = matches!(
            (self.role, p),
            (ApiKeyRole::Admin, _)
                | (
                    ApiKeyRole::Integration,
                    Permission::Read | Permission::Write
                )
                | (ApiKeyRole::ReadOnly, Permission::Read)
        );
        if allowed {
            Ok(())
        } else {
            Err(Error::Forbidden(format!(
                "an API key with role `{}` may not do this",
                self.role.as_str()
            )))
        }
    }
}

pub struct NewApiKey {
    pub org_id: String,
    pub name: String,
    pub role: ApiKeyRole,
    pub expires_at_ms: Option<i64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ApiKeyInfo {
    pub id: String,
    pub org_id: String,
    pub name: String,
    pub role: String,
    pub prefix: String,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// Creates a key acting for the organisation and returns `(id, key)`; the key is not
/// recoverable afterwards.
pub async fn create(db: &Db, now_ms: i64, new: NewApiKey) -> Result<(String, String)> {
    create_acting(db, now_ms, new, Acting::Organisation).await
}

/// [`create`] with whom the key acts for.
pub async fn create_acting(
    db: &Db,
    now_ms: i64,
    new: NewApiKey,
    acting: Acting,
) -> Result<(String, String)> {
    let name = new.name.trim();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(Error::invalid("name must be 1 to 100 characters"));
    }
    if let Some(exp) = new.expires_at_ms {
        if exp <= now_ms {
            return Err(Error::invalid("expiry must be in the future"));
        }
    }
    let mut raw = [0u8; 24];
    rand::rngs::OsRng.fill_bytes(&mut raw);
    let key = format!(
        "{KEY_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
    );
    let id = new_id();
    let mut tx = db.begin().await?;
    sqlx::query(
        "INSERT INTO api_keys (id, org_id, name, role, prefix, key_hash, created_at, expires_at, acting) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(&id)
    .bind(&new.org_id)
    .bind(name)
    .bind(new.role.as_str())
    .bind(&key[..12])
    .bind(hash_key(&key))
    .bind(now_ms)
    .bind(new.expires_at_ms)
    .bind(acting.as_str())
    .execute(&mut *tx)
    .await?;
    audit::record(
        &mut tx,
        now_ms,
        AuditEntry {
            org_id: Some(&new.org_id),
            actor_kind: "cli",
            actor_id: None,
            action: "api_key.create",
            target_kind: Some("api_key"),
            target_id: Some(&id),
            detail: serde_json::json!({"name": name, "role": new.role.as_str(), "acting": acting.as_str()}),
        },
    )
    .await?;
    tx.commit().await?;
    Ok((id, key))
}

/// Revokes by id or by the key's shown prefix. Returns false when nothing matched.
pub async fn revoke(db: &Db, now_ms: i64, id_or_prefix: &str) -> Result<bool> {
    let mut tx = db.begin().await?;
    let row = sqlx::query(
        "SELECT id, org_id FROM api_keys WHERE (id = $1 OR prefix = $1) AND revoked_at IS NULL",
    )
    .bind(id_or_prefix)
    .fetch_all(&mut *tx)
    .await?;
    if row.len() > 1 {
        return Err(Error::Conflict(
            "several keys share that prefix; revoke by id".into(),
        ));
    }
    let Some(row) = row.into_iter().next() else {
        return Ok(false);
    };
    let id: String = row.get("id");
    let org_id: String = row.get("org_id");
    sqlx::query("UPDATE api_keys SET revoked_at = $1 WHERE id = $2")
        .bind(now_ms)
        .bind(&id)
        .execute(&mut *tx)
        .await?;
    audit::record(
        &mut tx,
        now_ms,
        AuditEntry {
            org_id: Some(&org_id),
            actor_kind: "cli",
            actor_id: None,
            action: "api_key.revoke",
            target_kind: Some("api_key"),
            target_id: Some(&id),
            detail: serde_json::json!({}),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(true)
}

pub async fn list(db: &Db, org_id: &str) -> Result<Vec<ApiKeyInfo>> {
    let rows = sqlx::query(
        "SELECT id, org_id, name, role, prefix, created_at, expires_at, revoked_at \
         FROM api_keys WHERE org_id = $1 ORDER BY id",
    )
    .bind(org_id)
    .fetch_all(&db.pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| ApiKeyInfo {
            id: r.get("id"),
            org_id: r.get("org_id"),
            name: r.get("name"),
            role: r.get("role"),
            prefix: r.get("prefix"),
            created_at: r.get("created_at"),
            expires_at: r.get("expires_at"),
            revoked_at: r.get("revoked_at"),
        })
        .collect())
}

/// Resolves a presented bearer key to its principal.
pub async fn authenticate(db: &Db, now_ms: i64, key: &str) -> Result<Principal> {
    let unauth = || Error::Unauthenticated("invalid API key".into());
    if !key.starts_with(KEY_PREFIX) || key.len() > 200 {
        return Err(unauth());
    }
    let row = sqlx::query(
        "SELECT k.id, k.org_id, k.role, k.acting, k.expires_at, k.revoked_at, o.timezone \
         FROM api_keys k JOIN organisations o ON o.id = k.org_id WHERE k.key_hash = $1",
    )
    .bind(hash_key(key))
    .fetch_optional(&db.pool)
    .await?
    .ok_or_else(unauth)?;
    if row.get::<Option<i64>, _>("revoked_at").is_some() {
        return Err(Error::Unauthenticated("API key has been revoked".into()));
    }
    if let Some(exp) = row.get::<Option<i64>, _>("expires_at") {
        if exp <= now_ms {
            return Err(Error::Unauthenticated("API key has expired".into()));
        }
    }
    let role: String = row.get("role");
    let tz: String = row.get("timezone");
    let acting: String = row.get("acting");
    Ok(Principal {
        acting: Acting::parse(&acting).unwrap_or(Acting::Actor),
        tz: tz.parse().unwrap_or(chrono_tz::Asia::Shanghai),
        api_key_id: row.get("id"),
        org_id: row.get("org_id"),
        role: ApiKeyRole::parse(&role).ok_or_else(|| {
            Error::Internal(anyhow::anyhow!("stored API key role {role} unknown"))
        })?,
    })
}
