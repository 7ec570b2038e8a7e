//! DingTalk HTTP-push event subscription into the inbox
//! (docs/protocols/dingtalk.md#callback-security-and-crypto, #retries-timeouts-and-dedupe).
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
use crate::chat::event::{EventKind, InboundEvent};
use crate::config::{ConfigError, DingtalkConfig};
use crate::error::{Error, Result};
use crate::inbox::{InboxWriter, NewEntry};
use crate::platform::crypto::{CryptoError, EncodingAesKey};
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
    /// Card-callback signatures seen within the age bound, with a digest of the body each
    /// came with: the signature covers only the timestamp, so one captured header pair
    /// must not carry a different body.
    seen_card_signatures: std::sync::Mutex<HashMap<String, (i64, [u8; 32])>>,
}

/// How old a card callback's signed timestamp may be when `max_clock_skew` is 0: the
/// signature covers nothing but that timestamp, so its age is always bounded.
const CARD_MAX_AGE: Duration = Duration::from_secs(300);

/// The signature headers of a card callback (docs/protocols/dingtalk.md#the-card-callback).
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
            seen_card_signatures: std::sync::Mutex::new(HashMap::new()),
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
        let (crypto, callback) = match self.open(&query, body) {
            Ok(opened) => opened,
            // The signature held, so DingTalk sent this: kept for inspection, never lost.
            Err(e) if signed_but_unreadable(&e) => {
                let received = self.quarantine(inbox, cipher, body, &e.to_string()).await?;
                return Ok(Answer {
                    received,
                    reply: self.app.success_reply_random(now_ms),
                });
            }
            Err(e) => return Err(rejected(e)),
        };
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
        let max_age = if self.max_skew.is_zero() {
            CARD_MAX_AGE
        } else {
            self.max_skew
        };
        check_skew(max_age, now_ms, ts_ms)?;
        // Only a card callback is taken here: the signature does not cover the body, so
        // nothing else may come in on it (not even to quarantine).
        let message = std::str::from_utf8(body)
            .ok()
            .filter(|m| {
                matches!(
                    events::parse(m),
                    Ok(crate::chat::event::InboundEvent {
                        kind: EventKind::CardAction { .. },
                        ..
                    })
                )
            })
            .ok_or_else(|| {
                count("malformed");
                Error::MalformedBody("not a DingTalk card callback (actionCallback)".into())
            })?;
        self.check_replay(signed.signature, body, now_ms, max_age)?;
        let received = self.store(inbox, cipher, message).await?;
        let press = match (&received, events::parse(message)) {
            (
                Received::New { .. } | Received::Duplicate,
                Ok(crate::chat::event::InboundEvent {
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

    /// Refuses a card signature seen before with a different body (a captured header pair
    /// replayed with a forged click). The same body again is a retry: let through to the
    /// inbox, which dedupes it. Kept in memory for the age bound, per process.
    fn check_replay(
        &self,
        signature: &str,
        body: &[u8],
        now_ms: i64,
        max_age: Duration,
    ) -> Result<()> {
        use sha2::{Digest, Sha256};
        let digest: [u8; 32] = Sha256::digest(body).into();
        let mut seen = self
            .seen_card_signatures
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        seen.retain(|_, (until, _)| *until > now_ms);
        match seen.get(signature) {
            Some((_, d)) if *d != digest => {
                count("replayed_signature");
                Err(Error::CallbackRejected {
                    code: "replayed_signature",
                    message: "card callback refused: this signature came with another body".into(),
                })
            }
            Some(_) => Ok(()),
            None => {
                // Both directions of clock skew: a timestamp ahead of the clock stays
                // acceptable for twice the bound.
                seen.insert(
                    signature.to_string(),
                    (now_ms + 2 * max_age.as_millis() as i64, digest),
                );
                Ok(())
            }
        }
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
    fn open(
        &self,
        query: &CallbackQuery<'_>,
        body: &[u8],
    ) -> std::result::Result<(&DingtalkCrypto, Callback), CryptoError> {
        match self.app.decrypt_callback(query, body) {
            Err(CryptoError::ReceiverMismatch) => match &self.corp {
                Some(corp) => corp.decrypt_callback(query, body).map(|cb| (corp, cb)),
                None => Err(CryptoError::ReceiverMismatch),
            },
            other => other.map(|cb| (&self.app, cb)),
        }
    }

    /// Keeps a correctly signed push that cannot be decrypted, keyed by its digest.
    async fn quarantine(
        &self,
        inbox: &InboxWriter,
        cipher: &Cipher,
        body: &[u8],
        error: &str,
    ) -> Result<Received> {
        use sha2::{Digest, Sha256};
        let key = format!("sha256:{}", hex::encode(Sha256::digest(body)));
        let id = inbox
            .record(
                cipher,
                NewEntry {
                    org_id: &self.org_id,
                    platform: PLATFORM,
                    app: &self.app_name,
                    dedupe_key: &key,
                    event_type: "undecryptable",
                    body: &String::from_utf8_lossy(body),
                    summary: Value::Null,
                    status: "quarantined",
                    error: Some(error),
                    process: false,
                    ordering_key: None,
                },
            )
            .await?;
        count("quarantined");
        Ok(match id {
            None => Received::Duplicate,
            Some(inbox_id) => Received::Quarantined { inbox_id },
        })
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

/// Failures that come after the signature was found good: the push is DingTalk's, only
/// its content is unreadable. (A message for another receiver is a configuration error:
/// refused, so it shows.)
fn signed_but_unreadable(e: &CryptoError) -> bool {
    matches!(
        e,
        CryptoError::MalformedCiphertext
            | CryptoError::BadPadding
            | CryptoError::BadLength
            | CryptoError::NotUtf8
    )
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
            | EventKind::MeetingChanged { .. }
            | EventKind::DirectoryChanged
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
        | EventKind::DepartmentDeleted { .. }
        | EventKind::DirectoryChanged => Some(format!("{PLATFORM}:directory")),
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
