//! `verify`: check that a cache is whole — every narinfo parses, is signed by a trusted key (when
//! keys are given), has its NAR with the right sizes and hashes, and has its whole closure; and
//! that every `.ls` listing describes its NAR (a listing is not covered by any signature, so a
//! forged one would otherwise pass).

use std::collections::HashSet;
use std::fmt;

use futures::{StreamExt as _, TryStreamExt as _};

use super::browse::{check_listing, with_nar};
use super::pull::check_trusted;
use super::OpError;
use crate::graph::{self, Start};
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
            | Problem::BadListing { path, .. } => path,
        }
    }

    /// [`Untrusted`](crate::error::ErrorKind::Untrusted) for a missing signature,
    /// [`Corrupt`](crate::error::ErrorKind::Corrupt) for everything else: the cache is bad.
    pub fn kind(&self) -> crate::error::ErrorKind {
        match self {
            Problem::Untrusted { .. } => crate::error::ErrorKind::Untrusted,
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

    // NAR objects: sizes and hashes; listings against them.
    let checks: Vec<NarCheck> =
        futures::stream::iter(infos.iter().map(|info| check_nar(cache, info)))
            .buffer_unordered(opts.jobs.max(1))
            .collect()
            .await;
    for check in checks {
        let path = check.subject;
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
}

/// Reads the NAR of `info` whole, checking it against the narinfo, and the path's listing
/// against it on the way when the cache has one.
async fn check_nar(cache: &BinaryCache, info: &NarInfo) -> NarCheck {
    let subject = info.store_dir.full_path(&info.store_path);
    let (listing, unusable) = match cache.listing_bytes(&info.store_path).await {
        Ok(None) => (None, None),
        Ok(Some(json)) => match Listing::parse(&json) {
            Ok(listing) => (Some(listing), None),
            Err(e) => (None, Some(format!("does not parse: {e}"))),
        },
        Err(e) if e.kind() == crate::error::ErrorKind::Corrupt => {
            (None, Some(format!("cannot be read: {e}")))
        }
        Err(e) => {
            return NarCheck {
                subject,
                nar: Err(e.into()),
                listing: None,
            }
        }
    };
    let nar = match listing {
        Some(listing) => check_listing(cache, info, listing).await.map(Result::err),
        None => {
            with_nar(cache, info, |nar| {
                std::io::copy(nar, &mut std::io::sink())
                    .map(|_| None)
                    .map_err(|e| OpError::io("cannot read the NAR", e))
            })
            .await
        }
    };
    NarCheck {
        subject,
        nar,
        listing: unusable,
    }
}
