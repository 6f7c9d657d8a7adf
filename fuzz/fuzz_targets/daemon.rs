//! Invariants of the Nix daemon client (the worker protocol, spoken to a socket whose peer is
//! not trusted to be well-behaved), for any bytes the peer sends: the handshake and the
//! requests after it never panic and never allocate what the peer asks for without bound (the
//! fuzzer's memory limit catches that); a failed conversation is an error, never a wrong
//! answer dressed as a right one.
//!
//! Input: everything the "daemon" says, from its greeting on.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    cachecore::fuzz::daemon_conversation(data);
});
