//! ed25519 keys and signatures in Nix's formats.
//!
//! - secret key: `name:base64(64 bytes)` (seed followed by public key, as libsodium stores it),
//! - public key: `name:base64(32 bytes)`,
//! - signature:  `name:base64(64 bytes)`, over a narinfo [fingerprint](crate::narinfo::NarInfo::fingerprint).
//!
//! Key files (read by [`SecretKey::read_file`], [`PublicKey::read_file`] and
//! [`PublicKey::from_arg`]) hold one key per line, `name:base64`, as Nix writes them
//! (`nix key generate-secret`, `nix key convert-secret-to-public`, `cachecore key generate`).
//! Blank lines and lines whose first non-blank character is `#` are ignored, and so is
//! whitespace around a key (a trailing newline, `\r\n` line ends); anything else is an error
//! naming the file and the line. A public key file holds one or more keys, a secret key file
//! exactly one. Errors never repeat key material: keys are named by their name.
//!
//! Signing goes through the [`Signer`] trait so a key held elsewhere (an HSM, a KMS) plugs in the
//! same way as a [`SecretKey`] read from a file. Secret material is zeroized on drop and never
//! printed by `Debug`.
//!
//! ```
//! use cachecore::signing::{SecretKey, Signer};
//! let secret = SecretKey::generate("cache.example.org-1").unwrap();
//! let public = secret.public_key();
//! let sig = secret.sign(b"1;/nix/store/...;sha256:...;42;");
//! assert!(public.verify(b"1;/nix/store/...;sha256:...;42;", &sig));
//! assert_eq!(public.to_string().split_once(':').unwrap().0, "cache.example.org-1");
//! ```

use std::fmt;
use std::io::Read as _;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use ed25519_dalek::{Signer as _, SigningKey, Verifier as _, VerifyingKey};
use zeroize::Zeroizing;

/// The two kinds of key, for messages that say which one was given and which one is needed.
///
/// ```
/// use cachecore::signing::KeyKind;
/// assert_eq!(KeyKind::Secret.byte_len(), 64); // seed, then public key
/// assert_eq!(KeyKind::Public.byte_len(), 32);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    Secret,
    Public,
}

impl KeyKind {
    /// The length of the key's bytes after base64 decoding.
    ///
    /// See [`KeyKind`] for an example.
    pub fn byte_len(self) -> usize {
        match self {
            KeyKind::Secret => 64,
            KeyKind::Public => 32,
        }
    }

    fn of_len(len: usize) -> Option<KeyKind> {
        match len {
            64 => Some(KeyKind::Secret),
            32 => Some(KeyKind::Public),
            _ => None,
        }
    }
}

impl fmt::Display for KeyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyKind::Secret => "secret key",
            KeyKind::Public => "public key",
        })
    }
}

/// Why a key or signature could not be read. No message ever holds key material: keys are named
/// by their name only.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    #[error("{what} has no `name:` prefix (expected `name:base64`)")]
    MissingName { what: &'static str },
    #[error("key name {name:?} cannot be used: {reason}")]
    BadName { name: String, reason: &'static str },
    #[error("{what} {name:?}: the part after `name:` is not valid base64")]
    BadBase64 { what: &'static str, name: String },
    #[error("{what} {name:?}: expected {expected} bytes after base64 decoding, found {found}")]
    BadLength {
        what: &'static str,
        name: String,
        expected: usize,
        found: usize,
    },
    /// A secret key where a public key is needed, or the other way round.
    #[error("{}", wrong_kind_message(*given, *wanted, name, None))]
    WrongKind {
        name: String,
        given: KeyKind,
        wanted: KeyKind,
    },
    #[error("secret key {name:?}: its public half does not match its seed")]
    Inconsistent { name: String },
    #[error("public key {name:?} is not a valid ed25519 point")]
    BadPoint { name: String },
    #[error("could not get randomness for a new key: {0}")]
    Random(String),
}

/// "the secret key `x` was given where a public key is needed; …": which kind was given, which is
/// needed, and how to get the right one (naming `file` when the key came from one).
fn wrong_kind_message(given: KeyKind, wanted: KeyKind, name: &str, file: Option<&str>) -> String {
    let head = format!("the {given} `{name}` was given where a {wanted} is needed");
    match (given, wanted) {
        (KeyKind::Secret, KeyKind::Public) => format!(
            "{head}; trust its public key instead, which `cachecore key public {}` prints \
             (and keep the secret key out of sight)",
            file.unwrap_or("SECRET_FILE")
        ),
        _ => format!(
            "{head}; signing takes the secret key file (`cachecore key generate NAME --out FILE` \
             makes one, its public key is what readers trust)"
        ),
    }
}

/// Checks a name for a new key: not empty, no `:` (it ends the name), no whitespace or control
/// characters (they separate keys in `nix.conf`'s `trusted-public-keys` and in key files), and
/// not starting with `#` (a comment line in a key file).
///
/// ```
/// use cachecore::signing::check_key_name;
/// assert!(check_key_name("cache.example.org-1").is_ok());
/// for bad in ["", "a:b", "two words", "#comment"] {
///     assert!(check_key_name(bad).is_err(), "{bad:?}");
/// }
/// ```
pub fn check_key_name(name: &str) -> Result<(), KeyError> {
    let reason = if name.is_empty() {
        "it is empty; use e.g. `cache.example.org-1`"
    } else if name.contains(':') {
        "it contains `:`, which separates a key's name from its value"
    } else if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        "it contains whitespace or control characters, which separate keys in nix.conf's \
         trusted-public-keys"
    } else if name.starts_with('#') {
        "it starts with `#`, which starts a comment line in a key file"
    } else {
        return Ok(());
    };
    Err(KeyError::BadName {
        name: name.to_owned(),
        reason,
    })
}

/// Splits `name:base64` and decodes the payload, zeroizing the buffer.
fn decode_key(what: &'static str, s: &str) -> Result<(String, Zeroizing<Vec<u8>>), KeyError> {
    let s = s.trim();
    let (name, data) = s
        .split_once(':')
        .filter(|(n, _)| !n.is_empty())
        .ok_or(KeyError::MissingName { what })?;
    let decoded = Zeroizing::new(BASE64.decode(data).map_err(|_| KeyError::BadBase64 {
        what,
        name: name.to_owned(),
    })?);
    Ok((name.to_owned(), decoded))
}

/// [`decode_key`] for a key of `wanted` kind: a key of the other kind is a
/// [`KeyError::WrongKind`]. The name must not hold whitespace (stray lines before a key would
/// otherwise become part of its name). The first `wanted.byte_len()` bytes of the result are the key.
fn decode_key_of(wanted: KeyKind, s: &str) -> Result<(String, Zeroizing<[u8; 64]>), KeyError> {
    let what = match wanted {
        KeyKind::Secret => "secret key",
        KeyKind::Public => "public key",
    };
    let (name, decoded) = decode_key(what, s)?;
    if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(KeyError::BadName {
            name: name.chars().take(40).collect(),
            reason: "it contains whitespace or control characters (one key per line)",
        });
    }
    if decoded.len() != wanted.byte_len() {
        return Err(match KeyKind::of_len(decoded.len()) {
            Some(given) => KeyError::WrongKind {
                name,
                given,
                wanted,
            },
            None => KeyError::BadLength {
                what,
                name,
                expected: wanted.byte_len(),
                found: decoded.len(),
            },
        });
    }
    let mut out = Zeroizing::new([0u8; 64]);
    out[..decoded.len()].copy_from_slice(&decoded);
    Ok((name, out))
}

/// Splits `name:base64` and decodes the payload to exactly `N` bytes.
fn split_key<const N: usize>(what: &'static str, s: &str) -> Result<(String, [u8; N]), KeyError> {
    let (name, decoded) = decode_key(what, s)?;
    let bytes: [u8; N] = decoded
        .as_slice()
        .try_into()
        .map_err(|_| KeyError::BadLength {
            what,
            name: name.clone(),
            expected: N,
            found: decoded.len(),
        })?;
    Ok((name, bytes))
}

/// A signature as it appears on a narinfo `Sig:` line.
///
/// ```
/// use cachecore::signing::Signature;
/// let sig = Signature::new("cache.example.org-1", [7; 64]);
/// assert_eq!((sig.key_name(), sig.bytes()), ("cache.example.org-1", &[7; 64]));
/// // `Display` is the narinfo `Sig:` spelling, which `parse` reads back.
/// assert!(sig.to_string().starts_with("cache.example.org-1:BwcH"));
/// assert_eq!(Signature::parse(&sig.to_string()).unwrap(), sig);
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Signature {
    key_name: String,
    bytes: [u8; 64],
}

impl Signature {
    /// A signature from its key name and its 64 bytes. See [`Signature`] for an example.
    pub fn new(key_name: impl Into<String>, bytes: [u8; 64]) -> Self {
        Signature {
            key_name: key_name.into(),
            bytes,
        }
    }

    /// Parses `name:base64(64 bytes)`.
    ///
    /// ```
    /// use cachecore::signing::{SecretKey, Signature, Signer as _};
    /// let key = SecretKey::generate("cache.example.org-1").unwrap();
    /// let line = key.sign(b"fingerprint").to_string(); // as on a narinfo `Sig:` line
    /// let sig = Signature::parse(&line).unwrap();
    /// assert_eq!(sig.key_name(), "cache.example.org-1");
    /// assert!(key.public_key().verify(b"fingerprint", &sig));
    /// assert!(Signature::parse("cache.example.org-1:dG9vIHNob3J0").is_err()); // not 64 bytes
    /// ```
    pub fn parse(s: &str) -> Result<Self, KeyError> {
        let (key_name, bytes) = split_key::<64>("signature", s)?;
        Ok(Signature { key_name, bytes })
    }

    /// The name of the key that made it. See [`Signature`] for an example.
    pub fn key_name(&self) -> &str {
        &self.key_name
    }

    /// The 64 bytes of the ed25519 signature. See [`Signature`] for an example.
    pub fn bytes(&self) -> &[u8; 64] {
        &self.bytes
    }
}

impl fmt::Display for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.key_name, BASE64.encode(self.bytes))
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({self})")
    }
}

/// Anything that can sign a narinfo fingerprint under a key name.
///
/// ```
/// use cachecore::signing::{SecretKey, Signature, Signer};
/// // A signer whose key lives elsewhere (here: a wrapped SecretKey; in real life, a KMS).
/// struct Remote(SecretKey);
/// impl Signer for Remote {
///     fn key_name(&self) -> &str { self.0.name() }
///     fn sign(&self, message: &[u8]) -> Signature { self.0.sign(message) }
/// }
/// let remote = Remote(SecretKey::generate("kms-1").unwrap());
/// let public = remote.0.public_key();
/// let signer: &dyn Signer = &remote;
/// assert!(public.verify(b"fingerprint", &signer.sign(b"fingerprint")));
/// ```
pub trait Signer: Send + Sync {
    /// The key name written before the `:` of the signature.
    fn key_name(&self) -> &str;
    /// Signs `message` (a narinfo fingerprint).
    fn sign(&self, message: &[u8]) -> Signature;
}

/// An ed25519 secret key with its name, as `nix key generate-secret` writes it.
pub struct SecretKey {
    name: String,
    key: SigningKey,
}

impl SecretKey {
    /// Generates a new key from the operating system's randomness.
    ///
    /// ```
    /// use cachecore::signing::{SecretKey, Signer as _};
    /// let key = SecretKey::generate("cache.example.org-1").unwrap();
    /// assert_eq!((key.name(), key.key_name()), ("cache.example.org-1", "cache.example.org-1"));
    /// assert_eq!(key.public_key().name(), key.name());
    /// assert!(key.to_nix_string().starts_with("cache.example.org-1:"));
    /// assert!(SecretKey::generate("bad name").is_err()); // see `check_key_name`
    /// ```
    pub fn generate(name: impl Into<String>) -> Result<Self, KeyError> {
        let name = name.into();
        check_key_name(&name)?;
        let mut seed = Zeroizing::new([0u8; 32]);
        rand_core::OsRng
            .try_fill_bytes(seed.as_mut())
            .map_err(|e| KeyError::Random(e.to_string()))?;
        Ok(SecretKey {
            name,
            key: SigningKey::from_bytes(&seed),
        })
    }

    /// Parses `name:base64(64 bytes)`; surrounding whitespace (a trailing newline) is ignored.
    /// A public key is a [`KeyError::WrongKind`].
    ///
    /// ```
    /// use cachecore::signing::{KeyError, SecretKey};
    /// let key = SecretKey::generate("cache.example.org-1").unwrap();
    /// // Round trip through Nix's file format (as `nix key generate-secret` writes it).
    /// let text = key.to_nix_string();
    /// let again = SecretKey::parse(&format!("{}\n", *text)).unwrap();
    /// assert_eq!(again.public_key(), key.public_key());
    /// // A public key where a secret key is needed is refused, saying which is which.
    /// let public = key.public_key().to_string();
    /// assert!(matches!(SecretKey::parse(&public), Err(KeyError::WrongKind { .. })));
    /// ```
    pub fn parse(s: &str) -> Result<Self, KeyError> {
        let (name, bytes) = decode_key_of(KeyKind::Secret, s)?;
        let key = SigningKey::from_keypair_bytes(&bytes)
            .map_err(|_| KeyError::Inconsistent { name: name.clone() })?;
        Ok(SecretKey { name, key })
    }

    /// The key's name. See [`SecretKey::generate`] for an example.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The matching public key.
    ///
    /// See [`SecretKey::generate`] for an example.
    pub fn public_key(&self) -> PublicKey {
        PublicKey {
            name: self.name.clone(),
            key: self.key.verifying_key(),
        }
    }

    /// The key in Nix's file format, `name:base64(64 bytes)`; the buffer is zeroized on drop.
    ///
    /// See [`SecretKey::generate`] and [`SecretKey::parse`] for examples.
    pub fn to_nix_string(&self) -> Zeroizing<String> {
        let bytes = Zeroizing::new(self.key.to_keypair_bytes());
        Zeroizing::new(format!("{}:{}", self.name, BASE64.encode(bytes.as_ref())))
    }
}

use rand_core::RngCore as _;

impl Signer for SecretKey {
    fn key_name(&self) -> &str {
        &self.name
    }

    fn sign(&self, message: &[u8]) -> Signature {
        Signature {
            key_name: self.name.clone(),
            bytes: self.key.sign(message).to_bytes(),
        }
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretKey")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// An ed25519 public key with its name, as `nix key convert-secret-to-public` prints it.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    name: String,
    key: VerifyingKey,
}

impl PublicKey {
    /// Parses `name:base64(32 bytes)`; surrounding whitespace is ignored. A secret key is a
    /// [`KeyError::WrongKind`].
    ///
    /// ```
    /// use cachecore::signing::PublicKey;
    /// let key = PublicKey::parse("cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=")
    ///     .unwrap();
    /// assert_eq!(key.name(), "cache.nixos.org-1");
    /// assert_eq!(key.to_string(), "cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=");
    /// assert!(PublicKey::parse("cache.nixos.org-1:not base64").is_err());
    /// ```
    pub fn parse(s: &str) -> Result<Self, KeyError> {
        let (name, bytes) = decode_key_of(KeyKind::Public, s)?;
        let mut public = [0u8; 32];
        public.copy_from_slice(&bytes[..32]);
        let key = VerifyingKey::from_bytes(&public)
            .map_err(|_| KeyError::BadPoint { name: name.clone() })?;
        Ok(PublicKey { name, key })
    }

    /// The key's name. See [`SecretKey::generate`] for an example.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// True when `sig` is this key's valid signature of `message` (the key names must match too).
    ///
    /// ```
    /// use cachecore::signing::{PublicKey, SecretKey, Signer as _};
    /// let key = SecretKey::generate("cache.example.org-1").unwrap();
    /// let sig = key.sign(b"1;/nix/store/...;sha256:...;42;");
    /// let public = key.public_key();
    /// assert!(public.verify(b"1;/nix/store/...;sha256:...;42;", &sig));
    /// assert!(!public.verify(b"1;/nix/store/...;sha256:...;43;", &sig));
    /// // The same key under another name verifies nothing.
    /// let text = public.to_string().replacen("cache.example.org-1", "other-1", 1);
    /// let renamed: PublicKey = text.parse().unwrap();
    /// assert!(!renamed.verify(b"1;/nix/store/...;sha256:...;42;", &sig));
    /// ```
    pub fn verify(&self, message: &[u8], sig: &Signature) -> bool {
        sig.key_name == self.name
            && self
                .key
                .verify(message, &ed25519_dalek::Signature::from_bytes(&sig.bytes))
                .is_ok()
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.name, BASE64.encode(self.key.as_bytes()))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

impl std::str::FromStr for PublicKey {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

// ---------------------------------------------------------------------------------------------
// Key files and key arguments
// ---------------------------------------------------------------------------------------------

/// Key files larger than this are refused unread: a key line is under 200 bytes.
pub const MAX_KEY_FILE: u64 = 64 * 1024;

/// Why a key file, or an argument naming a key or a key file, could not be used. Messages name
/// the file and the line; they quote a bad line only in public key files, and never quote
/// anything that looks like key material (keys are named by their name only).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyFileError {
    /// The file cannot be opened or read.
    #[error("cannot read {wanted} file {file}: {source}")]
    Read {
        file: String,
        wanted: KeyKind,
        #[source]
        source: std::io::Error,
    },
    /// The file is too large to be a key file.
    #[error("{file} is not a {wanted} file: it is larger than {MAX_KEY_FILE} bytes")]
    TooLarge { file: String, wanted: KeyKind },
    /// A line that is not blank, not a `#` comment and not one key.
    #[error("{file}, line {line}: expected one {wanted} `name:base64` per line (blank lines and `#` comments are allowed), found {}", found.as_deref().unwrap_or("something else"))]
    NotAKey {
        file: String,
        line: usize,
        wanted: KeyKind,
        /// A short, quoted, key-free prefix of the line, or `None` when the line is not shown
        /// (secret key files, text that is not UTF-8).
        found: Option<String>,
    },
    /// A line of the other kind of key.
    #[error("{file}, line {line}: {}", wrong_kind_message(*given, *wanted, name, Some(file)))]
    WrongKind {
        file: String,
        line: usize,
        name: String,
        given: KeyKind,
        wanted: KeyKind,
    },
    /// A line that looks like a key of the right kind but does not parse.
    #[error("{file}, line {line}: {source}")]
    BadKey {
        file: String,
        line: usize,
        #[source]
        source: KeyError,
    },
    /// Only blank lines and comments.
    #[error("{file} holds no {wanted} (expected a line `name:base64`)")]
    NoKey { file: String, wanted: KeyKind },
    /// A second secret key in a secret key file.
    #[error("{file}, line {line}: a second secret key (the first is on line {first}); a secret key file holds exactly one")]
    SecondSecret {
        file: String,
        line: usize,
        first: usize,
    },
    /// A key itself where the name of a secret key file is expected.
    #[error("{}", key_given_message(*given, name))]
    KeyNotFile { name: String, given: KeyKind },
    /// A public key argument that is neither a key nor a readable file.
    #[error("{arg} is neither a public key `name:base64` nor a readable file of them: {source}")]
    NeitherKeyNorFile {
        /// The argument, quoted, with anything that looks like key material left out.
        arg: String,
        #[source]
        source: std::io::Error,
    },
    /// A key given as an argument does not parse.
    #[error("the key given: {0}")]
    Given(#[source] KeyError),
}

fn key_given_message(given: KeyKind, name: &str) -> String {
    match given {
        KeyKind::Secret => format!(
            "the secret key `{name}` itself was given where the name of a file holding it is \
             expected; pass the file (a key on the command line is visible to every user of \
             the machine)"
        ),
        KeyKind::Public => format!(
            "the public key `{name}` was given where a secret key file is needed to sign; pass the \
             secret key file (`cachecore key generate NAME --out FILE` makes one)"
        ),
    }
}

/// True for the base64 alphabet (standard, with padding).
fn is_base64_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '=')
}

/// When `word` looks like key material — `name:` then 20 or more base64 characters, or such a
/// run alone — the name (empty when there is none); otherwise `None`.
fn key_like(word: &str) -> Option<&str> {
    let (name, data) = word.rsplit_once(':').unwrap_or(("", word));
    (data.chars().count() >= 20 && data.chars().all(is_base64_char)).then_some(name)
}

/// `text` for a message: at most 60 characters, with every word that looks like key material
/// replaced by its name and `…`.
fn redact(text: &str) -> String {
    let shown = text
        .split(' ')
        .map(|word| match key_like(word) {
            Some("") => "…".to_owned(),
            Some(name) => format!("{name}:…"),
            None => word.to_owned(),
        })
        .collect::<Vec<_>>()
        .join(" ");
    let mut short: String = shown.chars().take(60).collect();
    if short.len() < shown.len() {
        short.push('…');
    }
    short
}

/// [`redact`]ed and quoted.
fn quote_safely(text: &str) -> String {
    format!("{:?}", redact(text))
}

/// What one line of a key file holds.
enum KeyLine<'a> {
    /// Blank or a `#` comment.
    Skip,
    /// One word that should be a key.
    Key(&'a str),
    /// Anything else (several words, text that is not UTF-8).
    Other(Option<&'a str>),
}

/// Splits a key file's text into numbered lines (from 1) and classifies them.
fn key_lines(text: &[u8]) -> impl Iterator<Item = (usize, KeyLine<'_>)> {
    text.split(|&b| b == b'\n').enumerate().map(|(i, raw)| {
        let line = match std::str::from_utf8(raw) {
            Ok(line) => line.trim(),
            Err(_) => return (i + 1, KeyLine::Other(None)),
        };
        let kind = if line.is_empty() || line.starts_with('#') {
            KeyLine::Skip
        } else if line.contains(char::is_whitespace) {
            KeyLine::Other(Some(line))
        } else {
            KeyLine::Key(line)
        };
        (i + 1, kind)
    })
}

/// Reads at most [`MAX_KEY_FILE`] bytes; the buffer is zeroized on drop.
fn read_key_text(
    mut reader: impl std::io::Read,
    file: &str,
    wanted: KeyKind,
) -> Result<Zeroizing<Vec<u8>>, KeyFileError> {
    let mut text = Zeroizing::new(Vec::new());
    reader
        .by_ref()
        .take(MAX_KEY_FILE + 1)
        .read_to_end(&mut text)
        .map_err(|source| KeyFileError::Read {
            file: file.to_owned(),
            wanted,
            source,
        })?;
    if text.len() as u64 > MAX_KEY_FILE {
        return Err(KeyFileError::TooLarge {
            file: file.to_owned(),
            wanted,
        });
    }
    Ok(text)
}

/// The error for a key line of `wanted` kind that did not parse.
fn line_error(file: &str, line: usize, error: KeyError) -> KeyFileError {
    let file = file.to_owned();
    match error {
        KeyError::WrongKind {
            name,
            given,
            wanted,
        } => KeyFileError::WrongKind {
            file,
            line,
            name,
            given,
            wanted,
        },
        source => KeyFileError::BadKey { file, line, source },
    }
}

impl PublicKey {
    /// Parses the text of a public key file (one or more keys; the grammar is in the
    /// [module documentation](self)); `file` names it in errors.
    /// A line that is not a key is quoted in the error (at most 60 characters, with anything
    /// that looks like key material left out).
    ///
    /// ```
    /// use cachecore::signing::{KeyFileError, PublicKey};
    /// let text = b"# keys we trust\n\
    /// cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=\n\
    /// \n";
    /// let keys = PublicKey::parse_file_text("trusted.pub", text).unwrap();
    /// assert_eq!(keys.len(), 1);
    /// assert_eq!(keys[0].name(), "cache.nixos.org-1");
    /// let e = PublicKey::parse_file_text("trusted.pub", b"# nothing\n").unwrap_err();
    /// assert!(matches!(e, KeyFileError::NoKey { .. }));
    /// ```
    pub fn parse_file_text(file: &str, text: &[u8]) -> Result<Vec<PublicKey>, KeyFileError> {
        let mut keys = Vec::new();
        for (line, kind) in key_lines(text) {
            match kind {
                KeyLine::Skip => {}
                KeyLine::Other(found) => {
                    return Err(KeyFileError::NotAKey {
                        file: file.to_owned(),
                        line,
                        wanted: KeyKind::Public,
                        found: found.map(quote_safely),
                    })
                }
                KeyLine::Key(word) => match PublicKey::parse(word) {
                    Ok(key) => keys.push(key),
                    Err(KeyError::MissingName { .. }) => {
                        return Err(KeyFileError::NotAKey {
                            file: file.to_owned(),
                            line,
                            wanted: KeyKind::Public,
                            found: Some(quote_safely(word)),
                        })
                    }
                    Err(e) => return Err(line_error(file, line, e)),
                },
            }
        }
        if keys.is_empty() {
            return Err(KeyFileError::NoKey {
                file: file.to_owned(),
                wanted: KeyKind::Public,
            });
        }
        Ok(keys)
    }

    /// Reads a public key file: one or more keys (see [`PublicKey::parse_file_text`]).
    ///
    /// ```
    /// use cachecore::signing::{PublicKey, SecretKey};
    /// let a = SecretKey::generate("a-1").unwrap().public_key();
    /// let b = SecretKey::generate("b-1").unwrap().public_key();
    /// let dir = tempfile::tempdir().unwrap();
    /// let file = dir.path().join("trusted.pub");
    /// std::fs::write(&file, format!("# our caches\n{a}\n\n{b}\n")).unwrap();
    /// assert_eq!(PublicKey::read_file(&file).unwrap(), [a, b]);
    /// ```
    pub fn read_file(path: &std::path::Path) -> Result<Vec<PublicKey>, KeyFileError> {
        let file = path.display().to_string();
        let reader = std::fs::File::open(path).map_err(|source| KeyFileError::Read {
            file: file.clone(),
            wanted: KeyKind::Public,
            source,
        })?;
        let text = read_key_text(reader, &file, KeyKind::Public)?;
        PublicKey::parse_file_text(&file, &text)
    }

    /// A trusted-key argument: a public key `name:base64` itself (as in `nix.conf`'s
    /// `trusted-public-keys`), or the name of a public key file (one or more keys, see
    /// [`PublicKey::parse_file_text`]). A secret key, given either way, is refused without
    /// being repeated.
    ///
    /// ```
    /// use cachecore::signing::{PublicKey, SecretKey};
    /// let key = SecretKey::generate("cache.example.org-1").unwrap().public_key();
    /// // The key itself ...
    /// assert_eq!(PublicKey::from_arg(&key.to_string()).unwrap(), [key.clone()]);
    /// // ... or a file holding it.
    /// let dir = tempfile::tempdir().unwrap();
    /// let file = dir.path().join("cache.pub");
    /// std::fs::write(&file, format!("{key}\n")).unwrap();
    /// assert_eq!(PublicKey::from_arg(file.to_str().unwrap()).unwrap(), [key]);
    /// ```
    pub fn from_arg(arg: &str) -> Result<Vec<PublicKey>, KeyFileError> {
        let word = arg.trim();
        if !word.contains(char::is_whitespace) && word.contains(':') && key_like(word).is_some() {
            return PublicKey::parse(word)
                .map(|key| vec![key])
                .map_err(KeyFileError::Given);
        }
        let path = std::path::Path::new(arg);
        let reader =
            std::fs::File::open(path).map_err(|source| KeyFileError::NeitherKeyNorFile {
                arg: quote_safely(arg),
                source,
            })?;
        let text = read_key_text(reader, &path.display().to_string(), KeyKind::Public)?;
        PublicKey::parse_file_text(&path.display().to_string(), &text)
    }

    /// [`PublicKey::from_arg`] for each argument (each `--trusted-key`), all keys together.
    ///
    /// ```
    /// use cachecore::signing::{PublicKey, SecretKey};
    /// let a = SecretKey::generate("a-1").unwrap().public_key();
    /// let b = SecretKey::generate("b-1").unwrap().public_key();
    /// let keys = PublicKey::from_args([a.to_string(), b.to_string()]).unwrap();
    /// assert_eq!(keys, [a, b]);
    /// assert!(PublicKey::from_args(["/no/such/file"]).is_err());
    /// ```
    pub fn from_args<S: AsRef<str>>(
        args: impl IntoIterator<Item = S>,
    ) -> Result<Vec<PublicKey>, KeyFileError> {
        let mut keys = Vec::new();
        for arg in args {
            keys.extend(PublicKey::from_arg(arg.as_ref())?);
        }
        Ok(keys)
    }
}

impl SecretKey {
    /// Parses the text of a secret key file: exactly one secret key line, blank lines and `#`
    /// comments allowed (the grammar is in the [module documentation](self)). No line of it is ever quoted in an error.
    ///
    /// ```
    /// use cachecore::signing::SecretKey;
    /// let key = SecretKey::generate("cache.example.org-1").unwrap();
    /// let text = format!("# made by `cachecore key generate`\n{}\r\n", *key.to_nix_string());
    /// let read = SecretKey::parse_file_text("cache.sec", text.as_bytes()).unwrap();
    /// assert_eq!(read.public_key(), key.public_key());
    /// // Two secret keys in one file: refused, naming the file.
    /// let two = format!("{0}\n{0}\n", *key.to_nix_string());
    /// let e = SecretKey::parse_file_text("cache.sec", two.as_bytes()).unwrap_err();
    /// assert!(e.to_string().contains("cache.sec"));
    /// ```
    pub fn parse_file_text(file: &str, text: &[u8]) -> Result<SecretKey, KeyFileError> {
        let mut found: Option<(usize, SecretKey)> = None;
        for (line, kind) in key_lines(text) {
            let word = match kind {
                KeyLine::Skip => continue,
                KeyLine::Other(_) => None,
                KeyLine::Key(word) => Some(word),
            };
            let key = match word.map(SecretKey::parse) {
                Some(Ok(key)) => key,
                Some(Err(KeyError::MissingName { .. })) | None => {
                    return Err(KeyFileError::NotAKey {
                        file: file.to_owned(),
                        line,
                        wanted: KeyKind::Secret,
                        found: None,
                    })
                }
                Some(Err(e)) => return Err(line_error(file, line, e)),
            };
            if let Some((first, _)) = &found {
                return Err(KeyFileError::SecondSecret {
                    file: file.to_owned(),
                    line,
                    first: *first,
                });
            }
            found = Some((line, key));
        }
        found
            .map(|(_, key)| key)
            .ok_or_else(|| KeyFileError::NoKey {
                file: file.to_owned(),
                wanted: KeyKind::Secret,
            })
    }

    /// Reads a secret key file from `reader` (stdin, say), named `file` in errors.
    ///
    /// ```
    /// use cachecore::signing::SecretKey;
    /// let key = SecretKey::generate("cache.example.org-1").unwrap();
    /// let text = format!("{}\n", *key.to_nix_string());
    /// let read = SecretKey::read_from(text.as_bytes(), "<stdin>").unwrap();
    /// assert_eq!(read.public_key(), key.public_key());
    /// assert!(SecretKey::read_from(&b""[..], "<stdin>").is_err()); // no key
    /// ```
    pub fn read_from(reader: impl std::io::Read, file: &str) -> Result<SecretKey, KeyFileError> {
        let text = read_key_text(reader, file, KeyKind::Secret)?;
        SecretKey::parse_file_text(file, &text)
    }

    /// Reads a secret key file (see [`SecretKey::parse_file_text`]). When `path` cannot be
    /// opened and is itself a key (`--key "$(cat team.sec)"`), the error says so without
    /// repeating it.
    ///
    /// ```
    /// use cachecore::signing::SecretKey;
    /// let key = SecretKey::generate("cache.example.org-1").unwrap();
    /// let dir = tempfile::tempdir().unwrap();
    /// let file = dir.path().join("cache.sec");
    /// std::fs::write(&file, format!("{}\n", *key.to_nix_string())).unwrap();
    /// let read = SecretKey::read_file(&file).unwrap();
    /// assert_eq!(read.public_key(), key.public_key());
    /// // The message names the file, never the key.
    /// let e = SecretKey::read_file(&dir.path().join("missing.sec")).unwrap_err();
    /// assert!(e.to_string().contains("missing.sec"));
    /// ```
    pub fn read_file(path: &std::path::Path) -> Result<SecretKey, KeyFileError> {
        let reader = match std::fs::File::open(path) {
            Ok(reader) => reader,
            Err(source) => {
                let arg = path.to_string_lossy();
                let word = arg.trim();
                if let Some(name) = key_like(word).filter(|_| word.contains(':')) {
                    let given = decode_key("key", word)
                        .ok()
                        .and_then(|(_, bytes)| KeyKind::of_len(bytes.len()))
                        .unwrap_or(KeyKind::Secret);
                    return Err(KeyFileError::KeyNotFile {
                        name: name.to_owned(),
                        given,
                    });
                }
                return Err(KeyFileError::Read {
                    file: redact(&arg),
                    wanted: KeyKind::Secret,
                    source,
                });
            }
        };
        SecretKey::read_from(reader, &path.display().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Generated by `nix key generate-secret --key-name test-1` (Nix 2.8) and
    // `nix key convert-secret-to-public`.
    const NIX_SECRET: &str = "test-1:fxzdig5BL0t9gZn/EDqGkgfAsIQOO8LzEzDZN8nYFRXE97hGPaNe7XoRVtIxMUqgwtaBq09DtHZCKmWsbCV90g==";
    const NIX_PUBLIC: &str = "test-1:xPe4Rj2jXu16EVbSMTFKoMLWgatPQ7R2QiplrGwlfdI=";

    #[test]
    fn reads_nix_keys() {
        let secret = SecretKey::parse(&format!("{NIX_SECRET}\n")).unwrap();
        assert_eq!(secret.public_key().to_string(), NIX_PUBLIC);
        assert_eq!(secret.to_nix_string().as_str(), NIX_SECRET);
        assert_eq!(PublicKey::parse(NIX_PUBLIC).unwrap(), secret.public_key());
    }

    #[test]
    fn debug_hides_secret() {
        let secret = SecretKey::parse(NIX_SECRET).unwrap();
        let shown = format!("{secret:?}");
        assert!(!shown.contains(&NIX_SECRET[7..20]), "{shown}");
        assert!(shown.contains("test-1"));
    }

    #[test]
    fn sign_verify() {
        let secret = SecretKey::generate("k").unwrap();
        let sig = secret.sign(b"msg");
        let reparsed = Signature::parse(&sig.to_string()).unwrap();
        assert!(secret.public_key().verify(b"msg", &reparsed));
        assert!(!secret.public_key().verify(b"other", &reparsed));
        let other = SecretKey::generate("k").unwrap();
        assert!(!other.public_key().verify(b"msg", &reparsed));
    }

    #[test]
    fn bad_keys() {
        assert!(matches!(
            SecretKey::parse("nocolon"),
            Err(KeyError::MissingName { .. })
        ));
        assert!(matches!(
            SecretKey::parse(":abc"),
            Err(KeyError::MissingName { .. })
        ));
        assert!(matches!(
            SecretKey::parse("k:!!"),
            Err(KeyError::BadBase64 { .. })
        ));
        assert!(matches!(
            SecretKey::parse(NIX_PUBLIC),
            Err(KeyError::WrongKind {
                given: KeyKind::Public,
                wanted: KeyKind::Secret,
                ..
            })
        ));
        assert!(matches!(
            PublicKey::parse(NIX_SECRET),
            Err(KeyError::WrongKind {
                given: KeyKind::Secret,
                wanted: KeyKind::Public,
                ..
            })
        ));
        assert!(matches!(
            PublicKey::parse("k:AAAA"),
            Err(KeyError::BadLength { found: 3, .. })
        ));
        // Stray text before a key is not part of its name.
        assert!(matches!(
            PublicKey::parse(&format!("Finished release\n{NIX_PUBLIC}")),
            Err(KeyError::BadName { .. })
        ));
        // Flip a byte of the embedded public half.
        let mut raw = BASE64.decode(&NIX_SECRET[7..]).unwrap();
        raw[40] ^= 1;
        let broken = format!("test-1:{}", BASE64.encode(raw));
        assert!(matches!(
            SecretKey::parse(&broken),
            Err(KeyError::Inconsistent { .. })
        ));
    }

    /// The secret key's base64 must never appear in `message`.
    fn assert_no_secret(message: &str) {
        let data = &NIX_SECRET[7..];
        for window in data.as_bytes().windows(12) {
            let piece = std::str::from_utf8(window).unwrap();
            assert!(!message.contains(piece), "secret material in {message:?}");
        }
    }

    #[test]
    fn key_names() {
        for good in ["cache.example.org-1", "a", "name_with.dots-42"] {
            check_key_name(good).unwrap();
        }
        for bad in ["", "a b", "a:b", "tab\tname", "#1", "new\nline"] {
            let err = SecretKey::generate(bad).unwrap_err();
            assert!(matches!(err, KeyError::BadName { .. }), "{bad:?}: {err}");
        }
        assert!(check_key_name("a b")
            .unwrap_err()
            .to_string()
            .contains("trusted-public-keys"));
    }

    #[test]
    fn public_key_files() {
        let text = format!("# the team's keys\n\n  {NIX_PUBLIC}  \r\n# second\n{}\n", {
            SecretKey::generate("other-1").unwrap().public_key()
        });
        let keys = PublicKey::parse_file_text("team.pub", text.as_bytes()).unwrap();
        assert_eq!(keys.len(), 2);
        assert_eq!(keys[0].to_string(), NIX_PUBLIC);
        assert_eq!(keys[1].name(), "other-1");

        // The README's old mistake: cargo's progress lines in front of the key.
        let polluted = format!(
            "   Compiling cachecore v0.1.0 (/work/cachecore)\n    Finished `release` profile\n{NIX_PUBLIC}\n"
        );
        let err = PublicKey::parse_file_text("demo-1.pub", polluted.as_bytes()).unwrap_err();
        let msg = err.to_string();
        assert!(
            matches!(err, KeyFileError::NotAKey { line: 1, .. }),
            "{msg}"
        );
        assert!(
            msg.starts_with("demo-1.pub, line 1: expected one public key"),
            "{msg}"
        );
        assert!(msg.contains("Compiling cachecore"), "{msg}");

        // A secret key in a public key file: named, never shown, with the fix.
        let text = format!("{NIX_PUBLIC}\n{NIX_SECRET}\n");
        let err = PublicKey::parse_file_text("team.pub", text.as_bytes()).unwrap_err();
        let msg = err.to_string();
        assert!(
            matches!(
                err,
                KeyFileError::WrongKind {
                    line: 2,
                    given: KeyKind::Secret,
                    ..
                }
            ),
            "{msg}"
        );
        assert!(msg.contains("`cachecore key public team.pub`"), "{msg}");
        assert!(msg.contains("`test-1`"), "{msg}");
        assert_no_secret(&msg);

        // Two keys on one line (as in nix.conf) are not one key per line; key material is
        // left out of the quote.
        let text = format!("{NIX_PUBLIC} {NIX_PUBLIC}");
        let msg = PublicKey::parse_file_text("k", text.as_bytes())
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("k, line 1:") && msg.contains("\"test-1:… test-1:…\""),
            "{msg}"
        );
        let text = format!("oops {NIX_SECRET}");
        assert_no_secret(
            &PublicKey::parse_file_text("k", text.as_bytes())
                .unwrap_err()
                .to_string(),
        );

        for (text, line) in [
            (&b"# only a comment\n\n"[..], 0),
            (b"k:!!notbase64\n", 1),
            (b"\n\nk:AAAA\n", 3),
            (b"\n\xff\xfe\n", 2),
        ] {
            let err = PublicKey::parse_file_text("f", text).unwrap_err();
            let msg = err.to_string();
            if line == 0 {
                assert!(matches!(err, KeyFileError::NoKey { .. }), "{msg}");
            } else {
                assert!(
                    msg.starts_with(&format!("f, line {line}:")),
                    "{text:?}: {msg}"
                );
            }
        }
    }

    #[test]
    fn secret_key_files() {
        let text = format!("# made by nix key generate-secret\n{NIX_SECRET}\n\n");
        let key = SecretKey::parse_file_text("team.sec", text.as_bytes()).unwrap();
        assert_eq!(key.public_key().to_string(), NIX_PUBLIC);
        // Nix writes no newline at all.
        SecretKey::parse_file_text("team.sec", NIX_SECRET.as_bytes()).unwrap();

        let other = SecretKey::generate("other-1").unwrap();
        let text = format!("{NIX_SECRET}\n{}\n", other.to_nix_string().as_str());
        let err = SecretKey::parse_file_text("team.sec", text.as_bytes()).unwrap_err();
        assert!(
            matches!(
                err,
                KeyFileError::SecondSecret {
                    line: 2,
                    first: 1,
                    ..
                }
            ),
            "{err}"
        );

        let err = SecretKey::parse_file_text("team.pub", NIX_PUBLIC.as_bytes()).unwrap_err();
        let msg = err.to_string();
        assert!(
            matches!(
                err,
                KeyFileError::WrongKind {
                    given: KeyKind::Public,
                    ..
                }
            ),
            "{msg}"
        );
        assert!(msg.contains("where a secret key is needed"), "{msg}");

        // A bad line in a secret key file is never quoted: it may be a damaged key.
        let text = format!("extra words {NIX_SECRET}\n");
        let msg = SecretKey::parse_file_text("s", text.as_bytes())
            .unwrap_err()
            .to_string();
        assert!(
            msg.starts_with("s, line 1: expected one secret key"),
            "{msg}"
        );
        assert!(!msg.contains("extra"), "{msg}");
        let text = NIX_SECRET.replace("test-1:", "");
        let msg = SecretKey::parse_file_text("s", text.as_bytes())
            .unwrap_err()
            .to_string();
        assert_no_secret(&msg);
    }

    #[test]
    fn key_arguments() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            PublicKey::from_arg(NIX_PUBLIC).unwrap()[0].to_string(),
            NIX_PUBLIC
        );
        let file = dir.path().join("k.pub");
        std::fs::write(&file, format!("{NIX_PUBLIC}\n")).unwrap();
        assert_eq!(
            PublicKey::from_arg(file.to_str().unwrap()).unwrap().len(),
            1
        );

        // A secret key given where a public key is expected.
        let msg = PublicKey::from_arg(NIX_SECRET).unwrap_err().to_string();
        assert!(
            msg.contains("the secret key `test-1` was given where a public key is needed"),
            "{msg}"
        );
        assert_no_secret(&msg);

        // A secret key given where a secret key *file* is expected.
        let err = SecretKey::read_file(NIX_SECRET.as_ref()).unwrap_err();
        let msg = err.to_string();
        assert!(
            matches!(
                err,
                KeyFileError::KeyNotFile {
                    given: KeyKind::Secret,
                    ..
                }
            ),
            "{msg}"
        );
        assert_no_secret(&msg);
        let err = SecretKey::read_file(NIX_PUBLIC.as_ref()).unwrap_err();
        assert!(
            matches!(
                err,
                KeyFileError::KeyNotFile {
                    given: KeyKind::Public,
                    ..
                }
            ),
            "{err}"
        );

        let missing = dir.path().join("missing.sec");
        let msg = SecretKey::read_file(&missing).unwrap_err().to_string();
        assert!(
            msg.starts_with("cannot read secret key file ") && msg.contains("missing.sec"),
            "{msg}"
        );
        let msg = PublicKey::from_arg("nope.pub").unwrap_err().to_string();
        assert!(
            msg.starts_with("\"nope.pub\" is neither a public key"),
            "{msg}"
        );

        let big = dir.path().join("big");
        std::fs::write(&big, vec![b'#'; MAX_KEY_FILE as usize + 1]).unwrap();
        assert!(matches!(
            SecretKey::read_file(&big),
            Err(KeyFileError::TooLarge { .. })
        ));
    }
}
