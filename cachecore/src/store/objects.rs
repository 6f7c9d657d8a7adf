//! The object layer: the only code in cachecore that touches [`object_store`].
//!
//! [`Objects`] is a handle on one store (a local directory, S3, GCS, Azure, memory, or a
//! read-only HTTP cache) that knows nothing of Nix. It offers
//!
//! - [`get`](Objects::get): a streaming GET of a whole object or of a [`ReadRange`], never
//!   buffering the range, with the object's [`ObjectInfo`] (size, last-modified, ETag);
//! - [`head`](Objects::head): the same metadata without the body;
//! - [`list`](Objects::list) and [`list_dir`](Objects::list_dir): a prefix as a stream of
//!   [`ObjectInfo`];
//! - [`put`](Objects::put) and [`put_stream`](Objects::put_stream) with a [`WriteMode`]:
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
//! write whose [`WriteMode`] the store does not honour fails with [`StoreError::Unsupported`]
//! before anything is sent — never a silent overwrite.
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! use bytes::Bytes;
//! use cachecore::store::{BinaryCache, ReadRange, WriteMode};
//! use futures::TryStreamExt;
//! let cache = BinaryCache::open("memory://").unwrap();
//! let objects = cache.objects();
//! objects.put("log/a.drv", Bytes::from_static(b"hello world"), WriteMode::Create).await.unwrap();
//! // A second create-only write is refused, as a conflict.
//! let e = objects.put("log/a.drv", Bytes::new(), WriteMode::Create).await.unwrap_err();
//! assert_eq!(e.kind(), cachecore::error::ErrorKind::Conflict);
//! // A ranged GET streams bytes 6..11 and says how large the whole object is.
//! let object = objects.get("log/a.drv", ReadRange::Bounded(6..11)).await.unwrap().unwrap();
//! assert_eq!(object.meta.size, 11);
//! let body: Vec<Bytes> = object.body.try_collect().await.unwrap();
//! assert_eq!(body.concat(), b"world");
//! # });
//! ```

use std::fmt;
use std::io;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};
use futures::Stream;
use object_store::list::PaginatedListOptions;
use object_store::path::Path;
use object_store::{
    Attribute, Attributes, GetOptions, ObjectStore, ObjectStoreExt, PutMultipartOptions,
    PutOptions, PutPayload, UpdateVersion, WriteMultipart,
};
use tokio::sync::OnceCell;

use super::backend::{Backend, Listing};
use super::error::{convert, convert_get, GetFailure, Op, StoreError};
use super::hot::{self, HotObjects};
use super::layout;
use super::local::file_chunks;
pub use super::object::{
    ByteStream, Object, ObjectInfo, ReadRange, VersionTag, WriteMode, WriteSupport, Written,
};
use crate::compression::Compression;

/// Objects at least this large are uploaded by [`Objects::put_stream`] in parts; smaller ones
/// in a single request.
pub const MULTIPART_THRESHOLD: usize = 10 * 1024 * 1024;

/// The size of each part of a multipart upload. S3 allows 10,000 parts, so one object can be up
/// to ~97 GiB.
pub const PART_SIZE: usize = 10 * 1024 * 1024;

/// Parts of one upload in flight at once. Memory per upload is at most about
/// `(PARTS_IN_FLIGHT + 1) * PART_SIZE` plus one chunk of the input.
pub const PARTS_IN_FLIGHT: usize = 4;

/// A handle on one object store, with keys relative to the cache root. Cheap to clone.
///
/// Obtained from [`BinaryCache::objects`](super::BinaryCache::objects).
#[derive(Clone)]
pub struct Objects {
    inner: Arc<Shared>,
}

/// What the clones of one [`Objects`] share: the backend, and what the handle learns and keeps
/// while it is used.
pub(crate) struct Shared {
    pub(crate) backend: Backend,
    /// What writes the store honours, once probed.
    pub(crate) support: OnceCell<WriteSupport>,
    /// Aborts of uploads whose future was dropped, still running.
    pub(crate) cleanups: Cleanups,
    /// Small objects read lately (see the `hot` module).
    pub(crate) hot: HotObjects,
    /// How long a small object read from a remote store is used again without asking the
    /// store, in milliseconds; 0 (the default) never.
    pub(crate) remote_ttl_ms: std::sync::atomic::AtomicU64,
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
    store: Arc<Shared>,
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

impl fmt::Debug for Objects {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Objects")
            .field("url", &self.inner.backend.cx.url)
            .field("read_only", &self.inner.backend.read_only)
            .finish_non_exhaustive()
    }
}

fn none_if_missing<T>(e: StoreError) -> Result<Option<T>, StoreError> {
    match e {
        StoreError::NotFound { .. } => Ok(None),
        other => Err(other),
    }
}

/// The `Content-Encoding` a GET reported, unless plain.
fn content_encoding(attributes: &object_store::Attributes) -> Option<String> {
    attributes
        .get(&Attribute::ContentEncoding)
        .map(|v| v.as_ref().trim().to_owned())
        .filter(|v| !v.is_empty() && v != "identity")
}

fn meta_of(m: object_store::ObjectMeta, key: String) -> ObjectInfo {
    ObjectInfo {
        key,
        size: m.size,
        last_modified: SystemTime::from(m.last_modified),
        e_tag: m.e_tag,
        version: m.version,
        content_encoding: None,
    }
}

/// One page of the listing of the keys under `prefix` (the cache's prefix in its bucket):
/// from the start of `token`'s listing, else just after `after`; the objects (their keys
/// relative to the cache), the next page's token, and the last key listed (in the bucket). With
/// `upto`, keys after it are left out, and there is no next page once one is seen.
async fn list_page(
    this: &Objects,
    store: &dyn object_store::list::PaginatedListStore,
    prefix: &str,
    after: Option<String>,
    token: Option<String>,
    upto: Option<&str>,
) -> Result<(Vec<ObjectInfo>, Option<String>, Option<String>), StoreError> {
    let opts = PaginatedListOptions {
        offset: after,
        page_token: token,
        ..PaginatedListOptions::default()
    };
    let page = store
        .list_paginated((!prefix.is_empty()).then_some(prefix), opts)
        .await
        .map_err(|e| this.err(Op::List, "the store (listing)", e))?;
    let mut next = page.page_token;
    let mut last = None;
    let mut objects = Vec::with_capacity(page.result.objects.len());
    for m in page.result.objects {
        let full = m.location.as_ref();
        if upto.is_some_and(|u| full > u) {
            // Listed in order: the range is done.
            next = None;
            continue;
        }
        last = Some(full.to_owned());
        if let Some(key) = full.strip_prefix(prefix) {
            let key = key.to_owned();
            objects.push(meta_of(m, key));
        }
    }
    Ok((objects, next, last))
}

/// The keys after `after` (from the start without one) up to and including `upto` (to the end
/// without one), a page at a time: one range of [`Objects::list_all`].
fn list_range(
    this: Objects,
    store: Arc<dyn object_store::list::PaginatedListStore>,
    prefix: String,
    after: Option<String>,
    upto: Option<String>,
) -> BoxStream<'static, Result<ObjectInfo, StoreError>> {
    // None = finished; Some(None) = the first page (from `after`); Some(Some(token)) = more.
    stream::try_unfold(Some(None::<String>), move |state| {
        let (this, store, prefix, after, upto) = (
            this.clone(),
            Arc::clone(&store),
            prefix.clone(),
            after.clone(),
            upto.clone(),
        );
        async move {
            let Some(token) = state else {
                return Ok(None);
            };
            let after = after.filter(|_| token.is_none());
            let (objects, next, _) =
                list_page(&this, &*store, &prefix, after, token, upto.as_deref()).await?;
            Ok(Some((
                stream::iter(objects.into_iter().map(Ok)),
                next.map(Some),
            )))
        }
    })
    .try_flatten()
    .boxed()
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

    pub(crate) fn new(backend: Backend) -> Objects {
        Objects {
            inner: Arc::new(Shared {
                backend,
                support: OnceCell::new(),
                cleanups: Cleanups::default(),
                hot: HotObjects::default(),
                remote_ttl_ms: Default::default(),
            }),
        }
    }

    /// The store URL as given (passwords replaced by `***`).
    pub fn url(&self) -> &str {
        &self.inner.backend.cx.url
    }

    /// Whether the store refuses every write (plain HTTP caches).
    pub fn is_read_only(&self) -> bool {
        self.inner.backend.read_only
    }

    /// Whether every write of an object gives it a new entity tag, even a write of the same
    /// bytes within the same second (a local directory, memory); on S3 and GCS (and stores a
    /// caller built) such a rewrite can look unchanged to a HEAD.
    pub fn rewrites_change_tags(&self) -> bool {
        self.inner.backend.rewrites_change_tags
    }

    /// Whether the store is an `http(s)://` cache.
    pub(crate) fn is_http(&self) -> bool {
        self.inner.backend.cx.is_http()
    }

    /// The error for a write of `key` to this store when it is read-only
    /// ([`StoreError::NeedsToken`] for an HTTP cache without a token).
    pub(crate) fn read_only_error(&self, key: &str) -> StoreError {
        self.inner.backend.cx.read_only(key)
    }

    fn err(&self, op: Op, key: &str, e: object_store::Error) -> StoreError {
        convert(&self.inner.backend.cx, op, key, e)
    }

    /// `key` as an object_store path, if it is a well-formed key that (on a local directory)
    /// leads nowhere outside the directory.
    fn path(&self, key: &str) -> Result<Path, StoreError> {
        let path = self.key_path(key)?;
        if let Some(local) = &self.inner.backend.local {
            local.confine(key)?;
        }
        Ok(path)
    }

    /// `key` as an object_store path, if it is a well-formed key (not yet confined).
    fn key_path(&self, key: &str) -> Result<Path, StoreError> {
        // A key may come from a cache (a narinfo's URL): quoted by a short prefix only.
        let bad = |reason: String| StoreError::BadKey {
            url: self.inner.backend.cx.url.clone(),
            key: crate::untrusted::excerpt(key),
            reason: crate::untrusted::excerpt(&reason),
        };
        if key.is_empty() || key.starts_with('/') || key.ends_with('/') {
            return Err(bad(
                "keys are non-empty and have no leading or trailing /".to_owned()
            ));
        }
        Path::parse(key).map_err(|e| bad(e.to_string()))
    }

    fn writable(&self, key: &str) -> Result<Path, StoreError> {
        if self.inner.backend.read_only {
            return Err(self.inner.backend.cx.read_only(key));
        }
        self.path(key)
    }

    fn attributes(&self, key: &str, encoding: Option<Compression>) -> Attributes {
        let mut a = Attributes::new();
        if self.inner.backend.content_types {
            a.insert(Attribute::ContentType, layout::content_type(key).into());
        }
        if let Some(method) = encoding.filter(|m| *m != Compression::None) {
            a.insert(Attribute::ContentEncoding, method.name().into());
        }
        a
    }

    /// Streams the object at `key`, or the bytes `range` of it; `None` if there is none.
    ///
    /// The body is streamed from the backend as it arrives: a range of any size costs memory
    /// for one chunk at a time. A range that starts at or past the object's end is
    /// [`StoreError::RangeNotSatisfiable`]; an empty [`ReadRange::Bounded`] range reads
    /// nothing (one HEAD request for the metadata).
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// use bytes::Bytes;
    /// use cachecore::store::{BinaryCache, ReadRange, WriteMode};
    /// use futures::TryStreamExt;
    /// let cache = BinaryCache::open("memory://").unwrap();
    /// let objects = cache.objects();
    /// objects.put("log/a.drv", Bytes::from_static(b"hello world"), WriteMode::Overwrite).await.unwrap();
    /// let object = objects.get("log/a.drv", ReadRange::Last(5)).await.unwrap().unwrap();
    /// assert_eq!((object.range.clone(), object.meta.size), (6..11, 11));
    /// let body: Vec<Bytes> = object.body.try_collect().await.unwrap();
    /// assert_eq!(body.concat(), b"world");
    /// assert!(objects.get("log/b.drv", ReadRange::All).await.unwrap().is_none());
    /// # });
    /// ```
    pub async fn get(&self, key: &str, range: ReadRange) -> Result<Option<Object>, StoreError> {
        if let ReadRange::Bounded(r) = &range {
            if r.start >= r.end {
                return self.get_nothing(key, r.start).await;
            }
        }
        if let Some(local) = &self.inner.backend.local {
            self.key_path(key)?;
            return local.get(key, range, &self.inner.hot).await;
        }
        let path = self.path(key)?;
        match self.remote_ttl().filter(|_| range == ReadRange::All) {
            Some(ttl) => self.get_kept(key, &path, ttl).await,
            None => self.fetch(key, &path, range).await,
        }
    }

    /// An empty range of `key` (from `at`): nothing to read, the metadata from a HEAD.
    async fn get_nothing(&self, key: &str, at: u64) -> Result<Option<Object>, StoreError> {
        Ok(self.head(key).await?.map(|meta| Object {
            range: at.min(meta.size)..at.min(meta.size),
            meta,
            body: stream::empty().boxed(),
        }))
    }

    /// The whole object at `key` of a remote store that keeps small objects for `ttl`
    /// ([`set_remote_ttl`](Self::set_remote_ttl)): from memory if it is kept, else fetched and,
    /// if small, kept.
    async fn get_kept(
        &self,
        key: &str,
        path: &Path,
        ttl: std::time::Duration,
    ) -> Result<Option<Object>, StoreError> {
        let hot = &self.inner.hot;
        // Before the read: a write through the handle meanwhile keeps it from being kept.
        let read_since = hot.generation();
        if let Some((meta, bytes)) = hot.kept_for_now(key) {
            return Ok(Some(Object::whole(meta, bytes)));
        }
        match self.fetch(key, path, ReadRange::All).await? {
            Some(object) if object.meta.size <= hot::MAX_ENTRY => {
                hot.keep_for(object, ttl, read_since).await.map(Some)
            }
            other => Ok(other),
        }
    }

    /// A GET of a remote store (or one a caller built), its failure converted at the edge
    /// ([`convert_get`]), its body streamed.
    async fn fetch(
        &self,
        key: &str,
        path: &Path,
        range: ReadRange,
    ) -> Result<Option<Object>, StoreError> {
        let asked = range.to_get_range();
        let opts = GetOptions {
            range: asked.clone(),
            ..GetOptions::default()
        };
        let result = match self.inner.backend.store.get_opts(path, opts).await {
            Ok(r) => r,
            Err(e) => {
                return match convert_get(&self.inner.backend.cx, key, asked.as_ref(), e) {
                    GetFailure::Missing => Ok(None),
                    GetFailure::NoSuffixRanges(n) => self.get_last_by_offset(key, n).await,
                    GetFailure::Failed(e) => Err(e),
                }
            }
        };
        Ok(Some(self.object_of(key, result)))
    }

    /// The last `n` bytes of `key` on a store without suffix ranges (Azure): its size, then
    /// the bytes from an offset.
    async fn get_last_by_offset(&self, key: &str, n: u64) -> Result<Option<Object>, StoreError> {
        let Some(meta) = self.head(key).await? else {
            return Ok(None);
        };
        let from = meta.size.saturating_sub(n);
        Box::pin(self.get(key, ReadRange::Bounded(from..meta.size))).await
    }

    /// An object_store GET's answer as an [`Object`], its body's errors converted.
    fn object_of(&self, key: &str, result: object_store::GetResult) -> Object {
        let cx = self.inner.backend.cx.clone();
        let owned_key = key.to_owned();
        let range = result.range.clone();
        let mut meta = meta_of(result.meta.clone(), key.to_owned());
        meta.content_encoding = content_encoding(&result.attributes);
        let raw = match result.payload {
            // A file of a `LocalFileSystem` a caller built (our own directories are read by
            // `LocalDir`): read in large chunks (object_store's own stream reads 8 KiB at a
            // time, a system call and a tiny body frame per 8 KiB served).
            object_store::GetResultPayload::File(file, _) => file_chunks(file, range.clone()),
            object_store::GetResultPayload::Stream(s) => s,
        };
        let body = raw
            .map_err(move |e| convert(&cx, Op::Read, &owned_key, e))
            .boxed();
        Object { meta, range, body }
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

    /// The whole object at `key` in memory (for small objects: narinfos, listings, logs);
    /// `None` if there is none.
    ///
    /// An object stored with a `Content-Encoding` comes decoded ([`super::encoding`]).
    pub async fn get_bytes(&self, key: &str) -> Result<Option<Bytes>, StoreError> {
        if self.inner.backend.local.is_some() {
            return self.local_bytes(key, u64::MAX).await;
        }
        let path = self.path(key)?;
        let result = match self.inner.backend.store.get(&path).await {
            Ok(r) => r,
            Err(e) => return none_if_missing(self.err(Op::Read, key, e)),
        };
        let encoding = content_encoding(&result.attributes);
        let bytes = result
            .bytes()
            .await
            .map_err(|e| self.err(Op::Read, key, e))?;
        self.decoded(key, encoding, bytes, u64::MAX).map(Some)
    }

    /// `bytes` of `key` decoded by the `Content-Encoding` it was stored with, if any, refused
    /// past `limit` bytes decoded.
    fn decoded(
        &self,
        key: &str,
        encoding: Option<String>,
        bytes: Bytes,
        limit: u64,
    ) -> Result<Bytes, StoreError> {
        match encoding {
            Some(e) => super::encoding::decode(&self.inner.backend.cx.url, key, &e, bytes, limit),
            None => Ok(bytes),
        }
    }

    /// The whole object at `key` in memory, refusing one larger than `limit` bytes with
    /// [`StoreError::TooLarge`] without reading it whole (the size the store declares is checked
    /// first, then the bytes as they arrive, so a server lying about the size is cut off too);
    /// `None` if there is none. Untrusted metadata (narinfos, listings, realisations,
    /// `nix-cache-info`) is read through here. An object stored with a `Content-Encoding`
    /// comes decoded, and is refused if it expands past `limit` ([`super::encoding`]).
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// use bytes::Bytes;
    /// use cachecore::{error::ErrorKind, store::{BinaryCache, WriteMode}};
    /// let cache = BinaryCache::open("memory://").unwrap();
    /// let objects = cache.objects();
    /// objects.put("big.ls", Bytes::from(vec![b' '; 4096]), WriteMode::Overwrite).await.unwrap();
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
        if self.inner.backend.local.is_some() {
            return self.local_bytes(key, limit).await;
        }
        let path = self.path(key)?;
        let result = match self.inner.backend.store.get(&path).await {
            Ok(r) => r,
            Err(e) => return none_if_missing(self.err(Op::Read, key, e)),
        };
        let size = result.meta.size;
        let encoding = content_encoding(&result.attributes);
        let cx = self.inner.backend.cx.clone();
        let owned_key = key.to_owned();
        let body = result
            .into_stream()
            .map_err(move |e| convert(&cx, Op::Read, &owned_key, e));
        let bytes = self.collect_limited(key, size, body, limit).await?;
        self.decoded(key, encoding, bytes, limit).map(Some)
    }

    /// [`get_bytes_limited`](Self::get_bytes_limited) on a local directory: through
    /// [`get`](Self::get), which opens files without blocking and refuses what is not a regular
    /// file, and answers kept objects from memory.
    async fn local_bytes(&self, key: &str, limit: u64) -> Result<Option<Bytes>, StoreError> {
        let Some(object) = self.get(key, ReadRange::All).await? else {
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
            url: self.inner.backend.cx.url.clone(),
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
        self.inner.backend.local.as_ref().map(|local| local.root())
    }

    /// Makes the object at `key` durable before anything that names it is written: on a local
    /// directory, `fsync`s the file and the directories from it up to the root (a rename or a
    /// new file is durable only once its directory is); elsewhere a no-op (S3, GCS and Azure
    /// acknowledge a write only once it is stored).
    pub async fn sync(&self, key: &str) -> Result<(), StoreError> {
        let Some(local) = &self.inner.backend.local else {
            return Ok(());
        };
        self.path(key)?;
        local.sync(key).await
    }

    /// The metadata of the object at `key`, or `None` if there is none.
    ///
    /// A HEAD response has no body, so on S3 a missing *bucket* also reads as `None` here; the
    /// first GET or PUT reports [`StoreError::NoSuchBucket`].
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// use bytes::Bytes;
    /// use cachecore::store::{BinaryCache, WriteMode};
    /// let cache = BinaryCache::open("memory://").unwrap();
    /// let objects = cache.objects();
    /// let written = objects.put("nix-cache-info", Bytes::from_static(b"StoreDir: /nix/store\n"),
    ///     WriteMode::Overwrite).await.unwrap();
    /// let meta = objects.head("nix-cache-info").await.unwrap().unwrap();
    /// assert_eq!((meta.key.as_str(), meta.size), ("nix-cache-info", 21));
    /// assert_eq!(meta.version_tag(), written.version);
    /// assert_eq!(objects.head("missing").await.unwrap(), None);
    /// # });
    /// ```
    pub async fn head(&self, key: &str) -> Result<Option<ObjectInfo>, StoreError> {
        if let Some(local) = &self.inner.backend.local {
            self.key_path(key)?;
            return local.head(key).await;
        }
        let path = self.path(key)?;
        // What a GET would answer from memory, a HEAD answers too (the same ETag).
        if self.remote_ttl().is_some() {
            if let Some((meta, _)) = self.inner.hot.kept_for_now(key) {
                return Ok(Some(meta));
            }
        }
        match self.inner.backend.store.head(&path).await {
            Ok(meta) => Ok(Some(meta_of(meta, key.to_owned()))),
            Err(e) => none_if_missing(self.err(Op::Stat, key, e)),
        }
    }

    /// Whether the store can be listed (plain HTTP caches cannot).
    pub fn is_listable(&self) -> bool {
        !matches!(self.inner.backend.listing, Listing::Unsupported)
    }

    fn unlistable(&self, what: &str) -> Option<StoreError> {
        (!self.is_listable()).then(|| StoreError::Unsupported {
            url: self.inner.backend.cx.url.clone(),
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
    /// use cachecore::store::{BinaryCache, ObjectInfo, WriteMode};
    /// use futures::TryStreamExt;
    /// let cache = BinaryCache::open("memory://").unwrap();
    /// let objects = cache.objects();
    /// for key in ["nar/a.nar", "nar/b.nar", "a.narinfo"] {
    ///     objects.put(key, Bytes::from_static(b"x"), WriteMode::Overwrite).await.unwrap();
    /// }
    /// let listed: Vec<ObjectInfo> = objects.list("nar").try_collect().await.unwrap();
    /// let mut keys: Vec<String> = listed.into_iter().map(|m| m.key).collect();
    /// keys.sort(); // in no particular order
    /// assert_eq!(keys, ["nar/a.nar", "nar/b.nar"]);
    /// # });
    /// ```
    pub fn list(&self, prefix: &str) -> BoxStream<'static, Result<ObjectInfo, StoreError>> {
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
            .backend
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

    /// Every object of the store, as [`list("")`](Self::list) lists them (in no particular
    /// order), listed by up to `concurrency` requests at a time on stores listed a page at a
    /// time (S3, GCS, Azure): after a first page (a store of up to 1,000 objects is one
    /// request), the rest of the key space is split into ranges at the first character of
    /// narinfo and listing keys and the first two of NAR names, each listed from just after its lower boundary (`start-after`)
    /// until a key passes its upper one. A local directory and memory are walked as `list`
    /// walks them.
    pub fn list_all(
        &self,
        concurrency: usize,
    ) -> BoxStream<'static, Result<ObjectInfo, StoreError>> {
        let Listing::Paginated(lister) = &self.inner.backend.listing else {
            return self.list("");
        };
        let (store, prefix) = (Arc::clone(&lister.store), lister.prefix.clone());
        let this = self.clone();
        let first = {
            let (this, store, prefix) = (this.clone(), Arc::clone(&store), prefix.clone());
            async move {
                let page = list_page(&this, &*store, &prefix, None, None, None).await?;
                Ok::<_, StoreError>(page)
            }
        };
        stream::once(first)
            .map_ok(move |(objects, next, last)| {
                let head = stream::iter(objects.into_iter().map(Ok));
                if next.is_none() {
                    return head.boxed();
                }
                // The rest: from after the last key of the first page (from the start if it
                // listed none), range by range.
                let bounds: Vec<String> = layout::listing_boundaries()
                    .into_iter()
                    .map(|b| format!("{prefix}{b}"))
                    .filter(|b| last.as_ref().is_none_or(|l| b > l))
                    .collect();
                let lowers: Vec<Option<String>> = std::iter::once(last)
                    .chain(bounds.iter().cloned().map(Some))
                    .collect();
                let uppers = bounds.into_iter().map(Some).chain(std::iter::once(None));
                let (this, store, prefix) = (this.clone(), Arc::clone(&store), prefix.clone());
                let ranges = lowers.into_iter().zip(uppers).map(move |(after, upto)| {
                    list_range(
                        this.clone(),
                        Arc::clone(&store),
                        prefix.clone(),
                        after,
                        upto,
                    )
                });
                head.chain(stream::iter(ranges).flatten_unordered(concurrency.max(1)))
                    .boxed()
            })
            .try_flatten()
            .boxed()
    }

    /// The objects directly in the directory `prefix` (`""` for the root), not recursing into
    /// subdirectories, streamed a page (about 1000 keys) at a time on S3, GCS and Azure; other
    /// backends read the directory in one go (about 100 bytes of memory per object in it).
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// use bytes::Bytes;
    /// use cachecore::store::{BinaryCache, ObjectInfo, WriteMode};
    /// use futures::TryStreamExt;
    /// let cache = BinaryCache::open("memory://").unwrap();
    /// let objects = cache.objects();
    /// for key in ["nar/a.nar", "a.narinfo"] {
    ///     objects.put(key, Bytes::from_static(b"x"), WriteMode::Overwrite).await.unwrap();
    /// }
    /// let root: Vec<ObjectInfo> = objects.list_dir("").try_collect().await.unwrap();
    /// assert_eq!(root.len(), 1);
    /// assert_eq!(root[0].key, "a.narinfo"); // `nar/a.nar` is in a subdirectory
    /// # });
    /// ```
    pub fn list_dir(&self, prefix: &str) -> BoxStream<'_, Result<ObjectInfo, StoreError>> {
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
        if let Listing::Paginated(lister) = &self.inner.backend.listing {
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
                    let metas: Vec<Result<ObjectInfo, StoreError>> = page
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
                    .backend
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
        if self.inner.backend.read_only {
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
        let store = &self.inner.backend.store;
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
    async fn check_mode(&self, key: &str, mode: &WriteMode) -> Result<(), StoreError> {
        let (needed, what) = match mode {
            WriteMode::Overwrite => return Ok(()),
            WriteMode::Create => (
                self.write_support().await?.create_only,
                "create-only writes",
            ),
            WriteMode::IfUnchanged(_) => (
                self.write_support().await?.if_unchanged,
                "replace-if-unchanged writes",
            ),
        };
        if needed {
            Ok(())
        } else {
            Err(StoreError::Unsupported {
                url: self.inner.backend.cx.url.clone(),
                operation: format!("write {key} with {what}"),
                reason: format!("the store does not honour {what} (probed)"),
            })
        }
    }

    /// Whether objects keep a `Content-Encoding` here (everything but a local directory, whose
    /// files Nix reads raw).
    pub fn keeps_encodings(&self) -> bool {
        self.inner.backend.local.is_none()
    }

    /// [`put`](Self::put) of `data` compressed with `method` and stored with
    /// `Content-Encoding: <method>` ([`super::encoding`]): for narinfos, listings and logs.
    /// [`Compression::None`] is a plain `put`. Refused with [`StoreError::Unsupported`] where
    /// objects keep no encoding ([`keeps_encodings`](Self::keeps_encodings)).
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// use bytes::Bytes;
    /// use cachecore::{compression::Compression, store::{BinaryCache, ReadRange, WriteMode}};
    /// let cache = BinaryCache::open("memory://").unwrap();
    /// let objects = cache.objects();
    /// let text = Bytes::from("hello ".repeat(100));
    /// let written = objects.put_encoded("log/a.drv", text.clone(), WriteMode::Overwrite, Compression::Zstd)
    ///     .await.unwrap();
    /// assert!(written.size < 100);
    /// let raw = objects.get("log/a.drv", ReadRange::All).await.unwrap().unwrap();
    /// assert_eq!(raw.meta.content_encoding.as_deref(), Some("zstd"));
    /// assert_eq!(objects.get_bytes("log/a.drv").await.unwrap().unwrap(), text); // decoded
    /// # });
    /// ```
    pub async fn put_encoded(
        &self,
        key: &str,
        data: Bytes,
        mode: WriteMode,
        method: Compression,
    ) -> Result<Written, StoreError> {
        if method == Compression::None {
            return self.put(key, data, mode).await;
        }
        let path = self.writable(key)?;
        self.check_encoding(key, method)?;
        self.check_mode(key, &mode).await?;
        let encoded =
            super::encoding::encode(method, &data).map_err(|source| StoreError::Source {
                url: self.inner.backend.cx.url.clone(),
                key: key.to_owned(),
                source,
            })?;
        let size = encoded.len() as u64;
        let payload = PutPayload::from_bytes(encoded);
        self.put_payload(key, &path, payload, &mode, Some(method))
            .await
            .map(|version| Written { size, version })
    }

    fn check_encoding(&self, key: &str, method: Compression) -> Result<(), StoreError> {
        if self.keeps_encodings() {
            return Ok(());
        }
        Err(StoreError::Unsupported {
            url: self.inner.backend.cx.url.clone(),
            operation: format!("write {key} with Content-Encoding {method}"),
            reason: "a local directory keeps no Content-Encoding (Nix reads its files raw)"
                .to_owned(),
        })
    }

    /// [`put_stream`](Self::put_stream) of `data` compressed as it streams with `method` and
    /// stored with `Content-Encoding: <method>`, as [`put_encoded`](Self::put_encoded) (for
    /// build logs).
    pub async fn put_stream_encoded(
        &self,
        key: &str,
        data: impl Stream<Item = Result<Bytes, io::Error>> + Send,
        mode: WriteMode,
        method: Compression,
    ) -> Result<Written, StoreError> {
        if method == Compression::None {
            return self.put_stream(key, data, mode).await;
        }
        self.check_encoding(key, method)?;
        let encoded = super::encoding::encode_stream(method, data);
        let written = self.stream_in(key, encoded, mode, Some(method)).await;
        self.inner.hot.remove(key);
        written
    }

    fn put_options(
        &self,
        key: &str,
        mode: &WriteMode,
        encoding: Option<Compression>,
    ) -> PutOptions {
        PutOptions {
            mode: match mode {
                WriteMode::Overwrite => object_store::PutMode::Overwrite,
                WriteMode::Create => object_store::PutMode::Create,
                WriteMode::IfUnchanged(v) => object_store::PutMode::Update(UpdateVersion {
                    e_tag: v.e_tag.clone(),
                    version: v.version.clone(),
                }),
            },
            attributes: self.attributes(key, encoding),
            ..PutOptions::default()
        }
    }

    /// Writes an object in one request. With [`WriteMode::Create`] or
    /// [`WriteMode::IfUnchanged`] on a store that does not honour it (see
    /// [`write_support`](Self::write_support)): [`StoreError::Unsupported`], nothing written.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// use bytes::Bytes;
    /// use cachecore::{error::ErrorKind, store::{BinaryCache, WriteMode}};
    /// let cache = BinaryCache::open("memory://").unwrap();
    /// let objects = cache.objects();
    /// let first = objects.put("index/main", Bytes::from_static(b"1"), WriteMode::Create).await.unwrap();
    /// // Compare-and-swap: replace it only if no one else did in between.
    /// let swap = WriteMode::IfUnchanged(first.version.clone());
    /// objects.put("index/main", Bytes::from_static(b"2"), swap).await.unwrap();
    /// let stale = WriteMode::IfUnchanged(first.version);
    /// let e = objects.put("index/main", Bytes::from_static(b"3"), stale).await.unwrap_err();
    /// assert_eq!(e.kind(), ErrorKind::Conflict);
    /// assert_eq!(objects.get_bytes("index/main").await.unwrap().unwrap(), &b"2"[..]);
    /// # });
    /// ```
    pub async fn put(
        &self,
        key: &str,
        data: Bytes,
        mode: WriteMode,
    ) -> Result<Written, StoreError> {
        let path = self.writable(key)?;
        self.check_mode(key, &mode).await?;
        let size = data.len() as u64;
        self.put_payload(key, &path, PutPayload::from_bytes(data), &mode, None)
            .await
            .map(|version| Written { size, version })
    }

    async fn put_payload(
        &self,
        key: &str,
        path: &Path,
        payload: PutPayload,
        mode: &WriteMode,
        encoding: Option<Compression>,
    ) -> Result<VersionTag, StoreError> {
        let opts = self.put_options(key, mode, encoding);
        let result = self.inner.backend.store.put_opts(path, payload, opts).await;
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
    /// use cachecore::store::{BinaryCache, WriteMode};
    /// let cache = BinaryCache::open("memory://").unwrap();
    /// let objects = cache.objects();
    /// let chunks = (0..4).map(|_| Ok::<_, std::io::Error>(Bytes::from(vec![b'x'; 1000])));
    /// let written = objects.put_stream("nar/x.nar", futures::stream::iter(chunks), WriteMode::Overwrite)
    ///     .await.unwrap();
    /// assert_eq!(written.size, 4000);
    /// // A stream that fails leaves nothing behind.
    /// let broken = futures::stream::iter([Err(std::io::Error::other("disk gone"))]);
    /// assert!(objects.put_stream("nar/y.nar", broken, WriteMode::Overwrite).await.is_err());
    /// assert!(objects.head("nar/y.nar").await.unwrap().is_none());
    /// # });
    /// ```
    pub async fn put_stream(
        &self,
        key: &str,
        data: impl Stream<Item = Result<Bytes, io::Error>> + Send,
        mode: WriteMode,
    ) -> Result<Written, StoreError> {
        let written = self.stream_in(key, data, mode, None).await;
        // Read while the upload was under way, the old bytes must not stay.
        self.inner.hot.remove(key);
        written
    }

    async fn stream_in(
        &self,
        key: &str,
        data: impl Stream<Item = Result<Bytes, io::Error>> + Send,
        mode: WriteMode,
        encoding: Option<Compression>,
    ) -> Result<Written, StoreError> {
        let path = self.writable(key)?;
        self.check_mode(key, &mode).await?;
        // A large object is never kept, but the small one it replaces may have been: forgotten
        // now, and again once written (`put_stream`).
        self.inner.hot.remove(key);
        let source_err = |source: io::Error| StoreError::Source {
            url: self.inner.backend.cx.url.clone(),
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
                    let version = self
                        .put_payload(key, &path, payload, &mode, encoding)
                        .await?;
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
            WriteMode::Overwrite => None,
            WriteMode::Create => Some(layout::staging(key, &unique_suffix())),
            WriteMode::IfUnchanged(_) => {
                return Err(StoreError::Unsupported {
                    url: self.inner.backend.cx.url.clone(),
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
        let opts = PutMultipartOptions::from(self.attributes(key, encoding));
        let upload = self
            .inner
            .backend
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
            .backend
            .store
            .copy_if_not_exists(&upload_path, &path)
            .await;
        let _ = self.inner.backend.store.delete(&upload_path).await;
        match copied {
            Ok(()) => Ok(Written {
                size: total,
                version: VersionTag::default(),
            }),
            Err(
                object_store::Error::NotImplemented { .. } | object_store::Error::NotSupported { .. },
            ) => Err(StoreError::Unsupported {
                url: self.inner.backend.cx.url.clone(),
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
        let Some(p) = &self.inner.backend.presigner else {
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
    /// use cachecore::store::{BinaryCache, WriteMode};
    /// let cache = BinaryCache::open("memory://").unwrap();
    /// let objects = cache.objects();
    /// objects.put("tmp/upload-1", Bytes::from_static(b"data"), WriteMode::Overwrite).await.unwrap();
    /// objects.rename("tmp/upload-1", "nar/final.nar").await.unwrap();
    /// assert!(objects.head("tmp/upload-1").await.unwrap().is_none());
    /// assert_eq!(objects.get_bytes("nar/final.nar").await.unwrap().unwrap(), &b"data"[..]);
    /// # });
    /// ```
    pub async fn rename(&self, from: &str, to: &str) -> Result<(), StoreError> {
        let from_path = self.writable(from)?;
        let to_path = self.writable(to)?;
        let result = self.inner.backend.store.rename(&from_path, &to_path).await;
        self.inner.hot.remove(from);
        self.inner.hot.remove(to);
        result.map_err(|e| self.err(Op::Rename, from, e))
    }

    /// Deletes the object at `key`; deleting a missing object is not an error.
    pub async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let path = self.writable(key)?;
        let result = self.inner.backend.store.delete(&path).await;
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
    use crate::store::hot::Validity;
    use crate::store::BinaryCache;

    /// A listing as S3 gives it, over an in-memory store: keys in byte order, `max` a page,
    /// `start-after` and page tokens (the last key of a page); counts its requests.
    #[derive(Debug)]
    struct Paged {
        inner: Arc<object_store::memory::InMemory>,
        max: usize,
        requests: std::sync::atomic::AtomicUsize,
    }

    #[async_trait::async_trait]
    impl object_store::list::PaginatedListStore for Paged {
        async fn list_paginated(
            &self,
            prefix: Option<&str>,
            opts: PaginatedListOptions,
        ) -> object_store::Result<object_store::list::PaginatedListResult> {
            self.requests
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let mut all: Vec<object_store::ObjectMeta> =
                self.inner.list(None).try_collect().await?;
            let after = opts.page_token.or(opts.offset);
            all.retain(|m| {
                let k = m.location.as_ref();
                prefix.is_none_or(|p| k.starts_with(p)) && after.as_deref().is_none_or(|a| k > a)
            });
            all.sort_by(|a, b| a.location.as_ref().cmp(b.location.as_ref()));
            let rest = all.split_off(all.len().min(self.max));
            let page_token = all
                .last()
                .filter(|_| !rest.is_empty())
                .map(|m| m.location.as_ref().to_owned());
            Ok(object_store::list::PaginatedListResult {
                result: object_store::ListResult {
                    common_prefixes: Vec::new(),
                    objects: all,
                    extensions: Default::default(),
                },
                page_token,
            })
        }
    }

    /// `list_all` lists exactly what `list("")` lists, range by range side by side, whatever
    /// the keys: on range boundaries, before and after every boundary, outside the layout, and
    /// under a prefix in the bucket beside keys outside it.
    #[tokio::test]
    async fn listing_in_ranges_side_by_side_lists_exactly_what_one_listing_lists() {
        use crate::nixbase32::ALPHABET;
        let inner = Arc::new(object_store::memory::InMemory::new());
        let mut keys: Vec<String> = [
            ".cachecore/gc/1-a",
            "0",
            "0.narinfo",
            "1",
            "A-upper",
            "e",
            "log/x.drv",
            "n",
            "na.narinfo",
            "nar/0",
            "nar/00",
            "nar/00x.nar",
            "nar/0z",
            "nar/1",
            "nar/1z",
            "nar/1zz.nar",
            "nar/2x.nar",
            "nar/x.frames",
            "nix-cache-info",
            "realisations/a.doi",
            "z",
            "zz.narinfo",
            "index/1-2",
            "gcroots/h/n",
        ]
        .map(str::to_owned)
        .to_vec();
        let mut seed = 7u64;
        for i in 0..400 {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            let nix32: String = (0..32)
                .map(|j| char::from(ALPHABET[((seed >> (j % 12 * 5)) as usize + j) % 32]))
                .collect();
            keys.push(format!("{nix32}.narinfo"));
            keys.push(format!("nar/{}{nix32}{}.nar.zst", i % 2, &nix32[..19]));
        }
        for prefix in ["", "team/b/"] {
            for k in &keys {
                let key = Path::from(format!("{prefix}{k}"));
                inner
                    .put(&key, PutPayload::from_static(b"x"))
                    .await
                    .unwrap();
            }
        }
        inner
            .put(&Path::from("team/bb"), PutPayload::from_static(b"x"))
            .await
            .unwrap();
        for prefix in ["", "team/b/"] {
            let paged = Arc::new(Paged {
                inner: Arc::clone(&inner),
                max: 7,
                requests: Default::default(),
            });
            let store: Arc<dyn ObjectStore> = if prefix.is_empty() {
                Arc::clone(&inner) as Arc<dyn ObjectStore>
            } else {
                Arc::new(object_store::prefix::PrefixStore::new(
                    Arc::clone(&inner),
                    prefix.trim_end_matches('/'),
                ))
            };
            let mut backend = super::super::backend::custom(store, "paged://", false);
            backend.listing = Listing::Paginated(super::super::backend::Lister {
                store: Arc::clone(&paged) as Arc<dyn object_store::list::PaginatedListStore>,
                prefix: prefix.to_owned(),
            });
            let objects = Objects::new(backend);
            let key_of = |m: ObjectInfo| (m.key, m.size, m.e_tag);
            let mut serial: Vec<_> = objects.list("").map_ok(key_of).try_collect().await.unwrap();
            let mut ranged: Vec<_> = objects
                .list_all(4)
                .map_ok(key_of)
                .try_collect()
                .await
                .unwrap();
            serial.sort();
            ranged.sort();
            let mut expected: Vec<String> = if prefix.is_empty() {
                // The whole bucket: the tree under `team/b/` and `team/bb` too.
                let mut all = keys.clone();
                all.extend(keys.iter().map(|k| format!("team/b/{k}")));
                all.push("team/bb".to_owned());
                all
            } else {
                keys.clone()
            };
            expected.sort();
            let listed: Vec<&String> = ranged.iter().map(|(k, _, _)| k).collect();
            assert_eq!(listed, expected.iter().collect::<Vec<_>>(), "{prefix:?}");
            assert_eq!(ranged, serial, "{prefix:?}");
            // Ranges: more requests than one listing of 7 keys a page would make.
            let requests = paged.requests.load(std::sync::atomic::Ordering::Relaxed);
            assert!(requests > keys.len().div_ceil(7), "{requests}");
        }
        // A store of one page is one request.
        let small = Arc::new(object_store::memory::InMemory::new());
        small
            .put(&Path::from("a.narinfo"), PutPayload::from_static(b"x"))
            .await
            .unwrap();
        let paged = Arc::new(Paged {
            inner: Arc::clone(&small),
            max: 7,
            requests: Default::default(),
        });
        let mut backend = super::super::backend::custom(small, "paged://", false);
        backend.listing = Listing::Paginated(super::super::backend::Lister {
            store: Arc::clone(&paged) as Arc<dyn object_store::list::PaginatedListStore>,
            prefix: String::new(),
        });
        let listed: Vec<ObjectInfo> = Objects::new(backend)
            .list_all(4)
            .try_collect()
            .await
            .unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(paged.requests.load(std::sync::atomic::Ordering::Relaxed), 1);
    }

    async fn read(o: &Objects, key: &str) -> Option<Vec<u8>> {
        let object = o.get(key, ReadRange::All).await.ok()??;
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
        o.put(key, Bytes::from_static(b"first"), WriteMode::Overwrite)
            .await
            .unwrap();
        // The clock settling is measured by, set to some time after the file's last change
        // (the reads run on this thread).
        let clock_at = |after: std::time::Duration| {
            use std::os::unix::fs::MetadataExt as _;
            let m = std::fs::metadata(&file).unwrap();
            let changed = std::time::UNIX_EPOCH
                + std::time::Duration::new(m.ctime() as u64, m.ctime_nsec() as u32);
            super::hot::TEST_NOW.with(|now| now.set(Some(changed + after)));
        };
        // Just written: not kept until it has settled (long enough even where file times are
        // whole seconds).
        clock_at(std::time::Duration::ZERO);
        assert_eq!(read(o, key).await.as_deref(), Some(&b"first"[..]));
        assert!(!kept(o, key));
        let settle = || async { clock_at(std::time::Duration::from_secs(3)) };
        settle().await;
        assert_eq!(read(o, key).await.as_deref(), Some(&b"first"[..]));
        assert!(kept(o, key));
        assert_eq!(read(o, key).await.as_deref(), Some(&b"first"[..]));

        std::fs::write(&file, b"secnd").unwrap();
        clock_at(std::time::Duration::ZERO);
        assert_eq!(read(o, key).await.as_deref(), Some(&b"secnd"[..]));
        assert!(!kept(o, key));
        settle().await;
        assert_eq!(read(o, key).await.as_deref(), Some(&b"secnd"[..]));
        assert!(kept(o, key));

        std::fs::write(root.join("new"), b"third").unwrap();
        std::fs::rename(root.join("new"), &file).unwrap();
        clock_at(std::time::Duration::ZERO);
        assert_eq!(read(o, key).await.as_deref(), Some(&b"third"[..]));
        assert!(!kept(o, key));
        settle().await;
        assert_eq!(read(o, key).await.as_deref(), Some(&b"third"[..]));
        assert!(kept(o, key));

        let outside = dir.path().join("outside");
        std::fs::write(&outside, b"third").unwrap();
        std::fs::remove_file(&file).unwrap();
        std::os::unix::fs::symlink(&outside, &file).unwrap();
        assert!(o.get(key, ReadRange::All).await.is_err());
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
                        text(o.get(key, ReadRange::All).await.map(|o| o.map(drop))),
                        text(
                            o.get(key, ReadRange::Bounded(1..2))
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
        o.put(
            "a.narinfo",
            Bytes::from_static(b"one"),
            WriteMode::Overwrite,
        )
        .await
        .unwrap();
        assert_eq!(read(o, "a.narinfo").await.as_deref(), Some(&b"one"[..]));
        assert!(kept(o, "a.narinfo"));
        o.put(
            "a.narinfo",
            Bytes::from_static(b"two"),
            WriteMode::Overwrite,
        )
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
        o.put("nar/big", big.clone(), WriteMode::Overwrite)
            .await
            .unwrap();
        assert_eq!(read(o, "nar/big").await.unwrap(), big);
        assert!(!kept(o, "nar/big"));
    }
}
