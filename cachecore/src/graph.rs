//! The graph of store paths and their references, in one place: orders, closure walks and
//! references-first publishing, shared by push, copy, verify and garbage collection.
//!
//! - [`references_first`]: a topological order (each path after every path it refers to), for
//!   writing; [`referrers_first`] the reverse, for deleting. A cycle (other than a path referring
//!   to itself, which Nix allows) is the error [`Cycle`] everywhere, naming the paths around it.
//! - [`walk`] and [`closure`]: the narinfos reachable from some paths in a cache, within
//!   [`WalkLimits`] and, with [`walk_with`], each narinfo judged (its signature checked) before
//!   its references are followed.
//! - [`Publisher`] and [`publish_as_ready`]: write each narinfo of a transfer as soon as its data
//!   is in place and the narinfos of all its references are visible, concurrently.
//!
//! ```
//! use cachecore::graph::{references_first, referrers_first, Cycle};
//! use cachecore::store_path::StorePath;
//! let p = |c: char, name: &str| {
//!     StorePath::from_base_name(&format!("{}-{name}", c.to_string().repeat(32))).unwrap()
//! };
//! let (lib, app) = (p('a', "lib"), p('b', "app"));
//! // (path, references) pairs are nodes; so are narinfos and local path infos.
//! let nodes = vec![(app.clone(), vec![lib.clone(), app.clone()]), (lib.clone(), vec![])];
//! let order: Vec<_> = references_first(nodes.clone()).unwrap().into_iter().map(|n| n.0).collect();
//! assert_eq!(order, [lib.clone(), app.clone()]);
//! let order: Vec<_> = referrers_first(nodes).unwrap().into_iter().map(|n| n.0).collect();
//! assert_eq!(order, [app.clone(), lib.clone()]);
//! let cycle = vec![(app.clone(), vec![lib.clone()]), (lib.clone(), vec![app.clone()])];
//! let err: Cycle = references_first(cycle).unwrap_err();
//! assert_eq!(err.paths.len(), 3); // app -> lib -> app
//! ```

use std::collections::HashMap;
use std::fmt;

use crate::narinfo::NarInfo;
use crate::store_path::StorePath;

/// A store path with references: a node of the graph.
pub trait Node {
    fn path(&self) -> &StorePath;
    /// The paths it refers to (a self-reference is allowed and ignored for ordering).
    fn references(&self) -> &[StorePath];
}

impl Node for NarInfo {
    fn path(&self) -> &StorePath {
        &self.store_path
    }
    fn references(&self) -> &[StorePath] {
        &self.references
    }
}

impl Node for (StorePath, Vec<StorePath>) {
    fn path(&self) -> &StorePath {
        &self.0
    }
    fn references(&self) -> &[StorePath] {
        &self.1
    }
}

impl<T: Node + ?Sized> Node for &T {
    fn path(&self) -> &StorePath {
        (**self).path()
    }
    fn references(&self) -> &[StorePath] {
        (**self).references()
    }
}

/// Store paths that refer to each other in a cycle (Nix never creates one: its store and caches
/// only ever hold acyclic reference graphs, so a cycle means the metadata is corrupt or hostile).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("store paths refer to each other in a cycle: {}", Joined(paths))]
pub struct Cycle {
    /// The paths around the cycle, the first repeated at the end.
    pub paths: Vec<StorePath>,
}

impl Cycle {
    /// Always [`Corrupt`](crate::error::ErrorKind::Corrupt): metadata with a cycle is broken.
    pub fn kind(&self) -> crate::error::ErrorKind {
        crate::error::ErrorKind::Corrupt
    }
}

struct Joined<'a>(&'a [StorePath]);

impl fmt::Display for Joined<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" -> ")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

/// `nodes` ordered so that every node comes after the nodes it refers to. A path listed twice is
/// kept once (the first node wins); references to paths not among `nodes` and self-references
/// are ignored. The order depends only on the input order and the graph: a depth-first walk from
/// the nodes in the order given, visiting references in store-path order, each node emitted
/// after its references. O(n + e) (plus sorting each node's references); deep chains cannot
/// overflow the stack.
///
/// ```
/// use cachecore::graph::references_first;
/// use cachecore::store_path::StorePath;
/// let p = |c: char, name: &str| {
///     StorePath::from_base_name(&format!("{}-{name}", c.to_string().repeat(32))).unwrap()
/// };
/// let (libc, lib, app) = (p('a', "libc"), p('b', "lib"), p('c', "app"));
/// let nodes = vec![
///     (app.clone(), vec![lib.clone(), libc.clone()]),
///     (lib.clone(), vec![libc.clone(), p('d', "elsewhere")]), // not among the nodes: ignored
///     (libc.clone(), vec![]),
///     (app.clone(), vec![]), // listed twice: the first wins
/// ];
/// let order: Vec<_> = references_first(nodes).unwrap().into_iter().map(|(p, _)| p).collect();
/// assert_eq!(order, [libc, lib, app]);
/// ```
pub fn references_first<N: Node>(nodes: Vec<N>) -> Result<Vec<N>, Cycle> {
    let mut index: HashMap<StorePath, usize> = HashMap::with_capacity(nodes.len());
    let mut kept: Vec<N> = Vec::with_capacity(nodes.len());
    for node in nodes {
        if !index.contains_key(node.path()) {
            index.insert(node.path().clone(), kept.len());
            kept.push(node);
        }
    }
    // Edges as indices, self-references and outside paths dropped.
    let edges: Vec<Vec<usize>> = kept
        .iter()
        .enumerate()
        .map(|(i, node)| {
            let mut e: Vec<usize> = node
                .references()
                .iter()
                .filter_map(|r| index.get(r).copied())
                .filter(|&j| j != i)
                .collect();
            e.sort_by(|&a, &b| kept[a].path().cmp(kept[b].path()));
            e.dedup();
            e
        })
        .collect();

    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        OnStack,
        Done,
    }
    let mut mark = vec![Mark::New; kept.len()];
    let mut order: Vec<usize> = Vec::with_capacity(kept.len());
    // (node, next edge to look at)
    let mut stack: Vec<(usize, usize)> = Vec::new();
    for start in 0..kept.len() {
        if mark[start] != Mark::New {
            continue;
        }
        mark[start] = Mark::OnStack;
        stack.push((start, 0));
        while let Some(top) = stack.last_mut() {
            let (node, next) = *top;
            if let Some(&child) = edges[node].get(next) {
                top.1 += 1;
                match mark[child] {
                    Mark::Done => {}
                    Mark::New => {
                        mark[child] = Mark::OnStack;
                        stack.push((child, 0));
                    }
                    Mark::OnStack => {
                        let from = stack.iter().position(|&(n, _)| n == child).unwrap_or(0);
                        let mut paths: Vec<StorePath> = stack[from..]
                            .iter()
                            .map(|&(n, _)| kept[n].path().clone())
                            .collect();
                        paths.push(kept[child].path().clone());
                        return Err(Cycle { paths });
                    }
                }
            } else {
                mark[node] = Mark::Done;
                order.push(node);
                stack.pop();
            }
        }
    }
    // Move the nodes out in that order.
    let mut slots: Vec<Option<N>> = kept.into_iter().map(Some).collect();
    Ok(order
        .into_iter()
        .filter_map(|i| slots.get_mut(i).and_then(Option::take))
        .collect())
}

/// `nodes` ordered so that every node comes before the nodes it refers to: the order in which
/// narinfos can be deleted without ever leaving a visible narinfo whose reference is gone. The
/// exact reverse of [`references_first`]; the same [`Cycle`] error.
///
/// ```
/// use cachecore::graph::referrers_first;
/// use cachecore::store_path::StorePath;
/// let p = |c: char, name: &str| {
///     StorePath::from_base_name(&format!("{}-{name}", c.to_string().repeat(32))).unwrap()
/// };
/// let (lib, app) = (p('a', "lib"), p('b', "app"));
/// let nodes = vec![(lib.clone(), vec![]), (app.clone(), vec![lib.clone()])];
/// // app's narinfo goes before lib's, which app refers to.
/// let order: Vec<_> = referrers_first(nodes).unwrap().into_iter().map(|(p, _)| p).collect();
/// assert_eq!(order, [app, lib]);
/// ```
pub fn referrers_first<N: Node>(nodes: Vec<N>) -> Result<Vec<N>, Cycle> {
    let mut order = references_first(nodes)?;
    order.reverse();
    Ok(order)
}

/// Decides when narinfos may become visible: a narinfo is written only once the narinfo of
/// every reference of it that is part of the same transfer has been written. Driven by
/// [`publish_as_ready`].
///
/// Each path counts the references it still waits for; a completed write counts down its
/// referrers, so a transfer of n paths with e references costs O(n + e) whatever the order in
/// which their data arrives, and independent narinfos can be written concurrently.
///
/// ```
/// use cachecore::graph::Publisher;
/// use cachecore::hash::{Hash, HashAlgo};
/// use cachecore::narinfo::NarInfo;
/// use cachecore::store_path::{StoreDir, StorePath};
/// let p = |c: char, name: &str| {
///     StorePath::from_base_name(&format!("{}-{name}", c.to_string().repeat(32))).unwrap()
/// };
/// let info = |path: &StorePath, refs: Vec<StorePath>| {
///     let mut info = NarInfo::new(StoreDir::default(), path.clone(), "nar/x.nar".into(),
///         Hash::digest(HashAlgo::Sha256, b""), 0);
///     info.references = refs;
///     info
/// };
/// let (lib, app) = (p('a', "lib"), p('b', "app"));
/// let (lib_info, app_info) = (info(&lib, vec![]), info(&app, vec![lib.clone()]));
/// let mut publisher = Publisher::new(&[lib_info.clone(), app_info.clone()]).unwrap();
/// // app's data lands first: its narinfo waits for lib's.
/// assert_eq!(publisher.arrived(app_info.clone()), None);
/// assert_eq!(publisher.stuck(), Some(&app_info));
/// // lib's may be written at once; once it is, app's is released.
/// assert_eq!(publisher.arrived(lib_info.clone()), Some(lib_info));
/// assert_eq!(publisher.written(&lib), [app_info]);
/// assert_eq!(publisher.stuck(), None);
/// // A cycle could never be published.
/// assert!(Publisher::new(&[(lib.clone(), vec![app.clone()]), (app, vec![lib])]).is_err());
/// ```
#[derive(Debug)]
pub struct Publisher {
    /// For each path of the transfer not yet written, how many of its references are not.
    pending: HashMap<StorePath, usize>,
    /// For each path of the transfer, the paths of the transfer that refer to it.
    referrers: HashMap<StorePath, Vec<StorePath>>,
    /// Narinfos whose data is in place but which still wait for references.
    waiting: HashMap<StorePath, NarInfo>,
    /// Every path of the transfer.
    members: std::collections::HashSet<StorePath>,
}

impl Publisher {
    /// `transfer` holds each path being transferred with its references; references outside the
    /// transfer are already visible. A cycle among them is an error: none of its narinfos could
    /// ever be written.
    ///
    /// See [`Publisher`] for an example.
    pub fn new<N: Node>(transfer: &[N]) -> Result<Self, Cycle> {
        references_first(transfer.iter().collect())?;
        let members: std::collections::HashSet<&StorePath> =
            transfer.iter().map(Node::path).collect();
        let mut pending = HashMap::with_capacity(transfer.len());
        let mut referrers: HashMap<StorePath, Vec<StorePath>> = HashMap::new();
        for node in transfer {
            let path = node.path();
            let mut waits: Vec<&StorePath> = node
                .references()
                .iter()
                .filter(|r| *r != path && members.contains(r))
                .collect();
            waits.sort();
            waits.dedup();
            for r in &waits {
                referrers
                    .entry((*r).clone())
                    .or_default()
                    .push(path.clone());
            }
            pending.insert(path.clone(), waits.len());
        }
        Ok(Publisher {
            pending,
            referrers,
            waiting: HashMap::new(),
            members: transfer.iter().map(|n| n.path().clone()).collect(),
        })
    }

    /// A path's data is in place: returns its narinfo if it may be written now (every
    /// reference written), else keeps it until [`Publisher::written`] releases it.
    ///
    /// See [`Publisher`] for an example.
    pub fn arrived(&mut self, info: NarInfo) -> Option<NarInfo> {
        if self.pending.get(&info.store_path).copied().unwrap_or(0) > 0 {
            self.waiting.insert(info.store_path.clone(), info);
            None
        } else {
            Some(info)
        }
    }

    /// The narinfo of `path` is written (visible): returns the narinfos that may be written now.
    ///
    /// See [`Publisher`] for an example.
    pub fn written(&mut self, path: &StorePath) -> Vec<NarInfo> {
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

    /// A path whose data arrived but whose narinfo could never be written (a reference of it
    /// never arrived).
    ///
    /// See [`Publisher`] for an example.
    pub fn stuck(&self) -> Option<&NarInfo> {
        self.waiting.values().next()
    }
}

#[cfg(feature = "cache")]
pub use in_cache::*;

#[cfg(feature = "cache")]
mod in_cache {
    use std::collections::{HashMap, HashSet, VecDeque};

    use futures::stream::{FuturesUnordered, StreamExt as _};

    use super::{references_first, Cycle, Publisher};
    use crate::narinfo::NarInfo;
    use crate::store::{BinaryCache, StoreError};
    use crate::store_path::StorePath;

    /// Narinfo fetches in flight during a walk.
    const CONCURRENCY: usize = 32;

    /// Why a walk of a cache's graph, or a publication, failed.
    #[derive(Debug, thiserror::Error)]
    #[non_exhaustive]
    pub enum GraphError {
        #[error(transparent)]
        Store(#[from] StoreError),
        /// A path of the closure has no narinfo in the cache.
        #[error("{path} is not in {url}{}", referrer_note(.referrer))]
        NotInCache {
            path: StorePath,
            /// The path that refers to it, when it is not one of the roots.
            referrer: Option<StorePath>,
            url: String,
        },
        #[error(transparent)]
        Cycle(#[from] Cycle),
        /// The push rule's re-check refused a narinfo ([`crate::gc::lease`]).
        #[error(transparent)]
        Guard(Box<crate::gc::GuardError>),
        /// A transfer ended with a narinfo still waiting for a reference that never arrived.
        #[error("{path} was not published: its reference {reference} never became visible")]
        NeverPublished {
            path: StorePath,
            reference: StorePath,
        },
        /// A walk reached more store paths than [`WalkLimits::max_paths`].
        #[error(
            "the closure walked in {url} has more than {limit} store paths, the limit of one walk \
             (max_paths); no real closure is that large, so the cache is hostile or broken"
        )]
        TooManyPaths { url: String, limit: usize },
        /// A narinfo names more references than [`WalkLimits::max_references`].
        #[error(
            "{path} in {url} has {count} references, more than the limit of {limit} for one path \
             (max_references)"
        )]
        TooManyReferences {
            path: StorePath,
            url: String,
            count: usize,
            limit: usize,
        },
        /// The narinfos of a walk add up to more than [`WalkLimits::max_narinfo_bytes`].
        #[error(
            "the narinfos of the closure walked in {url} add up to more than {limit} bytes, the \
             limit of one walk (max_narinfo_bytes)"
        )]
        TooManyNarInfoBytes { url: String, limit: u64 },
    }

    impl From<crate::gc::GuardError> for GraphError {
        fn from(e: crate::gc::GuardError) -> Self {
            match e {
                crate::gc::GuardError::Store(e) => GraphError::Store(e),
                e => GraphError::Guard(Box::new(e)),
            }
        }
    }

    impl GraphError {
        /// What kind of failure this is.
        pub fn kind(&self) -> crate::error::ErrorKind {
            match self {
                GraphError::Store(e) => e.kind(),
                GraphError::NotInCache { .. } => crate::error::ErrorKind::NotFound,
                GraphError::Cycle(e) => e.kind(),
                GraphError::Guard(e) => e.kind(),
                GraphError::NeverPublished { .. }
                | GraphError::TooManyPaths { .. }
                | GraphError::TooManyReferences { .. }
                | GraphError::TooManyNarInfoBytes { .. } => crate::error::ErrorKind::Corrupt,
            }
        }
    }

    fn referrer_note(referrer: &Option<StorePath>) -> String {
        referrer
            .as_ref()
            .map(|r| format!(" (a reference of {r})"))
            .unwrap_or_default()
    }

    /// A narinfo a walk looked for and did not find.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Absent {
        /// The hash part of its key (`<hash>.narinfo`).
        pub hash_part: String,
        /// Its store path, when it was reached as a reference or named as a root.
        pub path: Option<StorePath>,
        /// The narinfo that refers to it (none for a starting point).
        pub referrer: Option<StorePath>,
    }

    /// What [`walk`] found.
    #[derive(Debug, Default)]
    pub struct Walk {
        /// The narinfos read, in the order they arrived.
        pub found: Vec<NarInfo>,
        /// Narinfos that are not in the cache.
        pub absent: Vec<Absent>,
        /// Narinfos that are there but cannot be used, each with its error: they do not parse
        /// ([`StoreError::BadNarInfo`]), describe another path than their key or the path they
        /// were reached by ([`StoreError::IdentityMismatch`]), are too large to read
        /// ([`StoreError::TooLarge`]), lead outside the cache ([`StoreError::OutsideRoot`]) or
        /// are not regular files ([`StoreError::NotRegularFile`]).
        pub unreadable: Vec<StoreError>,
    }

    /// Where a walk starts: a store path, or the hash part of a narinfo key (as a listing of the
    /// cache gives them).
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum Start {
        Path(StorePath),
        HashPart(String),
    }

    /// Bounds on one walk of a cache's graph, so that a hostile cache (or anyone on a plain-http
    /// path to it) cannot grow a walk without end by inventing references. Every default is far
    /// above any real closure; reaching one is an error naming it ([`GraphError`]).
    ///
    /// ```
    /// use cachecore::graph::WalkLimits;
    /// let mut limits = WalkLimits::default();
    /// assert_eq!(limits.max_paths, 500_000);
    /// limits.max_references = 1_000;
    /// ```
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    #[non_exhaustive]
    pub struct WalkLimits {
        /// Store paths one walk may reach (read or still to read). Default 500,000: five times
        /// everything one nixpkgs release builds for a platform (about 100,000 paths), where the
        /// largest real closures (a NixOS system: a few thousand) are far below. At the limit a
        /// walk holds about 100 MB of paths to read.
        pub max_paths: usize,
        /// References one narinfo may name. Default 10,000: Nix sets no limit, but real paths
        /// name at most a few thousand (a 1 MiB narinfo, the most a reader accepts, has room
        /// for about 15,000).
        pub max_references: usize,
        /// Bytes of narinfo text one walk may read. Default 512 MiB: real narinfos are about
        /// 1 KiB, so this is room for the 500,000 paths of `max_paths`.
        pub max_narinfo_bytes: u64,
    }

    impl Default for WalkLimits {
        fn default() -> Self {
            WalkLimits {
                max_paths: 500_000,
                max_references: 10_000,
                max_narinfo_bytes: 512 << 20,
            }
        }
    }

    /// Reads the narinfos of `start` from `cache` (32 at a time), and with `follow_references`
    /// those of everything they refer to, transitively; each narinfo once, within the default
    /// [`WalkLimits`]. Missing and unusable narinfos are collected, not fatal; any other store
    /// error (unreachable, denied) ends the walk.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// use cachecore::graph::{self, Start};
    /// use cachecore::{store::BinaryCache, store_path::StorePath};
    /// # use cachecore::{hash::{Hash, HashAlgo}, narinfo::NarInfo, store_path::StoreDir};
    /// let cache = BinaryCache::open("memory://").unwrap();
    /// let app = StorePath::from_base_name("cccccccccccccccccccccccccccccccc-app").unwrap();
    /// let lib = StorePath::from_base_name("bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-lib").unwrap();
    /// # let mut info = NarInfo::new(StoreDir::default(), app.clone(), "nar/x.nar".into(),
    /// #     Hash::digest(HashAlgo::Sha256, b""), 0);
    /// # info.references = vec![lib.clone()];
    /// # cache.put_narinfo(&info).await.unwrap();
    /// // Only app's narinfo is in the cache (written above); it refers to lib.
    /// let walked = graph::walk(&cache, [Start::Path(app.clone())], true).await.unwrap();
    /// assert_eq!(walked.found.len(), 1);
    /// assert_eq!(walked.absent[0].path.as_ref(), Some(&lib));
    /// assert_eq!(walked.absent[0].referrer.as_ref(), Some(&app));
    /// # });
    /// ```
    pub async fn walk(
        cache: &BinaryCache,
        start: impl IntoIterator<Item = Start>,
        follow_references: bool,
    ) -> Result<Walk, GraphError> {
        let admit_all = |_: &NarInfo| Ok::<(), GraphError>(());
        walk_with(
            cache,
            start,
            follow_references,
            &WalkLimits::default(),
            admit_all,
        )
        .await
    }

    /// [`walk`] within `limits`, with `admit` judging each narinfo as it arrives, before any of
    /// its references is looked at: its error ends the walk. So a copy that requires signatures
    /// follows only the references of signed narinfos, and an unsigned narinfo naming
    /// thousands of invented paths costs one read, not a walk of all of them.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// use cachecore::graph::{self, GraphError, Start, WalkLimits};
    /// use cachecore::{store::BinaryCache, store_path::StorePath};
    /// # use cachecore::{hash::{Hash, HashAlgo}, narinfo::NarInfo, store_path::StoreDir};
    /// let cache = BinaryCache::open("memory://").unwrap();
    /// let app = StorePath::from_base_name("cccccccccccccccccccccccccccccccc-app").unwrap();
    /// # let mut info = NarInfo::new(StoreDir::default(), app.clone(), "nar/x.nar".into(),
    /// #     Hash::digest(HashAlgo::Sha256, b""), 0);
    /// # info.references = (0..3).map(|i| StorePath::from_base_name(
    /// #     &format!("{:0>32}-lib{i}", i)).unwrap()).collect();
    /// # cache.put_narinfo(&info).await.unwrap();
    /// // app's narinfo (written above) names three references.
    /// let mut limits = WalkLimits::default();
    /// limits.max_references = 2;
    /// let admit_all = |_: &NarInfo| Ok::<(), GraphError>(());
    /// let e = graph::walk_with(&cache, [Start::Path(app)], true, &limits, admit_all)
    ///     .await
    ///     .unwrap_err();
    /// assert!(matches!(e, GraphError::TooManyReferences { count: 3, limit: 2, .. }), "{e}");
    /// # });
    /// ```
    pub async fn walk_with<E: From<GraphError>>(
        cache: &BinaryCache,
        start: impl IntoIterator<Item = Start>,
        follow_references: bool,
        limits: &WalkLimits,
        mut admit: impl FnMut(&NarInfo) -> Result<(), E>,
    ) -> Result<Walk, E> {
        /// A narinfo to read: by its path (which it must then describe, name included), or by
        /// the hash part of its key.
        enum Target {
            Path(StorePath),
            HashPart(String),
        }
        let too_many_paths = || GraphError::TooManyPaths {
            url: cache.url().to_owned(),
            limit: limits.max_paths,
        };
        let mut out = Walk::default();
        // What to read, with the index in `out.found` of the narinfo that refers to it.
        let mut queue: VecDeque<(Target, Option<usize>)> = VecDeque::new();
        let mut seen: HashSet<String> = HashSet::new();
        let mut bytes: u64 = 0;
        for s in start {
            let (hash, target) = match s {
                Start::Path(p) => (p.hash_part(), Target::Path(p)),
                Start::HashPart(h) => (h.clone(), Target::HashPart(h)),
            };
            if seen.insert(hash) {
                if seen.len() > limits.max_paths {
                    return Err(too_many_paths().into());
                }
                queue.push_back((target, None));
            }
        }
        let mut fetches = FuturesUnordered::new();
        loop {
            while fetches.len() < CONCURRENCY {
                let Some((target, referrer)) = queue.pop_front() else {
                    break;
                };
                fetches.push(async move {
                    let r = match &target {
                        Target::Path(p) => cache.narinfo_sized(p).await,
                        Target::HashPart(h) => cache.narinfo_by_hash_sized(h).await,
                    };
                    (target, referrer, r)
                });
            }
            let Some((target, referrer, result)) = fetches.next().await else {
                break;
            };
            match result {
                Ok(Some((info, size))) => {
                    bytes = bytes.saturating_add(size);
                    if bytes > limits.max_narinfo_bytes {
                        return Err(GraphError::TooManyNarInfoBytes {
                            url: cache.url().to_owned(),
                            limit: limits.max_narinfo_bytes,
                        }
                        .into());
                    }
                    if info.references.len() > limits.max_references {
                        return Err(GraphError::TooManyReferences {
                            path: info.store_path.clone(),
                            url: cache.url().to_owned(),
                            count: info.references.len(),
                            limit: limits.max_references,
                        }
                        .into());
                    }
                    admit(&info)?;
                    if follow_references {
                        let index = out.found.len();
                        for r in &info.references {
                            if seen.insert(r.hash_part()) {
                                if seen.len() > limits.max_paths {
                                    return Err(too_many_paths().into());
                                }
                                queue.push_back((Target::Path(r.clone()), Some(index)));
                            }
                        }
                    }
                    out.found.push(info);
                }
                Ok(None) => {
                    let (hash_part, path) = match target {
                        Target::Path(p) => (p.hash_part(), Some(p)),
                        Target::HashPart(h) => (h, None),
                    };
                    out.absent.push(Absent {
                        hash_part,
                        path,
                        referrer: referrer.map(|i| out.found[i].store_path.clone()),
                    });
                }
                // Hostile or damaged objects: a problem of this narinfo, not a failure to read
                // the cache.
                Err(
                    e @ (StoreError::BadNarInfo { .. }
                    | StoreError::IdentityMismatch { .. }
                    | StoreError::TooLarge { .. }
                    | StoreError::OutsideRoot { .. }
                    | StoreError::NotRegularFile { .. }),
                ) => out.unreadable.push(e),
                Err(e) => return Err(GraphError::from(e).into()),
            }
        }
        Ok(out)
    }

    /// The narinfos of the closure of `roots` in `cache`, references before referrers. Every one
    /// must be there and parse.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// use cachecore::{graph, store::BinaryCache, store_path::StorePath};
    /// # use cachecore::{hash::{Hash, HashAlgo}, narinfo::NarInfo, store_path::StoreDir};
    /// let cache = BinaryCache::open("memory://").unwrap();
    /// let p = |c: char, name: &str| {
    ///     StorePath::from_base_name(&format!("{}-{name}", c.to_string().repeat(32))).unwrap()
    /// };
    /// let (libc, lib, app) = (p('a', "libc"), p('b', "lib"), p('c', "app"));
    /// # for (path, refs) in [(&libc, vec![]), (&lib, vec![libc.clone()]), (&app, vec![lib.clone()])] {
    /// #     let mut info = NarInfo::new(StoreDir::default(), path.clone(), "nar/x.nar".into(),
    /// #         Hash::digest(HashAlgo::Sha256, b""), 0);
    /// #     info.references = refs;
    /// #     cache.put_narinfo(&info).await.unwrap();
    /// # }
    /// // app -> lib -> libc, as their narinfos (written above) say.
    /// let closure = graph::closure(&cache, &[app.clone()]).await.unwrap();
    /// let order: Vec<StorePath> = closure.into_iter().map(|i| i.store_path).collect();
    /// assert_eq!(order, [libc, lib, app]); // references first
    /// # });
    /// ```
    pub async fn closure(
        cache: &BinaryCache,
        roots: &[StorePath],
    ) -> Result<Vec<NarInfo>, GraphError> {
        let admit_all = |_: &NarInfo| Ok::<(), GraphError>(());
        closure_with(cache, roots, &WalkLimits::default(), admit_all).await
    }

    /// [`closure`], walked as [`walk_with`] walks: within `limits`, each narinfo judged by
    /// `admit` before its references are followed.
    ///
    /// See [`walk_with`] for an example.
    pub async fn closure_with<E: From<GraphError>>(
        cache: &BinaryCache,
        roots: &[StorePath],
        limits: &WalkLimits,
        admit: impl FnMut(&NarInfo) -> Result<(), E>,
    ) -> Result<Vec<NarInfo>, E> {
        let walked = walk_with(
            cache,
            roots.iter().cloned().map(Start::Path),
            true,
            limits,
            admit,
        )
        .await?;
        if let Some(e) = walked.unreadable.into_iter().next() {
            return Err(GraphError::from(e).into());
        }
        // Every start is a path, and every other narinfo is reached as a reference: each
        // absent one has its store path.
        if let Some((path, referrer)) = walked
            .absent
            .into_iter()
            .find_map(|a| Some((a.path?, a.referrer)))
        {
            return Err(GraphError::NotInCache {
                path,
                referrer,
                url: cache.url().to_owned(),
            }
            .into());
        }
        // Walk from the roots first, so the order follows them.
        let mut by_path: HashMap<StorePath, NarInfo> = walked
            .found
            .into_iter()
            .map(|i| (i.store_path.clone(), i))
            .collect();
        let mut ordered: Vec<NarInfo> = roots.iter().filter_map(|r| by_path.remove(r)).collect();
        let mut rest: Vec<NarInfo> = by_path.into_values().collect();
        rest.sort_by(|a, b| a.store_path.cmp(&b.store_path));
        ordered.extend(rest);
        references_first(ordered).map_err(|c| GraphError::from(c).into())
    }

    /// Drives a transfer: takes narinfos from `arrivals` (each yielded once its NAR is in place)
    /// and writes each to `cache` as soon as every reference's narinfo in the transfer is
    /// written, up to `concurrency` writes at once, while the transfers go on. With a `guard`,
    /// each narinfo is re-checked just before it is written (the push rule of
    /// [`crate::gc::lease`]: its NAR and the narinfos of its references outside the transfer are
    /// still there, and no GC is collecting them). `on_arrival` sees each narinfo as its data
    /// lands, `on_written` as it becomes visible. The first error stops everything.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// use cachecore::graph::{self, GraphError, Publisher};
    /// use cachecore::{store::BinaryCache, store_path::StorePath};
    /// # use cachecore::{hash::{Hash, HashAlgo}, narinfo::NarInfo, store_path::StoreDir};
    /// let cache = BinaryCache::open("memory://").unwrap();
    /// let p = |c: char, name: &str| {
    ///     StorePath::from_base_name(&format!("{}-{name}", c.to_string().repeat(32))).unwrap()
    /// };
    /// let (lib, app) = (p('a', "lib"), p('b', "app"));
    /// # let info = |path: &StorePath, refs: Vec<StorePath>| {
    /// #     let mut info = NarInfo::new(StoreDir::default(), path.clone(), "nar/x.nar".into(),
    /// #         Hash::digest(HashAlgo::Sha256, b""), 0);
    /// #     info.references = refs;
    /// #     info
    /// # };
    /// // app refers to lib; their data lands app first.
    /// let transfer = vec![info(&app, vec![lib.clone()]), info(&lib, vec![])];
    /// let publisher = Publisher::new(&transfer).unwrap();
    /// let arrivals = futures::stream::iter(transfer.into_iter().map(Ok::<_, GraphError>));
    /// let mut written = Vec::new();
    /// graph::publish_as_ready(&cache, publisher, arrivals, 4, None, |_| {},
    ///     |i| written.push(i.store_path.clone())).await.unwrap();
    /// assert_eq!(written, [lib, app.clone()]); // references first
    /// assert!(cache.narinfo(&app).await.unwrap().is_some());
    /// # });
    /// ```
    pub async fn publish_as_ready<S, E>(
        cache: &BinaryCache,
        mut publisher: Publisher,
        mut arrivals: S,
        concurrency: usize,
        guard: Option<&crate::gc::PushGuard>,
        mut on_arrival: impl FnMut(&NarInfo),
        mut on_written: impl FnMut(&NarInfo),
    ) -> Result<(), E>
    where
        S: futures::Stream<Item = Result<NarInfo, E>> + Unpin,
        E: From<GraphError>,
    {
        let members = std::mem::take(&mut publisher.members);
        let mut ready: VecDeque<NarInfo> = VecDeque::new();
        let mut writes = FuturesUnordered::new();
        let mut arrivals_done = false;
        loop {
            while writes.len() < concurrency.max(1) {
                let Some(info) = ready.pop_front() else {
                    break;
                };
                let members = &members;
                writes.push(async move {
                    if let Some(guard) = guard {
                        guard.recheck(&info, members).await?;
                    }
                    cache.put_narinfo(&info).await?;
                    Ok::<_, GraphError>(info)
                });
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
            // Only when `arrivals` left out a path of the transfer.
            Some(stuck) => {
                let reference = stuck
                    .references
                    .iter()
                    .find(|r| publisher.pending.contains_key(*r) && **r != stuck.store_path)
                    .cloned()
                    .unwrap_or_else(|| stuck.store_path.clone());
                Err(GraphError::NeverPublished {
                    path: stuck.store_path.clone(),
                    reference,
                }
                .into())
            }
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::{Hash, HashAlgo};
    use crate::store_path::StoreDir;

    fn sp(c: char, name: &str) -> StorePath {
        StorePath::from_base_name(&format!("{}-{name}", c.to_string().repeat(32))).unwrap()
    }

    fn node(p: &StorePath, refs: &[&StorePath]) -> (StorePath, Vec<StorePath>) {
        (p.clone(), refs.iter().map(|r| (*r).clone()).collect())
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
    fn references_first_ignores_self_and_outside_and_keeps_the_first_duplicate() {
        let (a, b, c, out) = (sp('a', "a"), sp('b', "b"), sp('c', "c"), sp('d', "outside"));
        let sorted = references_first(vec![
            node(&c, &[&a, &b, &c]),
            node(&b, &[&a, &b, &out]),
            node(&a, &[&a]),
            node(&a, &[]),
        ])
        .unwrap();
        let names: Vec<&str> = sorted.iter().map(|n| n.0.name()).collect();
        assert_eq!(names, ["a", "b", "c"]);
        assert_eq!(sorted[0].1, vec![a.clone()]);
        let reversed = referrers_first(sorted.clone()).unwrap();
        let reversed: Vec<&str> = reversed.iter().map(|n| n.0.name()).collect();
        assert_eq!(reversed, ["c", "b", "a"]);
    }

    #[test]
    fn a_cycle_is_named_in_both_orders_and_by_the_publisher() {
        let (a, b, c) = (sp('a', "a"), sp('b', "b"), sp('c', "c"));
        let nodes = vec![node(&a, &[&b]), node(&b, &[&c]), node(&c, &[&a])];
        let err = references_first(nodes.clone()).unwrap_err();
        assert_eq!(err.paths, vec![a.clone(), b.clone(), c.clone(), a.clone()]);
        let msg = err.to_string();
        assert_eq!(
            msg,
            format!("store paths refer to each other in a cycle: {a} -> {b} -> {c} -> {a}")
        );
        assert_eq!(referrers_first(nodes.clone()).unwrap_err(), err);
        assert_eq!(Publisher::new(&nodes).unwrap_err(), err);
    }

    #[test]
    fn deep_chains_do_not_overflow_the_stack() {
        let paths: Vec<StorePath> = (0..100_000)
            .map(|i| StorePath::from_base_name(&format!("{}-p{i}", "0".repeat(32))).unwrap())
            .collect();
        let nodes: Vec<(StorePath, Vec<StorePath>)> = paths
            .iter()
            .enumerate()
            .rev()
            .map(|(i, p)| (p.clone(), paths[i.saturating_sub(1)..i].to_vec()))
            .collect();
        let sorted = references_first(nodes).unwrap();
        assert_eq!(sorted.len(), paths.len());
        assert!(sorted.iter().zip(&paths).all(|(n, p)| n.0 == *p));
    }

    #[test]
    fn referrers_wait_for_their_references() {
        let (a, b, c) = (sp('a', "pa"), sp('b', "pb"), sp('c', "pc"));
        // c -> b -> a, and c -> a; a refers to itself.
        let refs = [node(&a, &[&a]), node(&b, &[&a]), node(&c, &[&a, &b])];
        let mut p = Publisher::new(&refs).unwrap();
        assert!(p.arrived(info(&c)).is_none());
        assert!(p.arrived(info(&b)).is_none());
        assert_eq!(p.arrived(info(&a)).map(|i| i.store_path), Some(a.clone()));
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
        let mut p = Publisher::new(&refs).unwrap();
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

    /// A chain p0 -> p1 -> ... -> p9 in a `memory://` cache, each narinfo also naming
    /// `fan_out` paths that are not in the cache.
    #[cfg(feature = "cache")]
    async fn chain(fan_out: usize) -> (crate::store::BinaryCache, Vec<StorePath>) {
        let cache = crate::store::BinaryCache::open("memory://").unwrap();
        let paths: Vec<StorePath> = (0..10)
            .map(|i| StorePath::from_base_name(&format!("{:0>32}-p{i}", i)).unwrap())
            .collect();
        for (i, p) in paths.iter().enumerate() {
            let mut info = info(p);
            info.references = paths.get(i + 1).cloned().into_iter().collect();
            info.references.extend((0..fan_out).map(|j| {
                let hash = format!("{}{i:02}{j:02}", "z".repeat(28));
                StorePath::from_base_name(&format!("{hash}-absent")).unwrap()
            }));
            cache.put_narinfo(&info).await.unwrap();
        }
        (cache, paths)
    }

    #[cfg(feature = "cache")]
    #[tokio::test]
    async fn a_walk_stops_at_its_limits_and_before_the_references_of_a_refused_narinfo() {
        let (cache, paths) = chain(3).await;
        let start = || [Start::Path(paths[0].clone())];
        let all = |_: &NarInfo| Ok::<(), GraphError>(());
        // Within the defaults: the whole chain, and the paths it names that are absent.
        let walked = walk(&cache, start(), true).await.unwrap();
        assert_eq!((walked.found.len(), walked.absent.len()), (10, 30));

        // 10 paths of the chain and 30 absent ones: 39 is one too few.
        let mut limits = WalkLimits::default();
        limits.max_paths = 39;
        let e = walk_with(&cache, start(), true, &limits, all)
            .await
            .unwrap_err();
        assert!(
            matches!(e, GraphError::TooManyPaths { limit: 39, .. }),
            "{e}"
        );
        assert!(e.to_string().contains("(max_paths)"), "{e}");
        limits.max_paths = 40;
        assert!(walk_with(&cache, start(), true, &limits, all).await.is_ok());

        let mut limits = WalkLimits::default();
        limits.max_narinfo_bytes = 1_000;
        let e = walk_with(&cache, start(), true, &limits, all)
            .await
            .unwrap_err();
        assert!(
            matches!(e, GraphError::TooManyNarInfoBytes { limit: 1_000, .. }),
            "{e}"
        );
        assert_eq!(e.kind(), crate::error::ErrorKind::Corrupt);

        // A narinfo refused by `admit` ends the walk before its references are read.
        let mut judged = Vec::new();
        let refuse_p3 = |i: &NarInfo| {
            judged.push(i.store_path.clone());
            match i.store_path == paths[3] {
                true => Err(GraphError::NeverPublished {
                    path: i.store_path.clone(),
                    reference: i.store_path.clone(),
                }),
                false => Ok(()),
            }
        };
        let limits = WalkLimits::default();
        let e = walk_with(&cache, start(), true, &limits, refuse_p3)
            .await
            .unwrap_err();
        assert!(matches!(e, GraphError::NeverPublished { .. }), "{e}");
        assert_eq!(judged, paths[..4]);
    }

    #[test]
    fn references_outside_the_transfer_are_visible() {
        let (a, b) = (sp('a', "pa"), sp('b', "pb"));
        let mut p = Publisher::new(&[node(&b, &[&a])]).unwrap();
        assert!(p.arrived(info(&b)).is_some());
    }
}
