//! DingTalk (钉钉) HTTP-push callback cryptography
//! (docs/protocols/dingtalk.md#callback-security-and-crypto, #h5-micro-app-jsapi-and-sign-in): the
//! same AES scheme and SHA-1 signature as WeCom with the owner key (AppKey, SuiteKey or CorpId) as
//! the trailing id, the encrypted `success` reply, and the H5 `dd.config` signature.
//!
//! The card-callback `x-ddpaas-signature` (docs/protocols/dingtalk.md#the-card-callback) is not
//! here: no published vector exists to check an implementation against.

use std::borrow::Cow;
use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::platform::crypto::{
    jsapi_string_to_sign, parse_timestamp, random_nonce, random_prefix, CryptoError,
    EncodingAesKey, MsgCrypt,
};

/// The plaintext DingTalk expects, encrypted, as the answer to every callback.
pub const SUCCESS: &str = "success";

/// Timestamps at or above this are milliseconds: as seconds they would be past the year 5000,
/// as milliseconds they are after 1973.
const MILLIS_THRESHOLD: i64 = 100_000_000_000;

/// Signs, verifies, decrypts and encrypts the HTTP-push callbacks of one DingTalk subscription.
#[derive(Clone)]
pub struct DingtalkCrypto {
    crypt: MsgCrypt,
}

/// Signing, verifying, encrypting and decrypting are the shared scheme's.
impl std::ops::Deref for DingtalkCrypto {
    type Target = MsgCrypt;

    fn deref(&self) -> &MsgCrypt {
        &self.crypt
    }
}

impl fmt::Debug for DingtalkCrypto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DingtalkCrypto")
            .field("owner_key", &self.receiver())
            .finish_non_exhaustive()
    }
}

impl DingtalkCrypto {
    /// `owner_key` is the AppKey (internal app) or SuiteKey (ISV) for app-level subscriptions,
    /// and the CorpId for enterprise-level subscriptions registered through the API.
    pub fn new(
        token: impl Into<String>,
        key: EncodingAesKey,
        owner_key: impl Into<String>,
    ) -> Self {
        Self {
            crypt: MsgCrypt::new(token, &key, owner_key),
        }
    }

    pub fn owner_key(&self) -> &str {
        self.receiver()
    }

    /// Verifies and decrypts a callback POST whose body is `{"encrypt":"…"}`, returning the
    /// event JSON (`{"EventType":"check_url"}` for the URL check).
    pub fn decrypt_callback(
        &self,
        query: &CallbackQuery<'_>,
        body: &[u8],
    ) -> Result<Callback, CryptoError> {
        let timestamp = query.timestamp_secs()?;
        let encrypt = parse_body(body)?;
        self.verify_signature(query.timestamp, query.nonce, &encrypt, query.signature)?;
        let message = self.decrypt(&encrypt)?;
        Ok(Callback { timestamp, message })
    }

    /// The JSON answer to a callback: `success`, encrypted and signed with `timestamp` (the
    /// Java sample uses milliseconds) and `nonce`, deterministically for a given random prefix.
    pub fn success_reply(&self, timestamp: i64, nonce: &str, random: [u8; 16]) -> String {
        #[derive(Serialize)]
        struct Reply<'a> {
            msg_signature: &'a str,
            #[serde(rename = "timeStamp")]
            time_stamp: &'a str,
            nonce: &'a str,
            encrypt: &'a str,
        }
        let timestamp = timestamp.to_string();
        let encrypt = self.encrypt(SUCCESS, random);
        let signature = self.signature(&timestamp, nonce, &encrypt);
        serde_json::to_string(&Reply {
            msg_signature: &signature,
            time_stamp: &timestamp,
            nonce,
            encrypt: &encrypt,
        })
        .expect("serialising strings cannot fail")
    }

    /// [`success_reply`](Self::success_reply) with a fresh 16-character nonce and random prefix.
    pub fn success_reply_random(&self, timestamp: i64) -> String {
        self.success_reply(timestamp, &random_nonce(), random_prefix())
    }

    /// Whether `body` is the answer DingTalk requires from a callback: `{msg_signature,
    /// timeStamp, nonce, encrypt}`, signed with this token, decrypting to `success` for this
    /// owner key (what the emulator checks of closeloop, and `closeloop doctor` of a server).
    pub fn is_success_reply(&self, body: &[u8]) -> bool {
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
            return false;
        };
        let field = |k: &str| v.get(k).and_then(|f| f.as_str()).unwrap_or_default();
        let encrypt = field("encrypt");
        self.verify_signature(
            field("timeStamp"),
            field("nonce"),
            encrypt,
            field("msg_signature"),
        )
        .is_ok()
            && self.decrypt(encrypt).is_ok_and(|m| m == SUCCESS)
    }
}

/// Extracts the ciphertext from a `{"encrypt":"…"}` body without copying it when possible.
pub fn parse_body(body: &[u8]) -> Result<Cow<'_, str>, CryptoError> {
    #[derive(Deserialize)]
    struct Body<'a> {
        #[serde(borrow)]
        encrypt: Cow<'a, str>,
    }
    let parsed: Body<'_> = serde_json::from_slice(body)
        .map_err(|_| CryptoError::MalformedEnvelope("invalid JSON body"))?;
    if parsed.encrypt.is_empty() {
        return Err(CryptoError::MalformedEnvelope("missing encrypt"));
    }
    Ok(parsed.encrypt)
}

/// The query parameters of a callback POST, URL-decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallbackQuery<'a> {
    pub signature: &'a str,
    pub timestamp: &'a str,
    pub nonce: &'a str,
}

impl<'a> CallbackQuery<'a> {
    /// Reads the parameters through `get`, accepting both spellings DingTalk uses
    /// (`msg_signature` or `signature`, `timestamp` or `timeStamp`;
    /// docs/protocols/README.md#cross-platform-pitfalls).
    pub fn from_lookup(get: impl Fn(&str) -> Option<&'a str>) -> Result<Self, CryptoError> {
        Ok(Self {
            signature: get("msg_signature")
                .or_else(|| get("signature"))
                .ok_or(CryptoError::MissingParam("signature"))?,
            timestamp: get("timestamp")
                .or_else(|| get("timeStamp"))
                .ok_or(CryptoError::MissingParam("timestamp"))?,
            nonce: get("nonce").ok_or(CryptoError::MissingParam("nonce"))?,
        })
    }

    /// The request timestamp in Unix seconds; DingTalk sends seconds or milliseconds.
    pub fn timestamp_secs(&self) -> Result<i64, CryptoError> {
        let t = parse_timestamp(self.timestamp)?;
        Ok(if t >= MILLIS_THRESHOLD { t / 1000 } else { t })
    }
}

/// A verified, decrypted callback.
#[derive(Clone, PartialEq, Eq)]
pub struct Callback {
    /// The request timestamp in Unix seconds, for the caller's clock-skew check.
    pub timestamp: i64,
    /// The decrypted event JSON.
    pub message: String,
}

impl fmt::Debug for Callback {
    // The message is customer content; keep it out of logs that print the callback.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Callback")
            .field("timestamp", &self.timestamp)
            .field("message_len", &self.message.len())
            .finish()
    }
}

/// The `dd.config` signature: SHA-256 hex over the JS-SDK string, with the page URL's query
/// percent-decoded (iOS passes it encoded, Android raw; the docs' `decodeUrl`) and its
/// `#fragment` dropped. Older integrations used SHA-1; the current docs use SHA-256.
pub fn jsapi_signature(
    jsapi_ticket: &str,
    noncestr: &str,
    timestamp: &str,
    url: &str,
) -> Result<String, CryptoError> {
    let url = url.split_once('#').map_or(url, |(before, _)| before);
    let url = match url.split_once('?') {
        Some((base, query)) => Cow::Owned(format!("{base}?{}", percent_decode_query(query)?)),
        None => Cow::Borrowed(url),
    };
    let plain = jsapi_string_to_sign(jsapi_ticket, noncestr, timestamp, &url);
    Ok(hex::encode(Sha256::digest(plain.as_bytes())))
}

/// Decodes `%XX` escapes and `+` as a space, like Java's `URLDecoder` that DingTalk's sample uses.
fn percent_decode_query(query: &str) -> Result<String, CryptoError> {
    let bytes = query.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3).ok_or(CryptoError::InvalidUrl)?;
                let hex = std::str::from_utf8(hex).map_err(|_| CryptoError::InvalidUrl)?;
                out.push(u8::from_str_radix(hex, 16).map_err(|_| CryptoError::InvalidUrl)?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| CryptoError::InvalidUrl)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::crypto::vectors::{of_kind, s};
    use serde_json::Value;

    fn crypto_for(v: &Value) -> DingtalkCrypto {
        DingtalkCrypto::new(
            s(v, "inputs", "token"),
            EncodingAesKey::parse(s(v, "inputs", "encoding_aes_key")).unwrap(),
            s(v, "inputs", "owner_key"),
        )
    }

    fn query_of(v: &Value) -> CallbackQuery<'_> {
        CallbackQuery {
            signature: s(v, "inputs", "msg_signature"),
            timestamp: s(v, "inputs", "timestamp"),
            nonce: s(v, "inputs", "nonce"),
        }
    }

    #[test]
    fn vectors_dingtalk_decrypt() {
        for v in of_kind("dingtalk-decrypt") {
            let c = crypto_for(&v);
            let q = query_of(&v);
            let encrypt = s(&v, "inputs", "encrypt");
            let expected = s(&v, "expected", "plaintext");
            assert_eq!(v["expected"]["signature_valid"], true);
            assert_eq!(c.owner_key(), s(&v, "expected", "owner_key"));
            assert_eq!(c.signature(q.timestamp, q.nonce, encrypt), q.signature);
            assert_eq!(
                c.verify_signature(q.timestamp, q.nonce, encrypt, q.signature),
                Ok(())
            );
            assert_eq!(c.decrypt(encrypt).unwrap(), expected);

            let body = serde_json::json!({ "encrypt": encrypt }).to_string();
            let cb = c.decrypt_callback(&q, body.as_bytes()).unwrap();
            assert_eq!(cb.message, expected);
            assert_eq!(
                cb.timestamp,
                s(&v, "inputs", "timestamp").parse::<i64>().unwrap() / 1000
            );

            // The random prefix recovered by decryption re-encrypts to the exact ciphertext.
            let (random, _) = c.cipher.open_parts(encrypt, c.owner_key()).unwrap();
            assert_eq!(c.encrypt(expected, random), encrypt);
            if expected == SUCCESS {
                // This vector is a server's reply: rebuild it field for field.
                let reply = c.success_reply(q.timestamp.parse().unwrap(), q.nonce, random);
                let reply: Value = serde_json::from_str(&reply).unwrap();
                assert_eq!(
                    reply,
                    serde_json::json!({
                        "msg_signature": q.signature,
                        "timeStamp": q.timestamp,
                        "nonce": q.nonce,
                        "encrypt": encrypt,
                    })
                );
            }
        }
    }

    #[test]
    fn wrong_signature_tampering_and_wrong_owner_are_refused() {
        let v = of_kind("dingtalk-decrypt").into_iter().next().unwrap();
        let c = crypto_for(&v);
        let q = query_of(&v);
        let encrypt = s(&v, "inputs", "encrypt");
        let body = |e: &str| serde_json::json!({ "encrypt": e }).to_string();

        let wrong = CallbackQuery {
            nonce: "WL4PK6yB",
            ..q
        };
        assert_eq!(
            c.decrypt_callback(&wrong, body(encrypt).as_bytes()),
            Err(CryptoError::BadSignature)
        );
        let tampered = encrypt.replacen('0', "1", 1);
        assert_eq!(
            c.decrypt_callback(&q, body(&tampered).as_bytes()),
            Err(CryptoError::BadSignature)
        );

        let key = EncodingAesKey::parse(s(&v, "inputs", "encoding_aes_key")).unwrap();
        let other = DingtalkCrypto::new(s(&v, "inputs", "token"), key, "dingotherkey");
        assert_eq!(other.decrypt(encrypt), Err(CryptoError::ReceiverMismatch));
        assert_eq!(
            other.decrypt_callback(&q, body(encrypt).as_bytes()),
            Err(CryptoError::ReceiverMismatch)
        );
    }

    #[test]
    fn query_accepts_both_spellings() {
        for params in [
            [
                ("msg_signature", "s"),
                ("timestamp", "1614767836"),
                ("nonce", "n"),
            ],
            [
                ("signature", "s"),
                ("timeStamp", "1614767836"),
                ("nonce", "n"),
            ],
        ] {
            let get = |name: &str| params.iter().find(|(k, _)| *k == name).map(|(_, v)| *v);
            let q = CallbackQuery::from_lookup(get).unwrap();
            assert_eq!(
                (q.signature, q.timestamp, q.nonce),
                ("s", "1614767836", "n")
            );
            assert_eq!(q.timestamp_secs(), Ok(1_614_767_836));
        }
        let none = CallbackQuery::from_lookup(|_| None);
        assert_eq!(none, Err(CryptoError::MissingParam("signature")));
        let q = CallbackQuery {
            signature: "s",
            timestamp: "1608001896814",
            nonce: "n",
        };
        assert_eq!(q.timestamp_secs(), Ok(1_608_001_896));
    }

    #[test]
    fn success_reply_round_trips() {
        let v = of_kind("dingtalk-decrypt").into_iter().next().unwrap();
        let c = crypto_for(&v);
        let reply: Value =
            serde_json::from_str(&c.success_reply_random(1_700_000_000_000)).unwrap();
        let (sig, ts, nonce, encrypt) = (
            reply["msg_signature"].as_str().unwrap(),
            reply["timeStamp"].as_str().unwrap(),
            reply["nonce"].as_str().unwrap(),
            reply["encrypt"].as_str().unwrap(),
        );
        assert_eq!((ts, nonce.len()), ("1700000000000", 16));
        let q = CallbackQuery {
            signature: sig,
            timestamp: ts,
            nonce,
        };
        let body = serde_json::json!({ "encrypt": encrypt }).to_string();
        assert_eq!(
            c.decrypt_callback(&q, body.as_bytes()).unwrap().message,
            SUCCESS
        );
    }

    #[test]
    fn malformed_bodies_are_refused() {
        for bad in [
            &b""[..],
            b"{}",
            br#"{"encrypt":""}"#,
            br#"{"encrypt":1}"#,
            b"<xml/>",
        ] {
            assert!(matches!(
                parse_body(bad),
                Err(CryptoError::MalformedEnvelope(_))
            ));
        }
        assert_eq!(parse_body(br#"{"encrypt":"a\/b"}"#).unwrap(), "a/b");
    }

    #[test]
    fn jsapi_signature_is_sha256_over_the_decoded_url() {
        // No official vector exists (docs/protocols/README.md#test-vectors); check the construction
        // instead.
        let plain = "jsapi_ticket=t&noncestr=n&timestamp=1&url=https://a.example/p?name=张三&x=a b";
        let expected = hex::encode(Sha256::digest(plain.as_bytes()));
        let encoded = "https://a.example/p?name=%E5%BC%A0%E4%B8%89&x=a+b#frag";
        assert_eq!(jsapi_signature("t", "n", "1", encoded).unwrap(), expected);
        let raw = "https://a.example/p?name=张三&x=a b";
        assert_eq!(jsapi_signature("t", "n", "1", raw).unwrap(), expected);
        let bare = hex::encode(Sha256::digest(
            b"jsapi_ticket=t&noncestr=n&timestamp=1&url=https://a.example/p",
        ));
        assert_eq!(
            jsapi_signature("t", "n", "1", "https://a.example/p").unwrap(),
            bare
        );
        for bad in [
            "https://a.example/?q=%",
            "https://a.example/?q=%zz",
            "https://a.example/?q=%ff",
        ] {
            assert_eq!(
                jsapi_signature("t", "n", "1", bad),
                Err(CryptoError::InvalidUrl),
                "{bad}"
            );
        }
    }

    #[test]
    fn debug_output_hides_the_token() {
        let v = of_kind("dingtalk-decrypt").into_iter().next().unwrap();
        let shown = format!("{:?}", crypto_for(&v));
        assert!(!shown.contains(s(&v, "inputs", "token")), "{shown}");
    }
}
