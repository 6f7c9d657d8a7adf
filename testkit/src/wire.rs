//! The Nix daemon's wire format, spelled here independently of the library's own code, for
//! tests that play the daemon's side: little-endian u64 words, strings as a length word, the
//! bytes and zero padding to 8.

use std::io::Read;

/// The client's greeting.
pub const WORKER_MAGIC_1: u64 = 0x6e69_7863;
/// The daemon's answer to it.
pub const WORKER_MAGIC_2: u64 = 0x6478_696f;
/// The end of the daemon's messages before a reply.
pub const STDERR_LAST: u64 = 0x616c_7473;
/// A log line from the daemon (`STDERR_NEXT`).
pub const STDERR_NEXT: u64 = 0x6f6c_6d67;

/// Words, as the daemon sends them.
pub fn words(ws: &[u64]) -> Vec<u8> {
    ws.iter().flat_map(|w| w.to_le_bytes()).collect()
}

/// A string: its length, its bytes, zero padding to a multiple of 8.
pub fn wire_string(s: &str) -> Vec<u8> {
    let mut b = words(&[s.len() as u64]);
    b.extend_from_slice(s.as_bytes());
    b.resize(b.len().next_multiple_of(8), 0);
    b
}

/// Reads one word.
pub fn read_word(r: &mut impl Read) -> u64 {
    let mut w = [0u8; 8];
    r.read_exact(&mut w).expect("a word from the peer");
    u64::from_le_bytes(w)
}

/// Reads one string (its padding too).
pub fn read_wire_string(r: &mut impl Read) -> Vec<u8> {
    let len = usize::try_from(read_word(r)).expect("a string length that fits in memory");
    let mut b = vec![0u8; len.next_multiple_of(8)];
    r.read_exact(&mut b).expect("a string from the peer");
    b.truncate(len);
    b
}
