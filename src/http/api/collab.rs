//! Collaboration over the API: quick-asks and handoffs, their steps, customer
//! assignments per role, and calendar feed addresses.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};

use crate::collab::requests::{self, NewAdhoc, NewRequest, Request, RequestFilter, Step};
use crate::error::Result;
use crate::http::{AdminKey, ApiJson, ApiQuery, AppState, Reader, Writer};
use crate::page::{Page, PageParams};

#[utoipa::path(post, path = "/api/v1/collab/requests", tag = "collaboration", request_body = NewRequest,
    responses((status = 201, body = Request), super::WriteErrors, (status = 409, description = "`handoff_incomplete`: details.missing lists the artefacts", body = super::ErrorBody)))]
pub async fn open(
    State(s): State<AppState>,
    Writer(p): Writer,
    ApiJson(new): ApiJson<NewRequest>,
) -> Result<(StatusCode, Json<Request>)> {
    let rules = s.rules.current(&p.org_id).await?;
    let r = requests::open(
        &s.db,
        &s.cipher,
        &rules,
        &s.calendar,
        s.clock.now_ms(),
        &p.org_id,
        p.tz,
        new,
    )
    .await?;
    Ok((StatusCode::CREATED, Json(r)))
}

#[utoipa::path(post, path = "/api/v1/collab/adhoc", tag = "collaboration", request_body = NewAdhoc,
    responses((status = 201, description = "The ad-hoc request, sent to the named member with the rule set's `adhoc` clocks; \
        `invalid_input` also when the named member does not hold the role", body = Request), super::WriteErrors))]
pub async fn open_adhoc(
    State(s): State<AppState>,
    Writer(p): Writer,
    ApiJson(new): ApiJson<NewAdhoc>,
) -> Result<(StatusCode, Json<Request>)> {
    let rules = s.rules.current(&p.org_id).await?;
    let r = requests::open_adhoc(
        &s.db,
        &p.actor(),
        &s.cipher,
        &rules,
        &s.calendar,
        s.clock.now_ms(),
        &p.org_id,
        p.tz,
        new,
    )
    .await?;
    Ok((StatusCode::CREATED, Json(r)))
}

#[utoipa::path(get, path = "/api/v1/collab/requests", tag = "collaboration", params(PageParams, RequestFilter),
    responses((status = 200, description = "A page of requests", body = Page<Request>), super::ReadErrors))]
pub async fn list(
    State(s): State<AppState>,
    Reader(p): Reader,
    ApiQuery(page): ApiQuery<PageParams>,
    ApiQuery(f): ApiQuery<RequestFilter>,
) -> Result<Json<Page<Request>>> {
    Ok(Json(
        requests::list(&s.db, &s.cipher, &p.org_id, p.tz, &f, &page.validate()?).await?,
    ))
}

#[utoipa::path(get, path = "/api/v1/collab/requests/{id}", tag = "collaboration",
    responses((status = 200, body = Request), super::ReadErrors))]
pub async fn get(
    State(s): State<AppState>,
    Reader(p): Reader,
    Path(id): Path<String>,
) -> Result<Json<Request>> {
    Ok(Json(
        requests::get(&s.db, &s.cipher, &p.org_id, p.tz, &id).await?,
    ))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StepBody {
    /// The person acting (the assignee, or a queue member accepting).
    pub actor: String,
    /// `answer`: the answer.
    pub text: Option<String>,
    /// `answer`: a date it confirms, YYYY-MM-DD (delivery dates go to the rep's calendar).
    #[schema(format = Date)]
    pub date: Option<String>,
    /// `return`: why it goes back (required).
    pub reason: Option<String>,
    /// `answer` of a schedule (`confirms_date`): 「已同步客户」, the customer was told the
    /// date (default false; `date` is then required).
    pub customer_synced: Option<bool>,
}

#[utoipa::path(post, path = "/api/v1/collab/requests/{id}/{step}", tag = "collaboration", request_body = StepBody,
    params(("step" = String, Path, description = "`accept` (确认收到并接受), `answer` or `return`")),
    responses((status = 200, body = Request), super::WriteErrors))]
pub async fn step(
    State(s): State<AppState>,
    Writer(p): Writer,
    Path((id, step)): Path<(String, String)>,
    ApiJson(b): ApiJson<StepBody>,
) -> Result<Json<Request>> {
    let st = match step.as_str() {
        "accept" => Step::Accept,
        "answer" => Step::Answer {
            text: b.text.unwrap_or_default(),
            date: b.date,
            customer_synced: b.customer_synced,
        },
        "return" => Step::Return {
            reason: b.reason.unwrap_or_default(),
        },
        _ => return Err(crate::error::Error::NotFound { what: "step" }),
    };
    Ok(Json(
        requests::step(
            &s.db,
            &s.cipher,
            s.clock.now_ms(),
            &p.org_id,
            p.tz,
            &id,
            &b.actor,
            &st,
            crate::tracking::Source::Api,
        )
        .await?,
    ))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Assignment {
    pub user: String,
}

#[utoipa::path(put, path = "/api/v1/customers/{id}/assignments/{role}", tag = "collaboration", request_body = Assignment,
    responses((status = 204, description = "(admin keys only) Requests to this role for this customer go to this person"), super::WriteErrors))]
pub async fn assign(
    State(s): State<AppState>,
    AdminKey(p): AdminKey,
    Path((customer, role)): Path<(String, String)>,
    ApiJson(b): ApiJson<Assignment>,
) -> Result<StatusCode> {
    crate::collab::assignments::assign(
        &s.db,
        s.clock.now_ms(),
        &p.org_id,
        &p.actor(),
        &customer,
        &role,
        &b.user,
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(delete, path = "/api/v1/customers/{id}/assignments/{role}", tag = "collaboration",
    responses((status = 204, description = "(admin keys only) The assignment is cleared: requests to this role for this customer go to the role's queue again; clearing what is not set changes nothing"), super::WriteErrors))]
pub async fn unassign(
    State(s): State<AppState>,
    AdminKey(p): AdminKey,
    Path((customer, role)): Path<(String, String)>,
) -> Result<StatusCode> {
    crate::collab::assignments::set(
        &s.db,
        s.clock.now_ms(),
        &p.org_id,
        &p.actor(),
        p.grant(),
        &customer,
        &role,
        None,
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CalendarFeed {
    /// `<public_url>/calendar/<secret>.ics`
    pub url: String,
}

#[utoipa::path(post, path = "/api/v1/users/{id}/calendar-feed", tag = "collaboration",
    responses((status = 201, description = "The secret ICS address, shown once; a new one revokes the old", body = CalendarFeed), super::WriteErrors))]
pub async fn calendar_feed(
    State(s): State<AppState>,
    AdminKey(p): AdminKey,
    Path(user): Path<String>,
) -> Result<(StatusCode, Json<CalendarFeed>)> {
    let token = crate::collab::calendar_feed::new_feed(
        &s.db,
        s.clock.now_ms(),
        &p.org_id,
        &p.actor(),
        &user,
    )
    .await?;
    let url = format!(
        "{}/calendar/{token}.ics",
        s.config.public_url.trim_end_matches('/')
    );
    Ok((StatusCode::CREATED, Json(CalendarFeed { url })))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct WeekQuery {
    /// Any date in the week (YYYY-MM-DD); default: last week.
    #[param(format = Date)]
    pub week: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/collab/health", tag = "collaboration", params(WeekQuery),
    responses((status = 200, body = crate::collab::health::Health), super::ReadErrors))]
pub async fn health(
    State(s): State<AppState>,
    Reader(p): Reader,
    ApiQuery(q): ApiQuery<WeekQuery>,
) -> Result<Json<crate::collab::health::Health>> {
    let week = match &q.week {
        Some(d) => crate::credibility::Week::containing(crate::validate::date("week", d)?, p.tz)?,
        None => crate::credibility::Week::before(s.clock.now_ms(), p.tz)?,
    };
    let mut conn = s.db.pool.acquire().await?;
    Ok(Json(
        crate::collab::health::compute(&mut conn, &p.org_id, &week).await?,
    ))
}
