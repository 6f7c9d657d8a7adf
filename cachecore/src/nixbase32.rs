//! Nix's base-32 encoding ("nix32"), used for store path hashes and hash digests.
//!
//! The alphabet omits `e o u t`, and the digits are written most significant first, walking the
//! input bytes from the end, so it is *not* RFC 4648 base32.
//!
//! ```
//! let digest = [0xffu8; 20];
//! let text = cachecore::nixbase32::encode(&digest);
//! assert_eq!(text.len(), 32);
//! assert_eq!(cachecore::nixbase32::decode(text.as_bytes()).unwrap(), digest);
//! ```

/// The 32 characters of Nix's base-32 alphabet.
pub const ALPHABET: &[u8; 32] = b"0123456789abcdfghijklmnpqrsvwxyz";

const INVALID: u8 = 0xff;

const fn reverse_alphabet() -> [u8; 256] {
    let mut table = [INVALID; 256];
    let mut i = 0;
    while i < ALPHABET.len() {
        table[ALPHABET[i] as usize] = i as u8;
        i += 1;
    }
    table
}

static DECODE: [u8; 256] = reverse_alphabet();

/// Why a nix32 string could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    #[error("character {character:?} at position {position} is not in Nix's base-32 alphabet")]
    InvalidCharacter { position: usize, character: char },
    #[error("length {0} is not the nix32 length of any whole number of bytes")]
    InvalidLength(usize),
    #[error("the first character encodes bits past the end of the digest")]
    NonZeroPadding,
}

/// Length of the nix32 encoding of `len` bytes.
///
/// ```
/// use cachecore::nixbase32::encoded_len;
/// assert_eq!(encoded_len(20), 32); // a store path's hash part
/// assert_eq!(encoded_len(32), 52); // a sha256 digest
/// assert_eq!(encoded_len(1), 2);
/// ```
pub const fn encoded_len(len: usize) -> usize {
    (len * 8).div_ceil(5)
}

/// Number of bytes a nix32 string of `len` characters decodes to (rounded down).
///
/// ```
/// use cachecore::nixbase32::decoded_len;
/// assert_eq!(decoded_len(32), 20);
/// assert_eq!(decoded_len(52), 32);
/// assert_eq!(decoded_len(3), 1); // rounded down
/// ```
pub const fn decoded_len(len: usize) -> usize {
    len * 5 / 8
}

/// Encodes `input` as nix32.
///
/// ```
/// use cachecore::{hash::{Hash, HashAlgo}, nixbase32::encode};
/// assert_eq!(encode(&[]), "");
/// assert_eq!(encode(&[0x1f]), "0z");
/// // sha256("") as Nix prints it.
/// let digest = Hash::digest(HashAlgo::Sha256, b"");
/// assert_eq!(encode(digest.digest_bytes()), "0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73");
/// ```
pub fn encode(input: &[u8]) -> String {
    let len = encoded_len(input.len());
    let mut out = String::with_capacity(len);
    for n in (0..len).rev() {
        let b = n * 5;
        let (i, j) = (b / 8, b % 8);
        let low = input.get(i).map_or(0, |&v| v >> j);
        let high = if j > 3 {
            input
                .get(i + 1)
                .map_or(0, |&v| ((v as u16) << (8 - j)) as u8)
        } else {
            0
        };
        out.push(ALPHABET[((low | high) & 0x1f) as usize] as char);
    }
    out
}

/// Decodes a nix32 string.
///
/// ```
/// use cachecore::nixbase32::{decode, DecodeError};
/// assert_eq!(decode(b"0z").unwrap(), [0x1f]);
/// // `e`, `o`, `u` and `t` are not in the alphabet.
/// assert_eq!(decode(b"0e"), Err(DecodeError::InvalidCharacter { position: 1, character: 'e' }));
/// assert_eq!(decode(b"abc"), Err(DecodeError::InvalidLength(3)));
/// ```
pub fn decode(input: &[u8]) -> Result<Vec<u8>, DecodeError> {
    let out_len = decoded_len(input.len());
    if encoded_len(out_len) != input.len() {
        return Err(DecodeError::InvalidLength(input.len()));
    }
    let mut out = vec![0u8; out_len];
    decode_into(input, &mut out)?;
    Ok(out)
}

/// Decodes a nix32 string into a fixed-size array.
///
/// ```
/// use cachecore::nixbase32::{decode_fixed, encode, DecodeError};
/// let digest: [u8; 20] = decode_fixed(encode(&[7u8; 20]).as_bytes()).unwrap();
/// assert_eq!(digest, [7u8; 20]);
/// // Exactly the length of N bytes.
/// assert_eq!(decode_fixed::<20>(b"0z"), Err(DecodeError::InvalidLength(2)));
/// // "zz" sets bits past the end of one byte.
/// assert_eq!(decode_fixed::<1>(b"zz"), Err(DecodeError::NonZeroPadding));
/// ```
pub fn decode_fixed<const N: usize>(input: &[u8]) -> Result<[u8; N], DecodeError> {
    if input.len() != encoded_len(N) {
        return Err(DecodeError::InvalidLength(input.len()));
    }
    let mut out = [0u8; N];
    decode_into(input, &mut out)?;
    Ok(out)
}

fn decode_into(input: &[u8], out: &mut [u8]) -> Result<(), DecodeError> {
    for (n, &c) in input.iter().rev().enumerate() {
        let digit = DECODE[c as usize];
        if digit == INVALID {
            return Err(DecodeError::InvalidCharacter {
                position: input.len() - 1 - n,
                character: c as char,
            });
        }
        let b = n * 5;
        let (i, j) = (b / 8, b % 8);
        // `i < out.len()` always holds: the last digit starts at bit (len-1)*5 < out.len()*8.
        out[i] |= digit << j;
        let carry = ((digit as u16) >> (8 - j)) as u8;
        if carry != 0 {
            match out.get_mut(i + 1) {
                Some(next) => *next |= carry,
                None => return Err(DecodeError::NonZeroPadding),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values() {
        // sha256("") as Nix prints it: `nix-hash --type sha256 --to-base32 e3b0...`.
        let digest =
            hex::decode("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
                .unwrap();
        assert_eq!(
            encode(&digest),
            "0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73"
        );
        assert_eq!(decode(encode(&digest).as_bytes()).unwrap(), digest);
        assert_eq!(encode(&[]), "");
        assert_eq!(encode(&[0x1f]), "0z");
    }

    #[test]
    fn round_trip_all_lengths() {
        for len in 0..70 {
            let data: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            assert_eq!(decode(encode(&data).as_bytes()).unwrap(), data, "len {len}");
        }
    }

    #[test]
    fn rejects_bad_input() {
        assert!(matches!(
            decode(b"0e"),
            Err(DecodeError::InvalidCharacter {
                position: 1,
                character: 'e'
            })
        ));
        assert_eq!(decode(b"000"), Err(DecodeError::InvalidLength(3)));
        // 2 chars = 10 bits for 1 byte: a top digit >= 8 sets bit 8 and beyond.
        assert_eq!(decode(b"z0"), Err(DecodeError::NonZeroPadding));
    }
}
