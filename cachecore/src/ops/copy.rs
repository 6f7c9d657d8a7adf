//! `copy`: copy store paths (with their closures) or a whole cache from one cache to another,
//! object by object (re-compressing only when asked), with push's ordering guarantees.

use std::sync::Arc;

use futures::{StreamExt as _, TryStreamExt as _};

use super::browse::{all_narinfos, closure, read_nar};
use super::pipe::sink_stream;
use super::{publish_as_ready, staged, OpError, Progress, Publisher};
use crate::cache_info::CacheInfo;
use crate::compression::{Compression, Compressor};
use crate::hash::{HashAlgo, HashingWriter};
use crate::narinfo::NarInfo;
use crate::seekable::{SeekableOptions, SeekableWriter};
use crate::store::BinaryCache;
use crate::store_path::StorePath;

/// How to copy.
#[derive(Debug, Clone)]
pub struct CopyOptions {
    /// Objects copied at once.
    pub jobs: usize,
    /// Re-compress NARs with this method and level; `None` copies objects as they are.
    pub recompress: Option<(Compression, Option<i32>)>,
}

impl Default for CopyOptions {
    fn default() -> Self {
        CopyOptions {
            jobs: 4,
            recompress: None,
        }
    }
}

/// What a copy did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CopySummary {
    pub copied: usize,
    pub skipped: usize,
}

/// Copies `paths` and their closures (every path when `paths` is empty) from `from` to `to`.
pub async fn copy(
    from: &BinaryCache,
    to: &BinaryCache,
    paths: &[StorePath],
    opts: &CopyOptions,
    progress: Arc<dyn Progress>,
) -> Result<CopySummary, OpError> {
    let source_info = from.cache_info().await?.unwrap_or_default();
    to.init(&CacheInfo {
        store_dir: source_info.store_dir.clone(),
        ..CacheInfo::default()
    })
    .await?;
    let infos = if paths.is_empty() {
        let all = all_narinfos(from).await?;
        super::browse::topo_order(all.into_iter().map(|i| (i.store_path.clone(), i)).collect())
    } else {
        closure(from, paths).await?
    };
    let all: Vec<StorePath> = infos.iter().map(|i| i.store_path.clone()).collect();
    let missing: std::collections::HashSet<StorePath> =
        to.missing(&all, 64).await?.into_iter().collect();
    let todo: Vec<NarInfo> = infos
        .into_iter()
        .filter(|i| missing.contains(&i.store_path))
        .collect();
    let mut summary = CopySummary {
        skipped: all.len() - todo.len(),
        ..CopySummary::default()
    };
    progress.planned(
        todo.len(),
        todo.iter().map(|i| i.nar_size).sum(),
        summary.skipped,
    );

    let refs: Vec<(StorePath, Vec<StorePath>)> = todo
        .iter()
        .map(|i| (i.store_path.clone(), i.references.clone()))
        .collect();
    let publisher = Publisher::new(refs.iter().map(|(p, r)| (p, r.as_slice())));
    let transfers = futures::stream::iter(todo.into_iter().map(|info| {
        let progress = progress.clone();
        async move {
            let size = info.nar_size;
            let out = copy_one(from, to, info, opts).await?;
            progress.bytes(size);
            Ok::<_, OpError>(out)
        }
    }))
    .buffer_unordered(opts.jobs.max(1));
    publish_as_ready(
        to,
        publisher,
        transfers,
        64,
        |_| summary.copied += 1,
        |info| progress.path_done(&info.store_dir.full_path(&info.store_path)),
    )
    .await?;
    Ok(summary)
}

/// Copies one path's NAR object and listing; returns the narinfo to publish.
async fn copy_one(
    from: &BinaryCache,
    to: &BinaryCache,
    info: NarInfo,
    opts: &CopyOptions,
) -> Result<NarInfo, OpError> {
    let hash_part = info.store_path.hash_part();
    let info = match opts.recompress {
        None => {
            // Straight to the same key: the upload completes only after the bytes matched the
            // narinfo's FileHash and FileSize, so a corrupt source leaves nothing behind.
            let stream = from
                .nar_object(&info)
                .await?
                .ok_or_else(|| OpError::MissingNar {
                    path: info.store_dir.full_path(&info.store_path),
                    url: info.url.clone(),
                    cache: from.url().to_owned(),
                })?;
            let stream = stream.map_err(std::io::Error::other);
            to.put_nar_stream(&info.url, checked_file(stream, &info, from.url()))
                .await?;
            info
        }
        Some((method, level)) => {
            let staging = to.staged_nar(&format!("{hash_part}-{}", std::process::id()));
            let (sink, stream) = sink_stream();
            let reading = read_nar(from, &info, move |nar| {
                let io_err = |e| OpError::io("cannot re-compress", e);
                let hasher = HashingWriter::new(HashAlgo::Sha256, sink);
                let hasher = match method {
                    Compression::Zstd => {
                        let defaults = SeekableOptions::default();
                        let o = SeekableOptions {
                            level: level.unwrap_or(defaults.level),
                            ..defaults
                        };
                        let mut w = SeekableWriter::new(hasher, o).map_err(io_err)?;
                        std::io::copy(nar, &mut w).map_err(io_err)?;
                        w.finish().map_err(io_err)?.0
                    }
                    other => {
                        let mut c = Compressor::new(hasher, other, level)?;
                        std::io::copy(nar, &mut c).map_err(io_err)?;
                        c.finish().map_err(io_err)?
                    }
                };
                let (file_hash, file_size, sink) = hasher.finish();
                sink.finish().map_err(io_err)?;
                Ok((file_hash, file_size))
            });
            let guard = to.guard_staged_nar(&staging);
            let (put, read) = tokio::join!(to.put_staged_nar(&staging, stream), reading);
            let (file_hash, file_size) = staged(to, &staging, put, read).await?;
            let key = to.publish_staged_nar(staging, &file_hash, method).await?;
            guard.disarm();
            let mut info = info;
            info.url = key;
            info.compression = Some(method.name().to_owned());
            info.file_hash = Some(file_hash);
            info.file_size = Some(file_size);
            info
        }
    };
    if let Some(listing) = from.listing_bytes(&info.store_path).await? {
        to.put_listing_bytes(&info.store_path, listing).await?;
    }
    Ok(info)
}

/// `stream` (the NAR object of `info` in the store at `source`), ending with an error instead
/// of its end when its bytes do not match the narinfo's FileHash or FileSize (when it has them),
/// so an upload of it is abandoned rather than completed.
fn checked_file(
    stream: impl futures::Stream<Item = std::io::Result<bytes::Bytes>> + Send,
    info: &NarInfo,
    source: &str,
) -> impl futures::Stream<Item = std::io::Result<bytes::Bytes>> + Send {
    let expected = info.file_hash.clone().map(|h| (h, info.file_size));
    let what = format!("{} in {source}", info.url);
    let hashing = (
        crate::hash::Hasher::new(
            expected
                .as_ref()
                .map_or(HashAlgo::Sha256, |(h, _)| h.algo()),
        ),
        0u64,
    );
    futures::stream::unfold(
        (Box::pin(stream), Some(hashing)),
        move |(mut stream, hashing)| {
            let expected = expected.clone();
            let what = what.clone();
            async move {
                let (mut hasher, mut size) = hashing?;
                match stream.next().await {
                    Some(Ok(chunk)) => {
                        hasher.update(&chunk);
                        size += chunk.len() as u64;
                        Some((Ok(chunk), (stream, Some((hasher, size)))))
                    }
                    Some(Err(e)) => Some((Err(e), (stream, None))),
                    None => {
                        let actual = hasher.finish();
                        let (hash, file_size) = expected?;
                        let wrong = if actual != hash {
                            Some(format!("its FileHash is {actual}, the narinfo says {hash}"))
                        } else if file_size.is_some_and(|n| n != size) {
                            Some(format!(
                                "it is {size} bytes, the narinfo says {}",
                                file_size.unwrap_or_default()
                            ))
                        } else {
                            None
                        };
                        wrong.map(|w| {
                            let e = std::io::Error::new(
                                std::io::ErrorKind::InvalidData,
                                format!("{what} is corrupt: {w}"),
                            );
                            (Err(e), (stream, None))
                        })
                    }
                }
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::Hash;
    use crate::store_path::StoreDir;

    fn run(
        chunks: &[&'static [u8]],
        file_hash: Option<Hash>,
        file_size: Option<u64>,
    ) -> Vec<std::io::Result<bytes::Bytes>> {
        let mut info = NarInfo::new(
            StoreDir::default(),
            StorePath::from_base_name("00000000000000000000000000000000-x").unwrap(),
            "nar/x.nar".into(),
            Hash::digest(HashAlgo::Sha256, b""),
            0,
        );
        info.file_hash = file_hash;
        info.file_size = file_size;
        let stream = futures::stream::iter(
            chunks
                .iter()
                .map(|c| Ok(bytes::Bytes::from_static(c)))
                .collect::<Vec<_>>(),
        );
        futures::executor::block_on(checked_file(stream, &info, "src").collect::<Vec<_>>())
    }

    #[test]
    fn checked_file_passes_matching_bytes_and_fails_the_end_of_others() {
        let right = Hash::digest(HashAlgo::Sha256, b"hello world");
        let ok = run(&[b"hello ", b"world"], Some(right.clone()), Some(11));
        assert_eq!(ok.len(), 2);
        assert!(ok.iter().all(|r| r.is_ok()));
        // No FileHash to check: passed through.
        assert_eq!(run(&[b"anything"], None, None).len(), 1);

        let bad = run(&[b"hello ", b"w0rld"], Some(right.clone()), Some(11));
        assert_eq!(
            bad.len(),
            3,
            "the chunks, then an error in place of the end"
        );
        let e = bad[2].as_ref().unwrap_err().to_string();
        assert!(
            e.contains("nar/x.nar in src is corrupt") && e.contains("FileHash"),
            "{e}"
        );

        let short = run(&[b"hello ", b"world"], Some(right), Some(12));
        let e = short[2].as_ref().unwrap_err().to_string();
        assert!(e.contains("11 bytes, the narinfo says 12"), "{e}");
    }
}
