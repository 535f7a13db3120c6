//! Blobs on disk, content-addressed (`blobs/sha256/<2 hex>/<64 hex>`), and upload sessions
//! (`uploads/<uuid>`). A blob only appears under its digest once its content was verified:
//! it is written (or assembled) in `uploads/` and renamed into place, which is atomic on one
//! file system.

use std::{
    io,
    path::{Path, PathBuf},
};

use sha2::{Digest as _, Sha256};
use tokio::io::AsyncWriteExt;

/// A validated `sha256:<64 lowercase hex>` digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Digest(String);

impl Digest {
    /// Parses a digest; only sha256 is supported.
    pub(crate) fn parse(s: &str) -> Option<Self> {
        let hex = s.strip_prefix("sha256:")?;
        let valid = hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        valid.then(|| Self(s.to_owned()))
    }

    /// The digest of `data`.
    pub(crate) fn of(data: &[u8]) -> Self {
        Self(format!("sha256:{}", hex::encode(Sha256::digest(data))))
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }

    fn hex(&self) -> &str {
        &self.0["sha256:".len()..]
    }
}

impl std::fmt::Display for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why an upload could not be completed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UploadError {
    #[error("upload unknown")]
    Unknown,
    #[error("digest mismatch: content is {actual}")]
    DigestMismatch { actual: Digest },
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// The blob store.
#[derive(Debug, Clone)]
pub(crate) struct Storage {
    root: PathBuf,
}

impl Storage {
    /// Opens (creating) the store under `root`.
    pub(crate) async fn open(root: &Path) -> io::Result<Self> {
        tokio::fs::create_dir_all(root.join("blobs/sha256")).await?;
        tokio::fs::create_dir_all(root.join("uploads")).await?;
        Ok(Self {
            root: root.to_owned(),
        })
    }

    fn blob_path(&self, digest: &Digest) -> PathBuf {
        let hex = digest.hex();
        self.root.join("blobs/sha256").join(&hex[..2]).join(hex)
    }

    fn upload_path(&self, uuid: &str) -> Option<PathBuf> {
        // Only our own uuids: never a path a client could steer.
        uuid::Uuid::parse_str(uuid)
            .ok()
            .map(|u| self.root.join("uploads").join(u.hyphenated().to_string()))
    }

    /// The content of a blob, if stored.
    pub(crate) async fn read(&self, digest: &Digest) -> io::Result<Option<Vec<u8>>> {
        match tokio::fs::read(self.blob_path(digest)).await {
            Ok(data) => Ok(Some(data)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Deletes a blob; `false` if it was not there.
    pub(crate) async fn delete(&self, digest: &Digest) -> io::Result<bool> {
        match tokio::fs::remove_file(self.blob_path(digest)).await {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Starts an upload session; returns its uuid.
    pub(crate) async fn start_upload(&self) -> io::Result<String> {
        let uuid = uuid::Uuid::new_v4().hyphenated().to_string();
        tokio::fs::write(self.root.join("uploads").join(&uuid), b"").await?;
        Ok(uuid)
    }

    /// The bytes received so far by an upload, `None` if it does not exist.
    pub(crate) async fn upload_len(&self, uuid: &str) -> io::Result<Option<u64>> {
        let Some(path) = self.upload_path(uuid) else {
            return Ok(None);
        };
        match tokio::fs::metadata(path).await {
            Ok(meta) => Ok(Some(meta.len())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Appends a chunk to an upload; returns its new length.
    pub(crate) async fn append(&self, uuid: &str, chunk: &[u8]) -> Result<u64, UploadError> {
        let path = self.upload_path(uuid).ok_or(UploadError::Unknown)?;
        let mut file = match tokio::fs::OpenOptions::new().append(true).open(&path).await {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(UploadError::Unknown),
            Err(e) => return Err(e.into()),
        };
        file.write_all(chunk).await?;
        file.flush().await?;
        Ok(file.metadata().await?.len())
    }

    /// Appends the last chunk, verifies the whole content against `expected` and moves it to
    /// its place. On a mismatch the upload is discarded. Returns the blob's size.
    pub(crate) async fn finish_upload(
        &self,
        uuid: &str,
        last_chunk: &[u8],
        expected: &Digest,
    ) -> Result<u64, UploadError> {
        self.append(uuid, last_chunk).await?;
        let path = self.upload_path(uuid).ok_or(UploadError::Unknown)?;
        let data = tokio::fs::read(&path).await?;
        let actual = Digest::of(&data);
        if &actual != expected {
            let _ = tokio::fs::remove_file(&path).await;
            return Err(UploadError::DigestMismatch { actual });
        }
        let target = self.blob_path(expected);
        if let Some(dir) = target.parent() {
            tokio::fs::create_dir_all(dir).await?;
        }
        tokio::fs::rename(&path, &target).await?;
        Ok(data.len() as u64)
    }

    /// Stores a whole blob at once (monolithic upload), verified against `expected`.
    pub(crate) async fn put(&self, data: &[u8], expected: &Digest) -> Result<u64, UploadError> {
        let uuid = self.start_upload().await?;
        self.finish_upload(&uuid, data, expected).await
    }

    /// Discards an upload session.
    pub(crate) async fn cancel_upload(&self, uuid: &str) -> io::Result<bool> {
        let Some(path) = self.upload_path(uuid) else {
            return Ok(false);
        };
        match tokio::fs::remove_file(path).await {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_of_empty_content_is_the_well_known_one() {
        assert_eq!(
            Digest::of(b"").as_str(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn digest_parse_rejects_other_algorithms_and_bad_hex() {
        let hex = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        assert!(Digest::parse(&format!("sha256:{hex}")).is_some());
        assert!(Digest::parse(&format!("sha512:{hex}")).is_none());
        assert!(Digest::parse(&format!("sha256:{}", hex.to_uppercase())).is_none());
        assert!(Digest::parse("sha256:../../etc/passwd").is_none());
    }

    #[tokio::test]
    async fn upload_with_wrong_digest_is_refused_and_discarded() {
        let dir = std::env::temp_dir().join(format!("registry_demo-test-{}", uuid::Uuid::new_v4()));
        let storage = Storage::open(&dir).await.unwrap();
        let uuid = storage.start_upload().await.unwrap();
        storage.append(&uuid, b"hello ").await.unwrap();
        let wrong = Digest::of(b"something else");
        let err = storage
            .finish_upload(&uuid, b"world", &wrong)
            .await
            .unwrap_err();
        assert!(matches!(err, UploadError::DigestMismatch { .. }));
        assert_eq!(storage.upload_len(&uuid).await.unwrap(), None);

        let right = Digest::of(b"hello world");
        assert_eq!(storage.put(b"hello world", &right).await.unwrap(), 11);
        assert_eq!(
            storage.read(&right).await.unwrap().as_deref(),
            Some(&b"hello world"[..])
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}
