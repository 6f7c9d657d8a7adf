//! `verify`: check that a cache is whole — every narinfo parses, is signed by a trusted key (when
//! keys are given), has its NAR with the right sizes and hashes, and has its whole closure.

use std::collections::HashSet;
use std::fmt;

use futures::{StreamExt as _, TryStreamExt as _};

use super::browse::read_nar;
use super::pull::check_trusted;
use super::OpError;
use crate::narinfo::NarInfo;
use crate::signing::PublicKey;
use crate::store::{BinaryCache, StoreError};
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

/// One thing wrong with one object.
#[derive(Debug)]
pub struct Problem {
    /// The store path, or the object key when the narinfo itself is unreadable.
    pub subject: String,
    pub what: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.subject, self.what)
    }
}

/// The outcome of [`verify`].
#[derive(Debug, Default)]
pub struct VerifyReport {
    /// Narinfos looked at.
    pub checked: usize,
    pub problems: Vec<Problem>,
}

impl VerifyReport {
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Verifies `paths` and their closures, or the whole cache when `paths` is empty.
pub async fn verify(
    cache: &BinaryCache,
    paths: &[StorePath],
    opts: &VerifyOptions,
) -> Result<VerifyReport, OpError> {
    let mut report = VerifyReport::default();
    let mut infos: Vec<NarInfo> = Vec::new();
    let mut queue: Vec<String> = if paths.is_empty() {
        cache.list_narinfo_hashes().try_collect().await?
    } else {
        paths.iter().map(|p| p.hash_part()).collect()
    };
    let mut seen: HashSet<String> = queue.iter().cloned().collect();
    let mut present: HashSet<StorePath> = HashSet::new();
    // Fetch narinfos (following references when paths were named), recording parse failures.
    while !queue.is_empty() {
        let batch: Vec<String> = std::mem::take(&mut queue);
        let fetched: Vec<(String, Result<Option<NarInfo>, StoreError>)> =
            futures::stream::iter(batch.into_iter().map(|h| async move {
                let r = cache.narinfo_by_hash(&h).await;
                (h, r)
            }))
            .buffer_unordered(32)
            .collect()
            .await;
        for (hash, result) in fetched {
            match result {
                Ok(Some(info)) => {
                    if !paths.is_empty() {
                        for r in &info.references {
                            if seen.insert(r.hash_part()) {
                                queue.push(r.hash_part());
                            }
                        }
                    }
                    present.insert(info.store_path.clone());
                    infos.push(info);
                }
                Ok(None) => report.problems.push(Problem {
                    subject: format!("{hash}.narinfo"),
                    what: "no such narinfo in the cache".into(),
                }),
                Err(StoreError::BadNarInfo { key, source, .. }) => report.problems.push(Problem {
                    subject: key,
                    what: format!("does not parse: {source}"),
                }),
                Err(e) => return Err(e.into()),
            }
        }
    }
    report.checked = infos.len();

    // Closure completeness and signatures.
    for info in &infos {
        let subject = info.store_dir.full_path(&info.store_path);
        for r in &info.references {
            if !present.contains(r) {
                report.problems.push(Problem {
                    subject: subject.clone(),
                    what: format!(
                        "reference {} has no narinfo (the closure is incomplete)",
                        info.store_dir.full_path(r)
                    ),
                });
            }
        }
        if !opts.trusted_keys.is_empty() {
            if let Err(e) = check_trusted(info, &opts.trusted_keys) {
                report.problems.push(Problem {
                    subject: subject.clone(),
                    what: strip_subject(&e, &subject),
                });
            }
        }
    }

    // NAR objects: sizes and hashes.
    let checks: Vec<(String, Result<(), OpError>)> =
        futures::stream::iter(infos.iter().map(|info| async move {
            let subject = info.store_dir.full_path(&info.store_path);
            (subject, read_nar(cache, info, |_| Ok(())).await)
        }))
        .buffer_unordered(opts.jobs.max(1))
        .collect()
        .await;
    for (subject, result) in checks {
        if let Err(e) = result {
            report.problems.push(Problem {
                what: strip_subject(&e, &subject),
                subject,
            });
        }
    }
    report.problems.sort_by(|a, b| a.subject.cmp(&b.subject));
    Ok(report)
}

/// The error's sentence without a leading "<subject>: ".
fn strip_subject(e: &OpError, subject: &str) -> String {
    let text = e.to_string();
    text.strip_prefix(subject)
        .and_then(|t| t.strip_prefix(": "))
        .map(str::to_owned)
        .unwrap_or(text)
}
