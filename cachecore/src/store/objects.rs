//! The object layer: the only code in cachecore that touches [`object_store`].
//!
//! [`Objects`] is a handle on one store (a local directory, S3, GCS, Azure, memory, or a
//! read-only HTTP cache) that knows nothing of Nix. It offers
//!
//! - [`get`](Objects::get): a streaming GET of a whole object or of a [`ByteRange`], never
//!   buffering the range, with the object's [`ObjectMeta`] (size, last-modified, ETag);
//! - [`head`](Objects::head): the same metadata without the body;
//! - [`list`](Objects::list) and [`list_dir`](Objects::list_dir): a prefix as a stream of
//!   [`ObjectMeta`];
//! - [`put`](Objects::put) and [`put_stream`](Objects::put_stream) with a [`PutMode`]:
//!   overwrite, create-only, or replace-if-unchanged;
//! - [`delete`](Objects::delete) and [`rename`](Objects::rename).
//!
//! # Conditional writes are probed, not assumed
//!
//! Backends differ in what they honour: a local directory can create an object only if it is
//! absent (a hard link) but has no compare-and-swap; S3 servers are sent `If-None-Match: *` and
//! `If-Match`, which AWS honours and some S3-compatible servers (Garage) ignore, answering 200
//! and overwriting. So the first conditional write to a store [probes](Objects::write_support)
//! it: a probe object is written twice create-only (the second must be refused), then replaced
//! with a wrong ETag (which must be refused). The answer is kept for the life of the handle. A
//! write whose [`PutMode`] the store does not honour fails with [`StoreError::Unsupported`]
//! before anything is sent — never a silent overwrite.
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! use bytes::Bytes;
//! use cachecore::store::{BinaryCache, ByteRange, PutMode};
//! use futures::TryStreamExt;
//! let cache = BinaryCache::open("memory://").unwrap();
//! let objects = cache.objects();
//! objects.put("log/a.drv", Bytes::from_static(b"hello world"), PutMode::Create).await.unwrap();
//! // A second create-only write is refused, as a conflict.
//! let e = objects.put("log/a.drv", Bytes::new(), PutMode::Create).await.unwrap_err();
//! assert_eq!(e.kind(), cachecore::error::ErrorKind::Conflict);
//! // A ranged GET streams bytes 6..11 and says how large the whole object is.
//! let object = objects.get("log/a.drv", ByteRange::Bounded(6..11)).await.unwrap().unwrap();
//! assert_eq!(object.meta.size, 11);
//! let body: Vec<Bytes> = object.body.try_collect().await.unwrap();
//! assert_eq!(body.concat(), b"world");
//! # });
//! ```

use std::fmt;
use std::io;
use std::ops::Range;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};
use futures::Stream;
use object_store::list::{PaginatedListOptions, PaginatedListStore};
use object_store::path::Path;
use object_store::{
    Attribute, Attributes, GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutMultipartOptions,
    PutOptions, PutPayload, UpdateVersion, WriteMultipart,
};
use tokio::sync::OnceCell;

use super::error::{convert, ErrorContext, Op, StoreError};
use super::hot::{self, FileId, HotObjects, Validity};
use super::layout;

/// Objects at least this large are uploaded by [`Objects::put_stream`] in parts; smaller ones
/// in a single request.
pub const MULTIPART_THRESHOLD: usize = 10 * 1024 * 1024;

/// The size of each part of a multipart upload. S3 allows 10,000 parts, so one object can be up
/// to ~97 GiB.
pub const PART_SIZE: usize = 10 * 1024 * 1024;

/// Parts of one upload in flight at once. Memory per upload is at most about
/// `(PARTS_IN_FLIGHT + 1) * PART_SIZE` plus one chunk of the input.
pub const PARTS_IN_FLIGHT: usize = 4;

/// A stream of an object's bytes.
pub type ByteStream = BoxStream<'static, Result<Bytes, StoreError>>;

/// What a store says about one object.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ObjectMeta {
    /// The key, relative to the cache root.
    pub key: String,
    /// The size of the whole object in bytes.
    pub size: u64,
    /// When the object was last written.
    pub last_modified: SystemTime,
    /// The entity tag, when the backend has one (as the server sent it, quotes included).
    pub e_tag: Option<String>,
    /// The backend's version of the object, when it keeps versions (GCS generation, ...).
    pub version: Option<String>,
}

impl ObjectMeta {
    /// The version a [`PutMode::IfUnchanged`] write must find for this object.
    pub fn version_tag(&self) -> VersionTag {
        VersionTag {
            e_tag: self.e_tag.clone(),
            version: self.version.clone(),
        }
    }
}

/// Which bytes of an object to read.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ByteRange {
    /// The whole object.
    #[default]
    All,
    /// Bytes `start..end`; an `end` past the object's end is clamped to it.
    Bounded(Range<u64>),
    /// From this offset to the end.
    From(u64),
    /// The last `n` bytes (all of them if the object is shorter).
    Last(u64),
}

impl ByteRange {
    fn to_get_range(&self) -> Option<GetRange> {
        match self {
            ByteRange::All => None,
            ByteRange::Bounded(r) => Some(GetRange::Bounded(r.clone())),
            ByteRange::From(o) => Some(GetRange::Offset(*o)),
            ByteRange::Last(n) => Some(GetRange::Suffix(*n)),
        }
    }
}

/// An object as read by [`Objects::get`]: its metadata, which bytes `body` carries, and the
/// body itself, streamed from the backend as it arrives.
pub struct Object {
    pub meta: ObjectMeta,
    /// The bytes of the object that `body` holds (`0..meta.size` for the whole object).
    pub range: Range<u64>,
    pub body: ByteStream,
}

impl fmt::Debug for Object {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Object")
            .field("meta", &self.meta)
            .field("range", &self.range)
            .finish_non_exhaustive()
    }
}

/// The version of an object a [`PutMode::IfUnchanged`] write expects to replace.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VersionTag {
    pub e_tag: Option<String>,
    pub version: Option<String>,
}

/// How a write treats an object already at its key.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum PutMode {
    /// Replace whatever is there.
    #[default]
    Overwrite,
    /// Write only if there is no object at the key; otherwise [`StoreError::AlreadyExists`].
    Create,
    /// Replace the object only if it is still the version given (compare-and-swap); otherwise
    /// [`StoreError::Changed`].
    IfUnchanged(VersionTag),
}

/// What a store really honours, as [probed](Objects::write_support).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct WriteSupport {
    /// Whether the store can be written at all.
    pub writable: bool,
    /// Whether [`PutMode::Create`] refuses to replace an existing object.
    pub create_only: bool,
    /// Whether [`PutMode::IfUnchanged`] refuses to replace a changed object.
    pub if_unchanged: bool,
}

/// A local file's I/O failure as object_store reports its own.
fn local_error(e: impl std::error::Error + Send + Sync + 'static) -> object_store::Error {
    object_store::Error::Generic {
        store: "LocalFileSystem",
        source: Box::new(e),
    }
}

/// How an object of a local directory is opened. `NONBLOCK`: a FIFO put at an object's key
/// would otherwise make the open wait for a writer, forever, on whatever thread made it (on a
/// regular file the flag changes nothing); the file is then `fstat`ed and refused unless it is
/// a regular file (`Objects::check_regular`), so no read waits on it either. `NOCTTY`: a terminal at a
/// key does not become the process's.
const OPEN_OBJECT: rustix::fs::OFlags = rustix::fs::OFlags::RDONLY
    .union(rustix::fs::OFlags::CLOEXEC)
    .union(rustix::fs::OFlags::NOCTTY)
    .union(rustix::fs::OFlags::NONBLOCK);

/// Bytes read from a local file per chunk of a GET's body.
const FILE_CHUNK: u64 = 256 * 1024;

/// A local object (or range) up to this size is read on the calling task, not in the blocking
/// pool (see `Objects::local_get`): narinfos, listings of small paths, seek tables.
const INLINE_READ: u64 = 64 * 1024;

/// Fills `buf` from `file` at `pos` only if the page cache holds all of it (`preadv2` with
/// `RWF_NOWAIT`, which fails rather than wait for the disk): `true` when it did. Reading cached
/// bytes on the calling task is what nginx does with `sendfile`, and costs less than a trip to
/// the blocking pool; a read that would wait for the disk is left to the pool.
fn read_cached(file: &std::fs::File, buf: &mut [u8], pos: u64) -> bool {
    let mut done = 0;
    while done < buf.len() {
        let read = rustix::io::preadv2(
            file,
            &mut [io::IoSliceMut::new(&mut buf[done..])],
            pos + done as u64,
            rustix::io::ReadWriteFlags::NOWAIT,
        );
        match read {
            Ok(n) if n > 0 => done += n,
            // The end of the file (the pool's read says so), not cached, or unsupported.
            _ => return false,
        }
    }
    true
}

/// The bytes `range` of a local file as a stream of [`FILE_CHUNK`]-sized chunks, each read on
/// the calling task when the page cache holds it ([`read_cached`]), else with `pread` on the
/// blocking pool. A file that ends early is an error, never a short body.
fn file_chunks(
    file: std::fs::File,
    range: std::ops::Range<u64>,
) -> BoxStream<'static, object_store::Result<Bytes>> {
    let file = Arc::new(file);
    stream::try_unfold(range.start, move |pos| {
        let file = file.clone();
        let end = range.end;
        async move {
            if pos >= end {
                return Ok(None);
            }
            let len = (end - pos).min(FILE_CHUNK) as usize;
            let mut buf = vec![0u8; len];
            if read_cached(&file, &mut buf, pos) {
                return Ok(Some((Bytes::from(buf), pos + len as u64)));
            }
            let chunk = tokio::task::spawn_blocking(move || {
                use std::os::unix::fs::FileExt as _;
                let mut buf = vec![0u8; len];
                file.read_exact_at(&mut buf, pos).map(|()| buf)
            })
            .await
            .map_err(local_error)?
            .map_err(local_error)?;
            Ok(Some((Bytes::from(chunk), pos + len as u64)))
        }
    })
    .boxed()
}

/// A local file opened for a GET (`Objects::describe_local`).
struct LocalFile {
    meta: ObjectMeta,
    /// The bytes of the file asked for.
    range: Range<u64>,
    file: std::fs::File,
    /// Those bytes, when they were read already.
    first: Option<Bytes>,
    id: FileId,
    /// Whether the file was old enough to keep its bytes, when it was described.
    settled: bool,
}

/// What a local file's `stat` says as object metadata, with the ETag object_store's local
/// backend gives the same file (so listings, HEADs and GETs agree).
// The nanosecond fields are `u64` here and `i64` on some targets.
#[allow(clippy::unnecessary_cast)]
fn local_meta(key: &str, st: &rustix::fs::Stat) -> ObjectMeta {
    let size = st.st_size as u64;
    // As std's `Metadata::modified` (which object_store's HEAD uses for the ETag), with a
    // time before 1970 read as 1970.
    let modified = if st.st_mtime < 0 {
        SystemTime::UNIX_EPOCH
    } else {
        let nanos = std::time::Duration::from_nanos(st.st_mtime_nsec as u64);
        std::time::Duration::from_secs(st.st_mtime as u64)
            .checked_add(nanos)
            .and_then(|d| SystemTime::UNIX_EPOCH.checked_add(d))
            .unwrap_or(SystemTime::UNIX_EPOCH)
    };
    let micros = modified
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_micros();
    let inode = st.st_ino;
    ObjectMeta {
        key: key.to_owned(),
        size,
        last_modified: modified,
        e_tag: Some(format!("\"{inode:x}-{micros:x}-{size:x}\"")),
        version: None,
    }
}

/// The whole object `meta` describes, whose bytes are at hand.
fn whole(meta: ObjectMeta, bytes: Bytes) -> Object {
    Object {
        range: 0..meta.size,
        meta,
        body: stream::once(async move { Ok(bytes) }).boxed(),
    }
}

/// What a write left at its key.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Written {
    /// Bytes written.
    pub size: u64,
    /// The new object's version, when the backend reports one.
    pub version: VersionTag,
}

/// A handle on one object store, with keys relative to the cache root. Cheap to clone.
///
/// Obtained from [`BinaryCache::objects`](super::BinaryCache::objects).
#[derive(Clone)]
pub struct Objects {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) store: Arc<dyn ObjectStore>,
    pub(crate) cx: ErrorContext,
    pub(crate) read_only: bool,
    /// Send `Content-Type` with uploads (backends that support attributes).
    pub(crate) content_types: bool,
    /// Delimited, paginated listing (S3, GCS, Azure); other backends use `list_with_delimiter`.
    pub(crate) lister: Option<Lister>,
    /// `false` for plain HTTP, which has no listing.
    pub(crate) listable: bool,
    pub(crate) support: OnceCell<WriteSupport>,
    /// For a local directory, its canonical path: no key may reach outside it.
    pub(crate) local_root: Option<std::path::PathBuf>,
    /// For a local directory, the directory itself, open: reads open files beneath it.
    pub(crate) local_root_fd: Option<std::os::fd::OwnedFd>,
    /// Aborts of uploads whose future was dropped, still running.
    pub(crate) cleanups: Cleanups,
    /// What signs URLs for direct uploads (S3), and the prefix keys live under.
    pub(crate) presigner: Option<Presigner>,
    /// Small objects read lately (see the `hot` module).
    pub(crate) hot: HotObjects,
    /// How long a small object read from a remote store is used again without asking the
    /// store, in milliseconds; 0 (the default) never.
    pub(crate) remote_ttl_ms: std::sync::atomic::AtomicU64,
}

/// Signs URLs that let a client write one object without credentials of its own.
pub(crate) struct Presigner {
    pub(crate) signer: Arc<dyn object_store::signer::Signer>,
    /// The cache's prefix in the bucket (`""`, or `dir/`).
    pub(crate) prefix: String,
}

/// Tasks that clean up after an upload dropped mid-way (aborting a multipart upload, which
/// deletes its parts on S3 and its staging file in a directory), so a frontend interrupted by
/// a signal can wait for them before it exits: [`Objects::finish_cleanups`].
#[derive(Default)]
pub(crate) struct Cleanups {
    tasks: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl Cleanups {
    fn add(&self, task: tokio::task::JoinHandle<()>) {
        if let Ok(mut tasks) = self.tasks.lock() {
            tasks.push(task);
        }
    }

    async fn finish(&self) {
        loop {
            let tasks = match self.tasks.lock() {
                Ok(mut tasks) => std::mem::take(&mut *tasks),
                Err(_) => return,
            };
            if tasks.is_empty() {
                return;
            }
            for task in tasks {
                let _ = task.await;
            }
        }
    }
}

/// A multipart upload in progress. Dropped before it finished (its future dropped, as when a
/// frontend stops on a signal), it is aborted in a task the store tracks: the parts uploaded
/// so far are deleted, never left as an incomplete upload (S3) or a `<key>#<n>` staging file
/// (a local directory).
struct ActiveUpload {
    writer: Option<WriteMultipart>,
    runtime: tokio::runtime::Handle,
    store: Arc<Inner>,
}

impl ActiveUpload {
    fn put(&mut self, chunk: Bytes) {
        if let Some(w) = &mut self.writer {
            w.put(chunk);
        }
    }

    async fn wait_for_capacity(&mut self, parts: usize) -> Result<(), object_store::Error> {
        match &mut self.writer {
            Some(w) => w.wait_for_capacity(parts).await,
            None => Ok(()),
        }
    }

    async fn abort(mut self) {
        if let Some(w) = self.writer.take() {
            let _ = w.abort().await;
        }
    }

    /// Completes the upload. Dropped while sending its last part and completing, it may
    /// complete or not, as any interrupted PUT.
    async fn finish(mut self) -> Result<object_store::PutResult, object_store::Error> {
        // Parts still in flight are waited for while a drop would still abort them.
        self.wait_for_capacity(0).await?;
        match self.writer.take() {
            Some(w) => w.finish().await,
            None => Err(object_store::Error::Generic {
                store: "cachecore",
                source: "the upload was already finished".into(),
            }),
        }
    }
}

impl Drop for ActiveUpload {
    fn drop(&mut self) {
        if let Some(writer) = self.writer.take() {
            let task = self.runtime.spawn(async move {
                let _ = writer.abort().await;
            });
            self.store.cleanups.add(task);
        }
    }
}

pub(crate) struct Lister {
    pub(crate) store: Arc<dyn PaginatedListStore>,
    /// The URL's prefix with a trailing `/`, or empty.
    pub(crate) prefix: String,
}

impl fmt::Debug for Objects {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Objects")
            .field("url", &self.inner.cx.url)
            .field("read_only", &self.inner.read_only)
            .finish_non_exhaustive()
    }
}

fn none_if_missing<T>(e: StoreError) -> Result<Option<T>, StoreError> {
    match e {
        StoreError::NotFound { .. } => Ok(None),
        other => Err(other),
    }
}

fn meta_of(m: object_store::ObjectMeta, key: String) -> ObjectMeta {
    ObjectMeta {
        key,
        size: m.size,
        last_modified: SystemTime::from(m.last_modified),
        e_tag: m.e_tag,
        version: m.version,
    }
}

impl Objects {
    /// Runs `cleanup` on `runtime` as one of the tasks [`finish_cleanups`](Self::finish_cleanups)
    /// waits for (for operations that clean up after themselves when dropped).
    pub(crate) fn spawn_cleanup(
        &self,
        runtime: &tokio::runtime::Handle,
        cleanup: impl std::future::Future<Output = ()> + Send + 'static,
    ) {
        self.inner.cleanups.add(runtime.spawn(cleanup));
    }

    /// Waits until the uploads dropped before they finished are aborted (see
    /// [`put_stream`](Self::put_stream)). A frontend that stops an operation by dropping it
    /// (on Ctrl-C) calls this before exiting, so nothing is left half-uploaded.
    pub async fn finish_cleanups(&self) {
        self.inner.cleanups.finish().await;
    }

    pub(crate) fn new(inner: Inner) -> Objects {
        Objects {
            inner: Arc::new(inner),
        }
    }

    /// The store URL as given (passwords replaced by `***`).
    pub fn url(&self) -> &str {
        &self.inner.cx.url
    }

    /// Whether the store refuses every write (plain HTTP caches).
    pub fn is_read_only(&self) -> bool {
        self.inner.read_only
    }

    fn err(&self, op: Op, key: &str, e: object_store::Error) -> StoreError {
        convert(&self.inner.cx, op, key, e)
    }

    fn path(&self, key: &str) -> Result<Path, StoreError> {
        let path = self.key_path(key)?;
        self.confine(key)?;
        Ok(path)
    }

    /// `key` as an object_store path, if it is a well-formed key (not yet confined).
    fn key_path(&self, key: &str) -> Result<Path, StoreError> {
        // A key may come from a cache (a narinfo's URL): quoted by a short prefix only.
        let bad = |reason: String| StoreError::BadKey {
            url: self.inner.cx.url.clone(),
            key: crate::narinfo::excerpt(key),
            reason: crate::narinfo::excerpt(&reason),
        };
        if key.is_empty() || key.starts_with('/') || key.ends_with('/') {
            return Err(bad(
                "keys are non-empty and have no leading or trailing /".to_owned()
            ));
        }
        Path::parse(key).map_err(|e| bad(e.to_string()))
    }

    /// On a local directory, refuses a key that resolves outside the directory through a
    /// symbolic link (an object, or a directory on the way to it): a cache is untrusted input,
    /// and reading `nar/x -> /etc/shadow` or writing through `nar -> /` must not happen. The
    /// deepest part of the key that exists is resolved, so writes are checked as well as reads.
    fn confine(&self, key: &str) -> Result<(), StoreError> {
        let Some(root) = &self.inner.local_root else {
            return Ok(());
        };
        let mut probe = root.join(key);
        let resolved = loop {
            match std::fs::canonicalize(&probe) {
                Ok(p) => break Some(p),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    // A dangling symlink is refused too: it points somewhere we cannot check.
                    if probe.symlink_metadata().is_ok() {
                        break None;
                    }
                    if !probe.pop() || !probe.starts_with(root) {
                        return Ok(());
                    }
                }
                // Not a directory on the way, permission denied, ...: the operation itself
                // reports it.
                Err(_) => return Ok(()),
            }
        };
        match resolved {
            Some(p) if p.starts_with(root) => Ok(()),
            _ => Err(StoreError::OutsideRoot {
                url: self.inner.cx.url.clone(),
                key: key.to_owned(),
            }),
        }
    }

    /// Opens `key` for reading under a local directory's root by `openat2` with
    /// `RESOLVE_BENEATH`: the kernel refuses any resolution that leaves the directory, symbolic
    /// links included, which is what [`confine`](Self::confine) checks in several calls. `None`
    /// when it cannot say yes (no such file, a link out of the directory, a kernel without
    /// `openat2`): then the caller confines and opens the slow way, which says why.
    fn open_beneath(&self, key: &str) -> Option<std::fs::File> {
        use rustix::fs::{openat2, Mode, ResolveFlags};
        let root = self.inner.local_root_fd.as_ref()?;
        let fd = openat2(
            root,
            key,
            OPEN_OBJECT,
            Mode::empty(),
            ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS,
        )
        .ok()?;
        Some(std::fs::File::from(fd))
    }

    fn writable(&self, key: &str) -> Result<Path, StoreError> {
        if self.inner.read_only {
            return Err(StoreError::ReadOnly {
                url: self.inner.cx.url.clone(),
                key: key.to_owned(),
            });
        }
        self.path(key)
    }

    fn attributes(&self, key: &str) -> Attributes {
        let mut a = Attributes::new();
        if self.inner.content_types {
            a.insert(Attribute::ContentType, layout::content_type(key).into());
        }
        a
    }

    /// Streams the object at `key`, or the bytes `range` of it; `None` if there is none.
    ///
    /// The body is streamed from the backend as it arrives: a range of any size costs memory
    /// for one chunk at a time. A range that starts at or past the object's end is
    /// [`StoreError::RangeNotSatisfiable`]; an empty [`ByteRange::Bounded`] range reads
    /// nothing (one HEAD request for the metadata).
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// use bytes::Bytes;
    /// use cachecore::store::{BinaryCache, ByteRange, PutMode};
    /// use futures::TryStreamExt;
    /// let cache = BinaryCache::open("memory://").unwrap();
    /// let objects = cache.objects();
    /// objects.put("log/a.drv", Bytes::from_static(b"hello world"), PutMode::Overwrite).await.unwrap();
    /// let object = objects.get("log/a.drv", ByteRange::Last(5)).await.unwrap().unwrap();
    /// assert_eq!((object.range.clone(), object.meta.size), (6..11, 11));
    /// let body: Vec<Bytes> = object.body.try_collect().await.unwrap();
    /// assert_eq!(body.concat(), b"world");
    /// assert!(objects.get("log/b.drv", ByteRange::All).await.unwrap().is_none());
    /// # });
    /// ```
    pub async fn get(&self, key: &str, range: ByteRange) -> Result<Option<Object>, StoreError> {
        if let Some(root) = &self.inner.local_root {
            let empty = matches!(&range, ByteRange::Bounded(r) if r.start >= r.end);
            if !empty {
                self.key_path(key)?;
                if let (ByteRange::All, Some(hit)) = (&range, self.hot_local(key)) {
                    return Ok(Some(hit));
                }
                return self.local_get(root.join(key), key, range).await;
            }
        }
        let path = self.path(key)?;
        // For how long the object may be kept, and the memory's generation before the read.
        let keep_for = self
            .remote_ttl()
            .filter(|_| matches!(range, ByteRange::All))
            .map(|ttl| (ttl, self.inner.hot.generation()));
        if keep_for.is_some() {
            if let Some((meta, bytes)) = self.kept_remote(key) {
                return Ok(Some(whole(meta, bytes)));
            }
        }
        if let ByteRange::Bounded(r) = &range {
            if r.start >= r.end {
                return Ok(self.head(key).await?.map(|meta| Object {
                    range: r.start.min(meta.size)..r.start.min(meta.size),
                    meta,
                    body: stream::empty().boxed(),
                }));
            }
        }
        let opts = GetOptions {
            range: range.to_get_range(),
            ..GetOptions::default()
        };
        let result = match self.inner.store.get_opts(&path, opts).await {
            Ok(r) => r,
            // Azure has no suffix ranges: ask for the size, then for the bytes from an offset.
            Err(object_store::Error::NotSupported { .. })
                if matches!(range, ByteRange::Last(_)) =>
            {
                let ByteRange::Last(n) = range else {
                    return Ok(None);
                };
                let Some(meta) = self.head(key).await? else {
                    return Ok(None);
                };
                let from = meta.size.saturating_sub(n);
                return Box::pin(self.get(key, ByteRange::Bounded(from..meta.size))).await;
            }
            Err(e) => return none_if_missing(self.range_err(key, &range, e)),
        };
        let cx = self.inner.cx.clone();
        let owned_key = key.to_owned();
        let range = result.range.clone();
        let meta = meta_of(result.meta.clone(), key.to_owned());
        let raw = match result.payload {
            // A local file: read in large chunks (object_store's own stream reads 8 KiB at a
            // time, a system call and a tiny body frame per 8 KiB served).
            object_store::GetResultPayload::File(file, _) => file_chunks(file, range.clone()),
            object_store::GetResultPayload::Stream(s) => s,
        };
        let body = raw
            .map_err(move |e| convert(&cx, Op::Read, &owned_key, e))
            .boxed();
        let object = Object { meta, range, body };
        match keep_for {
            Some((ttl, read_since)) if object.meta.size <= hot::MAX_ENTRY => {
                self.keep(object, ttl, read_since).await
            }
            _ => Ok(Some(object)),
        }
    }

    /// How long a small object read from a remote store is used again without asking the store
    /// ([`set_remote_ttl`](Self::set_remote_ttl)).
    fn remote_ttl(&self) -> Option<std::time::Duration> {
        let ms = self
            .inner
            .remote_ttl_ms
            .load(std::sync::atomic::Ordering::Relaxed);
        (ms > 0).then(|| std::time::Duration::from_millis(ms))
    }

    /// Lets whole objects of at most 64 KiB read from a remote store (narinfos, most listings)
    /// be answered from memory for `ttl` after they were read, instead of asking the store
    /// again — what a CDN in front of the bucket does for the `Cache-Control: max-age` a
    /// narinfo is served with. A change made through another handle or process is seen after
    /// at most `ttl`; one made through this handle is seen at once. Only objects found are
    /// kept, so a new object is seen at once too. Zero (the default) turns it off; local
    /// directories always check their files instead: a kept file's bytes are used again only
    /// while a `stat` finds the very file they were read from, unchanged.
    pub fn set_remote_ttl(&self, ttl: std::time::Duration) {
        let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        self.inner
            .remote_ttl_ms
            .store(ms, std::sync::atomic::Ordering::Relaxed);
    }

    /// Reads the small `object` whole and keeps it for `ttl`. Bytes that do not add up to its
    /// size are passed on, not kept: the reader's length check says what is wrong.
    async fn keep(
        &self,
        object: Object,
        ttl: std::time::Duration,
        read_since: u64,
    ) -> Result<Option<Object>, StoreError> {
        let Object {
            meta,
            range,
            mut body,
        } = object;
        let mut chunks = Vec::new();
        let mut len = 0u64;
        while let Some(chunk) = body.try_next().await? {
            len += chunk.len() as u64;
            chunks.push(chunk);
            if len > meta.size {
                break;
            }
        }
        if len != meta.size {
            let body = stream::iter(chunks.into_iter().map(Ok)).chain(body).boxed();
            return Ok(Some(Object { meta, range, body }));
        }
        let bytes = Bytes::from(chunks.concat());
        if let Some(until) = std::time::Instant::now().checked_add(ttl) {
            let hot = &self.inner.hot;
            hot.insert(read_since, Validity::Until(until), meta.clone(), &bytes);
        }
        Ok(Some(whole(meta, bytes)))
    }

    /// A remote object kept by [`keep`](Self::keep) and not expired.
    fn kept_remote(&self, key: &str) -> Option<(ObjectMeta, Bytes)> {
        let now = std::time::Instant::now();
        let valid = |v: &Validity| matches!(v, Validity::Until(t) if now < *t);
        self.inner.hot.get(key, valid)
    }

    /// [`get`](Self::get) on a local directory. A file the kernel opens beneath the root in one
    /// call (`openat2`, see [`open_beneath`](Self::open_beneath)) is opened, described and —
    /// up to [`INLINE_READ`] bytes, a narinfo's size — read right here: a few system calls on
    /// the page cache cost less than the trip to the blocking pool and back, which was most of
    /// what `serve` spent on a narinfo. Anything else takes one trip to the blocking pool: the
    /// key confined the slow way, the file opened, described (the same ETag as object_store's
    /// local backend gives, so HEADs and GETs agree) and, for a range of at most
    /// [`FILE_CHUNK`] bytes, read. object_store's own local GET takes two trips and reads 8 KiB
    /// at a time, which made `serve` a third as fast as nginx on NARs.
    async fn local_get(
        &self,
        file_path: std::path::PathBuf,
        key: &str,
        range: ByteRange,
    ) -> Result<Option<Object>, StoreError> {
        let read_since = self.inner.hot.generation();
        let opened = match self.open_beneath(key) {
            Some(file) => self.describe_local(file, key, &range, true)?,
            None => {
                let this = self.clone();
                let owned_key = key.to_owned();
                tokio::task::spawn_blocking(move || {
                    this.confine(&owned_key)?;
                    let file = match rustix::fs::open(
                        &file_path,
                        OPEN_OBJECT,
                        rustix::fs::Mode::empty(),
                    ) {
                        Ok(fd) => std::fs::File::from(fd),
                        Err(rustix::io::Errno::NOENT) => return Ok(None),
                        Err(e) => {
                            // A socket cannot be opened at all (ENXIO): say what is there.
                            if let Ok(st) = rustix::fs::stat(&file_path) {
                                this.check_regular(&owned_key, &st)?;
                            }
                            return Err(this.local_read_err(&owned_key, e.into()));
                        }
                    };
                    this.describe_local(file, &owned_key, &range, false)
                })
                .await
                .map_err(|e| self.err(Op::Read, key, local_error(e)))??
            }
        };
        let Some(LocalFile {
            meta,
            range,
            file,
            first,
            id,
            settled,
        }) = opened
        else {
            return Ok(None);
        };
        let body = match first {
            Some(bytes) => {
                if range.start == 0 && range.end == meta.size && settled {
                    let validity = Validity::File(id);
                    let hot = &self.inner.hot;
                    hot.insert(read_since, validity, meta.clone(), &bytes);
                }
                stream::once(async move { Ok(bytes) }).boxed()
            }
            None => {
                let cx = self.inner.cx.clone();
                let owned_key = key.to_owned();
                file_chunks(file, range.clone())
                    .map_err(move |e| convert(&cx, Op::Read, &owned_key, e))
                    .boxed()
            }
        };
        Ok(Some(Object { meta, range, body }))
    }

    /// Whether the file `st` describes, at `key`, is an object: `true` for a regular file,
    /// `false` for a directory (a prefix, absent as an object on every backend), and
    /// [`StoreError::NotRegularFile`] for anything else.
    fn check_regular(&self, key: &str, st: &rustix::fs::Stat) -> Result<bool, StoreError> {
        use rustix::fs::FileType;
        let what = match FileType::from_raw_mode(st.st_mode) {
            FileType::RegularFile => return Ok(true),
            FileType::Directory => return Ok(false),
            FileType::Fifo => "FIFO",
            FileType::Socket => "socket",
            FileType::CharacterDevice => "character device",
            FileType::BlockDevice => "block device",
            FileType::Symlink => "symbolic link",
            FileType::Unknown => "file of unknown type",
        };
        Err(StoreError::NotRegularFile {
            url: self.inner.cx.url.clone(),
            key: key.to_owned(),
            what,
        })
    }

    fn local_read_err(&self, key: &str, e: io::Error) -> StoreError {
        self.err(Op::Read, key, local_error(e))
    }

    /// An object of a local directory answered from [`HotObjects`]: the file at `key` is still
    /// the one its bytes were read from (one `stat`, not following a final symbolic link).
    fn hot_local(&self, key: &str) -> Option<Object> {
        let root = self.inner.local_root_fd.as_ref()?;
        let (meta, bytes) = self.inner.hot.get(key, |validity| match validity {
            Validity::File(id) => {
                rustix::fs::statat(root, key, rustix::fs::AtFlags::SYMLINK_NOFOLLOW)
                    .is_ok_and(|st| FileId::of(&st) == *id)
            }
            Validity::Until(_) => false,
        })?;
        Some(whole(meta, bytes))
    }

    /// An open local file's metadata and the bytes of `range` it covers, and those bytes
    /// themselves when they are few: on the calling task (`on_task`), at most [`INLINE_READ`]
    /// bytes and only from the page cache; on the blocking pool, at most [`FILE_CHUNK`].
    /// `None` when it is not a regular file.
    fn describe_local(
        &self,
        file: std::fs::File,
        key: &str,
        range: &ByteRange,
        on_task: bool,
    ) -> Result<Option<LocalFile>, StoreError> {
        let read_up_to = if on_task { INLINE_READ } else { FILE_CHUNK };
        let read_err = |e: io::Error| self.local_read_err(key, e);
        let st = rustix::fs::fstat(&file).map_err(|e| read_err(e.into()))?;
        if !self.check_regular(key, &st)? {
            return Ok(None);
        }
        let id = FileId::of(&st);
        // Before the bytes are read: a change after this shows in the file's times.
        let settled = id.settled();
        let size = st.st_size as u64;
        let bytes = match range {
            ByteRange::All => 0..size,
            ByteRange::Bounded(r) if r.start < size => r.start..r.end.min(size),
            ByteRange::From(o) if *o < size => *o..size,
            ByteRange::Last(n) => size.saturating_sub(*n)..size,
            _ => {
                return Err(StoreError::RangeNotSatisfiable {
                    url: self.inner.cx.url.clone(),
                    key: key.to_owned(),
                    range: format!("{range:?}"),
                })
            }
        };
        let meta = local_meta(key, &st);
        let len = bytes.end - bytes.start;
        let first = if len <= read_up_to {
            let mut buf = vec![0u8; len as usize];
            if on_task {
                // Only what the page cache holds.
                read_cached(&file, &mut buf, bytes.start).then(|| Bytes::from(buf))
            } else {
                use std::os::unix::fs::FileExt as _;
                file.read_exact_at(&mut buf, bytes.start)
                    .map_err(read_err)?;
                Some(Bytes::from(buf))
            }
        } else {
            None
        };
        Ok(Some(LocalFile {
            meta,
            range: bytes,
            file,
            first,
            id,
            settled,
        }))
    }

    /// A failed ranged GET: a range past the end is said as such, whatever the backend's words.
    fn range_err(&self, key: &str, range: &ByteRange, e: object_store::Error) -> StoreError {
        let unsatisfiable = match (&e, range) {
            (_, ByteRange::All) => false,
            (object_store::Error::NotFound { .. }, _) => false,
            _ => {
                let text = super::error::chain_text(&e);
                text.contains("416")
                    || text.contains("InvalidRange")
                    || text.contains("out of bounds")
                    || text.contains("Range started at")
                    || text.contains("Wanted range starting at")
            }
        };
        if unsatisfiable {
            return StoreError::RangeNotSatisfiable {
                url: self.inner.cx.url.clone(),
                key: key.to_owned(),
                range: format!("{range:?}"),
            };
        }
        self.err(Op::Read, key, e)
    }

    /// The whole object at `key` in memory (for small objects: narinfos, listings, logs);
    /// `None` if there is none.
    pub async fn get_bytes(&self, key: &str) -> Result<Option<Bytes>, StoreError> {
        if self.inner.local_root.is_some() {
            return self.local_bytes(key, u64::MAX).await;
        }
        let path = self.path(key)?;
        let result = match self.inner.store.get(&path).await {
            Ok(r) => r,
            Err(e) => return none_if_missing(self.err(Op::Read, key, e)),
        };
        result
            .bytes()
            .await
            .map(Some)
            .map_err(|e| self.err(Op::Read, key, e))
    }

    /// The whole object at `key` in memory, refusing one larger than `limit` bytes with
    /// [`StoreError::TooLarge`] without reading it whole (the size the store declares is checked
    /// first, then the bytes as they arrive, so a server lying about the size is cut off too);
    /// `None` if there is none. Untrusted metadata (narinfos, listings, realisations,
    /// `nix-cache-info`) is read through here.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// use bytes::Bytes;
    /// use cachecore::{error::ErrorKind, store::{BinaryCache, PutMode}};
    /// let cache = BinaryCache::open("memory://").unwrap();
    /// let objects = cache.objects();
    /// objects.put("big.ls", Bytes::from(vec![b' '; 4096]), PutMode::Overwrite).await.unwrap();
    /// assert_eq!(objects.get_bytes_limited("big.ls", 4096).await.unwrap().unwrap().len(), 4096);
    /// let e = objects.get_bytes_limited("big.ls", 1024).await.unwrap_err();
    /// assert_eq!(e.kind(), ErrorKind::Corrupt); // StoreError::TooLarge
    /// # });
    /// ```
    pub async fn get_bytes_limited(
        &self,
        key: &str,
        limit: u64,
    ) -> Result<Option<Bytes>, StoreError> {
        if self.inner.local_root.is_some() {
            return self.local_bytes(key, limit).await;
        }
        let path = self.path(key)?;
        let result = match self.inner.store.get(&path).await {
            Ok(r) => r,
            Err(e) => return none_if_missing(self.err(Op::Read, key, e)),
        };
        let size = result.meta.size;
        let cx = self.inner.cx.clone();
        let owned_key = key.to_owned();
        let body = result
            .into_stream()
            .map_err(move |e| convert(&cx, Op::Read, &owned_key, e));
        self.collect_limited(key, size, body, limit).await.map(Some)
    }

    /// [`get_bytes_limited`](Self::get_bytes_limited) on a local directory: through
    /// [`get`](Self::get), which opens files without blocking and refuses what is not a regular
    /// file, and answers kept objects from memory.
    async fn local_bytes(&self, key: &str, limit: u64) -> Result<Option<Bytes>, StoreError> {
        let Some(object) = self.get(key, ByteRange::All).await? else {
            return Ok(None);
        };
        self.collect_limited(key, object.meta.size, object.body, limit)
            .await
            .map(Some)
    }

    /// The bytes of `body`, an object of `size` bytes as its store declares it, refused with
    /// [`StoreError::TooLarge`] as soon as the size or the bytes arrived exceed `limit`.
    async fn collect_limited(
        &self,
        key: &str,
        size: u64,
        body: impl Stream<Item = Result<Bytes, StoreError>>,
        limit: u64,
    ) -> Result<Bytes, StoreError> {
        let too_large = || StoreError::TooLarge {
            url: self.inner.cx.url.clone(),
            key: key.to_owned(),
            limit,
        };
        if size > limit {
            return Err(too_large());
        }
        let mut body = std::pin::pin!(body);
        let mut data = bytes::BytesMut::new();
        while let Some(chunk) = body.try_next().await? {
            if (data.len() + chunk.len()) as u64 > limit {
                return Err(too_large());
            }
            data.extend_from_slice(&chunk);
        }
        Ok(data.freeze())
    }

    /// The root directory of a local-directory store (canonical), `None` elsewhere.
    pub(crate) fn local_root(&self) -> Option<&std::path::Path> {
        self.inner.local_root.as_deref()
    }

    /// Makes the object at `key` durable before anything that names it is written: on a local
    /// directory, `fsync`s the file and the directories from it up to the root (a rename or a
    /// new file is durable only once its directory is); elsewhere a no-op (S3, GCS and Azure
    /// acknowledge a write only once it is stored).
    pub async fn sync(&self, key: &str) -> Result<(), StoreError> {
        let Some(root) = self.inner.local_root.clone() else {
            return Ok(());
        };
        self.path(key)?;
        let file = root.join(key);
        let result = tokio::task::spawn_blocking(move || -> io::Result<()> {
            // Not blocking on a FIFO put in the object's place since it was written.
            let fd = rustix::fs::open(&file, OPEN_OBJECT, rustix::fs::Mode::empty())?;
            std::fs::File::from(fd).sync_all()?;
            let mut dir = file.parent();
            while let Some(d) = dir {
                std::fs::File::open(d)?.sync_all()?;
                if d == root {
                    break;
                }
                dir = d.parent();
            }
            Ok(())
        })
        .await;
        let e = match result {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(e)) => e,
            Err(join) => io::Error::other(join.to_string()),
        };
        Err(StoreError::Durability {
            url: self.inner.cx.url.clone(),
            key: key.to_owned(),
            source: e,
        })
    }

    /// The metadata of the object at `key`, or `None` if there is none.
    ///
    /// A HEAD response has no body, so on S3 a missing *bucket* also reads as `None` here; the
    /// first GET or PUT reports [`StoreError::NoSuchBucket`].
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// use bytes::Bytes;
    /// use cachecore::store::{BinaryCache, PutMode};
    /// let cache = BinaryCache::open("memory://").unwrap();
    /// let objects = cache.objects();
    /// let written = objects.put("nix-cache-info", Bytes::from_static(b"StoreDir: /nix/store\n"),
    ///     PutMode::Overwrite).await.unwrap();
    /// let meta = objects.head("nix-cache-info").await.unwrap().unwrap();
    /// assert_eq!((meta.key.as_str(), meta.size), ("nix-cache-info", 21));
    /// assert_eq!(meta.version_tag(), written.version);
    /// assert_eq!(objects.head("missing").await.unwrap(), None);
    /// # });
    /// ```
    pub async fn head(&self, key: &str) -> Result<Option<ObjectMeta>, StoreError> {
        if let Some(root) = &self.inner.local_root {
            return self.local_head(root.join(key), key).await;
        }
        let path = self.path(key)?;
        // What a GET would answer from memory, a HEAD answers too (the same ETag).
        if self.inner.local_root.is_none() && self.remote_ttl().is_some() {
            if let Some((meta, _)) = self.kept_remote(key) {
                return Ok(Some(meta));
            }
        }
        match self.inner.store.head(&path).await {
            Ok(meta) => Ok(Some(meta_of(meta, key.to_owned()))),
            Err(e) => none_if_missing(self.err(Op::Stat, key, e)),
        }
    }

    /// [`head`](Self::head) on a local directory: a `stat` of the file beneath the root (one
    /// `openat2` with `O_PATH`, which opens nothing and so never waits on a FIFO), else the key
    /// confined the slow way and the file `stat`ed on the blocking pool. What is not a regular
    /// file is refused as [`get`](Self::get) refuses it.
    async fn local_head(
        &self,
        file_path: std::path::PathBuf,
        key: &str,
    ) -> Result<Option<ObjectMeta>, StoreError> {
        self.key_path(key)?;
        if let Some(st) = self.stat_beneath(key) {
            return Ok(self.check_regular(key, &st)?.then(|| local_meta(key, &st)));
        }
        let this = self.clone();
        let owned_key = key.to_owned();
        tokio::task::spawn_blocking(move || {
            this.confine(&owned_key)?;
            match rustix::fs::stat(&file_path) {
                Ok(st) => Ok(this
                    .check_regular(&owned_key, &st)?
                    .then(|| local_meta(&owned_key, &st))),
                Err(rustix::io::Errno::NOENT) => Ok(None),
                Err(e) => Err(this.err(Op::Stat, &owned_key, local_error(io::Error::from(e)))),
            }
        })
        .await
        .map_err(|e| self.err(Op::Stat, key, local_error(e)))?
    }

    /// The `stat` of `key` beneath a local directory's root, resolved as
    /// [`open_beneath`](Self::open_beneath) resolves it; `None` when it cannot say.
    fn stat_beneath(&self, key: &str) -> Option<rustix::fs::Stat> {
        use rustix::fs::{openat2, Mode, OFlags, ResolveFlags};
        let root = self.inner.local_root_fd.as_ref()?;
        let fd = openat2(
            root,
            key,
            OFlags::PATH | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS,
        )
        .ok()?;
        rustix::fs::fstat(&fd).ok()
    }

    /// Whether the store can be listed (plain HTTP caches cannot).
    pub fn is_listable(&self) -> bool {
        self.inner.listable
    }

    fn unlistable(&self, what: &str) -> Option<StoreError> {
        (!self.inner.listable).then(|| StoreError::Unsupported {
            url: self.inner.cx.url.clone(),
            operation: format!("list {what}"),
            reason: "a plain HTTP binary cache has no listing (list the directory or bucket it serves instead)".to_owned(),
        })
    }

    /// Every object whose key starts with the directory `prefix` (`"nar"`, `"gcroots/host"`;
    /// `""` for all), recursively, as a stream, in no particular order. Pages are fetched as
    /// the stream is read: memory does not grow with the number of objects. Staging files of
    /// uploads in progress on a local directory are not listed.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// use bytes::Bytes;
    /// use cachecore::store::{BinaryCache, ObjectMeta, PutMode};
    /// use futures::TryStreamExt;
    /// let cache = BinaryCache::open("memory://").unwrap();
    /// let objects = cache.objects();
    /// for key in ["nar/a.nar", "nar/b.nar", "a.narinfo"] {
    ///     objects.put(key, Bytes::from_static(b"x"), PutMode::Overwrite).await.unwrap();
    /// }
    /// let listed: Vec<ObjectMeta> = objects.list("nar").try_collect().await.unwrap();
    /// let mut keys: Vec<String> = listed.into_iter().map(|m| m.key).collect();
    /// keys.sort(); // in no particular order
    /// assert_eq!(keys, ["nar/a.nar", "nar/b.nar"]);
    /// # });
    /// ```
    pub fn list(&self, prefix: &str) -> BoxStream<'static, Result<ObjectMeta, StoreError>> {
        let what = if prefix.is_empty() {
            "the store"
        } else {
            prefix
        };
        if let Some(e) = self.unlistable(what) {
            return stream::once(async move { Err(e) }).boxed();
        }
        let path = if prefix.is_empty() {
            None
        } else {
            match self.path(prefix) {
                Ok(p) => Some(p),
                Err(e) => return stream::once(async move { Err(e) }).boxed(),
            }
        };
        let this = self.clone();
        let key = format!("{what} (listing)");
        self.inner
            .store
            .list(path.as_ref())
            .map(move |r| match r {
                Ok(m) => {
                    let key = m.location.as_ref().to_owned();
                    Ok(meta_of(m, key))
                }
                Err(e) => Err(this.err(Op::List, &key, e)),
            })
            .boxed()
    }

    /// The objects directly in the directory `prefix` (`""` for the root), not recursing into
    /// subdirectories, streamed a page (about 1000 keys) at a time on S3, GCS and Azure; other
    /// backends read the directory in one go (about 100 bytes of memory per object in it).
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// use bytes::Bytes;
    /// use cachecore::store::{BinaryCache, ObjectMeta, PutMode};
    /// use futures::TryStreamExt;
    /// let cache = BinaryCache::open("memory://").unwrap();
    /// let objects = cache.objects();
    /// for key in ["nar/a.nar", "a.narinfo"] {
    ///     objects.put(key, Bytes::from_static(b"x"), PutMode::Overwrite).await.unwrap();
    /// }
    /// let root: Vec<ObjectMeta> = objects.list_dir("").try_collect().await.unwrap();
    /// assert_eq!(root.len(), 1);
    /// assert_eq!(root[0].key, "a.narinfo"); // `nar/a.nar` is in a subdirectory
    /// # });
    /// ```
    pub fn list_dir(&self, prefix: &str) -> BoxStream<'_, Result<ObjectMeta, StoreError>> {
        let what = if prefix.is_empty() {
            "the cache root"
        } else {
            prefix
        };
        if let Some(e) = self.unlistable(what) {
            return stream::once(async move { Err(e) }).boxed();
        }
        let key = format!("{what} (listing)");
        let dir = if prefix.is_empty() {
            String::new()
        } else {
            format!("{prefix}/")
        };
        if let Some(lister) = &self.inner.lister {
            let full = format!("{}{dir}", lister.prefix);
            // Pages: None = finished, Some(None) = not started, Some(Some(token)) = more.
            let pages = stream::try_unfold(Some(None::<String>), move |state| {
                let (full, key) = (full.clone(), key.clone());
                async move {
                    let Some(token) = state else {
                        return Ok(None);
                    };
                    let opts = PaginatedListOptions {
                        delimiter: Some("/".into()),
                        page_token: token,
                        ..PaginatedListOptions::default()
                    };
                    let prefix = (!full.is_empty()).then_some(full.as_str());
                    let page = lister
                        .store
                        .list_paginated(prefix, opts)
                        .await
                        .map_err(|e| self.err(Op::List, &key, e))?;
                    let metas: Vec<Result<ObjectMeta, StoreError>> = page
                        .result
                        .objects
                        .into_iter()
                        .filter_map(|m| {
                            let key = m.location.as_ref().strip_prefix(lister.prefix.as_str())?;
                            let key = key.to_owned();
                            Some(Ok(meta_of(m, key)))
                        })
                        .collect();
                    let next = page.page_token.map(Some);
                    Ok(Some((stream::iter(metas), next)))
                }
            });
            pages.try_flatten().boxed()
        } else {
            let path = if dir.is_empty() {
                None
            } else {
                match self.path(prefix) {
                    Ok(p) => Some(p),
                    Err(e) => return stream::once(async move { Err(e) }).boxed(),
                }
            };
            stream::once(async move {
                self.inner
                    .store
                    .list_with_delimiter(path.as_ref())
                    .await
                    .map_err(|e| self.err(Op::List, &key, e))
            })
            .map_ok(|listing| {
                stream::iter(listing.objects.into_iter().map(|m| {
                    let key = m.location.as_ref().to_owned();
                    Ok(meta_of(m, key))
                }))
            })
            .try_flatten()
            .boxed()
        }
    }

    /// What this store honours: probed once per handle by writing, re-writing and replacing a
    /// probe object (a key of its own, deleted afterwards), then remembered. A read-only store
    /// is not probed. A probe that cannot complete (server unreachable, access denied) is an
    /// error and is tried again on the next call.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// use std::sync::Arc;
    /// use cachecore::store::BinaryCache;
    /// let cache = BinaryCache::open("memory://").unwrap();
    /// let support = cache.objects().write_support().await.unwrap();
    /// assert!(support.writable && support.create_only && support.if_unchanged);
    /// // A read-only store is not probed.
    /// let store = Arc::new(object_store::memory::InMemory::new());
    /// let read_only = BinaryCache::from_object_store(store, "mirror://", true);
    /// assert!(!read_only.objects().write_support().await.unwrap().writable);
    /// # });
    /// ```
    pub async fn write_support(&self) -> Result<WriteSupport, StoreError> {
        if self.inner.read_only {
            return Ok(WriteSupport::default());
        }
        self.inner
            .support
            .get_or_try_init(|| self.probe())
            .await
            .copied()
    }

    async fn probe(&self) -> Result<WriteSupport, StoreError> {
        let key = layout::probe(&unique_suffix());
        let path = self.writable(&key)?;
        let store = &self.inner.store;
        let put = |mode: object_store::PutMode, data: &'static [u8]| {
            let opts = PutOptions {
                mode,
                ..PutOptions::default()
            };
            store.put_opts(&path, PutPayload::from_static(data), opts)
        };
        let result = async {
            let first = match put(object_store::PutMode::Create, b"1").await {
                Ok(r) => Some(r),
                Err(object_store::Error::NotImplemented { .. }) => None,
                Err(e) => return Err(self.err(Op::Write, &key, e)),
            };
            let create_only = match first {
                None => false,
                Some(_) => match put(object_store::PutMode::Create, b"2").await {
                    Ok(_) => false,
                    Err(object_store::Error::AlreadyExists { .. }) => true,
                    Err(object_store::Error::NotImplemented { .. }) => false,
                    Err(e) => return Err(self.err(Op::Write, &key, e)),
                },
            };
            // Make sure an object is there (the create-only writes may not have been possible).
            let current = put(object_store::PutMode::Overwrite, b"3")
                .await
                .map_err(|e| self.err(Op::Write, &key, e))?;
            let stale = UpdateVersion {
                e_tag: Some("\"cachecore-probe-stale\"".to_owned()),
                version: current.version.as_ref().map(|_| "1".to_owned()),
            };
            let if_unchanged = match put(object_store::PutMode::Update(stale), b"4").await {
                Ok(_) => false,
                Err(object_store::Error::Precondition { .. }) => {
                    // A compare-and-swap must also succeed when the version is right.
                    put(object_store::PutMode::Update(current.into()), b"5")
                        .await
                        .is_ok()
                }
                Err(
                    object_store::Error::NotImplemented { .. }
                    | object_store::Error::NotSupported { .. },
                ) => false,
                Err(e) => return Err(self.err(Op::Write, &key, e)),
            };
            Ok(WriteSupport {
                writable: true,
                create_only,
                if_unchanged,
            })
        }
        .await;
        // Best effort: a leftover probe object is a few bytes under a key nothing reads.
        let _ = store.delete(&path).await;
        result
    }

    /// Refuses a mode this store does not honour, before anything is written.
    async fn check_mode(&self, key: &str, mode: &PutMode) -> Result<(), StoreError> {
        let (needed, what) = match mode {
            PutMode::Overwrite => return Ok(()),
            PutMode::Create => (
                self.write_support().await?.create_only,
                "create-only writes",
            ),
            PutMode::IfUnchanged(_) => (
                self.write_support().await?.if_unchanged,
                "replace-if-unchanged writes",
            ),
        };
        if needed {
            Ok(())
        } else {
            Err(StoreError::Unsupported {
                url: self.inner.cx.url.clone(),
                operation: format!("write {key} with {what}"),
                reason: format!("the store does not honour {what} (probed)"),
            })
        }
    }

    fn put_options(&self, key: &str, mode: &PutMode) -> PutOptions {
        PutOptions {
            mode: match mode {
                PutMode::Overwrite => object_store::PutMode::Overwrite,
                PutMode::Create => object_store::PutMode::Create,
                PutMode::IfUnchanged(v) => object_store::PutMode::Update(UpdateVersion {
                    e_tag: v.e_tag.clone(),
                    version: v.version.clone(),
                }),
            },
            attributes: self.attributes(key),
            ..PutOptions::default()
        }
    }

    /// Writes an object in one request. With [`PutMode::Create`] or
    /// [`PutMode::IfUnchanged`] on a store that does not honour it (see
    /// [`write_support`](Self::write_support)): [`StoreError::Unsupported`], nothing written.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// use bytes::Bytes;
    /// use cachecore::{error::ErrorKind, store::{BinaryCache, PutMode}};
    /// let cache = BinaryCache::open("memory://").unwrap();
    /// let objects = cache.objects();
    /// let first = objects.put("index/main", Bytes::from_static(b"1"), PutMode::Create).await.unwrap();
    /// // Compare-and-swap: replace it only if no one else did in between.
    /// let swap = PutMode::IfUnchanged(first.version.clone());
    /// objects.put("index/main", Bytes::from_static(b"2"), swap).await.unwrap();
    /// let stale = PutMode::IfUnchanged(first.version);
    /// let e = objects.put("index/main", Bytes::from_static(b"3"), stale).await.unwrap_err();
    /// assert_eq!(e.kind(), ErrorKind::Conflict);
    /// assert_eq!(objects.get_bytes("index/main").await.unwrap().unwrap(), &b"2"[..]);
    /// # });
    /// ```
    pub async fn put(&self, key: &str, data: Bytes, mode: PutMode) -> Result<Written, StoreError> {
        let path = self.writable(key)?;
        self.check_mode(key, &mode).await?;
        let size = data.len() as u64;
        self.put_payload(key, &path, PutPayload::from_bytes(data), &mode)
            .await
            .map(|version| Written { size, version })
    }

    async fn put_payload(
        &self,
        key: &str,
        path: &Path,
        payload: PutPayload,
        mode: &PutMode,
    ) -> Result<VersionTag, StoreError> {
        let opts = self.put_options(key, mode);
        let result = self.inner.store.put_opts(path, payload, opts).await;
        self.inner.hot.remove(key);
        match result {
            Ok(r) => Ok(VersionTag {
                e_tag: r.e_tag,
                version: r.version,
            }),
            Err(e) => Err(self.err(Op::Write, key, e)),
        }
    }

    /// Streams an object in. Below [`MULTIPART_THRESHOLD`] the data is sent in one request;
    /// above, as a multipart upload of [`PART_SIZE`] parts with at most [`PARTS_IN_FLIGHT`] in
    /// flight, so memory stays bounded whatever the size. If `data` yields an error, the upload
    /// is aborted, nothing appears at `key`, and the error is [`StoreError::Source`].
    ///
    /// Modes: as [`put`](Self::put). A create-only object above the threshold is uploaded to a
    /// staging key and copied into place only if the key is still free (a hard link on a local
    /// directory); stores without a create-only copy (S3) refuse it with
    /// [`StoreError::Unsupported`], as they refuse replace-if-unchanged above the threshold.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// use bytes::Bytes;
    /// use cachecore::store::{BinaryCache, PutMode};
    /// let cache = BinaryCache::open("memory://").unwrap();
    /// let objects = cache.objects();
    /// let chunks = (0..4).map(|_| Ok::<_, std::io::Error>(Bytes::from(vec![b'x'; 1000])));
    /// let written = objects.put_stream("nar/x.nar", futures::stream::iter(chunks), PutMode::Overwrite)
    ///     .await.unwrap();
    /// assert_eq!(written.size, 4000);
    /// // A stream that fails leaves nothing behind.
    /// let broken = futures::stream::iter([Err(std::io::Error::other("disk gone"))]);
    /// assert!(objects.put_stream("nar/y.nar", broken, PutMode::Overwrite).await.is_err());
    /// assert!(objects.head("nar/y.nar").await.unwrap().is_none());
    /// # });
    /// ```
    pub async fn put_stream(
        &self,
        key: &str,
        data: impl Stream<Item = Result<Bytes, io::Error>> + Send,
        mode: PutMode,
    ) -> Result<Written, StoreError> {
        let written = self.stream_in(key, data, mode).await;
        // Read while the upload was under way, the old bytes must not stay.
        self.inner.hot.remove(key);
        written
    }

    async fn stream_in(
        &self,
        key: &str,
        data: impl Stream<Item = Result<Bytes, io::Error>> + Send,
        mode: PutMode,
    ) -> Result<Written, StoreError> {
        let path = self.writable(key)?;
        self.check_mode(key, &mode).await?;
        // A large object is never kept, but the small one it replaces may have been: forgotten
        // now, and again once written (`put_stream`).
        self.inner.hot.remove(key);
        let source_err = |source: io::Error| StoreError::Source {
            url: self.inner.cx.url.clone(),
            key: key.to_owned(),
            source,
        };
        let mut data = std::pin::pin!(data);
        let mut head: Vec<Bytes> = Vec::new();
        let mut head_len = 0usize;
        let mut total = 0u64;
        while head_len < MULTIPART_THRESHOLD {
            match data.next().await {
                None => {
                    let payload: PutPayload = head.into_iter().collect();
                    let version = self.put_payload(key, &path, payload, &mode).await?;
                    return Ok(Written {
                        size: total,
                        version,
                    });
                }
                Some(Err(e)) => return Err(source_err(e)),
                Some(Ok(chunk)) => {
                    head_len += chunk.len();
                    total += chunk.len() as u64;
                    head.push(chunk);
                }
            }
        }
        let staging = match &mode {
            PutMode::Overwrite => None,
            PutMode::Create => Some(layout::staging(key, &unique_suffix())),
            PutMode::IfUnchanged(_) => {
                return Err(StoreError::Unsupported {
                    url: self.inner.cx.url.clone(),
                    operation: format!("write {key} with replace-if-unchanged"),
                    reason: format!(
                        "replace-if-unchanged is only possible in one request, for objects under {MULTIPART_THRESHOLD} bytes"
                    ),
                })
            }
        };
        let upload_key = staging.as_deref().unwrap_or(key);
        let upload_path = match &staging {
            Some(s) => self.path(s)?,
            None => path.clone(),
        };
        let opts = PutMultipartOptions::from(self.attributes(key));
        let upload = self
            .inner
            .store
            .put_multipart_opts(&upload_path, opts)
            .await
            .map_err(|e| self.err(Op::Write, upload_key, e))?;
        let mut writer = ActiveUpload {
            writer: Some(WriteMultipart::new_with_chunk_size(upload, PART_SIZE)),
            runtime: tokio::runtime::Handle::current(),
            store: self.inner.clone(),
        };
        for chunk in head {
            writer.put(chunk);
        }
        loop {
            let chunk = match data.next().await {
                None => break,
                Some(Ok(chunk)) => chunk,
                Some(Err(e)) => {
                    // Best effort: the source error is the one worth reporting.
                    writer.abort().await;
                    return Err(source_err(e));
                }
            };
            if let Err(e) = writer.wait_for_capacity(PARTS_IN_FLIGHT).await {
                writer.abort().await;
                return Err(self.err(Op::Write, upload_key, e));
            }
            total += chunk.len() as u64;
            writer.put(chunk);
        }
        let done = writer
            .finish()
            .await
            .map_err(|e| self.err(Op::Write, upload_key, e))?;
        let Some(staging) = staging else {
            return Ok(Written {
                size: total,
                version: VersionTag {
                    e_tag: done.e_tag,
                    version: done.version,
                },
            });
        };
        let copied = self
            .inner
            .store
            .copy_if_not_exists(&upload_path, &path)
            .await;
        let _ = self.inner.store.delete(&upload_path).await;
        match copied {
            Ok(()) => Ok(Written {
                size: total,
                version: VersionTag::default(),
            }),
            Err(
                object_store::Error::NotImplemented { .. } | object_store::Error::NotSupported { .. },
            ) => Err(StoreError::Unsupported {
                url: self.inner.cx.url.clone(),
                operation: format!("write {key} create-only"),
                reason: format!(
                    "the store has no create-only copy, so create-only writes are limited to objects under {MULTIPART_THRESHOLD} bytes (staging object {staging} removed)"
                ),
            }),
            Err(e) => Err(self.err(Op::Write, key, e)),
        }
    }

    /// A URL that lets whoever holds it `PUT` the object at `key` for `expires_in`, without
    /// credentials (an S3 presigned URL); `None` for a store that cannot sign URLs.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// use std::time::Duration;
    /// use cachecore::store::BinaryCache;
    /// // Only S3 stores sign URLs; elsewhere uploads go through the caller.
    /// let cache = BinaryCache::open("memory://").unwrap();
    /// let url = cache.objects().presigned_put("nar/x.nar", Duration::from_secs(600)).await.unwrap();
    /// assert_eq!(url, None);
    /// # });
    /// ```
    pub async fn presigned_put(
        &self,
        key: &str,
        expires_in: std::time::Duration,
    ) -> Result<Option<url::Url>, StoreError> {
        self.writable(key)?;
        self.presigned(
            object_store::signer::Method::PUT,
            Op::Write,
            key,
            expires_in,
        )
        .await
    }

    /// A URL that lets anyone holding it read the object at `key` (or ranges of it) for
    /// `expires_in` without credentials of their own (an S3 presigned URL); `None` for a store
    /// that cannot sign URLs. Signing is local: the store is not asked whether `key` exists.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// use std::time::Duration;
    /// use cachecore::store::BinaryCache;
    /// let cache = BinaryCache::open("memory://").unwrap();
    /// let url = cache.objects().presigned_get("nar/x.nar", Duration::from_secs(600)).await.unwrap();
    /// assert_eq!(url, None);
    /// # });
    /// ```
    pub async fn presigned_get(
        &self,
        key: &str,
        expires_in: std::time::Duration,
    ) -> Result<Option<url::Url>, StoreError> {
        self.path(key)?;
        self.presigned(object_store::signer::Method::GET, Op::Read, key, expires_in)
            .await
    }

    async fn presigned(
        &self,
        method: object_store::signer::Method,
        op: Op,
        key: &str,
        expires_in: std::time::Duration,
    ) -> Result<Option<url::Url>, StoreError> {
        let Some(p) = &self.inner.presigner else {
            return Ok(None);
        };
        let full = Path::parse(format!("{}{key}", p.prefix))
            .map_err(|source| self.err(op, key, object_store::Error::InvalidPath { source }))?;
        p.signer
            .signed_url(method, &full, expires_in)
            .await
            .map(Some)
            .map_err(|e| self.err(op, key, e))
    }

    /// Moves the object at `from` to `to`, replacing any object there: a file-system rename on
    /// a local directory, server-side copy + delete on object stores (the bytes do not pass
    /// through this machine). A missing `from` is [`StoreError::NotFound`].
    ///
    /// On AWS S3 itself a single server-side copy is limited to 5 GiB, so renaming a larger
    /// object fails there (Garage, MinIO and the other backends have no such limit). Garage
    /// stamps a copy with the current millisecond without stepping past the destination's
    /// newest version, so a rename over an object written in the same millisecond may leave
    /// the older bytes; cachecore renames only onto fresh keys or keys already holding the same
    /// bytes (content-addressed NARs), where this cannot matter.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// use bytes::Bytes;
    /// use cachecore::store::{BinaryCache, PutMode};
    /// let cache = BinaryCache::open("memory://").unwrap();
    /// let objects = cache.objects();
    /// objects.put("tmp/upload-1", Bytes::from_static(b"data"), PutMode::Overwrite).await.unwrap();
    /// objects.rename("tmp/upload-1", "nar/final.nar").await.unwrap();
    /// assert!(objects.head("tmp/upload-1").await.unwrap().is_none());
    /// assert_eq!(objects.get_bytes("nar/final.nar").await.unwrap().unwrap(), &b"data"[..]);
    /// # });
    /// ```
    pub async fn rename(&self, from: &str, to: &str) -> Result<(), StoreError> {
        let from_path = self.writable(from)?;
        let to_path = self.writable(to)?;
        let result = self.inner.store.rename(&from_path, &to_path).await;
        self.inner.hot.remove(from);
        self.inner.hot.remove(to);
        result.map_err(|e| self.err(Op::Rename, from, e))
    }

    /// Deletes the object at `key`; deleting a missing object is not an error.
    pub async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let path = self.writable(key)?;
        let result = self.inner.store.delete(&path).await;
        self.inner.hot.remove(key);
        match result {
            Ok(()) => Ok(()),
            Err(e) => match self.err(Op::Delete, key, e) {
                StoreError::NotFound { .. } => Ok(()),
                other => Err(other),
            },
        }
    }
}

/// A suffix no other writer picks: process id, time and a counter.
fn unique_suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "{}-{nanos:x}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::BinaryCache;

    async fn read(o: &Objects, key: &str) -> Option<Vec<u8>> {
        let object = o.get(key, ByteRange::All).await.ok()??;
        let chunks: Vec<Bytes> = object.body.try_collect().await.ok()?;
        Some(chunks.concat())
    }

    fn kept(o: &Objects, key: &str) -> bool {
        o.inner.hot.get(key, |_| true).is_some()
    }

    /// A small local object is kept once read, and every change to the file behind it is seen on
    /// the next read: bytes written in place (same size), a file renamed over it, a link out of
    /// the directory put in its place, its removal.
    #[tokio::test]
    async fn kept_local_objects_follow_their_files() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("cache");
        let cache = BinaryCache::open(root.to_str().unwrap()).unwrap();
        let o = cache.objects();
        let key = "abc.narinfo";
        let file = root.join(key);
        o.put(key, Bytes::from_static(b"first"), PutMode::Overwrite)
            .await
            .unwrap();
        // Just written: not kept until it has settled.
        assert_eq!(read(o, key).await.as_deref(), Some(&b"first"[..]));
        assert!(!kept(o, key));
        let settle = || tokio::time::sleep(std::time::Duration::from_millis(120));
        settle().await;
        assert_eq!(read(o, key).await.as_deref(), Some(&b"first"[..]));
        assert!(kept(o, key));
        assert_eq!(read(o, key).await.as_deref(), Some(&b"first"[..]));

        std::fs::write(&file, b"secnd").unwrap();
        assert_eq!(read(o, key).await.as_deref(), Some(&b"secnd"[..]));
        settle().await;
        assert_eq!(read(o, key).await.as_deref(), Some(&b"secnd"[..]));
        assert!(kept(o, key));

        std::fs::write(root.join("new"), b"third").unwrap();
        std::fs::rename(root.join("new"), &file).unwrap();
        assert_eq!(read(o, key).await.as_deref(), Some(&b"third"[..]));
        settle().await;
        assert_eq!(read(o, key).await.as_deref(), Some(&b"third"[..]));
        assert!(kept(o, key));

        let outside = dir.path().join("outside");
        std::fs::write(&outside, b"third").unwrap();
        std::fs::remove_file(&file).unwrap();
        std::os::unix::fs::symlink(&outside, &file).unwrap();
        assert!(o.get(key, ByteRange::All).await.is_err());
        assert!(!kept(o, key));

        std::fs::remove_file(&file).unwrap();
        assert_eq!(read(o, key).await, None);
    }

    /// A FIFO or a socket at a key of a local directory is refused at once by every read, in a
    /// sentence naming the key and what is there (opening a FIFO to read it waits for a writer:
    /// the reads run on a thread of their own, so a hang fails the test instead of hanging it);
    /// a directory is no object.
    #[test]
    fn files_that_are_not_regular_are_refused_without_waiting() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("cache");
        std::fs::create_dir(&root).unwrap();
        let made = std::process::Command::new("mkfifo")
            .arg(root.join("fifo.narinfo"))
            .status()
            .unwrap();
        assert!(made.success());
        std::os::unix::net::UnixListener::bind(root.join("socket.narinfo")).unwrap();
        std::fs::create_dir(root.join("dir.narinfo")).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let cache = BinaryCache::open(root.to_str().unwrap()).unwrap();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let o = cache.objects();
            let text = |r: Result<Option<_>, StoreError>| match r {
                Ok(None) => "absent".to_owned(),
                Ok(Some(_)) => "present".to_owned(),
                Err(e) => e.to_string(),
            };
            for key in ["fifo.narinfo", "socket.narinfo", "dir.narinfo"] {
                let got = rt.block_on(async {
                    [
                        text(o.get(key, ByteRange::All).await.map(|o| o.map(drop))),
                        text(
                            o.get(key, ByteRange::Bounded(1..2))
                                .await
                                .map(|o| o.map(drop)),
                        ),
                        text(o.head(key).await.map(|m| m.map(drop))),
                        text(o.get_bytes(key).await.map(|b| b.map(drop))),
                        text(o.get_bytes_limited(key, 1024).await.map(|b| b.map(drop))),
                    ]
                });
                tx.send((key, got)).unwrap();
            }
        });
        for (key, what) in [
            ("fifo.narinfo", "FIFO"),
            ("socket.narinfo", "socket"),
            ("dir.narinfo", ""),
        ] {
            let (got_key, got) = rx
                .recv_timeout(std::time::Duration::from_secs(20))
                .unwrap_or_else(|_| panic!("reading {key} hangs"));
            assert_eq!(got_key, key);
            for text in got {
                if what.is_empty() {
                    assert_eq!(text, "absent");
                } else {
                    let url = root.to_str().unwrap();
                    assert_eq!(
                        text,
                        format!("{url}: {key} is a {what}, not a regular file; refused (cache objects are regular files)")
                    );
                }
            }
        }
    }

    /// With a remote TTL, a small object is answered from memory until it expires; a write
    /// through the same handle is seen at once, and missing objects are never kept.
    #[tokio::test]
    async fn remote_reads_are_kept_for_their_ttl_only() {
        let cache = BinaryCache::open("memory://").unwrap();
        let o = cache.objects();
        o.set_remote_ttl(std::time::Duration::from_millis(300));
        assert_eq!(read(o, "a.narinfo").await, None);
        assert!(!kept(o, "a.narinfo"));
        o.put("a.narinfo", Bytes::from_static(b"one"), PutMode::Overwrite)
            .await
            .unwrap();
        assert_eq!(read(o, "a.narinfo").await.as_deref(), Some(&b"one"[..]));
        assert!(kept(o, "a.narinfo"));
        o.put("a.narinfo", Bytes::from_static(b"two"), PutMode::Overwrite)
            .await
            .unwrap();
        assert!(!kept(o, "a.narinfo"), "a write forgets what was kept");
        assert_eq!(read(o, "a.narinfo").await.as_deref(), Some(&b"two"[..]));
        tokio::time::sleep(std::time::Duration::from_millis(350)).await;
        assert!(o
            .inner
            .hot
            .get(
                "a.narinfo",
                |v| matches!(v, Validity::Until(t) if std::time::Instant::now() < *t)
            )
            .is_none());
        o.delete("a.narinfo").await.unwrap();
        assert_eq!(read(o, "a.narinfo").await, None);
        // Large objects are read as streams, never kept.
        let big = Bytes::from(vec![7u8; hot::MAX_ENTRY as usize + 1]);
        o.put("nar/big", big.clone(), PutMode::Overwrite)
            .await
            .unwrap();
        assert_eq!(read(o, "nar/big").await.unwrap(), big);
        assert!(!kept(o, "nar/big"));
    }
}
