//! Organisations. One deployment serves its own (`default`), created on first start;
//! the model stays multi-organisation.

use sqlx::Row;

use crate::db::{new_id, Db};
use crate::error::{Error, Result};

pub const DEFAULT_SLUG: &str = "default";

#[derive(Debug, Clone)]
pub struct Org {
    pub id: String,
    pub slug: String,
    pub name: String,
    pub timezone: chrono_tz::Tz,
}

fn from_row(r: &sqlx::any::AnyRow) -> Result<Org> {
    let tz: String = r.get("timezone");
    Ok(Org {
        id: r.get("id"),
        slug: r.get("slug"),
        name: r.get("name"),
        timezone: tz
            .parse()
            .map_err(|_| Error::Internal(anyhow::anyhow!("stored time zone {tz} unknown")))?,
    })
}

/// Returns the deployment's own organisation, creating it on first start. Its time zone
/// follows the configuration.
pub async fn ensure_default(db: &Db, now_ms: i64, tz: chrono_tz::Tz) -> Result<Org> {
    // Two replicas may start together: the unique slug makes the second insert a no-op.
    sqlx::query(
        "INSERT INTO organisations (id, slug, name, timezone, is_default, created_at) \
         VALUES ($1, $2, $3, $4, 1, $5) ON CONFLICT (slug) DO NOTHING",
    )
    .bind(new_id())
    .bind(DEFAULT_SLUG)
    .bind("本组织")
    .bind(tz.name())
    .bind(now_ms)
    .execute(&db.pool)
    .await?;
    sqlx::query("UPDATE organisations SET timezone = $1 WHERE slug = $2 AND timezone <> $1")
        .bind(tz.name())
        .bind(DEFAULT_SLUG)
        .execute(&db.pool)
        .await?;
    by_slug(db, DEFAULT_SLUG)
        .await?
        .ok_or_else(|| Error::Internal(anyhow::anyhow!("default organisation missing")))
}

pub async fn by_slug(db: &Db, slug: &str) -> Result<Option<Org>> {
    let row = sqlx::query("SELECT id, slug, name, timezone FROM organisations WHERE slug = $1")
        .bind(slug)
        .fetch_optional(&db.pool)
        .await?;
    row.as_ref().map(from_row).transpose()
}

pub async fn by_id(db: &Db, id: &str) -> Result<Option<Org>> {
    let row = sqlx::query("SELECT id, slug, name, timezone FROM organisations WHERE id = $1")
        .bind(id)
        .fetch_optional(&db.pool)
        .await?;
    row.as_ref().map(from_row).transpose()
}

/// Every organisation, the default one first.
pub async fn all(db: &Db) -> Result<Vec<Org>> {
    let rows = sqlx::query(
        "SELECT id, slug, name, timezone FROM organisations ORDER BY is_default DESC, created_at, id",
    )
    .fetch_all(&db.pool)
    .await?;
    rows.iter().map(from_row).collect()
}

/// Creates another organisation (multi-organisation installations).
pub async fn create(
    db: &Db,
    now_ms: i64,
    slug: &str,
    name: &str,
    tz: chrono_tz::Tz,
) -> Result<Org> {
    let slug = crate::validate::text("slug", slug, 64)?;
    if !slug
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        return Err(Error::invalid("slug may hold only a-z, 0-9 and -"));
    }
    let name = crate::validate::text("name", name, 200)?;
    let id = new_id();
    let res = sqlx::query(
        "INSERT INTO organisations (id, slug, name, timezone, is_default, created_at) \
         VALUES ($1, $2, $3, $4, 0, $5)",
    )
    .bind(&id)
    .bind(&slug)
    .bind(&name)
    .bind(tz.name())
    .bind(now_ms)
    .execute(&db.pool)
    .await;
    match res {
        Ok(_) => Ok(Org {
            id,
            slug,
            name,
            timezone: tz,
        }),
        Err(e) if crate::db::is_unique_violation(&e) => {
            Err(Error::Conflict(format!("organisation `{slug}` exists")))
        }
        Err(e) => Err(e.into()),
    }
}
