//! Garbage collection of a binary cache: roots published as objects, a pure planner, and an
//! applier that deletes in an order that never breaks a closure.
//!
//! - [`roots`]: one object per root, `gcroots/<host>/<name>`, a versioned text body naming
//!   store paths (a series keeps its last N revisions); removed roots go to
//!   `gctrash/<host>/<name>` with the time they left, restorable.
//! - [`plan`](mod@plan): ([`Snapshot`] of narinfo summaries on integer ids, roots, now,
//!   [`PlanOptions`]) → [`Plan`]. Pure and deterministic.
//! - [`collect`] (with [`scan`] and [`apply`]): reads the cache, plans, deletes.
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
//!    this run unpublishes and the objects (NARs, listings, logs) that will be named by none.
//! 2. Narinfos are deleted referrers before references. At every moment, a narinfo still
//!    visible is either live (its closure is live and untouched) or dead with all its dead
//!    referrers already gone and its references not yet deleted; so every visible narinfo has
//!    its NAR and its whole closure. The first failed delete stops this phase: nothing it
//!    references is deleted after it.
//! 3. Objects are deleted only after the grace, by a later run that finds the tombstone due
//!    (`--force`, grace 0: right after the narinfos of this run). A client that read a narinfo
//!    just before it was deleted, or a Nix whose narinfo disk cache still holds it, still gets
//!    its NAR during the grace.
//!
//! A run killed after 1 leaves a tombstone whose objects are still named (kept by the next
//! run); killed during 2, a cache whose visible narinfos are all complete; killed during 3,
//! objects that are already unnamed (orphans) and a tombstone the next run finishes.
//!
//! # Pushes running beside a GC — what is covered and what is not
//!
//! There is no database and no compare-and-swap (Garage has none; a local directory has
//! create-only only), so safety rests on ordering, times and re-checks:
//!
//! - **A NAR a push is about to name** (a push uploaded it, or uploaded the same content again
//!   under the same content-addressed key, and has not yet written its narinfo). The object is
//!   deleted only if, just before its delete, (a) no narinfo of the run's snapshot names it,
//!   (b) no narinfo written since the snapshot names it (the narinfo keys are listed again and
//!   the new ones read), and (c) a HEAD shows it was not rewritten after the tombstone that
//!   condemned it (for orphans: after the listing). A push that writes the object after the
//!   HEAD and its narinfo before the next run is not covered (a window of one request); nor is
//!   a push that uploaded the object before the tombstone and publishes its narinfo only after
//!   the grace has run out (a push slower than the grace, two days by default).
//! - **A narinfo a push is about to reference** (the push found the path present and will
//!   publish a referrer later). Covered only when the referenced path is live for this run:
//!   rooted, or written within `older_than` — a push that references old unrooted paths can
//!   race a GC and publish a narinfo whose reference was just deleted. Closing this needs push
//!   leases (expiring objects naming what a push will reference, treated as roots) and pushes
//!   re-checking references just before each narinfo; **neither exists yet** (the model test
//!   in this module states the protocol it checks: pushes that re-check their references and
//!   their NAR right before publishing, which today's `push` does not do).
//! - **Readers**: covered for `grace` after a narinfo is deleted (see 3 above).
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

pub use apply::{apply, collect, scan, GcError, GcOptions, GcReport, Scan};
pub use plan::{
    plan, ObjectRef, PathId, PathSummary, Plan, PlanError, PlanOptions, RootIds, Snapshot,
    TombstoneSummary, DEFAULT_FAILED_UPLOADS_OLDER_THAN, DEFAULT_GRACE,
};
pub use roots::{Root, RootBody, RootError};
