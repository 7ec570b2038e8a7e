//! Platform callback endpoints. Verification and parsing live in `platform/`; these only
//! carry the raw query and body bytes there and turn the outcome into the reply.

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;

use super::AppState;
use crate::error::{Error, Result};
use crate::platform::wecom::inbound::Received;

/// Largest callback body accepted; platform callbacks are a few KB.
pub const MAX_CALLBACK_BYTES: usize = 64 * 1024;

/// `GET /callback/wecom`: URL verification; the reply is the bare plaintext.
pub async fn wecom_verify(State(s): State<AppState>, RawQuery(q): RawQuery) -> Result<String> {
    let wecom = s.wecom.as_ref().ok_or(Error::NotFound {
        what: "wecom callback",
    })?;
    wecom.verify_url(q.as_deref().unwrap_or_default(), s.clock.now_ms())
}

/// `POST /callback/wecom`: acknowledged with an empty 200 only after the inbox commit.
pub async fn wecom_receive(
    State(s): State<AppState>,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Result<StatusCode> {
    let wecom = s.wecom.as_ref().ok_or(Error::NotFound {
        what: "wecom callback",
    })?;
    let outcome = wecom
        .receive(
            &s.inbox,
            &s.cipher,
            s.clock.now_ms(),
            q.as_deref().unwrap_or_default(),
            &body,
        )
        .await?;
    match &outcome {
        Received::New { event_type, .. } => {
            tracing::debug!(platform = "wecom", %event_type, "callback stored")
        }
        Received::Duplicate => {
            tracing::debug!(platform = "wecom", "duplicate callback acknowledged")
        }
        Received::Quarantined { inbox_id } => {
            tracing::warn!(platform = "wecom", inbox = %inbox_id, "signed callback could not be parsed; quarantined")
        }
    }
    Ok(StatusCode::OK)
}
