//! Running the core's work from Python: on the core's runtime (`cachecore::blocking::runtime`,
//! which a forked child builds anew), with the GIL released, and interruptible.
//!
//! A synchronous call waits for its task in slices of [`POLL`], checking Python's signals
//! between them: on Ctrl-C (or an exception raised by a progress callback or a file object) the
//! task is dropped — which stops the operation and starts its cleanups, as the CLI does on
//! SIGINT — the store's cleanups are waited for, and the exception is raised.
//!
//! An `*_async` call returns an `asyncio` future of the running loop, completed from the
//! runtime with `loop.call_soon_threadsafe`; cancelling the future drops the task.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pyo3::prelude::*;
use pyo3::types::PyModule;

use crate::error::Failure;

/// How often a waiting call checks for signals.
const POLL: Duration = Duration::from_millis(50);

/// What stops an operation early: a Python exception raised by a callback or a file object it
/// calls (kept here to be raised by the call), or a signal (`stop` set, so that file objects
/// called from Rust stop being read or written).
#[derive(Debug, Default)]
pub struct Cancel {
    stop: AtomicBool,
    raised: Mutex<Option<PyErr>>,
}

impl Cancel {
    pub fn new() -> Arc<Cancel> {
        Arc::new(Cancel::default())
    }

    /// Keeps the first exception raised by Python code the operation called, and stops it.
    pub fn raised(&self, err: PyErr) {
        let mut slot = self.raised.lock().unwrap_or_else(|p| p.into_inner());
        slot.get_or_insert(err);
        self.stop.store(true, Ordering::SeqCst);
    }

    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    pub fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    fn take_raised(&self) -> Option<PyErr> {
        self.raised.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

fn runtime(py: Python<'_>) -> PyResult<Arc<tokio::runtime::Runtime>> {
    cachecore::blocking::runtime().map_err(|e| crate::error::to_py(py, &e))
}

/// Runs the future `make` returns on the core's runtime and waits for it with the GIL released
/// (see the module docs). `cleanup` is awaited after an interrupted operation (a store's
/// pending cleanups).
///
/// The future is built and driven on the calling thread (`Runtime::block_on`), so it need not
/// be `Send`: the core's operations are, but the compiler cannot always prove it for futures
/// that borrow into closures (rust-lang/rust#100013), so no binding relies on it.
pub fn wait<T, F, M>(
    py: Python<'_>,
    cancel: &Arc<Cancel>,
    cleanup: Option<cachecore::store::BinaryCache>,
    make: M,
) -> PyResult<T>
where
    M: FnOnce() -> F + Send,
    F: Future<Output = Result<T, Failure>>,
    T: Send,
{
    let rt = runtime(py)?;
    let watched = cancel.clone();
    let outcome: Result<Result<T, Failure>, PyErr> = py.detach(move || {
        let cancel = watched;
        rt.block_on(async move {
            let mut operation = Box::pin(make());
            loop {
                tokio::select! {
                    result = &mut operation => return Ok(result),
                    () = tokio::time::sleep(POLL) => {}
                }
                let stop = Python::attach(|py| match py.check_signals() {
                    Err(signal) => Some(signal),
                    Ok(()) if cancel.stopped() => cancel.take_raised(),
                    Ok(()) => None,
                });
                if let Some(err) = stop {
                    cancel.stop();
                    // Dropping the operation stops it and starts its cleanups.
                    drop(operation);
                    if let Some(cache) = cleanup {
                        cache.finish_cleanups().await;
                    }
                    return Err(err);
                }
            }
        })
    });
    let result = outcome?;
    // An exception raised by Python code the operation called comes first: the operation's
    // own error is only its consequence.
    if let Some(raised) = cancel.take_raised() {
        return Err(raised);
    }
    result.map_err(|f| f.into_py(py))
}

/// Runs the blocking closure `work` on the runtime's blocking threads, waiting as [`wait`]
/// does. On a signal it returns at once: `work` must stop by itself when `cancel` is stopped
/// (file objects called from Rust do), or have nothing to leave half-written.
pub fn wait_blocking<T, W>(py: Python<'_>, cancel: &Arc<Cancel>, work: W) -> PyResult<T>
where
    W: FnOnce() -> Result<T, Failure> + Send + 'static,
    T: Send + 'static,
{
    wait(py, cancel, None, move || async move {
        match tokio::task::spawn_blocking(work).await {
            Ok(result) => result,
            Err(e) => Err(Failure::from(e)),
        }
    })
}

/// Turns the value of a finished operation into a Python object (with the GIL held).
pub type Convert<T> = fn(Python<'_>, T) -> PyResult<Py<PyAny>>;

/// Cancels the task of an `*_async` call when its future is cancelled (a done-callback).
#[pyclass(module = "cachecore._cachecore")]
struct AbortOnCancel {
    cancelled: Arc<tokio::sync::Notify>,
}

#[pymethods]
impl AbortOnCancel {
    fn __call__(&self, future: &Bound<'_, PyAny>) -> PyResult<()> {
        if future.call_method0("cancelled")?.is_truthy()? {
            self.cancelled.notify_one();
        }
        Ok(())
    }
}

/// Starts the future `make` returns on the core's runtime and returns an `asyncio` future of
/// the running loop that completes with its converted value (see the module docs). As in
/// [`wait`], the future is built and driven where it runs (a thread of the runtime's blocking
/// pool, one per call in flight), so it need not be `Send`.
pub fn spawn<'py, T, F, M>(
    py: Python<'py>,
    cancel: Arc<Cancel>,
    cleanup: Option<cachecore::store::BinaryCache>,
    make: M,
    convert: Convert<T>,
) -> PyResult<Bound<'py, PyAny>>
where
    M: FnOnce() -> F + Send + 'static,
    F: Future<Output = Result<T, Failure>>,
    T: Send + 'static,
{
    let asyncio = PyModule::import(py, "asyncio")?;
    let event_loop = asyncio.call_method0("get_running_loop")?;
    let py_future = event_loop.call_method0("create_future")?;
    let complete = PyModule::import(py, "cachecore._bridge")?.getattr("complete")?;
    let rt = runtime(py)?;
    let (loop_ref, future_ref, complete) = (
        event_loop.unbind(),
        py_future.clone().unbind(),
        complete.unbind(),
    );
    let cancelled = Arc::new(tokio::sync::Notify::new());
    let on_cancel = cancelled.clone();
    let handle = rt.handle().clone();
    rt.spawn_blocking(move || {
        let result = handle.block_on(async move {
            let outcome = tokio::select! {
                result = make() => Some(result),
                () = cancelled.notified() => None,
            };
            // Cancelled: the operation is dropped by now, which started its cleanups.
            if outcome.is_none() {
                if let Some(cache) = cleanup {
                    cache.finish_cleanups().await;
                }
            }
            outcome
        });
        // Cancelled: the operation was dropped, and nobody waits for a result.
        let Some(result) = result else { return };
        Python::attach(|py| {
            let outcome = match cancel.take_raised() {
                Some(raised) => Err(raised),
                None => result
                    .map_err(|f| f.into_py(py))
                    .and_then(|v| convert(py, v)),
            };
            let (ok, value) = match outcome {
                Ok(v) => (true, v),
                Err(e) => (false, e.into_value(py).into_any()),
            };
            // A closed loop cannot take the result: nobody waits for it any more.
            let _ = loop_ref.call_method1(
                py,
                "call_soon_threadsafe",
                (complete, future_ref, ok, value),
            );
        });
    });
    py_future.call_method1(
        "add_done_callback",
        (AbortOnCancel {
            cancelled: on_cancel,
        },),
    )?;
    Ok(py_future)
}

/// Registers the helper class.
pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<AbortOnCancel>()
}
