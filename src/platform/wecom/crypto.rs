//! WeCom (企业微信) callback cryptography (docs/protocols/wecom.md#callback-security-and-crypto,
//! #sidebar-js-sdk-and-oauth): the URL check, signed and encrypted callbacks in the XML and JSON
//! envelopes, encrypted passive replies, and the JS-SDK signature. Clock-skew checks belong to the
//! HTTP layer; timestamps are only parsed here.

use std::borrow::Cow;
use std::fmt;

use quick_xml::events::Event;
use quick_xml::Reader;
use serde::{Deserialize, Serialize};
use sha1::{Digest, Sha1};

use crate::platform::crypto::{
    jsapi_string_to_sign, parse_timestamp, CryptoError, EncodingAesKey, MsgCrypt,
};

/// Signs, verifies, decrypts and encrypts the callbacks of one WeCom app.
#[derive(Clone)]
pub struct WecomCrypto {
    crypt: MsgCrypt,
}

/// Signing, verifying, encrypting and decrypting are the shared scheme's.
impl std::ops::Deref for WecomCrypto {
    type Target = MsgCrypt;

    fn deref(&self) -> &MsgCrypt {
        &self.crypt
    }
}

impl fmt::Debug for WecomCrypto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WecomCrypto")
            .field("receive_id", &self.receiver())
            .finish_non_exhaustive()
    }
}

impl WecomCrypto {
    /// `receive_id` is the corp id for a self-built app, the suite id for third-party suite
    /// callbacks, and empty for personal-entity third-party apps.
    pub fn new(
        token: impl Into<String>,
        key: EncodingAesKey,
        receive_id: impl Into<String>,
    ) -> Self {
        Self {
            crypt: MsgCrypt::new(token, &key, receive_id),
        }
    }

    pub fn receive_id(&self) -> &str {
        self.receiver()
    }

    /// The URL check (GET with `echostr`): verifies the signature over the URL-decoded
    /// `echostr` and returns the plaintext to send back as the whole response body.
    pub fn verify_url(
        &self,
        msg_signature: &str,
        timestamp: &str,
        nonce: &str,
        echostr: &str,
    ) -> Result<String, CryptoError> {
        self.verify_signature(timestamp, nonce, echostr, msg_signature)?;
        self.decrypt(echostr)
    }

    /// Verifies and decrypts a callback POST in either envelope format.
    pub fn decrypt_callback(
        &self,
        query: &CallbackQuery<'_>,
        body: &[u8],
    ) -> Result<Callback, CryptoError> {
        let timestamp = query.timestamp_secs()?;
        let envelope = Envelope::parse(body)?;
        self.verify_signature(
            query.timestamp,
            query.nonce,
            &envelope.encrypt,
            query.msg_signature,
        )?;
        let message = self.decrypt(&envelope.encrypt)?;
        Ok(Callback {
            format: envelope.format,
            to_user_name: envelope.to_user_name.map(Cow::into_owned),
            agent_id: envelope.agent_id.map(Cow::into_owned),
            timestamp,
            message,
        })
    }

    /// The encrypted passive reply in the XML envelope. `nonce` may be the request's; it must
    /// be ASCII letters and digits because it is written into the XML unescaped.
    pub fn encrypted_reply_xml(
        &self,
        reply: &str,
        timestamp: i64,
        nonce: &str,
        random: [u8; 16],
    ) -> Result<String, CryptoError> {
        if nonce.is_empty() || !nonce.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(CryptoError::InvalidReplyField("nonce"));
        }
        let timestamp = timestamp.to_string();
        let encrypted = self.encrypt(reply, random);
        let signature = self.signature(&timestamp, nonce, &encrypted);
        // Layout and line breaks as the official samples emit them (vector `wecom-encrypt-reply`).
        Ok(format!(
            "<xml>\n<Encrypt><![CDATA[{encrypted}]]></Encrypt>\n\
             <MsgSignature><![CDATA[{signature}]]></MsgSignature>\n\
             <TimeStamp>{timestamp}</TimeStamp>\n\
             <Nonce><![CDATA[{nonce}]]></Nonce>\n</xml>"
        ))
    }

    /// The encrypted passive reply in the JSON envelope (`WXBizJsonMsgCrypt`).
    pub fn encrypted_reply_json(
        &self,
        reply: &str,
        timestamp: i64,
        nonce: &str,
        random: [u8; 16],
    ) -> String {
        #[derive(Serialize)]
        struct JsonReply<'a> {
            encrypt: &'a str,
            msgsignature: &'a str,
            timestamp: &'a str,
            nonce: &'a str,
        }
        let timestamp = timestamp.to_string();
        let encrypt = self.encrypt(reply, random);
        let msgsignature = self.signature(&timestamp, nonce, &encrypt);
        serde_json::to_string(&JsonReply {
            encrypt: &encrypt,
            msgsignature: &msgsignature,
            timestamp: &timestamp,
            nonce,
        })
        .expect("serialising strings cannot fail")
    }
}

/// The query parameters of a WeCom callback POST, URL-decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallbackQuery<'a> {
    pub msg_signature: &'a str,
    pub timestamp: &'a str,
    pub nonce: &'a str,
}

impl<'a> CallbackQuery<'a> {
    /// Reads the parameters through `get`, e.g. a lookup in the decoded query map.
    pub fn from_lookup(get: impl Fn(&str) -> Option<&'a str>) -> Result<Self, CryptoError> {
        Ok(Self {
            msg_signature: get("msg_signature")
                .ok_or(CryptoError::MissingParam("msg_signature"))?,
            timestamp: get("timestamp").ok_or(CryptoError::MissingParam("timestamp"))?,
            nonce: get("nonce").ok_or(CryptoError::MissingParam("nonce"))?,
        })
    }

    /// The request timestamp in Unix seconds.
    pub fn timestamp_secs(&self) -> Result<i64, CryptoError> {
        parse_timestamp(self.timestamp)
    }
}

/// Which envelope a callback arrived in; the passive reply must use the same one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnvelopeFormat {
    Xml,
    Json,
}

/// The outer body of a callback POST, borrowing from the body where it can.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope<'a> {
    pub format: EnvelopeFormat,
    pub to_user_name: Option<Cow<'a, str>>,
    pub agent_id: Option<Cow<'a, str>>,
    pub encrypt: Cow<'a, str>,
}

impl<'a> Envelope<'a> {
    /// Parses either envelope, telling them apart by the first non-blank byte.
    pub fn parse(body: &'a [u8]) -> Result<Self, CryptoError> {
        match body.iter().find(|b| !b.is_ascii_whitespace()) {
            Some(b'<') => Self::parse_xml(body),
            Some(b'{') => Self::parse_json(body),
            _ => Err(CryptoError::MalformedEnvelope("neither XML nor JSON")),
        }
    }

    /// `<xml><ToUserName/><AgentID/><Encrypt/></xml>`; only `Encrypt` is required.
    pub fn parse_xml(body: &'a [u8]) -> Result<Self, CryptoError> {
        const TO_USER_NAME: usize = 0;
        const AGENT_ID: usize = 1;
        const ENCRYPT: usize = 2;
        let mut values: [Option<Cow<'a, str>>; 3] = [None, None, None];
        let mut reader = Reader::from_reader(body);
        reader.config_mut().trim_text(true);
        let mut depth = 0usize;
        let mut field = None;
        loop {
            let event = reader
                .read_event()
                .map_err(|_| CryptoError::MalformedEnvelope("invalid XML"))?;
            let chunk = match event {
                Event::Start(start) => {
                    depth += 1;
                    if depth == 1 && start.name().as_ref() != b"xml" {
                        return Err(CryptoError::MalformedEnvelope("root element is not <xml>"));
                    }
                    field = match (depth, start.name().as_ref()) {
                        (2, b"ToUserName") => Some(TO_USER_NAME),
                        (2, b"AgentID") => Some(AGENT_ID),
                        (2, b"Encrypt") => Some(ENCRYPT),
                        _ => None,
                    };
                    if field.is_some_and(|i| values[i].is_some()) {
                        return Err(CryptoError::MalformedEnvelope("duplicate element"));
                    }
                    continue;
                }
                Event::End(_) => {
                    depth = depth.saturating_sub(1);
                    field = None;
                    continue;
                }
                Event::Text(text) => text
                    .unescape()
                    .map_err(|_| CryptoError::MalformedEnvelope("invalid XML text"))?,
                Event::CData(cdata) => cdata
                    .decode()
                    .map_err(|_| CryptoError::MalformedEnvelope("invalid XML text"))?,
                Event::Eof => break,
                // No DTDs: nothing a callback needs, and the door to entity tricks.
                Event::DocType(_) => {
                    return Err(CryptoError::MalformedEnvelope("DOCTYPE is not allowed"))
                }
                _ => continue,
            };
            let Some(i) = field else { continue };
            // A value may arrive in pieces (text next to CDATA); join them.
            match &mut values[i] {
                slot @ None => *slot = Some(chunk),
                Some(existing) => existing.to_mut().push_str(&chunk),
            }
        }
        let [to_user_name, agent_id, encrypt] = values.map(|v| v.filter(|s| !s.is_empty()));
        Ok(Self {
            format: EnvelopeFormat::Xml,
            to_user_name,
            agent_id,
            encrypt: encrypt.ok_or(CryptoError::MalformedEnvelope("missing Encrypt"))?,
        })
    }

    /// `{"tousername":…,"encrypt":…,"agentid":…}`; only `encrypt` is required. `agentid` may be
    /// a number or a string.
    pub fn parse_json(body: &'a [u8]) -> Result<Self, CryptoError> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum AgentId {
            Number(i64),
            Text(String),
        }
        #[derive(Deserialize)]
        struct JsonEnvelope<'b> {
            #[serde(borrow, alias = "Encrypt")]
            encrypt: Cow<'b, str>,
            #[serde(borrow, default, alias = "ToUserName")]
            tousername: Option<Cow<'b, str>>,
            #[serde(default, alias = "AgentID")]
            agentid: Option<AgentId>,
        }
        let parsed: JsonEnvelope<'a> = serde_json::from_slice(body)
            .map_err(|_| CryptoError::MalformedEnvelope("invalid JSON envelope"))?;
        if parsed.encrypt.is_empty() {
            return Err(CryptoError::MalformedEnvelope("missing encrypt"));
        }
        Ok(Self {
            format: EnvelopeFormat::Json,
            to_user_name: parsed.tousername.filter(|s| !s.is_empty()),
            agent_id: parsed.agentid.and_then(|id| match id {
                AgentId::Number(n) => Some(Cow::Owned(n.to_string())),
                AgentId::Text(s) if s.is_empty() => None,
                AgentId::Text(s) => Some(Cow::Owned(s)),
            }),
            encrypt: parsed.encrypt,
        })
    }
}

/// A verified, decrypted callback.
#[derive(Clone, PartialEq, Eq)]
pub struct Callback {
    pub format: EnvelopeFormat,
    pub to_user_name: Option<String>,
    pub agent_id: Option<String>,
    /// The request timestamp in Unix seconds, for the caller's clock-skew check.
    pub timestamp: i64,
    /// The decrypted message (XML for the XML envelope, JSON for the JSON one).
    pub message: String,
}

impl fmt::Debug for Callback {
    // The message is customer content; keep it out of logs that print the callback.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Callback")
            .field("format", &self.format)
            .field("to_user_name", &self.to_user_name)
            .field("agent_id", &self.agent_id)
            .field("timestamp", &self.timestamp)
            .field("message_len", &self.message.len())
            .finish()
    }
}

/// The `wx.config` / `wx.agentConfig` signature: SHA-1 hex over the JS-SDK string
/// (enterprise ticket for `wx.config`, app ticket for `wx.agentConfig`).
pub fn jsapi_signature(jsapi_ticket: &str, noncestr: &str, timestamp: &str, url: &str) -> String {
    let plain = jsapi_string_to_sign(jsapi_ticket, noncestr, timestamp, url);
    hex::encode(Sha1::digest(plain.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::crypto::random_prefix;
    use crate::platform::crypto::vectors::{of_kind, s};
    use serde_json::Value;

    fn crypto_for(v: &Value) -> WecomCrypto {
        WecomCrypto::new(
            s(v, "inputs", "token"),
            EncodingAesKey::parse(s(v, "inputs", "encoding_aes_key")).unwrap(),
            s(v, "inputs", "receive_id"),
        )
    }

    fn random_of(text: &str) -> [u8; 16] {
        text.as_bytes().try_into().expect("16-byte random prefix")
    }

    /// Decodes `%XX` escapes, enough for the URL-encoded echostr in the vectors.
    fn percent_decode(s: &str) -> String {
        let bytes = s.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'%' {
                out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
                i += 3;
            } else {
                out.push(bytes[i]);
                i += 1;
            }
        }
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn vectors_wecom_verify_url() {
        for v in of_kind("wecom-verify-url") {
            let c = crypto_for(&v);
            let echostr = s(&v, "inputs", "echostr");
            if let Some(encoded) = v["inputs"]["echostr_urlencoded"].as_str() {
                assert_eq!(percent_decode(encoded), echostr);
            }
            let (sig, ts, nonce) = (
                s(&v, "inputs", "msg_signature"),
                s(&v, "inputs", "timestamp"),
                s(&v, "inputs", "nonce"),
            );
            assert_eq!(v["expected"]["signature_valid"], true);
            assert_eq!(c.signature(ts, nonce, echostr), sig);
            assert_eq!(
                c.verify_url(sig, ts, nonce, echostr).unwrap(),
                s(&v, "expected", "reply_body")
            );
            assert_eq!(c.receive_id(), s(&v, "expected", "receive_id"));
            if v["expected"]["negative_case"].is_string() {
                // "same inputs with nonce=437374424 must fail signature check"
                assert_eq!(
                    c.verify_url(sig, ts, "437374424", echostr),
                    Err(CryptoError::BadSignature)
                );
                let detail = v["verification_detail"].as_str().unwrap();
                let wrong = detail.split("wrong-nonce sig=").nth(1).unwrap();
                assert_eq!(c.signature(ts, "437374424", echostr), wrong);
            }
        }
    }

    #[test]
    fn vectors_wecom_decrypt() {
        for v in of_kind("wecom-decrypt") {
            let c = crypto_for(&v);
            let (sig, ts, nonce, encrypt) = (
                s(&v, "inputs", "msg_signature"),
                s(&v, "inputs", "timestamp"),
                s(&v, "inputs", "nonce"),
                s(&v, "inputs", "encrypt"),
            );
            let expected = s(&v, "expected", "plaintext");
            assert_eq!(v["expected"]["signature_valid"], true);
            assert_eq!(c.verify_signature(ts, nonce, encrypt, sig), Ok(()));
            assert_eq!(c.decrypt(encrypt).unwrap(), expected);

            // Through the envelope, in both formats.
            let query = CallbackQuery {
                msg_signature: sig,
                timestamp: ts,
                nonce,
            };
            let to = s(&v, "expected", "receive_id");
            let xml = format!(
                "<xml><ToUserName><![CDATA[{to}]]></ToUserName><AgentID><![CDATA[218]]></AgentID>\
                 <Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>"
            );
            let cb = c.decrypt_callback(&query, xml.as_bytes()).unwrap();
            assert_eq!(cb.message, expected);
            assert_eq!(cb.format, EnvelopeFormat::Xml);
            assert_eq!(cb.to_user_name.as_deref(), Some(to));
            assert_eq!(cb.agent_id.as_deref(), Some("218"));
            assert_eq!(cb.timestamp, ts.parse::<i64>().unwrap());
            let json = format!(r#"{{"tousername":"{to}","encrypt":"{encrypt}","agentid":218}}"#);
            let cb = c.decrypt_callback(&query, json.as_bytes()).unwrap();
            assert_eq!(
                (cb.format, cb.message.as_str()),
                (EnvelopeFormat::Json, expected)
            );
            assert_eq!(cb.agent_id.as_deref(), Some("218"));

            // The decrypted random prefix re-encrypts to the exact ciphertext.
            let (random, _) = c.cipher.open_parts(encrypt, to).unwrap();
            assert_eq!(c.encrypt(expected, random), encrypt);
        }
    }

    #[test]
    fn vectors_wecom_encrypt_reply() {
        for v in of_kind("wecom-encrypt-reply") {
            let c = crypto_for(&v);
            let plaintext = v["inputs"]["plaintext_reply"]
                .as_str()
                .or(v["inputs"]["plaintext"].as_str())
                .unwrap();
            let random = random_of(s(&v, "inputs", "random_prefix"));
            let ts = s(&v, "inputs", "timestamp");
            let nonce = s(&v, "inputs", "nonce");
            let encrypt = c.encrypt(plaintext, random);
            assert_eq!(encrypt, s(&v, "expected", "encrypt"));
            assert_eq!(
                c.signature(ts, nonce, &encrypt),
                s(&v, "expected", "msg_signature")
            );
            assert_eq!(c.decrypt(&encrypt).unwrap(), plaintext);
            if let Some(pad) = v["expected"]["pad_byte"].as_u64() {
                let body = 20 + plaintext.len() + c.receive_id().len();
                assert_eq!((32 - body % 32) as u64, pad);
            }
            let xml = c
                .encrypted_reply_xml(plaintext, ts.parse().unwrap(), nonce, random)
                .unwrap();
            if let Some(expected_xml) = v["expected"]["response_xml"].as_str() {
                assert_eq!(xml, expected_xml);
            }
            // The reply parses back as an envelope carrying the same ciphertext.
            assert_eq!(
                Envelope::parse_xml(xml.as_bytes()).unwrap().encrypt,
                encrypt
            );
        }
    }

    #[test]
    fn vectors_wecom_jsapi_signature() {
        for v in of_kind("wecom-jsapi-signature") {
            let (ticket, nonce, ts, url) = (
                s(&v, "inputs", "jsapi_ticket"),
                s(&v, "inputs", "noncestr"),
                s(&v, "inputs", "timestamp"),
                s(&v, "inputs", "url"),
            );
            assert_eq!(
                jsapi_string_to_sign(ticket, nonce, ts, url),
                s(&v, "inputs", "string_to_sign")
            );
            assert_eq!(
                jsapi_signature(ticket, nonce, ts, url),
                s(&v, "expected", "signature")
            );
            assert_eq!(
                jsapi_signature(ticket, nonce, ts, &format!("{url}#section")),
                s(&v, "expected", "signature")
            );
        }
    }

    fn sample() -> (WecomCrypto, Value) {
        let v = of_kind("wecom-decrypt").into_iter().next().unwrap();
        (crypto_for(&v), v)
    }

    fn xml_body(encrypt: &str) -> String {
        format!("<xml><ToUserName><![CDATA[wx5823bf96d3bd56c7]]></ToUserName><Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>")
    }

    #[test]
    fn wrong_signature_is_refused() {
        let (c, v) = sample();
        let (sig, ts, nonce, encrypt) = (
            s(&v, "inputs", "msg_signature"),
            s(&v, "inputs", "timestamp"),
            s(&v, "inputs", "nonce"),
            s(&v, "inputs", "encrypt"),
        );
        let mut wrong = sig.to_owned();
        wrong.replace_range(..1, if sig.starts_with('0') { "1" } else { "0" });
        assert_eq!(
            c.verify_signature(ts, nonce, encrypt, &wrong),
            Err(CryptoError::BadSignature)
        );
        assert_eq!(
            c.verify_signature("1409659814", nonce, encrypt, sig),
            Err(CryptoError::BadSignature)
        );
        assert_eq!(
            c.verify_signature(ts, nonce, encrypt, ""),
            Err(CryptoError::BadSignature)
        );
        let other_token = WecomCrypto::new(
            "QDG6eL",
            EncodingAesKey::parse(s(&v, "inputs", "encoding_aes_key")).unwrap(),
            c.receive_id(),
        );
        assert_eq!(
            other_token.verify_signature(ts, nonce, encrypt, sig),
            Err(CryptoError::BadSignature)
        );
        let query = CallbackQuery {
            msg_signature: &wrong,
            timestamp: ts,
            nonce,
        };
        assert_eq!(
            c.decrypt_callback(&query, xml_body(encrypt).as_bytes()),
            Err(CryptoError::BadSignature)
        );
    }

    #[test]
    fn tampered_ciphertext_is_refused() {
        let (c, v) = sample();
        let (sig, ts, nonce, encrypt) = (
            s(&v, "inputs", "msg_signature"),
            s(&v, "inputs", "timestamp"),
            s(&v, "inputs", "nonce"),
            s(&v, "inputs", "encrypt"),
        );
        let query = CallbackQuery {
            msg_signature: sig,
            timestamp: ts,
            nonce,
        };
        // Flip one base64 character in the middle: the signature no longer matches.
        let mut tampered = encrypt.to_owned();
        let mid = tampered.len() / 2;
        let replacement = if &tampered[mid..=mid] == "A" {
            "B"
        } else {
            "A"
        };
        tampered.replace_range(mid..=mid, replacement);
        assert_eq!(
            c.decrypt_callback(&query, xml_body(&tampered).as_bytes()),
            Err(CryptoError::BadSignature)
        );
        // Even without the signature, corrupting the last block breaks the padding or layout.
        let mut raw =
            base64::Engine::decode(&base64::engine::general_purpose::STANDARD, encrypt).unwrap();
        let n = raw.len();
        raw[n - 17] ^= 0x40;
        let tampered = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &raw);
        assert!(c.decrypt(&tampered).is_err());
    }

    #[test]
    fn wrong_receive_id_is_refused() {
        let (_, v) = sample();
        let key = EncodingAesKey::parse(s(&v, "inputs", "encoding_aes_key")).unwrap();
        for other in ["wx5823bf96d3bd56c8", "", "wx5823bf96d3bd56c7x"] {
            let wrong = WecomCrypto::new(s(&v, "inputs", "token"), key.clone(), other);
            assert_eq!(
                wrong.decrypt(s(&v, "inputs", "encrypt")),
                Err(CryptoError::ReceiverMismatch),
                "{other:?}"
            );
        }
    }

    #[test]
    fn empty_receive_id_round_trips() {
        // Personal-entity third-party apps use an empty receive id.
        let (c, v) = sample();
        let key = EncodingAesKey::parse(s(&v, "inputs", "encoding_aes_key")).unwrap();
        let personal = WecomCrypto::new("t", key, "");
        let sealed = personal.encrypt_random("<xml/>");
        assert_eq!(personal.decrypt(&sealed).unwrap(), "<xml/>");
        assert_eq!(c.decrypt(&sealed), Err(CryptoError::ReceiverMismatch));
    }

    #[test]
    fn replies_round_trip_through_the_envelopes() {
        let (c, _) = sample();
        let random = random_prefix();
        let xml = c
            .encrypted_reply_xml("<xml>hi</xml>", 1_700_000_000, "abc123", random)
            .unwrap();
        let query = CallbackQuery {
            msg_signature: "",
            timestamp: "1700000000",
            nonce: "abc123",
        };
        let env = Envelope::parse(xml.as_bytes()).unwrap();
        let query = CallbackQuery {
            msg_signature: &c.signature("1700000000", "abc123", &env.encrypt),
            ..query
        };
        assert_eq!(
            c.decrypt_callback(&query, xml.as_bytes()).unwrap().message,
            "<xml>hi</xml>"
        );
        assert!(xml.contains(&format!(
            "<MsgSignature><![CDATA[{}]]></MsgSignature>",
            query.msg_signature
        )));

        let json = c.encrypted_reply_json("{\"a\":1}", 1_700_000_000, "abc123", random);
        let parsed: Value = serde_json::from_str(&json).unwrap();
        assert_eq!(parsed["timestamp"], "1700000000");
        assert_eq!(parsed["nonce"], "abc123");
        let encrypt = parsed["encrypt"].as_str().unwrap();
        assert_eq!(
            c.verify_signature(
                "1700000000",
                "abc123",
                encrypt,
                parsed["msgsignature"].as_str().unwrap()
            ),
            Ok(())
        );
        assert_eq!(c.decrypt(encrypt).unwrap(), "{\"a\":1}");
    }

    #[test]
    fn reply_nonce_must_be_alphanumeric() {
        let (c, _) = sample();
        for bad in ["", "a]]>b", "a b", "<x>"] {
            assert_eq!(
                c.encrypted_reply_xml("r", 1, bad, random_prefix()),
                Err(CryptoError::InvalidReplyField("nonce")),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn envelopes_parse_with_optional_fields_and_escapes() {
        let env = Envelope::parse(b"  <xml><Encrypt>a+b/c=</Encrypt><AgentID/></xml>").unwrap();
        assert_eq!(
            (env.encrypt.as_ref(), env.to_user_name, env.agent_id),
            ("a+b/c=", None, None)
        );
        assert!(
            matches!(env.encrypt, Cow::Borrowed(_)),
            "no copy for plain text"
        );
        let env = Envelope::parse(b"<xml><ToUserName>a&amp;b</ToUserName><Encrypt><![CDATA[x]]></Encrypt><Nested><Encrypt>y</Encrypt></Nested></xml>").unwrap();
        assert_eq!(
            (env.to_user_name.as_deref(), env.encrypt.as_ref()),
            (Some("a&b"), "x")
        );
        let env = Envelope::parse(br#"{"encrypt":"a\/b","agentid":"1000002"}"#).unwrap();
        assert_eq!(
            (env.encrypt.as_ref(), env.agent_id.as_deref()),
            ("a/b", Some("1000002"))
        );
        let env = Envelope::parse(br#"{"Encrypt":"x","ToUserName":"corp","AgentID":5}"#).unwrap();
        assert_eq!(
            (env.to_user_name.as_deref(), env.agent_id.as_deref()),
            (Some("corp"), Some("5"))
        );
    }

    #[test]
    fn malformed_envelopes_are_refused() {
        for bad in [
            &b""[..],
            b"hello",
            b"<xml><ToUserName>x</ToUserName></xml>",
            b"<xml><Encrypt></Encrypt></xml>",
            b"<other><Encrypt>x</Encrypt></other>",
            b"<xml><Encrypt>x</Wrong></xml>",
            b"<xml><Encrypt>x</Encrypt><Encrypt>y</Encrypt></xml>",
            b"{}",
            br#"{"encrypt":""}"#,
            br#"{"encrypt":5}"#,
            b"{not json",
        ] {
            assert!(
                matches!(Envelope::parse(bad), Err(CryptoError::MalformedEnvelope(_))),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn query_lookup_reports_missing_params_and_bad_timestamps() {
        let params = [("msg_signature", "s"), ("timestamp", "12"), ("nonce", "n")];
        let get = |name: &str| params.iter().find(|(k, _)| *k == name).map(|(_, v)| *v);
        let query = CallbackQuery::from_lookup(get).unwrap();
        assert_eq!(query.timestamp_secs(), Ok(12));
        let missing = CallbackQuery::from_lookup(|name| get(name).filter(|_| name != "nonce"));
        assert_eq!(missing, Err(CryptoError::MissingParam("nonce")));
        let (c, _) = sample();
        let bad = CallbackQuery {
            timestamp: "12a",
            ..query
        };
        assert_eq!(
            c.decrypt_callback(&bad, b"<xml><Encrypt>x</Encrypt></xml>"),
            Err(CryptoError::InvalidTimestamp)
        );
    }

    #[test]
    fn debug_output_hides_secrets_and_content() {
        let (c, v) = sample();
        let shown = format!("{c:?}");
        assert!(!shown.contains(s(&v, "inputs", "token")), "{shown}");
        assert!(shown.contains("wx5823bf96d3bd56c7"));
        let query = CallbackQuery {
            msg_signature: s(&v, "inputs", "msg_signature"),
            timestamp: s(&v, "inputs", "timestamp"),
            nonce: s(&v, "inputs", "nonce"),
        };
        let cb = c
            .decrypt_callback(&query, xml_body(s(&v, "inputs", "encrypt")).as_bytes())
            .unwrap();
        assert!(!format!("{cb:?}").contains("hello"));
    }
}
