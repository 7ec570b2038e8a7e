//! Administration: durable jobs and webhooks. Admin keys only.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Serialize;

use crate::error::Result;
use crate::http::{AdminKey, ApiJson, ApiQuery, AppState, Reader};
use crate::inbox::{self, InboxFilter, InboxItem};
use crate::jobs::{self, JobFilter, JobInfo};
use crate::page::{Page, PageParams};
use crate::webhooks::{self, NewWebhook, Webhook};

#[utoipa::path(get, path = "/api/v1/jobs", tag = "admin", params(PageParams, JobFilter),
    responses((status = 200, description = "A page of durable jobs", body = Page<JobInfo>), super::ReadErrors))]
pub async fn list_jobs(
    State(s): State<AppState>,
    AdminKey(p): AdminKey,
    ApiQuery(page): ApiQuery<PageParams>,
    ApiQuery(f): ApiQuery<JobFilter>,
) -> Result<Json<Page<JobInfo>>> {
    Ok(Json(
        jobs::list(&s.db, Some(&p.org_id), &f, &page.validate()?).await?,
    ))
}

/// A dead job queued again.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Retried {
    pub id: String,
    pub status: JobState,
}

/// The state a retried or run-now job is in when the answer leaves.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Queued,
}

#[utoipa::path(post, path = "/api/v1/jobs/{id}/retry", tag = "admin",
    responses((status = 200, description = "Queued again", body = Retried), super::WriteErrors, (status = 409, description = "Not dead", body = super::ErrorBody)))]
pub async fn retry_job(
    State(s): State<AppState>,
    AdminKey(p): AdminKey,
    Path(id): Path<String>,
) -> Result<Json<Retried>> {
    jobs::retry_dead(&s.db, s.clock.now_ms(), Some(&p.org_id), &id).await?;
    Ok(Json(Retried {
        id,
        status: JobState::Queued,
    }))
}

/// Which scheduled job kind to run now.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RunNowBody {
    /// A scheduled job kind, e.g. `collab.health_weekly` or `credibility.weekly`.
    pub kind: String,
}

/// The job queued to run now.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RanNow {
    pub id: String,
    pub kind: String,
    pub status: JobState,
}

#[utoipa::path(post, path = "/api/v1/jobs/run-now", tag = "admin", request_body = RunNowBody,
    responses((status = 202, description = "Queued to run now, outside the schedule's timing (audited)", body = RanNow), super::WriteErrors))]
pub async fn run_job_now(
    State(s): State<AppState>,
    AdminKey(p): AdminKey,
    ApiJson(b): ApiJson<RunNowBody>,
) -> Result<(StatusCode, Json<RanNow>)> {
    let ids = jobs::schedule::run_now(
        &s.db,
        s.clock.now_ms(),
        Some(&p.org_id),
        &b.kind,
        &p.actor(),
    )
    .await?;
    // An organisation has one schedule per kind.
    let id = ids
        .into_iter()
        .next()
        .ok_or(crate::error::Error::NotFound { what: "schedule" })?;
    Ok((
        StatusCode::ACCEPTED,
        Json(RanNow {
            id,
            kind: b.kind,
            status: JobState::Queued,
        }),
    ))
}

#[utoipa::path(get, path = "/api/v1/webhooks", tag = "admin",
    responses((status = 200, description = "The organisation's webhooks in one page", body = Page<Webhook>), super::ReadErrors))]
pub async fn list_webhooks(
    State(s): State<AppState>,
    AdminKey(p): AdminKey,
) -> Result<Json<Page<Webhook>>> {
    let items = webhooks::list(&s.db, &p.org_id).await?;
    Ok(Json(Page::whole(items)))
}

#[utoipa::path(post, path = "/api/v1/webhooks", tag = "admin", request_body = NewWebhook,
    responses((status = 201, description = "Created; `secret` is shown this once", body = Webhook), super::WriteErrors))]
pub async fn create_webhook(
    State(s): State<AppState>,
    AdminKey(p): AdminKey,
    ApiJson(new): ApiJson<NewWebhook>,
) -> Result<(StatusCode, Json<Webhook>)> {
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
    responses((status = 204, description = "Deactivated"), super::WriteErrors))]
pub async fn delete_webhook(
    State(s): State<AppState>,
    AdminKey(p): AdminKey,
    Path(id): Path<String>,
) -> Result<StatusCode> {
    webhooks::deactivate(&s.db, s.clock.now_ms(), &p.org_id, &p.actor(), &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/api/v1/platform-events", tag = "admin", params(PageParams, InboxFilter),
    responses((status = 200, description = "A page of received platform callbacks, oldest first", body = Page<InboxItem>), super::ReadErrors))]
pub async fn list_platform_events(
    State(s): State<AppState>,
    Reader(p): Reader,
    ApiQuery(page): ApiQuery<PageParams>,
    ApiQuery(f): ApiQuery<InboxFilter>,
) -> Result<Json<Page<InboxItem>>> {
    Ok(Json(
        inbox::list(&s.db, &p.org_id, &f, &page.validate()?).await?,
    ))
}
