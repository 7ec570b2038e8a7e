//! The access log, searched. Admin keys only.

use axum::extract::State;
use axum::Json;

use crate::access_log::{self, AccessFilter, AccessItem};
use crate::error::Result;
use crate::http::{ApiQuery, AppState, Reader};
use crate::page::{Page, PageParams};

#[utoipa::path(get, path = "/api/v1/access-log", tag = "admin", params(PageParams, AccessFilter),
    responses((status = 200, description = "A page of access log entries (who read which customer-level object, when, from where), oldest first: ids and keys, never personal values", body = Page<AccessItem>), super::ReadErrors))]
pub async fn list(
    State(s): State<AppState>,
    Reader(p): Reader,
    ApiQuery(page): ApiQuery<PageParams>,
    ApiQuery(f): ApiQuery<AccessFilter>,
) -> Result<Json<Page<AccessItem>>> {
    Ok(Json(
        access_log::search(&s.db, &p.org_id, &f, &page.validate()?).await?,
    ))
}
