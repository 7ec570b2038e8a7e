//! Protection of personal data at rest: field encryption with rotatable keys,
//! keyed lookup hashes, and phone number normalisation.
//!
//! Every ciphertext and lookup hash carries the id of the key that produced it,
//! so a new key can become active while older keys still decrypt and match
//! existing rows until they are re-encrypted.

mod datakey;
pub mod fields;
mod phone;

use std::fmt;
use std::sync::Arc;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::rngs::OsRng;
use rand::RngCore;

pub use datakey::{load_or_create_key_file, DataKey, KeyError};
pub use phone::{mask_phone, normalize_phone, PhoneError};

use datakey::hmac_sha256;

/// Format version written in front of every ciphertext, so the scheme can change later.
const VERSION: &str = "v1";
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;

/// Why a stored ciphertext could not be decrypted. Messages never contain
/// plaintext or key material.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("ciphertext was sealed with unknown data key id {0:?}; is an old key missing from the configuration?")]
    UnknownKeyId(String),
    #[error("malformed ciphertext: {0}")]
    Malformed(&'static str),
    #[error("ciphertext failed authentication (tampered, or stored under another column)")]
    Authentication,
}

/// The active key plus older keys kept for decryption and lookup during rotation.
#[derive(Clone)]
pub struct Cipher {
    /// The active key first, then old keys; never empty and without duplicate ids.
    keys: Arc<[DataKey]>,
}

impl Cipher {
    pub fn new(active: DataKey, old: Vec<DataKey>) -> Cipher {
        let mut keys = Vec::with_capacity(old.len() + 1);
        keys.push(active);
        // A key listed twice (e.g. the active key also kept as "old") would
        // only produce duplicate lookup hashes.
        for key in old {
            if keys.iter().all(|k| k.id() != key.id()) {
                keys.push(key);
            }
        }
        Cipher { keys: keys.into() }
    }

    pub fn active_key_id(&self) -> &str {
        self.active().id()
    }

    /// Encrypts with AES-256-GCM under the active key and a random 96-bit nonce.
    /// `context` (e.g. `"contact_phones.phone"`) is authenticated as associated
    /// data, so a ciphertext copied into another column fails to decrypt.
    ///
    /// Output: `v1.<key id>.<base64url(nonce || ciphertext || tag)>`.
    pub fn encrypt(&self, context: &str, plaintext: &str) -> String {
        let key = self.active();
        let mut nonce = [0u8; NONCE_LEN];
        // Random nonces are safe for about 2^32 messages per key, far beyond
        // the number of sensitive fields one installation stores between rotations.
        OsRng.fill_bytes(&mut nonce);
        let sealed = aead(key)
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext.as_bytes(),
                    aad: context.as_bytes(),
                },
            )
            .expect("AES-GCM encryption only fails for messages over 64 GiB");

        let mut body = Vec::with_capacity(NONCE_LEN + sealed.len());
        body.extend_from_slice(&nonce);
        body.extend_from_slice(&sealed);
        format!("{VERSION}.{}.{}", key.id(), URL_SAFE_NO_PAD.encode(body))
    }

    /// Decrypts a value produced by [`Cipher::encrypt`] with the same `context`,
    /// using whichever known key (active or old) its id names.
    pub fn decrypt(&self, context: &str, sealed: &str) -> Result<String, CryptoError> {
        let mut parts = sealed.splitn(3, '.');
        let (Some(version), Some(key_id), Some(body)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(CryptoError::Malformed("expected v1.<key id>.<payload>"));
        };
        if version != VERSION {
            return Err(CryptoError::Malformed("unsupported format version"));
        }
        // Checked before the id is echoed in an error, so a corrupted value
        // cannot put arbitrary text into logs.
        if key_id.len() != 8 || !key_id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(CryptoError::Malformed("key id is not 8 hex digits"));
        }
        let key = self
            .keys
            .iter()
            .find(|k| k.id() == key_id)
            .ok_or_else(|| CryptoError::UnknownKeyId(key_id.to_owned()))?;

        let body = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| CryptoError::Malformed("payload is not base64url"))?;
        if body.len() < NONCE_LEN + TAG_LEN {
            return Err(CryptoError::Malformed("payload is too short"));
        }
        let (nonce, ciphertext) = body.split_at(NONCE_LEN);
        let plaintext = aead(key)
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| CryptoError::Authentication)?;
        String::from_utf8(plaintext).map_err(|_| CryptoError::Malformed("plaintext is not UTF-8"))
    }

    /// Encrypts bytes (a file) as [`Cipher::encrypt`] does text, without the base64
    /// step: `v1.<key id>.` followed by nonce, ciphertext and tag.
    pub fn encrypt_bytes(&self, context: &str, plaintext: &[u8]) -> Vec<u8> {
        let key = self.active();
        let mut nonce = [0u8; NONCE_LEN];
        OsRng.fill_bytes(&mut nonce);
        let sealed = aead(key)
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: context.as_bytes(),
                },
            )
            .expect("AES-GCM encryption only fails for messages over 64 GiB");
        let header = format!("{VERSION}.{}.", key.id());
        let mut out = Vec::with_capacity(header.len() + NONCE_LEN + sealed.len());
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        out
    }

    /// Decrypts what [`Cipher::encrypt_bytes`] produced with the same `context`.
    pub fn decrypt_bytes(&self, context: &str, sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
        // "v1." + 8 hex digits + "."
        const HEADER: usize = VERSION.len() + 1 + 8 + 1;
        if sealed.len() < HEADER + NONCE_LEN + TAG_LEN {
            return Err(CryptoError::Malformed("sealed file is too short"));
        }
        let (header, body) = sealed.split_at(HEADER);
        let Some(key_id) = header
            .strip_prefix(VERSION.as_bytes())
            .and_then(|h| h.strip_prefix(b"."))
            .and_then(|h| h.strip_suffix(b"."))
            .filter(|id| id.iter().all(u8::is_ascii_hexdigit))
            .and_then(|id| std::str::from_utf8(id).ok())
        else {
            return Err(CryptoError::Malformed("expected v1.<key id>. in front"));
        };
        let key = self
            .keys
            .iter()
            .find(|k| k.id() == key_id)
            .ok_or_else(|| CryptoError::UnknownKeyId(key_id.to_owned()))?;
        let (nonce, ciphertext) = body.split_at(NONCE_LEN);
        aead(key)
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| CryptoError::Authentication)
    }

    /// Keyed hash of `value` under the active key, for equality lookups on
    /// encrypted columns: `<key id>.<base64url(HMAC-SHA256(lookup key, context || 0x00 || value))>`.
    /// Callers normalise the value first (e.g. [`normalize_phone`]) so equal
    /// values hash equally.
    pub fn lookup_hash(&self, context: &str, value: &str) -> String {
        lookup_hash_with(self.active(), context, value)
    }

    /// The same hash under every known key, active first, for
    /// `WHERE hash IN (...)` while rows hashed under old keys still exist.
    pub fn lookup_hashes(&self, context: &str, value: &str) -> Vec<String> {
        self.keys
            .iter()
            .map(|key| lookup_hash_with(key, context, value))
            .collect()
    }

    fn active(&self) -> &DataKey {
        &self.keys[0]
    }
}

impl fmt::Debug for Cipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let old: Vec<&str> = self.keys[1..].iter().map(DataKey::id).collect();
        f.debug_struct("Cipher")
            .field("active_key_id", &self.active_key_id())
            .field("old_key_ids", &old)
            .finish()
    }
}

fn aead(key: &DataKey) -> Aes256Gcm {
    Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(key.encrypt_key()))
}

fn lookup_hash_with(key: &DataKey, context: &str, value: &str) -> String {
    // The 0x00 separator keeps ("ab", "c") and ("a", "bc") apart.
    let mac = hmac_sha256(
        key.lookup_key(),
        &[context.as_bytes(), &[0], value.as_bytes()],
    );
    format!("{}.{}", key.id(), URL_SAFE_NO_PAD.encode(mac))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PHONE: &str = "contact_phones.phone";

    fn cipher() -> Cipher {
        Cipher::new(DataKey::generate(), Vec::new())
    }

    fn split(sealed: &str) -> (String, String, Vec<u8>) {
        let parts: Vec<&str> = sealed.split('.').collect();
        assert_eq!(parts.len(), 3, "{sealed}");
        let body = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
        (parts[0].to_owned(), parts[1].to_owned(), body)
    }

    #[test]
    fn round_trip() {
        let c = cipher();
        for text in ["+8613800138000", "", "张三 / 李四 – ✓"] {
            let sealed = c.encrypt(PHONE, text);
            assert_eq!(c.decrypt(PHONE, &sealed).unwrap(), text);
        }
    }

    #[test]
    fn output_format_names_version_and_active_key() {
        let c = cipher();
        let sealed = c.encrypt(PHONE, "hello");
        let (version, id, body) = split(&sealed);
        assert_eq!(version, "v1");
        assert_eq!(id, c.active_key_id());
        assert_eq!(body.len(), NONCE_LEN + "hello".len() + TAG_LEN);
        assert!(!sealed.contains("hello"));
    }

    #[test]
    fn each_encryption_uses_a_fresh_nonce() {
        let c = cipher();
        let a = c.encrypt(PHONE, "same");
        let b = c.encrypt(PHONE, "same");
        assert_ne!(a, b);
        assert_ne!(split(&a).2[..NONCE_LEN], split(&b).2[..NONCE_LEN]);
    }

    #[test]
    fn wrong_context_fails() {
        let c = cipher();
        let sealed = c.encrypt(PHONE, "+8613800138000");
        assert!(matches!(
            c.decrypt("contacts.name", &sealed),
            Err(CryptoError::Authentication)
        ));
    }

    #[test]
    fn tampered_ciphertext_fails() {
        let c = cipher();
        let sealed = c.encrypt(PHONE, "+8613800138000");
        let (_, id, body) = split(&sealed);
        // Flip one bit in the nonce, the ciphertext and the tag in turn.
        for index in [0, NONCE_LEN, body.len() - 1] {
            let mut bad = body.clone();
            bad[index] ^= 0x01;
            let tampered = format!("v1.{id}.{}", URL_SAFE_NO_PAD.encode(&bad));
            assert!(
                matches!(
                    c.decrypt(PHONE, &tampered),
                    Err(CryptoError::Authentication)
                ),
                "flipped byte {index}"
            );
        }
    }

    #[test]
    fn old_key_still_decrypts_after_rotation() {
        let old = DataKey::generate();
        let before = Cipher::new(old.clone(), Vec::new());
        let sealed = before.encrypt(PHONE, "+8613800138000");

        let new = DataKey::generate();
        let after = Cipher::new(new.clone(), vec![old.clone()]);
        assert_eq!(after.active_key_id(), new.id());
        assert_eq!(after.decrypt(PHONE, &sealed).unwrap(), "+8613800138000");
        // New writes use the new key.
        assert_eq!(split(&after.encrypt(PHONE, "x")).1, new.id());
    }

    #[test]
    fn unknown_key_id_is_reported() {
        let sealed = cipher().encrypt(PHONE, "secret value");
        let other = cipher();
        let err = other.decrypt(PHONE, &sealed).unwrap_err();
        let (_, id, _) = split(&sealed);
        assert!(
            matches!(&err, CryptoError::UnknownKeyId(found) if *found == id),
            "{err:?}"
        );
        assert!(!err.to_string().contains("secret value"));
    }

    #[test]
    fn malformed_inputs_are_rejected() {
        let c = cipher();
        let id = c.active_key_id().to_owned();
        let cases = [
            String::new(),
            "v1".to_owned(),
            format!("v1.{id}"),
            format!("v2.{id}.AAAA"),
            format!("v1.{id}.not base64!"),
            format!("v1.{id}.AAAA"),
            format!("v1.{}.AAAA", "x".repeat(200)),
        ];
        for case in cases {
            assert!(
                matches!(c.decrypt(PHONE, &case), Err(CryptoError::Malformed(_))),
                "{case:?}"
            );
        }
    }

    #[test]
    fn bytes_round_trip_bound_to_context_and_key() {
        let old = DataKey::generate();
        let file = b"%PDF-1.7 \x00\xff binary";
        let sealed = Cipher::new(old.clone(), Vec::new()).encrypt_bytes("blobs.file", file);
        assert!(!contains(&sealed, b"binary"));
        assert_eq!(sealed.len(), 12 + NONCE_LEN + file.len() + TAG_LEN);
        let rotated = Cipher::new(DataKey::generate(), vec![old]);
        assert_eq!(rotated.decrypt_bytes("blobs.file", &sealed).unwrap(), file);
        assert!(matches!(
            rotated.decrypt_bytes("cards.content", &sealed),
            Err(CryptoError::Authentication)
        ));
        assert!(matches!(
            cipher().decrypt_bytes("blobs.file", &sealed),
            Err(CryptoError::UnknownKeyId(_))
        ));
        // A file as it was stored before encryption is not mistaken for a sealed one.
        for plain in [
            &b"v1.not-a-key.whatever comes next in the file"[..],
            b"short",
            file,
        ] {
            assert!(matches!(
                rotated.decrypt_bytes("blobs.file", plain),
                Err(CryptoError::Malformed(_))
            ));
        }
        let mut tampered = sealed.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert!(matches!(
            rotated.decrypt_bytes("blobs.file", &tampered),
            Err(CryptoError::Authentication)
        ));
    }

    fn contains(haystack: &[u8], needle: &[u8]) -> bool {
        haystack.windows(needle.len()).any(|w| w == needle)
    }

    #[test]
    fn lookup_hash_is_stable_and_context_bound() {
        let key = DataKey::generate();
        let a = Cipher::new(key.clone(), Vec::new());
        let b = Cipher::new(key, Vec::new());
        let hash = a.lookup_hash(PHONE, "+8613800138000");
        assert_eq!(hash, a.lookup_hash(PHONE, "+8613800138000"));
        assert_eq!(hash, b.lookup_hash(PHONE, "+8613800138000"));
        assert!(hash.starts_with(&format!("{}.", a.active_key_id())));
        assert!(!hash.contains("13800138000"));

        assert_ne!(hash, a.lookup_hash("contacts.email", "+8613800138000"));
        assert_ne!(hash, a.lookup_hash(PHONE, "+8613800138001"));
        // The separator keeps the context/value boundary unambiguous.
        assert_ne!(a.lookup_hash("ab", "c"), a.lookup_hash("a", "bc"));
    }

    #[test]
    fn lookup_hash_differs_across_keys() {
        assert_ne!(
            cipher().lookup_hash(PHONE, "+8613800138000"),
            cipher().lookup_hash(PHONE, "+8613800138000")
        );
    }

    #[test]
    fn lookup_hashes_cover_old_keys_active_first() {
        let old = DataKey::generate();
        let old_hash = Cipher::new(old.clone(), Vec::new()).lookup_hash(PHONE, "v");

        let rotated = Cipher::new(DataKey::generate(), vec![old.clone()]);
        let hashes = rotated.lookup_hashes(PHONE, "v");
        assert_eq!(hashes.len(), 2);
        assert_eq!(hashes[0], rotated.lookup_hash(PHONE, "v"));
        assert_eq!(hashes[1], old_hash);
    }

    #[test]
    fn duplicate_keys_are_kept_once() {
        let key = DataKey::generate();
        let c = Cipher::new(key.clone(), vec![key.clone(), key]);
        assert_eq!(c.lookup_hashes(PHONE, "v").len(), 1);
    }

    #[test]
    fn debug_shows_key_ids_only() {
        let active = DataKey::generate();
        let old = DataKey::generate();
        let c = Cipher::new(active.clone(), vec![old.clone()]);
        let debug = format!("{c:?}");
        assert!(debug.contains(active.id()), "{debug}");
        assert!(debug.contains(old.id()), "{debug}");
        assert!(!debug.contains(&active.to_base64()), "{debug}");
        assert!(!debug.contains(&old.to_base64()), "{debug}");
    }
}
