//! Platform callback endpoints. Verification and parsing live in `platform/`; every
//! endpoint carries the raw request there and goes through the one pipeline
//! (`platform::inbound::receive`: verify → inbox → acknowledge), then turns the platform's
//! ack into its reply.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::Value;

use super::AppState;
use crate::error::{Error, Result};
use crate::platform::inbound::Inbound;
use crate::platform::{dingtalk, feishu, wecom};

/// Largest callback body accepted; platform callbacks are a few KB.
pub const MAX_CALLBACK_BYTES: usize = 64 * 1024;

/// Runs `request` through the pipeline of the configured platform (404 when it is not
/// configured) and gives back the platform's ack, after the inbox commit.
async fn receive<R, I: Inbound<R>>(
    s: &AppState,
    configured: Option<&Arc<I>>,
    what: &'static str,
    request: R,
) -> Result<I::Ack> {
    let inbound = configured.ok_or(Error::NotFound { what })?;
    let received = crate::platform::inbound::receive(
        inbound.as_ref(),
        &s.inbox,
        &s.cipher,
        s.clock.now_ms(),
        request,
    )
    .await?;
    Ok(received.ack)
}

fn header<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// `GET /callback/wecom`: URL verification; the reply is the bare plaintext.
pub async fn wecom_verify(State(s): State<AppState>, RawQuery(q): RawQuery) -> Result<String> {
    let request = wecom::inbound::UrlCheck(q.as_deref().unwrap_or_default());
    receive(&s, s.wecom.as_ref(), "wecom callback", request).await
}

/// `POST /callback/wecom`: acknowledged with an empty 200 only after the inbox commit.
pub async fn wecom_receive(
    State(s): State<AppState>,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Result<StatusCode> {
    let request = wecom::inbound::Push {
        raw_query: q.as_deref().unwrap_or_default(),
        body: &body,
    };
    receive(&s, s.wecom.as_ref(), "wecom callback", request).await?;
    Ok(StatusCode::OK)
}

/// `POST /callback/feishu`: the URL check is answered with its challenge; events are
/// acknowledged only after the inbox commit. A card click is answered (Feishu waits at most
/// 3 s) with a toast and the card as it now looks; later changes edit the message.
pub async fn feishu_receive(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>> {
    use feishu::crypto::{NONCE_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER};
    use feishu::inbound::{Ack, SignedHeaders};

    let signed = match (
        header(&headers, TIMESTAMP_HEADER),
        header(&headers, NONCE_HEADER),
        header(&headers, SIGNATURE_HEADER),
    ) {
        (Some(timestamp), Some(nonce), Some(signature)) => Some(SignedHeaders {
            timestamp,
            nonce,
            signature,
        }),
        _ => None,
    };
    let request = feishu::inbound::Push {
        signed,
        body: &body,
    };
    match receive(&s, s.feishu.as_ref(), "feishu callback", request).await? {
        Ack::Challenge(challenge) => Ok(Json(serde_json::json!({ "challenge": challenge }))),
        // The click is stored; its answer shows the card as it will look once processed.
        Ack::Event { click: Some(click) } => Ok(Json(
            feishu::cards::click_answer(
                &s.db,
                &s.cipher,
                &s.default_org.id,
                &s.config.public_url,
                &click,
            )
            .await?,
        )),
        Ack::Event { click: None } => Ok(Json(serde_json::json!({ "msg": "success" }))),
    }
}

/// `POST /callback/dingtalk`: every accepted push (and the URL check) is answered with the
/// encrypted `success`, only after the inbox commit.
pub async fn dingtalk_receive(
    State(s): State<AppState>,
    RawQuery(q): RawQuery,
    body: Bytes,
) -> Result<Response> {
    let request = dingtalk::inbound::Push {
        raw_query: q.as_deref().unwrap_or_default(),
        body: &body,
    };
    let reply = receive(&s, s.dingtalk.as_ref(), "dingtalk callback", request).await?;
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        reply,
    )
        .into_response())
}

/// `POST /callback/dingtalk/card`: a card button press, stored before the answer, which
/// shows the card as it will look once the press is processed (the card itself is updated
/// by the click's processing).
pub async fn dingtalk_card(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>> {
    use dingtalk::inbound::{CardSignature, CARD_SIGNATURE_HEADER, CARD_TIMESTAMP_HEADER};

    let signed = match (
        header(&headers, CARD_TIMESTAMP_HEADER),
        header(&headers, CARD_SIGNATURE_HEADER),
    ) {
        (Some(timestamp), Some(signature)) => Some(CardSignature {
            timestamp,
            signature,
        }),
        _ => None,
    };
    let request = dingtalk::inbound::CardPress {
        signed,
        body: &body,
    };
    let (user, key) = receive(&s, s.dingtalk.as_ref(), "dingtalk card callback", request).await?;
    let preview = crate::cards::preview_click(
        &s.db,
        &s.cipher,
        &s.default_org.id,
        crate::chat::event::Platform::Dingtalk,
        &user,
        &key,
    )
    .await?;
    Ok(Json(dingtalk::cards::click_answer(&preview)))
}
