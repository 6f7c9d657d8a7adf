//! Operations on binary caches: [`push()`] a local closure, [`copy()`] between caches, [`pull()`] a path
//! out of a cache, [`verify()`] a cache, and read one ([`browse`]).
//!
//! Every operation keeps the cache's invariant: a narinfo is written only after its NAR and after
//! the narinfos of all its references, so at every moment — and after a kill at any point — every
//! visible narinfo has its NAR and its whole closure. NARs are staged under a temporary key and
//! renamed into place, so a killed upload leaves no object a narinfo could name.

pub mod browse;
pub mod copy;
pub(crate) mod pipe;
pub mod pull;
pub mod push;
pub mod verify;

use std::collections::{HashMap, HashSet};
use std::io;

use crate::local_store::LocalStoreError;
use crate::nar;
use crate::narinfo::NarInfo;
use crate::store::StoreError;
use crate::store_path::StorePath;

pub use browse::{cat, cat_checked, info, list_paths, listing, listing_verified, CacheTotals};
pub use copy::{copy, CopyOptions, CopySummary};
pub use pull::{check_trusted, pull, PullOptions};
pub use push::{push, push_add, PushOptions, PushSummary};
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
    #[error("cannot use the secret key file {path} named by secret-key= in the store URL: {reason}")]
    SecretKeyFile { path: String, reason: String },
    #[error("{context}: {source}")]
    Io { context: String, source: io::Error },
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
    /// A narinfo was never published because a reference of it never became visible (a
    /// broken closure from the source; cannot happen with a consistent one).
    #[error("{path} was not published: a reference of it never became visible")]
    Unpublished { path: String },
    /// A background task was cancelled or failed to run.
    #[error("a background task was cancelled: {detail}")]
    Cancelled { detail: String },
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
            OpError::Unpublished { .. } => K::Corrupt,
            OpError::Cancelled { .. } => K::Internal,
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
pub(crate) async fn require_cache_info(cache: &crate::store::BinaryCache) -> Result<(), OpError> {
    match cache.cache_info().await? {
        Some(_) => Ok(()),
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

/// Decides when narinfos may become visible: a narinfo is written only once the narinfo of
/// every reference of it that is part of the same transfer has been written. Shared by push and
/// copy through [`publish_as_ready`].
///
/// Each path counts the references it still waits for; a completed write counts down its
/// referrers, so a transfer of n paths with e references costs O(n + e) whatever the order in
/// which their data arrives, and independent narinfos can be written concurrently.
#[derive(Debug)]
pub(crate) struct Publisher {
    /// For each path of the transfer not yet written, how many of its references are not.
    pending: HashMap<StorePath, usize>,
    /// For each path of the transfer, the paths of the transfer that refer to it.
    referrers: HashMap<StorePath, Vec<StorePath>>,
    /// Narinfos whose data is in place but which still wait for references.
    waiting: HashMap<StorePath, NarInfo>,
}

impl Publisher {
    /// `transfer` maps each path being transferred to its references; references outside the
    /// transfer are already visible.
    pub(crate) fn new<'a>(
        transfer: impl IntoIterator<Item = (&'a StorePath, &'a [StorePath])>,
    ) -> Self {
        let transfer: Vec<_> = transfer.into_iter().collect();
        let members: HashSet<&StorePath> = transfer.iter().map(|(p, _)| *p).collect();
        let mut pending = HashMap::with_capacity(transfer.len());
        let mut referrers: HashMap<StorePath, Vec<StorePath>> = HashMap::new();
        for (path, refs) in &transfer {
            let mut waits: Vec<&StorePath> = refs
                .iter()
                .filter(|r| *r != *path && members.contains(r))
                .collect();
            waits.sort();
            waits.dedup();
            for r in &waits {
                referrers
                    .entry((*r).clone())
                    .or_default()
                    .push((*path).clone());
            }
            pending.insert((*path).clone(), waits.len());
        }
        Publisher {
            pending,
            referrers,
            waiting: HashMap::new(),
        }
    }

    /// A path's data is in place: returns its narinfo if it may be written now (every
    /// reference written), else keeps it until [`Publisher::written`] releases it.
    pub(crate) fn arrived(&mut self, info: NarInfo) -> Option<NarInfo> {
        if self.pending.get(&info.store_path).copied().unwrap_or(0) > 0 {
            self.waiting.insert(info.store_path.clone(), info);
            None
        } else {
            Some(info)
        }
    }

    /// The narinfo of `path` is written (visible): returns the narinfos that may be written now.
    pub(crate) fn written(&mut self, path: &StorePath) -> Vec<NarInfo> {
        self.pending.remove(path);
        let mut out = Vec::new();
        for referrer in self.referrers.remove(path).unwrap_or_default() {
            let Some(count) = self.pending.get_mut(&referrer) else {
                continue;
            };
            *count = count.saturating_sub(1);
            if *count == 0 {
                if let Some(ready) = self.waiting.remove(&referrer) {
                    out.push(ready);
                }
            }
        }
        out
    }

    /// A path whose data arrived but whose narinfo could never be written.
    pub(crate) fn stuck(&self) -> Option<&NarInfo> {
        self.waiting.values().next()
    }
}

/// Drives a transfer: takes narinfos from `arrivals` (each yielded once its NAR is in place) and
/// writes each to `cache` as soon as every reference's narinfo in the transfer is written, up to
/// `concurrency` writes at once, while the transfers go on. `on_arrival` sees each narinfo as its
/// data lands, `on_written` as it becomes visible. The first error stops everything.
pub(crate) async fn publish_as_ready<S>(
    cache: &crate::store::BinaryCache,
    mut publisher: Publisher,
    mut arrivals: S,
    concurrency: usize,
    mut on_arrival: impl FnMut(&NarInfo),
    mut on_written: impl FnMut(&NarInfo),
) -> Result<(), OpError>
where
    S: futures::Stream<Item = Result<NarInfo, OpError>> + Unpin,
{
    use futures::stream::{FuturesUnordered, StreamExt as _};

    let mut ready: std::collections::VecDeque<NarInfo> = Default::default();
    let mut writes = FuturesUnordered::new();
    let mut arrivals_done = false;
    loop {
        while writes.len() < concurrency.max(1) {
            let Some(info) = ready.pop_front() else {
                break;
            };
            writes.push(async move { cache.put_narinfo(&info).await.map(|()| info) });
        }
        if arrivals_done && writes.is_empty() {
            break;
        }
        tokio::select! {
            next = arrivals.next(), if !arrivals_done => match next {
                Some(info) => {
                    let info = info?;
                    on_arrival(&info);
                    ready.extend(publisher.arrived(info));
                }
                None => arrivals_done = true,
            },
            Some(written) = writes.next(), if !writes.is_empty() => {
                let info = written?;
                on_written(&info);
                ready.extend(publisher.written(&info.store_path));
            }
        }
    }
    match publisher.stuck() {
        // Cannot happen for a closure computed by a store; guards against a broken one.
        Some(stuck) => Err(OpError::Unpublished {
            path: stuck.store_dir.full_path(&stuck.store_path),
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod publisher_tests {
    use super::*;
    use crate::hash::{Hash, HashAlgo};
    use crate::narinfo::NarInfo;
    use crate::store_path::{StoreDir, StorePath};

    fn path(c: char) -> StorePath {
        StorePath::from_base_name(&format!("{}-p{c}", c.to_string().repeat(32))).unwrap()
    }

    fn info(p: &StorePath) -> NarInfo {
        NarInfo::new(
            StoreDir::default(),
            p.clone(),
            "nar/x".into(),
            Hash::digest(HashAlgo::Sha256, b""),
            0,
        )
    }

    #[test]
    fn referrers_wait_for_their_references() {
        let (a, b, c) = (path('a'), path('b'), path('c'));
        // c -> b -> a, and c -> a; a refers to itself.
        let refs = [
            (a.clone(), vec![a.clone()]),
            (b.clone(), vec![a.clone()]),
            (c.clone(), vec![a.clone(), b.clone()]),
        ];
        let mut p = Publisher::new(refs.iter().map(|(p, r)| (p, r.as_slice())));
        assert!(p.arrived(info(&c)).is_none());
        assert!(p.arrived(info(&b)).is_none());
        assert_eq!(p.arrived(info(&a)).map(|i| i.store_path), Some(a.clone()));
        // b waits for a only; c for a and b.
        let after_a: Vec<_> = p.written(&a).into_iter().map(|i| i.store_path).collect();
        assert_eq!(after_a, vec![b.clone()]);
        let after_b: Vec<_> = p.written(&b).into_iter().map(|i| i.store_path).collect();
        assert_eq!(after_b, vec![c.clone()]);
        assert!(p.written(&c).is_empty());
        assert!(p.stuck().is_none());
    }

    #[test]
    fn a_chain_arriving_backwards_is_published_in_order_at_the_end() {
        // p0 <- p1 <- ... <- p499, each also referring to p0.
        let paths: Vec<StorePath> = (0..500)
            .map(|i| StorePath::from_base_name(&format!("{:0>32}-p{i}", i)).unwrap())
            .collect();
        let refs: Vec<(StorePath, Vec<StorePath>)> = paths
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let mut r = vec![paths[0].clone(), p.clone()];
                if i > 0 {
                    r.push(paths[i - 1].clone());
                }
                (p.clone(), r)
            })
            .collect();
        let mut p = Publisher::new(refs.iter().map(|(p, r)| (p, r.as_slice())));
        for path in paths.iter().skip(1).rev() {
            assert!(p.arrived(info(path)).is_none());
        }
        assert!(p.stuck().is_some());
        let mut order = vec![p.arrived(info(&paths[0])).unwrap().store_path];
        let mut next = 0;
        while next < order.len() {
            let written = order[next].clone();
            next += 1;
            order.extend(p.written(&written).into_iter().map(|i| i.store_path));
        }
        assert_eq!(order, paths);
        assert!(p.stuck().is_none());
    }

    #[test]
    fn references_outside_the_transfer_are_visible() {
        let (a, b) = (path('a'), path('b'));
        let refs = [(b.clone(), vec![a.clone()])];
        let mut p = Publisher::new(refs.iter().map(|(p, r)| (p, r.as_slice())));
        assert!(p.arrived(info(&b)).is_some());
    }
}
