//! Garbage collection of a binary cache: roots published as objects, a pure planner, and an
//! applier that deletes in an order that never breaks a closure.
//!
//! - [`roots`]: one object per root, `gcroots/<host>/<name>`, a versioned text body naming
//!   store paths (a series keeps its last N revisions); removed roots go to
//!   `gctrash/<host>/<name>` with the time they left, restorable.
//! - [`plan`](mod@plan): ([`Snapshot`] of narinfo summaries on integer ids, roots, now,
//!   [`PlanOptions`]) → [`Plan`]. Pure and deterministic.
//! - [`collect`] (with [`scan`] and [`apply`](fn@apply)): reads the cache, plans, deletes.
//!
//! # What is garbage
//!
//! *Live* is the closure (by `References`) of the paths the roots name, of the paths whose
//! narinfo was written within `older_than`, and of every narinfo that does not parse (those are
//! reported and never deleted). With `only_trashed`, also of every path no trashed root reaches:
//! only what trashed roots reach, and nothing else keeps, goes.
//!
//! *Garbage*: narinfos that are not live; the NARs, listings (`<hash>.ls`) and build logs
//! (`log/<Deriver>`) of those that no live narinfo names (a NAR is named by its content and can
//! be shared by several narinfos: it goes only when none that stays names it); and *orphans*,
//! NARs and listings no narinfo names at all (killed pushes, including streamed
//! `nar/<NarHash>-<unique>` objects) once older than `failed_uploads_older_than` — none while
//! some narinfo does not parse, since what it names is unknown.
//!
//! A run with no root and no `older_than` would collect everything: it is refused
//! ([`PlanError::EmptyRoots`]) unless `allow_empty_roots`. A root key or body that does not
//! parse stops the run before anything is deleted: a broken root must never turn into mass
//! deletion. A root naming a path the cache lacks is counted, not fatal. A cache whose
//! `nix-cache-info` names another store directory is refused.
//!
//! # Order, and why a killed run breaks nothing
//!
//! 1. The tombstone is written first: `.cachecore/gc/<time>-<unique>`, naming the narinfos
//!    this run unpublishes and the objects (NARs, listings, logs) that no remaining narinfo
//!    will name.
//! 2. The narinfo keys are listed again: a narinfo written or rewritten since the scan (its
//!    listed version — ETag, size, mtime to the second ([`fingerprint`]) — changed) keeps itself
//!    and its closure.
//! 3. Narinfos are deleted referrers before references, each after a HEAD showing it is still
//!    the version the scan read (else it and its closure are kept). At every moment a narinfo
//!    still visible is live (its closure untouched) or dead with its dead referrers already
//!    gone and its references not yet deleted; so every visible narinfo has its NAR and its
//!    whole closure. The first failed delete stops the run: nothing it references goes after
//!    it.
//! 4. The narinfo keys are listed again (as in 2), then objects are deleted: those of
//!    tombstones older than the grace, orphans, and with grace 0 (`--force`) this run's. Each
//!    is kept if a narinfo names it now, and a NAR is kept if a HEAD shows it was rewritten
//!    since the listing (a push uploaded the same content again). During the grace a client
//!    that read a narinfo just before it was deleted, or a Nix whose narinfo disk cache still
//!    holds it, still gets its NAR.
//! 5. Tombstones whose objects were all handled are deleted (none if a delete failed).
//!
//! A run killed after 1 leaves a tombstone whose objects are still named (the next run keeps
//! them); killed during 3, a cache whose visible narinfos are all complete; killed during 4,
//! objects already unnamed and a tombstone the next run finishes.
//!
//! # Pushes running beside a GC: what is covered and what is not
//!
//! No database and no compare-and-swap (Garage has none; a local directory has create-only
//! only): safety rests on order, re-checks and one rule for pushes.
//!
//! **The push rule** (checked by this module's model test, **not yet followed by `cachecore
//! push`, `copy` or `serve`**): just before writing each narinfo, a push checks that its NAR
//! is there, that the narinfos of its references are there, and that no GC tombstone names them
//! ([`apply::condemned_narinfos`]); if one is, it uploads that path again (or gives up). A push
//! running longer than half the smaller of the grace and `failed_uploads_older_than` stops
//! before writing another narinfo (what it uploaded first may be collected by then). With
//! that rule, a push whose check came before the tombstone has written its narinfo by the time
//! the GC lists again (step 2; [`GcOptions::settle`] is the wait that makes "by the time" hold
//! for real pushes, zero today), so its references are kept; a push whose check came after sees
//! the tombstone. What is left are one-request windows: between a push's check and its write,
//! and between the GC's HEAD and its delete.
//!
//! **Today**, with pushes that do not follow the rule: a push that finds a path present, and
//! publishes a narinfo referring to it while a GC deletes it, leaves a broken closure. It cannot
//! happen to paths that are live for the GC (rooted, or pushed within `--older-than`), nor to
//! paths the push uploads itself (their narinfos are rewritten, and step 2 or the HEAD in step
//! 3 keeps them). NAR deletions are covered as described in 4, except for a push that uploaded
//! a NAR and writes its narinfo only after the grace or `failed_uploads_older_than` ran out
//! (the model test found this one; the push rule's time limit closes it). Push leases
//! (objects naming what a push will reference, treated as roots) are not built.
//!
//! **Readers** are covered for the grace after a narinfo is deleted.
//!
//! # What this does not do yet
//!
//! The scan lists the cache's `*.narinfo` keys and reads every narinfo once: there is no push
//! index yet (`index/…`), so a run costs one GET per path. No leases, no `roots sync`, no
//! access records, no `--max-size`, no realisations (`realisations/*.doi` are never deleted).
//! Abandoned multipart uploads cannot be listed through object_store: set a bucket lifecycle
//! rule (S3: `AbortIncompleteMultipartUpload` with `DaysAfterInitiation: 1`; Garage:
//! `garage bucket` lifecycle `AbortIncompleteMultipartUpload` through its S3 API, the same
//! `PutBucketLifecycleConfiguration` call).

pub mod apply;
pub mod plan;
pub mod roots;

#[cfg(test)]
mod model_tests;

pub use apply::{apply, collect, scan, Applier, GcError, GcOptions, GcReport, Scan};
pub use plan::{
    fingerprint, plan, ObjectRef, PathId, PathSummary, Plan, PlanError, PlanOptions, RootIds,
    Snapshot, TombstoneSummary, DEFAULT_FAILED_UPLOADS_OLDER_THAN, DEFAULT_GRACE,
};
pub use roots::{Root, RootBody, RootError};

/// Parses a duration as the GC options take it: a whole number and a unit, `s`, `m`, `h`, `d`
/// or `w` (`30d`, `6h`, `90m`).
///
/// ```
/// use std::time::Duration;
/// use cachecore::gc::parse_duration;
/// assert_eq!(parse_duration("30d").unwrap(), Duration::from_secs(30 * 86400));
/// assert_eq!(parse_duration("6h").unwrap(), Duration::from_secs(6 * 3600));
/// assert!(parse_duration("6").is_err() && parse_duration("-1d").is_err());
/// ```
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let unit_at = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("{text:?} has no unit: write e.g. 30d, 6h, 90m, 45s or 2w"))?;
    let (number, unit) = text.split_at(unit_at);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} does not start with a whole number (e.g. 30d)"))?;
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        "w" => 7 * 86400,
        _ => return Err(format!("{text:?}: unknown unit {unit:?} (s, m, h, d or w)")),
    };
    n.checked_mul(scale)
        .map(std::time::Duration::from_secs)
        .ok_or_else(|| format!("{text:?} is too long"))
}
