//! REST API v1: bearer API keys, JSON in and out, cursor paging, OpenAPI document.

mod access_log;
mod access_requests;
mod admin;
mod audit;
mod collab;
mod credibility;
mod customers;
mod deals;
mod events;
mod process;
mod rules;
mod tasks;
mod users;

use std::collections::BTreeMap;

use axum::routing::get;
use axum::{Json, Router};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, Response, ResponseBuilder};
use utoipa::{IntoResponses, Modify, OpenApi};

use super::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/openapi.json", get(|| async { Json(ApiDoc::openapi()) }))
        .route("/users", get(users::list).post(users::create))
        .route("/users/{id}", get(users::get).patch(users::update))
        .route("/customers", get(customers::list).post(customers::create))
        .route(
            "/customers/{id}",
            get(customers::get).patch(customers::update),
        )
        .route(
            "/customers/{id}/contacts",
            axum::routing::post(customers::add_contact),
        )
        .route("/customers/{id}/owners", get(customers::owners))
        .route("/customers/{id}/timeline", get(customers::timeline))
        .route(
            "/customers/{id}/external-ids",
            axum::routing::post(customers::add_external_id),
        )
        .route("/leads", get(deals::list_leads).post(deals::create_lead))
        .route("/deals", get(deals::list).post(deals::create))
        .route("/deals/{id}", get(deals::get).patch(deals::update))
        .route("/events", get(events::list).post(events::record))
        .route("/events/{id}", get(events::get))
        .route("/events/{id}/verification", get(process::verification))
        .route(
            "/events/{id}/attestations",
            axum::routing::post(process::request_attestation),
        )
        .route(
            "/attestations/{id}/decision",
            axum::routing::post(process::decide_attestation),
        )
        .route("/deals/{id}/gate", get(process::gate))
        .route("/deals/{id}/advance", axum::routing::post(process::advance))
        .route(
            "/deals/{id}/rollback",
            axum::routing::post(process::rollback),
        )
        .route(
            "/deals/{id}/reassign",
            axum::routing::post(process::reassign),
        )
        .route("/deals/{id}/lose", axum::routing::post(process::lose))
        .route("/deals/{id}/reopen", axum::routing::post(process::reopen))
        .route("/freezes", get(process::list_freezes))
        .route("/freezes/{id}/lift", axum::routing::post(process::lift))
        .route(
            "/phones/{id}/validity",
            axum::routing::put(process::phone_validity),
        )
        .route("/chat-counts", axum::routing::put(process::chat_count))
        .route("/collab/requests", get(collab::list).post(collab::open))
        .route("/collab/adhoc", axum::routing::post(collab::open_adhoc))
        .route("/collab/health", get(collab::health))
        .route("/credibility", get(credibility::list))
        .route("/tasks", get(tasks::list))
        .route("/collab/requests/{id}", get(collab::get))
        .route(
            "/collab/requests/{id}/{step}",
            axum::routing::post(collab::step),
        )
        .route(
            "/customers/{id}/assignments/{role}",
            axum::routing::put(collab::assign).delete(collab::unassign),
        )
        .route(
            "/users/{id}/calendar-feed",
            axum::routing::post(collab::calendar_feed),
        )
        .route("/platform-events", get(admin::list_platform_events))
        .route("/audit", get(audit::list))
        .route("/access-log", get(access_log::list))
        .route("/jobs", get(admin::list_jobs))
        .route("/jobs/{id}/retry", axum::routing::post(admin::retry_job))
        .route("/jobs/run-now", axum::routing::post(admin::run_job_now))
        .route("/rules", get(rules::get))
        .route("/rules/check", axum::routing::post(rules::check))
        .route(
            "/webhooks",
            get(admin::list_webhooks).post(admin::create_webhook),
        )
        .route(
            "/webhooks/{id}",
            axum::routing::delete(admin::delete_webhook),
        )
        .route(
            "/access-requests",
            get(access_requests::list).post(access_requests::create),
        )
        .route(
            "/access-requests/{id}/decision",
            axum::routing::post(access_requests::decide),
        )
        .route(
            "/access-requests/{id}/withdraw",
            axum::routing::post(access_requests::withdraw),
        )
        .route("/access-grants", get(access_requests::grants))
        .route(
            "/request-pauses/{user}/lift",
            axum::routing::post(access_requests::lift),
        )
}

pub use crate::error::ErrorBody;

/// The failures every read can answer with, declared once for all of them.
pub enum ReadErrors {}

/// The failures every write can answer with, declared once for all of them.
pub enum WriteErrors {}

const UNAUTHENTICATED: (u16, &str) = (
    401,
    "`unauthenticated`: no API key, or one that is unknown, revoked or expired",
);
const FORBIDDEN: (u16, &str) = (403, "`forbidden`: the key's role may not do this");
const NOT_FOUND: (u16, &str) = (404, "`not_found`: nothing with this id in the organisation");
const INVALID: (u16, &str) = (
    422,
    "`invalid_input` (a parameter or field is unusable) or `unknown_reference` (it names something that does not exist)",
);

impl IntoResponses for ReadErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        error_responses(&[UNAUTHENTICATED, FORBIDDEN, NOT_FOUND, INVALID])
    }
}

impl IntoResponses for WriteErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        error_responses(&[
            (
                400,
                "`malformed_body`: not JSON, or Content-Type is not application/json",
            ),
            UNAUTHENTICATED,
            FORBIDDEN,
            NOT_FOUND,
            (
                409,
                "`conflict`, or a rule's refusal (its code, and `details` saying why)",
            ),
            (413, "`payload_too_large`: the body is over the limit"),
            INVALID,
            (503, "`unavailable`: the server is shutting down; retry"),
        ])
    }
}

fn error_responses(statuses: &[(u16, &str)]) -> BTreeMap<String, RefOr<Response>> {
    statuses
        .iter()
        .map(|(status, description)| {
            let content = ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorBody")))
                .build();
            let response = ResponseBuilder::new()
                .description(*description)
                .content("application/json", content)
                .build();
            (status.to_string(), RefOr::T(response))
        })
        .collect()
}

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "closeloop API", version = "1", description = "Tracking ledger, directory, customers and deals of a closeloop server. Authenticate with `Authorization: Bearer <API key>` (create one with `closeloop apikey create`). Lists answer `{\"items\": [...], \"next_cursor\": \"...\" | null}`; errors answer `{\"error\": {\"code\": \"...\", \"message\": \"...\"}}`."),
    modifiers(&BearerAuth),
    security(("api_key" = [])),
    paths(
        users::list, users::create, users::get, users::update,
        customers::list, customers::create, customers::get, customers::update,
        customers::add_contact, customers::owners, customers::add_external_id, customers::timeline,
        deals::list_leads, deals::create_lead,
        deals::list, deals::create, deals::get, deals::update,
        events::list, events::record, events::get,
        process::verification, process::request_attestation, process::decide_attestation,
        process::gate, process::advance, process::rollback, process::reassign,
        process::lose, process::reopen,
        process::list_freezes, process::lift, process::phone_validity, process::chat_count,
        super::documents::api_upload, super::documents::api_list, super::documents::api_get,
        super::documents::api_content, super::documents::api_link,
        collab::open, collab::open_adhoc, collab::list, collab::get, collab::step, collab::assign, collab::unassign, collab::calendar_feed,
        collab::health,
        credibility::list, tasks::list,
        admin::list_platform_events,
        audit::list, access_log::list,
        admin::list_jobs, admin::retry_job, admin::run_job_now,
        admin::list_webhooks, admin::create_webhook, admin::delete_webhook,
        rules::get, rules::check,
        access_requests::create, access_requests::list, access_requests::decide, access_requests::withdraw,
        access_requests::grants, access_requests::lift,
    ),
    components(schemas(ErrorBody))
)]
pub struct ApiDoc;
