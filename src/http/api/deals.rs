use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;

use crate::access_log::{Object, Purpose};
use crate::error::Result;
use crate::http::{ApiJson, ApiQuery, AppState, Reader, Writer};
use crate::page::{Page, PageParams};
use crate::pipeline::{self, Deal, DealFilter, DealPatch, Lead, NewDeal, NewLead};

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LeadFilter {
    pub customer: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/leads", tag = "pipeline", params(PageParams, LeadFilter),
    responses((status = 200, description = "A page of leads", body = Page<Lead>), super::ReadErrors))]
pub async fn list_leads(
    State(s): State<AppState>,
    Reader(p): Reader,
    ApiQuery(page): ApiQuery<PageParams>,
    ApiQuery(f): ApiQuery<LeadFilter>,
) -> Result<Json<Page<Lead>>> {
    Ok(Json(
        pipeline::list_leads(&s.db, &p.org_id, f.customer.as_deref(), &page.validate()?).await?,
    ))
}

#[utoipa::path(post, path = "/api/v1/leads", tag = "pipeline", request_body = NewLead,
    responses((status = 201, body = Lead), super::WriteErrors))]
pub async fn create_lead(
    State(s): State<AppState>,
    Writer(p): Writer,
    ApiJson(new): ApiJson<NewLead>,
) -> Result<(StatusCode, Json<Lead>)> {
    let lead = pipeline::create_lead(&s.db, s.clock.now_ms(), &p.org_id, &p.actor(), new).await?;
    Ok((StatusCode::CREATED, Json(lead)))
}

#[utoipa::path(get, path = "/api/v1/deals", tag = "pipeline", params(PageParams, DealFilter),
    responses((status = 200, description = "A page of deals", body = Page<Deal>), super::ReadErrors))]
pub async fn list(
    State(s): State<AppState>,
    Reader(p): Reader,
    ApiQuery(page): ApiQuery<PageParams>,
    ApiQuery(f): ApiQuery<DealFilter>,
) -> Result<Json<Page<Deal>>> {
    Ok(Json(
        pipeline::list_deals(&s.db, &p.org_id, &f, &page.validate()?).await?,
    ))
}

#[utoipa::path(post, path = "/api/v1/deals", tag = "pipeline", request_body = NewDeal,
    responses((status = 201, body = Deal), super::WriteErrors))]
pub async fn create(
    State(s): State<AppState>,
    Writer(p): Writer,
    ApiJson(new): ApiJson<NewDeal>,
) -> Result<(StatusCode, Json<Deal>)> {
    let deal = pipeline::create_deal(
        &s.db,
        &s.cipher,
        s.clock.now_ms(),
        &p.org_id,
        &p.actor(),
        new,
    )
    .await?;
    Ok((StatusCode::CREATED, Json(deal)))
}

#[utoipa::path(get, path = "/api/v1/deals/{id}", tag = "pipeline",
    responses((status = 200, body = Deal), super::ReadErrors))]
pub async fn get(
    State(s): State<AppState>,
    Reader(p): Reader,
    Path(id): Path<String>,
) -> Result<Json<Deal>> {
    let deal = pipeline::get_deal(&s.db, &s.cipher, &p.org_id, &id).await?;
    s.access_log
        .key_read(&p, Object::Deal, &deal.id, Purpose::View);
    Ok(Json(deal))
}

#[utoipa::path(patch, path = "/api/v1/deals/{id}", tag = "pipeline", request_body = DealPatch,
    responses((status = 200, body = Deal), super::WriteErrors))]
pub async fn update(
    State(s): State<AppState>,
    Writer(p): Writer,
    Path(id): Path<String>,
    ApiJson(patch): ApiJson<DealPatch>,
) -> Result<Json<Deal>> {
    Ok(Json(
        pipeline::update_deal(
            &s.db,
            &s.cipher,
            s.clock.now_ms(),
            &p.org_id,
            &p.actor(),
            &id,
            patch,
        )
        .await?,
    ))
}
