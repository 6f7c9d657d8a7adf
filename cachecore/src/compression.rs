//! Streaming compression for the NAR files of a binary cache.
//!
//! Reading supports what Nix writes by default or on request: `none`, `xz`, `bzip2`, `zstd`,
//! `br` (brotli). Writing supports `none`, `xz`, `zstd` and `br`. Everything streams; memory is bounded by the codec's
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

use crate::seekable::{Boundaries, SeekTable, SeekableOptions, SeekableWriter};

/// A compression method, named as in the narinfo `Compression:` field.
///
/// ```
/// use cachecore::compression::Compression;
/// assert_eq!(Compression::from_name("xz").unwrap(), Compression::Xz);
/// assert_eq!(Compression::from_name("").unwrap(), Compression::None); // no `Compression:` line
/// assert!(Compression::from_name("gzip").is_err());
/// assert_eq!(Compression::from_name("br").unwrap().extension(), ".br");
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
    /// Brotli, Nix's `br`.
    Brotli,
}

/// A compression method cachecore cannot handle, or a compressor that cannot start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("unknown compression {0:?} (expected none, xz, bzip2, zstd or br)")]
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
    /// Parses the narinfo name (`none`, `xz`, `bzip2`, `zstd`, `br`).
    ///
    /// See [`Compression`] for an example.
    pub fn from_name(name: &str) -> Result<Self, Error> {
        Ok(match name {
            "none" | "" => Compression::None,
            "xz" => Compression::Xz,
            "bzip2" => Compression::Bzip2,
            "zstd" => Compression::Zstd,
            "br" => Compression::Brotli,
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
            Compression::Brotli => "br",
        }
    }

    /// The file extension Nix appends to `.nar` (`""`, `.xz`, `.bz2`, `.zst`, `.br`).
    ///
    /// See [`Compression`] for an example.
    pub const fn extension(self) -> &'static str {
        match self {
            Compression::None => "",
            Compression::Xz => ".xz",
            Compression::Bzip2 => ".bz2",
            Compression::Zstd => ".zst",
            Compression::Brotli => ".br",
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
        Compression::Brotli => Box::new(BrotliReader {
            inner: brotli::Decompressor::new(input, 1 << 16),
            ended: false,
        }),
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
    /// Boxed: brotli's state is over 5 KiB.
    Brotli(Box<BrotliWriter<W>>),
}

impl<W: Write> fmt::Debug for Compressor<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self.inner {
            Inner::None(_) => "none",
            Inner::Xz(_) => "xz",
            Inner::Zstd(_) => "zstd",
            Inner::Brotli(_) => "br",
        };
        f.debug_struct("Compressor").field("method", &name).finish()
    }
}

/// A seekable object's seek table and the sha256 of each of its compressed frames.
pub type SeekableFrames = (SeekTable, Vec<[u8; 32]>);

/// Default levels, the ones Nix uses (the codecs' own defaults). The only defaults in the crate:
/// push, copy and [`crate::seekable::SeekableOptions`] take theirs from here.
pub const DEFAULT_ZSTD_LEVEL: i32 = 3;
pub const DEFAULT_XZ_LEVEL: i32 = 6;

/// brotli's default quality, which Nix's `compression=br` uses: its best and slowest.
pub const DEFAULT_BROTLI_LEVEL: i32 = 11;

/// brotli's window (`lgwin`): its default, 4 MiB, as Nix writes.
const BROTLI_WINDOW_BITS: u32 = 22;

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
        Compression::Brotli => {
            let l = level.unwrap_or(DEFAULT_BROTLI_LEVEL);
            (l, "0..=11", (0..=11).contains(&l))
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
            Compression::Brotli => Inner::Brotli(Box::new(BrotliWriter::new(output, level as u32))),
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
        self.finish_frames().map(|(out, _)| out)
    }

    /// [`Compressor::finish`], also returning, for a seekable zstd object of more than one
    /// frame, its seek table and the sha256 of each compressed frame
    /// ([`SeekableWriter::finish_with_digests`]); `None` otherwise.
    pub fn finish_frames(self) -> io::Result<(W, Option<SeekableFrames>)> {
        match self.inner {
            Inner::None(w) => Ok((w, None)),
            Inner::Xz(e) => Ok((e.finish()?, None)),
            Inner::Zstd(e) => {
                let (out, table, digests) = e.finish_with_digests()?;
                let seekable = (table.len() > 1).then_some((table, digests));
                Ok((out, seekable))
            }
            Inner::Brotli(e) => Ok((e.finish()?, None)),
        }
    }
}

impl<W: Write> Write for Compressor<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.inner {
            Inner::None(w) => w.write(buf),
            Inner::Xz(e) => e.write(buf),
            Inner::Zstd(e) => e.write(buf),
            Inner::Brotli(e) => e.write(buf),
        }
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match &mut self.inner {
            Inner::None(w) => w.write_all(buf),
            Inner::Xz(e) => e.write_all(buf),
            Inner::Zstd(e) => e.write_all(buf),
            Inner::Brotli(e) => e.write_all(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.inner {
            Inner::None(w) => w.flush(),
            Inner::Xz(e) => e.flush(),
            Inner::Zstd(e) => e.flush(),
            Inner::Brotli(e) => e.flush(),
        }
    }
}

/// A brotli decompressor that reads its input to the end, as the other decoders do (callers
/// hash and count the compressed side as it is read, and take its end as the object's end), and
/// refuses bytes after the brotli stream.
struct BrotliReader<R: Read> {
    inner: brotli::Decompressor<R>,
    ended: bool,
}

impl<R: Read> Read for BrotliReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.ended || buf.is_empty() {
            return Ok(0);
        }
        let n = self.inner.read(buf)?;
        if n > 0 {
            return Ok(n);
        }
        // The stream has ended. A second read fails on input the decoder took in and did not
        // use; then nothing may be left beneath it.
        self.inner.read(&mut [0u8; 1])?;
        let mut rest = [0u8; 1];
        if self.inner.get_mut().read(&mut rest)? > 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "data follows the end of the brotli stream",
            ));
        }
        self.ended = true;
        Ok(0)
    }
}

/// A brotli compressor whose trailer's write errors are reported. brotli's own writer writes the
/// trailer in `into_inner` and drops any error doing so; here the writer beneath keeps the first
/// error it returned, and [`finish`](Self::finish) returns it.
pub(crate) struct BrotliWriter<W: Write> {
    inner: brotli::CompressorWriter<KeepsError<W>>,
}

struct KeepsError<W> {
    inner: W,
    error: Option<io::Error>,
}

impl<W: Write> KeepsError<W> {
    fn kept<T>(&mut self, result: io::Result<T>) -> io::Result<T> {
        result.inspect_err(|e| {
            self.error
                .get_or_insert_with(|| io::Error::new(e.kind(), e.to_string()));
        })
    }
}

impl<W: Write> Write for KeepsError<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let result = self.inner.write(buf);
        self.kept(result)
    }
    fn flush(&mut self) -> io::Result<()> {
        let result = self.inner.flush();
        self.kept(result)
    }
}

impl<W: Write> BrotliWriter<W> {
    /// At `quality` (0..=11), with brotli's default window.
    pub(crate) fn new(output: W, quality: u32) -> Self {
        let output = KeepsError {
            inner: output,
            error: None,
        };
        BrotliWriter {
            inner: brotli::CompressorWriter::new(output, 1 << 16, quality, BROTLI_WINDOW_BITS),
        }
    }

    /// What was written so far beneath (for encoders writing into memory).
    pub(crate) fn get_mut(&mut self) -> &mut W {
        &mut self.inner.get_mut().inner
    }

    /// Writes the trailer; returns the writer beneath, or the first error it returned.
    pub(crate) fn finish(self) -> io::Result<W> {
        let mut output = self.inner.into_inner();
        match output.error.take() {
            Some(e) => Err(e),
            None => Ok(output.inner),
        }
    }
}

impl<W: Write> Write for BrotliWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
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
        for method in [
            Compression::None,
            Compression::Xz,
            Compression::Zstd,
            Compression::Brotli,
        ] {
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
    fn bytes_after_a_brotli_stream_are_an_error_and_the_input_is_read_to_its_end() {
        let mut c = Compressor::new(Vec::new(), Compression::Brotli, Some(5)).unwrap();
        c.write_all(&sample()).unwrap();
        let mut packed = c.finish().unwrap();
        let mut input = io::Cursor::new(packed.clone());
        let mut out = Vec::new();
        decompress(Compression::Brotli, &mut input)
            .unwrap()
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, sample());
        assert_eq!(input.position(), packed.len() as u64);
        // Trailing bytes: both after the decoder's buffer (past 64 KiB) and within it.
        for extra in [vec![0u8; 200 << 10], b"junk".to_vec()] {
            let mut with = packed.clone();
            with.extend_from_slice(&extra);
            let r = decompress(Compression::Brotli, &with[..])
                .unwrap()
                .read_to_end(&mut Vec::new());
            assert_eq!(r.unwrap_err().kind(), io::ErrorKind::InvalidData);
        }
        packed.truncate(packed.len() - 1);
        let r = decompress(Compression::Brotli, &packed[..])
            .unwrap()
            .read_to_end(&mut Vec::new());
        assert!(r.is_err(), "a truncated stream");
    }

    #[test]
    fn corrupt_input_is_an_error() {
        for method in [
            Compression::Xz,
            Compression::Bzip2,
            Compression::Zstd,
            Compression::Brotli,
        ] {
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
            Compression::Brotli,
        ] {
            assert_eq!(Compression::from_name(m.name()).unwrap(), m);
        }
        assert!(matches!(
            Compression::from_name("gzip"),
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
        assert!(matches!(
            Compressor::new(Vec::new(), Compression::Brotli, Some(12)),
            Err(Error::BadLevel { .. })
        ));
    }

    /// A writer that takes `room` bytes, then fails.
    #[derive(Debug)]
    struct Full {
        room: usize,
    }

    impl Write for Full {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.room == 0 {
                return Err(io::Error::new(io::ErrorKind::StorageFull, "disk full"));
            }
            let n = buf.len().min(self.room);
            self.room -= n;
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_brotli_trailer_that_cannot_be_written_is_an_error() {
        // At its best quality brotli keeps a short input until `finish` writes it all.
        let mut c = Compressor::new(Full { room: 10 }, Compression::Brotli, None).unwrap();
        c.write_all(b"hello hello hello").unwrap();
        let e = c.finish().unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::StorageFull);
        let mut c = Compressor::new(Full { room: 1 << 20 }, Compression::Brotli, None).unwrap();
        c.write_all(b"hello hello hello").unwrap();
        assert!(c.finish().is_ok());
    }
}
