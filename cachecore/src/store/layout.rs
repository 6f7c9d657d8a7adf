//! Object keys of a binary cache: the only place that knows them.
//!
//! The layout is Nix's (what `nix copy --to file://..` and cache.nixos.org use):
//!
//! ```text
//! nix-cache-info
//! <hash>.narinfo                  one per store path
//! <hash>.ls                       optional NAR listing (JSON)
//! nar/<nix32 file hash>.nar<ext>  the (compressed) NARs, named by the hash of the file
//! nar/<nix32 sha256>.frames       cachecore: a seekable NAR's frame digests, named by their
//!                                 own hash (the narinfo's `FramesHash`; see access::frame_digests)
//! log/<drv base name>             build logs
//! realisations/<id>.doi           realisations of content-addressed derivation outputs
//!
//! gcroots/<host>/<name>           cachecore: store paths a host keeps alive
//! gctrash/<host>/<name>           cachecore: roots that left their host, restorable
//! index/<name>                    cachecore: the push index
//! gcleases/<name>                 cachecore: paths a push in progress will reference (GC roots
//!                                 until they expire)
//! .cachecore/                     cachecore: probe and staging objects of writes in progress
//! ```
//!
//! Both directions live here: the functions below build keys, and [`ObjectKey::parse`] reads a
//! key back into its [`ObjectKind`] and the parts it names, by the same grammar (a streamed
//! NAR's unique suffix, the NAR extensions, the hash parts). What each kind *is* for a reader
//! or a writer is a method of [`ObjectKind`] matched on every kind (its content type here; its
//! HTTP cache lifetime, upload rules, route and metrics label in `server`), so a new kind of
//! object is one variant and the compiler lists every place that must decide about it.
//!
//! Crate-private: nothing outside `store` builds keys; callers ask
//! [`BinaryCache`](super::BinaryCache) for objects by what they are, and the server reads
//! request paths as keys only through [`ObjectKey`].

// The parsing half (ObjectKey, NarName) has one user today, the server (feature `server`).
#![cfg_attr(not(feature = "server"), allow(dead_code))]

use crate::compression::Compression;
use crate::hash::{Hash, HashAlgo};
use crate::realisation::DrvOutput;
use crate::store_path::{StorePathRef, HASH_PART_LEN};

/// The kinds of object a cache holds, by the shape of their keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ObjectKind {
    /// `nix-cache-info`.
    CacheInfo,
    /// `<hash>.narinfo`.
    NarInfo,
    /// `<hash>.ls`.
    Listing,
    /// `nar/…`: a NAR, or a NAR being staged (`nar/.tmp-*`).
    Nar,
    /// `nar/<nix32 sha256>.frames`: the frame digests of a seekable NAR (cachecore).
    FrameDigests,
    /// `log/<drv base name>`.
    Log,
    /// `realisations/<id>.doi`.
    Realisation,
    /// `gcroots/<host>/<name>`.
    GcRoot,
    /// `gctrash/<host>/<name>`.
    GcTrash,
    /// `index/<name>`.
    Index,
    /// `gcleases/<name>`.
    GcLease,
    /// `.cachecore/…`: probes and staging objects of writes in progress.
    Scratch,
}

impl ObjectKind {
    /// The kind a key's shape (its directory, or its suffix at the top level) says, without
    /// checking the name; `None` for a key of no kind of this layout.
    pub(crate) fn of(key: &str) -> Option<ObjectKind> {
        let Some((dir, _)) = key.split_once('/') else {
            return if key == CACHE_INFO {
                Some(ObjectKind::CacheInfo)
            } else if key.ends_with(".narinfo") {
                Some(ObjectKind::NarInfo)
            } else if key.ends_with(".ls") {
                Some(ObjectKind::Listing)
            } else {
                None
            };
        };
        Some(match dir {
            NAR_DIR if key.ends_with(FRAMES_SUFFIX) => ObjectKind::FrameDigests,
            NAR_DIR => ObjectKind::Nar,
            LOG_DIR => ObjectKind::Log,
            REALISATIONS_DIR => ObjectKind::Realisation,
            GCROOTS_DIR => ObjectKind::GcRoot,
            GCTRASH_DIR => ObjectKind::GcTrash,
            INDEX_DIR => ObjectKind::Index,
            GCLEASES_DIR => ObjectKind::GcLease,
            CACHECORE_DIR => ObjectKind::Scratch,
            _ => return None,
        })
    }

    /// The `Content-Type` Nix gives each kind of object when it uploads to S3.
    pub(crate) fn content_type(self) -> &'static str {
        match self {
            ObjectKind::CacheInfo => "text/x-nix-cache-info",
            ObjectKind::NarInfo => "text/x-nix-narinfo",
            ObjectKind::Nar => "application/x-nix-nar",
            ObjectKind::FrameDigests => "application/octet-stream",
            ObjectKind::Listing | ObjectKind::Realisation => "application/json",
            ObjectKind::Log => "text/plain; charset=utf-8",
            ObjectKind::GcRoot
            | ObjectKind::GcTrash
            | ObjectKind::Index
            | ObjectKind::GcLease
            | ObjectKind::Scratch => "application/octet-stream",
        }
    }
}

/// A key checked against the grammar of its kind: what [`ObjectKey::parse`] accepts is exactly
/// what the builders of this module write for the kinds a binary cache serves (and what Nix
/// writes: `nix copy --to file://…`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ObjectKey {
    pub(crate) kind: ObjectKind,
    /// The key (no leading `/`).
    pub(crate) key: String,
    /// Only [`ObjectKey::parse`] makes one.
    parsed: (),
}

/// What a NAR's key is named after.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum NarName {
    /// `nar/<nix32 FileHash>.nar<ext>`, as Nix names NARs: the name says what the bytes hash to.
    FileHash(Hash),
    /// `nar/<nix32 NarHash>-<unique>.nar<ext>`: streamed by `cachecore push` before its file hash
    /// was known ([`nar_streamed`]); checked against the narinfo that names it.
    Streamed(Hash),
}

/// The refusal of a key that names no object of a binary cache.
pub(crate) const NO_OBJECT: &str = "no object of a binary cache has this name";
const BAD_NAR_NAME: &str = "a NAR is named nar/<52 nix32 characters>[-<hex>].nar[.xz|.zst|…]";

impl ObjectKey {
    /// `key` if it names an object of a binary cache by the grammar of its kind, or a few words
    /// saying why not. Staging objects (`nar/.tmp-*`, `.cachecore/…`), `.`/`..` and empty
    /// segments, and keys of no kind are refused. The keys of cachecore's own objects (GC
    /// roots, the index) are accepted when well formed; whether to serve them is the caller's
    /// decision.
    pub(crate) fn parse(key: String) -> Result<ObjectKey, &'static str> {
        let kind = ObjectKind::of(&key).ok_or(NO_OBJECT)?;
        let valid = match kind {
            ObjectKind::CacheInfo => true,
            ObjectKind::NarInfo => narinfo_hash(&key).is_some(),
            ObjectKind::Listing => key.strip_suffix(".ls").is_some_and(is_hash_part),
            ObjectKind::Nar => {
                nar_parts(&key)?;
                true
            }
            ObjectKind::FrameDigests => frame_digests_hash(&key).is_some(),
            ObjectKind::Log => {
                // `log/<hash>-<name>.drv`, as Nix writes build logs.
                let name = &key[LOG_DIR.len() + 1..];
                if !name.ends_with(".drv") || StorePathRef::from_base_name(name).is_err() {
                    return Err("a log is named log/<hash>-<name>.drv");
                }
                true
            }
            ObjectKind::Realisation => {
                let Some(id) = realisation_id(&key) else {
                    return Err(NO_OBJECT);
                };
                let valid = DrvOutput::parse(id).is_ok_and(|o| {
                    o.output
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"+-._?=".contains(&b))
                });
                if !valid {
                    return Err("a realisation is named realisations/<algo>:<hex>!<output>.doi");
                }
                true
            }
            ObjectKind::GcRoot | ObjectKind::GcTrash => key
                .split_once('/')
                .and_then(|(_, rest)| rest.split_once('/'))
                .is_some_and(|(host, name)| is_name(host) && is_name(name)),
            ObjectKind::Index => is_name(&key[INDEX_DIR.len() + 1..]),
            ObjectKind::GcLease => gc_lease_name(&key).is_some(),
            ObjectKind::Scratch => false,
        };
        if !valid {
            return Err(NO_OBJECT);
        }
        Ok(ObjectKey {
            kind,
            key,
            parsed: (),
        })
    }

    /// The hash part of a `<hash>.narinfo` or `<hash>.ls` key.
    pub(crate) fn hash_part(&self) -> Option<&str> {
        match self.kind {
            ObjectKind::NarInfo => self.key.strip_suffix(".narinfo"),
            ObjectKind::Listing => self.key.strip_suffix(".ls"),
            _ => None,
        }
    }

    /// What a NAR key is named after (`None` for 52 nix32 characters that are no sha256).
    pub(crate) fn nar_name(&self) -> Option<NarName> {
        if self.kind != ObjectKind::Nar {
            return None;
        }
        let (hash, streamed, _) = nar_parts(&self.key).ok()?;
        let hash = Hash::parse_digest(HashAlgo::Sha256, hash).ok()?;
        Some(if streamed {
            NarName::Streamed(hash)
        } else {
            NarName::FileHash(hash)
        })
    }

    /// The file hash a `nar/<nix32>.nar<ext>` key is named after (`None` for a NAR streamed by
    /// `cachecore push`: its name is not its file's hash).
    pub(crate) fn nar_name_hash(&self) -> Option<Hash> {
        match self.nar_name()? {
            NarName::FileHash(h) => Some(h),
            NarName::Streamed(_) => None,
        }
    }

    /// Whether this is a NAR streamed by `cachecore push` ([`NarName::Streamed`]).
    pub(crate) fn is_streamed_nar(&self) -> bool {
        matches!(self.nar_name(), Some(NarName::Streamed(_)))
    }

    /// The NAR key's extension after `.nar` (`""`, `".xz"`, `".zst"`, …).
    pub(crate) fn nar_extension(&self) -> Option<&str> {
        match self.kind {
            ObjectKind::Nar => nar_parts(&self.key).ok().map(|(_, _, ext)| ext),
            _ => None,
        }
    }

    /// The output a `realisations/<id>.doi` key names.
    pub(crate) fn drv_output(&self) -> Option<DrvOutput> {
        match self.kind {
            ObjectKind::Realisation => DrvOutput::parse(realisation_id(&self.key)?).ok(),
            _ => None,
        }
    }
}

/// Length of the unique part of a streamed NAR's name: 16 lowercase hex digits.
const STREAMED_UNIQUE_LEN: usize = 16;

/// NAR file extensions Nix writes (`.nar` + the compression's extension).
pub(crate) const NAR_EXTENSIONS: &[&str] = &[
    ".nar", ".nar.xz", ".nar.zst", ".nar.bz2", ".nar.br", ".nar.lz", ".nar.lz4", ".nar.gz",
];

/// The parts of a NAR key, by the grammar of [`nar`] and [`nar_streamed`]: the 52 nix32
/// characters of its hash, whether it was streamed, and its extension after `.nar`.
fn nar_parts(key: &str) -> Result<(&str, bool, &str), &'static str> {
    let name = key
        .strip_prefix(NAR_DIR)
        .and_then(|k| k.strip_prefix('/'))
        .ok_or(BAD_NAR_NAME)?;
    let (hash, rest) = name.split_at_checked(52).ok_or("not a NAR name")?;
    let (streamed, ext) = match rest.strip_prefix('-') {
        Some(tail) => {
            let (unique, ext) = tail.split_at(tail.find('.').unwrap_or(tail.len()));
            let hex = unique.len() == STREAMED_UNIQUE_LEN
                && unique
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
            if !hex {
                return Err(BAD_NAR_NAME);
            }
            (true, ext)
        }
        None => (false, rest),
    };
    let valid = hash
        .bytes()
        .all(|b| crate::nixbase32::ALPHABET.contains(&b))
        && NAR_EXTENSIONS.contains(&ext);
    if !valid {
        return Err(BAD_NAR_NAME);
    }
    Ok((hash, streamed, &ext[".nar".len()..]))
}

/// The `<id>` of a `realisations/<id>.doi` key.
fn realisation_id(key: &str) -> Option<&str> {
    key.strip_prefix(REALISATIONS_DIR)?
        .strip_prefix('/')?
        .strip_suffix(".doi")
}

fn is_hash_part(s: &str) -> bool {
    s.len() == HASH_PART_LEN && s.bytes().all(|b| crate::nixbase32::ALPHABET.contains(&b))
}

/// One segment of a key that is neither empty, `.` nor `..`.
fn is_name(s: &str) -> bool {
    !s.is_empty() && s != "." && s != ".." && !s.contains('/')
}

/// The cache's description file.
pub const CACHE_INFO: &str = "nix-cache-info";

/// Directory of NAR files.
pub const NAR_DIR: &str = "nar";

/// Directory of build logs.
const LOG_DIR: &str = "log";

/// Directory of realisations.
const REALISATIONS_DIR: &str = "realisations";

/// The suffix of a frame-digests object's key.
const FRAMES_SUFFIX: &str = ".frames";

/// `nar/<nix32 sha256>.frames`: the frame digests of a seekable NAR, named by their own sha256
/// (the narinfo's `FramesHash`), so the same digests are one object whatever names the NAR, and
/// a copy keeps the key.
pub fn frame_digests(hash: &Hash) -> String {
    format!("{NAR_DIR}/{}{FRAMES_SUFFIX}", hash.to_nix32())
}

/// The sha256 a `nar/<nix32>.frames` key is named after.
pub fn frame_digests_hash(key: &str) -> Option<Hash> {
    let name = key
        .strip_prefix(NAR_DIR)?
        .strip_prefix('/')?
        .strip_suffix(FRAMES_SUFFIX)?;
    Hash::parse_digest(HashAlgo::Sha256, name)
        .ok()
        .filter(|h| h.to_nix32() == name)
}

/// Keys that split a cache's listing into ranges of about equal size, in order: each character
/// of the nix32 alphabet (the first of a `<hash>.narinfo` or `<hash>.ls` key, evenly spread)
/// and `nar/<c><d>` for the first two characters of a NAR's nix32 name (a sha256 in nix32
/// begins with `0` or `1`: its first character holds one bit). A range is the keys after one
/// boundary up to and including the next; the first and last are open, so every key is in
/// exactly one whatever it is.
pub(crate) fn listing_boundaries() -> Vec<String> {
    let alphabet = crate::nixbase32::ALPHABET.iter().map(|&c| char::from(c));
    let mut keys: Vec<String> = alphabet.clone().map(String::from).collect();
    for first in ['0', '1'] {
        keys.extend(alphabet.clone().map(|c| format!("{NAR_DIR}/{first}{c}")));
    }
    keys.sort_unstable();
    keys
}

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
/// hash is known. `unique` (16 hex digits) is new for every upload, so two pushes of the same
/// path (with other compression settings, or one killed half-way) never write the same key: a
/// narinfo always names an object written by the push that wrote the narinfo.
pub fn nar_streamed(nar_hash: &Hash, unique: u64, c: Compression) -> String {
    format!(
        "{NAR_DIR}/{}-{unique:0width$x}.nar{}",
        nar_hash.to_nix32(),
        c.extension(),
        width = STREAMED_UNIQUE_LEN
    )
}

/// Whether `key` is a staging file of a local-directory store (`<key>#<n>`, object_store's
/// name for a file being written; left behind by a killed upload).
pub fn is_local_staging(key: &str) -> bool {
    key.rsplit_once('#')
        .is_some_and(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Whether `key` is the leftover of an upload: a local staging file (`<key>#<n>`), a staged
/// NAR (`nar/.tmp-*`), a create-only upload's staging object (`.cachecore/staging/*`) or a NAR
/// sent by a presigned URL that no narinfo took (`.cachecore/direct/*`). None is ever named by
/// a narinfo.
pub fn is_debris(key: &str) -> bool {
    is_local_staging(key)
        || key.starts_with(&format!("{NAR_DIR}/.tmp-"))
        || key.starts_with(&format!("{CACHECORE_DIR}/staging/"))
        || key.starts_with(&format!("{CACHECORE_DIR}/{DIRECT_DIR}/"))
}

/// Under [`CACHECORE_DIR`]: NARs uploaded straight to the bucket ([`direct_upload`]).
const DIRECT_DIR: &str = "direct";

/// `.cachecore/direct/<file name of nar_key>`: where `serve`'s presigned upload URL for the
/// streamed NAR `nar_key` points. The server moves it to `nar_key` when it takes the narinfo
/// naming it, so the URL — valid for an hour, and checked by the bucket, not the server —
/// writes only here afterwards, never over a published NAR.
pub fn direct_upload(nar_key: &str) -> String {
    let name = nar_key.rsplit('/').next().unwrap_or(nar_key);
    format!("{CACHECORE_DIR}/{DIRECT_DIR}/{name}")
}

/// `log/<drv base name>`, e.g. `log/abc…-hello.drv`.
pub fn log(drv_base_name: &str) -> String {
    format!("{LOG_DIR}/{drv_base_name}")
}

/// The derivation base name of a `log/<drv base name>` key.
pub fn log_drv(key: &str) -> Option<&str> {
    key.strip_prefix("log/")
        .filter(|d| !d.is_empty() && !d.contains('/'))
}

/// `realisations/<drv hash>!<output>.doi`.
pub fn realisation(id: &DrvOutput) -> String {
    format!("{REALISATIONS_DIR}/{id}.doi")
}

/// `realisations/<id>.doi` for an id already checked (a listed key's, see
/// [`realisation_id_of`]).
pub fn realisation_key(id: &str) -> String {
    format!("{REALISATIONS_DIR}/{id}.doi")
}

/// The `<id>` of a `realisations/<id>.doi` key that parses as a derivation output.
pub fn realisation_id_of(key: &str) -> Option<&str> {
    realisation_id(key).filter(|id| DrvOutput::parse(id).is_ok() && !id.contains('/'))
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

/// Directory of the leases of pushes in progress.
pub const GCLEASES_DIR: &str = "gcleases";

/// `gcleases/<name>`: a lease, naming the paths a push in progress will reference.
pub fn gc_lease(name: &str) -> String {
    format!("{GCLEASES_DIR}/{name}")
}

/// The name of a `gcleases/<name>` key.
pub fn gc_lease_name(key: &str) -> Option<&str> {
    key.strip_prefix(GCLEASES_DIR)?
        .strip_prefix('/')
        .filter(|n| is_name(n))
}

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

/// The name of an `index/<name>` key.
pub fn index_name(key: &str) -> Option<&str> {
    key.strip_prefix(INDEX_DIR)?
        .strip_prefix('/')
        .filter(|n| is_name(n))
}

/// `.cachecore/gc/<name>`: a tombstone of a GC run (what it unpublished, and when).
pub fn gc_tombstone(name: &str) -> String {
    format!("{GC_TOMBSTONE_DIR}/{name}")
}

/// Directory of the GC runs' tombstones.
pub const GC_TOMBSTONE_DIR: &str = ".cachecore/gc";

/// Directory of `serve`'s access records ([`crate::gc::access`]).
pub const ACCESS_DIR: &str = ".cachecore/access";

/// `.cachecore/access/<name>`: an access record.
pub fn access_record(name: &str) -> String {
    format!("{ACCESS_DIR}/{name}")
}

/// The name of a `.cachecore/access/<name>` key.
pub fn access_record_name(key: &str) -> Option<&str> {
    key.strip_prefix(ACCESS_DIR)?
        .strip_prefix('/')
        .filter(|n| is_name(n))
}

/// The `(host, name)` of a `gctrash/<host>/<name>` key.
pub fn gctrash_parts(key: &str) -> Option<(&str, &str)> {
    host_and_name(GCTRASH_DIR, key)
}

/// The hash part named by a root-level `<hash>.ls` key, if `key` is one.
pub fn listing_hash(key: &str) -> Option<&str> {
    key.strip_suffix(".ls").filter(|h| is_hash_part(h))
}

/// The `(host, name)` of a `gcroots/<host>/<name>` key.
pub fn gcroot_parts(key: &str) -> Option<(&str, &str)> {
    host_and_name(GCROOTS_DIR, key)
}

/// The `(host, name)` of a `<dir>/<host>/<name>` key.
fn host_and_name<'a>(dir: &str, key: &'a str) -> Option<(&'a str, &'a str)> {
    let rest = key.strip_prefix(dir)?.strip_prefix('/')?;
    let (host, name) = rest.split_once('/')?;
    (!host.is_empty() && !name.is_empty() && !name.contains('/')).then_some((host, name))
}

/// Whether `key` is one a NAR may be stored under (`nar/...`), as a narinfo's `URL:` must be
/// for cachecore to write there.
pub fn is_nar(key: &str) -> bool {
    key.strip_prefix(NAR_DIR)
        .and_then(|k| k.strip_prefix('/'))
        .is_some_and(|name| !name.is_empty() && !name.contains('/'))
        && !key.ends_with(FRAMES_SUFFIX)
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

/// The `Content-Type` Nix gives each kind of object when it uploads to S3
/// ([`ObjectKind::content_type`]; `application/octet-stream` for a key of no kind).
pub fn content_type(key: &str) -> &'static str {
    ObjectKind::of(key).map_or("application/octet-stream", ObjectKind::content_type)
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
        assert_eq!(log_drv("log/abc-x.drv"), Some("abc-x.drv"));
        assert_eq!(log_drv("log/a/b"), None);
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
        assert_eq!(gctrash_parts("gctrash/h/n"), Some(("h", "n")));
        assert_eq!(gctrash_parts("gcroots/h/n"), None);
        assert_eq!(gc_tombstone("t1"), ".cachecore/gc/t1");
        assert_eq!(
            listing_hash("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.ls"),
            Some("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa")
        );
        assert_eq!(
            listing_hash("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.narinfo"),
            None
        );
        assert_eq!(index("paths"), "index/paths");
        assert!(is_nar(&k) && !is_nar("nar/") && !is_nar("nar/a/b") && !is_nar("x.narinfo"));
        assert!(probe("1").starts_with(".cachecore/"));
        assert_eq!(staging("nar/x.nar", "u"), ".cachecore/staging/x.nar-u");
        assert_eq!(
            narinfo("7h7qgvs4kgzsn8a6rb273saxyqh4jxlz"),
            "7h7qgvs4kgzsn8a6rb273saxyqh4jxlz.narinfo"
        );
    }

    /// What the builders write, the parser reads back as the same kind and parts.
    #[test]
    fn built_keys_parse_back() {
        let h = Hash::digest(HashAlgo::Sha256, b"x");
        let part = "7h7qgvs4kgzsn8a6rb273saxyqh4jxlz";
        let parse = |k: String| ObjectKey::parse(k.clone()).unwrap_or_else(|e| panic!("{k}: {e}"));
        for c in [Compression::None, Compression::Xz, Compression::Zstd] {
            let k = parse(nar(&h, c));
            assert_eq!(k.nar_name(), Some(NarName::FileHash(h.clone())));
            assert_eq!(k.nar_extension(), Some(c.extension()));
            let k = parse(nar_streamed(&h, 0x6f00_8001_31e6_12ea, c));
            assert_eq!(k.nar_name(), Some(NarName::Streamed(h.clone())));
            assert!(k.is_streamed_nar() && k.nar_name_hash().is_none());
            assert_eq!(k.nar_extension(), Some(c.extension()));
        }
        // A small unique number is still 16 digits, as the parser wants.
        assert!(nar_streamed(&h, 1, Compression::Zstd).contains("-0000000000000001.nar"));
        assert_eq!(parse(narinfo(part)).hash_part(), Some(part));
        assert_eq!(parse(listing(part)).kind, ObjectKind::Listing);
        let frames = frame_digests(&h);
        assert_eq!(parse(frames.clone()).kind, ObjectKind::FrameDigests);
        assert_eq!(frame_digests_hash(&frames), Some(h.clone()));
        assert!(!is_nar(&frames) && is_nar(&nar(&h, Compression::Zstd)));
        for bad in ["nar/x.frames", "nar/.frames"] {
            assert!(ObjectKey::parse(bad.to_owned()).is_err(), "{bad}");
        }
        assert_eq!(parse(CACHE_INFO.to_owned()).kind, ObjectKind::CacheInfo);
        assert_eq!(
            parse(log(&format!("{part}-hello.drv"))).kind,
            ObjectKind::Log
        );
        let id = DrvOutput::parse(
            "sha256:6b9206b68e3d12a3cc840a6e022b5394a2297822e0c61f99383ed9e99661c2cf!out",
        )
        .unwrap();
        assert_eq!(parse(realisation(&id)).drv_output(), Some(id));
        assert_eq!(parse(gcroot("h", "n")).kind, ObjectKind::GcRoot);
        assert_eq!(parse(gctrash("h", "n")).kind, ObjectKind::GcTrash);
        assert_eq!(parse(index("paths")).kind, ObjectKind::Index);
        assert_eq!(parse(gc_lease("1-ab")).kind, ObjectKind::GcLease);
        assert_eq!(gc_lease_name("gcleases/1-ab"), Some("1-ab"));
        assert_eq!(gc_lease_name("gcleases/a/b"), None);
        // Staging and probe objects are no objects of the cache.
        for scratch in [temp_nar("u"), probe("u"), staging("nar/x.nar", "u")] {
            assert!(ObjectKey::parse(scratch.clone()).is_err(), "{scratch}");
        }
        for bad in [
            "gcroots/../x",
            "gcroots/h/",
            "index/..",
            "/nix-cache-info",
            "x/y.narinfo",
        ] {
            assert!(ObjectKey::parse(bad.to_owned()).is_err(), "{bad}");
        }
        // One definition of a streamed NAR's name: exactly the 16 hex digits push writes.
        let n = h.to_nix32();
        for unique in ["6f00800131e612e", "6f00800131e612ea0", "6F00800131E612EA"] {
            assert!(
                ObjectKey::parse(format!("nar/{n}-{unique}.nar.zst")).is_err(),
                "{unique}"
            );
        }
    }

    #[test]
    fn content_types_follow_the_kind() {
        assert_eq!(content_type("nar/.tmp-1"), "application/x-nix-nar");
        assert_eq!(content_type("log/x"), "text/plain; charset=utf-8");
        assert_eq!(content_type("realisations/x.doi"), "application/json");
        assert_eq!(content_type("x.ls"), "application/json");
        assert_eq!(
            content_type(".cachecore/staging/x.narinfo-1"),
            "application/octet-stream"
        );
        assert_eq!(content_type("gcroots/h/n"), "application/octet-stream");
    }
}
