//! WeCom callbacks in: URL verification (GET) and event delivery (POST), verified here and
//! stored through the shared pipeline (`platform::inbound`).
//!
//! Order of checks: query parameters → timestamp window → signature → decrypt (which
//! checks the receive id is our corp id) → parse. A failure up to decryption refuses the
//! request with a 4xx and writes nothing; a body that is correctly signed but cannot be
//! parsed is kept in the inbox as `quarantined`, never lost.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::Value;

use super::crypto::{CallbackQuery, WecomCrypto};
use super::events;
use crate::chat::event::InboundEvent;
use crate::config::{ConfigError, WecomConfig};
use crate::error::{Error, Result};
use crate::platform::crypto::{CryptoError, EncodingAesKey};
use crate::platform::inbound::{
    check_skew, digest_key, envelope_refused, query_params, Entry, Inbound, Source, Verified,
};

pub const PLATFORM: &str = "wecom";

/// One configured WeCom app receiving callbacks for one organisation.
pub struct WecomInbound {
    crypto: WecomCrypto,
    max_skew: Duration,
    source: Source,
}

/// `GET /callback/wecom`: the console checking the URL, with the raw query string.
/// Answered with the plaintext `echostr`, the whole body of the reply.
pub struct UrlCheck<'a>(pub &'a str);

/// `POST /callback/wecom`: an event, with the raw query string and body. Answered with an
/// empty 200.
pub struct Push<'a> {
    pub raw_query: &'a str,
    pub body: &'a [u8],
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
            source: Source::new(PLATFORM, org_id),
        })
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
        check_skew(PLATFORM, self.max_skew, now_ms, ts.saturating_mul(1000))?;
        Ok(query)
    }
}

impl Inbound<UrlCheck<'_>> for WecomInbound {
    type Ack = String;

    fn source(&self) -> &Source {
        &self.source
    }

    fn verify(&self, request: UrlCheck<'_>, now_ms: i64) -> Result<Verified<String>> {
        let params = query_params(request.0)?;
        let query = self.query(&params, now_ms)?;
        let echostr = params
            .get("echostr")
            .ok_or_else(|| Error::MalformedBody("missing query parameter echostr".into()))?;
        let echo = self
            .crypto
            .verify_url(query.msg_signature, query.timestamp, query.nonce, echostr)
            .map_err(rejected)?;
        Ok(Verified::answer(echo))
    }
}

impl Inbound<Push<'_>> for WecomInbound {
    type Ack = ();

    fn source(&self) -> &Source {
        &self.source
    }

    /// Verifies, decrypts and parses; an event is keyed by WeCom's own identity of it, an
    /// unparsable message by its digest.
    fn verify(&self, request: Push<'_>, now_ms: i64) -> Result<Verified<()>> {
        let params = query_params(request.raw_query)?;
        let query = self.query(&params, now_ms)?;
        let callback = self
            .crypto
            .decrypt_callback(&query, request.body)
            .map_err(rejected)?;
        let message = callback.message;
        let parsed = parse(&message);
        let dedupe_key = match &parsed {
            Ok(event) => events::dedupe_key(event, &message),
            Err(_) => digest_key(message.as_bytes()),
        };
        Ok(Verified::store(
            Entry::parsed(dedupe_key, message, parsed),
            (),
        ))
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

fn rejected(e: CryptoError) -> Error {
    envelope_refused(PLATFORM, e)
}
