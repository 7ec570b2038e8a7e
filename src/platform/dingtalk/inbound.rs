//! DingTalk HTTP-push event subscription into the inbox (PROTOCOLS §2.1, §2.3).
//!
//! Order of checks: query parameters → timestamp window → signature → decrypt (the
//! trailing owner key must be our AppKey, or our CorpId for an enterprise-level
//! subscription) → parse. A failure up to decryption refuses the request with a 4xx and
//! writes nothing; a body that is correctly signed but cannot be parsed is kept in the
//! inbox as `quarantined`. Every accepted push, and the URL check, is answered with the
//! encrypted `success` DingTalk requires, only after the inbox commit.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::Value;

use super::crypto::{Callback, CallbackQuery, DingtalkCrypto};
use super::events;
use crate::config::{ConfigError, DingtalkConfig};
use crate::error::{Error, Result};
use crate::inbox::{InboxWriter, NewEntry};
use crate::platform::crypto::{CryptoError, EncodingAesKey};
use crate::platform::event::{EventKind, InboundEvent};
use crate::platform::wecom::inbound::query_params;
use crate::security::Cipher;

pub const PLATFORM: &str = "dingtalk";

/// One configured DingTalk app receiving event pushes for one organisation.
pub struct DingtalkInbound {
    /// App-level subscription: the owner key is the AppKey.
    app: DingtalkCrypto,
    /// Enterprise-level subscription (registered through the API): the owner key is the
    /// CorpId, when configured.
    corp: Option<DingtalkCrypto>,
    max_skew: Duration,
    org_id: String,
    app_name: String,
    /// The `apiSecret` registered with the card callback route; clicks are refused
    /// without it, since only its signature tells DingTalk's calls from anyone's.
    card_secret: Option<secrecy::SecretString>,
}

/// The signature headers of a card callback (PROTOCOLS §2.4).
pub const CARD_TIMESTAMP_HEADER: &str = "x-ddpaas-signature-timestamp";
pub const CARD_SIGNATURE_HEADER: &str = "x-ddpaas-signature";

/// The signature headers as received.
#[derive(Debug, Clone, Copy)]
pub struct CardSignature<'a> {
    pub timestamp: &'a str,
    pub signature: &'a str,
}

/// What became of a POSTed callback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Received {
    /// DingTalk checking the URL: nothing stored.
    CheckUrl,
    /// Written to the inbox.
    New {
        inbox_id: String,
        event_type: String,
    },
    /// DingTalk re-pushed an event we already hold: acknowledged, not processed again.
    Duplicate,
    /// Signed and decrypted, but unparsable: kept for inspection.
    Quarantined { inbox_id: String },
}

/// A stored card callback, and the press it carries: (DingTalk userid, button key).
#[derive(Debug)]
pub struct CardReceived {
    pub received: Received,
    pub press: Option<(String, String)>,
}

/// The outcome and the JSON body to answer with.
#[derive(Debug)]
pub struct Answer {
    pub received: Received,
    pub reply: String,
}

impl DingtalkInbound {
    pub fn from_config(cfg: &DingtalkConfig, org_id: &str) -> Result<Self, ConfigError> {
        let key = EncodingAesKey::parse(cfg.aes_key.expose()).map_err(|e| ConfigError {
            key: "dingtalk.aes_key".into(),
            problem: e.to_string(),
        })?;
        let token = cfg.token.expose();
        Ok(DingtalkInbound {
            app: DingtalkCrypto::new(token, key.clone(), cfg.app_key.clone()),
            corp: cfg
                .corp_id
                .as_ref()
                .filter(|c| !c.is_empty())
                .map(|c| DingtalkCrypto::new(token, key.clone(), c.clone())),
            max_skew: cfg.max_clock_skew,
            org_id: org_id.to_string(),
            app_name: "default".into(),
            card_secret: cfg
                .card_callback_secret
                .as_ref()
                .filter(|s| !s.expose().is_empty())
                .map(|s| secrecy::SecretString::from(s.expose().to_string())),
        })
    }

    /// `POST /callback/dingtalk`: verify, decrypt, parse, write to the inbox, and build
    /// the encrypted `success` answer.
    pub async fn receive(
        &self,
        inbox: &InboxWriter,
        cipher: &Cipher,
        now_ms: i64,
        raw_query: &str,
        body: &[u8],
    ) -> Result<Answer> {
        let params = query_params(raw_query)?;
        let query = self.query(&params, now_ms)?;
        let (crypto, callback) = self.open(&query, body)?;
        let reply = crypto.success_reply_random(now_ms);
        if events::is_check_url(&callback.message) {
            count("check_url");
            return Ok(Answer {
                received: Received::CheckUrl,
                reply,
            });
        }
        let received = self.store(inbox, cipher, &callback.message).await?;
        Ok(Answer { received, reply })
    }

    /// `POST /callback/dingtalk/card`: a card button press. The signature covers only the
    /// timestamp, so its age is bounded by `max_clock_skew` and repeated deliveries of one
    /// click (same card, user and action) are stored once.
    pub async fn receive_card(
        &self,
        inbox: &InboxWriter,
        cipher: &Cipher,
        now_ms: i64,
        signed: Option<CardSignature<'_>>,
        body: &[u8],
    ) -> Result<CardReceived> {
        let secret = self.card_secret.as_ref().ok_or(Error::NotFound {
            what: "dingtalk card callback",
        })?;
        let signed = signed.ok_or_else(|| {
            count("bad_signature");
            Error::CallbackRejected {
                code: "bad_signature",
                message: "card callback is not signed".into(),
            }
        })?;
        let ts = crate::platform::crypto::parse_timestamp(signed.timestamp)
            .map_err(|e| Error::MalformedBody(e.to_string()))?;
        if !card_signature_valid(secret, signed.timestamp, signed.signature) {
            return Err(rejected(CryptoError::BadSignature));
        }
        let ts_ms = if ts >= 100_000_000_000 {
            ts
        } else {
            ts.saturating_mul(1000)
        };
        check_skew(self.max_skew, now_ms, ts_ms)?;
        let message = std::str::from_utf8(body)
            .ok()
            .filter(|m| serde_json::from_str::<serde_json::Map<String, Value>>(m).is_ok())
            .ok_or_else(|| Error::MalformedBody("card callback is not a JSON object".into()))?;
        let received = self.store(inbox, cipher, message).await?;
        let press = match (&received, events::parse(message)) {
            (
                Received::New { .. } | Received::Duplicate,
                Ok(crate::platform::event::InboundEvent {
                    kind:
                        EventKind::CardAction {
                            user_id,
                            action_key,
                            ..
                        },
                    ..
                }),
            ) => Some((user_id, action_key)),
            _ => None,
        };
        Ok(CardReceived { received, press })
    }

    /// Writes a verified, decrypted message (an event push or a card callback) to the inbox.
    pub async fn store(
        &self,
        inbox: &InboxWriter,
        cipher: &Cipher,
        message: &str,
    ) -> Result<Received> {
        let (entry_type, summary, status, error, ordering_key) = match events::parse(message) {
            Ok(event) => {
                // Events closeloop does not act on (yet) are kept, marked as such, and
                // cost no processing job.
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
                    summary(&event),
                    status,
                    note,
                    ordering_key(&event.kind),
                )
            }
            Err(e) => (
                "unparsable".to_string(),
                Value::Null,
                "quarantined",
                Some(e),
                None,
            ),
        };
        let dedupe_key = events::dedupe_key(message);
        let id = inbox
            .record(
                cipher,
                NewEntry {
                    org_id: &self.org_id,
                    platform: PLATFORM,
                    app: &self.app_name,
                    dedupe_key: &dedupe_key,
                    event_type: &entry_type,
                    body: message,
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
        count(match &outcome {
            Received::New { .. } => "new",
            Received::Duplicate => "duplicate",
            Received::Quarantined { .. } => "quarantined",
            Received::CheckUrl => "check_url",
        });
        Ok(outcome)
    }

    /// Verifies and decrypts with the AppKey, then with the CorpId: whichever subscription
    /// the push came through. The answer is encrypted for the same owner key.
    fn open(&self, query: &CallbackQuery<'_>, body: &[u8]) -> Result<(&DingtalkCrypto, Callback)> {
        match self.app.decrypt_callback(query, body) {
            Err(CryptoError::ReceiverMismatch) => match &self.corp {
                Some(corp) => corp
                    .decrypt_callback(query, body)
                    .map(|cb| (corp, cb))
                    .map_err(rejected),
                None => Err(rejected(CryptoError::ReceiverMismatch)),
            },
            other => other.map(|cb| (&self.app, cb)).map_err(rejected),
        }
    }

    /// The signed parameters, after the timestamp window check (seconds or milliseconds).
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
        check_skew(self.max_skew, now_ms, ts.saturating_mul(1000))?;
        Ok(query)
    }
}

/// Refuses a signed time further than `max_skew` from the server clock; zero turns the
/// check off.
pub(crate) fn check_skew(max_skew: Duration, now_ms: i64, signed_ms: i64) -> Result<()> {
    if max_skew.is_zero() {
        return Ok(());
    }
    let skew_ms = (now_ms - signed_ms).unsigned_abs();
    if skew_ms > max_skew.as_millis() as u64 {
        count("stale");
        return Err(Error::CallbackRejected {
            code: "stale_timestamp",
            message: format!(
                "callback timestamp is {} s away from the server clock (dingtalk.max_clock_skew is {} s)",
                skew_ms / 1000,
                max_skew.as_secs()
            ),
        });
    }
    Ok(())
}

/// Parses a stored message again (inbox processing).
pub fn parse(message: &str) -> Result<InboundEvent, String> {
    events::parse(message)
}

/// The events closeloop acts on so far.
fn acts_on(kind: &EventKind) -> bool {
    matches!(
        kind,
        EventKind::CardAction { .. }
            | EventKind::UserCreated { .. }
            | EventKind::UserUpdated { .. }
            | EventKind::UserDeleted { .. }
    )
}

/// Clicks on one card, and directory changes, are processed in arrival order.
fn ordering_key(kind: &EventKind) -> Option<String> {
    match kind {
        EventKind::CardAction { task_id, .. } => Some(format!("card:{task_id}")),
        EventKind::UserCreated { .. }
        | EventKind::UserUpdated { .. }
        | EventKind::UserDeleted { .. }
        | EventKind::DepartmentCreated { .. }
        | EventKind::DepartmentUpdated { .. }
        | EventKind::DepartmentDeleted { .. } => Some(format!("{PLATFORM}:directory")),
        _ => None,
    }
}

/// The event as the inbox API shows it: ids and types only.
fn summary(event: &InboundEvent) -> Value {
    serde_json::to_value(&event.kind).unwrap_or(Value::Null)
}

fn count(outcome: &'static str) {
    metrics::counter!("closeloop_callbacks_total", "platform" => PLATFORM, "outcome" => outcome)
        .increment(1);
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
    count(code);
    Error::CallbackRejected {
        code,
        message: format!("callback refused: {e}"),
    }
}

/// `x-ddpaas-signature == Base64(HMAC-SHA256(key = apiSecret, msg = timestamp))`, checked in
/// constant time.
fn card_signature_valid(secret: &secrecy::SecretString, timestamp: &str, signature: &str) -> bool {
    use base64::Engine;
    use hmac::Mac;
    use secrecy::ExposeSecret;
    let Ok(provided) = base64::engine::general_purpose::STANDARD.decode(signature) else {
        return false;
    };
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.expose_secret().as_bytes())
        .expect("HMAC takes any key length");
    mac.update(timestamp.as_bytes());
    mac.verify_slice(&provided).is_ok()
}

/// The signature DingTalk puts on a card callback, for the emulator and tests.
pub fn card_signature(secret: &str, timestamp: &str) -> String {
    use base64::Engine;
    use hmac::Mac;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes())
        .expect("HMAC takes any key length");
    mac.update(timestamp.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}
