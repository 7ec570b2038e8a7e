//! Cryptography shared by the platforms.
//!
//! WeCom and DingTalk use one callback scheme (Tencent's "WXBizMsgCrypt";
//! docs/protocols/wecom.md#callback-security-and-crypto and
//! docs/protocols/dingtalk.md#callback-security-and-crypto): AES-256-CBC keyed by the
//! EncodingAESKey with the IV taken from the key, a PKCS#7-style pad to a multiple of 32 bytes, a
//! plaintext of `random(16) || u32 BE length || message || receiver id`, and a SHA-1 signature over
//! the sorted strings. Feishu has its own scheme in `feishu::crypto` but shares the error type and
//! the constant-time comparison.

use std::fmt;

use aes::Aes256;
use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::Engine;
use cbc::cipher::block_padding::NoPadding;
use cbc::cipher::{BlockDecryptMut, BlockEncryptMut, InnerIvInit, KeyInit};
use rand::distributions::Alphanumeric;
use rand::Rng;
use secrecy::zeroize::Zeroizing;
use sha1::{Digest, Sha1};
use subtle::ConstantTimeEq;

/// Why a key, a signature or a callback was refused. Messages name the check that failed and
/// never contain a key, a token or decrypted content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    #[error("EncodingAESKey must be 43 base64 characters")]
    InvalidEncodingAesKey,
    #[error("encrypt key must not be empty")]
    EmptyEncryptKey,
    #[error("signature does not match")]
    BadSignature,
    #[error("ciphertext is not base64 of whole AES blocks")]
    MalformedCiphertext,
    #[error("decrypted message has invalid padding")]
    BadPadding,
    #[error("decrypted message has an inconsistent length")]
    BadLength,
    #[error("decrypted message is addressed to a different receiver")]
    ReceiverMismatch,
    #[error("decrypted message is not UTF-8")]
    NotUtf8,
    #[error("callback body is malformed: {0}")]
    MalformedEnvelope(&'static str),
    #[error("missing query parameter {0}")]
    MissingParam(&'static str),
    #[error("timestamp is not a non-negative whole number")]
    InvalidTimestamp,
    #[error("{0} may only contain ASCII letters and digits")]
    InvalidReplyField(&'static str),
    #[error("URL has an invalid percent-encoded query")]
    InvalidUrl,
}

/// Characters in a configured EncodingAESKey (a 32-byte key in base64 without its final `=`).
const ENCODING_AES_KEY_LEN: usize = 43;

/// The platforms generate keys whose last character has non-zero trailing bits, which a strict
/// decoder rejects (docs/protocols/README.md#cross-platform-pitfalls); every official SDK decodes
/// them leniently.
const LENIENT_BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_allow_trailing_bits(true),
);

/// A WeCom / DingTalk EncodingAESKey, validated and decoded to its 32 key bytes.
#[derive(Clone)]
pub struct EncodingAesKey(Zeroizing<[u8; 32]>);

impl EncodingAesKey {
    /// Parses the 43-character key shown in the platform console. Surrounding whitespace is
    /// ignored because keys often arrive from files or environment variables with a newline.
    pub fn parse(s: &str) -> Result<Self, CryptoError> {
        let s = s.trim();
        if s.len() != ENCODING_AES_KEY_LEN {
            return Err(CryptoError::InvalidEncodingAesKey);
        }
        let mut padded = Zeroizing::new([b'='; ENCODING_AES_KEY_LEN + 1]);
        padded[..ENCODING_AES_KEY_LEN].copy_from_slice(s.as_bytes());
        let mut key = Zeroizing::new([0u8; 32]);
        match LENIENT_BASE64.decode_slice(&padded[..], &mut key[..]) {
            Ok(32) => Ok(Self(key)),
            _ => Err(CryptoError::InvalidEncodingAesKey),
        }
    }

    pub(crate) fn bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for EncodingAesKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EncodingAesKey([redacted])")
    }
}

/// Block size of the WXBizMsgCrypt pad: twice the AES block
/// (docs/protocols/README.md#cross-platform-pitfalls).
const PAD_BLOCK: usize = 32;
/// Random prefix plus the big-endian length field.
const HEADER_LEN: usize = 20;

/// The WeCom / DingTalk callback scheme for one token, key and receiver id (WeCom's receive
/// id, DingTalk's owner key): the sorted SHA-1 signature and the AES envelope. The platform
/// types wrap it and add their envelopes and replies.
#[derive(Clone)]
pub struct MsgCrypt {
    token: secrecy::SecretString,
    pub(crate) cipher: MsgCipher,
    receiver: String,
}

impl MsgCrypt {
    pub fn new(
        token: impl Into<String>,
        key: &EncodingAesKey,
        receiver: impl Into<String>,
    ) -> Self {
        MsgCrypt {
            token: secrecy::SecretString::from(token.into()),
            cipher: MsgCipher::new(key),
            receiver: receiver.into(),
        }
    }

    /// The id every decrypted message must end with.
    pub fn receiver(&self) -> &str {
        &self.receiver
    }

    /// The lowercase hex signature over the token, timestamp, nonce and ciphertext.
    pub fn signature(&self, timestamp: &str, nonce: &str, encrypted: &str) -> String {
        hex::encode(self.digest(timestamp, nonce, encrypted))
    }

    /// Checks a request signature in constant time. Pass the strings exactly as received
    /// (after URL decoding); a timestamp is signed as written, seconds or milliseconds.
    pub fn verify_signature(
        &self,
        timestamp: &str,
        nonce: &str,
        encrypted: &str,
        signature: &str,
    ) -> Result<(), CryptoError> {
        verify_hex(&self.digest(timestamp, nonce, encrypted), signature)
    }

    fn digest(&self, timestamp: &str, nonce: &str, encrypted: &str) -> [u8; 20] {
        use secrecy::ExposeSecret;
        sorted_sha1([self.token.expose_secret(), timestamp, nonce, encrypted])
    }

    /// Decrypts a ciphertext and checks that it ends with our receiver id. Only call this
    /// after [`verify_signature`](Self::verify_signature): the signature is the integrity
    /// check.
    pub fn decrypt(&self, encrypted: &str) -> Result<String, CryptoError> {
        self.cipher.open(encrypted, &self.receiver)
    }

    /// Encrypts `plaintext` with the given 16-byte random prefix; the same prefix gives the
    /// same ciphertext, which is what the test vectors need.
    pub fn encrypt(&self, plaintext: &str, random: [u8; 16]) -> String {
        self.cipher.seal(plaintext, &self.receiver, &random)
    }

    pub fn encrypt_random(&self, plaintext: &str) -> String {
        self.encrypt(plaintext, random_prefix())
    }
}

/// The WXBizMsgCrypt cipher for one EncodingAESKey. The key schedule is expanded once here so
/// each message only clones it.
#[derive(Clone)]
pub(crate) struct MsgCipher {
    aes: Aes256,
    iv: [u8; 16],
}

impl MsgCipher {
    pub(crate) fn new(key: &EncodingAesKey) -> Self {
        let bytes = key.bytes();
        let mut iv = [0u8; 16];
        iv.copy_from_slice(&bytes[..16]);
        Self {
            aes: Aes256::new(bytes.into()),
            iv,
        }
    }

    /// Decrypts `encrypted` (standard base64) and returns the message, refusing it unless the
    /// trailing receiver id equals `receiver`. CBC is malleable and there is no MAC: callers
    /// verify the signature first.
    pub(crate) fn open(&self, encrypted: &str, receiver: &str) -> Result<String, CryptoError> {
        self.open_parts(encrypted, receiver)
            .map(|(_, message)| message)
    }

    /// Like [`open`](Self::open) but also returns the 16-byte random prefix.
    pub(crate) fn open_parts(
        &self,
        encrypted: &str,
        receiver: &str,
    ) -> Result<([u8; 16], String), CryptoError> {
        let mut buf = STANDARD
            .decode(encrypted)
            .map_err(|_| CryptoError::MalformedCiphertext)?;
        if buf.len() < PAD_BLOCK || buf.len() % 16 != 0 {
            return Err(CryptoError::MalformedCiphertext);
        }
        cbc::Decryptor::<Aes256>::inner_iv_init(self.aes.clone(), (&self.iv).into())
            .decrypt_padded_mut::<NoPadding>(&mut buf)
            .map_err(|_| CryptoError::MalformedCiphertext)?;

        let pad = usize::from(buf[buf.len() - 1]);
        if pad == 0
            || pad > PAD_BLOCK
            || buf[buf.len() - pad..]
                .iter()
                .any(|&b| usize::from(b) != pad)
        {
            return Err(CryptoError::BadPadding);
        }
        let body_end = buf.len() - pad;
        if body_end < HEADER_LEN {
            return Err(CryptoError::BadLength);
        }
        let mut len = [0u8; 4];
        len.copy_from_slice(&buf[16..HEADER_LEN]);
        let msg_end = usize::try_from(u32::from_be_bytes(len))
            .ok()
            .and_then(|n| n.checked_add(HEADER_LEN))
            .filter(|&end| end <= body_end)
            .ok_or(CryptoError::BadLength)?;
        if &buf[msg_end..body_end] != receiver.as_bytes() {
            return Err(CryptoError::ReceiverMismatch);
        }
        let mut random = [0u8; 16];
        random.copy_from_slice(&buf[..16]);
        // Reuse the decoded buffer for the message instead of copying it out.
        buf.truncate(msg_end);
        buf.drain(..HEADER_LEN);
        let message = String::from_utf8(buf).map_err(|_| CryptoError::NotUtf8)?;
        Ok((random, message))
    }

    /// Encrypts `message` for `receiver` with the given random prefix, deterministically.
    pub(crate) fn seal(&self, message: &str, receiver: &str, random: &[u8; 16]) -> String {
        let msg_len = u32::try_from(message.len()).expect("callback message shorter than 4 GiB");
        let body_len = HEADER_LEN + message.len() + receiver.len();
        let pad = PAD_BLOCK - body_len % PAD_BLOCK;
        let mut buf = Vec::with_capacity(body_len + pad);
        buf.extend_from_slice(random);
        buf.extend_from_slice(&msg_len.to_be_bytes());
        buf.extend_from_slice(message.as_bytes());
        buf.extend_from_slice(receiver.as_bytes());
        // `pad` is 1..=32, so it fits in a byte.
        buf.resize(body_len + pad, pad as u8);
        let total = buf.len();
        let ciphertext =
            cbc::Encryptor::<Aes256>::inner_iv_init(self.aes.clone(), (&self.iv).into())
                .encrypt_padded_mut::<NoPadding>(&mut buf, total)
                .expect("buffer is padded to whole blocks");
        STANDARD.encode(ciphertext)
    }
}

/// `sha1` over the four strings sorted byte-wise and concatenated: the WeCom and DingTalk
/// callback signature (docs/protocols/README.md#cross-platform-pitfalls).
pub(crate) fn sorted_sha1(mut parts: [&str; 4]) -> [u8; 20] {
    parts.sort_unstable();
    let mut hasher = Sha1::new();
    for part in parts {
        hasher.update(part.as_bytes());
    }
    hasher.finalize().into()
}

/// Checks a hex signature from a request against the digest we computed, in constant time.
/// Upper- and lowercase hex are both accepted.
pub(crate) fn verify_hex(expected: &[u8], provided: &str) -> Result<(), CryptoError> {
    let mut buf = [0u8; 64];
    let decoded = buf
        .get_mut(..expected.len())
        .filter(|_| provided.len() == expected.len() * 2)
        .ok_or(CryptoError::BadSignature)?;
    hex::decode_to_slice(provided, decoded).map_err(|_| CryptoError::BadSignature)?;
    if bool::from(expected.ct_eq(decoded)) {
        Ok(())
    } else {
        Err(CryptoError::BadSignature)
    }
}

/// Parses a callback timestamp: ASCII digits only (no sign, no spaces), as the platforms send.
pub fn parse_timestamp(s: &str) -> Result<i64, CryptoError> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(CryptoError::InvalidTimestamp);
    }
    s.parse().map_err(|_| CryptoError::InvalidTimestamp)
}

/// A fresh random prefix for the WeCom / DingTalk `encrypt` methods: 16 ASCII letters and
/// digits, as the official samples produce (any bytes would do; the receiver skips them).
pub fn random_prefix() -> [u8; 16] {
    let mut prefix = [0u8; 16];
    for (slot, c) in prefix
        .iter_mut()
        .zip(rand::thread_rng().sample_iter(Alphanumeric))
    {
        *slot = c;
    }
    prefix
}

/// A fresh 16-character nonce of ASCII letters and digits for signed replies.
pub fn random_nonce() -> String {
    rand::thread_rng()
        .sample_iter(Alphanumeric)
        .take(16)
        .map(char::from)
        .collect()
}

/// The JS-SDK string to sign, shared by all three platforms (the JS-SDK sections of
/// docs/protocols/wecom.md, docs/protocols/dingtalk.md and docs/protocols/feishu.md). The page URL
/// is signed without its `#fragment`.
pub(crate) fn jsapi_string_to_sign(
    ticket: &str,
    noncestr: &str,
    timestamp: &str,
    url: &str,
) -> String {
    let url = url.split_once('#').map_or(url, |(before, _)| before);
    format!("jsapi_ticket={ticket}&noncestr={noncestr}&timestamp={timestamp}&url={url}")
}

#[cfg(test)]
pub(crate) mod vectors {
    //! The published platform test vectors, each with its source
    //! (docs/protocols/README.md#test-vectors), loaded at test time.

    use serde_json::Value;

    const VECTORS: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/platform-vectors.json"
    ));

    pub(crate) fn all() -> Vec<Value> {
        serde_json::from_str(VECTORS).expect("vectors file is a JSON list")
    }

    /// Every vector of `kind`; panics if there is none, so a renamed kind cannot pass silently.
    pub(crate) fn of_kind(kind: &str) -> Vec<Value> {
        let found: Vec<Value> = all().into_iter().filter(|v| v["kind"] == kind).collect();
        assert!(!found.is_empty(), "no vectors of kind {kind}");
        found
    }

    /// A string field of a vector, panicking with its path when absent.
    pub(crate) fn s<'a>(v: &'a Value, section: &str, field: &str) -> &'a str {
        v[section][field]
            .as_str()
            .unwrap_or_else(|| panic!("vector {} lacks {section}.{field}", v["kind"]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_vector_kind_is_covered_by_a_test() {
        // Each kind is exercised in its platform's tests; a new kind or count here means a new
        // vector that needs a test.
        let mut counts = std::collections::BTreeMap::new();
        for v in vectors::all() {
            *counts
                .entry(v["kind"].as_str().unwrap().to_owned())
                .or_insert(0) += 1;
        }
        let expected: std::collections::BTreeMap<String, i32> = [
            ("dingtalk-decrypt", 2),
            ("feishu-decrypt", 3),
            ("feishu-signature", 1),
            ("wecom-decrypt", 2),
            ("wecom-encrypt-reply", 2),
            ("wecom-jsapi-signature", 1),
            ("wecom-verify-url", 2),
        ]
        .into_iter()
        .map(|(k, n)| (k.to_owned(), n))
        .collect();
        assert_eq!(counts, expected);
    }

    #[test]
    fn non_canonical_keys_from_the_vectors_are_accepted() {
        // Both of these have non-zero trailing bits
        // (docs/protocols/README.md#cross-platform-pitfalls).
        for key in [
            "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C",
            "4g5j64qlyl3zvetqxz5jiocdr586fn2zvjpa8zls3ij",
        ] {
            assert!(
                STANDARD.decode(format!("{key}=")).is_err(),
                "strict decoder rejects {key}"
            );
            assert!(EncodingAesKey::parse(key).is_ok(), "{key}");
        }
        for v in vectors::all() {
            if let Some(key) = v["inputs"]["encoding_aes_key"].as_str() {
                assert!(EncodingAesKey::parse(key).is_ok(), "{key}");
            }
        }
    }

    #[test]
    fn encoding_aes_key_decodes_to_the_key_bytes() {
        let raw: [u8; 32] = core::array::from_fn(|i| i as u8 * 7);
        let text = STANDARD.encode(raw);
        let key = EncodingAesKey::parse(&format!(" {}\n", text.trim_end_matches('='))).unwrap();
        assert_eq!(key.bytes(), &raw);
    }

    #[test]
    fn malformed_encoding_aes_keys_are_refused() {
        for bad in [
            "",
            "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2",
            "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2CC",
            "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2=",
            "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B-C",
            "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B\u{e9}",
        ] {
            assert_eq!(
                EncodingAesKey::parse(bad).unwrap_err(),
                CryptoError::InvalidEncodingAesKey,
                "{bad:?}"
            );
        }
    }

    #[test]
    fn debug_output_hides_the_key() {
        let key = EncodingAesKey::parse("jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C").unwrap();
        assert_eq!(format!("{key:?}"), "EncodingAesKey([redacted])");
    }

    fn cipher() -> MsgCipher {
        MsgCipher::new(
            &EncodingAesKey::parse("kWxPEV2UEDyxWpmPdKC3F4dgPDmOvfKX1HGnEUDS1aR").unwrap(),
        )
    }

    #[test]
    fn seal_then_open_round_trips_for_every_pad_length() {
        let c = cipher();
        for len in 0..80 {
            let msg = "x".repeat(len);
            let sealed = c.seal(&msg, "corp", &random_prefix());
            assert_eq!(STANDARD.decode(&sealed).unwrap().len() % PAD_BLOCK, 0);
            assert_eq!(c.open(&sealed, "corp").unwrap(), msg);
        }
    }

    /// Re-encrypts a raw (already padded) plaintext so tests can build malformed messages.
    fn seal_raw(c: &MsgCipher, mut raw: Vec<u8>) -> String {
        let n = raw.len();
        let out = cbc::Encryptor::<Aes256>::inner_iv_init(c.aes.clone(), (&c.iv).into())
            .encrypt_padded_mut::<NoPadding>(&mut raw, n)
            .unwrap()
            .to_vec();
        STANDARD.encode(out)
    }

    fn raw_message(
        msg: &[u8],
        receiver: &[u8],
        declared_len: u32,
        pad: u8,
        pad_len: usize,
    ) -> Vec<u8> {
        let mut raw = vec![b'r'; 16];
        raw.extend_from_slice(&declared_len.to_be_bytes());
        raw.extend_from_slice(msg);
        raw.extend_from_slice(receiver);
        raw.extend(std::iter::repeat_n(pad, pad_len));
        raw
    }

    #[test]
    fn bad_padding_is_refused() {
        let c = cipher();
        // 20 + 5 + 4 = 29 bytes, so a correct pad is three bytes of 3.
        let ok = raw_message(b"hello", b"corp", 5, 3, 3);
        assert_eq!(c.open(&seal_raw(&c, ok), "corp").unwrap(), "hello");
        for (pad, pad_len) in [(0u8, 3usize), (33, 3), (4, 3)] {
            let raw = raw_message(b"hello", b"corp", 5, pad, pad_len);
            assert_eq!(
                c.open(&seal_raw(&c, raw), "corp").unwrap_err(),
                CryptoError::BadPadding,
                "pad {pad}"
            );
        }
        // Pad bytes that disagree with the last one.
        let mut raw = raw_message(b"hello", b"corp", 5, 3, 3);
        let n = raw.len();
        raw[n - 2] = 2;
        assert_eq!(
            c.open(&seal_raw(&c, raw), "corp").unwrap_err(),
            CryptoError::BadPadding
        );
    }

    #[test]
    fn inconsistent_length_and_receiver_are_refused() {
        let c = cipher();
        let too_long = raw_message(b"hello", b"corp", 10, 3, 3);
        assert_eq!(
            c.open(&seal_raw(&c, too_long), "corp").unwrap_err(),
            CryptoError::BadLength
        );
        let huge = raw_message(b"hello", b"corp", u32::MAX, 3, 3);
        assert_eq!(
            c.open(&seal_raw(&c, huge), "corp").unwrap_err(),
            CryptoError::BadLength
        );
        let sealed = c.seal("hello", "corp", &random_prefix());
        assert_eq!(
            c.open(&sealed, "corq").unwrap_err(),
            CryptoError::ReceiverMismatch
        );
        assert_eq!(
            c.open(&sealed, "").unwrap_err(),
            CryptoError::ReceiverMismatch
        );
        let not_utf8 = raw_message(&[0xff, 0xfe, b'l', b'l', b'o'], b"corp", 5, 3, 3);
        assert_eq!(
            c.open(&seal_raw(&c, not_utf8), "corp").unwrap_err(),
            CryptoError::NotUtf8
        );
    }

    #[test]
    fn malformed_ciphertext_is_refused() {
        let c = cipher();
        for bad in [
            "",
            "not base64!",
            "AAAA",
            &STANDARD.encode(&[0u8; 48][..40]),
        ] {
            assert_eq!(
                c.open(bad, "corp").unwrap_err(),
                CryptoError::MalformedCiphertext,
                "{bad:?}"
            );
        }
    }

    #[test]
    fn verify_hex_compares_exactly() {
        let digest = sorted_sha1(["b", "a", "d", "c"]);
        assert_eq!(digest, sorted_sha1(["a", "b", "c", "d"]));
        let good = hex::encode(digest);
        assert_eq!(verify_hex(&digest, &good), Ok(()));
        assert_eq!(verify_hex(&digest, &good.to_uppercase()), Ok(()));
        for bad in [
            "",
            &good[..39],
            &format!("{good}0"),
            &good.replace(&good[..1], "g"),
        ] {
            assert_eq!(
                verify_hex(&digest, bad),
                Err(CryptoError::BadSignature),
                "{bad:?}"
            );
        }
        let mut flipped = digest;
        flipped[19] ^= 1;
        assert_eq!(
            verify_hex(&digest, &hex::encode(flipped)),
            Err(CryptoError::BadSignature)
        );
    }

    #[test]
    fn timestamps_are_plain_digits() {
        assert_eq!(parse_timestamp("1409659589"), Ok(1_409_659_589));
        assert_eq!(parse_timestamp("1608001896814"), Ok(1_608_001_896_814));
        for bad in ["", "-1", "+1", " 1", "1.5", "99999999999999999999"] {
            assert_eq!(
                parse_timestamp(bad),
                Err(CryptoError::InvalidTimestamp),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn random_values_have_the_documented_shape() {
        assert!(random_prefix().iter().all(u8::is_ascii_alphanumeric));
        let nonce = random_nonce();
        assert_eq!(nonce.len(), 16);
        assert!(nonce.bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_ne!(random_nonce(), nonce);
    }

    #[test]
    fn jsapi_string_drops_the_fragment() {
        assert_eq!(
            jsapi_string_to_sign("t", "n", "1", "https://a.example/p?q=1#frag"),
            "jsapi_ticket=t&noncestr=n&timestamp=1&url=https://a.example/p?q=1"
        );
    }
}
