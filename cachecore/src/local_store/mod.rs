//! The machine's own Nix store: which paths are valid, their metadata and their closures.
//!
//! Three sources, chosen by [`LocalStore::open`] or explicitly with [`LocalStore::open_with`].
//! None spawns a process per path:
//!
//! - [`Source::Database`]: Nix's SQLite database (`/nix/var/nix/db/db.sqlite`), opened
//!   read-only. Nix keeps it in WAL mode, so reading works while Nix writes. No process, no
//!   daemon: the fastest, for root and single-user installs.
//! - [`Source::Daemon`]: the Nix daemon's socket (`/nix/var/nix/daemon-socket/socket`), spoken
//!   to in Nix's worker protocol: for non-root users of a multi-user install, who cannot read
//!   the database. A closure's requests are pipelined a level of the walk at a time.
//! - [`Source::NixCommand`]: when neither can be reached. A whole closure costs one
//!   `nix path-info --json --recursive` process (two when the roots mix `.drv` files and other
//!   paths).
//!
//! ```no_run
//! use cachecore::{local_store::LocalStore, store_path::StoreDir};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let store = LocalStore::open(StoreDir::default())?;
//! let root = store.resolve("./result".as_ref())?;
//! for info in store.closure(&[root])? {
//!     // References come before the paths that refer to them.
//!     println!("{} {} {}", store.store_dir().full_path(&info.path), info.nar_hash, info.nar_size);
//! }
//! # Ok(())
//! # }
//! ```

mod daemon;
mod database;
mod nix_command;
mod wire;

#[cfg(fuzzing)]
pub(crate) use daemon::fuzz_conversation as fuzz_daemon_conversation;

use std::collections::{HashMap, VecDeque};
use std::ffi::OsString;
use std::fmt;
use std::io;
use std::path::{Component, Path, PathBuf};

use crate::hash::Hash;
use crate::store_path::{StoreDir, StorePath};

use daemon::DaemonClient;
pub use daemon::{DaemonInfo, DaemonProblem};
use database::Database;
use nix_command::NixCommand;

/// Nix's state directory unless `NIX_STATE_DIR` says otherwise.
pub const DEFAULT_STATE_DIR: &str = "/nix/var/nix";
/// Nix's log directory unless `NIX_LOG_DIR` says otherwise.
pub const DEFAULT_LOG_DIR: &str = "/nix/var/log/nix";

/// Symlinks followed while resolving one argument before giving up (Linux's own limit).
const MAX_SYMLINK_HOPS: usize = 40;

/// What Nix knows about one valid store path (a row of `ValidPaths` with its references).
///
/// See [`LocalStore`] for an example.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathInfo {
    pub path: StorePath,
    /// Hash of the path's NAR serialisation.
    pub nar_hash: Hash,
    pub nar_size: u64,
    /// Sorted by store path; a self-reference is listed like any other.
    pub references: Vec<StorePath>,
    pub deriver: Option<StorePath>,
    /// Seconds since the epoch.
    pub registration_time: i64,
    /// `keyname:base64` signatures, as Nix stores them.
    pub signatures: Vec<String>,
    /// Content-address assertion (`fixed:r:sha256:…`, `text:sha256:…`), if any.
    pub ca: Option<String>,
    /// Whether this machine built the path (rather than substituting it).
    pub ultimate: bool,
}

// Here rather than in `graph`, so that `graph` (which knows nodes, not where they come from)
// does not import this module, which uses its sorts.
impl crate::graph::Node for PathInfo {
    fn path(&self) -> &StorePath {
        &self.path
    }
    fn references(&self) -> &[StorePath] {
        &self.references
    }
}

impl PathInfo {
    /// References other than the path itself.
    ///
    /// See [`LocalStore`] for an example.
    pub fn references_without_self(&self) -> impl Iterator<Item = &StorePath> {
        self.references.iter().filter(move |r| **r != self.path)
    }
}

/// Where a [`LocalStore`] reads its metadata from.
///
/// ```
/// use std::path::Path;
/// use cachecore::local_store::Source;
/// # std::env::remove_var("NIX_STATE_DIR");
/// # std::env::remove_var("NIX_DAEMON_SOCKET_PATH");
/// assert_eq!(Source::default_database(), Path::new("/nix/var/nix/db/db.sqlite"));
/// assert_eq!(Source::default_daemon_socket(), Path::new("/nix/var/nix/daemon-socket/socket"));
/// std::env::set_var("NIX_STATE_DIR", "/tmp/nix-state");
/// assert_eq!(Source::default_database(), Path::new("/tmp/nix-state/db/db.sqlite"));
/// assert_eq!(Source::NixCommand.to_string(), "`nix path-info`");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Source {
    /// Nix's SQLite database at this path, opened read-only.
    Database(PathBuf),
    /// The Nix daemon listening on this unix socket.
    Daemon(PathBuf),
    /// `nix path-info --json` (the `nix` found on `PATH`), one process per query or closure.
    NixCommand,
}

impl Source {
    /// The database Nix uses: `$NIX_STATE_DIR/db/db.sqlite`, by default
    /// `/nix/var/nix/db/db.sqlite`.
    ///
    /// See [`Source`] for an example.
    pub fn default_database() -> PathBuf {
        state_dir().join("db").join("db.sqlite")
    }

    /// The socket Nix's clients connect to: `$NIX_DAEMON_SOCKET_PATH`, else
    /// `$NIX_STATE_DIR/daemon-socket/socket`, by default `/nix/var/nix/daemon-socket/socket`.
    ///
    /// See [`Source`] for an example.
    pub fn default_daemon_socket() -> PathBuf {
        match std::env::var_os("NIX_DAEMON_SOCKET_PATH").filter(|s| !s.is_empty()) {
            Some(socket) => PathBuf::from(socket),
            None => state_dir().join("daemon-socket").join("socket"),
        }
    }
}

fn state_dir() -> PathBuf {
    PathBuf::from(
        std::env::var_os("NIX_STATE_DIR")
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| OsString::from(DEFAULT_STATE_DIR)),
    )
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Database(db) => write!(f, "the Nix database {}", db.display()),
            Source::Daemon(socket) => write!(f, "the Nix daemon at {}", socket.display()),
            Source::NixCommand => f.write_str("`nix path-info`"),
        }
    }
}

/// What SQLite said about the Nix database (the library's own error, kept out of the public
/// API so its version is not part of ours).
#[derive(Debug)]
pub struct DatabaseError(pub(crate) rusqlite::Error);

impl fmt::Display for DatabaseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for DatabaseError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

/// Why the local store could not answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LocalStoreError {
    #[error("cannot open the Nix database {} read-only: {source}", db.display())]
    OpenDatabase { db: PathBuf, source: DatabaseError },
    #[error("cannot read the Nix database {}: {source}", db.display())]
    NoDatabase { db: PathBuf, source: io::Error },
    #[error("cannot read the Nix database {} ({what}): {source}", db.display())]
    Database {
        db: PathBuf,
        what: String,
        source: DatabaseError,
    },
    // The cause is said in the message and not chained as a `source`, so a report that joins
    // an error's chain says it once.
    #[error("cannot connect to the Nix daemon at {}: {cause}", socket.display())]
    DaemonConnect { socket: PathBuf, cause: io::Error },
    /// The daemon failed `op` (`handshake`, `query-path-info /nix/store/…`), or its peer was
    /// not a Nix daemon, or the connection broke.
    #[error("{op} with the Nix daemon at {} failed: {problem}", socket.display())]
    Daemon {
        socket: PathBuf,
        op: String,
        problem: DaemonProblem,
    },
    /// A row, a daemon reply or a JSON record holds something that is not a valid store path
    /// or hash.
    #[error("{source_name} has a bad record for {path}: {reason}")]
    BadRecord {
        source_name: String,
        path: String,
        reason: String,
    },
    #[error("{} is not a valid path in the local Nix store: it is not inside {store_dir}", arg.display())]
    NotInStore { arg: PathBuf, store_dir: String },
    #[error(
        "{path} is not a valid path in the local Nix store{}",
        via_arg(arg, path)
    )]
    NotValid { path: String, arg: Option<PathBuf> },
    #[error("cannot resolve {}: {}: {source}", arg.display(), at.display())]
    Resolve {
        arg: PathBuf,
        at: PathBuf,
        source: io::Error,
    },
    #[error("cannot resolve {}: more than {MAX_SYMLINK_HOPS} symbolic links", arg.display())]
    SymlinkLoop { arg: PathBuf },
    #[error(transparent)]
    Cycle(#[from] crate::graph::Cycle),
    #[error("cannot run `{command}`: {source}{}", fallback_note(fallback))]
    SpawnNix {
        command: String,
        source: io::Error,
        /// Why the database and the daemon were not used instead, when [`LocalStore::open`]
        /// fell back to `nix` ("the other sources failed: …").
        fallback: Option<String>,
    },
    #[error("`{command}` failed ({status}): {stderr}")]
    NixFailed {
        command: String,
        status: std::process::ExitStatus,
        stderr: String,
    },
    #[error("`{command}` printed output that is not the expected JSON: {reason}")]
    NixOutput { command: String, reason: String },
}

impl LocalStoreError {
    /// What kind of failure this is: a path the user named that is not in the store is
    /// [`NotFound`](crate::error::ErrorKind::NotFound) or
    /// [`InvalidInput`](crate::error::ErrorKind::InvalidInput); a bad record or a cycle in the
    /// store's own data is [`Corrupt`](crate::error::ErrorKind::Corrupt); the database, daemon
    /// or `nix` failing is [`Local`](crate::error::ErrorKind::Local).
    ///
    /// See [`LocalStore::resolve`] for an example.
    pub fn kind(&self) -> crate::error::ErrorKind {
        use crate::error::ErrorKind as K;
        match self {
            LocalStoreError::OpenDatabase { .. }
            | LocalStoreError::NoDatabase { .. }
            | LocalStoreError::Database { .. }
            | LocalStoreError::DaemonConnect { .. }
            | LocalStoreError::Daemon { .. }
            | LocalStoreError::SpawnNix { .. }
            | LocalStoreError::NixFailed { .. }
            | LocalStoreError::NixOutput { .. } => K::Local,
            LocalStoreError::BadRecord { .. } | LocalStoreError::Cycle { .. } => K::Corrupt,
            LocalStoreError::NotValid { .. } => K::NotFound,
            LocalStoreError::Resolve { source, .. } if source.kind() == io::ErrorKind::NotFound => {
                K::NotFound
            }
            LocalStoreError::NotInStore { .. }
            | LocalStoreError::Resolve { .. }
            | LocalStoreError::SymlinkLoop { .. } => K::InvalidInput,
        }
    }
}

fn via_arg(arg: &Option<PathBuf>, path: &str) -> String {
    match arg {
        Some(a) if a.as_os_str() != path => format!(" (resolved from {})", a.display()),
        _ => String::new(),
    }
}

fn fallback_note(fallback: &Option<String>) -> String {
    match fallback {
        Some(why) => format!(" ({why})"),
        None => String::new(),
    }
}

#[derive(Debug)]
enum Backend {
    Database(Database),
    Daemon(DaemonClient),
    NixCommand {
        /// Why [`LocalStore::open`] did not use the database or the daemon.
        fallback: Option<String>,
    },
}

/// Read-only access to the metadata of the machine's Nix store.
///
/// ```
/// use cachecore::local_store::{LocalStore, Source};
/// use cachecore::store_path::{StoreDir, StorePath};
/// # let tmp = tempfile::tempdir().unwrap();
/// # let db = tmp.path().join("db.sqlite");
/// # rusqlite::Connection::open(&db).unwrap().execute_batch("
/// #   CREATE TABLE ValidPaths (id INTEGER PRIMARY KEY, path TEXT UNIQUE NOT NULL, hash TEXT NOT NULL,
/// #     registrationTime INTEGER NOT NULL, deriver TEXT, narSize INTEGER, ultimate INTEGER, sigs TEXT, ca TEXT);
/// #   CREATE TABLE Refs (referrer INTEGER NOT NULL, reference INTEGER NOT NULL);
/// #   INSERT INTO ValidPaths VALUES
/// #     (1, '/nix/store/00000000000000000000000000000000-glibc', 'sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855', 0, NULL, 120, 0, NULL, NULL),
/// #     (2, '/nix/store/7h7qgvs4kgzsn8a6rb273saxyqh4jxlz-hello-2.12', 'sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855', 0, '/nix/store/11111111111111111111111111111111-hello-2.12.drv', 200, 1, 'cache.nixos.org-1:abc', NULL);
/// #   INSERT INTO Refs VALUES (2, 1), (2, 2);
/// # ").unwrap();
/// // `db`: a small Nix database (hidden), standing in for /nix/var/nix/db/db.sqlite.
/// let store = LocalStore::open_with(StoreDir::default(), Source::Database(db)).unwrap();
/// assert!(matches!(store.source(), Source::Database(_)));
/// assert_eq!(store.store_dir(), &StoreDir::default());
/// assert!(store.daemon_info().is_none()); // not a daemon
/// let hello = StorePath::from_base_name("7h7qgvs4kgzsn8a6rb273saxyqh4jxlz-hello-2.12").unwrap();
/// assert!(store.is_valid(&hello).unwrap());
/// let info = store.path_info(&hello).unwrap().unwrap();
/// assert_eq!((info.nar_size, info.references.len()), (200, 2)); // itself and glibc
/// assert_eq!(info.references_without_self().count(), 1);
/// assert_eq!(info.deriver.unwrap().name(), "hello-2.12.drv");
/// ```
pub struct LocalStore {
    store_dir: StoreDir,
    backend: Backend,
}

impl fmt::Debug for LocalStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalStore")
            .field("store_dir", &self.store_dir)
            .field("source", &self.source())
            .finish()
    }
}

/// The daemon socket `NIX_REMOTE` points at, if it names the local daemon: `""`, `auto` and
/// `daemon` mean the default socket, `unix://PATH` that path (the default when empty; query
/// parameters are not part of it). `None` for anything else (`local`, a chroot store,
/// `ssh://`…).
fn daemon_socket_for(remote: &str) -> Option<PathBuf> {
    match remote {
        "" | "auto" | "daemon" => Some(Source::default_daemon_socket()),
        _ => {
            let rest = remote.strip_prefix("unix://")?;
            let path = rest.split_once('?').map_or(rest, |(p, _)| p);
            Some(if path.is_empty() {
                Source::default_daemon_socket()
            } else {
                PathBuf::from(path)
            })
        }
    }
}

impl LocalStore {
    /// Opens the store the way Nix on this machine would be asked, without spawning a process
    /// per path: the database read-only when it can be read; else, when `NIX_REMOTE` is
    /// unset, empty, `auto`, `daemon` or `unix://PATH`, the daemon socket
    /// ([`Source::default_daemon_socket`], or PATH) if it exists and a daemon answers on it;
    /// else `nix path-info`.
    ///
    /// The database is skipped when `NIX_REMOTE` names a store other than the local one
    /// (a chroot store, `ssh://`…), since its contents are then not what `nix` sees.
    ///
    /// ```no_run
    /// // `no_run`: it needs this machine's Nix (its database, its daemon or the `nix` command);
    /// // the examples on `LocalStore` read a stand-in database instead.
    /// use cachecore::{local_store::LocalStore, store_path::StoreDir};
    /// let store = LocalStore::open(StoreDir::default()).unwrap();
    /// println!("reading {}", store.source());
    /// let system = store.resolve("/run/current-system".as_ref()).unwrap();
    /// println!("{} paths", store.closure(&[system]).unwrap().len());
    /// ```
    pub fn open(store_dir: StoreDir) -> Result<LocalStore, LocalStoreError> {
        let remote = std::env::var("NIX_REMOTE").unwrap_or_default();
        let socket = daemon_socket_for(&remote);
        if socket.is_none() && remote != "local" {
            return Ok(LocalStore {
                store_dir,
                backend: Backend::NixCommand {
                    fallback: Some(format!(
                        "neither the Nix database nor the daemon was tried: NIX_REMOTE={remote} \
                         names another store"
                    )),
                },
            });
        }
        let mut failures = Vec::new();
        match Database::open(Source::default_database()) {
            Ok(db) => return Ok(Self::with_backend(store_dir, Backend::Database(db))),
            Err(e) => failures.push(e.to_string()),
        }
        if let Some(socket) = socket {
            match DaemonClient::open(socket) {
                Ok(client) => return Ok(Self::with_backend(store_dir, Backend::Daemon(client))),
                Err(e) => failures.push(e.to_string()),
            }
        }
        Ok(Self::with_backend(
            store_dir,
            Backend::NixCommand {
                fallback: Some(format!(
                    "and the other sources failed: {}",
                    failures.join("; ")
                )),
            },
        ))
    }

    /// Opens the store with the given source; a database that cannot be opened and queried,
    /// or a daemon that cannot be connected to and greeted, is an error here (no fallback).
    ///
    /// See [`LocalStore`] for an example.
    pub fn open_with(store_dir: StoreDir, source: Source) -> Result<LocalStore, LocalStoreError> {
        let backend = match source {
            Source::Database(db) => Backend::Database(Database::open(db)?),
            Source::Daemon(socket) => Backend::Daemon(DaemonClient::open(socket)?),
            Source::NixCommand => Backend::NixCommand { fallback: None },
        };
        Ok(Self::with_backend(store_dir, backend))
    }

    fn with_backend(store_dir: StoreDir, backend: Backend) -> LocalStore {
        LocalStore { store_dir, backend }
    }

    /// The store directory the paths are in. See [`LocalStore`] for an example.
    pub fn store_dir(&self) -> &StoreDir {
        &self.store_dir
    }

    /// Where the metadata comes from.
    ///
    /// See [`LocalStore`] for an example.
    pub fn source(&self) -> Source {
        match &self.backend {
            Backend::Database(db) => Source::Database(db.path().to_owned()),
            Backend::Daemon(client) => Source::Daemon(client.socket().to_owned()),
            Backend::NixCommand { .. } => Source::NixCommand,
        }
    }

    /// What the daemon said of itself when greeted (protocol version, Nix version, trust);
    /// `None` unless the source is [`Source::Daemon`].
    ///
    /// See [`LocalStore`] for an example.
    pub fn daemon_info(&self) -> Option<Result<DaemonInfo, LocalStoreError>> {
        match &self.backend {
            Backend::Daemon(client) => Some(client.info()),
            _ => None,
        }
    }

    fn nix(&self) -> NixCommand<'_> {
        NixCommand {
            store_dir: &self.store_dir,
            fallback: match &self.backend {
                Backend::NixCommand { fallback } => fallback.as_deref(),
                _ => None,
            },
        }
    }

    /// Turns `./result`, `/nix/store/<hash>-x` or `/nix/store/<hash>-x/bin/y` into the store
    /// path, following symbolic links (chains included) until the path is inside the store
    /// directory; links inside a store path are not followed. The path must be valid
    /// (registered) in the local store.
    ///
    /// ```
    /// use cachecore::{error::ErrorKind, local_store::{LocalStore, Source}, store_path::StoreDir};
    /// # let tmp = tempfile::tempdir().unwrap();
    /// # let db = tmp.path().join("db.sqlite");
    /// # rusqlite::Connection::open(&db).unwrap().execute_batch("
    /// #   CREATE TABLE ValidPaths (id INTEGER PRIMARY KEY, path TEXT UNIQUE NOT NULL, hash TEXT NOT NULL,
    /// #     registrationTime INTEGER NOT NULL, deriver TEXT, narSize INTEGER, ultimate INTEGER, sigs TEXT, ca TEXT);
    /// #   CREATE TABLE Refs (referrer INTEGER NOT NULL, reference INTEGER NOT NULL);
    /// #   INSERT INTO ValidPaths VALUES
    /// #     (1, '/nix/store/00000000000000000000000000000000-glibc', 'sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855', 0, NULL, 120, 0, NULL, NULL),
    /// #     (2, '/nix/store/7h7qgvs4kgzsn8a6rb273saxyqh4jxlz-hello-2.12', 'sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855', 0, '/nix/store/11111111111111111111111111111111-hello-2.12.drv', 200, 1, 'cache.nixos.org-1:abc', NULL);
    /// #   INSERT INTO Refs VALUES (2, 1), (2, 2);
    /// # ").unwrap();
    /// // `db`: a small Nix database (hidden), standing in for /nix/var/nix/db/db.sqlite.
    /// let store = LocalStore::open_with(StoreDir::default(), Source::Database(db)).unwrap();
    /// let full = "/nix/store/7h7qgvs4kgzsn8a6rb273saxyqh4jxlz-hello-2.12/bin/hello";
    /// assert_eq!(store.resolve(full.as_ref()).unwrap().name(), "hello-2.12");
    /// // Not registered in this store:
    /// let e = store.resolve("/nix/store/22222222222222222222222222222222-gone".as_ref()).unwrap_err();
    /// assert_eq!(e.kind(), ErrorKind::NotFound);
    /// ```
    pub fn resolve(&self, arg: &Path) -> Result<StorePath, LocalStoreError> {
        let (path, _) = resolve_path_arg(&self.store_dir, arg)?;
        if self.is_valid(&path)? {
            Ok(path)
        } else {
            Err(LocalStoreError::NotValid {
                path: self.store_dir.full_path(&path),
                arg: Some(arg.to_owned()),
            })
        }
    }

    /// Whether `path` is valid (registered) in the local store.
    ///
    /// See [`LocalStore`] for an example.
    pub fn is_valid(&self, path: &StorePath) -> Result<bool, LocalStoreError> {
        match &self.backend {
            Backend::Database(db) => db.is_valid(&self.store_dir, path),
            Backend::Daemon(client) => client.is_valid(&self.store_dir, path),
            Backend::NixCommand { .. } => Ok(self.path_info(path)?.is_some()),
        }
    }

    /// The metadata of one path; `None` when it is not valid in the local store.
    ///
    /// See [`LocalStore`] for an example.
    pub fn path_info(&self, path: &StorePath) -> Result<Option<PathInfo>, LocalStoreError> {
        match &self.backend {
            Backend::Database(db) => db.path_info(&self.store_dir, path),
            Backend::Daemon(client) => client.path_info(&self.store_dir, path),
            Backend::NixCommand { .. } => {
                let mut infos = self
                    .nix()
                    .nix_path_info(std::slice::from_ref(path), false)?;
                Ok(infos.pop())
            }
        }
    }

    /// The closure of `roots` (roots included): each path once, references before the paths
    /// that refer to them. Self-references are ignored for the order; any other cycle is an
    /// error. A root that is not valid is [`LocalStoreError::NotValid`].
    ///
    /// The order is the same from every source: the post-order of a depth-first walk from the
    /// roots in the order given, visiting references in store-path order.
    ///
    /// With the database, the whole walk is one read transaction, so it sees one consistent
    /// snapshot even while Nix registers or collects paths. The daemon answers each path
    /// from its own database as it is asked.
    ///
    /// ```
    /// use cachecore::{local_store::{LocalStore, Source}, store_path::{StoreDir, StorePath}};
    /// # let tmp = tempfile::tempdir().unwrap();
    /// # let db = tmp.path().join("db.sqlite");
    /// # rusqlite::Connection::open(&db).unwrap().execute_batch("
    /// #   CREATE TABLE ValidPaths (id INTEGER PRIMARY KEY, path TEXT UNIQUE NOT NULL, hash TEXT NOT NULL,
    /// #     registrationTime INTEGER NOT NULL, deriver TEXT, narSize INTEGER, ultimate INTEGER, sigs TEXT, ca TEXT);
    /// #   CREATE TABLE Refs (referrer INTEGER NOT NULL, reference INTEGER NOT NULL);
    /// #   INSERT INTO ValidPaths VALUES
    /// #     (1, '/nix/store/00000000000000000000000000000000-glibc', 'sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855', 0, NULL, 120, 0, NULL, NULL),
    /// #     (2, '/nix/store/7h7qgvs4kgzsn8a6rb273saxyqh4jxlz-hello-2.12', 'sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855', 0, '/nix/store/11111111111111111111111111111111-hello-2.12.drv', 200, 1, 'cache.nixos.org-1:abc', NULL);
    /// #   INSERT INTO Refs VALUES (2, 1), (2, 2);
    /// # ").unwrap();
    /// // `db`: a small Nix database (hidden), standing in for /nix/var/nix/db/db.sqlite.
    /// let store = LocalStore::open_with(StoreDir::default(), Source::Database(db)).unwrap();
    /// let hello = StorePath::from_base_name("7h7qgvs4kgzsn8a6rb273saxyqh4jxlz-hello-2.12").unwrap();
    /// let closure = store.closure(&[hello]).unwrap();
    /// let names: Vec<&str> = closure.iter().map(|info| info.path.name()).collect();
    /// assert_eq!(names, ["glibc", "hello-2.12"]); // references first
    /// ```
    pub fn closure(&self, roots: &[StorePath]) -> Result<Vec<PathInfo>, LocalStoreError> {
        let infos = match &self.backend {
            Backend::Database(db) => db.closure(&self.store_dir, roots)?,
            Backend::Daemon(client) => client.closure(&self.store_dir, roots)?,
            Backend::NixCommand { .. } => self.nix().nix_path_info(roots, true)?,
        };
        // Walk from the roots in the order given, then the rest by path: the order depends
        // only on the graph, not on the order the source listed the paths in.
        let rank: HashMap<&StorePath, usize> = roots
            .iter()
            .enumerate()
            .rev()
            .map(|(i, r)| (r, i))
            .collect();
        let mut keyed: Vec<(usize, PathInfo)> = infos
            .into_iter()
            .map(|info| (rank.get(&info.path).copied().unwrap_or(usize::MAX), info))
            .collect();
        keyed.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.path.cmp(&b.1.path)));
        Ok(crate::graph::references_first(
            keyed.into_iter().map(|(_, info)| info).collect(),
        )?)
    }

    /// The build log Nix kept for a derivation, if any: `<log dir>/drvs/<2>/<rest>[.bz2]` (or the
    /// older flat `drvs/<name>[.bz2]`), where the log dir is `$NIX_LOG_DIR` or
    /// `/nix/var/log/nix`. A `.bz2` extension means the file is bzip2-compressed.
    ///
    /// Given an output path rather than a `.drv`, looks up its deriver first.
    ///
    /// ```
    /// use cachecore::{local_store::{LocalStore, Source}, store_path::{StoreDir, StorePath}};
    /// # let tmp = tempfile::tempdir().unwrap();
    /// # let db = tmp.path().join("db.sqlite");
    /// # rusqlite::Connection::open(&db).unwrap().execute_batch("
    /// #   CREATE TABLE ValidPaths (id INTEGER PRIMARY KEY, path TEXT UNIQUE NOT NULL, hash TEXT NOT NULL,
    /// #     registrationTime INTEGER NOT NULL, deriver TEXT, narSize INTEGER, ultimate INTEGER, sigs TEXT, ca TEXT);
    /// #   CREATE TABLE Refs (referrer INTEGER NOT NULL, reference INTEGER NOT NULL);
    /// #   INSERT INTO ValidPaths VALUES
    /// #     (1, '/nix/store/00000000000000000000000000000000-glibc', 'sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855', 0, NULL, 120, 0, NULL, NULL),
    /// #     (2, '/nix/store/7h7qgvs4kgzsn8a6rb273saxyqh4jxlz-hello-2.12', 'sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855', 0, '/nix/store/11111111111111111111111111111111-hello-2.12.drv', 200, 1, 'cache.nixos.org-1:abc', NULL);
    /// #   INSERT INTO Refs VALUES (2, 1), (2, 2);
    /// # ").unwrap();
    /// // `db`: a small Nix database (hidden), standing in for /nix/var/nix/db/db.sqlite.
    /// let store = LocalStore::open_with(StoreDir::default(), Source::Database(db)).unwrap();
    /// std::env::set_var("NIX_LOG_DIR", tmp.path());
    /// let drv = StorePath::from_base_name("11111111111111111111111111111111-hello-2.12.drv").unwrap();
    /// assert_eq!(store.build_log_path(&drv), None);
    /// let log = tmp.path().join("drvs/11/111111111111111111111111111111-hello-2.12.drv.bz2");
    /// std::fs::create_dir_all(log.parent().unwrap()).unwrap();
    /// std::fs::write(&log, b"").unwrap();
    /// assert_eq!(store.build_log_path(&drv), Some(log.clone()));
    /// // Given an output path, the log of its deriver.
    /// let hello = StorePath::from_base_name("7h7qgvs4kgzsn8a6rb273saxyqh4jxlz-hello-2.12").unwrap();
    /// assert_eq!(store.build_log_path(&hello), Some(log));
    /// ```
    pub fn build_log_path(&self, drv: &StorePath) -> Option<PathBuf> {
        let drv = if drv.name().ends_with(".drv") {
            drv.clone()
        } else {
            self.path_info(drv).ok().flatten()?.deriver?
        };
        let log_dir = std::env::var_os("NIX_LOG_DIR")
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| OsString::from(DEFAULT_LOG_DIR));
        let drvs = PathBuf::from(log_dir).join("drvs");
        let base = drv.to_string();
        let (head, rest) = base.split_at(2.min(base.len()));
        [drvs.join(head).join(rest), drvs.join(&base)]
            .into_iter()
            .flat_map(|p| {
                let mut bz2 = p.clone().into_os_string();
                bz2.push(".bz2");
                [PathBuf::from(bz2), p]
            })
            .find(|p| p.is_file())
    }
}

/// The store path a command-line argument names, and the part of it below the store path
/// (`""` for the store path itself): what every command that takes a store path accepts.
///
/// - `/nix/store/<hash>-<name>[/sub]`: taken as written (the path need not exist here);
/// - `./result`, `./result/bin/x`, any chain of symbolic links: followed on this machine until
///   they reach the store directory; what lies below the store path is taken as named, never
///   followed, so the store path itself need not exist here (a `result` link to a path that is
///   only in a cache works);
/// - `<hash>-<name>[/sub]`, a store path's base name, when no such file is in the current
///   directory.
///
/// ```
/// use cachecore::{local_store::resolve_path_arg, store_path::StoreDir};
/// let dir = StoreDir::default();
/// let (path, sub) = resolve_path_arg(&dir, "/nix/store/7h7qgvs4kgzsn8a6rb273saxyqh4jxlz-hello-2.12/bin/hello".as_ref()).unwrap();
/// assert_eq!((path.to_string().as_str(), sub.as_str()), ("7h7qgvs4kgzsn8a6rb273saxyqh4jxlz-hello-2.12", "bin/hello"));
/// let (path, sub) = resolve_path_arg(&dir, "7h7qgvs4kgzsn8a6rb273saxyqh4jxlz-hello-2.12".as_ref()).unwrap();
/// assert_eq!((path.name(), sub.as_str()), ("hello-2.12", ""));
/// assert!(resolve_path_arg(&dir, "/etc/hostname".as_ref()).is_err());
/// ```
pub fn resolve_path_arg(
    store_dir: &StoreDir,
    arg: &Path,
) -> Result<(StorePath, String), LocalStoreError> {
    let not_in_store = || LocalStoreError::NotInStore {
        arg: arg.to_owned(),
        store_dir: store_dir.as_str().to_owned(),
    };
    // A base name, unless a file of that name is here.
    if arg.is_relative() && arg.symlink_metadata().is_err() {
        let mut parts = arg.components();
        if let Some(Component::Normal(first)) = parts.next() {
            if let Some(path) = first
                .to_str()
                .and_then(|f| StorePath::from_base_name(f).ok())
            {
                let mut pending: VecDeque<OsString> = VecDeque::new();
                let mut unused = PathBuf::new();
                push_components(&mut pending, parts.as_path(), &mut unused);
                return Ok((path, sub_path(pending).ok_or_else(not_in_store)?));
            }
        }
    }
    let store_root = Path::new(store_dir.as_str());
    let start = if arg.is_absolute() {
        arg.to_owned()
    } else {
        let cwd = std::env::current_dir().map_err(|source| LocalStoreError::Resolve {
            arg: arg.to_owned(),
            at: PathBuf::from("."),
            source,
        })?;
        cwd.join(arg)
    };
    let mut pending: VecDeque<OsString> = VecDeque::new();
    let mut cur = PathBuf::from("/");
    push_components(&mut pending, &start, &mut cur);
    let mut hops = 0;
    while let Some(part) = pending.pop_front() {
        if part == ".." {
            cur.pop();
            continue;
        }
        cur.push(&part);
        if let Ok(rest) = cur.strip_prefix(store_root) {
            // One component below the store directory: that is the store path. What lies
            // further (links inside the store path included) is taken as named.
            if rest.components().count() == 1 {
                let base = rest.to_str().ok_or_else(not_in_store)?;
                let path = StorePath::from_base_name(base).map_err(|_| not_in_store())?;
                return Ok((path, sub_path(pending).ok_or_else(not_in_store)?));
            }
        }
        // The store directory itself and its ancestors are taken as named, so a store
        // reached through a symlinked /nix still counts as the store.
        if store_root.starts_with(&cur) {
            continue;
        }
        let meta = std::fs::symlink_metadata(&cur).map_err(|source| LocalStoreError::Resolve {
            arg: arg.to_owned(),
            at: cur.clone(),
            source,
        })?;
        if meta.file_type().is_symlink() {
            hops += 1;
            if hops > MAX_SYMLINK_HOPS {
                return Err(LocalStoreError::SymlinkLoop {
                    arg: arg.to_owned(),
                });
            }
            let target = std::fs::read_link(&cur).map_err(|source| LocalStoreError::Resolve {
                arg: arg.to_owned(),
                at: cur.clone(),
                source,
            })?;
            cur.pop();
            let mut tail: VecDeque<OsString> = VecDeque::new();
            push_components(&mut tail, &target, &mut cur);
            tail.extend(pending);
            pending = tail;
        }
    }
    Err(not_in_store())
}

/// The components below a store path, joined with `/`; `..` is resolved by name and may not
/// leave the store path (`None`).
fn sub_path(parts: VecDeque<OsString>) -> Option<String> {
    let mut out: Vec<String> = Vec::new();
    for part in parts {
        if part == ".." {
            out.pop()?;
        } else {
            out.push(part.to_string_lossy().into_owned());
        }
    }
    Some(out.join("/"))
}

fn push_components(out: &mut VecDeque<OsString>, path: &Path, cur: &mut PathBuf) {
    for c in path.components() {
        match c {
            Component::RootDir => {
                *cur = PathBuf::from("/");
                out.clear();
            }
            Component::Prefix(_) | Component::CurDir => {}
            Component::ParentDir => out.push_back(OsString::from("..")),
            Component::Normal(n) => out.push_back(n.to_owned()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nix_remote_names_the_daemon_socket() {
        let default = Source::default_daemon_socket();
        for (remote, want) in [
            ("", Some(default.clone())),
            ("auto", Some(default.clone())),
            ("daemon", Some(default.clone())),
            ("unix://", Some(default.clone())),
            (
                "unix:///run/nix/socket",
                Some(PathBuf::from("/run/nix/socket")),
            ),
            (
                "unix:///run/nix/socket?a=b",
                Some(PathBuf::from("/run/nix/socket")),
            ),
            ("local", None),
            ("/tmp/chroot", None),
            ("ssh://builder", None),
        ] {
            assert_eq!(daemon_socket_for(remote), want, "{remote:?}");
        }
    }

    #[test]
    fn resolve_rejects_paths_outside_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("x");
        std::fs::write(&file, "x").unwrap();
        let store = LocalStore::open_with(StoreDir::default(), Source::NixCommand).unwrap();
        let err = store.resolve(&file).unwrap_err();
        assert!(matches!(err, LocalStoreError::NotInStore { .. }), "{err}");
        assert!(
            err.to_string().starts_with(&format!(
                "{} is not a valid path in the local Nix store",
                file.display()
            )),
            "{err}"
        );
    }

    #[test]
    fn follow_stops_at_the_store_path() {
        let dir = tempfile::tempdir().unwrap();
        let store_dir = dir.path().join("store");
        let sp = format!("{}-app", "a".repeat(32));
        std::fs::create_dir_all(store_dir.join(&sp).join("bin")).unwrap();
        // A link inside the store path pointing elsewhere must not be followed.
        std::os::unix::fs::symlink("/etc", store_dir.join(&sp).join("bin/etc")).unwrap();
        std::os::unix::fs::symlink(store_dir.join(&sp), dir.path().join("result")).unwrap();
        std::os::unix::fs::symlink("result", dir.path().join("chain")).unwrap();
        let store = LocalStore::open_with(
            StoreDir::new(store_dir.to_str().unwrap()),
            Source::NixCommand,
        )
        .unwrap();
        for arg in ["chain", "result", "result/bin/etc", "chain/bin/../bin/etc"] {
            let (got, _) = resolve_path_arg(store.store_dir(), &dir.path().join(arg)).unwrap();
            assert_eq!(got.to_string(), sp, "{arg}");
        }
        let err = resolve_path_arg(store.store_dir(), &dir.path().join("missing")).unwrap_err();
        assert!(matches!(err, LocalStoreError::Resolve { .. }), "{err}");
        std::os::unix::fs::symlink("loop", dir.path().join("loop")).unwrap();
        let err = resolve_path_arg(store.store_dir(), &dir.path().join("loop")).unwrap_err();
        assert!(matches!(err, LocalStoreError::SymlinkLoop { .. }), "{err}");
    }

    #[test]
    fn path_args_keep_what_lies_below_the_store_path() {
        let dir = tempfile::tempdir().unwrap();
        let store_dir = StoreDir::new(dir.path().join("store").to_str().unwrap());
        let sp = format!("{}-app", "a".repeat(32));
        // A dangling link: the store path is only in a cache, not on this machine.
        std::os::unix::fs::symlink(
            dir.path().join("store").join(&sp),
            dir.path().join("result"),
        )
        .unwrap();
        let r = |arg: &str| resolve_path_arg(&store_dir, &dir.path().join(arg));
        let ok = |arg: &str| {
            let (p, sub) = r(arg).unwrap_or_else(|e| panic!("{arg}: {e}"));
            assert_eq!(p.to_string(), sp, "{arg}");
            sub
        };
        assert_eq!(ok("result"), "");
        assert_eq!(ok("result/"), "");
        assert_eq!(ok("result/bin/app"), "bin/app");
        assert_eq!(ok("result/bin/../README"), "README");
        assert_eq!(ok("./result/./bin"), "bin");
        assert!(matches!(
            r("result/.."),
            Err(LocalStoreError::NotInStore { .. })
        ));
        let full = format!("{}/{sp}/share/doc", store_dir.as_str());
        let (p, sub) = resolve_path_arg(&store_dir, full.as_ref()).unwrap();
        assert_eq!((p.to_string(), sub.as_str()), (sp.clone(), "share/doc"));
        // A base name (no such file here), with and without a sub-path.
        let (p, sub) = resolve_path_arg(&store_dir, format!("{sp}/bin").as_ref()).unwrap();
        assert_eq!((p.to_string(), sub.as_str()), (sp.clone(), "bin"));
        assert!(matches!(
            resolve_path_arg(&store_dir, "not-a-store-path".as_ref()),
            Err(LocalStoreError::Resolve { .. })
        ));
    }
}
