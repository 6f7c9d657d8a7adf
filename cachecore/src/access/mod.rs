//! Random access into the NARs of a binary cache: the bytes `[offset, offset + len)` of a path's
//! NAR, without reading what comes before them where the object allows it.
//!
//! [`NarAccess`] reads one NAR (a narinfo's object). What a read costs depends on how the object
//! is stored:
//!
//! - **seekable zstd** (what `cachecore push` writes for NARs larger than one 4 MiB frame): the
//!   seek table is fetched once — one ranged GET of the object's last 64 KiB, and one more when
//!   the table is longer than that — and kept; a read then fetches only the frames covering the
//!   range, by ranged GETs, and decompresses only those. The last frame decoded is kept, so
//!   small reads in sequence (a FUSE mount's 128 KiB reads) fetch each frame once.
//! - **small objects** (at most 64 KiB: most NARs of a closure): the probe above is the whole
//!   object, so it is decoded once, checked whole (see below), and kept in memory.
//! - **zstd without a seek table** (Nix's own `.nar.zst`, cachecore's one-frame NARs), **xz**,
//!   **bzip2**: these cannot be entered in the middle; a read streams the object from its start
//!   and decompresses (and discards) everything before the range. Correct, not fast.
//! - **none**: a ranged GET of exactly the range.
//!
//! # Trust: what a ranged read checks, and what it cannot
//!
//! A cache is untrusted. The narinfo's `NarHash` is what a signature covers, and it can only be
//! checked against a whole NAR: **a ranged read of a large NAR is not checked against the
//! `NarHash`** (nor the `FileHash`), so it cannot prove that the bytes are the ones the signer
//! saw. What it does check:
//!
//! - every read is bounded by the narinfo's sizes: a range past `NarSize` is refused; a seek table
//!   must describe exactly `FileSize` compressed and `NarSize` decompressed bytes, or the read
//!   fails; an object longer or shorter than `FileSize` is an error; no frame may exceed
//!   [`MAX_FRAME_BYTES`] (so memory stays bounded whatever the object claims);
//! - each zstd frame decoded must decode cleanly to exactly the length the seek table gives it,
//!   with its XXH64 checksum when it carries one (cachecore's multi-frame NARs do) — which catches
//!   accidental damage, not a forger, who can recompute checksums;
//! - [`crate::ops::open_file`] also checks that the listing's `narOffset` and `size` land on the
//!   `contents` field of a regular file in the NAR, so a wrong listing cannot make a read return
//!   the middle of some other structure (it can still point at another file of the same NAR).
//!
//! Objects of at most 64 KiB are read whole, so for them `FileSize`, `FileHash`, `NarSize` and
//! `NarHash` are all checked. A caller that needs the `NarHash` guarantee for a large NAR reads
//! the whole NAR through the verifying path (`cachecore cat --verify`, [`crate::ops::cat`]), or
//! [`NarAccess::whole_nar_checked`]; or, for a NAR pushed with signed frame digests,
//! [`NarAccess::frames_checked`], which checks every frame it fetches against its digest signed
//! by a trusted key and still fetches only what reads touch (see [`frame_digests`]).
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! use std::sync::Arc;
//! use cachecore::access::NarAccess;
//! use cachecore::ops::{self, NoProgress, PushOptions};
//! use cachecore::store::BinaryCache;
//! use cachecore::store_path::StoreDir;
//! let dir = tempfile::tempdir().unwrap();
//! std::fs::write(dir.path().join("hello"), "hello, world\n").unwrap();
//! let cache = BinaryCache::open("memory://").unwrap();
//! let (path, _) = ops::push_add(&cache, &StoreDir::default(), dir.path(), "hello",
//!     &PushOptions::default(), Arc::new(NoProgress)).await.unwrap();
//! let nar = NarAccess::open(&cache, &path).await.unwrap();
//! // A NAR starts with its magic string, "nix-archive-1" (after its 8-byte length).
//! assert_eq!(&nar.read(8..21).await.unwrap()[..], b"nix-archive-1");
//! # });
//! ```

pub mod frame_cache;
pub mod frame_digests;
pub mod nar_cache;

pub use frame_cache::FrameCache;
pub use frame_digests::{FrameDigests, FramesClaim, MAX_FRAME_DIGESTS_BYTES};

pub use nar_cache::{KeptNar, NarCache};

use std::fmt;
use std::io::{self, Read};
use std::ops::Range;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::stream::{self, BoxStream, StreamExt as _, TryStreamExt as _};

use crate::compression::{self, decompress, Compression};
use crate::hash::Hash;
use crate::narinfo::NarInfo;
use crate::seekable::{self, SeekTable, SeekableError};
use crate::store::{BinaryCache, ReadRange, StoreError};
use crate::store_path::StorePath;

/// Bytes fetched from the end of an object to find its seek table (enough for 8191 frames, a
/// 32 GiB NAR at 4 MiB frames); a longer table costs one more request. Objects up to this size
/// are fetched whole by that first request.
pub const TAIL_PROBE: u64 = SeekTable::footer_len_hint() as u64;

/// The largest zstd frame a ranged read accepts, compressed or decompressed. cachecore writes
/// 4 MiB frames; a table claiming larger ones is refused, which bounds memory per read.
pub const MAX_FRAME_BYTES: u64 = 64 << 20;

/// The largest seek table read (2 million frames: an 8 TiB NAR at 4 MiB frames).
pub const MAX_SEEK_TABLE_BYTES: u64 = 16 << 20;

/// Frames are fetched in groups of about this many decompressed bytes (one ranged GET each),
/// two groups in flight.
const GROUP_BYTES: u64 = 8 << 20;

/// Ranged GETs of an uncompressed NAR are at most this long.
const PLAIN_CHUNK: u64 = 8 << 20;

/// Decoded chunks handed over at once when streaming a NAR from its start.
const STREAM_CHUNK: usize = 1 << 20;

/// What went wrong reading part of a NAR. Every message names the object (store URL and key).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AccessError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The cache has no narinfo for the path.
    #[error("{path} is not in {url}")]
    NotInCache { path: String, url: String },
    /// The narinfo names a compression method cachecore cannot read.
    #[error("{path}: {source}")]
    Compression {
        path: String,
        source: compression::Error,
    },
    /// The range asked for reaches past the end of the NAR.
    #[error("{path}: bytes {start}..{end} reach past the end of its NAR ({nar_size} bytes)")]
    OutOfBounds {
        path: String,
        start: u64,
        end: u64,
        nar_size: u64,
    },
    /// The object's seek table, or a frame it describes, is damaged.
    #[error("{object}: {source}")]
    Seekable {
        object: String,
        source: SeekableError,
    },
    /// The object disagrees with the narinfo's sizes.
    #[error("{object}: {what} is {actual} bytes, but the narinfo's {field} is {expected}")]
    SizeMismatch {
        object: String,
        what: &'static str,
        field: &'static str,
        actual: u64,
        expected: u64,
    },
    /// The object is longer than the narinfo's FileSize.
    #[error("{object} is longer than the narinfo's FileSize ({file_size} bytes)")]
    TooLong { object: String, file_size: u64 },
    /// A frame (or the seek table) larger than a ranged read accepts.
    #[error("{object}: {what} is {size} bytes, more than the {limit} bytes a ranged read accepts")]
    TooLarge {
        object: String,
        what: String,
        size: u64,
        limit: u64,
    },
    /// The object does not decompress.
    #[error("{object} does not decompress as {method}: {source}")]
    Decode {
        object: String,
        method: Compression,
        source: io::Error,
    },
    /// A whole (small) object read does not match the narinfo's hash.
    #[error("{object}: its {field} is {actual}, but the narinfo says {expected}")]
    HashMismatch {
        object: String,
        field: &'static str,
        expected: String,
        actual: String,
    },
    /// The listing's `narOffset`/`size` for a file do not land on that file's contents in the
    /// NAR (the bytes before them are not a `contents` field of that size).
    #[error(
        "{path}: the listing puts it at NAR offset {offset} ({size} bytes), but the NAR holds no \
         file contents of that size there"
    )]
    ListingMismatch {
        path: String,
        offset: u64,
        size: u64,
    },
    /// A background task was cancelled (the runtime is shutting down).
    #[error("{object}: the read was cancelled")]
    Cancelled { object: String },
    /// The whole NAR, read to be kept in a [`NarCache`], failed a check against its narinfo
    /// (or could not be read).
    #[error(transparent)]
    Integrity(Box<crate::store::IntegrityError>),
    /// The frame digests of a NAR read with [`NarAccess::frames_checked`] are unusable: they
    /// do not hash to the signed `FramesHash`, do not parse, are too long, or describe other
    /// frames than the object's seek table.
    #[error("{object}: its frame digests {reason}")]
    BadFrameDigests { object: String, reason: String },
    /// A frame fetched does not hash to its signed digest.
    #[error(
        "{object}: frame {index} (object bytes {start}..{end}) does not match its signed digest"
    )]
    FrameMismatch {
        object: String,
        index: usize,
        start: u64,
        end: u64,
    },
    /// The `.ls` listing a signed `ListingHash` names is missing or does not parse.
    #[error("{path}: its listing {reason}")]
    BadListing { path: String, reason: String },
    /// The [`NarCache`] directory could not be used.
    #[error("NAR cache {dir}: {what}: {source}")]
    NarCache {
        dir: String,
        what: String,
        source: io::Error,
    },
}

impl From<crate::store::IntegrityError> for AccessError {
    fn from(e: crate::store::IntegrityError) -> AccessError {
        AccessError::Integrity(Box::new(e))
    }
}

impl AccessError {
    /// What kind of failure this is: the store's for [`AccessError::Store`]; a damaged or
    /// inconsistent object is [`Corrupt`](crate::error::ErrorKind::Corrupt).
    pub fn kind(&self) -> crate::error::ErrorKind {
        use crate::error::ErrorKind as K;
        match self {
            AccessError::Store(e) => e.kind(),
            AccessError::NotInCache { .. } => K::NotFound,
            AccessError::Compression { .. } => K::Unsupported,
            AccessError::OutOfBounds { .. } => K::InvalidInput,
            AccessError::TooLarge { .. } => K::Unsupported,
            AccessError::Seekable { .. }
            | AccessError::SizeMismatch { .. }
            | AccessError::TooLong { .. }
            | AccessError::Decode { .. }
            | AccessError::HashMismatch { .. }
            | AccessError::ListingMismatch { .. }
            | AccessError::BadFrameDigests { .. }
            | AccessError::FrameMismatch { .. }
            | AccessError::BadListing { .. } => K::Corrupt,
            AccessError::Cancelled { .. } => K::Internal,
            AccessError::Integrity(e) => e.kind(),
            AccessError::NarCache { .. } => K::Local,
        }
    }
}

/// Where [`NarAccess::listing`] found a listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListingOrigin {
    /// The `.ls`, checked against its hash signed by a trusted key.
    Signed,
    /// The `.ls` as stored: nothing checked it.
    Stored,
    /// Built from the whole NAR, checked against the narinfo.
    CheckedNar,
}

/// Whether every regular file of a listing has its `narOffset` (Nix before 2.0 wrote none).
fn has_every_offset(node: &crate::nar::ListingNode) -> bool {
    match node {
        crate::nar::ListingNode::Regular { nar_offset, .. } => nar_offset.is_some(),
        crate::nar::ListingNode::Symlink { .. } => true,
        crate::nar::ListingNode::Directory { entries } => entries.values().all(has_every_offset),
    }
}

/// How the object is read.
#[derive(Debug)]
enum Layout {
    /// Uncompressed: ranged GETs.
    Plain,
    /// Seekable zstd with this table.
    Seekable(SeekTable),
    /// The whole decompressed NAR (small objects), checked; and the object's seek table when it
    /// is seekable zstd (many frames of well-compressing data can fit in one probe).
    InMemory {
        nar: Bytes,
        table: Option<SeekTable>,
    },
    /// Decompressed from the start for every read.
    FromStart,
}

/// Random access into one NAR of a cache (see the [module docs](self)). Cheap to clone: clones
/// share the seek table and the last decoded frame.
#[derive(Clone)]
pub struct NarAccess {
    inner: Arc<Inner>,
}

struct Inner {
    cache: BinaryCache,
    info: NarInfo,
    method: Compression,
    /// `<url>: <key>`, for messages.
    object: String,
    layout: tokio::sync::OnceCell<Layout>,
    /// The last frame decoded: its index and bytes.
    last_frame: Mutex<Option<(usize, Bytes)>>,
    /// Where whole NARs are kept: used for objects that cannot be read at random, and for every
    /// read when `whole_checked`.
    nar_cache: Option<NarCache>,
    /// Serve nothing that was not checked against the NarHash: read the whole NAR (through the
    /// NAR cache when there is one).
    whole_checked: bool,
    /// The whole NAR, once fetched through the NAR cache.
    kept: tokio::sync::OnceCell<KeptNar>,
    /// Decoded frames shared with other readers (and read-ahead), when given.
    frame_cache: Option<FrameCache>,
    /// `object`, shared, as the frame cache's key.
    object_key: Arc<str>,
    /// Sequential-read detection for read-ahead.
    sequence: Mutex<Sequence>,
    /// With [`NarAccess::frames_checked`]: the narinfo's claim, signed by a trusted key.
    frames_claim: Option<FramesClaim>,
    /// The frame digests the claim names, once read (`None`: missing, the NAR is read whole).
    digests: tokio::sync::OnceCell<Option<Arc<FrameDigests>>>,
}

/// What the reads of a seekable NAR covered so far, for read-ahead.
#[derive(Debug)]
struct Sequence {
    /// One past the furthest frame the reads since the last seek covered.
    next: usize,
    /// Frames read ahead now (0 after a random read; doubles while reads are sequential).
    window: usize,
    /// Frames before this were already read ahead (or asked for).
    ahead_until: usize,
}

impl Sequence {
    /// Takes a read of the frames `indices` (of `frames` in all); returns the frames to read
    /// ahead now. A read into the frame after the furthest one read is sequential and doubles
    /// the window (up to [`MAX_READ_AHEAD_FRAMES`]); a read within the last two frames read
    /// leaves it as it is (a reader's requests may arrive out of order: the kernel reads ahead
    /// of a FUSE file with several requests at once, served by several threads); anything
    /// else (the first read, a seek) closes it.
    fn advance(&mut self, indices: Range<usize>, frames: usize) -> Range<usize> {
        let within = indices.start < self.next && indices.start + 2 >= self.next;
        if within {
            self.next = self.next.max(indices.end);
            return 0..0;
        }
        self.window = if indices.start == self.next {
            (self.window * 2).clamp(1, MAX_READ_AHEAD_FRAMES)
        } else {
            0
        };
        self.next = indices.end;
        if self.window == 0 {
            self.ahead_until = 0;
            return 0..0;
        }
        let from = indices.end.max(self.ahead_until);
        let to = (indices.end + self.window).min(frames);
        if from < to {
            self.ahead_until = to;
            from..to
        } else {
            0..0
        }
    }
}

impl Default for Sequence {
    fn default() -> Sequence {
        // No read yet: the first one is not sequential.
        Sequence {
            next: usize::MAX,
            window: 0,
            ahead_until: 0,
        }
    }
}

/// The most frames read ahead of a sequential reader.
const MAX_READ_AHEAD_FRAMES: usize = 4;

impl fmt::Debug for NarAccess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NarAccess")
            .field("object", &self.inner.object)
            .field("nar_size", &self.inner.info.nar_size)
            .finish_non_exhaustive()
    }
}

fn full(info: &NarInfo) -> String {
    info.store_dir.full_path(&info.store_path)
}

impl NarAccess {
    /// Random access into the NAR `info` describes. No I/O until the first read.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
    /// # use std::sync::Arc;
    /// # use cachecore::{ops::{self, NoProgress, PushOptions}, store_path::StoreDir};
    /// use cachecore::{access::NarAccess, store::BinaryCache};
    /// # let src = tempfile::tempdir().unwrap();
    /// # std::fs::write(src.path().join("hello"), "hello, world\n").unwrap();
    /// let cache = BinaryCache::open("memory://").unwrap();
    /// # let (path, _) = ops::push_add(&cache, &StoreDir::default(), src.path(), "hello",
    /// #     &PushOptions::default(), Arc::new(NoProgress)).await.unwrap();
    /// // A narinfo already in hand (from a walk of the cache, say) is not fetched again.
    /// let info = cache.narinfo(&path).await.unwrap().unwrap();
    /// let nar = NarAccess::new(&cache, info.clone()).unwrap();
    /// assert_eq!(nar.info(), &info);
    /// assert_eq!(nar.nar_size(), info.nar_size);
    /// nar.prepare().await.unwrap(); // optional: fetch what reads need, ahead of the first
    /// // A NAR starts with its magic string (after the string's 8-byte length).
    /// assert_eq!(nar.read(8..21).await.unwrap(), &b"nix-archive-1"[..]);
    /// // A compression no reader knows is refused at once.
    /// let mut odd = info.clone();
    /// odd.compression = Some("rot13".into());
    /// assert!(NarAccess::new(&cache, odd).is_err());
    /// # });
    /// ```
    pub fn new(cache: &BinaryCache, info: NarInfo) -> Result<NarAccess, AccessError> {
        let method = Compression::from_name(info.compression_or_default()).map_err(|source| {
            AccessError::Compression {
                path: full(&info),
                source,
            }
        })?;
        let info_url = info.url.clone();
        Ok(NarAccess {
            inner: Arc::new(Inner {
                object: format!("{}: {}", cache.url(), info.url),
                cache: cache.clone(),
                info,
                method,
                layout: tokio::sync::OnceCell::new(),
                last_frame: Mutex::new(None),
                nar_cache: None,
                whole_checked: false,
                kept: tokio::sync::OnceCell::new(),
                frame_cache: None,
                object_key: Arc::from(format!("{}: {}", cache.url(), info_url)),
                sequence: Mutex::new(Sequence::default()),
                frames_claim: None,
                digests: tokio::sync::OnceCell::new(),
            }),
        })
    }

    /// Keeps decoded frames in `frames`, shared with every other reader given it, and reads
    /// ahead of sequential readers into it (see [`FrameCache`]). Call before the first read.
    pub fn with_frame_cache(self, frames: FrameCache) -> NarAccess {
        self.rebuild(|inner| inner.frame_cache = Some(frames))
    }

    /// Keeps whole NARs in `cache`: an object that cannot be read at random (xz, bzip2, zstd
    /// without a seek table) is fetched once, checked against the narinfo, and read from there,
    /// instead of being decompressed from its start for every read. With
    /// [`NarAccess::frames_checked`], each frame checked against its signed digest is kept
    /// there too, and read from there next time, by this process or a later one (see
    /// [`NarCache`]). Call before the first read.
    pub fn with_nar_cache(self, cache: NarCache) -> NarAccess {
        self.rebuild(|inner| inner.nar_cache = Some(cache))
    }

    /// Serves nothing that was not checked against the narinfo's `NarHash`: the first read
    /// fetches the whole NAR, checks it (FileSize, FileHash, NarSize, NarHash), and every read
    /// comes from that checked copy — kept in the [`NarCache`] when there is one (see
    /// [`NarAccess::with_nar_cache`]), else in an unlinked temporary file. Call before the
    /// first read.
    pub fn whole_nar_checked(self) -> NarAccess {
        self.rebuild(|inner| inner.whole_checked = true)
    }

    /// Serves nothing unchecked, fetching only what reads touch where the cache allows it:
    /// when the narinfo carries frame digests signed by one of `trusted_keys` (see
    /// [`frame_digests`]), each frame a read fetches is checked against its signed digest
    /// before it is decompressed, and [`NarAccess::signed_listing`] checks the `.ls`; otherwise
    /// (no digests, none signed by a trusted key, their object missing, an object that cannot
    /// be read at random) reads are those of [`NarAccess::whole_nar_checked`]. The narinfo's
    /// own signature is the caller's check. Call before the first read.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
    /// # use std::sync::Arc;
    /// # use cachecore::{ops::{self, NoProgress, PushOptions}, store_path::StoreDir};
    /// use cachecore::{access::NarAccess, signing::SecretKey, store::BinaryCache};
    /// # let src = tempfile::tempdir().unwrap();
    /// # let mut x = 1u64;
    /// # let big: Vec<u8> = (0..9 << 20).map(|_| { x = x.wrapping_mul(6364136223846793005).wrapping_add(1); (x >> 56) as u8 }).collect();
    /// # std::fs::write(src.path().join("big"), big).unwrap();
    /// let key = Arc::new(SecretKey::generate("cache.example.org-1").unwrap());
    /// let cache = BinaryCache::open("memory://").unwrap();
    /// let opts = PushOptions { signers: vec![key.clone()], ..PushOptions::default() };
    /// let (path, _) = ops::push_add(&cache, &StoreDir::default(), src.path(), "big",
    ///     &opts, Arc::new(NoProgress)).await.unwrap();
    /// let nar = NarAccess::open(&cache, &path).await.unwrap().frames_checked(&[key.public_key()]);
    /// assert!(nar.checks_frames()); // pushed with signed frame digests
    /// assert_eq!(&nar.read(8..21).await.unwrap()[..], b"nix-archive-1");
    /// assert!(nar.signed_listing().await.unwrap().unwrap().get("big").is_some());
    /// // Another key signed nothing here: the NAR would be read whole.
    /// let other = SecretKey::generate("other-1").unwrap().public_key();
    /// assert!(!NarAccess::open(&cache, &path).await.unwrap().frames_checked(&[other]).checks_frames());
    /// # });
    /// ```
    pub fn frames_checked(self, trusted_keys: &[crate::signing::PublicKey]) -> NarAccess {
        let claim = FramesClaim::trusted(&self.inner.info, trusted_keys);
        self.rebuild(|inner| match claim {
            Some(claim) => {
                // Checked frames are kept apart from unchecked ones of the same object.
                inner.object_key = Arc::from(format!("{} (frames checked)", inner.object));
                inner.frames_claim = Some(claim);
            }
            None => inner.whole_checked = true,
        })
    }

    /// Whether reads are checked against signed frame digests ([`NarAccess::frames_checked`]
    /// found a claim signed by a trusted key).
    pub fn checks_frames(&self) -> bool {
        self.inner.frames_claim.is_some()
    }

    /// With [`NarAccess::frames_checked`] and a signed `ListingHash`: the path's `.ls` listing,
    /// checked against it; `None` when nothing signed covers the listing.
    pub async fn signed_listing(&self) -> Result<Option<crate::nar::Listing>, AccessError> {
        let Some(expected) = self
            .inner
            .frames_claim
            .as_ref()
            .and_then(|c| c.listing.as_ref())
        else {
            return Ok(None);
        };
        let info = &self.inner.info;
        let bad = |reason: String| AccessError::BadListing {
            path: full(info),
            reason,
        };
        let bytes = self
            .inner
            .cache
            .listing_bytes(&info.store_path)
            .await?
            .ok_or_else(|| {
                bad("is missing, but the narinfo's signed ListingHash names one".into())
            })?;
        let actual = Hash::digest(expected.algo(), &bytes);
        if actual != *expected {
            return Err(bad(format!(
                "hashes to {actual}, but the narinfo's signed ListingHash is {expected}"
            )));
        }
        crate::nar::Listing::parse(&bytes)
            .map(Some)
            .map_err(|e| bad(format!("does not parse: {e}")))
    }

    /// The frame digests the signed claim names, read once and checked against the claim and
    /// `table`; `None` when their object is missing (the NAR is then read whole).
    async fn digests(
        &self,
        claim: &FramesClaim,
        table: &SeekTable,
    ) -> Result<Option<Arc<FrameDigests>>, AccessError> {
        self.inner
            .digests
            .get_or_try_init(|| async { Ok(self.read_digests(claim, table).await?.map(Arc::new)) })
            .await
            .cloned()
    }

    /// The frame digests `claim` names, checked: they hash to its `FramesHash`, are no longer
    /// than [`MAX_FRAME_DIGESTS_BYTES`], and describe exactly the frames of `table`; `None`
    /// when their object is missing.
    async fn read_digests(
        &self,
        claim: &FramesClaim,
        table: &SeekTable,
    ) -> Result<Option<FrameDigests>, AccessError> {
        let bad = |reason: String| AccessError::BadFrameDigests {
            object: self.object(),
            reason,
        };
        let len = FrameDigests::object_len(table.len());
        if len > MAX_FRAME_DIGESTS_BYTES {
            return Err(bad(format!(
                "would be {len} bytes for its {} frames, more than the \
                 {MAX_FRAME_DIGESTS_BYTES} bytes read",
                table.len()
            )));
        }
        let bytes = match self.inner.cache.frame_digests(&claim.frames, len).await {
            Ok(Some(bytes)) => bytes,
            Ok(None) => return Ok(None),
            Err(e) if e.kind() == crate::error::ErrorKind::Corrupt => {
                return Err(bad(e.to_string()))
            }
            Err(e) => return Err(e.into()),
        };
        let actual = Hash::digest(claim.frames.algo(), &bytes);
        if actual != claim.frames {
            return Err(bad(format!(
                "hash to {actual}, but the narinfo's FramesHash is {}",
                claim.frames
            )));
        }
        let digests = FrameDigests::parse(&bytes).map_err(|r| bad(r.to_owned()))?;
        if !digests.describes(table) {
            return Err(bad(
                "describe other frames than the object's seek table".into()
            ));
        }
        Ok(Some(digests))
    }

    /// Checks the frame digests `claim` names (signed or not) against this NAR object, reading
    /// only the digests and the object's seek table (its last bytes), no frame: the digests
    /// must be there, hash to the claim's `FramesHash` and describe exactly the frames of the
    /// object's seek table. What a signer checks before it signs a claim (the frames' own
    /// bytes are pinned by the digests from then on: every reader checks each frame it
    /// fetches).
    ///
    /// ```
    /// # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
    /// # use std::sync::Arc;
    /// # use cachecore::{ops::{self, NoProgress, PushOptions}, store_path::StoreDir};
    /// use cachecore::access::{FramesClaim, NarAccess};
    /// use cachecore::store::BinaryCache;
    /// # let src = tempfile::tempdir().unwrap();
    /// # std::fs::write(src.path().join("big"), vec![7u8; 9 << 20]).unwrap();
    /// let cache = BinaryCache::open("memory://").unwrap();
    /// // Pushed without a key: frame digests, but no FramesSig.
    /// let (path, _) = ops::push_add(&cache, &StoreDir::default(), src.path(), "big",
    ///     &PushOptions::default(), Arc::new(NoProgress)).await.unwrap();
    /// let info = cache.narinfo(&path).await.unwrap().unwrap();
    /// let mut claim = FramesClaim::of(&info).unwrap();
    /// let nar = NarAccess::new(&cache, info).unwrap();
    /// assert_eq!(nar.check_frame_digests(&claim).await.unwrap().frames().len(), 3);
    /// claim.frames = cachecore::hash::Hash::digest(cachecore::hash::HashAlgo::Sha256, b"other");
    /// assert!(nar.check_frame_digests(&claim).await.is_err()); // no such digests
    /// # });
    /// ```
    pub async fn check_frame_digests(
        &self,
        claim: &FramesClaim,
    ) -> Result<FrameDigests, AccessError> {
        let bad = |reason: &str| AccessError::BadFrameDigests {
            object: self.object(),
            reason: reason.to_owned(),
        };
        let layout = self
            .inner
            .layout
            .get_or_try_init(|| self.load_layout())
            .await?;
        let table = match layout {
            Layout::Seekable(table)
            | Layout::InMemory {
                table: Some(table), ..
            } => table,
            _ => return Err(bad("cannot describe it: it is not seekable zstd")),
        };
        self.read_digests(claim, table)
            .await?
            .ok_or_else(|| bad("are missing from the cache (the narinfo's FramesHash names them)"))
    }

    fn rebuild(self, change: impl FnOnce(&mut Inner)) -> NarAccess {
        let inner = Arc::try_unwrap(self.inner).unwrap_or_else(|shared| Inner {
            cache: shared.cache.clone(),
            info: shared.info.clone(),
            method: shared.method,
            object: shared.object.clone(),
            layout: tokio::sync::OnceCell::new(),
            last_frame: Mutex::new(None),
            nar_cache: shared.nar_cache.clone(),
            whole_checked: shared.whole_checked,
            kept: tokio::sync::OnceCell::new(),
            frame_cache: shared.frame_cache.clone(),
            object_key: shared.object_key.clone(),
            sequence: Mutex::new(Sequence::default()),
            frames_claim: shared.frames_claim.clone(),
            digests: tokio::sync::OnceCell::new(),
        });
        let mut inner = inner;
        change(&mut inner);
        NarAccess {
            inner: Arc::new(inner),
        }
    }

    /// The path's listing, and where it came from: the `.ls` checked against its signed hash
    /// ([`NarAccess::signed_listing`]), else the stored `.ls` when it parses and gives every
    /// file's offset (unchecked: nothing signs it), else one built from the whole NAR, fetched
    /// once, checked against the narinfo and kept — so later reads of this `NarAccess` come
    /// from that copy instead of fetching the NAR again.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
    /// # use std::sync::Arc;
    /// # use cachecore::{ops::{self, NoProgress, PushOptions}, store_path::StoreDir};
    /// use cachecore::access::{ListingOrigin, NarAccess};
    /// use cachecore::store::BinaryCache;
    /// # let src = tempfile::tempdir().unwrap();
    /// # std::fs::write(src.path().join("hello"), "hello, world\n").unwrap();
    /// let cache = BinaryCache::open("memory://").unwrap();
    /// let opts = PushOptions { write_listing: false, ..PushOptions::default() };
    /// # let (path, _) = ops::push_add(&cache, &StoreDir::default(), src.path(), "hello",
    /// #     &opts, Arc::new(NoProgress)).await.unwrap();
    /// let nar = NarAccess::open(&cache, &path).await.unwrap();
    /// let (listing, origin) = nar.listing().await.unwrap();
    /// assert_eq!(origin, ListingOrigin::CheckedNar); // no .ls: read from the NAR, kept
    /// assert!(listing.get("hello").is_some());
    /// # });
    /// ```
    pub async fn listing(&self) -> Result<(crate::nar::Listing, ListingOrigin), AccessError> {
        match self.usable_listing().await? {
            Some(found) => Ok(found),
            None => Ok((self.listing_checked().await?, ListingOrigin::CheckedNar)),
        }
    }

    /// [`NarAccess::listing`] with names and symlink targets exactly as the NAR holds them:
    /// from the listing where it can say them (see
    /// [`Listing::may_have_lost_bytes`](crate::nar::Listing::may_have_lost_bytes)), else
    /// from the NAR ([`NarAccess::tree_checked`]).
    ///
    /// ```
    /// # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
    /// # use std::sync::Arc;
    /// # use cachecore::{ops::{self, NoProgress, PushOptions}, store_path::StoreDir};
    /// use std::os::unix::ffi::OsStrExt as _;
    /// use cachecore::access::{ListingOrigin, NarAccess};
    /// use cachecore::nar::ExactNode;
    /// use cachecore::store::BinaryCache;
    /// # let src = tempfile::tempdir().unwrap();
    /// std::fs::write(src.path().join(std::ffi::OsStr::from_bytes(b"caf\xe9")), "x").unwrap();
    /// let cache = BinaryCache::open("memory://").unwrap();
    /// # let (path, _) = ops::push_add(&cache, &StoreDir::default(), src.path(), "latin1",
    /// #     &PushOptions::default(), Arc::new(NoProgress)).await.unwrap();
    /// // No listing can say that name: push wrote none, and the tree comes from the NAR.
    /// assert!(cache.listing_bytes(&path).await.unwrap().is_none());
    /// let nar = NarAccess::open(&cache, &path).await.unwrap();
    /// let (tree, origin) = nar.tree().await.unwrap();
    /// assert_eq!(origin, ListingOrigin::CheckedNar);
    /// let ExactNode::Directory { entries } = tree else { panic!() };
    /// assert!(entries.contains_key(&b"caf\xe9"[..]));
    /// # });
    /// ```
    pub async fn tree(&self) -> Result<(crate::nar::ExactNode, ListingOrigin), AccessError> {
        match self.usable_listing().await? {
            Some((listing, origin)) => Ok((listing.root.into(), origin)),
            None => Ok((self.tree_checked().await?, ListingOrigin::CheckedNar)),
        }
    }

    /// The signed listing, else the stored one when it parses and gives every file's offset;
    /// either only when it did not lose bytes of a name or target.
    async fn usable_listing(
        &self,
    ) -> Result<Option<(crate::nar::Listing, ListingOrigin)>, AccessError> {
        if let Some(listing) = self.signed_listing().await? {
            if !listing.may_have_lost_bytes() {
                return Ok(Some((listing, ListingOrigin::Signed)));
            }
            return Ok(None);
        }
        let stored = self
            .inner
            .cache
            .listing_bytes(&self.inner.info.store_path)
            .await?;
        Ok(stored
            .as_deref()
            .and_then(|bytes| crate::nar::Listing::parse(bytes).ok())
            .filter(|l| has_every_offset(&l.root) && !l.may_have_lost_bytes())
            .map(|listing| (listing, ListingOrigin::Stored)))
    }

    /// The listing of the NAR, built from the whole NAR checked against the narinfo (fetched
    /// once, as for [`NarAccess::whole_nar_checked`] reads, and kept when there is a
    /// [`NarCache`]).
    pub async fn listing_checked(&self) -> Result<crate::nar::Listing, AccessError> {
        Ok(crate::nar::Listing {
            root: self.tree_checked().await?.into(),
        })
    }

    /// [`NarAccess::listing_checked`] with names and symlink targets exactly as the NAR holds
    /// them.
    pub async fn tree_checked(&self) -> Result<crate::nar::ExactNode, AccessError> {
        let kept = self.kept().await?;
        let name = full(&self.inner.info);
        tokio::task::spawn_blocking(move || {
            crate::nar::ExactNode::from_nar(io::BufReader::with_capacity(
                1 << 20,
                KeptReader { kept, at: 0 },
            ))
        })
        .await
        .map_err(|_| AccessError::Cancelled {
            object: self.object(),
        })?
        // A NAR that matched its signed NarHash and does not parse: the signer's NAR is bad.
        .map_err(|e| AccessError::Decode {
            object: format!("{name}: {}", self.object()),
            method: Compression::None,
            source: io::Error::new(io::ErrorKind::InvalidData, e),
        })
    }

    /// The whole NAR, checked, from the NAR cache (fetched into it once), or fetched into a
    /// temporary NAR cache of its own when there is none.
    async fn kept(&self) -> Result<KeptNar, AccessError> {
        self.inner
            .kept
            .get_or_try_init(|| async {
                match &self.inner.nar_cache {
                    Some(c) => c.get(&self.inner.cache, &self.inner.info).await,
                    None => {
                        let dir = std::env::temp_dir()
                            .join(format!("cachecore-nars-{}", std::process::id()));
                        let c = NarCache::open(&dir, u64::MAX).map_err(|source| {
                            AccessError::NarCache {
                                dir: dir.display().to_string(),
                                what: "cannot create it".into(),
                                source,
                            }
                        })?;
                        let kept = c.get(&self.inner.cache, &self.inner.info).await?;
                        // Open already: the name is not needed any more.
                        let _ =
                            std::fs::remove_file(dir.join(NarCache::file_name(&self.inner.info)));
                        Ok(kept)
                    }
                }
            })
            .await
            .cloned()
    }

    /// Bytes `range` of the kept NAR, in chunks of at most [`STREAM_CHUNK`].
    fn read_kept(&self, range: Range<u64>) -> BoxStream<'static, Result<Bytes, AccessError>> {
        let this = self.clone();
        let starts = (range.start..range.end).step_by(STREAM_CHUNK);
        stream::iter(starts)
            .then(move |s| {
                let this = this.clone();
                let end = (s + STREAM_CHUNK as u64).min(range.end);
                async move {
                    let kept = this.kept().await?;
                    let dir = this
                        .inner
                        .nar_cache
                        .as_ref()
                        .map_or_else(String::new, |c| c.dir().display().to_string());
                    tokio::task::spawn_blocking(move || {
                        let mut buf = vec![0u8; (end - s) as usize];
                        kept.read_exact_at(&mut buf, s)
                            .map(|()| Bytes::from(buf))
                            .map_err(|source| AccessError::NarCache {
                                dir,
                                what: "cannot read a kept NAR".into(),
                                source,
                            })
                    })
                    .await
                    .map_err(|_| AccessError::Cancelled {
                        object: this.object(),
                    })?
                }
            })
            .boxed()
    }

    /// Random access into the NAR of `path` (fetches its narinfo).
    ///
    /// ```
    /// # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
    /// # use std::sync::Arc;
    /// # use cachecore::{ops::{self, NoProgress, PushOptions}, store_path::StoreDir};
    /// use cachecore::{access::NarAccess, store::BinaryCache};
    /// # let src = tempfile::tempdir().unwrap();
    /// # std::fs::write(src.path().join("hello"), "hello, world\n").unwrap();
    /// let cache = BinaryCache::open("memory://").unwrap();
    /// # let (path, _) = ops::push_add(&cache, &StoreDir::default(), src.path(), "hello",
    /// #     &PushOptions::default(), Arc::new(NoProgress)).await.unwrap();
    /// use cachecore::store_path::StorePath;
    /// let nar = NarAccess::open(&cache, &path).await.unwrap();
    /// assert_eq!(nar.read(0..8).await.unwrap(), &13u64.to_le_bytes()[..]); // "nix-archive-1".len()
    /// let absent = StorePath::from_base_name("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-absent").unwrap();
    /// assert!(NarAccess::open(&cache, &absent).await.is_err());
    /// # });
    /// ```
    pub async fn open(cache: &BinaryCache, path: &StorePath) -> Result<NarAccess, AccessError> {
        let info = cache
            .narinfo(path)
            .await?
            .ok_or_else(|| AccessError::NotInCache {
                path: path.to_string(),
                url: cache.url().to_owned(),
            })?;
        NarAccess::new(cache, info)
    }

    /// Fetches now what random access needs before the first read — the object's tail and
    /// with it the seek table of a seekable NAR — so that a caller can overlap it with other
    /// requests. Reads do it themselves when it was not done.
    ///
    /// See [`NarAccess::new`] for an example.
    pub async fn prepare(&self) -> Result<(), AccessError> {
        self.inner
            .layout
            .get_or_try_init(|| self.load_layout())
            .await
            .map(drop)
    }

    /// The narinfo read from.
    ///
    /// See [`NarAccess::new`] for an example.
    pub fn info(&self) -> &NarInfo {
        &self.inner.info
    }

    /// The NAR's length (the narinfo's `NarSize`).
    ///
    /// See [`NarAccess::new`] for an example.
    pub fn nar_size(&self) -> u64 {
        self.inner.info.nar_size
    }

    /// The bytes `range` of the NAR, in memory (so keep ranges to what a caller would buffer
    /// anyway; [`NarAccess::stream`] streams a range of any length).
    ///
    /// See [`NarAccess::new`] for an example.
    pub async fn read(&self, range: Range<u64>) -> Result<Bytes, AccessError> {
        let chunks: Vec<Bytes> = self.stream(range).try_collect().await?;
        Ok(match chunks.len() {
            0 => Bytes::new(),
            1 => chunks.into_iter().next().unwrap_or_default(),
            _ => Bytes::from(chunks.concat()),
        })
    }

    /// The bytes `range` of the NAR, as a stream of chunks; memory stays bounded by constants
    /// whatever the range's length.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
    /// # use std::sync::Arc;
    /// # use cachecore::{ops::{self, NoProgress, PushOptions}, store_path::StoreDir};
    /// use cachecore::{access::NarAccess, store::BinaryCache};
    /// use futures::TryStreamExt;
    /// # let src = tempfile::tempdir().unwrap();
    /// # std::fs::write(src.path().join("hello"), "hello, world\n").unwrap();
    /// let cache = BinaryCache::open("memory://").unwrap();
    /// # let (path, _) = ops::push_add(&cache, &StoreDir::default(), src.path(), "hello",
    /// #     &PushOptions::default(), Arc::new(NoProgress)).await.unwrap();
    /// let nar = NarAccess::open(&cache, &path).await.unwrap();
    /// let whole: Vec<bytes::Bytes> = nar.stream(0..nar.nar_size()).try_collect().await.unwrap();
    /// assert_eq!(whole.concat().len() as u64, nar.info().nar_size);
    /// // A range past NarSize is refused.
    /// assert!(nar.read(0..nar.nar_size() + 1).await.is_err());
    /// # });
    /// ```
    pub fn stream(&self, range: Range<u64>) -> BoxStream<'static, Result<Bytes, AccessError>> {
        let this = self.clone();
        stream::once(async move { this.plan(range).await })
            .try_flatten()
            .boxed()
    }

    async fn plan(
        self,
        range: Range<u64>,
    ) -> Result<BoxStream<'static, Result<Bytes, AccessError>>, AccessError> {
        let nar_size = self.nar_size();
        if range.start > range.end || range.end > nar_size {
            return Err(AccessError::OutOfBounds {
                path: full(&self.inner.info),
                start: range.start,
                end: range.end,
                nar_size,
            });
        }
        if range.is_empty() {
            return Ok(stream::empty().boxed());
        }
        // A NAR already fetched whole and checked (for its listing, say) is read from there.
        if self.inner.whole_checked || self.inner.kept.initialized() {
            return Ok(self.read_kept(range));
        }
        let layout = self
            .inner
            .layout
            .get_or_try_init(|| self.load_layout())
            .await?;
        if let Some(claim) = &self.inner.frames_claim {
            // Only frames checked against their digests, or what was checked whole.
            let checked = match layout {
                Layout::InMemory { .. } => true,
                Layout::Seekable(table) => self.digests(claim, table).await?.is_some(),
                Layout::Plain | Layout::FromStart => false,
            };
            if !checked {
                return Ok(self.read_kept(range));
            }
        }
        Ok(match layout {
            Layout::Plain => self.plain(range),
            Layout::InMemory { nar, .. } => {
                let (s, e) = (range.start as usize, range.end as usize);
                stream::once(futures::future::ready(Ok(nar.slice(s..e)))).boxed()
            }
            Layout::Seekable(table) => self.frames(table, range),
            Layout::FromStart if self.inner.nar_cache.is_some() => self.read_kept(range),
            Layout::FromStart => self.from_start(range).await?,
        })
    }

    fn object(&self) -> String {
        self.inner.object.clone()
    }

    fn key(&self) -> &str {
        &self.inner.info.url
    }

    fn not_found(&self) -> AccessError {
        AccessError::Store(StoreError::NotFound {
            url: self.inner.cache.url().to_owned(),
            key: self.key().to_owned(),
        })
    }

    /// Bytes `range` of the object (`range` is what a caller bounded: at most a group of frames
    /// or a probe), which must all be there.
    async fn get_exact(&self, range: ReadRange) -> Result<(Bytes, u64), AccessError> {
        let object = self
            .inner
            .cache
            .objects()
            .get(self.key(), range)
            .await?
            .ok_or_else(|| self.not_found())?;
        let (size, got) = (object.meta.size, object.range.clone());
        let chunks: Vec<Bytes> = object.body.try_collect().await?;
        let bytes = Bytes::from(chunks.concat());
        if bytes.len() as u64 != got.end - got.start {
            return Err(AccessError::SizeMismatch {
                object: self.object(),
                what: "a ranged read of the object",
                field: "FileSize",
                actual: got.start + bytes.len() as u64,
                expected: got.end,
            });
        }
        Ok((bytes, size))
    }

    /// Bytes `range` of the object, all of which must exist.
    async fn get_range(&self, range: Range<u64>) -> Result<Bytes, AccessError> {
        let want = range.end - range.start;
        let (bytes, size) = self.get_exact(ReadRange::Bounded(range.clone())).await?;
        if (bytes.len() as u64) < want {
            return Err(AccessError::SizeMismatch {
                object: self.object(),
                what: "the object",
                field: "FileSize",
                actual: size,
                expected: self.inner.info.file_size.unwrap_or(range.end),
            });
        }
        Ok(bytes)
    }

    async fn load_layout(&self) -> Result<Layout, AccessError> {
        let info = &self.inner.info;
        if self.inner.method == Compression::None {
            if let Some(file_size) = info.file_size.filter(|&n| n != info.nar_size) {
                return Err(AccessError::SizeMismatch {
                    object: self.object(),
                    what: "the uncompressed object (FileSize)",
                    field: "NarSize",
                    actual: file_size,
                    expected: info.nar_size,
                });
            }
            return Ok(Layout::Plain);
        }
        // The last bytes, and with them the object's real length.
        let (tail, object_len) = self.get_exact(ReadRange::Last(TAIL_PROBE)).await?;
        if let Some(file_size) = info.file_size {
            if object_len > file_size {
                return Err(AccessError::TooLong {
                    object: self.object(),
                    file_size,
                });
            }
            if object_len < file_size {
                return Err(AccessError::SizeMismatch {
                    object: self.object(),
                    what: "the object",
                    field: "FileSize",
                    actual: object_len,
                    expected: file_size,
                });
            }
        }
        let probe_start = object_len.saturating_sub(TAIL_PROBE);
        if probe_start == 0 && info.nar_size <= MAX_FRAME_BYTES {
            let nar = self.decode_whole(tail.clone())?;
            let table = match self.inner.method {
                Compression::Zstd => SeekTable::parse_from_tail(&tail)
                    .ok()
                    .filter(|t| self.check_table(t, object_len).is_ok()),
                _ => None,
            };
            return Ok(Layout::InMemory { nar, table });
        }
        if self.inner.method != Compression::Zstd {
            return Ok(Layout::FromStart);
        }
        let table = match SeekTable::parse_from_tail(&tail) {
            Ok(t) => t,
            Err(SeekableError::BadSeekableMagic { .. }) => return Ok(Layout::FromStart),
            Err(SeekableError::TailTooShort { needed, .. }) => {
                if needed > MAX_SEEK_TABLE_BYTES || needed > object_len {
                    return Err(AccessError::TooLarge {
                        object: self.object(),
                        what: "its seek table".into(),
                        size: needed,
                        limit: MAX_SEEK_TABLE_BYTES.min(object_len),
                    });
                }
                let tail = self.get_range(object_len - needed..object_len).await?;
                SeekTable::parse_from_tail(&tail).map_err(|source| AccessError::Seekable {
                    object: self.object(),
                    source,
                })?
            }
            Err(source) => {
                return Err(AccessError::Seekable {
                    object: self.object(),
                    source,
                })
            }
        };
        self.check_table(&table, object_len)?;
        Ok(Layout::Seekable(table))
    }

    fn check_table(&self, table: &SeekTable, object_len: u64) -> Result<(), AccessError> {
        let info = &self.inner.info;
        if table.object_len() != object_len {
            return Err(AccessError::SizeMismatch {
                object: self.object(),
                what: "the object its seek table describes",
                field: "FileSize",
                actual: table.object_len(),
                expected: object_len,
            });
        }
        if table.decompressed_len() != info.nar_size {
            return Err(AccessError::SizeMismatch {
                object: self.object(),
                what: "the NAR its seek table describes",
                field: "NarSize",
                actual: table.decompressed_len(),
                expected: info.nar_size,
            });
        }
        for (index, f) in table.frames().iter().enumerate() {
            let size = u64::from(f.compressed_size.max(f.decompressed_size));
            if size > MAX_FRAME_BYTES {
                return Err(AccessError::TooLarge {
                    object: self.object(),
                    what: format!("frame {index}"),
                    size,
                    limit: MAX_FRAME_BYTES,
                });
            }
        }
        Ok(())
    }

    /// Decompresses a whole (small) object, checking FileSize, FileHash, NarSize and NarHash.
    fn decode_whole(&self, object: Bytes) -> Result<Bytes, AccessError> {
        let info = &self.inner.info;
        if let Some(h) = &info.file_hash {
            let actual = Hash::digest(h.algo(), &object);
            if actual != *h {
                return Err(AccessError::HashMismatch {
                    object: self.object(),
                    field: "FileHash",
                    expected: h.to_string(),
                    actual: actual.to_string(),
                });
            }
        }
        let decode_err = |source| AccessError::Decode {
            object: self.object(),
            method: self.inner.method,
            source,
        };
        let decoder = decompress(self.inner.method, &object[..]).map_err(decode_err)?;
        let mut nar = Vec::with_capacity(info.nar_size as usize);
        // One byte more than NarSize, to notice a longer NAR without decoding all of it.
        decoder
            .take(info.nar_size + 1)
            .read_to_end(&mut nar)
            .map_err(decode_err)?;
        if nar.len() as u64 != info.nar_size {
            return Err(AccessError::SizeMismatch {
                object: self.object(),
                what: "the decompressed NAR",
                field: "NarSize",
                actual: nar.len() as u64,
                expected: info.nar_size,
            });
        }
        let actual = Hash::digest(info.nar_hash.algo(), &nar);
        if actual != info.nar_hash {
            return Err(AccessError::HashMismatch {
                object: self.object(),
                field: "NarHash",
                expected: info.nar_hash.to_string(),
                actual: actual.to_string(),
            });
        }
        Ok(Bytes::from(nar))
    }

    /// An uncompressed NAR: ranged GETs of at most [`PLAIN_CHUNK`] bytes, two in flight.
    fn plain(&self, range: Range<u64>) -> BoxStream<'static, Result<Bytes, AccessError>> {
        let this = self.clone();
        let starts = (range.start..range.end).step_by(PLAIN_CHUNK as usize);
        stream::iter(starts)
            .map(move |s| {
                let this = this.clone();
                let end = (s + PLAIN_CHUNK).min(range.end);
                async move { this.get_range(s..end).await }
            })
            .buffered(2)
            .boxed()
    }

    /// The bytes `range` of the NAR when they are in memory now — every frame holding them
    /// decoded in the frame cache (and, with [`NarAccess::frames_checked`], checked), or the
    /// whole small NAR held checked — without any I/O or wait; `None` otherwise, and always
    /// for reads that come from a NAR checked whole ([`NarAccess::whole_nar_checked`]). For a
    /// reader that passes on what is at hand (a FUSE mount filling the kernel's page cache).
    pub fn held(&self, range: Range<u64>) -> Option<Bytes> {
        if self.inner.whole_checked || range.is_empty() || range.end > self.nar_size() {
            return None;
        }
        let table = match self.inner.layout.get()? {
            Layout::InMemory { nar, .. } => {
                return Some(nar.slice(range.start as usize..range.end as usize))
            }
            Layout::Seekable(table) => table,
            Layout::Plain | Layout::FromStart => return None,
        };
        if self.inner.frames_claim.is_some() && !matches!(self.inner.digests.get(), Some(Some(_))) {
            return None;
        }
        let fc = self.inner.frame_cache.as_ref()?;
        let frames = table.frames();
        let mut parts = Vec::new();
        for i in table.indices_covering(range.clone()) {
            let frame = fc.get(&self.inner.object_key, i)?;
            parts.push(part_of(&frames[i], &frame, &range));
        }
        match parts.len() {
            1 => parts.pop(),
            _ => Some(Bytes::from(parts.concat())),
        }
    }

    /// Seekable zstd: the frames covering `range`, fetched in groups, two groups in flight.
    fn frames(
        &self,
        table: &SeekTable,
        range: Range<u64>,
    ) -> BoxStream<'static, Result<Bytes, AccessError>> {
        let indices = table.indices_covering(range.clone());
        let frames = table.frames();
        self.read_ahead(frames, indices.clone());
        let mut groups: Vec<Vec<seekable::FrameEntry>> = Vec::new();
        let mut current: Vec<seekable::FrameEntry> = Vec::new();
        let mut current_len = 0u64;
        // With a frame cache, each frame is fetched on its own: a group would fetch again the
        // frames of it already held (a read straddling two frames), and concurrent readers
        // and read-ahead meet on single frames.
        let group_bytes = if self.inner.frame_cache.is_some() {
            0
        } else {
            GROUP_BYTES
        };
        for i in indices.clone() {
            current.push(frames[i]);
            current_len += u64::from(frames[i].decompressed_size);
            if current_len >= group_bytes {
                groups.push(std::mem::take(&mut current));
                current_len = 0;
            }
        }
        if !current.is_empty() {
            groups.push(current);
        }
        let first_index = indices.start;
        let mut index = first_index;
        let numbered: Vec<(usize, Vec<seekable::FrameEntry>)> = groups
            .into_iter()
            .map(|g| {
                let at = index;
                index += g.len();
                (at, g)
            })
            .collect();
        let this = self.clone();
        stream::iter(numbered)
            .map(move |(at, group)| {
                let this = this.clone();
                let range = range.clone();
                async move { this.group(at, group, range).await }
            })
            .buffered(2)
            .map_ok(|pieces| stream::iter(pieces.into_iter().map(Ok)))
            .try_flatten()
            .boxed()
    }

    /// Fetches and decodes one group of frames (the first with index `at`); returns the parts
    /// of `range` they hold.
    async fn group(
        &self,
        at: usize,
        group: Vec<seekable::FrameEntry>,
        range: Range<u64>,
    ) -> Result<Vec<Bytes>, AccessError> {
        let slice = |index: usize, frame: &Bytes| part_of(&group[index - at], frame, &range);
        if let Some(frames) = self.cached(at, group.len()) {
            return Ok(frames
                .iter()
                .enumerate()
                .map(|(i, f)| slice(at + i, f))
                .filter(|b| !b.is_empty())
                .collect());
        }
        // One reader fetches a group; the others wait for it and take it from the cache.
        let flight = self
            .inner
            .frame_cache
            .as_ref()
            .map(|fc| fc.flight(&self.inner.object_key, at));
        let decoded = async {
            let _only_one = match &flight {
                Some(f) => Some(f.lock().await),
                None => None,
            };
            if let Some(frames) = self.cached(at, group.len()) {
                return Ok(frames);
            }
            self.fetch_group(at, &group).await
        }
        .await;
        if let (Some(fc), Some(flight)) = (&self.inner.frame_cache, flight) {
            fc.done(&self.inner.object_key, at, flight);
        }
        let decoded = decoded?;
        Ok(decoded
            .iter()
            .enumerate()
            .map(|(i, frame)| slice(at + i, frame))
            .filter(|b| !b.is_empty())
            .collect())
    }

    /// The decoded frames `at..at + n`, when all are held (the frame cache, else the last frame).
    fn cached(&self, at: usize, n: usize) -> Option<Vec<Bytes>> {
        match &self.inner.frame_cache {
            Some(fc) => (at..at + n)
                .map(|i| fc.get(&self.inner.object_key, i))
                .collect(),
            None if n == 1 => self.inner.last_frame.lock().ok().and_then(|last| {
                last.as_ref()
                    .filter(|(i, _)| *i == at)
                    .map(|(_, b)| vec![b.clone()])
            }),
            None => None,
        }
    }

    /// Starts fetching the frames after `indices` into the frame cache when reads are
    /// sequential (see [`Sequence::advance`]).
    fn read_ahead(&self, frames: &[seekable::FrameEntry], indices: Range<usize>) {
        let Some(fc) = &self.inner.frame_cache else {
            return;
        };
        let ahead = match self.inner.sequence.lock() {
            Ok(mut seq) => seq.advance(indices, frames.len()),
            Err(_) => return,
        };
        for index in ahead {
            if fc.contains(&self.inner.object_key, index) {
                continue;
            }
            let this = self.clone();
            let frame = frames[index];
            tokio::spawn(async move {
                // A failure is met again, and reported, by the read that needs the frame.
                let _ = this
                    .group(index, vec![frame], frame.decompressed_range())
                    .await;
            });
        }
    }

    /// Fetches and decodes the frames of `group` (the first with index `at`), and keeps them.
    async fn fetch_group(
        &self,
        at: usize,
        group: &[seekable::FrameEntry],
    ) -> Result<Vec<Bytes>, AccessError> {
        let (first, last) = match (group.first(), group.last()) {
            (Some(f), Some(l)) => (*f, *l),
            _ => return Ok(Vec::new()),
        };
        let object = self.object();
        let digests = match &self.inner.frames_claim {
            // Set by `plan` before any frame is read.
            Some(_) => Some(self.inner.digests.get().cloned().flatten().ok_or_else(|| {
                AccessError::BadFrameDigests {
                    object: object.clone(),
                    reason: "were not read before a frame was".into(),
                }
            })?),
            None => None,
        };
        // Frames checked against signed digests are kept in the NAR cache's directory, named
        // by their digest (a single frame is looked for there first).
        let keep = self.inner.nar_cache.clone().filter(|_| digests.is_some());
        let kept = match (&keep, &digests, group) {
            (Some(dir), Some(digests), [one]) => match digests.frames().get(at) {
                Some(d) => {
                    let (dir, sha256, len) = (dir.clone(), d.sha256, one.compressed_size);
                    tokio::task::spawn_blocking(move || dir.kept_frame(&sha256, len))
                        .await
                        .ok()
                        .flatten()
                }
                None => None,
            },
            _ => None,
        };
        let from_disk = kept.is_some();
        let compressed = match kept {
            Some(bytes) => Bytes::from(bytes),
            None => {
                self.get_range(first.compressed_offset..last.compressed_range().end)
                    .await?
            }
        };
        let decode_group = group.to_vec();
        let decode_object = object.clone();
        let decoded = tokio::task::spawn_blocking(move || {
            decode_group
                .iter()
                .enumerate()
                .map(|(i, f)| {
                    // A kept frame was hashed again as it was read back.
                    if let (Some(digests), false) = (&digests, from_disk) {
                        check_frame(
                            &decode_object,
                            digests,
                            at + i,
                            f,
                            &compressed,
                            first.compressed_offset,
                        )?;
                        // Checked: its bytes are there.
                        if let (Some(dir), Some(bytes)) =
                            (&keep, frame_bytes(f, &compressed, first.compressed_offset))
                        {
                            dir.keep_frame(&digests.frames()[at + i].sha256, bytes);
                        }
                    }
                    decode_frame(at + i, f, &compressed, first.compressed_offset).map_err(
                        |source| AccessError::Seekable {
                            object: decode_object.clone(),
                            source,
                        },
                    )
                })
                .collect::<Result<Vec<Bytes>, AccessError>>()
        })
        .await
        .map_err(|e| {
            if e.is_panic() {
                std::panic::resume_unwind(e.into_panic());
            }
            AccessError::Cancelled {
                object: object.clone(),
            }
        })??;
        match &self.inner.frame_cache {
            Some(fc) => {
                for (i, frame) in decoded.iter().enumerate() {
                    fc.insert(&self.inner.object_key, at + i, frame.clone());
                }
            }
            None => {
                if let (Some(frame), Ok(mut last)) = (decoded.last(), self.inner.last_frame.lock())
                {
                    *last = Some((at + decoded.len() - 1, frame.clone()));
                }
            }
        }
        Ok(decoded)
    }

    /// Streams the object from its start, decompressing and dropping what comes before `range`.
    async fn from_start(
        &self,
        range: Range<u64>,
    ) -> Result<BoxStream<'static, Result<Bytes, AccessError>>, AccessError> {
        let object = self
            .inner
            .cache
            .nar_object(&self.inner.info)
            .await?
            .ok_or_else(|| self.not_found())?;
        let (tx, reader) = crate::ops::pipe::reader_channel();
        tokio::spawn(crate::ops::pipe::feed(object, tx));
        let (out_tx, out_rx) = tokio::sync::mpsc::channel::<Result<Bytes, AccessError>>(4);
        let (method, file_size, name) =
            (self.inner.method, self.inner.info.file_size, self.object());
        tokio::task::spawn_blocking(move || {
            let decode_err = |source| AccessError::Decode {
                object: name.clone(),
                method,
                source,
            };
            let result = (|| {
                let limited = FileSizeLimit {
                    inner: reader,
                    left: file_size,
                };
                let mut decoder = decompress(method, limited).map_err(decode_err)?;
                io::copy(&mut (&mut decoder).take(range.start), &mut io::sink())
                    .map_err(decode_err)?;
                let mut left = range.end - range.start;
                let mut pos = range.start;
                while left > 0 {
                    let mut chunk = vec![0u8; STREAM_CHUNK.min(left as usize)];
                    let n = read_full(&mut decoder, &mut chunk).map_err(decode_err)?;
                    if n == 0 {
                        return Err(AccessError::SizeMismatch {
                            object: name.clone(),
                            what: "the decompressed NAR",
                            field: "NarSize",
                            actual: pos,
                            expected: range.end,
                        });
                    }
                    chunk.truncate(n);
                    left -= n as u64;
                    pos += n as u64;
                    if out_tx.blocking_send(Ok(Bytes::from(chunk))).is_err() {
                        return Ok(()); // the reader went away
                    }
                }
                Ok(())
            })();
            if let Err(e) = result {
                let _ = out_tx.blocking_send(Err(e));
            }
        });
        Ok(stream::unfold(out_rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        })
        .boxed())
    }
}

/// Checks frame `index` of `compressed` (which starts at object offset `base`) against its
/// signed digest, before anything decodes it.
fn check_frame(
    object: &str,
    digests: &FrameDigests,
    index: usize,
    frame: &seekable::FrameEntry,
    compressed: &[u8],
    base: u64,
) -> Result<(), AccessError> {
    if frame_bytes(frame, compressed, base).is_some_and(|b| digests.holds(index, b)) {
        Ok(())
    } else {
        let c = frame.compressed_range();
        Err(AccessError::FrameMismatch {
            object: object.to_owned(),
            index,
            start: c.start,
            end: c.end,
        })
    }
}

/// The compressed bytes of `frame` in `compressed` (which starts at object offset `base`);
/// `None` when `compressed` does not hold all of them.
fn frame_bytes<'a>(
    frame: &seekable::FrameEntry,
    compressed: &'a [u8],
    base: u64,
) -> Option<&'a [u8]> {
    let c = frame.compressed_range();
    compressed.get((c.start - base) as usize..(c.end - base) as usize)
}

/// The part of `range` (NAR offsets) that decoded `frame` holds; `entry` is one of the frames
/// covering `range`.
fn part_of(entry: &seekable::FrameEntry, frame: &Bytes, range: &Range<u64>) -> Bytes {
    let d = entry.decompressed_range();
    let s = range.start.max(d.start) - d.start;
    let e = range.end.min(d.end) - d.start;
    frame.slice(s as usize..e as usize)
}

/// Decodes one whole frame out of `compressed` (which starts at object offset `base`).
fn decode_frame(
    index: usize,
    frame: &seekable::FrameEntry,
    compressed: &[u8],
    base: u64,
) -> Result<Bytes, SeekableError> {
    let bytes = frame_bytes(frame, compressed, base).ok_or(SeekableError::CompressedTooShort {
        needed: frame.compressed_range().end - base,
        got: compressed.len() as u64,
    })?;
    let mut out = Vec::new();
    seekable::decompress_whole_frame(index, frame, bytes, &mut out)?;
    Ok(Bytes::from(out))
}

/// A kept NAR as a `Read` from its start.
struct KeptReader {
    kept: KeptNar,
    at: u64,
}

impl Read for KeptReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = (buf.len() as u64).min(self.kept.len() - self.at) as usize;
        self.kept.read_exact_at(&mut buf[..n], self.at)?;
        self.at += n as u64;
        Ok(n)
    }
}

/// Reads until `buf` is full or the input ends.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Fails a read past the narinfo's FileSize (when it gives one).
struct FileSizeLimit<R> {
    inner: R,
    left: Option<u64>,
}

impl<R: Read> Read for FileSizeLimit<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(left) = &mut self.left {
            *left = left.checked_sub(n as u64).ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    "the object is longer than the narinfo's FileSize",
                )
            })?;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compression::NarCompression;
    use crate::ops::{self, NoProgress, PushOptions};
    use crate::store_path::StoreDir;

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    }

    /// Text-like bytes (compressible, not trivially).
    fn text(seed: u64, len: usize) -> Vec<u8> {
        let mut x = seed | 1;
        let mut out = Vec::with_capacity(len);
        while out.len() < len {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            out.extend_from_slice(format!("w{} ", x % 4099).as_bytes());
        }
        out.truncate(len);
        out
    }

    /// Pushes a tree of `files` (name, length) into a fresh memory cache with `method`;
    /// returns the cache, the path, the tree and the NAR as `nix-store --dump` would give it.
    fn pushed(
        rt: &tokio::runtime::Runtime,
        method: Compression,
        files: &[(&str, usize)],
    ) -> (BinaryCache, StorePath, tempfile::TempDir, Vec<u8>) {
        let dir = tempfile::tempdir().unwrap();
        for (i, (name, len)) in files.iter().enumerate() {
            std::fs::write(dir.path().join(name), text(i as u64 + 7, *len)).unwrap();
        }
        let opts = PushOptions {
            compression: NarCompression::new(method, None),
            ..PushOptions::default()
        };
        let (cache, path, nar) = push_tree(rt, dir.path(), &opts);
        (cache, path, dir, nar)
    }

    /// Pushes `dir` into a fresh memory cache with `opts`; the cache, the path and the NAR.
    fn push_tree(
        rt: &tokio::runtime::Runtime,
        dir: &std::path::Path,
        opts: &PushOptions,
    ) -> (BinaryCache, StorePath, Vec<u8>) {
        let cache = BinaryCache::open("memory://").unwrap();
        let (path, _) = rt
            .block_on(ops::push_add(
                &cache,
                &StoreDir::default(),
                dir,
                "tree",
                opts,
                std::sync::Arc::new(NoProgress),
            ))
            .unwrap();
        let mut nar = Vec::new();
        crate::nar::dump(dir, &mut nar).unwrap();
        (cache, path, nar)
    }

    fn check_ranges(rt: &tokio::runtime::Runtime, access: &NarAccess, nar: &[u8]) {
        let n = nar.len() as u64;
        for r in [
            0..0,
            0..1,
            0..n,
            n - 1..n,
            5..5000,
            n / 3..n / 3 + 9_000_000,
            n / 2..n - 3,
        ] {
            let r = r.start.min(n)..r.end.min(n);
            let got = rt.block_on(access.read(r.clone())).unwrap();
            assert!(
                got[..] == nar[r.start as usize..r.end as usize],
                "range {r:?} of {n}"
            );
        }
        let err = rt.block_on(access.read(n - 1..n + 1)).unwrap_err();
        assert!(matches!(err, AccessError::OutOfBounds { .. }), "{err}");
    }

    #[test]
    fn read_ahead_grows_with_sequential_reads_survives_reordering_and_closes_on_a_seek() {
        let mut seq = Sequence::default();
        // The first read is not sequential; nor is a read from the start of the NAR.
        assert_eq!(seq.advance(0..1, 100), 0..0);
        // Into the next frame: 1, then 2, then 4 frames ahead (each time what is not asked yet).
        assert_eq!(seq.advance(1..2, 100), 2..3);
        assert_eq!(seq.advance(2..3, 100), 3..5);
        assert_eq!(seq.advance(3..4, 100), 5..8);
        // Requests of one reader arriving out of order (frame 3 after 4, then 4 again) leave
        // the window open.
        assert_eq!(seq.advance(4..5, 100), 8..9);
        assert_eq!(seq.advance(3..4, 100), 0..0);
        assert_eq!(seq.advance(4..5, 100), 0..0);
        assert_eq!(seq.advance(5..6, 100), 9..10);
        // Never past the last frame.
        assert_eq!(seq.advance(6..9, 10), 0..0);
        assert_eq!(seq.advance(9..10, 10), 0..0);
        // A seek closes it; sequential reads from there open it again.
        assert_eq!(seq.advance(50..51, 100), 0..0);
        assert_eq!(seq.advance(51..52, 100), 52..53);
        assert_eq!(seq.advance(20..21, 100), 0..0);
    }

    #[test]
    fn every_layout_reads_the_same_bytes() {
        let rt = rt();
        for method in [Compression::Zstd, Compression::Xz, Compression::None] {
            // Several frames for zstd; xz is read from the start for every range, so smaller.
            let files: &[(&str, usize)] = match method {
                Compression::Zstd => &[("a", 9 << 20), ("b", 1000), ("c", 5 << 20)],
                _ => &[("a", 700_000), ("b", 1000), ("c", 300_000)],
            };
            let (cache, path, _dir, nar) = pushed(&rt, method, files);
            let access = rt.block_on(NarAccess::open(&cache, &path)).unwrap();
            let layout = rt.block_on(async {
                access.read(0..1).await.unwrap();
                match access.inner.layout.get() {
                    Some(Layout::Seekable(t)) if t.len() >= 3 => "seekable".to_owned(),
                    Some(Layout::FromStart) => "from start".to_owned(),
                    Some(Layout::Plain) => "plain".to_owned(),
                    other => format!("{other:?}"),
                }
            });
            let expected = match method {
                Compression::Zstd => "seekable",
                Compression::None => "plain",
                _ => "from start",
            };
            assert_eq!(layout, expected, "{method}");
            check_ranges(&rt, &access, &nar);
        }
        // A small object is read whole (and checked whole).
        let (cache, path, _dir, nar) = pushed(&rt, Compression::Zstd, &[("x", 3000)]);
        let access = rt.block_on(NarAccess::open(&cache, &path)).unwrap();
        check_ranges(&rt, &access, &nar);
        assert!(matches!(
            access.inner.layout.get(),
            Some(Layout::InMemory { .. })
        ));
    }

    /// Rewrites the narinfo of `path` with `change` applied.
    fn tamper(
        rt: &tokio::runtime::Runtime,
        cache: &BinaryCache,
        path: &StorePath,
        change: impl FnOnce(&mut NarInfo),
    ) -> NarInfo {
        let mut info = rt.block_on(cache.narinfo(path)).unwrap().unwrap();
        change(&mut info);
        rt.block_on(cache.put_narinfo(&info)).unwrap();
        info
    }

    #[test]
    fn sizes_that_disagree_with_the_narinfo_are_refused() {
        let rt = rt();
        let (cache, path, _dir, _) = pushed(&rt, Compression::Zstd, &[("a", 9 << 20)]);
        // NarSize larger than the seek table's total: the table is refused before any frame.
        let info = tamper(&rt, &cache, &path, |i| i.nar_size += 4096);
        let access = NarAccess::new(&cache, info.clone()).unwrap();
        let err = rt.block_on(access.read(0..10)).unwrap_err();
        assert!(
            matches!(
                err,
                AccessError::SizeMismatch {
                    field: "NarSize",
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains(&info.url), "{err}");

        // A FileSize smaller than the object: the object is longer than the narinfo says.
        let mut shorter = info.clone();
        shorter.nar_size -= 4096;
        shorter.file_size = shorter.file_size.map(|n| n - 1);
        let err = rt
            .block_on(NarAccess::new(&cache, shorter).unwrap().read(0..10))
            .unwrap_err();
        assert!(matches!(err, AccessError::TooLong { .. }), "{err}");

        // A FileSize larger than the object: it ends early.
        let mut longer = info;
        longer.nar_size -= 4096;
        longer.file_size = longer.file_size.map(|n| n + 1);
        let err = rt
            .block_on(NarAccess::new(&cache, longer).unwrap().read(0..10))
            .unwrap_err();
        assert!(
            matches!(
                err,
                AccessError::SizeMismatch {
                    field: "FileSize",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn a_small_object_is_checked_against_its_nar_hash() {
        let rt = rt();
        let (cache, path, _dir, _) = pushed(&rt, Compression::Zstd, &[("a", 100)]);
        let info = tamper(&rt, &cache, &path, |i| {
            i.nar_hash = crate::hash::Hash::digest(crate::hash::HashAlgo::Sha256, b"other")
        });
        let err = rt
            .block_on(NarAccess::new(&cache, info).unwrap().read(0..10))
            .unwrap_err();
        assert!(
            matches!(
                err,
                AccessError::HashMismatch {
                    field: "NarHash",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn a_damaged_frame_is_an_error_naming_it() {
        let rt = rt();
        let (cache, path, _dir, _) = pushed(&rt, Compression::Zstd, &[("a", 9 << 20)]);
        let info = rt.block_on(cache.narinfo(&path)).unwrap().unwrap();
        let mut object = rt
            .block_on(cache.objects().get_bytes(&info.url))
            .unwrap()
            .unwrap()
            .to_vec();
        // Flip a byte inside the second frame.
        let table = SeekTable::parse_from_tail(&object).unwrap();
        let at = table.frames()[1].compressed_offset as usize + 100;
        object[at] ^= 0x55;
        rt.block_on(cache.put_nar(&info.url, object.into()))
            .unwrap();
        let access = NarAccess::new(&cache, info).unwrap();
        // The first frame is intact and still reads.
        rt.block_on(access.read(0..1000)).unwrap();
        let second = table.frames()[1].decompressed_offset;
        let err = rt.block_on(access.read(second..second + 10)).unwrap_err();
        assert!(
            matches!(
                &err,
                AccessError::Seekable {
                    source: SeekableError::BadFrame { index: 1, .. }
                        | SeekableError::FrameLenMismatch { index: 1, .. },
                    ..
                }
            ),
            "{err}"
        );
    }

    /// Pushes a three-frame NAR signed by `key` into a fresh memory cache; the cache, the
    /// narinfo and the NAR.
    fn signed(
        rt: &tokio::runtime::Runtime,
        key: &std::sync::Arc<crate::signing::SecretKey>,
    ) -> (BinaryCache, NarInfo, Vec<u8>) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a"), text(3, 9 << 20)).unwrap();
        std::fs::write(dir.path().join("b"), b"small").unwrap();
        let opts = PushOptions {
            signers: vec![key.clone() as std::sync::Arc<dyn crate::signing::Signer>],
            ..PushOptions::default()
        };
        let (cache, path, nar) = push_tree(rt, dir.path(), &opts);
        let info = rt.block_on(cache.narinfo(&path)).unwrap().unwrap();
        (cache, info, nar)
    }

    fn key(name: &str) -> std::sync::Arc<crate::signing::SecretKey> {
        std::sync::Arc::new(crate::signing::SecretKey::generate(name).unwrap())
    }

    #[test]
    fn signed_frame_digests_check_every_frame_and_the_listing() {
        let rt = rt();
        let k = key("frames-1");
        let (cache, info, nar) = signed(&rt, &k);
        let claim = FramesClaim::trusted(&info, &[k.public_key()]).expect("a signed claim");
        // Real narinfo text: the fields are there for any reader, and parse back.
        let text = info.to_string();
        for field in [
            "FramesHash: sha256:",
            "ListingHash: sha256:",
            "FramesSig: frames-1:",
        ] {
            assert!(text.contains(field), "{text}");
        }
        let access = NarAccess::new(&cache, info.clone())
            .unwrap()
            .with_frame_cache(FrameCache::new(64 << 20))
            .frames_checked(&[k.public_key()]);
        assert!(access.checks_frames());
        check_ranges(&rt, &access, &nar);
        let digests = access.inner.digests.get().cloned().flatten().unwrap();
        assert_eq!(digests.frames().len(), 3);
        let listing = rt.block_on(access.signed_listing()).unwrap().unwrap();
        assert!(listing.get("a").is_some());
        // The listing that lies: another executable bit.
        let ls = rt
            .block_on(cache.listing_bytes(&info.store_path))
            .unwrap()
            .unwrap();
        let lying = String::from_utf8(ls.to_vec()).unwrap().replacen(
            "\"type\":\"regular\"",
            "\"type\":\"regular\",\"executable\":true",
            1,
        );
        rt.block_on(cache.put_listing_bytes(&info.store_path, lying.into()))
            .unwrap();
        let err = rt.block_on(access.signed_listing()).unwrap_err();
        assert!(matches!(err, AccessError::BadListing { .. }), "{err}");
        assert!(err.to_string().contains("ListingHash"), "{err}");
        // And one that is missing.
        rt.block_on(
            cache
                .objects()
                .delete(&crate::store::layout::listing(&info.store_path.hash_part())),
        )
        .unwrap();
        let err = rt.block_on(access.signed_listing()).unwrap_err();
        assert_eq!(err.kind(), crate::error::ErrorKind::Corrupt, "{err}");
        assert!(err.to_string().contains("missing"), "{err}");
        assert!(claim.listing.is_some());
    }

    #[test]
    fn a_flipped_byte_in_a_frame_is_refused_before_it_is_decoded() {
        let rt = rt();
        let k = key("frames-1");
        let (cache, info, nar) = signed(&rt, &k);
        let mut object = rt
            .block_on(cache.objects().get_bytes(&info.url))
            .unwrap()
            .unwrap()
            .to_vec();
        let table = SeekTable::parse_from_tail(&object).unwrap();
        let second = table.frames()[1];
        object[second.compressed_offset as usize + 100] ^= 0x55;
        rt.block_on(cache.put_nar(&info.url, object.into()))
            .unwrap();
        let access = NarAccess::new(&cache, info)
            .unwrap()
            .frames_checked(&[k.public_key()]);
        // The first frame is intact and still reads.
        assert_eq!(rt.block_on(access.read(0..1000)).unwrap(), &nar[..1000]);
        let d = second.decompressed_offset;
        let err = rt.block_on(access.read(d..d + 10)).unwrap_err();
        assert!(
            matches!(err, AccessError::FrameMismatch { index: 1, .. }),
            "{err}"
        );
        assert_eq!(err.kind(), crate::error::ErrorKind::Corrupt);
    }

    #[test]
    fn frame_digests_that_lie_are_too_long_missing_or_signed_by_another_key() {
        let rt = rt();
        let k = key("frames-1");
        let (cache, info, nar) = signed(&rt, &k);
        let claim = FramesClaim::of(&info).unwrap();
        let frames_key = crate::store::layout::frame_digests(&claim.frames);
        let good = rt
            .block_on(cache.objects().get_bytes(&frames_key))
            .unwrap()
            .unwrap();
        let put = |bytes: Vec<u8>| {
            rt.block_on(cache.objects().put(
                &frames_key,
                bytes.into(),
                crate::store::objects::WriteMode::Overwrite,
            ))
            .unwrap();
        };
        let fresh = || {
            NarAccess::new(&cache, info.clone())
                .unwrap()
                .frames_checked(&[k.public_key()])
        };
        // Digests that lie (another frame's digest): they do not hash to the signed FramesHash.
        let mut lying = good.to_vec();
        let last = lying.len() - 1;
        lying[last] ^= 1;
        put(lying);
        let err = rt.block_on(fresh().read(0..10)).unwrap_err();
        assert!(matches!(err, AccessError::BadFrameDigests { .. }), "{err}");
        assert!(err.to_string().contains("FramesHash"), "{err}");
        // Too long: refused without reading past what the seek table allows.
        let mut long = good.to_vec();
        long.extend_from_slice(&[0u8; 40]);
        put(long);
        let err = rt.block_on(fresh().read(0..10)).unwrap_err();
        assert!(matches!(err, AccessError::BadFrameDigests { .. }), "{err}");
        // Missing: the NAR is read whole, checked against its NarHash.
        rt.block_on(cache.objects().delete(&frames_key)).unwrap();
        let whole = fresh();
        assert_eq!(rt.block_on(whole.read(5..5000)).unwrap(), &nar[5..5000]);
        assert!(whole.inner.kept.get().is_some(), "not read whole");
        put(good.to_vec());
        // Signed by another key only: not trusted, the NAR is read whole.
        let other = key("other-1");
        let mut forged = info.clone();
        forged
            .extra
            .retain(|(k, _)| k != frame_digests::FRAMES_SIG_FIELD);
        claim.write(&mut forged, &[other.as_ref()]);
        let access = NarAccess::new(&cache, forged)
            .unwrap()
            .frames_checked(&[k.public_key()]);
        assert!(!access.checks_frames());
        assert_eq!(rt.block_on(access.read(5..5000)).unwrap(), &nar[5..5000]);
        assert!(access.inner.kept.get().is_some(), "not read whole");
        // A signature over another NAR (the claim moved to another path's narinfo) is void too.
        let mut moved = info.clone();
        moved.nar_hash = crate::hash::Hash::digest(crate::hash::HashAlgo::Sha256, b"other");
        assert!(FramesClaim::trusted(&moved, &[k.public_key()]).is_none());
    }
}
