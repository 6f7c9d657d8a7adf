//! `cachecore-fuse`: a read-only FUSE view of a Nix binary cache, fetching only the bytes a
//! reader touches.
//!
//! The filesystem is the plain type [`CacheFs`] (lookup, getattr, readdir, readlink and read
//! as methods over the core's blocking client), testable without the kernel; [`adapter`] is
//! the thin `fuser::Filesystem` on top, which forwards calls and maps each error's
//! [`ErrorKind`](cachecore::error::ErrorKind) to an errno; [`mount`] runs it in the
//! foreground until it is unmounted. All logic about caches (random access, the NAR cache,
//! checks) lives in `cachecore`.
//!
//! ```
//! # use std::sync::Arc;
//! # use cachecore::{ops::{NoProgress, PushOptions}, store_path::StoreDir};
//! use cachecore::store::BinaryCache;
//! use cachecore_fuse::{CacheFs, Check, FsOptions, ROOT};
//! # let src = tempfile::tempdir().unwrap();
//! # std::fs::create_dir(src.path().join("bin")).unwrap();
//! # std::fs::write(src.path().join("bin/hello"), "hello, world\n").unwrap();
//! let dir = tempfile::tempdir().unwrap();
//! let cache = BinaryCache::open(dir.path().to_str().unwrap()).unwrap();
//! # let blocking = cachecore::blocking::BinaryCache::from_async(cache.clone());
//! # blocking.init(&Default::default()).unwrap();
//! # let (path, _) = blocking.push_add(&StoreDir::default(), src.path(), "hello",
//! #     &PushOptions::default(), Arc::new(NoProgress)).unwrap();
//! let fs = CacheFs::new(cache, FsOptions {
//!     trusted_keys: vec![],
//!     check_signatures: false,
//!     check: Check::Ranges,
//!     nar_cache: None,
//!     memory: 64 << 20,
//! }).unwrap();
//! let top = fs.lookup(ROOT, path.to_string().as_ref()).unwrap();
//! let bin = fs.lookup(top.ino, "bin".as_ref()).unwrap();
//! let hello = fs.lookup(bin.ino, "hello".as_ref()).unwrap();
//! assert_eq!(&fs.read(hello.ino, 7, 5).unwrap()[..], b"world");
//! ```

pub mod adapter;
pub mod fs;

pub use adapter::{errno, mount, MountHandle};
pub use fs::{Attr, CacheFs, Check, DirEntry, FileKind, FsError, FsOptions, ROOT};
