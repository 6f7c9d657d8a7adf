//! `cachecore.StorePath`: a store path, parsed and validated by the core.

use cachecore::store_path::{self, StoreDir};
use pyo3::prelude::*;

use crate::error::check;

/// A store path, `/nix/store/<hash>-<name>` (the default store directory).
#[pyclass(frozen, eq, hash, module = "cachecore")]
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct StorePath {
    pub inner: store_path::StorePath,
}

impl StorePath {
    pub fn wrap(inner: store_path::StorePath) -> Self {
        StorePath { inner }
    }

    /// Parses `/nix/store/<hash>-<name>` or a base name `<hash>-<name>`.
    pub fn parse(py: Python<'_>, text: &str) -> PyResult<store_path::StorePath> {
        if text.starts_with('/') {
            check(
                py,
                StoreDir::default().parse_path(text).map(|p| p.to_owned()),
            )
        } else {
            check(py, store_path::StorePath::from_base_name(text))
        }
    }
}

#[pymethods]
impl StorePath {
    #[new]
    fn new(py: Python<'_>, path: &str) -> PyResult<Self> {
        Ok(StorePath::wrap(StorePath::parse(py, path)?))
    }

    /// The 32-character nix32 hash part.
    #[getter]
    fn hash_part(&self) -> String {
        self.inner.hash_part()
    }

    /// The name after the hash part.
    #[getter]
    fn name(&self) -> &str {
        self.inner.name()
    }

    /// `<hash>-<name>`.
    #[getter]
    fn base_name(&self) -> String {
        self.inner.to_string()
    }

    fn __str__(&self) -> String {
        StoreDir::default().full_path(&self.inner)
    }

    fn __repr__(&self) -> String {
        format!("StorePath('{}')", self.__str__())
    }
}
