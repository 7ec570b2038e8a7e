//! Extractors that turn every rejection into the API's JSON error shape.

use std::net::IpAddr;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use super::AppState;
use crate::access::{apikeys, Permission, Principal};
use crate::error::Error;

/// JSON body; malformed JSON is 400, a well-formed body of the wrong shape is 422,
/// a body over the limit is 413.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = Error;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(ApiJson(v)),
            Err(JsonRejection::JsonDataError(e)) => Err(Error::InvalidInput(e.body_text())),
            Err(JsonRejection::JsonSyntaxError(e)) => Err(Error::MalformedBody(e.body_text())),
            Err(JsonRejection::MissingJsonContentType(_)) => Err(Error::MalformedBody(
                "expected a request with Content-Type: application/json".into(),
            )),
            Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => Err(Error::PayloadTooLarge(
                "request body is larger than the configured max_body_bytes".into(),
            )),
            Err(e) => Err(Error::MalformedBody(e.body_text())),
        }
    }
}

/// Query string; a wrong value is 422.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(ApiQuery(v)),
            Err(QueryRejection::FailedToDeserializeQueryString(e)) => {
                Err(Error::InvalidInput(e.body_text()))
            }
            Err(e) => Err(Error::InvalidInput(e.body_text())),
        }
    }
}

/// The client's IP as resolved by the `client_ip` middleware.
#[derive(Debug, Clone, Copy)]
pub struct ClientIp(pub Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<ClientIp>()
            .copied()
            .unwrap_or(ClientIp(None)))
    }
}

/// `Authorization: Bearer <key>` → the key's principal.
impl FromRequestParts<AppState> for Principal {
    type Rejection = Error;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        // Found and checked once per request by the access guard.
        if let Some(p) = parts.extensions.get::<Principal>() {
            return Ok(p.clone());
        }
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .ok_or_else(|| {
                Error::Unauthenticated("missing Authorization: Bearer <API key>".into())
            })?;
        let key = header
            .to_str()
            .ok()
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
            .ok_or_else(|| {
                Error::Unauthenticated("Authorization must be `Bearer <API key>`".into())
            })?;
        apikeys::authenticate(&state.db, state.clock.now_ms(), key).await
    }
}

/// An API key allowed to do what the route needs. These run before the body and query
/// extractors, so a key without the permission is refused before anything it sent is read
/// and learns nothing about the shape the route expects.
macro_rules! permitted_key {
    ($(#[$doc:meta])* $name:ident, $permission:expr) => {
        $(#[$doc])*
        pub struct $name(pub Principal);

        impl FromRequestParts<AppState> for $name {
            type Rejection = Error;

            async fn from_request_parts(
                parts: &mut Parts,
                state: &AppState,
            ) -> Result<Self, Self::Rejection> {
                let principal = Principal::from_request_parts(parts, state).await?;
                principal.require($permission)?;
                Ok($name(principal))
            }
        }
    };
}

permitted_key!(
    /// A key that may read (every role).
    Reader,
    Permission::Read
);
permitted_key!(
    /// A key that may write (`integration` and `admin`).
    Writer,
    Permission::Write
);
permitted_key!(
    /// An `admin` key.
    AdminKey,
    Permission::Admin
);
