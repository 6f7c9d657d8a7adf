//! Hashing a tree's NAR, as `nix-hash --type sha256 PATH` does, on two threads: one packs (file
//! system calls), the caller hashes. Memory stays bounded by the chunk channel.

use std::path::Path;

use super::pack::{dump, PackError};
use crate::chunks::chunk_channel;
use crate::hash::{Hash, HashAlgo, Hasher};

const CHUNK: usize = 1 << 20;
const DEPTH: usize = 4;

/// The sha256 NAR hash and NAR size of the tree at `path` (a symlink there is not followed).
///
/// ```
/// use cachecore::{hash::{Hash, HashAlgo}, nar};
/// # let dir = tempfile::tempdir().unwrap();
/// # std::fs::write(dir.path().join("hello"), "hi\n").unwrap();
/// let (nar_hash, nar_size) = nar::hash_path(&dir.path().join("hello")).unwrap();
/// // The same as hashing the NAR `nar::dump` writes (`nix-hash --type sha256 --base32`).
/// let mut bytes = Vec::new();
/// assert_eq!(nar::dump(&dir.path().join("hello"), &mut bytes).unwrap(), nar_size);
/// assert_eq!(nar_hash, Hash::digest(HashAlgo::Sha256, &bytes));
/// ```
pub fn hash_path(path: &Path) -> Result<(Hash, u64), PackError> {
    hash_path_with(path, HashAlgo::Sha256)
}

/// Like [`hash_path`] with any algorithm.
///
/// ```
/// use cachecore::{hash::{Hash, HashAlgo}, nar};
/// # let dir = tempfile::tempdir().unwrap();
/// # std::fs::write(dir.path().join("hello"), "hi\n").unwrap();
/// let (sha512, size) = nar::hash_path_with(&dir.path().join("hello"), HashAlgo::Sha512).unwrap();
/// let mut bytes = Vec::new();
/// nar::dump(&dir.path().join("hello"), &mut bytes).unwrap();
/// assert_eq!((sha512, size), (Hash::digest(HashAlgo::Sha512, &bytes), bytes.len() as u64));
/// ```
pub fn hash_path_with(path: &Path, algo: HashAlgo) -> Result<(Hash, u64), PackError> {
    let (writer, chunks) = chunk_channel(CHUNK, DEPTH);
    std::thread::scope(|scope| {
        let packer = scope.spawn(move || dump(path, writer));
        let mut hasher = Hasher::new(algo);
        let mut hashed = 0u64;
        while let Some(chunk) = chunks.next() {
            hasher.update(&chunk);
            hashed += chunk.len() as u64;
            chunks.recycle(chunk);
        }
        let size = packer
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))?;
        debug_assert_eq!(size, hashed);
        Ok((hasher.finish(), size))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::HashingWriter;

    #[test]
    fn same_as_hashing_the_packed_nar() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("t");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(root.join("sub/big"), vec![5u8; 3 * CHUNK + 17]).unwrap();
        std::fs::write(root.join("small"), b"x").unwrap();
        let mut w = HashingWriter::new(HashAlgo::Sha256, std::io::sink());
        super::super::pack(&root, &mut w).unwrap();
        let (expected, size, _) = w.finish();
        assert_eq!(hash_path(&root).unwrap(), (expected, size));
    }

    #[test]
    fn errors_come_through() {
        let err = hash_path(Path::new("/nonexistent/cachecore")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/cachecore"), "{err}");
    }
}
