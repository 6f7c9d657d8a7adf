//! A typestate streaming NAR writer over any [`Write`].
//!
//! ```
//! # fn main() -> std::io::Result<()> {
//! use cachecore::nar::writer;
//!
//! let mut nar = Vec::new();
//! let mut root = writer::open(&mut nar)?.directory()?;
//! root.entry(b"bin")?.directory()?.close()?;
//! let offset = root.entry(b"hello.txt")?.file(false, 5, &mut &b"hello"[..])?;
//! root.entry(b"link")?.symlink(b"hello.txt")?;
//! root.close()?; // completes the NAR and flushes the output
//! assert_eq!(&nar[offset as usize..][..5], b"hello");
//! # Ok(()) }
//! ```
//!
//! Each [`Node`] is consumed by writing it, a [`Directory`] lends out one child at a time, and
//! entry names are checked (valid, strictly increasing), so the output is always a canonical NAR
//! — unless a `Node` or `Directory` is dropped unfinished, which leaves the NAR incomplete.
//! After any I/O error the writer refuses further writes.
//!
//! ```compile_fail,E0499
//! # fn main() -> std::io::Result<()> {
//! # use cachecore::nar::writer;
//! let mut dir = writer::open(Vec::new())?.directory()?;
//! let a = dir.entry(b"a")?;
//! let b = dir.entry(b"b")?; // `dir` is still lent to `a`
//! # a.symlink(b"x")?; b.symlink(b"y")?;
//! # Ok(()) }
//! ```
//!
//! The writer buffers internally (64 KiB by default; see [`open_with_capacity`]) and reads file
//! contents straight into that buffer, so do not wrap the output in a `BufWriter`. The output is
//! flushed when the root node is complete.

use std::fmt;
use std::fs::File;
use std::io::{self, Read, Write};

use super::reader::quoted;
use super::wire;

const DEFAULT_CAPACITY: usize = 64 * 1024;
const MIN_CAPACITY: usize = 8 * 1024;

/// Starts a NAR: writes the magic and returns the root node. Buffers 64 KiB.
///
/// ```
/// use cachecore::nar::{writer, Listing, ListingNode};
/// let mut nar = Vec::new();
/// let mut root = writer::open(&mut nar).unwrap().directory().unwrap();
/// let mut bin = root.entry(b"bin").unwrap().directory().unwrap();
/// bin.entry(b"hello").unwrap().file(true, 3, &mut &b"hi\n"[..]).unwrap();
/// bin.close().unwrap();
/// root.entry(b"lib").unwrap().symlink(b"bin").unwrap();
/// root.close().unwrap();
/// let listing = Listing::from_nar(&nar[..]).unwrap();
/// assert!(matches!(listing.get("bin/hello"),
///     Some(ListingNode::Regular { size: 3, executable: true, .. })));
/// assert!(matches!(listing.get("lib"), Some(ListingNode::Symlink { target }) if target == "bin"));
/// ```
pub fn open<'a, W: Write + 'a>(w: W) -> io::Result<Node<'a, W>> {
    open_with_capacity(w, DEFAULT_CAPACITY)
}

/// Like [`open`] with an output buffer of up to `capacity` bytes (at least 8 KiB). The buffer
/// starts small and grows (doubling) only while file contents need room, so a tiny NAR does not
/// pay for clearing a large buffer.
pub fn open_with_capacity<'a, W: Write + 'a>(w: W, capacity: usize) -> io::Result<Node<'a, W>> {
    open_inner(w, capacity, None)
}

/// An output that can take a regular file's contents from the file itself, without them
/// passing through the NAR writer's buffer: the CLI's standard output moves a file's pages into
/// a pipe with splice(2). See [`dump_to`](super::dump_to).
pub trait FileSink: Write {
    /// The size from which a file's contents are handed to [`write_file`](Self::write_file)
    /// rather than read and written; `None`: never (not on this output).
    fn write_file_from(&self) -> Option<u64>;

    /// Writes up to `len` bytes of `file` from its position, which it advances, and returns how
    /// many: 0 only at the file's end. All that the NAR writer wrote before has been written
    /// to `self` (and flushed) first. After an error, the NAR writer reads and writes the rest of
    /// the file itself, so that a failure is then reported as what it is: reading the file
    /// (named) or writing the output.
    fn write_file(&mut self, file: &File, len: u64) -> io::Result<u64>;
}

/// How a [`FileSink`]'s `write_file` is called on the writer's output, and from what size.
struct MoveFiles<W> {
    from: u64,
    write_file: fn(&mut W, &File, u64) -> io::Result<u64>,
}

impl<W: FileSink + ?Sized> FileSink for &mut W {
    fn write_file_from(&self) -> Option<u64> {
        (**self).write_file_from()
    }
    fn write_file(&mut self, file: &File, len: u64) -> io::Result<u64> {
        (**self).write_file(file, len)
    }
}

/// [`open_with_capacity`], with the contents of regular files given to
/// [`Node::regular_file`] handed to `w` whole from the size it asks for on.
pub(crate) fn open_moving_files<'a, W: FileSink + 'a>(
    w: W,
    capacity: usize,
) -> io::Result<Node<'a, W>> {
    let move_files = w.write_file_from().map(|from| MoveFiles {
        from,
        write_file: |w: &mut W, file: &File, len: u64| w.write_file(file, len),
    });
    open_inner(w, capacity, move_files)
}

fn open_inner<'a, W: Write + 'a>(
    w: W,
    capacity: usize,
    move_files: Option<MoveFiles<W>>,
) -> io::Result<Node<'a, W>> {
    let max_capacity = capacity.max(MIN_CAPACITY);
    let mut sink = Sink {
        w,
        buf: vec![0; MIN_CAPACITY].into_boxed_slice(),
        max_capacity,
        filled: 0,
        offset: 0,
        poisoned: false,
        move_files,
    };
    sink.put(&wire::MAGIC_TOKEN)?;
    Ok(Node {
        sink: SinkRef::Owned(sink),
        name: None,
        depth: 0,
    })
}

/// A node still to be written: the root or a directory entry's node.
#[must_use = "a NAR node must be written with file(), symlink() or directory()"]
pub struct Node<'a, W: Write> {
    sink: SinkRef<'a, W>,
    /// The entry name whose header is written lazily, so an unused entry leaves no trace.
    name: Option<&'a [u8]>,
    /// Number of enclosing directories.
    depth: usize,
}

/// An open directory; add entries in strictly increasing byte order, then [`close`](Self::close).
#[must_use = "a directory must be closed"]
pub struct Directory<'a, W: Write> {
    sink: SinkRef<'a, W>,
    is_entry: bool,
    depth: usize,
    prev: Vec<u8>,
    has_prev: bool,
}

/// What kind of reader file contents come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    /// Any reader: only `Ok(0)` means the end.
    Stream,
    /// A local regular file: a read shorter than requested means the end of the file (as on
    /// Linux), which saves one `read` per file when checking that it did not grow. If a
    /// filesystem returned a short read early anyway, the next read continues from there; at
    /// worst growth after that point goes unnoticed, and the NAR is still well-formed.
    RegularFile,
}

/// Why copying a file's contents failed (kept apart so `pack` can name the culprit).
#[derive(Debug)]
pub(crate) enum FileError {
    Read(io::Error),
    Write(io::Error),
    /// The reader ended after `actual` bytes.
    TooShort {
        actual: u64,
    },
    /// The reader had more than the declared size.
    TooLong,
}

impl From<FileError> for io::Error {
    fn from(e: FileError) -> io::Error {
        match e {
            FileError::Read(e) | FileError::Write(e) => e,
            FileError::TooShort { actual } => io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("file contents ended after {actual} bytes, before the declared size"),
            ),
            FileError::TooLong => io::Error::new(
                io::ErrorKind::InvalidData,
                "file contents are longer than the declared size",
            ),
        }
    }
}

impl<'a, W: Write> Node<'a, W> {
    /// Writes a regular file of exactly `size` bytes read from `contents`; fails (leaving the
    /// NAR unfinished) if `contents` yields fewer or more bytes. Returns the NAR offset of the
    /// first content byte (the listing's `narOffset`).
    ///
    /// ```
    /// use cachecore::nar::writer;
    /// let mut nar = Vec::new();
    /// let at = writer::open(&mut nar).unwrap().file(false, 5, &mut &b"hello"[..]).unwrap();
    /// assert_eq!(&nar[at as usize..][..5], b"hello");
    /// // Fewer bytes than announced.
    /// assert!(writer::open(Vec::new()).unwrap().file(false, 5, &mut &b"hi"[..]).is_err());
    /// ```
    pub fn file(self, executable: bool, size: u64, contents: &mut impl Read) -> io::Result<u64> {
        Ok(self.file_from(executable, size, contents, Source::Stream)?)
    }

    pub(crate) fn file_from(
        mut self,
        executable: bool,
        size: u64,
        contents: &mut impl Read,
        source: Source,
    ) -> Result<u64, FileError> {
        let nar_offset = self.file_header(executable, size)?;
        self.sink.get().copy_from(size, contents, source)?;
        self.file_end(size)?;
        Ok(nar_offset)
    }

    /// [`file_from`](Self::file_from) a local regular file: its contents handed to the output
    /// whole when the writer was opened [moving files](open_moving_files) of its size, else
    /// read and written.
    pub(crate) fn regular_file(
        mut self,
        executable: bool,
        size: u64,
        file: &mut File,
    ) -> Result<u64, FileError> {
        let nar_offset = self.file_header(executable, size)?;
        self.sink.get().copy_file(size, file)?;
        self.file_end(size)?;
        Ok(nar_offset)
    }

    /// Writes a regular file's entry up to its contents; returns their NAR offset.
    fn file_header(&mut self, executable: bool, size: u64) -> Result<u64, FileError> {
        let sink = self.sink.get();
        let header = if executable {
            &wire::EXECUTABLE[..]
        } else {
            &wire::REGULAR[..]
        };
        write_entry_header(sink, self.name).map_err(FileError::Write)?;
        sink.put(header).map_err(FileError::Write)?;
        sink.put(&size.to_le_bytes()).map_err(FileError::Write)?;
        Ok(sink.offset)
    }

    /// Writes a regular file's entry after its `size` bytes of contents.
    fn file_end(mut self, size: u64) -> Result<(), FileError> {
        self.sink
            .get()
            .put(&wire::ZEROS[..wire::padding(size)])
            .map_err(FileError::Write)?;
        self.end().map_err(FileError::Write)
    }

    /// Writes a symlink. The target is stored as-is; it must be non-empty, without NUL, and at
    /// most [`MAX_TARGET_LEN`](super::MAX_TARGET_LEN) bytes.
    ///
    /// See [`open`] for an example.
    pub fn symlink(mut self, target: &[u8]) -> io::Result<()> {
        if let Some(reason) = wire::target_problem(target) {
            return Err(invalid(format!(
                "invalid symlink target {} ({reason})",
                quoted(target)
            )));
        }
        let sink = self.sink.get();
        write_entry_header(sink, self.name)?;
        sink.put(&wire::SYMLINK)?;
        sink.put_str(target)?;
        self.end()
    }

    /// Starts a directory. Fails if it would nest deeper than [`MAX_DEPTH`](super::MAX_DEPTH).
    ///
    /// See [`open`] for an example.
    pub fn directory(mut self) -> io::Result<Directory<'a, W>> {
        if self.depth >= wire::MAX_DEPTH {
            return Err(invalid(format!(
                "directories nested deeper than {} levels",
                wire::MAX_DEPTH
            )));
        }
        let sink = self.sink.get();
        write_entry_header(sink, self.name)?;
        sink.put(&wire::DIRECTORY)?;
        Ok(Directory {
            sink: self.sink,
            is_entry: self.name.is_some(),
            depth: self.depth + 1,
            prev: Vec::new(),
            has_prev: false,
        })
    }

    /// NAR bytes written so far (including buffered ones).
    pub fn offset(&self) -> u64 {
        self.sink.get_ref().offset
    }

    fn end(mut self) -> io::Result<()> {
        let is_entry = self.name.is_some();
        close(self.sink.get(), is_entry)
    }
}

impl<W: Write> Directory<'_, W> {
    /// Starts the entry `name`, which must be valid (non-empty, no `/` or NUL, not `.` or `..`,
    /// at most [`MAX_NAME_LEN`](super::MAX_NAME_LEN) bytes) and greater, bytewise, than the
    /// previous entry's name. Nothing is written until the returned node is.
    ///
    /// ```
    /// use cachecore::nar::writer;
    /// let mut root = writer::open(Vec::new()).unwrap().directory().unwrap();
    /// root.entry(b"b").unwrap().symlink(b"x").unwrap();
    /// assert!(root.entry(b"a").is_err()); // not after "b"
    /// ```
    ///
    /// See [`open`] for a whole NAR.
    pub fn entry(&mut self, name: &[u8]) -> io::Result<Node<'_, W>> {
        self.sink.get().check()?;
        if let Some(reason) = wire::name_problem(name) {
            return Err(invalid(format!(
                "invalid NAR entry name {} ({reason})",
                quoted(name)
            )));
        }
        if self.has_prev && name <= self.prev.as_slice() {
            return Err(invalid(format!(
                "NAR entry names must be strictly increasing: {} after {}",
                quoted(name),
                quoted(&self.prev)
            )));
        }
        self.prev.clear();
        self.prev.extend_from_slice(name);
        self.has_prev = true;
        Ok(Node {
            sink: SinkRef::Borrowed(self.sink.get()),
            name: Some(&self.prev),
            depth: self.depth,
        })
    }

    /// Ends the directory.
    ///
    /// See [`open`] for an example.
    pub fn close(mut self) -> io::Result<()> {
        close(self.sink.get(), self.is_entry)
    }

    /// NAR bytes written so far (including buffered ones).
    pub fn offset(&self) -> u64 {
        self.sink.get_ref().offset
    }
}

impl<W: Write> fmt::Debug for Node<'_, W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Node")
            .field("offset", &self.offset())
            .field("name", &self.name.map(quoted))
            .field("depth", &self.depth)
            .finish_non_exhaustive()
    }
}

impl<W: Write> fmt::Debug for Directory<'_, W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Directory")
            .field("offset", &self.offset())
            .field("depth", &self.depth)
            .finish_non_exhaustive()
    }
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

fn write_entry_header<W: Write>(sink: &mut Sink<W>, name: Option<&[u8]>) -> io::Result<()> {
    sink.check()?;
    if let Some(name) = name {
        sink.put(&wire::ENTRY)?;
        sink.put_str(name)?;
        sink.put(&wire::ENTRY_NODE)?;
    }
    Ok(())
}

/// Closes a node (and its entry); completing the root flushes the output.
fn close<W: Write>(sink: &mut Sink<W>, is_entry: bool) -> io::Result<()> {
    sink.put(&wire::CLOSE)?;
    if is_entry {
        sink.put(&wire::CLOSE)
    } else {
        sink.finish()
    }
}

enum SinkRef<'a, W> {
    Owned(Sink<W>),
    Borrowed(&'a mut Sink<W>),
}

impl<W> SinkRef<'_, W> {
    fn get(&mut self) -> &mut Sink<W> {
        match self {
            SinkRef::Owned(s) => s,
            SinkRef::Borrowed(s) => s,
        }
    }

    fn get_ref(&self) -> &Sink<W> {
        match self {
            SinkRef::Owned(s) => s,
            SinkRef::Borrowed(s) => s,
        }
    }
}

/// The output with its buffer and byte count.
struct Sink<W> {
    w: W,
    buf: Box<[u8]>,
    /// What `buf` may grow to.
    max_capacity: usize,
    filled: usize,
    /// Bytes of NAR produced, buffered or not.
    offset: u64,
    poisoned: bool,
    /// Regular files the output takes whole.
    move_files: Option<MoveFiles<W>>,
}

impl<W: Write> Sink<W> {
    fn check(&self) -> io::Result<()> {
        if self.poisoned {
            Err(io::Error::other("NAR writer used again after an error"))
        } else {
            Ok(())
        }
    }

    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.check()?;
        if bytes.len() > self.buf.len() - self.filled {
            self.flush_buf()?;
        }
        if bytes.len() > self.buf.len() {
            if let Err(e) = self.w.write_all(bytes) {
                self.poisoned = true;
                return Err(e);
            }
        } else {
            self.buf[self.filled..self.filled + bytes.len()].copy_from_slice(bytes);
            self.filled += bytes.len();
        }
        self.offset += bytes.len() as u64;
        Ok(())
    }

    fn put_str(&mut self, s: &[u8]) -> io::Result<()> {
        self.put(&(s.len() as u64).to_le_bytes())?;
        self.put(s)?;
        self.put(&wire::ZEROS[..wire::padding(s.len() as u64)])
    }

    /// Grows the buffer (doubling, up to `max_capacity`) towards `filled + wanted` bytes.
    fn reserve(&mut self, wanted: u64) {
        let needed = (self.filled as u64).saturating_add(wanted);
        let mut len = self.buf.len();
        while (len as u64) < needed && len < self.max_capacity {
            len = (len * 2).min(self.max_capacity);
        }
        if len > self.buf.len() {
            let mut grown = vec![0; len].into_boxed_slice();
            grown[..self.filled].copy_from_slice(&self.buf[..self.filled]);
            self.buf = grown;
        }
    }

    fn flush_buf(&mut self) -> io::Result<()> {
        if self.filled > 0 {
            let result = self.w.write_all(&self.buf[..self.filled]);
            self.filled = 0;
            if let Err(e) = result {
                self.poisoned = true;
                return Err(e);
            }
        }
        Ok(())
    }

    fn finish(&mut self) -> io::Result<()> {
        self.flush_buf()?;
        if let Err(e) = self.w.flush() {
            self.poisoned = true;
            return Err(e);
        }
        Ok(())
    }

    /// Copies exactly `size` bytes from `r`, reading straight into the buffer, then checks
    /// that `r` is at its end.
    fn copy_from(&mut self, size: u64, r: &mut impl Read, source: Source) -> Result<(), FileError> {
        let result = self.copy_from_inner(size, r, source);
        if result.is_err() {
            self.poisoned = true;
        }
        result
    }

    /// Copies exactly `size` bytes of a regular file: handed to the output if it takes files
    /// of that size, else read into the buffer ([`copy_from`](Self::copy_from)).
    fn copy_file(&mut self, size: u64, file: &mut File) -> Result<(), FileError> {
        let write_file = match &self.move_files {
            Some(m) if size >= m.from => m.write_file,
            _ => return self.copy_from(size, file, Source::RegularFile),
        };
        let result = self.move_file(size, file, write_file);
        if result.is_err() {
            self.poisoned = true;
        }
        result
    }

    fn move_file(
        &mut self,
        size: u64,
        file: &mut File,
        write_file: fn(&mut W, &File, u64) -> io::Result<u64>,
    ) -> Result<(), FileError> {
        self.check().map_err(FileError::Write)?;
        self.flush_buf().map_err(FileError::Write)?;
        self.w.flush().map_err(FileError::Write)?;
        let mut moved = 0;
        while moved < size {
            match write_file(&mut self.w, file, size - moved) {
                Ok(0) => return Err(FileError::TooShort { actual: moved }),
                Ok(n) if n > size - moved => return Err(FileError::TooLong),
                Ok(n) => {
                    moved += n;
                    self.offset += n;
                }
                // Read and write the rest here: a failure says then which side it is.
                Err(_) => {
                    return self
                        .copy_from(size - moved, file, Source::RegularFile)
                        .map_err(|e| match e {
                            FileError::TooShort { actual } => FileError::TooShort {
                                actual: moved + actual,
                            },
                            e => e,
                        })
                }
            }
        }
        // Nothing more: the file did not grow.
        if read_retrying(file, &mut [0u8])? != 0 {
            return Err(FileError::TooLong);
        }
        Ok(())
    }

    fn copy_from_inner(
        &mut self,
        size: u64,
        r: &mut impl Read,
        source: Source,
    ) -> Result<(), FileError> {
        // Room for the contents and the end-of-file probe byte, as far as the buffer may grow.
        self.reserve(size.saturating_add(1));
        let cap = self.buf.len();
        let mut remaining = size;
        let mut at_end = false;
        while remaining > 0 {
            let spare = cap - self.filled;
            // Keep reads large: flush rather than read a small tail of the buffer.
            if spare == 0 || ((spare as u64) < remaining && spare < cap / 4) {
                self.flush_buf().map_err(FileError::Write)?;
            }
            let spare = cap - self.filled;
            // For a regular file, ask for one byte more than expected to see the end.
            let ask = match source {
                Source::Stream => remaining,
                Source::RegularFile => remaining.saturating_add(1),
            };
            let want = usize::try_from(ask).map_or(spare, |r| r.min(spare));
            let n = read_retrying(r, &mut self.buf[self.filled..self.filled + want])?;
            if n == 0 {
                return Err(FileError::TooShort {
                    actual: size - remaining,
                });
            }
            if n as u64 > remaining {
                return Err(FileError::TooLong);
            }
            at_end = source == Source::RegularFile && n < want;
            self.filled += n;
            self.offset += n as u64;
            remaining -= n as u64;
        }
        if at_end {
            return Ok(());
        }
        if self.filled == cap {
            self.flush_buf().map_err(FileError::Write)?;
        }
        // Probe for extra bytes; they land in the spare part of the buffer and are ignored.
        let probe = self.filled + 1;
        if read_retrying(r, &mut self.buf[self.filled..probe])? != 0 {
            return Err(FileError::TooLong);
        }
        Ok(())
    }
}

fn read_retrying(r: &mut impl Read, buf: &mut [u8]) -> Result<usize, FileError> {
    loop {
        match r.read(buf) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(FileError::Read(e)),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::reader::tests::{nar, sample};
    use super::*;

    #[test]
    fn writes_the_sample_byte_for_byte() {
        let mut out = Vec::new();
        let mut root = open(&mut out).unwrap().directory().unwrap();
        let off = root
            .entry(b"a")
            .unwrap()
            .file(true, 10, &mut &b"#!/bin/sh\n"[..])
            .unwrap();
        assert_eq!(off, 264);
        {
            let mut b = root.entry(b"b").unwrap().directory().unwrap();
            b.entry(b"c").unwrap().symlink(b"../a").unwrap();
            b.close().unwrap();
        }
        root.entry(b"d")
            .unwrap()
            .file(false, 0, &mut io::empty())
            .unwrap();
        root.close().unwrap();
        assert_eq!(out, sample());
    }

    #[test]
    fn single_nodes() {
        let mut out = Vec::new();
        open(&mut out).unwrap().symlink(b"/nix/store").unwrap();
        assert_eq!(
            out,
            nar(&[
                b"nix-archive-1",
                b"(",
                b"type",
                b"symlink",
                b"target",
                b"/nix/store",
                b")"
            ])
        );
        let mut out = Vec::new();
        open(&mut out)
            .unwrap()
            .directory()
            .unwrap()
            .close()
            .unwrap();
        assert_eq!(
            out,
            nar(&[b"nix-archive-1", b"(", b"type", b"directory", b")"])
        );
    }

    #[test]
    fn names_must_increase_and_be_valid() {
        let mut out = Vec::new();
        let mut root = open(&mut out).unwrap().directory().unwrap();
        root.entry(b"b").unwrap().symlink(b"x").unwrap();
        for bad in [&b"a"[..], b"b", b"", b".", b"..", b"c/d", b"c\0"] {
            let e = root.entry(bad).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{e}");
        }
        // Rejected names leave the writer usable.
        root.entry(b"c").unwrap().symlink(b"x").unwrap();
        root.close().unwrap();
        super::super::reader::tests::trace(&out).unwrap();
    }

    #[test]
    fn unused_entry_writes_nothing() {
        let mut out = Vec::new();
        let mut root = open(&mut out).unwrap().directory().unwrap();
        let _ = root.entry(b"a").unwrap();
        root.entry(b"b").unwrap().symlink(b"x").unwrap();
        root.close().unwrap();
        assert_eq!(
            super::super::reader::tests::trace(&out).unwrap()[1],
            "entry \"b\""
        );
    }

    #[test]
    fn size_mismatch_is_an_error_and_poisons() {
        let mut out = Vec::new();
        let mut root = open(&mut out).unwrap().directory().unwrap();
        let e = root
            .entry(b"a")
            .unwrap()
            .file(false, 5, &mut &b"1234"[..])
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        assert!(root.entry(b"b").is_err());
        let e = open(io::sink())
            .unwrap()
            .file(false, 3, &mut &b"1234"[..])
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn regular_file_source_detects_growth_and_shrinking() {
        for (declared, data, ok) in [
            (4u64, &b"1234"[..], true),
            (3, b"1234", false),
            (5, b"1234", false),
            (0, b"", true),
            (0, b"1", false),
        ] {
            for source in [Source::Stream, Source::RegularFile] {
                let node = open(io::sink()).unwrap();
                let result = node.file_from(false, declared, &mut &data[..], source);
                assert_eq!(
                    result.is_ok(),
                    ok,
                    "{declared} {data:?} {source:?}: {result:?}"
                );
            }
        }
        // A reader returning short reads mid-file is fine either way.
        struct Dribble<'a>(&'a [u8]);
        impl Read for Dribble<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                let n = buf.len().min(self.0.len()).min(3);
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let data = vec![5u8; 100_000];
        for source in [Source::Stream, Source::RegularFile] {
            let mut out = Vec::new();
            let off = open(&mut out)
                .unwrap()
                .file_from(false, 100_000, &mut Dribble(&data), source)
                .unwrap();
            assert_eq!(&out[off as usize..][..100_000], &data[..]);
        }
    }

    #[test]
    fn bad_symlink_targets() {
        assert!(open(io::sink()).unwrap().symlink(b"").is_err());
        assert!(open(io::sink()).unwrap().symlink(b"a\0").is_err());
    }

    #[test]
    fn depth_limit() {
        fn nest<W: Write>(node: Node<'_, W>, levels: usize) -> io::Result<()> {
            let mut dir = node.directory()?;
            if levels > 1 {
                nest(dir.entry(b"d")?, levels - 1)?;
            }
            dir.close()
        }
        nest(open(io::sink()).unwrap(), wire::MAX_DEPTH).unwrap();
        assert!(nest(open(io::sink()).unwrap(), wire::MAX_DEPTH + 1).is_err());
    }

    #[test]
    fn large_contents_cross_buffer_boundaries() {
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        for cap in [0, 10_000, 65_536, 1 << 20] {
            let mut out = Vec::new();
            let mut root = open_with_capacity(&mut out, cap)
                .unwrap()
                .directory()
                .unwrap();
            root.entry(b"a")
                .unwrap()
                .file(false, 3, &mut &b"abc"[..])
                .unwrap();
            let off = root
                .entry(b"big")
                .unwrap()
                .file(true, data.len() as u64, &mut &data[..])
                .unwrap();
            root.close().unwrap();
            assert_eq!(&out[off as usize..][..data.len()], &data[..]);
            super::super::reader::tests::trace(&out).unwrap();
        }
    }

    #[test]
    fn write_errors_poison() {
        struct Full;
        impl Write for Full {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::Error::other("disk full"))
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let mut root = open(Full).unwrap().directory().unwrap();
        root.entry(b"a").unwrap().symlink(b"x").unwrap();
        assert!(root.close().is_err());
    }
}
