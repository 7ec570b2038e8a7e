//! Tasks assigned to people (a credibility review, ...), read-only over the API.

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use sqlx::Row;

use crate::db::Select;
use crate::error::{Error, Result};
use crate::http::{ApiQuery, AppState, Reader};
use crate::page::{Page, PageParams};

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Task {
    pub id: String,
    pub assignee: String,
    /// e.g. `credibility_review`.
    pub kind: String,
    pub title: String,
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
    /// What the task is about, e.g. `credibility:<user>:<week>`.
    pub object_ref: Option<String>,
    /// `open`, `done` or `cancelled`.
    pub status: String,
    pub due_at: Option<String>,
    pub created_at: String,
    pub completed_at: Option<String>,
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TaskFilter {
    /// User id of the assignee.
    pub assignee: Option<String>,
    /// `open`, `done` or `cancelled`.
    #[param(schema_with = status_schema)]
    pub status: Option<String>,
    pub kind: Option<String>,
}

const STATUSES: [&str; 3] = ["open", "done", "cancelled"];

fn status_schema() -> utoipa::openapi::Object {
    crate::validate::one_of(&STATUSES)
}

#[utoipa::path(get, path = "/api/v1/tasks", tag = "tasks", params(PageParams, TaskFilter),
    responses((status = 200, description = "A page of tasks, oldest first", body = Page<Task>), super::ReadErrors))]
pub async fn list(
    State(s): State<AppState>,
    Reader(p): Reader,
    ApiQuery(page): ApiQuery<PageParams>,
    ApiQuery(f): ApiQuery<TaskFilter>,
) -> Result<Json<Page<Task>>> {
    if let Some(st) = &f.status {
        if !STATUSES.contains(&st.as_str()) {
            return Err(Error::invalid("status must be open, done or cancelled"));
        }
    }
    let page = page.validate()?;
    let mut sel = Select::org_page(&p.org_id, &page);
    sel.equal_each(&[
        ("assignee_user_id", &f.assignee),
        ("status", &f.status),
        ("kind", &f.kind),
    ]);
    let sql = sel.sql(
        "SELECT id, assignee_user_id, kind, title, detail, object_ref, status, due_at, created_at, completed_at \
         FROM tasks",
        "ORDER BY id LIMIT {limit}",
    );
    let rows = sel
        .bind(sqlx::query(&sql))
        .bind(page.limit + 1)
        .fetch_all(&s.db.pool)
        .await?;
    let time = |ms: Option<i64>| ms.map(crate::clock::rfc3339);
    let items = rows
        .iter()
        .map(|r| Task {
            id: r.get("id"),
            assignee: r.get("assignee_user_id"),
            kind: r.get("kind"),
            title: r.get("title"),
            detail: serde_json::from_str(&r.get::<String, _>("detail")).unwrap_or_default(),
            object_ref: r.get("object_ref"),
            status: r.get("status"),
            due_at: time(r.get("due_at")),
            created_at: crate::clock::rfc3339(r.get("created_at")),
            completed_at: time(r.get("completed_at")),
        })
        .collect();
    Ok(Json(Page::from_rows(items, &page, |t| &t.id)))
}
