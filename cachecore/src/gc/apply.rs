//! Reading a cache into a [`Snapshot`] ([`scan`]), and carrying a [`Plan`] out ([`apply`]), in
//! the order the [module docs](super) argue is safe; [`collect`] does both.

use std::collections::HashSet;
use std::time::SystemTime;

use futures::{StreamExt, TryStreamExt};
use serde::Serialize;

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
            GcError::Tombstone { .. } => ErrorKind::Corrupt,
            GcError::NoSuchRoot { .. } => ErrorKind::NotFound,
        }
    }
}

/// The first line of a tombstone.
pub const TOMBSTONE_HEADER: &str = "cachecore-gc-tombstone 1";

/// A tombstone's body: header, `written <unix secs>`, then `narinfo <hash>` (what was
/// unpublished, for people), `nar <key>`, `listing <hash>`, `log <drv>` lines.
fn render_tombstone(snapshot: &Snapshot, plan: &Plan, written: u64) -> String {
    let mut out = format!("{TOMBSTONE_HEADER}\nwritten {written}\n");
    for &id in &plan.narinfos {
        out.push_str(&format!("narinfo {}\n", snapshot.hash_part(id)));
    }
    for &o in &plan.tombstone {
        match o {
            ObjectRef::Nar(k) => out.push_str(&format!("nar {}\n", snapshot.key(k))),
            ObjectRef::Listing(p) => out.push_str(&format!("listing {}\n", snapshot.hash_part(p))),
            ObjectRef::Log(k) => out.push_str(&format!("log {}\n", snapshot.key(k))),
        }
    }
    out
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
            "narinfo" => {}
            "nar" if layout::is_nar(value) => {
                objects.push(ObjectRef::Nar(snapshot.intern_key(value)))
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
}

impl Scan {
    /// The roots as ids: paths the snapshot has not seen get fresh ids (and count as missing).
    pub fn root_ids(&mut self) -> RootIds {
        let mut ids = RootIds::default();
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
    let theirs = cache.store_dir().await?;
    if &theirs != store_dir {
        return Err(StoreError::StoreDirMismatch {
            url: cache.url().to_owned(),
            ours: store_dir.as_str().to_owned(),
            theirs: theirs.as_str().to_owned(),
        }
        .into());
    }
    let mut scan = Scan {
        roots: roots::read_all(cache, store_dir, false).await?,
        trashed: roots::read_all(cache, store_dir, true).await?,
        ..Scan::default()
    };
    let mut narinfo_keys: Vec<(String, u64)> = Vec::new();
    let mut tombstones: Vec<String> = Vec::new();
    let mut listed = cache.list_cache_objects();
    while let Some(object) = listed.try_next().await? {
        match object {
            CacheObject::NarInfo { hash_part, meta } => {
                narinfo_keys.push((hash_part, unix_secs(meta.last_modified)));
            }
            CacheObject::Listing { hash_part, meta } => {
                scan.snapshot
                    .add_listing(&hash_part, meta.size, unix_secs(meta.last_modified));
            }
            CacheObject::Nar { meta } => {
                scan.snapshot
                    .add_nar_object(&meta.key, meta.size, unix_secs(meta.last_modified));
            }
            CacheObject::GcTombstone { name, .. } => tombstones.push(name),
            _ => {}
        }
    }
    drop(listed);
    narinfo_keys.sort();
    let mut read = futures::stream::iter(narinfo_keys)
        .map(|(hash, pushed)| async move {
            let result = cache.narinfo_by_hash(&hash).await;
            (hash, pushed, result)
        })
        .buffered(concurrency.max(1));
    while let Some((hash, pushed, result)) = read.next().await {
        match result {
            Ok(Some(info)) => scan.snapshot.add_narinfo(&hash, &info, pushed),
            // Deleted since the listing: nothing to keep or delete.
            Ok(None) => {}
            Err(
                e @ (StoreError::BadNarInfo { .. }
                | StoreError::IdentityMismatch { .. }
                | StoreError::TooLarge { .. }),
            ) => {
                scan.snapshot.add_unparseable(&hash);
                scan.unparseable
                    .push((layout::narinfo(&hash), e.to_string()));
            }
            Err(e) => return Err(e.into()),
        }
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

/// How a run goes.
#[derive(Debug, Clone, Default)]
pub struct GcOptions {
    pub plan: PlanOptions,
    /// Plan and report, delete nothing.
    pub dry_run: bool,
    /// Narinfos read at once, deletes at once.
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
    /// Narinfos that do not parse: reported, never deleted.
    pub unparseable: Vec<String>,
    /// Orphan NARs kept because a narinfo does not parse.
    pub orphans_kept_for_unparseable: usize,
    /// Dead paths in reference cycles (a corrupt cache).
    pub in_cycles: usize,
    /// Deletes that failed (`key: error`), and what was not attempted after them.
    pub failures: Vec<String>,
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
                "; {} narinfos do not parse (kept)",
                self.unparseable.len()
            ));
        }
        s.push_str(&format!("; {} failures", self.failures.len()));
        s
    }
}

/// The key of `object`, for reports.
pub fn object_key(snapshot: &Snapshot, object: ObjectRef) -> String {
    match object {
        ObjectRef::Nar(k) => snapshot.key(k).to_owned(),
        ObjectRef::Listing(p) => layout::listing(snapshot.hash_part(p)),
        ObjectRef::Log(k) => layout::log(snapshot.key(k)),
    }
}

/// Scans, plans and applies: one GC run at time `now`.
pub async fn collect(
    cache: &BinaryCache,
    store_dir: &StoreDir,
    now: SystemTime,
    options: &GcOptions,
) -> Result<GcReport, GcError> {
    let mut scan = scan(cache, store_dir, options.concurrency).await?;
    let root_ids = scan.root_ids();
    let plan = plan::plan(&scan.snapshot, &root_ids, unix_secs(now), &options.plan)?;
    let mut report = GcReport {
        roots: scan.roots.len(),
        trashed_roots: scan.trashed.len(),
        unparseable: scan
            .unparseable
            .iter()
            .map(|(k, why)| format!("{k}: {why}"))
            .collect(),
        ..GcReport::default()
    };
    apply(cache, &scan.snapshot, &plan, now, options, &mut report).await;
    Ok(report)
}

/// Carries `plan` out (see the [module docs](super) for the order), filling `report`. Failures
/// are recorded in the report; a failed narinfo delete stops everything after it.
pub async fn apply(
    cache: &BinaryCache,
    snapshot: &Snapshot,
    plan: &Plan,
    now: SystemTime,
    options: &GcOptions,
    report: &mut GcReport,
) {
    let now_secs = unix_secs(now);
    report.dry_run = options.dry_run;
    report.live_paths = plan.live;
    report.missing_root_paths = plan.missing_roots;
    report.in_cycles = plan.in_cycles;
    report.orphans_kept_for_unparseable = plan.orphans_kept_for_unparseable;
    let grace_now = options.plan.grace.is_zero();
    let size = |o: &ObjectRef| snapshot.object_size(*o);
    if !grace_now {
        report.tombstoned = plan
            .tombstone
            .iter()
            .map(|&o| object_key(snapshot, o))
            .collect();
        report.bytes_after_grace = plan.tombstone.iter().map(size).fold(0, u64::saturating_add);
    }
    let narinfo_keys: Vec<String> = plan
        .narinfos
        .iter()
        .map(|&id| layout::narinfo(snapshot.hash_part(id)))
        .collect();
    if options.dry_run {
        report.narinfos_deleted = narinfo_keys;
        report.objects_deleted = plan
            .delete
            .iter()
            .map(|&o| object_key(snapshot, o))
            .collect();
        report.orphans_deleted = plan.orphans;
        report.bytes_freed = plan.delete.iter().map(size).fold(0, u64::saturating_add);
        return;
    }

    // 1. The tombstone, before any narinfo goes.
    if !grace_now && !plan.tombstone.is_empty() {
        let name = format!(
            "{now_secs}-{:016x}",
            rand_core::RngCore::next_u64(&mut rand_core::OsRng)
        );
        let body = render_tombstone(snapshot, plan, now_secs);
        match cache.put_gc_tombstone(&name, body.into()).await {
            Ok(_) => report.tombstone = Some(layout::gc_tombstone(&name)),
            Err(e) => {
                report.failures.push(format!(
                    "{}: {e}; nothing was deleted",
                    layout::gc_tombstone(&name)
                ));
                report.tombstoned.clear();
                report.bytes_after_grace = 0;
                return;
            }
        }
    }

    // 2. Narinfos, referrers first; the first failure stops the run.
    for (&id, key) in plan.narinfos.iter().zip(&narinfo_keys) {
        if let Err(e) = cache.delete_narinfo(snapshot.hash_part(id)).await {
            report.failures.push(format!(
                "{key}: {e}; stopped: {} narinfos and every object left undeleted",
                plan.narinfos.len() - report.narinfos_deleted.len()
            ));
            return;
        }
        report.narinfos_deleted.push(key.clone());
    }

    // 3. Objects, each re-checked just before its delete.
    let renamed = match named_since(cache, snapshot, &plan.narinfos).await {
        Ok(n) => n,
        Err(e) => {
            report.failures.push(format!(
                "cannot re-check the narinfos written during the run: {e}; no object was deleted"
            ));
            return;
        }
    };
    let mut failed = false;
    for &o in &plan.delete {
        let key = object_key(snapshot, o);
        if renamed.contains(&key) {
            report.objects_kept_on_recheck.push(key);
            continue;
        }
        let result = match o {
            ObjectRef::Nar(k) => match cache.nar_meta(snapshot.key(k)).await {
                Ok(None) => continue,
                Ok(Some(meta)) => {
                    let listed = snapshot.object_modified(o).unwrap_or(0);
                    if unix_secs(meta.last_modified) > listed {
                        // Rewritten since the listing: a push uploaded it again.
                        report.objects_kept_on_recheck.push(key);
                        continue;
                    }
                    cache.delete_nar(snapshot.key(k)).await
                }
                Err(e) => Err(e),
            },
            ObjectRef::Listing(p) => cache.delete_listing(snapshot.hash_part(p)).await,
            ObjectRef::Log(k) => cache.delete_log(snapshot.key(k)).await,
        };
        match result {
            Ok(()) => {
                report.bytes_freed = report.bytes_freed.saturating_add(size(&o));
                report.objects_deleted.push(key);
            }
            Err(e) => {
                failed = true;
                report.failures.push(format!("{key}: {e}"));
            }
        }
    }
    let orphan_start = plan.delete.len() - plan.orphans;
    report.orphans_deleted = plan.delete[orphan_start..]
        .iter()
        .filter(|&&o| report.objects_deleted.contains(&object_key(snapshot, o)))
        .count();

    // 4. Tombstones whose objects are all handled (a failure keeps them for the next run).
    if !failed {
        for name in &plan.finished_tombstones {
            if let Err(e) = cache.delete_gc_tombstone(name).await {
                report
                    .failures
                    .push(format!("{}: {e}", layout::gc_tombstone(name)));
            }
        }
    }
}

/// The object keys (NARs, listings, logs) named by narinfos written since `snapshot` was read:
/// narinfo keys are listed again and those the snapshot has no narinfo for, or whose narinfo
/// this run deleted, are read.
async fn named_since(
    cache: &BinaryCache,
    snapshot: &Snapshot,
    unpublished: &[plan::PathId],
) -> Result<HashSet<String>, StoreError> {
    let unpublished: HashSet<plan::PathId> = unpublished.iter().copied().collect();
    let mut named = HashSet::new();
    let mut hashes = cache.list_narinfo_hashes();
    while let Some(hash) = hashes.try_next().await? {
        // Kept narinfos of the snapshot are known; a deleted one listed again was pushed again.
        let known = snapshot
            .path_id(&hash)
            .filter(|id| snapshot.summary(*id).is_some() && !unpublished.contains(id));
        if known.is_some() {
            continue;
        }
        named.insert(layout::listing(&hash));
        // A new narinfo that does not parse may name anything: keep every NAR.
        match cache.narinfo_by_hash(&hash).await {
            Ok(Some(info)) => {
                named.insert(info.url.clone());
                if let Some(d) = &info.deriver {
                    named.insert(layout::log(&d.to_string()));
                }
            }
            Ok(None) => {}
            Err(
                StoreError::BadNarInfo { .. }
                | StoreError::IdentityMismatch { .. }
                | StoreError::TooLarge { .. },
            ) => {
                named.extend(snapshot_nar_keys(snapshot));
            }
            Err(e) => return Err(e),
        }
    }
    Ok(named)
}

fn snapshot_nar_keys(snapshot: &Snapshot) -> Vec<String> {
    snapshot.nar_keys().map(str::to_owned).collect()
}
