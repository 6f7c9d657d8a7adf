//! Binary caches on object storage: a local directory, S3 (and S3-compatible servers such as
//! Garage or MinIO), Google Cloud Storage, Azure Blob Storage, memory, or a read-only HTTP cache.
//!
//! Two levels:
//!
//! - the **object layer**, [`Objects`] (module [`objects`]): the only code that touches
//!   `object_store`. Streaming and ranged GET with metadata (size, last-modified, ETag), HEAD,
//!   prefix listing as a stream, put and streaming put with a [`WriteMode`] (overwrite,
//!   create-only, replace-if-unchanged) where the backend *really* honours it — probed, see
//!   [`Objects::write_support`] — and delete. Opening a backend from a URL lives apart from the
//!   handle (`backend.rs`: one short dispatch, each arm a `Backend` carrying its store and what
//!   it can do); a local directory is read by a backend of its own (`local.rs`: `openat2`
//!   beneath the root, non-blocking opens that refuse FIFOs and devices, reads from the page
//!   cache on the calling task); a failed GET is converted once, at the edge (`error.rs`),
//!   backend quirks included; the values the layer hands out are plain data (`object.rs`);
//! - the **cache**, [`BinaryCache`]: narinfos, listings, NARs, logs, GC roots and the push
//!   index, asked for by what they are. The private `layout` module is the only place that
//!   knows object keys.
//!
//! [`url`] parses store URLs; [`StoreError`] says what went wrong in one sentence naming the
//! store and the object, and [`StoreError::kind`] says what kind of failure it is.
//!
//! All functions are plain `async fn`; the caller owns the tokio runtime.
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! use cachecore::cache_info::CacheInfo;
//! use cachecore::store::{BinaryCache, ReadRange};
//! let dir = tempfile::tempdir().unwrap();
//! let cache = BinaryCache::open(dir.path().to_str().unwrap()).unwrap();
//! cache.init(&CacheInfo::default()).await.unwrap();
//! assert_eq!(cache.cache_info().await.unwrap().unwrap().store_dir, "/nix/store");
//! // The object layer underneath: metadata of the file just written.
//! let meta = cache.objects().head("nix-cache-info").await.unwrap().unwrap();
//! assert_eq!(meta.size, CacheInfo::default().to_string().len() as u64);
//! assert!(cache.objects().get("no-such.narinfo", ReadRange::All).await.unwrap().is_none());
//! # });
//! ```
//!
//! # Atomicity
//!
//! No reader ever sees half an object at its final key:
//! - a local directory writes every object to a staging file next to it (`<key>#<n>`) and
//!   renames it into place when complete; a killed upload leaves at most a staging file (which
//!   listings skip), never a truncated object;
//! - S3, GCS and Azure publish an object, single or multipart, only when the upload completes.
//!   A multipart upload whose future is dropped is not aborted and stays in the bucket as an
//!   *incomplete upload* (invisible to readers) until a bucket lifecycle rule removes it.
//!
//! [`Objects::rename`] is a file-system rename on a local directory and copy + delete on
//! object stores (which have no rename).

mod aws_profile;
#[cfg(fuzzing)]
pub(crate) use aws_profile::fuzz_load as fuzz_aws_profile;
mod backend;
mod cache;
mod debris;
pub mod encoding;
mod error;
mod hot;
mod http_upload;
pub mod index;
pub(crate) mod layout;
mod listings;
mod local;
pub mod nar;
mod object;
pub mod objects;
pub mod url;

pub use backend::{process_env, TOKEN_VAR};
pub use cache::{
    BinaryCache, CacheObject, GcRootEntry, StagedNar, MAX_CACHE_INFO_BYTES, MAX_GC_OBJECT_BYTES,
    MAX_LISTING_BYTES, MAX_REALISATION_BYTES,
};
pub use debris::{Debris, DEBRIS_AGE};
pub use error::{is_backend_detail, StoreError};
pub use index::{CachePaths, IndexEntry, PATHS_PAGE};
pub use nar::{IntegrityError, NarReader};
pub use objects::{
    ByteStream, Object, ObjectInfo, Objects, ReadRange, VersionTag, WriteMode, WriteSupport,
    Written, MULTIPART_THRESHOLD, PARTS_IN_FLIGHT, PART_SIZE,
};
pub use url::{GivenAs, StoreLocation, StoreSettings, StoreUrl};
