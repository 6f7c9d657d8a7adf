//! A blocking client: the async core behind plain function calls, for Python bindings, a FUSE
//! mount and Rust programs that are not async. The async API ([`crate::store`], [`crate::ops`],
//! [`crate::access`]) stays the primary one; everything here is a thin call into it.
//!
//! The tokio runtime is created on first use and shared by every handle in the process.
//!
//! # After `fork`
//!
//! A forked child has only the thread that called `fork`: the runtime's worker threads, and the
//! tasks that drive pooled HTTP connections, stayed in the parent. Every call here checks the
//! process id; in a child it builds a new runtime (the parent's is abandoned, never dropped,
//! since dropping it would wait for threads that do not exist there) and re-opens the store
//! from its URL (new connections, none shared with the parent). A [`File`] or [`Nar`] opened
//! before the fork is re-opened the same way. Calls from one process may come from any number of
//! threads at once. Do not call these functions from inside an async runtime: use the async
//! API there.
//!
//! A `memory://` store is not re-opened (that would give an empty store); the child keeps
//! using the parent's copy of it.
//!
//! ```
//! use std::io::Read as _;
//! use std::sync::Arc;
//! use cachecore::blocking::BinaryCache;
//! use cachecore::ops::{NoProgress, PushOptions};
//! use cachecore::store_path::StoreDir;
//!
//! let src = tempfile::tempdir().unwrap();
//! std::fs::create_dir(src.path().join("bin")).unwrap();
//! std::fs::write(src.path().join("bin/hello"), "hello, world\n").unwrap();
//! let dir = tempfile::tempdir().unwrap();
//! let cache = BinaryCache::open(dir.path().to_str().unwrap()).unwrap();
//!
//! let (path, _) = cache
//!     .push_add(&StoreDir::default(), src.path(), "hello", &PushOptions::default(),
//!         Arc::new(NoProgress))
//!     .unwrap();
//! assert_eq!(cache.cache_info().unwrap().unwrap().store_dir, "/nix/store");
//! let info = cache.narinfo(&path).unwrap().unwrap();
//! assert!(cache.listing(&path).unwrap().get("bin/hello").is_some());
//!
//! // One file, by ranged reads; `File` is `Read + Seek`.
//! let mut file = cache.open_file(&path, "bin/hello").unwrap();
//! assert_eq!(file.read_at(7..12).unwrap(), &b"world"[..]);
//! let mut text = String::new();
//! file.read_to_string(&mut text).unwrap();
//! assert_eq!(text, "hello, world\n");
//!
//! // The whole NAR as a `Read`, checked against the narinfo as it ends.
//! let mut nar = Vec::new();
//! cache.nar_reader(&path).unwrap().read_to_end(&mut nar).unwrap();
//! assert_eq!(nar.len() as u64, info.nar_size);
//! assert!(cache.verify(&[path], &Default::default()).unwrap().is_ok());
//! ```

use std::future::Future;
use std::io::{self, Read, Seek, SeekFrom};
use std::ops::Range;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use tokio::runtime::Runtime;

use crate::access::{AccessError, NarAccess};
use crate::cache_info::CacheInfo;
use crate::local_store::LocalStore;
use crate::nar::Listing;
use crate::narinfo::NarInfo;
use crate::ops::{
    self, CopyOptions, CopySummary, NarFile, OpError, Progress, PullOptions, PushOptions,
    PushSummary, VerifyOptions, VerifyReport,
};
use crate::store::{self, StoreError};
use crate::store_path::{StoreDir, StorePath};

/// Why a blocking call failed: the async call's own error, or no runtime to run it on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Op(#[from] OpError),
    #[error(transparent)]
    Access(#[from] AccessError),
    /// The async runtime could not be started (the process cannot create threads).
    #[error("cannot start the async runtime: {0}")]
    Runtime(#[source] io::Error),
}

impl Error {
    /// What kind of failure this is: the async call's own kind; no runtime is
    /// [`Local`](crate::error::ErrorKind::Local).
    ///
    /// ```
    /// use cachecore::{blocking::BinaryCache, error::ErrorKind};
    /// let e = BinaryCache::open("ssh://builder").unwrap_err();
    /// assert_eq!(e.kind(), ErrorKind::InvalidInput);
    /// ```
    pub fn kind(&self) -> crate::error::ErrorKind {
        match self {
            Error::Store(e) => e.kind(),
            Error::Op(e) => e.kind(),
            Error::Access(e) => e.kind(),
            Error::Runtime(_) => crate::error::ErrorKind::Local,
        }
    }
}

impl From<Error> for io::Error {
    fn from(e: Error) -> io::Error {
        let kind = match &e {
            Error::Runtime(e) => e.kind(),
            _ => io::ErrorKind::Other,
        };
        io::Error::new(kind, e)
    }
}

/// The process's runtime, and the process it was built in.
static RUNTIME: Mutex<Option<(u32, Arc<Runtime>)>> = Mutex::new(None);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves its value whole (a pid and a handle).
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The runtime for blocking calls in this process: built on first use, and again in a forked
/// child (see the [module docs](self)).
///
/// ```
/// let rt = cachecore::blocking::runtime().unwrap();
/// assert_eq!(rt.block_on(async { 1 + 1 }), 2);
/// // One runtime per process, shared by every call.
/// assert!(std::sync::Arc::ptr_eq(&rt, &cachecore::blocking::runtime().unwrap()));
/// ```
pub fn runtime() -> Result<Arc<Runtime>, Error> {
    let pid = std::process::id();
    let mut slot = lock(&RUNTIME);
    if let Some((owner, rt)) = slot.as_ref() {
        if *owner == pid {
            return Ok(rt.clone());
        }
    }
    let rt = Arc::new(
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(std::thread::available_parallelism().map_or(2, |n| n.get().min(4)))
            .thread_name("cachecore-blocking")
            .enable_all()
            .build()
            .map_err(Error::Runtime)?,
    );
    if let Some((_, inherited)) = slot.replace((pid, rt.clone())) {
        // The parent's runtime: its threads are not in this process, and dropping it would wait
        // for them. Abandon it.
        std::mem::forget(inherited);
    }
    Ok(rt)
}

/// Runs `future` to completion on the process's runtime.
///
/// ```
/// use cachecore::{blocking, store::BinaryCache};
/// let cache = BinaryCache::open("memory://").unwrap();
/// // Any async call whose error converts into `blocking::Error`.
/// let info = blocking::block_on(async { cache.cache_info().await }).unwrap();
/// assert_eq!(info, None);
/// ```
pub fn block_on<T, E>(future: impl Future<Output = Result<T, E>>) -> Result<T, Error>
where
    Error: From<E>,
{
    Ok(runtime()?.block_on(future)?)
}

/// A binary cache, with blocking methods. Cheap to clone; usable from many threads and, after
/// `fork`, from the child (see the [module docs](self)).
#[derive(Clone, Debug)]
pub struct BinaryCache {
    inner: Arc<CacheInner>,
}

#[derive(Debug)]
struct CacheInner {
    /// How to open the store again in a forked child; `None` to keep the handle (memory).
    reopen: Option<(String, Vec<(String, String)>)>,
    current: Mutex<(u32, store::BinaryCache)>,
}

impl BinaryCache {
    /// Opens the store at `url` (see [`store::BinaryCache::open`]).
    ///
    /// ```
    /// use cachecore::{blocking::BinaryCache, cache_info::CacheInfo};
    /// // No async runtime needed: one is started on first use.
    /// let cache = BinaryCache::open("memory://").unwrap();
    /// assert_eq!(cache.cache_info().unwrap(), None);
    /// cache.init(&CacheInfo::default()).unwrap();
    /// assert_eq!(cache.cache_info().unwrap().unwrap().store_dir, "/nix/store");
    /// assert_eq!(cache.list_paths().unwrap(), Vec::<String>::new());
    /// ```
    pub fn open(url: &str) -> Result<BinaryCache, Error> {
        Self::open_with_env(url, &store::process_env())
    }

    /// Opens the store at `url` with configuration from `env` (see
    /// [`store::BinaryCache::open_with_env`]).
    ///
    /// ```
    /// use cachecore::{blocking::BinaryCache, cache_info::CacheInfo};
    /// let dir = tempfile::tempdir().unwrap();
    /// // Settings come from `env`, not from the process environment (a directory needs none).
    /// let cache = BinaryCache::open_with_env(dir.path().to_str().unwrap(), &[]).unwrap();
    /// cache.init(&CacheInfo::default()).unwrap();
    /// assert!(cache.list_paths().unwrap().is_empty());
    /// assert!(BinaryCache::open_with_env("ssh://builder", &[]).is_err());
    /// ```
    pub fn open_with_env(url: &str, env: &[(String, String)]) -> Result<BinaryCache, Error> {
        let cache = store::BinaryCache::open_with_env(url, env)?;
        let reopen = (!url.starts_with("memory:")).then(|| (url.to_owned(), env.to_vec()));
        Ok(BinaryCache {
            inner: Arc::new(CacheInner {
                reopen,
                current: Mutex::new((std::process::id(), cache)),
            }),
        })
    }

    /// Wraps an async handle. It is used as it is after a fork too (it cannot be re-opened
    /// without its URL and settings): fine for `memory://`, not for a network store.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// use cachecore::{blocking, cache_info::CacheInfo, store};
    /// let cache = store::BinaryCache::open("memory://").unwrap();
    /// cache.init(&CacheInfo::default()).await.unwrap();
    /// // Hand the same store to blocking code (on a thread of its own, never inside the runtime).
    /// let handle = blocking::BinaryCache::from_async(cache.clone());
    /// let info = std::thread::spawn(move || handle.cache_info()).join().unwrap().unwrap();
    /// assert_eq!(info, cache.cache_info().await.unwrap());
    /// # });
    /// ```
    pub fn from_async(cache: store::BinaryCache) -> BinaryCache {
        BinaryCache {
            inner: Arc::new(CacheInner {
                reopen: None,
                current: Mutex::new((std::process::id(), cache)),
            }),
        }
    }

    /// The async handle for this process (re-opened in a forked child).
    ///
    /// ```
    /// use cachecore::{blocking::BinaryCache, cache_info::CacheInfo};
    /// let cache = BinaryCache::open("memory://").unwrap();
    /// cache.init(&CacheInfo::default()).unwrap();
    /// // The same store, for async code (here on a runtime of its own).
    /// let handle = cache.as_async().unwrap();
    /// let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    /// assert_eq!(rt.block_on(handle.cache_info()).unwrap(), cache.cache_info().unwrap());
    /// ```
    pub fn as_async(&self) -> Result<store::BinaryCache, Error> {
        let pid = std::process::id();
        let mut current = lock(&self.inner.current);
        if current.0 != pid {
            if let Some((url, env)) = &self.inner.reopen {
                current.1 = store::BinaryCache::open_with_env(url, env)?;
            }
            current.0 = pid;
        }
        Ok(current.1.clone())
    }

    /// The store URL (passwords replaced by `***`).
    ///
    /// ```
    /// use cachecore::blocking::BinaryCache;
    /// let dir = tempfile::tempdir().unwrap();
    /// let cache = BinaryCache::open(dir.path().to_str().unwrap()).unwrap();
    /// assert_eq!(cache.url(), dir.path().to_str().unwrap());
    /// ```
    pub fn url(&self) -> String {
        lock(&self.inner.current).1.url().to_owned()
    }

    /// Runs `f` on this process's async handle and runtime.
    fn run<T, E, F>(&self, f: impl FnOnce(store::BinaryCache) -> F) -> Result<T, Error>
    where
        F: Future<Output = Result<T, E>>,
        Error: From<E>,
    {
        let cache = self.as_async()?;
        block_on(f(cache))
    }

    /// `nix-cache-info`, or `None` when the store has none.
    ///
    /// ```
    /// use cachecore::{blocking::BinaryCache, cache_info::CacheInfo};
    /// let cache = BinaryCache::open("memory://").unwrap();
    /// assert_eq!(cache.cache_info().unwrap(), None);
    /// let wanted = CacheInfo { priority: Some(30), ..CacheInfo::default() };
    /// assert_eq!(cache.init(&wanted).unwrap(), wanted);
    /// // Present now: `init` keeps what is there.
    /// let other = CacheInfo { priority: Some(50), ..CacheInfo::default() };
    /// assert_eq!(cache.init(&other).unwrap().priority, Some(30));
    /// assert_eq!(cache.cache_info().unwrap(), Some(wanted));
    /// ```
    pub fn cache_info(&self) -> Result<Option<CacheInfo>, Error> {
        self.run(|c| async move { c.cache_info().await })
    }

    /// Writes `nix-cache-info` unless present (see [`store::BinaryCache::init`]).
    ///
    /// See [`BinaryCache::cache_info`] for an example.
    pub fn init(&self, wanted: &CacheInfo) -> Result<CacheInfo, Error> {
        self.run(|c| async move { c.init(wanted).await })
    }

    /// The narinfo of `path`, or `None`.
    ///
    /// See [`BinaryCache::push_add`] for an example.
    pub fn narinfo(&self, path: &StorePath) -> Result<Option<NarInfo>, Error> {
        self.run(|c| async move { c.narinfo(path).await })
    }

    /// The full store paths in the cache, sorted.
    ///
    /// See [`BinaryCache::push_add`] for an example.
    pub fn list_paths(&self) -> Result<Vec<String>, Error> {
        self.run(|c| async move { ops::list_paths(&c).await })
    }

    /// The full store paths in the cache a page at a time ([`ops::path_pages`]), read on the
    /// runtime one page ahead of the caller: memory is the push index's entries and two pages
    /// ([`store::PATHS_PAGE`] paths each), whatever the size of the cache.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use cachecore::{ops::{NoProgress, PushOptions}, store_path::StoreDir};
    /// use cachecore::blocking::BinaryCache;
    /// # let src = tempfile::tempdir().unwrap();
    /// # std::fs::write(src.path().join("hello"), "hello, world\n").unwrap();
    /// let cache = BinaryCache::open("memory://").unwrap();
    /// # let (path, _) = cache.push_add(&StoreDir::default(), src.path(), "hello",
    /// #     &PushOptions::default(), Arc::new(NoProgress)).unwrap();
    /// let pages: Vec<Vec<String>> = cache.path_pages().unwrap().collect::<Result<_, _>>().unwrap();
    /// assert_eq!(pages, [[StoreDir::default().full_path(&path)]]);
    /// ```
    pub fn path_pages(&self) -> Result<PathPages, Error> {
        let cache = self.as_async()?;
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        runtime()?.spawn(async move {
            use futures::StreamExt as _;
            let mut pages = ops::path_pages(&cache);
            while let Some(page) = pages.next().await {
                let failed = page.is_err();
                // The reader is gone: stop reading.
                if tx.send(page.map_err(Error::from)).await.is_err() || failed {
                    return;
                }
            }
        });
        Ok(PathPages {
            pid: std::process::id(),
            rx,
        })
    }

    /// Every path of the cache with what the push index says of it (references, NAR key,
    /// sizes, push time), read from the index where it covers a narinfo and from the narinfo
    /// where not ([`store::BinaryCache::paths`]).
    pub fn paths(&self) -> Result<store::CachePaths, Error> {
        self.run(|c| async move { c.paths(32).await })
    }

    /// The listing of `path`: its `.ls`, else read from its NAR.
    ///
    /// See [`BinaryCache::push_add`] for an example.
    pub fn listing(&self, path: &StorePath) -> Result<Listing, Error> {
        self.run(|c| async move { ops::listing(&c, path).await })
    }

    /// Random access into the NAR of `path` (see [`crate::access`]).
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use cachecore::{ops::{NoProgress, PushOptions}, store_path::StoreDir};
    /// use cachecore::blocking::BinaryCache;
    /// # let src = tempfile::tempdir().unwrap();
    /// # std::fs::write(src.path().join("hello"), "hello, world\n").unwrap();
    /// let cache = BinaryCache::open("memory://").unwrap();
    /// # let (path, _) = cache.push_add(&StoreDir::default(), src.path(), "hello",
    /// #     &PushOptions::default(), Arc::new(NoProgress)).unwrap();
    /// let nar = cache.nar(&path).unwrap();
    /// assert_eq!(nar.nar_size(), nar.info().nar_size);
    /// // A NAR starts with its magic string (after the string's 8-byte length).
    /// assert_eq!(nar.read(8..21).unwrap(), &b"nix-archive-1"[..]);
    /// ```
    pub fn nar(&self, path: &StorePath) -> Result<Nar, Error> {
        let access = self.run(|c| async move { NarAccess::open(&c, path).await })?;
        Ok(Nar {
            cache: self.clone(),
            path: path.clone(),
            current: Mutex::new((std::process::id(), access)),
        })
    }

    /// The regular file `sub` of `path`, for ranged reads (see [`ops::open_file`]).
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use cachecore::{ops::{NoProgress, PushOptions}, store_path::StoreDir};
    /// # use std::os::unix::fs::PermissionsExt as _;
    /// use cachecore::blocking::BinaryCache;
    /// # let src = tempfile::tempdir().unwrap();
    /// # std::fs::write(src.path().join("run"), "#!/bin/sh\necho hi\n").unwrap();
    /// # std::fs::set_permissions(src.path().join("run"), std::fs::Permissions::from_mode(0o755)).unwrap();
    /// let cache = BinaryCache::open("memory://").unwrap();
    /// # let (path, _) = cache.push_add(&StoreDir::default(), src.path(), "script",
    /// #     &PushOptions::default(), Arc::new(NoProgress)).unwrap();
    /// // `run` (pushed above) is an executable script: "#!/bin/sh\necho hi\n".
    /// let file = cache.open_file(&path, "run").unwrap();
    /// assert_eq!(file.size(), 18);
    /// assert!(file.executable());
    /// assert_eq!(file.read_at(10..17).unwrap(), &b"echo hi"[..]);
    /// assert!(cache.open_file(&path, "missing").is_err());
    /// ```
    pub fn open_file(&self, path: &StorePath, sub: &str) -> Result<File, Error> {
        let file = self.run(|c| async move { ops::open_file(&c, path, sub).await })?;
        Ok(File {
            cache: self.clone(),
            path: path.clone(),
            sub: sub.to_owned(),
            current: Mutex::new((std::process::id(), file)),
            pos: 0,
            sequential: Mutex::new(Sequential::default()),
        })
    }

    /// The whole NAR of `path` as a [`Read`], checked as it is read: FileSize, FileHash,
    /// NarSize and NarHash are checked when it ends, and a mismatch makes the last read fail
    /// (the bytes before it have been handed out by then: act on them only after the end).
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use cachecore::{ops::{NoProgress, PushOptions}, store_path::StoreDir};
    /// # let src = tempfile::tempdir().unwrap();
    /// # std::fs::write(src.path().join("hello"), "hello, world\n").unwrap();
    /// use std::io::Read as _;
    /// use cachecore::{blocking::BinaryCache, hash::{Hash, HashAlgo}, nar::Listing};
    /// let cache = BinaryCache::open("memory://").unwrap();
    /// # let (path, _) = cache.push_add(&StoreDir::default(), src.path(), "hello",
    /// #     &PushOptions::default(), Arc::new(NoProgress)).unwrap();
    /// let info = cache.narinfo(&path).unwrap().unwrap();
    /// let mut nar = Vec::new();
    /// cache.nar_reader(&path).unwrap().read_to_end(&mut nar).unwrap();
    /// assert_eq!(nar.len() as u64, info.nar_size);
    /// assert_eq!(Hash::digest(HashAlgo::Sha256, &nar), info.nar_hash);
    /// assert!(Listing::from_nar(&nar[..]).unwrap().get("hello").is_some());
    /// ```
    pub fn nar_reader(&self, path: &StorePath) -> Result<NarReader, Error> {
        let cache = self.as_async()?;
        let rt = runtime()?;
        let info = rt.block_on(ops::browse::narinfo(&cache, path))?;
        let (tx, reader) = crate::ops::pipe::reader_channel();
        rt.spawn(async move {
            let chunks = tx.clone();
            let read = ops::browse::with_nar(&cache, &info, move |nar| {
                loop {
                    let mut chunk = vec![0u8; 1 << 20];
                    let n = nar
                        .read(&mut chunk)
                        .map_err(|e| OpError::io("cannot read the NAR", e))?;
                    if n == 0 {
                        return Ok(());
                    }
                    chunk.truncate(n);
                    if chunks.blocking_send(Ok(Bytes::from(chunk))).is_err() {
                        // The reader was dropped: stop (the error goes nowhere).
                        return Err(OpError::io(
                            "the NAR reader",
                            io::Error::from(io::ErrorKind::BrokenPipe),
                        ));
                    }
                }
            })
            .await;
            if let Err(e) = read {
                let _ = tx.send(Err(io::Error::other(e))).await;
            }
        });
        Ok(NarReader { inner: reader })
    }

    /// Pushes `roots` (and their closures) from `local` (see [`ops::push()`]).
    ///
    /// ```no_run
    /// // Not run: it reads a real Nix store (its database and /nix/store), which tests lack.
    /// use std::sync::Arc;
    /// use cachecore::{blocking::BinaryCache, local_store::LocalStore};
    /// use cachecore::{ops::{NoProgress, PushOptions}, store_path::StoreDir};
    /// let dir = StoreDir::default();
    /// let local = LocalStore::open(dir.clone()).unwrap();
    /// let root = dir.parse_path("/nix/store/7h7qgvs4kgzsn8a6rb273saxyqh4jxlz-hello-2.12").unwrap().to_owned();
    /// let cache = BinaryCache::open("/srv/cache").unwrap();
    /// let summary = cache.push(&local, &[root.clone()], &PushOptions::default(), Arc::new(NoProgress)).unwrap();
    /// assert!(cache.narinfo(&root).unwrap().is_some());
    /// # let _ = summary;
    /// ```
    pub fn push(
        &self,
        local: &LocalStore,
        roots: &[StorePath],
        opts: &PushOptions,
        progress: Arc<dyn Progress>,
    ) -> Result<PushSummary, Error> {
        self.run(|c| async move { ops::push(&c, local, roots, opts, progress).await })
    }

    /// Pushes a plain file or directory as the store path `nix-store --add` would give it (see
    /// [`ops::push_add`]).
    ///
    /// ```
    /// use std::sync::Arc;
    /// use cachecore::blocking::BinaryCache;
    /// use cachecore::nar::ListingNode;
    /// use cachecore::ops::{NoProgress, PushOptions};
    /// use cachecore::store_path::StoreDir;
    /// let src = tempfile::tempdir().unwrap();
    /// std::fs::write(src.path().join("hello"), "hello, world\n").unwrap();
    /// let cache = BinaryCache::open("memory://").unwrap();
    /// let (path, _) = cache.push_add(&StoreDir::default(), src.path(), "hello",
    ///     &PushOptions::default(), Arc::new(NoProgress)).unwrap();
    /// assert_eq!(path.name(), "hello");
    /// assert_eq!(cache.list_paths().unwrap(), [StoreDir::default().full_path(&path)]);
    /// let info = cache.narinfo(&path).unwrap().unwrap();
    /// assert_eq!(info.store_path, path);
    /// assert!(matches!(cache.listing(&path).unwrap().get("hello"),
    ///     Some(ListingNode::Regular { size: 13, .. })));
    /// assert!(cache.verify(&[path], &Default::default()).unwrap().is_ok());
    /// ```
    pub fn push_add(
        &self,
        store_dir: &StoreDir,
        source: &Path,
        name: &str,
        opts: &PushOptions,
        progress: Arc<dyn Progress>,
    ) -> Result<(StorePath, PushSummary), Error> {
        self.run(
            |c| async move { ops::push_add(&c, store_dir, source, name, opts, progress).await },
        )
    }

    /// Downloads, checks and unpacks `path` at `dest` (see [`ops::pull()`]).
    ///
    /// ```
    /// use std::sync::Arc;
    /// use cachecore::blocking::BinaryCache;
    /// use cachecore::ops::{NoProgress, PullOptions, PushOptions};
    /// use cachecore::{signing::SecretKey, store_path::StoreDir};
    /// # let src = tempfile::tempdir().unwrap();
    /// # std::fs::write(src.path().join("hello"), "hello, world\n").unwrap();
    /// let cache = BinaryCache::open("memory://").unwrap();
    /// let key = SecretKey::generate("cache.example.org-1").unwrap();
    /// let pull_opts = PullOptions { trusted_keys: vec![key.public_key()], check_signatures: true };
    /// let push_opts = PushOptions { signers: vec![Arc::new(key)], ..PushOptions::default() };
    /// let (path, _) = cache.push_add(&StoreDir::default(), src.path(), "hello", &push_opts,
    ///     Arc::new(NoProgress)).unwrap();
    /// let tmp = tempfile::tempdir().unwrap();
    /// cache.pull(&path, &tmp.path().join("hello"), &pull_opts, Arc::new(NoProgress)).unwrap();
    /// assert_eq!(std::fs::read_to_string(tmp.path().join("hello/hello")).unwrap(), "hello, world\n");
    /// ```
    pub fn pull(
        &self,
        path: &StorePath,
        dest: &Path,
        opts: &PullOptions,
        progress: Arc<dyn Progress>,
    ) -> Result<(), Error> {
        self.run(|c| async move { ops::pull(&c, path, dest, opts, progress).await })
    }

    /// Verifies `paths` and their closures, or the whole cache (see [`ops::verify()`]).
    ///
    /// See [`BinaryCache::push_add`] for an example.
    pub fn verify(&self, paths: &[StorePath], opts: &VerifyOptions) -> Result<VerifyReport, Error> {
        self.run(|c| async move { ops::verify(&c, paths, opts).await })
    }

    /// Copies `paths` and their closures (every path when empty) into `to` (see [`ops::copy()`]).
    ///
    /// ```
    /// use std::sync::Arc;
    /// use cachecore::{blocking::BinaryCache, ops::NoProgress};
    /// # use cachecore::{ops::PushOptions, store_path::StoreDir};
    /// # let src = tempfile::tempdir().unwrap();
    /// # std::fs::write(src.path().join("hello"), "hello, world\n").unwrap();
    /// let from = BinaryCache::open("memory://").unwrap();
    /// # let (path, _) = from.push_add(&StoreDir::default(), src.path(), "hello",
    /// #     &PushOptions::default(), Arc::new(NoProgress)).unwrap();
    /// let to = BinaryCache::open("memory://").unwrap();
    /// let summary = from.copy(&to, &[path.clone()], &Default::default(), Arc::new(NoProgress)).unwrap();
    /// assert_eq!(summary.copied, 1);
    /// assert_eq!(to.narinfo(&path).unwrap(), from.narinfo(&path).unwrap());
    /// assert!(to.verify(&[], &Default::default()).unwrap().is_ok());
    /// ```
    pub fn copy(
        &self,
        to: &BinaryCache,
        paths: &[StorePath],
        opts: &CopyOptions,
        progress: Arc<dyn Progress>,
    ) -> Result<CopySummary, Error> {
        let to = to.as_async()?;
        self.run(|c| async move { ops::copy(&c, &to, paths, opts, progress).await })
    }
}

/// Random access into one NAR (see [`crate::access::NarAccess`]); re-opened after a fork.
#[derive(Debug)]
pub struct Nar {
    cache: BinaryCache,
    path: StorePath,
    current: Mutex<(u32, NarAccess)>,
}

impl Nar {
    fn access(&self) -> Result<NarAccess, Error> {
        let pid = std::process::id();
        let mut current = lock(&self.current);
        if current.0 != pid {
            let cache = self.cache.as_async()?;
            let path = self.path.clone();
            current.1 = block_on(async move { NarAccess::open(&cache, &path).await })?;
            current.0 = pid;
        }
        Ok(current.1.clone())
    }

    /// The NAR's length (NarSize).
    ///
    /// See [`BinaryCache::nar`] for an example.
    pub fn nar_size(&self) -> u64 {
        lock(&self.current).1.nar_size()
    }

    /// The bytes `range` of the NAR.
    ///
    /// See [`BinaryCache::nar`] for an example.
    pub fn read(&self, range: Range<u64>) -> Result<Bytes, Error> {
        let access = self.access()?;
        block_on(async move { access.read(range).await })
    }
}

/// A regular file in a cache's NAR, read by ranges (see [`ops::NarFile`]): `Read + Seek` from a
/// position, or [`File::read_at`]. Re-opened after a fork.
#[derive(Debug)]
pub struct File {
    cache: BinaryCache,
    path: StorePath,
    sub: String,
    current: Mutex<(u32, NarFile)>,
    pos: u64,
    sequential: Mutex<Sequential>,
}

/// Chunks of a [`File`] read ahead (frames, as [`NarFile::stream_from`] yields them).
const READ_AHEAD_CHUNKS: usize = 4;

/// Where a [`File`]'s last read ended, and the stream serving reads that go on from there.
#[derive(Debug, Default)]
struct Sequential {
    /// The end of the last read.
    next: u64,
    ahead: Option<Ahead>,
}

/// The rest of a file from `pos`, streamed on the runtime `READ_AHEAD_CHUNKS` chunks ahead of
/// its reader (by the process `pid`).
#[derive(Debug)]
struct Ahead {
    pid: u32,
    pos: u64,
    pending: Bytes,
    rx: tokio::sync::mpsc::Receiver<Result<Bytes, AccessError>>,
}

impl File {
    fn file(&self) -> Result<NarFile, Error> {
        let pid = std::process::id();
        let mut current = lock(&self.current);
        if current.0 != pid {
            let cache = self.cache.as_async()?;
            let (path, sub) = (self.path.clone(), self.sub.clone());
            current.1 = block_on(async move { ops::open_file(&cache, &path, &sub).await })?;
            current.0 = pid;
        }
        Ok(current.1.clone())
    }

    /// The file's length.
    ///
    /// See [`BinaryCache::open_file`] for an example.
    pub fn size(&self) -> u64 {
        lock(&self.current).1.size()
    }

    /// Whether the file is executable.
    ///
    /// See [`BinaryCache::open_file`] for an example.
    pub fn executable(&self) -> bool {
        lock(&self.current).1.executable()
    }

    /// The bytes `range` of the file.
    ///
    /// See [`BinaryCache::open_file`] for an example.
    pub fn read_at(&self, range: Range<u64>) -> Result<Bytes, Error> {
        let file = self.file()?;
        block_on(async move { file.read(range).await })
    }

    /// Up to `max` bytes from `pos` (fewer at the end of a chunk; none at the end of the
    /// file). A read that starts where the last one ended is served, as `cachecore cat`
    /// reads, from a stream of the rest of the file fetched and decoded on the runtime a few
    /// frames ahead; any other read (after a seek) is a ranged read ([`File::read_at`]).
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use cachecore::{ops::{NoProgress, PushOptions}, store_path::StoreDir};
    /// use cachecore::blocking::BinaryCache;
    /// # let src = tempfile::tempdir().unwrap();
    /// # std::fs::write(src.path().join("data"), b"0123456789").unwrap();
    /// let cache = BinaryCache::open("memory://").unwrap();
    /// # let (path, _) = cache.push_add(&StoreDir::default(), src.path(), "data",
    /// #     &PushOptions::default(), Arc::new(NoProgress)).unwrap();
    /// let file = cache.open_file(&path, "data").unwrap();
    /// assert_eq!(file.read_from(0, 4).unwrap(), &b"0123"[..]); // streamed
    /// assert_eq!(file.read_from(4, 100).unwrap(), &b"456789"[..]); // from the same stream
    /// assert_eq!(file.read_from(2, 3).unwrap(), &b"234"[..]); // a seek: a ranged read
    /// assert!(file.read_from(10, 5).unwrap().is_empty());
    /// ```
    pub fn read_from(&self, pos: u64, max: usize) -> Result<Bytes, Error> {
        let end = self.size().min(pos.saturating_add(max as u64));
        if pos >= end {
            return Ok(Bytes::new());
        }
        let mut seq = lock(&self.sequential);
        if seq.next != pos {
            seq.ahead = None;
            let bytes = self.read_at(pos..end)?;
            seq.next = pos + bytes.len() as u64;
            return Ok(bytes);
        }
        let pid = std::process::id();
        let ahead = match &mut seq.ahead {
            Some(a) if a.pos == pos && a.pid == pid => a,
            slot => slot.insert(self.stream_from(pos, pid)?),
        };
        if ahead.pending.is_empty() {
            match ahead.rx.blocking_recv() {
                Some(Ok(chunk)) => ahead.pending = chunk,
                Some(Err(e)) => {
                    seq.ahead = None;
                    return Err(e.into());
                }
                // The stream ended before the file did (it is checked not to): read by range.
                None => {
                    seq.ahead = None;
                    let bytes = self.read_at(pos..end)?;
                    seq.next = pos + bytes.len() as u64;
                    return Ok(bytes);
                }
            }
        }
        let n = ahead.pending.len().min(max);
        let bytes = ahead.pending.split_to(n);
        ahead.pos += n as u64;
        seq.next = pos + n as u64;
        Ok(bytes)
    }

    /// Starts streaming the file from `pos` on the runtime.
    fn stream_from(&self, pos: u64, pid: u32) -> Result<Ahead, Error> {
        let file = self.file()?;
        let (tx, rx) = tokio::sync::mpsc::channel(READ_AHEAD_CHUNKS);
        runtime()?.spawn(async move {
            use futures::StreamExt as _;
            let mut chunks = file.stream_from(pos);
            while let Some(chunk) = chunks.next().await {
                let failed = chunk.is_err();
                // The reader moved on (or is gone): stop.
                if tx.send(chunk).await.is_err() || failed {
                    return;
                }
            }
        });
        Ok(Ahead {
            pid,
            pos,
            pending: Bytes::new(),
            rx,
        })
    }
}

/// Reads go through [`File::read_from`]: front to back, the file is streamed a few frames
/// ahead; after a seek, the first read is a ranged one.
impl Read for File {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let bytes = self.read_from(self.pos, buf.len())?;
        buf[..bytes.len()].copy_from_slice(&bytes);
        self.pos += bytes.len() as u64;
        Ok(bytes.len())
    }
}

impl Seek for File {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let target = match to {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::End(d) => self.size().checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos = target.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek before the start of the file",
            )
        })?;
        Ok(self.pos)
    }
}

/// The pages of [`BinaryCache::path_pages`]: an [`Iterator`] (not to be called from async
/// code), or [`PathPages::next_page`]. Used in a forked child, it fails: the parent was reading
/// it.
#[derive(Debug)]
pub struct PathPages {
    pid: u32,
    rx: tokio::sync::mpsc::Receiver<Result<Vec<String>, Error>>,
}

impl PathPages {
    fn forked() -> Error {
        Error::Runtime(io::Error::other(
            "these paths were being listed by the parent process (before a fork): list them again in this one",
        ))
    }

    /// The next page, `None` after the last (or after an error).
    pub async fn next_page(&mut self) -> Option<Result<Vec<String>, Error>> {
        if self.pid != std::process::id() {
            return Some(Err(Self::forked()));
        }
        self.rx.recv().await
    }
}

impl Iterator for PathPages {
    type Item = Result<Vec<String>, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.pid != std::process::id() {
            return Some(Err(Self::forked()));
        }
        self.rx.blocking_recv()
    }
}

/// A whole NAR as a [`Read`], from [`BinaryCache::nar_reader`].
#[derive(Debug)]
pub struct NarReader {
    inner: crate::ops::pipe::ChannelReader,
}

impl Read for NarReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        self.inner.read(out)
    }
}

impl Nar {
    /// The narinfo read from.
    ///
    /// See [`BinaryCache::nar`] for an example.
    pub fn info(&self) -> NarInfo {
        lock(&self.current).1.info().clone()
    }
}

/// Every handle can be shared between threads.
const _: () = {
    const fn check<T: Send + Sync>() {}
    check::<BinaryCache>();
    check::<Nar>();
    check::<File>();
    check::<PathPages>();
};
