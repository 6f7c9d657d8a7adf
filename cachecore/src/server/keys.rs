//! Request paths as object keys: a path is percent-decoded and read by the store's one key
//! grammar ([`ObjectKey::parse`]), and only the kinds a binary cache serves are answered.
//! Everything else — `..`, absolute or empty segments, unknown prefixes, staging objects,
//! oversize keys — is refused before the store is asked, so a request can only ever reach an
//! object a Nix binary cache has.

use crate::store::layout::{ObjectKey, ObjectKind, NO_OBJECT};

/// Longest key served (a log key is `log/` + a 211-character name + hash and `.drv`).
pub(crate) const MAX_KEY_LEN: usize = 512;

/// Whether requests may name objects of `kind` (read them, upload them). cachecore's own
/// objects are not part of a binary cache's interface.
pub(crate) fn is_served(kind: ObjectKind) -> bool {
    match kind {
        ObjectKind::CacheInfo
        | ObjectKind::NarInfo
        | ObjectKind::Listing
        | ObjectKind::Nar
        | ObjectKind::FrameDigests
        | ObjectKind::Log
        | ObjectKind::Realisation => true,
        ObjectKind::GcRoot
        | ObjectKind::GcTrash
        | ObjectKind::Index
        | ObjectKind::GcLease
        | ObjectKind::Scratch => false,
    }
}

/// Reads a request path (`/…`, still percent-encoded) as the key of an object this server
/// serves, or says in a few words why it names none.
pub(crate) fn classify(path: &str) -> Result<ObjectKey, &'static str> {
    if path.len() > 3 * MAX_KEY_LEN {
        return Err("the path is too long");
    }
    let decoded = percent_decode(path.strip_prefix('/').unwrap_or(path))
        .ok_or("the path has a bad percent-escape or is not UTF-8")?;
    if decoded.len() > MAX_KEY_LEN {
        return Err("the path is too long");
    }
    if !ObjectKind::of(&decoded).is_some_and(is_served) {
        return Err(NO_OBJECT);
    }
    ObjectKey::parse(decoded)
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
    use crate::store::layout::NAR_EXTENSIONS;

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
        assert_eq!(k("/nix-cache-info"), Ok(ObjectKind::CacheInfo));
        assert_eq!(k(&format!("/{H}.narinfo")), Ok(ObjectKind::NarInfo));
        assert_eq!(k(&format!("/{H}.ls")), Ok(ObjectKind::Listing));
        for ext in NAR_EXTENSIONS {
            assert_eq!(k(&format!("/nar/{NAR}{ext}")), Ok(ObjectKind::Nar), "{ext}");
        }
        assert_eq!(k(&format!("/log/{H}-hello.drv")), Ok(ObjectKind::Log));
        let id = "sha256:6b9206b68e3d12a3cc840a6e022b5394a2297822e0c61f99383ed9e99661c2cf!out";
        assert_eq!(
            k(&format!("/realisations/{id}.doi")),
            Ok(ObjectKind::Realisation)
        );
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
        assert_eq!(streamed.kind, ObjectKind::Nar);
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
