//! [`StoreError`]: everything that can go wrong talking to a binary cache, each variant one
//! sentence that names the store, the object and the cause.
//!
//! `object_store` errors are converted here, once, at the edge: a missing object becomes `None` or
//! [`StoreError::NotFound`], and the transport failures a user can act on (no server, no
//! credentials, refused credentials, no bucket) get variants of their own with advice attached.

use std::error::Error as StdError;
use std::fmt;

use crate::error::ErrorKind;
use crate::{cache_info, narinfo};

/// An error from [`BinaryCache`](super::BinaryCache), [`Objects`](super::Objects) or store URL
/// parsing. [`kind`](StoreError::kind) says what kind of failure it is.
///
/// Every message names the store URL (without credentials) and, where one is involved, the object
/// key, e.g. `s3://cache?endpoint=http://127.0.0.1:1: cannot reach the store server to read
/// nix-cache-info: connection refused (after 5 retries)`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The store URL cannot be used.
    #[error("bad store URL {url:?}: {reason}")]
    BadUrl { url: String, reason: String },

    /// A store opened to be read ([`BinaryCache::open_existing`](super::BinaryCache::open_existing))
    /// is not there: a local directory that does not exist. Nothing was created.
    #[error("no binary cache at {url}: {dir} does not exist ({advice})")]
    NoStore {
        url: String,
        dir: String,
        /// The URL the argument likely meant ([`StoreUrl::likely_meant`](super::StoreUrl::likely_meant)),
        /// or how to create a cache.
        advice: String,
    },

    /// An object key that no backend accepts (empty segment, `.`/`..`, control characters).
    #[error("{url}: \"{key}\" is not a valid object key: {reason}")]
    BadKey {
        url: String,
        key: String,
        reason: String,
    },

    /// A write to an `http(s)://` cache opened without a token: a `cachecore serve` takes
    /// uploads with one, a plain HTTP cache none.
    #[error("{url}: cannot write {key}: this server takes uploads with a token: --token-file FILE or CACHECORE_TOKEN (that is a `cachecore serve`; a plain HTTP binary cache is read-only)")]
    NeedsToken { url: String, key: String },

    /// An `http(s)://` cache whose `nix-cache-info` is not there (`404`): a wrong address or
    /// path. (A `cachecore serve` always answers one.)
    #[error(
        "no binary cache at {url} (nix-cache-info: 404); is the address, and its path, right?"
    )]
    NoCacheInfo { url: String },

    /// A write to a store opened read-only (a caller's choice).
    #[error("{url} is read-only (plain HTTP binary caches can be read, not written); cannot write {key}")]
    ReadOnly { url: String, key: String },

    /// The backend cannot do this at all (listing a plain HTTP cache, a conditional write it
    /// does not honour).
    #[error("{url}: cannot {operation}: {reason}")]
    Unsupported {
        url: String,
        operation: String,
        reason: String,
    },

    /// An object that must exist does not.
    #[error("{url}: {key} does not exist")]
    NotFound { url: String, key: String },

    /// A create-only write found an object at its key.
    #[error("{url}: {key} already exists (not replaced)")]
    AlreadyExists { url: String, key: String },

    /// A replace-if-unchanged write found another version of the object than the one given.
    #[error("{url}: {key} changed since it was read (not replaced)")]
    Changed { url: String, key: String },

    /// A ranged read starting at or past the end of the object.
    #[error("{url}: range {range} of {key} is not satisfiable (it starts past the end)")]
    RangeNotSatisfiable {
        url: String,
        key: String,
        range: String,
    },

    /// On a local directory, a key that leads outside the directory through a symbolic link.
    #[error("{url}: {key} leads outside the cache directory through a symbolic link (refused)")]
    OutsideRoot { url: String, key: String },

    /// On a local directory, something other than a regular file at an object's key (a FIFO,
    /// a socket, a device): refused without reading it, since a FIFO would make a reader wait
    /// for a writer forever. (A directory is not an object at all: it reads as absent, as a
    /// prefix does on every other backend.)
    #[error(
        "{url}: {key} is a {what}, not a regular file; refused (cache objects are regular files)"
    )]
    NotRegularFile {
        url: String,
        key: String,
        /// What is there instead: `FIFO`, `socket`, `character device`, ...
        what: &'static str,
    },

    /// A narinfo names a NAR at a key outside `nar/`, where cachecore does not write NARs.
    #[error("{url}: {key} is not a NAR key (NARs are written under nar/)")]
    NotANarKey { url: String, key: String },

    /// A narinfo in the store does not parse (boxed: the parse error is large).
    #[error("{url}: {key} is not a valid narinfo: {source}")]
    BadNarInfo {
        url: String,
        key: String,
        #[source]
        source: Box<narinfo::ParseError>,
    },

    /// A narinfo describes another path than the one it is stored for (its `StorePath` has
    /// another hash part or name, or lies in another store directory than the cache's).
    #[error("{url}: {key} describes {found}, not {expected}; the cache is corrupt or was tampered with, so nothing from this narinfo is used")]
    IdentityMismatch {
        url: String,
        key: String,
        /// The `StorePath` the narinfo gives (at most a short prefix of it).
        found: String,
        expected: String,
    },

    /// An object stored with a `Content-Encoding` that cachecore does not decode, or whose
    /// bytes do not decode by it ([`super::encoding`]).
    #[error("{url}: {key} cannot be read: {reason}")]
    BadEncoding {
        url: String,
        key: String,
        reason: String,
    },

    /// An object is larger than cachecore reads for its kind (a narinfo, listing,
    /// `nix-cache-info`): refused without reading it whole.
    #[error("{url}: {key} is larger than {limit} bytes, the most cachecore reads for such an object; refused without reading it")]
    TooLarge {
        url: String,
        key: String,
        limit: u64,
    },

    /// Syncing a written object to disk failed (local directories).
    #[error("{url}: cannot sync {key} to disk: {source}")]
    Durability {
        url: String,
        key: String,
        #[source]
        source: std::io::Error,
    },

    /// `nix-cache-info` in the store does not parse.
    #[error("{url}: {key} is not a valid nix-cache-info file: {source}")]
    BadCacheInfo {
        url: String,
        key: String,
        #[source]
        source: cache_info::ParseError,
    },

    /// The store already holds paths of another store directory.
    #[error("{url} is a cache for store directory {theirs}, not {ours} (its nix-cache-info says StoreDir: {theirs})")]
    StoreDirMismatch {
        url: String,
        ours: String,
        theirs: String,
    },

    /// Nothing answers at the store's address (connection refused, DNS failure, timeout).
    #[error("{url}: cannot reach the store server to {op} {key}: {detail}; {advice}")]
    Unreachable {
        url: String,
        op: &'static str,
        key: String,
        detail: String,
        /// What to check: the server and the URL, and for S3 the endpoint.
        advice: &'static str,
        #[source]
        source: Box<object_store::Error>,
    },

    /// No credentials were found, or fetching them failed.
    #[error("{url}: no usable credentials to {op} {key}: {detail}")]
    MissingCredentials {
        url: String,
        op: &'static str,
        key: String,
        detail: String,
        #[source]
        source: Option<Box<object_store::Error>>,
    },

    /// The server refused the credentials, or they do not allow this operation.
    #[error("{url}: access denied to {op} {key} ({detail}); {advice}")]
    AccessDenied {
        url: String,
        op: &'static str,
        key: String,
        detail: String,
        /// What to check: the access key, secret and bucket permissions, or the token of an
        /// HTTP cache.
        advice: &'static str,
        #[source]
        source: Box<object_store::Error>,
    },

    /// The bucket (or container) in the URL does not exist.
    #[error("{url}: bucket {bucket:?} does not exist (create it first); failed to {op} {key}")]
    NoSuchBucket {
        url: String,
        bucket: String,
        op: &'static str,
        key: String,
        #[source]
        source: Box<object_store::Error>,
    },

    /// Setting up the backend failed before any request (bad configuration, missing account name).
    #[error("{url}: cannot set up the store: {source}")]
    Setup {
        url: String,
        #[source]
        source: Box<object_store::Error>,
    },

    /// A stream handed to [`put_stream`](super::Objects::put_stream) failed; the upload was
    /// abandoned and nothing was written at `key`.
    #[error("{url}: upload of {key} abandoned: reading the data failed: {source}")]
    Source {
        url: String,
        key: String,
        #[source]
        source: std::io::Error,
    },

    /// The server signs requests for another region than the one the client used (S3
    /// `AuthorizationHeaderMalformed`): a missing or wrong `region=`.
    #[error("{url}: the server expects region `{expected}`; add `&region={expected}` to the store URL (failed to {op} {key})")]
    WrongRegion {
        url: String,
        expected: String,
        op: &'static str,
        key: String,
        #[source]
        source: Box<object_store::Error>,
    },

    /// The server answered like a web server, not an S3 API (an HTML page, or "not found" to
    /// an upload): `endpoint=` names a website endpoint or another service's port.
    #[error("{url}: {endpoint} is not an S3 API (it answered the request to {op} {key} {how}); point endpoint= at the S3 API's port, not a website endpoint's")]
    NotS3 {
        url: String,
        endpoint: String,
        op: &'static str,
        key: String,
        how: &'static str,
        #[source]
        source: Box<object_store::Error>,
    },

    /// Any other backend failure. `detail` is the server's answer in short (status, error
    /// code, message); the full error, with retries and response body, is the `source`.
    #[error("{url}: failed to {op} {key}: {detail}")]
    Backend {
        url: String,
        op: &'static str,
        key: String,
        detail: String,
        #[source]
        source: Box<object_store::Error>,
    },
}

impl StoreError {
    /// The object key the error concerns, if any.
    ///
    /// ```
    /// use cachecore::store::StoreError;
    /// let e = StoreError::NotFound { url: "memory://".into(), key: "nix-cache-info".into() };
    /// assert_eq!(e.key(), Some("nix-cache-info"));
    /// let e = StoreError::BadUrl { url: "ssh://builder".into(), reason: "not a binary cache".into() };
    /// assert_eq!(e.key(), None);
    /// ```
    pub fn key(&self) -> Option<&str> {
        match self {
            StoreError::BadUrl { .. }
            | StoreError::NoStore { .. }
            | StoreError::NoCacheInfo { .. }
            | StoreError::Setup { .. }
            | StoreError::Unsupported { .. }
            | StoreError::StoreDirMismatch { .. } => None,
            StoreError::BadKey { key, .. }
            | StoreError::ReadOnly { key, .. }
            | StoreError::NeedsToken { key, .. }
            | StoreError::NotFound { key, .. }
            | StoreError::AlreadyExists { key, .. }
            | StoreError::Changed { key, .. }
            | StoreError::RangeNotSatisfiable { key, .. }
            | StoreError::NotANarKey { key, .. }
            | StoreError::OutsideRoot { key, .. }
            | StoreError::NotRegularFile { key, .. }
            | StoreError::BadNarInfo { key, .. }
            | StoreError::IdentityMismatch { key, .. }
            | StoreError::TooLarge { key, .. }
            | StoreError::BadEncoding { key, .. }
            | StoreError::Durability { key, .. }
            | StoreError::BadCacheInfo { key, .. }
            | StoreError::Unreachable { key, .. }
            | StoreError::MissingCredentials { key, .. }
            | StoreError::AccessDenied { key, .. }
            | StoreError::NoSuchBucket { key, .. }
            | StoreError::Source { key, .. }
            | StoreError::WrongRegion { key, .. }
            | StoreError::NotS3 { key, .. }
            | StoreError::Backend { key, .. } => Some(key),
        }
    }

    /// Whether this is [`StoreError::NotFound`].
    ///
    /// ```
    /// use cachecore::store::StoreError;
    /// let e = StoreError::NotFound { url: "memory://".into(), key: "nix-cache-info".into() };
    /// assert!(e.is_not_found());
    /// let e = StoreError::AlreadyExists { url: "memory://".into(), key: "nix-cache-info".into() };
    /// assert!(!e.is_not_found());
    /// ```
    pub fn is_not_found(&self) -> bool {
        matches!(self, StoreError::NotFound { .. })
    }

    /// What kind of failure this is.
    ///
    /// ```
    /// use cachecore::{error::ErrorKind, store::StoreError};
    /// let e = StoreError::NotFound { url: "memory://".into(), key: "x.narinfo".into() };
    /// assert_eq!(e.kind(), ErrorKind::NotFound);
    /// ```
    pub fn kind(&self) -> ErrorKind {
        match self {
            StoreError::BadUrl { .. } | StoreError::BadKey { .. } | StoreError::Setup { .. } => {
                ErrorKind::InvalidInput
            }
            StoreError::ReadOnly { .. } | StoreError::Unsupported { .. } => ErrorKind::Unsupported,
            StoreError::NotFound { .. }
            | StoreError::NoStore { .. }
            | StoreError::NoCacheInfo { .. } => ErrorKind::NotFound,
            StoreError::AlreadyExists { .. }
            | StoreError::Changed { .. }
            | StoreError::StoreDirMismatch { .. } => ErrorKind::Conflict,
            StoreError::RangeNotSatisfiable { .. } => ErrorKind::InvalidInput,
            StoreError::BadNarInfo { .. }
            | StoreError::BadCacheInfo { .. }
            | StoreError::NotANarKey { .. }
            | StoreError::IdentityMismatch { .. }
            | StoreError::TooLarge { .. }
            | StoreError::BadEncoding { .. }
            | StoreError::OutsideRoot { .. }
            | StoreError::NotRegularFile { .. } => ErrorKind::Corrupt,
            StoreError::Durability { .. } => ErrorKind::Local,
            StoreError::Unreachable { .. } | StoreError::Backend { .. } => ErrorKind::Unavailable,
            // The store URL is wrong: the region, or a port that is not the S3 API.
            StoreError::WrongRegion { .. } | StoreError::NotS3 { .. } => ErrorKind::InvalidInput,
            StoreError::MissingCredentials { .. }
            | StoreError::NeedsToken { .. }
            | StoreError::AccessDenied { .. }
            | StoreError::NoSuchBucket { .. } => ErrorKind::Denied,
            // The data being uploaded failed: its own kind when it says one (a corrupt source
            // cache in a copy), else the local side failed.
            StoreError::Source { source, .. } => {
                if let Some(inner) = source
                    .get_ref()
                    .and_then(|e| e.downcast_ref::<StoreError>())
                {
                    inner.kind()
                } else if source.kind() == std::io::ErrorKind::InvalidData {
                    ErrorKind::Corrupt
                } else {
                    ErrorKind::Local
                }
            }
        }
    }
}

/// What the store was doing when a backend error happened (used in messages: "failed to read X").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Read,
    Stat,
    Write,
    Delete,
    Rename,
    List,
}

impl Op {
    pub(crate) fn verb(self) -> &'static str {
        match self {
            Op::Read => "read",
            Op::Stat => "look up",
            Op::Write => "write",
            Op::Delete => "delete",
            Op::Rename => "rename",
            Op::List => "list",
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.verb())
    }
}

/// What the store knows about itself that helps word an error.
#[derive(Debug, Clone, Default)]
pub(crate) struct ErrorContext {
    /// The URL shown to users (no secrets).
    pub(crate) url: String,
    /// The bucket or container, for remote stores.
    pub(crate) bucket: Option<String>,
    /// Set when credentials come from a provider (instance metadata, ...) rather than static
    /// keys: what to tell the user if fetching them fails.
    pub(crate) credential_advice: Option<String>,
    /// The S3 endpoint given (`endpoint=`), to name in a "not an S3 API" error.
    pub(crate) endpoint: Option<String>,
    /// What kind of store: the URL's scheme (`http`, `https`, `s3`, …; empty for a local
    /// directory, memory or a caller's store), for advice that fits it.
    pub(crate) scheme: &'static str,
}

impl ErrorContext {
    /// Whether the store is an `http(s)://` cache.
    pub(crate) fn is_http(&self) -> bool {
        matches!(self.scheme, "http" | "https")
    }

    /// The error for a write to a store opened read-only.
    pub(crate) fn read_only(&self, key: &str) -> StoreError {
        let (url, key) = (self.url.clone(), key.to_owned());
        if self.is_http() {
            StoreError::NeedsToken { url, key }
        } else {
            StoreError::ReadOnly { url, key }
        }
    }

    /// What to check when nothing answers at the store's address.
    fn unreachable_advice(&self) -> &'static str {
        match self.scheme {
            "s3" if self.endpoint.is_none() => "no endpoint= was given, so AWS itself was asked; for another S3 server (Garage, MinIO) add endpoint=http://HOST:PORT to the URL",
            "s3" => "check that the server is running and that endpoint= is right",
            _ => "check that the server is running and that the URL is right",
        }
    }
}

/// Whether `e` is a backend's own error (an `object_store` error with its retries, request
/// URL and response body): the [`StoreError`] wrapping it already says what went wrong in
/// short, so a frontend shows these only when asked to be verbose.
///
/// ```
/// use cachecore::store::{is_backend_detail, StoreError};
/// let backend = object_store::Error::Generic { store: "S3", source: "connection reset".into() };
/// assert!(is_backend_detail(&backend));
/// let ours = StoreError::NotFound { url: "memory://".into(), key: "x.narinfo".into() };
/// assert!(!is_backend_detail(&ours));
/// ```
pub fn is_backend_detail(e: &(dyn StdError + 'static)) -> bool {
    // Our variants hold it boxed, and a `Box<E>` is the error a `source()` hands out.
    e.is::<object_store::Error>() || e.is::<Box<object_store::Error>>()
}

/// Converts an `object_store` error into a [`StoreError`]. `NotFound` becomes
/// [`StoreError::NotFound`] unless the server said the *bucket* is missing.
pub(crate) fn convert(
    cx: &ErrorContext,
    op: Op,
    key: &str,
    source: object_store::Error,
) -> StoreError {
    let url = cx.url.clone();
    let key = key.to_owned();
    let op_verb = op.verb();
    let text = chain_text(&source);
    let source = Box::new(source);
    if let Some(expected) = expected_region(&text) {
        return StoreError::WrongRegion {
            url,
            expected,
            op: op_verb,
            key,
            source,
        };
    }
    if text.contains("NoSuchBucket") || text.contains("ContainerNotFound") {
        return StoreError::NoSuchBucket {
            url,
            bucket: cx.bucket.clone().unwrap_or_default(),
            op: op_verb,
            key,
            source,
        };
    }
    if let Some(endpoint) = &cx.endpoint {
        let not_found = matches!(source.as_ref(), object_store::Error::NotFound { .. });
        let how = if is_html(&text) {
            Some("with a web page")
        } else if not_found && matches!(op, Op::Write | Op::List) {
            // An S3 API answers an upload or a listing with NoSuchBucket (above), never 404.
            Some("with \"not found\"")
        } else {
            None
        };
        if let Some(how) = how {
            return StoreError::NotS3 {
                url,
                endpoint: endpoint.clone(),
                op: op_verb,
                key,
                how,
                source,
            };
        }
    }
    match source.as_ref() {
        object_store::Error::NotFound { .. } => return StoreError::NotFound { url, key },
        object_store::Error::AlreadyExists { .. } => return StoreError::AlreadyExists { url, key },
        object_store::Error::Precondition { .. } => return StoreError::Changed { url, key },
        object_store::Error::InvalidPath { source: p } => {
            return StoreError::BadKey {
                url,
                reason: p.to_string(),
                key,
            }
        }
        object_store::Error::PermissionDenied { .. }
        | object_store::Error::Unauthenticated { .. } => {
            let refused = match source.as_ref() {
                object_store::Error::PermissionDenied { source: s, .. }
                | object_store::Error::Unauthenticated { source: s, .. } => {
                    s.downcast_ref::<super::http_upload::Refused>()
                }
                _ => None,
            };
            let (detail, advice) = match refused {
                Some(r) => (
                    r.to_string(),
                    "check the token (--token-file, or CACHECORE_TOKEN) against the server's --token-file",
                ),
                None if cx.is_http() => (
                    http_refusal(&text),
                    "give the server's token with --token-file FILE or CACHECORE_TOKEN (or as user:token@ in the URL)",
                ),
                None => (
                    server_detail(&text),
                    "check the access key, secret and the bucket's permissions",
                ),
            };
            return StoreError::AccessDenied {
                url,
                op: op_verb,
                key,
                detail,
                advice,
                source,
            };
        }
        _ => {}
    }
    if let Some(advice) = &cx.credential_advice {
        if is_credential_failure(&text) {
            return StoreError::MissingCredentials {
                url,
                op: op_verb,
                key,
                detail: format!("{}; {advice}", credential_detail(&source)),
                source: Some(source),
            };
        }
    }
    if let Some(mut detail) = unreachable_detail(&source) {
        if cx.scheme == "https" && text.contains("InvalidContentType") {
            // rustls reading a plain HTTP answer as a TLS record.
            detail = format!("the server answered in plain HTTP, not TLS; use http:// ({detail})");
        }
        return StoreError::Unreachable {
            url,
            op: op_verb,
            key,
            detail,
            advice: cx.unreachable_advice(),
            source,
        };
    }
    StoreError::Backend {
        url,
        op: op_verb,
        key,
        detail: backend_detail(&source, &text),
        source,
    }
}

/// What a failed GET means, once the backend's words are read ([`convert_get`]).
pub(crate) enum GetFailure {
    /// There is no object at the key.
    Missing,
    /// The backend has no suffix ranges (Azure): the last `n` bytes must be asked for from an
    /// offset, once the size is known.
    NoSuffixRanges(u64),
    /// Anything else, converted ([`convert`]); a range past the end is
    /// [`StoreError::RangeNotSatisfiable`] whatever words the backend said it in.
    Failed(StoreError),
}

/// Converts the failure of a GET of `key` (of the bytes `range`, `None` for the whole object)
/// into what it means, backend quirks included: Azure refuses suffix ranges as "not
/// supported", and each backend words "range past the end" its own way (S3's `416` and
/// `InvalidRange`, object_store's local and memory stores' messages).
pub(crate) fn convert_get(
    cx: &ErrorContext,
    key: &str,
    range: Option<&object_store::GetRange>,
    source: object_store::Error,
) -> GetFailure {
    use object_store::GetRange;
    if let (object_store::Error::NotSupported { .. }, Some(GetRange::Suffix(n))) = (&source, range)
    {
        return GetFailure::NoSuffixRanges(*n);
    }
    let past_the_end = |text: &str| {
        ["416", "InvalidRange", "out of bounds", "Range started at"]
            .into_iter()
            .chain(["Wanted range starting at"])
            .any(|words| text.contains(words))
    };
    if let Some(range) = range {
        let missing = matches!(source, object_store::Error::NotFound { .. });
        if !missing && past_the_end(&chain_text(&source)) {
            return GetFailure::Failed(StoreError::RangeNotSatisfiable {
                url: cx.url.clone(),
                key: key.to_owned(),
                range: range.to_string(),
            });
        }
    }
    match convert(cx, Op::Read, key, source) {
        StoreError::NotFound { .. } => GetFailure::Missing,
        e => GetFailure::Failed(e),
    }
}

/// The region an S3 server said it expects, from an `AuthorizationHeaderMalformed` answer
/// such as Garage's `... expected: '20261129/garage/s3/aws4_request'` (the credential scope
/// is `<date>/<region>/s3/aws4_request`).
fn expected_region(text: &str) -> Option<String> {
    if !text.contains("AuthorizationHeaderMalformed") {
        return None;
    }
    // Garage: `unexpected scope: '…/us-east-1/…', expected: '…/garage/s3/aws4_request'`.
    let from = text.find("expected:").map_or(text, |i| &text[i..]);
    let end = from.find("/s3/aws4_request")?;
    let region = from[..end].rsplit('/').next()?;
    let valid = !region.is_empty()
        && region
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
    valid.then(|| region.to_owned())
}

fn is_html(text: &str) -> bool {
    let lower = text.to_ascii_lowercase();
    lower.contains("<html") || lower.contains("<!doctype html")
}

/// A backend failure in one clause: the S3 error code and message when the server sent
/// them, else the HTTP status, else the error's first clause (object_store's messages go on
/// with the request URL, retry counts and the response body).
fn backend_detail(source: &object_store::Error, text: &str) -> String {
    let code = xml_field(text, "Code");
    let message = xml_field(text, "Message");
    let status = http_status(text);
    let parts: Vec<String> = [status, code, message].into_iter().flatten().collect();
    if !parts.is_empty() {
        return parts.join(": ");
    }
    let inner = match source {
        object_store::Error::Generic { source, .. } => source.to_string(),
        other => other.to_string(),
    };
    let first = inner.split(" - ").next().unwrap_or(&inner);
    first.split(", after ").next().unwrap_or(first).to_owned()
}

/// `HTTP 400 Bad Request` from object_store's "status code: 400 Bad Request" wording.
fn http_status(text: &str) -> Option<String> {
    let marker = "status code: ";
    let start = text.find(marker)? + marker.len();
    let rest = &text[start..];
    let end = rest.find([':', ',', '\n']).unwrap_or(rest.len());
    let status = rest[..end].trim();
    (!status.is_empty()).then(|| format!("HTTP {status}"))
}

/// The whole source chain, joined (for matching on the server's error codes).
pub(crate) fn chain_text(e: &(dyn StdError + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(" / ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}

/// Whether a failure happened while fetching credentials (from instance metadata, a container
/// or web-identity endpoint) rather than talking to the store: object_store reports these as
/// generic errors, recognisable by their wording or by the credential endpoints' URLs.
fn is_credential_failure(text: &str) -> bool {
    const MARKERS: &[&str] = &[
        "Error getting credentials",
        "Error fetching token",
        "Failed to fetch token",
        "/latest/api/token",
        "/latest/meta-data",
        "169.254.170.2",
        "AssumeRoleWithWebIdentity",
        "metadata.google.internal",
        "computeMetadata",
        "/metadata/identity/oauth2/token",
    ];
    MARKERS.iter().any(|m| text.contains(m))
}

fn credential_detail(e: &object_store::Error) -> String {
    match unreachable_detail(e) {
        Some(d) => format!("fetching credentials failed: {d}"),
        None => "fetching credentials failed".to_owned(),
    }
}

/// An HTTP cache's refusal: its status and the server's own reason (object_store quotes the
/// response body after the status), e.g. `HTTP 401 Unauthorized: reading this cache needs a
/// token …`.
fn http_refusal(text: &str) -> String {
    let Some(status) = http_status(text) else {
        return server_detail(text);
    };
    let marker = "status code: ";
    let after = text.find(marker).map_or("", |i| &text[i + marker.len()..]);
    // `401 Unauthorized: <body>`: the body is the reason, one line.
    let reason = after
        .split_once(": ")
        .map(|(_, body)| body.trim().trim_end_matches("\\n").trim())
        .unwrap_or_default();
    let reason = reason.split(" / ").next().unwrap_or_default();
    if reason.is_empty() {
        status
    } else {
        format!("{status}: {}", crate::untrusted::reason(reason))
    }
}

/// The S3 error code and message in a refusal, e.g. `HTTP 403: InvalidAccessKeyId: ...`.
fn server_detail(text: &str) -> String {
    let code = xml_field(text, "Code");
    let message = xml_field(text, "Message");
    let status = ["401", "403"]
        .iter()
        .find(|s| text.contains(&format!("{s} ")))
        .map(|s| format!("HTTP {s}"));
    let parts: Vec<String> = [status, code, message].into_iter().flatten().collect();
    if parts.is_empty() {
        "the server refused the request".to_owned()
    } else {
        parts.join(": ")
    }
}

fn xml_field(text: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let start = text.find(&open)? + open.len();
    let len = text[start..].find(&close)?;
    Some(text[start..start + len].trim().to_owned())
}

/// If the failure is a connection failure (nothing listening, DNS, TLS, timeout), a short
/// description of the innermost cause, with the retry count when there was one.
fn unreachable_detail(e: &object_store::Error) -> Option<String> {
    let mut transport = false;
    let mut innermost: Option<String> = None;
    let mut cur: Option<&(dyn StdError + 'static)> = Some(e);
    let mut retries: Option<String> = None;
    while let Some(s) = cur {
        if let Some(h) = s.downcast_ref::<object_store::client::HttpError>() {
            use object_store::client::HttpErrorKind as K;
            if matches!(h.kind(), K::Connect | K::Timeout | K::Request) {
                transport = true;
            }
        }
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            innermost = Some(io_reason(io));
        }
        let text = s.to_string();
        if retries.is_none() {
            if let Some(i) = text.find("after ") {
                if let Some(n) = text[i + 6..].split(' ').next() {
                    if text[i + 6..].starts_with(&format!("{n} retries")) {
                        retries = Some(format!("after {n} retries"));
                    }
                }
            }
        }
        if s.source().is_none() && innermost.is_none() {
            innermost = Some(text);
        }
        cur = s.source();
    }
    if !transport {
        return None;
    }
    let mut detail = innermost.unwrap_or_else(|| "connection failed".to_owned());
    if let Some(r) = retries {
        detail.push_str(&format!(" ({r})"));
    }
    Some(detail)
}

fn io_reason(io: &std::io::Error) -> String {
    use std::io::ErrorKind as K;
    match io.kind() {
        K::ConnectionRefused => "connection refused".to_owned(),
        K::TimedOut => "connection timed out".to_owned(),
        _ => io.to_string(),
    }
}
