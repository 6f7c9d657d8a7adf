//! [`ErrorKind`]: what kind of failure an error is, by meaning, shared by every public error of
//! the crate.
//!
//! Each error type keeps its own variants (with the object, position and cause in one
//! sentence); `kind()` on each says what a caller can do about it: a frontend maps it to an exit
//! status, an HTTP status, a Python exception or an errno without matching on messages.
//!
//! Finding the kind of an error that reached a frontend through wrappers (an `anyhow` chain, an
//! `io::Error` carrying one of ours) is [`ErrorKind::of_chain`]; each frontend then maps the
//! kind once, with every kind decided:
//!
//! - the command line: kind → exit status (`cachecore-cli`'s `exit.rs`, listed in
//!   `cachecore --help`);
//! - the HTTP server: kind → HTTP status (`server`'s `status_of`, feature `server`);
//! - the FUSE mount: kind → errno (`NotFound` → `ENOENT`, `Denied` → `EACCES`, `Unsupported` →
//!   `EOPNOTSUPP`, the rest `EIO`);
//! - Python: kind → exception class, under one base class.
//!
//! ```
//! use cachecore::error::ErrorKind;
//! use cachecore::store::BinaryCache;
//! let e = BinaryCache::open("ssh://host").unwrap_err();
//! assert_eq!(e.kind(), ErrorKind::InvalidInput);
//! assert_eq!(ErrorKind::InvalidInput.to_string(), "invalid input");
//! ```

use std::fmt;

/// What kind of failure an error is.
///
/// ```
/// use cachecore::error::ErrorKind;
/// use cachecore::store_path::StorePath;
/// let e = StorePath::from_base_name("not-a-store-path").unwrap_err();
/// // Map the kind, not the message, to an exit status (or an HTTP status, an exception).
/// let status = match e.kind() {
///     ErrorKind::NotFound => 2,
///     ErrorKind::InvalidInput => 64,
///     _ => 1,
/// };
/// assert_eq!(status, 64);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// What was asked for does not exist (a store path not in the cache, a missing object, a
    /// file not in a NAR).
    NotFound,
    /// Data read is not what it claims to be: a hash or size mismatch, a NAR, narinfo or other
    /// file that does not parse, a cache whose closure is incomplete.
    Corrupt,
    /// Data is intact but not signed by a trusted key.
    Untrusted,
    /// The store or a service could not be reached or failed to answer (connection refused,
    /// timeout, server error): nothing could be checked.
    Unavailable,
    /// The store refused access: wrong or missing credentials, no permission, no such bucket.
    Denied,
    /// The request itself is wrong: a bad URL, key, argument, or local input file.
    InvalidInput,
    /// The write would replace something it must not: the object exists (create-only) or has
    /// changed (replace-if-unchanged), or a destination already exists.
    Conflict,
    /// The store cannot do this at all (writing a read-only HTTP cache, listing one, a
    /// conditional write the backend does not honour).
    Unsupported,
    /// The local machine failed: reading or writing local files, the local Nix store.
    Local,
    /// A bug or an interrupted background task in cachecore itself.
    Internal,
}

impl ErrorKind {
    /// A few words naming the kind, for messages and logs.
    ///
    /// ```
    /// use cachecore::error::ErrorKind;
    /// assert_eq!(ErrorKind::NotFound.as_str(), "not found");
    /// assert_eq!(ErrorKind::Local.to_string(), "local failure");
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "not found",
            ErrorKind::Corrupt => "corrupt",
            ErrorKind::Untrusted => "untrusted",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Denied => "denied",
            ErrorKind::InvalidInput => "invalid input",
            ErrorKind::Conflict => "conflict",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::Local => "local failure",
            ErrorKind::Internal => "internal error",
        }
    }
}

impl ErrorKind {
    /// The kind of `err` when it is one of this crate's public error types (each has `kind()`),
    /// or an `io::Error` carrying one, else `None`. Its sources are not looked at: see
    /// [`of_chain`](Self::of_chain).
    ///
    /// ```
    /// use cachecore::error::ErrorKind;
    /// let e = cachecore::hash::Hash::parse("sha256:nope").unwrap_err();
    /// assert_eq!(ErrorKind::of(&e), Some(ErrorKind::InvalidInput));
    /// assert_eq!(ErrorKind::of(&std::fmt::Error), None);
    /// ```
    pub fn of(err: &(dyn std::error::Error + 'static)) -> Option<ErrorKind> {
        macro_rules! kinds {
            ($($(#[$cfg:meta])* $t:ty),* $(,)?) => {
                $($(#[$cfg])* if let Some(e) = err.downcast_ref::<$t>() {
                    return Some(e.kind());
                })*
            };
        }
        kinds!(
            #[cfg(feature = "cache")]
            crate::ops::OpError,
            #[cfg(feature = "cache")]
            crate::store::StoreError,
            #[cfg(feature = "cache")]
            crate::store::IntegrityError,
            #[cfg(feature = "cache")]
            crate::local_store::LocalStoreError,
            #[cfg(feature = "cache")]
            crate::access::AccessError,
            #[cfg(feature = "cache")]
            crate::blocking::Error,
            #[cfg(feature = "cache")]
            crate::graph::GraphError,
            #[cfg(feature = "cache")]
            crate::gc::GcError,
            #[cfg(feature = "cache")]
            crate::gc::RootError,
            #[cfg(feature = "cache")]
            crate::gc::PlanError,
            crate::graph::Cycle,
            crate::nar::ReadError,
            crate::nar::PackError,
            crate::nar::UnpackError,
            crate::nar::ExtractError,
            crate::nar::ListingError,
            crate::narinfo::ParseError,
            crate::narinfo::FingerprintError,
            crate::store_path::ParseError,
            crate::hash::ParseError,
            crate::nixbase32::DecodeError,
            crate::cache_info::ParseError,
            crate::realisation::ParseError,
            crate::signing::KeyError,
            crate::signing::KeyFileError,
            crate::compression::Error,
            crate::seekable::SeekableError,
        );
        // `io::Error::source` skips the error it carries (it answers that error's source).
        let carried = err
            .downcast_ref::<std::io::Error>()
            .and_then(|e| e.get_ref());
        carried.and_then(|inner| ErrorKind::of(inner))
    }

    /// The kind of the first error in `err`'s chain (`err`, then its
    /// [`source`](std::error::Error::source)s) that is one of this crate's, else `None` (an error
    /// the caller made itself). For an `anyhow::Error`, pass `&*err` (or walk `err.chain()`
    /// with [`of`](Self::of), to decide about foreign errors on the way).
    ///
    /// ```
    /// use cachecore::error::ErrorKind;
    /// use cachecore::store_path::StorePath;
    /// let parse = StorePath::from_base_name("not-a-store-path").unwrap_err();
    /// // Wrapped, as a stream or a frontend would carry it.
    /// // A frontend's own error, with ours as its source.
    /// #[derive(Debug)]
    /// struct ReadingList(cachecore::store_path::ParseError);
    /// impl std::fmt::Display for ReadingList {
    ///     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
    ///         f.write_str("reading the list of paths failed")
    ///     }
    /// }
    /// impl std::error::Error for ReadingList {
    ///     fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
    ///         Some(&self.0)
    ///     }
    /// }
    /// let wrapped = ReadingList(parse);
    /// assert_eq!(ErrorKind::of(&wrapped), None);
    /// assert_eq!(ErrorKind::of_chain(&wrapped), Some(ErrorKind::InvalidInput));
    /// ```
    pub fn of_chain(err: &(dyn std::error::Error + 'static)) -> Option<ErrorKind> {
        std::iter::successors(Some(err), |e| e.source()).find_map(ErrorKind::of)
    }
}

/// The one line a frontend shows for `err` (the CLI after `cachecore: error:`, Python as the
/// exception's message): its text, then each cause in its chain whose text the line does not
/// already quote, joined with `": "`, outermost first. A storage backend's own error (request
/// URL, retries, response body) ends the line unless `verbose`: the store error wrapping it
/// says what went wrong in short. The line is returned as the errors say it; print it through
/// [`Untrusted`](crate::untrusted::Untrusted), as what a cache sent may be quoted in it.
///
/// ```
/// use cachecore::error::sentence;
/// let inner = std::io::Error::other("disk on fire");
/// #[derive(Debug)]
/// struct Writing(std::io::Error);
/// impl std::fmt::Display for Writing {
///     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
///         f.write_str("cannot write the NAR")
///     }
/// }
/// impl std::error::Error for Writing {
///     fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
///         Some(&self.0)
///     }
/// }
/// assert_eq!(sentence(&Writing(inner), false), "cannot write the NAR: disk on fire");
/// // A cause the message already quotes is said once.
/// let e = cachecore::store_path::StorePath::from_base_name("x").unwrap_err();
/// assert_eq!(sentence(&e, false), e.to_string());
/// ```
pub fn sentence(err: &(dyn std::error::Error + 'static), verbose: bool) -> String {
    let mut line = String::new();
    for cause in std::iter::successors(Some(err), |e| e.source()) {
        if !verbose && is_backend_detail(cause) {
            break;
        }
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

#[cfg(feature = "cache")]
use crate::store::is_backend_detail;

/// Without stores, no error comes from a storage backend.
#[cfg(not(feature = "cache"))]
fn is_backend_detail(_: &(dyn std::error::Error + 'static)) -> bool {
    false
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `kind()` for the format layer's errors that are always about their input: parsing a
/// narinfo, hash, store path, listing or seek table that is wrong. (Where such input came from
/// a cache, the store and operation errors wrapping them say
/// [`Corrupt`](ErrorKind::Corrupt) instead.)
macro_rules! input_errors {
    ($($t:ty),* $(,)?) => {
        $(impl $t {
            /// What kind of failure this is: always [`ErrorKind::InvalidInput`].
            ///
            /// ```
            /// use cachecore::error::ErrorKind;
            /// let e = cachecore::hash::Hash::parse("sha256:not-a-hash").unwrap_err();
            /// assert_eq!(e.kind(), ErrorKind::InvalidInput);
            /// ```
            pub fn kind(&self) -> ErrorKind {
                ErrorKind::InvalidInput
            }
        })*
    };
}

input_errors!(
    crate::cache_info::ParseError,
    crate::hash::ParseError,
    crate::narinfo::ParseError,
    crate::narinfo::FingerprintError,
    crate::nixbase32::DecodeError,
    crate::realisation::ParseError,
    crate::store_path::ParseError,
    crate::nar::ListingError,
    crate::compression::Error,
    crate::seekable::SeekableError,
);

fn io_kind(e: &std::io::Error) -> ErrorKind {
    match e.kind() {
        std::io::ErrorKind::NotFound => ErrorKind::NotFound,
        _ => ErrorKind::Local,
    }
}

impl crate::nar::ReadError {
    /// [`InvalidInput`](ErrorKind::InvalidInput) for a NAR that is not valid,
    /// [`Local`](ErrorKind::Local) when reading failed.
    pub fn kind(&self) -> ErrorKind {
        match &self.kind {
            crate::nar::ReadErrorKind::Io(_) => ErrorKind::Local,
            _ => ErrorKind::InvalidInput,
        }
    }
}

impl crate::nar::PackError {
    /// [`NotFound`](ErrorKind::NotFound) for a missing tree, [`Local`](ErrorKind::Local) when
    /// reading or writing failed, [`InvalidInput`](ErrorKind::InvalidInput) for a tree a NAR
    /// cannot hold.
    pub fn kind(&self) -> ErrorKind {
        use crate::nar::PackError as E;
        match self {
            E::Read { source, .. } => io_kind(source),
            E::Write(_) | E::Changed { .. } => ErrorKind::Local,
            _ => ErrorKind::InvalidInput,
        }
    }
}

impl crate::nar::UnpackError {
    /// [`Conflict`](ErrorKind::Conflict) when the destination exists, the NAR's kind when it
    /// is bad, [`Local`](ErrorKind::Local) when writing failed.
    pub fn kind(&self) -> ErrorKind {
        use crate::nar::UnpackError as E;
        match self {
            E::DestinationExists { .. } => ErrorKind::Conflict,
            E::InvalidDestination { .. } => ErrorKind::InvalidInput,
            E::Nar(e) => e.kind(),
            _ => ErrorKind::Local,
        }
    }
}

impl crate::nar::ExtractError {
    /// [`NotFound`](ErrorKind::NotFound) when the path is not in the NAR, the NAR's kind when
    /// it is bad, [`InvalidInput`](ErrorKind::InvalidInput) for a path of the wrong type.
    pub fn kind(&self) -> ErrorKind {
        use crate::nar::ExtractError as E;
        match self {
            E::Nar(e) => e.kind(),
            E::NotFound { .. } => ErrorKind::NotFound,
            E::Write(_) => ErrorKind::Local,
            _ => ErrorKind::InvalidInput,
        }
    }
}

impl crate::signing::KeyError {
    /// [`InvalidInput`](ErrorKind::InvalidInput) for a key that does not parse,
    /// [`Local`](ErrorKind::Local) when the system gave no randomness.
    pub fn kind(&self) -> ErrorKind {
        match self {
            crate::signing::KeyError::Random(_) => ErrorKind::Local,
            _ => ErrorKind::InvalidInput,
        }
    }
}

impl crate::signing::KeyFileError {
    /// [`InvalidInput`](ErrorKind::InvalidInput) for a key file or key argument that is wrong
    /// (missing, unreadable by us, not key lines, the wrong kind of key);
    /// [`Local`](ErrorKind::Local) when reading an existing file failed otherwise.
    pub fn kind(&self) -> ErrorKind {
        use std::io::ErrorKind as K;
        match self {
            crate::signing::KeyFileError::Read { source, .. }
                if !matches!(source.kind(), K::NotFound | K::PermissionDenied) =>
            {
                ErrorKind::Local
            }
            _ => ErrorKind::InvalidInput,
        }
    }
}
