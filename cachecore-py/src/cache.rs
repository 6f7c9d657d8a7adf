//! `cachecore.Cache`'s native half: one method per operation, each converting its arguments,
//! making one core call (on the core's runtime: `run::wait`, or `run::spawn` for the
//! `*_async` methods) and converting the result to plain Python values, which the pure-Python
//! `cachecore.Cache` wraps in typed classes.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use cachecore::blocking;
use cachecore::compression::{Compression, NarCompression};
use cachecore::gc::{self, roots, PlannedRun};
use cachecore::local_store::{resolve_path_arg, LocalStore};
use cachecore::ops::{self, Progress};
use cachecore::signing::Signer;
use cachecore::store;
use cachecore::store_path::{self, StoreDir, DEFAULT_STORE_DIR};
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use pyo3::IntoPyObjectExt;

use crate::error::{check, exception, invalid_input, Failure};
use crate::file::NativeFile;
use crate::gc::{self as py_gc, NativeGcPlan};
use crate::keys::{public_keys, SecretKey};
use crate::nar::to_json;
use crate::narinfo::NarInfo;
use crate::paths::NativePaths;
use crate::run::{spawn, wait, Cancel, Convert};
use crate::store_path::StorePath;

/// A binary cache at a store URL (the CLI's URLs), with blocking and async operations.
#[pyclass(frozen, module = "cachecore._cachecore")]
#[derive(Debug)]
pub struct NativeCache {
    inner: blocking::BinaryCache,
}

/// Runs `future` as a synchronous call, or starts it as an `*_async` one.
fn call<'py, T, F, M>(
    py: Python<'py>,
    asynchronous: bool,
    cancel: Arc<Cancel>,
    cleanup: Option<store::BinaryCache>,
    make: M,
    convert: Convert<T>,
) -> PyResult<Bound<'py, PyAny>>
where
    M: FnOnce() -> F + Send + 'static,
    F: std::future::Future<Output = Result<T, Failure>>,
    T: Send + 'static,
{
    if asynchronous {
        spawn(py, cancel, cleanup, make, convert)
    } else {
        let value = wait(py, &cancel, cleanup, make)?;
        Ok(convert(py, value)?.into_bound(py))
    }
}

/// A store path argument as every command takes it (see `resolve_path_arg`): the store path
/// and the part below it.
fn path_arg(py: Python<'_>, arg: &str) -> PyResult<(store_path::StorePath, String)> {
    check(py, resolve_path_arg(&StoreDir::default(), Path::new(arg)))
}

fn paths_arg(py: Python<'_>, args: &[String]) -> PyResult<Vec<store_path::StorePath>> {
    args.iter().map(|a| Ok(path_arg(py, a)?.0)).collect()
}

/// Progress reported to a Python callable, called as `progress(event, value)` on a runtime
/// thread (attached to the interpreter for each call). An exception it raises stops the
/// operation and is raised by the call.
struct PyProgress {
    callback: Option<Py<PyAny>>,
    cancel: Arc<Cancel>,
}

impl PyProgress {
    fn shared(callback: Option<Py<PyAny>>, cancel: &Arc<Cancel>) -> Arc<dyn Progress> {
        Arc::new(PyProgress {
            callback,
            cancel: cancel.clone(),
        })
    }

    fn report<V: for<'py> IntoPyObject<'py>>(&self, event: &str, value: V) {
        let Some(callback) = &self.callback else {
            return;
        };
        if self.cancel.stopped() {
            return;
        }
        Python::attach(|py| {
            let value = match value.into_py_any(py) {
                Ok(v) => v,
                Err(e) => return self.cancel.raised(e),
            };
            if let Err(e) = callback.call1(py, (event, value)) {
                self.cancel.raised(e);
            }
        });
    }
}

impl Progress for PyProgress {
    fn planned(&self, paths: usize, bytes: u64, skipped: usize) {
        self.report("planned", (paths, bytes, skipped));
    }
    fn bytes(&self, bytes: u64) {
        self.report("bytes", bytes);
    }
    fn path_done(&self, path: &str) {
        self.report("path_done", path);
    }
    fn message(&self, text: &str) {
        self.report("message", text);
    }
}

/// `(pushed, skipped, nar_bytes, file_bytes, unsigned)`.
type PushCounts = (usize, usize, u64, u64, usize);

fn push_counts(s: &ops::PushSummary) -> PushCounts {
    (s.pushed, s.skipped, s.nar_bytes, s.file_bytes, s.unsigned)
}

/// How a push compresses and signs, from the store URL's settings and the arguments.
fn push_options(
    py: Python<'_>,
    cache: &store::BinaryCache,
    keys: Vec<PyRef<'_, SecretKey>>,
    jobs: Option<usize>,
    compression: Option<&str>,
    level: Option<i32>,
    listing: Option<bool>,
) -> PyResult<ops::PushOptions> {
    let mut opts = check(py, ops::PushOptions::for_cache(cache))?;
    if !keys.is_empty() {
        opts.signers = keys
            .iter()
            .map(|k| k.inner.clone() as Arc<dyn Signer>)
            .collect();
    }
    if let Some(name) = compression {
        opts.compression.method = check(py, Compression::from_name(name))?;
    }
    if level.is_some() {
        opts.compression.level = level;
    }
    if let Some(listing) = listing {
        opts.write_listing = listing;
    }
    if let Some(jobs) = jobs {
        opts.jobs = jobs.max(1);
    }
    Ok(opts)
}

impl NativeCache {
    /// The async handle for this process (re-opened in a forked child).
    fn handle(&self, py: Python<'_>) -> PyResult<store::BinaryCache> {
        check(py, self.inner.as_async())
    }
}

#[pymethods]
impl NativeCache {
    /// Opens the store at `url`; `env` adds to (or overrides) the process environment the
    /// store reads its settings from (`AWS_*`, `CACHECORE_TOKEN`).
    #[new]
    fn new(py: Python<'_>, url: &str, env: Vec<(String, String)>) -> PyResult<Self> {
        let mut all = store::process_env();
        all.retain(|(k, _)| !env.iter().any(|(given, _)| given == k));
        all.extend(env);
        let url = url.to_owned();
        let inner = py.detach(move || blocking::BinaryCache::open_with_env(&url, &all));
        Ok(NativeCache {
            inner: check(py, inner)?,
        })
    }

    /// The store URL (passwords replaced by `***`).
    #[getter]
    fn url(&self) -> String {
        self.inner.url()
    }

    /// `((StoreDir, WantMassQuery, Priority) | None, paths, nar_bytes, file_bytes,
    /// debris_objects, debris_bytes)`.
    fn info<'py>(&self, py: Python<'py>, asynchronous: bool) -> PyResult<Bound<'py, PyAny>> {
        let cache = self.handle(py)?;
        call(
            py,
            asynchronous,
            Cancel::new(),
            None,
            move || async move { Ok(ops::info(&cache).await?) },
            |py, (info, totals)| {
                let info = info.map(|i| (i.store_dir, i.want_mass_query, i.priority));
                let t = totals;
                (
                    info,
                    t.paths,
                    t.nar_bytes,
                    t.file_bytes,
                    t.debris_objects,
                    t.debris_bytes,
                )
                    .into_py_any(py)
            },
        )
    }

    /// Writes `nix-cache-info` (from the URL's settings) unless the cache has one.
    fn init<'py>(&self, py: Python<'py>, asynchronous: bool) -> PyResult<Bound<'py, PyAny>> {
        let cache = self.handle(py)?;
        call(
            py,
            asynchronous,
            Cancel::new(),
            None,
            move || async move {
                let wanted = cache.settings().cache_info(DEFAULT_STORE_DIR);
                Ok(cache.init(&wanted).await?)
            },
            |py, _| Ok(py.None()),
        )
    }

    /// The narinfo of `path`, or `None`.
    fn narinfo<'py>(
        &self,
        py: Python<'py>,
        path: &str,
        asynchronous: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let cache = self.handle(py)?;
        let (path, _) = path_arg(py, path)?;
        call(
            py,
            asynchronous,
            Cancel::new(),
            None,
            move || async move { Ok(cache.narinfo(&path).await?) },
            |py, info| info.map(|inner| NarInfo { inner }).into_py_any(py),
        )
    }

    /// Whether the cache has a narinfo for `path`.
    fn has<'py>(
        &self,
        py: Python<'py>,
        path: &str,
        asynchronous: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let cache = self.handle(py)?;
        let (path, _) = path_arg(py, path)?;
        call(
            py,
            asynchronous,
            Cancel::new(),
            None,
            move || async move { Ok(cache.has_narinfo(&path).await?) },
            |py, has| has.into_py_any(py),
        )
    }

    /// The store paths in the cache, a page at a time, as they are read.
    fn path_pages(&self, py: Python<'_>) -> PyResult<NativePaths> {
        let pages = check(py, self.inner.path_pages())?;
        Ok(NativePaths::new(pages))
    }

    /// Pushes store paths of the local Nix store (and their closures unless `closure` is
    /// false); returns `(pushed, skipped, nar_bytes, file_bytes, unsigned)`.
    #[pyo3(signature = (paths, keys, jobs, compression, level, listing, closure, progress, asynchronous))]
    #[allow(clippy::too_many_arguments)]
    fn push<'py>(
        &self,
        py: Python<'py>,
        paths: Vec<String>,
        keys: Vec<PyRef<'py, SecretKey>>,
        jobs: Option<usize>,
        compression: Option<&str>,
        level: Option<i32>,
        listing: Option<bool>,
        closure: bool,
        progress: Option<Py<PyAny>>,
        asynchronous: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let cache = self.handle(py)?;
        let mut opts = push_options(py, &cache, keys, jobs, compression, level, listing)?;
        opts.closure = closure;
        let local = check(py, py.detach(|| LocalStore::open(StoreDir::default())))?;
        let roots = paths
            .iter()
            .map(|p| check(py, local.resolve(Path::new(p))))
            .collect::<PyResult<Vec<_>>>()?;
        let cancel = Cancel::new();
        let progress = PyProgress::shared(progress, &cancel);
        call(
            py,
            asynchronous,
            cancel,
            Some(cache.clone()),
            move || async move { Ok(ops::push(&cache, &local, &roots, &opts, progress).await?) },
            |py, summary| push_counts(&summary).into_py_any(py),
        )
    }

    /// Pushes a plain file or directory as the store path `nix-store --add` would give it;
    /// returns `(StorePath, (pushed, skipped, nar_bytes, file_bytes, unsigned))`.
    #[pyo3(signature = (source, name, keys, compression, level, listing, progress, asynchronous))]
    #[allow(clippy::too_many_arguments)]
    fn add<'py>(
        &self,
        py: Python<'py>,
        source: PathBuf,
        name: &str,
        keys: Vec<PyRef<'py, SecretKey>>,
        compression: Option<&str>,
        level: Option<i32>,
        listing: Option<bool>,
        progress: Option<Py<PyAny>>,
        asynchronous: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let cache = self.handle(py)?;
        let opts = push_options(py, &cache, keys, None, compression, level, listing)?;
        let name = name.to_owned();
        let cancel = Cancel::new();
        let progress = PyProgress::shared(progress, &cancel);
        call(
            py,
            asynchronous,
            cancel,
            Some(cache.clone()),
            move || async move {
                let dir = StoreDir::default();
                Ok(ops::push_add(&cache, &dir, &source, &name, &opts, progress).await?)
            },
            |py, (path, summary)| (StorePath::wrap(path), push_counts(&summary)).into_py_any(py),
        )
    }

    /// Copies `paths` and their closures (every path when empty) into `to`; returns
    /// `(copied, skipped)`.
    #[pyo3(signature = (to, paths, jobs, trusted_keys, recompress, level, progress, asynchronous))]
    #[allow(clippy::too_many_arguments)]
    fn copy_to<'py>(
        &self,
        py: Python<'py>,
        to: &NativeCache,
        paths: Vec<String>,
        jobs: Option<usize>,
        trusted_keys: Vec<Bound<'py, PyAny>>,
        recompress: Option<&str>,
        level: Option<i32>,
        progress: Option<Py<PyAny>>,
        asynchronous: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let (from, to) = (self.handle(py)?, to.handle(py)?);
        let paths = paths_arg(py, &paths)?;
        let mut opts = ops::CopyOptions {
            trusted_keys: public_keys(py, &trusted_keys)?,
            ..ops::CopyOptions::default()
        };
        if let Some(jobs) = jobs {
            opts.jobs = jobs.max(1);
        }
        if let Some(name) = recompress {
            let method = check(py, Compression::from_name(name))?;
            opts.recompress = Some(NarCompression::new(method, level));
        }
        let cancel = Cancel::new();
        let progress = PyProgress::shared(progress, &cancel);
        call(
            py,
            asynchronous,
            cancel,
            Some(to.clone()),
            move || async move { Ok(ops::copy(&from, &to, &paths, &opts, progress).await?) },
            |py, s| (s.copied, s.skipped).into_py_any(py),
        )
    }

    /// Downloads, checks and unpacks `path` at `dest` (which must not exist).
    #[pyo3(signature = (path, dest, trusted_keys, check_signatures, progress, asynchronous))]
    #[allow(clippy::too_many_arguments)]
    fn pull<'py>(
        &self,
        py: Python<'py>,
        path: &str,
        dest: PathBuf,
        trusted_keys: Vec<Bound<'py, PyAny>>,
        check_signatures: bool,
        progress: Option<Py<PyAny>>,
        asynchronous: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let cache = self.handle(py)?;
        let (path, _) = path_arg(py, path)?;
        let trusted_keys = public_keys(py, &trusted_keys)?;
        if trusted_keys.is_empty() && check_signatures {
            return Err(invalid_input(
                py,
                "pass trusted_keys=[...] to check signatures, or check_signatures=False to skip the check",
            ));
        }
        let opts = ops::PullOptions {
            trusted_keys,
            check_signatures,
        };
        let cancel = Cancel::new();
        let progress = PyProgress::shared(progress, &cancel);
        call(
            py,
            asynchronous,
            cancel,
            Some(cache.clone()),
            move || async move { Ok(ops::pull(&cache, &path, &dest, &opts, progress).await?) },
            |py, ()| Ok(py.None()),
        )
    }

    /// The listing node (JSON text, as in a `.ls` file) of `path` (a store path, or a path
    /// inside one).
    fn ls<'py>(
        &self,
        py: Python<'py>,
        path: &str,
        asynchronous: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let cache = self.handle(py)?;
        let arg = path.to_owned();
        let (path, sub) = path_arg(py, path)?;
        call(
            py,
            asynchronous,
            Cancel::new(),
            None,
            move || async move {
                let listing = ops::listing(&cache, &path).await?;
                Ok(listing
                    .get(&sub)
                    .map(to_json)
                    .transpose()?
                    .ok_or_else(|| format!("{arg} does not exist in {}", cache.url())))
            },
            |py, node| match node {
                Ok(json) => json.into_py_any(py),
                Err(missing) => Err(exception(
                    py,
                    Some(cachecore::error::ErrorKind::NotFound),
                    &missing,
                )),
            },
        )
    }

    /// The contents of the regular file `path` (a path inside a store path), read by ranges.
    fn cat<'py>(
        &self,
        py: Python<'py>,
        path: &str,
        asynchronous: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let cache = self.handle(py)?;
        let (path, sub) = path_arg(py, path)?;
        call(
            py,
            asynchronous,
            Cancel::new(),
            None,
            move || async move {
                let file = ops::open_file(&cache, &path, &sub).await?;
                Ok(file.read(0..file.size()).await?)
            },
            |py, bytes| PyBytes::new(py, &bytes).into_py_any(py),
        )
    }

    /// The regular file `path` (a path inside a store path), for ranged reads.
    fn open(&self, py: Python<'_>, path: &str) -> PyResult<NativeFile> {
        let (path, sub) = path_arg(py, path)?;
        let cache = self.inner.clone();
        let file = py.detach(move || cache.open_file(&path, &sub));
        Ok(NativeFile::new(check(py, file)?))
    }

    /// Verifies `paths` and their closures (the whole cache when empty); returns `(checked,
    /// unsigned, [(kind, subject, message)], [(debris key, size)])`.
    #[pyo3(signature = (paths, trusted_keys, jobs, asynchronous))]
    fn verify<'py>(
        &self,
        py: Python<'py>,
        paths: Vec<String>,
        trusted_keys: Vec<Bound<'py, PyAny>>,
        jobs: Option<usize>,
        asynchronous: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let cache = self.handle(py)?;
        let paths = paths_arg(py, &paths)?;
        let mut opts = ops::VerifyOptions {
            trusted_keys: public_keys(py, &trusted_keys)?,
            ..ops::VerifyOptions::default()
        };
        if let Some(jobs) = jobs {
            opts.jobs = jobs.max(1);
        }
        call(
            py,
            asynchronous,
            Cancel::new(),
            None,
            move || async move { Ok(ops::verify(&cache, &paths, &opts).await?) },
            |py, report| {
                let problems: Vec<(&str, String, String)> = report
                    .problems
                    .iter()
                    .map(|p| (p.kind().as_str(), p.subject().to_owned(), p.to_string()))
                    .collect();
                let debris: Vec<(String, u64)> = report
                    .debris
                    .iter()
                    .map(|d| (d.key.clone(), d.size))
                    .collect();
                (report.checked, report.unsigned, problems, debris).into_py_any(py)
            },
        )
    }

    /// The GC roots (`trashed`: the trashed roots), each `(host, name, keep, trashed,
    /// [(added, [store path])])`.
    fn roots<'py>(
        &self,
        py: Python<'py>,
        trashed: bool,
        asynchronous: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let cache = self.handle(py)?;
        call(
            py,
            asynchronous,
            Cancel::new(),
            None,
            move || async move {
                let store_dir = cache.store_dir().await?;
                let all = roots::read_all(&cache, &store_dir, trashed).await?;
                Ok(py_gc::root_tuples(&store_dir, &all))
            },
            |py, all| all.into_py_any(py),
        )
    }

    /// Roots `paths` as `host/name` (a series of `keep` revisions with `keep`); returns the
    /// root written, as [`NativeCache::roots`] gives it.
    #[pyo3(signature = (name, paths, host, keep, asynchronous))]
    fn add_root<'py>(
        &self,
        py: Python<'py>,
        name: String,
        paths: Vec<String>,
        host: String,
        keep: Option<usize>,
        asynchronous: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let cache = self.handle(py)?;
        let paths = paths_arg(py, &paths)?;
        call(
            py,
            asynchronous,
            Cancel::new(),
            None,
            move || async move {
                let store_dir = cache.store_dir().await?;
                let body = roots::add(
                    &cache,
                    &store_dir,
                    &host,
                    &name,
                    paths,
                    keep,
                    SystemTime::now(),
                )
                .await?;
                Ok(py_gc::root_tuple(&store_dir, &host, &name, &body))
            },
            |py, root| root.into_py_any(py),
        )
    }

    /// Moves root `host/name` to the trash (`restore`: back from it).
    fn remove_root<'py>(
        &self,
        py: Python<'py>,
        name: String,
        host: String,
        restore: bool,
        asynchronous: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let cache = self.handle(py)?;
        call(
            py,
            asynchronous,
            Cancel::new(),
            None,
            move || async move {
                let store_dir = cache.store_dir().await?;
                if restore {
                    roots::restore(&cache, &store_dir, &host, &name).await?;
                } else {
                    roots::remove(&cache, &store_dir, &host, &name, SystemTime::now()).await?;
                }
                Ok(())
            },
            |py, ()| Ok(py.None()),
        )
    }

    /// Reads the cache and plans a GC run (`cachecore gc`'s options; durations and sizes as
    /// it takes them); deletes nothing.
    #[pyo3(signature = (older_than, unused_for, max_size, grace, failed_uploads_older_than, only_trashed,
        allow_empty_roots, delete_unparseable, jobs, progress, asynchronous))]
    #[allow(clippy::too_many_arguments)]
    fn gc_plan<'py>(
        &self,
        py: Python<'py>,
        older_than: Option<&str>,
        unused_for: Option<&str>,
        max_size: Option<&str>,
        grace: Option<&str>,
        failed_uploads_older_than: Option<&str>,
        only_trashed: bool,
        allow_empty_roots: bool,
        delete_unparseable: bool,
        jobs: Option<usize>,
        progress: Option<Py<PyAny>>,
        asynchronous: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let cache = self.handle(py)?;
        let options = py_gc::options(
            py,
            older_than,
            unused_for,
            max_size,
            grace,
            failed_uploads_older_than,
            only_trashed,
            allow_empty_roots,
            delete_unparseable,
            jobs,
        )?;
        let cancel = Cancel::new();
        let progress = PyProgress::shared(progress, &cancel);
        call(
            py,
            asynchronous,
            cancel,
            None,
            move || async move {
                let store_dir = StoreDir::default();
                let now = SystemTime::now();
                let run = PlannedRun::prepare(&cache, &store_dir, now, &options, progress.as_ref())
                    .await?;
                Ok((run, cache.url().to_owned()))
            },
            |py, (run, url)| NativeGcPlan::new(run, url).into_py_any(py),
        )
    }

    /// Carries out `plan` (made by `gc_plan` for this cache, once); returns `(json, summary)`
    /// of the report.
    fn gc_apply<'py>(
        &self,
        py: Python<'py>,
        plan: &NativeGcPlan,
        asynchronous: bool,
    ) -> PyResult<Bound<'py, PyAny>> {
        let cache = self.handle(py)?;
        let run = plan.take(py, &cache)?;
        call(
            py,
            asynchronous,
            Cancel::new(),
            Some(cache.clone()),
            move || async move {
                let report: Result<gc::GcReport, crate::error::Failure> =
                    Ok(run.apply(&cache, SystemTime::now()).await);
                report
            },
            |py, report| py_gc::report(py, &report),
        )
    }
}
