//! `cachecore.nar`: NARs packed, unpacked, hashed and listed by the core, streaming over
//! Python file objects (never a whole NAR in memory). Each call runs on a runtime thread with
//! the GIL released, attaching only to read or write the file object.

use std::io::{self, BufReader};
use std::path::PathBuf;

use cachecore::hash::HashAlgo;
use cachecore::nar;
use pyo3::prelude::*;

use crate::error::{invalid_input, Failure};
use crate::pyio::{PyReader, PyWriter};
use crate::run::{wait_blocking, Cancel};

/// Reads of a Python file object take this much at a time (one call per MiB).
const READ_CHUNK: usize = 1 << 20;

/// Writes the NAR of the file, directory or symlink at `path` to `file` (`write(bytes)`).
#[pyfunction]
pub fn nar_pack(py: Python<'_>, path: PathBuf, file: Py<PyAny>) -> PyResult<()> {
    let cancel = Cancel::new();
    let out = PyWriter::new(file, cancel.clone());
    wait_blocking(py, &cancel, move || {
        nar::dump(&path, out)?;
        Ok(())
    })
}

/// Unpacks the NAR read from `file` (`read(n)`) at `dest`, which must not exist; on failure
/// nothing is left at `dest`.
#[pyfunction]
pub fn nar_unpack(py: Python<'_>, file: Py<PyAny>, dest: PathBuf) -> PyResult<()> {
    let cancel = Cancel::new();
    let input = BufReader::with_capacity(READ_CHUNK, PyReader::new(file, cancel.clone()));
    wait_blocking(py, &cancel, move || Ok(nar::unpack(input, &dest)?))
}

/// The NAR hash (`sha256:<nix32>`, or the algorithm named) and NAR size of `path`.
#[pyfunction]
#[pyo3(signature = (path, algo = "sha256"))]
pub fn nar_hash(py: Python<'_>, path: PathBuf, algo: &str) -> PyResult<(String, u64)> {
    let algo = HashAlgo::from_name(algo).ok_or_else(|| {
        invalid_input(
            py,
            format!("{algo:?} is not a hash algorithm (md5, sha1, sha256, sha512)"),
        )
    })?;
    let cancel = Cancel::new();
    wait_blocking(py, &cancel, move || {
        let (hash, size) = nar::hash_path_with(&path, algo)?;
        Ok((hash.to_string(), size))
    })
}

/// The `.ls` listing (JSON text) of the tree at `path`.
#[pyfunction]
pub fn nar_listing_of_tree(py: Python<'_>, path: PathBuf) -> PyResult<String> {
    let cancel = Cancel::new();
    wait_blocking(py, &cancel, move || to_json(&nar::pack(&path, io::sink())?))
}

/// The `.ls` listing (JSON text) of the NAR read from `file`.
#[pyfunction]
pub fn nar_listing_of_file(py: Python<'_>, file: Py<PyAny>) -> PyResult<String> {
    let cancel = Cancel::new();
    let input = BufReader::with_capacity(READ_CHUNK, PyReader::new(file, cancel.clone()));
    wait_blocking(py, &cancel, move || {
        to_json(&nar::Listing::from_nar(input)?)
    })
}

pub fn to_json(value: &impl serde::Serialize) -> Result<String, Failure> {
    Ok(serde_json::to_string(value)?)
}
