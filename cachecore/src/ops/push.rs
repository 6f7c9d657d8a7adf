//! `push`: upload the closure of local store paths into a binary cache.
//!
//! Per path: the file system → NAR writer → NarHash → compressor (zstd frames on all cores, as a
//! seekable `.nar.zst`) → FileHash → the cache: a NAR up to 4 MiB is compressed in memory and
//! written once as `nar/<FileHash>.nar.zst`; a larger one streams (multipart) straight to
//! `nar/<NarHash>-<unique>.nar.zst`, the upload completing only once the NarHash is checked. The
//! NarHash computed on the way must equal the local store's, or the path fails and nothing of it
//! is published. Narinfos are written last, each only once its NAR is in place (and, on a local
//! directory, synced to disk with its directory) and its references' narinfos are visible. NARs
//! go largest first, `jobs` at a time.
//!
//! Racing pushes of the same path cannot leave a narinfo describing another object: a small NAR's
//! key is the hash of its bytes (any two writers of the key write the same bytes), and a large
//! NAR's key is unique to its upload ([`BinaryCache::streamed_nar_url`]). A narinfo written by one
//! push names the object that push wrote, whichever narinfo write lands last.
//!
//! With [`PushOptions::repair`], paths already in the cache are verified (their NAR read and
//! checked against their narinfo) and pushed again when they fail. Before uploading, a push
//! removes the debris of killed uploads older than [`DEBRIS_AGE`](crate::store::DEBRIS_AGE).

use std::collections::HashSet;
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::Arc;

use futures::StreamExt as _;

use super::pipe::sink_stream;
use super::{join_error, OpError, Progress};
use crate::access::frame_digests::{signer_refs, FrameDigests, FramesClaim};
use crate::compression::{self, Compression, NarCompression};
use crate::gc::PushGuard;
use crate::graph::{publish_as_ready, Publisher};
use crate::hash::{Hash, HashAlgo, HashingWriter};
use crate::local_store::{LocalStore, PathInfo};
use crate::nar;
use crate::narinfo::{ContentAddress, NarInfo};
use crate::signing::Signer;
use crate::store::{BinaryCache, IndexEntry, StoreError};
use crate::store_path::{StoreDir, StorePath};

/// How to push.
#[derive(Clone)]
pub struct PushOptions {
    /// NARs larger than 4 MiB streamed at once (each holds a few compression frames in memory);
    /// small NARs, compressed in memory and written in one request, go `4 × jobs` at a time.
    pub jobs: usize,
    /// Existence checks (HEAD requests) in flight at once.
    pub check_concurrency: usize,
    /// Method, level and threads of the NARs' compression.
    pub compression: NarCompression,
    /// Push the whole closure (default) or only the named paths, whose references must then
    /// already be in the cache.
    pub closure: bool,
    /// Keys to sign narinfos with; signatures already in the local store are kept.
    pub signers: Vec<Arc<dyn Signer>>,
    /// Write `<hash>.ls` listings (needed by `mount`).
    pub write_listing: bool,
    /// Upload build logs of the pushed paths' derivations.
    pub logs: bool,
    /// Verify the paths already in the cache and push again those that fail (a missing or
    /// damaged NAR, a narinfo that does not match its object).
    pub repair: bool,
}

impl std::fmt::Debug for PushOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushOptions")
            .field("jobs", &self.jobs)
            .field("compression", &self.compression)
            .field("closure", &self.closure)
            .field(
                "signers",
                &self
                    .signers
                    .iter()
                    .map(|s| s.key_name().to_owned())
                    .collect::<Vec<_>>(),
            )
            .field("write_listing", &self.write_listing)
            .field("logs", &self.logs)
            .field("repair", &self.repair)
            .finish_non_exhaustive()
    }
}

impl Default for PushOptions {
    fn default() -> Self {
        PushOptions {
            jobs: 4,
            check_concurrency: 64,
            compression: NarCompression::default(),
            closure: true,
            signers: Vec::new(),
            write_listing: true,
            logs: false,
            repair: false,
        }
    }
}

impl PushOptions {
    /// The defaults with the store URL's Nix settings applied (`compression`,
    /// `compression-level`, `write-nar-listing`, `parallel-compression`, and `secret-key`, whose
    /// file is read now). A frontend then overrides what its own options say.
    ///
    /// ```
    /// use cachecore::{compression::Compression, ops::PushOptions, store::BinaryCache};
    /// let cache = BinaryCache::open("memory://?compression=xz&write-nar-listing=false").unwrap();
    /// let opts = PushOptions::for_cache(&cache).unwrap();
    /// assert_eq!(opts.compression.method, Compression::Xz);
    /// assert!(!opts.write_listing);
    /// // A frontend's own options come on top.
    /// let opts = PushOptions { jobs: 16, ..opts };
    /// assert_eq!(opts.jobs, 16);
    /// ```
    pub fn for_cache(cache: &BinaryCache) -> Result<PushOptions, OpError> {
        let settings = cache.settings();
        let mut opts = PushOptions::default();
        if let Some(method) = settings.compression {
            opts.compression.method = method;
        }
        opts.compression.level = settings.compression_level;
        if let Some(listing) = settings.write_nar_listing {
            opts.write_listing = listing;
        }
        if settings.parallel_compression == Some(false) {
            opts.compression.threads = 1;
        }
        if let Some(path) = &settings.secret_key {
            opts.signers = vec![read_secret_key_file(path)?];
        }
        Ok(opts)
    }
}

/// Reads the secret key file named by a store URL's `secret-key=`. The error names the file,
/// never its contents.
fn read_secret_key_file(path: &std::path::Path) -> Result<Arc<dyn Signer>, OpError> {
    let bad = |reason: String| OpError::SecretKeyFile {
        path: path.display().to_string(),
        reason,
    };
    let key = crate::signing::SecretKey::read_file(path).map_err(|e| bad(e.to_string()))?;
    Ok(Arc::new(key))
}

/// What a push did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PushSummary {
    /// Paths uploaded now.
    pub pushed: usize,
    /// Paths that were already in the cache.
    pub skipped: usize,
    /// Uncompressed NAR bytes uploaded.
    pub nar_bytes: u64,
    /// Compressed bytes uploaded.
    pub file_bytes: u64,
    /// Paths uploaded now whose narinfo carries no signature at all (Nix, which requires
    /// signatures by default, refuses them).
    pub unsigned: usize,
    /// Paths that were already in the cache without the signature of one of
    /// [`PushOptions::signers`] (pushed unsigned, or with another key): `sign` adds it. Only
    /// counted when the push signs.
    pub present_unsigned: usize,
}

/// Pushes `roots` (and their closure, unless `opts.closure` is false) from `local` into `cache`.
///
/// ```no_run
/// // Needs a Nix store on this machine (its database or daemon), so it is not run here.
/// use std::sync::Arc;
/// use cachecore::{local_store::LocalStore, ops, store::BinaryCache, store_path::StoreDir};
/// # ops::runtime().unwrap().block_on(async {
/// let cache = BinaryCache::open("s3://my-cache?region=eu-west-1&compression=zstd").unwrap();
/// let local = LocalStore::open(StoreDir::default()).unwrap();
/// let root = local.resolve("./result".as_ref()).unwrap();
/// let opts = ops::PushOptions::for_cache(&cache).unwrap();
/// let summary = ops::push(&cache, &local, &[root], &opts, Arc::new(ops::NoProgress))
///     .await.unwrap();
/// println!("{} pushed, {} already there", summary.pushed, summary.skipped);
/// # });
/// ```
pub async fn push(
    cache: &BinaryCache,
    local: &LocalStore,
    roots: &[StorePath],
    opts: &PushOptions,
    progress: Arc<dyn Progress>,
) -> Result<PushSummary, OpError> {
    opts.compression.check()?;
    super::require_writable(cache)?;
    let store_dir = local.store_dir().clone();
    cache
        .init(&cache.settings().cache_info(store_dir.as_str()))
        .await?;

    let infos: Vec<PathInfo> = if opts.closure {
        local.closure(roots)?
    } else {
        let mut v = Vec::new();
        for r in roots {
            v.push(local.path_info(r)?.ok_or_else(|| {
                OpError::Local(crate::local_store::LocalStoreError::NotValid {
                    path: store_dir.full_path(r),
                    arg: None,
                })
            })?);
        }
        v
    };
    cache.remove_stale_debris().await?;
    let all: Vec<StorePath> = infos.iter().map(|i| i.path.clone()).collect();
    // The push rule (see `gc::lease`): a lease on everything the push may publish or reference,
    // before anything is found present; paths a GC is collecting count as missing.
    let mut lease_paths = all.clone();
    if !opts.closure {
        lease_paths.extend(infos.iter().flat_map(|i| i.references.iter().cloned()));
    }
    let guard = PushGuard::begin(cache, "push", &lease_paths)
        .await
        .map_err(crate::graph::GraphError::from)?;
    let pushed = push_guarded(cache, local, infos, all, &guard, opts, progress).await;
    guard.end().await;
    pushed
}

/// [`push`] once its lease is written.
async fn push_guarded(
    cache: &BinaryCache,
    local: &LocalStore,
    infos: Vec<PathInfo>,
    all: Vec<StorePath>,
    guard: &PushGuard,
    opts: &PushOptions,
    progress: Arc<dyn Progress>,
) -> Result<PushSummary, OpError> {
    let store_dir = local.store_dir().clone();
    let mut missing: HashSet<StorePath> = guard
        .missing(&all, opts.check_concurrency)
        .await?
        .into_iter()
        .collect();
    if opts.repair {
        let present: Vec<StorePath> = all
            .iter()
            .filter(|p| !missing.contains(*p))
            .cloned()
            .collect();
        missing.extend(damaged(cache, &present, opts.jobs, progress.as_ref()).await?);
    }
    let present_unsigned = if opts.signers.is_empty() {
        0
    } else {
        let present: Vec<&StorePath> = all.iter().filter(|p| !missing.contains(*p)).collect();
        not_signed_by(cache, &present, &opts.signers, opts.check_concurrency).await
    };
    let mut todo: Vec<PathInfo> = infos
        .into_iter()
        .filter(|i| missing.contains(&i.path))
        .collect();
    let skipped = all.len() - todo.len();

    // Without the closure, every reference must already be in the cache (or pushed now).
    if !opts.closure {
        for info in &todo {
            for r in &info.references {
                if r != &info.path
                    && !missing.contains(r)
                    && !guard.missing(std::slice::from_ref(r), 1).await?.is_empty()
                {
                    return Err(OpError::MissingReference {
                        path: store_dir.full_path(&info.path),
                        reference: store_dir.full_path(r),
                        url: cache.url().to_owned(),
                    });
                }
            }
        }
    }

    let total_bytes: u64 = todo.iter().map(|i| i.nar_size).sum();
    progress.planned(todo.len(), total_bytes, skipped);
    let mut summary = PushSummary {
        skipped,
        present_unsigned,
        ..PushSummary::default()
    };
    if todo.is_empty() {
        return Ok(summary);
    }

    let publisher = Publisher::new(&todo)?;

    // Largest first: the long uploads start early and the small ones fill in around them.
    // Small paths cost mostly request (or file creation) latency, so more of them are in flight.
    todo.sort_by_key(|i| std::cmp::Reverse(i.nar_size));
    let jobs = opts.jobs.max(1);
    let large_slots = Arc::new(tokio::sync::Semaphore::new(jobs));
    let uploads = futures::stream::iter(todo.into_iter().map(|info| {
        let cache = cache.clone();
        let opts = opts.clone();
        let store_dir = store_dir.clone();
        let progress = progress.clone();
        let large_slots = large_slots.clone();
        let log = if opts.logs {
            info.deriver.as_ref().and_then(|d| local.build_log_path(d))
        } else {
            None
        };
        let disk_path = PathBuf::from(store_dir.full_path(&info.path));
        async move {
            let _slot = if info.nar_size > SMALL_NAR {
                // Never closed, so acquiring cannot fail.
                large_slots.acquire_owned().await.ok()
            } else {
                None
            };
            upload_path(&cache, &store_dir, disk_path, info, log, &opts, progress).await
        }
    }))
    .buffer_unordered(jobs.saturating_mul(4));

    let pushed_at = crate::gc::roots::unix_secs(std::time::SystemTime::now());
    let mut indexed: Vec<IndexEntry> = Vec::new();
    let published = publish_as_ready(
        cache,
        publisher,
        uploads,
        opts.check_concurrency,
        Some(guard),
        |narinfo| {
            summary.pushed += 1;
            summary.unsigned += usize::from(narinfo.signatures.is_empty());
            summary.nar_bytes += narinfo.nar_size;
            summary.file_bytes += narinfo.file_size.unwrap_or(0);
        },
        |narinfo| {
            progress.path_done(&store_dir.full_path(&narinfo.store_path));
            indexed.push(IndexEntry::from_narinfo(narinfo, pushed_at));
        },
    )
    .await;
    // The push index, after the narinfos it lists (those written, even if the push failed).
    cache.append_index(&indexed).await?;
    published?;
    Ok(summary)
}

/// How many of `paths` (present in `cache`) lack the signature of one of `signers`, `jobs`
/// narinfos read at once. A narinfo that cannot be read is not counted: the push goes on, and
/// `verify` reports it.
async fn not_signed_by(
    cache: &BinaryCache,
    paths: &[&StorePath],
    signers: &[Arc<dyn Signer>],
    jobs: usize,
) -> usize {
    futures::stream::iter(paths.iter().map(|p| async move {
        match cache.narinfo(p).await {
            Ok(Some(info)) => signers
                .iter()
                .any(|s| !super::signed_by(&info, s.as_ref()).unwrap_or(true)),
            _ => false,
        }
    }))
    .buffer_unordered(jobs.max(1))
    .filter(|unsigned| futures::future::ready(*unsigned))
    .count()
    .await
}

/// Of `paths` (all with a narinfo in `cache`), those whose narinfo or NAR fails the checks a
/// reader makes, `jobs` checked at once; each is reported through `progress`. A store that
/// cannot be read is an error, never a reason to overwrite anything.
async fn damaged(
    cache: &BinaryCache,
    paths: &[StorePath],
    jobs: usize,
    progress: &dyn Progress,
) -> Result<Vec<StorePath>, OpError> {
    let checks: Vec<(StorePath, Result<(), OpError>)> =
        futures::stream::iter(paths.iter().map(|p| async move {
            let checked = async {
                let info = super::browse::narinfo(cache, p).await?;
                super::browse::with_nar(cache, &info, |nar| {
                    io::copy(nar, &mut io::sink())
                        .map(drop)
                        .map_err(|e| OpError::io("cannot read the NAR", e))
                })
                .await
            }
            .await;
            (p.clone(), checked)
        }))
        .buffer_unordered(jobs.max(1))
        .collect()
        .await;
    let mut out = Vec::new();
    for (path, checked) in checks {
        match checked {
            Ok(()) => {}
            Err(e) if e.kind() == crate::error::ErrorKind::Corrupt => {
                progress.message(&format!("repairing: {e}"));
                out.push(path);
            }
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// NARs up to this size are compressed in memory and written once, straight to their key.
const SMALL_NAR: u64 = 4 << 20;
/// The most such a buffer may hold (a NAR that grew on disk, or incompressible data plus framing).
const SMALL_NAR_CAP: usize = (SMALL_NAR as usize) * 2;

/// Where a compressed NAR is once packed.
enum Placement {
    /// Uploaded to its final key (its NarHash checked before the upload completed).
    Uploaded(String),
    /// In memory, to be written under its file hash once its NarHash is checked.
    InMemory(bytes::Bytes),
}

/// A `Vec` that refuses to grow past `cap`, so memory stays bounded by settings.
struct CappedBuffer {
    data: Vec<u8>,
    cap: usize,
}

impl Write for CappedBuffer {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.data.len() + buf.len() > self.cap {
            return Err(io::Error::other(format!(
                "the compressed NAR outgrew its {} byte buffer (did the path change on disk?)",
                self.cap
            )));
        }
        self.data.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// What the packing thread produced.
struct Packed {
    nar_hash: Hash,
    nar_size: u64,
    file_hash: Hash,
    file_size: u64,
    listing: Option<nar::Listing>,
    /// The frame digests of a seekable NAR of more than one frame.
    frames: Option<FrameDigests>,
}

/// Counts NAR bytes for the progress display, in steps of about a MiB.
struct ProgressWriter<W> {
    inner: W,
    progress: Arc<dyn Progress>,
    unreported: u64,
}

impl<W: Write> Write for ProgressWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.unreported += n as u64;
        if self.unreported >= 1 << 20 {
            self.progress.bytes(std::mem::take(&mut self.unreported));
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<W> ProgressWriter<W> {
    /// The inner writer, after reporting the bytes not yet reported.
    fn into_inner(self) -> W {
        if self.unreported > 0 {
            self.progress.bytes(self.unreported);
        }
        self.inner
    }
}

/// Packs `disk_path`, hashing and compressing on the way, into `out`.
fn pack_compressed<W: Write>(
    disk_path: &std::path::Path,
    nar_size: u64,
    out: W,
    opts: &PushOptions,
    progress: Arc<dyn Progress>,
) -> Result<(Packed, W), OpError> {
    let pack_err = |source| OpError::Pack {
        path: disk_path.display().to_string(),
        source,
    };
    let io_err = |e| {
        OpError::io(
            format!("cannot compress the NAR of {}", disk_path.display()),
            e,
        )
    };
    let file_hasher = HashingWriter::new(HashAlgo::Sha256, out);
    let compressor = opts.compression.compressor(file_hasher, nar_size)?;
    // zstd frames end where a file's entry starts when one is near (see boundary_hint), so
    // reading one file needs fewer frames.
    let boundaries = compressor.boundaries();
    // NAR → hash → progress → compressor → hash → out.
    let mut nar_hasher = HashingWriter::new(
        HashAlgo::Sha256,
        ProgressWriter {
            inner: compressor,
            progress,
            unreported: 0,
        },
    );
    let listing = match boundaries {
        Some(marks) => {
            let listing = nar::pack_marking_files(disk_path, &mut nar_hasher, &mut |offset| {
                marks.mark(offset)
            })
            .map_err(pack_err)?;
            opts.write_listing.then_some(listing)
        }
        None if opts.write_listing => {
            Some(nar::pack(disk_path, &mut nar_hasher).map_err(pack_err)?)
        }
        None => {
            nar::dump(disk_path, &mut nar_hasher).map_err(pack_err)?;
            None
        }
    };
    // A listing is JSON text: one that lost bytes of a name or symlink target (not UTF-8)
    // would misname files to every reader; readers build such a path's tree from its NAR.
    let listing = listing.filter(|l| !l.may_have_lost_bytes());
    let (nar_hash, nar_size, progress_writer) = nar_hasher.finish();
    let (file_hasher, seekable) = progress_writer
        .into_inner()
        .finish_frames()
        .map_err(io_err)?;
    let (file_hash, file_size, out) = file_hasher.finish();
    let frames = seekable.and_then(|(table, digests)| FrameDigests::new(&table, &digests));
    Ok((
        Packed {
            nar_hash,
            nar_size,
            file_hash,
            file_size,
            listing,
            frames,
        },
        out,
    ))
}

/// Uploads one path's NAR (and listing, and log) and returns its narinfo, not yet written.
async fn upload_path(
    cache: &BinaryCache,
    store_dir: &StoreDir,
    disk_path: PathBuf,
    info: PathInfo,
    log: Option<PathBuf>,
    opts: &PushOptions,
    progress: Arc<dyn Progress>,
) -> Result<NarInfo, OpError> {
    let full = store_dir.full_path(&info.path);
    let (packed, placement) = if info.nar_size <= SMALL_NAR {
        // Small: compress into a capped buffer and put it straight to its final key below. Half
        // the objects a push writes are this small, and a staging object plus a rename is most of
        // their cost on a local disk.
        let pack_opts = opts.clone();
        let (disk_path, expected_size) = (disk_path.clone(), info.nar_size);
        let (packed, buffer) = tokio::task::spawn_blocking(move || {
            let buffer = CappedBuffer {
                data: Vec::new(),
                cap: SMALL_NAR_CAP,
            };
            pack_compressed(&disk_path, expected_size, buffer, &pack_opts, progress)
        })
        .await
        .map_err(join_error)??;
        (packed, Placement::InMemory(bytes::Bytes::from(buffer.data)))
    } else {
        // Large: streamed straight to its final key, named after the NarHash the local store
        // gives (the file's own hash is known only at the end; Nix follows the narinfo's URL,
        // whatever the name). The NarHash is checked before the upload completes: on a
        // mismatch the stream ends with an error, the upload is abandoned, and nothing appears
        // under the key. So there is no staging object to copy into place, which on S3 would be
        // a server-side copy of every large NAR (and on AWS, limited to 5 GiB).
        let key = BinaryCache::streamed_nar_url(&info.nar_hash, opts.compression.method);
        let (sink, stream) = sink_stream();
        let pack_opts = opts.clone();
        let (expected_hash, expected_size) = (info.nar_hash.clone(), info.nar_size);
        let packer = tokio::task::spawn_blocking(move || {
            let (packed, sink) =
                pack_compressed(&disk_path, expected_size, sink, &pack_opts, progress)?;
            if packed.nar_hash == expected_hash && packed.nar_size == expected_size {
                sink.finish()
                    .map_err(|e| OpError::io("cannot hand the NAR to the upload", e))?;
            } else {
                // Dropped unfinished: the upload is abandoned (reported below).
                drop(sink);
            }
            Ok::<_, OpError>(packed)
        });
        let (uploaded, packed) = tokio::join!(cache.put_nar_stream(&key, stream), packer);
        let packed = match packed.map_err(join_error)? {
            Ok(packed) => packed,
            Err(e) => {
                return Err(match uploaded {
                    // The upload failed on its own (the packer only saw the pipe close).
                    Err(up) if !matches!(up, StoreError::Source { .. }) => up.into(),
                    _ => e,
                });
            }
        };
        if packed.nar_hash == info.nar_hash && packed.nar_size == info.nar_size {
            uploaded?;
        }
        (packed, Placement::Uploaded(key))
    };

    // A corrupt local store must not poison the cache.
    if packed.nar_hash != info.nar_hash || packed.nar_size != info.nar_size {
        return Err(OpError::LocalHashMismatch {
            path: full,
            expected: info.nar_hash.to_string(),
            expected_size: info.nar_size,
            computed: packed.nar_hash.to_string(),
            computed_size: packed.nar_size,
        });
    }

    let (nar_key, in_memory) = match placement {
        Placement::Uploaded(key) => (key, None),
        Placement::InMemory(data) => (
            BinaryCache::nar_url(&packed.file_hash, opts.compression.method),
            Some(data),
        ),
    };
    let place_nar = async {
        match in_memory {
            Some(data) => cache.put_nar(&nar_key, data).await,
            None => Ok(()),
        }
    };
    let listing_json = match &packed.listing {
        Some(listing) => Some(bytes::Bytes::from(serde_json::to_vec(listing).map_err(
            |e| {
                OpError::io(
                    format!("cannot serialize the listing of {full}"),
                    io::Error::other(e),
                )
            },
        )?)),
        None => None,
    };
    // The listing and the frame digests go up beside the NAR (none is visible to Nix before
    // the narinfo).
    let put_listing = async {
        if let Some(json) = &listing_json {
            cache.put_listing_bytes(&info.path, json.clone()).await?;
        }
        Ok::<_, OpError>(())
    };
    let put_frames = async {
        match &packed.frames {
            Some(frames) => Ok::<_, OpError>(Some(
                cache.put_frame_digests(frames.to_bytes().into()).await?,
            )),
            None => Ok(None),
        }
    };
    let (placed, listed, framed) = tokio::join!(place_nar, put_listing, put_frames);
    placed?;
    listed?;
    let frames_hash = framed?;
    // Durable before the narinfo names them (local directories; a no-op elsewhere).
    cache.sync_nar(&nar_key).await?;
    if packed.listing.is_some() {
        cache.sync_listing(&info.path).await?;
    }
    if let Some(hash) = &frames_hash {
        cache.sync_frame_digests(hash).await?;
    }
    if let (Some(log), Some(drv)) = (log, &info.deriver) {
        upload_log(cache, &log, drv).await?;
    }

    let mut narinfo = NarInfo::new(
        store_dir.clone(),
        info.path.clone(),
        nar_key,
        info.nar_hash,
        info.nar_size,
    );
    narinfo.compression = Some(opts.compression.method.name().to_owned());
    narinfo.file_hash = Some(packed.file_hash);
    narinfo.file_size = Some(packed.file_size);
    let mut references = info.references;
    references.sort();
    references.dedup();
    narinfo.references = references;
    narinfo.deriver = info.deriver;
    narinfo.ca = info.ca.as_deref().and_then(ContentAddress::parse);
    narinfo.signatures = info.signatures;
    for signer in &opts.signers {
        narinfo.sign(signer.as_ref()).map_err(OpError::Sign)?;
    }
    if let Some(frames) = frames_hash {
        let claim = FramesClaim {
            frames,
            listing: listing_json
                .as_ref()
                .map(|json| Hash::digest(HashAlgo::Sha256, json)),
        };
        claim.write(&mut narinfo, &signer_refs(&opts.signers));
    }
    Ok(narinfo)
}

/// Uploads a build log as plain text under `log/<drv>` (Nix keeps them bzip2-compressed).
async fn upload_log(
    cache: &BinaryCache,
    log: &std::path::Path,
    drv: &StorePath,
) -> Result<(), OpError> {
    let (sink, stream) = sink_stream();
    let path = log.to_path_buf();
    let reader = tokio::task::spawn_blocking(move || {
        let context = || format!("cannot read the build log {}", path.display());
        let file = std::fs::File::open(&path).map_err(|e| OpError::io(context(), e))?;
        let method = if path.extension().is_some_and(|e| e == "bz2") {
            Compression::Bzip2
        } else {
            Compression::None
        };
        let mut input =
            compression::decompress(method, file).map_err(|e| OpError::io(context(), e))?;
        let mut sink = sink;
        io::copy(&mut input, &mut sink).map_err(|e| OpError::io(context(), e))?;
        sink.finish().map_err(|e| OpError::io(context(), e))
    });
    let (put, read) = tokio::join!(cache.put_log_stream(drv, stream), reader);
    read.map_err(join_error)??;
    put?;
    Ok(())
}

/// Pushes a plain directory (or file) as the content-addressed store path `nix-store --add`
/// would give it, without any Nix installed. Returns the store path.
///
/// ```
/// # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
/// use std::sync::Arc;
/// use cachecore::ops::{self, NoProgress, PushOptions};
/// use cachecore::{store::BinaryCache, store_path::StoreDir};
/// # let src = tempfile::tempdir().unwrap();
/// # std::fs::write(src.path().join("hello"), "hello, world\n").unwrap();
/// let cache = BinaryCache::open("memory://").unwrap();
/// let (dir, opts) = (StoreDir::default(), PushOptions::default());
/// let (path, summary) = ops::push_add(&cache, &dir, src.path(), "hello", &opts,
///     Arc::new(NoProgress)).await.unwrap();
/// assert_eq!((path.name(), summary.pushed, summary.skipped), ("hello", 1, 0));
/// // The same tree again: the same path, already there, nothing uploaded.
/// let (again, summary) = ops::push_add(&cache, &dir, src.path(), "hello", &opts,
///     Arc::new(NoProgress)).await.unwrap();
/// assert_eq!((again, summary.pushed, summary.skipped), (path, 0, 1));
/// # });
/// ```
pub async fn push_add(
    cache: &BinaryCache,
    store_dir: &StoreDir,
    source: &std::path::Path,
    name: &str,
    opts: &PushOptions,
    progress: Arc<dyn Progress>,
) -> Result<(StorePath, PushSummary), OpError> {
    opts.compression.check()?;
    super::require_writable(cache)?;
    cache
        .init(&cache.settings().cache_info(store_dir.as_str()))
        .await?;
    let hashed = source.to_path_buf();
    let (nar_hash, nar_size) = tokio::task::spawn_blocking(move || nar::hash_path(&hashed))
        .await
        .map_err(join_error)?
        .map_err(|source_err| OpError::Pack {
            path: source.display().to_string(),
            source: source_err,
        })?;
    let path = store_dir
        .make_source_path(&nar_hash, name)
        .map_err(|e| OpError::InvalidName {
            source_path: source.display().to_string(),
            name: name.to_owned(),
            source: e,
        })?;
    // The push rule (see `gc::lease`): a lease on the path before it is found present; a path
    // a GC is collecting counts as missing, and the NAR is re-checked before the narinfo.
    let guard = PushGuard::begin(cache, "push", std::slice::from_ref(&path))
        .await
        .map_err(crate::graph::GraphError::from)?;
    let pushed = push_add_guarded(
        cache,
        store_dir,
        (source, path, nar_hash, nar_size),
        opts,
        &guard,
        progress,
    )
    .await;
    guard.end().await;
    pushed
}

/// [`push_add`] once its lease is written.
async fn push_add_guarded(
    cache: &BinaryCache,
    store_dir: &StoreDir,
    (source, path, nar_hash, nar_size): (&std::path::Path, StorePath, Hash, u64),
    opts: &PushOptions,
    guard: &PushGuard,
    progress: Arc<dyn Progress>,
) -> Result<(StorePath, PushSummary), OpError> {
    let one = std::slice::from_ref(&path);
    let present = guard.missing(one, 1).await?.is_empty();
    let damaged_already =
        opts.repair && present && !damaged(cache, one, 1, progress.as_ref()).await?.is_empty();
    if !damaged_already && present {
        progress.planned(0, 0, 1);
        return Ok((
            path,
            PushSummary {
                skipped: 1,
                ..PushSummary::default()
            },
        ));
    }
    progress.planned(1, nar_size, 0);
    let info = PathInfo {
        path: path.clone(),
        ca: Some(
            ContentAddress::Fixed {
                recursive: true,
                hash: nar_hash.clone(),
            }
            .to_string(),
        ),
        nar_hash,
        nar_size,
        references: Vec::new(),
        deriver: None,
        registration_time: 0,
        signatures: Vec::new(),
        ultimate: true,
    };
    let narinfo = upload_path(
        cache,
        store_dir,
        source.to_path_buf(),
        info,
        None,
        opts,
        progress.clone(),
    )
    .await?;
    let summary = PushSummary {
        pushed: 1,
        skipped: 0,
        nar_bytes: narinfo.nar_size,
        file_bytes: narinfo.file_size.unwrap_or(0),
        unsigned: usize::from(narinfo.signatures.is_empty()),
        present_unsigned: 0,
    };
    guard
        .recheck(&narinfo, &HashSet::from([path.clone()]))
        .await
        .map_err(crate::graph::GraphError::from)?;
    cache.put_narinfo(&narinfo).await?;
    let pushed_at = crate::gc::roots::unix_secs(std::time::SystemTime::now());
    cache
        .append_index(&[IndexEntry::from_narinfo(&narinfo, pushed_at)])
        .await?;
    progress.path_done(&store_dir.full_path(&path));
    Ok((path, summary))
}
