//! Binary caches on object storage: a local directory, S3 (and S3-compatible servers such as
//! Garage or MinIO), Google Cloud Storage, Azure Blob Storage, memory, or a read-only HTTP cache.
//!
//! [`BinaryCache`] wraps an [`object_store::ObjectStore`] and speaks in the terms of a Nix binary
//! cache: `nix-cache-info`, narinfos, NARs, listings, logs. [`layout`] is the only place that
//! knows object keys; [`url`] parses store URLs; [`StoreError`] says what went wrong in one
//! sentence naming the store and the object.
//!
//! All functions are plain `async fn`; the caller owns the tokio runtime.
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! use cachecore::cache_info::CacheInfo;
//! use cachecore::store::BinaryCache;
//! let dir = tempfile::tempdir().unwrap();
//! let cache = BinaryCache::open(dir.path().to_str().unwrap()).unwrap();
//! cache.init(&CacheInfo::default()).await.unwrap();
//! assert_eq!(cache.cache_info().await.unwrap().unwrap().store_dir, "/nix/store");
//! assert!(cache.get_bytes("no-such.narinfo").await.unwrap().is_none());
//! # });
//! ```
//!
//! # Atomicity
//!
//! No reader ever sees half an object at its final key:
//! - a local directory ([`object_store::local::LocalFileSystem`]) writes every object to a
//!   staging file next to it (`<key>#<n>`) and renames it into place when complete; a killed
//!   upload leaves at most a staging file (which listings skip), never a truncated object;
//! - S3, GCS and Azure publish an object, single or multipart, only when the upload completes.
//!   A multipart upload whose future is dropped is not aborted and stays in the bucket as an
//!   *incomplete upload* (invisible to readers) until a bucket lifecycle rule removes it.
//!
//! [`BinaryCache::rename`] is a file-system rename on a local directory and copy + delete on
//! object stores (which have no rename).

mod aws_profile;
mod error;
pub mod layout;
pub mod url;

use std::fmt;
use std::io;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::stream::{self, BoxStream, StreamExt, TryStreamExt};
use futures::Stream;
use object_store::list::{PaginatedListOptions, PaginatedListStore};
use object_store::path::Path;
use object_store::{
    Attribute, Attributes, ClientOptions, ObjectStore, ObjectStoreExt, PutMultipartOptions,
    PutOptions, PutPayload, RetryConfig, WriteMultipart,
};

use crate::cache_info::CacheInfo;
use crate::narinfo::NarInfo;
use crate::store_path::StorePath;

pub use error::StoreError;
use error::{convert, ErrorContext, Op};
pub use url::{StoreLocation, StoreUrl};

/// Objects at least this large are uploaded by [`BinaryCache::put_stream`] in parts; smaller
/// ones in a single request.
pub const MULTIPART_THRESHOLD: usize = 10 * 1024 * 1024;

/// The size of each part of a multipart upload. S3 allows 10,000 parts, so one object can be up
/// to ~97 GiB.
pub const PART_SIZE: usize = 10 * 1024 * 1024;

/// Parts of one upload in flight at once. Memory per upload is at most about
/// `(PARTS_IN_FLIGHT + 1) * PART_SIZE` plus one chunk of the input.
pub const PARTS_IN_FLIGHT: usize = 4;

/// Retries of a failed request (connection refused, 5xx, throttling), with exponential backoff;
/// the same number of attempts as Nix's `download-attempts` default.
const MAX_RETRIES: usize = 5;

/// A binary cache: an object store plus the knowledge of what a Nix binary cache keeps in it.
///
/// Cheap to clone (an `Arc` inside). `Debug` and `Display` show the store URL only, never
/// credentials.
#[derive(Clone)]
pub struct BinaryCache {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn ObjectStore>,
    cx: ErrorContext,
    read_only: bool,
    /// Send `Content-Type` with uploads (backends that support attributes).
    content_types: bool,
    /// Delimited, paginated listing of the cache root (S3, GCS, Azure); other backends use
    /// `list_with_delimiter`.
    lister: Option<Lister>,
    /// `false` for plain HTTP, which has no listing.
    listable: bool,
    settings: Vec<(String, String)>,
}

struct Lister {
    store: Arc<dyn PaginatedListStore>,
    /// The URL's prefix with a trailing `/`, or empty.
    prefix: String,
}

impl fmt::Debug for BinaryCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BinaryCache")
            .field("url", &self.inner.cx.url)
            .field("read_only", &self.inner.read_only)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for BinaryCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.inner.cx.url)
    }
}

fn retry_config() -> RetryConfig {
    RetryConfig {
        max_retries: MAX_RETRIES,
        ..RetryConfig::default()
    }
}

/// No overall request deadline (a multi-GiB NAR may take longer than any fixed limit), but a
/// stalled connection fails after a minute of silence.
fn client_options() -> ClientOptions {
    ClientOptions::new()
        .with_timeout_disabled()
        .with_read_timeout(Duration::from_secs(60))
        .with_connect_timeout(Duration::from_secs(5))
}

/// The process environment (variables that are not UTF-8 are skipped).
pub fn process_env() -> Vec<(String, String)> {
    std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect()
}

/// The `PREFIX_*` variables of `env`, lower-cased, to apply the way the builders' `from_env` do
/// but on top of our defaults (so `AWS_ALLOW_HTTP=true` and friends still work).
fn env_pairs(env: &[(String, String)], prefix: &str) -> Vec<(String, String)> {
    env.iter()
        .filter(|(k, _)| k.starts_with(prefix))
        .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
        .collect()
}

fn env_var<'a>(env: &'a [(String, String)], key: &str) -> Option<&'a str> {
    env.iter()
        .rev()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .filter(|v| !v.is_empty())
}

impl BinaryCache {
    /// Opens the store at `url` (see [`url`] for the spellings). No network I/O: a missing
    /// bucket, an unreachable server or bad credentials show up at the first request.
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
    /// - `http(s)://`: read-only; writes fail with [`StoreError::ReadOnly`].
    pub fn open(url: &str) -> Result<BinaryCache, StoreError> {
        Self::open_with_env(url, &process_env())
    }

    /// [`open`](Self::open), reading configuration (`AWS_*`, `GOOGLE_*`, `AZURE_*`, `HOME`,
    /// `SERVICE_ACCOUNT`, `MSI_ENDPOINT`) from `env` instead of the process environment.
    pub fn open_with_env(url: &str, env: &[(String, String)]) -> Result<BinaryCache, StoreError> {
        let parsed = StoreUrl::parse(url)?;
        Self::open_parsed(&parsed, env)
    }

    /// [`open_with_env`](Self::open_with_env) for an already parsed URL.
    pub fn open_parsed(
        parsed: &StoreUrl,
        env: &[(String, String)],
    ) -> Result<BinaryCache, StoreError> {
        let url = parsed.as_str().to_owned();
        let setup = |source: object_store::Error| StoreError::Setup {
            url: url.clone(),
            source: Box::new(source),
        };
        let mut cx = ErrorContext {
            url: url.clone(),
            ..ErrorContext::default()
        };
        let mut read_only = false;
        let mut content_types = false;
        let mut lister = None;
        let store: Arc<dyn ObjectStore> = match &parsed.location {
            StoreLocation::Local { dir } => {
                std::fs::create_dir_all(dir).map_err(|e| StoreError::BadUrl {
                    url: url.clone(),
                    reason: format!("cannot create directory {}: {e}", dir.display()),
                })?;
                Arc::new(object_store::local::LocalFileSystem::new_with_prefix(dir).map_err(setup)?)
            }
            StoreLocation::Memory => Arc::new(object_store::memory::InMemory::new()),
            StoreLocation::Http { base } => {
                read_only = true;
                let b = object_store::http::HttpBuilder::new()
                    .with_url(base.as_str())
                    .with_client_options(client_options().with_allow_http(base.scheme() == "http"))
                    .with_retry(retry_config());
                Arc::new(b.build().map_err(setup)?)
            }
            StoreLocation::S3 {
                bucket,
                prefix,
                endpoint,
                region,
                profile,
            } => {
                cx.bucket = Some(bucket.clone());
                content_types = true;
                let (s3, advice) = build_s3(
                    &url,
                    bucket,
                    endpoint.as_deref(),
                    region.as_deref(),
                    profile.as_deref(),
                    env,
                )?;
                cx.credential_advice = advice;
                lister = Some(Lister {
                    store: Arc::new(s3.clone()),
                    prefix: dir_prefix(prefix),
                });
                with_prefix(Arc::new(s3), prefix)
            }
            StoreLocation::Gcs { bucket, prefix } => {
                cx.bucket = Some(bucket.clone());
                content_types = true;
                let mut b = object_store::gcp::GoogleCloudStorageBuilder::new()
                    .with_client_options(client_options())
                    .with_retry(retry_config());
                if let Some(path) = env_var(env, "SERVICE_ACCOUNT") {
                    b = b.with_service_account_path(path);
                }
                for (k, v) in env_pairs(env, "GOOGLE_") {
                    if let Ok(key) = k.parse() {
                        b = b.with_config(key, v);
                    }
                }
                let gcs = b.with_bucket_name(bucket).build().map_err(setup)?;
                cx.credential_advice = Some(
                    "set GOOGLE_APPLICATION_CREDENTIALS or GOOGLE_SERVICE_ACCOUNT to a service account key file"
                        .to_owned(),
                );
                lister = Some(Lister {
                    store: Arc::new(gcs.clone()),
                    prefix: dir_prefix(prefix),
                });
                with_prefix(Arc::new(gcs), prefix)
            }
            StoreLocation::Azure { container, prefix } => {
                cx.bucket = Some(container.clone());
                content_types = true;
                let mut b = object_store::azure::MicrosoftAzureBuilder::new()
                    .with_client_options(client_options())
                    .with_retry(retry_config());
                for (k, v) in env_pairs(env, "AZURE_") {
                    if let Ok(key) = k.parse() {
                        b = b.with_config(key, v);
                    }
                }
                if let Some(msi) = env_var(env, "MSI_ENDPOINT") {
                    b = b.with_msi_endpoint(msi);
                }
                let az = b.with_container_name(container).build().map_err(setup)?;
                cx.credential_advice = Some(
                    "set AZURE_STORAGE_ACCOUNT_NAME and AZURE_STORAGE_ACCOUNT_KEY, or a SAS token"
                        .to_owned(),
                );
                lister = Some(Lister {
                    store: Arc::new(az.clone()),
                    prefix: dir_prefix(prefix),
                });
                with_prefix(Arc::new(az), prefix)
            }
        };
        Ok(BinaryCache {
            inner: Arc::new(Inner {
                store,
                cx,
                read_only,
                content_types,
                lister,
                listable: !read_only,
                settings: parsed.settings.clone(),
            }),
        })
    }

    /// Wraps any object store. `display_url` is what messages and `Debug` show.
    pub fn from_object_store(
        store: Arc<dyn ObjectStore>,
        display_url: impl Into<String>,
        read_only: bool,
    ) -> BinaryCache {
        BinaryCache {
            inner: Arc::new(Inner {
                store,
                cx: ErrorContext {
                    url: display_url.into(),
                    ..ErrorContext::default()
                },
                read_only,
                content_types: false,
                lister: None,
                listable: true,
                settings: Vec::new(),
            }),
        }
    }

    /// The store URL as given (passwords replaced by `***`).
    pub fn url(&self) -> &str {
        &self.inner.cx.url
    }

    pub fn is_read_only(&self) -> bool {
        self.inner.read_only
    }

    /// The underlying object store (keys relative to the cache root).
    pub fn object_store(&self) -> &Arc<dyn ObjectStore> {
        &self.inner.store
    }

    /// Nix binary-cache settings given in the URL's query (`compression=zstd`, ...), which this
    /// module does not use itself.
    pub fn settings(&self) -> &[(String, String)] {
        &self.inner.settings
    }

    fn err(&self, op: Op, key: &str, e: object_store::Error) -> StoreError {
        convert(&self.inner.cx, op, key, e)
    }

    fn path(&self, key: &str) -> Result<Path, StoreError> {
        let bad = |reason: String| StoreError::BadKey {
            url: self.inner.cx.url.clone(),
            key: key.to_owned(),
            reason,
        };
        if key.is_empty() || key.starts_with('/') || key.ends_with('/') {
            return Err(bad(
                "keys are non-empty and have no leading or trailing /".to_owned()
            ));
        }
        Path::parse(key).map_err(|e| bad(e.to_string()))
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

    /// `nix-cache-info`, or `None` if the store has none (not initialised).
    pub async fn cache_info(&self) -> Result<Option<CacheInfo>, StoreError> {
        let Some(bytes) = self.get_bytes(layout::CACHE_INFO).await? else {
            return Ok(None);
        };
        let bad = |reason: String| StoreError::BadCacheInfo {
            url: self.inner.cx.url.clone(),
            key: layout::CACHE_INFO.to_owned(),
            source: crate::cache_info::ParseError { line: 0, reason },
        };
        let text = std::str::from_utf8(&bytes).map_err(|_| bad("not valid UTF-8".to_owned()))?;
        CacheInfo::parse(text)
            .map(Some)
            .map_err(|source| StoreError::BadCacheInfo {
                url: self.inner.cx.url.clone(),
                key: layout::CACHE_INFO.to_owned(),
                source,
            })
    }

    /// Writes `nix-cache-info` unless present; refuses a present one with another `StoreDir`;
    /// returns what is there now. Running it twice is harmless.
    pub async fn init(&self, wanted: &CacheInfo) -> Result<CacheInfo, StoreError> {
        if let Some(existing) = self.cache_info().await? {
            if existing.store_dir != wanted.store_dir {
                return Err(StoreError::StoreDirMismatch {
                    url: self.inner.cx.url.clone(),
                    ours: wanted.store_dir.clone(),
                    theirs: existing.store_dir,
                });
            }
            return Ok(existing);
        }
        self.put_bytes(layout::CACHE_INFO, Bytes::from(wanted.to_string()))
            .await?;
        Ok(wanted.clone())
    }

    /// The narinfo of `path`, or `None` if the cache does not have it.
    pub async fn narinfo(&self, path: &StorePath) -> Result<Option<NarInfo>, StoreError> {
        self.narinfo_by_hash(&path.hash_part()).await
    }

    /// The narinfo stored at `<hash_part>.narinfo`; a file that does not parse is
    /// [`StoreError::BadNarInfo`] naming its key.
    pub async fn narinfo_by_hash(&self, hash_part: &str) -> Result<Option<NarInfo>, StoreError> {
        let key = layout::narinfo(hash_part);
        let Some(bytes) = self.get_bytes(&key).await? else {
            return Ok(None);
        };
        NarInfo::parse_bytes(&bytes)
            .map(Some)
            .map_err(|source| StoreError::BadNarInfo {
                url: self.inner.cx.url.clone(),
                key,
                source: Box::new(source),
            })
    }

    /// Whether the cache has a narinfo for `path` (one HEAD request).
    pub async fn has_narinfo(&self, path: &StorePath) -> Result<bool, StoreError> {
        Ok(self
            .head(&layout::narinfo(&path.hash_part()))
            .await?
            .is_some())
    }

    /// Of `paths`, those without a narinfo, in the order given; `concurrency` HEADs in flight.
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

    /// Writes `<hash>.narinfo` for `info.store_path`.
    pub async fn put_narinfo(&self, info: &NarInfo) -> Result<(), StoreError> {
        let key = layout::narinfo(&info.store_path.hash_part());
        self.put_bytes(&key, Bytes::from(info.to_string())).await
    }

    /// Hash parts of all narinfos: the root-level keys `<32 nix32 chars>.narinfo`, streamed a
    /// page (about 1000 keys) at a time on S3, GCS and Azure. Other backends read the root
    /// listing in one go (about 100 bytes of memory per object at the root). Plain HTTP caches
    /// cannot be listed.
    pub fn list_narinfo_hashes(&self) -> BoxStream<'_, Result<String, StoreError>> {
        let key = "(cache root)";
        if !self.inner.listable {
            let e = StoreError::Unsupported {
                url: self.inner.cx.url.clone(),
                operation: "list the narinfos",
                reason: "a plain HTTP binary cache has no listing (list the directory or bucket it serves instead)",
            };
            return stream::once(async move { Err(e) }).boxed();
        }
        let hashes_of = |names: Vec<String>| {
            stream::iter(
                names
                    .into_iter()
                    .filter_map(|n| layout::narinfo_hash(&n).map(str::to_owned))
                    .map(Ok),
            )
        };
        if let Some(lister) = &self.inner.lister {
            // Pages: None = not started, Some(None) = finished, Some(Some(token)) = more.
            let pages = stream::try_unfold(Some(None::<String>), move |state| async move {
                let Some(token) = state else {
                    return Ok(None);
                };
                let opts = PaginatedListOptions {
                    delimiter: Some("/".into()),
                    page_token: token,
                    ..PaginatedListOptions::default()
                };
                let prefix = (!lister.prefix.is_empty()).then_some(lister.prefix.as_str());
                let page = lister
                    .store
                    .list_paginated(prefix, opts)
                    .await
                    .map_err(|e| self.err(Op::List, key, e))?;
                let names: Vec<String> = page
                    .result
                    .objects
                    .into_iter()
                    .filter_map(|m| {
                        m.location
                            .as_ref()
                            .strip_prefix(lister.prefix.as_str())
                            .map(str::to_owned)
                    })
                    .collect();
                let next = page.page_token.map(Some);
                Ok(Some((names, next)))
            });
            pages.map_ok(hashes_of).try_flatten().boxed()
        } else {
            stream::once(async move {
                self.inner
                    .store
                    .list_with_delimiter(None)
                    .await
                    .map_err(|e| self.err(Op::List, key, e))
            })
            .map_ok(move |listing| {
                hashes_of(
                    listing
                        .objects
                        .into_iter()
                        .map(|m| m.location.as_ref().to_owned())
                        .collect(),
                )
            })
            .try_flatten()
            .boxed()
        }
    }

    /// Streams the object at `key`; `None` if there is none.
    pub async fn get(
        &self,
        key: &str,
    ) -> Result<Option<BoxStream<'static, Result<Bytes, StoreError>>>, StoreError> {
        let path = self.path(key)?;
        match self.inner.store.get(&path).await {
            Ok(result) => {
                let cx = self.inner.cx.clone();
                let key = key.to_owned();
                Ok(Some(
                    result
                        .into_stream()
                        .map_err(move |e| convert(&cx, Op::Read, &key, e))
                        .boxed(),
                ))
            }
            Err(e) => none_if_missing(self.err(Op::Read, key, e)),
        }
    }

    /// The whole object at `key` in memory (for small objects: narinfos, listings, logs);
    /// `None` if there is none.
    pub async fn get_bytes(&self, key: &str) -> Result<Option<Bytes>, StoreError> {
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

    /// Bytes `range` of the object at `key` (clamped to its end). A missing object is
    /// [`StoreError::NotFound`].
    pub async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, StoreError> {
        let path = self.path(key)?;
        if range.start >= range.end {
            return Ok(Bytes::new());
        }
        self.inner
            .store
            .get_range(&path, range)
            .await
            .map_err(|e| self.err(Op::Read, key, e))
    }

    /// The size of the object at `key`, or `None` if there is none.
    ///
    /// A HEAD response has no body, so on S3 a missing *bucket* also reads as `None` here; the
    /// first GET or PUT reports [`StoreError::NoSuchBucket`].
    pub async fn head(&self, key: &str) -> Result<Option<u64>, StoreError> {
        let path = self.path(key)?;
        match self.inner.store.head(&path).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(e) => none_if_missing(self.err(Op::Stat, key, e)),
        }
    }

    /// Writes a small object in one request (replacing any object at `key`).
    pub async fn put_bytes(&self, key: &str, data: Bytes) -> Result<(), StoreError> {
        let path = self.writable(key)?;
        let opts = PutOptions::from(self.attributes(key));
        self.inner
            .store
            .put_opts(&path, PutPayload::from_bytes(data), opts)
            .await
            .map(drop)
            .map_err(|e| self.err(Op::Write, key, e))
    }

    /// Streams an object in and returns its size. Below [`MULTIPART_THRESHOLD`] the data is
    /// sent in one request; above, as a multipart upload of [`PART_SIZE`] parts with at most
    /// [`PARTS_IN_FLIGHT`] in flight, so memory stays bounded whatever the size. If `data`
    /// yields an error, the upload is aborted, nothing appears at `key`, and the error is
    /// [`StoreError::Source`].
    pub async fn put_stream(
        &self,
        key: &str,
        data: impl Stream<Item = Result<Bytes, io::Error>> + Send,
    ) -> Result<u64, StoreError> {
        let path = self.writable(key)?;
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
                    let opts = PutOptions::from(self.attributes(key));
                    self.inner
                        .store
                        .put_opts(&path, payload, opts)
                        .await
                        .map_err(|e| self.err(Op::Write, key, e))?;
                    return Ok(total);
                }
                Some(Err(e)) => return Err(source_err(e)),
                Some(Ok(chunk)) => {
                    head_len += chunk.len();
                    total += chunk.len() as u64;
                    head.push(chunk);
                }
            }
        }
        let opts = PutMultipartOptions::from(self.attributes(key));
        let upload = self
            .inner
            .store
            .put_multipart_opts(&path, opts)
            .await
            .map_err(|e| self.err(Op::Write, key, e))?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
        for chunk in head {
            writer.put(chunk);
        }
        loop {
            let chunk = match data.next().await {
                None => break,
                Some(Ok(chunk)) => chunk,
                Some(Err(e)) => {
                    // Best effort: the source error is the one worth reporting.
                    let _ = writer.abort().await;
                    return Err(source_err(e));
                }
            };
            if let Err(e) = writer.wait_for_capacity(PARTS_IN_FLIGHT).await {
                let _ = writer.abort().await;
                return Err(self.err(Op::Write, key, e));
            }
            total += chunk.len() as u64;
            writer.put(chunk);
        }
        writer
            .finish()
            .await
            .map_err(|e| self.err(Op::Write, key, e))?;
        Ok(total)
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
    pub async fn rename(&self, from: &str, to: &str) -> Result<(), StoreError> {
        let from_path = self.writable(from)?;
        let to_path = self.writable(to)?;
        self.inner
            .store
            .rename(&from_path, &to_path)
            .await
            .map_err(|e| self.err(Op::Rename, from, e))
    }

    /// Deletes the object at `key`; deleting a missing object is not an error.
    pub async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let path = self.writable(key)?;
        match self.inner.store.delete(&path).await {
            Ok(()) => Ok(()),
            Err(e) => match self.err(Op::Delete, key, e) {
                StoreError::NotFound { .. } => Ok(()),
                other => Err(other),
            },
        }
    }
}

fn none_if_missing<T>(e: StoreError) -> Result<Option<T>, StoreError> {
    match e {
        StoreError::NotFound { .. } => Ok(None),
        other => Err(other),
    }
}

fn dir_prefix(prefix: &str) -> String {
    if prefix.is_empty() {
        String::new()
    } else {
        format!("{prefix}/")
    }
}

fn with_prefix(store: Arc<dyn ObjectStore>, prefix: &str) -> Arc<dyn ObjectStore> {
    if prefix.is_empty() {
        store
    } else {
        // `prefix` was validated by `Path::parse` when the URL was parsed.
        let path = Path::parse(prefix).unwrap_or_else(|_| Path::from(prefix));
        Arc::new(object_store::prefix::PrefixStore::new(store, path))
    }
}

/// Builds the S3 client; returns it with the advice to show if fetching credentials fails
/// (`None` when static keys were found).
fn build_s3(
    url: &str,
    bucket: &str,
    endpoint: Option<&str>,
    region: Option<&str>,
    profile_name: Option<&str>,
    env_all: &[(String, String)],
) -> Result<(object_store::aws::AmazonS3, Option<String>), StoreError> {
    use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
    let cred_err = |reason: String| StoreError::MissingCredentials {
        url: url.to_owned(),
        op: "open",
        key: "the store".to_owned(),
        detail: reason,
        source: None,
    };
    let mut b = AmazonS3Builder::new()
        .with_client_options(client_options())
        .with_retry(retry_config());
    let env = env_pairs(env_all, "AWS_");
    let env_has = |k: &str| env.iter().any(|(key, v)| key == k && !v.is_empty());
    for (k, v) in &env {
        if let Ok(key) = k.parse::<AmazonS3ConfigKey>() {
            b = b.with_config(key, v);
        }
    }

    // Profile: explicit ?profile= wins over keys in the environment; AWS_PROFILE or `default`
    // only fill in what the environment does not give.
    let files = aws_profile::ProfileFiles::from_env(env_all);
    let env_profile = env_var(env_all, "AWS_PROFILE").map(str::to_owned);
    let env_keys = env_has("aws_access_key_id") && env_has("aws_secret_access_key");
    // A profile named in the URL must exist; one named by AWS_PROFILE must exist unless the
    // environment has keys anyway (as with the AWS CLI).
    let (name, explicit) = match (profile_name, &env_profile) {
        (Some(p), _) => (p.to_owned(), true),
        (None, Some(p)) => (p.clone(), !env_keys),
        (None, None) => ("default".to_owned(), false),
    };
    let profile = files.load(&name).map_err(&cred_err)?;
    let mut source = if env_keys {
        "AWS_ACCESS_KEY_ID".to_owned()
    } else {
        String::new()
    };
    match profile {
        None if explicit => {
            return Err(cred_err(format!(
                "profile {name:?} is in neither {}",
                files.describe("nor")
            )))
        }
        None => {}
        Some(p) => {
            let use_keys = profile_name.is_some() || !env_keys;
            if use_keys {
                if p.has_keys() {
                    if let (Some(id), Some(secret)) = (&p.access_key_id, &p.secret_access_key) {
                        b = b
                            .with_access_key_id(id)
                            .with_secret_access_key(secret.as_str());
                        if let Some(t) = &p.session_token {
                            b = b.with_token(t.as_str());
                        }
                        source = format!("profile {name:?}");
                    }
                } else if explicit && !p.unsupported.is_empty() {
                    return Err(cred_err(format!(
                        "profile {name:?} gets its keys through {}, which cachecore does not support; export AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY instead",
                        p.unsupported.join(", ")
                    )));
                } else if explicit {
                    return Err(cred_err(format!(
                        "profile {name:?} in {} has no aws_access_key_id and aws_secret_access_key",
                        files.describe("or")
                    )));
                }
            }
            if region.is_none() && !env_has("aws_region") && !env_has("aws_default_region") {
                if let Some(r) = &p.region {
                    b = b.with_region(r);
                }
            }
            if endpoint.is_none() && !env_has("aws_endpoint") && !env_has("aws_endpoint_url") {
                if let Some(e) = &p.endpoint_url {
                    b = b.with_endpoint(e);
                }
            }
        }
    }
    if let Some(r) = region {
        b = b.with_region(r);
    }
    if let Some(e) = endpoint {
        b = b.with_endpoint(e);
    }
    if let Some(e) = b.get_config_value(&AmazonS3ConfigKey::Endpoint) {
        // A custom endpoint (Garage, MinIO, Ceph): path-style, and plain HTTP if it says so.
        // Without static keys object_store would ask the EC2 metadata service, whose IAM
        // credentials such a server does not accept: say so now instead of after its timeouts.
        let provider_env = [
            "aws_web_identity_token_file",
            "aws_container_credentials_relative_uri",
            "aws_container_credentials_full_uri",
        ];
        if source.is_empty() && !provider_env.iter().any(|k| env_has(k)) {
            return Err(cred_err(format!(
                "no keys for endpoint {e}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or add aws_access_key_id and aws_secret_access_key for profile {name:?} to {} (or pick a profile with ?profile=NAME or AWS_PROFILE)",
                files.credentials.display()
            )));
        }
        b = b.with_virtual_hosted_style_request(false);
        if e.starts_with("http://") {
            b = b.with_allow_http(true);
        }
    }
    let s3 = b
        .with_bucket_name(bucket)
        .build()
        .map_err(|source| StoreError::Setup {
            url: url.to_owned(),
            source: Box::new(source),
        })?;
    // Without static keys object_store asks the web-identity, container or instance-metadata
    // providers; if that fails, say where static keys would have been found.
    let advice = source.is_empty().then(|| {
        format!(
            "there is no AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY in the environment and no keys for profile {name:?} in {}, so the EC2 instance metadata service was asked",
            files.describe("or")
        )
    });
    Ok((s3, advice))
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
