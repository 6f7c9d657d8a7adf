//! Standard output that remembers whether its reader went away.
//!
//! `cachecore nar pack x | head` must exit quietly, as `cat` does, when `head` closes the pipe;
//! but an error that merely mentions a broken pipe (a peer closing a socket, say) must still be
//! reported. Commands write through [`stdout`], and `main` asks [`closed`] which one it was.

use std::fmt;
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};

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

/// `println!` through [`stdout`], returning the error instead of panicking on a closed pipe.
macro_rules! outln {
    ($($arg:tt)*) => {
        ::std::io::Write::write_fmt(&mut $crate::stdout::stdout(), format_args!("{}\n", format_args!($($arg)*)))
    };
}
pub(crate) use outln;
