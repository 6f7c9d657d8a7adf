//! The NAR of a narinfo as a verifying stream: [`NarReader`].
//!
//! A reader of a cache trusts nothing about a NAR object until it has checked it against the
//! narinfo that names it, and never lets an object use more disk or memory than that narinfo
//! declares:
//!
//! - before anything is read, the narinfo's hashes must be checkable: `NarHash` must be sha256
//!   (what Nix computes, signs and checks when it imports a path; anything else is
//!   [`IntegrityError::UnsupportedHash`]), `FileHash` is checked with its own algorithm (md5,
//!   sha1, sha256 or sha512), and `Compression` must be one cachecore decodes;
//! - the compressed object is cut off as soon as more than `FileSize` bytes arrive (or, without
//!   a `FileSize`, more than a NAR of `NarSize` bytes can compress to), and the decompressed
//!   NAR as soon as more than `NarSize` bytes come out ([`IntegrityError::Exceeds`]) — so a
//!   decompression bomb costs at most the declared sizes, whatever it expands to;
//! - at the end, `FileSize`, `FileHash`, `NarSize` and `NarHash` must all match
//!   ([`IntegrityError::Mismatch`]); until then the reader's end is not reported, so a consumer
//!   that reads to the end has read checked bytes only if [`NarReader::finish`] says so.
//!
//! Bytes handed out *before* the end are not yet checked against the hashes: a caller that must
//! not act on unchecked bytes (print them, move a tree into place) keeps its result aside until
//! [`NarReader::finish`] returns `Ok`.

use std::io::{self, Read};
use std::sync::{Arc, Mutex};

use crate::compression::{self, decompress, Compression};
use crate::hash::{Hash, HashAlgo, Hasher};
use crate::narinfo::NarInfo;

use super::{BinaryCache, StoreError};

/// A NAR object does not match its narinfo, or cannot be checked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IntegrityError {
    /// The narinfo names a NAR object the cache does not have.
    #[error("{path}: its NAR {key} is missing from {url}")]
    NarMissing {
        path: String,
        key: String,
        url: String,
    },
    /// A hash or size of the data differs from what the narinfo says.
    #[error("{path}: its NAR {key} is corrupt: {field} mismatch: the narinfo says {expected}, the data gives {actual}")]
    Mismatch {
        path: String,
        /// The NAR object's key.
        key: String,
        field: &'static str,
        expected: String,
        actual: String,
    },
    /// More bytes arrived than the narinfo declares; reading stopped there.
    #[error("{path}: {key} holds more than the {limit} bytes {declared}; reading stopped there")]
    Exceeds {
        path: String,
        key: String,
        /// What set the limit, e.g. "its narinfo's FileSize declares".
        declared: &'static str,
        limit: u64,
    },
    /// A hash in an algorithm the NAR cannot be checked with.
    #[error("{path}: its narinfo's {field} is a {algo} hash; Nix and cachecore check a NAR only against a sha256 NarHash, so this one cannot be verified")]
    UnsupportedHash {
        path: String,
        field: &'static str,
        algo: HashAlgo,
    },
    /// The narinfo's `Compression` is not one cachecore decodes.
    #[error("{path}: {source}")]
    Compression {
        path: String,
        source: compression::Error,
    },
    /// The object could not be read or decompressed (transport failure, corrupt compression).
    #[error("{path}: cannot read its NAR {key}: {source}")]
    Read {
        path: String,
        key: String,
        source: io::Error,
    },
    /// The store failed before the object could be streamed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl IntegrityError {
    /// What kind of failure this is: the cache's data is bad ([`Corrupt`]), except when the
    /// store could not be read ([`StoreError::kind`]) or the narinfo asks for what cachecore
    /// does not do ([`Unsupported`]).
    ///
    /// [`Corrupt`]: crate::error::ErrorKind::Corrupt
    /// [`Unsupported`]: crate::error::ErrorKind::Unsupported
    pub fn kind(&self) -> crate::error::ErrorKind {
        use crate::error::ErrorKind as K;
        match self {
            // The key came from the narinfo's URL: a key no store accepts is the cache's fault.
            IntegrityError::Store(StoreError::BadKey { .. }) => K::Corrupt,
            IntegrityError::Store(e) => e.kind(),
            IntegrityError::Read { source, .. } => {
                match source
                    .get_ref()
                    .and_then(|i| i.downcast_ref::<StoreError>())
                {
                    Some(inner) => inner.kind(),
                    None => K::Corrupt,
                }
            }
            IntegrityError::UnsupportedHash { .. } | IntegrityError::Compression { .. } => {
                K::Corrupt
            }
            IntegrityError::NarMissing { .. }
            | IntegrityError::Mismatch { .. }
            | IntegrityError::Exceeds { .. } => K::Corrupt,
        }
    }

    fn mismatch(
        path: &str,
        key: &str,
        field: &'static str,
        expected: String,
        actual: String,
    ) -> Self {
        IntegrityError::Mismatch {
            path: path.to_owned(),
            key: key.to_owned(),
            field,
            expected,
            actual,
        }
    }
}

/// The most a NAR of `nar_size` bytes may take compressed when the narinfo gives no `FileSize`:
/// every codec cachecore reads stores incompressible data with less than 1/16 of overhead (zstd
/// and xz under 1%, bzip2 about 1%), plus 1 MiB for headers of small objects.
///
/// ```
/// use cachecore::{compression::Compression, store::nar::max_file_size};
/// assert_eq!(max_file_size(1600, Compression::None), 1600);
/// assert_eq!(max_file_size(1600, Compression::Zstd), 1600 + 100 + (1 << 20));
/// ```
pub fn max_file_size(nar_size: u64, method: Compression) -> u64 {
    match method {
        Compression::None => nar_size,
        _ => nar_size
            .saturating_add(nar_size / 16)
            .saturating_add(1 << 20),
    }
}

/// The one check of a narinfo's hash algorithms, shared by every reader of NARs (pull, cat,
/// ls, verify, copy): `NarHash` must be sha256; `FileHash` may be any algorithm Nix names (it is
/// checked with its own).
///
/// ```
/// use cachecore::hash::{Hash, HashAlgo};
/// use cachecore::{narinfo::NarInfo, store::nar::check_algorithms};
/// use cachecore::store_path::{StoreDir, StorePath};
/// let path = StorePath::from_base_name("7h7qgvs4kgzsn8a6rb273saxyqh4jxlz-hello").unwrap();
/// let mut info = NarInfo::new(StoreDir::default(), path, "nar/x.nar".into(),
///     Hash::digest(HashAlgo::Sha256, b"nar"), 3);
/// info.file_hash = Some(Hash::digest(HashAlgo::Sha512, b"object")); // any algorithm Nix names
/// assert!(check_algorithms(&info).is_ok());
/// info.nar_hash = Hash::digest(HashAlgo::Sha1, b"nar");
/// assert!(check_algorithms(&info).is_err());
/// ```
pub fn check_algorithms(info: &NarInfo) -> Result<(), IntegrityError> {
    if info.nar_hash.algo() != HashAlgo::Sha256 {
        return Err(IntegrityError::UnsupportedHash {
            path: info.store_dir.full_path(&info.store_path),
            field: "NarHash",
            algo: info.nar_hash.algo(),
        });
    }
    Ok(())
}

/// The first failure, shared by the compressed side (inside the decoder) and the NAR side.
type Verdict = Arc<Mutex<Option<IntegrityError>>>;

fn record(verdict: &Verdict, e: IntegrityError) -> io::Error {
    let text = e.to_string();
    let mut slot = verdict.lock().unwrap_or_else(|p| p.into_inner());
    if slot.is_none() {
        *slot = Some(e);
    }
    io::Error::new(io::ErrorKind::InvalidData, text)
}

/// The compressed object, counted, hashed and cut off at its limit; at its end its size and
/// hash are checked, and a mismatch is reported in place of the end.
struct FileSide<R> {
    inner: R,
    hasher: Option<Hasher>,
    read: u64,
    limit: u64,
    declared: &'static str,
    expected_size: Option<u64>,
    expected_hash: Option<Hash>,
    /// Also hashed with sha256 when the `FileHash` is in another algorithm (or absent), for
    /// callers that name the object by its sha256 ([`NarReader::file_sha256`]).
    sha256: Option<Hasher>,
    done: Arc<Mutex<Option<(u64, Hash)>>>,
    path: String,
    key: String,
    verdict: Verdict,
}

impl<R: Read> Read for FileSide<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(hasher) = self.hasher.as_mut() else {
            return Ok(0);
        };
        // The original error is kept (a store error under it says why the read failed).
        let n = self.inner.read(buf).map_err(|source| {
            record(
                &self.verdict,
                IntegrityError::Read {
                    path: self.path.clone(),
                    key: self.key.clone(),
                    source,
                },
            )
        })?;
        if self.read.saturating_add(n as u64) > self.limit {
            return Err(record(
                &self.verdict,
                IntegrityError::Exceeds {
                    path: self.path.clone(),
                    key: self.key.clone(),
                    declared: self.declared,
                    limit: self.limit,
                },
            ));
        }
        if n > 0 {
            hasher.update(&buf[..n]);
            if let Some(h) = self.sha256.as_mut() {
                h.update(&buf[..n]);
            }
            self.read += n as u64;
            return Ok(n);
        }
        // The end: check it before reporting it.
        let actual = self.hasher.take().map(Hasher::finish);
        let mismatch = |field, expected: String, actual: String| {
            IntegrityError::mismatch(&self.path, &self.key, field, expected, actual)
        };
        if let Some(size) = self.expected_size {
            if size != self.read {
                return Err(record(
                    &self.verdict,
                    mismatch("FileSize", size.to_string(), self.read.to_string()),
                ));
            }
        }
        if let (Some(expected), Some(actual)) = (&self.expected_hash, &actual) {
            if expected != actual {
                return Err(record(
                    &self.verdict,
                    mismatch("FileHash", expected.to_string(), actual.to_string()),
                ));
            }
        }
        let sha256 = match (self.sha256.take(), actual) {
            (Some(h), _) => Some(h.finish()),
            (None, actual) => actual,
        };
        if let Some(sha256) = sha256 {
            *self.done.lock().unwrap_or_else(|p| p.into_inner()) = Some((self.read, sha256));
        }
        Ok(0)
    }
}

/// The NAR of one narinfo, decompressed, counted and hashed as it is read; see the
/// [module docs](self). A blocking [`Read`]: use it on a blocking thread
/// (`tokio::task::spawn_blocking`); the object is fetched by a task on the runtime, a bounded
/// number of chunks ahead.
///
/// Reading to the end returns `Ok(0)` only when every check passed; any failure is an
/// `io::Error` whose typed cause [`NarReader::finish`] returns.
pub struct NarReader {
    decoder: Box<dyn Read + Send>,
    hasher: Option<Hasher>,
    read: u64,
    nar_size: u64,
    nar_hash: Hash,
    path: String,
    key: String,
    file: Arc<Mutex<Option<(u64, Hash)>>>,
    verdict: Verdict,
    /// Set once the end was reached and checked.
    checked: bool,
}

impl std::fmt::Debug for NarReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NarReader")
            .field("path", &self.path)
            .field("key", &self.key)
            .field("read", &self.read)
            .finish_non_exhaustive()
    }
}

impl NarReader {
    /// Checks `object` (the NAR object of `info`, as stored: compressed as `info` says) as it
    /// is read. Fails at once when the narinfo's hashes or compression cannot be checked.
    ///
    /// ```
    /// use cachecore::hash::{Hash, HashAlgo};
    /// use cachecore::{nar, narinfo::NarInfo, store::NarReader};
    /// use cachecore::store_path::{StoreDir, StorePath};
    /// # let dir = tempfile::tempdir().unwrap();
    /// # std::fs::write(dir.path().join("hello"), "hi\n").unwrap();
    /// let mut bytes = Vec::new();
    /// nar::pack(&dir.path().join("hello"), &mut bytes).unwrap();
    /// let path = StorePath::from_base_name("7h7qgvs4kgzsn8a6rb273saxyqh4jxlz-hello").unwrap();
    /// let mut info = NarInfo::new(StoreDir::default(), path, "nar/hello.nar".into(),
    ///     Hash::digest(HashAlgo::Sha256, &bytes), bytes.len() as u64);
    /// info.compression = Some("none".into());
    /// let reader = NarReader::new(&info, std::io::Cursor::new(bytes.clone())).unwrap();
    /// assert!(reader.finish().is_ok());
    /// bytes[40] ^= 1; // one bit of damage
    /// let reader = NarReader::new(&info, std::io::Cursor::new(bytes)).unwrap();
    /// assert!(reader.finish().is_err());
    /// ```
    pub fn new(info: &NarInfo, object: impl Read + Send + 'static) -> Result<Self, IntegrityError> {
        let path = info.store_dir.full_path(&info.store_path);
        check_algorithms(info)?;
        let method = Compression::from_name(info.compression_or_default()).map_err(|source| {
            IntegrityError::Compression {
                path: path.clone(),
                source,
            }
        })?;
        let (limit, declared) = match info.file_size {
            Some(size) => (size, "its narinfo's FileSize declares"),
            None => (
                max_file_size(info.nar_size, method),
                "a NAR of its narinfo's NarSize can take compressed",
            ),
        };
        let verdict: Verdict = Arc::default();
        let file: Arc<Mutex<Option<(u64, Hash)>>> = Arc::default();
        let algo = info.file_hash.as_ref().map_or(HashAlgo::Sha256, Hash::algo);
        let side = FileSide {
            inner: object,
            hasher: Some(Hasher::new(algo)),
            read: 0,
            limit,
            declared,
            expected_size: info.file_size,
            expected_hash: info.file_hash.clone(),
            sha256: (algo != HashAlgo::Sha256).then(|| Hasher::new(HashAlgo::Sha256)),
            done: file.clone(),
            path: path.clone(),
            key: info.url.clone(),
            verdict: verdict.clone(),
        };
        let decoder = decompress(method, side).map_err(|source| IntegrityError::Read {
            path: path.clone(),
            key: info.url.clone(),
            source,
        })?;
        Ok(NarReader {
            decoder,
            hasher: Some(Hasher::new(HashAlgo::Sha256)),
            read: 0,
            nar_size: info.nar_size,
            nar_hash: info.nar_hash.clone(),
            path,
            key: info.url.clone(),
            file,
            verdict,
            checked: false,
        })
    }

    /// NAR bytes read so far.
    ///
    /// ```
    /// use std::io::Read as _;
    /// use cachecore::hash::{Hash, HashAlgo};
    /// use cachecore::{nar, narinfo::NarInfo, store::NarReader};
    /// use cachecore::store_path::{StoreDir, StorePath};
    /// # let dir = tempfile::tempdir().unwrap();
    /// # std::fs::write(dir.path().join("hello"), "hi\n").unwrap();
    /// let mut bytes = Vec::new();
    /// nar::pack(&dir.path().join("hello"), &mut bytes).unwrap();
    /// let path = StorePath::from_base_name("7h7qgvs4kgzsn8a6rb273saxyqh4jxlz-hello").unwrap();
    /// let mut info = NarInfo::new(StoreDir::default(), path, "nar/hello.nar".into(),
    ///     Hash::digest(HashAlgo::Sha256, &bytes), bytes.len() as u64);
    /// info.compression = Some("none".into());
    /// let mut reader = NarReader::new(&info, std::io::Cursor::new(bytes.clone())).unwrap();
    /// reader.read_exact(&mut [0u8; 16]).unwrap();
    /// assert_eq!(reader.bytes_read(), 16);
    /// assert_eq!(reader.file_sha256(), None); // not at the end yet
    /// std::io::copy(&mut reader, &mut std::io::sink()).unwrap();
    /// assert_eq!(reader.bytes_read(), bytes.len() as u64);
    /// // Uncompressed, the object is the NAR itself.
    /// let object = (bytes.len() as u64, Hash::digest(HashAlgo::Sha256, &bytes));
    /// assert_eq!(reader.file_sha256(), Some(object));
    /// ```
    pub fn bytes_read(&self) -> u64 {
        self.read
    }

    /// The size and sha256 of the compressed object, once the end was reached and checked
    /// (what a copy names the object after).
    ///
    /// See [`NarReader::bytes_read`] for an example.
    pub fn file_sha256(&self) -> Option<(u64, Hash)> {
        if !self.checked {
            return None;
        }
        self.file.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn fail(&self, e: IntegrityError) -> io::Error {
        record(&self.verdict, e)
    }

    /// Reads what is left (bounded by the narinfo's sizes) and returns the verdict: `Ok` only
    /// when every check passed; else the first failure, typed. Call it after a consumer stopped
    /// early or failed: a damaged object explains a consumer's failure better than its own
    /// error does.
    ///
    /// ```
    /// use std::io::Read as _;
    /// use cachecore::store::IntegrityError;
    /// use cachecore::hash::{Hash, HashAlgo};
    /// use cachecore::{nar, narinfo::NarInfo, store::NarReader};
    /// use cachecore::store_path::{StoreDir, StorePath};
    /// # let dir = tempfile::tempdir().unwrap();
    /// # std::fs::write(dir.path().join("hello"), "hi\n").unwrap();
    /// let mut bytes = Vec::new();
    /// nar::pack(&dir.path().join("hello"), &mut bytes).unwrap();
    /// let path = StorePath::from_base_name("7h7qgvs4kgzsn8a6rb273saxyqh4jxlz-hello").unwrap();
    /// let mut info = NarInfo::new(StoreDir::default(), path, "nar/hello.nar".into(),
    ///     Hash::digest(HashAlgo::Sha256, &bytes), bytes.len() as u64);
    /// info.compression = Some("none".into());
    /// // A consumer stopped early: `finish` reads the rest and checks all of it.
    /// let mut reader = NarReader::new(&info, std::io::Cursor::new(bytes.clone())).unwrap();
    /// reader.read_exact(&mut [0u8; 8]).unwrap();
    /// assert!(reader.finish().is_ok());
    /// // Not the NAR the narinfo names.
    /// info.nar_hash = Hash::digest(HashAlgo::Sha256, b"another NAR");
    /// let reader = NarReader::new(&info, std::io::Cursor::new(bytes)).unwrap();
    /// assert!(matches!(reader.finish(), Err(IntegrityError::Mismatch { field: "NarHash", .. })));
    /// ```
    pub fn finish(mut self) -> Result<(), IntegrityError> {
        if let Some(e) = self.take_verdict() {
            return Err(e);
        }
        let mut buf = vec![0u8; 1 << 16];
        loop {
            match self.read(&mut buf) {
                Ok(0) => return Ok(()),
                Ok(_) => {}
                Err(e) => {
                    return Err(self.take_verdict().unwrap_or(IntegrityError::Read {
                        path: self.path.clone(),
                        key: self.key.clone(),
                        source: e,
                    }))
                }
            }
        }
    }

    fn take_verdict(&self) -> Option<IntegrityError> {
        self.verdict
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }
}

impl Read for NarReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.checked {
            return Ok(0);
        }
        if self.hasher.is_none() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: its NAR failed a check", self.path),
            ));
        }
        let n = match self.decoder.read(buf) {
            Ok(n) => n,
            Err(e) => {
                self.hasher = None;
                // A failure the compressed side recorded is the cause; else the decoder's own.
                let text = self
                    .verdict
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .as_ref()
                    .map(ToString::to_string);
                return Err(match text {
                    Some(text) => io::Error::new(io::ErrorKind::InvalidData, text),
                    None => self.fail(IntegrityError::Read {
                        path: self.path.clone(),
                        key: self.key.clone(),
                        source: e,
                    }),
                });
            }
        };
        if self.read.saturating_add(n as u64) > self.nar_size {
            self.hasher = None;
            return Err(self.fail(IntegrityError::Exceeds {
                path: self.path.clone(),
                key: self.key.clone(),
                declared: "its narinfo's NarSize declares (decompressed)",
                limit: self.nar_size,
            }));
        }
        if n > 0 {
            if let Some(h) = self.hasher.as_mut() {
                h.update(&buf[..n]);
            }
            self.read += n as u64;
            return Ok(n);
        }
        // The decoder's end: the compressed side has ended and passed its checks (a decoder
        // reads its input to the end). Check the NAR's own.
        let actual = self.hasher.take().map(Hasher::finish);
        let mismatch = |field, expected: String, actual: String| {
            IntegrityError::mismatch(&self.path, &self.key, field, expected, actual)
        };
        if self
            .file
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_none()
        {
            return Err(self.fail(IntegrityError::Read {
                path: self.path.clone(),
                key: self.key.clone(),
                source: io::Error::new(
                    io::ErrorKind::InvalidData,
                    "data follows the end of the compressed NAR",
                ),
            }));
        }
        if self.read != self.nar_size {
            return Err(self.fail(mismatch(
                "NarSize",
                self.nar_size.to_string(),
                self.read.to_string(),
            )));
        }
        if let Some(actual) = actual {
            if actual != self.nar_hash {
                return Err(self.fail(mismatch(
                    "NarHash",
                    self.nar_hash.to_string(),
                    actual.to_string(),
                )));
            }
        }
        self.checked = true;
        Ok(0)
    }
}

impl BinaryCache {
    /// The NAR of `info` out of this cache, as a [`NarReader`] that checks it against `info`
    /// as it is read (see the [module docs](self)). The object is streamed by a task spawned on
    /// the current tokio runtime, a bounded number of chunks ahead of the reader; dropping the
    /// reader stops it.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
    /// # use std::sync::Arc;
    /// # use cachecore::ops::{self, NoProgress, PushOptions};
    /// # use cachecore::store_path::StoreDir;
    /// use std::io::Read as _;
    /// use cachecore::store::BinaryCache;
    /// # let src = tempfile::tempdir().unwrap();
    /// # std::fs::write(src.path().join("hello"), "hello, world\n").unwrap();
    /// let cache = BinaryCache::open("memory://").unwrap();
    /// # let (path, _) = ops::push_add(&cache, &StoreDir::default(), src.path(), "hello",
    /// #     &PushOptions::default(), Arc::new(NoProgress)).await.unwrap();
    /// let info = cache.narinfo(&path).await.unwrap().unwrap();
    /// let mut reader = cache.nar(&info).await.unwrap();
    /// // A blocking `Read`: consume it off the async worker threads.
    /// let nar = tokio::task::spawn_blocking(move || {
    ///     let mut nar = Vec::new();
    ///     reader.read_to_end(&mut nar).map(|_| nar)
    /// }).await.unwrap().unwrap();
    /// assert_eq!(nar.len() as u64, info.nar_size);
    /// # });
    /// ```
    pub async fn nar(&self, info: &NarInfo) -> Result<NarReader, IntegrityError> {
        let (stream, tx, reader) = self.nar_parts(info).await?;
        tokio::spawn(crate::ops::pipe::feed(stream, tx));
        Ok(reader)
    }

    /// [`nar`](Self::nar), with `observe` seeing the object's compressed bytes as they are
    /// read — all of them, to the object's end, even when the reader stops early (until
    /// `observe` returns `false`): one read of the object for both. The task's result says
    /// whether `observe` saw the whole object.
    pub(crate) async fn nar_observed(
        &self,
        info: &NarInfo,
        observe: impl FnMut(&[u8]) -> bool + Send + 'static,
    ) -> Result<(NarReader, tokio::task::JoinHandle<bool>), IntegrityError> {
        let (stream, tx, reader) = self.nar_parts(info).await?;
        let fed = tokio::spawn(crate::ops::pipe::feed_observed(stream, tx, observe));
        Ok((reader, fed))
    }

    async fn nar_parts(
        &self,
        info: &NarInfo,
    ) -> Result<
        (
            super::ByteStream,
            tokio::sync::mpsc::Sender<Result<bytes::Bytes, io::Error>>,
            NarReader,
        ),
        IntegrityError,
    > {
        check_algorithms(info)?;
        let stream = self
            .nar_object(info)
            .await?
            .ok_or_else(|| IntegrityError::NarMissing {
                path: info.store_dir.full_path(&info.store_path),
                key: info.url.clone(),
                url: self.url().to_owned(),
            })?;
        let (tx, reader) = crate::ops::pipe::reader_channel();
        let reader = NarReader::new(info, reader)?;
        Ok((stream, tx, reader))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::compression::Compressor;
    use crate::store_path::{StoreDir, StorePath};
    use std::io::Write as _;

    fn info_for(nar: &[u8], file: &[u8], method: Compression) -> NarInfo {
        let mut info = NarInfo::new(
            StoreDir::default(),
            StorePath::from_base_name("00000000000000000000000000000000-x").unwrap(),
            "nar/x".into(),
            Hash::digest(HashAlgo::Sha256, nar),
            nar.len() as u64,
        );
        info.compression = Some(method.name().into());
        info.file_hash = Some(Hash::digest(HashAlgo::Sha256, file));
        info.file_size = Some(file.len() as u64);
        info
    }

    /// A NAR of one regular file of 100 KiB.
    fn small_nar() -> Vec<u8> {
        let data: Vec<u8> = (0..100 << 10).map(|i: u32| (i * 7 % 251) as u8).collect();
        let mut out = Vec::new();
        crate::nar::writer::open(&mut out)
            .unwrap()
            .file(false, data.len() as u64, &mut &data[..])
            .unwrap();
        out
    }

    fn compress(data: &[u8], method: Compression) -> Vec<u8> {
        if method == Compression::Bzip2 {
            // cachecore writes no bzip2; Nix's old caches have it.
            let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
            e.write_all(data).unwrap();
            return e.finish().unwrap();
        }
        let mut c = Compressor::new(Vec::new(), method, None).unwrap();
        c.write_all(data).unwrap();
        c.finish().unwrap()
    }

    fn read_all(info: &NarInfo, file: Vec<u8>) -> (Vec<u8>, Result<(), IntegrityError>) {
        let mut r = NarReader::new(info, io::Cursor::new(file)).unwrap();
        let mut out = Vec::new();
        let _ = r.read_to_end(&mut out);
        (out, r.finish())
    }

    #[test]
    fn matching_objects_pass_in_every_compression() {
        let nar = small_nar();
        for method in [
            Compression::None,
            Compression::Zstd,
            Compression::Xz,
            Compression::Bzip2,
            Compression::Brotli,
        ] {
            let file = compress(&nar, method);
            let info = info_for(&nar, &file, method);
            let mut r = NarReader::new(&info, io::Cursor::new(file.clone())).unwrap();
            let mut out = Vec::new();
            r.read_to_end(&mut out).unwrap();
            assert_eq!(out, nar);
            assert_eq!(
                r.file_sha256(),
                Some((file.len() as u64, Hash::digest(HashAlgo::Sha256, &file)))
            );
            r.finish().unwrap();
        }
    }

    #[test]
    fn a_bomb_stops_at_the_declared_sizes() {
        // 64 MiB of zeros compress to a few KiB; the narinfo says the NAR is 1000 bytes.
        let big = vec![0u8; 64 << 20];
        for method in [
            Compression::Zstd,
            Compression::Xz,
            Compression::Bzip2,
            Compression::Brotli,
        ] {
            let file = compress(&big, method);
            let mut info = info_for(&big[..1000], &file, method);
            let (out, verdict) = read_all(&info, file.clone());
            assert!(out.len() <= 1000, "{method}: {} bytes came out", out.len());
            let e = verdict.unwrap_err();
            assert!(
                matches!(e, IntegrityError::Exceeds { limit: 1000, .. }),
                "{method}: {e}"
            );
            // A FileSize smaller than the object: cut off on the compressed side.
            info.file_size = Some(100);
            info.nar_size = 1 << 40;
            let (out, verdict) = read_all(&info, file);
            let e = verdict.unwrap_err();
            assert!(
                matches!(e, IntegrityError::Exceeds { limit: 100, .. }),
                "{method}: {e}"
            );
            assert!(out.len() < 64 << 20, "{method}");
        }
    }

    #[test]
    fn every_mismatch_is_named() {
        let nar = small_nar();
        let file = compress(&nar, Compression::Zstd);
        let good = info_for(&nar, &file, Compression::Zstd);
        let field = |info: &NarInfo, file: Vec<u8>| match read_all(info, file).1 {
            Err(IntegrityError::Mismatch { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        let mut i = good.clone();
        i.file_size = Some(file.len() as u64 + 1);
        assert_eq!(field(&i, file.clone()), "FileSize");
        let mut i = good.clone();
        i.file_hash = Some(Hash::digest(HashAlgo::Sha256, b"other"));
        assert_eq!(field(&i, file.clone()), "FileHash");
        let mut i = good.clone();
        i.nar_hash = Hash::digest(HashAlgo::Sha256, b"other");
        assert_eq!(field(&i, file.clone()), "NarHash");
        let mut i = good.clone();
        i.nar_size += 1;
        assert_eq!(field(&i, file.clone()), "NarSize");
        // Other FileHash algorithms are checked with their own.
        for algo in [HashAlgo::Md5, HashAlgo::Sha1, HashAlgo::Sha512] {
            let mut i = good.clone();
            i.file_hash = Some(Hash::digest(algo, &file));
            read_all(&i, file.clone()).1.unwrap();
            i.file_hash = Some(Hash::digest(algo, b"other"));
            assert_eq!(field(&i, file.clone()), "FileHash");
        }
        // A NarHash in another algorithm is refused before reading.
        let mut i = good.clone();
        i.nar_hash = Hash::digest(HashAlgo::Sha1, &nar);
        assert!(matches!(
            NarReader::new(&i, io::Cursor::new(file.clone())),
            Err(IntegrityError::UnsupportedHash { .. })
        ));
        // A truncated object.
        let (_, v) = read_all(&good, file[..file.len() / 2].to_vec());
        assert!(v.is_err());
        // No FileSize: bounded by what the NarSize allows.
        let mut i = good.clone();
        i.file_size = None;
        i.file_hash = None;
        read_all(&i, file).1.unwrap();
    }
}
