//! The crate-wide error. Variants a caller can act on map to a status and a stable code;
//! everything else is an opaque, logged 500 that never leaks internals.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A field is missing, of the wrong type, too long or otherwise unusable.
    #[error("{0}")]
    InvalidInput(String),
    /// The body is not what the endpoint reads (malformed JSON, wrong content type).
    #[error("{0}")]
    MalformedBody(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{what} not found")]
    NotFound { what: &'static str },
    /// The request names something (actor, customer, deal) that does not exist.
    #[error("{0}")]
    UnknownReference(String),
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    Forbidden(String),
    /// The same idempotency key or unique value was used for something different.
    #[error("{0}")]
    Conflict(String),
    /// A rule refused the request (a gate not met, a frozen action, an illegal stage
    /// move); `details` says exactly why, for people and programs.
    #[error("{message}")]
    Refused {
        code: &'static str,
        message: String,
        details: serde_json::Value,
    },
    /// A platform callback failed verification (signature, timestamp window, receiver).
    #[error("{message}")]
    CallbackRejected { code: &'static str, message: String },
    #[error("service unavailable: {0}")]
    Unavailable(String),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn invalid(msg: impl Into<String>) -> Self {
        Error::InvalidInput(msg.into())
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Error::InvalidInput(_) | Error::UnknownReference(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Error::MalformedBody(_) => StatusCode::BAD_REQUEST,
            Error::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Error::NotFound { .. } => StatusCode::NOT_FOUND,
            Error::Unauthenticated(_) | Error::CallbackRejected { .. } => StatusCode::UNAUTHORIZED,
            Error::Forbidden(_) => StatusCode::FORBIDDEN,
            Error::Conflict(_) | Error::Refused { .. } => StatusCode::CONFLICT,
            Error::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            Error::InvalidInput(_) => "invalid_input",
            Error::MalformedBody(_) => "malformed_body",
            Error::PayloadTooLarge(_) => "payload_too_large",
            Error::NotFound { .. } => "not_found",
            Error::UnknownReference(_) => "unknown_reference",
            Error::Unauthenticated(_) => "unauthenticated",
            Error::CallbackRejected { code, .. } | Error::Refused { code, .. } => code,
            Error::Forbidden(_) => "forbidden",
            Error::Conflict(_) => "conflict",
            Error::Unavailable(_) => "unavailable",
            Error::Internal(_) => "internal",
        }
    }
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        Error::Internal(anyhow::Error::new(e).context("database error"))
    }
}

/// The body of every error answer: `{"error": {"code", "message"}}`, plus `details` on a
/// refusal. The OpenAPI document describes errors with this type.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ErrorDetail {
    /// Stable and machine-readable: `invalid_input`, `not_found`, `gate_not_met`, …
    pub code: String,
    /// For people; never internals.
    pub message: String,
    /// A refusal's exact reasons (e.g. `missing` for `gate_not_met`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub details: Option<serde_json::Value>,
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let message = match &self {
            Error::Internal(e) => {
                tracing::error!(error = format!("{e:#}"), "internal error");
                "internal error".to_string()
            }
            other => other.to_string(),
        };
        let status = self.status();
        let code = self.code().to_string();
        let details = match self {
            Error::Refused { details, .. } => Some(details),
            _ => None,
        };
        let body = ErrorBody {
            error: ErrorDetail {
                code,
                message,
                details,
            },
        };
        (status, Json(body)).into_response()
    }
}

/// The error shape for failures that are not an [`Error`] (a framework rejection, a
/// caught panic): `{"error":{"code","message"}}`.
pub fn error_response(status: StatusCode, code: &str, message: &str) -> Response {
    let body = ErrorBody {
        error: ErrorDetail {
            code: code.to_string(),
            message: message.to_string(),
            details: None,
        },
    };
    (status, Json(body)).into_response()
}
