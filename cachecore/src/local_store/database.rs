//! The Nix database source: `db.sqlite` opened read-only, queried with a few indexed statements.
//!
//! Nix keeps the database in WAL mode, so reading works while Nix writes; a busy timeout covers
//! the short moments (checkpoints, recovery) when SQLite makes a reader wait. A closure is one
//! read transaction, so it sees one consistent snapshot even while Nix registers or collects
//! paths.

use std::collections::{HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension};

use super::{LocalStoreError, PathInfo};
use crate::hash::Hash;
use crate::store_path::{StoreDir, StorePath};

/// How long a query waits for a lock SQLite cannot give at once before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// The database source of a [`super::LocalStore`].
#[derive(Debug)]
pub(super) struct Database {
    db: PathBuf,
    // `Connection` is not `Sync`; the mutex also makes the NO_MUTEX open safe.
    conn: Mutex<Connection>,
}

impl Database {
    pub(super) fn open(db: PathBuf) -> Result<Self, LocalStoreError> {
        let conn = open_database(&db)?;
        Ok(Database {
            db,
            conn: Mutex::new(conn),
        })
    }

    pub(super) fn path(&self) -> &Path {
        &self.db
    }

    pub(super) fn is_valid(
        &self,
        store_dir: &StoreDir,
        path: &StorePath,
    ) -> Result<bool, LocalStoreError> {
        let conn = lock(&self.conn);
        let full = store_dir.full_path(path);
        let mut stmt = conn
            .prepare_cached("SELECT 1 FROM ValidPaths WHERE path = ?1")
            .map_err(|e| db_error(&self.db, format!("looking up {full}"), e))?;
        stmt.exists([&full])
            .map_err(|e| db_error(&self.db, format!("looking up {full}"), e))
    }

    pub(super) fn path_info(
        &self,
        store_dir: &StoreDir,
        path: &StorePath,
    ) -> Result<Option<PathInfo>, LocalStoreError> {
        let conn = lock(&self.conn);
        let q = Queries {
            db: &self.db,
            conn: &conn,
            store_dir,
        };
        let full = store_dir.full_path(path);
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

    /// The paths of the closure of `roots`, each once, in breadth-first order.
    pub(super) fn closure(
        &self,
        store_dir: &StoreDir,
        roots: &[StorePath],
    ) -> Result<Vec<PathInfo>, LocalStoreError> {
        let mut conn = lock(&self.conn);
        let tx = conn
            .transaction()
            .map_err(|e| db_error(&self.db, "starting a read transaction".into(), e))?;
        let q = Queries {
            db: &self.db,
            conn: &tx,
            store_dir,
        };
        let infos = q.closure(roots)?;
        // Read-only: nothing to commit; dropping the transaction rolls back.
        drop(tx);
        Ok(infos)
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
        source: super::DatabaseError(source),
    }
}

fn open_database(db: &Path) -> Result<Connection, LocalStoreError> {
    let open_err = |source| LocalStoreError::OpenDatabase {
        db: db.to_owned(),
        source: super::DatabaseError(source),
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
