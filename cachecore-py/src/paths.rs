//! The native half of `Cache.paths()`: the core's pages of store paths
//! ([`blocking::PathPages`], read one page ahead on the runtime), handed to Python a page at a
//! time, each wait with the GIL released and interruptible.

use cachecore::blocking;
use pyo3::prelude::*;

use crate::error::Failure;
use crate::run::{wait, Cancel};

/// The store paths of a cache, a page at a time.
#[pyclass(frozen, module = "cachecore._cachecore")]
#[derive(Debug)]
pub struct NativePaths {
    // An async lock: the wait for a page holds it (and releases it if interrupted).
    pages: tokio::sync::Mutex<blocking::PathPages>,
}

impl NativePaths {
    pub fn new(pages: blocking::PathPages) -> Self {
        NativePaths {
            pages: tokio::sync::Mutex::new(pages),
        }
    }
}

#[pymethods]
impl NativePaths {
    /// The next page of full store paths, `None` after the last.
    fn next_page(&self, py: Python<'_>) -> PyResult<Option<Vec<String>>> {
        wait(py, &Cancel::new(), None, || async {
            let mut pages = self.pages.lock().await;
            pages.next_page().await.transpose().map_err(Failure::from)
        })
    }
}
