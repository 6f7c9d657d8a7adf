//! One error map: a core error becomes the exception class of its kind
//! ([`ErrorKind::of_chain`]), carrying the sentence the CLI prints for it
//! ([`cachecore::error::sentence`]). The classes live in the pure-Python module
//! `cachecore.errors` (several also derive from a built-in such as `FileNotFoundError`, which a
//! Rust-defined class cannot); they are looked up there by name.

use std::error::Error as StdError;

use cachecore::error::ErrorKind;
use cachecore::untrusted::Untrusted;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyModule;

/// Why a call failed: an error from the core (or a Python exception raised by a callback or a
/// file object, carried through the core as an error).
#[derive(Debug)]
pub struct Failure(Box<dyn StdError + Send + Sync + 'static>);

impl<E: StdError + Send + Sync + 'static> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure(Box::new(e))
    }
}

impl Failure {
    /// The exception to raise for it.
    pub fn into_py(self, py: Python<'_>) -> PyErr {
        to_py(py, &*self.0)
    }
}

/// The name in `cachecore.errors` of the class for `kind`.
fn class_name(kind: Option<ErrorKind>) -> &'static str {
    match kind {
        Some(ErrorKind::NotFound) => "NotFound",
        Some(ErrorKind::Corrupt) => "Corrupt",
        Some(ErrorKind::Untrusted) => "Untrusted",
        Some(ErrorKind::Unavailable) => "Unavailable",
        Some(ErrorKind::Denied) => "Denied",
        Some(ErrorKind::InvalidInput) => "InvalidInput",
        Some(ErrorKind::Conflict) => "Conflict",
        Some(ErrorKind::Unsupported) => "Unsupported",
        Some(ErrorKind::Local) => "Local",
        Some(ErrorKind::Internal) => "Internal",
        // A kind added to the core later, or an error with none: the base class.
        _ => "CacheCoreError",
    }
}

static ERRORS: PyOnceLock<Py<PyModule>> = PyOnceLock::new();

/// An instance of the class for `kind` with `message`.
pub fn exception(py: Python<'_>, kind: Option<ErrorKind>, message: &str) -> PyErr {
    let made = ERRORS
        .get_or_try_init(py, || {
            PyModule::import(py, "cachecore.errors").map(Bound::unbind)
        })
        .and_then(|m| m.bind(py).getattr(class_name(kind)))
        .and_then(|class| class.call1((message,)));
    match made {
        Ok(instance) => PyErr::from_value(instance),
        // The package is broken (cachecore.errors missing): say so rather than lose the error.
        Err(e) => e,
    }
}

/// [`InvalidInput`](ErrorKind::InvalidInput) for an argument the binding itself refuses.
pub fn invalid_input(py: Python<'_>, message: impl AsRef<str>) -> PyErr {
    exception(py, Some(ErrorKind::InvalidInput), message.as_ref())
}

/// The Python exception a callback or file object raised, when it is in `err`'s chain (carried
/// as the error itself, or inside an `io::Error`).
fn python_exception<'a>(err: &'a (dyn StdError + 'static)) -> Option<&'a PyErr> {
    let mut cause = Some(err);
    while let Some(e) = cause {
        let carried = e.downcast_ref::<PyErr>().or_else(|| {
            e.downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .and_then(|inner| inner.downcast_ref::<PyErr>())
        });
        if carried.is_some() {
            return carried;
        }
        cause = e.source();
    }
    None
}

/// The exception for a core error: a Python exception it carries is raised again as it was;
/// anything else becomes the class of its kind, with the CLI's sentence.
pub fn to_py(py: Python<'_>, err: &(dyn StdError + 'static)) -> PyErr {
    if let Some(raised) = python_exception(err) {
        return raised.clone_ref(py);
    }
    let sentence = cachecore::error::sentence(err, false);
    exception(
        py,
        ErrorKind::of_chain(err),
        &Untrusted(&sentence).to_string(),
    )
}

/// `result`'s error as the exception of its kind.
pub fn check<T, E: StdError + 'static>(py: Python<'_>, result: Result<T, E>) -> PyResult<T> {
    result.map_err(|e| to_py(py, &e))
}
