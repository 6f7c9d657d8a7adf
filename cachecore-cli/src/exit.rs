//! Exit statuses: the kind of a failure (`cachecore::error::ErrorKind`) mapped to a number a
//! script can act on. Listed in `cachecore --help` and the README.

use std::process::ExitCode;

use cachecore::error::ErrorKind;

/// The table printed at the end of `cachecore --help`.
pub const HELP: &str = "\
Exit status:
  0  success
  1  the cache is bad: verify found problems, or data read from a cache is corrupt or untrusted
  2  bad usage or input: arguments, URLs, keys or local files that are wrong
  3  could not check: the store is unreachable, failed, or refused access (credentials, bucket)
  4  not found: the store path or object asked for is not there
  5  refused: the store cannot do this (read-only, unsupported) or it would replace something
  6  local failure: reading or writing local files or the local Nix store failed";

/// Everything verify found (or data read from a cache) is bad.
pub const CACHE_BAD: u8 = 1;
/// Arguments and input, including clap's own usage errors.
pub const BAD_INPUT: u8 = 2;
pub const COULD_NOT_CHECK: u8 = 3;
pub const NOT_FOUND: u8 = 4;
pub const REFUSED: u8 = 5;
pub const LOCAL: u8 = 6;

/// The status for one kind.
pub fn status(kind: ErrorKind) -> u8 {
    match kind {
        ErrorKind::Corrupt | ErrorKind::Untrusted => CACHE_BAD,
        ErrorKind::InvalidInput => BAD_INPUT,
        ErrorKind::Unavailable | ErrorKind::Denied => COULD_NOT_CHECK,
        ErrorKind::NotFound => NOT_FOUND,
        ErrorKind::Conflict | ErrorKind::Unsupported => REFUSED,
        _ => LOCAL,
    }
}

/// The kind of the first error in the chain that has one ([`ErrorKind::of`]). An `io::Error`
/// of the CLI's own (not one of the core's) is about a local file the user named: a missing,
/// unreadable or malformed one is bad input.
fn kind_of(err: &anyhow::Error) -> Option<ErrorKind> {
    err.chain().find_map(|cause| {
        ErrorKind::of(cause).or_else(|| {
            use std::io::ErrorKind as K;
            let io = cause.downcast_ref::<std::io::Error>()?;
            Some(match io.kind() {
                K::NotFound | K::PermissionDenied | K::InvalidInput | K::InvalidData => {
                    ErrorKind::InvalidInput
                }
                _ => ErrorKind::Local,
            })
        })
    })
}

/// The exit code for an error that ended the command. An error the CLI made itself (a bad
/// combination of arguments) has no kind and is bad usage.
pub fn code(err: &anyhow::Error) -> ExitCode {
    ExitCode::from(kind_of(err).map_or(BAD_INPUT, status))
}
