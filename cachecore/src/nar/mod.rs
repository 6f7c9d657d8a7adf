//! NAR (Nix ARchive): the canonical serialisation of a store path that `nix-store --dump`
//! writes and binary caches store.
//!
//! **Never is a whole NAR, or a whole file, held in memory**: every function here streams, with
//! buffers of fixed size, whatever the input.
//!
//! - [`pack`] / [`dump`] / [`hash_path`]: filesystem tree → NAR (byte-identical to
//!   `nix-store --dump`), or its hash and size; [`dump_to`] an output that moves files'
//!   contents itself ([`writer::FileSink`]: a pipe, by splice(2)).
//! - [`Reader`]: a validating pull parser ([`Event`]s; errors carry the NAR byte offset).
//! - [`writer`]: a typestate writer that can only produce canonical NARs.
//! - [`unpack`]: NAR → new filesystem tree, all or nothing.
//! - [`Listing`]: the `.ls` JSON listing with each file's `narOffset`.
//! - [`cat`] / [`cat_verified`] / [`extract_nar`]: one file or subtree out of a NAR stream.
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use cachecore::nar;
//!
//! let dir = tempfile::tempdir()?;
//! std::fs::create_dir(dir.path().join("pkg"))?;
//! std::fs::write(dir.path().join("pkg/hello"), "hi\n")?;
//!
//! let mut bytes = Vec::new();
//! let listing = nar::pack(&dir.path().join("pkg"), &mut bytes)?;
//! assert!(listing.get("hello").is_some());
//!
//! let mut hello = Vec::new();
//! nar::cat(&bytes[..], "hello", &mut hello)?;
//! assert_eq!(hello, b"hi\n");
//!
//! nar::unpack(&bytes[..], &dir.path().join("copy"))?;
//! # Ok(()) }
//! ```
//!
//! Limits (also enforced when writing, so whatever is written can be read back): names up to
//! [`MAX_NAME_LEN`] bytes, symlink targets up to [`MAX_TARGET_LEN`] bytes, directories nested up
//! to [`MAX_DEPTH`] levels. Unix only (file modes, symlinks, byte-string names).

mod extract;
mod listing;
mod pack;
mod reader;
mod unpack;
mod wire;
pub mod writer;

pub use extract::{cat, cat_verified, extract_nar, ExtractError};
pub use listing::{ExactNode, Listing, ListingError, ListingMismatch, ListingNode, Walk};
pub use pack::{dump, dump_to, pack, pack_marking_files, PackError};
pub use reader::{Contents, Event, ReadError, ReadErrorKind, Reader};
pub use unpack::{unpack, UnpackError};
pub use wire::{MAX_DEPTH, MAX_NAME_LEN, MAX_TARGET_LEN};
mod hash;
pub use hash::{hash_path, hash_path_with};
