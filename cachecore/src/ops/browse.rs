//! Reading a cache: its paths, a path's listing and files, its totals; and the two helpers the
//! other operations share — the closure of paths as the cache's narinfos describe it, and
//! reading a NAR while checking FileHash/FileSize/NarHash/NarSize.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::{self, Read, Write};

use futures::{StreamExt as _, TryStreamExt as _};

use super::pipe::{feed, reader_channel};
use super::{join_error, OpError};
use crate::compression::{decompress, Compression};
use crate::hash::{HashAlgo, HashingReader};
use crate::nar::{self, Listing};
use crate::narinfo::NarInfo;
use crate::store::BinaryCache;
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

/// The narinfos of the closure of `roots` in `cache`, references before referrers.
pub async fn closure(cache: &BinaryCache, roots: &[StorePath]) -> Result<Vec<NarInfo>, OpError> {
    let mut seen: HashSet<StorePath> = roots.iter().cloned().collect();
    let mut queue: VecDeque<StorePath> = roots.iter().cloned().collect();
    let mut infos: HashMap<StorePath, NarInfo> = HashMap::new();
    while !queue.is_empty() {
        let batch: Vec<StorePath> = queue.drain(..).collect();
        let fetched: Vec<NarInfo> = futures::stream::iter(batch.iter().map(|p| narinfo(cache, p)))
            .buffer_unordered(CONCURRENCY)
            .try_collect()
            .await?;
        for info in fetched {
            for r in &info.references {
                if seen.insert(r.clone()) {
                    queue.push_back(r.clone());
                }
            }
            infos.insert(info.store_path.clone(), info);
        }
    }
    Ok(topo_order(infos))
}

/// References first; self-references ignored; a cycle is broken arbitrarily (Nix forbids them).
pub(crate) fn topo_order(mut infos: HashMap<StorePath, NarInfo>) -> Vec<NarInfo> {
    let mut order = Vec::with_capacity(infos.len());
    let mut done: HashSet<StorePath> = HashSet::new();
    let mut keys: Vec<StorePath> = infos.keys().cloned().collect();
    keys.sort();
    for root in keys {
        // Iterative depth-first post-order.
        let mut stack = vec![(root, false)];
        while let Some((p, expanded)) = stack.pop() {
            if done.contains(&p) {
                continue;
            }
            if expanded {
                done.insert(p.clone());
                if let Some(info) = infos.remove(&p) {
                    order.push(info);
                }
                continue;
            }
            stack.push((p.clone(), true));
            if let Some(info) = infos.get(&p) {
                for r in &info.references {
                    if r != &p && !done.contains(r) && infos.contains_key(r) {
                        stack.push((r.clone(), false));
                    }
                }
            }
        }
    }
    order
}

/// Every narinfo in the cache, parsed (concurrently).
pub async fn all_narinfos(cache: &BinaryCache) -> Result<Vec<NarInfo>, OpError> {
    Ok(cache.narinfos(CONCURRENCY).try_collect().await?)
}

/// The full store paths in the cache, sorted.
pub async fn list_paths(cache: &BinaryCache) -> Result<Vec<String>, OpError> {
    super::require_cache_info(cache).await?;
    let mut paths: Vec<String> = all_narinfos(cache).await?.iter().map(full).collect();
    paths.sort();
    Ok(paths)
}

/// Number of paths and sizes in a cache.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CacheTotals {
    pub paths: usize,
    pub nar_bytes: u64,
    pub file_bytes: u64,
}

/// The cache's `nix-cache-info` (if any) and totals over its narinfos.
pub async fn info(
    cache: &BinaryCache,
) -> Result<(Option<crate::cache_info::CacheInfo>, CacheTotals), OpError> {
    let cache_info = cache.cache_info().await?;
    let mut totals = CacheTotals::default();
    for i in all_narinfos(cache).await? {
        totals.paths += 1;
        totals.nar_bytes += i.nar_size;
        totals.file_bytes += i.file_size.unwrap_or(0);
    }
    Ok((cache_info, totals))
}

/// The listing of a path: its `.ls` when the cache has one, else read from the NAR.
pub async fn listing(cache: &BinaryCache, path: &StorePath) -> Result<Listing, OpError> {
    let info = narinfo(cache, path).await?;
    if let Some(bytes) = cache.listing_bytes(path).await? {
        if let Ok(listing) = Listing::parse(&bytes) {
            return Ok(listing);
        }
    }
    let name = full(&info);
    read_nar(cache, &info, move |nar| {
        Listing::from_nar(nar).map_err(|source| OpError::Nar { path: name, source })
    })
    .await
}

/// Writes the regular file `sub` of `path` to `out`.
pub async fn cat(
    cache: &BinaryCache,
    path: &StorePath,
    sub: &str,
    out: impl Write + Send + 'static,
) -> Result<(), OpError> {
    let info = narinfo(cache, path).await?;
    let name = format!("{}/{}", full(&info), sub);
    let sub = sub.to_owned();
    read_nar(cache, &info, move |nar| {
        let mut out = out;
        nar::cat_verified(nar, &sub, &mut out)
            .map_err(|source| OpError::Extract { path: name, source })?;
        out.flush()
            .map_err(|e| OpError::io("cannot write the output", e))
    })
    .await
}

/// Streams the NAR of `info` out of `cache` into `consume` (on a blocking thread), checking
/// FileSize/FileHash of the stored object and NarSize/NarHash of the NAR. Whatever `consume`
/// leaves unread is read and hashed too.
pub(crate) async fn read_nar<T, F>(
    cache: &BinaryCache,
    info: &NarInfo,
    consume: F,
) -> Result<T, OpError>
where
    T: Send + 'static,
    F: FnOnce(&mut dyn Read) -> Result<T, OpError> + Send + 'static,
{
    let name = full(info);
    let stream = cache
        .nar_object(info)
        .await?
        .ok_or_else(|| OpError::MissingNar {
            path: name.clone(),
            url: info.url.clone(),
            cache: cache.url().to_owned(),
        })?;
    let method = Compression::from_name(info.compression_or_default())?;
    let (tx, reader) = reader_channel();
    let expect = info.clone();
    let worker = tokio::task::spawn_blocking(move || {
        let name = full(&expect);
        let broken = |source: io::Error| OpError::ReadNar {
            path: name.clone(),
            url: expect.url.clone(),
            source,
        };
        let mut file = HashingReader::new(HashAlgo::Sha256, reader);
        let (value, nar_hash, nar_size) = {
            let decoder = decompress(method, &mut file).map_err(broken)?;
            let mut nar = HashingReader::new(HashAlgo::Sha256, decoder);
            let value = consume(&mut nar)?;
            io::copy(&mut nar, &mut io::sink()).map_err(broken)?;
            let (h, n, _) = nar.finish();
            (value, h, n)
        };
        io::copy(&mut file, &mut io::sink()).map_err(broken)?;
        let (file_hash, file_size, _) = file.finish();
        let mismatch = |field, expected: String, actual: String| OpError::Mismatch {
            path: name.clone(),
            field,
            expected,
            actual,
        };
        if let Some(size) = expect.file_size {
            if size != file_size {
                return Err(mismatch(
                    "FileSize",
                    size.to_string(),
                    file_size.to_string(),
                ));
            }
        }
        if let Some(h) = &expect.file_hash {
            if h.algo() == HashAlgo::Sha256 && *h != file_hash {
                return Err(mismatch("FileHash", h.to_string(), file_hash.to_string()));
            }
        }
        if expect.nar_size != nar_size {
            return Err(mismatch(
                "NarSize",
                expect.nar_size.to_string(),
                nar_size.to_string(),
            ));
        }
        if expect.nar_hash.algo() == HashAlgo::Sha256 && expect.nar_hash != nar_hash {
            return Err(mismatch(
                "NarHash",
                expect.nar_hash.to_string(),
                nar_hash.to_string(),
            ));
        }
        Ok(value)
    });
    let ((), result) = tokio::join!(feed(stream, tx), worker);
    result.map_err(join_error)?
}
