//! The blob store for files (proposals, proofs, handoff artefacts): a local folder by
//! default.
//!
//! Files are content addressed within an organisation: `<root>/<org>/<aa>/<sha256>`, where
//! `aa` is the first two hex digits of the hash. A file is written under a temporary name
//! in its final folder, fsynced, then renamed, so a crash never leaves a partial file
//! under a final name; storing the same bytes twice keeps one file.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use axum::body::Bytes;
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::config::StorageConfig;

/// Where files live. Cheap to clone.
#[derive(Debug, Clone)]
pub struct BlobStore {
    root: PathBuf,
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
    pub fn from_config(c: &StorageConfig) -> anyhow::Result<BlobStore> {
        anyhow::ensure!(
            c.kind == "local",
            "storage.kind `{}` is not supported; use \"local\"",
            c.kind
        );
        Ok(BlobStore {
            root: c.path.clone(),
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
        // Hashing and fsync block; keep them off the async workers.
        tokio::task::spawn_blocking(move || put_blocking(&root, &org, &bytes))
            .await
            .context("blob store task")?
    }

    /// The bytes stored under `key`.
    pub async fn get(&self, key: &str) -> anyhow::Result<Vec<u8>> {
        let path = self.path_of(key)?;
        tokio::fs::read(&path)
            .await
            .with_context(|| format!("cannot read blob {key}"))
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

fn put_blocking(root: &Path, org: &str, bytes: &[u8]) -> anyhow::Result<Stored> {
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
    if std::fs::metadata(&path).is_ok_and(|m| m.is_file() && m.len() == stored.size) {
        return Ok(stored);
    }
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("cannot create blob folder {}", dir.display()))?;
    let mut suffix = [0u8; 8];
    rand::rngs::OsRng.fill_bytes(&mut suffix);
    let tmp = dir.join(format!(".{sha256}.{}.tmp", hex::encode(suffix)));
    let written = (|| -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        // The rename itself is durable only once the folder is synced.
        std::fs::File::open(&dir)?.sync_all()
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("cannot write blob into {}", dir.display()));
    }
    Ok(stored)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(dir: &Path) -> BlobStore {
        BlobStore {
            root: dir.to_path_buf(),
        }
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
