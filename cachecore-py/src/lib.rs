//! cachecore's Python bindings: the native module `cachecore._cachecore`, under the
//! pure-Python package `cachecore` (`python/cachecore`), which gives it its public, typed
//! shape. Every function here converts its arguments, makes one call into the core, and
//! converts the result; the logic is the core's.
//!
//! - Work runs with the GIL released, on the core's runtime (`cachecore::blocking`), which a
//!   forked child builds anew; calls check for Ctrl-C while they wait (`run`).
//! - Errors map by kind to the classes of `cachecore.errors` (`error`).
//! - NARs stream to and from Python file objects, one chunk at a time (`pyio`, `nar`).
//! - GC roots and runs are `cachecore::gc`'s (`gc`): a run is planned, shown, then applied.

// The core's `blocking::Error` is large; closures handing it back to Python as it is are fine.
#![allow(clippy::result_large_err)]

mod cache;
mod error;
mod file;
mod gc;
mod keys;
mod nar;
mod narinfo;
mod paths;
mod pyio;
mod run;
mod store_path;

use pyo3::prelude::*;

#[pymodule]
fn _cachecore(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<store_path::StorePath>()?;
    m.add_class::<narinfo::NarInfo>()?;
    m.add_class::<keys::SecretKey>()?;
    m.add_class::<keys::PublicKey>()?;
    m.add_class::<cache::NativeCache>()?;
    m.add_class::<file::NativeFile>()?;
    m.add_class::<gc::NativeGcPlan>()?;
    m.add_class::<paths::NativePaths>()?;
    run::register(m)?;
    m.add_function(wrap_pyfunction!(nar::nar_pack, m)?)?;
    m.add_function(wrap_pyfunction!(nar::nar_unpack, m)?)?;
    m.add_function(wrap_pyfunction!(nar::nar_hash, m)?)?;
    m.add_function(wrap_pyfunction!(nar::nar_listing_of_tree, m)?)?;
    m.add_function(wrap_pyfunction!(nar::nar_listing_of_file, m)?)?;
    Ok(())
}
