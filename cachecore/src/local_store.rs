//! The machine's own Nix store: which paths are valid, their metadata and their closures.
//!
//! Two sources, chosen by [`LocalStore::open`] or explicitly with [`LocalStore::open_with`]:
//!
//! - [`Source::Database`]: Nix's SQLite database (`/nix/var/nix/db/db.sqlite`), opened read-only.
//!   Nix keeps it in WAL mode, so reading works while Nix writes; a busy timeout covers the short
//!   moments (checkpoints, recovery) when SQLite makes a reader wait. No process is spawned.
//! - [`Source::NixCommand`]: for users who cannot read the database (non-root users of a
//!   multi-user install). A whole closure costs one `nix path-info --json --recursive` process
//!   (two when the roots mix `.drv` files and other paths), never one process per path.
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

use std::collections::{HashMap, HashSet, VecDeque};
use std::ffi::OsString;
use std::fmt;
use std::io;
use std::path::{Component, Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension};

use crate::hash::Hash;
use crate::store_path::{StoreDir, StorePath};

/// Nix's state directory unless `NIX_STATE_DIR` says otherwise.
pub const DEFAULT_STATE_DIR: &str = "/nix/var/nix";
/// Nix's log directory unless `NIX_LOG_DIR` says otherwise.
pub const DEFAULT_LOG_DIR: &str = "/nix/var/log/nix";

/// How long a query waits for a lock SQLite cannot give at once before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// Symlinks followed while resolving one argument before giving up (Linux's own limit).
const MAX_SYMLINK_HOPS: usize = 40;

/// What Nix knows about one valid store path (a row of `ValidPaths` with its references).
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

impl PathInfo {
    /// References other than the path itself.
    pub fn references_without_self(&self) -> impl Iterator<Item = &StorePath> {
        self.references.iter().filter(move |r| **r != self.path)
    }
}

/// Where a [`LocalStore`] reads its metadata from.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Source {
    /// Nix's SQLite database at this path, opened read-only.
    Database(PathBuf),
    /// `nix path-info --json` (the `nix` found on `PATH`), one process per query or closure.
    NixCommand,
}

impl Source {
    /// The database Nix uses: `$NIX_STATE_DIR/db/db.sqlite`, by default
    /// `/nix/var/nix/db/db.sqlite`.
    pub fn default_database() -> PathBuf {
        let state = std::env::var_os("NIX_STATE_DIR")
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| OsString::from(DEFAULT_STATE_DIR));
        PathBuf::from(state).join("db").join("db.sqlite")
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Database(db) => write!(f, "the Nix database {}", db.display()),
            Source::NixCommand => f.write_str("`nix path-info`"),
        }
    }
}

/// Why the local store could not answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LocalStoreError {
    #[error("cannot open the Nix database {} read-only: {source}", db.display())]
    OpenDatabase {
        db: PathBuf,
        source: rusqlite::Error,
    },
    #[error("cannot read the Nix database {}: {source}", db.display())]
    NoDatabase { db: PathBuf, source: io::Error },
    #[error("cannot read the Nix database {} ({what}): {source}", db.display())]
    Database {
        db: PathBuf,
        what: String,
        source: rusqlite::Error,
    },
    /// A row or a JSON record holds something that is not a valid store path or hash.
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
    #[error("store paths refer to each other in a cycle: {}", paths.join(" -> "))]
    Cycle { paths: Vec<String> },
    #[error("cannot run `{command}`: {source}{}", db_note(db_error))]
    SpawnNix {
        command: String,
        source: io::Error,
        /// Why the database was not used instead, when [`LocalStore::open`] fell back.
        db_error: Option<String>,
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

fn via_arg(arg: &Option<PathBuf>, path: &str) -> String {
    match arg {
        Some(a) if a.as_os_str() != path => format!(" (resolved from {})", a.display()),
        _ => String::new(),
    }
}

fn db_note(db_error: &Option<String>) -> String {
    match db_error {
        Some(e) => format!(" (the Nix database was not readable either: {e})"),
        None => String::new(),
    }
}

enum Backend {
    Database {
        db: PathBuf,
        // `Connection` is not `Sync`; the mutex also makes the NO_MUTEX open safe.
        conn: Mutex<Connection>,
    },
    NixCommand {
        db_error: Option<String>,
    },
}

/// Read-only access to the metadata of the machine's Nix store.
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

impl LocalStore {
    /// Opens the store the way Nix on this machine would be asked: the database read-only when
    /// it can be read, else `nix path-info`.
    ///
    /// The database is skipped when `NIX_REMOTE` names a store other than the local one
    /// (a chroot store, `ssh://`…), since its contents are then not what `nix` sees.
    pub fn open(store_dir: StoreDir) -> Result<LocalStore, LocalStoreError> {
        let remote = std::env::var("NIX_REMOTE").unwrap_or_default();
        let local_db = matches!(remote.as_str(), "" | "local" | "daemon" | "auto")
            || remote.starts_with("unix://");
        if !local_db {
            return Ok(LocalStore {
                store_dir,
                backend: Backend::NixCommand {
                    db_error: Some(format!("NIX_REMOTE={remote} is not the local store")),
                },
            });
        }
        match Self::open_with(
            store_dir.clone(),
            Source::Database(Source::default_database()),
        ) {
            Ok(store) => Ok(store),
            Err(e) => Ok(LocalStore {
                store_dir,
                backend: Backend::NixCommand {
                    db_error: Some(e.to_string()),
                },
            }),
        }
    }

    /// Opens the store with the given source; a database that cannot be opened and queried is
    /// an error here (no fallback).
    pub fn open_with(store_dir: StoreDir, source: Source) -> Result<LocalStore, LocalStoreError> {
        let backend = match source {
            Source::Database(db) => {
                let conn = open_database(&db)?;
                Backend::Database {
                    db,
                    conn: Mutex::new(conn),
                }
            }
            Source::NixCommand => Backend::NixCommand { db_error: None },
        };
        Ok(LocalStore { store_dir, backend })
    }

    pub fn store_dir(&self) -> &StoreDir {
        &self.store_dir
    }

    /// Where the metadata comes from.
    pub fn source(&self) -> Source {
        match &self.backend {
            Backend::Database { db, .. } => Source::Database(db.clone()),
            Backend::NixCommand { .. } => Source::NixCommand,
        }
    }

    /// Turns `./result`, `/nix/store/<hash>-x` or `/nix/store/<hash>-x/bin/y` into the store
    /// path, following symbolic links (chains included) until the path is inside the store
    /// directory; links inside a store path are not followed. The path must be valid
    /// (registered) in the local store.
    pub fn resolve(&self, arg: &Path) -> Result<StorePath, LocalStoreError> {
        let path = self.follow_to_store_path(arg)?;
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
    pub fn is_valid(&self, path: &StorePath) -> Result<bool, LocalStoreError> {
        match &self.backend {
            Backend::Database { db, conn } => {
                let conn = lock(conn);
                let full = self.store_dir.full_path(path);
                let mut stmt = conn
                    .prepare_cached("SELECT 1 FROM ValidPaths WHERE path = ?1")
                    .map_err(|e| db_error(db, format!("looking up {full}"), e))?;
                stmt.exists([&full])
                    .map_err(|e| db_error(db, format!("looking up {full}"), e))
            }
            Backend::NixCommand { .. } => Ok(self.path_info(path)?.is_some()),
        }
    }

    /// The metadata of one path; `None` when it is not valid in the local store.
    pub fn path_info(&self, path: &StorePath) -> Result<Option<PathInfo>, LocalStoreError> {
        match &self.backend {
            Backend::Database { db, conn } => {
                let conn = lock(conn);
                let q = Queries {
                    db,
                    conn: &conn,
                    store_dir: &self.store_dir,
                };
                let full = self.store_dir.full_path(path);
                match q.row_by_path(&full)? {
                    None => Ok(None),
                    Some(row) => {
                        let refs = q.references(row.id, &full)?;
                        Ok(Some(q.to_info(
                            row,
                            refs.into_iter().map(|(_, p)| p).collect(),
                        )?))
                    }
                }
            }
            Backend::NixCommand { .. } => {
                let mut infos = self.nix_path_info(std::slice::from_ref(path), false)?;
                Ok(infos.pop())
            }
        }
    }

    /// The closure of `roots` (roots included): each path once, references before the paths
    /// that refer to them. Self-references are ignored for the order; any other cycle is an
    /// error. A root that is not valid is [`LocalStoreError::NotValid`].
    ///
    /// The order is the same from both sources: the post-order of a depth-first walk from the
    /// roots in the order given, visiting references in store-path order.
    ///
    /// With the database, the whole walk is one read transaction, so it sees one consistent
    /// snapshot even while Nix registers or collects paths.
    pub fn closure(&self, roots: &[StorePath]) -> Result<Vec<PathInfo>, LocalStoreError> {
        let infos = match &self.backend {
            Backend::Database { db, conn } => {
                let mut conn = lock(conn);
                let tx = conn
                    .transaction()
                    .map_err(|e| db_error(db, "starting a read transaction".into(), e))?;
                let q = Queries {
                    db,
                    conn: &tx,
                    store_dir: &self.store_dir,
                };
                let infos = q.closure(roots)?;
                // Read-only: nothing to commit; dropping the transaction rolls back.
                drop(tx);
                infos
            }
            Backend::NixCommand { .. } => self.nix_path_info(roots, true)?,
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
        topo_sort(keyed.into_iter().map(|(_, info)| info).collect())
    }

    /// The build log Nix kept for a derivation, if any: `<log dir>/drvs/<2>/<rest>[.bz2]` (or the
    /// older flat `drvs/<name>[.bz2]`), where the log dir is `$NIX_LOG_DIR` or
    /// `/nix/var/log/nix`. A `.bz2` extension means the file is bzip2-compressed.
    ///
    /// Given an output path rather than a `.drv`, looks up its deriver first.
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

    /// Follows symlinks from `arg` until it names something inside the store directory, and
    /// returns the store path it is in.
    fn follow_to_store_path(&self, arg: &Path) -> Result<StorePath, LocalStoreError> {
        let not_in_store = || LocalStoreError::NotInStore {
            arg: arg.to_owned(),
            store_dir: self.store_dir.as_str().to_owned(),
        };
        let store_dir = Path::new(self.store_dir.as_str());
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
            if let Ok(rest) = cur.strip_prefix(store_dir) {
                // One component below the store directory: that is the store path. What
                // lies further (links inside the store path included) does not matter.
                if rest.components().count() == 1 {
                    let base = rest.to_str().ok_or_else(not_in_store)?;
                    return StorePath::from_base_name(base).map_err(|_| not_in_store());
                }
            }
            // The store directory itself and its ancestors are taken as named, so a store
            // reached through a symlinked /nix still counts as the store.
            if store_dir.starts_with(&cur) {
                continue;
            }
            let meta =
                std::fs::symlink_metadata(&cur).map_err(|source| LocalStoreError::Resolve {
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
                let target =
                    std::fs::read_link(&cur).map_err(|source| LocalStoreError::Resolve {
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

    /// Runs `nix path-info --json` on `paths` (with `--recursive` for a closure). `.drv` paths
    /// must be named with `--derivation` (else Nix means their outputs) and other paths without
    /// it (else Nix means their derivers), so mixed lists take two processes.
    fn nix_path_info(
        &self,
        paths: &[StorePath],
        recursive: bool,
    ) -> Result<Vec<PathInfo>, LocalStoreError> {
        let (drvs, others): (Vec<&StorePath>, Vec<&StorePath>) =
            paths.iter().partition(|p| p.name().ends_with(".drv"));
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        for (group, derivation) in [(drvs, true), (others, false)] {
            if group.is_empty() {
                continue;
            }
            for info in self.run_nix_path_info(&group, recursive, derivation)? {
                if seen.insert(info.path.clone()) {
                    out.push(info);
                }
            }
        }
        Ok(out)
    }

    fn run_nix_path_info(
        &self,
        paths: &[&StorePath],
        recursive: bool,
        derivation: bool,
    ) -> Result<Vec<PathInfo>, LocalStoreError> {
        let mut cmd = Command::new("nix");
        cmd.args([
            "--extra-experimental-features",
            "nix-command",
            "path-info",
            "--json",
        ]);
        // Substituting a missing path is not ours to do: report it as not valid instead.
        cmd.arg("--offline");
        if recursive {
            cmd.arg("--recursive");
        }
        if derivation {
            cmd.arg("--derivation");
        }
        cmd.arg("--");
        for p in paths {
            cmd.arg(self.store_dir.full_path(p));
        }
        let command = format!(
            "nix path-info --json{}{} <{} path{}>",
            if recursive { " --recursive" } else { "" },
            if derivation { " --derivation" } else { "" },
            paths.len(),
            if paths.len() == 1 { "" } else { "s" },
        );
        let output = cmd.output().map_err(|source| LocalStoreError::SpawnNix {
            command: command.clone(),
            source,
            db_error: match &self.backend {
                Backend::NixCommand { db_error } => db_error.clone(),
                Backend::Database { .. } => None,
            },
        })?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr).trim().to_owned();
            // Nix 2.8 says "path '…' is not valid" for an invalid root under --recursive.
            if let Some(p) = paths.iter().find(|p| {
                stderr.contains(&format!(
                    "path '{}' is not valid",
                    self.store_dir.full_path(p)
                ))
            }) {
                return Err(LocalStoreError::NotValid {
                    path: self.store_dir.full_path(p),
                    arg: None,
                });
            }
            return Err(LocalStoreError::NixFailed {
                command,
                status: output.status,
                stderr,
            });
        }
        let records: Vec<JsonPathInfo> =
            serde_json::from_slice(&output.stdout).map_err(|e| LocalStoreError::NixOutput {
                command: command.clone(),
                reason: e.to_string(),
            })?;
        let mut infos = Vec::with_capacity(records.len());
        for r in records {
            infos.push(self.info_from_json(r, &command, recursive)?);
        }
        Ok(infos.into_iter().flatten().collect())
    }

    /// One `nix path-info` record; `Ok(None)` for an invalid path outside a closure query.
    fn info_from_json(
        &self,
        r: JsonPathInfo,
        command: &str,
        recursive: bool,
    ) -> Result<Option<PathInfo>, LocalStoreError> {
        let record_path = r.path.clone();
        let bad = |reason: String| LocalStoreError::BadRecord {
            source_name: format!("`{command}`"),
            path: record_path.clone(),
            reason,
        };
        let path = self.parse_full(&r.path).map_err(&bad)?;
        if r.valid == Some(false) {
            return if recursive {
                Err(LocalStoreError::NotValid {
                    path: r.path,
                    arg: None,
                })
            } else {
                Ok(None)
            };
        }
        let nar_hash = r
            .nar_hash
            .as_deref()
            .ok_or_else(|| bad("no narHash".into()))
            .and_then(|h| Hash::parse(h).map_err(|e| bad(e.to_string())))?;
        let mut references = r
            .references
            .iter()
            .map(|p| self.parse_full(p).map_err(&bad))
            .collect::<Result<Vec<_>, _>>()?;
        references.sort();
        let deriver = match r.deriver.as_deref() {
            None | Some("") => None,
            Some(d) => Some(self.parse_full(d).map_err(&bad)?),
        };
        Ok(Some(PathInfo {
            path,
            nar_hash,
            nar_size: r.nar_size.unwrap_or(0),
            references,
            deriver,
            registration_time: r.registration_time.unwrap_or(0),
            signatures: r.signatures,
            ca: r.ca.filter(|c| !c.is_empty()),
            ultimate: r.ultimate.unwrap_or(false),
        }))
    }

    fn parse_full(&self, full: &str) -> Result<StorePath, String> {
        self.store_dir
            .parse_path(full)
            .map(|p| p.to_owned())
            .map_err(|e| e.to_string())
    }
}

/// `nix path-info --json` record, Nix 2.8 spelling.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct JsonPathInfo {
    path: String,
    valid: Option<bool>,
    nar_hash: Option<String>,
    nar_size: Option<u64>,
    #[serde(default)]
    references: Vec<String>,
    deriver: Option<String>,
    registration_time: Option<i64>,
    #[serde(default)]
    signatures: Vec<String>,
    ca: Option<String>,
    ultimate: Option<bool>,
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

fn lock(conn: &Mutex<Connection>) -> std::sync::MutexGuard<'_, Connection> {
    // A panic while holding the lock leaves the connection usable: queries are read-only.
    conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn db_error(db: &Path, what: String, source: rusqlite::Error) -> LocalStoreError {
    LocalStoreError::Database {
        db: db.to_owned(),
        what,
        source,
    }
}

fn open_database(db: &Path) -> Result<Connection, LocalStoreError> {
    let open_err = |source| LocalStoreError::OpenDatabase {
        db: db.to_owned(),
        source,
    };
    // SQLite would only say "unable to open database file"; say why.
    std::fs::File::open(db).map_err(|source| LocalStoreError::NoDatabase {
        db: db.to_owned(),
        source,
    })?;
    let conn = Connection::open_with_flags(
        db,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(open_err)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(open_err)?;
    // Opening is lazy: a query proves the file is a Nix database we may read (a WAL database
    // whose -shm file we cannot map fails only here).
    conn.query_row(
        "SELECT count(*) FROM (SELECT 1 FROM ValidPaths LIMIT 1)",
        [],
        |r| r.get::<_, i64>(0),
    )
    .map_err(open_err)?;
    conn.query_row(
        "SELECT count(*) FROM (SELECT 1 FROM Refs LIMIT 1)",
        [],
        |r| r.get::<_, i64>(0),
    )
    .map_err(open_err)?;
    Ok(conn)
}

struct Row {
    id: i64,
    path: String,
    hash: String,
    registration_time: i64,
    deriver: Option<String>,
    nar_size: Option<i64>,
    ultimate: Option<i64>,
    sigs: Option<String>,
    ca: Option<String>,
}

const ROW_COLUMNS: &str =
    "id, path, hash, registrationTime, deriver, narSize, ultimate, sigs, ca FROM ValidPaths";

fn read_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
    Ok(Row {
        id: r.get(0)?,
        path: r.get(1)?,
        hash: r.get(2)?,
        registration_time: r.get(3)?,
        deriver: r.get(4)?,
        nar_size: r.get(5)?,
        ultimate: r.get(6)?,
        sigs: r.get(7)?,
        ca: r.get(8)?,
    })
}

struct Queries<'a> {
    db: &'a Path,
    conn: &'a Connection,
    store_dir: &'a StoreDir,
}

impl Queries<'_> {
    fn row_by_path(&self, full: &str) -> Result<Option<Row>, LocalStoreError> {
        let what = || format!("looking up {full}");
        let mut stmt = self
            .conn
            .prepare_cached(&format!("SELECT {ROW_COLUMNS} WHERE path = ?1"))
            .map_err(|e| db_error(self.db, what(), e))?;
        stmt.query_row([full], read_row)
            .optional()
            .map_err(|e| db_error(self.db, what(), e))
    }

    fn row_by_id(&self, id: i64, full: &str) -> Result<Row, LocalStoreError> {
        let what = || format!("looking up {full}");
        let mut stmt = self
            .conn
            .prepare_cached(&format!("SELECT {ROW_COLUMNS} WHERE id = ?1"))
            .map_err(|e| db_error(self.db, what(), e))?;
        stmt.query_row([id], read_row)
            .map_err(|e| db_error(self.db, what(), e))
    }

    /// `(id, path)` of each reference of the row `id`.
    fn references(&self, id: i64, full: &str) -> Result<Vec<(i64, StorePath)>, LocalStoreError> {
        let what = || format!("reading the references of {full}");
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT v.id, v.path FROM Refs r JOIN ValidPaths v ON v.id = r.reference \
                 WHERE r.referrer = ?1",
            )
            .map_err(|e| db_error(self.db, what(), e))?;
        let rows = stmt
            .query_map([id], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))
            .map_err(|e| db_error(self.db, what(), e))?;
        let mut out = Vec::new();
        for row in rows {
            let (ref_id, ref_path) = row.map_err(|e| db_error(self.db, what(), e))?;
            out.push((ref_id, self.parse(full, &ref_path)?));
        }
        out.sort_by(|a, b| a.1.cmp(&b.1));
        Ok(out)
    }

    /// Breadth-first walk by row id: two indexed queries per path, one transaction.
    fn closure(&self, roots: &[StorePath]) -> Result<Vec<PathInfo>, LocalStoreError> {
        let mut seen: HashSet<i64> = HashSet::new();
        let mut queue: VecDeque<Row> = VecDeque::new();
        for root in roots {
            let full = self.store_dir.full_path(root);
            let row = self
                .row_by_path(&full)?
                .ok_or_else(|| LocalStoreError::NotValid {
                    path: full.clone(),
                    arg: None,
                })?;
            if seen.insert(row.id) {
                queue.push_back(row);
            }
        }
        let mut infos = Vec::new();
        while let Some(row) = queue.pop_front() {
            let refs = self.references(row.id, &row.path)?;
            let mut references = Vec::with_capacity(refs.len());
            for (ref_id, ref_path) in refs {
                if seen.insert(ref_id) {
                    let full = self.store_dir.full_path(&ref_path);
                    queue.push_back(self.row_by_id(ref_id, &full)?);
                }
                references.push(ref_path);
            }
            infos.push(self.to_info(row, references)?);
        }
        Ok(infos)
    }

    fn parse(&self, context: &str, full: &str) -> Result<StorePath, LocalStoreError> {
        self.store_dir
            .parse_path(full)
            .map(|p| p.to_owned())
            .map_err(|e| LocalStoreError::BadRecord {
                source_name: format!("the Nix database {}", self.db.display()),
                path: context.to_owned(),
                reason: e.to_string(),
            })
    }

    fn to_info(&self, row: Row, references: Vec<StorePath>) -> Result<PathInfo, LocalStoreError> {
        let bad = |reason: String| LocalStoreError::BadRecord {
            source_name: format!("the Nix database {}", self.db.display()),
            path: row.path.clone(),
            reason,
        };
        let path = self.parse(&row.path, &row.path)?;
        let nar_hash = Hash::parse(&row.hash).map_err(|e| bad(e.to_string()))?;
        let deriver = match row.deriver.as_deref() {
            None | Some("") => None,
            Some(d) => Some(self.parse(&row.path, d)?),
        };
        let nar_size = u64::try_from(row.nar_size.unwrap_or(0))
            .map_err(|_| bad(format!("negative narSize {:?}", row.nar_size)))?;
        Ok(PathInfo {
            path,
            nar_hash,
            nar_size,
            references,
            deriver,
            registration_time: row.registration_time,
            signatures: row
                .sigs
                .as_deref()
                .unwrap_or("")
                .split_ascii_whitespace()
                .map(str::to_owned)
                .collect(),
            ca: row.ca.filter(|c| !c.is_empty()),
            ultimate: row.ultimate.unwrap_or(0) != 0,
        })
    }
}

/// Orders `infos` so that every path comes after the paths it refers to. Each path is kept
/// once (the first record wins); references to paths not in `infos` and self-references are
/// ignored. The order is deterministic: a depth-first walk from the paths in the order given,
/// visiting references in store-path order. Any cycle other than a self-reference is
/// [`LocalStoreError::Cycle`], naming the paths around it.
pub fn topo_sort(infos: Vec<PathInfo>) -> Result<Vec<PathInfo>, LocalStoreError> {
    let mut index: HashMap<StorePath, usize> = HashMap::with_capacity(infos.len());
    let mut nodes: Vec<PathInfo> = Vec::with_capacity(infos.len());
    for info in infos {
        if !index.contains_key(&info.path) {
            index.insert(info.path.clone(), nodes.len());
            nodes.push(info);
        }
    }
    // Edges as indices, self-references and outside paths dropped.
    let edges: Vec<Vec<usize>> = nodes
        .iter()
        .enumerate()
        .map(|(i, info)| {
            let mut e: Vec<usize> = info
                .references
                .iter()
                .filter_map(|r| index.get(r).copied())
                .filter(|&j| j != i)
                .collect();
            e.sort_by(|&a, &b| nodes[a].path.cmp(&nodes[b].path));
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
    let mut mark = vec![Mark::New; nodes.len()];
    let mut order: Vec<usize> = Vec::with_capacity(nodes.len());
    // Iterative DFS: (node, next edge to look at); deep chains cannot overflow the stack.
    let mut stack: Vec<(usize, usize)> = Vec::new();
    for start in 0..nodes.len() {
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
                        let mut paths: Vec<String> = stack[from..]
                            .iter()
                            .map(|&(n, _)| nodes[n].path.to_string())
                            .collect();
                        paths.push(nodes[child].path.to_string());
                        return Err(LocalStoreError::Cycle { paths });
                    }
                }
            } else {
                mark[node] = Mark::Done;
                order.push(node);
                stack.pop();
            }
        }
    }
    let mut slots: Vec<Option<PathInfo>> = nodes.into_iter().map(Some).collect();
    Ok(order.into_iter().filter_map(|i| slots[i].take()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sp(c: char, name: &str) -> StorePath {
        let hash: String = std::iter::repeat_n(c, 32).collect();
        StorePath::from_base_name(&format!("{hash}-{name}")).unwrap()
    }

    fn info(path: &StorePath, refs: &[&StorePath]) -> PathInfo {
        PathInfo {
            path: path.clone(),
            nar_hash: Hash::sha256([0; 32]),
            nar_size: 0,
            references: refs.iter().map(|r| (*r).clone()).collect(),
            deriver: None,
            registration_time: 0,
            signatures: vec![],
            ca: None,
            ultimate: false,
        }
    }

    #[test]
    fn topo_sort_puts_references_first_and_ignores_self_and_outside() {
        let (a, b, c, out) = (sp('a', "a"), sp('b', "b"), sp('c', "c"), sp('d', "outside"));
        let sorted = topo_sort(vec![
            info(&c, &[&a, &b, &c]),
            info(&b, &[&a, &b, &out]),
            info(&a, &[&a]),
            info(&a, &[]),
        ])
        .unwrap();
        let names: Vec<&str> = sorted.iter().map(|i| i.path.name()).collect();
        assert_eq!(names, ["a", "b", "c"]);
        // The first record of a duplicate wins.
        assert_eq!(sorted[0].references, vec![a.clone()]);
    }

    #[test]
    fn topo_sort_names_the_cycle() {
        let (a, b, c) = (sp('a', "a"), sp('b', "b"), sp('c', "c"));
        let err = topo_sort(vec![info(&a, &[&b]), info(&b, &[&c]), info(&c, &[&a])]).unwrap_err();
        let msg = err.to_string();
        assert!(
            matches!(err, LocalStoreError::Cycle { ref paths } if paths.len() == 4),
            "{msg}"
        );
        for p in [&a, &b, &c] {
            assert!(msg.contains(&p.to_string()), "{msg}");
        }
    }

    #[test]
    fn topo_sort_handles_deep_chains() {
        let paths: Vec<StorePath> = (0..100_000)
            .map(|i| StorePath::from_base_name(&format!("{}-p{i}", "0".repeat(32))).unwrap())
            .collect();
        let infos: Vec<PathInfo> = paths
            .iter()
            .enumerate()
            .rev()
            .map(|(i, p)| info(p, &paths[i.saturating_sub(1)..i].iter().collect::<Vec<_>>()))
            .collect();
        let sorted = topo_sort(infos).unwrap();
        assert_eq!(sorted.len(), paths.len());
        assert!(sorted.iter().zip(&paths).all(|(i, p)| i.path == *p));
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
            let got = store.follow_to_store_path(&dir.path().join(arg)).unwrap();
            assert_eq!(got.to_string(), sp, "{arg}");
        }
        let err = store
            .follow_to_store_path(&dir.path().join("missing"))
            .unwrap_err();
        assert!(matches!(err, LocalStoreError::Resolve { .. }), "{err}");
        std::os::unix::fs::symlink("loop", dir.path().join("loop")).unwrap();
        let err = store
            .follow_to_store_path(&dir.path().join("loop"))
            .unwrap_err();
        assert!(matches!(err, LocalStoreError::SymlinkLoop { .. }), "{err}");
    }
}
