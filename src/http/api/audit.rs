//! The audit log, searched. Admin keys only.

use axum::extract::State;
use axum::Json;

use crate::access::audit::{self, AuditFilter, AuditItem};
use crate::error::Result;
use crate::http::{AdminKey, ApiQuery, AppState};
use crate::page::{Page, PageParams};

#[utoipa::path(get, path = "/api/v1/audit", tag = "admin", params(PageParams, AuditFilter),
    responses((status = 200, description = "A page of audit entries, oldest first: ids and action keys, never personal values", body = Page<AuditItem>), super::ReadErrors))]
pub async fn list(
    State(s): State<AppState>,
    AdminKey(p): AdminKey,
    ApiQuery(page): ApiQuery<PageParams>,
    ApiQuery(f): ApiQuery<AuditFilter>,
) -> Result<Json<Page<AuditItem>>> {
    Ok(Json(
        audit::search(&s.db, &p.org_id, p.tz, &f, &page.validate()?).await?,
    ))
}
