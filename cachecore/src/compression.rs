//! Streaming compression for the NAR files of a binary cache.
//!
//! Reading supports what Nix writes by default or on request: `none`, `xz`, `bzip2`, `zstd`.
//! Writing supports `none`, `xz` and `zstd`. Everything streams; memory is bounded by the codec's
//! window, never by the input.
//!
//! ```
//! use std::io::{Read, Write};
//! use cachecore::compression::{Compression, Compressor, decompress};
//! let mut c = Compressor::new(Vec::new(), Compression::Zstd, None).unwrap();
//! c.write_all(b"hello hello hello").unwrap();
//! let packed = c.finish().unwrap();
//! let mut out = String::new();
//! decompress(Compression::Zstd, &packed[..]).unwrap().read_to_string(&mut out).unwrap();
//! assert_eq!(out, "hello hello hello");
//! ```

use std::fmt;
use std::io::{self, BufReader, Read, Write};

use crate::seekable::{Boundaries, SeekableOptions, SeekableWriter};

/// A compression method, named as in the narinfo `Compression:` field.
///
/// ```
/// use cachecore::compression::Compression;
/// assert_eq!(Compression::from_name("xz").unwrap(), Compression::Xz);
/// assert_eq!(Compression::from_name("").unwrap(), Compression::None); // no `Compression:` line
/// assert!(Compression::from_name("gzip").is_err());
/// assert_eq!("zstd".parse::<Compression>().unwrap().extension(), ".zst");
/// assert_eq!(Compression::Bzip2.name(), "bzip2");
/// assert_eq!(format!("nar/x.nar{}", Compression::None.extension()), "nar/x.nar");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Compression {
    None,
    Xz,
    Bzip2,
    Zstd,
}

/// A compression method cachecore cannot handle, or a compressor that cannot start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("unknown compression {0:?} (expected none, xz, bzip2 or zstd)")]
    Unknown(String),
    #[error("compression {0} is supported for reading only")]
    ReadOnly(Compression),
    #[error("compression level {level} is out of range for {method} ({range})")]
    BadLevel {
        method: Compression,
        level: i32,
        range: &'static str,
    },
    /// The zstd compression threads could not be started.
    #[error("cannot start the zstd compressor")]
    Start(#[source] io::Error),
}

impl Compression {
    /// Parses the narinfo name (`none`, `xz`, `bzip2`, `zstd`).
    ///
    /// See [`Compression`] for an example.
    pub fn from_name(name: &str) -> Result<Self, Error> {
        Ok(match name {
            "none" | "" => Compression::None,
            "xz" => Compression::Xz,
            "bzip2" => Compression::Bzip2,
            "zstd" => Compression::Zstd,
            other => return Err(Error::Unknown(other.to_owned())),
        })
    }

    /// Nix's name for the method, as in a narinfo's `Compression:` field (also what `Display` prints).
    /// See [`Compression`] for an example.
    pub const fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Xz => "xz",
            Compression::Bzip2 => "bzip2",
            Compression::Zstd => "zstd",
        }
    }

    /// The file extension Nix appends to `.nar` (`""`, `.xz`, `.bz2`, `.zst`).
    ///
    /// See [`Compression`] for an example.
    pub const fn extension(self) -> &'static str {
        match self {
            Compression::None => "",
            Compression::Xz => ".xz",
            Compression::Bzip2 => ".bz2",
            Compression::Zstd => ".zst",
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Compression {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::from_name(s)
    }
}

/// Wraps `input` in a streaming decompressor.
///
/// See the [module docs](self) for an example.
pub fn decompress<'a, R: Read + Send + 'a>(
    method: Compression,
    input: R,
) -> io::Result<Box<dyn Read + Send + 'a>> {
    Ok(match method {
        Compression::None => Box::new(input),
        Compression::Xz => Box::new(xz2::read::XzDecoder::new_multi_decoder(
            BufReader::with_capacity(1 << 16, input),
        )),
        Compression::Bzip2 => Box::new(bzip2::read::MultiBzDecoder::new(BufReader::with_capacity(
            1 << 16,
            input,
        ))),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(input)?),
    })
}

/// A streaming compressor; call [`Compressor::finish`] to write the trailer.
///
/// zstd output is always seekable zstd ([`crate::seekable`]): independent frames and a seek
/// table, an ordinary `.zst` to any decoder, a single plain frame when the input fits in one.
pub struct Compressor<W: Write> {
    inner: Inner<W>,
}

enum Inner<W: Write> {
    None(W),
    Xz(xz2::write::XzEncoder<W>),
    Zstd(SeekableWriter<W>),
}

impl<W: Write> fmt::Debug for Compressor<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self.inner {
            Inner::None(_) => "none",
            Inner::Xz(_) => "xz",
            Inner::Zstd(_) => "zstd",
        };
        f.debug_struct("Compressor").field("method", &name).finish()
    }
}

/// Default levels, the ones Nix uses (the codecs' own defaults). The only defaults in the crate:
/// push, copy and [`crate::seekable::SeekableOptions`] take theirs from here.
pub const DEFAULT_ZSTD_LEVEL: i32 = 3;
pub const DEFAULT_XZ_LEVEL: i32 = 6;

/// How NARs are compressed: method, level and threads. [`NarCompression::compressor`] is the one
/// constructor push, copy and anything else that writes a NAR into a cache use.
///
/// ```
/// use std::io::Write as _;
/// use cachecore::compression::{Compression, NarCompression};
/// let config = NarCompression::new(Compression::Zstd, Some(9));
/// let nar = vec![7u8; 100_000];
/// let mut c = config.compressor(Vec::new(), nar.len() as u64).unwrap();
/// c.write_all(&nar).unwrap();
/// let file = c.finish().unwrap();
/// assert_eq!(zstd::decode_all(&file[..]).unwrap(), nar);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NarCompression {
    pub method: Compression,
    /// The codec's default (Nix's) when `None`.
    pub level: Option<i32>,
    /// Threads compressing one NAR's zstd frames (a NAR of one frame or less always uses one:
    /// starting a pool per tiny path would cost more than it saves).
    pub threads: usize,
}

/// `level` (or the method's default) when the method can write and the level is in its range.
fn checked_level(method: Compression, level: Option<i32>) -> Result<i32, Error> {
    let (level, range, ok) = match method {
        Compression::None => return Ok(0),
        Compression::Xz => {
            let l = level.unwrap_or(DEFAULT_XZ_LEVEL);
            (l, "0..=9", (0..=9).contains(&l))
        }
        Compression::Zstd => {
            let l = level.unwrap_or(DEFAULT_ZSTD_LEVEL);
            (l, "-7..=22", zstd::compression_level_range().contains(&l))
        }
        Compression::Bzip2 => return Err(Error::ReadOnly(method)),
    };
    if ok {
        Ok(level)
    } else {
        Err(Error::BadLevel {
            method,
            level,
            range,
        })
    }
}

impl NarCompression {
    /// Whether NARs can be compressed as configured (a writable method, a level in its range):
    /// what [`compressor`](Self::compressor) would refuse, found before any work starts.
    ///
    /// ```
    /// use cachecore::compression::{Compression, NarCompression};
    /// assert!(NarCompression::new(Compression::Xz, Some(6)).check().is_ok());
    /// assert!(NarCompression::new(Compression::Xz, Some(12)).check().is_err()); // xz: 0..=9
    /// assert!(NarCompression::new(Compression::Bzip2, None).check().is_err()); // read-only
    /// ```
    pub fn check(&self) -> Result<(), Error> {
        checked_level(self.method, self.level).map(drop)
    }

    /// The default [`threads`](Self::threads): one per core, but never more than this, so that
    /// the memory a NAR's compression takes is set by the options and not by the machine it runs
    /// on: a large NAR holds at most `(threads + 2)` frames of
    /// [`DEFAULT_FRAME_SIZE`](crate::seekable::DEFAULT_FRAME_SIZE) while it is compressed
    /// (`(4 + 2) × 4 MiB`).
    pub const MAX_DEFAULT_THREADS: usize = 4;

    /// `method` at `level`, on one thread per CPU (at most
    /// [`MAX_DEFAULT_THREADS`](Self::MAX_DEFAULT_THREADS)).
    ///
    /// ```
    /// use cachecore::compression::{Compression, NarCompression};
    /// let c = NarCompression::new(Compression::Zstd, Some(19));
    /// assert!(c.threads >= 1 && c.threads <= NarCompression::MAX_DEFAULT_THREADS);
    /// assert_eq!(NarCompression::default(), NarCompression::new(Compression::Zstd, None));
    /// ```
    pub fn new(method: Compression, level: Option<i32>) -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        NarCompression {
            method,
            level,
            threads: cores.min(Self::MAX_DEFAULT_THREADS),
        }
    }

    /// A compressor writing to `out` for a NAR of about `nar_size` bytes (a hint: it decides only
    /// the number of threads). Fails on a level out of range or a write-only method (bzip2).
    ///
    /// See [`NarCompression`] for an example.
    pub fn compressor<W: Write>(&self, out: W, nar_size: u64) -> Result<Compressor<W>, Error> {
        let threads = if nar_size <= crate::seekable::DEFAULT_FRAME_SIZE as u64 {
            1
        } else {
            self.threads.max(1)
        };
        Compressor::build(out, self.method, self.level, threads)
    }
}

impl Default for NarCompression {
    /// zstd at its default level, as Nix's `compression=zstd`.
    fn default() -> Self {
        NarCompression::new(Compression::Zstd, None)
    }
}

impl<W: Write> Compressor<W> {
    /// A compressor for `method` at `level` (the codec default when `None`), on the caller's
    /// thread. For NARs, use [`NarCompression::compressor`].
    ///
    /// See the [module docs](self) for an example.
    pub fn new(output: W, method: Compression, level: Option<i32>) -> Result<Self, Error> {
        Self::build(output, method, level, 1)
    }

    fn build(
        output: W,
        method: Compression,
        level: Option<i32>,
        threads: usize,
    ) -> Result<Self, Error> {
        let level = checked_level(method, level)?;
        let inner = match method {
            Compression::None => Inner::None(output),
            Compression::Xz => Inner::Xz(xz2::write::XzEncoder::new(output, level as u32)),
            Compression::Zstd => {
                let opts = SeekableOptions {
                    level,
                    frame_size: crate::seekable::DEFAULT_FRAME_SIZE,
                    threads,
                };
                Inner::Zstd(SeekableWriter::new(output, opts).map_err(Error::Start)?)
            }
            Compression::Bzip2 => return Err(Error::ReadOnly(method)),
        };
        Ok(Compressor { inner })
    }

    /// For zstd, the handle to mark where NAR file entries start, so frames end there (see
    /// [`SeekableWriter::boundaries`]); `None` for the other methods.
    ///
    /// ```
    /// use cachecore::compression::{Compression, Compressor};
    /// assert!(Compressor::new(Vec::new(), Compression::Zstd, None).unwrap().boundaries().is_some());
    /// assert!(Compressor::new(Vec::new(), Compression::Xz, None).unwrap().boundaries().is_none());
    /// ```
    pub fn boundaries(&self) -> Option<Boundaries> {
        match &self.inner {
            Inner::Zstd(w) => Some(w.boundaries()),
            _ => None,
        }
    }

    /// Flushes the codec's trailer and returns the output.
    ///
    /// ```
    /// use std::io::Write as _;
    /// use cachecore::compression::{Compression, Compressor};
    /// let mut c = Compressor::new(Vec::new(), Compression::Xz, Some(6)).unwrap();
    /// c.write_all(b"hello").unwrap();
    /// let file = c.finish().unwrap();
    /// assert!(file.starts_with(b"\xfd7zXZ\0")); // the xz magic
    /// ```
    pub fn finish(self) -> io::Result<W> {
        match self.inner {
            Inner::None(w) => Ok(w),
            Inner::Xz(e) => e.finish(),
            Inner::Zstd(e) => Ok(e.finish()?.0),
        }
    }
}

impl<W: Write> Write for Compressor<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.inner {
            Inner::None(w) => w.write(buf),
            Inner::Xz(e) => e.write(buf),
            Inner::Zstd(e) => e.write(buf),
        }
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match &mut self.inner {
            Inner::None(w) => w.write_all(buf),
            Inner::Xz(e) => e.write_all(buf),
            Inner::Zstd(e) => e.write_all(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.inner {
            Inner::None(w) => w.flush(),
            Inner::Xz(e) => e.flush(),
            Inner::Zstd(e) => e.flush(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        (0..200_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect()
    }

    #[test]
    fn round_trips() {
        for method in [Compression::None, Compression::Xz, Compression::Zstd] {
            let mut c = Compressor::new(Vec::new(), method, None).unwrap();
            c.write_all(&sample()).unwrap();
            let packed = c.finish().unwrap();
            let mut out = Vec::new();
            decompress(method, &packed[..])
                .unwrap()
                .read_to_end(&mut out)
                .unwrap();
            assert_eq!(out, sample(), "{method}");
        }
    }

    #[test]
    fn reads_bzip2() {
        let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
        e.write_all(&sample()).unwrap();
        let packed = e.finish().unwrap();
        let mut out = Vec::new();
        decompress(Compression::Bzip2, &packed[..])
            .unwrap()
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, sample());
    }

    #[test]
    fn corrupt_input_is_an_error() {
        for method in [Compression::Xz, Compression::Bzip2, Compression::Zstd] {
            let mut out = Vec::new();
            let r = decompress(method, &b"definitely not compressed data"[..])
                .and_then(|mut d| d.read_to_end(&mut out));
            assert!(r.is_err(), "{method}");
        }
    }

    #[test]
    fn names() {
        for m in [
            Compression::None,
            Compression::Xz,
            Compression::Bzip2,
            Compression::Zstd,
        ] {
            assert_eq!(Compression::from_name(m.name()).unwrap(), m);
        }
        assert!(matches!(
            Compression::from_name("br"),
            Err(Error::Unknown(_))
        ));
        assert!(matches!(
            Compressor::new(Vec::new(), Compression::Bzip2, None),
            Err(Error::ReadOnly(_))
        ));
        assert!(matches!(
            Compressor::new(Vec::new(), Compression::Xz, Some(12)),
            Err(Error::BadLevel { .. })
        ));
    }
}
