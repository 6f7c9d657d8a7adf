//! Text from a cache, an upstream or a server, made safe to print on a terminal.
//!
//! A cache is untrusted input, and so is every string it supplies: a signature's key name, a
//! narinfo field, a file name or symlink target in a listing, a server's reason for a refusal.
//! Printed raw, such text can drive the terminal — `ESC [2J` clears the screen, `ESC ]0;…BEL`
//! sets the window title, a `CR` moves back to overwrite a line with "no problems", a newline
//! forges a line of `ls` — so every message and every listing that quotes it goes through
//! [`Untrusted`] (or [`escape_control`], or [`excerpt`] when it may be long).
//!
//! What is escaped, and how:
//!
//! - every control character, C0 (`U+0000`–`U+001F`, `DEL`) and C1 (`U+0080`–`U+009F`, among
//!   them the one-byte CSI `U+009B`): `\n`, `\r`, `\t` as such, the others as `\x1b` (below
//!   `U+0080`) or `\u{9b}`;
//! - the Unicode bidirectional controls (`U+061C`, `U+200E`, `U+200F`, `U+202A`–`U+202E`,
//!   `U+2066`–`U+2069`), which reorder what follows them on the line ("Trojan Source"): a name
//!   could otherwise show as another one;
//!
//! and nothing else: letters, accents, CJK, emoji and every other printable character stay as
//! they are, so a legitimate file name in `cachecore ls` reads as it is. A backslash is not
//! doubled (names with backslashes print unchanged), so the escaping is for reading, not a
//! reversible quoting; `escape_control` of its own output changes nothing.
//!
//! The library's errors quote a cache's text through [`excerpt`], so they are safe wherever
//! they are shown; the CLI also escapes its whole error line and everything it lists, whichever
//! layer forgot. `cachecore serve`'s log is written by `tracing-subscriber`, which escapes ESC,
//! BEL and C1 in what it logs (not CR or newlines: hence the errors' own escaping). The local
//! Nix daemon's messages are another matter: Nix colours them, and `local_store` drops those
//! colour codes rather than showing them escaped.

use std::borrow::Cow;
use std::fmt::{self, Write as _};

/// Hostile text is quoted in messages by its first this many characters at most.
const EXCERPT_CHARS: usize = 64;

/// `text` for display: control characters escaped as the [module](self) says.
///
/// ```
/// use cachecore::untrusted::Untrusted;
/// let name = "cache\x1b]0;pwned\x07.example.org-1\r";
/// assert_eq!(Untrusted(name).to_string(), r"cache\x1b]0;pwned\x07.example.org-1\r");
/// // Printable text, Unicode included, is shown as it is.
/// assert_eq!(Untrusted("lib/python3/Überblick-日本.py").to_string(), "lib/python3/Überblick-日本.py");
/// ```
#[derive(Clone, Copy)]
pub struct Untrusted<'a>(pub &'a str);

impl fmt::Display for Untrusted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0;
        while let Some((at, c)) = rest.char_indices().find(|&(_, c)| is_unsafe(c)) {
            f.write_str(&rest[..at])?;
            match c {
                '\n' => f.write_str("\\n")?,
                '\r' => f.write_str("\\r")?,
                '\t' => f.write_str("\\t")?,
                c if (c as u32) < 0x80 => write!(f, "\\x{:02x}", c as u32)?,
                c => write!(f, "\\u{{{:x}}}", c as u32)?,
            }
            rest = &rest[at + c.len_utf8()..];
        }
        f.write_str(rest)
    }
}

impl fmt::Debug for Untrusted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_char('"')?;
        fmt::Display::fmt(self, f)?;
        f.write_char('"')
    }
}

/// Whether `c` must not reach a terminal raw.
fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
        )
}

/// `s` with its control characters escaped ([`Untrusted`]); borrowed when there are none.
///
/// ```
/// use cachecore::untrusted::escape_control;
/// assert_eq!(escape_control("bin/\u{9b}2Jls"), r"bin/\u{9b}2Jls");
/// assert!(matches!(escape_control("bin/ls"), std::borrow::Cow::Borrowed(_)));
/// ```
pub fn escape_control(s: &str) -> Cow<'_, str> {
    if s.chars().any(is_unsafe) {
        Cow::Owned(Untrusted(s).to_string())
    } else {
        Cow::Borrowed(s)
    }
}

/// What an error message may quote of untrusted text: at most its first 64 characters,
/// marked with `…` when cut, control characters escaped.
///
/// ```
/// use cachecore::untrusted::excerpt;
/// assert_eq!(excerpt("short"), "short");
/// let long = "x".repeat(100);
/// assert_eq!(excerpt(&long), format!("{}…", "x".repeat(64)));
/// assert_eq!(excerpt("a\x1b[2Jb"), r"a\x1b[2Jb");
/// ```
pub fn excerpt(s: &str) -> String {
    match s.char_indices().nth(EXCERPT_CHARS) {
        Some((cut, _)) => format!("{}…", Untrusted(&s[..cut])),
        None => escape_control(s).into_owned(),
    }
}

/// What an error message may quote of a server's own reason for refusing a request: its first
/// line, whole up to [`REASON_CHARS`] characters (a server's sentence is never cut; only a
/// hostile or confused server's page is), control characters escaped.
///
/// ```
/// use cachecore::untrusted::reason;
/// let sentence = "not an object of this cache: no object of a binary cache has this name (a narinfo is <hash>.narinfo)";
/// assert_eq!(reason(sentence), sentence);
/// assert_eq!(reason("first line\nsecond"), "first line");
/// assert!(reason(&"x".repeat(5000)).ends_with('…'));
/// ```
pub fn reason(s: &str) -> String {
    let line = s.trim().lines().next().unwrap_or_default().trim();
    match line.char_indices().nth(REASON_CHARS) {
        Some((cut, _)) => format!("{}…", Untrusted(&line[..cut])),
        None => escape_control(line).into_owned(),
    }
}

/// The most of a server's reason [`reason`] quotes.
pub const REASON_CHARS: usize = 1000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_control_character_is_escaped_and_nothing_else() {
        for c in (0u32..0x110000).filter_map(char::from_u32) {
            let shown = Untrusted(c.encode_utf8(&mut [0; 4])).to_string();
            if c.is_control() {
                assert!(
                    shown.starts_with('\\') && shown.chars().all(|c| c.is_ascii_graphic()),
                    "{c:?} shown as {shown:?}"
                );
            } else if !is_unsafe(c) {
                assert_eq!(shown, c.to_string());
            }
        }
    }

    #[test]
    fn terminal_attacks_are_shown_inert() {
        let cases = [
            ("\x1b[2J\x1b[H", r"\x1b[2J\x1b[H"),
            ("\x1b]0;title\x07", r"\x1b]0;title\x07"),
            ("bad\rall good", r"bad\rall good"),
            ("a\nforged line", r"a\nforged line"),
            ("\u{9b}31m", r"\u{9b}31m"),
            ("\u{202e}txt.exe", r"\u{202e}txt.exe"),
            ("\u{7f}\0", r"\x7f\x00"),
        ];
        for (raw, shown) in cases {
            assert_eq!(Untrusted(raw).to_string(), shown);
            assert_eq!(escape_control(raw), shown);
            // Escaping is idempotent: what is shown is printable.
            assert_eq!(escape_control(shown), shown);
        }
        assert_eq!(format!("{:?}", Untrusted("a\x07")), r#""a\x07""#);
    }

    #[test]
    fn excerpts_cut_before_escaping() {
        assert_eq!(excerpt(&"é".repeat(100)).chars().count(), 65);
        // 64 characters kept, each escaped: the cut never splits an escape.
        let shown = excerpt(&"\x1b".repeat(100));
        assert_eq!(shown, format!("{}…", r"\x1b".repeat(64)));
    }
}
