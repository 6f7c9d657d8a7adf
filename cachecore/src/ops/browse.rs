//! Reading a cache: its paths, a path's listing and files, its totals; and the helper the other
//! operations share — consuming a NAR through the verifying [`NarReader`], which checks
//! FileHash/FileSize/NarHash/NarSize. (The closure of paths as the cache's narinfos describe it
//! is [`crate::graph::closure`].)
//!
//! Every narinfo read here is identity-checked by the store ([`BinaryCache::narinfo`]): its
//! `StorePath` is the one its key and the caller name.

use std::io::{self, Read, Seek, Write};

use futures::stream::{self, BoxStream, StreamExt as _};
use futures::TryStreamExt as _;

use super::{join_error, OpError};
use crate::nar::{self, Listing};
use crate::narinfo::NarInfo;
use crate::store::{BinaryCache, NarReader};
use crate::store_path::StorePath;

/// Narinfo fetches in flight.
const CONCURRENCY: usize = 32;

fn full(info: &NarInfo) -> String {
    info.store_dir.full_path(&info.store_path)
}

/// The narinfo of `path`, or [`OpError::NotInCache`].
pub async fn narinfo(cache: &BinaryCache, path: &StorePath) -> Result<NarInfo, OpError> {
    cache
        .narinfo(path)
        .await?
        .ok_or_else(|| OpError::NotInCache {
            path: path.to_string(),
            url: cache.url().to_owned(),
        })
}

/// Every narinfo in the cache, parsed (concurrently).
pub async fn all_narinfos(cache: &BinaryCache) -> Result<Vec<NarInfo>, OpError> {
    Ok(cache.narinfos(CONCURRENCY).try_collect().await?)
}

/// The full store paths in the cache, sorted.
///
/// ```
/// # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
/// # use std::sync::Arc;
/// # use cachecore::{ops::{NoProgress, PushOptions}, store_path::StoreDir};
/// use cachecore::{ops, store::BinaryCache};
/// # let src = tempfile::tempdir().unwrap();
/// # std::fs::write(src.path().join("hello"), "hello, world\n").unwrap();
/// let cache = BinaryCache::open("memory://").unwrap();
/// # let (path, _) = ops::push_add(&cache, &StoreDir::default(), src.path(), "hello",
/// #     &PushOptions::default(), Arc::new(NoProgress)).await.unwrap();
/// let paths = ops::list_paths(&cache).await.unwrap();
/// assert_eq!(paths, [format!("/nix/store/{path}")]);
/// // A store without `nix-cache-info` is not a cache (a mistyped bucket or prefix, say).
/// let empty = BinaryCache::open("memory://").unwrap();
/// assert!(matches!(ops::list_paths(&empty).await, Err(ops::OpError::NotACache { .. })));
/// # });
/// ```
pub async fn list_paths(cache: &BinaryCache) -> Result<Vec<String>, OpError> {
    let pages: Vec<Vec<String>> = path_pages(cache).try_collect().await?;
    let mut paths: Vec<String> = pages.concat();
    paths.sort();
    Ok(paths)
}

/// The full store paths in the cache a page at a time, as they are read
/// ([`BinaryCache::path_pages`]: from the push index, and the narinfos it does not cover,
/// [`PATHS_PAGE`](crate::store::PATHS_PAGE) narinfo keys at a time); each page sorted, and the
/// whole too where the store lists keys in order (S3, GCS, Azure). A `cachecore serve` answers
/// in one page. A narinfo that does not parse stops the stream with its error.
///
/// ```
/// # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
/// # use std::sync::Arc;
/// # use cachecore::{ops::{NoProgress, PushOptions}, store_path::StoreDir};
/// use cachecore::{ops, store::BinaryCache};
/// use futures::TryStreamExt;
/// # let src = tempfile::tempdir().unwrap();
/// # std::fs::write(src.path().join("hello"), "hello, world\n").unwrap();
/// let cache = BinaryCache::open("memory://").unwrap();
/// # let (path, _) = ops::push_add(&cache, &StoreDir::default(), src.path(), "hello",
/// #     &PushOptions::default(), Arc::new(NoProgress)).await.unwrap();
/// let pages: Vec<Vec<String>> = ops::path_pages(&cache).try_collect().await.unwrap();
/// assert_eq!(pages, [[format!("/nix/store/{path}")]]);
/// # });
/// ```
pub fn path_pages(cache: &BinaryCache) -> BoxStream<'_, Result<Vec<String>, OpError>> {
    let start = async move {
        super::require_cache_info(cache).await?;
        // A cachecore serve answers for itself; elsewhere, from the push index and the
        // narinfos it does not cover.
        if let Some(served) = served_paths(cache).await? {
            let mut paths: Vec<String> = served.into_iter().map(|p| p.path).collect();
            paths.sort();
            return Ok(stream::once(async move { Ok::<_, OpError>(paths) }).boxed());
        }
        let store_dir = cache.store_dir().await?;
        let pages = cache
            .path_pages(CONCURRENCY)
            .map_err(OpError::from)
            .and_then(move |page| {
                let store_dir = store_dir.clone();
                async move {
                    if let Some((key, _)) = page.unparseable.first() {
                        // The narinfo's own error, with its key and cause.
                        let hash = key.strip_suffix(".narinfo").unwrap_or(key);
                        cache.narinfo_by_hash(hash).await?;
                    }
                    Ok(page
                        .entries
                        .iter()
                        .map(|e| store_dir.full_path(&e.path))
                        .collect())
                }
            });
        Ok::<_, OpError>(pages.boxed())
    };
    stream::once(start).try_flatten().boxed()
}

/// The largest `/cachecore-paths` answer read (about a million paths).
const MAX_SERVED_PATHS_BYTES: u64 = 256 << 20;

/// One line of a `cachecore serve`'s `/cachecore-paths`.
struct ServedPath {
    path: String,
    nar_size: u64,
    file_size: u64,
}

/// One line of `/cachecore-paths`: `PATH NARSIZE FILESIZE`, the path a full store path.
fn served_path(line: &str) -> Option<ServedPath> {
    let mut fields = line.split(' ');
    let path = fields.next()?;
    let nar_size = fields.next()?.parse().ok()?;
    let file_size = fields.next()?.parse().ok()?;
    let (dir, base) = path.rsplit_once('/')?;
    StorePath::from_base_name(base).ok()?;
    (fields.next().is_none() && dir.starts_with('/')).then(|| ServedPath {
        path: path.to_owned(),
        nar_size,
        file_size,
    })
}

/// What a `cachecore serve` says it holds (`/cachecore-paths`), for an `http(s)://` cache that
/// cannot be listed; `None` for any other store, or a server without that answer (a plain
/// HTTP cache). The server's word: a line that is not a store path and two sizes is
/// [`OpError::ServedListing`].
async fn served_paths(cache: &BinaryCache) -> Result<Option<Vec<ServedPath>>, OpError> {
    if !cache.objects().is_http() {
        return Ok(None);
    }
    let Some(bytes) = cache
        .objects()
        .get_bytes_limited("cachecore-paths", MAX_SERVED_PATHS_BYTES)
        .await?
    else {
        return Ok(None);
    };
    let text = String::from_utf8_lossy(&bytes);
    let mut served = Vec::new();
    for (n, line) in text.lines().enumerate() {
        match served_path(line) {
            Some(p) => served.push(p),
            None => {
                return Err(OpError::ServedListing {
                    url: cache.url().to_owned(),
                    line: n + 1,
                    text: crate::untrusted::excerpt(line),
                })
            }
        }
    }
    Ok(Some(served))
}

/// Number of paths and sizes in a cache.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CacheTotals {
    pub paths: usize,
    pub nar_bytes: u64,
    pub file_bytes: u64,
    /// Leftover objects of killed uploads, and their bytes ([`BinaryCache::debris`]).
    pub debris_objects: usize,
    pub debris_bytes: u64,
}

/// The cache's `nix-cache-info` (if any) and totals over its narinfos (checked sums: a total
/// that would wrap is [`OpError::SizeOverflow`]).
///
/// ```
/// # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
/// # use std::sync::Arc;
/// # use cachecore::{ops::{NoProgress, PushOptions}, store_path::StoreDir};
/// use cachecore::{ops, store::BinaryCache};
/// # let src = tempfile::tempdir().unwrap();
/// # std::fs::write(src.path().join("hello"), "hello, world\n").unwrap();
/// let cache = BinaryCache::open("memory://").unwrap();
/// # let (path, _) = ops::push_add(&cache, &StoreDir::default(), src.path(), "hello",
/// #     &PushOptions::default(), Arc::new(NoProgress)).await.unwrap();
/// let (cache_info, totals) = ops::info(&cache).await.unwrap();
/// assert_eq!(cache_info.unwrap().store_dir, "/nix/store");
/// let narinfo = cache.narinfo(&path).await.unwrap().unwrap();
/// assert_eq!((totals.paths, totals.nar_bytes), (1, narinfo.nar_size));
/// assert_eq!(totals.debris_objects, 0);
/// # });
/// ```
pub async fn info(
    cache: &BinaryCache,
) -> Result<(Option<crate::cache_info::CacheInfo>, CacheTotals), OpError> {
    let cache_info = cache.cache_info().await?;
    if cache_info.is_none() && cache.objects().is_http() {
        return Err(crate::store::StoreError::NoCacheInfo {
            url: cache.url().to_owned(),
        }
        .into());
    }
    let mut totals = CacheTotals::default();
    let overflow = |what| OpError::SizeOverflow {
        what,
        url: cache.url().to_owned(),
    };
    if let Some(served) = served_paths(cache).await? {
        for p in served {
            totals.paths += 1;
            totals.nar_bytes = totals
                .nar_bytes
                .checked_add(p.nar_size)
                .ok_or_else(|| overflow("NarSizes"))?;
            totals.file_bytes = totals
                .file_bytes
                .checked_add(p.file_size)
                .ok_or_else(|| overflow("FileSizes"))?;
        }
        return Ok((cache_info, totals));
    }
    for i in all_narinfos(cache).await? {
        totals.paths += 1;
        totals.nar_bytes = totals
            .nar_bytes
            .checked_add(i.nar_size)
            .ok_or_else(|| overflow("NarSizes"))?;
        totals.file_bytes = totals
            .file_bytes
            .checked_add(i.file_size.unwrap_or(0))
            .ok_or_else(|| overflow("FileSizes"))?;
    }
    for d in cache.debris().await? {
        totals.debris_objects += 1;
        totals.debris_bytes = totals.debris_bytes.saturating_add(d.size);
    }
    Ok((cache_info, totals))
}

/// The listing of a path: its `.ls` when the cache has one that parses (read with a limit of
/// [`MAX_LISTING_BYTES`](crate::store::MAX_LISTING_BYTES)), else read from the NAR (verified).
///
/// A `.ls` is not covered by the narinfo's hashes or signatures: what it says about a path's
/// files is the cache's word. Use [`listing_verified`] to build it from the checked NAR instead.
///
/// ```
/// # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
/// # use std::sync::Arc;
/// # use cachecore::{ops::{NoProgress, PushOptions}, store_path::StoreDir};
/// use cachecore::{nar::ListingNode, ops, store::BinaryCache};
/// # let src = tempfile::tempdir().unwrap();
/// # std::fs::create_dir(src.path().join("bin")).unwrap();
/// # std::fs::write(src.path().join("bin/hello"), "hello, world\n").unwrap();
/// let cache = BinaryCache::open("memory://").unwrap();
/// # let (path, _) = ops::push_add(&cache, &StoreDir::default(), src.path(), "hello",
/// #     &PushOptions::default(), Arc::new(NoProgress)).await.unwrap();
/// let listing = ops::listing(&cache, &path).await.unwrap();
/// let names: Vec<String> = listing.walk().map(|(name, _)| name).collect();
/// assert_eq!(names, ["", "bin", "bin/hello"]);
/// assert!(matches!(listing.get("bin/hello"), Some(ListingNode::Regular { size: 13, .. })));
/// # });
/// ```
pub async fn listing(cache: &BinaryCache, path: &StorePath) -> Result<Listing, OpError> {
    let info = narinfo(cache, path).await?;
    listing_of(cache, &info).await
}

/// [`listing`] for a narinfo already read.
pub async fn listing_of(cache: &BinaryCache, info: &NarInfo) -> Result<Listing, OpError> {
    let stored = cache.listing_bytes(&info.store_path).await?;
    listing_from(cache, info, stored.as_deref()).await
}

/// The listing parsed from the stored `.ls` bytes, or read from the NAR when there are none or
/// they do not parse.
pub(crate) async fn listing_from(
    cache: &BinaryCache,
    info: &NarInfo,
    stored: Option<&[u8]>,
) -> Result<Listing, OpError> {
    if let Some(listing) = stored.and_then(|bytes| Listing::parse(bytes).ok()) {
        return Ok(listing);
    }
    listing_from_nar(cache, info).await
}

/// The listing of a path built from its NAR, checked against its narinfo (the NAR is read
/// every time).
pub async fn listing_verified(cache: &BinaryCache, path: &StorePath) -> Result<Listing, OpError> {
    let info = narinfo(cache, path).await?;
    read_listing_from_nar(cache, &info).await
}

/// The listing of a path read from its NAR (checked whole as it is read), once per NarHash for
/// the cache handle: later calls, and calls while it is read, get the listing kept in memory
/// (within a bound; see `store::listings`).
pub(crate) async fn listing_from_nar(
    cache: &BinaryCache,
    info: &NarInfo,
) -> Result<Listing, OpError> {
    let listing = cache
        .nar_listings()
        .get_or_build(&info.nar_hash.to_string(), || {
            read_listing_from_nar(cache, info)
        })
        .await?;
    Ok(Listing::clone(&listing))
}

/// The listing of a path read from its NAR (checked whole as it is read).
async fn read_listing_from_nar(cache: &BinaryCache, info: &NarInfo) -> Result<Listing, OpError> {
    let name = full(info);
    with_nar(cache, info, move |nar| {
        Listing::from_nar(nar).map_err(|source| OpError::Nar { path: name, source })
    })
    .await
}

/// Checks `listing` against the NAR of `info`, read whole and checked against the narinfo as
/// it streams by (see [`Listing::check_nar`]): `Ok(Err(_))` says where they first differ.
#[cfg(feature = "server")]
pub(crate) async fn check_listing(
    cache: &BinaryCache,
    info: &NarInfo,
    listing: Listing,
) -> Result<Result<(), nar::ListingMismatch>, OpError> {
    let name = full(info);
    with_nar(cache, info, move |nar| {
        listing_describes(&listing, name, nar)
    })
    .await
}

/// [`check_listing`]'s check, of a NAR being read (of the store path `path`).
pub(crate) fn listing_describes(
    listing: &Listing,
    path: String,
    nar: &mut dyn Read,
) -> Result<Result<(), nar::ListingMismatch>, OpError> {
    listing
        .check_nar(nar)
        .map_err(|source| OpError::Nar { path, source })
}

/// Writes the regular file `sub` of `path` to `out`, and nothing that was not checked: the
/// whole NAR is read and checked against the narinfo (FileSize, FileHash, NarSize, NarHash) while
/// the file is kept in an unlinked temporary file (at most NarSize bytes), which is copied to
/// `out` only once every check passed.
///
/// ```
/// # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
/// # use std::sync::Arc;
/// # use cachecore::{ops::{NoProgress, PushOptions}, store_path::StoreDir};
/// use cachecore::{ops, store::BinaryCache};
/// # let src = tempfile::tempdir().unwrap();
/// # std::fs::create_dir(src.path().join("bin")).unwrap();
/// # std::fs::write(src.path().join("bin/hello"), "hello, world\n").unwrap();
/// let cache = BinaryCache::open("memory://").unwrap();
/// # let (path, _) = ops::push_add(&cache, &StoreDir::default(), src.path(), "hello",
/// #     &PushOptions::default(), Arc::new(NoProgress)).await.unwrap();
/// let out = tempfile::NamedTempFile::new().unwrap();
/// ops::cat(&cache, &path, "bin/hello", out.reopen().unwrap()).await.unwrap();
/// assert_eq!(std::fs::read_to_string(out.path()).unwrap(), "hello, world\n");
/// assert!(ops::cat(&cache, &path, "bin", std::io::sink()).await.is_err()); // a directory
/// # });
/// ```
pub async fn cat(
    cache: &BinaryCache,
    path: &StorePath,
    sub: &str,
    out: impl Write + Send + 'static,
) -> Result<(), OpError> {
    let info = narinfo(cache, path).await?;
    cat_checked(cache, &info, sub, out).await
}

/// [`cat`] for a narinfo already read (and checked by the caller, e.g. for signatures).
pub async fn cat_checked(
    cache: &BinaryCache,
    info: &NarInfo,
    sub: &str,
    out: impl Write + Send + 'static,
) -> Result<(), OpError> {
    let name = format!("{}/{}", full(info), sub);
    let sub = sub.to_owned();
    let held = with_nar(cache, info, move |nar| {
        let mut held = anonymous_temp_file()
            .map_err(|e| OpError::io("cannot create a temporary file to hold the output", e))?;
        nar::cat_verified(nar, &sub, &mut held)
            .map_err(|source| OpError::Extract { path: name, source })?;
        Ok(held)
    })
    .await?;
    tokio::task::spawn_blocking(move || {
        let mut held = held;
        let mut out = out;
        held.rewind()
            .map_err(|e| OpError::io("cannot read back the temporary file", e))?;
        io::copy(&mut held, &mut out).map_err(|e| OpError::io("cannot write the output", e))?;
        out.flush()
            .map_err(|e| OpError::io("cannot write the output", e))
    })
    .await
    .map_err(join_error)?
}

/// A new file in the temporary directory, already unlinked: it disappears with its handle,
/// whatever happens to the process.
fn anonymous_temp_file() -> io::Result<std::fs::File> {
    use rand_core::RngCore as _;
    let dir = std::env::temp_dir();
    for _ in 0..16 {
        let candidate = dir.join(format!(
            ".cachecore-cat-{}-{:016x}",
            std::process::id(),
            rand_core::OsRng.next_u64()
        ));
        match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&candidate)
        {
            Ok(file) => {
                std::fs::remove_file(&candidate)?;
                return Ok(file);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        "no free temporary file name",
    ))
}

/// Hands the NAR of `info` out of `cache` to `consume` (on a blocking thread) through a
/// [`NarReader`], and returns its value only if the whole NAR then checks out against `info`:
/// whatever `consume` leaves unread is read and checked too, and an integrity failure is
/// reported in preference to `consume`'s own error (which it usually explains).
pub(crate) async fn with_nar<T, F>(
    cache: &BinaryCache,
    info: &NarInfo,
    consume: F,
) -> Result<T, OpError>
where
    T: Send + 'static,
    F: FnOnce(&mut dyn Read) -> Result<T, OpError> + Send + 'static,
{
    let reader = cache.nar(info).await?;
    tokio::task::spawn_blocking(move || consume_checked(reader, consume))
        .await
        .map_err(join_error)?
}

/// [`with_nar`]'s blocking half.
pub(crate) fn consume_checked<T>(
    mut reader: NarReader,
    consume: impl FnOnce(&mut dyn Read) -> Result<T, OpError>,
) -> Result<T, OpError> {
    let value = consume(&mut reader);
    reader.finish()?;
    value
}
