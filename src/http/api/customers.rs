use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;

use crate::access_log::{AccessEntry, Field, Object, Purpose};
use crate::customers::{
    self, Customer, CustomerFilter, CustomerPatch, NewContact, NewCustomer, Ownership,
};
use crate::error::Result;
use crate::http::{ApiJson, ApiQuery, AppState, Reader, Writer};
use crate::page::{Page, PageParams};

#[utoipa::path(get, path = "/api/v1/customers", tag = "customers",
    params(PageParams, CustomerFilter),
    responses((status = 200, description = "A page of customers", body = Page<Customer>), super::ReadErrors))]
pub async fn list(
    State(s): State<AppState>,
    Reader(p): Reader,
    access: axum::Extension<crate::http::guard::Access>,
    ApiQuery(page): ApiQuery<PageParams>,
    ApiQuery(filter): ApiQuery<CustomerFilter>,
) -> Result<Json<Page<Customer>>> {
    let listed = customers::list(
        &s.db,
        &s.cipher,
        &p.org_id,
        &filter,
        &page.validate()?,
        Some((&access.policy, s.clock.now_ms())),
    )
    .await?;
    s.access_log.record_all(
        listed
            .items
            .iter()
            .map(|c| AccessEntry::by_key(&p, Object::Customer, &c.id, Purpose::List)),
    );
    Ok(Json(listed))
}

#[utoipa::path(post, path = "/api/v1/customers", tag = "customers", request_body = NewCustomer,
    responses((status = 201, body = Customer), super::WriteErrors))]
pub async fn create(
    State(s): State<AppState>,
    Writer(p): Writer,
    ApiJson(new): ApiJson<NewCustomer>,
) -> Result<(StatusCode, Json<Customer>)> {
    let c = customers::create(
        &s.db,
        &s.cipher,
        s.clock.now_ms(),
        &p.org_id,
        &p.actor(),
        new,
    )
    .await?;
    Ok((StatusCode::CREATED, Json(c)))
}

#[utoipa::path(get, path = "/api/v1/customers/{id}", tag = "customers",
    responses((status = 200, body = Customer), super::ReadErrors))]
pub async fn get(
    State(s): State<AppState>,
    Reader(p): Reader,
    Path(id): Path<String>,
) -> Result<Json<Customer>> {
    let customer = customers::get(&s.db, &s.cipher, &p.org_id, &id).await?;
    s.access_log
        .key_read(&p, Object::Customer, &customer.id, Purpose::View);
    Ok(Json(customer))
}

#[utoipa::path(patch, path = "/api/v1/customers/{id}", tag = "customers", request_body = CustomerPatch,
    responses((status = 200, body = Customer), super::WriteErrors))]
pub async fn update(
    State(s): State<AppState>,
    Writer(p): Writer,
    Path(id): Path<String>,
    ApiJson(patch): ApiJson<CustomerPatch>,
) -> Result<Json<Customer>> {
    Ok(Json(
        customers::update(
            &s.db,
            &s.cipher,
            s.clock.now_ms(),
            &p.org_id,
            &p.actor(),
            p.grant(),
            &id,
            patch,
        )
        .await?,
    ))
}

#[utoipa::path(post, path = "/api/v1/customers/{id}/contacts", tag = "customers", request_body = NewContact,
    responses((status = 201, body = Customer), super::WriteErrors))]
pub async fn add_contact(
    State(s): State<AppState>,
    Writer(p): Writer,
    Path(id): Path<String>,
    ApiJson(new): ApiJson<NewContact>,
) -> Result<(StatusCode, Json<Customer>)> {
    let c = customers::add_contact(
        &s.db,
        &s.cipher,
        s.clock.now_ms(),
        &p.org_id,
        &p.actor(),
        &id,
        new,
    )
    .await?;
    Ok((StatusCode::CREATED, Json(c)))
}

#[utoipa::path(post, path = "/api/v1/customers/{id}/external-ids", tag = "customers", request_body = customers::NewExternalId,
    responses((status = 204, description = "Linked"), super::WriteErrors))]
pub async fn add_external_id(
    State(s): State<AppState>,
    Writer(p): Writer,
    Path(id): Path<String>,
    ApiJson(new): ApiJson<customers::NewExternalId>,
) -> Result<StatusCode> {
    customers::add_external_id(&s.db, s.clock.now_ms(), &p.org_id, &p.actor(), &id, new).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/api/v1/customers/{id}/owners", tag = "customers",
    responses((status = 200, description = "The customer's owners, earliest first, in one page", body = Page<Ownership>), super::ReadErrors))]
pub async fn owners(
    State(s): State<AppState>,
    Reader(p): Reader,
    Path(id): Path<String>,
) -> Result<Json<Page<Ownership>>> {
    let items = customers::ownership_history(&s.db, &s.cipher, &p.org_id, &id).await?;
    Ok(Json(Page::whole(items)))
}

#[utoipa::path(get, path = "/api/v1/customers/{id}/timeline", tag = "customers",
    params(PageParams),
    responses((status = 200, description = "The customer's tracking points in the order they happened (time, then id)", body = Page<crate::tracking::TrackingPoint>), super::ReadErrors))]
pub async fn timeline(
    State(s): State<AppState>,
    Reader(p): Reader,
    Path(id): Path<String>,
    ApiQuery(page): ApiQuery<PageParams>,
) -> Result<Json<Page<crate::tracking::TrackingPoint>>> {
    let points = crate::tracking::timeline(&s.db, &p.org_id, p.tz, &id, &page.validate()?).await?;
    s.access_log.record(
        AccessEntry::by_key(&p, Object::Customer, &id, Purpose::View).field(Field::Timeline),
    );
    Ok(Json(points))
}
