//! cachecore: the formats and operations of a Nix binary cache, in one library.
//!
//! The format layer does no I/O of its own beyond `std::io::{Read, Write}` streams:
//!
//! - [`nixbase32`] and [`hash`]: Nix's hash spellings (`sha256:<nix32>`, hex, SRI);
//! - [`store_path`]: `/nix/store/<hash>-<name>`, and the paths `nix-store --add` computes;
//! - [`nar`]: the Nix ARchive — streaming writer, validating pull reader, pack, unpack, listing;
//! - [`narinfo`], [`signing`]: narinfo files, their fingerprints and ed25519 signatures;
//! - [`cache_info`], [`realisation`]: the other small files of a binary cache;
//! - [`compression`]: streaming zstd, xz, bzip2.
//!
//! Nothing here holds a whole NAR in memory: every operation streams, with buffers bounded by
//! constants, whatever the input size.
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

pub mod cache_info;
pub mod chunks;
pub mod compression;
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
pub mod signing;
#[cfg(feature = "cache")]
pub mod store;
pub mod store_path;
