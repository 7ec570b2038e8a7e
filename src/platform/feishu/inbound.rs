//! Feishu event callbacks in (`POST /callback/feishu`), verified here and stored through the
//! shared pipeline (`platform::inbound`)
//! (docs/protocols/feishu.md#callback-security-and-crypto, #retries-timeouts-and-dedupe).
//!
//! With an Encrypt Key: timestamp window → `X-Lark-Signature` over the raw body → decrypt →
//! Verification Token (when configured) → parse. Without one the body is plaintext and the
//! Verification Token inside it is the only proof of origin. Which schema a body is, its
//! type and its token follow the official SDK's precedence (`docs/protocols/feishu.md`).
//! A failure up to the token check refuses the request with a 4xx and writes nothing; a
//! body that is signed but cannot be parsed is kept in the inbox as `quarantined`, never
//! lost.

use std::time::Duration;

use serde_json::Value;
use subtle::ConstantTimeEq;

use super::crypto::FeishuCrypto;
use super::events::{self, EnvelopeKind};
use crate::chat::event::{EventKind, InboundEvent};
use crate::config::{ConfigError, FeishuConfig, Secret};
use crate::error::{Error, Result};
use crate::platform::crypto::CryptoError;
use crate::platform::inbound::{self, digest_key, Entry, Inbound, Source, Verified};

pub const PLATFORM: &str = "feishu";

/// The signed request headers (`X-Lark-Request-Timestamp`, `X-Lark-Request-Nonce`,
/// `X-Lark-Signature`).
#[derive(Debug, Clone, Copy)]
pub struct SignedHeaders<'a> {
    pub timestamp: &'a str,
    pub nonce: &'a str,
    pub signature: &'a str,
}

/// A card button press (`card.action.trigger`), which Feishu wants answered within 3 s with
/// the card as it now looks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Click {
    /// The Feishu `user_id` (or `open_id`) of who pressed.
    pub user: String,
    /// The button key, `<action>:<card id>`.
    pub key: String,
}

/// One configured Feishu app receiving event callbacks for one organisation.
pub struct FeishuInbound {
    crypto: Option<FeishuCrypto>,
    verification_token: Option<Secret>,
    max_skew: Duration,
    source: Source,
}

/// `POST /callback/feishu`: the signed headers (when present) and the body.
pub struct Push<'a> {
    pub signed: Option<SignedHeaders<'a>>,
    pub body: &'a [u8],
}

/// How a callback is answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ack {
    /// The console's URL check: answer with this challenge.
    Challenge(String),
    /// An event, stored: answered with `success`, or for a card click, with the card as it
    /// now looks.
    Event { click: Option<Click> },
}

impl FeishuInbound {
    pub fn from_config(cfg: &FeishuConfig, org_id: &str) -> Result<Self, ConfigError> {
        let crypto = match cfg.encrypt_key.as_ref().filter(|k| !k.expose().is_empty()) {
            Some(key) => Some(FeishuCrypto::new(key.expose()).map_err(|e| ConfigError {
                key: "feishu.encrypt_key".into(),
                problem: e.to_string(),
            })?),
            None => None,
        };
        let verification_token = cfg
            .verification_token
            .clone()
            .filter(|t| !t.expose().is_empty());
        if crypto.is_none() && verification_token.is_none() {
            return Err(ConfigError {
                key: "feishu.verification_token".into(),
                problem: "required when feishu.encrypt_key is not set: without either, \
                          callbacks cannot be authenticated"
                    .into(),
            });
        }
        Ok(FeishuInbound {
            crypto,
            verification_token,
            max_skew: cfg.max_clock_skew,
            source: Source::new(PLATFORM, org_id),
        })
    }

    /// The payload as JSON text: decrypted when the body carries a non-empty `encrypt`,
    /// otherwise the body itself, with or without an Encrypt Key configured (as the SDK
    /// reads it; without a key every event still needs its token, with one its signature).
    fn plaintext(&self, body: &[u8]) -> Result<String> {
        let text = std::str::from_utf8(body)
            .map_err(|_| Error::MalformedBody("body is not UTF-8".into()))?;
        let encrypted = match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(m)) => match m.get("encrypt") {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) if s.is_empty() => None,
                Some(Value::String(s)) => Some(s.clone()),
                Some(_) => {
                    return Err(Error::MalformedBody(
                        "callback refused: encrypt is not a string".into(),
                    ))
                }
            },
            // Not an object: reading its envelope says why it is refused.
            _ => None,
        };
        match (encrypted, &self.crypto) {
            (None, _) => Ok(text.to_owned()),
            (Some(encrypted), Some(crypto)) => crypto.decrypt(&encrypted).map_err(rejected),
            (Some(_), None) => Err(refused(
                "undecryptable",
                "callback refused: the body is encrypted but feishu.encrypt_key is not set",
            )),
        }
    }

    /// `X-Lark-Request-Timestamp` is Unix seconds; `max_clock_skew = 0` turns the check off.
    fn check_timestamp(&self, timestamp: &str, now_ms: i64) -> Result<()> {
        let ts: i64 = timestamp
            .parse()
            .ok()
            .filter(|_| timestamp.bytes().all(|b| b.is_ascii_digit()))
            .ok_or_else(|| {
                Error::MalformedBody("X-Lark-Request-Timestamp is not a number".into())
            })?;
        inbound::check_skew(PLATFORM, self.max_skew, now_ms, ts.saturating_mul(1000))
    }
}

impl Inbound<Push<'_>> for FeishuInbound {
    type Ack = Ack;

    fn source(&self) -> &Source {
        &self.source
    }

    /// Authenticates, decrypts and parses. An event is keyed by its `event_id`; a signed
    /// body whose envelope cannot be read, by its digest.
    fn verify(&self, request: Push<'_>, now_ms: i64) -> Result<Verified<Ack>> {
        let (signed, body) = (request.signed, request.body);
        let stored = Ack::Event { click: None };
        let signature_checked = match (&self.crypto, signed) {
            (Some(crypto), Some(h)) => {
                self.check_timestamp(h.timestamp, now_ms)?;
                crypto
                    .verify_signature(h.timestamp, h.nonce, body, h.signature)
                    .map_err(rejected)?;
                true
            }
            _ => false,
        };
        let plain = match self.plaintext(body) {
            Ok(plain) => plain,
            // The signature held: Feishu sent this, only it cannot be read. Kept.
            Err(e) if signature_checked => {
                let raw = String::from_utf8_lossy(body).into_owned();
                let error = format!("cannot decrypt: {e}");
                let entry = Entry::quarantined(digest_key(body), "unparsable", raw, error);
                return Ok(Verified::store(entry, stored));
            }
            Err(e) => return Err(e),
        };
        let envelope = serde_json::from_str::<Value>(&plain)
            .map_err(|_| "payload is not valid JSON".to_string())
            .and_then(|v| events::envelope(&v));
        let envelope = match envelope {
            Ok(e) => e,
            // Only a signature vouches for a body we cannot read the token of.
            Err(e) if signature_checked => {
                let key = digest_key(plain.as_bytes());
                let entry = Entry::quarantined(key, "unparsable", plain, e);
                return Ok(Verified::store(entry, stored));
            }
            Err(e) => return Err(Error::MalformedBody(e)),
        };
        // As the SDK: the token is the proof where nothing else is (no Encrypt Key, or the
        // unsigned URL check), and a token a body does carry must be right; a signed event
        // without one is vouched for by its signature.
        let token_required = self.crypto.is_none()
            || matches!(envelope.kind, EnvelopeKind::UrlVerification { .. })
            || envelope.token.is_some();
        if let (Some(expected), true) = (&self.verification_token, token_required) {
            let given = envelope.token.as_deref().unwrap_or_default();
            if !bool::from(given.as_bytes().ct_eq(expected.expose().as_bytes())) {
                return Err(refused(
                    "bad_token",
                    "callback refused: verification token mismatch",
                ));
            }
        }
        let event_id = match envelope.kind {
            // The SDK answers the URL check without a signature: the console may not sign it.
            EnvelopeKind::UrlVerification { challenge } => {
                count("challenge");
                return Ok(Verified::answer(Ack::Challenge(challenge)));
            }
            EnvelopeKind::Event { event_id } => event_id,
        };
        if self.crypto.is_some() && !signature_checked {
            return Err(refused(
                "missing_signature",
                "callback refused: X-Lark-Signature headers missing",
            ));
        }
        let parsed = parse(&plain);
        let click = match &parsed {
            Ok(InboundEvent {
                kind:
                    EventKind::CardAction {
                        user_id,
                        action_key,
                        ..
                    },
                ..
            }) => Some(Click {
                user: user_id.clone(),
                key: action_key.clone(),
            }),
            _ => None,
        };
        Ok(Verified::store(
            Entry::parsed(event_id, plain, parsed),
            Ack::Event { click },
        ))
    }
}

/// Parses a decrypted (or plaintext) event payload, as stored in the inbox.
pub fn parse(body: &str) -> Result<InboundEvent, String> {
    events::parse(body)
}

fn count(outcome: &'static str) {
    inbound::count(PLATFORM, outcome);
}

fn refused(code: &'static str, message: &str) -> Error {
    inbound::refused(PLATFORM, code, message)
}

fn rejected(e: CryptoError) -> Error {
    match e {
        CryptoError::BadSignature => refused("bad_signature", "callback refused: bad signature"),
        CryptoError::MalformedEnvelope(_) => {
            count("malformed");
            Error::MalformedBody(format!("callback refused: {e}"))
        }
        _ => refused("undecryptable", "callback refused: cannot decrypt"),
    }
}
