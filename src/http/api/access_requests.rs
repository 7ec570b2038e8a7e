//! Permission requests over the API: asking, listing, deciding, the grants a member holds,
//! and lifting a paused member's requests (the rules are in `approvals::requests`).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;

use crate::approvals::requests::{self, AccessRequest, GrantRecord, NewRequest, RequestFilter};
use crate::error::Result;
use crate::http::{ApiJson, ApiQuery, AppState, Reader, Writer};
use crate::page::{Page, PageParams};
use crate::policy::Who;

#[utoipa::path(post, path = "/api/v1/access-requests", tag = "access requests", request_body = NewRequest,
    responses((status = 201, description = "The request, sent to its approver by a card", body = AccessRequest),
        super::WriteErrors,
        (status = 403, description = "`forbidden`: the member's requests are paused (权限申请过于频繁，已暂停，请联系安全官); \
            the request that goes over `[access_requests] limit` within `window` is refused and pauses them", body = super::ErrorBody)))]
pub async fn create(
    State(s): State<AppState>,
    Writer(p): Writer,
    ApiJson(new): ApiJson<NewRequest>,
) -> Result<(StatusCode, Json<AccessRequest>)> {
    let rules = s.rules.current(&p.org_id).await?;
    let r = requests::create(
        &s.db,
        &s.cipher,
        &rules,
        s.clock.now_ms(),
        &p.org_id,
        &p.actor(),
        &new,
    )
    .await?;
    Ok((StatusCode::CREATED, Json(r)))
}

#[utoipa::path(get, path = "/api/v1/access-requests", tag = "access requests", params(PageParams, RequestFilter),
    responses((status = 200, description = "A page of requests", body = Page<AccessRequest>), super::ReadErrors))]
pub async fn list(
    State(s): State<AppState>,
    Reader(p): Reader,
    ApiQuery(page): ApiQuery<PageParams>,
    ApiQuery(f): ApiQuery<RequestFilter>,
) -> Result<Json<Page<AccessRequest>>> {
    Ok(Json(
        requests::list(&s.db, &s.cipher, &p.org_id, &f, &page.validate()?).await?,
    ))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Decision {
    pub approve: bool,
    /// The person deciding: the request's approver. Without it, only an admin key may.
    pub actor: Option<String>,
}

#[utoipa::path(post, path = "/api/v1/access-requests/{id}/decision", tag = "access requests", request_body = Decision,
    responses((status = 200, description = "Decided; an approval created a grant for the kind's duration", body = AccessRequest),
        super::WriteErrors))]
pub async fn decide(
    State(s): State<AppState>,
    Writer(p): Writer,
    Path(id): Path<String>,
    ApiJson(b): ApiJson<Decision>,
) -> Result<Json<AccessRequest>> {
    let rules = s.rules.current(&p.org_id).await?;
    Ok(Json(
        requests::decide(
            &s.db,
            &s.cipher,
            &rules,
            s.clock.now_ms(),
            &p.org_id,
            &p.actor(),
            Who::acting(&p, b.actor.as_deref()),
            &id,
            b.approve,
        )
        .await?,
    ))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Withdrawal {
    /// The person withdrawing: the requester. Without it, only an admin key may.
    pub actor: Option<String>,
}

#[utoipa::path(post, path = "/api/v1/access-requests/{id}/withdraw", tag = "access requests", request_body = Withdrawal,
    responses((status = 200, description = "Withdrawn (audited as `access.withdraw`); a decided request cannot be (409)", body = AccessRequest),
        super::WriteErrors))]
pub async fn withdraw(
    State(s): State<AppState>,
    Writer(p): Writer,
    Path(id): Path<String>,
    ApiJson(b): ApiJson<Withdrawal>,
) -> Result<Json<AccessRequest>> {
    Ok(Json(
        requests::withdraw(
            &s.db,
            &s.cipher,
            s.clock.now_ms(),
            &p.org_id,
            &p.actor(),
            Who::acting(&p, b.actor.as_deref()),
            &id,
        )
        .await?,
    ))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct GrantQuery {
    /// The member whose grants to list.
    pub user: String,
}

#[utoipa::path(get, path = "/api/v1/access-grants", tag = "access requests", params(GrantQuery),
    responses((status = 200, description = "The member's grants, newest first (at most 500), `active` when in force", body = Vec<GrantRecord>),
        super::ReadErrors))]
pub async fn grants(
    State(s): State<AppState>,
    Reader(p): Reader,
    ApiQuery(q): ApiQuery<GrantQuery>,
) -> Result<Json<Vec<GrantRecord>>> {
    Ok(Json(
        requests::grants_of(&s.db, &p.org_id, &q.user, s.clock.now_ms()).await?,
    ))
}

#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Lift {
    /// The person lifting it: a security officer. Without it, only an admin key may.
    pub actor: Option<String>,
}

#[utoipa::path(post, path = "/api/v1/request-pauses/{user}/lift", tag = "access requests", request_body = Lift,
    responses((status = 204, description = "The member may request again (audited as `access.lift`)"),
        super::WriteErrors))]
pub async fn lift(
    State(s): State<AppState>,
    Writer(p): Writer,
    Path(user): Path<String>,
    ApiJson(b): ApiJson<Lift>,
) -> Result<StatusCode> {
    requests::lift_user(
        &s.db,
        s.clock.now_ms(),
        &p.org_id,
        &p.actor(),
        Who::acting(&p, b.actor.as_deref()),
        &user,
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}
