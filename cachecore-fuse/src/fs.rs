//! The filesystem itself, as a plain type: [`CacheFs`] answers `lookup`, `getattr`, `readdir`,
//! `readlink` and `read` over a binary cache through the core's blocking client, with no kernel
//! involved (the [`crate::adapter`] hands it the kernel's requests).
//!
//! # What is fetched, and when
//!
//! - The root (inode 1) holds the cache's store paths as `<hash>-<name>` directories. A cache
//!   that can list its objects is listed once, when the filesystem is made ([`root_paths`]); a
//!   cache that cannot (a plain HTTP cache) starts empty, and a lookup of a `<hash>-<name>` fetches
//!   that narinfo. Either way a narinfo is checked against the trusted keys before its path
//!   appears; a name found missing (or unsigned) is remembered for [`NEGATIVE_TTL`].
//! - A store path's tree comes from its `.ls` listing (or, when it has none, from its NAR, read
//!   once and checked whole), the first time something inside it is looked at. Its inodes are
//!   given out then, all at once, and never change: `lookup`, `getattr` and `readdir` never read
//!   a NAR byte afterwards.
//! - `read` reads the file's bytes out of the NAR through [`cachecore::ops::NarFile`] (ranged
//!   reads of the covering frames; see [`cachecore::access`] for what they check): with
//!   [`Check::Frames`], each frame checked against its signed digest before a byte of it is
//!   served; with [`Check::Nar`] (and for a path without signed frame digests), out of the
//!   whole NAR, fetched once and checked against the signed `NarHash` first.
//!
//! # The listing
//!
//! With [`Check::Frames`], a path pushed with signed frame digests has its `.ls` checked
//! against the signed `ListingHash` before its tree is made (see
//! [`cachecore::access::frame_digests`]). Otherwise no signature covers a `.ls`. It is bounded (the core reads at most
//! [`cachecore::store::MAX_LISTING_BYTES`]; at most [`MAX_NODES`] entries are taken), every
//! regular file must lie inside the NAR (`narOffset + size <= NarSize`), symlink targets must be
//! non-empty and hold no NUL, and each file's first read checks that the NAR really holds a
//! file of that size at that offset. What an unsigned hostile listing can still do with
//! [`Check::Ranges`] — swap two files' places, misreport the executable bit or a symlink
//! target — the other checks prevent. With [`Check::Nar`], `ls` still shows what
//! the listing says (no NAR byte is fetched to list), but before the first byte of a path's
//! contents or a symlink target is served, the whole NAR is fetched, checked against the signed
//! NarHash, and must hold exactly the listed tree; if it does not, every read in that path fails.
//!
//! Names and symlink targets are shown as the NAR's bytes. A listing is JSON text and cannot
//! hold bytes that are not UTF-8 (Nix writes them raw, which does not parse; a lossy writer
//! puts U+FFFD): a path whose listing is missing, does not parse or holds U+FFFD has its tree
//! made from its NAR instead ([`NarAccess::tree`]).

use std::collections::{BTreeMap, HashMap};
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt as _;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cachecore::access::{FrameCache, ListingOrigin, NarAccess, NarCache};
use cachecore::blocking;
use cachecore::error::ErrorKind;
use cachecore::nar::{ExactNode, ListingNode};
use cachecore::narinfo::NarInfo;
use cachecore::ops::{self, NarFile};
use cachecore::signing::PublicKey;
use cachecore::store::BinaryCache;
use cachecore::store_path::StorePath;

/// The root directory's inode.
pub const ROOT: u64 = 1;

/// How long a name found missing is remembered (a lookup of it fails without asking the cache).
pub const NEGATIVE_TTL: Duration = Duration::from_secs(10);

/// At most this many names are remembered as missing; more forget them all.
const MAX_NEGATIVE: usize = 100_000;

/// The most entries one store path's listing may have (directories, files and symlinks).
pub const MAX_NODES: usize = 4_000_000;

/// The part of [`FsOptions::memory`] left for the process itself, not for what the filesystem
/// holds: code, the async runtime, the worker threads' stacks and request buffers, frames in
/// flight. Measured: 29 MiB resident for a release-built mount of a directory cache, just
/// started (its root listed, nothing read).
pub const PROCESS_RESERVE: u64 = 32 << 20;

/// What the filesystem may hold of `memory` (see [`FsOptions::memory`]).
fn held_memory(memory: u64) -> u64 {
    memory - PROCESS_RESERVE.min(memory / 2)
}

/// At most this many files are kept open for reads; more close them all (they reopen on the
/// next read, at the cost of one more check of their listing entry against the NAR).
const MAX_OPEN_FILES: usize = 65_536;

/// How reads are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// Ranged reads of the covering frames, checked against the narinfo's sizes and each frame's
    /// own checksum, not against the `NarHash` (see [`cachecore::access`]). Fetches only what a
    /// reader touches.
    Ranges,
    /// Ranged reads of the covering frames, each checked against its digest signed by a
    /// trusted key, and the listing against its signed hash, before anything is served
    /// ([`cachecore::access::NarAccess::frames_checked`]); a path without signed frame digests
    /// is read as with [`Check::Nar`].
    Frames,
    /// The whole NAR, fetched once, checked against the narinfo's `NarHash` (and the signature
    /// over it), kept in the [`NarCache`], and read from there; the unsigned `.ls` the tree was
    /// made from must match that NAR before any content or symlink target is served. Nothing
    /// unchecked reaches a reader but the listing's names and attributes.
    Nar,
}

/// How the filesystem is set up.
#[derive(Debug, Clone)]
pub struct FsOptions {
    /// A narinfo must be signed by one of these keys for its path to appear, unless
    /// `check_signatures` is false.
    pub trusted_keys: Vec<PublicKey>,
    pub check_signatures: bool,
    pub check: Check,
    /// Where whole NARs are kept ([`Check::Nar`], and NARs that cannot be read at random).
    pub nar_cache: Option<NarCache>,
    /// The process's memory: [`PROCESS_RESERVE`] of it (at most half) is left for the process
    /// itself; of the rest, three quarters hold decompressed frames (shared by every path; see
    /// [`FrameCache`]) and a quarter the trees of the store paths' listings (the least recently
    /// used dropped beyond it, read again when used; the largest single tree is always held
    /// while it is used).
    pub memory: u64,
}

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FsError {
    /// No such inode, or no such name in a directory.
    #[error("no such file or directory")]
    NoEntry,
    /// A name in the root that is not a `<hash>-<name>` store path base name.
    #[error("{name:?} is not a store path base name")]
    NotAStorePath { name: OsString },
    /// The path's narinfo is not signed by a trusted key: it does not appear.
    #[error("{path}: {source}")]
    Untrusted {
        path: String,
        source: Box<cachecore::ops::OpError>,
    },
    /// The asked-for operation does not apply to this kind of node.
    #[error("{what}")]
    WrongKind { what: &'static str },
    /// The listing of a path is unusable (too large, a file outside the NAR, a bad symlink).
    #[error("{path}: the listing {reason}")]
    BadListing { path: String, reason: String },
    /// What the core said.
    #[error(transparent)]
    Cache(Box<blocking::Error>),
}

impl FsError {
    /// What kind of failure this is (the adapter turns it into an errno).
    pub fn kind(&self) -> ErrorKind {
        match self {
            FsError::NoEntry | FsError::NotAStorePath { .. } | FsError::Untrusted { .. } => {
                ErrorKind::NotFound
            }
            FsError::WrongKind { .. } => ErrorKind::InvalidInput,
            FsError::BadListing { .. } => ErrorKind::Corrupt,
            FsError::Cache(e) => ErrorKind::of_chain(&**e).unwrap_or(ErrorKind::Internal),
        }
    }
}

impl From<blocking::Error> for FsError {
    fn from(e: blocking::Error) -> FsError {
        FsError::Cache(Box::new(e))
    }
}

impl From<cachecore::ops::OpError> for FsError {
    fn from(e: cachecore::ops::OpError) -> FsError {
        FsError::Cache(Box::new(e.into()))
    }
}

impl From<cachecore::access::AccessError> for FsError {
    fn from(e: cachecore::access::AccessError) -> FsError {
        FsError::Cache(Box::new(e.into()))
    }
}

/// What a node is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    Directory,
    Regular,
    Symlink,
}

/// A node's attributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attr {
    pub ino: u64,
    pub kind: FileKind,
    /// Bytes of a regular file, of a symlink's target; 0 for a directory.
    pub size: u64,
    pub executable: bool,
}

/// One entry of a directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    pub ino: u64,
    pub kind: FileKind,
    pub name: OsString,
}

/// A store path that appeared in the root.
#[derive(Debug)]
struct PathEntry {
    info: NarInfo,
    access: NarAccess,
    /// How this path's reads are checked: the filesystem's [`Check`], but [`Check::Nar`] for a
    /// path without signed frame digests under [`Check::Frames`].
    check: Check,
    /// Held while its listing is read, so that concurrent first lookups read it once.
    loading: Mutex<()>,
    /// With [`Check::Nar`]: the listing the tree was made from, until the checked NAR has
    /// confirmed it; then `Confirmed` (or `Refuted`: every read of the path fails).
    confirmation: Mutex<Confirmation>,
}

#[derive(Debug)]
enum Confirmation {
    /// Nothing to confirm (yet, or without [`Check::Nar`]).
    None,
    Pending(ExactNode),
    Confirmed,
    Refuted(String),
}

#[derive(Debug, Clone)]
enum Node {
    /// The root: store path base names.
    Root,
    /// A store path (its tree, once loaded, is in [`Table::trees`]).
    Top(Arc<PathEntry>),
    Directory {
        /// Name → inode and kind.
        entries: Arc<BTreeMap<OsString, (u64, FileKind)>>,
    },
    Regular {
        path: Arc<PathEntry>,
        sub: Arc<str>,
        size: u64,
        executable: bool,
        nar_offset: u64,
    },
    Symlink {
        path: Arc<PathEntry>,
        target: Arc<OsStr>,
    },
}

/// The first inode of the store paths' trees; the root and the store paths themselves are
/// numbered from 1 below it.
const TREE_INODES: u64 = 1 << 40;

/// The inodes: the root and the store paths (never forgotten), and the trees of the paths
/// whose listings were read. Each tree keeps the range of inode numbers it was first given, so
/// a tree dropped to stay within memory and read again gets the same numbers (the kernel may
/// still hold them).
#[derive(Debug)]
struct Table {
    /// Node of inode `i + 1`: the root, then store paths.
    nodes: Vec<Node>,
    /// The root's entries: base name → inode.
    root: BTreeMap<OsString, u64>,
    /// Trees by their first inode.
    trees: BTreeMap<u64, Tree>,
    /// Store path inode → the first inode of its tree.
    tree_of: HashMap<u64, u64>,
    /// Where the next tree's inodes start.
    next_tree: u64,
    /// Estimated bytes of the trees held.
    tree_bytes: u64,
    /// Most bytes of trees held: beyond it, the least recently used are dropped (never the
    /// one just read).
    max_tree_bytes: u64,
    /// Counts uses, for least-recently-used.
    tick: std::sync::atomic::AtomicU64,
}

/// The nodes of one store path's tree: node 0 is the path's own directory, node `i` inode
/// `first + i`.
#[derive(Debug)]
struct Tree {
    /// The store path's inode.
    top: u64,
    len: u64,
    /// A digest of what the tree was made from: read again, it must be the same tree.
    digest: u64,
    /// `None` once dropped.
    nodes: Option<Vec<Node>>,
    bytes: u64,
    used: std::sync::atomic::AtomicU64,
}

/// What the table says about an inode.
enum Found {
    Node(Node),
    /// A store path whose tree is to be read (first time, or again after it was dropped).
    Load(u64),
    None,
}

impl Table {
    fn new(max_tree_bytes: u64) -> Table {
        Table {
            nodes: vec![Node::Root],
            root: BTreeMap::new(),
            trees: BTreeMap::new(),
            tree_of: HashMap::new(),
            next_tree: TREE_INODES,
            tree_bytes: 0,
            max_tree_bytes,
            tick: Default::default(),
        }
    }

    fn add(&mut self, node: Node) -> u64 {
        self.nodes.push(node);
        self.nodes.len() as u64
    }

    fn find(&self, ino: u64) -> Found {
        use std::sync::atomic::Ordering::Relaxed;
        if ino < TREE_INODES {
            let Some(node) = usize::try_from(ino)
                .ok()
                .and_then(|i| self.nodes.get(i.checked_sub(1)?))
            else {
                return Found::None;
            };
            if let Node::Top(_) = node {
                return match self.tree_of.get(&ino) {
                    Some(first) => self.find_in_tree(*first, *first),
                    None => Found::Load(ino),
                };
            }
            return Found::Node(node.clone());
        }
        match self.trees.range(..=ino).next_back() {
            Some((first, tree)) if ino - first < tree.len && ino != *first => {
                let _ = tree
                    .used
                    .fetch_max(self.tick.fetch_add(1, Relaxed), Relaxed);
                self.find_in_tree(*first, ino)
            }
            _ => Found::None,
        }
    }

    fn find_in_tree(&self, first: u64, ino: u64) -> Found {
        use std::sync::atomic::Ordering::Relaxed;
        let Some(tree) = self.trees.get(&first) else {
            return Found::None;
        };
        tree.used
            .fetch_max(self.tick.fetch_add(1, Relaxed), Relaxed);
        match &tree.nodes {
            Some(nodes) => nodes
                .get((ino - first) as usize)
                .cloned()
                .map_or(Found::None, Found::Node),
            None => Found::Load(tree.top),
        }
    }

    /// Installs the tree of store path `top` made from `listing`: at the inodes it had before
    /// when it was dropped (and only if it is the same tree), else at new ones. Then drops the
    /// least recently used other trees until the rest fit.
    fn install(
        &mut self,
        top: u64,
        entry: &Arc<PathEntry>,
        listing: ExactNode,
    ) -> Result<Node, FsError> {
        let first = self.tree_of.get(&top).copied().unwrap_or(self.next_tree);
        let mut made = Made {
            nodes: Vec::new(),
            first,
            bytes: 0,
            digest: std::hash::DefaultHasher::new(),
        };
        make_tree(&mut made, entry, listing, "");
        let digest = std::hash::Hasher::finish(&made.digest);
        let len = made.nodes.len() as u64;
        let bytes = made.bytes;
        let root = made.nodes[0].clone();
        let tick = self.tick.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        match self.trees.get_mut(&first) {
            Some(tree) => {
                if tree.len != len || tree.digest != digest {
                    return Err(FsError::BadListing {
                        path: entry.info.store_dir.full_path(&entry.info.store_path),
                        reason: "changed since it was first read".into(),
                    });
                }
                if tree.nodes.is_none() {
                    tree.nodes = Some(made.nodes);
                    tree.bytes = bytes;
                    self.tree_bytes += bytes;
                }
                *tree.used.get_mut() = tick;
            }
            None => {
                self.next_tree += len;
                self.tree_of.insert(top, first);
                self.trees.insert(
                    first,
                    Tree {
                        top,
                        len,
                        digest,
                        nodes: Some(made.nodes),
                        bytes,
                        used: tick.into(),
                    },
                );
                self.tree_bytes += bytes;
            }
        }
        self.evict(first);
        Ok(root)
    }

    /// Drops the least recently used trees but `keep` until the rest fit.
    fn evict(&mut self, keep: u64) {
        if self.tree_bytes <= self.max_tree_bytes {
            return;
        }
        let mut by_use: Vec<(u64, u64)> = self
            .trees
            .iter_mut()
            .filter(|(first, tree)| **first != keep && tree.nodes.is_some())
            .map(|(first, tree)| (*tree.used.get_mut(), *first))
            .collect();
        by_use.sort_unstable();
        for (_, first) in by_use {
            if self.tree_bytes <= self.max_tree_bytes {
                break;
            }
            if let Some(tree) = self.trees.get_mut(&first) {
                tree.nodes = None;
                self.tree_bytes -= tree.bytes;
            }
        }
    }
}

/// The filesystem: a binary cache's store paths, read-only (see the [module docs](self)).
#[derive(Debug)]
pub struct CacheFs {
    cache: BinaryCache,
    options: FsOptions,
    table: RwLock<Table>,
    /// Names found missing, and when.
    missing: Mutex<HashMap<OsString, Instant>>,
    /// Whether the root holds every path of the cache (it was listed), so a name not in it is
    /// missing without asking.
    root_complete: bool,
    /// Files being read: inode → file.
    open: Mutex<HashMap<u64, NarFile>>,
    /// Decoded frames, shared by every path.
    frames: FrameCache,
    /// The file read last from its start, and the last file [`CacheFs::following`] gave.
    sequence: Mutex<(u64, u64)>,
}

/// At most this many files, and bytes, are given by one call of [`CacheFs::following`].
const FOLLOWING_FILES: usize = 256;
const FOLLOWING_BYTES: u64 = 4 << 20;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The store paths a cache holds, for the root: its narinfos, read concurrently, or `None` when
/// the store cannot list (a plain HTTP cache: paths then appear as they are looked up).
///
/// This is the seam for the push index (the GC issue): where a cache has one, the paths will be
/// read from it here instead of from every narinfo.
pub fn root_paths(cache: &BinaryCache) -> Result<Option<Vec<NarInfo>>, FsError> {
    let listed = blocking::block_on(async {
        ops::require_cache_info(cache).await?;
        ops::browse::all_narinfos(cache).await
    });
    match listed {
        Ok(infos) => Ok(Some(infos)),
        Err(e) if e.kind() == ErrorKind::Unsupported => Ok(None),
        Err(e) => Err(e.into()),
    }
}

impl CacheFs {
    /// The filesystem of `cache`: lists the root now when the store can list (see
    /// [`root_paths`]), checking each narinfo's signature; paths not signed by a trusted key are
    /// left out (and logged once, counted).
    pub fn new(cache: BinaryCache, options: FsOptions) -> Result<CacheFs, FsError> {
        let listed = root_paths(&cache)?;
        let mut fs = CacheFs {
            cache,
            table: RwLock::new(Table::new(held_memory(options.memory) / 4)),
            missing: Mutex::new(HashMap::new()),
            root_complete: listed.is_some(),
            open: Mutex::new(HashMap::new()),
            sequence: Mutex::new((0, 0)),
            frames: FrameCache::new(held_memory(options.memory) - held_memory(options.memory) / 4),
            options,
        };
        let mut unsigned = 0usize;
        for info in listed.unwrap_or_default() {
            match fs.admit(info) {
                Ok(entry) => {
                    let table = fs.table.get_mut().unwrap_or_else(|p| p.into_inner());
                    add_path(table, entry);
                }
                Err(FsError::Untrusted { .. }) => unsigned += 1,
                Err(e) => return Err(e),
            }
        }
        if unsigned > 0 {
            tracing::warn!(
                "{unsigned} store paths of {} are not signed by a trusted key: left out",
                fs.cache.url()
            );
        }
        Ok(fs)
    }

    /// Checks a narinfo (signature) and makes its entry.
    fn admit(&self, info: NarInfo) -> Result<Arc<PathEntry>, FsError> {
        if self.options.check_signatures {
            ops::check_trusted(&info, &self.options.trusted_keys).map_err(|source| {
                FsError::Untrusted {
                    path: info.store_dir.full_path(&info.store_path),
                    source: Box::new(source),
                }
            })?;
        }
        let mut access =
            NarAccess::new(&self.cache, info.clone())?.with_frame_cache(self.frames.clone());
        if let Some(cache) = &self.options.nar_cache {
            access = access.with_nar_cache(cache.clone());
        }
        let check = match self.options.check {
            Check::Ranges => Check::Ranges,
            Check::Nar => {
                access = access.whole_nar_checked();
                Check::Nar
            }
            Check::Frames => {
                access = access.frames_checked(&self.options.trusted_keys);
                if access.checks_frames() {
                    Check::Frames
                } else {
                    Check::Nar
                }
            }
        };
        Ok(Arc::new(PathEntry {
            info,
            access,
            check,
            loading: Mutex::new(()),
            confirmation: Mutex::new(Confirmation::None),
        }))
    }

    fn table(&self) -> std::sync::RwLockReadGuard<'_, Table> {
        self.table.read().unwrap_or_else(|p| p.into_inner())
    }

    fn table_mut(&self) -> std::sync::RwLockWriteGuard<'_, Table> {
        self.table.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The node of `ino`, with its store path's tree read if it is not held (first use, or
    /// dropped to stay within memory).
    fn loaded(&self, ino: u64) -> Result<Node, FsError> {
        loop {
            let top = match self.table().find(ino) {
                Found::Node(node) => return Ok(node),
                Found::None => return Err(FsError::NoEntry),
                Found::Load(top) => top,
            };
            let entry = match self.table().nodes.get(top as usize - 1) {
                Some(Node::Top(entry)) => entry.clone(),
                _ => return Err(FsError::NoEntry),
            };
            let _one_at_a_time = lock(&entry.loading);
            // (The read guard must be gone before the write below.)
            let still_missing = matches!(self.table().find(ino), Found::Load(_));
            if still_missing {
                let tree = self.read_listing(&entry)?;
                self.table_mut().install(top, &entry, tree)?;
                crate::adapter::after_tree_loaded();
            }
        }
    }

    /// Estimated bytes of the store paths' trees held in memory now (bounded by a quarter of
    /// [`FsOptions::memory`], or by the largest single tree).
    pub fn tree_bytes(&self) -> u64 {
        self.table().tree_bytes
    }

    /// The listing of a path, checked as far as it can be (see the [module docs](self)): the
    /// signed one, else the stored one (confirmed against the checked NAR before use, unless
    /// [`Check::Ranges`]), else one built from the NAR (fetched once, checked, and read from
    /// afterwards).
    ///
    /// Names and symlink targets are the NAR's bytes: a path whose listing cannot say them
    /// (not UTF-8) has its tree made from the NAR ([`NarAccess::tree`]).
    fn read_listing(&self, entry: &PathEntry) -> Result<ExactNode, FsError> {
        let info = &entry.info;
        let full = info.store_dir.full_path(&info.store_path);
        let (tree, origin) = blocking::block_on(entry.access.tree())?;
        if origin == ListingOrigin::Stored && entry.check != Check::Ranges {
            *lock(&entry.confirmation) = Confirmation::Pending(tree.clone());
        }
        check_listing(&tree, info.nar_size, &mut 0).map_err(|reason| FsError::BadListing {
            path: full.clone(),
            reason,
        })?;
        Ok(tree)
    }

    /// With [`Check::Nar`], before anything of a path's contents is served: its whole NAR,
    /// fetched once and checked against the signed NarHash, must hold exactly the tree its
    /// listing described (names, kinds, sizes, executable bits, symlink targets, offsets).
    fn confirm(&self, entry: &PathEntry) -> Result<(), FsError> {
        if entry.check == Check::Ranges {
            return Ok(());
        }
        let mut confirmation = lock(&entry.confirmation);
        let listed = match &*confirmation {
            Confirmation::None | Confirmation::Confirmed => return Ok(()),
            Confirmation::Refuted(reason) => {
                return Err(FsError::BadListing {
                    path: entry.info.store_dir.full_path(&entry.info.store_path),
                    reason: reason.clone(),
                })
            }
            Confirmation::Pending(listing) => listing,
        };
        // A failure to fetch is not remembered (the next read tries again); a NAR that fails
        // its check is (it is not fetched again for every read).
        let checked = match blocking::block_on(entry.access.tree_checked()) {
            Ok(listing) => listing,
            Err(e) => {
                let e = FsError::from(e);
                if e.kind() == ErrorKind::Corrupt {
                    *confirmation =
                        Confirmation::Refuted(format!("names a NAR that failed its check: {e}"));
                }
                return Err(e);
            }
        };
        if checked == *listed {
            *confirmation = Confirmation::Confirmed;
            Ok(())
        } else {
            let reason =
                "does not describe the NAR (checked against its signed NarHash)".to_owned();
            *confirmation = Confirmation::Refuted(reason.clone());
            Err(FsError::BadListing {
                path: entry.info.store_dir.full_path(&entry.info.store_path),
                reason,
            })
        }
    }

    /// The attributes of `ino`.
    pub fn getattr(&self, ino: u64) -> Result<Attr, FsError> {
        let node = self.loaded(ino)?;
        Ok(attr_of(ino, &node))
    }

    /// The entry `name` of directory `parent`.
    pub fn lookup(&self, parent: u64, name: &OsStr) -> Result<Attr, FsError> {
        let ino = match self.loaded(parent)? {
            Node::Root => self.lookup_root(name)?,
            Node::Directory { entries } => entries.get(name).ok_or(FsError::NoEntry)?.0,
            _ => {
                return Err(FsError::WrongKind {
                    what: "not a directory",
                })
            }
        };
        self.getattr(ino)
    }

    fn lookup_root(&self, name: &OsStr) -> Result<u64, FsError> {
        if let Some(ino) = self.table().root.get(name) {
            return Ok(*ino);
        }
        let base = name
            .to_str()
            .and_then(|s| StorePath::from_base_name(s).ok())
            .ok_or_else(|| FsError::NotAStorePath {
                name: name.to_owned(),
            })?;
        if self.root_complete || self.recently_missing(name) {
            return Err(FsError::NoEntry);
        }
        let info = blocking::block_on(self.cache.narinfo(&base))?;
        let entry = match info.map(|info| self.admit(info)) {
            Some(Ok(entry)) => entry,
            Some(Err(e)) => {
                if let FsError::Untrusted { .. } = e {
                    tracing::warn!("{e}");
                }
                self.remember_missing(name);
                return Err(e);
            }
            None => {
                self.remember_missing(name);
                return Err(FsError::NoEntry);
            }
        };
        let mut table = self.table_mut();
        if let Some(ino) = table.root.get(name) {
            return Ok(*ino); // looked up at the same time by another reader
        }
        Ok(add_path(&mut table, entry))
    }

    fn recently_missing(&self, name: &OsStr) -> bool {
        let mut missing = lock(&self.missing);
        match missing.get(name) {
            Some(at) if at.elapsed() < NEGATIVE_TTL => true,
            Some(_) => {
                missing.remove(name);
                false
            }
            None => false,
        }
    }

    fn remember_missing(&self, name: &OsStr) {
        let mut missing = lock(&self.missing);
        if missing.len() >= MAX_NEGATIVE {
            missing.clear();
        }
        missing.insert(name.to_owned(), Instant::now());
    }

    /// The entries of directory `ino` (without `.` and `..`).
    pub fn readdir(&self, ino: u64) -> Result<Vec<DirEntry>, FsError> {
        let entries = match self.loaded(ino)? {
            Node::Root => self
                .table()
                .root
                .iter()
                .map(|(name, ino)| (name.clone(), (*ino, FileKind::Directory)))
                .collect(),
            Node::Directory { entries } => BTreeMap::clone(&entries),
            _ => {
                return Err(FsError::WrongKind {
                    what: "not a directory",
                })
            }
        };
        Ok(entries
            .into_iter()
            .map(|(name, (ino, kind))| DirEntry { ino, kind, name })
            .collect())
    }

    /// The target of symlink `ino`.
    pub fn readlink(&self, ino: u64) -> Result<OsString, FsError> {
        match self.loaded(ino)? {
            Node::Symlink { path, target } => {
                self.confirm(&path)?;
                Ok(target.to_os_string())
            }
            _ => Err(FsError::WrongKind {
                what: "not a symlink",
            }),
        }
    }

    /// At most `size` bytes of regular file `ino` from `offset` (fewer at its end).
    pub fn read(&self, ino: u64, offset: u64, size: u32) -> Result<Bytes, FsError> {
        let file = self.file(ino)?;
        let start = offset.min(file.size());
        let end = offset.saturating_add(u64::from(size)).min(file.size());
        if start == end {
            return Ok(Bytes::new());
        }
        Ok(blocking::block_on(file.read(start..end))?)
    }

    /// After a read of `ino` from `offset`: when a reader goes through a store path's files in
    /// order (this read starts a file that comes shortly after the last one started, in the
    /// order the NAR holds them — the order `find`, `cp -r` and `tar` read them), the regular
    /// files after `ino` whose whole contents are in memory now (decoded, checked frames),
    /// stopping at the first that is not, at most [`FOLLOWING_FILES`] files and
    /// [`FOLLOWING_BYTES`] bytes. The mount hands them to the kernel's page cache, so such a
    /// reader reads a directory of small files without a request per file. No I/O; empty for
    /// any other read, and for paths read whole (`Check::Nar`).
    pub fn following(&self, ino: u64, offset: u64) -> Vec<(u64, Bytes)> {
        let mut out = Vec::new();
        if offset != 0 {
            return out;
        }
        {
            let mut seq = lock(&self.sequence);
            let (last, given) = *seq;
            seq.0 = ino;
            if ino <= last || ino > last.max(given) + 16 {
                return out;
            }
        }
        let path = match self.table().find(ino) {
            Found::Node(Node::Regular { path, .. }) => path,
            _ => return out,
        };
        let mut bytes = 0;
        let mut next = ino;
        while out.len() < FOLLOWING_FILES {
            next += 1;
            let node = match self.table().find(next) {
                Found::Node(node) => node,
                _ => break,
            };
            let size = match &node {
                Node::Regular { path: p, size, .. } if Arc::ptr_eq(p, &path) => *size,
                Node::Directory { .. } | Node::Symlink { .. } => continue,
                _ => break,
            };
            if size == 0 {
                continue;
            }
            if bytes + size > FOLLOWING_BYTES {
                break;
            }
            match nar_file(&node).ok().and_then(|file| file.held()) {
                Some(contents) => {
                    bytes += size;
                    out.push((next, contents));
                }
                None => break,
            }
        }
        if let Some((last, _)) = out.last() {
            lock(&self.sequence).1 = *last;
        }
        out
    }

    /// The file of `ino`, opened once and kept while read.
    fn file(&self, ino: u64) -> Result<NarFile, FsError> {
        if let Some(file) = lock(&self.open).get(&ino) {
            return Ok(file.clone());
        }
        let node = self.loaded(ino)?;
        if let Node::Regular { path, .. } = &node {
            self.confirm(path)?;
        }
        let file = nar_file(&node)?;
        let mut open = lock(&self.open);
        if open.len() >= MAX_OPEN_FILES {
            open.clear();
        }
        open.insert(ino, file.clone());
        Ok(file)
    }

    /// Forgets the open file of `ino` (its last reader closed it).
    pub fn release(&self, ino: u64) {
        lock(&self.open).remove(&ino);
    }

    /// The number of store paths in the root now.
    pub fn paths(&self) -> usize {
        self.table().root.len()
    }
}

/// The file a regular node names, for reads (no I/O).
fn nar_file(node: &Node) -> Result<NarFile, FsError> {
    match node {
        Node::Regular {
            path,
            sub,
            size,
            executable,
            nar_offset,
        } => Ok(ops::file_in(
            path.access.clone(),
            sub,
            &ListingNode::Regular {
                size: *size,
                executable: *executable,
                nar_offset: Some(*nar_offset),
            },
        )?),
        _ => Err(FsError::WrongKind {
            what: "not a regular file",
        }),
    }
}

/// Adds a store path to the root; returns its inode.
fn add_path(table: &mut Table, entry: Arc<PathEntry>) -> u64 {
    let name = OsString::from(entry.info.store_path.to_string());
    if let Some(ino) = table.root.get(&name) {
        return *ino;
    }
    let ino = table.add(Node::Top(entry));
    table.root.insert(name, ino);
    ino
}

fn attr_of(ino: u64, node: &Node) -> Attr {
    let (kind, size, executable) = match node {
        Node::Root | Node::Top(_) | Node::Directory { .. } => (FileKind::Directory, 0, true),
        Node::Regular {
            size, executable, ..
        } => (FileKind::Regular, *size, *executable),
        Node::Symlink { target, .. } => (FileKind::Symlink, target.len() as u64, false),
    };
    Attr {
        ino,
        kind,
        size,
        executable,
    }
}

/// Checks what the listing says against the NAR's size and the filesystem's limits.
fn check_listing(node: &ExactNode, nar_size: u64, count: &mut usize) -> Result<(), String> {
    *count += 1;
    if *count > MAX_NODES {
        return Err(format!("has more than {MAX_NODES} entries"));
    }
    match node {
        ExactNode::Regular {
            size, nar_offset, ..
        } => match nar_offset.and_then(|o| o.checked_add(*size)) {
            Some(end) if end <= nar_size => Ok(()),
            _ => Err(format!(
                "puts a file of {size} bytes at NAR offset {nar_offset:?}, outside the \
                 {nar_size}-byte NAR"
            )),
        },
        ExactNode::Symlink { target } => {
            if target.is_empty() || target.contains(&0) || target.len() > 4095 {
                Err("has a symlink with an empty, over-long or NUL-holding target".into())
            } else {
                Ok(())
            }
        }
        ExactNode::Directory { entries } => entries
            .values()
            .try_for_each(|child| check_listing(child, nar_size, count)),
    }
}

/// A tree being made: its nodes (node `i` is inode `first + i`), their estimated bytes, and a
/// digest of everything they say.
struct Made {
    nodes: Vec<Node>,
    first: u64,
    bytes: u64,
    digest: std::hash::DefaultHasher,
}

/// Estimated bytes of a node beyond its name and path (the node, a directory entry, `Arc`s).
const NODE_BYTES: u64 = 160;

/// Numbers `node` and everything under it in depth-first order (the same listing, the same
/// numbers); returns the index of `node`.
fn make_tree(made: &mut Made, entry: &Arc<PathEntry>, node: ExactNode, sub: &str) -> usize {
    use std::hash::Hash as _;
    let index = made.nodes.len();
    made.nodes.push(Node::Root); // replaced below
    made.bytes += NODE_BYTES;
    let built = match node {
        ExactNode::Regular {
            size,
            executable,
            nar_offset,
        } => {
            (0u8, sub, size, executable, nar_offset).hash(&mut made.digest);
            made.bytes += sub.len() as u64;
            Node::Regular {
                path: entry.clone(),
                sub: Arc::from(sub),
                size,
                executable,
                // Checked by `check_listing`.
                nar_offset: nar_offset.unwrap_or(0),
            }
        }
        ExactNode::Symlink { target } => {
            (1u8, sub, &target).hash(&mut made.digest);
            made.bytes += target.len() as u64;
            Node::Symlink {
                path: entry.clone(),
                target: Arc::from(OsStr::from_bytes(&target)),
            }
        }
        ExactNode::Directory { entries } => {
            (2u8, sub, entries.len()).hash(&mut made.digest);
            let mut inodes = BTreeMap::new();
            for (name, child) in entries {
                // For messages only (a file is read by its offset): names that are not UTF-8
                // get U+FFFD there; the directory entry keeps the NAR's bytes.
                let shown = String::from_utf8_lossy(&name);
                let child_sub = if sub.is_empty() {
                    shown.into_owned()
                } else {
                    format!("{sub}/{shown}")
                };
                // The exact name goes into the digest (a lossy one could not tell two apart).
                name.hash(&mut made.digest);
                let kind = match &child {
                    ExactNode::Regular { .. } => FileKind::Regular,
                    ExactNode::Symlink { .. } => FileKind::Symlink,
                    ExactNode::Directory { .. } => FileKind::Directory,
                };
                let at = make_tree(made, entry, child, &child_sub);
                made.bytes += name.len() as u64;
                inodes.insert(
                    OsString::from(std::ffi::OsStr::from_bytes(&name)),
                    (made.first + at as u64, kind),
                );
            }
            Node::Directory {
                entries: Arc::new(inodes),
            }
        }
    };
    made.nodes[index] = built;
    index
}
