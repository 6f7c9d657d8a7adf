//! Standard output that remembers whether its reader went away.
//!
//! `cachecore nar pack x | head` must exit quietly, as `cat` does, when `head` closes the pipe;
//! but an error that merely mentions a broken pipe (a peer closing a socket, say) must still be
//! reported. Commands write through [`stdout`] (or [`stream`]), and `main` asks [`closed`] which
//! one it was.
//!
//! A command that writes a stream of bytes (a NAR, a file's contents) writes through
//! [`stream`]: straight to the descriptor, and, when standard output is a pipe — where such a
//! stream almost always goes: `| zstd`, `| ssh`, `| nix-store --import` — with the pipe grown
//! first. A pipe holds 64 KiB by default; one 1 MiB write into it wakes the reader 16 times and
//! keeps the writer waiting until the reader has taken nearly all of it, so neither side works
//! while the other does (`nar pack | cat` was 0.75x `nix-store --dump | cat`). Grown to
//! [`PIPE_SIZE`] (`F_SETPIPE_SZ`, as zstd and pv do, up to `/proc/sys/fs/pipe-max-size`), with
//! writes cut to its capacity, a write lands whole and returns, and the writer reads the next
//! files while the reader drains the pipe. Where the kernel refuses (an unprivileged user past
//! `pipe-user-pages-soft`), writes are cut to the pipe's smaller capacity. Files and
//! `/dev/null` are written as they were.
//!
//! Into a pipe, a NAR's large files are not read and written at all: [`Stream`] is a
//! [`FileSink`], which moves their pages from the page cache into the pipe with splice(2)
//! ([`SPLICE_FROM`]).

use std::fmt;
use std::io::{self, Write};
use std::os::fd::AsFd as _;
use std::sync::atomic::{AtomicBool, Ordering};

use cachecore::nar::writer::FileSink;
use rustix::pipe::SpliceFlags;

static CLOSED: AtomicBool = AtomicBool::new(false);

/// Whether a write to standard output failed because its reader closed it.
pub fn closed() -> bool {
    CLOSED.load(Ordering::Relaxed)
}

/// Standard output (unbuffered beyond std's own line buffering; wrap it in a `BufWriter` for
/// many small writes).
pub fn stdout() -> Stdout {
    Stdout(io::stdout())
}

pub struct Stdout(io::Stdout);

impl fmt::Debug for Stdout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Stdout")
    }
}

fn note(e: io::Error) -> io::Error {
    if e.kind() == io::ErrorKind::BrokenPipe {
        CLOSED.store(true, Ordering::Relaxed);
    }
    e
}

impl Write for Stdout {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf).map_err(note)
    }
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.0.lock().write_all(buf).map_err(note)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.0.flush().map_err(note)
    }
}

/// The pipe size [`stream`] asks for. 256 KiB, not the NAR writer's 1 MiB buffer: with a 1 MiB
/// pipe `nar pack | cat` had the faster median (0.44 s against 0.59–0.68 s on the Python tree
/// of `benches/nar-vs-nix.sh`), but a long tail of runs spending seconds in the kernel (5 of 40
/// runs took 0.94–4.16 s, against 1 of 70 over 1.1 s with 256 KiB); 128 KiB was slower
/// throughout (0.85 s).
pub const PIPE_SIZE: usize = 256 << 10;

/// Standard output for a stream of bytes, written straight to the descriptor in writes of at
/// most the pipe's capacity (see the [module](self)); wrap it in [`Stream::buffered`] for
/// writes smaller than that.
pub fn stream() -> Stream {
    let mut out = io::stdout();
    // Anything std holds for it goes first (nothing, in practice: streams are written alone).
    let _ = out.flush();
    let max_write = pipe_capacity(&out).unwrap_or(usize::MAX);
    Stream { out, max_write }
}

pub struct Stream {
    out: io::Stdout,
    /// The pipe's capacity, or `usize::MAX` for anything but a pipe.
    max_write: usize,
}

impl Stream {
    /// A buffer in front of the stream, of the pipe's capacity (128 KiB for a file).
    pub fn buffered(self) -> io::BufWriter<Stream> {
        let capacity = self.pipe_capacity().map_or(1 << 17, |c| c.min(PIPE_SIZE));
        io::BufWriter::with_capacity(capacity, self)
    }

    /// The pipe's capacity after [`stream`] grew it; `None` when standard output is no pipe.
    pub fn pipe_capacity(&self) -> Option<usize> {
        (self.max_write != usize::MAX).then_some(self.max_write)
    }
}

impl fmt::Debug for Stream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stream")
            .field("pipe_capacity", &self.pipe_capacity())
            .finish()
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = buf.len().min(self.max_write);
        rustix::io::write(self.out.as_fd(), &buf[..n]).map_err(|e| note(e.into()))
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The size from which a regular file packed into a NAR ([`nar::dump_to`]) is moved into the
/// pipe with splice(2) rather than read and written: its pages go from the page cache into the
/// pipe by reference, and its bytes are copied once, by the reader, instead of three times.
/// Smaller files are cheaper in the writer's buffer, many to one write: spliced, each costs
/// a write, a splice and a probe read, and the reader wakes for its pages alone. On a Python
/// installation (630 MiB, 46,000 files), `nar pack | cat` from 256 KiB on: pack's CPU time -8%,
/// pages allocated for the pipe -29%, cat's CPU time +11%; from 4 KiB, cat's +88% and 30 times
/// the context switches.
///
/// [`nar::dump_to`]: cachecore::nar::dump_to
pub const SPLICE_FROM: u64 = 256 << 10;

impl FileSink for Stream {
    fn write_file_from(&self) -> Option<u64> {
        self.pipe_capacity().map(|_| SPLICE_FROM)
    }

    fn write_file(&mut self, file: &std::fs::File, len: u64) -> io::Result<u64> {
        let len = usize::try_from(len).map_or(self.max_write, |l| l.min(self.max_write));
        loop {
            match rustix::pipe::splice(
                file,
                None,
                self.out.as_fd(),
                None,
                len,
                SpliceFlags::empty(),
            ) {
                Ok(n) => return Ok(n as u64),
                Err(e) if e == rustix::io::Errno::INTR => {}
                Err(e) => return Err(note(e.into())),
            }
        }
    }
}

/// When `out` is a pipe: grows it towards [`PIPE_SIZE`] (as far as `pipe-max-size` allows and
/// the kernel agrees), and returns its capacity then. `None` for anything else.
fn pipe_capacity(out: &io::Stdout) -> Option<usize> {
    use rustix::fs::{fstat, FileType};
    use rustix::pipe::{fcntl_getpipe_size, fcntl_setpipe_size};
    let fd = out.as_fd();
    let st = fstat(fd).ok()?;
    if FileType::from_raw_mode(st.st_mode) != FileType::Fifo {
        return None;
    }
    let now = fcntl_getpipe_size(fd).ok()?;
    let most = std::fs::read_to_string("/proc/sys/fs/pipe-max-size")
        .ok()
        .and_then(|s| s.trim().parse::<usize>().ok())
        .unwrap_or(PIPE_SIZE);
    let wanted = PIPE_SIZE.min(most);
    if now >= wanted {
        return Some(now);
    }
    // Refused (EPERM past the user's pipe quota, EBUSY if it holds more): keep what it has.
    Some(fcntl_setpipe_size(fd, wanted).unwrap_or(now).max(now))
}

/// `println!` through [`stdout`], returning the error instead of panicking on a closed pipe.
macro_rules! outln {
    ($($arg:tt)*) => {
        ::std::io::Write::write_fmt(&mut $crate::stdout::stdout(), format_args!("{}\n", format_args!($($arg)*)))
    };
}
pub(crate) use outln;
