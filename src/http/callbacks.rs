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

/// `POST /callback/feishu`: the URL check is answered with its challenge; events are
/// acknowledged only after the inbox commit. A card click is answered (Feishu waits at most
/// 3 s) with a toast and the card as it now looks; later changes edit the message.
pub async fn feishu_receive(
    State(s): State<AppState>,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> Result<axum::Json<serde_json::Value>> {
    use crate::platform::feishu::crypto::{NONCE_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER};
    use crate::platform::feishu::inbound::{Received as FeishuReceived, SignedHeaders};

    let feishu = s.feishu.as_ref().ok_or(Error::NotFound {
        what: "feishu callback",
    })?;
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let signed = match (
        header(TIMESTAMP_HEADER),
        header(NONCE_HEADER),
        header(SIGNATURE_HEADER),
    ) {
        (Some(timestamp), Some(nonce), Some(signature)) => Some(SignedHeaders {
            timestamp,
            nonce,
            signature,
        }),
        _ => None,
    };
    let outcome = feishu
        .receive(&s.inbox, &s.cipher, s.clock.now_ms(), signed, &body)
        .await?;
    let click = match outcome {
        FeishuReceived::Challenge(challenge) => {
            return Ok(axum::Json(serde_json::json!({ "challenge": challenge })))
        }
        FeishuReceived::New {
            event_type, click, ..
        } => {
            tracing::debug!(platform = "feishu", %event_type, "callback stored");
            click
        }
        FeishuReceived::Duplicate { click, .. } => {
            tracing::debug!(platform = "feishu", "duplicate callback acknowledged");
            click
        }
        FeishuReceived::Quarantined { inbox_id } => {
            tracing::warn!(platform = "feishu", inbox = %inbox_id, "signed callback could not be parsed; quarantined");
            None
        }
    };
    match click {
        // The click is stored; its answer shows the card as it will look once processed.
        Some(click) => Ok(axum::Json(
            crate::platform::feishu::cards::click_answer(
                &s.db,
                &s.cipher,
                &s.default_org.id,
                &s.config.public_url,
                &click,
            )
            .await?,
        )),
        None => Ok(axum::Json(serde_json::json!({ "msg": "success" }))),
    }
}

/// `POST /callback/dingtalk`: every accepted push (and the URL check) is answered with the
/// encrypted `success`, only after the inbox commit.
pub async fn dingtalk_receive(
    State(s): State<AppState>,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Result<axum::response::Response> {
    use crate::platform::dingtalk::inbound::Received as DingtalkReceived;
    use axum::response::IntoResponse;

    let dingtalk = s.dingtalk.as_ref().ok_or(Error::NotFound {
        what: "dingtalk callback",
    })?;
    let answer = dingtalk
        .receive(
            &s.inbox,
            &s.cipher,
            s.clock.now_ms(),
            q.as_deref().unwrap_or_default(),
            &body,
        )
        .await?;
    match &answer.received {
        DingtalkReceived::CheckUrl => tracing::debug!(platform = "dingtalk", "url check answered"),
        DingtalkReceived::New { event_type, .. } => {
            tracing::debug!(platform = "dingtalk", %event_type, "callback stored")
        }
        DingtalkReceived::Duplicate => {
            tracing::debug!(platform = "dingtalk", "duplicate callback acknowledged")
        }
        DingtalkReceived::Quarantined { inbox_id } => {
            tracing::warn!(platform = "dingtalk", inbox = %inbox_id, "signed callback could not be parsed; quarantined")
        }
    }
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        answer.reply,
    )
        .into_response())
}

/// `POST /callback/dingtalk/card`: a card button press, stored before the (empty) answer;
/// the card itself is updated by the click's processing.
pub async fn dingtalk_card(
    State(s): State<AppState>,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> Result<axum::Json<serde_json::Value>> {
    use crate::platform::dingtalk::inbound::{
        CardSignature, CARD_SIGNATURE_HEADER, CARD_TIMESTAMP_HEADER,
    };

    let dingtalk = s.dingtalk.as_ref().ok_or(Error::NotFound {
        what: "dingtalk card callback",
    })?;
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let signed = match (header(CARD_TIMESTAMP_HEADER), header(CARD_SIGNATURE_HEADER)) {
        (Some(timestamp), Some(signature)) => Some(CardSignature {
            timestamp,
            signature,
        }),
        _ => None,
    };
    let received = dingtalk
        .receive_card(&s.inbox, &s.cipher, s.clock.now_ms(), signed, &body)
        .await?;
    tracing::debug!(platform = "dingtalk", outcome = ?received, "card callback");
    // Stored; the answer shows the card as it will look once the press is processed.
    let preview = match &received.press {
        Some((user, key)) => {
            crate::cards::preview_click(
                &s.db,
                &s.cipher,
                &s.default_org.id,
                crate::chat::event::Platform::Dingtalk,
                user,
                key,
            )
            .await?
        }
        None => crate::cards::Preview::Unknown,
    };
    Ok(axum::Json(crate::platform::dingtalk::cards::click_answer(
        &preview,
    )))
}
