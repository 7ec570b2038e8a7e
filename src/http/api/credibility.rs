//! Weekly credibility per rep: verified ÷ recorded calls, opened ÷ sent proposals.

use axum::extract::State;
use axum::Json;

use crate::credibility::{self, RepWeek, WeekQuery};
use crate::error::Result;
use crate::http::{ApiQuery, AppState, Reader};
use crate::page::{Page, PageParams};

#[utoipa::path(get, path = "/api/v1/credibility", tag = "credibility", params(PageParams, WeekQuery),
    responses((status = 200, description = "A page of reps (by user id) with the week's counts and ratios; a ratio is null when it had too few samples to judge", body = Page<RepWeek>), super::ReadErrors))]
pub async fn list(
    State(s): State<AppState>,
    Reader(p): Reader,
    ApiQuery(page): ApiQuery<PageParams>,
    ApiQuery(q): ApiQuery<WeekQuery>,
) -> Result<Json<Page<RepWeek>>> {
    let rules = s.rules.current(&p.org_id).await?;
    Ok(Json(
        credibility::report(
            &s.db,
            &rules.credibility,
            s.clock.now_ms(),
            &p.org_id,
            p.tz,
            &q,
            &page.validate()?,
        )
        .await?,
    ))
}
