//! Scoped tokens: tokens a server checks without any state of its own, so that replicas share
//! nothing but a secret. `cachecore token issue` writes one for a name (a CI job, a person, a
//! proxy), with the rights it has (read, push, sign), an expiry, and optionally the stores it
//! is good for; the server checks its HMAC-SHA256 with the secret (`serve --token-secret`).
//! A leaked token is revoked by adding its id (or its name) to a list each server re-reads
//! (`serve --revoked-tokens`), without touching anyone else's.
//!
//! A token is `cachecore-token-1.<payload>.<mac>`: the payload is the [`Grant`] as JSON, both
//! parts base64url without padding, the MAC over `cachecore-token-1.<payload>`. It is printable
//! ASCII without spaces, so it goes wherever the old shared token went: a bearer token, the
//! password of a netrc line, `CACHECORE_TOKEN`, a `--token-file`.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use subtle::ConstantTimeEq as _;
use zeroize::Zeroizing;

/// What every scoped token starts with.
pub const TOKEN_PREFIX: &str = "cachecore-token-1.";

/// The fewest characters a token secret may have.
pub const MIN_SECRET_LEN: usize = 32;

/// A right a token grants. Each implies reading.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Right {
    /// Read the cache (when its reads are private).
    Read,
    /// Upload: NARs, narinfos, listings, logs, realisations (`nix copy --to`, `cachecore push`).
    Push,
    /// Add signatures to narinfos already in the cache (`cachecore sign`), nothing else.
    Sign,
}

impl Right {
    pub fn name(self) -> &'static str {
        match self {
            Right::Read => "read",
            Right::Push => "push",
            Right::Sign => "sign",
        }
    }
}

impl std::str::FromStr for Right {
    type Err = String;
    fn from_str(s: &str) -> Result<Right, String> {
        match s {
            "read" => Ok(Right::Read),
            "push" => Ok(Right::Push),
            "sign" => Ok(Right::Sign),
            other => Err(format!("{other:?} is not a right: read, push or sign")),
        }
    }
}

/// What a token grants, as it carries it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct Grant {
    /// 16 hex digits, random: what a revocation list names to revoke this one token.
    pub id: String,
    /// Who holds it (`ci-frontend`): in the server's log and its refusals, never the token.
    pub name: String,
    pub can: Vec<Right>,
    /// The stores it is good for: a server accepts it only when the store it serves, as
    /// written on its command line without the `?query`, starts with this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// Unix seconds after which it is refused.
    pub expires: u64,
}

impl Grant {
    /// A grant with a new random id, for `name`, expiring `valid` from now.
    ///
    /// ```
    /// use std::time::Duration;
    /// use cachecore::server::{Grant, Right};
    /// let g = Grant::new("ci-frontend", vec![Right::Push], None, Duration::from_secs(3600)).unwrap();
    /// assert_eq!(g.id.len(), 16);
    /// assert!(Grant::new("two words", vec![Right::Read], None, Duration::from_secs(1)).is_err());
    /// assert!(Grant::new("ci", vec![], None, Duration::from_secs(1)).is_err());
    /// ```
    pub fn new(
        name: &str,
        mut can: Vec<Right>,
        prefix: Option<String>,
        valid: Duration,
    ) -> Result<Grant, String> {
        if name.is_empty()
            || name.len() > 64
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.@+".contains(&b))
        {
            return Err(format!(
                "{name:?} is not a token name: 1 to 64 letters, digits and - _ . @ +"
            ));
        }
        if can.is_empty() {
            return Err("a token needs at least one right: --can read, push or sign".to_owned());
        }
        can.sort();
        can.dedup();
        let mut id = [0u8; 8];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut id);
        let expires = unix_now()
            .checked_add(valid.as_secs())
            .ok_or("the expiry is too far away")?;
        Ok(Grant {
            id: hex::encode(id),
            name: name.to_owned(),
            can,
            prefix,
            expires,
        })
    }

    /// When it expires, as HTTP dates are written (`Sun, 06 Nov 1994 08:49:37 GMT`).
    pub fn expiry(&self) -> String {
        http_date(&self.expires)
    }

    pub fn allows(&self, right: Right) -> bool {
        right == Right::Read || self.can.contains(&right)
    }

    /// `push, sign` — what it may do, for messages.
    pub fn rights(&self) -> String {
        let mut names = vec!["read"];
        names.extend(
            self.can
                .iter()
                .filter(|r| **r != Right::Read)
                .map(|r| r.name()),
        );
        names.join(", ")
    }
}

fn http_date(unix_secs: &u64) -> String {
    httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(*unix_secs))
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The server secret tokens are signed with. `Debug` does not show it.
pub struct TokenSecret(Zeroizing<Vec<u8>>);

impl std::fmt::Debug for TokenSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenSecret(***)")
    }
}

/// Why a token secret cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SecretError {
    #[error("a token secret must be at least {MIN_SECRET_LEN} printable characters without spaces (`cachecore token secret --out FILE` makes one)")]
    TooWeak,
}

impl TokenSecret {
    /// The text of a new secret file: 32 random bytes, base64.
    pub fn generate() -> Zeroizing<String> {
        let mut bytes = Zeroizing::new([0u8; 32]);
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut bytes[..]);
        Zeroizing::new(format!(
            "{}\n",
            base64::engine::general_purpose::STANDARD.encode(&bytes[..])
        ))
    }

    /// A secret from the text of its file (surrounding whitespace dropped).
    pub fn parse(text: &str) -> Result<TokenSecret, SecretError> {
        let t = text.trim();
        if t.len() < MIN_SECRET_LEN || !t.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(SecretError::TooWeak);
        }
        Ok(TokenSecret(Zeroizing::new(t.as_bytes().to_vec())))
    }

    /// The token for `grant`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use cachecore::server::{Grant, Right, TokenSecret};
    /// let secret = TokenSecret::parse(&TokenSecret::generate()).unwrap();
    /// let grant = Grant::new("ci", vec![Right::Push], None, Duration::from_secs(60)).unwrap();
    /// let token = secret.issue(&grant);
    /// assert_eq!(secret.check(token.as_bytes()).unwrap(), grant);
    /// // Another secret's token, or a token changed by one byte, is refused.
    /// let other = TokenSecret::parse(&TokenSecret::generate()).unwrap();
    /// assert!(other.check(token.as_bytes()).is_err());
    /// ```
    pub fn issue(&self, grant: &Grant) -> Zeroizing<String> {
        // Serialising a struct of strings and numbers cannot fail.
        let json = serde_json::to_vec(grant).unwrap_or_default();
        let signed = format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(json));
        let mac = URL_SAFE_NO_PAD.encode(hmac_sha256(&self.0, signed.as_bytes()));
        Zeroizing::new(format!("{signed}.{mac}"))
    }

    /// The grant of a token this secret issued, unexpired. Revocation and the store prefix are
    /// the server's to check ([`Grant::prefix`], [`Revocations`]).
    pub fn check(&self, token: &[u8]) -> Result<Grant, Refusal> {
        let text = std::str::from_utf8(token).map_err(|_| Refusal::Malformed)?;
        let (signed, mac) = text.rsplit_once('.').ok_or(Refusal::Malformed)?;
        let payload = signed
            .strip_prefix(TOKEN_PREFIX)
            .ok_or(Refusal::Malformed)?;
        let mac = URL_SAFE_NO_PAD
            .decode(mac)
            .map_err(|_| Refusal::Malformed)?;
        let expected = hmac_sha256(&self.0, signed.as_bytes());
        if !bool::from(expected.as_slice().ct_eq(&mac)) {
            return Err(Refusal::NotIssuedHere);
        }
        let json = URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| Refusal::Malformed)?;
        let grant: Grant = serde_json::from_slice(&json).map_err(|_| Refusal::Malformed)?;
        if unix_now() >= grant.expires {
            return Err(Refusal::Expired {
                name: grant.name,
                expires: grant.expires,
            });
        }
        Ok(grant)
    }
}

/// Why a scoped token was refused: one sentence each, naming the token by its name (never
/// showing it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    #[error("the token offered is not a token of this server (cachecore-token-1.…)")]
    Malformed,
    #[error("the token offered was not issued with this server's --token-secret")]
    NotIssuedHere,
    #[error("the token {name:?} expired at {} (Unix time {expires}); issue a new one", http_date(.expires))]
    Expired { name: String, expires: u64 },
    #[error("the token {name:?} (id {id}) is revoked on this server")]
    Revoked { name: String, id: String },
    #[error("the token {name:?} is for stores under {prefix}, and this server serves another")]
    OtherStore { name: String, prefix: String },
}

/// HMAC-SHA256 (RFC 2104).
fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    use sha2::{Digest as _, Sha256};
    let mut block = Zeroizing::new([0u8; 64]);
    if key.len() > 64 {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| -> Zeroizing<[u8; 64]> {
        let mut p = Zeroizing::new([0u8; 64]);
        for (out, k) in p.iter_mut().zip(block.iter()) {
            *out = k ^ byte;
        }
        p
    };
    let inner = Sha256::new()
        .chain_update(&pad(0x36)[..])
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(&pad(0x5c)[..])
        .chain_update(inner)
        .finalize()
        .into()
}

/// The tokens revoked on a server: a file of token ids or names, one a line (`#` comments and
/// blank lines allowed), re-read when it changes (looked at at most once a second), so that a
/// revocation reaches every replica that reads the file without a restart.
#[derive(Debug)]
pub struct Revocations {
    path: PathBuf,
    state: Mutex<RevocationState>,
}

#[derive(Debug)]
struct RevocationState {
    looked: Instant,
    stamp: Option<(SystemTime, u64)>,
    revoked: HashSet<String>,
}

/// How often the revocation file is looked at.
const REVOCATIONS_CHECKED: Duration = Duration::from_secs(1);

impl Revocations {
    /// Reads the list at `path` (which must exist: an empty file revokes nothing).
    pub fn open(path: &Path) -> std::io::Result<Revocations> {
        let (stamp, revoked) = read_revocations(path)?;
        Ok(Revocations {
            path: path.to_owned(),
            state: Mutex::new(RevocationState {
                looked: Instant::now(),
                stamp: Some(stamp),
                revoked,
            }),
        })
    }

    /// Whether `grant` is revoked (by its id or its name). A file that cannot be read any more
    /// leaves the last list in force, and is logged.
    pub fn is_revoked(&self, grant: &Grant) -> bool {
        let Ok(mut s) = self.state.lock() else {
            return true;
        };
        if s.looked.elapsed() >= REVOCATIONS_CHECKED {
            s.looked = Instant::now();
            let stamp = std::fs::metadata(&self.path)
                .ok()
                .and_then(|m| Some((m.modified().ok()?, m.len())));
            if stamp.is_none() || stamp != s.stamp {
                match read_revocations(&self.path) {
                    Ok((stamp, revoked)) => {
                        s.stamp = Some(stamp);
                        s.revoked = revoked;
                    }
                    Err(e) => {
                        tracing::error!(file = %self.path.display(), error = %e, "cannot read the revoked tokens; the last list read stays in force");
                    }
                }
            }
        }
        s.revoked.contains(&grant.id) || s.revoked.contains(&grant.name)
    }
}

fn read_revocations(path: &Path) -> std::io::Result<((SystemTime, u64), HashSet<String>)> {
    let text = std::fs::read_to_string(path)?;
    let meta = std::fs::metadata(path)?;
    let revoked = text
        .lines()
        .map(|l| l.split('#').next().unwrap_or_default().trim())
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    Ok(((meta.modified()?, meta.len()), revoked))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn hmac_matches_rfc_4231() {
        // Test cases 2 and 6 (a key longer than a block).
        assert_eq!(
            hex::encode(hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_eq!(
            hex::encode(hmac_sha256(
                &[0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First"
            )),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[test]
    fn tokens_are_checked_whole() {
        let secret = TokenSecret::parse(&"s".repeat(32)).unwrap();
        assert_eq!(
            TokenSecret::parse(&"s".repeat(31)).unwrap_err(),
            SecretError::TooWeak
        );
        let grant = Grant::new(
            "ci-frontend",
            vec![Right::Push, Right::Push],
            Some("s3://nix/team-a/".into()),
            Duration::from_secs(60),
        )
        .unwrap();
        assert_eq!(grant.can, [Right::Push]);
        assert_eq!(grant.rights(), "read, push");
        let token = secret.issue(&grant);
        assert!(token.starts_with(TOKEN_PREFIX));
        assert!(token.bytes().all(|b| b.is_ascii_graphic()));
        assert_eq!(secret.check(token.as_bytes()).unwrap(), grant);
        // Any byte changed: refused.
        for i in 0..token.len() {
            let mut t = token.as_bytes().to_vec();
            t[i] = if t[i] == b'A' { b'B' } else { b'A' };
            assert!(secret.check(&t).is_err(), "byte {i}");
        }
        // A payload claiming more rights, with the old MAC: refused.
        let mut more = grant.clone();
        more.can.push(Right::Sign);
        let forged = secret.issue(&more);
        let (forged_payload, _) = forged.rsplit_once('.').unwrap();
        let (_, mac) = token.rsplit_once('.').unwrap();
        assert_eq!(
            secret.check(format!("{forged_payload}.{mac}").as_bytes()),
            Err(Refusal::NotIssuedHere)
        );
        let mut old = grant.clone();
        old.expires = 1;
        assert!(matches!(
            secret.check(secret.issue(&old).as_bytes()),
            Err(Refusal::Expired { .. })
        ));
        assert_eq!(secret.check(b"plain-token"), Err(Refusal::Malformed));
    }

    #[test]
    fn revocations_are_read_again_when_the_file_changes() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("revoked");
        std::fs::write(&file, "# none yet\n\n").unwrap();
        let list = Revocations::open(&file).unwrap();
        let a = Grant::new("a", vec![Right::Read], None, Duration::from_secs(60)).unwrap();
        let b = Grant::new("b", vec![Right::Read], None, Duration::from_secs(60)).unwrap();
        assert!(!list.is_revoked(&a));
        std::fs::write(&file, format!("{}  # leaked\nb\n", a.id)).unwrap();
        std::thread::sleep(REVOCATIONS_CHECKED);
        assert!(list.is_revoked(&a) && list.is_revoked(&b));
        std::fs::remove_file(&file).unwrap();
        std::thread::sleep(REVOCATIONS_CHECKED);
        assert!(list.is_revoked(&a), "the last list stays in force");
    }
}
