//! The wire grammar of the Nix worker protocol, apart from any socket.
//!
//! Every value is a little-endian 64-bit word or a byte string: its length as a word, the
//! bytes, then zeros up to a multiple of eight. A list is a count followed by its items. The
//! peer decides every length and count, so each read here takes a bound from the caller and
//! checks it before allocating anything; nothing a peer sends can make a read panic or
//! allocate more than its bound.

use std::io::{self, Read};

/// Why a value could not be read off the wire. `what` names the value ("the reference count").
#[derive(Debug, thiserror::Error)]
pub(crate) enum WireError {
    #[error("the connection ended in the middle of {what}")]
    Truncated { what: &'static str },
    #[error("{what} is {len} bytes long, more than the {max} allowed")]
    TooLong {
        what: &'static str,
        len: u64,
        max: usize,
    },
    #[error("{what} has {count} entries, more than the {max} allowed")]
    TooMany {
        what: &'static str,
        count: u64,
        max: usize,
    },
    #[error("the padding after {what} is not zeros")]
    BadPadding { what: &'static str },
    #[error("{what} is not UTF-8")]
    NotUtf8 { what: &'static str },
    #[error("reading {what}: {source}")]
    Io {
        what: &'static str,
        source: io::Error,
    },
}

/// Zeros needed after `len` bytes to reach a multiple of eight.
fn padding(len: usize) -> usize {
    (8 - len % 8) % 8
}

fn read_exact(r: &mut impl Read, buf: &mut [u8], what: &'static str) -> Result<(), WireError> {
    r.read_exact(buf).map_err(|source| {
        if source.kind() == io::ErrorKind::UnexpectedEof {
            WireError::Truncated { what }
        } else {
            WireError::Io { what, source }
        }
    })
}

pub(crate) fn read_u64(r: &mut impl Read, what: &'static str) -> Result<u64, WireError> {
    let mut word = [0u8; 8];
    read_exact(r, &mut word, what)?;
    Ok(u64::from_le_bytes(word))
}

/// A boolean: any non-zero word is true, as Nix reads it.
pub(crate) fn read_bool(r: &mut impl Read, what: &'static str) -> Result<bool, WireError> {
    Ok(read_u64(r, what)? != 0)
}

/// A count of list entries, at most `max`.
pub(crate) fn read_count(
    r: &mut impl Read,
    what: &'static str,
    max: usize,
) -> Result<usize, WireError> {
    let count = read_u64(r, what)?;
    match usize::try_from(count) {
        Ok(n) if n <= max => Ok(n),
        _ => Err(WireError::TooMany { what, count, max }),
    }
}

/// A byte string of at most `max` bytes, its padding checked.
pub(crate) fn read_bytes(
    r: &mut impl Read,
    what: &'static str,
    max: usize,
) -> Result<Vec<u8>, WireError> {
    let len = read_u64(r, what)?;
    let n = match usize::try_from(len) {
        Ok(n) if n <= max => n,
        _ => return Err(WireError::TooLong { what, len, max }),
    };
    let mut buf = vec![0u8; n];
    read_exact(r, &mut buf, what)?;
    let mut pad = [0u8; 8];
    let pad = &mut pad[..padding(n)];
    read_exact(r, pad, what)?;
    if pad.iter().any(|&b| b != 0) {
        return Err(WireError::BadPadding { what });
    }
    Ok(buf)
}

/// A UTF-8 string of at most `max` bytes.
pub(crate) fn read_string(
    r: &mut impl Read,
    what: &'static str,
    max: usize,
) -> Result<String, WireError> {
    String::from_utf8(read_bytes(r, what, max)?).map_err(|_| WireError::NotUtf8 { what })
}

/// A list (`what`) of at most `max_count` strings (`item`) of at most `max_len` bytes each.
pub(crate) fn read_strings(
    r: &mut impl Read,
    what: &'static str,
    item: &'static str,
    max_count: usize,
    max_len: usize,
) -> Result<Vec<String>, WireError> {
    let count = read_count(r, what, max_count)?;
    // The count is bounded, but the entries may still not come: grow as they do.
    let mut out = Vec::with_capacity(count.min(64));
    for _ in 0..count {
        out.push(read_string(r, item, max_len)?);
    }
    Ok(out)
}

pub(crate) fn put_u64(buf: &mut Vec<u8>, n: u64) {
    buf.extend_from_slice(&n.to_le_bytes());
}

pub(crate) fn put_bytes(buf: &mut Vec<u8>, bytes: &[u8]) {
    // usize is at most 64 bits on every target Rust supports.
    put_u64(buf, bytes.len() as u64);
    buf.extend_from_slice(bytes);
    buf.resize(buf.len() + padding(bytes.len()), 0);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn string_bytes(s: &[u8]) -> Vec<u8> {
        let mut buf = Vec::new();
        put_bytes(&mut buf, s);
        buf
    }

    #[test]
    fn strings_are_padded_to_eight() {
        for (s, len) in [
            (&b""[..], 8),
            (b"a", 16),
            (b"abcdefgh", 16),
            (b"abcdefghi", 24),
        ] {
            let buf = string_bytes(s);
            assert_eq!(buf.len(), len, "{s:?}");
            assert_eq!(&buf[..8], &(s.len() as u64).to_le_bytes());
            let mut r = &buf[..];
            assert_eq!(read_bytes(&mut r, "s", 100).unwrap(), s);
            assert!(r.is_empty(), "{s:?}: padding left unread");
        }
    }

    #[test]
    fn truncated_input_names_the_value() {
        let whole = string_bytes(b"/nix/store/x");
        for cut in [0, 3, 8, 12, 19] {
            let err = read_string(&mut &whole[..cut], "a reference", 100).unwrap_err();
            assert!(
                matches!(
                    err,
                    WireError::Truncated {
                        what: "a reference"
                    }
                ),
                "{cut}: {err}"
            );
            assert_eq!(
                err.to_string(),
                "the connection ended in the middle of a reference"
            );
        }
        let err = read_u64(&mut &[1u8, 2, 3][..], "a word").unwrap_err();
        assert!(matches!(err, WireError::Truncated { .. }), "{err}");
    }

    #[test]
    fn over_long_lengths_are_refused_before_allocating() {
        // A length of 2^64-1 (and of 2^40) with no bytes behind it: refused by the bound, not by
        // an allocation failure or a wait for bytes that never come.
        for len in [u64::MAX, 1 << 40, 101] {
            let mut buf = Vec::new();
            put_u64(&mut buf, len);
            let err = read_bytes(&mut &buf[..], "a signature", 100).unwrap_err();
            assert!(
                matches!(err, WireError::TooLong { len: l, max: 100, .. } if l == len),
                "{err}"
            );
            let err = read_strings(&mut &buf[..], "the reference list", "a reference", 100, 10)
                .unwrap_err();
            assert!(
                matches!(err, WireError::TooMany { count, .. } if count == len),
                "{err}"
            );
        }
        // Exactly at the bound is fine.
        let buf = string_bytes(&[b'x'; 100]);
        assert_eq!(read_bytes(&mut &buf[..], "s", 100).unwrap().len(), 100);
        // A count within bounds whose entries never come.
        let mut buf = Vec::new();
        put_u64(&mut buf, 1000);
        buf.extend(string_bytes(b"one"));
        let err =
            read_strings(&mut &buf[..], "the reference list", "a reference", 1000, 10).unwrap_err();
        assert!(
            matches!(
                err,
                WireError::Truncated {
                    what: "a reference"
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn padding_and_encoding_are_checked() {
        let mut buf = string_bytes(b"abc");
        buf[12] = 1;
        let err = read_bytes(&mut &buf[..], "a path", 100).unwrap_err();
        assert!(matches!(err, WireError::BadPadding { .. }), "{err}");
        let buf = string_bytes(&[0xff, 0xfe]);
        let err = read_string(&mut &buf[..], "a path", 100).unwrap_err();
        assert!(matches!(err, WireError::NotUtf8 { .. }), "{err}");
    }

    #[test]
    fn lists_and_booleans() {
        let mut buf = Vec::new();
        put_u64(&mut buf, 2);
        put_bytes(&mut buf, b"a");
        put_bytes(&mut buf, b"bcdefghij");
        put_u64(&mut buf, 7);
        put_u64(&mut buf, 0);
        let mut r = &buf[..];
        assert_eq!(
            read_strings(&mut r, "l", "s", 2, 9).unwrap(),
            ["a", "bcdefghij"]
        );
        assert!(read_bool(&mut r, "b").unwrap());
        assert!(!read_bool(&mut r, "b").unwrap());
        assert!(r.is_empty());
    }
}
