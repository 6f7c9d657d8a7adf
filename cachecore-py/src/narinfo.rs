//! `cachecore.NarInfo`: a narinfo file, parsed, printed, signed and verified by the core.

use cachecore::narinfo;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::error::check;
use crate::keys::{public_keys, SecretKey};
use crate::store_path::StorePath;

/// A parsed narinfo. `str()` gives its text back (byte for byte, for a narinfo in Nix's field
/// order).
#[pyclass(eq, module = "cachecore")]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NarInfo {
    pub inner: narinfo::NarInfo,
}

#[pymethods]
impl NarInfo {
    /// Parses a narinfo's text (`str`, or `bytes` that must be UTF-8).
    #[staticmethod]
    fn parse(py: Python<'_>, text: &Bound<'_, PyAny>) -> PyResult<Self> {
        let parsed = match text.cast::<PyBytes>() {
            Ok(bytes) => narinfo::NarInfo::parse_bytes(bytes.as_bytes()),
            Err(_) => narinfo::NarInfo::parse(&text.extract::<String>()?),
        };
        Ok(NarInfo {
            inner: check(py, parsed)?,
        })
    }

    /// The store directory of `StorePath` (`/nix/store`).
    #[getter]
    fn store_dir(&self) -> &str {
        self.inner.store_dir.as_str()
    }

    /// `StorePath`.
    #[getter]
    fn store_path(&self) -> StorePath {
        StorePath::wrap(self.inner.store_path.clone())
    }

    /// `URL`: where the (compressed) NAR is, relative to the cache.
    #[getter]
    fn url(&self) -> &str {
        &self.inner.url
    }

    /// `Compression`, or `None` when absent (Nix then assumes bzip2).
    #[getter]
    fn compression(&self) -> Option<&str> {
        self.inner.compression.as_deref()
    }

    /// `FileHash` (`sha256:<nix32>`).
    #[getter]
    fn file_hash(&self) -> Option<String> {
        self.inner.file_hash.as_ref().map(ToString::to_string)
    }

    /// `FileSize`.
    #[getter]
    fn file_size(&self) -> Option<u64> {
        self.inner.file_size
    }

    /// `NarHash` (`sha256:<nix32>`).
    #[getter]
    fn nar_hash(&self) -> String {
        self.inner.nar_hash.to_string()
    }

    /// `NarSize`.
    #[getter]
    fn nar_size(&self) -> u64 {
        self.inner.nar_size
    }

    /// `References`, in file order.
    #[getter]
    fn references(&self) -> Vec<StorePath> {
        self.inner
            .references
            .iter()
            .cloned()
            .map(StorePath::wrap)
            .collect()
    }

    /// `Deriver` (`None` when absent or `unknown-deriver`).
    #[getter]
    fn deriver(&self) -> Option<StorePath> {
        self.inner.deriver.clone().map(StorePath::wrap)
    }

    /// `System`.
    #[getter]
    fn system(&self) -> Option<&str> {
        self.inner.system.as_deref()
    }

    /// `Sig` lines, as written.
    #[getter]
    fn signatures(&self) -> Vec<String> {
        self.inner.signatures.clone()
    }

    /// `CA` (`fixed:r:sha256:…`, `text:sha256:…`).
    #[getter]
    fn ca(&self) -> Option<String> {
        self.inner.ca.as_ref().map(ToString::to_string)
    }

    /// Fields cachecore does not know, in file order.
    #[getter]
    fn extra(&self) -> Vec<(String, String)> {
        self.inner.extra.clone()
    }

    /// The text Nix signs: `1;<store path>;<NarHash>;<NarSize>;<references>`.
    fn fingerprint(&self, py: Python<'_>) -> PyResult<String> {
        check(py, self.inner.fingerprint())
    }

    /// Signs with `key`, replacing an earlier signature under the same key name.
    fn sign(&mut self, py: Python<'_>, key: &SecretKey) -> PyResult<()> {
        check(py, self.inner.sign(&*key.inner))
    }

    /// True when one of `keys` (`PublicKey` objects or their text) verifies a signature.
    fn verify(&self, py: Python<'_>, keys: Vec<Bound<'_, PyAny>>) -> PyResult<bool> {
        let keys = public_keys(py, &keys)?;
        let valid = self.inner.valid_signatures(&keys).next().is_some();
        Ok(valid)
    }

    /// The names of the keys among `keys` whose signatures verify.
    fn valid_signatures(
        &self,
        py: Python<'_>,
        keys: Vec<Bound<'_, PyAny>>,
    ) -> PyResult<Vec<String>> {
        let keys = public_keys(py, &keys)?;
        let names = self
            .inner
            .valid_signatures(&keys)
            .map(|s| s.key_name().to_owned())
            .collect();
        Ok(names)
    }

    fn __str__(&self) -> String {
        self.inner.to_string()
    }

    fn __repr__(&self) -> String {
        format!(
            "<NarInfo {}>",
            self.inner.store_dir.full_path(&self.inner.store_path)
        )
    }
}
