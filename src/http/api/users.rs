use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;

use crate::directory::users::{self, NewUser, User, UserFilter, UserPatch};
use crate::error::Result;
use crate::http::{ApiJson, ApiQuery, AppState, Reader, Writer};
use crate::page::{Page, PageParams};

#[utoipa::path(get, path = "/api/v1/users", tag = "directory",
    params(PageParams, UserFilter),
    responses((status = 200, description = "A page of users", body = Page<User>), super::ReadErrors))]
pub async fn list(
    State(s): State<AppState>,
    Reader(p): Reader,
    ApiQuery(page): ApiQuery<PageParams>,
    ApiQuery(filter): ApiQuery<UserFilter>,
) -> Result<Json<Page<User>>> {
    Ok(Json(
        users::list(&s.db, &p.org_id, &filter, &page.validate()?).await?,
    ))
}

#[utoipa::path(post, path = "/api/v1/users", tag = "directory", request_body = NewUser,
    responses((status = 201, body = User), super::WriteErrors))]
pub async fn create(
    State(s): State<AppState>,
    Writer(p): Writer,
    ApiJson(new): ApiJson<NewUser>,
) -> Result<(StatusCode, Json<User>)> {
    let user = users::create(
        &s.db,
        s.clock.now_ms(),
        &p.org_id,
        &p.actor(),
        p.grant(),
        new,
    )
    .await?;
    Ok((StatusCode::CREATED, Json(user)))
}

#[utoipa::path(get, path = "/api/v1/users/{id}", tag = "directory",
    responses((status = 200, body = User), super::ReadErrors))]
pub async fn get(
    State(s): State<AppState>,
    Reader(p): Reader,
    Path(id): Path<String>,
) -> Result<Json<User>> {
    Ok(Json(users::get(&s.db, &p.org_id, &id).await?))
}

#[utoipa::path(patch, path = "/api/v1/users/{id}", tag = "directory", request_body = UserPatch,
    responses((status = 200, body = User), super::WriteErrors))]
pub async fn update(
    State(s): State<AppState>,
    Writer(p): Writer,
    Path(id): Path<String>,
    ApiJson(patch): ApiJson<UserPatch>,
) -> Result<Json<User>> {
    Ok(Json(
        users::update(
            &s.db,
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
