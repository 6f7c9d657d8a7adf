//! The native half of `Cache.paths()` and `Cache.paths_async()`: the core's pages of store
//! paths ([`blocking::PathPages`], read one page ahead on the runtime), handed to Python a page
//! at a time — each wait with the GIL released and interruptible, or as an asyncio future.

use std::sync::Arc;

use cachecore::blocking;
use pyo3::prelude::*;
use pyo3::IntoPyObjectExt;

use crate::error::Failure;
use crate::run::{spawn, wait, Cancel};

/// The store paths of a cache, a page at a time.
#[pyclass(frozen, module = "cachecore._cachecore")]
#[derive(Debug)]
pub struct NativePaths {
    // An async lock: the wait for a page holds it (and releases it if interrupted or
    // cancelled).
    pages: Arc<tokio::sync::Mutex<blocking::PathPages>>,
}

impl NativePaths {
    pub fn new(pages: blocking::PathPages) -> Self {
        NativePaths {
            pages: Arc::new(tokio::sync::Mutex::new(pages)),
        }
    }
}

/// The next page of `pages`: full store paths, `None` after the last.
async fn next_page(
    pages: Arc<tokio::sync::Mutex<blocking::PathPages>>,
) -> Result<Option<Vec<String>>, Failure> {
    let mut pages = pages.lock().await;
    pages.next_page().await.transpose().map_err(Failure::from)
}

#[pymethods]
impl NativePaths {
    /// The next page of full store paths, `None` after the last; with `asynchronous`, an
    /// asyncio future of it.
    #[pyo3(signature = (asynchronous = false))]
    fn next_page<'py>(&self, py: Python<'py>, asynchronous: bool) -> PyResult<Bound<'py, PyAny>> {
        let pages = self.pages.clone();
        if asynchronous {
            spawn(
                py,
                Cancel::new(),
                None,
                move || next_page(pages),
                |py, page| page.into_py_any(py),
            )
        } else {
            wait(py, &Cancel::new(), None, move || next_page(pages))?.into_bound_py_any(py)
        }
    }
}
