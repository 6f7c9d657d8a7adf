//! The values the object layer hands out and takes: what an object is ([`ObjectInfo`],
//! [`Object`]), which bytes to read ([`ReadRange`]), how to write ([`WriteMode`]) and what a
//! write left ([`Written`]). Plain data: no I/O, nothing of object_store's but [`GetRange`],
//! which a [`ReadRange`] becomes at the edge.

use std::fmt;
use std::ops::Range;
use std::time::SystemTime;

use bytes::Bytes;
use futures::stream::{self, BoxStream, StreamExt};
use object_store::GetRange;

use super::error::StoreError;

/// A stream of an object's bytes.
pub type ByteStream = BoxStream<'static, Result<Bytes, StoreError>>;

/// What a store says about one object. (Named apart from object_store's `ObjectMeta`, which
/// it is made from at the edge, and which names the key `location`.)
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ObjectInfo {
    /// The key, relative to the cache root.
    pub key: String,
    /// The size of the whole object in bytes.
    pub size: u64,
    /// When the object was last written.
    pub last_modified: SystemTime,
    /// The entity tag, when the backend has one (as the server sent it, quotes included).
    pub e_tag: Option<String>,
    /// The backend's version of the object, when it keeps versions (GCS generation, ...).
    pub version: Option<String>,
    /// The `Content-Encoding` the object is stored with, as a GET reports it (a HEAD does not,
    /// and a local directory keeps none): its bytes are compressed by it
    /// ([`super::encoding`]).
    pub content_encoding: Option<String>,
}

impl ObjectInfo {
    /// The version a [`WriteMode::IfUnchanged`] write must find for this object.
    pub fn version_tag(&self) -> VersionTag {
        VersionTag {
            e_tag: self.e_tag.clone(),
            version: self.version.clone(),
        }
    }
}

/// Which bytes of an object to read. (Not the server's parsed `Range:` header: that one is
/// resolved against the object's size before it becomes one of these.)
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ReadRange {
    /// The whole object.
    #[default]
    All,
    /// Bytes `start..end`; an `end` past the object's end is clamped to it.
    Bounded(Range<u64>),
    /// From this offset to the end.
    From(u64),
    /// The last `n` bytes (all of them if the object is shorter).
    Last(u64),
}

impl ReadRange {
    pub(crate) fn to_get_range(&self) -> Option<GetRange> {
        match self {
            ReadRange::All => None,
            ReadRange::Bounded(r) => Some(GetRange::Bounded(r.clone())),
            ReadRange::From(o) => Some(GetRange::Offset(*o)),
            ReadRange::Last(n) => Some(GetRange::Suffix(*n)),
        }
    }
}

/// An object as read by [`Objects::get`](super::Objects::get): its metadata, which bytes `body` carries, and the
/// body itself, streamed from the backend as it arrives.
pub struct Object {
    pub meta: ObjectInfo,
    /// The bytes of the object that `body` holds (`0..meta.size` for the whole object).
    pub range: Range<u64>,
    pub body: ByteStream,
}

impl Object {
    /// The whole object `meta` describes, whose bytes are at hand.
    pub(crate) fn whole(meta: ObjectInfo, bytes: Bytes) -> Object {
        Object {
            range: 0..meta.size,
            meta,
            body: stream::once(async move { Ok(bytes) }).boxed(),
        }
    }
}

impl fmt::Debug for Object {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Object")
            .field("meta", &self.meta)
            .field("range", &self.range)
            .finish_non_exhaustive()
    }
}

/// The version of an object a [`WriteMode::IfUnchanged`] write expects to replace.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VersionTag {
    pub e_tag: Option<String>,
    pub version: Option<String>,
}

/// How a write treats an object already at its key. (Named apart from object_store's
/// `PutMode`, which it becomes at the edge: the two differ in what a store is trusted to
/// honour, see [`WriteSupport`].)
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum WriteMode {
    /// Replace whatever is there.
    #[default]
    Overwrite,
    /// Write only if there is no object at the key; otherwise [`StoreError::AlreadyExists`].
    Create,
    /// Replace the object only if it is still the version given (compare-and-swap); otherwise
    /// [`StoreError::Changed`].
    IfUnchanged(VersionTag),
}

/// What a store really honours, as [probed](super::Objects::write_support).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct WriteSupport {
    /// Whether the store can be written at all.
    pub writable: bool,
    /// Whether [`WriteMode::Create`] refuses to replace an existing object.
    pub create_only: bool,
    /// Whether [`WriteMode::IfUnchanged`] refuses to replace a changed object.
    pub if_unchanged: bool,
}

/// What a write left at its key.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Written {
    /// Bytes written.
    pub size: u64,
    /// The new object's version, when the backend reports one.
    pub version: VersionTag,
}
