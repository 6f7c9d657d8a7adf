//! Which request paths name objects of the cache layout. Everything else — `..`, absolute or
//! empty segments, unknown prefixes, staging objects, oversize keys — is refused before the store
//! is asked, so a request can only ever reach an object a Nix binary cache has.

use crate::hash::{Hash, HashAlgo};
use crate::realisation::DrvOutput;
use crate::store::layout;
use crate::store_path::{StorePathRef, HASH_PART_LEN};

/// Longest key served (a log key is `log/` + a 211-character name + hash and `.drv`).
pub(crate) const MAX_KEY_LEN: usize = 512;

/// NAR file extensions Nix writes (`.nar` + the compression's extension).
const NAR_EXTENSIONS: &[&str] = &[
    ".nar", ".nar.xz", ".nar.zst", ".nar.bz2", ".nar.br", ".nar.lz", ".nar.lz4", ".nar.gz",
];

/// The kind of a cache object; also the `route` label of the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    CacheInfo,
    NarInfo,
    Nar,
    Listing,
    Log,
    Realisation,
}

impl Kind {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Kind::CacheInfo => "cache_info",
            Kind::NarInfo => "narinfo",
            Kind::Nar => "nar",
            Kind::Listing => "listing",
            Kind::Log => "log",
            Kind::Realisation => "realisation",
        }
    }
}

/// A request path that names an object of the layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CacheKey {
    pub kind: Kind,
    /// The object key (no leading `/`, percent-decoded).
    pub key: String,
}

impl CacheKey {
    /// The hash part of a `<hash>.narinfo` or `<hash>.ls` key.
    pub(crate) fn hash_part(&self) -> Option<&str> {
        match self.kind {
            Kind::NarInfo => self.key.strip_suffix(".narinfo"),
            Kind::Listing => self.key.strip_suffix(".ls"),
            _ => None,
        }
    }

    /// The file hash a `nar/<nix32>.nar<ext>` key is named after (`None` for a NAR streamed by
    /// `cachecore push`, `nar/<NarHash>-<unique>.nar<ext>`: its name is not its file's hash).
    pub(crate) fn nar_name_hash(&self) -> Option<Hash> {
        let name = self.key.strip_prefix("nar/")?;
        let (hash, _) = name.split_once('.')?;
        Hash::parse_digest(HashAlgo::Sha256, hash).ok()
    }

    /// Whether this is a NAR streamed by `cachecore push`: `nar/<nix32 NarHash>-<16 hex>.nar<ext>`,
    /// whose bytes are checked against the narinfo that names it, when that narinfo arrives.
    pub(crate) fn is_streamed_nar(&self) -> bool {
        let Some((stem, _)) = self
            .key
            .strip_prefix("nar/")
            .and_then(|n| n.split_once('.'))
        else {
            return false;
        };
        stem.split_once('-').is_some_and(|(hash, unique)| {
            Hash::parse_digest(HashAlgo::Sha256, hash).is_ok()
                && unique.len() == 16
                && unique.bytes().all(|b| b.is_ascii_hexdigit())
        })
    }

    /// The NAR key's extension after `.nar` (`""`, `".xz"`, `".zst"`, …).
    pub(crate) fn nar_extension(&self) -> Option<&str> {
        let name = self.key.strip_prefix("nar/")?;
        let (_, ext) = name.split_once(".nar")?;
        Some(ext)
    }

    /// The output a `realisations/<id>.doi` key names.
    pub(crate) fn drv_output(&self) -> Option<DrvOutput> {
        let id = self
            .key
            .strip_prefix("realisations/")?
            .strip_suffix(".doi")?;
        DrvOutput::parse(id).ok()
    }
}

fn is_hash_part(s: &str) -> bool {
    s.len() == HASH_PART_LEN && s.bytes().all(|b| crate::nixbase32::ALPHABET.contains(&b))
}

/// Classifies a request path (`/…`, still percent-encoded) as an object key, or says in a few
/// words why it is none.
pub(crate) fn classify(path: &str) -> Result<CacheKey, &'static str> {
    if path.len() > 3 * MAX_KEY_LEN {
        return Err("the path is too long");
    }
    let decoded = percent_decode(path.strip_prefix('/').unwrap_or(path))
        .ok_or("the path has a bad percent-escape or is not UTF-8")?;
    let key = decoded.as_str();
    if key.len() > MAX_KEY_LEN {
        return Err("the path is too long");
    }
    let kind = if key == layout::CACHE_INFO {
        Kind::CacheInfo
    } else if layout::narinfo_hash(key).is_some() {
        Kind::NarInfo
    } else if key.strip_suffix(".ls").is_some_and(is_hash_part) {
        Kind::Listing
    } else if let Some(name) = key.strip_prefix("nar/") {
        let (hash, rest) = name.split_at_checked(52).ok_or("not a NAR name")?;
        // `-<hex>`: a large NAR streamed by `cachecore push`, named after its NarHash and its
        // upload (`nar/<NarHash>-<unique>.nar.zst`).
        let ext = match rest.strip_prefix('-') {
            Some(tail) => {
                let (unique, ext) = tail.split_at(tail.find('.').unwrap_or(tail.len()));
                let hex = (1..=32).contains(&unique.len())
                    && unique
                        .bytes()
                        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
                if !hex {
                    return Err("a NAR is named nar/<52 nix32 characters>[-<hex>].nar[.xz|.zst|…]");
                }
                ext
            }
            None => rest,
        };
        let valid = hash
            .bytes()
            .all(|b| crate::nixbase32::ALPHABET.contains(&b))
            && NAR_EXTENSIONS.contains(&ext);
        if !valid {
            return Err("a NAR is named nar/<52 nix32 characters>[-<hex>].nar[.xz|.zst|…]");
        }
        Kind::Nar
    } else if let Some(name) = key.strip_prefix("log/") {
        // `log/<hash>-<name>.drv`, as Nix writes build logs.
        if !name.ends_with(".drv") || StorePathRef::from_base_name(name).is_err() {
            return Err("a log is named log/<hash>-<name>.drv");
        }
        Kind::Log
    } else if let Some(id) = key
        .strip_prefix("realisations/")
        .and_then(|k| k.strip_suffix(".doi"))
    {
        let valid = DrvOutput::parse(id).is_ok_and(|o| {
            o.output
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+-._?=".contains(&b))
        });
        if !valid {
            return Err("a realisation is named realisations/<algo>:<hex>!<output>.doi");
        }
        Kind::Realisation
    } else {
        return Err("no object of a binary cache has this name");
    };
    Ok(CacheKey { kind, key: decoded })
}

/// `%XX` escapes decoded; `None` for a bad escape or bytes that are not UTF-8.
pub(super) fn percent_decode(s: &str) -> Option<String> {
    if !s.contains('%') {
        return Some(s.to_owned());
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// `path` with every byte but unreserved characters and `/` as a `%XX` escape (for `Location`
/// headers and links).
pub(super) fn percent_encode_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for b in path.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'/' | b'+') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn paths_are_encoded_and_decoded_back() {
        let p = "/serve/x-a b/ü?#%";
        let e = percent_encode_path(p);
        assert_eq!(e, "/serve/x-a%20b/%C3%BC%3F%23%25");
        assert_eq!(percent_decode(&e).as_deref(), Some(p));
    }

    const H: &str = "7h7qgvs4kgzsn8a6rb273saxyqh4jxlz";
    const NAR: &str = "1w1fff338fvdw53sqgamddn1b2xgds473pv6y13gizdbqjv4i5p3";

    #[test]
    fn layout_keys_are_classified() {
        let k = |p: &str| classify(p).map(|c| c.kind);
        assert_eq!(k("/nix-cache-info"), Ok(Kind::CacheInfo));
        assert_eq!(k(&format!("/{H}.narinfo")), Ok(Kind::NarInfo));
        assert_eq!(k(&format!("/{H}.ls")), Ok(Kind::Listing));
        for ext in NAR_EXTENSIONS {
            assert_eq!(k(&format!("/nar/{NAR}{ext}")), Ok(Kind::Nar), "{ext}");
        }
        assert_eq!(k(&format!("/log/{H}-hello.drv")), Ok(Kind::Log));
        let id = "sha256:6b9206b68e3d12a3cc840a6e022b5394a2297822e0c61f99383ed9e99661c2cf!out";
        assert_eq!(k(&format!("/realisations/{id}.doi")), Ok(Kind::Realisation));
        // Percent-encoded `!` and `:` as some clients send them.
        let enc = id.replace('!', "%21").replace(':', "%3A");
        let c = classify(&format!("/realisations/{enc}.doi")).unwrap();
        assert_eq!(c.key, format!("realisations/{id}.doi"));
        assert_eq!(c.drv_output().unwrap().output, "out");
        let nar = classify(&format!("/nar/{NAR}.nar.xz")).unwrap();
        assert_eq!(nar.nar_name_hash().unwrap().to_nix32(), NAR);
        assert_eq!(nar.nar_extension(), Some(".xz"));
        // Large NARs streamed by push: named after the NarHash and the upload.
        let streamed = classify(&format!("/nar/{NAR}-6f00800131e612ea.nar.zst")).unwrap();
        assert_eq!(streamed.kind, Kind::Nar);
        assert_eq!(streamed.nar_name_hash(), None);
        assert_eq!(streamed.nar_extension(), Some(".zst"));
        for bad in ["-", "-XYZ", "-0123456789abcdef0123456789abcdef0", "-ab/x"] {
            assert!(
                classify(&format!("/nar/{NAR}{bad}.nar.zst")).is_err(),
                "{bad}"
            );
        }
        assert_eq!(
            classify(&format!("/{H}.narinfo")).unwrap().hash_part(),
            Some(H)
        );
    }

    #[test]
    fn everything_else_is_refused() {
        for p in [
            "/",
            "/..",
            "/../etc/passwd",
            "/nar/../nix-cache-info",
            "/nar/%2e%2e/x",
            "//etc/passwd",
            "/etc/passwd",
            "/nar/.tmp-123",
            "/nar/x.nar",
            &format!("/nar/{NAR}.nar.exe"),
            &format!("/nar/{NAR}.nar/x"),
            &format!("/nar/{}.nar", &NAR[..51]),
            "/short.narinfo",
            &format!("/{}.narinfo", H.replace('7', "e")),
            &format!("/x/{H}.narinfo"),
            &format!("/{H}.narinfo/"),
            &format!("/log/{H}-hello"),
            "/log/../../x.drv",
            &format!("/log/{H}-a/b.drv"),
            "/realisations/x.doi",
            "/realisations/sha256:00!out/../x.doi",
            "/gcroots/host/x",
            "/index/x",
            "/%zz",
            "/%ff.narinfo",
            &format!("/log/{H}-{}.drv", "a".repeat(600)),
            &"/a".repeat(2000),
        ] {
            assert!(classify(p).is_err(), "{p} was accepted");
        }
    }
}
