//! One file of a store path, read out of a cache without fetching its whole NAR: narinfo →
//! listing (the `.ls`, or the NAR read once when there is none) → `narOffset` → a ranged read
//! ([`crate::access`], which says what such a read checks and what it cannot).

use std::io::Write;
use std::ops::Range;

use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt as _, TryStreamExt as _};

use super::browse::{listing_from, listing_from_nar, narinfo};
use super::{join_error, OpError};
use crate::access::{AccessError, NarAccess};
use crate::nar::{Listing, ListingNode};
use crate::store::BinaryCache;
use crate::store_path::StorePath;

/// The bytes that precede a regular file's contents in a NAR: the string `contents` (its
/// length, 8, then the 8 bytes) and the file's size, each a little-endian u64.
const CONTENTS_HEADER: u64 = 24;

/// A regular file inside a NAR in a cache, ready for ranged reads. Cheap to clone.
#[derive(Debug, Clone)]
pub struct NarFile {
    access: NarAccess,
    /// `/nix/store/<hash>-<name>/<sub>`, for messages.
    name: String,
    /// NAR offset of the first content byte.
    offset: u64,
    size: u64,
    executable: bool,
    /// Set once the NAR was seen to hold this file's `contents` header at the listed offset.
    header_checked: std::sync::Arc<tokio::sync::OnceCell<()>>,
}

/// Opens the regular file `sub` ("bin/app") of `path` in `cache`: reads the narinfo and the
/// listing, no NAR bytes (unless the cache has no listing with offsets: then the NAR is read
/// once, whole and verified, to build one). Symlinks are not followed.
///
/// ```
/// # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
/// use std::sync::Arc;
/// use cachecore::ops::{self, NoProgress, PushOptions};
/// use cachecore::store::BinaryCache;
/// use cachecore::store_path::StoreDir;
/// let dir = tempfile::tempdir().unwrap();
/// std::fs::create_dir(dir.path().join("bin")).unwrap();
/// std::fs::write(dir.path().join("bin/hello"), "hello, world\n").unwrap();
/// let cache = BinaryCache::open("memory://").unwrap();
/// let (path, _) = ops::push_add(&cache, &StoreDir::default(), dir.path(), "hello",
///     &PushOptions::default(), Arc::new(NoProgress)).await.unwrap();
/// let file = ops::open_file(&cache, &path, "bin/hello").await.unwrap();
/// assert_eq!(file.size(), 13);
/// assert_eq!(&file.read(7..12).await.unwrap()[..], b"world");
/// # });
/// ```
pub async fn open_file(
    cache: &BinaryCache,
    path: &StorePath,
    sub: &str,
) -> Result<NarFile, OpError> {
    let info = narinfo(cache, path).await?;
    let access = NarAccess::new(cache, info.clone())?;
    // The listing and what random access into the NAR needs (its seek table) both follow from
    // the narinfo alone: fetched at once, one round trip instead of two. A failure to prepare
    // the NAR is met again, and reported, by the first read.
    let (listing_bytes, _) = tokio::join!(cache.listing_bytes(&info.store_path), access.prepare());
    // The one node asked for, read out of the stored listing without building the rest (a
    // listing of thousands of files takes longer to parse whole than the rest of a read).
    // Anything else — no listing, no such file, a damaged listing — takes the whole listing,
    // which says why.
    let listing_bytes = listing_bytes?;
    if let Some(bytes) = &listing_bytes {
        if let Ok(Some(
            node @ ListingNode::Regular {
                nar_offset: Some(_),
                ..
            },
        )) = Listing::parse_node(&bytes, sub)
        {
            return open_in(cache, access, listing_of_one(sub, node), sub).await;
        }
    }
    // The bytes already read, not fetched again.
    let listing = listing_from(cache, &info, listing_bytes.as_deref()).await?;
    open_in(cache, access, listing, sub).await
}

/// A listing holding only `node` at `sub` (and the directories on the way).
fn listing_of_one(sub: &str, node: ListingNode) -> Listing {
    let root = sub
        .split('/')
        .filter(|c| !c.is_empty())
        .rev()
        .fold(node, |child, name| ListingNode::Directory {
            entries: [(name.to_owned(), child)].into_iter().collect(),
        });
    Listing { root }
}

/// [`open_file`] for a narinfo and a listing already read (the server's `/serve/` route reads
/// them to tell a file from a directory first).
#[cfg(feature = "server")]
pub(crate) async fn open_listed(
    cache: &BinaryCache,
    info: crate::narinfo::NarInfo,
    listing: Listing,
    sub: &str,
    nar_cache: Option<crate::access::NarCache>,
) -> Result<NarFile, OpError> {
    let access = NarAccess::new(cache, info)?;
    let access = match nar_cache {
        Some(kept) => access.with_nar_cache(kept),
        None => access,
    };
    open_in(cache, access, listing, sub).await
}

/// The regular file `sub` of the NAR `access` reads, from its listing node already in hand
/// (a FUSE mount keeps the listing of a path and opens many of its files): no I/O. The node
/// is the listing's word, checked by the first read like [`open_file`]'s (the NAR must hold
/// a `contents` field of `size` bytes at `narOffset`). A node that is not a regular file with
/// a `narOffset` is refused.
///
/// ```
/// # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
/// # use std::sync::Arc;
/// # use cachecore::{ops::{NoProgress, PushOptions}, store_path::StoreDir};
/// use cachecore::{access::NarAccess, ops, store::BinaryCache};
/// # let src = tempfile::tempdir().unwrap();
/// # std::fs::write(src.path().join("hello"), "hello, world\n").unwrap();
/// let cache = BinaryCache::open("memory://").unwrap();
/// # let (path, _) = ops::push_add(&cache, &StoreDir::default(), src.path(), "hello",
/// #     &PushOptions::default(), Arc::new(NoProgress)).await.unwrap();
/// let listing = ops::listing(&cache, &path).await.unwrap();
/// let nar = NarAccess::open(&cache, &path).await.unwrap();
/// let node = listing.get("hello").unwrap();
/// let file = ops::file_in(nar.clone(), "hello", node).unwrap();
/// assert_eq!(&file.read(0..5).await.unwrap()[..], b"hello");
/// assert!(ops::file_in(nar, "", &listing.root).is_err()); // a directory
/// # });
/// ```
pub fn file_in(access: NarAccess, sub: &str, node: &ListingNode) -> Result<NarFile, OpError> {
    let info = access.info();
    let name = format!(
        "{}/{}",
        info.store_dir.full_path(&info.store_path),
        sub.trim_start_matches('/')
    );
    match node {
        ListingNode::Regular {
            size,
            executable,
            nar_offset: Some(offset),
        } => Ok(NarFile {
            access,
            name,
            offset: *offset,
            size: *size,
            executable: *executable,
            header_checked: Default::default(),
        }),
        ListingNode::Regular { size, .. } => Err(AccessError::ListingMismatch {
            path: name,
            offset: 0,
            size: *size,
        }
        .into()),
        ListingNode::Directory { .. } => Err(OpError::NotAFile {
            path: name,
            kind: "a directory",
        }),
        ListingNode::Symlink { .. } => Err(OpError::NotAFile {
            path: name,
            kind: "a symlink",
        }),
    }
}

/// [`open_listed`] for random access already set up.
async fn open_in(
    cache: &BinaryCache,
    access: NarAccess,
    mut listing: Listing,
    sub: &str,
) -> Result<NarFile, OpError> {
    let mut from_nar = false;
    loop {
        let node = listing.get(sub).ok_or_else(|| OpError::NoSuchFile {
            path: format!(
                "{}/{}",
                access.info().store_dir.full_path(&access.info().store_path),
                sub.trim_start_matches('/')
            ),
        })?;
        if let ListingNode::Regular {
            nar_offset: None, ..
        } = node
        {
            if !from_nar {
                // A listing without offsets (Nix before 2.0 wrote none): read them from the NAR.
                // (A listing read from a NAR has every offset: `file_in` refuses one without.)
                listing = listing_from_nar(cache, access.info()).await?;
                from_nar = true;
                continue;
            }
        }
        return file_in(access, sub, node);
    }
}

impl NarFile {
    /// The file's length in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Whether the file is executable.
    pub fn executable(&self) -> bool {
        self.executable
    }

    /// Random access into the NAR holding the file.
    pub fn nar(&self) -> &NarAccess {
        &self.access
    }

    fn bad_listing(&self) -> AccessError {
        AccessError::ListingMismatch {
            path: self.name.clone(),
            offset: self.offset,
            size: self.size,
        }
    }

    fn check_header(&self, header: &[u8]) -> Result<(), AccessError> {
        let mut expected = Vec::with_capacity(CONTENTS_HEADER as usize);
        expected.extend_from_slice(&8u64.to_le_bytes());
        expected.extend_from_slice(b"contents");
        expected.extend_from_slice(&self.size.to_le_bytes());
        if header == expected.as_slice() {
            Ok(())
        } else {
            Err(self.bad_listing())
        }
    }

    /// The NAR range of the contents header and the contents.
    fn nar_range(&self) -> Result<Range<u64>, AccessError> {
        let start = self
            .offset
            .checked_sub(CONTENTS_HEADER)
            .ok_or_else(|| self.bad_listing())?;
        let end = self
            .offset
            .checked_add(self.size)
            .ok_or_else(|| self.bad_listing())?;
        Ok(start..end)
    }

    /// Checks once that the NAR holds this file's `contents` header at the listed offset.
    async fn header(&self) -> Result<(), AccessError> {
        self.header_checked
            .get_or_try_init(|| async {
                let range = self.nar_range()?;
                let header = self
                    .access
                    .read(range.start..range.start + CONTENTS_HEADER)
                    .await?;
                self.check_header(&header)
            })
            .await
            .map(|_| ())
    }

    /// The whole file when it and its contents header are in memory now
    /// ([`NarAccess::held`]): no I/O, no wait. `None` when they are not, when the file is
    /// empty, or when the header is not where the listing says (a read reports that).
    pub fn held(&self) -> Option<Bytes> {
        let range = self.nar_range().ok()?;
        if self.size == 0 {
            return None;
        }
        let bytes = self.access.held(range)?;
        let (header, contents) = bytes.split_at(CONTENTS_HEADER as usize);
        self.check_header(header).ok()?;
        Some(bytes.slice(header.len()..header.len() + contents.len()))
    }

    /// The bytes `range` of the file (in memory: keep ranges to what a caller would buffer).
    pub async fn read(&self, range: Range<u64>) -> Result<Bytes, AccessError> {
        if range.start > range.end || range.end > self.size {
            return Err(AccessError::OutOfBounds {
                path: self.name.clone(),
                start: range.start,
                end: range.end,
                nar_size: self.size,
            });
        }
        self.header().await?;
        self.access
            .read(self.offset + range.start..self.offset + range.end)
            .await
    }

    /// The whole file as a stream of chunks (memory bounded by constants, whatever its size).
    /// The contents header is read in the same request as the first bytes.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
    /// # use std::sync::Arc;
    /// # use cachecore::{ops::{NoProgress, PushOptions}, store_path::StoreDir};
    /// use cachecore::{ops, store::BinaryCache};
    /// use futures::TryStreamExt;
    /// # let src = tempfile::tempdir().unwrap();
    /// # std::fs::write(src.path().join("data"), vec![7u8; 100_000]).unwrap();
    /// let cache = BinaryCache::open("memory://").unwrap();
    /// # let (path, _) = ops::push_add(&cache, &StoreDir::default(), src.path(), "data",
    /// #     &PushOptions::default(), Arc::new(NoProgress)).await.unwrap();
    /// let file = ops::open_file(&cache, &path, "data").await.unwrap();
    /// let chunks: Vec<bytes::Bytes> = file.stream().try_collect().await.unwrap();
    /// assert_eq!(chunks.concat(), vec![7u8; 100_000]);
    /// assert!(!file.executable());
    /// # });
    /// ```
    pub fn stream(&self) -> BoxStream<'static, Result<Bytes, AccessError>> {
        self.stream_from(0)
    }

    /// The file from byte `start` to its end, as a stream of chunks (see
    /// [`stream`](Self::stream)); past the start, the contents header is checked by its own
    /// read first (once per file).
    ///
    /// ```
    /// # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
    /// # use std::sync::Arc;
    /// # use cachecore::{ops::{NoProgress, PushOptions}, store_path::StoreDir};
    /// use cachecore::{ops, store::BinaryCache};
    /// use futures::TryStreamExt;
    /// # let src = tempfile::tempdir().unwrap();
    /// # std::fs::write(src.path().join("data"), b"0123456789").unwrap();
    /// let cache = BinaryCache::open("memory://").unwrap();
    /// # let (path, _) = ops::push_add(&cache, &StoreDir::default(), src.path(), "data",
    /// #     &PushOptions::default(), Arc::new(NoProgress)).await.unwrap();
    /// let file = ops::open_file(&cache, &path, "data").await.unwrap();
    /// let chunks: Vec<bytes::Bytes> = file.stream_from(7).try_collect().await.unwrap();
    /// assert_eq!(chunks.concat(), b"789");
    /// assert!(file.stream_from(10).try_collect::<Vec<_>>().await.unwrap().is_empty());
    /// assert!(file.stream_from(11).try_collect::<Vec<_>>().await.is_err());
    /// # });
    /// ```
    pub fn stream_from(&self, start: u64) -> BoxStream<'static, Result<Bytes, AccessError>> {
        if start > 0 {
            let this = self.clone();
            let read = async move {
                if start > this.size {
                    return Err(AccessError::OutOfBounds {
                        path: this.name.clone(),
                        start,
                        end: this.size,
                        nar_size: this.size,
                    });
                }
                this.header().await?;
                Ok(this
                    .access
                    .stream(this.offset + start..this.offset + this.size))
            };
            return futures::stream::once(read).try_flatten().boxed();
        }
        let range = match self.nar_range() {
            Ok(r) => r,
            Err(e) => return futures::stream::once(async move { Err(e) }).boxed(),
        };
        let this = self.clone();
        let mut header: Vec<u8> = Vec::with_capacity(CONTENTS_HEADER as usize);
        self.access
            .stream(range)
            .map(move |item| {
                let mut chunk = item?;
                let missing = CONTENTS_HEADER as usize - header.len();
                if missing > 0 {
                    let n = missing.min(chunk.len());
                    header.extend_from_slice(&chunk[..n]);
                    chunk = chunk.slice(n..);
                    if header.len() == CONTENTS_HEADER as usize {
                        this.check_header(&header)?;
                    }
                }
                Ok(chunk)
            })
            .try_filter(|chunk| futures::future::ready(!chunk.is_empty()))
            .boxed()
    }
}

/// Writes the regular file `sub` of `path` to `out` by ranged reads (see [`open_file`]; what is
/// checked is in [`crate::access`]). [`super::cat`] instead reads and verifies the whole NAR.
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
/// ops::cat_file(&cache, &path, "bin/hello", out.reopen().unwrap()).await.unwrap();
/// assert_eq!(std::fs::read_to_string(out.path()).unwrap(), "hello, world\n");
/// let e = ops::cat_file(&cache, &path, "bin/nope", std::io::sink()).await.unwrap_err();
/// assert!(matches!(e, ops::OpError::NoSuchFile { .. }));
/// # });
/// ```
pub async fn cat_file(
    cache: &BinaryCache,
    path: &StorePath,
    sub: &str,
    out: impl Write + Send + 'static,
) -> Result<(), OpError> {
    let file = open_file(cache, path, sub).await?;
    write_file(file, out).await
}

/// [`cat_file`] for a narinfo already checked against `trusted_keys` by the caller, serving
/// nothing unchecked: when the narinfo carries frame digests and a listing hash signed by one
/// of the keys, only the frames holding the file are fetched, each checked against its signed
/// digest, and the file is found in the listing checked against its signed hash
/// ([`NarAccess::frames_checked`]); otherwise the whole NAR is read and checked against its
/// `NarHash` ([`super::browse::cat_checked`]).
///
/// ```
/// # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
/// # use std::sync::Arc;
/// use cachecore::ops::{self, NoProgress, PushOptions};
/// use cachecore::{signing::SecretKey, store::BinaryCache, store_path::StoreDir};
/// let dir = tempfile::tempdir().unwrap();
/// std::fs::write(dir.path().join("hello"), "hello, world\n").unwrap();
/// let key = Arc::new(SecretKey::generate("cache.example.org-1").unwrap());
/// let cache = BinaryCache::open("memory://").unwrap();
/// let opts = PushOptions { signers: vec![key.clone()], ..PushOptions::default() };
/// let (path, _) = ops::push_add(&cache, &StoreDir::default(), dir.path(), "hello",
///     &opts, Arc::new(NoProgress)).await.unwrap();
/// let info = cache.narinfo(&path).await.unwrap().unwrap();
/// let out = tempfile::NamedTempFile::new().unwrap();
/// ops::cat_signed(&cache, &info, "hello", &[key.public_key()], out.reopen().unwrap()).await.unwrap();
/// assert_eq!(std::fs::read_to_string(out.path()).unwrap(), "hello, world\n");
/// # });
/// ```
pub async fn cat_signed(
    cache: &BinaryCache,
    info: &crate::narinfo::NarInfo,
    sub: &str,
    trusted_keys: &[crate::signing::PublicKey],
    out: impl Write + Send + 'static,
) -> Result<(), OpError> {
    let access = NarAccess::new(cache, info.clone())?.frames_checked(trusted_keys);
    let listing = match access.signed_listing().await? {
        Some(listing) => listing,
        None => return super::browse::cat_checked(cache, info, sub, out).await,
    };
    let node = listing.get(sub).ok_or_else(|| OpError::NoSuchFile {
        path: format!(
            "{}/{}",
            info.store_dir.full_path(&info.store_path),
            sub.trim_start_matches('/')
        ),
    })?;
    write_file(file_in(access, sub, node)?, out).await
}

/// Streams `file` into `out` (on a blocking thread).
async fn write_file(file: NarFile, out: impl Write + Send + 'static) -> Result<(), OpError> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(4);
    let writer = tokio::task::spawn_blocking(move || {
        let mut out = out;
        while let Some(chunk) = rx.blocking_recv() {
            out.write_all(&chunk)?;
        }
        out.flush()
    });
    let mut chunks = file.stream();
    let mut read = Ok(());
    while let Some(item) = chunks.next().await {
        match item {
            Ok(chunk) => {
                if tx.send(chunk).await.is_err() {
                    break; // the writer failed; its error is reported below
                }
            }
            Err(e) => {
                read = Err(e);
                break;
            }
        }
    }
    drop(tx);
    let written = writer.await.map_err(join_error)?;
    read?;
    written.map_err(|e| OpError::io("cannot write the output", e))
}
