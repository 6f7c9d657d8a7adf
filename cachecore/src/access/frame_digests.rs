//! Signed frame digests: what lets a ranged read of a seekable NAR, and a path's `.ls` listing,
//! be checked against a signature, when the narinfo's `NarHash` can only check a whole NAR.
//!
//! # What push writes
//!
//! For a NAR it compresses into more than one seekable zstd frame, `cachecore push` writes:
//!
//! - the **frame digests** object, `nar/<nix32 sha256>.frames`, named by its own sha256: the
//!   line `cachecore-frame-digests-1\n`, then for each frame, in order, 40 bytes — its
//!   compressed size and decompressed size (u32, little-endian) and the sha256 of its
//!   compressed bytes ([`FrameDigests`]);
//! - three narinfo fields Nix ignores (it skips fields it does not know; cachecore keeps them
//!   in [`NarInfo::extra`]), together the [`FramesClaim`]:
//!
//!   ```text
//!   FramesHash: sha256:<nix32 of the frame digests object>
//!   ListingHash: sha256:<nix32 of the .ls as stored, decoded>     (when there is a listing)
//!   FramesSig: <key name>:<base64 ed25519 signature>             (one per signing key)
//!   ```
//!
//!   The signature is by the cache key, over the domain-separated message
//!   `cachecore-frames-1;<store path>;<NarHash>;<FramesHash>;<ListingHash or ->` — never the
//!   text Nix signs (`1;…`), so neither signature can stand in for the other.
//!
//! # What a reader checks ([`super::NarAccess::frames_checked`])
//!
//! Before serving a byte: the narinfo's own signature (the caller's check, as for every read),
//! then a `FramesSig` by a trusted key over the message above. Then the frame digests object
//! must hash to `FramesHash`, be no longer than [`MAX_FRAME_DIGESTS_BYTES`], and describe
//! exactly the frames of the object's seek table; each frame fetched is hashed and compared
//! before it is decompressed, and the `.ls` must hash to `ListingHash` before its tree is used.
//! A path without a claim, or whose claim no trusted key signed, or whose frame digests object
//! is missing, is read whole and checked against its `NarHash` instead (`--check nar`).
//!
//! # Threat model: what a hostile bucket can do to a reader
//!
//! It can withhold objects or answer slowly (reads fail, or fall back to whole NARs: still
//! checked); serve damaged frames, digests, listings or seek tables (the read fails with
//! [`ErrorKind::Corrupt`](crate::error::ErrorKind::Corrupt), no byte of it is served); replay
//! an older signed narinfo of the same store path (store paths are immutable, so it is the same
//! content). It cannot make a reader serve bytes, names, sizes, executable bits or symlink
//! targets that the key holder did not sign: frames and listing are pinned by sha256, the
//! sha256 of the digests and the listing by the signature, the signature by the trusted key.
//! What the signature covers is what `push` computed from the local store: a key holder who
//! signs wrong digests is trusted like one who signs a wrong NarHash.

use std::sync::Arc;

use sha2::Digest as _;

use crate::hash::{Hash, HashAlgo};
use crate::narinfo::NarInfo;
use crate::seekable::SeekTable;
use crate::signing::{PublicKey, Signature, Signer};

/// The narinfo field holding the sha256 of the frame digests object.
pub const FRAMES_HASH_FIELD: &str = "FramesHash";
/// The narinfo field holding the sha256 of the `.ls` listing.
pub const LISTING_HASH_FIELD: &str = "ListingHash";
/// The narinfo field holding a signature over the claim (one per key).
pub const FRAMES_SIG_FIELD: &str = "FramesSig";

/// The first line of a frame digests object.
const MAGIC: &[u8] = b"cachecore-frame-digests-1\n";
/// Bytes per frame.
const ENTRY_LEN: usize = 40;
/// What the signed message starts with.
const DOMAIN: &str = "cachecore-frames-1";

/// The largest frame digests object read (about 400,000 frames: a 1.6 TiB NAR at 4 MiB
/// frames). Push writes none for a NAR of more frames.
pub const MAX_FRAME_DIGESTS_BYTES: u64 = 16 << 20;

/// One frame: its sizes and the sha256 of its compressed bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameDigest {
    pub compressed_size: u32,
    pub decompressed_size: u32,
    pub sha256: [u8; 32],
}

/// The frame digests of one seekable NAR (see the [module docs](self)).
///
/// ```
/// use std::io::Write as _;
/// use cachecore::access::frame_digests::FrameDigests;
/// use cachecore::seekable::{SeekableOptions, SeekableWriter};
/// let opts = SeekableOptions { frame_size: 1000, threads: 1, ..SeekableOptions::default() };
/// let mut w = SeekableWriter::new(Vec::new(), opts).unwrap();
/// let data: Vec<u8> = (0..2500u32).map(|i| (i % 251) as u8).collect();
/// w.write_all(&data).unwrap();
/// let (object, table, digests) = w.finish_with_digests().unwrap();
/// let frames = FrameDigests::new(&table, &digests).unwrap();
/// let bytes = frames.to_bytes();
/// assert_eq!(FrameDigests::parse(&bytes).unwrap(), frames);
/// assert!(frames.describes(&table));
/// let first = table.frames()[0].compressed_range();
/// assert!(frames.holds(0, &object[first.start as usize..first.end as usize]));
/// assert!(!frames.holds(1, &object[first.start as usize..first.end as usize]));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameDigests {
    frames: Vec<FrameDigest>,
}

impl FrameDigests {
    /// The digests of the frames `table` describes (`digests` in the same order); `None` when
    /// the lengths differ or the object would exceed [`MAX_FRAME_DIGESTS_BYTES`].
    pub fn new(table: &SeekTable, digests: &[[u8; 32]]) -> Option<FrameDigests> {
        if table.len() != digests.len()
            || (MAGIC.len() + ENTRY_LEN * digests.len()) as u64 > MAX_FRAME_DIGESTS_BYTES
        {
            return None;
        }
        Some(FrameDigests {
            frames: table
                .frames()
                .iter()
                .zip(digests)
                .map(|(f, d)| FrameDigest {
                    compressed_size: f.compressed_size,
                    decompressed_size: f.decompressed_size,
                    sha256: *d,
                })
                .collect(),
        })
    }

    /// The object's bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(MAGIC.len() + ENTRY_LEN * self.frames.len());
        out.extend_from_slice(MAGIC);
        for f in &self.frames {
            out.extend_from_slice(&f.compressed_size.to_le_bytes());
            out.extend_from_slice(&f.decompressed_size.to_le_bytes());
            out.extend_from_slice(&f.sha256);
        }
        out
    }

    /// Reads an object's bytes; the reason when they are not frame digests.
    pub fn parse(bytes: &[u8]) -> Result<FrameDigests, &'static str> {
        let body = bytes
            .strip_prefix(MAGIC)
            .ok_or("it does not start with cachecore-frame-digests-1")?;
        if body.len() % ENTRY_LEN != 0 {
            return Err("its length is not a whole number of 40-byte entries");
        }
        let frames = body
            .chunks_exact(ENTRY_LEN)
            .map(|e| {
                let u32_at =
                    |at: usize| u32::from_le_bytes([e[at], e[at + 1], e[at + 2], e[at + 3]]);
                let mut sha256 = [0u8; 32];
                sha256.copy_from_slice(&e[8..]);
                FrameDigest {
                    compressed_size: u32_at(0),
                    decompressed_size: u32_at(4),
                    sha256,
                }
            })
            .collect();
        Ok(FrameDigests { frames })
    }

    /// The frames, in order.
    pub fn frames(&self) -> &[FrameDigest] {
        &self.frames
    }

    /// The length the object of `frames` frames has.
    pub fn object_len(frames: usize) -> u64 {
        (MAGIC.len() + ENTRY_LEN * frames) as u64
    }

    /// Whether these are the digests of exactly the frames `table` describes (same number,
    /// same sizes, in order).
    pub fn describes(&self, table: &SeekTable) -> bool {
        self.frames.len() == table.len()
            && self.frames.iter().zip(table.frames()).all(|(d, f)| {
                d.compressed_size == f.compressed_size && d.decompressed_size == f.decompressed_size
            })
    }

    /// Whether `compressed` are the bytes of frame `index`.
    pub fn holds(&self, index: usize, compressed: &[u8]) -> bool {
        self.frames.get(index).is_some_and(|d| {
            d.compressed_size as usize == compressed.len()
                && <[u8; 32]>::from(sha2::Sha256::digest(compressed)) == d.sha256
        })
    }
}

/// What a narinfo's `FramesHash`, `ListingHash` and `FramesSig` fields say (see the
/// [module docs](self)).
///
/// ```
/// use cachecore::access::frame_digests::FramesClaim;
/// use cachecore::hash::{Hash, HashAlgo};
/// use cachecore::narinfo::NarInfo;
/// use cachecore::signing::SecretKey;
/// use cachecore::store_path::{StoreDir, StorePath};
/// let path = StorePath::from_base_name("7h7qgvs4kgzsn8a6rb273saxyqh4jxlz-hello-2.12").unwrap();
/// let mut info = NarInfo::new(StoreDir::default(), path, "nar/x.nar.zst".into(),
///     Hash::digest(HashAlgo::Sha256, b"nar"), 3);
/// let key = SecretKey::generate("cache.example.org-1").unwrap();
/// let other = SecretKey::generate("other-1").unwrap();
/// let claim = FramesClaim {
///     frames: Hash::digest(HashAlgo::Sha256, b"digests"),
///     listing: Some(Hash::digest(HashAlgo::Sha256, b"{}")),
/// };
/// claim.write(&mut info, &[&key]);
/// assert_eq!(FramesClaim::of(&info), Some(claim.clone()));
/// assert_eq!(FramesClaim::trusted(&info, &[key.public_key()]), Some(claim.clone()));
/// assert_eq!(FramesClaim::trusted(&info, &[other.public_key()]), None);
/// // The signature covers the NarHash: another NAR voids it.
/// let mut moved = info.clone();
/// moved.nar_hash = Hash::digest(HashAlgo::Sha256, b"other");
/// assert_eq!(FramesClaim::trusted(&moved, &[key.public_key()]), None);
/// // `cachecore sign` adds a signature, keeping the others.
/// assert!(!claim.signed_by(&info, &other));
/// claim.add_signature(&mut info, &other);
/// claim.add_signature(&mut info, &other); // once
/// assert!(claim.signed_by(&info, &other) && claim.signed_by(&info, &key));
/// assert_eq!(info.extra.iter().filter(|(k, _)| k == "FramesSig").count(), 2);
/// FramesClaim::remove(&mut info);
/// assert_eq!(FramesClaim::of(&info), None);
/// assert!(info.extra.is_empty());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FramesClaim {
    /// The sha256 of the frame digests object.
    pub frames: Hash,
    /// The sha256 of the `.ls` listing, when the path has one.
    pub listing: Option<Hash>,
}

impl FramesClaim {
    /// The claim a narinfo makes, signed or not; `None` when it makes none, or a malformed one.
    pub fn of(info: &NarInfo) -> Option<FramesClaim> {
        let field = |name: &str| {
            let mut values = info.extra.iter().filter(|(k, _)| k == name);
            match (values.next(), values.next()) {
                (Some((_, v)), None) => Some(Some(v.as_str())),
                (None, _) => Some(None),
                // Two of a field that must be one: no claim.
                (Some(_), Some(_)) => None,
            }
        };
        let sha256 = |v: &str| Hash::parse_expecting(v, HashAlgo::Sha256).ok();
        let frames = sha256(field(FRAMES_HASH_FIELD)??)?;
        let listing = match field(LISTING_HASH_FIELD)? {
            Some(v) => Some(sha256(v)?),
            None => None,
        };
        Some(FramesClaim { frames, listing })
    }

    /// The message a `FramesSig` signs for this claim in `info`.
    pub fn message(&self, info: &NarInfo) -> String {
        format!(
            "{DOMAIN};{};{};{};{}",
            info.store_dir.full_path(&info.store_path),
            info.nar_hash,
            self.frames,
            self.listing
                .as_ref()
                .map_or_else(|| "-".to_owned(), Hash::to_string)
        )
    }

    /// The claim `info` makes, when one of `keys` signed it.
    pub fn trusted(info: &NarInfo, keys: &[PublicKey]) -> Option<FramesClaim> {
        let claim = FramesClaim::of(info)?;
        let message = claim.message(info);
        let signed = info
            .extra
            .iter()
            .filter(|(k, _)| k == FRAMES_SIG_FIELD)
            .filter_map(|(_, v)| Signature::parse(v).ok())
            .any(|sig| keys.iter().any(|k| k.verify(message.as_bytes(), &sig)));
        signed.then_some(claim)
    }

    /// Writes the claim into `info` (replacing any claim there), signed by each of `signers`.
    pub fn write(&self, info: &mut NarInfo, signers: &[&dyn Signer]) {
        FramesClaim::remove(info);
        info.extra
            .push((FRAMES_HASH_FIELD.to_owned(), self.frames.to_string()));
        if let Some(listing) = &self.listing {
            info.extra
                .push((LISTING_HASH_FIELD.to_owned(), listing.to_string()));
        }
        let message = self.message(info);
        for signer in signers {
            let sig = signer.sign(message.as_bytes());
            info.extra
                .push((FRAMES_SIG_FIELD.to_owned(), sig.to_string()));
        }
    }

    /// Whether `info` carries `signer`'s `FramesSig` over this claim (ed25519 signatures are
    /// deterministic: the one it would write now is the one it wrote before).
    pub fn signed_by(&self, info: &NarInfo, signer: &dyn Signer) -> bool {
        let sig = signer.sign(self.message(info).as_bytes()).to_string();
        info.extra
            .iter()
            .any(|(k, v)| k == FRAMES_SIG_FIELD && *v == sig)
    }

    /// Adds `signer`'s `FramesSig` over this claim to `info`, keeping the claim's fields and
    /// other signatures as they are (what `cachecore sign` does; [`write`](Self::write)
    /// replaces them). Nothing changes when it is there already.
    pub fn add_signature(&self, info: &mut NarInfo, signer: &dyn Signer) {
        if !self.signed_by(info, signer) {
            let sig = signer.sign(self.message(info).as_bytes());
            info.extra
                .push((FRAMES_SIG_FIELD.to_owned(), sig.to_string()));
        }
    }

    /// Removes any claim from `info` (its NAR or listing changed: the claim would lie).
    pub fn remove(info: &mut NarInfo) {
        info.extra.retain(|(k, _)| {
            k != FRAMES_HASH_FIELD && k != LISTING_HASH_FIELD && k != FRAMES_SIG_FIELD
        });
    }
}

/// The signers of a push, as [`FramesClaim::write`] takes them.
pub(crate) fn signer_refs(signers: &[Arc<dyn Signer>]) -> Vec<&dyn Signer> {
    signers.iter().map(|s| s.as_ref()).collect()
}

/// Checks a seekable NAR object against its frame digests as the whole object streams past
/// once (what `verify` reads anyway): each frame's bytes are hashed as they arrive, where the
/// digests say the frame ends, and what follows the last frame is kept (at most a seek table's
/// worth) to be compared with the digests when the object has ended.
///
/// ```
/// use std::io::Write as _;
/// use cachecore::access::frame_digests::{FrameDigests, StreamedFrames};
/// use cachecore::seekable::{SeekableOptions, SeekableWriter};
/// let opts = SeekableOptions { frame_size: 1000, threads: 1, ..SeekableOptions::default() };
/// let mut w = SeekableWriter::new(Vec::new(), opts).unwrap();
/// let data: Vec<u8> = (0..2500u32).map(|i| (i % 251) as u8).collect();
/// w.write_all(&data).unwrap();
/// let (object, table, digests) = w.finish_with_digests().unwrap();
/// let frames = FrameDigests::new(&table, &digests).unwrap();
/// let mut check = StreamedFrames::new(frames.clone());
/// for chunk in object.chunks(7) {
///     assert!(check.update(chunk));
/// }
/// assert_eq!(check.finish(), Ok(()));
/// // One byte of the second frame changed: that frame, by index.
/// let mut damaged = object.clone();
/// damaged[table.frames()[1].compressed_offset as usize + 3] ^= 1;
/// let mut check = StreamedFrames::new(frames);
/// check.update(&damaged);
/// assert!(check.finish().unwrap_err().contains("frame 1 "));
/// ```
#[derive(Debug)]
pub struct StreamedFrames {
    digests: FrameDigests,
    /// The frame being hashed (`digests.frames().len()` once past the last).
    index: usize,
    /// Its bytes still to come.
    left: u64,
    hasher: sha2::Sha256,
    /// Where the frame being hashed starts in the object.
    frame_start: u64,
    /// Object bytes seen.
    seen: u64,
    /// What followed the last frame.
    tail: Vec<u8>,
    /// More followed the last frame than a seek table of these frames takes.
    overflow: bool,
    /// The first frame whose bytes did not match its digest (index and object range), and
    /// how many did.
    first_mismatch: Option<(usize, std::ops::Range<u64>)>,
    mismatches: usize,
}

impl StreamedFrames {
    /// A check of an object against `digests`.
    pub fn new(digests: FrameDigests) -> StreamedFrames {
        let left = digests
            .frames
            .first()
            .map_or(0, |f| u64::from(f.compressed_size));
        StreamedFrames {
            digests,
            index: 0,
            left,
            hasher: sha2::Sha256::new(),
            frame_start: 0,
            seen: 0,
            tail: Vec::new(),
            overflow: false,
            first_mismatch: None,
            mismatches: 0,
        }
    }

    /// The longest seek table of `frames` frames (entries with checksums).
    fn table_limit(&self) -> usize {
        17 + 12 * self.digests.frames.len()
    }

    /// Takes the next bytes of the object; `false` once more followed the last frame than a
    /// seek table can be (nothing after that needs to be read).
    pub fn update(&mut self, mut bytes: &[u8]) -> bool {
        self.seen += bytes.len() as u64;
        let n = self.digests.frames.len();
        while self.index < n {
            let take = (self.left.min(bytes.len() as u64)) as usize;
            self.hasher.update(&bytes[..take]);
            self.left -= take as u64;
            bytes = &bytes[take..];
            if self.left > 0 {
                return true;
            }
            // The frame is whole: compare, and start the next.
            let expected = self.digests.frames[self.index];
            let actual: [u8; 32] = std::mem::take(&mut self.hasher).finalize().into();
            let end = self.frame_start + u64::from(expected.compressed_size);
            if actual != expected.sha256 {
                self.mismatches += 1;
                self.first_mismatch
                    .get_or_insert((self.index, self.frame_start..end));
            }
            self.frame_start = end;
            self.index += 1;
            self.left = self
                .digests
                .frames
                .get(self.index)
                .map_or(0, |f| u64::from(f.compressed_size));
        }
        if self.overflow || self.tail.len() + bytes.len() > self.table_limit() {
            self.overflow = true;
            return false;
        }
        self.tail.extend_from_slice(bytes);
        true
    }

    /// After the whole object was given to [`update`](Self::update): `Ok` when its seek table
    /// describes exactly the frames of the digests and every frame matched its digest; else
    /// one sentence saying what differs.
    pub fn finish(self) -> Result<(), String> {
        let n = self.digests.frames.len();
        if self.index < n {
            return Err(format!(
                "the NAR object ends ({} bytes) inside frame {} of the {n} its frame digests \
                 describe",
                self.seen, self.index
            ));
        }
        let table = match SeekTable::parse_from_tail(&self.tail) {
            Ok(t) if !self.overflow && t.seek_table_len() == self.tail.len() as u64 => t,
            _ => {
                return Err(format!(
                    "its frame digests describe other frames than its NAR object: {n} frames \
                     of {} bytes, not followed by their seek table (the object is {} bytes)",
                    self.frame_start, self.seen
                ))
            }
        };
        if !self.digests.describes(&table) {
            return Err(format!(
                "its frame digests describe other frames ({n}) than its NAR's seek table ({})",
                table.len()
            ));
        }
        self.mismatch().map_or(Ok(()), Err)
    }

    /// After only part of the object was seen (its read failed): the first frame, of those
    /// seen whole, that did not match its digest.
    pub fn finish_early(self) -> Result<(), String> {
        self.mismatch().map_or(Ok(()), Err)
    }

    fn mismatch(&self) -> Option<String> {
        self.first_mismatch.as_ref().map(|(index, range)| {
            format!(
                "frame {index} of its NAR object (bytes {}..{}) does not match its digest in \
                 the frame digests{}",
                range.start,
                range.end,
                match self.mismatches - 1 {
                    0 => String::new(),
                    more => format!(", nor do {more} more frames"),
                }
            )
        })
    }
}
