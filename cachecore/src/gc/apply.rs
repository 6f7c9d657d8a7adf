//! Reading a cache into a [`Snapshot`] ([`scan`]), and carrying a [`Plan`] out ([`apply`]), in
//! the order the [module docs](super) argue is safe; [`collect`] does both.

use std::collections::HashSet;
use std::time::SystemTime;

use futures::TryStreamExt;
use serde::Serialize;

use super::lease::{self, LeaseBody};
use super::plan::{
    self, ObjectRef, Plan, PlanError, PlanOptions, RootIds, Snapshot, TombstoneSummary,
};
use super::roots::{self, unix_secs, Root, RootError};
use crate::store::{layout, BinaryCache, CacheObject, StoreError};
use crate::store_path::StoreDir;

/// Why a GC run stopped (before deleting anything, unless said otherwise).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GcError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("GC root {0}; nothing was deleted (a root that cannot be read must not let its paths be collected)")]
    Root(#[from] RootError),
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error("{url}: GC tombstone {name} is not valid: {reason}; nothing was deleted")]
    Tombstone {
        url: String,
        name: String,
        reason: String,
    },
    #[error("{url}: GC lease {name} is not valid: {reason}; nothing was deleted (a lease that cannot be read must not let its paths be collected)")]
    Lease {
        url: String,
        name: String,
        reason: String,
    },
    #[error("{url}: no GC root {host}/{name}{trash}")]
    NoSuchRoot {
        url: String,
        host: String,
        name: String,
        trash: &'static str,
    },
}

impl GcError {
    /// The [`ErrorKind`](crate::error::ErrorKind) of the error.
    pub fn kind(&self) -> crate::error::ErrorKind {
        use crate::error::ErrorKind;
        match self {
            GcError::Store(e) => e.kind(),
            GcError::Root(e) => e.kind(),
            GcError::Plan(e) => e.kind(),
            GcError::Tombstone { .. } | GcError::Lease { .. } => ErrorKind::Corrupt,
            GcError::NoSuchRoot { .. } => ErrorKind::NotFound,
        }
    }
}

/// The first line of a tombstone.
pub const TOMBSTONE_HEADER: &str = "cachecore-gc-tombstone 1";

/// A tombstone's body: header, `written <unix secs>`, then `narinfo <hash>` (what was
/// unpublished, for people), `nar <key>`, `frames <key>`, `listing <hash>`, `log <drv>` lines.
fn render_tombstone(snapshot: &Snapshot, plan: &Plan, written: u64) -> String {
    let mut out = format!("{TOMBSTONE_HEADER}\nwritten {written}\n");
    for &id in &plan.narinfos {
        out.push_str(&format!("narinfo {}\n", snapshot.hash_part(id)));
    }
    for &o in &plan.tombstone {
        match o {
            ObjectRef::Nar(k) => out.push_str(&format!("nar {}\n", snapshot.key(k))),
            ObjectRef::Frames(k) => out.push_str(&format!("frames {}\n", snapshot.key(k))),
            ObjectRef::Listing(p) => out.push_str(&format!("listing {}\n", snapshot.hash_part(p))),
            ObjectRef::Log(k) => out.push_str(&format!("log {}\n", snapshot.key(k))),
            // Never tombstoned: deleted with the run's narinfos.
            ObjectRef::Realisation(_) => {}
        }
    }
    out
}

/// The hash parts of the narinfos a tombstone unpublishes (or is about to), or why it does not
/// parse.
pub(crate) fn tombstone_narinfos(bytes: &[u8]) -> Result<Vec<String>, String> {
    parse_tombstone(&mut Snapshot::new(), "", bytes)?;
    let text = String::from_utf8_lossy(bytes);
    Ok(text
        .lines()
        .filter_map(|l| l.strip_prefix("narinfo "))
        .map(str::to_owned)
        .collect())
}

/// Parses a tombstone into `snapshot`'s ids.
fn parse_tombstone(
    snapshot: &mut Snapshot,
    name: &str,
    bytes: &[u8],
) -> Result<TombstoneSummary, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "not UTF-8 text".to_owned())?;
    let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l));
    if lines.next().map(|(_, l)| l) != Some(TOMBSTONE_HEADER) {
        return Err(format!("line 1 is not `{TOMBSTONE_HEADER}`"));
    }
    let written = match lines.next() {
        Some((_, l)) => l
            .strip_prefix("written ")
            .and_then(|v| v.parse::<u64>().ok())
            .ok_or_else(|| "line 2 is not `written <unix seconds>`".to_owned())?,
        None => return Err("line 2 is missing".to_owned()),
    };
    let mut objects = Vec::new();
    for (n, line) in lines {
        let bad = || {
            format!(
                "line {n}: {:?} is not a tombstone entry",
                crate::narinfo::excerpt(line)
            )
        };
        let (kind, value) = line.split_once(' ').ok_or_else(bad)?;
        match kind {
            "narinfo" if snapshot.intern_path(value).is_some() => {}
            "nar" if layout::is_nar(value) => {
                objects.push(ObjectRef::Nar(snapshot.intern_key(value)))
            }
            "frames" if layout::frame_digests_hash(value).is_some() => {
                objects.push(ObjectRef::Frames(snapshot.intern_key(value)))
            }
            "listing" => objects.push(ObjectRef::Listing(
                snapshot
                    .intern_path(value)
                    .filter(|_| layout::listing_hash(&layout::listing(value)).is_some())
                    .ok_or_else(bad)?,
            )),
            "log" if !value.is_empty() && !value.contains('/') => {
                objects.push(ObjectRef::Log(snapshot.intern_key(value)));
            }
            _ => return Err(bad()),
        }
    }
    Ok(TombstoneSummary {
        name: name.to_owned(),
        written,
        objects,
    })
}

/// A cache, read: its snapshot, roots, and what could not be read.
#[derive(Debug, Default)]
pub struct Scan {
    pub snapshot: Snapshot,
    /// Live roots (of every host).
    pub roots: Vec<Root>,
    /// Trashed roots.
    pub trashed: Vec<Root>,
    /// Narinfos that do not parse (or describe another path): `(key, why)`. Never deleted.
    pub unparseable: Vec<(String, String)>,
    /// The leases of pushes in progress (by name), expired or not.
    pub leases: Vec<(String, LeaseBody)>,
    /// Push index objects and entries not used (`what: why`).
    pub index_problems: Vec<String>,
    /// Paths read from the push index, and from their narinfos.
    pub from_index: usize,
    pub from_narinfos: usize,
    /// The access records of `serve --record-access` ([`super::access`]).
    pub access: super::access::AccessRead,
}

impl Scan {
    /// The roots as ids, with the paths of the leases that hold at `now` (Unix seconds): paths
    /// the snapshot has not seen get fresh ids (and roots' count as missing).
    pub fn root_ids(&mut self, now: u64) -> RootIds {
        let mut ids = RootIds::default();
        for (_, lease) in &self.leases {
            if lease.holds_at(now) {
                for h in &lease.paths {
                    ids.leased.extend(self.snapshot.intern_path(h));
                }
            }
        }
        for r in &self.roots {
            for p in r.body.paths() {
                ids.live.extend(self.snapshot.intern_path(&p.hash_part()));
            }
        }
        for r in &self.trashed {
            for p in r.body.paths() {
                ids.trashed
                    .extend(self.snapshot.intern_path(&p.hash_part()));
            }
        }
        ids
    }
}

/// Reads every root and trashed root (any that does not parse is an error), lists the cache
/// once and reads every narinfo once (`concurrency` at a time). The cache's store directory
/// must be `store_dir`.
pub async fn scan(
    cache: &BinaryCache,
    store_dir: &StoreDir,
    concurrency: usize,
) -> Result<Scan, GcError> {
    scan_with(cache, store_dir, concurrency, &crate::ops::NoProgress).await
}

/// [`scan`], telling `progress` of the narinfos it reads: [`planned`](crate::ops::Progress::planned)
/// (narinfos to read, 0, paths the push index covers), then
/// [`path_done`](crate::ops::Progress::path_done) with each narinfo's key.
pub async fn scan_with(
    cache: &BinaryCache,
    store_dir: &StoreDir,
    concurrency: usize,
    progress: &dyn crate::ops::Progress,
) -> Result<Scan, GcError> {
    cache.expect_store_dir(store_dir).await?;
    let mut scan = Scan {
        roots: roots::read_all(cache, store_dir, false).await?,
        trashed: roots::read_all(cache, store_dir, true).await?,
        // Before the narinfos are listed: a push whose lease is not seen here began after
        // this, and its narinfos are either not in the snapshot or kept by the relist.
        leases: lease::read_all(cache).await?,
        ..Scan::default()
    };
    // Listed narinfos as (id, last-modified in ms, version): a million fit in 24 MB.
    let mut narinfos: Vec<(plan::PathId, u64, u64)> = Vec::new();
    let mut index_objects: Vec<crate::store::ObjectInfo> = Vec::new();
    let mut tombstones: Vec<String> = Vec::new();
    let mut realisations: Vec<(String, crate::store::ObjectInfo)> = Vec::new();
    let mut listed = cache.list_cache_objects(concurrency);
    while let Some(object) = listed.try_next().await? {
        match object {
            CacheObject::NarInfo { hash_part, meta } => {
                if let Some(id) = scan.snapshot.intern_path(&hash_part) {
                    narinfos.push((id, unix_ms(meta.last_modified), plan::fingerprint(&meta)));
                }
            }
            CacheObject::Listing { hash_part, meta } => {
                scan.snapshot
                    .add_listing(&hash_part, meta.size, unix_secs(meta.last_modified));
            }
            CacheObject::Nar { meta } => {
                scan.snapshot.add_nar_object(
                    &meta.key,
                    meta.size,
                    unix_secs(meta.last_modified),
                    plan::fingerprint(&meta),
                );
            }
            CacheObject::FrameDigests { meta } => {
                scan.snapshot.add_frames_object(
                    &meta.key,
                    meta.size,
                    unix_secs(meta.last_modified),
                    plan::fingerprint(&meta),
                );
            }
            CacheObject::Log { drv, meta } => scan.snapshot.add_log(&drv, meta.size),
            CacheObject::GcTombstone { name, .. } => tombstones.push(name),
            CacheObject::Realisation { id, meta } => realisations.push((id, meta)),
            CacheObject::Other { meta } if layout::index_name(&meta.key).is_some() => {
                index_objects.push(meta);
            }
            _ => {}
        }
    }
    drop(listed);
    for (id, meta) in realisations {
        // One that does not parse is left alone (what it names is unknown).
        let Ok(output) = crate::realisation::DrvOutput::parse(&id) else {
            continue;
        };
        let Some(bytes) = cache.realisation_bytes(&output).await? else {
            continue;
        };
        let parsed = std::str::from_utf8(&bytes)
            .ok()
            .and_then(|t| crate::realisation::Realisation::parse(t).ok());
        if let Some(r) = parsed {
            scan.snapshot.add_realisation(
                &id,
                &r.out_path.hash_part(),
                meta.size,
                unix_secs(meta.last_modified),
            );
        }
    }
    read_narinfos(
        cache,
        &mut scan,
        narinfos,
        index_objects,
        concurrency,
        progress,
    )
    .await?;
    // When `serve` last answered each path (for `max_size` and `unused_for`).
    scan.access = super::access::read(cache).await?;
    for (hash, secs) in &scan.access.last_read {
        scan.snapshot.set_last_read(hash, *secs);
    }
    tombstones.sort();
    for name in tombstones {
        let Some(bytes) = cache.gc_tombstone(&name).await? else {
            continue;
        };
        let t = parse_tombstone(&mut scan.snapshot, &name, &bytes).map_err(|reason| {
            GcError::Tombstone {
                url: cache.url().to_owned(),
                name: layout::gc_tombstone(&name),
                reason,
            }
        })?;
        scan.snapshot.add_tombstone(t);
    }
    Ok(scan)
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The paths of the listed `narinfos` into the snapshot: from the push index (its objects
/// read oldest first, straight into the snapshot) where an entry still describes the
/// narinfo, else from the narinfo (`concurrency` read at once).
async fn read_narinfos(
    cache: &BinaryCache,
    scan: &mut Scan,
    narinfos: Vec<(plan::PathId, u64, u64)>,
    mut index_objects: Vec<crate::store::ObjectInfo>,
    concurrency: usize,
    progress: &dyn crate::ops::Progress,
) -> Result<(), GcError> {
    use futures::StreamExt;
    index_objects.sort_by(|a, b| (a.last_modified, &a.key).cmp(&(b.last_modified, &b.key)));
    for meta in index_objects {
        let Some(bytes) = cache
            .objects()
            .get_bytes_limited(&meta.key, crate::store::index::MAX_INDEX_OBJECT_BYTES)
            .await?
        else {
            continue;
        };
        match scan
            .snapshot
            .add_index_object(&bytes, unix_ms(meta.last_modified))
        {
            Ok(bad) => scan
                .index_problems
                .extend(bad.into_iter().map(|b| format!("{} {b}", meta.key))),
            Err(why) => scan.index_problems.push(format!("{}: {why}", meta.key)),
        }
    }
    let mut to_read: Vec<(String, u64, u64)> = Vec::new();
    // Indexed paths whose NAR the cache lacks: their narinfo decides.
    let mut doubtful: Vec<(plan::PathId, u64)> = Vec::new();
    for (id, mtime_ms, version) in narinfos {
        if scan.snapshot.confirm_indexed(id, mtime_ms, version) {
            scan.from_index += 1;
            let nar_listed = scan
                .snapshot
                .summary(id)
                .is_some_and(|s| scan.snapshot.nar_version(s.nar).is_some());
            if !nar_listed {
                doubtful.push((id, mtime_ms));
            }
        } else {
            to_read.push((scan.snapshot.hash_part(id).to_owned(), mtime_ms, version));
        }
    }
    progress.planned(to_read.len(), 0, scan.from_index);
    let mut reads = futures::stream::iter(to_read)
        .map(|(hash, mtime_ms, version)| async move {
            let read = cache.narinfo_by_hash(&hash).await;
            (hash, mtime_ms, version, read)
        })
        .buffer_unordered(concurrency.max(1));
    while let Some((hash, mtime_ms, version, read)) = reads.next().await {
        progress.path_done(&layout::narinfo(&hash));
        if add_read_narinfo(scan, &hash, mtime_ms, version, read)? {
            scan.from_narinfos += 1;
        }
    }
    drop(reads);
    for (id, mtime_ms) in doubtful {
        let hash = scan.snapshot.hash_part(id).to_owned();
        let Some(summary) = scan.snapshot.summary(id) else {
            continue;
        };
        let (indexed_url, version) = (scan.snapshot.key(summary.nar).to_owned(), summary.version);
        let indexed_refs: Vec<String> = summary
            .references
            .iter()
            .map(|&r| scan.snapshot.hash_part(r).to_owned())
            .collect();
        let read = cache.narinfo_by_hash(&hash).await;
        if let Ok(Some(info)) = &read {
            let mut refs: Vec<String> = info
                .references
                .iter()
                .filter(|r| **r != info.store_path)
                .map(|r| r.hash_part())
                .collect();
            let mut theirs = indexed_refs;
            refs.sort();
            theirs.sort();
            if info.url != indexed_url || refs != theirs {
                scan.index_problems.push(format!(
                    "the push index entry of {} disagrees with its narinfo (URL {} there, {} in the index); the narinfo is used",
                    layout::narinfo(&hash),
                    info.url,
                    indexed_url
                ));
            }
        }
        add_read_narinfo(scan, &hash, mtime_ms, version, read)?;
    }
    scan.snapshot.drop_unconfirmed();
    Ok(())
}

/// A narinfo read for the scan into its snapshot (`true`), or its failure: a narinfo that does
/// not parse is recorded as such, one gone since the listing is skipped, any other failure
/// stops the scan.
fn add_read_narinfo(
    scan: &mut Scan,
    hash: &str,
    mtime_ms: u64,
    version: u64,
    read: Result<Option<crate::narinfo::NarInfo>, StoreError>,
) -> Result<bool, GcError> {
    match read {
        Ok(Some(info)) => {
            scan.snapshot
                .add_narinfo(hash, &info, mtime_ms / 1000, version);
            Ok(true)
        }
        Ok(None) => Ok(false),
        Err(
            e @ (StoreError::BadNarInfo { .. }
            | StoreError::IdentityMismatch { .. }
            | StoreError::TooLarge { .. }),
        ) => {
            scan.snapshot.add_unparseable_version(hash, version);
            scan.unparseable
                .push((layout::narinfo(hash), e.to_string()));
            Ok(false)
        }
        Err(e) => Err(e.into()),
    }
}

/// How a run goes.
#[derive(Debug, Clone, Default)]
pub struct GcOptions {
    pub plan: PlanOptions,
    /// Plan and report, delete nothing.
    pub dry_run: bool,
    /// Narinfos read at once, and listing requests at a time (on S3, GCS and Azure the key
    /// space is listed in ranges side by side: [`crate::store::Objects::list_all`]).
    pub concurrency: usize,
}

/// What a run did (or, with `dry_run`, would do).
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct GcReport {
    pub dry_run: bool,
    /// Root objects read (live, trashed).
    pub roots: usize,
    pub trashed_roots: usize,
    /// Root paths the cache has no narinfo for.
    pub missing_root_paths: usize,
    /// Paths with a narinfo that stay.
    pub live_paths: usize,
    /// Narinfo keys deleted (`<hash>.narinfo`), in order.
    pub narinfos_deleted: Vec<String>,
    /// Object keys recorded in this run's tombstone, deleted after the grace.
    pub tombstoned: Vec<String>,
    /// The tombstone written, if any.
    pub tombstone: Option<String>,
    /// NARs, listings and logs deleted (of due tombstones, of this run with grace 0, orphans).
    pub objects_deleted: Vec<String>,
    /// Of `objects_deleted`, how many were orphans.
    pub orphans_deleted: usize,
    /// Objects left because something names them again or they were rewritten since.
    pub objects_kept_on_recheck: Vec<String>,
    /// Bytes of NARs and listings deleted (or, dry run, to be deleted, the grace included).
    pub bytes_freed: u64,
    /// Bytes recorded in the tombstone, freed by a later run.
    pub bytes_after_grace: u64,
    /// Narinfos that do not parse: reported, deleted only with `delete_unparseable`.
    pub unparseable: Vec<String>,
    /// Of `narinfos_deleted`, the unparseable ones (planned).
    pub unparseable_deleted: usize,
    /// Of `objects_deleted`, the realisations (planned).
    pub realisations_deleted: usize,
    /// Unrooted paths kept to fill `--max-size`.
    pub kept_for_size: usize,
    /// Orphan NARs kept because a narinfo does not parse.
    pub orphans_kept_for_unparseable: usize,
    /// Dead paths in reference cycles (a corrupt cache).
    pub in_cycles: usize,
    /// Deletes that failed (`key: error`), and what was not attempted after them.
    pub failures: Vec<String>,
    /// Paths read from the push index, and from their narinfos.
    pub from_index: usize,
    pub from_narinfos: usize,
    /// Push index objects and entries not used (`what: why`): the narinfos were read instead.
    pub index_problems: Vec<String>,
    /// Paths whose last read through `serve --record-access` is known.
    pub read_paths: usize,
    /// Access records that do not parse (`key: why`), left alone.
    pub access_problems: Vec<String>,
}

impl GcReport {
    /// The one-line summary printed at the end of a run.
    pub fn summary(&self) -> String {
        let verb = if self.dry_run {
            "would delete"
        } else {
            "deleted"
        };
        let mut s = format!(
            "{} roots ({} trashed), {} live paths; {verb} {} narinfos, {} objects ({} orphans), {} bytes; {} objects ({} bytes) wait for the grace",
            self.roots,
            self.trashed_roots,
            self.live_paths,
            self.narinfos_deleted.len(),
            self.objects_deleted.len(),
            self.orphans_deleted,
            self.bytes_freed,
            self.tombstoned.len(),
            self.bytes_after_grace,
        );
        if self.missing_root_paths > 0 {
            s.push_str(&format!(
                "; {} root paths not in the cache",
                self.missing_root_paths
            ));
        }
        if !self.unparseable.is_empty() {
            s.push_str(&format!(
                "; {} narinfos do not parse ({} of them deleted)",
                self.unparseable.len(),
                self.unparseable_deleted
            ));
        }
        if self.realisations_deleted > 0 {
            s.push_str(&format!("; {} realisations", self.realisations_deleted));
        }
        if !self.index_problems.is_empty() {
            s.push_str(&format!(
                "; {} push index problems (narinfos read instead)",
                self.index_problems.len()
            ));
        }
        s.push_str(&format!("; {} failures", self.failures.len()));
        s
    }
}

/// The key of `object`, for reports.
pub fn object_key(snapshot: &Snapshot, object: ObjectRef) -> String {
    match object {
        ObjectRef::Nar(k) | ObjectRef::Frames(k) => snapshot.key(k).to_owned(),
        ObjectRef::Listing(p) => layout::listing(snapshot.hash_part(p)),
        ObjectRef::Log(k) => layout::log(snapshot.key(k)),
        ObjectRef::Realisation(k) => layout::realisation_key(snapshot.key(k)),
    }
}

/// Scans, plans and applies: one GC run at time `now`.
pub async fn collect(
    cache: &BinaryCache,
    store_dir: &StoreDir,
    now: SystemTime,
    options: &GcOptions,
) -> Result<GcReport, GcError> {
    collect_with(cache, store_dir, now, options, &crate::ops::NoProgress).await
}

/// [`collect`], telling `progress` of the reading ([`scan_with`]).
pub async fn collect_with(
    cache: &BinaryCache,
    store_dir: &StoreDir,
    now: SystemTime,
    options: &GcOptions,
    progress: &dyn crate::ops::Progress,
) -> Result<GcReport, GcError> {
    let run = PlannedRun::prepare(cache, store_dir, now, options, progress).await?;
    Ok(run.apply(cache, now).await)
}

/// A run scanned and planned, not yet applied: [`collect_with`] in two halves, for a caller
/// that shows the plan before carrying it out (Python's `Cache.gc_plan` and `Cache.gc_apply`).
/// Applying later is as safe as applying at once: what changed since the scan (narinfos
/// written again, new leases) is found by the applier's own re-checks.
///
/// ```
/// # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
/// # use std::{sync::Arc, time::{Duration, SystemTime}};
/// # use cachecore::{ops::{self, NoProgress, PushOptions}, store_path::StoreDir};
/// use cachecore::gc::{GcOptions, PlanOptions, PlannedRun};
/// use cachecore::store::BinaryCache;
/// # let src = tempfile::tempdir().unwrap();
/// # std::fs::write(src.path().join("hello"), "hello, world\n").unwrap();
/// let cache = BinaryCache::open("memory://").unwrap();
/// # let (path, _) = ops::push_add(&cache, &StoreDir::default(), src.path(), "hello",
/// #     &PushOptions::default(), Arc::new(NoProgress)).await.unwrap();
/// // No root, and told that is meant: the one path is garbage; grace 0 takes its NAR too.
/// let plan = PlanOptions { allow_empty_roots: true, grace: Duration::ZERO, ..PlanOptions::default() };
/// let options = GcOptions { plan, concurrency: 4, ..GcOptions::default() };
/// let run = PlannedRun::prepare(&cache, &StoreDir::default(), SystemTime::now(), &options,
///     &NoProgress).await.unwrap();
/// let preview = run.preview();
/// assert_eq!(preview.narinfos_deleted, [format!("{}.narinfo", path.hash_part())]);
/// assert!(preview.dry_run && cache.has_narinfo(&path).await.unwrap()); // nothing deleted yet
/// let report = run.apply(&cache, SystemTime::now()).await;
/// assert_eq!(report.narinfos_deleted, preview.narinfos_deleted);
/// assert_eq!(report.objects_deleted, preview.objects_deleted);
/// assert!(!report.dry_run && !cache.has_narinfo(&path).await.unwrap());
/// # });
/// ```
#[derive(Debug)]
pub struct PlannedRun {
    pub scan: Scan,
    pub plan: Plan,
    /// The roots and leases the plan started from.
    pub root_ids: RootIds,
    /// The time the plan was made for.
    pub now: SystemTime,
    pub options: GcOptions,
}

impl PlannedRun {
    /// Scans the cache ([`scan_with`]) and plans a run at `now`.
    pub async fn prepare(
        cache: &BinaryCache,
        store_dir: &StoreDir,
        now: SystemTime,
        options: &GcOptions,
        progress: &dyn crate::ops::Progress,
    ) -> Result<PlannedRun, GcError> {
        let mut scan = scan_with(cache, store_dir, options.concurrency, progress).await?;
        let root_ids = scan.root_ids(unix_secs(now));
        let plan = plan::plan(&scan.snapshot, &root_ids, unix_secs(now), &options.plan)?;
        Ok(PlannedRun {
            scan,
            plan,
            root_ids,
            now,
            options: options.clone(),
        })
    }

    /// The report of the scan alone (roots, what does not parse, where paths were read from).
    fn scan_report(&self) -> GcReport {
        let scan = &self.scan;
        GcReport {
            roots: scan.roots.len(),
            trashed_roots: scan.trashed.len(),
            unparseable: scan
                .unparseable
                .iter()
                .map(|(k, why)| format!("{k}: {why}"))
                .collect(),
            from_index: scan.from_index,
            from_narinfos: scan.from_narinfos,
            index_problems: scan.index_problems.clone(),
            read_paths: scan.snapshot.read_paths(),
            access_problems: scan.access.problems.clone(),
            ..GcReport::default()
        }
    }

    /// What applying would do, as a dry run reports it; nothing is requested.
    pub fn preview(&self) -> GcReport {
        let mut report = self.scan_report();
        let options = GcOptions {
            dry_run: true,
            ..self.options.clone()
        };
        Applier::new(&self.scan, &self.plan, self.now, &options, &mut report);
        report
    }

    /// Carries the plan out ([`apply`](fn@apply)) at `now` (its tombstone's time: pass the
    /// current time); a dry run's options only fill the report.
    pub async fn apply(&self, cache: &BinaryCache, now: SystemTime) -> GcReport {
        let mut report = self.scan_report();
        apply(
            cache,
            &self.scan,
            &self.plan,
            now,
            &self.options,
            &mut report,
        )
        .await;
        if !self.options.dry_run && report.failures.is_empty() {
            // Many small access records become one (what they say is in the snapshot already).
            if let Err(e) = super::access::compact(cache, &self.scan.access).await {
                report
                    .failures
                    .push(format!("cannot merge the access records: {e}"));
            }
        }
        report
    }
}

/// Carries `plan` out (see the [module docs](super) for the order), filling `report`. Failures
/// are recorded in the report; a failed narinfo delete stops everything after it.
pub async fn apply(
    cache: &BinaryCache,
    scan: &Scan,
    plan: &Plan,
    now: SystemTime,
    options: &GcOptions,
    report: &mut GcReport,
) {
    let mut applier = Applier::new(scan, plan, now, options, report);
    while applier.step(cache, report).await {}
}

/// Where an [`Applier`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Tombstone,
    Relist,
    Narinfo(usize),
    Recheck,
    Object(usize),
    FinishTombstones,
    Done,
}

/// [`apply`] one request at a time: each [`step`](Applier::step) does one delete (with the
/// re-check before it) or one write, so a test can interleave other writers between any two.
#[derive(Debug)]
pub struct Applier<'a> {
    snapshot: &'a Snapshot,
    plan: &'a Plan,
    now: u64,
    grace_now: bool,
    phase: Phase,
    /// Narinfos found rewritten just before their delete, and everything they reference: kept.
    kept: HashSet<plan::PathId>,
    /// Object keys named by narinfos written during the run ([`Phase::Relist`],
    /// [`Phase::Recheck`]).
    renamed: HashSet<String>,
    failed: bool,
    /// This run's tombstone, once written.
    own_tombstone: Option<String>,
    /// When the store says it wrote this run's tombstone (Unix seconds, by the store's clock).
    tombstone_written: Option<u64>,
    /// Listing requests at a time.
    concurrency: usize,
    /// Leases already taken into account (those of the scan, and those found by a relist).
    leases_seen: HashSet<String>,
}

impl<'a> Applier<'a> {
    /// Ready to apply `plan`; fills the parts of `report` known before any request (with
    /// `dry_run`, all of it, and no step does anything).
    pub fn new(
        scan: &'a Scan,
        plan: &'a Plan,
        now: SystemTime,
        options: &GcOptions,
        report: &mut GcReport,
    ) -> Self {
        let snapshot = &scan.snapshot;
        let grace_now = options.plan.grace.is_zero();
        report.dry_run = options.dry_run;
        report.live_paths = plan.live;
        report.missing_root_paths = plan.missing_roots;
        report.in_cycles = plan.in_cycles;
        report.orphans_kept_for_unparseable = plan.orphans_kept_for_unparseable;
        report.unparseable_deleted = plan.unparseable;
        report.realisations_deleted = plan.realisations;
        report.kept_for_size = plan.kept_for_size;
        let size = |o: &ObjectRef| snapshot.object_size(*o);
        if !grace_now {
            report.tombstoned = plan
                .tombstone
                .iter()
                .map(|&o| object_key(snapshot, o))
                .collect();
            report.bytes_after_grace = plan.tombstone.iter().map(size).fold(0, u64::saturating_add);
        }
        let mut phase = Phase::Tombstone;
        if options.dry_run {
            report.narinfos_deleted = plan
                .narinfos
                .iter()
                .map(|&id| layout::narinfo(snapshot.hash_part(id)))
                .collect();
            report.objects_deleted = plan
                .delete
                .iter()
                .map(|&o| object_key(snapshot, o))
                .collect();
            report.orphans_deleted = plan.orphans;
            report.bytes_freed = plan.delete.iter().map(size).fold(0, u64::saturating_add);
            phase = Phase::Done;
        }
        Applier {
            snapshot,
            plan,
            now: unix_secs(now),
            grace_now,
            phase,
            kept: HashSet::new(),
            renamed: HashSet::new(),
            failed: false,
            own_tombstone: None,
            tombstone_written: None,
            concurrency: options.concurrency,
            leases_seen: scan.leases.iter().map(|(n, _)| n.clone()).collect(),
        }
    }

    /// Where it is, for the model test's traces.
    #[cfg(test)]
    pub(crate) fn phase(&self) -> impl std::fmt::Debug {
        self.phase
    }

    /// Does the next request; `false` once there is nothing left to do.
    pub async fn step(&mut self, cache: &BinaryCache, report: &mut GcReport) -> bool {
        let (snapshot, plan) = (self.snapshot, self.plan);
        match self.phase {
            Phase::Done => return false,
            // 1. The tombstone, before any narinfo goes.
            Phase::Tombstone => {
                self.phase = Phase::Relist;
                if !plan.narinfos.is_empty() || !plan.tombstone.is_empty() {
                    let unique = rand_core::RngCore::next_u64(&mut rand_core::OsRng);
                    let name = format!("{}-{unique:016x}", self.now);
                    let body = render_tombstone(snapshot, plan, self.now);
                    // Written, then asked when by the store's clock (see `same_second`).
                    let written = match cache.put_gc_tombstone(&name, body.into()).await {
                        Ok(_) => cache.gc_tombstone_meta(&name).await.and_then(|m| {
                            m.ok_or_else(|| StoreError::NotFound {
                                url: cache.url().to_owned(),
                                key: layout::gc_tombstone(&name),
                            })
                        }),
                        Err(e) => Err(e),
                    };
                    match written {
                        Ok(meta) => {
                            report.tombstone = Some(layout::gc_tombstone(&name));
                            self.own_tombstone = Some(name);
                            self.tombstone_written = Some(unix_secs(meta.last_modified));
                        }
                        Err(e) => {
                            report.failures.push(format!(
                                "{}: {e}; nothing was deleted",
                                layout::gc_tombstone(&name)
                            ));
                            report.tombstoned.clear();
                            report.bytes_after_grace = 0;
                            self.phase = Phase::Done;
                        }
                    }
                }
            }
            // Leases written since the scan, and narinfos written or rewritten since, keep
            // their closures (see the module docs for why this, after the tombstone, is
            // enough).
            Phase::Relist => {
                self.phase = Phase::Narinfo(0);
                if let Err(e) = self.relist(cache).await {
                    report.failures.push(format!(
                        "cannot list the narinfos written during the run: {e}; nothing was deleted"
                    ));
                    self.phase = Phase::Done;
                }
            }
            // 2. Narinfos, referrers first, each unless rewritten since the scan; the first
            //    failure stops the run.
            Phase::Narinfo(i) => {
                let Some(&id) = plan.narinfos.get(i) else {
                    self.phase = Phase::Recheck;
                    return true;
                };
                self.phase = Phase::Narinfo(i + 1);
                if self.kept.contains(&id) {
                    return true;
                }
                let hash = snapshot.hash_part(id);
                let key = layout::narinfo(hash);
                let listed = snapshot.narinfo_version(id);
                let result = match cache.narinfo_meta(hash).await {
                    Ok(None) => Ok(false),
                    Ok(Some(meta))
                        if Some(plan::fingerprint(&meta)) != listed
                            || self.same_second(cache, id) =>
                    {
                        // Written again (a push), or maybe: it stays, and so does its closure.
                        self.keep_closure(id);
                        return true;
                    }
                    Ok(Some(_)) => cache.delete_narinfo(hash).await.map(|()| true),
                    Err(e) => Err(e),
                };
                match result {
                    Ok(_) => report.narinfos_deleted.push(key),
                    Err(e) => {
                        report.failures.push(format!(
                            "{key}: {e}; stopped: {} narinfos and every object left undeleted",
                            plan.narinfos.len() - i
                        ));
                        self.phase = Phase::Done;
                    }
                }
            }
            // 3. Objects: first, what narinfos written during the run name.
            Phase::Recheck => {
                self.phase = Phase::Object(0);
                if let Err(e) = self.relist(cache).await {
                    report.failures.push(format!(
                        "cannot re-check the narinfos written during the run: {e}; no object was deleted"
                    ));
                    self.phase = Phase::Done;
                }
            }
            Phase::Object(i) => {
                let Some(&o) = plan.delete.get(i) else {
                    self.phase = Phase::FinishTombstones;
                    return true;
                };
                self.phase = Phase::Object(i + 1);
                let key = object_key(snapshot, o);
                if self.renamed.contains(&key) || self.kept_names(o) {
                    report.objects_kept_on_recheck.push(key);
                    return true;
                }
                let result = match o {
                    ObjectRef::Nar(k) => match cache.nar_meta(snapshot.key(k)).await {
                        Ok(None) => return true,
                        Ok(Some(meta)) => {
                            if Some(plan::fingerprint(&meta)) != snapshot.nar_version(k) {
                                // Rewritten since the listing: a push uploaded it again.
                                report.objects_kept_on_recheck.push(key);
                                return true;
                            }
                            cache.delete_nar(snapshot.key(k)).await
                        }
                        Err(e) => Err(e),
                    },
                    ObjectRef::Frames(k) => {
                        let Some(hash) = layout::frame_digests_hash(snapshot.key(k)) else {
                            return true;
                        };
                        match cache.frame_digests_meta(&hash).await {
                            Ok(None) => return true,
                            Ok(Some(meta)) => {
                                if Some(plan::fingerprint(&meta)) != snapshot.frames_version(k) {
                                    // Written again since the listing (a push of the same
                                    // content): the narinfo it is for may follow.
                                    report.objects_kept_on_recheck.push(key);
                                    return true;
                                }
                                cache.delete_frame_digests(&hash).await
                            }
                            Err(e) => Err(e),
                        }
                    }
                    ObjectRef::Listing(p) => cache.delete_listing(snapshot.hash_part(p)).await,
                    ObjectRef::Log(k) => cache.delete_log(snapshot.key(k)).await,
                    ObjectRef::Realisation(k) => cache.delete_realisation(snapshot.key(k)).await,
                };
                match result {
                    Ok(()) => {
                        report.bytes_freed =
                            report.bytes_freed.saturating_add(snapshot.object_size(o));
                        if i >= plan.delete.len() - plan.orphans {
                            report.orphans_deleted += 1;
                        }
                        report.objects_deleted.push(key);
                    }
                    Err(e) => {
                        self.failed = true;
                        report.failures.push(format!("{key}: {e}"));
                    }
                }
            }
            // 4. Tombstones whose objects are all handled (a failure keeps them for the next
            //    run).
            Phase::FinishTombstones => {
                self.phase = Phase::Done;
                if !self.failed {
                    // With grace 0 this run's own tombstone is done too.
                    let own = self.own_tombstone.iter().filter(|_| self.grace_now);
                    for name in plan.finished_tombstones.iter().chain(own) {
                        if let Err(e) = cache.delete_gc_tombstone(name).await {
                            report
                                .failures
                                .push(format!("{}: {e}", layout::gc_tombstone(name)));
                        }
                    }
                }
            }
        }
        true
    }

    /// Lists the narinfo keys and leases again and reads those written or rewritten since the
    /// scan (and narinfos this run deleted, found again): their closures are kept, and what
    /// they name.
    async fn relist(&mut self, cache: &BinaryCache) -> Result<(), GcError> {
        let snapshot = self.snapshot;
        let mut listed = cache.list_cache_objects(self.concurrency);
        let mut changed: Vec<String> = Vec::new();
        let mut new_leases: Vec<String> = Vec::new();
        while let Some(object) = listed.try_next().await? {
            if let CacheObject::GcLease { name, .. } = &object {
                if !self.leases_seen.contains(name) {
                    new_leases.push(name.clone());
                }
            }
            if let CacheObject::NarInfo { hash_part, meta } = object {
                let known = snapshot
                    .path_id(&hash_part)
                    .and_then(|id| snapshot.narinfo_version(id))
                    .is_some_and(|v| v == plan::fingerprint(&meta));
                if !known {
                    changed.push(hash_part);
                }
            }
        }
        drop(listed);
        for name in new_leases {
            let Some(bytes) = cache.gc_lease(&name).await? else {
                continue; // released meanwhile
            };
            let body = LeaseBody::parse(&bytes).map_err(|reason| GcError::Lease {
                url: cache.url().to_owned(),
                name: layout::gc_lease(&name),
                reason,
            })?;
            if body.holds_at(self.now) {
                for h in &body.paths {
                    if let Some(id) = snapshot.path_id(h) {
                        self.keep_closure(id);
                    }
                }
            }
            self.leases_seen.insert(name);
        }
        for hash in changed {
            self.renamed.insert(layout::listing(&hash));
            if let Some(id) = snapshot.path_id(&hash) {
                self.keep_closure(id);
            }
            match cache.narinfo_by_hash(&hash).await {
                Ok(Some(info)) => {
                    self.renamed.insert(info.url.clone());
                    if let Some(frames) = crate::store::index::frames_hash(&info) {
                        self.renamed.insert(layout::frame_digests(&frames));
                    }
                    if let Some(d) = &info.deriver {
                        self.renamed.insert(layout::log(&d.to_string()));
                    }
                    for r in &info.references {
                        if let Some(id) = snapshot.path_id(&r.hash_part()) {
                            self.keep_closure(id);
                        }
                    }
                }
                Ok(None) => {}
                // A new narinfo that does not parse may name anything: keep every NAR.
                Err(
                    StoreError::BadNarInfo { .. }
                    | StoreError::IdentityMismatch { .. }
                    | StoreError::TooLarge { .. },
                ) => {
                    self.renamed.extend(snapshot.nar_keys().map(str::to_owned));
                    self.renamed
                        .extend(snapshot.frames_keys().map(str::to_owned));
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Whether the narinfo of `id` was listed as written within the second the store wrote this
    /// run's tombstone in, on a store where a rewrite of the same bytes within a second keeps
    /// its version ([`crate::store::Objects::rewrites_change_tags`]: S3, GCS). A writer that
    /// found it condemned uploads it again after that tombstone (the push rule), so a rewrite
    /// that looks unchanged can only be one of a narinfo listed in that second: such a narinfo
    /// is taken as rewritten (kept, with its closure) rather than deleted on a version a HEAD
    /// cannot tell apart. Unparseable narinfos (`delete_unparseable`) are not: no writer
    /// publishes them again.
    fn same_second(&self, cache: &BinaryCache, id: plan::PathId) -> bool {
        if cache.objects().rewrites_change_tags() {
            return false;
        }
        self.snapshot
            .summary(id)
            .is_some_and(|s| self.tombstone_written.is_none_or(|t| s.pushed >= t))
    }

    /// Keeps `id` and every path of its closure.
    fn keep_closure(&mut self, id: plan::PathId) {
        let mut stack = vec![id];
        while let Some(p) = stack.pop() {
            if self.kept.insert(p) {
                if let Some(s) = self.snapshot.summary(p) {
                    stack.extend(s.references.iter().copied());
                }
            }
        }
    }

    /// Whether a narinfo kept on re-check names `o`.
    fn kept_names(&self, o: ObjectRef) -> bool {
        self.kept.iter().any(|&p| {
            self.snapshot.summary(p).is_some_and(|s| {
                o == ObjectRef::Nar(s.nar)
                    || s.frames_key().map(ObjectRef::Frames) == Some(o)
                    || o == ObjectRef::Listing(p)
                    || s.deriver.map(ObjectRef::Log) == Some(o)
            })
        })
    }
}
