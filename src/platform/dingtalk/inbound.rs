//! DingTalk HTTP-push event subscription and card callbacks, verified here and stored through
//! the shared pipeline (`platform::inbound`)
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

use super::crypto::{Callback, CallbackQuery, DingtalkCrypto};
use super::events;
use crate::chat::event::{EventKind, InboundEvent};
use crate::config::{ConfigError, DingtalkConfig};
use crate::error::{Error, Result};
use crate::platform::crypto::{CryptoError, EncodingAesKey};
use crate::platform::inbound::{
    self, digest_key, envelope_refused, query_params, refused, Entry, Inbound, Source, Verified,
};

pub const PLATFORM: &str = "dingtalk";

/// One configured DingTalk app receiving event pushes for one organisation.
pub struct DingtalkInbound {
    /// App-level subscription: the owner key is the AppKey.
    app: DingtalkCrypto,
    /// Enterprise-level subscription (registered through the API): the owner key is the
    /// CorpId, when configured.
    corp: Option<DingtalkCrypto>,
    max_skew: Duration,
    source: Source,
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

/// `POST /callback/dingtalk`: an event push (or the URL check), with the raw query string
/// and body. Answered with the encrypted `success`.
pub struct Push<'a> {
    pub raw_query: &'a str,
    pub body: &'a [u8],
}

/// `POST /callback/dingtalk/card`: a card button press, with its signature headers and body.
/// Answered with the card as it will look once the press is processed; the ack is the
/// press: (DingTalk userid, button key).
pub struct CardPress<'a> {
    pub signed: Option<CardSignature<'a>>,
    pub body: &'a [u8],
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
            source: Source::new(PLATFORM, org_id),
            card_secret: cfg
                .card_callback_secret
                .as_ref()
                .filter(|s| !s.expose().is_empty())
                .map(|s| secrecy::SecretString::from(s.expose().to_string())),
            seen_card_signatures: std::sync::Mutex::new(HashMap::new()),
        })
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
        inbound::check_skew(PLATFORM, self.max_skew, now_ms, ts.saturating_mul(1000))?;
        Ok(query)
    }
}

impl Inbound<Push<'_>> for DingtalkInbound {
    type Ack = String;

    fn source(&self) -> &Source {
        &self.source
    }

    /// Verifies, decrypts and parses a push, and builds the encrypted `success` answer for
    /// the owner key it came through.
    fn verify(&self, request: Push<'_>, now_ms: i64) -> Result<Verified<String>> {
        let params = query_params(request.raw_query)?;
        let query = self.query(&params, now_ms)?;
        let (crypto, callback) = match self.open(&query, request.body) {
            Ok(opened) => opened,
            // The signature held, so DingTalk sent this: kept for inspection, never lost.
            Err(e) if signed_but_unreadable(&e) => {
                let entry = Entry::quarantined(
                    digest_key(request.body),
                    "undecryptable",
                    String::from_utf8_lossy(request.body).into_owned(),
                    e.to_string(),
                );
                return Ok(Verified::store(
                    entry,
                    self.app.success_reply_random(now_ms),
                ));
            }
            Err(e) => return Err(rejected(e)),
        };
        let reply = crypto.success_reply_random(now_ms);
        if events::is_check_url(&callback.message) {
            count("check_url");
            return Ok(Verified::answer(reply));
        }
        Ok(Verified::store(message_entry(callback.message), reply))
    }
}

impl Inbound<CardPress<'_>> for DingtalkInbound {
    type Ack = (String, String);

    fn source(&self) -> &Source {
        &self.source
    }

    /// A card button press. The signature covers only the timestamp, so its age is bounded
    /// by `max_clock_skew` and repeated deliveries of one click (same card, user and action)
    /// are stored once.
    fn verify(&self, request: CardPress<'_>, now_ms: i64) -> Result<Verified<(String, String)>> {
        let secret = self.card_secret.as_ref().ok_or(Error::NotFound {
            what: "dingtalk card callback",
        })?;
        let signed = request
            .signed
            .ok_or_else(|| refused(PLATFORM, "bad_signature", "card callback is not signed"))?;
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
        inbound::check_skew(PLATFORM, max_age, now_ms, ts_ms)?;
        // Only a card callback is taken here: the signature does not cover the body, so
        // nothing else may come in on it (not even to quarantine).
        let (message, press) = std::str::from_utf8(request.body)
            .ok()
            .and_then(|m| match events::parse(m) {
                Ok(InboundEvent {
                    kind:
                        EventKind::CardAction {
                            user_id,
                            action_key,
                            ..
                        },
                    ..
                }) => Some((m, (user_id, action_key))),
                _ => None,
            })
            .ok_or_else(|| {
                count("malformed");
                Error::MalformedBody("not a DingTalk card callback (actionCallback)".into())
            })?;
        self.check_replay(signed.signature, request.body, now_ms, max_age)?;
        Ok(Verified::store(message_entry(message.to_string()), press))
    }
}

/// A verified, decrypted message (an event push or a card callback), keyed by DingTalk's
/// identity of the event.
fn message_entry(message: String) -> Entry {
    let dedupe_key = events::dedupe_key(&message);
    let parsed = events::parse(&message);
    Entry::parsed(dedupe_key, message, parsed)
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

/// Parses a stored message again (inbox processing).
pub fn parse(message: &str) -> Result<InboundEvent, String> {
    events::parse(message)
}

fn count(outcome: &'static str) {
    inbound::count(PLATFORM, outcome);
}

fn rejected(e: CryptoError) -> Error {
    envelope_refused(PLATFORM, e)
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
