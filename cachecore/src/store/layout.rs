//! Object keys of a binary cache: the only place that knows them.
//!
//! The layout is Nix's (what `nix copy --to file://..` and cache.nixos.org use):
//!
//! ```text
//! nix-cache-info
//! <hash>.narinfo                  one per store path
//! <hash>.ls                       optional NAR listing (JSON)
//! nar/<nix32 file hash>.nar<ext>  the (compressed) NARs, named by the hash of the file
//! log/<drv base name>             build logs
//! realisations/<id>.doi           realisations of content-addressed derivation outputs
//!
//! gcroots/<host>/<name>           cachecore: store paths a host keeps alive
//! gctrash/<host>/<name>           cachecore: roots that left their host, restorable
//! index/<name>                    cachecore: the push index
//! .cachecore/                     cachecore: probe and staging objects of writes in progress
//! ```
//!
//! Crate-private: nothing outside `store` builds keys; callers ask
//! [`BinaryCache`](super::BinaryCache) for objects by what they are.

use crate::compression::Compression;
use crate::hash::Hash;
use crate::realisation::DrvOutput;
use crate::store_path::HASH_PART_LEN;

/// The cache's description file.
pub const CACHE_INFO: &str = "nix-cache-info";

/// Directory of NAR files.
pub const NAR_DIR: &str = "nar";

/// `<hash>.narinfo`.
pub fn narinfo(hash_part: &str) -> String {
    format!("{hash_part}.narinfo")
}

/// `<hash>.ls`: the NAR listing.
pub fn listing(hash_part: &str) -> String {
    format!("{hash_part}.ls")
}

/// `nar/<nix32 hash>.nar<ext>`, e.g. `nar/0a6h….nar.zst`. Nix names a NAR after its file's
/// hash; a push streaming a large NAR names it after its NarHash, the one hash known before the
/// upload starts. Readers follow the narinfo's `URL:`, so either name works.
pub fn nar(hash: &Hash, c: Compression) -> String {
    format!("{NAR_DIR}/{}.nar{}", hash.to_nix32(), c.extension())
}

/// `nar/<nix32 NarHash>-<unique>.nar<ext>`: a large NAR streamed to its key before its file
/// hash is known. `unique` is new for every upload, so two pushes of the same path (with other
/// compression settings, or one killed half-way) never write the same key: a narinfo always
/// names an object written by the push that wrote the narinfo.
pub fn nar_streamed(nar_hash: &Hash, unique: &str, c: Compression) -> String {
    format!(
        "{NAR_DIR}/{}-{unique}.nar{}",
        nar_hash.to_nix32(),
        c.extension()
    )
}

/// Whether `key` is a staging file of a local-directory store (`<key>#<n>`, object_store's
/// name for a file being written; left behind by a killed upload).
pub fn is_local_staging(key: &str) -> bool {
    key.rsplit_once('#')
        .is_some_and(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Whether `key` is the leftover of an upload: a local staging file (`<key>#<n>`), a staged
/// NAR (`nar/.tmp-*`) or a create-only upload's staging object (`.cachecore/staging/*`). None is
/// ever named by a narinfo.
pub fn is_debris(key: &str) -> bool {
    is_local_staging(key)
        || key.starts_with(&format!("{NAR_DIR}/.tmp-"))
        || key.starts_with(&format!("{CACHECORE_DIR}/staging/"))
}

/// `log/<drv base name>`, e.g. `log/abc…-hello.drv`.
pub fn log(drv_base_name: &str) -> String {
    format!("log/{drv_base_name}")
}

/// `realisations/<drv hash>!<output>.doi`.
pub fn realisation(id: &DrvOutput) -> String {
    format!("realisations/{id}.doi")
}

/// `nar/.tmp-<unique>`: where an upload is staged before it is renamed to its content-addressed
/// key (whose hash is known only at the end).
pub fn temp_nar(unique: &str) -> String {
    format!("{NAR_DIR}/.tmp-{unique}")
}

/// Directory of cachecore's own bookkeeping objects (probes, staging of create-only uploads).
pub const CACHECORE_DIR: &str = ".cachecore";

/// `.cachecore/probe-<unique>`: the object a conditional-write probe writes and deletes.
pub fn probe(unique: &str) -> String {
    format!("{CACHECORE_DIR}/probe-{unique}")
}

/// `.cachecore/staging/<unique>`: where a large create-only upload of `key` waits until it is
/// copied into place.
pub fn staging(key: &str, unique: &str) -> String {
    let name = key.rsplit('/').next().unwrap_or(key);
    format!("{CACHECORE_DIR}/staging/{name}-{unique}")
}

/// Directory of the GC roots of every host.
pub const GCROOTS_DIR: &str = "gcroots";

/// Directory of the GC roots that left their host (restorable until emptied).
pub const GCTRASH_DIR: &str = "gctrash";

/// Directory of the push index.
pub const INDEX_DIR: &str = "index";

/// `gcroots/<host>/<name>`: a root that keeps store paths of `host` alive.
pub fn gcroot(host: &str, name: &str) -> String {
    format!("{GCROOTS_DIR}/{host}/{name}")
}

/// `gcroots/<host>`: the directory of `host`'s roots (for listing).
pub fn gcroots_of(host: &str) -> String {
    format!("{GCROOTS_DIR}/{host}")
}

/// `gctrash/<host>/<name>`: a root removed from `host`, kept until the trash is emptied.
pub fn gctrash(host: &str, name: &str) -> String {
    format!("{GCTRASH_DIR}/{host}/{name}")
}

/// `index/<name>`: an entry of the push index.
pub fn index(name: &str) -> String {
    format!("{INDEX_DIR}/{name}")
}

/// The `(host, name)` of a `gcroots/<host>/<name>` key.
pub fn gcroot_parts(key: &str) -> Option<(&str, &str)> {
    let rest = key.strip_prefix(GCROOTS_DIR)?.strip_prefix('/')?;
    let (host, name) = rest.split_once('/')?;
    (!host.is_empty() && !name.is_empty() && !name.contains('/')).then_some((host, name))
}

/// Whether `key` is one a NAR may be stored under (`nar/...`), as a narinfo's `URL:` must be
/// for cachecore to write there.
pub fn is_nar(key: &str) -> bool {
    key.strip_prefix(NAR_DIR)
        .and_then(|k| k.strip_prefix('/'))
        .is_some_and(|name| !name.is_empty() && !name.contains('/'))
}

/// The hash part named by a root-level `<hash>.narinfo` key, if `key` is one (32 characters of
/// the nix32 alphabet).
pub fn narinfo_hash(key: &str) -> Option<&str> {
    let hash = key.strip_suffix(".narinfo")?;
    let valid = hash.len() == HASH_PART_LEN
        && hash
            .bytes()
            .all(|b| crate::nixbase32::ALPHABET.contains(&b));
    valid.then_some(hash)
}

/// The `Content-Type` Nix gives each kind of object when it uploads to S3.
pub fn content_type(key: &str) -> &'static str {
    if key == CACHE_INFO {
        "text/x-nix-cache-info"
    } else if key.ends_with(".narinfo") {
        "text/x-nix-narinfo"
    } else if key.starts_with("nar/") {
        "application/x-nix-nar"
    } else if key.ends_with(".ls") || key.ends_with(".doi") {
        "application/json"
    } else if key.starts_with("log/") {
        "text/plain; charset=utf-8"
    } else {
        "application/octet-stream"
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::hash::HashAlgo;

    #[test]
    fn keys() {
        let h = Hash::digest(HashAlgo::Sha256, b"x");
        let k = nar(&h, Compression::Zstd);
        assert!(k.starts_with("nar/") && k.ends_with(".nar.zst") && k.len() == 4 + 52 + 8);
        assert_eq!(
            nar(&h, Compression::None),
            format!("nar/{}.nar", h.to_nix32())
        );
        assert_eq!(listing("abc"), "abc.ls");
        assert_eq!(log("abc-x.drv"), "log/abc-x.drv");
        let id = DrvOutput::parse(
            "sha256:6b9206b68e3d12a3cc840a6e022b5394a2297822e0c61f99383ed9e99661c2cf!out",
        )
        .unwrap();
        assert_eq!(
            realisation(&id),
            "realisations/sha256:6b9206b68e3d12a3cc840a6e022b5394a2297822e0c61f99383ed9e99661c2cf!out.doi"
        );
        assert_eq!(temp_nar("u1"), "nar/.tmp-u1");
        assert_eq!(
            narinfo_hash("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.narinfo"),
            Some("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa")
        );
        // `e`, `o`, `t`, `u` are not in Nix's base-32 alphabet.
        assert_eq!(
            narinfo_hash("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaae.narinfo"),
            None
        );
        assert_eq!(narinfo_hash("short.narinfo"), None);
        assert_eq!(content_type("x.narinfo"), "text/x-nix-narinfo");
        assert_eq!(content_type(CACHE_INFO), "text/x-nix-cache-info");
        assert_eq!(gcroot("builder-1", "release"), "gcroots/builder-1/release");
        assert_eq!(
            gcroot_parts("gcroots/builder-1/release"),
            Some(("builder-1", "release"))
        );
        assert_eq!(gcroot_parts("gcroots/builder-1"), None);
        assert_eq!(gcroot_parts("gctrash/h/n"), None);
        assert_eq!(gctrash("h", "n"), "gctrash/h/n");
        assert_eq!(index("paths"), "index/paths");
        assert!(is_nar(&k) && !is_nar("nar/") && !is_nar("nar/a/b") && !is_nar("x.narinfo"));
        assert!(probe("1").starts_with(".cachecore/"));
        assert_eq!(staging("nar/x.nar", "u"), ".cachecore/staging/x.nar-u");
        assert_eq!(
            narinfo("7h7qgvs4kgzsn8a6rb273saxyqh4jxlz"),
            "7h7qgvs4kgzsn8a6rb273saxyqh4jxlz.narinfo"
        );
    }
}
