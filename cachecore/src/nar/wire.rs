//! The NAR wire grammar, shared by the reader and the writer; no I/O of its own.
//!
//! A NAR is a sequence of *strings*: a `u64` little-endian length, the bytes, and zero padding up
//! to a multiple of 8. File contents are one such string. The grammar is
//!
//! ```text
//! nar       = "nix-archive-1" node
//! node      = "(" "type" ( regular | symlink | directory ) ")"
//! regular   = "regular" [ "executable" "" ] "contents" <bytes>
//! symlink   = "symlink" "target" <target>
//! directory = "directory" { "entry" "(" "name" <name> "node" node ")" }
//! ```
//!
//! with directory entries strictly increasing by raw bytes (the order Nix writes).
//!
//! This module holds the token constants, the padding rule, the limits and name checks, and
//! [`Parser`]: a sans-I/O state machine that says what it wants next ([`Want`]) and turns the
//! strings it is fed into [`Ev`]ents. The sync [`Reader`](super::Reader) drives it over
//! [`std::io::Read`]; an async driver can reuse it unchanged.

// The one import back from the reader, kept: the grammar reports what is wrong in the reader's
// public error vocabulary, so a reader built on it (sync or async) returns the kinds as they
// are; moving `ReadErrorKind` here would put the public error of NAR reading apart from the
// reader that returns it.
use super::reader::ReadErrorKind;

/// Longest directory entry name accepted, in bytes. Linux allows 255; macOS up to about 765
/// (255 UTF-16 units as UTF-8); 4096 leaves room for both and bounds memory.
pub const MAX_NAME_LEN: usize = 4096;

/// Longest symlink target accepted, in bytes (Linux's `PATH_MAX`).
pub const MAX_TARGET_LEN: usize = 4096;

/// Deepest directory nesting accepted: the root directory is level 1.
pub const MAX_DEPTH: usize = 256;

/// Longest keyword token; a longer string where a keyword is expected is reported by length.
const MAX_KEYWORD_LEN: u64 = 16;

pub(crate) const MAGIC: &[u8] = b"nix-archive-1";

/// Zero bytes for padding.
pub(crate) const ZEROS: [u8; 8] = [0; 8];

/// Number of zero bytes that follow a string of `len` bytes.
pub(crate) const fn padding(len: u64) -> usize {
    ((8 - (len % 8)) % 8) as usize
}

/// Encoded size of a token sequence (per string: length field, bytes, padding).
const fn encoded_len(parts: &[&[u8]]) -> usize {
    let mut total = 0;
    let mut i = 0;
    while i < parts.len() {
        total += 8 + parts[i].len() + padding(parts[i].len() as u64);
        i += 1;
    }
    total
}

/// Encodes a fixed token sequence at compile time.
const fn encode<const N: usize>(parts: &[&[u8]]) -> [u8; N] {
    let mut out = [0u8; N];
    let mut at = 0;
    let mut i = 0;
    while i < parts.len() {
        let part = parts[i];
        let len = (part.len() as u64).to_le_bytes();
        let mut j = 0;
        while j < 8 {
            out[at + j] = len[j];
            j += 1;
        }
        at += 8;
        let mut j = 0;
        while j < part.len() {
            out[at + j] = part[j];
            j += 1;
        }
        at += part.len() + padding(part.len() as u64);
        i += 1;
    }
    assert!(at == N, "token sequence length mismatch");
    out
}

macro_rules! tokens {
    ($(#[$doc:meta])* $name:ident = [$($tok:expr),* $(,)?]) => {
        $(#[$doc])*
        pub(crate) const $name: [u8; encoded_len(&[$($tok),*])] = encode(&[$($tok),*]);
    };
}

tokens!(
    /// `"nix-archive-1"`, the first string of every NAR.
    MAGIC_TOKEN = [MAGIC]
);
tokens!(
    /// Start of a non-executable regular file, up to and excluding the contents length.
    REGULAR = [b"(", b"type", b"regular", b"contents"]
);
tokens!(
    /// Start of an executable regular file, up to and excluding the contents length.
    EXECUTABLE = [b"(", b"type", b"regular", b"executable", b"", b"contents"]
);
tokens!(
    /// Start of a symlink, up to and excluding the target.
    SYMLINK = [b"(", b"type", b"symlink", b"target"]
);
tokens!(
    /// Start of a directory, up to the first entry.
    DIRECTORY = [b"(", b"type", b"directory"]
);
tokens!(
    /// Start of a directory entry, up to and excluding the name.
    ENTRY = [b"entry", b"(", b"name"]
);
tokens!(
    /// Between an entry's name and its node.
    ENTRY_NODE = [b"node"]
);
tokens!(
    /// Closes a node or an entry.
    CLOSE = [b")"]
);

/// Why a directory entry name is not allowed, or `None` if it is.
pub(crate) fn name_problem(name: &[u8]) -> Option<&'static str> {
    if name.is_empty() {
        Some("empty")
    } else if name == b"." || name == b".." {
        Some("reserved")
    } else if name.contains(&b'/') {
        Some("contains '/'")
    } else if name.contains(&0) {
        Some("contains NUL")
    } else if name.len() > MAX_NAME_LEN {
        Some("longer than 4096 bytes")
    } else {
        None
    }
}

/// Why a symlink target is not allowed, or `None` if it is.
pub(crate) fn target_problem(target: &[u8]) -> Option<&'static str> {
    if target.is_empty() {
        Some("empty")
    } else if target.contains(&0) {
        Some("contains NUL")
    } else if target.len() > MAX_TARGET_LEN {
        Some("longer than 4096 bytes")
    } else {
        None
    }
}

/// What the [`Parser`] needs next from the byte stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Want {
    /// A string: read its length, ask [`Parser::check_len`], read bytes and padding, then
    /// [`Parser::feed_str`].
    Str,
    /// The `u64` length of a regular file's contents: read it and call
    /// [`Parser::feed_contents_len`]; then stream that many bytes and their padding and call
    /// [`Parser::contents_done`].
    ContentsLen,
    /// The root node is complete: the input must end here ([`Parser::finish`]).
    End,
    /// Nothing more: [`Parser::finish`] was called.
    Done,
}

/// A grammar event; the driver adds the data (names, targets, offsets) it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ev {
    File {
        executable: bool,
        size: u64,
    },
    /// The target is the string just fed.
    Symlink,
    DirectoryStart,
    /// The name is [`Parser::entry_name`].
    Entry,
    EntryEnd,
    DirectoryEnd,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Magic,
    NodeOpen,
    NodeType,
    NodeKind,
    RegularNext,
    ExecutableEmpty,
    ContentsKeyword,
    ContentsLen,
    Contents,
    TargetKeyword,
    Target,
    NodeClose,
    DirNext,
    EntryOpen,
    NameKeyword,
    Name,
    NodeKeyword,
    EntryClose,
    End,
    Done,
}

impl State {
    /// The token expected in a keyword state, for error messages.
    fn expected(self) -> &'static str {
        match self {
            State::Magic => "\"nix-archive-1\"",
            State::NodeOpen | State::EntryOpen => "\"(\"",
            State::NodeType => "\"type\"",
            State::NodeKind => "\"regular\", \"symlink\" or \"directory\"",
            State::RegularNext => "\"executable\" or \"contents\"",
            State::ExecutableEmpty => "\"\" after \"executable\"",
            State::ContentsKeyword => "\"contents\"",
            State::TargetKeyword => "\"target\"",
            State::NodeClose | State::EntryClose => "\")\"",
            State::DirNext => "\"entry\" or \")\"",
            State::NameKeyword => "\"name\"",
            State::NodeKeyword => "\"node\"",
            State::Target => "a symlink target",
            State::Name => "a directory entry name",
            State::ContentsLen | State::Contents => "file contents",
            State::End | State::Done => "the end of the NAR",
        }
    }
}

/// Per-directory state: the previous entry name, for the ordering check.
#[derive(Debug, Default)]
struct Frame {
    prev: Vec<u8>,
    has_prev: bool,
}

/// The NAR grammar as a state machine over strings (see the module docs).
///
/// Memory is bounded by [`MAX_DEPTH`] × [`MAX_NAME_LEN`] for the previous-name stack.
#[derive(Debug)]
pub(crate) struct Parser {
    state: State,
    executable: bool,
    /// `frames[..depth]` are the open directories; later frames are kept for reuse.
    frames: Vec<Frame>,
    depth: usize,
}

impl Default for Parser {
    fn default() -> Self {
        Self::new()
    }
}

impl Parser {
    pub(crate) fn new() -> Self {
        Parser {
            state: State::Magic,
            executable: false,
            frames: Vec::new(),
            depth: 0,
        }
    }

    pub(crate) fn want(&self) -> Want {
        match self.state {
            State::ContentsLen => Want::ContentsLen,
            State::End => Want::End,
            State::Done => Want::Done,
            // `Contents` is never observed by a correct driver (it streams, then calls
            // `contents_done`); answering `Str` would then fail in `feed_str`.
            _ => Want::Str,
        }
    }

    /// What the next token should be, for error messages.
    pub(crate) fn expected(&self) -> &'static str {
        self.state.expected()
    }

    /// Number of directories currently open.
    pub(crate) fn depth(&self) -> usize {
        self.depth
    }

    /// The name of the entry announced by the last [`Ev::Entry`].
    pub(crate) fn entry_name(&self) -> &[u8] {
        match self.depth.checked_sub(1).and_then(|d| self.frames.get(d)) {
            Some(frame) => &frame.prev,
            None => &[],
        }
    }

    /// Checks the length field of the string about to be read, before its bytes are read.
    pub(crate) fn check_len(&self, len: u64) -> Result<(), ReadErrorKind> {
        let (max, what) = match self.state {
            State::Magic if len != MAGIC.len() as u64 => return Err(ReadErrorKind::NotANar),
            State::Name => (MAX_NAME_LEN as u64, "directory entry name"),
            State::Target => (MAX_TARGET_LEN as u64, "symlink target"),
            state => {
                if len > MAX_KEYWORD_LEN {
                    return Err(ReadErrorKind::UnexpectedLongToken {
                        expected: state.expected(),
                        len,
                    });
                }
                return Ok(());
            }
        };
        if len > max {
            return Err(ReadErrorKind::TooLong { what, len, max });
        }
        Ok(())
    }

    /// Feeds one string; returns the event it completes, if any.
    pub(crate) fn feed_str(&mut self, s: &[u8]) -> Result<Option<Ev>, ReadErrorKind> {
        let unexpected = |state: State| ReadErrorKind::UnexpectedToken {
            expected: state.expected(),
            found: s.to_vec(),
        };
        let (next, ev) = match (self.state, s) {
            (State::Magic, MAGIC) => (State::NodeOpen, None),
            (State::Magic, _) => return Err(ReadErrorKind::NotANar),
            (State::NodeOpen, b"(") => (State::NodeType, None),
            (State::NodeType, b"type") => (State::NodeKind, None),
            (State::NodeKind, b"regular") => {
                self.executable = false;
                (State::RegularNext, None)
            }
            (State::NodeKind, b"symlink") => (State::TargetKeyword, None),
            (State::NodeKind, b"directory") => {
                if self.depth >= MAX_DEPTH {
                    return Err(ReadErrorKind::TooDeep { max: MAX_DEPTH });
                }
                if self.frames.len() <= self.depth {
                    self.frames.push(Frame::default());
                }
                if let Some(frame) = self.frames.get_mut(self.depth) {
                    frame.has_prev = false;
                }
                self.depth += 1;
                (State::DirNext, Some(Ev::DirectoryStart))
            }
            (State::RegularNext, b"executable") => {
                self.executable = true;
                (State::ExecutableEmpty, None)
            }
            (State::RegularNext, b"contents") => (State::ContentsLen, None),
            (State::ExecutableEmpty, b"") => (State::ContentsKeyword, None),
            (State::ContentsKeyword, b"contents") => (State::ContentsLen, None),
            (State::TargetKeyword, b"target") => (State::Target, None),
            (State::Target, target) => {
                if let Some(reason) = target_problem(target) {
                    return Err(ReadErrorKind::InvalidTarget {
                        target: target.to_vec(),
                        reason,
                    });
                }
                (State::NodeClose, Some(Ev::Symlink))
            }
            (State::NodeClose, b")") => (self.node_done(), None),
            (State::DirNext, b"entry") => (State::EntryOpen, None),
            (State::DirNext, b")") => {
                self.depth = self.depth.saturating_sub(1);
                (self.node_done(), Some(Ev::DirectoryEnd))
            }
            (State::EntryOpen, b"(") => (State::NameKeyword, None),
            (State::NameKeyword, b"name") => (State::Name, None),
            (State::Name, name) => {
                self.accept_name(name)?;
                (State::NodeKeyword, Some(Ev::Entry))
            }
            (State::NodeKeyword, b"node") => (State::NodeOpen, None),
            (State::EntryClose, b")") => (State::DirNext, Some(Ev::EntryEnd)),
            (state, _) => return Err(unexpected(state)),
        };
        self.state = next;
        Ok(ev)
    }

    /// Feeds a regular file's contents length.
    pub(crate) fn feed_contents_len(&mut self, size: u64) -> Ev {
        self.state = State::Contents;
        Ev::File {
            executable: self.executable,
            size,
        }
    }

    /// The contents and their padding have been consumed.
    pub(crate) fn contents_done(&mut self) {
        if self.state == State::Contents {
            self.state = State::NodeClose;
        }
    }

    /// The input ended right after the root node.
    pub(crate) fn finish(&mut self) {
        if self.state == State::End {
            self.state = State::Done;
        }
    }

    fn node_done(&self) -> State {
        if self.depth == 0 {
            State::End
        } else {
            State::EntryClose
        }
    }

    fn accept_name(&mut self, name: &[u8]) -> Result<(), ReadErrorKind> {
        if let Some(reason) = name_problem(name) {
            return Err(ReadErrorKind::InvalidName {
                name: name.to_vec(),
                reason,
            });
        }
        let Some(frame) = self
            .depth
            .checked_sub(1)
            .and_then(|d| self.frames.get_mut(d))
        else {
            // Unreachable by construction: `Name` is only entered inside a directory.
            return Err(ReadErrorKind::UnexpectedToken {
                expected: State::NodeOpen.expected(),
                found: name.to_vec(),
            });
        };
        if frame.has_prev {
            match name.cmp(&frame.prev) {
                std::cmp::Ordering::Greater => {}
                std::cmp::Ordering::Equal => {
                    return Err(ReadErrorKind::DuplicateName {
                        name: name.to_vec(),
                    })
                }
                std::cmp::Ordering::Less => {
                    return Err(ReadErrorKind::NamesOutOfOrder {
                        name: name.to_vec(),
                        prev: frame.prev.clone(),
                    })
                }
            }
        }
        frame.prev.clear();
        frame.prev.extend_from_slice(name);
        frame.has_prev = true;
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn enc(parts: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for p in parts {
            out.extend_from_slice(&(p.len() as u64).to_le_bytes());
            out.extend_from_slice(p);
            out.extend_from_slice(&ZEROS[..padding(p.len() as u64)]);
        }
        out
    }

    #[test]
    fn const_tokens_match_runtime_encoding() {
        assert_eq!(MAGIC_TOKEN.as_slice(), enc(&[b"nix-archive-1"]));
        assert_eq!(
            REGULAR.as_slice(),
            enc(&[b"(", b"type", b"regular", b"contents"])
        );
        assert_eq!(
            EXECUTABLE.as_slice(),
            enc(&[b"(", b"type", b"regular", b"executable", b"", b"contents"])
        );
        assert_eq!(
            SYMLINK.as_slice(),
            enc(&[b"(", b"type", b"symlink", b"target"])
        );
        assert_eq!(DIRECTORY.as_slice(), enc(&[b"(", b"type", b"directory"]));
        assert_eq!(ENTRY.as_slice(), enc(&[b"entry", b"(", b"name"]));
        assert_eq!(CLOSE.as_slice(), enc(&[b")"]));
        assert_eq!(MAGIC_TOKEN.len(), 24);
    }

    #[test]
    fn padding_rule() {
        assert_eq!(padding(0), 0);
        assert_eq!(padding(1), 7);
        assert_eq!(padding(8), 0);
        assert_eq!(padding(13), 3);
        assert_eq!(padding(u64::MAX), 1);
    }

    #[test]
    fn names() {
        assert_eq!(name_problem(b"a"), None);
        assert_eq!(name_problem(b"..."), None);
        assert_eq!(name_problem(b""), Some("empty"));
        assert_eq!(name_problem(b"."), Some("reserved"));
        assert_eq!(name_problem(b".."), Some("reserved"));
        assert_eq!(name_problem(b"a/b"), Some("contains '/'"));
        assert_eq!(name_problem(b"a\0"), Some("contains NUL"));
        assert!(name_problem(&[b'x'; MAX_NAME_LEN]).is_none());
        assert!(name_problem(&[b'x'; MAX_NAME_LEN + 1]).is_some());
        assert_eq!(target_problem(b""), Some("empty"));
        assert_eq!(target_problem(b"/a\0"), Some("contains NUL"));
        assert_eq!(target_problem(b"../x"), None);
    }

    #[test]
    fn parser_walks_a_symlink_nar() {
        let mut p = Parser::new();
        let mut events = Vec::new();
        for tok in [
            &b"nix-archive-1"[..],
            b"(",
            b"type",
            b"symlink",
            b"target",
            b"/x",
            b")",
        ] {
            assert_eq!(p.want(), Want::Str);
            p.check_len(tok.len() as u64).unwrap();
            events.extend(p.feed_str(tok).unwrap());
        }
        assert_eq!(events, [Ev::Symlink]);
        assert_eq!(p.want(), Want::End);
        p.finish();
        assert_eq!(p.want(), Want::Done);
    }
}
