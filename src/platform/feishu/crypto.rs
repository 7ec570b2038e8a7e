//! Feishu / Lark (飞书) callback cryptography (docs/protocols/feishu.md#callback-security-and-crypto,
//! #h5-app-jsapi-and-oauth): decryption of `{"encrypt":"…"}` bodies, the `X-Lark-Signature` check
//! over the raw body, and the `h5sdk.config` JS-SDK signature.

use std::borrow::Cow;
use std::fmt;

use aes::Aes256;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use cbc::cipher::block_padding::Pkcs7;
use cbc::cipher::{BlockDecryptMut, BlockEncryptMut, InnerIvInit, KeyInit};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use sha1::Sha1;
use sha2::{Digest, Sha256};

use crate::platform::crypto::{jsapi_string_to_sign, verify_hex, CryptoError};

/// Request header carrying the signature.
pub const SIGNATURE_HEADER: &str = "X-Lark-Signature";
/// Request header carrying the signed timestamp (Unix seconds).
pub const TIMESTAMP_HEADER: &str = "X-Lark-Request-Timestamp";
/// Request header carrying the signed nonce.
pub const NONCE_HEADER: &str = "X-Lark-Request-Nonce";

const IV_LEN: usize = 16;

/// Decrypts, encrypts and verifies callbacks for one Feishu app's Encrypt Key.
#[derive(Clone)]
pub struct FeishuCrypto {
    encrypt_key: SecretString,
    aes: Aes256,
}

impl fmt::Debug for FeishuCrypto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FeishuCrypto { .. }")
    }
}

impl FeishuCrypto {
    /// The AES key is SHA-256 of the Encrypt Key as configured in the console. Apps without an
    /// Encrypt Key receive plaintext, unsigned callbacks and need no `FeishuCrypto`.
    pub fn new(encrypt_key: &str) -> Result<Self, CryptoError> {
        if encrypt_key.is_empty() {
            return Err(CryptoError::EmptyEncryptKey);
        }
        let key = Sha256::digest(encrypt_key.as_bytes());
        Ok(Self {
            encrypt_key: SecretString::from(encrypt_key),
            aes: Aes256::new(&key),
        })
    }

    /// Decrypts the `encrypt` field: base64 of `iv(16) || AES-256-CBC(PKCS#7)`.
    pub fn decrypt(&self, encrypted: &str) -> Result<String, CryptoError> {
        let mut buf = STANDARD
            .decode(encrypted)
            .map_err(|_| CryptoError::MalformedCiphertext)?;
        if buf.len() < 2 * IV_LEN || buf.len() % 16 != 0 {
            return Err(CryptoError::MalformedCiphertext);
        }
        let (iv, body) = buf.split_at_mut(IV_LEN);
        let plain_len = cbc::Decryptor::<Aes256>::inner_iv_init(self.aes.clone(), (&*iv).into())
            .decrypt_padded_mut::<Pkcs7>(body)
            .map_err(|_| CryptoError::BadPadding)?
            .len();
        // Reuse the decoded buffer for the plaintext instead of copying it out.
        buf.truncate(IV_LEN + plain_len);
        buf.drain(..IV_LEN);
        String::from_utf8(buf).map_err(|_| CryptoError::NotUtf8)
    }

    /// Decrypts a raw `{"encrypt":"…"}` callback body. Verify its signature first when the
    /// request carries one.
    pub fn decrypt_body(&self, raw_body: &[u8]) -> Result<String, CryptoError> {
        #[derive(Deserialize)]
        struct Body<'a> {
            #[serde(borrow)]
            encrypt: Cow<'a, str>,
        }
        let body: Body<'_> = serde_json::from_slice(raw_body)
            .map_err(|_| CryptoError::MalformedEnvelope("invalid JSON body"))?;
        self.decrypt(&body.encrypt)
    }

    /// Encrypts `plaintext` the way Feishu does, with the given IV; the same IV gives the same
    /// output (used by tests and by fakes of the platform).
    pub fn encrypt(&self, plaintext: &str, iv: [u8; 16]) -> String {
        let msg_len = plaintext.len();
        let padded_len = (msg_len / 16 + 1) * 16;
        let mut buf = Vec::with_capacity(IV_LEN + padded_len);
        buf.extend_from_slice(&iv);
        buf.extend_from_slice(plaintext.as_bytes());
        buf.resize(IV_LEN + padded_len, 0);
        cbc::Encryptor::<Aes256>::inner_iv_init(self.aes.clone(), (&iv).into())
            .encrypt_padded_mut::<Pkcs7>(&mut buf[IV_LEN..], msg_len)
            .expect("buffer has room for the padding");
        STANDARD.encode(&buf)
    }

    pub fn encrypt_random(&self, plaintext: &str) -> String {
        self.encrypt(plaintext, rand::random())
    }

    /// `X-Lark-Signature`: hex SHA-256 of `timestamp + nonce + encrypt_key` followed by the raw
    /// body bytes exactly as received.
    pub fn signature(&self, timestamp: &str, nonce: &str, raw_body: &[u8]) -> String {
        hex::encode(self.digest(timestamp, nonce, raw_body))
    }

    /// Checks `X-Lark-Signature` in constant time against the raw body bytes.
    pub fn verify_signature(
        &self,
        timestamp: &str,
        nonce: &str,
        raw_body: &[u8],
        signature: &str,
    ) -> Result<(), CryptoError> {
        verify_hex(&self.digest(timestamp, nonce, raw_body), signature)
    }

    fn digest(&self, timestamp: &str, nonce: &str, raw_body: &[u8]) -> [u8; 32] {
        let mut hasher = Sha256::new();
        hasher.update(timestamp.as_bytes());
        hasher.update(nonce.as_bytes());
        hasher.update(self.encrypt_key.expose_secret().as_bytes());
        hasher.update(raw_body);
        hasher.finalize().into()
    }
}

/// The `h5sdk.config` signature: SHA-1 hex over the JS-SDK string. The official sample signs a
/// millisecond timestamp; pass whatever the page is given.
pub fn jsapi_signature(jsapi_ticket: &str, noncestr: &str, timestamp: &str, url: &str) -> String {
    let plain = jsapi_string_to_sign(jsapi_ticket, noncestr, timestamp, url);
    hex::encode(Sha1::digest(plain.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::crypto::vectors::{of_kind, s};
    use serde_json::Value;

    #[test]
    fn vectors_feishu_decrypt() {
        for v in of_kind("feishu-decrypt") {
            let c = FeishuCrypto::new(s(&v, "inputs", "encrypt_key")).unwrap();
            let encrypt = s(&v, "inputs", "encrypt");
            let plaintext = c.decrypt(encrypt).unwrap();
            match v["expected"]["plaintext"].as_str() {
                Some(expected) => assert_eq!(plaintext, expected),
                None => {
                    // A real v2 event: compare the fields the vector lists.
                    let event: Value = serde_json::from_str(&plaintext).unwrap();
                    let expected = &v["expected"];
                    assert_eq!(event["schema"], expected["schema"]);
                    assert_eq!(event["header"], expected["header"]);
                    assert_eq!(
                        event["event"]["meeting"]["meeting_no"],
                        expected["event_meeting_no"]
                    );
                    assert_eq!(
                        event["event"]["meeting"]["topic"],
                        expected["event_meeting_topic"]
                    );
                }
            }
            let body = serde_json::json!({ "encrypt": encrypt }).to_string();
            assert_eq!(c.decrypt_body(body.as_bytes()).unwrap(), plaintext);

            // The IV carried in the ciphertext re-encrypts to the exact input.
            let raw = STANDARD.decode(encrypt).unwrap();
            let iv: [u8; 16] = raw[..16].try_into().unwrap();
            assert_eq!(c.encrypt(&plaintext, iv), encrypt);
        }
    }

    #[test]
    fn vectors_feishu_signature() {
        for v in of_kind("feishu-signature") {
            let c = FeishuCrypto::new(s(&v, "inputs", "encrypt_key")).unwrap();
            let (ts, nonce) = (
                s(&v, "inputs", "x_lark_request_timestamp"),
                s(&v, "inputs", "x_lark_request_nonce"),
            );
            let body = s(&v, "inputs", "raw_body").as_bytes();
            let expected = s(&v, "expected", "x_lark_signature");
            assert_eq!(c.signature(ts, nonce, body), expected);
            assert_eq!(c.verify_signature(ts, nonce, body, expected), Ok(()));
            // The signed body is also a decryptable event.
            assert!(c
                .decrypt_body(body)
                .unwrap()
                .contains("vc.meeting.meeting_ended_v1"));
        }
    }

    #[test]
    fn signature_is_over_the_raw_bytes() {
        let v = of_kind("feishu-signature").into_iter().next().unwrap();
        let c = FeishuCrypto::new(s(&v, "inputs", "encrypt_key")).unwrap();
        let (ts, nonce) = (
            s(&v, "inputs", "x_lark_request_timestamp"),
            s(&v, "inputs", "x_lark_request_nonce"),
        );
        let body = s(&v, "inputs", "raw_body");
        let sig = s(&v, "expected", "x_lark_signature");
        // Re-serialised with a space: same JSON, different bytes, so refused.
        let reformatted = body.replacen("\":\"", "\": \"", 1);
        assert_eq!(
            c.verify_signature(ts, nonce, reformatted.as_bytes(), sig),
            Err(CryptoError::BadSignature)
        );
        assert_eq!(
            c.verify_signature("1677254850", nonce, body.as_bytes(), sig),
            Err(CryptoError::BadSignature)
        );
        assert_eq!(
            c.verify_signature(ts, "533226634", body.as_bytes(), sig),
            Err(CryptoError::BadSignature)
        );
        let other = FeishuCrypto::new("another key").unwrap();
        assert_eq!(
            other.verify_signature(ts, nonce, body.as_bytes(), sig),
            Err(CryptoError::BadSignature)
        );
        assert_eq!(
            c.verify_signature(ts, nonce, body.as_bytes(), &sig.to_uppercase()),
            Ok(())
        );
    }

    #[test]
    fn tampered_and_malformed_ciphertexts_are_refused() {
        let c = FeishuCrypto::new("test key").unwrap();
        let encrypt = c.encrypt("hello world", *b"0123456789abcdef");
        let mut raw = STANDARD.decode(&encrypt).unwrap();
        let n = raw.len();
        raw[n - 1] ^= 0x55;
        assert!(c.decrypt(&STANDARD.encode(&raw)).is_err());
        assert_eq!(
            FeishuCrypto::new("other")
                .unwrap()
                .decrypt(&encrypt)
                .map_err(|_| ()),
            Err(())
        );
        for bad in [
            "",
            "!!",
            &STANDARD.encode([0u8; 16]),
            &STANDARD.encode([0u8; 40]),
        ] {
            assert_eq!(
                c.decrypt(bad),
                Err(CryptoError::MalformedCiphertext),
                "{bad:?}"
            );
        }
        for bad in [&b"{}"[..], b"encrypt", br#"{"encrypt":3}"#] {
            assert!(matches!(
                c.decrypt_body(bad),
                Err(CryptoError::MalformedEnvelope(_))
            ));
        }
    }

    #[test]
    fn round_trips_and_rejects_an_empty_key() {
        assert_eq!(
            FeishuCrypto::new("").unwrap_err(),
            CryptoError::EmptyEncryptKey
        );
        let c = FeishuCrypto::new("k").unwrap();
        for len in 0..40 {
            let msg = "飞".repeat(len);
            assert_eq!(c.decrypt(&c.encrypt_random(&msg)).unwrap(), msg);
        }
        assert_eq!(format!("{c:?}"), "FeishuCrypto { .. }");
    }

    #[test]
    fn jsapi_signature_uses_the_shared_string() {
        // No Feishu vector exists (docs/protocols/README.md#test-vectors); the formula is WeCom's,
        // whose vector this is.
        let v = of_kind("wecom-jsapi-signature").into_iter().next().unwrap();
        let sig = jsapi_signature(
            s(&v, "inputs", "jsapi_ticket"),
            s(&v, "inputs", "noncestr"),
            s(&v, "inputs", "timestamp"),
            s(&v, "inputs", "url"),
        );
        assert_eq!(sig, s(&v, "expected", "signature"));
    }
}
