//! The native half of `Cache.roots`, `Cache.add_root`, `Cache.gc_plan`, `Cache.gc_apply`: each
//! converts its arguments and calls `cachecore::gc` (roots, [`PlannedRun`]); what is garbage,
//! and the order of deletes, are the core's.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use cachecore::error::ErrorKind;
use cachecore::gc::{self, roots, GcOptions, GcReport, Keepers, PathFate, PlanOptions, PlannedRun};
use cachecore::local_store::resolve_path_arg;
use cachecore::store;
use cachecore::store_path::StoreDir;
use pyo3::prelude::*;
use pyo3::IntoPyObjectExt;

use crate::error::{check, exception, invalid_input};

/// A root as Python sees it: `(host, name, keep, trashed, [(added, [full store path])])`.
pub type RootTuple = (String, String, usize, Option<u64>, Vec<(u64, Vec<String>)>);

pub fn root_tuple(
    store_dir: &StoreDir,
    host: &str,
    name: &str,
    body: &roots::RootBody,
) -> RootTuple {
    let revisions = body
        .revisions
        .iter()
        .map(|r| {
            let paths = r.paths.iter().map(|p| store_dir.full_path(p)).collect();
            (r.added, paths)
        })
        .collect();
    (
        host.to_owned(),
        name.to_owned(),
        body.keep,
        body.trashed,
        revisions,
    )
}

pub fn root_tuples(store_dir: &StoreDir, all: &[gc::Root]) -> Vec<RootTuple> {
    all.iter()
        .map(|r| root_tuple(store_dir, &r.host, &r.name, &r.body))
        .collect()
}

/// A duration as the GC options take it (`30d`, `6h`; Python passes a number of seconds as
/// `<n>s`), or `InvalidInput`.
fn duration(
    py: Python<'_>,
    what: &str,
    text: Option<&str>,
) -> PyResult<Option<std::time::Duration>> {
    text.map(|t| gc::parse_duration(t).map_err(|e| invalid_input(py, format!("{what}: {e}"))))
        .transpose()
}

/// The options of `Cache.gc_plan`, as `cachecore gc` takes them.
#[allow(clippy::too_many_arguments)]
pub fn options(
    py: Python<'_>,
    older_than: Option<&str>,
    unused_for: Option<&str>,
    max_size: Option<&str>,
    grace: Option<&str>,
    failed_uploads_older_than: Option<&str>,
    only_trashed: bool,
    allow_empty_roots: bool,
    delete_unparseable: bool,
    jobs: Option<usize>,
) -> PyResult<GcOptions> {
    let defaults = PlanOptions::default();
    let max_size = max_size
        .map(|t| gc::parse_size(t).map_err(|e| invalid_input(py, format!("max_size: {e}"))))
        .transpose()?;
    Ok(GcOptions {
        plan: PlanOptions {
            older_than: duration(py, "older_than", older_than)?,
            unused_for: duration(py, "unused_for", unused_for)?,
            grace: duration(py, "grace", grace)?.unwrap_or(defaults.grace),
            failed_uploads_older_than: duration(
                py,
                "failed_uploads_older_than",
                failed_uploads_older_than,
            )?
            .unwrap_or(defaults.failed_uploads_older_than),
            only_trashed,
            allow_empty_roots,
            max_size,
            delete_unparseable,
        },
        dry_run: false,
        concurrency: jobs.unwrap_or(16).max(1),
    })
}

/// A report as `cachecore gc --json` prints it, and its one-line summary.
pub fn report(py: Python<'_>, report: &GcReport) -> PyResult<Py<PyAny>> {
    let json = serde_json::to_string(report)
        .map_err(|e| exception(py, Some(ErrorKind::Internal), &e.to_string()))?;
    (json, report.summary()).into_py_any(py)
}

/// A GC run planned by `Cache.gc_plan`, applied (once) by `Cache.gc_apply`.
#[pyclass(frozen, module = "cachecore._cachecore")]
#[derive(Debug)]
pub struct NativeGcPlan {
    pub run: Arc<PlannedRun>,
    /// The URL of the cache it was planned for.
    pub url: String,
    applied: AtomicBool,
    /// What `why_kept` follows, walked on its first call.
    keepers: OnceLock<Keepers>,
}

impl NativeGcPlan {
    pub fn new(run: PlannedRun, url: String) -> Self {
        NativeGcPlan {
            run: Arc::new(run),
            url,
            applied: AtomicBool::new(false),
            keepers: OnceLock::new(),
        }
    }

    /// The run to apply: refused for another cache, or a plan applied already.
    pub fn take(&self, py: Python<'_>, cache: &store::BinaryCache) -> PyResult<Arc<PlannedRun>> {
        if cache.url() != self.url {
            return Err(invalid_input(
                py,
                format!(
                    "this GC plan is for {}, not {}: plan with the cache it is applied to",
                    self.url,
                    cache.url()
                ),
            ));
        }
        if self.applied.swap(true, Ordering::SeqCst) {
            return Err(exception(
                py,
                Some(ErrorKind::Conflict),
                "this GC plan was applied already: make a new one with Cache.gc_plan()",
            ));
        }
        Ok(self.run.clone())
    }
}

#[pymethods]
impl NativeGcPlan {
    /// What applying would do: `(json, summary)` of a dry run's report.
    fn preview(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        report(py, &self.run.preview())
    }

    /// The size of every object the run deletes, now or after the grace, by key.
    fn object_sizes(&self) -> HashMap<String, u64> {
        let (snapshot, plan) = (&self.run.scan.snapshot, &self.run.plan);
        plan.delete
            .iter()
            .chain(&plan.tombstone)
            .map(|&o| (gc::apply::object_key(snapshot, o), snapshot.object_size(o)))
            .collect()
    }

    /// The narinfos the run deletes, in order: `(key, hash part, NarSize, FileSize)` (the
    /// sizes `None` for a narinfo that does not parse).
    fn narinfos(&self) -> Vec<(String, String, Option<u64>, Option<u64>)> {
        let snapshot = &self.run.scan.snapshot;
        self.run
            .plan
            .narinfos
            .iter()
            .map(|&id| {
                let hash = snapshot.hash_part(id).to_owned();
                let summary = snapshot.summary(id);
                (
                    format!("{hash}.narinfo"),
                    hash,
                    summary.map(|s| s.nar_size),
                    summary.map(|s| s.file_size),
                )
            })
            .collect()
    }

    /// The roots whose closures stay (`host/name`), and how many leases of pushes in progress
    /// keep paths.
    fn keepers(&self) -> (Vec<String>, usize) {
        let scan = &self.run.scan;
        let now = roots::unix_secs(self.run.now);
        let roots = scan.roots.iter().map(ToString::to_string).collect();
        let leases = scan.leases.iter().filter(|(_, l)| l.holds_at(now)).count();
        (roots, leases)
    }

    /// What the plan does with store path `path` and what keeps it: `(json, sentence)` of the
    /// core's answer (`cachecore gc --why`), or `NotFound` for a path the cache lacks. The
    /// first call walks the live paths once (4 bytes a path), with the GIL released.
    fn why_kept(&self, py: Python<'_>, path: &str) -> PyResult<(String, String)> {
        let (path, _) = check(py, resolve_path_arg(&StoreDir::default(), Path::new(path)))?;
        let run = &self.run;
        let fate = py.detach(|| {
            let keepers = self.keepers.get_or_init(|| run.keepers());
            run.why(keepers, &path.hash_part())
        });
        let sentence = fate.describe(roots::unix_secs(run.now));
        if fate == PathFate::NotInCache {
            let full = StoreDir::default().full_path(&path);
            return Err(exception(
                py,
                Some(ErrorKind::NotFound),
                &format!("{full}: {sentence}"),
            ));
        }
        let json = serde_json::to_string(&fate)
            .map_err(|e| exception(py, Some(ErrorKind::Internal), &e.to_string()))?;
        Ok((json, sentence))
    }

    /// Whether `gc_apply` took it already.
    #[getter]
    fn applied(&self) -> bool {
        self.applied.load(Ordering::SeqCst)
    }

    /// Unix seconds of the time it was planned for.
    #[getter]
    fn planned_at(&self) -> u64 {
        roots::unix_secs(self.run.now)
    }
}
