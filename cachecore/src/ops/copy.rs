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
use crate::store::{layout, BinaryCache};
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
    let staging = layout::temp_nar(&format!("{hash_part}-{}", std::process::id()));
    let info = match opts.recompress {
        None => {
            let stream = from.get(&info.url).await?.ok_or_else(|| {
                OpError::Other(format!(
                    "{}: its NAR {} is missing from {}",
                    info.store_path,
                    info.url,
                    from.url()
                ))
            })?;
            let stream = stream.map_err(|e| std::io::Error::other(e.to_string()));
            to.put_stream(&staging, stream).await?;
            to.rename(&staging, &info.url).await?;
            info
        }
        Some((method, level)) => {
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
            let (put, read) = tokio::join!(to.put_stream(&staging, stream), reading);
            let (file_hash, file_size) = staged(to, &staging, put, read).await?;
            let key = layout::nar(&file_hash, method);
            to.rename(&staging, &key).await?;
            let mut info = info;
            info.url = key;
            info.compression = Some(method.name().to_owned());
            info.file_hash = Some(file_hash);
            info.file_size = Some(file_size);
            info
        }
    };
    if let Some(listing) = from.get_bytes(&layout::listing(&hash_part)).await? {
        to.put_bytes(&layout::listing(&hash_part), listing).await?;
    }
    Ok(info)
}
