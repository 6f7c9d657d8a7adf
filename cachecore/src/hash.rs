//! Hashes as Nix spells them: `sha256:<nix32>`, `sha256:<hex>`, `sha256:<base64>` and SRI
//! `sha256-<base64>`, plus a writer that hashes what passes through it.
//!
//! ```
//! use cachecore::hash::{Hash, HashAlgo};
//! let h = Hash::digest(HashAlgo::Sha256, b"");
//! assert_eq!(h.to_string(), "sha256:0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73");
//! assert_eq!(Hash::parse(&h.to_sri()).unwrap(), h);
//! assert_eq!(Hash::parse(&format!("sha256:{}", h.to_hex())).unwrap(), h);
//! ```

use std::fmt;
use std::io::{self, Write};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use sha2::Digest as _;

use crate::nixbase32;

/// A hash algorithm Nix knows.
///
/// ```
/// use cachecore::hash::HashAlgo;
/// assert_eq!(HashAlgo::Sha256.name(), "sha256");
/// assert_eq!(HashAlgo::Sha512.to_string(), "sha512");
/// assert_eq!(HashAlgo::Sha1.digest_len(), 20);
/// assert_eq!(HashAlgo::from_name("md5"), Some(HashAlgo::Md5));
/// assert_eq!(HashAlgo::from_name("SHA256"), None); // names are lowercase
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HashAlgo {
    Md5,
    Sha1,
    Sha256,
    Sha512,
}

impl HashAlgo {
    /// Nix's name for the algorithm (`sha256`).
    ///
    /// See [`HashAlgo`] for an example.
    pub const fn name(self) -> &'static str {
        match self {
            HashAlgo::Md5 => "md5",
            HashAlgo::Sha1 => "sha1",
            HashAlgo::Sha256 => "sha256",
            HashAlgo::Sha512 => "sha512",
        }
    }

    /// Length of the digest in bytes.
    ///
    /// See [`HashAlgo`] for an example.
    pub const fn digest_len(self) -> usize {
        match self {
            HashAlgo::Md5 => 16,
            HashAlgo::Sha1 => 20,
            HashAlgo::Sha256 => 32,
            HashAlgo::Sha512 => 64,
        }
    }

    /// Parses Nix's name for an algorithm.
    ///
    /// See [`HashAlgo`] for an example.
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "md5" => HashAlgo::Md5,
            "sha1" => HashAlgo::Sha1,
            "sha256" => HashAlgo::Sha256,
            "sha512" => HashAlgo::Sha512,
            _ => return None,
        })
    }
}

impl fmt::Display for HashAlgo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A digest together with its algorithm.
///
/// ```
/// use cachecore::hash::{Hash, HashAlgo};
/// let h = Hash::sha256([0xab; 32]);
/// assert_eq!(h.algo(), HashAlgo::Sha256);
/// assert_eq!(h.digest_bytes(), [0xab; 32]);
/// assert_eq!(Hash::from_digest(HashAlgo::Sha256, &[0xab; 32]), Some(h.clone()));
/// assert_eq!(Hash::from_digest(HashAlgo::Sha256, &[0xab; 20]), None); // wrong length
/// // One digest, four spellings.
/// assert_eq!(h.to_hex(), "ab".repeat(32));
/// assert_eq!(h.to_nix32().len(), 52);
/// assert_eq!(h.to_nix32_string(), format!("sha256:{}", h.to_nix32()));
/// assert_eq!(h.to_string(), h.to_nix32_string());
/// assert!(h.to_sri().starts_with("sha256-q6ur"));
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Hash {
    algo: HashAlgo,
    bytes: [u8; 64],
}

/// Why a hash string could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    #[error("hash {0:?} names no algorithm (expected e.g. `sha256:` or `sha256-`)")]
    MissingAlgo(String),
    #[error("hash {hash:?} has unknown algorithm {algo:?}")]
    UnknownAlgo { hash: String, algo: String },
    #[error("hash {hash:?}: a {algo} digest of {len} characters is neither nix32, hex nor base64")]
    BadLength {
        hash: String,
        algo: HashAlgo,
        len: usize,
    },
    #[error("hash {hash:?}: bad {encoding} digest: {reason}")]
    BadDigest {
        hash: String,
        encoding: &'static str,
        reason: String,
    },
    #[error("hash {hash:?} is {found}, expected {expected}")]
    WrongAlgo {
        hash: String,
        expected: HashAlgo,
        found: HashAlgo,
    },
}

impl Hash {
    /// Wraps a digest; `None` when its length does not fit `algo`.
    ///
    /// See [`Hash`](struct@Hash) for an example.
    pub fn from_digest(algo: HashAlgo, digest: &[u8]) -> Option<Self> {
        if digest.len() != algo.digest_len() {
            return None;
        }
        let mut bytes = [0u8; 64];
        bytes[..digest.len()].copy_from_slice(digest);
        Some(Hash { algo, bytes })
    }

    /// A sha256 hash from its 32 bytes.
    ///
    /// See [`Hash`](struct@Hash) for an example.
    pub fn sha256(digest: [u8; 32]) -> Self {
        let mut bytes = [0u8; 64];
        bytes[..32].copy_from_slice(&digest);
        Hash {
            algo: HashAlgo::Sha256,
            bytes,
        }
    }

    /// Hashes `data` in one go.
    ///
    /// ```
    /// use cachecore::hash::{Hash, HashAlgo};
    /// let h = Hash::digest(HashAlgo::Sha256, b"");
    /// assert_eq!(h.to_hex(), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    /// ```
    pub fn digest(algo: HashAlgo, data: &[u8]) -> Self {
        let mut h = Hasher::new(algo);
        h.update(data);
        h.finish()
    }

    /// The algorithm. See [`Hash`](struct@Hash) for an example.
    pub fn algo(&self) -> HashAlgo {
        self.algo
    }

    /// The raw digest bytes.
    ///
    /// See [`Hash`](struct@Hash) for an example.
    pub fn digest_bytes(&self) -> &[u8] {
        &self.bytes[..self.algo.digest_len()]
    }

    /// `<algo>:<nix32>`, the spelling Nix uses in narinfo files (also what `Display` prints).
    ///
    /// See [`Hash`](struct@Hash) for an example.
    pub fn to_nix32_string(&self) -> String {
        format!("{}:{}", self.algo, nixbase32::encode(self.digest_bytes()))
    }

    /// The digest in lowercase hex, without the algorithm.
    ///
    /// See [`Hash`](struct@Hash) for an example.
    pub fn to_hex(&self) -> String {
        hex::encode(self.digest_bytes())
    }

    /// The digest in nix32, without the algorithm.
    ///
    /// See [`Hash`](struct@Hash) for an example.
    pub fn to_nix32(&self) -> String {
        nixbase32::encode(self.digest_bytes())
    }

    /// SRI spelling: `sha256-<base64>`.
    ///
    /// See [`Hash`](struct@Hash) for an example.
    pub fn to_sri(&self) -> String {
        format!("{}-{}", self.algo, BASE64.encode(self.digest_bytes()))
    }

    /// Parses `algo:digest` (digest in nix32, hex or base64, told apart by length) or SRI
    /// `algo-base64`.
    ///
    /// ```
    /// use cachecore::hash::{Hash, HashAlgo};
    /// let h = Hash::digest(HashAlgo::Sha256, b"");
    /// for spelling in [
    ///     "sha256:0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73", // nix32, as in narinfos
    ///     "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", // base16
    ///     "sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=", // SRI
    /// ] {
    ///     assert_eq!(Hash::parse(spelling).unwrap(), h);
    /// }
    /// assert_eq!("sha256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=".parse::<Hash>().unwrap(), h);
    /// assert!(Hash::parse("0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73").is_err()); // no algorithm
    /// assert!(Hash::parse("sha256:0mdq").is_err()); // too short
    /// ```
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        let (algo_name, digest, sri) = match (s.split_once(':'), s.split_once('-')) {
            (Some((a, d)), _) => (a, d, false),
            (None, Some((a, d))) => (a, d, true),
            (None, None) => return Err(ParseError::MissingAlgo(s.to_owned())),
        };
        let algo = HashAlgo::from_name(algo_name).ok_or_else(|| ParseError::UnknownAlgo {
            hash: s.to_owned(),
            algo: algo_name.to_owned(),
        })?;
        if sri {
            Self::parse_base64(s, algo, digest)
        } else {
            Self::parse_digest_in(s, algo, digest)
        }
    }

    /// Parses a hash that must use `algo`.
    ///
    /// ```
    /// use cachecore::hash::{Hash, HashAlgo};
    /// let sri = "sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=";
    /// assert!(Hash::parse_expecting(sri, HashAlgo::Sha256).is_ok());
    /// assert!(Hash::parse_expecting(sri, HashAlgo::Sha512).is_err());
    /// ```
    pub fn parse_expecting(s: &str, algo: HashAlgo) -> Result<Self, ParseError> {
        let hash = Self::parse(s)?;
        if hash.algo != algo {
            return Err(ParseError::WrongAlgo {
                hash: s.to_owned(),
                expected: algo,
                found: hash.algo,
            });
        }
        Ok(hash)
    }

    /// Parses a bare digest (nix32, hex or base64) of a known algorithm.
    ///
    /// ```
    /// use cachecore::hash::{Hash, HashAlgo};
    /// let nix32 = "0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73";
    /// let h = Hash::parse_digest(HashAlgo::Sha256, nix32).unwrap();
    /// assert_eq!(h, Hash::digest(HashAlgo::Sha256, b""));
    /// assert_eq!(Hash::parse_digest(HashAlgo::Sha256, &h.to_hex()).unwrap(), h);
    /// ```
    pub fn parse_digest(algo: HashAlgo, digest: &str) -> Result<Self, ParseError> {
        Self::parse_digest_in(digest, algo, digest)
    }

    fn parse_digest_in(whole: &str, algo: HashAlgo, digest: &str) -> Result<Self, ParseError> {
        let n = algo.digest_len();
        let bad = |encoding, reason: String| ParseError::BadDigest {
            hash: whole.to_owned(),
            encoding,
            reason,
        };
        if digest.len() == 2 * n {
            let bytes = hex::decode(digest).map_err(|e| bad("hex", e.to_string()))?;
            Ok(Self::from_digest(algo, &bytes).unwrap_or_else(|| unreachable_len(algo)))
        } else if digest.len() == nixbase32::encoded_len(n) {
            let bytes =
                nixbase32::decode(digest.as_bytes()).map_err(|e| bad("nix32", e.to_string()))?;
            Self::from_digest(algo, &bytes).ok_or_else(|| bad("nix32", "wrong length".into()))
        } else if digest.len() == n.div_ceil(3) * 4 {
            Self::parse_base64(whole, algo, digest)
        } else {
            Err(ParseError::BadLength {
                hash: whole.to_owned(),
                algo,
                len: digest.len(),
            })
        }
    }

    fn parse_base64(whole: &str, algo: HashAlgo, digest: &str) -> Result<Self, ParseError> {
        let bytes = BASE64.decode(digest).map_err(|e| ParseError::BadDigest {
            hash: whole.to_owned(),
            encoding: "base64",
            reason: e.to_string(),
        })?;
        Self::from_digest(algo, &bytes).ok_or_else(|| ParseError::BadLength {
            hash: whole.to_owned(),
            algo,
            len: digest.len(),
        })
    }
}

// hex::decode of 2n characters always yields n bytes.
fn unreachable_len(algo: HashAlgo) -> Hash {
    Hash {
        algo,
        bytes: [0; 64],
    }
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_nix32_string())
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash({self})")
    }
}

impl std::str::FromStr for Hash {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// An incremental hasher for any [`HashAlgo`].
///
/// ```
/// use cachecore::hash::{Hash, HashAlgo, Hasher};
/// let mut hasher = Hasher::new(HashAlgo::Sha512);
/// hasher.update(b"hello, ");
/// hasher.update(b"world");
/// assert_eq!(hasher.finish(), Hash::digest(HashAlgo::Sha512, b"hello, world"));
/// ```
#[derive(Clone)]
pub enum Hasher {
    Md5(md5::Md5),
    Sha1(sha1::Sha1),
    Sha256(sha2::Sha256),
    Sha512(sha2::Sha512),
}

impl fmt::Debug for Hasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Hasher")
    }
}

impl Hasher {
    /// A hasher for `algo`. See [`Hasher`] for an example.
    pub fn new(algo: HashAlgo) -> Self {
        match algo {
            HashAlgo::Md5 => Hasher::Md5(md5::Md5::new()),
            HashAlgo::Sha1 => Hasher::Sha1(sha1::Sha1::new()),
            HashAlgo::Sha256 => Hasher::Sha256(sha2::Sha256::new()),
            HashAlgo::Sha512 => Hasher::Sha512(sha2::Sha512::new()),
        }
    }

    /// Hashes `data`, after whatever came before. See [`Hasher`] for an example.
    pub fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Md5(h) => h.update(data),
            Hasher::Sha1(h) => h.update(data),
            Hasher::Sha256(h) => h.update(data),
            Hasher::Sha512(h) => h.update(data),
        }
    }

    /// The hash of everything given. See [`Hasher`] for an example.
    pub fn finish(self) -> Hash {
        let (algo, digest): (HashAlgo, Vec<u8>) = match self {
            Hasher::Md5(h) => (HashAlgo::Md5, h.finalize().to_vec()),
            Hasher::Sha1(h) => (HashAlgo::Sha1, h.finalize().to_vec()),
            Hasher::Sha256(h) => (HashAlgo::Sha256, h.finalize().to_vec()),
            Hasher::Sha512(h) => (HashAlgo::Sha512, h.finalize().to_vec()),
        };
        Hash::from_digest(algo, &digest).unwrap_or_else(|| unreachable_len(algo))
    }
}

/// A writer that hashes and counts every byte written through it, then passes it on.
///
/// Use `std::io::sink()` as the inner writer to only hash.
#[derive(Debug)]
pub struct HashingWriter<W> {
    inner: W,
    hasher: Hasher,
    written: u64,
}

impl<W: Write> HashingWriter<W> {
    /// A writer hashing with `algo` on its way to `inner`.
    ///
    /// ```
    /// use std::io::Write as _;
    /// use cachecore::hash::{Hash, HashAlgo, HashingWriter};
    /// let mut w = HashingWriter::new(HashAlgo::Sha256, Vec::new());
    /// w.write_all(b"hello").unwrap();
    /// assert_eq!(w.written(), 5);
    /// let (hash, len, inner) = w.finish();
    /// assert_eq!((hash, len, inner), (Hash::digest(HashAlgo::Sha256, b"hello"), 5, b"hello".to_vec()));
    /// ```
    pub fn new(algo: HashAlgo, inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Hasher::new(algo),
            written: 0,
        }
    }

    /// Bytes written so far.
    ///
    /// See [`HashingWriter::new`] for an example.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Returns the hash, the byte count and the inner writer.
    ///
    /// See [`HashingWriter::new`] for an example.
    pub fn finish(self) -> (Hash, u64, W) {
        (self.hasher.finish(), self.written, self.inner)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A reader that hashes and counts every byte read through it.
#[derive(Debug)]
pub struct HashingReader<R> {
    inner: R,
    hasher: Hasher,
    read: u64,
}

impl<R: io::Read> HashingReader<R> {
    /// A reader hashing with `algo` what it reads from `inner`.
    ///
    /// ```
    /// use std::io::Read as _;
    /// use cachecore::hash::{Hash, HashAlgo, HashingReader};
    /// let mut r = HashingReader::new(HashAlgo::Sha256, &b"hello"[..]);
    /// let mut text = String::new();
    /// r.read_to_string(&mut text).unwrap();
    /// assert_eq!(r.bytes_read(), 5);
    /// let (hash, len, _) = r.finish();
    /// assert_eq!((hash, len), (Hash::digest(HashAlgo::Sha256, b"hello"), 5));
    /// ```
    pub fn new(algo: HashAlgo, inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Hasher::new(algo),
            read: 0,
        }
    }

    /// Bytes read so far.
    ///
    /// See [`HashingReader::new`] for an example.
    pub fn bytes_read(&self) -> u64 {
        self.read
    }

    /// Returns the hash, the byte count and the inner reader.
    ///
    /// See [`HashingReader::new`] for an example.
    pub fn finish(self) -> (Hash, u64, R) {
        (self.hasher.finish(), self.read, self.inner)
    }
}

impl<R: io::Read> io::Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.read += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY_HEX: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn three_spellings() {
        let h = Hash::digest(HashAlgo::Sha256, b"");
        assert_eq!(h.to_hex(), EMPTY_HEX);
        assert_eq!(
            h.to_sri(),
            "sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="
        );
        for s in [
            h.to_nix32_string(),
            format!("sha256:{EMPTY_HEX}"),
            h.to_sri(),
            "sha256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=".to_owned(),
        ] {
            assert_eq!(Hash::parse(&s).unwrap(), h, "{s}");
        }
    }

    #[test]
    fn other_algorithms() {
        for algo in [HashAlgo::Md5, HashAlgo::Sha1, HashAlgo::Sha512] {
            let h = Hash::digest(algo, b"abc");
            assert_eq!(Hash::parse(&h.to_nix32_string()).unwrap(), h);
            assert_eq!(Hash::parse(&h.to_sri()).unwrap(), h);
            assert_eq!(Hash::parse_digest(algo, &h.to_hex()).unwrap(), h);
        }
        assert_eq!(
            Hash::digest(HashAlgo::Sha1, b"abc").to_hex(),
            "a9993e364706816aba3e25717850c26c9cd0d89d"
        );
    }

    #[test]
    fn errors_name_the_problem() {
        assert!(matches!(
            Hash::parse("abc"),
            Err(ParseError::MissingAlgo(_))
        ));
        assert!(matches!(
            Hash::parse("sha3:abc"),
            Err(ParseError::UnknownAlgo { .. })
        ));
        assert!(matches!(
            Hash::parse("sha256:abc"),
            Err(ParseError::BadLength { .. })
        ));
        let bad = format!("sha256:{}", "e".repeat(52));
        assert!(matches!(
            Hash::parse(&bad),
            Err(ParseError::BadDigest {
                encoding: "nix32",
                ..
            })
        ));
        assert!(matches!(
            Hash::parse_expecting(
                &Hash::digest(HashAlgo::Sha1, b"").to_string(),
                HashAlgo::Sha256
            ),
            Err(ParseError::WrongAlgo { .. })
        ));
    }

    #[test]
    fn hashing_writer_counts() {
        let mut w = HashingWriter::new(HashAlgo::Sha256, Vec::new());
        w.write_all(b"hello ").unwrap();
        w.write_all(b"world").unwrap();
        let (h, n, inner) = w.finish();
        assert_eq!(n, 11);
        assert_eq!(inner, b"hello world");
        assert_eq!(h, Hash::digest(HashAlgo::Sha256, b"hello world"));
    }
}
