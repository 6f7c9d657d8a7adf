//! [`BinaryCache`]: the typed cache on top of the [object layer](super::objects) — objects asked
//! for by what they are (a narinfo, a path's listing, its NAR, a build log, a GC root), never by
//! key.

use std::fmt;
use std::io;

use bytes::Bytes;
use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};
use futures::Stream;

use super::backend;
use super::error::StoreError;
use super::layout;
use super::listings::NarListings;
use super::objects::{ByteStream, ObjectInfo, Objects, ReadRange, WriteMode, Written};
use super::url::{StoreSettings, StoreUrl};
use crate::cache_info::CacheInfo;
use crate::compression::Compression;
use crate::hash::Hash;
use crate::narinfo::NarInfo;
use crate::realisation::DrvOutput;
use crate::store_path::{StoreDir, StorePath};

/// A binary cache: an object store plus the knowledge of what a Nix binary cache keeps in it.
///
/// Cheap to clone (an `Arc` inside). `Debug` and `Display` show the store URL only, never
/// credentials.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// use cachecore::cache_info::CacheInfo;
/// use cachecore::store::BinaryCache;
/// let dir = tempfile::tempdir().unwrap();
/// let cache = BinaryCache::open(dir.path().to_str().unwrap()).unwrap();
/// cache.init(&CacheInfo::default()).await.unwrap();
/// assert_eq!(cache.cache_info().await.unwrap().unwrap().store_dir, "/nix/store");
/// # });
/// ```
#[derive(Clone)]
pub struct BinaryCache {
    objects: Objects,
    settings: StoreSettings,
    /// The cache's store directory, once read ([`BinaryCache::store_dir`]).
    store_dir: std::sync::Arc<std::sync::OnceLock<StoreDir>>,
    /// Listings built from NARs ([`super::listings`]).
    nar_listings: std::sync::Arc<NarListings>,
}

/// The largest `nix-cache-info` read (real ones are under 100 bytes).
pub const MAX_CACHE_INFO_BYTES: u64 = 64 << 10;

/// The largest `<hash>.ls` listing read: 64 MiB, the JSON of about half a million files.
pub const MAX_LISTING_BYTES: u64 = 64 << 20;

/// The largest realisation (`.doi`) read (real ones are under 1 KiB).
pub const MAX_REALISATION_BYTES: u64 = 1 << 20;

impl fmt::Debug for BinaryCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BinaryCache")
            .field("url", &self.url())
            .field("read_only", &self.is_read_only())
            .finish_non_exhaustive()
    }
}

impl fmt::Display for BinaryCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.url())
    }
}

/// A narinfo's `StorePath` for a message: its store directory (hostile text, up to 4 KiB) cut
/// to a short prefix, its base name (validated, at most 244 characters) whole.
fn shown_path(info: &NarInfo) -> String {
    format!(
        "{}/{}",
        crate::untrusted::excerpt(info.store_dir.as_str()),
        info.store_path
    )
}

/// The largest GC root, trashed root or GC tombstone read: 64 MiB (about half a million
/// store paths).
pub const MAX_GC_OBJECT_BYTES: u64 = 64 << 20;

/// An object of a cache as [`BinaryCache::list_cache_objects`] lists it: what it is, by its key.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CacheObject {
    /// `<hash>.narinfo`.
    NarInfo { hash_part: String, meta: ObjectInfo },
    /// `<hash>.ls`.
    Listing { hash_part: String, meta: ObjectInfo },
    /// `nar/<name>`.
    Nar { meta: ObjectInfo },
    /// `nar/<nix32 sha256>.frames`: a seekable NAR's frame digests, named by the `FramesHash`
    /// of the narinfos that use them.
    FrameDigests { meta: ObjectInfo },
    /// `log/<drv>`: a build log.
    Log { drv: String, meta: ObjectInfo },
    /// A GC run's tombstone.
    GcTombstone { name: String, meta: ObjectInfo },
    /// `gcleases/<name>`: a push's lease.
    GcLease { name: String, meta: ObjectInfo },
    /// `realisations/<id>.doi`.
    Realisation { id: String, meta: ObjectInfo },
    /// Anything else (`nix-cache-info`, logs, realisations, roots, index, staging).
    Other { meta: ObjectInfo },
}

/// A GC root as listed by [`BinaryCache::list_gc_roots`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct GcRootEntry {
    pub host: String,
    pub name: String,
    pub meta: ObjectInfo,
}

impl BinaryCache {
    /// Opens the store at `url` (see [`url`](super::url) for the spellings). No network I/O: a
    /// missing bucket, an unreachable server or bad credentials show up at the first request.
    ///
    /// - A local directory is created if missing (as Nix does for `file://` caches).
    /// - `s3://`: credentials come from `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`
    ///   (`AWS_SESSION_TOKEN`), or from a profile in `~/.aws/credentials` and `~/.aws/config`
    ///   (`?profile=NAME`, else `AWS_PROFILE`, else `default`; a `?profile=` wins over the
    ///   environment), else from the web-identity / container / instance-metadata providers.
    ///   Region: `?region=`, `AWS_REGION`/`AWS_DEFAULT_REGION`, the profile's, else `us-east-1`.
    ///   With an endpoint (`?endpoint=`, `AWS_ENDPOINT_URL`, or the profile's `endpoint_url`),
    ///   requests use path-style addressing, and `http://` endpoints are allowed.
    /// - `gs://`, `az://`: configured from the `GOOGLE_*` / `AZURE_*` environment.
    /// - `memory://`: a **fresh, empty** in-memory store each time it is opened; two `open`s
    ///   do not share data (clone the [`BinaryCache`] instead).
    /// - `http(s)://`: read-only (writes fail with [`StoreError::ReadOnly`]), unless
    ///   `CACHECORE_TOKEN` ([`TOKEN_VAR`](super::TOKEN_VAR)) holds a token: it is sent as
    ///   `Authorization: Bearer` with every request, and writes are `PUT`s, as
    ///   `cachecore serve --token-file` takes them (a large object streams in one chunked
    ///   request). Such a cache cannot be listed.
    ///
    /// ```
    /// use cachecore::store::BinaryCache;
    /// let cache = BinaryCache::open("memory://").unwrap();
    /// assert_eq!(cache.url(), "memory://");
    /// assert!(BinaryCache::open("ssh://host").is_err());
    /// ```
    pub fn open(url: &str) -> Result<BinaryCache, StoreError> {
        Self::open_with_env(url, &backend::process_env())
    }

    /// [`open`](Self::open), reading configuration (`AWS_*`, `GOOGLE_*`, `AZURE_*`, `HOME`,
    /// `SERVICE_ACCOUNT`, `MSI_ENDPOINT`, `CACHECORE_TOKEN`) from `env` instead of the process
    /// environment.
    ///
    /// ```
    /// use cachecore::store::BinaryCache;
    /// // Without a token in `env`, an HTTP cache is read-only; with one, it takes `PUT`s.
    /// let cache = BinaryCache::open_with_env("https://cache.example.org", &[]).unwrap();
    /// assert!(cache.is_read_only());
    /// let env = [("CACHECORE_TOKEN".to_owned(), "secret".to_owned())];
    /// let cache = BinaryCache::open_with_env("https://cache.example.org", &env).unwrap();
    /// assert!(!cache.is_read_only());
    /// ```
    pub fn open_with_env(url: &str, env: &[(String, String)]) -> Result<BinaryCache, StoreError> {
        let parsed = StoreUrl::parse(url)?;
        Self::open_parsed(&parsed, env)
    }

    /// [`open_with_env`](Self::open_with_env) for an already parsed URL.
    ///
    /// ```
    /// use cachecore::{compression::Compression, store::{BinaryCache, StoreUrl}};
    /// let url = StoreUrl::parse("memory://?compression=xz&priority=30").unwrap();
    /// let cache = BinaryCache::open_parsed(&url, &[]).unwrap();
    /// assert_eq!(cache.settings().compression, Some(Compression::Xz));
    /// assert_eq!(cache.settings().priority, Some(30));
    /// ```
    pub fn open_parsed(
        parsed: &StoreUrl,
        env: &[(String, String)],
    ) -> Result<BinaryCache, StoreError> {
        Self::open_parsed_as(parsed, env, true)
    }

    /// [`open_with_env`](Self::open_with_env) for a store that must be there already, as a
    /// command that reads (or serves) it wants: nothing is created, and a local directory that
    /// does not exist is [`StoreError::NoStore`]. Other stores are not asked anything either; a
    /// missing bucket or `nix-cache-info` shows up at the first request.
    ///
    /// ```
    /// use cachecore::{error::ErrorKind, store::BinaryCache};
    /// let dir = tempfile::tempdir().unwrap();
    /// let missing = dir.path().join("cahce");
    /// let e = BinaryCache::open_existing(missing.to_str().unwrap(), &[]).unwrap_err();
    /// assert_eq!(e.kind(), ErrorKind::NotFound);
    /// assert!(!missing.exists()); // nothing left behind
    /// assert!(BinaryCache::open_existing(dir.path().to_str().unwrap(), &[]).is_ok());
    /// ```
    pub fn open_existing(url: &str, env: &[(String, String)]) -> Result<BinaryCache, StoreError> {
        Self::open_parsed_as(&StoreUrl::parse(url)?, env, false)
    }

    fn open_parsed_as(
        parsed: &StoreUrl,
        env: &[(String, String)],
        create: bool,
    ) -> Result<BinaryCache, StoreError> {
        Ok(BinaryCache {
            objects: Objects::new(backend::open(parsed, env, create)?),
            settings: parsed.settings.clone(),
            store_dir: Default::default(),
            nar_listings: Default::default(),
        })
    }

    /// A cache in an object store the caller built: a backend or a configuration cachecore
    /// does not build from a URL itself (a custom credential provider, a wrapper adding metrics,
    /// caching or fault injection). `url` names the cache in messages; with `read_only`, every
    /// write fails with [`StoreError::ReadOnly`]. Nix's default settings apply.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use cachecore::store::BinaryCache;
    /// let store = Arc::new(object_store::memory::InMemory::new());
    /// let cache = BinaryCache::from_object_store(store, "my-store://", false);
    /// assert_eq!(cache.url(), "my-store://");
    /// ```
    pub fn from_object_store(
        store: std::sync::Arc<dyn object_store::ObjectStore>,
        url: &str,
        read_only: bool,
    ) -> BinaryCache {
        BinaryCache {
            objects: Objects::new(backend::custom(store, url, read_only)),
            settings: StoreSettings::default(),
            store_dir: Default::default(),
            nar_listings: Default::default(),
        }
    }

    /// The object layer underneath: raw objects by key, for frontends that serve them as they
    /// are (an HTTP server). Everything that knows what an object *is* goes through the
    /// methods of [`BinaryCache`].
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// use cachecore::store::BinaryCache;
    /// let cache = BinaryCache::open("memory://").unwrap();
    /// cache.init(&Default::default()).await.unwrap();
    /// // The same file, raw, by its key.
    /// let raw = cache.objects().get_bytes("nix-cache-info").await.unwrap().unwrap();
    /// assert!(raw.starts_with(b"StoreDir: /nix/store\n"));
    /// # });
    /// ```
    pub fn objects(&self) -> &Objects {
        &self.objects
    }

    /// The store URL as given (passwords replaced by `***`).
    ///
    /// ```
    /// use cachecore::store::BinaryCache;
    /// let cache = BinaryCache::open("https://user:hunter2@cache.example.org").unwrap();
    /// assert!(!cache.url().contains("hunter2"));
    /// assert_eq!(cache.to_string(), cache.url());
    /// ```
    pub fn url(&self) -> &str {
        self.objects.url()
    }

    /// Listings built from NARs, kept by NarHash (see [`super::listings`]).
    pub(crate) fn nar_listings(&self) -> &NarListings {
        &self.nar_listings
    }

    /// Whether the store refuses writes (plain HTTP caches).
    ///
    /// ```
    /// use cachecore::store::BinaryCache;
    /// assert!(!BinaryCache::open("memory://").unwrap().is_read_only());
    /// # if std::env::var_os("CACHECORE_TOKEN").is_none() {
    /// assert!(BinaryCache::open("https://cache.nixos.org").unwrap().is_read_only());
    /// # }
    /// ```
    pub fn is_read_only(&self) -> bool {
        self.objects.is_read_only()
    }

    /// Nix's binary-cache settings given in the URL's query (`compression=zstd`, ...), for the
    /// operations to apply; this module does not use them itself.
    ///
    /// See [`open_parsed`](Self::open_parsed) for an example.
    pub fn settings(&self) -> &StoreSettings {
        &self.settings
    }

    /// Waits until uploads and staging objects dropped before they finished are cleaned up.
    /// A frontend that stops an operation by dropping it (on Ctrl-C) calls this before
    /// exiting, so nothing is left half-uploaded.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// use cachecore::store::BinaryCache;
    /// let cache = BinaryCache::open("memory://").unwrap();
    /// // … an operation dropped half-way (Ctrl-C) …
    /// cache.finish_cleanups().await; // then exit
    /// # });
    /// ```
    pub async fn finish_cleanups(&self) {
        self.objects.finish_cleanups().await;
    }

    /// Deletes a staged NAR when the operation writing it is dropped before it published or
    /// discarded it; see [`StagedNarGuard`].
    pub(crate) fn guard_staged_nar(&self, staged: &StagedNar) -> StagedNarGuard {
        StagedNarGuard {
            objects: self.objects.clone(),
            key: Some(staged.key.clone()),
            runtime: tokio::runtime::Handle::current(),
        }
    }

    /// `nix-cache-info`, or `None` if the store has none (not initialised). One larger than
    /// [`MAX_CACHE_INFO_BYTES`] is refused.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// use cachecore::{cache_info::CacheInfo, store::BinaryCache};
    /// let cache = BinaryCache::open("memory://").unwrap();
    /// assert_eq!(cache.cache_info().await.unwrap(), None); // not initialised
    /// cache.init(&CacheInfo::default()).await.unwrap();
    /// assert_eq!(cache.cache_info().await.unwrap(), Some(CacheInfo::default()));
    /// # });
    /// ```
    pub async fn cache_info(&self) -> Result<Option<CacheInfo>, StoreError> {
        let Some(bytes) = self
            .objects
            .get_bytes_limited(layout::CACHE_INFO, MAX_CACHE_INFO_BYTES)
            .await?
        else {
            return Ok(None);
        };
        let bad = |source: crate::cache_info::ParseError| StoreError::BadCacheInfo {
            url: self.url().to_owned(),
            key: layout::CACHE_INFO.to_owned(),
            source,
        };
        let text = std::str::from_utf8(&bytes).map_err(|_| {
            bad(crate::cache_info::ParseError {
                line: 0,
                reason: "not valid UTF-8".to_owned(),
            })
        })?;
        CacheInfo::parse(text).map(Some).map_err(bad)
    }

    /// Writes `nix-cache-info` unless present; refuses a present one with another `StoreDir`;
    /// returns what is there now. Running it twice is harmless.
    ///
    /// See [`init_or_update`](Self::init_or_update) for an example.
    pub async fn init(&self, wanted: &CacheInfo) -> Result<CacheInfo, StoreError> {
        self.init_or_update(wanted, false).await
    }

    /// [`init`](Self::init); with `update`, an existing `nix-cache-info` of the same `StoreDir`
    /// gets `wanted`'s `WantMassQuery` and `Priority` (its other fields are kept).
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// use cachecore::{cache_info::CacheInfo, store::BinaryCache};
    /// let cache = BinaryCache::open("memory://").unwrap();
    /// cache.init(&CacheInfo::default()).await.unwrap();
    /// let wanted = CacheInfo { priority: Some(10), ..CacheInfo::default() };
    /// // `init` keeps what is there; an update takes `wanted`'s priority.
    /// assert_eq!(cache.init(&wanted).await.unwrap().priority, Some(40));
    /// assert_eq!(cache.init_or_update(&wanted, true).await.unwrap().priority, Some(10));
    /// // Another store directory is refused either way.
    /// let other = CacheInfo { store_dir: "/gnu/store".into(), ..CacheInfo::default() };
    /// assert!(cache.init_or_update(&other, true).await.is_err());
    /// # });
    /// ```
    pub async fn init_or_update(
        &self,
        wanted: &CacheInfo,
        update: bool,
    ) -> Result<CacheInfo, StoreError> {
        if let Some(existing) = self.cache_info().await? {
            if existing.store_dir != wanted.store_dir {
                return Err(StoreError::StoreDirMismatch {
                    url: self.url().to_owned(),
                    ours: wanted.store_dir.clone(),
                    theirs: existing.store_dir,
                });
            }
            let same = existing.priority == wanted.priority
                && existing.want_mass_query == wanted.want_mass_query;
            if !update || same {
                return Ok(existing);
            }
            let updated = CacheInfo {
                priority: wanted.priority,
                want_mass_query: wanted.want_mass_query,
                ..existing
            };
            self.objects
                .put(
                    layout::CACHE_INFO,
                    Bytes::from(updated.to_string()),
                    WriteMode::Overwrite,
                )
                .await?;
            return Ok(updated);
        }
        if self.objects.is_http() {
            // A `cachecore serve` always has one: a wrong address or path, where a PUT would
            // only be refused as no object of a cache.
            return Err(StoreError::NoCacheInfo {
                url: self.url().to_owned(),
            });
        }
        self.objects
            .put(
                layout::CACHE_INFO,
                Bytes::from(wanted.to_string()),
                WriteMode::Overwrite,
            )
            .await?;
        Ok(wanted.clone())
    }

    /// The narinfo of `path`, or `None` if the cache does not have it. Checked as
    /// [`narinfo_by_hash`](Self::narinfo_by_hash) does, and its `StorePath` must be `path`
    /// itself (name included), or it is [`StoreError::IdentityMismatch`].
    ///
    /// ```
    /// # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
    /// # use std::sync::Arc;
    /// # use cachecore::ops::{self, NoProgress, PushOptions};
    /// use cachecore::store::BinaryCache;
    /// use cachecore::store_path::{StoreDir, StorePath};
    /// # let src = tempfile::tempdir().unwrap();
    /// # std::fs::write(src.path().join("hello"), "hello, world\n").unwrap();
    /// let cache = BinaryCache::open("memory://").unwrap();
    /// # let (path, _) = ops::push_add(&cache, &StoreDir::default(), src.path(), "hello",
    /// #     &PushOptions::default(), Arc::new(NoProgress)).await.unwrap();
    /// // `path` was pushed (hidden above): its narinfo describes exactly it.
    /// let info = cache.narinfo(&path).await.unwrap().unwrap();
    /// assert_eq!(info.store_path, path);
    /// assert_eq!(info.compression.as_deref(), Some("zstd"));
    /// let absent = StorePath::from_base_name("00000000000000000000000000000000-absent").unwrap();
    /// assert_eq!(cache.narinfo(&absent).await.unwrap(), None);
    /// # });
    /// ```
    pub async fn narinfo(&self, path: &StorePath) -> Result<Option<NarInfo>, StoreError> {
        Ok(self.narinfo_sized(path).await?.map(|(info, _)| info))
    }

    /// [`narinfo`](Self::narinfo), with the size in bytes of the narinfo as stored.
    pub(crate) async fn narinfo_sized(
        &self,
        path: &StorePath,
    ) -> Result<Option<(NarInfo, u64)>, StoreError> {
        let Some((info, size)) = self.narinfo_by_hash_sized(&path.hash_part()).await? else {
            return Ok(None);
        };
        if info.store_path != *path {
            return Err(StoreError::IdentityMismatch {
                url: self.url().to_owned(),
                key: layout::narinfo(&path.hash_part()),
                found: shown_path(&info),
                expected: info.store_dir.full_path(path),
            });
        }
        Ok(Some((info, size)))
    }

    /// The store directory of the cache's paths: its `nix-cache-info`'s `StoreDir`, or Nix's
    /// default `/nix/store` when it has none (as Nix reads such a cache). Read once.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// use cachecore::{cache_info::CacheInfo, store::BinaryCache, store_path::StoreDir};
    /// let fresh = BinaryCache::open("memory://").unwrap();
    /// assert_eq!(fresh.store_dir().await.unwrap(), StoreDir::default()); // no nix-cache-info
    /// let cache = BinaryCache::open("memory://").unwrap();
    /// cache.init(&CacheInfo { store_dir: "/gnu/store".into(), ..CacheInfo::default() }).await.unwrap();
    /// assert_eq!(cache.store_dir().await.unwrap().as_str(), "/gnu/store");
    /// # });
    /// ```
    pub async fn store_dir(&self) -> Result<StoreDir, StoreError> {
        if let Some(dir) = self.store_dir.get() {
            return Ok(dir.clone());
        }
        let dir = match self.cache_info().await? {
            Some(info) => StoreDir::new(&info.store_dir),
            None => StoreDir::default(),
        };
        Ok(self.store_dir.get_or_init(|| dir).clone())
    }

    /// Fails with [`StoreError::StoreDirMismatch`] unless the cache is for `store_dir` (see
    /// [`store_dir`](Self::store_dir)): what names store paths of one store directory (GC roots,
    /// a GC's plan) must not be applied to a cache of another.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// use cachecore::{cache_info::CacheInfo, store::BinaryCache, store_path::StoreDir};
    /// let cache = BinaryCache::open("memory://").unwrap();
    /// cache.init(&CacheInfo { store_dir: "/gnu/store".into(), ..CacheInfo::default() }).await.unwrap();
    /// assert!(cache.expect_store_dir(&StoreDir::new("/gnu/store")).await.is_ok());
    /// assert!(cache.expect_store_dir(&StoreDir::default()).await.is_err());
    /// # });
    /// ```
    pub async fn expect_store_dir(&self, store_dir: &StoreDir) -> Result<(), StoreError> {
        let theirs = self.store_dir().await?;
        if theirs != *store_dir {
            return Err(StoreError::StoreDirMismatch {
                url: self.url().to_owned(),
                ours: store_dir.as_str().to_owned(),
                theirs: theirs.as_str().to_owned(),
            });
        }
        Ok(())
    }

    /// The narinfo stored at `<hash_part>.narinfo`, checked before anyone sees it:
    /// - read with a limit of [`MAX_NARINFO_BYTES`](crate::narinfo::MAX_NARINFO_BYTES)
    ///   ([`StoreError::TooLarge`]), never whole;
    /// - parsed ([`StoreError::BadNarInfo`], quoting at most a short prefix of bad text; sizes
    ///   above [`MAX_SIZE`](crate::narinfo::MAX_SIZE) refused);
    /// - its `StorePath` must have the hash part it is stored under and be in the cache's
    ///   [`store_dir`](Self::store_dir), or it is [`StoreError::IdentityMismatch`]: a narinfo
    ///   copied over another path's key describes another path, whatever its signatures say.
    ///
    /// Every reader of narinfos (pull, copy, verify, ls, cat, info, closure walks) gets them
    /// from here.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// use cachecore::{error::ErrorKind, store::{BinaryCache, WriteMode}};
    /// # use cachecore::{hash::{Hash, HashAlgo}, narinfo::NarInfo, store_path::{StoreDir, StorePath}};
    /// let cache = BinaryCache::open("memory://").unwrap();
    /// # let path = StorePath::from_base_name("7h7qgvs4kgzsn8a6rb273saxyqh4jxlz-hello-2.12").unwrap();
    /// # let info = NarInfo::new(StoreDir::default(), path, "nar/x.nar".into(),
    /// #     Hash::digest(HashAlgo::Sha256, b"nar"), 3);
    /// # cache.put_narinfo(&info).await.unwrap();
    /// let info = cache.narinfo_by_hash("7h7qgvs4kgzsn8a6rb273saxyqh4jxlz").await.unwrap().unwrap();
    /// assert_eq!(info.store_path.name(), "hello-2.12");
    /// // The same narinfo copied under another path's key describes another path: refused.
    /// let text = cache.objects().get_bytes("7h7qgvs4kgzsn8a6rb273saxyqh4jxlz.narinfo").await.unwrap();
    /// let other = "00000000000000000000000000000000.narinfo";
    /// cache.objects().put(other, text.unwrap(), WriteMode::Overwrite).await.unwrap();
    /// let e = cache.narinfo_by_hash("00000000000000000000000000000000").await.unwrap_err();
    /// assert_eq!(e.kind(), ErrorKind::Corrupt);
    /// # });
    /// ```
    pub async fn narinfo_by_hash(&self, hash_part: &str) -> Result<Option<NarInfo>, StoreError> {
        Ok(self
            .narinfo_by_hash_sized(hash_part)
            .await?
            .map(|(info, _)| info))
    }

    /// The narinfo of `hash_part` as stored (not parsed), or `None`.
    pub(crate) async fn narinfo_bytes(&self, hash_part: &str) -> Result<Option<Bytes>, StoreError> {
        self.objects
            .get_bytes_limited(
                &layout::narinfo(hash_part),
                crate::narinfo::MAX_NARINFO_BYTES,
            )
            .await
    }

    /// Writes `bytes` as the narinfo of `hash_part` again (the GC rescue of a lease holder:
    /// the same bytes, a new version).
    pub(crate) async fn put_narinfo_bytes(
        &self,
        hash_part: &str,
        bytes: Bytes,
    ) -> Result<(), StoreError> {
        self.objects
            .put(&layout::narinfo(hash_part), bytes, WriteMode::Overwrite)
            .await
            .map(drop)
    }

    /// [`narinfo_by_hash`](Self::narinfo_by_hash), with the size in bytes of the narinfo as
    /// stored.
    pub(crate) async fn narinfo_by_hash_sized(
        &self,
        hash_part: &str,
    ) -> Result<Option<(NarInfo, u64)>, StoreError> {
        let key = layout::narinfo(hash_part);
        let Some(bytes) = self
            .objects
            .get_bytes_limited(&key, crate::narinfo::MAX_NARINFO_BYTES)
            .await?
        else {
            return Ok(None);
        };
        let info = NarInfo::parse_bytes(&bytes).map_err(|source| StoreError::BadNarInfo {
            url: self.url().to_owned(),
            key: key.clone(),
            source: Box::new(source),
        })?;
        let store_dir = self.store_dir().await?;
        if info.store_path.hash_part() != hash_part || info.store_dir != store_dir {
            return Err(StoreError::IdentityMismatch {
                url: self.url().to_owned(),
                key,
                found: shown_path(&info),
                expected: format!("{}/{hash_part}-…", store_dir.as_str()),
            });
        }
        Ok(Some((info, bytes.len() as u64)))
    }

    /// Whether the cache has a narinfo for `path` (one HEAD request).
    ///
    /// See [`put_narinfo`](Self::put_narinfo) for an example.
    pub async fn has_narinfo(&self, path: &StorePath) -> Result<bool, StoreError> {
        Ok(self
            .objects
            .head(&layout::narinfo(&path.hash_part()))
            .await?
            .is_some())
    }

    /// Whether the cache has a `.ls` listing for `path` (one HEAD request).
    ///
    /// See [`put_listing_bytes`](Self::put_listing_bytes) for an example.
    pub async fn has_listing(&self, path: &StorePath) -> Result<bool, StoreError> {
        Ok(self
            .objects
            .head(&layout::listing(&path.hash_part()))
            .await?
            .is_some())
    }

    /// Of `paths`, those without a narinfo, in the order given; `concurrency` HEADs in flight.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// use cachecore::store::BinaryCache;
    /// use cachecore::store_path::StorePath;
    /// # use cachecore::{hash::{Hash, HashAlgo}, narinfo::NarInfo, store_path::StoreDir};
    /// let cache = BinaryCache::open("memory://").unwrap();
    /// let present = StorePath::from_base_name("7h7qgvs4kgzsn8a6rb273saxyqh4jxlz-hello-2.12").unwrap();
    /// # cache.put_narinfo(&NarInfo::new(StoreDir::default(), present.clone(), "nar/x.nar".into(),
    /// #     Hash::digest(HashAlgo::Sha256, b"nar"), 3)).await.unwrap();
    /// let absent = StorePath::from_base_name("00000000000000000000000000000000-absent").unwrap();
    /// // What a push still has to upload.
    /// let todo = cache.missing(&[present, absent.clone()], 16).await.unwrap();
    /// assert_eq!(todo, [absent]);
    /// # });
    /// ```
    pub async fn missing(
        &self,
        paths: &[StorePath],
        concurrency: usize,
    ) -> Result<Vec<StorePath>, StoreError> {
        stream::iter(paths)
            .map(|p| async move { Ok::<_, StoreError>((p, self.has_narinfo(p).await?)) })
            .buffered(concurrency.max(1))
            .try_filter_map(|(p, present)| async move { Ok((!present).then(|| p.clone())) })
            .try_collect()
            .await
    }

    /// Writes `<hash>.narinfo` for `info.store_path`, replacing any.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// use cachecore::compression::Compression;
    /// use cachecore::hash::{Hash, HashAlgo};
    /// use cachecore::narinfo::NarInfo;
    /// use cachecore::store::BinaryCache;
    /// use cachecore::store_path::{StoreDir, StorePath};
    /// let cache = BinaryCache::open("memory://").unwrap();
    /// let path = StorePath::from_base_name("7h7qgvs4kgzsn8a6rb273saxyqh4jxlz-hello-2.12").unwrap();
    /// let nar_hash = Hash::digest(HashAlgo::Sha256, b"the NAR");
    /// // (A real writer puts the NAR object at `url` first, then the narinfo that names it.)
    /// let url = BinaryCache::nar_url(&nar_hash, Compression::None);
    /// let info = NarInfo::new(StoreDir::default(), path.clone(), url, nar_hash, 7);
    /// cache.put_narinfo(&info).await.unwrap();
    /// assert!(cache.has_narinfo(&path).await.unwrap());
    /// assert_eq!(cache.narinfo(&path).await.unwrap(), Some(info));
    /// # });
    /// ```
    pub async fn put_narinfo(&self, info: &NarInfo) -> Result<(), StoreError> {
        self.put_narinfo_with(info, WriteMode::Overwrite)
            .await
            .map(drop)
    }

    /// Writes `<hash>.narinfo` for `info.store_path` with a [`WriteMode`] (create-only for a
    /// writer that must not replace another's narinfo, where the store honours it).
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// use cachecore::{error::ErrorKind, store::{BinaryCache, WriteMode}};
    /// # use cachecore::{hash::{Hash, HashAlgo}, narinfo::NarInfo, store_path::{StoreDir, StorePath}};
    /// let cache = BinaryCache::open("memory://").unwrap();
    /// # let path = StorePath::from_base_name("7h7qgvs4kgzsn8a6rb273saxyqh4jxlz-hello-2.12").unwrap();
    /// # let info = NarInfo::new(StoreDir::default(), path, "nar/x.nar".into(),
    /// #     Hash::digest(HashAlgo::Sha256, b"nar"), 3);
    /// let written = cache.put_narinfo_with(&info, WriteMode::Create).await.unwrap();
    /// assert_eq!(written.size, info.to_string().len() as u64);
    /// // Create-only: a second writer does not replace the first one's narinfo.
    /// let e = cache.put_narinfo_with(&info, WriteMode::Create).await.unwrap_err();
    /// assert_eq!(e.kind(), ErrorKind::Conflict);
    /// # });
    /// ```
    pub async fn put_narinfo_with(
        &self,
        info: &NarInfo,
        mode: WriteMode,
    ) -> Result<Written, StoreError> {
        let key = layout::narinfo(&info.store_path.hash_part());
        let method = self
            .settings
            .narinfo_compression
            .unwrap_or(Compression::None);
        self.objects
            .put_encoded(&key, Bytes::from(info.to_string()), mode, method)
            .await
    }

    /// Hash parts of all narinfos: the root-level keys `<32 nix32 chars>.narinfo`, streamed a
    /// page (about 1000 keys) at a time on S3, GCS and Azure. Other backends read the root
    /// listing in one go (about 100 bytes of memory per object at the root). Plain HTTP caches
    /// cannot be listed ([`StoreError::Unsupported`]).
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// use cachecore::store::BinaryCache;
    /// use futures::TryStreamExt;
    /// # use cachecore::{hash::{Hash, HashAlgo}, narinfo::NarInfo, store_path::{StoreDir, StorePath}};
    /// let cache = BinaryCache::open("memory://").unwrap();
    /// # let path = StorePath::from_base_name("7h7qgvs4kgzsn8a6rb273saxyqh4jxlz-hello-2.12").unwrap();
    /// # cache.put_narinfo(&NarInfo::new(StoreDir::default(), path, "nar/x.nar".into(),
    /// #     Hash::digest(HashAlgo::Sha256, b"nar"), 3)).await.unwrap();
    /// cache.init(&Default::default()).await.unwrap(); // `nix-cache-info`: not a narinfo
    /// let hashes: Vec<String> = cache.list_narinfo_hashes().try_collect().await.unwrap();
    /// assert_eq!(hashes, ["7h7qgvs4kgzsn8a6rb273saxyqh4jxlz"]);
    /// # });
    /// ```
    pub fn list_narinfo_hashes(&self) -> BoxStream<'_, Result<String, StoreError>> {
        self.objects
            .list_dir("")
            .try_filter_map(|m| async move { Ok(layout::narinfo_hash(&m.key).map(str::to_owned)) })
            .boxed()
    }

    /// Every narinfo in the cache, parsed, as a stream: the listing is read page by page and
    /// up to `concurrency` narinfos are fetched at once, in no particular order. Memory stays
    /// bounded by `concurrency` and a listing page, whatever the size of the cache. A listed
    /// narinfo that disappears before it is read is left out.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// use cachecore::store::BinaryCache;
    /// use futures::TryStreamExt;
    /// let cache = BinaryCache::open("memory://").unwrap();
    /// let all: Vec<_> = cache.narinfos(16).try_collect().await.unwrap();
    /// assert!(all.is_empty());
    /// # });
    /// ```
    pub fn narinfos(&self, concurrency: usize) -> BoxStream<'_, Result<NarInfo, StoreError>> {
        self.list_narinfo_hashes()
            .map_ok(move |hash| async move { self.narinfo_by_hash(&hash).await })
            .try_buffer_unordered(concurrency.max(1))
            .try_filter_map(|info| async move { Ok(info) })
            .boxed()
    }

    /// The `URL:` a narinfo gives a NAR named after `hash` and compressed with `compression`:
    /// `nar/<nix32 hash>.nar<ext>`.
    ///
    /// ```
    /// use cachecore::compression::Compression;
    /// use cachecore::hash::{Hash, HashAlgo};
    /// use cachecore::store::BinaryCache;
    /// let file_hash = Hash::digest(HashAlgo::Sha256, b"the compressed NAR");
    /// let url = BinaryCache::nar_url(&file_hash, Compression::Xz);
    /// assert_eq!(url, format!("nar/{}.nar.xz", file_hash.to_nix32()));
    /// ```
    pub fn nar_url(hash: &Hash, compression: Compression) -> String {
        layout::nar(hash, compression)
    }

    fn nar_key<'a>(&self, url: &'a str) -> Result<&'a str, StoreError> {
        if layout::is_nar(url) {
            Ok(url)
        } else {
            Err(StoreError::NotANarKey {
                url: self.url().to_owned(),
                key: url.to_owned(),
            })
        }
    }

    /// Streams the NAR object `info` names (its `URL:`), as stored (compressed); `None` when
    /// it is missing. Only the key is checked here (a URL outside `nar/` is
    /// [`StoreError::NotANarKey`], a corrupt narinfo); see `ops::browse` for the verifying read.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
    /// # use std::sync::Arc;
    /// # use cachecore::ops::{self, NoProgress, PushOptions};
    /// # use cachecore::store_path::StoreDir;
    /// use cachecore::store::BinaryCache;
    /// use futures::TryStreamExt;
    /// # let src = tempfile::tempdir().unwrap();
    /// # std::fs::write(src.path().join("hello"), "hello, world\n").unwrap();
    /// let cache = BinaryCache::open("memory://").unwrap();
    /// # let (path, _) = ops::push_add(&cache, &StoreDir::default(), src.path(), "hello",
    /// #     &PushOptions::default(), Arc::new(NoProgress)).await.unwrap();
    /// let info = cache.narinfo(&path).await.unwrap().unwrap();
    /// let object = cache.nar_object(&info).await.unwrap().unwrap();
    /// let chunks: Vec<bytes::Bytes> = object.try_collect().await.unwrap();
    /// // The object as stored: compressed, `FileSize` bytes long.
    /// assert_eq!(chunks.concat().len() as u64, info.file_size.unwrap());
    /// # });
    /// ```
    pub async fn nar_object(&self, info: &NarInfo) -> Result<Option<ByteStream>, StoreError> {
        let key = self.nar_key(&info.url)?;
        Ok(self.objects.get(key, ReadRange::All).await?.map(|o| o.body))
    }

    /// Writes a NAR object at `url` (a `nar/…` key, as [`nar_url`](Self::nar_url) gives or a
    /// narinfo's `URL:` holds) from a stream; returns its size. See
    /// [`Objects::put_stream`] for what a failing stream leaves (nothing).
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// use bytes::Bytes;
    /// use cachecore::store::BinaryCache;
    /// let cache = BinaryCache::open("memory://").unwrap();
    /// let chunks = [Bytes::from_static(b"nix-"), Bytes::from_static(b"archive")];
    /// let data = futures::stream::iter(chunks.map(Ok::<_, std::io::Error>));
    /// assert_eq!(cache.put_nar_stream("nar/example.nar", data).await.unwrap(), 11);
    /// // Only `nar/…` keys take NAR objects.
    /// let data = futures::stream::iter([Ok::<_, std::io::Error>(Bytes::new())]);
    /// assert!(cache.put_nar_stream("example.narinfo", data).await.is_err());
    /// # });
    /// ```
    pub async fn put_nar_stream(
        &self,
        url: &str,
        data: impl Stream<Item = Result<Bytes, io::Error>> + Send,
    ) -> Result<u64, StoreError> {
        let key = self.nar_key(url)?;
        Ok(self
            .objects
            .put_stream(key, data, WriteMode::Overwrite)
            .await?
            .size)
    }

    /// Writes a small NAR object at `url` (a `nar/…` key) in one request.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// use bytes::Bytes;
    /// use cachecore::{compression::Compression, hash::{Hash, HashAlgo}, store::BinaryCache};
    /// let cache = BinaryCache::open("memory://").unwrap();
    /// let url = BinaryCache::nar_url(&Hash::digest(HashAlgo::Sha256, b"NAR"), Compression::None);
    /// cache.put_nar(&url, Bytes::from_static(b"NAR")).await.unwrap();
    /// cache.sync_nar(&url).await.unwrap(); // durable before a narinfo names it
    /// assert_eq!(cache.objects().get_bytes(&url).await.unwrap().unwrap(), &b"NAR"[..]);
    /// assert!(cache.put_nar("nix-cache-info", Bytes::new()).await.is_err()); // not a `nar/…` key
    /// # });
    /// ```
    pub async fn put_nar(&self, url: &str, data: Bytes) -> Result<(), StoreError> {
        let key = self.nar_key(url)?;
        self.objects
            .put(key, data, WriteMode::Overwrite)
            .await
            .map(drop)
    }

    /// Starts a staged NAR: an object under a temporary key, to be named after its content
    /// once known ([`publish_staged_nar`](Self::publish_staged_nar)) or dropped
    /// ([`discard_staged_nar`](Self::discard_staged_nar)). `unique` must differ between
    /// concurrent writers.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// use bytes::Bytes;
    /// use cachecore::{compression::Compression, hash::{Hash, HashAlgo}, store::BinaryCache};
    /// let cache = BinaryCache::open("memory://").unwrap();
    /// let staged = cache.staged_nar("upload-1");
    /// let data = futures::stream::iter([Ok::<_, std::io::Error>(Bytes::from_static(b"NAR bytes"))]);
    /// assert_eq!(cache.put_staged_nar(&staged, data).await.unwrap(), 9);
    /// // Its hash is known once it is written: name it after it.
    /// let file_hash = Hash::digest(HashAlgo::Sha256, b"NAR bytes");
    /// let url = cache.publish_staged_nar(staged, &file_hash, Compression::None).await.unwrap();
    /// assert_eq!(url, BinaryCache::nar_url(&file_hash, Compression::None));
    /// assert_eq!(cache.objects().get_bytes(&url).await.unwrap().unwrap(), &b"NAR bytes"[..]);
    /// # });
    /// ```
    pub fn staged_nar(&self, unique: &str) -> StagedNar {
        StagedNar {
            key: layout::temp_nar(unique),
        }
    }

    /// Streams the data of a staged NAR in; returns its size.
    ///
    /// See [`staged_nar`](Self::staged_nar) for an example.
    pub async fn put_staged_nar(
        &self,
        staged: &StagedNar,
        data: impl Stream<Item = Result<Bytes, io::Error>> + Send,
    ) -> Result<u64, StoreError> {
        Ok(self
            .objects
            .put_stream(&staged.key, data, WriteMode::Overwrite)
            .await?
            .size)
    }

    /// Moves a staged NAR to its content-addressed key and returns that key (the narinfo's
    /// `URL:`).
    ///
    /// See [`staged_nar`](Self::staged_nar) for an example.
    pub async fn publish_staged_nar(
        &self,
        staged: StagedNar,
        file_hash: &Hash,
        compression: Compression,
    ) -> Result<String, StoreError> {
        let url = layout::nar(file_hash, compression);
        self.objects.rename(&staged.key, &url).await?;
        Ok(url)
    }

    /// Deletes a staged NAR (best effort on failure paths).
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// use bytes::Bytes;
    /// use cachecore::store::BinaryCache;
    /// let cache = BinaryCache::open("memory://").unwrap();
    /// let staged = cache.staged_nar("upload-1");
    /// let data = futures::stream::iter([Ok::<_, std::io::Error>(Bytes::from_static(b"NAR"))]);
    /// cache.put_staged_nar(&staged, data).await.unwrap();
    /// // The upload failed after all: nothing may stay behind.
    /// cache.discard_staged_nar(&staged).await.unwrap();
    /// assert!(cache.debris().await.unwrap().is_empty());
    /// # });
    /// ```
    pub async fn discard_staged_nar(&self, staged: &StagedNar) -> Result<(), StoreError> {
        self.objects.delete(&staged.key).await
    }

    /// The `.ls` listing of `path` as stored (JSON), or `None`; one larger than
    /// [`MAX_LISTING_BYTES`] is refused ([`StoreError::TooLarge`]).
    ///
    /// ```
    /// # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
    /// # use std::sync::Arc;
    /// # use cachecore::ops::{self, NoProgress, PushOptions};
    /// # use cachecore::store_path::StoreDir;
    /// use cachecore::nar::{Listing, ListingNode};
    /// use cachecore::store::BinaryCache;
    /// # let src = tempfile::tempdir().unwrap();
    /// # std::fs::create_dir(src.path().join("bin")).unwrap();
    /// # std::fs::write(src.path().join("bin/hello"), "hello, world\n").unwrap();
    /// let cache = BinaryCache::open("memory://").unwrap();
    /// # let (path, _) = ops::push_add(&cache, &StoreDir::default(), src.path(), "hello",
    /// #     &PushOptions::default(), Arc::new(NoProgress)).await.unwrap();
    /// let json = cache.listing_bytes(&path).await.unwrap().unwrap();
    /// let listing = Listing::parse(&json).unwrap();
    /// assert!(matches!(listing.get("bin/hello"), Some(ListingNode::Regular { size: 13, .. })));
    /// # });
    /// ```
    pub async fn listing_bytes(&self, path: &StorePath) -> Result<Option<Bytes>, StoreError> {
        self.objects
            .get_bytes_limited(&layout::listing(&path.hash_part()), MAX_LISTING_BYTES)
            .await
    }

    /// Makes the NAR object at `url` (a narinfo's `URL:`) durable before a narinfo names it
    /// (see [`Objects::sync`]).
    ///
    /// See [`put_nar`](Self::put_nar) for an example.
    pub async fn sync_nar(&self, url: &str) -> Result<(), StoreError> {
        self.objects.sync(self.nar_key(url)?).await
    }

    /// Makes the listing of `path` durable before its narinfo is written.
    ///
    /// See [`put_listing_bytes`](Self::put_listing_bytes) for an example.
    pub async fn sync_listing(&self, path: &StorePath) -> Result<(), StoreError> {
        self.objects.sync(&layout::listing(&path.hash_part())).await
    }

    /// A streamed NAR object's `URL:`: `nar/<nix32 NarHash>-<unique>.nar<ext>`, new for every
    /// upload (see `layout::nar_streamed`).
    ///
    /// ```
    /// use cachecore::{compression::Compression, hash::{Hash, HashAlgo}, store::BinaryCache};
    /// let nar_hash = Hash::digest(HashAlgo::Sha256, b"the NAR");
    /// let a = BinaryCache::streamed_nar_url(&nar_hash, Compression::Zstd);
    /// let b = BinaryCache::streamed_nar_url(&nar_hash, Compression::Zstd);
    /// assert_ne!(a, b); // a new key for every upload
    /// assert!(a.starts_with(&format!("nar/{}-", nar_hash.to_nix32())));
    /// assert!(a.ends_with(".nar.zst"));
    /// ```
    pub fn streamed_nar_url(nar_hash: &Hash, compression: Compression) -> String {
        use rand_core::RngCore as _;
        layout::nar_streamed(nar_hash, rand_core::OsRng.next_u64(), compression)
    }

    /// Writes the `.ls` listing of `path` (JSON, as [`crate::nar::Listing`] serializes).
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// use bytes::Bytes;
    /// use cachecore::{store::BinaryCache, store_path::StorePath};
    /// let cache = BinaryCache::open("memory://").unwrap();
    /// let path = StorePath::from_base_name("7h7qgvs4kgzsn8a6rb273saxyqh4jxlz-hello-2.12").unwrap();
    /// assert!(!cache.has_listing(&path).await.unwrap());
    /// let json = Bytes::from_static(br#"{"version":1,"root":{"type":"regular","size":0}}"#);
    /// cache.put_listing_bytes(&path, json.clone()).await.unwrap();
    /// cache.sync_listing(&path).await.unwrap(); // durable before the narinfo is written
    /// assert!(cache.has_listing(&path).await.unwrap());
    /// assert_eq!(cache.listing_bytes(&path).await.unwrap(), Some(json));
    /// # });
    /// ```
    pub async fn put_listing_bytes(&self, path: &StorePath, json: Bytes) -> Result<(), StoreError> {
        let method = self.settings.ls_compression.unwrap_or(Compression::None);
        self.objects
            .put_encoded(
                &layout::listing(&path.hash_part()),
                json,
                WriteMode::Overwrite,
                method,
            )
            .await
            .map(drop)
    }

    /// The frame digests of a seekable NAR, `nar/<nix32 hash>.frames` (see
    /// [`crate::access::frame_digests`]), at most `limit` bytes, or `None` when missing; a
    /// longer object is [`StoreError::TooLarge`]. Whether they hash to `hash` is the caller's
    /// check.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// use bytes::Bytes;
    /// use cachecore::store::BinaryCache;
    /// let cache = BinaryCache::open("memory://").unwrap();
    /// let hash = cache.put_frame_digests(Bytes::from_static(b"digests")).await.unwrap();
    /// cache.sync_frame_digests(&hash).await.unwrap();
    /// assert_eq!(cache.frame_digests(&hash, 100).await.unwrap().unwrap(), &b"digests"[..]);
    /// assert!(cache.frame_digests(&hash, 3).await.is_err()); // longer than the limit
    /// # });
    /// ```
    pub async fn frame_digests(
        &self,
        hash: &Hash,
        limit: u64,
    ) -> Result<Option<Bytes>, StoreError> {
        self.objects
            .get_bytes_limited(&layout::frame_digests(hash), limit)
            .await
    }

    /// Writes frame digests under their sha256 (returned); see [`frame_digests`](Self::frame_digests).
    pub async fn put_frame_digests(&self, bytes: Bytes) -> Result<Hash, StoreError> {
        let hash = Hash::digest(crate::hash::HashAlgo::Sha256, &bytes);
        self.objects
            .put(&layout::frame_digests(&hash), bytes, WriteMode::Overwrite)
            .await?;
        Ok(hash)
    }

    /// The metadata of the frame digests named `hash`, or `None` when missing.
    pub async fn frame_digests_meta(&self, hash: &Hash) -> Result<Option<ObjectInfo>, StoreError> {
        self.objects.head(&layout::frame_digests(hash)).await
    }

    /// Deletes the frame digests named `hash` (missing is not an error).
    pub async fn delete_frame_digests(&self, hash: &Hash) -> Result<(), StoreError> {
        self.objects.delete(&layout::frame_digests(hash)).await
    }

    /// Makes the frame digests named `hash` durable before a narinfo names them.
    pub async fn sync_frame_digests(&self, hash: &Hash) -> Result<(), StoreError> {
        self.objects.sync(&layout::frame_digests(hash)).await
    }

    /// The build log of the derivation `drv` (`log/<drv base name>`), or `None`.
    ///
    /// See [`put_log_stream`](Self::put_log_stream) for an example.
    pub async fn log(&self, drv: &StorePath) -> Result<Option<Bytes>, StoreError> {
        self.objects.get_bytes(&layout::log(&drv.to_string())).await
    }

    /// Streams the build log of the derivation `drv` in (plain text, as `nix log` reads it).
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// use bytes::Bytes;
    /// use cachecore::{store::BinaryCache, store_path::StorePath};
    /// let cache = BinaryCache::open("memory://").unwrap();
    /// let drv = StorePath::from_base_name("7h7qgvs4kgzsn8a6rb273saxyqh4jxlz-hello-2.12.drv").unwrap();
    /// let lines = futures::stream::iter([Ok::<_, std::io::Error>(Bytes::from_static(b"building\n"))]);
    /// assert_eq!(cache.put_log_stream(&drv, lines).await.unwrap(), 9);
    /// assert_eq!(cache.log(&drv).await.unwrap().unwrap(), &b"building\n"[..]);
    /// # });
    /// ```
    pub async fn put_log_stream(
        &self,
        drv: &StorePath,
        data: impl Stream<Item = Result<Bytes, io::Error>> + Send,
    ) -> Result<u64, StoreError> {
        let method = self.settings.log_compression.unwrap_or(Compression::None);
        Ok(self
            .objects
            .put_stream_encoded(
                &layout::log(&drv.to_string()),
                data,
                WriteMode::Overwrite,
                method,
            )
            .await?
            .size)
    }

    /// The realisation `id` (`realisations/<drv hash>!<output>.doi`, JSON), or `None`.
    ///
    /// See [`put_realisation_bytes`](Self::put_realisation_bytes) for an example.
    pub async fn realisation_bytes(&self, id: &DrvOutput) -> Result<Option<Bytes>, StoreError> {
        self.objects
            .get_bytes_limited(&layout::realisation(id), MAX_REALISATION_BYTES)
            .await
    }

    /// Writes the realisation `id` (JSON, as [`crate::realisation`] prints it).
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// use cachecore::{realisation::Realisation, store::BinaryCache};
    /// # let json = r#"{"dependentRealisations":{},"id":"sha256:6b9206b68e3d12a3cc840a6e022b5394a2297822e0c61f99383ed9e99661c2cf!out","outPath":"aghv8shzw76p3aakd1zl1scsx4l5xf6l-ca-thing","signatures":[]}"#;
    /// let cache = BinaryCache::open("memory://").unwrap();
    /// let r = Realisation::parse(json).unwrap();
    /// cache.put_realisation_bytes(&r.id, r.to_json().into()).await.unwrap();
    /// let back = cache.realisation_bytes(&r.id).await.unwrap().unwrap();
    /// assert_eq!(Realisation::parse(std::str::from_utf8(&back).unwrap()).unwrap(), r);
    /// # });
    /// ```
    pub async fn put_realisation_bytes(
        &self,
        id: &DrvOutput,
        json: Bytes,
    ) -> Result<(), StoreError> {
        self.objects
            .put(&layout::realisation(id), json, WriteMode::Overwrite)
            .await
            .map(drop)
    }

    /// The GC root `name` of `host`, or `None`.
    ///
    /// See [`list_gc_roots`](Self::list_gc_roots) for an example.
    pub async fn gc_root(&self, host: &str, name: &str) -> Result<Option<Bytes>, StoreError> {
        self.objects
            .get_bytes_limited(&layout::gcroot(host, name), MAX_GC_OBJECT_BYTES)
            .await
    }

    /// Writes the GC root `name` of `host` with a [`WriteMode`].
    ///
    /// See [`list_gc_roots`](Self::list_gc_roots) for an example.
    pub async fn put_gc_root(
        &self,
        host: &str,
        name: &str,
        data: Bytes,
        mode: WriteMode,
    ) -> Result<Written, StoreError> {
        self.objects
            .put(&layout::gcroot(host, name), data, mode)
            .await
    }

    /// Moves the GC root `name` of `host` to the trash (`gctrash/`), where it stays restorable.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// use bytes::Bytes;
    /// use cachecore::store::{BinaryCache, WriteMode};
    /// use futures::TryStreamExt;
    /// let cache = BinaryCache::open("memory://").unwrap();
    /// let target = Bytes::from_static(b"/nix/store/7h7qgvs4kgzsn8a6rb273saxyqh4jxlz-hello-2.12");
    /// cache.put_gc_root("laptop", "hello", target, WriteMode::Create).await.unwrap();
    /// cache.trash_gc_root("laptop", "hello").await.unwrap();
    /// assert_eq!(cache.gc_root("laptop", "hello").await.unwrap(), None);
    /// let roots: Vec<_> = cache.list_gc_roots(None).try_collect().await.unwrap();
    /// assert!(roots.is_empty());
    /// # });
    /// ```
    pub async fn trash_gc_root(&self, host: &str, name: &str) -> Result<(), StoreError> {
        self.objects
            .rename(&layout::gcroot(host, name), &layout::gctrash(host, name))
            .await
    }

    /// Every GC root (of `host`, or of all hosts), streamed. A key under `gcroots/` that is
    /// not `gcroots/<host>/<name>` is a [`StoreError::BadKey`]: a root that cannot be read must
    /// stop a GC, never be skipped.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// use bytes::Bytes;
    /// use cachecore::store::{BinaryCache, GcRootEntry, WriteMode};
    /// use futures::TryStreamExt;
    /// let cache = BinaryCache::open("memory://").unwrap();
    /// let target = Bytes::from_static(b"/nix/store/7h7qgvs4kgzsn8a6rb273saxyqh4jxlz-hello-2.12");
    /// cache.put_gc_root("laptop", "hello", target.clone(), WriteMode::Create).await.unwrap();
    /// let roots: Vec<GcRootEntry> = cache.list_gc_roots(Some("laptop")).try_collect().await.unwrap();
    /// assert_eq!((roots.len(), roots[0].name.as_str()), (1, "hello"));
    /// assert_eq!(cache.gc_root("laptop", "hello").await.unwrap(), Some(target));
    /// # });
    /// ```
    pub fn list_gc_roots(
        &self,
        host: Option<&str>,
    ) -> BoxStream<'static, Result<GcRootEntry, StoreError>> {
        let prefix = match host {
            Some(h) => layout::gcroots_of(h),
            None => layout::GCROOTS_DIR.to_owned(),
        };
        self.list_root_objects(prefix, layout::gcroot_parts)
    }

    /// Every trashed GC root (`gctrash/`, of `host` or of all hosts), streamed; a key there
    /// that is not `gctrash/<host>/<name>` is an error, as for
    /// [`list_gc_roots`](Self::list_gc_roots).
    pub fn list_gc_trash(
        &self,
        host: Option<&str>,
    ) -> BoxStream<'static, Result<GcRootEntry, StoreError>> {
        let prefix = match host {
            Some(h) => format!("{}/{h}", layout::GCTRASH_DIR),
            None => layout::GCTRASH_DIR.to_owned(),
        };
        self.list_root_objects(prefix, layout::gctrash_parts)
    }

    fn list_root_objects(
        &self,
        prefix: String,
        parts: fn(&str) -> Option<(&str, &str)>,
    ) -> BoxStream<'static, Result<GcRootEntry, StoreError>> {
        let url = self.url().to_owned();
        self.objects
            .list(&prefix)
            .and_then(move |meta| {
                let parsed = parts(&meta.key).map(|(h, n)| GcRootEntry {
                    host: h.to_owned(),
                    name: n.to_owned(),
                    meta: meta.clone(),
                });
                // A key that does not parse is an error, never skipped: GC must not run with
                // a root it cannot read (that root's paths would be collected).
                let result = parsed.ok_or_else(|| StoreError::BadKey {
                    url: url.clone(),
                    key: meta.key.clone(),
                    reason: format!("not {prefix}/<host>/<name>"),
                });
                async move { result }
            })
            .boxed()
    }

    /// The trashed GC root `name` of `host`, or `None`.
    pub async fn gc_trash(&self, host: &str, name: &str) -> Result<Option<Bytes>, StoreError> {
        self.objects
            .get_bytes_limited(&layout::gctrash(host, name), MAX_GC_OBJECT_BYTES)
            .await
    }

    /// Writes the trashed GC root `name` of `host`.
    pub async fn put_gc_trash(
        &self,
        host: &str,
        name: &str,
        data: Bytes,
        mode: WriteMode,
    ) -> Result<Written, StoreError> {
        self.objects
            .put(&layout::gctrash(host, name), data, mode)
            .await
    }

    /// Deletes the GC root `name` of `host` (missing is not an error).
    pub async fn delete_gc_root(&self, host: &str, name: &str) -> Result<(), StoreError> {
        self.objects.delete(&layout::gcroot(host, name)).await
    }

    /// Deletes the trashed GC root `name` of `host` (missing is not an error).
    pub async fn delete_gc_trash(&self, host: &str, name: &str) -> Result<(), StoreError> {
        self.objects.delete(&layout::gctrash(host, name)).await
    }

    /// Every object of the cache, recursively, each with what it is ([`CacheObject`]), as a
    /// stream in no particular order (one listing pass, by up to `concurrency` requests at a
    /// time on S3, GCS and Azure: [`Objects::list_all`]; memory bounded by that many listing
    /// pages).
    pub fn list_cache_objects(
        &self,
        concurrency: usize,
    ) -> BoxStream<'static, Result<CacheObject, StoreError>> {
        self.objects
            .list_all(concurrency)
            .map_ok(|meta| {
                if let Some(h) = layout::narinfo_hash(&meta.key) {
                    CacheObject::NarInfo {
                        hash_part: h.to_owned(),
                        meta,
                    }
                } else if let Some(h) = layout::listing_hash(&meta.key) {
                    CacheObject::Listing {
                        hash_part: h.to_owned(),
                        meta,
                    }
                } else if layout::is_nar(&meta.key) {
                    CacheObject::Nar { meta }
                } else if layout::frame_digests_hash(&meta.key).is_some() {
                    CacheObject::FrameDigests { meta }
                } else if let Some(drv) = layout::log_drv(&meta.key) {
                    CacheObject::Log {
                        drv: drv.to_owned(),
                        meta,
                    }
                } else if let Some(id) = layout::realisation_id_of(&meta.key) {
                    CacheObject::Realisation {
                        id: id.to_owned(),
                        meta,
                    }
                } else if let Some(name) = layout::gc_lease_name(&meta.key) {
                    CacheObject::GcLease {
                        name: name.to_owned(),
                        meta,
                    }
                } else if let Some(t) = meta.key.strip_prefix(layout::GC_TOMBSTONE_DIR) {
                    match t.strip_prefix('/') {
                        Some(name) if !name.is_empty() && !name.contains('/') => {
                            CacheObject::GcTombstone {
                                name: name.to_owned(),
                                meta,
                            }
                        }
                        _ => CacheObject::Other { meta },
                    }
                } else {
                    CacheObject::Other { meta }
                }
            })
            .boxed()
    }

    /// The metadata of the NAR object at `url` (a `nar/…` key), or `None` when it is missing.
    pub async fn nar_meta(&self, url: &str) -> Result<Option<ObjectInfo>, StoreError> {
        let key = self.nar_key(url)?;
        self.objects.head(key).await
    }

    /// The metadata of the narinfo of hash part `hash_part`, or `None` when it is missing.
    pub async fn narinfo_meta(&self, hash_part: &str) -> Result<Option<ObjectInfo>, StoreError> {
        self.objects.head(&layout::narinfo(hash_part)).await
    }

    /// Deletes the narinfo of the store path with hash part `hash_part` (missing is not an
    /// error).
    pub async fn delete_narinfo(&self, hash_part: &str) -> Result<(), StoreError> {
        self.objects.delete(&layout::narinfo(hash_part)).await
    }

    /// Deletes the listing of the store path with hash part `hash_part`.
    pub async fn delete_listing(&self, hash_part: &str) -> Result<(), StoreError> {
        self.objects.delete(&layout::listing(hash_part)).await
    }

    /// Deletes the NAR object at `url` (only `nar/…` keys).
    pub async fn delete_nar(&self, url: &str) -> Result<(), StoreError> {
        let key = self.nar_key(url)?;
        self.objects.delete(key).await
    }

    /// Deletes the realisation `realisations/<id>.doi`.
    pub async fn delete_realisation(&self, id: &str) -> Result<(), StoreError> {
        self.objects.delete(&layout::realisation_key(id)).await
    }

    /// Deletes the build log of the derivation with base name `drv` (`log/<drv>`).
    pub async fn delete_log(&self, drv: &str) -> Result<(), StoreError> {
        self.objects.delete(&layout::log(drv)).await
    }

    /// The GC tombstone `name`, or `None`.
    pub async fn gc_tombstone(&self, name: &str) -> Result<Option<Bytes>, StoreError> {
        self.objects
            .get_bytes_limited(&layout::gc_tombstone(name), MAX_GC_OBJECT_BYTES)
            .await
    }

    /// Writes the GC tombstone `name` (each run writes its own, named with 64 random bits: no
    /// create-only write needed, which Garage does not have).
    pub async fn put_gc_tombstone(&self, name: &str, data: Bytes) -> Result<Written, StoreError> {
        self.objects
            .put(&layout::gc_tombstone(name), data, WriteMode::Overwrite)
            .await
    }

    /// The metadata of the GC tombstone `name`, or `None`.
    pub async fn gc_tombstone_meta(&self, name: &str) -> Result<Option<ObjectInfo>, StoreError> {
        self.objects.head(&layout::gc_tombstone(name)).await
    }

    /// Deletes the GC tombstone `name`.
    pub async fn delete_gc_tombstone(&self, name: &str) -> Result<(), StoreError> {
        self.objects.delete(&layout::gc_tombstone(name)).await
    }

    /// Whether the store can be listed (every store but a plain HTTP cache).
    pub fn can_list(&self) -> bool {
        self.objects.is_listable()
    }

    /// The GC lease `name` (`gcleases/<name>`), or `None`.
    pub async fn gc_lease(&self, name: &str) -> Result<Option<Bytes>, StoreError> {
        self.objects
            .get_bytes_limited(&layout::gc_lease(name), MAX_GC_OBJECT_BYTES)
            .await
    }

    /// Writes the GC lease `name` (a name of its own, with 64 random bits: no create-only
    /// write needed, which Garage does not have).
    pub async fn put_gc_lease(&self, name: &str, data: Bytes) -> Result<Written, StoreError> {
        self.objects
            .put(&layout::gc_lease(name), data, WriteMode::Overwrite)
            .await
    }

    /// Deletes the GC lease `name`.
    pub async fn delete_gc_lease(&self, name: &str) -> Result<(), StoreError> {
        self.objects.delete(&layout::gc_lease(name)).await
    }

    /// The names of the GC tombstones (`.cachecore/gc/<name>`) with their metadata: one
    /// listing of that directory.
    pub async fn list_gc_tombstones(&self) -> Result<Vec<(String, ObjectInfo)>, StoreError> {
        let mut out = Vec::new();
        let mut listed = self.objects.list(layout::GC_TOMBSTONE_DIR);
        while let Some(meta) = listed.try_next().await? {
            if let Some(name) = meta
                .key
                .strip_prefix(layout::GC_TOMBSTONE_DIR)
                .and_then(|t| t.strip_prefix('/'))
                .filter(|n| !n.is_empty() && !n.contains('/'))
            {
                out.push((name.to_owned(), meta));
            }
        }
        Ok(out)
    }

    /// The names of the GC leases (`gcleases/<name>`): one listing of that directory.
    pub async fn list_gc_leases(&self) -> Result<Vec<String>, StoreError> {
        let mut out = Vec::new();
        let mut listed = self.objects.list(layout::GCLEASES_DIR);
        while let Some(meta) = listed.try_next().await? {
            if let Some(name) = layout::gc_lease_name(&meta.key) {
                out.push(name.to_owned());
            }
        }
        Ok(out)
    }

    /// The push index entry `name`, or `None`.
    ///
    /// See [`put_index_entry`](Self::put_index_entry) for an example.
    pub async fn index_entry(&self, name: &str) -> Result<Option<Bytes>, StoreError> {
        self.objects.get_bytes(&layout::index(name)).await
    }

    /// Writes the push index entry `name` with a [`WriteMode`].
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// use bytes::Bytes;
    /// use cachecore::store::{BinaryCache, WriteMode};
    /// let cache = BinaryCache::open("memory://").unwrap();
    /// let written = cache.put_index_entry("laptop", Bytes::from_static(b"entry"), WriteMode::Create);
    /// assert_eq!(written.await.unwrap().size, 5);
    /// assert_eq!(cache.index_entry("laptop").await.unwrap().unwrap(), &b"entry"[..]);
    /// assert_eq!(cache.index_entry("desktop").await.unwrap(), None);
    /// # });
    /// ```
    pub async fn put_index_entry(
        &self,
        name: &str,
        data: Bytes,
        mode: WriteMode,
    ) -> Result<Written, StoreError> {
        self.objects.put(&layout::index(name), data, mode).await
    }
}

/// A NAR being uploaded under a temporary key (see [`BinaryCache::staged_nar`]).
#[derive(Debug)]
pub struct StagedNar {
    key: String,
}

impl fmt::Display for StagedNar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.key)
    }
}

/// Deletes a staged NAR when dropped armed (the operation writing it was dropped, as when a
/// frontend stops on a signal): the delete runs as one of the store's cleanups
/// ([`BinaryCache::finish_cleanups`]).
pub(crate) struct StagedNarGuard {
    objects: Objects,
    key: Option<String>,
    runtime: tokio::runtime::Handle,
}

impl StagedNarGuard {
    /// The staged NAR was published or discarded.
    pub(crate) fn disarm(mut self) {
        self.key = None;
    }
}

impl Drop for StagedNarGuard {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            let objects = self.objects.clone();
            self.objects.spawn_cleanup(&self.runtime, async move {
                let _ = objects.delete(&key).await;
            });
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn debug_shows_url_only() {
        let c = BinaryCache::open("memory://").unwrap();
        assert_eq!(
            format!("{c:?}"),
            "BinaryCache { url: \"memory://\", read_only: false, .. }"
        );
        assert_eq!(c.to_string(), "memory://");
    }

    #[test]
    fn s3_debug_hides_secrets() {
        let env = [
            ("AWS_ACCESS_KEY_ID".to_owned(), "GKID".to_owned()),
            ("AWS_SECRET_ACCESS_KEY".to_owned(), "SECRETVALUE".to_owned()),
        ];
        let c =
            BinaryCache::open_with_env("s3://b?endpoint=http://127.0.0.1:1&region=garage", &env)
                .unwrap();
        let shown = format!("{c:?} {c}");
        assert!(!shown.contains("SECRETVALUE"), "{shown}");
    }
}
