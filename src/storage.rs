//! The blob store for files (proposals, proofs, handoff artefacts): a local folder by
//! default.
//!
//! Files are content addressed within an organisation: `<root>/<org>/<aa>/<sha256>`, where
//! `aa` is the first two hex digits of the hash of the content. A file is written under a
//! temporary name in its final folder, fsynced, then renamed, so a crash never leaves a
//! partial file under a final name; storing the same bytes twice keeps one file.
//!
//! Files are personal data (proofs show names and numbers): each is kept encrypted with
//! the data key (`security::fields::BLOB_FILE`, docs/personal-data.md) and decrypted when read.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use axum::body::Bytes;
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::config::StorageConfig;
use crate::security::fields::BLOB_FILE;
use crate::security::{Cipher, CryptoError};

/// What encryption adds to a file: `v1.<key id>.`, the nonce and the tag.
const SEALED_OVERHEAD: u64 = 12 + 12 + 16;

/// Where files live. Cheap to clone.
#[derive(Debug, Clone)]
pub struct BlobStore {
    root: PathBuf,
    cipher: Cipher,
}

/// A file in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// Where the store keeps it (relative to the root); what `get` takes.
    pub key: String,
    /// Lowercase hex.
    pub sha256: String,
    pub size: u64,
}

impl BlobStore {
    pub fn from_config(c: &StorageConfig, cipher: Cipher) -> anyhow::Result<BlobStore> {
        anyhow::ensure!(
            c.kind == "local",
            "storage.kind `{}` is not supported; use \"local\"",
            c.kind
        );
        Ok(BlobStore {
            root: c.path.clone(),
            cipher,
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Stores `bytes` for `org_id`; returns its key. Durable when this returns.
    pub async fn put(&self, org_id: &str, bytes: Bytes) -> anyhow::Result<Stored> {
        anyhow::ensure!(safe_segment(org_id), "organisation id unfit for a path");
        let root = self.root.clone();
        let org = org_id.to_string();
        let cipher = self.cipher.clone();
        // Hashing, encryption and fsync block; keep them off the async workers.
        tokio::task::spawn_blocking(move || put_blocking(&root, &cipher, &org, &bytes))
            .await
            .context("blob store task")?
    }

    /// The bytes stored under `key`, decrypted.
    pub async fn get(&self, key: &str) -> anyhow::Result<Vec<u8>> {
        let path = self.path_of(key)?;
        let sealed = tokio::fs::read(&path)
            .await
            .with_context(|| format!("cannot read blob {key}"))?;
        let cipher = self.cipher.clone();
        tokio::task::spawn_blocking(move || cipher.decrypt_bytes(BLOB_FILE, &sealed))
            .await
            .context("blob store task")?
            .with_context(|| format!("cannot decrypt blob {key}"))
    }

    /// Encrypts every file stored before files were encrypted (the start-up data migration
    /// `seal_personal_data_v2`); returns how many. A file is rewritten under a temporary
    /// name and renamed, as a new one is, so it can be run again after a crash.
    pub async fn seal_existing(&self) -> anyhow::Result<usize> {
        let root = self.root.clone();
        let cipher = self.cipher.clone();
        tokio::task::spawn_blocking(move || seal_existing_blocking(&root, &cipher))
            .await
            .context("blob store task")?
    }

    fn path_of(&self, key: &str) -> anyhow::Result<PathBuf> {
        let parts: Vec<&str> = key.split('/').collect();
        anyhow::ensure!(
            parts.len() == 3 && parts.iter().all(|p| safe_segment(p)),
            "malformed blob key"
        );
        Ok(self.root.join(parts[0]).join(parts[1]).join(parts[2]))
    }
}

/// Ids and hex digests only: nothing that could climb out of the root.
fn safe_segment(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn put_blocking(root: &Path, cipher: &Cipher, org: &str, bytes: &[u8]) -> anyhow::Result<Stored> {
    let sha256 = hex::encode(Sha256::digest(bytes));
    let key = format!("{org}/{}/{sha256}", &sha256[..2]);
    let dir = root.join(org).join(&sha256[..2]);
    let path = dir.join(&sha256);
    let stored = Stored {
        key,
        sha256: sha256.clone(),
        size: bytes.len() as u64,
    };
    // Only complete files ever carry a final name, so a present one holds these bytes.
    if std::fs::metadata(&path)
        .is_ok_and(|m| m.is_file() && m.len() == stored.size + SEALED_OVERHEAD)
    {
        return Ok(stored);
    }
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("cannot create blob folder {}", dir.display()))?;
    write_atomically(&dir, &sha256, &cipher.encrypt_bytes(BLOB_FILE, bytes))?;
    Ok(stored)
}

/// Writes `<dir>/<name>` through a temporary file, fsynced, renamed, folder synced.
fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> anyhow::Result<()> {
    let mut suffix = [0u8; 8];
    rand::rngs::OsRng.fill_bytes(&mut suffix);
    let tmp = dir.join(format!(".{name}.{}.tmp", hex::encode(suffix)));
    let written = (|| -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, dir.join(name))?;
        // The rename itself is durable only once the folder is synced.
        std::fs::File::open(dir)?.sync_all()
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("cannot write blob into {}", dir.display()));
    }
    Ok(())
}

/// Every `<root>/<org>/<aa>/<sha256>` file that is not sealed yet gets sealed; files left
/// behind by refused uploads (no row names them) included.
fn seal_existing_blocking(root: &Path, cipher: &Cipher) -> anyhow::Result<usize> {
    let mut sealed = 0;
    let folders = |dir: &Path| -> anyhow::Result<Vec<PathBuf>> {
        match std::fs::read_dir(dir) {
            Ok(entries) => entries
                .map(|e| Ok(e?.path()))
                .collect::<std::io::Result<Vec<_>>>()
                .with_context(|| format!("cannot list {}", dir.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(e).with_context(|| format!("cannot list {}", dir.display())),
        }
    };
    for org in folders(root)?.into_iter().filter(|p| p.is_dir()) {
        for prefix in folders(&org)?.into_iter().filter(|p| p.is_dir()) {
            for file in folders(&prefix)? {
                let Some(name) = file.file_name().and_then(|n| n.to_str()) else {
                    continue;
                };
                // Temporary files of an interrupted write are not blobs.
                if name.starts_with('.') || !file.is_file() {
                    continue;
                }
                let bytes = std::fs::read(&file)
                    .with_context(|| format!("cannot read {}", file.display()))?;
                // Only a file that is not in the sealed format at all is plaintext: one
                // sealed under a key no longer configured stays as it is.
                if let Err(CryptoError::Malformed(_)) = cipher.decrypt_bytes(BLOB_FILE, &bytes) {
                    write_atomically(&prefix, name, &cipher.encrypt_bytes(BLOB_FILE, &bytes))?;
                    sealed += 1;
                }
            }
        }
    }
    Ok(sealed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(dir: &Path) -> BlobStore {
        BlobStore {
            root: dir.to_path_buf(),
            cipher: Cipher::new(crate::security::DataKey::generate(), Vec::new()),
        }
    }

    fn contains(haystack: &[u8], needle: &[u8]) -> bool {
        haystack.windows(needle.len()).any(|w| w == needle)
    }

    #[tokio::test]
    async fn files_are_content_addressed_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        let a = s
            .put("org-1", Bytes::from_static(b"proposal v1"))
            .await
            .unwrap();
        assert_eq!(a.sha256, hex::encode(Sha256::digest(b"proposal v1")));
        assert_eq!(a.key, format!("org-1/{}/{}", &a.sha256[..2], a.sha256));
        assert_eq!(a.size, 11);
        assert_eq!(s.get(&a.key).await.unwrap(), b"proposal v1");
        let again = s
            .put("org-1", Bytes::from_static(b"proposal v1"))
            .await
            .unwrap();
        assert_eq!(again, a);
        let folder = dir.path().join("org-1").join(&a.sha256[..2]);
        let names: Vec<_> = std::fs::read_dir(&folder)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from(&a.sha256)]);
        let on_disk = std::fs::read(folder.join(&a.sha256)).unwrap();
        assert!(!contains(&on_disk, b"proposal"), "stored encrypted");
    }

    #[tokio::test]
    async fn files_stored_in_the_clear_are_sealed_once() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        let folder = dir.path().join("org-1").join("ab");
        std::fs::create_dir_all(&folder).unwrap();
        std::fs::write(folder.join("ab01"), b"old proof 13800138000").unwrap();
        std::fs::write(folder.join(".ab01.1234.tmp"), b"half").unwrap();
        let new = s
            .put("org-1", Bytes::from_static(b"new proof"))
            .await
            .unwrap();

        assert_eq!(s.seal_existing().await.unwrap(), 1);
        assert_eq!(s.seal_existing().await.unwrap(), 0, "sealed once");
        let on_disk = std::fs::read(folder.join("ab01")).unwrap();
        assert!(!contains(&on_disk, b"13800138000"));
        assert_eq!(
            s.get("org-1/ab/ab01").await.unwrap(),
            b"old proof 13800138000"
        );
        assert_eq!(s.get(&new.key).await.unwrap(), b"new proof");
    }

    #[tokio::test]
    async fn keys_cannot_leave_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        assert!(s.get("../etc/passwd").await.is_err());
        assert!(s.get("org/../../x").await.is_err());
        assert!(s.put("../org", Bytes::from_static(b"x")).await.is_err());
    }
}
