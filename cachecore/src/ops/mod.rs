//! Operations on binary caches: [`push`] a local closure, [`copy`] between caches, [`pull`] a path
//! out of a cache, [`verify`] a cache, and read one ([`browse`]).
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

use std::io;

use crate::local_store::LocalStoreError;
use crate::nar;
use crate::store::StoreError;

pub use browse::{cat, info, list_paths, listing, CacheTotals};
pub use copy::{copy, CopyOptions, CopySummary};
pub use pull::{pull, PullOptions};
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
    #[error("{path}: {field} mismatch: the narinfo says {expected}, the data gives {actual}")]
    Mismatch {
        path: String,
        field: &'static str,
        expected: String,
        actual: String,
    },
    #[error("{path} is not in {url}")]
    NotInCache { path: String, url: String },
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
    #[error("{context}: {source}")]
    Io { context: String, source: io::Error },
    #[error("{0}")]
    Compression(#[from] crate::compression::Error),
    #[error("{0}")]
    Other(String),
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
    staging: &str,
    uploaded: Result<u64, StoreError>,
    produced: Result<T, OpError>,
) -> Result<T, OpError> {
    let error = match (uploaded, produced) {
        (Ok(_), Ok(value)) => return Ok(value),
        (_, Err(e)) => e,
        (Err(e), Ok(_)) => e.into(),
    };
    let _ = cache.delete(staging).await;
    Err(error)
}

/// A background task panicked or was cancelled: surface it as an error, not a hang.
pub(crate) fn join_error(e: tokio::task::JoinError) -> OpError {
    if e.is_panic() {
        std::panic::resume_unwind(e.into_panic());
    }
    OpError::Other(format!("a background task was cancelled: {e}"))
}

/// Decides when narinfos may become visible: a narinfo is published only once every reference
/// of it that is part of the same transfer has been published. Shared by push and copy.
#[derive(Debug)]
pub(crate) struct Publisher {
    /// For each path of the transfer, the references it waits for.
    waits_for:
        std::collections::HashMap<crate::store_path::StorePath, Vec<crate::store_path::StorePath>>,
    visible: std::collections::HashSet<crate::store_path::StorePath>,
    ready: Vec<crate::narinfo::NarInfo>,
}

impl Publisher {
    /// `transfer` maps each path being transferred to its references; references outside the
    /// transfer are already visible.
    pub(crate) fn new<'a>(
        transfer: impl IntoIterator<
            Item = (
                &'a crate::store_path::StorePath,
                &'a [crate::store_path::StorePath],
            ),
        >,
    ) -> Self {
        let transfer: Vec<_> = transfer.into_iter().collect();
        let members: std::collections::HashSet<_> =
            transfer.iter().map(|(p, _)| (*p).clone()).collect();
        let waits_for = transfer
            .iter()
            .map(|(p, refs)| {
                let refs = refs
                    .iter()
                    .filter(|r| *r != *p && members.contains(*r))
                    .cloned()
                    .collect();
                ((*p).clone(), refs)
            })
            .collect();
        Publisher {
            waits_for,
            visible: Default::default(),
            ready: Vec::new(),
        }
    }

    /// A path's data is in place; returns the narinfos that may now be written, in order.
    /// The caller writes them in that order and must call [`Publisher::published`] for each.
    pub(crate) fn arrived(
        &mut self,
        info: crate::narinfo::NarInfo,
    ) -> Vec<crate::narinfo::NarInfo> {
        self.ready.push(info);
        let mut out = Vec::new();
        loop {
            let visible = &self.visible;
            let waits_for = &self.waits_for;
            let (now, later): (Vec<_>, Vec<_>) =
                std::mem::take(&mut self.ready).into_iter().partition(|i| {
                    waits_for
                        .get(&i.store_path)
                        .is_none_or(|refs| refs.iter().all(|r| visible.contains(r)))
                });
            self.ready = later;
            if now.is_empty() {
                return out;
            }
            for i in &now {
                self.visible.insert(i.store_path.clone());
            }
            out.extend(now);
        }
    }

    /// Paths whose data arrived but whose narinfo could never be published.
    pub(crate) fn stuck(&self) -> Option<&crate::narinfo::NarInfo> {
        self.ready.first()
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
        assert!(p.arrived(info(&c)).is_empty());
        assert!(p.arrived(info(&b)).is_empty());
        let order: Vec<_> = p
            .arrived(info(&a))
            .into_iter()
            .map(|i| i.store_path)
            .collect();
        assert_eq!(order, vec![a, b, c]);
        assert!(p.stuck().is_none());
    }

    #[test]
    fn references_outside_the_transfer_are_visible() {
        let (a, b) = (path('a'), path('b'));
        let refs = [(b.clone(), vec![a.clone()])];
        let mut p = Publisher::new(refs.iter().map(|(p, r)| (p, r.as_slice())));
        assert_eq!(p.arrived(info(&b)).len(), 1);
    }
}
