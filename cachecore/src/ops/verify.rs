//! `verify`: check that a cache is whole — every narinfo parses, is signed by a trusted key (when
//! keys are given), has its NAR with the right sizes and hashes, and has its whole closure; and
//! that every `.ls` listing describes its NAR (a listing is not covered by any signature, so a
//! forged one would otherwise pass).

use std::collections::HashSet;
use std::fmt;
use std::sync::{Arc, Mutex};

use futures::{StreamExt as _, TryStreamExt as _};

use super::browse::{consume_checked, listing_describes, with_nar};
use super::pull::check_trusted;
use super::{join_error, OpError};
use crate::access::frame_digests::{
    FrameDigests, FramesClaim, StreamedFrames, FRAMES_HASH_FIELD, FRAMES_SIG_FIELD,
    LISTING_HASH_FIELD, MAX_FRAME_DIGESTS_BYTES,
};
use crate::compression::Compression;
use crate::graph::{self, Start};
use crate::hash::Hash;
use crate::nar::{Listing, ListingMismatch};
use crate::narinfo::NarInfo;
use crate::signing::PublicKey;
use crate::store::{BinaryCache, IntegrityError, StoreError};
use crate::store_path::StorePath;

/// How to verify.
#[derive(Debug, Clone)]
pub struct VerifyOptions {
    /// When not empty, every narinfo must carry a signature by one of these keys.
    pub trusted_keys: Vec<PublicKey>,
    /// NARs checked at once.
    pub jobs: usize,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        VerifyOptions {
            trusted_keys: Vec::new(),
            jobs: 4,
        }
    }
}

/// One thing wrong with one object of the cache.
///
/// `Display` prints one line, `<subject>: <what is wrong>`, where the subject is the store path
/// (or the narinfo's key when there is no store path to name).
#[derive(Debug)]
#[non_exhaustive]
pub enum Problem {
    /// A narinfo that was asked for, or that a reference leads to, is not in the cache.
    MissingNarInfo { key: String },
    /// A narinfo that cannot be used as what it is stored for: it describes another path
    /// ([`StoreError::IdentityMismatch`]), is too large to read, or leads outside the cache.
    UnusableNarInfo { key: String, error: StoreError },
    /// A narinfo does not parse.
    BadNarInfo {
        key: String,
        error: Box<crate::narinfo::ParseError>,
    },
    /// A reference of `path` has no narinfo: the closure is incomplete.
    MissingReference { path: String, reference: String },
    /// `path` carries no signature by a trusted key.
    Untrusted {
        path: String,
        /// The names of the keys it is signed with.
        found: Vec<String>,
    },
    /// The NAR object the narinfo names is missing.
    MissingNar { path: String, url: String },
    /// A size or hash of the NAR is not what the narinfo says.
    Mismatch {
        path: String,
        /// `FileSize`, `FileHash`, `NarSize` or `NarHash`.
        field: &'static str,
        expected: String,
        actual: String,
    },
    /// The NAR object cannot be read as a NAR (it does not decompress, or does not parse).
    BadNar { path: String, error: OpError },
    /// The `.ls` listing of `path` cannot be read, does not parse, or does not describe its
    /// NAR (`why`, a sentence).
    BadListing { path: String, why: String },
    /// The frame digests the narinfo of `path` names (`FramesHash`, `ListingHash`: see
    /// [`crate::access::frame_digests`]) are missing, do not hash to their field, or do not
    /// describe its NAR object or listing (`why`, a sentence).
    BadFrames { path: String, why: String },
    /// `path`'s frame digests carry no `FramesSig` by a trusted key (only looked for when keys
    /// are given): a reader checking frames would read its NAR whole instead.
    UntrustedFrames {
        path: String,
        /// The names of the keys its `FramesSig` fields name.
        found: Vec<String>,
    },
}

impl Problem {
    /// The store path the problem is about, or the narinfo's key.
    pub fn subject(&self) -> &str {
        match self {
            Problem::MissingNarInfo { key }
            | Problem::BadNarInfo { key, .. }
            | Problem::UnusableNarInfo { key, .. } => key,
            Problem::MissingReference { path, .. }
            | Problem::Untrusted { path, .. }
            | Problem::MissingNar { path, .. }
            | Problem::Mismatch { path, .. }
            | Problem::BadNar { path, .. }
            | Problem::BadListing { path, .. }
            | Problem::BadFrames { path, .. }
            | Problem::UntrustedFrames { path, .. } => path,
        }
    }

    /// [`Untrusted`](crate::error::ErrorKind::Untrusted) for a missing signature,
    /// [`Corrupt`](crate::error::ErrorKind::Corrupt) for everything else: the cache is bad.
    pub fn kind(&self) -> crate::error::ErrorKind {
        match self {
            Problem::Untrusted { .. } | Problem::UntrustedFrames { .. } => {
                crate::error::ErrorKind::Untrusted
            }
            _ => crate::error::ErrorKind::Corrupt,
        }
    }

    /// The problem a failed NAR check shows, or the error back when the check could not be
    /// made (the store unreachable, access denied, a local failure).
    fn from_nar_check(path: String, e: OpError) -> Result<Problem, OpError> {
        Ok(match e {
            OpError::MissingNar { url, .. }
            | OpError::Integrity(IntegrityError::NarMissing { key: url, .. }) => {
                Problem::MissingNar { path, url }
            }
            OpError::Integrity(IntegrityError::Mismatch {
                field,
                expected,
                actual,
                ..
            }) => Problem::Mismatch {
                path,
                field,
                expected,
                actual,
            },
            e if e.kind() == crate::error::ErrorKind::Corrupt => Problem::BadNar { path, error: e },
            e => return Err(e),
        })
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.subject())?;
        match self {
            Problem::MissingNarInfo { .. } => f.write_str("no such narinfo in the cache"),
            Problem::BadNarInfo { error, .. } => write!(f, "does not parse: {error}"),
            Problem::UnusableNarInfo { key, error } => {
                // The store's sentence without its "<url>: " and "<key> " openings.
                let text = error.to_string();
                let text = text
                    .split_once(": ")
                    .map_or(text.as_str(), |(_, rest)| rest);
                let text = text
                    .strip_prefix(key.as_str())
                    .map_or(text, str::trim_start);
                f.write_str(text)
            }
            Problem::MissingReference { reference, .. } => write!(
                f,
                "reference {reference} has no narinfo (the closure is incomplete)"
            ),
            Problem::Untrusted { found, .. } => {
                if found.is_empty() {
                    f.write_str("it has no signature, so none is by a trusted key")
                } else {
                    write!(
                        f,
                        "none of its signatures ({}) is by a trusted key",
                        found.join(", ")
                    )
                }
            }
            Problem::MissingNar { url, .. } => {
                write!(f, "its NAR {url} is missing from the cache")
            }
            Problem::Mismatch {
                field,
                expected,
                actual,
                ..
            } => write!(
                f,
                "{field} mismatch: the narinfo says {expected}, the data gives {actual}"
            ),
            Problem::BadListing { why, .. } => write!(f, "its listing {why}"),
            Problem::BadFrames { why, .. } => f.write_str(why),
            Problem::UntrustedFrames { found, .. } => {
                if found.is_empty() {
                    f.write_str(
                        "its frame digests (FramesHash) have no FramesSig, so none is by a \
                         trusted key (frame-checked reads would fetch its whole NAR)",
                    )
                } else {
                    write!(
                        f,
                        "none of its FramesSig signatures ({}) over its frame digests is by a \
                         trusted key (frame-checked reads would fetch its whole NAR)",
                        found.join(", ")
                    )
                }
            }
            Problem::BadNar { error, .. } => {
                // The error names the path itself; say only the rest.
                let text = error.to_string();
                let subject = format!("{}: ", self.subject());
                f.write_str(text.strip_prefix(&subject).unwrap_or(&text))
            }
        }
    }
}

/// The outcome of [`verify`].
#[derive(Debug, Default)]
pub struct VerifyReport {
    /// Narinfos looked at.
    pub checked: usize,
    /// Of those, narinfos without any signature (counted whether or not keys were given).
    pub unsigned: usize,
    pub problems: Vec<Problem>,
    /// Leftovers of killed uploads (not problems: no narinfo names them; the next push removes
    /// those older than [`DEBRIS_AGE`](crate::store::DEBRIS_AGE)). Listed when the whole cache
    /// is verified.
    pub debris: Vec<crate::store::Debris>,
}

impl VerifyReport {
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Verifies `paths` and their closures, or the whole cache when `paths` is empty.
///
/// ```
/// # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
/// # use std::sync::Arc;
/// # use cachecore::{ops::{NoProgress, PushOptions}, store_path::StoreDir};
/// use cachecore::{error::ErrorKind, ops, store::BinaryCache};
/// # let src = tempfile::tempdir().unwrap();
/// # std::fs::write(src.path().join("hello"), "hello, world\n").unwrap();
/// let cache = BinaryCache::open("memory://").unwrap();
/// # let (path, _) = ops::push_add(&cache, &StoreDir::default(), src.path(), "hello",
/// #     &PushOptions::default(), Arc::new(NoProgress)).await.unwrap();
/// let opts = ops::VerifyOptions::default();
/// assert!(ops::verify(&cache, &[], &opts).await.unwrap().is_ok());
/// // Lose the NAR of `path` (pushed above): the whole-cache check finds it.
/// let info = cache.narinfo(&path).await.unwrap().unwrap();
/// cache.objects().delete(&info.url).await.unwrap();
/// let report = ops::verify(&cache, &[], &opts).await.unwrap();
/// assert_eq!((report.checked, report.problems.len()), (1, 1));
/// assert_eq!(report.problems[0].kind(), ErrorKind::Corrupt);
/// # });
/// ```
pub async fn verify(
    cache: &BinaryCache,
    paths: &[StorePath],
    opts: &VerifyOptions,
) -> Result<VerifyReport, OpError> {
    super::require_cache_info(cache).await?;
    let mut report = VerifyReport::default();
    let start: Vec<Start> = if paths.is_empty() {
        let hashes: Vec<String> = cache.list_narinfo_hashes().try_collect().await?;
        hashes.into_iter().map(Start::HashPart).collect()
    } else {
        paths.iter().cloned().map(Start::Path).collect()
    };
    // Named paths: their closures; the whole cache: every narinfo once, as listed.
    let walked = graph::walk(cache, start, !paths.is_empty()).await?;
    for absent in walked.absent {
        report.problems.push(Problem::MissingNarInfo {
            key: format!("{}.narinfo", absent.hash_part),
        });
    }
    for error in walked.unreadable {
        match error {
            StoreError::BadNarInfo { key, source, .. } => report
                .problems
                .push(Problem::BadNarInfo { key, error: source }),
            // Hostile or damaged objects: a problem of this cache, not a failure to check.
            error => report.problems.push(Problem::UnusableNarInfo {
                key: error.key().unwrap_or("a narinfo").to_owned(),
                error,
            }),
        }
    }
    let infos = walked.found;
    let present: HashSet<StorePath> = infos.iter().map(|i| i.store_path.clone()).collect();
    report.checked = infos.len();
    report.unsigned = infos.iter().filter(|i| i.signatures.is_empty()).count();

    // Closure completeness and signatures.
    for info in &infos {
        let subject = info.store_dir.full_path(&info.store_path);
        for r in &info.references {
            if !present.contains(r) {
                report.problems.push(Problem::MissingReference {
                    path: subject.clone(),
                    reference: info.store_dir.full_path(r),
                });
            }
        }
        if !opts.trusted_keys.is_empty() && check_trusted(info, &opts.trusted_keys).is_err() {
            report.problems.push(Problem::Untrusted {
                path: subject.clone(),
                // Key names are the cache's text: a few, each cut short.
                found: info
                    .signatures
                    .iter()
                    .take(5)
                    .map(|s| crate::untrusted::excerpt(s.split(':').next().unwrap_or("")))
                    .collect(),
            });
        }
    }

    // NAR objects: sizes and hashes; listings and frame digests against them.
    let checks: Vec<NarCheck> = futures::stream::iter(
        infos
            .iter()
            .map(|info| check_nar(cache, info, &opts.trusted_keys)),
    )
    .buffer_unordered(opts.jobs.max(1))
    .collect()
    .await;
    for check in checks {
        let path = check.subject;
        if let Some(found) = check.untrusted_frames {
            report.problems.push(Problem::UntrustedFrames {
                path: path.clone(),
                found,
            });
        }
        for why in check.frames {
            report.problems.push(Problem::BadFrames {
                path: path.clone(),
                why,
            });
        }
        match check.nar {
            Ok(Some(m)) => report.problems.push(Problem::BadListing {
                path,
                why: format!("does not describe its NAR: {m}"),
            }),
            Ok(None) => {
                if let Some(why) = check.listing {
                    report.problems.push(Problem::BadListing { path, why });
                }
            }
            Err(e) => report.problems.push(Problem::from_nar_check(path, e)?),
        }
    }
    report.problems.sort_by(|a, b| a.subject().cmp(b.subject()));
    if paths.is_empty() {
        report.debris = cache.debris().await?;
    }
    Ok(report)
}

/// What [`check_nar`] found for one path.
struct NarCheck {
    subject: String,
    /// The NAR's failure, or where the listing (when there is one) differs from it.
    nar: Result<Option<ListingMismatch>, OpError>,
    /// Why the listing could not be checked (it cannot be read, or does not parse).
    listing: Option<String>,
    /// What is wrong with the frame digests, a sentence each.
    frames: Vec<String>,
    /// With trusted keys, when no `FramesSig` is by one of them: the key names it has.
    untrusted_frames: Option<Vec<String>>,
}

/// Reads the NAR of `info` whole, checking it against the narinfo, and on the way the path's
/// listing when the cache has one, and the frame digests when the narinfo names some (each
/// frame hashed as the object streams past: one read of the object).
async fn check_nar(cache: &BinaryCache, info: &NarInfo, trusted_keys: &[PublicKey]) -> NarCheck {
    let subject = info.store_dir.full_path(&info.store_path);
    let failed = |e: OpError| NarCheck {
        subject: subject.clone(),
        nar: Err(e),
        listing: None,
        frames: Vec::new(),
        untrusted_frames: None,
    };
    let (json, unusable) = match cache.listing_bytes(&info.store_path).await {
        Ok(json) => (json, None),
        Err(e) if e.kind() == crate::error::ErrorKind::Corrupt => {
            (None, Some(format!("cannot be read: {e}")))
        }
        Err(e) => return failed(e.into()),
    };
    let (listing, unusable) = match json.as_deref().map(Listing::parse) {
        Some(Ok(listing)) => (Some(listing), unusable),
        Some(Err(e)) => (None, Some(format!("does not parse: {e}"))),
        None => (None, unusable),
    };
    let mut frames = match frames_before_nar(cache, info, trusted_keys, json.as_deref()).await {
        Ok(frames) => frames,
        Err(e) => return failed(e),
    };
    let name = subject.clone();
    let consume = move |nar: &mut dyn std::io::Read| match listing {
        Some(listing) => listing_describes(&listing, name, nar).map(Result::err),
        None => std::io::copy(nar, &mut std::io::sink())
            .map(|_| None)
            .map_err(|e| OpError::io("cannot read the NAR", e)),
    };
    let nar = match frames.streamed.take() {
        None => with_nar(cache, info, consume).await,
        Some(streamed) => {
            let streamed = Arc::new(Mutex::new(streamed));
            let tap = streamed.clone();
            let observe =
                move |bytes: &[u8]| tap.lock().unwrap_or_else(|p| p.into_inner()).update(bytes);
            match cache.nar_observed(info, observe).await {
                Err(e) => Err(e.into()),
                Ok((reader, fed)) => {
                    let nar = tokio::task::spawn_blocking(move || consume_checked(reader, consume))
                        .await
                        .map_err(join_error)
                        .and_then(|r| r);
                    // The task ends with the object (read to its end for the frames' sake
                    // even when the NAR check stopped early), and drops `observe` with it.
                    let whole = fed.await.unwrap_or(false);
                    if let Ok(streamed) = Arc::try_unwrap(streamed) {
                        let streamed = streamed.into_inner().unwrap_or_else(|p| p.into_inner());
                        let verdict = if whole {
                            streamed.finish()
                        } else {
                            streamed.finish_early()
                        };
                        frames.problems.extend(verdict.err());
                    }
                    nar
                }
            }
        }
    };
    NarCheck {
        subject,
        nar,
        listing: unusable,
        frames: frames.problems,
        untrusted_frames: frames.untrusted,
    }
}

/// What [`frames_before_nar`] found.
#[derive(Default)]
struct FramesCheck {
    problems: Vec<String>,
    untrusted: Option<Vec<String>>,
    /// The check of the NAR object's frames, to run as it is read.
    streamed: Option<StreamedFrames>,
}

/// The checks of `info`'s frame digests that need no NAR byte: the claim parses, is signed by
/// a trusted key (when keys are given), its frame digests object is there, hashes to
/// `FramesHash` and parses, and `listing` (the `.ls` as stored) hashes to `ListingHash`. An
/// error only when the cache could not be read.
async fn frames_before_nar(
    cache: &BinaryCache,
    info: &NarInfo,
    trusted_keys: &[PublicKey],
    listing: Option<&[u8]>,
) -> Result<FramesCheck, OpError> {
    let mut check = FramesCheck::default();
    let fields = [FRAMES_HASH_FIELD, LISTING_HASH_FIELD, FRAMES_SIG_FIELD];
    if !info.extra.iter().any(|(k, _)| fields.contains(&k.as_str())) {
        return Ok(check);
    }
    let Some(claim) = FramesClaim::of(info) else {
        check.problems.push(
            "its frame digest fields are unusable: FramesHash is missing, or FramesHash or \
             ListingHash is repeated or not a sha256 hash"
                .into(),
        );
        return Ok(check);
    };
    if !trusted_keys.is_empty() && FramesClaim::trusted(info, trusted_keys).is_none() {
        check.untrusted = Some(
            info.extra
                .iter()
                .filter(|(k, _)| k == FRAMES_SIG_FIELD)
                .take(5)
                .map(|(_, v)| crate::untrusted::excerpt(v.split(':').next().unwrap_or("")))
                .collect(),
        );
    }
    if let Some(expected) = &claim.listing {
        match listing {
            None => check.problems.push(format!(
                "its listing is missing, but the narinfo's ListingHash names one ({expected})"
            )),
            Some(bytes) => {
                let actual = Hash::digest(expected.algo(), bytes);
                if actual != *expected {
                    check.problems.push(format!(
                        "its listing hashes to {actual}, but the narinfo's ListingHash is \
                         {expected}"
                    ));
                }
            }
        }
    }
    let key = crate::store::layout::frame_digests(&claim.frames);
    let bytes = match cache
        .frame_digests(&claim.frames, MAX_FRAME_DIGESTS_BYTES)
        .await
    {
        Ok(Some(bytes)) => bytes,
        Ok(None) => {
            check.problems.push(format!(
                "its frame digests {key} (the narinfo's FramesHash) are missing from the cache"
            ));
            return Ok(check);
        }
        Err(e) if e.kind() == crate::error::ErrorKind::Corrupt => {
            check
                .problems
                .push(format!("its frame digests cannot be read: {e}"));
            return Ok(check);
        }
        Err(e) => return Err(e.into()),
    };
    let actual = Hash::digest(claim.frames.algo(), &bytes);
    if actual != claim.frames {
        check.problems.push(format!(
            "its frame digests {key} hash to {actual}, not to the narinfo's FramesHash"
        ));
        return Ok(check);
    }
    let digests = match FrameDigests::parse(&bytes) {
        Ok(d) => d,
        Err(why) => {
            check
                .problems
                .push(format!("its frame digests {key} do not parse: {why}"));
            return Ok(check);
        }
    };
    if info.compression_or_default() != Compression::Zstd.name() {
        check.problems.push(format!(
            "it has frame digests, but its NAR is compressed with {}, not seekable zstd",
            crate::untrusted::excerpt(info.compression_or_default())
        ));
        return Ok(check);
    }
    check.streamed = Some(StreamedFrames::new(digests));
    Ok(check)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::ops::{self, NoProgress, PushOptions};
    use crate::seekable::{SeekTable, SeekableOptions, SeekableWriter};
    use crate::signing::{SecretKey, Signer};
    use crate::store::objects::WriteMode;
    use crate::store_path::StoreDir;

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    }

    /// A cache holding one path of a three-frame NAR, pushed with `key` (frame digests, a
    /// listing and a `FramesSig`); the cache, its narinfo and the tree.
    fn framed(
        rt: &tokio::runtime::Runtime,
        key: &Arc<SecretKey>,
    ) -> (BinaryCache, NarInfo, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let big = cachecore_testkit::data::pseudo_random_bytes(9 << 20, 19);
        std::fs::write(dir.path().join("big"), big).unwrap();
        std::fs::write(dir.path().join("small"), b"small").unwrap();
        let cache = BinaryCache::open("memory://").unwrap();
        let opts = PushOptions {
            signers: vec![key.clone() as Arc<dyn Signer>],
            ..PushOptions::default()
        };
        let (path, _) = rt
            .block_on(ops::push_add(
                &cache,
                &StoreDir::default(),
                dir.path(),
                "framed",
                &opts,
                Arc::new(NoProgress),
            ))
            .unwrap();
        let info = rt.block_on(cache.narinfo(&path)).unwrap().unwrap();
        assert!(FramesClaim::trusted(&info, &[key.public_key()]).is_some());
        (cache, info, dir)
    }

    /// The problems `verify` reports, as printed.
    fn problems(
        rt: &tokio::runtime::Runtime,
        cache: &BinaryCache,
        keys: &[&Arc<SecretKey>],
    ) -> Vec<String> {
        let opts = VerifyOptions {
            trusted_keys: keys.iter().map(|k| k.public_key()).collect(),
            ..VerifyOptions::default()
        };
        let report = rt.block_on(verify(cache, &[], &opts)).unwrap();
        assert_eq!(report.checked, 1);
        report.problems.iter().map(ToString::to_string).collect()
    }

    fn frames_key(info: &NarInfo) -> String {
        crate::store::layout::frame_digests(&FramesClaim::of(info).unwrap().frames)
    }

    /// The object as stored, and a narinfo whose `FileHash` and `FileSize` (which no
    /// signature covers) say `object` is its NAR object.
    fn replace_object(
        rt: &tokio::runtime::Runtime,
        cache: &BinaryCache,
        info: &NarInfo,
        object: Vec<u8>,
    ) {
        let mut info = info.clone();
        info.file_hash = Some(Hash::digest(crate::hash::HashAlgo::Sha256, &object));
        info.file_size = Some(object.len() as u64);
        rt.block_on(cache.put_nar(&info.url, object.into()))
            .unwrap();
        rt.block_on(cache.put_narinfo(&info)).unwrap();
    }

    #[test]
    fn a_sound_framed_path_passes_with_and_without_keys() {
        let rt = rt();
        let key = Arc::new(SecretKey::generate("frames-1").unwrap());
        let (cache, _, _dir) = framed(&rt, &key);
        assert_eq!(problems(&rt, &cache, &[&key]), Vec::<String>::new());
        assert_eq!(problems(&rt, &cache, &[]), Vec::<String>::new());
    }

    #[test]
    fn a_flipped_frame_byte_is_reported_by_frame_even_when_file_hash_was_fixed_up() {
        let rt = rt();
        let key = Arc::new(SecretKey::generate("frames-1").unwrap());
        let (cache, info, _dir) = framed(&rt, &key);
        let mut object = rt
            .block_on(cache.objects().get_bytes(&info.url))
            .unwrap()
            .unwrap()
            .to_vec();
        let table = SeekTable::parse_from_tail(&object).unwrap();
        let second = table.frames()[1].compressed_range();
        object[second.start as usize + 100] ^= 0x55;
        replace_object(&rt, &cache, &info, object);
        let found = problems(&rt, &cache, &[&key]);
        let path = info.store_dir.full_path(&info.store_path);
        let expected = format!(
            "{path}: frame 1 of its NAR object (bytes {}..{}) does not match its digest in the \
             frame digests",
            second.start, second.end
        );
        assert!(found.contains(&expected), "{found:#?}");
        // The NAR itself fails too (the frame's checksum), but the frame check does not
        // depend on it: the object was still read to its end, once.
        assert!(found.len() >= 2, "{found:#?}");
    }

    #[test]
    fn a_nar_object_swapped_for_other_frames_of_the_same_nar_is_reported() {
        // What a bucket can do without breaking Nix's signature (FileHash and FileSize are not
        // in the fingerprint): the same NAR, framed differently. The NAR checks pass; only
        // the frame digests tell.
        let rt = rt();
        let key = Arc::new(SecretKey::generate("frames-1").unwrap());
        let (cache, info, dir) = framed(&rt, &key);
        let mut nar = Vec::new();
        crate::nar::dump(dir.path(), &mut nar).unwrap();
        let opts = SeekableOptions {
            frame_size: 1 << 20,
            threads: 1,
            ..SeekableOptions::default()
        };
        let mut w = SeekableWriter::new(Vec::new(), opts).unwrap();
        std::io::Write::write_all(&mut w, &nar).unwrap();
        let (object, _) = w.finish().unwrap();
        replace_object(&rt, &cache, &info, object);
        let found = problems(&rt, &cache, &[&key]);
        let path = info.store_dir.full_path(&info.store_path);
        assert_eq!(found.len(), 1, "{found:#?}");
        assert!(
            found[0].starts_with(&format!(
                "{path}: its frame digests describe other frames than its NAR object"
            )),
            "{found:#?}"
        );
    }

    #[test]
    fn lying_or_missing_frame_digests_are_reported() {
        let rt = rt();
        let key = Arc::new(SecretKey::generate("frames-1").unwrap());
        let (cache, info, _dir) = framed(&rt, &key);
        let path = info.store_dir.full_path(&info.store_path);
        let key_name = frames_key(&info);
        let good = rt
            .block_on(cache.objects().get_bytes(&key_name))
            .unwrap()
            .unwrap();
        // Lying: one digest changed.
        let mut lying = good.to_vec();
        let last = lying.len() - 1;
        lying[last] ^= 1;
        rt.block_on(
            cache
                .objects()
                .put(&key_name, lying.into(), WriteMode::Overwrite),
        )
        .unwrap();
        let found = problems(&rt, &cache, &[&key]);
        assert_eq!(
            found,
            [format!(
                "{path}: its frame digests {key_name} hash to {}, not to the narinfo's \
                 FramesHash",
                {
                    let b = rt
                        .block_on(cache.objects().get_bytes(&key_name))
                        .unwrap()
                        .unwrap();
                    Hash::digest(crate::hash::HashAlgo::Sha256, &b)
                }
            )]
        );
        // Missing.
        rt.block_on(cache.objects().delete(&key_name)).unwrap();
        let found = problems(&rt, &cache, &[&key]);
        assert_eq!(
            found,
            [format!(
                "{path}: its frame digests {key_name} (the narinfo's FramesHash) are missing \
                 from the cache"
            )]
        );
        // Signed lies: the key holder signed digests of other frames. They hash to the
        // FramesHash; the object disagrees, frame by frame.
        let digests = FrameDigests::parse(&good).unwrap();
        let mut frames = digests.frames().to_vec();
        frames[2].sha256[0] ^= 1;
        let table = {
            let object = rt
                .block_on(cache.objects().get_bytes(&info.url))
                .unwrap()
                .unwrap();
            SeekTable::parse_from_tail(&object).unwrap()
        };
        let sha: Vec<[u8; 32]> = frames.iter().map(|f| f.sha256).collect();
        let lies = FrameDigests::new(&table, &sha).unwrap();
        let hash = rt
            .block_on(cache.put_frame_digests(lies.to_bytes().into()))
            .unwrap();
        let mut signed_lie = info.clone();
        let mut claim = FramesClaim::of(&info).unwrap();
        claim.frames = hash;
        claim.write(&mut signed_lie, &[key.as_ref()]);
        rt.block_on(cache.put_narinfo(&signed_lie)).unwrap();
        let found = problems(&rt, &cache, &[&key]);
        let third = table.frames()[2].compressed_range();
        assert_eq!(
            found,
            [format!(
                "{path}: frame 2 of its NAR object (bytes {}..{}) does not match its digest in \
                 the frame digests",
                third.start, third.end
            )]
        );
    }

    #[test]
    fn a_frames_sig_by_another_key_is_a_problem_only_when_keys_are_given() {
        let rt = rt();
        let key = Arc::new(SecretKey::generate("frames-1").unwrap());
        let other = SecretKey::generate("other-1").unwrap();
        let (cache, info, _dir) = framed(&rt, &key);
        let mut forged = info.clone();
        FramesClaim::of(&info)
            .unwrap()
            .write(&mut forged, &[&other as &dyn Signer]);
        rt.block_on(cache.put_narinfo(&forged)).unwrap();
        let path = info.store_dir.full_path(&info.store_path);
        // The narinfo's own signature is still by `key`: only the frame digests are untrusted.
        assert_eq!(
            problems(&rt, &cache, &[&key]),
            [format!(
                "{path}: none of its FramesSig signatures (other-1) over its frame digests is \
                 by a trusted key (frame-checked reads would fetch its whole NAR)"
            )]
        );
        let report = rt
            .block_on(verify(
                &cache,
                &[],
                &VerifyOptions {
                    trusted_keys: vec![key.public_key()],
                    ..VerifyOptions::default()
                },
            ))
            .unwrap();
        assert_eq!(
            report.problems[0].kind(),
            crate::error::ErrorKind::Untrusted
        );
        assert_eq!(problems(&rt, &cache, &[]), Vec::<String>::new());
        // And a listing that is not the one ListingHash names.
        let ls = rt
            .block_on(cache.listing_bytes(&info.store_path))
            .unwrap()
            .unwrap();
        let mut other_ls = ls.to_vec();
        other_ls.push(b' ');
        rt.block_on(cache.put_listing_bytes(&info.store_path, other_ls.into()))
            .unwrap();
        let found = problems(&rt, &cache, &[]);
        assert_eq!(found.len(), 1, "{found:#?}");
        assert!(
            found[0].contains("its listing hashes to sha256:")
                && found[0].contains("but the narinfo's ListingHash is sha256:"),
            "{found:#?}"
        );
    }
}
