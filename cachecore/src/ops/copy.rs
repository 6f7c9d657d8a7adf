//! `copy`: copy store paths (with their closures) or a whole cache from one cache to another,
//! object by object (re-compressing only when asked), with push's ordering guarantees.
//!
//! The source is untrusted; what reaches the destination is checked first:
//! - narinfos are identity-checked (each describes the path it is stored for and was asked
//!   for), and with [`CopyOptions::trusted_keys`] every path must be signed by one of them —
//!   all of them are checked before anything is written;
//! - every NAR is checked exactly as `pull` checks it (FileSize, FileHash in its own algorithm,
//!   NarSize, sha256 NarHash; reading stops at the declared sizes) *before its upload
//!   completes*: a failed check abandons the upload, and nothing appears in the destination;
//! - object keys in the destination are cachecore's, never the source's `URL:`: a NAR goes to
//!   `nar/<sha256 of the file, nix32>.nar<ext>` (Nix's naming), its listing is built from the
//!   checked NAR and written as `<hash>.ls`, and the narinfo as `<hash>.narinfo`.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::StreamExt as _;

use super::browse::{all_narinfos, consume_checked};
use super::pipe::{reader_channel, sink_stream};
use super::pull::check_trusted;
use super::{join_error, staged, OpError, Progress};
use crate::access::FramesClaim;
use crate::cache_info::CacheInfo;
use crate::compression::{Compression, NarCompression};
use crate::graph::{self, publish_as_ready, Publisher, WalkLimits};
use crate::hash::{Hash, HashAlgo, HashingWriter};
use crate::nar::Listing;
use crate::narinfo::NarInfo;
use crate::signing::PublicKey;
use crate::store::{BinaryCache, IntegrityError, NarReader};
use crate::store_path::StorePath;

/// How to copy.
#[derive(Debug, Clone)]
pub struct CopyOptions {
    /// Objects copied at once.
    pub jobs: usize,
    /// Re-compress NARs as this says; `None` copies objects as they are.
    pub recompress: Option<NarCompression>,
    /// When not empty, copy only paths signed by one of these keys: a path of the transfer
    /// without such a signature fails the copy before anything is written (and before any of
    /// its references is looked at).
    pub trusted_keys: Vec<PublicKey>,
    /// Bounds on the walk of the closures to copy.
    pub walk_limits: WalkLimits,
}

impl Default for CopyOptions {
    fn default() -> Self {
        CopyOptions {
            jobs: 4,
            recompress: None,
            trusted_keys: Vec::new(),
            walk_limits: WalkLimits::default(),
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
///
/// ```
/// # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
/// use std::sync::Arc;
/// use cachecore::ops::{self, CopyOptions, NoProgress};
/// use cachecore::store::BinaryCache;
/// # use cachecore::{ops::PushOptions, store_path::StoreDir};
/// # let src = tempfile::tempdir().unwrap();
/// # std::fs::write(src.path().join("hello"), "hello, world\n").unwrap();
/// let (from, to) = (BinaryCache::open("memory://").unwrap(), BinaryCache::open("memory://").unwrap());
/// # let (path, _) = ops::push_add(&from, &StoreDir::default(), src.path(), "hello",
/// #     &PushOptions::default(), Arc::new(NoProgress)).await.unwrap();
/// // `from` holds one path (hidden above); copy everything it has.
/// let opts = CopyOptions::default();
/// let summary = ops::copy(&from, &to, &[], &opts, Arc::new(NoProgress)).await.unwrap();
/// assert_eq!((summary.copied, summary.skipped), (1, 0));
/// assert!(to.has_narinfo(&path).await.unwrap());
/// let again = ops::copy(&from, &to, &[path], &opts, Arc::new(NoProgress)).await.unwrap();
/// assert_eq!((again.copied, again.skipped), (0, 1));
/// # });
/// ```
pub async fn copy(
    from: &BinaryCache,
    to: &BinaryCache,
    paths: &[StorePath],
    opts: &CopyOptions,
    progress: Arc<dyn Progress>,
) -> Result<CopySummary, OpError> {
    if let Some(config) = &opts.recompress {
        config.check()?;
    }
    super::require_writable(to)?;
    let source_info = from.cache_info().await?.unwrap_or_default();
    to.init(&CacheInfo {
        store_dir: source_info.store_dir.clone(),
        ..CacheInfo::default()
    })
    .await?;
    let trusted = |info: &NarInfo| match opts.trusted_keys.is_empty() {
        true => Ok(()),
        false => check_trusted(info, &opts.trusted_keys),
    };
    let infos = if paths.is_empty() {
        let mut all = all_narinfos(from).await?;
        all.sort_by(|a, b| a.store_path.cmp(&b.store_path));
        let all = graph::references_first(all)?;
        all.iter().try_for_each(trusted)?;
        all
    } else {
        // Each narinfo's signature is checked before its references are followed.
        graph::closure_with(from, paths, &opts.walk_limits, trusted).await?
    };
    let all: Vec<StorePath> = infos.iter().map(|i| i.store_path.clone()).collect();
    // The push rule (see `gc::lease`): a lease on the closure before anything is found
    // present; paths a GC is collecting count as missing.
    let guard = crate::gc::PushGuard::begin(to, "copy", &all)
        .await
        .map_err(graph::GraphError::from)?;
    let copied = copy_guarded(from, to, infos, all, &guard, opts, progress).await;
    guard.end().await;
    copied
}

/// [`copy`] once its lease is written.
async fn copy_guarded(
    from: &BinaryCache,
    to: &BinaryCache,
    infos: Vec<NarInfo>,
    all: Vec<StorePath>,
    guard: &crate::gc::PushGuard,
    opts: &CopyOptions,
    progress: Arc<dyn Progress>,
) -> Result<CopySummary, OpError> {
    let missing: std::collections::HashSet<StorePath> =
        guard.missing(&all, 64).await?.into_iter().collect();
    let todo: Vec<NarInfo> = infos
        .into_iter()
        .filter(|i| missing.contains(&i.store_path))
        .collect();
    let mut summary = CopySummary {
        skipped: all.len() - todo.len(),
        ..CopySummary::default()
    };
    // Each NarSize is at most 2^50 (checked at parse time): saturating is only a guard.
    progress.planned(
        todo.len(),
        todo.iter()
            .fold(0u64, |sum, i| sum.saturating_add(i.nar_size)),
        summary.skipped,
    );

    let publisher = Publisher::new(&todo)?;
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
    let pushed_at = crate::gc::roots::unix_secs(std::time::SystemTime::now());
    let mut indexed: Vec<crate::store::IndexEntry> = Vec::new();
    let published = publish_as_ready(
        to,
        publisher,
        transfers,
        64,
        Some(guard),
        |_| summary.copied += 1,
        |info| {
            progress.path_done(&info.store_dir.full_path(&info.store_path));
            indexed.push(crate::store::IndexEntry::from_narinfo(info, pushed_at));
        },
    )
    .await;
    // The push index, after the narinfos it lists (those written, even if the copy failed).
    to.append_index(&indexed).await?;
    published?;
    Ok(summary)
}

/// Copies one path's NAR object, and its listing when the source has one (rebuilt from the
/// checked NAR: the source's `.ls` is not covered by any hash); returns the narinfo to publish.
async fn copy_one(
    from: &BinaryCache,
    to: &BinaryCache,
    info: NarInfo,
    opts: &CopyOptions,
) -> Result<NarInfo, OpError> {
    let with_listing = from.has_listing(&info.store_path).await?;
    let (mut info, listing) = match &opts.recompress {
        None => copy_as_is(from, to, info).await?,
        Some(config) => {
            // Other frames: the signed frame digests would lie.
            let (mut info, listing) = recompress(from, to, info, config.clone()).await?;
            FramesClaim::remove(&mut info);
            (info, listing)
        }
    };
    if !with_listing {
        if FramesClaim::of(&info).is_some_and(|c| c.listing.is_some()) {
            FramesClaim::remove(&mut info);
        }
        copy_frame_digests(from, to, &mut info).await?;
        return Ok(info);
    }
    let json = serde_json::to_vec(&listing).map_err(|e| {
        OpError::io(
            format!(
                "cannot serialize the listing of {}",
                info.store_dir.full_path(&info.store_path)
            ),
            e.into(),
        )
    })?;
    // The listing is rebuilt: a claim signed over other bytes is dropped.
    if FramesClaim::of(&info)
        .is_some_and(|c| c.listing != Some(Hash::digest(HashAlgo::Sha256, &json)))
    {
        FramesClaim::remove(&mut info);
    }
    copy_frame_digests(from, to, &mut info).await?;
    to.put_listing_bytes(&info.store_path, json.into()).await?;
    to.sync_listing(&info.store_path).await?;
    Ok(info)
}

/// Copies the frame digests `info`'s claim names (the NAR was copied as it is, so they still
/// describe it, and their signature still holds); a claim whose digests are missing or do not
/// hash to their name is dropped, as a reader would ignore it.
async fn copy_frame_digests(
    from: &BinaryCache,
    to: &BinaryCache,
    info: &mut NarInfo,
) -> Result<(), OpError> {
    let Some(claim) = FramesClaim::of(info) else {
        return Ok(());
    };
    let bytes = match from
        .frame_digests(&claim.frames, crate::access::MAX_FRAME_DIGESTS_BYTES)
        .await
    {
        Ok(Some(bytes)) if Hash::digest(HashAlgo::Sha256, &bytes) == claim.frames => bytes,
        Ok(_) => {
            FramesClaim::remove(info);
            return Ok(());
        }
        Err(e) if e.kind() == crate::error::ErrorKind::Corrupt => {
            FramesClaim::remove(info);
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    };
    let hash = to.put_frame_digests(bytes).await?;
    to.sync_frame_digests(&hash).await?;
    Ok(())
}

/// What the checking thread of a copy found: the listing built from the checked NAR, and the
/// compressed object's size and sha256.
type Checked = (Listing, (u64, Hash));

/// Reads the NAR of `reader` to its end building its listing, then returns the listing and the
/// object's size and sha256 — only if every check passed (an integrity failure first).
fn check_and_list(mut reader: NarReader, path: String) -> Result<Checked, OpError> {
    let listing = Listing::from_nar(&mut reader).map_err(|source| OpError::Nar { path, source });
    if listing.is_ok() {
        // Whatever follows the NAR's end is read (and refused) too.
        let _ = std::io::copy(&mut reader, &mut std::io::sink());
    }
    let file = reader.file_sha256();
    reader.finish()?;
    let listing = listing?;
    let file = file.ok_or_else(|| OpError::Cancelled {
        detail: "the NAR checked out but its object's hash is unknown".into(),
    })?;
    Ok((listing, file))
}

/// Copies the NAR object of `info` byte for byte: streamed from the source to the destination
/// while a blocking thread decompresses and checks a copy of the same bytes; the upload's end
/// waits for that thread's verdict, so the upload completes only for an object that passed
/// every check. The key is `nar/<FileHash>.nar<ext>` when the narinfo's FileHash is sha256
/// (the bytes are checked against it before the upload completes); otherwise the object is
/// staged and renamed to the sha256 found, which then becomes the narinfo's FileHash.
async fn copy_as_is(
    from: &BinaryCache,
    to: &BinaryCache,
    mut info: NarInfo,
) -> Result<(NarInfo, Listing), OpError> {
    let path = info.store_dir.full_path(&info.store_path);
    let method = Compression::from_name(info.compression_or_default()).map_err(|source| {
        IntegrityError::Compression {
            path: path.clone(),
            source,
        }
    })?;
    let (tx, channel) = reader_channel();
    let reader = NarReader::new(&info, channel)?;
    let source = from
        .nar_object(&info)
        .await?
        .ok_or_else(|| IntegrityError::NarMissing {
            path: path.clone(),
            key: info.url.clone(),
            url: from.url().to_owned(),
        })?;
    let checker = tokio::task::spawn_blocking(move || check_and_list(reader, path));
    let verdict: Arc<Mutex<Option<Result<Checked, OpError>>>> = Arc::default();
    let upload = tee_until_checked(source, tx, checker, verdict.clone());

    let final_key = match &info.file_hash {
        Some(h) if h.algo() == HashAlgo::Sha256 => Some(BinaryCache::nar_url(h, method)),
        _ => None,
    };
    let staging = to.staged_nar(&format!(
        "{}-{}",
        info.store_path.hash_part(),
        std::process::id()
    ));
    // A copy dropped before it published or discarded the staged NAR (Ctrl-C) deletes it.
    let guard = final_key.is_none().then(|| to.guard_staged_nar(&staging));
    let uploaded = match &final_key {
        Some(key) => to.put_nar_stream(key, upload).await,
        None => to.put_staged_nar(&staging, upload).await,
    };
    let checked = verdict.lock().unwrap_or_else(|p| p.into_inner()).take();
    let checked = match (uploaded, checked) {
        (Ok(_), Some(Ok(checked))) => Ok(checked),
        (_, Some(Err(e))) => Err(e),
        (Err(e), _) => Err(e.into()),
        // The upload completed without the stream's end, which waits for the verdict.
        (Ok(_), None) => Err(OpError::Cancelled {
            detail: format!(
                "the upload of {} ended before its check",
                info.store_dir.full_path(&info.store_path)
            ),
        }),
    };
    let (listing, (file_size, file_sha256)) = match checked {
        Ok(checked) => checked,
        Err(e) => {
            if final_key.is_none() {
                let _ = to.discard_staged_nar(&staging).await;
            }
            return Err(e);
        }
    };
    let key = match final_key {
        Some(key) => key,
        None => to.publish_staged_nar(staging, &file_sha256, method).await?,
    };
    if let Some(guard) = guard {
        guard.disarm();
    }
    to.sync_nar(&key).await?;
    info.url = key;
    info.file_hash = Some(file_sha256);
    info.file_size = Some(file_size);
    Ok((info, listing))
}

/// `source` passed through to an upload, each chunk also sent to the checking thread; at the
/// source's end, the checker's verdict is awaited and stored in `verdict`, and a failure ends
/// the stream with an error instead of its end (so the upload is abandoned). A checker that
/// stops reading early has failed: the stream ends with an error at once.
fn tee_until_checked(
    source: futures::stream::BoxStream<'static, Result<Bytes, crate::store::StoreError>>,
    tx: tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
    checker: tokio::task::JoinHandle<Result<Checked, OpError>>,
    verdict: Arc<Mutex<Option<Result<Checked, OpError>>>>,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send {
    struct State {
        source: futures::stream::BoxStream<'static, Result<Bytes, crate::store::StoreError>>,
        tx: Option<tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>>,
        checker: Option<tokio::task::JoinHandle<Result<Checked, OpError>>>,
        verdict: Arc<Mutex<Option<Result<Checked, OpError>>>>,
    }
    /// Waits for the checker; `Ok` when it passed (its result stored), else the error to end
    /// the upload with.
    async fn conclude(st: &mut State) -> Result<(), std::io::Error> {
        st.tx = None;
        let Some(checker) = st.checker.take() else {
            return Err(std::io::Error::other("the check already ended"));
        };
        let result = checker.await.map_err(join_error).and_then(|r| r);
        let outcome = match &result {
            Ok(_) => Ok(()),
            Err(e) => Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                e.to_string(),
            )),
        };
        *st.verdict.lock().unwrap_or_else(|p| p.into_inner()) = Some(result);
        outcome
    }
    let state = State {
        source,
        tx: Some(tx),
        checker: Some(checker),
        verdict,
    };
    futures::stream::unfold(state, |mut st| async move {
        st.checker.as_ref()?;
        match st.source.next().await {
            Some(Ok(chunk)) => {
                let sent = match &st.tx {
                    Some(tx) => tx.send(Ok(chunk.clone())).await.is_ok(),
                    None => false,
                };
                if sent {
                    Some((Ok(chunk), st))
                } else {
                    let e = conclude(&mut st)
                        .await
                        .err()
                        .unwrap_or_else(|| std::io::Error::other("the check stopped early"));
                    Some((Err(e), st))
                }
            }
            Some(Err(e)) => {
                st.tx = None;
                st.checker = None;
                Some((Err(std::io::Error::other(e.to_string())), st))
            }
            None => match conclude(&mut st).await {
                Ok(()) => None,
                Err(e) => Some((Err(e), st)),
            },
        }
    })
}

/// A reader that copies every byte read through it into `out`.
struct Tee<'a, W> {
    inner: &'a mut dyn std::io::Read,
    out: W,
}

impl<W: std::io::Write> std::io::Read for Tee<'_, W> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.out.write_all(&buf[..n])?;
        Ok(n)
    }
}

/// Re-compresses the (checked) NAR of `info` into a staging object, renamed to
/// `nar/<sha256 of the new file>.nar<ext>` once the source NAR passed every check.
async fn recompress(
    from: &BinaryCache,
    to: &BinaryCache,
    mut info: NarInfo,
    config: NarCompression,
) -> Result<(NarInfo, Listing), OpError> {
    let hash_part = info.store_path.hash_part();
    let staging = to.staged_nar(&format!("{hash_part}-{}", std::process::id()));
    let (sink, stream) = sink_stream();
    let reader = from.nar(&info).await?;
    let name = info.store_dir.full_path(&info.store_path);
    let nar_size = info.nar_size;
    let reading = tokio::task::spawn_blocking(move || {
        consume_checked(reader, move |nar| {
            let io_err = |e| OpError::io("cannot re-compress", e);
            let hasher = HashingWriter::new(HashAlgo::Sha256, sink);
            let mut c = config.compressor(hasher, nar_size)?;
            let listing = list_through(nar, &mut c, &name)?;
            let hasher = c.finish().map_err(io_err)?;
            let (file_hash, file_size, sink) = hasher.finish();
            // The end of the stream (the upload completes) only after the whole source NAR
            // was read: `list_through` reads to the reader's end, which it reports only once
            // every check passed.
            sink.finish().map_err(io_err)?;
            Ok((listing, file_hash, file_size))
        })
    });
    let guard = to.guard_staged_nar(&staging);
    let (put, read) = tokio::join!(to.put_staged_nar(&staging, stream), async {
        reading.await.map_err(join_error).and_then(|r| r)
    });
    let (listing, file_hash, file_size) = staged(to, &staging, put, read).await?;
    let key = to
        .publish_staged_nar(staging, &file_hash, config.method)
        .await?;
    guard.disarm();
    to.sync_nar(&key).await?;
    info.url = key;
    info.compression = Some(config.method.name().to_owned());
    info.file_hash = Some(file_hash);
    info.file_size = Some(file_size);
    Ok((info, listing))
}

/// Builds the listing of the NAR read from `nar` while writing every byte to `out`, reading
/// to the end.
fn list_through(
    nar: &mut dyn std::io::Read,
    out: &mut dyn std::io::Write,
    name: &str,
) -> Result<Listing, OpError> {
    let mut tee = Tee { inner: nar, out };
    let listing = Listing::from_nar(&mut tee).map_err(|source| OpError::Nar {
        path: name.to_owned(),
        source,
    })?;
    std::io::copy(&mut tee, &mut std::io::sink())
        .map_err(|e| OpError::io("cannot re-compress", e))?;
    Ok(listing)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compression::Compressor;
    use crate::store_path::StoreDir;

    /// A NAR of one small file, stored in `cache` under its narinfo's URL; returns the narinfo.
    async fn stored(cache: &BinaryCache, method: Compression) -> (NarInfo, Vec<u8>) {
        let mut nar = Vec::new();
        crate::nar::writer::open(&mut nar)
            .unwrap()
            .file(false, 5, &mut &b"hello"[..])
            .unwrap();
        let mut c = Compressor::new(Vec::new(), method, None).unwrap();
        std::io::Write::write_all(&mut c, &nar).unwrap();
        let file = c.finish().unwrap();
        let mut info = NarInfo::new(
            StoreDir::default(),
            StorePath::from_base_name("00000000000000000000000000000000-x").unwrap(),
            "nar/whatever.nar".into(),
            Hash::digest(HashAlgo::Sha256, &nar),
            nar.len() as u64,
        );
        info.compression = Some(method.name().into());
        info.file_hash = Some(Hash::digest(HashAlgo::Sha256, &file));
        info.file_size = Some(file.len() as u64);
        cache
            .put_nar(&info.url, Bytes::from(file.clone()))
            .await
            .unwrap();
        (info, file)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn as_is_copies_land_under_cachecore_keys_and_only_when_checked() {
        let (from, to) = (
            BinaryCache::open("memory://").unwrap(),
            BinaryCache::open("memory://").unwrap(),
        );
        let (info, file) = stored(&from, Compression::Xz).await;
        let (copied, listing) = copy_as_is(&from, &to, info.clone()).await.unwrap();
        assert_eq!(
            copied.url,
            BinaryCache::nar_url(&Hash::digest(HashAlgo::Sha256, &file), Compression::Xz)
        );
        assert!(listing.get("").is_some());
        assert_eq!(
            to.objects().get_bytes(&copied.url).await.unwrap().unwrap(),
            file
        );
        assert!(to
            .objects()
            .get_bytes("nar/whatever.nar")
            .await
            .unwrap()
            .is_none());

        // A wrong NarHash: nothing lands in the destination.
        let to = BinaryCache::open("memory://").unwrap();
        let mut bad = info.clone();
        bad.nar_hash = Hash::digest(HashAlgo::Sha256, b"other");
        let e = copy_as_is(&from, &to, bad).await.unwrap_err();
        assert!(
            matches!(
                e,
                OpError::Integrity(IntegrityError::Mismatch {
                    field: "NarHash",
                    ..
                })
            ),
            "{e}"
        );
        assert!(to.objects().get_bytes(&copied.url).await.unwrap().is_none());

        // An md5 FileHash: checked with md5, the copy named by the sha256 found.
        let mut md5 = info.clone();
        md5.file_hash = Some(Hash::digest(HashAlgo::Md5, &file));
        let (copied, _) = copy_as_is(&from, &to, md5).await.unwrap();
        assert_eq!(
            copied.file_hash,
            Some(Hash::digest(HashAlgo::Sha256, &file))
        );
        assert_eq!(
            to.objects().get_bytes(&copied.url).await.unwrap().unwrap(),
            file
        );
    }
}
