//! cachecore: the formats and operations of a Nix binary cache, in one library that every
//! frontend (the `cachecore` command, an HTTP server, a FUSE mount, Python) shares.
//!
//! # Layers
//!
//! Each layer is a module (or folder) and uses only the ones before it.
//!
//! 1. **Formats**, with no I/O of their own beyond `std::io::{Read, Write}` streams:
//!    [`nixbase32`] and [`hash`] (Nix's hash spellings: `sha256:<nix32>`, hex, SRI);
//!    [`store_path`] (`/nix/store/<hash>-<name>`, and the paths `nix-store --add` computes);
//!    [`nar`] (the Nix ARchive: typestate writer, validating pull reader, pack, unpack,
//!    listing); [`narinfo`] and [`signing`] (narinfo files, fingerprints, ed25519 signatures);
//!    [`cache_info`] and [`realisation`] (the other small files of a cache); [`compression`]
//!    (zstd, xz, bzip2, brotli streams) and [`seekable`] (seekable zstd: frames plus a seek table).
//! 2. **Store** (`store`, feature `cache`), two levels: the object layer `store::Objects`, the
//!    only code touching `object_store` (streaming ranged GET with size, last-modified and
//!    ETag; HEAD; prefix listing as a stream; put and streaming put that overwrite, create
//!    only, or replace only if unchanged, where the backend *really* honours it — probed per
//!    store; delete), and the typed `store::BinaryCache` on top (narinfos, listings, NARs,
//!    logs, GC roots, the push index), whose private `layout` is the only place that knows
//!    object keys, in both directions: its functions build them, and its `ObjectKey::parse`
//!    reads one back into its `ObjectKind` by the same grammar. What a kind of object is for a
//!    reader or a writer (content type, HTTP cache lifetime, upload limit, metrics label) is a
//!    method of `ObjectKind` matched on every kind, so a new kind is one variant and the compiler
//!    lists each place that must decide about it.
//! 3. **Local Nix store** (`local_store`, feature `cache`): path metadata and closures from
//!    the Nix database, the daemon socket, or `nix path-info`.
//! 4. **Graph** ([`graph`]): closure walks, references-first and referrers-first orders (one
//!    `Cycle` error), publishing narinfos references first.
//! 5. **Random access** (`access`, feature `cache`): ranges of a cache's NARs by seek table and
//!    ranged GETs of the frames that hold them.
//! 6. **Operations** (`ops`, feature `cache`): `push`, `copy`, `pull`, `verify`, and reading a
//!    cache (`ls`, `cat`, `info`, one file by ranged reads), each keeping the cache's invariant:
//!    every visible narinfo has its NAR and its whole closure, even after a kill at any point.
//! 7. **Blocking client** (`blocking`, feature `cache`): the same without async, for Python, a
//!    FUSE mount and plain Rust callers; safe to use again in a forked child.
//! 8. **HTTP server** (`server`, feature `server`): a binary cache over any store as an
//!    `axum::Router` — reads with ranges and conditional requests, checked uploads from
//!    `nix copy`, a pull-through proxy, files out of store paths — which `cachecore serve` runs.
//!    Its URL space is one route table (`server/routes.rs`): each route is added with its
//!    group — public, read or write, each a layer checking the token before any handler — and
//!    its metrics label; request paths become object keys only through `layout::ObjectKey`.
//!
//! Errors: every public error type has `kind()`, one [`error::ErrorKind`] named by meaning
//! (`NotFound`, `Corrupt`, `Untrusted`, `Unavailable`, `Denied`, `InvalidInput`, `Conflict`,
//! `Unsupported`, …). [`error::ErrorKind::of_chain`] finds the kind of a wrapped error (an
//! `anyhow` chain, an `io::Error` carrying one of ours), and each frontend maps kinds once,
//! never messages: the CLI to exit statuses, the server to HTTP statuses (one match, every kind
//! decided), the mount to errnos, Python to exception classes.
//!
//! Nothing holds a whole NAR in memory: every operation streams, with buffers bounded by
//! constants, whatever the input size. The store and operations are `async` (the caller owns
//! the tokio runtime; `ops::runtime` makes one).
//!
//! # Examples
//!
//! The format layer, synchronous:
//!
//! ```
//! use cachecore::{hash::{HashAlgo, HashingWriter}, nar, store_path::StoreDir};
//! # let dir = tempfile::tempdir().unwrap();
//! # std::fs::write(dir.path().join("hello"), "hi\n").unwrap();
//! // Hash a tree the way `nix-hash --type sha256 --base32` does, then name it like `nix-store --add`.
//! let mut sink = HashingWriter::new(HashAlgo::Sha256, std::io::sink());
//! nar::pack(&dir.path().join("hello"), &mut sink).unwrap();
//! let (nar_hash, nar_size, _) = sink.finish();
//! let path = StoreDir::default().make_source_path(&nar_hash, "hello").unwrap();
//! println!("{nar_hash} {nar_size} /nix/store/{path}");
//! ```
//!
//! A binary cache in a local directory: push a tree as `nix-store --add` would name it, then
//! verify the cache.
//!
//! ```
//! # #[cfg(feature = "cache")] {
//! use std::sync::Arc;
//! use cachecore::{ops, store::BinaryCache, store_path::StoreDir};
//! # let dir = tempfile::tempdir().unwrap();
//! # let tree = dir.path().join("tree");
//! # std::fs::create_dir(&tree).unwrap();
//! # std::fs::write(tree.join("file"), "hi\n").unwrap();
//! let cache = BinaryCache::open(dir.path().join("cache").to_str().unwrap()).unwrap();
//! ops::runtime().unwrap().block_on(async {
//!     let opts = ops::PushOptions::default();
//!     let (path, _) = ops::push_add(&cache, &StoreDir::default(), &tree, "tree", &opts,
//!         Arc::new(ops::NoProgress)).await.unwrap();
//!     let report = ops::verify(&cache, &[path], &ops::VerifyOptions::default()).await.unwrap();
//!     assert!(report.is_ok() && report.checked == 1);
//! });
//! # }
//! ```

#[cfg(feature = "cache")]
pub mod access;
#[cfg(feature = "cache")]
pub mod blocking;
pub mod cache_info;
pub mod chunks;
pub mod compression;
pub mod error;
#[cfg(all(fuzzing, feature = "cache"))]
#[doc(hidden)]
pub mod fuzz;
#[cfg(feature = "cache")]
pub mod gc;
pub mod graph;
pub mod hash;
#[cfg(feature = "cache")]
pub mod local_store;
pub mod nar;
pub mod narinfo;
pub mod nixbase32;
#[cfg(feature = "cache")]
pub mod ops;
pub mod realisation;
pub mod seekable;
#[cfg(feature = "server")]
pub mod server;
pub mod signing;
#[cfg(feature = "cache")]
pub mod store;
pub mod store_path;
pub mod untrusted;
