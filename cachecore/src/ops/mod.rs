//! Operations on binary caches: [`push()`] a local closure, [`copy()`] between caches, [`pull()`] a path
//! out of a cache, [`verify()`] a cache, and read one ([`browse`]).
//!
//! Every operation keeps the cache's invariant: a narinfo is written only after its NAR and after
//! the narinfos of all its references, so at every moment — and after a kill at any point — every
//! visible narinfo has its NAR and its whole closure. NARs are staged under a temporary key and
//! renamed into place, so a killed upload leaves no object a narinfo could name.

pub mod browse;
pub mod copy;
pub mod file;
pub(crate) mod pipe;
pub mod pull;
pub mod push;
pub mod sign;
pub mod verify;

use std::io;

use crate::local_store::LocalStoreError;
use crate::nar;
use crate::store::StoreError;

pub use browse::{
    cat, cat_checked, info, list_paths, listing, listing_verified, path_pages, CacheTotals,
};
pub use copy::{copy, CopyOptions, CopySummary};
pub use file::{cat_file, cat_signed, file_in, open_file, NarFile};
pub use pull::{check_trusted, pull, PullOptions};
pub use push::{push, push_add, PushOptions, PushSummary};
pub use sign::{sign, signed_by, SignPaths, SignSummary};
pub use verify::{verify, Problem, VerifyOptions, VerifyReport};

/// A tokio runtime for frontends to run these operations on (the library starts none itself).
pub fn runtime() -> io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
}

/// What an operation reports as it goes; every method has an empty default.
pub trait Progress: Send + Sync {
    /// The work is known: `paths` to transfer, `bytes` of NAR in total, `skipped` already there.
    fn planned(&self, _paths: usize, _bytes: u64, _skipped: usize) {}
    /// `bytes` more NAR bytes were processed.
    fn bytes(&self, _bytes: u64) {}
    /// A path is complete (its narinfo is visible).
    fn path_done(&self, _path: &str) {}
    /// A line of information for the user.
    fn message(&self, _text: &str) {}
}

/// Progress that reports nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;
impl Progress for NoProgress {}

/// Why an operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Local(#[from] LocalStoreError),
    #[error("cannot pack {path}: {source}")]
    Pack {
        path: String,
        source: nar::PackError,
    },
    #[error(
        "{path}: the NAR read from disk hashes to {computed} ({computed_size} bytes) but the local \
         Nix database says {expected} ({expected_size} bytes); the local store looks corrupt, so \
         nothing was published for this path (try `nix-store --verify --check-contents`)"
    )]
    LocalHashMismatch {
        path: String,
        expected: String,
        expected_size: u64,
        computed: String,
        computed_size: u64,
    },
    /// A NAR object does not match its narinfo, or cannot be checked against it.
    #[error(transparent)]
    Integrity(#[from] crate::store::IntegrityError),
    /// Sizes added up past what a `u64` holds (only hostile narinfos can get there: each size
    /// is at most [`MAX_SIZE`](crate::narinfo::MAX_SIZE)).
    #[error("the {what} of {url} add up to more than 2^64 bytes")]
    SizeOverflow { what: &'static str, url: String },
    #[error("{path} is not in {url}")]
    NotInCache { path: String, url: String },
    /// A `cachecore serve`'s list of its store paths has a line that is not `PATH NARSIZE
    /// FILESIZE`.
    #[error("{url}/cachecore-paths, line {line}: {text:?} is not a store path and two sizes")]
    ServedListing {
        url: String,
        line: usize,
        text: String,
    },
    #[error("{url} is not a binary cache: it has no nix-cache-info (is the directory, bucket or prefix right? `cachecore init` creates one)")]
    NotACache { url: String },
    #[error("{path}: none of its signatures ({found}) is by a trusted key ({trusted})")]
    Untrusted {
        path: String,
        found: String,
        trusted: String,
    },
    #[error("{path}: reference {reference} is not in {url}; push it too (leave out --no-closure)")]
    MissingReference {
        path: String,
        reference: String,
        url: String,
    },
    #[error("{path}: {source}")]
    Nar {
        path: String,
        source: nar::ReadError,
    },
    #[error("cannot unpack {path}: {source}")]
    Unpack {
        path: String,
        source: nar::UnpackError,
    },
    #[error(
        "cannot use the secret key file {path} named by secret-key= in the store URL: {reason}"
    )]
    SecretKeyFile { path: String, reason: String },
    #[error("{context}: {source}")]
    Io { context: String, source: io::Error },
    /// A ranged read of a NAR failed ([`crate::access`]).
    #[error(transparent)]
    Access(#[from] crate::access::AccessError),
    /// A file asked for is not in the store path.
    #[error("{path} does not exist in the cache's NAR")]
    NoSuchFile { path: String },
    /// A file asked for is a directory or a symlink.
    #[error("{path} is {kind}, not a regular file")]
    NotAFile { path: String, kind: &'static str },
    #[error("{0}")]
    Compression(#[from] crate::compression::Error),
    /// A narinfo names a NAR object the cache does not have.
    #[error("{path}: its NAR {url} is missing from {cache}")]
    MissingNar {
        path: String,
        url: String,
        cache: String,
    },
    /// The NAR object could not be read to its end (decompression failed, the stream broke).
    #[error("{path}: cannot read its NAR {url}: {source}")]
    ReadNar {
        path: String,
        url: String,
        source: io::Error,
    },
    /// A file could not be taken out of a NAR (not there, a directory, a symlink).
    #[error("{path}: {source}")]
    Extract {
        path: String,
        source: nar::ExtractError,
    },
    /// A narinfo cannot be signed.
    #[error("cannot sign: {0}")]
    Sign(#[from] crate::narinfo::FingerprintError),
    /// A name that no store path may have.
    #[error("cannot name {source_path} {name:?}: {source}")]
    InvalidName {
        source_path: String,
        name: String,
        source: crate::store_path::ParseError,
    },
    /// The destination of a pull exists already.
    #[error("{} already exists; pull never replaces anything", path.display())]
    DestinationExists { path: std::path::PathBuf },
    /// A destination that is not a path with a file name.
    #[error("{} has no file name", path.display())]
    InvalidDestination { path: std::path::PathBuf },
    /// A background task was cancelled or failed to run.
    #[error("a background task was cancelled: {detail}")]
    Cancelled { detail: String },
    /// A closure walk or a publication failed: a path missing from the cache, a reference
    /// cycle ([`crate::graph::Cycle`]), a narinfo that could never be published.
    #[error(transparent)]
    Graph(crate::graph::GraphError),
}

impl OpError {
    /// What kind of failure this is. For [`OpError::Store`] and [`OpError::Local`], the inner
    /// error's kind.
    ///
    /// ```
    /// use cachecore::{error::ErrorKind, ops::OpError};
    /// let e = OpError::NotInCache { path: "/nix/store/…-x".into(), url: "memory://".into() };
    /// assert_eq!(e.kind(), ErrorKind::NotFound);
    /// ```
    pub fn kind(&self) -> crate::error::ErrorKind {
        use crate::error::ErrorKind as K;
        match self {
            OpError::Store(e) => e.kind(),
            OpError::Local(e) => e.kind(),
            OpError::Pack { source, .. } => source.kind(),
            OpError::LocalHashMismatch { .. } => K::Local,
            OpError::MissingNar { .. } => K::Corrupt,
            OpError::Integrity(e) => e.kind(),
            OpError::SizeOverflow { .. } => K::Corrupt,
            OpError::Nar { source, .. } => nar_kind(source),
            OpError::ReadNar { source, .. } => io_kind(source, K::Corrupt),
            OpError::NotInCache { .. } => K::NotFound,
            OpError::NotACache { .. } => K::NotFound,
            OpError::ServedListing { .. } => K::Corrupt,
            OpError::SecretKeyFile { .. } => K::InvalidInput,
            OpError::Untrusted { .. } => K::Untrusted,
            OpError::MissingReference { .. } => K::Corrupt,
            // A NAR read from a cache that does not parse: the cache is bad.
            OpError::Unpack {
                source: nar::UnpackError::Nar(e),
                ..
            }
            | OpError::Extract {
                source: nar::ExtractError::Nar(e),
                ..
            } => nar_kind(e),
            OpError::Unpack { source, .. } => source.kind(),
            OpError::Extract { source, .. } => source.kind(),
            OpError::Io { source, .. } => io_kind(source, K::Local),
            OpError::Compression(_) => K::InvalidInput,
            OpError::Sign(_) => K::InvalidInput,
            OpError::InvalidName { .. } | OpError::InvalidDestination { .. } => K::InvalidInput,
            OpError::DestinationExists { .. } => K::Conflict,
            OpError::Cancelled { .. } => K::Internal,
            OpError::Graph(e) => e.kind(),
            OpError::Access(e) => e.kind(),
            OpError::NoSuchFile { .. } => K::NotFound,
            OpError::NotAFile { .. } => K::InvalidInput,
        }
    }
}

/// The kind of an I/O error that may carry a store error (a stream from the cache failing
/// under a reader): the store error's kind if it does, else `fallback`
/// ([`Corrupt`](crate::error::ErrorKind::Corrupt) where the bytes came from a cache, so a
/// decompressor's error is the cache's fault).
fn io_kind(e: &io::Error, fallback: crate::error::ErrorKind) -> crate::error::ErrorKind {
    match e.get_ref().and_then(|i| i.downcast_ref::<StoreError>()) {
        Some(inner) => inner.kind(),
        None => fallback,
    }
}

/// The kind of a NAR read from a cache that failed: the store's failure when reading broke,
/// else the cache is bad.
fn nar_kind(e: &nar::ReadError) -> crate::error::ErrorKind {
    match &e.kind {
        nar::ReadErrorKind::Io(io) => io_kind(io, crate::error::ErrorKind::Corrupt),
        _ => crate::error::ErrorKind::Corrupt,
    }
}

impl From<crate::graph::GraphError> for OpError {
    fn from(e: crate::graph::GraphError) -> Self {
        match e {
            crate::graph::GraphError::Store(e) => OpError::Store(e),
            e => OpError::Graph(e),
        }
    }
}

impl From<crate::graph::Cycle> for OpError {
    fn from(e: crate::graph::Cycle) -> Self {
        OpError::Graph(e.into())
    }
}

impl OpError {
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        OpError::Io {
            context: context.into(),
            source,
        }
    }
}

/// The outcome of uploading a stream to `staging` while producing it: the producer's value when
/// both succeeded; otherwise the staging object is deleted and the error returned — the
/// producer's first, as it explains an aborted upload better than the upload's own error.
pub(crate) async fn staged<T>(
    cache: &crate::store::BinaryCache,
    staging: &crate::store::StagedNar,
    uploaded: Result<u64, StoreError>,
    produced: Result<T, OpError>,
) -> Result<T, OpError> {
    let error = match (uploaded, produced) {
        (Ok(_), Ok(value)) => return Ok(value),
        (_, Err(e)) => e,
        (Err(e), Ok(_)) => e.into(),
    };
    let _ = cache.discard_staged_nar(staging).await;
    Err(error)
}

/// Fails with [`OpError::NotACache`] when `cache` has no `nix-cache-info`: a mistyped
/// directory, bucket or prefix, which would otherwise read as an empty cache.
/// [`StoreError::ReadOnly`] before any work, for an operation that writes to `cache`.
pub(crate) fn require_writable(cache: &crate::store::BinaryCache) -> Result<(), OpError> {
    if cache.is_read_only() {
        return Err(cache
            .objects()
            .read_only_error("NARs and narinfos into it")
            .into());
    }
    Ok(())
}

/// Fails with [`OpError::NotACache`] when `cache` has no `nix-cache-info` (see above).
pub async fn require_cache_info(cache: &crate::store::BinaryCache) -> Result<(), OpError> {
    match cache.cache_info().await? {
        Some(_) => Ok(()),
        None if cache.objects().is_http() => Err(StoreError::NoCacheInfo {
            url: cache.url().to_owned(),
        }
        .into()),
        None => Err(OpError::NotACache {
            url: cache.url().to_owned(),
        }),
    }
}

/// A background task panicked or was cancelled: surface it as an error, not a hang.
pub(crate) fn join_error(e: tokio::task::JoinError) -> OpError {
    if e.is_panic() {
        std::panic::resume_unwind(e.into_panic());
    }
    OpError::Cancelled {
        detail: e.to_string(),
    }
}
