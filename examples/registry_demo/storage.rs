//! Blobs on disk, content-addressed (`blobs/<algorithm>/<2 hex>/<hex>`, sha256 or sha512), and
//! upload sessions (`uploads/<uuid>`), both streamed: nothing here holds a blob in memory.
//!
//! - A download is a [`BlobBody`]: the file (or a byte range of it) read in
//!   [`READ_CHUNK`]-byte frames as the server asks for them, so a client that stops reading
//!   stops the reads, and a client that goes away drops the body (counted `499`).
//! - An upload session is a file in `uploads/` and, in memory, the hash state of the bytes
//!   written so far ([`Session`]): each chunk is hashed as it is written, so the final digest
//!   check does not read the file again. The state is of the algorithm the session was started
//!   with (sha256 unless the client said `digest-algorithm=sha512`); a session closed with a
//!   digest of the other algorithm is hashed again from its file, once. A session is locked
//!   while a request writes to it; a request that fails mid-body (the client went away) is
//!   rolled back to where it started, so the session stays consistent and can be resumed.
//!   After a restart the in-memory state is gone: it is rebuilt by reading the session's file
//!   once, on first use.
//! - A blob only appears under its digest once its content was verified: it is written in
//!   `uploads/` and renamed into place, which is atomic on one file system.
//! - A blob's arrival (moved into place, then its database row written) and its removal (row
//!   deleted, then the file) hold the digest's [`BlobLock`], so a blob deleted while the same
//!   content is pushed again never ends as a row without its file.

use std::{
    collections::HashMap,
    io,
    path::{Path, PathBuf},
    pin::Pin,
    sync::{Arc, Mutex, PoisonError},
    task::{Context, Poll},
};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncSeekExt, AsyncWriteExt, BufWriter, ReadBuf},
    sync::OwnedMutexGuard,
};

use crate::digest::{Algorithm, Digest, Hasher};

/// The size of the frames a download is read in.
pub(crate) const READ_CHUNK: usize = 256 << 10;
/// The write buffer of an upload (chunks from the client are smaller).
const WRITE_BUFFER: usize = 256 << 10;
/// The number of [`BlobLock`]s, shared by digests with the same first hex digits.
const BLOB_LOCKS: usize = 64;

/// Why an upload could not be completed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UploadError {
    #[error("upload unknown")]
    Unknown,
    #[error("digest mismatch: content is {actual}")]
    DigestMismatch { actual: Digest },
    /// A chunk that does not start where the upload ends (`len` bytes received).
    #[error("the chunk does not start at {len}, where the upload ends")]
    RangeInvalid { len: u64 },
    /// The request body failed mid-stream (the client went away); the chunk was rolled back.
    #[error("request body interrupted: {0}")]
    Body(String),
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// What an upload session has received: its length and the hash state of those bytes.
#[derive(Debug, Clone)]
struct Session {
    hasher: Hasher,
    len: u64,
}

impl Session {
    fn new(algorithm: Algorithm) -> Self {
        Self {
            hasher: algorithm.hasher(),
            len: 0,
        }
    }
}

/// A session's state, `None` until rebuilt from its file (after a restart, or after a request
/// that wrote to it was dropped mid-way).
type SessionSlot = Arc<tokio::sync::Mutex<Option<Session>>>;

/// The lock of a digest while its blob is stored or removed, file and database row together
/// ([`Storage::lock_blob`]).
#[derive(Debug)]
pub(crate) struct BlobLock {
    _guard: OwnedMutexGuard<()>,
}

/// A blob just moved into place, its digest still locked: record its row, then drop this.
#[derive(Debug)]
pub(crate) struct Stored {
    pub(crate) size: u64,
    _lock: BlobLock,
}

/// The blob store.
#[derive(Debug, Clone)]
pub(crate) struct Storage {
    root: PathBuf,
    sessions: Arc<Mutex<HashMap<String, SessionSlot>>>,
    blob_locks: Arc<[Arc<tokio::sync::Mutex<()>>]>,
}

impl Storage {
    /// Whether the blob directory is there (`harbor_up{component="registry"}`).
    pub(crate) async fn is_available(&self) -> bool {
        tokio::fs::metadata(self.root.join("blobs/sha256"))
            .await
            .is_ok_and(|m| m.is_dir())
    }

    /// Opens (creating) the store under `root`.
    pub(crate) async fn open(root: &Path) -> io::Result<Self> {
        for algorithm in [Algorithm::Sha256, Algorithm::Sha512] {
            tokio::fs::create_dir_all(root.join("blobs").join(algorithm.as_str())).await?;
        }
        tokio::fs::create_dir_all(root.join("uploads")).await?;
        Ok(Self {
            root: root.to_owned(),
            sessions: Arc::default(),
            blob_locks: (0..BLOB_LOCKS).map(|_| Arc::default()).collect(),
        })
    }

    /// Locks `digest` (waiting while its blob is stored or removed): hold it from a removal's
    /// database delete to its file's removal. [`Upload::finish`] takes it for a blob's arrival.
    pub(crate) async fn lock_blob(&self, digest: &Digest) -> BlobLock {
        // The digest is validated hex: its first two digits pick the lock.
        let stripe = usize::from_str_radix(&digest.hex()[..2], 16).unwrap_or(0) % BLOB_LOCKS;
        BlobLock {
            _guard: self.blob_locks[stripe].clone().lock_owned().await,
        }
    }

    fn blob_path(&self, digest: &Digest) -> PathBuf {
        let hex = digest.hex();
        let algorithm = digest.algorithm().as_str();
        self.root
            .join("blobs")
            .join(algorithm)
            .join(&hex[..2])
            .join(hex)
    }

    /// The session's canonical uuid and file; `None` for anything but one of our uuids (never
    /// a path a client could steer).
    fn upload_path(&self, uuid: &str) -> Option<(String, PathBuf)> {
        let uuid = uuid::Uuid::parse_str(uuid).ok()?.hyphenated().to_string();
        let path = self.root.join("uploads").join(&uuid);
        Some((uuid, path))
    }

    fn slot(&self, uuid: &str) -> SessionSlot {
        let mut sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        sessions.entry(uuid.to_owned()).or_default().clone()
    }

    fn forget(&self, uuid: &str) {
        let mut sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        sessions.remove(uuid);
    }

    /// The blob, or its inclusive byte range `first..=last`, as a streamed body; `None` if it
    /// is not stored.
    pub(crate) async fn open_blob(
        &self,
        digest: &Digest,
        range: Option<(u64, u64)>,
    ) -> io::Result<Option<BlobBody>> {
        let mut file = match tokio::fs::File::open(self.blob_path(digest)).await {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let size = file.metadata().await?.len();
        let (first, remaining) = match range {
            Some((first, last)) => (first, last.saturating_sub(first) + 1),
            None => (0, size),
        };
        if first > 0 {
            file.seek(io::SeekFrom::Start(first)).await?;
        }
        Ok(Some(BlobBody {
            file,
            remaining,
            buf: Vec::new(),
        }))
    }

    /// Deletes a blob; `false` if it was not there.
    pub(crate) async fn delete(&self, digest: &Digest) -> io::Result<bool> {
        match tokio::fs::remove_file(self.blob_path(digest)).await {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Starts an upload session hashed with `algorithm` as it goes; returns its uuid.
    pub(crate) async fn start_upload(&self, algorithm: Algorithm) -> io::Result<String> {
        let uuid = uuid::Uuid::new_v4().hyphenated().to_string();
        tokio::fs::write(self.root.join("uploads").join(&uuid), b"").await?;
        *self.slot(&uuid).lock().await = Some(Session::new(algorithm));
        Ok(uuid)
    }

    /// The bytes received so far by an upload, `None` if it does not exist.
    pub(crate) async fn upload_len(&self, uuid: &str) -> io::Result<Option<u64>> {
        let Some((_, path)) = self.upload_path(uuid) else {
            return Ok(None);
        };
        match tokio::fs::metadata(path).await {
            Ok(meta) => Ok(Some(meta.len())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Takes the upload session `uuid` for writing (waiting while another request writes to
    /// it).
    pub(crate) async fn upload(&self, uuid: &str) -> Result<Upload, UploadError> {
        let (uuid, path) = self.upload_path(uuid).ok_or(UploadError::Unknown)?;
        let mut session = self.slot(&uuid).lock_owned().await;
        let file = match tokio::fs::OpenOptions::new().append(true).open(&path).await {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.forget(&uuid);
                return Err(UploadError::Unknown);
            }
            Err(e) => return Err(e.into()),
        };
        if session.is_none() {
            // The algorithm it was started with is not kept: the canonical one, and `finish`
            // hashes again if the digest is of the other.
            *session = Some(rehash(&path, Algorithm::Sha256).await?);
        }
        let mark = session
            .clone()
            .unwrap_or_else(|| Session::new(Algorithm::Sha256));
        Ok(Upload {
            storage: self.clone(),
            uuid,
            path,
            file: BufWriter::with_capacity(WRITE_BUFFER, file),
            session,
            mark,
            ended: false,
        })
    }

    /// Stores a whole blob from `body` (a monolithic upload), verified against `expected`
    /// (see [`Upload::finish`]).
    pub(crate) async fn put_body<B>(
        &self,
        body: B,
        expected: &Digest,
    ) -> Result<Stored, UploadError>
    where
        B: http_body::Body<Data = Bytes> + Unpin,
        B::Error: std::fmt::Display,
    {
        let uuid = self.start_upload(expected.algorithm()).await?;
        let mut upload = self.upload(&uuid).await?;
        if let Err(err) = upload.write_body(body).await {
            upload.discard().await;
            return Err(err);
        }
        upload.finish(expected).await
    }

    /// Discards an upload session (waiting while a request writes to it).
    pub(crate) async fn cancel_upload(&self, uuid: &str) -> io::Result<bool> {
        let Some((uuid, path)) = self.upload_path(uuid) else {
            return Ok(false);
        };
        let _writing = self.slot(&uuid).lock_owned().await;
        self.forget(&uuid);
        match tokio::fs::remove_file(path).await {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// The session state of an upload file with `algorithm`, by reading it once.
async fn rehash(path: &Path, algorithm: Algorithm) -> io::Result<Session> {
    let mut file = tokio::fs::File::open(path).await?;
    let mut hasher = algorithm.hasher();
    let mut len = 0;
    let mut buf = vec![0; READ_CHUNK];
    loop {
        let n = file.read(&mut buf).await?;
        if n == 0 {
            return Ok(Session { hasher, len });
        }
        hasher.update(&buf[..n]);
        len += n as u64;
    }
}

/// An upload session taken for writing by one request: bytes written are hashed as they go.
///
/// End it with [`commit`](Self::commit) (the chunk is kept), [`rollback`](Self::rollback) (the
/// session is as it was when taken), [`finish`](Self::finish) (verified and moved into place)
/// or [`discard`](Self::discard). Dropped without an end (the request was dropped mid-write),
/// the session's state is forgotten and rebuilt from its file on next use.
#[derive(Debug)]
pub(crate) struct Upload {
    storage: Storage,
    uuid: String,
    path: PathBuf,
    file: BufWriter<tokio::fs::File>,
    session: OwnedMutexGuard<Option<Session>>,
    /// The state when taken, for a rollback.
    mark: Session,
    ended: bool,
}

impl Upload {
    /// The bytes the session holds, this request's included.
    pub(crate) fn len(&self) -> u64 {
        self.session.as_ref().map_or(0, |s| s.len)
    }

    /// Appends `chunk`.
    pub(crate) async fn write(&mut self, chunk: &[u8]) -> io::Result<()> {
        self.file.write_all(chunk).await?;
        if let Some(session) = self.session.as_mut() {
            session.hasher.update(chunk);
            session.len += chunk.len() as u64;
        }
        Ok(())
    }

    /// Appends a request body as it arrives. On a failure of the body or of the disk, the
    /// session is rolled back to where this request found it.
    pub(crate) async fn write_body<B>(&mut self, mut body: B) -> Result<(), UploadError>
    where
        B: http_body::Body<Data = Bytes> + Unpin,
        B::Error: std::fmt::Display,
    {
        use http_body_util::BodyExt as _;
        let failed = loop {
            match body.frame().await {
                None => break None,
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        if let Err(e) = self.write(&data).await {
                            break Some(UploadError::Io(e));
                        }
                    }
                }
                Some(Err(e)) => break Some(UploadError::Body(e.to_string())),
            }
        };
        match failed {
            None => Ok(()),
            Some(err) => {
                self.rewind().await?;
                Err(err)
            }
        }
    }

    /// Back to the state when taken, on disk and in memory.
    async fn rewind(&mut self) -> io::Result<()> {
        let _ = self.file.flush().await;
        self.file.get_mut().set_len(self.mark.len).await?;
        *self.session = Some(self.mark.clone());
        Ok(())
    }

    /// Keeps what was written; returns the session's length.
    pub(crate) async fn commit(mut self) -> io::Result<u64> {
        self.file.flush().await?;
        self.ended = true;
        Ok(self.len())
    }

    /// Drops what this request wrote.
    pub(crate) async fn rollback(mut self) -> io::Result<()> {
        self.rewind().await?;
        self.ended = true;
        Ok(())
    }

    /// Checks the content against `expected` (from the hash state: the file is not read
    /// again, unless `expected` is of another algorithm than the session's) and moves it into
    /// place; on a mismatch the session is discarded. Returns the blob's size with its
    /// [`BlobLock`], to hold until its database row is written.
    pub(crate) async fn finish(mut self, expected: &Digest) -> Result<Stored, UploadError> {
        self.file.flush().await?;
        let mut session = self.session.clone().ok_or(UploadError::Unknown)?;
        if session.hasher.algorithm() != expected.algorithm() {
            session = rehash(&self.path, expected.algorithm()).await?;
        }
        let actual = session.hasher.finish();
        if &actual != expected {
            self.discard().await;
            return Err(UploadError::DigestMismatch { actual });
        }
        let target = self.storage.blob_path(expected);
        if let Some(dir) = target.parent() {
            tokio::fs::create_dir_all(dir).await?;
        }
        let lock = self.storage.lock_blob(expected).await;
        tokio::fs::rename(&self.path, &target).await?;
        self.storage.forget(&self.uuid);
        self.ended = true;
        Ok(Stored {
            size: session.len,
            _lock: lock,
        })
    }

    /// Removes the session and its file.
    pub(crate) async fn discard(mut self) {
        let _ = tokio::fs::remove_file(&self.path).await;
        self.storage.forget(&self.uuid);
        self.ended = true;
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        if !self.ended {
            // Unflushed bytes are lost and the hash state may be ahead of the file: rebuild it
            // from the file on next use.
            *self.session = None;
        }
    }
}

/// A stored blob (or a range of it) streamed in frames of at most [`READ_CHUNK`] bytes.
#[derive(Debug)]
pub(crate) struct BlobBody {
    file: tokio::fs::File,
    remaining: u64,
    /// The buffer of the read in progress.
    buf: Vec<u8>,
}

impl http_body::Body for BlobBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        if this.remaining == 0 {
            return Poll::Ready(None);
        }
        let want = this.remaining.min(READ_CHUNK as u64) as usize;
        if this.buf.len() != want {
            this.buf = vec![0; want];
        }
        let mut read = ReadBuf::new(&mut this.buf);
        match Pin::new(&mut this.file).poll_read(cx, &mut read) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(e)) => Poll::Ready(Some(Err(e))),
            Poll::Ready(Ok(())) => {
                let n = read.filled().len();
                if n == 0 {
                    return Poll::Ready(Some(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "blob file shorter than its size",
                    ))));
                }
                let mut data = std::mem::take(&mut this.buf);
                data.truncate(n);
                this.remaining -= n as u64;
                Poll::Ready(Some(Ok(Frame::data(Bytes::from(data)))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use http_body_util::{BodyExt as _, Full};

    async fn store() -> (Storage, PathBuf) {
        let dir = std::env::temp_dir().join(format!("registry_demo-test-{}", uuid::Uuid::new_v4()));
        (Storage::open(&dir).await.unwrap(), dir)
    }

    async fn read_all(body: BlobBody) -> Vec<u8> {
        body.collect().await.unwrap().to_bytes().to_vec()
    }

    #[tokio::test]
    async fn upload_with_wrong_digest_is_refused_and_discarded() {
        let (storage, dir) = store().await;
        let uuid = storage.start_upload(Algorithm::Sha256).await.unwrap();
        let mut upload = storage.upload(&uuid).await.unwrap();
        upload.write(b"hello ").await.unwrap();
        assert_eq!(upload.commit().await.unwrap(), 6);
        let mut upload = storage.upload(&uuid).await.unwrap();
        upload.write(b"world").await.unwrap();
        let wrong = Digest::of(b"something else");
        let err = upload.finish(&wrong).await.unwrap_err();
        assert!(matches!(err, UploadError::DigestMismatch { .. }));
        assert_eq!(storage.upload_len(&uuid).await.unwrap(), None);
        assert!(matches!(
            storage.upload(&uuid).await.unwrap_err(),
            UploadError::Unknown
        ));

        let right = Digest::of(b"hello world");
        let body = Full::new(Bytes::from_static(b"hello world"));
        assert_eq!(storage.put_body(body, &right).await.unwrap().size, 11);
        let blob = storage.open_blob(&right, None).await.unwrap().unwrap();
        assert_eq!(read_all(blob).await, b"hello world");
        let range = storage
            .open_blob(&right, Some((6, 9)))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(read_all(range).await, b"worl");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn a_session_is_closed_with_a_sha512_digest_whatever_it_was_hashed_with() {
        let (storage, dir) = store().await;
        let sha512 = Algorithm::Sha512.digest(b"hello world");
        for started in [Algorithm::Sha512, Algorithm::Sha256] {
            let uuid = storage.start_upload(started).await.unwrap();
            let mut upload = storage.upload(&uuid).await.unwrap();
            upload.write(b"hello ").await.unwrap();
            upload.commit().await.unwrap();
            let mut upload = storage.upload(&uuid).await.unwrap();
            upload.write(b"world").await.unwrap();
            let stored = upload.finish(&sha512).await.unwrap();
            assert_eq!(stored.size, 11, "{started:?}");
        }
        let blob = storage.open_blob(&sha512, None).await.unwrap().unwrap();
        assert_eq!(read_all(blob).await, b"hello world");
        let path = storage.blob_path(&sha512);
        assert!(
            path.starts_with(dir.join("blobs/sha512")),
            "{}",
            path.display()
        );
        // A sha256 session closed with the sha512 digest of other bytes is refused.
        let uuid = storage.start_upload(Algorithm::Sha256).await.unwrap();
        let mut upload = storage.upload(&uuid).await.unwrap();
        upload.write(b"other").await.unwrap();
        let err = upload.finish(&sha512).await.unwrap_err();
        let UploadError::DigestMismatch { actual } = &err else {
            panic!("{err}");
        };
        assert_eq!(actual.algorithm(), Algorithm::Sha512);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn a_body_failing_mid_stream_is_rolled_back() {
        let (storage, dir) = store().await;
        let uuid = storage.start_upload(Algorithm::Sha256).await.unwrap();
        let mut upload = storage.upload(&uuid).await.unwrap();
        upload.write(b"kept ").await.unwrap();
        upload.commit().await.unwrap();

        let frames: Vec<Result<Frame<Bytes>, io::Error>> = vec![
            Ok(Frame::data(Bytes::from_static(b"lost"))),
            Err(io::Error::other("client went away")),
        ];
        let failing = Frames(frames.into());
        let mut upload = storage.upload(&uuid).await.unwrap();
        let err = upload.write_body(failing).await.unwrap_err();
        assert!(matches!(err, UploadError::Body(_)), "{err}");
        assert_eq!(upload.len(), 5);
        upload.commit().await.unwrap();
        assert_eq!(storage.upload_len(&uuid).await.unwrap(), Some(5));

        let mut upload = storage.upload(&uuid).await.unwrap();
        upload.write(b"and this").await.unwrap();
        let stored = upload.finish(&Digest::of(b"kept and this")).await.unwrap();
        assert_eq!(stored.size, 13);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn a_session_dropped_mid_write_is_rebuilt_from_its_file() {
        let (storage, dir) = store().await;
        let uuid = storage.start_upload(Algorithm::Sha256).await.unwrap();
        let mut upload = storage.upload(&uuid).await.unwrap();
        upload.write(b"abc").await.unwrap();
        drop(upload); // never flushed: the bytes are not in the file
        let mut upload = storage.upload(&uuid).await.unwrap();
        assert_eq!(upload.len(), 0);
        upload.write(b"xyz").await.unwrap();
        upload.commit().await.unwrap();
        // A restart: a new store over the same directory knows no session state.
        let restarted = Storage::open(&dir).await.unwrap();
        let upload = restarted.upload(&uuid).await.unwrap();
        assert_eq!(upload.len(), 3);
        assert_eq!(upload.finish(&Digest::of(b"xyz")).await.unwrap().size, 3);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn a_truncated_blob_file_is_a_body_error_not_a_short_answer() {
        let (storage, dir) = store().await;
        let digest = Digest::of(b"0123456789");
        storage
            .put_body(Full::new(Bytes::from_static(b"0123456789")), &digest)
            .await
            .unwrap();
        let body = storage
            .open_blob(&digest, Some((0, 9)))
            .await
            .unwrap()
            .unwrap();
        std::fs::write(storage.blob_path(&digest), b"0123").unwrap();
        assert!(body.collect().await.is_err());
        let _ = std::fs::remove_dir_all(dir);
    }

    /// A body yielding `frames`, then its end.
    struct Frames(std::collections::VecDeque<Result<Frame<Bytes>, io::Error>>);

    impl http_body::Body for Frames {
        type Data = Bytes;
        type Error = io::Error;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
            Poll::Ready(self.0.pop_front())
        }
    }
}
