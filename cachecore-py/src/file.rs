//! The native half of `Cache.open`: a regular file inside a cache's NAR, read through the core's
//! random access (seek table, ranged GETs of the frames, verified): streamed ahead while read
//! front to back, by ranges after a seek. The pure-Python
//! `cachecore.CacheFile` (an `io.RawIOBase`) keeps the position and is wrapped in a buffer.

use cachecore::blocking;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::error::check;

/// A regular file in a cache's NAR.
#[pyclass(frozen, module = "cachecore._cachecore")]
#[derive(Debug)]
pub struct NativeFile {
    file: blocking::File,
}

impl NativeFile {
    pub fn new(file: blocking::File) -> Self {
        NativeFile { file }
    }
}

#[pymethods]
impl NativeFile {
    /// The file's length in bytes.
    #[getter]
    fn size(&self) -> u64 {
        self.file.size()
    }

    /// Whether the file is executable.
    #[getter]
    fn executable(&self) -> bool {
        self.file.executable()
    }

    /// The bytes `start..end` of the file (clamped to its end), read with the GIL released.
    fn read_at<'py>(&self, py: Python<'py>, start: u64, end: u64) -> PyResult<Bound<'py, PyBytes>> {
        let end = end.min(self.file.size());
        if start >= end {
            return Ok(PyBytes::new(py, b""));
        }
        let bytes = check(py, py.detach(|| self.file.read_at(start..end)))?;
        Ok(PyBytes::new(py, &bytes))
    }

    /// Up to `max` bytes from `pos`, read with the GIL released: streamed a few frames ahead
    /// when `pos` is where the last read ended, else a ranged read (`blocking::File::read_from`).
    fn read_from<'py>(
        &self,
        py: Python<'py>,
        pos: u64,
        max: usize,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let bytes = check(py, py.detach(|| self.file.read_from(pos, max)))?;
        Ok(PyBytes::new(py, &bytes))
    }
}
