//! Administration: durable jobs and webhooks. Admin keys only.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};

use crate::access::{Permission, Principal};
use crate::error::Result;
use crate::http::{ApiJson, ApiQuery, AppState};
use crate::inbox::{self, InboxFilter, InboxItem};
use crate::jobs::{self, JobFilter, JobInfo};
use crate::page::{Page, PageParams};
use crate::webhooks::{self, NewWebhook, Webhook};

#[utoipa::path(get, path = "/api/v1/jobs", tag = "admin", params(PageParams, JobFilter),
    responses((status = 200, description = "A page of durable jobs", body = Object), (status = 403, body = super::ErrorBody)))]
pub async fn list_jobs(
    State(s): State<AppState>,
    p: Principal,
    ApiQuery(page): ApiQuery<PageParams>,
    ApiQuery(f): ApiQuery<JobFilter>,
) -> Result<Json<Page<JobInfo>>> {
    p.require(Permission::Admin)?;
    Ok(Json(
        jobs::list(&s.db, Some(&p.org_id), &f, &page.validate()?).await?,
    ))
}

#[utoipa::path(post, path = "/api/v1/jobs/{id}/retry", tag = "admin",
    responses((status = 200, description = "Queued again"), (status = 404, body = super::ErrorBody), (status = 409, description = "Not dead", body = super::ErrorBody)))]
pub async fn retry_job(
    State(s): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
) -> Result<Json<Value>> {
    p.require(Permission::Admin)?;
    jobs::retry_dead(&s.db, s.clock.now_ms(), Some(&p.org_id), &id).await?;
    Ok(Json(json!({"id": id, "status": "queued"})))
}

#[utoipa::path(get, path = "/api/v1/webhooks", tag = "admin",
    responses((status = 200, body = [Webhook])))]
pub async fn list_webhooks(State(s): State<AppState>, p: Principal) -> Result<Json<Value>> {
    p.require(Permission::Admin)?;
    let items = webhooks::list(&s.db, &p.org_id).await?;
    Ok(Json(json!({"items": items, "next_cursor": null})))
}

#[utoipa::path(post, path = "/api/v1/webhooks", tag = "admin", request_body = NewWebhook,
    responses((status = 201, description = "Created; `secret` is shown this once", body = Webhook), (status = 422, body = super::ErrorBody)))]
pub async fn create_webhook(
    State(s): State<AppState>,
    p: Principal,
    ApiJson(new): ApiJson<NewWebhook>,
) -> Result<(StatusCode, Json<Webhook>)> {
    p.require(Permission::Admin)?;
    let hook = webhooks::create(
        &s.db,
        &s.cipher,
        &s.config.webhooks,
        s.clock.now_ms(),
        &p.org_id,
        &p.actor(),
        new,
    )
    .await?;
    Ok((StatusCode::CREATED, Json(hook)))
}

#[utoipa::path(delete, path = "/api/v1/webhooks/{id}", tag = "admin",
    responses((status = 204, description = "Deactivated"), (status = 404, body = super::ErrorBody)))]
pub async fn delete_webhook(
    State(s): State<AppState>,
    p: Principal,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    p.require(Permission::Admin)?;
    webhooks::deactivate(&s.db, s.clock.now_ms(), &p.org_id, &p.actor(), &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/api/v1/platform-events", tag = "admin", params(PageParams, InboxFilter),
    responses((status = 200, description = "A page of received platform callbacks, oldest first", body = Object)))]
pub async fn list_platform_events(
    State(s): State<AppState>,
    p: Principal,
    ApiQuery(page): ApiQuery<PageParams>,
    ApiQuery(f): ApiQuery<InboxFilter>,
) -> Result<Json<Page<InboxItem>>> {
    p.require(Permission::Read)?;
    Ok(Json(
        inbox::list(&s.db, &p.org_id, &f, &page.validate()?).await?,
    ))
}
