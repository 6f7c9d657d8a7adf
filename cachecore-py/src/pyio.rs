//! `std::io` over Python binary file objects, so the core streams NARs to and from them: each
//! read or write attaches to the interpreter for one call of `read(n)` or `write(b)`. An
//! exception the file object raises is kept in the operation's [`Cancel`] (and raised by the
//! call); a stopped operation (Ctrl-C) fails its next read or write.

use std::io;
use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::run::Cancel;

/// Python's exception, carried through the core as an I/O error.
fn carried(cancel: &Cancel, py: Python<'_>, err: PyErr) -> io::Error {
    cancel.raised(err.clone_ref(py));
    io::Error::other(err)
}

fn stopped() -> io::Error {
    io::Error::other("stopped by a signal")
}

/// Reads from a Python object with `read(n) -> bytes`.
#[derive(Debug)]
pub struct PyReader {
    file: Py<PyAny>,
    cancel: Arc<Cancel>,
}

impl PyReader {
    pub fn new(file: Py<PyAny>, cancel: Arc<Cancel>) -> Self {
        PyReader { file, cancel }
    }
}

impl io::Read for PyReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.cancel.stopped() {
            return Err(stopped());
        }
        Python::attach(|py| {
            let got = self
                .file
                .bind(py)
                .call_method1("read", (buf.len(),))
                .and_then(|b| b.cast_into::<PyBytes>().map_err(PyErr::from));
            match got {
                Ok(bytes) => {
                    let bytes = bytes.as_bytes();
                    let n = bytes.len().min(buf.len());
                    buf[..n].copy_from_slice(&bytes[..n]);
                    Ok(n)
                }
                Err(e) => Err(carried(&self.cancel, py, e)),
            }
        })
    }
}

/// Writes to a Python object with `write(b) -> int | None`.
#[derive(Debug)]
pub struct PyWriter {
    file: Py<PyAny>,
    cancel: Arc<Cancel>,
}

impl PyWriter {
    pub fn new(file: Py<PyAny>, cancel: Arc<Cancel>) -> Self {
        PyWriter { file, cancel }
    }
}

impl io::Write for PyWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.cancel.stopped() {
            return Err(stopped());
        }
        Python::attach(|py| {
            let written = self
                .file
                .bind(py)
                .call_method1("write", (PyBytes::new(py, buf),))
                // Buffered files return the length, raw ones what they took, some `None` (all).
                .and_then(|n| n.extract::<Option<usize>>());
            match written {
                Ok(n) => Ok(n.unwrap_or(buf.len()).min(buf.len())),
                Err(e) => Err(carried(&self.cancel, py, e)),
            }
        })
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
