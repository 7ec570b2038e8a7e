//! Reading the access log back: `GET /api/v1/access-log`.

use sqlx::Row;

use super::OBJECT_KINDS;
use crate::db::{Arg, Db, Select};
use crate::error::{Error, Result};
use crate::page::{Page, PageRequest};

/// Which entries a search returns. Every filter is optional.
#[derive(Debug, Default, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AccessFilter {
    /// Who read: a member's id or an API key's id.
    pub user: Option<String>,
    /// customer | contact | deal | request | export
    #[param(schema_with = object_kind_schema)]
    pub object_kind: Option<String>,
    /// The id of the object read (with or without `object_kind`).
    pub object_id: Option<String>,
    /// From this time (RFC 3339), inclusive.
    pub since: Option<String>,
    /// Up to this time (RFC 3339), exclusive.
    pub until: Option<String>,
}

fn object_kind_schema() -> utoipa::openapi::Object {
    crate::validate::one_of(&OBJECT_KINDS)
}

/// One read: ids and keys, never personal values.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct AccessItem {
    pub id: String,
    /// When it was read (RFC 3339, UTC).
    pub at: String,
    /// The member who read it (web pages).
    pub user_id: Option<String>,
    /// The API key that read it.
    pub api_key_id: Option<String>,
    /// customer | contact | deal | request | export
    pub object_kind: String,
    pub object_id: String,
    /// The part read when not the whole object: phone | email | amount | decision_chain |
    /// timeline.
    pub field: Option<String>,
    /// view | reveal | export | list
    pub purpose: String,
    /// The client IP of the request (as resolved behind trusted proxies).
    pub client_ip: Option<String>,
}

/// A page of the organisation's access entries, oldest first.
pub async fn search(
    db: &Db,
    org_id: &str,
    f: &AccessFilter,
    page: &PageRequest,
) -> Result<Page<AccessItem>> {
    let mut sel = Select::org_page(org_id, page);
    if let Some(u) = f.user.as_deref() {
        let u = crate::validate::id("user", u)?;
        sel.and_all(
            "(user_id = {} OR api_key_id = {})",
            vec![Arg::Text(u.clone()), Arg::Text(u)],
        );
    }
    if let Some(k) = f.object_kind.as_deref() {
        let k = k.trim();
        if !OBJECT_KINDS.contains(&k) {
            return Err(Error::invalid(format!(
                "object_kind must be one of {}",
                OBJECT_KINDS.join(", ")
            )));
        }
        sel.and("object_kind = {}", Arg::Text(k.into()));
    }
    if let Some(o) = f.object_id.as_deref() {
        let o = crate::validate::id("object_id", o)?;
        sel.and("object_id = {}", Arg::Text(o));
    }
    let since = f
        .since
        .as_deref()
        .map(|v| crate::validate::time("since", v.trim()))
        .transpose()?;
    let until = f
        .until
        .as_deref()
        .map(|v| crate::validate::time("until", v.trim()))
        .transpose()?;
    if let (Some(s), Some(u)) = (since, until) {
        if u <= s {
            return Err(Error::invalid("until must be later than since"));
        }
    }
    if let Some(s) = since {
        sel.and("at >= {}", Arg::Int(s));
    }
    if let Some(u) = until {
        sel.and("at < {}", Arg::Int(u));
    }
    let sql = sel.sql(
        "SELECT id, at, user_id, api_key_id, object_kind, object_id, field, purpose, client_ip \
         FROM access_log",
        "ORDER BY id LIMIT {limit}",
    );
    let rows = sel
        .bind(sqlx::query(&sql))
        .bind(page.limit + 1)
        .fetch_all(&db.pool)
        .await?;
    let items = rows
        .iter()
        .map(|r| AccessItem {
            id: r.get("id"),
            at: crate::clock::rfc3339(r.get("at")),
            user_id: r.get("user_id"),
            api_key_id: r.get("api_key_id"),
            object_kind: r.get("object_kind"),
            object_id: r.get("object_id"),
            field: r.get("field"),
            purpose: r.get("purpose"),
            client_ip: r.get("client_ip"),
        })
        .collect();
    Ok(Page::from_rows(items, page, |i| &i.id))
}
