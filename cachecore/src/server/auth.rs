//! Tokens: a request carries one as `Authorization: Bearer TOKEN`, or as the password of HTTP
//! basic auth (any user name), which is what Nix sends from a `netrc-file`. Compared in constant
//! time, as SHA-256 digests: the time a comparison takes says nothing about the token, not even
//! its length (two byte strings of different lengths compare in no time).

use std::fmt;

use axum::http::header::AUTHORIZATION;
use axum::http::HeaderMap;
use base64::Engine as _;
use subtle::ConstantTimeEq as _;
use zeroize::Zeroizing;

/// A secret token, kept as its SHA-256 digest. `Debug` does not show it.
#[derive(Clone)]
pub struct Token(Zeroizing<[u8; 32]>);

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(***)")
    }
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    #[error("a token is empty")]
    Empty,
    #[error("a token holds whitespace or control characters")]
    BadCharacters,
}

impl Token {
    /// A token from the text of a token file: surrounding whitespace (the final newline) is
    /// dropped; what remains must be non-empty printable ASCII without spaces.
    ///
    /// ```
    /// use cachecore::server::{Token, TokenError};
    /// // As read from a token file: the final newline is dropped.
    /// assert!(Token::parse("s3cret\n").is_ok());
    /// assert_eq!(Token::parse("  \n").unwrap_err(), TokenError::Empty);
    /// assert_eq!(Token::parse("two words").unwrap_err(), TokenError::BadCharacters);
    /// // `Debug` never shows it.
    /// assert_eq!(format!("{:?}", Token::parse("s3cret").unwrap()), "Token(***)");
    /// ```
    pub fn parse(text: &str) -> Result<Token, TokenError> {
        let t = text.trim();
        if t.is_empty() {
            return Err(TokenError::Empty);
        }
        if !t.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(TokenError::BadCharacters);
        }
        Ok(Token(digest(t.as_bytes())))
    }

    /// Whether `offered` is the token: their digests compared in constant time (digests of one
    /// length, so no early exit on a length mismatch).
    fn matches(&self, offered: &[u8]) -> bool {
        bool::from(self.0.as_slice().ct_eq(digest(offered).as_slice()))
    }
}

fn digest(bytes: &[u8]) -> Zeroizing<[u8; 32]> {
    use sha2::Digest as _;
    Zeroizing::new(sha2::Sha256::digest(bytes).into())
}

/// What a request's credentials amount to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// No credentials were sent (answer 401 with a challenge).
    Missing,
    /// Credentials were sent and match none of the tokens (answer 403).
    Wrong,
    /// They match one of the tokens.
    Granted,
}

/// The token a request offers, from a bearer or basic `Authorization` header.
pub(crate) fn offered(headers: &HeaderMap) -> Option<Zeroizing<Vec<u8>>> {
    let value = headers.get(AUTHORIZATION)?.as_bytes();
    let (scheme, rest) = value.split_at(value.iter().position(|&b| b == b' ')?);
    let rest = rest.trim_ascii();
    if scheme.eq_ignore_ascii_case(b"bearer") {
        return Some(Zeroizing::new(rest.to_vec()));
    }
    if scheme.eq_ignore_ascii_case(b"basic") {
        let decoded = Zeroizing::new(
            base64::engine::general_purpose::STANDARD
                .decode(rest)
                .ok()?,
        );
        let colon = decoded.iter().position(|&b| b == b':')?;
        return Some(Zeroizing::new(decoded[colon + 1..].to_vec()));
    }
    // Another scheme: credentials of a kind we do not take.
    Some(Zeroizing::new(Vec::new()))
}

/// Checks the request's credentials against `tokens` (every token is compared, so the time
/// taken does not say which one matched).
pub(crate) fn check(headers: &HeaderMap, tokens: &[&Token]) -> Access {
    let Some(offered) = offered(headers) else {
        return if headers.contains_key(AUTHORIZATION) {
            Access::Wrong
        } else {
            Access::Missing
        };
    };
    let mut ok = false;
    for t in tokens {
        ok |= t.matches(&offered);
    }
    if ok {
        Access::Granted
    } else {
        Access::Wrong
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use axum::http::HeaderValue;

    fn with(auth: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, HeaderValue::from_str(auth).unwrap());
        h
    }

    #[test]
    fn bearer_and_basic() {
        let t = Token::parse("s3cret-token\n").unwrap();
        let basic = |user_pass: &str| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(user_pass)
            )
        };
        assert_eq!(check(&with("Bearer s3cret-token"), &[&t]), Access::Granted);
        assert_eq!(
            check(&with("bearer  s3cret-token "), &[&t]),
            Access::Granted
        );
        assert_eq!(
            check(&with(&basic("nix:s3cret-token")), &[&t]),
            Access::Granted
        );
        assert_eq!(
            check(&with(&basic(":s3cret-token")), &[&t]),
            Access::Granted
        );
        assert_eq!(check(&with("Bearer s3cret-toke"), &[&t]), Access::Wrong);
        assert_eq!(check(&with("Bearer s3cret-token2"), &[&t]), Access::Wrong);
        assert_eq!(check(&with(&basic("s3cret-token:x")), &[&t]), Access::Wrong);
        assert_eq!(check(&with("Basic !!!"), &[&t]), Access::Wrong);
        assert_eq!(check(&with("Digest x"), &[&t]), Access::Wrong);
        assert_eq!(check(&with("Bearer"), &[&t]), Access::Wrong);
        assert_eq!(check(&HeaderMap::new(), &[&t]), Access::Missing);
        let other = Token::parse("other").unwrap();
        assert_eq!(check(&with("Bearer other"), &[&t, &other]), Access::Granted);
        assert_eq!(Token::parse(" \n").unwrap_err(), TokenError::Empty);
        assert!(Token::parse("a b").is_err());
        assert_eq!(format!("{t:?}"), "Token(***)");
    }

    /// The median time of `f` over interleaved runs.
    fn median_nanos(runs: usize, mut f: impl FnMut()) -> u128 {
        let mut times: Vec<u128> = (0..runs)
            .map(|_| {
                let start = std::time::Instant::now();
                f();
                start.elapsed().as_nanos()
            })
            .collect();
        times.sort_unstable();
        times[runs / 2]
    }

    #[test]
    fn comparing_a_token_takes_as_long_whatever_the_length_offered() {
        // A long token makes a comparison of its own length measurable; an offer one byte
        // longer must take as long (once, an early exit on the length answered at once and
        // told an attacker the token's length).
        let secret = "k".repeat(256 << 10);
        let t = Token::parse(&secret).unwrap();
        let same_length = format!("{}x", &secret[1..]);
        let longer = format!("{secret}x");
        assert!(!t.matches(same_length.as_bytes()) && !t.matches(longer.as_bytes()));
        assert!(t.matches(secret.as_bytes()));
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for _ in 0..5 {
            a.push(median_nanos(21, || {
                std::hint::black_box(t.matches(std::hint::black_box(same_length.as_bytes())));
            }));
            b.push(median_nanos(21, || {
                std::hint::black_box(t.matches(std::hint::black_box(longer.as_bytes())));
            }));
        }
        a.sort_unstable();
        b.sort_unstable();
        let (a, b) = (a[2] as f64, b[2] as f64);
        assert!(
            a < 3.0 * b && b < 3.0 * a,
            "an offer of the token's length took {a} ns, one a byte longer {b} ns"
        );
    }
}
