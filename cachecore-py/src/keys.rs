//! `cachecore.SecretKey` and `cachecore.PublicKey`: Nix's ed25519 signing keys.

use std::path::PathBuf;
use std::sync::Arc;

use cachecore::signing;
use pyo3::prelude::*;

use crate::error::check;

/// A secret signing key (`name:base64`, as `nix key generate-secret` writes it).
#[pyclass(frozen, module = "cachecore")]
#[derive(Clone, Debug)]
pub struct SecretKey {
    pub inner: Arc<signing::SecretKey>,
}

#[pymethods]
impl SecretKey {
    /// A new key named `name` (e.g. `cache.example.org-1`).
    #[staticmethod]
    fn generate(py: Python<'_>, name: &str) -> PyResult<Self> {
        let key = check(py, signing::SecretKey::generate(name))?;
        Ok(SecretKey {
            inner: Arc::new(key),
        })
    }

    /// A key from its text (`name:base64`, or a key file's text) or from a key file (a path).
    #[staticmethod]
    fn load(py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<Self> {
        let key = match key.extract::<String>() {
            // Key text (`name:base64`, or a key file's lines) unless a file has that name.
            Ok(text) if text.contains(':') && !std::path::Path::new(&text).exists() => check(
                py,
                signing::SecretKey::parse_file_text("the key given", text.as_bytes()),
            )?,
            _ => {
                let path: PathBuf = key.extract()?;
                check(py, signing::SecretKey::read_file(&path))?
            }
        };
        Ok(SecretKey {
            inner: Arc::new(key),
        })
    }

    #[getter]
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn public_key(&self) -> PublicKey {
        PublicKey {
            inner: self.inner.public_key(),
        }
    }

    /// The key's text as Nix writes it to a secret key file (keep it secret).
    fn to_nix_string(&self) -> String {
        self.inner.to_nix_string().to_string()
    }

    fn __repr__(&self) -> String {
        format!("SecretKey(name='{}')", self.inner.name())
    }
}

/// A public key (`name:base64`), as `nix key convert-secret-to-public` prints it.
#[pyclass(frozen, eq, module = "cachecore")]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicKey {
    pub inner: signing::PublicKey,
}

#[pymethods]
impl PublicKey {
    #[new]
    fn new(py: Python<'_>, text: &str) -> PyResult<Self> {
        Ok(PublicKey {
            inner: check(py, signing::PublicKey::parse(text))?,
        })
    }

    #[getter]
    fn name(&self) -> &str {
        self.inner.name()
    }

    /// True when `signature` (`name:base64`) is this key's signature of `message`.
    fn verify(&self, message: &[u8], signature: &str) -> bool {
        signing::Signature::parse(signature).is_ok_and(|sig| self.inner.verify(message, &sig))
    }

    fn __str__(&self) -> String {
        self.inner.to_string()
    }

    fn __repr__(&self) -> String {
        format!("PublicKey('{}')", self.inner)
    }

    fn __hash__(&self) -> u64 {
        use std::hash::{Hash as _, Hasher as _};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.inner.to_string().hash(&mut h);
        h.finish()
    }
}

/// Public keys given as `PublicKey` objects or their text.
pub fn public_keys(py: Python<'_>, keys: &[Bound<'_, PyAny>]) -> PyResult<Vec<signing::PublicKey>> {
    keys.iter()
        .map(|k| match k.cast::<PublicKey>() {
            Ok(key) => Ok(key.get().inner.clone()),
            Err(_) => check(py, signing::PublicKey::parse(&k.extract::<String>()?)),
        })
        .collect()
}
