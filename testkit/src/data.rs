//! Deterministic bytes (identical on every run, so fixtures are too) and comparing bytes with a
//! hex dump of where they differ.

/// Pseudo-random bytes (xorshift), every byte value, incompressible.
pub fn pseudo_random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// A deterministic stream of u64s (xorshift; `seed` 0 is allowed).
#[derive(Debug, Clone)]
pub struct Xorshift(u64);

impl Xorshift {
    pub fn new(seed: u64) -> Self {
        Xorshift(seed ^ 0x9E37_79B9_7F4A_7C15 | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A value in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// Text-like bytes that zstd compresses about 3:1 (words of Python with some entropy), like
/// the sources and libraries of a real store path.
pub fn text_bytes(rng: &mut Xorshift, len: usize) -> Vec<u8> {
    const WORDS: [&str; 16] = [
        "import", "def", "return", "self", "lambda", "class", "yield", "None", "async", "for",
        "while", "with", "except", "raise", "from", "pass",
    ];
    let mut out = Vec::with_capacity(len + 16);
    while out.len() < len {
        let r = rng.next_u64();
        out.extend_from_slice(WORDS[(r & 15) as usize].as_bytes());
        // Some entropy, so it does not compress to nothing.
        out.extend_from_slice(format!("_{:x}", (r >> 8) & 0xfff).as_bytes());
        out.push(if r & 0x300 == 0 { b'\n' } else { b' ' });
    }
    out.truncate(len);
    out
}

/// SplitMix64's output function: a good 64-bit mix of `x`.
pub fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Bytes `offset..offset + len` of an endless generated stream whose byte `i` is a function of
/// `i` alone, so any range of a large object can be checked without keeping the object.
pub fn gen_bytes(offset: u64, len: usize) -> Vec<u8> {
    (offset..offset + len as u64)
        .map(|i| (splitmix(i / 8) >> ((i % 8) * 8)) as u8)
        .collect()
}

/// Half incompressible, half text in alternating 4 KiB runs, so zstd frames of it differ in
/// ratio.
pub fn mixed_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 64);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        let v = x.wrapping_mul(0x2545_F491_4F6C_DD1D);
        if (out.len() / 4096) % 2 == 0 {
            out.extend_from_slice(&v.to_le_bytes());
        } else {
            out.extend_from_slice(format!("line {} of {seed}\n", v % 1000).as_bytes());
        }
    }
    out.truncate(len);
    out
}

/// Asserts two byte strings are equal; on mismatch, reports the lengths, the first differing
/// offset and a hex dump of both sides around it.
#[track_caller]
pub fn assert_same_bytes(what: &str, expected: &[u8], actual: &[u8]) {
    if expected == actual {
        return;
    }
    let first = expected
        .iter()
        .zip(actual)
        .position(|(a, b)| a != b)
        .unwrap_or(expected.len().min(actual.len()));
    let from = first.saturating_sub(32) & !7;
    let dump = |bytes: &[u8]| -> String {
        let to = (first + 48).min(bytes.len());
        let from = from.min(to);
        bytes[from..to]
            .chunks(8)
            .enumerate()
            .map(|(i, chunk)| {
                let hex: Vec<String> = chunk.iter().map(|b| format!("{b:02x}")).collect();
                let text: String = chunk
                    .iter()
                    .map(|&b| if b.is_ascii_graphic() { b as char } else { '.' })
                    .collect();
                format!("  {:>10}: {:<24} {}", from + i * 8, hex.join(" "), text)
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    panic!(
        "{what}: bytes differ (expected {} bytes, got {} bytes); first difference at offset \
         {first}\nexpected (Nix):\n{}\nactual (cachecore):\n{}",
        expected.len(),
        actual.len(),
        dump(expected),
        dump(actual)
    );
}
