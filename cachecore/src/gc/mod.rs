//! Garbage collection of a binary cache: roots published as objects, a pure planner, and an
//! applier that deletes in an order that never breaks a closure.
//!
//! - [`roots`]: one object per root, `gcroots/<host>/<name>`, a versioned text body naming
//!   store paths (a series keeps its last N revisions); removed roots go to
//!   `gctrash/<host>/<name>` with the time they left, restorable.
//! - [`plan`](mod@plan): ([`Snapshot`] of narinfo summaries on integer ids, roots, now,
//!   [`PlanOptions`]) → [`Plan`]. Pure and deterministic.
//! - [`collect`] (with [`scan`] and [`apply`](fn@apply)): reads the cache, plans, deletes.
//! - [`why`]: what a plan does with one path, and what keeps it (`gc --why`).
//!
//! # What is garbage
//!
//! *Live* is the closure (by `References`) of the paths the roots name, of the paths leases
//! of writers in progress name ([`lease`]), of the paths whose narinfo was written within
//! `older_than` (with `max_size`, of the newest others that fit), and of every narinfo that does
//! not parse (reported, and deleted only with `delete_unparseable`). With `only_trashed`, also of every path no trashed root reaches:
//! only what trashed roots reach, and nothing else keeps, goes.
//!
//! *Garbage*: narinfos that are not live; the NARs, frame digests (`nar/<nix32>.frames`, named
//! by a narinfo's `FramesHash`), listings (`<hash>.ls`) and build logs (`log/<Deriver>`) of
//! those that no live narinfo names (a NAR or its frame digests are named by their content and
//! can be shared by several narinfos: they go only when none that stays names them, after the
//! same grace); and *orphans*, NARs, frame digests and listings no narinfo names at all (killed
//! pushes, including streamed `nar/<NarHash>-<unique>` objects) once older than
//! `failed_uploads_older_than` — no NAR or frame digests while some narinfo does not parse,
//! since what it names is unknown. A frame digests object a GC deletes too early costs a reader
//! a whole-NAR read (it falls back to the NarHash), never a broken closure.
//!
//! A run with no root, no `older_than` and no `max_size` would collect everything: it is refused
//! ([`PlanError::EmptyRoots`]) unless `allow_empty_roots`. A root key or body that does not
//! parse stops the run before anything is deleted: a broken root must never turn into mass
//! deletion. A root naming a path the cache lacks is counted, not fatal. A cache whose
//! `nix-cache-info` names another store directory is refused.
//!
//! # Order, and why a killed run breaks nothing
//!
//! 1. The tombstone is written first: `.cachecore/gc/<time>-<unique>`, naming the narinfos
//!    this run unpublishes and the objects (NARs, frame digests, listings, logs) that no
//!    remaining narinfo will name.
//! 2. The narinfo keys and leases are listed again: a narinfo written or rewritten since the
//!    scan (its listed version — ETag, size, mtime to the second ([`fingerprint`]) — changed),
//!    and each lease written since, keep themselves and their closures.
//! 3. Narinfos are deleted referrers before references, each after a HEAD showing it is still
//!    the version the scan read (else it and its closure are kept). On S3 and GCS a version is
//!    the content's MD5 and a time to the second, so a rewrite of the same bytes within the
//!    second the narinfo was listed in is not seen: there a narinfo listed in the second the
//!    store wrote the tombstone in (or later) is kept as if rewritten — a writer that found it
//!    condemned rewrites it after the tombstone, so a rewrite missed otherwise is of one of
//!    those. At every moment a narinfo
//!    still visible is live (its closure untouched) or dead with its dead referrers already
//!    gone and its references not yet deleted; so every visible narinfo has its NAR and its
//!    whole closure. The first failed delete stops the run: nothing it references goes after
//!    it.
//! 4. The narinfo keys are listed again (as in 2), then objects are deleted: those of
//!    tombstones older than the grace, orphans, and with grace 0 (`--force`) this run's. Each
//!    is kept if a narinfo names it now, and a NAR or frame digests object is kept if a HEAD
//!    shows it was rewritten since the listing (a push uploaded the same content again). During the grace a client
//!    that read a narinfo just before it was deleted, or a Nix whose narinfo disk cache still
//!    holds it, still gets its NAR.
//! 5. Tombstones whose objects were all handled are deleted (none if a delete failed).
//!
//! A run killed after 1 leaves a tombstone whose objects are still named (the next run keeps
//! them); killed during 3, a cache whose visible narinfos are all complete; killed during 4,
//! objects already unnamed and a tombstone the next run finishes.
//!
//! # Pushes running beside a GC
//!
//! No database and no compare-and-swap: Garage has none, a local directory has create-only
//! only, S3 has conditional writes but not everywhere. What the argument below uses of a
//! backend: a write, once acknowledged, is seen by every later read and listing (S3 since
//! 2020; Garage, whose metadata is read and written by quorum; a local directory; memory);
//! create-only where a name must be new (leases, tombstones) is not needed for safety, since
//! every such name carries 64 random bits. Writers (`push`, `copy`, the proxy's fills, `serve`
//! taking uploads) follow **the push rule** ([`lease`], [`PushGuard`]):
//!
//! 1. Write a **lease** `gcleases/<expires>-<unique>` naming every path the transfer may
//!    publish or reference (its closure; `serve`: the uploaded narinfo's path and
//!    references), *then* list the GC tombstones once. A path a tombstone names whose narinfo
//!    is not newer than the tombstone is *condemned*.
//! 2. Decide what to upload: paths without a narinfo, and condemned ones (uploaded again,
//!    which writes a new version of their narinfo).
//! 3. Just before each narinfo: **re-check** that its NAR is there and younger than
//!    [`lease::MAX_UNPUBLISHED_NAR_AGE`], that the narinfo of each reference the transfer does
//!    not write itself is there and not condemned (`serve`, which cannot upload it again,
//!    writes a condemned reference's narinfo again unchanged, and checks it is still there),
//!    and that the lease has at least half its time left (it is renewed at half). A failed
//!    re-check fails that path ("run the push again").
//! 4. Release the lease (a killed writer's expires).
//!
//! A GC honours every lease that has not expired (plus [`lease::CLOCK_SKEW`]): read before
//! the narinfos are listed, and again when it lists the cache after writing its tombstone and
//! before its first delete; the paths leases name, and their closures, are live.
//!
//! **Why no published narinfo loses a reference.** Take a writer W with lease L (written at
//! t<sub>L</sub>) that publishes narinfo N referring to X, and a GC G that deletes X's narinfo.
//! G wrote its tombstone T (naming X) before its relist R, and deletes only after R.
//! - *t<sub>L</sub> before R*: R sees L, which names X (X is in the closure W publishes), so G
//!   keeps X and its closure. L does not expire while W can still publish (3).
//! - *t<sub>L</sub> after R*: then T was written before W listed the tombstones (1), so W saw X
//!   condemned: W uploads X again (2), writing a narinfo G's HEAD before its delete sees as
//!   changed, so G keeps X and its closure; `serve` rescues X the same way (3). A GC that
//!   finished before W listed the tombstones deleted X before W's missing check, which then
//!   uploads X.
//! - Paths W writes itself: a GC that read them read them after W wrote L, so its relist (later
//!   still) sees L.
//!
//! **NARs.** A NAR a writer uploaded is named by no narinfo until the writer publishes; a GC
//! takes it (an orphan) only once older than `failed_uploads_older_than` (a day by default),
//! and the re-check refuses a NAR older than half that. A NAR named only by narinfos a GC
//! unpublishes waits in the tombstone for the grace (two days by default, longer than any
//! lease) and is deleted only if nothing names it then and it was not written again since.
//! With `--force` (grace 0) those NARs go in the same run: a writer that uploaded the same
//! content (shared by another path) before the GC read the cache can lose it. `--force` is for
//! caches no one writes to.
//!
//! **What is left** are windows of one request, not closed without compare-and-swap: a GC's
//! HEAD of a narinfo and its delete straddling a writer's upload of that path again and the
//! re-check of its referrer; clocks further apart than [`lease::CLOCK_SKEW`]; a writer stopped
//! (not killed) for longer than a lease between its re-check and its write.
//!
//! **Checked by the model test** (`model_tests`): thousands of seeded schedules interleave the
//! steps of pushes, `serve` uploads and GC runs (any of them killed) over an in-memory cache,
//! the writers using the real [`PushGuard`], and assert after every step that every visible
//! narinfo has its NAR and its references' narinfos. Without the lease, or without the
//! re-check, the same schedules break a closure (two tests say so).
//!
//! **Readers** are covered for the grace after a narinfo is deleted.
//!
//! # Reading the cache: the push index
//!
//! The scan lists the cache once (every key) and reads the push index
//! ([`crate::store::index`]): a path whose index entry still describes its narinfo is not
//! read; every other narinfo is read once (caches written by plain `nix copy`, a damaged or
//! stale index, and — while the cache has any `.frames` object — entries written before the
//! index recorded frame digests; `cachecore index rebuild` writes them anew). An index entry that does not parse, or names a NAR the cache does not have
//! and disagrees with its narinfo, is ignored for that path (the narinfo wins) and reported
//! ([`GcReport::index_problems`]).
//!
//! Memory stays near what the planner needs: a listed narinfo is kept as its id, time and
//! version (24 bytes); index objects (at most [`crate::store::index::ENTRIES_PER_OBJECT`]
//! entries each, as a compaction writes them) are read one at a time and parsed straight into
//! the [`Snapshot`] ([`Snapshot::add_index_object`], then [`Snapshot::confirm_indexed`] per
//! listed narinfo), never as whole entries; object keys are interned into one string. The
//! figures for a million paths and the requests a ten-million-path cache on S3 costs are in
//! the README's garbage collection section (`benches/gc-scale.sh`).
//!
//! # Sizes, bad narinfos, realisations
//!
//! - `max_size`: the paths not live by the rules above are taken most recently used first (by
//!   the latest use among a path and everything referring to it, so a kept path's references
//!   are kept) while the NARs of everything kept fit; the rest is garbage. A path's use is its
//!   push, or its last read where `serve --record-access` recorded one ([`access`]).
//! - `unused_for`: paths pushed or read within that long are live, with their closures.
//! - `delete_unparseable`: narinfos that do not parse are deleted too (last, and never one a
//!   live path refers to).
//! - Realisations (`realisations/*.doi`) go with their output's narinfo, or, when it is
//!   already gone, once as old as an orphan. One that does not parse is left alone.
//!
//! # Abandoned multipart uploads
//!
//! They cannot be listed through object_store: set a bucket lifecycle rule that aborts them
//! after a day. The same rule works on S3 and on Garage (which has implemented
//! `AbortIncompleteMultipartUpload` in `PutBucketLifecycleConfiguration` since 0.9):
//!
//! ```text
//! $ cat lifecycle.json
//! {"Rules": [{"ID": "abort-abandoned-uploads", "Status": "Enabled",
//!             "Filter": {"Prefix": ""},
//!             "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1}}]}
//! $ aws s3api put-bucket-lifecycle-configuration --bucket my-cache \
//!       --lifecycle-configuration file://lifecycle.json
//! $ aws --endpoint-url http://garage.example:3900 s3api put-bucket-lifecycle-configuration \
//!       --bucket my-cache --lifecycle-configuration file://lifecycle.json
//! ```

pub mod access;
pub mod apply;
pub mod lease;
pub mod plan;
pub mod roots;
pub mod why;

#[cfg(test)]
mod model_tests;

pub use apply::{
    apply, collect, collect_with, scan, scan_with, Applier, GcError, GcOptions, GcReport,
    PlannedRun, Scan,
};
pub use lease::{GuardError, LeaseBody, PushGuard};
pub use plan::{
    fingerprint, plan, seeds, ObjectRef, PathId, PathSummary, Plan, PlanError, PlanOptions,
    RootIds, Seed, Snapshot, TombstoneSummary, DEFAULT_FAILED_UPLOADS_OLDER_THAN, DEFAULT_GRACE,
};
#[cfg(target_os = "linux")]
pub use roots::RootsWatcher;
pub use roots::{Root, RootBody, RootError};
pub use why::{Keeper, Keepers, Kept, PathFate};

/// Parses a size as `--max-size` takes it: a whole number of bytes, or with a unit `K`, `M`,
/// `G`, `T` (powers of 1024).
///
/// ```
/// use cachecore::gc::parse_size;
/// assert_eq!(parse_size("500G").unwrap(), 500 << 30);
/// assert_eq!(parse_size("1024").unwrap(), 1024);
/// assert!(parse_size("1.5G").is_err() && parse_size("G").is_err());
/// ```
pub fn parse_size(text: &str) -> Result<u64, String> {
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} does not start with a whole number (e.g. 500G)"))?;
    let shift = match unit {
        "" => 0,
        "K" | "k" => 10,
        "M" => 20,
        "G" => 30,
        "T" => 40,
        _ => return Err(format!("{text:?}: unknown unit {unit:?} (K, M, G or T)")),
    };
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("{text:?} is too large"))
}

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
