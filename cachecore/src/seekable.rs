//! Seekable zstd: a compressed NAR any zstd decoder reads whole, from which a byte range can be
//! read without decompressing (or even downloading) everything before it.
//!
//! The format is zstd's own *seekable format* (`contrib/seekable_format` in the zstd sources):
//!
//! ```text
//! zstd frame 0 | zstd frame 1 | … | zstd frame n-1 | seek table
//!
//! seek table = a skippable frame:
//!   magic 0x184D2A5E   u32 LE
//!   frame size         u32 LE   (bytes after this field: entries + footer)
//!   n entries          compressed_size u32 LE, decompressed_size u32 LE [, checksum u32 LE]
//!   footer             number_of_frames u32 LE, descriptor u8, magic 0x8F92EAB1 u32 LE
//! ```
//!
//! The frames are independent, complete zstd frames (each with its content size and an XXH64
//! checksum, as the `zstd` command writes by default); the seek table is a skippable frame, which
//! every decoder skips. So the result is an ordinary `.zst` file: the `zstd` command,
//! [`zstd::stream::read::Decoder`] and Nix (which substitutes such `.nar.zst` files) decode it
//! whole. The writer never sets the descriptor's checksum flag; the reader accepts tables with it.
//!
//! An input that fits in one frame is written as that frame alone, without a seek table and
//! without a checksum, as Nix writes a `.nar.zst`: there is nothing to seek in, the narinfo's
//! hashes cover the object, and on the small NARs that make up most of a closure the two would
//! cost a quarter of the object. A reader that finds no table reads such an object whole (it is
//! at most one frame), as it would a `.nar.zst` written by Nix.
//!
//! - [`SeekableWriter`] compresses a stream into that format, frames in parallel on worker
//!   threads, and prefers to end frames where the caller hints (a NAR file boundary).
//! - [`SeekTable::parse_from_tail`] reads the seek table from the last bytes of an object;
//!   [`SeekTable::frames_covering`] / [`SeekTable::compressed_range`] say which bytes to fetch for
//!   a decompressed range, and [`decompress_range`] decodes them.
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::io::Write as _;
//! use cachecore::seekable::{decompress_range, SeekTable, SeekableOptions, SeekableWriter};
//!
//! let data: Vec<u8> = (0..300_000u32).flat_map(|i| (i % 251).to_le_bytes()).collect();
//! let opts = SeekableOptions { frame_size: 64 * 1024, threads: 2, ..SeekableOptions::default() };
//! let mut w = SeekableWriter::new(Vec::new(), opts)?;
//! w.write_all(&data)?;
//! let (object, _) = w.finish()?;
//!
//! // Any zstd decoder reads it whole.
//! assert_eq!(zstd::decode_all(&object[..])?, data);
//!
//! // A reader that can fetch ranges: the tail first, then only the frames it needs.
//! let tail = &object[object.len().saturating_sub(SeekTable::footer_len_hint())..];
//! let table = SeekTable::parse_from_tail(tail)?;
//! let wanted = 500_000..500_100;
//! let fetch = table.compressed_range(wanted.clone())?;
//! let bytes = &object[fetch.start as usize..fetch.end as usize];
//! assert_eq!(decompress_range(&table, bytes, wanted)?, &data[500_000..500_100]);
//! # Ok(()) }
//! ```

use sha2::Digest as _;
use std::collections::BTreeMap;
use std::fmt;
use std::io::{self, Write};
use std::ops::Range;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// The magic number of the skippable frame holding the seek table.
pub const SKIPPABLE_MAGIC: u32 = 0x184D_2A5E;
/// The magic number at the very end of a seekable object.
pub const SEEKABLE_MAGIC: u32 = 0x8F92_EAB1;
/// Length of the footer: `number_of_frames: u32`, `descriptor: u8`, `magic: u32`.
pub const FOOTER_LEN: usize = 9;
/// Length of the skippable frame header: `magic: u32`, `frame size: u32`.
const SKIPPABLE_HEADER_LEN: usize = 8;
/// Descriptor bit 7: each entry carries a checksum.
const CHECKSUM_FLAG: u8 = 0x80;
/// Descriptor bits 2–6: reserved, must be zero.
const RESERVED_BITS: u8 = 0x7C;

/// The default target of decompressed bytes per frame: the smallest of 1, 2, 4, 8 MiB that keeps
/// a real NAR within 2% of single-frame zstd at level 3. Measured on CPython 3.11's
/// `lib/python3.11` (582 MiB NAR, 46267 files; single frame 139.5 MB): 1 MiB +5.7%, 2 MiB +2.5%,
/// 4 MiB +0.6% (+1.5% with a [`SeekableWriter::boundary_hint`] at every file), 8 MiB +0.0%.
pub const DEFAULT_FRAME_SIZE: usize = 4 << 20;
/// The largest frame size the writer accepts (entries are `u32`; this leaves room for zstd's
/// worst-case expansion).
pub const MAX_FRAME_SIZE: usize = 1 << 30;
/// The most frames one seek table can describe (its frame size field is a `u32`).
const MAX_FRAMES: u64 = (u32::MAX as u64 - FOOTER_LEN as u64) / 8;

/// What can be wrong with a seek table, or with the bytes given to decode a range.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SeekableError {
    /// The tail given is shorter than the seek table; fetch at least `needed` bytes from the end.
    #[error(
        "the last {got} bytes of the object do not hold its seek table: {needed} bytes are needed"
    )]
    TailTooShort { needed: u64, got: usize },
    /// The object does not end with the seekable magic number: not a seekable zstd object.
    #[error(
        "not a seekable zstd object: it ends with {found:#010x}, not the seekable magic 0x8f92eab1"
    )]
    BadSeekableMagic { found: u32 },
    /// The seek table's skippable frame header is not where the footer says it starts.
    #[error("bad seek table: expected the skippable frame magic 0x184d2a5e at its start, found {found:#010x}")]
    BadSkippableMagic { found: u32 },
    /// The descriptor sets bits the format reserves.
    #[error("bad seek table: descriptor {descriptor:#04x} sets reserved bits")]
    ReservedBits { descriptor: u8 },
    /// The skippable frame's size field disagrees with the number of frames in the footer.
    #[error("bad seek table: its frame size field says {declared} bytes, but {frames} frames need {expected}")]
    TableSizeMismatch {
        declared: u32,
        frames: u32,
        expected: u64,
    },
    /// A frame entry has a compressed size of zero, which no zstd frame has.
    #[error("bad seek table: frame {index} has a compressed size of 0")]
    EmptyCompressedFrame { index: usize },
    /// The object's length disagrees with the seek table.
    #[error("the object is {object_len} bytes long, but its seek table describes {expected}")]
    ObjectLenMismatch { object_len: u64, expected: u64 },
    /// A decompressed range reaching past the end of the data.
    #[error("range {start}..{end} reaches past the end of the decompressed data ({len} bytes)")]
    RangeOutOfBounds { start: u64, end: u64, len: u64 },
    /// The compressed bytes given do not cover the frames needed.
    #[error(
        "the compressed bytes given end at {got} bytes, but the frames needed end at {needed}"
    )]
    CompressedTooShort { needed: u64, got: u64 },
    /// A frame does not decode (corrupt data, bad checksum).
    #[error("frame {index} (compressed bytes at {compressed_offset}) does not decode")]
    BadFrame {
        index: usize,
        compressed_offset: u64,
        #[source]
        source: io::Error,
    },
    /// A frame decodes to another length than the seek table says.
    #[error("frame {index} decodes to {actual} bytes, but the seek table says {expected}")]
    FrameLenMismatch {
        index: usize,
        expected: u32,
        actual: u64,
    },
    /// Writing the decoded bytes failed.
    #[error("cannot write the decompressed range")]
    Write(#[source] io::Error),
}

/// One frame of a seekable object: where its bytes are, and which decompressed bytes it holds.
///
/// See [`SeekTable`] for an example.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameEntry {
    /// Offset of the frame in the object.
    pub compressed_offset: u64,
    pub compressed_size: u32,
    /// Offset of the frame's first byte in the decompressed data.
    pub decompressed_offset: u64,
    pub decompressed_size: u32,
}

impl FrameEntry {
    /// The frame's bytes in the object.
    ///
    /// See [`SeekTable`] for an example.
    pub fn compressed_range(&self) -> Range<u64> {
        self.compressed_offset..self.compressed_offset + u64::from(self.compressed_size)
    }

    /// The decompressed bytes the frame holds.
    ///
    /// See [`SeekTable`] for an example.
    pub fn decompressed_range(&self) -> Range<u64> {
        self.decompressed_offset..self.decompressed_offset + u64::from(self.decompressed_size)
    }
}

/// The seek table of a seekable zstd object: its frames, in order.
///
/// ```
/// use std::io::Write as _;
/// use cachecore::seekable::{SeekableOptions, SeekableWriter};
/// let opts = SeekableOptions { frame_size: 1000, threads: 1, ..SeekableOptions::default() };
/// let mut w = SeekableWriter::new(Vec::new(), opts).unwrap();
/// w.write_all(&[7u8; 2500]).unwrap();
/// let (object, table) = w.finish().unwrap();
/// assert_eq!((table.len(), table.is_empty()), (3, false));
/// assert_eq!(table.decompressed_len(), 2500);
/// assert_eq!(table.object_len(), object.len() as u64);
/// assert_eq!(table.compressed_len() + table.seek_table_len(), table.object_len());
/// table.check_object_len(object.len() as u64).unwrap();
/// assert!(table.check_object_len(object.len() as u64 + 1).is_err());
/// let last = &table.frames()[2];
/// assert_eq!(last.decompressed_range(), 2000..2500);
/// assert_eq!(last.compressed_range().end, table.compressed_len());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeekTable {
    frames: Vec<FrameEntry>,
    /// Length of the seek table's skippable frame as found (or as it will be written).
    table_len: u64,
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(b)
}

impl SeekTable {
    /// How many bytes from the end of an object to fetch first: enough for the seek table of an
    /// object of up to 8191 frames (16 GiB of NAR at the default frame size). Clamp it to the
    /// object's length; if the table is larger, [`SeekTable::parse_from_tail`] says how much to
    /// fetch.
    ///
    /// See [`parse_from_tail`](Self::parse_from_tail) for an example.
    pub const fn footer_len_hint() -> usize {
        64 * 1024
    }

    /// Parses the seek table from `tail`, the last bytes of an object (any number of them; the
    /// whole object is fine). When `tail` is too short the error says how many bytes are needed.
    ///
    /// ```
    /// # use std::io::Write as _;
    /// use cachecore::seekable::{SeekTable, SeekableError};
    /// # use cachecore::seekable::{SeekableOptions, SeekableWriter};
    /// # let opts = SeekableOptions { frame_size: 1000, threads: 1, ..SeekableOptions::default() };
    /// # let mut w = SeekableWriter::new(Vec::new(), opts).unwrap();
    /// # w.write_all(&[7u8; 2500]).unwrap();
    /// # let (object, _) = w.finish().unwrap();
    /// // `object`: a seekable zstd object of 3 frames. Its tail holds the seek table.
    /// let tail = &object[object.len().saturating_sub(SeekTable::footer_len_hint())..];
    /// let table = SeekTable::parse_from_tail(tail).unwrap();
    /// assert_eq!(table.len(), 3);
    /// assert!(object.ends_with(&table.to_bytes()));
    /// // A tail too short says how much to fetch.
    /// match SeekTable::parse_from_tail(&object[object.len() - 10..]) {
    ///     Err(SeekableError::TailTooShort { needed, .. }) => assert_eq!(needed, table.seek_table_len()),
    ///     other => panic!("{other:?}"),
    /// }
    /// ```
    pub fn parse_from_tail(tail: &[u8]) -> Result<SeekTable, SeekableError> {
        if tail.len() < FOOTER_LEN {
            return Err(SeekableError::TailTooShort {
                needed: (SKIPPABLE_HEADER_LEN + FOOTER_LEN) as u64,
                got: tail.len(),
            });
        }
        let footer = &tail[tail.len() - FOOTER_LEN..];
        let magic = u32_at(footer, 5);
        if magic != SEEKABLE_MAGIC {
            return Err(SeekableError::BadSeekableMagic { found: magic });
        }
        let descriptor = footer[4];
        if descriptor & RESERVED_BITS != 0 {
            return Err(SeekableError::ReservedBits { descriptor });
        }
        let n_frames = u32_at(footer, 0);
        let entry_len: u64 = if descriptor & CHECKSUM_FLAG != 0 {
            12
        } else {
            8
        };
        // Fits in u64: at most 2^32 * 12 + 17.
        let content_len = u64::from(n_frames) * entry_len + FOOTER_LEN as u64;
        let table_len = content_len + SKIPPABLE_HEADER_LEN as u64;
        if (tail.len() as u64) < table_len {
            return Err(SeekableError::TailTooShort {
                needed: table_len,
                got: tail.len(),
            });
        }
        // table_len <= tail.len(), so it fits in usize.
        let table = &tail[tail.len() - table_len as usize..];
        let skippable = u32_at(table, 0);
        if skippable != SKIPPABLE_MAGIC {
            return Err(SeekableError::BadSkippableMagic { found: skippable });
        }
        let declared = u32_at(table, 4);
        if u64::from(declared) != content_len {
            return Err(SeekableError::TableSizeMismatch {
                declared,
                frames: n_frames,
                expected: content_len,
            });
        }
        let entries = &table[SKIPPABLE_HEADER_LEN..table.len() - FOOTER_LEN];
        let mut frames = Vec::with_capacity(n_frames as usize);
        let (mut c_off, mut d_off) = (0u64, 0u64);
        // Sums of at most 2^32 u32 values fit in u64 without overflow.
        for (index, entry) in entries.chunks_exact(entry_len as usize).enumerate() {
            let compressed_size = u32_at(entry, 0);
            let decompressed_size = u32_at(entry, 4);
            if compressed_size == 0 {
                return Err(SeekableError::EmptyCompressedFrame { index });
            }
            frames.push(FrameEntry {
                compressed_offset: c_off,
                compressed_size,
                decompressed_offset: d_off,
                decompressed_size,
            });
            c_off += u64::from(compressed_size);
            d_off += u64::from(decompressed_size);
        }
        Ok(SeekTable { frames, table_len })
    }

    /// Checks that an object of `object_len` bytes is exactly the frames plus the seek table.
    ///
    /// See [`SeekTable`] for an example.
    pub fn check_object_len(&self, object_len: u64) -> Result<(), SeekableError> {
        let expected = self.object_len();
        if object_len == expected {
            Ok(())
        } else {
            Err(SeekableError::ObjectLenMismatch {
                object_len,
                expected,
            })
        }
    }

    /// The frames, in order.
    ///
    /// See [`SeekTable`] for an example.
    pub fn frames(&self) -> &[FrameEntry] {
        &self.frames
    }

    /// Number of frames.
    ///
    /// See [`SeekTable`] for an example.
    pub fn len(&self) -> usize {
        self.frames.len()
    }

    /// Whether there are no frames.
    ///
    /// See [`SeekTable`] for an example.
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// Total decompressed length.
    ///
    /// See [`SeekTable`] for an example.
    pub fn decompressed_len(&self) -> u64 {
        self.frames.last().map_or(0, |f| f.decompressed_range().end)
    }

    /// Total length of the frames (the object without its seek table).
    ///
    /// See [`SeekTable`] for an example.
    pub fn compressed_len(&self) -> u64 {
        self.frames.last().map_or(0, |f| f.compressed_range().end)
    }

    /// Length of the seek table's skippable frame.
    ///
    /// See [`SeekTable`] for an example.
    pub fn seek_table_len(&self) -> u64 {
        self.table_len
    }

    /// Length of the whole object: frames plus seek table.
    ///
    /// See [`SeekTable`] for an example.
    pub fn object_len(&self) -> u64 {
        self.compressed_len() + self.table_len
    }

    fn check_range(&self, range: &Range<u64>) -> Result<(), SeekableError> {
        let len = self.decompressed_len();
        if range.end > len || range.start > range.end {
            return Err(SeekableError::RangeOutOfBounds {
                start: range.start,
                end: range.end,
                len,
            });
        }
        Ok(())
    }

    /// The frames holding any byte of the decompressed `range` (none for an empty range; the part
    /// of `range` past the end is ignored).
    ///
    /// ```
    /// # use std::io::Write as _;
    /// # use cachecore::seekable::{SeekableOptions, SeekableWriter};
    /// # let opts = SeekableOptions { frame_size: 1000, threads: 1, ..SeekableOptions::default() };
    /// # let mut w = SeekableWriter::new(Vec::new(), opts).unwrap();
    /// # w.write_all(&[7u8; 2500]).unwrap();
    /// # let (_, table) = w.finish().unwrap();
    /// // `table`: three frames of 1000, 1000 and 500 bytes.
    /// let covering = table.frames_covering(900..1100);
    /// assert_eq!(covering, &table.frames()[0..2]);
    /// assert_eq!(table.indices_covering(900..1100), 0..2);
    /// assert_eq!(table.indices_covering(2000..9999), 2..3); // past the end: ignored
    /// assert!(table.frames_covering(5..5).is_empty());
    /// ```
    pub fn frames_covering(&self, range: Range<u64>) -> &[FrameEntry] {
        &self.frames[self.indices_covering(range)]
    }

    /// The indices of [`SeekTable::frames_covering`].
    ///
    /// See [`frames_covering`](Self::frames_covering) for an example.
    pub fn indices_covering(&self, range: Range<u64>) -> Range<usize> {
        if range.start >= range.end {
            return 0..0;
        }
        let first = self
            .frames
            .partition_point(|f| f.decompressed_range().end <= range.start);
        let last = self
            .frames
            .partition_point(|f| f.decompressed_offset < range.end);
        if first >= last {
            return 0..0;
        }
        first..last
    }

    /// The bytes of the object to fetch to decode the decompressed `range`: those of
    /// [`SeekTable::frames_covering`]. Empty for an empty range.
    ///
    /// ```
    /// # use std::io::Write as _;
    /// # use cachecore::seekable::{SeekableOptions, SeekableWriter};
    /// # let opts = SeekableOptions { frame_size: 1000, threads: 1, ..SeekableOptions::default() };
    /// # let mut w = SeekableWriter::new(Vec::new(), opts).unwrap();
    /// # w.write_all(&[7u8; 2500]).unwrap();
    /// # let (_, table) = w.finish().unwrap();
    /// // `table`: three frames of 1000, 1000 and 500 bytes.
    /// let [first, second, _] = table.frames() else { unreachable!() };
    /// let fetch = table.compressed_range(900..1100).unwrap();
    /// assert_eq!(fetch, first.compressed_offset..second.compressed_range().end);
    /// assert_eq!(table.compressed_range(7..7).unwrap(), 0..0);
    /// assert!(table.compressed_range(0..2501).is_err()); // past the end
    /// ```
    pub fn compressed_range(&self, range: Range<u64>) -> Result<Range<u64>, SeekableError> {
        self.check_range(&range)?;
        Ok(match self.frames_covering(range) {
            [] => 0..0,
            [first, .., last] => first.compressed_offset..last.compressed_range().end,
            [only] => only.compressed_range(),
        })
    }

    /// The seek table as it is written at the end of an object (without entry checksums).
    ///
    /// See [`parse_from_tail`](Self::parse_from_tail) for an example.
    pub fn to_bytes(&self) -> Vec<u8> {
        let content_len = self.frames.len() * 8 + FOOTER_LEN;
        let mut out = Vec::with_capacity(SKIPPABLE_HEADER_LEN + content_len);
        out.extend_from_slice(&SKIPPABLE_MAGIC.to_le_bytes());
        // The writer refuses more than MAX_FRAMES frames, so these fit.
        out.extend_from_slice(&(content_len as u32).to_le_bytes());
        for f in &self.frames {
            out.extend_from_slice(&f.compressed_size.to_le_bytes());
            out.extend_from_slice(&f.decompressed_size.to_le_bytes());
        }
        out.extend_from_slice(&(self.frames.len() as u32).to_le_bytes());
        out.push(0);
        out.extend_from_slice(&SEEKABLE_MAGIC.to_le_bytes());
        out
    }

    fn push(&mut self, compressed_size: u32, decompressed_size: u32) {
        let (c, d) = (self.compressed_len(), self.decompressed_len());
        self.frames.push(FrameEntry {
            compressed_offset: c,
            compressed_size,
            decompressed_offset: d,
            decompressed_size,
        });
        self.table_len = (SKIPPABLE_HEADER_LEN + FOOTER_LEN + 8 * self.frames.len()) as u64;
    }
}

/// Decodes the decompressed `range` into `out`. `compressed` holds the object's bytes from the
/// start of the first frame covering `range` (see [`SeekTable::compressed_range`]) and at least to
/// the end of the last one. Each frame needed is decoded whole, so its length and checksum are
/// checked. Returns the number of bytes written (the range's length).
///
/// ```
/// # use std::io::Write as _;
/// use cachecore::seekable::decompress_range_to;
/// # use cachecore::seekable::{SeekableOptions, SeekableWriter};
/// # let data: Vec<u8> = (0..2500u32).map(|i| (i * 7919 % 251) as u8).collect();
/// # let opts = SeekableOptions { frame_size: 1000, threads: 1, ..SeekableOptions::default() };
/// # let mut w = SeekableWriter::new(Vec::new(), opts).unwrap();
/// # w.write_all(&data).unwrap();
/// # let (object, table) = w.finish().unwrap();
/// // `object` holds `data` in frames of 1000 bytes; fetch only the frames needed.
/// let fetch = table.compressed_range(900..1100).unwrap();
/// let bytes = &object[fetch.start as usize..fetch.end as usize];
/// let mut out = Vec::new();
/// assert_eq!(decompress_range_to(&table, bytes, 900..1100, &mut out).unwrap(), 200);
/// assert_eq!(out, &data[900..1100]);
/// ```
pub fn decompress_range_to(
    table: &SeekTable,
    compressed: &[u8],
    range: Range<u64>,
    out: &mut impl Write,
) -> Result<u64, SeekableError> {
    table.check_range(&range)?;
    let indices = table.indices_covering(range.clone());
    let Some(first) = table
        .frames
        .get(indices.start)
        .filter(|_| !indices.is_empty())
    else {
        return Ok(0);
    };
    let base = first.compressed_offset;
    let mut written = 0u64;
    for index in indices {
        let frame = &table.frames[index];
        let c = frame.compressed_range();
        let (start, end) = (c.start - base, c.end - base);
        if end > compressed.len() as u64 {
            return Err(SeekableError::CompressedTooShort {
                needed: end,
                got: compressed.len() as u64,
            });
        }
        // Both fit in usize: end <= compressed.len().
        let bytes = &compressed[start as usize..end as usize];
        let d = frame.decompressed_range();
        let wanted = range.start.max(d.start) - d.start..range.end.min(d.end) - d.start;
        let take = wanted.end - wanted.start;
        decode_frame_to(index, frame, bytes, wanted, out)?;
        written += take;
    }
    Ok(written)
}

/// Decodes one whole frame, number `index` of its table (`bytes`: exactly its compressed bytes,
/// as the seek table places them) and writes the bytes `wanted` of its decompressed content (relative to the frame's
/// start) to `out`. The frame is checked as in [`decompress_range_to`]: it must decode (with its
/// checksum, if it has one) to exactly its decompressed size and end exactly at its end.
///
/// ```
/// # use std::io::Write as _;
/// use cachecore::seekable::decompress_frame_to;
/// # use cachecore::seekable::{SeekableOptions, SeekableWriter};
/// # let data: Vec<u8> = (0..2500u32).map(|i| (i * 7919 % 251) as u8).collect();
/// # let opts = SeekableOptions { frame_size: 1000, threads: 1, ..SeekableOptions::default() };
/// # let mut w = SeekableWriter::new(Vec::new(), opts).unwrap();
/// # w.write_all(&data).unwrap();
/// # let (object, table) = w.finish().unwrap();
/// // `object` holds `data` in frames of 1000 bytes: read bytes 10..20 of frame 1.
/// let frame = &table.frames()[1];
/// let r = frame.compressed_range();
/// let mut out = Vec::new();
/// decompress_frame_to(1, frame, &object[r.start as usize..r.end as usize], 10..20, &mut out).unwrap();
/// assert_eq!(out, &data[1010..1020]);
/// // Anything but the frame's exact bytes is refused.
/// assert!(decompress_frame_to(1, frame, &object[..r.end as usize], 0..1, &mut out).is_err());
/// ```
pub fn decompress_frame_to(
    index: usize,
    frame: &FrameEntry,
    bytes: &[u8],
    wanted: Range<u64>,
    out: &mut impl Write,
) -> Result<(), SeekableError> {
    exact_slot(frame, bytes)?;
    decode_frame_to(index, frame, bytes, wanted, out)
}

/// Decodes all of frame number `index` (`bytes`: exactly its compressed bytes, as the seek
/// table places them) into `out`, which is cleared first and then holds the frame's
/// decompressed size. Checked as [`decompress_frame_to`] checks, but decoded in one call
/// straight into `out` by this thread's reused decoder: no streaming window to allocate and
/// fill, no copy through a buffer — what a reader that keeps whole frames wants.
///
/// ```
/// # use std::io::Write as _;
/// use cachecore::seekable::decompress_whole_frame;
/// # use cachecore::seekable::{SeekableOptions, SeekableWriter};
/// # let data: Vec<u8> = (0..2500u32).map(|i| (i * 7919 % 251) as u8).collect();
/// # let opts = SeekableOptions { frame_size: 1000, threads: 1, ..SeekableOptions::default() };
/// # let mut w = SeekableWriter::new(Vec::new(), opts).unwrap();
/// # w.write_all(&data).unwrap();
/// # let (object, table) = w.finish().unwrap();
/// let frame = &table.frames()[1];
/// let r = frame.compressed_range();
/// let mut out = Vec::new();
/// decompress_whole_frame(1, frame, &object[r.start as usize..r.end as usize], &mut out).unwrap();
/// assert_eq!(out, &data[1000..2000]);
/// // Anything but the frame's exact bytes is refused: more, less, or two frames.
/// assert!(decompress_whole_frame(1, frame, &object[r.start as usize..], &mut out).is_err());
/// assert!(decompress_whole_frame(1, frame, &object[r.start as usize..r.end as usize - 1], &mut out).is_err());
/// let two = [&object[r.start as usize..r.end as usize], &object[r.start as usize..r.end as usize]].concat();
/// let doubled = cachecore::seekable::FrameEntry { compressed_size: two.len() as u32, decompressed_size: 2000, ..*frame };
/// assert!(decompress_whole_frame(1, &doubled, &two, &mut out).is_err());
/// // A table that lies about the frame's decompressed size, either way.
/// let slot = &object[r.start as usize..r.end as usize];
/// for lie in [999, 1001] {
///     let lying = cachecore::seekable::FrameEntry { decompressed_size: lie, ..*frame };
///     assert!(decompress_whole_frame(1, &lying, slot, &mut out).is_err());
/// }
/// ```
pub fn decompress_whole_frame(
    index: usize,
    frame: &FrameEntry,
    bytes: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), SeekableError> {
    thread_local! {
        static DECODER: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
            const { std::cell::RefCell::new(None) };
    }
    exact_slot(frame, bytes)?;
    let bad_frame = |source| bad_frame(index, frame, source);
    // One frame, filling its slot (one call would decode every frame in `bytes`).
    if zstd::zstd_safe::find_frame_compressed_size(bytes) != Ok(bytes.len()) {
        return Err(bad_frame(io::Error::new(
            io::ErrorKind::InvalidData,
            "its slot does not hold exactly one zstd frame",
        )));
    }
    out.clear();
    out.reserve_exact(frame.decompressed_size as usize);
    let decoded = DECODER.with(|d| -> io::Result<usize> {
        let mut d = d.borrow_mut();
        let decoder = match &mut *d {
            Some(decoder) => decoder,
            none => none.insert(zstd::bulk::Decompressor::new()?),
        };
        // Fails when the content would not fit in the frame's decompressed size.
        decoder.decompress_to_buffer(bytes, out)
    });
    match decoded {
        Ok(n) if n as u64 == u64::from(frame.decompressed_size) => Ok(()),
        Ok(n) => Err(SeekableError::FrameLenMismatch {
            index,
            expected: frame.decompressed_size,
            actual: n as u64,
        }),
        Err(e) => Err(bad_frame(e)),
    }
}

/// Whether `bytes` are as long as `frame`'s slot in the object.
fn exact_slot(frame: &FrameEntry, bytes: &[u8]) -> Result<(), SeekableError> {
    if bytes.len() as u64 == u64::from(frame.compressed_size) {
        Ok(())
    } else {
        Err(SeekableError::CompressedTooShort {
            needed: u64::from(frame.compressed_size),
            got: bytes.len() as u64,
        })
    }
}

/// Frame number `index`, `frame`, does not decode: `source` says why.
fn bad_frame(index: usize, frame: &FrameEntry, source: io::Error) -> SeekableError {
    SeekableError::BadFrame {
        index,
        compressed_offset: frame.compressed_offset,
        source,
    }
}

/// Decodes frame number `index` and writes its bytes `wanted` to `out`.
fn decode_frame_to(
    index: usize,
    frame: &FrameEntry,
    bytes: &[u8],
    wanted: Range<u64>,
    out: &mut impl Write,
) -> Result<(), SeekableError> {
    let bad_frame = |source| bad_frame(index, frame, source);
    let mut decoder = zstd::stream::read::Decoder::with_buffer(bytes)
        .map_err(bad_frame)?
        .single_frame();
    let mut sink = RangeSink {
        out,
        pos: 0,
        skip: wanted.start,
        take: wanted.end.saturating_sub(wanted.start),
        write_error: None,
    };
    let copied = io::copy(&mut decoder, &mut sink);
    if let Some(e) = sink.write_error {
        return Err(SeekableError::Write(e));
    }
    let actual = copied.map_err(bad_frame)?;
    if actual != u64::from(frame.decompressed_size) {
        return Err(SeekableError::FrameLenMismatch {
            index,
            expected: frame.decompressed_size,
            actual,
        });
    }
    // The frame must end where the seek table says: no trailing bytes in its slot.
    if !decoder.finish().is_empty() {
        return Err(bad_frame(io::Error::new(
            io::ErrorKind::InvalidData,
            "the frame ends before the compressed size the seek table gives it",
        )));
    }
    Ok(())
}

/// [`decompress_range_to`] into a new vector.
///
/// See the [module docs](self) for an example.
pub fn decompress_range(
    table: &SeekTable,
    compressed: &[u8],
    range: Range<u64>,
) -> Result<Vec<u8>, SeekableError> {
    table.check_range(&range)?;
    // Bounded by the caller's range, which check_range bounded by the table; reserve at most
    // 64 MiB up front in case the table lies.
    let len = (range.end - range.start).min(64 << 20) as usize;
    let mut out = Vec::with_capacity(len);
    decompress_range_to(table, compressed, range, &mut out)?;
    Ok(out)
}

/// Passes on the bytes `skip..skip + take` of what is written to it, counts everything.
struct RangeSink<'a, W: Write> {
    out: &'a mut W,
    pos: u64,
    skip: u64,
    take: u64,
    /// An error from `out` (told apart from decoding errors, which come through `io::copy` too).
    write_error: Option<io::Error>,
}

impl<W: Write> Write for RangeSink<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let start = self.pos;
        let end = start + buf.len() as u64;
        let (lo, hi) = (self.skip.max(start), (self.skip + self.take).min(end));
        if lo < hi {
            let piece = &buf[(lo - start) as usize..(hi - start) as usize];
            if let Err(e) = self.out.write_all(piece) {
                let kind = e.kind();
                self.write_error = Some(e);
                return Err(io::Error::new(
                    kind,
                    "writing the decompressed range failed",
                ));
            }
        }
        self.pos = end;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// How [`SeekableWriter`] compresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeekableOptions {
    /// zstd level (1–22; negative levels are zstd's fast levels).
    pub level: i32,
    /// Target decompressed bytes per frame (1 byte to [`MAX_FRAME_SIZE`]).
    pub frame_size: usize,
    /// Worker threads compressing frames (1 compresses on the caller's thread).
    pub threads: usize,
}

impl Default for SeekableOptions {
    /// Level 3, [`DEFAULT_FRAME_SIZE`], one thread per CPU up to 8.
    fn default() -> Self {
        SeekableOptions {
            // The one import back from `compression` (which builds on this module's writer),
            // kept: `compression` is the one place compression levels are chosen.
            level: crate::compression::DEFAULT_ZSTD_LEVEL,
            frame_size: DEFAULT_FRAME_SIZE,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get().min(8)),
        }
    }
}

/// A frame to compress: its sequence number and bytes.
struct Job {
    seq: u64,
    data: Vec<u8>,
}

/// A compressed frame, with the input buffer handed back for reuse.
struct Done {
    seq: u64,
    compressed: io::Result<Vec<u8>>,
    data: Vec<u8>,
}

fn compressor(level: i32) -> io::Result<zstd::bulk::Compressor<'static>> {
    let mut c = zstd::bulk::Compressor::new(level)?;
    c.include_checksum(true)?;
    c.include_contentsize(true)?;
    Ok(c)
}

/// Worker threads compressing frames; closed and joined on drop.
struct Pool {
    jobs: Option<SyncSender<Job>>,
    done: Receiver<Done>,
    handles: Vec<JoinHandle<()>>,
}

impl Pool {
    fn new(threads: usize, level: i32) -> io::Result<Pool> {
        let (job_tx, job_rx) = mpsc::sync_channel::<Job>(threads);
        let job_rx = Arc::new(Mutex::new(job_rx));
        let (done_tx, done_rx) = mpsc::channel::<Done>();
        let mut pool = Pool {
            jobs: Some(job_tx),
            done: done_rx,
            handles: Vec::with_capacity(threads),
        };
        for i in 0..threads {
            let job_rx = Arc::clone(&job_rx);
            let done_tx: Sender<Done> = done_tx.clone();
            let handle = std::thread::Builder::new()
                .name(format!("seekable-zstd-{i}"))
                .spawn(move || worker(level, &job_rx, &done_tx))?;
            pool.handles.push(handle);
        }
        Ok(pool)
    }
}

fn worker(level: i32, jobs: &Mutex<Receiver<Job>>, done: &Sender<Done>) {
    let mut ctx = compressor(level);
    loop {
        // Hold the lock only to take one job.
        let job = match jobs.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok(Job { seq, data }) = job else {
            return; // the writer is gone
        };
        let compressed = match &mut ctx {
            Ok(c) => catch_unwind(AssertUnwindSafe(|| c.compress(&data)))
                .unwrap_or_else(|_| Err(io::Error::other("a zstd worker thread panicked"))),
            Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
        };
        if done
            .send(Done {
                seq,
                compressed,
                data,
            })
            .is_err()
        {
            return;
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        drop(self.jobs.take());
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("threads", &self.handles.len())
            .finish()
    }
}

/// How frames get compressed: on the caller's thread, or by a pool.
enum Engine {
    Inline(zstd::bulk::Compressor<'static>),
    Pool(Pool),
}

impl fmt::Debug for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Engine::Inline(_) => f.write_str("Inline"),
            Engine::Pool(p) => p.fmt(f),
        }
    }
}

/// Compresses a stream into the seekable zstd format (see the [module docs](self)).
///
/// Input is cut into frames of [`SeekableOptions::frame_size`] decompressed bytes (or fewer, where
/// [`SeekableWriter::boundary_hint`] ends one early); frames are compressed on
/// [`SeekableOptions::threads`] worker threads and written to `out` in order, as soon as they are
/// ready. Memory stays near `(threads + 2) × frame_size`. The output depends only on the input,
/// the level, the frame size and the hints — never on the number of threads.
///
/// Call [`SeekableWriter::finish`] to write the last frame and the seek table; dropping the
/// writer instead leaves `out` truncated (the worker threads are stopped and joined either way).
///
/// See [`SeekableWriter::new`] and the [module docs](self) for examples.
#[derive(Debug)]
pub struct SeekableWriter<W: Write> {
    out: W,
    opts: SeekableOptions,
    engine: Engine,
    /// The frame being filled.
    buf: Vec<u8>,
    /// Input buffers handed back by the workers, for reuse.
    spare: Vec<Vec<u8>>,
    /// Sequence number of the next frame submitted, and of the next one to write out.
    next_seq: u64,
    next_write: u64,
    /// Frames compressed out of order, waiting for their turn.
    ready: BTreeMap<u64, (Vec<u8>, u32)>,
    /// Decompressed sizes of the frames being compressed, by sequence number.
    in_flight: BTreeMap<u64, u32>,
    table: SeekTable,
    /// The sha256 of each frame written, compressed (see [`SeekableWriter::finish_with_digests`]).
    digests: Vec<[u8; 32]>,
    /// Set after an error: the output is unusable.
    failed: bool,
    /// Decompressed bytes taken in so far.
    pos: u64,
    /// Offsets marked through [`SeekableWriter::boundaries`], not yet reached.
    marks: Boundaries,
}

/// A handle for marking, ahead of the data, decompressed offsets where a frame may end (in a
/// NAR: where a file's entry starts). Cloned out of a [`SeekableWriter`] with
/// [`SeekableWriter::boundaries`], so a producer further up a chain of writers can mark offsets
/// before its bytes reach the compressor. Marks must come in increasing order; a mark the
/// writer has already passed is ignored.
///
/// See [`SeekableWriter::boundaries`] for an example.
#[derive(Debug, Clone, Default)]
pub struct Boundaries(Arc<Mutex<std::collections::VecDeque<u64>>>);

impl Boundaries {
    /// Marks `offset` (in decompressed bytes from the start of the stream).
    ///
    /// See [`SeekableWriter::boundaries`] for an example.
    pub fn mark(&self, offset: u64) {
        if let Ok(mut q) = self.0.lock() {
            q.push_back(offset);
        }
    }

    /// The first mark at or after `pos`, dropping the ones before it.
    fn next_from(&self, pos: u64) -> Option<u64> {
        let mut q = self.0.lock().ok()?;
        while q.front().is_some_and(|&m| m < pos) {
            q.pop_front();
        }
        q.front().copied()
    }

    fn pop(&self) {
        if let Ok(mut q) = self.0.lock() {
            q.pop_front();
        }
    }
}

impl<W: Write> SeekableWriter<W> {
    /// A writer compressing into `out`. Fails on options out of range, or if the worker threads
    /// cannot be started.
    ///
    /// ```
    /// use std::io::Write as _;
    /// use cachecore::seekable::{SeekableOptions, SeekableWriter};
    /// let opts = SeekableOptions { frame_size: 1000, threads: 1, ..SeekableOptions::default() };
    /// let mut w = SeekableWriter::new(Vec::new(), opts.clone()).unwrap();
    /// w.write_all(&[1u8; 2500]).unwrap();
    /// assert_eq!(w.table().len(), 2); // the frames written so far
    /// let (object, table) = w.finish().unwrap();
    /// assert_eq!(zstd::decode_all(&object[..]).unwrap(), [1u8; 2500]);
    /// assert_eq!(table.len(), 3);
    /// assert!(SeekableWriter::new(Vec::new(), SeekableOptions { frame_size: 0, ..opts }).is_err());
    /// ```
    pub fn new(out: W, opts: SeekableOptions) -> io::Result<Self> {
        if opts.frame_size == 0 || opts.frame_size > MAX_FRAME_SIZE {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "seekable zstd frame size {} is out of range (1 to {MAX_FRAME_SIZE} bytes)",
                    opts.frame_size
                ),
            ));
        }
        let levels = zstd::compression_level_range();
        if !levels.contains(&opts.level) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "zstd level {} is out of range ({} to {})",
                    opts.level,
                    levels.start(),
                    levels.end()
                ),
            ));
        }
        let threads = opts.threads.clamp(1, 256);
        let engine = if threads == 1 {
            Engine::Inline(compressor(opts.level)?)
        } else {
            Engine::Pool(Pool::new(threads, opts.level)?)
        };
        let table = SeekTable {
            frames: Vec::new(),
            table_len: (SKIPPABLE_HEADER_LEN + FOOTER_LEN) as u64,
        };
        Ok(SeekableWriter {
            out,
            opts: SeekableOptions { threads, ..opts },
            engine,
            buf: Vec::new(),
            spare: Vec::new(),
            next_seq: 0,
            next_write: 0,
            ready: BTreeMap::new(),
            in_flight: BTreeMap::new(),
            table,
            digests: Vec::new(),
            failed: false,
            pos: 0,
            marks: Boundaries::default(),
        })
    }

    /// A handle to mark, ahead of the data, offsets where [`SeekableWriter::boundary_hint`]
    /// should be applied once the input reaches them.
    ///
    /// ```
    /// use std::io::Write as _;
    /// use cachecore::seekable::{SeekableOptions, SeekableWriter};
    /// let opts = SeekableOptions { frame_size: 1000, threads: 1, ..SeekableOptions::default() };
    /// let mut w = SeekableWriter::new(Vec::new(), opts).unwrap();
    /// let marks = w.boundaries(); // for a producer further up the chain
    /// marks.mark(900); // ahead of the data: a file starts there
    /// w.write_all(&[0u8; 2000]).unwrap();
    /// let (_, table) = w.finish().unwrap();
    /// let sizes: Vec<u32> = table.frames().iter().map(|f| f.decompressed_size).collect();
    /// assert_eq!(sizes, [900, 1000, 100]);
    /// ```
    pub fn boundaries(&self) -> Boundaries {
        self.marks.clone()
    }

    /// Tells the writer that a good place to end a frame is here (in a NAR, where a file's
    /// contents start). It ends the current frame if that frame already holds at least 3/4 of
    /// the frame size, so reading one file needs fewer frames; otherwise it does nothing.
    ///
    /// (3/4 rather than 1/2: on CPython's library NAR, hints at every file cost +2.1% in size
    /// with 4 MiB frames ended past 1/2, +1.5% past 3/4.)
    ///
    /// ```
    /// use std::io::Write as _;
    /// use cachecore::seekable::{SeekableOptions, SeekableWriter};
    /// let opts = SeekableOptions { frame_size: 1000, threads: 1, ..SeekableOptions::default() };
    /// let mut w = SeekableWriter::new(Vec::new(), opts).unwrap();
    /// w.write_all(&[0u8; 800]).unwrap();
    /// w.boundary_hint().unwrap(); // 800 ≥ 3/4 of the frame size: the frame ends here
    /// w.write_all(&[1u8; 100]).unwrap();
    /// w.boundary_hint().unwrap(); // 100 bytes: too early, ignored
    /// w.write_all(&[2u8; 100]).unwrap();
    /// let (_, table) = w.finish().unwrap();
    /// let sizes: Vec<u32> = table.frames().iter().map(|f| f.decompressed_size).collect();
    /// assert_eq!(sizes, [800, 200]);
    /// ```
    pub fn boundary_hint(&mut self) -> io::Result<()> {
        self.check_usable()?;
        // frame_size <= 2^30, so this does not overflow.
        if self.buf.len() * 4 >= self.opts.frame_size * 3 {
            self.submit()?;
        }
        Ok(())
    }

    /// The seek table of the frames written to `out` so far.
    ///
    /// See [`SeekableWriter::new`] for an example.
    pub fn table(&self) -> &SeekTable {
        &self.table
    }

    /// Compresses what is buffered, writes every frame and then the seek table, flushes `out`
    /// and returns it with the seek table. An input that fit in one frame gets no seek table
    /// (its [`SeekTable::seek_table_len`] is 0): the object is a plain zstd frame.
    ///
    /// ```
    /// use std::io::Write as _;
    /// use cachecore::seekable::{SeekableOptions, SeekableWriter};
    /// let mut w = SeekableWriter::new(Vec::new(), SeekableOptions::default()).unwrap();
    /// w.write_all(b"a small NAR").unwrap();
    /// // One frame: a plain zstd frame, without a seek table.
    /// let (object, table) = w.finish().unwrap();
    /// assert_eq!((table.len(), table.seek_table_len()), (1, 0));
    /// assert_eq!(zstd::decode_all(&object[..]).unwrap(), b"a small NAR");
    /// ```
    pub fn finish(self) -> io::Result<(W, SeekTable)> {
        self.finish_with_digests()
            .map(|(out, table, _)| (out, table))
    }

    /// [`SeekableWriter::finish`], also returning the sha256 of each frame as written
    /// (compressed), in order: what signed frame digests are made of
    /// ([`crate::access::frame_digests`]).
    ///
    /// ```
    /// use std::io::Write as _;
    /// use cachecore::seekable::{SeekableOptions, SeekableWriter};
    /// use sha2::Digest as _;
    /// let opts = SeekableOptions { frame_size: 1000, threads: 2, ..SeekableOptions::default() };
    /// let mut w = SeekableWriter::new(Vec::new(), opts).unwrap();
    /// w.write_all(&[7u8; 2500]).unwrap();
    /// let (object, table, digests) = w.finish_with_digests().unwrap();
    /// assert_eq!(digests.len(), table.len());
    /// let second = table.frames()[1].compressed_range();
    /// let actual: [u8; 32] = sha2::Sha256::digest(&object[second.start as usize..second.end as usize]).into();
    /// assert_eq!(digests[1], actual);
    /// ```
    pub fn finish_with_digests(mut self) -> io::Result<(W, SeekTable, Vec<[u8; 32]>)> {
        self.check_usable()?;
        if self.next_seq == 0 {
            // The only frame (an empty input still gets one, so the object starts like any .zst
            // file).
            let result = self.write_only_frame();
            if result.is_err() {
                self.failed = true;
            }
            result?;
        } else if !self.buf.is_empty() {
            self.submit()?;
        }
        while self.next_write < self.next_seq {
            self.wait_one()?;
        }
        if self.table.len() > 1 {
            let bytes = self.table.to_bytes();
            debug_assert_eq!(bytes.len() as u64, self.table.table_len);
            self.out.write_all(&bytes)?;
        } else {
            // One frame: nothing to seek in (see the module docs).
            self.table.table_len = 0;
        }
        self.out.flush()?;
        let SeekableWriter {
            out,
            table,
            digests,
            ..
        } = self;
        Ok((out, table, digests))
    }

    /// Compresses the buffer as the object's one frame, without a checksum: like Nix's own
    /// `.nar.zst`, it is read whole, and the narinfo's FileHash and NarHash cover it (on a
    /// 100-byte NAR the 4 bytes are 3% of the object).
    fn write_only_frame(&mut self) -> io::Result<()> {
        let data = std::mem::take(&mut self.buf);
        let compressed = match &mut self.engine {
            Engine::Inline(c) => {
                c.include_checksum(false)?;
                let compressed = c.compress(&data);
                c.include_checksum(true)?;
                compressed?
            }
            Engine::Pool(_) => {
                let mut c = compressor(self.opts.level)?;
                c.include_checksum(false)?;
                c.compress(&data)?
            }
        };
        // frame_size <= MAX_FRAME_SIZE < u32::MAX.
        self.write_frame(&compressed, data.len() as u32)?;
        self.next_seq = 1;
        self.next_write = 1;
        Ok(())
    }

    fn check_usable(&self) -> io::Result<()> {
        if self.failed {
            Err(io::Error::other(
                "the seekable zstd writer failed earlier; its output is incomplete",
            ))
        } else {
            Ok(())
        }
    }

    /// Sends the current frame to be compressed (or compresses it, with one thread), writing out
    /// whatever frames are ready; blocks while `threads` frames are in flight.
    fn submit(&mut self) -> io::Result<()> {
        let result = self.submit_inner();
        if result.is_err() {
            self.failed = true;
        }
        result
    }

    fn submit_inner(&mut self) -> io::Result<()> {
        if self.next_seq >= MAX_FRAMES {
            return Err(io::Error::other(format!(
                "seekable zstd: more than {MAX_FRAMES} frames; use a larger frame size"
            )));
        }
        let spare = self.spare.pop().unwrap_or_default();
        let data = std::mem::replace(&mut self.buf, spare);
        // frame_size <= MAX_FRAME_SIZE < u32::MAX.
        let len = data.len() as u32;
        let seq = self.next_seq;
        self.next_seq += 1;
        if let Engine::Inline(c) = &mut self.engine {
            let compressed = c.compress(&data)?;
            self.spare.push(reset(data));
            self.write_frame(&compressed, len)?;
            self.next_write += 1;
            return Ok(());
        }
        // Frames submitted and not yet written (compressing, or compressed and waiting for an
        // earlier one): at most threads + 1, so memory stays near (threads + 2) frames.
        while seq - self.next_write > self.opts.threads as u64 {
            self.wait_one()?;
        }
        self.in_flight.insert(seq, len);
        let sent = match &self.engine {
            Engine::Pool(pool) => pool.jobs.as_ref().map(|tx| tx.send(Job { seq, data })),
            Engine::Inline(_) => None,
        };
        if !matches!(sent, Some(Ok(()))) {
            return Err(io::Error::other("the zstd worker threads are gone"));
        }
        self.drain_ready()
    }

    /// Takes the results that are ready without blocking, writing out those whose turn it is.
    fn drain_ready(&mut self) -> io::Result<()> {
        loop {
            let Engine::Pool(pool) = &self.engine else {
                return Ok(());
            };
            match pool.done.try_recv() {
                Ok(done) => self.accept(done)?,
                Err(mpsc::TryRecvError::Empty) => return Ok(()),
                Err(mpsc::TryRecvError::Disconnected) => {
                    return Err(io::Error::other("the zstd worker threads are gone"))
                }
            }
        }
    }

    /// Blocks until the next frame in order has been written out.
    fn wait_one(&mut self) -> io::Result<()> {
        let target = self.next_write + 1;
        while self.next_write < target {
            let Engine::Pool(pool) = &self.engine else {
                return Ok(());
            };
            let done = pool
                .done
                .recv()
                .map_err(|_| io::Error::other("the zstd worker threads are gone"))?;
            self.accept(done)?;
        }
        Ok(())
    }

    /// Files a finished frame, then writes out every frame whose turn has come.
    fn accept(&mut self, done: Done) -> io::Result<()> {
        let Done {
            seq,
            compressed,
            data,
        } = done;
        self.spare.push(reset(data));
        let compressed = compressed?;
        let len = self.in_flight.remove(&seq).unwrap_or(0);
        self.ready.insert(seq, (compressed, len));
        while let Some((compressed, len)) = self.ready.remove(&self.next_write) {
            self.write_frame(&compressed, len)?;
            self.next_write += 1;
        }
        Ok(())
    }

    fn write_frame(&mut self, compressed: &[u8], decompressed_len: u32) -> io::Result<()> {
        let compressed_len = u32::try_from(compressed.len())
            .map_err(|_| io::Error::other("a compressed zstd frame exceeds 4 GiB"))?;
        self.out.write_all(compressed)?;
        self.table.push(compressed_len, decompressed_len);
        self.digests.push(sha2::Sha256::digest(compressed).into());
        Ok(())
    }
}

/// An emptied buffer, for reuse.
fn reset(mut data: Vec<u8>) -> Vec<u8> {
    data.clear();
    data
}

impl<W: Write> Write for SeekableWriter<W> {
    fn write(&mut self, input: &[u8]) -> io::Result<usize> {
        self.check_usable()?;
        if input.is_empty() {
            return Ok(0);
        }
        let frame_size = self.opts.frame_size;
        if let Some(mark) = self.marks.next_from(self.pos) {
            if mark == self.pos {
                self.marks.pop();
                self.boundary_hint()?;
            }
        }
        if self.buf.capacity() < frame_size {
            self.buf.reserve_exact(frame_size - self.buf.len());
        }
        let mut n = input.len().min(frame_size - self.buf.len());
        // Stop at the next mark, so the next call starts there.
        if let Some(mark) = self.marks.next_from(self.pos) {
            if mark > self.pos && mark - self.pos < n as u64 {
                n = (mark - self.pos) as usize;
            }
        }
        self.buf.extend_from_slice(&input[..n]);
        self.pos += n as u64;
        if self.buf.len() == frame_size {
            self.submit()?;
        }
        Ok(n)
    }

    fn write_all(&mut self, mut input: &[u8]) -> io::Result<()> {
        while !input.is_empty() {
            let n = self.write(input)?;
            input = &input[n..];
        }
        Ok(())
    }

    /// Writes out the frames already compressed; the partial frame stays buffered (ending it
    /// would make frames depend on when the caller flushes).
    fn flush(&mut self) -> io::Result<()> {
        self.check_usable()?;
        let result = self.drain_ready().and_then(|()| self.out.flush());
        if result.is_err() {
            self.failed = true;
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read as _;
    use std::process::{Command, Stdio};

    /// Deterministic pseudo-random bytes (xorshift64*), incompressible.
    fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        let mut out = Vec::with_capacity(len + 8);
        while out.len() < len {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
        }
        out.truncate(len);
        out
    }

    /// Text-like bytes that compress well but not trivially.
    fn compressible_bytes(len: usize, seed: u64) -> Vec<u8> {
        let words: Vec<&[u8]> = vec![
            b"store ",
            b"path ",
            b"nix ",
            b"zstd ",
            b"frame ",
            b"seek ",
            b"table\n",
            b"0123 ",
            b"lib/python3.11/",
            b"def __init__(self):\n",
            b"    return None\n",
        ];
        let r = random_bytes(len, seed);
        let mut out = Vec::with_capacity(len + 32);
        let mut i = 0;
        while out.len() < len {
            out.extend_from_slice(words[usize::from(r[i % r.len().max(1)]) % words.len()]);
            i += 1;
        }
        out.truncate(len);
        out
    }

    fn opts(frame_size: usize, threads: usize) -> SeekableOptions {
        SeekableOptions {
            level: 3,
            frame_size,
            threads,
        }
    }

    /// Compresses `data`, written in pieces of `chunk` bytes, hinting at each offset in `hints`.
    fn compress(
        data: &[u8],
        o: SeekableOptions,
        chunk: usize,
        hints: &[usize],
    ) -> (Vec<u8>, SeekTable) {
        let mut w = SeekableWriter::new(Vec::new(), o).unwrap();
        let mut pos = 0;
        let mut hints = hints.iter().copied().peekable();
        while pos < data.len() {
            while hints.peek() == Some(&pos) {
                w.boundary_hint().unwrap();
                hints.next();
            }
            let mut end = (pos + chunk).min(data.len());
            if let Some(&h) = hints.peek() {
                end = end.min(h.max(pos + 1));
            }
            w.write_all(&data[pos..end]).unwrap();
            pos = end;
        }
        w.finish().unwrap()
    }

    fn check_object(data: &[u8], object: &[u8], table: &SeekTable) {
        // Decodes whole with the zstd crate's streaming decoder.
        let mut decoded = Vec::new();
        zstd::stream::read::Decoder::new(object)
            .unwrap()
            .read_to_end(&mut decoded)
            .unwrap();
        assert!(decoded == data, "stream decoding differs");
        if table.len() == 1 {
            // One frame and no table: a plain zstd frame, without a checksum (descriptor bit 2).
            assert_eq!(table.seek_table_len(), 0);
            assert_eq!(object[4] & 0x04, 0, "a lone frame has no checksum");
            assert!(SeekTable::parse_from_tail(object).is_err());
            assert_eq!(table.frames()[0].compressed_range(), 0..object.len() as u64);
            table.check_object_len(object.len() as u64).unwrap();
            assert_eq!(table.decompressed_len(), data.len() as u64);
            return;
        }
        // Frames of a seekable object carry a checksum.
        assert_eq!(object[4] & 0x04, 0x04, "frame 0 has a checksum");
        // The table written is the table parsed back, from the whole object or its exact tail.
        let parsed = SeekTable::parse_from_tail(object).unwrap();
        assert_eq!(&parsed, table);
        let tail = &object[object.len() - table.seek_table_len() as usize..];
        assert_eq!(&SeekTable::parse_from_tail(tail).unwrap(), table);
        parsed.check_object_len(object.len() as u64).unwrap();
        assert_eq!(parsed.decompressed_len(), data.len() as u64);
        // Every frame decodes to its entry.
        for f in parsed.frames() {
            let c = f.compressed_range();
            let frame = zstd::decode_all(&object[c.start as usize..c.end as usize]).unwrap();
            assert_eq!(frame.len(), f.decompressed_size as usize);
        }
        // The whole range through the range API.
        let all = 0..data.len() as u64;
        let cr = parsed.compressed_range(all.clone()).unwrap();
        let got =
            decompress_range(&parsed, &object[cr.start as usize..cr.end as usize], all).unwrap();
        assert!(got == data);
    }

    #[test]
    fn seekable_round_trips() {
        let fs = 64 * 1024;
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("empty", Vec::new()),
            ("one byte", vec![42]),
            ("exactly 3 frames", compressible_bytes(3 * fs, 1)),
            ("3 frames + 1", compressible_bytes(3 * fs + 1, 2)),
            ("random", random_bytes(5 * fs + 12345, 3)),
            ("compressible", compressible_bytes(7 * fs + 999, 4)),
            ("zeros", vec![0; 4 * fs + 7]),
        ];
        for (name, data) in &cases {
            for threads in [1, 3] {
                for chunk in [1000, 1 << 20] {
                    let (object, table) = compress(data, opts(fs, threads), chunk, &[]);
                    check_object(data, &object, &table);
                    let expected_frames = data.len().div_ceil(fs).max(1);
                    assert_eq!(table.len(), expected_frames, "{name}");
                }
            }
        }
    }

    #[test]
    fn seekable_empty_input_is_one_empty_frame() {
        let (object, table) = compress(&[], opts(1024, 2), 1, &[]);
        assert_eq!(table.len(), 1);
        assert_eq!(table.decompressed_len(), 0);
        assert!(
            object.starts_with(&0xFD2F_B528u32.to_le_bytes()),
            "starts like any .zst"
        );
        assert_eq!(zstd::decode_all(&object[..]).unwrap(), b"");
        assert!(decompress_range(&table, &object, 0..0).unwrap().is_empty());
        assert!(table.frames_covering(0..0).is_empty());
    }

    #[test]
    fn seekable_frames_are_complete_zstd_frames_with_content_size() {
        let data = compressible_bytes(300_000, 9);
        let (object, table) = compress(&data, opts(100_000, 2), 4096, &[]);
        for f in table.frames() {
            let c = f.compressed_range();
            let frame = &object[c.start as usize..c.end as usize];
            assert_eq!(
                zstd::zstd_safe::get_frame_content_size(frame).ok(),
                Some(Some(u64::from(f.decompressed_size)))
            );
            assert_eq!(
                zstd::zstd_safe::find_frame_compressed_size(frame),
                Ok(frame.len())
            );
        }
    }

    #[test]
    fn seekable_decodes_with_the_zstd_command() {
        let dir = tempfile::tempdir().unwrap();
        for (i, data) in [
            Vec::new(),
            vec![7u8],
            compressible_bytes(3 * 65536, 5),
            random_bytes(200_000, 6),
        ]
        .iter()
        .enumerate()
        {
            let (object, _) = compress(data, opts(65536, 2), 10_000, &[]);
            let file = dir.path().join(format!("x{i}.zst"));
            std::fs::write(&file, &object).unwrap();
            let out = match Command::new("zstd")
                .args(["-d", "-c", "-q"])
                .arg(&file)
                .stderr(Stdio::piped())
                .output()
            {
                Ok(out) => out,
                Err(e) => panic!(
                    "this test needs the zstd command (apt-get install -y zstd), which cannot be run: {e}"
                ),
            };
            assert!(
                out.status.success(),
                "zstd -d failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(out.stdout == *data, "zstd -d output differs for case {i}");
            // `zstd -t` checks every frame's checksum.
            let status = Command::new("zstd")
                .args(["-t", "-q"])
                .arg(&file)
                .status()
                .unwrap();
            assert!(status.success());
        }
    }

    #[test]
    fn seekable_output_does_not_depend_on_threads_or_write_sizes() {
        let data = compressible_bytes(2_000_000, 11);
        let hints: Vec<usize> = (0..data.len()).step_by(37_001).collect();
        let (one, t1) = compress(&data, opts(100_000, 1), 4096, &hints);
        for (threads, chunk) in [(2, 4096), (4, 1), (8, 1 << 20), (3, 65_537)] {
            if chunk == 1 {
                // Byte by byte on a smaller input keeps the test quick.
                let small = &data[..300_000];
                let small_hints: Vec<usize> =
                    hints.iter().copied().filter(|&h| h < small.len()).collect();
                let (a, _) = compress(small, opts(100_000, 1), 4096, &small_hints);
                let (b, _) = compress(small, opts(100_000, threads), chunk, &small_hints);
                assert!(a == b, "threads={threads} chunk={chunk}");
                continue;
            }
            let (many, tn) = compress(&data, opts(100_000, threads), chunk, &hints);
            assert_eq!(t1, tn);
            assert!(one == many, "threads={threads} chunk={chunk}");
        }
    }

    #[test]
    fn seekable_marks_made_ahead_of_the_data_end_frames_where_hints_would() {
        let data = compressible_bytes(1_000_000, 13);
        let fs = 100_000;
        let hints = [30_000, 80_000, 120_000, 160_000, 235_000, 250_000, 445_000];
        let (_, by_hint) = compress(&data, opts(fs, 2), 7_777, &hints);
        // The same offsets, marked before a single write of everything (and one stale mark).
        for threads in [1, 2] {
            let mut w = SeekableWriter::new(Vec::new(), opts(fs, threads)).unwrap();
            let marks = w.boundaries();
            for h in hints {
                marks.mark(h as u64);
            }
            w.write_all(&data[..50_000]).unwrap();
            marks.mark(10); // already passed: ignored
            w.write_all(&data[50_000..]).unwrap();
            let (object, table) = w.finish().unwrap();
            assert_eq!(table, by_hint, "threads={threads}");
            check_object(&data, &object, &table);
        }
    }

    #[test]
    fn seekable_boundary_hints_end_frames_past_three_quarters() {
        let data = compressible_bytes(1_000_000, 12);
        let fs = 100_000;
        // A hint ends a frame holding at least 75k: at 30k it is ignored, at 80k taken, at
        // 80k + 40k ignored, ...
        let hints = [30_000, 80_000, 120_000, 160_000, 235_000, 250_000, 445_000];
        let (object, table) = compress(&data, opts(fs, 2), 7_777, &hints);
        check_object(&data, &object, &table);
        let starts: Vec<u64> = table
            .frames()
            .iter()
            .map(|f| f.decompressed_offset)
            .collect();
        assert_eq!(
            &starts[..6],
            &[0, 80_000, 160_000, 235_000, 335_000, 435_000],
            "{starts:?}"
        );
        assert!(table
            .frames()
            .iter()
            .all(|f| f.decompressed_size as usize <= fs));
        // Hints at the very start and repeated hints are harmless.
        let mut w = SeekableWriter::new(Vec::new(), opts(fs, 2)).unwrap();
        w.boundary_hint().unwrap();
        w.write_all(&data[..75_000]).unwrap();
        w.boundary_hint().unwrap();
        w.boundary_hint().unwrap();
        w.write_all(&data[75_000..]).unwrap();
        let (object, table) = w.finish().unwrap();
        check_object(&data, &object, &table);
        assert_eq!(table.frames()[1].decompressed_offset, 75_000);
        assert_eq!(table.frames()[2].decompressed_offset, 175_000);
    }

    #[test]
    fn seekable_random_ranges_decode() {
        let data = compressible_bytes(1_500_000, 13);
        let hints: Vec<usize> = (0..data.len()).step_by(41_000).collect();
        let (object, table) = compress(&data, opts(64 * 1024, 2), 10_000, &hints);
        let r = random_bytes(16 * 500, 14);
        let len = data.len() as u64;
        let mut ranges: Vec<Range<u64>> = vec![0..0, 0..1, len - 1..len, 0..len, len..len];
        for f in table.frames() {
            let d = f.decompressed_range();
            ranges.push(d.clone());
            ranges.push(d.start.saturating_sub(1)..d.end.min(len));
            ranges.push(d.start..(d.start + 1).min(len));
        }
        for c in r.chunks_exact(16) {
            let a = u64::from_le_bytes(c[..8].try_into().unwrap()) % (len + 1);
            let span = u64::from_le_bytes(c[8..].try_into().unwrap()) % 200_000;
            ranges.push(a..(a + span).min(len));
        }
        for range in ranges {
            let cr = table.compressed_range(range.clone()).unwrap();
            let bytes = &object[cr.start as usize..cr.end as usize];
            let got = decompress_range(&table, bytes, range.clone()).unwrap();
            assert!(
                got == data[range.start as usize..range.end as usize],
                "range {range:?}"
            );
            let covering = table.frames_covering(range.clone());
            if range.is_empty() {
                assert!(covering.is_empty());
            } else {
                assert!(covering[0].decompressed_range().contains(&range.start));
                assert!(covering
                    .last()
                    .unwrap()
                    .decompressed_range()
                    .contains(&(range.end - 1)));
            }
            // Giving more bytes than needed (the rest of the object) is fine.
            let got =
                decompress_range(&table, &object[cr.start as usize..], range.clone()).unwrap();
            assert_eq!(got.len() as u64, range.end - range.start);
        }
    }

    #[test]
    fn seekable_range_errors() {
        let data = compressible_bytes(300_000, 15);
        let (object, table) = compress(&data, opts(100_000, 1), 10_000, &[]);
        assert!(matches!(
            table.compressed_range(0..300_001),
            Err(SeekableError::RangeOutOfBounds { len: 300_000, .. })
        ));
        assert!(matches!(
            decompress_range(&table, &object, Range { start: 5, end: 4 }),
            Err(SeekableError::RangeOutOfBounds { .. })
        ));
        // Too few compressed bytes.
        let cr = table.compressed_range(150_000..250_000).unwrap();
        let short = &object[cr.start as usize..cr.end as usize - 1];
        assert!(matches!(
            decompress_range(&table, short, 150_000..250_000),
            Err(SeekableError::CompressedTooShort { .. })
        ));
        // Corrupt bytes: an error naming the frame (the checksum or the decoder catches it).
        let mut bad = object[cr.start as usize..cr.end as usize].to_vec();
        let mid = bad.len() / 3;
        bad[mid] ^= 0x55;
        bad[mid + 1] ^= 0xAA;
        match decompress_range(&table, &bad, 150_000..250_000) {
            Err(SeekableError::BadFrame { .. } | SeekableError::FrameLenMismatch { .. }) => {}
            other => panic!("corrupt frame gave {other:?}"),
        }
        // A table lying about a frame's decompressed size.
        let mut lying = table.clone();
        lying.frames[0].decompressed_size += 1;
        for f in &mut lying.frames[1..] {
            f.decompressed_offset += 1;
        }
        assert!(matches!(
            decompress_range(&lying, &object, 0..10),
            Err(SeekableError::FrameLenMismatch {
                index: 0,
                expected: 100_001,
                actual: 100_000
            })
        ));
        // A table lying about a frame's compressed size.
        let mut lying = table.clone();
        lying.frames[0].compressed_size += 1;
        assert!(matches!(
            decompress_range(&lying, &object, 0..10),
            Err(SeekableError::BadFrame { index: 0, .. })
        ));
    }

    #[test]
    fn seek_table_parse_errors() {
        let data = compressible_bytes(250_000, 16);
        let (object, table) = compress(&data, opts(100_000, 1), 10_000, &[]);
        let tail = &object[object.len() - table.seek_table_len() as usize..];
        assert_eq!(tail.len(), 8 + 3 * 8 + 9);

        // Too short: first for the footer, then for the table the footer describes.
        match SeekTable::parse_from_tail(&tail[tail.len() - 5..]) {
            Err(SeekableError::TailTooShort { needed: 17, got: 5 }) => {}
            other => panic!("{other:?}"),
        }
        match SeekTable::parse_from_tail(&tail[1..]) {
            Err(SeekableError::TailTooShort {
                needed: 41,
                got: 40,
            }) => {}
            other => panic!("{other:?}"),
        }
        let e = SeekTable::parse_from_tail(&tail[1..])
            .unwrap_err()
            .to_string();
        assert!(e.contains("41 bytes are needed"), "{e}");

        let mutate = |at: usize, f: &dyn Fn(&mut u8)| {
            let mut t = tail.to_vec();
            f(&mut t[at]);
            SeekTable::parse_from_tail(&t)
        };
        let n = tail.len();
        assert!(matches!(
            mutate(n - 1, &|b| *b ^= 1),
            Err(SeekableError::BadSeekableMagic { found: 0x8E92_EAB1 })
        ));
        assert!(matches!(
            mutate(n - 5, &|b| *b = 0x04),
            Err(SeekableError::ReservedBits { descriptor: 4 })
        ));
        assert!(matches!(
            mutate(0, &|b| *b = 0),
            Err(SeekableError::BadSkippableMagic { .. })
        ));
        assert!(matches!(
            mutate(4, &|b| *b += 1),
            Err(SeekableError::TableSizeMismatch {
                declared: 34,
                frames: 3,
                expected: 33
            })
        ));
        assert!(matches!(
            mutate(n - 9, &|b| *b = 200),
            Err(SeekableError::TailTooShort { needed: 1617, .. })
        ));
        // The unused descriptor bits 0-1 are ignored.
        assert_eq!(mutate(n - 5, &|b| *b = 0x03).unwrap(), table);
        // A zero compressed size.
        let mut t = tail.to_vec();
        t[8 + 8..8 + 12].copy_from_slice(&[0; 4]);
        assert!(matches!(
            SeekTable::parse_from_tail(&t),
            Err(SeekableError::EmptyCompressedFrame { index: 1 })
        ));
        // Object length checks.
        assert!(table.check_object_len(object.len() as u64).is_ok());
        assert!(matches!(
            table.check_object_len(object.len() as u64 + 1),
            Err(SeekableError::ObjectLenMismatch { .. })
        ));
        // Not a seekable object at all: a plain zstd stream.
        let plain = zstd::encode_all(&data[..], 3).unwrap();
        assert!(matches!(
            SeekTable::parse_from_tail(&plain),
            Err(SeekableError::BadSeekableMagic { .. })
        ));
    }

    #[test]
    fn seek_table_with_entry_checksums_parses() {
        // Written by zstd's own seekable library with checksums: entries of 12 bytes.
        let mut t = Vec::new();
        t.extend_from_slice(&SKIPPABLE_MAGIC.to_le_bytes());
        t.extend_from_slice(&(2u32 * 12 + 9).to_le_bytes());
        for (c, d, x) in [(10u32, 100u32, 0xdead_beefu32), (20, 50, 1)] {
            t.extend_from_slice(&c.to_le_bytes());
            t.extend_from_slice(&d.to_le_bytes());
            t.extend_from_slice(&x.to_le_bytes());
        }
        t.extend_from_slice(&2u32.to_le_bytes());
        t.push(0x80);
        t.extend_from_slice(&SEEKABLE_MAGIC.to_le_bytes());
        let table = SeekTable::parse_from_tail(&t).unwrap();
        assert_eq!(table.compressed_len(), 30);
        assert_eq!(table.decompressed_len(), 150);
        assert_eq!(table.object_len(), 30 + t.len() as u64);
        assert_eq!(table.frames()[1].compressed_offset, 10);
        assert_eq!(table.frames()[1].decompressed_offset, 100);
        assert_eq!(table.frames_covering(99..101).len(), 2);
        assert_eq!(table.frames_covering(100..101)[0].decompressed_offset, 100);
        assert_eq!(table.frames_covering(0..100).len(), 1);
        assert_eq!(table.frames_covering(150..1000).len(), 0);
        assert_eq!(table.compressed_range(100..150).unwrap(), 10..30);
    }

    #[test]
    fn seek_table_parse_never_panics_on_mangled_tables() {
        let data = compressible_bytes(200_000, 17);
        let (object, table) = compress(&data, opts(30_000, 1), 10_000, &[]);
        let tail = object[object.len() - table.seek_table_len() as usize..].to_vec();
        for cut in 0..tail.len() {
            let _ = SeekTable::parse_from_tail(&tail[cut..]);
            let _ = SeekTable::parse_from_tail(&tail[..cut]);
        }
        for at in 0..tail.len() {
            for v in [0u8, 1, 0x7f, 0x80, 0xff] {
                let mut t = tail.clone();
                t[at] = v;
                if let Ok(parsed) = SeekTable::parse_from_tail(&t) {
                    // Whatever parses can be used without panicking, even against the real bytes.
                    let len = parsed.decompressed_len();
                    for range in [0..len.min(10), len / 2..len, 0..len] {
                        if let Ok(cr) = parsed.compressed_range(range.clone()) {
                            let start = (cr.start as usize).min(object.len());
                            let _ = decompress_range(&parsed, &object[start..], range);
                        }
                    }
                }
            }
        }
    }

    /// A sink failing after `limit` bytes.
    struct FailingSink {
        written: usize,
        limit: usize,
    }

    impl Write for FailingSink {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.written + buf.len() > self.limit {
                return Err(io::Error::other("disk full"));
            }
            self.written += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn seekable_writer_errors_propagate() {
        let data = random_bytes(1_000_000, 18);
        for threads in [1, 4] {
            let mut w = SeekableWriter::new(
                FailingSink {
                    written: 0,
                    limit: 150_000,
                },
                opts(50_000, threads),
            )
            .unwrap();
            let e = w
                .write_all(&data)
                .and_then(|()| w.finish().map(drop))
                .unwrap_err();
            assert_eq!(e.to_string(), "disk full");
            let mut w = SeekableWriter::new(
                FailingSink {
                    written: 0,
                    limit: 150_000,
                },
                opts(50_000, threads),
            )
            .unwrap();
            assert!(w.write_all(&data).is_err());
            // Once failed, the writer stays failed.
            assert!(w.write_all(b"x").is_err());
            assert!(w.finish().is_err());
        }
        for bad in [
            opts(0, 1),
            opts(MAX_FRAME_SIZE + 1, 1),
            SeekableOptions {
                level: 99,
                ..opts(1000, 1)
            },
        ] {
            let e = SeekableWriter::new(Vec::new(), bad).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        }
        // Dropping a writer mid-stream stops its threads without hanging.
        let mut w = SeekableWriter::new(Vec::new(), opts(10_000, 4)).unwrap();
        w.write_all(&data[..100_000]).unwrap();
        drop(w);
        // threads = 0 means one.
        let (object, _) = compress(&data[..1000], opts(100, 0), 1000, &[]);
        assert_eq!(zstd::decode_all(&object[..]).unwrap(), &data[..1000]);
    }

    #[test]
    fn seekable_writer_memory_stays_bounded() {
        // Frames go out while input comes in: with 2 threads, no more than a few frames wait.
        struct Counting(usize);
        impl Write for Counting {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                self.0 += buf.len();
                Ok(buf.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let data = random_bytes(50_000, 19);
        let mut w = SeekableWriter::new(Counting(0), opts(50_000, 2)).unwrap();
        for _ in 0..40 {
            w.write_all(&data).unwrap();
            assert!(w.next_seq - w.next_write <= 3);
            assert!(w.in_flight.len() + w.ready.len() <= 3);
            assert!(w.spare.len() <= 4);
            assert_eq!(w.table().len() as u64, w.next_write);
        }
        let (out, table) = w.finish().unwrap();
        assert_eq!(out.0 as u64, table.object_len());
        assert_eq!(table.len(), 40);
    }
}
