//! ed25519 keys and signatures in Nix's formats.
//!
//! - secret key: `name:base64(64 bytes)` (seed followed by public key, as libsodium stores it),
//! - public key: `name:base64(32 bytes)`,
//! - signature:  `name:base64(64 bytes)`, over a narinfo [fingerprint](crate::narinfo::NarInfo::fingerprint).
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

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use ed25519_dalek::{Signer as _, SigningKey, Verifier as _, VerifyingKey};
use zeroize::Zeroizing;

/// Why a key or signature could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    #[error("{what} has no `name:` prefix (expected `name:base64`)")]
    MissingName { what: &'static str },
    #[error("{what} {name:?}: the part after `name:` is not valid base64")]
    BadBase64 { what: &'static str, name: String },
    #[error("{what} {name:?}: expected {expected} bytes after base64 decoding, found {found}")]
    BadLength {
        what: &'static str,
        name: String,
        expected: usize,
        found: usize,
    },
    #[error("secret key {name:?}: its public half does not match its seed")]
    Inconsistent { name: String },
    #[error("public key {name:?} is not a valid ed25519 point")]
    BadPoint { name: String },
    #[error("could not get randomness for a new key: {0}")]
    Random(String),
}

/// Splits `name:base64` and decodes the payload to exactly `N` bytes, zeroizing the buffer.
fn split_key<const N: usize>(
    what: &'static str,
    s: &str,
) -> Result<(String, Zeroizing<[u8; N]>), KeyError> {
    let s = s.trim();
    let (name, data) = s
        .split_once(':')
        .filter(|(n, _)| !n.is_empty())
        .ok_or(KeyError::MissingName { what })?;
    let decoded = Zeroizing::new(BASE64.decode(data).map_err(|_| KeyError::BadBase64 {
        what,
        name: name.to_owned(),
    })?);
    let mut out = Zeroizing::new([0u8; N]);
    if decoded.len() != N {
        return Err(KeyError::BadLength {
            what,
            name: name.to_owned(),
            expected: N,
            found: decoded.len(),
        });
    }
    out.copy_from_slice(&decoded);
    Ok((name.to_owned(), out))
}

/// A signature as it appears on a narinfo `Sig:` line.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Signature {
    key_name: String,
    bytes: [u8; 64],
}

impl Signature {
    pub fn new(key_name: impl Into<String>, bytes: [u8; 64]) -> Self {
        Signature {
            key_name: key_name.into(),
            bytes,
        }
    }

    /// Parses `name:base64(64 bytes)`.
    pub fn parse(s: &str) -> Result<Self, KeyError> {
        let (key_name, bytes) = split_key::<64>("signature", s)?;
        Ok(Signature {
            key_name,
            bytes: *bytes,
        })
    }

    pub fn key_name(&self) -> &str {
        &self.key_name
    }

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
    pub fn generate(name: impl Into<String>) -> Result<Self, KeyError> {
        let name = name.into();
        if name.is_empty() || name.contains(':') {
            return Err(KeyError::MissingName { what: "secret key" });
        }
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
    pub fn parse(s: &str) -> Result<Self, KeyError> {
        let (name, bytes) = split_key::<64>("secret key", s)?;
        let key = SigningKey::from_keypair_bytes(&bytes)
            .map_err(|_| KeyError::Inconsistent { name: name.clone() })?;
        Ok(SecretKey { name, key })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The matching public key.
    pub fn public_key(&self) -> PublicKey {
        PublicKey {
            name: self.name.clone(),
            key: self.key.verifying_key(),
        }
    }

    /// The key in Nix's file format, `name:base64(64 bytes)`; the buffer is zeroized on drop.
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
    /// Parses `name:base64(32 bytes)`.
    pub fn parse(s: &str) -> Result<Self, KeyError> {
        let (name, bytes) = split_key::<32>("public key", s)?;
        let key = VerifyingKey::from_bytes(&bytes)
            .map_err(|_| KeyError::BadPoint { name: name.clone() })?;
        Ok(PublicKey { name, key })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// True when `sig` is this key's valid signature of `message` (the key names must match too).
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
            Err(KeyError::BadLength { found: 32, .. })
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
}
