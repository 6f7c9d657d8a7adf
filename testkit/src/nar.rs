//! Building NARs token by token, for corrupt and hand-made archives.

/// Builds a NAR token by token: each string is a u64 little-endian length, the bytes, and zero
/// padding to a multiple of 8. `offset()` gives the position of the next token, for checking
/// the offsets errors report.
#[derive(Debug, Default, Clone)]
pub struct NarBuilder {
    bytes: Vec<u8>,
}

impl NarBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// The current length (where the next token starts).
    pub fn offset(&self) -> usize {
        self.bytes.len()
    }

    /// A string token.
    pub fn str(self, s: &str) -> Self {
        self.bytes(s.as_bytes())
    }

    /// A byte-string token.
    pub fn bytes(mut self, b: &[u8]) -> Self {
        self.bytes
            .extend_from_slice(&(b.len() as u64).to_le_bytes());
        self.bytes.extend_from_slice(b);
        self.bytes.resize(self.bytes.len().next_multiple_of(8), 0);
        self
    }

    /// Several string tokens.
    pub fn strs(mut self, ss: &[&str]) -> Self {
        for s in ss {
            self = self.str(s);
        }
        self
    }

    /// Raw bytes, not framed.
    pub fn raw(mut self, b: &[u8]) -> Self {
        self.bytes.extend_from_slice(b);
        self
    }

    /// A bare length field (for lying about lengths).
    pub fn len_field(mut self, n: u64) -> Self {
        self.bytes.extend_from_slice(&n.to_le_bytes());
        self
    }

    pub fn magic(self) -> Self {
        self.str("nix-archive-1")
    }

    /// `( type regular [executable ""] contents <data> )`.
    pub fn regular(self, executable: bool, data: &[u8]) -> Self {
        let b = self.strs(&["(", "type", "regular"]);
        let b = if executable {
            b.strs(&["executable", ""])
        } else {
            b
        };
        b.str("contents").bytes(data).str(")")
    }

    /// `( type symlink target <t> )`.
    pub fn symlink(self, target: &str) -> Self {
        self.strs(&["(", "type", "symlink", "target", target, ")"])
    }

    /// `entry ( name <n> node` — the caller adds the node, then `end_entry`.
    pub fn entry(self, name: &str) -> Self {
        self.strs(&["entry", "(", "name", name, "node"])
    }

    pub fn end_entry(self) -> Self {
        self.str(")")
    }

    pub fn begin_dir(self) -> Self {
        self.strs(&["(", "type", "directory"])
    }

    pub fn end_dir(self) -> Self {
        self.str(")")
    }

    pub fn finish(self) -> Vec<u8> {
        self.bytes
    }
}

/// A small valid NAR: a directory with a file, an executable, a symlink and a subdirectory.
pub fn small_valid_nar() -> Vec<u8> {
    NarBuilder::new()
        .magic()
        .begin_dir()
        .entry("a")
        .regular(false, b"hello\n")
        .end_entry()
        .entry("b")
        .regular(true, b"#!/bin/sh\n")
        .end_entry()
        .entry("c")
        .symlink("a")
        .end_entry()
        .entry("d")
        .begin_dir()
        .entry("e")
        .regular(false, b"")
        .end_entry()
        .end_dir()
        .end_entry()
        .end_dir()
        .finish()
}
