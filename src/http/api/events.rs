use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::http::{ApiJson, ApiQuery, AppState, ClientIp, Reader, Writer};
use crate::page::{Page, PageParams};
use crate::tracking::{self, EventFilter, NewPoint, Recorded, Source, TrackingPoint};

/// A tracking point to record. The time is the server's; there is no way to set it.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewEvent {
    /// User id of the person who acted.
    pub actor: String,
    pub customer: String,
    /// What happened, e.g. 已电话沟通.
    #[schema(min_length = 1, max_length = 64)]
    pub action: String,
    pub deal: Option<String>,
    /// Extra facts as a JSON object; reference people by id, never by personal data.
    #[schema(value_type = Object)]
    pub payload: Option<Value>,
}

#[utoipa::path(post, path = "/api/v1/events", tag = "tracking", request_body = NewEvent,
    params(("Idempotency-Key" = Option<String>, Header, description = "A retry with the same key returns the first result and writes nothing")),
    responses((status = 201, description = "Recorded", body = TrackingPoint), (status = 200, description = "Replay of an earlier request with the same Idempotency-Key", body = TrackingPoint), super::WriteErrors, (status = 409, description = "Idempotency-Key reused for a different request", body = super::ErrorBody)))]
pub async fn record(
    State(s): State<AppState>,
    Writer(p): Writer,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    ApiJson(ev): ApiJson<NewEvent>,
) -> Result<Response> {
    if tracking::is_reserved(&ev.action) {
        return Err(Error::invalid(format!(
            "action `{}`: actions starting with {} are written by closeloop only",
            ev.action,
            tracking::RESERVED_PREFIXES.join(", ")
        )));
    }
    let header = |name: &str| -> Result<Option<String>> {
        headers
            .get(name)
            .map(|v| {
                v.to_str()
                    .map(str::to_string)
                    .map_err(|_| Error::invalid(format!("{name} must be ASCII")))
            })
            .transpose()
    };
    let user_agent = header("user-agent")?.map(|ua| ua.chars().take(512).collect());
    let point = NewPoint {
        org_id: p.org_id.clone(),
        actor_kind: tracking::ActorKind::User,
        actor: Some(ev.actor),
        customer: Some(ev.customer),
        deal: ev.deal,
        action: ev.action,
        payload: ev
            .payload
            .unwrap_or_else(|| Value::Object(Default::default())),
        source: Source::Api,
        platform: None,
        external_id: None,
        client_ip: ip.map(|i| i.to_string()),
        user_agent,
        idempotency_key: header("idempotency-key")?,
        api_key_id: Some(p.api_key_id.clone()),
        after: None,
    };
    Ok(match s.ledger.record(point, p.tz).await? {
        Recorded::Created(tp) => (StatusCode::CREATED, Json(tp)).into_response(),
        Recorded::Replayed(tp) => {
            (StatusCode::OK, [("idempotent-replayed", "true")], Json(tp)).into_response()
        }
    })
}

#[utoipa::path(get, path = "/api/v1/events", tag = "tracking", params(PageParams, EventFilter),
    responses((status = 200, description = "A page of tracking points, oldest first", body = Page<TrackingPoint>), super::ReadErrors))]
pub async fn list(
    State(s): State<AppState>,
    Reader(p): Reader,
    ApiQuery(page): ApiQuery<PageParams>,
    ApiQuery(f): ApiQuery<EventFilter>,
) -> Result<Json<Page<TrackingPoint>>> {
    Ok(Json(
        tracking::list(&s.db, &p.org_id, p.tz, &f, &page.validate()?).await?,
    ))
}

#[utoipa::path(get, path = "/api/v1/events/{id}", tag = "tracking",
    responses((status = 200, body = TrackingPoint), super::ReadErrors))]
pub async fn get(
    State(s): State<AppState>,
    Reader(p): Reader,
    Path(id): Path<String>,
) -> Result<Json<TrackingPoint>> {
    Ok(Json(tracking::get(&s.db, &p.org_id, p.tz, &id).await?))
}
