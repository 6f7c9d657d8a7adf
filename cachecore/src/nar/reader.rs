//! A streaming pull reader that validates a NAR as it goes.
//!
//! [`Reader::next`] returns one [`Event`] at a time; after [`Event::File`] the contents can be
//! streamed with [`Reader::read_contents`] or [`Reader::contents`], and whatever is left unread
//! is skipped by the next call to `next`. Memory is bounded (a 64 KiB buffer plus the limits in
//! [`super::wire`]) whatever the input.
//!
//! Everything is checked: the magic, the token order, zero padding, entry names (non-empty, no
//! `/` or NUL, not `.` or `..`, strictly increasing by bytes), nesting depth, string lengths, and
//! that the input ends exactly after the root node. The first problem is reported as a
//! [`ReadError`] with its byte offset; the reader then refuses to continue.

use std::fmt;
use std::io::{self, Read};

use super::wire::{self, Ev, Parser, Want};

const BUF_SIZE: usize = 64 * 1024;

/// One step of a NAR, in order. A node is either one `File` or `Symlink` event, or
/// `DirectoryStart`, then per entry `Entry`, the entry's node, `EntryEnd`, and finally
/// `DirectoryEnd`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event<'a> {
    /// A regular file of `size` bytes whose first content byte is at NAR byte `nar_offset`.
    File {
        executable: bool,
        size: u64,
        nar_offset: u64,
    },
    /// A symlink; the target is neither empty nor contains NUL.
    Symlink { target: &'a [u8] },
    /// A directory begins.
    DirectoryStart,
    /// A directory entry begins; its node follows. Names are validated and strictly increasing.
    Entry { name: &'a [u8] },
    /// The current entry's node is complete.
    EntryEnd,
    /// The current directory is complete.
    DirectoryEnd,
}

/// An invalid, truncated or unreadable NAR, at NAR byte `offset`.
///
/// For a bad token the offset is where the token (its length field) starts; for non-zero
/// padding, the padding byte; for a truncated input, where the input ended.
#[derive(Debug)]
pub struct ReadError {
    pub offset: u64,
    pub kind: ReadErrorKind,
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NAR byte {}: {}", self.offset, self.kind)
    }
}

impl std::error::Error for ReadError {}

impl From<ReadError> for io::Error {
    /// Wraps the error so that `io::Error::into_inner` + `downcast` recovers it.
    fn from(e: ReadError) -> io::Error {
        let kind = match &e.kind {
            ReadErrorKind::Io(inner) => inner.kind(),
            ReadErrorKind::Truncated { .. } => io::ErrorKind::UnexpectedEof,
            _ => io::ErrorKind::InvalidData,
        };
        io::Error::new(kind, e)
    }
}

/// What is wrong at a [`ReadError`]'s offset.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadErrorKind {
    #[error("read failed: {0}")]
    Io(io::Error),
    #[error("input ends early (expected {expected})")]
    Truncated { expected: &'static str },
    #[error("not a NAR (it does not start with \"nix-archive-1\")")]
    NotANar,
    #[error("expected {expected}, found {}", quoted(.found))]
    UnexpectedToken {
        expected: &'static str,
        found: Vec<u8>,
    },
    #[error("expected {expected}, found a string of {len} bytes")]
    UnexpectedLongToken { expected: &'static str, len: u64 },
    #[error("{what} of {len} bytes exceeds the limit of {max} bytes")]
    TooLong {
        what: &'static str,
        len: u64,
        max: u64,
    },
    #[error("padding byte is not zero")]
    NonZeroPadding,
    #[error("directory entry names out of order ({} after {})", quoted(.name), quoted(.prev))]
    NamesOutOfOrder { name: Vec<u8>, prev: Vec<u8> },
    #[error("duplicate directory entry name {}", quoted(.name))]
    DuplicateName { name: Vec<u8> },
    #[error("invalid directory entry name {} ({reason})", quoted(.name))]
    InvalidName { name: Vec<u8>, reason: &'static str },
    #[error("invalid symlink target {} ({reason})", quoted(.target))]
    InvalidTarget {
        target: Vec<u8>,
        reason: &'static str,
    },
    #[error("directories nested deeper than {max} levels")]
    TooDeep { max: usize },
    #[error("unexpected data after the end of the NAR")]
    TrailingData,
    #[error("reader used again after an error")]
    Poisoned,
}

/// Quotes bytes for a message: as a string if UTF-8, else with `\xNN` escapes.
pub(crate) fn quoted(bytes: &[u8]) -> String {
    const SHOWN: usize = 200;
    let (shown, more) = if bytes.len() > SHOWN {
        (&bytes[..SHOWN], "...")
    } else {
        (bytes, "")
    };
    match std::str::from_utf8(shown) {
        Ok(s) => format!("{s:?}{more}"),
        Err(_) => format!("\"{}\"{more}", shown.escape_ascii()),
    }
}

/// Streaming NAR reader over any [`Read`]; buffers internally (64 KiB), so there is no need to
/// wrap the input in a `BufReader`.
#[derive(Debug)]
pub struct Reader<R> {
    inner: R,
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    /// NAR offset of `buf[start]`: bytes consumed so far.
    pos: u64,
    parser: Parser,
    /// The last string read (a symlink target for `Event::Symlink`).
    scratch: Vec<u8>,
    in_contents: bool,
    contents_left: u64,
    contents_pad: usize,
    contents_offset: u64,
    poisoned: bool,
}

impl<R: Read> Reader<R> {
    /// A reader of the NAR `inner`.
    ///
    /// ```
    /// use std::io::Read as _;
    /// use cachecore::nar::{writer, Event, Reader};
    /// let mut nar = Vec::new();
    /// let mut root = writer::open(&mut nar).unwrap().directory().unwrap();
    /// root.entry(b"a").unwrap().file(false, 5, &mut &b"hello"[..]).unwrap();
    /// root.entry(b"b").unwrap().symlink(b"a").unwrap();
    /// root.close().unwrap();
    ///
    /// let mut reader = Reader::new(&nar[..]);
    /// assert_eq!((reader.offset(), reader.depth()), (0, 0));
    /// assert_eq!(reader.next().unwrap(), Some(Event::DirectoryStart));
    /// assert_eq!(reader.depth(), 1);
    /// assert_eq!(reader.next().unwrap(), Some(Event::Entry { name: b"a" }));
    /// assert!(matches!(reader.next().unwrap(), Some(Event::File { executable: false, size: 5, .. })));
    /// let mut first = [0u8; 2];
    /// assert_eq!(reader.read_contents(&mut first).unwrap(), 2);
    /// let mut rest = String::new();
    /// reader.contents().read_to_string(&mut rest).unwrap();
    /// assert_eq!((&first, rest.as_str()), (b"he", "llo"));
    /// assert_eq!(reader.next().unwrap(), Some(Event::EntryEnd));
    /// assert_eq!(reader.next().unwrap(), Some(Event::Entry { name: b"b" }));
    /// assert_eq!(reader.next().unwrap(), Some(Event::Symlink { target: b"a" }));
    /// assert_eq!(reader.next().unwrap(), Some(Event::EntryEnd));
    /// assert_eq!(reader.next().unwrap(), Some(Event::DirectoryEnd));
    /// assert_eq!(reader.next().unwrap(), None);
    /// assert_eq!((reader.offset(), reader.depth()), (nar.len() as u64, 0));
    /// ```
    pub fn new(inner: R) -> Self {
        Reader {
            inner,
            buf: vec![0; BUF_SIZE].into_boxed_slice(),
            start: 0,
            end: 0,
            pos: 0,
            parser: Parser::new(),
            scratch: Vec::new(),
            in_contents: false,
            contents_left: 0,
            contents_pad: 0,
            contents_offset: 0,
            poisoned: false,
        }
    }

    /// The next event, or `None` once the root node is complete and the input has ended.
    ///
    /// Unread file contents are skipped (and their padding checked). Returning `None` reads
    /// until end of input, to reject trailing data; a caller that needs only part of the NAR
    /// may stop calling `next` early.
    ///
    /// See [`Reader::new`] for an example.
    #[allow(clippy::should_implement_trait)] // a lending iterator: events borrow the reader
    pub fn next(&mut self) -> Result<Option<Event<'_>>, ReadError> {
        if self.poisoned {
            return Err(self.error(self.pos, ReadErrorKind::Poisoned));
        }
        let ev = match self.step() {
            Ok(ev) => ev,
            Err(e) => {
                self.poisoned = true;
                return Err(e);
            }
        };
        Ok(ev.map(|ev| match ev {
            Ev::File { executable, size } => Event::File {
                executable,
                size,
                nar_offset: self.contents_offset,
            },
            Ev::Symlink => Event::Symlink {
                target: &self.scratch,
            },
            Ev::DirectoryStart => Event::DirectoryStart,
            Ev::Entry => Event::Entry {
                name: self.parser.entry_name(),
            },
            Ev::EntryEnd => Event::EntryEnd,
            Ev::DirectoryEnd => Event::DirectoryEnd,
        }))
    }

    /// Reads contents of the file announced by the last [`Event::File`]; `Ok(0)` at its end
    /// (or when the last event was not a file).
    ///
    /// See [`Reader::new`] for an example.
    pub fn read_contents(&mut self, out: &mut [u8]) -> Result<usize, ReadError> {
        if self.poisoned {
            return Err(self.error(self.pos, ReadErrorKind::Poisoned));
        }
        match self.read_contents_inner(out) {
            Ok(n) => Ok(n),
            Err(e) => {
                self.poisoned = true;
                Err(e)
            }
        }
    }

    /// The current file's remaining contents as a [`Read`]; its errors wrap a [`ReadError`]
    /// (see `From<ReadError> for io::Error`).
    ///
    /// See [`Reader::new`] for an example.
    pub fn contents(&mut self) -> Contents<'_, R> {
        Contents { reader: self }
    }

    /// Bytes of the current file not yet read.
    pub fn remaining_contents(&self) -> u64 {
        if self.in_contents {
            self.contents_left
        } else {
            0
        }
    }

    /// NAR bytes consumed so far.
    ///
    /// See [`Reader::new`] for an example.
    pub fn offset(&self) -> u64 {
        self.pos
    }

    /// Number of directories currently open.
    ///
    /// See [`Reader::new`] for an example.
    pub fn depth(&self) -> usize {
        self.parser.depth()
    }

    fn error(&self, offset: u64, kind: ReadErrorKind) -> ReadError {
        ReadError { offset, kind }
    }

    fn truncated(&self, expected: &'static str) -> ReadError {
        self.error(self.pos, ReadErrorKind::Truncated { expected })
    }

    fn step(&mut self) -> Result<Option<Ev>, ReadError> {
        if self.in_contents {
            self.skip(self.contents_left)?;
            self.contents_left = 0;
            self.read_padding(self.contents_pad, "padding after file contents")?;
            self.in_contents = false;
            self.parser.contents_done();
        }
        loop {
            match self.parser.want() {
                Want::Str => {
                    let at = self.pos;
                    let expected = self.parser.expected();
                    let len = self.read_u64(expected)?;
                    self.parser
                        .check_len(len)
                        .map_err(|kind| self.error(at, kind))?;
                    // check_len bounds every string to a few KiB
                    let len = usize::try_from(len).map_err(|_| {
                        self.error(at, ReadErrorKind::UnexpectedLongToken { expected, len })
                    })?;
                    let mut scratch = std::mem::take(&mut self.scratch);
                    scratch.clear();
                    scratch.resize(len, 0);
                    let read = self.read_exact(&mut scratch, expected);
                    self.scratch = scratch;
                    read?;
                    self.read_padding(wire::padding(len as u64), "padding")?;
                    match self.parser.feed_str(&self.scratch) {
                        Ok(Some(ev)) => return Ok(Some(ev)),
                        Ok(None) => {}
                        Err(kind) => return Err(self.error(at, kind)),
                    }
                }
                Want::ContentsLen => {
                    let size = self.read_u64("file contents length")?;
                    let ev = self.parser.feed_contents_len(size);
                    self.in_contents = true;
                    self.contents_left = size;
                    self.contents_pad = wire::padding(size);
                    self.contents_offset = self.pos;
                    return Ok(Some(ev));
                }
                Want::End => {
                    if self.start < self.end || self.fill()? {
                        return Err(self.error(self.pos, ReadErrorKind::TrailingData));
                    }
                    self.parser.finish();
                    return Ok(None);
                }
                Want::Done => return Ok(None),
            }
        }
    }

    fn read_contents_inner(&mut self, out: &mut [u8]) -> Result<usize, ReadError> {
        if !self.in_contents || self.contents_left == 0 || out.is_empty() {
            return Ok(0);
        }
        let want =
            usize::try_from(self.contents_left).map_or(out.len(), |left| left.min(out.len()));
        let n = if self.start < self.end {
            let n = want.min(self.end - self.start);
            out[..n].copy_from_slice(&self.buf[self.start..self.start + n]);
            self.start += n;
            n
        } else if want >= self.buf.len() {
            // Large reads bypass the buffer.
            let n = self.read_inner(&mut out[..want])?;
            if n == 0 {
                return Err(self.truncated("file contents"));
            }
            n
        } else {
            if !self.fill()? {
                return Err(self.truncated("file contents"));
            }
            let n = want.min(self.end - self.start);
            out[..n].copy_from_slice(&self.buf[..n]);
            self.start = n;
            n
        };
        self.pos += n as u64;
        self.contents_left -= n as u64;
        Ok(n)
    }

    fn read_inner(&mut self, out: &mut [u8]) -> Result<usize, ReadError> {
        loop {
            match self.inner.read(out) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.error(self.pos, ReadErrorKind::Io(e))),
            }
        }
    }

    /// Refills the empty buffer; `false` at end of input.
    fn fill(&mut self) -> Result<bool, ReadError> {
        let mut buf = std::mem::take(&mut self.buf);
        let n = self.read_inner(&mut buf);
        self.buf = buf;
        let n = n?;
        self.start = 0;
        self.end = n;
        Ok(n > 0)
    }

    fn read_exact(&mut self, mut out: &mut [u8], expected: &'static str) -> Result<(), ReadError> {
        while !out.is_empty() {
            if self.start == self.end && !self.fill()? {
                return Err(self.truncated(expected));
            }
            let n = out.len().min(self.end - self.start);
            out[..n].copy_from_slice(&self.buf[self.start..self.start + n]);
            self.start += n;
            self.pos += n as u64;
            out = &mut out[n..];
        }
        Ok(())
    }

    fn read_u64(&mut self, expected: &'static str) -> Result<u64, ReadError> {
        let mut bytes = [0u8; 8];
        if self.end - self.start >= 8 {
            bytes.copy_from_slice(&self.buf[self.start..self.start + 8]);
            self.start += 8;
            self.pos += 8;
        } else {
            self.read_exact(&mut bytes, expected)?;
        }
        Ok(u64::from_le_bytes(bytes))
    }

    fn read_padding(&mut self, len: usize, expected: &'static str) -> Result<(), ReadError> {
        let at = self.pos;
        let mut pad = [0u8; 8];
        let pad = &mut pad[..len.min(8)];
        self.read_exact(pad, expected)?;
        match pad.iter().position(|&b| b != 0) {
            None => Ok(()),
            Some(i) => Err(self.error(at + i as u64, ReadErrorKind::NonZeroPadding)),
        }
    }

    fn skip(&mut self, mut n: u64) -> Result<(), ReadError> {
        while n > 0 {
            if self.start == self.end && !self.fill()? {
                return Err(self.truncated("file contents"));
            }
            let k =
                usize::try_from(n).map_or(self.end - self.start, |n| n.min(self.end - self.start));
            self.start += k;
            self.pos += k as u64;
            self.contents_left = self.contents_left.saturating_sub(k as u64);
            n -= k as u64;
        }
        Ok(())
    }
}

/// The current file's contents as a [`Read`]; see [`Reader::contents`].
#[derive(Debug)]
pub struct Contents<'a, R> {
    reader: &'a mut Reader<R>,
}

impl<R: Read> Read for Contents<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        Ok(self.reader.read_contents(buf)?)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod tests {
    use super::*;

    /// Encodes a token sequence by hand, independently of the writer.
    pub(crate) fn nar(parts: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for p in parts {
            out.extend_from_slice(&(p.len() as u64).to_le_bytes());
            out.extend_from_slice(p);
            out.extend_from_slice(&[0; 8][..wire::padding(p.len() as u64)]);
        }
        out
    }

    /// Tokens of a directory NAR with the given (name, node tokens) entries.
    fn dir_nar(entries: &[(&[u8], &[&[u8]])]) -> Vec<u8> {
        let mut parts: Vec<&[u8]> = vec![b"nix-archive-1", b"(", b"type", b"directory"];
        for (name, node) in entries {
            parts.extend_from_slice(&[b"entry", b"(", b"name", name, b"node"]);
            parts.extend_from_slice(node);
            parts.push(b")");
        }
        parts.push(b")");
        nar(&parts)
    }

    const FILE: &[&[u8]] = &[b"(", b"type", b"regular", b"contents", b"hi", b")"];

    /// A small NAR exercising every node kind.
    #[rustfmt::skip]
    pub(crate) fn sample() -> Vec<u8> {
        nar(&[
            b"nix-archive-1", b"(", b"type", b"directory",
            b"entry", b"(", b"name", b"a", b"node",
                b"(", b"type", b"regular", b"executable", b"", b"contents", b"#!/bin/sh\n", b")",
            b")",
            b"entry", b"(", b"name", b"b", b"node",
                b"(", b"type", b"directory",
                b"entry", b"(", b"name", b"c", b"node",
                    b"(", b"type", b"symlink", b"target", b"../a", b")",
                b")",
                b")",
            b")",
            b"entry", b"(", b"name", b"d", b"node",
                b"(", b"type", b"regular", b"contents", b"", b")",
            b")",
            b")",
        ])
    }

    /// Reads all events, draining contents; returns a printable trace.
    pub(crate) fn trace(data: &[u8]) -> Result<Vec<String>, ReadError> {
        let mut r = Reader::new(data);
        let mut out = Vec::new();
        while let Some(ev) = r.next()? {
            let line = match ev {
                Event::File {
                    executable,
                    size,
                    nar_offset,
                } => {
                    format!("file x={executable} size={size} at={nar_offset}")
                }
                Event::Symlink { target } => format!("symlink {}", quoted(target)),
                Event::DirectoryStart => "dir".into(),
                Event::Entry { name } => format!("entry {}", quoted(name)),
                Event::EntryEnd => "/entry".into(),
                Event::DirectoryEnd => "/dir".into(),
            };
            let is_file = line.starts_with("file");
            out.push(line);
            if is_file {
                let mut c = Vec::new();
                r.contents().read_to_end(&mut c).map_err(|e| {
                    *e.into_inner()
                        .and_then(|e| e.downcast::<ReadError>().ok())
                        .unwrap()
                })?;
                out.push(format!("contents {}", quoted(&c)));
            }
        }
        Ok(out)
    }

    fn err(data: &[u8]) -> ReadError {
        match trace(data) {
            Ok(t) => panic!("accepted invalid NAR: {t:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn reads_every_node_kind() {
        let data = sample();
        let t = trace(&data).unwrap();
        assert_eq!(
            t,
            [
                "dir",
                "entry \"a\"",
                "file x=true size=10 at=264",
                "contents \"#!/bin/sh\\n\"",
                "/entry",
                "entry \"b\"",
                "dir",
                "entry \"c\"",
                "symlink \"../a\"",
                "/entry",
                "/dir",
                "/entry",
                "entry \"d\"",
                "file x=false size=0 at=824",
                "contents \"\"",
                "/entry",
                "/dir",
            ]
        );
        assert_eq!(&data[264..274], b"#!/bin/sh\n");
    }

    #[test]
    fn skips_unread_contents() {
        let data = sample();
        let mut r = Reader::new(&data[..]);
        let mut n = 0;
        while r.next().unwrap().is_some() {
            n += 1;
        }
        assert_eq!(n, 15);
        assert_eq!(r.offset(), data.len() as u64);
        // Stays at the end.
        assert!(r.next().unwrap().is_none());
    }

    #[test]
    fn partial_contents_then_next() {
        let data = sample();
        let mut r = Reader::new(&data[..]);
        r.next().unwrap();
        r.next().unwrap();
        assert!(matches!(
            r.next().unwrap(),
            Some(Event::File { size: 10, .. })
        ));
        let mut two = [0u8; 2];
        assert_eq!(r.read_contents(&mut two).unwrap(), 2);
        assert_eq!(r.remaining_contents(), 8);
        assert_eq!(r.next().unwrap(), Some(Event::EntryEnd));
    }

    #[test]
    fn single_file_and_symlink_roots() {
        let data = nar(&[
            b"nix-archive-1",
            b"(",
            b"type",
            b"regular",
            b"contents",
            b"12345678",
            b")",
        ]);
        assert_eq!(
            trace(&data).unwrap(),
            ["file x=false size=8 at=96", "contents \"12345678\""]
        );
        let data = nar(&[
            b"nix-archive-1",
            b"(",
            b"type",
            b"symlink",
            b"target",
            b"/nix/store",
            b")",
        ]);
        assert_eq!(trace(&data).unwrap(), ["symlink \"/nix/store\""]);
    }

    #[test]
    fn rejects_bad_magic() {
        let e = err(&nar(&[b"nix-archive-2", b"(", b")"]));
        assert!(matches!(e.kind, ReadErrorKind::NotANar), "{e}");
        assert_eq!(e.offset, 0);
        let e = err(b"hello, world, this is not a NAR");
        assert!(matches!(e.kind, ReadErrorKind::NotANar), "{e}");
        let e = err(b"");
        assert!(matches!(e.kind, ReadErrorKind::Truncated { .. }), "{e}");
    }

    #[test]
    fn rejects_every_truncation() {
        let data = sample();
        for len in 0..data.len() {
            let e = err(&data[..len]);
            assert!(
                matches!(e.kind, ReadErrorKind::Truncated { .. }),
                "prefix {len}: {e}"
            );
            assert_eq!(e.offset, len as u64, "prefix {len}: {e}");
        }
    }

    #[test]
    fn rejects_nonzero_padding() {
        let mut data = nar(&[
            b"nix-archive-1",
            b"(",
            b"type",
            b"symlink",
            b"target",
            b"abc",
            b")",
        ]);
        // target "abc" at: magic 24, "(" 16, "type" 16, "symlink" 16, "target" 16 = 88; +8 len +3
        data[88 + 8 + 3 + 2] = 1;
        let e = err(&data);
        assert!(matches!(e.kind, ReadErrorKind::NonZeroPadding), "{e}");
        assert_eq!(e.offset, 101);

        let mut data = nar(&[
            b"nix-archive-1",
            b"(",
            b"type",
            b"regular",
            b"contents",
            b"x",
            b")",
        ]);
        let at = data.len() - 16 - 1;
        data[at] = 0xff;
        let e = err(&data);
        assert!(matches!(e.kind, ReadErrorKind::NonZeroPadding), "{e}");
        assert_eq!(e.offset, at as u64);

        let mut data = nar(&[
            b"nix-archive-1",
            b"(",
            b"type",
            b"regular",
            b"contents",
            b"x",
            b")",
        ]);
        data[13 + 8] = b'!'; // padding of the magic
        let e = err(&data);
        assert!(matches!(e.kind, ReadErrorKind::NonZeroPadding), "{e}");
        assert_eq!(e.offset, 21);
    }

    #[test]
    fn rejects_unsorted_and_duplicate_names() {
        let e = err(&dir_nar(&[(b"b", FILE), (b"a", FILE)]));
        assert_eq!(
            e.to_string(),
            format!(
                "NAR byte {}: directory entry names out of order (\"a\" after \"b\")",
                e.offset
            )
        );
        // magic 24 + "(" "type" "directory" 56 = 80; first entry: "entry" "(" "name" 48,
        // name 16, "node" 16, FILE 96, ")" 16 = 192; then "entry" "(" "name" 48.
        assert_eq!(e.offset, 80 + 192 + 48);
        let e = err(&dir_nar(&[(b"a", FILE), (b"a", FILE)]));
        assert!(matches!(e.kind, ReadErrorKind::DuplicateName { .. }), "{e}");
        // Byte order, not locale order: "B" (0x42) sorts before "a" (0x61).
        trace(&dir_nar(&[(b"B", FILE), (b"a", FILE)])).unwrap();
        let e = err(&dir_nar(&[(b"a", FILE), (b"B", FILE)]));
        assert!(
            matches!(e.kind, ReadErrorKind::NamesOutOfOrder { .. }),
            "{e}"
        );
        // Prefixes sort first.
        trace(&dir_nar(&[(b"a", FILE), (b"a-b", FILE), (b"ab", FILE)])).unwrap();
    }

    #[test]
    fn rejects_bad_names() {
        for (name, reason) in [
            (&b".."[..], "reserved"),
            (b".", "reserved"),
            (b"", "empty"),
            (b"a/b", "contains '/'"),
            (b"/", "contains '/'"),
            (b"a\0b", "contains NUL"),
        ] {
            let e = err(&dir_nar(&[(name, FILE)]));
            match &e.kind {
                ReadErrorKind::InvalidName { name: n, reason: r } => {
                    assert_eq!((n.as_slice(), *r), (name, reason))
                }
                _ => panic!("{e}"),
            }
            assert_eq!(e.offset, 128);
        }
        let long = vec![b'x'; wire::MAX_NAME_LEN + 1];
        let e = err(&dir_nar(&[(&long, FILE)]));
        assert!(matches!(e.kind, ReadErrorKind::TooLong { .. }), "{e}");
    }

    #[test]
    fn rejects_bad_symlink_targets() {
        for target in [&b""[..], b"a\0b"] {
            let e = err(&nar(&[
                b"nix-archive-1",
                b"(",
                b"type",
                b"symlink",
                b"target",
                target,
                b")",
            ]));
            assert!(matches!(e.kind, ReadErrorKind::InvalidTarget { .. }), "{e}");
        }
        let long = vec![b'x'; wire::MAX_TARGET_LEN + 1];
        let e = err(&nar(&[
            b"nix-archive-1",
            b"(",
            b"type",
            b"symlink",
            b"target",
            &long,
            b")",
        ]));
        assert!(matches!(e.kind, ReadErrorKind::TooLong { .. }), "{e}");
    }

    fn nested(depth: usize) -> Vec<u8> {
        let mut parts: Vec<&[u8]> = vec![b"nix-archive-1"];
        for _ in 0..depth {
            parts.extend_from_slice(&[
                b"(",
                b"type",
                b"directory",
                b"entry",
                b"(",
                b"name",
                b"d",
                b"node",
            ]);
        }
        parts.extend_from_slice(&[b"(", b"type", b"directory", b")"]);
        for _ in 0..depth {
            parts.extend_from_slice(&[b")", b")"]);
        }
        nar(&parts)
    }

    #[test]
    fn nesting_depth_is_bounded() {
        trace(&nested(wire::MAX_DEPTH - 1)).unwrap();
        let e = err(&nested(wire::MAX_DEPTH));
        assert!(matches!(e.kind, ReadErrorKind::TooDeep { max: 256 }), "{e}");
    }

    #[test]
    fn rejects_trailing_data() {
        let mut data = sample();
        let end = data.len() as u64;
        data.push(0);
        let e = err(&data);
        assert!(matches!(e.kind, ReadErrorKind::TrailingData), "{e}");
        assert_eq!(e.offset, end);
        let mut data = sample();
        data.extend_from_slice(&sample());
        assert!(matches!(err(&data).kind, ReadErrorKind::TrailingData));
    }

    #[test]
    fn rejects_misplaced_tokens() {
        for parts in [
            &[&b"nix-archive-1"[..], b"(", b"type", b"fifo", b")"][..],
            &[b"nix-archive-1", b")", b"type"],
            &[b"nix-archive-1", b"(", b"kind", b"regular"],
            &[
                b"nix-archive-1",
                b"(",
                b"type",
                b"regular",
                b"executable",
                b"x",
                b"contents",
            ],
            &[
                b"nix-archive-1",
                b"(",
                b"type",
                b"regular",
                b"contents",
                b"",
                b"executable",
                b"",
                b")",
            ],
            &[b"nix-archive-1", b"(", b"type", b"directory", b"name", b"a"],
            &[
                b"nix-archive-1",
                b"(",
                b"type",
                b"symlink",
                b"contents",
                b"a",
                b")",
            ],
        ] {
            let e = err(&nar(parts));
            assert!(
                matches!(e.kind, ReadErrorKind::UnexpectedToken { .. }),
                "{e}"
            );
        }
        // A huge length where a keyword is expected is rejected before reading it.
        let mut data = nar(&[b"nix-archive-1"]);
        data.extend_from_slice(&u64::MAX.to_le_bytes());
        let e = err(&data);
        assert!(
            matches!(e.kind, ReadErrorKind::UnexpectedLongToken { .. }),
            "{e}"
        );
        assert_eq!(e.offset, 24);
    }

    #[test]
    fn huge_declared_contents_is_truncation_not_allocation() {
        let mut data = nar(&[b"nix-archive-1", b"(", b"type", b"regular", b"contents"]);
        data.extend_from_slice(&(u64::MAX - 3).to_le_bytes());
        data.extend_from_slice(b"abc");
        let e = err(&data);
        assert!(matches!(e.kind, ReadErrorKind::Truncated { .. }), "{e}");
    }

    #[test]
    fn errors_poison_the_reader() {
        let data = sample();
        let mut r = Reader::new(&data[..10]);
        assert!(r.next().is_err());
        assert!(matches!(
            r.next().unwrap_err().kind,
            ReadErrorKind::Poisoned
        ));
    }

    #[test]
    fn io_error_roundtrip() {
        let e = ReadError {
            offset: 7,
            kind: ReadErrorKind::Truncated { expected: "\")\"" },
        };
        let io: io::Error = e.into();
        assert_eq!(io.kind(), io::ErrorKind::UnexpectedEof);
        let back = io.into_inner().unwrap().downcast::<ReadError>().unwrap();
        assert_eq!(back.offset, 7);
    }

    /// Every single-byte corruption is either accepted or an error, never a panic; most are
    /// errors at or before the corrupted byte.
    #[test]
    fn single_byte_corruptions_never_panic() {
        let data = sample();
        for i in 0..data.len() {
            for x in [0x01u8, 0x80, 0xff] {
                let mut bad = data.clone();
                bad[i] ^= x;
                if let Err(e) = trace(&bad) {
                    // Reported where the damage is, or where it became detectable (a length
                    // change shows up later, at the latest at the end of the input).
                    assert!(e.offset <= bad.len() as u64, "{i}: {e}");
                }
            }
        }
    }

    /// Reads through a reader that returns one byte at a time.
    #[test]
    fn byte_at_a_time_input() {
        struct Slow<'a>(&'a [u8]);
        impl Read for Slow<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                if self.0.is_empty() || buf.is_empty() {
                    return Ok(0);
                }
                buf[0] = self.0[0];
                self.0 = &self.0[1..];
                Ok(1)
            }
        }
        let data = sample();
        let mut r = Reader::new(Slow(&data));
        let mut n = 0;
        while r.next().unwrap().is_some() {
            n += 1;
        }
        assert_eq!(n, 15);
    }
}
