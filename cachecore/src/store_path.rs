//! Store paths: `/nix/store/<32 nix32 chars>-<name>`.
//!
//! [`StorePathRef`] borrows its name from the input, [`StorePath`] owns it. Both hold the 20-byte
//! digest decoded, so comparing and hashing them is cheap. The store directory is not part of a
//! store path: parse and print full paths through a [`StoreDir`].
//!
//! ```
//! use cachecore::store_path::{StoreDir, StorePathRef};
//! let dir = StoreDir::default();
//! let p = dir.parse_path("/nix/store/7h7qgvs4kgzsn8a6rb273saxyqh4jxlz-hello-2.12").unwrap();
//! assert_eq!(p.name(), "hello-2.12");
//! assert_eq!(p.hash_part(), "7h7qgvs4kgzsn8a6rb273saxyqh4jxlz");
//! assert_eq!(dir.display(&p).to_string(), "/nix/store/7h7qgvs4kgzsn8a6rb273saxyqh4jxlz-hello-2.12");
//! ```

use std::fmt;

use crate::hash::{Hash, HashAlgo};
use crate::nixbase32;

/// Bytes in a store path digest.
pub const DIGEST_LEN: usize = 20;
/// Characters in the nix32 hash part of a store path.
pub const HASH_PART_LEN: usize = 32;
/// Longest name Nix accepts.
pub const MAX_NAME_LEN: usize = 211;
/// The default store directory.
pub const DEFAULT_STORE_DIR: &str = "/nix/store";

/// Why a store path could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    #[error("store path {path:?} is not inside the store directory {store_dir:?}")]
    NotInStore { path: String, store_dir: String },
    #[error("store path {0:?} is too short to hold a 32-character hash, a dash and a name")]
    TooShort(String),
    #[error("store path {path:?} has an invalid hash part: {source}")]
    BadHash {
        path: String,
        source: nixbase32::DecodeError,
    },
    #[error("store path {0:?} has no dash after its hash part")]
    MissingDash(String),
    #[error("store path {0:?} has an empty name")]
    EmptyName(String),
    #[error("store path {path:?} has a name longer than {MAX_NAME_LEN} characters")]
    NameTooLong { path: String },
    #[error(
        "store path {path:?} contains illegal character {character:?} at name position {position}"
    )]
    BadNameChar {
        path: String,
        character: char,
        position: usize,
    },
    #[error("store path {0:?} has the name `.` or `..`")]
    DotName(String),
}

/// Checks a store path name with Nix's rules: 1–211 characters from `[A-Za-z0-9+-._?=]`, and
/// not `.` or `..`.
///
/// ```
/// use cachecore::store_path::{validate_name, ParseError};
/// assert!(validate_name("x", "hello-2.12").is_ok());
/// assert!(matches!(validate_name("x", "hello world"), Err(ParseError::BadNameChar { position: 5, .. })));
/// assert!(matches!(validate_name("x", ".."), Err(ParseError::DotName(_))));
/// assert!(validate_name("x", &"a".repeat(212)).is_err());
/// ```
pub fn validate_name(path_for_errors: &str, name: &str) -> Result<(), ParseError> {
    if name.is_empty() {
        return Err(ParseError::EmptyName(path_for_errors.to_owned()));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(ParseError::NameTooLong {
            path: path_for_errors.to_owned(),
        });
    }
    if let Some((position, character)) = name
        .char_indices()
        .find(|&(_, c)| !(c.is_ascii_alphanumeric() || "+-._?=".contains(c)))
    {
        return Err(ParseError::BadNameChar {
            path: path_for_errors.to_owned(),
            character,
            position,
        });
    }
    if name == "." || name == ".." {
        return Err(ParseError::DotName(path_for_errors.to_owned()));
    }
    Ok(())
}

/// A store path whose name borrows from the text it was parsed from.
///
/// ```
/// use cachecore::store_path::{StorePath, StorePathRef};
/// let text = "7h7qgvs4kgzsn8a6rb273saxyqh4jxlz-hello-2.12";
/// let p = StorePathRef::from_base_name(text).unwrap();
/// assert_eq!((p.hash_part().as_str(), p.name()), ("7h7qgvs4kgzsn8a6rb273saxyqh4jxlz", "hello-2.12"));
/// assert_eq!(StorePathRef::from_parts(*p.digest(), "hello-2.12").unwrap(), p);
/// let owned: StorePath = p.to_owned();
/// assert_eq!(owned.as_ref(), p);
/// assert_eq!(p.to_string(), text);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct StorePathRef<'a> {
    digest: [u8; DIGEST_LEN],
    name: &'a str,
}

/// A store path that owns its name.
///
/// ```
/// use cachecore::store_path::StorePath;
/// let p = StorePath::from_parts([0; 20], "hello").unwrap();
/// assert_eq!(p.to_string(), "00000000000000000000000000000000-hello");
/// assert_eq!((p.digest(), p.name()), (&[0; 20], "hello"));
/// assert_eq!(p.hash_part(), "00000000000000000000000000000000");
/// assert_eq!(p.as_ref().to_owned(), p);
/// assert!(StorePath::from_parts([0; 20], "").is_err());
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct StorePath {
    digest: [u8; DIGEST_LEN],
    name: String,
}

impl<'a> StorePathRef<'a> {
    /// Parses a base name, `<hash>-<name>`, as found in narinfo `References:`.
    ///
    /// See [`StorePathRef`] for an example.
    pub fn from_base_name(s: &'a str) -> Result<Self, ParseError> {
        if s.len() < HASH_PART_LEN + 2 {
            return Err(ParseError::TooShort(s.to_owned()));
        }
        let (hash, rest) = s
            .split_at_checked(HASH_PART_LEN)
            .ok_or_else(|| ParseError::TooShort(s.to_owned()))?;
        let digest = nixbase32::decode_fixed::<DIGEST_LEN>(hash.as_bytes()).map_err(|source| {
            ParseError::BadHash {
                path: s.to_owned(),
                source,
            }
        })?;
        let name = rest
            .strip_prefix('-')
            .ok_or_else(|| ParseError::MissingDash(s.to_owned()))?;
        validate_name(s, name)?;
        Ok(StorePathRef { digest, name })
    }

    /// Builds a store path from a digest and a name, validating the name.
    ///
    /// See [`StorePathRef`] for an example.
    pub fn from_parts(digest: [u8; DIGEST_LEN], name: &'a str) -> Result<Self, ParseError> {
        validate_name(name, name)?;
        Ok(StorePathRef { digest, name })
    }

    /// The 20-byte digest the hash part spells. See [`StorePathRef`] for an example.
    pub fn digest(&self) -> &[u8; DIGEST_LEN] {
        &self.digest
    }

    /// The name, after the hash part and its dash. See [`StorePathRef`] for an example.
    pub fn name(&self) -> &'a str {
        self.name
    }

    /// The 32-character nix32 hash part, which names the path's narinfo.
    ///
    /// See [`StorePathRef`] for an example.
    pub fn hash_part(&self) -> String {
        nixbase32::encode(&self.digest)
    }

    /// The owned form. See [`StorePathRef`] for an example.
    pub fn to_owned(&self) -> StorePath {
        StorePath {
            digest: self.digest,
            name: self.name.to_owned(),
        }
    }
}

impl StorePath {
    /// Parses a base name, `<hash>-<name>`.
    ///
    /// ```
    /// use cachecore::store_path::StorePath;
    /// // As in a narinfo's `References:` line.
    /// let p = StorePath::from_base_name("7h7qgvs4kgzsn8a6rb273saxyqh4jxlz-hello-2.12").unwrap();
    /// assert_eq!((p.hash_part().as_str(), p.name()), ("7h7qgvs4kgzsn8a6rb273saxyqh4jxlz", "hello-2.12"));
    /// assert_eq!(p.to_string(), "7h7qgvs4kgzsn8a6rb273saxyqh4jxlz-hello-2.12");
    /// assert!(StorePath::from_base_name("7h7qgvs4kgzsn8a6rb273saxyqh4jxlz-hello world").is_err());
    /// assert!(StorePath::from_base_name("eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee-x").is_err()); // `e` is not nix32
    /// ```
    pub fn from_base_name(s: &str) -> Result<Self, ParseError> {
        StorePathRef::from_base_name(s).map(|p| p.to_owned())
    }

    /// Builds a store path from a digest and a name, validating the name.
    ///
    /// See [`StorePath`] for an example.
    pub fn from_parts(digest: [u8; DIGEST_LEN], name: &str) -> Result<Self, ParseError> {
        StorePathRef::from_parts(digest, name).map(|p| p.to_owned())
    }

    /// The borrowed form. See [`StorePath`] for an example.
    pub fn as_ref(&self) -> StorePathRef<'_> {
        StorePathRef {
            digest: self.digest,
            name: &self.name,
        }
    }

    /// The 20-byte digest the hash part spells. See [`StorePath`] for an example.
    pub fn digest(&self) -> &[u8; DIGEST_LEN] {
        &self.digest
    }

    /// The name, after the hash part and its dash. See [`StorePath`] for an example.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The 32-character nix32 hash part, which names the path's narinfo. See [`StorePath`] for an
    /// example.
    pub fn hash_part(&self) -> String {
        nixbase32::encode(&self.digest)
    }
}

impl fmt::Display for StorePathRef<'_> {
    /// Prints the base name, `<hash>-<name>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", nixbase32::encode(&self.digest), self.name)
    }
}

impl fmt::Display for StorePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.as_ref().fmt(f)
    }
}

impl fmt::Debug for StorePathRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StorePath({self})")
    }
}

impl fmt::Debug for StorePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.as_ref().fmt(f)
    }
}

// Nix orders store paths by their base name; so do we, so sets print in Nix's order.
impl PartialOrd for StorePath {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for StorePath {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.hash_part()
            .cmp(&other.hash_part())
            .then_with(|| self.name.cmp(&other.name))
    }
}

impl std::str::FromStr for StorePath {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        StorePath::from_base_name(s)
    }
}

/// A store directory such as `/nix/store`.
///
/// ```
/// use cachecore::store_path::StoreDir;
/// let dir = StoreDir::new("/gnu/store/");
/// assert_eq!(dir.as_str(), "/gnu/store"); // trailing slash dropped
/// let p = dir.parse_path("/gnu/store/7h7qgvs4kgzsn8a6rb273saxyqh4jxlz-hello-2.12").unwrap();
/// assert_eq!(dir.display(&p).to_string(), "/gnu/store/7h7qgvs4kgzsn8a6rb273saxyqh4jxlz-hello-2.12");
/// assert_eq!(dir.full_path(&p.to_owned()), dir.display(&p).to_string());
/// // A path of another store directory, or below a store path, is refused.
/// assert!(dir.parse_path("/nix/store/7h7qgvs4kgzsn8a6rb273saxyqh4jxlz-hello-2.12").is_err());
/// assert!(dir.parse_path("/gnu/store/7h7qgvs4kgzsn8a6rb273saxyqh4jxlz-hello-2.12/bin").is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct StoreDir(String);

impl Default for StoreDir {
    fn default() -> Self {
        StoreDir(DEFAULT_STORE_DIR.to_owned())
    }
}

impl StoreDir {
    /// A store directory; trailing slashes are dropped.
    ///
    /// See [`StoreDir`] for an example.
    pub fn new(dir: &str) -> Self {
        let trimmed = dir.trim_end_matches('/');
        StoreDir(if trimmed.is_empty() {
            "/".to_owned()
        } else {
            trimmed.to_owned()
        })
    }

    /// The directory, without a trailing slash. See [`StoreDir`] for an example.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Parses a full store path, `<store dir>/<hash>-<name>`.
    ///
    /// See [`StoreDir`] for an example.
    pub fn parse_path<'a>(&self, path: &'a str) -> Result<StorePathRef<'a>, ParseError> {
        let base = path
            .strip_prefix(self.0.as_str())
            .and_then(|rest| rest.strip_prefix('/'))
            .filter(|base| !base.contains('/'))
            .ok_or_else(|| ParseError::NotInStore {
                path: path.to_owned(),
                store_dir: self.0.clone(),
            })?;
        StorePathRef::from_base_name(base)
    }

    /// Parses a path inside the store, returning the store path and what follows it
    /// (`/nix/store/<hash>-x/bin/y` gives the path and `bin/y`).
    ///
    /// ```
    /// use cachecore::store_path::StoreDir;
    /// let dir = StoreDir::default();
    /// let full = "/nix/store/7h7qgvs4kgzsn8a6rb273saxyqh4jxlz-hello-2.12/bin/hello";
    /// let (path, sub) = dir.parse_path_with_subpath(full).unwrap();
    /// assert_eq!((path.name(), sub), ("hello-2.12", "bin/hello"));
    /// assert!(dir.parse_path_with_subpath("/usr/bin/hello").is_err());
    /// ```
    pub fn parse_path_with_subpath<'a>(
        &self,
        path: &'a str,
    ) -> Result<(StorePathRef<'a>, &'a str), ParseError> {
        let rest = path
            .strip_prefix(self.0.as_str())
            .and_then(|rest| rest.strip_prefix('/'))
            .ok_or_else(|| ParseError::NotInStore {
                path: path.to_owned(),
                store_dir: self.0.clone(),
            })?;
        let (base, sub) = rest.split_once('/').unwrap_or((rest, ""));
        Ok((StorePathRef::from_base_name(base)?, sub.trim_matches('/')))
    }

    /// Displays a store path with this directory in front.
    ///
    /// See [`StoreDir`] for an example.
    pub fn display<'a>(&'a self, path: &'a StorePathRef<'_>) -> impl fmt::Display + 'a {
        struct Full<'a, 'b>(&'a str, &'a StorePathRef<'b>);
        impl fmt::Display for Full<'_, '_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}/{}", self.0, self.1)
            }
        }
        Full(&self.0, path)
    }

    /// The full path as a string.
    ///
    /// See [`StoreDir`] for an example.
    pub fn full_path(&self, path: &StorePath) -> String {
        format!("{}/{}", self.0, path)
    }

    /// Nix's `makeStorePath`: the path for an object of `kind` (`source`, `output:out`, `text:…`)
    /// whose inner hash is `hash`.
    ///
    /// ```
    /// use cachecore::{hash::Hash, store_path::StoreDir};
    /// let nar_hash = Hash::parse("sha256:0ip26j2h11n1kgkz36rl4akv694yz65hr72q4kv4b3lxcbi65b3p").unwrap();
    /// // `nix-store --add`'s path is a `source` path of the NAR hash.
    /// let path = StoreDir::default().make_store_path("source", &nar_hash, "empty").unwrap();
    /// assert_eq!(path.to_string(), "lx5i78a4izwk2qj1nq8rdc07y8zrwy90-empty");
    /// // The store directory is part of what is hashed.
    /// let other = StoreDir::new("/gnu/store").make_store_path("source", &nar_hash, "empty").unwrap();
    /// assert_ne!(other, path);
    /// ```
    pub fn make_store_path(
        &self,
        kind: &str,
        hash: &Hash,
        name: &str,
    ) -> Result<StorePath, ParseError> {
        let fingerprint = format!("{kind}:{}:{}:{}:{name}", hash.algo(), hash.to_hex(), self.0);
        let full = Hash::digest(HashAlgo::Sha256, fingerprint.as_bytes());
        StorePath::from_parts(compress_hash(full.digest_bytes()), name)
    }

    /// The path `nix-store --add` gives a tree whose NAR has sha256 `nar_hash` (content-addressed,
    /// recursive, no references).
    ///
    /// ```
    /// use cachecore::{hash::Hash, store_path::StoreDir};
    /// // An empty regular file named `empty`: its NAR hash, as `nix-hash --type sha256 --base32` prints it.
    /// let nar_hash = Hash::parse("sha256:0ip26j2h11n1kgkz36rl4akv694yz65hr72q4kv4b3lxcbi65b3p").unwrap();
    /// let path = StoreDir::default().make_source_path(&nar_hash, "empty").unwrap();
    /// // What `nix-store --add empty` prints.
    /// assert_eq!(StoreDir::default().full_path(&path), "/nix/store/lx5i78a4izwk2qj1nq8rdc07y8zrwy90-empty");
    /// ```
    pub fn make_source_path(&self, nar_hash: &Hash, name: &str) -> Result<StorePath, ParseError> {
        self.make_store_path("source", nar_hash, name)
    }

    /// Nix's `makeFixedOutputPath` for a fixed-output path without references.
    ///
    /// ```
    /// use cachecore::{hash::{Hash, HashAlgo}, store_path::StoreDir};
    /// let dir = StoreDir::default();
    /// let nar_hash = Hash::parse("sha256:0ip26j2h11n1kgkz36rl4akv694yz65hr72q4kv4b3lxcbi65b3p").unwrap();
    /// // Recursive sha256 is a source path, as `nix-store --add` makes.
    /// let path = dir.make_fixed_output_path(true, &nar_hash, "empty").unwrap();
    /// assert_eq!(path, dir.make_source_path(&nar_hash, "empty").unwrap());
    /// // A flat hash of the file's contents (as `fetchurl` has) names another path.
    /// let flat = Hash::digest(HashAlgo::Sha256, b"");
    /// assert_ne!(dir.make_fixed_output_path(false, &flat, "empty").unwrap(), path);
    /// ```
    pub fn make_fixed_output_path(
        &self,
        recursive: bool,
        hash: &Hash,
        name: &str,
    ) -> Result<StorePath, ParseError> {
        if recursive && hash.algo() == HashAlgo::Sha256 {
            return self.make_source_path(hash, name);
        }
        let prefix = if recursive { "r:" } else { "" };
        let inner = format!("fixed:out:{prefix}{}:{}:", hash.algo(), hash.to_hex());
        let inner_hash = Hash::digest(HashAlgo::Sha256, inner.as_bytes());
        self.make_store_path("output:out", &inner_hash, name)
    }
}

/// Folds a digest into 20 bytes by XOR, as Nix's `compressHash` does.
///
/// ```
/// use cachecore::store_path::compress_hash;
/// let mut digest = [0u8; 32];
/// digest[0] = 0b1010;
/// digest[20] = 0b0110; // folds onto byte 0
/// assert_eq!(compress_hash(&digest)[0], 0b1100);
/// assert_eq!(compress_hash(&digest)[1..], [0; 19]);
/// ```
pub fn compress_hash(digest: &[u8]) -> [u8; DIGEST_LEN] {
    let mut out = [0u8; DIGEST_LEN];
    for (i, b) in digest.iter().enumerate() {
        out[i % DIGEST_LEN] ^= b;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: &str = "/nix/store/7h7qgvs4kgzsn8a6rb273saxyqh4jxlz-hello-2.12";

    #[test]
    fn parse_and_print() {
        let dir = StoreDir::default();
        let p = dir.parse_path(P).unwrap();
        assert_eq!(dir.display(&p).to_string(), P);
        assert_eq!(p.to_owned().to_string(), &P[11..]);
        let with_sub = format!("{P}/bin/hello");
        let (q, sub) = dir.parse_path_with_subpath(&with_sub).unwrap();
        assert_eq!((q, sub), (p, "bin/hello"));
        let other = StoreDir::new("/tmp/store/");
        assert_eq!(other.as_str(), "/tmp/store");
        assert!(matches!(
            other.parse_path(P),
            Err(ParseError::NotInStore { .. })
        ));
    }

    #[test]
    fn rejects_bad_paths() {
        let h = "7h7qgvs4kgzsn8a6rb273saxyqh4jxlz";
        let cases = [
            ("short".to_owned(), "too short"),
            (format!("{}-x", &h.replace('7', "e")), "invalid hash part"),
            (format!("{h}_x"), "no dash"),
            (format!("{h}-"), "too short"),
            (format!("{h}-a b"), "illegal character ' '"),
            (format!("{h}-{}", "a".repeat(212)), "longer than 211"),
            (format!("{h}-.."), "`.` or `..`"),
            (format!("{h}-a/b"), "illegal character '/'"),
        ];
        for (input, msg) in cases {
            let err = StorePath::from_base_name(&input).unwrap_err().to_string();
            assert!(err.contains(msg), "{input}: {err}");
        }
        assert!(StorePath::from_base_name(&format!("{h}-{}", "a".repeat(211))).is_ok());
        assert!(StorePath::from_base_name(&format!("{h}-+-._?=Az09")).is_ok());
    }

    #[test]
    fn source_path_matches_nix() {
        // Nix 2.8: `nix-hash --type sha256 --base32 empty` and `nix-store --add empty` for an
        // empty regular file named `empty`.
        let nar_hash =
            Hash::parse("sha256:0ip26j2h11n1kgkz36rl4akv694yz65hr72q4kv4b3lxcbi65b3p").unwrap();
        let p = StoreDir::default()
            .make_source_path(&nar_hash, "empty")
            .unwrap();
        assert_eq!(p.to_string(), "lx5i78a4izwk2qj1nq8rdc07y8zrwy90-empty");
    }
}
