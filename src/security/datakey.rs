//! Data keys: parsing, generation, derivation of the sub-keys, and the
//! owner-only key file used by zero-configuration SQLite installs.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::path::Path;

use anyhow::{bail, Context};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::rngs::OsRng;
use rand::RngCore;
use secrecy::zeroize::Zeroizing;
use secrecy::{ExposeSecret, SecretBox};
use sha2::{Digest, Sha256};

pub(crate) type HmacSha256 = Hmac<Sha256>;

/// Length in bytes of a raw data key and of each derived sub-key (AES-256, HMAC-SHA256).
pub(crate) const KEY_LEN: usize = 32;

const KEY_ID_PREFIX: &[u8] = b"closeloop-key-id:";
const ENCRYPT_LABEL: &[u8] = b"closeloop/encrypt";
const LOOKUP_LABEL: &[u8] = b"closeloop/lookup";

type KeyBytes = SecretBox<[u8; KEY_LEN]>;

/// Why a configured data key was rejected. Messages never contain the key.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("data key is not valid standard base64")]
    NotBase64,
    #[error("data key must decode to {KEY_LEN} bytes, but decodes to {0} bytes")]
    WrongLength(usize),
}

/// One 32-byte AES-256 data key with its id.
///
/// The id is derived from the key itself, so rotating keys needs no id
/// configuration. The raw key is never used directly: encryption and lookup
/// hashing use separate HMAC-derived sub-keys, so a weakness in one use cannot
/// leak into the other.
pub struct DataKey {
    id: String,
    raw: KeyBytes,
    encrypt: KeyBytes,
    lookup: KeyBytes,
}

impl DataKey {
    /// Parses a standard-base64 key (surrounding whitespace is ignored, since
    /// keys often arrive from environment variables or files with a newline).
    pub fn from_base64(s: &str) -> Result<DataKey, KeyError> {
        // Zeroizing so the decoded key does not linger in freed heap memory.
        let bytes = Zeroizing::new(STANDARD.decode(s.trim()).map_err(|_| KeyError::NotBase64)?);
        if bytes.len() != KEY_LEN {
            return Err(KeyError::WrongLength(bytes.len()));
        }
        Ok(Self::from_raw(secret_from(&bytes)))
    }

    /// A fresh random key from the operating system's CSPRNG.
    pub fn generate() -> DataKey {
        let raw = SecretBox::init_with_mut(|k: &mut [u8; KEY_LEN]| OsRng.fill_bytes(k));
        Self::from_raw(raw)
    }

    /// The key in standard base64; meant only for writing a generated key file.
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.raw.expose_secret())
    }

    /// Short public identifier of this key, stored next to every ciphertext and hash.
    pub fn id(&self) -> &str {
        &self.id
    }

    pub(crate) fn encrypt_key(&self) -> &[u8; KEY_LEN] {
        self.encrypt.expose_secret()
    }

    pub(crate) fn lookup_key(&self) -> &[u8; KEY_LEN] {
        self.lookup.expose_secret()
    }

    fn from_raw(raw: KeyBytes) -> DataKey {
        let key = raw.expose_secret();
        let digest = Sha256::new()
            .chain_update(KEY_ID_PREFIX)
            .chain_update(key)
            .finalize();
        let id = hex::encode(&digest[..4]);
        let encrypt = secret_from(&hmac_sha256(key, &[ENCRYPT_LABEL]));
        let lookup = secret_from(&hmac_sha256(key, &[LOOKUP_LABEL]));
        DataKey {
            id,
            raw,
            encrypt,
            lookup,
        }
    }
}

impl Clone for DataKey {
    fn clone(&self) -> Self {
        DataKey {
            id: self.id.clone(),
            raw: secret_from(self.raw.expose_secret()),
            encrypt: secret_from(self.encrypt.expose_secret()),
            lookup: secret_from(self.lookup.expose_secret()),
        }
    }
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DataKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// HMAC-SHA256 over the concatenation of `parts`.
pub(crate) fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac =
        <HmacSha256 as Mac>::new_from_slice(key).expect("HMAC accepts keys of any length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// Copies key bytes straight into the heap allocation, so no un-zeroized copy
/// is left behind on the stack.
fn secret_from(bytes: &[u8]) -> KeyBytes {
    SecretBox::init_with_mut(|k: &mut [u8; KEY_LEN]| k.copy_from_slice(bytes))
}

/// Loads or creates the owner-only key file used when no key is configured
/// (SQLite only). Returns the key and `true` if the file was newly created, so
/// the caller can log that a key was generated and must be backed up.
pub fn load_or_create_key_file(path: &Path) -> anyhow::Result<(DataKey, bool)> {
    // Trying create_new first (instead of checking existence) leaves no window
    // in which two starting processes could both create a key.
    let mut file = match create_owner_only(path) {
        Ok(file) => file,
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {
            return read_key_file(path).map(|key| (key, false));
        }
        Err(e) => {
            return Err(e)
                .with_context(|| format!("cannot create data key file {}", path.display()))
        }
    };

    let key = DataKey::generate();
    let written = write_key(&mut file, &key);
    if let Err(e) = written {
        // An empty or partial key file would make every later start fail, so
        // remove it and let the next start try again.
        drop(file);
        let _ = fs::remove_file(path);
        return Err(e).with_context(|| format!("cannot write data key file {}", path.display()));
    }
    sync_parent_dir(path);
    Ok((key, true))
}

fn create_owner_only(path: &Path) -> std::io::Result<File> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // Set at creation so the key is never readable by others, not even briefly.
        options.mode(0o600);
    }
    options.open(path)
}

fn write_key(file: &mut File, key: &DataKey) -> std::io::Result<()> {
    let encoded = Zeroizing::new(key.to_base64());
    file.write_all(encoded.as_bytes())?;
    file.write_all(b"\n")?;
    // The key protects data written right after this; it must survive a crash.
    file.sync_all()
}

/// Makes the new directory entry durable; best effort, because some file
/// systems do not support syncing a directory.
fn sync_parent_dir(path: &Path) {
    #[cfg(unix)]
    {
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        if let Err(e) = File::open(parent).and_then(|dir| dir.sync_all()) {
            tracing::warn!(error = %e, dir = %parent.display(), "could not sync key file directory");
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

fn read_key_file(path: &Path) -> anyhow::Result<DataKey> {
    let mut file = File::open(path)
        .with_context(|| format!("cannot open data key file {}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        // Checked on the open handle, so the file cannot be swapped between check and read.
        let mode = file
            .metadata()
            .with_context(|| format!("cannot inspect data key file {}", path.display()))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            bail!(
                "data key file {} has mode {:o}, which lets group or others read it; \
                 restrict it to the owner (chmod 600)",
                path.display(),
                mode & 0o777
            );
        }
    }
    let mut contents = Zeroizing::new(String::new());
    file.read_to_string(&mut contents)
        .with_context(|| format!("cannot read data key file {}", path.display()))?;
    if contents.trim().is_empty() {
        bail!("data key file {} is empty", path.display());
    }
    DataKey::from_base64(&contents)
        .with_context(|| format!("invalid data key in {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_of(byte: u8) -> String {
        STANDARD.encode([byte; KEY_LEN])
    }

    #[test]
    fn base64_round_trip_keeps_id() {
        let key = DataKey::generate();
        let again = DataKey::from_base64(&key.to_base64()).unwrap();
        assert_eq!(key.id(), again.id());
        assert_eq!(key.to_base64(), again.to_base64());
    }

    #[test]
    fn id_is_eight_hex_chars_derived_from_key() {
        let a = DataKey::from_base64(&key_of(1)).unwrap();
        let b = DataKey::from_base64(&key_of(2)).unwrap();
        assert_eq!(a.id().len(), 8);
        assert!(a.id().chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a.id(), b.id());

        let expected = Sha256::new()
            .chain_update(b"closeloop-key-id:")
            .chain_update([1u8; KEY_LEN])
            .finalize();
        assert_eq!(a.id(), hex::encode(&expected[..4]));
    }

    #[test]
    fn sub_keys_differ_from_raw_key_and_each_other() {
        let key = DataKey::from_base64(&key_of(7)).unwrap();
        assert_ne!(key.encrypt_key(), &[7u8; KEY_LEN]);
        assert_ne!(key.lookup_key(), &[7u8; KEY_LEN]);
        assert_ne!(key.encrypt_key(), key.lookup_key());
    }

    #[test]
    fn generated_keys_are_distinct() {
        assert_ne!(DataKey::generate().id(), DataKey::generate().id());
    }

    #[test]
    fn surrounding_whitespace_is_ignored() {
        let text = format!("  {}\n", key_of(3));
        assert!(DataKey::from_base64(&text).is_ok());
    }

    #[test]
    fn rejects_31_bytes_without_echoing_input() {
        let short = STANDARD.encode([9u8; 31]);
        let err = DataKey::from_base64(&short).unwrap_err();
        assert!(matches!(err, KeyError::WrongLength(31)), "{err:?}");
        let message = err.to_string();
        assert!(message.contains("32"), "{message}");
        assert!(!message.contains(&short), "{message}");
    }

    #[test]
    fn rejects_33_bytes() {
        let long = STANDARD.encode([9u8; 33]);
        assert!(matches!(
            DataKey::from_base64(&long),
            Err(KeyError::WrongLength(33))
        ));
    }

    #[test]
    fn rejects_non_base64_without_echoing_input() {
        let input = "not-base64!!secretish";
        let err = DataKey::from_base64(input).unwrap_err();
        assert!(matches!(err, KeyError::NotBase64), "{err:?}");
        assert!(!err.to_string().contains(input));
        assert!(!format!("{err:?}").contains(input));
    }

    #[test]
    fn debug_shows_only_the_id() {
        let key = DataKey::generate();
        let debug = format!("{key:?}");
        assert!(debug.contains(key.id()), "{debug}");
        assert!(!debug.contains(&key.to_base64()), "{debug}");
        assert!(!debug.contains(&hex::encode(key.encrypt_key())), "{debug}");
    }

    #[test]
    fn clone_keeps_key_material() {
        let key = DataKey::generate();
        let copy = key.clone();
        assert_eq!(key.id(), copy.id());
        assert_eq!(key.to_base64(), copy.to_base64());
        assert_eq!(key.lookup_key(), copy.lookup_key());
    }

    #[test]
    fn key_file_is_created_then_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data.key");

        let (created, is_new) = load_or_create_key_file(&path).unwrap();
        assert!(is_new);
        let text = fs::read_to_string(&path).unwrap();
        assert_eq!(text, format!("{}\n", created.to_base64()));

        let (loaded, is_new) = load_or_create_key_file(&path).unwrap();
        assert!(!is_new);
        assert_eq!(loaded.id(), created.id());
    }

    #[cfg(unix)]
    #[test]
    fn key_file_is_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data.key");
        load_or_create_key_file(&path).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[cfg(unix)]
    #[test]
    fn key_file_readable_by_others_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data.key");
        let (key, _) = load_or_create_key_file(&path).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();

        let err = load_or_create_key_file(&path).unwrap_err();
        let message = format!("{err:#}");
        assert!(message.contains("644"), "{message}");
        assert!(message.contains("chmod 600"), "{message}");
        assert!(!message.contains(&key.to_base64()), "{message}");
    }

    #[test]
    fn key_file_with_whitespace_is_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data.key");
        let written = key_of(5);
        let mut file = create_owner_only(&path).unwrap();
        file.write_all(format!("\n {written} \r\n").as_bytes())
            .unwrap();
        drop(file);

        let (key, is_new) = load_or_create_key_file(&path).unwrap();
        assert!(!is_new);
        assert_eq!(key.to_base64(), written);
    }

    #[test]
    fn empty_or_invalid_key_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data.key");
        drop(create_owner_only(&path).unwrap());
        let message = format!("{:#}", load_or_create_key_file(&path).unwrap_err());
        assert!(message.contains("empty"), "{message}");

        let bad = STANDARD.encode([1u8; 16]);
        fs::write(&path, &bad).unwrap();
        let message = format!("{:#}", load_or_create_key_file(&path).unwrap_err());
        assert!(message.contains("32 bytes"), "{message}");
        assert!(!message.contains(&bad), "{message}");
    }

    #[test]
    fn missing_directory_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("no-such-dir").join("data.key");
        assert!(load_or_create_key_file(&path).is_err());
        assert!(!path.exists());
    }
}
