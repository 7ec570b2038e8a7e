//! WeCom callbacks in: URL verification (GET) and event delivery (POST) into the inbox.
//!
//! Order of checks: query parameters → timestamp window → signature → decrypt (which
//! checks the receive id is our corp id) → parse. A failure up to decryption refuses the
//! request with a 4xx and writes nothing; a body that is correctly signed but cannot be
//! parsed is kept in the inbox as `quarantined`, never lost.

use std::collections::HashMap;
use std::time::Duration;

use percent_encoding::percent_decode_str;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::crypto::{CallbackQuery, WecomCrypto};
use super::events;
use crate::config::{ConfigError, WecomConfig};
use crate::error::{Error, Result};
use crate::inbox::{InboxWriter, NewEntry};
use crate::platform::crypto::{CryptoError, EncodingAesKey};
use crate::platform::event::{EventKind, InboundEvent};
use crate::security::Cipher;

pub const PLATFORM: &str = "wecom";

/// One configured WeCom app receiving callbacks for one organisation.
pub struct WecomInbound {
    crypto: WecomCrypto,
    max_skew: Duration,
    org_id: String,
    app: String,
}

/// What became of a POSTed callback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received {
    /// Written to the inbox.
    New {
        inbox_id: String,
        event_type: String,
    },
    /// The platform retried an event we already hold: acknowledged, not processed again.
    Duplicate,
    /// Signed and decrypted, but unparsable: kept for inspection.
    Quarantined { inbox_id: String },
}

impl WecomInbound {
    pub fn from_config(cfg: &WecomConfig, org_id: &str) -> Result<Self, ConfigError> {
        let key =
            EncodingAesKey::parse(cfg.encoding_aes_key.expose()).map_err(|e| ConfigError {
                key: "wecom.encoding_aes_key".into(),
                problem: e.to_string(),
            })?;
        Ok(WecomInbound {
            crypto: WecomCrypto::new(cfg.token.expose(), key, cfg.corp_id.clone()),
            max_skew: cfg.max_clock_skew,
            org_id: org_id.to_string(),
            app: "default".into(),
        })
    }

    /// `GET /callback/wecom`: the plaintext `echostr`, to be sent back as the whole body.
    pub fn verify_url(&self, raw_query: &str, now_ms: i64) -> Result<String> {
        let params = query_params(raw_query)?;
        let query = self.query(&params, now_ms)?;
        let echostr = params
            .get("echostr")
            .ok_or_else(|| Error::MalformedBody("missing query parameter echostr".into()))?;
        self.crypto
            .verify_url(query.msg_signature, query.timestamp, query.nonce, echostr)
            .map_err(rejected)
    }

    /// `POST /callback/wecom`: verify, decrypt, parse, and write to the inbox.
    pub async fn receive(
        &self,
        inbox: &InboxWriter,
        cipher: &Cipher,
        now_ms: i64,
        raw_query: &str,
        body: &[u8],
    ) -> Result<Received> {
        let params = query_params(raw_query)?;
        let query = self.query(&params, now_ms)?;
        let callback = self
            .crypto
            .decrypt_callback(&query, body)
            .map_err(rejected)?;
        let (entry_type, dedupe_key, summary, status, error, ordering_key) =
            match parse(&callback.message) {
                Ok(event) => {
                    let key = events::dedupe_key(&event, &callback.message);
                    let order = ordering_key(&event.kind);
                    // Events closeloop does not act on (yet) are kept, marked as such,
                    // and cost no processing job.
                    let (status, note) = if acts_on(&event.kind) {
                        ("received", None)
                    } else {
                        (
                            "ignored",
                            Some("no handler for this event type yet".to_string()),
                        )
                    };
                    (
                        event.type_name.clone(),
                        key,
                        summary(&event),
                        status,
                        note,
                        order,
                    )
                }
                Err(e) => (
                    "unparsable".to_string(),
                    format!(
                        "sha256:{}",
                        hex::encode(Sha256::digest(callback.message.as_bytes()))
                    ),
                    Value::Null,
                    "quarantined",
                    Some(e),
                    None,
                ),
            };
        let id = inbox
            .record(
                cipher,
                NewEntry {
                    org_id: &self.org_id,
                    platform: PLATFORM,
                    app: &self.app,
                    dedupe_key: &dedupe_key,
                    event_type: &entry_type,
                    body: &callback.message,
                    summary,
                    status,
                    error: error.as_deref(),
                    process: status == "received",
                    ordering_key,
                },
            )
            .await?;
        let outcome = match id {
            None => Received::Duplicate,
            Some(inbox_id) if status == "quarantined" => Received::Quarantined { inbox_id },
            Some(inbox_id) => Received::New {
                inbox_id,
                event_type: entry_type,
            },
        };
        let label = match &outcome {
            Received::New { .. } => "new",
            Received::Duplicate => "duplicate",
            Received::Quarantined { .. } => "quarantined",
        };
        metrics::counter!("closeloop_callbacks_total", "platform" => PLATFORM, "outcome" => label)
            .increment(1);
        Ok(outcome)
    }

    /// The signed parameters, after the timestamp window check.
    fn query<'a>(
        &self,
        params: &'a HashMap<String, String>,
        now_ms: i64,
    ) -> Result<CallbackQuery<'a>> {
        let query = CallbackQuery::from_lookup(|k| params.get(k).map(String::as_str))
            .map_err(|e| Error::MalformedBody(e.to_string()))?;
        let ts = query
            .timestamp_secs()
            .map_err(|e| Error::MalformedBody(e.to_string()))?;
        if !self.max_skew.is_zero() {
            let skew_ms = (now_ms - ts.saturating_mul(1000)).unsigned_abs();
            if skew_ms > self.max_skew.as_millis() as u64 {
                metrics::counter!("closeloop_callbacks_total", "platform" => PLATFORM, "outcome" => "stale")
                    .increment(1);
                return Err(Error::CallbackRejected {
                    code: "stale_timestamp",
                    message: format!(
                        "callback timestamp is {} s away from the server clock (wecom.max_clock_skew is {} s)",
                        skew_ms / 1000,
                        self.max_skew.as_secs()
                    ),
                });
            }
        }
        Ok(query)
    }
}

/// Parses the decrypted message: XML from the XML envelope, JSON from the JSON one.
pub fn parse(message: &str) -> Result<InboundEvent, String> {
    let trimmed = message.trim_start();
    if trimmed.starts_with('{') {
        let xml = json_message_as_xml(trimmed)?;
        events::parse(&xml).map_err(|e| e.to_string())
    } else {
        events::parse(message).map_err(|e| e.to_string())
    }
}

/// The JSON envelope carries the same flat fields as the XML one; rewrite them as XML
/// so one parser serves both.
fn json_message_as_xml(json: &str) -> Result<String, String> {
    let v: Value =
        serde_json::from_str(json).map_err(|_| "message is not valid JSON".to_string())?;
    let obj = v.as_object().ok_or("message is not a JSON object")?;
    let mut xml = String::from("<xml>");
    for (k, v) in obj {
        if !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') || k.is_empty() {
            return Err(format!("unexpected field name {k:?}"));
        }
        let text = match v {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            _ => continue,
        };
        xml.push_str(&format!("<{k}>{}</{k}>", escape(&text)));
    }
    xml.push_str("</xml>");
    Ok(xml)
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The events closeloop acts on so far.
fn acts_on(kind: &EventKind) -> bool {
    matches!(
        kind,
        EventKind::CardAction { .. }
            | EventKind::ExternalContactAdded { .. }
            | EventKind::ExternalContactRemoved { .. }
            | EventKind::UserCreated { .. }
            | EventKind::UserUpdated { .. }
            | EventKind::UserDeleted { .. }
    )
}

/// Which callbacks must be processed in arrival order: clicks with the updates of their
/// card, changes of one customer, and directory changes. Messages need no order.
fn ordering_key(kind: &EventKind) -> Option<String> {
    match kind {
        EventKind::CardAction { task_id, .. } => Some(format!("card:{task_id}")),
        EventKind::ExternalContactAdded {
            external_user_id, ..
        }
        | EventKind::ExternalContactEdited {
            external_user_id, ..
        }
        | EventKind::ExternalContactRemoved {
            external_user_id, ..
        }
        | EventKind::ExternalContactTransferFailed {
            external_user_id, ..
        } => Some(format!("{PLATFORM}:external:{external_user_id}")),
        EventKind::UserCreated { .. }
        | EventKind::UserUpdated { .. }
        | EventKind::UserDeleted { .. }
        | EventKind::DepartmentCreated { .. }
        | EventKind::DepartmentUpdated { .. }
        | EventKind::DepartmentDeleted { .. } => Some(format!("{PLATFORM}:directory")),
        _ => None,
    }
}

/// The event as the inbox API shows it: ids and types, no message text.
fn summary(event: &InboundEvent) -> Value {
    let mut v = serde_json::to_value(&event.kind).unwrap_or(Value::Null);
    if let Value::Object(m) = &mut v {
        match &event.kind {
            EventKind::Message { .. } => {
                m.remove("text");
            }
            // A one-shot credential for updating the card, not for display.
            EventKind::CardAction { .. } => {
                m.remove("response_code");
            }
            _ => {}
        }
    }
    v
}

/// Percent-decodes the query string. `+` stays `+`: WeCom's base64 values contain it.
pub fn query_params(raw: &str) -> Result<HashMap<String, String>> {
    let mut out = HashMap::new();
    for pair in raw.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let decode = |s: &str| {
            percent_decode_str(s)
                .decode_utf8()
                .map(|c| c.into_owned())
                .map_err(|_| Error::MalformedBody("query string is not valid UTF-8".into()))
        };
        out.insert(decode(k)?, decode(v)?);
    }
    Ok(out)
}

fn rejected(e: CryptoError) -> Error {
    let code = match e {
        CryptoError::BadSignature => "bad_signature",
        CryptoError::ReceiverMismatch => "wrong_receiver",
        CryptoError::MalformedEnvelope(_)
        | CryptoError::MissingParam(_)
        | CryptoError::InvalidTimestamp => return Error::MalformedBody(e.to_string()),
        _ => "undecryptable",
    };
    metrics::counter!("closeloop_callbacks_total", "platform" => PLATFORM, "outcome" => code)
        .increment(1);
    Error::CallbackRejected {
        code,
        message: format!("callback refused: {e}"),
    }
}
